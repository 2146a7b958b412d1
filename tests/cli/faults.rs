//! Fault injection (issue 14: a change and its event are one unit).
//!
//! Each command that changes a cell runs under `strace -f -e inject=SYSCALL:error=E:when=N`
//! for N = 1, 2, 3, ... until the command no longer makes an Nth such call, every run in a
//! fresh copy of a root prepared by pas itself. After every run:
//! - `pas events verify` passes (it finishes a pending intent first, so none is left);
//! - every change on disk has its event, and every event its change;
//! - an exit 0 printed its result;
//! - a failure is one `pas: ` line on stderr (the hint rides on it) that says either that
//!   nothing was changed or that the change was made (committed), and the disk agrees.
//!
//! The system calls: `fsync`, `fdatasync`, `write` (ENOSPC; this includes the write of the
//! result to stdout), `openat`, and every rename call the command makes (a census run under
//! `strace -c` finds them: today `renameat` and `renameat2`; there is no plain `rename`).

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{tool_available, Root, Run};

/// Faults injected into the calls of these, one call per run (the rename calls are added by
/// the census, with [`RENAME_ERROR`]).
const FAULTS: &[(&str, &str)] = &[
    ("fsync", "EIO"),
    ("fdatasync", "EIO"),
    ("write", "ENOSPC"),
    ("openat", "EIO"),
];
/// The error injected into each rename system call the command makes.
const RENAME_ERROR: &str = "EIO";
/// What the census counts; `/^rename` is every rename call there is.
const CENSUS: &str = "trace=fsync,fdatasync,write,openat,/^rename";
/// No command makes more calls of one kind than this (openat: about 90); a sweep that still
/// injects there fails.
const MAX_CALLS: u32 = 150;
/// Seconds one run may take (a debug build under strace on a loaded machine takes about
/// 0.05); a run that takes longer is killed and fails the test.
const RUN_TIMEOUT: f64 = 30.0;
/// Runs (with what each broke) listed in a failure message at most.
const SHOWN: usize = 150;

/// What the sweeps need; `None` (skip) when strace is missing or cannot trace here.
fn strace_available() -> bool {
    tool_available(
        "strace",
        &["-f", "-o", "/dev/null", "true"],
        "the fault-injection tests run pas under `strace -e inject=`; install it \
         (apt-get install -y strace)",
    )
}

/// Runs `cmd` with `stdin` (or none) in a process group of its own; kills the group and
/// panics when it has not finished after [`RUN_TIMEOUT`] seconds.
fn run_bounded(mut cmd: Command, stdin: Option<&[u8]>, what: &str) -> Run {
    cmd.process_group(0)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A command that fails before reading its input closes the pipe: not our concern.
        let _ = pipe.write_all(bytes);
    }
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs_f64(RUN_TIMEOUT)) {
        Ok(out) => Run::from(out.unwrap_or_else(|e| panic!("{what}: {e}"))),
        Err(_) => {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            panic!("{what} did not finish in {RUN_TIMEOUT}s: killed (a hang)");
        }
    }
}

/// A fresh root holding a copy of `prepared`.
fn copy_of(prepared: &Root) -> Root {
    let root = Root::new();
    copy_dir(&prepared.path, &root.path);
    root
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let ft = entry.file_type().unwrap();
        if ft.is_dir() {
            std::fs::create_dir(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else if ft.is_file() {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
    // Directory times too: the ready index is stamped with tasks/'s.
    let mtime = std::fs::metadata(from).unwrap().modified().unwrap();
    std::fs::File::open(to)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
}

/// `pas events verify [CELL]` (every cell without one) must pass and leave no pending intent.
fn verify(root: &Root, cell: Option<&str>) -> Vec<String> {
    let mut args = vec!["events", "verify"];
    args.extend(cell);
    let run = run_bounded(root.cmd(&args), None, "pas events verify");
    let mut problems = Vec::new();
    if run.code != 0 {
        problems.push(format!(
            "`pas events verify {}` exits {}: {}",
            cell.unwrap_or_default(),
            run.code,
            one_line(&format!("{}{}", run.stdout, run.stderr))
        ));
    }
    if let Some(cell) = cell {
        let intent = root.cell_dir(cell).join(".pas/intent.json");
        if intent.exists() {
            problems.push(format!(
                "{} is still there after `pas events verify`",
                intent.display()
            ));
        }
    }
    problems
}

/// The cell's events, parsed (a line that does not parse is a problem).
fn events(root: &Root, cell: &str, problems: &mut Vec<String>) -> Vec<Value> {
    let path = root.cell_dir(cell).join("logs/events.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match serde_json::from_str::<Value>(line) {
            Ok(v) => out.push(v),
            Err(e) => problems.push(format!("events.jsonl line {} does not parse: {e}", i + 1)),
        }
    }
    out
}

/// A document under the root, parsed; `None` (and a problem) when it cannot be read.
fn doc(root: &Root, rel: &str, problems: &mut Vec<String>) -> Option<Value> {
    let path = root.path.join(rel);
    match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                problems.push(format!("{rel} does not parse: {e}"));
                None
            }
        },
        Err(e) => {
            problems.push(format!("{rel}: {e}"));
            None
        }
    }
}

/// The first lines of `text` joined, shortened, for a problem list.
fn one_line(text: &str) -> String {
    let joined = text.trim().lines().collect::<Vec<_>>().join(" | ");
    if joined.chars().count() > 300 {
        format!("{}...", joined.chars().take(300).collect::<String>())
    } else {
        joined
    }
}

/// What a failed command says about its change.
#[derive(Debug, PartialEq)]
enum Said {
    Nothing,
    Changed,
}

/// Words that say the change happened (on a failure after the change was made).
const CHANGED: &[&str] = &[
    "change was made",
    "change is committed",
    "was committed",
    "is committed",
    "was claimed",
    "was created",
    "was saved",
    "was recorded",
];

/// Reads a failure's stderr: one `pas: ` line (and at most a hint line) saying either
/// "nothing was changed" or that the change was made.
fn said(stderr: &str) -> Result<Said, String> {
    let lines: Vec<&str> = stderr.lines().collect();
    if lines.is_empty() || lines.len() > 2 || !lines[0].starts_with("pas: ") {
        return Err(format!(
            "stderr is not one `pas: ` line (and maybe a hint): {:?}",
            stderr
        ));
    }
    let text = stderr.to_lowercase();
    let nothing = text.contains("nothing was changed");
    let changed = CHANGED.iter().any(|w| text.contains(w));
    match (nothing, changed) {
        (true, false) => Ok(Said::Nothing),
        (false, true) => Ok(Said::Changed),
        (true, true) => Err(format!(
            "stderr says both that nothing was changed and that the change was made: {}",
            one_line(stderr)
        )),
        (false, false) => Err(format!(
            "stderr says neither \"nothing was changed\" nor that the change was made: {}",
            one_line(stderr)
        )),
    }
}

/// What a scenario found after one run.
struct Checked {
    /// The command's change is on disk (in part or whole).
    changed: bool,
    problems: Vec<String>,
}

/// One command swept over every fault.
struct Sweep<'a> {
    /// For messages: `task claim`.
    name: &'a str,
    /// Every run starts from a copy of this root.
    prepared: &'a Root,
    args: Vec<String>,
    stdin: Option<&'a [u8]>,
    /// Checks a run's root (after the run) and its output.
    check: &'a dyn Fn(&Root, &Run) -> Checked,
    /// The faults to inject, when not [`FAULTS`] (the rename calls are added either way).
    faults: Option<&'a [(&'a str, &'a str)]>,
}

impl Sweep<'_> {
    fn args(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }

    /// Runs the command once in a copy of the prepared root under `strace STRACE`; returns
    /// the injected call (if one was) and, when the run broke a rule, a report of it.
    fn once(
        &self,
        strace: &[String],
        log: &Path,
        what: &str,
        must_succeed: bool,
    ) -> (Option<String>, Option<String>) {
        let root = copy_of(self.prepared);
        let _ = std::fs::remove_file(log);
        let mut wrapper = vec!["strace", "-f", "-o", log.to_str().unwrap()];
        wrapper.extend(strace.iter().map(String::as_str));
        let mut cmd = root.cmd_via(&wrapper, &self.args());
        // cargo's library path only adds failed opens to the loader's search (pas needs
        // none of it), and so runs to the openat sweep.
        cmd.env_remove("LD_LIBRARY_PATH");
        let run = run_bounded(cmd, self.stdin, what);
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let injected = text.lines().find(|l| l.contains("(INJECTED)")).map(|l| {
            // Without the pid, and short.
            let call = l.split_once(' ').map_or(l, |(_, rest)| rest).trim();
            let call = call.split("= -1").next().unwrap_or(call).trim();
            one_line(call).chars().take(120).collect::<String>()
        });
        let mut problems = Vec::new();
        if must_succeed && run.code != 0 {
            problems.push(format!("exits {} without a fault", run.code));
        }
        if run.code == 127 && run.stderr.contains("error while loading shared libraries") {
            // The fault stopped the loader: pas never ran, so nothing may have changed.
            if root.snapshot() != self.prepared.snapshot() {
                problems.push("pas did not start, yet the root changed".to_string());
            }
        } else {
            let checked = (self.check)(&root, &run);
            problems.extend(checked.problems);
            if run.code != 0 {
                match said(&run.stderr) {
                    Ok(Said::Nothing) if checked.changed => problems.push(format!(
                        "stderr says nothing was changed, but the change is on disk: {}",
                        one_line(&run.stderr)
                    )),
                    Ok(Said::Changed) if !checked.changed => problems.push(format!(
                        "stderr says the change was made, but it is not on disk: {}",
                        one_line(&run.stderr)
                    )),
                    Ok(_) => {}
                    Err(p) => problems.push(p),
                }
            }
        }
        if problems.is_empty() {
            return (injected, None);
        }
        let root_path = root.path.display().to_string();
        let report = format!(
            "{what}: exit {}{}\n{}",
            run.code,
            injected
                .as_deref()
                .map(|c| format!(", failed {c}"))
                .unwrap_or_default(),
            problems
                .iter()
                .map(|p| format!("    - {}", p.replace(&root_path, "ROOT")))
                .collect::<Vec<_>>()
                .join("\n")
        );
        (injected, Some(report))
    }

    /// A census run (no fault; it must succeed and pass every check), then every fault at
    /// call 1, 2, 3, ... until the command no longer reaches that call.
    fn run(&self) {
        let started = Instant::now();
        let scratch = Root::new();
        let log = scratch.path.join("strace.log");
        let census = ["-c".to_string(), "-e".to_string(), CENSUS.to_string()];
        let what = format!("{} without a fault", self.name);
        if let (_, Some(report)) = self.once(&census, &log, &what, true) {
            panic!("the sweep cannot start:\n{report}");
        }
        let calls = census_calls(&std::fs::read_to_string(&log).unwrap_or_default());
        let mut faults: Vec<(String, &str)> = self
            .faults
            .unwrap_or(FAULTS)
            .iter()
            .map(|(s, e)| (s.to_string(), *e))
            .collect();
        for (name, _) in &calls {
            if name.starts_with("rename") {
                faults.push((name.clone(), RENAME_ERROR));
            }
        }

        let mut reports = Vec::new();
        let mut runs = 1;
        let mut reached = Vec::new();
        for (syscall, error) in &faults {
            let mut n = 1;
            loop {
                if n > MAX_CALLS {
                    reports.push(format!(
                        "{syscall}: still injecting at call {MAX_CALLS}, where the sweep stops"
                    ));
                    break;
                }
                let what = format!("{syscall}:error={error}:when={n}");
                let strace = [
                    "-e".to_string(),
                    format!("trace={syscall}"),
                    "-e".to_string(),
                    format!("inject={what}"),
                ];
                let (injected, report) = self.once(&strace, &log, &what, false);
                runs += 1;
                reports.extend(report);
                if injected.is_none() {
                    break;
                }
                n += 1;
            }
            reached.push(format!("{syscall} x{}", n - 1));
        }
        println!(
            "{}: {runs} runs in {:.1}s ({}); census {:?}",
            self.name,
            started.elapsed().as_secs_f64(),
            reached.join(", "),
            calls
        );
        if !reports.is_empty() {
            let more = reports.len().saturating_sub(SHOWN);
            panic!(
                "{}: {} of {runs} runs broke a rule (pas {}):\n{}{}",
                self.name,
                reports.len(),
                self.args.join(" "),
                reports[..reports.len().min(SHOWN)].join("\n"),
                if more > 0 {
                    format!("\n... and {more} more")
                } else {
                    String::new()
                }
            );
        }
    }
}

/// The calls counted by `strace -c`: (syscall, calls).
fn census_calls(summary: &str) -> Vec<(String, u64)> {
    summary
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let name = *fields.last()?;
            let calls = fields.get(3)?.parse().ok()?;
            (fields.len() >= 5 && name != "total").then(|| (name.to_string(), calls))
        })
        .collect()
}

fn task_claimed(task: &Value) -> bool {
    task["claimed_by"].is_string()
        || matches!(task["status"].as_str(), Some("in_progress" | "claimed"))
}

#[test]
fn task_claim_under_injected_faults() {
    claim_sweep("task claim", false);
}

/// The claim from a ready index (kept by `pas task reindex`): its entry removal and head
/// write are in the claim's commit, so a fault leaves task, agent, events and index in
/// step, or the index stale (rebuilt by the next claim), never wrong. After every run the
/// cell validates and the rest of the queue is claimed, each task once.
#[test]
fn task_claim_from_the_ready_index_under_injected_faults() {
    claim_sweep("task claim from the ready index", true);
}

fn claim_sweep(name: &str, indexed: bool) {
    if !strace_available() {
        return;
    }
    let prepared = Root::new();
    let cell = prepared.cell("Claims");
    prepared.ok(&["agent", "add", &cell, "a1"]);
    for t in ["t1", "t2", "t3"] {
        prepared.ok(&["task", "add", &cell, t, "--title", &format!("task {t}")]);
    }
    if indexed {
        prepared.ok(&["task", "reindex", &cell]);
    }
    let check = |root: &Root, run: &Run| {
        let mut problems = verify(root, Some(&cell));
        if indexed {
            problems.extend(rest_of_the_queue(root, &cell));
        }
        let mut on_disk = BTreeSet::new();
        for t in ["t1", "t2", "t3"] {
            if let Some(task) = doc(root, &format!("{cell}/tasks/{t}.json"), &mut problems) {
                if task_claimed(&task) {
                    on_disk.insert(t.to_string());
                }
            }
        }
        let logged: BTreeSet<String> = events(root, &cell, &mut problems)
            .iter()
            .filter(|e| e["kind"] == "task.claimed")
            .map(|e| e["task"].as_str().unwrap_or("?").to_string())
            .collect();
        if on_disk != logged {
            problems.push(format!(
                "claimed on disk: {on_disk:?}; task.claimed events for: {logged:?}"
            ));
        }
        if on_disk.len() > 1 {
            problems.push(format!("one claim claimed {on_disk:?}"));
        }
        if let Some(agent) = doc(root, &format!("{cell}/agents/a1.json"), &mut problems) {
            let current = agent["current_task"].as_str();
            if current != on_disk.first().map(String::as_str) {
                problems.push(format!(
                    "a1's current_task is {current:?}; claimed on disk: {on_disk:?}"
                ));
            }
        }
        if run.code == 0
            && (on_disk.len() != 1
                || Some(run.stdout.trim()) != on_disk.first().map(String::as_str))
        {
            problems.push(format!(
                "exit 0 printed {:?}; claimed on disk: {on_disk:?}",
                run.stdout
            ));
        }
        Checked {
            changed: !on_disk.is_empty() || !logged.is_empty(),
            problems,
        }
    };
    Sweep {
        name,
        prepared: &prepared,
        args: vec![
            "task".into(),
            "claim".into(),
            cell.clone(),
            "--agent".into(),
            "a1".into(),
        ],
        stdin: None,
        check: &check,
        // The index's calls: entries go with unlinkat, the head with a rename, both synced.
        faults: indexed.then_some(&[("unlinkat", "EIO"), ("fsync", "EIO")][..]),
    }
    .run();
}

/// What is wrong after a faulty claim, seen by `pas validate --strict` and by claiming what
/// is left in a copy of the root: every task must end up claimed exactly once.
fn rest_of_the_queue(root: &Root, cell: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let after = copy_of(root);
    let run = run_bounded(
        after.cmd(&["validate", "--strict", cell]),
        None,
        "pas validate",
    );
    if run.code != 0 {
        problems.push(format!("validate --strict: {}", one_line(&run.stdout)));
    }
    for _ in 0..4 {
        let run = run_bounded(
            after.cmd(&["task", "claim", cell, "--agent", "a1"]),
            None,
            "a later claim",
        );
        if run.code == 7 {
            break;
        }
        if run.code != 0 {
            problems.push(format!(
                "a later claim exits {}: {}",
                run.code,
                one_line(&run.stderr)
            ));
            break;
        }
    }
    let claimed: Vec<String> = events(&after, cell, &mut problems)
        .iter()
        .filter(|e| e["kind"] == "task.claimed")
        .map(|e| e["task"].as_str().unwrap_or("?").to_string())
        .collect();
    let mut sorted = claimed.clone();
    sorted.sort();
    if sorted != ["t1", "t2", "t3"] {
        problems.push(format!("claims of the whole queue, in order: {claimed:?}"));
    }
    problems
}

#[test]
fn cell_create_under_injected_faults() {
    if !strace_available() {
        return;
    }
    let prepared = Root::new();
    prepared.cell("Other");
    let id = uuid::Uuid::new_v4().to_string();
    let name = "Faulty";
    let args = ["cell", "create", "--name", name, "--id", &id];
    // The cell `id` exists complete: cell.json names it and its log has one creation event.
    let complete = |root: &Root, problems: &mut Vec<String>| -> bool {
        let mut found = Vec::new();
        let ok = match doc(root, &format!("{id}/cell.json"), &mut found) {
            Some(cell) if cell["cell_id"] == id.as_str() && cell["mission_name"] == name => {
                let created = events(root, &id, &mut found)
                    .iter()
                    .filter(|e| e["kind"] == "cell.created")
                    .count();
                if created != 1 {
                    found.push(format!("{created} cell.created events in its log"));
                }
                found.is_empty()
            }
            Some(cell) => {
                found.push(format!("cell.json is another cell's: {cell}"));
                false
            }
            None => false,
        };
        problems.extend(found.into_iter().map(|p| format!("cell {id}: {p}")));
        ok
    };
    let check = |root: &Root, run: &Run| {
        let exists = root.cell_dir(&id).exists();
        let mut problems = verify(root, exists.then_some(id.as_str()));
        let mut incomplete = Vec::new();
        let whole = exists && complete(root, &mut incomplete);
        if run.code == 0 {
            if run.stdout.trim() != id {
                problems.push(format!("exit 0 printed {:?}, not the id", run.stdout));
            }
            if !whole {
                problems.push(format!(
                    "exit 0, but the cell is not complete: {incomplete:?}"
                ));
            }
        } else if exists && !whole {
            problems.push(format!(
                "the failure left the cell directory incomplete: {incomplete:?}"
            ));
        }
        // The same command again finishes the job (or finds it done), without a duplicate.
        let again = run_bounded(root.cmd(&args), None, "the retry");
        if again.code != 0 || again.stdout.trim() != id {
            problems.push(format!(
                "the retry exits {} and prints {:?}: {}",
                again.code,
                again.stdout,
                one_line(&again.stderr)
            ));
        }
        let named: Vec<String> = std::fs::read_dir(&root.path)
            .unwrap()
            .filter_map(|e| {
                let path = e.ok()?.path().join("cell.json");
                let cell: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
                (cell["mission_name"] == name).then(|| cell["cell_id"].to_string())
            })
            .collect();
        if named.len() != 1 {
            problems.push(format!("after the retry, cells named {name:?}: {named:?}"));
        }
        let mut after_retry = Vec::new();
        if !complete(root, &mut after_retry) {
            problems.push(format!("after the retry: {after_retry:?}"));
        }
        problems.extend(
            verify(root, Some(&id))
                .into_iter()
                .map(|p| format!("after the retry: {p}")),
        );
        Checked {
            changed: exists,
            problems,
        }
    };
    Sweep {
        name: "cell create",
        prepared: &prepared,
        args: args.iter().map(|a| a.to_string()).collect(),
        stdin: None,
        check: &check,
        faults: None,
    }
    .run();
}

#[test]
fn checkpoint_save_under_injected_faults() {
    if !strace_available() {
        return;
    }
    let prepared = Root::new();
    let cell = prepared.cell("Saves");
    prepared.ok(&["agent", "add", &cell, "a1"]);
    // Generation 1 is there; the sweep saves generation 2.
    assert_eq!(prepared.ok(&["checkpoint", "save", &cell, "a1"]), "1");
    let check = |root: &Root, run: &Run| {
        let mut problems = verify(root, Some(&cell));
        let generation = doc(root, &format!("{cell}/agents/a1.json"), &mut problems)
            .and_then(|a| a["checkpoint"]["generation"].as_u64())
            .unwrap_or(0);
        let logged: BTreeSet<u64> = events(root, &cell, &mut problems)
            .iter()
            .filter(|e| e["kind"] == "checkpoint.saved" && e["agent"] == "a1")
            .filter_map(|e| e["details"]["generation"].as_u64())
            .collect();
        if generation > 0 && !logged.contains(&generation) {
            problems.push(format!(
                "a1 is at checkpoint generation {generation}; checkpoint.saved events for {logged:?}"
            ));
        }
        if logged.last().copied().unwrap_or(0) > generation {
            problems.push(format!(
                "checkpoint.saved events for {logged:?}; a1 is at generation {generation}"
            ));
        }
        let manifest = root
            .cell_dir(&cell)
            .join(format!("checkpoints/a1/history/{generation}/manifest.json"));
        if generation > 0 && !manifest.is_file() {
            problems.push(format!(
                "a1 is at generation {generation}, but {} is missing",
                manifest.display()
            ));
        }
        if run.code == 0 && (generation != 2 || run.stdout.trim() != "2") {
            problems.push(format!(
                "exit 0 printed {:?} (expected \"2\"); a1 is at generation {generation}",
                run.stdout
            ));
        }
        Checked {
            changed: generation == 2 || logged.contains(&2),
            problems,
        }
    };
    Sweep {
        name: "checkpoint save",
        prepared: &prepared,
        args: vec![
            "checkpoint".into(),
            "save".into(),
            cell.clone(),
            "a1".into(),
            "--state".into(),
            "-".into(),
        ],
        stdin: Some(b"{\"step\": 2}\n"),
        check: &check,
        faults: None,
    }
    .run();
}

#[test]
fn first_beat_under_injected_faults() {
    if !strace_available() {
        return;
    }
    let prepared = Root::new();
    let cell = prepared.cell("Beats");
    prepared.ok(&["agent", "add", &cell, "a1"]);
    let check = |root: &Root, run: &Run| {
        let mut problems = verify(root, Some(&cell));
        let beat = doc(root, &format!("{cell}/agents/a1.json"), &mut problems).is_some_and(|a| {
            a["heartbeat_count"].as_u64().unwrap_or(0) > 0 || a["last_heartbeat"].is_string()
        });
        // heartbeat.rs: the first beat of an agent logs `agent.alive`.
        let alive = events(root, &cell, &mut problems)
            .iter()
            .filter(|e| e["kind"] == "agent.alive" && e["agent"] == "a1")
            .count();
        if beat != (alive == 1) || alive > 1 {
            problems.push(format!(
                "a1 {} beat on disk; {alive} agent.alive events",
                if beat { "shows a" } else { "shows no" }
            ));
        }
        if run.code == 0 {
            let reply: Option<Value> = serde_json::from_str(&run.stdout).ok();
            let ok = reply
                .as_ref()
                .is_some_and(|r| r["ack"] == true && r["heartbeat_count"] == 1);
            if !ok || !beat {
                problems.push(format!(
                    "exit 0 printed {:?}; a1 shows {} beat",
                    run.stdout,
                    if beat { "the" } else { "no" }
                ));
            }
        }
        Checked {
            changed: beat || alive > 0,
            problems,
        }
    };
    Sweep {
        name: "first agent beat",
        prepared: &prepared,
        args: vec![
            "agent".into(),
            "beat".into(),
            cell.clone(),
            "a1".into(),
            "--json".into(),
        ],
        stdin: None,
        check: &check,
        faults: None,
    }
    .run();
}

#[test]
fn a_claim_whose_id_cannot_be_printed_fails_and_says_it_claimed() {
    let root = Root::new();
    let cell = root.cell("Full");
    root.ok(&["agent", "add", &cell, "a1"]);
    root.ok(&["task", "add", &cell, "t1", "--title", "the only task"]);
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut cmd = root.cmd(&["task", "claim", &cell, "--agent", "a1"]);
    cmd.stdout(full);
    let run = Run::from(cmd.output().unwrap());
    assert_ne!(
        run.code, 0,
        "the claim exits 0 though its id could not be printed; stderr: {:?}",
        run.stderr
    );
    assert_eq!(
        said(&run.stderr),
        Ok(Said::Changed),
        "stderr: {:?}",
        run.stderr
    );
    assert!(
        run.stderr.contains("t1") && run.stderr.contains("claimed"),
        "stderr names the claimed task: {:?}",
        run.stderr
    );
    let task = root.read_json(format!("{cell}/tasks/t1.json"));
    assert!(task_claimed(&task), "t1 is claimed on disk: {task}");
    assert_eq!(
        root.event_kinds(&cell).last().map(String::as_str),
        Some("task.claimed")
    );
    assert_eq!(verify(&root, Some(&cell)), Vec::<String>::new());
}
