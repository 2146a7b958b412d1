//! Every file pas writes follows its schema (checked file by file, not through `pas validate`).

use pas::store::schema::{validate, SchemaKind};

use crate::harness::Root;

fn kind_of(rel: &str) -> Option<SchemaKind> {
    let parts: Vec<&str> = rel.split('/').collect();
    match parts.as_slice() {
        [_, "cell.json"] => Some(SchemaKind::Cell),
        [_, "agents", _] => Some(SchemaKind::Agent),
        [_, "tasks", _] => Some(SchemaKind::Task),
        [_, "config", "isolation.json"] => Some(SchemaKind::Isolation),
        [_, "config", "policies.json"] => Some(SchemaKind::Policies),
        [_, "config", "permissions.json"] => Some(SchemaKind::Permissions),
        _ => None,
    }
}

/// Checks every document under the root; returns how many were checked.
pub fn assert_root_follows_schemas(root: &Root) -> usize {
    let mut checked = 0;
    for (rel, bytes) in root.snapshot() {
        let Some(kind) = kind_of(&rel).filter(|_| rel.ends_with(".json")) else {
            continue;
        };
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let problems = validate(kind, &value);
        assert!(problems.is_empty(), "{rel} breaks its schema: {problems:?}");
        checked += 1;
    }
    checked
}

#[test]
fn every_file_written_by_a_session_follows_its_schema() {
    let root = Root::new();
    let cell = root.ok(&[
        "cell",
        "create",
        "--name",
        "Schemas",
        "--isolation",
        "level_2",
        "--timeout",
        "0",
        "--created-by",
        "ops",
    ]);
    root.ok(&[
        "agent",
        "add",
        &cell,
        "lead",
        "--role",
        "lead",
        "--cap",
        "planning",
        "--gateway",
        "gw",
    ]);
    root.ok(&["agent", "add", &cell, "worker", "--role", "audit"]);
    root.ok(&[
        "task",
        "add",
        &cell,
        "t1",
        "--title",
        "One",
        "--assign",
        "lead",
        "--priority",
        "low",
        "--timeout",
        "60",
    ]);
    root.ok(&[
        "task",
        "add",
        &cell,
        "t2",
        "--title",
        "Two",
        "--dep",
        "t1",
        "--description",
        "after one",
    ]);
    root.ok(&["cell", "set", &cell, "--status", "paused"]);
    assert_eq!(assert_root_follows_schemas(&root), 8);
}
