//! The rules of budgets: an agent's context window ([`decide_context`], with the thrash
//! guard), its money and tokens ([`decide_spend`]), and a cell's time ([`decide_time`]).
//!
//! Pure: the fields these rules read ([`ContextFacts`], [`Spent`], [`CellClock`]), the
//! policy's numbers ([`ContextPolicy`], [`SpendLimits`]) and the time come in; a decision
//! comes out naming each state change and its event. [`crate::ops::budget`] reads in a store
//! transaction, asks here, and applies the decision in the same transaction (a compaction
//! also saves a checkpoint and a summary first, which are not documents).

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::clock;
use crate::model::{Agent, BudgetFlag, Cell, CellStatus, EventKind};
use crate::ops::policy::Policy;
use crate::store::events::{Level, NewEvent};

/// A budget's state (`ok`, `warning`, `breach`): the model's words, ordered from best to
/// worst.
pub use crate::model::BudgetState as State;

/// How loud an event about `state` is.
fn level(state: State) -> Level {
    match state {
        State::Ok => Level::Info,
        State::Warning => Level::Warn,
        State::Breach => Level::Error,
    }
}

/// The policy's context settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContextPolicy {
    /// `target_ratio`: from this share of the window an agent is in `warning`.
    pub target_ratio: f64,
    /// `hard_max_ratio`: from this share the budget is breached.
    pub hard_max_ratio: f64,
    /// `compact_min_interval`: seconds at least between two compactions.
    pub compact_min_interval: f64,
    /// `compact_max_per_hour`: compactions in the last hour that make the next breach
    /// thrashing instead.
    pub compact_max_per_hour: u64,
    /// `breach_action: ask`: a breach pauses the agent and asks an operator instead.
    pub ask: bool,
}

impl ContextPolicy {
    /// The settings of an effective policy (a missing or non-numeric value is the default).
    pub fn from_policy(policy: &Policy) -> ContextPolicy {
        ContextPolicy {
            target_ratio: policy.target_ratio(),
            hard_max_ratio: policy.hard_max_ratio(),
            compact_min_interval: policy.compact_min_interval(),
            compact_max_per_hour: policy.compact_max_per_hour(),
            ask: policy.breach_action() == crate::model::BreachPolicy::Ask,
        }
    }
}

/// The context state of `used` tokens of a `limit`-token window, with the ratio; `None`
/// when either is unknown or the limit is 0 (nothing to judge).
pub fn context_state(
    used: Option<u64>,
    limit: Option<u64>,
    policy: &ContextPolicy,
) -> Option<(State, f64)> {
    let (used, limit) = (used?, limit.filter(|l| *l > 0)?);
    let ratio = used as f64 / limit as f64;
    let state = if ratio >= policy.hard_max_ratio {
        State::Breach
    } else if ratio >= policy.target_ratio {
        State::Warning
    } else {
        State::Ok
    };
    Some((state, ratio))
}

/// The fields of an agent file the context rules read.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextFacts {
    /// `ctx_used`.
    pub used: Option<u64>,
    /// `ctx_limit`.
    pub limit: Option<u64>,
    /// `ctx_state` as recorded (`ok` when not recorded).
    pub recorded: State,
    /// `budget_flag` is `thrashing`.
    pub thrashing: bool,
    /// `compactions`: when the agent was compacted.
    pub compactions: Vec<DateTime<Utc>>,
    /// `budget_request`: a breach waits for an operator already.
    pub requested: bool,
}

impl ContextFacts {
    /// The fields of a typed agent.
    pub fn of(agent: &Agent) -> ContextFacts {
        ContextFacts {
            used: agent.ctx_used,
            limit: agent.ctx_limit,
            recorded: agent.ctx_state.unwrap_or(State::Ok),
            thrashing: agent.budget_flag == Some(BudgetFlag::Thrashing),
            compactions: agent.compactions.clone(),
            requested: agent.budget_request.is_some(),
        }
    }
}

/// The compactions that count against `compact_max_per_hour` at `now`: those less than a
/// whole hour ago (by whole seconds).
pub fn compactions_last_hour(
    compactions: &[DateTime<Utc>],
    now: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    compactions
        .iter()
        .copied()
        .filter(|t| (now - *t).num_seconds() < 3600)
        .collect()
}

/// A context state change to record (`ctx_state`) with its event.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextTransition {
    /// The recorded state.
    pub from: State,
    /// The new state.
    pub to: State,
}

/// What a breach calls for.
#[derive(Debug, Clone, PartialEq)]
pub enum BreachAction {
    /// Not breached.
    None,
    /// Save-State → Clear → Resume.
    Compact,
    /// `breach_action: ask`: pause the agent and file a request for an operator.
    Ask,
    /// The thrash guard holds: no compaction. `flag`: the agent is not flagged yet, so set
    /// `budget_flag: thrashing` and log it (once).
    Thrashing {
        /// Why not: too soon after the last compaction, or too many in the last hour.
        why: String,
        /// Whether to flag it now.
        flag: bool,
    },
}

/// What a context reading leads to.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextDecision {
    /// `ctx_used`.
    pub used: u64,
    /// `ctx_limit`.
    pub limit: u64,
    /// The state.
    pub state: State,
    /// `used / limit`.
    pub ratio: f64,
    /// The state change to record, if the state is not the recorded one.
    pub transition: Option<ContextTransition>,
    /// What a breach calls for.
    pub action: BreachAction,
}

impl ContextDecision {
    /// Whether applying it changes anything (so callers can skip a transaction).
    pub fn needs_work(&self) -> bool {
        self.transition.is_some()
            || match &self.action {
                BreachAction::None => false,
                BreachAction::Compact | BreachAction::Ask => true,
                BreachAction::Thrashing { flag, .. } => *flag,
            }
    }

    /// The events of the state change and of a new thrashing flag, in that order (a
    /// compaction's event comes with the compaction).
    pub fn events(&self, agent: &str) -> Vec<NewEvent> {
        let mut out = Vec::new();
        if let Some(t) = &self.transition {
            out.push(
                NewEvent::new(
                    level(t.to),
                    EventKind::context(t.to),
                    format!(
                        "agent {agent} uses {:.0}% of its context ({} -> {})",
                        self.ratio * 100.0,
                        t.from.as_str(),
                        t.to.as_str()
                    ),
                )
                .agent(agent)
                .details(
                    json!({ "ctx_used": self.used, "ctx_limit": self.limit, "ratio": self.ratio }),
                ),
            );
        }
        if let BreachAction::Thrashing { why, flag: true } = &self.action {
            out.push(
                NewEvent::new(
                    Level::Error,
                    EventKind::BudgetThrashing,
                    format!(
                        "agent {agent} breached its context budget again; not compacting: {why}"
                    ),
                )
                .agent(agent),
            );
        }
        out
    }
}

/// What a context reading of `agent` at `now` leads to; `None` when there is nothing to
/// judge (no use or no window reported).
///
/// Each state change is recorded with an event. A breach compacts, unless the thrash guard
/// holds: the last compaction was less than `compact_min_interval` ago, or
/// `compact_max_per_hour` compactions happened in the last hour; then the agent is flagged
/// `thrashing` (once) instead. A breach lasts until the agent reports use below
/// `hard_max_ratio`: readings of the same breach within `compact_min_interval` of its
/// compaction wait for the agent to summarize (nothing to do); one still breached after it
/// is compacted again (the guard applies). With `breach_action: ask`, a breach that would
/// be compacted asks an operator instead (once: not while a request waits).
pub fn decide_context(
    agent: &ContextFacts,
    policy: &ContextPolicy,
    now: DateTime<Utc>,
) -> Option<ContextDecision> {
    let (state, ratio) = context_state(agent.used, agent.limit, policy)?;
    let transition = (agent.recorded != state).then_some(ContextTransition {
        from: agent.recorded,
        to: state,
    });
    let action = if state != State::Breach {
        BreachAction::None
    } else {
        let recent = compactions_last_hour(&agent.compactions, now);
        let min_interval = policy.compact_min_interval;
        let max_per_hour = policy.compact_max_per_hour;
        let too_soon = recent
            .iter()
            .max()
            .is_some_and(|last| ((now - *last).num_milliseconds() as f64 / 1000.0) < min_interval);
        let too_many = recent.len() as u64 >= max_per_hour;
        if agent.requested || (too_soon && agent.recorded == State::Breach) {
            // Asked about already, or the same breach compacted a moment ago: the agent (or
            // an operator) has it.
            BreachAction::None
        } else if policy.ask {
            BreachAction::Ask
        } else if too_soon {
            BreachAction::Thrashing {
                why: format!("the last compaction was less than {min_interval}s ago"),
                flag: !agent.thrashing,
            }
        } else if too_many {
            BreachAction::Thrashing {
                why: format!(
                    "{} compactions in the last hour (compact_max_per_hour is {max_per_hour})",
                    recent.len()
                ),
                flag: !agent.thrashing,
            }
        } else {
            BreachAction::Compact
        }
    };
    Some(ContextDecision {
        // Both are known when there is a state.
        used: agent.used.unwrap_or(0),
        limit: agent.limit.unwrap_or(0),
        state,
        ratio,
        transition,
        action,
    })
}

/// Money and tokens spent.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Spent {
    /// Dollars.
    pub cost_usd: f64,
    /// Tokens.
    pub tokens: f64,
}

impl Spent {
    /// An agent's spend (`cost_usd`, `tokens_used`; missing is 0).
    pub fn of(agent: &Agent) -> Spent {
        Spent {
            cost_usd: agent.cost_usd.unwrap_or(0.0),
            tokens: agent.tokens_used.unwrap_or(0.0),
        }
    }

    /// What several agents spent together, added in the order given.
    pub fn total<'a>(agents: impl IntoIterator<Item = &'a Agent>) -> Spent {
        agents.into_iter().fold(Spent::default(), |sum, a| {
            let one = Spent::of(a);
            Spent {
                cost_usd: sum.cost_usd + one.cost_usd,
                tokens: sum.tokens + one.tokens,
            }
        })
    }
}

/// The policy's spend limits; `None`: no limit (missing, null, not a number, negative).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SpendLimits {
    /// `cost_soft_usd`: a warning.
    pub cost_soft: Option<f64>,
    /// `cost_hard_usd`: stop.
    pub cost_hard: Option<f64>,
    /// `tokens_soft`: a warning.
    pub tokens_soft: Option<f64>,
    /// `tokens_hard`: stop.
    pub tokens_hard: Option<f64>,
    /// `cell_cost_hard_usd`: stop every agent of the cell.
    pub cell_cost_hard: Option<f64>,
    /// `cell_tokens_hard`: stop every agent of the cell.
    pub cell_tokens_hard: Option<f64>,
}

impl SpendLimits {
    /// The limits of an effective policy.
    pub fn from_policy(policy: &Policy) -> SpendLimits {
        SpendLimits {
            cost_soft: policy.cost_soft_usd(),
            cost_hard: policy.cost_hard_usd(),
            tokens_soft: policy.tokens_soft(),
            tokens_hard: policy.tokens_hard(),
            cell_cost_hard: policy.cell_cost_hard_usd(),
            cell_tokens_hard: policy.cell_tokens_hard(),
        }
    }

    /// Whether a limit needs the cell's totals (so callers add them up only then).
    pub fn has_cell_limits(&self) -> bool {
        self.cell_cost_hard.is_some() || self.cell_tokens_hard.is_some()
    }
}

/// The spend state of an agent that spent `agent` in a cell whose agents spent `cell`
/// together, with the reason when it is not ok: the first limit reached of the agent's
/// hard limits, the cell's, then the agent's soft limits (a limit is reached at equality).
pub fn spend_state(agent: Spent, cell: Spent, limits: &SpendLimits) -> (State, Option<String>) {
    let checks = [
        (agent.cost_usd, limits.cost_hard, State::Breach, "cost_usd"),
        (agent.tokens, limits.tokens_hard, State::Breach, "tokens"),
        (
            cell.cost_usd,
            limits.cell_cost_hard,
            State::Breach,
            "cell cost_usd",
        ),
        (
            cell.tokens,
            limits.cell_tokens_hard,
            State::Breach,
            "cell tokens",
        ),
        (agent.cost_usd, limits.cost_soft, State::Warning, "cost_usd"),
        (agent.tokens, limits.tokens_soft, State::Warning, "tokens"),
    ];
    for (value, limit, state, what) in checks {
        if let Some(l) = limit {
            if value >= l {
                return (state, Some(format!("{what} {value} reached the limit {l}")));
            }
        }
    }
    (State::Ok, None)
}

/// What a spend reading leads to.
#[derive(Debug, Clone, PartialEq)]
pub struct SpendDecision {
    /// The state.
    pub state: State,
    /// Why, when not ok.
    pub why: Option<String>,
    /// Whether the state differs from the recorded `spend_state` (then record it, with
    /// its event).
    pub changed: bool,
}

impl SpendDecision {
    /// The event of a change.
    pub fn event(&self, agent: &str) -> Option<NewEvent> {
        if !self.changed {
            return None;
        }
        let kind = EventKind::spend(self.state);
        let why = self.why.as_deref().unwrap_or("spend within budget");
        Some(NewEvent::new(level(self.state), kind, format!("agent {agent}: {why}")).agent(agent))
    }
}

/// What the spend of an agent (recorded state `recorded`, `ok` when not recorded) leads
/// to.
pub fn decide_spend(
    agent: Spent,
    recorded: State,
    cell: Spent,
    limits: &SpendLimits,
) -> SpendDecision {
    let (state, why) = spend_state(agent, cell, limits);
    SpendDecision {
        state,
        why,
        changed: recorded != state,
    }
}

/// The fields of `cell.json` its time budget depends on.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CellClock {
    /// `status` is `active` (only an active cell's time runs out).
    pub active: bool,
    /// `activated_at`, else `created_at`.
    pub started: Option<DateTime<Utc>>,
    /// `timeout` in seconds (`None`: none, or not positive).
    pub timeout: Option<f64>,
    /// `paused_seconds`: time spent paused before, which does not count.
    pub paused: f64,
    /// When a cell that is not active stopped (`status_changed_at`): its clock stands
    /// still from then on.
    pub stopped: Option<DateTime<Utc>>,
}

impl CellClock {
    /// The fields of a typed `cell.json`.
    pub fn of(cell: &Cell) -> CellClock {
        CellClock {
            active: cell.status == CellStatus::Active,
            started: Some(cell.clock_start()),
            timeout: cell.timeout.filter(|t| *t > 0.0),
            paused: cell.paused_seconds.filter(|p| *p > 0.0).unwrap_or(0.0),
            stopped: cell
                .status_changed_at
                .filter(|_| cell.status != CellStatus::Active),
        }
    }

    /// Seconds run at `now` (active time: the pauses before, and the time since a cell
    /// that is not active stopped, do not count), if the start is known.
    pub fn used(&self, now: DateTime<Utc>) -> Option<f64> {
        let until = match self.stopped {
            Some(stopped) if !self.active => stopped.min(now),
            _ => now,
        };
        self.started
            .map(|s| (until - s).num_milliseconds() as f64 / 1000.0 - self.paused)
    }
}

/// What a cell's time budget calls for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeDecision {
    /// The cell is not active: its time does not run out.
    NotActive,
    /// No start or no timeout: no time budget.
    Unlimited,
    /// Within its time (the timeout itself included).
    Within {
        /// Seconds run.
        used: f64,
        /// The budget.
        timeout: f64,
    },
    /// Past its timeout: the cell becomes `failed`.
    TimedOut {
        /// Seconds run.
        used: f64,
        /// The budget.
        timeout: f64,
    },
}

impl TimeDecision {
    /// The `budget.cell_timeout` event of a timeout.
    pub fn event(&self) -> Option<NewEvent> {
        let TimeDecision::TimedOut { used, timeout } = *self else {
            return None;
        };
        Some(
            NewEvent::new(
                Level::Error,
                EventKind::BudgetCellTimeout,
                format!(
                    "cell ran {} past its timeout of {}",
                    clock::human_duration(used - timeout),
                    clock::human_duration(timeout)
                ),
            )
            .details(json!({ "used": used, "timeout": timeout })),
        )
    }
}

/// Whether an active cell has run past its `timeout` at `now`.
pub fn decide_time(cell: &CellClock, now: DateTime<Utc>) -> TimeDecision {
    if !cell.active {
        return TimeDecision::NotActive;
    }
    match (cell.used(now), cell.timeout) {
        (Some(used), Some(timeout)) if used > timeout => TimeDecision::TimedOut { used, timeout },
        (Some(used), Some(timeout)) => TimeDecision::Within { used, timeout },
        _ => TimeDecision::Unlimited,
    }
}

#[cfg(test)]
mod tests {
    //! One table per rule; a row names the case it pins down.
    // A row is a tuple with one column per input and outcome.
    #![allow(clippy::type_complexity)]

    use super::*;
    use crate::doc::Doc;
    use std::path::Path;

    use State::{Breach, Ok as Fine, Warning};

    fn doc(json: &str) -> Doc {
        Doc::parse(json.as_bytes(), Path::new("t.json")).unwrap()
    }

    fn t0() -> DateTime<Utc> {
        clock::parse("2026-11-23T10:00:00Z").unwrap()
    }

    /// `secs` after [`t0`] (before, when negative).
    fn at(secs: f64) -> DateTime<Utc> {
        t0() + chrono::Duration::milliseconds((secs * 1000.0).round() as i64)
    }

    fn policy(json: &str) -> Policy {
        crate::ops::policy::of_file(json)
    }

    fn context(json: &str) -> ContextPolicy {
        ContextPolicy::from_policy(&policy(json))
    }

    #[test]
    fn the_context_policy_comes_from_the_settings() {
        // (policies.json, target, hard, min interval, max per hour)
        #[rustfmt::skip]
        let rows: &[(&str, f64, f64, f64, u64)] = &[
            ("{}", 0.5, 0.75, 300.0, 4),
            (r#"{"target_ratio": 0.8, "hard_max_ratio": 0.9}"#, 0.8, 0.9, 300.0, 4),
            (r#"{"target_ratio": "half"}"#, 0.5, 0.75, 300.0, 4),
            (r#"{"compact_min_interval": 0, "compact_max_per_hour": 0}"#, 0.5, 0.75, 0.0, 0),
            (r#"{"compact_min_interval": -1}"#, 0.5, 0.75, 300.0, 4),
            (r#"{"compact_max_per_hour": 2.5}"#, 0.5, 0.75, 300.0, 4),
            (r#"{"compact_max_per_hour": 10}"#, 0.5, 0.75, 300.0, 10),
        ];
        for &(json, target, hard, min, max) in rows {
            assert_eq!(
                context(json),
                ContextPolicy {
                    target_ratio: target,
                    hard_max_ratio: hard,
                    compact_min_interval: min,
                    compact_max_per_hour: max,
                    ask: false,
                },
                "{json}"
            );
        }
        assert!(context(r#"{"breach_action": "ask"}"#).ask);
        // A word pas does not know is refused when the file is read, naming it.
        let doc = crate::doc::Doc::parse(
            br#"{"breach_action": "sometimes"}"#,
            std::path::Path::new("config/policies.json"),
        )
        .unwrap();
        let err = crate::model::Policies::from_doc(&doc).unwrap_err();
        assert!(err.message.contains("breach_action"), "{}", err.message);
    }

    #[test]
    fn context_use_is_ok_warning_or_breach() {
        let custom = r#"{"target_ratio": 0.8, "hard_max_ratio": 0.9}"#;
        let upside_down = r#"{"target_ratio": 0.9, "hard_max_ratio": 0.5}"#;
        // (policies.json, used, limit, state)
        #[rustfmt::skip]
        let rows: &[(&str, Option<u64>, Option<u64>, Option<State>)] = &[
            ("{}", Some(0), Some(100), Some(Fine)),
            ("{}", Some(49), Some(100), Some(Fine)),
            ("{}", Some(50), Some(100), Some(Warning)),
            ("{}", Some(74), Some(100), Some(Warning)),
            ("{}", Some(75), Some(100), Some(Breach)),
            ("{}", Some(100), Some(100), Some(Breach)),
            ("{}", Some(150), Some(100), Some(Breach)),
            ("{}", Some(75), None, None),
            ("{}", None, Some(100), None),
            ("{}", Some(75), Some(0), None),
            (custom, Some(79), Some(100), Some(Fine)),
            (custom, Some(80), Some(100), Some(Warning)),
            (custom, Some(90), Some(100), Some(Breach)),
            // The hard ratio is asked first.
            (upside_down, Some(60), Some(100), Some(Breach)),
        ];
        for &(json, used, limit, state) in rows {
            let got = context_state(used, limit, &context(json));
            assert_eq!(got.map(|s| s.0), state, "{json} {used:?}/{limit:?}");
            if let (Some((_, ratio)), Some(u), Some(l)) = (got, used, limit) {
                assert_eq!(ratio, u as f64 / l as f64);
            }
        }
    }

    #[test]
    fn compactions_count_for_an_hour() {
        let times: Vec<DateTime<Utc>> = [-3600.5, -3600.0, -3599.9, -300.0, 0.0, 10.0]
            .iter()
            .map(|s| at(*s))
            .collect();
        // Less than a whole hour (by whole seconds) ago; later ones count too.
        assert_eq!(
            compactions_last_hour(&times, t0()),
            [at(-3599.9), at(-300.0), at(0.0), at(10.0)]
        );
    }

    /// An agent reading `used` of 100 tokens, recorded `recorded`, compacted at the given
    /// seconds after t0.
    fn reading(used: u64, recorded: &str, compacted: &[f64]) -> ContextFacts {
        ContextFacts {
            used: Some(used),
            limit: Some(100),
            recorded: recorded.parse().unwrap(),
            thrashing: false,
            compactions: compacted.iter().map(|s| at(*s)).collect(),
            requested: false,
        }
    }

    /// What a row expects of the breach.
    #[derive(Debug, PartialEq)]
    enum Act {
        None,
        Compact,
        Ask,
        TooSoon,
        TooMany,
        Flagged,
    }

    #[test]
    fn a_context_reading_moves_the_state_and_a_breach_compacts_unless_thrashing() {
        let flagged = |f: ContextFacts| ContextFacts {
            thrashing: true,
            ..f
        };
        let four_in_an_hour = [-3599.0, -2000.0, -1000.0, -400.0];
        let three_and_an_old_one = [-3600.0, -2000.0, -1000.0, -400.0];
        let no_gap = r#"{"compact_min_interval": 0}"#;
        let never = r#"{"compact_max_per_hour": 0}"#;
        let ask = r#"{"breach_action": "ask"}"#;
        let asked = |f: ContextFacts| ContextFacts {
            requested: true,
            ..f
        };
        // (why, reading, policies.json, transition (from, to), breach action, needs work)
        #[rustfmt::skip]
        let rows: Vec<(&str, ContextFacts, &str, Option<(&str, State)>, Act, bool)> = vec![
            ("ok stays ok", reading(40, "ok", &[]), "{}", None, Act::None, false),
            ("ok to warning", reading(55, "ok", &[]), "{}", Some(("ok", Warning)), Act::None, true),
            ("warning stays warning", reading(60, "warning", &[]), "{}", None, Act::None, false),
            ("warning back to ok", reading(20, "warning", &[]), "{}", Some(("warning", Fine)), Act::None, true),
            ("warning to breach: compact", reading(80, "warning", &[]), "{}", Some(("warning", Breach)), Act::Compact, true),
            ("ok straight to breach", reading(99, "ok", &[]), "{}", Some(("ok", Breach)), Act::Compact, true),
            ("breach recorded: compact again", reading(80, "breach", &[]), "{}", None, Act::Compact, true),
            ("last compaction 299 s ago", reading(80, "ok", &[-299.0]), "{}", Some(("ok", Breach)), Act::TooSoon, true),
            ("last compaction 299.999 s ago", reading(80, "ok", &[-299.999]), "{}", Some(("ok", Breach)), Act::TooSoon, true),
            ("last compaction 300 s ago", reading(80, "ok", &[-300.0]), "{}", Some(("ok", Breach)), Act::Compact, true),
            ("four in the last hour", reading(80, "breach", &four_in_an_hour), "{}", None, Act::TooMany, true),
            ("three, and one a whole hour ago", reading(80, "breach", &three_and_an_old_one), "{}", None, Act::Compact, true),
            ("too soon and too many: too soon", reading(80, "ok", &[-3000.0, -2000.0, -1000.0, -10.0]), "{}", Some(("ok", Breach)), Act::TooSoon, true),
            ("a compaction stamped in the future is too soon", reading(80, "warning", &[60.0]), "{}", Some(("warning", Breach)), Act::TooSoon, true),
            ("the same breach, compacted 10 s ago: it lasts, waiting for the agent",
                reading(80, "breach", &[-10.0]), "{}", None, Act::None, false),
            ("the same breach, compacted 299 s ago: still waiting",
                reading(80, "breach", &[-3000.0, -2000.0, -1000.0, -299.0]), "{}", None, Act::None, false),
            ("flagged already, the same breach: not again", flagged(reading(80, "breach", &[-10.0])), "{}", None, Act::None, false),
            ("flagged, and the breach is new", flagged(reading(80, "warning", &[-10.0])), "{}", Some(("warning", Breach)), Act::Flagged, true),
            ("flagged, the guard lets it compact", flagged(reading(80, "breach", &[-400.0])), "{}", None, Act::Compact, true),
            ("no minimum interval", reading(80, "breach", &[-1.0]), no_gap, None, Act::Compact, true),
            ("no compaction allowed per hour", reading(80, "breach", &[]), never, None, Act::TooMany, true),
            ("ask: a breach asks an operator", reading(80, "warning", &[]), ask, Some(("warning", Breach)), Act::Ask, true),
            ("ask: whatever the thrash guard says", reading(80, "ok", &[-10.0]), ask, Some(("ok", Breach)), Act::Ask, true),
            ("ask, a request waiting: nothing more", asked(reading(80, "breach", &[])), ask, None, Act::None, false),
            ("ask, a request waiting, use falls: the state moves, nothing else", asked(reading(20, "breach", &[])), ask, Some(("breach", Fine)), Act::None, true),
            ("ask, approved (compacted) 10 s ago, the same breach: waiting for the agent", reading(80, "breach", &[-10.0]), ask, None, Act::None, false),
            ("ask, still breached long after the approval: asks again", reading(80, "breach", &[-400.0]), ask, None, Act::Ask, true),
        ];
        for (why, facts, json, transition, act, work) in rows {
            let d = decide_context(&facts, &context(json), t0()).unwrap();
            assert_eq!(
                d.transition.as_ref().map(|t| (t.from.as_str(), t.to)),
                transition,
                "{why}: transition"
            );
            let got = match &d.action {
                BreachAction::None => Act::None,
                BreachAction::Compact => Act::Compact,
                BreachAction::Ask => Act::Ask,
                BreachAction::Thrashing { flag: false, .. } => Act::Flagged,
                BreachAction::Thrashing { why, .. } if why.contains("less than") => Act::TooSoon,
                BreachAction::Thrashing { .. } => Act::TooMany,
            };
            assert_eq!(got, act, "{why}: action");
            assert_eq!(d.needs_work(), work, "{why}: needs work");
        }
        // Nothing to judge without use and window.
        for facts in [
            ContextFacts {
                used: None,
                limit: None,
                ..reading(0, "ok", &[])
            },
            ContextFacts {
                limit: None,
                ..reading(80, "ok", &[])
            },
            ContextFacts {
                limit: Some(0),
                ..reading(80, "ok", &[])
            },
        ] {
            assert_eq!(decide_context(&facts, &context("{}"), t0()), None);
        }
    }

    #[test]
    fn context_decisions_carry_their_events() {
        let kinds = |facts: ContextFacts| {
            decide_context(&facts, &context("{}"), t0())
                .unwrap()
                .events("a1")
                .into_iter()
                .map(|e| (e.level, e.kind.as_str().to_string(), e.message))
                .collect::<Vec<_>>()
        };
        let e = |l, k: &str, m: &str| (l, k.to_string(), m.to_string());
        assert_eq!(
            kinds(reading(55, "ok", &[])),
            [e(
                Level::Warn,
                "budget.context_warning",
                "agent a1 uses 55% of its context (ok -> warning)"
            )]
        );
        assert_eq!(
            kinds(reading(20, "breach", &[])),
            [e(
                Level::Info,
                "budget.context_ok",
                "agent a1 uses 20% of its context (breach -> ok)"
            )]
        );
        // A compaction's own event comes with the compaction.
        assert_eq!(
            kinds(reading(80, "warning", &[])),
            [e(
                Level::Error,
                "budget.context_breach",
                "agent a1 uses 80% of its context (warning -> breach)"
            )]
        );
        assert_eq!(kinds(reading(80, "breach", &[])), []);
        assert_eq!(
            kinds(reading(90, "ok", &[-10.0])),
            [
                e(
                    Level::Error,
                    "budget.context_breach",
                    "agent a1 uses 90% of its context (ok -> breach)"
                ),
                e(
                    Level::Error,
                    "budget.thrashing",
                    "agent a1 breached its context budget again; not compacting: the last compaction was less than 300s ago"
                ),
            ]
        );
        assert_eq!(
            kinds(reading(90, "breach", &[-3000.0, -2000.0, -1000.0, -500.0])),
            [e(
                Level::Error,
                "budget.thrashing",
                "agent a1 breached its context budget again; not compacting: 4 compactions in the last hour (compact_max_per_hour is 4)"
            )]
        );
        let d = decide_context(&reading(55, "ok", &[]), &context("{}"), t0()).unwrap();
        assert_eq!(
            d.events("a1")[0].details,
            json!({"ctx_used": 55, "ctx_limit": 100, "ratio": 0.55})
        );
    }

    /// An agent file's typed view.
    fn agent(json: &str) -> crate::error::Result<Agent> {
        Agent::from_doc(&doc(json))
    }

    #[test]
    fn context_facts_are_read_from_the_agent_file() {
        let f = ContextFacts::of(
            &agent(
                r#"{"agent_id": "a1", "ctx_used": 5, "ctx_limit": 10, "ctx_state": "warning",
                    "budget_flag": "thrashing", "compactions": ["2026-11-23T10:00:00Z"]}"#,
            )
            .unwrap(),
        );
        assert_eq!(
            f,
            ContextFacts {
                used: Some(5),
                limit: Some(10),
                recorded: Warning,
                thrashing: true,
                compactions: vec![t0()],
                requested: false,
            }
        );
        let f = ContextFacts::of(&agent(r#"{"agent_id": "a1"}"#).unwrap());
        assert_eq!((f.recorded, f.thrashing), (Fine, false));
        // pas's own record of the state is recomputed: one it cannot read is not recorded,
        // and is written again with the next change.
        let f = ContextFacts::of(&agent(r#"{"agent_id": "a1", "ctx_state": "weird"}"#).unwrap());
        assert_eq!(f.recorded, Fine);
        // A flag or a compaction time pas cannot read is refused naming the field, not
        // taken for no flag or left out.
        for (written, field) in [
            (r#""budget_flag": "other""#, "budget_flag"),
            (
                r#""compactions": ["2026-11-23T10:00:00Z", "not a time"]"#,
                "compactions[1]",
            ),
            (r#""compactions": [7e20]"#, "compactions[0]"),
        ] {
            let err = agent(&format!(r#"{{"agent_id": "a1", {written}}}"#)).unwrap_err();
            assert!(
                err.message
                    .starts_with(&format!("agents/a1.json {field}: ")),
                "{written}: {}",
                err.message
            );
        }
    }

    fn spent(cost_usd: f64, tokens: f64) -> Spent {
        Spent { cost_usd, tokens }
    }

    #[test]
    fn spend_limits_come_from_the_settings() {
        let l = SpendLimits::from_policy(&policy(
            r#"{"cost_soft_usd": 1, "cost_hard_usd": null, "tokens_soft": "many",
                "tokens_hard": -1, "cell_cost_hard_usd": 0, "cell_tokens_hard": 2.5}"#,
        ));
        assert_eq!(
            l,
            SpendLimits {
                cost_soft: Some(1.0),
                cost_hard: None,
                tokens_soft: None,
                tokens_hard: None,
                cell_cost_hard: Some(0.0),
                cell_tokens_hard: Some(2.5),
            }
        );
        assert!(l.has_cell_limits());
        assert!(!SpendLimits::from_policy(&policy("{}")).has_cell_limits());
        assert_eq!(
            SpendLimits::from_policy(&policy("{}")),
            SpendLimits::default()
        );
    }

    #[test]
    fn spend_is_ok_warning_or_breach() {
        let limits = |json: &str| SpendLimits::from_policy(&policy(json));
        let agent_limits =
            r#"{"cost_soft_usd": 1, "cost_hard_usd": 5, "tokens_soft": 100, "tokens_hard": 1000}"#;
        let cell_limits =
            r#"{"cost_soft_usd": 1, "cell_cost_hard_usd": 8, "cell_tokens_hard": 5000}"#;
        // (why, policies.json, agent, cell, state, reason)
        #[rustfmt::skip]
        let rows: &[(&str, &str, Spent, Spent, State, Option<&str>)] = &[
            ("no limits", "{}", spent(1e9, 1e9), spent(1e9, 1e9), Fine, None),
            ("below the soft limit", agent_limits, spent(0.5, 0.0), spent(0.5, 0.0), Fine, None),
            ("at the soft limit", agent_limits, spent(1.0, 0.0), spent(1.0, 0.0), Warning, Some("cost_usd 1 reached the limit 1")),
            ("below the hard limit", agent_limits, spent(4.99, 0.0), spent(4.99, 0.0), Warning, Some("cost_usd 4.99 reached the limit 1")),
            ("at the hard limit", agent_limits, spent(5.0, 0.0), spent(5.0, 0.0), Breach, Some("cost_usd 5 reached the limit 5")),
            ("past the hard limit", agent_limits, spent(5.5, 0.0), spent(5.5, 0.0), Breach, Some("cost_usd 5.5 reached the limit 5")),
            ("tokens: soft", agent_limits, spent(0.0, 150.0), spent(0.0, 150.0), Warning, Some("tokens 150 reached the limit 100")),
            ("tokens: hard", agent_limits, spent(0.0, 1000.0), spent(0.0, 1000.0), Breach, Some("tokens 1000 reached the limit 1000")),
            ("cost before tokens", agent_limits, spent(6.0, 2000.0), spent(6.0, 2000.0), Breach, Some("cost_usd 6 reached the limit 5")),
            ("a hard limit before a soft one", agent_limits, spent(2.0, 1000.0), spent(2.0, 1000.0), Breach, Some("tokens 1000 reached the limit 1000")),
            ("the cell's cost", cell_limits, spent(0.5, 0.0), spent(8.5, 0.0), Breach, Some("cell cost_usd 8.5 reached the limit 8")),
            ("the cell's tokens", cell_limits, spent(0.0, 10.0), spent(0.0, 5000.0), Breach, Some("cell tokens 5000 reached the limit 5000")),
            ("the cell's limit before the agent's soft one", cell_limits, spent(2.0, 0.0), spent(8.0, 0.0), Breach, Some("cell cost_usd 8 reached the limit 8")),
            ("the cell below its limit", cell_limits, spent(2.0, 0.0), spent(7.9, 0.0), Warning, Some("cost_usd 2 reached the limit 1")),
            ("a negative limit is none", r#"{"cost_hard_usd": -1}"#, spent(5.0, 0.0), spent(5.0, 0.0), Fine, None),
            ("a zero limit is reached at once", r#"{"cost_hard_usd": 0}"#, spent(0.0, 0.0), spent(0.0, 0.0), Breach, Some("cost_usd 0 reached the limit 0")),
        ];
        for &(why, json, agent, cell, state, reason) in rows {
            let (got, why_not) = spend_state(agent, cell, &limits(json));
            assert_eq!((got, why_not.as_deref()), (state, reason), "{why}");
        }
    }

    #[test]
    fn a_spend_change_is_recorded_once_with_its_event() {
        let limits =
            SpendLimits::from_policy(&policy(r#"{"cost_soft_usd": 1, "cost_hard_usd": 5}"#));
        // (recorded, spent, state, event (level, kind, message))
        #[rustfmt::skip]
        let rows: &[(&str, f64, State, Option<(Level, &str, &str)>)] = &[
            ("ok", 0.5, Fine, None),
            ("ok", 2.0, Warning, Some((Level::Warn, "budget.spend_warning", "agent a1: cost_usd 2 reached the limit 1"))),
            ("warning", 2.0, Warning, None),
            ("warning", 5.5, Breach, Some((Level::Error, "budget.reached", "agent a1: cost_usd 5.5 reached the limit 5"))),
            ("ok", 5.5, Breach, Some((Level::Error, "budget.reached", "agent a1: cost_usd 5.5 reached the limit 5"))),
            ("breach", 6.0, Breach, None),
            ("breach", 0.5, Fine, Some((Level::Info, "budget.spend_ok", "agent a1: spend within budget"))),
        ];
        for &(recorded, cost, state, event) in rows {
            let recorded = recorded.parse().unwrap();
            let d = decide_spend(spent(cost, 0.0), recorded, spent(cost, 0.0), &limits);
            assert_eq!(d.state, state, "{recorded} {cost}");
            assert_eq!(d.changed, event.is_some(), "{recorded} {cost}");
            let got = d
                .event("a1")
                .map(|e| (e.level, e.kind.as_str().to_string(), e.message));
            assert_eq!(
                got,
                event.map(|(l, k, m)| (l, k.to_string(), m.to_string())),
                "{recorded} {cost}"
            );
        }
        // Spend adds up in the order given.
        let agents = [
            agent(r#"{"agent_id": "a1", "cost_usd": 1.5, "tokens_used": 10}"#).unwrap(),
            agent(r#"{"agent_id": "a2", "tokens_used": 5}"#).unwrap(),
            agent(r#"{"agent_id": "a3", "cost_usd": 2}"#).unwrap(),
        ];
        assert_eq!(Spent::total(&agents), spent(3.5, 15.0));
        assert_eq!(Spent::total(&[]), Spent::default());
    }

    #[test]
    fn an_active_cell_past_its_timeout_fails() {
        let read = |json: &str| {
            let ids = r#""cell_id": "c", "mission_name": "m", "#;
            Cell::from_doc(&doc(&json.replacen('{', &format!("{{{ids}"), 1)))
        };
        let cell = |json: &str| CellClock::of(&read(json).unwrap());
        let created = r#""created_at": "2026-11-23T10:00:00Z""#;
        let active = |extra: &str| cell(&format!(r#"{{"status": "active", {created}{extra}}}"#));
        // (why, cell, seconds after t0, decision)
        #[rustfmt::skip]
        let rows: Vec<(&str, CellClock, f64, TimeDecision)> = vec![
            ("within", active(r#", "timeout": 3600"#), 1800.0, TimeDecision::Within { used: 1800.0, timeout: 3600.0 }),
            ("the timeout itself", active(r#", "timeout": 3600"#), 3600.0, TimeDecision::Within { used: 3600.0, timeout: 3600.0 }),
            ("past the timeout", active(r#", "timeout": 3600"#), 3600.001, TimeDecision::TimedOut { used: 3600.001, timeout: 3600.0 }),
            ("activation restarts the clock", active(r#", "timeout": 3600, "activated_at": "2026-11-23T11:00:00Z""#), 4000.0, TimeDecision::Within { used: 400.0, timeout: 3600.0 }),
            ("no activation: from creation", active(r#", "timeout": 3600, "activated_at": null"#), 4000.0, TimeDecision::TimedOut { used: 4000.0, timeout: 3600.0 }),
            ("no timeout", active(""), 1e6, TimeDecision::Unlimited),
            ("a zero timeout is none", active(r#", "timeout": 0"#), 1e6, TimeDecision::Unlimited),
            ("a negative timeout is none", active(r#", "timeout": -5"#), 1e6, TimeDecision::Unlimited),
            ("no start", CellClock { active: true, started: None, timeout: Some(10.0), ..CellClock::default() }, 1e6, TimeDecision::Unlimited),
            ("a resumed cell counts active time only", active(r#", "timeout": 3600, "paused_seconds": 1000"#), 4000.0, TimeDecision::Within { used: 3000.0, timeout: 3600.0 }),
            ("its pauses are not all of its time", active(r#", "timeout": 3600, "paused_seconds": 300"#), 4000.0, TimeDecision::TimedOut { used: 3700.0, timeout: 3600.0 }),
            ("a paused cell's time does not run out", cell(&format!(r#"{{"status": "paused", "timeout": 10, {created}}}"#)), 1e6, TimeDecision::NotActive),
            ("nor a failed one's", cell(&format!(r#"{{"status": "failed", "timeout": 10, {created}}}"#)), 1e6, TimeDecision::NotActive),
        ];
        // A start or a timeout pas cannot read is refused naming the field, not taken for
        // none.
        for (written, field) in [
            (r#""activated_at": "soon""#, "activated_at"),
            (r#""timeout": "long""#, "timeout"),
        ] {
            let json = format!(r#"{{"status": "active", {created}, {written}}}"#);
            let err = read(&json).unwrap_err();
            assert!(
                err.message.starts_with(&format!("cell.json {field}: ")),
                "{written}: {}",
                err.message
            );
        }
        assert!(
            read(r#"{"status": "active"}"#).is_err(),
            "created_at is required"
        );
        for (why, clock, t, decision) in rows {
            assert_eq!(decide_time(&clock, at(t)), decision, "{why}");
            assert_eq!(
                decision.event().is_some(),
                matches!(decision, TimeDecision::TimedOut { .. }),
                "{why}"
            );
        }
        let e = TimeDecision::TimedOut {
            used: 3700.0,
            timeout: 3600.0,
        }
        .event()
        .unwrap();
        assert_eq!(
            (e.level, e.kind.as_str(), e.message.as_str(), e.details),
            (
                Level::Error,
                "budget.cell_timeout",
                "cell ran 1m40s past its timeout of 1h00m",
                json!({"used": 3700.0, "timeout": 3600.0})
            )
        );
    }
}
