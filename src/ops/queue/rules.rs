//! The rules of the work queue: which tasks are ready and for whom ([`ready`],
//! [`eligible`]), what a claim takes ([`decide_claim`]), whether a failed task goes back to
//! the queue ([`decide_fail`]) and whether a running task has timed out ([`decide_reap`]).
//!
//! Pure, over the typed tasks and agent ([`Task`], [`Agent`]): [`crate::ops::queue`] reads
//! them in a store transaction, asks here, and applies the decision in the same
//! transaction.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::model::{Agent, AgentStatus, EventKind, Priority, Task, TaskStatus};
use crate::ops::permissions::{Perm, Permissions};
use crate::ops::task;
use crate::store::events::{Level, NewEvent};

/// Whether `agent` may take `task`: assigned to it or to nobody, having every required
/// capability, and allowed to execute it.
pub fn eligible(t: &Task, agent: &Agent, perms: &Permissions) -> bool {
    let assigned_ok = t.assigned_to.as_deref().is_none_or(|a| a == agent.agent_id);
    let caps_ok = t
        .required_capabilities
        .iter()
        .all(|c| agent.capabilities.contains(c));
    assigned_ok && caps_ok && perms.allows(&agent.agent_id, Perm::Execute, &t.task_id)
}

/// Ready tasks with their file ids, best first (priority high to low, then oldest, a task
/// without `created_at` before dated ones, then by id): pending with every dependency
/// completed; for an agent, only those it may take.
pub fn ready<'a>(
    all: &'a BTreeMap<String, Task>,
    agent: Option<&Agent>,
    perms: &Permissions,
) -> Vec<(&'a str, &'a Task)> {
    let mut out: Vec<(&str, &Task)> = all
        .iter()
        .filter(|(_, t)| task::state(t, all) == task::State::Status(TaskStatus::Pending))
        .filter(|(_, t)| agent.is_none_or(|a| eligible(t, a, perms)))
        .map(|(id, t)| (id.as_str(), t))
        .collect();
    // `Priority` is declared highest first.
    out.sort_by(|(_, a), (_, b)| {
        (a.priority, a.created_at, &a.task_id).cmp(&(b.priority, b.created_at, &b.task_id))
    });
    out
}

/// What a claim by an agent does.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimDecision<'a> {
    /// The agent is `failed` or `paused` (its status): it cannot claim work.
    Refused(AgentStatus),
    /// Nothing is ready for it.
    NothingReady,
    /// It takes `task`, the best ready task for it.
    Claim {
        /// The task's file id.
        id: &'a str,
        /// The task as it is now.
        task: &'a Task,
        /// Its attempt number with this claim (`attempts` + 1).
        attempt: u64,
        /// Nobody was assigned: the claim assigns it (`queue_assigned`, undone if the task
        /// goes back to the queue).
        queue_assigned: bool,
    },
}

impl ClaimDecision<'_> {
    /// The `task.claimed` event of a claim by `agent`.
    pub fn event(&self, agent: &str) -> Option<NewEvent> {
        let ClaimDecision::Claim { task, attempt, .. } = self else {
            return None;
        };
        let task_id = task.task_id.as_str();
        Some(
            NewEvent::new(
                Level::Info,
                EventKind::TaskClaimed,
                format!("{agent} claimed task {task_id} (attempt {attempt})"),
            )
            .agent(agent)
            .task(task_id)
            .details(json!({ "attempt": attempt })),
        )
    }
}

/// The agent's status when it forbids claiming (`failed`, `paused`); the first question of
/// [`decide_claim`], which needs no task.
pub fn claim_refused(agent: &Agent) -> Option<AgentStatus> {
    Some(agent.status).filter(|s| matches!(s, AgentStatus::Failed | AgentStatus::Paused))
}

/// What `agent` claims of the tasks `all`.
pub fn decide_claim<'a>(
    agent: &Agent,
    all: &'a BTreeMap<String, Task>,
    perms: &Permissions,
) -> ClaimDecision<'a> {
    if let Some(status) = claim_refused(agent) {
        return ClaimDecision::Refused(status);
    }
    match ready(all, Some(agent), perms).into_iter().next() {
        None => ClaimDecision::NothingReady,
        Some((id, task)) => claim_of(id, task),
    }
}

/// The claim of the ready task `task` (file id `id`).
pub fn claim_of<'a>(id: &'a str, task: &'a Task) -> ClaimDecision<'a> {
    ClaimDecision::Claim {
        id,
        task,
        attempt: task.attempts + 1,
        queue_assigned: task.assigned_to.is_none(),
    }
}

/// The ready-index entry of the task file `tasks/<id>.json` (see `store::ready`): pending
/// tasks have one, others none. Entries sort bytewise as [`ready`] orders tasks: the
/// priority's rank, then `0` for no `created_at` or `1` and the time (seconds offset to be
/// unsigned, 20 digits, then 9 digits of nanoseconds), `-`, the id, then `+` (below every
/// id character, so a shorter id sorts first) and the assignee, when there is one and the
/// name stays within 255 bytes (a claim reads the task to check it anyway).
pub fn entry_name(id: &str, t: &Task) -> Option<String> {
    if t.status != TaskStatus::Pending || !crate::store::layout::is_valid_id(id) {
        return None;
    }
    let rank = Priority::ALL
        .iter()
        .position(|p| *p == t.priority)
        .unwrap_or(0);
    let when = match t.created_at {
        None => "0".to_string(),
        Some(at) => {
            let secs = (i128::from(at.timestamp()) - i128::from(i64::MIN)) as u64;
            format!("1{secs:020}{:09}", at.timestamp_subsec_nanos())
        }
    };
    let name = format!("{rank}{when}-{id}+");
    match t.assigned_to.as_deref() {
        Some(a) if !crate::store::layout::is_valid_id(a) => None,
        Some(a) if name.len() + a.len() <= 255 => Some(format!("{name}{a}")),
        _ => Some(name),
    }
}

/// What an entry name says without reading the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The task's file id.
    pub task: &'a str,
    /// The agent it is assigned to, when the name says.
    pub assignee: Option<&'a str>,
}

/// Reads an entry name made by [`entry_name`]; `None` for anything else.
pub fn parse_entry(name: &str) -> Option<Entry<'_>> {
    let rest = name.get(1..)?;
    let rest = match rest.strip_prefix('0') {
        Some(undated) => undated,
        None => rest.strip_prefix('1').and_then(|r| r.get(29..))?,
    };
    let (task, assignee) = rest.strip_prefix('-')?.split_once('+')?;
    let valid = crate::store::layout::is_valid_id;
    (name.as_bytes()[0].is_ascii_digit() && valid(task) && (assignee.is_empty() || valid(assignee)))
        .then_some(Entry {
            task,
            assignee: Some(assignee).filter(|a| !a.is_empty()),
        })
}

/// What a claim does with one entry of the ready index, its task as read (`None`: no such
/// file) and that task's dependencies as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidate {
    /// Claim it.
    Take,
    /// Not for this agent now (assigned to another, blocked, missing a capability, not
    /// allowed): the next entry.
    Skip,
    /// The entry does not match its task file (changed behind pas's back): read every
    /// task instead, which rebuilds the index.
    Stale,
}

/// Judges one entry of the ready index for `agent`.
pub fn judge_candidate(
    name: &str,
    id: &str,
    task: Option<&Task>,
    deps: &BTreeMap<String, Task>,
    agent: &Agent,
    perms: &Permissions,
) -> Candidate {
    let Some(t) = task else {
        return Candidate::Stale;
    };
    if entry_name(id, t).as_deref() != Some(name) {
        return Candidate::Stale;
    }
    if task::state(t, deps) != task::State::Status(TaskStatus::Pending)
        || !eligible(t, agent, perms)
    {
        return Candidate::Skip;
    }
    Candidate::Take
}

/// The fields of a claimed task its failure rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimedTask {
    /// `attempts` (a claimed task without one is on its first).
    pub attempts: u64,
    /// `queue_assigned`: its claim assigned it, so going back to the queue unassigns it.
    pub queue_assigned: bool,
}

impl ClaimedTask {
    /// The fields of a task; a claimed task is on its first attempt at least (a
    /// hand-written one may not count them).
    pub fn of(t: &Task) -> ClaimedTask {
        ClaimedTask {
            attempts: t.attempts.max(1),
            queue_assigned: t.queue_assigned,
        }
    }
}

/// What a failure of a claimed task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailDecision {
    /// Back to `pending` for another attempt.
    Requeue {
        /// Attempts so far.
        attempts: u64,
        /// The policy's `max_retries`.
        max_retries: u64,
        /// Its claim assigned it: back to everyone (`assigned_to` cleared).
        unassign: bool,
    },
    /// `failed` for good.
    Fail {
        /// Attempts so far.
        attempts: u64,
        /// The policy's `max_retries`.
        max_retries: u64,
    },
}

impl FailDecision {
    /// Whether the task goes back to the queue.
    pub fn requeued(&self) -> bool {
        matches!(self, FailDecision::Requeue { .. })
    }

    /// The event: `task.requeued` or `task.failed`, naming the agent that claimed it.
    pub fn event(&self, task_id: &str, reason: &str, claimer: Option<&str>) -> NewEvent {
        let (level, kind, message, attempts, max_retries) = match *self {
            FailDecision::Requeue {
                attempts,
                max_retries,
                ..
            } => (
                Level::Warn,
                EventKind::TaskRequeued,
                format!("task {task_id} failed (attempt {attempts} of {max_retries}): {reason}; back in the queue"),
                attempts,
                max_retries,
            ),
            FailDecision::Fail {
                attempts,
                max_retries,
            } => (
                Level::Error,
                EventKind::TaskFailed,
                format!("task {task_id} failed for good after {attempts} attempt(s): {reason}"),
                attempts,
                max_retries,
            ),
        };
        let mut event = NewEvent::new(level, kind, message)
            .task(task_id)
            .details(json!({ "reason": reason, "attempts": attempts, "max_retries": max_retries }));
        if let Some(agent) = claimer {
            event = event.agent(agent);
        }
        event
    }
}

/// A failed claimed task goes back to the queue while it has been attempted fewer than
/// `max_retries` times, and stays failed from then on.
pub fn decide_fail(task: &ClaimedTask, max_retries: u64) -> FailDecision {
    if task.attempts < max_retries {
        FailDecision::Requeue {
            attempts: task.attempts,
            max_retries,
            unassign: task.queue_assigned,
        }
    } else {
        FailDecision::Fail {
            attempts: task.attempts,
            max_retries,
        }
    }
}

/// The fields of a task its timeout rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TaskClock {
    /// `status` is `in_progress`.
    pub in_progress: bool,
    /// `started_at`.
    pub started_at: Option<DateTime<Utc>>,
    /// `timeout`, in seconds.
    pub timeout: Option<f64>,
}

impl TaskClock {
    /// The fields of a task.
    pub fn of(t: &Task) -> TaskClock {
        TaskClock {
            in_progress: t.status == TaskStatus::InProgress,
            started_at: t.started_at,
            timeout: t.timeout,
        }
    }
}

/// What a reap pass does with one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReapDecision {
    /// Not `in_progress`.
    NotRunning,
    /// No start time, or no positive `timeout`.
    NoTimeout,
    /// Running within its timeout (the timeout itself included).
    Within,
    /// Past its timeout: fail it (reason `timeout`), by the [`decide_fail`] rule.
    TimedOut,
}

/// Whether a task has run past its `timeout` at `now`.
pub fn decide_reap(task: &TaskClock, now: DateTime<Utc>) -> ReapDecision {
    if !task.in_progress {
        return ReapDecision::NotRunning;
    }
    let (Some(started), Some(timeout)) = (task.started_at, task.timeout) else {
        return ReapDecision::NoTimeout;
    };
    if timeout <= 0.0 {
        ReapDecision::NoTimeout
    } else if (now - started).num_milliseconds() as f64 / 1000.0 <= timeout {
        ReapDecision::Within
    } else {
        ReapDecision::TimedOut
    }
}

#[cfg(test)]
mod tests {
    //! One table per rule; a row names the case it pins down.
    // A row is a tuple with one column per input and outcome.
    #![allow(clippy::type_complexity)]

    use super::*;
    use crate::doc::Doc;
    use crate::model;
    use std::path::Path;

    fn doc(json: &str) -> Doc {
        Doc::parse(json.as_bytes(), Path::new("t.json")).unwrap()
    }

    /// A task file: pending, with the fields of `json` over a task id and title.
    fn task_doc(json: &str) -> Doc {
        let mut t = doc(r#"{"task_id": "t", "title": "T", "status": "pending"}"#);
        for (k, v) in doc(json).map() {
            t.map_mut().insert(k.clone(), v.clone());
        }
        t
    }

    fn task(json: &str) -> Task {
        Task::from_doc(&task_doc(json)).unwrap()
    }

    fn agent(json: &str) -> Agent {
        Agent::from_doc(&doc(json)).unwrap()
    }

    fn t0() -> DateTime<Utc> {
        crate::clock::parse("2026-11-23T10:00:00Z").unwrap()
    }

    /// `secs` after [`t0`].
    fn at(secs: f64) -> DateTime<Utc> {
        t0() + chrono::Duration::milliseconds((secs * 1000.0).round() as i64)
    }

    fn perms(json: Option<&str>) -> Permissions {
        Permissions::new(json.map(|j| model::Permissions::from_doc(&doc(j)).unwrap()))
    }

    /// Tasks by id, from `(id, fields)`: pending unless the fields say otherwise.
    fn tasks(rows: &[(&str, &str)]) -> BTreeMap<String, Task> {
        rows.iter()
            .map(|(id, fields)| {
                let sep = if fields.is_empty() { "" } else { "," };
                let t = task(&format!(r#"{{"task_id": "{id}"{sep} {fields}}}"#));
                (id.to_string(), t)
            })
            .collect()
    }

    #[test]
    fn an_agent_may_take_what_is_assigned_to_it_or_nobody_and_it_can_do() {
        let rust = agent(r#"{"agent_id": "a1", "capabilities": ["rust", "sql"]}"#);
        let bare = agent(r#"{"agent_id": "a2"}"#);
        let only_t2 = Some(r#"{"a1": {"execute": ["t2"]}, "a2": {"execute": ["*"]}}"#);
        // (why, task, agent, permissions.json, eligible)
        #[rustfmt::skip]
        let rows: &[(&str, &str, &Agent, Option<&str>, bool)] = &[
            ("unassigned, nothing required", r#"{"task_id": "t1"}"#, &bare, None, true),
            ("assigned to it", r#"{"task_id": "t1", "assigned_to": "a1"}"#, &rust, None, true),
            ("assigned to another", r#"{"task_id": "t1", "assigned_to": "a2"}"#, &rust, None, false),
            ("assigned to null is nobody", r#"{"task_id": "t1", "assigned_to": null}"#, &bare, None, true),
            ("every capability", r#"{"task_id": "t1", "required_capabilities": ["rust", "sql"]}"#, &rust, None, true),
            ("one missing capability", r#"{"task_id": "t1", "required_capabilities": ["rust", "go"]}"#, &rust, None, false),
            ("no capabilities at all", r#"{"task_id": "t1", "required_capabilities": ["rust"]}"#, &bare, None, false),
            ("an empty requirement", r#"{"task_id": "t1", "required_capabilities": []}"#, &bare, None, true),
            ("not allowed to execute it", r#"{"task_id": "t1"}"#, &rust, only_t2, false),
            ("allowed to execute it", r#"{"task_id": "t2"}"#, &rust, only_t2, true),
            ("allowed everything by *", r#"{"task_id": "t1"}"#, &bare, only_t2, true),
            ("no entry: an open cell", r#"{"task_id": "t1"}"#, &bare, Some(r#"{"a1": {"execute": []}}"#), true),
        ];
        for &(why, task, agent, p, expected) in rows {
            assert_eq!(
                eligible(&self::task(task), agent, &perms(p)),
                expected,
                "{why}"
            );
        }
    }

    #[test]
    fn ready_tasks_come_by_priority_then_age_then_id() {
        let old = r#""created_at": "2026-11-23T09:00:00Z""#;
        let new = r#""created_at": "2026-11-23T10:00:00Z""#;
        let all = tasks(&[
            ("low_old", &format!(r#""priority": "low", {old}"#)),
            ("mid_new", &format!(r#""priority": "medium", {new}"#)),
            ("mid_old", &format!(r#""priority": "medium", {old}"#)),
            ("no_priority", new),
            ("high_new", &format!(r#""priority": "high", {new}"#)),
            ("high_undated", r#""priority": "high""#),
            ("high_b", &format!(r#""priority": "high", {old}"#)),
            ("high_a", &format!(r#""priority": "high", {old}"#)),
            (
                "blocked",
                r#""priority": "high", "dependencies": ["mid_new"]"#,
            ),
            (
                "unblocked",
                r#""priority": "low", "dependencies": ["done"]"#,
            ),
            ("done", r#""status": "completed""#),
            ("running", r#""status": "in_progress", "priority": "high""#),
            ("failed", r#""status": "failed", "priority": "high""#),
            (
                "mine",
                &format!(r#""priority": "high", "assigned_to": "a2", {new}"#),
            ),
            (
                "needs_rust",
                &format!(r#""priority": "low", "required_capabilities": ["rust"], {new}"#),
            ),
        ]);
        let order = |agent: Option<&Agent>| -> Vec<String> {
            ready(&all, agent, &perms(None))
                .iter()
                .map(|(id, _)| id.to_string())
                .collect()
        };
        // Undated before dated, equal times by id; only pending tasks whose dependencies
        // are all completed.
        assert_eq!(
            order(None),
            [
                "high_undated",
                "high_a",
                "high_b",
                "high_new",
                "mine",
                "mid_old",
                "mid_new",
                "no_priority",
                "unblocked",
                "low_old",
                "needs_rust",
            ]
        );
        let a1 = agent(r#"{"agent_id": "a1", "capabilities": ["rust"]}"#);
        let a2 = agent(r#"{"agent_id": "a2"}"#);
        assert_eq!(
            order(Some(&a1)),
            [
                "high_undated",
                "high_a",
                "high_b",
                "high_new",
                "mid_old",
                "mid_new",
                "no_priority",
                "unblocked",
                "low_old",
                "needs_rust",
            ]
        );
        assert_eq!(
            order(Some(&a2)),
            [
                "high_undated",
                "high_a",
                "high_b",
                "high_new",
                "mine",
                "mid_old",
                "mid_new",
                "no_priority",
                "unblocked",
                "low_old",
            ]
        );
        // An unknown priority is not read as some other: the task file is refused, named.
        let odd = Task::from_doc(&task_doc(r#"{"task_id": "odd", "priority": "urgent"}"#));
        let message = odd.unwrap_err().message;
        assert!(
            message.contains("tasks/odd.json priority") && message.contains("high, medium, low"),
            "{message}"
        );
    }

    #[test]
    fn entry_names_sort_as_the_queue_orders_tasks() {
        let old = r#""created_at": "2026-11-23T09:00:00Z""#;
        let new = r#""created_at": "2026-11-23T10:00:00.5Z""#;
        let pre_epoch = r#""created_at": "1960-01-01T00:00:00Z""#;
        let all = tasks(&[
            ("low_old", &format!(r#""priority": "low", {old}"#)),
            ("mid_new", &format!(r#""priority": "medium", {new}"#)),
            ("mid_old", &format!(r#""priority": "medium", {old}"#)),
            ("mid_1960", &format!(r#""priority": "medium", {pre_epoch}"#)),
            ("high_new", &format!(r#""priority": "high", {new}"#)),
            ("high_undated", r#""priority": "high""#),
            ("a", &format!(r#""priority": "high", {old}"#)),
            ("a-b", &format!(r#""priority": "high", {old}"#)),
            ("a.b", &format!(r#""priority": "high", {old}"#)),
            ("mine", &format!(r#""assigned_to": "a1", {old}"#)),
        ]);
        // Every pending task with its dependencies done is ready, so the rule's order is
        // the order of all of them; the names must sort the same way.
        let by_rule: Vec<&str> = ready(&all, None, &perms(None))
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let mut names: Vec<String> = all
            .iter()
            .map(|(id, t)| entry_name(id, t).unwrap())
            .collect();
        names.sort();
        let by_name: Vec<&str> = names.iter().map(|n| parse_entry(n).unwrap().task).collect();
        assert_eq!(by_name, by_rule);
    }

    #[test]
    fn entries_name_pending_tasks_and_read_back() {
        let long_agent = "x".repeat(128);
        // (why, id, task fields, entry read back as (task, assignee); None: no entry)
        #[rustfmt::skip]
        let rows: &[(&str, &str, String, Option<(&str, Option<&str>)>)] = &[
            ("pending, unassigned", "t1", String::new(), Some(("t1", None))),
            ("pending, assigned", "t1", r#""assigned_to": "a1""#.into(), Some(("t1", Some("a1")))),
            ("blocked tasks are pending too", "t1", r#""dependencies": ["t0"]"#.into(), Some(("t1", None))),
            ("in progress", "t1", r#""status": "in_progress""#.into(), None),
            ("completed", "t1", r#""status": "completed""#.into(), None),
            ("failed", "t1", r#""status": "failed""#.into(), None),
            ("an assignee no agent can be", "t1", r#""assigned_to": "../x""#.into(), None),
            ("a name past 255 bytes drops the assignee", &"t".repeat(128),
             format!(r#""created_at": "2026-11-23T09:00:00Z", "assigned_to": "{long_agent}""#),
             Some((&"t".repeat(128), None))),
        ];
        for (why, id, fields, expected) in rows {
            let t = &tasks(&[(id, fields)])[*id];
            let name = entry_name(id, t);
            let read = name.as_deref().map(|n| {
                let e = parse_entry(n).unwrap_or_else(|| panic!("{why}: {n} does not read"));
                (e.task, e.assignee)
            });
            assert_eq!(read, *expected, "{why}: {name:?}");
            if let Some(n) = &name {
                assert!(crate::store::ready::is_entry_name(n), "{why}: {n}");
            }
        }
        // Anything else is not an entry.
        for odd in [
            "",
            "x",
            "1",
            "10",
            "10-+",
            "10-.t+",
            "1x-t+",
            "10-t",
            "9abc-t+",
            "10-t+../a",
        ] {
            assert_eq!(parse_entry(odd), None, "{odd:?}");
        }
    }

    #[test]
    fn a_claim_judges_each_entry_against_its_task() {
        let a1 = agent(r#"{"agent_id": "a1", "capabilities": ["rust"]}"#);
        let all = tasks(&[
            ("t1", ""),
            ("dep_done", r#""status": "completed""#),
            ("dep_open", ""),
            ("waits", r#""dependencies": ["dep_open"]"#),
            ("free", r#""dependencies": ["dep_done"]"#),
            ("missing_dep", r#""dependencies": ["nowhere"]"#),
            ("theirs", r#""assigned_to": "a2""#),
            ("needs_go", r#""required_capabilities": ["go"]"#),
            ("running", r#""status": "in_progress""#),
        ]);
        let name = |id: &str| entry_name(id, &all[id]).unwrap_or_else(|| format!("10-{id}+"));
        // (why, task id, entry name, task as read, outcome)
        #[rustfmt::skip]
        let rows: Vec<(&str, &str, String, Option<&Task>, Candidate)> = vec![
            ("ready and eligible", "t1", name("t1"), Some(&all["t1"]), Candidate::Take),
            ("its dependency is done", "free", name("free"), Some(&all["free"]), Candidate::Take),
            ("its dependency is open", "waits", name("waits"), Some(&all["waits"]), Candidate::Skip),
            ("its dependency is missing", "missing_dep", name("missing_dep"), Some(&all["missing_dep"]), Candidate::Skip),
            ("another agent's", "theirs", name("theirs"), Some(&all["theirs"]), Candidate::Skip),
            ("a capability missing", "needs_go", name("needs_go"), Some(&all["needs_go"]), Candidate::Skip),
            ("no such task file", "t1", name("t1"), None, Candidate::Stale),
            ("no longer pending", "running", name("running"), Some(&all["running"]), Candidate::Stale),
            ("the name is another task's", "t1", name("free"), Some(&all["t1"]), Candidate::Stale),
        ];
        for (why, id, entry, task, expected) in rows {
            assert_eq!(
                judge_candidate(&entry, id, task, &all, &a1, &perms(None)),
                expected,
                "{why}"
            );
        }
    }

    #[test]
    fn a_claim_takes_the_best_ready_task() {
        let all = tasks(&[
            ("t1", r#""priority": "low""#),
            ("t2", r#""priority": "high", "attempts": 2"#),
            (
                "t3",
                r#""priority": "high", "assigned_to": "a1", "dependencies": ["t1"]"#,
            ),
        ]);
        let assigned = tasks(&[("t9", r#""assigned_to": "a1""#)]);
        let none = tasks(&[("t1", r#""status": "completed""#)]);
        // (why, agent, tasks, claimed task, attempt, queue assigned / refusal)
        #[rustfmt::skip]
        let rows: Vec<(&str, Agent, &BTreeMap<String, Task>, Result<Option<(&str, u64, bool)>, &str>)> = vec![
            ("the best ready task, its next attempt", agent(r#"{"agent_id": "a1", "status": "active"}"#), &all, Ok(Some(("t2", 3, true)))),
            ("assigned by hand: not queue-assigned", agent(r#"{"agent_id": "a1"}"#), &assigned, Ok(Some(("t9", 1, false)))),
            ("nothing ready", agent(r#"{"agent_id": "a1"}"#), &none, Ok(None)),
            ("nothing it may take", agent(r#"{"agent_id": "a2"}"#), &assigned, Ok(None)),
            ("a paused agent", agent(r#"{"agent_id": "a1", "status": "paused"}"#), &all, Err("paused")),
            ("a failed agent", agent(r#"{"agent_id": "a1", "status": "failed"}"#), &all, Err("failed")),
            ("an idle agent may claim", agent(r#"{"agent_id": "a1", "status": "idle"}"#), &all, Ok(Some(("t2", 3, true)))),
        ];
        for (why, a, all, expected) in rows {
            let d = decide_claim(&a, all, &perms(None));
            let got = match &d {
                ClaimDecision::Refused(s) => Err(s.as_str()),
                ClaimDecision::NothingReady => Ok(None),
                ClaimDecision::Claim {
                    id,
                    task,
                    attempt,
                    queue_assigned,
                } => {
                    assert_eq!(*id, task.task_id);
                    Ok(Some((*id, *attempt, *queue_assigned)))
                }
            };
            assert_eq!(got, expected, "{why}");
            assert_eq!(
                claim_refused(&a).map(AgentStatus::as_str),
                expected.err(),
                "{why}: refused"
            );
            assert_eq!(d.event("a1").is_some(), matches!(expected, Ok(Some(_))));
        }
        let a = agent(r#"{"agent_id": "a1"}"#);
        let e = decide_claim(&a, &all, &perms(None)).event("a1").unwrap();
        assert_eq!(
            (
                e.level,
                e.kind.as_str(),
                e.message.as_str(),
                e.agent.as_deref(),
                e.task.as_deref(),
                e.details
            ),
            (
                Level::Info,
                "task.claimed",
                "a1 claimed task t2 (attempt 3)",
                Some("a1"),
                Some("t2"),
                json!({"attempt": 3})
            )
        );
    }

    #[test]
    fn max_retries_comes_from_the_policy() {
        // (policies.json, max_retries)
        let rows: &[(&str, u64)] = &[
            ("{}", 3),
            (r#"{"max_retries": 5}"#, 5),
            (r#"{"max_retries": 1}"#, 1),
            (r#"{"max_retries": 0}"#, 1),
            (r#"{"max_retries": -2}"#, 3),
            (r#"{"max_retries": 2.5}"#, 3),
            (r#"{"max_retries": "many"}"#, 3),
        ];
        for &(json, max) in rows {
            let p = crate::ops::policy::of_file(json);
            assert_eq!(p.max_retries(), max, "{json}");
        }
    }

    #[test]
    fn a_failed_task_is_requeued_until_max_retries() {
        let task = |attempts, queue_assigned| ClaimedTask {
            attempts,
            queue_assigned,
        };
        let requeue = |attempts, max_retries, unassign| FailDecision::Requeue {
            attempts,
            max_retries,
            unassign,
        };
        let fail = |attempts, max_retries| FailDecision::Fail {
            attempts,
            max_retries,
        };
        // (why, task, max_retries, decision)
        #[rustfmt::skip]
        let rows: &[(&str, ClaimedTask, u64, FailDecision)] = &[
            ("first of three", task(1, true), 3, requeue(1, 3, true)),
            ("second of three", task(2, true), 3, requeue(2, 3, true)),
            ("third of three: for good", task(3, true), 3, fail(3, 3)),
            ("past max_retries (lowered since)", task(4, false), 3, fail(4, 3)),
            ("assigned by hand stays assigned", task(1, false), 3, requeue(1, 3, false)),
            ("one attempt allowed", task(1, true), 1, fail(1, 1)),
            ("first of two", task(1, true), 2, requeue(1, 2, true)),
            ("second of two", task(2, true), 2, fail(2, 2)),
        ];
        for &(why, t, max, decision) in rows {
            let d = decide_fail(&t, max);
            assert_eq!(d, decision, "{why}");
            assert_eq!(
                d.requeued(),
                matches!(decision, FailDecision::Requeue { .. })
            );
        }
        // The fields as the task file has them.
        #[rustfmt::skip]
        let rows: &[(&str, ClaimedTask)] = &[
            (r#"{"attempts": 2, "queue_assigned": true}"#, task(2, true)),
            ("{}", task(1, false)),
        ];
        for &(json, t) in rows {
            assert_eq!(ClaimedTask::of(&self::task(json)), t, "{json}");
        }
        // A flag that is not a boolean is not read as false: the file is refused, named.
        let odd = Task::from_doc(&task_doc(r#"{"queue_assigned": "yes"}"#));
        assert!(odd.unwrap_err().message.contains("queue_assigned"));
        let e = requeue(1, 2, true).event("t1", "flaky test", Some("a1"));
        assert_eq!(
            (
                e.level,
                e.kind.as_str(),
                e.message.as_str(),
                e.agent.as_deref(),
                e.details
            ),
            (
                Level::Warn,
                "task.requeued",
                "task t1 failed (attempt 1 of 2): flaky test; back in the queue",
                Some("a1"),
                json!({"reason": "flaky test", "attempts": 1, "max_retries": 2})
            )
        );
        let e = fail(2, 2).event("t1", "again", None);
        assert_eq!(
            (
                e.level,
                e.kind.as_str(),
                e.message.as_str(),
                e.agent.as_deref(),
                e.task.as_deref()
            ),
            (
                Level::Error,
                "task.failed",
                "task t1 failed for good after 2 attempt(s): again",
                None,
                Some("t1")
            )
        );
    }

    #[test]
    fn a_running_task_past_its_timeout_is_reaped() {
        let running = |timeout: Option<f64>| TaskClock {
            in_progress: true,
            started_at: Some(t0()),
            timeout,
        };
        // (why, task, seconds after its start, decision)
        #[rustfmt::skip]
        let rows: &[(&str, TaskClock, f64, ReapDecision)] = &[
            ("within its timeout", running(Some(60.0)), 30.0, ReapDecision::Within),
            ("the timeout itself", running(Some(60.0)), 60.0, ReapDecision::Within),
            ("past its timeout", running(Some(60.0)), 60.001, ReapDecision::TimedOut),
            ("long past", running(Some(60.0)), 120.0, ReapDecision::TimedOut),
            ("no timeout", running(None), 1e6, ReapDecision::NoTimeout),
            ("a zero timeout is none", running(Some(0.0)), 1e6, ReapDecision::NoTimeout),
            ("a negative timeout is none", running(Some(-1.0)), 1e6, ReapDecision::NoTimeout),
            ("no start time", TaskClock { started_at: None, ..running(Some(60.0)) }, 1e6, ReapDecision::NoTimeout),
            ("not running", TaskClock { in_progress: false, ..running(Some(60.0)) }, 1e6, ReapDecision::NotRunning),
        ];
        for &(why, t, secs, decision) in rows {
            assert_eq!(decide_reap(&t, at(secs)), decision, "{why}");
        }
        assert_eq!(
            TaskClock::of(&task(
                r#"{"status": "in_progress", "started_at": "2026-11-23T10:00:00Z", "timeout": 60}"#
            )),
            running(Some(60.0))
        );
        assert_eq!(
            TaskClock::of(&task(r#"{"status": "pending", "timeout": null}"#)),
            TaskClock::default()
        );
        // A start time that is not one is not read as none: the file is refused, named.
        let odd = Task::from_doc(&task_doc(r#"{"started_at": "later"}"#));
        assert!(odd.unwrap_err().message.contains("started_at"));
    }
}
