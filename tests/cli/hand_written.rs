//! Cells written by hand with the shell commands of the spec's Usage section.

use crate::harness::Root;

/// The spec's Usage section, with one uuid used consistently (the spec's own snippet calls
/// `uuidgen` twice and so would `cd` into a directory that does not exist).
fn write_spec_cell(root: &Root, dir_id: &str, inner_id: &str) {
    let script = format!(
        r#"set -e
mkdir -p "$ROOT/{dir_id}"
cd "$ROOT/{dir_id}"
cat > cell.json << EOF
{{
  "cell_id": "{inner_id}",
  "mission_name": "Example Mission",
  "created_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "created_by": "admin",
  "status": "active",
  "isolation_level": "level_1",
  "max_agents": 4,
  "timeout": 3600
}}
EOF
mkdir -p agents tasks checkpoints artifacts config logs
cat > agents/agent_001.json << EOF
{{
  "agent_id": "agent_001",
  "name": "Lead Agent",
  "role": "lead",
  "capabilities": ["planning", "coordination"],
  "gateway": "gateway_1",
  "status": "idle",
  "current_task": null,
  "checkpoint": null
}}
EOF
cat > tasks/task_001.json << EOF
{{
  "task_id": "task_001",
  "title": "Code Review",
  "description": "Review pull request #123",
  "assigned_to": "agent_001",
  "status": "pending",
  "priority": "high",
  "dependencies": [],
  "timeout": 1800,
  "artifacts": [],
  "created_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}}
EOF
"#
    );
    root.sh(&script);
}

#[test]
fn a_spec_cell_is_listed_shown_and_validated() {
    let root = Root::new();
    let id = "5b0e6f0a-2f3c-4c1e-9d7a-0a1b2c3d4e5f";
    write_spec_cell(&root, id, id);

    let list = root.json(&["cell", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["mission_name"], "Example Mission");
    assert_eq!(root.json(&["cell", "show", "Example Mission"])["id"], id);
    assert!(root.ok(&["agent", "list", id]).contains("Lead Agent"));
    assert_eq!(
        root.json(&["task", "show", id, "task_001"])["title"],
        "Code Review"
    );

    let report = root.json(&["validate", "--strict"]);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["problems"], serde_json::json!([]));
    // pas adds to a hand-written cell without disturbing it.
    root.ok(&["agent", "add", id, "agent_002"]);
    root.ok(&["validate", "--strict"]);
}

#[test]
fn common_hand_written_mistakes_are_reported() {
    let root = Root::new();
    let dir = "11111111-1111-4111-8111-111111111111";
    write_spec_cell(&root, dir, "22222222-2222-4222-8222-222222222222");
    let cell = root.path.join(dir);
    std::fs::remove_dir(cell.join("checkpoints")).unwrap();
    std::fs::write(
        cell.join("tasks/task_002.json"),
        r#"{"task_id": "task_002", "title": "T", "status": "later", "dependencies": ["task_404"]}"#,
    )
    .unwrap();
    std::fs::write(
        cell.join("agents/agent_009.json"),
        r#"{"agent_id": "agent_010"}"#,
    )
    .unwrap();

    // Still usable: listed and shown (by directory name and by the cell_id inside).
    assert_eq!(root.json(&["cell", "list"]).as_array().unwrap().len(), 1);
    assert_eq!(
        root.json(&["cell", "show", "22222222-2222-4222-8222-222222222222"])["id"],
        dir
    );

    let run = root.run(&["--json", "validate"]);
    assert_eq!(run.code, 5, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let problems = report["problems"].as_array().unwrap();
    let has = |file: &str, path: &str, needle: &str| {
        problems.iter().any(|p| {
            p["file"] == file && p["path"] == path && p["reason"].as_str().unwrap().contains(needle)
        })
    };
    assert!(
        has("cell.json", "/cell_id", "differs from the directory name"),
        "{report:#}"
    );
    assert!(has("checkpoints", "", "missing"), "{report:#}");
    assert!(has("tasks/task_002.json", "/status", "later"), "{report:#}");
    assert!(
        has("tasks/task_002.json", "/dependencies", "task_404"),
        "{report:#}"
    );
    assert!(
        has(
            "agents/agent_009.json",
            "/agent_id",
            "differs from the file name"
        ),
        "{report:#}"
    );
    // The table form names file, JSON path and reason too.
    let table = root.run(&["validate", dir]);
    assert_eq!(table.code, 5);
    assert!(table.stdout.contains("tasks/task_002.json") && table.stdout.contains("/status"));
    assert!(table.stderr.contains("validation found"));
}
