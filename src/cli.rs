//! The command lines of both binaries, as clap definitions: `fold-coordinator`
//! ([`CoordinatorCli`]) and `fold-worker` ([`WorkerCli`]).
//!
//! They live in the library, not in `src/bin/`, so that the binaries stay
//! thin and a test can parse any command line (the Kubernetes manifests'
//! container arguments, say) exactly as the binaries would. This module only
//! parses: each command becomes the options struct of the module that runs it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::channel::{Connection, DEFAULT_COORDINATOR};
use crate::coordinator::{
    DEFAULT_LISTEN, DEFAULT_MAX_TEXT_BYTES, DEFAULT_SPLIT_FROM, DEFAULT_UNIT_ORTHOS, MAX_LEASE,
    MAX_TEXT_BYTES_LIMIT, MIN_LEASE, ServeOptions,
};
use crate::embedded::DEFAULT_CHECKPOINT_EVERY;
use crate::search::Dedup;
use crate::worker::{DEFAULT_KEEP_UNITS_FROM, WorkerOptions};

/// `fold-coordinator`: every subcommand and its flags.
#[derive(Debug, Parser)]
#[command(
    name = "fold-coordinator",
    version,
    about = "Search texts for orthos: grids of words whose every line is a phrase",
    after_help = "Logs go to stderr: warnings only, but serve logs at info level; FOLD_LOG sets \
                  the filter, e.g. FOLD_LOG=debug."
)]
pub struct CoordinatorCli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `fold-coordinator`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Search FILEs in this process, one version each, and print the figures.
    ///
    /// Ingest FILEs in order, one version each, search every version in this
    /// process and print its figures. Texts already recorded in the state dir
    /// are not searched again: their stored figures are printed. The list must
    /// agree with the record, in order (it may be shorter, or go on past it).
    ///
    /// The search is kept in the state dir too, so a new version explores only
    /// what its text makes new. A run that is killed resumes from its last
    /// checkpoint when the same command is run again.
    Run(RunArgs),
    /// Run the gRPC coordinator that workers take units of work from.
    ///
    /// Accepts texts, leases units (subtrees of the search) to workers,
    /// splits large ones so that no worker idles, and adds up their figures.
    /// Serves fold.v1.Coordinator (token required), gRPC health and server
    /// reflection (no token), on loopback unless --listen says otherwise.
    /// SIGTERM or Ctrl-C stops it: health turns NOT_SERVING, no more units
    /// are leased, workers' sessions end (they hand their units back and
    /// reconnect later), status streams end, finished units are saved, and
    /// it exits within about 5 s.
    Serve(ServeArgs),
    /// Submit FILEs to a running coordinator, each as the next version.
    Submit {
        /// Text files, submitted in the order given.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Wait until each version is done, then print its figures.
        #[arg(long)]
        wait: bool,
        /// Print JSON (with --wait: the same object per version as `run --json`).
        #[arg(long)]
        json: bool,
        /// No progress bar on stderr (it is drawn only when stderr is a terminal).
        #[arg(long)]
        quiet: bool,
        /// Where the coordinator is.
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Show every version's state and figures, and the connected workers.
    ///
    /// One line per version: state (running or done), units done/total,
    /// running and split, and the figures so far (finished units plus what
    /// running ones reported). With --units N, up to N units of each version
    /// as well.
    Status {
        /// One JSON object per version per line (the `run --json` keys plus
        /// state, unit counts, attempts_discarded and source).
        #[arg(long)]
        json: bool,
        /// Also list up to N units of each version (at most 20,000), those
        /// running longest first, then the largest finished, then pending:
        /// state (pending, running or done), roots and excluded subtrees,
        /// attempts started and discarded, times counted (1 once done, never
        /// more), orthos and frontier, the unit it was split from and into how
        /// many it split, and the worker holding it. With --json, each
        /// version's object gets a `units` array of such objects. Attempt
        /// counts restart with the coordinator.
        #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
        units: u32,
        /// Also list the connected workers: threads, units held and done,
        /// orthos expanded in this session, their rate over the last few
        /// seconds and the CPU seconds of their process. With --json, one
        /// more line: an object with a `workers` array.
        #[arg(long)]
        workers: bool,
        /// Where the coordinator is.
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Show the optimal ortho of a version as words.
    Optimal {
        /// The version (default: the latest).
        #[arg(long, value_name = "N", default_value_t = 0)]
        version: u32,
        /// Print JSON instead of the grid.
        #[arg(long)]
        json: bool,
        /// Where the coordinator is.
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// A live view of a running coordinator in the terminal.
    ///
    /// Versions with their figures and progress, the workers with their
    /// rates, a sparkline of the cluster's rate and the best ortho so far,
    /// fed by the coordinator's WatchStatus stream. It reconnects by itself
    /// when the coordinator restarts. q (or Esc, or Ctrl-C) quits.
    Top {
        /// Where the coordinator is.
        #[command(flatten)]
        connection: ConnectionArgs,
    },
}

/// `fold-coordinator run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Text files, ingested in the order given.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Where texts, figures and the search log are kept between runs.
    #[arg(long, value_name = "DIR", default_value = "fold_state")]
    pub state_dir: PathBuf,
    /// Search threads (default: one per core). At most 4 per core: a
    /// larger N is lowered, with a warning.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
    /// Print one JSON object per version, one per line.
    #[arg(long)]
    pub json: bool,
    /// No progress bar on stderr (it is drawn only when stderr is a terminal).
    #[arg(long)]
    pub quiet: bool,
    /// Orthos expanded between two checkpoints of a version's search (0:
    /// only when a version is done). A killed run resumes from the last
    /// one when the same command is run again. Each checkpoint is a
    /// durable write, taken at most once per batch of 1,000 orthos: much
    /// smaller values slow the search down.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CHECKPOINT_EVERY)]
    pub checkpoint_every: u64,
    /// Keep no search history: only checkpoints touch the disk, and every
    /// later version is searched afresh (for a search run once).
    #[arg(long)]
    pub no_history: bool,
    /// How the search avoids finding an ortho twice: `tree` accepts each
    /// ortho from its canonical parent only (flat memory); `seen-set`
    /// remembers every ortho found (the reference; memory grows with
    /// every ortho). Figures are the same.
    #[arg(long, value_name = "MODE", default_value = "tree", value_parser = parse_dedup)]
    pub dedup: Dedup,
}

/// `fold-coordinator serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Where texts, units and their results are kept.
    #[arg(long, value_name = "DIR", default_value = "fold_coordinator")]
    pub state_dir: PathBuf,
    /// Bearer token that every Coordinator rpc must carry.
    #[arg(long, env = "FOLD_TOKEN", hide_env_values = true)]
    pub token: String,
    /// A unit goes back to pending this long after its worker's last
    /// report on it (100 to 86,400,000: a day). Workers report on every
    /// unit they hold every quarter lease, so only a stopped or cut-off
    /// worker loses its units this way.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64)
            .range(MIN_LEASE.as_millis() as u64..=MAX_LEASE.as_millis() as u64)
    )]
    pub lease_ms: u64,
    /// Largest text Submit accepts, in bytes (at most 1 GiB: the
    /// coordinator and every worker keep each text in memory).
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = DEFAULT_MAX_TEXT_BYTES as u64,
        value_parser = clap::value_parser!(u64).range(..=MAX_TEXT_BYTES_LIMIT as u64)
    )]
    pub max_text_bytes: u64,
    /// Connections open at once (default: as many as the open file
    /// limit allows, up to 1024). Further clients wait until one closes;
    /// connections that send nothing are closed first, and after 10 s.
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub max_connections: usize,
    /// Serve TLS with this certificate (PEM; the chain, leaf first). Needs
    /// --tls-key; clients then use an https:// URL.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Also serve gRPC health alone, in plain text and without a token, on
    /// ADDR: for probes that cannot speak TLS (Kubernetes' gRPC probes).
    #[arg(long, value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,
    /// Serve Prometheus metrics at http://ADDR/metrics (plain HTTP, no
    /// token: keep ADDR on a network you trust).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// How workers avoid finding an ortho twice: `tree` (canonical
    /// parents; units are subtrees and split while they run) or `seen-set`
    /// (one unit per first word, never split: the reference). Default: the
    /// mode the state dir was created with, or `tree` for a new one; a
    /// state dir keeps its mode for good.
    #[arg(long, value_name = "MODE", value_parser = parse_dedup)]
    pub dedup: Option<Dedup>,
    /// Split a running unit for an idle worker only when it has at least
    /// N orthos found and not yet expanded (at least 2).
    #[arg(
        long,
        value_name = "N",
        default_value_t = DEFAULT_SPLIT_FROM,
        value_parser = clap::value_parser!(u64).range(2..)
    )]
    pub split_from: u64,
    /// Orthos a worker may expand in one unit before it hands the rest off
    /// as new units (0: no limit), so that no unit grows past a small share
    /// of a search. Smaller units balance better and cost more messages.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_UNIT_ORTHOS)]
    pub unit_orthos: u64,
}

impl ServeArgs {
    /// The options `coordinator::serve` takes.
    pub fn options(self) -> ServeOptions {
        ServeOptions {
            listen: self.listen,
            state_dir: self.state_dir,
            token: self.token,
            lease: Duration::from_millis(self.lease_ms),
            max_text_bytes: self.max_text_bytes as usize,
            max_connections: self.max_connections,
            tls: self.tls_cert.zip(self.tls_key),
            health_listen: self.health_listen,
            metrics_listen: self.metrics_listen,
            dedup: self.dedup,
            split_from: self.split_from,
            unit_orthos: self.unit_orthos,
        }
    }
}

/// Where a client subcommand finds the coordinator, and how it proves who it is.
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// The coordinator's URL: http://HOST:PORT, or https://HOST:PORT for a
    /// coordinator serving TLS.
    #[arg(long, value_name = "URL", default_value = DEFAULT_COORDINATOR)]
    pub coordinator: String,
    /// Bearer token.
    #[arg(long, env = "FOLD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The CA certificate (PEM) that signed the coordinator's TLS
    /// certificate, for https:// URLs (default: the system's roots).
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
}

impl ConnectionArgs {
    /// The connection the client functions take.
    pub fn connection(self) -> Connection {
        Connection {
            coordinator: self.coordinator,
            token: self.token,
            ca_cert: self.ca_cert,
        }
    }
}

/// `fold-worker`: its flags.
#[derive(Debug, Parser)]
#[command(
    name = "fold-worker",
    version,
    about = "A fold search node that takes units of work from a coordinator",
    long_about = "A fold search node that takes units of work from a coordinator.\n\nIt \
                  reconnects with backoff when the coordinator goes away. SIGTERM or Ctrl-C hands \
                  its unfinished units back and exits within a few seconds.",
    after_help = "Logs go to stderr at info level (connected, the version worked on, what was \
                  searched every 10 s); FOLD_LOG sets the filter, e.g. FOLD_LOG=debug."
)]
pub struct WorkerCli {
    /// The coordinator's URL: http://HOST:PORT, or https://HOST:PORT for a
    /// coordinator serving TLS.
    #[arg(long, value_name = "URL", default_value = DEFAULT_COORDINATOR)]
    pub coordinator: String,
    /// The CA certificate (PEM) that signed the coordinator's TLS
    /// certificate, for https:// URLs (default: the system's roots).
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// Where the worker keeps the units it searched (to search their next
    /// versions incrementally, also after a restart) and its scratch files.
    /// One worker per data dir: it is locked.
    #[arg(long, value_name = "DIR", default_value = "fold_worker")]
    pub data_dir: PathBuf,
    /// Keep units with at least N orthos on disk for incremental later
    /// versions; smaller ones are searched again from scratch.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_KEEP_UNITS_FROM)]
    pub keep_units_from: u64,
    /// Search threads (default: one per core). At most 4 per core: a larger
    /// N is lowered, with a warning.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
    /// Bearer token.
    #[arg(long, env = "FOLD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Name shown in the coordinator's worker list (default: host and pid).
    #[arg(long)]
    pub name: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (plain HTTP, no
    /// token), and `ok` at http://ADDR/healthz.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
}

impl WorkerCli {
    /// The options `worker::run` takes, with `threads` search threads.
    pub fn options(self, threads: usize) -> WorkerOptions {
        WorkerOptions {
            coordinator: self.coordinator,
            ca_cert: self.ca_cert,
            data_dir: self.data_dir,
            threads,
            token: self.token,
            name: self.name.unwrap_or_else(crate::worker::default_name),
            keep_units_from: self.keep_units_from,
            metrics_listen: self.metrics_listen,
        }
    }
}

fn parse_dedup(name: &str) -> Result<Dedup, String> {
    Dedup::from_name(name).ok_or_else(|| format!("unknown mode `{name}`: use `tree` or `seen-set`"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn both_command_lines_are_well_formed() {
        CoordinatorCli::command().debug_assert();
        WorkerCli::command().debug_assert();
    }

    #[test]
    fn a_tls_certificate_needs_its_key() {
        let parsed = CoordinatorCli::try_parse_from([
            "fold-coordinator",
            "serve",
            "--token",
            "t",
            "--tls-cert",
            "cert.pem",
        ]);
        assert!(parsed.is_err());
    }
}
