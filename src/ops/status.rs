//! The fleet at a glance: per-cell views of agents (with health) and tasks, the
//! monitoring verdict of `pas check`, and the Prometheus exposition of `pas metrics`.
//!
//! Only active cells are judged: a paused or finished cell's silent agents are expected.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::clock;
use crate::error::{Error, Result};
use crate::model::field::Record as _;
use crate::model::{AgentStatus, Cell, CellStatus, ReportedStatus, Role, Task, TaskStatus};
use crate::ops::budget::State;
use crate::ops::health::Health;
use crate::ops::heartbeat::{self, Observed};
use crate::ops::policy;
use crate::ops::supervisor::ProcState;
use crate::ops::task::{self, State as TaskState};
use crate::store::events;
use crate::store::{self, Collection, FileKey, LogFile, Store};

/// One agent in a status view.
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    /// The agent's id.
    pub id: String,
    /// Its readable name.
    pub name: Option<String>,
    /// Its role.
    pub role: Role,
    /// Its gateway.
    pub gateway: Option<String>,
    /// Its capabilities.
    pub capabilities: Vec<String>,
    /// The recorded status (`idle`, `active`, `paused`, `failed`).
    pub status: AgentStatus,
    /// Health now.
    pub health: Health,
    /// Seconds since the last beat.
    pub heartbeat_age_seconds: Option<f64>,
    /// The last beat.
    pub last_heartbeat: Option<String>,
    /// Beats so far.
    pub heartbeat_count: u64,
    /// What the agent reported (`ACTIVE`, `DEGRADED`, `OFFLINE`).
    pub reported_status: Option<ReportedStatus>,
    /// Reported progress, 0 to 1.
    pub progress: Option<f64>,
    /// Context tokens in use.
    pub ctx_used: Option<u64>,
    /// Context window size.
    pub ctx_limit: Option<u64>,
    /// The task it works on.
    pub current_task: Option<String>,
    /// When its health changes next without a beat.
    pub next_change: Option<DateTime<Utc>>,
    /// Where its process is (`running`, `exited`, `vanished`; `null` when pas never
    /// started it).
    pub process: ProcState,
    /// Its process id, while it runs.
    pub pid: Option<i32>,
    /// Seconds its process has run, while it runs.
    pub uptime_seconds: Option<f64>,
    /// Where it is in its life as a process manager tells it: `running`, `backoff` (a
    /// restart is waiting), `crashloop` (resting after a restart storm), `approval` (a
    /// revival waits for an operator), `exited` (meant to run, not running), `stopped`,
    /// `paused`, `failed`; `null` when pas never started it.
    pub state: Option<RunState>,
    /// Seconds until its next restart (0: due now), while it backs off or rests.
    pub next_restart_in_seconds: Option<f64>,
    /// Restarts so far.
    pub restart_count: u64,
    /// Restarts in a row (toward `max_restarts`).
    pub restart_attempts: u64,
    /// When the next restart is allowed, when it is backing off.
    pub next_restart_at: Option<String>,
    /// Until when it cools down after a restart storm.
    pub cooldown_until: Option<String>,
    /// The waits before the next restarts, in seconds, by policy (up to `max_restarts`).
    pub backoff_schedule: Vec<f64>,
    /// The context budget state (`ok`, `warning`, `breach`).
    pub ctx_state: Option<State>,
    /// The context ratios of `warning` and `breach` by policy (for bars; not in `--json`).
    #[serde(skip)]
    pub ctx_thresholds: (f64, f64),
    /// Money spent.
    pub cost_usd: Option<f64>,
    /// Tokens used.
    pub tokens_used: Option<f64>,
    /// What its process tree uses, while it runs on this host (`crate::usage`: CPU
    /// percent since it started); left out otherwise (10,000 stopped agents print nothing
    /// more).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::usage::Usage>,
    /// Its cell's quota (`config/isolation.json` `resource_limits`: cpu cores,
    /// memory bytes, gpu, gpu_memory bytes; `null` for no limit), while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell_quota: Option<Limits>,
    /// What its active reservations hold (same units), while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved: Option<Reserved>,
    /// Its process's start time (to tell a reused pid), for reading its usage.
    #[serde(skip)]
    pub pid_start_time: Option<u64>,
    /// The limits in force on its process and how they are enforced (its file's
    /// `limits`); `null` when none were set at its last start.
    pub limits: Option<serde_json::Value>,
}

/// An agent's place in its life, as a process manager shows it (`pas status` STATE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Its process runs.
    Running,
    /// Meant to run; a restart waits for its backoff delay.
    Backoff,
    /// Meant to run; resting after a restart storm before it is tried again.
    Crashloop,
    /// Meant to run; its revival waits for an operator (`auto_revive: ask`).
    Approval,
    /// Meant to run, not running, and no restart planned yet.
    Exited,
    /// Not meant to run, and not running (stopped, or finished).
    Stopped,
    /// Paused by an operator.
    Paused,
    /// pas gave up on it.
    Failed,
}

impl RunState {
    /// The spelling everywhere.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Backoff => "backoff",
            RunState::Crashloop => "crashloop",
            RunState::Approval => "approval",
            RunState::Exited => "exited",
            RunState::Stopped => "stopped",
            RunState::Paused => "paused",
            RunState::Failed => "failed",
        }
    }

    /// The state of `agent` whose process is `process`, at `now`, with the seconds until
    /// its next restart when one waits.
    pub fn of(
        agent: &crate::model::Agent,
        process: ProcState,
        now: DateTime<Utc>,
    ) -> (Option<RunState>, Option<f64>) {
        let until = |t: DateTime<Utc>| ((t - now).num_milliseconds() as f64 / 1000.0).max(0.0);
        if agent.status == AgentStatus::Failed {
            return (Some(RunState::Failed), None);
        }
        if process == ProcState::Running {
            return (Some(RunState::Running), None);
        }
        if agent.status == AgentStatus::Paused {
            return (Some(RunState::Paused), None);
        }
        if let Some(t) = agent.cooldown_until.filter(|t| *t > now) {
            return (Some(RunState::Crashloop), Some(until(t)));
        }
        if agent.status == AgentStatus::Active {
            if let Some(t) = agent.next_restart_at {
                return (Some(RunState::Backoff), Some(until(t)));
            }
            if agent.revive_request.as_ref().is_some_and(|r| !r.approved) {
                return (Some(RunState::Approval), None);
            }
        }
        match process {
            ProcState::None => (None, None),
            _ if agent.status == AgentStatus::Active => (Some(RunState::Exited), None),
            _ => (Some(RunState::Stopped), None),
        }
    }
}

impl AgentView {
    /// The view of `o`, its strings copied rather than moved out: made after the whole
    /// cell was read, they sit together instead of between the freed parts of each agent
    /// file, which matters where views pile up (`pas check` peaked at 2.4 times the memory).
    fn from_observed(o: &Observed, schedule: &[f64], now: DateTime<Utc>) -> AgentView {
        let (a, policy) = (&o.agent, &o.policy);
        let ctx = crate::ops::budget::context_state(a.ctx_used, a.ctx_limit, policy);
        let process = crate::ops::supervisor::state_of(a);
        let running = process == ProcState::Running;
        let (state, next_restart_in_seconds) = RunState::of(a, process, now);
        let pid = a.pid.filter(|_| running);
        let uptime_seconds = a
            .started_at
            .filter(|_| running)
            .map(|t| ((now - t).num_milliseconds() as f64 / 1000.0).max(0.0));
        AgentView {
            id: a.agent_id.clone(),
            name: a.name.clone(),
            role: a.role,
            gateway: a.gateway.clone(),
            capabilities: a.capabilities.clone(),
            status: a.status,
            health: o.assessment.health,
            heartbeat_age_seconds: o.assessment.age.map(|a| (a * 1000.0).round() / 1000.0),
            last_heartbeat: a.last_heartbeat.map(clock::stamp),
            heartbeat_count: a.heartbeat_count,
            reported_status: a.reported_status,
            progress: a.progress,
            ctx_used: a.ctx_used,
            ctx_limit: a.ctx_limit,
            current_task: a.current_task.clone(),
            next_change: o.assessment.next_change,
            process,
            pid,
            uptime_seconds,
            state,
            next_restart_in_seconds,
            restart_count: a.restart_count,
            restart_attempts: a.restart_attempts,
            next_restart_at: a.next_restart_at.map(clock::stamp),
            cooldown_until: a.cooldown_until.map(clock::stamp),
            backoff_schedule: schedule.to_vec(),
            ctx_state: ctx.map(|c| c.0),
            ctx_thresholds: crate::ops::budget::context_thresholds(policy),
            cost_usd: a.cost_usd,
            tokens_used: a.tokens_used,
            usage: None,
            cell_quota: None,
            reserved: None,
            pid_start_time: a.pid_start_time.filter(|_| running),
            limits: a.limits.as_ref().map(crate::model::Field::encode),
        }
    }
}

/// Resource facts of a cell, for its running agents: limits and active reservations.
struct CellResources {
    limits: [Option<f64>; 4],
    active: Vec<crate::model::Reservation>,
}

impl CellResources {
    fn read(store: &dyn Store, cell: &str) -> Result<CellResources> {
        use crate::ops::reservation;
        let isolation = store.read(cell, FileKey::Config(crate::store::ConfigFile::Isolation))?;
        Ok(CellResources {
            limits: reservation::capacity(isolation.as_ref()).unwrap_or([None; 4]),
            active: reservation::list(store, cell, Some(crate::model::ReservationStatus::Active))
                .unwrap_or_default(),
        })
    }

    /// The limits and what `agent` holds, by resource name.
    fn of(&self, agent: &str) -> (Limits, Reserved) {
        use crate::ops::reservation::{self, RESOURCES};
        let held = reservation::held(self.active.iter().filter(|r| r.agent == agent));
        (
            RESOURCES
                .iter()
                .zip(self.limits)
                .map(|((k, _, _), v)| (*k, v))
                .collect(),
            RESOURCES
                .iter()
                .zip(held)
                .map(|((k, _, _), v)| (*k, v))
                .collect(),
        )
    }
}

/// Limits by resource name (`None`: no limit).
pub type Limits = BTreeMap<&'static str, Option<f64>>;
/// Reserved amounts by resource name.
pub type Reserved = BTreeMap<&'static str, f64>;

/// The last cell's process trees and the host's units (read once per view).
type ProcView = Option<(crate::usage::Snapshot, crate::usage::Host)>;

/// The process trees of `roots`, with the host's units (`None`: no `/proc`).
fn proc_view(roots: &[i32]) -> ProcView {
    crate::usage::Snapshot::trees_of(roots)
        .ok()
        .map(|s| (s, crate::usage::Host::read()))
}

/// Fills in usage, limits and reservations of the agents of a cell that run on this host.
/// `/proc` is read only for the process trees of those agents (the host's units once per
/// view, kept in `snap`), and the cell's isolation and reservations only when one runs: a
/// fleet of stopped agents costs nothing more.
fn attach_usage(
    store: &dyn Store,
    cell: &str,
    agents: &mut [AgentView],
    snap: &mut ProcView,
) -> Result<()> {
    let roots: Vec<i32> = agents.iter().filter_map(|a| a.pid).collect();
    if roots.is_empty() {
        return Ok(());
    }
    // One read of the cell's trees; the host's units once per view.
    let host = match snap {
        Some((_, host)) => *host,
        None => crate::usage::Host::read(),
    };
    let Ok(trees) = crate::usage::Snapshot::trees_of(&roots) else {
        return Ok(()); // no /proc: nothing to show
    };
    let (snap, host) = &*snap.insert((trees, host));
    let facts = CellResources::read(store, cell)?;
    for a in agents.iter_mut() {
        let Some(pid) = a.pid else { continue };
        a.usage = snap.usage_of(pid, a.pid_start_time, host);
        let (limits, reserved) = facts.of(&a.id);
        a.cell_quota = Some(limits);
        a.reserved = Some(reserved);
    }
    Ok(())
}

/// What one running agent (`pid`, started at `start`) uses, with its limits and what it
/// has reserved.
pub fn agent_resources(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    pid: i32,
    start: Option<u64>,
) -> Result<(Option<crate::usage::Usage>, Limits, Reserved)> {
    let usage = proc_view(&[pid]).and_then(|(snap, host)| snap.usage_of(pid, start, &host));
    let (limits, reserved) = CellResources::read(store, cell)?.of(agent);
    Ok((usage, limits, reserved))
}

/// The waits before the next restarts, in seconds, by policy (up to `max_restarts`, at
/// most 8).
fn backoff_schedule(policy: &crate::ops::policy::Policy) -> Vec<f64> {
    let max = policy.max_restarts();
    let n = if max == 0 { 5 } else { max.min(8) };
    (1..=n)
        .map(|k| crate::ops::revive::rules::backoff_delay(policy, k))
        .collect()
}

/// Tasks of a cell by state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskCounts {
    /// All tasks.
    pub total: usize,
    /// Completed.
    pub completed: usize,
    /// Pending, all dependencies done.
    pub pending: usize,
    /// Pending on unfinished dependencies.
    pub blocked: usize,
    /// Claimed.
    pub in_progress: usize,
    /// Failed for good.
    pub failed: usize,
}

impl TaskCounts {
    /// Counts `tasks` by the state they are shown in ([`task::state`]).
    fn of(tasks: &BTreeMap<String, Task>) -> TaskCounts {
        let mut counts = TaskCounts {
            total: tasks.len(),
            ..TaskCounts::default()
        };
        for t in tasks.values() {
            match task::state(t, tasks) {
                TaskState::Status(TaskStatus::Completed) => counts.completed += 1,
                TaskState::Status(TaskStatus::InProgress) => counts.in_progress += 1,
                TaskState::Status(TaskStatus::Failed) => counts.failed += 1,
                TaskState::Status(TaskStatus::Pending) => counts.pending += 1,
                TaskState::Blocked => counts.blocked += 1,
            }
        }
        counts
    }
}

/// One cell in a status view.
#[derive(Debug, Clone, Serialize)]
pub struct CellView {
    /// The cell's id (directory name).
    pub id: String,
    /// `mission_name`.
    pub name: String,
    /// The cell's status.
    pub status: CellStatus,
    /// Its agents.
    pub agents: Vec<AgentView>,
    /// Agents by health.
    pub health_counts: BTreeMap<String, usize>,
    /// Tasks by state.
    pub tasks: TaskCounts,
    /// Seconds the cell has run (from `activated_at`, else `created_at`).
    pub time_used: Option<f64>,
    /// The cell's time budget in seconds.
    pub timeout: Option<f64>,
    /// Files that could not be read.
    pub problems: Vec<String>,
}

/// Builds a cell's view at `now`; with `record`, health changes are recorded as events.
pub fn cell_view(
    store: &dyn Store,
    cell: &str,
    record: bool,
    now: DateTime<Utc>,
) -> Result<CellView> {
    cell_view_sharing(store, cell, record, now, &mut None)
}

/// [`cell_view`] reading `/proc` at most once for all the cells that share `snap`.
fn cell_view_sharing(
    store: &dyn Store,
    cell: &str,
    record: bool,
    now: DateTime<Utc>,
    snap: &mut ProcView,
) -> Result<CellView> {
    // Typed straight from its text when it reads that way, else as a document (whose error
    // names the problem).
    let read_cell = || match store.read_bytes(cell, FileKey::Cell)? {
        Some(bytes) => match Cell::from_text(&bytes) {
            Some(c) => Ok(c),
            None => Cell::from_doc(&store.parse_doc(cell, FileKey::Cell, &bytes)?),
        },
        None => Cell::from_doc(&store::read_required(store, cell, FileKey::Cell)?),
    };
    let mut cell_doc = read_cell()?;
    if record && crate::ops::budget::enforce_time(store, cell, &cell_doc, now)? {
        cell_doc = read_cell()?;
    }
    let status = cell_doc.status;
    let file = policy::read_file_layer(store, cell)?;
    let (observed, errors) = heartbeat::observe_cell(
        store,
        cell,
        &cell_doc,
        file.as_ref(),
        record && status == CellStatus::Active,
        now,
    )?;
    let mut problems: Vec<String> = errors.into_iter().map(|e| e.message).collect();
    let mut schedules: Vec<(Arc<crate::ops::policy::Policy>, Vec<f64>)> = Vec::new();
    let mut agents: Vec<AgentView> = observed
        .iter()
        .map(|o| {
            // Agents sharing the cell's policy share its schedule: computed once per policy.
            let schedule = match schedules.iter().find(|(p, _)| Arc::ptr_eq(p, &o.policy)) {
                Some((_, s)) => s,
                None => {
                    schedules.push((Arc::clone(&o.policy), backoff_schedule(&o.policy)));
                    &schedules[schedules.len() - 1].1
                }
            };
            AgentView::from_observed(o, schedule, now)
        })
        .collect();
    attach_usage(store, cell, &mut agents, snap)?;
    let (time_used, timeout) = crate::ops::budget::cell_time(&cell_doc, now);
    let mut health_counts = BTreeMap::new();
    for a in &agents {
        *health_counts
            .entry(a.health.as_str().to_string())
            .or_insert(0) += 1;
    }
    let mut tasks = BTreeMap::new();
    // As agents (heartbeat::observe_cell): each task typed straight from its text, and a
    // file that does not read that way read as a document, whose error names the problem.
    let task_of = |id: &str, bytes: Vec<u8>| match Task::from_text(&bytes) {
        Some(t) => Ok(t),
        None => {
            let key = FileKey::Task(id);
            Task::from_doc_at(&store.parse_doc(cell, key, &bytes)?, &key.relative())
        }
    };
    for (id, bytes) in store.read_collection_bytes(cell, Collection::Tasks)? {
        match bytes.and_then(|b| task_of(&id, b)) {
            Ok(t) => {
                tasks.insert(id, t);
            }
            Err(e) => problems.push(e.message),
        }
    }
    Ok(CellView {
        id: cell.to_string(),
        name: cell_doc.mission_name,
        status,
        agents,
        health_counts,
        tasks: TaskCounts::of(&tasks),
        time_used,
        timeout,
        problems,
    })
}

/// Views of every cell; cells that cannot be read are returned as errors.
pub fn root_views(
    store: &(dyn Store + Sync),
    record: bool,
    now: DateTime<Utc>,
) -> Result<(Vec<CellView>, Vec<Error>)> {
    let mut views = Vec::new();
    let mut errors = Vec::new();
    each_root_view(store, record, now, |view| match view {
        Ok(v) => views.push(v),
        Err(e) => errors.push(e),
    })?;
    Ok((views, errors))
}

/// [`root_views`] one cell at a time: `each` is given every cell's view, or the error of a
/// cell that cannot be read, in the cells' order, and nothing is kept (`pas check` of
/// 100,000 agents held them all: 109 MB).
pub fn each_root_view(
    store: &(dyn Store + Sync),
    record: bool,
    now: DateTime<Utc>,
    mut each: impl FnMut(Result<CellView>),
) -> Result<()> {
    let ids = store.cell_ids()?;
    with_views(store, &ids, record, now, |views| views.for_each(&mut each));
    Ok(())
}

/// Cells of a batch, for [`with_views`].
const BATCH: usize = 16;
/// Batches the workers of [`with_views`] may have ready before the consumer takes them.
const AHEAD: usize = 8;
/// Fewer cells than this are viewed on the calling thread alone.
const PARALLEL_FROM: usize = 64;

/// Views of the cells `ids` handed to `consume` in order, as it asks for them, and what it
/// returns. From [`PARALLEL_FROM`] cells on they are built by worker threads (one per CPU,
/// at most 8, or `$PAS_VIEW_THREADS`) a batch of [`BATCH`] cells at a time, at most
/// [`AHEAD`] batches ahead of `consume`, so reading files overlaps with rendering and with
/// itself, and memory stays that of a few batches whatever the fleet. Health changes are
/// recorded (`record`) each in its own cell's transaction, as on one thread.
pub fn with_views<R>(
    store: &(dyn Store + Sync),
    ids: &[String],
    record: bool,
    now: DateTime<Utc>,
    consume: impl FnOnce(&mut dyn Iterator<Item = Result<CellView>>) -> R,
) -> R {
    // (Asked only of a large root: the CPU count comes from the cgroup's files.)
    let workers = if ids.len() < PARALLEL_FROM {
        1
    } else {
        view_threads()
    };
    if workers < 2 {
        let mut snap = None;
        let mut views = ids
            .iter()
            .map(|id| cell_view_sharing(store, id, record, now, &mut snap));
        return consume(&mut views);
    }
    let batches: Vec<&[String]> = ids.chunks(BATCH).collect();
    let shared = Shared {
        next: std::sync::atomic::AtomicUsize::new(0),
        state: std::sync::Mutex::new(Progress::default()),
        changed: std::sync::Condvar::new(),
    };
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut snap = None;
                loop {
                    let i = shared
                        .next
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= batches.len() || !shared.wait_for_room(i) {
                        return;
                    }
                    let build = || -> Vec<Result<CellView>> {
                        batches[i]
                            .iter()
                            .map(|id| cell_view_sharing(store, id, record, now, &mut snap))
                            .collect()
                    };
                    // A worker that panics (a bug) still hands in its batch, so the
                    // consumer never waits for it.
                    let views = std::panic::catch_unwind(std::panic::AssertUnwindSafe(build))
                        .unwrap_or_else(|_| {
                            vec![Err(Error::failure(format!(
                                "viewing cells {}... failed (a pas bug; see the message above)",
                                batches[i].first().map_or("", String::as_str)
                            )))]
                        });
                    shared.hand_in(i, views);
                }
            });
        }
        let mut ordered = Ordered {
            shared: &shared,
            batches: batches.len(),
            index: 0,
            current: Vec::new().into_iter(),
        };
        let out = consume(&mut ordered);
        shared.stop();
        out
    })
}

/// The variable that sets how many threads read cells in [`with_views`].
pub const VIEW_THREADS_ENV: &str = "PAS_VIEW_THREADS";

/// Threads that read cells: `$PAS_VIEW_THREADS` when it is a number from 1 to 64, else one
/// per CPU this process may run on, at most 8.
fn view_threads() -> usize {
    match std::env::var(VIEW_THREADS_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        Some(n) if (1..=64).contains(&n) => n,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
    }
}

/// What the workers of [`with_views`] and its consumer share.
struct Shared {
    /// The next batch a worker takes.
    next: std::sync::atomic::AtomicUsize,
    state: std::sync::Mutex<Progress>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct Progress {
    /// Batches built and not yet taken, by index.
    done: BTreeMap<usize, Vec<Result<CellView>>>,
    /// Batches the consumer has taken.
    taken: usize,
    /// The consumer is done: workers stop.
    stop: bool,
}

impl Shared {
    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        // A poisoned lock only means a thread panicked while holding it; the counts it
        // guards are whole (each change is one assignment or one insert).
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until batch `i` is within [`AHEAD`] of the consumer; false when it stopped.
    fn wait_for_room(&self, i: usize) -> bool {
        let mut p = self.progress();
        while !p.stop && i >= p.taken + AHEAD {
            p = self
                .changed
                .wait(p)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        !p.stop
    }

    fn hand_in(&self, i: usize, views: Vec<Result<CellView>>) {
        self.progress().done.insert(i, views);
        self.changed.notify_all();
    }

    fn stop(&self) {
        self.progress().stop = true;
        self.changed.notify_all();
    }
}

/// The views of [`with_views`]'s batches, in order.
struct Ordered<'a> {
    shared: &'a Shared,
    batches: usize,
    /// The next batch to take.
    index: usize,
    current: std::vec::IntoIter<Result<CellView>>,
}

impl Iterator for Ordered<'_> {
    type Item = Result<CellView>;

    fn next(&mut self) -> Option<Result<CellView>> {
        loop {
            if let Some(v) = self.current.next() {
                return Some(v);
            }
            if self.index >= self.batches {
                return None;
            }
            // Batch `index` is always being built: workers take batches in order, and one
            // within AHEAD of what was taken never waits for room.
            let mut p = self.shared.progress();
            let batch = loop {
                if let Some(b) = p.done.remove(&self.index) {
                    break b;
                }
                p = self
                    .shared
                    .changed
                    .wait(p)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            };
            self.index += 1;
            p.taken = self.index;
            drop(p);
            self.shared.changed.notify_all();
            self.current = batch.into_iter();
        }
    }
}

/// The verdict of `pas check`, in the Nagios plugin convention.
#[derive(Debug, Clone, Serialize)]
pub struct CheckOutcome {
    /// 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    pub code: u8,
    /// `OK`, `WARNING`, `CRITICAL` or `UNKNOWN`.
    pub state: &'static str,
    /// The one-line summary (with perfdata after `|`).
    pub line: String,
}

fn state_name(code: u8) -> &'static str {
    match code {
        0 => "OK",
        1 => "WARNING",
        2 => "CRITICAL",
        _ => "UNKNOWN",
    }
}

/// Whether `pas check` judges an agent: one meant to run (`active`) or given up on
/// (`failed`). One stopped, finished (`idle`) or `paused` on purpose is no problem.
fn judged(status: AgentStatus) -> bool {
    matches!(status, AgentStatus::Active | AgentStatus::Failed)
}

/// Judges the views: the worst health of an agent meant to run (or failed) in an active
/// cell decides; a document that could not be read (an agent pas cannot look after) makes
/// it at least CRITICAL, and a cell that could not be opened (or a root that cannot) makes
/// it UNKNOWN. A root without cells is OK and says so.
pub fn check(views: &[CellView], errors: &[Error]) -> CheckOutcome {
    let mut tally = CheckTally::default();
    for v in views {
        tally.add(v);
    }
    tally.outcome(errors)
}

/// The verdict of [`check`] gathered one view at a time, so that a view can be dropped once
/// it is counted.
#[derive(Debug, Default)]
pub struct CheckTally {
    counts: BTreeMap<Health, usize>,
    worst: u8,
    named: Vec<String>,
    judged_agents: usize,
    not_judged: usize,
    cells: usize,
    active_cells: usize,
    problems: Vec<String>,
}

impl CheckTally {
    /// Counts the agents and problems of one cell's view.
    pub fn add(&mut self, v: &CellView) {
        self.cells += 1;
        self.problems.extend(v.problems.iter().cloned());
        if v.status != CellStatus::Active {
            return;
        }
        self.active_cells += 1;
        for a in &v.agents {
            if !judged(a.status) {
                self.not_judged += 1;
                continue;
            }
            self.judged_agents += 1;
            *self.counts.entry(a.health).or_insert(0) += 1;
            let sev = a.health.severity();
            if sev > 0 {
                self.named
                    .push(format!("{} {}/{}", a.health.as_str(), short(&v.id), a.id));
            }
            self.worst = self.worst.max(sev);
        }
    }

    /// The verdict, with `errors`: the cells that could not be opened (or the root).
    pub fn outcome(mut self, errors: &[Error]) -> CheckOutcome {
        let (judged_agents, not_judged) = (self.judged_agents, self.not_judged);
        let unreadable: Vec<String> = errors
            .iter()
            .map(|e| e.message.clone())
            .chain(self.problems)
            .collect();
        // A cell that cannot be opened cannot be judged (UNKNOWN); a document inside a cell
        // that cannot be read is an agent or task pas cannot look after (CRITICAL).
        let code = if !errors.is_empty() {
            3
        } else if unreadable.is_empty() {
            self.worst
        } else {
            self.worst.max(2)
        };
        let mut perf = format!(
            "cells={} agents={judged_agents} not_judged={not_judged}",
            self.cells
        );
        for h in Health::ALL {
            let _ = write!(
                perf,
                " {}={}",
                h.as_str(),
                self.counts.get(h).copied().unwrap_or(0)
            );
        }
        let summary = if let Some(first) = unreadable.first() {
            format!("cannot read: {first}{}", more(unreadable.len()))
        } else if self.cells == 0 {
            "no cells in the missions root".to_string()
        } else if self.named.is_empty() {
            let skipped = match not_judged {
                0 => String::new(),
                n => format!(" ({n} idle or paused, not judged)"),
            };
            format!(
                "{} active cell(s), {judged_agents} agent(s){skipped}, none late, down or dead",
                self.active_cells
            )
        } else {
            self.named.sort();
            let shown: Vec<&str> = self.named.iter().take(5).map(String::as_str).collect();
            format!("{}{}", shown.join(", "), more_named(self.named.len(), 5))
        };
        CheckOutcome {
            code,
            state: state_name(code),
            line: format!("PAS {} - {summary} | {perf}", state_name(code)),
        }
    }
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

fn more(n: usize) -> String {
    if n > 1 {
        format!(" (and {} more)", n - 1)
    } else {
        String::new()
    }
}

fn more_named(n: usize, shown: usize) -> String {
    if n > shown {
        format!(" (and {} more)", n - shown)
    } else {
        String::new()
    }
}

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Counts of events by level in a cell's log.
pub fn event_counts(store: &dyn Store, cell: &str) -> Result<BTreeMap<&'static str, u64>> {
    let bytes = store.read_log(cell, LogFile::Events, 0)?;
    let mut counts = BTreeMap::new();
    for e in events::parse_all(&bytes) {
        *counts.entry(e.level.as_str()).or_insert(0) += 1;
    }
    Ok(counts)
}

/// The Prometheus text exposition of the views.
pub fn metrics(store: &dyn Store, views: &[CellView], now: DateTime<Utc>) -> Result<String> {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in rows {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
    };
    let cell_labels =
        |v: &CellView| format!("cell=\"{}\",mission=\"{}\"", label(&v.id), label(&v.name));
    family(
        "pas_cell_info",
        "gauge",
        "Cells, with their status as a label (value 1).",
        views
            .iter()
            .map(|v| {
                (
                    format!("{},status=\"{}\"", cell_labels(v), v.status.as_str()),
                    "1".into(),
                )
            })
            .collect(),
    );
    family(
        "pas_agents",
        "gauge",
        "Agents by health.",
        views
            .iter()
            .flat_map(|v| Health::ALL.iter().map(move |h| (v, h)))
            .map(|(v, h)| {
                let n = v.health_counts.get(h.as_str()).copied().unwrap_or(0);
                (
                    format!("{},health=\"{}\"", cell_labels(v), h.as_str()),
                    n.to_string(),
                )
            })
            .collect(),
    );
    family(
        "pas_agent_heartbeat_age_seconds",
        "gauge",
        "Seconds since each agent's last heartbeat (agents that never beat are left out).",
        views
            .iter()
            .flat_map(|v| v.agents.iter().map(move |a| (v, a)))
            .filter_map(|(v, a)| {
                a.heartbeat_age_seconds.map(|age| {
                    (
                        format!("cell=\"{}\",agent=\"{}\"", label(&v.id), label(&a.id)),
                        format!("{age}"),
                    )
                })
            })
            .collect(),
    );
    family(
        "pas_agent_heartbeats_total",
        "counter",
        "Heartbeats each agent has sent.",
        views
            .iter()
            .flat_map(|v| v.agents.iter().map(move |a| (v, a)))
            .map(|(v, a)| {
                (
                    format!("cell=\"{}\",agent=\"{}\"", label(&v.id), label(&a.id)),
                    a.heartbeat_count.to_string(),
                )
            })
            .collect(),
    );
    let running: Vec<(&CellView, &AgentView, &crate::usage::Usage)> = views
        .iter()
        .flat_map(|v| v.agents.iter().map(move |a| (v, a)))
        .filter_map(|(v, a)| a.usage.as_ref().map(|u| (v, a, u)))
        .collect();
    type Pick = fn(&crate::usage::Usage) -> Option<String>;
    let usage_families: [(&str, &str, &str, Pick); 8] = [
        ("pas_agent_processes", "gauge", "Live processes in each running agent's process tree.", |u| Some(u.processes.to_string())),
        ("pas_agent_rss_bytes", "gauge", "Resident memory of each running agent's process tree, bytes.", |u| Some(u.rss_bytes.to_string())),
        ("pas_agent_cpu_seconds_total", "counter", "CPU seconds used by each running agent's process tree (its live processes and the children they reaped).", |u| Some(format!("{}", u.cpu_seconds))),
        ("pas_agent_threads", "gauge", "Threads of each running agent's process tree.", |u| Some(u.threads.to_string())),
        ("pas_agent_open_files", "gauge", "Open file descriptors of each running agent's process tree.", |u| u.open_files.map(|n| n.to_string())),
        ("pas_agent_io_read_bytes_total", "counter", "Bytes each running agent's process tree fetched from storage (/proc/PID/io read_bytes).", |u| u.io.map(|io| io.read_bytes.to_string())),
        ("pas_agent_io_write_bytes_total", "counter", "Bytes each running agent's process tree sent to storage (/proc/PID/io write_bytes).", |u| u.io.map(|io| io.write_bytes.to_string())),
        ("pas_agent_io_write_chars_total", "counter", "Bytes each running agent's process tree passed to write calls (/proc/PID/io wchar).", |u| u.io.map(|io| io.write_chars.to_string())),
    ];
    for (name, kind, help, pick) in usage_families {
        family(
            name,
            kind,
            help,
            running
                .iter()
                .filter_map(|(v, a, u)| {
                    pick(u).map(|value| {
                        (
                            format!("cell=\"{}\",agent=\"{}\"", label(&v.id), label(&a.id)),
                            value,
                        )
                    })
                })
                .collect(),
        );
    }
    family(
        "pas_tasks",
        "gauge",
        "Tasks by state (blocked: pending on unfinished dependencies).",
        views
            .iter()
            .flat_map(|v| {
                let t = &v.tasks;
                [
                    ("pending", t.pending),
                    ("blocked", t.blocked),
                    ("in_progress", t.in_progress),
                    ("completed", t.completed),
                    ("failed", t.failed),
                ]
                .into_iter()
                .map(move |(s, n)| {
                    (
                        format!("cell=\"{}\",state=\"{s}\"", label(&v.id)),
                        n.to_string(),
                    )
                })
            })
            .collect(),
    );
    let agent_rows = |f: &dyn Fn(&AgentView) -> Option<String>| -> Vec<(String, String)> {
        views
            .iter()
            .flat_map(|v| v.agents.iter().map(move |a| (v, a)))
            .filter_map(|(v, a)| {
                f(a).map(|val| {
                    (
                        format!("cell=\"{}\",agent=\"{}\"", label(&v.id), label(&a.id)),
                        val,
                    )
                })
            })
            .collect()
    };
    family(
        "pas_agent_context_ratio",
        "gauge",
        "Context in use over the context window, per agent that reports both.",
        agent_rows(&|a| match (a.ctx_used, a.ctx_limit) {
            (Some(u), Some(l)) if l > 0 => Some(format!("{}", u as f64 / l as f64)),
            _ => None,
        }),
    );
    family(
        "pas_agent_cost_usd",
        "gauge",
        "Money each agent reported spending.",
        agent_rows(&|a| a.cost_usd.map(|c| format!("{c}"))),
    );
    family(
        "pas_agent_restarts_total",
        "counter",
        "Restarts of each agent by revival.",
        agent_rows(&|a| Some(a.restart_count.to_string())),
    );
    family(
        "pas_cell_time_used_ratio",
        "gauge",
        "Time a cell has run over its timeout.",
        views
            .iter()
            .filter_map(|v| match (v.time_used, v.timeout) {
                (Some(u), Some(t)) => {
                    Some((format!("cell=\"{}\"", label(&v.id)), format!("{}", u / t)))
                }
                _ => None,
            })
            .collect(),
    );
    let mut quota_rows = Vec::new();
    for v in views {
        for q in crate::ops::reservation::quota(store, &v.id).unwrap_or_default() {
            if let Some(c) = q.capacity {
                quota_rows.push((
                    format!(
                        "cell=\"{}\",resource=\"{}\",kind=\"capacity\"",
                        label(&v.id),
                        q.resource
                    ),
                    format!("{c}"),
                ));
            }
            quota_rows.push((
                format!(
                    "cell=\"{}\",resource=\"{}\",kind=\"reserved\"",
                    label(&v.id),
                    q.resource
                ),
                format!("{}", q.reserved),
            ));
        }
    }
    family(
        "pas_cell_quota",
        "gauge",
        "Quota capacity and what is reserved, per resource (cores, bytes, GPUs).",
        quota_rows,
    );
    let mut event_rows = Vec::new();
    for v in views {
        let counts = event_counts(store, &v.id)?;
        for level in ["info", "warn", "error"] {
            event_rows.push((
                format!("cell=\"{}\",level=\"{level}\"", label(&v.id)),
                counts.get(level).copied().unwrap_or(0).to_string(),
            ));
        }
    }
    family(
        "pas_events_total",
        "counter",
        "Events recorded in each cell's log, by level.",
        event_rows,
    );
    family(
        "pas_scrape_timestamp_seconds",
        "gauge",
        "When these metrics were computed.",
        vec![(String::new(), format!("{}", now.timestamp()))],
    );
    Ok(out)
}

/// The last `n` events about `agent` in its cell's log, oldest first.
pub fn recent_events(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    n: usize,
) -> Result<Vec<events::Event>> {
    let bytes = store.read_log(cell, LogFile::Events, 0)?;
    let mut about: Vec<events::Event> = events::parse_all(&bytes)
        .into_iter()
        .filter(|e| e.agent.as_deref() == Some(agent))
        .collect();
    about.drain(..about.len().saturating_sub(n));
    Ok(about)
}

/// "42s ago" or "-" for an agent view.
pub fn beat_age(a: &AgentView) -> String {
    a.heartbeat_age_seconds
        .map(|s| format!("{} ago", clock::human_duration(s)))
        .unwrap_or_else(|| "never".to_string())
}
