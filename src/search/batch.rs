//! The batch loop (ORTHO.md §6): pop up to `batch_size` orthos from the top
//! of the pending stack, expand them in parallel with rayon, count them and
//! push the children they accept.
//!
//! Pending work is a stack, so the search goes depth-first: it holds at most
//! a batch's children per level of fullness, however many orthos it finds.
//! Which children are kept is the [`Dedup`] mode's business: the canonical
//! parent (a tree, nothing to remember) or a seen set (the reference).
//!
//! An ortho is counted (in the figures) when it is expanded, not when it is
//! found: every found ortho is expanded exactly once, and pending orthos,
//! counted nowhere yet, can be handed to another search whole.

use std::collections::{HashSet, VecDeque};

use rayon::prelude::*;

use super::history::BlockWriter;
use super::records::{BatchRecords, NodeWidth, node_width};
use super::{Dedup, Figures, SearchStats, SeenSet};
use crate::error::{Error, Result};
use crate::interner::{Interner, Version};
use crate::ortho::{Acceptance, Expansion, Ortho, OrthoId, Scratch, Step, expand_since};

/// Everything one version's search shares between batches.
pub(crate) struct Batches<'a> {
    pub pool: &'a rayon::ThreadPool,
    pub interner: &'a Interner,
    pub batch_size: usize,
    pub dedup: Dedup,
    /// The ids of every ortho found, in seen-set mode.
    pub seen: Option<&'a SeenSet>,
    /// Orthos never to accept (their subtrees belong to another search).
    pub excluded: Option<&'a HashSet<Ortho>>,
    /// Hand leaves to the observer.
    pub keep_leaves: bool,
    /// Hand every expanded ortho to the observer.
    pub keep_orthos: bool,
    pub figures: Figures,
    pub stats: SearchStats,
}

/// What one batch produced, in batch order.
#[derive(Default)]
pub(crate) struct Expanded {
    /// The expansion of each ortho of the batch.
    pub expansions: Vec<Expansion>,
    /// The accepted children, ortho after ortho, in one list per rayon task
    /// (joining them would copy every child once more).
    pub children: Vec<Vec<Ortho>>,
    /// The best of the batch's orthos by the §7 order.
    pub best: Option<Ortho>,
    /// The history records, one part per rayon task (empty unless asked
    /// for).
    pub records: Vec<BatchRecords>,
    /// How many of the batch's orthos are leaves.
    pub leaves: u64,
    /// The leaves, when kept.
    pub leaf_orthos: Vec<Ortho>,
}

/// One rayon task's share of a batch.
#[derive(Default)]
struct Part {
    expansions: Vec<Expansion>,
    children: Vec<Ortho>,
    records: BatchRecords,
    leaf_orthos: Vec<Ortho>,
    leaves: u64,
    generated: u64,
    best: Option<Ortho>,
    best_key: (u64, usize),
    error: Option<Error>,
}

/// How many children wait for their prefetched seen-set slot before they are
/// inserted: enough to hide a memory stall behind the work on the others.
const PREFETCH_DISTANCE: usize = 8;

impl Part {
    /// Counts `ortho`, expanded as `expansion`: a leaf among the part's
    /// leaves (and kept when `keep_leaves`), the expansion for its record.
    #[inline]
    fn count(&mut self, ortho: &Ortho, expansion: Expansion, keep_leaves: bool) {
        if expansion.leaf {
            self.leaves += 1;
            if keep_leaves {
                self.leaf_orthos.push(ortho.clone());
            }
        }
        self.expansions.push(expansion);
    }

    /// Keeps `child`, made by `step` from the part's ortho number `parent`,
    /// among the part's children unless it is `excluded`; `steps` gets the
    /// step and the parent's number.
    #[inline]
    fn accept(
        &mut self,
        steps: &mut Vec<(usize, Step)>,
        excluded: Option<&HashSet<Ortho>>,
        parent: usize,
        step: Step,
        child: Ortho,
    ) {
        if excluded.is_some_and(|excluded| excluded.contains(&child)) {
            return;
        }
        steps.push((parent, step));
        self.children.push(child);
    }

    /// Keeps `ortho`, whose `(volume, fullness)` is `key`, as the part's best
    /// if it beats it (§7).
    #[inline]
    fn consider(&mut self, ortho: &Ortho, key: (u64, usize)) {
        // Nearly every ortho loses on (volume, fullness) alone; the full
        // comparison runs only on a tie.
        let challenges = match &self.best {
            None => true,
            Some(best) => {
                key > self.best_key || (key == self.best_key && ortho.tie_cmp(best).is_gt())
            }
        };
        if challenges {
            self.best = Some(ortho.clone());
            self.best_key = key;
        }
    }
}

impl Batches<'_> {
    /// How wide watched node ids are recorded: enough for every node of
    /// the interner.
    fn node_width(&self) -> NodeWidth {
        node_width(self.interner.phrase_states())
    }

    /// Expands `batch` in parallel, keeping children of candidates new since
    /// version `since` (all of them for [`Version::ZERO`]) that the mode accepts, and the
    /// history records when `records` is set. Counts only the children
    /// generated; the caller counts the batch (or does not, for orthos
    /// expanded again).
    pub fn expand(&mut self, batch: &[Ortho], since: Version, records: bool) -> Result<Expanded> {
        let threads = self.pool.current_num_threads().max(1);
        let chunk = batch.len().div_ceil(threads * 8).max(1);
        let (interner, dedup, seen, excluded, keep_leaves) = (
            self.interner,
            self.dedup,
            self.seen,
            self.excluded,
            self.keep_leaves,
        );
        let records = records.then(|| self.node_width());
        let parts: Vec<Part> = self.pool.install(|| {
            batch
                .par_chunks(chunk)
                .map(|orthos| {
                    let rules = PartRules {
                        interner,
                        since,
                        dedup,
                        seen,
                        excluded,
                        keep_leaves,
                        records,
                    };
                    expand_part(orthos, rules)
                })
                .collect()
        });
        let mut expanded = Expanded {
            expansions: Vec::with_capacity(batch.len()),
            ..Expanded::default()
        };
        for mut part in parts {
            if let Some(error) = part.error.take() {
                return Err(error);
            }
            expanded.leaves += part.leaves;
            expanded.best = better(expanded.best.take(), part.best);
            self.stats.generated += part.generated;
            expanded.expansions.append(&mut part.expansions);
            expanded.children.push(std::mem::take(&mut part.children));
            expanded.leaf_orthos.append(&mut part.leaf_orthos);
            if records.is_some() {
                expanded.records.push(part.records);
            }
        }
        Ok(expanded)
    }

    /// Searches everything below the orthos on `stack` until it is empty,
    /// recording each batch in `history` when given. After every batch,
    /// `between` is shown what it did ([`BatchDone`]) and the history (for
    /// progress, checkpoints and hand-offs); it answers how many orthos at
    /// the bottom of the stack (the first found) were handed to other
    /// searches, which are taken off it into `handed_off`. The search goes on
    /// while orthos are pending; an error from `between` stops it.
    pub fn run(
        &mut self,
        stack: &mut Vec<Ortho>,
        handed_off: &mut Vec<Ortho>,
        mut history: Option<&mut BlockWriter>,
        mut between: impl FnMut(&mut Self, BatchDone<'_>, Option<&mut BlockWriter>) -> Result<usize>,
    ) -> Result<()> {
        let batch_size = self.batch_size.max(1);
        let mut branching = Branching::default();
        while let Some(top) = stack.last() {
            // The batch is the top of the stack, expanded where it lies and
            // then replaced by its children.
            let level = top.fullness();
            let first = stack
                .len()
                .saturating_sub(branching.batch(level, batch_size));
            let count = stack.len() - first;
            let expanded = self.expand(&stack[first..], Version::ZERO, history.is_some())?;
            if let Some(history) = history.as_deref_mut() {
                history.batch(self.node_width(), &expanded.records)?;
            }
            let listed = if self.keep_orthos {
                stack[first..].to_vec()
            } else {
                Vec::new()
            };
            let pushed: usize = expanded.children.iter().map(Vec::len).sum();
            self.stats.processed += count as u64;
            self.figures.orthos += count as u64;
            self.figures.frontier += expanded.leaves;
            self.figures.optimal = better(self.figures.optimal.take(), expanded.best);
            stack.truncate(first);
            for part in expanded.children {
                stack.extend(part);
            }
            branching.observe(level, count, pushed);
            self.stats.peak_queue = self.stats.peak_queue.max(stack.len() as u64);
            let done = BatchDone {
                stack,
                expanded: listed,
                leaves: expanded.leaf_orthos,
            };
            let handed = between(self, done, history.as_deref_mut())?.min(stack.len());
            handed_off.extend(stack.drain(..handed));
        }
        Ok(())
    }
}

/// What one batch of [`Batches::run`] did, for whoever watches it.
pub(crate) struct BatchDone<'a> {
    /// The pending orthos after it.
    pub stack: &'a [Ortho],
    /// The orthos it expanded (only when the observer keeps them).
    pub expanded: Vec<Ortho>,
    /// Its leaves (only when the observer keeps them).
    pub leaves: Vec<Ortho>,
}

/// Children one batch may push, about: a text whose words have thousands of
/// continuations would otherwise push millions at once.
const MOST_CHILDREN: f64 = 8_192.0;

/// Children per ortho seen at each fullness, which sizes the batches: a
/// batch pops no more orthos than are expected to push [`MOST_CHILDREN`].
/// A fullness not seen yet starts with a batch of one. Batch sizes never
/// change the figures.
struct Branching([f64; Self::LEVELS]);

impl Default for Branching {
    fn default() -> Self {
        Self([f64::NAN; Self::LEVELS])
    }
}

impl Branching {
    const LEVELS: usize = 64;

    fn slot(level: usize) -> usize {
        level.min(Self::LEVELS - 1)
    }

    /// How many orthos to pop when the top of the stack has this fullness.
    fn batch(&self, level: usize, batch_size: usize) -> usize {
        let children = self.0[Self::slot(level)];
        if children.is_nan() {
            return 1;
        }
        ((MOST_CHILDREN / children.max(1.0)) as usize).clamp(1, batch_size)
    }

    /// Records that `count` orthos of about this fullness pushed `pushed`.
    fn observe(&mut self, level: usize, count: usize, pushed: usize) {
        let seen = pushed as f64 / count as f64;
        let slot = &mut self.0[Self::slot(level)];
        *slot = if slot.is_nan() {
            seen
        } else {
            (*slot + seen) / 2.0
        };
    }
}

/// What decides how one rayon task expands its orthos.
#[derive(Clone, Copy)]
struct PartRules<'a> {
    interner: &'a Interner,
    /// Keep only children of candidates new since this version (all for
    /// [`Version::ZERO`]).
    since: Version,
    dedup: Dedup,
    seen: Option<&'a SeenSet>,
    excluded: Option<&'a HashSet<Ortho>>,
    keep_leaves: bool,
    /// Write history records, with node ids this wide.
    records: Option<NodeWidth>,
}

/// Expands one task's orthos in order.
fn expand_part(orthos: &[Ortho], rules: PartRules<'_>) -> Part {
    let PartRules {
        interner,
        since,
        dedup,
        seen,
        excluded,
        keep_leaves,
        records,
    } = rules;
    let acceptance = match dedup {
        Dedup::Tree => Acceptance::Canonical,
        Dedup::SeenSet => Acceptance::Every,
    };
    let mut part = Part {
        expansions: Vec::with_capacity(orthos.len()),
        ..Part::default()
    };
    let mut scratch = Scratch::default();
    // The step of each accepted child, with the index of its parent.
    let mut steps: Vec<(usize, Step)> = Vec::new();
    // Seen-set mode: children waiting for their prefetched slot, oldest first.
    let mut in_flight: VecDeque<(OrthoId, usize, Step, Ortho)> = VecDeque::new();
    for (index, ortho) in orthos.iter().enumerate() {
        if since == Version::ZERO {
            part.consider(ortho, ortho.rank_key());
        }
        let expanded = expand_since(
            ortho,
            interner,
            since,
            acceptance,
            &mut scratch,
            |step, child| {
                part.generated += 1;
                let Some(seen) = seen else {
                    part.accept(&mut steps, excluded, index, step, child);
                    return;
                };
                let id = child.id();
                seen.prefetch(id);
                in_flight.push_back((id, index, step, child));
                if in_flight.len() > PREFETCH_DISTANCE
                    && let Some((id, parent, step, child)) = in_flight.pop_front()
                    && seen.insert(id)
                {
                    part.accept(&mut steps, excluded, parent, step, child);
                }
            },
        );
        match expanded {
            Ok(expansion) => part.count(ortho, expansion, keep_leaves),
            Err(error) => {
                part.error = Some(error);
                return part;
            }
        }
    }
    if let Some(seen) = seen {
        while let Some((id, parent, step, child)) = in_flight.pop_front() {
            if seen.insert(id) {
                part.accept(&mut steps, excluded, parent, step, child);
            }
        }
    }
    if let Some(width) = records {
        encode_records(orthos, &part.expansions, &steps, width, &mut part.records);
    }
    part
}

/// Adds the history record of each of `orthos` to `records`: its
/// expansion and the steps to its accepted children, which `steps` lists
/// for the whole part, in order, with the index of their parent.
fn encode_records(
    orthos: &[Ortho],
    expansions: &[Expansion],
    steps: &[(usize, Step)],
    width: NodeWidth,
    records: &mut BatchRecords,
) {
    let mut from = 0;
    let mut children = Vec::new();
    for (index, (ortho, expansion)) in orthos.iter().zip(expansions).enumerate() {
        children.clear();
        while from < steps.len() && steps[from].0 == index {
            children.push(steps[from].1);
            from += 1;
        }
        let reshapes = ortho.fullness() + 1 == ortho.table().capacity;
        records.add(expansion, reshapes, &children, width);
    }
}

/// The better of two optional orthos by the §7 order.
pub(crate) fn better(a: Option<Ortho>, b: Option<Ortho>) -> Option<Ortho> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.rank_cmp(&a).is_gt() { b } else { a }),
        (a, b) => a.or(b),
    }
}
