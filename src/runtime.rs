//! Process-level setup shared by the binaries: logging, shutdown signals and
//! the bound on search threads.

use std::io::IsTerminal;

/// Sends tracing output to stderr, filtered by `FOLD_LOG` (`default` when it
/// is unset), with colours only when stderr is a terminal. An invalid
/// `FOLD_LOG` is reported and the default used.
pub fn init_logging(default: &str) {
    let filter = match std::env::var("FOLD_LOG") {
        Ok(directives) => tracing_subscriber::EnvFilter::try_new(&directives).unwrap_or_else(|e| {
            eprintln!(
                "warning: FOLD_LOG={directives:?} is not a valid filter ({e}); using {default:?}"
            );
            tracing_subscriber::EnvFilter::new(default)
        }),
        Err(_) => tracing_subscriber::EnvFilter::new(default),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = ctrl_c => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}

/// Most search threads per core that `--threads` gets: past one per core
/// the search only slows down, and thousands of threads bring a machine to
/// its knees.
pub const MAX_THREADS_PER_CORE: usize = 4;

/// The search threads to run for `--threads requested` (0: one per core).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchThreads {
    /// Threads to run (0 still means one per core).
    pub count: usize,
    /// Why `requested` was lowered, if it was: a warning for the user.
    pub lowered: Option<String>,
}

/// Bounds `--threads requested` to [`MAX_THREADS_PER_CORE`] per core.
pub fn search_threads(requested: usize) -> SearchThreads {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let most = cores * MAX_THREADS_PER_CORE;
    if requested <= most {
        return SearchThreads {
            count: requested,
            lowered: None,
        };
    }
    SearchThreads {
        count: most,
        lowered: Some(format!(
            "--threads {requested} is more than {MAX_THREADS_PER_CORE} per core ({cores} cores); \
             using {most}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_counts_past_four_per_core_are_lowered_with_a_reason() {
        let cores = std::thread::available_parallelism().unwrap().get();
        for fine in [0, 1, cores, cores * MAX_THREADS_PER_CORE] {
            assert_eq!(
                search_threads(fine),
                SearchThreads {
                    count: fine,
                    lowered: None
                }
            );
        }
        for absurd in [cores * MAX_THREADS_PER_CORE + 1, 10_000, 99_999_999_999] {
            let bounded = search_threads(absurd);
            assert_eq!(bounded.count, cores * MAX_THREADS_PER_CORE);
            assert!(bounded.lowered.unwrap().contains(&absurd.to_string()));
        }
    }
}
