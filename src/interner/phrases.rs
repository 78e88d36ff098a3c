//! The phrase automaton: a generalized suffix automaton over the sentences
//! of every text ingested so far, from which `completions(p)` is answered.
//!
//! A state stands for a class of word sequences that occur at exactly the
//! same places (end positions) in the sentences. Every sequence of a class
//! has the same continuations, so the completions of a prefix are the
//! transition tokens of its state. The automaton has at most two states and
//! three transitions per word of the texts: its size is linear in the text,
//! where a trie of every phrase grows with the square of a sentence's length.
//!
//! Besides answering queries, it remembers *when* things happened, which is
//! what makes incremental search possible:
//!
//! * `born[s]` — the version of the first occurrence of `s`'s sequences. All
//!   sequences of a class share their first end position, so this is a
//!   property of the class; a state split off another one (a clone) inherits
//!   it. The version in which `p + w` first occurred is `born` of the target
//!   of `p`'s transition on `w`.
//! * `grown_in[s]` — the last version in which `s`'s sequences gained a
//!   completion.
//! * `split_in[s]` — the last version in which some of `s`'s sequences moved
//!   to a new state (a clone). A state id recorded earlier may then no longer
//!   be the state of the prefix it was recorded for, so users of recorded
//!   ids treat a split as a possible change.

/// Marks "no state" (the root's suffix link).
const NONE: u32 = u32::MAX;

/// The automaton. State 0 is the root: the empty sequence.
#[derive(Clone, Debug)]
pub(crate) struct PhraseAutomaton {
    /// Sorted transition tokens of each state: its completions.
    keys: Vec<Vec<u32>>,
    /// Target state of each transition, parallel to `keys`.
    targets: Vec<Vec<u32>>,
    /// Length of the longest sequence of each state.
    len: Vec<u32>,
    /// Suffix link: the state of the longest suffix in another class.
    link: Vec<u32>,
    born: Vec<u32>,
    grown_in: Vec<u32>,
    split_in: Vec<u32>,
    /// The later of `grown_in` and `split_in`, for the one test a scan makes
    /// of every record.
    changed_in: Vec<u32>,
    /// The states that gained a completion in each version, version 1 first.
    grown_by_version: Vec<Vec<u32>>,
    /// The root's transitions as a table indexed by token: every walk starts
    /// there, and the root has a transition for every word.
    root_targets: Vec<u32>,
    /// Vocabulary bitsets of the states with many completions, where a bit
    /// test beats a binary search, stored back to back.
    bits: Vec<u64>,
    /// Start of each state's bitset in `bits`, or [`NO_BITS`].
    bits_at: Vec<u32>,
    /// Length of every bitset, in words.
    bits_words: usize,
}

/// Completion sets at least this large get a bitset.
const BITSET_FROM: usize = 16;

/// Bitsets are built, largest completion sets first, only while they take
/// less than this many bytes in all: a text with a huge vocabulary and many
/// large sets falls back to binary search instead of exhausting memory.
const BITSET_BUDGET: usize = 64 << 20;

const NO_BITS: u32 = u32::MAX;

impl Default for PhraseAutomaton {
    fn default() -> Self {
        Self {
            keys: vec![Vec::new()],
            targets: vec![Vec::new()],
            len: vec![0],
            link: vec![NONE],
            born: vec![0],
            grown_in: vec![0],
            split_in: vec![0],
            changed_in: vec![0],
            grown_by_version: Vec::new(),
            root_targets: Vec::new(),
            bits: Vec::new(),
            bits_at: vec![NO_BITS],
            bits_words: 0,
        }
    }
}

/// What ingesting one version's sentences changed.
pub(crate) struct VersionGrowth {
    /// Sequences (phrase prefixes) whose completions grew.
    pub changed_prefixes: usize,
}

impl PhraseAutomaton {
    pub const ROOT: u32 = 0;

    /// Adds one version's sentences (as token ids).
    pub fn add_version(
        &mut self,
        sentences: &[Vec<u32>],
        version: u32,
        vocabulary: usize,
    ) -> VersionGrowth {
        let mut grown = Vec::new();
        for sentence in sentences {
            let mut last = Self::ROOT;
            for &token in sentence {
                last = self.extend(last, token, version, &mut grown);
            }
        }
        grown.sort_unstable();
        grown.dedup();
        let changed_prefixes = grown
            .iter()
            .filter(|&&state| state != Self::ROOT)
            .map(|&state| {
                (self.len[state as usize] - self.len[self.link[state as usize] as usize]) as usize
            })
            .sum();
        self.grown_by_version.resize(version as usize, Vec::new());
        self.grown_by_version[version as usize - 1] = grown;
        self.root_targets = vec![NONE; vocabulary];
        let root = Self::ROOT as usize;
        for (&token, &target) in self.keys[root].iter().zip(&self.targets[root]) {
            self.root_targets[token as usize] = target;
        }
        self.index_large_sets(vocabulary);
        VersionGrowth { changed_prefixes }
    }

    /// Appends `token` after the sequence ending in state `last` (the
    /// generalized construction: a sequence already present is not added twice).
    fn extend(&mut self, last: u32, token: u32, version: u32, grown: &mut Vec<u32>) -> u32 {
        if let Some(next) = self.transition_searched(last, token) {
            if self.len[next as usize] == self.len[last as usize] + 1 {
                return next;
            }
            return self.split(last, token, next, version, grown);
        }
        let current = self.new_state(self.len[last as usize] + 1, version);
        let mut state = last;
        while state != NONE && self.transition_searched(state, token).is_none() {
            self.add_transition(state, token, current, version, grown);
            state = self.link[state as usize];
        }
        if state == NONE {
            self.link[current as usize] = Self::ROOT;
        } else {
            let next = self
                .transition_searched(state, token)
                .expect("the loop stopped at a transition");
            if self.len[state as usize] + 1 == self.len[next as usize] {
                self.link[current as usize] = next;
            } else {
                let clone = self.split(state, token, next, version, grown);
                self.link[current as usize] = clone;
            }
        }
        current
    }

    /// Splits the sequences of `next` no longer than `len[from] + 1` into a
    /// clone, redirecting the transitions on `token` that led to `next` from
    /// `from` and its suffixes. Returns the clone.
    fn split(
        &mut self,
        from: u32,
        token: u32,
        next: u32,
        version: u32,
        grown: &mut Vec<u32>,
    ) -> u32 {
        let clone = self.keys.len() as u32;
        let n = next as usize;
        self.keys.push(self.keys[n].clone());
        self.targets.push(self.targets[n].clone());
        self.len.push(self.len[from as usize] + 1);
        self.link.push(self.link[n]);
        self.born.push(self.born[n]);
        self.grown_in.push(self.grown_in[n]);
        self.split_in.push(0);
        self.changed_in.push(self.grown_in[n]);
        self.bits_at.push(NO_BITS);
        if self.grown_in[n] == version {
            grown.push(clone);
        }
        self.link[n] = clone;
        self.split_in[n] = version;
        self.changed_in[n] = version;
        let mut state = from;
        while state != NONE {
            let s = state as usize;
            match self.keys[s].binary_search(&token) {
                Ok(index) if self.targets[s][index] == next => self.targets[s][index] = clone,
                _ => break,
            }
            state = self.link[s];
        }
        clone
    }

    fn new_state(&mut self, len: u32, version: u32) -> u32 {
        let state = self.keys.len() as u32;
        self.keys.push(Vec::new());
        self.targets.push(Vec::new());
        self.len.push(len);
        self.link.push(NONE);
        self.born.push(version);
        self.grown_in.push(0);
        self.split_in.push(0);
        self.changed_in.push(0);
        self.bits_at.push(NO_BITS);
        state
    }

    fn add_transition(
        &mut self,
        state: u32,
        token: u32,
        target: u32,
        version: u32,
        grown: &mut Vec<u32>,
    ) {
        let s = state as usize;
        let index = self.keys[s]
            .binary_search(&token)
            .expect_err("the transition is new");
        self.keys[s].insert(index, token);
        self.targets[s].insert(index, target);
        self.grown_in[s] = version;
        self.changed_in[s] = version;
        grown.push(state);
    }

    /// The state reached from `state` by `token`, if that sequence occurs.
    #[inline]
    pub fn transition(&self, state: u32, token: u32) -> Option<u32> {
        if state == Self::ROOT {
            return self
                .root_targets
                .get(token as usize)
                .copied()
                .filter(|&target| target != NONE);
        }
        self.transition_searched(state, token)
    }

    /// [`PhraseAutomaton::transition`] by binary search (also while the
    /// root's table is being rebuilt).
    #[inline]
    fn transition_searched(&self, state: u32, token: u32) -> Option<u32> {
        let s = state as usize;
        self.keys[s]
            .binary_search(&token)
            .ok()
            .map(|index| self.targets[s][index])
    }

    /// The sorted completions of `state`'s sequences.
    #[inline]
    pub fn completions(&self, state: u32) -> &[u32] {
        &self.keys[state as usize]
    }

    /// `state`'s vocabulary bitset, if its completion set is large.
    #[inline]
    pub fn bits(&self, state: u32) -> Option<&[u64]> {
        let start = *self.bits_at.get(state as usize)?;
        (start != NO_BITS).then(|| &self.bits[start as usize..start as usize + self.bits_words])
    }

    /// The version in which `state`'s sequences first occurred.
    #[inline]
    pub fn born(&self, state: u32) -> u32 {
        self.born[state as usize]
    }

    /// The last version in which `state` gained a completion or was split.
    /// An id from outside that is not a state counts as changed now.
    #[inline]
    pub fn changed_in(&self, state: u32) -> u32 {
        self.changed_in
            .get(state as usize)
            .copied()
            .unwrap_or(u32::MAX)
    }

    /// The last version in which some of `state`'s sequences moved to a new
    /// state. An id from outside that is not a state counts as split now.
    #[inline]
    pub fn split_in(&self, state: u32) -> u32 {
        self.split_in
            .get(state as usize)
            .copied()
            .unwrap_or(u32::MAX)
    }

    /// Number of states.
    pub fn states(&self) -> usize {
        self.keys.len()
    }

    /// The states that gained a completion after `version`, each once.
    pub fn grown_since(&self, version: u32) -> Vec<u32> {
        let mut states: Vec<u32> = self
            .grown_by_version
            .iter()
            .skip(version as usize)
            .flatten()
            .copied()
            .collect();
        states.sort_unstable();
        states.dedup();
        states
    }

    /// Rebuilds the bitsets for a vocabulary of `vocabulary` tokens.
    fn index_large_sets(&mut self, vocabulary: usize) {
        self.bits_words = vocabulary.div_ceil(64);
        self.bits.clear();
        self.bits_at.clear();
        self.bits_at.resize(self.keys.len(), NO_BITS);
        let mut large: Vec<u32> = (0..self.keys.len() as u32)
            .filter(|&s| self.keys[s as usize].len() >= BITSET_FROM)
            .collect();
        large.sort_unstable_by_key(|&s| std::cmp::Reverse(self.keys[s as usize].len()));
        let most = BITSET_BUDGET / 8 / self.bits_words.max(1);
        large.truncate(most);
        large.sort_unstable();
        self.bits.reserve(large.len() * self.bits_words);
        for state in large {
            let start = self.bits.len();
            self.bits_at[state as usize] = start as u32;
            self.bits.resize(start + self.bits_words, 0);
            for &token in &self.keys[state as usize] {
                self.bits[start + token as usize / 64] |= 1 << (token % 64);
            }
        }
    }
}
