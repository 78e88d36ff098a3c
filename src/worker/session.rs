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

use super::WorkerOptions;
use super::runner::{UnitRunner, process_cpu_ms};
use super::texts::{Preparer, failed};
use crate::auth::BearerToken;
use crate::channel::{self, Target};
use crate::error::{Error, Result};
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
    let hello = v1::WorkerMessage {
        kind: Some(ToCoordinator::Hello(v1::Hello {
            name: options.name.clone(),
            threads: runner.threads() as u32,
            kept: runner
                .kept_units()
                .into_iter()
                .map(|(unit, version, attempt)| v1::KeptUnit {
                    unit,
                    version,
                    attempt,
                })
                .collect(),
        })),
    };
    let _ = outbound.send(hello).await;
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

    let session = runner.new_session();
    let (events, mut event_stream) = mpsc::unbounded_channel();
    let preparer = Preparer::start(client, runner.clone(), session, events);
    // Every attempt held, with its last progress (repeated as the heartbeat).
    let mut held: HashMap<u64, v1::Progress> = HashMap::new();
    let mut heartbeat = heartbeat_every(DEFAULT_HEARTBEAT);
    let mut summary = Summary::default();
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
                metrics::wire_bytes(Direction::Received, prost::Message::encoded_len(&message));
                match message.kind {
                    Some(FromCoordinator::Welcome(welcome)) => {
                        welcomed = true;
                        metrics::coordinator_connected(true);
                        let lease = Duration::from_millis(welcome.lease_ms.into());
                        heartbeat = heartbeat_every(lease / 4);
                        tracing::info!(
                            coordinator = %options.coordinator,
                            worker_id = %welcome.worker_id,
                            lease_ms = welcome.lease_ms,
                            threads = runner.threads(),
                            "connected"
                        );
                    }
                    Some(FromCoordinator::Assign(assign)) => {
                        tracing::debug!(attempt = assign.attempt, version = assign.version, unit = assign.unit, "unit assigned");
                        held.insert(assign.attempt, v1::Progress { attempt: assign.attempt, ..Default::default() });
                        metrics::units_held(held.len());
                        preparer.prepare(assign);
                    }
                    Some(FromCoordinator::Revoke(revoke)) => {
                        if held.remove(&revoke.attempt).is_some() {
                            metrics::unit_ended(UnitEnd::Abandoned);
                            metrics::units_held(held.len());
                            tracing::info!(attempt = revoke.attempt, "the coordinator took a unit back (its lease ran out); dropping it");
                        }
                        runner.revoke(revoke.attempt);
                        // The answer tells the coordinator this worker is alive
                        // again: a worker whose leases ran out gets no work
                        // until it is heard from, and with nothing held it
                        // would have nothing else to say.
                        if outbound.send(failed(revoke.attempt, "revoked")).await.is_err() {
                            break;
                        }
                    }
                    Some(FromCoordinator::Split(split)) => {
                        tracing::debug!(attempt = split.attempt, parts = split.parts, "asked to split a unit");
                        runner.split(split.attempt, split.parts);
                    }
                    None => {}
                }
            }
            Some(event) = event_stream.recv() => {
                match &event.kind {
                    Some(ToCoordinator::Progress(progress)) => {
                        if let Some(last) = held.get_mut(&progress.attempt) {
                            metrics::orthos_found(progress.orthos.saturating_sub(last.orthos));
                            *last = progress.clone();
                        }
                    }
                    Some(ToCoordinator::Done(done)) => {
                        if held.remove(&done.attempt).is_some() {
                            metrics::unit_ended(UnitEnd::Done);
                        }
                        summary.done += 1;
                    }
                    Some(ToCoordinator::Failed(failed)) => {
                        let was_held = held.remove(&failed.attempt).is_some();
                        if was_held {
                            metrics::unit_ended(UnitEnd::Abandoned);
                        }
                    }
                    _ => {}
                }
                metrics::units_held(held.len());
                if outbound.send(event).await.is_err() {
                    break;
                }
            }
            _ = heartbeat.tick() => {
                for last in held.values() {
                    let beat = v1::Progress {
                        attempt: last.attempt,
                        orthos: last.orthos,
                        queued: last.queued,
                        expanded: last.expanded,
                        cpu_ms: process_cpu_ms(),
                        ..Default::default()
                    };
                    let beat = v1::WorkerMessage { kind: Some(ToCoordinator::Progress(beat)) };
                    if outbound.send(beat).await.is_err() {
                        break;
                    }
                }
                summary.log_if_due(held.len());
            }
            _ = shutdown.changed() => {
                drop(preparer);
                runner.cancel(session);
                for attempt in held.into_keys() {
                    metrics::unit_ended(UnitEnd::Abandoned);
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
    // The coordinator is gone: its attempts are void, stop preparing and
    // searching them.
    drop(preparer);
    runner.cancel(session);
    if welcomed {
        Ok(SessionEnd::Welcomed)
    } else {
        Err(Error::Connect(
            "the coordinator closed the session before welcoming this worker".into(),
        ))
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
