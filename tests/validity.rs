//! An independent validity check of the orthos fold reports.
//!
//! Nothing here uses fold's text, interner, spatial or ortho logic to decide
//! validity: this file splits sentences (ORTHO.md §1), numbers tokens (§2),
//! orders positions (§3) and lists phrases on its own, then checks the leaves
//! and optimum that `fold::process_text` returns, read as words through
//! `Ortho::dims` and `Ortho::words`. The checker is itself shown to reject
//! broken orthos, so a passing run means something.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};

use fold::{Interner, Ortho, process_text};

/// Leaves checked per version at most; larger sets are sampled evenly.
const SAMPLE: usize = 5000;

/// Sentences of a text as lowercase words, per ORTHO.md §1.
fn sentences(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for paragraph in text.split("\n\n") {
        for sentence in paragraph.split(['.', '?', ';', '!']) {
            let sentence = sentence.trim();
            if sentence.is_empty() {
                continue;
            }
            let cleaned: String = sentence
                .chars()
                .map(|c| {
                    if c.is_alphabetic() || c.is_whitespace() || c == '\'' {
                        c
                    } else {
                        ' '
                    }
                })
                .collect();
            let words: Vec<String> = cleaned.split_whitespace().map(str::to_lowercase).collect();
            if !words.is_empty() {
                out.push(words);
            }
        }
    }
    out
}

/// What the checker knows about the texts ingested so far.
struct Corpus {
    /// Words in token-id order (ORTHO.md §2).
    vocabulary: Vec<String>,
    /// Token id of each word.
    ids: HashMap<String, usize>,
    /// Every contiguous run of two or more words inside one sentence.
    phrases: HashSet<Vec<String>>,
    /// For each phrase minus its last word, the words that may follow it.
    next_words: HashMap<Vec<String>, BTreeSet<String>>,
}

impl Corpus {
    fn new(texts: &[String]) -> Self {
        let mut corpus = Self {
            vocabulary: Vec::new(),
            ids: HashMap::new(),
            phrases: HashSet::new(),
            next_words: HashMap::new(),
        };
        for text in texts {
            let sentences = sentences(text);
            let fresh: BTreeSet<&String> = sentences
                .iter()
                .flatten()
                .filter(|word| !corpus.ids.contains_key(*word))
                .collect();
            for word in fresh {
                corpus.ids.insert(word.clone(), corpus.vocabulary.len());
                corpus.vocabulary.push(word.clone());
            }
            for sentence in &sentences {
                for start in 0..sentence.len() {
                    for end in start + 2..=sentence.len() {
                        let phrase = sentence[start..end].to_vec();
                        let (last, prefix) = phrase.split_last().unwrap();
                        corpus
                            .next_words
                            .entry(prefix.to_vec())
                            .or_default()
                            .insert(last.clone());
                        corpus.phrases.insert(phrase);
                    }
                }
            }
        }
        corpus
    }

    fn is_phrase(&self, words: &[&str]) -> bool {
        let owned: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        self.phrases.contains(&owned)
    }
}

/// Every coordinate of `dims` in position order: by component sum, then
/// lexicographically.
fn position_order(dims: &[usize]) -> Vec<Vec<usize>> {
    let mut coords = vec![vec![0; dims.len()]];
    for (axis, &size) in dims.iter().enumerate() {
        coords = coords
            .into_iter()
            .flat_map(|coord| {
                (0..size).map(move |value| {
                    let mut next = coord.clone();
                    next[axis] = value;
                    next
                })
            })
            .collect();
    }
    coords.sort_by_key(|coord| (coord.iter().sum::<usize>(), coord.clone()));
    coords
}

/// An ortho as the checker sees it: sizes and words by coordinate.
struct Grid<'a> {
    dims: Vec<usize>,
    cells: HashMap<Vec<usize>, Option<&'a str>>,
    order: Vec<Vec<usize>>,
}

impl<'a> Grid<'a> {
    /// `None` if the payload does not fit the shape.
    fn new(dims: &[usize], words: &[Option<&'a str>]) -> Option<Self> {
        let capacity: usize = dims.iter().product();
        if words.len() != capacity || dims.is_empty() {
            return None;
        }
        let order = position_order(dims);
        let cells = order.iter().cloned().zip(words.iter().copied()).collect();
        Some(Self {
            dims: dims.to_vec(),
            cells,
            order,
        })
    }

    /// The slots of the line through `start` along `axis`, from its beginning.
    fn line(&self, start: &[usize], axis: usize) -> Vec<Option<&'a str>> {
        (0..self.dims[axis])
            .map(|value| {
                let mut coord = start.to_vec();
                coord[axis] = value;
                self.cells[&coord]
            })
            .collect()
    }

    /// Filled words per shell (component sum), in position order.
    fn shells(&self) -> HashMap<usize, Vec<&'a str>> {
        let mut shells: HashMap<usize, Vec<&str>> = HashMap::new();
        for coord in &self.order {
            if let Some(word) = self.cells[coord] {
                shells.entry(coord.iter().sum()).or_default().push(word);
            }
        }
        shells
    }
}

/// Every rule of ORTHO.md §3–5 that `words` (in position order) breaks;
/// empty when the ortho is valid over `corpus`.
fn violations(dims: &[usize], words: &[Option<&str>], corpus: &Corpus) -> Vec<String> {
    let mut found = Vec::new();
    if dims.len() < 2 || dims.iter().any(|&size| size < 2) {
        found.push(format!("shape {dims:?} needs two or more sizes, each >= 2"));
    }
    if dims.windows(2).any(|pair| pair[0] < pair[1]) {
        found.push(format!("shape {dims:?} is not non-increasing"));
    }
    let Some(grid) = Grid::new(dims, words) else {
        found.push(format!(
            "payload of {} slots for shape {dims:?}",
            words.len()
        ));
        return found;
    };
    for word in words.iter().flatten() {
        if !corpus.ids.contains_key(*word) {
            found.push(format!("`{word}` is not in the vocabulary"));
        }
    }
    for axis in 0..dims.len() {
        for start in grid.order.iter().filter(|coord| coord[axis] == 0) {
            let line = grid.line(start, axis);
            let filled: Vec<&str> = line.iter().map_while(|slot| *slot).collect();
            if line[filled.len()..].iter().any(Option::is_some) {
                found.push(format!(
                    "line from {start:?} along axis {axis} has a filled slot after a hole: {line:?}"
                ));
            }
            if filled.len() >= 2 && !corpus.is_phrase(&filled) {
                found.push(format!(
                    "line from {start:?} along axis {axis} is not a phrase: {filled:?}"
                ));
            }
        }
    }
    for (shell, words) in grid.shells() {
        let distinct: HashSet<&str> = words.iter().copied().collect();
        if distinct.len() != words.len() {
            found.push(format!("shell {shell} repeats a word: {words:?}"));
        }
    }
    // The 2x2 start keeps one mirror image: slot 1's token id below slot 2's.
    if dims == [2, 2]
        && let (Some(first), Some(second)) = (words[1], words[2])
        && let (Some(a), Some(b)) = (corpus.ids.get(first), corpus.ids.get(second))
        && a > b
    {
        found.push(format!(
            "[2,2] keeps the mirror image: `{first}` after `{second}`"
        ));
    }
    found
}

/// The words that could fill the next slot of a valid ortho (ORTHO.md §4);
/// a leaf has none.
fn fillers(dims: &[usize], words: &[Option<&str>], corpus: &Corpus) -> Vec<String> {
    let grid = Grid::new(dims, words).expect("payload fits its shape");
    let Some(next) = grid.order.iter().find(|coord| grid.cells[*coord].is_none()) else {
        return Vec::new();
    };
    let mut candidates: Option<BTreeSet<String>> = None;
    for axis in (0..dims.len()).filter(|&axis| next[axis] > 0) {
        let prefix: Vec<String> = grid.line(next, axis)[..next[axis]]
            .iter()
            .map(|slot| slot.expect("required prefixes are filled").to_owned())
            .collect();
        let following = corpus.next_words.get(&prefix).cloned().unwrap_or_default();
        candidates = Some(match candidates {
            None => following,
            Some(sofar) => sofar.intersection(&following).cloned().collect(),
        });
    }
    let shell: usize = next.iter().sum();
    let forbidden: HashSet<&str> = grid
        .shells()
        .remove(&shell)
        .unwrap_or_default()
        .into_iter()
        .collect();
    candidates
        .unwrap_or_else(|| corpus.vocabulary.iter().cloned().collect())
        .into_iter()
        .filter(|word| !forbidden.contains(word.as_str()))
        .collect()
}

/// `(volume, fullness)`, the optimum's primary key (ORTHO.md §7).
fn rank(dims: &[usize], words: &[Option<&str>]) -> (usize, usize) {
    let volume = dims.iter().map(|size| size - 1).product();
    (volume, words.iter().flatten().count())
}

/// Up to `SAMPLE` leaves, evenly spread over their ids.
fn sample(leaves: &HashMap<u64, Ortho>) -> Vec<&Ortho> {
    let mut ids: Vec<&u64> = leaves.keys().collect();
    ids.sort();
    let step = ids.len().div_ceil(SAMPLE).max(1);
    ids.into_iter()
        .step_by(step)
        .map(|id| &leaves[id])
        .collect()
}

/// Ingests `texts` with `process_text` and checks, after each version, a
/// sample of its leaves and its optimum. Returns the number of distinct leaves
/// checked.
fn check_versions(name: &str, texts: &[String]) -> usize {
    let mut seen_ids = HashSet::new();
    let mut optimal = None;
    let mut frontier = HashSet::new();
    let mut leaves = HashMap::new();
    let mut interner: Option<Interner> = None;
    let mut checked = HashSet::new();
    for version in 1..=texts.len() {
        let (next, ..) = process_text(
            &texts[version - 1],
            interner.take(),
            &mut seen_ids,
            &mut optimal,
            &mut frontier,
            &mut leaves,
            |_| Ok(()),
        )
        .expect("process_text succeeds");
        let corpus = Corpus::new(&texts[..version]);
        assert_eq!(
            next.words(),
            corpus.vocabulary.as_slice(),
            "{name} v{version}: token ids differ from ORTHO.md §2"
        );
        let optimal = optimal.as_ref().expect("every golden text finds orthos");
        let optimal_words = optimal.words(&next);
        let best = rank(optimal.dims(), &optimal_words);
        let mut subjects = sample(&leaves);
        assert!(!subjects.is_empty(), "{name} v{version}: no leaves");
        subjects.push(optimal);
        for ortho in subjects {
            let dims = ortho.dims();
            let words = ortho.words(&next);
            let context = format!("{name} v{version}: ortho {dims:?} {words:?}");
            assert_eq!(
                words.iter().flatten().count(),
                ortho.fullness(),
                "{context}: a token has no word"
            );
            let broken = violations(dims, &words, &corpus);
            assert!(broken.is_empty(), "{context}: {broken:#?}");
            assert!(
                words.iter().any(Option::is_none),
                "{context}: a full grid is never reported"
            );
            assert!(
                rank(dims, &words) <= best,
                "{context} beats the optimum {best:?}"
            );
            let open = fillers(dims, &words, &corpus);
            if leaves.contains_key(&ortho.id()) {
                assert!(open.is_empty(), "{context}: a leaf could take {open:?}");
                checked.insert(ortho.id());
            } else {
                // Only the optimum gets here: not a leaf, so it has a filler.
                assert!(!open.is_empty(), "{context}: no filler, yet not a leaf");
            }
        }
        interner = Some(next);
    }
    checked.len()
}

fn contents(name: &str) -> Vec<String> {
    common::case(name).contents()
}

#[test]
fn every_leaf_and_optimum_of_the_small_golden_texts_is_valid() {
    for name in ["square", "fox", "grid3", "cube"] {
        let checked = check_versions(name, &contents(name));
        let expected = common::case(name).after_each_text[0]["frontier"].as_u64();
        assert_eq!(Some(checked as u64), expected, "{name}: every leaf checked");
    }
}

#[test]
fn sampled_leaves_and_optimum_of_shakespeare_texts_are_valid() {
    for name in ["ts_0_2k", "ts_0_5k", "ts_0_10k"] {
        let checked = check_versions(name, &contents(name));
        assert!(checked >= 500, "{name}: only {checked} leaves checked");
    }
}

#[test]
fn leaves_after_incremental_ingestion_are_valid_over_both_texts() {
    for name in ["grid3_incremental", "ts_incremental"] {
        let texts = contents(name);
        assert_eq!(texts.len(), 2);
        check_versions(name, &texts);
    }
}

// The checker must be able to fail: each broken ortho below is rejected for
// the right reason, next to a valid one it accepts.

fn square_corpus() -> Corpus {
    Corpus::new(&contents("square"))
}

#[test]
fn checker_accepts_the_golden_square_optimum_as_a_valid_leaf() {
    let corpus = square_corpus();
    let words = [
        Some("one"),
        Some("three"),
        Some("two"),
        Some("four"),
        None,
        None,
    ];
    assert_eq!(violations(&[3, 2], &words, &corpus), Vec::<String>::new());
    assert_eq!(fillers(&[3, 2], &words, &corpus), Vec::<String>::new());
}

#[test]
fn checker_rejects_a_word_repeated_in_a_shell() {
    let words = [Some("one"), Some("two"), Some("two"), None];
    let broken = violations(&[2, 2], &words, &square_corpus());
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert!(broken[0].contains("repeats"), "{broken:?}");
}

#[test]
fn checker_rejects_a_line_that_is_not_a_phrase() {
    // Row one-four is not in sq.txt; column one-two is.
    let words = [Some("one"), Some("four"), Some("two"), None];
    let broken = violations(&[2, 2], &words, &square_corpus());
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert!(broken[0].contains("not a phrase"), "{broken:?}");
}

#[test]
fn checker_rejects_a_filled_slot_after_a_hole() {
    // (0,1) is empty but (1,1) below it holds `four`.
    let words = [Some("one"), None, Some("two"), Some("four")];
    let broken = violations(&[2, 2], &words, &square_corpus());
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert!(broken[0].contains("after a hole"), "{broken:?}");
}

#[test]
fn checker_rejects_the_unswapped_mirror_image_of_a_2x2_start() {
    // `two` (id 3) before `three` (id 2): the swap of ORTHO.md §5 was skipped.
    let words = [Some("one"), Some("two"), Some("three"), None];
    let broken = violations(&[2, 2], &words, &square_corpus());
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert!(broken[0].contains("mirror"), "{broken:?}");
}

#[test]
fn checker_rejects_bad_shapes_and_payload_lengths() {
    let corpus = square_corpus();
    let six = [
        Some("one"),
        Some("two"),
        Some("three"),
        Some("four"),
        None,
        None,
    ];
    assert!(!violations(&[2, 3], &six, &corpus).is_empty());
    assert!(!violations(&[6], &six, &corpus).is_empty());
    assert!(!violations(&[3, 1, 2], &six, &corpus).is_empty());
    assert!(!violations(&[2, 2], &six, &corpus).is_empty());
}

#[test]
fn checker_finds_the_filler_of_an_ortho_that_is_not_a_leaf() {
    // Next slot (1,1) follows `three` down and `two` across: only `four`.
    let words = [Some("one"), Some("three"), Some("two"), None];
    let corpus = square_corpus();
    assert_eq!(violations(&[2, 2], &words, &corpus), Vec::<String>::new());
    assert_eq!(fillers(&[2, 2], &words, &corpus), vec!["four".to_owned()]);
}

#[test]
fn checker_position_order_matches_the_spec_example() {
    let expected = [
        [0, 0],
        [0, 1],
        [1, 0],
        [0, 2],
        [1, 1],
        [2, 0],
        [1, 2],
        [2, 1],
        [2, 2],
    ];
    assert_eq!(
        position_order(&[3, 3]),
        expected.map(|c| c.to_vec()).to_vec()
    );
}

#[test]
fn checker_sentences_follow_the_spec() {
    let text = "One two, three. Four? five; SIX!\n\nWe know't 42-times\n\n\n.";
    let expected: Vec<Vec<&str>> = vec![
        vec!["one", "two", "three"],
        vec!["four"],
        vec!["five"],
        vec!["six"],
        vec!["we", "know't", "times"],
    ];
    assert_eq!(sentences(text), expected);
}
