//! A worker node (`fold-worker`): it holds one Work stream to the coordinator,
//! searches the units it is assigned on a dedicated search thread, and
//! streams progress (which renews its leases), frontier deltas, optimal
//! candidates and final figures back. Asked to split a unit, it stops the
//! search after the current batch and hands its pending orthos back as the
//! roots of new units.
//!
//! * [`session`] — one Work stream: assignments, splits, reports, heartbeats, hand-backs.
//! * [`texts`] — the interner of a unit's version, from the coordinator's texts.
//! * [`runner`] — the search thread.
//! * [`units`] — the units kept on disk for incremental later versions.
//!
//! The worker locks its data dir (one worker per dir), reconnects with
//! backoff when the coordinator goes away, and on shutdown (SIGTERM or
//! Ctrl-C) hands back every unit it has not finished. With
//! `--metrics-listen` it serves Prometheus metrics ([`crate::metrics`]).

mod runner;
mod session;
mod texts;
mod units;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::auth::BearerToken;
use crate::error::{Error, Result};
use crate::search::SearchConfig;
use runner::UnitRunner;
use session::SessionEnd;
use units::UnitStore;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The coordinator's URL, e.g. `http://127.0.0.1:50051` (or `https://`).
    pub coordinator: String,
    /// The CA certificate that signed the coordinator's TLS certificate
    /// (`https://` only; `None`: the system's roots).
    pub ca_cert: Option<PathBuf>,
    /// Where the worker keeps the units it searched (for incremental later
    /// versions) and its one-off search logs.
    pub data_dir: PathBuf,
    /// Search threads; 0 means one per core.
    pub threads: usize,
    /// The bearer token.
    pub token: Option<String>,
    /// The name the worker reports.
    pub name: String,
    /// Units with at least this many orthos are kept on disk, so their
    /// next versions are searched incrementally; smaller ones are searched
    /// again from scratch.
    pub keep_units_from: u64,
    /// Serve Prometheus metrics on this address.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Default for [`WorkerOptions::keep_units_from`].
pub const DEFAULT_KEEP_UNITS_FROM: u64 = 1_000;

/// Works for the coordinator until `shutdown` becomes true.
pub async fn run(options: WorkerOptions, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    let target = crate::channel::Target::new(&options.coordinator, options.ca_cert.as_deref())?;
    // Before the data dir is touched: a taken port stops the worker early.
    let metrics_listener = match options.metrics_listen {
        Some(address) => Some(crate::metrics::bind(address).await?),
        None => None,
    };
    std::fs::create_dir_all(&options.data_dir).map_err(|e| {
        Error::io(
            format!("cannot create data dir {}", options.data_dir.display()),
            e,
        )
    })?;
    // Held until the worker exits (the lock goes with the file handle).
    let _lock = lock_data_dir(&options.data_dir)?;
    let scratch_dir = options.data_dir.join("scratch");
    // One-off searches of a worker that was killed are of no further use
    // (nor is the `queue` dir of workers before this name).
    let _ = std::fs::remove_dir_all(&scratch_dir);
    let _ = std::fs::remove_dir_all(options.data_dir.join("queue"));
    let store = UnitStore::new(
        options.data_dir.join("units"),
        scratch_dir.clone(),
        options.keep_units_from,
    )?;
    let runner = Arc::new(UnitRunner::start(
        SearchConfig {
            threads: options.threads,
            scratch_dir,
            ..SearchConfig::default()
        },
        store,
    )?);
    let token = BearerToken::new(options.token.as_deref())?;
    let metrics = match metrics_listener {
        Some(listener) => {
            let role = crate::metrics::Role::Worker;
            let served = crate::metrics::serve(listener, role, || {}, shutdown.clone())?;
            Some(tokio::spawn(served))
        }
        None => None,
    };
    let worked = work(&options, &target, &token, &runner, &mut shutdown).await;
    // Joined shutdown: the search thread finishes its batch and is waited
    // for, and so is the metrics server (told by `shutdown`, or stopped here
    // when the worker ends for another reason).
    let stopping = runner.clone();
    let _ = tokio::task::spawn_blocking(move || stopping.stop()).await;
    if let Some(metrics) = metrics {
        metrics.abort();
        let _ = metrics.await;
    }
    worked
}

/// Holds sessions with the coordinator, reconnecting with backoff, until
/// `shutdown` becomes true or the coordinator refuses the token.
async fn work(
    options: &WorkerOptions,
    target: &crate::channel::Target,
    token: &BearerToken,
    runner: &Arc<UnitRunner>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let ended = session::session(options, target, token, runner, shutdown).await;
        crate::metrics::coordinator_connected(false);
        crate::metrics::units_held(0);
        match ended {
            Ok(SessionEnd::Shutdown) => return Ok(()),
            Ok(SessionEnd::Welcomed) => backoff = Duration::from_millis(100),
            Ok(SessionEnd::Refused(status)) if status.code() == tonic::Code::Unauthenticated => {
                return Err(Error::Unauthenticated(status.message().to_owned()));
            }
            Ok(SessionEnd::Refused(status)) => {
                tracing::warn!(%status, "coordinator refused the session");
            }
            Err(error) => tracing::warn!(%error, "cannot reach the coordinator"),
        }
        tracing::info!(delay_ms = backoff.as_millis() as u64, "reconnecting");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return Ok(()),
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Name of the lock file in a worker's data dir.
const LOCK_FILE: &str = "lock";

/// Locks `dir` for this worker: two workers on one data dir would delete and
/// overwrite each other's kept units and scratch files.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::InUse(format!(
            "data dir {} is in use by another fold-worker ({} is locked); give each worker its \
             own --data-dir",
            dir.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Error::io(format!("cannot lock {}", path.display()), e))
        }
    }
}

/// A default worker name: host name and process id.
pub fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}
