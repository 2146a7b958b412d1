//! One file per command group: each parses its arguments (an `Args` struct whose doc comment
//! is the help), calls one operation, and hands the result to the printer. No rules here.

pub(super) mod agent;
pub(super) mod budget;
pub(super) mod cell;
pub(super) mod checkpoint;
pub(super) mod events;
pub(super) mod logs;
pub(super) mod man;
pub(super) mod mcp;
pub(super) mod policy;
pub(super) mod revive;
pub(super) mod serve;
pub(super) mod status;
pub(super) mod store;
pub(super) mod task;
pub(super) mod top;
pub(super) mod validate;

use crate::cli::Ctx;
use crate::error::Result;
use crate::ops::permissions::Permissions;

/// Refuses an acting agent (`--as`, `PAS_AGENT`) that may not change `agent` of `cell`:
/// agents act for themselves unless `permissions.json` grants more. An operator may.
pub(super) fn may_change_agent(ctx: &Ctx, cell: &str, agent: &str) -> Result<()> {
    match ctx.acting.as_deref() {
        None => Ok(()),
        actor => Permissions::load(&ctx.store, cell)?.check_agent(actor, agent),
    }
}

/// Refuses an acting agent: changing a cell is an operator's act.
pub(super) fn may_change_cell(ctx: &Ctx, cell: &str) -> Result<()> {
    Permissions::check_cell(ctx.acting.as_deref(), cell)
}
