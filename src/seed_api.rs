//! The seed's `process_text` API, kept call-compatible with its usage example.
//!
//! Each call ingests one text as the next interner version and brings the
//! caller's sets up to the figures of a fresh search at that version.

use std::collections::{HashMap, HashSet};

use crate::error::Result;
use crate::interner::Interner;
use crate::ortho::{Ortho, OrthoId};
use crate::search::{Progress, SearchConfig, SearchObserver, search};

/// `checkpoint_fn` is called each time this many more orthos have been processed.
pub const CHECKPOINT_EVERY: u64 = 100_000;

/// What a checkpoint function is shown.
#[derive(Debug)]
pub struct SeedCheckpoint<'a> {
    /// The interner being searched.
    pub interner: &'a Interner,
    /// Orthos processed so far in this call.
    pub processed: u64,
    /// Orthos found so far in this call.
    pub orthos: u64,
    /// Orthos waiting in the queue.
    pub queued: u64,
}

/// Ingests `text` into `interner` (a new one when `None`) and searches.
///
/// Afterwards `seen_ids` holds the id of every ortho found, `frontier` the ids
/// of the leaves, `frontier_orthos_saved` the leaves themselves and
/// `optimal_ortho` the optimum (ORTHO.md §7). Returns
/// `(interner, changed_keys_count, frontier_size, impacted_frontier_count, processed)`:
/// phrase prefixes whose completions grew, leaves, former leaves that gained
/// children, and orthos processed by this call.
///
/// ```
/// use fold::process_text;
/// use std::collections::{HashMap, HashSet};
///
/// let mut seen_ids = HashSet::new();
/// let mut optimal_ortho = None;
/// let mut frontier = HashSet::new();
/// let mut frontier_orthos_saved = HashMap::new();
///
/// let (interner, changed, frontier_size, impacted, processed) =
///     process_text(
///         "your text here",
///         None,
///         &mut seen_ids,
///         &mut optimal_ortho,
///         &mut frontier,
///         &mut frontier_orthos_saved,
///         |_| Ok(()),
///     )?;
/// # assert_eq!(frontier_size, frontier.len());
/// # assert_eq!(processed, seen_ids.len());
/// # let _ = (interner, changed, impacted);
/// # Ok::<(), fold::Error>(())
/// ```
pub fn process_text<F>(
    text: &str,
    interner: Option<Interner>,
    seen_ids: &mut HashSet<OrthoId>,
    optimal_ortho: &mut Option<Ortho>,
    frontier: &mut HashSet<OrthoId>,
    frontier_orthos_saved: &mut HashMap<OrthoId, Ortho>,
    checkpoint_fn: F,
) -> Result<(Interner, usize, usize, usize, usize)>
where
    F: FnMut(&SeedCheckpoint<'_>) -> Result<()>,
{
    let mut interner = interner.unwrap_or_default();
    let ingested = interner.ingest(text);

    seen_ids.clear();
    let mut observer = SeedObserver {
        interner: &interner,
        checkpoint_fn,
        next_checkpoint: CHECKPOINT_EVERY,
        leaves: HashMap::new(),
        seen_ids,
    };
    let outcome = search(&interner, &SearchConfig::default(), &mut observer)?;
    let leaves = observer.leaves;

    let impacted = frontier
        .iter()
        .filter(|id| !leaves.contains_key(id))
        .count();
    frontier.clear();
    frontier.extend(leaves.keys().copied());
    *frontier_orthos_saved = leaves;
    *optimal_ortho = outcome.figures.optimal;

    Ok((
        interner,
        ingested.changed_prefixes,
        frontier.len(),
        impacted,
        outcome.stats.processed as usize,
    ))
}

struct SeedObserver<'a, F> {
    interner: &'a Interner,
    checkpoint_fn: F,
    next_checkpoint: u64,
    leaves: HashMap<OrthoId, Ortho>,
    seen_ids: &'a mut HashSet<OrthoId>,
}

impl<F> SearchObserver for SeedObserver<'_, F>
where
    F: FnMut(&SeedCheckpoint<'_>) -> Result<()>,
{
    fn wants_leaves(&self) -> bool {
        true
    }

    fn on_leaves(&mut self, leaves: Vec<Ortho>) -> Result<()> {
        self.leaves
            .extend(leaves.into_iter().map(|leaf| (leaf.id(), leaf)));
        Ok(())
    }

    fn wants_orthos(&self) -> bool {
        true
    }

    fn on_orthos(&mut self, orthos: &[Ortho]) -> Result<()> {
        self.seen_ids.extend(orthos.iter().map(Ortho::id));
        Ok(())
    }

    fn on_batch(&mut self, progress: &Progress) -> Result<()> {
        while progress.processed >= self.next_checkpoint {
            self.next_checkpoint += CHECKPOINT_EVERY;
            (self.checkpoint_fn)(&SeedCheckpoint {
                interner: self.interner,
                processed: progress.processed,
                orthos: progress.orthos,
                queued: progress.queued,
            })?;
        }
        Ok(())
    }
}
