//! One batch of the search: expand orthos in parallel, keep the new children.

use rayon::prelude::*;

use crate::error::Error;
use crate::interner::Interner;
use crate::ortho::{Ortho, Scratch, expand};
use crate::search::seen::SeenSet;

/// What expanding one batch produced.
#[derive(Default)]
pub(crate) struct BatchOutcome {
    /// Children never seen before, to be counted and queued.
    pub new_orthos: Vec<Ortho>,
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
}

impl BatchOutcome {
    fn absorb(
        mut self,
        ortho: Ortho,
        interner: &Interner,
        seen: &SeenSet,
        keep_leaves: bool,
    ) -> Self {
        if self.error.is_some() {
            return self;
        }
        let Self {
            new_orthos,
            best,
            best_key,
            generated,
            scratch,
            ..
        } = &mut self;
        let expanded = expand(&ortho, interner, scratch, |child| {
            *generated += 1;
            if seen.insert(child.id()) {
                // Nearly every child loses on (volume, fullness) alone; the
                // full comparison runs only on a tie.
                let key = child.rank_key();
                let challenges = match best {
                    None => true,
                    Some(best) => {
                        key > *best_key || (key == *best_key && child.rank_cmp(best).is_gt())
                    }
                };
                if challenges {
                    *best = Some(child.clone());
                    *best_key = key;
                }
                new_orthos.push(child);
            }
        });
        match expanded {
            Ok(true) => {}
            Ok(false) => {
                self.leaves += 1;
                if keep_leaves {
                    self.leaf_orthos.push(ortho);
                }
            }
            Err(error) => self.error = Some(error),
        }
        self
    }

    fn merge(mut self, mut other: Self) -> Self {
        if self.new_orthos.len() < other.new_orthos.len() {
            std::mem::swap(&mut self.new_orthos, &mut other.new_orthos);
        }
        self.new_orthos.append(&mut other.new_orthos);
        self.leaf_orthos.append(&mut other.leaf_orthos);
        self.leaves += other.leaves;
        self.generated += other.generated;
        self.best = better(self.best, other.best);
        self.best_key = self.best.as_ref().map_or((0, 0), Ortho::rank_key);
        self.error = self.error.or(other.error);
        self
    }
}

/// The better of two optional orthos by the §7 order.
pub(crate) fn better(a: Option<Ortho>, b: Option<Ortho>) -> Option<Ortho> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.rank_cmp(&a).is_gt() { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Expands `batch` on the current rayon pool.
pub(crate) fn expand_batch(
    batch: Vec<Ortho>,
    interner: &Interner,
    seen: &SeenSet,
    keep_leaves: bool,
) -> BatchOutcome {
    batch
        .into_par_iter()
        .fold(BatchOutcome::default, |outcome, ortho| {
            outcome.absorb(ortho, interner, seen, keep_leaves)
        })
        .reduce(BatchOutcome::default, BatchOutcome::merge)
}
