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

use crate::coordinator::ledger::{
    Assignment, Ledger, Refusal, Report, SplitRequest, UnitPhase, UnitSummary, WorkerId,
};
use crate::coordinator::persist::{self, Change, CoordinatorStore};
use crate::coordinator::vocabulary::Vocabulary;
use crate::error::Error;
use crate::ids::{AttemptId, UnitId};
use crate::interner::Version;
use crate::metrics::{self, CoordinatorFigures};
use crate::proto::{self, v1};
use crate::report::VersionReport;
use crate::store::content_hash;

use v1::coordinator_message::Kind as ToWorker;
use v1::worker_message::Kind as FromWorker;

/// How often WatchStatus sends a snapshot.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// Most units a status reply lists per version (about 100 bytes each, so a
/// reply stays well under the message size limit).
pub const MOST_LISTED_UNITS: u32 = 20_000;

type ToWorkerSender = mpsc::UnboundedSender<Result<v1::CoordinatorMessage, Status>>;

/// State shared by every rpc and background task of one coordinator.
pub struct Shared {
    /// What the rpcs and background tasks change, behind one lock.
    state: Mutex<State>,
    /// The words of every text; held while a text is added, which keeps
    /// submissions in order (and off the state lock while a text is
    /// ingested, which takes long).
    vocabulary: Mutex<Vocabulary>,
    store: Arc<CoordinatorStore>,
    max_text_bytes: usize,
    /// Woken whenever a version finishes, so watchers answer at once.
    version_done: tokio::sync::Notify,
    /// Bytes of messages sent to workers.
    wire_bytes_sent: AtomicU64,
    /// Bytes of messages received from workers.
    wire_bytes_received: AtomicU64,
    /// Set at shutdown: no more units are handed out.
    stopping: AtomicBool,
}

/// The coordinator's mutable state, behind one `std::sync::Mutex`. One
/// lock means no lock order to get wrong: a result changes the ledger and
/// the unsaved changes together, a dispatch reads the ledger and the
/// senders. A blocking mutex rather than tokio's, as mini-redis's `db.rs`
/// argues: every critical section is short and never awaits (sends to
/// workers are unbounded channels), so an async lock would only cost more.
struct State {
    ledger: Ledger,
    /// Each connected worker's Work stream.
    senders: HashMap<WorkerId, ToWorkerSender>,
    /// Every version's text, in order (what GetTexts serves).
    texts: Vec<Arc<String>>,
    /// Counted results and the units they created or changed, not yet stored.
    unsaved: Vec<Change>,
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
            state: Mutex::new(State {
                ledger,
                senders: HashMap::new(),
                texts,
                unsaved: Vec::new(),
            }),
            vocabulary: Mutex::new(vocabulary),
            store: Arc::new(store),
            max_text_bytes,
            version_done: tokio::sync::Notify::new(),
            wire_bytes_sent: AtomicU64::new(0),
            wire_bytes_received: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands ready units to workers with room, and when some are idle with
    /// nothing ready, asks the busiest running units to split (nothing once
    /// stopping).
    pub fn dispatch(&self) {
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        let (assignments, splits) = {
            let mut guard = self.state();
            let ledger = &mut guard.ledger;
            let assignments = ledger.assign(Instant::now());
            (assignments, ledger.splits())
        };
        self.send(assignments, splits);
    }

    /// Sends assignments and split requests to their workers.
    fn send(&self, assignments: Vec<Assignment>, splits: Vec<SplitRequest>) {
        if assignments.is_empty() && splits.is_empty() {
            return;
        }
        let state = self.state();
        let senders = &state.senders;
        for assignment in assignments {
            let message = v1::CoordinatorMessage {
                kind: Some(ToWorker::Assign(assignment.to_wire())),
            };
            self.count_sent(&message);
            // A closed channel means the session is ending; its end releases the unit.
            if let Some(sender) = senders.get(&assignment.worker) {
                let _ = sender.send(Ok(message));
            }
        }
        for split in splits {
            tracing::debug!(
                attempt = %split.attempt,
                parts = split.parts,
                "asking a unit to split"
            );
            let message = v1::CoordinatorMessage {
                kind: Some(ToWorker::Split(v1::Split {
                    attempt: split.attempt.0,
                    parts: split.parts,
                })),
            };
            self.count_sent(&message);
            if let Some(sender) = senders.get(&split.worker) {
                let _ = sender.send(Ok(message));
            }
        }
    }

    /// Releases units whose leases ran out (telling their workers to stop
    /// on them) and offers pending units to idle workers (or splits running
    /// ones for them). Called periodically, so pending work never waits for
    /// some other event.
    pub fn expire_leases(&self) {
        let expired = self.state().ledger.expire_leases(Instant::now());
        if !expired.is_empty() {
            tracing::warn!(
                expired = expired.len(),
                "leases expired; units go back to pending"
            );
            metrics::leases_expired(expired.len());
            for (worker, attempt) in expired {
                self.revoke(worker, attempt);
            }
        }
        self.dispatch();
    }

    /// Stops for shutdown: no more units are handed out, and every
    /// worker's Work stream ends (each worker sees its session end, drops
    /// its units and reconnects later; the units it held are pending
    /// again, in the store as in the ledger).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.state().senders.clear();
    }

    /// Tells `worker` that it no longer holds `attempt`.
    fn revoke(&self, worker: WorkerId, attempt: AttemptId) {
        let message = v1::CoordinatorMessage {
            kind: Some(ToWorker::Revoke(v1::Revoke { attempt: attempt.0 })),
        };
        self.count_sent(&message);
        let state = self.state();
        let senders = &state.senders;
        if let Some(sender) = senders.get(&worker) {
            let _ = sender.send(Ok(message));
        }
    }

    /// Commits the splits and results since the last call, in order, in one
    /// transaction.
    pub async fn save_results(&self) -> crate::Result<()> {
        let batch = std::mem::take(&mut self.state().unsaved);
        if batch.is_empty() {
            return Ok(());
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.record(&batch))
            .await
            .map_err(|e| Error::Internal(format!("result writer stopped: {e}")))?
    }

    /// Makes `text` the next version: ingests it, stores it durably with
    /// the units of its new first words, and hands its units out. Blocking;
    /// one text at a time. It runs to the end once started (even if the
    /// submitting client goes away), so the store, the vocabulary and the
    /// ledger always agree on the versions.
    fn add_text(&self, name: String, text: String) -> crate::Result<Version> {
        let mut vocabulary = self.vocabulary.lock().unwrap_or_else(|p| p.into_inner());
        let known = self.state().ledger.words(vocabulary.version()).len();
        let mut next = vocabulary.clone();
        let added = next.ingest(&text);
        let units = self.state().ledger.first_units(known, &added.weights);
        self.store
            .append_text(added.version, &name, &text, &units)?;
        *vocabulary = next;
        let version = {
            let mut state = self.state();
            state.texts.push(Arc::new(text));
            state.ledger.add_version(name, added.new_words, units)
        };
        metrics::version_started(version);
        drop(vocabulary);
        self.dispatch();
        Ok(added.version)
    }

    fn count_sent(&self, message: &impl Message) {
        self.wire_bytes_sent
            .fetch_add(message.encoded_len() as u64, Ordering::Relaxed);
    }

    fn handle(&self, worker: WorkerId, message: v1::WorkerMessage) {
        self.wire_bytes_received
            .fetch_add(message.encoded_len() as u64, Ordering::Relaxed);
        let was_stalled = self.state().ledger.heard_from(worker);
        if was_stalled {
            tracing::info!(%worker, "a worker whose lease ran out is heard from again");
        }
        let now = Instant::now();
        match message.kind {
            Some(FromWorker::Progress(progress)) => {
                let mut guard = self.state();
                let ledger = &mut guard.ledger;
                let vocabulary = ledger
                    .attempt_vocabulary(AttemptId(progress.attempt))
                    .unwrap_or(0);
                let optimal = progress
                    .optimal_candidate
                    .as_ref()
                    .and_then(|tokens| proto::ortho_of(tokens, vocabulary).ok());
                let report = Report {
                    orthos: progress.orthos,
                    frontier_added: progress.frontier_added,
                    frontier_removed: progress.frontier_removed,
                    optimal,
                    queued: progress.queued,
                    expanded: progress.expanded,
                    cpu_ms: progress.cpu_ms,
                };
                match ledger.progress(worker, AttemptId(progress.attempt), report, now) {
                    Ok(()) => {
                        // What the unit has waiting may be what an idle worker needs.
                        let splits = ledger.splits();
                        drop(guard);
                        self.send(Vec::new(), splits);
                    }
                    Err(refusal) => {
                        drop(guard);
                        tracing::debug!(%worker, %refusal, "progress ignored");
                        self.revoke(worker, AttemptId(progress.attempt));
                    }
                }
            }
            Some(FromWorker::Done(done)) => self.finish(worker, &done),
            Some(FromWorker::Split(split)) => self.split(worker, &split),
            Some(FromWorker::Failed(failed)) => {
                // A stale attempt (one revoked, say) was released already.
                if self
                    .state()
                    .ledger
                    .hand_back(worker, AttemptId(failed.attempt))
                    .is_ok()
                {
                    tracing::info!(%worker, attempt = failed.attempt, reason = %failed.reason, "attempt handed back");
                }
                self.dispatch();
            }
            Some(FromWorker::Hello(_)) | None => {}
        }
        if was_stalled {
            self.dispatch();
        }
    }

    fn finish(&self, worker: WorkerId, done: &v1::UnitDone) {
        let attempt = AttemptId(done.attempt);
        let mut guard = self.state();
        let ledger = &mut guard.ledger;
        let Some(vocabulary) = ledger.attempt_vocabulary(attempt) else {
            tracing::debug!(
                %worker,
                %attempt,
                "result of an unknown attempt ignored"
            );
            return;
        };
        let finished = match persist::result_of(done, vocabulary) {
            Ok(result) => ledger.complete(worker, attempt, result, Instant::now()),
            Err(error) => Err(Refusal::Malformed(attempt, error.to_string())),
        };
        let finished = match finished {
            Ok(finished) => finished,
            Err(refusal @ Refusal::Malformed(..)) => {
                tracing::warn!(%worker, %refusal, "the unit will be searched again");
                let _ = ledger.hand_back(worker, attempt);
                drop(guard);
                self.dispatch();
                return;
            }
            Err(refusal) => {
                tracing::debug!(%worker, %refusal, "result ignored");
                return;
            }
        };
        // Queued while the ledger is held, so changes are saved in the order
        // they happened.
        guard.unsaved.push(Change::Result(
            finished.version,
            finished.unit,
            finished.counted,
        ));
        drop(guard);
        if finished.version_done {
            tracing::info!(version = finished.version.get(), "version done");
            metrics::version_done(finished.version);
            self.version_done.notify_waiters();
        }
        self.dispatch();
    }

    /// A running unit handed part of its work off: the new units are made
    /// and offered to idle workers. A malformed split loses the attempt (the
    /// worker has dropped what it handed off, so its unit is searched again).
    fn split(&self, worker: WorkerId, split: &v1::UnitSplit) {
        let attempt = AttemptId(split.attempt);
        let mut guard = self.state();
        let ledger = &mut guard.ledger;
        let Some(vocabulary) = ledger.attempt_vocabulary(attempt) else {
            tracing::debug!(
                %worker,
                %attempt,
                "split of an unknown attempt ignored"
            );
            return;
        };
        let parts = split
            .parts
            .iter()
            .map(|part| proto::orthos_of(part, vocabulary))
            .collect::<crate::Result<Vec<_>>>();
        let done = match parts {
            Ok(parts) => ledger.split(worker, attempt, parts),
            Err(error) => Err(Refusal::Malformed(attempt, error.to_string())),
        };
        match done {
            Ok(done) => {
                tracing::debug!(
                    unit = %done.unit.id,
                    into = done.new_units.len(),
                    "unit split"
                );
                guard.unsaved.push(Change::Unit(done.unit));
                guard
                    .unsaved
                    .extend(done.new_units.into_iter().map(Change::Unit));
            }
            Err(refusal @ Refusal::Malformed(..)) => {
                tracing::warn!(%worker, %refusal, "the unit will be searched again");
                let _ = ledger.hand_back(worker, attempt);
                drop(guard);
                self.revoke(worker, attempt);
                self.dispatch();
                return;
            }
            Err(refusal) => {
                tracing::debug!(%worker, %refusal, "split ignored");
                return;
            }
        }
        drop(guard);
        self.dispatch();
    }

    /// The status of the request's version (0: every version), with up to
    /// `units` of each version's units listed, and every worker when it
    /// says `workers`.
    fn status(&self, request: &v1::StatusRequest) -> Result<v1::StatusReply, Status> {
        let (version, units) = (Version::new(request.version), request.units);
        let mut guard = self.state();
        let ledger = &mut guard.ledger;
        if version != Version::ZERO && ledger.version(version).is_none() {
            return Err(unknown_version(version, ledger.versions().len()));
        }
        let now = Instant::now();
        let versions = ledger
            .versions()
            .iter()
            .filter(|v| version == Version::ZERO || v.version == version)
            .map(|v| {
                let words = ledger.words(v.version);
                let figures = ledger.live_figures(v.version).unwrap_or_default();
                let report = VersionReport::from_words(v.version, words, &figures);
                v1::VersionStatus {
                    version: v.version.get(),
                    state: v1::VersionState::of(v.is_done()) as i32,
                    vocabulary: report.vocabulary,
                    orthos: report.orthos,
                    frontier: report.frontier,
                    optimal: report.optimal.as_ref().map(proto::words_of),
                    units_done: v.units_done(),
                    units_total: v.units_total(),
                    units_running: v.units_running(),
                    units_pending: v.units_pending(),
                    units_split: v.units_split(),
                    source: v.source.clone(),
                    attempts_discarded: v.attempts_discarded(),
                    units: ledger
                        .units(v.version, units.min(MOST_LISTED_UNITS) as usize, now)
                        .unwrap_or_default()
                        .into_iter()
                        .map(unit_status)
                        .collect(),
                }
            })
            .collect();
        let workers = ledger.workers(now).len() as u32;
        let worker_list = if request.workers {
            worker_infos(ledger, now)
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
        let mut guard = self.state();
        let ledger = &mut guard.ledger;
        let mut figures = CoordinatorFigures {
            workers: ledger.workers(Instant::now()).len() as u64,
            orthos_per_second: ledger.orthos_per_second(Instant::now()),
            wire_bytes_sent: self.wire_bytes_sent.load(Ordering::Relaxed),
            wire_bytes_received: self.wire_bytes_received.load(Ordering::Relaxed),
            ..CoordinatorFigures::default()
        };
        for version in ledger.versions() {
            figures.units_done += u64::from(version.units_done());
            figures.units_running += u64::from(version.units_running());
            figures.units_pending += u64::from(version.units_pending());
            figures.orthos += version.figures().orthos;
            figures.attempts_discarded += version.attempts_discarded();
            if version.is_done() {
                figures.versions_done += 1;
            } else {
                figures.versions_running += 1;
            }
        }
        drop(guard);
        metrics::observe_coordinator(&figures);
    }
}

/// One unit on the wire.
fn unit_status(unit: UnitSummary) -> v1::UnitStatus {
    let (state, worker, worker_name) = match unit.phase {
        UnitPhase::Pending => (v1::UnitState::Pending, None, None),
        UnitPhase::Running { worker, name } => {
            (v1::UnitState::Running, Some(worker.to_string()), Some(name))
        }
        UnitPhase::Done => (v1::UnitState::Done, None, None),
    };
    v1::UnitStatus {
        unit: unit.unit.0,
        created: unit.created.get(),
        state: state as i32,
        attempts_started: unit.attempts_started,
        attempts_discarded: unit.attempts_discarded,
        times_counted: unit.times_counted,
        orthos: unit.orthos,
        frontier: unit.frontier,
        worker,
        worker_name,
        base_version: unit.base_version.get(),
        roots: unit.roots,
        excluded: unit.excluded,
        parent: unit.parent.0,
        split_into: unit.split_into,
        elapsed_ms: unit.elapsed_ms,
    }
}

/// The connected workers on the wire, with their rates.
fn worker_infos(ledger: &mut Ledger, now: Instant) -> Vec<v1::WorkerInfo> {
    ledger
        .workers(now)
        .into_iter()
        .map(|worker| v1::WorkerInfo {
            id: worker.id.to_string(),
            name: worker.name,
            threads: worker.threads,
            units: worker
                .units
                .iter()
                .map(|(version, unit)| format!("{version}/{unit}"))
                .collect(),
            units_done: worker.units_done,
            connected_ms: worker.connected_ms,
            orthos: worker.orthos,
            orthos_per_second: worker.orthos_per_second,
            cpu_seconds: worker.cpu_seconds,
        })
        .collect()
}

fn unknown_version(version: Version, known: usize) -> Status {
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
        Error::BadState(message) | Error::Config(message) | Error::InUse(message) => {
            Status::failed_precondition(message.clone())
        }
        Error::Unauthenticated(message) => Status::unauthenticated(message.clone()),
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
        tracing::info!(version = version.get(), bytes, "text submitted");
        Ok(Response::new(v1::SubmitReply {
            version: version.get(),
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
                        !request.follow
                            && status
                                .versions
                                .iter()
                                .all(|v| v.state() == v1::VersionState::Done)
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
        let requested = Version::new(request.into_inner().version);
        let guard = self.shared.state();
        let ledger = &guard.ledger;
        let version = if requested == Version::ZERO {
            ledger
                .versions()
                .last()
                .ok_or_else(|| Status::not_found("no version has been submitted yet"))?
        } else {
            ledger
                .version(requested)
                .ok_or_else(|| unknown_version(requested, ledger.versions().len()))?
        };
        // While a version runs: the best ortho its units reported so far.
        let figures = ledger.live_figures(version.version).unwrap_or_default();
        let report =
            VersionReport::from_words(version.version, ledger.words(version.version), &figures);
        Ok(Response::new(v1::OptimalReply {
            version: version.version.get(),
            state: v1::VersionState::of(version.is_done()) as i32,
            optimal: report.optimal.as_ref().map(proto::words_of),
        }))
    }

    async fn list_workers(
        &self,
        _request: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersReply>, Status> {
        let workers = worker_infos(&mut self.shared.state().ledger, Instant::now());
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
            let state = self.shared.state();
            let texts = &state.texts;
            if version == 0 || version as usize > texts.len() {
                return Err(unknown_version(Version::new(version), texts.len()));
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
                    let end = (start + crate::proto::TEXT_CHUNK_BYTES).min(bytes.len());
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
        // The worker and its stream come in together, welcomed first.
        let worker = {
            let mut state = self.shared.state();
            let kept = hello.kept.iter();
            let kept = kept.map(|kept| {
                (
                    UnitId(kept.unit),
                    Version::new(kept.version),
                    AttemptId(kept.attempt),
                )
            });
            let worker = state
                .ledger
                .add_worker(hello.name.clone(), hello.threads, kept);
            let welcome = v1::CoordinatorMessage {
                kind: Some(ToWorker::Welcome(v1::Welcome {
                    worker_id: worker.to_string(),
                    lease_ms: state.ledger.lease().as_millis() as u32,
                })),
            };
            let _ = sender.send(Ok(welcome));
            state.senders.insert(worker, sender);
            worker
        };
        tracing::info!(%worker, name = %hello.name, threads = hello.threads, "worker connected");
        self.shared.dispatch();

        let shared = self.shared.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(message)) => shared.handle(worker, message),
                    Ok(None) => break,
                    Err(status) => {
                        tracing::info!(%worker, %status, "worker stream broke");
                        break;
                    }
                }
            }
            {
                let mut state = shared.state();
                state.senders.remove(&worker);
                state.ledger.remove_worker(worker);
            }
            tracing::info!(%worker, "worker disconnected");
            shared.dispatch();
        });
        Ok(Response::new(UnboundedReceiverStream::new(receiver)))
    }
}
