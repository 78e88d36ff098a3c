//! The distributed path end to end: a real `fold-coordinator serve` on a free
//! port of 127.0.0.1, real `fold-worker` processes and the client
//! subcommands. Every golden test case must come out exactly, with one worker
//! or three, and still exactly when a worker is killed, frozen past its
//! lease, stopped with Ctrl-C, or when the coordinator itself restarts.

mod common;

use std::time::Duration;

use fold::report::VersionReport;
use fold::search::Unobserved;
use fold::{Interner, SearchConfig};
use serde_json::Value;

use common::{Cluster, Coordinator, assert_figures, assert_finished, version_line};

/// Short leases, so a lost shard comes back within about a second.
const SHORT_LEASE: &[&str] = &["--lease-ms", "1000"];

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

/// A fresh cluster per case; all of a case's texts in one `submit --wait`.
fn every_golden_case_with(workers: usize) {
    for case in common::test_cases() {
        let cluster = Cluster::start(workers, 1, &[]);
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
    }
}

/// Submits ts_0_20k (without waiting) to a cluster of two one-thread workers
/// and returns once the coordinator has handed out shards and work remains.
/// `workers[0]` connected first, so it has the smaller worker id.
fn cluster_busy_with_ts_0_20k() -> (Cluster, common::GoldenCase) {
    let case = common::case("ts_0_20k");
    let cluster = Cluster::start_in_order(2, 1, SHORT_LEASE);
    let coordinator = &cluster.coordinator;
    let path = case.texts[0].to_str().expect("UTF-8 path");
    let submitted = common::succeeded(
        &coordinator.client(&["submit", path, "--json", "--quiet"]),
        "submit",
    );
    assert_eq!(common::json_lines(&submitted)[0]["version"], 1);
    let status = coordinator.wait_for_status("shards handed out", VERSION_TIMEOUT, |lines| {
        lines[0]["shards_done"].as_u64() > Some(0) || lines[0]["shards_running"].as_u64() > Some(0)
    });
    let line = &status[0];
    // While shards are pending every worker holds some, so the worker the
    // test stops next is holding shards.
    assert!(
        line["shards_done"].as_u64().unwrap() + line["shards_running"].as_u64().unwrap()
            < line["shards_total"].as_u64().unwrap(),
        "the version went too fast for this test: {line}"
    );
    (cluster, case)
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
fn worker_killed_mid_shard_still_gives_the_golden_figures() {
    let (mut cluster, case) = cluster_busy_with_ts_0_20k();
    cluster.workers[0].kill();

    let line = assert_version_one_is_golden(&cluster, &case, VERSION_TIMEOUT);
    // The killed worker's attempts were thrown away, not counted: the figures
    // above equal golden, so no shard was counted twice or lost.
    assert!(
        line["attempts_discarded"].as_u64().unwrap() >= 1,
        "the killed worker held shards: {line}"
    );
    assert_eq!(cluster.coordinator.workers_connected(), 1);
}

#[test]
fn worker_frozen_past_its_lease_loses_its_shards_and_its_late_results_are_refused() {
    let (cluster, case) = cluster_busy_with_ts_0_20k();
    // A stopped process keeps its connection open: only the lease frees its
    // shards. (The worker with the larger id: see the next test for the other.)
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
fn shard_of_a_frozen_worker_goes_to_another_worker_after_one_lease() {
    let (cluster, case) = cluster_busy_with_ts_0_20k();
    // The worker with the smallest id: assign() offers it every freed shard first.
    cluster.workers[0].signal("STOP");
    // One thread searches ts_0_20k in about 1.5 s; leases last 1 s.
    assert_version_one_is_golden(&cluster, &case, Duration::from_secs(15));
}

#[test]
fn worker_ctrl_c_hands_back_its_shards() {
    let (mut cluster, case) = cluster_busy_with_ts_0_20k();
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
    // Handed back explicitly (ShardFailed), not merely lost with the connection.
    let log = cluster.coordinator.process.log();
    assert!(
        log.contains("attempt handed back") && log.contains("worker shutting down"),
        "the coordinator logged no hand-back:\n{log}"
    );
}

#[test]
fn worker_reconnects_after_the_coordinator_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state_dir = dir.path().join("coordinator");
    let port = common::free_port();
    let square = common::case("square");
    let fox = common::case("fox");

    let mut coordinator = Coordinator::start_on(port, &state_dir, &[]);
    let mut worker = coordinator.start_worker(&dir.path().join("worker"), 1);
    let first = coordinator.submit_and_wait(&square.texts);
    assert_figures("square", 0, &first[0], &square.after_each_text[0]);

    coordinator.process.kill();
    drop(coordinator);
    let coordinator = Coordinator::start_on(port, &state_dir, &[]);
    // Nobody tells the worker: it must find the new coordinator by itself.
    let second = coordinator.submit_and_wait(&fox.texts);

    let texts: Vec<String> = [&square, &fox].iter().flat_map(|c| c.contents()).collect();
    let interner = Interner::from_texts(texts.iter().map(String::as_str));
    let fresh = fold::search(&interner, &SearchConfig::default(), &mut Unobserved)
        .expect("the library search runs");
    let expected = VersionReport::new(&interner, &fresh.figures).to_json();
    assert_eq!(expected["version"], 2);
    assert_figures("square then fox", 1, &second[0], &expected);

    // The restarted coordinator kept version 1 (its text and any shards saved
    // before the kill) and finished it again to the same figures.
    let status = coordinator.status();
    assert_eq!(status.len(), 2, "{status:?}");
    let version_one = coordinator.wait_until_done(1, VERSION_TIMEOUT);
    assert_finished(&version_one);
    assert_figures("square", 0, &version_one, &square.after_each_text[0]);
    assert_finished(version_line(&status, 2).expect("version 2 is listed"));
    assert!(worker.is_running(), "the worker exited:\n{}", worker.log());
    assert_eq!(coordinator.workers_connected(), 1);
}

#[test]
fn coordinator_killed_mid_version_resumes_after_restart_with_the_golden_figures() {
    let case = common::case("ts_0_20k");
    let dir = tempfile::tempdir().expect("temp dir");
    let state_dir = dir.path().join("coordinator");
    let port = common::free_port();
    let mut coordinator = Coordinator::start_on(port, &state_dir, SHORT_LEASE);
    let _workers: Vec<_> = (0..2)
        .map(|index| coordinator.start_worker(&dir.path().join(format!("worker{index}")), 1))
        .collect();
    coordinator.wait_for_workers(2, CONNECT_TIMEOUT);
    let path = case.texts[0].to_str().expect("UTF-8 path");
    common::succeeded(&coordinator.client(&["submit", path, "--quiet"]), "submit");
    let status = coordinator.wait_for_status("shards handed out", VERSION_TIMEOUT, |lines| {
        lines[0]["shards_running"].as_u64() > Some(0)
    });
    assert_ne!(
        status[0]["state"], "done",
        "the version went too fast for this test"
    );

    // kill -9 while shards are out; the submitted text must survive it.
    coordinator.process.kill();
    drop(coordinator);
    let coordinator = Coordinator::start_on(port, &state_dir, SHORT_LEASE);
    let restored = coordinator.status();
    assert_eq!(
        restored.len(),
        1,
        "the submitted version was lost: {restored:?}"
    );
    // Nobody tells the workers: they reconnect by themselves and finish the version.
    let line = coordinator.wait_until_done(1, VERSION_TIMEOUT);
    assert_finished(&line);
    assert_figures(&case.name, 0, &line, &case.after_each_text[0]);
    assert_eq!(coordinator.workers_connected(), 2);
}
