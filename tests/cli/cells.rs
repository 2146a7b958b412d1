//! Cells and agents: create, list, show, set, rm, in table and JSON forms.

use crate::harness::Root;

#[test]
fn a_cell_is_created_with_the_whole_spec_layout() {
    let root = Root::new();
    let id = root.cell("Docs sprint");
    assert!(
        uuid::Uuid::parse_str(&id).is_ok(),
        "create prints only the uuid: {id:?}"
    );
    let dir = root.cell_dir(&id);
    for sub in [
        "agents",
        "tasks",
        "checkpoints",
        "logs",
        "artifacts",
        "config",
    ] {
        assert!(dir.join(sub).is_dir(), "{sub}/ missing");
    }
    let cell = root.read_json(format!("{id}/cell.json"));
    assert_eq!(cell["cell_id"], id.as_str());
    assert_eq!(cell["mission_name"], "Docs sprint");
    assert_eq!(cell["status"], "active");
    // A new cell sets no policy itself: pas.toml and the defaults apply until one is set.
    assert_eq!(cell["policies"], serde_json::json!({}));
    assert!(cell["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        root.read_json(format!("{id}/config/isolation.json"))["level"],
        "level_1"
    );
    assert_eq!(
        root.read_json(format!("{id}/config/policies.json")),
        serde_json::json!({})
    );
    assert_eq!(
        root.read_json(format!("{id}/config/permissions.json")),
        serde_json::json!({})
    );
    // Everything pas wrote follows its schema.
    root.ok(&["validate", "--strict"]);
}

#[test]
fn cells_are_listed_shown_changed_and_removed() {
    let root = Root::new();
    let a = root.cell("Alpha");
    let b = root.ok(&[
        "cell",
        "create",
        "--name",
        "Beta",
        "--isolation",
        "none",
        "--max-agents",
        "3",
        "--timeout",
        "0",
    ]);

    let table = root.ok(&["cell", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID") && lines[0].contains("NAME") && lines[0].contains("STATUS"));
    assert_eq!(lines.len(), 3);
    assert!(table.contains("Alpha") && table.contains("Beta"));

    let list = root.json(&["cell", "list"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["mission_name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"Alpha") && names.contains(&"Beta"));

    // By name, by prefix and by id.
    let shown = root.json(&["cell", "show", "Beta"]);
    assert_eq!(shown["id"], b.as_str());
    assert_eq!(shown["max_agents"], 3);
    assert_eq!(shown["timeout"], serde_json::Value::Null);
    assert_eq!(shown["isolation_level"], "none");
    assert_eq!(
        root.json(&["cell", "show", &a[..8]])["mission_name"],
        "Alpha"
    );
    let text = root.ok(&["cell", "show", &a]);
    assert!(text.contains("name") && text.contains("Alpha") && text.contains("level_1"));

    let set = root.json(&["cell", "set", "Alpha", "--status", "paused"]);
    assert_eq!(set["previous"], "active");
    assert_eq!(root.read_json(format!("{a}/cell.json"))["status"], "paused");

    // Removing an active cell needs --force; a paused one does not.
    let before = root.snapshot();
    root.run(&["cell", "rm", "Beta"]).refused(4, "still active");
    assert_eq!(before, root.snapshot());
    root.ok(&["cell", "rm", "Beta", "--force"]);
    root.ok(&["cell", "rm", "Alpha"]);
    assert_eq!(root.json(&["cell", "list"]), serde_json::json!([]));
    assert!(!root.cell_dir(&a).exists() && !root.cell_dir(&b).exists());
}

#[test]
fn ambiguous_and_unknown_cells_are_refused_with_candidates() {
    let root = Root::new();
    let a = root.cell("Same");
    let b = root.cell("Same");
    let run = root.run(&["cell", "show", "Same"]);
    run.refused(4, "matches 2 cells");
    assert!(run.stderr.contains(&a) && run.stderr.contains(&b));
    root.run(&["cell", "show", "nope"])
        .refused(3, "no cell matches \"nope\"");
    root.run(&["cell", "set", "nope", "--status", "paused"])
        .refused(3, "no cell");
}

#[test]
fn agents_are_added_listed_shown_and_removed() {
    let root = Root::new();
    let cell = root.cell("Agents");
    assert_eq!(
        root.ok(&[
            "agent",
            "add",
            &cell,
            "agent_001",
            "--name",
            "Lead Agent",
            "--role",
            "lead",
            "--cap",
            "planning",
            "--cap",
            "coordination",
            "--gateway",
            "gw1"
        ]),
        "agent_001"
    );
    root.ok(&["agent", "add", "Agents", "agent_002"]);

    let file = root.read_json(format!("{cell}/agents/agent_001.json"));
    assert_eq!(file["agent_id"], "agent_001");
    assert_eq!(file["name"], "Lead Agent");
    assert_eq!(file["role"], "lead");
    assert_eq!(
        file["capabilities"],
        serde_json::json!(["planning", "coordination"])
    );
    assert_eq!(file["gateway"], "gw1");
    assert_eq!(file["status"], "idle");
    assert_eq!(file["current_task"], serde_json::Value::Null);
    assert_eq!(file["checkpoint"], serde_json::Value::Null);

    let table = root.ok(&["agent", "list", &cell]);
    assert!(table.lines().next().unwrap().contains("ROLE"));
    assert!(
        table.contains("agent_001")
            && table.contains("agent_002")
            && table.contains("planning,coordination")
    );
    let list = root.json(&["agent", "list", &cell]);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(
        root.json(&["agent", "show", &cell, "agent_002"])["role"],
        "write"
    );
    assert!(root
        .ok(&["agent", "show", &cell, "agent_001"])
        .contains("Lead Agent"));

    root.run(&["agent", "add", &cell, "agent_001"])
        .refused(4, "already exists");
    root.run(&["agent", "show", &cell, "ghost"])
        .refused(3, "no agent ghost");

    root.ok(&["agent", "rm", &cell, "agent_002"]);
    assert!(!root.cell_dir(&cell).join("agents/agent_002.json").exists());
    root.run(&["agent", "rm", &cell, "agent_002"])
        .refused(3, "no agent agent_002");
}

#[test]
fn an_agent_with_unfinished_tasks_is_removed_only_with_force() {
    let root = Root::new();
    let cell = root.cell("Handback");
    root.ok(&["agent", "add", &cell, "a1"]);
    root.ok(&[
        "task", "add", &cell, "t1", "--title", "work", "--assign", "a1",
    ]);
    let before = root.snapshot();
    root.run(&["agent", "rm", &cell, "a1"])
        .refused(4, "unfinished tasks: t1");
    assert_eq!(before, root.snapshot());
    root.ok(&["agent", "rm", &cell, "a1", "--force"]);
    let task = root.read_json(format!("{cell}/tasks/t1.json"));
    assert_eq!(task["assigned_to"], serde_json::Value::Null);
    assert_eq!(task["status"], "pending");
}

#[test]
fn max_agents_is_enforced() {
    let root = Root::new();
    let cell = root.ok(&["cell", "create", "--name", "Small", "--max-agents", "2"]);
    root.ok(&["agent", "add", &cell, "a1"]);
    root.ok(&["agent", "add", &cell, "a2"]);
    let before = root.snapshot();
    root.run(&["agent", "add", &cell, "a3"])
        .refused(4, "max_agents is 2");
    assert_eq!(before, root.snapshot());
}

#[test]
fn unknown_fields_survive_a_rewrite_in_place() {
    let root = Root::new();
    let cell = root.cell("Keep");
    let path = root.cell_dir(&cell).join("cell.json");
    let text = std::fs::read_to_string(&path).unwrap();
    // A field another tool added, in the middle of the object.
    let edited = text.replacen(
        "\"created_by\"",
        "\"x_owner\": {\"team\": \"infra\", \"tags\": [1, 2]},\n  \"created_by\"",
        1,
    );
    std::fs::write(&path, &edited).unwrap();
    root.ok(&["cell", "set", &cell, "--status", "paused"]);
    let after = std::fs::read_to_string(&path).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&after).unwrap();
    assert_eq!(
        doc["x_owner"],
        serde_json::json!({"team": "infra", "tags": [1, 2]})
    );
    assert_eq!(doc["status"], "paused");
    let keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
    let pos = |k: &str| keys.iter().position(|x| *x == k).unwrap();
    assert_eq!(
        pos("x_owner") + 1,
        pos("created_by"),
        "the unknown field kept its place: {keys:?}"
    );
}

#[test]
fn malformed_json_is_reported_with_path_line_and_column() {
    let root = Root::new();
    let cell = root.cell("Broken");
    root.ok(&["agent", "add", &cell, "a1"]);
    let path = root.cell_dir(&cell).join("agents/a1.json");
    std::fs::write(&path, "{\n  \"agent_id\": \"a1\",\n  oops\n}\n").unwrap();
    let before = root.snapshot();
    let run = root.run(&["agent", "show", &cell, "a1"]);
    run.refused(5, "line 3, column 3");
    assert!(run.stderr.contains(&path.display().to_string()));
    let run = root.run(&["validate", &cell]);
    assert_eq!(run.code, 5);
    assert!(run.stdout.contains("agents/a1.json") && run.stdout.contains("line 3"));
    assert_eq!(before, root.snapshot());
}

#[test]
fn an_unwritable_root_is_named_with_the_fix() {
    let root = Root::new();
    let file = root.path.join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let bad = file.join("missions");
    let run = crate::harness::Root::new()
        .cmd(&["cell", "create", "--name", "x"])
        .arg("--root")
        .arg(&bad)
        .output()
        .unwrap();
    let run = crate::harness::Run::from(run);
    run.refused(1, "cannot create missions root");
    assert!(run.stderr.contains("--root") && run.stderr.contains("PAS_ROOT"));
}

#[test]
fn the_root_comes_from_pas_root_when_no_flag_is_given() {
    let root = Root::new();
    let out = std::process::Command::new(crate::harness::pas_bin())
        .args(["cell", "create", "--name", "Env"])
        .env("PAS_ROOT", &root.path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let id = String::from_utf8(out.stdout).unwrap();
    assert!(root.cell_dir(id.trim()).join("cell.json").is_file());
}

#[test]
fn cell_create_with_an_id_is_safe_to_retry_and_refuses_a_bad_or_taken_id() {
    let root = Root::new();
    let id = root.ok(&["cell", "create", "--name", "review", "--id", "c-review"]);
    assert_eq!(id, "c-review");
    // A retry after an unknown outcome finds the cell it made and creates nothing.
    let before = root.snapshot();
    assert_eq!(
        root.ok(&["cell", "create", "--name", "review", "--id", "c-review"]),
        "c-review"
    );
    assert_eq!(root.snapshot(), before, "a retry changes nothing");
    assert_eq!(root.event_kinds("c-review"), ["cell.created"]);
    // Another mission under that id, or an id that cannot be a directory name: refused.
    root.run(&["cell", "create", "--name", "other", "--id", "c-review"])
        .refused(4, "already exists as mission \"review\"");
    root.run(&["cell", "create", "--name", "other", "--id", "../x"])
        .refused(2, "invalid cell id");
    assert_eq!(root.snapshot(), before, "refusals change nothing");
}

#[test]
fn an_export_holds_what_defines_the_mission_not_the_state_of_the_run() {
    let root = Root::new();
    let cell = root.cell("Export");
    root.ok(&["agent", "add", &cell, "a1", "--name", "One", "--cap", "x"]);
    root.ok(&["task", "add", &cell, "t1", "--title", "work"]);
    root.ok(&["--as", "a1", "task", "claim", &cell]);
    root.ok(&["agent", "beat", &cell, "a1", "--note", "busy"]);
    // What a person writes (a command, its directory and environment, a field of their
    // own) and what pas records of the run (its process, restarts, spend, revival).
    let path = root.cell_dir(&cell).join("agents/a1.json");
    let mut agent: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let fields = agent.as_object_mut().unwrap();
    for (k, v) in serde_json::json!({
        "command": ["sh", "-c", "true"],
        "cwd": "/tmp",
        "env": {"K": "V"},
        "x_owner": "infra",
        "pid": 4242,
        "pgid": 4242,
        "supervisor_pid": 4241,
        "started_at": "2026-01-01T00:00:00Z",
        "restart_count": 2,
        "restart_attempts": 1,
        "exit": {"at": "2026-01-01T00:00:00Z", "cause": "exit", "code": 1, "signal": null},
        "recent_deaths": ["2026-01-01T00:00:00Z"],
        "cost_usd": 1.5,
        "tokens_used": 1000,
        "spend_state": "ok",
        "failed_reason": "gave up"
    })
    .as_object()
    .unwrap()
    {
        fields.insert(k.clone(), v.clone());
    }
    std::fs::write(&path, agent.to_string()).unwrap();

    let exported = root.json(&["cell", "export", &cell]);
    let keys = |v: &serde_json::Value| -> std::collections::BTreeSet<String> {
        v.as_object().unwrap().keys().cloned().collect()
    };
    let expected = |list: &[&str]| -> std::collections::BTreeSet<String> {
        list.iter().map(|k| k.to_string()).collect()
    };
    assert_eq!(
        keys(&exported["agents"][0]),
        expected(&[
            "agent_id",
            "name",
            "role",
            "capabilities",
            "gateway",
            "command",
            "cwd",
            "env",
            "x_owner"
        ]),
        "{exported:#}"
    );
    assert_eq!(
        keys(&exported["tasks"][0]),
        expected(&[
            "task_id",
            "title",
            "description",
            "assigned_to",
            "priority",
            "dependencies",
            "timeout"
        ])
    );
    // The claim assigned t1; the mission did not.
    assert_eq!(exported["tasks"][0]["assigned_to"], serde_json::Value::Null);
    for key in ["cell_id", "status", "created_at"] {
        assert!(exported.get(key).is_none(), "{key} exported");
    }

    // The export makes a fresh cell of the same mission.
    let file = root.path.join("export.json");
    std::fs::write(&file, exported.to_string()).unwrap();
    let again = root.ok(&["cell", "create", "--from", file.to_str().unwrap()]);
    let agent = root.read_json(format!("{again}/agents/a1.json"));
    assert_eq!(
        (
            agent["command"].clone(),
            agent["x_owner"].clone(),
            agent["pid"].clone()
        ),
        (
            serde_json::json!(["sh", "-c", "true"]),
            serde_json::json!("infra"),
            serde_json::Value::Null
        )
    );
    let task = root.read_json(format!("{again}/tasks/t1.json"));
    assert_eq!(
        (task["status"].as_str(), task["assigned_to"].clone()),
        (Some("pending"), serde_json::Value::Null)
    );
    root.ok(&["validate", "--strict"]);
}
