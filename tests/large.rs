//! The golden cases of tier `large` (about 15 million orthos), opt-in:
//! `cargo test --release --test large -- --ignored`. Each runs the real
//! binary; the figures must equal the golden ones.

mod common;

use std::process::Command;

#[test]
#[ignore = "takes about 11 s and 450 MB; run explicitly with --ignored"]
fn large_golden_cases_through_the_embedded_run() {
    let cases: Vec<_> = common::all_cases()
        .into_iter()
        .filter(|case| case.tier == "large")
        .collect();
    assert!(!cases.is_empty(), "no large golden case found");
    for case in cases {
        let state = tempfile::tempdir().unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_fold-coordinator"))
            .args(["run", "--json", "--quiet", "--threads", "2", "--state-dir"])
            .arg(state.path())
            .args(&case.texts)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), case.after_each_text.len());
        for (step, (actual, expected)) in lines.iter().zip(&case.after_each_text).enumerate() {
            common::assert_figures(&case.name, step, actual, expected);
        }
    }
}
