//! `pas task ...`

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::Ctx;
use crate::cell;
use crate::clock;
use crate::error::Result;
use crate::output::{Styled, Tone};
use crate::task::{self, NewTask, Priority, StatusFilter};

/// Task commands.
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Add a task to a cell and print its id.
    ///
    /// Example: pas task add 3f2a task_002 --title "Write tests" --dep task_001 --priority high
    Add(AddArgs),
    /// List the tasks of a cell (`blocked`: pending on unfinished dependencies).
    ///
    /// Example: pas task list 3f2a --status blocked
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show one task.
    ///
    /// Example: pas task show 3f2a task_002
    Show(TaskArgs),
}

/// Arguments of `pas task add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// The new task's id (1-128 of [A-Za-z0-9._-]).
    pub task: String,
    /// What the task is.
    #[arg(long)]
    pub title: String,
    /// More words about it.
    #[arg(long, default_value = "")]
    pub description: String,
    /// The agent that should do it.
    #[arg(long, value_name = "AGENT")]
    pub assign: Option<String>,
    /// How soon it should be done.
    #[arg(long, value_enum, default_value_t = Priority::Medium)]
    pub priority: Priority,
    /// A task that must be completed first; repeat for more.
    #[arg(long = "dep", value_name = "TASK")]
    pub deps: Vec<String>,
    /// Seconds the task may stay in progress.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
}

/// Arguments of `pas task list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// Only tasks in this state.
    #[arg(long, value_enum)]
    pub status: Option<StatusFilter>,
}

/// A cell and one of its tasks.
#[derive(Debug, Args)]
pub struct TaskArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// The task's id.
    pub task: String,
}

/// Runs a task command.
pub fn run(ctx: &Ctx, command: TaskCommand) -> Result<()> {
    match command {
        TaskCommand::Add(args) => add(ctx, args),
        TaskCommand::List(ListArgs { cell, status }) => list(ctx, &cell, status),
        TaskCommand::Show(TaskArgs { cell, task }) => show(ctx, &cell, &task),
    }
}

fn add(ctx: &Ctx, args: AddArgs) -> Result<()> {
    let AddArgs {
        cell,
        task,
        title,
        description,
        assign,
        priority,
        deps,
        timeout,
    } = args;
    let spec = NewTask {
        id: task,
        title,
        description,
        assign,
        priority,
        deps,
        timeout,
    };
    let now = clock::now();
    task::new_task_doc(&spec, now)?;
    let cell_id = cell::resolve(&ctx.store, &cell)?;
    task::add(&ctx.store, &cell_id, &spec, now)?;
    if ctx.out.is_json() {
        ctx.out.json(&json!({ "cell": cell_id, "id": spec.id }));
    } else {
        ctx.out.line(&spec.id);
    }
    Ok(())
}

/// The tone of a task's shown state.
pub fn state_tone(state: &str) -> Tone {
    match state {
        "completed" => Tone::Good,
        "in_progress" => Tone::Plain,
        "blocked" => Tone::Warn,
        "failed" => Tone::Bad,
        "pending" => Tone::Dim,
        _ => Tone::Plain,
    }
}

fn with_state(doc: &crate::doc::Doc, state: &str) -> Value {
    let mut value = doc.to_value();
    if let Value::Object(map) = &mut value {
        map.insert("state".into(), json!(state));
    }
    value
}

fn list(ctx: &Ctx, cell: &str, filter: Option<StatusFilter>) -> Result<()> {
    let cell_id = cell::resolve(&ctx.store, cell)?;
    let (tasks, errors) = task::read_all(&ctx.store, &cell_id)?;
    for e in &errors {
        ctx.out.note(&format!("pas: skipped: {}", e.message));
    }
    let shown: Vec<_> = tasks
        .values()
        .filter(|t| filter.is_none_or(|f| task::matches(f, t, &tasks)))
        .map(|t| (t, task::shown_state(t, &tasks)))
        .collect();
    if ctx.out.is_json() {
        ctx.out.json(&Value::from(
            shown
                .iter()
                .map(|(t, s)| with_state(t, s))
                .collect::<Vec<_>>(),
        ));
        return Ok(());
    }
    let rows = shown
        .iter()
        .map(|(t, state)| {
            vec![
                Styled::from(t.str("task_id").unwrap_or("-")),
                Styled::from(t.str("title").unwrap_or("")),
                Styled::new(state.as_str(), state_tone(state)),
                Styled::from(t.str("priority").unwrap_or("-")),
                Styled::from(t.str("assigned_to").unwrap_or("-")),
                Styled::from(t.strings("dependencies").join(",")),
            ]
        })
        .collect();
    ctx.out.table(
        &["ID", "TITLE", "STATE", "PRIORITY", "ASSIGNED", "DEPENDS ON"],
        rows,
    );
    Ok(())
}

fn show(ctx: &Ctx, cell: &str, task_id: &str) -> Result<()> {
    crate::store::check_id(crate::store::IdKind::Task, task_id)?;
    let cell_id = cell::resolve(&ctx.store, cell)?;
    let doc = task::read(&ctx.store, &cell_id, task_id)?;
    let (all, _) = task::read_all(&ctx.store, &cell_id)?;
    let state = task::shown_state(&doc, &all);
    if ctx.out.is_json() {
        ctx.out.json(&with_state(&doc, &state));
        return Ok(());
    }
    let open = task::open_dependencies(&doc, &all);
    let text = |key: &str| match doc.get(key) {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) if s.is_empty() => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    ctx.out.fields(vec![
        ("id", Styled::from(text("task_id"))),
        ("cell", Styled::from(cell_id.as_str())),
        ("title", Styled::from(text("title"))),
        ("description", Styled::from(text("description"))),
        ("state", Styled::new(state.as_str(), state_tone(&state))),
        ("priority", Styled::from(text("priority"))),
        ("assigned to", Styled::from(text("assigned_to"))),
        (
            "depends on",
            Styled::from(doc.strings("dependencies").join(", ")),
        ),
        ("waiting for", Styled::from(open.join(", "))),
        ("timeout", Styled::from(text("timeout"))),
        ("created", Styled::from(text("created_at"))),
        ("completed", Styled::from(text("completed_at"))),
    ]);
    Ok(())
}
