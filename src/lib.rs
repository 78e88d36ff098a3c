//! fold reads text and exhaustively searches it for *orthos*: grids of words
//! in which every axis-aligned line is a phrase of the text and no word
//! repeats within a diagonal shell. `../shared/spec/ORTHO.md` defines the
//! search exactly; every path through this crate reproduces its figures.
//!
//! Layers, lowest first (a layer never imports a higher one; [`error`] and
//! [`runtime`] sit beside them, for every layer to use):
//!
//! * [`text`] — sentences and words of a raw text.
//! * [`interner`] — versions, token ids and phrase completions.
//! * [`spatial`] — per-shape tables: position order, prefixes, shells, reshapes.
//! * [`ortho`] and [`canonical`], one layer — the compact ortho value, its
//!   identity and its children, which are accepted only from the parent the
//!   canonical rule names, so the search is a tree.
//! * [`search`](mod@search) — the engine: parallel depth-first batches (a seen
//!   set only in the reference mode), leaves, optimum, and the stored history
//!   that makes later versions incremental.
//! * [`seed_api`] — the seed's [`process_text`] entry point.
//! * [`report`] — a version's figures with the optimal ortho as words (the golden JSON).
//! * [`store`] — the state directory (texts and figures in redb); both redb
//!   files check what they read back and turn a damaged file into an error.
//! * [`ids`] — the ids of units and attempts, which the coordinator and its
//!   workers share (bare `u64`s on the wire and on disk).
//! * [`proto`] — the wire: generated `fold.v1` types, their conversions, chunk
//!   and message sizes.
//! * [`output`] — everything printed for users, as text and as JSON.
//! * [`progress`] — progress bars on stderr for `run` and `submit --wait`.
//! * [`embedded`] — `fold-coordinator run`: ingest files, search, print.
//! * [`auth`] — the bearer token: sent by clients, checked by the coordinator.
//! * [`tls`] — TLS settings of both sides, and failed connections in one sentence.
//! * [`channel`] — the connection every client makes to a coordinator.
//! * [`metrics`] — Prometheus metrics of `serve` and `fold-worker`.
//! * [`coordinator`] — `fold-coordinator serve`: units, leases, splits, aggregation.
//! * [`worker`] — `fold-worker`: searches leased units and reports back.
//! * [`client`] — a typed client of a running coordinator (`submit`, `status`, `optimal`).
//! * [`top`] — `fold-coordinator top`: a live terminal view fed by WatchStatus.
//! * [`cli`] — both binaries' command lines (clap), which the thin `src/bin/` mains parse.
//!
//! Data flows text → interner → search (spatial + ortho + canonical + history) → figures →
//! report and store. Distributed, the coordinator splits a version's search
//! into units (subtrees of the search tree); workers run [`search::Searcher`]
//! on each unit, hand part of a large one off to new units when told to, and
//! the coordinator adds the units' figures up.

#![warn(missing_docs)]

pub mod auth;
pub mod canonical;
pub mod channel;
pub mod cli;
pub mod client;
pub mod coordinator;
pub mod embedded;
pub mod error;
pub mod ids;
pub mod interner;
pub mod metrics;
pub mod ortho;
pub mod output;
pub mod progress;
pub mod proto;
pub mod report;
pub mod runtime;
pub mod search;
pub mod seed_api;
pub mod spatial;
mod storage;
pub mod store;
#[cfg(test)]
mod test_support;
pub mod text;
pub mod tls;
pub mod top;
pub mod worker;

pub use error::{Error, Result};
pub use interner::{Interner, Token, Version};
pub use ortho::{Ortho, OrthoId};
pub use search::{Figures, SearchConfig, SearchOutcome, search};
pub use seed_api::{SeedCheckpoint, process_text};
