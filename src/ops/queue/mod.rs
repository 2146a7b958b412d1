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
use serde_json::{json, Value};

use crate::clock;
use crate::doc::Doc;
use crate::error::{Error, Kind, Result};
use crate::model::EventKind;
use crate::ops::cell::{self, CellStatus};
use crate::ops::permissions::{Perm, Permissions};
use crate::ops::policy;
use crate::ops::queue::rules::{ClaimDecision, ClaimedTask, FailDecision, ReapDecision, TaskClock};
use crate::store::events::{Level, NewEvent};
use crate::store::{self, check_id, Collection, FileKey, IdKind, Store, Txn};

pub use crate::ops::queue::rules::{eligible, ready};

/// Every task of the cell; the first unreadable one is an error (a claim must not skip a
/// task it cannot read).
fn tasks_strict(txn: &mut Txn<'_>) -> Result<BTreeMap<String, Doc>> {
    let mut all = BTreeMap::new();
    for (id, doc) in txn.read_collection(Collection::Tasks)? {
        all.insert(id, doc?);
    }
    Ok(all)
}

/// Sets or clears (when it still points at `task_id`) an agent's `current_task`.
fn set_current_task(txn: &mut Txn<'_>, agent: &str, task_id: &str, claim: bool) -> Result<()> {
    let Some(mut doc) = txn.read(FileKey::Agent(agent))? else {
        return Ok(());
    };
    if claim {
        doc.set("current_task", task_id);
    } else if doc.str("current_task") == Some(task_id) {
        doc.set("current_task", Value::Null);
    } else {
        return Ok(());
    }
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
        let mut agent = txn.read(FileKey::Agent(agent_id))?.ok_or_else(|| {
            Error::not_found(format!("no agent {agent_id} in cell {cell}"))
                .hint(format!("`pas agent list {cell}` shows its agents"))
        })?;
        let refused = |status: &str| {
            Error::conflict(format!(
                "agent {agent_id} is {status} and cannot claim work"
            ))
        };
        // Refused before the tasks are read: an unreadable task does not hide the reason.
        if let Some(status) = rules::claim_refused(&agent) {
            return Err(refused(status));
        }
        let all = tasks_strict(txn)?;
        let decision = rules::decide_claim(&agent, &all, &perms);
        let (task, attempt, queue_assigned) = match &decision {
            ClaimDecision::Refused(status) => return Err(refused(status)),
            ClaimDecision::NothingReady => return Ok(None),
            ClaimDecision::Claim {
                task,
                attempt,
                queue_assigned,
            } => (*task, *attempt, *queue_assigned),
        };
        let mut t = task.clone();
        let task_id = t.str("task_id").unwrap_or_default().to_string();
        if queue_assigned {
            t.set("queue_assigned", true);
        }
        t.set("status", "in_progress");
        t.set("assigned_to", agent_id);
        t.set("claimed_by", agent_id);
        t.set("started_at", clock::stamp(now));
        t.set("attempts", attempt);
        if let Some(event) = decision.event(agent_id) {
            txn.event(event);
        }
        txn.put(FileKey::Task(&task_id), t.clone());
        agent.set("current_task", task_id.as_str());
        txn.put(FileKey::Agent(agent_id), agent);
        Ok(Some(t))
    })
}

/// Refuses a report from anyone but the claiming agent (an operator may always report).
fn check_reporter(t: &Doc, actor: Option<&str>, perms: &Permissions) -> Result<()> {
    let task_id = t.str("task_id").unwrap_or("");
    if let Some(actor) = actor {
        perms.check(actor, Perm::Write, task_id)?;
        let claimer = t.str("claimed_by");
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

fn load_in_progress(txn: &mut Txn<'_>, task_id: &str) -> Result<Doc> {
    check_id(IdKind::Task, task_id)?;
    let cell = txn.cell().to_string();
    let t = txn.read(FileKey::Task(task_id))?.ok_or_else(|| {
        Error::not_found(format!("no task {task_id} in cell {cell}"))
            .hint(format!("`pas task list {cell}` shows its tasks"))
    })?;
    match t.str("status") {
        Some("in_progress") => Ok(t),
        other => Err(Error::conflict(format!(
            "task {task_id} is {}, not in_progress",
            other.unwrap_or("?")
        ))
        .hint("only a claimed task can be reported done or failed")),
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
        let mut t = load_in_progress(txn, task_id)?;
        check_reporter(&t, actor, &perms)?;
        let claimer = t.str("claimed_by").map(str::to_string);
        let mut recorded = t.strings("artifacts");
        for a in artifacts {
            if !recorded.contains(a) {
                recorded.push(a.clone());
            }
        }
        t.set("status", "completed");
        t.set("completed_at", clock::stamp(now));
        t.set(
            "artifacts",
            Value::from(recorded.into_iter().map(Value::from).collect::<Vec<_>>()),
        );
        t.set("last_error", Value::Null);
        txn.put(FileKey::Task(task_id), t);
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
        let all = tasks_strict(txn)?;
        let all_done = cell_doc.str("status") == Some("active")
            && !all.is_empty()
            && all.values().all(|t| t.str("status") == Some("completed"));
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

/// Fails a claimed task in a transaction, as [`rules::decide_fail`] decides: back to
/// `pending` until `max_retries` attempts, then `failed`.
fn fail_in(txn: &mut Txn<'_>, mut t: Doc, reason: &str, max_retries: u64) -> Result<FailOutcome> {
    let now = txn.now();
    let task_id = t.str("task_id").unwrap_or_default().to_string();
    let claimer = t.str("claimed_by").map(str::to_string);
    let decision = rules::decide_fail(&ClaimedTask::from_doc(&t), max_retries);
    t.set("last_error", reason);
    t.set("claimed_by", Value::Null);
    let attempts = match decision {
        FailDecision::Requeue {
            attempts, unassign, ..
        } => {
            t.set("status", "pending");
            t.set("started_at", Value::Null);
            if unassign {
                t.set("assigned_to", Value::Null);
                t.remove("queue_assigned");
            }
            attempts
        }
        FailDecision::Fail { attempts, .. } => {
            t.set("status", "failed");
            t.set("completed_at", clock::stamp(now));
            attempts
        }
    };
    txn.put(FileKey::Task(&task_id), t);
    if let Some(agent) = &claimer {
        set_current_task(txn, agent, &task_id, false)?;
    }
    txn.event(decision.event(&task_id, reason, claimer.as_deref()));
    Ok(FailOutcome {
        task: task_id,
        requeued: decision.requeued(),
        attempts,
        max_retries,
    })
}

fn max_retries(store: &dyn Store, cell: &str) -> Result<u64> {
    Ok(rules::max_retries(&policy::load(store, cell, None)?))
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
        let t = load_in_progress(txn, task_id)?;
        check_reporter(&t, actor, &perms)?;
        fail_in(txn, t, reason, max)
    })
}

/// Fails every `in_progress` task past its `timeout` (reason `timeout`), by the same rule.
pub fn reap(store: &dyn Store, cell: &str, now: DateTime<Utc>) -> Result<Vec<FailOutcome>> {
    let max = max_retries(store, cell)?;
    store::transact(store, cell, now, |txn| {
        let mut outcomes = Vec::new();
        for t in tasks_strict(txn)?.into_values() {
            if rules::decide_reap(&TaskClock::from_doc(&t), now) != ReapDecision::TimedOut {
                continue;
            }
            outcomes.push(fail_in(txn, t, "timeout", max)?);
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
    Ok((p.text("handoff_approval", "auto") == "manual", perms))
}

/// Moves a task to `to` in a transaction, with its event.
fn move_task(txn: &mut Txn<'_>, mut t: Doc, from: &str, to: &str) -> Result<()> {
    let task_id = t.str("task_id").unwrap_or_default().to_string();
    t.set("assigned_to", to);
    t.remove("handoff_request");
    t.remove("queue_assigned");
    let in_progress = t.str("status") == Some("in_progress");
    if in_progress {
        t.set("claimed_by", to);
    }
    txn.put(FileKey::Task(&task_id), t);
    set_current_task(txn, from, &task_id, false)?;
    if in_progress {
        set_current_task(txn, to, &task_id, true)?;
    }
    txn.event(
        NewEvent::new(
            Level::Info,
            EventKind::TaskHandoff,
            format!("task {task_id} handed from {from} to {to}"),
        )
        .task(&task_id)
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
        let mut t = txn.read(FileKey::Task(task_id))?.ok_or_else(|| {
            Error::not_found(format!("no task {task_id} in cell {cell}"))
                .hint(format!("`pas task list {cell}` shows its tasks"))
        })?;
        if matches!(t.str("status"), Some("completed") | Some("failed")) {
            return Err(Error::conflict(format!(
                "task {task_id} is {} and cannot be handed over",
                t.str("status").unwrap_or("?")
            )));
        }
        let current = t
            .str("claimed_by")
            .or(t.str("assigned_to"))
            .map(str::to_string);
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
            t.set(
                "handoff_request",
                json!({ "id": request, "from": from, "to": to, "requested_at": clock::stamp(now) }),
            );
            txn.put(FileKey::Task(task_id), t);
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
        move_task(txn, t, &from, to)?;
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
        let all = tasks_strict(txn)?;
        let Some(mut t) = all.into_values().find(|t| {
            t.get("handoff_request")
                .and_then(|r| r.get("id"))
                .and_then(Value::as_str)
                == Some(request)
        }) else {
            return Err(Error::not_found(format!(
                "no pending handoff request {request} in cell {cell}"
            ))
            .hint("`pas task list` shows tasks; requests are in each task's handoff_request"));
        };
        let req = t.get("handoff_request").cloned().unwrap_or(Value::Null);
        let field = |k: &str| {
            req.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let (from, to) = (field("from"), field("to"));
        let task_id = t.str("task_id").unwrap_or_default().to_string();
        if approve {
            handoff_rules(store, cell, &from, &to)?;
            move_task(txn, t, &from, &to)?;
            return Ok(HandoffOutcome::Done {
                task: task_id,
                from,
                to,
            });
        }
        t.remove("handoff_request");
        txn.put(FileKey::Task(&task_id), t);
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
        for mut t in tasks_strict(txn)?.into_values() {
            let mine = t.str("claimed_by") == Some(agent)
                || (t.str("assigned_to") == Some(agent) && t.str("status") == Some("in_progress"));
            if !mine || matches!(t.str("status"), Some("completed") | Some("failed")) {
                continue;
            }
            let task_id = t.str("task_id").unwrap_or_default().to_string();
            match &substitute {
                Some(sub) => {
                    move_task(txn, t, agent, sub)?;
                    done.push(format!("task {task_id} handed to substitute {sub}"));
                }
                None => {
                    t.set("status", "pending");
                    t.set("claimed_by", Value::Null);
                    t.set("assigned_to", Value::Null);
                    t.set("started_at", Value::Null);
                    t.remove("queue_assigned");
                    txn.put(FileKey::Task(&task_id), t);
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
