//! Preparing a worker for a unit: the interner of the unit's version,
//! built from the texts fetched from the coordinator (or brought up from an
//! older cached interner with only the texts it lacks).
//!
//! Preparation runs in its own task, beside the session loop, so that while
//! a large text is fetched and ingested the worker still reads its Work
//! stream, renews its leases and answers Ctrl-C.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::runner::{Job, UnitRunner};
use crate::channel::Client;
use crate::error::{Error, Result};
use crate::ids::{AttemptId, UnitId};
use crate::interner::{Interner, Version};
use crate::proto::{self, v1};
use crate::search::{Scope, Subtrees};
use crate::store::content_hash;

use v1::worker_message::Kind as ToCoordinator;

/// Interners kept for versions recently worked on.
const CACHED_INTERNERS: usize = 4;

/// The interner of a version and the content hashes of its texts.
#[derive(Clone)]
struct Texts {
    interner: Arc<Interner>,
    hashes: Arc<Vec<String>>,
}

/// A task that prepares assigned units in order and queues them on the
/// search thread. Dropping it stops the task.
pub struct Preparer {
    assignments: mpsc::UnboundedSender<v1::Assign>,
    task: tokio::task::JoinHandle<()>,
}

impl Preparer {
    /// Starts preparing the units of session `session`: their texts come
    /// through `client`, their jobs go to `runner`, and a unit that cannot
    /// be prepared is reported as failed on `events`.
    pub fn start(
        mut client: Client,
        runner: Arc<UnitRunner>,
        session: u64,
        events: mpsc::UnboundedSender<v1::WorkerMessage>,
    ) -> Self {
        let (assignments, mut queue) = mpsc::unbounded_channel::<v1::Assign>();
        let task = tokio::spawn(async move {
            // Versions are numbered by the coordinator of this session only,
            // so the cache lives as long as the session.
            let mut cache = HashMap::new();
            while let Some(assign) = queue.recv().await {
                let attempt = AttemptId(assign.attempt);
                if runner.is_revoked(attempt) {
                    continue;
                }
                let prepared = async {
                    let texts = interner_for(&mut client, &mut cache, assign.version).await?;
                    let vocabulary = texts.interner.vocabulary();
                    let part = Subtrees {
                        roots: proto::orthos_of(&assign.roots, vocabulary)?,
                        excluded: proto::orthos_of(&assign.excluded, vocabulary)?
                            .into_iter()
                            .collect(),
                    };
                    Ok::<_, Error>((texts, part))
                };
                match prepared.await {
                    Ok((texts, part)) => runner.submit(Job {
                        session,
                        attempt,
                        unit: UnitId(assign.unit),
                        scope: Scope::Subtrees(Arc::new(part)),
                        base_version: Version::new(assign.base_version),
                        dedup: proto::dedup_from(assign.dedup),
                        most_orthos: assign.most_orthos,
                        interner: texts.interner,
                        text_hashes: texts.hashes,
                        events: events.clone(),
                    }),
                    Err(error) => {
                        tracing::warn!(%error, version = assign.version, "cannot prepare the unit; handing it back");
                        let reason = format!("cannot prepare the unit: {error}");
                        let _ = events.send(failed(attempt, &reason));
                    }
                }
            }
        });
        Self { assignments, task }
    }

    /// Queues a unit for preparation.
    pub fn prepare(&self, assign: v1::Assign) {
        let _ = self.assignments.send(assign);
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A UnitFailed message.
pub fn failed(attempt: AttemptId, reason: &str) -> v1::WorkerMessage {
    v1::WorkerMessage {
        kind: Some(ToCoordinator::Failed(v1::UnitFailed {
            attempt: attempt.0,
            reason: reason.into(),
        })),
    }
}

/// The texts of versions `after + 1` to `version`, fetched from the
/// coordinator, as bytes.
async fn fetch_texts(client: &mut Client, version: u32, after: u32) -> Result<Vec<Vec<u8>>> {
    let mut chunks = client
        .get_texts(v1::GetTextsRequest {
            version,
            after_version: after,
        })
        .await?
        .into_inner();
    let mut texts: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(chunk) = chunks.message().await? {
        crate::metrics::wire_bytes(
            crate::metrics::Direction::Received,
            prost::Message::encoded_len(&chunk),
        );
        let last = texts.last_mut().expect("there is always a current text");
        last.extend_from_slice(&chunk.data);
        if chunk.last {
            texts.push(Vec::new());
        }
    }
    texts.pop();
    if texts.len() != (version - after) as usize {
        return Err(Error::Protocol(format!(
            "the coordinator sent {} texts for versions {} to {version}",
            texts.len(),
            after + 1
        )));
    }
    Ok(texts)
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
    let started = Instant::now();
    let base = cache
        .iter()
        .filter(|(cached, _)| **cached < version)
        .max_by_key(|(cached, _)| **cached)
        .map(|(cached, texts)| (*cached, texts.clone()));
    let after = base.as_ref().map_or(0, |(cached, _)| *cached);
    let texts = fetch_texts(client, version, after).await?;
    let bytes: usize = texts.iter().map(Vec::len).sum();
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
    .map_err(|e| Error::Internal(format!("interner builder stopped: {e}")))?;
    tracing::info!(
        version,
        vocabulary = interner.vocabulary(),
        fetched_bytes = bytes,
        ms = started.elapsed().as_millis() as u64,
        "working on version {version}: texts fetched and interner built"
    );
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
