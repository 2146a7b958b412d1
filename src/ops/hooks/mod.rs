//! Event hooks: the `on_event` policy runs a command for each new event of a cell whose
//! kind `on_event_kinds` matches (down, dead, failed, breach, ...), the event's line as
//! JSON on its stdin. The rule is [`rules::decide`]; this module follows the log and runs.
//!
//! A revive pass (`pas watch`, `pas revive`) dispatches the events appended since the last
//! dispatch, in order, under the cell's revive lock, so each event's hook runs once. Where
//! the hooks have got to is kept in the cell's `.pas/hooks.json`; a cell whose hooks never
//! looked starts at the end of its log (history is not replayed). A hook is a command pas
//! runs like any other: vetted ([`supervisor::vet`]), in a clean environment as the agent's
//! user ([`supervisor::prepare`]), for at most [`HOOK_TIME_LIMIT`]; each run (or refusal)
//! is a `hook.on_event` event, which hooks never match.

pub mod rules;

use std::io::Write;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::error::Result;
use crate::model::{Agent, EventKind};
use crate::ops::hooks::rules::Decision;
use crate::ops::policy::{self, Policy};
use crate::ops::supervisor;
use crate::store::events::{self, Cursor, Level, NewEvent};
use crate::store::{ConfigFile, FileKey, LogFile, Store};

/// How long a hook (`on_event`, `on_failure`) may run before it is killed: a hook that
/// hangs must not stop the watch from looking after everything else.
pub const HOOK_TIME_LIMIT: Duration = Duration::from_secs(60);

/// Waits for `cmd` (spawned in a process group of its own, so a kill reaches what it
/// started) with `input` on its stdin, for at most `limit`; past it, the group is killed.
pub fn run_limited(
    mut cmd: Command,
    input: Option<&[u8]>,
    limit: Duration,
) -> std::io::Result<ExitStatus> {
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn()?;
    if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
        // A hook that does not read its stdin is no error: it just gets no event.
        let _ = stdin.write_all(bytes);
    }
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if started.elapsed() > limit {
            let _ = crate::process::signal_group(child.id() as i32, true);
            let _ = child.wait();
            return Err(std::io::Error::other(format!(
                "it ran longer than {}s and was killed",
                limit.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A hook's command, ready for [`run_limited`]: `sh -c COMMAND` as `run_as` in a clean
/// environment ([`supervisor::prepare`]) with the cell's workspace variables, `PAS_CELL`,
/// `PAS_AGENT` and `env`, in the cell's directory, its output appended to the agent's log
/// (nowhere for an event of the cell). Both hooks (`on_failure`, `on_event`) run this way.
pub fn shell(
    store: &dyn Store,
    cell: &str,
    agent: Option<&str>,
    command: &str,
    run_as: &crate::ops::trust::RunAs,
    env: &[(&str, String)],
) -> crate::error::Result<Command> {
    let workspace = store.workspace(cell, agent)?;
    let mut cmd = Command::new("sh");
    supervisor::prepare(
        &mut cmd,
        run_as,
        &std::env::var_os("PATH").unwrap_or_default(),
    );
    cmd.arg("-c")
        .arg(command)
        .current_dir(&workspace.dir)
        .envs(
            workspace
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_os_str())),
        )
        .env("PAS_CELL", cell)
        .env("PAS_AGENT", agent.unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null());
    match workspace.log {
        Some(log) => {
            let err = log.try_clone();
            cmd.stdout(log);
            match err {
                Ok(err) => cmd.stderr(err),
                Err(_) => cmd.stderr(Stdio::null()),
            };
        }
        None => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    Ok(cmd)
}

/// One hook run by a dispatch.
#[derive(Debug, Clone)]
pub struct Ran {
    /// The event's agent, if any.
    pub agent: Option<String>,
    /// How it went, in words.
    pub outcome: String,
}

/// Whether an effective policy sets an `on_event` hook.
pub fn has_hook(policy: &Policy) -> bool {
    policy
        .get("on_event")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|c| !c.trim().is_empty())
}

/// Where the log ends now (its recorded head), as a cursor: where hooks that never looked
/// start, taken before a pass so that what the pass records is dispatched. `None` for a
/// log from before heads were kept.
pub fn log_end(store: &dyn Store, cell: &str) -> Result<Option<Cursor>> {
    Ok(store.events_head(cell)?.map(|h| Cursor {
        seq: h.seq,
        offset: h.size,
    }))
}

/// Runs the `on_event` hooks of `cell` for the events appended since the last dispatch
/// (the caller knows a hook is set: see [`has_hook`]). Hooks that never looked start at
/// `start` (the log's end before the pass), else at the end of the log now.
pub fn dispatch(
    store: &dyn Store,
    cell: &str,
    start: Option<Cursor>,
    launch: &supervisor::Launch,
    now: DateTime<Utc>,
) -> Result<Vec<Ran>> {
    let mut cursor = match store.hook_cursor(cell)?.or(start) {
        Some(c) => c,
        None => {
            let (seen, end) = events::read_new(store, cell, 0)?;
            let seq = seen.last().map_or(0, |e| e.seq);
            let at_end = Cursor { seq, offset: end };
            store.set_hook_cursor(cell, &at_end)?;
            return Ok(Vec::new());
        }
    };
    let bytes = store.read_log(cell, LogFile::Events, cursor.offset)?;
    let cell_policy = policy::load(store, cell, None)?;
    let mut ran = Vec::new();
    let mut offset = cursor.offset;
    for line in events::split_lines(&bytes).0 {
        offset += line.len() as u64 + 1;
        let Ok(event) = serde_json::from_slice::<events::Event>(line) else {
            continue;
        };
        if event.seq <= cursor.seq {
            continue;
        }
        cursor = Cursor {
            seq: event.seq,
            offset,
        };
        // The agent's own policies count for its events; one gone since is the cell's.
        let agent = match event.agent.as_deref() {
            Some(id) => crate::ops::agent::load(store, cell, id).ok(),
            None => None,
        };
        let effective = match &agent {
            Some(a) => policy::load(store, cell, Some(a))?,
            None => cell_policy.clone(),
        };
        if let Decision::Run { command } = rules::decide(&event.kind, &effective) {
            let outcome = run(
                store,
                cell,
                agent.as_ref(),
                &command,
                &event,
                line,
                launch,
                now,
            )?;
            // Each run is remembered at once: a watch killed later does not run it again.
            store.set_hook_cursor(cell, &cursor)?;
            ran.push(Ran {
                agent: event.agent.clone(),
                outcome,
            });
        }
    }
    store.set_hook_cursor(cell, &cursor)?;
    Ok(ran)
}

/// Runs one hook for one event, if pas may (see [`crate::ops::trust`]), and records how it
/// went as a `hook.on_event` event; returns that in words.
#[allow(clippy::too_many_arguments)]
fn run(
    store: &dyn Store,
    cell: &str,
    agent: Option<&Agent>,
    command: &str,
    event: &events::Event,
    line: &[u8],
    launch: &supervisor::Launch,
    now: DateTime<Utc>,
) -> Result<String> {
    let agent_id = agent.map(|a| a.agent_id.as_str());
    // The hook may come from pas.toml, cell.json, config/policies.json or the agent file.
    let mut sources = vec![FileKey::Cell, FileKey::Config(ConfigFile::Policies)];
    if let Some(a) = agent_id {
        sources.push(FileKey::Agent(a));
    }
    let about = |level: Level, message: String, details: serde_json::Value| {
        let e = NewEvent::new(level, EventKind::HookOnEvent, message).details(details);
        match agent_id {
            Some(a) => e.agent(a),
            None => e,
        }
    };
    let run_as = match supervisor::vet(store, cell, &sources, launch) {
        Ok(run_as) => run_as,
        Err(e) => {
            let message = format!(
                "on_event hook for {} (seq {}) was not run: {}",
                event.kind, event.seq, e.message
            );
            events::record_one(
                store,
                cell,
                about(
                    Level::Error,
                    message.clone(),
                    json!({ "event_seq": event.seq, "event_kind": event.kind, "refused": e.message, "fix": e.hint }),
                ),
                now,
            )?;
            return Ok(message);
        }
    };
    let cmd = shell(
        store,
        cell,
        agent_id,
        command,
        &run_as,
        &[
            ("PAS_EVENT_KIND", event.kind.clone()),
            ("PAS_EVENT_SEQ", event.seq.to_string()),
        ],
    )?;
    let mut input = line.to_vec();
    input.push(b'\n');
    let status = run_limited(cmd, Some(&input), HOOK_TIME_LIMIT);
    let (level, message) = match status {
        Ok(s) if s.success() => (
            Level::Info,
            format!("on_event hook ran for {} (seq {})", event.kind, event.seq),
        ),
        Ok(s) => (
            Level::Warn,
            format!(
                "on_event hook for {} (seq {}) exited with {s}",
                event.kind, event.seq
            ),
        ),
        Err(e) => (
            Level::Warn,
            format!(
                "on_event hook for {} (seq {}) could not run: {e}",
                event.kind, event.seq
            ),
        ),
    };
    events::record_one(
        store,
        cell,
        about(
            level,
            message.clone(),
            json!({ "hook": command, "event_seq": event.seq, "event_kind": event.kind }),
        ),
        now,
    )?;
    Ok(message)
}
