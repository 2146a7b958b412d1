//! `pas demo`: a complete mission in a temporary root, narrated as it happens.
//!
//! A cell from a mission file, three agents running `examples/demo-agent.sh` (one of them
//! through `pas mcp`, with plain JSON-RPC lines), `pas watch` looking after them; one agent is killed with SIGKILL midway and revived from its
//! checkpoint, a context budget breach is handled, and every task completes. Nothing is
//! simulated: the narration is the cell's own events log.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::clock;
use crate::error::{Error, Result};
use crate::model::{Cell, CellStatus, EventKind};
use crate::process;
use crate::store::events::{self, Event};
use crate::store::{FileKey, LogFile, Store};

/// The example agent, embedded.
pub const AGENT_SCRIPT: &str = include_str!("../../examples/demo-agent.sh");
/// The demo's mission file, embedded.
pub const MISSION: &str = include_str!("../../examples/demo-mission.json");

/// The agent the demo kills.
const VICTIM: &str = "writer_1";
/// The agent that works through `pas mcp` instead of the CLI.
const MCP_AGENT: &str = "writer_2";
/// How long the demo may take before it gives up.
const DEADLINE: Duration = Duration::from_secs(90);

/// Event kinds worth narrating (checkpoints and beats would drown the story).
const TOLD: [EventKind; 15] = [
    EventKind::CellCreated,
    EventKind::AgentStarted,
    EventKind::TaskClaimed,
    EventKind::TaskCompleted,
    EventKind::TaskRequeued,
    EventKind::TaskHandoff,
    EventKind::AgentExited,
    EventKind::AgentDead,
    EventKind::AgentRevived,
    EventKind::AgentRevivalSucceeded,
    EventKind::BudgetContextBreach,
    EventKind::BudgetCompacted,
    EventKind::CellStatus,
    EventKind::AgentFailed,
    EventKind::AgentCompleted,
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
        let mut command = vec!["sh".to_string(), script.clone()];
        if a == MCP_AGENT {
            command.push("mcp".into());
        }
        let change = crate::ops::agent::AgentChange {
            command: Some(command),
            ..Default::default()
        };
        crate::ops::agent::change(store, &cell, a, &change, clock::now())?;
    }
    if agents.iter().any(|a| a == MCP_AGENT) {
        say(stamp(&format!(
            "{MCP_AGENT} works through `pas mcp` (MCP tool calls, JSON-RPC lines from printf); the others through the CLI"
        )));
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
        let _ = crate::ops::supervisor::stop_for(
            store,
            &cell,
            a,
            Some(Duration::from_secs(2)),
            crate::model::StopCause::Stopped,
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
            // The log is open to other tools' kinds; pas's own are the ones told.
            let Some(kind) = EventKind::parse(&e.kind) else {
                continue;
            };
            if kind == EventKind::TaskCompleted {
                completed_before += 1;
            }
            if kind == EventKind::CellStatus && e.message.contains("-> completed") {
                completion_told = true;
            }
            if TOLD.contains(&kind) {
                say(stamp(&format!("{:<24} {}", e.kind, e.message)));
            }
        }
        // Midway: kill the victim with SIGKILL while it works on a task.
        // (After the first completion when possible, but never so late that the victim
        // has no task left to be killed in: a loaded machine reorders the agents' work.)
        if !killed && (completed_before >= 1 || started.elapsed() > Duration::from_secs(4)) {
            let victim = crate::ops::agent::load(store, cell, VICTIM)?;
            let working = victim
                .note
                .as_deref()
                .is_some_and(|n| ["step 2", "step 3", "step 4"].iter().any(|s| n.contains(s)));
            if let (true, Some(task), Some(pid)) = (working, &victim.current_task, victim.pid) {
                process::kill_pid(pid)
                    .map_err(|e| Error::failure(format!("cannot kill {VICTIM}: {e}")))?;
                killed = true;
                say(stamp(&format!(
                    "{:<24} killed {VICTIM} (pid {pid}) with SIGKILL in the middle of {task} ({})",
                    "demo.kill",
                    victim.note.as_deref().unwrap_or("")
                )));
            }
        }
        status(format!(
            "[{:5.1}s] working: {completed_before} of {total_tasks} tasks completed",
            started.elapsed().as_secs_f64(),
        ));
        let cell_status =
            Cell::from_doc(&crate::store::read_required(store, cell, FileKey::Cell)?)?.status;
        if cell_status == CellStatus::Completed {
            // The status change is logged right after cell.json is written: narrate it too
            // (waiting at most 2 s for it).
            let since = *completed_at.get_or_insert_with(Instant::now);
            if completion_told || since.elapsed() > Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(300));
                return Ok(());
            }
        }
        if cell_status == CellStatus::Failed {
            return Err(Error::failure("the demo's cell failed").hint(format!(
                "look at {}",
                store.describe_log(cell, crate::store::LogFile::Mission)
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
