//! One Work stream session with a coordinator: the worker says hello, takes
//! the units it is assigned (and splits them when asked), and streams back
//! what its search thread reports.
//!
//! The session also keeps the leases of every attempt it holds: whatever
//! stage an attempt is at (its texts being fetched, its interner built, or
//! waiting behind another unit on the search thread), a heartbeat goes out
//! at least every quarter lease. A lease therefore runs out only when the
//! whole worker stops (frozen, cut off or gone). An attempt the coordinator
//! revokes anyway is dropped at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::WorkerOptions;
use super::runner::{UnitRunner, process_cpu_ms};
use super::texts::{Preparer, failed};
use crate::auth::BearerToken;
use crate::channel::{self, Target};
use crate::error::{Error, Result};
use crate::ids::AttemptId;
use crate::metrics::{self, Direction, UnitEnd};
use crate::proto::v1;

use v1::coordinator_message::Kind as FromCoordinator;
use v1::worker_message::Kind as ToCoordinator;

/// Heartbeats before the coordinator says how long leases last.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);

/// How often, at most, the worker logs what it has been working on.
const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// How a session ended.
pub enum SessionEnd {
    /// Shutdown was asked for; unfinished units were handed back.
    Shutdown,
    /// The session was accepted and later ended.
    Welcomed,
    /// The coordinator refused the session.
    Refused(tonic::Status),
}

/// Runs one session until the stream ends or `shutdown` becomes true.
pub async fn session(
    options: &WorkerOptions,
    target: &Target,
    token: &BearerToken,
    runner: &Arc<UnitRunner>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<SessionEnd> {
    let mut client = channel::connect_to(target, token.clone()).await?;

    let (outbound, outbound_stream) = mpsc::channel(256);
    let _ = outbound.send(hello(options, runner)).await;
    // Every message to the coordinator leaves through this stream: counted once here.
    let outbound_stream = tokio_stream::StreamExt::map(
        ReceiverStream::new(outbound_stream),
        |message: v1::WorkerMessage| {
            metrics::wire_bytes(Direction::Sent, prost::Message::encoded_len(&message));
            message
        },
    );
    let mut inbound = match client.work(outbound_stream).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Ok(SessionEnd::Refused(status)),
    };

    let id = runner.new_session();
    let (events, mut event_stream) = mpsc::unbounded_channel();
    let mut session = Session {
        options,
        runner,
        outbound,
        preparer: Preparer::start(client, runner.clone(), id, events),
        held: HashMap::new(),
        heartbeat: heartbeat_every(DEFAULT_HEARTBEAT),
        summary: Summary::default(),
        welcomed: false,
    };
    let shutting_down = session
        .serve(&mut inbound, &mut event_stream, shutdown)
        .await;
    session.end(id, shutting_down, inbound).await
}

/// The worker's first message: its name, threads and the units it keeps.
fn hello(options: &WorkerOptions, runner: &UnitRunner) -> v1::WorkerMessage {
    v1::WorkerMessage {
        kind: Some(ToCoordinator::Hello(v1::Hello {
            name: options.name.clone(),
            threads: runner.threads() as u32,
            kept: runner
                .kept_units()
                .into_iter()
                .map(|(unit, version, attempt)| v1::KeptUnit {
                    unit: unit.0,
                    version: version.get(),
                    attempt: attempt.0,
                })
                .collect(),
        })),
    }
}

/// What a session holds while it runs. Each handler returns whether the
/// session goes on (false: the stream to the coordinator is gone).
struct Session<'a> {
    options: &'a WorkerOptions,
    runner: &'a Arc<UnitRunner>,
    outbound: mpsc::Sender<v1::WorkerMessage>,
    preparer: Preparer,
    /// Every attempt held, with its last progress (repeated as the heartbeat).
    held: HashMap<AttemptId, v1::Progress>,
    heartbeat: tokio::time::Interval,
    summary: Summary,
    welcomed: bool,
}

impl Session<'_> {
    /// Handles the coordinator's messages, the search's reports and the
    /// heartbeat until the stream ends (false) or `shutdown` comes (true).
    async fn serve(
        &mut self,
        inbound: &mut Streaming<v1::CoordinatorMessage>,
        events: &mut mpsc::UnboundedReceiver<v1::WorkerMessage>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        loop {
            let go_on = tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(message)) => self.on_coordinator(message).await,
                    Ok(None) => false,
                    Err(status) => {
                        tracing::warn!(%status, "work stream broke");
                        false
                    }
                },
                Some(event) = events.recv() => self.on_search(event).await,
                _ = self.heartbeat.tick() => self.beat().await,
                _ = shutdown.changed() => return true,
            };
            if !go_on {
                return false;
            }
        }
    }

    /// Ends session `id`: its attempts stop being prepared and searched
    /// (the coordinator is gone, so they are void; or the worker is
    /// stopping, `shutting_down`, and hands them back).
    async fn end(
        self,
        id: u64,
        shutting_down: bool,
        mut inbound: Streaming<v1::CoordinatorMessage>,
    ) -> Result<SessionEnd> {
        let Session {
            runner,
            preparer,
            held,
            outbound,
            welcomed,
            ..
        } = self;
        drop(preparer);
        runner.cancel(id);
        if shutting_down {
            for attempt in held.into_keys() {
                metrics::unit_ended(UnitEnd::Abandoned);
                let _ = outbound.send(failed(attempt, "worker shutting down")).await;
            }
            drop(outbound);
            // Let the hand-backs reach the coordinator before the stream closes.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Ok(Some(_)) = inbound.message().await {}
            })
            .await;
            return Ok(SessionEnd::Shutdown);
        }
        if welcomed {
            Ok(SessionEnd::Welcomed)
        } else {
            Err(Error::Connect(
                "the coordinator closed the session before welcoming this worker".into(),
            ))
        }
    }

    /// A message from the coordinator.
    async fn on_coordinator(&mut self, message: v1::CoordinatorMessage) -> bool {
        metrics::wire_bytes(Direction::Received, prost::Message::encoded_len(&message));
        match message.kind {
            Some(FromCoordinator::Welcome(welcome)) => {
                self.welcomed = true;
                metrics::coordinator_connected(true);
                let lease = Duration::from_millis(welcome.lease_ms.into());
                self.heartbeat = heartbeat_every(lease / 4);
                tracing::info!(
                    coordinator = %self.options.coordinator,
                    worker_id = %welcome.worker_id,
                    lease_ms = welcome.lease_ms,
                    threads = self.runner.threads(),
                    "connected"
                );
            }
            Some(FromCoordinator::Assign(assign)) => {
                tracing::debug!(
                    attempt = assign.attempt,
                    version = assign.version,
                    unit = assign.unit,
                    "unit assigned"
                );
                let progress = v1::Progress {
                    attempt: assign.attempt,
                    ..Default::default()
                };
                self.held.insert(AttemptId(assign.attempt), progress);
                metrics::units_held(self.held.len());
                self.preparer.prepare(assign);
            }
            Some(FromCoordinator::Revoke(revoke)) => {
                let attempt = AttemptId(revoke.attempt);
                if self.held.remove(&attempt).is_some() {
                    metrics::unit_ended(UnitEnd::Abandoned);
                    metrics::units_held(self.held.len());
                    tracing::info!(
                        %attempt,
                        "the coordinator took a unit back (its lease ran out); dropping it"
                    );
                }
                self.runner.revoke(attempt);
                // The answer tells the coordinator this worker is alive
                // again: a worker whose leases ran out gets no work until it
                // is heard from, and with nothing held it would have nothing
                // else to say.
                return self.send(failed(attempt, "revoked")).await;
            }
            Some(FromCoordinator::Split(split)) => {
                tracing::debug!(
                    attempt = split.attempt,
                    parts = split.parts,
                    "asked to split a unit"
                );
                self.runner.split(AttemptId(split.attempt), split.parts);
            }
            None => {}
        }
        true
    }

    /// A report of the preparer or the search thread, passed on.
    async fn on_search(&mut self, event: v1::WorkerMessage) -> bool {
        match &event.kind {
            Some(ToCoordinator::Progress(progress)) => {
                if let Some(last) = self.held.get_mut(&AttemptId(progress.attempt)) {
                    metrics::orthos_found(progress.orthos.saturating_sub(last.orthos));
                    *last = progress.clone();
                }
            }
            Some(ToCoordinator::Done(done)) => {
                if self.held.remove(&AttemptId(done.attempt)).is_some() {
                    metrics::unit_ended(UnitEnd::Done);
                }
                self.summary.done += 1;
            }
            Some(ToCoordinator::Failed(failed))
                if self.held.remove(&AttemptId(failed.attempt)).is_some() =>
            {
                metrics::unit_ended(UnitEnd::Abandoned);
            }
            _ => {}
        }
        metrics::units_held(self.held.len());
        self.send(event).await
    }

    /// The heartbeat: every held attempt's last progress again, so its
    /// lease is renewed whatever stage it is at.
    async fn beat(&mut self) -> bool {
        let beats: Vec<v1::WorkerMessage> = self
            .held
            .values()
            .map(|last| v1::WorkerMessage {
                kind: Some(ToCoordinator::Progress(v1::Progress {
                    attempt: last.attempt,
                    orthos: last.orthos,
                    queued: last.queued,
                    expanded: last.expanded,
                    cpu_ms: process_cpu_ms(),
                    ..Default::default()
                })),
            })
            .collect();
        for beat in beats {
            if !self.send(beat).await {
                return false;
            }
        }
        self.summary.log_if_due(self.held.len());
        true
    }

    async fn send(&self, message: v1::WorkerMessage) -> bool {
        self.outbound.send(message).await.is_ok()
    }
}

/// A heartbeat timer; a tick that comes late does not bring a burst.
fn heartbeat_every(period: Duration) -> tokio::time::Interval {
    let period = period.clamp(Duration::from_millis(20), DEFAULT_HEARTBEAT);
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// Units finished since the worker last said what it was doing.
struct Summary {
    done: u64,
    since: Instant,
}

impl Default for Summary {
    fn default() -> Self {
        Self {
            done: 0,
            since: Instant::now(),
        }
    }
}

impl Summary {
    fn log_if_due(&mut self, held: usize) {
        if self.since.elapsed() < SUMMARY_EVERY || (self.done == 0 && held == 0) {
            return;
        }
        tracing::info!(
            units_done = self.done,
            units_held = held,
            "searched {} units in the last {} s; holding {held}",
            self.done,
            self.since.elapsed().as_secs()
        );
        *self = Self::default();
    }
}
