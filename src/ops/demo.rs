//! `pas demo`: a complete mission in a temporary root, narrated as it happens.
//!
//! A cell from a mission file, three agents running `examples/demo-agent.sh`, `pas watch`
//! looking after them; one agent is killed with SIGKILL midway and revived from its
//! checkpoint, a context budget breach is handled, and every task completes. Nothing is
//! simulated: the narration is the cell's own events log.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::clock;
use crate::error::{Error, Result};
use crate::process;
use crate::store::events::{self, Event};
use crate::store::{FileKey, LogFile, Store};

/// The example agent, embedded.
pub const AGENT_SCRIPT: &str = include_str!("../../examples/demo-agent.sh");
/// The demo's mission file, embedded.
pub const MISSION: &str = include_str!("../../examples/demo-mission.json");

/// The agent the demo kills.
const VICTIM: &str = "writer_1";
/// How long the demo may take before it gives up.
const DEADLINE: Duration = Duration::from_secs(90);

/// Event kinds worth narrating (checkpoints and beats would drown the story).
const TOLD: [&str; 15] = [
    "cell.created",
    "agent.started",
    "task.claimed",
    "task.completed",
    "task.requeued",
    "task.handoff",
    "agent.exited",
    "agent.dead",
    "agent.revived",
    "agent.revival_succeeded",
    "budget.context_breach",
    "budget.compacted",
    "cell.status",
    "agent.failed",
    "agent.completed",
];

/// Runs the demo; `say` gets each narrated line. Returns the cell's id.
///
/// `say` gets the narration, a line at a time; `status` a one-line state while waiting
/// (elapsed time, tasks completed), for a progress line on a terminal.
pub fn run(
    store: &dyn Store,
    work: &Path,
    exe: &Path,
    say: &mut dyn FnMut(String),
    status: &mut dyn FnMut(String),
) -> Result<String> {
    let started = Instant::now();
    let stamp = |s: &str| format!("[{:5.1}s] {s}", started.elapsed().as_secs_f64());
    crate::store::write_outside(&work.join("demo-agent.sh"), AGENT_SCRIPT.as_bytes())?;
    crate::store::write_outside(&work.join("demo-mission.json"), MISSION.as_bytes())?;
    let mission: Value = serde_json::from_str(MISSION)
        .map_err(|e| Error::failure(format!("the embedded demo mission is not JSON: {e}")))?;
    let cell = crate::ops::mission::create(store, &mission, "pas-demo", clock::now())?;
    say(stamp(&format!(
        "created cell {cell} from {}",
        work.join("demo-mission.json").display()
    )));
    let script = work.join("demo-agent.sh").display().to_string();
    let agents: Vec<String> = store.list(&cell, crate::store::Collection::Agents)?;
    for a in &agents {
        let change = crate::ops::agent::AgentChange {
            command: Some(vec!["sh".into(), script.clone()]),
            ..Default::default()
        };
        crate::ops::agent::change(store, &cell, a, &change, clock::now())?;
    }
    let workspace = store.workspace(&cell, None)?;
    let mut watch = Command::new(exe)
        .args(&workspace.store_args)
        .args(["watch", "--interval", "2", "--agents-as-root"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::failure(format!("cannot start pas watch: {e}")))?;
    say(stamp(&format!("started `pas watch` (pid {})", watch.id())));
    let result = drive(store, &cell, &agents, started, say, status);
    // Leave nothing running, whatever happened.
    let _ = process::terminate_pid(watch.id() as i32);
    let _ = watch.wait();
    for a in &agents {
        let _ = crate::ops::supervisor::stop(
            store,
            &cell,
            a,
            Some(Duration::from_secs(2)),
            "stopped",
            clock::now(),
        );
    }
    result.map(|()| cell)
}

fn drive(
    store: &dyn Store,
    cell: &str,
    agents: &[String],
    started: Instant,
    say: &mut dyn FnMut(String),
    status: &mut dyn FnMut(String),
) -> Result<()> {
    let stamp = |s: &str| format!("[{:5.1}s] {s}", started.elapsed().as_secs_f64());
    for a in agents {
        // The demo's own temporary root and embedded mission: its agents may run as whoever
        // runs the demo, root included.
        let launch = crate::ops::supervisor::Launch {
            agents_as_root: true,
        };
        crate::ops::supervisor::start(store, cell, a, &launch)?;
    }
    let mut offset = 0u64;
    let mut killed = false;
    let total_tasks = store.list(cell, crate::store::Collection::Tasks)?.len();
    let mut completed_before = 0;
    let mut completion_told = false;
    let mut completed_at: Option<Instant> = None;
    loop {
        if started.elapsed() > DEADLINE {
            return Err(Error::new(
                crate::error::Kind::Timeout,
                format!("the demo did not finish within {}s", DEADLINE.as_secs()),
            )
            .hint(format!(
                "look at {}",
                store.describe_log(cell, crate::store::LogFile::Mission)
            )));
        }
        let bytes = store.read_log(cell, LogFile::Events, offset)?;
        let (lines, torn) = events::split_lines(&bytes);
        offset += (bytes.len() - torn) as u64;
        for line in lines {
            let Ok(e) = serde_json::from_slice::<Event>(line) else {
                continue;
            };
            if e.kind == "task.completed" {
                completed_before += 1;
            }
            if e.kind == "cell.status" && e.message.contains("-> completed") {
                completion_told = true;
            }
            if TOLD.contains(&e.kind.as_str()) {
                say(stamp(&format!("{:<24} {}", e.kind, e.message)));
            }
        }
        // Midway: kill the victim with SIGKILL while it works on a task.
        // (After the first completion when possible, but never so late that the victim
        // has no task left to be killed in: a loaded machine reorders the agents' work.)
        if !killed && (completed_before >= 1 || started.elapsed() > Duration::from_secs(4)) {
            let doc = crate::ops::agent::read(store, cell, VICTIM)?;
            let mid_task = doc.get("current_task").is_some_and(|t| !t.is_null())
                && doc
                    .str("note")
                    .is_some_and(|n| ["step 2", "step 3", "step 4"].iter().any(|s| n.contains(s)));
            if let (true, Some(pid)) = (mid_task, doc.get("pid").and_then(Value::as_i64)) {
                process::kill_pid(pid as i32)
                    .map_err(|e| Error::failure(format!("cannot kill {VICTIM}: {e}")))?;
                killed = true;
                say(stamp(&format!(
                    "{:<24} killed {VICTIM} (pid {pid}) with SIGKILL in the middle of {} ({})",
                    "demo.kill",
                    doc.str("current_task").unwrap_or("?"),
                    doc.str("note").unwrap_or("")
                )));
            }
        }
        status(format!(
            "[{:5.1}s] working: {completed_before} of {total_tasks} tasks completed",
            started.elapsed().as_secs_f64(),
        ));
        let cell_doc = crate::store::read_required(store, cell, FileKey::Cell)?;
        if cell_doc.str("status") == Some("completed") {
            // The status change is logged right after cell.json is written: narrate it too
            // (waiting at most 2 s for it).
            let since = *completed_at.get_or_insert_with(Instant::now);
            if completion_told || since.elapsed() > Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(300));
                return Ok(());
            }
        }
        if cell_doc.str("status") == Some("failed") {
            return Err(Error::failure("the demo's cell failed").hint(format!(
                "look at {}",
                store.describe_log(cell, crate::store::LogFile::Mission)
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
