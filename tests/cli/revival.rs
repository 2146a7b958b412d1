//! Revival end to end. Real processes where the effect needs one: kill -9 and a revival
//! from the checkpoint, a hung process stopped and restarted, racing revivers, the watch.
//! Where only the applying of a rule is at stake, the death is written straight into the
//! agent file (as its supervisor would have) and one `pas revive` pass runs: nothing to
//! wait for. The rules themselves are table-tested in `src/ops/revive.rs`.

use std::process::{Child, Stdio};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::harness::{supervisors_of, wait_until, Root};

/// An agent that counts, checkpoints the count and beats; it resumes from its checkpoint.
const COUNTER: &str = r#"n=0
if [ -n "$PAS_CHECKPOINT" ] && [ -f "$PAS_CHECKPOINT/state.json" ]; then n=$(sed 's/[^0-9]//g' "$PAS_CHECKPOINT/state.json"); fi
echo "starting at $n"
while true; do
  n=$((n+1))
  echo "{\"n\": $n}" | pas checkpoint save --state - >/dev/null
  pas agent beat --note "n=$n" >/dev/null
  sleep 0.2
done"#;

fn quick_policies(root: &Root, cell: &str, extra: Value) {
    let mut p = json!({"restart_delay_seconds": 0, "heartbeat_interval": 1, "startup_grace": 5, "stop_grace": 1, "storm_limit": 0});
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    root.policies(cell, p);
}

/// A `pas watch` whose output goes to files in the root (`.watch.out`, `.watch.err`):
/// a pipe nobody reads would fill (the sweep of stale groups left by other runs on the
/// host may say a lot) and stop the watch in its next write.
fn spawn_watch(root: &Root) -> Child {
    let file = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.path.join(name))
            .unwrap()
    };
    root.cmd(&["--json", "watch", "--interval", "1"])
        .stdout(file(".watch.out"))
        .stderr(file(".watch.err"))
        .spawn()
        .unwrap()
}

fn stop(child: &mut Child) -> std::process::ExitStatus {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    child.wait().unwrap()
}

fn pid_of(root: &Root, cell: &str, agent: &str) -> Option<i64> {
    root.agent(cell, agent)["pid"].as_i64()
}

fn kill9(pid: i64) {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
}

fn stop_agents(root: &Root, cell: &str) {
    for a in root.json(&["agent", "list", cell]).as_array().unwrap() {
        let _ = root.run(&[
            "agent",
            "stop",
            cell,
            a["id"].as_str().unwrap(),
            "--grace",
            "1",
        ]);
    }
}

/// Rewrites an agent's file by hand, as another program may (no pas process runs on it).
fn edit_agent(root: &Root, cell: &str, agent: &str, edit: impl FnOnce(&mut Value)) {
    let path = root.cell_dir(cell).join(format!("agents/{agent}.json"));
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut doc);
    std::fs::write(&path, doc.to_string()).unwrap();
}

/// The time `secs` seconds ago, as pas writes it.
fn ago(secs: f64) -> String {
    (Utc::now() - chrono::Duration::milliseconds((secs * 1000.0) as i64))
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// An `exit` record: the process ended with `code`, `secs` seconds ago.
fn exited(code: i64, secs: f64) -> Value {
    json!({"at": ago(secs), "cause": "exit", "code": code, "signal": null, "requested": false})
}

/// Adds an agent running `command` whose process has ended as `exit` says, written into
/// its file as its supervisor would have left it: active, no pid, the end recorded.
fn died(root: &Root, cell: &str, agent: &str, command: &str, exit: Value) {
    root.ok(&["agent", "add", cell, agent, "--", command]);
    edit_agent(root, cell, agent, |d| {
        d["status"] = json!("active");
        d["pid"] = Value::Null;
        d["started_at"] = json!(ago(2.0));
        d["restart_count"] = json!(0);
        d["exit"] = exit;
    });
}

/// The actions of a `pas --json revive` run, by kind.
fn actions(out: &Value) -> Vec<&str> {
    out["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect()
}

fn count(kinds: &[String], kind: &str) -> usize {
    kinds.iter().filter(|k| *k == kind).count()
}

/// A cell named `name` whose agent `a1` (a [`COUNTER`]) was started and has beaten three
/// times.
fn beating_counter(name: &str) -> (Root, String) {
    let root = Root::new();
    let cell = root.cell(name);
    quick_policies(&root, &cell, json!({}));
    let counter = root.script("counter.sh", COUNTER);
    root.ok(&["agent", "add", &cell, "a1", "--", &counter]);
    root.ok(&["agent", "start", &cell, "a1"]);
    wait_until(10.0, "three beats", || {
        root.agent(&cell, "a1")["heartbeat_count"]
            .as_u64()
            .unwrap_or(0)
            >= 3
    });
    (root, cell)
}

/// The parent of process `pid`.
fn parent_of(pid: i64) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|p| p.trim().parse().ok())
}

/// The events of a cell, parsed.
fn events(root: &Root, cell: &str) -> Vec<Value> {
    std::fs::read_to_string(root.cell_dir(cell).join("logs/events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn its_supervisor_revives_a_killed_agent_in_place_without_the_watch() {
    let (root, cell) = beating_counter("InPlace");
    let before = root.agent(&cell, "a1");
    let first = before["pid"].as_i64().unwrap();
    let supervisor = before["supervisor_pid"].as_i64().unwrap();
    kill9(first);
    wait_until(10.0, "a new pid", || {
        pid_of(&root, &cell, "a1").is_some_and(|p| p != first)
    });
    let doc = root.agent(&cell, "a1");
    let second = doc["pid"].as_i64().unwrap();
    // The same supervisor restarted it: no new supervisor process, the agent its child.
    assert_eq!(doc["supervisor_pid"].as_i64(), Some(supervisor));
    assert_eq!(supervisors_of(&root, &cell, "a1"), vec![supervisor]);
    assert_eq!(parent_of(second), Some(supervisor));
    assert_eq!(doc["restart_count"], 1);
    assert_eq!(doc["runs"], 2);
    assert_eq!(doc["exit"]["signal"], 9);
    assert!(doc["revival"]["started_at"].is_string(), "{doc}");
    // The death, then the start and the revival, as a pass records them.
    let kinds = root.event_kinds(&cell);
    let at = |k: &str| kinds.iter().rposition(|x| x == k).unwrap();
    assert!(at("agent.exited") < at("agent.started"), "{kinds:?}");
    assert!(at("agent.started") < at("agent.revived"), "{kinds:?}");
    let revived = events(&root, &cell)
        .into_iter()
        .rfind(|e| e["kind"] == "agent.revived")
        .unwrap();
    assert_eq!(revived["details"]["pid"], second);
    assert_eq!(revived["details"]["attempt"], 1);
    assert!(revived["details"]["generation"].is_u64(), "{revived}");
    wait_until(10.0, "the revived agent's output", || {
        let log = std::fs::read_to_string(root.cell_dir(&cell).join("logs/a1.log")).unwrap();
        log.lines().filter(|l| l.contains("| starting at ")).count() == 2
    });
    let log = std::fs::read_to_string(root.cell_dir(&cell).join("logs/a1.log")).unwrap();
    let resumed = log
        .lines()
        .filter_map(|l| l.split_once("| starting at "))
        .next_back()
        .unwrap()
        .1;
    assert!(
        resumed.trim().parse::<u64>().unwrap() >= 3,
        "from its checkpoint: {log}"
    );
    stop_agents(&root, &cell);
    wait_until(10.0, "the supervisor to end with its stopped agent", || {
        supervisors_of(&root, &cell, "a1").is_empty()
    });
}

#[test]
fn its_supervisor_keeps_the_backoff_and_max_restarts_without_the_watch() {
    let root = Root::new();
    let cell = root.cell("Budgeted");
    quick_policies(
        &root,
        &cell,
        json!({"restart_delay_seconds": 0.2, "backoff_multiplier": 2, "max_restarts": 2, "checkpoint_required": false}),
    );
    let dies = root.script("dies.sh", "exit 1");
    root.ok(&["agent", "add", &cell, "a1", "--", &dies]);
    root.ok(&["agent", "start", &cell, "a1"]);
    // The event is appended after the file is replaced: wait for the event.
    wait_until(10.0, "the agent to fail for good", || {
        count(&root.event_kinds(&cell), "agent.failed") == 1
    });
    let doc = root.agent(&cell, "a1");
    assert_eq!(doc["status"], "failed");
    assert_eq!(doc["restart_count"], 2);
    assert_eq!(doc["runs"], 3);
    let all = events(&root, &cell);
    let kinds: Vec<&str> = all.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "agent.revived").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "agent.failed").count(),
        1,
        "{kinds:?}"
    );
    // Each restart came no earlier than its backoff after the death before it (0.2 s,
    // then 0.4 s): a lower bound the rules guarantee, not a measure of speed.
    let time =
        |e: &Value| chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap()).unwrap();
    let mut last_exit = None;
    let mut delays = Vec::new();
    for e in &all {
        match e["kind"].as_str().unwrap() {
            "agent.exited" => last_exit = Some(time(e)),
            "agent.revived" => delays.push((time(e) - last_exit.unwrap()).num_milliseconds()),
            _ => {}
        }
    }
    assert_eq!(delays.len(), 2);
    assert!(delays[0] >= 200 && delays[1] >= 400, "{delays:?}");
    wait_until(10.0, "its supervisor to end", || {
        supervisors_of(&root, &cell, "a1").is_empty()
    });
}

#[test]
fn the_watch_revives_an_agent_whose_supervisor_was_killed_too() {
    let root = Root::new();
    let cell = root.cell("Orphan");
    quick_policies(&root, &cell, json!({"checkpoint_required": false}));
    let sleeper = root.script("sleeper.sh", "exec sleep 30");
    root.ok(&["agent", "add", &cell, "a1", "--", &sleeper]);
    root.ok(&["agent", "start", &cell, "a1"]);
    let before = root.agent(&cell, "a1");
    let (first, supervisor) = (
        before["pid"].as_i64().unwrap(),
        before["supervisor_pid"].as_i64().unwrap(),
    );
    let mut watch = spawn_watch(&root);
    kill9(supervisor);
    kill9(first);
    wait_until(10.0, "a new pid", || {
        pid_of(&root, &cell, "a1").is_some_and(|p| p != first)
    });
    let doc = root.agent(&cell, "a1");
    let second = doc["pid"].as_i64().unwrap();
    let new_supervisor = doc["supervisor_pid"].as_i64().unwrap();
    assert_ne!(new_supervisor, supervisor);
    assert_eq!(parent_of(second), Some(new_supervisor));
    assert_eq!(supervisors_of(&root, &cell, "a1"), vec![new_supervisor]);
    assert_eq!(doc["restart_count"], 1);
    assert_eq!(doc["exit"]["cause"], "vanished");
    assert!(stop(&mut watch).success());
    stop_agents(&root, &cell);
}

#[test]
fn a_stop_or_a_pause_during_a_pending_restart_wins() {
    let root = Root::new();
    let cell = root.cell("Pending");
    quick_policies(
        &root,
        &cell,
        json!({"restart_delay_seconds": 30, "checkpoint_required": false}),
    );
    let sleeper = root.script("sleeper.sh", "exec sleep 30");
    for (agent, how) in [("a1", "stop"), ("a2", "pause")] {
        root.ok(&["agent", "add", &cell, agent, "--", &sleeper]);
        root.ok(&["agent", "start", &cell, agent]);
        let supervisor = root.agent(&cell, agent)["supervisor_pid"].as_i64().unwrap();
        kill9(pid_of(&root, &cell, agent).unwrap());
        // Its supervisor records the death and waits out the backoff.
        wait_until(10.0, "the backoff written down", || {
            !root.agent(&cell, agent)["next_restart_at"].is_null()
        });
        assert_eq!(supervisors_of(&root, &cell, agent), vec![supervisor]);
        match how {
            "stop" => root.ok(&["agent", "stop", &cell, agent]),
            _ => root.ok(&["agent", "set", &cell, agent, "--status", "paused"]),
        };
        wait_until(10.0, "the waiting supervisor to give up", || {
            supervisors_of(&root, &cell, agent).is_empty()
        });
        let doc = root.agent(&cell, agent);
        assert!(doc["pid"].is_null(), "{doc}");
        assert_eq!(doc["restart_count"], 0);
        assert_eq!(doc["status"], if how == "stop" { "idle" } else { "paused" });
    }
    assert_eq!(count(&root.event_kinds(&cell), "agent.revived"), 0);
}

#[test]
fn watch_revives_a_killed_agent_from_its_checkpoint() {
    let (root, cell) = beating_counter("Lazarus");
    let mut watch = spawn_watch(&root);
    let first = pid_of(&root, &cell, "a1").unwrap();
    kill9(first);
    wait_until(15.0, "the revival to succeed", || {
        root.event_kinds(&cell)
            .contains(&"agent.revival_succeeded".to_string())
    });
    assert!(stop(&mut watch).success(), "watch exits 0 on SIGTERM");
    let doc = root.agent(&cell, "a1");
    assert_ne!(doc["pid"].as_i64(), Some(first));
    assert_eq!(doc["restart_count"], 1);
    let log = std::fs::read_to_string(root.cell_dir(&cell).join("logs/a1.log")).unwrap();
    let starts: Vec<u64> = log
        .lines()
        .filter_map(|l| l.split_once(" | ")?.1.strip_prefix("starting at "))
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(starts.len(), 2, "{log}");
    assert_eq!(starts[0], 0);
    assert!(
        starts[1] >= 3,
        "the revived agent continues from its checkpoint, not from zero: {starts:?}"
    );
    let kinds = root.event_kinds(&cell);
    let exited = kinds.iter().position(|k| k == "agent.exited").unwrap();
    let revived = kinds.iter().position(|k| k == "agent.revived").unwrap();
    assert!(exited < revived);
    stop_agents(&root, &cell);
}

#[test]
fn a_hung_agent_is_stopped_and_restarted_in_one_pass() {
    let root = Root::new();
    let cell = root.cell("Hung");
    quick_policies(
        &root,
        &cell,
        json!({"heartbeat_interval": 0.2, "startup_grace": 2}),
    );
    let hung = root.script(
        "hung.sh",
        "pas checkpoint save >/dev/null; pas agent beat >/dev/null; echo beat once; exec sleep 300",
    );
    root.ok(&["agent", "add", &cell, "a1", "--", &hung]);
    root.ok(&["agent", "start", &cell, "a1"]);
    wait_until(10.0, "the first beat", || {
        root.agent(&cell, "a1")["heartbeat_count"] == 1
    });
    // Passes do nothing while it is late or down; once it is silent past the ttl (3 x 0.2
    // s) while its process runs, one pass stops it and restarts it.
    let mut out = Value::Null;
    wait_until(15.0, "a pass that stops the hung agent", || {
        out = root.json(&["revive", &cell]);
        actions(&out).contains(&"stopped_hung")
    });
    // The pass stops it; its supervisor sees the death and restarts it in place.
    wait_until(10.0, "the restart by its supervisor", || {
        root.agent(&cell, "a1")["restart_count"] == 1 && !root.agent(&cell, "a1")["pid"].is_null()
    });
    let doc = root.agent(&cell, "a1");
    assert_eq!(doc["exit"]["cause"], "watchdog");
    assert_eq!(count(&root.event_kinds(&cell), "agent.revived"), 1);
    stop_agents(&root, &cell);
}

#[test]
fn two_racing_revivers_restart_a_dead_agent_exactly_once() {
    let root = Root::new();
    let cell = root.cell("Race");
    quick_policies(&root, &cell, json!({}));
    let counter = root.script("counter.sh", COUNTER);
    root.ok(&["agent", "add", &cell, "a1", "--", &counter]);
    root.ok(&["agent", "start", &cell, "a1"]);
    wait_until(10.0, "a checkpoint", || {
        !root.agent(&cell, "a1")["checkpoint"].is_null()
    });
    // Its supervisor would restart it in place; killed first, it leaves an orphan whose
    // death nobody saw, which only the revivers' own path handles.
    let supervisor = root.agent(&cell, "a1")["supervisor_pid"].as_i64().unwrap();
    kill9(supervisor);
    let pid = pid_of(&root, &cell, "a1").unwrap();
    kill9(pid);
    wait_until(10.0, "the orphan to be gone", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::path::Path::new(&format!("/proc/{supervisor}")).exists()
    });
    let racers: Vec<Child> = (0..4)
        .map(|_| {
            root.cmd(&["revive", &cell])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut r in racers {
        assert!(r.wait().unwrap().success());
    }
    assert_eq!(root.agent(&cell, "a1")["restart_count"], 1);
    assert_eq!(
        root.event_kinds(&cell)
            .iter()
            .filter(|k| *k == "agent.revived")
            .count(),
        1
    );
    assert_eq!(
        supervisors_of(&root, &cell, "a1").len(),
        1,
        "one supervisor"
    );
    stop_agents(&root, &cell);
}

#[test]
fn a_backoff_is_written_down_shown_and_doubled() {
    let root = Root::new();
    let cell = root.cell("Backoff");
    quick_policies(
        &root,
        &cell,
        json!({"restart_delay_seconds": 5, "backoff_multiplier": 2, "max_restart_delay_seconds": 60, "checkpoint_required": false}),
    );
    let dies = root.script("dies.sh", "exit 1");
    died(&root, &cell, "a1", &dies, exited(1, 1.0));
    let delay_of = |doc: &Value| {
        let at = chrono::DateTime::parse_from_rfc3339(doc["exit"]["at"].as_str().unwrap()).unwrap();
        let next =
            chrono::DateTime::parse_from_rfc3339(doc["next_restart_at"].as_str().unwrap()).unwrap();
        (next - at).num_milliseconds()
    };
    let out = root.json(&["revive", &cell]);
    assert_eq!(actions(&out), ["backing_off"], "{out}");
    assert_eq!(delay_of(&root.agent(&cell, "a1")), 5000);
    // `pas status` says when, and which schedule it follows, so nobody has to compute it.
    let status = root.json(&["status", &cell]);
    let view = &status["cells"][0]["agents"][0];
    assert_eq!(
        view["next_restart_at"],
        root.agent(&cell, "a1")["next_restart_at"]
    );
    assert_eq!(
        view["backoff_schedule"],
        json!([5.0, 10.0, 20.0, 40.0, 60.0])
    );
    assert_eq!(view["restart_count"], 0);
    assert!(root.ok(&["status", &cell]).contains("backoff"));
    // Restarted once, it died again: the old plan is dropped and the wait doubles.
    edit_agent(&root, &cell, "a1", |d| {
        d["restart_count"] = json!(1);
        d["restart_attempts"] = json!(1);
        d["exit"] = exited(1, 0.5);
    });
    let out = root.json(&["revive", &cell]);
    assert_eq!(actions(&out), ["backing_off"], "{out}");
    assert_eq!(
        delay_of(&root.agent(&cell, "a1")),
        10000,
        "the second restart waits twice as long"
    );
    assert_eq!(count(&root.event_kinds(&cell), "agent.revived"), 0);
}

#[test]
fn max_restarts_then_failed_and_the_tasks_go_to_a_substitute() {
    let root = Root::new();
    let cell = root.cell("Max");
    quick_policies(
        &root,
        &cell,
        json!({"max_restarts": 2, "checkpoint_required": false, "substitute_agents": ["spare"]}),
    );
    let dies = root.script("dies.sh", "exit 2");
    died(&root, &cell, "a1", &dies, exited(2, 0.5));
    edit_agent(&root, &cell, "a1", |d| {
        d["restart_count"] = json!(2);
        d["restart_attempts"] = json!(2);
    });
    root.ok(&["agent", "add", &cell, "spare"]);
    root.ok(&["agent", "beat", &cell, "spare"]);
    root.ok(&["task", "add", &cell, "t1", "--title", "work"]);
    assert_eq!(
        root.run(&["--as", "a1", "task", "claim", &cell])
            .stdout
            .trim(),
        "t1"
    );
    let out = root.json(&["revive", &cell]);
    assert_eq!(actions(&out), ["failed"], "{out}");
    let doc = root.agent(&cell, "a1");
    assert_eq!(doc["status"], "failed");
    assert_eq!(doc["restart_count"], 2, "no restart past max_restarts");
    assert!(
        doc["failed_reason"]
            .as_str()
            .unwrap()
            .contains("max_restarts is 2"),
        "{doc}"
    );
    let task = root.read_json(format!("{cell}/tasks/t1.json"));
    assert_eq!(
        (task["assigned_to"].as_str(), task["claimed_by"].as_str()),
        (Some("spare"), Some("spare"))
    );
    assert_eq!(root.agent(&cell, "spare")["current_task"], "t1");
    let kinds = root.event_kinds(&cell);
    assert!(
        kinds.contains(&"agent.failed".to_string()) && kinds.contains(&"task.handoff".to_string()),
        "{kinds:?}"
    );
    assert_eq!(root.run(&["check", &cell]).code, 2);
}

#[test]
fn restart_policy_decides_after_a_clean_exit() {
    let root = Root::new();
    let cell = root.cell("Policy");
    quick_policies(&root, &cell, json!({"checkpoint_required": false}));
    let clean = root.script("clean.sh", "exit 0");
    let dies = root.script("dies.sh", "exit 1");
    let agents = [
        ("on_failure", &clean, 0, json!({})),
        ("always", &clean, 0, json!({"restart_policy": "always"})),
        ("never", &clean, 0, json!({"restart_policy": "never"})),
        ("never_fails", &dies, 1, json!({"restart_policy": "never"})),
        // An exit code listed as "do not restart" wins over everything.
        (
            "listed",
            &clean,
            0,
            json!({"restart_policy": "always", "no_restart_exit_codes": [0]}),
        ),
    ];
    // What restarts must stay up: its supervisor restarts in place what dies again.
    let sleeper = root.script("sleeper.sh", "exec sleep 30");
    let agents = agents.map(|(a, command, code, policies)| match a {
        "always" => (a, &sleeper, code, policies),
        _ => (a, command, code, policies),
    });
    for (a, command, code, policies) in agents {
        died(&root, &cell, a, command, exited(code, 0.5));
        edit_agent(&root, &cell, a, |d| d["policies"] = policies);
    }
    root.ok(&["revive", &cell]);
    assert_eq!(root.agent(&cell, "on_failure")["status"], "idle");
    assert_eq!(root.agent(&cell, "on_failure")["restart_count"], 0);
    assert_eq!(root.agent(&cell, "always")["restart_count"], 1);
    assert_eq!(root.agent(&cell, "never")["status"], "failed");
    assert_eq!(root.agent(&cell, "never_fails")["status"], "failed");
    assert_eq!(root.agent(&cell, "listed")["status"], "idle");
    assert_eq!(root.agent(&cell, "listed")["restart_count"], 0);
    let kinds = root.event_kinds(&cell);
    assert_eq!(count(&kinds, "agent.completed"), 2, "{kinds:?}");
    assert_eq!(count(&kinds, "agent.failed"), 2, "{kinds:?}");
    assert_eq!(count(&kinds, "agent.revived"), 1, "{kinds:?}");
    stop_agents(&root, &cell);
}

#[test]
fn auto_revive_no_and_ask() {
    let root = Root::new();
    let cell = root.cell("Ask");
    quick_policies(
        &root,
        &cell,
        json!({"checkpoint_required": false, "auto_revive": "ask"}),
    );
    let dies = root.script("dies.sh", "sleep 0.2; exit 1");
    for a in ["asked", "denied", "refused"] {
        died(&root, &cell, a, &dies, exited(1, 0.5));
    }
    edit_agent(&root, &cell, "refused", |d| {
        d["policies"] = json!({"auto_revive": "no"})
    });
    root.ok(&["revive", &cell]);
    assert_eq!(root.agent(&cell, "refused")["status"], "failed");
    let requests = root.json(&["revive", "requests"]);
    let ids: Vec<(String, String)> = requests
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["agent"].as_str().unwrap().to_string(),
                r["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(ids.len(), 2, "{requests}");
    // Another pass files nothing new.
    root.ok(&["revive", &cell]);
    assert_eq!(
        root.json(&["revive", "requests"]).as_array().unwrap().len(),
        2
    );
    let id_of = |a: &str| ids.iter().find(|(agent, _)| agent == a).unwrap().1.clone();
    root.ok(&["revive", "approve", &id_of("asked")]);
    assert_eq!(root.agent(&cell, "asked")["restart_count"], 1);
    root.ok(&["revive", "deny", &id_of("denied")]);
    assert_eq!(root.agent(&cell, "denied")["status"], "failed");
    assert_eq!(root.json(&["revive", "requests"]), json!([]));
    root.run(&["revive", "approve", "r-00000000"])
        .refused(3, "no pending revival request");
}

#[test]
fn a_restart_storm_cools_down_then_retries_and_reset_clears_it() {
    let root = Root::new();
    let cell = root.cell("Storm");
    quick_policies(
        &root,
        &cell,
        json!({"checkpoint_required": false, "storm_limit": 2, "storm_window": 60, "storm_cooldown": 600, "max_restarts": 0}),
    );
    // What it restarts stays up: its supervisor would restart (then cool down) what dies.
    let sleeper = root.script("sleeper.sh", "exec sleep 30");
    // Its second death within the window, not noted yet.
    died(&root, &cell, "a1", &sleeper, exited(1, 0.5));
    edit_agent(&root, &cell, "a1", |d| {
        d["restart_count"] = json!(1);
        d["restart_attempts"] = json!(1);
        d["recent_deaths"] = json!([ago(5.0)]);
        d["last_death"] = json!(ago(5.0));
    });
    let out = root.json(&["revive", &cell]);
    assert_eq!(actions(&out), ["cooling_down"], "{out}");
    let cooling = root.agent(&cell, "a1");
    assert!(cooling["cooldown_until"].is_string(), "{cooling}");
    assert!(root.event_kinds(&cell).contains(&"agent.storm".to_string()));
    // While cooling down nothing restarts it.
    let out = root.json(&["revive", &cell]);
    assert_eq!(actions(&out), Vec::<&str>::new(), "{out}");
    assert_eq!(root.agent(&cell, "a1")["restart_count"], 1);
    // Once the cooldown is over (its end moved into the past), it is tried again.
    edit_agent(&root, &cell, "a1", |d| {
        d["cooldown_until"] = json!(ago(0.1))
    });
    let out = root.json(&["revive", &cell]);
    assert_eq!(actions(&out), ["revived"], "{out}");
    let doc = root.agent(&cell, "a1");
    assert_eq!(doc["restart_count"], 2);
    assert_ne!(doc["status"], "failed");
    root.ok(&["agent", "reset", &cell, "a1"]);
    let doc = root.agent(&cell, "a1");
    assert_eq!(doc["restart_attempts"], 0);
    assert_eq!(doc["recent_deaths"], json!([]));
    assert!(doc.get("cooldown_until").is_none());
    stop_agents(&root, &cell);
}

#[test]
fn a_dry_run_reports_and_changes_nothing() {
    let root = Root::new();
    let cell = root.cell("Dry");
    quick_policies(&root, &cell, json!({"checkpoint_required": false}));
    let dies = root.script("dies.sh", "exit 1");
    died(&root, &cell, "now", &dies, exited(1, 0.5));
    died(&root, &cell, "later", &dies, exited(1, 0.5));
    died(&root, &cell, "clean", &dies, exited(0, 0.5));
    edit_agent(&root, &cell, "later", |d| {
        d["policies"] = json!({"restart_delay_seconds": 3600})
    });
    let before = root.snapshot();
    let out = root.json(&["revive", &cell, "--dry-run"]);
    let mut seen: Vec<(&str, &str, bool)> = out["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["agent"].as_str().unwrap(),
                a["action"].as_str().unwrap(),
                a["dry_run"].as_bool().unwrap(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("clean", "idle", true),
            ("later", "backing_off", true),
            ("now", "revived", true)
        ],
        "{out}"
    );
    assert!(root.ok(&["revive", &cell, "--dry-run"]).contains(
        "agent now died (exit code 1); restart 1 fresh (it has no checkpoint) (dry run)"
    ));
    assert!(before == root.snapshot(), "a dry run wrote something");
}

#[test]
fn watch_survives_garbage_picks_up_new_cells_and_stops_cleanly() {
    let root = Root::new();
    let broken = root.cell("Broken");
    std::fs::write(root.cell_dir(&broken).join("cell.json"), "{ not json").unwrap();
    let mut watch = spawn_watch(&root);
    let lock = root.path.join(".pas/locks/watch.lock");
    let first = watch.id().to_string();
    wait_until(15.0, "the first watch holding its lock", || {
        std::fs::read_to_string(&lock).is_ok_and(|t| t.trim() == first)
    });
    // A second watch on the same root refuses, naming the first one's pid.
    let second = root.run(&["watch"]);
    second.refused(
        6,
        &format!(
            "pas watch is already running for {} (pid {})",
            root.path.display(),
            watch.id()
        ),
    );
    // A cell made after the watch started, with an agent that dies.
    let cell = root.cell("Late");
    quick_policies(&root, &cell, json!({"checkpoint_required": false}));
    let dies = root.script("dies.sh", "sleep 0.3; exit 1");
    root.ok(&["agent", "add", &cell, "a1", "--", &dies]);
    root.ok(&["agent", "start", &cell, "a1"]);
    wait_until(15.0, "the new cell's agent to be revived", || {
        root.agent(&cell, "a1")["restart_count"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    });
    root.ok(&["agent", "set", &cell, "a1", "--status", "idle"]);
    let status = stop(&mut watch);
    assert!(status.success(), "{status:?}");
    let text = std::fs::read_to_string(root.path.join(".watch.out")).unwrap();
    let problems = text
        .lines()
        .filter(|l| l.contains("\"problem\"") && l.contains(&broken))
        .count();
    assert_eq!(problems, 1, "the broken cell is reported once: {text}");
    stop_agents(&root, &cell);
}

#[test]
fn revival_state_survives_a_restart_of_the_watch() {
    let root = Root::new();
    let cell = root.cell("Survive");
    quick_policies(
        &root,
        &cell,
        // An hour: the first watch is killed well inside the backoff, and a watch that
        // computed the time again instead of reading it would not restart within the test.
        json!({"checkpoint_required": false, "restart_delay_seconds": 3600}),
    );
    let dies = root.script("dies.sh", "exit 1");
    died(&root, &cell, "a1", &dies, exited(1, 0.5));
    let mut first = spawn_watch(&root);
    wait_until(10.0, "the backoff to be written down", || {
        root.agent(&cell, "a1")["next_restart_at"].is_string()
    });
    // Kill the watch mid-backoff, without a chance to clean up.
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(root.agent(&cell, "a1")["restart_count"], 0);
    // The hour passes, as far as the file is concerned.
    let planned = ago(-0.5);
    edit_agent(&root, &cell, "a1", |d| {
        d["next_restart_at"] = json!(planned)
    });
    let mut second = spawn_watch(&root);
    wait_until(15.0, "the restart", || {
        root.agent(&cell, "a1")["restart_count"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    });
    stop(&mut second);
    let revived: Vec<Value> =
        std::fs::read_to_string(root.cell_dir(&cell).join("logs/events.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e["kind"] == "agent.revived")
            .collect();
    assert_eq!(revived.len(), 1, "counted once");
    let at = chrono::DateTime::parse_from_rfc3339(revived[0]["time"].as_str().unwrap()).unwrap();
    let planned = chrono::DateTime::parse_from_rfc3339(&planned).unwrap();
    assert!(
        at >= planned,
        "restarted at {at}, not before the recorded {planned}"
    );
    root.ok(&["agent", "set", &cell, "a1", "--status", "idle"]);
}

#[test]
fn an_idle_watch_uses_no_cpu() {
    // Regression: reading cell.json raised inotify access events that woke the next pass,
    // which read cell.json again: a busy loop. This is a coarse guard (a busy loop burns a
    // whole core), not a timing measurement; docs/benchmarks.md has the figures.
    let root = Root::new();
    let cell = root.cell("Idle");
    root.ok(&["agent", "add", &cell, "a1"]);
    root.ok(&["agent", "beat", &cell, "a1"]);
    let mut watch = spawn_watch(&root);
    std::thread::sleep(Duration::from_millis(1000));
    let cpu = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
    };
    let before = cpu(watch.id());
    std::thread::sleep(Duration::from_millis(2000));
    let used = cpu(watch.id()) - before;
    assert!(stop(&mut watch).success());
    assert!(used < 0.5, "an idle watch used {used} s of CPU in 2 s");
}

/// A stop that reads the agent while its supervisor is recording a restart in place (the
/// replacement spawned, the commit not yet written) stops the replacement. The window is
/// held open by `strace` delaying the supervisor's renames (its commit) by a second: the
/// stop reads the old document naming the dead process, then waits for the agent's lock
/// behind the commit, and must aim at the process the committed document names.
#[test]
fn a_stop_landing_while_a_restart_is_recorded_ends_the_new_run() {
    if !crate::harness::tool_available(
        "strace",
        &["-V"],
        "this test holds a restart's commit open with `strace -e inject=...:delay_enter=`; install it (apt-get install -y strace)",
    ) {
        return;
    }
    let root = Root::new();
    let cell = root.cell("StopRace");
    quick_policies(&root, &cell, json!({"checkpoint_required": false}));
    let runs = root.path.join(".runs");
    let go = root.path.join(".go");
    let second = root.path.join(".second");
    let body = format!(
        r#"n=$(cat {runs} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {runs}
if [ $n -ge 2 ]; then echo $$ > {second}.tmp; mv {second}.tmp {second}; exec sleep 30; fi
while [ ! -f {go} ]; do sleep 0.02; done
exit 1"#,
        runs = runs.display(),
        go = go.display(),
        second = second.display()
    );
    let script = root.script("twice.sh", &body);
    root.ok(&["agent", "add", &cell, "a1", "--", &script]);
    // The start runs under `strace -f`, which follows it into the supervisor it spawns
    // (no attach: that needs ptrace rights over a process that is not a child).
    let mut strace = root
        .cmd_via(
            &[
                "strace",
                "-f",
                "-o",
                "/dev/null",
                "-e",
                "trace=renameat,renameat2,rename",
                "-e",
                "inject=renameat,renameat2,rename:delay_enter=1000000",
            ],
            &["agent", "start", &cell, "a1"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(20.0, "the first run recorded", || {
        pid_of(&root, &cell, "a1").is_some()
    });
    let first = pid_of(&root, &cell, "a1").unwrap();
    std::fs::write(&go, "").unwrap();
    wait_until(10.0, "the replacement to run", || second.exists());
    let replacement: i64 = std::fs::read_to_string(&second)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(replacement, first);
    let out = root.json(&["agent", "stop", &cell, "a1", "--grace", "1"]);
    wait_until(15.0, "the replacement to end", || {
        !std::path::Path::new(&format!("/proc/{replacement}")).exists()
            || std::fs::read_to_string(format!("/proc/{replacement}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    });
    let _ = strace.kill();
    let _ = strace.wait();
    assert_eq!(out["outcome"], "terminated", "{out}");
    wait_until(10.0, "the run's end recorded", || {
        root.agent(&cell, "a1")["pid"].is_null()
    });
    let doc = root.agent(&cell, "a1");
    assert_eq!(doc["status"], "idle", "{doc}");
    assert_eq!(doc["exit"]["requested"], true, "{doc}");
}
