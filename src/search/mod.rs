//! The search engine (ORTHO.md §6): a loop that pops up to `batch_size`
//! orthos from the pending stack, expands them in parallel with rayon and
//! pushes the children it accepts, tracking leaves and the optimal ortho.
//!
//! Each ortho is accepted from exactly one parent, its canonical one (see
//! [`crate::canonical`]), so the search is a tree: nothing found needs to be
//! remembered to avoid finding it twice, and depth-first order keeps memory
//! flat however large the search grows. [`Dedup::SeenSet`] keeps the former
//! way, a set of every ortho's id, as a reference for tests and benches.
//!
//! * `batch` — the batch loop;
//! * [`exploration`] — a search kept across versions: `version` runs one
//!   version's phases, `revisit` scans the stored history for orthos whose
//!   candidates grew, `manifest` is what the owner stores about it;
//! * `history` — its on-disk format (`records` the payload of a batch
//!   block), `replay` to read it back in full, `sparse` to read back only
//!   the records a new version wants;
//! * `seen` — the seen set of the reference mode.
//!
//! The engine knows nothing of processes or the network; callers watch it
//! through [`SearchObserver`].

mod backing;
mod batch;
pub mod exploration;
mod history;
mod manifest;
mod mapping;
mod records;
mod replay;
mod revisit;
mod seen;
mod sparse;
mod version;

use std::path::PathBuf;
use std::time::Duration;

pub use exploration::{AdvanceOutcome, Exploration, Scope, Subtrees};
pub use history::FORMAT_VERSION;

/// Encodes a list of orthos (with a count and a CRC-32), as units travel
/// between a coordinator and its workers.
pub fn encode_ortho_list(orthos: &[Ortho]) -> Vec<u8> {
    history::encode_checked_orthos(orthos)
}

/// The orthos of [`encode_ortho_list`]; an error says what is wrong.
pub fn decode_ortho_list(bytes: &[u8]) -> std::result::Result<Vec<Ortho>, String> {
    history::decode_checked_orthos(bytes)
}
pub use manifest::{Checkpoint, Checkpoints, Manifest, NoCheckpoints, SegmentExtent};
pub use seen::SeenSet;

use crate::error::{Error, Result};
use crate::interner::Interner;
use crate::ortho::Ortho;
use batch::better;

/// Default number of orthos expanded per parallel batch.
pub const DEFAULT_BATCH: usize = 1000;

/// How children are kept from being found twice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Dedup {
    /// Each child is accepted only from its canonical parent: a tree,
    /// nothing to remember.
    #[default]
    Tree,
    /// Each child's id goes into a set of every ortho found, and only new
    /// ones are kept (the reference; memory grows with every ortho).
    SeenSet,
}

impl Dedup {
    /// The mode's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tree => "tree",
            Self::SeenSet => "seen-set",
        }
    }

    /// The mode named `name` on the command line.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Tree, Self::SeenSet]
            .into_iter()
            .find(|mode| mode.name() == name)
    }
}

/// How a search runs. None of these settings changes its figures.
#[derive(Clone, Debug)]
pub struct SearchConfig {
    /// Worker threads; 0 means one per core.
    pub threads: usize,
    /// Orthos popped and expanded per parallel batch.
    pub batch_size: usize,
    /// Scratch directory: a one-off search keeps its history under it once
    /// the history outgrows memory.
    pub scratch_dir: PathBuf,
    /// How duplicates are avoided.
    pub dedup: Dedup,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            threads: 0,
            batch_size: DEFAULT_BATCH,
            scratch_dir: std::env::temp_dir(),
            dedup: Dedup::default(),
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
    /// Orthos expanded for the first time (the empty start ortho excluded).
    pub processed: u64,
    /// Stored orthos of earlier versions checked for grown phrase nodes.
    pub scanned: u64,
    /// Stored orthos expanded again because their candidates may have grown.
    pub revisited: u64,
    /// Children generated, those not accepted included.
    pub generated: u64,
    /// Most orthos waiting to be expanded at once.
    pub peak_queue: u64,
    /// Orthos recorded in the history by this version.
    pub stored: u64,
    /// Checkpoints taken.
    pub checkpoints: u64,
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

    /// Whether [`SearchObserver::on_orthos`] should receive every ortho found.
    fn wants_orthos(&self) -> bool {
        false
    }

    /// Orthos found since the last call (only if [`SearchObserver::wants_orthos`]).
    fn on_orthos(&mut self, _orthos: &[Ortho]) -> Result<()> {
        Ok(())
    }

    /// Called after each batch; an error stops the search.
    fn on_batch(&mut self, _progress: &Progress) -> Result<()> {
        Ok(())
    }

    /// Asked after each batch with the orthos pending (found, not yet
    /// expanded; the first found first): how many of the first to hand to
    /// other searches now, with their subtrees (see
    /// [`AdvanceOutcome::handed_off`]). The search goes on with the rest; handing
    /// all of them off ends it.
    fn hand_off(&mut self, _pending: &[Ortho]) -> usize {
        0
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
            .map_err(|e| Error::Internal(format!("cannot start search threads: {e}")))?;
        Ok(Self { config, pool })
    }

    /// Threads in the pool.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Runs the part `scope` of the search over `interner`, from scratch,
    /// keeping no history.
    pub fn run(
        &self,
        interner: &Interner,
        scope: Scope,
        observer: &mut dyn SearchObserver,
    ) -> Result<SearchOutcome> {
        let mut exploration = Exploration::temporary(&self.config.scratch_dir, scope)?;
        exploration.discard_history();
        let AdvanceOutcome { figures, stats, .. } =
            self.advance(&mut exploration, interner, observer)?;
        Ok(SearchOutcome { figures, stats })
    }

    /// The configuration.
    pub fn config(&self) -> &SearchConfig {
        &self.config
    }

    /// Brings `exploration` to `interner`'s version.
    pub fn advance(
        &self,
        exploration: &mut Exploration,
        interner: &Interner,
        observer: &mut dyn SearchObserver,
    ) -> Result<AdvanceOutcome> {
        exploration.advance(
            &self.pool,
            &self.config,
            interner,
            None,
            observer,
            &mut NoCheckpoints,
        )
    }

    /// Brings `exploration` to `interner`'s version, avoiding duplicates as
    /// `dedup` says (whatever the configuration says).
    pub fn advance_with(
        &self,
        dedup: Dedup,
        exploration: &mut Exploration,
        interner: &Interner,
        observer: &mut dyn SearchObserver,
    ) -> Result<AdvanceOutcome> {
        let config = SearchConfig {
            dedup,
            ..self.config.clone()
        };
        exploration.advance(
            &self.pool,
            &config,
            interner,
            None,
            observer,
            &mut NoCheckpoints,
        )
    }

    /// Finishes the version `checkpoint` was taken in (when given) or brings
    /// `exploration` to `interner`'s version, checkpointing as `checkpoints` asks.
    pub fn advance_durably(
        &self,
        exploration: &mut Exploration,
        interner: &Interner,
        resume: Option<&Checkpoint>,
        observer: &mut dyn SearchObserver,
        checkpoints: &mut dyn Checkpoints,
    ) -> Result<AdvanceOutcome> {
        exploration.advance(
            &self.pool,
            &self.config,
            interner,
            resume,
            observer,
            checkpoints,
        )
    }
}
