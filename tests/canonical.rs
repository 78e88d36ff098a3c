//! The canonical-parent rule checked by brute force: a plain breadth-first
//! search with a set of every ortho records, for each ortho found, every
//! parent that generates it; the rule's local parents must be exactly those,
//! and the canonical parent must be the one that accepts it.

mod common;

use std::collections::{HashMap, HashSet, VecDeque};

use fold::canonical::{canonical_parent, local_parents};
use fold::ortho::{Scratch, expand};
use fold::{Interner, Ortho};
use proptest::prelude::*;

/// Every ortho reachable over `interner`, with all the parents that generate it.
fn parents_by_brute_force(interner: &Interner) -> HashMap<Ortho, HashSet<Ortho>> {
    let mut parents: HashMap<Ortho, HashSet<Ortho>> = HashMap::new();
    let mut queue = VecDeque::from([Ortho::empty()]);
    let mut scratch = Scratch::default();
    while let Some(parent) = queue.pop_front() {
        let mut children = Vec::new();
        expand(&parent, interner, &mut scratch, |child| {
            children.push(child)
        })
        .unwrap();
        for child in children {
            let entry = parents.entry(child.clone()).or_default();
            if entry.is_empty() {
                queue.push_back(child);
            }
            entry.insert(parent.clone());
        }
    }
    parents
}

/// Checks the rule on every ortho of `interner`; returns (orthos, orthos
/// with more than one parent).
fn check_rule(interner: &Interner) -> (usize, usize) {
    let parents = parents_by_brute_force(interner);
    let mut shared = 0;
    for (ortho, actual) in &parents {
        let local = local_parents(ortho);
        let local_set: HashSet<Ortho> = local.iter().cloned().collect();
        assert_eq!(
            local.len(),
            local_set.len(),
            "{ortho:?}: a local parent listed twice"
        );
        assert_eq!(
            &local_set, actual,
            "{ortho:?}: local parents differ from actual parents"
        );
        assert_eq!(canonical_parent(ortho).as_ref(), local.first());
        shared += usize::from(actual.len() > 1);
    }
    (parents.len(), shared)
}

#[test]
fn local_parents_are_exactly_the_actual_parents_on_golden_texts() {
    let mut checked = 0;
    let mut shared = 0;
    for name in [
        "square",
        "fox",
        "grid3",
        "cube",
        "grid3_incremental",
        "ts_0_2k",
        "ts_0_5k",
        "ts_incremental",
        "ts_0_10k",
    ] {
        let case = common::case(name);
        let contents = case.contents();
        let interner = Interner::from_texts(contents.iter().map(String::as_str));
        let (orthos, several) = check_rule(&interner);
        checked += orthos;
        shared += several;
    }
    assert!(checked > 40_000, "{checked}");
    assert!(shared > 1_000, "only {shared} orthos with several parents");
}

/// The rows and columns of a random grid of letters plus random sentences:
/// dense in repeated words, so histories reshape often and meet.
fn dense_text() -> impl Strategy<Value = String> {
    let grid = (2usize..=4, 2usize..=3).prop_flat_map(|(rows, cols)| {
        prop::collection::vec(b'a'..=b'f', rows * cols).prop_map(move |cells| {
            let word = |row: usize, col: usize| char::from(cells[row * cols + col]).to_string();
            let mut sentences = Vec::new();
            for row in 0..rows {
                sentences.push(
                    (0..cols)
                        .map(|col| word(row, col))
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            }
            for col in 0..cols {
                sentences.push(
                    (0..rows)
                        .map(|row| word(row, col))
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            }
            sentences.join(". ")
        })
    });
    let sentence =
        prop::collection::vec((b'a'..=b'f').prop_map(|l| char::from(l).to_string()), 2..=6)
            .prop_map(|words| words.join(" "));
    (grid, prop::collection::vec(sentence, 0..=4))
        .prop_map(|(grid, noise)| format!("{grid}. {}", noise.join(". ")))
}

/// Every axis line of a random 2–3 by 2–3 by 2 block of letters, as
/// sentences: these reach cubes, four-axis shapes and mixed sizes, where
/// histories with several up-reshapings meet.
fn block_text() -> impl Strategy<Value = String> {
    (2usize..=3, 2usize..=3, 0u8..3).prop_flat_map(|(a, b, shift)| {
        prop::collection::vec(b'a'..=b'g', a * b * 2).prop_map(move |cells| {
            let at = |i: usize, j: usize, k: usize| {
                char::from(cells[(i * b + j) * 2 + k] + shift).to_string()
            };
            let mut sentences = Vec::new();
            for j in 0..b {
                for k in 0..2 {
                    sentences.push((0..a).map(|i| at(i, j, k)).collect::<Vec<_>>().join(" "));
                }
            }
            for i in 0..a {
                for k in 0..2 {
                    sentences.push((0..b).map(|j| at(i, j, k)).collect::<Vec<_>>().join(" "));
                }
                for j in 0..b {
                    sentences.push((0..2).map(|k| at(i, j, k)).collect::<Vec<_>>().join(" "));
                }
            }
            sentences.join(". ")
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn local_parents_are_exactly_the_actual_parents_on_random_texts(text in dense_text()) {
        check_rule(&Interner::from_texts([text.as_str()]));
    }

    #[test]
    fn local_parents_are_exactly_the_actual_parents_on_random_blocks(text in block_text()) {
        check_rule(&Interner::from_texts([text.as_str()]));
    }
}

/// The largest check, a few seconds: every ortho of ts_0_20k.
#[test]
fn local_parents_are_exactly_the_actual_parents_on_ts_0_20k() {
    let case = common::case("ts_0_20k");
    let contents = case.contents();
    let (orthos, shared) = check_rule(&Interner::from_texts(contents.iter().map(String::as_str)));
    assert_eq!(orthos, 1_280_079);
    println!("{orthos} orthos, {shared} with several parents");
}
