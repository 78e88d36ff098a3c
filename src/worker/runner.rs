//! The worker's search thread: it runs assigned shards one after another on
//! one reusable [`Searcher`], turning engine progress into wire reports.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::shards::ShardStore;
use crate::error::{Error, Result};
use crate::interner::Interner;
use crate::ortho::Ortho;
use crate::proto::{self, v1};
use crate::search::{Figures, Progress, SearchConfig, SearchObserver, Searcher};

use v1::worker_message::Kind as ToCoordinator;

/// How often a running shard reports progress (and so renews its lease).
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// One shard to search.
pub struct Job {
    /// The session that received it; a newer session voids it.
    pub session: u64,
    /// The attempt id.
    pub attempt: u64,
    /// The shard's origin token.
    pub origin: u32,
    /// The interner of the shard's version.
    pub interner: Arc<Interner>,
    /// Content hashes of the texts of versions 1 to the shard's version.
    pub texts: Arc<Vec<String>>,
    /// Where reports go.
    pub events: UnboundedSender<v1::WorkerMessage>,
}

/// Owns the search thread.
pub struct ShardRunner {
    jobs: std::sync::mpsc::Sender<Job>,
    /// Jobs of sessions below this number are cancelled.
    live_from: Arc<AtomicU64>,
    /// Attempts the coordinator took back: skipped, or stopped between batches.
    revoked: Arc<Mutex<HashSet<u64>>>,
    next_session: AtomicU64,
    threads: usize,
    kept: Arc<std::sync::Mutex<Vec<(u32, u32)>>>,
}

impl ShardRunner {
    /// Starts the search thread and its pool; searched shards are kept in `store`.
    pub fn start(config: SearchConfig, store: ShardStore) -> Result<Self> {
        let searcher = Searcher::new(config)?;
        let threads = searcher.threads();
        let kept = Arc::new(std::sync::Mutex::new(store.kept()));
        let kept_now = kept.clone();
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let live_from = Arc::new(AtomicU64::new(0));
        let revoked = Arc::new(Mutex::new(HashSet::new()));
        let cancel = Cancellation {
            live_from: live_from.clone(),
            revoked: revoked.clone(),
        };
        std::thread::Builder::new()
            .name("fold-shards".into())
            .spawn(move || {
                for job in queue {
                    if cancel.cancelled(&job) {
                        continue;
                    }
                    run_job(&searcher, &store, &job, &cancel, &kept_now);
                }
            })
            .map_err(|e| Error::io("cannot start the search thread", e))?;
        Ok(Self {
            jobs,
            live_from,
            revoked,
            next_session: AtomicU64::new(0),
            threads,
            kept,
        })
    }

    /// The shards kept on disk: (origin, version).
    pub fn kept_shards(&self) -> Vec<(u32, u32)> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Search threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// A number for a new session.
    pub fn new_session(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::AcqRel)
    }

    /// Queues a shard.
    pub fn submit(&self, job: Job) {
        let _ = self.jobs.send(job);
    }

    /// Cancels every job of `session` (and of older sessions).
    pub fn cancel(&self, session: u64) {
        self.live_from.fetch_max(session + 1, Ordering::AcqRel);
        // Attempt ids belong to one session: those revoked are all cancelled now.
        self.revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Cancels the job of one attempt: it is skipped if it has not started,
    /// and stopped at its next batch if it has.
    pub fn revoke(&self, attempt: u64) {
        self.revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(attempt);
    }

    /// Whether `attempt` was revoked.
    pub fn is_revoked(&self, attempt: u64) -> bool {
        self.revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&attempt)
    }
}

/// What the search thread checks to drop a job: its session ended or its
/// attempt was revoked.
struct Cancellation {
    live_from: Arc<AtomicU64>,
    revoked: Arc<Mutex<HashSet<u64>>>,
}

impl Cancellation {
    fn cancelled(&self, job: &Job) -> bool {
        job.session < self.live_from.load(Ordering::Acquire)
            || self
                .revoked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&job.attempt)
    }
}

fn run_job(
    searcher: &Searcher,
    store: &ShardStore,
    job: &Job,
    cancel: &Cancellation,
    kept: &std::sync::Mutex<Vec<(u32, u32)>>,
) {
    tracing::debug!(
        attempt = job.attempt,
        version = job.texts.len(),
        origin = job.origin,
        "searching a shard"
    );
    let mut reporter = Reporter {
        job,
        cancel,
        base: 0,
        expanded: 0,
        last_report: Instant::now(),
        frontier_reported: 0,
        optimal_reported: None,
    };
    let searched = search_shard(searcher, store, job, &mut reporter);
    if let Ok((_, _, stored)) = &searched {
        let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.retain(|&(origin, _)| origin != job.origin);
        if *stored {
            kept.push((job.origin, job.texts.len() as u32));
        }
    }
    let message = match searched {
        Ok((figures, base_version, stored)) => ToCoordinator::Done(v1::ShardDone {
            attempt: job.attempt,
            orthos: figures.orthos,
            frontier: figures.frontier,
            optimal: figures.optimal.as_ref().map(proto::tokens_of),
            base_version,
            stored,
        }),
        Err(Error::Cancelled) => return,
        Err(error) => ToCoordinator::Failed(v1::ShardFailed {
            attempt: job.attempt,
            reason: error.to_string(),
        }),
    };
    let _ = job.events.send(v1::WorkerMessage {
        kind: Some(message),
    });
}

/// Searches a job's shard, from its kept orthos when they are usable, and
/// keeps the result. Returns the figures, the version searched up from (0:
/// from scratch) and whether the shard is kept.
fn search_shard(
    searcher: &Searcher,
    store: &ShardStore,
    job: &Job,
    reporter: &mut Reporter<'_>,
) -> Result<(Figures, u32, bool)> {
    let mut search = store.open(job.origin, &job.texts)?;
    reporter.base = search.exploration.manifest().orthos();
    let advanced = searcher.advance(&mut search.exploration, &job.interner, reporter)?;
    let figures = &advanced.figures;
    reporter.report(figures.orthos, figures.frontier, &figures.optimal, 0);
    let kept = store.keep(job.origin, &job.texts, &mut search)?;
    Ok((advanced.figures, search.base_version, kept))
}

/// Turns engine progress into Progress reports, at most every
/// [`REPORT_EVERY`] and once when the search is done. A report counts the
/// orthos this attempt found: not those a kept shard had stored before.
struct Reporter<'a> {
    job: &'a Job,
    cancel: &'a Cancellation,
    /// Orthos of the shard before this attempt (a kept shard's).
    base: u64,
    /// Orthos expanded so far, for the metrics.
    expanded: u64,
    last_report: Instant,
    frontier_reported: u64,
    optimal_reported: Option<Ortho>,
}

impl SearchObserver for Reporter<'_> {
    fn on_batch(&mut self, progress: &Progress) -> Result<()> {
        if self.cancel.cancelled(self.job) {
            return Err(Error::Cancelled);
        }
        crate::metrics::orthos_expanded(progress.processed.saturating_sub(self.expanded));
        self.expanded = progress.processed;
        if self.last_report.elapsed() < REPORT_EVERY {
            return Ok(());
        }
        self.report(
            progress.orthos,
            progress.frontier,
            &progress.optimal,
            progress.queued,
        );
        Ok(())
    }
}

impl Reporter<'_> {
    /// Sends a Progress report of the shard's figures so far.
    fn report(&mut self, orthos: u64, frontier: u64, optimal: &Option<Ortho>, queued: u64) {
        self.last_report = Instant::now();
        let candidate = (*optimal != self.optimal_reported)
            .then(|| optimal.as_ref().map(proto::tokens_of))
            .flatten();
        self.optimal_reported = optimal.clone();
        let report = v1::Progress {
            attempt: self.job.attempt,
            orthos: orthos.saturating_sub(self.base),
            // A new version can turn former leaves into inner orthos.
            frontier_added: frontier.saturating_sub(self.frontier_reported),
            frontier_removed: self.frontier_reported.saturating_sub(frontier),
            queued,
            optimal_candidate: candidate,
        };
        self.frontier_reported = frontier;
        let _ = self.job.events.send(v1::WorkerMessage {
            kind: Some(ToCoordinator::Progress(report)),
        });
    }
}
