//! Faults found by probing fold as a demanding user and an attacker would
//! (issue 12): damaged state files, absurd sizes, URLs that promise TLS,
//! idle connections, memory that grew with every version, and the smaller
//! rough edges. Real binaries, real sockets on 127.0.0.1, real redb files.

mod common;

use std::time::Duration;

use common::{Cluster, json_lines, rss_kib, succeeded};

/// Bookkeeping a coordinator may add for 100 versions of ts_0_20k's 1,097
/// words: 32 bytes and a pending entry per shard come to about 4 MB. (A copy
/// of the interner per version took about 3 MB each, 300 MB in all.)
const RSS_BOUND_KIB: u64 = 8 << 10;

#[test]
fn empty_versions_do_not_grow_the_coordinator_by_an_interner_each() {
    let case = common::case("ts_0_20k");
    let mut cluster = Cluster::start(0, 1, &[]);
    let text = case.texts[0].to_str().expect("UTF-8 path").to_owned();
    succeeded(
        &cluster.coordinator.client(&["submit", &text, "--quiet"]),
        "submit ts_0_20k",
    );
    let empty = cluster.write_file("empty.txt", b"");
    let empty = empty.to_str().expect("UTF-8 path").to_owned();
    let before = rss_kib(cluster.coordinator.process.pid());

    let mut args = vec!["submit", "--json", "--quiet"];
    args.extend(std::iter::repeat_n(empty.as_str(), 100));
    let replies = json_lines(&succeeded(&cluster.coordinator.client(&args), "submit"));
    assert_eq!(replies.last().unwrap()["version"], 101);
    let after = rss_kib(cluster.coordinator.process.pid());
    assert!(
        after < before + RSS_BOUND_KIB,
        "100 empty versions took the coordinator from {before} KiB to {after} KiB"
    );

    cluster.coordinator.restart();
    let status = cluster.coordinator.status();
    assert_eq!(status.len(), 101);
    assert!(status.iter().all(|line| line["vocabulary"] == 1097));
    let restarted = rss_kib(cluster.coordinator.process.pid());
    assert!(
        restarted < before + RSS_BOUND_KIB,
        "restarted on 101 versions, the coordinator takes {restarted} KiB (one version: {before} KiB)"
    );
}
