//! Shared fixtures for the end-to-end tests: the golden cases of
//! `../shared/golden`, helpers to compare figures with them, a helper to run
//! `fold-coordinator run`, (in [`process`]) the real binaries as guarded
//! processes: a `serve` coordinator on a free port, plain or with TLS,
//! `fold-worker` nodes, client subcommands and `grpcurl`, and (in [`certs`])
//! test certificates.
#![allow(dead_code)]

mod certs;
mod process;

// Each test crate uses only part of the fixtures.
#[allow(unused_imports)]
pub use certs::*;
#[allow(unused_imports)]
pub use process::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The `../shared/golden` directory beside the checkout.
pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden")
}

/// One golden case: texts in order and the expected figures after each.
#[derive(Debug, Clone)]
pub struct GoldenCase {
    pub name: String,
    pub tier: String,
    pub texts: Vec<PathBuf>,
    pub after_each_text: Vec<Value>,
}

impl GoldenCase {
    /// The texts' contents, in order.
    pub fn contents(&self) -> Vec<String> {
        self.texts
            .iter()
            .map(|path| std::fs::read_to_string(path).expect("golden text is readable"))
            .collect()
    }
}

/// The golden case called `name`; panics if there is none.
pub fn case(name: &str) -> GoldenCase {
    all_cases()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no golden case `{name}`"))
}

/// Every case of `cases.json`.
pub fn all_cases() -> Vec<GoldenCase> {
    let path = golden_dir().join("cases.json");
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display())),
    )
    .expect("cases.json is JSON");
    json["cases"]
        .as_array()
        .expect("cases is a list")
        .iter()
        .map(|case| GoldenCase {
            name: case["name"].as_str().unwrap().to_owned(),
            tier: case["tier"].as_str().unwrap().to_owned(),
            texts: case["texts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| golden_dir().join("texts").join(t.as_str().unwrap()))
                .collect(),
            after_each_text: case["after_each_text"].as_array().unwrap().clone(),
        })
        .collect()
}

/// The cases of tier `test`; panics if there are none, so a moved file cannot
/// silently empty the suite.
pub fn test_cases() -> Vec<GoldenCase> {
    let cases: Vec<GoldenCase> = all_cases()
        .into_iter()
        .filter(|c| c.tier == "test")
        .collect();
    assert!(
        cases.len() >= 10,
        "expected the golden test cases, found {}",
        cases.len()
    );
    cases
}

/// Asserts that `actual` carries every field of `expected` with equal values.
pub fn assert_figures(case: &str, step: usize, actual: &Value, expected: &Value) {
    let fields = ["version", "vocabulary", "orthos", "frontier", "optimal"];
    for field in fields {
        assert_eq!(
            actual.get(field),
            expected.get(field),
            "case {case}, text {step}: field `{field}` differs\n actual:   {actual}\n expected: {expected}"
        );
    }
    let expected_keys = expected.as_object().unwrap().keys();
    for key in expected_keys {
        assert!(
            fields.contains(&key.as_str()),
            "golden field `{key}` is not compared"
        );
    }
}

/// Runs `fold-coordinator run FILES --state-dir STATE_DIR FLAGS...` to completion.
///
/// `Command::output` waits for the child, so no process outlives a failing test.
pub fn run_coordinator(files: &[PathBuf], state_dir: &Path, flags: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fold-coordinator"))
        .arg("run")
        .args(files)
        .arg("--state-dir")
        .arg(state_dir)
        .args(flags)
        .output()
        .expect("fold-coordinator starts")
}

/// The figures a fresh library search gives after ingesting `texts`, as JSON
/// (the reference for inputs without a golden case).
pub fn library_figures(texts: &[String]) -> Value {
    let interner = fold::Interner::from_texts(texts.iter().map(String::as_str));
    let outcome = fold::search(
        &interner,
        &fold::SearchConfig::default(),
        &mut fold::search::Unobserved,
    )
    .expect("search succeeds");
    fold::report::VersionReport::new(&interner, &outcome.figures).to_json()
}
