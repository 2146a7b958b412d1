//! `pas cell ...`

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::cli::Ctx;
use crate::clock;
use crate::error::Result;
use crate::model::{self, Cell, TaskStatus};
use crate::ops::cell::{self, CellStatus, IsolationLevel, NewCell};
use crate::ops::mission;
use crate::output::{Styled, Tone};

/// Cell commands.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum CellCommand {
    /// Create a cell with the whole spec layout and print its id.
    ///
    /// Example: pas cell create --name "Docs sprint" --max-agents 4 --timeout 7200
    Create(CreateArgs),
    /// List the cells under the root.
    ///
    /// Example: pas cell list --json
    #[command(visible_alias = "ls")]
    List,
    /// Show one cell: its settings and counts of agents and tasks.
    ///
    /// Example: pas cell show "Docs sprint"
    Show(CellArg),
    /// Change a cell's status.
    ///
    /// Example: pas cell set 3f2a --status paused
    Set(SetArgs),
    /// Remove a cell and everything in it (an active one only with --force).
    ///
    /// Example: pas cell rm 3f2a
    Rm(RmArgs),
    /// Write a cell as a mission file (settings, config, agents, tasks), for `create --from`.
    ///
    /// Example: pas cell export "Docs sprint" --output docs-sprint.json
    Export(ExportArgs),
}

// Arguments of `pas cell export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// Write to this file atomically instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
}

// Arguments of `pas cell create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The mission's name (`mission_name`).
    #[arg(long, required_unless_present = "from")]
    pub name: Option<String>,
    /// Create the whole mission (cell, config, agents, tasks) from a mission file (`-`: stdin).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["name", "isolation", "max_agents", "timeout"])]
    pub from: Option<String>,
    /// Isolation level.
    #[arg(long, value_enum, default_value_t = IsolationLevel::Level1)]
    pub isolation: IsolationLevel,
    /// Most agents the cell may hold.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub max_agents: u64,
    /// Seconds the mission may run (0: no limit).
    #[arg(long, default_value_t = 3600, value_name = "SECS", value_parser = crate::cli::words::whole_seconds)]
    pub timeout: u64,
    /// Who creates the cell (`created_by`); default $PAS_AGENT, else $USER.
    #[arg(long, value_name = "ID")]
    pub created_by: Option<String>,
    /// The cell's id (default: a new uuid). Makes a retry safe: when the cell already exists
    /// with this name, nothing is created and the id is printed again.
    #[arg(long, value_name = "ID", conflicts_with = "from")]
    pub id: Option<String>,
}

// A cell named by id, id prefix or mission name.
#[derive(Debug, Args)]
pub struct CellArg {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
}

// Arguments of `pas cell set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// The new status.
    #[arg(long, value_enum)]
    pub status: CellStatus,
}

// Arguments of `pas cell rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// Remove it even while it is active.
    #[arg(long)]
    pub force: bool,
}

/// Runs a cell command.
pub fn run(ctx: &Ctx, command: CellCommand) -> Result<()> {
    match command {
        CellCommand::Create(args) => create(ctx, args),
        CellCommand::List => list(ctx),
        CellCommand::Show(CellArg { cell }) => show(ctx, &cell),
        CellCommand::Set(SetArgs { cell, status }) => set(ctx, &cell, status),
        CellCommand::Rm(RmArgs { cell, force }) => rm(ctx, &cell, force),
        CellCommand::Export(ExportArgs { cell, output }) => export(ctx, &cell, output),
    }
}

fn create(ctx: &Ctx, args: CreateArgs) -> Result<()> {
    let CreateArgs {
        name,
        from,
        isolation,
        max_agents,
        timeout,
        created_by,
        id,
    } = args;
    let created_by = created_by
        .or_else(|| std::env::var("PAS_AGENT").ok().filter(|s| !s.is_empty()))
        .or_else(|| std::env::var("USER").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "admin".to_string());
    if let Some(from) = from {
        let (bytes, path) = crate::store::read_input(&from, "mission file")
            .map_err(|e| e.hint("see templates/mission.json for an example"))?;
        let mission = mission::parse(&bytes, &path)?;
        let id = mission::create(&ctx.store, &mission, &created_by, clock::now())?;
        if ctx.out.is_json() {
            ctx.out.json(&json!({ "id": id }));
        } else {
            ctx.out.line(&id);
        }
        return Ok(());
    }
    let spec = NewCell {
        name: name.unwrap_or_default(),
        isolation,
        max_agents,
        timeout: (timeout > 0).then_some(timeout),
        created_by,
    };
    let id = cell::create(&ctx.store, &spec, id.as_deref(), clock::now())?;
    if ctx.out.is_json() {
        ctx.out.json(&json!({ "id": id }));
    } else {
        ctx.out.line(&id);
    }
    Ok(())
}

/// The tone of a cell status.
pub fn status_tone(status: model::CellStatus) -> Tone {
    match status {
        model::CellStatus::Active => Tone::Good,
        model::CellStatus::Paused => Tone::Warn,
        model::CellStatus::Failed => Tone::Bad,
        model::CellStatus::Completed => Tone::Dim,
    }
}

fn task_progress(summary: &cell::CellSummary) -> String {
    let total: usize = summary.tasks.values().sum();
    let done = summary
        .tasks
        .get(TaskStatus::Completed.as_str())
        .copied()
        .unwrap_or(0);
    format!("{done}/{total}")
}

fn list(ctx: &Ctx) -> Result<()> {
    let now = clock::now();
    let mut summaries = Vec::new();
    let mut broken = Vec::new();
    for id in crate::store::Store::cell_ids(&ctx.store)? {
        match cell::summary(&ctx.store, &id).and_then(|s| Ok((Cell::from_doc(&s.doc)?, s))) {
            Ok(s) => summaries.push(s),
            Err(e) => broken.push(e),
        }
    }
    for e in &broken {
        ctx.out.note(&format!("pas: skipped: {}", e.message));
    }
    if ctx.out.is_json() {
        let items: Vec<Value> = summaries
            .iter()
            .map(|(_, s)| s.to_json(&ctx.store))
            .collect();
        ctx.out.json(&Value::from(items));
        return Ok(());
    }
    let rows = summaries
        .iter()
        .map(|(c, s)| {
            vec![
                Styled::from(s.id.as_str()),
                Styled::from(c.mission_name.as_str()),
                Styled::new(c.status.as_str(), status_tone(c.status)),
                Styled::from(s.agents.to_string()),
                Styled::from(task_progress(s)),
                Styled::from(clock::ago(Some(c.created_at), now)),
            ]
        })
        .collect();
    ctx.out.table(
        &["ID", "NAME", "STATUS", "AGENTS", "TASKS", "CREATED"],
        rows,
    );
    Ok(())
}

fn show(ctx: &Ctx, query: &str) -> Result<()> {
    let id = cell::resolve(&ctx.store, query)?;
    let s = cell::summary(&ctx.store, &id)?;
    let c = Cell::from_doc(&s.doc)?;
    if ctx.out.is_json() {
        ctx.out.json(&s.to_json(&ctx.store));
        return Ok(());
    }
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
    let tasks = if s.tasks.is_empty() {
        "none".to_string()
    } else {
        s.tasks
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    ctx.out.fields(vec![
        ("id", Styled::from(s.id.as_str())),
        ("name", Styled::from(c.mission_name.as_str())),
        (
            "status",
            Styled::new(c.status.as_str(), status_tone(c.status)),
        ),
        ("isolation", Styled::from(c.isolation_level.as_str())),
        (
            "max agents",
            Styled::from(or_dash(c.max_agents.map(|m| m.to_string()))),
        ),
        (
            "timeout",
            Styled::from(or_dash(c.timeout.map(|t| t.to_string()))),
        ),
        ("created", Styled::from(clock::stamp(c.created_at))),
        ("created by", Styled::from(or_dash(c.created_by.clone()))),
        (
            "path",
            Styled::from(crate::store::Store::describe_cell(&ctx.store, &id)),
        ),
        ("agents", Styled::from(s.agents.to_string())),
        ("tasks", Styled::from(tasks)),
    ]);
    Ok(())
}

fn set(ctx: &Ctx, query: &str, status: CellStatus) -> Result<()> {
    let id = cell::resolve(&ctx.store, query)?;
    super::may_change_cell(ctx, &id)?;
    let previous = cell::set_status(&ctx.store, &id, status, clock::now())?;
    if ctx.out.is_json() {
        ctx.out
            .json(&json!({ "id": id, "status": status.as_str(), "previous": previous }));
    } else {
        ctx.out.info(&format!(
            "cell {id}: {} -> {}",
            previous.as_str(),
            status.as_str()
        ));
    }
    Ok(())
}

fn rm(ctx: &Ctx, query: &str, force: bool) -> Result<()> {
    let id = cell::resolve(&ctx.store, query)?;
    super::may_change_cell(ctx, &id)?;
    cell::remove(&ctx.store, &id, force)?;
    if ctx.out.is_json() {
        ctx.out.json(&json!({ "id": id, "removed": true }));
    } else {
        ctx.out.info(&format!("removed cell {id}"));
    }
    Ok(())
}

fn export(ctx: &Ctx, query: &str, output: Option<std::path::PathBuf>) -> Result<()> {
    let id = cell::resolve(&ctx.store, query)?;
    let mission = mission::export(&ctx.store, &id)?;
    let mut text = serde_json::to_string_pretty(&mission).unwrap_or_default();
    text.push('\n');
    match output {
        Some(path) => crate::store::write_outside(&path, text.as_bytes()),
        None => {
            ctx.out.raw(&text);
            Ok(())
        }
    }
}
