//! A cluster must never stall: whenever units are pending and a live
//! worker has room, the worker gets them, without waiting for some other
//! event (a new worker, a new text, a unit finishing). These are the three
//! ways issue 12 saw a cluster stall forever; each must end with the golden
//! figures of ts_0_20k, with nothing added to the cluster.

mod common;

use std::time::Duration;

use common::{Cluster, assert_every_unit_counted_once, assert_figures, assert_finished};
use serde_json::Value;

/// Long enough for ts_0_20k on one thread (about 1.5 s) many times over.
const VERSION_TIMEOUT: Duration = Duration::from_secs(60);

/// Submits ts_0_20k (`text` may be a copy with more bytes but the same
/// words) without waiting, and returns once units are out and work remains.
fn submit_and_wait_for_units(cluster: &Cluster, text: &str) {
    let submitted = common::succeeded(
        &cluster
            .coordinator
            .client(&["submit", text, "--json", "--quiet"]),
        "submit",
    );
    assert_eq!(common::json_lines(&submitted)[0]["version"], 1);
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
}

/// Waits for version 1 and checks it is ts_0_20k's, unit by unit.
fn assert_golden_ts_0_20k(cluster: &Cluster) -> Value {
    let case = common::case("ts_0_20k");
    let line = cluster.coordinator.wait_until_done(1, VERSION_TIMEOUT);
    assert_finished(&line);
    assert_figures(&case.name, 0, &line, &case.after_each_text[0]);
    let status = cluster.coordinator.unit_status();
    assert_every_unit_counted_once(&status[0]);
    line
}

fn ts_0_20k() -> String {
    let case = common::case("ts_0_20k");
    case.texts[0].to_str().expect("UTF-8 path").to_owned()
}

#[test]
fn the_only_worker_frozen_past_its_lease_finishes_the_version_once_thawed() {
    let cluster = Cluster::start(1, 1, &["--lease-ms", "1000"]);
    cluster
        .coordinator
        .wait_for_workers(1, Duration::from_secs(20));
    submit_and_wait_for_units(&cluster, &ts_0_20k());
    cluster.workers[0].signal("STOP");
    // Every unit it held goes back to pending; nobody else can take them.
    cluster
        .coordinator
        .wait_for_status("the leases expire", VERSION_TIMEOUT, |lines| {
            lines[0]["units_running"] == 0 && lines[0]["attempts_discarded"].as_u64() > Some(0)
        });
    std::thread::sleep(Duration::from_secs(1));
    cluster.workers[0].signal("CONT");
    let line = assert_golden_ts_0_20k(&cluster);
    assert!(line["attempts_discarded"].as_u64() >= Some(1), "{line}");
    assert_eq!(cluster.coordinator.workers_connected(), 1);
}

#[test]
fn one_of_two_workers_frozen_under_short_leases_the_other_finishes_the_version() {
    // Leases no longer than the search thread's report interval (100 ms):
    // the workers' heartbeats keep them.
    let mut cluster = Cluster::start_in_order(2, 1, &["--lease-ms", "100"]);
    submit_and_wait_for_units(&cluster, &ts_0_20k());
    cluster.workers[0].signal("STOP");
    assert_golden_ts_0_20k(&cluster);
    cluster.workers[0].signal("CONT");
    std::thread::sleep(Duration::from_secs(1));
    // Thawed, its stale reports are refused: the figures stay as they are.
    let status = cluster.coordinator.status();
    assert_finished(&status[0]);
    let case = common::case("ts_0_20k");
    assert_figures(&case.name, 0, &status[0], &case.after_each_text[0]);
    assert!(cluster.workers[0].is_running());
}

#[test]
fn workers_whose_preparation_outlasts_the_lease_keep_their_units() {
    // ts_0_20k followed by 40 MB of digits, which hold no word: the same
    // search, but each worker takes about a second to fetch the text and
    // build its interner, longer than a lease. (Heartbeats go out every
    // 100 ms, so a scheduling delay under 300 ms costs no lease.)
    let mut cluster = Cluster::start_in_order(2, 1, &["--lease-ms", "400"]);
    let mut text = std::fs::read(ts_0_20k()).expect("ts_0_20k is readable");
    text.extend_from_slice(b"\n\n");
    let digits = "0123456789 ".repeat(9) + "\n";
    text.extend(digits.as_bytes().iter().cycle().take(40 << 20));
    let path = cluster.write_file("ts_0_20k_and_digits.txt", &text);
    submit_and_wait_for_units(&cluster, path.to_str().expect("UTF-8 path"));
    let line = assert_golden_ts_0_20k(&cluster);
    // The leases were kept through the preparation: nothing was redone.
    assert_eq!(line["attempts_discarded"], 0, "{line}");
    for worker in &mut cluster.workers {
        assert!(worker.is_running(), "{}", worker.log());
    }
}
