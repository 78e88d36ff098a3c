//! One version's search, in the phases [`super::Exploration::advance`] runs:
//! the version's segment is opened (new, or cut back to where a checkpoint
//! left it), its roots are planted, everything below them is searched
//! depth-first with checkpoints along the way, and the segment is closed.

use std::path::PathBuf;
use std::time::Instant;

use super::backing::Backing;
use super::batch::{BatchDone, Batches};
use super::history::{BlockWriter, RecordAt, decode_checked_orthos, encode_checked_orthos};
use super::manifest::{Checkpoint, Checkpoints, Manifest, SegmentExtent, StoredFigures};
use super::{Figures, Progress, SearchObserver, SearchStats};
use crate::error::{Error, Result};
use crate::interner::Version;
use crate::ortho::{Expansion, Ortho};

/// A version being searched: its batch loop, its segment's files (none when
/// no history is kept) and its pending orthos.
pub(super) struct VersionSearch<'a> {
    pub batches: Batches<'a>,
    history: Option<BlockWriter>,
    overrides: Option<BlockWriter>,
    stack: Vec<Ortho>,
    /// Pending orthos handed to other searches, in the order they went.
    handed_off: Vec<Ortho>,
    /// Orthos of the version expanded before a checkpoint this run resumed.
    resumed_after: u64,
    started: Instant,
}

/// A closed segment: what was searched, and where it is.
pub(super) struct Searched {
    pub figures: Figures,
    pub stats: SearchStats,
    /// The pending orthos handed to other searches while it ran.
    pub handed_off: Vec<Ortho>,
    /// The segment's extent and files, when a history is kept.
    pub segment: Option<(SegmentExtent, [Backing; 2])>,
}

impl<'a> VersionSearch<'a> {
    /// A new version, whose figures start from `figures` (those of the
    /// stored version, or none), writing its segment at `paths` when
    /// `history` (in memory while small, when `in_memory`).
    pub fn start(
        batches: Batches<'a>,
        paths: &[PathBuf; 2],
        history: bool,
        in_memory: bool,
        figures: Figures,
    ) -> Result<Self> {
        let create = |path| BlockWriter::create(path, in_memory);
        let mut search = Self {
            batches,
            history: history.then(|| create(&paths[0])).transpose()?,
            overrides: history.then(|| create(&paths[1])).transpose()?,
            stack: Vec::new(),
            handed_off: Vec::new(),
            resumed_after: 0,
            started: Instant::now(),
        };
        search.batches.figures = figures;
        Ok(search)
    }

    /// The version `checkpoint` was taken in, from where it was taken: its
    /// segment cut back to the checkpoint, its figures and pending orthos.
    pub fn resume(
        batches: Batches<'a>,
        paths: &[PathBuf; 2],
        history: bool,
        checkpoint: &Checkpoint,
    ) -> Result<Self> {
        let extent = &checkpoint.segment;
        let stack =
            decode_checked_orthos(&checkpoint.pending).map_err(|detail| Error::Damaged {
                path: paths[0].clone(),
                detail: format!("the checkpoint's pending orthos: {detail}"),
            })?;
        let reopen = |path, len| BlockWriter::reopen(path, len);
        let mut search = Self {
            batches,
            history: history
                .then(|| reopen(&paths[0], extent.history_bytes))
                .transpose()?,
            overrides: history
                .then(|| reopen(&paths[1], extent.overrides_bytes))
                .transpose()?,
            stack,
            handed_off: Vec::new(),
            resumed_after: extent.records,
            started: Instant::now(),
        };
        search.batches.figures = checkpoint.figures.figures()?;
        Ok(search)
    }

    /// Records new expansions of stored orthos of earlier segments.
    pub fn record_overrides(&mut self, changed: &[(RecordAt, Expansion)]) -> Result<()> {
        match self.overrides.as_mut() {
            Some(overrides) => overrides.overrides(changed),
            None => Ok(()),
        }
    }

    /// Plants the version's roots: the orthos it found before its search
    /// (new first words, children of stored orthos' new candidates). In
    /// seen-set mode the first words go into the seen set too (the children
    /// went in as they were found).
    pub fn plant(&mut self, roots: Vec<Ortho>) -> Result<()> {
        if let Some(seen) = self.batches.seen {
            for root in roots.iter().filter(|root| root.fullness() == 1) {
                seen.insert(root.id());
            }
        }
        if let Some(history) = self.history.as_mut() {
            history.roots(&roots)?;
        }
        tracing::debug!(elapsed = ?self.started.elapsed(), roots = roots.len(), "roots planted");
        self.stack = roots;
        Ok(())
    }

    /// Searches everything below the planted (or resumed) orthos, telling
    /// `observer` after every batch and checkpointing as `checkpoints` asks.
    /// `base` is the manifest the version started from (it goes into every
    /// checkpoint).
    pub fn search(
        &mut self,
        observer: &mut dyn SearchObserver,
        checkpoints: &mut dyn Checkpoints,
        version: Version,
        base: &Manifest,
        durable: bool,
    ) -> Result<()> {
        let started = self.started;
        let resumed_after = self.resumed_after;
        let mut run = RunStart {
            records: 0,
            bytes: self.history.as_ref().map_or(0, BlockWriter::len),
        };
        let overrides = &mut self.overrides;
        self.batches.run(
            &mut self.stack,
            &mut self.handed_off,
            self.history.as_mut(),
            |batches, done: BatchDone<'_>, mut history| {
                if batches.keep_leaves {
                    observer.on_leaves(done.leaves)?;
                }
                if batches.keep_orthos {
                    observer.on_orthos(&done.expanded)?;
                }
                let progress = Progress {
                    orthos: batches.figures.orthos,
                    processed: batches.stats.processed,
                    queued: done.stack.len() as u64,
                    frontier: batches.figures.frontier,
                    optimal: batches.figures.optimal.clone(),
                    elapsed: started.elapsed(),
                };
                observer.on_batch(&progress)?;
                if let Some(history) = history.as_deref_mut() {
                    run.restart_if_due(history, batches.stats.processed, done.stack)?;
                }
                if checkpoints.due(&progress) {
                    let segment = SegmentExtent {
                        history_bytes: sync(history.as_deref_mut(), durable)?,
                        records: resumed_after + batches.stats.processed,
                        overrides_bytes: sync(overrides.as_mut(), durable)?,
                    };
                    checkpoints.save(&Checkpoint {
                        version,
                        base: base.clone(),
                        segment,
                        figures: StoredFigures::of(&batches.figures),
                        pending: encode_checked_orthos(done.stack),
                    })?;
                    batches.stats.checkpoints += 1;
                }
                let handed = observer.hand_off(done.stack).min(done.stack.len());
                if handed > 0
                    && let Some(history) = history
                {
                    history.handoff(handed)?;
                }
                Ok(handed)
            },
        )?;
        Ok(())
    }

    /// Closes the version's segment, waiting for the disk when `durable`.
    pub fn finish(self, durable: bool) -> Result<Searched> {
        let mut stats = self.batches.stats;
        stats.stored = stats.processed;
        let segment = match (self.history, self.overrides) {
            (Some(mut history), Some(mut overrides)) => {
                let extent = SegmentExtent {
                    history_bytes: history.sync(durable)?,
                    records: self.resumed_after + stats.processed,
                    overrides_bytes: overrides.sync(durable)?,
                };
                Some((extent, [history.into_backing(), overrides.into_backing()]))
            }
            _ => None,
        };
        Ok(Searched {
            figures: self.batches.figures,
            stats,
            segment,
            handed_off: self.handed_off,
        })
    }
}

/// Records a history's run holds at least before another may start.
const RUN_RECORDS: u64 = 1 << 16;

/// A new run's roots (the pending stack, written whole) may cost at most
/// this fraction of the run they end.
const ROOTS_SHARE: u64 = 16;

/// Where the history's current run started: the records and bytes before
/// it (see [`BlockWriter::restart`]).
struct RunStart {
    records: u64,
    bytes: u64,
}

impl RunStart {
    /// Starts a new run from `stack` once the current one holds
    /// [`RUN_RECORDS`] records (of `records` so far) and the new run's roots
    /// would cost at most 1/[`ROOTS_SHARE`] of its bytes: so runs are many
    /// and bounded, and the history barely grows.
    fn restart_if_due(
        &mut self,
        history: &mut BlockWriter,
        records: u64,
        stack: &[Ortho],
    ) -> Result<()> {
        if stack.is_empty() || records - self.records < RUN_RECORDS {
            return Ok(());
        }
        // Estimated from the top ortho, the deepest and so the largest: a
        // sum over the stack after every batch would cost more than it saves.
        let top = stack
            .last()
            .map_or(0, |ortho| ortho.raw_slots().len() as u64);
        let roots_bytes = stack.len() as u64 * (2 + 2 * top);
        if roots_bytes * ROOTS_SHARE > history.len() - self.bytes {
            return Ok(());
        }
        history.restart(stack)?;
        *self = Self {
            records,
            bytes: history.len(),
        };
        Ok(())
    }
}

/// Syncs a history file, if there is one; returns its length (0 if none).
fn sync(writer: Option<&mut BlockWriter>, durable: bool) -> Result<u64> {
    writer.map_or(Ok(0), |writer| writer.sync(durable))
}
