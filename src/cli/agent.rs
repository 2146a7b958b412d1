//! `pas agent ...`

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::Ctx;
use crate::agent::{self, NewAgent, Role};
use crate::cell;
use crate::clock;
use crate::doc::Doc;
use crate::error::Result;
use crate::output::{Styled, Tone};

/// Agent commands.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Add an agent to a cell (within its max_agents) and print its id.
    ///
    /// Example: pas agent add 3f2a agent_001 --role lead --cap planning --cap review
    Add(AddArgs),
    /// List the agents of a cell.
    ///
    /// Example: pas agent list 3f2a
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show one agent.
    ///
    /// Example: pas agent show 3f2a agent_001 --json
    Show(AgentArgs),
    /// Remove an agent (one with unfinished tasks only with --force).
    ///
    /// Example: pas agent rm 3f2a agent_001
    Rm(RmArgs),
}

/// Arguments of `pas agent add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// The new agent's id (1-128 of [A-Za-z0-9._-]).
    pub agent: String,
    /// A readable name (default: the id).
    #[arg(long)]
    pub name: Option<String>,
    /// The agent's role.
    #[arg(long, value_enum, default_value_t = Role::Write)]
    pub role: Role,
    /// A capability; repeat for more.
    #[arg(long = "cap", value_name = "CAP")]
    pub caps: Vec<String>,
    /// The gateway host the agent runs behind.
    #[arg(long)]
    pub gateway: Option<String>,
}

/// Arguments of `pas agent list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
}

/// A cell and one of its agents.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// The agent's id.
    pub agent: String,
}

/// Arguments of `pas agent rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// The agent's id.
    pub agent: String,
    /// Remove it even when tasks are assigned to it (they go back to the queue).
    #[arg(long)]
    pub force: bool,
}

/// Runs an agent command.
pub fn run(ctx: &Ctx, command: AgentCommand) -> Result<()> {
    match command {
        AgentCommand::Add(args) => add(ctx, args),
        AgentCommand::List(ListArgs { cell }) => list(ctx, &cell),
        AgentCommand::Show(AgentArgs { cell, agent }) => show(ctx, &cell, &agent),
        AgentCommand::Rm(RmArgs { cell, agent, force }) => rm(ctx, &cell, &agent, force),
    }
}

fn add(ctx: &Ctx, args: AddArgs) -> Result<()> {
    let AddArgs {
        cell,
        agent,
        name,
        role,
        caps,
        gateway,
    } = args;
    crate::store::check_id(crate::store::IdKind::Agent, &agent)?;
    let cell_id = cell::resolve(&ctx.store, &cell)?;
    let spec = NewAgent {
        id: agent,
        name,
        role,
        capabilities: caps,
        gateway,
    };
    agent::add(&ctx.store, &cell_id, &spec, clock::now())?;
    if ctx.out.is_json() {
        ctx.out.json(&json!({ "cell": cell_id, "id": spec.id }));
    } else {
        ctx.out.line(&spec.id);
    }
    Ok(())
}

/// The tone of an agent's recorded status.
fn status_tone(status: &str) -> Tone {
    match status {
        "active" => Tone::Good,
        "paused" => Tone::Warn,
        "failed" => Tone::Bad,
        "idle" => Tone::Dim,
        _ => Tone::Plain,
    }
}

fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_string()
}

fn list(ctx: &Ctx, cell: &str) -> Result<()> {
    let cell_id = cell::resolve(&ctx.store, cell)?;
    let (agents, errors) = agent::read_all(&ctx.store, &cell_id)?;
    for e in &errors {
        ctx.out.note(&format!("pas: skipped: {}", e.message));
    }
    if ctx.out.is_json() {
        ctx.out.json(&Value::from(
            agents.iter().map(Doc::to_value).collect::<Vec<_>>(),
        ));
        return Ok(());
    }
    let rows = agents
        .iter()
        .map(|a| {
            let status = a.str("status").unwrap_or("-");
            vec![
                Styled::from(or_dash(a.str("agent_id"))),
                Styled::from(or_dash(a.str("name"))),
                Styled::from(or_dash(a.str("role"))),
                Styled::new(status, status_tone(status)),
                Styled::from(or_dash(a.str("current_task"))),
                Styled::from(a.strings("capabilities").join(",")),
            ]
        })
        .collect();
    ctx.out.table(
        &["ID", "NAME", "ROLE", "STATUS", "TASK", "CAPABILITIES"],
        rows,
    );
    Ok(())
}

fn show(ctx: &Ctx, cell: &str, agent_id: &str) -> Result<()> {
    crate::store::check_id(crate::store::IdKind::Agent, agent_id)?;
    let cell_id = cell::resolve(&ctx.store, cell)?;
    let doc = agent::read(&ctx.store, &cell_id, agent_id)?;
    if ctx.out.is_json() {
        ctx.out.json(&doc.to_value());
        return Ok(());
    }
    let status = or_dash(doc.str("status"));
    ctx.out.fields(vec![
        ("id", Styled::from(or_dash(doc.str("agent_id")))),
        ("cell", Styled::from(cell_id.as_str())),
        ("name", Styled::from(or_dash(doc.str("name")))),
        ("role", Styled::from(or_dash(doc.str("role")))),
        ("status", Styled::new(status.as_str(), status_tone(&status))),
        (
            "capabilities",
            Styled::from(doc.strings("capabilities").join(", ")),
        ),
        ("gateway", Styled::from(or_dash(doc.str("gateway")))),
        (
            "current task",
            Styled::from(or_dash(doc.str("current_task"))),
        ),
        (
            "last checkpoint",
            Styled::from(or_dash(
                doc.get("checkpoint")
                    .and_then(|c| c.get("last_checkpoint"))
                    .and_then(Value::as_str),
            )),
        ),
    ]);
    Ok(())
}

fn rm(ctx: &Ctx, cell: &str, agent_id: &str, force: bool) -> Result<()> {
    crate::store::check_id(crate::store::IdKind::Agent, agent_id)?;
    let cell_id = cell::resolve(&ctx.store, cell)?;
    let released = agent::remove(&ctx.store, &cell_id, agent_id, force)?;
    if ctx.out.is_json() {
        ctx.out.json(&json!({ "cell": cell_id, "id": agent_id, "removed": true, "released_tasks": released }));
    } else {
        ctx.out
            .info(&format!("removed agent {agent_id} from cell {cell_id}"));
        if !released.is_empty() {
            ctx.out
                .info(&format!("tasks back in the queue: {}", released.join(", ")));
        }
    }
    Ok(())
}
