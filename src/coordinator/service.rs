//! The `fold.v1.Coordinator` gRPC service: submissions, status, inspection
//! and the workers' Work streams, over the ledger and the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use crate::coordinator::ledger::{Ledger, ShardPhase, ShardResult, ShardSummary, WorkerId};
use crate::coordinator::persist::{self, CoordinatorStore};
use crate::coordinator::vocabulary::Vocabulary;
use crate::error::Error;
use crate::metrics::{self, CoordinatorFigures};
use crate::proto::{self, v1};
use crate::report::VersionReport;
use crate::store::content_hash;

use v1::coordinator_message::Kind as ToWorker;
use v1::worker_message::Kind as FromWorker;

/// Bytes per chunk when the coordinator streams texts.
pub const TEXT_CHUNK_BYTES: usize = 1 << 20;

/// How often WatchStatus sends a snapshot.
const WATCH_EVERY: Duration = Duration::from_millis(250);

type ToWorkerSender = mpsc::UnboundedSender<Result<v1::CoordinatorMessage, Status>>;

/// State shared by every rpc and background task of one coordinator.
pub struct Shared {
    ledger: Mutex<Ledger>,
    senders: Mutex<HashMap<WorkerId, ToWorkerSender>>,
    texts: Mutex<Vec<Arc<String>>>,
    /// The words of every text; held while a text is added, which keeps
    /// submissions in order.
    vocabulary: Mutex<Vocabulary>,
    store: Arc<CoordinatorStore>,
    unsaved: Mutex<Vec<(u32, u32, ShardResult)>>,
    max_text_bytes: usize,
    /// Woken whenever a version finishes, so watchers answer at once.
    version_done: tokio::sync::Notify,
    /// Bytes of messages sent to workers.
    wire_bytes_sent: AtomicU64,
    /// Bytes of messages received from workers.
    wire_bytes_received: AtomicU64,
    /// Set at shutdown: no more shards are handed out.
    stopping: AtomicBool,
}

impl Shared {
    /// Shared state over a ledger and vocabulary already rebuilt from
    /// `store`, with `texts` being the stored texts in version order.
    pub fn new(
        ledger: Ledger,
        vocabulary: Vocabulary,
        texts: Vec<Arc<String>>,
        store: CoordinatorStore,
        max_text_bytes: usize,
    ) -> Self {
        Self {
            ledger: Mutex::new(ledger),
            senders: Mutex::new(HashMap::new()),
            texts: Mutex::new(texts),
            vocabulary: Mutex::new(vocabulary),
            store: Arc::new(store),
            unsaved: Mutex::new(Vec::new()),
            max_text_bytes,
            version_done: tokio::sync::Notify::new(),
            wire_bytes_sent: AtomicU64::new(0),
            wire_bytes_received: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands pending shards to workers with room (none once stopping).
    pub fn dispatch(&self) {
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        let assignments = self.ledger().assign(Instant::now());
        let senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        for assignment in assignments {
            let message = v1::CoordinatorMessage {
                kind: Some(ToWorker::Assign(v1::Assign {
                    attempt: assignment.attempt,
                    version: assignment.version,
                    origin: assignment.origin,
                })),
            };
            self.count_sent(&message);
            // A closed channel means the session is ending; its end releases the shard.
            if let Some(sender) = senders.get(&assignment.worker) {
                let _ = sender.send(Ok(message));
            }
        }
    }

    /// Releases shards whose leases ran out (telling their workers to stop
    /// on them) and offers pending shards to idle workers. Called
    /// periodically, so pending work never waits for some other event.
    pub fn expire_leases(&self) {
        let expired = self.ledger().expire_leases(Instant::now());
        if !expired.is_empty() {
            tracing::warn!(
                expired = expired.len(),
                "leases expired; shards go back to pending"
            );
            metrics::leases_expired(expired.len());
            for (worker, attempt) in expired {
                self.revoke(worker, attempt);
            }
        }
        self.dispatch();
    }

    /// Stops for shutdown: no more shards are handed out, and every
    /// worker's Work stream ends (each worker sees its session end, drops
    /// its shards and reconnects later; the shards it held are pending
    /// again, in the store as in the ledger).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.senders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Tells `worker` that it no longer holds `attempt`.
    fn revoke(&self, worker: WorkerId, attempt: u64) {
        let message = v1::CoordinatorMessage {
            kind: Some(ToWorker::Revoke(v1::Revoke { attempt })),
        };
        self.count_sent(&message);
        let senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = senders.get(&worker) {
            let _ = sender.send(Ok(message));
        }
    }

    /// Commits the shard results finished since the last call.
    pub async fn save_results(&self) -> crate::Result<()> {
        let batch = std::mem::take(&mut *self.unsaved.lock().unwrap_or_else(|p| p.into_inner()));
        if batch.is_empty() {
            return Ok(());
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.record_shards(&batch))
            .await
            .map_err(|e| Error::io("shard writer stopped", std::io::Error::other(e)))?
    }

    /// Makes `text` the next version: stores it durably, ingests it and
    /// hands its shards out. Blocking; one text at a time. It runs to the
    /// end once started (even if the submitting client goes away), so the
    /// store, the vocabulary and the ledger always agree on the versions.
    fn add_text(&self, name: String, text: String) -> crate::Result<u32> {
        let mut vocabulary = self.vocabulary.lock().unwrap_or_else(|p| p.into_inner());
        let version = vocabulary.version() + 1;
        self.store.append_text(version, &name, &text)?;
        let added = vocabulary.ingest(&text);
        debug_assert_eq!(added.version, version);
        self.texts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(text));
        self.ledger()
            .add_version(name, added.new_words, &added.weights, []);
        metrics::version_started(version);
        drop(vocabulary);
        self.dispatch();
        Ok(version)
    }

    fn count_sent(&self, message: &impl Message) {
        self.wire_bytes_sent
            .fetch_add(message.encoded_len() as u64, Ordering::Relaxed);
    }

    fn handle(&self, worker: WorkerId, message: v1::WorkerMessage) {
        self.wire_bytes_received
            .fetch_add(message.encoded_len() as u64, Ordering::Relaxed);
        let was_stalled = self.ledger().heard_from(worker);
        if was_stalled {
            tracing::info!(worker, "a worker whose lease ran out is heard from again");
        }
        let now = Instant::now();
        match message.kind {
            Some(FromWorker::Progress(progress)) => {
                let refused =
                    self.ledger()
                        .progress(worker, progress.attempt, progress.orthos, now);
                if let Err(refusal) = refused {
                    tracing::debug!(worker, %refusal, "progress ignored");
                    self.revoke(worker, progress.attempt);
                }
            }
            Some(FromWorker::Done(done)) => self.finish(worker, &done),
            Some(FromWorker::Failed(failed)) => {
                // A stale attempt (one revoked, say) was released already.
                if self.ledger().hand_back(worker, failed.attempt).is_ok() {
                    tracing::info!(worker, attempt = failed.attempt, reason = %failed.reason, "attempt handed back");
                }
                self.dispatch();
            }
            Some(FromWorker::Hello(_)) | None => {}
        }
        if was_stalled {
            self.dispatch();
        }
    }

    fn finish(&self, worker: WorkerId, done: &v1::ShardDone) {
        let mut ledger = self.ledger();
        let Some(vocabulary) = ledger.attempt_vocabulary(done.attempt) else {
            tracing::debug!(
                worker,
                attempt = done.attempt,
                "result of an unknown attempt ignored"
            );
            return;
        };
        let finished = match persist::result_of(done, vocabulary) {
            Ok(result) => ledger
                .complete(worker, done.attempt, &result)
                .map(|finished| {
                    ledger.record_search(worker, &finished, done.base_version, done.stored);
                    (finished, result)
                }),
            Err(error) => {
                tracing::warn!(worker, attempt = done.attempt, %error, "malformed result; shard will be redone");
                let _ = ledger.hand_back(worker, done.attempt);
                drop(ledger);
                self.dispatch();
                return;
            }
        };
        drop(ledger);
        match finished {
            Ok((finished, result)) => {
                self.unsaved
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((finished.version, finished.origin, result));
                if finished.version_done {
                    tracing::info!(version = finished.version, "version done");
                    metrics::version_done(finished.version);
                    self.version_done.notify_waiters();
                }
            }
            Err(refusal) => tracing::debug!(worker, %refusal, "result ignored"),
        }
        self.dispatch();
    }

    /// The status of `version` (0: every version), with every shard listed
    /// when the request says `shards`, and every worker when it says `workers`.
    fn status(&self, request: &v1::StatusRequest) -> Result<v1::StatusReply, Status> {
        let (version, shards) = (request.version, request.shards);
        let mut ledger = self.ledger();
        if version != 0 && ledger.version(version).is_none() {
            return Err(unknown_version(version, ledger.versions().len()));
        }
        let versions = ledger
            .versions()
            .iter()
            .filter(|v| version == 0 || v.version == version)
            .map(|v| {
                let words = ledger.words(v.version);
                let report = VersionReport::from_words(v.version, words, v.figures());
                v1::VersionStatus {
                    version: v.version,
                    state: if v.is_done() { "done" } else { "running" }.into(),
                    vocabulary: report.vocabulary,
                    orthos: report.orthos,
                    frontier: report.frontier,
                    optimal: report.optimal.as_ref().map(proto::words_of),
                    shards_done: v.shards_done(),
                    shards_total: v.shards_total(),
                    shards_running: v.shards_running(),
                    source: v.source.clone(),
                    attempts_discarded: v.attempts_discarded(),
                    shards: if shards {
                        ledger
                            .shards(v.version)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|shard| shard_status(shard, words))
                            .collect()
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect();
        let now = Instant::now();
        let workers = ledger.workers(now).len() as u32;
        let worker_list = if request.workers {
            worker_infos(&mut ledger, now)
        } else {
            Vec::new()
        };
        Ok(v1::StatusReply {
            versions,
            workers,
            orthos_per_second: ledger.orthos_per_second(now),
            worker_wire_bytes: self.wire_bytes_sent.load(Ordering::Relaxed)
                + self.wire_bytes_received.load(Ordering::Relaxed),
            worker_list,
        })
    }

    /// Records the coordinator's figures in its metrics (at each scrape).
    pub fn observe_metrics(&self) {
        let mut ledger = self.ledger();
        let mut figures = CoordinatorFigures {
            workers: ledger.workers(Instant::now()).len() as u64,
            orthos_per_second: ledger.orthos_per_second(Instant::now()),
            wire_bytes_sent: self.wire_bytes_sent.load(Ordering::Relaxed),
            wire_bytes_received: self.wire_bytes_received.load(Ordering::Relaxed),
            ..CoordinatorFigures::default()
        };
        for version in ledger.versions() {
            let (done, running) = (version.shards_done(), version.shards_running());
            figures.units_done += u64::from(done);
            figures.units_running += u64::from(running);
            figures.units_pending += u64::from(version.shards_total() - done - running);
            figures.orthos += version.figures().orthos;
            figures.attempts_discarded += version.attempts_discarded();
            if version.is_done() {
                figures.versions_done += 1;
            } else {
                figures.versions_running += 1;
            }
        }
        drop(ledger);
        metrics::observe_coordinator(&figures);
    }
}

/// One shard on the wire.
fn shard_status(shard: ShardSummary, words: &[String]) -> v1::ShardStatus {
    let (state, worker, worker_name) = match shard.phase {
        ShardPhase::Pending => ("pending", None, None),
        ShardPhase::Running { worker, name } => ("running", Some(worker.to_string()), Some(name)),
        ShardPhase::Done => ("done", None, None),
    };
    v1::ShardStatus {
        origin: shard.origin,
        word: words
            .get(shard.origin as usize)
            .cloned()
            .unwrap_or_default(),
        state: state.into(),
        attempts_started: shard.attempts_started,
        attempts_discarded: shard.attempts_discarded,
        times_counted: shard.times_counted,
        orthos: shard.contributed.map(|(orthos, _)| orthos),
        frontier: shard.contributed.map(|(_, frontier)| frontier),
        worker,
        worker_name,
        base_version: shard.base_version,
    }
}

/// The connected workers on the wire, with their rates.
fn worker_infos(ledger: &mut Ledger, now: Instant) -> Vec<v1::WorkerInfo> {
    let rates = ledger.orthos_per_second_by_worker(now);
    ledger
        .workers(now)
        .into_iter()
        .map(|worker| v1::WorkerInfo {
            id: worker.id.to_string(),
            name: worker.name,
            threads: worker.threads,
            shards: worker
                .shards
                .iter()
                .map(|(v, o)| format!("{v}/{o}"))
                .collect(),
            shards_done: worker.shards_done,
            connected_ms: worker.connected_ms,
            orthos_per_second: rates.get(&worker.id).copied().unwrap_or(0.0),
        })
        .collect()
}

fn unknown_version(version: u32, known: usize) -> Status {
    Status::not_found(format!(
        "unknown version {version}: {known} version(s) submitted"
    ))
}

/// The one place where library errors become gRPC statuses.
pub fn status_of(error: &Error) -> Status {
    match error {
        Error::BadText(message) => Status::invalid_argument(message.clone()),
        Error::BadOrtho(message) => Status::invalid_argument(message.clone()),
        Error::UnknownVersion(version) => Status::not_found(format!("unknown version {version}")),
        Error::BadState(message) => Status::failed_precondition(message.clone()),
        other => Status::internal(other.to_string()),
    }
}

/// The tonic service: a handle on the shared state.
#[derive(Clone)]
pub struct CoordinatorService {
    shared: Arc<Shared>,
}

impl CoordinatorService {
    /// A service over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[tonic::async_trait]
impl v1::coordinator_server::Coordinator for CoordinatorService {
    async fn submit(
        &self,
        request: Request<Streaming<v1::SubmitChunk>>,
    ) -> Result<Response<v1::SubmitReply>, Status> {
        let mut chunks = request.into_inner();
        let mut data = Vec::new();
        let mut name = None;
        let mut any_chunk = false;
        while let Some(chunk) = chunks.message().await? {
            any_chunk = true;
            name.get_or_insert(chunk.name);
            if data.len() + chunk.data.len() > self.shared.max_text_bytes {
                return Err(Status::resource_exhausted(format!(
                    "text larger than the maximum of {} bytes (see --max-text-bytes)",
                    self.shared.max_text_bytes
                )));
            }
            data.extend_from_slice(&chunk.data);
        }
        if !any_chunk {
            // An empty text is one empty chunk; no chunk at all is no submission.
            return Err(Status::invalid_argument(
                "a Submit stream must carry at least one chunk (an empty text is one empty chunk)",
            ));
        }
        let text = String::from_utf8(data).map_err(|e| {
            Status::invalid_argument(format!(
                "text is not valid UTF-8 (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ))
        })?;
        let name = name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "(unnamed)".into());

        let bytes = text.len() as u64;
        let hash = content_hash(&text);
        let shared = self.shared.clone();
        let version = tokio::task::spawn_blocking(move || shared.add_text(name, text))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| status_of(&e))?;
        tracing::info!(version, bytes, "text submitted");
        Ok(Response::new(v1::SubmitReply {
            version,
            bytes,
            hash,
        }))
    }

    async fn status(
        &self,
        request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusReply>, Status> {
        self.shared.status(request.get_ref()).map(Response::new)
    }

    type WatchStatusStream = ReceiverStream<Result<v1::StatusReply, Status>>;

    async fn watch_status(
        &self,
        request: Request<v1::StatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        let request = request.into_inner();
        let first = self.shared.status(&request)?;
        let (sender, receiver) = mpsc::channel(4);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let mut reply = Ok(first);
            loop {
                let finished = match &reply {
                    Ok(status) => {
                        !request.follow && status.versions.iter().all(|v| v.state == "done")
                    }
                    Err(_) => true,
                };
                if sender.send(reply).await.is_err() || finished {
                    return;
                }
                let done = shared.version_done.notified();
                tokio::select! {
                    _ = tokio::time::sleep(WATCH_EVERY) => {}
                    _ = done => {}
                }
                // A watcher (a `top` left open) must not hold a stopping
                // coordinator for its whole grace period.
                reply = if shared.stopping.load(Ordering::Acquire) {
                    Err(Status::unavailable("the coordinator is shutting down"))
                } else {
                    shared.status(&request)
                };
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn optimal(
        &self,
        request: Request<v1::OptimalRequest>,
    ) -> Result<Response<v1::OptimalReply>, Status> {
        let requested = request.into_inner().version;
        let ledger = self.shared.ledger();
        let version = if requested == 0 {
            ledger
                .versions()
                .last()
                .ok_or_else(|| Status::not_found("no version has been submitted yet"))?
        } else {
            ledger
                .version(requested)
                .ok_or_else(|| unknown_version(requested, ledger.versions().len()))?
        };
        let words = ledger.words(version.version);
        let report = VersionReport::from_words(version.version, words, version.figures());
        Ok(Response::new(v1::OptimalReply {
            version: version.version,
            state: if version.is_done() { "done" } else { "running" }.into(),
            optimal: report.optimal.as_ref().map(proto::words_of),
        }))
    }

    async fn list_workers(
        &self,
        _request: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersReply>, Status> {
        let workers = worker_infos(&mut self.shared.ledger(), Instant::now());
        Ok(Response::new(v1::ListWorkersReply { workers }))
    }

    type GetTextsStream = ReceiverStream<Result<v1::TextChunk, Status>>;

    async fn get_texts(
        &self,
        request: Request<v1::GetTextsRequest>,
    ) -> Result<Response<Self::GetTextsStream>, Status> {
        let request = request.into_inner();
        let (version, after) = (request.version, request.after_version);
        let texts: Vec<Arc<String>> = {
            let texts = self.shared.texts.lock().unwrap_or_else(|p| p.into_inner());
            if version == 0 || version as usize > texts.len() {
                return Err(unknown_version(version, texts.len()));
            }
            if after >= version {
                return Err(Status::invalid_argument(format!(
                    "after_version {after} must be below version {version}"
                )));
            }
            texts[after as usize..version as usize].to_vec()
        };
        let (sender, receiver) = mpsc::channel(4);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            for (index, text) in texts.iter().enumerate() {
                let bytes = text.as_bytes();
                let mut start = 0;
                loop {
                    let end = (start + TEXT_CHUNK_BYTES).min(bytes.len());
                    let chunk = v1::TextChunk {
                        version: after + index as u32 + 1,
                        data: bytes[start..end].to_vec(),
                        last: end == bytes.len(),
                    };
                    shared.count_sent(&chunk);
                    if sender.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                    if end == bytes.len() {
                        break;
                    }
                    start = end;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    type WorkStream = UnboundedReceiverStream<Result<v1::CoordinatorMessage, Status>>;

    async fn work(
        &self,
        request: Request<Streaming<v1::WorkerMessage>>,
    ) -> Result<Response<Self::WorkStream>, Status> {
        if self.shared.stopping.load(Ordering::Acquire) {
            return Err(Status::unavailable(
                "the coordinator is shutting down; reconnect later",
            ));
        }
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(v1::WorkerMessage {
                kind: Some(FromWorker::Hello(hello)),
            }) => hello,
            _ => {
                return Err(Status::invalid_argument(
                    "a Work stream must begin with hello",
                ));
            }
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        let (worker, lease) = {
            let mut ledger = self.shared.ledger();
            (
                ledger.add_worker(
                    hello.name.clone(),
                    hello.threads,
                    hello
                        .stored
                        .iter()
                        .map(|shard| (shard.origin, shard.version)),
                ),
                ledger.lease(),
            )
        };
        tracing::info!(worker, name = %hello.name, threads = hello.threads, "worker connected");
        let welcome = v1::CoordinatorMessage {
            kind: Some(ToWorker::Welcome(v1::Welcome {
                worker_id: worker.to_string(),
                lease_ms: lease.as_millis() as u32,
            })),
        };
        let _ = sender.send(Ok(welcome));
        self.shared
            .senders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(worker, sender);
        self.shared.dispatch();

        let shared = self.shared.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(message)) => shared.handle(worker, message),
                    Ok(None) => break,
                    Err(status) => {
                        tracing::info!(worker, %status, "worker stream broke");
                        break;
                    }
                }
            }
            shared
                .senders
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&worker);
            shared.ledger().remove_worker(worker);
            tracing::info!(worker, "worker disconnected");
            shared.dispatch();
        });
        Ok(Response::new(UnboundedReceiverStream::new(receiver)))
    }
}
