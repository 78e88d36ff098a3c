//! The coordinator's view of the words of its texts: one interner at the
//! latest version, so that new words get exactly the token ids the workers
//! give them, and the distinct word pairs behind each first word's size estimate.
//!
//! Nothing here is kept per version. The ledger keeps one word list that
//! every version shares (a version's words are a prefix of it, since the
//! vocabulary only grows), so a new version costs its units' bookkeeping,
//! not a copy of the interner.

use std::collections::HashSet;

use crate::interner::{Interner, Version};
use crate::text;

/// The words of every text ingested so far.
#[derive(Clone, Default)]
pub struct Vocabulary {
    interner: Interner,
    /// Distinct (word, next word) pairs seen inside a sentence.
    pairs: HashSet<(u32, u32)>,
    /// For each token id, how many distinct words follow it in some sentence.
    followers: Vec<u32>,
}

/// What one ingested text added.
pub struct Added {
    /// The version the text became.
    pub version: Version,
    /// Words the text added to the vocabulary, in token-id order.
    pub new_words: Vec<String>,
    /// For each token id of the version, how many distinct words follow it:
    /// words with more completions tend to root bigger subtrees.
    pub weights: Vec<u32>,
}

impl Vocabulary {
    /// No text yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The version of the last ingested text (0 before any).
    pub fn version(&self) -> Version {
        self.interner.version()
    }

    /// Ingests `text` as the next version.
    pub fn ingest(&mut self, text: &str) -> Added {
        let before = self.interner.vocabulary();
        self.interner.ingest(text);
        self.followers.resize(self.interner.vocabulary(), 0);
        for sentence in text::sentences(text) {
            let tokens: Vec<u32> = sentence
                .iter()
                .filter_map(|word| self.interner.token(word))
                .map(|token| token.0)
                .collect();
            for pair in tokens.windows(2) {
                if self.pairs.insert((pair[0], pair[1])) {
                    self.followers[pair[0] as usize] += 1;
                }
            }
        }
        Added {
            version: self.interner.version(),
            new_words: self.interner.words()[before..].to_vec(),
            weights: self.followers.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_words_and_weights_follow_the_interner() {
        let mut vocabulary = Vocabulary::new();
        let first = vocabulary.ingest("a b c. a c");
        let interner = Interner::from_texts(["a b c. a c"]);
        assert_eq!(first.version, Version::FIRST);
        assert_eq!(first.new_words, interner.words());
        let a = interner.token("a").unwrap().0 as usize;
        let c = interner.token("c").unwrap().0 as usize;
        assert_eq!(first.weights[a], 2, "b and c follow a");
        assert_eq!(first.weights[c], 0);

        let second = vocabulary.ingest("c a d");
        let interner = Interner::from_texts(["a b c. a c", "c a d"]);
        assert_eq!(second.version, Version::new(2));
        assert_eq!(second.new_words, interner.words()[3..]);
        assert_eq!(second.weights[a], 3, "d follows a too");
        assert_eq!(second.weights[c], 1);

        let empty = vocabulary.ingest("");
        assert_eq!((empty.version, empty.new_words.len()), (Version::new(3), 0));
        assert_eq!(empty.weights, second.weights);
    }
}
