//! Replaying one run of a history without reading what nobody asks for:
//! the replay a new version's scan uses (see [`super::revisit`]), where a
//! handful of records in a million are wanted.
//!
//! The full replay ([`super::replay`]) pushes every record's children to
//! know, for each later record, the ortho it is of. This one keeps the
//! pending stack as *spans*: "children `start..start + len` of batch `b`"
//! (or of the run's roots). A batch block pops its records' spans off the
//! top and pushes one span for all the children it lists, whose number its
//! header gives, so its children column is not read. Every record's
//! expansion is still shown to `wanted`; only for a wanted record is its
//! ortho built, by walking up: the span entry it was popped as names the
//! batch that listed it and its place among that batch's children, and
//! decoding that batch's children column (once per batch) names its parent
//! record and step, up to a root.
//!
//! Both replays see the same records with the same indices and build the
//! same orthos (a test below compares them on real searches). A children
//! column is checked when it is decoded; the others rest on the block
//! checksums.

use std::collections::{HashMap, VecDeque};

use super::history::{BlockKind, Run, decode_roots, get_varint};
use super::records::{
    BatchPayload, RawRecord, child_step, flags_leaf, read_section_with, section_pair,
};
use crate::error::{Error, Result};
use crate::ortho::{Ortho, Step};

/// The [`Span::source`] of the run's roots.
const ROOTS: u32 = u32::MAX;

/// Consecutive entries of the pending stack: children `start..start + len`
/// of the run's batch number `source` (or roots, when [`ROOTS`]).
#[derive(Clone, Copy, Debug)]
struct Span {
    source: u32,
    start: u32,
    len: u32,
}

/// A listed child of a decoded batch: the record that listed it and its
/// step.
#[derive(Clone, Copy)]
struct Child {
    record: u32,
    step: Step,
}

/// A batch block met in the run: its payload, and the spans its records
/// were popped as (a range of [`SparseScratch::popped`]), bottom first.
struct BatchMet<'a> {
    payload: &'a [u8],
    popped: std::ops::Range<usize>,
}

/// The memory a sparse replay works in, kept from one run to the next.
#[derive(Default)]
pub(crate) struct SparseScratch {
    stack: SpanStack,
    /// Whether each watch of the current section is wanted.
    verdicts: Vec<bool>,
    popped: Vec<Span>,
    decoded: HashMap<u32, Vec<Child>>,
    chain: Vec<Step>,
}

/// The pending stack as spans, bottom first.
#[derive(Default)]
struct SpanStack {
    spans: VecDeque<Span>,
    len: u64,
}

impl SpanStack {
    fn clear(&mut self) {
        self.spans.clear();
        self.len = 0;
    }

    fn push(&mut self, span: Span) {
        if span.len > 0 {
            self.len += u64::from(span.len);
            self.spans.push_back(span);
        }
    }

    /// Takes the top `count` entries (no more than it holds) off the stack
    /// onto `out`, bottom first.
    fn pop_top(&mut self, count: u32, out: &mut Vec<Span>) {
        let mut need = count;
        let mut from = self.spans.len();
        let mut split = None;
        while need > 0 {
            from -= 1;
            let len = self.spans[from].len;
            if len > need {
                split = Some(need);
                break;
            }
            need -= len;
        }
        if let Some(taken) = split {
            let span = &mut self.spans[from];
            span.len -= taken;
            out.push(Span {
                source: span.source,
                start: span.start + span.len,
                len: taken,
            });
            from += 1;
        }
        out.extend(self.spans.drain(from..));
        self.len -= u64::from(count);
    }

    /// Drops the bottom `count` entries (no more than it holds).
    fn drop_bottom(&mut self, count: u32) {
        let mut need = count;
        while need > 0 {
            let bottom = self.spans.front_mut().expect("count is within the stack");
            if bottom.len > need {
                bottom.start += need;
                bottom.len -= need;
                break;
            }
            need -= bottom.len;
            self.spans.pop_front();
        }
        self.len -= u64::from(count);
    }
}

/// What a sparse replay asks about the records it passes.
pub(crate) trait Judge {
    /// Whether the records with this watch (a record without flags) are
    /// wanted, unless an override says otherwise.
    fn watch(&mut self, watch: &RawRecord<'_>) -> bool;

    /// Whether some record in `indices` has an override; asked with
    /// increasing indices.
    fn any_override(&mut self, indices: std::ops::Range<u32>) -> bool;

    /// For the record at `index`, if it has an override: whether it is
    /// wanted, and whether it is a leaf. Asked with increasing indices.
    fn overridden(&mut self, index: u32) -> Option<(bool, bool)>;
}

/// Replays `run` as [`super::replay::replay`] does, asking `judge` which
/// records are wanted (each index is the record's in the segment, counted
/// from `first_index`), and hands each wanted one to `visit` with its
/// ortho and whether it is a leaf. A section none of whose watches is
/// wanted, and with no override, is passed over whole. Returns the number
/// of records. The run must be complete.
pub(crate) fn sparse_replay(
    run: &Run,
    first_index: u32,
    scratch: &mut SparseScratch,
    judge: &mut impl Judge,
    mut visit: impl FnMut(u32, Ortho, bool) -> Result<()>,
) -> Result<u32> {
    let damaged_at = |at: u64, detail: String| Error::Damaged {
        path: run.path().to_owned(),
        detail: format!("at byte {at}: {detail}"),
    };
    scratch.stack.clear();
    scratch.popped.clear();
    scratch.decoded.clear();
    let mut met = Met {
        roots: Vec::new(),
        batches: Vec::new(),
        index: first_index,
    };
    let mut opening = true;
    let mut end = 0;
    let mut blocks = run.blocks();
    while let Some((kind, payload, at)) = blocks.next_in_run()? {
        end = at + payload.len() as u64;
        let damaged = |detail: String| damaged_at(at, detail);
        match kind {
            BlockKind::Roots => {
                if !opening && scratch.stack.len > 0 {
                    return Err(damaged("a run starts before the last one ended".into()));
                }
                let more = decode_roots(payload).map_err(damaged)?;
                scratch.stack.push(Span {
                    source: ROOTS,
                    start: met.roots.len() as u32,
                    len: more.len() as u32,
                });
                met.roots.extend(more);
                opening = true;
            }
            BlockKind::Batch => {
                opening = false;
                replay_batch(payload, &mut met, scratch, judge, &mut visit, &damaged)?;
            }
            BlockKind::Handoff => {
                let mut bytes = payload;
                let count = get_varint(&mut bytes).ok_or_else(|| damaged("bad count".into()))?;
                if u64::from(count) > scratch.stack.len || !bytes.is_empty() {
                    return Err(damaged(format!(
                        "{count} orthos handed off with {} pending",
                        scratch.stack.len
                    )));
                }
                scratch.stack.drop_bottom(count);
                opening = false;
            }
            BlockKind::Overrides => {
                return Err(damaged("an overrides block in a history file".into()));
            }
        }
    }
    if scratch.stack.len > 0 {
        return Err(damaged_at(
            end,
            format!(
                "{} orthos recorded as found were never expanded",
                scratch.stack.len
            ),
        ));
    }
    Ok(met.index - first_index)
}

/// What a sparse replay has met of its run so far.
struct Met<'a> {
    roots: Vec<Ortho>,
    batches: Vec<BatchMet<'a>>,
    /// The index of the next record.
    index: u32,
}

/// Replays a batch block sparsely: its records are popped off the stack
/// (as spans), their watches judged section by section, the wanted ones
/// handed to `visit` with their orthos, and one span of all the children
/// they list pushed. `damaged` describes damage in the block.
fn replay_batch<'a>(
    payload: &'a [u8],
    met: &mut Met<'a>,
    scratch: &mut SparseScratch,
    judge: &mut impl Judge,
    visit: &mut impl FnMut(u32, Ortho, bool) -> Result<()>,
    damaged: &impl Fn(String) -> Error,
) -> Result<()> {
    let batch = BatchPayload::parse(payload).map_err(|e| damaged(e.into()))?;
    if u64::from(batch.count) > scratch.stack.len {
        return Err(damaged(format!(
            "a batch of {} with {} pending",
            batch.count, scratch.stack.len
        )));
    }
    let number = met.batches.len() as u32;
    let start = scratch.popped.len();
    scratch.stack.pop_top(batch.count, &mut scratch.popped);
    met.batches.push(BatchMet {
        payload,
        popped: start..scratch.popped.len(),
    });
    let mut column = batch.expansions;
    let mut ordinal = 0;
    while ordinal < batch.count {
        // The section's watches are judged as they are read: most sections
        // want none, and their records are passed over unread.
        scratch.verdicts.clear();
        let mut any = false;
        let pairs = read_section_with(&mut column, batch.width, |watch| {
            let wanted = judge.watch(&watch);
            any |= wanted;
            scratch.verdicts.push(wanted);
        })
        .map_err(|e| damaged(e.into()))?;
        let records = (pairs.len() / 2) as u32;
        let (index, end) = (met.index, met.index.checked_add(records));
        let end = end.ok_or_else(|| damaged("too many records".into()))?;
        if any || judge.any_override(index..end) {
            for (at, pair) in pairs.chunks_exact(2).enumerate() {
                let at = at as u32;
                let (flags, watch) = section_pair(scratch.verdicts.len(), [pair[0], pair[1]])
                    .map_err(|e| damaged(e.into()))?;
                let (wanted, leaf) = judge
                    .overridden(index + at)
                    .unwrap_or_else(|| (scratch.verdicts[watch], flags_leaf(flags)));
                if wanted {
                    let ortho = scratch
                        .ortho_of(number, ordinal + at, &met.batches, &met.roots)
                        .map_err(|detail| damaged(format!("record {}: {detail}", index + at)))?;
                    visit(index + at, ortho, leaf)?;
                }
            }
        }
        met.index = end;
        ordinal += records;
    }
    if ordinal != batch.count || !column.is_empty() {
        return Err(damaged("a batch holds other records than it counts".into()));
    }
    scratch.stack.push(Span {
        source: number,
        start: 0,
        len: batch.listed,
    });
    Ok(())
}

impl SparseScratch {
    /// The ortho of record `ordinal` of batch `batch`: its ancestors' steps
    /// gathered up to a root, then applied to it.
    fn ortho_of(
        &mut self,
        mut batch: u32,
        mut ordinal: u32,
        batches: &[BatchMet<'_>],
        roots: &[Ortho],
    ) -> std::result::Result<Ortho, String> {
        self.chain.clear();
        loop {
            let met = &batches[batch as usize];
            let (source, place) = entry(&self.popped[met.popped.clone()], ordinal)?;
            if source == ROOTS {
                let mut ortho = roots
                    .get(place as usize)
                    .cloned()
                    .ok_or("a root out of range")?;
                for step in self.chain.iter().rev() {
                    ortho = step.apply(&ortho).map_err(|e| e.to_string())?;
                }
                return Ok(ortho);
            }
            let children = match self.decoded.entry(source) {
                std::collections::hash_map::Entry::Occupied(decoded) => decoded.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(decode_children(batches[source as usize].payload)?)
                }
            };
            let child = children.get(place as usize).ok_or("a child out of range")?;
            self.chain.push(child.step);
            (batch, ordinal) = (source, child.record);
        }
    }
}

/// The source and place of entry `ordinal` of `spans`.
fn entry(spans: &[Span], ordinal: u32) -> std::result::Result<(u32, u32), &'static str> {
    let mut before = 0;
    for span in spans {
        if ordinal - before < span.len {
            return Ok((span.source, span.start + ordinal - before));
        }
        before += span.len;
    }
    Err("a record past its batch")
}

/// Every child a batch block's payload lists, in order.
fn decode_children(payload: &[u8]) -> std::result::Result<Vec<Child>, &'static str> {
    let batch = BatchPayload::parse(payload)?;
    let mut children = Vec::with_capacity(batch.listed as usize);
    batch.each_child(|record, token, reshape| {
        children.push(Child {
            record,
            step: child_step(token, reshape),
        });
    })?;
    Ok(children)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::interner::Interner;
    use crate::search::history::BlockReader;
    use crate::search::replay::{ReplayScratch, Replayed, replay};
    use crate::search::{Exploration, Scope, SearchConfig, Searcher, Unobserved};

    /// Picks records by their index (as if each had an override) or by
    /// their watch.
    pub enum Pick<F> {
        Index(F),
        Watch(F),
    }

    impl<F: Fn(u32) -> bool> Pick<F> {
        /// Whether the full replay's `wanted` takes this record.
        fn wants(&self, index: u32, record: &RawRecord<'_>) -> bool {
            match self {
                Pick::Index(pick) => pick(index),
                Pick::Watch(pick) => pick(record.nodes().sum()),
            }
        }
    }

    impl<F: Fn(u32) -> bool> Judge for Pick<F> {
        fn watch(&mut self, watch: &RawRecord<'_>) -> bool {
            matches!(self, Pick::Watch(pick) if pick(watch.nodes().sum()))
        }

        fn any_override(&mut self, _: std::ops::Range<u32>) -> bool {
            matches!(self, Pick::Index(_))
        }

        fn overridden(&mut self, index: u32) -> Option<(bool, bool)> {
            match self {
                Pick::Index(pick) => Some((pick(index), false)),
                Pick::Watch(_) => None,
            }
        }
    }

    /// The records `pick` picks from the history at `path`, with their
    /// orthos, replayed run by run sparsely or in full.
    fn picked<F: Fn(u32) -> bool>(
        path: &std::path::Path,
        len: u64,
        sparse: bool,
        pick: &mut Pick<F>,
    ) -> Vec<(u32, Ortho)> {
        let mut reader = BlockReader::open(path, len).unwrap();
        let mut runs = Vec::new();
        while let Some(run) = reader.next_run().unwrap() {
            runs.push(run);
        }
        let (mut first, mut picked) = (0, Vec::new());
        let (mut dense_scratch, mut sparse_scratch) = Default::default();
        for extent in &runs {
            let run = reader.read_run(extent, Vec::new()).unwrap();
            let read = if sparse {
                let visit = |index, ortho, _| {
                    picked.push((index, ortho));
                    Ok(())
                };
                sparse_replay(&run, first, &mut sparse_scratch, pick, visit)
            } else {
                let visit = |replayed: &Replayed<'_>| {
                    picked.push((replayed.index, replayed.ortho().unwrap()));
                    Ok(())
                };
                let scratch: &mut ReplayScratch = &mut dense_scratch;
                let wanted = |index, record: &RawRecord<'_>| pick.wants(index, record);
                replay(&mut run.blocks(), first, scratch, wanted, visit)
            };
            assert_eq!(read.unwrap(), extent.records);
            first += extent.records;
        }
        picked
    }

    #[test]
    fn a_sparse_replay_finds_the_orthos_a_full_replay_finds() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/golden/texts/ts_0_10k.txt"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let interner = Interner::from_texts([text.as_str()]);
        let dir = tempfile::tempdir().unwrap();
        let mut exploration = Exploration::create(dir.path(), Scope::All).unwrap();
        // Small batches pop spans apart often.
        let config = SearchConfig {
            threads: 2,
            batch_size: 7,
            ..SearchConfig::default()
        };
        let searcher = Searcher::new(config).unwrap();
        let outcome = searcher
            .advance(&mut exploration, &interner, &mut Unobserved)
            .unwrap();
        let (path, len) = exploration.history_file(0);

        let every = picked(&path, len, true, &mut Pick::Index(|_| true));
        assert_eq!(every.len() as u64, outcome.figures.orthos);
        assert_eq!(every, picked(&path, len, false, &mut Pick::Index(|_| true)));
        let few = |index: u32| index.wrapping_mul(2_654_435_761).is_multiple_of(97);
        let sparse = picked(&path, len, true, &mut Pick::Index(few));
        assert!(sparse.len() > 100, "{} picked", sparse.len());
        assert_eq!(sparse, picked(&path, len, false, &mut Pick::Index(few)));
        // By watch: most sections are passed over whole.
        let rare = |sum: u32| sum.is_multiple_of(89);
        let sparse = picked(&path, len, true, &mut Pick::Watch(rare));
        assert!(sparse.len() > 100, "{} picked", sparse.len());
        assert_eq!(sparse, picked(&path, len, false, &mut Pick::Watch(rare)));
    }
}
