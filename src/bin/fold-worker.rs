//! `fold-worker`: a search node. It connects to a coordinator, searches the
//! units it is given and reports back, reconnecting when the coordinator
//! goes away; SIGTERM or Ctrl-C hands unfinished units back and exits. The
//! command line is defined in `fold::cli`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fold::cli::WorkerCli;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = WorkerCli::parse();
    // Say when connected and what is being worked on.
    fold::runtime::init_logging("warn,fold=info");
    let threads = fold::runtime::search_threads(cli.threads);
    if let Some(warning) = &threads.lowered {
        eprintln!("fold-worker: warning: {warning}");
    }
    let options = cli.options(threads.count);
    let result = tokio::runtime::Runtime::new()
        .map_err(|e| fold::Error::io("cannot start the async runtime", e))
        .and_then(|runtime| {
            let result = runtime.block_on(async {
                let (stop, stopped) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    fold::runtime::shutdown_signal().await;
                    let _ = stop.send(true);
                });
                fold::worker::run(options, stopped).await
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
