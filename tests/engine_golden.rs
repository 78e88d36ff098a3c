//! Every golden test case through the library engine and through the seed's
//! `process_text`, with every figure compared.

mod common;

use std::collections::{HashMap, HashSet};

use fold::report::VersionReport;
use fold::search::{Dedup, Unobserved};
use fold::{Interner, SearchConfig, process_text};

#[test]
fn engine_reproduces_every_golden_case_in_both_modes() {
    for dedup in [Dedup::Tree, Dedup::SeenSet] {
        let config = SearchConfig {
            dedup,
            ..SearchConfig::default()
        };
        for case in common::test_cases() {
            let mut interner = Interner::new();
            for (step, (text, expected)) in case
                .contents()
                .iter()
                .zip(&case.after_each_text)
                .enumerate()
            {
                interner.ingest(text);
                let outcome = fold::search(&interner, &config, &mut Unobserved).unwrap();
                let report = VersionReport::new(&interner, &outcome.figures);
                common::assert_figures(&case.name, step, &report.to_json(), expected);
                // Every ortho found was expanded exactly once.
                assert_eq!(outcome.stats.processed, outcome.figures.orthos);
            }
        }
    }
}

/// Every case, one version at a time through one [`Exploration`]: each
/// version after the first searches only what its text makes new, and its
/// figures still equal the golden ones (those of a fresh search).
#[test]
fn incremental_versions_reproduce_every_golden_case() {
    use fold::search::{Exploration, Scope, Searcher};
    let mut multi_text_cases = 0;
    for (case, dedup) in common::test_cases()
        .into_iter()
        .flat_map(|case| [(case.clone(), Dedup::Tree), (case, Dedup::SeenSet)])
    {
        let searcher = Searcher::new(SearchConfig {
            dedup,
            ..SearchConfig::default()
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut exploration = Exploration::create(dir.path(), Scope::All).unwrap();
        let mut interner = Interner::new();
        let mut fresh_work = 0;
        for (step, (text, expected)) in case
            .contents()
            .iter()
            .zip(&case.after_each_text)
            .enumerate()
        {
            interner.ingest(text);
            let advanced = searcher
                .advance(&mut exploration, &interner, &mut Unobserved)
                .unwrap();
            let report = VersionReport::new(&interner, &advanced.figures);
            common::assert_figures(&case.name, step, &report.to_json(), expected);
            assert_eq!(exploration.manifest().orthos(), advanced.figures.orthos);
            if step > 0 {
                // Only orthos new in this version are expanded for the first
                // time; stored ones are at most expanded again.
                let new = advanced.figures.orthos - fresh_work;
                assert_eq!(advanced.stats.processed, new, "case {}", case.name);
                assert_eq!(advanced.stats.scanned, fresh_work);
                assert!(advanced.stats.revisited < fresh_work);
            }
            fresh_work = advanced.figures.orthos;
        }
        multi_text_cases += usize::from(case.texts.len() > 1);
    }
    assert!(
        multi_text_cases >= 4,
        "the golden multi-text cases are missing"
    );
}

/// Many versions through one exploration, compacted whenever it asks and
/// reopened from its manifest half way: every version still equals a fresh
/// search, and the log keeps a bounded number of files.
#[test]
fn compacted_and_reopened_exploration_stays_exact_over_many_versions() {
    use fold::search::{Exploration, Scope, Searcher};
    let text = &common::case("ts_0_10k").contents()[0];
    let sentences: Vec<&str> = text.split_inclusive(['.', '?', '!', ';']).collect();
    let parts: Vec<String> = sentences
        .chunks(sentences.len() / 20)
        .map(|chunk| chunk.concat())
        .collect();
    assert!(parts.len() >= 20, "{} parts", parts.len());
    let searcher = Searcher::new(SearchConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut exploration = Exploration::create(dir.path(), Scope::All).unwrap();
    let mut interner = Interner::new();
    let mut compactions = 0;
    for (step, part) in parts.iter().enumerate() {
        interner.ingest(part);
        let advanced = searcher
            .advance(&mut exploration, &interner, &mut Unobserved)
            .unwrap();
        let fresh = fold::search(&interner, &SearchConfig::default(), &mut Unobserved).unwrap();
        assert_eq!(advanced.figures, fresh.figures, "version {}", step + 1);
        if exploration.wants_compaction() {
            exploration.compact().unwrap();
            exploration.remove_stale_files().unwrap();
            compactions += 1;
        }
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert!(
            files <= 2 * 9,
            "{files} log files after version {}",
            step + 1
        );
        if step == parts.len() / 2 {
            let manifest = exploration.manifest().clone();
            drop(exploration);
            exploration = Exploration::open(dir.path(), Scope::All, manifest).unwrap();
            assert_eq!(exploration.manifest().orthos(), fresh.figures.orthos);
        }
    }
    assert!(compactions >= 2, "only {compactions} compactions");
}

#[test]
fn process_text_reproduces_every_golden_case() {
    for case in common::test_cases() {
        let mut seen_ids = HashSet::new();
        let mut optimal_ortho = None;
        let mut frontier = HashSet::new();
        let mut frontier_orthos_saved = HashMap::new();
        let mut interner = None;
        let mut checkpoints = 0u64;
        for (step, (text, expected)) in case
            .contents()
            .iter()
            .zip(&case.after_each_text)
            .enumerate()
        {
            let (next, _changed, frontier_size, _impacted, processed) = process_text(
                text,
                interner.take(),
                &mut seen_ids,
                &mut optimal_ortho,
                &mut frontier,
                &mut frontier_orthos_saved,
                |checkpoint| {
                    checkpoints += 1;
                    assert!(checkpoint.processed % 100_000 < 1000);
                    Ok(())
                },
            )
            .unwrap();
            let figures = fold::Figures {
                orthos: seen_ids.len() as u64,
                frontier: frontier.len() as u64,
                optimal: optimal_ortho.clone(),
            };
            let report = VersionReport::new(&next, &figures);
            common::assert_figures(&case.name, step, &report.to_json(), expected);
            assert_eq!(frontier_size, frontier.len());
            assert_eq!(frontier_orthos_saved.len(), frontier.len());
            assert!(frontier_orthos_saved.keys().all(|id| frontier.contains(id)));
            assert_eq!(processed as u64, figures.orthos);
            if case.name == "ts_0_20k" {
                assert_eq!(checkpoints, figures.orthos / 100_000);
            }
            interner = Some(next);
        }
    }
}

#[test]
fn origin_shards_add_up_to_every_golden_case() {
    use fold::search::{Scope, Searcher};
    let searcher = Searcher::new(SearchConfig {
        threads: 1,
        ..SearchConfig::default()
    })
    .unwrap();
    for case in common::test_cases() {
        let interner = Interner::from_texts(case.contents().iter().map(String::as_str));
        let mut total = fold::Figures::default();
        for origin in 0..interner.vocabulary() as u32 {
            let shard = searcher
                .run(
                    &interner,
                    Scope::Origin(fold::Token(origin)),
                    &mut Unobserved,
                )
                .unwrap();
            assert_eq!(shard.stats.processed, shard.figures.orthos);
            assert!(
                shard.figures.orthos >= 1,
                "every origin has at least [t,_,_,_]"
            );
            total.add(&shard.figures);
        }
        let report = VersionReport::new(&interner, &total);
        let expected = case.after_each_text.last().unwrap();
        common::assert_figures(
            &case.name,
            case.texts.len() - 1,
            &report.to_json(),
            expected,
        );
    }
}
