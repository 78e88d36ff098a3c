//! `fold-coordinator run` end to end: the real binary, a fresh state dir in a
//! temp dir per case, every golden test case compared figure by figure, and
//! the refusals (bad input, foreign or contradicting state) checked to fail
//! cleanly without touching anything.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use fold::report::{OptimalReport, VersionReport};
use fold::store::{STATE_FILE, StateDir, VersionRecord, content_hash};
use serde_json::Value;

use common::{library_figures, run_coordinator};

/// Every error the binary reports starts with this.
const ERROR_PREFIX: &str = "fold-coordinator: error:";

const JSON: &[&str] = &["--json", "--quiet"];

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the run succeeded quietly and returns its stdout.
fn succeeded(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: exit {:?}\nstderr: {}",
        output.status.code(),
        stderr(output)
    );
    assert_eq!(stderr(output), "", "{what}: --quiet run wrote to stderr");
    stdout(output)
}

/// Parses stdout as one JSON object per line.
fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
            assert!(value.is_object(), "stdout line is not an object: {line}");
            value
        })
        .collect()
}

/// Asserts the run failed with exactly one `fold-coordinator: error:` line on
/// stderr, no panic and nothing on stdout; returns that line.
fn refused(output: &Output, what: &str) -> String {
    let err = stderr(output);
    assert!(
        !output.status.success(),
        "{what}: expected a failure, got success\nstdout: {}",
        stdout(output)
    );
    assert!(!err.contains("panicked"), "{what}: panicked\n{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one stderr line, got:\n{err}"
    );
    assert!(
        lines[0].starts_with(ERROR_PREFIX),
        "{what}: stderr does not start with `{ERROR_PREFIX}`: {err}"
    );
    assert_eq!(stdout(output), "", "{what}: a refused run printed figures");
    lines[0].to_owned()
}

/// Every file under `dir` (recursively) with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).expect("directory is listable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                files.insert(path.clone(), Vec::new());
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("file is readable");
                files.insert(path, bytes);
            }
        }
    }
    files
}

/// The figures of each JSON line of `out`, without the `work` a searched
/// version reports (a version printed from the state reports none).
fn figures(out: &str) -> Vec<Value> {
    json_lines(out)
        .into_iter()
        .map(|mut line| {
            if let Some(object) = line.as_object_mut() {
                object.remove("work");
            }
            line
        })
        .collect()
}

/// What a state dir records: every version's record and text. Opens the
/// database, so call it only while no binary is running on `dir`.
fn recorded(dir: &Path) -> (Vec<VersionRecord>, Vec<String>) {
    assert!(
        dir.join(STATE_FILE).is_file(),
        "{} has no state",
        dir.display()
    );
    let state = StateDir::open(dir).expect("state dir opens");
    (state.versions().unwrap(), state.texts().unwrap())
}

#[test]
fn every_golden_case_prints_one_matching_json_line_per_text() {
    for case in common::test_cases() {
        let temp = tempfile::tempdir().unwrap();
        let state = temp.path().join("state");
        let output = run_coordinator(&case.texts, &state, JSON);
        let out = succeeded(&output, &case.name);
        let lines = json_lines(&out);
        assert_eq!(
            lines.len(),
            case.texts.len(),
            "case {}: one line per text expected\n{out}",
            case.name
        );
        for (step, (actual, expected)) in lines.iter().zip(&case.after_each_text).enumerate() {
            common::assert_figures(&case.name, step, actual, expected);
        }
        // The state file, and the search history: two files per version.
        let mut expected = vec![state.join(STATE_FILE), state.join("history")];
        for segment in 0..case.texts.len() {
            for kind in ["history", "overrides"] {
                expected.push(state.join("history").join(format!("{kind}-0-{segment}")));
            }
        }
        expected.sort();
        let left: Vec<PathBuf> = snapshot(&state).into_keys().collect();
        assert_eq!(left, expected, "case {}: unexpected files", case.name);
    }
}

#[test]
fn rerunning_the_same_files_prints_identical_output_and_records_nothing_new() {
    let case = common::case("ts_incremental");
    let temp = tempfile::tempdir().unwrap();
    let state = temp.path().join("state");
    let first = succeeded(&run_coordinator(&case.texts, &state, JSON), "first run");
    let before = recorded(&state);
    let second = succeeded(&run_coordinator(&case.texts, &state, JSON), "second run");
    assert_eq!(figures(&first), figures(&second));
    assert!(
        json_lines(&first)
            .iter()
            .all(|line| line["work"].is_object())
    );
    assert!(
        json_lines(&second)
            .iter()
            .all(|line| line.get("work").is_none())
    );
    assert_eq!(
        recorded(&state),
        before,
        "a rerun changed the recorded state"
    );
    assert_eq!(before.0.len(), 2);
}

#[test]
fn rerun_prints_the_stored_figures_without_searching() {
    // Record version 1 of sq.txt with figures no search could produce; a run
    // that prints them cannot have searched that version again.
    let case = common::case("square");
    let text = &case.contents()[0];
    let temp = tempfile::tempdir().unwrap();
    let state = temp.path().join("state");
    let planted = VersionReport {
        version: fold::Version::FIRST,
        vocabulary: 4,
        orthos: 999_999,
        frontier: 777_777,
        optimal: Some(OptimalReport {
            dims: vec![2, 2],
            volume: 1,
            fullness: 1,
            payload: vec![Some("planted".into()), None, None, None],
        }),
    };
    StateDir::open(&state)
        .unwrap()
        .append(
            text,
            &VersionRecord {
                hash: content_hash(text),
                source: "planted.txt".into(),
                report: planted.clone(),
            },
            None,
        )
        .unwrap();

    let out = succeeded(&run_coordinator(&case.texts, &state, JSON), "rerun");
    assert_eq!(out, planted.to_json_line() + "\n");

    // Appending a file searches only the new version, over both texts.
    let grid3 = common::case("grid3");
    let files = [case.texts[0].clone(), grid3.texts[0].clone()];
    let out = succeeded(&run_coordinator(&files, &state, JSON), "appended run");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0], planted.to_json_line());
    let both = [text.clone(), grid3.contents()[0].clone()];
    let actual = figures(lines[1]).remove(0);
    assert_eq!(actual, library_figures(&both));
    assert_eq!(actual["version"], 2);
}

#[test]
fn appending_a_file_keeps_earlier_lines_and_matches_golden_version_two() {
    for name in ["grid3_incremental", "ts_incremental"] {
        let case = common::case(name);
        assert_eq!(case.texts.len(), 2, "case {name} has two texts");
        let temp = tempfile::tempdir().unwrap();
        let state = temp.path().join("state");

        let first = succeeded(&run_coordinator(&case.texts[..1], &state, JSON), name);
        let first_lines = json_lines(&first);
        assert_eq!(first_lines.len(), 1, "{first}");
        common::assert_figures(name, 0, &first_lines[0], &case.after_each_text[0]);

        let second = succeeded(&run_coordinator(&case.texts, &state, JSON), name);
        let lines: Vec<&str> = second.lines().collect();
        assert_eq!(lines.len(), 2, "{second}");
        assert_eq!(figures(lines[0]), figures(&first));
        common::assert_figures(name, 1, &json_lines(lines[1])[0], &case.after_each_text[1]);
        assert_eq!(recorded(&state).0.len(), 2);
    }
}

#[test]
fn contradicting_file_list_is_refused_and_the_state_still_works() {
    let case = common::case("grid3_incremental");
    let temp = tempfile::tempdir().unwrap();
    let state = temp.path().join("state");
    let first = succeeded(&run_coordinator(&case.texts, &state, JSON), "first run");
    let before = recorded(&state);

    let output = run_coordinator(&case.texts[1..], &state, JSON);
    let line = refused(&output, "contradicting list");
    assert!(
        line.contains(&state.display().to_string()),
        "the message names the state dir: {line}"
    );
    assert_eq!(
        recorded(&state),
        before,
        "the refused run changed the state"
    );

    let again = succeeded(&run_coordinator(&case.texts, &state, JSON), "rerun");
    assert_eq!(figures(&again), figures(&first));
}

#[test]
fn contradicting_file_list_leaves_the_state_file_bytes_unchanged() {
    let case = common::case("grid3_incremental");
    let temp = tempfile::tempdir().unwrap();
    let state = temp.path().join("state");
    succeeded(&run_coordinator(&case.texts, &state, JSON), "first run");
    let before = std::fs::read(state.join(STATE_FILE)).unwrap();
    refused(
        &run_coordinator(&case.texts[1..], &state, JSON),
        "contradicting list",
    );
    let after = std::fs::read(state.join(STATE_FILE)).unwrap();
    assert!(before == after, "the refused run rewrote {STATE_FILE}");
}

#[test]
fn missing_input_file_is_refused_before_anything_is_searched_or_stored() {
    let temp = tempfile::tempdir().unwrap();
    let state = temp.path().join("state");
    let missing = temp.path().join("no-such-file.txt");
    let files = [common::case("square").texts[0].clone(), missing];
    let line = refused(&run_coordinator(&files, &state, JSON), "missing file");
    assert!(line.contains("no-such-file.txt"), "names the file: {line}");
    assert!(!state.exists(), "a refused run created the state dir");
}

#[test]
fn directory_given_as_input_file_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    let state = temp.path().join("state");
    let dir = temp.path().join("a-directory");
    std::fs::create_dir(&dir).unwrap();
    let line = refused(&run_coordinator(&[dir], &state, JSON), "directory input");
    assert!(line.contains("a-directory"), "names the path: {line}");
    assert!(!state.exists(), "a refused run created the state dir");
}

#[test]
fn devices_and_files_over_the_size_limit_are_refused_unread() {
    let temp = tempfile::tempdir().unwrap();
    let state = temp.path().join("state");
    // A device would be read without end.
    let zero = PathBuf::from("/dev/zero");
    let line = refused(&run_coordinator(&[zero], &state, JSON), "/dev/zero input");
    assert!(
        line.contains("/dev/zero") && line.contains("device"),
        "{line}"
    );
    // A sparse file one byte over the limit: refused from its size alone.
    let huge = temp.path().join("huge.txt");
    let file = std::fs::File::create(&huge).unwrap();
    file.set_len(fold::text::MAX_TEXT_BYTES + 1).unwrap();
    let line = refused(&run_coordinator(&[huge], &state, JSON), "oversized input");
    assert!(
        line.contains("huge.txt") && line.contains("larger than"),
        "{line}"
    );
    assert!(!state.exists(), "a refused run created the state dir");
}

#[test]
fn input_with_invalid_utf8_is_refused_and_recorded_state_is_kept() {
    let temp = tempfile::tempdir().unwrap();
    let state = temp.path().join("state");
    let square = common::case("square").texts[0].clone();
    succeeded(
        &run_coordinator(std::slice::from_ref(&square), &state, JSON),
        "first run",
    );
    let before = recorded(&state);

    let bad = temp.path().join("latin1.txt");
    std::fs::write(&bad, b"one two. caf\xe9 three.").unwrap();
    let line = refused(
        &run_coordinator(&[square, bad], &state, JSON),
        "invalid UTF-8",
    );
    assert!(line.contains("latin1.txt"), "names the file: {line}");
    assert!(line.contains("UTF-8"), "says why: {line}");
    assert_eq!(recorded(&state), before);
}

#[test]
fn unreadable_input_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;

    let temp = tempfile::tempdir().unwrap();
    let state = temp.path().join("state");
    let locked = temp.path().join("locked.txt");
    std::fs::write(&locked, "one two. one three.").unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::File::open(&locked).is_ok() {
        // Running as root (or with CAP_DAC_OVERRIDE): mode 000 does not stop
        // reading, so there is no unreadable file to test with here.
        eprintln!("skipped: {} is still readable (root?)", locked.display());
        return;
    }
    let line = refused(&run_coordinator(&[locked], &state, JSON), "unreadable file");
    assert!(line.contains("locked.txt"), "names the file: {line}");
    assert!(!state.exists(), "a refused run created the state dir");
}

#[test]
fn foreign_non_empty_state_dir_is_refused_untouched() {
    let temp = tempfile::tempdir().unwrap();
    let state = temp.path().join("someone-elses");
    std::fs::create_dir_all(state.join("sub")).unwrap();
    std::fs::write(state.join("notes.txt"), "keep me").unwrap();
    std::fs::write(state.join("sub/data.bin"), [0u8, 1, 2, 255]).unwrap();
    let before = snapshot(&state);

    let files = [common::case("square").texts[0].clone()];
    let line = refused(&run_coordinator(&files, &state, JSON), "foreign state dir");
    assert!(
        line.contains(&state.display().to_string()),
        "names the dir: {line}"
    );
    assert_eq!(snapshot(&state), before, "the foreign dir was changed");
}

#[test]
fn garbage_state_file_is_refused_untouched() {
    let temp = tempfile::tempdir().unwrap();
    let state = temp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let garbage: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(state.join(STATE_FILE), &garbage).unwrap();
    let before = snapshot(&state);

    let files = [common::case("square").texts[0].clone()];
    let line = refused(&run_coordinator(&files, &state, JSON), "garbage state file");
    assert!(line.contains(STATE_FILE), "names the file: {line}");
    assert_eq!(
        snapshot(&state),
        before,
        "the garbage state dir was changed"
    );
}

#[test]
fn state_dir_that_is_a_plain_file_is_refused_untouched() {
    let temp = tempfile::tempdir().unwrap();
    let state = temp.path().join("plain-file");
    std::fs::write(&state, "not a directory").unwrap();

    let files = [common::case("square").texts[0].clone()];
    refused(
        &run_coordinator(&files, &state, JSON),
        "state dir is a file",
    );
    assert_eq!(std::fs::read(&state).unwrap(), b"not a directory");
}

#[test]
fn empty_file_is_version_one_with_nothing_found() {
    let temp = tempfile::tempdir().unwrap();
    let state = temp.path().join("state");
    let empty = temp.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let out = succeeded(&run_coordinator(&[empty], &state, JSON), "empty file");
    assert_eq!(json_lines(&out)[0]["work"]["processed"], 0);
    let lines = figures(&out);
    assert_eq!(lines.len(), 1, "{out}");
    let expected = serde_json::json!({
        "version": 1,
        "vocabulary": 0,
        "orthos": 0,
        "frontier": 0,
        "optimal": null,
    });
    assert_eq!(lines[0], expected);
}

#[test]
fn human_output_of_square_shows_the_figures_and_the_grid() {
    let case = common::case("square");
    let temp = tempfile::tempdir().unwrap();
    let state = temp.path().join("state");
    let out = succeeded(
        &run_coordinator(&case.texts, &state, &["--quiet"]),
        "human output",
    );
    assert!(
        out.contains("version 1: vocabulary 4, orthos 11, frontier 5"),
        "{out}"
    );
    // The golden optimum is [3,2] one three / two four / empty: rows run
    // along axis 1, so each row reads as a phrase of sq.txt.
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    for row in [["one", "three"], ["two", "four"], ["·", "·"]] {
        assert!(
            rows.iter().any(|words| words == &row),
            "no grid row {row:?} in:\n{out}"
        );
    }
    assert!(serde_json::from_str::<Value>(out.lines().next().unwrap()).is_err());
}

#[test]
fn thread_count_does_not_change_the_output() {
    let case = common::case("ts_0_5k");
    let mut outputs = Vec::new();
    for threads in ["1", "2"] {
        let temp = tempfile::tempdir().unwrap();
        let state = temp.path().join("state");
        let flags = ["--json", "--quiet", "--threads", threads];
        let out = succeeded(&run_coordinator(&case.texts, &state, &flags), threads);
        let lines = json_lines(&out);
        assert_eq!(lines.len(), 1, "{out}");
        common::assert_figures(&case.name, 0, &lines[0], &case.after_each_text[0]);
        outputs.push(out);
    }
    assert_eq!(outputs[0], outputs[1]);
}

/// Many versions, run in two goes: the search history is compacted along the way
/// (its file count stays bounded), survives the restart, and every version
/// still has the figures of a fresh search.
#[test]
fn many_versions_keep_a_compact_history_and_exact_figures() {
    let text = &common::case("ts_0_5k").contents()[0];
    let sentences: Vec<&str> = text.split_inclusive(['.', '?', '!', ';']).collect();
    let temp = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = sentences
        .chunks(sentences.len() / 14)
        .enumerate()
        .map(|(index, chunk)| {
            let path = temp.path().join(format!("part{index:02}.txt"));
            std::fs::write(&path, chunk.concat()).unwrap();
            path
        })
        .collect();
    let state = temp.path().join("state");
    let half = files.len() / 2;
    let first = succeeded(&run_coordinator(&files[..half], &state, JSON), "first half");
    let second = succeeded(&run_coordinator(&files, &state, JSON), "all");
    let lines = figures(&second);
    assert_eq!(figures(&first), lines[..half]);
    assert_eq!(lines.len(), files.len());
    for (count, line) in (1..).zip(&lines) {
        let texts: Vec<String> = files[..count]
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        assert_eq!(*line, library_figures(&texts), "version {count}");
    }
    let history_files = std::fs::read_dir(state.join("history")).unwrap().count();
    assert!(
        history_files <= 2 * 9,
        "{history_files} files in the search history"
    );
    let compacted = std::fs::read_dir(state.join("history"))
        .unwrap()
        .any(|entry| {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            !name.starts_with("history-0-") && !name.starts_with("overrides-0-")
        });
    assert!(compacted, "{} versions and never compacted", files.len());
}
