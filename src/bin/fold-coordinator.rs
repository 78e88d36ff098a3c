//! `fold-coordinator`: searches texts for orthos. `run` does everything in
//! this process; `serve` runs the gRPC coordinator that `fold-worker` nodes
//! work for; `submit`, `status`, `optimal` and `top` talk to a running
//! coordinator. The command line is defined in `fold::cli`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fold::cli::{Command, CoordinatorCli};
use fold::client::{self, StatusOptions, SubmitOptions};
use fold::embedded::{RunOptions, run};

// The search allocates and frees millions of small values; mimalloc keeps
// that cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = CoordinatorCli::parse();
    // A server says what it does; the other commands only warn, and the
    // live view draws the whole screen, so it logs nothing at all.
    match cli.command {
        Command::Serve(_) => fold::runtime::init_logging("warn,fold=info"),
        Command::Top { .. } => fold::runtime::init_logging("off"),
        _ => fold::runtime::init_logging("warn"),
    }
    let result = match cli.command {
        Command::Run(args) => {
            let threads = fold::runtime::search_threads(args.threads);
            if let Some(warning) = &threads.lowered {
                eprintln!("fold-coordinator: warning: {warning}");
            }
            let options = RunOptions {
                state_dir: args.state_dir,
                threads: threads.count,
                json: args.json,
                progress: !args.quiet,
                checkpoint_every: args.checkpoint_every,
                history: !args.no_history,
                dedup: args.dedup,
            };
            run(&args.files, &options, &mut std::io::stdout().lock()).map(|_| ())
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
            Command::Serve(args) => {
                let announce = |bound: SocketAddr| {
                    println!("fold-coordinator: listening on {bound}");
                };
                let shutdown = fold::runtime::shutdown_signal();
                fold::coordinator::serve(args.options(), announce, shutdown).await
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
                workers,
                connection,
            } => {
                let options = StatusOptions {
                    json,
                    units,
                    workers,
                };
                client::status(&connection.connection(), options, &mut out).await
            }
            Command::Optimal {
                version,
                json,
                connection,
            } => client::optimal(&connection.connection(), version, json, &mut out).await,
            Command::Top { connection } => fold::top::run(connection.connection()).await,
            Command::Run(_) => unreachable!("run is synchronous"),
        }
    });
    // Work still running in the background (a text being ingested when
    // Ctrl-C came) is not waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}
