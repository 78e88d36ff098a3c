//! SIGTERM, as a scheduler sends it before killing a pod: a coordinator
//! turns NOT_SERVING, stops leasing, saves its state and exits within a
//! bounded time; a worker hands its units back at once and exits. Either
//! way, once restarted, the version's figures are exact.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Cluster, Process, assert_every_unit_counted_once, assert_figures, version_line};

/// A version that runs for a few seconds on one worker thread.
const CASE: &str = "ts_0_25k";

/// Submits the case's text without waiting, then waits until the version is
/// under way (some units done, not all).
fn submit_and_wait_until_under_way(cluster: &Cluster) {
    let case = common::case(CASE);
    let text = case.texts[0].to_str().unwrap();
    common::succeeded(
        &cluster.coordinator.client(&["submit", text, "--quiet"]),
        "submit",
    );
    cluster
        .coordinator
        .wait_for_status("version 1 under way", Duration::from_secs(60), |lines| {
            version_line(lines, 1).is_some_and(|line| {
                line["state"] == "running" && line["units_done"].as_u64() > Some(0)
            })
        });
}

/// Checks the finished version against its golden figures, unit by unit.
fn assert_exact(cluster: &Cluster) {
    let case = common::case(CASE);
    let line = cluster
        .coordinator
        .wait_until_done(1, Duration::from_secs(120));
    assert_figures(CASE, 0, &line, &case.after_each_text[0]);
    let units = cluster.coordinator.unit_status();
    assert_every_unit_counted_once(&units[0]);
}

#[test]
fn sigterm_stops_a_coordinator_mid_version_and_the_figures_stay_exact() {
    let mut cluster = Cluster::start(1, 1, &[]);
    cluster
        .coordinator
        .wait_for_workers(1, Duration::from_secs(20));
    submit_and_wait_until_under_way(&cluster);

    // A probe watching health sees SERVING, then NOT_SERVING at the signal.
    let watch_log = cluster.dir.path().join("health-watch.out");
    let mut watch = Command::new(common::grpcurl_path());
    watch
        .args(["-plaintext", "-d", "{}"])
        .arg(cluster.coordinator.address())
        .arg("grpc.health.v1.Health/Watch")
        .stdout(std::fs::File::create(&watch_log).unwrap());
    let mut watch = Process::spawn(
        "grpcurl Health/Watch",
        watch,
        &watch_log.with_extension("err"),
    );
    wait_for_file(&watch_log, "\"SERVING\"");
    // And a live view following the status stream, left open.
    let follow_log = cluster.dir.path().join("follow.out");
    let mut follow = Command::new(common::grpcurl_path());
    follow
        .args(["-plaintext", "-d", r#"{"follow": true}"#, "-H"])
        .arg(format!("authorization: Bearer {}", common::TOKEN))
        .arg(cluster.coordinator.address())
        .arg("fold.v1.Coordinator/WatchStatus")
        .stdout(std::fs::File::create(&follow_log).unwrap());
    let follow_errors = follow_log.with_extension("err");
    let _follow = Process::spawn("grpcurl WatchStatus", follow, &follow_errors);
    wait_for_file(&follow_log, "\"versions\"");

    let started = Instant::now();
    cluster.coordinator.process.signal("TERM");
    wait_for_file(&watch_log, "NOT_SERVING");
    // The probe goes away, as a real one would (a stream held open would
    // keep the coordinator for its 5 s grace period).
    watch.kill();
    let exit = cluster
        .coordinator
        .process
        .wait_timeout(Duration::from_secs(20));
    let log = cluster.coordinator.process.log();
    let exit = exit.unwrap_or_else(|| panic!("the coordinator ignored SIGTERM\n{log}"));
    assert!(exit.success(), "{exit}\n{log}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}\n{log}",
        started.elapsed()
    );
    assert!(log.contains("shutting down"), "{log}");
    wait_for_file(&follow_errors, "the coordinator is shutting down");
    eprintln!(
        "the coordinator exited {:?} after SIGTERM",
        started.elapsed()
    );

    // Restarted on the same state dir, with the same worker reconnecting.
    cluster.coordinator.restart();
    assert_exact(&cluster);
    assert!(cluster.workers[0].is_running());
}

#[test]
fn sigterm_makes_a_worker_hand_its_units_back_and_the_figures_stay_exact() {
    // A long lease: units come back because the worker hands them back,
    // not because their leases run out.
    let mut cluster = Cluster::start(1, 1, &["--lease-ms", "60000"]);
    cluster
        .coordinator
        .wait_for_workers(1, Duration::from_secs(20));
    submit_and_wait_until_under_way(&cluster);

    let started = Instant::now();
    cluster.workers[0].signal("TERM");
    let exit = cluster.workers[0].wait_timeout(Duration::from_secs(20));
    let log = cluster.workers[0].log();
    let exit = exit.unwrap_or_else(|| panic!("the worker ignored SIGTERM\n{log}"));
    assert!(exit.success(), "{exit}\n{log}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}\n{log}",
        started.elapsed()
    );
    eprintln!("the worker exited {:?} after SIGTERM", started.elapsed());
    // Its units are pending again at once, well before any lease ends.
    let status =
        cluster
            .coordinator
            .wait_for_status("no unit running", Duration::from_secs(5), |lines| {
                version_line(lines, 1).is_some_and(|line| line["units_running"] == 0)
            });
    let line = version_line(&status, 1).unwrap();
    assert_eq!(line["state"], "running", "{line}");
    assert!(line["attempts_discarded"].as_u64() > Some(0), "{line}");
    let coordinator_log = cluster.coordinator.process.log();
    assert!(
        coordinator_log.contains("attempt handed back"),
        "{coordinator_log}"
    );

    // A worker started again on the same data dir finishes the version.
    let data_dir: PathBuf = cluster.dir.path().join("worker0");
    let restarted = cluster.coordinator.start_worker(&data_dir, 1);
    cluster.workers.push(restarted);
    assert_exact(&cluster);
}

/// Waits until `path` contains `needle`.
fn wait_for_file(path: &std::path::Path, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no `{needle}` in {}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
