//! A search that lives across versions (ORTHO.md §6, incremental ingestion).
//!
//! An [`Exploration`] keeps the history of everything it found (see
//! [`super::history`]). Bringing it to a new interner version costs only what
//! the version makes new, in three phases that [`Exploration::advance`] runs:
//!
//! 1. **new roots** — the empty ortho's children for the tokens the version
//!    added (in scope);
//! 2. **revisits** — the history is replayed, and every stored ortho one of
//!    whose watched phrase nodes grew in a way that can give it a candidate
//!    is expanded again, keeping only the children of candidates new in this
//!    version (a leaf that gains one stops being a leaf);
//! 3. **search** — everything below those children and roots is searched as
//!    usual, depth-first, and recorded as the version's segment.
//!
//! Every other stored ortho has exactly the candidates it had, and a child
//! new in this version comes from a new ortho or through a new candidate
//! (its canonical parent does not depend on the version), so the figures
//! equal a fresh search. In seen-set mode the same phases run with the ids
//! of every stored ortho in a seen set instead.
//!
//! During phase 3 the exploration can checkpoint: the history files are
//! synced and their lengths, the figures and the pending orthos recorded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::backing::Backing;
use super::batch::Batches;
use super::history::{
    BlockKind, BlockReader, BlockWriter, FORMAT_VERSION, RawRecord, RecordAt,
    decode_checked_orthos, encode_checked_orthos, get_varint, parse_segment_path, read_overrides,
    rewrite_batch, segment_paths,
};
use super::replay::replay;
use super::{Dedup, Figures, Progress, SearchConfig, SearchObserver, SearchStats, SeenSet};
use crate::error::{Error, Result};
use crate::interner::{Growth, Interner, PhraseNode, Token};
use crate::ortho::{Expansion, Ortho, Watch};
use crate::spatial::shapes;

/// Which part of the search an exploration covers.
///
/// The token in slot 0 never changes as an ortho grows or reshapes, so the
/// orthos with one origin token form a closed sub-search: the shards of a
/// distributed search. Their figures add up to the whole search's, and the
/// whole optimum is the best of theirs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every ortho.
    All,
    /// Only the orthos whose slot 0 holds this token.
    Origin(Token),
}

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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The history format of the files ([`FORMAT_VERSION`]).
    pub format: u32,
    /// The interner version the figures are for (0: nothing searched).
    pub version: u32,
    /// The vocabulary at `version`: tokens from it on are new to a later one.
    pub vocabulary: u32,
    /// Whether the history is kept (otherwise each version is searched afresh).
    pub history: bool,
    /// One extent per searched version since the last compaction, oldest first.
    pub segments: Vec<SegmentExtent>,
    /// The figures at `version`.
    figures: StoredFigures,
    /// Compactions so far; the history's file names carry it.
    pub generation: u32,
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            format: FORMAT_VERSION,
            version: 0,
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

/// Segments a history may have before it is compacted into one.
const MAX_SEGMENTS: usize = 8;

/// A consistent point inside a version's search: resuming from it loses only
/// the work done after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The version being searched.
    pub version: u32,
    /// The manifest the search started from.
    pub base: Manifest,
    /// How far the version's own segment was written; `records` is the
    /// number of orthos of the version already expanded.
    pub segment: SegmentExtent,
    /// Figures so far.
    figures: StoredFigures,
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

/// What bringing an exploration to a version found.
#[derive(Clone, Debug)]
pub struct Advanced {
    /// The figures at that version (of the whole search, not only the new part).
    pub figures: Figures,
    /// The work this call did.
    pub stats: SearchStats,
}

/// Everything found so far, as a history on disk.
pub struct Exploration {
    dir: PathBuf,
    scope: Scope,
    manifest: Manifest,
    /// Per segment, the current expansion of its orthos expanded again since.
    overrides: Vec<BTreeMap<u32, Expansion>>,
    /// Seen-set mode: the ids of every ortho found, once built.
    seen: Option<SeenSet>,
    /// Whether the directory is removed on drop.
    temporary: bool,
    /// The files of a temporary exploration's only segment, possibly still
    /// in memory.
    unsaved: Option<[Backing; 2]>,
    /// Whether files are synced to disk at checkpoints and versions.
    durable: bool,
}

impl Exploration {
    /// Starts an empty exploration in `dir`, removing whatever was there.
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
            seen: None,
            temporary,
            unsaved: None,
            durable: !temporary,
        }
    }

    /// Starts an exploration for one search, in a directory under `parent`
    /// that is removed when it is dropped (unless [`Exploration::persist`]
    /// moves it). Nothing is synced, and its history stays in memory while
    /// it is small, so a small search touches no disk.
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

    /// Keeps no history from now on: every later version is searched
    /// afresh, and only checkpoints touch the disk.
    pub fn discard_history(&mut self) {
        self.manifest.history = false;
        self.manifest.segments.clear();
        self.overrides.clear();
        self.unsaved = None;
    }

    /// Moves the exploration to `dir` (which must not exist), where it
    /// stays when dropped and can be reopened with its manifest.
    pub fn persist(&mut self, dir: &Path) -> Result<()> {
        let fail = |e| Error::io(format!("cannot create {}", dir.display()), e);
        let old = std::mem::replace(&mut self.dir, dir.to_owned());
        if self.unsaved.is_some() || !old.exists() {
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
            for (file, path) in files.iter_mut().zip(self.paths(0)) {
                file.persist(&path)?;
            }
        }
        Ok(())
    }

    /// Reopens the exploration in `dir` as `manifest` describes it. Files of
    /// later segments are removed, except those of the next one, which a
    /// checkpoint may resume (and which a new version starts afresh).
    pub fn open(dir: &Path, scope: Scope, manifest: Manifest) -> Result<Self> {
        if manifest.format != FORMAT_VERSION && !manifest.segments.is_empty() {
            return Err(Error::BadState(format!(
                "the search history in {} is in format {}; this build reads format {FORMAT_VERSION}",
                dir.display(),
                manifest.format
            )));
        }
        let mut exploration = Self::empty(dir.to_owned(), scope, manifest, false);
        for (segment, extent) in exploration.manifest.segments.iter().enumerate() {
            let [_, overrides] = exploration.paths(segment as u32);
            for (at, expansion) in read_overrides(&overrides, extent.overrides_bytes)? {
                set_override(&mut exploration.overrides, segment as u32, at, expansion)?;
            }
        }
        exploration.remove_stale_files()?;
        Ok(exploration)
    }

    /// Whether versions and checkpoints wait for the disk (they do unless
    /// turned off: a history that is only a cache can skip it, since a
    /// crashed process's writes survive it anyway).
    pub fn set_durable(&mut self, durable: bool) {
        self.durable = durable;
    }

    /// The files of `segment` in the current generation.
    fn paths(&self, segment: u32) -> [PathBuf; 2] {
        segment_paths(&self.dir, self.manifest.generation, segment)
    }

    /// The manifest as of the last finished version.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The figures as of the last finished version.
    pub fn figures(&self) -> Result<Figures> {
        self.manifest.figures.figures()
    }

    /// Whether the history has grown enough segments, or enough overrides of
    /// old expansions, to be worth compacting.
    pub fn wants_compaction(&self) -> bool {
        let segments = &self.manifest.segments;
        let overrides: u64 = segments.iter().map(|s| s.overrides_bytes).sum();
        let history: u64 = segments.iter().map(|s| s.history_bytes).sum();
        segments.len() > MAX_SEGMENTS || overrides * 4 > history.max(1 << 16)
    }

    /// Rewrites the whole history as one segment of a new generation, with
    /// every override applied. The old generation's files stay until
    /// [`Exploration::remove_stale_files`]: the owner calls it once it has
    /// durably recorded the new manifest, so a crash in between leaves the
    /// old manifest and its files intact.
    pub fn compact(&mut self) -> Result<()> {
        self.materialize()?;
        let generation = self.manifest.generation + 1;
        let [history_path, overrides_path] = segment_paths(&self.dir, generation, 0);
        let mut history = BlockWriter::create(&history_path, false)?;
        let mut overrides = BlockWriter::create(&overrides_path, false)?;
        let mut records = 0;
        let mut block = Vec::new();
        for (segment, extent) in self.manifest.segments.iter().enumerate() {
            let [path, _] = self.paths(segment as u32);
            let mut reader = BlockReader::open(&path, extent.history_bytes)?;
            let changed = self.overrides.get(segment);
            let mut index = 0u32;
            while let Some((kind, payload, at)) = reader.next()? {
                let damaged = |detail: &str| Error::Damaged {
                    path: path.clone(),
                    detail: format!("at byte {at}: {detail}"),
                };
                if kind == BlockKind::Overrides {
                    return Err(damaged("an overrides block in a history file"));
                }
                if kind == BlockKind::Roots {
                    history.raw(kind, payload)?;
                    continue;
                }
                let mut bytes = payload;
                let count = get_varint(&mut bytes).ok_or_else(|| damaged("bad count"))?;
                let end = index + count;
                let touched =
                    changed.is_some_and(|changed| changed.range(index..end).next().is_some());
                if !touched {
                    history.raw(kind, payload)?;
                    index = end;
                    continue;
                }
                block.clear();
                rewrite_batch(
                    bytes,
                    count,
                    |at| changed.and_then(|c| c.get(&(index + at))).copied(),
                    &mut block,
                )
                .map_err(damaged)?;
                index = end;
                history.raw(kind, &block)?;
            }
            if u64::from(index) != extent.records {
                return Err(Error::Damaged {
                    path,
                    detail: format!("holds {index} records but {} were recorded", extent.records),
                });
            }
            records += extent.records;
        }
        let extent = SegmentExtent {
            history_bytes: history.sync(self.durable)?,
            records,
            overrides_bytes: overrides.sync(self.durable)?,
        };
        self.manifest.generation = generation;
        self.manifest.segments = vec![extent];
        self.overrides.clear();
        Ok(())
    }

    /// Removes history files the manifest does not name: older generations,
    /// and segments past the next one (the next may hold a checkpointed search).
    pub fn remove_stale_files(&self) -> Result<()> {
        let next = self.manifest.segments.len() as u32;
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("cannot list {}", self.dir.display()), e)),
        };
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
        let base = self.manifest.version;
        if interner.version() < base {
            return Err(Error::BadState(format!(
                "the stored search is at version {base}, ahead of the interner's {}",
                interner.version()
            )));
        }
        if interner.version() == base && base > 0 {
            return Ok(Advanced {
                figures: self.figures()?,
                stats: SearchStats::default(),
            });
        }
        self.materialize()?;
        let incremental = self.manifest.history && base > 0;
        if !self.manifest.history {
            self.seen = None;
        }
        if config.dedup == Dedup::SeenSet {
            self.fill_seen_set(incremental)?;
        } else {
            self.seen = None;
        }
        let segment = self.manifest.segments.len() as u32;
        let [history_path, overrides_path] = self.paths(segment);
        let in_memory = self.temporary && segment == 0 && resume.is_none();
        let mut batches = Batches {
            pool,
            interner,
            batch_size: config.batch_size,
            dedup: config.dedup,
            seen: self.seen.as_ref(),
            keep_leaves: observer.wants_leaves(),
            keep_orthos: observer.wants_orthos(),
            figures: Figures::default(),
            stats: SearchStats::default(),
        };
        let keep = self.manifest.history;
        let (mut history, mut overrides, mut stack, resumed_after) = match resume {
            Some(checkpoint) => {
                if checkpoint.version != interner.version() || checkpoint.base != self.manifest {
                    return Err(Error::BadState(format!(
                        "checkpoint of version {} does not continue the stored search at version {base}",
                        checkpoint.version
                    )));
                }
                let extent = &checkpoint.segment;
                let stack = decode_checked_orthos(&checkpoint.pending).map_err(|detail| {
                    Error::Damaged {
                        path: self.dir.clone(),
                        detail: format!("the checkpoint's pending orthos: {detail}"),
                    }
                })?;
                batches.figures = checkpoint.figures.figures()?;
                let history = keep
                    .then(|| BlockWriter::reopen(&history_path, extent.history_bytes))
                    .transpose()?;
                let overrides = keep
                    .then(|| BlockWriter::reopen(&overrides_path, extent.overrides_bytes))
                    .transpose()?;
                (history, overrides, stack, extent.records)
            }
            None => {
                if incremental {
                    batches.figures = self.figures()?;
                }
                let mut history = keep
                    .then(|| BlockWriter::create(&history_path, in_memory))
                    .transpose()?;
                let mut overrides = keep
                    .then(|| BlockWriter::create(&overrides_path, in_memory))
                    .transpose()?;
                let mut roots = self.new_roots(interner, incremental);
                if let Some(seen) = batches.seen {
                    roots.retain(|root| seen.insert(root.id()));
                }
                if incremental {
                    let changed = self.revisit(&mut batches, base, &mut roots)?;
                    if let Some(overrides) = overrides.as_mut() {
                        overrides.overrides(&changed)?;
                    }
                    for (at, expansion) in changed {
                        set_override(&mut self.overrides, segment, at, expansion)?;
                    }
                }
                tracing::debug!(elapsed = ?started.elapsed(), roots = roots.len(), "revisits done");
                let mut listed = Vec::new();
                batches.found(&roots, &mut listed);
                if !listed.is_empty() {
                    observer.on_orthos(&listed)?;
                }
                if let Some(history) = history.as_mut() {
                    history.roots(&roots)?;
                }
                (history, overrides, roots, 0)
            }
        };

        let base_manifest = self.manifest.clone();
        let durable = self.durable;
        let version = interner.version();
        batches.run(
            &mut stack,
            history.as_mut(),
            |batches, stack, pushed, leaves, history| {
                if batches.keep_leaves {
                    observer.on_leaves(leaves)?;
                }
                if batches.keep_orthos {
                    observer.on_orthos(&stack[stack.len() - pushed..])?;
                }
                let progress = Progress {
                    orthos: batches.figures.orthos,
                    processed: batches.stats.processed,
                    queued: stack.len() as u64,
                    frontier: batches.figures.frontier,
                    optimal: batches.figures.optimal.clone(),
                    elapsed: started.elapsed(),
                };
                observer.on_batch(&progress)?;
                if checkpoints.due(&progress) {
                    let segment = SegmentExtent {
                        history_bytes: sync(history, durable)?,
                        records: resumed_after + batches.stats.processed,
                        overrides_bytes: sync(overrides.as_mut(), durable)?,
                    };
                    checkpoints.save(&Checkpoint {
                        version,
                        base: base_manifest.clone(),
                        segment,
                        figures: StoredFigures::of(&batches.figures),
                        pending: encode_checked_orthos(stack),
                    })?;
                    batches.stats.checkpoints += 1;
                }
                Ok(())
            },
        )?;
        let mut stats = std::mem::take(&mut batches.stats);
        let figures = std::mem::take(&mut batches.figures);
        stats.stored = stats.processed;
        if let (Some(mut history), Some(mut overrides)) = (history, overrides) {
            let extent = SegmentExtent {
                history_bytes: history.sync(self.durable)?,
                records: resumed_after + stats.processed,
                overrides_bytes: overrides.sync(self.durable)?,
            };
            if in_memory {
                self.unsaved = Some([history.into_backing(), overrides.into_backing()]);
            }
            self.manifest.segments.push(extent);
        }
        self.manifest.version = interner.version();
        self.manifest.vocabulary = interner.vocabulary() as u32;
        self.manifest.figures = StoredFigures::of(&figures);
        self.manifest.format = FORMAT_VERSION;
        Ok(Advanced { figures, stats })
    }

    /// The orthos new in this version that no stored ortho leads to: the
    /// empty ortho's children (in scope) for the tokens added since the
    /// stored version (all tokens when searching afresh).
    fn new_roots(&self, interner: &Interner, incremental: bool) -> Vec<Ortho> {
        let known = if incremental {
            self.manifest.vocabulary
        } else {
            0
        };
        let vocabulary = interner.vocabulary() as u32;
        let root = |token: u32| {
            Ortho::new(&[2, 2], &[Some(Token(token)), None, None, None]).expect("a start ortho")
        };
        match self.scope {
            Scope::All => (known..vocabulary).map(root).collect(),
            Scope::Origin(Token(origin)) if origin >= known && origin < vocabulary => {
                vec![root(origin)]
            }
            Scope::Origin(_) => Vec::new(),
        }
    }

    /// Phase 2: replays every segment, expands again the stored orthos whose
    /// candidates may have grown since `base`, and adds the children of their
    /// new candidates to `roots`. Returns their new expansions, to be
    /// recorded as overrides.
    fn revisit(
        &self,
        batches: &mut Batches<'_>,
        base: u32,
        roots: &mut Vec<Ortho>,
    ) -> Result<Vec<(RecordAt, Expansion)>> {
        let interner = batches.interner;
        let growth = interner.growth_since(base);
        let batch_size = batches.batch_size.max(1);
        let mut pending: Vec<(RecordAt, Ortho, bool)> = Vec::new();
        let mut changed = Vec::new();
        let mut memo = GainMemo::default();
        for (segment, extent) in self.manifest.segments.iter().enumerate() {
            let [path, _] = self.paths(segment as u32);
            let reader = BlockReader::open(&path, extent.history_bytes)?;
            // Overrides in record order, met with a cursor as records pass.
            let known: Vec<(u32, Expansion)> = self
                .overrides
                .get(segment)
                .into_iter()
                .flatten()
                .map(|(&index, &expansion)| (index, expansion))
                .collect();
            let mut next_known = 0;
            // The expansion the filter found wanting, for the visit after it.
            let current = std::cell::Cell::new(Expansion::default());
            let wanted = |index: u32, record: &RawRecord<'_>| {
                let mut overridden = None;
                if next_known < known.len() && known[next_known].0 <= index {
                    while next_known < known.len() && known[next_known].0 < index {
                        next_known += 1;
                    }
                    if next_known < known.len() && known[next_known].0 == index {
                        overridden = Some(known[next_known].1);
                    }
                }
                let expansion = match overridden {
                    Some(overridden) => overridden,
                    // Nearly every ortho is dismissed here, its record undecoded.
                    None if !record
                        .nodes()
                        .any(|node| interner.grew_since(PhraseNode(node), base)) =>
                    {
                        return false;
                    }
                    None => record.expansion(),
                };
                current.set(expansion);
                memo.may_have_gained(&expansion.watch, interner, base, &growth)
            };
            let records = replay(reader, wanted, |replayed| {
                let index = replayed.index;
                let at = RecordAt {
                    segment: segment as u32,
                    index,
                };
                let ortho = replayed.ortho().map_err(|detail| Error::Damaged {
                    path: path.clone(),
                    detail: format!("record {index}: {detail}"),
                })?;
                pending.push((at, ortho, current.get().leaf));
                if pending.len() >= batch_size {
                    revisit_batch(batches, base, &mut pending, roots, &mut changed)?;
                }
                Ok(())
            })?;
            if u64::from(records) != extent.records {
                return Err(Error::Damaged {
                    path,
                    detail: format!(
                        "holds {records} records but {} were recorded",
                        extent.records
                    ),
                });
            }
            batches.stats.scanned += u64::from(records);
        }
        revisit_batch(batches, base, &mut pending, roots, &mut changed)?;
        Ok(changed)
    }

    /// Seen-set mode: makes sure the seen set holds every stored ortho.
    fn fill_seen_set(&mut self, incremental: bool) -> Result<()> {
        if !incremental {
            self.seen = Some(SeenSet::new());
            return Ok(());
        }
        if self.seen.is_some() {
            return Ok(());
        }
        let seen = SeenSet::new();
        for (segment, extent) in self.manifest.segments.iter().enumerate() {
            let [path, _] = self.paths(segment as u32);
            let reader = BlockReader::open(&path, extent.history_bytes)?;
            replay(
                reader,
                |_, _| true,
                |replayed| {
                    let ortho = replayed.ortho().map_err(|detail| Error::Damaged {
                        path: path.clone(),
                        detail: format!("record {}: {detail}", replayed.index),
                    })?;
                    seen.insert(ortho.id());
                    Ok(())
                },
            )?;
        }
        self.seen = Some(seen);
        Ok(())
    }
}

/// Remembers [`Watch::may_have_gained`] for watches of two nodes, which
/// siblings share: a scan asks it of a few hundred thousand records and
/// meets the same pairs again and again.
struct GainMemo {
    slots: Vec<(u32, u32, bool)>,
}

impl Default for GainMemo {
    fn default() -> Self {
        Self {
            slots: vec![(u32::MAX, u32::MAX, false); Self::SLOTS],
        }
    }
}

impl GainMemo {
    const SLOTS: usize = 1 << 14;

    fn may_have_gained(
        &mut self,
        watch: &Watch,
        interner: &Interner,
        base: u32,
        growth: &Growth,
    ) -> bool {
        let &[a, b] = watch.nodes() else {
            return watch.may_have_gained(interner, base, growth);
        };
        let hash = (u64::from(a) << 32 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let slot = &mut self.slots[(hash >> 50) as usize];
        if (slot.0, slot.1) != (a, b) {
            *slot = (a, b, watch.may_have_gained(interner, base, growth));
        }
        slot.2
    }
}

/// Expands the stored orthos in `pending` again, keeping the children of
/// their new candidates as new roots and their new expansions.
fn revisit_batch(
    batches: &mut Batches<'_>,
    base: u32,
    pending: &mut Vec<(RecordAt, Ortho, bool)>,
    roots: &mut Vec<Ortho>,
    changed: &mut Vec<(RecordAt, Expansion)>,
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let orthos: Vec<Ortho> = pending.iter().map(|(_, ortho, _)| ortho.clone()).collect();
    let mut expanded = batches.expand(&orthos, base, false)?;
    batches.stats.revisited += orthos.len() as u64;
    for ((at, _, was_leaf), expansion) in pending.drain(..).zip(&expanded.expansions) {
        // Candidates only grow, so a leaf may stop being one but never the
        // other way round.
        if was_leaf && !expansion.leaf {
            batches.figures.frontier =
                batches.figures.frontier.checked_sub(1).ok_or_else(|| {
                    Error::BadState("stored leaves do not add up to the frontier".into())
                })?;
        }
        changed.push((at, *expansion));
    }
    for part in expanded.children.iter_mut() {
        roots.append(part);
    }
    Ok(())
}

/// Syncs a history file, if there is one; returns its length (0 if none).
fn sync(writer: Option<&mut BlockWriter>, durable: bool) -> Result<u64> {
    writer.map_or(Ok(0), |writer| writer.sync(durable))
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
