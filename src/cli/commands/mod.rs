//! One file per command group: each parses its arguments (an `Args` struct whose doc comment
//! is the help), calls one operation, and hands the result to the printer. No rules here.

pub(super) mod agent;
pub(super) mod budget;
pub(super) mod cell;
pub(super) mod checkpoint;
pub(super) mod events;
pub(super) mod man;
pub(super) mod policy;
pub(super) mod revive;
pub(super) mod status;
pub(super) mod task;
pub(super) mod top;
pub(super) mod validate;
