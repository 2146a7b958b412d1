//! The typed documents against real files: templates byte for byte, hand-written files with
//! unknown fields and odd order, the seeds' own types, and the refusals.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::doc::Doc;
use crate::error::Kind;
use crate::model::*;
use crate::templates;

fn doc(text: &str) -> Doc {
    Doc::parse(text.as_bytes(), Path::new("test.json")).unwrap()
}

fn text(d: &Doc) -> String {
    String::from_utf8(d.to_bytes()).unwrap()
}

fn keys(d: &Doc) -> Vec<String> {
    d.map().keys().cloned().collect()
}

fn at(s: &str) -> DateTime<Utc> {
    crate::clock::parse(s).unwrap()
}

/// Reads `d` through `T`, writes it back unchanged, and checks nothing moved.
macro_rules! unchanged {
    ($t:ty, $d:expr) => {{
        let original: Doc = $d;
        let typed = <$t>::from_doc(&original).unwrap();
        let mut written = original.clone();
        typed.write_into(&mut written);
        assert_eq!(
            text(&written),
            text(&original),
            "{} round trip",
            stringify!($t)
        );
        typed
    }};
}

#[test]
fn every_template_round_trips_byte_for_byte() {
    for (template, name) in [
        (templates::AGENT, "agent"),
        (templates::TASK, "task"),
        (templates::CELL, "cell"),
        (templates::ISOLATION, "isolation"),
        (templates::POLICIES, "policies"),
        (templates::PERMISSIONS, "permissions"),
    ] {
        // The templates are in pas's own on-disk form, so bytes compare with the file.
        assert_eq!(
            text(&doc(template)),
            template,
            "{name} is not in on-disk form"
        );
    }
    let agent = unchanged!(Agent, doc(templates::AGENT));
    assert_eq!(agent.agent_id, "agent_001");
    assert_eq!(agent.role, Role::Write);
    assert_eq!(agent.status, AgentStatus::Idle);
    assert!(agent.extra.is_empty());
    let task = unchanged!(Task, doc(templates::TASK));
    assert_eq!(task.status, TaskStatus::Pending);
    assert_eq!(task.timeout, Some(1800.0));
    assert_eq!(task.created_at, Some(at("1970-01-01T00:00:00Z")));
    assert!(task.extra.is_empty());
    let cell = unchanged!(Cell, doc(templates::CELL));
    assert_eq!(cell.status, CellStatus::Active);
    assert_eq!(cell.isolation_level, IsolationLevel::Level1);
    assert_eq!(cell.max_agents, Some(10));
    // A new cell sets no policy itself, so the root's pas.toml reaches it.
    assert_eq!(cell.policies, Policies::default());
    assert!(cell.extra.is_empty());
    let isolation = unchanged!(Isolation, doc(templates::ISOLATION));
    assert_eq!(
        isolation.resource_limits.memory,
        Some(Quantity::Text("4GB".into()))
    );
    assert_eq!(isolation.security_context.group.as_deref(), Some("agents"));
    let policies = unchanged!(Policies, doc(templates::POLICIES));
    assert_eq!(policies, Policies::default());
    let permissions = unchanged!(Permissions, doc(templates::PERMISSIONS));
    assert!(permissions.grants.is_empty());
}

#[test]
fn the_mission_templates_documents_round_trip() {
    let mission: Value = serde_json::from_str(templates::MISSION).unwrap();
    for item in mission["agents"].as_array().unwrap() {
        unchanged!(Agent, Doc::from_map(item.as_object().unwrap().clone()));
    }
    for item in mission["tasks"].as_array().unwrap() {
        let mut item = item.as_object().unwrap().clone();
        item.insert("status".into(), json!("pending"));
        unchanged!(Task, Doc::from_map(item));
    }
    let config = &mission["config"];
    unchanged!(
        Policies,
        Doc::from_map(config["policies"].as_object().unwrap().clone())
    );
    let perms = unchanged!(
        Permissions,
        Doc::from_map(config["permissions"].as_object().unwrap().clone())
    );
    let reviewer = perms.get("reviewer").unwrap();
    assert_eq!(reviewer.handoff_from, ["writer_1", "writer_2"]);
    assert!(Grant::names(&reviewer.read, "anything"));
    assert!(!Grant::names(&reviewer.write, "outline"));
}

/// An agent file as pas writes it after a life of beats, budgets, a crash and a revival:
/// every key pas keeps in an agent file, so none may land in `extra`.
const FULL_AGENT: &str = r#"{
  "agent_id": "writer_1",
  "name": "Writer one",
  "role": "write",
  "capabilities": [
    "writing"
  ],
  "gateway": null,
  "status": "active",
  "current_task": "chapter_1",
  "checkpoint": {
    "last_checkpoint": "2026-11-23T10:00:00.000000Z",
    "context_hash": "0000000000000000000000000000000000000000000000000000000000000000",
    "artifacts": [],
    "generation": 3
  },
  "command": [
    "sh",
    "agent.sh"
  ],
  "cwd": "/tmp",
  "env": {
    "MODEL": "m"
  },
  "rlimits": {
    "memory_bytes": 1000000,
    "cpu_seconds": 60,
    "open_files": 256
  },
  "resource_limits": {
    "memory": "64MB",
    "cpu": "200m",
    "pids": 32,
    "nice": 5,
    "open_files": 128
  },
  "limits": {
    "mechanism": "cgroup_v1",
    "why": "the v1 controllers are mounted and writable",
    "group": "/pas/c1@0a1b2c3d/writer_1",
    "memory_bytes": 64000000,
    "cpu": 0.2,
    "pids": 32,
    "nice": 5,
    "open_files": 128,
    "not_enforced": [],
    "tmpdir": "/tmp/pas-c1@0a1b2c3d-writer_1.4241"
  },
  "created_at": "2026-11-23T09:00:00.000000Z",
  "pid": null,
  "pgid": 4242,
  "pid_start_time": 123456,
  "supervisor_pid": 4241,
  "supervisor_start_time": 123400,
  "host": "node-a",
  "started_at": "2026-11-23T09:59:00.000000Z",
  "runs": 3,
  "activated_at": "2026-11-23T09:58:30.000000Z",
  "restart_count": 2,
  "last_heartbeat": "2026-11-23T10:00:05.000000Z",
  "heartbeat_count": 17,
  "reported_status": "ACTIVE",
  "failures": 0,
  "progress": 0.25,
  "ctx_used": 1000,
  "ctx_limit": 8000,
  "metadata": {
    "model": "gpt"
  },
  "note": "step 2",
  "cost_usd": 0.5,
  "tokens_used": 1200,
  "health": "healthy",
  "health_changed_at": "2026-11-23T10:00:05.000000Z",
  "ctx_state": "ok",
  "spend_state": "warning",
  "budget_flag": "thrashing",
  "compactions": [
    "2026-11-23T09:30:00.000000Z"
  ],
  "pending_directive": {
    "action": "summarize",
    "reason": "context_budget",
    "summary": "/r/c/checkpoints/writer_1/summaries/s.json",
    "at": "2026-11-23T09:30:00.000000Z"
  },
  "budget_request": {
    "id": "b-0123abcd",
    "at": "2026-11-23T09:31:00.000000Z",
    "ratio": 0.8
  },
  "last_failure": {
    "at": "2026-11-23T09:40:00.000000Z",
    "reason": "flaky"
  },
  "exit": {
    "at": "2026-11-23T09:58:00.000000Z",
    "cause": "signal",
    "code": null,
    "signal": 9,
    "requested": false
  },
  "stop_requested": {
    "at": "2026-11-23T09:57:00.000000Z",
    "cause": "watchdog"
  },
  "recent_deaths": [
    "2026-11-23T09:58:00.000000Z"
  ],
  "last_death": "2026-11-23T09:58:00.000000Z",
  "next_restart_at": null,
  "restart_attempts": 1,
  "revival": {
    "started_at": "2026-11-23T09:59:00.000000Z",
    "deadline": "2026-11-23T10:04:00.000000Z",
    "attempt": 1,
    "generation": 3
  },
  "revive_request": {
    "id": "r-0123abcd",
    "at": "2026-11-23T09:58:00.000000Z",
    "cause": "signal 9",
    "approved": true
  },
  "hung_reported": "2026-11-23T09:50:00.000000Z",
  "cooldown_until": "2026-11-23T09:45:00.000000Z",
  "failed_reason": "it died",
  "policies": {
    "heartbeat_ttl": 600
  }
}
"#;

#[test]
fn every_key_pas_writes_in_an_agent_file_is_typed() {
    let a = unchanged!(Agent, doc(FULL_AGENT));
    assert!(a.extra.is_empty(), "untyped: {:?}", a.extra.keys());
    assert_eq!(doc(FULL_AGENT).map().len(), Agent_keys_len());
    assert_eq!(a.checkpoint.as_ref().unwrap().generation, Some(3));
    assert_eq!(a.exit.as_ref().unwrap().cause, Some(ExitCause::Signal));
    assert_eq!(a.exit.as_ref().unwrap().code, None);
    assert_eq!(
        a.stop_requested.as_ref().unwrap().cause,
        StopCause::Watchdog
    );
    assert_eq!(
        a.revival.as_ref().unwrap().deadline,
        Some(at("2026-11-23T10:04:00Z"))
    );
    assert!(a.revive_request.as_ref().unwrap().approved);
    assert_eq!(
        a.pending_directive.as_ref().unwrap().action,
        Some(Directive::Summarize)
    );
    assert_eq!(a.rlimits.as_ref().unwrap().open_files, Some(256));
    assert_eq!(a.health, Some(Health::Healthy));
    assert_eq!(a.spend_state, Some(BudgetState::Warning));
    assert_eq!(a.budget_flag, Some(BudgetFlag::Thrashing));
    assert_eq!(a.tokens_used, Some(1200.0));
    assert_eq!(a.policies.heartbeat_ttl, Some(Some(600.0)));
    assert_eq!(a.pid, None);
    assert_eq!(a.pgid, Some(4242));
    assert_eq!(a.display_name(), "Writer one");
    // A document written from the typed value alone holds the same keys and values, in
    // declaration order: every key was set, so none is left out.
    let rebuilt = a.to_doc();
    assert_eq!(rebuilt.to_value(), doc(FULL_AGENT).to_value());
    assert_eq!(Agent::from_doc(&rebuilt).unwrap(), a);
    assert_eq!(keys(&rebuilt), <Agent as Record>::KEYS);
}

#[allow(non_snake_case)]
fn Agent_keys_len() -> usize {
    <Agent as Record>::KEYS.len()
}

#[test]
fn unknown_fields_and_order_survive_a_change() {
    // Unknown keys before, between and after known ones; known keys out of schema order.
    let original = doc(
        r#"{"x_first": 1, "status": "idle", "agent_id": "a1", "x_owner": {"team": ["ops", 2]},
            "heartbeat_count": 4, "name": "A", "zz_last": null}"#,
    );
    let mut d = original.clone();
    let mut a = Agent::from_doc(&d).unwrap();
    assert_eq!(
        a.extra.keys().collect::<Vec<_>>(),
        ["x_first", "x_owner", "zz_last"]
    );
    a.status = AgentStatus::Active;
    a.heartbeat_count += 1;
    a.last_heartbeat = Some(at("2026-11-23T10:00:00Z"));
    a.note = Some("working".into());
    a.write_into(&mut d);
    assert_eq!(
        keys(&d),
        [
            "x_first",
            "status",
            "agent_id",
            "x_owner",
            "heartbeat_count",
            "name",
            "zz_last",
            "last_heartbeat",
            "note"
        ]
    );
    assert_eq!(d.get("status"), Some(&json!("active")));
    assert_eq!(d.get("heartbeat_count"), Some(&json!(5)));
    assert_eq!(d.get("x_owner"), original.get("x_owner"));
    assert_eq!(d.get("zz_last"), Some(&Value::Null));
    assert_eq!(
        d.get("last_heartbeat"),
        Some(&json!("2026-11-23T10:00:00.000000Z"))
    );
    // Nothing else was added: absent optional fields stay absent, no nulls appear.
    assert_eq!(d.map().len(), 9);
}

#[test]
fn clearing_a_field_nulls_or_removes_it_in_place() {
    let mut d = doc(
        r#"{"agent_id": "a1", "current_task": "t1", "x": 1, "revival": {"started_at": "2026-11-23T10:00:00Z"}, "cwd": "/w", "y": 2}"#,
    );
    Agent::edit(&mut d, |a| {
        a.current_task = None; // nullable: null where it stands
        a.revival = None; // optional: removed, the others keep their order
        a.cwd = None;
    })
    .unwrap();
    assert_eq!(keys(&d), ["agent_id", "current_task", "x", "y"]);
    assert_eq!(d.get("current_task"), Some(&Value::Null));
    // Clearing what is already absent or null writes nothing.
    let before = text(&d);
    Agent::edit(&mut d, |a| {
        a.current_task = None;
        a.gateway = None;
        a.checkpoint = None;
        a.failures = 0;
    })
    .unwrap();
    assert_eq!(text(&d), before);
}

#[test]
fn a_changed_nested_record_is_merged_key_by_key() {
    let mut d = doc(
        r#"{"agent_id": "a1", "checkpoint": {"x_tool": "keep", "generation": 1, "artifacts": ["a"]}, "exit": 5}"#,
    );
    // `exit` is not an object: the file is refused rather than misread...
    let err = Agent::from_doc(&d).unwrap_err();
    assert_eq!(
        err.message,
        "agents/a1.json exit: 5 is a number, not an object"
    );
    d.set("exit", Value::Null);
    Agent::edit(&mut d, |a| {
        let c = a.checkpoint.as_mut().unwrap();
        c.generation = Some(2);
        c.last_checkpoint = Some(at("2026-11-23T10:00:00Z"));
    })
    .unwrap();
    let c = d.get("checkpoint").unwrap().as_object().unwrap();
    assert_eq!(
        c.keys().collect::<Vec<_>>(),
        ["x_tool", "generation", "artifacts", "last_checkpoint"]
    );
    assert_eq!(c["generation"], 2);
    assert_eq!(c["x_tool"], "keep");
    // ...and a new nested record is written whole, in declaration order.
    Agent::edit(&mut d, |a| {
        a.exit = Some(Exit {
            at: Some(at("2026-11-23T10:01:00Z")),
            cause: Some(ExitCause::Exit),
            code: Some(1),
            signal: None,
            requested: false,
            error: None,
            extra: Default::default(),
        })
    })
    .unwrap();
    assert_eq!(
        d.get("exit"),
        Some(
            &json!({"at": "2026-11-23T10:01:00.000000Z", "cause": "exit", "code": 1,
                     "signal": null, "requested": false})
        ),
        "the shape supervisor.rs gives a new exit record"
    );
}

#[test]
fn extra_is_the_place_to_change_unknown_fields() {
    let mut d =
        doc(r#"{"task_id": "t", "title": "T", "status": "pending", "a": 1, "b": 2, "c": 3}"#);
    Task::edit(&mut d, |t| {
        t.extra.insert("b".into(), json!("two"));
        t.extra.shift_remove("a");
        t.extra.insert("d".into(), json!(4));
        // A known key in extra is ignored: the typed field owns it.
        t.extra.insert("status".into(), json!("nonsense"));
    })
    .unwrap();
    assert_eq!(keys(&d), ["task_id", "title", "status", "b", "c", "d"]);
    assert_eq!(d.get("b"), Some(&json!("two")));
    assert_eq!(d.get("status"), Some(&json!("pending")));
}

#[test]
fn a_flag_is_set_true_and_removed_false() {
    let mut d = doc(r#"{"task_id": "t", "title": "T", "status": "pending", "x": 0}"#);
    Task::edit(&mut d, |t| {
        t.queue_assigned = true;
        t.status = TaskStatus::InProgress;
        t.assigned_to = Some("a1".into());
    })
    .unwrap();
    assert_eq!(d.get("queue_assigned"), Some(&json!(true)));
    Task::edit(&mut d, |t| t.queue_assigned = false).unwrap();
    assert_eq!(keys(&d), ["task_id", "title", "status", "x", "assigned_to"]);
    // A hand-written `false` means the same as absent and is left alone.
    let mut d =
        doc(r#"{"task_id": "t", "title": "T", "status": "pending", "queue_assigned": false}"#);
    let before = text(&d);
    Task::edit(&mut d, |t| assert!(!t.queue_assigned)).unwrap();
    assert_eq!(text(&d), before);
}

#[test]
fn heartbeats_in_the_seeds_forms_read_as_the_same_instant() {
    let cases = [
        (json!(1_763_892_000), "2025-11-23T10:00:00Z"),
        (json!(1_763_892_000.5), "2025-11-23T10:00:00.5Z"),
        (json!(1_763_892_000.123_456), "2025-11-23T10:00:00.123456Z"),
        (json!("2025-11-23T10:00:00"), "2025-11-23T10:00:00Z"),
        (json!("2025-11-23T10:00:00.250"), "2025-11-23T10:00:00.25Z"),
        (
            json!("2025-11-23 10:00:00.123456"),
            "2025-11-23T10:00:00.123456Z",
        ),
        (json!("2025-11-23T10:00:00Z"), "2025-11-23T10:00:00Z"),
        (json!("2025-11-23T12:00:00+02:00"), "2025-11-23T10:00:00Z"),
        (json!("2025-11-23T10:00:00.000000Z"), "2025-11-23T10:00:00Z"),
    ];
    for (value, expected) in cases {
        let mut d = Doc::default();
        d.set("agent_id", "a1");
        d.set("x", 1);
        d.set("last_heartbeat", value.clone());
        d.set("y", 2);
        let before = text(&d);
        let a = Agent::from_doc(&d).unwrap();
        assert_eq!(a.last_heartbeat, Some(at(expected)), "{value}");
        // Unchanged, it keeps its form; changed, it is written as pas writes timestamps.
        a.write_into(&mut d);
        assert_eq!(text(&d), before);
        Agent::edit(&mut d, |a| a.heartbeat_count = 1).unwrap();
        assert_eq!(d.get("last_heartbeat"), Some(&value));
        Agent::edit(&mut d, |a| {
            a.last_heartbeat = Some(a.last_heartbeat.unwrap() + chrono::Duration::seconds(1))
        })
        .unwrap();
        assert_eq!(
            keys(&d),
            ["agent_id", "x", "last_heartbeat", "y", "heartbeat_count"]
        );
        let written = d.str("last_heartbeat").unwrap();
        assert!(written.ends_with('Z') && written.contains('.'), "{written}");
        assert_eq!(
            crate::clock::parse(written),
            Some(at(expected) + chrono::Duration::seconds(1))
        );
    }
}

#[test]
fn timestamps_that_are_not_are_refused() {
    for bad in [
        json!("yesterday"),
        json!("2025-11-23"),
        json!("ISO-8601 timestamp"),
        json!("1763892000"),
        json!(-1),
        json!(1_763_892_000_000u64), // milliseconds: year 57000
        json!(true),
        json!(["2025-11-23T10:00:00Z"]),
    ] {
        let d = doc(&json!({"agent_id": "a1", "last_heartbeat": bad}).to_string());
        let err = Agent::from_doc(&d).unwrap_err();
        assert_eq!(err.kind, Kind::Data);
        assert!(
            err.message.starts_with("agents/a1.json last_heartbeat: "),
            "{}",
            err.message
        );
        if bad.is_string() || bad.is_number() {
            assert!(
                err.message.contains("seconds since 1970"),
                "{}",
                err.message
            );
        }
    }
    // Inside arrays and nested records the path says where.
    let d = doc(r#"{"agent_id": "a1", "recent_deaths": ["2025-11-23T10:00:00Z", "later"]}"#);
    let err = Agent::from_doc(&d).unwrap_err();
    assert!(
        err.message
            .starts_with("agents/a1.json recent_deaths[1]: \"later\" is not a timestamp"),
        "{}",
        err.message
    );
    let d = doc(r#"{"agent_id": "a1", "checkpoint": {"last_checkpoint": "soon"}}"#);
    let err = Agent::from_doc(&d).unwrap_err();
    assert!(
        err.message
            .starts_with("agents/a1.json checkpoint.last_checkpoint: "),
        "{}",
        err.message
    );
}

#[test]
fn auto_revive_as_a_boolean_reads_as_yes_or_no_and_stays_one() {
    let mut cell = doc(
        r#"{"cell_id": "c", "mission_name": "M", "created_at": "2026-01-01T00:00:00Z", "status": "active",
            "policies": {"auto_revive": false, "handoff_allowed": true, "x_team": "ops"}}"#,
    );
    let before = text(&cell);
    let c = Cell::from_doc(&cell).unwrap();
    assert_eq!(c.policies.auto_revive, Some(AutoRevive::No));
    assert_eq!(c.policies.extra.get("x_team"), Some(&json!("ops")));
    c.write_into(&mut cell);
    assert_eq!(text(&cell), before);
    Cell::edit(&mut cell, |c| {
        c.policies.auto_revive = Some(AutoRevive::Ask)
    })
    .unwrap();
    assert_eq!(
        cell.get("policies"),
        Some(&json!({"auto_revive": "ask", "handoff_allowed": true, "x_team": "ops"}))
    );
    let p = Policies::from_doc(&doc(r#"{"auto_revive": true}"#)).unwrap();
    assert_eq!(p.auto_revive, Some(AutoRevive::Yes));
    let err = Policies::from_doc(&doc(r#"{"auto_revive": "maybe"}"#)).unwrap_err();
    assert_eq!(
        err.message,
        "config/policies.json auto_revive: \"maybe\" is not one of yes, no, ask"
    );
    let err = Cell::from_doc(&doc(
        r#"{"cell_id": "c", "mission_name": "M", "created_at": "2026-01-01T00:00:00Z", "status": "active",
            "policies": {"restart_policy": "sometimes"}}"#,
    ))
    .unwrap_err();
    assert_eq!(
        err.message,
        "cell.json policies.restart_policy: \"sometimes\" is not one of always, on-failure, never"
    );
}

#[test]
fn whole_numbers_written_as_floats_read_as_integers() {
    let d = doc(r#"{"agent_id": "a1", "heartbeat_count": 3.0, "ctx_used": 10.0, "pgid": 7.0}"#);
    let a = unchanged!(Agent, d);
    assert_eq!(
        (a.heartbeat_count, a.ctx_used, a.pgid),
        (3, Some(10), Some(7))
    );
    for bad in [r#"3.5"#, r#"-1"#, r#""3""#, "1e40"] {
        let d = doc(&format!(
            r#"{{"agent_id": "a1", "heartbeat_count": {bad}}}"#
        ));
        let err = Agent::from_doc(&d).unwrap_err();
        assert!(
            err.message.starts_with("agents/a1.json heartbeat_count: ")
                && err.message.contains("whole number"),
            "{}",
            err.message
        );
    }
    // pas writes whole seconds as integers, as the templates do.
    let mut d = doc(templates::TASK);
    Task::edit(&mut d, |t| t.timeout = Some(600.0)).unwrap();
    assert_eq!(d.get("timeout"), Some(&json!(600)));
    Task::edit(&mut d, |t| t.timeout = Some(0.5)).unwrap();
    assert_eq!(d.get("timeout"), Some(&json!(0.5)));
}

#[test]
fn unknown_words_and_wrong_types_are_refused_naming_the_field() {
    let cases = [
        (
            r#"{"agent_id": "a1", "status": "running"}"#,
            "agents/a1.json status: \"running\" is not one of idle, active, paused, failed",
        ),
        (
            r#"{"agent_id": "a1", "role": "boss"}"#,
            "agents/a1.json role: \"boss\" is not one of lead, write, read, audit",
        ),
        (
            r#"{"agent_id": "a1", "reported_status": "active"}"#,
            "agents/a1.json reported_status: \"active\" is not one of ACTIVE, DEGRADED, OFFLINE",
        ),
        (
            r#"{"agent_id": "a1", "capabilities": "coding"}"#,
            "agents/a1.json capabilities: \"coding\" is a string, not an array",
        ),
        (
            r#"{"agent_id": "a1", "capabilities": ["coding", 3]}"#,
            "agents/a1.json capabilities[1]: 3 is a number, not a string",
        ),
        (
            r#"{"agent_id": "a1", "exit": {"cause": "crashed"}}"#,
            "agents/a1.json exit.cause: \"crashed\" is not one of exit, signal, vanished, watchdog, oom, limit",
        ),
        (
            r#"{"agent_id": "a1", "last_failure": {"at": "2026-01-01T00:00:00Z"}}"#,
            "agents/a1.json last_failure.reason: is missing; the file must have it",
        ),
        (
            r#"{"name": "no id"}"#,
            "agent file agent_id: is missing; the file must have it",
        ),
    ];
    for (text, expected) in cases {
        let err = Agent::from_doc(&doc(text)).unwrap_err();
        assert_eq!(err.kind, Kind::Data);
        assert_eq!(err.message, expected);
        assert_eq!(
            err.hint.as_deref(),
            Some("fix the file by hand, then run `pas validate`")
        );
    }
    let task = |s: &str| Task::from_doc(&doc(s)).unwrap_err().message;
    assert_eq!(
        task(r#"{"task_id": "task_002", "title": "T", "status": "later"}"#),
        "tasks/task_002.json status: \"later\" is not one of pending, in_progress, completed, failed"
    );
    assert_eq!(
        task(r#"{"task_id": "t", "title": "T", "status": "pending", "priority": "urgent"}"#),
        "tasks/t.json priority: \"urgent\" is not one of high, medium, low"
    );
    assert_eq!(
        task(r#"{"task_id": "t", "title": "T"}"#),
        "tasks/t.json status: is missing; the file must have it"
    );
    assert_eq!(
        task(r#"{"task_id": "../x", "status": "pending"}"#),
        "task file title: is missing; the file must have it"
    );
    let cell = |s: &str| Cell::from_doc(&doc(s)).unwrap_err().message;
    assert_eq!(
        cell(
            r#"{"cell_id": "c", "mission_name": "M", "created_at": "2026-01-01T00:00:00Z", "status": "done"}"#
        ),
        "cell.json status: \"done\" is not one of active, paused, completed, failed"
    );
    assert_eq!(
        cell(
            r#"{"cell_id": "c", "mission_name": "M", "created_at": "2026-01-01T00:00:00Z", "status": "active", "isolation_level": "level_9"}"#
        ),
        "cell.json isolation_level: \"level_9\" is not one of none, level_1, level_2, level_3"
    );
    // A caller that knows the file names it.
    let err = Agent::from_doc_at(
        &doc(r#"{"agent_id": "other", "status": "x"}"#),
        "agents/a9.json",
    )
    .unwrap_err();
    assert!(err.message.starts_with("agents/a9.json status: "));
}

#[test]
fn recorded_health_and_budget_states_tolerate_what_they_cannot_read() {
    let mut d =
        doc(r#"{"agent_id": "a1", "health": "weird", "ctx_state": 3, "spend_state": "ok"}"#);
    let before = text(&d);
    let a = Agent::from_doc(&d).unwrap();
    assert_eq!(
        (a.health, a.ctx_state, a.spend_state),
        (None, None, Some(BudgetState::Ok))
    );
    a.write_into(&mut d);
    assert_eq!(
        text(&d),
        before,
        "an unreadable record is left until pas sets it"
    );
    Agent::edit(&mut d, |a| {
        a.health = Some(Health::Late);
        a.ctx_state = Some(BudgetState::Warning);
    })
    .unwrap();
    assert_eq!(keys(&d), ["agent_id", "health", "ctx_state", "spend_state"]);
    assert_eq!(d.get("health"), Some(&json!("late")));
    assert_eq!(d.get("ctx_state"), Some(&json!("warning")));
}

#[test]
fn policy_nonsense_reads_as_unset_and_stays_in_the_file() {
    let mut d = doc(
        r#"{"heartbeat_interval": "soon", "misses_down": -1, "cost_hard_usd": null, "tokens_hard": 5,
            "max_retries": 2, "my_tool_policy": {"a": 1}}"#,
    );
    let before = text(&d);
    let p = Policies::from_doc(&d).unwrap();
    assert_eq!(p.heartbeat_interval, None);
    assert_eq!(p.misses_down, None);
    assert_eq!(
        p.cost_hard_usd,
        Some(None),
        "null: no limit, set in this layer"
    );
    assert_eq!(p.cost_soft_usd, None, "absent: not set in this layer");
    assert_eq!(p.tokens_hard, Some(Some(5.0)));
    let unusable: Vec<&str> = p.unusable.iter().map(|u| u.key.as_str()).collect();
    assert_eq!(unusable, ["heartbeat_interval", "misses_down"]);
    assert!(p.unusable[0]
        .reason
        .contains("\"soon\" is a string, not a number"));
    assert!(p.extra.contains_key("my_tool_policy"));
    p.write_into(&mut d);
    assert_eq!(text(&d), before);
    Policies::edit(&mut d, |p| {
        p.max_retries = Some(5);
        p.cost_hard_usd = Some(Some(10.0));
        p.tokens_hard = None;
        p.watchdog = Some(false);
    })
    .unwrap();
    assert_eq!(
        keys(&d),
        [
            "heartbeat_interval",
            "misses_down",
            "cost_hard_usd",
            "max_retries",
            "my_tool_policy",
            "watchdog"
        ]
    );
    assert_eq!(d.get("heartbeat_interval"), Some(&json!("soon")));
    assert_eq!(d.get("cost_hard_usd"), Some(&json!(10)));
    // Overwriting nonsense replaces it where it stands; dropping it from `unusable` removes
    // it; leaving it there keeps it.
    Policies::edit(&mut d, |p| p.heartbeat_interval = Some(15.0)).unwrap();
    assert_eq!(keys(&d)[0], "heartbeat_interval");
    assert_eq!(d.get("heartbeat_interval"), Some(&json!(15)));
    Policies::edit(&mut d, |p| {
        assert_eq!(p.unusable.len(), 1);
        p.unusable.clear();
    })
    .unwrap();
    assert_eq!(
        keys(&d),
        [
            "heartbeat_interval",
            "cost_hard_usd",
            "max_retries",
            "my_tool_policy",
            "watchdog"
        ]
    );
    let mut cell = doc(
        r#"{"cell_id": "c", "mission_name": "M", "created_at": "2026-01-01T00:00:00Z", "status": "active",
            "policies": {"stop_grace": "long", "max_retries": 1}}"#,
    );
    Cell::edit(&mut cell, |c| c.policies.max_retries = Some(2)).unwrap();
    assert_eq!(
        cell.get("policies"),
        Some(&json!({"stop_grace": "long", "max_retries": 2}))
    );
    Cell::edit(&mut cell, |c| c.policies.unusable.clear()).unwrap();
    assert_eq!(cell.get("policies"), Some(&json!({"max_retries": 2})));
}

#[test]
fn the_policy_layer_knows_exactly_the_policies_pas_resolves() {
    let defaults: Vec<&str> = crate::ops::policy::defaults()
        .iter()
        .map(|(k, _, _)| *k)
        .collect();
    let mut typed: Vec<&str> = <Policies as Record>::KEYS.to_vec();
    let mut expected = defaults.clone();
    typed.sort_unstable();
    expected.sort_unstable();
    assert_eq!(typed, expected);
    // Every built-in default reads through the typed layer, and the nullable ones as null.
    let mut d = Doc::default();
    for (key, value, _) in crate::ops::policy::defaults() {
        d.set(key, value);
    }
    let p = unchanged!(Policies, d);
    assert!(p.unusable.is_empty(), "{:?}", p.unusable);
    assert!(p.extra.is_empty());
    assert_eq!(p.heartbeat_ttl, Some(None));
    assert_eq!(p.on_failure, Some(None));
    assert_eq!(p.restart_policy, Some(RestartPolicy::OnFailure));
    assert_eq!(p.backoff_multiplier, Some(2.0));
    assert_eq!(p.no_restart_exit_codes, Some(vec![]));
}

#[test]
fn reservations_merge_entry_by_entry() {
    let mut d = doc(r#"{"x_note": "hand", "reservations": [
            {"status": "active", "job": "j1", "agent": "a1", "cpu": 2, "memory": 4000000000, "gpu": 0, "gpu_memory": 0,
             "port": 8080, "pgid": null, "reserved_at": 1763892000, "ended_at": null, "end_reason": null, "x_ticket": 7},
            {"job": "j0", "agent": "a2", "status": "released", "reserved_at": "2025-11-23T09:00:00Z"}
        ]}"#);
    let before = text(&d);
    let r = Reservations::from_doc(&d).unwrap();
    assert_eq!(r.active().count(), 1);
    assert_eq!(r.reservations[0].amounts(), [2.0, 4e9, 0.0, 0.0]);
    assert_eq!(r.reservations[1].amounts(), [0.0; 4]);
    assert_eq!(r.reservations[0].port, Some(8080));
    r.write_into(&mut d);
    assert_eq!(text(&d), before);
    let end = at("2026-01-01T00:00:00Z");
    Reservations::edit(&mut d, |r| {
        let first = &mut r.reservations[0];
        first.status = ReservationStatus::Released;
        first.ended_at = Some(end);
        first.end_reason = Some("agent failed".into());
        r.reservations.push(Reservation {
            job: "j2".into(),
            agent: "a1".into(),
            cpu: 1.0,
            memory: 0.0,
            gpu: 0.0,
            gpu_memory: 0.0,
            port: None,
            pgid: Some(99),
            pid: None,
            pid_start_time: None,
            status: ReservationStatus::Active,
            reserved_at: end,
            ended_at: None,
            end_reason: None,
            extra: Default::default(),
        });
    })
    .unwrap();
    let list = d.get("reservations").unwrap().as_array().unwrap();
    let first: Vec<&String> = list[0].as_object().unwrap().keys().collect();
    assert_eq!(first[0], "status", "an entry's own order holds");
    assert_eq!(list[0]["x_ticket"], 7);
    assert_eq!(
        list[0]["reserved_at"], 1763892000,
        "unchanged: still an epoch"
    );
    assert_eq!(list[0]["ended_at"], "2026-01-01T00:00:00.000000Z");
    assert_eq!(
        list[1],
        json!({"job": "j0", "agent": "a2", "status": "released", "reserved_at": "2025-11-23T09:00:00Z"})
    );
    assert_eq!(
        list[2].to_string(),
        json!({"job": "j2", "agent": "a1", "cpu": 1, "memory": 0, "gpu": 0, "gpu_memory": 0,
               "port": null, "pgid": 99, "status": "active",
               "reserved_at": "2026-01-01T00:00:00.000000Z", "ended_at": null, "end_reason": null})
        .to_string(),
        "the shape and order reservation.rs gives a new entry"
    );
    assert_eq!(keys(&d), ["x_note", "reservations"]);
    let err = Reservations::from_doc(&doc(
        r#"{"reservations": [{"job": "j", "agent": "a", "status": "active", "reserved_at": "2026-01-01T00:00:00Z"},
                             {"job": "k", "agent": "a", "status": "paused", "reserved_at": "2026-01-01T00:00:00Z"}]}"#,
    ))
    .unwrap_err();
    assert_eq!(
        err.message,
        "reservations.json reservations[1].status: \"paused\" is not one of active, released, killed"
    );
    // A cell without the file has no reservations.
    assert!(Reservations::from_doc(&Doc::default())
        .unwrap()
        .reservations
        .is_empty());
}

#[test]
fn isolation_quantities_are_kept_as_written() {
    let mut d = doc(templates::ISOLATION);
    let iso = Isolation::from_doc(&d).unwrap();
    let unit = crate::units::Unit::Bytes;
    let memory = iso.resource_limits.memory.as_ref().unwrap();
    assert_eq!(memory.amount(unit, "resource_limits.memory").unwrap(), 4e9);
    Isolation::edit(&mut d, |i| {
        i.resource_limits.gpu = Some(Quantity::Number(2.0));
        i.resource_limits.memory = Some(Quantity::Text("8GB".into()));
    })
    .unwrap();
    assert_eq!(
        d.get("resource_limits"),
        Some(&json!({"cpu": "2 cores", "memory": "8GB", "disk": "10GB", "gpu": 2}))
    );
    let lots = Quantity::Text("lots".into());
    let err = lots
        .amount(unit, "config/isolation.json resource_limits.memory")
        .unwrap_err();
    assert!(
        err.message.contains("cannot read \"lots\""),
        "{}",
        err.message
    );
    let err = Isolation::from_doc(&doc(r#"{"resource_limits": {"cpu": -2}}"#)).unwrap_err();
    assert_eq!(
        err.message,
        "config/isolation.json resource_limits.cpu: -2 is below 0"
    );
    let err = Isolation::from_doc(&doc(r#"{"resource_limits": {"cpu": true}}"#)).unwrap_err();
    assert!(err.message.contains("not a quantity"), "{}", err.message);
    let err = Isolation::from_doc(&doc(r#"{"level": "level_4"}"#)).unwrap_err();
    assert!(err
        .message
        .starts_with("config/isolation.json level: \"level_4\""));
}

#[test]
fn permissions_keep_their_agents_in_order() {
    let mut d = doc(
        r#"{"b": {"read": ["*"], "x_note": 1}, "a": {"execute": ["t1"], "handoff_to": ["b"]}, "c": {}}"#,
    );
    let before = text(&d);
    let p = Permissions::from_doc(&d).unwrap();
    assert_eq!(
        p.grants
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>(),
        ["b", "a", "c"]
    );
    assert!(
        p.get("c").unwrap().execute.is_empty(),
        "an absent list grants nothing"
    );
    assert_eq!(p.get("b").unwrap().extra.get("x_note"), Some(&json!(1)));
    p.write_into(&mut d);
    assert_eq!(text(&d), before);
    Permissions::edit(&mut d, |p| {
        let mut a = p.get("a").unwrap().clone();
        a.execute.push("t2".into());
        p.set("a", a);
        p.set(
            "z",
            Grant {
                read: vec!["t1".into()],
                ..Default::default()
            },
        );
        p.grants.retain(|(id, _)| id != "c");
    })
    .unwrap();
    assert_eq!(keys(&d), ["b", "a", "z"]);
    assert_eq!(
        d.get("a"),
        Some(&json!({"execute": ["t1", "t2"], "handoff_to": ["b"]}))
    );
    assert_eq!(
        d.get("z"),
        Some(
            &json!({"read": ["t1"], "write": [], "execute": [], "handoff_to": [], "handoff_from": []})
        )
    );
    let err = Permissions::from_doc(&doc(r#"{"a": ["t1"]}"#)).unwrap_err();
    assert_eq!(
        err.message,
        "config/permissions.json a: [\"t1\"] is an array, not an object"
    );
}

#[test]
fn new_values_have_the_shape_of_new_records() {
    let a = Agent::new("a1");
    let fresh = a.to_doc();
    // Every key but the unset optional ones; nullable ones as null.
    assert_eq!(fresh.get("gateway"), Some(&Value::Null));
    assert_eq!(fresh.get("heartbeat_count"), Some(&json!(0)));
    assert_eq!(fresh.get("role"), Some(&json!("write")));
    assert!(fresh.get("cwd").is_none() && fresh.get("health").is_none());
    assert_eq!(Agent::from_doc(&fresh).unwrap(), a);
    let mut t = Task::new("t1", "Do it");
    assert!(!t.is_finished());
    t.status = TaskStatus::Failed;
    assert!(t.is_finished());
    assert_eq!(
        text(&t.to_doc()),
        text(&doc(
            r#"{"task_id": "t1", "title": "Do it", "description": "", "assigned_to": null,
                "status": "failed", "priority": "medium", "dependencies": [], "timeout": null,
                "artifacts": [], "completed_at": null, "started_at": null, "attempts": 0,
                "last_error": null, "claimed_by": null, "required_capabilities": []}"#
        ))
    );
    // A new agent written into its template keeps the template's order.
    let mut d = doc(templates::AGENT);
    let mut a = Agent::new("writer_9");
    a.role = Role::Audit;
    a.capabilities = vec!["review".into()];
    a.created_at = Some(at("2026-01-01T00:00:00Z"));
    a.name = Some("Nine".into());
    a.write_into(&mut d);
    assert_eq!(
        keys(&d),
        [
            "agent_id",
            "name",
            "role",
            "capabilities",
            "gateway",
            "status",
            "current_task",
            "checkpoint",
            "created_at"
        ]
    );
    assert_eq!(
        d.get("gateway"),
        Some(&Value::Null),
        "the template's nulls stay"
    );
    let c = Cell::from_doc(&doc(templates::CELL)).unwrap();
    assert_eq!(c.clock_start(), at("1970-01-01T00:00:00Z"));
}

#[test]
fn the_spec_cell_of_the_hand_written_tests_reads() {
    // The shapes of docs/cell-format.md's shell example (tests/cli/hand_written.rs).
    let cell = unchanged!(
        Cell,
        doc(r#"{
  "cell_id": "22222222-2222-4222-8222-222222222222",
  "mission_name": "Example Mission",
  "created_at": "2026-01-01T00:00:00Z",
  "created_by": "admin",
  "status": "active",
  "isolation_level": "level_1",
  "max_agents": 4,
  "timeout": 3600
}"#)
    );
    assert_eq!(cell.timeout, Some(3600.0));
    assert!(cell.policies == Policies::default());
    let agent = unchanged!(
        Agent,
        doc(
            r#"{"agent_id": "agent_001", "name": "Lead Agent", "role": "lead",
  "capabilities": ["planning", "coordination"], "gateway": "gateway_1", "status": "idle",
  "current_task": null, "checkpoint": null}"#
        )
    );
    assert_eq!(agent.gateway.as_deref(), Some("gateway_1"));
    assert_eq!(agent.role, Role::Lead);
}

/// `Record::from_text`, the fast path of fleet views, reads what the document path reads,
/// and gives up (for the document path to say why) wherever that path fails or the text
/// is anything but a plain object.
#[test]
fn an_agent_read_from_its_text_is_the_agent_read_from_its_document() {
    use crate::model::field::Record;
    let same = [
        r#"{"agent_id": "a1", "status": "idle"}"#,
        r#"{"agent_id": "a1", "status": "active", "last_heartbeat": "2026-01-01T00:00:00Z",
            "heartbeat_count": 3, "ctx_used": 5, "ctx_limit": 10, "progress": 0.5,
            "capabilities": ["x", "y"], "policies": {"heartbeat_interval": 60},
            "x_custom": {"k": [1, 2]}, "z": null}"#,
        // A key twice: the last value counts, as in an object.
        r#"{"agent_id": "a1", "status": "idle", "status": "paused"}"#,
        // An epoch heartbeat, as shell scripts write it.
        r#"{"agent_id": "a1", "last_heartbeat": 1767225600.5}"#,
        // A value that does not decode in a `cache` field reads as absent either way.
        r#"{"agent_id": "a1", "ctx_state": 42}"#,
    ];
    for text in same {
        let fast = Agent::from_text(text.as_bytes());
        let slow = Agent::from_doc_at(&doc(text), "agents/a1.json").unwrap();
        assert_eq!(fast.as_ref(), Some(&slow), "{text}");
    }
    let refused = [
        "",
        "  ",
        "[1]",
        r#"{"agent_id": "a1""#,
        r#"{"agent_id": "a1"} trailing"#,
        r#"{"status": "idle"}"#,
        r#"{"agent_id": "a1", "status": "running"}"#,
        r#"{"agent_id": 7}"#,
        r#"{"agent\u005fid": "a1"}"#,
    ];
    for text in refused {
        assert_eq!(Agent::from_text(text.as_bytes()), None, "{text}");
    }
}
