//! The golden cases of tier `large` (about 15 million orthos) through the
//! embedded run and through a cluster of three workers. Each runs the real
//! binaries; the figures must equal the golden ones.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Cluster, assert_every_unit_counted_once, assert_figures, assert_finished};

fn large_cases() -> Vec<common::GoldenCase> {
    let cases: Vec<_> = common::all_cases()
        .into_iter()
        .filter(|case| case.tier == "large")
        .collect();
    assert!(!cases.is_empty(), "no large golden case found");
    cases
}

#[test]
fn large_golden_cases_through_the_embedded_run() {
    for case in large_cases() {
        let state = tempfile::tempdir().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_fold-coordinator"));
        command
            .args(["run", "--json", "--quiet", "--threads", "2", "--state-dir"])
            .arg(state.path())
            .args(&case.texts);
        let output = common::output_within(command, Duration::from_secs(300));
        let lines = common::json_lines(&common::succeeded(&output, "run"));
        assert_eq!(lines.len(), case.after_each_text.len());
        for (step, (actual, expected)) in lines.iter().zip(&case.after_each_text).enumerate() {
            assert_figures(&case.name, step, actual, expected);
        }
    }
}

#[test]
fn large_golden_cases_through_a_cluster_of_three_workers() {
    for case in large_cases() {
        let cluster = Cluster::start(3, 1, &[]);
        let coordinator = &cluster.coordinator;
        coordinator.wait_for_workers(3, Duration::from_secs(20));
        let reports = coordinator.submit_and_wait(&case.texts);
        assert_eq!(reports.len(), case.after_each_text.len());
        for (step, (report, expected)) in reports.iter().zip(&case.after_each_text).enumerate() {
            assert_figures(&case.name, step, report, expected);
        }
        for line in coordinator.unit_status() {
            assert_finished(&line);
            assert_every_unit_counted_once(&line);
        }
        // Each worker took part, and between them they expanded every ortho
        // exactly once (no attempt was lost in this run).
        let output = coordinator.client(&["status", "--json", "--workers"]);
        let lines = common::json_lines(&common::succeeded(&output, "status --workers"));
        let workers = lines.last().unwrap()["workers"].as_array().unwrap().clone();
        assert_eq!(workers.len(), 3, "{workers:?}");
        let expanded: u64 = workers.iter().map(|w| w["orthos"].as_u64().unwrap()).sum();
        let found: u64 = reports.iter().map(|r| r["orthos"].as_u64().unwrap()).sum();
        assert_eq!(expanded, found, "{workers:?}");
        for worker in &workers {
            assert!(worker["orthos"].as_u64().unwrap() > 0, "{worker}");
            assert!(worker["units_done"].as_u64().unwrap() > 0, "{worker}");
            assert!(worker["cpu_seconds"].as_f64().unwrap() > 0.0, "{worker}");
        }
    }
}
