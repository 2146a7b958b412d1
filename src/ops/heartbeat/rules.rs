//! The rules of liveness: an agent's health at a moment ([`assess`]), what a beat changes
//! ([`decide_beat`]), what an observer records ([`decide_observe`]), what a reported failure
//! does ([`decide_failure`]), and what a beat's reply asks of the agent ([`decide_reply`]).
//!
//! Pure: the few fields of the agent file these rules read ([`Vitals`]), the numbers of the
//! policy ([`HealthPolicy`]) and the time come in; a decision comes out, naming every
//! change and the event that describes it. [`crate::ops::heartbeat`] reads the agent file in a
//! store transaction, asks here, and applies the decision in the same transaction.
//!
//! The inputs are narrower than the typed [`Agent`]: a rule can then only depend on what it
//! declares, and a table row states exactly that and nothing else. [`Vitals::of`] fills
//! them from the agent.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crate::clock;
use crate::model::{self, Agent, AgentStatus, CellStatus, EventKind, PendingDirective};
use crate::ops::budget::rules::State;
use crate::ops::health::{Assessment, Health};
use crate::ops::policy::Policy;
use crate::store::events::{Level, NewEvent};

/// What an agent may report about itself: the model's words (`ACTIVE`, `DEGRADED`,
/// `OFFLINE`).
pub use crate::model::ReportedStatus as Reported;

/// The fields of an agent file that liveness depends on.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Vitals {
    /// `status`: `failed` is final for health; `idle` and `failed` become `active` on a
    /// beat; `paused` gets a stop directive.
    pub status: AgentStatus,
    /// `reported_status`; `None` when the agent never said.
    pub reported: Option<Reported>,
    /// `last_heartbeat`.
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// `started_at`: a started agent has `startup_grace` for its first beat.
    pub started_at: Option<DateTime<Utc>>,
    /// `failures`: consecutive recorded failures.
    pub failures: u64,
    /// `heartbeat_count`.
    pub heartbeat_count: u64,
    /// `health` as last recorded (`None`: missing or not a health pas knows).
    pub recorded: Option<Health>,
    /// Whether the process pas started for it runs, as the caller observed it; `None`
    /// when not looked at (it beat already, or pas has no command to run for it). An
    /// agent that never beat is judged by it.
    pub running: Option<bool>,
}

impl Vitals {
    /// The fields of a typed agent.
    pub fn of(agent: &Agent) -> Vitals {
        Vitals {
            status: agent.status,
            reported: agent.reported_status,
            last_heartbeat: agent.last_heartbeat,
            started_at: agent.started_at,
            failures: agent.failures,
            heartbeat_count: agent.heartbeat_count,
            recorded: agent.health,
            running: None,
        }
    }

    /// Whether the agent is judged by its process rather than by heartbeats: it never
    /// beat, its process was looked at, and the policy does not demand beats from the start.
    pub fn process_judged(&self, policy: &HealthPolicy) -> bool {
        self.last_heartbeat.is_none() && self.running.is_some() && !policy.heartbeat_required
    }
}

/// The policy's numbers that liveness depends on, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthPolicy {
    /// `heartbeat_interval`: silence beyond it is `late`.
    pub interval: f64,
    /// `misses_down` × `heartbeat_interval`: silence beyond it is `down`.
    pub down_after: f64,
    /// `heartbeat_ttl`, else `misses_dead` × `heartbeat_interval`: silence beyond it is
    /// `dead`.
    pub dead_after: f64,
    /// `startup_grace`: how long a started agent has for its first beat.
    pub startup_grace: f64,
    /// `failure_threshold` (at least 1): consecutive failures that make a beating agent
    /// `unhealthy` (fewer, but at least one, make it `degraded`).
    pub failure_threshold: u64,
    /// `heartbeat_required`: judge an agent by heartbeats from its start, even before its
    /// first beat; else one that never beat is judged by its process.
    pub heartbeat_required: bool,
}

impl HealthPolicy {
    /// The numbers of an effective policy (missing or invalid values are the defaults, as
    /// [`Policy::positive`] reads them).
    pub fn from_policy(policy: &Policy) -> HealthPolicy {
        HealthPolicy {
            interval: policy.heartbeat_interval(),
            down_after: policy.down_after(),
            dead_after: policy.heartbeat_ttl(),
            startup_grace: policy.startup_grace(),
            failure_threshold: policy.failure_threshold(),
            heartbeat_required: policy.flag("heartbeat_required", false),
        }
    }
}

fn seconds(s: f64) -> Duration {
    Duration::milliseconds((s * 1000.0).round() as i64)
}

fn elapsed(since: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    (now - since).num_milliseconds() as f64 / 1000.0
}

/// How an agent that is alive is doing: `unhealthy` at `failure_threshold` failures in a
/// row, `degraded` with fewer (at least one) or when it reported so, else `healthy`.
fn alive(agent: &Vitals, policy: &HealthPolicy) -> Health {
    if agent.failures >= policy.failure_threshold {
        Health::Unhealthy
    } else if agent.failures > 0 || agent.reported == Some(Reported::Degraded) {
        Health::Degraded
    } else {
        Health::Healthy
    }
}

/// An agent's health at `now`.
///
/// In order: `failed` (pas gave up) and `offline` (it said so) are not judged by silence;
/// an agent that never beat and whose process was looked at is judged by its process
/// (unless `heartbeat_required`): running is alive, not running is `down` when it is meant
/// to run (`active`), else `unknown`; a started agent that has not beaten since its start
/// is `unknown` for `startup_grace`, then `dead`; otherwise silence beyond `dead_after` is
/// `dead`, beyond `down_after` `down`, beyond `interval` `late` (each limit itself still
/// counts as the milder state); an agent alive is `unhealthy` at `failure_threshold`
/// failures, `degraded` with fewer or when it reported so, else `healthy`. Never beaten,
/// process not looked at: `unknown`.
pub fn assess(agent: &Vitals, policy: &HealthPolicy, now: DateTime<Utc>) -> Assessment {
    let last = agent.last_heartbeat;
    let age = last.map(|t| elapsed(t, now).max(0.0));
    let next_change = match (last, age) {
        (Some(t), Some(a)) => [policy.interval, policy.down_after, policy.dead_after]
            .into_iter()
            .filter(|limit| a <= *limit)
            .map(|limit| t + seconds(limit))
            .min(),
        _ => None,
    };
    // A started agent is not judged by heartbeats until its first beat since the start or
    // until startup_grace has passed, whichever comes first.
    let starting = match agent.started_at {
        Some(s) if last.is_none_or(|l| l < s) => Some(s),
        _ => None,
    };
    let health = if agent.status == AgentStatus::Failed {
        Health::Failed
    } else if agent.reported == Some(Reported::Offline) {
        Health::Offline
    } else if agent.process_judged(policy) {
        match agent.running {
            Some(true) => alive(agent, policy),
            _ if agent.status == AgentStatus::Active => Health::Down,
            _ => Health::Unknown,
        }
    } else if let Some(s) = starting {
        if elapsed(s, now) <= policy.startup_grace {
            Health::Unknown
        } else {
            Health::Dead
        }
    } else {
        match age {
            None => Health::Unknown,
            Some(a) if a > policy.dead_after => Health::Dead,
            Some(a) if a > policy.down_after => Health::Down,
            Some(a) if a > policy.interval => Health::Late,
            Some(_) => alive(agent, policy),
        }
    };
    let next_change =
        if matches!(health, Health::Failed | Health::Offline) || agent.process_judged(policy) {
            None
        } else if let (Some(s), Health::Unknown) = (starting, health) {
            Some(s + seconds(policy.startup_grace))
        } else if starting.is_some() {
            None
        } else {
            next_change
        };
    Assessment {
        health,
        age,
        next_change,
    }
}

/// Which event a health change is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionKind {
    /// `agent.alive`: the first beat of an agent never judged before.
    Alive,
    /// `agent.recovered`: beating again after being down or dead.
    Recovered,
    /// `agent.healthy`: healthy again after being late, degraded, unhealthy, ...
    Healthy,
    /// `agent.late`
    Late,
    /// `agent.down`
    Down,
    /// `agent.dead`
    Dead,
    /// `agent.degraded`
    Degraded,
    /// `agent.unhealthy`
    Unhealthy,
    /// `agent.offline`
    Offline,
    /// `agent.failed`
    Failed,
}

impl TransitionKind {
    /// The event kind.
    pub fn event_kind(self) -> EventKind {
        match self {
            TransitionKind::Alive => EventKind::AgentAlive,
            TransitionKind::Recovered => EventKind::AgentRecovered,
            TransitionKind::Healthy => EventKind::AgentHealthy,
            TransitionKind::Late => EventKind::AgentLate,
            TransitionKind::Down => EventKind::AgentDown,
            TransitionKind::Dead => EventKind::AgentDead,
            TransitionKind::Degraded => EventKind::AgentDegraded,
            TransitionKind::Unhealthy => EventKind::AgentUnhealthy,
            TransitionKind::Offline => EventKind::AgentOffline,
            TransitionKind::Failed => EventKind::AgentFailed,
        }
    }
}

/// A health change worth an event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    /// Which event.
    pub kind: TransitionKind,
    /// The health before (`unknown` when nothing was recorded).
    pub from: Health,
    /// The health after.
    pub to: Health,
    /// Seconds of silence at the change, when the agent ever beat.
    pub silent_for: Option<f64>,
    /// Judged by its process (it never beat): the words speak of the process.
    pub by_process: bool,
}

impl Transition {
    /// The transition from `from` (`None`: nothing recorded, i.e. `unknown`) to `to`;
    /// `None` when there is no change, or the change is to `unknown`, which says nothing
    /// happened worth a line in the log.
    pub fn between(from: Option<Health>, to: Health, silent_for: Option<f64>) -> Option<Self> {
        let from = from.unwrap_or(Health::Unknown);
        if from == to {
            return None;
        }
        let kind = match to {
            Health::Healthy if from.is_silent() => TransitionKind::Recovered,
            Health::Healthy if from == Health::Unknown => TransitionKind::Alive,
            Health::Healthy => TransitionKind::Healthy,
            Health::Late => TransitionKind::Late,
            Health::Down => TransitionKind::Down,
            Health::Dead => TransitionKind::Dead,
            Health::Degraded => TransitionKind::Degraded,
            Health::Unhealthy => TransitionKind::Unhealthy,
            Health::Offline => TransitionKind::Offline,
            Health::Failed => TransitionKind::Failed,
            Health::Unknown => return None,
        };
        Some(Transition {
            kind,
            from,
            to,
            silent_for,
            by_process: false,
        })
    }

    /// The same change, judged by the agent's process.
    fn by_process(self, by_process: bool) -> Transition {
        Transition { by_process, ..self }
    }

    /// The event that records it.
    pub fn event(&self, agent_id: &str) -> NewEvent {
        let silent_for = self
            .silent_for
            .map(clock::human_duration)
            .unwrap_or_else(|| "-".into());
        let was = self.from.as_str();
        let (level, message) = match self.kind {
            TransitionKind::Recovered if self.by_process => (
                Level::Info,
                format!("agent {agent_id} is running again (was {was})"),
            ),
            TransitionKind::Alive if self.by_process => {
                (Level::Info, format!("agent {agent_id} is running"))
            }
            TransitionKind::Healthy if self.by_process => (
                Level::Info,
                format!("agent {agent_id} is running, healthy again (was {was})"),
            ),
            TransitionKind::Down if self.by_process => (
                Level::Error,
                format!("agent {agent_id} is down: its process is not running"),
            ),
            TransitionKind::Recovered => (
                Level::Info,
                format!("agent {agent_id} is beating again (was {was})"),
            ),
            TransitionKind::Alive => (Level::Info, format!("agent {agent_id} sent its first beat")),
            TransitionKind::Healthy => (
                Level::Info,
                format!("agent {agent_id} is healthy again (was {was})"),
            ),
            TransitionKind::Late => (
                Level::Warn,
                format!("agent {agent_id} missed a beat ({silent_for} silent)"),
            ),
            TransitionKind::Down => (
                Level::Error,
                format!("agent {agent_id} is down ({silent_for} silent)"),
            ),
            TransitionKind::Dead => (
                Level::Error,
                format!("agent {agent_id} is dead ({silent_for} silent)"),
            ),
            TransitionKind::Degraded => (
                Level::Warn,
                format!("agent {agent_id} is degraded (reported DEGRADED, or failures in a row)"),
            ),
            TransitionKind::Unhealthy => (
                Level::Error,
                format!("agent {agent_id} failed too often in a row"),
            ),
            TransitionKind::Offline => (Level::Info, format!("agent {agent_id} reports OFFLINE")),
            TransitionKind::Failed => (
                Level::Error,
                format!("agent {agent_id} has failed for good"),
            ),
        };
        NewEvent::new(level, self.kind.event_kind(), message)
            .agent(agent_id)
            .details(json!({
                "from": was,
                "to": self.to.as_str(),
                "silent_seconds": self.silent_for,
                "by": if self.by_process { "process" } else { "heartbeat" },
            }))
    }
}

/// What to write about an agent's health.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HealthChange {
    /// The `health` to write (with `health_changed_at`); `None`: the file already says it.
    pub record: Option<Health>,
    /// The event; `None`: nothing worth one.
    pub transition: Option<Transition>,
}

impl HealthChange {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.record.is_none() && self.transition.is_none()
    }
}

/// What a beat does to an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct BeatDecision {
    /// `heartbeat_count` after the beat.
    pub heartbeat_count: u64,
    /// The `reported_status` to write: the report's (a plain beat reports `ACTIVE`);
    /// `None`: the file says it already.
    pub reported: Option<Reported>,
    /// `failures` goes back to 0: the agent reported `ACTIVE` (a plain beat does).
    pub reset_failures: bool,
    /// `status` becomes `active` (it was `idle`, `failed` or missing).
    pub activate: bool,
    /// The health after the beat (what the reply says).
    pub health: Health,
    /// The health to record and the event.
    pub change: HealthChange,
}

/// What a beat (reporting `reported`, if anything) does to `agent` at `now`.
///
/// The health is recorded when the file says otherwise. The event compares with what was
/// recorded, except after silence: an agent that went down or dead while nobody observed
/// it still logs its recovery (from the silence, with how long it lasted).
pub fn decide_beat(
    agent: &Vitals,
    reported: Option<Reported>,
    policy: &HealthPolicy,
    now: DateTime<Utc>,
) -> BeatDecision {
    let before = assess(agent, policy, now);
    // A plain beat says the agent is fine: it reports ACTIVE, which clears failures.
    let report = reported.unwrap_or(Reported::Active);
    let write_reported = (agent.reported != Some(report)).then_some(report);
    let reset_failures = report == Reported::Active;
    let activate = matches!(agent.status, AgentStatus::Idle | AgentStatus::Failed);
    let beaten = Vitals {
        status: if activate {
            AgentStatus::Active
        } else {
            agent.status
        },
        reported: Some(report),
        last_heartbeat: Some(now),
        failures: if reset_failures { 0 } else { agent.failures },
        heartbeat_count: agent.heartbeat_count + 1,
        ..agent.clone()
    };
    let after = assess(&beaten, policy, now).health;
    let was = if before.health.is_silent() {
        Some(before.health)
    } else {
        agent.recorded
    };
    BeatDecision {
        heartbeat_count: beaten.heartbeat_count,
        reported: write_reported,
        reset_failures,
        activate,
        health: after,
        change: HealthChange {
            record: (agent.recorded != Some(after)).then_some(after),
            transition: if was == Some(after) {
                None
            } else {
                Transition::between(was, after, before.age)
            },
        },
    }
}

/// The share of the shortest health threshold (`heartbeat_interval`, the silence that makes
/// an agent `late`) a stored `last_heartbeat` may age before a beat that changes nothing
/// else writes it again (see [`decide_beat_write`]).
pub const STAMP_REFRESH_SHARE: f64 = 1.0 / 3.0;

/// Whether a beat writes the agent's document.
///
/// On the file store (`leased` false) every beat writes its stamp: the write is a cheap
/// local file. On a store with leases (etcd, where the supervisor's lease is the liveness
/// and every write is a cluster revision) a beat writes when something the document shows
/// changed besides `last_heartbeat` and `heartbeat_count` (`shown_changed`: progress,
/// status, context, directives, errors, health, notes, spend), when it never beat, or when
/// the stored stamp is at least [`STAMP_REFRESH_SHARE`] of the shortest health threshold
/// old; so the health the stamp is judged by is never staler than that share plus one beat
/// period, and an idle agent beating 10 times a second writes once per third of its
/// `heartbeat_interval`.
pub fn decide_beat_write(
    leased: bool,
    shown_changed: bool,
    stored: Option<DateTime<Utc>>,
    policy: &HealthPolicy,
    now: DateTime<Utc>,
) -> bool {
    if !leased || shown_changed {
        return true;
    }
    let Some(stored) = stored else {
        return true;
    };
    let shortest = policy
        .interval
        .min(policy.down_after)
        .min(policy.dead_after);
    // A stamp from the future (a clock stepped back) is rewritten, not trusted.
    let age = elapsed(stored, now);
    !(0.0..shortest * STAMP_REFRESH_SHARE).contains(&age)
}

/// What an observer (`status`, `check`, `watch`, `top`, a revive pass) records about an
/// agent: its health now and, when the file says otherwise, the change.
#[derive(Debug, Clone, PartialEq)]
pub struct ObserveDecision {
    /// The health now.
    pub assessment: Assessment,
    /// What to write (empty when the recorded health is right).
    pub change: HealthChange,
}

/// What an observer sees of `agent` at `now` and records: a recorded health that differs
/// from the assessed one (nothing recorded counts as `unknown`) is rewritten, with its
/// event.
pub fn decide_observe(
    agent: &Vitals,
    policy: &HealthPolicy,
    now: DateTime<Utc>,
) -> ObserveDecision {
    let assessment = assess(agent, policy, now);
    let change = if agent.recorded.unwrap_or(Health::Unknown) == assessment.health {
        HealthChange::default()
    } else {
        HealthChange {
            record: Some(assessment.health),
            transition: Transition::between(agent.recorded, assessment.health, assessment.age)
                .map(|t| t.by_process(agent.process_judged(policy))),
        }
    };
    ObserveDecision { assessment, change }
}

/// What a failure the agent reports (`pas agent fail`) does.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureDecision {
    /// `failures` after this one (consecutive).
    pub consecutive: u64,
    /// The health change it causes (at `failure_threshold`: `unhealthy`).
    pub change: HealthChange,
}

impl FailureDecision {
    /// The `agent.failure` event (always written).
    pub fn event(&self, agent_id: &str, reason: &str) -> NewEvent {
        NewEvent::new(
            Level::Warn,
            EventKind::AgentFailure,
            format!(
                "agent {agent_id} failed ({} in a row): {reason}",
                self.consecutive
            ),
        )
        .agent(agent_id)
        .details(json!({ "reason": reason, "consecutive": self.consecutive }))
    }
}

/// One more consecutive failure of `agent`, and the health it leads to (observed as by
/// [`decide_observe`]).
pub fn decide_failure(
    agent: &Vitals,
    policy: &HealthPolicy,
    now: DateTime<Utc>,
) -> FailureDecision {
    let consecutive = agent.failures + 1;
    let failed = Vitals {
        failures: consecutive,
        ..agent.clone()
    };
    FailureDecision {
        consecutive,
        change: decide_observe(&failed, policy, now).change,
    }
}

/// What pas asks of an agent in a beat's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// `stop` or `summarize`.
    pub action: model::Directive,
    /// Why: `cell_paused`, `budget_reached`, `context_budget`, `agent_paused`, ...
    pub reason: Option<String>,
}

impl Directive {
    fn new(action: model::Directive, reason: &str) -> Directive {
        Directive {
            action,
            reason: Some(reason.to_string()),
        }
    }

    /// The `summarize` a context compaction asks for.
    pub fn summarize_context() -> Directive {
        Directive::new(model::Directive::Summarize, "context_budget")
    }

    /// A `pending_directive` left in the agent file (by a compaction, or by hand); one
    /// without `action` means `summarize`.
    pub fn from_pending(pending: &PendingDirective) -> Directive {
        Directive {
            action: pending.action.unwrap_or(model::Directive::Summarize),
            reason: pending.reason.clone(),
        }
    }
}

/// What the reply to a beat depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyState {
    /// The cell's `status`.
    pub cell_status: CellStatus,
    /// The agent's spend state after the beat.
    pub spend: State,
    /// A directive waiting for the agent (taken from its file by this beat, or a
    /// compaction this beat caused).
    pub pending: Option<Directive>,
    /// The agent's `status` is `paused`.
    pub agent_paused: bool,
}

/// What pas wants from the agent, most urgent first: stop for a cell that is not active,
/// stop at a hard spend limit, the pending directive, stop for a paused agent; else
/// nothing.
pub fn decide_reply(state: &ReplyState) -> Option<Directive> {
    let stop = |why: &str| Some(Directive::new(model::Directive::Stop, why));
    if state.cell_status != CellStatus::Active {
        stop(&format!("cell_{}", state.cell_status.as_str()))
    } else if state.spend == State::Breach {
        stop("budget_reached")
    } else if let Some(pending) = &state.pending {
        Some(pending.clone())
    } else if state.agent_paused {
        stop("agent_paused")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    //! One table per rule; a row names the case it pins down.
    // A row is a tuple with one column per input and outcome.
    #![allow(clippy::type_complexity)]

    use super::*;
    use crate::doc::Doc;
    use crate::model::Policies;
    use serde_json::Value;
    use std::path::Path;

    use Health::*;
    use TransitionKind as K;

    fn doc(json: &str) -> Doc {
        Doc::parse(json.as_bytes(), Path::new("t.json")).unwrap()
    }

    /// The time rows are measured from.
    fn t0() -> DateTime<Utc> {
        clock::parse("2026-11-23T10:00:00Z").unwrap()
    }

    /// `secs` after [`t0`] (before, when negative).
    fn at(secs: f64) -> DateTime<Utc> {
        t0() + seconds(secs)
    }

    /// The health policy of a `config/policies.json`.
    fn policy(json: &str) -> HealthPolicy {
        HealthPolicy::from_policy(&crate::ops::policy::of_file(json))
    }

    fn defaults() -> HealthPolicy {
        policy("{}")
    }

    /// An active agent that reported ACTIVE, last beat at [`t0`], recorded healthy.
    fn beating() -> Vitals {
        Vitals {
            status: AgentStatus::Active,
            reported: Some(Reported::Active),
            last_heartbeat: Some(t0()),
            heartbeat_count: 1,
            recorded: Some(Healthy),
            ..Vitals::default()
        }
    }

    /// A freshly added agent (`status: idle`, nothing else).
    fn added() -> Vitals {
        Vitals {
            status: AgentStatus::Idle,
            ..Vitals::default()
        }
    }

    const SHORT: &str = r#"{"heartbeat_interval": 10, "misses_down": 3, "misses_dead": 5}"#;

    #[test]
    fn the_health_policy_comes_from_the_settings() {
        // (policies.json, interval, down_after, dead_after, startup_grace, failure_threshold)
        let rows: &[(&str, f64, f64, f64, f64, u64)] = &[
            ("{}", 30.0, 60.0, 90.0, 60.0, 3),
            (r#"{"heartbeat_interval": 10}"#, 10.0, 20.0, 30.0, 60.0, 3),
            (SHORT, 10.0, 30.0, 50.0, 60.0, 3),
            (r#"{"heartbeat_ttl": 600}"#, 30.0, 60.0, 600.0, 60.0, 3),
            // A ttl that is not a positive number falls back to misses_dead intervals.
            (r#"{"heartbeat_ttl": 0}"#, 30.0, 60.0, 90.0, 60.0, 3),
            (r#"{"heartbeat_ttl": null}"#, 30.0, 60.0, 90.0, 60.0, 3),
            (r#"{"heartbeat_ttl": "long"}"#, 30.0, 60.0, 90.0, 60.0, 3),
            // Invalid values are the defaults.
            (r#"{"heartbeat_interval": 0}"#, 30.0, 60.0, 90.0, 60.0, 3),
            (r#"{"heartbeat_interval": -5}"#, 30.0, 60.0, 90.0, 60.0, 3),
            (r#"{"heartbeat_interval": "x"}"#, 30.0, 60.0, 90.0, 60.0, 3),
            (r#"{"misses_down": 0}"#, 30.0, 60.0, 90.0, 60.0, 3),
            (r#"{"heartbeat_interval": 0.5}"#, 0.5, 1.0, 1.5, 60.0, 3),
            (r#"{"startup_grace": 5}"#, 30.0, 60.0, 90.0, 5.0, 3),
            (r#"{"failure_threshold": 1}"#, 30.0, 60.0, 90.0, 60.0, 1),
            (r#"{"failure_threshold": 0}"#, 30.0, 60.0, 90.0, 60.0, 3),
            // Fractions truncate, but never below one failure.
            (r#"{"failure_threshold": 2.9}"#, 30.0, 60.0, 90.0, 60.0, 2),
            (r#"{"failure_threshold": 0.5}"#, 30.0, 60.0, 90.0, 60.0, 1),
        ];
        for &(json, interval, down, dead, grace, threshold) in rows {
            assert_eq!(
                policy(json),
                HealthPolicy {
                    interval,
                    down_after: down,
                    dead_after: dead,
                    startup_grace: grace,
                    failure_threshold: threshold,
                    heartbeat_required: false,
                },
                "{json}"
            );
        }
        // An agent's own policies override the cell's.
        let agent = Agent::from_doc(&doc(
            r#"{"agent_id": "a1", "policies": {"heartbeat_ttl": 600}}"#,
        ))
        .unwrap();
        let cell = Policies::from_doc(&doc(r#"{"heartbeat_interval": 10}"#)).unwrap();
        let p = HealthPolicy::from_policy(&Policy::of(
            &serde_json::Map::new(),
            None,
            Some(&cell),
            Some(&agent.policies),
        ));
        assert_eq!(
            (p.interval, p.down_after, p.dead_after),
            (10.0, 20.0, 600.0)
        );
        // So five minutes of silence leave it down, not dead.
        assert_eq!(assess(&beating(), &p, at(300.0)).health, Down);
    }

    #[test]
    fn a_beat_on_a_leased_store_writes_only_news_or_an_old_stamp() {
        // SHORT: interval 10 s, down 30 s, dead 50 s, so a stamp is refreshed at 3.333 s.
        let p = policy(SHORT);
        let rows: &[(&str, bool, bool, Option<f64>, f64, bool)] = &[
            // (case, leased, shown_changed, stored stamp, now, writes)
            (
                "the file store writes every beat",
                false,
                false,
                Some(0.0),
                0.1,
                true,
            ),
            ("news are written at once", true, true, Some(0.0), 0.1, true),
            ("a first beat is written", true, false, None, 0.1, true),
            ("a fresh stamp is kept", true, false, Some(0.0), 0.1, false),
            (
                "just under a third of the interval",
                true,
                false,
                Some(0.0),
                3.3,
                false,
            ),
            (
                "a third of the interval rewrites",
                true,
                false,
                Some(0.0),
                3.34,
                true,
            ),
            ("an old stamp rewrites", true, false, Some(0.0), 40.0, true),
            (
                "a stamp from the future rewrites",
                true,
                false,
                Some(5.0),
                0.0,
                true,
            ),
        ];
        for (case, leased, changed, stored, now, writes) in rows {
            assert_eq!(
                decide_beat_write(*leased, *changed, stored.map(at), &p, at(*now)),
                *writes,
                "{case}"
            );
        }
        // The shortest threshold counts, whichever it is.
        let ttl = policy(r#"{"heartbeat_interval": 30, "heartbeat_ttl": 3}"#);
        assert!(!decide_beat_write(
            true,
            false,
            Some(at(0.0)),
            &ttl,
            at(0.9)
        ));
        assert!(decide_beat_write(true, false, Some(at(0.0)), &ttl, at(1.0)));
    }

    #[test]
    fn silence_walks_healthy_late_down_dead() {
        // (why, policies.json, seconds since the last beat, health, next change after t0)
        let rows: &[(&str, &str, f64, Health, Option<f64>)] = &[
            ("just beat", "{}", 0.0, Healthy, Some(30.0)),
            (
                "the interval itself is on time",
                "{}",
                30.0,
                Healthy,
                Some(30.0),
            ),
            ("past the interval", "{}", 30.001, Late, Some(60.0)),
            (
                "misses_down intervals: still late",
                "{}",
                60.0,
                Late,
                Some(60.0),
            ),
            ("past misses_down intervals", "{}", 60.001, Down, Some(90.0)),
            (
                "misses_dead intervals: still down",
                "{}",
                90.0,
                Down,
                Some(90.0),
            ),
            ("past misses_dead intervals", "{}", 90.001, Dead, None),
            ("long dead", "{}", 86_400.0, Dead, None),
            (
                "a beat from the future is now",
                "{}",
                -5.0,
                Healthy,
                Some(30.0),
            ),
            ("short: on time", SHORT, 10.0, Healthy, Some(10.0)),
            ("short: late", SHORT, 10.001, Late, Some(30.0)),
            ("short: 3 misses, still late", SHORT, 30.0, Late, Some(30.0)),
            ("short: down", SHORT, 30.001, Down, Some(50.0)),
            ("short: 5 misses, still down", SHORT, 50.0, Down, Some(50.0)),
            ("short: dead", SHORT, 50.001, Dead, None),
            (
                "a ttl outlasts misses_dead",
                r#"{"heartbeat_ttl": 600}"#,
                300.0,
                Down,
                Some(600.0),
            ),
            (
                "the ttl itself: still down",
                r#"{"heartbeat_ttl": 600}"#,
                600.0,
                Down,
                Some(600.0),
            ),
            (
                "past the ttl",
                r#"{"heartbeat_ttl": 600}"#,
                600.001,
                Dead,
                None,
            ),
            (
                "ttl before misses_down: late",
                r#"{"heartbeat_ttl": 45}"#,
                44.0,
                Late,
                Some(45.0),
            ),
            // As it always was: a dead agent still "changes" when down_after passes (a
            // wake-up that finds nothing to do).
            (
                "ttl before misses_down: dead",
                r#"{"heartbeat_ttl": 45}"#,
                45.001,
                Dead,
                Some(60.0),
            ),
        ];
        for &(why, json, silent, health, next) in rows {
            let a = assess(&beating(), &policy(json), at(silent));
            assert_eq!(a.health, health, "{why}");
            assert_eq!(a.next_change, next.map(at), "{why}: next change");
            assert_eq!(a.age, Some(silent.max(0.0)), "{why}: age");
        }
    }

    #[test]
    fn reports_failures_and_status_against_silence() {
        let reported = |r| Vitals {
            reported: r,
            ..beating()
        };
        let failing = |n, r| Vitals {
            failures: n,
            reported: r,
            ..beating()
        };
        let status = |s: AgentStatus| Vitals {
            status: s,
            ..beating()
        };
        let active = Some(Reported::Active);
        let degraded = Some(Reported::Degraded);
        let offline = Some(Reported::Offline);
        let one = r#"{"failure_threshold": 1}"#;
        let five = r#"{"failure_threshold": 5}"#;
        // (why, agent, policies.json, seconds after t0, health, next change after t0)
        #[rustfmt::skip]
        let rows: Vec<(&str, Vitals, &str, f64, Health, Option<f64>)> = vec![
            ("DEGRADED while beating", reported(degraded), "{}", 5.0, Degraded, Some(30.0)),
            ("DEGRADED and silent: silence wins", reported(degraded), "{}", 45.0, Late, Some(60.0)),
            ("OFFLINE: not judged by silence", reported(offline), "{}", 5.0, Offline, None),
            ("OFFLINE and long silent", reported(offline), "{}", 1000.0, Offline, None),
            ("no report at all", reported(None), "{}", 5.0, Healthy, Some(30.0)),
            ("no failures", failing(0, active), "{}", 5.0, Healthy, Some(30.0)),
            ("one failure: degraded", failing(1, active), "{}", 5.0, Degraded, Some(30.0)),
            ("failures below the threshold: degraded", failing(2, active), "{}", 5.0, Degraded, Some(30.0)),
            ("failures at the threshold", failing(3, active), "{}", 5.0, Unhealthy, Some(30.0)),
            ("failures past the threshold", failing(7, active), "{}", 5.0, Unhealthy, Some(30.0)),
            ("unhealthy before degraded", failing(3, degraded), "{}", 5.0, Unhealthy, Some(30.0)),
            ("failing and silent: silence wins", failing(3, active), "{}", 45.0, Late, Some(60.0)),
            ("a threshold of one failure", failing(1, active), one, 5.0, Unhealthy, Some(30.0)),
            ("a higher threshold", failing(3, active), five, 5.0, Degraded, Some(30.0)),
            ("failed is final", status(AgentStatus::Failed), "{}", 5.0, Failed, None),
            ("failed before offline", Vitals { reported: offline, ..status(AgentStatus::Failed) }, "{}", 5.0, Failed, None),
            ("failed, never beat", Vitals { last_heartbeat: None, ..status(AgentStatus::Failed) }, "{}", 5.0, Failed, None),
            ("paused is not a health", status(AgentStatus::Paused), "{}", 5.0, Healthy, Some(30.0)),
            ("never beat", added(), "{}", 5.0, Unknown, None),
        ];
        for (why, agent, json, t, health, next) in rows {
            let a = assess(&agent, &policy(json), at(t));
            assert_eq!((a.health, a.next_change), (health, next.map(at)), "{why}");
        }
    }

    #[test]
    fn a_started_agent_has_a_startup_grace() {
        let started = |last: Option<f64>| Vitals {
            status: AgentStatus::Active,
            last_heartbeat: last.map(at),
            started_at: Some(t0()),
            ..Vitals::default()
        };
        let offline = Vitals {
            reported: Some(Reported::Offline),
            ..started(None)
        };
        let short = r#"{"startup_grace": 5}"#;
        // (why, agent, policies.json, seconds after the start, health, next change)
        #[rustfmt::skip]
        let rows: Vec<(&str, Vitals, &str, f64, Health, Option<f64>)> = vec![
            ("no beat yet", started(None), "{}", 0.0, Unknown, Some(60.0)),
            ("the grace itself", started(None), "{}", 60.0, Unknown, Some(60.0)),
            ("past the grace", started(None), "{}", 60.001, Dead, None),
            ("a beat before the start: in the grace", started(Some(-3600.0)), "{}", 59.0, Unknown, Some(60.0)),
            ("a beat before the start: past it", started(Some(-3600.0)), "{}", 61.0, Dead, None),
            ("a beat since the start: judged by beats", started(Some(5.0)), "{}", 20.0, Healthy, Some(35.0)),
            ("a beat at the start counts", started(Some(0.0)), "{}", 20.0, Healthy, Some(30.0)),
            ("a short grace", started(None), short, 5.0, Unknown, Some(5.0)),
            ("past a short grace", started(None), short, 5.001, Dead, None),
            ("offline while starting", offline, "{}", 100.0, Offline, None),
        ];
        for (why, agent, json, t, health, next) in rows {
            let a = assess(&agent, &policy(json), at(t));
            assert_eq!((a.health, a.next_change), (health, next.map(at)), "{why}");
        }
    }

    #[test]
    fn an_agent_that_never_beat_is_judged_by_its_process() {
        let never = |status: AgentStatus, running: Option<bool>| Vitals {
            status,
            started_at: Some(t0()),
            running,
            ..Vitals::default()
        };
        let active = AgentStatus::Active;
        let required = r#"{"heartbeat_required": true, "startup_grace": 5}"#;
        // (why, agent, policies.json, seconds after the start, health, next change)
        #[rustfmt::skip]
        let rows: Vec<(&str, Vitals, &str, f64, Health, Option<f64>)> = vec![
            ("runs: healthy, however long", never(active, Some(true)), "{}", 86_400.0, Healthy, None),
            ("runs, one failure: degraded", Vitals { failures: 1, ..never(active, Some(true)) }, "{}", 5.0, Degraded, None),
            ("runs, failures at the threshold: unhealthy", Vitals { failures: 3, ..never(active, Some(true)) }, "{}", 5.0, Unhealthy, None),
            ("meant to run, not running: down", never(active, Some(false)), "{}", 5.0, Down, None),
            ("never started at all, meant to run: down", Vitals { started_at: None, ..never(active, Some(false)) }, "{}", 5.0, Down, None),
            ("paused, not running: not judged", never(AgentStatus::Paused, Some(false)), "{}", 5.0, Unknown, None),
            ("idle, not running: not judged", never(AgentStatus::Idle, Some(false)), "{}", 5.0, Unknown, None),
            ("paused, still running: alive", never(AgentStatus::Paused, Some(true)), "{}", 5.0, Healthy, None),
            ("failed is final", never(AgentStatus::Failed, Some(false)), "{}", 5.0, Failed, None),
            ("heartbeat_required: the startup grace", never(active, Some(true)), required, 5.0, Unknown, Some(5.0)),
            ("heartbeat_required: dead past it, though it runs", never(active, Some(true)), required, 5.001, Dead, None),
            ("its process not looked at: as before", never(active, None), "{}", 5.0, Unknown, Some(60.0)),
            ("it beat since: heartbeats judge", Vitals { last_heartbeat: Some(t0()), ..never(active, Some(true)) }, "{}", 45.0, Late, Some(60.0)),
        ];
        for (why, agent, json, t, health, next) in rows {
            let a = assess(&agent, &policy(json), at(t));
            assert_eq!((a.health, a.next_change), (health, next.map(at)), "{why}");
        }
        // The change an observer records speaks of the process.
        let seen = decide_observe(
            &Vitals {
                recorded: Some(Healthy),
                ..never(active, Some(false))
            },
            &defaults(),
            at(1.0),
        );
        let t = seen.change.transition.unwrap();
        assert_eq!((t.kind, t.by_process), (K::Down, true));
    }

    #[test]
    fn vitals_are_read_from_the_agent_file() {
        let read = |json: &str| Agent::from_doc(&doc(json)).map(|a| Vitals::of(&a));
        assert_eq!(read(r#"{"agent_id": "a"}"#).unwrap(), Vitals::default());
        // (reported_status as written, as read)
        let rows: &[(&str, Option<Reported>)] = &[
            ("null", None),
            (r#""ACTIVE""#, Some(Reported::Active)),
            (r#""DEGRADED""#, Some(Reported::Degraded)),
            (r#""OFFLINE""#, Some(Reported::Offline)),
        ];
        for &(written, expected) in rows {
            let v = read(&format!(
                r#"{{"agent_id": "a", "reported_status": {written}}}"#
            ))
            .unwrap();
            assert_eq!(v.reported, expected, "{written}");
        }
        let v = read(
            r#"{"agent_id": "a", "status": "active", "health": "late", "failures": 2,
                "heartbeat_count": 9, "last_heartbeat": "2026-11-23T10:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(
            v,
            Vitals {
                status: AgentStatus::Active,
                reported: None,
                last_heartbeat: Some(t0()),
                started_at: None,
                failures: 2,
                heartbeat_count: 9,
                recorded: Some(Late),
                running: None,
            }
        );
        // pas's own record of the health is recomputed: one it cannot read is not recorded.
        assert_eq!(
            read(r#"{"agent_id": "a", "health": "zombie"}"#)
                .unwrap()
                .recorded,
            None
        );
        // A word or a time the model does not know is refused naming the field, never
        // judged as something else.
        for (written, field) in [
            (r#""reported_status": "degraded""#, "reported_status"),
            (r#""reported_status": "BUSY""#, "reported_status"),
            (r#""reported_status": 5"#, "reported_status"),
            (r#""status": "stopped""#, "status"),
            (r#""started_at": "yesterday""#, "started_at"),
        ] {
            let err = read(&format!(r#"{{"agent_id": "a", {written}}}"#)).unwrap_err();
            assert!(
                err.message.starts_with(&format!("agents/a.json {field}: ")),
                "{written}: {}",
                err.message
            );
        }
    }

    #[test]
    fn each_health_change_has_its_event() {
        use Level::{Error, Info, Warn};
        // (from, to, seconds silent, (event kind, level, message))
        #[rustfmt::skip]
        let rows: &[(Option<Health>, Health, Option<f64>, Option<(K, Level, &str)>)] = &[
            (None, Healthy, Some(0.0), Some((K::Alive, Info, "agent a1 sent its first beat"))),
            (Some(Unknown), Healthy, None, Some((K::Alive, Info, "agent a1 sent its first beat"))),
            (Some(Down), Healthy, Some(75.0), Some((K::Recovered, Info, "agent a1 is beating again (was down)"))),
            (Some(Dead), Healthy, Some(300.0), Some((K::Recovered, Info, "agent a1 is beating again (was dead)"))),
            (Some(Late), Healthy, Some(45.0), Some((K::Healthy, Info, "agent a1 is healthy again (was late)"))),
            (Some(Unhealthy), Healthy, Some(1.0), Some((K::Healthy, Info, "agent a1 is healthy again (was unhealthy)"))),
            (Some(Failed), Healthy, Some(1.0), Some((K::Healthy, Info, "agent a1 is healthy again (was failed)"))),
            (Some(Healthy), Late, Some(45.0), Some((K::Late, Warn, "agent a1 missed a beat (45s silent)"))),
            (Some(Late), Down, Some(75.0), Some((K::Down, Error, "agent a1 is down (1m15s silent)"))),
            (Some(Down), Dead, Some(100.5), Some((K::Dead, Error, "agent a1 is dead (1m40s silent)"))),
            (None, Dead, None, Some((K::Dead, Error, "agent a1 is dead (- silent)"))),
            (Some(Healthy), Degraded, Some(1.0), Some((K::Degraded, Warn, "agent a1 is degraded (reported DEGRADED, or failures in a row)"))),
            (Some(Healthy), Unhealthy, Some(1.0), Some((K::Unhealthy, Error, "agent a1 failed too often in a row"))),
            (Some(Healthy), Offline, Some(1.0), Some((K::Offline, Info, "agent a1 reports OFFLINE"))),
            (Some(Healthy), Failed, Some(1.0), Some((K::Failed, Error, "agent a1 has failed for good"))),
            (Some(Healthy), Healthy, Some(1.0), None),
            (Some(Dead), Dead, Some(500.0), None),
            (None, Unknown, None, None),
            (Some(Healthy), Unknown, None, None),
        ];
        for &(from, to, silent, expected) in rows {
            let got = Transition::between(from, to, silent).map(|t| {
                let e = t.event("a1");
                assert_eq!(e.kind, t.kind.event_kind());
                (t.kind, e.level, e.message)
            });
            assert_eq!(
                got,
                expected.map(|(k, l, m)| (k, l, m.to_string())),
                "{from:?} -> {to:?}"
            );
        }
        let e = Transition::between(Some(Late), Down, Some(75.0))
            .unwrap()
            .event("a1");
        assert_eq!(
            (e.kind.as_str(), e.agent.as_deref(), e.details),
            (
                "agent.down",
                Some("a1"),
                json!({"from": "late", "to": "down", "silent_seconds": 75.0, "by": "heartbeat"})
            )
        );
        // Judged by its process (it never beat): the words speak of the process.
        #[rustfmt::skip]
        let rows: &[(Option<Health>, Health, K, Level, &str)] = &[
            (None, Healthy, K::Alive, Info, "agent a1 is running"),
            (Some(Healthy), Down, K::Down, Error, "agent a1 is down: its process is not running"),
            (Some(Down), Healthy, K::Recovered, Info, "agent a1 is running again (was down)"),
            (Some(Degraded), Healthy, K::Healthy, Info, "agent a1 is running, healthy again (was degraded)"),
        ];
        for &(from, to, kind, level, message) in rows {
            let t = Transition::between(from, to, None)
                .unwrap()
                .by_process(true);
            let e = t.event("a1");
            assert_eq!(
                (t.kind, e.level, e.message.as_str()),
                (kind, level, message)
            );
            assert_eq!(e.details["by"], "process");
        }
        let e = Transition::between(None, Healthy, None)
            .unwrap()
            .event("a1");
        assert_eq!(
            e.details,
            json!({"from": "unknown", "to": "healthy", "silent_seconds": null, "by": "heartbeat"})
        );
    }

    /// One row of the beat table: an agent, a beat, and what the beat decides.
    struct BeatRow {
        why: &'static str,
        agent: Vitals,
        report: Option<Reported>,
        /// Seconds after t0.
        at: f64,
        /// `reported_status` written, failures reset, status made active.
        fields: (Option<Reported>, bool, bool),
        health: Health,
        record: Option<Health>,
        /// The event's kind and the health it comes from.
        event: Option<(K, Health)>,
    }

    #[test]
    fn a_beat_records_itself_and_its_health_change() {
        let active = Some(Reported::Active);
        let recorded = |h| Vitals {
            recorded: Some(h),
            ..beating()
        };
        let starting = Vitals {
            status: AgentStatus::Active,
            started_at: Some(t0()),
            recorded: Some(Unknown),
            ..Vitals::default()
        };
        // A plain beat reports ACTIVE: written when the file says otherwise; failures reset.
        let plain = (None, true, false);
        #[rustfmt::skip]
        let rows = vec![
            BeatRow { why: "the first beat of a new agent", agent: added(), report: None, at: 0.0,
                fields: (active, true, true), health: Healthy, record: Some(Healthy), event: Some((K::Alive, Unknown)) },
            BeatRow { why: "a file without status or health", agent: Vitals::default(), report: None, at: 0.0,
                fields: (active, true, true), health: Healthy, record: Some(Healthy), event: Some((K::Alive, Unknown)) },
            BeatRow { why: "on time: no health change", agent: beating(), report: None, at: 20.0,
                fields: plain, health: Healthy, record: None, event: None },
            BeatRow { why: "late, unobserved: nothing to log", agent: beating(), report: None, at: 45.0,
                fields: plain, health: Healthy, record: None, event: None },
            BeatRow { why: "down, unobserved: the recovery is logged", agent: beating(), report: None, at: 75.0,
                fields: plain, health: Healthy, record: None, event: Some((K::Recovered, Down)) },
            BeatRow { why: "dead, unobserved: the recovery is logged", agent: beating(), report: None, at: 300.0,
                fields: plain, health: Healthy, record: None, event: Some((K::Recovered, Dead)) },
            BeatRow { why: "observed late: healthy again", agent: recorded(Late), report: None, at: 45.0,
                fields: plain, health: Healthy, record: Some(Healthy), event: Some((K::Healthy, Late)) },
            BeatRow { why: "observed down: recovered", agent: recorded(Down), report: None, at: 75.0,
                fields: plain, health: Healthy, record: Some(Healthy), event: Some((K::Recovered, Down)) },
            BeatRow { why: "recorded dead, a recent beat: recovered", agent: recorded(Dead), report: None, at: 5.0,
                fields: plain, health: Healthy, record: Some(Healthy), event: Some((K::Recovered, Dead)) },
            BeatRow { why: "reporting DEGRADED", agent: beating(), report: Some(Reported::Degraded), at: 5.0,
                fields: (Some(Reported::Degraded), false, false), health: Degraded, record: Some(Degraded), event: Some((K::Degraded, Healthy)) },
            BeatRow { why: "reporting ACTIVE resets failures", agent: Vitals { failures: 3, ..recorded(Unhealthy) }, report: active, at: 5.0,
                fields: plain, health: Healthy, record: Some(Healthy), event: Some((K::Healthy, Unhealthy)) },
            BeatRow { why: "a plain beat resets failures too", agent: Vitals { failures: 3, ..recorded(Unhealthy) }, report: None, at: 5.0,
                fields: plain, health: Healthy, record: Some(Healthy), event: Some((K::Healthy, Unhealthy)) },
            BeatRow { why: "a DEGRADED beat keeps failures, and unrecorded ones show", agent: Vitals { failures: 3, ..beating() }, report: Some(Reported::Degraded), at: 5.0,
                fields: (Some(Reported::Degraded), false, false), health: Unhealthy, record: Some(Unhealthy), event: Some((K::Unhealthy, Healthy)) },
            BeatRow { why: "a DEGRADED beat with one failure: degraded", agent: Vitals { failures: 1, ..beating() }, report: Some(Reported::Degraded), at: 5.0,
                fields: (Some(Reported::Degraded), false, false), health: Degraded, record: Some(Degraded), event: Some((K::Degraded, Healthy)) },
            BeatRow { why: "reporting OFFLINE", agent: beating(), report: Some(Reported::Offline), at: 5.0,
                fields: (Some(Reported::Offline), false, false), health: Offline, record: Some(Offline), event: Some((K::Offline, Healthy)) },
            BeatRow { why: "OFFLINE again: stays offline", agent: Vitals { reported: Some(Reported::Offline), ..recorded(Offline) }, report: Some(Reported::Offline), at: 500.0,
                fields: (None, false, false), health: Offline, record: None, event: None },
            BeatRow { why: "a plain beat brings an offline agent back", agent: Vitals { reported: Some(Reported::Offline), ..recorded(Offline) }, report: None, at: 500.0,
                fields: (active, true, false), health: Healthy, record: Some(Healthy), event: Some((K::Healthy, Offline)) },
            BeatRow { why: "a failed agent that beats is active", agent: Vitals { status: AgentStatus::Failed, ..recorded(Failed) }, report: None, at: 5.0,
                fields: (None, true, true), health: Healthy, record: Some(Healthy), event: Some((K::Healthy, Failed)) },
            BeatRow { why: "a paused agent stays paused", agent: Vitals { status: AgentStatus::Paused, ..beating() }, report: None, at: 5.0,
                fields: plain, health: Healthy, record: None, event: None },
            BeatRow { why: "a plain beat restores ACTIVE after DEGRADED", agent: Vitals { reported: Some(Reported::Degraded), ..recorded(Degraded) }, report: None, at: 5.0,
                fields: (active, true, false), health: Healthy, record: Some(Healthy), event: Some((K::Healthy, Degraded)) },
            BeatRow { why: "started, first beat in the grace", agent: starting.clone(), report: None, at: 10.0,
                fields: (active, true, false), health: Healthy, record: Some(Healthy), event: Some((K::Alive, Unknown)) },
            BeatRow { why: "started, first beat after the grace", agent: starting.clone(), report: None, at: 100.0,
                fields: (active, true, false), health: Healthy, record: Some(Healthy), event: Some((K::Recovered, Dead)) },
            BeatRow { why: "a file that lost its health", agent: Vitals { recorded: None, ..beating() }, report: None, at: 5.0,
                fields: plain, health: Healthy, record: Some(Healthy), event: Some((K::Alive, Unknown)) },
            BeatRow { why: "judged by its process until now: its first beat changes nothing", agent: Vitals { running: Some(true), ..Vitals { recorded: Some(Healthy), ..starting.clone() } }, report: None, at: 100.0,
                fields: (active, true, false), health: Healthy, record: None, event: None },
        ];
        for row in rows {
            let d = decide_beat(&row.agent, row.report, &defaults(), at(row.at));
            let why = row.why;
            assert_eq!(d.heartbeat_count, row.agent.heartbeat_count + 1, "{why}");
            assert_eq!(
                (d.reported, d.reset_failures, d.activate),
                row.fields,
                "{why}: fields"
            );
            assert_eq!(d.health, row.health, "{why}: health");
            assert_eq!(d.change.record, row.record, "{why}: recorded health");
            assert_eq!(
                d.change.transition.map(|t| (t.kind, t.from)),
                row.event,
                "{why}: event"
            );
        }
        // The silence a recovery reports is the silence before the beat.
        let d = decide_beat(&beating(), None, &defaults(), at(300.0));
        assert_eq!(d.change.transition.unwrap().silent_for, Some(300.0));
    }

    #[test]
    fn an_observer_records_each_change_once() {
        let recorded = |h| Vitals {
            recorded: Some(h),
            ..beating()
        };
        let restarting = Vitals {
            started_at: Some(at(1.0)),
            ..recorded(Healthy)
        };
        let reset = Vitals {
            failures: 0,
            ..recorded(Unhealthy)
        };
        let given_up = Vitals {
            status: AgentStatus::Failed,
            ..recorded(Dead)
        };
        let unknown = Vitals {
            recorded: Some(Unknown),
            ..added()
        };
        // (why, agent, seconds after t0, health, event kind)
        #[rustfmt::skip]
        let rows: Vec<(&str, Vitals, f64, Health, Option<K>)> = vec![
            ("on time, recorded healthy", recorded(Healthy), 5.0, Healthy, None),
            ("late", recorded(Healthy), 45.0, Late, Some(K::Late)),
            ("down after late", recorded(Late), 75.0, Down, Some(K::Down)),
            ("dead, never seen down", recorded(Healthy), 100.0, Dead, Some(K::Dead)),
            ("dead, recorded dead", recorded(Dead), 200.0, Dead, None),
            ("never beat, nothing recorded", added(), 5.0, Unknown, None),
            ("never beat, recorded unknown", unknown, 5.0, Unknown, None),
            ("restarting: recorded, not logged", restarting, 5.0, Unknown, None),
            ("failures reset by hand", reset, 5.0, Healthy, Some(K::Healthy)),
            ("given up on", given_up, 500.0, Failed, Some(K::Failed)),
        ];
        for (why, agent, t, health, kind) in rows {
            let d = decide_observe(&agent, &defaults(), at(t));
            assert_eq!(d.assessment.health, health, "{why}");
            let changed = agent.recorded.unwrap_or(Unknown) != health;
            assert_eq!(d.change.record, changed.then_some(health), "{why}: record");
            assert_eq!(d.change.transition.map(|t| t.kind), kind, "{why}: event");
            // Once recorded, the change is not seen again.
            let after = Vitals {
                recorded: Some(health),
                ..agent
            };
            assert!(
                decide_observe(&after, &defaults(), at(t)).change.is_empty(),
                "{why}: twice"
            );
        }
    }

    #[test]
    fn failures_in_a_row_make_an_agent_unhealthy() {
        let one = r#"{"failure_threshold": 1}"#;
        // (why, failures before, policies.json, last beat, recorded, seconds after t0,
        // consecutive after, health to record, event kind)
        #[rustfmt::skip]
        let rows: &[(&str, u64, &str, Option<f64>, Health, f64, u64, Option<Health>, Option<K>)] = &[
            ("a first failure: degraded", 0, "{}", Some(0.0), Healthy, 5.0, 1, Some(Degraded), Some(K::Degraded)),
            ("one short of the threshold: still degraded", 1, "{}", Some(0.0), Degraded, 5.0, 2, None, None),
            ("at the threshold", 2, "{}", Some(0.0), Degraded, 5.0, 3, Some(Unhealthy), Some(K::Unhealthy)),
            ("past it, recorded", 3, "{}", Some(0.0), Unhealthy, 5.0, 4, None, None),
            ("a threshold of one", 0, one, Some(0.0), Healthy, 5.0, 1, Some(Unhealthy), Some(K::Unhealthy)),
            ("never beat: stays unknown", 2, "{}", None, Unknown, 5.0, 3, None, None),
            ("silent: the silence is recorded", 0, "{}", Some(0.0), Healthy, 100.0, 1, Some(Dead), Some(K::Dead)),
        ];
        for &(why, before, json, last, recorded, t, after, record, kind) in rows {
            let agent = Vitals {
                failures: before,
                last_heartbeat: last.map(at),
                recorded: Some(recorded),
                ..beating()
            };
            let d = decide_failure(&agent, &policy(json), at(t));
            assert_eq!(d.consecutive, after, "{why}");
            assert_eq!(d.change.record, record, "{why}: record");
            assert_eq!(d.change.transition.map(|t| t.kind), kind, "{why}: event");
        }
        let e = decide_failure(&beating(), &defaults(), at(1.0)).event("a1", "tool call timed out");
        assert_eq!(
            (e.level, e.kind.as_str(), e.message.as_str(), e.details),
            (
                Level::Warn,
                "agent.failure",
                "agent a1 failed (1 in a row): tool call timed out",
                json!({"reason": "tool call timed out", "consecutive": 1})
            )
        );
    }

    #[test]
    fn the_reply_asks_for_the_most_urgent_thing() {
        use CellStatus::{Active, Completed, Paused};
        let summarize = Some(Directive::summarize_context());
        let by_hand = Some(Directive {
            action: model::Directive::Stop,
            reason: Some("operator".into()),
        });
        let stop = |why| Some(("stop", Some(why)));
        // (why, cell status, spend, pending, agent paused, (directive, reason))
        #[rustfmt::skip]
        let rows: Vec<(&str, CellStatus, State, Option<Directive>, bool, Option<(&str, Option<&str>)>)> = vec![
            ("nothing to ask", Active, State::Ok, None, false, None),
            ("a paused cell", Paused, State::Ok, None, false, stop("cell_paused")),
            ("a completed cell first", Completed, State::Breach, summarize.clone(), true, stop("cell_completed")),
            ("a spend breach before a summary", Active, State::Breach, summarize.clone(), true, stop("budget_reached")),
            ("a spend warning does not stop", Active, State::Warning, None, false, None),
            ("a compaction's summary", Active, State::Warning, summarize.clone(), false, Some(("summarize", Some("context_budget")))),
            ("a pending directive before a paused agent", Active, State::Ok, by_hand, true, Some(("stop", Some("operator")))),
            ("a paused agent", Active, State::Ok, None, true, stop("agent_paused")),
        ];
        for (why, cell, spend, pending, paused, expected) in rows {
            let d = decide_reply(&ReplyState {
                cell_status: cell,
                spend,
                pending,
                agent_paused: paused,
            });
            assert_eq!(
                d.as_ref().map(|d| (d.action.as_str(), d.reason.as_deref())),
                expected,
                "{why}"
            );
        }
        // A pending directive as the agent file holds it.
        let pending = |v: &Value| {
            Agent::from_doc(&doc(
                &json!({"agent_id": "a", "pending_directive": v}).to_string()
            ))
            .map(|a| a.pending_directive.as_ref().map(Directive::from_pending))
        };
        #[rustfmt::skip]
        let rows: &[(Value, Option<(&str, Option<&str>)>)] = &[
            (json!({"action": "summarize", "reason": "context_budget", "summary": "s"}), Some(("summarize", Some("context_budget")))),
            (json!({"reason": "operator"}), Some(("summarize", Some("operator")))),
            (json!({"action": "stop"}), Some(("stop", None))),
            (json!({}), Some(("summarize", None))),
            (Value::Null, None),
        ];
        for (written, expected) in rows {
            let d = pending(written).unwrap();
            assert_eq!(
                d.as_ref().map(|d| (d.action.as_str(), d.reason.as_deref())),
                *expected,
                "{written}"
            );
        }
        // One pas cannot deliver as written is refused, never delivered as something else.
        for written in [
            json!({"action": "stop", "reason": 5}),
            json!({"action": "restart"}),
            json!("summarize"),
        ] {
            let err = pending(&written).unwrap_err();
            assert!(
                err.message.contains("pending_directive"),
                "{written}: {}",
                err.message
            );
        }
    }
}
