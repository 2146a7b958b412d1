//! Operations: what each command does to a cell, and the rules that decide it.
//!
//! An operation reads the state in one store transaction, asks a pure rule what to do,
//! and applies the answer in the same transaction (writes, events), then does what cannot
//! be part of a commit (signals, spawns) after it. The rules of the operations that have
//! timing in them sit in a `rules` module next to their operation (`revive::rules`,
//! `heartbeat::rules`, `budget::rules`, `queue::rules`): each is `decide(state, policy,
//! now) -> Decision`, reads no file, no clock and no process, and is tested as a table.

pub mod agent;
pub mod budget;
pub mod cell;
pub mod checkpoint;
pub mod demo;
pub mod health;
pub mod heartbeat;
pub mod hooks;
pub mod limits;
pub mod logs;
pub mod mission;
pub mod permissions;
pub mod policy;
pub mod queue;
pub mod registry;
pub mod reservation;
pub mod revive;
pub mod status;
pub mod store_copy;
pub mod store_gc;
pub mod supervisor;
pub mod task;
pub mod trust;
pub mod validate;
pub mod watch;
