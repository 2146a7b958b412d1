//! Tasks as a work queue: ready, claim, done, fail, reap, handoff, permissions, missions.

use std::process::Stdio;

use serde_json::{json, Value};

use crate::harness::Root;

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t["task_id"].as_str().unwrap().to_string())
        .collect()
}

fn as_agent(root: &Root, agent: &str, args: &[&str]) -> crate::harness::Run {
    root.run_env(args, "PAS_AGENT", agent)
}

fn write_json(root: &Root, rel: String, value: Value) {
    std::fs::write(
        root.path.join(rel),
        serde_json::to_string_pretty(&value).unwrap(),
    )
    .unwrap();
}

#[test]
fn ready_tasks_follow_dependencies_then_priority_then_age() {
    let root = Root::new();
    let cell = root.cell("Ready");
    root.ok(&["agent", "add", &cell, "a1", "--cap", "rust"]);
    root.ok(&["agent", "add", &cell, "a2"]);
    root.ok(&[
        "task",
        "add",
        &cell,
        "old_low",
        "--title",
        "x",
        "--priority",
        "low",
    ]);
    root.ok(&["task", "add", &cell, "medium", "--title", "x"]);
    root.ok(&[
        "task",
        "add",
        &cell,
        "high",
        "--title",
        "x",
        "--priority",
        "high",
    ]);
    root.ok(&[
        "task",
        "add",
        &cell,
        "after_high",
        "--title",
        "x",
        "--priority",
        "high",
        "--dep",
        "high",
    ]);
    root.ok(&[
        "task",
        "add",
        &cell,
        "for_a2",
        "--title",
        "x",
        "--priority",
        "high",
        "--assign",
        "a2",
    ]);
    assert_eq!(
        ids(&root.json(&["task", "ready", &cell])),
        ["high", "for_a2", "medium", "old_low"]
    );
    assert_eq!(
        ids(&root.json(&["task", "ready", &cell, "--agent", "a1"])),
        ["high", "medium", "old_low"]
    );
    // A task that needs a capability only a1 has.
    let path = format!("{cell}/tasks/medium.json");
    let mut t = root.read_json(&path);
    t["required_capabilities"] = json!(["rust"]);
    write_json(&root, path, t);
    assert_eq!(
        ids(&root.json(&["task", "ready", &cell, "--agent", "a2"])),
        ["high", "for_a2", "old_low"]
    );

    // Claims follow the same order; dependencies open up as work completes.
    assert_eq!(
        as_agent(&root, "a1", &["task", "claim", &cell])
            .stdout
            .trim(),
        "high"
    );
    assert_eq!(
        ids(&root.json(&["task", "ready", &cell, "--agent", "a1"])),
        ["medium", "old_low"]
    );
    as_agent(&root, "a1", &["task", "done", &cell, "high"]);
    assert_eq!(
        ids(&root.json(&["task", "ready", &cell, "--agent", "a1"])),
        ["after_high", "medium", "old_low"]
    );
    let agent = root.read_json(format!("{cell}/agents/a1.json"));
    assert_eq!(agent["current_task"], Value::Null);
    let t = root.read_json(format!("{cell}/tasks/high.json"));
    assert_eq!(t["status"], "completed");
    assert_eq!(t["claimed_by"], "a1");
    assert!(t["started_at"].is_string() && t["completed_at"].is_string());
    assert_eq!(t["attempts"], 1);
}

#[test]
fn a_shell_claim_loop_with_twenty_agents_takes_each_task_exactly_once() {
    let root = Root::new();
    let cell = root.ok(&["cell", "create", "--name", "Rush", "--max-agents", "20"]);
    for i in 0..20 {
        root.ok(&["agent", "add", &cell, &format!("a{i:02}")]);
    }
    let mission_tasks: Vec<Value> = (0..100)
        .map(|i| json!({"task_id": format!("t{i:03}"), "title": "work"}))
        .collect();
    // Add 100 tasks quickly through hand-written files (as another tool would).
    for t in &mission_tasks {
        let id = t["task_id"].as_str().unwrap();
        write_json(
            &root,
            format!("{cell}/tasks/{id}.json"),
            json!({"task_id": id, "title": "work", "status": "pending", "priority": "medium", "dependencies": []}),
        );
    }
    // The loop from the docs; one more claim afterwards shows why it ended.
    let script = r#"while id=$(pas task claim "$PAS_CELL"); do echo "$id"; done; pas task claim "$PAS_CELL"; echo "exit=$?""#;
    let bin_dir = std::path::Path::new(crate::harness::pas_bin())
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let children: Vec<_> = (0..20)
        .map(|i| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .env("PATH", &path)
                .env("PAS_ROOT", &root.path)
                .env("PAS_CELL", &cell)
                .env("PAS_AGENT", format!("a{i:02}"))
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut claimed = Vec::new();
    for c in children {
        let out = String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap();
        let mut lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines.pop(),
            Some("exit=7"),
            "the loop ends on 'nothing ready' (exit 7)"
        );
        claimed.extend(lines.into_iter().map(str::to_string));
    }
    claimed.sort();
    let unique: std::collections::BTreeSet<_> = claimed.iter().cloned().collect();
    assert_eq!(
        claimed.len(),
        100,
        "every task claimed once: {} claims",
        claimed.len()
    );
    assert_eq!(unique.len(), 100);
    let in_progress = root.json(&["task", "list", &cell, "--status", "in_progress"]);
    assert_eq!(in_progress.as_array().unwrap().len(), 100);
}

#[test]
fn nothing_ready_is_exit_seven_with_no_output() {
    let root = Root::new();
    let cell = root.cell("Empty");
    root.ok(&["agent", "add", &cell, "a1"]);
    let run = as_agent(&root, "a1", &["task", "claim", &cell]);
    assert_eq!(run.code, 7);
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr, "");
    root.run(&["task", "claim", &cell])
        .refused(2, "which agent claims");
}

#[test]
fn a_failed_task_is_retried_until_max_retries_then_stays_failed() {
    let root = Root::new();
    let cell = root.cell("Retry");
    root.ok(&["agent", "add", &cell, "a1"]);
    root.ok(&["task", "add", &cell, "t1", "--title", "flaky"]);
    std::fs::write(
        root.cell_dir(&cell).join("config/policies.json"),
        r#"{"max_retries": 2}"#,
    )
    .unwrap();
    as_agent(&root, "a1", &["task", "claim", &cell]);
    let first: Value = serde_json::from_str(
        &as_agent(
            &root,
            "a1",
            &[
                "--json",
                "task",
                "fail",
                &cell,
                "t1",
                "--reason",
                "flaky test",
            ],
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(first["requeued"], true);
    let t = root.read_json(format!("{cell}/tasks/t1.json"));
    assert_eq!(t["status"], "pending");
    assert_eq!(t["last_error"], "flaky test");
    assert_eq!(
        t["assigned_to"],
        Value::Null,
        "a task assigned by its claim goes back to everyone"
    );
    as_agent(&root, "a1", &["task", "claim", &cell]);
    let second: Value = serde_json::from_str(
        &as_agent(
            &root,
            "a1",
            &["--json", "task", "fail", &cell, "t1", "--reason", "again"],
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(second["requeued"], false);
    assert_eq!(second["attempts"], 2);
    assert_eq!(
        root.read_json(format!("{cell}/tasks/t1.json"))["status"],
        "failed"
    );
    assert_eq!(as_agent(&root, "a1", &["task", "claim", &cell]).code, 7);
    let errors = root.ok(&["--json", "events", &cell, "--level", "error"]);
    assert!(errors.contains("\"task.failed\""), "{errors}");
    // Reporting a task that is not in progress is refused.
    as_agent(&root, "a1", &["task", "done", &cell, "t1"]).refused(4, "not in_progress");
}

#[test]
fn a_task_past_its_timeout_is_reaped_and_requeued() {
    let root = Root::new();
    let cell = root.cell("Timeout");
    root.ok(&["agent", "add", &cell, "a1"]);
    root.ok(&[
        "task",
        "add",
        &cell,
        "t1",
        "--title",
        "slow",
        "--timeout",
        "60",
    ]);
    root.ok(&[
        "task",
        "add",
        &cell,
        "t2",
        "--title",
        "fresh",
        "--timeout",
        "60",
    ]);
    as_agent(&root, "a1", &["task", "claim", &cell]);
    as_agent(&root, "a1", &["task", "claim", &cell]);
    assert_eq!(root.json(&["task", "reap", &cell]), json!([]));
    let path = format!("{cell}/tasks/t1.json");
    let mut t = root.read_json(&path);
    t["started_at"] = json!((chrono::Utc::now() - chrono::Duration::seconds(120)).to_rfc3339());
    write_json(&root, path.clone(), t);
    let reaped = root.json(&["task", "reap", &cell]);
    assert_eq!(reaped[0]["task"], "t1");
    assert_eq!(reaped[0]["requeued"], true);
    let t = root.read_json(&path);
    assert_eq!(t["status"], "pending");
    assert_eq!(t["last_error"], "timeout");
    assert_eq!(
        root.read_json(format!("{cell}/tasks/t2.json"))["status"],
        "in_progress"
    );
}

#[test]
fn only_the_claiming_agent_or_an_operator_reports_and_permissions_are_enforced() {
    let root = Root::new();
    let cell = root.cell("Perms");
    for a in ["a1", "a2", "guest"] {
        root.ok(&["agent", "add", &cell, a]);
    }
    root.ok(&[
        "task", "add", &cell, "t1", "--title", "one", "--assign", "a1",
    ]);
    root.ok(&["task", "add", &cell, "secret", "--title", "two"]);
    write_json(
        &root,
        format!("{cell}/config/permissions.json"),
        json!({"guest": {"read": ["t1"], "write": [], "execute": [], "handoff_to": [], "handoff_from": []}}),
    );

    as_agent(&root, "guest", &["task", "show", &cell, "secret"])
        .refused(9, "guest lacks the read permission on task secret");
    assert_eq!(
        as_agent(&root, "guest", &["task", "show", &cell, "t1"]).code,
        0
    );
    assert_eq!(
        as_agent(&root, "guest", &["task", "claim", &cell]).code,
        7,
        "guest may execute nothing"
    );
    assert_eq!(
        root.json(&["task", "ready", &cell, "--agent", "guest"]),
        json!([])
    );

    assert_eq!(
        as_agent(&root, "a1", &["task", "claim", &cell])
            .stdout
            .trim(),
        "t1"
    );
    as_agent(&root, "a2", &["task", "done", &cell, "t1"]).refused(9, "claimed by a1, not a2");
    root.run(&["--as", "a2", "task", "fail", &cell, "t1", "--reason", "x"])
        .refused(9, "claimed by a1, not a2");
    // An operator (no PAS_AGENT) may report for anyone.
    root.ok(&["task", "done", &cell, "t1"]);
}

#[test]
fn handoffs_are_allowed_refused_and_approved() {
    let root = Root::new();
    let cell = root.cell("Handoff");
    for a in ["a1", "a2", "a3"] {
        root.ok(&["agent", "add", &cell, a]);
    }
    root.ok(&[
        "task", "add", &cell, "t1", "--title", "one", "--assign", "a1",
    ]);
    root.ok(&[
        "task", "add", &cell, "t2", "--title", "two", "--assign", "a1",
    ]);
    as_agent(&root, "a1", &["task", "claim", &cell]);

    // Allowed: a1 hands its in-progress task to a2.
    let out: Value = serde_json::from_str(
        &as_agent(
            &root,
            "a1",
            &["--json", "task", "handoff", &cell, "t1", "--to", "a2"],
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(out["result"], "done");
    let t = root.read_json(format!("{cell}/tasks/t1.json"));
    assert_eq!(
        (t["assigned_to"].as_str(), t["claimed_by"].as_str()),
        (Some("a2"), Some("a2"))
    );
    assert_eq!(
        root.read_json(format!("{cell}/agents/a2.json"))["current_task"],
        "t1"
    );
    assert_eq!(
        root.read_json(format!("{cell}/agents/a1.json"))["current_task"],
        Value::Null
    );

    // Refused by permissions: a3 takes work from nobody but a2.
    write_json(
        &root,
        format!("{cell}/config/permissions.json"),
        json!({"a3": {"read": ["*"], "write": ["*"], "execute": ["*"], "handoff_to": [], "handoff_from": ["a2"]}}),
    );
    let before = root.snapshot();
    root.run(&["task", "handoff", &cell, "t2", "--to", "a3"])
        .refused(9, "a3 may not take tasks from a1");
    // Refused by policy.
    write_json(
        &root,
        format!("{cell}/config/policies.json"),
        json!({"handoff_allowed": false}),
    );
    root.run(&["task", "handoff", &cell, "t2", "--to", "a2"])
        .refused(9, "handoffs are not allowed");
    // The events log is the only thing that may differ: nothing else changed.
    let after = root.snapshot();
    for (k, v) in &before {
        if !k.ends_with(".json") || k.contains("config/") {
            continue;
        }
        assert_eq!(Some(v), after.get(k), "{k} changed");
    }

    // Manual approval: a request first, the move on approval.
    write_json(
        &root,
        format!("{cell}/config/policies.json"),
        json!({"handoff_approval": "manual"}),
    );
    let request = root.ok(&["task", "handoff", &cell, "t2", "--to", "a2"]);
    assert!(request.starts_with("h-"), "{request}");
    assert_eq!(
        root.read_json(format!("{cell}/tasks/t2.json"))["assigned_to"],
        "a1"
    );
    root.ok(&["task", "handoff", "approve", &cell, &request]);
    assert_eq!(
        root.read_json(format!("{cell}/tasks/t2.json"))["assigned_to"],
        "a2"
    );
    root.run(&["task", "handoff", "approve", &cell, &request])
        .refused(3, "no pending handoff request");
    let kinds = root.ok(&["--json", "events", &cell, "--kind", "task."]);
    assert_eq!(kinds.matches("\"task.handoff\"").count(), 2);
    assert_eq!(kinds.matches("\"task.handoff_requested\"").count(), 1);
}

#[test]
fn the_cell_completes_when_every_task_does() {
    let root = Root::new();
    let cell = root.cell("Finish");
    root.ok(&["agent", "add", &cell, "a1"]);
    root.ok(&["task", "add", &cell, "t1", "--title", "one"]);
    root.ok(&["task", "add", &cell, "t2", "--title", "two", "--dep", "t1"]);
    let artifact = root.cell_dir(&cell).join("artifacts/report.md");
    std::fs::write(&artifact, "done").unwrap();
    for expected in ["t1", "t2"] {
        assert_eq!(
            as_agent(&root, "a1", &["task", "claim", &cell])
                .stdout
                .trim(),
            expected
        );
        let status = root.ok(&["status", &cell]);
        assert!(status.contains("1 in progress"), "{status}");
        as_agent(
            &root,
            "a1",
            &[
                "task",
                "done",
                &cell,
                expected,
                "--artifact",
                "artifacts/report.md",
            ],
        );
    }
    assert_eq!(
        root.read_json(format!("{cell}/tasks/t2.json"))["artifacts"],
        json!(["artifacts/report.md"])
    );
    assert_eq!(
        root.read_json(format!("{cell}/cell.json"))["status"],
        "completed"
    );
    assert!(root.ok(&["status", &cell]).contains("tasks 2/2 done"));
    as_agent(
        &root,
        "a1",
        &["task", "done", &cell, "t1", "--artifact", "nope.txt"],
    )
    .refused(3, "artifact nope.txt does not exist");
}

#[test]
fn a_mission_file_creates_everything_or_nothing_and_round_trips() {
    let root = Root::new();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/mission.json");
    let mut mission: Value =
        serde_json::from_str(&std::fs::read_to_string(&example).unwrap()).unwrap();

    // One bad task: nothing is created, and the task is named.
    mission["tasks"][1]["dependencies"] = json!(["ghost"]);
    let bad = std::env::temp_dir().join(format!("pas-bad-mission-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&bad, mission.to_string()).unwrap();
    let before = root.snapshot();
    root.run(&["cell", "create", "--from", bad.to_str().unwrap()])
        .refused(2, "task chapter_1 (tasks[1]) depends on unknown task ghost");
    mission["tasks"][1]["dependencies"] = json!(["outline"]);
    mission["tasks"][3]["priority"] = json!("asap");
    std::fs::write(&bad, mission.to_string()).unwrap();
    root.run(&["cell", "create", "--from", bad.to_str().unwrap()])
        .refused(2, "task review (tasks[3]) field priority");
    assert_eq!(before, root.snapshot());
    assert_eq!(root.json(&["cell", "list"]), json!([]));
    std::fs::remove_file(&bad).unwrap();

    let cell = root.ok(&["cell", "create", "--from", example.to_str().unwrap()]);
    assert_eq!(
        root.json(&["agent", "list", &cell])
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        root.json(&["task", "list", &cell])
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let perms = root.read_json(format!("{cell}/config/permissions.json"));
    assert_eq!(perms["reviewer"]["write"], json!(["review"]));
    assert_eq!(
        root.read_json(format!("{cell}/config/policies.json"))["substitute_agents"],
        json!(["writer_2"])
    );
    assert_eq!(
        root.read_json(format!("{cell}/cell.json"))["objective"],
        "Ship a user guide for the pas command line."
    );
    root.ok(&["validate", "--strict"]);

    // Work happens; the export still describes the mission, not the run.
    as_agent(&root, "lead", &["task", "claim", &cell]);
    root.ok(&["agent", "beat", &cell, "lead"]);
    let exported = root.json(&["cell", "export", &cell]);
    let file = root.path.join("exported.json");
    std::fs::write(&file, exported.to_string()).unwrap();
    let again = root.ok(&["cell", "create", "--from", file.to_str().unwrap()]);
    let reexported = root.json(&["cell", "export", &again]);
    assert_eq!(exported["agents"], reexported["agents"]);
    assert_eq!(exported["tasks"], reexported["tasks"]);
    assert_eq!(exported["mission_name"], "Docs sprint");
    let original_ids: Vec<&str> = mission["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task_id"].as_str().unwrap())
        .collect();
    let exported_ids: Vec<&str> = exported["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(original_ids, exported_ids);
    // From stdin too.
    let out = root
        .cmd(&["cell", "create", "--from", "-"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The task ids of the cell's ready index (`.pas/ready/`): what its entry names say.
fn index_ids(root: &Root, cell: &str) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(root.cell_dir(cell).join(".pas/ready"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                // `<rank><0 | 1 and the time>-<task id>+<assignee>`: the time has no '-'.
                .filter_map(|n| Some(n.split_once('-')?.1.rsplit_once('+')?.0.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The index holds exactly the pending tasks and `pas validate --strict` finds nothing.
fn index_matches(root: &Root, cell: &str, step: &str) {
    let pending: std::collections::BTreeSet<String> =
        ids(&root.json(&["task", "list", cell, "--status", "pending"]))
            .into_iter()
            .collect();
    assert_eq!(index_ids(root, cell), pending, "after {step}");
    let run = root.run(&["validate", "--strict", cell]);
    assert_eq!(run.code, 0, "after {step}: {}{}", run.stdout, run.stderr);
}

fn claim(root: &Root, cell: &str, agent: &str) -> String {
    let run = as_agent(root, agent, &["task", "claim", cell]);
    if run.code == 7 {
        return "nothing".to_string();
    }
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.stdout.trim().to_string()
}

#[test]
fn the_ready_index_follows_every_task_change_and_dependency_chains() {
    let root = Root::new();
    let cell = root.cell("Index");
    for a in ["a1", "a2", "a3"] {
        root.ok(&["agent", "add", &cell, a]);
    }
    root.ok(&["task", "reindex", &cell]);
    index_matches(&root, &cell, "an empty reindex");
    let add = |args: &[&str]| {
        let mut all = vec!["task", "add", &cell];
        all.extend_from_slice(args);
        root.ok(&all);
    };
    add(&["t1", "--title", "first of a chain"]);
    add(&["t2", "--title", "second", "--dep", "t1"]);
    add(&["t3", "--title", "third", "--dep", "t2"]);
    add(&["low", "--title", "low", "--priority", "low"]);
    add(&["mine", "--title", "for a2", "--assign", "a2"]);
    add(&["urgent", "--title", "urgent", "--priority", "high"]);
    add(&["gone", "--title", "for a3", "--assign", "a3"]);
    index_matches(&root, &cell, "adds");
    assert!(
        index_ids(&root, &cell).contains("t3"),
        "blocked tasks are indexed too"
    );

    // Priority, then age; blocked and other agents' tasks are passed over.
    assert_eq!(claim(&root, &cell, "a1"), "urgent");
    assert_eq!(claim(&root, &cell, "a1"), "t1");
    assert_eq!(claim(&root, &cell, "a1"), "low");
    index_matches(&root, &cell, "claims");
    assert_eq!(
        claim(&root, &cell, "a1"),
        "nothing",
        "t2 waits for t1; the rest are not a1's"
    );
    assert_eq!(claim(&root, &cell, "a2"), "mine");

    // A finished dependency makes its dependant claimable.
    as_agent(&root, "a1", &["task", "done", &cell, "t1"]);
    assert_eq!(claim(&root, &cell, "a2"), "t2");
    // A failed attempt puts it back (with its entry).
    as_agent(
        &root,
        "a2",
        &["task", "fail", &cell, "t2", "--reason", "flaky"],
    );
    index_matches(&root, &cell, "a requeue");
    assert_eq!(claim(&root, &cell, "a1"), "t2");
    as_agent(&root, "a1", &["task", "done", &cell, "t2"]);
    assert_eq!(claim(&root, &cell, "a1"), "t3");

    // Removing an agent hands its pending task back to the queue, unassigned.
    root.ok(&["agent", "rm", &cell, "a3", "--force"]);
    index_matches(&root, &cell, "an agent's removal");
    assert_eq!(claim(&root, &cell, "a2"), "gone");
    // A handoff of a claimed task keeps it out of the index.
    root.ok(&["task", "handoff", &cell, "gone", "--to", "a1"]);
    index_matches(&root, &cell, "a handoff");
    assert_eq!(claim(&root, &cell, "a2"), "nothing");
}

/// Writes a task file as a script should: a temporary name, then a rename into tasks/.
fn write_task_by_hand(root: &Root, cell: &str, id: &str, value: Value) {
    let tmp = root.cell_dir(cell).join(format!(".{id}.json.tmp"));
    std::fs::write(&tmp, serde_json::to_string_pretty(&value).unwrap()).unwrap();
    std::fs::rename(&tmp, root.cell_dir(cell).join(format!("tasks/{id}.json"))).unwrap();
}

#[test]
fn a_task_written_by_hand_is_claimed_in_its_place_and_a_broken_index_is_reported() {
    let root = Root::new();
    let cell = root.cell("By hand");
    root.ok(&["agent", "add", &cell, "a1"]);
    for t in ["t1", "t2", "t3"] {
        root.ok(&["task", "add", &cell, t, "--title", t]);
    }
    assert_eq!(
        claim(&root, &cell, "a1"),
        "t1",
        "the first claim builds the index"
    );
    // Right after pas's commit, a script adds an urgent task, older than the rest.
    write_task_by_hand(
        &root,
        &cell,
        "hand",
        json!({"task_id": "hand", "title": "by hand", "status": "pending",
               "priority": "high", "created_at": "2020-01-01T00:00:00Z"}),
    );
    assert_eq!(claim(&root, &cell, "a1"), "hand");
    index_matches(&root, &cell, "a task written by hand");
    // And one that takes a pending task out of the queue (rewritten as completed).
    let mut t2 = root.read_json(format!("{cell}/tasks/t2.json"));
    t2["status"] = json!("completed");
    write_task_by_hand(&root, &cell, "t2", t2);
    assert_eq!(claim(&root, &cell, "a1"), "t3");
    index_matches(&root, &cell, "a task rewritten by hand");

    // An index broken behind pas's back (an entry deleted, tasks/ untouched) is reported,
    // and `pas task reindex` repairs it.
    root.ok(&["task", "add", &cell, "t4", "--title", "t4"]);
    let ready = root.cell_dir(&cell).join(".pas/ready");
    for e in std::fs::read_dir(&ready).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let run = root.run(&["validate", "--strict", &cell]);
    assert_ne!(run.code, 0);
    assert!(
        run.stdout.contains("ready index") && run.stdout.contains("pas task reindex"),
        "{}",
        run.stdout
    );
    let out = root.ok(&["task", "reindex", &cell]);
    assert!(out.contains("1 pending"), "{out}");
    index_matches(&root, &cell, "a reindex");
    assert_eq!(claim(&root, &cell, "a1"), "t4");
}

#[test]
fn an_index_stamped_in_another_boot_is_rebuilt_before_a_claim() {
    // Commits do not fsync the ready index: its stamp names the boot, and after a machine
    // crash (another boot) whatever the index lost is rebuilt from the task files.
    let boot = match std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        Ok(text) => text.trim().to_string(),
        Err(e) => {
            eprintln!("skipped: no /proc/sys/kernel/random/boot_id ({e})");
            return;
        }
    };
    let root = Root::new();
    let cell = root.cell("Crash");
    root.ok(&["agent", "add", &cell, "a1"]);
    for t in ["t1", "t2", "t3"] {
        root.ok(&["task", "add", &cell, t, "--title", t]);
    }
    assert_eq!(claim(&root, &cell, "a1"), "t1");
    let pas = root.cell_dir(&cell).join(".pas");
    let mut stamp = root.read_json(format!("{cell}/.pas/ready-stamp.json"));
    assert_eq!(stamp["boot"], json!(boot), "the stamp names this boot");
    // What a crash before the index reached the disk can leave: entries and head gone.
    let empty_index = || {
        for e in std::fs::read_dir(pas.join("ready")).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        std::fs::write(pas.join("ready.json"), r#"{"head":[],"bound":null}"#).unwrap();
    };
    empty_index();
    stamp["boot"] = json!("another-boot");
    std::fs::write(pas.join("ready-stamp.json"), stamp.to_string()).unwrap();
    // Stale, so not reported; the next claim rebuilds it and takes the next task.
    root.ok(&["validate", "--strict", &cell]);
    assert_eq!(claim(&root, &cell, "a1"), "t2");
    index_matches(&root, &cell, "a rebuild after another boot");
    // The same loss with this boot's stamp would be trusted: nothing to claim.
    empty_index();
    let run = root.run(&["task", "claim", &cell, "--agent", "a1"]);
    assert_eq!(
        run.code, 7,
        "an index of this boot is trusted: {}",
        run.stderr
    );
}

#[test]
fn a_claim_looks_past_a_head_full_of_other_agents_tasks() {
    let root = Root::new();
    let cell = root.cell("Crowded head");
    root.ok(&["agent", "add", &cell, "a1"]);
    root.ok(&["agent", "add", &cell, "a2"]);
    // More of a2's tasks than the index's head holds (64), all older than a1's one.
    for i in 0..70 {
        write_task_by_hand(
            &root,
            &cell,
            &format!("x{i:02}"),
            json!({"task_id": format!("x{i:02}"), "title": "a2's", "status": "pending",
                   "assigned_to": "a2", "created_at": format!("2020-01-01T{:02}:{:02}:00Z", i / 60, i % 60)}),
        );
    }
    write_task_by_hand(
        &root,
        &cell,
        "free",
        json!({"task_id": "free", "title": "anyone's", "status": "pending",
               "created_at": "2021-01-01T00:00:00Z"}),
    );
    root.ok(&["task", "reindex", &cell]);
    assert_eq!(claim(&root, &cell, "a1"), "free");
    assert_eq!(claim(&root, &cell, "a1"), "nothing");
    assert_eq!(claim(&root, &cell, "a2"), "x00");
    index_matches(&root, &cell, "claims past the head");
}

#[test]
fn a_queue_longer_than_the_head_is_claimed_in_order_across_refills() {
    let root = Root::new();
    let cell = root.cell("Long queue");
    root.ok(&["agent", "add", &cell, "a1"]);
    // More tasks than a refilled head holds (64), written by hand in another order than
    // the queue's, so that a refill must pick the smallest entries from an unsorted listing.
    let n = 70;
    for i in (0..n).rev() {
        write_task_by_hand(
            &root,
            &cell,
            &format!("q{i:02}"),
            json!({"task_id": format!("q{i:02}"), "title": "queued", "status": "pending",
                   "created_at": format!("2020-01-01T00:{:02}:{:02}Z", i / 60, i % 60)}),
        );
    }
    root.ok(&["task", "reindex", &cell]);
    let mut got: Vec<String> = (0..66).map(|_| claim(&root, &cell, "a1")).collect();
    // The head ran dry at the 65th claim and was refilled. Now an urgent task through pas
    // (indexed in its commit) and an old one by hand (the index is stale, rebuilt) come
    // before what is left.
    root.ok(&[
        "task",
        "add",
        &cell,
        "urgent",
        "--title",
        "x",
        "--priority",
        "high",
    ]);
    assert_eq!(claim(&root, &cell, "a1"), "urgent");
    write_task_by_hand(
        &root,
        &cell,
        "oldest",
        json!({"task_id": "oldest", "title": "by hand", "status": "pending",
               "created_at": "2019-01-01T00:00:00Z"}),
    );
    assert_eq!(claim(&root, &cell, "a1"), "oldest");
    loop {
        let id = claim(&root, &cell, "a1");
        if id == "nothing" {
            break;
        }
        got.push(id);
    }
    let want: Vec<String> = (0..n).map(|i| format!("q{i:02}")).collect();
    assert_eq!(got, want);
    index_matches(&root, &cell, "draining a long queue");
}
