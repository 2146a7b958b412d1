//! `pas task ...`

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::cli::Ctx;
use crate::clock;
use crate::doc::Doc;
use crate::error::{Error, Kind, Result};
use crate::model::{Task, TaskStatus};
use crate::ops::cell;
use crate::ops::permissions::{Perm, Permissions};
use crate::ops::queue::{self, HandoffOutcome};
use crate::ops::task::{self, NewTask, Priority, State, StatusFilter};
use crate::output::{Styled, Tone};

/// Task commands.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
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
    /// List the tasks ready to claim, best first (for an agent: those it may take).
    ///
    /// Example: pas task ready 3f2a --agent agent_001
    Ready(ReadyArgs),
    /// Claim the best ready task and print its id; exit 7 with no output when none is ready.
    ///
    /// Example: while id=$(pas task claim "$PAS_CELL"); do work "$id" && pas task done "$PAS_CELL" "$id"; done
    Claim(ClaimArgs),
    /// Report a claimed task completed, with the artifacts it produced.
    ///
    /// Example: pas task done 3f2a task_002 --artifact artifacts/report.md
    Done(DoneArgs),
    /// Report a claimed task failed: back in the queue until max_retries, then failed.
    ///
    /// Example: pas task fail 3f2a task_002 --reason "tests do not pass"
    Fail(FailArgs),
    /// Fail every in-progress task past its timeout (reason: timeout), by the same rule.
    ///
    /// Example: pas task reap 3f2a
    Reap(CellOnly),
    /// Rebuild the cell's ready index from every task file and print how many are pending.
    ///
    /// Claims keep the index (.pas/ready/) themselves and rebuild it when tasks/ changed
    /// behind pas's back; run this after writing many task files by hand, so the first
    /// claim does not pay for reading them, or when `pas validate` says the index is stale.
    ///
    /// Example: pas task reindex 3f2a
    Reindex(CellOnly),
    /// Hand a task to another agent (policy and permissions permitting).
    ///
    /// Example: pas task handoff 3f2a task_002 --to agent_002
    Handoff(HandoffArgs),
}

// A cell alone.
#[derive(Debug, Args)]
pub struct CellOnly {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
}

// Arguments of `pas task ready`.
#[derive(Debug, Args)]
pub struct ReadyArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// Only the tasks this agent may take.
    #[arg(long)]
    pub agent: Option<String>,
}

// Arguments of `pas task claim`.
#[derive(Debug, Args)]
pub struct ClaimArgs {
    /// Cell id, unique id prefix, or mission name (default: $PAS_CELL).
    #[arg(env = "PAS_CELL")]
    pub cell: Option<String>,
    /// The claiming agent (default: --as, else $PAS_AGENT).
    #[arg(long)]
    pub agent: Option<String>,
}

// Arguments of `pas task done`.
#[derive(Debug, Args)]
pub struct DoneArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// The task's id.
    pub task: String,
    /// A file the task produced (recorded by path, not copied); repeat for more.
    #[arg(long = "artifact", value_name = "PATH")]
    pub artifacts: Vec<String>,
}

// Arguments of `pas task fail`.
#[derive(Debug, Args)]
pub struct FailArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// The task's id.
    pub task: String,
    /// What went wrong.
    #[arg(long)]
    pub reason: String,
}

// Arguments of `pas task handoff`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HandoffArgs {
    /// Approve or deny a pending request instead.
    #[command(subcommand)]
    pub decision: Option<HandoffDecision>,
    /// Cell id, unique id prefix, or mission name.
    pub cell: Option<String>,
    /// The task's id.
    pub task: Option<String>,
    /// The receiving agent.
    #[arg(long)]
    pub to: Option<String>,
    /// The handing agent (default: the acting agent, else the task's current agent).
    #[arg(long)]
    pub from: Option<String>,
}

// Decisions on handoff requests (`handoff_approval: manual`).
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum HandoffDecision {
    /// Approve a pending handoff request.
    ///
    /// Example: pas task handoff approve 3f2a h-1a2b3c4d
    Approve(RequestArgs),
    /// Deny a pending handoff request.
    ///
    /// Example: pas task handoff deny 3f2a h-1a2b3c4d
    Deny(RequestArgs),
}

// A cell and a handoff request.
#[derive(Debug, Args)]
pub struct RequestArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// The request's id (printed when it was made).
    pub request: String,
}

// Arguments of `pas task add`.
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
    #[arg(long, value_name = "SECS", value_parser = crate::cli::words::whole_seconds)]
    pub timeout: Option<u64>,
}

// Arguments of `pas task list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// Only tasks in this state.
    #[arg(long, value_enum)]
    pub status: Option<StatusFilter>,
}

// A cell and one of its tasks.
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
        TaskCommand::Ready(ReadyArgs { cell, agent }) => ready(ctx, &cell, agent.as_deref()),
        TaskCommand::Claim(ClaimArgs { cell, agent }) => claim(ctx, cell, agent),
        TaskCommand::Done(DoneArgs {
            cell,
            task,
            artifacts,
        }) => done(ctx, &cell, &task, &artifacts),
        TaskCommand::Fail(FailArgs { cell, task, reason }) => fail(ctx, &cell, &task, &reason),
        TaskCommand::Reap(CellOnly { cell }) => reap(ctx, &cell),
        TaskCommand::Reindex(CellOnly { cell }) => reindex(ctx, &cell),
        TaskCommand::Handoff(args) => handoff(ctx, args),
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

/// The tone of a task's shown state: its status, or `blocked`.
fn state_tone(state: State) -> Tone {
    match state {
        State::Status(TaskStatus::Completed) => Tone::Good,
        State::Status(TaskStatus::InProgress) => Tone::Plain,
        State::Status(TaskStatus::Failed) => Tone::Bad,
        State::Status(TaskStatus::Pending) => Tone::Dim,
        State::Blocked => Tone::Warn,
    }
}

/// The typed view of task `id`'s file; errors name the file by the id it is stored under.
fn typed(id: &str, doc: &Doc) -> Result<Task> {
    Task::from_doc_at(doc, &format!("tasks/{id}.json"))
}

/// A task's row of `task list` and `task ready`: id, title, priority, assignee.
fn row(t: &Task) -> [Styled; 4] {
    [
        Styled::from(t.task_id.as_str()),
        Styled::from(t.title.as_str()),
        Styled::from(t.priority.as_str()),
        Styled::from(t.assigned_to.as_deref().unwrap_or("-")),
    ]
}

fn with_state(doc: &Doc, state: State) -> Value {
    let mut value = doc.to_value();
    if let Value::Object(map) = &mut value {
        map.insert("state".into(), json!(state.as_str()));
    }
    value
}

fn list(ctx: &Ctx, cell: &str, filter: Option<StatusFilter>) -> Result<()> {
    let cell_id = cell::resolve(&ctx.store, cell)?;
    let files = task::read_all(&ctx.store, &cell_id)?;
    for e in &files.errors {
        ctx.out.note(&format!("pas: skipped: {}", e.message));
    }
    let shown: Vec<(&Doc, &Task, State)> = files
        .tasks
        .iter()
        .filter_map(|(id, t)| Some((files.docs.get(id)?, t, task::state(t, &files.tasks))))
        .filter(|(_, t, state)| filter.is_none_or(|f| f.admits(t, *state)))
        .collect();
    if ctx.out.is_json() {
        ctx.out.json(&Value::from(
            shown
                .iter()
                .map(|(doc, _, state)| with_state(doc, *state))
                .collect::<Vec<_>>(),
        ));
        return Ok(());
    }
    let mut rows = Vec::new();
    for (_, t, state) in shown {
        let [id, title, priority, assigned] = row(t);
        rows.push(vec![
            id,
            title,
            Styled::new(state.as_str(), state_tone(state)),
            priority,
            assigned,
            Styled::from(t.dependencies.join(",")),
        ]);
    }
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
    if let Some(agent) = &ctx.acting {
        Permissions::load(&ctx.store, &cell_id)?.check(agent, Perm::Read, task_id)?;
    }
    let t = typed(task_id, &doc)?;
    let all = task::read_all(&ctx.store, &cell_id)?.tasks;
    let state = task::state(&t, &all);
    if ctx.out.is_json() {
        ctx.out.json(&with_state(&doc, state));
        return Ok(());
    }
    let open = task::unfinished(&t, &all);
    let text = |v: Option<String>| match v {
        Some(s) if !s.is_empty() => s,
        _ => "-".to_string(),
    };
    ctx.out.fields(vec![
        ("id", Styled::from(text(Some(t.task_id.clone())))),
        ("cell", Styled::from(cell_id.as_str())),
        ("title", Styled::from(text(Some(t.title.clone())))),
        (
            "description",
            Styled::from(text(Some(t.description.clone()))),
        ),
        ("state", Styled::new(state.as_str(), state_tone(state))),
        ("priority", Styled::from(t.priority.as_str())),
        ("assigned to", Styled::from(text(t.assigned_to.clone()))),
        ("depends on", Styled::from(t.dependencies.join(", "))),
        ("waiting for", Styled::from(open.join(", "))),
        (
            "timeout",
            Styled::from(text(t.timeout.map(|s| s.to_string()))),
        ),
        (
            "created",
            Styled::from(text(t.created_at.map(clock::stamp))),
        ),
        (
            "completed",
            Styled::from(text(t.completed_at.map(clock::stamp))),
        ),
    ]);
    Ok(())
}

fn ready(ctx: &Ctx, cell: &str, agent: Option<&str>) -> Result<()> {
    let cell_id = cell::resolve(&ctx.store, cell)?;
    let agent = match agent {
        Some(a) => Some(crate::ops::agent::load(&ctx.store, &cell_id, a)?),
        None => None,
    };
    let perms = Permissions::load(&ctx.store, &cell_id)?;
    let files = task::read_all(&ctx.store, &cell_id)?;
    for e in &files.errors {
        ctx.out.note(&format!("pas: skipped: {}", e.message));
    }
    let list = queue::ready(&files.tasks, agent.as_ref(), &perms);
    let now = crate::clock::now();
    if ctx.out.is_json() {
        ctx.out.json(&Value::from(
            list.iter()
                .filter_map(|(id, _)| files.docs.get(*id).map(Doc::to_value))
                .collect::<Vec<_>>(),
        ));
        return Ok(());
    }
    let mut rows = Vec::new();
    for (_, t) in &list {
        let created = Styled::from(crate::clock::ago(t.created_at, now));
        rows.push(row(t).into_iter().chain([created]).collect());
    }
    ctx.out
        .table(&["ID", "TITLE", "PRIORITY", "ASSIGNED", "CREATED"], rows);
    Ok(())
}

fn claim(ctx: &Ctx, cell: Option<String>, agent: Option<String>) -> Result<()> {
    let Some(cell) = cell else {
        return Err(Error::usage("which cell? pass CELL or set PAS_CELL"));
    };
    let Some(agent) = agent.or_else(|| ctx.acting.clone()) else {
        return Err(Error::usage(
            "which agent claims? pass --agent, --as, or set PAS_AGENT",
        ));
    };
    crate::store::check_id(crate::store::IdKind::Agent, &agent)?;
    if ctx.acting.as_deref().is_some_and(|a| a != agent) {
        return Err(Error::new(
            Kind::Denied,
            format!(
                "agent {} cannot claim on behalf of {agent}",
                ctx.acting.as_deref().unwrap_or("")
            ),
        ));
    }
    let cell_id = cell::resolve(&ctx.store, &cell)?;
    match queue::claim(&ctx.store, &cell_id, &agent, clock::now())? {
        Some(t) => {
            let id = Task::from_doc(&t)?.task_id;
            ctx.out.changed(format!("task {id} was claimed by {agent}"));
            if ctx.out.is_json() {
                ctx.out.json(&t.to_value());
            } else {
                ctx.out.line(&id);
            }
            Ok(())
        }
        // Nothing ready: a distinct exit code and no output, for `while id=$(...)` loops.
        None => Err(Error::new(Kind::Empty, "")),
    }
}

fn done(ctx: &Ctx, cell: &str, task_id: &str, artifacts: &[String]) -> Result<()> {
    crate::store::check_id(crate::store::IdKind::Task, task_id)?;
    let cell_id = cell::resolve(&ctx.store, cell)?;
    let recorded = artifacts
        .iter()
        .map(|a| {
            crate::store::locate_artifact(
                &crate::store::Store::workspace(&ctx.store, &cell_id, None)?.dir,
                a,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let outcome = queue::done(
        &ctx.store,
        &cell_id,
        task_id,
        ctx.acting.as_deref(),
        &recorded,
        clock::now(),
    )?;
    if ctx.out.is_json() {
        ctx.out
            .json(&serde_json::to_value(&outcome).unwrap_or(Value::Null));
    } else {
        ctx.out.info(&format!("task {task_id} completed"));
        if outcome.cell_completed {
            ctx.out
                .info(&format!("every task is done: cell {cell_id} is completed"));
        }
    }
    Ok(())
}

fn fail(ctx: &Ctx, cell: &str, task_id: &str, reason: &str) -> Result<()> {
    crate::store::check_id(crate::store::IdKind::Task, task_id)?;
    let cell_id = cell::resolve(&ctx.store, cell)?;
    let outcome = queue::fail(
        &ctx.store,
        &cell_id,
        task_id,
        ctx.acting.as_deref(),
        reason,
        clock::now(),
    )?;
    if ctx.out.is_json() {
        ctx.out
            .json(&serde_json::to_value(&outcome).unwrap_or(Value::Null));
    } else if outcome.requeued {
        ctx.out.info(&format!(
            "task {task_id} failed (attempt {} of {}); back in the queue",
            outcome.attempts, outcome.max_retries
        ));
    } else {
        ctx.out.info(&format!(
            "task {task_id} failed for good after {} attempt(s)",
            outcome.attempts
        ));
    }
    Ok(())
}

fn reap(ctx: &Ctx, cell: &str) -> Result<()> {
    let cell_id = cell::resolve(&ctx.store, cell)?;
    let outcomes = queue::reap(&ctx.store, &cell_id, clock::now())?;
    if ctx.out.is_json() {
        ctx.out
            .json(&serde_json::to_value(&outcomes).unwrap_or(Value::Null));
    } else if outcomes.is_empty() {
        ctx.out.info("no task past its timeout");
    } else {
        for o in outcomes {
            let what = if o.requeued {
                "back in the queue"
            } else {
                "failed for good"
            };
            ctx.out.info(&format!(
                "task {} timed out (attempt {} of {}): {what}",
                o.task, o.attempts, o.max_retries
            ));
        }
    }
    Ok(())
}

fn reindex(ctx: &Ctx, cell: &str) -> Result<()> {
    let cell_id = cell::resolve(&ctx.store, cell)?;
    let pending = queue::reindex(&ctx.store, &cell_id, clock::now())?;
    if ctx.out.is_json() {
        ctx.out
            .json(&json!({ "cell": cell_id, "pending": pending }));
    } else {
        ctx.out.info(&format!(
            "ready index of cell {cell_id} rebuilt: {pending} pending task(s)"
        ));
    }
    Ok(())
}

fn handoff(ctx: &Ctx, args: HandoffArgs) -> Result<()> {
    let HandoffArgs {
        decision,
        cell,
        task,
        to,
        from,
    } = args;
    let now = clock::now();
    let outcome = match decision {
        Some(HandoffDecision::Approve(RequestArgs { cell, request })) => {
            let cell_id = cell::resolve(&ctx.store, &cell)?;
            queue::decide_handoff(&ctx.store, &cell_id, &request, true, now)?
        }
        Some(HandoffDecision::Deny(RequestArgs { cell, request })) => {
            let cell_id = cell::resolve(&ctx.store, &cell)?;
            queue::decide_handoff(&ctx.store, &cell_id, &request, false, now)?
        }
        None => {
            let (Some(cell), Some(task_id), Some(to)) = (cell, task, to) else {
                return Err(Error::usage("pas task handoff needs CELL TASK --to AGENT")
                    .hint("or `pas task handoff approve|deny CELL REQUEST`"));
            };
            crate::store::check_id(crate::store::IdKind::Task, &task_id)?;
            crate::store::check_id(crate::store::IdKind::Agent, &to)?;
            if let Some(f) = &from {
                crate::store::check_id(crate::store::IdKind::Agent, f)?;
            }
            let cell_id = cell::resolve(&ctx.store, &cell)?;
            queue::handoff(
                &ctx.store,
                &cell_id,
                &task_id,
                &to,
                from.as_deref(),
                ctx.acting.as_deref(),
                now,
            )?
        }
    };
    if ctx.out.is_json() {
        ctx.out
            .json(&serde_json::to_value(&outcome).unwrap_or(Value::Null));
        return Ok(());
    }
    match outcome {
        HandoffOutcome::Done { task, from, to } => ctx
            .out
            .info(&format!("task {task} handed from {from} to {to}")),
        HandoffOutcome::Requested {
            request, task, to, ..
        } => {
            ctx.out.line(&request);
            ctx.out.note(&format!("handoff of {task} to {to} waits for approval: pas task handoff approve CELL {request}"));
        }
        HandoffOutcome::Denied { request, task } => ctx
            .out
            .info(&format!("request {request} denied; task {task} stays")),
    }
    Ok(())
}
