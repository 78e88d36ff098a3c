//! The gRPC coordinator (`fold-coordinator serve`): it stores submitted texts,
//! splits each version's search into one shard per origin token, leases the
//! shards to workers over their Work streams, and adds up their figures.
//!
//! * [`ledger`] — versions, shards, attempts, leases and aggregation (no I/O).
//! * [`vocabulary`] — the words of the texts, shared by every version.
//! * [`persist`] — texts and finished shards in redb.
//! * [`service`] — the `fold.v1.Coordinator` rpcs.
//! * [`auth`] — the bearer token check.
//!
//! Health (`grpc.health.v1`) and server reflection (v1 and v1alpha) are served
//! beside the Coordinator service and need no token.

pub mod auth;
pub mod ledger;
pub mod persist;
pub mod service;
pub mod vocabulary;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::wrappers::TcpListenerStream;

use crate::error::{Error, Result};
use crate::proto::{self, v1};
use auth::TokenCheck;
use ledger::Ledger;
use persist::CoordinatorStore;
use service::{CoordinatorService, Shared};
use vocabulary::Vocabulary;

/// Default address `serve` listens on: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

/// Default largest text `submit` accepts.
pub const DEFAULT_MAX_TEXT_BYTES: usize = 64 << 20;

/// Largest gRPC message the coordinator accepts (texts come in 1 MiB chunks).
const MAX_MESSAGE_BYTES: usize = 8 << 20;

/// How often finished shards are committed to disk.
const SAVE_EVERY: Duration = Duration::from_millis(200);

/// How `serve` runs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where texts and finished shards are kept.
    pub state_dir: PathBuf,
    /// The bearer token every Coordinator rpc must carry.
    pub token: String,
    /// How long a shard's lease lasts past the worker's last report on it.
    pub lease: Duration,
    /// Largest text accepted by Submit.
    pub max_text_bytes: usize,
}

/// Rebuilds the coordinator's state from its store: the ledger, the
/// vocabulary at the latest version and the texts in version order.
fn restore(
    store: &CoordinatorStore,
    lease: Duration,
) -> Result<(Ledger, Vocabulary, Vec<Arc<String>>)> {
    let mut ledger = Ledger::new(lease);
    let mut vocabulary = Vocabulary::new();
    let mut texts = Vec::new();
    for stored in store.load()? {
        let added = vocabulary.ingest(&stored.text);
        let size = added.weights.len();
        let known = stored
            .shards
            .iter()
            .map(|(origin, bytes)| {
                persist::decode_result(bytes, size)
                    .map(|result| (*origin, result))
                    .map_err(|error| {
                        crate::storage::damaged(
                            store.path(),
                            format!(
                                "the shard record of version {}, origin {origin}: {error}",
                                added.version
                            ),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        ledger.add_version(stored.source, added.new_words, &added.weights, known);
        texts.push(Arc::new(stored.text));
    }
    Ok((ledger, vocabulary, texts))
}

/// Serves until `shutdown` resolves. `on_listening` is told the bound address
/// (useful with port 0).
pub async fn serve(
    options: ServeOptions,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    if options.token.is_empty() {
        return Err(Error::BadState(
            "serve needs a bearer token: pass --token or set FOLD_TOKEN".into(),
        ));
    }
    let store = CoordinatorStore::open(&options.state_dir)?;
    let (ledger, vocabulary, texts) = restore(&store, options.lease)?;
    tracing::info!(versions = texts.len(), "state restored");
    let shared = Arc::new(Shared::new(
        ledger,
        vocabulary,
        texts,
        store,
        options.max_text_bytes,
    ));

    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| Error::io(format!("cannot listen on {}", options.listen), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the bound address", e))?;

    let background = spawn_background(shared.clone(), options.lease);

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("fold.v1.Coordinator", tonic_health::ServingStatus::Serving)
        .await;
    let reflection = |builder: tonic_reflection::server::Builder<'static>| {
        builder
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection(tonic_reflection::server::Builder::configure())
        .build_v1()
        .map_err(|e| Error::BadState(format!("reflection: {e}")))?;
    let reflection_v1alpha = reflection(tonic_reflection::server::Builder::configure())
        .build_v1alpha()
        .map_err(|e| Error::BadState(format!("reflection: {e}")))?;
    let check = TokenCheck::new(&options.token);
    let coordinator =
        v1::coordinator_server::CoordinatorServer::new(CoordinatorService::new(shared.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let coordinator =
        tonic::service::interceptor::InterceptedService::new(coordinator, move |request| {
            check.check(request)
        });

    on_listening(bound);
    let served = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(coordinator)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;
    background.abort();
    let saved = shared.save_results().await;
    served.map_err(|e| Error::io("gRPC server failed", std::io::Error::other(e)))?;
    saved
}

/// Lease expiry and periodic saving of finished shards.
fn spawn_background(shared: Arc<Shared>, lease: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut expiry = tokio::time::interval((lease / 4).max(Duration::from_millis(50)));
        let mut saving = tokio::time::interval(SAVE_EVERY);
        loop {
            tokio::select! {
                _ = expiry.tick() => shared.expire_leases(),
                _ = saving.tick() => {
                    if let Err(error) = shared.save_results().await {
                        tracing::error!(%error, "cannot save finished shards; they will be searched again after a restart");
                    }
                }
            }
        }
    })
}
