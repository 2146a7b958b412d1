//! `pas checkpoint ...`

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::cli::Ctx;
use crate::clock;
use crate::error::{Error, Result};
use crate::ops::cell;
use crate::ops::checkpoint::{self, Generation, SaveRequest};
use crate::output::{Styled, Tone};
use crate::store::{check_id, read_input, IdKind};

/// Checkpoint commands.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum CheckpointCommand {
    /// Save a checkpoint generation: state, context and artifacts (CELL AGENT default to $PAS_CELL $PAS_AGENT).
    ///
    /// Example: echo '{"step": 3}' | pas checkpoint save --state - --context ctx.json --artifact notes.md
    Save(SaveArgs),
    /// List an agent's checkpoint generations, and whether each can be resumed from.
    ///
    /// Example: pas checkpoint list 3f2a agent_001
    List(AgentArgs),
    /// Show one generation (default: the latest) and its state.
    ///
    /// Example: pas checkpoint show 3f2a agent_001 --generation 4
    Show(PickArgs),
    /// Restore a generation: into --to DIR byte for byte, or as the agent's current checkpoint.
    ///
    /// Example: pas checkpoint restore 3f2a agent_001 --generation 4 --to /tmp/restored
    Restore(RestoreArgs),
}

// Arguments of `pas checkpoint save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Cell id, unique id prefix, or mission name.
    #[arg(env = "PAS_CELL")]
    pub cell: Option<String>,
    /// The agent's id.
    #[arg(env = "PAS_AGENT")]
    pub agent: Option<String>,
    /// The state (JSON) from a file, or `-` for stdin (default: a snapshot of the agent file).
    #[arg(long, value_name = "FILE|-")]
    pub state: Option<String>,
    /// The context (JSON) from a file, or `-` for stdin (default: `{}`).
    #[arg(long, value_name = "FILE|-")]
    pub context: Option<String>,
    /// A file to keep with the checkpoint; repeat for more.
    #[arg(long = "artifact", value_name = "PATH")]
    pub artifacts: Vec<PathBuf>,
    /// Why it is saved.
    #[arg(long, default_value = "manual")]
    pub reason: String,
}

// A cell and an agent.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// The agent's id.
    pub agent: String,
}

// A cell, an agent and a generation.
#[derive(Debug, Args)]
pub struct PickArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// The agent's id.
    pub agent: String,
    /// The generation (default: the latest).
    #[arg(long, value_name = "G")]
    pub generation: Option<u64>,
}

// Arguments of `pas checkpoint restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// The agent's id.
    pub agent: String,
    /// The generation (default: the latest).
    #[arg(long, value_name = "G")]
    pub generation: Option<u64>,
    /// Write state.json, context.json and artifacts/ into this directory.
    #[arg(long, value_name = "DIR")]
    pub to: Option<PathBuf>,
}

/// Runs a checkpoint command.
pub fn run(ctx: &Ctx, command: CheckpointCommand) -> Result<()> {
    match command {
        CheckpointCommand::Save(args) => save(ctx, args),
        CheckpointCommand::List(AgentArgs { cell, agent }) => list(ctx, &cell, &agent),
        CheckpointCommand::Show(PickArgs {
            cell,
            agent,
            generation,
        }) => show(ctx, &cell, &agent, generation),
        CheckpointCommand::Restore(RestoreArgs {
            cell,
            agent,
            generation,
            to,
        }) => restore(ctx, &cell, &agent, generation, to),
    }
}

fn target(ctx: &Ctx, cell: &str, agent: &str) -> Result<String> {
    check_id(IdKind::Agent, agent)?;
    cell::resolve(&ctx.store, cell)
}

fn save(ctx: &Ctx, args: SaveArgs) -> Result<()> {
    let SaveArgs {
        cell,
        agent,
        state,
        context,
        artifacts,
        reason,
    } = args;
    let (Some(cell), Some(agent)) = (cell, agent) else {
        return Err(Error::usage(
            "which agent? pass CELL AGENT, or set PAS_CELL and PAS_AGENT",
        ));
    };
    if state.as_deref() == Some("-") && context.as_deref() == Some("-") {
        return Err(Error::usage("--state and --context cannot both read stdin")
            .hint("put one of them in a file"));
    }
    let cell_id = target(ctx, &cell, &agent)?;
    super::may_change_agent(ctx, &cell_id, &agent)?;
    let state = state
        .map(|s| read_input(&s, "state"))
        .transpose()?
        .map(|(b, _)| b);
    let context = context
        .map(|c| read_input(&c, "context"))
        .transpose()?
        .map(|(b, _)| b);
    let mut files = Vec::new();
    let mut modes = std::collections::BTreeMap::new();
    for path in &artifacts {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if files.iter().any(|(n, _): &(String, Vec<u8>)| *n == name) {
            return Err(Error::usage(format!("two artifacts are named {name}"))
                .hint("artifacts are kept by file name; rename one"));
        }
        let spec = path.display().to_string();
        let (bytes, _) = read_input(&spec, "artifact")?;
        if let Some(mode) = crate::store::input_mode(&spec) {
            modes.insert(name.clone(), mode);
        }
        files.push((name, bytes));
    }
    let saved = checkpoint::save(
        &ctx.store,
        &cell_id,
        &agent,
        SaveRequest {
            state,
            context,
            artifacts: files,
            modes,
            reason,
        },
        clock::now(),
    )?;
    if ctx.out.is_json() {
        ctx.out
            .json(&serde_json::to_value(&saved).unwrap_or(Value::Null));
    } else {
        ctx.out.line(&saved.generation.to_string());
    }
    Ok(())
}

fn row(g: &Generation) -> Vec<Styled> {
    vec![
        Styled::from(g.generation.to_string()),
        Styled::from(g.created_at.clone().unwrap_or_else(|| "-".into())),
        Styled::from(g.reason.clone().unwrap_or_else(|| "-".into())),
        Styled::from(
            g.context_hash
                .as_deref()
                .and_then(|h| h.get(..12))
                .unwrap_or("-"),
        ),
        Styled::from(g.artifacts.len().to_string()),
        if g.ok {
            Styled::new("ok", Tone::Good)
        } else {
            Styled::new("corrupt", Tone::Bad)
        },
    ]
}

fn list(ctx: &Ctx, cell: &str, agent: &str) -> Result<()> {
    let cell_id = target(ctx, cell, agent)?;
    let gens = checkpoint::list(&ctx.store, &cell_id, agent)?;
    if ctx.out.is_json() {
        ctx.out
            .json(&serde_json::to_value(&gens).unwrap_or(Value::Null));
        return Ok(());
    }
    ctx.out.table(
        &["GEN", "SAVED", "REASON", "CONTEXT", "ARTIFACTS", "CHECK"],
        gens.iter().map(row).collect(),
    );
    for g in gens.iter().filter(|g| !g.ok) {
        ctx.out
            .note(&format!("pas: {}", g.problem.clone().unwrap_or_default()));
    }
    Ok(())
}

fn show(ctx: &Ctx, cell: &str, agent: &str, generation: Option<u64>) -> Result<()> {
    let cell_id = target(ctx, cell, agent)?;
    let (g, files) = checkpoint::load(&ctx.store, &cell_id, agent, generation)?;
    let state: Value = serde_json::from_slice(&files.state).unwrap_or(Value::Null);
    let manifest: Value = serde_json::from_slice(&files.manifest).unwrap_or(Value::Null);
    let typed = checkpoint::Manifest::of(&files).ok();
    if ctx.out.is_json() {
        ctx.out.json(&json!({
            "generation": g,
            "path": crate::store::Store::describe_checkpoint(&ctx.store, &cell_id, agent, g),
            "manifest": manifest,
            "state": state,
            "artifacts": files.artifacts.iter().map(|(n, b)| json!({ "name": n, "bytes": b.len() })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    ctx.out.fields(vec![
        ("generation", Styled::from(g.to_string())),
        (
            "path",
            Styled::from(crate::store::Store::describe_checkpoint(
                &ctx.store, &cell_id, agent, g,
            )),
        ),
        (
            "saved",
            Styled::from(typed.as_ref().map_or("-", |m| m.created_at.as_str())),
        ),
        (
            "reason",
            Styled::from(typed.as_ref().map_or("-", |m| m.reason.as_str())),
        ),
        (
            "context hash",
            Styled::from(typed.as_ref().map_or("-", |m| m.context_sha256.as_str())),
        ),
        (
            "artifacts",
            Styled::from(
                files
                    .artifacts
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        ),
        ("state", Styled::from(state.to_string())),
    ]);
    Ok(())
}

fn restore(
    ctx: &Ctx,
    cell: &str,
    agent: &str,
    generation: Option<u64>,
    to: Option<PathBuf>,
) -> Result<()> {
    let cell_id = target(ctx, cell, agent)?;
    if to.is_none() {
        // Restoring as the current checkpoint changes the agent; --to only reads it.
        super::may_change_agent(ctx, &cell_id, agent)?;
    }
    let restored = checkpoint::restore(
        &ctx.store,
        &cell_id,
        agent,
        generation,
        to.as_deref(),
        clock::now(),
    )?;
    if ctx.out.is_json() {
        ctx.out
            .json(&serde_json::to_value(&restored).unwrap_or(Value::Null));
    } else {
        ctx.out.line(&restored.path);
    }
    Ok(())
}
