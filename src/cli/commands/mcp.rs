//! `pas mcp`: the MCP server on stdio (see `crate::mcp` and docs/mcp.md). This file only
//! reads the options; like `pas serve`, the server is linked into the `pas-serve` program
//! only, which `pas mcp` executes with the same arguments.

use clap::Args;

use crate::cli::Ctx;
use crate::error::Result;
use crate::store::{check_id, IdKind};

// Arguments of `pas mcp` (its help text is on `Command::Mcp`).
#[derive(Debug, Args)]
pub struct McpArgs {
    /// The cell tools work on when a call names none (default: $PAS_CELL).
    #[arg(long, value_name = "CELL", env = "PAS_CELL")]
    pub cell: Option<String>,
    /// The agent tools act as, under its permissions (default: --as, else $PAS_AGENT;
    /// neither: the operator).
    #[arg(long, value_name = "AGENT")]
    pub agent: Option<String>,
}

/// Runs `pas mcp`.
pub fn run(ctx: &Ctx, args: McpArgs) -> Result<()> {
    let McpArgs { cell, agent } = args;
    let agent = agent
        .or_else(|| ctx.acting.clone())
        .filter(|a| !a.is_empty());
    if let Some(a) = &agent {
        check_id(IdKind::Agent, a)?;
    }
    // A named cell must exist now: a typo is one line at start, not an error on every call.
    let cell = cell
        .filter(|c| !c.is_empty())
        .map(|c| crate::ops::cell::resolve(&ctx.store, &c))
        .transpose()?;
    let Some(server) = ctx.server else {
        return crate::process::exec_sibling(super::serve::SERVER_PROGRAM);
    };
    server(crate::cli::Serving::Mcp(crate::mcp::Options {
        store: ctx.store.file("pas mcp")?.fresh(),
        launch: ctx.launch,
        defaults: crate::mcp::tools::Defaults { cell, agent },
    }))
}
