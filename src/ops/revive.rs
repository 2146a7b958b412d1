//! The rules of revival: what to do next about one agent, from its state, the effective
//! policy and the time. Pure: no store, no clock, no process is looked at here.
//!
//! [`decide`] answers one [`Decision`] at a time. Most decisions end the agent's turn in a
//! pass (revive it, back off, cool down, file a request, fail it, ...); a few are steps that
//! change the state the rules read (record a vanished process, note a death, stop a hung
//! process, forget a revival that ended, look up the checkpoint), after which the caller
//! reads the state again and asks again. [`crate::revive`] does the reading and the
//! applying, under the cell's revive lock.
//!
//! The order of the rules is the order of the questions: is it ours to revive (active, with
//! a command)? is a revival in flight? does it run (then: hung, or healthy long enough to
//! reset its count)? and for a dead one: exit-code lists, `restart_policy`, `auto_revive`,
//! `max_restarts`, a running cooldown, the restart storm, the backoff, and last the
//! checkpoint.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::clock;
use crate::doc::Doc;
use crate::health::{self, Health};
use crate::policy::Policy;

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
    /// `exit`, `signal`, `watchdog`, `vanished`...; `vanished` when nothing says.
    pub cause: String,
    /// The exit code, for a normal exit.
    pub code: Option<i64>,
    /// The signal that ended it.
    pub signal: Option<i64>,
    /// When; unknown means "now" to the rules.
    pub at: Option<DateTime<Utc>>,
}

impl Exit {
    /// Reads the agent file's `exit` (missing or null: an unseen end).
    pub fn from_value(exit: Option<&Value>) -> Exit {
        let exit = exit.unwrap_or(&Value::Null);
        Exit {
            cause: exit
                .get("cause")
                .and_then(Value::as_str)
                .unwrap_or("vanished")
                .to_string(),
            code: exit.get("code").and_then(Value::as_i64),
            signal: exit.get("signal").and_then(Value::as_i64),
            at: exit
                .get("at")
                .and_then(Value::as_str)
                .and_then(clock::parse),
        }
    }

    /// How it died, in the words of every message about it: `exit code 1`, `signal 9`,
    /// `watchdog, signal 15`, `vanished`.
    pub fn how(&self) -> String {
        match (self.cause.as_str(), self.code, self.signal) {
            ("exit", Some(c), _) => format!("exit code {c}"),
            ("signal", _, Some(s)) => format!("signal {s}"),
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
    /// The record as on file, for the events that close it.
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
    /// None loads, and why (missing, damaged).
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
    pub status: Option<String>,
    /// Whether it has a `command` pas can start.
    pub has_command: bool,
    /// Its process.
    pub process: Process,
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
    /// The stamp of the last death noted (`last_death`), so each is noted once.
    pub last_death: Option<String>,
    /// A revival request.
    pub request: RequestState,
    /// `current_task`.
    pub current_task: Option<String>,
    /// Looked up on demand; `None` until then.
    pub restart: Option<RestartFacts>,
}

impl State {
    /// Reads the state from an agent file, the process as the caller observed it, and the
    /// health at `now`.
    pub fn from_doc(doc: &Doc, process: Process, policy: &Policy, now: DateTime<Utc>) -> State {
        let time = |key: &str| doc.str(key).and_then(clock::parse);
        let assessment = health::assess(doc, policy, now);
        let revival = doc
            .get("revival")
            .filter(|r| r.is_object())
            .map(|r| Revival {
                started_at: r
                    .get("started_at")
                    .and_then(Value::as_str)
                    .and_then(clock::parse),
                deadline: r
                    .get("deadline")
                    .and_then(Value::as_str)
                    .and_then(clock::parse),
                details: r.clone(),
            });
        let request = match doc.get("revive_request") {
            None | Some(Value::Null) => RequestState::None,
            Some(r) if r.get("approved") == Some(&Value::Bool(true)) => RequestState::Approved,
            Some(_) => RequestState::Pending,
        };
        State {
            status: doc.str("status").map(str::to_string),
            has_command: !doc.strings("command").is_empty(),
            process,
            exit: Exit::from_value(doc.get("exit")),
            health: assessment.health,
            health_changes_at: assessment.next_change,
            last_heartbeat: health::last_heartbeat(doc),
            started_at: time("started_at"),
            revival,
            hung_reported: doc.get("hung_reported").is_some_and(|v| !v.is_null()),
            restart_attempts: doc.u64("restart_attempts").unwrap_or(0),
            next_restart_at: time("next_restart_at"),
            cooldown_until: time("cooldown_until"),
            recent_deaths: doc
                .strings("recent_deaths")
                .iter()
                .filter_map(|s| clock::parse(s))
                .collect(),
            last_death: doc.str("last_death").map(str::to_string),
            request,
            current_task: doc.str("current_task").map(str::to_string),
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
pub fn secs(s: f64) -> Duration {
    Duration::milliseconds((s * 1000.0).round() as i64)
}

/// The earlier of two optional times.
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

/// What to do next about an agent in `state` under `policy` at `now`.
pub fn decide(state: &State, policy: &Policy, now: DateTime<Utc>) -> Decision {
    // Not ours to revive: stopped, paused, idle, failed, or nothing to start.
    if state.status.as_deref() != Some("active") || !state.has_command {
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
    dead(state, policy, now)
}

/// A restart waits for its first beat.
fn in_revival(state: &State, revival: &Revival, now: DateTime<Utc>) -> Decision {
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
    match policy.text("restart_policy", "on-failure") {
        "never" if !always => {
            return Decision::Fail {
                reason: format!("it died ({how}) and restart_policy is never"),
            }
        }
        "on-failure" if !always && exit.cause == "exit" && exit.code == Some(0) => {
            return Decision::Idle {
                why: "it exited cleanly (code 0) and restart_policy is on-failure".into(),
            }
        }
        _ => {}
    }
    match (policy.text("auto_revive", "yes"), state.request) {
        ("no", _) => {
            return Decision::Fail {
                reason: format!("it died ({how}) and auto_revive is no"),
            }
        }
        ("ask", RequestState::None) => return Decision::Request { how },
        ("ask", RequestState::Pending) => return Decision::Nothing { until: None },
        _ => {}
    }
    let attempts = state.restart_attempts;
    let max = policy
        .get("max_restarts")
        .and_then(Value::as_u64)
        .unwrap_or(5);
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
    let storm_limit = policy
        .get("storm_limit")
        .and_then(Value::as_u64)
        .unwrap_or(4);
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
    let checkpoint = match &facts.checkpoint {
        Checkpoint::Usable(generation) => Some(*generation),
        Checkpoint::Unusable(why) if policy.flag("checkpoint_required", true) => {
            return Decision::Fail {
                reason: format!("it cannot be revived: {why}"),
            }
        }
        Checkpoint::Unusable(_) => None,
    };
    Decision::Revive {
        attempt,
        checkpoint,
        how,
        dropped_task: state.current_task.clone().filter(|_| !facts.task_open),
        deadline: now + secs(policy.non_negative("revive_timeout")),
        retry_at: now + secs(backoff_delay(policy, attempt + 1)),
    }
}
