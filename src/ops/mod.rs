//! Operations: pure rules `decide(state, policy, now)` and the code that applies them.
//!
//! A module here owns the rules of one operation and nothing else: it reads no file, no
//! clock and no process, so a table of states, policies and times tests every rule without
//! waiting for anything. The code that applies a decision (writes, events, signals,
//! spawns) lives with the operation's entry point, e.g. [`crate::revive`].

pub mod revive;
