//! Properties of the search on small random texts: its figures do not depend
//! on how it runs (threads, batch size, a queue that spills to disk), and its
//! counts are consistent with each other.

mod common;

use fold::report::VersionReport;
use std::collections::HashMap;

use fold::search::{Dedup, SearchObserver, SearchOutcome, Unobserved};
use fold::{Interner, Ortho, SearchConfig};
use proptest::prelude::*;
use serde_json::Value;

/// Texts of 1–6 sentences, each of 1–6 words drawn from the first 3–8
/// letters, joined with ". ": small enough to search in milliseconds, dense
/// enough in repeated words to reach 3-D shapes and reshapes.
fn small_text() -> impl Strategy<Value = String> {
    (3u8..=8).prop_flat_map(|letters| {
        let word = (b'a'..b'a' + letters).prop_map(|letter| char::from(letter).to_string());
        let sentence = prop::collection::vec(word, 1..=6).prop_map(|words| words.join(" "));
        prop::collection::vec(sentence, 1..=6).prop_map(|sentences| sentences.join(". "))
    })
}

/// The rows and columns of a random 2–3 by 2–3 grid of the letters a–i as
/// sentences, plus a small random text: these reach larger and 3-D shapes,
/// and so the reshapings, far more often than random sentences alone.
fn grid_text() -> impl Strategy<Value = String> {
    let grid = (2usize..=3, 2usize..=3).prop_flat_map(|(rows, cols)| {
        prop::collection::vec(b'a'..=b'i', rows * cols).prop_map(move |cells| {
            let word = |row: usize, col: usize| char::from(cells[row * cols + col]).to_string();
            let mut sentences = Vec::new();
            for row in 0..rows {
                let line: Vec<String> = (0..cols).map(|col| word(row, col)).collect();
                sentences.push(line.join(" "));
            }
            for col in 0..cols {
                let line: Vec<String> = (0..rows).map(|row| word(row, col)).collect();
                sentences.push(line.join(" "));
            }
            sentences.join(". ")
        })
    });
    (grid, small_text()).prop_map(|(grid, noise)| format!("{grid}. {noise}"))
}

/// Either kind of small text.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![small_text(), grid_text()]
}

/// Texts whose sentences are all single words, so there is no phrase at all.
fn text_without_phrases() -> impl Strategy<Value = String> {
    let word = "[a-h]{1,3}";
    prop::collection::vec(word, 1..=6).prop_map(|words| words.join(". "))
}

fn run(interner: &Interner, config: &SearchConfig) -> (Value, SearchOutcome) {
    let outcome = fold::search(interner, config, &mut Unobserved).expect("search succeeds");
    let report = VersionReport::new(interner, &outcome.figures).to_json();
    (report, outcome)
}

fn config(threads: usize, batch_size: usize, dedup: Dedup) -> SearchConfig {
    SearchConfig {
        threads,
        batch_size,
        dedup,
        ..SearchConfig::default()
    }
}

/// Counts how often each ortho is accepted.
#[derive(Default)]
struct Acceptances(HashMap<Ortho, u32>);

impl SearchObserver for Acceptances {
    fn wants_orthos(&self) -> bool {
        true
    }

    fn on_orthos(&mut self, orthos: &[Ortho]) -> fold::Result<()> {
        for ortho in orthos {
            *self.0.entry(ortho.clone()).or_default() += 1;
        }
        Ok(())
    }
}

fn acceptances(interner: &Interner, dedup: Dedup, batch_size: usize) -> HashMap<Ortho, u32> {
    let mut counted = Acceptances::default();
    fold::search(interner, &config(2, batch_size, dedup), &mut counted).expect("search succeeds");
    counted.0
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn figures_do_not_depend_on_threads_or_batch_size(text in text()) {
        let interner = Interner::from_texts([text.as_str()]);
        let (expected, _) = run(&interner, &SearchConfig::default());
        for threads in [1, 2, 4] {
            for batch_size in [1, 3, 1000] {
                for dedup in [Dedup::Tree, Dedup::SeenSet] {
                    let (actual, _) = run(&interner, &config(threads, batch_size, dedup));
                    prop_assert_eq!(
                        &actual,
                        &expected,
                        "threads {}, batch size {}, {:?}",
                        threads,
                        batch_size,
                        dedup
                    );
                }
            }
        }
    }

    /// The tree accepts every ortho exactly once, and exactly the orthos
    /// the seen-set search finds.
    #[test]
    fn the_tree_accepts_each_ortho_the_seen_set_finds_exactly_once(text in text()) {
        let interner = Interner::from_texts([text.as_str()]);
        let reference = acceptances(&interner, Dedup::SeenSet, 1000);
        for batch_size in [1, 1000] {
            let tree = acceptances(&interner, Dedup::Tree, batch_size);
            prop_assert!(tree.values().all(|&count| count == 1), "an ortho accepted twice");
            prop_assert!(reference.values().all(|&count| count == 1));
            prop_assert_eq!(tree.len(), reference.len());
            prop_assert!(tree.keys().all(|ortho| reference.contains_key(ortho)));
        }
    }

    /// A text cut at random sentence boundaries into 2–4 texts, ingested as
    /// versions of one exploration, ends with the figures of one fresh search
    /// over the resulting interner, and so does every version on the way.
    #[test]
    fn incremental_versions_equal_fresh_searches(
        text in text(),
        cuts in prop::collection::btree_set(1usize..12, 1..=3),
    ) {
        let sentences: Vec<&str> = text.split(". ").collect();
        use fold::search::{Exploration, Scope, Searcher};
        let mut bounds: Vec<usize> = cuts.into_iter().filter(|&cut| cut < sentences.len()).collect();
        bounds.insert(0, 0);
        bounds.push(sentences.len());
        prop_assume!(bounds.len() >= 3, "no cut falls inside the text");
        for dedup in [Dedup::Tree, Dedup::SeenSet] {
            let searcher = Searcher::new(config(2, 1000, dedup)).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let mut exploration = Exploration::create(dir.path(), Scope::All).unwrap();
            let mut interner = Interner::new();
            for part in bounds.windows(2) {
                interner.ingest(&sentences[part[0]..part[1]].join(". "));
                let advanced = searcher.advance(&mut exploration, &interner, &mut Unobserved).unwrap();
                let incremental = VersionReport::new(&interner, &advanced.figures).to_json();
                let (fresh, _) = run(&interner, &SearchConfig::default());
                prop_assert_eq!(&incremental, &fresh, "version {}, {:?}", interner.version(), dedup);
            }
        }
    }

    /// Versions added one by one accept each new ortho exactly once: the
    /// orthos handed out over all versions are exactly those of a fresh
    /// search of the last version.
    #[test]
    fn incremental_versions_accept_each_new_ortho_once(
        text in text(),
        cuts in prop::collection::btree_set(1usize..12, 1..=3),
    ) {
        use fold::search::{Exploration, Scope, Searcher};
        let sentences: Vec<&str> = text.split(". ").collect();
        let mut bounds: Vec<usize> = cuts.into_iter().filter(|&cut| cut < sentences.len()).collect();
        bounds.insert(0, 0);
        bounds.push(sentences.len());
        prop_assume!(bounds.len() >= 3, "no cut falls inside the text");
        let searcher = Searcher::new(config(2, 5, Dedup::Tree)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut exploration = Exploration::create(dir.path(), Scope::All).unwrap();
        let mut interner = Interner::new();
        let mut counted = Acceptances::default();
        for part in bounds.windows(2) {
            interner.ingest(&sentences[part[0]..part[1]].join(". "));
            searcher.advance(&mut exploration, &interner, &mut counted).unwrap();
        }
        prop_assert!(counted.0.values().all(|&count| count == 1), "an ortho accepted twice");
        let fresh = acceptances(&interner, Dedup::SeenSet, 1000);
        prop_assert_eq!(counted.0.len(), fresh.len());
        prop_assert!(counted.0.keys().all(|ortho| fresh.contains_key(ortho)));
    }

    #[test]
    fn every_found_ortho_is_counted_once_and_leaves_are_among_them(text in text()) {
        let interner = Interner::from_texts([text.as_str()]);
        let (_, outcome) = run(&interner, &SearchConfig::default());
        let figures = &outcome.figures;
        prop_assert_eq!(acceptances(&interner, Dedup::Tree, 1000).len() as u64, figures.orthos);
        prop_assert_eq!(outcome.stats.processed, figures.orthos);
        prop_assert!(figures.frontier <= figures.orthos);
        // Each word alone in the first slot is an ortho.
        prop_assert!(figures.orthos >= interner.vocabulary() as u64);
        // Every step adds a word, so the fullest orthos found are leaves.
        prop_assert!(figures.frontier >= 1);
        prop_assert!(figures.optimal.is_some());
    }

    #[test]
    fn text_without_phrases_gives_one_leaf_per_word(text in text_without_phrases()) {
        let interner = Interner::from_texts([text.as_str()]);
        let (report, outcome) = run(&interner, &SearchConfig::default());
        let words = interner.vocabulary() as u64;
        prop_assert!(words >= 1);
        prop_assert_eq!(outcome.figures.orthos, words);
        prop_assert_eq!(outcome.figures.frontier, words);
        // Ties on (volume, fullness) go to the smallest payload: the first word.
        let first = interner.words()[0].clone();
        prop_assert_eq!(
            &report["optimal"]["payload"],
            &serde_json::json!([first, null, null, null])
        );
    }
}

/// Depth-first order keeps the pending orthos to a few batches' children
/// per level, far fewer than the orthos found.
#[test]
fn pending_work_stays_small_however_many_orthos_are_found() {
    let case = common::case("ts_0_10k");
    let interner = Interner::from_texts(case.contents().iter().map(String::as_str));
    for batch_size in [7, 1000] {
        let (report, outcome) = run(&interner, &config(2, batch_size, Dedup::Tree));
        common::assert_figures(&case.name, 0, &report, &case.after_each_text[0]);
        let peak = outcome.stats.peak_queue;
        assert!(peak * 4 < outcome.figures.orthos, "{peak} pending at once");
    }
}

/// Every `every` batches, hands off `thirds` thirds of the orthos pending
/// (at least one): the search goes on with the rest, or ends when all go.
#[derive(Clone, Copy)]
struct HandOffEvery {
    every: u32,
    thirds: usize,
    batches: u32,
}

impl SearchObserver for HandOffEvery {
    fn hand_off(&mut self, pending: &[Ortho]) -> usize {
        self.batches += 1;
        if !self.batches.is_multiple_of(self.every) {
            return 0;
        }
        (pending.len() * self.thirds / 3).max(1)
    }
}

/// A search split into subtree units as a cluster splits it: a running unit
/// hands some of its pending orthos off as new units (again and again) and
/// goes on with the rest, and every later version brings each unit up to
/// date: from its kept history (whose hand-offs its replay must follow), or
/// from scratch with its handed-off orthos excluded. The units' figures add
/// up to a fresh search's, version after version.
fn units_add_up(texts: &[String], hand_off: HandOffEvery) -> Result<(), TestCaseError> {
    use fold::search::{Exploration, Scope, Searcher, Subtrees};
    use std::sync::Arc;

    struct Unit {
        part: Subtrees,
        exploration: Exploration,
        _dir: tempfile::TempDir,
    }
    let searcher = Searcher::new(config(1, 2, Dedup::Tree)).unwrap();
    let mut units: Vec<Unit> = Vec::new();
    let mut interner = Interner::new();
    for text in texts {
        let known = interner.vocabulary() as u32;
        interner.ingest(text);
        // New first words make a new unit.
        let roots: Vec<Ortho> = (known..interner.vocabulary() as u32)
            .map(|t| Ortho::new(&[2, 2], &[Some(fold::Token(t)), None, None, None]).unwrap())
            .collect();
        let mut queue: Vec<Subtrees> = Vec::new();
        if !roots.is_empty() {
            queue.push(Subtrees {
                roots,
                excluded: Default::default(),
            });
        }
        let mut total = fold::Figures::default();
        // Bring every unit up to this version; half of them from scratch.
        for (index, unit) in units.iter_mut().enumerate() {
            if index % 2 == 1 {
                let dir = tempfile::tempdir().unwrap();
                unit.exploration =
                    Exploration::create(dir.path(), Scope::Subtrees(Arc::new(unit.part.clone())))
                        .unwrap();
                unit._dir = dir;
            }
            let advanced = searcher
                .advance(&mut unit.exploration, &interner, &mut hand_off.clone())
                .unwrap();
            total.add(&advanced.figures);
            record_handoff(&mut unit.part, advanced.handed_off, &mut queue);
        }
        while let Some(part) = queue.pop() {
            let dir = tempfile::tempdir().unwrap();
            let mut exploration =
                Exploration::create(dir.path(), Scope::Subtrees(Arc::new(part.clone()))).unwrap();
            let advanced = searcher
                .advance(&mut exploration, &interner, &mut hand_off.clone())
                .unwrap();
            total.add(&advanced.figures);
            let mut unit = Unit {
                part,
                exploration,
                _dir: dir,
            };
            record_handoff(&mut unit.part, advanced.handed_off, &mut queue);
            units.push(unit);
        }
        let fresh = fold::search(&interner, &SearchConfig::default(), &mut Unobserved).unwrap();
        prop_assert_eq!(&total, &fresh.figures, "version {}", interner.version());
    }
    Ok(())
}

/// A unit that handed `pending` off: they become new units (in two parts),
/// which keep the unit's exclusions that lie below their roots (as the
/// coordinator splits a unit: [`UnitDef::split`]), and the unit excludes
/// them from now on.
fn record_handoff(
    part: &mut fold::search::Subtrees,
    pending: Vec<Ortho>,
    queue: &mut Vec<fold::search::Subtrees>,
) {
    use fold::coordinator::units::UnitDef;
    use fold::ids::UnitId;
    if pending.is_empty() {
        return;
    }
    let unit = UnitDef {
        id: UnitId(1),
        created: fold::Version::FIRST,
        parent: UnitId(0),
        roots: part.roots.clone(),
        excluded: part.excluded.iter().cloned().collect(),
    };
    let half = pending.len().div_ceil(2);
    let parts = pending.chunks(half).map(<[Ortho]>::to_vec).collect();
    for def in unit.split(parts, fold::Version::FIRST, UnitId(2)) {
        // Each inherited exclusion really lies below one of the part's roots.
        assert!(def.excluded.iter().all(|excluded| {
            def.roots
                .iter()
                .any(|root| fold::canonical::is_below(excluded, root))
        }));
        queue.push(fold::search::Subtrees {
            roots: def.roots,
            excluded: def.excluded.into_iter().collect(),
        });
    }
    part.excluded.extend(pending);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn subtree_units_that_hand_work_off_add_up_to_the_whole_search(
        text in text(),
        cuts in prop::collection::btree_set(1usize..12, 0..=2),
        every in 1u32..4,
        thirds in 1usize..=3,
    ) {
        let sentences: Vec<&str> = text.split(". ").collect();
        let mut bounds: Vec<usize> = cuts.into_iter().filter(|&cut| cut < sentences.len()).collect();
        bounds.insert(0, 0);
        bounds.push(sentences.len());
        let texts: Vec<String> = bounds.windows(2).map(|part| sentences[part[0]..part[1]].join(". ")).collect();
        units_add_up(&texts, HandOffEvery { every, thirds, batches: 0 })?;
    }
}
