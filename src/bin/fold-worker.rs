//! `fold-worker`: a search node. It needs a running gRPC coordinator, which
//! is not built yet; until then it explains that and exits.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "A fold search node that takes shards from a coordinator"
)]
struct Cli {
    /// Coordinator address.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:50051")]
    coordinator: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    eprintln!(
        "fold-worker: error: cannot work for {}: the gRPC coordinator is not available in this \
         build yet; use `fold-coordinator run FILE...` to search in one process",
        cli.coordinator
    );
    ExitCode::FAILURE
}
