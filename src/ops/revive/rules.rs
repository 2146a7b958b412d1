//! The rules of revival: what to do next about one agent, from its state, the effective
//! policy and the time. Pure: no store, no clock, no process is looked at here.
//!
//! [`decide`] answers one [`Decision`] at a time. Most decisions end the agent's turn in a
//! pass (revive it, back off, cool down, file a request, fail it, ...); a few are steps that
//! change the state the rules read (record a vanished process, note a death, stop a hung
//! process, forget a revival that ended, look up the checkpoint), after which the caller
//! reads the state again and asks again. [`crate::ops::revive`] does the reading and the
//! applying, under the cell's revive lock.
//!
//! The order of the rules is the order of the questions: is it ours to revive (active, with
//! a command)? is a revival in flight? does it run (then: hung, or healthy long enough to
//! reset its count)? has it not been started since it was made active (then: start it, no
//! death)? and for a dead one: exit-code lists, `restart_policy`, `auto_revive`,
//! `max_restarts`, a running cooldown, the restart storm, the backoff, and last the
//! checkpoint (none at all: a fresh start; one that cannot be used: failed when
//! `checkpoint_required`).
//!
//! An agent that never beat is judged by its process (unless `heartbeat_required`): its
//! revival succeeds once its process runs, and it is never hung.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::clock;
use crate::model::{self, Agent, AgentStatus, AutoRevive, ExitCause, Field, RestartPolicy};
use crate::ops::health::{Assessment, Health};
use crate::ops::policy::Policy;

/// Where the agent's process is, as the caller observed it (the rules never look).
///
/// A hung agent is one whose process is `Running` while its [`State::health`] is `Dead`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// The process pas started runs (or has just ended and its supervisor is recording
    /// how).
    Running,
    /// Not running: [`State::exit`] says how it ended (nothing on file: never started, or
    /// ended unseen).
    Ended,
    /// Its recorded pid is gone and nobody has recorded how.
    Vanished,
}

/// How the agent last ended, as recorded in its file (`exit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// How; `vanished` when nothing says.
    pub cause: ExitCause,
    /// The exit code, for a normal exit.
    pub code: Option<i64>,
    /// The signal that ended it.
    pub signal: Option<i64>,
    /// When; unknown means "now" to the rules.
    pub at: Option<DateTime<Utc>>,
}

impl Exit {
    /// The agent file's `exit` (none: an unseen end).
    pub fn from_record(exit: Option<&model::Exit>) -> Exit {
        Exit {
            cause: exit.and_then(|e| e.cause).unwrap_or(ExitCause::Vanished),
            code: exit.and_then(|e| e.code),
            signal: exit.and_then(|e| e.signal),
            at: exit.and_then(|e| e.at),
        }
    }

    /// How it died, in the words of every message about it: `exit code 1`, `signal 9`,
    /// `watchdog, signal 15`, `vanished`.
    pub fn how(&self) -> String {
        match (self.cause, self.code, self.signal) {
            (ExitCause::Exit, Some(c), _) => format!("exit code {c}"),
            (ExitCause::Signal, _, Some(s)) => format!("signal {s}"),
            (cause, _, Some(s)) => format!("{cause}, signal {s}"),
            (cause, _, _) => cause.to_string(),
        }
    }
}

/// A restart waiting for the agent's first beat (`revival` in the agent file).
#[derive(Debug, Clone, PartialEq)]
pub struct Revival {
    /// When the restart happened.
    pub started_at: Option<DateTime<Utc>>,
    /// The first beat is due by then (`revive_timeout`).
    pub deadline: Option<DateTime<Utc>>,
    /// The record as pas writes it, for the events that close it.
    pub details: Value,
}

/// A revival request's state (`revive_request`, for `auto_revive: ask`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestState {
    /// None filed.
    None,
    /// Filed, waiting for an operator.
    Pending,
    /// Approved: revive as if `auto_revive` were `yes`.
    Approved,
}

/// The agent's newest checkpoint, as far as a restart is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpoint {
    /// This generation loads and verifies.
    Usable(u64),
    /// It never saved one (none on disk, none recorded): it starts fresh.
    Absent,
    /// One exists (on disk or recorded) but none loads, and why (missing, damaged).
    Unusable(String),
}

/// What only a restart needs to know; looked up when [`decide`] asks for it
/// ([`Decision::Inspect`]), so a pass does not verify every agent's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartFacts {
    /// The checkpoint it would restart from.
    pub checkpoint: Checkpoint,
    /// Whether its `current_task` (if any) is still its open work (in progress, claimed by
    /// it); false when the task cannot be read.
    pub task_open: bool,
}

/// Everything the rules read about one agent.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// `status`: only `active` agents are revived.
    pub status: AgentStatus,
    /// Whether it has a `command` pas can start.
    pub has_command: bool,
    /// Its process.
    pub process: Process,
    /// Not started since it was made active: never started at all, or its last process
    /// ended before `activated_at`. Its end (if any) is not a death.
    pub waiting_start: bool,
    /// It never beat and `heartbeat_required` is off: its process, not heartbeats, says
    /// whether it lives.
    pub process_judged: bool,
    /// How it last ended.
    pub exit: Exit,
    /// Its health now (from heartbeats).
    pub health: Health,
    /// When its health changes next if no beat arrives.
    pub health_changes_at: Option<DateTime<Utc>>,
    /// Its last beat.
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// When its current process started.
    pub started_at: Option<DateTime<Utc>>,
    /// A restart waiting for its first beat.
    pub revival: Option<Revival>,
    /// Reported hung already (watchdog off), so not again.
    pub hung_reported: bool,
    /// Restarts in a row (`restart_attempts`), against `max_restarts`.
    pub restart_attempts: u64,
    /// The next allowed restart, once written down.
    pub next_restart_at: Option<DateTime<Utc>>,
    /// The end of a restart-storm cooldown.
    pub cooldown_until: Option<DateTime<Utc>>,
    /// Deaths noted for the storm tally.
    pub recent_deaths: Vec<DateTime<Utc>>,
    /// The stamp of the last death noted (`last_death`), so each is noted once: compared
    /// as pas writes it (to the microsecond), so a finer time on file is noted once too.
    pub last_death: Option<String>,
    /// A revival request.
    pub request: RequestState,
    /// `current_task`.
    pub current_task: Option<String>,
    /// Looked up on demand; `None` until then.
    pub restart: Option<RestartFacts>,
}

impl State {
    /// The state of an agent as its file has it, with its process as the caller observed
    /// it, its health as assessed and the `heartbeat_required` policy.
    pub fn from_agent(
        agent: &Agent,
        process: Process,
        health: &Assessment,
        heartbeat_required: bool,
    ) -> State {
        let request = match &agent.revive_request {
            None => RequestState::None,
            Some(r) if r.approved => RequestState::Approved,
            Some(_) => RequestState::Pending,
        };
        let waiting_start = match &agent.exit {
            None => agent.started_at.is_none() && agent.pid.is_none(),
            Some(exit) => match (exit.at, agent.activated_at) {
                (Some(ended), Some(activated)) => ended < activated,
                _ => false,
            },
        };
        State {
            status: agent.status,
            has_command: !agent.command.is_empty(),
            process,
            waiting_start,
            process_judged: agent.last_heartbeat.is_none() && !heartbeat_required,
            exit: Exit::from_record(agent.exit.as_ref()),
            health: health.health,
            health_changes_at: health.next_change,
            last_heartbeat: agent.last_heartbeat,
            started_at: agent.started_at,
            revival: agent.revival.as_ref().map(|r| Revival {
                started_at: Some(r.started_at),
                deadline: r.deadline,
                details: r.encode(),
            }),
            hung_reported: agent.hung_reported.is_some(),
            restart_attempts: agent.restart_attempts,
            next_restart_at: agent.next_restart_at,
            cooldown_until: agent.cooldown_until,
            recent_deaths: agent.recent_deaths.clone(),
            last_death: agent.last_death.map(clock::stamp),
            request,
            current_task: agent.current_task.clone(),
            restart: None,
        }
    }

    /// What a dry run, which writes nothing and so cannot read the result back, assumes
    /// after a step: the step's own mark (recorded, forgotten, noted), nothing more. Its
    /// storm tally therefore stays as on file, one death short of a real pass's, as dry
    /// runs always were.
    pub fn assume(&mut self, step: &Decision) {
        match step {
            // Nothing was recorded: judge the death on file.
            Decision::RecordVanished => self.process = Process::Ended,
            Decision::RevivalEnded => self.revival = None,
            Decision::HungRecovered => self.hung_reported = false,
            Decision::NoteDeath { at, .. } => self.last_death = Some(clock::stamp(*at)),
            _ => {}
        }
    }
}

/// What one step of a revive pass does about one agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing now; look again at `until` (never, when `None`, unless something changes).
    Nothing {
        /// When something may need doing.
        until: Option<DateTime<Utc>>,
    },
    /// Step: its pid is gone and nobody saw how; record the death (`agent.vanished`).
    RecordVanished,
    /// The restarted agent beat: the revival is over.
    RevivalSucceeded {
        /// The revival record, for the event.
        details: Value,
        /// When its health changes next.
        next: Option<DateTime<Utc>>,
    },
    /// Step: it runs but sent no beat within `revive_timeout`; stop it (watchdog).
    RevivalTimedOut {
        /// The revival record, for the event.
        details: Value,
    },
    /// Step: the restarted process ended before its first beat; forget the revival.
    RevivalEnded,
    /// It runs but is silent past `heartbeat_ttl` and the watchdog is off: say so, once.
    ReportHung,
    /// Step: it runs but is silent past `heartbeat_ttl`; stop it (watchdog).
    StopHung,
    /// Step: it beats again after being reported hung; forget the report.
    HungRecovered,
    /// Healthy for `restart_reset_after` since its restart: its restart count starts again.
    ResetRestarts {
        /// When its health changes next.
        next: Option<DateTime<Utc>>,
    },
    /// Step: a death not yet in the storm tally; note it (which also clears a stale
    /// `next_restart_at`).
    NoteDeath {
        /// When it died.
        at: DateTime<Utc>,
        /// The tally afterwards: the deaths still inside `storm_window`, and this one.
        recent_deaths: Vec<DateTime<Utc>>,
    },
    /// Step: a restart is due; look up its checkpoint and task ([`RestartFacts`]).
    Inspect,
    /// It is meant to run and has not been started since it was made active: start it
    /// (not a revival: nothing died).
    Start {
        /// When to try again if the process cannot be started.
        retry_at: DateTime<Utc>,
    },
    /// It ended and is not restarted: it goes `idle`.
    Idle {
        /// Why, for the messages.
        why: String,
    },
    /// Give up on it for good: `failed`, its tasks handed on, the `on_failure` hook.
    Fail {
        /// Why, for `failed_reason` and the messages.
        reason: String,
    },
    /// `auto_revive: ask`: file a revival request for an operator.
    Request {
        /// How it died.
        how: String,
    },
    /// Too many deaths within `storm_window`: rest until `until`, then start counting again.
    CoolDown {
        /// The end of the cooldown.
        until: DateTime<Utc>,
        /// The deaths counted.
        deaths: u64,
    },
    /// Restart `attempt` waits until `until` (exponential backoff); write it down.
    BackOff {
        /// The restart it waits for (from 1).
        attempt: u64,
        /// When it may happen.
        until: DateTime<Utc>,
        /// How it died.
        how: String,
    },
    /// Restart it now.
    Revive {
        /// Restarts in a row with this one (from 1).
        attempt: u64,
        /// The checkpoint generation it resumes from; `None`: fresh.
        checkpoint: Option<u64>,
        /// Why it starts fresh (no checkpoint, or one that cannot be used and is not
        /// required); `None` when it resumes from one.
        fresh: Option<String>,
        /// How it died.
        how: String,
        /// Its `current_task`, when that is no longer its open work and is not resumed.
        dropped_task: Option<String>,
        /// Its first beat is due by then (`revive_timeout`).
        deadline: DateTime<Utc>,
        /// When to try again if the process cannot be started.
        retry_at: DateTime<Utc>,
    },
}

/// Seconds as a duration, to the millisecond.
fn secs(s: f64) -> Duration {
    Duration::milliseconds((s * 1000.0).round() as i64)
}

/// The earlier of two optional times (none: no time set).
pub fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
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
    let multiplier = policy.backoff_multiplier();
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

/// What to do next about an agent in `state` under `policy` at `now`.
pub fn decide(state: &State, policy: &Policy, now: DateTime<Utc>) -> Decision {
    // Not ours to revive: stopped, paused, idle, failed, or nothing to start.
    if state.status != AgentStatus::Active || !state.has_command {
        return Decision::Nothing { until: None };
    }
    if state.process == Process::Vanished {
        return Decision::RecordVanished;
    }
    if let Some(revival) = &state.revival {
        return in_revival(state, revival, now);
    }
    if state.process == Process::Running {
        return running(state, policy, now);
    }
    if state.waiting_start {
        return match state.next_restart_at.filter(|t| *t > now) {
            Some(t) => Decision::Nothing { until: Some(t) },
            None => Decision::Start {
                retry_at: now + secs(backoff_delay(policy, 1)),
            },
        };
    }
    dead(state, policy, now)
}

/// How long a claimed revival ([`Revival::started_at`]) may wait for its run to be
/// recorded before others take the claimer for dead and decide again: a start records its
/// run within a second or two.
pub const START_WINDOW: Duration = Duration::seconds(10);

/// A restart waits for its first beat (for an agent judged by its process: for its
/// process to run).
fn in_revival(state: &State, revival: &Revival, now: DateTime<Utc>) -> Decision {
    // Claimed, and no run recorded since: whoever claimed it is starting it now (on a
    // shared store, perhaps a node on another host). Nobody else starts it meanwhile; a
    // claimer that died leaves it to the next look after START_WINDOW.
    if let Some(claimed) = revival.started_at {
        let run_since = state.started_at.is_some_and(|s| s >= claimed);
        let until = claimed + START_WINDOW;
        if state.process != Process::Running && !run_since && now < until {
            return Decision::Nothing { until: Some(until) };
        }
    }
    if state.process_judged {
        return if state.process == Process::Running {
            Decision::RevivalSucceeded {
                details: revival.details.clone(),
                next: state.health_changes_at,
            }
        } else {
            Decision::RevivalEnded
        };
    }
    let beat_since = match (state.last_heartbeat, revival.started_at) {
        (Some(beat), Some(start)) => beat >= start,
        _ => false,
    };
    if beat_since {
        return Decision::RevivalSucceeded {
            details: revival.details.clone(),
            next: state.health_changes_at,
        };
    }
    if state.process != Process::Running {
        return Decision::RevivalEnded;
    }
    match revival.deadline {
        Some(deadline) if now <= deadline => Decision::Nothing {
            until: Some(deadline),
        },
        _ => Decision::RevivalTimedOut {
            details: revival.details.clone(),
        },
    }
}

/// Its process runs: hung, or healthy long enough that its restart count starts again.
fn running(state: &State, policy: &Policy, now: DateTime<Utc>) -> Decision {
    if state.health == Health::Dead {
        if policy.flag("watchdog", true) {
            return Decision::StopHung;
        }
        if state.hung_reported {
            return Decision::Nothing { until: None };
        }
        return Decision::ReportHung;
    }
    if state.hung_reported {
        return Decision::HungRecovered;
    }
    let next = state.health_changes_at;
    if state.restart_attempts == 0 || state.health != Health::Healthy {
        return Decision::Nothing { until: next };
    }
    let since = state.started_at.unwrap_or(now);
    let reset_at = since + secs(policy.non_negative("restart_reset_after"));
    if now >= reset_at {
        Decision::ResetRestarts { next }
    } else {
        Decision::Nothing {
            until: earliest(next, Some(reset_at)),
        }
    }
}

/// It died: note the death, then the rules in order.
fn dead(state: &State, policy: &Policy, now: DateTime<Utc>) -> Decision {
    let exit = &state.exit;
    let death_at = exit.at.unwrap_or(now);
    if state.last_death.as_deref() != Some(clock::stamp(death_at).as_str()) {
        let window = policy.non_negative("storm_window");
        let mut recent_deaths: Vec<DateTime<Utc>> = state
            .recent_deaths
            .iter()
            .copied()
            .filter(|t| (now - *t).num_milliseconds() as f64 / 1000.0 <= window)
            .collect();
        recent_deaths.push(death_at);
        return Decision::NoteDeath {
            at: death_at,
            recent_deaths,
        };
    }
    let how = exit.how();
    let listed = |key: &str| exit.code.is_some_and(|c| policy.codes(key).contains(&c));
    if listed("no_restart_exit_codes") {
        return Decision::Idle {
            why: format!("{how} is listed in no_restart_exit_codes"),
        };
    }
    let always = listed("always_restart_exit_codes");
    match policy.restart_policy() {
        RestartPolicy::Never if !always => {
            return Decision::Fail {
                reason: format!("it died ({how}) and restart_policy is never"),
            }
        }
        RestartPolicy::OnFailure
            if !always && exit.cause == ExitCause::Exit && exit.code == Some(0) =>
        {
            return Decision::Idle {
                why: "it exited cleanly (code 0) and restart_policy is on-failure".into(),
            }
        }
        _ => {}
    }
    match (policy.auto_revive(), state.request) {
        (AutoRevive::No, _) => {
            return Decision::Fail {
                reason: format!("it died ({how}) and auto_revive is no"),
            }
        }
        (AutoRevive::Ask, RequestState::None) => return Decision::Request { how },
        (AutoRevive::Ask, RequestState::Pending) => return Decision::Nothing { until: None },
        _ => {}
    }
    let attempts = state.restart_attempts;
    let max = policy.max_restarts();
    if max > 0 && attempts >= max {
        return Decision::Fail {
            reason: format!(
                "it died ({how}) after {attempts} restarts in a row; max_restarts is {max}"
            ),
        };
    }
    if let Some(until) = state.cooldown_until.filter(|u| *u > now) {
        return Decision::Nothing { until: Some(until) };
    }
    let storm_limit = policy.storm_limit();
    let deaths = deaths_in_window(
        &state.recent_deaths,
        policy.non_negative("storm_window"),
        now,
    ) as u64;
    if storm_limit > 0 && deaths >= storm_limit {
        return Decision::CoolDown {
            until: now + secs(policy.non_negative("storm_cooldown")),
            deaths,
        };
    }
    let attempt = attempts + 1;
    let next = match state.next_restart_at {
        Some(t) => t,
        None => {
            // After a cooldown the backoff starts from its end, not from the death.
            let base = state
                .cooldown_until
                .filter(|c| *c > death_at)
                .unwrap_or(death_at);
            let until = base + secs(backoff_delay(policy, attempt));
            if until > now {
                return Decision::BackOff {
                    attempt,
                    until,
                    how,
                };
            }
            until
        }
    };
    if next > now {
        return Decision::Nothing { until: Some(next) };
    }
    let Some(facts) = &state.restart else {
        return Decision::Inspect;
    };
    let (checkpoint, fresh) = match &facts.checkpoint {
        Checkpoint::Usable(generation) => (Some(*generation), None),
        Checkpoint::Absent => (None, Some("it has no checkpoint".to_string())),
        Checkpoint::Unusable(why) if policy.flag("checkpoint_required", true) => {
            return Decision::Fail {
                reason: format!("it cannot be revived: {why}"),
            }
        }
        Checkpoint::Unusable(why) => (
            None,
            Some(format!("{why}, and checkpoint_required is false")),
        ),
    };
    Decision::Revive {
        attempt,
        checkpoint,
        fresh,
        how,
        dropped_task: state.current_task.clone().filter(|_| !facts.task_open),
        deadline: now + secs(policy.non_negative("revive_timeout")),
        retry_at: now + secs(backoff_delay(policy, attempt + 1)),
    }
}

#[cfg(test)]
mod tests {
    //! Table tests: one row per rule. Times are seconds from T0 (10:00:00), when the agent
    //! of the death rows died; policies are the defaults plus what a row sets. The tables
    //! are kept one row to a rule by hand (`rustfmt::skip`).

    use super::*;
    use crate::doc::Doc;
    use crate::model::field::At;
    use crate::ops::health;
    use serde_json::json;
    use std::path::Path;

    fn t(s: f64) -> DateTime<Utc> {
        clock::parse("2026-11-23T10:00:00Z").unwrap() + secs(s)
    }

    /// The policy of a root whose `pas.toml` `[policies]` is `layer`: read as it is, so a
    /// word pas does not know reaches the rules (a policy file would be refused).
    fn policy(layer: &Value) -> Policy {
        Policy::of(layer.as_object().unwrap(), None, None, None)
    }

    /// `layer` with `key` set.
    fn and(mut layer: Value, key: &str, value: Value) -> Value {
        layer[key] = value;
        layer
    }

    fn exit(cause: ExitCause, code: Option<i64>, signal: Option<i64>) -> Exit {
        Exit {
            cause,
            code,
            signal,
            at: Some(t(0.0)),
        }
    }

    fn code(c: i64) -> Exit {
        exit(ExitCause::Exit, Some(c), None)
    }

    fn signal(s: i64) -> Exit {
        exit(ExitCause::Signal, None, Some(s))
    }

    /// An active agent that died at T0 with exit code 1, the death noted, nothing else on
    /// file, and a usable checkpoint (generation 3).
    fn dead() -> State {
        State {
            status: AgentStatus::Active,
            has_command: true,
            process: Process::Ended,
            waiting_start: false,
            process_judged: false,
            exit: code(1),
            health: Health::Dead,
            health_changes_at: None,
            last_heartbeat: Some(t(-100.0)),
            started_at: Some(t(-200.0)),
            revival: None,
            hung_reported: false,
            restart_attempts: 0,
            next_restart_at: None,
            cooldown_until: None,
            recent_deaths: vec![t(0.0)],
            last_death: Some(clock::stamp(t(0.0))),
            request: RequestState::None,
            current_task: None,
            restart: Some(RestartFacts {
                checkpoint: Checkpoint::Usable(3),
                task_open: true,
            }),
        }
    }

    /// An active agent running since T0-600, healthy, last beat at T0, next change at T0+30.
    fn running() -> State {
        State {
            process: Process::Running,
            exit: Exit::from_record(None),
            health: Health::Healthy,
            health_changes_at: Some(t(30.0)),
            last_heartbeat: Some(t(0.0)),
            started_at: Some(t(-600.0)),
            recent_deaths: vec![],
            last_death: None,
            restart: None,
            ..dead()
        }
    }

    /// A revival started at T0-10 with its first beat due at T0+50.
    fn revival() -> Revival {
        Revival {
            started_at: Some(t(-10.0)),
            deadline: Some(t(50.0)),
            details: json!({"attempt": 1}),
        }
    }

    impl State {
        fn with(mut self, edit: impl FnOnce(&mut State)) -> State {
            edit(&mut self);
            self
        }
    }

    fn nothing(until: Option<f64>) -> Decision {
        Decision::Nothing {
            until: until.map(t),
        }
    }

    /// Restart `attempt` at `now` from checkpoint 3, with the default revive_timeout (300 s)
    /// and a retry `retry_in` seconds later if the process cannot be started.
    fn revive(how: &str, attempt: u64, now: f64, retry_in: f64) -> Decision {
        Decision::Revive {
            attempt,
            checkpoint: Some(3),
            fresh: None,
            how: how.into(),
            dropped_task: None,
            deadline: t(now + 300.0),
            retry_at: t(now + retry_in),
        }
    }

    fn back_off(attempt: u64, until: f64, how: &str) -> Decision {
        Decision::BackOff {
            attempt,
            until: t(until),
            how: how.into(),
        }
    }

    fn fail(reason: &str) -> Decision {
        Decision::Fail {
            reason: reason.into(),
        }
    }

    fn idle(why: &str) -> Decision {
        Decision::Idle { why: why.into() }
    }

    /// One rule: its words, the policy layer, the state, the time, the answer.
    type Row = (&'static str, Value, State, f64, Decision);

    /// Checks every row and reports all that fail, not just the first.
    fn check(rows: Vec<Row>) {
        let count = rows.len();
        let failures: Vec<String> = rows
            .into_iter()
            .filter_map(|(rule, layer, state, now, want)| {
                let got = decide(&state, &policy(&layer), t(now));
                (got != want).then(|| {
                    format!("{rule}\n   policy {layer}\n   want {want:?}\n   got  {got:?}")
                })
            })
            .collect();
        assert!(
            failures.is_empty(),
            "{} of {count} rows fail:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    #[test]
    #[rustfmt::skip]
    fn agents_pas_does_not_own_are_left_alone() {
        let status = |st: AgentStatus| move |s: &mut State| s.status = st;
        let vanished = |s: &mut State| s.process = Process::Vanished;
        let hung = |s: &mut State| { s.process = Process::Running; s.health = Health::Dead; };
        check(vec![
            ("paused, dead: untouched",
                json!({}), dead().with(status(AgentStatus::Paused)), 10.0, nothing(None)),
            ("idle, dead: untouched",
                json!({}), dead().with(status(AgentStatus::Idle)), 10.0, nothing(None)),
            ("failed, dead: untouched",
                json!({}), dead().with(status(AgentStatus::Failed)), 10.0, nothing(None)),
            // A status pas does not know ("stopped") is refused when the file is read.
            ("no status (read as idle): untouched",
                json!({}), dead().with(|s| s.status = AgentStatus::default()), 10.0,
                nothing(None)),
            ("no command: nothing pas could start",
                json!({}), dead().with(|s| s.has_command = false), 10.0, nothing(None)),
            ("paused, vanished: not even recorded",
                json!({}), dead().with(status(AgentStatus::Paused)).with(vanished), 10.0, nothing(None)),
            ("paused, hung: not stopped",
                json!({}), dead().with(status(AgentStatus::Paused)).with(hung), 10.0, nothing(None)),
            ("failed, a death not noted: not noted",
                json!({}), dead().with(status(AgentStatus::Failed)).with(|s| s.last_death = None), 10.0,
                nothing(None)),
            ("paused with a revival past its deadline: untouched",
                json!({}), running().with(status(AgentStatus::Paused)).with(|s| s.revival = Some(revival())),
                100.0, nothing(None)),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn a_death_is_recorded_and_noted_once_before_any_rule() {
        check(vec![
            ("vanished: record it first",
                json!({}), dead().with(|s| s.process = Process::Vanished), 10.0,
                Decision::RecordVanished),
            ("vanished with a revival in flight: record it first",
                json!({}),
                running().with(|s| { s.process = Process::Vanished; s.revival = Some(revival()); }),
                10.0, Decision::RecordVanished),
            ("a death not noted yet: note it; the tally keeps the deaths inside storm_window",
                json!({"storm_window": 300}),
                dead().with(|s| {
                    s.last_death = Some(clock::stamp(t(-100.0)));
                    s.recent_deaths = vec![t(-400.0), t(-100.0)];
                }),
                10.0, Decision::NoteDeath { at: t(0.0), recent_deaths: vec![t(-100.0), t(0.0)] }),
            ("a death exactly storm_window old stays in the tally",
                json!({"storm_window": 300}),
                dead().with(|s| { s.last_death = None; s.recent_deaths = vec![t(-290.0)]; }),
                10.0, Decision::NoteDeath { at: t(0.0), recent_deaths: vec![t(-290.0), t(0.0)] }),
            ("an end with no time on file died now",
                json!({}),
                dead().with(|s| {
                    s.exit = Exit::from_record(None);
                    s.last_death = None;
                    s.recent_deaths = vec![];
                }),
                10.0, Decision::NoteDeath { at: t(10.0), recent_deaths: vec![t(10.0)] }),
            ("noted before the rules, even an exit the rules leave idle",
                json!({}),
                dead().with(|s| { s.exit = code(0); s.last_death = None; s.recent_deaths = vec![]; }),
                10.0, Decision::NoteDeath { at: t(0.0), recent_deaths: vec![t(0.0)] }),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn restart_policy_and_the_exit_code_lists() {
        let died = |e: Exit| dead().with(move |s| s.exit = e);
        let restart = |how: &str| revive(how, 1, 10.0, 1.0);
        let clean = "it exited cleanly (code 0) and restart_policy is on-failure";
        check(vec![
            ("on-failure, exit 1: restart",
                json!({}), died(code(1)), 10.0, restart("exit code 1")),
            ("on-failure, exit 0: idle",
                json!({}), died(code(0)), 10.0, idle(clean)),
            ("on-failure spelled out is the default",
                json!({"restart_policy": "on-failure"}), died(code(0)), 10.0, idle(clean)),
            ("on-failure, killed by signal 9: restart",
                json!({}), died(signal(9)), 10.0, restart("signal 9")),
            ("on-failure, stopped by the watchdog: restart",
                json!({}), died(exit(ExitCause::Watchdog, None, Some(15))), 10.0,
                restart("watchdog, signal 15")),
            ("on-failure, vanished: restart",
                json!({}), died(exit(ExitCause::Vanished, None, None)), 10.0, restart("vanished")),
            ("on-failure, killed by its memory limit: restart",
                json!({}), died(exit(ExitCause::Oom, None, Some(9))), 10.0, restart("oom, signal 9")),
            ("on-failure, failed at another limit: restart",
                json!({}), died(exit(ExitCause::Limit, Some(1), None)), 10.0, restart("limit")),
            ("never, killed by its memory limit: failed",
                json!({"restart_policy": "never"}), died(exit(ExitCause::Oom, None, Some(9))), 10.0,
                fail("it died (oom, signal 9) and restart_policy is never")),
            ("max_restarts counts oom deaths like any crash",
                json!({"max_restarts": 2}),
                died(exit(ExitCause::Oom, None, Some(9))).with(|s| s.restart_attempts = 2), 10.0,
                fail("it died (oom, signal 9) after 2 restarts in a row; max_restarts is 2")),
            ("always, exit 0: restart",
                json!({"restart_policy": "always"}), died(code(0)), 10.0, restart("exit code 0")),
            ("always, exit 1: restart",
                json!({"restart_policy": "always"}), died(code(1)), 10.0, restart("exit code 1")),
            ("an unknown restart_policy is the default, on-failure (validate reports it)",
                json!({"restart_policy": "sometimes"}), died(code(0)), 10.0, idle(clean)),
            ("never, exit 0: failed",
                json!({"restart_policy": "never"}), died(code(0)), 10.0,
                fail("it died (exit code 0) and restart_policy is never")),
            ("never, exit 1: failed",
                json!({"restart_policy": "never"}), died(code(1)), 10.0,
                fail("it died (exit code 1) and restart_policy is never")),
            ("never, a signal: failed",
                json!({"restart_policy": "never"}), died(signal(9)), 10.0,
                fail("it died (signal 9) and restart_policy is never")),
            ("never, but the code is in always_restart_exit_codes: restart",
                json!({"restart_policy": "never", "always_restart_exit_codes": [3]}), died(code(3)),
                10.0, restart("exit code 3")),
            ("never, a code not in always_restart_exit_codes: failed",
                json!({"restart_policy": "never", "always_restart_exit_codes": [3]}), died(code(4)),
                10.0, fail("it died (exit code 4) and restart_policy is never")),
            ("on-failure, exit 0 in always_restart_exit_codes: restart",
                json!({"always_restart_exit_codes": [0]}), died(code(0)), 10.0,
                restart("exit code 0")),
            ("no_restart_exit_codes wins over always",
                json!({"restart_policy": "always", "no_restart_exit_codes": [0]}), died(code(0)),
                10.0, idle("exit code 0 is listed in no_restart_exit_codes")),
            ("no_restart_exit_codes wins over always_restart_exit_codes",
                json!({"no_restart_exit_codes": [2], "always_restart_exit_codes": [2]}),
                died(code(2)), 10.0, idle("exit code 2 is listed in no_restart_exit_codes")),
            ("no_restart_exit_codes wins over auto_revive: no",
                json!({"no_restart_exit_codes": [1], "auto_revive": "no"}), died(code(1)), 10.0,
                idle("exit code 1 is listed in no_restart_exit_codes")),
            ("no_restart_exit_codes does not match a signal",
                json!({"no_restart_exit_codes": [0, 9]}), died(signal(9)), 10.0,
                restart("signal 9")),
            ("a code list that is not a list is empty",
                json!({"no_restart_exit_codes": "1"}), died(code(1)), 10.0,
                restart("exit code 1")),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn auto_revive_yes_no_and_ask() {
        let asked = |q: RequestState| dead().with(move |s| s.request = q);
        let restart = revive("exit code 1", 1, 10.0, 1.0);
        let ask = json!({"auto_revive": "ask"});
        check(vec![
            ("yes: restart",
                json!({"auto_revive": "yes"}), dead(), 10.0, restart.clone()),
            ("no: failed",
                json!({"auto_revive": "no"}), dead(), 10.0,
                fail("it died (exit code 1) and auto_revive is no")),
            ("false, as the mission-cell spec writes it: no",
                json!({"auto_revive": false}), dead(), 10.0,
                fail("it died (exit code 1) and auto_revive is no")),
            ("true, as the mission-cell spec writes it: yes",
                json!({"auto_revive": true}), dead(), 10.0, restart.clone()),
            ("an unknown word is the default, yes (validate reports it)",
                json!({"auto_revive": "maybe"}), dead(), 10.0, restart.clone()),
            ("no, but a clean exit under on-failure: idle, not failed",
                json!({"auto_revive": "no"}), dead().with(|s| s.exit = code(0)), 10.0,
                idle("it exited cleanly (code 0) and restart_policy is on-failure")),
            ("no, and restart_policy never: the restart_policy reason",
                json!({"auto_revive": "no", "restart_policy": "never"}), dead(), 10.0,
                fail("it died (exit code 1) and restart_policy is never")),
            ("ask, nothing filed: file a request",
                ask.clone(), asked(RequestState::None), 10.0,
                Decision::Request { how: "exit code 1".into() }),
            ("ask, a request pending: nothing new",
                ask.clone(), asked(RequestState::Pending), 10.0, nothing(None)),
            ("ask, approved: restart",
                ask.clone(), asked(RequestState::Approved), 10.0, restart.clone()),
            ("ask, approved, still inside the backoff: back off",
                ask.clone(), asked(RequestState::Approved), 0.2, back_off(1, 0.5, "exit code 1")),
            ("ask, approved, max_restarts reached: failed",
                and(ask.clone(), "max_restarts", json!(1)),
                asked(RequestState::Approved).with(|s| s.restart_attempts = 1), 10.0,
                fail("it died (exit code 1) after 1 restarts in a row; max_restarts is 1")),
            ("ask files a request before max_restarts is looked at",
                and(ask, "max_restarts", json!(1)),
                asked(RequestState::None).with(|s| s.restart_attempts = 1), 10.0,
                Decision::Request { how: "exit code 1".into() }),
            ("yes ignores a stale request",
                json!({}), asked(RequestState::Pending), 10.0, restart),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn max_restarts_in_a_row() {
        let after = |n: u64| dead().with(move |s| s.restart_attempts = n);
        let quick = json!({"restart_delay_seconds": 0});
        let max = |m: Value| and(quick.clone(), "max_restarts", m);
        let failed = |n: u64, max: u64| fail(&format!(
            "it died (exit code 1) after {n} restarts in a row; max_restarts is {max}"));
        check(vec![
            ("no limit by default: restart 101",
                quick.clone(), after(100), 10.0, revive("exit code 1", 101, 10.0, 0.0)),
            ("4 of 5: restart 5",
                max(json!(5)), after(4), 10.0, revive("exit code 1", 5, 10.0, 0.0)),
            ("5 of 5: failed",
                max(json!(5)), after(5), 10.0, failed(5, 5)),
            ("1 of 2: restart 2",
                max(json!(2)), after(1), 10.0, revive("exit code 1", 2, 10.0, 0.0)),
            ("2 of 2: failed",
                max(json!(2)), after(2), 10.0, failed(2, 2)),
            ("more than a limit lowered since: failed",
                max(json!(2)), after(7), 10.0, failed(7, 2)),
            ("0 means no limit",
                max(json!(0)), after(1000), 10.0, revive("exit code 1", 1001, 10.0, 0.0)),
            ("a limit that is not a count is the default, no limit",
                max(json!("two")), after(5), 10.0, revive("exit code 1", 6, 10.0, 0.0)),
            ("checked before a running cooldown",
                max(json!(2)), after(2).with(|s| s.cooldown_until = Some(t(100.0))), 10.0,
                failed(2, 2)),
            ("checked before the storm",
                and(max(json!(2)), "storm_limit", json!(1)), after(2), 10.0, failed(2, 2)),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn a_restart_storm_cools_down_and_its_end_starts_the_backoff() {
        let deaths = |d: &[f64]| {
            let d: Vec<_> = d.iter().copied().map(t).collect();
            dead().with(move |s| s.recent_deaths = d)
        };
        let cooling = |until: f64| move |s: &mut State| s.cooldown_until = Some(t(until));
        let storm = json!({"storm_limit": 2, "storm_window": 60, "storm_cooldown": 5,
            "restart_delay_seconds": 5});
        let restart = |now: f64| revive("exit code 1", 1, now, 10.0);
        check(vec![
            ("2 deaths within 60 s, limit 2: cool down for storm_cooldown",
                storm.clone(), deaths(&[-30.0, 0.0]), 10.0,
                Decision::CoolDown { until: t(15.0), deaths: 2 }),
            ("1 death within the window: no storm",
                storm.clone(), deaths(&[-100.0, 0.0]), 10.0, restart(10.0)),
            ("no storm limit by default: the backoff slows a crash loop",
                json!({}), deaths(&[-4.0, -3.0, -2.0, -1.0, 0.0]), 10.0,
                revive("exit code 1", 1, 10.0, 1.0)),
            ("storm_limit 4: 4 deaths within the default 300 s, the default 600 s of rest",
                json!({"storm_limit": 4}), deaths(&[-200.0, -100.0, -50.0, 0.0]), 10.0,
                Decision::CoolDown { until: t(610.0), deaths: 4 }),
            ("storm_limit 4: 3 deaths are not a storm",
                json!({"storm_limit": 4}), deaths(&[-100.0, -50.0, 0.0]), 10.0,
                revive("exit code 1", 1, 10.0, 1.0)),
            ("storm_limit 0: never a storm",
                json!({"storm_limit": 0}), deaths(&[-4.0, -3.0, -2.0, -1.0, 0.0]), 10.0,
                revive("exit code 1", 1, 10.0, 1.0)),
            ("cooling down: nothing until its end",
                storm.clone(), deaths(&[]).with(cooling(15.0)), 10.0, nothing(Some(15.0))),
            ("cooling down: a storm is not counted again",
                storm.clone(), deaths(&[-30.0, 0.0]).with(cooling(15.0)), 10.0,
                nothing(Some(15.0))),
            ("the cooldown over: the backoff starts from its end, not from the death",
                storm.clone(), deaths(&[0.0]).with(cooling(8.0)), 10.0,
                back_off(1, 13.0, "exit code 1")),
            ("the cooldown and the backoff over: restart",
                storm.clone(), deaths(&[0.0]).with(cooling(8.0)), 13.0, restart(13.0)),
            ("a cooldown that ended before the death: the backoff starts from the death",
                storm, deaths(&[0.0]).with(cooling(-50.0)), 3.0, back_off(1, 5.0, "exit code 1")),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn backoff_is_written_down_once_and_waited_for() {
        let p = json!({"restart_delay_seconds": 5, "backoff_multiplier": 2, "max_restart_delay_seconds": 60});
        let after = |n: u64| dead().with(move |s| s.restart_attempts = n);
        let planned = |at: f64| move |s: &mut State| s.next_restart_at = Some(t(at));
        let how = "exit code 1";
        check(vec![
            ("first restart: restart_delay_seconds after the death",
                p.clone(), after(0), 1.0, back_off(1, 5.0, how)),
            ("second restart: backoff_multiplier times longer",
                p.clone(), after(1), 1.0, back_off(2, 10.0, how)),
            ("third restart: multiplied again",
                p.clone(), after(2), 1.0, back_off(3, 20.0, how)),
            ("capped at max_restart_delay_seconds",
                and(p.clone(), "max_restarts", json!(0)), after(9), 1.0, back_off(10, 60.0, how)),
            ("written down already: wait for it, write nothing",
                p.clone(), after(0).with(planned(5.0)), 1.0, nothing(Some(5.0))),
            ("written down, and the policy changed since: the written time holds",
                json!({"restart_delay_seconds": 1}), after(0).with(planned(8.0)), 2.0,
                nothing(Some(8.0))),
            ("written down and due: restart",
                p.clone(), after(0).with(planned(5.0)), 5.0, revive(how, 1, 5.0, 10.0)),
            ("computed and due exactly now: restart (nothing to write down)",
                p.clone(), after(0), 5.0, revive(how, 1, 5.0, 10.0)),
            ("restart_delay_seconds 0: restart at once",
                json!({"restart_delay_seconds": 0}), after(0), 0.0, revive(how, 1, 0.0, 0.0)),
            ("a failed start is retried after the next delay",
                p.clone(), after(1), 10.0, revive(how, 2, 10.0, 20.0)),
            ("not due: the checkpoint is not looked at",
                p, after(0).with(|s| s.restart = None), 1.0, back_off(1, 5.0, how)),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn a_restart_needs_a_usable_checkpoint_when_required() {
        let facts = |checkpoint: Checkpoint, task_open: bool| dead().with(move |s| {
            s.restart = Some(RestartFacts { checkpoint, task_open });
            s.current_task = Some("t1".into());
        });
        let damaged = || Checkpoint::Unusable("generation 3 of agent a1 is damaged".into());
        // Restart 1 at T0+10: its first beat due by T0+310, a retry after the second delay.
        let from = |checkpoint: Option<u64>, fresh: Option<&str>, dropped: Option<&str>| Decision::Revive {
            attempt: 1,
            checkpoint,
            fresh: fresh.map(str::to_string),
            how: "exit code 1".into(),
            dropped_task: dropped.map(str::to_string),
            deadline: t(310.0),
            retry_at: t(11.0),
        };
        check(vec![
            ("due, not looked up yet: look up the checkpoint",
                json!({}), dead().with(|s| s.restart = None), 10.0, Decision::Inspect),
            ("usable: resume from it",
                json!({}), facts(Checkpoint::Usable(3), true), 10.0, from(Some(3), None, None)),
            ("never saved one: fresh, whatever checkpoint_required says",
                json!({}), facts(Checkpoint::Absent, true), 10.0,
                from(None, Some("it has no checkpoint"), None)),
            ("never saved one, checkpoint_required said out loud: fresh",
                json!({"checkpoint_required": true}), facts(Checkpoint::Absent, true), 10.0,
                from(None, Some("it has no checkpoint"), None)),
            ("one that cannot be used, checkpoint_required (the default): failed closed",
                json!({}), facts(damaged(), true), 10.0,
                fail("it cannot be revived: generation 3 of agent a1 is damaged")),
            ("one that cannot be used, not required: fresh, saying why",
                json!({"checkpoint_required": false}), facts(damaged(), true), 10.0,
                from(None, Some("generation 3 of agent a1 is damaged, and checkpoint_required is false"), None)),
            ("usable and not required: still resumes from it",
                json!({"checkpoint_required": false}), facts(Checkpoint::Usable(7), true), 10.0,
                from(Some(7), None, None)),
            ("its task is no longer its open work: not resumed",
                json!({}), facts(Checkpoint::Usable(3), false), 10.0, from(Some(3), None, Some("t1"))),
            ("no current task: nothing dropped",
                json!({}), facts(Checkpoint::Usable(3), false).with(|s| s.current_task = None),
                10.0, from(Some(3), None, None)),
            ("revive_timeout sets the first beat's deadline",
                json!({"revive_timeout": 30}), dead(), 10.0,
                Decision::Revive { attempt: 1, checkpoint: Some(3), fresh: None, how: "exit code 1".into(),
                    dropped_task: None, deadline: t(40.0), retry_at: t(11.0) }),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn a_revival_ends_with_the_first_beat_or_at_its_deadline() {
        // Restarted at T0-10, first beat due at T0+50; its last beat is from before.
        let in_flight = |edit: fn(&mut State)| running().with(|s| {
            s.revival = Some(revival());
            s.last_heartbeat = Some(t(-100.0));
            s.started_at = Some(t(-10.0));
            s.health = Health::Unknown;
            s.health_changes_at = Some(t(50.0));
        }).with(edit);
        let succeeded = |next: f64| Decision::RevivalSucceeded {
            details: json!({"attempt": 1}), next: Some(t(next)) };
        let timed_out = || Decision::RevivalTimedOut { details: json!({"attempt": 1}) };
        check(vec![
            ("a beat since the restart: succeeded",
                json!({}),
                in_flight(|s| {
                    s.last_heartbeat = Some(t(-5.0));
                    s.health = Health::Healthy;
                    s.health_changes_at = Some(t(25.0));
                }),
                0.0, succeeded(25.0)),
            ("a beat at the very moment of the restart counts",
                json!({}), in_flight(|s| s.last_heartbeat = Some(t(-10.0))), 0.0, succeeded(50.0)),
            ("only a beat from before the restart: wait for the deadline",
                json!({}), in_flight(|_| {}), 0.0, nothing(Some(50.0))),
            ("never beat at all: wait for the deadline",
                json!({}), in_flight(|s| s.last_heartbeat = None), 0.0, nothing(Some(50.0))),
            ("at the deadline exactly: still waiting",
                json!({}), in_flight(|_| {}), 50.0, nothing(Some(50.0))),
            ("past the deadline, still running: timed out (stop it)",
                json!({}), in_flight(|_| {}), 51.0, timed_out()),
            ("no deadline on file: timed out",
                json!({}), in_flight(|s| s.revival.as_mut().unwrap().deadline = None), 0.0,
                timed_out()),
            ("no start on file: a beat is never a success",
                json!({}),
                in_flight(|s| {
                    s.revival.as_mut().unwrap().started_at = None;
                    s.last_heartbeat = Some(t(0.0));
                }),
                51.0, timed_out()),
            ("ended before its first beat: forget the revival",
                json!({}), in_flight(|s| { s.process = Process::Ended; s.exit = code(1); }), 0.0,
                Decision::RevivalEnded),
            ("beat, then ended: succeeded first (the death is the next step)",
                json!({}),
                in_flight(|s| { s.process = Process::Ended; s.last_heartbeat = Some(t(-5.0)); }),
                0.0, succeeded(50.0)),
            ("silent past heartbeat_ttl while in revival: the deadline decides, not the watchdog",
                json!({}), in_flight(|s| s.health = Health::Dead), 0.0, nothing(Some(50.0))),
            ("claimed, its run not recorded yet: the claimer is starting it, wait",
                json!({}), in_flight(|s| { s.process = Process::Ended; s.started_at = Some(t(-200.0)); }),
                -1.0, nothing(Some(0.0))),
            ("claimed, never run at all: wait as well",
                json!({}), in_flight(|s| { s.process = Process::Ended; s.started_at = None; }),
                -5.0, nothing(Some(0.0))),
            ("claimed, no run recorded within START_WINDOW: the claimer died, forget the revival",
                json!({}), in_flight(|s| { s.process = Process::Ended; s.started_at = Some(t(-200.0)); }),
                0.5, Decision::RevivalEnded),
            ("claimed, process judged, not run yet: wait too",
                json!({}),
                in_flight(|s| { s.process = Process::Ended; s.started_at = None; s.process_judged = true; }),
                -1.0, nothing(Some(0.0))),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn an_agent_meant_to_run_that_was_not_started_is_started_not_revived() {
        // Active, never started: no process, no end on file, nothing noted.
        let never = || dead().with(|s| {
            s.waiting_start = true;
            s.exit = Exit::from_record(None);
            s.last_death = None;
            s.recent_deaths = vec![];
            s.started_at = None;
            s.last_heartbeat = None;
            s.process_judged = true;
            s.health = Health::Down;
        });
        let start = |at: f64| Decision::Start { retry_at: t(at) };
        check(vec![
            ("never started: start it (no death noted, no restart counted)",
                json!({}), never(), 10.0, start(10.5)),
            ("never started, a failed start waits for its retry",
                json!({}), never().with(|s| s.next_restart_at = Some(t(12.0))), 10.0,
                nothing(Some(12.0))),
            ("never started, the retry is due: start it",
                json!({}), never().with(|s| s.next_restart_at = Some(t(12.0))), 12.0, start(12.5)),
            ("the retry follows restart_delay_seconds",
                json!({"restart_delay_seconds": 3}), never(), 10.0, start(13.0)),
            ("stopped, then made active again: its end is no death",
                json!({}), dead().with(|s| { s.waiting_start = true; s.exit = signal(15); }), 10.0,
                start(10.5)),
            ("a clean exit, made active again: started, not left idle",
                json!({}), dead().with(|s| { s.waiting_start = true; s.exit = code(0); }), 10.0,
                start(10.5)),
            ("made active, but its pid is gone unseen: recorded first",
                json!({}), never().with(|s| s.process = Process::Vanished), 10.0,
                Decision::RecordVanished),
            ("made active while it runs: nothing to start",
                json!({}), running().with(|s| s.waiting_start = true), 0.0, nothing(Some(30.0))),
            ("not active: not started",
                json!({}), never().with(|s| s.status = AgentStatus::Idle), 10.0, nothing(None)),
            ("no command: nothing to start",
                json!({}), never().with(|s| s.has_command = false), 10.0, nothing(None)),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn an_agent_judged_by_its_process_is_revived_once_it_runs() {
        // Never beat: its revival cannot wait for a first beat.
        let in_flight = |process: Process| running().with(move |s| {
            s.process = process;
            s.process_judged = true;
            s.last_heartbeat = None;
            s.revival = Some(revival());
            s.health = Health::Healthy;
            s.health_changes_at = None;
        });
        check(vec![
            ("runs: the revival succeeded",
                json!({}), in_flight(Process::Running), 0.0,
                Decision::RevivalSucceeded { details: json!({"attempt": 1}), next: None }),
            ("runs past revive_timeout without a beat: still a success, never timed out",
                json!({}), in_flight(Process::Running), 100.0,
                Decision::RevivalSucceeded { details: json!({"attempt": 1}), next: None }),
            ("ended: the revival is over, the death comes next",
                json!({}), in_flight(Process::Ended), 0.0, Decision::RevivalEnded),
            ("runs without beating, not in revival: never hung",
                json!({}), running().with(|s| { s.process_judged = true; s.last_heartbeat = None; s.health_changes_at = None; }),
                0.0, nothing(None)),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn a_running_agent_is_hung_or_healthy_enough_to_reset() {
        let hung = |s: &mut State| { s.health = Health::Dead; s.health_changes_at = None; };
        let health = |h: Health, next: f64| move |s: &mut State| {
            s.health = h;
            s.health_changes_at = Some(t(next));
        };
        let after = |n: u64| running().with(move |s| s.restart_attempts = n);
        let started = |at: Option<f64>| move |s: &mut State| s.started_at = at.map(t);
        check(vec![
            ("healthy: look again when its health would change",
                json!({}), running(), 0.0, nothing(Some(30.0))),
            ("late: nothing yet",
                json!({}), running().with(health(Health::Late, 60.0)), 40.0, nothing(Some(60.0))),
            ("down: nothing yet",
                json!({}), running().with(health(Health::Down, 90.0)), 70.0, nothing(Some(90.0))),
            ("starting, no beat yet: nothing yet",
                json!({}), running().with(health(Health::Unknown, 60.0)), 0.0,
                nothing(Some(60.0))),
            ("hung (runs, silent past heartbeat_ttl): stop it",
                json!({}), running().with(hung), 100.0, Decision::StopHung),
            ("hung, watchdog on explicitly: stop it",
                json!({"watchdog": true}), running().with(hung), 100.0, Decision::StopHung),
            ("hung, watchdog off: report it",
                json!({"watchdog": false}), running().with(hung), 100.0, Decision::ReportHung),
            ("hung, watchdog off, reported already: nothing",
                json!({"watchdog": false}), running().with(hung).with(|s| s.hung_reported = true),
                100.0, nothing(None)),
            ("beating again after a report: forget the report",
                json!({"watchdog": false}), running().with(|s| s.hung_reported = true), 0.0,
                Decision::HungRecovered),
            ("restarted, healthy for restart_reset_after: the count starts again",
                json!({"restart_reset_after": 600}), after(2), 0.0,
                Decision::ResetRestarts { next: Some(t(30.0)) }),
            ("restarted, healthy, not long enough: look again at the health change first",
                json!({"restart_reset_after": 600}), after(2).with(started(Some(-100.0))), 0.0,
                nothing(Some(30.0))),
            ("restarted, healthy, the reset comes first: look again then",
                json!({"restart_reset_after": 20}), after(2).with(started(Some(-10.0))), 0.0,
                nothing(Some(10.0))),
            ("restarted but degraded: no reset",
                json!({"restart_reset_after": 0}), after(2).with(health(Health::Degraded, 30.0)),
                0.0, nothing(Some(30.0))),
            ("no start on file: healthy since now",
                json!({"restart_reset_after": 0}), after(2).with(started(None)), 0.0,
                Decision::ResetRestarts { next: Some(t(30.0)) }),
            ("no start on file, the default restart_reset_after (600 s) to go",
                json!({}), after(2).with(started(None)), 0.0, nothing(Some(30.0))),
            ("never restarted: nothing to reset",
                json!({"restart_reset_after": 0}), after(0), 0.0, nothing(Some(30.0))),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn backoff_delay_grows_is_capped_and_falls_back_to_defaults() {
        let five = json!({"restart_delay_seconds": 5, "backoff_multiplier": 2,
            "max_restart_delay_seconds": 30});
        let times = |m: Value| and(five.clone(), "backoff_multiplier", m);
        let rows: Vec<(&str, Value, &[u64], &[f64])> = vec![
            ("doubles, then the cap",
                five.clone(), &[1, 2, 3, 4, 5], &[5.0, 10.0, 20.0, 30.0, 30.0]),
            ("the defaults: 0.5 s doubling up to 60 s",
                json!({}), &[1, 2, 3, 6, 7, 8, 9], &[0.5, 1.0, 2.0, 16.0, 32.0, 60.0, 60.0]),
            ("attempt 0 waits like the first",
                five.clone(), &[0], &[5.0]),
            ("a huge attempt is the cap, not an overflow",
                five.clone(), &[u64::MAX], &[30.0]),
            ("no delay: always 0",
                json!({"restart_delay_seconds": 0}), &[1, 3, 100], &[0.0, 0.0, 0.0]),
            ("a cap of 0: always 0",
                json!({"max_restart_delay_seconds": 0}), &[1, 2], &[0.0, 0.0]),
            ("a cap below the first delay: the cap",
                json!({"restart_delay_seconds": 10, "max_restart_delay_seconds": 3}), &[1, 2],
                &[3.0, 3.0]),
            ("multiplier 1: constant",
                times(json!(1)), &[1, 4], &[5.0, 5.0]),
            ("a fractional multiplier",
                times(json!(1.5)), &[1, 2, 3], &[5.0, 7.5, 11.25]),
            ("a multiplier below 1 is taken as 2",
                times(json!(0.5)), &[1, 2], &[5.0, 10.0]),
            ("a multiplier that is not a number is taken as 2",
                times(json!("fast")), &[2], &[10.0]),
            ("an enormous multiplier is the cap",
                times(json!(1e300)), &[64], &[30.0]),
            ("a negative delay is the default 0.5 s",
                json!({"restart_delay_seconds": -1}), &[1], &[0.5]),
            ("fractions of a second",
                json!({"restart_delay_seconds": 0.5}), &[1, 2, 3], &[0.5, 1.0, 2.0]),
        ];
        for (rule, layer, attempts, want) in rows {
            let p = policy(&layer);
            let got: Vec<f64> = attempts.iter().map(|n| backoff_delay(&p, *n)).collect();
            assert_eq!(got, want, "{rule}: {layer}");
        }
    }

    #[test]
    fn only_deaths_inside_the_window_count() {
        let now = t(600.0);
        let deaths: Vec<_> = [0.0, 480.0, 570.0].into_iter().map(t).collect();
        assert_eq!(deaths_in_window(&deaths, 300.0, now), 2);
        assert_eq!(deaths_in_window(&deaths, 3600.0, now), 3);
        assert_eq!(
            deaths_in_window(&deaths, 120.0, now),
            2,
            "exactly window old"
        );
        assert_eq!(deaths_in_window(&deaths, 0.0, now), 0);
        assert_eq!(
            deaths_in_window(&[t(700.0)], 0.0, now),
            1,
            "clock stepped back"
        );
        assert_eq!(deaths_in_window(&[], 300.0, now), 0);
    }

    #[test]
    fn how_an_agent_died_reads_the_same_everywhere() {
        let rows = [
            (json!({"cause": "exit", "code": 3}), "exit code 3"),
            (json!({"cause": "signal", "signal": 9}), "signal 9"),
            (
                json!({"cause": "watchdog", "signal": 15}),
                "watchdog, signal 15",
            ),
            (json!({"cause": "watchdog", "code": 0}), "watchdog"),
            (json!({"cause": "exit"}), "exit"),
            (json!({}), "vanished"),
            (Value::Null, "vanished"),
        ];
        for (exit, how) in rows {
            let record = (!exit.is_null())
                .then(|| model::Exit::decode(&exit, &At::file("agents/a1.json")).unwrap());
            assert_eq!(Exit::from_record(record.as_ref()).how(), how, "{exit}");
        }
        assert_eq!(Exit::from_record(None).how(), "vanished");
    }

    /// The state of the agent file `doc`, at T0+10 under the default policy.
    fn state_of(doc: &Doc) -> crate::error::Result<State> {
        let agent = Agent::from_doc(doc)?;
        let assessment = health::assess(&agent, &policy(&json!({})), t(10.0));
        Ok(State::from_agent(
            &agent,
            Process::Ended,
            &assessment,
            false,
        ))
    }

    #[test]
    fn the_state_is_read_from_the_agent_file() {
        let file = json!({
            "agent_id": "a1", "status": "active", "command": ["run"],
            "exit": {"at": "2026-11-23T10:00:00Z", "cause": "exit", "code": 2},
            "last_heartbeat": "2026-11-23T09:59:00Z", "started_at": "2026-11-23T09:50:00Z",
            "revival": {"started_at": "2026-11-23T09:50:00.000000Z",
                "deadline": "2026-11-23T09:55:00.000000Z", "attempt": 1, "generation": null},
            "hung_reported": null, "restart_attempts": 2,
            "next_restart_at": "2026-11-23T10:00:05Z", "cooldown_until": null,
            "recent_deaths": ["2026-11-23T09:59:00Z"],
            "last_death": "2026-11-23T09:59:00.000000Z",
            "revive_request": {"id": "r-1", "approved": false}, "current_task": "t1"
        });
        let doc = Doc::parse(file.to_string().as_bytes(), Path::new("a1.json")).unwrap();
        let read = |d: &Doc| state_of(d).unwrap();
        let s = read(&doc);
        assert_eq!(s.status, AgentStatus::Active);
        assert!(s.has_command);
        assert_eq!(s.exit, code(2));
        assert_eq!(s.last_heartbeat, Some(t(-60.0)));
        assert_eq!(s.started_at, Some(t(-600.0)));
        let r = s.revival.as_ref().unwrap();
        assert_eq!(
            (r.started_at, r.deadline),
            (Some(t(-600.0)), Some(t(-300.0)))
        );
        assert_eq!(r.details, file["revival"]);
        assert!(!s.hung_reported, "null is not a report");
        assert_eq!(s.restart_attempts, 2);
        assert_eq!(s.next_restart_at, Some(t(5.0)));
        assert_eq!(s.cooldown_until, None);
        assert_eq!(s.recent_deaths, vec![t(-60.0)]);
        assert_eq!(s.last_death.as_deref(), Some("2026-11-23T09:59:00.000000Z"));
        assert_eq!(s.request, RequestState::Pending);
        assert_eq!(s.current_task.as_deref(), Some("t1"));
        assert_eq!(s.restart, None, "looked up only when a restart is due");

        let with = |key: &str, value: Value| {
            let mut d = doc.clone();
            d.set(key, value);
            state_of(&d)
        };
        let request = |r: Value| with("revive_request", r).unwrap().request;
        assert_eq!(request(Value::Null), RequestState::None);
        assert_eq!(
            request(json!({"id": "r-1", "approved": true})),
            RequestState::Approved
        );

        // What pas cannot read is refused, naming the file and the field, not guessed at.
        for (key, value, place) in [
            (
                "recent_deaths",
                json!(["2026-11-23T09:59:00Z", "garbage"]),
                "recent_deaths[1]",
            ),
            ("revive_request", json!("odd"), "revive_request"),
            ("status", json!("stopped"), "status"),
            ("exit", json!({"cause": "crashed"}), "exit.cause"),
        ] {
            let err = with(key, value).unwrap_err();
            assert_eq!(err.kind, crate::error::Kind::Data);
            assert!(
                err.message
                    .starts_with(&format!("agents/a1.json {place}: ")),
                "{}",
                err.message
            );
        }

        let mut bare = doc.clone();
        for key in ["command", "revival", "revive_request", "exit", "status"] {
            bare.remove(key);
        }
        bare.set("hung_reported", "2026-11-23T10:00:00Z");
        let s = read(&bare);
        assert!(!s.has_command && s.hung_reported && s.revival.is_none());
        assert_eq!(s.request, RequestState::None);
        assert_eq!(s.exit, Exit::from_record(None));
        assert_eq!(s.status, AgentStatus::Idle, "no status reads as idle");
    }

    /// The decisions of a dry pass, which assumes what it cannot write and read back; the
    /// checkpoint it looks up is generation 3.
    fn dry_pass(mut state: State, layer: Value, now: f64) -> Vec<Decision> {
        let p = policy(&layer);
        let mut steps = Vec::new();
        loop {
            let d = decide(&state, &p, t(now));
            steps.push(d.clone());
            match d {
                Decision::RecordVanished
                | Decision::RevivalEnded
                | Decision::HungRecovered
                | Decision::NoteDeath { .. } => state.assume(&d),
                Decision::Inspect => {
                    state.restart = Some(RestartFacts {
                        checkpoint: Checkpoint::Usable(3),
                        task_open: true,
                    })
                }
                _ => return steps,
            }
        }
    }

    #[test]
    fn a_pass_walks_the_steps_to_one_answer() {
        // Vanished mid-revival, with the end of the last process on file: recorded (a dry
        // run judges the end on file), the revival forgotten, the death noted, the
        // checkpoint looked up, restarted.
        let steps = dry_pass(
            running().with(|s| {
                s.process = Process::Vanished;
                s.revival = Some(revival());
                s.exit = signal(9);
                s.last_heartbeat = Some(t(-100.0));
                s.restart_attempts = 1;
            }),
            json!({"restart_delay_seconds": 0}),
            10.0,
        );
        let noted = Decision::NoteDeath {
            at: t(0.0),
            recent_deaths: vec![t(0.0)],
        };
        assert_eq!(
            steps,
            [
                Decision::RecordVanished,
                Decision::RevivalEnded,
                noted,
                Decision::Inspect,
                revive("signal 9", 2, 10.0, 0.0),
            ]
        );
        // A dry run keeps the tally as on file: the death it would note is not counted, so
        // it backs off where a real pass (the tally with the death) cools down.
        let unnoted = dead().with(|s| {
            s.last_death = None;
            s.recent_deaths = vec![t(-10.0)];
        });
        let storm = json!({"storm_limit": 2, "restart_delay_seconds": 5});
        let steps = dry_pass(unnoted.clone(), storm.clone(), 1.0);
        assert_eq!(steps[1..], [back_off(1, 5.0, "exit code 1")]);
        let Decision::NoteDeath { recent_deaths, .. } = &steps[0] else {
            panic!("{steps:?}")
        };
        let written = unnoted.with(|s| {
            s.recent_deaths = recent_deaths.clone();
            s.last_death = Some(clock::stamp(t(0.0)));
        });
        assert_eq!(
            decide(&written, &policy(&storm), t(1.0)),
            Decision::CoolDown {
                until: t(601.0),
                deaths: 2
            }
        );
        // Hung, watchdog off, beating again: the report forgotten, then the reset.
        let steps = dry_pass(
            running().with(|s| {
                s.hung_reported = true;
                s.restart_attempts = 3;
            }),
            json!({"watchdog": false}),
            0.0,
        );
        assert_eq!(
            steps,
            [
                Decision::HungRecovered,
                Decision::ResetRestarts {
                    next: Some(t(30.0))
                }
            ]
        );
    }
}
