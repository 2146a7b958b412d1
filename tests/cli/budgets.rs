//! Budgets: context, spend, reservations against quota, time.

use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};

use serde_json::{json, Value};

use crate::harness::Root;

#[test]
fn an_agent_walks_ok_warning_breach_and_is_compacted() {
    let root = Root::new();
    let cell = root.cell("Context");
    root.ok(&["agent", "add", &cell, "a1"]);
    root.ok(&[
        "agent",
        "beat",
        &cell,
        "a1",
        "--ctx-used",
        "20000",
        "--ctx-limit",
        "100000",
        "--note",
        "reading the spec",
        "--progress",
        "0.4",
    ]);
    assert_eq!(
        root.agent(&cell, "a1")["ctx_state"],
        Value::Null,
        "ok is the default, nothing recorded"
    );
    root.ok(&["agent", "beat", &cell, "a1", "--ctx-used", "55000"]);
    assert_eq!(root.agent(&cell, "a1")["ctx_state"], "warning");
    assert_eq!(root.run(&["budget", "check", &cell]).code, 1);
    // The breach comes from a tracker, so the directive arrives on the agent's next beat.
    root.ok(&["budget", "track", &cell, "a1", "--used", "80000"]);
    let doc = root.agent(&cell, "a1");
    assert_eq!(
        doc["ctx_used"], 80000,
        "the use as reported: clearing is the agent's"
    );
    assert_eq!(doc["ctx_state"], "breach");
    assert_eq!(doc["checkpoint"]["generation"], 1, "state saved");
    let summaries: Vec<_> =
        std::fs::read_dir(root.cell_dir(&cell).join("checkpoints/a1/summaries"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
    assert_eq!(summaries.len(), 1);
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(&summaries[0]).unwrap()).unwrap();
    assert_eq!(summary["ctx_used_before"], 80000);
    assert_eq!(summary["last_note"], "reading the spec");
    assert_eq!(summary["progress"], 0.4);
    assert!(summary["time"].is_string() && summary["reason"].as_str().unwrap().contains("80%"));
    let reply = root.json(&["agent", "beat", &cell, "a1"]);
    assert_eq!(
        (reply["directive"].as_str(), reply["reason"].as_str()),
        (Some("summarize"), Some("context_budget"))
    );
    assert_eq!(
        root.json(&["agent", "beat", &cell, "a1"])["directive"],
        Value::Null,
        "delivered once"
    );
    // The breach is not over until the agent says its context is smaller.
    assert_eq!(root.run(&["budget", "check", &cell]).code, 2);
    root.ok(&["agent", "beat", &cell, "a1", "--ctx-used", "85000"]);
    assert_eq!(
        root.json(&["budget", "history", &cell, "a1"])
            .as_array()
            .unwrap()
            .len(),
        1,
        "the same breach, just compacted: no second compaction, no thrashing"
    );
    assert_eq!(root.agent(&cell, "a1")["budget_flag"], Value::Null);
    root.ok(&["agent", "beat", &cell, "a1", "--ctx-used", "6000"]);
    assert_eq!(root.run(&["budget", "check", &cell]).code, 0);
    let history = root.json(&["budget", "history", &cell, "a1"]);
    assert_eq!(history.as_array().unwrap().len(), 1);
    assert_eq!(history[0]["checkpoint_generation"], 1);
    let status = root.json(&["status", &cell]);
    assert_eq!(status["cells"][0]["agents"][0]["ctx_state"], "ok");
    assert_eq!(status["cells"][0]["timeout"], 3600.0);
    assert!(root.ok(&["metrics"]).contains(&format!(
        "pas_agent_context_ratio{{cell=\"{cell}\",agent=\"a1\"}} 0"
    )));
    let kinds = root.event_kinds(&cell);
    for k in [
        "budget.context_warning",
        "budget.context_breach",
        "budget.compacted",
    ] {
        assert!(kinds.contains(&k.to_string()), "{k} missing from {kinds:?}");
    }
    // A new breach right away is the thrash guard's business, not another compaction.
    root.ok(&["agent", "beat", &cell, "a1", "--ctx-used", "90000"]);
    assert_eq!(root.agent(&cell, "a1")["budget_flag"], "thrashing");
    assert_eq!(
        root.json(&["budget", "history", &cell, "a1"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        root.json(&["budget", &cell])["cells"][0]["agents"][0]["flag"],
        "thrashing"
    );
}

#[test]
fn fifty_concurrent_reservations_never_exceed_the_quota() {
    let root = Root::new();
    let cell = root.cell("Quota");
    // The machine's capacity above the cell's quota, so the quota is what refuses.
    std::fs::write(
        root.path.join("pas.toml"),
        "[capacity]\ncpu = 64\nmem_mb = 64000\n",
    )
    .unwrap();
    root.ok(&["agent", "add", &cell, "a1"]);
    root.ok(&["quota", "set", &cell, "--cpu", "10 cores", "--mem", "10GB"]);
    let children: Vec<Child> = (0..50)
        .map(|i| {
            root.cmd(&[
                "reserve",
                &cell,
                "--job",
                &format!("job{i:02}"),
                "--agent",
                "a1",
                "--cpu",
                "1",
                "--mem",
                "512MiB",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let mut ok = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        if out.status.success() {
            ok += 1;
        } else {
            assert_eq!(out.status.code(), Some(4));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains(
                    "over quota: cpu: 1 core asked, 0 cores free of 10 cores (short by 1 core)"
                ),
                "{err}"
            );
        }
    }
    assert_eq!(ok, 10);
    let quota = root.json(&["quota", &cell]);
    assert_eq!(quota[0]["capacity"], 10.0);
    assert_eq!(quota[0]["reserved"], 10.0);
    assert_eq!(quota[0]["free"], 0.0);
    assert_eq!(quota[1]["reserved"], 10.0 * 512.0 * 1048576.0);
    assert_eq!(
        root.json(&["reservations", &cell, "--status", "active"])
            .as_array()
            .unwrap()
            .len(),
        10
    );
    crate::schemas::assert_root_follows_schemas(&root);
}

#[test]
fn releasing_twice_is_harmless_and_leases_end_with_their_agent() {
    let root = Root::new();
    let cell = root.cell("Lease");
    root.ok(&["agent", "add", &cell, "a1"]);
    root.ok(&["agent", "add", &cell, "a2"]);
    root.ok(&[
        "reserve", &cell, "--job", "j1", "--agent", "a1", "--cpu", "1", "--port", "8080",
    ]);
    root.run(&[
        "reserve", &cell, "--job", "j2", "--agent", "a2", "--port", "8080",
    ])
    .refused(4, "port 8080 is already reserved by job j1");
    root.ok(&[
        "reserve", &cell, "--job", "j2", "--agent", "a2", "--cpu", "0.5",
    ]);
    assert_eq!(root.json(&["release", &cell, "j1"])["released"], true);
    assert_eq!(root.json(&["release", &cell, "j1"])["released"], false);
    root.run(&["release", &cell, "nope"])
        .refused(3, "no reservation for job nope");
    root.ok(&["agent", "rm", &cell, "a2"]);
    let j2 = root
        .json(&["reservations", &cell])
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["job"] == "j2")
        .unwrap()
        .clone();
    assert_eq!(
        (j2["status"].as_str(), j2["end_reason"].as_str()),
        (Some("released"), Some("agent removed"))
    );
    assert_eq!(root.json(&["quota", &cell])[0]["reserved"], 0.0);
}

#[test]
fn kill_stops_the_jobs_process_group_and_ends_the_lease() {
    let root = Root::new();
    let cell = root.cell("Kill");
    std::fs::write(root.path.join("pas.toml"), "[capacity]\ngpu = 1\n").unwrap();
    root.ok(&["agent", "add", &cell, "a1"]);
    // A group of two: the shell and its sleep. On SIGTERM the shell collects its sleep and
    // dies of the signal itself, so no zombie of the group is left for a reaper to find.
    let mut job = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"trap 'wait; trap - TERM; kill -TERM $$' TERM; sleep 300 & wait"#)
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = job.id().to_string();
    // The shell is this test's child: collect it as soon as it ends, so the group is gone
    // when pas looks (a zombie would keep it alive through the grace period and after).
    let ended = std::thread::spawn(move || job.wait().unwrap());
    root.ok(&[
        "reserve", &cell, "--job", "train", "--agent", "a1", "--gpu", "1", "--pgid", &pgid,
    ]);
    let out = root.json(&["kill", &cell, "train", "--grace", "1"]);
    assert_eq!(out["released"], true);
    // Killed only if a loaded machine kept the shell from its trap for the whole grace.
    assert!(
        ["terminated", "killed"].contains(&out["outcome"].as_str().unwrap()),
        "{out}"
    );
    assert!(
        ended.join().unwrap().code().is_none(),
        "the job was signalled"
    );
    assert_eq!(root.json(&["reservations", &cell])[0]["status"], "killed");
}

#[test]
fn quantities_parse_and_garbage_is_refused_with_the_field_named() {
    let root = Root::new();
    let cell = root.cell("Units");
    root.ok(&["agent", "add", &cell, "a1"]);
    root.ok(&[
        "quota",
        "set",
        &cell,
        "--cpu",
        "1.5",
        "--mem",
        "512MiB",
        "--gpu",
        "2 gpus",
        "--gpu-mem",
        "4GB",
    ]);
    let q = root.json(&["quota", &cell]);
    assert_eq!(q[0]["capacity"], 1.5);
    assert_eq!(q[1]["capacity"], 512.0 * 1048576.0);
    assert_eq!(q[2]["capacity"], 2.0);
    assert_eq!(q[3]["capacity"], 4e9);
    let before = root.snapshot();
    root.run(&["quota", "set", &cell, "--mem", "lots"])
        .refused(2, "--mem: cannot read \"lots\" as a quantity");
    root.run(&[
        "reserve", &cell, "--job", "j", "--agent", "a1", "--cpu", "many",
    ])
    .refused(2, "--cpu: cannot read");
    assert_eq!(before, root.snapshot());
    let path = root.cell_dir(&cell).join("config/isolation.json");
    let mut iso: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    iso["resource_limits"]["memory"] = json!("lots");
    std::fs::write(&path, iso.to_string()).unwrap();
    root.run(&["quota", &cell]).refused(
        2,
        "config/isolation.json resource_limits.memory: cannot read \"lots\"",
    );
}

#[test]
fn a_cell_past_its_timeout_fails_and_budget_check_speaks_0_1_2() {
    let root = Root::new();
    let cell = root.cell("Time");
    root.ok(&["agent", "add", &cell, "a1"]);
    assert_eq!(root.run(&["budget", "check", &cell]).code, 0);
    root.ok(&[
        "agent",
        "beat",
        &cell,
        "a1",
        "--ctx-used",
        "6",
        "--ctx-limit",
        "10",
    ]);
    let warn = root.run(&["budget", "check", &cell]);
    assert_eq!(warn.code, 1);
    assert!(warn.stdout.starts_with("BUDGET WARNING"), "{}", warn.stdout);
    // Move the cell's start an hour and a bit into the past: its 3600 s budget is spent.
    let path = root.cell_dir(&cell).join("cell.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    doc["created_at"] = json!((chrono::Utc::now() - chrono::Duration::seconds(3700)).to_rfc3339());
    std::fs::write(&path, doc.to_string()).unwrap();
    assert_eq!(root.run(&["budget", "check", &cell]).code, 2);
    root.ok(&["revive", &cell]);
    assert_eq!(
        root.read_json(format!("{cell}/cell.json"))["status"],
        "failed"
    );
    assert!(root
        .event_kinds(&cell)
        .contains(&"budget.cell_timeout".to_string()));
    assert_eq!(root.run(&["budget", "check", &cell]).code, 2);
}

#[test]
fn a_hard_spend_limit_stops_the_agent_until_it_is_raised() {
    let root = Root::new();
    let cell = root.cell("Spend");
    root.ok(&["agent", "add", &cell, "a1"]);
    root.policies(&cell, json!({"cost_soft_usd": 1, "cost_hard_usd": 5}));
    assert_eq!(
        root.json(&["agent", "beat", &cell, "a1", "--cost-usd", "0.5"])["directive"],
        Value::Null
    );
    assert_eq!(
        root.json(&["agent", "beat", &cell, "a1", "--cost-usd", "2"])["directive"],
        Value::Null
    );
    assert_eq!(root.run(&["budget", "check", &cell]).code, 1);
    let reply = root.json(&["agent", "beat", &cell, "a1", "--cost-usd", "5.5"]);
    assert_eq!(
        (reply["directive"].as_str(), reply["reason"].as_str()),
        (Some("stop"), Some("budget_reached"))
    );
    assert_eq!(root.run(&["budget", "check", &cell]).code, 2);
    assert_eq!(root.agent(&cell, "a1")["cost_usd"], 5.5, "state kept");
    root.policies(&cell, json!({"cost_hard_usd": 10}));
    assert_eq!(
        root.json(&["agent", "beat", &cell, "a1"])["directive"],
        Value::Null,
        "raising the limit lets it go on"
    );
    let kinds = root.event_kinds(&cell);
    assert!(
        kinds.contains(&"budget.spend_warning".to_string())
            && kinds.contains(&"budget.reached".to_string()),
        "{kinds:?}"
    );
}

#[test]
fn the_tables_show_what_the_json_holds() {
    let root = Root::new();
    let cell = root.cell("Tables");
    root.ok(&["agent", "add", &cell, "a1"]);
    root.ok(&[
        "agent",
        "beat",
        &cell,
        "a1",
        "--ctx-used",
        "80",
        "--ctx-limit",
        "100",
    ]);
    let history = root.ok(&["budget", "history", &cell]);
    let row = history.lines().nth(1).unwrap_or_default();
    assert!(
        row.contains(" a1 ") && row.contains(" 80 ") && row.contains("context budget breached"),
        "{history}"
    );
    root.ok(&[
        "reserve", &cell, "--job", "j1", "--agent", "a1", "--cpu", "2", "--port", "8080",
    ]);
    let table = root.ok(&["reservations", &cell, "--status", "active"]);
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with("j1")
            && row.contains("2 cores")
            && row.contains("8080")
            && row.ends_with("active"),
        "{table}"
    );
    assert!(!root
        .ok(&["reservations", &cell, "--status", "killed"])
        .contains("j1"));
    let shown = root.ok(&["checkpoint", "show", &cell, "a1"]);
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("reason") && l.ends_with("context budget breach")),
        "{shown}"
    );
}
