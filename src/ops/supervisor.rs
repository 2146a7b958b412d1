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
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use crate::clock;
use crate::doc::Doc;
use crate::error::{Error, Kind, Result};
use crate::model::{
    self, Agent, AgentStatus, Cell, EventKind, ExitCause, IsolationLevel, Reservations, Rlimits,
    StopCause, StopRequest,
};
use crate::ops::checkpoint;
use crate::ops::limits;
use crate::ops::logs::LogSink;
use crate::ops::trust::{self, RunAs};
use crate::process::{self, StopOutcome};
use crate::store::events::{self, Level, NewEvent};
use crate::store::{self, ConfigFile, FileKey, Store};

/// Where an agent's process is. In JSON, a string, or `null` for an agent pas never
/// started (the one spelling of "no value").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl Serialize for ProcState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            ProcState::None => s.serialize_none(),
            other => s.serialize_str(other.as_str()),
        }
    }
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

/// A recorded pid (`pid`, `pgid`, `supervisor_pid`) pas may signal: a positive one. Zero
/// or a negative number would signal the caller's own group, or every process it may
/// signal, so a hand-edited file must never yield one.
pub fn usable_pid(pid: Option<i32>) -> Option<i32> {
    pid.filter(|p| *p > 0)
}

/// The process state from what an agent file records: its pid and that pid's start time,
/// its supervisor's pid and start time, and whether an end is recorded.
fn state_from(
    pid: Option<i32>,
    start_time: Option<u64>,
    supervisor: Option<i32>,
    supervisor_start_time: Option<u64>,
    exited: bool,
) -> ProcState {
    let supervisor_alive =
        |known: Option<u64>| usable_pid(supervisor).is_some_and(|s| process::alive(s, known));
    match usable_pid(pid) {
        Some(pid) if process::alive(pid, start_time) => ProcState::Running,
        // Exited, and its supervisor (alive, its parent) is about to reap it and record
        // how: not vanished yet, or a reviver would race the supervisor to the record.
        Some(pid) if process::zombie(pid, start_time) && supervisor_alive(None) => {
            ProcState::Running
        }
        // Reaped by a supervisor that records its start time (so is one that restarts in
        // place): it is deciding, restarting and recording, all in one commit to come.
        Some(_) if supervisor_start_time.is_some() && supervisor_alive(supervisor_start_time) => {
            ProcState::Running
        }
        Some(_) => ProcState::Vanished,
        None if exited => ProcState::Exited,
        None => ProcState::None,
    }
}

/// Whether the agent's process runs on this host (or records no host: an agent started
/// before pas recorded hosts, on a file store of one machine).
pub fn on_this_host(agent: &Agent) -> bool {
    on_host(agent, &crate::host::name())
}

/// Whether the agent's process runs on host `here` (or records no host).
fn on_host(agent: &Agent, here: &str) -> bool {
    agent.host.as_deref().is_none_or(|h| h == here)
}

/// The process state of an agent on another host, from its file alone: a recorded pid is
/// taken as running (only its host can look in `/proc`).
fn recorded_state(agent: &Agent) -> ProcState {
    match usable_pid(agent.pid) {
        Some(_) => ProcState::Running,
        None if agent.exit.is_some() => ProcState::Exited,
        None => ProcState::None,
    }
}

/// The process state of an agent, from its file and `/proc`; for an agent on another host,
/// from its file alone ([`recorded_state`]).
pub fn state_of(agent: &Agent) -> ProcState {
    if !on_this_host(agent) {
        return recorded_state(agent);
    }
    let supervisor = agent.supervisor_pid.and_then(|s| i32::try_from(s).ok());
    state_from(
        agent.pid,
        agent.pid_start_time,
        supervisor,
        agent.supervisor_start_time,
        agent.exit.is_some(),
    )
}

/// Refuses isolation levels this host cannot provide: level_2 when pas is not root (a
/// mount namespace takes `CAP_SYS_ADMIN`), level_3 when pas is not root or its container
/// runtime (crun) is not installed, naming what to do.
pub fn check_isolation(cell: &Cell) -> Result<()> {
    let lower = "or run the cell at level_1 (own session, cgroup, limits, TMPDIR): cell.json isolation_level";
    match cell.isolation_level {
        IsolationLevel::Level2 if !rustix::process::geteuid().is_root() => Err(Error::new(
            Kind::Denied,
            format!(
                "isolation level_2 needs root to make the agent's mount namespace, and pas runs as uid {}",
                rustix::process::geteuid().as_raw()
            ),
        )
        .hint(format!("start the agent (or the watch) as root, {lower}"))),
        IsolationLevel::Level3 => match crate::container::unavailable() {
            Some(why) => Err(Error::new(Kind::Failure, why).hint(format!(
                "install {} (apt-get install {}) and start the agent as root, {lower}",
                crate::container::RUNTIME,
                crate::container::RUNTIME
            ))),
            None => Ok(()),
        },
        IsolationLevel::None | IsolationLevel::Level1 | IsolationLevel::Level2 => Ok(()),
    }
}

/// How agents are launched in this run: what the operator allowed the watch, `revive` or
/// `agent start` (and so the supervisors they spawn).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Launch {
    /// Let the agents of cells that name no `security_context.user` run as root, when pas
    /// runs as root (`--agents-as-root`).
    pub agents_as_root: bool,
}

impl Launch {
    /// The environment variable that carries [`Launch::agents_as_root`] to a supervisor.
    pub const AGENTS_AS_ROOT_ENV: &'static str = "PAS_AGENTS_AS_ROOT";
}

/// Checks that pas may run a command named in `sources` (documents of `cell`) and decides
/// whom it runs as: see [`trust`]. A refusal is a `Denied` error naming the file and the fix.
pub fn vet(
    store: &dyn Store,
    cell: &str,
    sources: &[FileKey<'_>],
    launch: &Launch,
) -> Result<RunAs> {
    let runner = rustix::process::geteuid().as_raw();
    let denied = |r: trust::Refusal| Error::new(Kind::Denied, r.why).hint(r.fix);
    let isolation_key = FileKey::Config(ConfigFile::Isolation);
    // A store in the network records no writer: who may make pas run its commands is
    // decided by the local pas.toml, whose own origins are checked next.
    if let Some(remote) = store.remote() {
        let writers = crate::config::load(store)?.etcd_root_writers;
        trust::check_remote(&remote, runner, &writers).map_err(denied)?;
    }
    // Whom it runs as is decided by isolation.json: only the runner or root may have
    // written that, whoever the agent runs as.
    trust::check_origins(&store.origins(cell, isolation_key)?, runner, None).map_err(denied)?;
    let context = match store.read(cell, isolation_key)? {
        Some(doc) => model::Isolation::from_doc(&doc)?.security_context,
        None => model::SecurityContext::default(),
    };
    let run_as = trust::run_as(
        &context,
        runner,
        launch.agents_as_root,
        &|name| crate::accounts::user(name).ok().flatten(),
        &|name| crate::accounts::group(name).ok().flatten(),
    )
    .map_err(denied)?;
    let runs_as = match &run_as {
        RunAs::Myself => runner,
        RunAs::User { uid, .. } => *uid,
    };
    for key in sources {
        trust::check_origins(&store.origins(cell, *key)?, runner, Some(runs_as)).map_err(denied)?;
    }
    Ok(run_as)
}

/// Prepares `cmd` to run as `run_as` in a clean environment: only what a login would set
/// (`PATH`, `HOME`, `USER`, `LOGNAME`, the locale and time zone) is kept, so nothing of
/// the caller's environment (tokens, keys) reaches the agent or its log. Setting a uid
/// makes std drop the supplementary groups before `setuid`.
pub fn prepare(cmd: &mut Command, run_as: &RunAs, path: &std::ffi::OsStr) {
    prepare_env(cmd, run_as, path);
    if let RunAs::User { uid, gid, .. } = run_as {
        cmd.uid(*uid).gid(*gid);
    }
}

/// [`prepare`]'s environment alone: the ids are left to whoever execs the command (the
/// level_2 trampoline, which needs root until its namespace is made).
fn prepare_env(cmd: &mut Command, run_as: &RunAs, path: &std::ffi::OsStr) {
    cmd.env_clear().env("PATH", path);
    for key in ["LANG", "LANGUAGE", "TZ", "TERM"] {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    for (key, v) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("LC_")) {
            cmd.env(key, v);
        }
    }
    match run_as {
        RunAs::Myself => {
            for key in ["HOME", "USER", "LOGNAME"] {
                if let Some(v) = std::env::var_os(key) {
                    cmd.env(key, v);
                }
            }
        }
        RunAs::User { name, home, .. } => {
            cmd.env("HOME", home).env("USER", name).env("LOGNAME", name);
        }
    }
}

/// Refuses to start an agent that cannot be started as its files say: no command, an
/// isolation level this host cannot provide, limits that cannot be enforced.
fn startable(store: &dyn Store, cell: &str, agent: &str, on_file: &Agent) -> Result<()> {
    if on_file.command.is_empty() {
        return Err(
            Error::usage(format!("agent {agent} has no command to start")).hint(format!(
                "set one with `pas agent set {cell} {agent} -- CMD ARGS`"
            )),
        );
    }
    let cell_doc = Cell::from_doc(&store::read_required(store, cell, FileKey::Cell)?)?;
    check_isolation(&cell_doc)?;
    if cell_doc.isolation_level != IsolationLevel::None {
        limits::rules::resolve(&cell_limits(store, cell)?, on_file.resource_limits.as_ref())?;
    }
    Ok(())
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
pub fn start(store: &dyn Store, cell: &str, agent: &str, launch: &Launch) -> Result<Started> {
    let on_file = Agent::from_doc(&crate::ops::agent::read(store, cell, agent)?)?;
    startable(store, cell, agent, &on_file)?;
    if state_of(&on_file) == ProcState::Running {
        return Err(Error::conflict(format!(
            "agent {agent} is already running (pid {})",
            usable_pid(on_file.pid).unwrap_or(0)
        ))
        .hint(format!(
            "stop it first with `pas agent stop {cell} {agent}`"
        )));
    }
    vet(store, cell, &[FileKey::Agent(agent)], launch)?;
    let exe = std::env::current_exe()
        .map_err(|e| Error::failure(format!("cannot find the pas executable: {e}")))?;
    let workspace = store.workspace(cell, Some(agent))?;
    let log = workspace
        .log
        .ok_or_else(|| Error::failure("the agent log is not open"))?;
    let mut supervisor = Command::new(supervisor_program(exe, &workspace.store_args));
    supervisor.env("GLIBC_TUNABLES", supervisor_tunables());
    if launch.agents_as_root {
        supervisor.env(Launch::AGENTS_AS_ROOT_ENV, "1");
    } else {
        supervisor.env_remove(Launch::AGENTS_AS_ROOT_ENV);
    }
    let mut child = supervisor
        .args(&workspace.store_args)
        .args(["__supervise", cell, agent])
        .env(crate::host::HOST_ENV, crate::host::name())
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

/// glibc's malloc settings for a supervisor, in its own environment only (the agent's is
/// made anew by [`prepare`]): freed memory goes back to the heap's top at once (no
/// per-thread cache, no fast bins) and the top is given back to the kernel whenever it is
/// free (no trim threshold, no padding). A supervisor allocates little while it waits, so
/// these cost a few `brk` calls per start or restart; what they save is the start-up's
/// freed pages held for the agent's whole life (docs/benchmarks.md has the figures).
const SUPERVISOR_TUNABLES: &str = "glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0:glibc.malloc.trim_threshold=0:glibc.malloc.top_pad=0:glibc.malloc.arena_max=1:glibc.pthread.stack_cache_size=0";

/// [`SUPERVISOR_TUNABLES`], followed by the caller's own `GLIBC_TUNABLES`, which win.
fn supervisor_tunables() -> std::ffi::OsString {
    let mut tunables = std::ffi::OsString::from(SUPERVISOR_TUNABLES);
    if let Some(theirs) = std::env::var_os("GLIBC_TUNABLES").filter(|t| !t.is_empty()) {
        tunables.push(":");
        tunables.push(theirs);
    }
    tunables
}

/// The program that supervises one agent, installed next to `pas` (`src/bin/pas-supervise.rs`).
pub const SUPERVISOR_PROGRAM: &str = "pas-supervise";

/// What runs an agent's supervisor: [`SUPERVISOR_PROGRAM`] next to `exe` when it is there
/// and the store is the file store (its only command line is `--root DIR`), else `exe`
/// itself (`pas __supervise`, the same supervisor in the full program: the etcd store's
/// `pas-etcd`, or a `pas` copied somewhere alone).
fn supervisor_program(
    exe: std::path::PathBuf,
    store_args: &[std::ffi::OsString],
) -> std::path::PathBuf {
    let lean = exe.with_file_name(SUPERVISOR_PROGRAM);
    let file_store = matches!(store_args, [flag, _] if flag == "--root");
    if file_store && lean.is_file() {
        lean
    } else {
        exe
    }
}

/// The pid of the agent's process when it runs (the one pas started), else `None`.
pub fn running_pid(store: &dyn Store, cell: &str, agent: &str) -> Result<Option<i32>> {
    let on_file = Agent::from_doc(&crate::ops::agent::read(store, cell, agent)?)?;
    Ok((state_of(&on_file) == ProcState::Running)
        .then(|| usable_pid(on_file.pid))
        .flatten())
}

/// Stops the agent's process when it runs (an operator's stop, `grace` as in [`stop_for`])
/// and starts it again: `pas agent restart`.
pub fn restart(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    grace: Option<Duration>,
    launch: &Launch,
    now: DateTime<Utc>,
) -> Result<(StopOutcome, Started)> {
    // Checked first, so a restart that cannot start never stops a running agent.
    let on_file = Agent::from_doc(&crate::ops::agent::read(store, cell, agent)?)?;
    startable(store, cell, agent, &on_file)?;
    vet(store, cell, &[FileKey::Agent(agent)], launch)?;
    let stopped = stop_for(store, cell, agent, grace, StopCause::Stopped, now)?;
    let started = start(store, cell, agent, launch)?;
    Ok((stopped, started))
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
    change: &mut dyn FnMut(&mut Agent, &mut Vec<NewEvent>) -> bool,
) -> Result<()> {
    update_agent_writing(store, cell, agent, Agent::write_into, change)
}

/// [`update_agent`], writing the changed view back with `write`.
fn update_agent_writing(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    write: fn(&Agent, &mut Doc),
    change: &mut dyn FnMut(&mut Agent, &mut Vec<NewEvent>) -> bool,
) -> Result<()> {
    store::transact(store, cell, clock::now(), |txn| {
        let Some(mut doc) = txn.read(FileKey::Agent(agent))? else {
            return Ok(());
        };
        let mut typed = Agent::from_doc(&doc)?;
        let mut events = Vec::new();
        if change(&mut typed, &mut events) {
            write(&typed, &mut doc);
            txn.put(FileKey::Agent(agent), doc);
            for e in events {
                txn.event(e);
            }
        }
        Ok(())
    })
}

/// A supervisor as the agent file names it: its pid and start time, so a reused pid is
/// never taken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Supervisor {
    /// Its process id.
    pub pid: u32,
    /// Its start time in clock ticks since boot (`None` when `/proc` could not tell).
    pub start_time: Option<u64>,
}

impl Supervisor {
    /// This process.
    fn me() -> Supervisor {
        let pid = std::process::id();
        Supervisor {
            pid,
            start_time: i32::try_from(pid).ok().and_then(process::start_time),
        }
    }

    /// Whether the agent file names this supervisor as its own.
    pub fn owns(&self, agent: &Agent) -> bool {
        agent.supervisor_pid == Some(self.pid) && agent.supervisor_start_time == self.start_time
    }

    /// Writes this supervisor into the agent's view.
    pub fn claim(&self, agent: &mut Agent) {
        agent.supervisor_pid = Some(self.pid);
        agent.supervisor_start_time = self.start_time;
        agent.host = Some(crate::host::name());
    }
}

/// The supervisor that is restarting the agent, when one is: its process is dead (no pid
/// recorded) and the supervisor the file names is alive (pid and start time). Nobody else
/// starts the agent then; when that supervisor dies, the agent is an orphan again and the
/// watch's path takes over.
pub fn restarting(agent: &Agent) -> Option<i32> {
    if agent.pid.is_some() {
        return None;
    }
    let pid = usable_pid(agent.supervisor_pid.and_then(|s| i32::try_from(s).ok()))?;
    let start_time = agent.supervisor_start_time?;
    // On another host, as the file says: only that host can look.
    (!on_this_host(agent) || process::alive(pid, Some(start_time))).then_some(pid)
}

/// How one run of the agent ended, as its supervisor saw it.
#[derive(Debug, Clone)]
pub struct Death {
    /// The process that ended.
    pub pid: i32,
    /// When the supervisor saw it.
    pub at: DateTime<Utc>,
    /// How: `exit` or `signal` (a stop's cause is added when recorded).
    pub cause: ExitCause,
    /// The exit code.
    pub code: Option<i32>,
    /// The signal that ended it.
    pub signal: Option<i32>,
}

impl Death {
    fn of(pid: i32, status: std::process::ExitStatus, at: DateTime<Utc>) -> Death {
        let (cause, code, signal) = match (status.code(), status.signal()) {
            (Some(code), _) => (ExitCause::Exit, Some(code), None),
            (None, Some(sig)) => (ExitCause::Signal, None, Some(sig)),
            (None, None) => (ExitCause::Vanished, None, None),
        };
        Death {
            pid,
            at,
            cause,
            code,
            signal,
        }
    }

    /// "exit code 3", "signal 9".
    fn how(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (_, Some(s)) => format!("signal {s}"),
            _ => "unknown".to_string(),
        }
    }
}

/// Records `death` in the agent's view (no pid, the `exit` record, the stop it answered
/// cleared) and returns its `agent.exited` event; `None`, changing nothing, when the file
/// names another process (a newer start owns it).
pub fn record_death(a: &mut Agent, agent: &str, death: &Death) -> Option<NewEvent> {
    let pid = death.pid;
    if usable_pid(a.pid) != Some(pid) {
        return None;
    }
    let requested = a.stop_requested.as_ref().map(|r| r.cause);
    let cause = if requested == Some(StopCause::Watchdog) {
        ExitCause::Watchdog
    } else {
        death.cause
    };
    let (code, signal) = (death.code, death.signal);
    a.pid = None;
    a.exit = Some(model::Exit {
        at: Some(death.at),
        cause: Some(cause),
        code: code.map(i64::from),
        signal: signal.map(i64::from),
        requested: requested.is_some(),
        error: None,
        extra: Default::default(),
    });
    a.stop_requested = None;
    let level = if code == Some(0) {
        Level::Info
    } else {
        Level::Warn
    };
    let how = death.how();
    Some(
        NewEvent::new(
            level,
            EventKind::AgentExited,
            format!("agent {agent} (pid {pid}) ended: {how} ({cause})"),
        )
        .agent(agent)
        .details(json!({ "pid": pid, "cause": cause, "code": code, "signal": signal })),
    )
}

/// Stops what is left of a dead agent's process group (processes it started that outlived
/// it) before it is started again.
pub fn stop_leftovers(agent: &str, pgid: Option<i32>, grace: Duration) -> Result<()> {
    if let Some(pgid) = usable_pid(pgid) {
        if process::group_alive(pgid) {
            process::stop_group(pgid, grace).map_err(|e| {
                Error::failure(format!("cannot stop the leftovers of agent {agent}: {e}"))
            })?;
        }
    }
    Ok(())
}

/// What the supervisor keeps between the runs of its agent: what it learned once at its
/// start (the working directory, the environment that leads back to the store, `PATH`).
struct Runner<'a> {
    store: &'a (dyn Store + Sync),
    cell: &'a str,
    agent: &'a str,
    launch: &'a Launch,
    dir: std::path::PathBuf,
    env: Vec<(String, std::ffi::OsString)>,
    path: std::ffi::OsString,
    /// The agent's group's reading at its last death (see [`limits::confine`]).
    last_reading: Mutex<Option<crate::cgroup::Reading>>,
    /// What this supervisor keeps of its last run's confinement (see [`limits::Kept`]).
    kept: Mutex<Option<limits::Kept>>,
}

impl Runner<'_> {
    /// Keeps the agent's group's reading at its death for the next run's confinement.
    fn set_last_reading(&self, reading: Option<crate::cgroup::Reading>) {
        *lock(&self.last_reading) = reading;
    }

    /// Vets the agent's command, sets the resource limits and spawns it, its output into
    /// a pipe; returns the child, the pipe's reading end and what confines the run (its
    /// group, limits and `TMPDIR`, at isolation level_1 and up). An error names what failed.
    fn spawn(&self, on_file: &Agent) -> std::result::Result<Spawned, NotStarted> {
        let (store, cell, agent) = (self.store, self.cell, self.agent);
        let Some((program, args)) = on_file.command.split_first() else {
            return Err(NotStarted::Refused(Error::usage("no command")));
        };
        let run_as =
            vet(store, cell, &[FileKey::Agent(agent)], self.launch).map_err(NotStarted::Refused)?;
        // The memory the agent's jobs reserved bounds its address space (level_1 isolation).
        let reservations = match store
            .read(cell, FileKey::Reservations)
            .map_err(NotStarted::Refused)?
        {
            Some(doc) => Reservations::from_doc(&doc).map_err(NotStarted::Refused)?,
            None => Reservations::default(),
        };
        let reserved_memory: f64 = reservations
            .active()
            .filter(|r| r.agent == agent)
            .map(|r| r.memory)
            .sum();
        apply_rlimits(on_file.rlimits.as_ref(), reserved_memory);
        let confinement = self
            .confine(on_file, &run_as)
            .map_err(NotStarted::Refused)?;
        let cwd = on_file
            .cwd
            .as_deref()
            .map(Path::new)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.dir.clone());
        // The agent's stdout and stderr both go into one pipe the supervisor reads, as
        // `exec 2>&1` does under s6 and runit: one stream, in the order it was written.
        let pipe_error = |e: std::io::Error| {
            NotStarted::Refused(Error::failure(format!(
                "cannot make a pipe for the agent's output: {e}"
            )))
        };
        let (output, stdout) = std::io::pipe().map_err(pipe_error)?;
        let stderr = stdout.try_clone().map_err(pipe_error)?;
        let mut cmd = match confinement.as_ref().filter(|c| c.namespace) {
            // Level_2: pas itself (`__isolate`) makes the namespace, then execs the command
            // as the agent's user.
            Some(c) => {
                let exe = std::env::current_exe().map_err(|e| {
                    NotStarted::Refused(Error::failure(format!(
                        "cannot find the pas executable: {e}"
                    )))
                })?;
                let ids = match &run_as {
                    RunAs::Myself => (None, None),
                    RunAs::User { uid, gid, .. } => (Some(*uid), Some(*gid)),
                };
                let mut writable = vec![self.dir.as_path()];
                writable.extend(c.tmpdir());
                let mut cmd = Command::new(exe);
                cmd.args(crate::namespace::args(
                    ids.0, ids.1, &writable, program, args,
                ));
                prepare_env(&mut cmd, &run_as, &self.path);
                cmd
            }
            None => {
                let mut cmd = Command::new(program);
                cmd.args(args);
                prepare(&mut cmd, &run_as, &self.path);
                cmd
            }
        };
        cmd.current_dir(&cwd)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_os_str())))
            .env("PAS_CELL", cell)
            .env("PAS_AGENT", agent)
            .env(
                "PAS_CHECKPOINT",
                checkpoint_dir(store, cell, agent).unwrap_or_default(),
            );
        if let Some(dir) = confinement.as_ref().and_then(|c| c.tmpdir()) {
            cmd.env("TMPDIR", dir);
        }
        // Values are strings; anything else is left out, as it always was.
        for (k, v) in &on_file.env {
            if let Some(v) = v.as_str() {
                cmd.env(k, v);
            }
        }
        if let Some(c) = &confinement {
            // Level_3: the command and its environment go into the container's bundle.
            if let (Some(bundle), Some(tmp)) = (&c.container, &c.record.tmpdir) {
                let ids = match &run_as {
                    RunAs::Myself => (None, None),
                    RunAs::User { uid, gid, .. } => (Some(*uid), Some(*gid)),
                };
                let spec = crate::container::Spec {
                    writable: &self.dir,
                    tmp: Path::new(tmp),
                    ids,
                    no_network: c.no_network,
                    hostname: agent,
                    init: None,
                };
                cmd = crate::container::wrap(&cmd, &spec, bundle).map_err(|e| {
                    NotStarted::Refused(Error::failure(format!(
                        "cannot write the container bundle of agent {agent}: {e}"
                    )))
                })?;
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        let spawned = match &confinement {
            Some(c) => c.spawn(|| cmd.spawn()).map_err(NotStarted::Refused)?,
            None => cmd.spawn(),
        };
        let child = spawned.map_err(|e| {
            NotStarted::Failed(format!(
                "cannot run {program:?} from {}: {e}",
                cwd.display()
            ))
        })?;
        // The command keeps its copies of the pipe's writing end until it is dropped: the
        // output reaches its end only once the agent (and what inherited them) closed theirs.
        drop(cmd);
        Ok(Spawned {
            child,
            output,
            confinement,
        })
    }

    /// The confinement of the agent's next run, by the cell's isolation level and limits.
    fn confine(&self, on_file: &Agent, run_as: &RunAs) -> Result<Option<limits::Confinement>> {
        let level = Cell::from_doc(&store::read_required(self.store, self.cell, FileKey::Cell)?)?
            .isolation_level;
        let isolation = match self
            .store
            .read(self.cell, FileKey::Config(ConfigFile::Isolation))?
        {
            Some(doc) => model::Isolation::from_doc(&doc)?,
            None => model::Isolation::default(),
        };
        let owner = match run_as {
            RunAs::Myself => None,
            RunAs::User { uid, gid, .. } => Some((*uid, *gid)),
        };
        let mut confinement = limits::confine(
            level,
            &isolation.resource_limits,
            on_file,
            &self.dir,
            self.cell,
            owner,
            lock(&self.last_reading).take(),
            lock(&self.kept).take(),
        )?;
        if let Some(c) = confinement.as_mut() {
            c.no_network = isolation.network_isolation;
        }
        *lock(&self.kept) = confinement.as_ref().and_then(|c| c.kept());
        Ok(confinement)
    }
}

/// The cell's `config/isolation.json` `resource_limits` (none without the file).
fn cell_limits(store: &dyn Store, cell: &str) -> Result<model::ResourceLimits> {
    Ok(
        match store.read(cell, FileKey::Config(ConfigFile::Isolation))? {
            Some(doc) => model::Isolation::from_doc(&doc)?.resource_limits,
            None => model::ResourceLimits::default(),
        },
    )
}

/// `mutex`'s value; a thread that panicked while holding it left a value still good to
/// read (each is replaced whole).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A run just spawned: the child, its output pipe, what confines it.
struct Spawned {
    child: std::process::Child,
    output: std::io::PipeReader,
    confinement: Option<limits::Confinement>,
}

/// Why a run could not be started.
enum NotStarted {
    /// Before the spawn: a refusal or a file that does not read.
    Refused(Error),
    /// The command could not be run (recorded as exit code 127 with this reason).
    Failed(String),
}

/// The `exit` record of a command that could not be run at all.
pub(crate) fn not_run(reason: &str, now: DateTime<Utc>) -> model::Exit {
    model::Exit {
        at: Some(now),
        cause: Some(ExitCause::Exit),
        code: Some(127),
        signal: None,
        requested: false,
        error: Some(reason.to_string()),
        extra: Default::default(),
    }
}

/// A process the supervisor has just spawned for its agent.
pub struct NewRun<'a> {
    /// Its pid (and process group).
    pub pid: i32,
    /// Its start time from `/proc`.
    pub start_time: Option<u64>,
    /// When it was spawned.
    pub at: DateTime<Utc>,
    /// The command it runs, for the event.
    pub argv: &'a [String],
    /// The limits in force on it.
    pub limits: Option<&'a model::Limits>,
}

/// Records the start of `run` in the agent's view (pid, process group, start time, this
/// supervisor, the run counted, `active` unless paused) and pushes `agent.started`;
/// returns the run's number.
pub fn record_start(
    a: &mut Agent,
    agent: &str,
    me: &Supervisor,
    run: &NewRun<'_>,
    events: &mut Vec<NewEvent>,
) -> u64 {
    let pid = run.pid;
    let number = a.runs.unwrap_or(0) + 1;
    a.runs = Some(number);
    a.pid = Some(pid);
    a.pgid = Some(pid);
    a.pid_start_time = run.start_time;
    me.claim(a);
    a.started_at = Some(run.at);
    a.limits = run.limits.cloned();
    if a.status != AgentStatus::Paused {
        a.status = AgentStatus::Active;
    }
    a.stop_requested = None;
    events.push(
        NewEvent::new(
            Level::Info,
            EventKind::AgentStarted,
            format!("agent {agent} started (pid {pid})"),
        )
        .agent(agent)
        .details(json!({ "pid": pid, "command": trust::redact_argv(run.argv) })),
    );
    number
}

/// The supervisor's life (`pas __supervise`): spawn, record, wait, and on each death decide
/// by the revival rules whether to restart the agent here at once, wait for its backoff
/// first, or leave it ([`crate::ops::revive::plan`]). Prints `ok <pid>` or `error <reason>`
/// on stdout for `start` after the first spawn.
///
/// A restart reads the agent file, decides, spawns the replacement and only then commits,
/// once: the death, the rules' steps, the restart and the new process (`agent.exited`,
/// `agent.started`, `agent.revived`). Until that commit the file still names the dead
/// process and this live supervisor, which [`state_of`] takes for a running agent: no
/// pass starts it meanwhile. The commit looks again if the file changed since the read;
/// when the restart no longer stands (stopped, paused), the new process is stopped.
///
/// Who may start the agent: the commit that records a new process is the arbiter. It
/// records the process only if no live one is recorded; the loser stops the child it has
/// just spawned. While a restart waits out its backoff, the file names this supervisor and
/// no pid ([`restarting`]), which keeps the watch and `pas revive` away from the agent.
///
/// At isolation level_1 and up each run is confined ([`limits`]); a death by a limit is
/// recorded as `oom` or `limit`, and when the supervisor ends, what is left in the agent's
/// group is killed and the group and its `TMPDIR` removed.
pub fn supervise(
    store: &(dyn Store + Sync),
    cell: &str,
    agent: &str,
    launch: &Launch,
) -> Result<()> {
    let mut confinement = None;
    let result = supervise_runs(store, cell, agent, launch, &mut confinement);
    if let Some(c) = confinement {
        // Leftovers get the stop's grace (and a second): a stop in progress ends them.
        let grace = crate::ops::agent::read(store, cell, agent)
            .and_then(|d| Agent::from_doc(&d))
            .and_then(|a| crate::ops::policy::load(store, cell, Some(&a)))
            .map(|p| p.stop_grace())
            .unwrap_or(Duration::from_secs(10));
        // The supervisor's stderr is the agent's log.
        for problem in c.remove(grace + Duration::from_secs(1)) {
            eprintln!("pas: {problem}");
        }
    }
    result
}

/// [`supervise`]'s runs; `current` holds the confinement of the run this supervisor
/// recorded last (none when it recorded none: another start's group is not its to remove).
///
/// The start-up and each restart (reading and committing documents, spawning) go deep
/// into the stack; the wait for the agent, which lasts, does not. Those steps run on
/// short-lived threads ([`process::on_own_stack`]), so the pages they touch are given
/// back when they end, and what each supervisor keeps resident is what the wait needs.
fn supervise_runs(
    store: &(dyn Store + Sync),
    cell: &str,
    agent: &str,
    launch: &Launch,
    current: &mut Option<limits::Confinement>,
) -> Result<()> {
    // A session of its own: no terminal hangup reaches the supervisor or the agent.
    let _ = rustix::process::setsid();
    let me = Supervisor::me();
    let first = process::on_own_stack(|| first_run(store, cell, agent, launch, &me))?;
    let FirstRun {
        mut sink,
        runner,
        alive: _alive,
        spawned,
        mut run,
    } = first;
    let (mut child, mut output) = (spawned.child, spawned.output);
    *current = spawned.confinement;
    let mut pid = child.id() as i32;
    say(&format!("ok {pid}"));
    loop {
        release_heap_top();
        let status = pump(&mut sink, output, child)
            .map_err(|e| Error::failure(format!("cannot wait for agent {agent}: {e}")))?;
        let at = clock::now();
        let confined = current.as_ref();
        let next = process::on_own_stack(|| {
            let mut death = Death::of(pid, status, at);
            if let Some(c) = confined {
                let (cause, reading) = c.cause(death.cause, death.code, death.signal);
                death.cause = cause;
                runner.set_last_reading(reading);
            }
            sink.marker(
                &format!("run {run} exited (pid {pid}): {}", death.how()),
                death.at,
            );
            let supervised = crate::ops::revive::Supervised {
                store,
                cell,
                agent,
                me: &me,
                launch,
            };
            restart_after(&supervised, &runner, &mut sink, &death)
        })?;
        let Some(restarted) = next else {
            return Ok(());
        };
        child = restarted.spawned.child;
        output = restarted.spawned.output;
        if restarted.spawned.confinement.is_some() {
            *current = restarted.spawned.confinement;
        }
        pid = child.id() as i32;
        run = restarted.run;
    }
}

/// Tells `pas agent start`, which reads the supervisor's standard output, how its start
/// went: `ok PID` or `error MESSAGE`.
fn say(text: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// What the supervisor's start-up leaves for its runs.
struct FirstRun<'a> {
    sink: LogSink<'a>,
    runner: Runner<'a>,
    /// Keeps the agent's liveness key on a store with leases, for the supervisor's life.
    alive: Option<crate::store::AliveGuard>,
    spawned: Spawned,
    run: u64,
}

/// The start-up: opens the agent's log, spawns its first run and records it. An error has
/// been said on standard output (and the agent's file says why it did not run).
fn first_run<'a>(
    store: &'a (dyn Store + Sync),
    cell: &'a str,
    agent: &'a str,
    launch: &'a Launch,
    me: &Supervisor,
) -> Result<FirstRun<'a>> {
    let fail = |e: Error| {
        say(&format!("error {}", e.message));
        e
    };
    let on_file = crate::ops::agent::read(store, cell, agent)
        .and_then(|d| Agent::from_doc(&d))
        .map_err(fail)?;
    let workspace = store.workspace(cell, Some(agent)).map_err(fail)?;
    let log = workspace
        .log
        .ok_or_else(|| fail(Error::failure("the agent log is not open")))?;
    let (mut sink, ttl) = {
        let policy = crate::ops::policy::load(store, cell, Some(&on_file)).map_err(fail)?;
        let sink = LogSink::new(store, cell, agent, log, workspace.log_len, &policy);
        let ttl = Duration::try_from_secs_f64(policy.heartbeat_ttl()).unwrap_or(Duration::MAX);
        (sink, ttl)
    };
    // On a store with leases, the agent's alive key lives as long as this supervisor
    // (or its lease's TTL, from heartbeat_ttl, after it dies): what watches see.
    let alive = store.keep_alive(cell, agent, ttl).map_err(fail)?;
    let mut path = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .map(|d| d.into_os_string())
        .unwrap_or_default();
    if let Some(old) = std::env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    let runner = Runner {
        store,
        cell,
        agent,
        launch,
        dir: workspace.dir,
        env: workspace.env,
        path,
        last_reading: Mutex::new(None),
        kept: Mutex::new(None),
    };
    // The first run: spawned, then recorded.
    let argv = on_file.command.clone();
    let spawned = match runner.spawn(&on_file) {
        Ok(s) => s,
        Err(NotStarted::Refused(e)) => return Err(fail(e)),
        Err(NotStarted::Failed(reason)) => {
            let now = clock::now();
            sink.marker(&format!("cannot start: {reason}"), now);
            let _ = update_agent(store, cell, agent, &mut |a, _| {
                a.exit = Some(not_run(&reason, now));
                true
            });
            return Err(fail(Error::failure(reason)));
        }
    };
    let pid = spawned.child.id() as i32;
    let mut run = 1;
    let first = NewRun {
        pid,
        start_time: process::start_time(pid),
        at: clock::now(),
        argv: &argv,
        limits: spawned.confinement.as_ref().map(|c| &c.record),
    };
    let mut lost = None;
    let recorded = update_agent_writing(
        store,
        cell,
        agent,
        Agent::write_start_into,
        &mut |a, events| {
            // A live process on file: another start won, this one stops its child.
            if state_of(a) == ProcState::Running {
                lost = Some(format!(
                    "agent {agent} is already running (pid {})",
                    usable_pid(a.pid).unwrap_or(0)
                ));
                return false;
            }
            run = record_start(a, agent, me, &first, events);
            true
        },
    );
    if let Some(e) = recorded.err().or_else(|| lost.map(Error::conflict)) {
        sink.marker(&format!("not started: {}", e.message), clock::now());
        drop(spawned.output);
        abandon(spawned.child);
        return Err(fail(e));
    }
    sink.start_run(run, pid, &trust::redact_argv(&argv).join(" "), clock::now());
    Ok(FirstRun {
        sink,
        runner,
        alive,
        spawned,
        run,
    })
}

/// A restart that was spawned and recorded.
struct Restarted {
    spawned: Spawned,
    run: u64,
}

/// After a death (`death`): decides, spawns, commits; again after a wait, or when the file
/// changed under a plan. `None` when the supervisor's work is over (no restart is due, or
/// the agent is no longer its own).
fn restart_after(
    supervised: &crate::ops::revive::Supervised<'_>,
    runner: &Runner<'_>,
    sink: &mut LogSink<'_>,
    death: &Death,
) -> Result<Option<Restarted>> {
    use crate::ops::revive::{self, Next, Outcome, Spawn};
    let (store, cell, agent, me) = (
        supervised.store,
        supervised.cell,
        supervised.agent,
        supervised.me,
    );
    let mut dead = Some(death);
    loop {
        let Some(plan) = revive::plan(supervised, dead)? else {
            return Ok(None);
        };
        let mut spawned = None;
        let mut refused = None;
        if let Some(r) = plan.restart() {
            stop_leftovers(agent, r.agent.pgid, r.grace)?;
            match runner.spawn(&r.agent) {
                Ok(s) => {
                    let new_pid = s.child.id() as i32;
                    spawned = Some((
                        s,
                        new_pid,
                        process::start_time(new_pid),
                        clock::now(),
                        r.agent.command.clone(),
                    ));
                }
                Err(NotStarted::Refused(e)) => refused = Some(e.message),
                Err(NotStarted::Failed(reason)) => {
                    sink.marker(&format!("cannot start: {reason}"), clock::now());
                    refused = Some(reason);
                }
            }
        }
        let new_run = spawned
            .as_ref()
            .map(|(s, pid, start_time, at, argv)| NewRun {
                pid: *pid,
                start_time: *start_time,
                at: *at,
                argv,
                limits: s.confinement.as_ref().map(|c| &c.record),
            });
        let spawn = match (&new_run, &refused) {
            (Some(run), _) => Spawn::Ran(run),
            (None, Some(reason)) => Spawn::Failed(reason),
            (None, None) => Spawn::NotTried,
        };
        let outcome = revive::commit(supervised, dead, Some(&plan), &spawn);
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                if let Some((s, ..)) = spawned {
                    drop(s.output);
                    abandon(s.child);
                }
                return Err(e);
            }
        };
        if let Outcome::Restarted(number) = outcome {
            return Ok(spawned.map(|(s, pid, _, _, argv)| {
                let line = trust::redact_argv(&argv).join(" ");
                sink.start_run(number, pid, &line, clock::now());
                Restarted {
                    spawned: s,
                    run: number,
                }
            }));
        }
        if let Some((s, ..)) = spawned {
            // The restart no longer stands: its process is not wanted.
            sink.marker(
                "not started: the agent was stopped or changed before its restart was recorded",
                clock::now(),
            );
            drop(s.output);
            abandon(s.child);
        }
        if let Some(reason) = refused {
            return Err(Error::failure(format!(
                "cannot restart agent {agent}: {reason}"
            )));
        }
        match outcome {
            Outcome::Again => {}
            Outcome::Next(Next::Wait(until)) => {
                if !wait_turn(store, cell, agent, me, until) {
                    return Ok(None);
                }
                dead = None;
            }
            Outcome::Next(_) | Outcome::Restarted(_) => return Ok(None),
        }
    }
}

/// Gives the free top of the heap back to the kernel before the wait for the agent. glibc
/// trims its heap only when a free leaves a free chunk of 64 KiB or more at the top, and
/// then down to its threshold (none with [`SUPERVISOR_TUNABLES`]); the start-up's and a
/// restart's temporaries are smaller than that, so their pages would stay resident for as
/// long as the agent runs. Freeing one such chunk is that free (`malloc_trim` would need
/// `unsafe`): with glibc's defaults, or another allocator, it costs an allocation.
fn release_heap_top() {
    drop(std::hint::black_box(Vec::<u8>::with_capacity(64 * 1024)));
}

/// Stops a child this supervisor spawned but may not keep, and reaps it.
fn abandon(mut child: std::process::Child) {
    let _ = process::stop_group(child.id() as i32, Duration::from_secs(1));
    let _ = child.wait();
}

/// Waits until `until` for a restart this supervisor decided to delay (backoff, cooldown),
/// looking at the agent file every 200 ms: false, ending the wait, as soon as the agent is
/// no longer this supervisor's to restart (stopped, paused, started by someone else, gone)
/// or its file cannot be read. Stop and pause win over a pending restart this way.
fn wait_turn(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    me: &Supervisor,
    until: DateTime<Utc>,
) -> bool {
    loop {
        let left = (until - clock::now()).num_milliseconds();
        if left <= 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(left.clamp(1, 200) as u64));
        let still_mine = match store.read(cell, FileKey::Agent(agent)) {
            Ok(Some(doc)) => Agent::from_doc(&doc)
                .is_ok_and(|a| me.owns(&a) && a.pid.is_none() && a.status == AgentStatus::Active),
            _ => false,
        };
        if !still_mine {
            return false;
        }
    }
}

/// Copies the agent's output into its log, line by line, until the agent has exited and its
/// output is drained; returns how it exited. The pipe is always read, whatever happens to
/// the log, so the agent never blocks on a full pipe. Output still written after the agent
/// exited, by processes it left behind, is read for a moment more, then left: they get
/// `EPIPE` once the supervisor is gone.
fn pump(
    sink: &mut LogSink<'_>,
    mut output: std::io::PipeReader,
    mut child: std::process::Child,
) -> std::io::Result<std::process::ExitStatus> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use std::io::Read;
    // The child's pidfd becomes readable when it exits: one poll waits for output and death
    // together, with no waiting thread (its stack and its malloc arena) in the supervisor.
    let pid = rustix::process::Pid::from_raw(child.id() as i32)
        .ok_or_else(|| std::io::Error::other("the agent has no pid"))?;
    let done = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?;
    let mut lines = crate::ops::logs::LineSplitter::default();
    // Pipes hold 64 KiB; reading 8 KiB at a time costs a few more reads for a chatty agent.
    // On the stack: the start-up's deeper calls (the spawn, the first commit) already made
    // these pages resident, where a buffer on the heap would grow it by its size for as
    // long as the supervisor lives.
    let mut buf = [0u8; 8 * 1024];
    let mut exited: Option<(std::process::ExitStatus, std::time::Instant)> = None;
    // Once the agent exited, what it wrote is in the pipe already: a short wait for more.
    let linger = Timespec {
        tv_sec: 0,
        tv_nsec: 50_000_000,
    };
    loop {
        let (ready, finished) = {
            let mut fds = [
                PollFd::new(&output, PollFlags::IN),
                PollFd::new(&done, PollFlags::IN),
            ];
            let watched = if exited.is_some() { 1 } else { 2 };
            let timeout = exited.as_ref().map(|_| &linger);
            match poll(&mut fds[..watched], timeout) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            (
                !fds[0].revents().is_empty(),
                watched == 2 && !fds[1].revents().is_empty(),
            )
        };
        if ready {
            match output.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let now = clock::now();
                    lines.feed(&buf[..n], &mut |line| sink.output(line, now));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if finished {
            exited = Some((child.wait()?, std::time::Instant::now()));
        }
        if let Some((_, at)) = &exited {
            if !ready || at.elapsed() > Duration::from_secs(1) {
                break;
            }
        }
    }
    lines.finish(&mut |line| sink.output(line, clock::now()));
    match exited {
        Some((status, _)) => Ok(status),
        None => child.wait(),
    }
}

/// Resource limits for the agent, set on the supervisor before the spawn so the agent
/// inherits them: `rlimits.memory_bytes` (address space; else the memory its active
/// reservations hold), `cpu_seconds`, `open_files`.
fn apply_rlimits(limits: Option<&Rlimits>, reserved_memory: f64) {
    use rustix::process::{setrlimit, Resource, Rlimit};
    let explicit_memory = limits.is_some_and(|l| l.memory_bytes.is_some());
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
    let Some(limits) = limits else {
        return;
    };
    for (limit, resource) in [
        (limits.memory_bytes, Resource::As),
        (limits.cpu_seconds, Resource::Cpu),
        (limits.open_files, Resource::Nofile),
    ] {
        if let Some(v) = limit {
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
    update_agent(store, cell, agent, &mut |a, events| {
        if state_of(a) != ProcState::Vanished {
            return false;
        }
        vanished = usable_pid(a.pid);
        a.pid = None;
        a.exit = Some(model::Exit::vanished(now));
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

/// The process a stop is aimed at, as one version of the agent's document names it.
struct Target {
    running: bool,
    pid: Option<i32>,
    pgid: Option<i32>,
    /// The host it runs on when that is not this one, where pas may not signal it.
    elsewhere: Option<String>,
}

impl Target {
    fn of(a: &Agent) -> Self {
        let running = state_of(a) == ProcState::Running;
        Target {
            running,
            pid: usable_pid(a.pid),
            pgid: usable_pid(a.pgid).or(usable_pid(a.pid)),
            elsewhere: match running && !on_this_host(a) {
                true => a.host.clone(),
                false => None,
            },
        }
    }
}

/// Stops an agent's process group: SIGTERM, then SIGKILL after `grace` (`None`: the agent's
/// `stop_grace` policy). An operator's stop (`stopped`) makes the agent idle, and it is not
/// revived; the watchdog's is restarted by the revival rules.
pub fn stop_for(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    grace: Option<Duration>,
    cause: StopCause,
    now: DateTime<Utc>,
) -> Result<StopOutcome> {
    let on_file = Agent::from_doc(&crate::ops::agent::read(store, cell, agent)?)?;
    let grace = match grace {
        Some(g) => g,
        None => crate::ops::policy::load(store, cell, Some(&on_file))?.stop_grace(),
    };
    // What to signal is read from the document the request is written to, in the same
    // transaction, not from the read above: a restart committed in between (its
    // supervisor spawned the replacement and recorded it while this command read) names
    // the new process, and that is the one to stop.
    let mut target = Target::of(&on_file);
    update_agent(store, cell, agent, &mut |a, _| {
        target = Target::of(a);
        if target.elsewhere.is_some() {
            return false;
        }
        if cause == StopCause::Stopped && a.status != AgentStatus::Paused {
            a.status = AgentStatus::Idle;
        }
        if target.running {
            a.stop_requested = Some(StopRequest {
                at: now,
                cause,
                extra: Default::default(),
            });
        }
        true
    })?;
    if let Some(host) = target.elsewhere {
        return Err(Error::conflict(format!(
            "agent {agent} runs on host {host}, not on this one ({}): pas signals a process only on its own host",
            crate::host::name()
        ))
        .hint(format!("run the command on {host} (its PAS_HOST or host name)")));
    }
    let Target {
        running, pgid, pid, ..
    } = target;
    let outcome = match (running, pgid) {
        (true, Some(pgid)) => process::stop_group(pgid, grace)
            .map_err(|e| Error::failure(format!("cannot signal agent {agent}: {e}")))?,
        _ => StopOutcome::NotRunning,
    };
    if running {
        // Give the supervisor a moment to record the death (and, for the watchdog, maybe
        // restart it in place: another pid); if it is gone too, record it.
        let stopped = pid;
        for _ in 0..50 {
            let d = Agent::from_doc(&crate::ops::agent::read(store, cell, agent)?)?;
            if usable_pid(d.pid) != stopped {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if record_vanished(store, cell, agent, now)? && cause == StopCause::Watchdog {
            update_agent(store, cell, agent, &mut |a, _| {
                if let Some(exit) = &mut a.exit {
                    exit.cause = Some(ExitCause::Watchdog);
                }
                true
            })?;
        }
        let level = match cause {
            StopCause::Watchdog => Level::Warn,
            StopCause::Stopped => Level::Info,
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
            .details(json!({ "cause": cause.as_str(), "outcome": outcome })),
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

/// Whether the agent is in the state waited for (pure but for `/proc`: the agent and its
/// health given).
pub fn has_reached(
    agent: &Agent,
    health: crate::ops::health::Health,
    want: WaitFor,
) -> (bool, ProcState) {
    use crate::ops::health::Health;
    let proc_state = state_of(agent);
    let should_run = agent.status == AgentStatus::Active;
    let reached = match want {
        WaitFor::Healthy => health == Health::Healthy,
        WaitFor::Dead => {
            health == Health::Dead
                || (should_run && matches!(proc_state, ProcState::Exited | ProcState::Vanished))
        }
        WaitFor::Stopped => proc_state != ProcState::Running,
    };
    (reached, proc_state)
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
        let on_file = Agent::from_doc(&crate::ops::agent::read(store, cell, agent)?)?;
        let policy = crate::ops::policy::load(store, cell, Some(&on_file))?;
        let health = crate::ops::health::assess(&on_file, &policy, clock::now()).health;
        let (reached, process) = has_reached(&on_file, health, want);
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

    /// [`has_reached`] for the agent file `doc`, its health assessed at `now`.
    fn has_reached(
        doc: &Doc,
        policy: &Policy,
        want: WaitFor,
        now: DateTime<Utc>,
    ) -> (bool, crate::ops::health::Health, ProcState) {
        let agent = Agent::from_doc(doc).unwrap();
        let health = crate::ops::health::assess(&agent, policy, now).health;
        let (reached, process) = super::has_reached(&agent, health, want);
        (reached, health, process)
    }

    #[test]
    fn only_an_agents_own_host_looks_at_its_pid() {
        // (why, the agent file's run fields, on host "a", the state seen from host "b")
        let cases: [(&str, &str, bool, ProcState); 6] = [
            (
                "no host recorded",
                r#""pid": 4242"#,
                true,
                ProcState::Running,
            ),
            (
                "its own host",
                r#""host": "a", "pid": 4242"#,
                true,
                ProcState::Running,
            ),
            (
                "another host, a pid",
                r#""host": "b", "pid": 4242"#,
                false,
                ProcState::Running,
            ),
            (
                "another host, no pid yet",
                r#""host": "b", "pid": null"#,
                false,
                ProcState::None,
            ),
            (
                "another host, ended",
                r#""host": "b", "pid": null, "exit": {"cause": "exit", "code": 0}"#,
                false,
                ProcState::Exited,
            ),
            (
                "another host, pid 0",
                r#""host": "b", "pid": 0"#,
                false,
                ProcState::None,
            ),
        ];
        for (why, fields, on_a, seen) in cases {
            let agent =
                Agent::from_doc(&doc(&format!(r#"{{"agent_id": "a1", {fields}}}"#))).unwrap();
            assert_eq!(on_host(&agent, "a"), on_a, "{why}");
            assert_eq!(recorded_state(&agent), seen, "{why}");
        }
    }

    #[test]
    fn pas_supervise_runs_the_supervisor_of_the_file_store_when_it_is_installed() {
        let dir = std::env::temp_dir().join(format!("pas-lean-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("pas");
        let lean = dir.join(SUPERVISOR_PROGRAM);
        let file: Vec<std::ffi::OsString> = vec!["--root".into(), "/r".into()];
        let etcd: Vec<std::ffi::OsString> = ["--store", "etcd://h:2379", "--root", "/r"]
            .map(Into::into)
            .to_vec();
        // (pas-supervise installed, store arguments, what runs the supervisor)
        let table = [
            (true, &file, &lean),
            (true, &etcd, &exe),
            (false, &file, &exe),
            (false, &etcd, &exe),
        ];
        for (installed, args, expected) in table {
            if installed {
                std::fs::write(&lean, b"").unwrap();
            } else {
                let _ = std::fs::remove_file(&lean);
            }
            assert_eq!(
                &supervisor_program(exe.clone(), args),
                expected,
                "{installed} {args:?}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_positive_32_bit_pids_are_taken_from_a_file() {
        let pid = |json: &str| {
            Agent::from_doc(&doc(&format!(r#"{{"agent_id": "a1", "pid": {json}}}"#)))
                .map(|a| usable_pid(a.pid))
        };
        assert_eq!(pid("4242").unwrap(), Some(4242));
        for never in ["0", "-1", "null"] {
            assert_eq!(pid(never).unwrap(), None, "{never}");
        }
        // Not a pid at all: the file is refused naming the field, never signalled.
        for bad in ["1099511627776", r#""12""#] {
            assert!(pid(bad).unwrap_err().message.contains(" pid: "), "{bad}");
        }
    }

    #[test]
    fn waits_end_on_the_documented_states() {
        let now = clock::parse("2026-01-01T00:01:00Z").unwrap();
        let policy = Policy::of(&serde_json::Map::new(), None, None, None);
        let exited_active = doc(
            r#"{"agent_id": "a1", "status": "active", "pid": null, "last_heartbeat": "2026-01-01T00:00:50Z", "exit": {"cause": "exit", "code": 1}}"#,
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
            r#"{"agent_id": "a1", "status": "idle", "pid": null, "last_heartbeat": "2026-01-01T00:00:50Z", "exit": {"cause": "signal", "signal": 15}}"#,
        );
        assert!(
            !has_reached(&stopped_idle, &policy, WaitFor::Dead, now).0,
            "an agent stopped on purpose is not dead"
        );
        // Silent for 60 s at the default 30 s interval: down, not yet dead (90 s).
        let silent = doc(
            r#"{"agent_id": "a1", "status": "active", "last_heartbeat": "2026-01-01T00:00:00Z"}"#,
        );
        assert!(!has_reached(&silent, &policy, WaitFor::Dead, now).0);
        let later = clock::parse("2026-01-01T00:01:31Z").unwrap();
        assert!(has_reached(&silent, &policy, WaitFor::Dead, later).0);
    }
}
