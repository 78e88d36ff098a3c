//! `fold-coordinator`: runs fold's search over texts. `run` does it all in this
//! process; the distributed subcommands come with the gRPC coordinator.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fold::embedded::{RunOptions, run};

// The search allocates and frees millions of small payloads; mimalloc keeps
// that cheap and returns memory without glibc's trimming stalls.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Search texts for orthos: grids of words whose every line is a phrase"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest FILEs in order, one version each, search every version in this
    /// process and print its figures. Texts already recorded in the state dir
    /// are not searched again: their stored figures are printed. The list must
    /// agree with the record, in order (it may be shorter, or go on past it).
    Run {
        /// Text files, ingested in the order given.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Where texts and figures are kept between runs.
        #[arg(long, value_name = "DIR", default_value = "fold_state")]
        state_dir: PathBuf,
        /// Search threads (default: one per core).
        #[arg(long, value_name = "N", default_value_t = 0)]
        threads: usize,
        /// Print one JSON object per version, one per line.
        #[arg(long)]
        json: bool,
        /// No progress line on stderr.
        #[arg(long)]
        quiet: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Run {
            files,
            state_dir,
            threads,
            json,
            quiet,
        } => {
            let options = RunOptions {
                state_dir,
                threads,
                json,
                progress: !quiet,
            };
            run(&files, &options, &mut std::io::stdout().lock()).map(|_| ())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fold-coordinator: error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FOLD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
