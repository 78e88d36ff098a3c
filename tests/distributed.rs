//! The distributed path end to end: a real `fold-coordinator serve` on a free
//! port of 127.0.0.1, real `fold-worker` processes and the client
//! subcommands. Every golden test case must come out exactly, with one worker
//! or three, and still exactly when a worker is killed, frozen past its
//! lease, stopped with Ctrl-C, or when the coordinator itself restarts; and
//! `status --units` must show every unit counted exactly once.
//!
//! Units are subtrees of the search and split while they run; the tests
//! force splitting (`--split-from 2`) where they need it to happen.

mod common;

use std::time::Duration;

use serde_json::Value;

use common::{
    Cluster, Coordinator, assert_every_unit_counted_once, assert_figures, assert_finished,
    version_line,
};

/// Short leases, so a lost unit comes back within about a second.
const SHORT_LEASE: &[&str] = &["--lease-ms", "1000"];

/// Leases longer than any test, so a frozen worker keeps its units until
/// the test decides otherwise.
const LONG_LEASE: &[&str] = &["--lease-ms", "600000"];

/// Long enough for any test case (ts_0_20k takes about a second).
const VERSION_TIMEOUT: Duration = Duration::from_secs(60);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn every_golden_case_with_one_worker() {
    every_golden_case_with(1);
}

#[test]
fn every_golden_case_with_three_workers() {
    every_golden_case_with(3);
}

#[test]
fn every_golden_case_with_eight_workers() {
    every_golden_case_with(8);
}

/// Splits even units with two orthos waiting (every idle moment of a worker
/// splits a running unit), and ends every attempt after 5,000 orthos, handing
/// the rest of its unit off.
const SPLIT_TINY: &[&str] = &["--split-from", "2", "--unit-orthos", "5000"];

#[test]
fn every_golden_case_with_splitting_forced_on_tiny_units() {
    let mut splits = 0;
    for case in common::test_cases() {
        let cluster = Cluster::start_keeping(3, 1, KEEP_FROM, SPLIT_TINY);
        let coordinator = &cluster.coordinator;
        coordinator.wait_for_workers(3, CONNECT_TIMEOUT);
        let reports = coordinator.submit_and_wait(&case.texts);
        for (step, (report, expected)) in reports.iter().zip(&case.after_each_text).enumerate() {
            assert_figures(&case.name, step, report, expected);
        }
        for line in coordinator.unit_status() {
            assert_finished(&line);
            assert_every_unit_counted_once(&line);
            splits += line["units_split"].as_u64().unwrap();
            // A unit searched from scratch stops within a batch (at most
            // 8,192 children) of its limit.
            for unit in line["units"].as_array().unwrap() {
                if unit["base_version"] == 0 {
                    assert!(unit["orthos"].as_u64() <= Some(5_000 + 8_192), "{unit}");
                }
            }
        }
    }
    // The larger cases split often.
    assert!(splits >= 20, "only {splits} splits");
}

/// Workers in these tests keep units of at least this many orthos, so that
/// the small golden cases have both kept and searched-again units.
const KEEP_FROM: u64 = 100;

/// A fresh cluster per case; all of a case's texts in one `submit --wait`.
fn every_golden_case_with(workers: usize) {
    for case in common::test_cases() {
        let cluster = Cluster::start_keeping(workers, 1, KEEP_FROM, &[]);
        let coordinator = &cluster.coordinator;
        coordinator.wait_for_workers(workers, CONNECT_TIMEOUT);
        let reports = coordinator.submit_and_wait(&case.texts);
        assert_eq!(
            reports.len(),
            case.after_each_text.len(),
            "case {}: one JSON line per text",
            case.name
        );
        for (step, (report, expected)) in reports.iter().zip(&case.after_each_text).enumerate() {
            assert_figures(&case.name, step, report, expected);
        }

        let status = coordinator.status();
        assert_eq!(
            status.len(),
            case.texts.len(),
            "case {}: {status:?}",
            case.name
        );
        for (step, (line, expected)) in status.iter().zip(&case.after_each_text).enumerate() {
            assert_finished(line);
            assert_figures(&case.name, step, line, expected);
            assert_eq!(line["source"], case.texts[step].display().to_string());
            assert_eq!(line["attempts_discarded"], 0, "no worker was lost: {line}");
        }
        assert_eq!(coordinator.workers_connected(), workers);
        let status = coordinator.unit_status();
        for line in &status {
            assert_every_unit_counted_once(line);
        }
        if workers == 1 && case.texts.len() == 2 {
            // The one worker kept every large enough unit of version 1, so
            // version 2 only brings those up to date.
            assert_kept_units_were_brought_up(&status[0], &status[1]);
        }
    }
}

/// The `base_version` of each done unit of a status line that passes `which`.
fn base_versions(line: &Value, which: impl Fn(&Value) -> bool) -> Vec<u64> {
    line["units"]
        .as_array()
        .expect("units are listed")
        .iter()
        .filter(|unit| which(unit))
        .map(|unit| {
            assert_eq!(unit["state"], "done", "{unit}");
            unit["base_version"].as_u64().unwrap()
        })
        .collect()
}

/// Checks that exactly the units of `before` (a version searched by one
/// worker) with at least [`KEEP_FROM`] orthos were searched incrementally
/// in `after`, the next version, and that its new units were searched from
/// scratch.
fn assert_kept_units_were_brought_up(before: &Value, after: &Value) {
    let version = before["version"].as_u64().unwrap();
    let mut kept = 0;
    for unit in before["units"].as_array().unwrap() {
        let id = &unit["unit"];
        let large = unit["orthos"].as_u64().unwrap() >= KEEP_FROM;
        kept += usize::from(large);
        let base = base_versions(after, |u| u["unit"] == *id)[0];
        assert_eq!(
            base,
            if large { version } else { 0 },
            "unit {id}: {unit} then {after}"
        );
    }
    assert!(kept > 0 || before["orthos"].as_u64().unwrap() < KEEP_FROM);
    let new = base_versions(after, |u| u["created"] == after["version"]);
    assert!(new.iter().all(|&base| base == 0), "{after}");
}

/// A worker killed and started again on the same data dir brings the units
/// it kept up to the next version; once the texts differ from those its
/// units were searched on (a new coordinator), it discards them.
#[test]
fn restarted_worker_reuses_its_kept_units_only_for_the_same_texts() {
    let case = common::case("ts_incremental");
    let mut cluster = Cluster::start_keeping(1, 2, KEEP_FROM, &[]);
    let first = cluster.coordinator.submit_and_wait(&case.texts[..1]);
    assert_figures(&case.name, 0, &first[0], &case.after_each_text[0]);

    cluster.workers[0].kill();
    cluster.workers.clear();
    cluster.add_worker(2);
    let second = cluster.coordinator.submit_and_wait(&case.texts[1..]);
    assert_figures(&case.name, 1, &second[0], &case.after_each_text[1]);
    let units = cluster.coordinator.unit_status();
    assert_kept_units_were_brought_up(&units[0], &units[1]);

    // Another coordinator, other texts: the kept units must not be trusted.
    cluster.workers[0].kill();
    let other = common::case("grid3_incremental");
    let fresh = Coordinator::start(&cluster.dir.path().join("other"), &[]);
    let data_dir = cluster.dir.path().join("worker0");
    let _worker = fresh.start_worker_with(&data_dir, 2, &["--keep-units-from", "1"]);
    let reports = fresh.submit_and_wait(&other.texts);
    for (step, (report, expected)) in reports.iter().zip(&other.after_each_text).enumerate() {
        assert_figures(&other.name, step, report, expected);
    }
    let units = fresh.unit_status();
    assert!(
        base_versions(&units[0], |_| true)
            .iter()
            .all(|&base| base == 0),
        "units of other texts were reused: {}",
        units[0]
    );
}

/// Adds `by` to every `"orthos"` number in a JSON value.
fn inflate_orthos(value: &mut Value, by: u64) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                match inner.as_u64() {
                    Some(orthos) if key == "orthos" => *inner = Value::from(orthos + by),
                    _ => inflate_orthos(inner, by),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| inflate_orthos(item, by)),
        _ => {}
    }
}

/// A kept unit whose record was changed on disk (its figures still parse)
/// is searched afresh, never counted with the changed figures.
#[test]
fn a_kept_unit_with_damaged_figures_is_searched_afresh() {
    let case = common::case("ts_incremental");
    let mut cluster = Cluster::start_keeping(1, 1, 1, &[]);
    let first = cluster.coordinator.submit_and_wait(&case.texts[..1]);
    assert_figures(&case.name, 0, &first[0], &case.after_each_text[0]);
    cluster.workers[0].kill();
    cluster.workers.clear();

    let units = cluster.dir.path().join("worker0").join("units");
    let mut changed = 0;
    for entry in std::fs::read_dir(&units).unwrap() {
        let record = entry.unwrap().path().join("unit.json");
        let Ok(bytes) = std::fs::read(&record) else {
            continue;
        };
        let mut json: Value = serde_json::from_slice(&bytes).unwrap();
        inflate_orthos(&mut json, 1000);
        std::fs::write(&record, serde_json::to_vec(&json).unwrap()).unwrap();
        changed += 1;
    }
    assert!(
        changed > 0,
        "the worker kept no unit in {}",
        units.display()
    );

    cluster.add_worker(1);
    let second = cluster.coordinator.submit_and_wait(&case.texts[1..]);
    assert_figures(&case.name, 1, &second[0], &case.after_each_text[1]);
    let status = cluster.coordinator.unit_status();
    assert!(
        base_versions(&status[1], |_| true)
            .iter()
            .all(|&base| base == 0),
        "a damaged kept unit was brought up: {}",
        status[1]
    );
}

/// Submits ts_0_20k (without waiting) to a cluster of two one-thread workers
/// whose coordinator has `flags`, and returns once the coordinator has handed
/// out units and work remains. `workers[0]` connected first, so it has the
/// smaller worker id.
fn cluster_busy_with_ts_0_20k(flags: &[&str]) -> (Cluster, common::GoldenCase) {
    let case = common::case("ts_0_20k");
    let cluster = Cluster::start_in_order(2, 1, flags);
    submit_without_waiting(&cluster.coordinator, &case);
    let status =
        cluster
            .coordinator
            .wait_for_status("units handed out", VERSION_TIMEOUT, |lines| {
                lines[0]["units_done"].as_u64() > Some(0)
                    || lines[0]["units_running"].as_u64() > Some(0)
            });
    let line = &status[0];
    // While units are pending every worker holds some, so the worker the
    // test stops next is holding units.
    assert!(
        line["units_pending"].as_u64() > Some(0),
        "the version went too fast for this test: {line}"
    );
    (cluster, case)
}

/// Submits the one text of `case` without waiting for it.
fn submit_without_waiting(coordinator: &Coordinator, case: &common::GoldenCase) {
    let path = case.texts[0].to_str().expect("UTF-8 path");
    let submitted = common::succeeded(
        &coordinator.client(&["submit", path, "--json", "--quiet"]),
        "submit",
    );
    assert_eq!(common::json_lines(&submitted)[0]["version"], 1);
}

/// Waits (up to `timeout`) for version 1 and checks it against the case's
/// golden figures.
fn assert_version_one_is_golden(
    cluster: &Cluster,
    case: &common::GoldenCase,
    timeout: Duration,
) -> Value {
    let line = cluster.coordinator.wait_until_done(1, timeout);
    assert_finished(&line);
    assert_figures(&case.name, 0, &line, &case.after_each_text[0]);
    line
}

#[test]
fn worker_killed_mid_unit_still_gives_the_golden_figures() {
    // Default leases: the kill, not a lease running out, frees the units.
    let (mut cluster, case) = cluster_busy_with_ts_0_20k(&[]);
    kill_and_check(&mut cluster, 0, &case);
}

/// Stops `workers[index]`, reads the units it holds, kills it (-9), and
/// checks that version 1 still ends golden, unit by unit counted once, with
/// the killed worker's units searched again.
fn kill_and_check(cluster: &mut Cluster, index: usize, case: &common::GoldenCase) -> Value {
    // Stopped first, so the units it holds stay put while they are read.
    cluster.workers[index].signal("STOP");
    let held = cluster
        .coordinator
        .units_held_by(&cluster.workers[index], VERSION_TIMEOUT);
    cluster.workers[index].kill();

    let line = assert_version_one_is_golden(cluster, case, VERSION_TIMEOUT);
    // The killed worker's attempts were thrown away, not counted: the figures
    // above equal golden, so no unit was counted twice or lost.
    assert!(
        line["attempts_discarded"].as_u64().unwrap() >= 1,
        "the killed worker held units: {line}"
    );

    // Unit by unit: each counted once, and those the killed worker held
    // were searched again after its attempt was discarded.
    let status = cluster.coordinator.unit_status();
    let line = version_line(&status, 1).expect("version 1 is listed");
    assert_every_unit_counted_once(line);
    for (_, id) in held {
        let unit = common::unit(line, id);
        assert!(
            unit["attempts_discarded"].as_u64() >= Some(1),
            "unit {id} was held by the killed worker: {unit}"
        );
    }
    line.clone()
}

#[test]
fn worker_killed_right_after_a_split_still_gives_the_golden_figures() {
    let case = common::case("ts_0_20k");
    let mut cluster = Cluster::start_in_order(3, 1, SPLIT_TINY);
    submit_without_waiting(&cluster.coordinator, &case);
    // The first unit split off another one and handed to a worker.
    let status = cluster.coordinator.wait_for_unit_status(
        "a unit split off another is running",
        VERSION_TIMEOUT,
        |lines| {
            lines[0]["state"] == "done"
                || lines[0]["units"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|unit| unit["parent"].as_u64() > Some(0) && unit["state"] == "running")
        },
    );
    assert_ne!(
        status[0]["state"], "done",
        "the version went too fast for this test"
    );
    let holder = status[0]["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|unit| unit["parent"].as_u64() > Some(0) && unit["state"] == "running")
        .and_then(|unit| unit["worker_name"].as_str())
        .expect("a running unit has a worker");
    let index = cluster
        .workers
        .iter()
        .position(|worker| holder.ends_with(&format!("-{}", worker.pid())))
        .expect("the holder is one of the cluster's workers");
    let line = kill_and_check(&mut cluster, index, &case);
    assert!(line["units_split"].as_u64() > Some(0), "{line}");
}

#[test]
fn worker_frozen_past_its_lease_loses_its_units_and_its_late_results_are_refused() {
    let (cluster, case) = cluster_busy_with_ts_0_20k(SHORT_LEASE);
    // A stopped process keeps its connection open: only the lease frees its
    // units. (The worker with the larger id: see the next test for the other.)
    cluster.workers[1].signal("STOP");

    let line = assert_version_one_is_golden(&cluster, &case, Duration::from_secs(20));
    assert!(
        line["attempts_discarded"].as_u64().unwrap() >= 1,
        "the frozen worker's leases expired: {line}"
    );

    // Thawed, it finishes its stale attempts and reports them; the
    // coordinator must refuse them and keep the figures as they are.
    cluster.workers[1].signal("CONT");
    std::thread::sleep(Duration::from_secs(2));
    let after = cluster.coordinator.status();
    assert_eq!(after.len(), 1);
    assert_finished(&after[0]);
    assert_figures(&case.name, 0, &after[0], &case.after_each_text[0]);
}

#[test]
fn unit_of_a_frozen_worker_goes_to_another_worker_after_one_lease() {
    let (cluster, case) = cluster_busy_with_ts_0_20k(SHORT_LEASE);
    // The worker with the smallest id: assign() offers it every freed unit first.
    cluster.workers[0].signal("STOP");
    // One thread searches ts_0_20k in about 1.5 s; leases last 1 s.
    assert_version_one_is_golden(&cluster, &case, Duration::from_secs(15));
}

#[test]
fn worker_ctrl_c_hands_back_its_units() {
    let (mut cluster, case) = cluster_busy_with_ts_0_20k(SHORT_LEASE);
    cluster.workers[0].signal("INT");
    let exit = cluster.workers[0].wait_timeout(Duration::from_secs(5));
    let log = cluster.workers[0].log();
    let exit =
        exit.unwrap_or_else(|| panic!("the worker did not exit within 5 s of Ctrl-C\n{log}"));
    assert!(
        exit.success(),
        "the worker exited with {exit} on Ctrl-C\n{log}"
    );

    let line = assert_version_one_is_golden(&cluster, &case, VERSION_TIMEOUT);
    assert!(
        line["attempts_discarded"].as_u64().unwrap() >= 1,
        "the stopped worker's attempts were given up: {line}"
    );
    // Handed back explicitly (UnitFailed), not merely lost with the connection.
    let log = cluster.coordinator.process.log();
    assert!(
        log.contains("attempt handed back") && log.contains("worker shutting down"),
        "the coordinator logged no hand-back:\n{log}"
    );
}

#[test]
fn worker_reconnects_after_the_coordinator_restarts() {
    let square = common::case("square");
    let fox = common::case("fox");

    let mut cluster = Cluster::start(1, 1, &[]);
    let first = cluster.coordinator.submit_and_wait(&square.texts);
    assert_figures("square", 0, &first[0], &square.after_each_text[0]);

    cluster.coordinator.restart();
    let coordinator = &cluster.coordinator;
    // Nobody tells the worker: it must find the new coordinator by itself.
    let second = coordinator.submit_and_wait(&fox.texts);

    let texts: Vec<String> = [&square, &fox].iter().flat_map(|c| c.contents()).collect();
    let expected = common::library_figures(&texts);
    assert_eq!(expected["version"], 2);
    assert_figures("square then fox", 1, &second[0], &expected);

    // The restarted coordinator kept version 1 (its text and any units saved
    // before the kill) and finished it again to the same figures.
    let status = coordinator.status();
    assert_eq!(status.len(), 2, "{status:?}");
    let version_one = coordinator.wait_until_done(1, VERSION_TIMEOUT);
    assert_finished(&version_one);
    assert_figures("square", 0, &version_one, &square.after_each_text[0]);
    assert_finished(version_line(&status, 2).expect("version 2 is listed"));
    let worker = &mut cluster.workers[0];
    assert!(worker.is_running(), "the worker exited:\n{}", worker.log());
    assert_eq!(cluster.coordinator.workers_connected(), 1);
}

/// A worker whose coordinator is replaced by one with other texts under the
/// same version numbers (same port, fresh state) must not reuse what it
/// built for the old one: the new version 1 comes out golden.
#[test]
fn worker_moved_to_a_coordinator_with_other_texts_searches_those() {
    let square = common::case("square");
    let fox = common::case("fox");
    let mut cluster = Cluster::start_keeping(1, 1, 1, &[]);
    let first = cluster.coordinator.submit_and_wait(&square.texts);
    assert_figures("square", 0, &first[0], &square.after_each_text[0]);

    cluster.coordinator.process.kill();
    let other_state = cluster.dir.path().join("other-coordinator");
    cluster.coordinator = Coordinator::start_on(cluster.coordinator.port, &other_state, &[]);
    let second = cluster.coordinator.submit_and_wait(&fox.texts);
    assert_figures("fox", 0, &second[0], &fox.after_each_text[0]);
    let units = cluster.coordinator.unit_status();
    assert!(
        base_versions(&units[0], |_| true)
            .iter()
            .all(|&base| base == 0),
        "{}",
        units[0]
    );
}

/// Submits every text of `case` with one `submit` (no `--wait`) and checks
/// its reply: versions 1, 2, ... named after the files.
fn submit_case(coordinator: &Coordinator, case: &common::GoldenCase) {
    let mut args = vec!["submit"];
    args.extend(case.texts.iter().map(|t| t.to_str().expect("UTF-8 path")));
    args.extend(["--json", "--quiet"]);
    let replies = common::json_lines(&common::succeeded(&coordinator.client(&args), "submit"));
    assert_eq!(replies.len(), case.texts.len(), "{replies:?}");
    for (version, (reply, text)) in (1u64..).zip(replies.iter().zip(&case.texts)) {
        assert_eq!(reply["version"], version, "{reply}");
        assert_eq!(reply["source"], text.display().to_string(), "{reply}");
    }
}

/// After a coordinator restart: every text of `case` is still listed (same
/// version, same source), every version ends with the golden figures, unit
/// by unit counted exactly once, and `workers` workers have reconnected by
/// themselves. Returns the final `status --units N --json` lines.
fn assert_case_survived_the_restart(
    coordinator: &Coordinator,
    case: &common::GoldenCase,
    workers: usize,
) -> Vec<Value> {
    let restored = coordinator.status();
    assert_eq!(
        restored.len(),
        case.texts.len(),
        "a submitted text was lost: {restored:?}"
    );
    for (line, text) in restored.iter().zip(&case.texts) {
        assert_eq!(line["source"], text.display().to_string(), "{line}");
    }
    for (step, expected) in case.after_each_text.iter().enumerate() {
        let line = coordinator.wait_until_done(step as u64 + 1, VERSION_TIMEOUT);
        assert_finished(&line);
        assert_figures(&case.name, step, &line, expected);
    }
    let status = coordinator.unit_status();
    for line in &status {
        assert_every_unit_counted_once(line);
    }
    coordinator.wait_for_workers(workers, CONNECT_TIMEOUT);
    assert_eq!(coordinator.workers_connected(), workers);
    status
}

#[test]
fn coordinator_killed_mid_version_resumes_after_restart_with_the_golden_figures() {
    let case = common::case("ts_0_20k");
    let mut cluster = Cluster::start(2, 1, SHORT_LEASE);
    cluster.coordinator.wait_for_workers(2, CONNECT_TIMEOUT);
    submit_case(&cluster.coordinator, &case);
    let status =
        cluster
            .coordinator
            .wait_for_status("units handed out", VERSION_TIMEOUT, |lines| {
                lines[0]["units_running"].as_u64() > Some(0)
            });
    assert_ne!(
        status[0]["state"], "done",
        "the version went too fast for this test"
    );

    // kill -9 while units are out; the submitted text must survive it, and
    // the workers reconnect by themselves and finish the version.
    cluster.coordinator.restart();
    assert_case_survived_the_restart(&cluster.coordinator, &case, 2);
}

#[test]
fn coordinator_killed_with_splits_pending_resumes_with_the_golden_figures() {
    let case = common::case("ts_0_20k");
    let mut cluster = Cluster::start_in_order(3, 1, &["--split-from", "2", "--lease-ms", "1000"]);
    submit_case(&cluster.coordinator, &case);
    // Units split off others exist and are not all done: the split is
    // counted (or not yet saved) while its new units are out.
    let status = cluster.coordinator.wait_for_unit_status(
        "units split off others are running",
        VERSION_TIMEOUT,
        |lines| {
            lines[0]["state"] == "done"
                || lines[0]["units"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|unit| unit["parent"].as_u64() > Some(0) && unit["state"] != "done")
        },
    );
    assert_ne!(
        status[0]["state"], "done",
        "the version went too fast for this test"
    );
    cluster.coordinator.restart();
    let status = assert_case_survived_the_restart(&cluster.coordinator, &case, 3);
    // Every unit the version has is one that ended up counted: nothing split
    // off before the kill was lost or counted besides the unit it came from.
    assert!(
        status[0]["units_total"].as_u64() >= Some(16),
        "{}",
        status[0]
    );
}

#[test]
fn workers_joining_and_leaving_during_a_version_give_the_golden_figures() {
    let case = common::case("ts_0_20k");
    // Leases long enough that only the kill, not a slow start, frees units.
    let mut cluster = Cluster::start_in_order(1, 1, &["--split-from", "2"]);
    submit_without_waiting(&cluster.coordinator, &case);
    cluster
        .coordinator
        .wait_for_status("units handed out", VERSION_TIMEOUT, |lines| {
            lines[0]["units_running"].as_u64() > Some(0)
        });
    // Two workers join while it runs; each must get work (splitting makes
    // some even when no unit is pending).
    let joiners = [cluster.add_worker(1), cluster.add_worker(1)];
    for joiner in joiners {
        let worker = &cluster.workers[joiner];
        let status = cluster.coordinator.wait_for_unit_status(
            &format!("worker {} gets a unit", worker.pid()),
            VERSION_TIMEOUT,
            |lines| lines[0]["state"] == "done" || !common::held_by(lines, worker).is_empty(),
        );
        assert_ne!(
            status[0]["state"], "done",
            "the version went too fast for this test"
        );
    }
    // The first worker leaves (kill -9), a fourth one joins.
    cluster.workers[0].kill();
    cluster.add_worker(1);
    let line = assert_version_one_is_golden(&cluster, &case, VERSION_TIMEOUT);
    assert!(line["attempts_discarded"].as_u64() >= Some(1), "{line}");
    let status = cluster.coordinator.unit_status();
    assert_every_unit_counted_once(&status[0]);
    cluster.coordinator.wait_for_workers(3, CONNECT_TIMEOUT);
}

/// Live figures: while a version runs, its orthos and frontier are those of
/// its finished units plus what its running units reported, and `optimal`
/// shows the best ortho so far.
#[test]
fn a_running_version_shows_its_figures_so_far() {
    let case = common::case("ts_0_20k");
    let cluster = Cluster::start_in_order(2, 1, LONG_LEASE);
    // The frozen worker keeps its units (the lease outlasts the test), so
    // the version stays running once the other worker is done.
    submit_without_waiting(&cluster.coordinator, &case);
    cluster
        .coordinator
        .units_held_by(&cluster.workers[1], VERSION_TIMEOUT);
    cluster.workers[1].signal("STOP");
    let status = cluster.coordinator.wait_for_unit_status(
        "every unit done but the frozen worker's",
        VERSION_TIMEOUT,
        |lines| {
            lines[0]["units_pending"] == 0
                && lines[0]["units_running"].as_u64()
                    == Some(common::held_by(lines, &cluster.workers[1]).len() as u64)
        },
    );
    let line = &status[0];
    assert_eq!(line["state"], "running", "{line}");
    let units = line["units"].as_array().unwrap();
    let sum = |field: &str| {
        units
            .iter()
            .map(|u| u[field].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(line["orthos"].as_u64(), Some(sum("orthos")), "{line}");
    assert_eq!(line["frontier"].as_u64(), Some(sum("frontier")), "{line}");
    let expected = case.after_each_text[0]["orthos"].as_u64().unwrap();
    assert!(line["orthos"].as_u64().unwrap() < expected, "{line}");
    assert!(
        line["orthos"].as_u64() > Some(0) && !line["optimal"].is_null(),
        "{line}"
    );
    let optimal = common::json_lines(&common::succeeded(
        &cluster.coordinator.client(&["optimal", "--json"]),
        "optimal",
    ));
    assert_eq!(optimal[0]["state"], "running", "{optimal:?}");
    assert_eq!(optimal[0]["optimal"], line["optimal"], "{optimal:?}");
    cluster.workers[1].signal("CONT");
    assert_version_one_is_golden(&cluster, &case, VERSION_TIMEOUT);
}

/// Seen-set mode: one unit per first word, never split, and the same figures.
#[test]
fn every_golden_case_in_seen_set_mode() {
    for case in common::test_cases() {
        let cluster = Cluster::start_keeping(
            2,
            1,
            KEEP_FROM,
            &["--dedup", "seen-set", "--split-from", "2"],
        );
        let reports = cluster.coordinator.submit_and_wait(&case.texts);
        for (step, (report, expected)) in reports.iter().zip(&case.after_each_text).enumerate() {
            assert_figures(&case.name, step, report, expected);
        }
        for line in cluster.coordinator.unit_status() {
            assert_finished(&line);
            assert_every_unit_counted_once(&line);
            assert_eq!(line["units_split"], 0, "{line}");
            assert_eq!(line["units_total"], line["vocabulary"], "{line}");
        }
    }
}

#[test]
fn a_state_dir_keeps_its_dedup_mode() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("coordinator");
    let square = common::case("square");
    let mut coordinator = Coordinator::start(&state, &["--dedup", "seen-set"]);
    let _worker = coordinator.start_worker_with(&dir.path().join("w"), 1, &[]);
    coordinator.submit_and_wait(&square.texts);
    coordinator.process.kill();
    let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_fold-coordinator"));
    serve
        .args(["serve", "--listen", "127.0.0.1:0", "--dedup", "tree"])
        .args(["--token", common::TOKEN, "--state-dir"])
        .arg(&state);
    let output = common::output_within(serve, Duration::from_secs(30));
    assert!(!output.status.success());
    let refused = String::from_utf8_lossy(&output.stderr);
    assert!(
        refused.contains("searches with --dedup seen-set") && refused.contains("--dedup tree"),
        "{refused}"
    );
    // Without --dedup it keeps its mode.
    let coordinator = Coordinator::start(&state, &[]);
    let _worker = coordinator.start_worker_with(&dir.path().join("w2"), 1, &[]);
    let line = coordinator.wait_until_done(1, VERSION_TIMEOUT);
    assert_figures("square", 0, &line, &square.after_each_text[0]);
    let status = coordinator.unit_status();
    assert_eq!(
        status[0]["units_total"], status[0]["vocabulary"],
        "{}",
        status[0]
    );
}

#[test]
fn coordinator_killed_during_a_multi_text_run_loses_no_text_and_ends_with_the_golden_figures() {
    let case = common::case("ts_incremental");
    let mut cluster = Cluster::start_in_order(2, 1, LONG_LEASE);
    // The second worker, stopped, keeps the first two units it is given
    // (its leases outlast the test), so the run is certainly unfinished when
    // the coordinator is killed, however fast the other worker is.
    cluster.workers[1].signal("STOP");
    submit_case(&cluster.coordinator, &case);
    let frozen = &cluster.workers[1];
    // Its two units of version 1 hold up theirs of version 2 too.
    let status = cluster.coordinator.wait_for_unit_status(
        "every unit done but the stopped worker's and theirs of version 2",
        VERSION_TIMEOUT,
        |lines| {
            lines.len() == case.texts.len()
                && lines.iter().all(|line| {
                    line["units_done"].as_u64().unwrap() + 2
                        == line["units_total"].as_u64().unwrap()
                })
                && common::held_by(lines, frozen).len() == 2
        },
    );
    let held = common::held_by(&status, frozen);
    assert!(
        status.iter().any(|line| line["state"] == "running"),
        "{status:?}"
    );

    // kill -9 with units out; the stopped worker wakes up to a dead
    // coordinator, and both workers find the new one by themselves.
    cluster.coordinator.process.kill();
    cluster.workers[1].signal("CONT");
    cluster.coordinator.restart();
    let status = assert_case_survived_the_restart(&cluster.coordinator, &case, 2);

    // The stopped worker's units never finished before the kill, so they
    // were searched again after the restart, and counted once.
    for (version, id) in held {
        let line = version_line(&status, version).expect("version is listed");
        let unit = common::unit(line, id);
        assert!(
            unit["attempts_started"].as_u64() >= Some(1),
            "unit {version}/{id} was searched again: {unit}"
        );
    }
}

/// A unit of version 1 that splits in version 2 excludes orthos with words
/// new in version 2; a restarted coordinator must take them as they are.
/// (With default flags, ts_0_10k then ts_0_20k split such units every time.)
#[test]
fn coordinator_restarts_after_versions_whose_units_split_with_new_words() {
    let first = common::case("ts_0_10k");
    let second = common::case("ts_0_20k");
    let mut cluster = Cluster::start(2, 1, &[]);
    cluster.coordinator.wait_for_workers(2, CONNECT_TIMEOUT);
    let files = [first.texts[0].clone(), second.texts[0].clone()];
    let reports = cluster.coordinator.submit_and_wait(&files);
    let texts: Vec<String> = [&first, &second]
        .iter()
        .flat_map(|c| c.contents())
        .collect();
    let expected = [
        first.after_each_text[0].clone(),
        common::library_figures(&texts),
    ];
    let check = |lines: &[Value]| {
        assert_eq!(lines.len(), 2, "{lines:?}");
        for (step, (line, expected)) in lines.iter().zip(&expected).enumerate() {
            assert_figures("ts_0_10k then ts_0_20k", step, line, expected);
        }
    };
    check(&reports);
    let before = cluster.coordinator.unit_status();
    let old_units_split = before[1]["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|unit| unit["created"] == 1 && unit["split_into"].as_u64() > Some(0))
        .count();
    assert!(
        old_units_split > 0,
        "units of version 1 must split in version 2 for this test to mean anything"
    );

    cluster.coordinator.restart();
    let after: Vec<Value> = (1..=2)
        .map(|version| {
            cluster
                .coordinator
                .wait_until_done(version, VERSION_TIMEOUT)
        })
        .collect();
    check(&after);
    for line in cluster.coordinator.unit_status() {
        assert_every_unit_counted_once(&line);
    }
}
