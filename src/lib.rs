//! `pas` keeps fleets of AI agents alive.
//!
//! A mission is a *cell*: a directory under the missions root holding `cell.json`,
//! `agents/`, `tasks/`, `checkpoints/`, `logs/`, `artifacts/` and `config/`. The files are
//! the API: other programs read and write them too, so pas writes every file atomically,
//! keeps fields it does not know, and takes a lock for every read-modify-write.
//!
//! Layers, top to bottom:
//! - [`cli`]: clap definitions and rendering; no rules;
//! - domain modules ([`cell`], [`agent`], [`task`], [`heartbeat`], [`budget`], [`queue`],
//!   [`validate`]): each operation reads in a store transaction and applies a decision;
//! - [`ops`]: the pure rules those decisions come from, `decide(state, policy, now)`;
//! - [`store`]: the only code that touches the filesystem.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod budget;
pub mod cell;
pub mod checkpoint;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod doc;
pub mod error;
pub mod events;
pub mod health;
pub mod heartbeat;
pub mod mission;
pub mod model;
pub mod ops;
pub mod output;
pub mod permissions;
pub mod policy;
pub mod process;
pub mod queue;
pub mod reservation;
pub mod revive;
pub mod status;
pub mod store;
pub mod supervisor;
pub mod task;
pub mod templates;
pub mod tui;
pub mod units;
pub mod validate;
pub mod watch;

pub use cli::run;
