//! Tasks as a work queue: ready, claim, done, fail, reap (timeouts) and handoff.
//!
//! Every change holds the cell's tasks lock (and, to set or clear `current_task`, the
//! agent's lock after it), so 20 agents claiming at once each get a different task. A failed
//! task goes back to `pending` until it has been attempted `max_retries` times; then it stays
//! `failed` and an error event is written. When the last task is completed the cell becomes
//! `completed`.

pub mod rules;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Map};

use crate::doc::Doc;
use crate::error::{Error, Kind, Result};
use crate::model::{
    Agent, AgentStatus, Cell, CellStatus, EventKind, HandoffApproval, HandoffRequest, Task,
    TaskStatus,
};
use crate::ops::cell;
use crate::ops::permissions::{Perm, Permissions};
use crate::ops::policy;
use crate::ops::queue::rules::{ClaimDecision, ClaimedTask, FailDecision, ReapDecision, TaskClock};
use crate::ops::task;
use crate::store::events::{Level, NewEvent};
use crate::store::{self, check_id, Collection, FileKey, IdKind, Store, Txn};

pub use crate::ops::queue::rules::ready;

/// Every task of the cell by file id, as documents and as typed views; the first that
/// does not read is an error (a claim must not skip a task it cannot read).
fn tasks_strict(txn: &mut Txn<'_>) -> Result<(BTreeMap<String, Doc>, BTreeMap<String, Task>)> {
    let mut docs = BTreeMap::new();
    let mut tasks = BTreeMap::new();
    for (id, doc) in txn.read_collection(Collection::Tasks)? {
        let doc = doc?;
        tasks.insert(id.clone(), task::view(&id, &doc)?);
        docs.insert(id, doc);
    }
    Ok((docs, tasks))
}

/// Writes `t` into `doc`, the file `tasks/<id>.json` as read (only changed keys), and
/// stages it with its ready-index entry; returns the document written.
pub(crate) fn put_task(txn: &mut Txn<'_>, id: &str, mut doc: Doc, t: &Task) -> Result<Doc> {
    let old = task::view(id, &doc)
        .ok()
        .and_then(|was| rules::entry_name(id, &was));
    t.write_into(&mut doc);
    txn.index_task(id, old, rules::entry_name(id, t))?;
    txn.put(FileKey::Task(id), doc.clone());
    Ok(doc)
}

/// Every ready-index entry of the tasks `all`, sorted.
fn entries_of(all: &BTreeMap<String, Task>) -> Vec<String> {
    let mut entries: Vec<String> = all
        .iter()
        .filter_map(|(id, t)| rules::entry_name(id, t))
        .collect();
    entries.sort_unstable();
    entries
}

/// What the ready index answers for a claim.
enum Indexed {
    /// The task `tasks/<id>.json`, as document and typed view.
    Take(String, Doc, Box<Task>),
    /// Nothing is ready for the agent.
    NothingReady,
    /// The index cannot answer (stale, or an entry that does not match its task): read
    /// every task.
    ReadAll,
}

/// Asks the ready index for the best task for `agent`: the head first, then (when nothing
/// in it fits and more lies behind it) one listing of the rest. Only the tasks named (and
/// their dependencies) are read, in order, until one is taken.
fn claim_from_index(txn: &mut Txn<'_>, agent: &Agent, perms: &Permissions) -> Result<Indexed> {
    let Some(view) = txn.ready()? else {
        return Ok(Indexed::ReadAll);
    };
    if let Some(found) = first_fit(txn, &view.entries, agent, perms)? {
        return Ok(found);
    }
    if view.complete {
        return Ok(Indexed::NothingReady);
    }
    let last = view.entries.last().cloned();
    let rest: Vec<String> = txn
        .ready_all()?
        .into_iter()
        .filter(|n| last.as_ref().is_none_or(|l| n > l))
        .collect();
    Ok(first_fit(txn, &rest, agent, perms)?.unwrap_or(Indexed::NothingReady))
}

/// The first of `entries` (in order) that `agent` may take, or `ReadAll` at the first that
/// does not match its task; `None` when none fits.
fn first_fit(
    txn: &mut Txn<'_>,
    entries: &[String],
    agent: &Agent,
    perms: &Permissions,
) -> Result<Option<Indexed>> {
    for name in entries {
        let Some(entry) = rules::parse_entry(name) else {
            return Ok(Some(Indexed::ReadAll));
        };
        if entry.assignee.is_some_and(|a| a != agent.agent_id) {
            continue;
        }
        let id = entry.task;
        let Some(doc) = txn.read(FileKey::Task(id))? else {
            return Ok(Some(Indexed::ReadAll));
        };
        let Ok(t) = task::view(id, &doc) else {
            return Ok(Some(Indexed::ReadAll));
        };
        let mut deps = BTreeMap::new();
        if t.status == TaskStatus::Pending {
            for dep in &t.dependencies {
                if crate::store::layout::is_valid_id(dep) {
                    if let Some(d) = txn.read(FileKey::Task(dep))? {
                        if let Ok(d) = task::view(dep, &d) {
                            deps.insert(dep.clone(), d);
                        }
                    }
                }
            }
        }
        match rules::judge_candidate(name, id, Some(&t), &deps, agent, perms) {
            rules::Candidate::Take => {
                return Ok(Some(Indexed::Take(id.to_string(), doc, Box::new(t))))
            }
            rules::Candidate::Skip => {}
            rules::Candidate::Stale => return Ok(Some(Indexed::ReadAll)),
        }
    }
    Ok(None)
}

/// Sets or clears (when it still points at `task_id`) an agent's `current_task`.
fn set_current_task(txn: &mut Txn<'_>, agent: &str, task_id: &str, claim: bool) -> Result<()> {
    let Some(mut doc) = txn.read(FileKey::Agent(agent))? else {
        return Ok(());
    };
    let mut a = Agent::from_doc_at(&doc, &FileKey::Agent(agent).relative())?;
    if claim {
        a.current_task = Some(task_id.to_string());
    } else if a.current_task.as_deref() == Some(task_id) {
        a.current_task = None;
    } else {
        return Ok(());
    }
    a.write_into(&mut doc);
    txn.put(FileKey::Agent(agent), doc);
    Ok(())
}

/// Claims the best ready task for `agent`; `None` when nothing is ready for it. The task,
/// the agent's `current_task` and the `task.claimed` event are one transaction.
pub fn claim(
    store: &dyn Store,
    cell: &str,
    agent_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<Doc>> {
    // Checked before any transaction: a refused claim changes nothing.
    crate::ops::agent::read(store, cell, agent_id)?;
    let perms = Permissions::load(store, cell)?;
    store::transact(store, cell, now, |txn| {
        let mut agent_doc = txn.read(FileKey::Agent(agent_id))?.ok_or_else(|| {
            Error::not_found(format!("no agent {agent_id} in cell {cell}"))
                .hint(format!("`pas agent list {cell}` shows its agents"))
        })?;
        let mut agent = Agent::from_doc_at(&agent_doc, &FileKey::Agent(agent_id).relative())?;
        let refused = |status: AgentStatus| {
            Error::conflict(format!(
                "agent {agent_id} is {status} and cannot claim work"
            ))
        };
        // Refused before the tasks are read: an unreadable task does not hide the reason.
        if let Some(status) = rules::claim_refused(&agent) {
            return Err(refused(status));
        }
        // The index first; every task file only when it cannot answer (and then the index
        // is rebuilt from them).
        let mut all = None;
        let picked = match claim_from_index(txn, &agent, &perms)? {
            Indexed::Take(id, doc, t) => Some((id, doc, *t)),
            Indexed::NothingReady => None,
            Indexed::ReadAll => {
                let (docs, tasks) = tasks_strict(txn)?;
                txn.rebuild_ready(&entries_of(&tasks))?;
                all = Some((docs, tasks));
                None
            }
        };
        let picked = match (picked, &mut all) {
            (Some(p), _) => p,
            (None, None) => return Ok(None),
            (None, Some((docs, tasks))) => match rules::decide_claim(&agent, tasks, &perms) {
                ClaimDecision::Refused(status) => return Err(refused(status)),
                ClaimDecision::NothingReady => return Ok(None),
                ClaimDecision::Claim { id, task, .. } => {
                    let Some(doc) = docs.remove(id) else {
                        return Err(Error::failure(format!(
                            "task {id} was read without its file"
                        )));
                    };
                    (id.to_string(), doc, task.clone())
                }
            },
        };
        let (id, doc, task) = (&picked.0, picked.1.clone(), &picked.2);
        let decision = rules::claim_of(id, task);
        let attempt = task.attempts + 1;
        let mut t = task.clone();
        if task.assigned_to.is_none() {
            t.queue_assigned = true;
        }
        t.status = TaskStatus::InProgress;
        t.assigned_to = Some(agent_id.to_string());
        t.claimed_by = Some(agent_id.to_string());
        t.started_at = Some(now);
        t.attempts = attempt;
        if let Some(event) = decision.event(agent_id) {
            txn.event(event);
        }
        let claimed = put_task(txn, id, doc, &t)?;
        agent.current_task = Some(id.to_string());
        agent.write_into(&mut agent_doc);
        txn.put(FileKey::Agent(agent_id), agent_doc);
        Ok(Some(claimed))
    })
}

/// Rebuilds the cell's ready index from every task file (which must all read); returns
/// how many tasks are pending.
pub fn reindex(store: &dyn Store, cell: &str, now: DateTime<Utc>) -> Result<usize> {
    store::transact(store, cell, now, |txn| {
        let (_, tasks) = tasks_strict(txn)?;
        let entries = entries_of(&tasks);
        txn.rebuild_ready(&entries)?;
        Ok(entries.len())
    })
}

/// Refuses a report from anyone but the claiming agent (an operator may always report).
fn check_reporter(t: &Task, actor: Option<&str>, perms: &Permissions) -> Result<()> {
    let task_id = t.task_id.as_str();
    if let Some(actor) = actor {
        perms.check(actor, Perm::Write, task_id)?;
        let claimer = t.claimed_by.as_deref();
        if claimer != Some(actor) {
            return Err(Error::new(
                Kind::Denied,
                format!("task {task_id} is claimed by {}, not {actor}", claimer.unwrap_or("nobody")),
            )
            .hint("only the claiming agent (or an operator, without PAS_AGENT or --as) reports a task"));
        }
    }
    Ok(())
}

/// The claimed task `task_id`, as document and typed view; any other status is refused.
fn load_in_progress(txn: &mut Txn<'_>, task_id: &str) -> Result<(Doc, Task)> {
    check_id(IdKind::Task, task_id)?;
    let cell = txn.cell().to_string();
    let doc = txn.read(FileKey::Task(task_id))?.ok_or_else(|| {
        Error::not_found(format!("no task {task_id} in cell {cell}"))
            .hint(format!("`pas task list {cell}` shows its tasks"))
    })?;
    let t = task::view(task_id, &doc)?;
    match t.status {
        TaskStatus::InProgress => Ok((doc, t)),
        other => Err(
            Error::conflict(format!("task {task_id} is {other}, not in_progress"))
                .hint("only a claimed task can be reported done or failed"),
        ),
    }
}

/// What happened to a finished task.
#[derive(Debug, Clone, Serialize)]
pub struct DoneOutcome {
    /// The task.
    pub task: String,
    /// Whether that completed the whole cell.
    pub cell_completed: bool,
}

/// Marks a claimed task completed, recording artifacts (paths, referenced not copied).
pub fn done(
    store: &dyn Store,
    cell: &str,
    task_id: &str,
    actor: Option<&str>,
    artifacts: &[String],
    now: DateTime<Utc>,
) -> Result<DoneOutcome> {
    let perms = Permissions::load(store, cell)?;
    store::transact(store, cell, now, |txn| {
        let (doc, mut t) = load_in_progress(txn, task_id)?;
        check_reporter(&t, actor, &perms)?;
        let claimer = t.claimed_by.clone();
        for a in artifacts {
            if !t.artifacts.contains(a) {
                t.artifacts.push(a.clone());
            }
        }
        t.status = TaskStatus::Completed;
        t.completed_at = Some(now);
        t.last_error = None;
        put_task(txn, task_id, doc, &t)?;
        let mut event = NewEvent::new(
            Level::Info,
            EventKind::TaskCompleted,
            format!("task {task_id} completed"),
        )
        .task(task_id);
        if let Some(agent) = &claimer {
            set_current_task(txn, agent, task_id, false)?;
            event = event.agent(agent);
        }
        txn.event(event.details(json!({ "artifacts": artifacts })));
        Ok(())
    })?;
    let cell_completed = complete_cell_if_done(store, cell, now)?;
    Ok(DoneOutcome {
        task: task_id.to_string(),
        cell_completed,
    })
}

/// Makes an active cell `completed` when every task is; true when it did.
pub fn complete_cell_if_done(store: &dyn Store, cell: &str, now: DateTime<Utc>) -> Result<bool> {
    store::transact(store, cell, now, |txn| {
        let cell_doc = txn.read_required(FileKey::Cell)?;
        let status = Cell::from_doc(&cell_doc)?.status;
        let (_, all) = tasks_strict(txn)?;
        let all_done = status == CellStatus::Active
            && !all.is_empty()
            && all.values().all(|t| t.status == TaskStatus::Completed);
        if all_done {
            cell::set_status_in(txn, CellStatus::Completed)?;
        }
        Ok(all_done)
    })
}

/// What happened to a failed task.
#[derive(Debug, Clone, Serialize)]
pub struct FailOutcome {
    /// The task.
    pub task: String,
    /// Back in the queue (`pending`) rather than failed for good.
    pub requeued: bool,
    /// Attempts so far.
    pub attempts: u64,
    /// The policy's `max_retries`.
    pub max_retries: u64,
}

/// Fails the claimed task `tasks/<id>.json` (`doc`, read as `t`) in a transaction, as
/// [`rules::decide_fail`] decides: back to `pending` until `max_retries` attempts, then
/// `failed`.
fn fail_in(
    txn: &mut Txn<'_>,
    id: &str,
    doc: Doc,
    mut t: Task,
    reason: &str,
    max_retries: u64,
) -> Result<FailOutcome> {
    let now = txn.now();
    let claimer = t.claimed_by.clone();
    let decision = rules::decide_fail(&ClaimedTask::of(&t), max_retries);
    t.last_error = Some(reason.to_string());
    t.claimed_by = None;
    let attempts = match decision {
        FailDecision::Requeue {
            attempts, unassign, ..
        } => {
            t.status = TaskStatus::Pending;
            t.started_at = None;
            if unassign {
                t.assigned_to = None;
                t.queue_assigned = false;
            }
            attempts
        }
        FailDecision::Fail { attempts, .. } => {
            t.status = TaskStatus::Failed;
            t.completed_at = Some(now);
            attempts
        }
    };
    put_task(txn, id, doc, &t)?;
    if let Some(agent) = &claimer {
        set_current_task(txn, agent, id, false)?;
    }
    txn.event(decision.event(id, reason, claimer.as_deref()));
    Ok(FailOutcome {
        task: id.to_string(),
        requeued: decision.requeued(),
        attempts,
        max_retries,
    })
}

fn max_retries(store: &dyn Store, cell: &str) -> Result<u64> {
    Ok(policy::load(store, cell, None)?.max_retries())
}

/// Reports a claimed task failed.
pub fn fail(
    store: &dyn Store,
    cell: &str,
    task_id: &str,
    actor: Option<&str>,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<FailOutcome> {
    if reason.trim().is_empty() {
        return Err(
            Error::usage("the failure reason is empty").hint("pass --reason \"what went wrong\"")
        );
    }
    let perms = Permissions::load(store, cell)?;
    let max = max_retries(store, cell)?;
    store::transact(store, cell, now, |txn| {
        let (doc, t) = load_in_progress(txn, task_id)?;
        check_reporter(&t, actor, &perms)?;
        fail_in(txn, task_id, doc, t, reason, max)
    })
}

/// Fails every `in_progress` task past its `timeout` (reason `timeout`), by the same rule.
pub fn reap(store: &dyn Store, cell: &str, now: DateTime<Utc>) -> Result<Vec<FailOutcome>> {
    let max = max_retries(store, cell)?;
    store::transact(store, cell, now, |txn| {
        let mut outcomes = Vec::new();
        let (mut docs, tasks) = tasks_strict(txn)?;
        for (id, t) in tasks {
            if rules::decide_reap(&TaskClock::of(&t), now) != ReapDecision::TimedOut {
                continue;
            }
            let Some(doc) = docs.remove(&id) else {
                continue;
            };
            outcomes.push(fail_in(txn, &id, doc, t, "timeout", max)?);
        }
        Ok(outcomes)
    })
}

/// What a handoff did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum HandoffOutcome {
    /// The task moved.
    Done {
        /// The task.
        task: String,
        /// From this agent.
        from: String,
        /// To this agent.
        to: String,
    },
    /// A pending request was denied; the task stays where it was.
    Denied {
        /// The request's id.
        request: String,
        /// The task.
        task: String,
    },
    /// `handoff_approval: manual`: a request waits for `pas task handoff approve`.
    Requested {
        /// The request's id.
        request: String,
        /// The task.
        task: String,
        /// From this agent.
        from: String,
        /// To this agent.
        to: String,
    },
}

fn handoff_rules(
    store: &dyn Store,
    cell: &str,
    from: &str,
    to: &str,
) -> Result<(bool, Permissions)> {
    let p = policy::load(store, cell, None)?;
    if !p.flag("handoff_allowed", true) {
        return Err(Error::new(
            Kind::Denied,
            format!("handoffs are not allowed in cell {cell}"),
        )
        .hint("set \"handoff_allowed\": true in config/policies.json"));
    }
    let perms = Permissions::load(store, cell)?;
    perms.check_handoff(from, to)?;
    // A word pas does not know is the default, `auto` (`pas validate` reports it).
    let approval = HandoffApproval::parse(p.text("handoff_approval", "auto")).unwrap_or_default();
    Ok((approval == HandoffApproval::Manual, perms))
}

/// Moves the task `tasks/<task_id>.json` (`doc`, read as `t`) to `to` in a transaction,
/// with its event.
fn move_task(
    txn: &mut Txn<'_>,
    task_id: &str,
    doc: Doc,
    mut t: Task,
    from: &str,
    to: &str,
) -> Result<()> {
    t.assigned_to = Some(to.to_string());
    t.handoff_request = None;
    t.queue_assigned = false;
    let in_progress = t.status == TaskStatus::InProgress;
    if in_progress {
        t.claimed_by = Some(to.to_string());
    }
    put_task(txn, task_id, doc, &t)?;
    set_current_task(txn, from, task_id, false)?;
    if in_progress {
        set_current_task(txn, to, task_id, true)?;
    }
    txn.event(
        NewEvent::new(
            Level::Info,
            EventKind::TaskHandoff,
            format!("task {task_id} handed from {from} to {to}"),
        )
        .task(task_id)
        .agent(to)
        .details(json!({ "from": from, "to": to })),
    );
    Ok(())
}

/// Hands a task from its current agent (or `from`) to `to`.
pub fn handoff(
    store: &dyn Store,
    cell: &str,
    task_id: &str,
    to: &str,
    from: Option<&str>,
    actor: Option<&str>,
    now: DateTime<Utc>,
) -> Result<HandoffOutcome> {
    crate::ops::agent::read(store, cell, to)?;
    check_id(IdKind::Task, task_id)?;
    store::transact(store, cell, now, |txn| {
        let doc = txn.read(FileKey::Task(task_id))?.ok_or_else(|| {
            Error::not_found(format!("no task {task_id} in cell {cell}"))
                .hint(format!("`pas task list {cell}` shows its tasks"))
        })?;
        let mut t = task::view(task_id, &doc)?;
        if t.is_finished() {
            return Err(Error::conflict(format!(
                "task {task_id} is {} and cannot be handed over",
                t.status
            )));
        }
        let current = t.claimed_by.clone().or_else(|| t.assigned_to.clone());
        let from = match (from, actor, current.as_deref()) {
            (Some(f), _, _) => f.to_string(),
            (None, Some(a), _) => a.to_string(),
            (None, None, Some(c)) => c.to_string(),
            (None, None, None) => {
                return Err(Error::usage(format!(
                    "task {task_id} is assigned to nobody; say who hands it with --from"
                ))
                .hint("or assign it with `pas task add --assign`"))
            }
        };
        if let Some(actor) = actor {
            if actor != from {
                return Err(Error::new(
                    Kind::Denied,
                    format!("agent {actor} cannot hand over a task on behalf of {from}"),
                ));
            }
        }
        if current.as_deref().is_some_and(|c| c != from) {
            return Err(Error::conflict(format!(
                "task {task_id} belongs to {}, not {from}",
                current.unwrap_or_default()
            )));
        }
        if from == to {
            return Err(Error::usage(format!("task {task_id} is already with {to}")));
        }
        let (manual, _) = handoff_rules(store, cell, &from, to)?;
        if manual {
            let request = format!("h-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
            t.handoff_request = Some(HandoffRequest {
                id: request.clone(),
                from: from.clone(),
                to: to.to_string(),
                requested_at: Some(now),
                extra: Map::new(),
            });
            put_task(txn, task_id, doc, &t)?;
            txn.event(
                NewEvent::new(
                    Level::Warn, EventKind::TaskHandoffRequested,
                    format!(
                        "handoff of task {task_id} from {from} to {to} waits for approval ({request})"
                    ),
                )
                .task(task_id)
                .agent(&from)
                .details(json!({ "request": request, "from": from, "to": to })),
            );
            return Ok(HandoffOutcome::Requested {
                request,
                task: task_id.to_string(),
                from,
                to: to.to_string(),
            });
        }
        move_task(txn, task_id, doc, t, &from, to)?;
        Ok(HandoffOutcome::Done {
            task: task_id.to_string(),
            from,
            to: to.to_string(),
        })
    })
}

/// Approves (or denies) a pending handoff request by its id.
pub fn decide_handoff(
    store: &dyn Store,
    cell: &str,
    request: &str,
    approve: bool,
    now: DateTime<Utc>,
) -> Result<HandoffOutcome> {
    store::transact(store, cell, now, |txn| {
        let (mut docs, tasks) = tasks_strict(txn)?;
        let found = tasks.into_iter().find_map(|(id, t)| {
            let req = t.handoff_request.clone().filter(|r| r.id == request)?;
            let doc = docs.remove(&id)?;
            Some((id, doc, t, req))
        });
        let Some((task_id, doc, mut t, req)) = found else {
            return Err(Error::not_found(format!(
                "no pending handoff request {request} in cell {cell}"
            ))
            .hint("`pas task list` shows tasks; requests are in each task's handoff_request"));
        };
        let HandoffRequest { from, to, .. } = req;
        if approve {
            handoff_rules(store, cell, &from, &to)?;
            move_task(txn, &task_id, doc, t, &from, &to)?;
            return Ok(HandoffOutcome::Done {
                task: task_id,
                from,
                to,
            });
        }
        t.handoff_request = None;
        put_task(txn, &task_id, doc, &t)?;
        txn.event(
            NewEvent::new(
                Level::Info,
                EventKind::TaskHandoffDenied,
                format!("handoff of task {task_id} from {from} to {to} denied"),
            )
            .task(&task_id)
            .agent(&from)
            .details(json!({ "request": request })),
        );
        Ok(HandoffOutcome::Denied {
            request: request.to_string(),
            task: task_id,
        })
    })
}

/// Hands the unfinished tasks of an agent that finally failed to the first of
/// `substitutes` that is healthy (and allowed by the handoff rules), or back to the queue.
/// Returns what happened, one line per task.
pub fn release_tasks(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    substitutes: &[String],
    healthy: &dyn Fn(&str) -> bool,
    now: DateTime<Utc>,
) -> Result<Vec<String>> {
    let p = policy::load(store, cell, None)?;
    let perms = Permissions::load(store, cell)?;
    let substitute = substitutes
        .iter()
        .find(|s| {
            s.as_str() != agent
                && healthy(s)
                && p.flag("handoff_allowed", true)
                && perms.check_handoff(agent, s).is_ok()
        })
        .cloned();
    store::transact(store, cell, now, |txn| {
        let mut done = Vec::new();
        let (mut docs, tasks) = tasks_strict(txn)?;
        for (task_id, mut t) in tasks {
            let mine = t.claimed_by.as_deref() == Some(agent)
                || (t.assigned_to.as_deref() == Some(agent) && t.status == TaskStatus::InProgress);
            if !mine || t.is_finished() {
                continue;
            }
            let Some(doc) = docs.remove(&task_id) else {
                continue;
            };
            match &substitute {
                Some(sub) => {
                    move_task(txn, &task_id, doc, t, agent, sub)?;
                    done.push(format!("task {task_id} handed to substitute {sub}"));
                }
                None => {
                    t.status = TaskStatus::Pending;
                    t.claimed_by = None;
                    t.assigned_to = None;
                    t.started_at = None;
                    t.queue_assigned = false;
                    put_task(txn, &task_id, doc, &t)?;
                    txn.event(
                        NewEvent::new(
                            Level::Warn,
                            EventKind::TaskReleased,
                            format!("task {task_id} back in the queue: agent {agent} failed"),
                        )
                        .task(&task_id)
                        .agent(agent),
                    );
                    done.push(format!("task {task_id} back in the queue"));
                }
            }
        }
        Ok(done)
    })
}
