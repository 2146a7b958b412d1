//! The rules of enforced limits, pure: which mechanism enforces them on this host
//! ([`mechanism`]), what an agent's limits are ([`resolve`], the cell's
//! `config/isolation.json` `resource_limits` under the agent's own `resource_limits`),
//! how a mechanism applies them ([`plan`]), and whether a death was the work of a limit
//! ([`classify`]). Nothing here reads a file or a process: the caller probes the host
//! (`crate::cgroup::probe`) and reads the group's counters.

use crate::error::{Error, Result};
use crate::model::{ExitCause, IsolationLevel, Quantity, ResourceLimits};
use crate::units::Unit;

/// The cgroup controllers pas needs to enforce memory, CPU and process limits.
pub const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// What the caller found on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// Cgroups are turned off for pas (`PAS_CGROUPS=off`).
    pub disabled: bool,
    /// The unified (v2) hierarchy, when one is mounted: the controllers its
    /// `cgroup.controllers` lists, and whether pas may create groups in it.
    pub v2: Option<Hierarchy>,
    /// The v1 hierarchies mounted, one per controller (by name).
    pub v1: Vec<(String, Hierarchy)>,
}

/// One mounted hierarchy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchy {
    /// Controllers it offers (v2; a v1 hierarchy offers the one it is listed under).
    pub controllers: Vec<String>,
    /// Whether pas may create groups in it.
    pub writable: bool,
}

/// How limits are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// A group in the unified hierarchy.
    CgroupV2,
    /// A group under each v1 controller.
    CgroupV1,
    /// `setrlimit` and `setpriority` on the process (inherited by its children).
    Rlimit,
}

impl Mechanism {
    /// Its name in the agent file's `limits.mechanism` and in `pas agent show`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::CgroupV2 => "cgroup_v2",
            Mechanism::CgroupV1 => "cgroup_v1",
            Mechanism::Rlimit => "rlimit",
        }
    }
}

/// The mechanism for this host: cgroup v2 when the unified hierarchy offers memory, cpu
/// and pids and is writable; else v1 when each of those controllers is mounted and
/// writable; else rlimits and nice. The reason says why the stronger ones do not apply.
pub fn mechanism(probe: &Probe) -> (Mechanism, String) {
    if probe.disabled {
        return (
            Mechanism::Rlimit,
            "cgroups are turned off (PAS_CGROUPS=off)".into(),
        );
    }
    let missing_v2: Vec<&str> = match &probe.v2 {
        Some(h) => CONTROLLERS
            .into_iter()
            .filter(|c| !h.controllers.iter().any(|x| x == c))
            .collect(),
        None => CONTROLLERS.to_vec(),
    };
    if let Some(h) = &probe.v2 {
        if missing_v2.is_empty() && h.writable {
            return (
                Mechanism::CgroupV2,
                "the unified hierarchy has the controllers".into(),
            );
        }
    }
    let v1 = |c: &str| probe.v1.iter().find(|(name, _)| name == c).map(|(_, h)| h);
    let missing_v1: Vec<&str> = CONTROLLERS
        .into_iter()
        .filter(|c| v1(c).is_none())
        .collect();
    let read_only: Vec<&str> = CONTROLLERS
        .into_iter()
        .filter(|c| v1(c).is_some_and(|h| !h.writable))
        .collect();
    if missing_v1.is_empty() && read_only.is_empty() {
        return (
            Mechanism::CgroupV1,
            "the v1 controllers are mounted and writable".into(),
        );
    }
    let why = if !read_only.is_empty() {
        format!(
            "pas may not create cgroups (not writable: {})",
            read_only.join(", ")
        )
    } else if probe.v2.as_ref().is_some_and(|h| !h.writable) && missing_v2.is_empty() {
        "pas may not create cgroups in the unified hierarchy".to_string()
    } else {
        format!("no cgroup controllers for {}", missing_v1.join(", "))
    };
    (Mechanism::Rlimit, why)
}

/// What one run's confinement is made from: the level, the limits and the owner of its
/// temporary directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Basis {
    /// The cell's isolation level.
    pub level: IsolationLevel,
    /// The limits asked for.
    pub wanted: Wanted,
    /// The uid and gid the agent runs as, when not pas's.
    pub owner: Option<(u32, u32)>,
}

/// Whether the next run of a supervisor's agent keeps the confinement of the last one
/// (its group, limit files and temporary directory, with no probe nor write): only when
/// the last run's was made from the same `now` basis and its group is `there`. A change
/// of level, limit or owner makes a new one, as a first start does.
pub fn keep(last: Option<&Basis>, now: &Basis, there: bool) -> bool {
    last == Some(now) && there
}

/// An agent's limits, read and checked: what it asks for, whatever the mechanism.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wanted {
    /// Memory in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU cores.
    pub cpu: Option<f64>,
    /// CPU weight (`cpu.shares`, 2 to 262144).
    pub cpu_shares: Option<u64>,
    /// Processes.
    pub pids: Option<u64>,
    /// Nice value, -20 to 19.
    pub nice: Option<i64>,
    /// Open files.
    pub open_files: Option<u64>,
}

/// The agent's limits: each of `agent`'s keys wins over the cell's. Values that cannot be
/// enforced are errors naming the file, the key and the fix.
pub fn resolve(cell: &ResourceLimits, agent: Option<&ResourceLimits>) -> Result<Wanted> {
    let pick = |f: fn(&ResourceLimits) -> bool| match agent {
        Some(a) if f(a) => ("the agent file", a),
        _ => ("config/isolation.json", cell),
    };
    let bad = |file: &str, key: &str, what: String, fix: &str| {
        Error::usage(format!("{file} resource_limits.{key}: {what}")).hint(fix.to_string())
    };
    let quantity =
        |q: &Option<Quantity>, file: &str, key: &str, unit: Unit| -> Result<Option<f64>> {
            q.as_ref()
                .map(|q| q.amount(unit, &format!("{file} resource_limits.{key}")))
                .transpose()
        };
    let (file, from) = pick(|l| l.memory.is_some());
    let memory = quantity(&from.memory, file, "memory", Unit::Bytes)?;
    if let Some(m) = memory {
        if m < 1024.0 * 1024.0 {
            return Err(bad(
                file,
                "memory",
                format!("{m} bytes is too little for any program"),
                "give at least 1MiB, such as \"64MB\"",
            ));
        }
    }
    let (file, from) = pick(|l| l.cpu.is_some());
    let cpu = quantity(&from.cpu, file, "cpu", Unit::Cores)?;
    if let Some(c) = cpu {
        if c < 0.01 {
            return Err(bad(
                file,
                "cpu",
                format!("{c} cores is below the smallest quota (0.01 core)"),
                "give at least \"10m\" (0.01 core), or remove the key for no cap",
            ));
        }
    }
    let (file, from) = pick(|l| l.cpu_shares.is_some());
    if let Some(s) = from.cpu_shares {
        if !(2..=262_144).contains(&s) {
            return Err(bad(
                file,
                "cpu_shares",
                format!("{s} is outside 2 to 262144"),
                "1024 is one ordinary process's weight",
            ));
        }
    }
    let cpu_shares = from.cpu_shares;
    let (file, from) = pick(|l| l.pids.is_some());
    if from.pids == Some(0) {
        return Err(bad(
            file,
            "pids",
            "0 would not let the agent itself run".into(),
            "give at least 1, or remove the key for no limit",
        ));
    }
    let pids = from.pids;
    let (file, from) = pick(|l| l.nice.is_some());
    if let Some(n) = from.nice {
        if !(-20..=19).contains(&n) {
            return Err(bad(
                file,
                "nice",
                format!("{n} is outside -20 to 19"),
                "19 runs last, 0 is the default, -20 runs first",
            ));
        }
    }
    let nice = from.nice;
    let (file, from) = pick(|l| l.open_files.is_some());
    if let Some(n) = from.open_files {
        if n < 3 {
            return Err(bad(
                file,
                "open_files",
                format!("{n} leaves no room for stdin, stdout and stderr"),
                "give at least 3 (programs usually need 64 or more)",
            ));
        }
    }
    Ok(Wanted {
        memory_bytes: memory.map(|m| m as u64),
        cpu,
        cpu_shares,
        pids,
        nice,
        open_files: from.open_files,
    })
}

/// How a mechanism applies [`Wanted`]: what goes in the group, what is set with
/// `setrlimit`, and what it cannot enforce.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Memory limit of the group.
    pub group_memory: Option<u64>,
    /// CPU quota of the group, in cores.
    pub group_cpu: Option<f64>,
    /// CPU weight of the group.
    pub group_shares: Option<u64>,
    /// Process limit of the group.
    pub group_pids: Option<u64>,
    /// `RLIMIT_DATA`, bytes.
    pub rlimit_data: Option<u64>,
    /// `RLIMIT_NPROC`.
    pub rlimit_nproc: Option<u64>,
    /// `RLIMIT_NOFILE`.
    pub rlimit_nofile: Option<u64>,
    /// `setpriority`.
    pub nice: Option<i64>,
    /// What is asked for and not enforced, with why.
    pub not_enforced: Vec<String>,
}

/// How `mechanism` enforces `wanted`. Nice and open files are per process under every
/// mechanism. Without cgroups, memory becomes `RLIMIT_DATA` (private writable mappings and
/// the heap: closer to use than `RLIMIT_AS`, which counts every mapping and breaks
/// runtimes that reserve large address ranges), processes become `RLIMIT_NPROC` (which counts all the processes of
/// the agent's user), and a CPU share or quota has no rlimit at all: `RLIMIT_CPU` caps
/// CPU seconds in total, not a rate, so it is not used for it.
pub fn plan(mechanism: Mechanism, wanted: &Wanted) -> Plan {
    let mut p = Plan {
        rlimit_nofile: wanted.open_files,
        nice: wanted.nice,
        ..Plan::default()
    };
    match mechanism {
        Mechanism::CgroupV1 | Mechanism::CgroupV2 => {
            p.group_memory = wanted.memory_bytes;
            p.group_cpu = wanted.cpu;
            p.group_shares = wanted.cpu_shares;
            p.group_pids = wanted.pids;
        }
        Mechanism::Rlimit => {
            p.rlimit_data = wanted.memory_bytes;
            p.rlimit_nproc = wanted.pids;
            if wanted.cpu.is_some() {
                p.not_enforced.push(
                    "cpu: no rlimit caps a CPU rate (RLIMIT_CPU caps total seconds); needs cgroups"
                        .into(),
                );
            }
            if wanted.cpu_shares.is_some() {
                p.not_enforced
                    .push("cpu_shares: a CPU weight needs cgroups; use nice instead".into());
            }
        }
    }
    p
}

/// What the group's counters said about a run, between its start and its end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// OOM kills in the group during the run (`oom_kill` of `memory.oom_control` or
    /// `memory.events`); `None` when the kernel does not count them.
    pub oom_kills: Option<u64>,
    /// Whether the memory limit was hit during the run (v1 `memory.failcnt` grew) and the
    /// peak use reached the limit: the sign of an OOM kill where they are not counted.
    pub memory_at_limit: bool,
    /// Forks refused at the group's process limit during the run (`pids.events` `max`).
    pub pids_refused: u64,
}

/// SIGKILL.
const SIGKILL: i64 = 9;
/// SIGXCPU: `RLIMIT_CPU`'s soft limit.
const SIGXCPU: i64 = 24;
/// SIGXFSZ: `RLIMIT_FSIZE`.
const SIGXFSZ: i64 = 25;

/// The cause to record for a death (`cause` as the supervisor saw it: `exit` or `signal`),
/// given the group's counters: `oom` when the memory limit killed in the group (its main
/// process by SIGKILL, or a child, after which it failed); `limit` for `SIGXCPU`/`SIGXFSZ`,
/// or a failure after forks were refused at the process limit; else the cause unchanged.
/// A clean exit (code 0) stays `exit` whatever happened in the group.
pub fn classify(
    cause: ExitCause,
    code: Option<i64>,
    signal: Option<i64>,
    counters: &Counters,
) -> ExitCause {
    if cause == ExitCause::Exit && code == Some(0) {
        return cause;
    }
    if !matches!(cause, ExitCause::Exit | ExitCause::Signal) {
        return cause;
    }
    let oom = match counters.oom_kills {
        Some(n) => n > 0,
        None => counters.memory_at_limit && signal == Some(SIGKILL),
    };
    if oom {
        return ExitCause::Oom;
    }
    if matches!(signal, Some(SIGXCPU) | Some(SIGXFSZ)) || counters.pids_refused > 0 {
        return ExitCause::Limit;
    }
    cause
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn h(controllers: &[&str], writable: bool) -> Hierarchy {
        Hierarchy {
            controllers: controllers.iter().map(|c| c.to_string()).collect(),
            writable,
        }
    }

    fn v1(writable: bool, names: &[&str]) -> Vec<(String, Hierarchy)> {
        names
            .iter()
            .map(|n| (n.to_string(), h(&[n], writable)))
            .collect()
    }

    #[test]
    #[rustfmt::skip]
    fn the_mechanism_for_the_host() {
        let all = ["memory", "cpu", "pids"];
        let cases: Vec<(&str, Probe, Mechanism, &str)> = vec![
            ("v2 with the controllers, writable",
                Probe { v2: Some(h(&["cpuset", "cpu", "io", "memory", "pids"], true)), ..Probe::default() },
                Mechanism::CgroupV2, "unified"),
            ("v2 wins over v1",
                Probe { v2: Some(h(&all, true)), v1: v1(true, &all), ..Probe::default() },
                Mechanism::CgroupV2, "unified"),
            ("an empty v2 mount (the v1 hybrid) falls to v1",
                Probe { v2: Some(h(&[], true)), v1: v1(true, &all), ..Probe::default() },
                Mechanism::CgroupV1, "v1 controllers"),
            ("v2 without pids falls to v1",
                Probe { v2: Some(h(&["memory", "cpu"], true)), v1: v1(true, &all), ..Probe::default() },
                Mechanism::CgroupV1, "v1"),
            ("v2 read-only and no v1: rlimits",
                Probe { v2: Some(h(&all, false)), ..Probe::default() },
                Mechanism::Rlimit, "may not create cgroups in the unified"),
            ("v1 read-only: rlimits",
                Probe { v1: v1(false, &all), ..Probe::default() },
                Mechanism::Rlimit, "not writable: memory, cpu, pids"),
            ("v1 without pids: rlimits",
                Probe { v1: v1(true, &["memory", "cpu", "cpuacct"]), ..Probe::default() },
                Mechanism::Rlimit, "no cgroup controllers for pids"),
            ("nothing mounted: rlimits",
                Probe::default(), Mechanism::Rlimit, "no cgroup controllers for memory, cpu, pids"),
            ("turned off: rlimits even with v1",
                Probe { disabled: true, v1: v1(true, &all), ..Probe::default() },
                Mechanism::Rlimit, "PAS_CGROUPS=off"),
        ];
        for (name, probe, want, why) in cases {
            let (got, reason) = mechanism(&probe);
            assert_eq!(got, want, "{name}");
            assert!(reason.contains(why), "{name}: {reason}");
        }
    }

    fn limits(v: serde_json::Value) -> ResourceLimits {
        use crate::model::Field;
        ResourceLimits::decode(&v, &crate::model::field::At::file("test")).unwrap()
    }

    #[test]
    #[rustfmt::skip]
    fn the_agents_limits_from_the_cell_and_the_agent() {
        let cases: Vec<(&str, serde_json::Value, Option<serde_json::Value>, Wanted)> = vec![
            ("nothing asked", json!({}), None, Wanted::default()),
            ("the cell's, with the quota keys that are not limits ignored",
                json!({"memory": "64MB", "cpu": "500m", "disk": "10GB", "gpu": 1, "pids": 32, "nice": 5, "open_files": 256, "cpu_shares": 512}),
                None,
                Wanted { memory_bytes: Some(64_000_000), cpu: Some(0.5), cpu_shares: Some(512), pids: Some(32), nice: Some(5), open_files: Some(256) }),
            ("the agent's keys win, the others stay the cell's",
                json!({"memory": "4GB", "cpu": "2 cores"}),
                Some(json!({"memory": "64MiB", "nice": 10})),
                Wanted { memory_bytes: Some(64 << 20), cpu: Some(2.0), nice: Some(10), ..Wanted::default() }),
            ("numbers are bytes and cores",
                json!({"memory": 100_000_000, "cpu": 0.2}), None,
                Wanted { memory_bytes: Some(100_000_000), cpu: Some(0.2), ..Wanted::default() }),
        ];
        for (name, cell, agent, want) in cases {
            let agent = agent.map(limits);
            assert_eq!(resolve(&limits(cell), agent.as_ref()).unwrap(), want, "{name}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn limits_pas_cannot_enforce_are_refused_naming_the_file_and_key() {
        let cases: Vec<(&str, serde_json::Value, Option<serde_json::Value>, &str)> = vec![
            ("memory not a quantity", json!({"memory": "lots"}), None,
                "config/isolation.json resource_limits.memory: cannot read \"lots\""),
            ("memory too small", json!({"memory": 1000}), None,
                "config/isolation.json resource_limits.memory: 1000 bytes is too little"),
            ("the agent's memory is named as the agent's", json!({}), Some(json!({"memory": "1kB"})),
                "the agent file resource_limits.memory: 1000 bytes"),
            ("cpu zero", json!({"cpu": 0}), None,
                "resource_limits.cpu: 0 cores is below the smallest quota"),
            ("cpu not cores", json!({"cpu": "fast"}), None,
                "resource_limits.cpu: cannot read \"fast\""),
            ("shares out of range", json!({"cpu_shares": 1}), None,
                "resource_limits.cpu_shares: 1 is outside 2 to 262144"),
            ("pids zero", json!({"pids": 0}), None, "resource_limits.pids: 0 would not let"),
            ("nice too high", json!({"nice": 20}), None, "resource_limits.nice: 20 is outside -20 to 19"),
            ("nice too low", json!({}), Some(json!({"nice": -21})),
                "the agent file resource_limits.nice: -21 is outside"),
            ("open files too few", json!({"open_files": 2}), None,
                "resource_limits.open_files: 2 leaves no room"),
        ];
        for (name, cell, agent, want) in cases {
            let agent = agent.map(limits);
            let err = resolve(&limits(cell), agent.as_ref()).unwrap_err();
            assert!(err.message.contains(want), "{name}: {}", err.message);
            assert!(err.hint.is_some(), "{name}: a fix is given");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn each_mechanism_applies_what_it_can() {
        let all = Wanted { memory_bytes: Some(64 << 20), cpu: Some(0.2), cpu_shares: Some(512), pids: Some(16), nice: Some(5), open_files: Some(128) };
        let cases: Vec<(&str, Mechanism, Wanted, Plan)> = vec![
            ("v1: the group holds memory, cpu, shares and pids; nice and files per process",
                Mechanism::CgroupV1, all.clone(),
                Plan { group_memory: Some(64 << 20), group_cpu: Some(0.2), group_shares: Some(512), group_pids: Some(16), rlimit_nofile: Some(128), nice: Some(5), ..Plan::default() }),
            ("v2 the same",
                Mechanism::CgroupV2, all.clone(),
                Plan { group_memory: Some(64 << 20), group_cpu: Some(0.2), group_shares: Some(512), group_pids: Some(16), rlimit_nofile: Some(128), nice: Some(5), ..Plan::default() }),
            ("rlimits: data size, nproc; cpu and shares not enforced",
                Mechanism::Rlimit, all.clone(),
                Plan { rlimit_data: Some(64 << 20), rlimit_nproc: Some(16), rlimit_nofile: Some(128), nice: Some(5),
                    not_enforced: vec![
                        "cpu: no rlimit caps a CPU rate (RLIMIT_CPU caps total seconds); needs cgroups".into(),
                        "cpu_shares: a CPU weight needs cgroups; use nice instead".into(),
                    ], ..Plan::default() }),
            ("rlimits, nothing asked: nothing set", Mechanism::Rlimit, Wanted::default(), Plan::default()),
        ];
        for (name, mechanism, wanted, want) in cases {
            assert_eq!(plan(mechanism, &wanted), want, "{name}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn deaths_by_a_limit_are_their_own_cause() {
        use ExitCause::*;
        let none = Counters::default();
        let oom = Counters { oom_kills: Some(1), ..none };
        let uncounted = Counters { oom_kills: None, memory_at_limit: true, ..none };
        let counted_none = Counters { oom_kills: Some(0), memory_at_limit: true, ..none };
        let forks = Counters { pids_refused: 3, ..none };
        type Case = (&'static str, ExitCause, Option<i64>, Option<i64>, Counters, ExitCause);
        let cases: Vec<Case> = vec![
            ("SIGKILL with an OOM kill counted: oom", Signal, None, Some(9), oom, Oom),
            ("a child OOM-killed, the agent failed after: oom", Exit, Some(1), None, oom, Oom),
            ("SIGKILL at the limit where OOM kills are not counted: oom", Signal, None, Some(9), uncounted, Oom),
            ("at the limit but the kernel counted no OOM kill: a signal", Signal, None, Some(9), counted_none, Signal),
            ("at the limit, uncounted, but SIGTERM: a signal", Signal, None, Some(15), uncounted, Signal),
            ("SIGXCPU: limit", Signal, None, Some(24), none, Limit),
            ("SIGXFSZ: limit", Signal, None, Some(25), none, Limit),
            ("failed after forks were refused: limit", Exit, Some(1), None, forks, Limit),
            ("a clean exit stays a clean exit", Exit, Some(0), None, oom, Exit),
            ("the watchdog's stop stays the watchdog's", Watchdog, None, Some(9), oom, Watchdog),
            ("SIGKILL, nothing counted: a signal", Signal, None, Some(9), none, Signal),
            ("exit 1, nothing counted: exit", Exit, Some(1), None, none, Exit),
        ];
        for (name, cause, code, signal, counters, want) in cases {
            assert_eq!(classify(cause, code, signal, &counters), want, "{name}");
        }
    }

    #[test]
    fn a_restart_keeps_the_last_runs_confinement_only_when_nothing_changed() {
        let basis = |level, memory: Option<u64>, owner| Basis {
            level,
            wanted: Wanted {
                memory_bytes: memory,
                ..Wanted::default()
            },
            owner,
        };
        let now = basis(IsolationLevel::Level1, Some(64 << 20), None);
        #[rustfmt::skip]
        let cases = [
            ("the same basis, the group there", Some(now.clone()), true, true),
            ("the first run: nothing kept", None, true, false),
            ("the group is gone", Some(now.clone()), false, false),
            ("another level", Some(basis(IsolationLevel::Level2, Some(64 << 20), None)), true, false),
            ("another limit", Some(basis(IsolationLevel::Level1, Some(32 << 20), None)), true, false),
            ("another owner", Some(basis(IsolationLevel::Level1, Some(64 << 20), Some((1000, 1000)))), true, false),
        ];
        for (name, last, there, want) in cases {
            assert_eq!(keep(last.as_ref(), &now, there), want, "{name}");
        }
    }
}
