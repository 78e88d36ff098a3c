//! The library's error type: one variant per cause.

use std::path::PathBuf;

/// Everything that can go wrong in fold's library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The redb storage layer failed (and nothing else: damaged files are
    /// [`Error::Damaged`], plain file failures [`Error::Io`]).
    #[error("storage error in {path}: {message}")]
    Storage {
        /// The database file.
        path: PathBuf,
        /// redb's description.
        message: String,
    },
    /// A stored file fails its checks: a checksum, a length or a structure
    /// that does not hold. Nothing read from it is used.
    #[error("{path} is damaged ({detail})")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What was found, and where.
        detail: String,
    },
    /// A text could not be used (e.g. it is not UTF-8).
    #[error("{0}")]
    BadText(String),
    /// A state directory that fold did not write, or whose contents disagree with the request.
    #[error("{0}")]
    BadState(String),
    /// Stored data that fails a consistency check where the file it came
    /// from is not known (its reader says which, as [`Error::Damaged`]).
    #[error("{0}")]
    Inconsistent(String),
    /// A setting, flag or environment that cannot work (no token, a lease
    /// out of bounds, `top` without a terminal).
    #[error("{0}")]
    Config(String),
    /// A state or data dir that another process holds.
    #[error("{0}")]
    InUse(String),
    /// The coordinator refused the bearer token.
    #[error("the coordinator refused the token: {0}")]
    Unauthenticated(String),
    /// The other side of a connection broke the protocol (an answer that
    /// does not fit the question).
    #[error("{0}")]
    Protocol(String),
    /// fold's own machinery failed: a task or thread that stopped, a server
    /// or a library that would not start.
    #[error("{0}")]
    Internal(String),
    /// An ortho value that does not fit its shape.
    #[error("invalid ortho: {0}")]
    BadOrtho(String),
    /// The search reached a shape larger than the supported capacity.
    #[error("the search reached shape {0:?}, larger than the supported capacity of {max} slots", max = crate::spatial::MAX_CAPACITY)]
    ShapeTooLarge(Vec<usize>),
    /// A version that does not exist.
    #[error("unknown version {0}")]
    UnknownVersion(crate::interner::Version),
    /// The coordinator could not be reached, or the connection to it failed:
    /// one sentence saying why (refused, untrusted certificate, TLS spoken
    /// to a plain-text server, ...).
    #[error("{0}")]
    Connect(String),
    /// The coordinator answered an rpc with an error status.
    #[error("the coordinator answered {code}: {message}")]
    Rpc {
        /// The gRPC status code.
        code: String,
        /// The status message.
        message: String,
    },
    /// The search was cancelled by its observer.
    #[error("the search was cancelled")]
    Cancelled,
    /// A caller-supplied checkpoint function failed.
    #[error("checkpoint failed: {0}")]
    Checkpoint(String),
}

impl Error {
    /// An I/O error with a sentence of context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// A redb error on the database at `path`.
    pub fn storage(path: impl Into<PathBuf>, error: impl std::fmt::Display) -> Self {
        Self::Storage {
            path: path.into(),
            message: error.to_string(),
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
