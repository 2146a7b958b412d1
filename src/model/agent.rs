//! `agents/<agent_id>.json`: an agent's configuration, and everything pas records about it
//! (heartbeats, budgets, its process, revival state).
//!
//! The schema (`schemas/agent.schema.json`) covers the fields people write; the fields pas
//! keeps for itself (process, revival, budget state) are typed here too, so no module has to
//! spell their keys. Fields pas sets to `null` rather than removing are `nullable`; those it
//! removes when done are `optional`.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::model::config::{Policies, ResourceLimits};
use crate::model::status::{
    AgentStatus, BudgetFlag, BudgetState, Directive, ExitCause, Health, ReportedStatus, Role,
    StopCause,
};

record! {
    /// One agent file.
    pub struct Agent {
        /// The agent's id; the file name (without `.json`) is authoritative, a mismatch is a
        /// `pas validate` warning.
        agent_id: String = required,
        /// A readable name; absent means the id.
        name: Option<String> = optional,
        /// Shown in lists; not enforced (permissions are).
        role: Role = or_default,
        /// What the agent can do; a task's `required_capabilities` must all be here for it
        /// to claim the task.
        capabilities: Vec<String> = or_default,
        /// The gateway host it runs behind, if any.
        gateway: Option<String> = nullable,
        /// Its lifecycle as pas and operators set it; liveness is `health`.
        status: AgentStatus = or_default,
        /// The task it has claimed and works on; `null` when none.
        current_task: Option<String> = nullable,
        /// Where its latest checkpoint is; `null` when it has none.
        checkpoint: Option<CheckpointRecord> = nullable,
        /// When it was added (absent in hand-written files).
        created_at: Option<DateTime<Utc>> = optional,
        /// Its last beat; `null` when it never beat. The seeds wrote epoch seconds, which
        /// read as the same instant.
        last_heartbeat: Option<DateTime<Utc>> = nullable,
        /// Beats received, reported back in each beat reply.
        heartbeat_count: u64 = or_default,
        /// What it said about itself in its last beat.
        reported_status: Option<ReportedStatus> = nullable,
        /// Its reported progress on the current task, 0 to 1.
        progress: Option<f64> = nullable,
        /// Context tokens in use at the last report: with `ctx_limit`, the context budget.
        ctx_used: Option<u64> = nullable,
        /// The context window it reported.
        ctx_limit: Option<u64> = nullable,
        /// Free-form pairs from its beats (`--meta k=v`); values are strings.
        metadata: Map<String, Value> = or_default,
        /// A note from its last beat or an operator: what it is doing.
        note: Option<String> = nullable,
        /// Failures reported in a row (`pas agent fail`); `failure_threshold` of them make
        /// it unhealthy, and an `ACTIVE` beat resets them.
        failures: u64 = or_default,
        /// The latest reported failure.
        last_failure: Option<Failure> = nullable,
        /// Its own overrides of the cell's policies, the strongest layer.
        policies: Policies = or_default,
        /// The argv pas starts it with; empty: pas cannot start or revive it.
        command: Vec<String> = or_default,
        /// The directory its command runs in; absent: the cell's directory.
        cwd: Option<String> = optional,
        /// Variables set for its command; values are strings.
        env: Map<String, Value> = or_default,
        /// Resource limits set on its process.
        rlimits: Option<Rlimits> = optional,
        /// Its own values of the cell's `config/isolation.json` `resource_limits` (memory,
        /// cpu, cpu_shares, pids, nice, open_files), enforced at isolation level_1 and up;
        /// each key set here wins over the cell's.
        resource_limits: Option<ResourceLimits> = optional,
        /// The limits in force on its process since its last start, and how they are
        /// enforced; removed when a start applies none.
        limits: Option<Limits> = optional,
        /// Its health as last recorded: observers compare it with the health they compute
        /// and record each change once. An unreadable one counts as not recorded.
        health: Option<Health> = cache,
        /// When `health` last changed.
        health_changed_at: Option<DateTime<Utc>> = optional,
        /// Money spent so far, in dollars, cumulative as the agent reports it.
        cost_usd: Option<f64> = optional,
        /// Tokens used so far, cumulative as the agent reports it.
        tokens_used: Option<f64> = optional,
        /// The context budget's state as last recorded (an event marks each change).
        ctx_state: Option<BudgetState> = cache,
        /// The spend budget's state as last recorded.
        spend_state: Option<BudgetState> = cache,
        /// Set while compaction is suspended for thrashing; removed by the next compaction.
        budget_flag: Option<BudgetFlag> = optional,
        /// When its context was compacted: the thrash guard counts those of the last hour.
        compactions: Vec<DateTime<Utc>> = or_default,
        /// A directive for its next beat reply, removed when delivered.
        pending_directive: Option<PendingDirective> = optional,
        /// A context breach waiting for an operator (`breach_action: ask`); the agent is
        /// paused meanwhile.
        budget_request: Option<BudgetRequest> = optional,
        /// Its running process (also its process group); `null` once it ended.
        pid: Option<i32> = nullable,
        /// The process group pas signals to stop it.
        pgid: Option<i32> = optional,
        /// The process's start time in clock ticks since boot: a reused pid is never taken
        /// for the agent. `null` when `/proc` could not tell.
        pid_start_time: Option<u64> = nullable,
        /// The supervisor (`pas __supervise`) that waits for the process.
        supervisor_pid: Option<u32> = optional,
        /// Its supervisor's start time (clock ticks since boot, as `pid_start_time`): while
        /// that process lives, it alone restarts the agent (see `ops::supervisor`).
        supervisor_start_time: Option<u64> = optional,
        /// The host its process runs on (`$PAS_HOST`, else the host name), recorded with
        /// every start: only there does pas look at its pids in `/proc` or signal them.
        host: Option<String> = optional,
        /// When its process was last started; heartbeats do not judge it for
        /// `startup_grace` after.
        started_at: Option<DateTime<Utc>> = optional,
        /// Times its command was started: the run numbers of its log's markers.
        runs: Option<u64> = optional,
        /// When an operator last made it `active` without starting it (`pas agent set
        /// --status active`, `pas agent reset`): a process that ended before is not a death,
        /// and revival starts it.
        activated_at: Option<DateTime<Utc>> = optional,
        /// Restarts ever.
        restart_count: u64 = or_default,
        /// Restarts in a row, toward `max_restarts`; reset after `restart_reset_after` of
        /// health.
        restart_attempts: u64 = or_default,
        /// How its process last ended; `null` while it runs.
        exit: Option<Exit> = nullable,
        /// A stop in progress, so the supervisor records why the process ended.
        stop_requested: Option<StopRequest> = optional,
        /// A restart waiting for its first beat.
        revival: Option<Revival> = optional,
        /// A revival waiting for an operator (`auto_revive: ask`).
        revive_request: Option<ReviveRequest> = optional,
        /// When pas reported it hung (running, not beating, watchdog off): reported once.
        hung_reported: Option<DateTime<Utc>> = optional,
        /// Deaths inside the storm window, for the restart-storm limit.
        recent_deaths: Vec<DateTime<Utc>> = or_default,
        /// The death last counted, so each is counted once.
        last_death: Option<DateTime<Utc>> = optional,
        /// When the next restart is allowed (backoff); `null` when none is waiting.
        next_restart_at: Option<DateTime<Utc>> = nullable,
        /// Until when it rests after a restart storm.
        cooldown_until: Option<DateTime<Utc>> = optional,
        /// Why pas failed it for good.
        failed_reason: Option<String> = optional,
    }
}

document!(Agent, |map| match crate::model::id_in(map, "agent_id") {
    Some(id) => crate::store::FileKey::Agent(&id).relative(),
    None => "agent file".to_string(),
});

impl Agent {
    /// A new agent with every field at its default, for tests: pas itself starts from
    /// `templates/agent.json`.
    #[cfg(test)]
    pub(crate) fn new(agent_id: impl Into<String>) -> Agent {
        Agent {
            agent_id: agent_id.into(),
            name: None,
            role: Role::default(),
            capabilities: Vec::new(),
            gateway: None,
            status: AgentStatus::default(),
            current_task: None,
            checkpoint: None,
            created_at: None,
            last_heartbeat: None,
            heartbeat_count: 0,
            reported_status: None,
            progress: None,
            ctx_used: None,
            ctx_limit: None,
            metadata: Map::new(),
            note: None,
            failures: 0,
            last_failure: None,
            policies: Policies::default(),
            command: Vec::new(),
            cwd: None,
            env: Map::new(),
            rlimits: None,
            resource_limits: None,
            limits: None,
            health: None,
            health_changed_at: None,
            cost_usd: None,
            tokens_used: None,
            ctx_state: None,
            spend_state: None,
            budget_flag: None,
            compactions: Vec::new(),
            pending_directive: None,
            budget_request: None,
            pid: None,
            pgid: None,
            pid_start_time: None,
            supervisor_pid: None,
            supervisor_start_time: None,
            host: None,
            started_at: None,
            runs: None,
            activated_at: None,
            restart_count: 0,
            restart_attempts: 0,
            exit: None,
            stop_requested: None,
            revival: None,
            revive_request: None,
            hung_reported: None,
            recent_deaths: Vec::new(),
            last_death: None,
            next_restart_at: None,
            cooldown_until: None,
            failed_reason: None,
            extra: Map::new(),
        }
    }

    /// The keys a person writes to define an agent (a mission file's agent entry, what
    /// `pas agent add` and `pas agent set` set); the others are pas's records of the run,
    /// which `pas cell export` leaves out.
    pub(crate) const DEFINITION: &'static [&'static str] = &[
        "agent_id",
        "name",
        "role",
        "capabilities",
        "gateway",
        "policies",
        "command",
        "cwd",
        "env",
        "rlimits",
        "resource_limits",
    ];

    /// The readable name: `name`, else the id.
    #[cfg(test)]
    pub(crate) fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.agent_id)
    }

    /// [`Agent::write_into`] for a start of its process: a file without `restart_count`
    /// also gets it spelled out (0 on the first start), as pas has always written it, so
    /// every started agent's file shows its count.
    pub(crate) fn write_start_into(&self, doc: &mut crate::doc::Doc) {
        self.write_into(doc);
        let map = doc.map_mut();
        if !map.contains_key("restart_count") {
            map.insert("restart_count".to_string(), Value::from(self.restart_count));
        }
    }
}

record! {
    /// The agent file's summary of its latest checkpoint; the generation itself is under
    /// `checkpoints/<agent_id>/`.
    pub struct CheckpointRecord {
        /// When it was saved.
        last_checkpoint: Option<DateTime<Utc>> = nullable,
        /// sha256 of its `context.json`, checked before a resume.
        context_hash: Option<String> = nullable,
        /// The artifact names saved with it.
        artifacts: Vec<String> = or_default,
        /// Its generation number; a newer generation on disk was left by a save that never
        /// committed.
        generation: Option<u64> = optional,
    }
}

record! {
    /// A failure an agent reported (`pas agent fail`).
    pub struct Failure {
        /// When it was reported.
        at: DateTime<Utc> = required,
        /// What went wrong, as reported.
        reason: String = required,
    }
}

record! {
    /// Limits set on the agent's process before it starts (level_1 isolation).
    pub struct Rlimits {
        /// Address space in bytes; absent: the memory its active reservations hold.
        memory_bytes: Option<u64> = optional,
        /// CPU time in seconds.
        cpu_seconds: Option<u64> = optional,
        /// Open file descriptors.
        open_files: Option<u64> = optional,
    }
}

record! {
    /// The limits in force on the agent's process (`limits` in its file), as its
    /// supervisor set them at its last start: see `docs/isolation.md`.
    pub struct Limits {
        /// How they are enforced: `cgroup_v2`, `cgroup_v1` or `rlimit`.
        mechanism: String = required,
        /// Why that mechanism and not a stronger one.
        why: Option<String> = optional,
        /// Its control group under each controller's hierarchy (cgroups only).
        group: Option<String> = optional,
        /// Memory in bytes: the group's limit, or `RLIMIT_DATA`.
        memory_bytes: Option<u64> = optional,
        /// CPU cores (a quota per period; cgroups only).
        cpu: Option<f64> = optional,
        /// CPU weight (`cpu.shares`).
        cpu_shares: Option<u64> = optional,
        /// Processes: the group's `pids.max`, or `RLIMIT_NPROC` (per user).
        pids: Option<u64> = optional,
        /// Its nice value.
        nice: Option<i64> = optional,
        /// Open files per process (`RLIMIT_NOFILE`).
        open_files: Option<u64> = optional,
        /// Limits asked for that this mechanism cannot enforce, with why.
        not_enforced: Vec<String> = or_default,
        /// Its private temporary directory (`TMPDIR`; at level_3, the container's `/tmp`).
        tmpdir: Option<String> = optional,
        /// The container it runs in (isolation level_3): the runtime and the container's
        /// id, `crun <id>`.
        container: Option<String> = optional,
    }
}

record! {
    /// A directive waiting for the agent's next beat (after a context compaction).
    pub struct PendingDirective {
        /// What to do; absent reads as `summarize`, the only one pas files.
        action: Option<Directive> = optional,
        /// Why, passed on in the beat reply (`context_budget`).
        reason: Option<String> = optional,
        /// The summary file to resume from.
        summary: Option<String> = optional,
        /// When it was filed.
        at: Option<DateTime<Utc>> = optional,
    }
}

record! {
    /// How the agent's process ended, as its supervisor (or whoever noticed) recorded it.
    pub struct Exit {
        /// When; absent in hand-written files (then: when pas looks).
        at: Option<DateTime<Utc>> = optional,
        /// How; absent reads as `vanished`.
        cause: Option<ExitCause> = optional,
        /// The exit code, for `exit`.
        code: Option<i64> = nullable,
        /// The signal, for `signal`.
        signal: Option<i64> = nullable,
        /// Whether pas had asked it to stop.
        requested: bool = or_default,
        /// Why the command could not be run at all (then `code` is 127).
        error: Option<String> = optional,
    }
}

impl Exit {
    /// The record of a process that is gone with nobody having seen how (its pid no
    /// longer runs, or its host is gone), noticed at `now`.
    pub fn vanished(now: DateTime<Utc>) -> Exit {
        Exit {
            at: Some(now),
            cause: Some(ExitCause::Vanished),
            code: None,
            signal: None,
            requested: false,
            error: None,
            extra: Default::default(),
        }
    }
}

record! {
    /// A stop pas has begun, so the death it causes is recorded with its cause.
    pub struct StopRequest {
        /// When the stop began.
        at: DateTime<Utc> = required,
        /// Who stops it.
        cause: StopCause = required,
    }
}

record! {
    /// A restart in flight: it succeeds with a beat after `started_at`, and times out at
    /// `deadline` (`revive_timeout`).
    pub struct Revival {
        /// When the process was restarted.
        started_at: DateTime<Utc> = required,
        /// When it counts as failed without a beat.
        deadline: Option<DateTime<Utc>> = optional,
        /// Which restart in a row this is.
        attempt: Option<u64> = optional,
        /// The checkpoint generation it resumed from; `null`: none.
        generation: Option<u64> = nullable,
    }
}

record! {
    /// A context breach waiting for an operator (`breach_action: ask`).
    pub struct BudgetRequest {
        /// Its id, as `pas budget approve` takes it.
        id: String = required,
        /// When it was filed.
        at: Option<DateTime<Utc>> = optional,
        /// The context use (`ctx_used / ctx_limit`) at the breach.
        ratio: Option<f64> = optional,
    }
}

record! {
    /// A revival waiting for an operator (`auto_revive: ask`).
    pub struct ReviveRequest {
        /// Its id, as `pas revive approve` takes it.
        id: String = required,
        /// When it was filed.
        at: Option<DateTime<Utc>> = optional,
        /// How the agent died, in words.
        cause: Option<String> = optional,
        /// Set by an approval; the next pass restarts the agent.
        approved: bool = or_default,
    }
}
