//! The gRPC coordinator (`fold-coordinator serve`): it stores submitted texts,
//! splits each version's search into units (subtrees, see [`units`]), leases
//! the units to workers over their Work streams, splits large ones while they
//! run so that no worker idles, and adds up their figures.
//!
//! * [`units`] — what a unit covers, and how units split.
//! * [`ledger`] — versions, units, attempts, leases, splits and aggregation (no I/O).
//! * [`vocabulary`] — the words of the texts, shared by every version.
//! * [`persist`] — texts, units and counted results in redb.
//! * [`service`] — the `fold.v1.Coordinator` rpcs.
//! * [`crate::auth`] — the bearer token check (shared with the clients).
//! * [`connections`] — the cap on open connections, and closing silent ones.
//!
//! Health (`grpc.health.v1`) and server reflection (v1 and v1alpha) are served
//! beside the Coordinator service and need no token; with TLS
//! (`--tls-cert`, `--tls-key`) everything is served over TLS, and
//! `--health-listen` serves health alone in plain text for probes that
//! cannot speak TLS. `--metrics-listen` serves Prometheus metrics
//! ([`crate::metrics`]).
//!
//! On the shutdown signal (SIGTERM or Ctrl-C) the coordinator reports
//! NOT_SERVING on health, stops handing out units, ends the workers' Work
//! streams (they drop their units and reconnect later) and the status
//! watchers' streams, gives other connections a few seconds, and saves the
//! finished units.

pub mod connections;
pub mod ledger;
pub mod persist;
pub mod service;
pub mod units;
pub mod vocabulary;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tonic_reflection::server::{v1 as reflection_v1, v1alpha as reflection_v1alpha};

use crate::auth::TokenCheck;
use crate::error::{Error, Result};
use crate::proto::{self, v1};
use crate::search::Dedup;
use ledger::{Ledger, RestoredVersion};
use persist::CoordinatorStore;
use service::{CoordinatorService, Shared};
use vocabulary::Vocabulary;

pub use ledger::{DEFAULT_SPLIT_FROM, DEFAULT_UNIT_ORTHOS};

/// Default address `serve` listens on: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

/// Default largest text `submit` accepts.
pub const DEFAULT_MAX_TEXT_BYTES: usize = 64 << 20;

/// Largest `--max-text-bytes`: the coordinator and every worker hold each
/// text in memory, with its interner.
pub const MAX_TEXT_BYTES_LIMIT: usize = crate::text::MAX_TEXT_BYTES as usize;

/// Shortest lease `serve` accepts: workers renew their leases every quarter
/// lease, which must stay well above network and scheduling delays.
pub const MIN_LEASE: Duration = Duration::from_millis(100);

/// Longest lease `serve` accepts (a day): a frozen worker keeps its units
/// this long.
pub const MAX_LEASE: Duration = Duration::from_secs(24 * 60 * 60);

/// How often finished units are committed to disk.
const SAVE_EVERY: Duration = Duration::from_millis(200);

/// How `serve` runs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where texts, units and their results are kept.
    pub state_dir: PathBuf,
    /// The bearer token every Coordinator rpc must carry.
    pub token: String,
    /// How long an attempt's lease lasts past the worker's last report on it.
    pub lease: Duration,
    /// How searches avoid finding an ortho twice (seen-set units are whole
    /// first words and never split). `None`: the mode the state dir was
    /// created with, or tree for a new one.
    pub dedup: Option<Dedup>,
    /// Split a running unit for an idle worker only when it has at least
    /// this many orthos found and not expanded.
    pub split_from: u64,
    /// Orthos an attempt may expand before it hands the rest of its unit
    /// off (0: no limit).
    pub unit_orthos: u64,
    /// Largest text accepted by Submit.
    pub max_text_bytes: usize,
    /// Connections open at once; 0: as many as the open file limit allows
    /// (see [`connections::connections_allowed`]).
    pub max_connections: usize,
    /// Serve TLS with this certificate chain and private key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Also serve health alone, in plain text, on this address.
    pub health_listen: Option<SocketAddr>,
    /// Serve Prometheus metrics on this address.
    pub metrics_listen: Option<SocketAddr>,
}

/// Rebuilds the coordinator's state from its store: the ledger, the
/// vocabulary at the latest version and the texts in version order.
fn restore(
    store: &CoordinatorStore,
    options: &ServeOptions,
) -> Result<(Ledger, Vocabulary, Vec<Arc<String>>)> {
    let stored = store.load()?;
    let mut ledger = Ledger::new(options.lease, store.dedup());
    ledger.set_split_from(options.split_from);
    ledger.set_unit_orthos(options.unit_orthos);
    let mut vocabulary = Vocabulary::new();
    let mut versions = Vec::new();
    let mut texts = Vec::new();
    let mut sizes = Vec::new();
    for version in stored.versions {
        let added = vocabulary.ingest(&version.text);
        sizes.push(added.weights.len());
        versions.push(RestoredVersion {
            source: version.source,
            new_words: added.new_words,
        });
        texts.push(Arc::new(version.text));
    }
    let damaged = |what: String| crate::storage::damaged(store.path(), what);
    // A unit's roots use the words of the version it was created in; its
    // exclusions come from splits in any later version.
    let latest = sizes.last().copied().unwrap_or(0);
    for unit in &stored.units {
        let Some(&size) = sizes.get((unit.created.get() as usize).wrapping_sub(1)) else {
            return Err(damaged(format!(
                "unit {} was created in version {}, which is not stored",
                unit.id, unit.created
            )));
        };
        let beyond = |orthos: &[crate::ortho::Ortho], size: usize| {
            orthos
                .iter()
                .flat_map(|ortho| ortho.payload().flatten())
                .any(|token| token.0 as usize >= size)
        };
        if beyond(&unit.roots, size) || beyond(&unit.excluded, latest) {
            return Err(damaged(format!(
                "unit {} names a word its version does not have",
                unit.id
            )));
        }
    }
    let results = stored
        .results
        .into_iter()
        .map(|(version, unit, bytes)| {
            let size = sizes
                .get((version.get() as usize).wrapping_sub(1))
                .copied()
                .ok_or_else(|| {
                    damaged(format!(
                        "a result of version {version}, which is not stored"
                    ))
                })?;
            persist::decode_result(&bytes, size)
                .map(|counted| (version, unit, counted))
                .map_err(|error| {
                    damaged(format!(
                        "the result of unit {unit} at version {version}: {error}"
                    ))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    ledger.restore(versions, stored.units, results);
    for version in ledger.versions().iter().filter(|v| !v.is_done()) {
        crate::metrics::version_started(version.version);
    }
    Ok((ledger, vocabulary, texts))
}

/// How long, after the shutdown signal, connections get to finish (a
/// client watching a version, a worker handing back its units) before the
/// coordinator stops anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Concurrent rpcs on one HTTP/2 connection (a worker uses two at most, a
/// client one).
const MAX_STREAMS_PER_CONNECTION: u32 = 64;

/// Serves until `shutdown` resolves. `on_listening` is told the bound address
/// (useful with port 0).
///
/// Shutdown is joined: the signal reaches every background task through one
/// watch channel (lease expiry and saving, the plain-text health server,
/// the metrics server),
/// the gRPC server drains its connections (for at most
/// [`SHUTDOWN_GRACE`]), every task is awaited, and the finished units are
/// saved last.
pub async fn serve(
    options: ServeOptions,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    check_options(&options)?;
    let limits = connection_limits(options.max_connections);
    let mut server = grpc_server(&options)?;
    // Bind first: a coordinator that cannot listen leaves no state dir behind.
    let listeners = Listeners::bind(&options).await?;
    let bound = listeners.bound;

    let store = CoordinatorStore::open(&options.state_dir, options.dedup)?;
    let (ledger, vocabulary, texts) = restore(&store, &options)?;
    tracing::info!(
        versions = texts.len(),
        max_connections = limits.max_connections,
        "state restored"
    );
    let shared = Arc::new(Shared::new(
        ledger,
        vocabulary,
        texts,
        store,
        options.max_text_bytes,
    ));
    // The signal turns `stopping` true; a dropped sender ends the waits too.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let signal = tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(listener) = listeners.metrics {
        let observed = shared.clone();
        let refresh = move || observed.observe_metrics();
        let role = crate::metrics::Role::Coordinator;
        tasks.spawn(crate::metrics::serve(
            listener,
            role,
            refresh,
            stopping.clone(),
        )?);
    }
    tasks.spawn(background(shared.clone(), options.lease, stopping.clone()));
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, tonic_health::ServingStatus::Serving).await;
    if let Some(listener) = listeners.health {
        tasks.spawn(health_only(
            listener,
            health_service.clone(),
            stopping.clone(),
        ));
    }
    let (reflection_v1, reflection_v1alpha) = reflection()?;
    let router = server
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(coordinator_service(shared.clone(), &options.token));

    on_listening(bound);
    let incoming = connections::accept(listeners.grpc, limits);
    let served = serve_until_stopped(router, incoming, &shared, &health, &stopping).await;
    // Whether the signal came or the server failed, every task now ends.
    signal.abort();
    let _ = signal.await;
    while let Some(joined) = tasks.join_next().await {
        if let Err(error) = joined {
            tracing::error!(%error, "a background task failed");
        }
    }
    let saved = shared.save_results().await;
    served.map_err(|e| Error::Internal(format!("gRPC server failed: {e}")))?;
    saved
}

/// Serves `router` on `incoming` until `stopping` turns true; then reports
/// NOT_SERVING, stops leasing, stops accepting, ends the workers' Work
/// streams (they reconnect later), and gives the other connections
/// [`SHUTDOWN_GRACE`] to finish.
async fn serve_until_stopped(
    router: tonic::transport::server::Router,
    incoming: tokio_stream::wrappers::ReceiverStream<std::io::Result<connections::Connection>>,
    shared: &Arc<Shared>,
    health: &tonic_health::server::HealthReporter,
    stopping: &tokio::sync::watch::Receiver<bool>,
) -> std::result::Result<(), tonic::transport::Error> {
    let drained = {
        let (shared, health, mut stopping) = (shared.clone(), health.clone(), stopping.clone());
        async move {
            let _ = stopping.wait_for(|stop| *stop).await;
            tracing::info!("shutting down: no more units are leased; workers hand theirs back");
            set_health(&health, tonic_health::ServingStatus::NotServing).await;
            shared.stop();
        }
    };
    let grace_over = {
        let mut stopping = stopping.clone();
        async move {
            let _ = stopping.wait_for(|stop| *stop).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        }
    };
    tokio::select! {
        served = router.serve_with_incoming_shutdown(incoming, drained) => served,
        () = grace_over => {
            tracing::warn!(
                "connections still open {} s after the shutdown signal; stopping anyway",
                SHUTDOWN_GRACE.as_secs()
            );
            Ok(())
        }
    }
}

/// Refuses settings `serve` cannot run with.
fn check_options(options: &ServeOptions) -> Result<()> {
    if options.token.is_empty() {
        return Err(Error::Config(
            "serve needs a bearer token: pass --token or set FOLD_TOKEN".into(),
        ));
    }
    if !(MIN_LEASE..=MAX_LEASE).contains(&options.lease) {
        return Err(Error::Config(format!(
            "a lease of {} ms is outside {} ms to {} ms",
            options.lease.as_millis(),
            MIN_LEASE.as_millis(),
            MAX_LEASE.as_millis()
        )));
    }
    if options.max_text_bytes > MAX_TEXT_BYTES_LIMIT {
        return Err(Error::Config(format!(
            "a largest text of {} bytes is over the limit of {MAX_TEXT_BYTES_LIMIT} bytes",
            options.max_text_bytes
        )));
    }
    Ok(())
}

/// The gRPC server: keepalive, stream limits and TLS when asked.
fn grpc_server(options: &ServeOptions) -> Result<tonic::transport::Server> {
    // No per-request timeout: Submit and Work legitimately run long, and
    // only token holders reach them; silent or lost peers are dealt with by
    // the connection limits and HTTP/2 keepalive.
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION));
    let Some((cert, key)) = &options.tls else {
        return Ok(server);
    };
    server
        .tls_config(crate::tls::server_config(cert, key)?)
        .map_err(|e| {
            Error::BadText(format!(
                "cannot serve TLS with --tls-cert {} and --tls-key {}: {}",
                cert.display(),
                key.display(),
                crate::tls::causes(&e)
            ))
        })
}

/// Everything `serve` listens on, bound before anything else happens.
struct Listeners {
    grpc: tokio::net::TcpListener,
    bound: SocketAddr,
    health: Option<tokio::net::TcpListener>,
    metrics: Option<tokio::net::TcpListener>,
}

impl Listeners {
    async fn bind(options: &ServeOptions) -> Result<Self> {
        let grpc = bind(options.listen, "").await?;
        let bound = grpc
            .local_addr()
            .map_err(|e| Error::io("cannot read the bound address", e))?;
        let health = match options.health_listen {
            Some(address) => Some(bind(address, " for health").await?),
            None => None,
        };
        let metrics = match options.metrics_listen {
            Some(address) => Some(crate::metrics::bind(address).await?),
            None => None,
        };
        Ok(Self {
            grpc,
            bound,
            health,
            metrics,
        })
    }
}

/// Server reflection (v1 and v1alpha) of the Coordinator and health services.
#[allow(clippy::type_complexity)]
fn reflection() -> Result<(
    reflection_v1::ServerReflectionServer<impl reflection_v1::ServerReflection>,
    reflection_v1alpha::ServerReflectionServer<impl reflection_v1alpha::ServerReflection>,
)> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let failed = |e: tonic_reflection::server::Error| Error::Internal(format!("reflection: {e}"));
    Ok((
        builder().build_v1().map_err(failed)?,
        builder().build_v1alpha().map_err(failed)?,
    ))
}

/// The Coordinator service, behind the bearer-token check.
fn coordinator_service(
    shared: Arc<Shared>,
    token: &str,
) -> tonic::service::interceptor::InterceptedService<
    v1::coordinator_server::CoordinatorServer<CoordinatorService>,
    impl tonic::service::Interceptor + Clone + use<>,
> {
    let check = TokenCheck::new(token);
    let coordinator =
        v1::coordinator_server::CoordinatorServer::new(CoordinatorService::new(shared))
            .max_decoding_message_size(crate::proto::MAX_MESSAGE_BYTES);
    tonic::service::interceptor::InterceptedService::new(coordinator, move |request| {
        check.check(request)
    })
}

/// Binds `address` (`what` says what for, in an error).
async fn bind(address: SocketAddr, what: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| Error::io(format!("cannot listen on {address}{what}"), e))
}

/// Sets the health of the whole server ("") and of the Coordinator service.
async fn set_health(
    health: &tonic_health::server::HealthReporter,
    status: tonic_health::ServingStatus,
) {
    for service in ["", "fold.v1.Coordinator"] {
        health.set_service_status(service, status).await;
    }
}

/// Serves health alone, in plain text, on `listener` until `stopping`
/// turns true (`--health-listen`).
async fn health_only(
    listener: tokio::net::TcpListener,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    if let Ok(bound) = listener.local_addr() {
        tracing::info!(%bound, "serving health in plain text");
    }
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    // Reflection of health alone, so `grpcurl -plaintext` works here too.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let served = tonic::transport::Server::builder()
        .add_service(health)
        .add_optional_service(reflection().build_v1().ok())
        .add_optional_service(reflection().build_v1alpha().ok())
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stopping.wait_for(|stop| *stop).await;
            // Let probes see NOT_SERVING for a moment.
            tokio::time::sleep(Duration::from_millis(500)).await;
        })
        .await;
    if let Err(error) = served {
        tracing::warn!(%error, "the plain-text health server stopped");
    }
}

/// The connection limits for `--max-connections requested` (0: as many as
/// the file descriptor limit allows, up to 1024). More than the descriptor
/// limit allows is lowered, with a warning.
fn connection_limits(requested: usize) -> connections::Limits {
    let allowed = connections::connections_allowed();
    let max_connections = match requested {
        0 => allowed,
        requested if requested > allowed => {
            tracing::warn!(
                requested,
                allowed,
                "--max-connections is more than the open file limit allows; lowered"
            );
            allowed
        }
        requested => requested,
    };
    connections::Limits {
        max_connections,
        handshake_timeout: connections::HANDSHAKE_TIMEOUT,
    }
}

/// Lease expiry (with splits for idle workers) and periodic saving of
/// finished units, until `stopping` turns true.
async fn background(
    shared: Arc<Shared>,
    lease: Duration,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let mut expiry = tokio::time::interval((lease / 4).max(Duration::from_millis(50)));
    let mut saving = tokio::time::interval(SAVE_EVERY);
    let stopped = async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = expiry.tick() => shared.expire_leases(),
            _ = saving.tick() => {
                if let Err(error) = shared.save_results().await {
                    tracing::error!(%error, "cannot save finished units; they will be searched again after a restart");
                }
            }
            () = &mut stopped => return,
        }
    }
}
