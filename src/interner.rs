//! Versions, token ids and phrase completions (ORTHO.md §2).
//!
//! The interner owns the vocabulary (word <-> token id) and a trie of every
//! phrase seen so far, from which `completions(prefix)` is answered. It grows
//! one version per ingested text and never renumbers a token.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::text;

/// A token id: the index of a word in the vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Token(pub u32);

/// What one ingested text changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ingested {
    /// The version the text became.
    pub version: u32,
    /// Token ids the text added (possibly none).
    pub new_tokens: std::ops::Range<u32>,
    /// Number of phrase prefixes whose completion set grew.
    pub changed_prefixes: usize,
}

/// The vocabulary and phrase completions of every text ingested so far.
#[derive(Clone, Debug, Default)]
pub struct Interner {
    version: u32,
    words: Vec<String>,
    ids: HashMap<String, u32>,
    phrases: PhraseTrie,
}

impl Interner {
    /// An interner at version 0: no words, no phrases.
    pub fn new() -> Self {
        Self::default()
    }

    /// The interner after ingesting `texts` in order.
    pub fn from_texts<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut interner = Self::new();
        for text in texts {
            interner.ingest(text);
        }
        interner
    }

    /// Ingests one text as the next version.
    pub fn ingest(&mut self, text: &str) -> Ingested {
        let sentences = text::sentences(text);
        let first_new = self.words.len() as u32;
        let fresh: BTreeSet<&str> = sentences
            .iter()
            .flatten()
            .map(String::as_str)
            .filter(|word| !self.ids.contains_key(*word))
            .collect();
        for word in fresh {
            self.ids.insert(word.to_owned(), self.words.len() as u32);
            self.words.push(word.to_owned());
        }

        let mut changed = ChangedPrefixes::default();
        for sentence in &sentences {
            let tokens: Vec<u32> = sentence.iter().map(|word| self.ids[word]).collect();
            self.phrases
                .insert_sentence(&tokens, self.version + 1, &mut changed);
        }
        self.version += 1;
        self.phrases.mark_grown(&changed, self.version);
        self.phrases.index_large_sets(self.words.len());
        Ingested {
            version: self.version,
            new_tokens: first_new..self.words.len() as u32,
            changed_prefixes: changed.count(),
        }
    }

    /// The version of the last ingested text (0 before any).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Number of token ids.
    pub fn vocabulary(&self) -> usize {
        self.words.len()
    }

    /// The word of a token id.
    pub fn word(&self, token: Token) -> Option<&str> {
        self.words.get(token.0 as usize).map(String::as_str)
    }

    /// The token id of a word, if the word is known.
    pub fn token(&self, word: &str) -> Option<Token> {
        self.ids.get(word).copied().map(Token)
    }

    /// Every word, in token-id order.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The sorted token ids that follow `prefix` inside some sentence.
    pub fn completions(&self, prefix: &[Token]) -> &[u32] {
        self.completions_of(prefix.iter().map(|token| token.0))
            .sorted
    }

    /// Like [`Interner::completions`], for a prefix given as raw ids, with a
    /// fast membership test; an empty prefix yields no completions. This is the
    /// search engine's hot path.
    #[inline]
    pub fn completions_of(&self, prefix: impl IntoIterator<Item = u32>) -> Completions<'_> {
        self.walk(prefix).completions
    }

    /// Walks the phrase trie along `prefix`: its completions, and the node
    /// where the walk ended (see [`PrefixWalk`]).
    #[inline]
    pub fn walk(&self, prefix: impl IntoIterator<Item = u32>) -> PrefixWalk<'_> {
        let mut node = PhraseTrie::ROOT;
        let mut walked = false;
        for token in prefix {
            match self.phrases.child(node, token) {
                Some(child) => node = child,
                None => {
                    return PrefixWalk {
                        completions: Completions::NONE,
                        end: TrieNode(node),
                    };
                }
            }
            walked = true;
        }
        let completions = if walked {
            Completions {
                sorted: self.phrases.completions(node),
                bits: self.phrases.bits(node),
            }
        } else {
            Completions::NONE
        };
        PrefixWalk {
            completions,
            end: TrieNode(node),
        }
    }

    /// The completions of `node`'s prefix.
    #[inline]
    pub fn node_completions(&self, node: TrieNode) -> Completions<'_> {
        Completions {
            sorted: self.phrases.completions(node.0),
            bits: self.phrases.bits(node.0),
        }
    }

    /// Every node that gained completions after `version`, with the
    /// completions it gained.
    pub fn growth_since(&self, version: u32) -> Growth {
        let trie = &self.phrases;
        let mut grown: Vec<usize> = trie
            .grown_by_version
            .iter()
            .skip(version as usize)
            .flatten()
            .map(|&node| node as usize)
            .collect();
        grown.sort_unstable();
        grown.dedup();
        let gained = grown
            .into_iter()
            .map(|node| {
                let tokens = trie.keys[node]
                    .iter()
                    .zip(&trie.kids[node])
                    .filter(|&(_, &kid)| trie.born_in[kid as usize] > version)
                    .map(|(&token, _)| token)
                    .collect();
                (node as u32, tokens)
            })
            .collect();
        Growth { gained }
    }

    /// The version that made `token` a completion of `node`'s prefix, if it is one.
    #[inline]
    pub fn completion_added_in(&self, node: TrieNode, token: u32) -> Option<u32> {
        let child = self.phrases.child(node.0, token)?;
        Some(self.phrases.born_in[child as usize])
    }

    /// Whether `node` gained a completion in a version after `version`.
    ///
    /// This is what makes incremental search cheap: a prefix's completions
    /// can only differ between two versions if the node where its walk ended
    /// grew in between (a prefix that was missing appears only when its
    /// deepest existing node gains the next token).
    #[inline]
    pub fn grew_since(&self, node: TrieNode, version: u32) -> bool {
        self.phrases
            .grown_in
            .get(node.0 as usize)
            .is_some_and(|&grown| grown > version)
    }
}

/// The completions gained by trie nodes since some version.
#[derive(Clone, Debug, Default)]
pub struct Growth {
    gained: HashMap<u32, Vec<u32>>,
}

impl Growth {
    /// The completions `node` gained (empty if it did not grow).
    #[inline]
    pub fn gained(&self, node: TrieNode) -> &[u32] {
        self.gained.get(&node.0).map_or(&[], Vec::as_slice)
    }

    /// Number of nodes that grew.
    pub fn nodes(&self) -> usize {
        self.gained.len()
    }
}

/// A node of the phrase trie: one phrase prefix. Node ids are assigned in
/// insertion order and never change, so two interners built from the same
/// texts in the same order agree on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TrieNode(pub u32);

/// Where walking a prefix through the phrase trie led.
#[derive(Clone, Copy, Debug)]
pub struct PrefixWalk<'a> {
    /// The prefix's completions (none if the prefix never occurs).
    pub completions: Completions<'a>,
    /// The prefix's own node if it occurs; otherwise the node of its longest
    /// occurring beginning, the one that must grow for the prefix to appear.
    pub end: TrieNode,
}

/// The completion set of one prefix: sorted ids, plus a bitset over the
/// vocabulary when the set is large enough for one to pay off.
#[derive(Clone, Copy, Debug)]
pub struct Completions<'a> {
    /// The completions, ascending.
    pub sorted: &'a [u32],
    bits: Option<&'a [u64]>,
}

impl Default for Completions<'_> {
    fn default() -> Self {
        Self::NONE
    }
}

impl Completions<'_> {
    const NONE: Completions<'static> = Completions {
        sorted: &[],
        bits: None,
    };

    /// Number of completions.
    #[inline]
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Whether there is none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// Whether `token` is a completion.
    #[inline]
    pub fn contains(&self, token: u32) -> bool {
        match self.bits {
            Some(bits) => bits
                .get(token as usize / 64)
                .is_some_and(|word| word >> (token % 64) & 1 == 1),
            None => self.sorted.binary_search(&token).is_ok(),
        }
    }
}

/// Trie nodes that gained a completion while ingesting one text, each once.
/// The root counts as a node here (it grows when a text brings a new first
/// word of a phrase) but not in [`Ingested::changed_prefixes`], since the
/// empty sequence is not a phrase prefix.
#[derive(Default)]
struct ChangedPrefixes(std::collections::HashSet<u32>);

impl ChangedPrefixes {
    fn count(&self) -> usize {
        self.0.len() - usize::from(self.0.contains(&PhraseTrie::ROOT))
    }
}

/// A trie over token sequences: the children of the node for prefix `p` are
/// exactly `completions(p)`, kept sorted so they double as the answer.
#[derive(Clone, Debug)]
struct PhraseTrie {
    /// Sorted completion tokens of each node.
    keys: Vec<Vec<u32>>,
    /// Child node of each completion, parallel to `keys`.
    kids: Vec<Vec<u32>>,
    /// Vocabulary bitsets of the nodes with many completions, where a bit
    /// test beats a binary search, stored back to back.
    bits: Vec<u64>,
    /// Start of each node's bitset in `bits`, or [`PhraseTrie::NO_BITS`].
    bits_at: Vec<u32>,
    /// Length of every bitset, in words.
    bits_words: usize,
    /// The last version in which each node gained a completion (0: never).
    grown_in: Vec<u32>,
    /// The version that created each node (0 for the root).
    born_in: Vec<u32>,
    /// The nodes that gained a completion in each version, version 1 first.
    grown_by_version: Vec<Vec<u32>>,
}

impl Default for PhraseTrie {
    fn default() -> Self {
        Self {
            keys: vec![Vec::new()],
            kids: vec![Vec::new()],
            bits: Vec::new(),
            bits_at: vec![Self::NO_BITS],
            bits_words: 0,
            grown_in: vec![0],
            born_in: vec![0],
            grown_by_version: Vec::new(),
        }
    }
}

impl PhraseTrie {
    const ROOT: u32 = 0;

    /// Completion sets at least this large get a bitset.
    const BITSET_FROM: usize = 16;

    const NO_BITS: u32 = u32::MAX;

    /// Records that the nodes in `changed` grew in `version`.
    fn mark_grown(&mut self, changed: &ChangedPrefixes, version: u32) {
        self.grown_in.resize(self.keys.len(), 0);
        for &node in &changed.0 {
            self.grown_in[node as usize] = version;
        }
        self.grown_by_version.resize(version as usize, Vec::new());
        self.grown_by_version[version as usize - 1] = changed.0.iter().copied().collect();
    }

    /// Rebuilds the bitsets for a vocabulary of `vocabulary` tokens.
    fn index_large_sets(&mut self, vocabulary: usize) {
        self.bits_words = vocabulary.div_ceil(64);
        self.bits.clear();
        self.bits_at.clear();
        for keys in &self.keys {
            if keys.len() < Self::BITSET_FROM {
                self.bits_at.push(Self::NO_BITS);
                continue;
            }
            let start = self.bits.len();
            self.bits_at.push(start as u32);
            self.bits.resize(start + self.bits_words, 0);
            for &token in keys {
                self.bits[start + token as usize / 64] |= 1 << (token % 64);
            }
        }
    }

    #[inline]
    fn bits(&self, node: u32) -> Option<&[u64]> {
        let start = *self.bits_at.get(node as usize)?;
        (start != Self::NO_BITS)
            .then(|| &self.bits[start as usize..start as usize + self.bits_words])
    }

    #[inline]
    fn child(&self, node: u32, token: u32) -> Option<u32> {
        let keys = &self.keys[node as usize];
        keys.binary_search(&token)
            .ok()
            .map(|index| self.kids[node as usize][index])
    }

    #[inline]
    fn completions(&self, node: u32) -> &[u32] {
        &self.keys[node as usize]
    }

    /// Inserts every suffix of the sentence, so every contiguous phrase is a path.
    fn insert_sentence(&mut self, tokens: &[u32], version: u32, changed: &mut ChangedPrefixes) {
        for start in 0..tokens.len() {
            let mut node = Self::ROOT;
            for &token in &tokens[start..] {
                node = self.child_or_insert(node, token, version, changed);
            }
        }
    }

    fn child_or_insert(
        &mut self,
        node: u32,
        token: u32,
        version: u32,
        changed: &mut ChangedPrefixes,
    ) -> u32 {
        let slot = node as usize;
        match self.keys[slot].binary_search(&token) {
            Ok(index) => self.kids[slot][index],
            Err(index) => {
                let child = self.keys.len() as u32;
                self.keys.push(Vec::new());
                self.kids.push(Vec::new());
                self.born_in.push(version);
                self.keys[slot].insert(index, token);
                self.kids[slot].insert(index, child);
                changed.0.insert(node);
                child
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(interner: &Interner, words: &[&str]) -> Vec<Token> {
        words.iter().map(|w| interner.token(w).unwrap()).collect()
    }

    #[test]
    fn first_text_vocabulary_is_sorted() {
        let interner = Interner::from_texts(["the quick brown fox"]);
        assert_eq!(interner.words(), ["brown", "fox", "quick", "the"]);
        assert_eq!(interner.version(), 1);
    }

    #[test]
    fn later_texts_append_new_words_sorted() {
        let mut interner = Interner::from_texts(["b d"]);
        let ingested = interner.ingest("e a d c");
        assert_eq!(interner.words(), ["b", "d", "a", "c", "e"]);
        assert_eq!(ingested.version, 2);
        assert_eq!(ingested.new_tokens, 2..5);
    }

    #[test]
    fn empty_text_still_makes_a_version() {
        let mut interner = Interner::new();
        let ingested = interner.ingest("");
        assert_eq!(ingested.version, 1);
        assert_eq!(interner.vocabulary(), 0);
    }

    #[test]
    fn completions_follow_phrases_inside_sentences_only() {
        let interner = Interner::from_texts(["a b c. c a"]);
        let a = ids(&interner, &["a"]);
        let ab = ids(&interner, &["a", "b"]);
        let c = ids(&interner, &["c"]);
        let b = interner.token("b").unwrap().0;
        let cc = interner.token("c").unwrap().0;
        let aa = interner.token("a").unwrap().0;
        assert_eq!(interner.completions(&a), [b]);
        assert_eq!(interner.completions(&ab), [cc]);
        // "c" ends the first sentence; "c a" is in the second.
        assert_eq!(interner.completions(&c), [aa]);
        assert!(
            interner
                .completions(&ids(&interner, &["b", "a"]))
                .is_empty()
        );
        assert!(interner.completions(&[]).is_empty());
    }

    #[test]
    fn large_completion_sets_answer_membership_through_bitsets() {
        let letter = |k: u8| char::from(b'a' + k);
        let words: Vec<String> = (0..40u8)
            .map(|n| format!("w{}{}", letter(n / 26), letter(n % 26)))
            .collect();
        let text: Vec<String> = words.iter().map(|w| format!("a {w}.")).collect();
        let interner = Interner::from_texts([text.join(" ").as_str()]);
        let a = interner.token("a").unwrap().0;
        let set = interner.completions_of([a]);
        assert_eq!(set.len(), 40);
        assert!(set.bits.is_some());
        for token in 0..interner.vocabulary() as u32 + 70 {
            assert_eq!(
                set.contains(token),
                set.sorted.binary_search(&token).is_ok()
            );
        }
    }

    #[test]
    fn changed_prefixes_count_grown_completion_sets() {
        let mut interner = Interner::from_texts(["a b"]);
        // "a" gains "c"; "b" gains "c"; "a b" gains "c".
        assert_eq!(interner.ingest("a b c. a c").changed_prefixes, 3);
        assert_eq!(interner.ingest("a b c").changed_prefixes, 0);
    }
}
