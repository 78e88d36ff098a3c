//! The ledger's exactness rules, one by one.

use super::*;
use crate::coordinator::units::first_word;
use crate::interner::Interner;

/// The words of a text, in token-id order.
fn words(text: &str) -> Vec<String> {
    Interner::from_texts([text]).words().to_vec()
}

fn ledger_with(text: &str) -> Ledger {
    let mut ledger = Ledger::new(Duration::from_secs(5), Dedup::Tree);
    add_version(&mut ledger, "t", words(text));
    ledger
}

/// Adds a version whose new words all weigh the same; returns its number
/// and its new units.
fn add_version(ledger: &mut Ledger, name: &str, new_words: Vec<String>) -> (Version, Vec<UnitDef>) {
    let known = ledger.words.len();
    let weights = vec![0; known + new_words.len()];
    let units = ledger.first_units(known, &weights);
    let version = ledger.add_version(name.into(), new_words, units.clone());
    (version, units)
}

fn result(orthos: u64, token: u32) -> UnitResult {
    UnitResult {
        figures: Figures {
            orthos,
            frontier: 1,
            optimal: Some(first_word(token)),
        },
        base_version: Version::ZERO,
        expanded: orthos,
        kept: false,
    }
}

fn live(queued: u64) -> Report {
    Report {
        queued,
        ..Report::default()
    }
}

/// Finishes every unit of the ledger with `worker`, each adding `orthos`.
fn finish_all(ledger: &mut Ledger, worker: WorkerId, orthos: u64) -> usize {
    let mut finished = 0;
    loop {
        let assignments = ledger.assign(Instant::now());
        if assignments.is_empty() {
            return finished;
        }
        for a in assignments {
            ledger
                .complete(worker, a.attempt, result(orthos, 0), Instant::now())
                .unwrap();
            finished += 1;
        }
    }
}

#[test]
fn new_first_words_are_dealt_into_units_each_counted_once() {
    let mut ledger = ledger_with("a b c");
    let worker = ledger.add_worker("w".into(), 1, []);
    let version = ledger.version(Version::FIRST).unwrap();
    assert_eq!(
        version.units_total(),
        3,
        "three words, three units of one each"
    );
    let now = Instant::now();
    let mut seen = Vec::new();
    loop {
        let assignments = ledger.assign(now);
        if assignments.is_empty() {
            break;
        }
        for a in assignments {
            seen.push(a.unit);
            let finished = ledger
                .complete(worker, a.attempt, result(2, 0), now)
                .unwrap();
            assert_eq!(finished.unit, a.unit);
            // A second report of the same attempt is refused.
            assert!(
                ledger
                    .complete(worker, a.attempt, result(2, 0), now)
                    .is_err()
            );
        }
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 3);
    let version = ledger.version(Version::FIRST).unwrap();
    assert!(version.is_done());
    assert_eq!(version.figures().orthos, 6);
}

#[test]
fn a_lost_worker_frees_its_units_and_its_late_reports_are_refused() {
    let mut ledger = ledger_with("a b c");
    let now = Instant::now();
    let lost = ledger.add_worker("lost".into(), 1, []);
    let held = ledger.assign(now);
    assert_eq!(held.len(), UNITS_PER_WORKER);
    ledger.remove_worker(lost);
    assert!(
        ledger
            .complete(lost, held[0].attempt, result(5, 0), now)
            .is_err()
    );
    let other = ledger.add_worker("other".into(), 1, []);
    let again = ledger.assign(now);
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|a| a.worker == other));
    // Retried units go first.
    let retried: Vec<UnitId> = held.iter().map(|a| a.unit).collect();
    assert!(again.iter().all(|a| retried.contains(&a.unit)));
    assert_eq!(
        ledger.version(Version::FIRST).unwrap().attempts_discarded(),
        2
    );
    assert_eq!(ledger.version(Version::FIRST).unwrap().figures().orthos, 0);
}

#[test]
fn expired_leases_return_units_unless_renewed_and_stall_the_worker() {
    let mut ledger = ledger_with("a b c d");
    let start = Instant::now();
    let worker = ledger.add_worker("w".into(), 1, []);
    let held = ledger.assign(start);
    let later = start + Duration::from_secs(4);
    ledger
        .progress(worker, held[0].attempt, live(3), later)
        .unwrap();
    assert_eq!(
        ledger.expire_leases(start + Duration::from_secs(6)).len(),
        1
    );
    assert!(
        ledger
            .complete(worker, held[1].attempt, result(1, 1), later)
            .is_err()
    );
    // Stalled: no new units until heard from.
    assert!(ledger.assign(later).is_empty());
    assert!(ledger.heard_from(worker));
    assert!(!ledger.assign(later).is_empty());
    assert!(
        ledger
            .complete(worker, held[0].attempt, result(1, 0), later)
            .is_ok()
    );
}

#[test]
fn an_idle_worker_makes_the_busiest_unit_split_and_the_split_counts_once() {
    let mut ledger = ledger_with("a");
    ledger.set_split_from(4);
    let now = Instant::now();
    let busy = ledger.add_worker("busy".into(), 1, []);
    let first = ledger.assign(now).remove(0);
    assert!(
        ledger.splits().is_empty(),
        "nobody is idle... the busy worker has room"
    );
    ledger.progress(busy, first.attempt, live(3), now).unwrap();
    let idle = ledger.add_worker("idle".into(), 1, []);
    assert!(ledger.assign(now).is_empty(), "nothing is ready");
    assert!(ledger.splits().is_empty(), "3 waiting orthos are too few");
    ledger.progress(busy, first.attempt, live(10), now).unwrap();
    let splits = ledger.splits();
    assert_eq!(splits.len(), 1);
    assert_eq!((splits[0].worker, splits[0].attempt), (busy, first.attempt));
    assert!(splits[0].parts >= 2);
    assert!(ledger.splits().is_empty(), "asked once");

    // The unit hands two parts off and goes on: the new units exist at once.
    let parts = vec![vec![first_word(0)], vec![first_word(0)]];
    let split = ledger.split(busy, first.attempt, parts).unwrap();
    assert_eq!(split.new_units.len(), 2);
    assert_eq!(split.unit.excluded.len(), 2);
    assert!(
        split
            .new_units
            .iter()
            .all(|u| u.parent == first.unit && u.created == Version::FIRST)
    );
    let version = ledger.version(Version::FIRST).unwrap();
    assert_eq!(
        (
            version.units_total(),
            version.units_done(),
            version.units_split()
        ),
        (3, 0, 1)
    );
    let next = ledger.assign(now);
    assert_eq!(next.len(), 2, "both workers get a new unit");
    assert!(next.iter().any(|a| a.worker == idle));
    for a in next {
        ledger
            .complete(a.worker, a.attempt, result(1, 0), now)
            .unwrap();
    }
    assert!(
        !ledger.version(Version::FIRST).unwrap().is_done(),
        "the split unit still runs"
    );
    // It may be asked again; an empty answer makes nothing.
    assert_eq!(ledger.splits().len(), 1);
    assert!(
        ledger
            .split(busy, first.attempt, vec![Vec::new()])
            .unwrap()
            .new_units
            .is_empty()
    );
    ledger
        .complete(busy, first.attempt, result(7, 0), now)
        .unwrap();
    let version = ledger.version(Version::FIRST).unwrap();
    assert!(version.is_done());
    assert_eq!((version.units_total(), version.units_split()), (3, 1));
    assert_eq!(version.figures().orthos, 9);
    let units = ledger.units(Version::FIRST, 10, now).unwrap();
    let parent = units.iter().find(|u| u.unit == first.unit).unwrap();
    assert_eq!(parent.split_into, 2);
}

#[test]
fn a_split_of_a_stale_attempt_is_refused_and_makes_nothing() {
    let mut ledger = ledger_with("a");
    let now = Instant::now();
    let worker = ledger.add_worker("w".into(), 1, []);
    let a = ledger.assign(now).remove(0);
    ledger.hand_back(worker, a.attempt).unwrap();
    let refused = ledger.split(worker, a.attempt, vec![vec![first_word(0)]]);
    assert!(matches!(refused, Err(Refusal::StaleAttempt(..))));
    assert_eq!(ledger.version(Version::FIRST).unwrap().units_total(), 1);
    assert_eq!(ledger.version(Version::FIRST).unwrap().figures().orthos, 0);
}

#[test]
fn a_split_unit_lost_after_its_split_is_searched_again_without_what_it_handed_off() {
    let mut ledger = ledger_with("a");
    ledger.set_split_from(2);
    let now = Instant::now();
    let lost = ledger.add_worker("lost".into(), 1, []);
    let a = ledger.assign(now).remove(0);
    ledger.progress(lost, a.attempt, live(5), now).unwrap();
    let other = ledger.add_worker("other".into(), 1, []);
    ledger.splits();
    let child = ledger
        .split(lost, a.attempt, vec![vec![first_word(0)]])
        .unwrap()
        .new_units[0]
        .id;
    ledger.remove_worker(lost);
    let again = ledger.assign(now);
    let retry = again
        .iter()
        .find(|x| x.unit == a.unit)
        .expect("the unit is searched again");
    assert_eq!(retry.worker, other);
    let excluded = crate::search::decode_ortho_list(&retry.excluded).unwrap();
    assert_eq!(excluded, vec![first_word(0)]);
    assert!(again.iter().any(|x| x.unit == child));
    for x in again {
        ledger
            .complete(x.worker, x.attempt, result(3, 0), now)
            .unwrap();
    }
    let version = ledger.version(Version::FIRST).unwrap();
    assert!(version.is_done());
    assert_eq!((version.units_total(), version.figures().orthos), (2, 6));
}

#[test]
fn a_unit_waits_for_its_previous_version_and_keeps_its_splits() {
    let mut ledger = ledger_with("a");
    ledger.set_split_from(2);
    let now = Instant::now();
    let worker = ledger.add_worker("w".into(), 1, []);
    let a = ledger.assign(now).remove(0);
    // Version 2 arrives while version 1's only unit runs.
    let (version, new_units) = add_version(&mut ledger, "u", vec!["b".into()]);
    assert_eq!((version, new_units.len()), (Version::new(2), 1));
    let b = ledger.assign(now).remove(0);
    assert_eq!(
        (b.version, b.unit),
        (Version::new(2), new_units[0].id),
        "only the new word's unit is ready"
    );
    ledger.progress(worker, a.attempt, live(5), now).unwrap();
    let _idle = ledger.add_worker("idle".into(), 1, []);
    let asked = ledger.splits().remove(0);
    let split = ledger
        .split(worker, asked.attempt, vec![vec![first_word(0)]])
        .unwrap();
    ledger
        .complete(worker, asked.attempt, result(4, 0), now)
        .unwrap();
    let child = split.new_units[0].id;
    // The child is searched in version 1, then in version 2 like its parent.
    let version2 = ledger.version(Version::new(2)).unwrap();
    assert_eq!(version2.units_total(), 3);
    let mut order = Vec::new();
    for _ in 0..4 {
        for assignment in ledger.assign(now) {
            order.push((assignment.version, assignment.unit));
            ledger
                .complete(assignment.worker, assignment.attempt, result(1, 0), now)
                .unwrap();
        }
    }
    let position = |entry| order.iter().position(|&e| e == entry).unwrap();
    assert!(position((Version::FIRST, child)) < position((Version::new(2), child)));
    assert!(order.contains(&(Version::new(2), a.unit)));
    ledger
        .complete(worker, b.attempt, result(1, 0), now)
        .unwrap();
    assert!(ledger.versions().iter().all(VersionLedger::is_done));
}

#[test]
fn a_kept_unit_is_offered_to_its_keeper_with_its_base_only_from_the_counted_attempt() {
    let mut ledger = ledger_with("a b c d e f");
    let now = Instant::now();
    let keeper = ledger.add_worker("keeper".into(), 1, []);
    let mut kept_units = Vec::new();
    loop {
        let assignments = ledger.assign(now);
        if assignments.is_empty() {
            break;
        }
        for a in assignments {
            let kept = kept_units.len() < 2;
            if kept {
                kept_units.push(a.unit);
            }
            let mut result = result(1, 0);
            result.kept = kept;
            ledger.complete(keeper, a.attempt, result, now).unwrap();
        }
    }
    add_version(&mut ledger, "u", Vec::new());
    // A stranger claims to keep a unit from an attempt that was not counted.
    let stranger = ledger.add_worker(
        "stranger".into(),
        1,
        [(kept_units[0], Version::FIRST, AttemptId(12345))],
    );
    let offered = ledger.assign(now);
    let of =
        |worker| -> Vec<&Assignment> { offered.iter().filter(|a| a.worker == worker).collect() };
    let mine = of(keeper);
    assert_eq!(mine.len(), UNITS_PER_WORKER);
    assert!(
        mine.iter()
            .all(|a| kept_units.contains(&a.unit) && a.base_version == Version::FIRST),
        "{mine:?}"
    );
    assert!(of(stranger).iter().all(|a| a.base_version == Version::ZERO));
}

#[test]
fn a_restored_ledger_counts_stored_results_once_and_searches_the_rest() {
    let mut ledger = ledger_with("a b c");
    let now = Instant::now();
    let worker = ledger.add_worker("w".into(), 1, []);
    let a = ledger.assign(now).remove(0);
    let finished = ledger
        .complete(worker, a.attempt, result(7, 1), now)
        .unwrap();
    let units: Vec<UnitDef> = ledger.units.values().map(|u| u.def.clone()).collect();

    let mut restored = Ledger::new(Duration::from_secs(5), Dedup::Tree);
    restored.restore(
        vec![RestoredVersion {
            source: "t".into(),
            new_words: words("a b c"),
        }],
        units,
        vec![
            (Version::FIRST, finished.unit, finished.counted.clone()),
            // A duplicate record counts nothing more.
            (Version::FIRST, finished.unit, finished.counted.clone()),
        ],
    );
    let version = restored.version(Version::FIRST).unwrap();
    assert_eq!((version.units_done(), version.units_total()), (1, 3));
    assert_eq!(version.figures().orthos, 7);
    let worker = restored.add_worker("w".into(), 1, []);
    assert_eq!(finish_all(&mut restored, worker, 1), 2);
    assert_eq!(
        restored.version(Version::FIRST).unwrap().figures().orthos,
        9
    );
}

#[test]
fn seen_set_mode_makes_one_unit_per_first_word_and_never_splits() {
    let mut ledger = Ledger::new(Duration::from_secs(5), Dedup::SeenSet);
    ledger.set_split_from(1);
    add_version(&mut ledger, "t", words("a b c d e"));
    assert_eq!(ledger.version(Version::FIRST).unwrap().units_total(), 5);
    let now = Instant::now();
    let worker = ledger.add_worker("w".into(), 1, []);
    let a = ledger.assign(now).remove(0);
    assert_eq!((a.dedup, a.most_orthos), (Dedup::SeenSet, 0));
    ledger.progress(worker, a.attempt, live(100), now).unwrap();
    ledger.add_worker("idle".into(), 1, []);
    ledger.assign(now);
    assert!(ledger.splits().is_empty());
    let refused = ledger.split(worker, a.attempt, vec![vec![first_word(0)]]);
    assert!(matches!(refused, Err(Refusal::Malformed(..))));
}

#[test]
fn live_figures_add_running_attempts_to_finished_units() {
    let mut ledger = ledger_with("a b");
    let now = Instant::now();
    let worker = ledger.add_worker("w".into(), 1, []);
    let held = ledger.assign(now);
    ledger
        .complete(worker, held[0].attempt, result(5, 0), now)
        .unwrap();
    let report = Report {
        orthos: 3,
        frontier_added: 2,
        frontier_removed: 0,
        optimal: Some(first_word(1)),
        queued: 1,
        expanded: 3,
        cpu_ms: 1500,
    };
    ledger
        .progress(worker, held[1].attempt, report, now)
        .unwrap();
    let live = ledger.live_figures(Version::FIRST).unwrap();
    assert_eq!((live.orthos, live.frontier), (8, 3));
    assert_eq!(ledger.version(Version::FIRST).unwrap().figures().orthos, 5);
    let summary = &ledger.workers(now)[0];
    assert_eq!(summary.orthos, 8);
    assert_eq!(summary.cpu_seconds, 1.5);
}

/// A version of `units` units, one first word each.
fn ledger_with_units(units: u32) -> Ledger {
    let mut ledger = Ledger::new(Duration::from_secs(5), Dedup::Tree);
    let words = (0..units).map(|i| format!("w{i}"));
    let defs = (0..units)
        .map(|token| UnitDef {
            id: UnitId(u64::from(token) + 1),
            created: Version::FIRST,
            parent: UnitId(0),
            roots: vec![first_word(token)],
            excluded: Vec::new(),
        })
        .collect();
    ledger.add_version("big".into(), words, defs);
    ledger
}

#[test]
fn status_of_a_hundred_thousand_units_is_counts_and_a_short_ranked_list() {
    const UNITS: u32 = 100_000;
    let mut ledger = ledger_with_units(UNITS);
    let worker = ledger.add_worker("w".into(), 1, []);
    // Finish the first half, unit i with i orthos; leave the next ones running.
    let mut finished = 0;
    while finished < UNITS / 2 {
        for a in ledger.assign(Instant::now()) {
            ledger
                .complete(worker, a.attempt, result(a.unit.0, 0), Instant::now())
                .unwrap();
            finished += 1;
        }
    }
    let running = ledger.assign(Instant::now());
    assert!(!running.is_empty());
    let version = ledger.version(Version::FIRST).unwrap();
    assert_eq!(version.units_total(), UNITS);
    assert_eq!(version.units_done(), UNITS / 2);
    assert_eq!(version.units_running() as usize, running.len());
    assert_eq!(
        version.units_pending() as usize,
        (UNITS / 2) as usize - running.len()
    );

    let listed = ledger.units(Version::FIRST, 20, Instant::now()).unwrap();
    assert_eq!(listed.len(), 20);
    let phases: Vec<_> = listed.iter().map(|u| u.phase.clone()).collect();
    let held: Vec<UnitId> = listed[..running.len()].iter().map(|u| u.unit).collect();
    let mut expected_held: Vec<UnitId> = running.iter().map(|a| a.unit).collect();
    expected_held.sort_unstable();
    let mut held_sorted = held.clone();
    held_sorted.sort_unstable();
    assert_eq!(
        held_sorted, expected_held,
        "running units first: {phases:?}"
    );
    // Then the largest finished units, largest first.
    let done: Vec<u64> = listed[running.len()..].iter().map(|u| u.orthos).collect();
    let largest = u64::from(UNITS / 2);
    let expected: Vec<u64> = (0..done.len() as u64).map(|i| largest - i).collect();
    assert_eq!(done, expected);
    assert!(
        listed[running.len()..]
            .iter()
            .all(|u| u.phase == UnitPhase::Done)
    );

    // Asking for every unit lists each once, pending ones last by id.
    let all = ledger
        .units(Version::FIRST, usize::MAX, Instant::now())
        .unwrap();
    assert_eq!(all.len(), UNITS as usize);
    let tail: Vec<UnitId> = all[all.len() - 3..].iter().map(|u| u.unit).collect();
    assert_eq!(
        tail,
        [u64::from(UNITS) - 2, u64::from(UNITS) - 1, u64::from(UNITS)].map(UnitId)
    );
}
