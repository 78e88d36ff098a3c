//! The embedded single-process run (`fold-coordinator run`): ingest files in
//! order as versions, search each, print and persist the figures.
//!
//! The state directory records the texts already ingested by content hash. A
//! run whose file list agrees with that sequence (the list is a prefix of it,
//! or it is a prefix of the list) reuses the stored figures for those texts and
//! searches only the rest; a list that contradicts it is refused before
//! anything is written.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::interner::Interner;
use crate::progress::ProgressLine;
use crate::report::VersionReport;
use crate::search::{SearchConfig, search};
use crate::store::{StateDir, VersionRecord, content_hash};

/// How `run` behaves.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Where texts and figures are persisted.
    pub state_dir: PathBuf,
    /// Search threads; 0 means one per core.
    pub threads: usize,
    /// Print one JSON object per version instead of the human summary.
    pub json: bool,
    /// Draw a progress line on stderr (only when it is a terminal).
    pub progress: bool,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Versions whose stored figures were printed without searching.
    pub reused: usize,
    /// Versions searched by this run.
    pub searched: usize,
}

/// A text file read in full and checked to be UTF-8.
struct InputText {
    path: PathBuf,
    text: String,
    hash: String,
}

/// Ingests `files` in order, printing each version's figures to `out`.
pub fn run(files: &[PathBuf], options: &RunOptions, out: &mut dyn Write) -> Result<RunSummary> {
    if files.is_empty() {
        return Err(Error::BadText("no input file given".into()));
    }
    // Read everything first, so bad input is refused before the state is touched.
    let inputs = files
        .iter()
        .map(|path| read_text(path))
        .collect::<Result<Vec<_>>>()?;
    let mut state = StateDir::open(&options.state_dir)?;
    let recorded = state.versions()?;
    check_agrees(&inputs, &recorded, state.dir())?;

    let mut summary = RunSummary::default();
    for record in recorded.iter().take(inputs.len()) {
        print_report(out, &record.report, options.json)?;
        summary.reused += 1;
    }
    if inputs.len() <= recorded.len() {
        return Ok(summary);
    }

    state.begin_writing()?;
    // Queue files left by a run that was killed are of no further use.
    let spill_dir = state.dir().join("tmp");
    let _ = std::fs::remove_dir_all(&spill_dir);
    let mut interner = Interner::from_texts(state.texts()?.iter().map(String::as_str));
    let config = SearchConfig {
        threads: options.threads,
        spill_dir: spill_dir.clone(),
        ..SearchConfig::default()
    };
    for input in &inputs[recorded.len()..] {
        interner.ingest(&input.text);
        let label = format!("version {}", interner.version());
        let mut progress = ProgressLine::new(label, options.progress);
        let outcome = search(&interner, &config, &mut progress)?;
        progress.finish();
        tracing::info!(version = interner.version(), stats = ?outcome.stats, "search finished");
        let report = VersionReport::new(&interner, &outcome.figures);
        let record = VersionRecord {
            hash: input.hash.clone(),
            source: input.path.display().to_string(),
            report,
        };
        state.append(&input.text, &record)?;
        print_report(out, &record.report, options.json)?;
        summary.searched += 1;
    }
    let _ = std::fs::remove_dir(&spill_dir);
    Ok(summary)
}

/// Reads a text file for a run.
fn read_text(path: &Path) -> Result<InputText> {
    let text = read_text_file(path)?;
    Ok(InputText {
        path: path.to_owned(),
        hash: content_hash(&text),
        text,
    })
}

/// Reads a whole text file, refusing directories and invalid UTF-8 with a
/// message that names the file.
pub fn read_text_file(path: &Path) -> Result<String> {
    if path.is_dir() {
        return Err(Error::BadText(format!(
            "{} is a directory, not a text file",
            path.display()
        )));
    }
    let bytes =
        std::fs::read(path).map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    String::from_utf8(bytes).map_err(|e| {
        Error::BadText(format!(
            "{} is not valid UTF-8 (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Refuses a file list that contradicts the sequence the state dir recorded.
fn check_agrees(inputs: &[InputText], recorded: &[VersionRecord], dir: &Path) -> Result<()> {
    for (index, (input, record)) in inputs.iter().zip(recorded).enumerate() {
        if input.hash != record.hash {
            return Err(Error::BadState(format!(
                "{} differs from version {} recorded in state dir {} (ingested from {}); \
                 list the recorded texts first, in order, or use another --state-dir",
                input.path.display(),
                index + 1,
                dir.display(),
                record.source
            )));
        }
    }
    Ok(())
}

fn print_report(out: &mut dyn Write, report: &VersionReport, json: bool) -> Result<()> {
    let text = if json {
        report.to_json_line() + "\n"
    } else {
        report.to_text()
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("cannot write output", e))
}
