//! Phase 2 of a new version (see [`super::exploration`]): the stored
//! history is replayed, its runs in parallel on the search's pool (each
//! run stands on its own, see [`super::history`]), and every stored ortho
//! whose candidates may have grown is expanded again, in record order.
//!
//! Three filters, cheapest first, keep a million records from costing a
//! million expansions: a watch (records list each distinct one once per
//! section, see [`super::records`]) is dismissed unless one of its phrase
//! nodes changed since the stored version; then unless a node gained a
//! token that all its other watched nodes also complete with
//! ([`Watch::may_have_gained`]); the records left are expanded again,
//! keeping only children of candidates that are new (ORTHO.md §6). A run in
//! memory is replayed sparsely ([`super::sparse`]): only the orthos of
//! wanted records are rebuilt, and a section with no wanted watch is passed
//! over whole.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::batch::Batches;
use super::history::{BlockReader, Blocks, RecordAt, Run, RunExtent, RunOnFile, segment_paths};
use super::manifest::SegmentExtent;
use super::records::RawRecord;
use super::replay::{ReplayScratch, replay};
use super::sparse::{Judge, SparseScratch, sparse_replay};
use crate::error::{Error, Result};
use crate::interner::{Growth, Interner, PhraseNode, Version};
use crate::ortho::{Expansion, MAX_PREFIXES, Ortho, Watch};

/// An exploration's stored history, as the scan reads it.
pub(super) struct StoredHistory<'a> {
    pub dir: &'a Path,
    pub generation: u32,
    pub segments: &'a [SegmentExtent],
    /// Per segment, the current expansion of its orthos expanded again since.
    pub overrides: &'a [BTreeMap<u32, Expansion>],
}

impl StoredHistory<'_> {
    /// The files of `segment`.
    pub fn paths(&self, segment: u32) -> [PathBuf; 2] {
        segment_paths(self.dir, self.generation, segment)
    }
}

/// Bytes a run may hold to be replayed in memory, in parallel with others;
/// a longer one (a history written before runs were bounded) is replayed
/// from the file on its own.
const RUN_IN_MEMORY: u64 = 16 << 20;

/// Bytes a history file may hold to be mapped into memory whole before its
/// runs are replayed (they are then replayed where they lie, with no copy);
/// a longer one is read run by run, which bounds the memory it touches.
const FILE_IN_MEMORY: u64 = 64 << 20;

/// Records of the runs replayed in parallel at once (what they find waits
/// in memory until they are all done).
const WAVE_RECORDS: u32 = 1 << 22;

/// A stored ortho to expand again: where its record is, the ortho, and
/// whether it was a leaf.
type Found = (RecordAt, Ortho, bool);

/// Replays every segment of `stored`, expands again the stored orthos whose
/// candidates may have grown since `base`, and adds the children of their
/// new candidates to `roots`. Returns their new expansions, to be recorded
/// as overrides.
///
/// A segment's runs are replayed in parallel, in waves of up to
/// [`WAVE_RECORDS`] records, and what they found is expanded in their order, so the
/// result does not depend on the threads.
pub(super) fn revisit(
    stored: &StoredHistory<'_>,
    batches: &mut Batches<'_>,
    base: Version,
    roots: &mut Vec<Ortho>,
) -> Result<Vec<(RecordAt, Expansion)>> {
    let interner = batches.interner;
    let pool = batches.pool;
    let growth = interner.growth_since(base);
    let grown = GrownNodes::since(interner, base);
    let mut again = Again {
        pending: Vec::new(),
        changed: Vec::new(),
        roots,
        base,
    };
    for (segment, extent) in stored.segments.iter().enumerate() {
        let segment = segment as u32;
        let [path, _] = stored.paths(segment);
        let mut reader = if extent.history_bytes <= FILE_IN_MEMORY {
            BlockReader::open_mapped(&path, extent.history_bytes)?
        } else {
            BlockReader::open(&path, extent.history_bytes)?
        };
        let known: Vec<(u32, Expansion)> = stored
            .overrides
            .get(segment as usize)
            .into_iter()
            .flatten()
            .map(|(&index, &expansion)| (index, expansion))
            .collect();
        let filter = Filter {
            interner,
            base,
            growth: &growth,
            grown: &grown,
            known: &known,
        };
        let mut records = 0u32;
        let mut wave: Vec<(u32, RunExtent)> = Vec::new();
        let mut wave_records = 0;
        while let Some(run) = reader.next_run()? {
            let first = records;
            records = add_records(records, run.records, &path)?;
            if run.len() > RUN_IN_MEMORY {
                again.scan_wave(pool, &filter, segment, &reader, &mut wave, batches)?;
                let blocks = reader.run_on_file(&run);
                let scratch = &mut Scratch::default();
                let read =
                    filter.scan(RunAt::File(blocks), first, scratch, |index, ortho, leaf| {
                        again
                            .pending
                            .push((RecordAt { segment, index }, ortho, leaf));
                        again.expand_if_full(batches)
                    })?;
                check_run(&run, read, &path)?;
                continue;
            }
            wave_records += run.records;
            wave.push((first, run));
            if wave_records >= WAVE_RECORDS {
                again.scan_wave(pool, &filter, segment, &reader, &mut wave, batches)?;
                wave_records = 0;
            }
        }
        again.scan_wave(pool, &filter, segment, &reader, &mut wave, batches)?;
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
    again.expand(batches)?;
    Ok(again.changed)
}

/// Checks that replaying `run` read the records it holds.
fn check_run(run: &RunExtent, read: u32, path: &Path) -> Result<()> {
    if read == run.records {
        return Ok(());
    }
    Err(Error::Damaged {
        path: path.to_owned(),
        detail: format!(
            "the run at byte {} holds {} records but replays as {read}",
            run.start, run.records
        ),
    })
}

fn add_records(records: u32, more: u32, path: &Path) -> Result<u32> {
    records.checked_add(more).ok_or_else(|| Error::Damaged {
        path: path.to_owned(),
        detail: "more records than a segment can hold".into(),
    })
}

/// The phrase nodes that grew since the stored version, as bits (ids past
/// the automaton count as grown): the filter's first question, asked of
/// every watch, answered from a few kilobytes.
struct GrownNodes(Vec<u64>);

impl GrownNodes {
    fn since(interner: &Interner, base: Version) -> Self {
        let states = interner.phrase_states();
        let mut bits = vec![0u64; states.div_ceil(64)];
        // Ids past the automaton in its last word count as grown too.
        for node in 0..bits.len() * 64 {
            if node >= states || interner.grew_since(PhraseNode(node as u32), base) {
                bits[node / 64] |= 1 << (node % 64);
            }
        }
        Self(bits)
    }

    #[inline(always)]
    fn contains(&self, node: u32) -> bool {
        self.0
            .get(node as usize / 64)
            .is_none_or(|bits| bits >> (node % 64) & 1 != 0)
    }
}

/// What decides which stored orthos of one segment are expanded again.
struct Filter<'a> {
    interner: &'a Interner,
    base: Version,
    growth: &'a Growth,
    grown: &'a GrownNodes,
    /// The segment's overrides in record order.
    known: &'a [(u32, Expansion)],
}

impl Filter<'_> {
    /// Replays one run whose first record is `first`, handing each stored
    /// ortho whose candidates may have grown to `found` (its index, the
    /// ortho, whether it was a leaf). Returns the records read.
    fn scan(
        &self,
        run: RunAt<'_, '_>,
        first: u32,
        scratch: &mut Scratch,
        mut found: impl FnMut(u32, Ortho, bool) -> Result<()>,
    ) -> Result<u32> {
        let mut judgement = Judgement {
            filter: self,
            memo: &mut scratch.memo,
            // Overrides are met with a cursor as records pass.
            next_known: self.known.partition_point(|&(index, _)| index < first),
        };
        match run {
            RunAt::Memory(run) => {
                sparse_replay(run, first, &mut scratch.sparse, &mut judgement, found)
            }
            RunAt::File(mut blocks) => {
                let path = blocks.path().to_owned();
                // Whether the record wanted last was a leaf.
                let leaf = std::cell::Cell::new(false);
                let wanted = |index: u32, record: &RawRecord<'_>| match judgement.overridden(index)
                {
                    Some((wanted, was_leaf)) => {
                        leaf.set(was_leaf);
                        wanted
                    }
                    None => {
                        leaf.set(record.leaf());
                        judgement.watch(record)
                    }
                };
                replay(&mut blocks, first, &mut scratch.dense, wanted, |replayed| {
                    let index = replayed.index;
                    let ortho = replayed.ortho().map_err(|detail| Error::Damaged {
                        path: path.clone(),
                        detail: format!("record {index}: {detail}"),
                    })?;
                    found(index, ortho, leaf.get())
                })
            }
        }
    }
}

/// The filter applied to one run's records, as a sparse replay asks it.
struct Judgement<'f> {
    filter: &'f Filter<'f>,
    memo: &'f mut GainMemo,
    /// The first override not yet passed.
    next_known: usize,
}

impl Judgement<'_> {
    /// Whether the ortho watching `nodes` may have gained a candidate.
    fn gained(&mut self, nodes: &[u32]) -> bool {
        let Filter {
            interner,
            base,
            growth,
            ..
        } = *self.filter;
        self.memo.may_have_gained(nodes, interner, base, growth)
    }

    /// Whether a watch some of whose nodes grew may have gained a candidate.
    #[inline(never)]
    fn watch_grown(&mut self, watch: &RawRecord<'_>) -> bool {
        let mut nodes = [0; MAX_PREFIXES];
        let len = watch.read_nodes(&mut nodes);
        self.gained(&nodes[..len])
    }

    /// Moves the override cursor past the overrides of records before `index`.
    #[inline]
    fn pass_overrides_before(&mut self, index: u32) {
        let known = self.filter.known;
        while self.next_known < known.len() && known[self.next_known].0 < index {
            self.next_known += 1;
        }
    }
}

impl Judge for Judgement<'_> {
    #[inline]
    fn watch(&mut self, watch: &RawRecord<'_>) -> bool {
        // Nearly every watch is dismissed here, and the rest (one in six
        // after one sentence) asked of the memo out of line.
        let grown = self.filter.grown;
        watch.any_node(|node| grown.contains(node)) && self.watch_grown(watch)
    }

    fn any_override(&mut self, indices: std::ops::Range<u32>) -> bool {
        self.pass_overrides_before(indices.start);
        let known = self.filter.known;
        self.next_known < known.len() && known[self.next_known].0 < indices.end
    }

    #[inline]
    fn overridden(&mut self, index: u32) -> Option<(bool, bool)> {
        self.pass_overrides_before(index);
        let &(at, expansion) = self.filter.known.get(self.next_known)?;
        if at != index {
            return None;
        }
        Some((self.gained(expansion.watch.nodes()), expansion.leaf))
    }
}

/// A run to scan: read into memory (replayed sparsely), or too long for
/// that and replayed from the file.
enum RunAt<'r, 'f> {
    Memory(&'r Run<'r>),
    File(RunOnFile<'f>),
}

/// The memory scans work in, kept from one run to the next.
#[derive(Default)]
struct Scratch {
    sparse: SparseScratch,
    dense: ReplayScratch,
    /// What the filter found of each watch it judged (the same for every
    /// run of a scan).
    memo: GainMemo,
}

/// The stored orthos found to expand again, and what expanding them gave.
struct Again<'r> {
    pending: Vec<Found>,
    changed: Vec<(RecordAt, Expansion)>,
    roots: &'r mut Vec<Ortho>,
    base: Version,
}

impl Again<'_> {
    /// Replays the runs of `wave` in parallel, then takes what they found
    /// in their order.
    fn scan_wave(
        &mut self,
        pool: &rayon::ThreadPool,
        filter: &Filter<'_>,
        segment: u32,
        reader: &BlockReader,
        wave: &mut Vec<(u32, RunExtent)>,
        batches: &mut Batches<'_>,
    ) -> Result<()> {
        let scanned: Vec<Result<Vec<Found>>> = pool.install(|| {
            wave.par_iter()
                .map_init(
                    || (Vec::new(), Scratch::default()),
                    |(bytes, scratch), (first, extent)| {
                        let run = reader.read_run(extent, std::mem::take(bytes))?;
                        let mut found = Vec::new();
                        let read = filter.scan(
                            RunAt::Memory(&run),
                            *first,
                            scratch,
                            |index, ortho, leaf| {
                                found.push((RecordAt { segment, index }, ortho, leaf));
                                Ok(())
                            },
                        )?;
                        check_run(extent, read, run.path())?;
                        *bytes = run.into_bytes();
                        Ok(found)
                    },
                )
                .collect()
        });
        wave.clear();
        for found in scanned {
            for found in found? {
                self.pending.push(found);
                self.expand_if_full(batches)?;
            }
        }
        Ok(())
    }

    /// Expands the pending orthos once they make a batch.
    fn expand_if_full(&mut self, batches: &mut Batches<'_>) -> Result<()> {
        if self.pending.len() >= batches.batch_size.max(1) {
            self.expand(batches)?;
        }
        Ok(())
    }

    /// Expands the pending stored orthos again, keeping the children of
    /// their new candidates as new roots and their new expansions.
    fn expand(&mut self, batches: &mut Batches<'_>) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let orthos: Vec<Ortho> = self
            .pending
            .iter()
            .map(|(_, ortho, _)| ortho.clone())
            .collect();
        let mut expanded = batches.expand(&orthos, self.base, false)?;
        batches.stats.revisited += orthos.len() as u64;
        for ((at, _, was_leaf), expansion) in self.pending.drain(..).zip(&expanded.expansions) {
            // Candidates only grow, so a leaf may stop being one but never
            // the other way round.
            if was_leaf && !expansion.leaf {
                batches.figures.frontier =
                    batches.figures.frontier.checked_sub(1).ok_or_else(|| {
                        Error::Inconsistent("stored leaves do not add up to the frontier".into())
                    })?;
            }
            self.changed.push((at, *expansion));
        }
        for part in expanded.children.iter_mut() {
            self.roots.append(part);
        }
        Ok(())
    }
}

/// Remembers [`Watch::may_have_gained`] for watches of two or three nodes,
/// which siblings share: a scan asks it of a few hundred thousand records
/// and meets the same watches again and again.
struct GainMemo {
    slots: Vec<([u32; 3], bool)>,
}

impl Default for GainMemo {
    fn default() -> Self {
        Self {
            slots: vec![([u32::MAX; 3], false); Self::SLOTS],
        }
    }
}

impl GainMemo {
    const SLOTS: usize = 1 << 14;

    /// Whether the ortho watching `nodes` may have gained a candidate.
    #[inline]
    fn may_have_gained(
        &mut self,
        nodes: &[u32],
        interner: &Interner,
        base: Version,
        growth: &Growth,
    ) -> bool {
        let decide =
            || Watch::new(nodes).is_none_or(|watch| watch.may_have_gained(interner, base, growth));
        let key = match *nodes {
            [a, b] => [a, b, u32::MAX],
            [a, b, c] => [a, b, c],
            _ => return decide(),
        };
        let hash = (u64::from(key[0]) << 42 ^ u64::from(key[1]) << 21 ^ u64::from(key[2]))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let slot = &mut self.slots[(hash >> 50) as usize];
        if slot.0 != key {
            *slot = (key, decide());
        }
        slot.1
    }
}
