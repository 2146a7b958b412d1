//! The closed sets of words the documents use: statuses, priorities, roles, policies'
//! choices. Each enum spells its words once (`as_str`, serde and `parse` all come from that
//! one spelling), lists them in `ALL`, and reads strictly: a word it does not know is a data
//! error naming the file, the field and the accepted words, not a silent default.
//!
//! The one lenient reading is `auto_revive`: the seed prototypes wrote it as a boolean, so
//! `true` reads as `yes` and `false` as `no` (and stays a boolean on disk until changed).

use serde_json::Value;

use crate::error::Result;
use crate::model::field::{shown, At, Field};

/// Declares a closed set of words: the enum, its spellings and its strict reading.
macro_rules! words {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $text:literal,
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash,
            serde::Serialize, serde::Deserialize,
        )]
        pub enum $name {
            $(
                $(#[$vmeta])*
                #[serde(rename = $text)]
                $variant,
            )*
        }

        impl $name {
            /// Every value, in declaration order (the tests check the spellings with it).
            #[allow(dead_code)]
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The spelling in files and output.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            /// The value a spelling names, if any.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)*
                    _ => None,
                }
            }

            /// The accepted spellings, for messages: `idle, active, paused, failed`.
            pub fn accepted() -> String {
                [$($text),*].join(", ")
            }

            /// Reads a spelling strictly, naming the accepted ones when it is not one.
            fn decode_word(value: &Value, at: &At) -> Result<$name> {
                value
                    .as_str()
                    .and_then($name::parse)
                    .ok_or_else(|| {
                        at.error(format!(
                            "{} is not one of {}",
                            shown(value),
                            $name::accepted()
                        ))
                    })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> std::result::Result<$name, String> {
                $name::parse(text).ok_or_else(|| {
                    format!("{text:?} is not one of {}", $name::accepted())
                })
            }
        }
    };
}

/// Implements [`Field`] for a `words!` enum as its strict spelling.
macro_rules! word_field {
    ($($name:ident),*) => {
        $(
            impl Field for $name {
                fn decode(value: &Value, at: &At) -> Result<Self> {
                    $name::decode_word(value, at)
                }

                fn encode(&self) -> Value {
                    Value::from(self.as_str())
                }
            }
        )*
    };
}

words! {
    /// A cell's lifecycle (`cell.json` `status`).
    pub enum CellStatus {
        /// Agents run and pas revives them.
        Active = "active",
        /// Work is held: agents are told to stop on their next beat.
        Paused = "paused",
        /// Every task is done.
        Completed = "completed",
        /// The mission failed (time ran out, or an operator said so).
        Failed = "failed",
    }
}

words! {
    /// An agent's lifecycle as pas and operators set it (`status`); its liveness is
    /// [`Health`], computed from heartbeats.
    #[derive(Default)]
    pub enum AgentStatus {
        /// Not working; the documented default of a file without `status`. A beat makes
        /// it `active`.
        #[default]
        Idle = "idle",
        /// Working: pas judges its beats and revives it.
        Active = "active",
        /// Held by an operator: told to stop, not revived, claims nothing.
        Paused = "paused",
        /// pas gave up on it; a beat or `pas agent reset` brings it back.
        Failed = "failed",
    }
}

words! {
    /// A task's lifecycle (`status`). `blocked` is not one: it is derived from a pending
    /// task's dependencies and never written.
    pub enum TaskStatus {
        /// Waiting in the queue.
        Pending = "pending",
        /// Claimed by an agent.
        InProgress = "in_progress",
        /// Done; its dependants may start.
        Completed = "completed",
        /// Failed `max_retries` times; stays failed.
        Failed = "failed",
    }
}

words! {
    /// Scheduling order of ready tasks; declared highest first, so sorting ascending puts
    /// the most urgent first.
    #[derive(Default)]
    pub enum Priority {
        /// Taken before the others.
        High = "high",
        /// The documented default of a task without `priority`.
        #[default]
        Medium = "medium",
        /// Taken last.
        Low = "low",
    }
}

words! {
    /// An agent's role in the mission (`role`); shown, not enforced (permissions are).
    #[derive(Default)]
    pub enum Role {
        /// Leads the mission.
        Lead = "lead",
        /// Produces code or documents; the documented default.
        #[default]
        Write = "write",
        /// Reads only.
        Read = "read",
        /// Reviews.
        Audit = "audit",
    }
}

words! {
    /// What an agent said about itself in its last beat (`reported_status`); upper case, as
    /// the seed protocol spells it.
    pub enum ReportedStatus {
        /// Working normally.
        Active = "ACTIVE",
        /// Working, impaired: its health shows `degraded`.
        Degraded = "DEGRADED",
        /// Deliberately not working: not judged by heartbeats.
        Offline = "OFFLINE",
    }
}

words! {
    /// How a cell's agents are isolated (`cell.json` `isolation_level`, `isolation.json`
    /// `level`).
    #[derive(Default)]
    pub enum IsolationLevel {
        /// No isolation.
        None = "none",
        /// Own process session and resource limits; the documented default.
        #[default]
        Level1 = "level_1",
        /// Level 1 plus a mount namespace: the cell directory writable, the rest read-only.
        Level2 = "level_2",
        /// Level 1 in a container (crun): own PID, IPC, UTS and mount namespaces.
        Level3 = "level_3",
    }
}

words! {
    /// What happens to an agent that died (`auto_revive` policy). Reads `true`/`false` too
    /// (the seeds' boolean form) as `yes`/`no`.
    #[derive(Default)]
    pub enum AutoRevive {
        /// Revive it by the restart rules; the built-in default.
        #[default]
        Yes = "yes",
        /// Fail it for good.
        No = "no",
        /// File a revival request and wait for `pas revive approve`.
        Ask = "ask",
    }
}

impl Field for AutoRevive {
    fn decode(value: &Value, at: &At) -> Result<Self> {
        match value {
            Value::Bool(true) => Ok(AutoRevive::Yes),
            Value::Bool(false) => Ok(AutoRevive::No),
            v => AutoRevive::decode_word(v, at).map_err(|e| {
                e.hint("write \"yes\", \"no\" or \"ask\" (true and false read as yes and no)")
            }),
        }
    }

    fn encode(&self) -> Value {
        Value::from(self.as_str())
    }
}

words! {
    /// Which deaths of an agent's process are restarted (`restart_policy` policy).
    #[derive(Default)]
    pub enum RestartPolicy {
        /// Every death, a clean exit too.
        Always = "always",
        /// Every death but a clean exit (code 0); the built-in default.
        #[default]
        OnFailure = "on-failure",
        /// None: a death fails the agent for good.
        Never = "never",
    }
}

words! {
    /// What a context budget breach does (`breach_action` policy).
    #[derive(Default)]
    pub enum BreachPolicy {
        /// Save-State → Clear → Resume at once; the built-in default.
        #[default]
        Compact = "compact",
        /// Pause the agent and file a request for `pas budget approve` (compact and
        /// resume) or `pas budget deny` (it stays paused).
        Ask = "ask",
    }
}

words! {
    /// Whether a handoff waits for an operator (`handoff_approval` policy).
    #[derive(Default)]
    pub enum HandoffApproval {
        /// The task moves at once; the built-in default.
        #[default]
        Auto = "auto",
        /// A request waits for `pas task handoff approve`.
        Manual = "manual",
    }
}

words! {
    /// An agent's liveness: what the heartbeat rules compute, and what the agent file's
    /// `health` records of it.
    pub enum Health {
        /// Beating on time.
        Healthy = "healthy",
        /// Beating, but reported DEGRADED.
        Degraded = "degraded",
        /// Beating, but failing `failure_threshold` times in a row.
        Unhealthy = "unhealthy",
        /// One interval missed.
        Late = "late",
        /// `misses_down` intervals missed.
        Down = "down",
        /// Silent past `heartbeat_ttl`.
        Dead = "dead",
        /// Never beat.
        Unknown = "unknown",
        /// Said it is offline.
        Offline = "offline",
        /// pas gave up on it.
        Failed = "failed",
    }
}

impl Health {
    /// How serious for monitoring: 0 ok, 1 warning, 2 critical.
    pub fn severity(self) -> u8 {
        match self {
            Health::Healthy | Health::Unknown | Health::Offline => 0,
            Health::Late | Health::Degraded => 1,
            Health::Down | Health::Dead | Health::Unhealthy | Health::Failed => 2,
        }
    }

    /// Whether the agent has stopped answering (a beat from here on is a recovery).
    pub fn is_silent(self) -> bool {
        matches!(self, Health::Down | Health::Dead)
    }
}

words! {
    /// A budget's state (`ctx_state`, `spend_state`), as the budget rules compute it
    /// (`crate::ops::budget::State` is this enum) and the agent file records it.
    pub enum BudgetState {
        /// Within budget.
        Ok = "ok",
        /// Past the soft threshold: an event, nothing else.
        Warning = "warning",
        /// Past the hard threshold: compaction (context) or `stop` (spend).
        Breach = "breach",
    }
}

words! {
    /// A mark the budget code leaves on an agent (`budget_flag`).
    pub enum BudgetFlag {
        /// It breached its context budget again too soon: compaction stopped.
        Thrashing = "thrashing",
    }
}

words! {
    /// What pas asks of an agent in a beat reply (and the `action` of a
    /// `pending_directive` waiting for the next beat).
    pub enum Directive {
        /// Stop working.
        Stop = "stop",
        /// Resume from the summary of a compacted context.
        Summarize = "summarize",
    }
}

words! {
    /// Whether a reservation still holds (`reservations.json` entries' `status`).
    pub enum ReservationStatus {
        /// Counted against the quota.
        Active = "active",
        /// Ended: `pas release`, or its agent failed or was removed.
        Released = "released",
        /// Ended by `pas kill`, which stopped its process group.
        Killed = "killed",
    }
}

words! {
    /// How an agent's process ended (`exit.cause`).
    pub enum ExitCause {
        /// It exited with a code.
        Exit = "exit",
        /// A signal ended it.
        Signal = "signal",
        /// It is gone and nobody saw how.
        Vanished = "vanished",
        /// pas's watchdog stopped it for not beating.
        Watchdog = "watchdog",
        /// The kernel killed it for going over its memory limit (cgroup OOM kill).
        Oom = "oom",
        /// Another resource limit ended it: CPU time (`SIGXCPU`), file size (`SIGXFSZ`),
        /// or a failed fork at its group's process limit.
        Limit = "limit",
    }
}

words! {
    /// Why pas is stopping an agent (`stop_requested.cause`).
    pub enum StopCause {
        /// An operator stopped it: it becomes idle and is not revived.
        Stopped = "stopped",
        /// It ran without beating: it is restarted by the revival rules.
        Watchdog = "watchdog",
    }
}

word_field!(
    CellStatus,
    AgentStatus,
    TaskStatus,
    Priority,
    Role,
    ReportedStatus,
    IsolationLevel,
    RestartPolicy,
    HandoffApproval,
    BreachPolicy,
    Health,
    BudgetState,
    BudgetFlag,
    Directive,
    ReservationStatus,
    ExitCause,
    StopCause
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    static FILE: At<'static> = At::file("agents/a1.json");

    fn at() -> At<'static> {
        FILE.key("status")
    }

    /// Every word of every enum: `as_str`, `parse`, serde, `Display` and `FromStr` agree,
    /// and the list is exactly what the schemas and docs say.
    macro_rules! check_words {
        ($name:ident, [$($text:literal),*]) => {{
            let expected: Vec<&str> = vec![$($text),*];
            let spelled: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
            assert_eq!(spelled, expected, stringify!($name));
            for v in $name::ALL {
                assert_eq!($name::parse(v.as_str()), Some(*v));
                assert_eq!(serde_json::to_value(v).unwrap(), json!(v.as_str()));
                assert_eq!(serde_json::from_value::<$name>(json!(v.as_str())).unwrap(), *v);
                assert_eq!(v.to_string(), v.as_str());
                assert_eq!(v.as_str().parse::<$name>().unwrap(), *v);
                assert_eq!(<$name as Field>::decode(&json!(v.as_str()), &at()).unwrap(), *v);
                assert_eq!(Field::encode(v), json!(v.as_str()));
            }
            assert_eq!($name::parse("nonsense"), None);
            assert!("nonsense".parse::<$name>().is_err());
            assert!(serde_json::from_value::<$name>(json!("nonsense")).is_err());
            assert_eq!($name::accepted(), expected.join(", "));
        }};
    }

    #[test]
    fn every_word_of_every_enum() {
        check_words!(CellStatus, ["active", "paused", "completed", "failed"]);
        check_words!(AgentStatus, ["idle", "active", "paused", "failed"]);
        check_words!(
            TaskStatus,
            ["pending", "in_progress", "completed", "failed"]
        );
        check_words!(Priority, ["high", "medium", "low"]);
        check_words!(Role, ["lead", "write", "read", "audit"]);
        check_words!(ReportedStatus, ["ACTIVE", "DEGRADED", "OFFLINE"]);
        check_words!(IsolationLevel, ["none", "level_1", "level_2", "level_3"]);
        check_words!(AutoRevive, ["yes", "no", "ask"]);
        check_words!(RestartPolicy, ["always", "on-failure", "never"]);
        check_words!(HandoffApproval, ["auto", "manual"]);
        check_words!(BreachPolicy, ["compact", "ask"]);
        check_words!(
            Health,
            [
                "healthy",
                "degraded",
                "unhealthy",
                "late",
                "down",
                "dead",
                "unknown",
                "offline",
                "failed"
            ]
        );
        check_words!(BudgetState, ["ok", "warning", "breach"]);
        check_words!(BudgetFlag, ["thrashing"]);
        check_words!(Directive, ["stop", "summarize"]);
        check_words!(ReservationStatus, ["active", "released", "killed"]);
        check_words!(
            ExitCause,
            ["exit", "signal", "vanished", "watchdog", "oom", "limit"]
        );
        check_words!(StopCause, ["stopped", "watchdog"]);
    }

    #[test]
    fn the_documented_defaults() {
        assert_eq!(AgentStatus::default(), AgentStatus::Idle);
        assert_eq!(Priority::default(), Priority::Medium);
        assert_eq!(Role::default(), Role::Write);
        assert_eq!(IsolationLevel::default(), IsolationLevel::Level1);
        assert_eq!(AutoRevive::default(), AutoRevive::Yes);
        assert_eq!(RestartPolicy::default(), RestartPolicy::OnFailure);
        assert_eq!(HandoffApproval::default(), HandoffApproval::Auto);
    }

    #[test]
    fn priorities_sort_most_urgent_first() {
        let mut p = vec![Priority::Low, Priority::High, Priority::Medium];
        p.sort();
        assert_eq!(p, [Priority::High, Priority::Medium, Priority::Low]);
    }

    /// The word the command line takes for `value`.
    fn cli(value: impl clap::ValueEnum) -> String {
        value.to_possible_value().unwrap().get_name().to_string()
    }

    #[test]
    fn the_words_match_the_enums_the_rules_use() {
        // (Health, roles, reported statuses and budget states are these very enums in the
        // rules.)
        // The command line's choices are spelled as the files spell them.
        use crate::ops::{cell, task};
        for (ours, theirs) in [
            (CellStatus::Active.as_str(), cli(cell::CellStatus::Active)),
            (CellStatus::Paused.as_str(), cli(cell::CellStatus::Paused)),
            (
                CellStatus::Completed.as_str(),
                cli(cell::CellStatus::Completed),
            ),
            (CellStatus::Failed.as_str(), cli(cell::CellStatus::Failed)),
            (Priority::High.as_str(), cli(task::Priority::High)),
            (Priority::Medium.as_str(), cli(task::Priority::Medium)),
            (Priority::Low.as_str(), cli(task::Priority::Low)),
            (
                IsolationLevel::None.as_str(),
                cli(cell::IsolationLevel::None),
            ),
            (
                IsolationLevel::Level1.as_str(),
                cli(cell::IsolationLevel::Level1),
            ),
            (
                IsolationLevel::Level2.as_str(),
                cli(cell::IsolationLevel::Level2),
            ),
            (
                IsolationLevel::Level3.as_str(),
                cli(cell::IsolationLevel::Level3),
            ),
        ] {
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn an_unknown_word_is_refused_naming_file_field_and_words() {
        let err = <AgentStatus as Field>::decode(&json!("running"), &at()).unwrap_err();
        assert_eq!(err.kind, crate::error::Kind::Data);
        assert_eq!(
            err.message,
            "agents/a1.json status: \"running\" is not one of idle, active, paused, failed"
        );
        assert!(err.hint.unwrap().contains("pas validate"));
        // Case matters: the files spell these words one way.
        assert!(<ReportedStatus as Field>::decode(&json!("active"), &at()).is_err());
        assert!(<AgentStatus as Field>::decode(&json!("ACTIVE"), &at()).is_err());
        let err = <TaskStatus as Field>::decode(&json!(3), &at()).unwrap_err();
        assert!(err
            .message
            .ends_with("3 is not one of pending, in_progress, completed, failed"));
    }

    #[test]
    fn auto_revive_reads_the_seeds_booleans() {
        assert_eq!(
            AutoRevive::decode(&json!(true), &at()).unwrap(),
            AutoRevive::Yes
        );
        assert_eq!(
            AutoRevive::decode(&json!(false), &at()).unwrap(),
            AutoRevive::No
        );
        assert_eq!(
            AutoRevive::decode(&json!("ask"), &at()).unwrap(),
            AutoRevive::Ask
        );
        let err = AutoRevive::decode(&json!("maybe"), &at()).unwrap_err();
        assert!(
            err.message
                .ends_with("\"maybe\" is not one of yes, no, ask"),
            "{}",
            err.message
        );
        assert!(err.hint.unwrap().contains("true and false"));
        assert!(AutoRevive::decode(&json!(1), &at()).is_err());
        assert!(AutoRevive::decode(&Value::Null, &at()).is_err());
    }
}
