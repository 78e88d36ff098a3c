//! `fold-coordinator`: searches texts for orthos. `run` does everything in
//! this process; `serve` runs the gRPC coordinator that `fold-worker` nodes
//! work for; `submit`, `status` and `optimal` talk to a running coordinator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use fold::client::{self, Connection, DEFAULT_COORDINATOR, StatusOptions, SubmitOptions};
use fold::coordinator::{
    self, DEFAULT_LISTEN, DEFAULT_MAX_TEXT_BYTES, DEFAULT_SPLIT_FROM, DEFAULT_UNIT_ORTHOS,
    MAX_LEASE, MAX_TEXT_BYTES_LIMIT, MIN_LEASE, ServeOptions,
};
use fold::embedded::{DEFAULT_CHECKPOINT_EVERY, RunOptions, run};
use fold::search::Dedup;

// The search allocates and frees millions of small values; mimalloc keeps
// that cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Search texts for orthos: grids of words whose every line is a phrase",
    after_help = "Logs go to stderr: warnings only, but serve logs at info level; FOLD_LOG sets \
                  the filter, e.g. FOLD_LOG=debug."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    Run {
        /// Text files, ingested in the order given.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Where texts, figures and the search log are kept between runs.
        #[arg(long, value_name = "DIR", default_value = "fold_state")]
        state_dir: PathBuf,
        /// Search threads (default: one per core). At most 4 per core: a
        /// larger N is lowered, with a warning.
        #[arg(long, value_name = "N", default_value_t = 0)]
        threads: usize,
        /// Print one JSON object per version, one per line.
        #[arg(long)]
        json: bool,
        /// No progress line on stderr.
        #[arg(long)]
        quiet: bool,
        /// Orthos expanded between two checkpoints of a version's search (0:
        /// only when a version is done). A killed run resumes from the last
        /// one when the same command is run again. Each checkpoint is a
        /// durable write, taken at most once per batch of 1,000 orthos: much
        /// smaller values slow the search down.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_CHECKPOINT_EVERY)]
        checkpoint_every: u64,
        /// Keep no search history: only checkpoints touch the disk, and every
        /// later version is searched afresh (for a search run once).
        #[arg(long)]
        no_history: bool,
        /// How the search avoids finding an ortho twice: `tree` accepts each
        /// ortho from its canonical parent only (flat memory); `seen-set`
        /// remembers every ortho found (the reference; memory grows with
        /// every ortho). Figures are the same.
        #[arg(long, value_name = "MODE", default_value = "tree", value_parser = parse_dedup)]
        dedup: Dedup,
    },
    /// Run the gRPC coordinator that workers take units of work from.
    ///
    /// Accepts texts, leases units (subtrees of the search) to workers, splits
    /// large ones for idle workers and adds up their figures. Serves
    /// fold.v1.Coordinator (token required), gRPC health and server
    /// reflection (no token), on loopback unless --listen says otherwise.
    Serve {
        /// Address to listen on (port 0 picks a free port; the bound address is printed).
        #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Where texts, units and their results are kept.
        #[arg(long, value_name = "DIR", default_value = "fold_coordinator")]
        state_dir: PathBuf,
        /// Bearer token that every Coordinator rpc must carry.
        #[arg(long, env = "FOLD_TOKEN", hide_env_values = true)]
        token: String,
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
        lease_ms: u64,
        /// Largest text Submit accepts, in bytes (at most 1 GiB: the
        /// coordinator and every worker keep each text in memory).
        #[arg(
            long,
            value_name = "BYTES",
            default_value_t = DEFAULT_MAX_TEXT_BYTES as u64,
            value_parser = clap::value_parser!(u64).range(..=MAX_TEXT_BYTES_LIMIT as u64)
        )]
        max_text_bytes: u64,
        /// Connections open at once (default: as many as the open file
        /// limit allows, up to 1024). Further clients wait until one closes;
        /// connections that send nothing are closed first, and after 10 s.
        #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
        max_connections: usize,
        /// How workers avoid finding an ortho twice: `tree` (canonical
        /// parents; units are subtrees and split while they run) or `seen-set`
        /// (one unit per first word, never split: the reference). Default:
        /// the mode the state dir was created with, or `tree` for a new one;
        /// a state dir keeps its mode for good.
        #[arg(long, value_name = "MODE", value_parser = parse_dedup)]
        dedup: Option<Dedup>,
        /// Split a running unit for an idle worker only when it has at least
        /// N orthos found and not yet expanded (at least 2). Smaller units
        /// balance better and cost more messages.
        #[arg(
            long,
            value_name = "N",
            default_value_t = DEFAULT_SPLIT_FROM,
            value_parser = clap::value_parser!(u64).range(2..)
        )]
        split_from: u64,
        /// Orthos a worker may expand in one unit before it hands the rest
        /// off as new units (0: no limit), so that no unit grows past a small
        /// share of a search. Smaller units balance better and cost more
        /// messages.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_UNIT_ORTHOS)]
        unit_orthos: u64,
    },
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
        /// No progress line on stderr.
        #[arg(long)]
        quiet: bool,
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
        /// Also list up to N units of each version, those running longest
        /// first, then the largest finished: state (pending, running or done),
        /// roots and excluded subtrees, attempts started and discarded, times
        /// counted (1 once done, never more), orthos and frontier, the unit it
        /// was split from and into how many it split, and the worker holding
        /// it. With --json, each version's object gets a `units` array of such
        /// objects. Attempt counts restart with the coordinator.
        #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
        units: u32,
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
        #[command(flatten)]
        connection: ConnectionArgs,
    },
}

#[derive(Args)]
struct ConnectionArgs {
    /// The coordinator's URL (http:// only: TLS is not supported yet).
    #[arg(long, value_name = "URL", default_value = DEFAULT_COORDINATOR)]
    coordinator: String,
    /// Bearer token.
    #[arg(long, env = "FOLD_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl ConnectionArgs {
    fn connection(self) -> Connection {
        Connection {
            coordinator: self.coordinator,
            token: self.token,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server says what it does; the other commands only warn.
    let log_default = match cli.command {
        Command::Serve { .. } => "warn,fold=info",
        _ => "warn",
    };
    fold::runtime::init_logging(log_default);
    let result = match cli.command {
        Command::Run {
            files,
            state_dir,
            threads,
            json,
            quiet,
            checkpoint_every,
            no_history,
            dedup,
        } => {
            let threads = fold::runtime::search_threads(threads);
            if let Some(warning) = &threads.lowered {
                eprintln!("fold-coordinator: warning: {warning}");
            }
            let options = RunOptions {
                state_dir,
                threads: threads.count,
                json,
                progress: !quiet,
                checkpoint_every,
                history: !no_history,
                dedup,
            };
            run(&files, &options, &mut std::io::stdout().lock()).map(|_| ())
        }
        command => asynchronous(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fold-coordinator: error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn asynchronous(command: Command) -> fold::Result<()> {
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| fold::Error::io("cannot start the async runtime", e))?;
    let mut out = std::io::stdout();
    let result = runtime.block_on(async {
        match command {
            Command::Serve {
                listen,
                state_dir,
                token,
                lease_ms,
                max_text_bytes,
                max_connections,
                dedup,
                split_from,
                unit_orthos,
            } => {
                let options = ServeOptions {
                    listen,
                    state_dir,
                    token,
                    lease: Duration::from_millis(lease_ms),
                    max_text_bytes: max_text_bytes as usize,
                    max_connections,
                    dedup,
                    split_from,
                    unit_orthos,
                };
                let announce = |bound: SocketAddr| {
                    println!("fold-coordinator: listening on {bound}");
                };
                coordinator::serve(options, announce, fold::runtime::shutdown_signal()).await
            }
            Command::Submit {
                files,
                wait,
                json,
                quiet,
                connection,
            } => {
                let options = SubmitOptions { wait, json, quiet };
                client::submit(&connection.connection(), &files, &options, &mut out).await
            }
            Command::Status {
                json,
                units,
                connection,
            } => {
                let options = StatusOptions { json, units };
                client::status(&connection.connection(), options, &mut out).await
            }
            Command::Optimal {
                version,
                json,
                connection,
            } => client::optimal(&connection.connection(), version, json, &mut out).await,
            Command::Run { .. } => unreachable!("run is synchronous"),
        }
    });
    // Work still running in the background (a text being ingested when
    // Ctrl-C came) is not waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

fn parse_dedup(name: &str) -> Result<Dedup, String> {
    Dedup::from_name(name).ok_or_else(|| format!("unknown mode `{name}`: use `tree` or `seen-set`"))
}
