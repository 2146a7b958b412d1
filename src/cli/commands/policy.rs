//! `pas policy ...`

use clap::{Args, Subcommand};
use serde_json::json;

use crate::cli::Ctx;
use crate::clock;
use crate::error::Result;
use crate::ops::agent;
use crate::ops::cell;
use crate::ops::policy::{self, Source, Target};
use crate::output::{Styled, Tone};
use crate::store::Store;

/// Policy commands.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum PolicyCommand {
    /// Show the effective policy of a cell or an agent, each value with where it came from.
    ///
    /// Example: pas policy show 3f2a agent_001
    Show(ShowArgs),
    /// Set policy values of a cell (config/policies.json) or of one agent (--agent).
    ///
    /// Each value is checked against its policy's type first; all are written in one
    /// change, with a policy.set event.
    ///
    /// Example: pas policy set 3f2a heartbeat_interval=10 auto_revive=ask
    Set(SetArgs),
    /// Remove policy values of a cell or of one agent, so pas.toml and the defaults apply.
    ///
    /// For a cell, the keys go from config/policies.json and from cell.json's policies.
    ///
    /// Example: pas policy unset 3f2a auto_revive
    Unset(UnsetArgs),
}

// Arguments of `pas policy set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// KEY=VALUE: numbers, true/false, null, words (ask, on-failure), lists as a,b or JSON.
    #[arg(required = true, value_name = "KEY=VALUE")]
    pub values: Vec<String>,
    /// Set them for this agent only (its file's policies).
    #[arg(long, value_name = "AGENT")]
    pub agent: Option<String>,
}

// Arguments of `pas policy unset`.
#[derive(Debug, Args)]
pub struct UnsetArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// The keys to remove.
    #[arg(required = true, value_name = "KEY")]
    pub keys: Vec<String>,
    /// Remove them from this agent's own policies only.
    #[arg(long, value_name = "AGENT")]
    pub agent: Option<String>,
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
        PolicyCommand::Set(SetArgs {
            cell,
            values,
            agent,
        }) => {
            let values = values
                .iter()
                .map(|v| policy::parse_assignment(v))
                .collect::<Result<Vec<_>>>()?;
            change(ctx, &cell, agent.as_deref(), |store, cell, target| {
                policy::set(store, cell, target, &values, clock::now())
            })
        }
        PolicyCommand::Unset(UnsetArgs { cell, keys, agent }) => {
            change(ctx, &cell, agent.as_deref(), |store, cell, target| {
                policy::unset(store, cell, target, &keys, clock::now())
            })
        }
    }
}

/// Runs a set or unset on the cell or agent named, and says what changed.
fn change(
    ctx: &Ctx,
    cell: &str,
    agent: Option<&str>,
    apply: impl FnOnce(&dyn Store, &str, Target<'_>) -> Result<Vec<policy::Changed>>,
) -> Result<()> {
    if let Some(a) = agent {
        crate::store::check_id(crate::store::IdKind::Agent, a)?;
    }
    let cell_id = cell::resolve(&ctx.store, cell)?;
    super::may_change_cell(ctx, &cell_id)?;
    let target = match agent {
        Some(a) => Target::Agent(a),
        None => Target::Cell,
    };
    let changed = apply(&ctx.store, &cell_id, target)?;
    if ctx.out.is_json() {
        ctx.out
            .json(&json!({ "cell": cell_id, "agent": agent, "changed": changed }));
        return Ok(());
    }
    if changed.is_empty() {
        ctx.out.info("nothing changed: the values were already so");
    }
    for c in &changed {
        let shown = |v: &Option<serde_json::Value>| match v {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => "(not set)".to_string(),
        };
        ctx.out.info(&format!(
            "{}: {} -> {} ({})",
            c.key,
            shown(&c.was),
            shown(&c.now),
            c.file
        ));
    }
    Ok(())
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
