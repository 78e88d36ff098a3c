//! The embedded single-process run (`fold-coordinator run`): ingest files in
//! order as versions, search each, print and persist the figures.
//!
//! The state directory records the texts already ingested by content hash. A
//! run whose file list agrees with that sequence (the list is a prefix of it,
//! or it is a prefix of the list) reuses the stored figures for those texts and
//! searches only the rest; a list that contradicts it is refused before
//! anything is written.
//!
//! The search itself is kept in the state directory too (an
//! [`Exploration`]), so each new version explores only what its text makes
//! new, and a version's search checkpoints every `checkpoint_every` orthos:
//! a run that was killed resumes from its last checkpoint when the same
//! command is run again.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::interner::{Interner, Version};
use crate::output::{self, Work};
use crate::progress::ProgressLine;
use crate::report::VersionReport;
use crate::search::{
    AdvanceOutcome, Checkpoint, Checkpoints, Dedup, Exploration, Manifest, Progress, Scope,
    SearchConfig, SearchStats, Searcher,
};
use crate::store::{StateDir, StoredCheckpoint, VersionRecord, content_hash};
use crate::text::read_text_file;

/// Default number of orthos expanded between two checkpoints (the seed's cadence).
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 100_000;

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
    /// Orthos expanded between two checkpoints of a version's search; 0
    /// checkpoints only when a version is done.
    pub checkpoint_every: u64,
    /// Keep the search's history, so later versions are incremental (the
    /// default); without it only checkpoints touch the disk and every
    /// version is searched afresh.
    pub history: bool,
    /// How the search avoids finding an ortho twice.
    pub dedup: Dedup,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Versions whose stored figures were printed without searching.
    pub reused: usize,
    /// Versions searched by this run.
    pub searched: usize,
}

/// Opens `state` for writing, and builds the interner of its texts while
/// it does (opening checks the whole store and waits for the disk). The
/// texts are read before the store is opened for writing, so it must still
/// hold the `recorded` versions it held then.
fn open_for_writing(state: &mut StateDir, recorded: usize) -> Result<Interner> {
    let texts = state.texts()?;
    let (opened, interner) = std::thread::scope(|scope| {
        let interner = scope.spawn(|| Interner::from_texts(texts.iter().map(String::as_str)));
        let opened = state.begin_writing().and_then(|()| state.version_count());
        let interner = interner
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (opened, interner)
    });
    let now = opened?;
    if now != recorded {
        return Err(Error::InUse(format!(
            "{} changed while it was being opened ({recorded} versions, then {now}): \
             another fold process is using it",
            state.dir().display()
        )));
    }
    Ok(interner)
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
    crate::spatial::prepare_in_background();
    // Read everything first, so bad input is refused before the state is touched.
    let inputs = files
        .iter()
        .map(|path| read_text(path))
        .collect::<Result<Vec<_>>>()?;
    let mut state = StateDir::open(&options.state_dir)?;
    let recorded = state.versions()?;
    check_agrees(&inputs, &recorded, state.dir())?;

    let mut summary = RunSummary::default();
    let mut print_recorded = |out: &mut dyn Write| {
        for record in recorded.iter().take(inputs.len()) {
            output::print(out, &output::report(&record.report, options.json))?;
            summary.reused += 1;
        }
        Ok::<_, Error>(())
    };
    if inputs.len() <= recorded.len() {
        print_recorded(out)?;
        return Ok(summary);
    }

    // Everything the search needs is opened and checked before anything is
    // printed, so a damaged or busy state dir is refused with no output.
    let mut interner = open_for_writing(&mut state, recorded.len())?;
    let _ = std::fs::remove_dir_all(state.dir().join("tmp"));
    let mut exploration = open_exploration(&mut state, interner.version(), options.history)?;
    let mut resume =
        pending_checkpoint(&state, &inputs[recorded.len()], &exploration, options.dedup)?;
    let searcher = Searcher::new(SearchConfig {
        threads: options.threads,
        dedup: options.dedup,
        ..SearchConfig::default()
    })?;
    print_recorded(out)?;
    for input in &inputs[recorded.len()..] {
        interner.ingest(&input.text);
        let searched = Versioned {
            state: &mut state,
            exploration: &mut exploration,
            searcher: &searcher,
            interner: &interner,
            options,
        };
        let (advanced, resumed_after) = searched.search(input, resume.take())?;
        tracing::info!(version = interner.version().get(), stats = ?advanced.stats, "search finished");
        let record = VersionRecord {
            hash: input.hash.clone(),
            source: input.path.display().to_string(),
            report: VersionReport::new(&interner, &advanced.figures),
        };
        state.append(&input.text, &record, Some(exploration.manifest()))?;
        let work = work_of(&advanced.stats, resumed_after);
        output::print(out, &output::searched(&record.report, &work, options.json))?;
        summary.searched += 1;
        if exploration.wants_compaction() {
            exploration.compact()?;
            state.save_manifest(exploration.manifest())?;
            exploration.remove_stale_files()?;
            tracing::info!(
                bytes = exploration.manifest().bytes(),
                "search log compacted"
            );
        }
    }
    Ok(summary)
}

/// Opens the state's exploration if it is complete for `version`, the last
/// recorded one, and keeps (or starts) a history as `history` asks;
/// otherwise an empty one (the next version is then searched from scratch,
/// or resumed from a checkpoint of such a search).
fn open_exploration(state: &mut StateDir, version: Version, history: bool) -> Result<Exploration> {
    let dir = state.history_dir();
    let usable = state
        .manifest()?
        .filter(|m| m.version == version && (m.history || !history));
    if let Some(manifest) = usable {
        match Exploration::open(&dir, Scope::All, manifest) {
            Ok(mut exploration) => {
                if !history && exploration.manifest().history {
                    exploration.discard_history();
                    exploration.remove_stale_files()?;
                }
                return Ok(exploration);
            }
            Err(error) => {
                tracing::warn!(%error, "the stored search history is unusable; searching afresh");
            }
        }
    }
    // Forget a manifest the history will no longer match before touching it.
    state.forget_manifest()?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let mut exploration = Exploration::open(&dir, Scope::All, Manifest::default())?;
    if !history {
        exploration.discard_history();
    }
    Ok(exploration)
}

/// The checkpoint to resume the next version from, if the state holds one
/// for this very text on top of this exploration.
fn pending_checkpoint(
    state: &StateDir,
    next: &InputText,
    exploration: &Exploration,
    dedup: Dedup,
) -> Result<Option<Checkpoint>> {
    let Some(StoredCheckpoint {
        hash,
        checkpoint,
        dedup: taken_in,
    }) = state.checkpoint()?
    else {
        return Ok(None);
    };
    // The pending orthos of one mode are not those of the other.
    let taken_in = if taken_in.is_empty() {
        "tree"
    } else {
        &taken_in
    };
    if taken_in != dedup.name() {
        tracing::info!(
            taken_in,
            "dropping a checkpoint taken with another --dedup; the version is searched afresh"
        );
        return Ok(None);
    }
    let fits = hash == next.hash
        && checkpoint.base == *exploration.manifest()
        && checkpoint.version.previous() == Some(exploration.manifest().version);
    if !fits {
        tracing::info!("dropping a checkpoint of another text");
        return Ok(None);
    }
    tracing::info!(
        version = checkpoint.version.get(),
        expanded = checkpoint.expanded(),
        "resuming from a checkpoint"
    );
    Ok(Some(checkpoint))
}

/// Saves a checkpoint into the state every `every` orthos expanded.
struct StateCheckpoints<'a> {
    state: &'a mut StateDir,
    hash: &'a str,
    dedup: Dedup,
    every: u64,
    next: u64,
}

impl Checkpoints for StateCheckpoints<'_> {
    fn due(&mut self, progress: &Progress) -> bool {
        if self.every == 0 || progress.processed < self.next {
            return false;
        }
        self.next = (progress.processed / self.every + 1) * self.every;
        true
    }

    fn save(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        self.state.save_checkpoint(&StoredCheckpoint {
            hash: self.hash.to_owned(),
            checkpoint: checkpoint.clone(),
            dedup: self.dedup.name().to_owned(),
        })?;
        tracing::info!(
            version = checkpoint.version.get(),
            expanded = checkpoint.expanded(),
            "checkpoint saved"
        );
        Ok(())
    }
}

/// What searching one version of a run works with.
struct Versioned<'a> {
    state: &'a mut StateDir,
    exploration: &'a mut Exploration,
    searcher: &'a Searcher,
    /// The interner at the version (its text ingested).
    interner: &'a Interner,
    options: &'a RunOptions,
}

impl Versioned<'_> {
    /// Searches the version of `input`, from `resume` when given, with
    /// progress and checkpoints. A stored search found damaged is set
    /// aside and the version searched afresh from the recorded texts.
    /// Returns what it found, and how many orthos it had expanded before
    /// the checkpoint it went on from (0 when it started afresh).
    fn search(
        self,
        input: &InputText,
        resume: Option<Checkpoint>,
    ) -> Result<(AdvanceOutcome, u64)> {
        let Self {
            state,
            exploration,
            searcher,
            interner,
            options,
        } = self;
        let label = format!("version {}", interner.version());
        let mut progress = ProgressLine::new(label, options.progress);
        let mut checkpoints = StateCheckpoints {
            state,
            hash: &input.hash,
            dedup: options.dedup,
            every: options.checkpoint_every,
            next: options.checkpoint_every,
        };
        let advanced = searcher.advance_durably(
            exploration,
            interner,
            resume.as_ref(),
            &mut progress,
            &mut checkpoints,
        );
        let advanced = match advanced {
            Err(Error::Damaged { path, detail }) => {
                // Nothing read from a damaged file counts: the version is
                // searched again from its texts, and a new history begins.
                tracing::warn!(
                    "{} is damaged ({detail}); searching version {} afresh from the recorded texts",
                    path.display(),
                    interner.version()
                );
                checkpoints.state.forget_manifest()?;
                *exploration = Exploration::create(&checkpoints.state.history_dir(), Scope::All)?;
                if !options.history {
                    exploration.discard_history();
                }
                let afresh = searcher.advance_durably(
                    exploration,
                    interner,
                    None,
                    &mut progress,
                    &mut checkpoints,
                )?;
                (afresh, 0)
            }
            other => (other?, resume.as_ref().map_or(0, Checkpoint::expanded)),
        };
        progress.finish();
        Ok(advanced)
    }
}

/// The work of one version's search, as the run reports it.
fn work_of(stats: &SearchStats, resumed_after: u64) -> Work {
    Work {
        processed: stats.processed,
        scanned: stats.scanned,
        revisited: stats.revisited,
        checkpoints: stats.checkpoints,
        resumed_after,
    }
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
