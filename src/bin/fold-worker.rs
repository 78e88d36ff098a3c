//! `fold-worker`: a search node. It connects to a coordinator, searches the
//! units it is given and reports back, reconnecting when the coordinator
//! goes away; Ctrl-C hands unfinished units back and exits.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fold::client::DEFAULT_COORDINATOR;
use fold::worker::{self, DEFAULT_KEEP_UNITS_FROM, WorkerOptions};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "A fold search node that takes units of work from a coordinator",
    after_help = "Logs go to stderr at info level (connected, the version worked on, what was \
                  searched every 10 s); FOLD_LOG sets the filter, e.g. FOLD_LOG=debug."
)]
struct Cli {
    /// The coordinator's URL (http:// only: TLS is not supported yet).
    #[arg(long, value_name = "URL", default_value = DEFAULT_COORDINATOR)]
    coordinator: String,
    /// Where the worker keeps the units it searched (to search their next
    /// versions incrementally, also after a restart) and its scratch files.
    /// One worker per data dir: it is locked.
    #[arg(long, value_name = "DIR", default_value = "fold_worker")]
    data_dir: PathBuf,
    /// Keep units with at least N orthos on disk for incremental later
    /// versions; smaller ones are searched again from scratch.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_KEEP_UNITS_FROM)]
    keep_units_from: u64,
    /// Search threads (default: one per core). At most 4 per core: a larger
    /// N is lowered, with a warning.
    #[arg(long, value_name = "N", default_value_t = 0)]
    threads: usize,
    /// Bearer token.
    #[arg(long, env = "FOLD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Name shown in the coordinator's worker list (default: host and pid).
    #[arg(long)]
    name: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Say when connected and what is being worked on.
    fold::runtime::init_logging("warn,fold=info");
    let threads = fold::runtime::search_threads(cli.threads);
    if let Some(warning) = &threads.lowered {
        eprintln!("fold-worker: warning: {warning}");
    }
    let options = WorkerOptions {
        coordinator: cli.coordinator,
        data_dir: cli.data_dir,
        threads: threads.count,
        token: cli.token,
        name: cli.name.unwrap_or_else(worker::default_name),
        keep_units_from: cli.keep_units_from,
    };
    let result = tokio::runtime::Runtime::new()
        .map_err(|e| fold::Error::io("cannot start the async runtime", e))
        .and_then(|runtime| {
            let result = runtime.block_on(async {
                let (stop, stopped) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    fold::runtime::shutdown_signal().await;
                    let _ = stop.send(true);
                });
                worker::run(options, stopped).await
            });
            // An interner still being built for a unit handed back is not
            // waited for.
            runtime.shutdown_timeout(Duration::from_secs(1));
            result
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fold-worker: error: {error}");
            ExitCode::FAILURE
        }
    }
}
