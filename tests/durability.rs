//! Crashes of the embedded run: `fold-coordinator run` is SIGKILLed at
//! several points (after a second, mid-version after some checkpoints,
//! between versions), then the same command is run again. It must resume
//! rather than start over, print exactly the golden figures, and do
//! strictly less work than a fresh run, as its reported counters show.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{GoldenCase, Process, assert_figures, json_lines, run_coordinator, succeeded};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(120);

/// A `run --json` in the background, its stdout and log in `dir`.
struct BackgroundRun {
    process: Process,
    stdout: PathBuf,
}

impl BackgroundRun {
    fn start(files: &[PathBuf], state_dir: &Path, dir: &Path) -> Self {
        let stdout = dir.join("run.out");
        let mut command = Command::new(env!("CARGO_BIN_EXE_fold-coordinator"));
        command
            .arg("run")
            .args(files)
            .arg("--state-dir")
            .arg(state_dir)
            .args(["--json", "--quiet", "--threads", "2"])
            .env("FOLD_LOG", "fold=info")
            .stdout(Stdio::from(
                std::fs::File::create(&stdout).expect("stdout file"),
            ));
        let process = Process::spawn("fold-coordinator run", command, &dir.join("run.log"));
        Self { process, stdout }
    }

    /// Waits until `ready` holds for (stdout, log), then SIGKILLs the run.
    /// Fails if the run ended first.
    fn kill_when(&mut self, mut ready: impl FnMut(&str, &str) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let out = std::fs::read_to_string(&self.stdout).unwrap_or_default();
            if ready(&out, &self.process.log()) {
                break;
            }
            assert!(
                self.process.is_running(),
                "the run ended before the kill point; log:\n{}",
                self.process.log()
            );
            assert!(Instant::now() < deadline, "kill point never reached");
            std::thread::sleep(Duration::from_millis(2));
        }
        self.process.kill();
    }

    /// Checkpoints the run logged so far.
    fn checkpoints(log: &str) -> usize {
        log.matches("checkpoint saved").count()
    }
}

/// Runs the same command to completion and returns its JSON lines.
fn rerun(files: &[PathBuf], state_dir: &Path) -> Vec<Value> {
    let output = run_coordinator(files, state_dir, &["--json", "--quiet", "--threads", "2"]);
    json_lines(&succeeded(&output, "the run after the crash"))
}

fn assert_golden(case: &GoldenCase, lines: &[Value]) {
    assert_eq!(lines.len(), case.after_each_text.len(), "{lines:?}");
    for (step, (line, expected)) in lines.iter().zip(&case.after_each_text).enumerate() {
        assert_figures(&case.name, step, line, expected);
    }
}

fn work(line: &Value, field: &str) -> u64 {
    line["work"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("no work.{field} in {line}"))
}

/// A version's orthos are each expanded exactly once: before the checkpoint
/// the run resumed from, or after it.
fn assert_resumed_exactly(line: &Value) {
    let resumed_after = work(line, "resumed_after");
    assert!(resumed_after > 0, "the run started over: {line}");
    let orthos = line["orthos"].as_u64().unwrap();
    assert_eq!(work(line, "processed") + resumed_after, orthos, "{line}");
}

#[test]
fn run_killed_mid_version_resumes_from_its_last_checkpoint() {
    let case = common::case("ts_0_20k");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut run = BackgroundRun::start(&case.texts, &state, dir.path());
    run.kill_when(|_, log| BackgroundRun::checkpoints(log) >= 3);

    let lines = rerun(&case.texts, &state);
    assert_golden(&case, &lines);
    assert_resumed_exactly(&lines[0]);
    assert!(work(&lines[0], "resumed_after") >= 300_000, "{}", lines[0]);

    // Once done, the state answers without searching again.
    let again = rerun(&case.texts, &state);
    assert_golden(&case, &again);
    assert!(again[0].get("work").is_none(), "{}", again[0]);
}

#[test]
fn run_killed_between_versions_goes_on_with_the_next_one() {
    let case = common::case("ts_incremental");
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = rerun(&case.texts, fresh_dir.path());
    assert_golden(&case, &fresh);
    let fresh_work: u64 = fresh.iter().map(|line| work(line, "processed")).sum();

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut run = BackgroundRun::start(&case.texts, &state, dir.path());
    run.kill_when(|out, _| out.lines().count() >= 1);

    let lines = rerun(&case.texts, &state);
    assert_golden(&case, &lines);
    // Version 1 was recorded before the kill, so it is not searched again.
    assert!(lines[0].get("work").is_none(), "{}", lines[0]);
    let resumed_work: u64 = lines
        .iter()
        .filter(|line| line.get("work").is_some())
        .map(|line| work(line, "processed"))
        .sum();
    assert!(resumed_work < fresh_work, "{resumed_work} >= {fresh_work}");
}

#[test]
fn run_killed_after_one_second_resumes_the_large_case() {
    let case = common::all_cases()
        .into_iter()
        .find(|case| case.name == "ts_0_25k")
        .expect("the large golden case");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let started = Instant::now();
    let mut run = BackgroundRun::start(&case.texts, &state, dir.path());
    run.kill_when(|_, _| started.elapsed() >= Duration::from_secs(1));

    let lines = rerun(&case.texts, &state);
    assert_golden(&case, &lines);
    assert_resumed_exactly(&lines[0]);
}

#[test]
fn checkpoint_of_another_text_is_not_resumed() {
    let killed = common::case("ts_0_20k");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut run = BackgroundRun::start(&killed.texts, &state, dir.path());
    run.kill_when(|_, log| BackgroundRun::checkpoints(log) >= 2);

    let other = common::case("ts_0_10k");
    let lines = rerun(&other.texts, &state);
    assert_golden(&other, &lines);
    assert_eq!(work(&lines[0], "resumed_after"), 0, "{}", lines[0]);
    assert_eq!(
        work(&lines[0], "processed"),
        lines[0]["orthos"].as_u64().unwrap()
    );
}

/// A disk that fills up mid-search, simulated with a file size limit (the
/// log's writes fail with EFBIG as they would with ENOSPC): the run stops
/// with a clear error and a non-zero exit, and the state it leaves resumes
/// to the golden figures.
#[test]
fn run_that_cannot_write_fails_clearly_and_the_state_recovers() {
    let case = common::case("ts_0_20k");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let command = format!(
        "trap '' XFSZ; ulimit -f 16384; exec '{}' run '{}' --state-dir '{}' --json --quiet",
        env!("CARGO_BIN_EXE_fold-coordinator"),
        case.texts[0].display(),
        state.display()
    );
    let output = Command::new("sh")
        .args(["-c", &command])
        .output()
        .expect("sh runs");
    assert!(
        !output.status.success(),
        "the run succeeded despite the limit"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("fold-coordinator: error: cannot write")
            && stderr.contains("File too large"),
        "unclear error: {stderr}"
    );
    assert!(output.stdout.is_empty(), "figures printed by a failed run");

    let lines = rerun(&case.texts, &state);
    assert_golden(&case, &lines);
    assert_resumed_exactly(&lines[0]);
}

/// A state dir the run may not write to: the run stops with a clear error
/// and a non-zero exit, and the versions recorded before are intact. Run as
/// an unprivileged user (through `setpriv` when the tests run as root, for
/// whom permissions do not apply).
#[test]
fn state_dir_without_write_permission_fails_clearly_and_keeps_its_versions() {
    use std::os::unix::fs::PermissionsExt;
    let case = common::case("ts_incremental");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("state");
    let first = rerun(&case.texts[..1], &state);
    assert_golden(
        &common::GoldenCase {
            after_each_text: case.after_each_text[..1].to_vec(),
            ..case.clone()
        },
        &first,
    );
    let read_only = std::fs::Permissions::from_mode(0o555);
    for path in [state.clone(), state.join("history")] {
        std::fs::set_permissions(&path, read_only.clone()).unwrap();
    }

    // The unprivileged user must reach the binary and the texts: copies in
    // the (world-readable) temporary dir, wherever the checkout lives.
    let binary = dir.path().join("fold-coordinator");
    std::fs::copy(env!("CARGO_BIN_EXE_fold-coordinator"), &binary).unwrap();
    let texts: Vec<PathBuf> = case
        .texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let copy = dir.path().join(format!("text{index}.txt"));
            std::fs::copy(text, &copy).unwrap();
            copy
        })
        .collect();
    let mut command = if is_root() {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&binary);
        command
    } else {
        Command::new(&binary)
    };
    let output = command
        .arg("run")
        .args(&texts)
        .arg("--state-dir")
        .arg(&state)
        .args(["--json", "--quiet"])
        .output()
        .expect("the run starts");
    assert!(
        !output.status.success(),
        "the run wrote to a read-only state dir"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("fold-coordinator: error: cannot open")
            && stderr.contains("for writing: Permission denied"),
        "unclear error: {stderr}"
    );

    for path in [state.clone(), state.join("history")] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let lines = rerun(&case.texts, &state);
    assert_golden(&case, &lines);
    assert!(
        lines[0].get("work").is_none(),
        "version 1 was lost: {}",
        lines[0]
    );
}

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}
