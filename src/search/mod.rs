//! The search engine (ORTHO.md §6): a loop that pops up to `batch_size`
//! orthos from the work queue, expands them in parallel with rayon, dedups the
//! children in a concurrent seen set and queues the new ones, tracking leaves
//! and the optimal ortho as it goes.
//!
//! The engine knows nothing of files, processes or the network; callers watch
//! it through [`SearchObserver`].

mod batch;
mod seen;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use seen::SeenSet;

use crate::error::{Error, Result};
use crate::interner::{Interner, Token};
use crate::ortho::{Ortho, Scratch, expand};
use crate::queue::{DEFAULT_BUFFER, WorkQueue};
use batch::{better, expand_batch};

/// Default number of orthos expanded per parallel batch.
pub const DEFAULT_BATCH: usize = 1000;

/// How a search runs. None of these settings changes its figures.
#[derive(Clone, Debug)]
pub struct SearchConfig {
    /// Worker threads; 0 means one per core.
    pub threads: usize,
    /// Orthos popped and expanded per parallel batch.
    pub batch_size: usize,
    /// Orthos the work queue keeps in memory before spilling to disk.
    pub queue_buffer: usize,
    /// Directory for the queue's temporary spill file.
    pub spill_dir: PathBuf,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            threads: 0,
            batch_size: DEFAULT_BATCH,
            queue_buffer: DEFAULT_BUFFER,
            spill_dir: std::env::temp_dir(),
        }
    }
}

/// The figures of ORTHO.md §7 that the search itself determines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// Distinct orthos found, the empty one excluded.
    pub orthos: u64,
    /// Orthos found that are leaves.
    pub frontier: u64,
    /// The best ortho found, if any.
    pub optimal: Option<Ortho>,
}

impl Figures {
    /// Adds the figures of a disjoint part of the search (a shard): counts
    /// add up and the optimum is the better of the two.
    pub fn add(&mut self, part: &Figures) {
        self.orthos += part.orthos;
        self.frontier += part.frontier;
        self.optimal = better(self.optimal.take(), part.optimal.clone());
    }
}

/// Counters describing the work a search did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchStats {
    /// Orthos expanded (the empty start ortho excluded).
    pub processed: u64,
    /// Children generated, duplicates included.
    pub generated: u64,
    /// Largest queue length seen.
    pub peak_queue: u64,
    /// Orthos written to the queue's spill file.
    pub spilled: u64,
    /// Approximate bytes held by the seen set at the end.
    pub seen_bytes: u64,
}

/// A snapshot handed to the observer after every batch.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Orthos found so far.
    pub orthos: u64,
    /// Orthos expanded so far.
    pub processed: u64,
    /// Orthos waiting in the queue.
    pub queued: u64,
    /// Leaves found so far.
    pub frontier: u64,
    /// The best ortho found so far.
    pub optimal: Option<Ortho>,
    /// Time since the search started.
    pub elapsed: Duration,
}

/// Watches a running search. Every method runs between batches, on the
/// thread that called [`search`].
pub trait SearchObserver {
    /// Whether [`SearchObserver::on_leaves`] should receive leaf orthos.
    fn wants_leaves(&self) -> bool {
        false
    }

    /// Leaves found in the last batch (only if [`SearchObserver::wants_leaves`]).
    fn on_leaves(&mut self, _leaves: Vec<Ortho>) -> Result<()> {
        Ok(())
    }

    /// Called after each batch; an error stops the search.
    fn on_batch(&mut self, _progress: &Progress) -> Result<()> {
        Ok(())
    }
}

/// An observer that watches nothing.
pub struct Unobserved;

impl SearchObserver for Unobserved {}

/// Everything a finished search leaves behind.
pub struct SearchOutcome {
    /// Its figures.
    pub figures: Figures,
    /// Its work counters.
    pub stats: SearchStats,
    /// The ids of every ortho found.
    pub seen: SeenSet,
}

/// Which part of the search to run.
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

/// Runs the whole search over `interner` from the empty ortho.
pub fn search(
    interner: &Interner,
    config: &SearchConfig,
    observer: &mut dyn SearchObserver,
) -> Result<SearchOutcome> {
    Searcher::new(config.clone())?.run(interner, Scope::All, observer)
}

/// A search engine with its thread pool, reusable across many searches (a
/// worker runs hundreds of shards without starting threads for each).
pub struct Searcher {
    config: SearchConfig,
    pool: rayon::ThreadPool,
}

impl Searcher {
    /// Starts the thread pool of `config.threads` threads.
    pub fn new(config: SearchConfig) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads)
            .thread_name(|index| format!("fold-search-{index}"))
            .build()
            .map_err(|e| Error::io("cannot start search threads", std::io::Error::other(e)))?;
        Ok(Self { config, pool })
    }

    /// Threads in the pool.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Runs the part `scope` of the search over `interner`.
    pub fn run(
        &self,
        interner: &Interner,
        scope: Scope,
        observer: &mut dyn SearchObserver,
    ) -> Result<SearchOutcome> {
        run_batches(&self.pool, &self.config, interner, scope, observer)
    }
}

fn run_batches(
    pool: &rayon::ThreadPool,
    config: &SearchConfig,
    interner: &Interner,
    scope: Scope,
    observer: &mut dyn SearchObserver,
) -> Result<SearchOutcome> {
    let started = Instant::now();
    let seen = SeenSet::new();
    let mut queue = WorkQueue::new(config.queue_buffer, &config.spill_dir);
    let mut figures = Figures::default();
    let mut stats = SearchStats::default();
    let keep_leaves = observer.wants_leaves();
    let batch_size = config.batch_size.max(1);

    // The empty ortho is expanded but never counted, not even as a leaf; a
    // shard keeps only its own origin among the empty ortho's children.
    let mut pending = Vec::new();
    expand(
        &Ortho::empty(),
        interner,
        &mut Scratch::default(),
        |child| {
            let in_scope = match scope {
                Scope::All => true,
                Scope::Origin(token) => child.raw_slots()[0] == token.0,
            };
            if in_scope && seen.insert(child.id()) {
                figures.optimal = better(figures.optimal.take(), Some(child.clone()));
                pending.push(child);
            }
        },
    )?;
    stats.generated += pending.len() as u64;
    figures.orthos += pending.len() as u64;
    let mut batch = Vec::new();

    // Each round expands one batch while, on the other side of a rayon join,
    // the previous round's new orthos are queued and the next batch is popped.
    // The search's figures do not depend on the order orthos are expanded in.
    loop {
        if batch.is_empty() {
            if pending.is_empty() && queue.is_empty() {
                break;
            }
            push_and_pop(&mut queue, &mut pending, batch_size, &mut batch)?;
            continue;
        }
        let expanded = batch.len() as u64;
        let mut next = Vec::with_capacity(batch_size);
        let (mut outcome, queued) = pool.install(|| {
            rayon::join(
                || expand_batch(batch, interner, &seen, keep_leaves),
                || push_and_pop(&mut queue, &mut pending, batch_size, &mut next),
            )
        });
        queued?;
        if let Some(error) = outcome.error.take() {
            return Err(error);
        }
        stats.processed += expanded;
        stats.generated += outcome.generated;
        figures.frontier += outcome.leaves;
        figures.orthos += outcome.new_orthos.len() as u64;
        figures.optimal = better(figures.optimal.take(), outcome.best);
        if keep_leaves {
            observer.on_leaves(std::mem::take(&mut outcome.leaf_orthos))?;
        }
        pending = outcome.new_orthos;
        batch = next;
        let queued = queue.len() + (pending.len() + batch.len()) as u64;
        stats.peak_queue = stats.peak_queue.max(queued);
        observer.on_batch(&Progress {
            orthos: figures.orthos,
            processed: stats.processed,
            queued,
            frontier: figures.frontier,
            optimal: figures.optimal.clone(),
            elapsed: started.elapsed(),
        })?;
    }
    stats.spilled = queue.spilled_total();
    stats.seen_bytes = seen.approx_bytes();
    Ok(SearchOutcome {
        figures,
        stats,
        seen,
    })
}

/// Queues `pending` and pops the next batch into `batch`.
fn push_and_pop(
    queue: &mut WorkQueue,
    pending: &mut Vec<Ortho>,
    batch_size: usize,
    batch: &mut Vec<Ortho>,
) -> Result<()> {
    for ortho in pending.drain(..) {
        queue.push(ortho)?;
    }
    queue.pop_batch(batch_size, batch)
}
