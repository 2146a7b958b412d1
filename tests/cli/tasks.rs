//! Tasks: add, list, show; dependencies and cycles.

use crate::harness::Root;

#[test]
fn tasks_are_added_listed_and_shown() {
    let root = Root::new();
    let cell = root.cell("Tasks");
    root.ok(&["agent", "add", &cell, "agent_001"]);
    assert_eq!(
        root.ok(&[
            "task",
            "add",
            &cell,
            "task_001",
            "--title",
            "Code Review",
            "--description",
            "Review PR 123",
            "--assign",
            "agent_001",
            "--priority",
            "high",
            "--timeout",
            "1800"
        ]),
        "task_001"
    );
    root.ok(&[
        "task", "add", &cell, "task_002", "--title", "Merge", "--dep", "task_001",
    ]);

    let file = root.read_json(format!("{cell}/tasks/task_001.json"));
    assert_eq!(file["task_id"], "task_001");
    assert_eq!(file["title"], "Code Review");
    assert_eq!(file["assigned_to"], "agent_001");
    assert_eq!(file["status"], "pending");
    assert_eq!(file["priority"], "high");
    assert_eq!(file["timeout"], 1800);
    assert_eq!(file["dependencies"], serde_json::json!([]));
    assert_eq!(
        root.read_json(format!("{cell}/tasks/task_002.json"))["dependencies"],
        serde_json::json!(["task_001"])
    );

    let table = root.ok(&["task", "list", &cell]);
    assert!(table.contains("task_001") && table.contains("Code Review"));
    let row2 = table.lines().find(|l| l.starts_with("task_002")).unwrap();
    assert!(row2.contains("blocked"), "{row2}");

    let blocked = root.json(&["task", "list", &cell, "--status", "blocked"]);
    assert_eq!(blocked.as_array().unwrap().len(), 1);
    assert_eq!(blocked[0]["task_id"], "task_002");
    assert_eq!(blocked[0]["state"], "blocked");
    assert_eq!(blocked[0]["status"], "pending");
    let pending = root.json(&["task", "list", &cell, "--status", "pending"]);
    assert_eq!(pending.as_array().unwrap().len(), 2);

    let shown = root.json(&["task", "show", &cell, "task_002"]);
    assert_eq!(shown["state"], "blocked");
    assert!(root
        .ok(&["task", "show", &cell, "task_002"])
        .contains("task_001"));
    root.run(&["task", "show", &cell, "task_404"])
        .refused(3, "no task task_404");
}

#[test]
fn unknown_dependencies_assignees_and_duplicates_are_refused() {
    let root = Root::new();
    let cell = root.cell("Refusals");
    root.ok(&["task", "add", &cell, "t1", "--title", "one"]);
    let before = root.snapshot();
    root.run(&[
        "task", "add", &cell, "t2", "--title", "two", "--dep", "nope",
    ])
    .refused(3, "unknown task(s): nope");
    root.run(&[
        "task", "add", &cell, "t2", "--title", "two", "--assign", "ghost",
    ])
    .refused(3, "no agent ghost");
    root.run(&["task", "add", &cell, "t1", "--title", "again"])
        .refused(4, "already exists");
    root.run(&[
        "task",
        "add",
        &cell,
        "t3",
        "--title",
        "x",
        "--priority",
        "urgent",
    ])
    .refused(2, "invalid value 'urgent'");
    root.run(&["task", "add", &cell, "t3", "--title", "  "])
        .refused(2, "title is empty");
    assert_eq!(before, root.snapshot());
}

#[test]
fn a_dependency_cycle_is_refused() {
    let root = Root::new();
    let cell = root.cell("Cycles");
    // A task depending on itself.
    root.run(&["task", "add", &cell, "t1", "--title", "self", "--dep", "t1"])
        .refused(2, "dependency cycle: t1 -> t1");
    // A hand-written task waiting for a task that does not exist yet; adding that task
    // with a dependency back closes a cycle.
    let hand = r#"{"task_id": "a", "title": "A", "status": "pending", "dependencies": ["b"]}"#;
    std::fs::write(root.cell_dir(&cell).join("tasks/a.json"), hand).unwrap();
    root.ok(&["task", "add", &cell, "c", "--title", "C", "--dep", "a"]);
    let before = root.snapshot();
    root.run(&["task", "add", &cell, "b", "--title", "B", "--dep", "c"])
        .refused(2, "dependency cycle");
    assert_eq!(before, root.snapshot());
    // Without the back edge, b is fine.
    root.ok(&["task", "add", &cell, "b", "--title", "B"]);
}
