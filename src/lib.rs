//! `pas` keeps fleets of AI agents alive.
//!
//! A mission is a *cell*: a directory under the missions root holding `cell.json`,
//! `agents/`, `tasks/`, `checkpoints/`, `logs/`, `artifacts/` and `config/`. The files are
//! the API: other programs read and write them too, so pas writes every file atomically,
//! keeps fields it does not know, and takes a lock for every read-modify-write.
//!
//! Layers, top to bottom; each uses only those below it:
//! - `cli`: clap definitions, one file per command, and rendering through one printer;
//!   no rules. `tui` is `pas top`.
//! - `ops`: the operations (revive, watch, heartbeat, queue, budget, checkpoint,
//!   supervise, status, ...). Each reads a cell in one store transaction, asks a pure rule
//!   `decide(state, policy, now)` what to do, and applies the answer in that transaction.
//! - [`model`]: the typed documents (cell, agent, task, reservations, config files, event
//!   kinds), which keep unknown fields and key order.
//! - [`store`]: the only code that touches files: layout, ids, atomic commits, locks, the
//!   events chain, blobs, change notification, behind a trait with no paths in it.
//!
//! Beside them, small shared pieces: [`error`] (the error type and exit codes), `output`
//! (the printer), [`doc`] (a JSON document that keeps key order), `clock`, `units`,
//! `config` (the root's `pas.toml`), `process` (OS processes), `accounts` (users and
//! groups by name), `templates`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Public: what the binary, the integration tests (`pas::store`) and the model's doc test
// use. Everything else is the crate's own, so the compiler reports what nothing uses.
pub mod doc;
pub mod error;
pub mod model;
pub mod store;

mod accounts;
mod cgroup;
mod cli;
mod clock;
mod config;
mod container;
mod host;
mod mcp;
mod namespace;
mod ops;
mod output;
mod process;
mod serve;
mod templates;
mod tui;
mod units;
mod usage;

#[cfg(feature = "etcd")]
pub use cli::run_etcd;
pub use cli::{run, run_server, run_supervisor};
