//! Revival: what to do about each agent whose process died or hangs, by policy, exactly once.
//!
//! This module owns the effects: the pass over a cell, reading each agent's state, applying
//! what the rules decide (writes, events, signals, spawns), revival requests and the final
//! failure. The rules themselves (`auto_revive`, `restart_policy` and the exit-code lists,
//! `max_restarts`, the restart storm, the backoff, `checkpoint_required`, `revive_timeout`,
//! the watchdog) are pure and live in [`crate::ops::revive::rules`].
//!
//! Every decision is made from the files under the cell's revive lock, so a cron `pas
//! revive`, a running `pas watch` and an operator never restart one agent twice, and killing
//! any of them loses nothing: the restart count, the time of the next allowed restart, the
//! recent deaths, the cooldown and pending requests all live in the agent file.

pub mod placement;
pub mod rules;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::clock;
use crate::doc::Doc;
use crate::error::{Error, Kind, Result};
use crate::model::{
    Agent, AgentStatus, Cell, CellStatus, EventKind, Policies, Revival, ReviveRequest, StopCause,
    Task, TaskStatus,
};
use crate::ops::checkpoint;
use crate::ops::health::{self, Health};
use crate::ops::heartbeat::Observed;
use crate::ops::policy::Policy;
use crate::ops::queue;
use crate::ops::revive::rules::{
    self as ops, earliest, Checkpoint, Decision, Process, RestartFacts, State,
};
use crate::ops::supervisor::{self, ProcState};
use crate::store::events::{self, Level, NewEvent};
use crate::store::{self, ConfigFile, FileKey, LockKey, Store};

/// What a revive pass may do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Decide and report, change nothing.
    pub dry_run: bool,
    /// Only this agent.
    pub agent: Option<String>,
    /// What restarted agents are allowed.
    pub launch: supervisor::Launch,
    /// On a shared store, the `pas watch` node this pass runs for and what it knows of the
    /// others: it handles only the agents [`placement`] gives it. `None`: every agent (a
    /// single watch, `pas revive`, an agent's supervisor).
    pub nodes: Option<std::sync::Arc<placement::Nodes>>,
}

/// One thing a pass did (or, dry, would do).
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    /// When.
    pub time: String,
    /// The cell.
    pub cell: String,
    /// The agent.
    pub agent: String,
    /// What: `started`, `revived`, `backing_off`, `cooling_down`, `requested`, `failed`, `idle`,
    /// `hung`, `stopped_hung`, `revival_succeeded`, `revival_timed_out`, `reset`, `hook` (an
    /// `on_event` hook ran; `agent` is empty for an event of the cell).
    pub action: String,
    /// One human sentence.
    pub message: String,
    /// True when nothing was changed (`--dry-run`).
    pub dry_run: bool,
}

/// The result of a pass over one cell.
#[derive(Debug, Clone, Default)]
pub struct CellPass {
    /// What happened.
    pub actions: Vec<Action>,
    /// The earliest moment something may need doing in this cell.
    pub next_due: Option<DateTime<Utc>>,
    /// The agents that could not be handled (a file that does not read, a step that
    /// failed), each error naming its agent or file; the cell's other agents were handled.
    pub errors: Vec<Error>,
    /// Whether an agent the pass looked at has an `on_event` hook (its own, or the cell's).
    pub hooked: bool,
}

impl CellPass {
    /// The pass, or, when an agent could not be handled, its error (saying how many more
    /// there were): for callers that report a cell as handled or not.
    pub fn into_result(mut self) -> Result<CellPass> {
        if self.errors.is_empty() {
            return Ok(self);
        }
        let more = self.errors.len() - 1;
        let mut first = self.errors.swap_remove(0);
        first.message = match more {
            0 => format!("{}; the cell's other agents were handled", first.message),
            n => format!(
                "{} (and {n} more agent error(s)); the cell's other agents were handled",
                first.message
            ),
        };
        Err(first)
    }
}

struct Ctx<'a> {
    store: &'a dyn Store,
    cell: &'a str,
    agent: &'a str,
    dry_run: bool,
    launch: supervisor::Launch,
    now: DateTime<Utc>,
    actions: Vec<Action>,
    /// The agent document the current decision is made on ([`Ctx::reread_basis`]): a
    /// claim commits only if it is still this one.
    basis: Option<Basis>,
}

/// An agent document as a decision read it, with its typed form.
struct Basis {
    doc: Doc,
    agent: Agent,
}

/// How a claim ([`claim_agent`]) went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// It committed: this process carries out what it claimed.
    Won,
    /// The agent document changed since it was read (another node, pass or supervisor
    /// claimed or changed it): nothing was written; read again and decide again.
    Lost,
    /// A supervisor holds the agent's alive key (on a store with leases): it is not dead
    /// anywhere yet; nothing was written.
    Alive,
}

/// How soon a claim refused for a live alive key is tried again: the key goes when its
/// lease runs out (`heartbeat_ttl`), which the claimer cannot see.
const ALIVE_RECHECK: chrono::Duration = chrono::Duration::seconds(1);

/// Changes agent `agent` in one transaction that commits only if its document is still
/// `basis` (the one the caller decided on: the file store compares its bytes, etcd its mod
/// revision) and, on a store with leases, no supervisor holds its alive key (compared in
/// the same etcd transaction). Of two claims made on the same read, exactly one commits.
pub fn claim_agent(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    basis: &Doc,
    now: DateTime<Utc>,
    events: &[NewEvent],
    change: &mut dyn FnMut(&mut Agent),
) -> Result<Claimed> {
    store::transact(store, cell, now, |txn| {
        let Some(mut doc) = txn.read(FileKey::Agent(agent))? else {
            return Ok(Claimed::Lost);
        };
        if &doc != basis {
            return Ok(Claimed::Lost);
        }
        // The file store has no alive keys: nothing more is read there.
        if store.has_leases()
            && store
                .alive_agents(cell)?
                .is_some_and(|alive| alive.iter().any(|a| a == agent))
        {
            return Ok(Claimed::Alive);
        }
        Agent::edit(&mut doc, &mut *change)?;
        txn.put(FileKey::Agent(agent), doc);
        txn.require_not_alive(agent);
        for e in events {
            txn.event(e.clone());
        }
        Ok(Claimed::Won)
    })
}

impl Ctx<'_> {
    /// Reports an action; returns which one it is, for a claim lost after it to withdraw
    /// ([`lost_claim`]).
    fn act(&mut self, action: &str, message: String) -> Reported {
        let reported = Reported(self.actions.len());
        self.actions.push(Action {
            time: clock::stamp(self.now),
            cell: self.cell.to_string(),
            agent: self.agent.to_string(),
            action: action.to_string(),
            message,
            dry_run: self.dry_run,
        });
        reported
    }

    /// Changes the agent file in one transaction.
    fn update(&self, change: &mut dyn FnMut(&mut Agent)) -> Result<Doc> {
        self.commit(change, None)
    }

    /// Changes the agent file and records the event that says so, in one transaction.
    fn commit(&self, change: &mut dyn FnMut(&mut Agent), event: Option<NewEvent>) -> Result<Doc> {
        let events = event.into_iter().collect();
        store::update_agent_with(
            self.store,
            self.cell,
            self.agent,
            self.now,
            events,
            &mut |d| Agent::edit(d, &mut *change),
        )
    }

    /// An event about this agent.
    fn about(&self, level: Level, kind: EventKind, message: String, details: Value) -> NewEvent {
        NewEvent::new(level, kind, message)
            .agent(self.agent)
            .details(details)
    }

    /// Records an event alone.
    fn event(&self, level: Level, kind: EventKind, message: String, details: Value) -> Result<()> {
        events::record_one(
            self.store,
            self.cell,
            self.about(level, kind, message, details),
            self.now,
        )
    }

    /// The agent file as it is now.
    fn reread(&self) -> Result<Agent> {
        crate::ops::agent::load(self.store, self.cell, self.agent)
    }

    /// The agent file as it is now, remembered as the basis of the next decision.
    fn reread_basis(&mut self) -> Result<Agent> {
        let doc = crate::ops::agent::read(self.store, self.cell, self.agent)?;
        let agent = crate::ops::agent::typed(self.agent, &doc)?;
        self.basis = Some(Basis {
            doc,
            agent: agent.clone(),
        });
        Ok(agent)
    }

    /// [`claim_agent`] on the basis of the current decision.
    fn claim(&self, events: &[NewEvent], change: &mut dyn FnMut(&mut Agent)) -> Result<Claimed> {
        let basis = self
            .basis
            .as_ref()
            .map(|b| &b.doc)
            .ok_or_else(|| Error::failure("a claim without a decision's basis (a pas bug)"))?;
        claim_agent(
            self.store, self.cell, self.agent, basis, self.now, events, change,
        )
    }
}

/// One revive pass over a cell. Holds the cell's revive lock throughout. An agent that
/// cannot be handled makes it an error, after the cell's other agents were handled
/// ([`CellPass::into_result`]).
pub fn pass_cell(
    store: &dyn Store,
    cell: &str,
    opts: &Options,
    now: DateTime<Utc>,
) -> Result<CellPass> {
    pass_cell_each(store, cell, opts, now)?.into_result()
}

/// [`pass_cell`], each agent on its own: the agents that cannot be handled are in
/// [`CellPass::errors`] and the pass is still the cell's (for `pas watch`, which reports
/// them and keeps the cell's deadline). An error here is the cell's own.
pub fn pass_cell_each(
    store: &dyn Store,
    cell: &str,
    opts: &Options,
    now: DateTime<Utc>,
) -> Result<CellPass> {
    let _revive = store.lock(cell, LockKey::Revive)?;
    let start = match opts.dry_run {
        true => Ok(None),
        false => crate::ops::hooks::log_end(store, cell),
    };
    let mut result = pass_locked(store, cell, opts, now)?;
    if opts.dry_run {
        return Ok(result);
    }
    // Then the hooks, for what the pass (and everyone since the last one) recorded; a
    // cell the pass left alone (paused, finished, timed out just now) still has its events.
    let hooked = result.hooked
        || match crate::ops::policy::load(store, cell, None) {
            Ok(p) => crate::ops::hooks::has_hook(&p),
            Err(e) => {
                result.errors.push(e);
                false
            }
        };
    match start {
        Err(e) => result.errors.push(e),
        Ok(_) if !hooked => {}
        Ok(start) => {
            match crate::ops::hooks::dispatch(store, cell, start, &opts.launch, clock::now()) {
                Ok(ran) => {
                    for r in ran {
                        result.actions.push(Action {
                            time: clock::stamp(now),
                            cell: cell.to_string(),
                            agent: r.agent.unwrap_or_default(),
                            action: "hook".to_string(),
                            message: r.outcome,
                            dry_run: false,
                        });
                    }
                }
                Err(e) => result.errors.push(e),
            }
        }
    }
    Ok(result)
}

/// [`pass_cell_each`] under the revive lock, without the hooks.
fn pass_locked(
    store: &dyn Store,
    cell: &str,
    opts: &Options,
    now: DateTime<Utc>,
) -> Result<CellPass> {
    let read_cell = || Cell::from_doc(&store::read_required(store, cell, FileKey::Cell)?);
    let mut cell_doc = read_cell()?;
    if !opts.dry_run && crate::ops::budget::enforce_time(store, cell, &cell_doc, now)? {
        cell_doc = read_cell()?;
    }
    let mut result = CellPass::default();
    if cell_doc.status != CellStatus::Active {
        return Ok(result);
    }
    result.next_due = crate::ops::budget::deadline(&cell_doc);
    let policies = crate::ops::policy::read_file_layer(store, cell)?;
    let (observed, unreadable) = crate::ops::heartbeat::observe_cell(
        store,
        cell,
        &cell_doc,
        policies.as_ref(),
        !opts.dry_run,
        now,
    )?;
    for o in &observed {
        result.next_due = earliest(result.next_due, o.assessment.next_change);
        result.hooked |= crate::ops::hooks::has_hook(&o.policy);
    }
    if !opts.dry_run {
        queue::reap(store, cell, now)?;
    }
    // With one agent asked for, only its own file's problem is the pass's.
    let mut handled = false;
    if opts.agent.is_none() {
        result.errors = unreadable;
    }
    // A node of several reads the cell's alive keys once, for placement.
    let alive = match &opts.nodes {
        Some(_) => store.alive_agents(cell)?.unwrap_or_default(),
        None => Vec::new(),
    };
    for Observed { agent, .. } in observed {
        if opts.agent.as_deref().is_some_and(|a| a != agent.agent_id) {
            continue;
        }
        handled = true;
        let mut ctx = Ctx {
            store,
            cell,
            agent: &agent.agent_id,
            dry_run: opts.dry_run,
            launch: opts.launch,
            now,
            actions: Vec::new(),
            basis: None,
        };
        let node = opts.nodes.as_deref().map(|nodes| placement::Looking {
            nodes,
            alive_key: alive.contains(&agent.agent_id),
        });
        match revive_agent(&mut ctx, &cell_doc, policies.as_ref(), &agent, node) {
            Ok(due) => {
                result.next_due = earliest(result.next_due, due);
                result.actions.append(&mut ctx.actions);
            }
            Err(e) => result.errors.push(e),
        }
    }
    if let Some(wanted) = opts.agent.as_deref().filter(|_| !handled) {
        // Not among the agents read: its file may not read (a missing one is nothing to do).
        match store.read(cell, FileKey::Agent(wanted)) {
            Ok(Some(doc)) => {
                if let Err(e) = Agent::from_doc(&doc) {
                    result.errors.push(e);
                }
            }
            Ok(None) => {}
            Err(e) => result.errors.push(e),
        }
    }
    Ok(result)
}

/// Steps one agent may take in a pass before it settles. Five are the most a pass needs
/// (e.g. vanished recorded, revival forgotten, death noted, checkpoint looked up, revived);
/// more means the file keeps changing under the pass.
const MAX_STEPS: usize = 12;

/// What applying a decision leaves for the pass to do.
enum Applied {
    /// The agent is settled for this pass; look again at the time given.
    Done(Option<DateTime<Utc>>),
    /// The state changed (or, dry, would have): read it again and decide again.
    Changed {
        /// The watchdog has just stopped the hung process: whatever `/proc` still says, it
        /// counts as dead for the rest of this pass, so a process slow to die is not
        /// stopped again and again but handled as the death it is.
        stopped: bool,
    },
    /// The facts a restart needs, looked up; decide again with them.
    Learned(RestartFacts),
}

/// The process state the rules take, from the agent file and `/proc`.
fn process_of(agent: &Agent) -> Process {
    match supervisor::state_of(agent) {
        ProcState::Running => Process::Running,
        ProcState::Vanished => Process::Vanished,
        ProcState::Exited | ProcState::None => Process::Ended,
    }
}

/// When its supervisor is restarting the agent (now, or after a backoff or cooldown), it
/// is not a pass's to start: the time to look again, when that wait ends. A supervisor that
/// dies meanwhile leaves an orphan, which the rules handle then.
fn left_to_its_supervisor(agent: &Agent, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    supervisor::restarting(agent)?;
    Some(
        earliest(agent.next_restart_at, agent.cooldown_until)
            .filter(|t| *t > now)
            .unwrap_or(now + chrono::Duration::seconds(1)),
    )
}

/// One agent's turn in a pass: read its state, ask the rules, apply the answer, and again
/// after a step that changed the state, until it is settled. Returns when it next needs a
/// look.
fn revive_agent(
    ctx: &mut Ctx<'_>,
    cell_doc: &Cell,
    policies: Option<&Policies>,
    observed: &Agent,
    node: Option<placement::Looking<'_>>,
) -> Result<Option<DateTime<Utc>>> {
    // The observation has just read the file, under the revive lock: an agent pas cannot
    // start (no command) or should not (not active) is left without reading it again.
    if observed.status != AgentStatus::Active || observed.command.is_empty() {
        return Ok(None);
    }
    let mut agent = ctx.reread_basis()?;
    let policy = Policy::of(
        ctx.store.root_policies(),
        Some(&cell_doc.policies),
        policies,
        Some(&agent.policies),
    );
    if let Some(node) = node {
        let host = agent.host.clone();
        match placement::decide(
            host.as_deref(),
            &node.nodes.here,
            node.nodes.node(host.as_deref().unwrap_or_default()),
            node.alive_key,
            policy.takeover_after(),
            ctx.now,
        ) {
            placement::Placement::Here => {}
            placement::Placement::Theirs { until } => return Ok(until),
            placement::Placement::TakeOver { from } => {
                if ctx.dry_run {
                    ctx.act(
                        "taken_over",
                        format!(
                            "agent {} of host {from}, which is gone, would be taken over here",
                            ctx.agent
                        ),
                    );
                    return Ok(None);
                }
                match take_over(ctx, &from, &node.nodes.here)? {
                    Claimed::Won => agent = ctx.reread_basis()?,
                    Claimed::Lost => return Ok(Some(ctx.now + ALIVE_RECHECK)),
                    Claimed::Alive => return Ok(Some(ctx.now + ALIVE_RECHECK)),
                }
            }
        }
    }
    if let Some(due) = left_to_its_supervisor(&agent, ctx.now) {
        return Ok(Some(due));
    }
    // Before anything here rewrites the file (which would make it root's): an agent whose
    // command pas may not run is an error of this agent, with nothing changed.
    if !ctx.dry_run && process_of(&agent) != Process::Running {
        supervisor::vet(
            ctx.store,
            ctx.cell,
            &[FileKey::Agent(ctx.agent)],
            &ctx.launch,
        )
        .map_err(|e| {
            let message = format!("agent {} cannot be restarted: {}", ctx.agent, e.message);
            Error { message, ..e }
        })?;
    }
    let heartbeat_required = policy.flag("heartbeat_required", false);
    let assess = |agent: &Agent, process: Process, now: DateTime<Utc>| {
        State::from_agent(
            agent,
            process,
            &health::assess(agent, &policy, now),
            heartbeat_required,
        )
    };
    let mut state = assess(&agent, process_of(&agent), ctx.now);
    // The process the watchdog stopped, if it did: only that one counts as dead after.
    let mut stopped_hung: Option<i32> = None;
    let mut pid_now = supervisor::usable_pid(agent.pid);
    for _ in 0..MAX_STEPS {
        let decision = ops::decide(&state, &policy, ctx.now);
        match apply(ctx, &policy, &state, &decision)? {
            Applied::Done(due) => return Ok(due),
            Applied::Learned(facts) => state.restart = Some(facts),
            Applied::Changed { .. } if ctx.dry_run => state.assume(&decision),
            Applied::Changed { stopped } => {
                if stopped {
                    stopped_hung = pid_now;
                }
                let agent = ctx.reread_basis()?;
                if let Some(due) = left_to_its_supervisor(&agent, ctx.now) {
                    return Ok(Some(due));
                }
                pid_now = supervisor::usable_pid(agent.pid);
                let mut process = process_of(&agent);
                // Not a process its supervisor started since in place of the stopped one.
                if stopped_hung.is_some() && stopped_hung == pid_now && process == Process::Running
                {
                    process = Process::Ended;
                }
                state = assess(&agent, process, ctx.now);
            }
        }
    }
    Err(Error::failure(format!(
        "the revival of agent {} did not settle in {MAX_STEPS} steps; is something else rewriting its file?",
        ctx.agent
    )))
}

/// Carries out one decision: the writes, events, signals and spawns it means, and the
/// action it reports (a dry run reports and changes nothing). The transaction API will
/// take over the writes here; the rules stay in [`ops::decide`].
fn apply(
    ctx: &mut Ctx<'_>,
    policy: &Policy,
    state: &State,
    decision: &Decision,
) -> Result<Applied> {
    let agent = ctx.agent.to_string();
    let now = ctx.now;
    let done = |due| Ok(Applied::Done(due));
    match decision {
        Decision::Nothing { until } => done(*until),
        Decision::RecordVanished => {
            if !ctx.dry_run {
                supervisor::record_vanished(ctx.store, ctx.cell, &agent, now)?;
            }
            Ok(Applied::Changed { stopped: false })
        }
        Decision::RevivalSucceeded { details, next } => {
            ctx.act(
                "revival_succeeded",
                format!("agent {agent} is beating after its restart"),
            );
            if !ctx.dry_run {
                ctx.commit(
                    &mut |a| a.revival = None,
                    Some(ctx.about(
                        Level::Info,
                        EventKind::AgentRevivalSucceeded,
                        format!("agent {agent} revived: first beat after the restart"),
                        details.clone(),
                    )),
                )?;
            }
            done(*next)
        }
        Decision::RevivalTimedOut { details } => {
            ctx.act(
                "revival_timed_out",
                format!("agent {agent} sent no beat within revive_timeout; stopping it"),
            );
            if ctx.dry_run {
                return done(None);
            }
            ctx.event(
                Level::Error,
                EventKind::AgentRevivalTimedOut,
                format!("agent {agent} did not beat within revive_timeout after its restart"),
                details.clone(),
            )?;
            watchdog_stop(ctx, policy)?;
            // Only the revival that timed out: its supervisor may have restarted it since,
            // with a revival of its own.
            let timed_out = state.revival.as_ref().and_then(|r| r.started_at);
            ctx.update(&mut |a| {
                if a.revival.as_ref().map(|r| r.started_at) == timed_out {
                    a.revival = None;
                }
            })?;
            Ok(Applied::Changed { stopped: false })
        }
        Decision::RevivalEnded => {
            if !ctx.dry_run {
                ctx.update(&mut |a| a.revival = None)?;
            }
            Ok(Applied::Changed { stopped: false })
        }
        Decision::ReportHung => {
            ctx.act(
                "hung",
                format!("agent {agent} runs but does not beat (watchdog is off)"),
            );
            if !ctx.dry_run {
                ctx.commit(
                    &mut |a| a.hung_reported = Some(now),
                    Some(ctx.about(
                        Level::Error,
                        EventKind::AgentHung,
                        format!(
                            "agent {agent} runs but does not beat; watchdog is off, leaving it"
                        ),
                        Value::Null,
                    )),
                )?;
            }
            done(None)
        }
        Decision::StopHung => {
            ctx.act(
                "stopped_hung",
                format!("agent {agent} runs but does not beat; stopping it (watchdog)"),
            );
            if ctx.dry_run {
                return done(None);
            }
            watchdog_stop(ctx, policy)?;
            Ok(Applied::Changed { stopped: true })
        }
        Decision::HungRecovered => {
            if !ctx.dry_run {
                ctx.update(&mut |a| a.hung_reported = None)?;
            }
            Ok(Applied::Changed { stopped: false })
        }
        Decision::ResetRestarts { next } => {
            ctx.act(
                "reset",
                format!("agent {agent} stayed healthy; its restart count starts again"),
            );
            if !ctx.dry_run {
                ctx.update(&mut |a| {
                    a.restart_attempts = 0;
                    a.recent_deaths.clear();
                })?;
            }
            done(*next)
        }
        Decision::NoteDeath { at, recent_deaths } => {
            if !ctx.dry_run {
                ctx.update(&mut |a| note_death(a, *at, recent_deaths))?;
            }
            Ok(Applied::Changed { stopped: false })
        }
        Decision::Inspect => Ok(Applied::Learned(inspect(ctx, state)?)),
        Decision::Start { retry_at } => start(ctx, *retry_at),
        Decision::Idle { why } => {
            ctx.act("idle", format!("agent {agent} is not restarted: {why}"));
            if !ctx.dry_run {
                ctx.commit(
                    &mut |a| {
                        a.status = AgentStatus::Idle;
                        a.next_restart_at = None;
                    },
                    Some(ctx.about(
                        Level::Info,
                        EventKind::AgentCompleted,
                        format!("agent {agent} ended and is not restarted: {why}"),
                        Value::Null,
                    )),
                )?;
            }
            done(None)
        }
        Decision::Fail { reason } => {
            ctx.act(
                "failed",
                format!("agent {agent} has failed for good: {reason}"),
            );
            if !ctx.dry_run {
                fail_for_good(
                    ctx.store,
                    ctx.cell,
                    &agent,
                    policy,
                    reason,
                    &ctx.launch,
                    now,
                )?;
            }
            done(None)
        }
        Decision::Request { how } => {
            let id = format!("r-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
            ctx.act(
                "requested",
                format!("agent {agent} died ({how}); revival request {id} waits for approval"),
            );
            if !ctx.dry_run {
                ctx.commit(
                    &mut |a| {
                        a.revive_request = Some(ReviveRequest {
                            id: id.clone(),
                            at: Some(now),
                            cause: Some(how.clone()),
                            approved: false,
                            extra: Default::default(),
                        })
                    },
                    Some(ctx.about(
                        Level::Warn,
                        EventKind::AgentReviveRequested,
                        format!(
                            "agent {agent} died ({how}); approve with `pas revive approve {id}`"
                        ),
                        json!({ "request": id }),
                    )),
                )?;
            }
            done(None)
        }
        Decision::CoolDown { until, deaths } => {
            let until_text = clock::stamp(*until);
            ctx.act(
                "cooling_down",
                format!("agent {agent} died {deaths} times within storm_window; cooling down until {until_text}"),
            );
            if !ctx.dry_run {
                ctx.commit(
                    &mut |a| {
                        a.cooldown_until = Some(*until);
                        a.recent_deaths.clear();
                        a.restart_attempts = 0;
                        a.next_restart_at = None;
                    },
                    Some(ctx.about(
                        Level::Error,
                        EventKind::AgentStorm,
                        format!("agent {agent} died {deaths} times in a row quickly; cooling down until {until_text}"),
                        json!({ "deaths": deaths, "until": until_text }),
                    )),
                )?;
            }
            done(Some(*until))
        }
        Decision::BackOff {
            attempt,
            until,
            how,
        } => {
            if !ctx.dry_run {
                ctx.update(&mut |a| a.next_restart_at = Some(*until))?;
            }
            ctx.act(
                "backing_off",
                format!(
                    "agent {agent} died ({how}); restart {attempt} at {} (in {})",
                    clock::stamp(*until),
                    clock::human_duration((*until - now).num_milliseconds() as f64 / 1000.0)
                ),
            );
            done(Some(*until))
        }
        Decision::Revive { .. } => match Restart::of(decision) {
            Some(r) => restart(ctx, policy, r),
            None => done(None),
        },
    }
}

/// Stops the agent's process for the watchdog; stopping takes time, so what follows is
/// decided at the time it is then.
fn watchdog_stop(ctx: &mut Ctx<'_>, policy: &Policy) -> Result<()> {
    let grace = Some(policy.stop_grace());
    supervisor::stop_for(
        ctx.store,
        ctx.cell,
        ctx.agent,
        grace,
        StopCause::Watchdog,
        ctx.now,
    )?;
    ctx.now = clock::now();
    Ok(())
}

/// Looks up what a restart needs: the newest checkpoint that loads and verifies, and
/// whether the agent's current task is still its open work. A task file that is gone is not
/// its open work; one that does not read is an error, not a guess.
fn inspect(ctx: &Ctx<'_>, state: &State) -> Result<RestartFacts> {
    let recorded = ctx.reread()?.checkpoint.is_some();
    restart_facts(ctx.store, ctx.cell, ctx.agent, recorded, state)
}

/// [`inspect`] for an agent whose file records a checkpoint (`recorded`) or not.
fn restart_facts(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    recorded: bool,
    state: &State,
) -> Result<RestartFacts> {
    let checkpoint = match checkpoint::load(store, cell, agent, None) {
        Ok((generation, _)) => Checkpoint::Usable(generation),
        // Nothing on disk and nothing recorded: it never saved one.
        Err(_) if !recorded && checkpoint::latest_generation(store, cell, agent)?.is_none() => {
            Checkpoint::Absent
        }
        Err(e) => Checkpoint::Unusable(e.message),
    };
    let task_open = match state.current_task.as_deref() {
        None => true,
        Some(task_id) => match crate::ops::task::read(store, cell, task_id) {
            Ok(doc) => {
                let task = Task::from_doc(&doc)?;
                task.status == TaskStatus::InProgress && task.claimed_by.as_deref() == Some(agent)
            }
            Err(e) if e.kind == Kind::NotFound => false,
            Err(e) => return Err(e),
        },
    };
    Ok(RestartFacts {
        checkpoint,
        task_open,
    })
}

/// A restart the rules decided on ([`Decision::Revive`]).
#[derive(Debug, Clone)]
struct Restart {
    attempt: u64,
    generation: Option<u64>,
    fresh: Option<String>,
    how: String,
    dropped_task: Option<String>,
    deadline: DateTime<Utc>,
    retry_at: DateTime<Utc>,
}

impl Restart {
    /// The restart a [`Decision::Revive`] is.
    fn of(decision: &Decision) -> Option<Restart> {
        let Decision::Revive {
            attempt,
            checkpoint,
            fresh,
            how,
            dropped_task,
            deadline,
            retry_at,
        } = decision
        else {
            return None;
        };
        Some(Restart {
            attempt: *attempt,
            generation: *checkpoint,
            fresh: fresh.clone(),
            how: how.clone(),
            dropped_task: dropped_task.clone(),
            deadline: *deadline,
            retry_at: *retry_at,
        })
    }

    /// "from checkpoint 3", "fresh (it has no checkpoint)".
    fn from(&self) -> String {
        match (self.generation, &self.fresh) {
            (Some(g), _) => format!("from checkpoint {g}"),
            (None, Some(why)) => format!("fresh ({why})"),
            (None, None) => "fresh".to_string(),
        }
    }

    fn task_note(&self) -> String {
        self.dropped_task
            .as_deref()
            .map_or(String::new(), |task_id| {
                format!("; task {task_id} is no longer its open work and is not resumed")
            })
    }

    /// Writes the restart down in the agent's view: counted, a revival waiting for the
    /// first beat, the request it answered and a task no longer its work forgotten.
    fn mark(&self, a: &mut Agent, now: DateTime<Utc>) {
        a.restart_count += 1;
        a.restart_attempts = self.attempt;
        a.next_restart_at = None;
        a.revival = Some(Revival {
            started_at: now,
            deadline: Some(self.deadline),
            attempt: Some(self.attempt),
            generation: self.generation,
            extra: Default::default(),
        });
        a.revive_request = None;
        if self.dropped_task.is_some() {
            a.current_task = None;
        }
    }

    /// The `agent.revived` event, once process `pid` runs.
    fn revived_event(&self, agent: &str, pid: i32) -> NewEvent {
        let attempt = self.attempt;
        NewEvent::new(
            Level::Warn,
            EventKind::AgentRevived,
            format!(
                "agent {agent} restarted (attempt {attempt}, pid {pid}, {}){}",
                self.from(),
                self.task_note()
            ),
        )
        .agent(agent)
        .details(json!({ "attempt": attempt, "pid": pid, "generation": self.generation, "fresh": self.fresh, "cause": self.how }))
    }
}

/// The `agent.revive_failed` event of a restart that could not start the process.
fn revive_failed(agent: &str, reason: &str) -> NewEvent {
    NewEvent::new(
        Level::Error,
        EventKind::AgentReviveFailed,
        format!("agent {agent} could not be restarted: {reason}"),
    )
    .agent(agent)
}

/// Notes a death in the storm tally ([`Decision::NoteDeath`]).
fn note_death(a: &mut Agent, at: DateTime<Utc>, recent_deaths: &[DateTime<Utc>]) {
    a.recent_deaths = recent_deaths.to_vec();
    a.last_death = Some(at);
    a.next_restart_at = None;
}

/// Restarts the agent: leftovers of its process group stopped, the restart written down
/// (a revival waiting for the first beat), the process started.
fn restart(ctx: &mut Ctx<'_>, policy: &Policy, r: Restart) -> Result<Applied> {
    let now = ctx.now;
    let (store, cell, agent) = (ctx.store, ctx.cell, ctx.agent);
    let reported = ctx.act(
        "revived",
        format!(
            "agent {agent} died ({}); restart {} {}{}",
            r.how,
            r.attempt,
            r.from(),
            r.task_note()
        ),
    );
    if ctx.dry_run {
        return Ok(Applied::Done(None));
    }
    // The claim: of the passes (on any host) that decided this restart on the same
    // document, exactly one writes it down; the others read again and see it in flight.
    let claimed = ctx.claim(&[], &mut |a| r.mark(a, now))?;
    if let Some(lost) = lost_claim(ctx, claimed, reported) {
        return Ok(lost);
    }
    let pgid = ctx.basis.as_ref().and_then(|b| b.agent.pgid);
    supervisor::stop_leftovers(agent, pgid, policy.stop_grace())?;
    match supervisor::start(store, cell, agent, &ctx.launch) {
        Ok(started) => {
            events::record_one(store, cell, r.revived_event(agent, started.pid), ctx.now)?;
            Ok(Applied::Done(Some(r.deadline)))
        }
        Err(e) => {
            ctx.commit(
                &mut |a| a.revival = None,
                Some(revive_failed(agent, &e.message)),
            )?;
            Ok(Applied::Done(Some(r.retry_at)))
        }
    }
}

/// What an agent's supervisor does next after its agent died ([`plan`], [`commit`]).
#[derive(Debug, Clone)]
pub enum Next {
    /// Start it again at once, here.
    Restart(Box<Restarting>),
    /// Wait until then (backoff, cooldown), then ask again.
    Wait(DateTime<Utc>),
    /// Nothing more: the agent is not to be restarted by this supervisor.
    Done,
}

/// A restart the supervisor carries out in place.
#[derive(Debug, Clone)]
pub struct Restarting {
    /// The agent's view with the death and the restart written down: what to start.
    pub agent: Agent,
    /// How long leftovers of its last process group get to stop (`stop_grace`).
    pub grace: std::time::Duration,
    restart: Restart,
}

/// What one look of the supervisor decides.
#[derive(Debug, Clone)]
enum InPlace {
    Next(Next),
    /// A decision with effects beyond the agent file (idle, failed and its hook, a request,
    /// a cooldown...): left to the watch's own pass, run here for this agent.
    Pass,
}

/// What the supervisor's look at its dead agent decided, before anything is written: the
/// file as read, the agent's view with the death recorded and the rules' steps applied,
/// and the decision.
#[derive(Debug, Clone)]
pub struct Plan {
    read: Doc,
    view: Agent,
    exited: Option<NewEvent>,
    decided: InPlace,
}

impl Plan {
    /// The restart it decided on, if it did.
    pub fn restart(&self) -> Option<&Restarting> {
        match &self.decided {
            InPlace::Next(Next::Restart(r)) => Some(r),
            _ => None,
        }
    }
}

/// The supervisor's look after its agent died (`death`), or after a wait it decided
/// (`None`), from a plain read: the death recorded in the view and the revival rules
/// ([`ops::decide`]) applied as a pass applies them (the death noted, the checkpoint and
/// task looked up, the backoff written down, the restart counted). Nothing is written, so
/// the replacement can be spawned before the one commit ([`commit`]). `None`: not this
/// supervisor's agent any more (gone, another process recorded, taken over).
pub fn plan(at: &Supervised<'_>, death: Option<&supervisor::Death>) -> Result<Option<Plan>> {
    let Some(doc) = at.store.read(at.cell, FileKey::Agent(at.agent))? else {
        return Ok(None);
    };
    look(at, death, doc, clock::now())
}

/// An agent and the supervisor that looks after it.
pub struct Supervised<'a> {
    /// The store.
    pub store: &'a dyn Store,
    /// The cell.
    pub cell: &'a str,
    /// The agent.
    pub agent: &'a str,
    /// Its supervisor: this process.
    pub me: &'a supervisor::Supervisor,
    /// What the operator allowed it.
    pub launch: &'a supervisor::Launch,
}

fn look(
    at: &Supervised<'_>,
    death: Option<&supervisor::Death>,
    doc: Doc,
    now: DateTime<Utc>,
) -> Result<Option<Plan>> {
    let (store, cell, agent, me) = (at.store, at.cell, at.agent, at.me);
    let mut a = Agent::from_doc(&doc)?;
    let exited = match death {
        Some(d) => match supervisor::record_death(&mut a, agent, d) {
            Some(event) => Some(event),
            None => return Ok(None),
        },
        None if !me.owns(&a) || a.pid.is_some() => return Ok(None),
        None => None,
    };
    let mut decided = decide_in_place(store, cell, agent, &mut a, now)?;
    match &decided {
        InPlace::Next(Next::Restart(_) | Next::Wait(_)) => me.claim(&mut a),
        // Nobody restarts it here: the file names no supervisor.
        _ if me.owns(&a) => {
            a.supervisor_pid = None;
            a.supervisor_start_time = None;
        }
        _ => {}
    }
    if let InPlace::Next(Next::Restart(r)) = &mut decided {
        r.agent = a.clone();
    }
    Ok(Some(Plan {
        read: doc,
        view: a,
        exited,
        decided,
    }))
}

/// What the supervisor did about a planned restart before committing.
pub enum Spawn<'a> {
    /// No restart was planned, nothing was spawned.
    NotTried,
    /// The replacement runs.
    Ran(&'a supervisor::NewRun<'a>),
    /// It could not be run, for this reason.
    Failed(&'a str),
}

/// What the commit recorded.
pub enum Outcome {
    /// The death, the restart and the new process (run number given), with `agent.exited`,
    /// `agent.started` and `agent.revived`, in one commit.
    Restarted(u64),
    /// The death and the decision; a process spawned for a restart must be stopped, since
    /// the file changed under the plan and the restart no longer stands.
    Next(Next),
    /// The file changed under the plan and now wants a restart nothing was spawned for:
    /// nothing was written; plan again.
    Again,
}

/// Records the supervisor's [`plan`] in ONE transaction: the death, the rules' steps and,
/// when it restarted the agent, the restart and the new process. The transaction looks
/// again when the agent file changed since the plan, so a stop or a pause committed
/// meanwhile wins (then [`Outcome::Next`] says the spawned process is not wanted).
/// Decisions with effects beyond the file are then applied by this agent's revive pass
/// ([`pass_cell`]), exactly as the watch applies them.
pub fn commit(
    at: &Supervised<'_>,
    death: Option<&supervisor::Death>,
    planned: Option<&Plan>,
    spawn: &Spawn<'_>,
) -> Result<Outcome> {
    let (store, cell, agent, me) = (at.store, at.cell, at.agent, at.me);
    let now = clock::now();
    let outcome = store::transact(store, cell, now, |txn| {
        let Some(mut doc) = txn.read(FileKey::Agent(agent))? else {
            return Ok(Some(Outcome::Next(Next::Done)));
        };
        let plan = match planned {
            Some(p) if p.read == doc => p.clone(),
            _ => match look(at, death, doc.clone(), now)? {
                Some(p) => p,
                None => return Ok(Some(Outcome::Next(Next::Done))),
            },
        };
        let Plan {
            mut view,
            exited,
            decided,
            ..
        } = plan;
        let mut events: Vec<NewEvent> = exited.into_iter().collect();
        let mut write: fn(&Agent, &mut Doc) = Agent::write_into;
        let outcome = match (decided, spawn) {
            (InPlace::Next(Next::Restart(r)), Spawn::Ran(run)) => {
                let number = supervisor::record_start(&mut view, agent, me, run, &mut events);
                events.push(r.restart.revived_event(agent, run.pid));
                write = Agent::write_start_into;
                Some(Outcome::Restarted(number))
            }
            (InPlace::Next(Next::Restart(_)), Spawn::Failed(reason)) => {
                // As a pass records a restart that could not start: counted, not in flight.
                view.revival = None;
                view.exit = Some(supervisor::not_run(reason, now));
                view.supervisor_pid = None;
                view.supervisor_start_time = None;
                events.push(revive_failed(agent, reason));
                Some(Outcome::Next(Next::Done))
            }
            (InPlace::Next(Next::Restart(_)), Spawn::NotTried) => return Ok(Some(Outcome::Again)),
            (InPlace::Next(next), _) => Some(Outcome::Next(next)),
            (InPlace::Pass, _) => None,
        };
        write(&view, &mut doc);
        txn.put(FileKey::Agent(agent), doc);
        for e in events {
            txn.event(e);
        }
        Ok(outcome)
    })?;
    match outcome {
        Some(outcome) => Ok(outcome),
        None => {
            let opts = Options {
                dry_run: false,
                agent: Some(agent.to_string()),
                launch: *at.launch,
                nodes: None,
            };
            pass_cell(store, cell, &opts, clock::now())?;
            Ok(Outcome::Next(Next::Done))
        }
    }
}

/// The rules' steps on the agent's view `a`, just dead, as [`revive_agent`] takes them
/// (the same decisions, applied to the view instead of one commit each), up to a restart,
/// a wait, or a decision for the pass.
fn decide_in_place(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    a: &mut Agent,
    now: DateTime<Utc>,
) -> Result<InPlace> {
    let policy = crate::ops::policy::load(store, cell, Some(a))?;
    let heartbeat_required = policy.flag("heartbeat_required", false);
    let mut facts = None;
    for _ in 0..MAX_STEPS {
        let assessment = health::assess(a, &policy, now);
        let mut state = State::from_agent(a, Process::Ended, &assessment, heartbeat_required);
        state.restart = facts.clone();
        match ops::decide(&state, &policy, now) {
            Decision::Nothing { .. }
                if state.status != AgentStatus::Active || !state.has_command =>
            {
                return Ok(InPlace::Next(Next::Done))
            }
            Decision::Nothing { until: Some(until) } => {
                return Ok(InPlace::Next(Next::Wait(until)))
            }
            Decision::RevivalEnded => a.revival = None,
            Decision::HungRecovered => a.hung_reported = None,
            Decision::NoteDeath { at, recent_deaths } => note_death(a, at, &recent_deaths),
            Decision::Inspect => {
                facts = Some(restart_facts(
                    store,
                    cell,
                    agent,
                    a.checkpoint.is_some(),
                    &state,
                )?)
            }
            Decision::BackOff { until, .. } => {
                a.next_restart_at = Some(until);
                return Ok(InPlace::Next(Next::Wait(until)));
            }
            decision @ Decision::Revive { .. } => {
                let Some(restart) = Restart::of(&decision) else {
                    return Ok(InPlace::Pass);
                };
                restart.mark(a, now);
                return Ok(InPlace::Next(Next::Restart(Box::new(Restarting {
                    agent: a.clone(),
                    grace: policy.stop_grace(),
                    restart,
                }))));
            }
            _ => return Ok(InPlace::Pass),
        }
    }
    Err(Error::failure(format!(
        "the revival of agent {agent} did not settle in {MAX_STEPS} steps"
    )))
}

/// An action [`Ctx::act`] reported: its place among the pass's actions.
#[derive(Debug, Clone, Copy)]
struct Reported(usize);

/// What a start or restart that did not win its claim leaves for the pass (the action it
/// reported, `reported`, withdrawn: it did not happen): read again and decide again after
/// a lost claim; look again shortly while a supervisor holds the alive key. `None`: it
/// won, carry on.
fn lost_claim(ctx: &mut Ctx<'_>, claimed: Claimed, reported: Reported) -> Option<Applied> {
    let next = match claimed {
        Claimed::Won => return None,
        Claimed::Lost => Applied::Changed { stopped: false },
        Claimed::Alive => Applied::Done(Some(ctx.now + ALIVE_RECHECK)),
    };
    if reported.0 < ctx.actions.len() {
        ctx.actions.remove(reported.0);
    }
    Some(next)
}

/// Starts an agent that is meant to run and has not been started since it was made
/// active. Not a revival: no restart is counted, nothing waits for a first beat. When the
/// process cannot be started, the next try is at `retry_at`.
fn start(ctx: &mut Ctx<'_>, retry_at: DateTime<Utc>) -> Result<Applied> {
    let agent = ctx.agent.to_string();
    let reported = ctx.act(
        "started",
        format!("agent {agent} is meant to run and is not running; starting it"),
    );
    if ctx.dry_run {
        return Ok(Applied::Done(None));
    }
    // On a shared store several nodes may decide this start on the same document: the one
    // whose claim commits places the agent on its host and starts it; the others then see
    // the start it waits for (`next_restart_at`). One host's revive lock already excludes a
    // second pass there: no claim, no extra write.
    if ctx.store.has_leases() {
        let here = crate::host::name();
        let claimed = ctx.claim(&[], &mut |a| {
            a.host = Some(here.clone());
            a.next_restart_at = Some(retry_at);
        })?;
        if let Some(lost) = lost_claim(ctx, claimed, reported) {
            return Ok(lost);
        }
    }
    match supervisor::start(ctx.store, ctx.cell, &agent, &ctx.launch) {
        // The supervisor records the start (`agent.started`) and, later, the end.
        Ok(_) => Ok(Applied::Done(None)),
        Err(e) => {
            ctx.commit(
                &mut |a| a.next_restart_at = Some(retry_at),
                Some(ctx.about(
                    Level::Error,
                    EventKind::AgentReviveFailed,
                    format!("agent {agent} could not be started: {}", e.message),
                    Value::Null,
                )),
            )?;
            Ok(Applied::Done(Some(retry_at)))
        }
    }
}

/// Takes over an agent of host `from`, which is gone (its node key absent past
/// `host_takeover_after`, no alive key): in one claim, its process is recorded as vanished
/// with its host (nobody can look at that host's `/proc` any more), its supervisor and
/// process group forgotten, and the agent placed on this host (`here`), where the rules
/// then revive it as any agent of this node.
fn take_over(ctx: &mut Ctx<'_>, from: &str, here: &str) -> Result<Claimed> {
    let agent = ctx.agent.to_string();
    let now = ctx.now;
    let pid = ctx
        .basis
        .as_ref()
        .and_then(|b| supervisor::usable_pid(b.agent.pid));
    let gone = match pid {
        Some(pid) => format!("agent {agent} (pid {pid}) is gone with its host {from}"),
        None => format!("agent {agent} was left by its host {from}, which is gone"),
    };
    let event = ctx.about(
        Level::Warn,
        EventKind::AgentVanished,
        format!("{gone}; taken over by node {here}"),
        json!({ "pid": pid, "host": from, "taken_over_by": here }),
    );
    let claimed = ctx.claim(&[event], &mut |a| {
        if a.pid.is_some() {
            a.pid = None;
            a.exit = Some(crate::model::Exit::vanished(now));
        }
        a.pgid = None;
        a.pid_start_time = None;
        a.supervisor_pid = None;
        a.supervisor_start_time = None;
        a.host = Some(here.to_string());
    })?;
    if claimed == Claimed::Won {
        ctx.act(
            "taken_over",
            format!("agent {agent} of host {from}, which is gone, is taken over here ({here})"),
        );
    }
    Ok(claimed)
}

/// The final failure of an agent, shared with `pas revive deny`.
pub fn fail_for_good(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    policy: &Policy,
    reason: &str,
    launch: &supervisor::Launch,
    now: DateTime<Utc>,
) -> Result<()> {
    let event = NewEvent::new(
        Level::Error,
        EventKind::AgentFailed,
        format!("agent {agent} has failed for good: {reason}"),
    )
    .agent(agent)
    .details(json!({ "reason": reason }));
    let doc = store::update_agent_with(store, cell, agent, now, vec![event], &mut |d| {
        Agent::edit(d, |a| {
            a.status = AgentStatus::Failed;
            a.failed_reason = Some(reason.to_string());
            a.revival = None;
            a.revive_request = None;
            a.next_restart_at = None;
        })
    })?;
    let failed = Agent::from_doc(&doc)?;
    // A substitute whose file (or whose policy) does not read is not one to hand work to.
    let healthy = |id: &str| -> bool {
        let Ok(a) = crate::ops::agent::load(store, cell, id) else {
            return false;
        };
        crate::ops::policy::load(store, cell, Some(&a)).is_ok_and(|p| {
            a.status != AgentStatus::Failed && health::assess(&a, &p, now).health == Health::Healthy
        })
    };
    queue::release_tasks(
        store,
        cell,
        agent,
        &policy.list("substitute_agents"),
        &healthy,
        now,
    )?;
    crate::ops::reservation::release_agent(store, cell, agent, "agent failed", now)?;
    if let Some(hook) = policy.on_failure() {
        run_hook(store, cell, &failed, hook, reason, launch, now)?;
    }
    Ok(())
}

/// Runs the `on_failure` hook, if pas may (see [`crate::ops::trust`]): as the agent's user,
/// in a clean environment, for at most [`crate::ops::hooks::HOOK_TIME_LIMIT`]. A refusal is
/// recorded as the hook's event, and nothing runs.
fn run_hook(
    store: &dyn Store,
    cell: &str,
    failed: &Agent,
    hook: &str,
    reason: &str,
    launch: &supervisor::Launch,
    now: DateTime<Utc>,
) -> Result<()> {
    let agent = failed.agent_id.as_str();
    let exit = failed.exit.as_ref();
    // The hook may come from pas.toml, cell.json, config/policies.json or the agent file.
    let sources = [
        FileKey::Cell,
        FileKey::Config(ConfigFile::Policies),
        FileKey::Agent(agent),
    ];
    let run_as = match supervisor::vet(store, cell, &sources, launch) {
        Ok(run_as) => run_as,
        Err(e) => {
            let message = format!(
                "on_failure hook for agent {agent} was not run: {}",
                e.message
            );
            return events::record_one(
                store,
                cell,
                NewEvent::new(Level::Error, EventKind::AgentOnFailure, message)
                    .agent(agent)
                    .details(json!({ "refused": e.message, "fix": e.hint })),
                now,
            );
        }
    };
    let cause = exit.and_then(|e| e.cause).map_or("unknown", |c| c.as_str());
    let code = exit
        .and_then(|e| e.code)
        .map(|c| c.to_string())
        .unwrap_or_default();
    let cmd = crate::ops::hooks::shell(
        store,
        cell,
        Some(agent),
        hook,
        &run_as,
        &[
            ("PAS_CAUSE", cause.to_string()),
            ("PAS_EXIT_CODE", code),
            ("PAS_REASON", reason.to_string()),
        ],
    )?;
    let status = crate::ops::hooks::run_limited(cmd, None, crate::ops::hooks::HOOK_TIME_LIMIT);
    let (level, message) = match status {
        Ok(s) if s.success() => (
            Level::Info,
            format!("on_failure hook for agent {agent} ran"),
        ),
        Ok(s) => (
            Level::Warn,
            format!("on_failure hook for agent {agent} exited with {s}"),
        ),
        Err(e) => (
            Level::Warn,
            format!("on_failure hook for agent {agent} could not run: {e}"),
        ),
    };
    events::record_one(
        store,
        cell,
        NewEvent::new(level, EventKind::AgentOnFailure, message)
            .agent(agent)
            .details(json!({ "hook": hook })),
        now,
    )
}

/// A pending revival request (`auto_revive: ask`).
#[derive(Debug, Clone, Serialize)]
pub struct Request {
    /// The request's id.
    pub id: String,
    /// The cell.
    pub cell: String,
    /// The agent.
    pub agent: String,
    /// When it was filed.
    pub at: Option<String>,
    /// How the agent died.
    pub cause: Option<String>,
}

/// Every pending request of the given cells, and the agent files that do not read (whose
/// requests, if any, cannot be seen), as the revive pass reports them.
pub fn requests(store: &dyn Store, cells: &[String]) -> Result<(Vec<Request>, Vec<Error>)> {
    let mut out = Vec::new();
    let mut unreadable = Vec::new();
    for cell in cells {
        let (agents, errors) = crate::ops::agent::load_all(store, cell)?;
        unreadable.extend(errors);
        for a in agents {
            let Some(r) = a.revive_request.filter(|r| !r.approved) else {
                continue;
            };
            out.push(Request {
                id: r.id,
                cell: cell.clone(),
                agent: a.agent_id,
                at: r.at.map(clock::stamp),
                cause: r.cause,
            });
        }
    }
    Ok((out, unreadable))
}

/// An operator's "revive this agent" (`pas top`'s `r`): a pending request (auto_revive:
/// ask) is approved, as `pas revive approve`; otherwise one pass for the agent alone, as
/// `pas revive CELL --agent AGENT`, which does nothing to an agent that runs or backs off.
pub fn revive_on_request(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    launch: supervisor::Launch,
    now: DateTime<Utc>,
) -> Result<CellPass> {
    let pending = requests(store, &[cell.to_string()])?
        .0
        .into_iter()
        .find(|r| r.agent == agent);
    match pending {
        Some(r) => settle(store, r, true, launch, now),
        None => pass_cell(
            store,
            cell,
            &Options {
                dry_run: false,
                agent: Some(agent.to_string()),
                launch,
                nodes: None,
            },
            now,
        ),
    }
}

/// Approves (revives now) or denies (fails the agent) a pending request, found by id in
/// any cell.
pub fn decide(
    store: &dyn Store,
    id: &str,
    approve: bool,
    launch: supervisor::Launch,
    now: DateTime<Utc>,
) -> Result<CellPass> {
    let cells = store.cell_ids()?;
    let (pending, unreadable) = requests(store, &cells)?;
    let Some(req) = pending.into_iter().find(|r| r.id == id) else {
        let hint = match unreadable.first() {
            Some(e) => format!(
                "`pas revive requests` lists them; {} agent file(s) could not be read, the first: {}",
                unreadable.len(),
                e.message
            ),
            None => "`pas revive requests` lists them".to_string(),
        };
        return Err(Error::not_found(format!("no pending revival request {id}")).hint(hint));
    };
    settle(store, req, approve, launch, now)
}

/// Carries out the decision on a request already found.
fn settle(
    store: &dyn Store,
    req: Request,
    approve: bool,
    launch: supervisor::Launch,
    now: DateTime<Utc>,
) -> Result<CellPass> {
    let id = &req.id;
    if approve {
        let event = NewEvent::new(
            Level::Info,
            EventKind::AgentReviveApproved,
            format!("revival request {id} approved"),
        )
        .agent(&req.agent);
        store::update_agent_with(store, &req.cell, &req.agent, now, vec![event], &mut |d| {
            Agent::edit(d, |a| {
                if let Some(r) = &mut a.revive_request {
                    r.approved = true;
                }
            })
        })?;
        return pass_cell(
            store,
            &req.cell,
            &Options {
                dry_run: false,
                agent: Some(req.agent),
                launch,
                nodes: None,
            },
            now,
        );
    }
    let p = crate::ops::policy::load(store, &req.cell, None)?;
    let _revive = store.lock(&req.cell, LockKey::Revive)?;
    fail_for_good(
        store,
        &req.cell,
        &req.agent,
        &p,
        &format!("revival request {id} was denied"),
        &launch,
        now,
    )?;
    Ok(CellPass::default())
}

/// Clears an agent's restart tally by hand (`pas agent reset`), and un-fails it.
pub fn reset(store: &dyn Store, cell: &str, agent: &str, now: DateTime<Utc>) -> Result<()> {
    crate::ops::agent::read(store, cell, agent)?;
    let _revive = store.lock(cell, LockKey::Revive)?;
    let event = NewEvent::new(
        Level::Info,
        EventKind::AgentReset,
        format!("agent {agent}'s restart tally cleared by hand"),
    )
    .agent(agent);
    store::update_agent_with(store, cell, agent, now, vec![event], &mut |d| {
        Agent::edit(d, |a| {
            a.restart_attempts = 0;
            a.recent_deaths.clear();
            a.cooldown_until = None;
            a.next_restart_at = None;
            a.failed_reason = None;
            a.hung_reported = None;
            a.revive_request = None;
            a.revival = None;
            if a.status == AgentStatus::Failed {
                a.status = AgentStatus::Active;
                crate::ops::agent::activated(a, AgentStatus::Failed, now);
            }
        })
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FsStore;

    /// A root in a temporary directory, removed at the end.
    struct TempRoot(std::path::PathBuf);

    impl Drop for TempRoot {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A hand-written active cell `c1` with the agent files given (name, content).
    fn cell_with(agents: &[(&str, String)]) -> TempRoot {
        let root =
            TempRoot(std::env::temp_dir().join(format!("pas-revive-{}", uuid::Uuid::new_v4())));
        let cell = root.0.join("c1");
        for dir in [
            "agents",
            "tasks",
            "checkpoints",
            "artifacts",
            "config",
            "logs",
        ] {
            std::fs::create_dir_all(cell.join(dir)).unwrap();
        }
        let cell_json = r#"{"cell_id": "c1", "mission_name": "M", "created_at": "2026-01-01T00:00:00Z", "status": "active"}"#;
        std::fs::write(cell.join("cell.json"), cell_json).unwrap();
        for (name, text) in agents {
            std::fs::write(cell.join("agents").join(name), text).unwrap();
        }
        root
    }

    #[test]
    fn an_agent_file_that_does_not_read_is_an_error_and_the_others_are_handled() {
        let now = clock::now();
        let dead = |id: &str, attempts: &str| {
            format!(
                r#"{{"agent_id": "{id}", "status": "active", "command": ["true"], "pid": null,
                "exit": {{"at": "{}", "cause": "exit", "code": 1}}, "restart_attempts": {attempts}}}"#,
                clock::stamp(now)
            )
        };
        let root = cell_with(&[
            ("a1.json", dead("a1", "0")),
            ("a2.json", dead("a2", "\"2\"")),
            ("a3.json", "{ not json".to_string()),
        ]);
        let store = FsStore::new(&root.0);
        let dry = |agent: Option<&str>| Options {
            dry_run: true,
            agent: agent.map(str::to_string),
            ..Options::default()
        };

        let pass = pass_cell_each(&store, "c1", &dry(None), now).unwrap();
        let done: Vec<(&str, &str)> = pass
            .actions
            .iter()
            .map(|a| (a.agent.as_str(), a.action.as_str()))
            .collect();
        assert_eq!(done, [("a1", "backing_off")], "a1 is handled");
        let messages: Vec<&str> = pass.errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with("agents/a2.json restart_attempts: \"2\" is a string")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m.contains("agents/a3.json")),
            "{messages:?}"
        );
        assert!(
            pass.next_due.is_some(),
            "a1's backoff still sets the deadline"
        );

        // As one result: the first error, saying the others were handled.
        let err = pass_cell(&store, "c1", &dry(None), now).unwrap_err();
        assert_eq!(err.kind, Kind::Data);
        assert!(
            err.message
                .ends_with("(and 1 more agent error(s)); the cell's other agents were handled"),
            "{}",
            err.message
        );

        // One agent asked for: only its own file counts.
        assert_eq!(
            pass_cell(&store, "c1", &dry(Some("a1")), now)
                .unwrap()
                .actions
                .len(),
            1
        );
        for (agent, file) in [
            ("a2", "agents/a2.json restart_attempts"),
            ("a3", "agents/a3.json"),
        ] {
            let err = pass_cell(&store, "c1", &dry(Some(agent)), now).unwrap_err();
            assert!(err.message.contains(file), "{}", err.message);
        }
        let none = pass_cell(&store, "c1", &dry(Some("a9")), now).unwrap();
        assert!(
            none.actions.is_empty(),
            "an agent that does not exist is nothing to do"
        );
    }
}
