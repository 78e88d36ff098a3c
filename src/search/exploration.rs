//! A search that lives across versions (ORTHO.md §6, incremental ingestion).
//!
//! An [`Exploration`] keeps every ortho it found in its log (see
//! [`super::log`]) and the ids of all of them in memory. Bringing it to a
//! new interner version costs only what the version makes new:
//!
//! 1. the empty ortho is expanded again (new tokens give new first words);
//! 2. the log is scanned, and every stored ortho one of whose watched trie
//!    nodes grew since the last version is expanded again (a leaf that now
//!    has candidates stops being one);
//! 3. the children never seen before, and everything they lead to, are
//!    searched as usual.
//!
//! Every other stored ortho has exactly the candidates it had, whose
//! children are all stored already, so the figures equal a fresh search.
//! During step 3 the exploration can checkpoint: everything found is on disk,
//! and the orthos still to expand are a suffix of the segment's orthos file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::backing::Backing;
use super::batch::{better, expand_batch};
use super::log::{
    OrthoQueue, RecordAt, RecordWriter, copy_prefix, copy_segment, parse_segment_path,
    read_overrides, scan_ids, scan_orthos, scan_segment, segment_paths,
};
use super::{Figures, Progress, Scope, SearchConfig, SearchObserver, SearchStats, SeenSet};
use crate::error::{Error, Result};
use crate::interner::{Growth, Interner, PhraseNode};
use crate::ortho::{Expansion, Ortho, OrthoId, Scratch, expand};
use crate::spatial::shapes;

/// The files of one searched version, as far as they are known to be written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentExtent {
    /// Bytes of the orthos file.
    pub orthos_bytes: u64,
    /// Orthos in it.
    pub orthos: u64,
    /// Bytes of the expansions file.
    pub expansions_bytes: u64,
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
    fn of(ortho: &Ortho) -> Self {
        Self {
            dims: ortho.dims().to_vec(),
            slots: ortho.raw_slots().to_vec(),
        }
    }

    fn ortho(&self) -> Result<Ortho> {
        let shape = shapes()
            .id(&self.dims)
            .ok_or_else(|| Error::BadState(format!("unknown shape {:?}", self.dims)))?;
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
    fn of(figures: &Figures) -> Self {
        Self {
            orthos: figures.orthos,
            frontier: figures.frontier,
            optimal: figures.optimal.as_ref().map(StoredOrtho::of),
        }
    }

    fn figures(&self) -> Result<Figures> {
        Ok(Figures {
            orthos: self.orthos,
            frontier: self.frontier,
            optimal: self.optimal.as_ref().map(StoredOrtho::ortho).transpose()?,
        })
    }
}

/// What an exploration's directory holds once a version is done: enough to
/// reopen it. Its owner stores it durably after each version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The interner version the log is complete for (0: nothing searched).
    pub version: u32,
    /// One extent per searched version since the last compaction, oldest first.
    pub segments: Vec<SegmentExtent>,
    /// The figures at `version`.
    figures: StoredFigures,
    /// Compactions so far; the log's file names carry it.
    #[serde(default)]
    pub generation: u32,
}

impl Manifest {
    /// Orthos stored over all segments (revisits not counted twice).
    pub fn orthos(&self) -> u64 {
        self.segments.iter().map(|segment| segment.orthos).sum()
    }

    /// Bytes of the log's files.
    pub fn bytes(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.orthos_bytes + s.expansions_bytes + s.overrides_bytes)
            .sum()
    }
}

/// Segments a log may have before it is compacted into one.
const MAX_SEGMENTS: usize = 8;

/// A consistent point inside a version's search: resuming from it loses only
/// the work done after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The version being searched.
    pub version: u32,
    /// The manifest the search started from.
    pub base: Manifest,
    /// How far the version's own segment was written.
    pub segment: SegmentExtent,
    /// Orthos of that segment already expanded.
    pub expanded: u64,
    /// Figures so far.
    figures: StoredFigures,
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

/// Every ortho found so far, on disk, and their ids in memory.
pub struct Exploration {
    dir: PathBuf,
    scope: Scope,
    manifest: Manifest,
    /// Per segment, the current expansion of its orthos expanded again since.
    overrides: Vec<BTreeMap<u32, Expansion>>,
    seen: SeenSet,
    /// Whether the directory is removed on drop.
    temporary: bool,
    /// The files of a temporary exploration's only segment, possibly still
    /// in memory.
    unsaved: Option<[Backing; 4]>,
    /// Whether files are synced to disk at checkpoints and versions.
    durable: bool,
}

impl Exploration {
    /// Starts an empty exploration in `dir`, removing whatever logs were there.
    pub fn create(dir: &Path, scope: Scope) -> Result<Self> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        Ok(Self::empty(
            dir.to_owned(),
            scope,
            Manifest::default(),
            false,
        ))
    }

    /// An exploration of nothing yet, at `manifest`'s generation; temporary
    /// ones are not synced.
    fn empty(dir: PathBuf, scope: Scope, manifest: Manifest, temporary: bool) -> Self {
        Self {
            dir,
            scope,
            manifest,
            overrides: Vec::new(),
            seen: SeenSet::new(),
            temporary,
            unsaved: None,
            durable: !temporary,
        }
    }

    /// Starts an exploration for one search, in a directory under `parent`
    /// that is removed when it is dropped (unless [`Exploration::persist`]
    /// moves it). Nothing is synced, and its log stays in memory while it is
    /// small, so a small search touches no disk.
    pub fn temporary(parent: &Path, scope: Scope) -> Result<Self> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "fold-search-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        Ok(Self::empty(
            parent.join(name),
            scope,
            Manifest::default(),
            true,
        ))
    }

    /// Moves the exploration to `dir` (which must not exist), where it
    /// stays when dropped and can be reopened with its manifest.
    pub fn persist(&mut self, dir: &Path) -> Result<()> {
        let fail = |e| Error::io(format!("cannot create {}", dir.display()), e);
        let old = std::mem::replace(&mut self.dir, dir.to_owned());
        if self.unsaved.is_some() {
            std::fs::create_dir_all(dir).map_err(fail)?;
            self.materialize()?;
        } else {
            std::fs::rename(&old, dir).map_err(fail)?;
        }
        let _ = std::fs::remove_dir_all(&old);
        self.temporary = false;
        Ok(())
    }

    /// Writes a temporary exploration's in-memory files to its directory.
    fn materialize(&mut self) -> Result<()> {
        if let Some(mut files) = self.unsaved.take() {
            for (file, path) in files.iter_mut().zip(segment_paths(&self.dir, 0, 0)) {
                file.persist(&path)?;
            }
        }
        Ok(())
    }

    /// Reopens the exploration in `dir` as `manifest` describes it: every
    /// stored ortho's id goes back into memory. Files of later segments are
    /// removed, except those of the next one, which a checkpoint may resume
    /// (and which a new version truncates).
    pub fn open(dir: &Path, scope: Scope, manifest: Manifest) -> Result<Self> {
        let generation = Manifest {
            generation: manifest.generation,
            ..Manifest::default()
        };
        let mut exploration = Self::empty(dir.to_owned(), scope, generation, false);
        for (segment, extent) in manifest.segments.iter().enumerate() {
            exploration.load_segment(segment as u32, extent)?;
        }
        exploration.manifest = manifest;
        exploration.remove_stale_files()?;
        Ok(exploration)
    }

    /// Whether versions and checkpoints wait for the disk (they do unless
    /// turned off: a log that is only a cache can skip it, since a crashed
    /// process's writes survive it anyway).
    pub fn set_durable(&mut self, durable: bool) {
        self.durable = durable;
    }

    /// The files of `segment` in the current generation.
    fn paths(&self, segment: u32) -> [PathBuf; 4] {
        segment_paths(&self.dir, self.manifest.generation, segment)
    }

    /// Whether the log has grown enough segments, or enough overrides of
    /// old expansions, to be worth compacting.
    pub fn wants_compaction(&self) -> bool {
        let segments = &self.manifest.segments;
        let overrides: u64 = segments.iter().map(|s| s.overrides_bytes).sum();
        let expansions: u64 = segments.iter().map(|s| s.expansions_bytes).sum();
        segments.len() > MAX_SEGMENTS || overrides * 4 > expansions.max(1 << 16)
    }

    /// Rewrites the whole log as one segment of a new generation, with
    /// every override applied. The old generation's files stay until
    /// [`Exploration::remove_stale_files`]: the owner calls it once it has
    /// durably recorded the new manifest, so a crash in between leaves the
    /// old manifest and its files intact.
    pub fn compact(&mut self) -> Result<()> {
        let generation = self.manifest.generation + 1;
        let [orthos_path, expansions_path, overrides_path, ids_path] =
            segment_paths(&self.dir, generation, 0);
        let mut orthos = Backing::open(&orthos_path, 0)?;
        let mut ids = Backing::open(&ids_path, 0)?;
        let mut expansions = RecordWriter::open(&expansions_path, 0)?;
        let mut overrides = RecordWriter::open(&overrides_path, 0)?;
        let mut count = 0;
        for (segment, extent) in self.manifest.segments.iter().enumerate() {
            let [old_orthos, old_expansions, _, old_ids] = self.paths(segment as u32);
            copy_prefix(&old_ids, extent.orthos * 8, &mut ids)?;
            let changed = self.overrides.get(segment);
            count += copy_segment(
                (&old_orthos, extent.orthos_bytes),
                (&old_expansions, extent.expansions_bytes),
                &mut orthos,
                &mut expansions,
                |index| changed.and_then(|changed| changed.get(&index)).copied(),
            )?;
        }
        orthos.sync(self.durable)?;
        ids.sync(self.durable)?;
        let extent = SegmentExtent {
            orthos_bytes: orthos.len(),
            orthos: count,
            expansions_bytes: expansions.sync(self.durable)?,
            overrides_bytes: overrides.sync(self.durable)?,
        };
        if count != self.manifest.orthos() {
            return Err(Error::storage(
                &orthos_path,
                format!(
                    "compaction copied {count} of {} orthos",
                    self.manifest.orthos()
                ),
            ));
        }
        self.manifest.generation = generation;
        self.manifest.segments = vec![extent];
        self.overrides.clear();
        Ok(())
    }

    /// Removes log files the manifest does not name: older generations, and
    /// segments past the next one (the next may hold a checkpointed search).
    pub fn remove_stale_files(&self) -> Result<()> {
        let next = self.manifest.segments.len() as u32;
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("cannot list {}", self.dir.display()), e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some((generation, segment)) = name.to_str().and_then(parse_segment_path) else {
                continue;
            };
            if generation != self.manifest.generation || segment > next {
                let path = entry.path();
                std::fs::remove_file(&path)
                    .map_err(|e| Error::io(format!("cannot remove {}", path.display()), e))?;
            }
        }
        Ok(())
    }

    /// The manifest as of the last finished version.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The figures as of the last finished version.
    pub fn figures(&self) -> Result<Figures> {
        self.manifest.figures.figures()
    }

    /// The ids of every ortho found.
    pub fn seen(&self) -> &SeenSet {
        &self.seen
    }

    /// Takes the seen set out, leaving an empty one.
    pub fn take_seen(&mut self) -> SeenSet {
        std::mem::take(&mut self.seen)
    }

    fn load_segment(&mut self, segment: u32, extent: &SegmentExtent) -> Result<()> {
        let [orthos, _, overrides, ids] = self.paths(segment);
        let seen = &self.seen;
        let recorded = scan_ids(&ids, extent.orthos, |block| {
            for &id in block {
                seen.insert(id);
            }
        })?;
        if !recorded {
            // No ids file (a log written before they were kept): hash.
            let count = scan_orthos(&orthos, extent.orthos_bytes, |ortho| {
                seen.insert(ortho.id());
            })?;
            if count != extent.orthos {
                return Err(Error::storage(
                    &orthos,
                    format!("holds {count} orthos but {} were recorded", extent.orthos),
                ));
            }
        }
        for (at, expansion) in read_overrides(&overrides, extent.overrides_bytes)? {
            set_override(&mut self.overrides, segment, at, expansion)?;
        }
        Ok(())
    }

    /// Brings the exploration to `interner`'s version, or finishes the
    /// version `resume` was taken in. Returns the figures at that version and
    /// the work this call did.
    pub fn advance(
        &mut self,
        pool: &rayon::ThreadPool,
        config: &SearchConfig,
        interner: &Interner,
        resume: Option<&Checkpoint>,
        observer: &mut dyn SearchObserver,
        checkpoints: &mut dyn Checkpoints,
    ) -> Result<Advanced> {
        let started = Instant::now();
        self.materialize()?;
        let in_memory = self.temporary && self.manifest.segments.is_empty() && resume.is_none();
        let base = self.manifest.version;
        if interner.version() < base {
            return Err(Error::BadState(format!(
                "the stored search is at version {base}, ahead of the interner's {}",
                interner.version()
            )));
        }
        let segment = self.manifest.segments.len() as u32;
        let [orthos_path, expansions_path, overrides_path, ids_path] = self.paths(segment);
        if let Some(checkpoint) = resume {
            if checkpoint.version != interner.version() || checkpoint.base != self.manifest {
                return Err(Error::BadState(format!(
                    "checkpoint of version {} does not continue the stored search at version {base}",
                    checkpoint.version
                )));
            }
            self.load_segment(segment, &checkpoint.segment)?;
        }
        let mut stats = SearchStats::default();
        let mut round = Round {
            config,
            pool,
            interner,
            seen: &self.seen,
            keep_leaves: observer.wants_leaves(),
            stats: &mut stats,
            figures: Figures::default(),
        };
        let (mut queue, mut expansions, mut overrides, mut expanded) = match resume {
            None => {
                round.figures = self.manifest.figures.figures()?;
                let (mut queue, mut overrides) = if in_memory {
                    (
                        OrthoQueue::in_memory(&orthos_path, &ids_path),
                        RecordWriter::in_memory(&overrides_path),
                    )
                } else {
                    (
                        OrthoQueue::open(&orthos_path, &ids_path, 0, 0, 0)?,
                        RecordWriter::open(&overrides_path, 0)?,
                    )
                };
                round.expand_empty(self.scope, &mut queue)?;
                let mut revisits = Revisits::default();
                // Nothing is stored before the first version: no growth to look at.
                let growth = if self.manifest.segments.is_empty() {
                    Growth::default()
                } else {
                    interner.growth_since(base)
                };
                tracing::debug!(elapsed = ?started.elapsed(), nodes = growth.nodes(), "growth");
                for (old, extent) in self.manifest.segments.iter().enumerate() {
                    let [orthos, expansions, _, _] = self.paths(old as u32);
                    let mut known = self.overrides.get(old).into_iter().flatten().peekable();
                    let scanned = scan_segment(
                        (&orthos, extent.orthos_bytes),
                        (&expansions, extent.expansions_bytes),
                        |index, recorded| {
                            while known.next_if(|&(&at, _)| at < index).is_some() {}
                            let current = match known.next_if(|&(&at, _)| at == index) {
                                Some((_, overridden)) => *overridden,
                                // Nearly every ortho is dismissed here, undecoded.
                                None if !recorded
                                    .nodes()
                                    .any(|node| interner.grew_since(PhraseNode(node), base)) =>
                                {
                                    return None;
                                }
                                None => recorded.decode(),
                            };
                            current
                                .watch
                                .may_have_gained(interner, base, &growth)
                                .then_some(current)
                        },
                        |index, ortho, current| {
                            let at = RecordAt {
                                segment: old as u32,
                                index,
                            };
                            revisits.push(at, ortho, current.leaf);
                            if revisits.orthos.len() >= config.batch_size.max(1) {
                                round.revisit(base, &mut revisits, &mut queue, &mut overrides)?;
                            }
                            Ok(())
                        },
                    )?;
                    round.stats.scanned += u64::from(scanned);
                }
                tracing::debug!(elapsed = ?started.elapsed(), "scan done");
                round.revisit(base, &mut revisits, &mut queue, &mut overrides)?;
                // Each stored ortho was scanned once, against the overrides
                // of earlier versions; the new ones apply from now on.
                for (at, expansion) in std::mem::take(&mut revisits.expanded) {
                    set_override(&mut self.overrides, segment, at, expansion)?;
                }
                let expansions = if in_memory {
                    RecordWriter::in_memory(&expansions_path)
                } else {
                    RecordWriter::open(&expansions_path, 0)?
                };
                (queue, expansions, overrides, 0)
            }
            Some(checkpoint) => {
                let extent = &checkpoint.segment;
                round.figures = checkpoint.figures.figures()?;
                let queue = OrthoQueue::open(
                    &orthos_path,
                    &ids_path,
                    extent.orthos_bytes,
                    extent.orthos,
                    checkpoint.expanded,
                )?;
                let expansions = RecordWriter::open(&expansions_path, extent.expansions_bytes)?;
                let overrides = RecordWriter::open(&overrides_path, extent.overrides_bytes)?;
                (queue, expansions, overrides, checkpoint.expanded)
            }
        };

        tracing::debug!(elapsed = ?started.elapsed(), "revisits done");
        // The batch loop: each round expands one batch while, on the other
        // side of a rayon join, the previous round's new orthos are queued
        // and the next batch is popped.
        let batch_size = config.batch_size.max(1);
        let mut pending = Vec::new();
        let mut batch = Vec::new();
        let mut records = Vec::new();
        loop {
            if batch.is_empty() {
                if pending.is_empty() && queue.is_empty() {
                    break;
                }
                push_and_pop(&mut queue, &mut pending, batch_size, &mut batch)?;
                continue;
            }
            let count = batch.len() as u64;
            let mut next = Vec::with_capacity(batch_size);
            let (mut outcome, queued) = pool.install(|| {
                rayon::join(
                    || {
                        expand_batch(
                            batch,
                            interner,
                            0,
                            round.seen,
                            round.keep_leaves,
                            &mut records,
                        )
                    },
                    || push_and_pop(&mut queue, &mut pending, batch_size, &mut next),
                )
            });
            queued?;
            if let Some(error) = outcome.error.take() {
                return Err(error);
            }
            expansions.expansions(&records)?;
            expanded += count;
            round.stats.processed += count;
            round.stats.generated += outcome.generated;
            round.figures.frontier += outcome.leaves;
            round.figures.orthos += outcome.new_orthos.len() as u64;
            round.figures.optimal = better(round.figures.optimal.take(), outcome.best);
            if round.keep_leaves {
                observer.on_leaves(std::mem::take(&mut outcome.leaf_orthos))?;
            }
            pending = outcome.new_orthos;
            batch = next;
            let queued = queue.len() + (pending.len() + batch.len()) as u64;
            round.stats.peak_queue = round.stats.peak_queue.max(queued);
            let progress = Progress {
                orthos: round.figures.orthos,
                processed: round.stats.processed,
                queued,
                frontier: round.figures.frontier,
                optimal: round.figures.optimal.clone(),
                elapsed: started.elapsed(),
            };
            observer.on_batch(&progress)?;
            if checkpoints.due(&progress) {
                for (id, ortho) in pending.drain(..) {
                    queue.push(id, ortho)?;
                }
                let segment = sync(&mut queue, &mut expansions, &mut overrides, self.durable)?;
                checkpoints.save(&Checkpoint {
                    version: interner.version(),
                    base: self.manifest.clone(),
                    segment,
                    expanded,
                    figures: StoredFigures::of(&round.figures),
                })?;
                round.stats.checkpoints += 1;
            }
        }
        let extent = sync(&mut queue, &mut expansions, &mut overrides, self.durable)?;
        round.stats.stored = extent.orthos;
        if in_memory {
            let (orthos, ids) = queue.into_backing()?;
            self.unsaved = Some([
                orthos,
                expansions.into_backing()?,
                overrides.into_backing()?,
                ids,
            ]);
        }
        let figures = round.figures;
        self.manifest.segments.push(extent);
        self.manifest.version = interner.version();
        self.manifest.figures = StoredFigures::of(&figures);
        stats.seen_bytes = self.seen.approx_bytes();
        Ok(Advanced { figures, stats })
    }
}

/// What bringing an exploration to a version found.
#[derive(Clone, Debug)]
pub struct Advanced {
    /// The figures at that version (of the whole search, not only the new part).
    pub figures: Figures,
    /// The work this call did.
    pub stats: SearchStats,
}

impl Drop for Exploration {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Records that ortho `at` now expands as `expansion`; only segments before
/// `segment`, the one being written, can have overrides.
fn set_override(
    overrides: &mut Vec<BTreeMap<u32, Expansion>>,
    segment: u32,
    at: RecordAt,
    expansion: Expansion,
) -> Result<()> {
    if at.segment >= segment {
        return Err(Error::BadState(format!(
            "segment {segment} overrides an ortho of segment {}",
            at.segment
        )));
    }
    let slot = at.segment as usize;
    if overrides.len() <= slot {
        overrides.resize_with(slot + 1, BTreeMap::new);
    }
    overrides[slot].insert(at.index, expansion);
    Ok(())
}

/// Writes a segment's files out (and waits for the disk when `durable`).
fn sync(
    queue: &mut OrthoQueue,
    expansions: &mut RecordWriter,
    overrides: &mut RecordWriter,
    durable: bool,
) -> Result<SegmentExtent> {
    let (orthos_bytes, orthos) = queue.sync(durable)?;
    Ok(SegmentExtent {
        orthos_bytes,
        orthos,
        expansions_bytes: expansions.sync(durable)?,
        overrides_bytes: overrides.sync(durable)?,
    })
}

/// Stored orthos waiting to be expanded again, and the new expansions of
/// those already done.
#[derive(Default)]
struct Revisits {
    at: Vec<RecordAt>,
    orthos: Vec<Ortho>,
    was_leaf: Vec<bool>,
    expanded: Vec<(RecordAt, Expansion)>,
}

impl Revisits {
    fn push(&mut self, at: RecordAt, ortho: Ortho, was_leaf: bool) {
        self.at.push(at);
        self.orthos.push(ortho);
        self.was_leaf.push(was_leaf);
    }
}

/// The state one `advance` threads through its phases.
struct Round<'a> {
    config: &'a SearchConfig,
    pool: &'a rayon::ThreadPool,
    interner: &'a Interner,
    seen: &'a SeenSet,
    keep_leaves: bool,
    stats: &'a mut SearchStats,
    figures: Figures,
}

impl Round<'_> {
    /// Expands the empty ortho, which is never counted, and queues its new
    /// children in scope.
    fn expand_empty(&mut self, scope: Scope, queue: &mut OrthoQueue) -> Result<()> {
        let mut children = Vec::new();
        expand(
            &Ortho::empty(),
            self.interner,
            &mut Scratch::default(),
            |child| {
                let in_scope = match scope {
                    Scope::All => true,
                    Scope::Origin(token) => child.raw_slots()[0] == token.0,
                };
                self.stats.generated += 1;
                let id = child.id();
                if in_scope && self.seen.insert(id) {
                    children.push((id, child));
                }
            },
        )?;
        self.found(children, queue)
    }

    /// Counts and queues new orthos.
    fn found(&mut self, orthos: Vec<(OrthoId, Ortho)>, queue: &mut OrthoQueue) -> Result<()> {
        self.figures.orthos += orthos.len() as u64;
        for (id, ortho) in orthos {
            self.figures.optimal = better(self.figures.optimal.take(), Some(ortho.clone()));
            queue.push(id, ortho)?;
        }
        Ok(())
    }

    /// Expands the stored orthos in `revisits` again, recording their new
    /// expansions as overrides.
    fn revisit(
        &mut self,
        base: u32,
        revisits: &mut Revisits,
        queue: &mut OrthoQueue,
        writer: &mut RecordWriter,
    ) -> Result<()> {
        let mut records = Vec::new();
        let batch_size = self.config.batch_size.max(1);
        while !revisits.orthos.is_empty() {
            let take = revisits.orthos.len().min(batch_size);
            let batch: Vec<Ortho> = revisits.orthos.drain(..take).collect();
            let mut outcome = self.pool.install(|| {
                expand_batch(batch, self.interner, base, self.seen, false, &mut records)
            });
            if let Some(error) = outcome.error.take() {
                return Err(error);
            }
            self.stats.revisited += take as u64;
            self.stats.generated += outcome.generated;
            for ((at, was_leaf), expansion) in revisits
                .at
                .drain(..take)
                .zip(revisits.was_leaf.drain(..take))
                .zip(&records)
            {
                // Candidates only grow, so a leaf may stop being one but
                // never the other way round.
                if was_leaf && !expansion.leaf {
                    self.figures.frontier =
                        self.figures.frontier.checked_sub(1).ok_or_else(|| {
                            Error::BadState("stored leaves do not add up to the frontier".into())
                        })?;
                }
                writer.override_of(at, expansion)?;
                revisits.expanded.push((at, *expansion));
            }
            self.found(outcome.new_orthos, queue)?;
        }
        Ok(())
    }
}

/// Queues `pending` and pops the next batch into `batch`.
fn push_and_pop(
    queue: &mut OrthoQueue,
    pending: &mut Vec<(OrthoId, Ortho)>,
    batch_size: usize,
    batch: &mut Vec<Ortho>,
) -> Result<()> {
    for (id, ortho) in pending.drain(..) {
        queue.push(id, ortho)?;
    }
    queue.pop_batch(batch_size, batch)
}
