//! Prometheus metrics of `serve` and `fold-worker` (`--metrics-listen ADDR`):
//! the text format at `http://ADDR/metrics`, and `ok` at `/healthz`.
//!
//! Every metric name is here, with a small function that records it; the
//! coordinator and the worker call those functions from a handful of places
//! and know nothing of Prometheus. Recording goes through the `metrics`
//! facade to `metrics-exporter-prometheus`, which renders the text format;
//! without `--metrics-listen` no recorder is installed and every call is a
//! no-op.
//!
//! *Units* are the pieces a version's search is split into (subtrees of the
//! search, see [`crate::coordinator::units`]), which workers lease and
//! search; a unit is searched again in every later version, so the unit
//! gauges count (unit, version) pairs.
//!
//! The coordinator's figures (units by state, versions, workers, orthos,
//! discarded attempts, bytes, the rate) are read from its state at each
//! scrape ([`observe_coordinator`]), so they agree with what `status` shows
//! at that moment; events that leave no trace in that state (leases expired,
//! how long versions took) are counted as they happen. A worker counts its
//! own work as it goes.
//!
//! | metric | type | process | meaning |
//! | --- | --- | --- | --- |
//! | `fold_orthos_found_total` | counter | both | coordinator: orthos of the units counted into every version's figures (the sum of `status`'s orthos); worker: new orthos its searches reported, including those of attempts later dropped |
//! | `fold_orthos_expanded_total` | counter | worker | orthos the worker's searches expanded |
//! | `fold_units` | gauge, `state` = pending, running, done | coordinator | units of every version |
//! | `fold_versions` | gauge, `state` = running, done | coordinator | versions submitted |
//! | `fold_workers_connected` | gauge | coordinator | workers with a Work stream open |
//! | `fold_leases_expired_total` | counter | coordinator | leases that ran out (the unit went back to pending) |
//! | `fold_attempts_discarded_total` | counter | coordinator | attempts whose results were thrown away |
//! | `fold_version_duration_seconds` | histogram | coordinator | from a version's submission (or the coordinator's start) to its last unit done |
//! | `fold_search_orthos_per_second` | gauge | coordinator | the rate `status` shows: new orthos per second over the last 5 s |
//! | `fold_wire_bytes_total` | counter, `direction` = sent, received | both | protobuf bytes exchanged between coordinator and workers |
//! | `fold_units_held` | gauge | worker | units the worker holds now |
//! | `fold_units_done_total` | counter | worker | units the worker finished and reported |
//! | `fold_units_abandoned_total` | counter | worker | units it handed back, failed or had revoked |
//! | `fold_coordinator_connected` | gauge | worker | 1 while its session with the coordinator is open |

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::{Error, Result};
use crate::interner::Version;

const ORTHOS_FOUND: &str = "fold_orthos_found_total";
const ORTHOS_EXPANDED: &str = "fold_orthos_expanded_total";
const UNITS: &str = "fold_units";
const VERSIONS: &str = "fold_versions";
const WORKERS_CONNECTED: &str = "fold_workers_connected";
const LEASES_EXPIRED: &str = "fold_leases_expired_total";
const ATTEMPTS_DISCARDED: &str = "fold_attempts_discarded_total";
const VERSION_DURATION: &str = "fold_version_duration_seconds";
const SEARCH_RATE: &str = "fold_search_orthos_per_second";
const WIRE_BYTES: &str = "fold_wire_bytes_total";
const UNITS_HELD: &str = "fold_units_held";
const UNITS_DONE: &str = "fold_units_done_total";
const UNITS_ABANDONED: &str = "fold_units_abandoned_total";
const COORDINATOR_CONNECTED: &str = "fold_coordinator_connected";

/// Buckets of [`VERSION_DURATION`], in seconds: a version takes from well
/// under a second (a small text) to hours.
const VERSION_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
];

/// Which process is being measured: each describes only its own metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `fold-coordinator serve`.
    Coordinator,
    /// `fold-worker`.
    Worker,
}

/// Binds the address metrics are served on (`--metrics-listen`), before
/// anything else is set up, so that a taken port stops a process early.
pub async fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::io(format!("cannot listen on {listen} for metrics"), e))
}

/// Installs this process's recorder; returns the server of it on
/// `listener`, to be spawned, which runs until `stopping` turns true (or its
/// sender goes) and then closes its connections. `refresh` runs before every
/// scrape (to read gauges off current state). Call once per process.
pub fn serve(
    listener: tokio::net::TcpListener,
    role: Role,
    refresh: impl Fn() + Send + Sync + 'static,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the bound metrics address", e))?;
    let handle = install(role)?;
    let refresh: Arc<dyn Fn() + Send + Sync> = Arc::new(refresh);
    tracing::info!(%bound, "serving metrics at /metrics");
    Ok(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stopping.wait_for(|stop| *stop) => break,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::debug!(%error, "cannot accept a metrics connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (handle, refresh) = (handle.clone(), refresh.clone());
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let response = answer(&request, &handle, refresh.as_ref());
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
            // Finished connections are collected as new ones come.
            while connections.try_join_next().is_some() {}
        }
        connections.shutdown().await;
    })
}

/// Installs the Prometheus recorder and describes `role`'s metrics.
fn install(role: Role) -> Result<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(VERSION_DURATION.into()), VERSION_BUCKETS)
        .map_err(|e| Error::Internal(format!("metrics: {e}")))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| Error::Internal(format!("metrics: {e}")))?;
    describe(role);
    start_at_zero(role);
    Ok(handle)
}

/// The answer to one HTTP request.
fn answer(
    request: &Request<hyper::body::Incoming>,
    handle: &PrometheusHandle,
    refresh: &(dyn Fn() + Send + Sync),
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    let text = "text/plain; charset=utf-8";
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, text, "use GET\n".into());
    }
    match request.uri().path() {
        "/metrics" => {
            refresh();
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                handle.render(),
            )
        }
        "/healthz" => reply(StatusCode::OK, text, "ok\n".into()),
        _ => reply(
            StatusCode::NOT_FOUND,
            text,
            "not found: metrics are at /metrics\n".into(),
        ),
    }
}

/// HELP lines (and units) of `role`'s metrics.
fn describe(role: Role) {
    match role {
        Role::Coordinator => {
            describe_counter!(
                ORTHOS_FOUND,
                "Orthos of the units counted into every version's figures (the sum of status's orthos)"
            );
            describe_gauge!(
                UNITS,
                "Units of every version, by state (a unit counts once per version)"
            );
            describe_gauge!(VERSIONS, "Versions submitted, by state");
            describe_gauge!(WORKERS_CONNECTED, "Workers with a Work stream open");
            describe_counter!(
                LEASES_EXPIRED,
                "Leases that ran out, sending their unit back to pending"
            );
            describe_counter!(
                ATTEMPTS_DISCARDED,
                "Attempts whose results were thrown away (worker lost, lease expired, handed back)"
            );
            describe_histogram!(
                VERSION_DURATION,
                Unit::Seconds,
                "Time from a version's submission (or the coordinator's start) to its last unit done"
            );
            describe_gauge!(
                SEARCH_RATE,
                "New orthos found per second over the last 5 s, across all workers"
            );
            describe_counter!(
                WIRE_BYTES,
                Unit::Bytes,
                "Protobuf bytes exchanged with workers (Work streams and GetTexts)"
            );
        }
        Role::Worker => {
            describe_counter!(
                ORTHOS_FOUND,
                "New orthos this worker's searches reported (attempts later dropped included)"
            );
            describe_counter!(ORTHOS_EXPANDED, "Orthos this worker's searches expanded");
            describe_gauge!(UNITS_HELD, "Units this worker holds");
            describe_counter!(UNITS_DONE, "Units this worker finished and reported");
            describe_counter!(
                UNITS_ABANDONED,
                "Units this worker handed back, failed, or had revoked"
            );
            describe_gauge!(
                COORDINATOR_CONNECTED,
                "1 while the worker's session with the coordinator is open"
            );
            describe_counter!(
                WIRE_BYTES,
                Unit::Bytes,
                "Protobuf bytes exchanged with the coordinator (Work stream and GetTexts)"
            );
        }
    }
}

/// Shows the counters of events that may not have happened yet as 0, so
/// that they are there from the first scrape (a series that appears only
/// later makes `rate()` and alerts miss its first increase).
fn start_at_zero(role: Role) {
    match role {
        Role::Coordinator => leases_expired(0),
        Role::Worker => {
            orthos_found(0);
            orthos_expanded(0);
            counter!(UNITS_DONE).increment(0);
            counter!(UNITS_ABANDONED).increment(0);
            units_held(0);
            coordinator_connected(false);
            wire_bytes(Direction::Sent, 0);
            wire_bytes(Direction::Received, 0);
        }
    }
}

/// The coordinator's state as its gauges and totals show it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CoordinatorFigures {
    /// Units waiting for a worker, over every version.
    pub units_pending: u64,
    /// Units held by workers.
    pub units_running: u64,
    /// Units finished and counted.
    pub units_done: u64,
    /// Versions still searched.
    pub versions_running: u64,
    /// Versions done.
    pub versions_done: u64,
    /// Workers connected.
    pub workers: u64,
    /// Orthos of every version's counted units.
    pub orthos: u64,
    /// Attempts discarded, over every version.
    pub attempts_discarded: u64,
    /// Protobuf bytes sent to workers.
    pub wire_bytes_sent: u64,
    /// Protobuf bytes received from workers.
    pub wire_bytes_received: u64,
    /// New orthos per second over the last few seconds.
    pub orthos_per_second: f64,
}

/// Records the coordinator's state (at each scrape).
pub fn observe_coordinator(figures: &CoordinatorFigures) {
    for (state, count) in [
        ("pending", figures.units_pending),
        ("running", figures.units_running),
        ("done", figures.units_done),
    ] {
        gauge!(UNITS, "state" => state).set(count as f64);
    }
    for (state, count) in [
        ("running", figures.versions_running),
        ("done", figures.versions_done),
    ] {
        gauge!(VERSIONS, "state" => state).set(count as f64);
    }
    gauge!(WORKERS_CONNECTED).set(figures.workers as f64);
    // Totals kept by the coordinator's state: they only grow while it runs.
    counter!(ORTHOS_FOUND).absolute(figures.orthos);
    counter!(ATTEMPTS_DISCARDED).absolute(figures.attempts_discarded);
    counter!(WIRE_BYTES, "direction" => "sent").absolute(figures.wire_bytes_sent);
    counter!(WIRE_BYTES, "direction" => "received").absolute(figures.wire_bytes_received);
    gauge!(SEARCH_RATE).set(figures.orthos_per_second);
}

/// When each version still running started (for [`VERSION_DURATION`]).
fn version_starts() -> &'static Mutex<HashMap<Version, Instant>> {
    static STARTS: OnceLock<Mutex<HashMap<Version, Instant>>> = OnceLock::new();
    STARTS.get_or_init(Default::default)
}

/// A version began: submitted, or restored unfinished at start.
pub fn version_started(version: Version) {
    version_starts()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(version, Instant::now());
}

/// A version's last unit is done.
pub fn version_done(version: Version) {
    let started = version_starts()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&version);
    if let Some(started) = started {
        histogram!(VERSION_DURATION).record(started.elapsed().as_secs_f64());
    }
}

/// Leases ran out.
pub fn leases_expired(count: usize) {
    counter!(LEASES_EXPIRED).increment(count as u64);
}

/// A worker's search reported `orthos` new orthos.
pub fn orthos_found(orthos: u64) {
    counter!(ORTHOS_FOUND).increment(orthos);
}

/// A worker's search expanded `orthos` more orthos.
pub fn orthos_expanded(orthos: u64) {
    counter!(ORTHOS_EXPANDED).increment(orthos);
}

/// How a unit left a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitEnd {
    /// Finished and reported.
    Done,
    /// Handed back, failed or revoked.
    Abandoned,
}

/// A worker's unit ended.
pub fn unit_ended(end: UnitEnd) {
    match end {
        UnitEnd::Done => counter!(UNITS_DONE).increment(1),
        UnitEnd::Abandoned => counter!(UNITS_ABANDONED).increment(1),
    }
}

/// The units a worker holds now.
pub fn units_held(count: usize) {
    gauge!(UNITS_HELD).set(count as f64);
}

/// Whether a worker's session with the coordinator is open.
pub fn coordinator_connected(connected: bool) {
    gauge!(COORDINATOR_CONNECTED).set(if connected { 1.0 } else { 0.0 });
}

/// Which way protobuf bytes went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// To the other side.
    Sent,
    /// From the other side.
    Received,
}

/// A worker exchanged `bytes` of protobuf with the coordinator.
pub fn wire_bytes(direction: Direction, bytes: usize) {
    let direction = match direction {
        Direction::Sent => "sent",
        Direction::Received => "received",
    };
    counter!(WIRE_BYTES, "direction" => direction).increment(bytes as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coordinator_renders_prometheus_names_with_labels_and_help() {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(VERSION_DURATION.into()), VERSION_BUCKETS)
            .unwrap()
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe(Role::Coordinator);
            observe_coordinator(&CoordinatorFigures {
                units_pending: 3,
                units_done: 7,
                orthos: 41,
                ..Default::default()
            });
            // Totals never go back, whatever a later reading says.
            observe_coordinator(&CoordinatorFigures {
                orthos: 40,
                ..Default::default()
            });
            leases_expired(2);
            version_started(Version::FIRST);
            version_done(Version::FIRST);
        });
        let text = handle.render();
        for line in [
            "fold_units{state=\"pending\"} 0",
            "fold_orthos_found_total 41",
            "fold_leases_expired_total 2",
            "# HELP fold_orthos_found_total",
            "# TYPE fold_orthos_found_total counter",
            "fold_version_duration_seconds_bucket{le=\"0.1\"} 1",
            "fold_version_duration_seconds_count 1",
        ] {
            assert!(text.contains(line), "no `{line}` in\n{text}");
        }
    }
}
