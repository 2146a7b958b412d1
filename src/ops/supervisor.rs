//! Supervised agent processes: start, stop, and how they died.
//!
//! `pas agent start` spawns a small supervisor (`pas __supervise`, a new session) that
//! spawns the agent's `command` in its own process group, with stdout and stderr appended to
//! `logs/<agent>.log`, records `pid`, `pgid`, `pid_start_time`, `supervisor_pid` and
//! `started_at` in the agent file, then waits and records the death (`exit` with a code, or
//! `signal`). A process that disappears without its supervisor seeing it is recorded as
//! `vanished` by whoever notices. The start time read from `/proc` makes sure a pid reused by
//! another process is never taken for the agent.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::clock;
use crate::doc::Doc;
use crate::error::{Error, Kind, Result};
use crate::model::EventKind;
use crate::ops::checkpoint;
use crate::process::{self, StopOutcome};
use crate::store::events::{self, Level, NewEvent};
use crate::store::{self, FileKey, Store};

/// Where an agent's process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcState {
    /// Never started by pas.
    None,
    /// Running, and it is the process pas started.
    Running,
    /// Exited, and its supervisor recorded how.
    Exited,
    /// Gone without anyone seeing how.
    Vanished,
}

impl ProcState {
    /// The spelling in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcState::None => "-",
            ProcState::Running => "running",
            ProcState::Exited => "exited",
            ProcState::Vanished => "vanished",
        }
    }
}

fn pid_of(doc: &Doc) -> Option<i32> {
    process::recorded_pid(doc.get("pid"))
}

/// The process state of an agent, from its file and `/proc`.
pub fn state(doc: &Doc) -> ProcState {
    match pid_of(doc) {
        Some(pid) if process::alive(pid, doc.u64("pid_start_time")) => ProcState::Running,
        // Exited, and its supervisor (alive, its parent) is about to reap it and record
        // how: not vanished yet, or a reviver would race the supervisor to the record.
        Some(pid)
            if process::zombie(pid, doc.u64("pid_start_time"))
                && process::recorded_pid(doc.get("supervisor_pid"))
                    .is_some_and(|s| process::alive(s, None)) =>
        {
            ProcState::Running
        }
        Some(_) => ProcState::Vanished,
        None if doc.get("exit").is_some_and(|e| !e.is_null()) => ProcState::Exited,
        None => ProcState::None,
    }
}

/// Refuses isolation levels this host cannot provide.
pub fn check_isolation(cell_doc: &Doc) -> Result<()> {
    match cell_doc.str("isolation_level") {
        Some(level @ ("level_2" | "level_3")) => Err(Error::new(
            Kind::Failure,
            format!("isolation {level} needs mount and network namespaces, which pas does not set up on this host"),
        )
        .hint("run the cell at level_1 (own session and resource limits) or none: `pas cell` isolation_level")),
        _ => Ok(()),
    }
}

/// What a start did.
#[derive(Debug, Clone, Serialize)]
pub struct Started {
    /// The agent.
    pub agent: String,
    /// Its process id (also its process group).
    pub pid: i32,
    /// The checkpoint directory it was given, if any.
    pub checkpoint: Option<String>,
}

/// Starts an agent's command under a supervisor; returns once its pid is recorded.
pub fn start(store: &dyn Store, cell: &str, agent: &str) -> Result<Started> {
    let doc = crate::ops::agent::read(store, cell, agent)?;
    if doc.strings("command").is_empty() {
        return Err(
            Error::usage(format!("agent {agent} has no command to start")).hint(format!(
                "set one with `pas agent set {cell} {agent} -- CMD ARGS`"
            )),
        );
    }
    check_isolation(&store::read_required(store, cell, FileKey::Cell)?)?;
    if state(&doc) == ProcState::Running {
        return Err(Error::conflict(format!(
            "agent {agent} is already running (pid {})",
            pid_of(&doc).unwrap_or(0)
        ))
        .hint(format!(
            "stop it first with `pas agent stop {cell} {agent}`"
        )));
    }
    let exe = std::env::current_exe()
        .map_err(|e| Error::failure(format!("cannot find the pas executable: {e}")))?;
    let workspace = store.workspace(cell, Some(agent))?;
    let log = workspace
        .log
        .ok_or_else(|| Error::failure("the agent log is not open"))?;
    let mut child = Command::new(exe)
        .args(&workspace.store_args)
        .args(["__supervise", cell, agent])
        .env_remove("PAS_AGENT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| {
            Error::failure(format!("cannot start the supervisor of agent {agent}: {e}"))
        })?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let line = line.trim();
    if let Some(pid) = line.strip_prefix("ok ").and_then(|p| p.parse::<i32>().ok()) {
        let checkpoint = checkpoint_dir(store, cell, agent);
        return Ok(Started {
            agent: agent.to_string(),
            pid,
            checkpoint,
        });
    }
    let _ = child.wait();
    let reason = line
        .strip_prefix("error ")
        .unwrap_or("the supervisor exited without starting it");
    Err(
        Error::failure(format!("cannot start agent {agent}: {reason}"))
            .hint(format!("see {}", workspace.log_name)),
    )
}

fn checkpoint_dir(store: &dyn Store, cell: &str, agent: &str) -> Option<String> {
    checkpoint::latest_generation(store, cell, agent)
        .ok()
        .flatten()
        .map(|g| store.describe_checkpoint(cell, agent, g))
}

/// Changes the agent file (when it still exists) in one transaction with the events the
/// change pushes; `change` returns false to leave the file alone.
fn update_agent(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    change: &mut dyn FnMut(&mut Doc, &mut Vec<NewEvent>) -> bool,
) -> Result<()> {
    store::transact(store, cell, clock::now(), |txn| {
        let Some(mut doc) = txn.read(FileKey::Agent(agent))? else {
            return Ok(());
        };
        let mut events = Vec::new();
        if change(&mut doc, &mut events) {
            txn.put(FileKey::Agent(agent), doc);
            for e in events {
                txn.event(e);
            }
        }
        Ok(())
    })
}

/// The supervisor's life (`pas __supervise`): spawn, record, wait, record. Prints
/// `ok <pid>` or `error <reason>` on stdout for `start`.
pub fn supervise(store: &dyn Store, cell: &str, agent: &str) -> Result<()> {
    // A session of its own: no terminal hangup reaches the supervisor or the agent.
    let _ = rustix::process::setsid();
    let say = |text: &str| {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    };
    let fail = |e: Error| {
        say(&format!("error {}", e.message));
        e
    };
    let doc = crate::ops::agent::read(store, cell, agent).map_err(fail)?;
    let argv = doc.strings("command");
    let Some((program, args)) = argv.split_first() else {
        return Err(fail(Error::usage("no command")));
    };
    // The memory the agent's jobs reserved bounds its address space (level_1 isolation).
    let reserved_memory: f64 = crate::ops::reservation::list(store, cell, Some("active"))
        .unwrap_or_default()
        .iter()
        .filter(|r| r.get("agent").and_then(Value::as_str) == Some(agent))
        .filter_map(|r| r.get("memory").and_then(Value::as_f64))
        .sum();
    apply_rlimits(&doc, reserved_memory);
    let workspace = store.workspace(cell, Some(agent)).map_err(fail)?;
    let cwd = doc
        .str("cwd")
        .map(Path::new)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| workspace.dir.clone());
    let log = workspace
        .log
        .ok_or_else(|| fail(Error::failure("the agent log is not open")))?;
    let log_err = log
        .try_clone()
        .map_err(|e| fail(Error::failure(format!("cannot open the agent log: {e}"))))?;
    let mut path = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .map(|d| d.into_os_string())
        .unwrap_or_default();
    if let Some(old) = std::env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .env("PATH", path)
        .envs(
            workspace
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_os_str())),
        )
        .env("PAS_CELL", cell)
        .env("PAS_AGENT", agent)
        .env(
            "PAS_CHECKPOINT",
            checkpoint_dir(store, cell, agent).unwrap_or_default(),
        );
    if let Some(Value::Object(env)) = doc.get("env") {
        for (k, v) in env {
            if let Some(v) = v.as_str() {
                cmd.env(k, v);
            }
        }
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let now = clock::now();
            let reason = format!("cannot run {program:?}: {e}");
            let _ = update_agent(store, cell, agent, &mut |d, _| {
                d.set("exit", json!({ "at": clock::stamp(now), "cause": "exit", "code": 127, "signal": null, "error": reason }));
                true
            });
            return Err(fail(Error::failure(reason)));
        }
    };
    let pid = child.id() as i32;
    let start_time = process::start_time(pid);
    let now = clock::now();
    update_agent(store, cell, agent, &mut |d, events| {
        d.set("pid", pid);
        d.set("pgid", pid);
        d.set(
            "pid_start_time",
            start_time.map_or(Value::Null, Value::from),
        );
        d.set("supervisor_pid", std::process::id());
        d.set("started_at", clock::stamp(now));
        if d.get("restart_count").is_none() {
            d.set("restart_count", 0);
        }
        if d.str("status") != Some("paused") {
            d.set("status", "active");
        }
        d.remove("stop_requested");
        events.push(
            NewEvent::new(
                Level::Info,
                EventKind::AgentStarted,
                format!("agent {agent} started (pid {pid})"),
            )
            .agent(agent)
            .details(json!({ "pid": pid, "command": argv })),
        );
        true
    })
    .map_err(fail)?;
    say(&format!("ok {pid}"));

    let status = child
        .wait()
        .map_err(|e| Error::failure(format!("cannot wait for agent {agent}: {e}")))?;
    let now = clock::now();
    let (cause, code, signal) = match (status.code(), status.signal()) {
        (Some(code), _) => ("exit", Some(code), None),
        (None, Some(sig)) => ("signal", None, Some(sig)),
        (None, None) => ("vanished", None, None),
    };
    let level = if code == Some(0) {
        Level::Info
    } else {
        Level::Warn
    };
    let how = match (code, signal) {
        (Some(c), _) => format!("exit code {c}"),
        (_, Some(s)) => format!("signal {s}"),
        _ => "unknown".to_string(),
    };
    update_agent(store, cell, agent, &mut |d, events| {
        if pid_of(d) != Some(pid) {
            return false; // a newer start owns the file now
        }
        let requested = d
            .get("stop_requested")
            .and_then(|r| r.get("cause"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let cause = if requested.as_deref() == Some("watchdog") {
            "watchdog"
        } else {
            cause
        };
        d.set("pid", Value::Null);
        d.set("exit", json!({ "at": clock::stamp(now), "cause": cause, "code": code, "signal": signal, "requested": requested.is_some() }));
        d.remove("stop_requested");
        // In the same commit as the death, so a reviver can only log the revival after it.
        events.push(
            NewEvent::new(
                level,
                EventKind::AgentExited,
                format!("agent {agent} (pid {pid}) ended: {how} ({cause})"),
            )
            .agent(agent)
            .details(json!({ "pid": pid, "cause": cause, "code": code, "signal": signal })),
        );
        true
    })
}

/// Resource limits for the agent, set on the supervisor before the spawn so the agent
/// inherits them: `rlimits.memory_bytes` (address space; else the memory its active
/// reservations hold), `cpu_seconds`, `open_files`.
fn apply_rlimits(doc: &Doc, reserved_memory: f64) {
    use rustix::process::{setrlimit, Resource, Rlimit};
    let explicit_memory = doc
        .get("rlimits")
        .and_then(|l| l.get("memory_bytes"))
        .is_some();
    if reserved_memory >= 1.0 && !explicit_memory {
        let bytes = reserved_memory as u64;
        let _ = setrlimit(
            Resource::As,
            Rlimit {
                current: Some(bytes),
                maximum: Some(bytes),
            },
        );
    }
    let Some(limits) = doc.get("rlimits") else {
        return;
    };
    for (key, resource) in [
        ("memory_bytes", Resource::As),
        ("cpu_seconds", Resource::Cpu),
        ("open_files", Resource::Nofile),
    ] {
        if let Some(v) = limits.get(key).and_then(Value::as_u64) {
            let _ = setrlimit(
                resource,
                Rlimit {
                    current: Some(v),
                    maximum: Some(v),
                },
            );
        }
    }
}

/// Records a process that is gone without its supervisor seeing it; true when it did.
pub fn record_vanished(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let mut vanished = None;
    update_agent(store, cell, agent, &mut |d, events| {
        if state(d) != ProcState::Vanished {
            return false;
        }
        vanished = pid_of(d);
        d.set("pid", Value::Null);
        d.set("exit", json!({ "at": clock::stamp(now), "cause": "vanished", "code": null, "signal": null, "requested": false }));
        if let Some(pid) = vanished {
            events.push(
                NewEvent::new(
                    Level::Warn,
                    EventKind::AgentVanished,
                    format!("agent {agent} (pid {pid}) is gone; nobody saw how"),
                )
                .agent(agent)
                .details(json!({ "pid": pid })),
            );
        }
        true
    })?;
    Ok(vanished.is_some())
}

/// Stops an agent's process group: SIGTERM, then SIGKILL after `grace` (`None`: the agent's
/// `stop_grace` policy). `cause` is `stopped` (an operator: the agent becomes idle and is
/// not revived) or `watchdog`.
pub fn stop(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    grace: Option<Duration>,
    cause: &str,
    now: DateTime<Utc>,
) -> Result<StopOutcome> {
    let doc = crate::ops::agent::read(store, cell, agent)?;
    let grace = match grace {
        Some(g) => g,
        None => crate::ops::policy::load(store, cell, Some(&doc))?.stop_grace(),
    };
    let pgid = process::recorded_pid(doc.get("pgid")).or(pid_of(&doc));
    let running = state(&doc) == ProcState::Running;
    update_agent(store, cell, agent, &mut |d, _| {
        if cause == "stopped" && d.str("status") != Some("paused") {
            d.set("status", "idle");
        }
        if running {
            d.set(
                "stop_requested",
                json!({ "at": clock::stamp(now), "cause": cause }),
            );
        }
        true
    })?;
    let outcome = match (running, pgid) {
        (true, Some(pgid)) => process::stop_group(pgid, grace)
            .map_err(|e| Error::failure(format!("cannot signal agent {agent}: {e}")))?,
        _ => StopOutcome::NotRunning,
    };
    if running {
        // Give the supervisor a moment to record the death; if it is gone too, record it.
        for _ in 0..50 {
            let d = crate::ops::agent::read(store, cell, agent)?;
            if pid_of(&d).is_none() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if record_vanished(store, cell, agent, now)? && cause == "watchdog" {
            update_agent(store, cell, agent, &mut |d, _| {
                if let Some(Value::Object(e)) = d.get("exit").cloned() {
                    let mut e = e;
                    e.insert("cause".into(), json!("watchdog"));
                    d.set("exit", Value::Object(e));
                }
                true
            })?;
        }
        let level = if cause == "watchdog" {
            Level::Warn
        } else {
            Level::Info
        };
        events::record_one(
            store,
            cell,
            NewEvent::new(
                level,
                EventKind::AgentStopped,
                format!("agent {agent} stopped ({cause}, {outcome:?})"),
            )
            .agent(agent)
            .details(json!({ "cause": cause, "outcome": outcome })),
            now,
        )?;
    }
    Ok(outcome)
}

/// What `pas agent wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WaitFor {
    /// Beating on time.
    Healthy,
    /// Dead by the liveness model, or its process gone while it should run.
    Dead,
    /// No process running.
    Stopped,
}

/// Where an agent was when the wait ended.
#[derive(Debug, Clone, Copy)]
pub struct Reached {
    /// Its health then.
    pub health: crate::ops::health::Health,
    /// Its process then.
    pub process: ProcState,
    /// How long the wait took.
    pub waited: Duration,
}

/// Whether the agent is in the state waited for (pure: the document, policy and time given).
pub fn has_reached(
    doc: &Doc,
    policy: &crate::ops::policy::Policy,
    want: WaitFor,
    now: DateTime<Utc>,
) -> (bool, crate::ops::health::Health, ProcState) {
    use crate::ops::health::Health;
    let health = crate::ops::health::assess(doc, policy, now).health;
    let proc_state = state(doc);
    let should_run = doc.str("status") == Some("active");
    let reached = match want {
        WaitFor::Healthy => health == Health::Healthy,
        WaitFor::Dead => {
            health == Health::Dead
                || (should_run && matches!(proc_state, ProcState::Exited | ProcState::Vanished))
        }
        WaitFor::Stopped => proc_state != ProcState::Running,
    };
    (reached, health, proc_state)
}

/// Polls the agent every 100 ms until it reaches `want`; a timeout is exit 8 naming where
/// it was instead.
pub fn wait_for(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    want: WaitFor,
    timeout: Option<Duration>,
) -> Result<Reached> {
    let started = std::time::Instant::now();
    loop {
        let doc = crate::ops::agent::read(store, cell, agent)?;
        let policy = crate::ops::policy::load(store, cell, Some(&doc))?;
        let (reached, health, process) = has_reached(&doc, &policy, want, clock::now());
        if reached {
            return Ok(Reached {
                health,
                process,
                waited: started.elapsed(),
            });
        }
        if let Some(limit) = timeout.filter(|t| started.elapsed() >= *t) {
            return Err(Error::new(
                Kind::Timeout,
                format!(
                    "agent {agent} did not become {want:?} within {}s (health {}, process {})",
                    limit.as_secs_f64(),
                    health.as_str(),
                    process.as_str()
                )
                .to_lowercase(),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::policy::Policy;

    fn doc(text: &str) -> Doc {
        Doc::parse(text.as_bytes(), Path::new("a.json")).unwrap()
    }

    #[test]
    fn waits_end_on_the_documented_states() {
        let now = clock::parse("2026-01-01T00:01:00Z").unwrap();
        let policy = Policy::resolve(&serde_json::Map::new(), None, None, None);
        let exited_active = doc(
            r#"{"status": "active", "pid": null, "last_heartbeat": "2026-01-01T00:00:50Z", "exit": {"cause": "exit", "code": 1}}"#,
        );
        let (dead, health, process) = has_reached(&exited_active, &policy, WaitFor::Dead, now);
        assert!(
            dead,
            "an active agent whose process ended is dead for a waiter"
        );
        assert_eq!((health.as_str(), process), ("healthy", ProcState::Exited));
        assert!(has_reached(&exited_active, &policy, WaitFor::Stopped, now).0);
        assert!(has_reached(&exited_active, &policy, WaitFor::Healthy, now).0);

        let stopped_idle = doc(
            r#"{"status": "idle", "pid": null, "last_heartbeat": "2026-01-01T00:00:50Z", "exit": {"cause": "signal", "signal": 15}}"#,
        );
        assert!(
            !has_reached(&stopped_idle, &policy, WaitFor::Dead, now).0,
            "an agent stopped on purpose is not dead"
        );
        // Silent for 60 s at the default 30 s interval: down, not yet dead (90 s).
        let silent = doc(r#"{"status": "active", "last_heartbeat": "2026-01-01T00:00:00Z"}"#);
        assert!(!has_reached(&silent, &policy, WaitFor::Dead, now).0);
        let later = clock::parse("2026-01-01T00:01:31Z").unwrap();
        assert!(has_reached(&silent, &policy, WaitFor::Dead, later).0);
    }
}
