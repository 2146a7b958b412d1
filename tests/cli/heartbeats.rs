//! Heartbeats, health, events, status, check and metrics.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::harness::Root;

/// Moves an agent's last heartbeat `seconds` into the past, as if it had gone silent: the
/// controlled clock of these tests (the file is edited the way another tool would).
fn backdate(root: &Root, cell: &str, agent: &str, seconds: i64) {
    let path = root.cell_dir(cell).join(format!("agents/{agent}.json"));
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let t = chrono::Utc::now() - chrono::Duration::seconds(seconds);
    doc["last_heartbeat"] = Value::from(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
}

fn event_kinds(root: &Root, cell: &str, agent: &str) -> Vec<String> {
    let out = root.ok(&["--json", "events", cell, "--agent", agent]);
    out.lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn health(root: &Root, cell: &str, agent: &str) -> String {
    root.json(&["agent", "show", cell, agent])["health"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn an_agent_walks_healthy_late_down_dead_recovered() {
    let root = Root::new();
    let cell = root.cell("Walk");
    root.ok(&["agent", "add", &cell, "a1"]);
    assert_eq!(health(&root, &cell, "a1"), "unknown");

    let reply = root.json(&["agent", "beat", &cell, "a1"]);
    assert_eq!(reply["ack"], true);
    assert_eq!(reply["heartbeat_count"], 1);
    assert_eq!(reply["next_beat_in"], 30.0);
    assert_eq!(health(&root, &cell, "a1"), "healthy");

    // Default policy: interval 30 s, down after 2 misses, dead after 3 (90 s).
    for (silent, expected, check) in [(45, "late", 1), (75, "down", 2), (100, "dead", 2)] {
        backdate(&root, &cell, "a1", silent);
        assert_eq!(health(&root, &cell, "a1"), expected);
        assert_eq!(root.run(&["check", &cell]).code, check, "{expected}");
    }
    let list = root.ok(&["agent", "list", &cell]);
    // 100 s of silence, plus however long the commands above took on a busy machine.
    assert!(
        list.contains("dead") && list.contains("1m4") && list.contains("s ago"),
        "{list}"
    );

    let reply = root.json(&["agent", "beat", &cell, "a1"]);
    assert_eq!(reply["health"], "healthy");
    assert_eq!(root.run(&["check", &cell]).code, 0);
    assert_eq!(
        event_kinds(&root, &cell, "a1"),
        [
            "agent.added",
            "agent.alive",
            "agent.late",
            "agent.down",
            "agent.dead",
            "agent.recovered"
        ]
    );
    // The human log has the same story.
    let mission = std::fs::read_to_string(root.cell_dir(&cell).join("logs/mission.log")).unwrap();
    assert!(
        mission
            .lines()
            .any(|l| l.contains("agent.dead") && l.contains("ERROR")),
        "{mission}"
    );
    root.ok(&["events", "verify", &cell]);
}

#[test]
fn a_beat_records_what_the_agent_reports_and_keeps_unknown_fields() {
    let root = Root::new();
    let cell = root.cell("Report");
    root.ok(&["agent", "add", &cell, "a1"]);
    // Another tool added a field to the agent file.
    let path = root.cell_dir(&cell).join("agents/a1.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen(
            "\"role\"",
            "\"x_gpu\": {\"model\": \"h100\"},\n  \"role\"",
            1,
        ),
    )
    .unwrap();

    let out = root
        .cmd(&[
            "agent",
            "beat",
            "--status",
            "DEGRADED",
            "--progress",
            "0.25",
            "--ctx-used",
            "5000",
            "--ctx-limit",
            "200000",
            "--meta",
            "model=m1",
            "--meta",
            "host=h",
            "--note",
            "reading",
        ])
        .env("PAS_CELL", &cell)
        .env("PAS_AGENT", "a1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: beat 1 of a1"));

    let doc = root.read_json(format!("{cell}/agents/a1.json"));
    assert_eq!(doc["x_gpu"]["model"], "h100");
    let keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
    assert_eq!(keys[1], "name");
    assert_eq!(
        keys[2], "x_gpu",
        "the unknown field kept its place: {keys:?}"
    );
    assert_eq!(doc["heartbeat_count"], 1);
    assert_eq!(doc["reported_status"], "DEGRADED");
    assert_eq!(doc["progress"], 0.25);
    assert_eq!(doc["ctx_used"], 5000);
    assert_eq!(doc["ctx_limit"], 200000);
    assert_eq!(
        doc["metadata"],
        serde_json::json!({"model": "m1", "host": "h"})
    );
    assert_eq!(doc["note"], "reading");
    assert_eq!(doc["status"], "active");
    let stamp = doc["last_heartbeat"].as_str().unwrap();
    assert!(
        stamp.ends_with('Z') && stamp.contains('.'),
        "RFC 3339 UTC, sub-second: {stamp}"
    );
    assert_eq!(health(&root, &cell, "a1"), "degraded");
    assert_eq!(root.run(&["check", &cell]).code, 1);
    crate::schemas::assert_root_follows_schemas(&root);
}

#[test]
fn bad_beats_are_refused_and_change_nothing() {
    let root = Root::new();
    let cell = root.cell("Bad beats");
    root.ok(&["agent", "add", &cell, "a1"]);
    let before = root.snapshot();
    root.run(&["agent", "beat", &cell, "a1", "--progress", "1.5"])
        .refused(2, "outside 0..1");
    root.run(&["agent", "beat", &cell, "a1", "--ctx-limit", "0"])
        .refused(2, "--ctx-limit");
    root.run(&["agent", "beat", &cell, "a1", "--meta", "novalue"])
        .refused(2, "KEY=VALUE");
    root.run(&["agent", "beat", &cell, "a1", "--status", "SLEEPY"])
        .refused(2, "invalid value 'SLEEPY'");
    root.run(&["agent", "beat", &cell, "ghost"])
        .refused(3, "no agent ghost");
    root.run(&["agent", "beat"]).refused(2, "PAS_CELL");
    assert_eq!(before, root.snapshot());
}

#[test]
fn paused_cells_and_agents_get_a_stop_directive() {
    let root = Root::new();
    let cell = root.cell("Directive");
    root.ok(&["agent", "add", &cell, "a1"]);
    assert_eq!(
        root.json(&["agent", "beat", &cell, "a1"])["directive"],
        Value::Null
    );
    root.ok(&["cell", "set", &cell, "--status", "paused"]);
    let reply = root.json(&["agent", "beat", &cell, "a1"]);
    assert_eq!(reply["directive"], "stop");
    assert_eq!(reply["reason"], "cell_paused");
    assert_eq!(root.ok(&["--quiet", "agent", "beat", &cell, "a1"]), "stop");
}

#[test]
fn two_hundred_concurrent_beats_are_all_counted() {
    let root = Root::new();
    let cell = root.cell("Crowd");
    root.ok(&["agent", "add", &cell, "a1"]);
    let path = root.cell_dir(&cell).join("agents/a1.json");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (stop, path) = (stop.clone(), path.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let bytes = std::fs::read(&path).unwrap();
                serde_json::from_slice::<Value>(&bytes).unwrap_or_else(|e| {
                    panic!(
                        "torn agent file ({e}): {:?}",
                        String::from_utf8_lossy(&bytes)
                    )
                });
                reads += 1;
            }
            reads
        })
    };
    let children: Vec<_> = (0..200)
        .map(|_| {
            root.cmd(&["agent", "beat", &cell, "a1"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    assert_eq!(
        root.read_json(format!("{cell}/agents/a1.json"))["heartbeat_count"],
        200
    );
}

#[test]
fn failures_in_a_row_make_an_agent_unhealthy_until_it_reports_active() {
    let root = Root::new();
    let cell = root.cell("Failures");
    root.ok(&["agent", "add", &cell, "a1"]);
    root.ok(&["agent", "beat", &cell, "a1"]);
    for n in 1..=3 {
        let out = root.json(&[
            "agent",
            "fail",
            &cell,
            "a1",
            "--reason",
            "tool call timed out",
        ]);
        assert_eq!(out["consecutive_failures"], n);
    }
    assert_eq!(health(&root, &cell, "a1"), "unhealthy");
    assert_eq!(root.run(&["check", &cell]).code, 2);
    let doc = root.read_json(format!("{cell}/agents/a1.json"));
    assert_eq!(doc["last_failure"]["reason"], "tool call timed out");
    root.ok(&["agent", "beat", &cell, "a1", "--status", "ACTIVE"]);
    assert_eq!(health(&root, &cell, "a1"), "healthy");
    let kinds = event_kinds(&root, &cell, "a1");
    assert!(
        kinds.contains(&"agent.unhealthy".to_string())
            && kinds.ends_with(&["agent.healthy".to_string()]),
        "{kinds:?}"
    );
    root.run(&["agent", "fail", &cell, "a1", "--reason", ""])
        .refused(2, "reason is empty");
}

#[test]
fn check_speaks_the_nagios_convention() {
    let root = Root::new();
    let cell = root.cell("Check");
    root.ok(&["agent", "add", &cell, "a1"]);
    root.ok(&["agent", "beat", &cell, "a1"]);

    let ok = root.run(&["check"]);
    assert_eq!(ok.code, 0);
    assert!(ok.stdout.starts_with("PAS OK - "), "{}", ok.stdout);
    assert_eq!(ok.stdout.lines().count(), 1);
    assert!(
        ok.stdout
            .contains("| cells=1 agents=1 not_judged=0 healthy=1"),
        "{}",
        ok.stdout
    );

    backdate(&root, &cell, "a1", 40);
    let warn = root.run(&["check"]);
    assert_eq!(warn.code, 1);
    assert!(
        warn.stdout.starts_with("PAS WARNING - late"),
        "{}",
        warn.stdout
    );

    backdate(&root, &cell, "a1", 200);
    let crit = root.run(&["check"]);
    assert_eq!(crit.code, 2);
    assert!(
        crit.stdout.starts_with("PAS CRITICAL - dead"),
        "{}",
        crit.stdout
    );

    // A paused cell's silence is expected.
    root.ok(&["cell", "set", &cell, "--status", "paused"]);
    assert_eq!(root.run(&["check"]).code, 0);
    root.ok(&["cell", "set", &cell, "--status", "active"]);

    std::fs::write(root.cell_dir(&cell).join("agents/a1.json"), "{ torn").unwrap();
    // An agent pas cannot read is one it cannot look after: CRITICAL, named.
    let broken = root.run(&["check"]);
    assert_eq!(broken.code, 2);
    assert!(
        broken.stdout.starts_with("PAS CRITICAL - cannot read"),
        "{}",
        broken.stdout
    );

    let missing = std::process::Command::new(crate::harness::pas_bin())
        .args(["--root", "/nonexistent/pas-root", "check", "some-cell"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(3));
}

#[test]
fn events_follow_streams_what_another_process_appends() {
    let root = Root::new();
    let cell = root.cell("Follow");
    root.ok(&["agent", "add", &cell, "early"]);
    let mut child = root
        .cmd(&[
            "--json",
            "events",
            &cell,
            "--follow",
            "--kind",
            "agent.added",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // The history comes first: once it is out, the follower has read the log to its end,
    // so the next event can only reach it by following.
    let history = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the history was not printed");
    assert_eq!(
        serde_json::from_str::<Value>(&history).unwrap()["agent"],
        "early"
    );
    root.ok(&["agent", "add", &cell, "late_comer"]);
    // pas polls every 200 ms; allow generous slack on a loaded machine.
    let line = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("no event streamed");
    child.kill().unwrap();
    let _ = child.wait();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["kind"], "agent.added");
    assert_eq!(event["agent"], "late_comer");
    assert_eq!(event["cell"], cell.as_str());
}

#[test]
fn events_are_filtered_and_tampering_is_named() {
    let root = Root::new();
    let cell = root.cell("Tamper");
    for a in ["a1", "a2", "a3"] {
        root.ok(&["agent", "add", &cell, a]);
    }
    root.ok(&["agent", "beat", &cell, "a2"]);
    let all = root.ok(&["--json", "events", &cell]);
    assert_eq!(all.lines().count(), 5);
    let seqs: Vec<u64> = all
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(
        root.ok(&["--json", "events", &cell, "--agent", "a2"])
            .lines()
            .count(),
        2
    );
    assert_eq!(
        root.ok(&["--json", "events", &cell, "--kind", "cell."])
            .lines()
            .count(),
        1
    );
    assert_eq!(
        root.ok(&["--json", "events", &cell, "--since", "1h"])
            .lines()
            .count(),
        5
    );
    assert_eq!(
        root.ok(&["--json", "events", &cell, "--since", "2099-01-01T00:00:00Z"])
            .lines()
            .count(),
        0
    );
    root.run(&["events", &cell, "--since", "yesterday"])
        .refused(2, "--since");
    root.ok(&["events", "verify", &cell]);

    let log = root.cell_dir(&cell).join("logs/events.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    // A torn last line (a writer killed mid-append) is skipped, not a break.
    std::fs::write(&log, format!("{text}{{\"seq\":6,\"ti")).unwrap();
    assert_eq!(root.ok(&["--json", "events", &cell]).lines().count(), 5);
    root.ok(&["events", "verify", &cell]);
    // The next writer cuts the torn tail and the chain goes on.
    root.ok(&["agent", "add", &cell, "a4"]);
    root.ok(&["events", "verify", &cell]);

    // Removing a line is named at the line after it.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let cut: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, l)| *l)
        .collect();
    std::fs::write(&log, cut.join("\n") + "\n").unwrap();
    let run = root.run(&["events", "verify", &cell]);
    assert_eq!(run.code, 5);
    assert!(
        run.stdout
            .contains("line 3 (seq 4) follows seq 2: 1 line(s) missing"),
        "{}",
        run.stdout
    );
}

#[test]
fn status_shows_agents_by_health_and_tasks_by_state() {
    let root = Root::new();
    let cell = root.cell("Glance");
    root.ok(&["agent", "add", &cell, "a1"]);
    root.ok(&["agent", "add", &cell, "a2"]);
    root.ok(&[
        "agent",
        "beat",
        &cell,
        "a1",
        "--ctx-used",
        "50",
        "--ctx-limit",
        "100",
    ]);
    root.ok(&["task", "add", &cell, "t1", "--title", "one"]);
    root.ok(&["task", "add", &cell, "t2", "--title", "two", "--dep", "t1"]);
    let text = root.ok(&["status", &cell]);
    assert!(text.contains("2 agent(s): 1 healthy, 1 unknown"), "{text}");
    assert!(
        text.contains("tasks 0/2 done, 0 in progress, 1 blocked, 0 failed"),
        "{text}"
    );
    assert!(text.contains("50%"), "{text}");
    let json = root.json(&["status", "--all"]);
    assert_eq!(json["totals"]["agents"], 2);
    assert_eq!(json["totals"]["health"]["healthy"], 1);
    let c = &json["cells"][0];
    assert_eq!(c["tasks"]["blocked"], 1);
    assert_eq!(c["agents"][0]["health"], "healthy");
    assert!(c["agents"][0]["heartbeat_age_seconds"].as_f64().unwrap() < 60.0);
    // Filters across cells.
    let other = root.cell("Other");
    root.ok(&[
        "agent",
        "add",
        &other,
        "b1",
        "--role",
        "audit",
        "--cap",
        "review",
        "--gateway",
        "gw9",
    ]);
    let pick = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["agent", "list", "--all"];
        all.extend_from_slice(args);
        root.json(&all)
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(pick(&[]).len(), 3);
    assert_eq!(pick(&["--role", "audit"]), ["b1"]);
    assert_eq!(pick(&["--cap", "review"]), ["b1"]);
    assert_eq!(pick(&["--gateway", "gw9"]), ["b1"]);
    assert_eq!(pick(&["--health", "healthy"]), ["a1"]);
    root.run(&["agent", "list"]).refused(2, "--all");
}

#[test]
fn policy_show_names_where_each_value_comes_from() {
    let root = Root::new();
    let cell = root.cell("Policy");
    root.ok(&["agent", "add", &cell, "a1"]);
    std::fs::write(
        root.cell_dir(&cell).join("config/policies.json"),
        r#"{"heartbeat_interval": 10, "max_retries": 5}"#,
    )
    .unwrap();
    let path = root.cell_dir(&cell).join("agents/a1.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    doc["policies"] = serde_json::json!({"heartbeat_ttl": 600});
    std::fs::write(&path, doc.to_string()).unwrap();
    let cell_json = root.cell_dir(&cell).join("cell.json");
    let mut doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&cell_json).unwrap()).unwrap();
    doc["policies"] = serde_json::json!({"auto_revive": "yes"});
    std::fs::write(&cell_json, doc.to_string()).unwrap();
    let shown = root.json(&["policy", "show", &cell, "a1"]);
    let find = |k: &str| {
        shown["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == k)
            .unwrap()
            .clone()
    };
    assert_eq!(find("heartbeat_interval")["value"], 10);
    assert_eq!(find("heartbeat_interval")["source"], "policies_file");
    assert_eq!(find("heartbeat_ttl")["source"], "agent");
    assert_eq!(find("auto_revive")["source"], "cell_json");
    assert_eq!(find("misses_down")["source"], "default");
    assert!(root
        .ok(&["policy", "show", &cell])
        .contains("config/policies.json"));
    // What the agent's ttl does to its health is a row of the health table
    // (ops::heartbeat: "a ttl outlasts misses_dead", and an agent's policies override).
}

/// A line-by-line check of the Prometheus text exposition format.
fn assert_prometheus_text(text: &str) -> usize {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut typed = std::collections::HashSet::new();
    let mut samples = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(name_ok(name), "bad HELP line: {line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let parts: Vec<&str> = rest.split(' ').collect();
            assert_eq!(parts.len(), 2, "bad TYPE line: {line}");
            assert!(
                name_ok(parts[0]) && ["gauge", "counter"].contains(&parts[1]),
                "bad TYPE line: {line}"
            );
            assert!(typed.insert(parts[0].to_string()), "TYPE twice: {line}");
        } else {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no value: {line}"));
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value: {line}"));
            let name = match series.split_once('{') {
                Some((name, labels)) => {
                    let labels = labels
                        .strip_suffix('}')
                        .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                    for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                        let (k, v) = pair
                            .split_once("=\"")
                            .unwrap_or_else(|| panic!("bad label: {line}"));
                        assert!(name_ok(k), "bad label name: {line}");
                        assert!(!v.trim_end_matches('"').contains('\n'));
                    }
                    name
                }
                None => series,
            };
            assert!(name_ok(name), "bad metric name: {line}");
            assert!(typed.contains(name), "sample before its TYPE: {line}");
            samples += 1;
        }
    }
    samples
}

#[test]
fn metrics_are_valid_prometheus_text() {
    let root = Root::new();
    let cell = root.cell("Metrics \"quoted\" name");
    root.ok(&["agent", "add", &cell, "a1"]);
    root.ok(&["agent", "beat", &cell, "a1"]);
    root.ok(&["task", "add", &cell, "t1", "--title", "x"]);
    let text = root.ok(&["metrics"]) + "\n";
    assert!(assert_prometheus_text(&text) > 10);
    assert!(text.contains(&format!("pas_agents{{cell=\"{cell}\",mission=\"Metrics \\\"quoted\\\" name\",health=\"healthy\"}} 1")), "{text}");
    assert!(text.contains(&format!(
        "pas_agent_heartbeats_total{{cell=\"{cell}\",agent=\"a1\"}} 1"
    )));
    assert!(text.contains(&format!("pas_tasks{{cell=\"{cell}\",state=\"pending\"}} 1")));
    let out = root.path.join("textfile/pas.prom");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let run = root
        .cmd(&["metrics", "--output"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(run.status.success() && run.stdout.is_empty());
    assert_prometheus_text(&std::fs::read_to_string(&out).unwrap());
}

#[test]
fn an_agent_file_pas_cannot_read_is_refused_in_one_line_and_named_by_validate() {
    let root = Root::new();
    let cell = root.cell("Hand edits");
    root.ok(&["agent", "add", &cell, "a1"]);
    root.ok(&["agent", "beat", &cell, "a1"]);
    let path = root.cell_dir(&cell).join("agents/a1.json");
    let original = std::fs::read_to_string(&path).unwrap();
    // A field pas keeps for itself, edited by hand into a shape the schema allows but pas
    // cannot deliver: it is refused, never delivered as something else.
    let mut doc: Value = serde_json::from_str(&original).unwrap();
    doc["pending_directive"] = serde_json::json!({"action": "restart"});
    std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let why = "agents/a1.json pending_directive.action: \"restart\" is not one of stop, summarize";
    let before = root.snapshot();
    root.run(&["agent", "beat", &cell, "a1"]).refused(5, why);
    root.run(&["agent", "fail", &cell, "a1", "--reason", "x"])
        .refused(5, why);
    root.run(&["agent", "show", &cell, "a1"]).refused(5, why);
    root.run(&["budget", "track", &cell, "a1", "--used", "5"])
        .refused(5, why);
    root.run(&["agent", "set", &cell, "a1", "--status", "paused"])
        .refused(5, why);
    assert_eq!(before, root.snapshot(), "a refusal changes nothing");
    // The fleet views name it as a file they cannot read.
    assert_eq!(root.run(&["check", &cell]).code, 2);
    let text = root.run(&["status", &cell]);
    assert!(
        text.stdout.contains("BROKEN  ") && text.stdout.contains(why),
        "{}",
        text.stdout
    );
    let status = root.json(&["status", &cell]);
    assert!(
        status["cells"][0]["problems"][0]
            .as_str()
            .unwrap()
            .contains(why),
        "{status}"
    );
    // validate names it too, though it follows the schema.
    let run = root.run(&["--json", "validate", &cell]);
    assert_eq!(run.code, 5, "{}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(
        report["problems"].as_array().unwrap().iter().any(|p| {
            p["file"] == "agents/a1.json"
                && p["reason"]
                    .as_str()
                    .unwrap()
                    .starts_with("pending_directive.action: \"restart\"")
        }),
        "{report:#}"
    );
    // Fixed by hand, the agent beats again.
    std::fs::write(&path, original).unwrap();
    assert_eq!(
        root.json(&["agent", "beat", &cell, "a1"])["heartbeat_count"],
        2
    );
    root.ok(&["validate", "--strict", &cell]);
}

#[test]
fn agent_set_and_show_speak_the_documented_words() {
    let root = Root::new();
    let cell = root.cell("Words");
    root.ok(&["agent", "add", &cell, "a1", "--role", "audit"]);
    root.run(&["agent", "set", &cell, "a1", "--status", "failed"])
        .refused(2, "failed");
    root.ok(&["agent", "set", &cell, "a1", "--status", "paused"]);
    assert_eq!(root.agent(&cell, "a1")["status"], "paused");
    assert_eq!(root.event_kinds(&cell).last().unwrap(), "agent.status");
    let shown = root.ok(&["agent", "show", &cell, "a1"]);
    for line in ["role", "status"] {
        let value = shown
            .lines()
            .find(|l| l.trim_start().starts_with(line))
            .unwrap();
        assert!(
            value.ends_with(if line == "role" { "audit" } else { "paused" }),
            "{shown}"
        );
    }
    // A paused agent is told to stop; a file without role or status reads as the
    // documented defaults (write, idle) and a beat makes it active.
    assert_eq!(
        root.json(&["agent", "beat", &cell, "a1", "--status", "DEGRADED"])["directive"],
        "stop"
    );
    let path = root.cell_dir(&cell).join("agents/a2.json");
    std::fs::write(&path, r#"{"agent_id": "a2"}"#).unwrap();
    let list = root.json(&["agent", "list", &cell, "--role", "write"]);
    assert_eq!(list[0]["id"], "a2", "{list}");
    assert_eq!(list[0]["status"], "idle");
    root.ok(&["agent", "beat", &cell, "a2"]);
    assert_eq!(root.agent(&cell, "a2")["status"], "active");
}
