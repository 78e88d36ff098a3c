//! Inputs that used to exhaust memory: a text without sentence ends makes
//! every run of words a phrase. The phrase automaton stays linear in the
//! text and the depth-first search keeps its pending work bounded, so such a
//! run stays within a fixed memory budget however long it goes on.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{json_lines, run_coordinator, succeeded};

/// The first `bytes` of the corpus as one sentence: every `.?!;` and every
/// line break removed.
fn one_line(bytes: usize) -> String {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/tinyshakespeare.txt");
    let text = std::fs::read_to_string(corpus).expect("the corpus is readable");
    let line: String = text
        .chars()
        .map(|c| if ".?!;\n".contains(c) { ' ' } else { c })
        .collect();
    let end = (0..=bytes.min(line.len()))
        .rev()
        .find(|&end| line.is_char_boundary(end))
        .unwrap_or(0);
    line[..end].to_owned()
}

/// Peak resident memory of a running process, in kB.
fn peak_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A 300 KB sentence (a trie of its phrases would need some 10^10 nodes):
/// the search gets going within a second and its peak memory stays under
/// 400 MB over several seconds of searching.
#[test]
fn a_long_text_without_sentence_ends_runs_in_bounded_memory() {
    let temp = tempfile::tempdir().unwrap();
    let text = temp.path().join("line.txt");
    std::fs::write(&text, one_line(300_000)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fold-coordinator"))
        .arg("run")
        .arg(&text)
        .arg("--state-dir")
        .arg(temp.path().join("state"))
        .args(["--quiet", "--no-history", "--threads", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fold-coordinator starts");
    let started = Instant::now();
    let mut peak = 0;
    while started.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(100));
        match peak_kb(child.id()) {
            Some(kb) => peak = peak.max(kb),
            None => break,
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
    }
    let still_running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    assert!(
        still_running,
        "the run stopped: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(peak > 0, "no memory reading");
    assert!(peak < 400_000, "peak RSS {peak} kB");
}

/// A 19.5 KB sentence (709 MB of phrase trie before): searched to the end,
/// with the same figures in both modes.
#[test]
fn a_sentence_of_twenty_thousand_characters_is_searched_exactly() {
    let temp = tempfile::tempdir().unwrap();
    let text = temp.path().join("line.txt");
    std::fs::write(&text, one_line(19_500)).unwrap();
    let mut figures = Vec::new();
    for mode in ["tree", "seen-set"] {
        let state = temp.path().join(mode);
        let output = run_coordinator(
            std::slice::from_ref(&text),
            &state,
            &["--json", "--quiet", "--dedup", mode],
        );
        let lines = json_lines(&succeeded(&output, mode));
        assert_eq!(lines.len(), 1);
        figures.push(lines[0].clone());
    }
    assert_eq!(figures[0], figures[1]);
    assert!(
        figures[0]["orthos"].as_u64().unwrap() > 1_000_000,
        "{}",
        figures[0]
    );
}
