//! One batch of the search: expand orthos in parallel, keep the new children.

use std::collections::VecDeque;

use rayon::prelude::*;

use crate::error::Error;
use crate::interner::Interner;
use crate::ortho::{Expansion, Ortho, OrthoId, Scratch, expand_since};
use crate::search::seen::SeenSet;

/// What expanding one batch produced.
#[derive(Default)]
pub(crate) struct BatchOutcome {
    /// Children never seen before, with their ids, to be counted and queued.
    pub new_orthos: Vec<(OrthoId, Ortho)>,
    /// Number of expanded orthos that had no candidate.
    pub leaves: u64,
    /// The leaves themselves, when the caller asked for them.
    pub leaf_orthos: Vec<Ortho>,
    /// The best of `new_orthos` by the §7 order.
    pub best: Option<Ortho>,
    /// `best`'s `(volume, fullness)`.
    best_key: (u64, usize),
    /// Children generated, duplicates included.
    pub generated: u64,
    /// The first error met, if any.
    pub error: Option<Error>,
    scratch: Scratch,
    /// Children whose seen-set slot is being prefetched, oldest first.
    in_flight: VecDeque<(OrthoId, Ortho)>,
}

/// How many children wait for their prefetched seen-set slot before they are
/// inserted: enough to hide a memory stall behind the work on the others.
const PREFETCH_DISTANCE: usize = 8;

impl BatchOutcome {
    fn absorb(
        &mut self,
        ortho: Ortho,
        interner: &Interner,
        since: u32,
        seen: &SeenSet,
        keep_leaves: bool,
    ) -> Expansion {
        if self.error.is_some() {
            return Expansion::default();
        }
        // The scratch buffers are borrowed by `expand` while the closure
        // settles children into `self`.
        let mut scratch = std::mem::take(&mut self.scratch);
        let expanded = expand_since(&ortho, interner, since, &mut scratch, |child| {
            let id = child.id();
            seen.prefetch(id);
            self.in_flight.push_back((id, child));
            if self.in_flight.len() > PREFETCH_DISTANCE
                && let Some((id, child)) = self.in_flight.pop_front()
            {
                self.settle(id, child, seen);
            }
        });
        self.scratch = scratch;
        match expanded {
            Ok(expansion) => {
                if expansion.leaf {
                    self.leaves += 1;
                    if keep_leaves {
                        self.leaf_orthos.push(ortho);
                    }
                }
                expansion
            }
            Err(error) => {
                self.error = Some(error);
                Expansion::default()
            }
        }
    }

    /// Counts a child and keeps it if its id is new.
    fn settle(&mut self, id: OrthoId, child: Ortho, seen: &SeenSet) {
        self.generated += 1;
        if !seen.insert(id) {
            return;
        }
        // Nearly every child loses on (volume, fullness) alone; the full
        // comparison runs only on a tie.
        let key = child.rank_key();
        let challenges = match &self.best {
            None => true,
            Some(best) => {
                key > self.best_key || (key == self.best_key && child.rank_cmp(best).is_gt())
            }
        };
        if challenges {
            self.best = Some(child.clone());
            self.best_key = key;
        }
        self.new_orthos.push((id, child));
    }

    /// Settles every child still waiting for its prefetch.
    fn settle_all(&mut self, seen: &SeenSet) {
        while let Some((id, child)) = self.in_flight.pop_front() {
            self.settle(id, child, seen);
        }
    }

    fn merge(&mut self, mut other: Self) {
        if self.new_orthos.len() < other.new_orthos.len() {
            std::mem::swap(&mut self.new_orthos, &mut other.new_orthos);
        }
        self.new_orthos.append(&mut other.new_orthos);
        self.leaf_orthos.append(&mut other.leaf_orthos);
        self.leaves += other.leaves;
        self.generated += other.generated;
        self.best = better(self.best.take(), other.best);
        self.best_key = self.best.as_ref().map_or((0, 0), Ortho::rank_key);
        self.error = self.error.take().or(other.error);
    }
}

/// The better of two optional orthos by the §7 order.
pub(crate) fn better(a: Option<Ortho>, b: Option<Ortho>) -> Option<Ortho> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.rank_cmp(&a).is_gt() { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Expands `batch` on the current rayon pool, keeping only children of
/// candidates new since version `since` (all of them for 0). `expansions`
/// receives what each ortho's expansion learned, in batch order.
pub(crate) fn expand_batch(
    batch: Vec<Ortho>,
    interner: &Interner,
    since: u32,
    seen: &SeenSet,
    keep_leaves: bool,
    expansions: &mut Vec<Expansion>,
) -> BatchOutcome {
    expansions.clear();
    expansions.resize(batch.len(), Expansion::default());
    let outcome = batch
        .into_par_iter()
        .zip(expansions.par_iter_mut())
        // Accumulators travel boxed: rayon moves them once per ortho.
        .fold(
            Box::<BatchOutcome>::default,
            |mut outcome, (ortho, expansion)| {
                *expansion = outcome.absorb(ortho, interner, since, seen, keep_leaves);
                outcome
            },
        )
        .map(|mut outcome| {
            outcome.settle_all(seen);
            outcome
        })
        .reduce(Box::<BatchOutcome>::default, |mut a, b| {
            a.merge(*b);
            a
        });
    *outcome
}
