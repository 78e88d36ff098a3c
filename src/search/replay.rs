//! Replaying a stored history (see [`super::history`]): the search's own
//! pops and pushes, redone with the recorded children instead of computed
//! ones, so every stored ortho comes back with its record and nothing had
//! to store its payload.
//!
//! Orthos are built lazily. The replayed stack holds small nodes — a parent
//! and the step from it — and an ortho is built (from its root) only when the
//! caller asks for it, which a scan for grown watches does for a handful of
//! records in a million. Nodes are appended to an arena; when it has grown to
//! several times what is still needed (the stack and its ancestors), the
//! arena is compacted to those, so memory follows the stack, not the history.

use super::history::{BlockKind, Blocks, decode_roots, get_varint};
use super::records::{BatchPayload, RawRecord, ReshapeCode, child_step, read_children};
use crate::error::{Error, Result};
use crate::ortho::Ortho;

/// The parent of a root: none.
const ROOT: u32 = u32::MAX;

/// Nodes the arena may hold before its first compaction.
const FIRST_COMPACTION: usize = 1 << 16;

/// A replayed ortho: the step that made it from its parent, or, for a root,
/// its index among the roots.
#[derive(Clone, Copy)]
struct Node {
    parent: u32,
    token: u32,
    reshape: ReshapeCode,
}

/// The replayed stack, the expanded orthos its nodes grow from, and the
/// roots.
///
/// A node waiting on the stack is not in the arena: only an expanded node
/// with children moves there, for them to point to. So leaves, two thirds of
/// all orthos, cost one stack entry and nothing more.
#[derive(Default)]
struct Arena {
    nodes: Vec<Node>,
    roots: Vec<Ortho>,
    /// The arena's size after the last compaction (what was then alive).
    live: usize,
}

impl Arena {
    fn clear(&mut self) {
        self.nodes.clear();
        self.roots.clear();
        self.live = 0;
    }

    /// The ortho of `node`, built from its root.
    fn ortho(&self, node: &Node) -> std::result::Result<Ortho, String> {
        let mut chain = vec![*node];
        let mut at = node.parent;
        while at != ROOT {
            let parent = self.nodes.get(at as usize).ok_or("a node out of range")?;
            chain.push(*parent);
            at = parent.parent;
        }
        let root = chain.pop().expect("the chain holds the node itself");
        let mut ortho = self
            .roots
            .get(root.token as usize)
            .cloned()
            .ok_or("a root out of range")?;
        for node in chain.iter().rev() {
            ortho = child_step(node.token, node.reshape)
                .apply(&ortho)
                .map_err(|e| e.to_string())?;
        }
        Ok(ortho)
    }

    /// Keeps only the expanded nodes `stack` still needs (its nodes'
    /// ancestors), renumbering them and the stack's parents, once the arena
    /// has grown well past what it held after the last compaction.
    fn compact_if_large(&mut self, stack: &mut [Node]) {
        if self.nodes.len() < FIRST_COMPACTION.max(4 * self.live) {
            return;
        }
        const DEAD: u32 = u32::MAX;
        let mut renumber = vec![DEAD; self.nodes.len()];
        for waiting in stack.iter() {
            let mut at = waiting.parent;
            while at != ROOT && renumber[at as usize] == DEAD {
                renumber[at as usize] = 0;
                at = self.nodes[at as usize].parent;
            }
        }
        // A parent is always older than its children, so it is renumbered
        // before any child that points to it is moved.
        let mut kept = 0u32;
        for index in 0..self.nodes.len() {
            if renumber[index] == DEAD {
                continue;
            }
            renumber[index] = kept;
            let mut node = self.nodes[index];
            if node.parent != ROOT {
                node.parent = renumber[node.parent as usize];
            }
            self.nodes[kept as usize] = node;
            kept += 1;
        }
        self.nodes.truncate(kept as usize);
        for waiting in stack.iter_mut() {
            if waiting.parent != ROOT {
                waiting.parent = renumber[waiting.parent as usize];
            }
        }
        self.live = self.nodes.len();
    }
}

/// The memory a replay works in, kept from one replay to the next (a scan
/// replays many runs).
#[derive(Default)]
pub(crate) struct ReplayScratch {
    arena: Arena,
    stack: Vec<Node>,
}

/// One replayed record that was wanted: its index in the segment, and its
/// ortho on demand.
pub(crate) struct Replayed<'a> {
    /// The record's index among its segment's records.
    pub index: u32,
    arena: &'a Arena,
    node: Node,
}

impl Replayed<'_> {
    /// The ortho the record is of.
    pub fn ortho(&self) -> std::result::Result<Ortho, String> {
        self.arena.ortho(&self.node)
    }
}

/// Replays the runs `blocks` yields: every record, in the order the search
/// expanded them, is shown to `wanted` (its index in the segment, counted
/// from `first_index`, and the record), and those it wants are handed to
/// `visit` with their ortho on demand. Returns the number of records. The
/// runs must be complete: every run ends with nothing left to expand.
///
/// `wanted` sees a million records for each few that `visit` does, so it
/// should be cheap (it is inlined into the loop).
pub(crate) fn replay(
    blocks: &mut impl Blocks,
    first_index: u32,
    scratch: &mut ReplayScratch,
    mut wanted: impl FnMut(u32, &RawRecord<'_>) -> bool,
    mut visit: impl FnMut(&Replayed<'_>) -> Result<()>,
) -> Result<u32> {
    let path = blocks.path().to_owned();
    let damaged_at = |at: u64, detail: String| Error::Damaged {
        path: path.clone(),
        detail: format!("at byte {at}: {detail}"),
    };
    let ReplayScratch { arena, stack } = scratch;
    arena.clear();
    stack.clear();
    let mut index = first_index;
    let mut opening = true;
    let mut end = 0;
    while let Some((kind, payload, at)) = blocks.next_block()? {
        end = at + payload.len() as u64;
        let damaged = |detail: String| damaged_at(at, detail);
        match kind {
            BlockKind::Roots => {
                if !opening && !stack.is_empty() {
                    return Err(damaged("a run starts before the last one ended".into()));
                }
                replay_roots(payload, arena, stack, &damaged)?;
                opening = true;
            }
            BlockKind::Batch => {
                opening = false;
                index = replay_batch(
                    payload,
                    index,
                    arena,
                    stack,
                    &mut wanted,
                    &mut visit,
                    &damaged,
                )?;
            }
            BlockKind::Handoff => {
                replay_handoff(payload, stack, &damaged)?;
                opening = false;
            }
            BlockKind::Overrides => {
                return Err(damaged("an overrides block in a history file".into()));
            }
        }
    }
    if !stack.is_empty() {
        return Err(damaged_at(
            end,
            format!(
                "{} orthos recorded as found were never expanded",
                stack.len()
            ),
        ));
    }
    Ok(index - first_index)
}

/// Replays a roots block: its orthos go onto the stack (and into the
/// arena's roots), opening a run. `damaged` describes damage in the block.
fn replay_roots(
    payload: &[u8],
    arena: &mut Arena,
    stack: &mut Vec<Node>,
    damaged: &impl Fn(String) -> Error,
) -> Result<()> {
    for root in decode_roots(payload).map_err(damaged)? {
        stack.push(Node {
            parent: ROOT,
            token: arena.roots.len() as u32,
            reshape: 0,
        });
        arena.roots.push(root);
    }
    Ok(())
}

/// Replays a batch block, whose records are those of the orthos on top of
/// the stack, from record `index` on: each record's children are pushed, the
/// records `wanted` picks are handed to `visit`, and the batch is taken off
/// the stack. Returns the index of the next record. `damaged` describes
/// damage in the block.
#[inline]
fn replay_batch(
    payload: &[u8],
    mut index: u32,
    arena: &mut Arena,
    stack: &mut Vec<Node>,
    wanted: &mut impl FnMut(u32, &RawRecord<'_>) -> bool,
    visit: &mut impl FnMut(&Replayed<'_>) -> Result<()>,
    damaged: &impl Fn(String) -> Error,
) -> Result<u32> {
    let batch = BatchPayload::parse(payload).map_err(|e| damaged(e.into()))?;
    let count = batch.count as usize;
    if count > stack.len() {
        return Err(damaged(format!(
            "a batch of {count} with {} pending",
            stack.len()
        )));
    }
    // The batch is the top of the stack; its children go above it,
    // and the batch is cut out once it is read.
    let (mut records, mut children) = (batch.records(), batch.children);
    let mut listed = 0u32;
    let first = stack.len() - count;
    for position in first..first + count {
        let node = stack[position];
        let record = records.next_record().map_err(|e| damaged(e.into()))?;
        listed += push_children(&mut children, &record, node, arena, stack)
            .map_err(|e| damaged(e.into()))?;
        if wanted(index, &record) {
            visit(&Replayed { index, arena, node })?;
        }
        index = index
            .checked_add(1)
            .ok_or_else(|| damaged("too many records".into()))?;
    }
    stack.drain(first..first + count);
    records.finish().map_err(|e| damaged(e.into()))?;
    if !children.is_empty() {
        return Err(damaged("trailing bytes in a batch".into()));
    }
    if listed != batch.listed {
        return Err(damaged(
            "a batch lists other children than it counts".into(),
        ));
    }
    arena.compact_if_large(stack);
    Ok(index)
}

/// Replays a handoff block: the orthos it counts, at the bottom of the
/// stack, went to other searches and are taken off it. `damaged` describes
/// damage in the block.
fn replay_handoff(
    payload: &[u8],
    stack: &mut Vec<Node>,
    damaged: &impl Fn(String) -> Error,
) -> Result<()> {
    let mut bytes = payload;
    let count = get_varint(&mut bytes).ok_or_else(|| damaged("bad count".into()))?;
    if count as usize > stack.len() || !bytes.is_empty() {
        return Err(damaged(format!(
            "{count} orthos handed off with {} pending",
            stack.len()
        )));
    }
    stack.drain(..count as usize);
    Ok(())
}

/// Reads the children of `record` off the front of `bytes`, pushing a node
/// for each child of `node` (which moves to the arena if it has any);
/// returns how many.
#[inline]
fn push_children(
    bytes: &mut &[u8],
    record: &RawRecord<'_>,
    node: Node,
    arena: &mut Arena,
    stack: &mut Vec<Node>,
) -> std::result::Result<u32, &'static str> {
    let mut parent = None;
    read_children(bytes, record.head(), |token, reshape| {
        let parent = *parent.get_or_insert_with(|| {
            arena.nodes.push(node);
            (arena.nodes.len() - 1) as u32
        });
        stack.push(Node {
            parent,
            token,
            reshape,
        });
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interner::Token;
    use crate::ortho::Step;
    use crate::ortho::{Expansion, Watch};
    use crate::search::history::{BlockReader, BlockWriter};
    use crate::search::records::{BatchRecords, node_width};
    use crate::search::sparse::tests::Pick;
    use crate::search::sparse::{SparseScratch, sparse_replay};

    /// Every record of the file at `path`, read in `mode`: 0 the whole file,
    /// 1 run by run in memory, 2 run by run from the file, 3 run by run
    /// sparsely.
    fn replayed(path: &std::path::Path, len: u64, mode: u8) -> Vec<(u32, Ortho)> {
        let seen = std::cell::RefCell::new(Vec::new());
        let mut visit = |replayed: &Replayed<'_>| {
            let ortho = replayed.ortho().unwrap();
            seen.borrow_mut().push((replayed.index, ortho));
            Ok(())
        };
        let scratch = &mut ReplayScratch::default();
        let mut reader = BlockReader::open(path, len).unwrap();
        if mode == 0 {
            let records = replay(&mut reader, 0, scratch, |_, _| true, &mut visit).unwrap();
            assert_eq!(records, 4);
            return seen.take();
        }
        let mut first = 0;
        let mut runs = Vec::new();
        while let Some(run) = reader.next_run().unwrap() {
            runs.push(run);
        }
        assert_eq!(
            runs.iter().map(|run| run.records).collect::<Vec<_>>(),
            [1, 3]
        );
        for run in runs {
            let records = if mode == 3 {
                let bytes = reader.read_run(&run, Vec::new()).unwrap();
                let visit = |index, ortho, _| {
                    seen.borrow_mut().push((index, ortho));
                    Ok(())
                };
                let scratch = &mut SparseScratch::default();
                let all = &mut Pick::Index(|_| true);
                sparse_replay(&bytes, first, scratch, all, visit).unwrap()
            } else if mode == 1 {
                let bytes = reader.read_run(&run, Vec::new()).unwrap();
                replay(&mut bytes.blocks(), first, scratch, |_, _| true, &mut visit).unwrap()
            } else {
                let mut blocks = reader.run_on_file(&run);
                replay(&mut blocks, first, scratch, |_, _| true, &mut visit).unwrap()
            };
            assert_eq!(records, run.records);
            first += records;
        }
        seen.take()
    }

    #[test]
    fn a_restarted_history_replays_the_same_whole_or_run_by_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history-0-0");
        let root = |token| Ortho::new(&[2, 2], &[Some(Token(token)), None, None, None]).unwrap();
        let (first, second) = (root(1), root(2));
        let leaf = Expansion {
            leaf: true,
            watch: Watch::new(&[1]).unwrap(),
        };
        let parent = Expansion {
            leaf: false,
            watch: Watch::new(&[2]).unwrap(),
        };
        let width = node_width(100);
        let mut writer = BlockWriter::create(&path, false).unwrap();
        writer.roots(&[first.clone(), second.clone()]).unwrap();
        // The top of the stack, `second`, gets two children.
        let mut record = BatchRecords::default();
        record.add(&parent, false, &[Step::fill(5), Step::fill(6)], width);
        writer.batch(width, &[record]).unwrap();
        let children = [Step::fill(5), Step::fill(6)].map(|step| step.apply(&second).unwrap());
        let stack = [first.clone(), children[0].clone(), children[1].clone()];
        writer.restart(&stack).unwrap();
        let mut leaves = BatchRecords::default();
        for _ in 0..3 {
            leaves.add(&leaf, false, &[], width);
        }
        writer.batch(width, &[leaves]).unwrap();
        let len = writer.sync(true).unwrap();

        let expected = vec![
            (0, second),
            (1, first),
            (2, children[0].clone()),
            (3, children[1].clone()),
        ];
        for mode in 0..4 {
            assert_eq!(replayed(&path, len, mode), expected, "mode {mode}");
        }
        // A flipped bit in the second run is caught run by run too.
        let mut bad = std::fs::read(&path).unwrap();
        let last = bad.len() - 2;
        bad[last] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        let mut reader = BlockReader::open(&path, len).unwrap();
        reader.next_run().unwrap().unwrap();
        let run = reader.next_run().unwrap().unwrap();
        let run = reader.read_run(&run, Vec::new()).unwrap();
        let scratch = &mut ReplayScratch::default();
        let error = replay(&mut run.blocks(), 1, scratch, |_, _| true, |_| Ok(())).unwrap_err();
        assert!(error.to_string().contains("checksum mismatch"), "{error}");
    }
}
