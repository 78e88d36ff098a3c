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

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::backing::Backing;
use super::batch::Batches;
use super::history::{
    BlockKind, BlockReader, BlockWriter, FORMAT_VERSION, RecordAt, get_varint, parse_segment_path,
    read_overrides, segment_paths,
};
use super::manifest::{Checkpoint, Checkpoints, Manifest, SegmentExtent, StoredFigures};
use super::records::rewrite_batch;
use super::replay::{ReplayScratch, replay};
use super::revisit::{StoredHistory, revisit};
use super::version::{Searched, VersionSearch};
use super::{Dedup, Figures, SearchConfig, SearchObserver, SearchStats, SeenSet};
use crate::error::{Error, Result};
use crate::interner::{Interner, Token, Version};
use crate::ortho::{Expansion, Ortho};

/// Which part of the search an exploration covers.
///
/// Every ortho has one canonical parent, so the orthos below any ortho form
/// a closed, disjoint part of the search: its figures add up with those of
/// the other parts to the whole search's, and the whole optimum is the best
/// of theirs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every ortho.
    All,
    /// Only the orthos whose slot 0 holds this token (the token there never
    /// changes as an ortho grows; these are the subtree of `[token, _, _, _]`).
    Origin(Token),
    /// The subtrees below some orthos: a unit of a distributed search.
    Subtrees(Arc<Subtrees>),
}

/// The subtrees below some roots, less the subtrees of some of their
/// descendants (parts handed to other units).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subtrees {
    /// The roots, counted in the part.
    pub roots: Vec<Ortho>,
    /// Descendants whose subtrees belong elsewhere: never accepted here.
    pub excluded: HashSet<Ortho>,
}

/// Segments a history may have before it is compacted into one.
const MAX_SEGMENTS: usize = 8;

/// What bringing an exploration to a version found.
#[derive(Clone, Debug)]
pub struct AdvanceOutcome {
    /// The figures at that version (of the whole search, not only the new
    /// part; without the orthos handed off).
    pub figures: Figures,
    /// The work this call did.
    pub stats: SearchStats,
    /// The orthos found but not expanded that the observer handed to other
    /// searches ([`SearchObserver::hand_off`]), in the order they went: they
    /// and their subtrees belong to other searches now.
    pub handed_off: Vec<Ortho>,
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
            let changed = read_overrides(&overrides, extent.overrides_bytes)?;
            set_overrides(&mut exploration.overrides, segment as u32, changed)?;
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

    /// The history file of `segment` and its recorded length.
    #[cfg(test)]
    pub(super) fn history_file(&self, segment: u32) -> (PathBuf, u64) {
        let [path, _] = self.paths(segment);
        (path, self.manifest.segments[segment as usize].history_bytes)
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
                if kind == BlockKind::Roots || kind == BlockKind::Handoff {
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
                    payload,
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
    ) -> Result<AdvanceOutcome> {
        if let Some(advanced) = self.already_at(interner)? {
            return Ok(advanced);
        }
        self.materialize()?;
        let incremental = self.manifest.history && self.manifest.version > Version::ZERO;
        self.prepare_seen_set(config.dedup, incremental)?;
        let segment = self.manifest.segments.len() as u32;
        let paths = self.paths(segment);
        let excluded = match &self.scope {
            Scope::Subtrees(part) if !part.excluded.is_empty() => Some(&part.excluded),
            _ => None,
        };
        let batches = Batches {
            pool,
            interner,
            batch_size: config.batch_size,
            dedup: config.dedup,
            seen: self.seen.as_ref(),
            excluded,
            keep_leaves: observer.wants_leaves(),
            keep_orthos: observer.wants_orthos(),
            figures: Figures::default(),
            stats: SearchStats::default(),
        };
        let mut search = match resume {
            Some(checkpoint) => {
                let changed = self.resumed_overrides(interner, checkpoint, &paths)?;
                set_overrides(&mut self.overrides, segment, changed)?;
                VersionSearch::resume(batches, &paths, self.manifest.history, checkpoint)?
            }
            None => {
                let mut search = self.start_version(batches, &paths, incremental)?;
                // Phase 1: new first words.
                let mut roots = self.new_roots(interner, incremental);
                // Phase 2: stored orthos whose candidates grew.
                if incremental {
                    let changed = self.revisit_grown(&mut search, &mut roots)?;
                    set_overrides(&mut self.overrides, segment, changed)?;
                }
                search.plant(roots)?;
                search
            }
        };
        // Phase 3: everything below.
        search.search(
            observer,
            checkpoints,
            interner.version(),
            &self.manifest,
            self.durable,
        )?;
        let searched = search.finish(self.durable)?;
        let keep_in_memory = self.temporary && segment == 0 && resume.is_none();
        Ok(self.record_version(interner, searched, keep_in_memory))
    }

    /// What [`Exploration::advance`] answers without searching: the stored
    /// figures when the exploration is at `interner`'s version already (and
    /// past version 0), an error when it is ahead of it, and `None` when
    /// there is a version to search.
    fn already_at(&self, interner: &Interner) -> Result<Option<AdvanceOutcome>> {
        let base = self.manifest.version;
        if interner.version() < base {
            return Err(Error::Inconsistent(format!(
                "the stored search is at version {base}, ahead of the interner's {}",
                interner.version()
            )));
        }
        if interner.version() == base && base > Version::ZERO {
            return Ok(Some(AdvanceOutcome {
                figures: self.figures()?,
                stats: SearchStats::default(),
                handed_off: Vec::new(),
            }));
        }
        Ok(None)
    }

    /// Checks that `checkpoint` continues the stored search, and reads the
    /// stored orthos its version expanded again (all before its first
    /// checkpoint): later versions of this process must see them, as a
    /// reopened exploration would.
    fn resumed_overrides(
        &self,
        interner: &Interner,
        checkpoint: &Checkpoint,
        paths: &[PathBuf; 2],
    ) -> Result<Vec<(RecordAt, Expansion)>> {
        let base = self.manifest.version;
        if checkpoint.version != interner.version() || checkpoint.base != self.manifest {
            return Err(Error::Inconsistent(format!(
                "checkpoint of version {} does not continue the stored search at version {base}",
                checkpoint.version
            )));
        }
        if self.manifest.history && checkpoint.segment.overrides_bytes > 0 {
            return read_overrides(&paths[1], checkpoint.segment.overrides_bytes);
        }
        Ok(Vec::new())
    }

    /// A version searched from its start, writing the next segment at
    /// `paths`: its figures start from the stored version's when
    /// `incremental`, and a temporary exploration's first segment stays in
    /// memory while it is small.
    fn start_version<'a>(
        &self,
        batches: Batches<'a>,
        paths: &[PathBuf; 2],
        incremental: bool,
    ) -> Result<VersionSearch<'a>> {
        let segment = self.manifest.segments.len();
        let in_memory = self.temporary && segment == 0;
        let figures = if incremental {
            self.figures()?
        } else {
            Figures::default()
        };
        VersionSearch::start(batches, paths, self.manifest.history, in_memory, figures)
    }

    /// Phase 2: expands again the stored orthos whose candidates grew,
    /// adding the children of their new candidates to `roots`. Returns their
    /// new expansions, already recorded in the version's overrides file.
    fn revisit_grown(
        &self,
        search: &mut VersionSearch<'_>,
        roots: &mut Vec<Ortho>,
    ) -> Result<Vec<(RecordAt, Expansion)>> {
        let base = self.manifest.version;
        let changed = revisit(&self.stored(), &mut search.batches, base, roots)?;
        search.record_overrides(&changed)?;
        Ok(changed)
    }

    /// Records the version `searched` found in the manifest: its segment
    /// (whose files stay in memory when `keep_in_memory`), the interner's
    /// version and vocabulary, and the figures.
    fn record_version(
        &mut self,
        interner: &Interner,
        searched: Searched,
        keep_in_memory: bool,
    ) -> AdvanceOutcome {
        if let Some((extent, files)) = searched.segment {
            if keep_in_memory {
                self.unsaved = Some(files);
            }
            self.manifest.segments.push(extent);
        }
        self.manifest.version = interner.version();
        self.manifest.vocabulary = interner.vocabulary() as u32;
        self.manifest.figures = StoredFigures::of(&searched.figures);
        self.manifest.format = FORMAT_VERSION;
        AdvanceOutcome {
            figures: searched.figures,
            stats: searched.stats,
            handed_off: searched.handed_off,
        }
    }

    /// The stored history, as a scan reads it.
    fn stored(&self) -> StoredHistory<'_> {
        StoredHistory {
            dir: &self.dir,
            generation: self.manifest.generation,
            segments: &self.manifest.segments,
            overrides: &self.overrides,
        }
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
        match &self.scope {
            Scope::All => (known..vocabulary).map(root).collect(),
            &Scope::Origin(Token(origin)) if origin >= known && origin < vocabulary => {
                vec![root(origin)]
            }
            Scope::Origin(_) => Vec::new(),
            // A part's roots are planted once; later versions only revisit.
            Scope::Subtrees(part) if !incremental => part
                .roots
                .iter()
                .filter(|root| !part.excluded.contains(*root))
                .cloned()
                .collect(),
            Scope::Subtrees(_) => Vec::new(),
        }
    }

    /// Seen-set mode: makes sure the seen set holds every stored ortho (and
    /// in tree mode, that there is none).
    fn prepare_seen_set(&mut self, dedup: Dedup, incremental: bool) -> Result<()> {
        if dedup == Dedup::Tree {
            self.seen = None;
            return Ok(());
        }
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
            let mut reader = BlockReader::open(&path, extent.history_bytes)?;
            replay(
                &mut reader,
                0,
                &mut ReplayScratch::default(),
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

impl Drop for Exploration {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Records that the stored orthos of `changed` now expand as given; only
/// segments before `segment`, the one being written, can have overrides.
fn set_overrides(
    overrides: &mut Vec<BTreeMap<u32, Expansion>>,
    segment: u32,
    changed: Vec<(RecordAt, Expansion)>,
) -> Result<()> {
    for (at, expansion) in changed {
        if at.segment >= segment {
            return Err(Error::Inconsistent(format!(
                "segment {segment} overrides an ortho of segment {}",
                at.segment
            )));
        }
        if overrides.len() <= at.segment as usize {
            overrides.resize_with(at.segment as usize + 1, BTreeMap::new);
        }
        overrides[at.segment as usize].insert(at.index, expansion);
    }
    Ok(())
}
