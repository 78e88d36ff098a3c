//! What a stored search records about itself: the manifest (how far its
//! history files are valid, and its figures), and checkpoints of a version
//! being searched. Their owner keeps both durably, in its own database.

use serde::{Deserialize, Serialize};

use super::history::FORMAT_VERSION;
use super::{Figures, Progress};
use crate::error::{Error, Result};
use crate::interner::Version;
use crate::ortho::Ortho;
use crate::spatial::shapes;

/// The files of one searched version, as far as they are known to be written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentExtent {
    /// Bytes of the history file.
    pub history_bytes: u64,
    /// Records in it: the orthos the version expanded for the first time.
    pub records: u64,
    /// Bytes of the overrides file.
    pub overrides_bytes: u64,
}

/// An ortho as stored in a manifest: dims and raw slots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredOrtho {
    dims: Vec<usize>,
    slots: Vec<u32>,
}

impl StoredOrtho {
    pub(super) fn of(ortho: &Ortho) -> Self {
        Self {
            dims: ortho.dims().to_vec(),
            slots: ortho.raw_slots().to_vec(),
        }
    }

    fn ortho(&self) -> Result<Ortho> {
        let shape = shapes()
            .id(&self.dims)
            .ok_or_else(|| Error::Inconsistent(format!("unknown shape {:?}", self.dims)))?;
        Ortho::from_raw(shape, &self.slots)
    }
}

/// Figures in a form that survives a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFigures {
    orthos: u64,
    frontier: u64,
    optimal: Option<StoredOrtho>,
}

impl StoredFigures {
    pub(super) fn of(figures: &Figures) -> Self {
        Self {
            orthos: figures.orthos,
            frontier: figures.frontier,
            optimal: figures.optimal.as_ref().map(StoredOrtho::of),
        }
    }

    pub(super) fn figures(&self) -> Result<Figures> {
        Ok(Figures {
            orthos: self.orthos,
            frontier: self.frontier,
            optimal: self.optimal.as_ref().map(StoredOrtho::ortho).transpose()?,
        })
    }
}

/// What an exploration's directory holds once a version is done: enough to
/// reopen it. Its owner stores it durably after each version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The history format of the files ([`FORMAT_VERSION`]).
    pub format: u32,
    /// The interner version the figures are for (0: nothing searched).
    pub version: Version,
    /// The vocabulary at `version`: tokens from it on are new to a later one.
    pub vocabulary: u32,
    /// Whether the history is kept (otherwise each version is searched afresh).
    pub history: bool,
    /// One extent per searched version since the last compaction, oldest first.
    pub segments: Vec<SegmentExtent>,
    /// The figures at `version`.
    pub(super) figures: StoredFigures,
    /// Compactions so far; the history's file names carry it.
    pub generation: u32,
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            format: FORMAT_VERSION,
            version: Version::ZERO,
            vocabulary: 0,
            history: true,
            segments: Vec::new(),
            figures: StoredFigures::default(),
            generation: 0,
        }
    }
}

impl Manifest {
    /// Orthos recorded over all segments.
    pub fn orthos(&self) -> u64 {
        self.segments.iter().map(|segment| segment.records).sum()
    }

    /// Bytes of the history's files.
    pub fn bytes(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.history_bytes + s.overrides_bytes)
            .sum()
    }
}

/// A consistent point inside a version's search: resuming from it loses only
/// the work done after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The version being searched.
    pub version: Version,
    /// The manifest the search started from.
    pub base: Manifest,
    /// How far the version's own segment was written; `records` is the
    /// number of orthos of the version already expanded.
    pub segment: SegmentExtent,
    /// Figures so far.
    pub(super) figures: StoredFigures,
    /// The orthos still to expand, encoded with a checksum. Its owner
    /// stores it beside the rest (it is not part of the serialized form).
    #[serde(skip)]
    pub pending: Vec<u8>,
}

impl Checkpoint {
    /// Orthos of the version already expanded.
    pub fn expanded(&self) -> u64 {
        self.segment.records
    }
}

/// Decides when a search takes a checkpoint and keeps what it gets.
pub trait Checkpoints {
    /// Whether to checkpoint now; asked between batches.
    fn due(&mut self, progress: &Progress) -> bool;

    /// Stores `checkpoint` durably. The exploration's files are synced first.
    fn save(&mut self, checkpoint: &Checkpoint) -> Result<()>;
}

/// Never checkpoints.
pub struct NoCheckpoints;

impl Checkpoints for NoCheckpoints {
    fn due(&mut self, _progress: &Progress) -> bool {
        false
    }

    fn save(&mut self, _checkpoint: &Checkpoint) -> Result<()> {
        Ok(())
    }
}
