//! `fold-coordinator`: searches texts for orthos. `run` does everything in
//! this process; `serve` runs the gRPC coordinator that `fold-worker` nodes
//! work for; `submit`, `status`, `optimal` and `top` talk to a running
//! coordinator. The command line is defined in `fold::cli`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fold::channel::Connection;
use fold::cli::{Command, CoordinatorCli};
use fold::client::CoordinatorClient;
use fold::embedded::{RunOptions, run};
use fold::output::{self, StatusOptions};
use fold::progress::VersionBar;

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
                submit(
                    &connection.connection(),
                    &files,
                    wait.then_some(!quiet),
                    json,
                )
                .await
            }
            Command::Status {
                json,
                units,
                workers,
                connection,
            } => {
                let mut client = CoordinatorClient::connect(&connection.connection()).await?;
                let reply = client.status(units, workers).await?;
                let options = StatusOptions {
                    json,
                    units,
                    workers,
                };
                print(&output::status(&reply, options))
            }
            Command::Optimal {
                version,
                json,
                connection,
            } => {
                let mut client = CoordinatorClient::connect(&connection.connection()).await?;
                let reply = client.optimal(fold::Version::new(version)).await?;
                print(&output::optimal(&reply, json))
            }
            Command::Top { connection } => fold::top::run(connection.connection()).await,
            Command::Run(_) => unreachable!("run is synchronous"),
        }
    });
    // Work still running in the background (a text being ingested when
    // Ctrl-C came) is not waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Submits `files` in order, each as the next version; with `wait` (whether
/// to draw a progress bar), waits for each to finish and prints its figures.
async fn submit(
    connection: &Connection,
    files: &[std::path::PathBuf],
    wait: Option<bool>,
    json: bool,
) -> fold::Result<()> {
    // Read everything first, so a bad file is refused before anything is sent.
    let texts = files
        .iter()
        .map(|path| fold::text::read_text_file(path).map(|text| (path, text)))
        .collect::<fold::Result<Vec<_>>>()?;
    let mut client = CoordinatorClient::connect(connection).await?;
    for (path, text) in texts {
        let name = path.display().to_string();
        let submitted = client.submit(&name, text).await?;
        let Some(progress) = wait else {
            print(&output::submitted(&name, &submitted, json))?;
            continue;
        };
        let mut bar = VersionBar::new(submitted.version, progress);
        let done = client
            .wait_for(submitted.version, |status, reply| {
                bar.update(
                    status.units_done,
                    status.units_total,
                    status.orthos,
                    reply.workers,
                    reply.orthos_per_second,
                );
            })
            .await;
        bar.finish();
        let report = fold::proto::report_of(&done?);
        print(&output::report(&report, json))?;
    }
    Ok(())
}

fn print(text: &str) -> fold::Result<()> {
    output::print(&mut std::io::stdout(), text)
}
