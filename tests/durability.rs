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

/// Copies every file of `from` into `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The state of the ts_incremental case after its first text, and the case.
fn state_after_first_text(dir: &Path) -> (GoldenCase, PathBuf) {
    let case = common::case("ts_incremental");
    let state = dir.join("base");
    let lines = rerun(&case.texts[..1], &state);
    assert_figures(&case.name, 0, &lines[0], &case.after_each_text[0]);
    (case, state)
}

/// Damage anywhere in the stored history, at random offsets: the next
/// version is always searched to its golden figures (the damage is found
/// by the checksums, named in a warning, and the version searched afresh);
/// nothing damaged is ever read as figures.
#[test]
fn damaged_history_at_random_offsets_never_changes_the_figures() {
    let temp = tempfile::tempdir().unwrap();
    let (case, base) = state_after_first_text(temp.path());
    let files: Vec<PathBuf> = std::fs::read_dir(base.join("history"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert!(files.len() >= 2, "{files:?}");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for trial in 0..24 {
        let state = temp.path().join(format!("trial{trial}"));
        copy_dir(&base, &state);
        let file = state
            .join("history")
            .join(files[trial % files.len()].file_name().unwrap());
        let mut bytes = std::fs::read(&file).unwrap();
        let offset = (next() % bytes.len() as u64) as usize;
        bytes[offset] ^= 1 << (next() % 8);
        std::fs::write(&file, &bytes).unwrap();

        let output = run_coordinator(
            &case.texts,
            &state,
            &["--json", "--quiet", "--threads", "2"],
        );
        let out = succeeded(
            &output,
            &format!("trial {trial}, byte {offset} of {}", file.display()),
        );
        let lines = json_lines(&out);
        assert_golden(&case, &lines);
        let stderr = common::stderr_of(&output);
        assert!(
            stderr.contains("is damaged")
                && stderr.contains(&*file.file_name().unwrap().to_string_lossy()),
            "trial {trial}: damage at byte {offset} of {} went unnoticed:\n{stderr}",
            file.display()
        );
        // The history was searched afresh, so the next run is incremental again.
        let again = rerun(&case.texts, &state);
        assert_golden(&case, &again);
    }
}

/// A history file cut short (a disk that lost its tail): the way out is
/// automatic, the version is searched afresh, and later versions build on
/// the new history.
#[test]
fn truncated_history_is_searched_again_and_later_versions_go_on() {
    let temp = tempfile::tempdir().unwrap();
    let (case, state) = state_after_first_text(temp.path());
    let file = state.join("history").join("history-0-0");
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let output = run_coordinator(
        &case.texts,
        &state,
        &["--json", "--quiet", "--threads", "2"],
    );
    assert_golden(&case, &json_lines(&succeeded(&output, "after truncation")));
    let stderr = common::stderr_of(&output);
    assert!(
        stderr.contains("history-0-0") && stderr.contains("afresh"),
        "{stderr}"
    );
    let sentence = temp.path().join("sentence.txt");
    std::fs::write(
        &sentence,
        "the citizens are hungry and the senators are proud",
    )
    .unwrap();
    let mut files = case.texts.clone();
    files.push(sentence.clone());
    let output = run_coordinator(&files, &state, &["--json", "--quiet", "--threads", "2"]);
    let lines = json_lines(&succeeded(&output, "the version after"));
    let texts: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let fresh = fold::search(
        &fold::Interner::from_texts(texts.iter().map(String::as_str)),
        &fold::SearchConfig::default(),
        &mut fold::search::Unobserved,
    )
    .unwrap();
    assert_eq!(lines[2]["orthos"], fresh.figures.orthos);
    assert_eq!(lines[2]["frontier"], fresh.figures.frontier);
    assert!(
        work(&lines[2], "scanned") > 0,
        "not incremental: {}",
        lines[2]
    );
}

/// A history file that is gone is damage like any other: the next version
/// is searched afresh to its golden figures, with a warning naming it.
#[test]
fn a_missing_history_file_is_searched_again() {
    let temp = tempfile::tempdir().unwrap();
    let (case, state) = state_after_first_text(temp.path());
    let file = state.join("history").join("history-0-0");
    std::fs::remove_file(&file).unwrap();
    let output = run_coordinator(
        &case.texts,
        &state,
        &["--json", "--quiet", "--threads", "2"],
    );
    assert_golden(&case, &json_lines(&succeeded(&output, "after removal")));
    let stderr = common::stderr_of(&output);
    assert!(
        stderr.contains("history-0-0") && stderr.contains("missing"),
        "{stderr}"
    );
}

/// A state dir written by an earlier fold (format `fold-state/1`) is refused
/// with a message that says so, and left exactly as it was.
#[test]
fn a_state_dir_of_the_earlier_format_is_refused_untouched() {
    let temp = tempfile::tempdir().unwrap();
    let state = temp.path().join("old");
    std::fs::create_dir_all(&state).unwrap();
    let file = state.join("fold-state.redb");
    {
        let db = redb::Database::create(&file).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let meta: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("meta");
            let mut meta = txn.open_table(meta).unwrap();
            meta.insert("format", "fold-state/1").unwrap();
        }
        txn.commit().unwrap();
    }
    std::fs::create_dir_all(state.join("log")).unwrap();
    std::fs::write(state.join("log").join("orthos-0"), b"an old log").unwrap();
    let before = snapshot(&state);
    let case = common::case("square");
    let output = run_coordinator(&case.texts, &state, &["--json"]);
    let message = common::failed(&output, "an old state dir");
    assert!(
        message.contains("fold-state/1") && message.contains("fold-state/2"),
        "{message}"
    );
    assert!(message.contains("--state-dir"), "{message}");
    assert_eq!(snapshot(&state), before, "the old state dir was changed");
}

/// A state dir whose history an earlier fold wrote (history format 2, each
/// record whole) is not read: the next version is searched afresh from the
/// stored texts, with a warning that names both formats, and its figures
/// are exact; the history is then in the current format.
#[test]
fn a_history_of_the_earlier_format_is_searched_afresh_with_a_warning() {
    use redb::ReadableTable;
    let temp = tempfile::tempdir().unwrap();
    let state = temp.path().join("state");
    let case = common::case("ts_incremental");
    succeeded(
        &run_coordinator(&case.texts[..1], &state, &["--json"]),
        "the first text",
    );
    let search: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("search");
    let set_format = |format: u32| {
        let db = redb::Database::open(state.join("fold-state.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        let previous;
        {
            let mut table = txn.open_table(search).unwrap();
            let manifest = table.get("manifest").unwrap().unwrap().value().to_owned();
            let mut manifest: Value = serde_json::from_str(&manifest).unwrap();
            previous = manifest["format"].as_u64().unwrap();
            manifest["format"] = format.into();
            let manifest = manifest.to_string();
            table.insert("manifest", manifest.as_str()).unwrap();
            // With its checksum, as that fold stored it.
            let checks: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("checks");
            let checksum = xxhash_rust::xxh3::xxh3_64(manifest.as_bytes());
            let mut checks = txn.open_table(checks).unwrap();
            checks.insert("search/manifest", checksum).unwrap();
        }
        txn.commit().unwrap();
        previous
    };
    let current = u64::from(fold::search::FORMAT_VERSION);
    assert_eq!(set_format(2), current);

    let output = run_coordinator(&case.texts, &state, &["--json"]);
    let lines = json_lines(&succeeded(&output, "after a history of format 2"));
    let last = lines.last().unwrap();
    assert_figures(&case.name, 1, last, &case.after_each_text[1]);
    assert_eq!(last["work"]["scanned"], 0, "the old history was read");
    let stderr = common::stderr_of(&output);
    assert!(
        stderr.contains("searching afresh")
            && stderr.contains("format 2")
            && stderr.contains(&format!("format {current}")),
        "{stderr}"
    );
    // The history is rewritten in the current format.
    assert_eq!(set_format(current as u32), current);
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(snapshot(&path));
        } else {
            files.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    files.sort();
    files
}

/// `text` cut into `parts` files of about equal size, each ending just after
/// a sentence end, in `dir`.
fn split_at_sentences(text: &str, parts: usize, dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut start = 0;
    for part in 1..=parts {
        let end = if part == parts {
            text.len()
        } else {
            let target = text.len() * part / parts;
            text[target..]
                .find(['.', '?', '!', ';'])
                .map_or(text.len(), |at| target + at + 1)
        };
        let path = dir.join(format!("part{part}.txt"));
        std::fs::write(&path, &text[start..end]).unwrap();
        files.push(path);
        start = end;
    }
    files
}

/// A run killed in the middle of version 2 resumes it and goes on with
/// version 3 in the same process: version 3 must see what version 2 expanded
/// again before its checkpoint (it once did not, and stored wrong figures).
#[test]
fn a_resumed_version_followed_by_another_in_the_same_run_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let text = common::case("ts_0_25k").contents().concat();
    let files = split_at_sentences(&text, 3, dir.path());
    let state = dir.path().join("state");
    succeeded(
        &run_coordinator(&files[..1], &state, &["--json", "--quiet"]),
        "version 1",
    );

    let mut run = BackgroundRun::start(&files, &state, dir.path());
    run.kill_when(|out, log| out.lines().count() == 1 && BackgroundRun::checkpoints(log) >= 1);
    let lines = rerun(&files, &state);
    assert_eq!(lines.len(), 3);
    assert!(work(&lines[1], "resumed_after") > 0, "{}", lines[1]);

    let contents: Vec<String> = files
        .iter()
        .map(|file| std::fs::read_to_string(file).unwrap())
        .collect();
    for step in 0..contents.len() {
        let expected = common::library_figures(&contents[..=step]);
        assert_figures("ts_0_25k in three parts", step, &lines[step], &expected);
    }
}

/// A checkpoint taken in the tree mode is not resumed with `--dedup
/// seen-set` (its pending orthos mean something else there): the version is
/// searched afresh, with exact figures.
#[test]
fn a_checkpoint_is_not_resumed_in_the_other_dedup_mode() {
    let dir = tempfile::tempdir().unwrap();
    let text = common::case("ts_0_25k").contents().concat();
    let files = split_at_sentences(&text, 3, dir.path());
    let files = &files[..2];
    let state = dir.path().join("state");
    succeeded(
        &run_coordinator(&files[..1], &state, &["--json", "--quiet"]),
        "version 1",
    );
    let mut run = BackgroundRun::start(files, &state, dir.path());
    run.kill_when(|out, log| out.lines().count() == 1 && BackgroundRun::checkpoints(log) >= 1);

    let output = run_coordinator(files, &state, &["--json", "--quiet", "--dedup", "seen-set"]);
    let lines = json_lines(&succeeded(&output, "the run in the other mode"));
    assert_eq!(work(&lines[1], "resumed_after"), 0, "{}", lines[1]);
    let contents: Vec<String> = files
        .iter()
        .map(|file| std::fs::read_to_string(file).unwrap())
        .collect();
    let expected = common::library_figures(&contents);
    assert_figures("ts_0_25k, two of three parts", 1, &lines[1], &expected);
}
