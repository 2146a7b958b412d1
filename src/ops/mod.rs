//! Operations: pure rules `decide(state, policy, now)` and the code that applies them.
//!
//! A module here owns the rules of one operation and nothing else: it reads no file, no
//! clock and no process, so a table of states, policies and times tests every rule without
//! waiting for anything. The code that applies a decision (writes, events, signals,
//! spawns) lives with the operation's entry point, e.g. [`crate::heartbeat`]: it reads the
//! state in a store transaction, asks here, and applies the answer in the same
//! transaction.

pub mod budget;
pub mod claims;
pub mod heartbeat;
pub mod revive;
