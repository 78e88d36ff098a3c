//! The worker's search thread: it runs assigned units one after another on
//! one reusable [`Searcher`], turning engine progress into wire reports, and
//! hands part of a unit off between batches when the coordinator asks for a
//! split.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::units::UnitStore;
use crate::error::{Error, Result};
use crate::ids::{AttemptId, UnitId};
use crate::interner::{Interner, Version};
use crate::ortho::Ortho;
use crate::proto::{self, v1};
use crate::search::{
    Dedup, Figures, Progress, Scope, SearchConfig, SearchObserver, Searcher, encode_ortho_list,
};

use v1::worker_message::Kind as ToCoordinator;

/// How often a running unit reports progress (and so renews its lease).
const REPORT_EVERY: Duration = Duration::from_millis(100);

/// Most orthos handed off per new unit in one split. The first found are
/// handed off (the shallowest, with the largest subtrees), so a few carry
/// much of the work, and the bytes of a split stay small.
const MOST_HANDED_OFF_PER_PART: usize = 32;

/// Into how many new units a unit at its size limit hands its pending orthos.
const PARTS_AT_LIMIT: u32 = 2;

/// One unit to search.
pub struct Job {
    /// The session that received it; a newer session voids it.
    pub session: u64,
    /// The attempt id.
    pub attempt: AttemptId,
    /// The unit.
    pub unit: UnitId,
    /// What it covers.
    pub scope: Scope,
    /// The version of its kept orthos it may bring up to date (0: none).
    pub base_version: Version,
    /// How to avoid finding an ortho twice.
    pub dedup: Dedup,
    /// Orthos it may expand before it hands the rest off (0: no limit).
    pub most_orthos: u64,
    /// The interner of the unit's version.
    pub interner: Arc<Interner>,
    /// Content hashes of the texts of versions 1 to the unit's version.
    pub text_hashes: Arc<Vec<String>>,
    /// Where reports go.
    pub events: UnboundedSender<v1::WorkerMessage>,
}

/// Owns the search thread.
pub struct UnitRunner {
    /// The search thread's queue; `None` once stopped.
    jobs: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    control: Arc<Control>,
    next_session: AtomicU64,
    threads: usize,
    kept: Arc<Mutex<Vec<(UnitId, Version, AttemptId)>>>,
}

/// What the session tells the search thread about its jobs.
#[derive(Default)]
struct Control {
    /// Jobs of sessions below this number are cancelled.
    live_from: AtomicU64,
    /// Attempts the coordinator took back: skipped, or stopped between batches.
    revoked: Mutex<HashSet<AttemptId>>,
    /// Attempts asked to split, and into how many parts.
    splits: Mutex<HashMap<AttemptId, u32>>,
}

impl Control {
    fn cancelled(&self, job: &Job) -> bool {
        job.session < self.live_from.load(Ordering::Acquire)
            || self
                .revoked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&job.attempt)
    }

    /// The parts a split of `attempt` was asked for, once.
    fn take_split(&self, attempt: AttemptId) -> Option<u32> {
        self.splits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&attempt)
    }
}

impl UnitRunner {
    /// Starts the search thread and its pool; searched units are kept in `store`.
    pub fn start(config: SearchConfig, store: UnitStore) -> Result<Self> {
        let searcher = Searcher::new(config)?;
        let threads = searcher.threads();
        let kept = Arc::new(Mutex::new(store.kept()));
        let kept_now = kept.clone();
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let control = Arc::new(Control::default());
        let control_now = control.clone();
        let thread = std::thread::Builder::new()
            .name("fold-units".into())
            .spawn(move || {
                for job in queue {
                    if control_now.cancelled(&job) {
                        continue;
                    }
                    run_job(&searcher, &store, &job, &control_now, &kept_now);
                }
            })
            .map_err(|e| Error::io("cannot start the search thread", e))?;
        Ok(Self {
            jobs: Mutex::new(Some(jobs)),
            thread: Mutex::new(Some(thread)),
            control,
            next_session: AtomicU64::new(0),
            threads,
            kept,
        })
    }

    /// The units kept on disk: (unit, version, attempt).
    pub fn kept_units(&self) -> Vec<(UnitId, Version, AttemptId)> {
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

    /// Queues a unit (nothing once stopped).
    pub fn submit(&self, job: Job) {
        if let Some(jobs) = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = jobs.send(job);
        }
    }

    /// Stops the search thread and waits for it: every job is cancelled (a
    /// running one stops after its current batch) and the queue closed.
    /// Blocking.
    pub fn stop(&self) {
        self.control.live_from.store(u64::MAX, Ordering::Release);
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the search thread panicked");
        }
    }

    /// Cancels every job of `session` (and of older sessions).
    pub fn cancel(&self, session: u64) {
        self.control
            .live_from
            .fetch_max(session + 1, Ordering::AcqRel);
        // Attempt ids belong to one session: those revoked or split are all over now.
        self.control
            .revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.control
            .splits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Cancels the job of one attempt: it is skipped if it has not started,
    /// and stopped at its next batch if it has.
    pub fn revoke(&self, attempt: AttemptId) {
        self.control
            .revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(attempt);
    }

    /// Whether `attempt` was revoked.
    pub fn is_revoked(&self, attempt: AttemptId) -> bool {
        self.control
            .revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&attempt)
    }

    /// Asks the search of `attempt` to hand part of its pending orthos off,
    /// after its current batch, in (at most) `parts` new units.
    pub fn split(&self, attempt: AttemptId, parts: u32) {
        self.control
            .splits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(attempt, parts.max(1));
    }
}

fn run_job(
    searcher: &Searcher,
    store: &UnitStore,
    job: &Job,
    control: &Control,
    kept: &Mutex<Vec<(UnitId, Version, AttemptId)>>,
) {
    tracing::debug!(
        attempt = %job.attempt,
        version = job.text_hashes.len(),
        unit = %job.unit,
        base = job.base_version.get(),
        "searching a unit"
    );
    let mut reporter = Reporter {
        job,
        control,
        expanded: 0,
        last_report: Instant::now(),
        frontier_reported: None,
        optimal_reported: None,
    };
    let searched = search_unit(searcher, store, job, &mut reporter);
    control
        .splits
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&job.attempt);
    if let Ok(done) = &searched {
        let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.retain(|&(unit, _, _)| unit != job.unit);
        if done.kept {
            let version = Version::new(job.text_hashes.len() as u32);
            kept.push((job.unit, version, job.attempt));
        }
    }
    let message = match searched {
        Ok(done) => ToCoordinator::Done(done),
        Err(Error::Cancelled) => return,
        Err(error) => ToCoordinator::Failed(v1::UnitFailed {
            attempt: job.attempt.0,
            reason: error.to_string(),
        }),
    };
    let _ = job.events.send(v1::WorkerMessage {
        kind: Some(message),
    });
}

/// Searches a job's unit, from its kept orthos when the coordinator allows
/// it, keeps the result, and says what it found.
fn search_unit(
    searcher: &Searcher,
    store: &UnitStore,
    job: &Job,
    reporter: &mut Reporter<'_>,
) -> Result<v1::UnitDone> {
    let mut search = store.open(
        job.unit,
        job.scope.clone(),
        &job.text_hashes,
        job.base_version,
    )?;
    let advanced =
        searcher.advance_with(job.dedup, &mut search.exploration, &job.interner, reporter)?;
    let figures = &advanced.figures;
    let expanded = advanced.stats.processed + advanced.stats.revisited;
    reporter.report(figures, 0, expanded);
    let kept = store.keep(job.unit, job.attempt, &job.text_hashes, &mut search)?;
    Ok(v1::UnitDone {
        attempt: job.attempt.0,
        orthos: figures.orthos,
        frontier: figures.frontier,
        optimal: figures.optimal.as_ref().map(proto::tokens_of),
        base_version: search.base_version.get(),
        kept,
        expanded,
    })
}

/// How many of `pending` orthos a split into `parts` hands off: at most
/// half, and at most [`MOST_HANDED_OFF_PER_PART`] per part; none when fewer
/// than two are pending.
fn handed_off_count(pending: usize, parts: u32) -> usize {
    (pending / 2).min(parts as usize * MOST_HANDED_OFF_PER_PART)
}

/// `orthos` in up to `parts` contiguous runs, each encoded as the roots of
/// a new unit.
fn split_parts(orthos: &[Ortho], parts: u32) -> Vec<Vec<u8>> {
    if orthos.is_empty() {
        return Vec::new();
    }
    let size = orthos.len().div_ceil(parts.max(1) as usize);
    orthos.chunks(size).map(encode_ortho_list).collect()
}

/// Turns engine progress into Progress reports (after the first batch, then
/// at most every [`REPORT_EVERY`], and once when the search is done), and
/// hands orthos off when a split was asked for.
struct Reporter<'a> {
    job: &'a Job,
    control: &'a Control,
    /// Orthos expanded so far, as of the last batch.
    expanded: u64,
    last_report: Instant,
    /// The frontier last reported (none before the first report).
    frontier_reported: Option<u64>,
    optimal_reported: Option<Ortho>,
}

impl SearchObserver for Reporter<'_> {
    fn on_batch(&mut self, progress: &Progress) -> Result<()> {
        if self.control.cancelled(self.job) {
            return Err(Error::Cancelled);
        }
        crate::metrics::orthos_expanded(progress.processed.saturating_sub(self.expanded));
        self.expanded = progress.processed;
        // The first batch is reported at once: what the unit has waiting
        // tells the coordinator whether it can be split for an idle worker.
        if self.frontier_reported.is_some() && self.last_report.elapsed() < REPORT_EVERY {
            return Ok(());
        }
        let figures = Figures {
            orthos: progress.orthos,
            frontier: progress.frontier,
            optimal: progress.optimal.clone(),
        };
        self.report(&figures, progress.queued, progress.processed);
        Ok(())
    }

    fn hand_off(&mut self, pending: &[Ortho]) -> usize {
        let asked = self.control.take_split(self.job.attempt);
        let at_limit = self.job.most_orthos > 0 && self.expanded >= self.job.most_orthos;
        let (count, parts) = match asked {
            _ if at_limit => (pending.len(), PARTS_AT_LIMIT),
            Some(parts) => (handed_off_count(pending.len(), parts), parts),
            None => return 0,
        };
        if count == 0 && asked.is_none() {
            return 0;
        }
        // A request is always answered, so the coordinator may ask again.
        let split = v1::UnitSplit {
            attempt: self.job.attempt.0,
            parts: split_parts(&pending[..count], parts),
        };
        let _ = self.job.events.send(v1::WorkerMessage {
            kind: Some(ToCoordinator::Split(split)),
        });
        count
    }
}

impl Reporter<'_> {
    /// Sends a Progress report of the unit's figures so far.
    fn report(&mut self, figures: &Figures, queued: u64, expanded: u64) {
        self.last_report = Instant::now();
        let candidate = (figures.optimal != self.optimal_reported)
            .then(|| figures.optimal.as_ref().map(proto::tokens_of))
            .flatten();
        self.optimal_reported = figures.optimal.clone();
        // The first report carries the whole frontier (a kept unit starts
        // with its stored leaves); later ones what changed since.
        let before = self.frontier_reported.unwrap_or(0);
        let report = v1::Progress {
            attempt: self.job.attempt.0,
            orthos: figures.orthos,
            frontier_added: figures.frontier.saturating_sub(before),
            frontier_removed: before.saturating_sub(figures.frontier),
            queued,
            optimal_candidate: candidate,
            cpu_ms: process_cpu_ms(),
            expanded,
        };
        self.frontier_reported = Some(figures.frontier);
        let _ = self.job.events.send(v1::WorkerMessage {
            kind: Some(ToCoordinator::Progress(report)),
        });
    }
}

/// CPU time this process has used, in milliseconds (user and system, from
/// `/proc/self/stat`; 0 where that is not available).
pub fn process_cpu_ms() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here,
    // counted in clock ticks of 10 ms (Linux's USER_HZ is 100).
    (ticks(11) + ticks(12)) * 10
}
