//! Revival: what to do about each agent whose process died or hangs, by policy, exactly once.
//!
//! Every decision is made from the files under the cell's revive lock, so a cron `pas
//! revive`, a running `pas watch` and an operator never restart one agent twice, and killing
//! any of them loses nothing: the restart count, the time of the next allowed restart, the
//! recent deaths, the cooldown and pending requests all live in the agent file.
//!
//! For a dead agent: `auto_revive` (`no` fails it, `ask` files a request), `restart_policy`
//! (`always`, `on-failure`, `never`) and the exit-code lists, `max_restarts`, the restart
//! storm limit (cool down, then try again), exponential backoff, a usable checkpoint when
//! `checkpoint_required`, and a `revive_timeout` for the first beat after the restart.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::checkpoint;
use crate::clock;
use crate::doc::Doc;
use crate::error::{Error, Result};
use crate::events::{self, Level, NewEvent};
use crate::health::{self, Health};
use crate::policy::Policy;
use crate::process;
use crate::queue;
use crate::store::{self, ConfigFile, Durability, FileKey, LockKey, Store};
use crate::supervisor::{self, ProcState};

/// What a revive pass may do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Decide and report, change nothing.
    pub dry_run: bool,
    /// Only this agent.
    pub agent: Option<String>,
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
    /// What: `revived`, `backing_off`, `cooling_down`, `requested`, `failed`, `idle`,
    /// `hung`, `stopped_hung`, `revival_succeeded`, `revival_timed_out`, `reset`.
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
}

fn secs(s: f64) -> Duration {
    Duration::milliseconds((s * 1000.0).round() as i64)
}

fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The wait before the `attempt`-th restart (from 1): `restart_delay_seconds` ×
/// `backoff_multiplier`^(attempt-1), capped at `max_restart_delay_seconds`.
pub fn backoff_delay(policy: &Policy, attempt: u64) -> f64 {
    let base = policy.non_negative("restart_delay_seconds");
    let multiplier = policy
        .get("backoff_multiplier")
        .and_then(Value::as_f64)
        .filter(|m| *m >= 1.0)
        .unwrap_or(2.0);
    let cap = policy.non_negative("max_restart_delay_seconds");
    let exponent = attempt.saturating_sub(1).min(64) as i32;
    (base * multiplier.powi(exponent)).min(cap)
}

/// Deaths within the storm window ending at `now`.
pub fn deaths_in_window(deaths: &[DateTime<Utc>], window: f64, now: DateTime<Utc>) -> usize {
    deaths
        .iter()
        .filter(|d| (now - **d).num_milliseconds() as f64 / 1000.0 <= window)
        .count()
}

fn recent_deaths(doc: &Doc) -> Vec<DateTime<Utc>> {
    doc.strings("recent_deaths")
        .iter()
        .filter_map(|s| clock::parse(s))
        .collect()
}

fn time_field(doc: &Doc, key: &str) -> Option<DateTime<Utc>> {
    doc.str(key).and_then(clock::parse)
}

struct Ctx<'a> {
    store: &'a dyn Store,
    cell: &'a str,
    agent: &'a str,
    dry_run: bool,
    now: DateTime<Utc>,
    actions: Vec<Action>,
}

impl Ctx<'_> {
    fn act(&mut self, action: &str, message: String) {
        self.actions.push(Action {
            time: clock::stamp(self.now),
            cell: self.cell.to_string(),
            agent: self.agent.to_string(),
            action: action.to_string(),
            message,
            dry_run: self.dry_run,
        });
    }

    fn update(&self, change: &mut dyn FnMut(&mut Doc)) -> Result<Doc> {
        store::update(
            self.store,
            self.cell,
            FileKey::Agent(self.agent),
            LockKey::Agent(self.agent),
            Durability::Durable,
            &mut |d| {
                change(d);
                Ok(())
            },
        )
    }

    fn event(&self, level: Level, kind: &str, message: String, details: Value) -> Result<()> {
        events::record_one(
            self.store,
            self.cell,
            NewEvent::new(level, kind, message)
                .agent(self.agent)
                .details(details),
            self.now,
        )
    }

    fn reread(&self) -> Result<Doc> {
        crate::agent::read(self.store, self.cell, self.agent)
    }
}

/// One revive pass over a cell. Holds the cell's revive lock throughout.
pub fn pass_cell(
    store: &dyn Store,
    cell: &str,
    opts: &Options,
    now: DateTime<Utc>,
) -> Result<CellPass> {
    let _revive = store.lock(cell, LockKey::Revive)?;
    let mut cell_doc = store::read_required(store, cell, FileKey::Cell)?;
    if !opts.dry_run && crate::budget::enforce_time_with(store, cell, &cell_doc, now)? {
        cell_doc = store::read_required(store, cell, FileKey::Cell)?;
    }
    let mut result = CellPass::default();
    if cell_doc.str("status") != Some("active") {
        return Ok(result);
    }
    result.next_due = crate::budget::cell_deadline(&cell_doc);
    let policies = store.read(cell, FileKey::Config(ConfigFile::Policies))?;
    let (observed, _errors) = crate::heartbeat::observe_cell_with(
        store,
        cell,
        &cell_doc,
        policies.as_ref(),
        !opts.dry_run,
        now,
    )?;
    for o in &observed {
        result.next_due = earliest(result.next_due, o.assessment.next_change);
    }
    if !opts.dry_run {
        queue::reap(store, cell, now)?;
    }
    for o in observed {
        let Some(agent) = o.doc.str("agent_id").map(str::to_string) else {
            continue;
        };
        if opts.agent.as_deref().is_some_and(|a| a != agent) {
            continue;
        }
        let mut ctx = Ctx {
            store,
            cell,
            agent: &agent,
            dry_run: opts.dry_run,
            now,
            actions: Vec::new(),
        };
        let due = revive_agent(&mut ctx, &cell_doc, policies.as_ref(), &o.doc)?;
        result.next_due = earliest(result.next_due, due);
        result.actions.append(&mut ctx.actions);
    }
    Ok(result)
}

fn revive_agent(
    ctx: &mut Ctx<'_>,
    cell_doc: &Doc,
    policies: Option<&Doc>,
    observed: &Doc,
) -> Result<Option<DateTime<Utc>>> {
    // The observation has just read the file, under the revive lock: an agent pas cannot
    // start (no command) or should not (not active) is left without reading it again.
    if observed.str("status") != Some("active") || observed.strings("command").is_empty() {
        return Ok(None);
    }
    let mut doc = ctx.reread()?;
    if doc.str("status") != Some("active") || doc.strings("command").is_empty() {
        return Ok(None);
    }
    let policy = Policy::resolve(Some(cell_doc), policies, Some(&doc));
    let now = ctx.now;
    let mut proc_state = supervisor::state(&doc);
    if proc_state == ProcState::Vanished {
        if ctx.dry_run {
            proc_state = ProcState::Exited;
        } else {
            supervisor::record_vanished(ctx.store, ctx.cell, ctx.agent, now)?;
            doc = ctx.reread()?;
            proc_state = supervisor::state(&doc);
        }
    }
    let assessment = health::assess(&doc, &policy, now);

    // A revival in flight: did the agent beat since it was restarted?
    if let Some(revival) = doc.get("revival").filter(|r| r.is_object()).cloned() {
        let started = revival
            .get("started_at")
            .and_then(Value::as_str)
            .and_then(clock::parse);
        let deadline = revival
            .get("deadline")
            .and_then(Value::as_str)
            .and_then(clock::parse);
        let beat_since = match (health::last_heartbeat(&doc), started) {
            (Some(b), Some(s)) => b >= s,
            _ => false,
        };
        if beat_since {
            ctx.act(
                "revival_succeeded",
                format!("agent {} is beating after its restart", ctx.agent),
            );
            if !ctx.dry_run {
                ctx.update(&mut |d| {
                    d.remove("revival");
                })?;
                ctx.event(
                    Level::Info,
                    "agent.revival_succeeded",
                    format!("agent {} revived: first beat after the restart", ctx.agent),
                    revival.clone(),
                )?;
            }
            return Ok(assessment.next_change);
        }
        if proc_state == ProcState::Running {
            if deadline.is_some_and(|d| now <= d) {
                return Ok(deadline);
            }
            ctx.act(
                "revival_timed_out",
                format!(
                    "agent {} sent no beat within revive_timeout; stopping it",
                    ctx.agent
                ),
            );
            if ctx.dry_run {
                return Ok(None);
            }
            ctx.event(
                Level::Error,
                "agent.revival_timed_out",
                format!(
                    "agent {} did not beat within revive_timeout after its restart",
                    ctx.agent
                ),
                revival,
            )?;
            let grace = Some(policy.stop_grace());
            supervisor::stop(ctx.store, ctx.cell, ctx.agent, grace, "watchdog", now)?;
            ctx.now = clock::now();
        }
        if !ctx.dry_run {
            doc = ctx.update(&mut |d| {
                d.remove("revival");
            })?;
            proc_state = supervisor::state(&doc);
        }
    }

    if proc_state == ProcState::Running {
        if assessment.health == Health::Dead {
            if !policy.flag("watchdog", true) {
                if doc.get("hung_reported").is_none_or(|v| v.is_null()) {
                    ctx.act(
                        "hung",
                        format!(
                            "agent {} runs but does not beat (watchdog is off)",
                            ctx.agent
                        ),
                    );
                    if !ctx.dry_run {
                        ctx.update(&mut |d| d.set("hung_reported", clock::stamp(now)))?;
                        ctx.event(
                            Level::Error,
                            "agent.hung",
                            format!(
                                "agent {} runs but does not beat; watchdog is off, leaving it",
                                ctx.agent
                            ),
                            Value::Null,
                        )?;
                    }
                }
                return Ok(None);
            }
            ctx.act(
                "stopped_hung",
                format!(
                    "agent {} runs but does not beat; stopping it (watchdog)",
                    ctx.agent
                ),
            );
            if ctx.dry_run {
                return Ok(None);
            }
            let grace = Some(policy.stop_grace());
            supervisor::stop(ctx.store, ctx.cell, ctx.agent, grace, "watchdog", now)?;
            // Stopping took time: decide what follows at the time it is now.
            ctx.now = clock::now();
            doc = ctx.reread()?;
        } else {
            if doc.get("hung_reported").is_some_and(|v| !v.is_null()) && !ctx.dry_run {
                ctx.update(&mut |d| {
                    d.remove("hung_reported");
                })?;
            }
            // Healthy long enough after a restart: the restart count starts again.
            let attempts = doc.u64("restart_attempts").unwrap_or(0);
            if attempts > 0 && assessment.health == Health::Healthy {
                let since = time_field(&doc, "started_at").unwrap_or(now);
                let reset_at = since + secs(policy.non_negative("restart_reset_after"));
                if now >= reset_at {
                    ctx.act(
                        "reset",
                        format!(
                            "agent {} stayed healthy; its restart count starts again",
                            ctx.agent
                        ),
                    );
                    if !ctx.dry_run {
                        ctx.update(&mut |d| {
                            d.set("restart_attempts", 0);
                            d.set("recent_deaths", json!([]));
                        })?;
                    }
                    return Ok(assessment.next_change);
                }
                return Ok(earliest(assessment.next_change, Some(reset_at)));
            }
            return Ok(assessment.next_change);
        }
    }
    handle_death(ctx, doc, &policy)
}

fn handle_death(ctx: &mut Ctx<'_>, mut doc: Doc, policy: &Policy) -> Result<Option<DateTime<Utc>>> {
    let now = ctx.now;
    let exit = doc.get("exit").cloned().unwrap_or(Value::Null);
    let cause = exit
        .get("cause")
        .and_then(Value::as_str)
        .unwrap_or("vanished")
        .to_string();
    let code = exit.get("code").and_then(Value::as_i64);
    let death_at = exit
        .get("at")
        .and_then(Value::as_str)
        .and_then(clock::parse)
        .unwrap_or(now);
    let death_key = clock::stamp(death_at);

    // Note each death once: the storm tally and the backoff start from it.
    if doc.str("last_death") != Some(death_key.as_str()) && !ctx.dry_run {
        let window = policy.non_negative("storm_window");
        doc = ctx.update(&mut |d| {
            let mut deaths: Vec<String> = recent_deaths(d)
                .into_iter()
                .filter(|t| (now - *t).num_milliseconds() as f64 / 1000.0 <= window)
                .map(clock::stamp)
                .collect();
            deaths.push(death_key.clone());
            d.set("recent_deaths", json!(deaths));
            d.set("last_death", death_key.as_str());
            d.set("next_restart_at", Value::Null);
        })?;
    }

    let how = match (
        cause.as_str(),
        code,
        exit.get("signal").and_then(Value::as_i64),
    ) {
        ("exit", Some(c), _) => format!("exit code {c}"),
        ("signal", _, Some(s)) => format!("signal {s}"),
        (_, _, Some(s)) => format!("{cause}, signal {s}"),
        _ => cause.clone(),
    };
    if code.is_some_and(|c| policy.codes("no_restart_exit_codes").contains(&c)) {
        return settle_idle(ctx, format!("{how} is listed in no_restart_exit_codes"));
    }
    let always = code.is_some_and(|c| policy.codes("always_restart_exit_codes").contains(&c));
    match policy.text("restart_policy", "on-failure") {
        "never" if !always => {
            return final_fail(
                ctx,
                policy,
                &format!("it died ({how}) and restart_policy is never"),
            )
        }
        "on-failure" if !always && cause == "exit" && code == Some(0) => {
            return settle_idle(
                ctx,
                "it exited cleanly (code 0) and restart_policy is on-failure".into(),
            )
        }
        _ => {}
    }
    match policy.text("auto_revive", "yes") {
        "no" => {
            return final_fail(
                ctx,
                policy,
                &format!("it died ({how}) and auto_revive is no"),
            )
        }
        "ask" => {
            let request = doc.get("revive_request").cloned().unwrap_or(Value::Null);
            if request.get("approved") != Some(&Value::Bool(true)) {
                if request.is_null() {
                    let id = format!("r-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
                    ctx.act(
                        "requested",
                        format!(
                            "agent {} died ({how}); revival request {id} waits for approval",
                            ctx.agent
                        ),
                    );
                    if !ctx.dry_run {
                        ctx.update(&mut |d| d.set("revive_request", json!({ "id": id, "at": clock::stamp(now), "cause": how, "approved": false })))?;
                        ctx.event(
                            Level::Warn,
                            "agent.revive_requested",
                            format!(
                                "agent {} died ({how}); approve with `pas revive approve {id}`",
                                ctx.agent
                            ),
                            json!({ "request": id }),
                        )?;
                    }
                }
                return Ok(None);
            }
        }
        _ => {}
    }
    let attempts = doc.u64("restart_attempts").unwrap_or(0);
    let max = policy
        .get("max_restarts")
        .and_then(Value::as_u64)
        .unwrap_or(5);
    if max > 0 && attempts >= max {
        return final_fail(
            ctx,
            policy,
            &format!("it died ({how}) after {attempts} restarts in a row; max_restarts is {max}"),
        );
    }
    if let Some(until) = time_field(&doc, "cooldown_until").filter(|u| *u > now) {
        return Ok(Some(until));
    }
    let storm_limit = policy
        .get("storm_limit")
        .and_then(Value::as_u64)
        .unwrap_or(4);
    let in_window = deaths_in_window(
        &recent_deaths(&doc),
        policy.non_negative("storm_window"),
        now,
    ) as u64;
    if storm_limit > 0 && in_window >= storm_limit {
        let until = now + secs(policy.non_negative("storm_cooldown"));
        ctx.act(
            "cooling_down",
            format!(
                "agent {} died {in_window} times within storm_window; cooling down until {}",
                ctx.agent,
                clock::stamp(until)
            ),
        );
        if !ctx.dry_run {
            ctx.update(&mut |d| {
                d.set("cooldown_until", clock::stamp(until));
                d.set("recent_deaths", json!([]));
                d.set("restart_attempts", 0);
                d.set("next_restart_at", Value::Null);
            })?;
            ctx.event(
                Level::Error,
                "agent.storm",
                format!(
                    "agent {} died {in_window} times in a row quickly; cooling down until {}",
                    ctx.agent,
                    clock::stamp(until)
                ),
                json!({ "deaths": in_window, "until": clock::stamp(until) }),
            )?;
        }
        return Ok(Some(until));
    }
    let next = match time_field(&doc, "next_restart_at") {
        Some(t) => t,
        None => {
            let base = time_field(&doc, "cooldown_until")
                .filter(|c| *c > death_at)
                .unwrap_or(death_at);
            let delay = backoff_delay(policy, attempts + 1);
            let t = base + secs(delay);
            if !ctx.dry_run {
                ctx.update(&mut |d| d.set("next_restart_at", clock::stamp(t)))?;
            }
            if t > now {
                ctx.act(
                    "backing_off",
                    format!(
                        "agent {} died ({how}); restart {} at {} (in {})",
                        ctx.agent,
                        attempts + 1,
                        clock::stamp(t),
                        clock::human_duration((t - now).num_milliseconds() as f64 / 1000.0)
                    ),
                );
            }
            t
        }
    };
    if next > now {
        return Ok(Some(next));
    }
    restart(ctx, doc, policy, attempts + 1, &how)
}

fn restart(
    ctx: &mut Ctx<'_>,
    doc: Doc,
    policy: &Policy,
    attempt: u64,
    how: &str,
) -> Result<Option<DateTime<Utc>>> {
    let now = ctx.now;
    let (store, cell, agent) = (ctx.store, ctx.cell, ctx.agent);
    let generation = match checkpoint::load(store, cell, agent, None) {
        Ok((g, _)) => Some(g),
        Err(e) if policy.flag("checkpoint_required", true) => {
            return final_fail(ctx, policy, &format!("it cannot be revived: {}", e.message))
        }
        Err(_) => None,
    };
    // Resume the current task only if it is still this agent's open work.
    let mut task_note = String::new();
    if let Some(task_id) = doc.str("current_task").map(str::to_string) {
        let still_mine = crate::task::read(store, cell, &task_id).is_ok_and(|t| {
            t.str("status") == Some("in_progress") && t.str("claimed_by") == Some(agent)
        });
        if !still_mine {
            task_note = format!("; task {task_id} is no longer its open work and is not resumed");
        }
    }
    let timeout = policy.non_negative("revive_timeout");
    ctx.act(
        "revived",
        format!(
            "agent {agent} died ({how}); restart {attempt} from checkpoint {}{task_note}",
            generation.map_or("none".into(), |g| g.to_string())
        ),
    );
    if ctx.dry_run {
        return Ok(None);
    }
    if let Some(pgid) = process::recorded_pid(doc.get("pgid")) {
        if process::group_alive(pgid) {
            let grace = policy.stop_grace();
            process::stop_group(pgid, grace).map_err(|e| {
                Error::failure(format!("cannot stop the leftovers of agent {agent}: {e}"))
            })?;
        }
    }
    ctx.update(&mut |d| {
        d.set("restart_count", d.u64("restart_count").unwrap_or(0) + 1);
        d.set("restart_attempts", attempt);
        d.set("next_restart_at", Value::Null);
        d.set("revival", json!({ "started_at": clock::stamp(now), "deadline": clock::stamp(now + secs(timeout)), "attempt": attempt, "generation": generation }));
        d.remove("revive_request");
        if !task_note.is_empty() {
            d.set("current_task", Value::Null);
        }
    })?;
    match supervisor::start(store, cell, agent) {
        Ok(started) => {
            ctx.event(
                Level::Warn,
                "agent.revived",
                format!("agent {agent} restarted (attempt {attempt}, pid {}, checkpoint {}){task_note}", started.pid, generation.map_or("none".into(), |g| g.to_string())),
                json!({ "attempt": attempt, "pid": started.pid, "generation": generation, "cause": how }),
            )?;
            Ok(Some(now + secs(timeout)))
        }
        Err(e) => {
            ctx.update(&mut |d| {
                d.remove("revival");
            })?;
            ctx.event(
                Level::Error,
                "agent.revive_failed",
                format!("agent {agent} could not be restarted: {}", e.message),
                Value::Null,
            )?;
            Ok(Some(now + secs(backoff_delay(policy, attempt + 1))))
        }
    }
}

fn settle_idle(ctx: &mut Ctx<'_>, why: String) -> Result<Option<DateTime<Utc>>> {
    ctx.act(
        "idle",
        format!("agent {} is not restarted: {why}", ctx.agent),
    );
    if !ctx.dry_run {
        ctx.update(&mut |d| {
            d.set("status", "idle");
            d.set("next_restart_at", Value::Null);
        })?;
        ctx.event(
            Level::Info,
            "agent.completed",
            format!("agent {} ended and is not restarted: {why}", ctx.agent),
            Value::Null,
        )?;
    }
    Ok(None)
}

/// Gives up on an agent: `failed`, an error event, its tasks to a substitute or back to the
/// queue, and the policy's `on_failure` hook.
fn final_fail(ctx: &mut Ctx<'_>, policy: &Policy, reason: &str) -> Result<Option<DateTime<Utc>>> {
    ctx.act(
        "failed",
        format!("agent {} has failed for good: {reason}", ctx.agent),
    );
    if ctx.dry_run {
        return Ok(None);
    }
    fail_for_good(ctx.store, ctx.cell, ctx.agent, policy, reason, ctx.now)?;
    Ok(None)
}

/// The final failure of an agent, shared with `pas revive deny`.
pub fn fail_for_good(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    policy: &Policy,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let doc = store::update_agent(store, cell, agent, &mut |d| {
        d.set("status", "failed");
        d.set("failed_reason", reason);
        d.remove("revival");
        d.remove("revive_request");
        d.set("next_restart_at", Value::Null);
        Ok(())
    })?;
    events::record_one(
        store,
        cell,
        NewEvent::new(
            Level::Error,
            "agent.failed",
            format!("agent {agent} has failed for good: {reason}"),
        )
        .agent(agent)
        .details(json!({ "reason": reason })),
        now,
    )?;
    let cell_doc = store.read(cell, FileKey::Cell)?;
    let policies = store.read(cell, FileKey::Config(ConfigFile::Policies))?;
    let healthy = |id: &str| -> bool {
        match store.read(cell, FileKey::Agent(id)) {
            Ok(Some(d)) => {
                let p = Policy::resolve(cell_doc.as_ref(), policies.as_ref(), Some(&d));
                d.str("status") != Some("failed")
                    && health::assess(&d, &p, now).health == Health::Healthy
            }
            _ => false,
        }
    };
    queue::release_tasks(
        store,
        cell,
        agent,
        &policy.list("substitute_agents"),
        &healthy,
        now,
    )?;
    crate::reservation::release_agent(store, cell, agent, "agent failed", now)?;
    if let Some(hook) = policy
        .get("on_failure")
        .and_then(Value::as_str)
        .filter(|h| !h.trim().is_empty())
    {
        run_hook(store, cell, agent, &doc, hook, reason, now)?;
    }
    Ok(())
}

fn run_hook(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    doc: &Doc,
    hook: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let exit = doc.get("exit").cloned().unwrap_or(Value::Null);
    let workspace = store.workspace(cell, Some(agent))?;
    let log = workspace
        .log
        .ok_or_else(|| Error::failure("the agent log is not open"))?;
    let log_err = log
        .try_clone()
        .map_err(|e| Error::failure(format!("cannot open the agent log: {e}")))?;
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(hook)
        .current_dir(&workspace.dir)
        .envs(
            workspace
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_os_str())),
        )
        .env("PAS_CELL", cell)
        .env("PAS_AGENT", agent)
        .env(
            "PAS_CAUSE",
            exit.get("cause")
                .and_then(Value::as_str)
                .unwrap_or("unknown"),
        )
        .env(
            "PAS_EXIT_CODE",
            exit.get("code")
                .and_then(Value::as_i64)
                .map(|c| c.to_string())
                .unwrap_or_default(),
        )
        .env("PAS_REASON", reason)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .status();
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
        NewEvent::new(level, "agent.on_failure", message)
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

/// Every pending request of the given cells.
pub fn requests(store: &dyn Store, cells: &[String]) -> Result<Vec<Request>> {
    let mut out = Vec::new();
    for cell in cells {
        let (agents, _) = crate::agent::read_all(store, cell)?;
        for a in agents {
            let Some(r) = a.get("revive_request").filter(|r| r.is_object()) else {
                continue;
            };
            if r.get("approved") == Some(&Value::Bool(true)) {
                continue;
            }
            out.push(Request {
                id: r
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                cell: cell.clone(),
                agent: a.str("agent_id").unwrap_or_default().to_string(),
                at: r.get("at").and_then(Value::as_str).map(str::to_string),
                cause: r.get("cause").and_then(Value::as_str).map(str::to_string),
            });
        }
    }
    Ok(out)
}

/// An operator's "revive this agent" (`pas top`'s `r`): a pending request (auto_revive:
/// ask) is approved, as `pas revive approve`; otherwise one pass for the agent alone, as
/// `pas revive CELL --agent AGENT`, which does nothing to an agent that runs or backs off.
pub fn revive_on_request(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    now: DateTime<Utc>,
) -> Result<CellPass> {
    let pending = requests(store, &[cell.to_string()])?
        .into_iter()
        .find(|r| r.agent == agent);
    match pending {
        Some(r) => settle(store, r, true, now),
        None => pass_cell(
            store,
            cell,
            &Options {
                dry_run: false,
                agent: Some(agent.to_string()),
            },
            now,
        ),
    }
}

/// Approves (revives now) or denies (fails the agent) a pending request, found by id in
/// any cell.
pub fn decide(store: &dyn Store, id: &str, approve: bool, now: DateTime<Utc>) -> Result<CellPass> {
    let cells = store.cell_ids()?;
    let found = requests(store, &cells)?.into_iter().find(|r| r.id == id);
    let Some(req) = found else {
        return Err(Error::not_found(format!("no pending revival request {id}"))
            .hint("`pas revive requests` lists them"));
    };
    settle(store, req, approve, now)
}

/// Carries out the decision on a request already found.
fn settle(store: &dyn Store, req: Request, approve: bool, now: DateTime<Utc>) -> Result<CellPass> {
    let id = &req.id;
    if approve {
        store::update(
            store,
            &req.cell,
            FileKey::Agent(&req.agent),
            LockKey::Agent(&req.agent),
            Durability::Durable,
            &mut |d| {
                if let Some(Value::Object(mut r)) = d.get("revive_request").cloned() {
                    r.insert("approved".into(), Value::Bool(true));
                    d.set("revive_request", Value::Object(r));
                }
                Ok(())
            },
        )?;
        events::record_one(
            store,
            &req.cell,
            NewEvent::new(
                Level::Info,
                "agent.revive_approved",
                format!("revival request {id} approved"),
            )
            .agent(&req.agent),
            now,
        )?;
        return pass_cell(
            store,
            &req.cell,
            &Options {
                dry_run: false,
                agent: Some(req.agent),
            },
            now,
        );
    }
    let p = crate::policy::load(store, &req.cell, None)?;
    let _revive = store.lock(&req.cell, LockKey::Revive)?;
    fail_for_good(
        store,
        &req.cell,
        &req.agent,
        &p,
        &format!("revival request {id} was denied"),
        now,
    )?;
    Ok(CellPass::default())
}

/// Clears an agent's restart tally by hand (`pas agent reset`), and un-fails it.
pub fn reset(store: &dyn Store, cell: &str, agent: &str, now: DateTime<Utc>) -> Result<()> {
    crate::agent::read(store, cell, agent)?;
    let _revive = store.lock(cell, LockKey::Revive)?;
    store::update_agent(store, cell, agent, &mut |d| {
        d.set("restart_attempts", 0);
        d.set("recent_deaths", json!([]));
        for key in [
            "cooldown_until",
            "next_restart_at",
            "failed_reason",
            "hung_reported",
            "revive_request",
            "revival",
        ] {
            d.remove(key);
        }
        if d.str("status") == Some("failed") {
            d.set("status", "active");
        }
        Ok(())
    })?;
    events::record_one(
        store,
        cell,
        NewEvent::new(
            Level::Info,
            "agent.reset",
            format!("agent {agent}'s restart tally cleared by hand"),
        )
        .agent(agent),
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn policy(json: &str) -> Policy {
        let d = Doc::parse(json.as_bytes(), Path::new("p")).unwrap();
        Policy::resolve(None, Some(&d), None)
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = policy(
            r#"{"restart_delay_seconds": 5, "backoff_multiplier": 2, "max_restart_delay_seconds": 30}"#,
        );
        let delays: Vec<f64> = (1..=5).map(|n| backoff_delay(&p, n)).collect();
        assert_eq!(delays, [5.0, 10.0, 20.0, 30.0, 30.0]);
        let zero = policy(r#"{"restart_delay_seconds": 0}"#);
        assert_eq!(backoff_delay(&zero, 3), 0.0);
    }

    #[test]
    fn only_deaths_inside_the_window_count() {
        let now = clock::parse("2026-11-23T10:10:00Z").unwrap();
        let deaths: Vec<_> = [
            "2026-11-23T10:00:00Z",
            "2026-11-23T10:08:00Z",
            "2026-11-23T10:09:30Z",
        ]
        .iter()
        .map(|s| clock::parse(s).unwrap())
        .collect();
        assert_eq!(deaths_in_window(&deaths, 300.0, now), 2);
        assert_eq!(deaths_in_window(&deaths, 3600.0, now), 3);
    }
}
