//! A worker node (`fold-worker`): it holds one Work stream to the coordinator,
//! searches the shards it is assigned on a dedicated search thread, and
//! streams progress (which renews its leases), frontier deltas, optimal
//! candidates and final figures back.
//!
//! The worker reconnects with backoff when the coordinator goes away, and on
//! shutdown hands back every shard it has not finished.

mod runner;
mod shards;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::client::{self, Client};
use crate::coordinator::auth::BearerToken;
use crate::error::{Error, Result};
use crate::interner::Interner;
use crate::proto::v1;
use crate::search::SearchConfig;
use crate::store::content_hash;
use runner::{Job, ShardRunner};
use shards::ShardStore;

use v1::coordinator_message::Kind as FromCoordinator;
use v1::worker_message::Kind as ToCoordinator;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Interners kept for versions recently worked on.
const CACHED_INTERNERS: usize = 4;

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The coordinator's URL, e.g. `http://127.0.0.1:50051`.
    pub coordinator: String,
    /// Where the worker keeps the shards it searched (for incremental later
    /// versions) and its one-off search logs.
    pub data_dir: PathBuf,
    /// Search threads; 0 means one per core.
    pub threads: usize,
    /// The bearer token.
    pub token: Option<String>,
    /// The name the worker reports.
    pub name: String,
    /// Shards with at least this many orthos are kept on disk, so their
    /// next versions are searched incrementally; smaller ones are searched
    /// again from scratch.
    pub keep_shards_from: u64,
}

/// Default for [`WorkerOptions::keep_shards_from`].
pub const DEFAULT_KEEP_SHARDS_FROM: u64 = 1_000;

/// Works for the coordinator until `shutdown` becomes true.
pub async fn run(options: WorkerOptions, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    std::fs::create_dir_all(&options.data_dir).map_err(|e| {
        Error::io(
            format!("cannot create data dir {}", options.data_dir.display()),
            e,
        )
    })?;
    let spill_dir = options.data_dir.join("queue");
    // Queue files of a worker that was killed are of no further use.
    let _ = std::fs::remove_dir_all(&spill_dir);
    let store = ShardStore::new(
        options.data_dir.join("shards"),
        spill_dir.clone(),
        options.keep_shards_from,
    )?;
    let runner = ShardRunner::start(
        SearchConfig {
            threads: options.threads,
            spill_dir,
            ..SearchConfig::default()
        },
        store,
    )?;
    let token = BearerToken::new(options.token.as_deref())?;
    let mut interners = HashMap::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        match session(&options, &token, &runner, &mut interners, &mut shutdown).await {
            Ok(SessionEnd::Shutdown) => return Ok(()),
            Ok(SessionEnd::Welcomed) => backoff = Duration::from_millis(100),
            Ok(SessionEnd::Refused(status)) if status.code() == tonic::Code::Unauthenticated => {
                return Err(Error::BadState(format!(
                    "the coordinator refused the token: {}",
                    status.message()
                )));
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

enum SessionEnd {
    /// Shutdown was asked for; unfinished shards were handed back.
    Shutdown,
    /// The session was accepted and later ended.
    Welcomed,
    /// The coordinator refused the session.
    Refused(tonic::Status),
}

async fn session(
    options: &WorkerOptions,
    token: &BearerToken,
    runner: &ShardRunner,
    interners: &mut HashMap<u32, Texts>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<SessionEnd> {
    let mut client = client::connect(&options.coordinator, token.clone()).await?;

    let (outbound, outbound_stream) = mpsc::channel(256);
    let hello = v1::WorkerMessage {
        kind: Some(ToCoordinator::Hello(v1::Hello {
            name: options.name.clone(),
            threads: runner.threads() as u32,
            stored: runner
                .kept_shards()
                .into_iter()
                .map(|(origin, version)| v1::StoredShard { origin, version })
                .collect(),
        })),
    };
    let _ = outbound.send(hello).await;
    let mut inbound = match client.work(ReceiverStream::new(outbound_stream)).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Ok(SessionEnd::Refused(status)),
    };

    let session = runner.new_session();
    let (events, mut event_stream) = mpsc::unbounded_channel();
    let mut outstanding: HashSet<u64> = HashSet::new();
    let mut welcomed = false;
    loop {
        tokio::select! {
            message = inbound.message() => {
                let message = match message {
                    Ok(Some(message)) => message,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::warn!(%status, "work stream broke");
                        break;
                    }
                };
                match message.kind {
                    Some(FromCoordinator::Welcome(welcome)) => {
                        welcomed = true;
                        // Another coordinator (or the same one on other state)
                        // may number other texts as the same versions: trust
                        // no interner of an earlier session. Kept shards check
                        // their texts' hashes themselves.
                        interners.clear();
                        tracing::info!(worker_id = %welcome.worker_id, lease_ms = welcome.lease_ms, "connected");
                    }
                    Some(FromCoordinator::Assign(assign)) => {
                        let texts = match interner_for(&mut client, interners, assign.version).await {
                            Ok(texts) => texts,
                            Err(error) => {
                                tracing::warn!(%error, version = assign.version, "cannot get the texts; handing the shard back");
                                let failed = failed(assign.attempt, &format!("cannot get texts: {error}"));
                                let _ = outbound.send(failed).await;
                                continue;
                            }
                        };
                        outstanding.insert(assign.attempt);
                        runner.submit(Job {
                            session,
                            attempt: assign.attempt,
                            origin: assign.origin,
                            interner: texts.interner,
                            texts: texts.hashes,
                            events: events.clone(),
                        });
                    }
                    None => {}
                }
            }
            Some(event) = event_stream.recv() => {
                if let Some(ToCoordinator::Done(done)) = &event.kind {
                    outstanding.remove(&done.attempt);
                }
                if let Some(ToCoordinator::Failed(failed)) = &event.kind {
                    outstanding.remove(&failed.attempt);
                }
                if outbound.send(event).await.is_err() {
                    break;
                }
            }
            _ = shutdown.changed() => {
                runner.cancel(session);
                for attempt in outstanding.drain() {
                    let _ = outbound.send(failed(attempt, "worker shutting down")).await;
                }
                drop(outbound);
                // Let the hand-backs reach the coordinator before the stream closes.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Ok(Some(_)) = inbound.message().await {}
                }).await;
                return Ok(SessionEnd::Shutdown);
            }
        }
    }
    // The coordinator is gone: its attempts are void, stop searching them.
    runner.cancel(session);
    if welcomed {
        Ok(SessionEnd::Welcomed)
    } else {
        Err(Error::io(
            "the coordinator closed the session",
            std::io::Error::other("closed"),
        ))
    }
}

fn failed(attempt: u64, reason: &str) -> v1::WorkerMessage {
    v1::WorkerMessage {
        kind: Some(ToCoordinator::Failed(v1::ShardFailed {
            attempt,
            reason: reason.into(),
        })),
    }
}

/// The interner of a version and the content hashes of its texts.
#[derive(Clone)]
struct Texts {
    interner: Arc<Interner>,
    hashes: Arc<Vec<String>>,
}

/// The interner of `version`: from the cache, or built on the newest cached
/// older interner with only the texts it lacks, fetched from the coordinator.
async fn interner_for(
    client: &mut Client,
    cache: &mut HashMap<u32, Texts>,
    version: u32,
) -> Result<Texts> {
    if let Some(texts) = cache.get(&version) {
        return Ok(texts.clone());
    }
    let base = cache
        .iter()
        .filter(|(cached, _)| **cached < version)
        .max_by_key(|(cached, _)| **cached)
        .map(|(cached, texts)| (*cached, texts.clone()));
    let after = base.as_ref().map_or(0, |(cached, _)| *cached);
    let fail = |status: tonic::Status| {
        Error::io("GetTexts failed", std::io::Error::other(status.to_string()))
    };
    let mut chunks = client
        .get_texts(v1::GetTextsRequest {
            version,
            after_version: after,
        })
        .await
        .map_err(fail)?
        .into_inner();
    let mut texts: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(chunk) = chunks.message().await.map_err(fail)? {
        let last = texts.last_mut().expect("there is always a current text");
        last.extend_from_slice(&chunk.data);
        if chunk.last {
            texts.push(Vec::new());
        }
    }
    texts.pop();
    if texts.len() != (version - after) as usize {
        return Err(Error::BadState(format!(
            "the coordinator sent {} texts for versions {} to {version}",
            texts.len(),
            after + 1
        )));
    }
    let texts = texts
        .into_iter()
        .map(|bytes| {
            String::from_utf8(bytes).map_err(|_| Error::BadText("a text is not UTF-8".into()))
        })
        .collect::<Result<Vec<_>>>()?;
    let (interner, hashes) = tokio::task::spawn_blocking(move || {
        let (mut interner, mut hashes) = base.map_or_else(
            || (Interner::new(), Vec::new()),
            |(_, texts)| ((*texts.interner).clone(), (*texts.hashes).clone()),
        );
        for text in &texts {
            interner.ingest(text);
            hashes.push(content_hash(text));
        }
        (interner, hashes)
    })
    .await
    .map_err(|e| Error::io("interner builder stopped", std::io::Error::other(e)))?;
    let texts = Texts {
        interner: Arc::new(interner),
        hashes: Arc::new(hashes),
    };
    if cache.len() >= CACHED_INTERNERS
        && let Some(&oldest) = cache.keys().min()
    {
        cache.remove(&oldest);
    }
    cache.insert(version, texts.clone());
    Ok(texts)
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
