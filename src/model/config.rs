//! The optional files of `config/`: `isolation.json`, `policies.json` and
//! `permissions.json`. A missing file means its template (`templates/`); the typed views
//! read what is there.
//!
//! [`Policies`] is also the type of the `policies` object of `cell.json` and of an agent
//! file: the same keys at every layer, each absent when the layer does not set it.

use serde_json::{Map, Value};

use crate::error::Result;
use crate::model::field::{shown, At, Field, Record};
use crate::model::status::{
    AutoRevive, BreachPolicy, HandoffApproval, IsolationLevel, RestartPolicy,
};
use crate::units::{self, Unit};

record! {
    /// `config/isolation.json`.
    #[derive(Default)]
    pub struct Isolation {
        /// The isolation level; pas refuses to start agents at a level it cannot provide.
        level: IsolationLevel = or_default,
        /// Whether agents get their own mount namespace.
        mount_namespaces: bool = or_default,
        /// Whether agents are cut off from the network.
        network_isolation: bool = or_default,
        /// The cell's quota: what reservations may add up to. Absent: no limits.
        resource_limits: ResourceLimits = or_default,
        /// The identity and capabilities agents run with.
        security_context: SecurityContext = or_default,
    }
}

document!(Isolation, |_| crate::store::FileKey::Config(
    crate::store::ConfigFile::Isolation
)
.relative());

record! {
    /// The quota of `isolation.json`. Other resources are kept in `extra`.
    #[derive(Default)]
    pub struct ResourceLimits {
        /// CPU cores, such as `"2 cores"`, `"500m"` or `2`.
        cpu: Option<Quantity> = optional,
        /// Memory, such as `"4GB"` or `"512MiB"`.
        memory: Option<Quantity> = optional,
        /// Disk, such as `"10GB"`; not reserved, only recorded.
        disk: Option<Quantity> = optional,
        /// GPUs.
        gpu: Option<Quantity> = optional,
        /// GPU memory, such as `"16GB"`.
        gpu_memory: Option<Quantity> = optional,
        /// CPU weight against other agents when the CPU is busy (cgroup `cpu.shares`, 1024
        /// is one ordinary process; `cpu.weight` under cgroup v2).
        cpu_shares: Option<u64> = optional,
        /// Processes and threads the agent's group may hold at once (`pids.max`).
        pids: Option<u64> = optional,
        /// The agent's nice value, -20 (first) to 19 (last).
        nice: Option<i64> = optional,
        /// Open file descriptors per process (`RLIMIT_NOFILE`).
        open_files: Option<u64> = optional,
    }
}

record! {
    /// Who agents run as.
    #[derive(Default)]
    pub struct SecurityContext {
        /// The user; absent or empty: the invoking user.
        user: Option<String> = optional,
        /// The group.
        group: Option<String> = optional,
        /// Linux capabilities granted, such as `NET_BIND_SERVICE`.
        capabilities: Vec<String> = or_default,
    }
}

/// A resource amount as written: a string with a unit, or a plain number. Kept as written
/// (`"4GB"` stays `"4GB"`); its meaning depends on the resource's unit, so it is read with
/// [`Quantity::amount`] where the unit is known.
#[derive(Debug, Clone, PartialEq)]
pub enum Quantity {
    /// A number of the resource's base unit (cores, bytes, devices).
    Number(f64),
    /// A number with a unit: `"2 cores"`, `"4GB"`, `"512MiB"`.
    Text(String),
}

impl Quantity {
    /// The amount in `unit`'s base unit; text that is not a quantity of that unit is an
    /// error naming `what` (such as `config/isolation.json resource_limits.memory`).
    pub fn amount(&self, unit: Unit, what: &str) -> Result<f64> {
        units::parse(&self.encode(), unit, what)
    }
}

impl Field for Quantity {
    fn decode(value: &Value, at: &At) -> Result<Self> {
        match value {
            Value::String(s) => Ok(Quantity::Text(s.clone())),
            Value::Number(n) => match n.as_f64() {
                Some(x) if x >= 0.0 => Ok(Quantity::Number(x)),
                _ => Err(at.error(format!("{} is below 0", shown(value)))),
            },
            v => Err(crate::model::field::wrong(
                v,
                "a quantity (a string such as \"4GB\", or a number)",
                at,
            )),
        }
    }

    fn encode(&self) -> Value {
        match self {
            Quantity::Number(x) => x.encode(),
            Quantity::Text(s) => Value::from(s.as_str()),
        }
    }
}

layer_record! {
    /// A layer of policy: `config/policies.json`, or the `policies` object of `cell.json`
    /// or of an agent file. Every key is optional: absent means a lower layer (or the
    /// built-in default) decides. The keys are those of `crate::ops::policy::defaults()` (a test
    /// keeps them equal); their meanings are documented there and in `docs/policies.md`.
    ///
    /// Values of the wrong type read as not set and are listed in `unusable` (the resolver
    /// has always fallen back to the built-in default for them); the words of
    /// `auto_revive`, `handoff_approval` and `restart_policy` are strict. A `null` is a
    /// value for the keys whose default is `null` (`Option<Option<_>>`: "no limit here").
    pub struct Policies {
        /// Seconds between expected beats.
        heartbeat_interval: Option<f64> = lenient,
        /// Seconds of silence before an agent is dead; `null`: `misses_dead` intervals.
        heartbeat_ttl: Option<Option<f64>> = lenient,
        /// Missed intervals before an agent is down.
        misses_down: Option<u64> = lenient,
        /// Missed intervals before an agent is dead, when `heartbeat_ttl` is `null`.
        misses_dead: Option<u64> = lenient,
        /// Failures in a row that make an agent unhealthy.
        failure_threshold: Option<u64> = lenient,
        /// What happens to an agent that died.
        auto_revive: Option<AutoRevive> = layer,
        /// Seconds a revived agent has to send its first beat.
        revive_timeout: Option<f64> = lenient,
        /// Agents that take over the tasks of one that finally failed, in order.
        substitute_agents: Option<Vec<String>> = lenient,
        /// Whether tasks may be handed between agents.
        handoff_allowed: Option<bool> = lenient,
        /// Whether a handoff waits for an operator.
        handoff_approval: Option<HandoffApproval> = layer,
        /// Whether a revival needs a usable checkpoint.
        checkpoint_required: Option<bool> = lenient,
        /// Seconds between checkpoints an agent is expected to save.
        checkpoint_interval: Option<f64> = lenient,
        /// Checkpoint generations kept per agent.
        checkpoint_keep: Option<u64> = lenient,
        /// Bytes an agent's log grows to before it is rotated; 0: never.
        log_max_bytes: Option<u64> = lenient,
        /// Rotated files kept per agent log.
        log_keep: Option<u64> = lenient,
        /// Attempts of a task before it stays failed.
        max_retries: Option<u64> = lenient,
        /// Context use (ctx_used / ctx_limit) from which an agent is warned.
        target_ratio: Option<f64> = lenient,
        /// Context use from which the context budget is breached.
        hard_max_ratio: Option<f64> = lenient,
        /// Seconds at least between two compactions of one agent.
        compact_min_interval: Option<f64> = lenient,
        /// Compactions per hour before an agent is flagged as thrashing.
        compact_max_per_hour: Option<u64> = lenient,
        /// What a context breach does: compact at once, or ask an operator.
        breach_action: Option<BreachPolicy> = layer,
        /// Dollars an agent may spend before a warning; `null`: no limit.
        cost_soft_usd: Option<Option<f64>> = lenient,
        /// Dollars an agent may spend before it is told to stop.
        cost_hard_usd: Option<Option<f64>> = lenient,
        /// Tokens an agent may use before a warning.
        tokens_soft: Option<Option<f64>> = lenient,
        /// Tokens an agent may use before it is told to stop.
        tokens_hard: Option<Option<f64>> = lenient,
        /// Dollars all agents of the cell may spend together.
        cell_cost_hard_usd: Option<Option<f64>> = lenient,
        /// Tokens all agents of the cell may use together.
        cell_tokens_hard: Option<Option<f64>> = lenient,
        /// Which deaths are restarted.
        restart_policy: Option<RestartPolicy> = layer,
        /// Restarts in a row before the agent is failed; 0: no limit.
        max_restarts: Option<u64> = lenient,
        /// Seconds before the first restart.
        restart_delay_seconds: Option<f64> = lenient,
        /// Each further restart waits this many times longer.
        backoff_multiplier: Option<f64> = lenient,
        /// The longest wait between restarts.
        max_restart_delay_seconds: Option<f64> = lenient,
        /// Seconds of health after a restart that reset the restart count.
        restart_reset_after: Option<f64> = lenient,
        /// Deaths within `storm_window` that make the agent cool down.
        storm_limit: Option<u64> = lenient,
        /// Seconds over which deaths are counted.
        storm_window: Option<f64> = lenient,
        /// Seconds an agent rests after a restart storm.
        storm_cooldown: Option<f64> = lenient,
        /// Seconds a started agent has for its first beat.
        startup_grace: Option<f64> = lenient,
        /// Whether an agent is judged by heartbeats from its start (else by its process
        /// until its first beat).
        heartbeat_required: Option<bool> = lenient,
        /// Whether an agent that runs but does not beat is stopped and restarted.
        watchdog: Option<bool> = lenient,
        /// Exit codes that mean: do not restart.
        no_restart_exit_codes: Option<Vec<i64>> = lenient,
        /// Exit codes that mean: restart whatever `restart_policy` says.
        always_restart_exit_codes: Option<Vec<i64>> = lenient,
        /// Seconds between SIGTERM and SIGKILL when pas stops an agent.
        stop_grace: Option<f64> = lenient,
        /// Seconds a watch node waits after another host's node went before it takes over
        /// that host's dead agents; `null`: never.
        host_takeover_after: Option<Option<f64>> = lenient,
        /// A shell command run when an agent finally fails; `null`: none.
        on_failure: Option<Option<String>> = lenient,
        /// A shell command run for each matching event; `null`: none.
        on_event: Option<Option<String>> = lenient,
        /// The events `on_event` runs for.
        on_event_kinds: Option<Vec<String>> = lenient,
    }
}

document!(Policies, |_| crate::store::FileKey::Config(
    crate::store::ConfigFile::Policies
)
.relative());

/// `config/permissions.json`: for each agent id, what it may touch. An agent without an
/// entry may do everything. Every key of the file is an agent id, so there is no `extra`:
/// the entries are the document, in file order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Permissions {
    /// Agent id and grant, in file order.
    pub grants: Vec<(String, Grant)>,
}

impl Permissions {
    /// The grant of `agent`, if it has an entry.
    pub fn get(&self, agent: &str) -> Option<&Grant> {
        self.grants
            .iter()
            .find(|(id, _)| id == agent)
            .map(|(_, g)| g)
    }

    /// Sets the grant of `agent`: in place when it has one, else last.
    #[cfg(test)]
    pub fn set(&mut self, agent: &str, grant: Grant) {
        match self.grants.iter_mut().find(|(id, _)| id == agent) {
            Some((_, g)) => *g = grant,
            None => self.grants.push((agent.to_string(), grant)),
        }
    }
}

impl Record for Permissions {
    const KEYS: &'static [&'static str] = &[];

    fn read_map(map: &Map<String, Value>, at: &At) -> Result<Self> {
        let grants = map
            .iter()
            .map(|(id, v)| Ok((id.clone(), Grant::decode(v, &at.key(id))?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Permissions { grants })
    }

    fn to_map(&self) -> Map<String, Value> {
        self.grants
            .iter()
            .map(|(id, grant)| (id.clone(), grant.encode()))
            .collect()
    }

    fn write_map(&self, map: &mut Map<String, Value>) {
        let dropped: Vec<String> = map
            .keys()
            .filter(|k| self.get(k).is_none())
            .cloned()
            .collect();
        for k in dropped {
            map.shift_remove(&k);
        }
        for (id, grant) in &self.grants {
            match map.get_mut(id) {
                Some(old) => {
                    if Grant::decode(old, &At::file("")).ok().as_ref() != Some(grant) {
                        grant.merge_into(old);
                    }
                }
                None => {
                    map.insert(id.clone(), grant.encode());
                }
            }
        }
    }
}

document!(Permissions, |_| crate::store::FileKey::Config(
    crate::store::ConfigFile::Permissions
)
.relative());

record! {
    /// What one agent may do. Each list holds ids, or `*` for all; an absent list grants
    /// nothing.
    #[derive(Default)]
    pub struct Grant {
        /// Tasks it may see.
        read: Vec<String> = or_default,
        /// Tasks it may report done or failed.
        write: Vec<String> = or_default,
        /// Tasks it may claim.
        execute: Vec<String> = or_default,
        /// Agents it may hand work to.
        handoff_to: Vec<String> = or_default,
        /// Agents it may take work from.
        handoff_from: Vec<String> = or_default,
        /// Other agents whose record, process and checkpoints it may change (an agent
        /// always may change its own).
        manage: Option<Vec<String>> = optional,
    }
}

impl Grant {
    /// Whether `list` (one of this grant's lists) names `item` or holds `*`.
    pub fn names(list: &[String], item: &str) -> bool {
        list.iter().any(|x| x == item || x == "*")
    }
}
