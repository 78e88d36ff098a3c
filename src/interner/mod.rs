//! Versions, token ids and phrase completions (ORTHO.md §2).
//!
//! The interner owns the vocabulary (word <-> token id) and the phrase
//! automaton ([`phrases`]) from which `completions(prefix)` is answered. It
//! grows one version per ingested text and never renumbers a token. Its size
//! is linear in the texts: a single sentence of a million characters costs a
//! few megabytes, not the square of its length.

mod phrases;
mod version;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::text;
use phrases::PhraseAutomaton;
pub use version::Version;

/// A token id: the index of a word in the vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Token(pub u32);

/// What one ingested text changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ingested {
    /// The version the text became.
    pub version: Version,
    /// Token ids the text added (possibly none).
    pub new_tokens: std::ops::Range<u32>,
    /// Number of phrase prefixes whose completion set grew.
    pub changed_prefixes: usize,
}

/// The vocabulary and phrase completions of every text ingested so far.
#[derive(Clone, Debug, Default)]
pub struct Interner {
    version: Version,
    words: Vec<String>,
    /// Word ids, hashed with foldhash: SipHash cost a tenth of building
    /// the interner.
    ids: foldhash::HashMap<String, u32>,
    phrases: PhraseAutomaton,
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
        let sentences: Vec<Vec<u32>> = sentences
            .iter()
            .map(|sentence| sentence.iter().map(|word| self.ids[word]).collect())
            .collect();
        self.version = self.version.next();
        let growth = self
            .phrases
            .add_version(&sentences, self.version.get(), self.words.len());
        Ingested {
            version: self.version,
            new_tokens: first_new..self.words.len() as u32,
            changed_prefixes: growth.changed_prefixes,
        }
    }

    /// The version of the last ingested text (0 before any).
    pub fn version(&self) -> Version {
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

    /// States of the phrase automaton (a measure of its size).
    pub fn phrase_states(&self) -> usize {
        self.phrases.states()
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

    /// Walks the phrase automaton along `prefix`: its completions, and the
    /// node where the walk ended (see [`PrefixWalk`]).
    #[inline]
    pub fn walk(&self, prefix: impl IntoIterator<Item = u32>) -> PrefixWalk<'_> {
        let mut node = PhraseAutomaton::ROOT;
        let mut walked = false;
        for token in prefix {
            match self.phrases.transition(node, token) {
                Some(next) => node = next,
                None => {
                    return PrefixWalk {
                        completions: Completions::NONE,
                        end: PhraseNode(node),
                    };
                }
            }
            walked = true;
        }
        let completions = if walked {
            self.node_completions(PhraseNode(node))
        } else {
            Completions::NONE
        };
        PrefixWalk {
            completions,
            end: PhraseNode(node),
        }
    }

    /// The completions of `node`'s prefixes.
    #[inline]
    pub fn node_completions(&self, node: PhraseNode) -> Completions<'_> {
        Completions {
            sorted: self.phrases.completions(node.0),
            bits: self.phrases.bits(node.0),
        }
    }

    /// Every node that gained completions after `version`, with the
    /// completions it gained.
    ///
    pub fn growth_since(&self, version: Version) -> Growth {
        let mut growth = Growth {
            at: vec![Growth::NONE; self.phrases.states()],
            ranges: Vec::new(),
            tokens: Vec::new(),
        };
        for node in self.phrases.grown_since(version.get()) {
            let start = growth.tokens.len() as u32;
            growth.tokens.extend(
                self.phrases
                    .completions(node)
                    .iter()
                    .copied()
                    .filter(|&token| {
                        self.completion_added_in(PhraseNode(node), token) > Some(version)
                    }),
            );
            growth.at[node as usize] = growth.ranges.len() as u32;
            growth.ranges.push((start, growth.tokens.len() as u32));
        }
        growth
    }

    /// The version that made `token` a completion of `node`'s prefixes, if it is one.
    #[inline]
    pub fn completion_added_in(&self, node: PhraseNode, token: u32) -> Option<Version> {
        let next = self.phrases.transition(node.0, token)?;
        Some(Version::new(self.phrases.born(next)))
    }

    /// Whether a node recorded at or before `version` may no longer stand
    /// for the same prefixes, or their completions may have grown, since then.
    ///
    /// This is what makes incremental search cheap: a prefix's completions
    /// can only differ between two versions if the node where its walk ended
    /// grew in between (a prefix that was missing appears only when its
    /// longest occurring beginning gains the next token), or if the node was
    /// split, after which the recorded id is no longer trusted (see
    /// [`Interner::split_since`]). Ids that are not nodes count as changed.
    #[inline]
    pub fn grew_since(&self, node: PhraseNode, version: Version) -> bool {
        self.phrases.changed_in(node.0) > version.get()
    }

    /// Whether some prefixes of `node` moved to a new node after `version`:
    /// a node id recorded then may not be their node any more, so whatever
    /// was concluded from it must be concluded afresh.
    #[inline]
    pub fn split_since(&self, node: PhraseNode, version: Version) -> bool {
        self.phrases.split_in(node.0) > version.get()
    }
}

/// The completions gained by phrase nodes since some version.
#[derive(Clone, Debug, Default)]
pub struct Growth {
    /// Per node, its index in `ranges`, or [`Growth::NONE`].
    at: Vec<u32>,
    /// Per grown node, its gained tokens' range in `tokens`.
    ranges: Vec<(u32, u32)>,
    tokens: Vec<u32>,
}

impl Growth {
    const NONE: u32 = u32::MAX;

    /// The completions `node` gained (empty if it did not grow).
    #[inline]
    pub fn gained(&self, node: PhraseNode) -> &[u32] {
        match self.at.get(node.0 as usize) {
            Some(&index) if index != Self::NONE => {
                let (start, end) = self.ranges[index as usize];
                &self.tokens[start as usize..end as usize]
            }
            _ => &[],
        }
    }

    /// Number of nodes that grew.
    pub fn nodes(&self) -> usize {
        self.ranges.len()
    }
}

/// A node of the phrase automaton: the prefixes that occur at exactly the
/// same places in the texts. Node ids are assigned in construction order, so
/// two interners built from the same texts in the same order agree on them;
/// a later version may move some of a node's prefixes to a new node (see
/// [`Interner::split_since`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PhraseNode(pub u32);

/// Where walking a prefix through the phrase automaton led.
#[derive(Clone, Copy, Debug)]
pub struct PrefixWalk<'a> {
    /// The prefix's completions (none if the prefix never occurs).
    pub completions: Completions<'a>,
    /// The prefix's own node if it occurs; otherwise the node of its longest
    /// occurring beginning, the one that must grow for the prefix to appear.
    pub end: PhraseNode,
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

    /// The set as a bitset over the vocabulary (bit `t` of word `t / 64`),
    /// when it is large enough to have one.
    #[inline]
    pub fn bits(&self) -> Option<&[u64]> {
        self.bits
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn ids(interner: &Interner, words: &[&str]) -> Vec<Token> {
        words.iter().map(|w| interner.token(w).unwrap()).collect()
    }

    #[test]
    fn first_text_vocabulary_is_sorted() {
        let interner = Interner::from_texts(["the quick brown fox"]);
        assert_eq!(interner.words(), ["brown", "fox", "quick", "the"]);
        assert_eq!(interner.version(), Version::FIRST);
    }

    #[test]
    fn later_texts_append_new_words_sorted() {
        let mut interner = Interner::from_texts(["b d"]);
        let ingested = interner.ingest("e a d c");
        assert_eq!(interner.words(), ["b", "d", "a", "c", "e"]);
        assert_eq!(ingested.version, Version::new(2));
        assert_eq!(ingested.new_tokens, 2..5);
    }

    #[test]
    fn empty_text_still_makes_a_version() {
        let mut interner = Interner::new();
        let ingested = interner.ingest("");
        assert_eq!(ingested.version, Version::FIRST);
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

    /// Every phrase of `texts` (as token ids of `interner`) with the version
    /// of its first occurrence, by brute force.
    fn phrases_by_version(interner: &Interner, texts: &[String]) -> HashMap<Vec<u32>, u32> {
        let mut first = HashMap::new();
        for (version, text) in (1u32..).zip(texts) {
            for sentence in crate::text::sentences(text) {
                let tokens: Vec<u32> = sentence
                    .iter()
                    .map(|w| interner.token(w).unwrap().0)
                    .collect();
                for start in 0..tokens.len() {
                    for end in start + 1..=tokens.len() {
                        first.entry(tokens[start..end].to_vec()).or_insert(version);
                    }
                }
            }
        }
        first
    }

    use proptest::prelude::*;

    fn texts() -> impl Strategy<Value = Vec<String>> {
        let word = (b'a'..b'f').prop_map(|letter| char::from(letter).to_string());
        let sentence = prop::collection::vec(word, 1..=7).prop_map(|words| words.join(" "));
        let text =
            prop::collection::vec(sentence, 0..=4).prop_map(|sentences| sentences.join(". "));
        prop::collection::vec(text, 1..=4)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Completions, the version each completion appeared in, growth and
        /// the count of changed prefixes all agree with a brute-force list of
        /// every phrase, after every version.
        #[test]
        fn the_automaton_agrees_with_every_phrase_listed_by_brute_force(texts in texts()) {
            let mut interner = Interner::new();
            for (index, text) in texts.iter().enumerate() {
                let before = interner.clone();
                let ingested = interner.ingest(text);
                let version = ingested.version.get();
                let phrases = phrases_by_version(&interner, &texts[..=index]);
                let vocabulary = interner.vocabulary() as u32;
                // Every occurring sequence (and some that do not occur).
                let mut prefixes: Vec<Vec<u32>> = phrases.keys().cloned().collect();
                prefixes.extend((0..vocabulary).flat_map(|a| (0..vocabulary).map(move |b| vec![a, b, a])));
                prefixes.sort();
                prefixes.dedup();
                let mut changed = 0;
                for prefix in &prefixes {
                    let expected: Vec<u32> = (0..vocabulary)
                        .filter(|&w| {
                            let mut longer = prefix.clone();
                            longer.push(w);
                            phrases.contains_key(&longer)
                        })
                        .collect();
                    let walk = interner.walk(prefix.iter().copied());
                    prop_assert_eq!(walk.completions.sorted, &expected[..], "prefix {:?}", prefix);
                    for w in 0..vocabulary + 2 {
                        prop_assert_eq!(walk.completions.contains(w), expected.contains(&w));
                    }
                    if !phrases.contains_key(prefix) {
                        continue;
                    }
                    for &w in &expected {
                        let mut longer = prefix.clone();
                        longer.push(w);
                        prop_assert_eq!(
                            interner.completion_added_in(walk.end, w),
                            Some(Version::new(phrases[&longer])),
                            "{:?} + {}", prefix, w
                        );
                    }
                    let old: Vec<u32> = before.completions_of(prefix.iter().copied()).sorted.to_vec();
                    let grew = old != expected;
                    changed += usize::from(grew);
                    if grew {
                        // Growth is always seen, through the node of the
                        // prefix now and the node recorded before.
                        let previous = Version::new(version - 1);
                        prop_assert!(interner.grew_since(walk.end, previous));
                        let recorded = before.walk(prefix.iter().copied()).end;
                        prop_assert!(interner.grew_since(recorded, previous), "{:?}", prefix);
                        let gained: Vec<u32> = expected.iter().copied().filter(|w| !old.contains(w)).collect();
                        let growth = interner.growth_since(previous);
                        prop_assert_eq!(growth.gained(walk.end), &gained[..]);
                    }
                }
                prop_assert_eq!(ingested.changed_prefixes, changed);
            }
        }
    }

    #[test]
    fn a_long_sentence_costs_states_linear_in_its_length() {
        // 20,000 words of 300 kinds in one sentence: a trie of its phrases
        // would hold about 2e8 nodes.
        let word = |n: u32| {
            let kind = (n.wrapping_mul(2_654_435_761) >> 7) % 300;
            let letter = |k: u32| char::from(b'a' + k as u8);
            format!("{}{}", letter(kind / 26), letter(kind % 26))
        };
        let words: Vec<String> = (0..20_000u32).map(word).collect();
        let interner = Interner::from_texts([words.join(" ").as_str()]);
        assert!(
            interner.phrase_states() <= 2 * words.len() + 1,
            "{}",
            interner.phrase_states()
        );
    }
}
