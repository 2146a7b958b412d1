//! Ordinary programs under pas, as a new user meets them: a shell script that knows nothing
//! of pas, added by a relative path, started and kept running by `pas watch`; `pas check`
//! that tells the truth about stopped, paused and finished agents and about a missing root;
//! root-wide defaults in `pas.toml` that reach new cells; policies set and unset from the
//! command line; and health as the seed's heartbeat had it.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{pas_bin, wait_until, Root};

/// The agent's recorded pid, when it has one.
fn pid_of(root: &Root, cell: &str, agent: &str) -> Option<i64> {
    root.agent(cell, agent)["pid"].as_i64()
}

/// Whether `pid` runs (and is not a zombie).
fn runs(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().to_string()))
        .is_some_and(|rest| !rest.starts_with('Z'))
}

fn signal(pid: i64, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    let _ = rustix::process::kill_process(pid, signal);
}

/// Stops a `pas watch` this test started, by its pid.
fn stop_watch(watch: &mut Child) {
    signal(watch.id() as i64, rustix::process::Signal::TERM);
    assert!(watch.wait().unwrap().success(), "watch exits 0 on SIGTERM");
}

fn policy(root: &Root, cell: &str, agent: Option<&str>, key: &str) -> Value {
    let mut args = vec!["policy", "show", cell];
    args.extend(agent);
    let shown = root.json(&args);
    shown["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == key)
        .unwrap_or_else(|| panic!("no {key} in {shown}"))
        .clone()
}

#[test]
fn an_unmodified_script_added_by_a_relative_path_is_started_kept_and_restarted() {
    let root = Root::new();
    // Short heartbeat policies for the whole root: a program that beat would be judged
    // late after half a second and dead after a second and a half.
    std::fs::write(
        root.path.join("pas.toml"),
        "[policies]\nheartbeat_interval = 0.5\nstartup_grace = 1\n",
    )
    .unwrap();
    let cell = root.cell("Plain");
    // A program that knows nothing of pas: no beats, no checkpoints.
    let script = root.script("my-agent.sh", "echo hello\nwhile :; do sleep 0.2; done");
    let dir = std::path::Path::new(&script)
        .parent()
        .unwrap()
        .to_path_buf();
    let add = root
        .cmd(&["agent", "add", &cell, "worker", "--", "./my-agent.sh"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(add.status.success(), "{add:?}");
    assert_eq!(root.agent(&cell, "worker")["command"], json!([script]));
    // A mistyped path is refused naming the path and the directory, and adds nothing.
    let before = root.snapshot();
    let typo = root
        .cmd(&["agent", "add", &cell, "other", "--", "./my-agnet.sh"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&typo.stderr);
    assert_eq!(typo.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!("{}/my-agnet.sh does not exist", dir.display()))
            && stderr.contains(&format!("taken from {}", dir.display())),
        "{stderr}"
    );
    assert!(before == root.snapshot(), "a refused add changed something");

    // Meant to run, never started: the watch starts it (no death is made up for it).
    root.ok(&["agent", "set", &cell, "worker", "--status", "active"]);
    let mut watch = root
        .cmd(&["watch", "--interval", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = None;
    wait_until(10.0, "the watch to start the agent", || {
        first = pid_of(&root, &cell, "worker").filter(|p| runs(*p));
        first.is_some()
    });
    let first = first.unwrap();
    // It never beats, and lives: judged by its process, healthy, for 10 s and more.
    let started = Instant::now();
    wait_until(20.0, "10 s of life without a beat", || {
        assert_eq!(
            pid_of(&root, &cell, "worker"),
            Some(first),
            "it was restarted"
        );
        assert!(runs(first), "it was stopped");
        started.elapsed() >= Duration::from_secs(10)
    });
    assert_eq!(
        root.json(&["agent", "show", &cell, "worker"])["health"],
        "healthy"
    );
    root.ok(&["check"]);
    let kinds = root.event_kinds(&cell);
    for never in [
        "agent.vanished",
        "agent.exited",
        "agent.stopped",
        "agent.storm",
    ] {
        assert!(!kinds.iter().any(|k| k == never), "{never} in {kinds:?}");
    }

    // kill -9, no checkpoint: back within 2 s, fresh, and the event says why.
    signal(first, rustix::process::Signal::KILL);
    let killed = Instant::now();
    let mut second = None;
    wait_until(2.0, "the agent back within 2 s of kill -9", || {
        second = pid_of(&root, &cell, "worker").filter(|p| *p != first && runs(*p));
        second.is_some()
    });
    println!("back after {:?}", killed.elapsed());
    wait_until(5.0, "the revival event", || {
        root.event_kinds(&cell).iter().any(|k| k == "agent.revived")
    });
    let events = std::fs::read_to_string(root.cell_dir(&cell).join("logs/events.jsonl")).unwrap();
    assert!(events.contains("fresh (it has no checkpoint)"), "{events}");
    stop_watch(&mut watch);
    root.ok(&["agent", "stop", &cell, "worker", "--grace", "1"]);
    let log = std::fs::read_to_string(root.cell_dir(&cell).join("logs/worker.log")).unwrap();
    assert_eq!(log.matches("hello").count(), 2, "{log}");
}

#[test]
fn check_judges_only_agents_meant_to_run_and_a_missing_root_is_unknown() {
    // A root that is not there (a typo, an unmounted volume) is UNKNOWN, never OK.
    let root = Root::new();
    let missing = root.path.join("not-mounted");
    let out = std::process::Command::new(pas_bin())
        .arg("--root")
        .arg(&missing)
        .arg("check")
        .env_remove("PAS_ROOT")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.starts_with("PAS UNKNOWN - cannot read: missions root")
            && stdout.contains("does not exist"),
        "{stdout}"
    );
    // An empty root is OK, and says so.
    let run = root.run(&["check"]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout
            .starts_with("PAS OK - no cells in the missions root"),
        "{}",
        run.stdout
    );

    let cell = root.cell("Judged");
    root.ok(&["policy", "set", &cell, "heartbeat_interval=0.2"]);
    let sleeper = root.script("sleeper.sh", "exec sleep 300");
    let finisher = root.script("finisher.sh", "exit 0");
    for (agent, script) in [
        ("stopped", &sleeper),
        ("paused", &sleeper),
        ("finished", &finisher),
    ] {
        root.ok(&["agent", "add", &cell, agent, "--", script]);
        root.ok(&["agent", "start", &cell, agent]);
        root.ok(&["agent", "beat", &cell, agent]);
    }
    root.ok(&["agent", "stop", &cell, "stopped", "--grace", "1"]);
    root.ok(&["agent", "set", &cell, "paused", "--status", "paused"]);
    wait_until(10.0, "the finished agent's clean exit", || {
        root.agent(&cell, "finished")["exit"]["code"] == 0
    });
    // One pass (cron's `pas revive`, or the watch) leaves a clean exit idle (on-failure).
    root.ok(&["revive"]);
    assert_eq!(root.agent(&cell, "finished")["status"], "idle");
    // All three are long silent by their 0.2 s heartbeat: none is a problem.
    wait_until(10.0, "their silence past the ttl", || {
        root.json(&["status", &cell])["cells"][0]["health_counts"]["dead"] == 3
    });
    let run = root.run(&["check"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("0 agent(s) (3 idle or paused, not judged)")
            && run.stdout.contains("not_judged=3"),
        "{}",
        run.stdout
    );
    // An agent meant to run that is silent is still CRITICAL.
    root.ok(&["agent", "add", &cell, "silent"]);
    root.ok(&["agent", "beat", &cell, "silent"]);
    wait_until(10.0, "the silent agent to be dead", || {
        root.run(&["check", &cell]).code == 2
    });
    let run = root.run(&["check"]);
    assert!(
        run.stdout.starts_with("PAS CRITICAL - ") && run.stdout.contains("/silent"),
        "{}",
        run.stdout
    );
    root.ok(&["agent", "stop", &cell, "paused", "--grace", "1"]);
}

#[test]
fn pas_toml_defaults_reach_a_new_cell_until_it_sets_its_own() {
    let root = Root::new();
    std::fs::write(
        root.path.join("pas.toml"),
        "[policies]\nauto_revive = \"ask\"\nheartbeat_interval = 7\n",
    )
    .unwrap();
    let cell = root.cell("Defaults");
    for (key, value) in [
        ("auto_revive", json!("ask")),
        ("heartbeat_interval", json!(7)),
    ] {
        let s = policy(&root, &cell, None, key);
        assert_eq!(
            (&s["value"], &s["source"]),
            (&value, &json!("root_config")),
            "{key}"
        );
    }
    // The documented example does something: a dead agent of the new cell waits for a
    // person instead of being restarted.
    let dies = root.script("dies.sh", "exit 1");
    root.ok(&["agent", "add", &cell, "a1", "--", &dies]);
    root.ok(&["agent", "start", &cell, "a1"]);
    // Its supervisor applies the rules when it dies: it files the request itself.
    wait_until(10.0, "its revival request", || {
        root.json(&["revive", "requests"]).as_array().unwrap().len() == 1
    });
    assert_eq!(root.agent(&cell, "a1")["exit"]["code"], 1);
    let pass = root.json(&["revive", &cell]);
    assert_eq!(pass["actions"], json!([]), "{pass}");

    // The cell's own value wins; unset, the root's applies again.
    root.ok(&["policy", "set", &cell, "heartbeat_interval=3"]);
    let s = policy(&root, &cell, None, "heartbeat_interval");
    assert_eq!(
        (&s["value"], &s["source"]),
        (&json!(3), &json!("policies_file"))
    );
    root.ok(&["policy", "unset", &cell, "heartbeat_interval"]);
    let s = policy(&root, &cell, None, "heartbeat_interval");
    assert_eq!(
        (&s["value"], &s["source"]),
        (&json!(7), &json!("root_config"))
    );
}

#[test]
fn policy_set_and_unset_round_trip_typed_atomic_and_evented() {
    let root = Root::new();
    let cell = root.cell("Policies");
    root.ok(&["agent", "add", &cell, "a1"]);
    let file = root.cell_dir(&cell).join("config/policies.json");
    let original = std::fs::read(&file).unwrap();

    root.ok(&[
        "policy",
        "set",
        &cell,
        "heartbeat_interval=10",
        "auto_revive=ask",
        "watchdog=false",
        "substitute_agents=a1,b2",
        "no_restart_exit_codes=3,4",
        "cost_hard_usd=null",
        "on_failure=echo failed",
    ]);
    for (key, value) in [
        ("heartbeat_interval", json!(10)),
        ("auto_revive", json!("ask")),
        ("watchdog", json!(false)),
        ("substitute_agents", json!(["a1", "b2"])),
        ("no_restart_exit_codes", json!([3, 4])),
        ("cost_hard_usd", Value::Null),
        ("on_failure", json!("echo failed")),
    ] {
        let s = policy(&root, &cell, None, key);
        assert_eq!(
            (&s["value"], &s["source"]),
            (&value, &json!("policies_file")),
            "{key}"
        );
    }
    // One agent's own value, over the cell's.
    root.ok(&[
        "policy",
        "set",
        &cell,
        "--agent",
        "a1",
        "heartbeat_interval=60",
    ]);
    let s = policy(&root, &cell, Some("a1"), "heartbeat_interval");
    assert_eq!((&s["value"], &s["source"]), (&json!(60), &json!("agent")));
    assert_eq!(
        root.agent(&cell, "a1")["policies"],
        json!({"heartbeat_interval": 60})
    );

    // Bad input: one line, its exit code, nothing changed.
    let before = root.snapshot();
    for (args, code, needle) in [
        (
            vec!["heartbeat_intervl=10"],
            2,
            "unknown policy `heartbeat_intervl`",
        ),
        (vec!["auto_revive=maybe"], 2, "auto_revive"),
        (vec!["heartbeat_interval=soon"], 2, "heartbeat_interval"),
        (vec!["heartbeat_interval=0"], 2, "must be above 0"),
        (vec!["max_restarts=-1"], 2, "max_restarts"),
        (vec!["stop_grace=5", "stop_grace=6"], 2, "given twice"),
        (vec!["heartbeat_interval"], 2, "is not KEY=VALUE"),
        (
            vec!["--agent", "nobody", "stop_grace=5"],
            3,
            "no agent nobody",
        ),
    ] {
        let mut all = vec!["policy", "set", cell.as_str()];
        all.extend(args);
        root.run(&all).refused(code, needle);
    }
    root.run(&["policy", "set", &cell, "stop_grace=5", "--as", "a1"])
        .refused(9, "only an operator");
    root.run(&["policy", "unset", &cell, "bogus"])
        .refused(2, "unknown policy `bogus`");
    assert!(
        before == root.snapshot(),
        "a refused change changed something"
    );

    // Unset: the layer forgets the keys; the cell's file is as it was created.
    root.ok(&[
        "policy",
        "unset",
        &cell,
        "heartbeat_interval",
        "auto_revive",
        "watchdog",
        "substitute_agents",
        "no_restart_exit_codes",
        "cost_hard_usd",
        "on_failure",
    ]);
    assert_eq!(std::fs::read(&file).unwrap(), original);
    assert_eq!(
        policy(&root, &cell, None, "auto_revive")["source"],
        "default"
    );
    root.ok(&[
        "policy",
        "unset",
        &cell,
        "--agent",
        "a1",
        "heartbeat_interval",
    ]);
    assert_eq!(root.agent(&cell, "a1")["policies"], json!({}));
    // Unsetting what is not set changes nothing, and is no error.
    let before = root.snapshot();
    root.ok(&["policy", "unset", &cell, "auto_revive"]);
    assert!(before == root.snapshot());
    let kinds = root.event_kinds(&cell);
    let count = |k: &str| kinds.iter().filter(|x| *x == k).count();
    assert_eq!(
        (count("policy.set"), count("policy.unset")),
        (2, 2),
        "{kinds:?}"
    );
}

#[test]
fn failures_degrade_then_make_unhealthy_and_a_plain_beat_clears_them() {
    let root = Root::new();
    let cell = root.cell("Health");
    root.ok(&["agent", "add", &cell, "a1"]);
    root.ok(&["agent", "beat", &cell, "a1"]);
    let health = || root.json(&["agent", "show", &cell, "a1"])["health"].clone();
    for (n, want) in [(1, "degraded"), (2, "degraded"), (3, "unhealthy")] {
        root.ok(&[
            "agent",
            "fail",
            &cell,
            "a1",
            "--reason",
            "tool call timed out",
        ]);
        assert_eq!(health(), want, "after {n} failure(s)");
    }
    root.ok(&["agent", "beat", &cell, "a1"]);
    assert_eq!(health(), "healthy");
    // A DEGRADED report is cleared by the next plain beat, so a wait for health ends.
    root.ok(&["agent", "beat", &cell, "a1", "--status", "DEGRADED"]);
    assert_eq!(health(), "degraded");
    root.ok(&["agent", "beat", &cell, "a1"]);
    root.ok(&[
        "agent",
        "wait",
        &cell,
        "a1",
        "--for",
        "healthy",
        "--timeout",
        "5",
    ]);
    assert_eq!(root.agent(&cell, "a1")["reported_status"], "ACTIVE");
}

#[test]
fn an_event_hook_gets_down_and_failed_as_json_on_stdin() {
    let root = Root::new();
    let cell = root.cell("Hooked");
    let out = root.path.join("hook.out");
    let hook = format!("on_event=cat >> {}", out.display());
    root.ok(&[
        "policy",
        "set",
        &cell,
        &hook,
        "on_event_kinds=down,failed",
        "max_restarts=1",
    ]);
    let dies = root.script("dies.sh", "exit 1");
    root.ok(&["agent", "add", &cell, "a1", "--", &dies]);
    root.ok(&["agent", "set", &cell, "a1", "--status", "active"]);
    // Passes as cron would run them: start, death, restart, death, failed for good.
    wait_until(20.0, "the agent to fail for good", || {
        root.ok(&["revive", &cell]);
        root.agent(&cell, "a1")["status"] == "failed"
    });
    root.ok(&["revive", &cell]);
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let got: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let kinds: Vec<&str> = got.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(
        kinds.contains(&"agent.down") && kinds.last() == Some(&"agent.failed"),
        "{kinds:?}"
    );
    assert!(got
        .iter()
        .all(|e| e["agent"] == "a1" && e["seq"].as_u64().is_some()));
    // Each ran once, and each run is in the log.
    let mut seqs: Vec<u64> = got.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    seqs.dedup();
    assert_eq!(seqs.len(), got.len(), "an event's hook ran twice: {seqs:?}");
    let ran = root
        .event_kinds(&cell)
        .iter()
        .filter(|k| *k == "hook.on_event")
        .count();
    assert_eq!(ran, got.len());

    // A hook is a command like any other: from a file its group may change, it is refused.
    root.ok(&["policy", "set", &cell, "on_event_kinds=reset"]);
    let file = root.cell_dir(&cell).join("config/policies.json");
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o664)).unwrap();
    root.ok(&["agent", "reset", &cell, "a1"]);
    root.ok(&["revive", &cell]);
    assert_eq!(std::fs::read_to_string(&out).unwrap_or_default(), text);
    let events = std::fs::read_to_string(root.cell_dir(&cell).join("logs/events.jsonl")).unwrap();
    assert!(
        events.lines().any(|l| l.contains("\"hook.on_event\"")
            && l.contains("was not run")
            && l.contains("may be changed by its group")),
        "{events}"
    );
    root.ok(&["agent", "stop", &cell, "a1", "--grace", "1"]);
}

#[test]
fn a_resumed_cell_counts_only_its_active_time_against_its_timeout() {
    let root = Root::new();
    let cell = root.ok(&["cell", "create", "--name", "Resumed", "--timeout", "600"]);
    // Created an hour ago and paused for all of it but the first 10 s, as its file says.
    let path = root.cell_dir(&cell).join("cell.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let ago = |s: i64| {
        (chrono::Utc::now() - chrono::Duration::seconds(s))
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    };
    doc["created_at"] = json!(ago(3600));
    doc["status"] = json!("paused");
    doc["status_changed_at"] = json!(ago(3590));
    std::fs::write(&path, doc.to_string()).unwrap();
    root.ok(&["cell", "set", &cell, "--status", "active"]);
    let paused = root.read_json(format!("{cell}/cell.json"))["paused_seconds"]
        .as_f64()
        .unwrap();
    assert!((3589.0..3600.0).contains(&paused), "{paused}");
    // A pass keeps it active: 10 s and a little of its 600 s are used, not an hour.
    root.ok(&["revive"]);
    let view = root.json(&["status", &cell]);
    assert_eq!(view["cells"][0]["status"], "active");
    let used = view["cells"][0]["time_used"].as_f64().unwrap();
    assert!(used < 60.0, "{used}");
    root.ok(&["budget", "check", &cell]);
}

#[test]
fn a_breach_under_ask_pauses_the_agent_until_an_operator_decides() {
    let root = Root::new();
    let cell = root.cell("Asked");
    root.ok(&["policy", "set", &cell, "breach_action=ask"]);
    for agent in ["a1", "a2"] {
        root.ok(&["agent", "add", &cell, agent]);
        root.ok(&[
            "agent",
            "beat",
            &cell,
            agent,
            "--ctx-used",
            "20000",
            "--ctx-limit",
            "100000",
        ]);
        root.ok(&["budget", "track", &cell, agent, "--used", "80000"]);
        assert_eq!(root.agent(&cell, agent)["status"], "paused");
    }
    let requests = root.json(&["budget", "requests"]);
    let id = |agent: &str| {
        requests
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["agent"] == agent)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (first, second) = (id("a1"), id("a2"));
    // Paused: its beats are answered stop, and nothing was compacted yet.
    let reply = root.json(&["agent", "beat", &cell, "a1", "--ctx-used", "81000"]);
    assert_eq!(
        (&reply["directive"], &reply["reason"]),
        (&json!("stop"), &json!("agent_paused"))
    );
    assert_eq!(root.run(&["budget", "check", &cell]).code, 2);
    assert!(root
        .json(&["budget", "history", &cell])
        .as_array()
        .unwrap()
        .is_empty());
    // Settling is an operator's act, and an unknown id is not found.
    root.run(&["budget", "approve", &first, "--as", "a1"])
        .refused(9, "only an operator");
    root.run(&["budget", "approve", "b-00000000"])
        .refused(3, "no pending budget request b-00000000");

    root.ok(&["budget", "approve", &first]);
    assert_eq!(root.agent(&cell, "a1")["status"], "active");
    assert_eq!(
        root.json(&["budget", "history", &cell, "a1"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let reply = root.json(&["agent", "beat", &cell, "a1", "--ctx-used", "81000"]);
    assert_eq!(reply["directive"], "summarize");
    root.ok(&["budget", "deny", &second]);
    assert_eq!(root.agent(&cell, "a2")["status"], "paused");
    assert!(root
        .json(&["budget", "requests"])
        .as_array()
        .unwrap()
        .is_empty());
    root.run(&["budget", "deny", &second])
        .refused(3, "no pending budget request");
    let kinds = root.event_kinds(&cell);
    for k in [
        "budget.breach_requested",
        "budget.breach_approved",
        "budget.breach_denied",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing from {kinds:?}");
    }
}
