//! Every kind of event pas writes to `logs/events.jsonl`, as one enum.
//!
//! The log itself stays open: its lines are read with `kind` as a string, because other
//! tools may append kinds of their own and `pas events --kind agent.` filters by prefix. This
//! enum is for writing, and for code that reacts to pas's own kinds: a kind spelled once
//! here cannot be misspelled at a call site. A test scans `src/` for kind literals so a
//! new one cannot be written without being added here.

use crate::model::status::{BudgetState, ReservationStatus};

/// Declares the kinds: variant and dotted spelling.
macro_rules! kinds {
    ($($(#[$meta:meta])* $variant:ident = $text:literal,)*) => {
        /// What happened, as the event's dotted `kind`.
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash,
            serde::Serialize, serde::Deserialize,
        )]
        pub enum EventKind {
            $(
                $(#[$meta])*
                #[serde(rename = $text)]
                $variant,
            )*
        }

        impl EventKind {
            /// Every kind, grouped by subject.
            #[cfg(test)]
            pub(crate) const ALL: &'static [EventKind] = &[$(EventKind::$variant),*];

            /// The dotted spelling in the log: `agent.late`, `cell.status`, ...
            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $text,)*
                }
            }

            /// The kind a spelling names; `None` for kinds pas does not write.
            pub(crate) fn parse(text: &str) -> Option<EventKind> {
                match text {
                    $($text => Some(EventKind::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

kinds! {
    /// `pas agent add` (or a mission file) added an agent.
    AgentAdded = "agent.added",
    /// An agent sent its first beat.
    AgentAlive = "agent.alive",
    /// An agent's process ended and, by policy, is not restarted (it becomes idle).
    AgentCompleted = "agent.completed",
    /// An agent has been silent past `heartbeat_ttl`.
    AgentDead = "agent.dead",
    /// An agent reports DEGRADED.
    AgentDegraded = "agent.degraded",
    /// An agent has missed `misses_down` intervals.
    AgentDown = "agent.down",
    /// An agent's process ended; its supervisor saw how.
    AgentExited = "agent.exited",
    /// pas gave up on an agent.
    AgentFailed = "agent.failed",
    /// An agent reported a failure (`pas agent fail`).
    AgentFailure = "agent.failure",
    /// An agent is healthy again after being late, degraded or unhealthy.
    AgentHealthy = "agent.healthy",
    /// An agent's process runs but does not beat, and the watchdog is off.
    AgentHung = "agent.hung",
    /// An agent missed a beat.
    AgentLate = "agent.late",
    /// An agent reports OFFLINE.
    AgentOffline = "agent.offline",
    /// The `on_failure` hook ran for an agent that finally failed.
    AgentOnFailure = "agent.on_failure",
    /// A down or dead agent beats again.
    AgentRecovered = "agent.recovered",
    /// `pas agent rm` removed an agent.
    AgentRemoved = "agent.removed",
    /// `pas agent reset` cleared an agent's restart tally.
    AgentReset = "agent.reset",
    /// A restarted agent sent its first beat.
    AgentRevivalSucceeded = "agent.revival_succeeded",
    /// A restarted agent sent no beat within `revive_timeout`.
    AgentRevivalTimedOut = "agent.revival_timed_out",
    /// An operator approved a revival request.
    AgentReviveApproved = "agent.revive_approved",
    /// A restart could not start the agent's process.
    AgentReviveFailed = "agent.revive_failed",
    /// A revival request waits for an operator (`auto_revive: ask`).
    AgentReviveRequested = "agent.revive_requested",
    /// pas restarted a dead agent.
    AgentRevived = "agent.revived",
    /// pas started an agent's process.
    AgentStarted = "agent.started",
    /// An agent's status was set by hand (`pas agent set --status`).
    AgentStatus = "agent.status",
    /// pas stopped an agent's process (an operator, or the watchdog).
    AgentStopped = "agent.stopped",
    /// An agent died too often within `storm_window`: it cools down.
    AgentStorm = "agent.storm",
    /// An agent failed `failure_threshold` times in a row.
    AgentUnhealthy = "agent.unhealthy",
    /// An agent's process is gone and nobody saw how.
    AgentVanished = "agent.vanished",
    /// An active cell ran past its `timeout` and failed.
    BudgetCellTimeout = "budget.cell_timeout",
    /// An agent's context was compacted (Save-State, Clear, Resume).
    BudgetCompacted = "budget.compacted",
    /// An operator approved a context breach request: the agent is compacted and resumed.
    BudgetBreachApproved = "budget.breach_approved",
    /// An operator denied a context breach request: the agent stays paused.
    BudgetBreachDenied = "budget.breach_denied",
    /// A context breach paused the agent and waits for an operator (`breach_action: ask`).
    BudgetBreachRequested = "budget.breach_requested",
    /// An agent's context use fell below `target_ratio`.
    BudgetContextOk = "budget.context_ok",
    /// An agent's context use reached `target_ratio`.
    BudgetContextWarning = "budget.context_warning",
    /// An agent's context use reached `hard_max_ratio`.
    BudgetContextBreach = "budget.context_breach",
    /// An agent reached a hard spend limit: its beats are answered with `stop`.
    BudgetReached = "budget.reached",
    /// An agent's spend is within its limits again.
    BudgetSpendOk = "budget.spend_ok",
    /// An agent reached a soft spend limit.
    BudgetSpendWarning = "budget.spend_warning",
    /// An agent breached its context budget again too soon: not compacted.
    BudgetThrashing = "budget.thrashing",
    /// A cell was created (by `pas cell create`, or from a mission file).
    CellCreated = "cell.created",
    /// The watch could not handle something in the cell (an unreadable document, a command
    /// it may not run, a lock held too long); recorded once while it lasts.
    CellProblem = "cell.problem",
    /// A cell's status changed.
    CellStatus = "cell.status",
    /// A checkpoint generation was saved.
    CheckpointSaved = "checkpoint.saved",
    /// The `on_event` hook ran for an event (or was refused, or failed).
    HookOnEvent = "hook.on_event",
    /// `pas policy set` set policy values of a cell or an agent.
    PolicySet = "policy.set",
    /// `pas policy unset` removed policy values of a cell or an agent.
    PolicyUnset = "policy.unset",
    /// `pas quota set` changed the cell's quota.
    QuotaSet = "quota.set",
    /// A job reserved resources.
    ReservationMade = "reservation.made",
    /// A reservation was released (by hand, or with its agent).
    ReservationReleased = "reservation.released",
    /// `pas kill` stopped a job and ended its reservation.
    ReservationKilled = "reservation.killed",
    /// A task was added.
    TaskAdded = "task.added",
    /// An agent claimed a task.
    TaskClaimed = "task.claimed",
    /// A task was completed.
    TaskCompleted = "task.completed",
    /// A task failed for good (`max_retries` attempts).
    TaskFailed = "task.failed",
    /// A task moved from one agent to another.
    TaskHandoff = "task.handoff",
    /// An operator denied a handoff request.
    TaskHandoffDenied = "task.handoff_denied",
    /// A handoff waits for an operator (`handoff_approval: manual`).
    TaskHandoffRequested = "task.handoff_requested",
    /// A failed agent's task went back to the queue.
    TaskReleased = "task.released",
    /// A failed attempt put a task back in the queue.
    TaskRequeued = "task.requeued",
}

impl EventKind {
    /// The kind for a new context-budget state (`budget.context_<state>`).
    pub(crate) fn context(state: BudgetState) -> EventKind {
        match state {
            BudgetState::Ok => EventKind::BudgetContextOk,
            BudgetState::Warning => EventKind::BudgetContextWarning,
            BudgetState::Breach => EventKind::BudgetContextBreach,
        }
    }

    /// The kind for a spend-budget state.
    pub(crate) fn spend(state: BudgetState) -> EventKind {
        match state {
            BudgetState::Ok => EventKind::BudgetSpendOk,
            BudgetState::Warning => EventKind::BudgetSpendWarning,
            BudgetState::Breach => EventKind::BudgetReached,
        }
    }

    /// The kind for a reservation's new status (`reservation.<status>`).
    pub(crate) fn reservation(status: ReservationStatus) -> EventKind {
        match status {
            ReservationStatus::Active => EventKind::ReservationMade,
            ReservationStatus::Released => EventKind::ReservationReleased,
            ReservationStatus::Killed => EventKind::ReservationKilled,
        }
    }

    /// The subject before the dot: `agent`, `task`, `cell`, `budget`, ...
    #[cfg(test)]
    pub(crate) fn subject(self) -> &'static str {
        let text = self.as_str();
        text.split_once('.').map_or(text, |(subject, _)| subject)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeSet;
    use std::path::Path;

    #[test]
    fn every_kind_spells_and_parses_once() {
        let mut seen = BTreeSet::new();
        for kind in EventKind::ALL {
            assert!(seen.insert(kind.as_str()), "{} twice", kind.as_str());
            assert_eq!(EventKind::parse(kind.as_str()), Some(*kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.as_str()));
            assert_eq!(
                serde_json::from_value::<EventKind>(json!(kind.as_str())).unwrap(),
                *kind
            );
            assert_eq!(kind.to_string(), kind.as_str());
            let (subject, name) = kind.as_str().split_once('.').unwrap();
            assert_eq!(kind.subject(), subject);
            assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        }
        assert_eq!(EventKind::ALL.len(), 61);
        assert_eq!(EventKind::parse("agent.nonsense"), None);
        assert_eq!(EventKind::parse("test.event"), None);
    }

    #[test]
    fn the_kinds_built_from_states_are_the_ones_the_code_formats() {
        // A context event's kind is its state's word after `budget.context_`.
        for state in BudgetState::ALL {
            assert_eq!(
                EventKind::context(*state).as_str(),
                format!("budget.context_{}", state.as_str())
            );
        }
        assert_eq!(
            EventKind::spend(BudgetState::Ok).as_str(),
            "budget.spend_ok"
        );
        assert_eq!(
            EventKind::spend(BudgetState::Warning).as_str(),
            "budget.spend_warning"
        );
        assert_eq!(
            EventKind::spend(BudgetState::Breach).as_str(),
            "budget.reached"
        );
        // reservation.rs writes format!("reservation.{status}") for the ending statuses.
        for status in [ReservationStatus::Released, ReservationStatus::Killed] {
            assert_eq!(
                EventKind::reservation(status).as_str(),
                format!("reservation.{}", status.as_str())
            );
        }
        assert_eq!(
            EventKind::reservation(ReservationStatus::Active),
            EventKind::ReservationMade
        );
    }

    /// Every `"subject.name"` literal in `src/` (outside this module) with a subject pas
    /// writes events about must be a kind here. Writers cannot get it wrong (`NewEvent`
    /// takes an `EventKind`); this catches the readers that match kinds as text (the
    /// demo's narration, tests, filters), where a typo would silently match nothing.
    #[test]
    fn every_kind_literal_in_the_source_is_here() {
        const SUBJECTS: [&str; 7] = [
            "agent.",
            "budget.",
            "cell.",
            "checkpoint.",
            "quota.",
            "reservation.",
            "task.",
        ];
        // Kinds only the store's contract tests write.
        const TEST_ONLY: [&str; 1] = ["task.created"];
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![src.clone()];
        let mut missing = BTreeSet::new();
        let mut found = 0;
        while let Some(path) = files.pop() {
            if path.is_dir() {
                if path.ends_with("model") {
                    continue;
                }
                for entry in std::fs::read_dir(&path).unwrap() {
                    files.push(entry.unwrap().path());
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Every quote may open a literal; only kind-shaped text up to the next quote
            // counts, so escaped quotes elsewhere do not matter.
            let pieces: Vec<&str> = text.split('"').collect();
            for literal in pieces.iter().skip(1).copied() {
                let is_kind = SUBJECTS.iter().any(|s| literal.starts_with(s))
                    && literal.split_once('.').is_some_and(|(_, name)| {
                        !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    })
                    && !["cell.json", "cell.lock"].contains(&literal);
                if !is_kind || TEST_ONLY.contains(&literal) {
                    continue;
                }
                found += 1;
                if EventKind::parse(literal).is_none() {
                    missing.insert(format!("{literal} ({})", path.display()));
                }
            }
        }
        assert!(found > 20, "the scan found only {found} kind literals");
        assert!(
            missing.is_empty(),
            "event kinds written in src/ but missing from model::EventKind: {missing:?}"
        );
    }
}
