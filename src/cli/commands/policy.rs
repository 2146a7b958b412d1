//! `pas policy ...`

use clap::{Args, Subcommand};
use serde_json::json;

use crate::cli::Ctx;
use crate::error::Result;
use crate::ops::agent;
use crate::ops::cell;
use crate::ops::policy::{self, Source};
use crate::output::{Styled, Tone};

/// Policy commands.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum PolicyCommand {
    /// Show the effective policy of a cell or an agent, each value with where it came from.
    ///
    /// Example: pas policy show 3f2a agent_001
    Show(ShowArgs),
}

// Arguments of `pas policy show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// An agent, to include its own overrides.
    pub agent: Option<String>,
}

/// Runs a policy command.
pub fn run(ctx: &Ctx, command: PolicyCommand) -> Result<()> {
    match command {
        PolicyCommand::Show(ShowArgs { cell, agent }) => show(ctx, &cell, agent.as_deref()),
    }
}

fn show(ctx: &Ctx, cell: &str, agent_id: Option<&str>) -> Result<()> {
    let cell_id = cell::resolve(&ctx.store, cell)?;
    let agent = match agent_id {
        Some(a) => Some(agent::load(&ctx.store, &cell_id, a)?),
        None => None,
    };
    let effective = policy::load(&ctx.store, &cell_id, agent.as_ref())?;
    if ctx.out.is_json() {
        ctx.out
            .json(&json!({ "cell": cell_id, "agent": agent_id, "settings": effective.settings() }));
        return Ok(());
    }
    let rows = effective
        .settings()
        .iter()
        .map(|s| {
            let value = effective.shown(s);
            let tone = if s.source == Source::Default {
                Tone::Dim
            } else {
                Tone::Plain
            };
            vec![
                Styled::from(s.key.as_str()),
                Styled::from(value),
                Styled::new(s.source.label(), tone),
            ]
        })
        .collect();
    ctx.out.table(&["KEY", "VALUE", "SOURCE"], rows);
    Ok(())
}
