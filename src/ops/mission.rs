//! Mission files: a whole cell (settings, config, agents, tasks) in one JSON document.
//!
//! `pas cell create --from` checks everything before anything is written, then creates the
//! cell in one atomic step, so a bad mission creates nothing. `pas cell export` writes the
//! definitional fields back (not run-time state like heartbeats), so a mission round-trips.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::clock;
use crate::doc::Doc;
use crate::error::{Error, Result};
use crate::model::EventKind;
use crate::ops::task;
use crate::store::events::{Level, NewEvent};
use crate::store::schema::{self, SchemaKind};
use crate::store::{check_id, ConfigFile, FileKey, IdKind, Store};
use crate::templates;

/// The schema of mission files.
pub const SCHEMA: &str = include_str!("../../schemas/mission.schema.json");

/// Fields pas keeps up to date while a mission runs; they are not part of a mission file.
const AGENT_RUNTIME: [&str; 18] = [
    "status",
    "current_task",
    "checkpoint",
    "created_at",
    "last_heartbeat",
    "heartbeat_count",
    "reported_status",
    "progress",
    "ctx_used",
    "ctx_limit",
    "metadata",
    "note",
    "failures",
    "last_failure",
    "health",
    "health_changed_at",
    "pending_directive",
    "queue_assigned",
];
const TASK_RUNTIME: [&str; 10] = [
    "status",
    "created_at",
    "completed_at",
    "started_at",
    "attempts",
    "last_error",
    "claimed_by",
    "artifacts",
    "handoff_request",
    "queue_assigned",
];
const CELL_RUNTIME: [&str; 5] = [
    "cell_id",
    "created_at",
    "status",
    "status_changed_at",
    "activated_at",
];

fn bad(message: String) -> Error {
    Error::usage(message).hint("fix the mission file; nothing was created")
}

fn schema_problems(mission: &Value) -> Vec<schema::Violation> {
    let schema: Value = match serde_json::from_str(SCHEMA) {
        Ok(s) => s,
        Err(e) => {
            return vec![schema::Violation {
                path: String::new(),
                reason: e.to_string(),
            }]
        }
    };
    match jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&schema)
    {
        Ok(v) => v
            .iter_errors(mission)
            .map(|e| schema::Violation {
                path: e.instance_path().to_string(),
                reason: e.to_string(),
            })
            .collect(),
        Err(e) => vec![schema::Violation {
            path: String::new(),
            reason: e.to_string(),
        }],
    }
}

/// Names the item a JSON pointer like `/tasks/2/priority` points into.
fn describe(mission: &Value, pointer: &str) -> String {
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    if let [list @ ("agents" | "tasks"), index, rest @ ..] = parts.as_slice() {
        let key = if *list == "agents" {
            "agent_id"
        } else {
            "task_id"
        };
        let noun = if *list == "agents" { "agent" } else { "task" };
        let id = index
            .parse::<usize>()
            .ok()
            .and_then(|i| {
                mission
                    .get(*list)?
                    .get(i)?
                    .get(key)?
                    .as_str()
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "?".into());
        let field = if rest.is_empty() {
            String::new()
        } else {
            format!(" field {}", rest.join("/"))
        };
        return format!("{noun} {id} ({list}[{index}]){field}");
    }
    if pointer.is_empty() {
        "the mission".into()
    } else {
        pointer.to_string()
    }
}

fn merged(template: &'static str, name: &str, over: Option<&Value>) -> Result<Doc> {
    let mut doc = templates::doc(template, name)?;
    if let Some(Value::Object(m)) = over {
        for (k, v) in m {
            doc.set(k, v.clone());
        }
    }
    Ok(doc)
}

/// Everything a mission file makes, checked and ready to write.
pub struct Planned {
    /// The new cell's id.
    pub cell_id: String,
    /// Every document, by its place in the cell.
    pub files: Vec<(String, Doc)>,
    /// Agent ids, in file order.
    pub agents: Vec<String>,
    /// Task ids, in file order.
    pub tasks: Vec<String>,
}

/// Builds and checks every document of a mission; nothing is written.
pub fn plan(mission: &Value, created_by: &str, now: DateTime<Utc>) -> Result<Planned> {
    if !mission.is_object() {
        return Err(bad("a mission file holds one JSON object".into()));
    }
    if let Some(v) = schema_problems(mission).into_iter().next() {
        return Err(bad(format!("{}: {}", describe(mission, &v.path), v.reason)));
    }
    let cell_id = uuid::Uuid::new_v4().to_string();
    let text = |k: &str| mission.get(k).and_then(Value::as_str);

    // cell.json: the template, the mission's settings, and any extra top-level fields.
    let mut cell = templates::doc(templates::CELL, "templates/cell.json")?;
    cell.set("cell_id", cell_id.as_str());
    cell.set("mission_name", text("mission_name").unwrap_or_default());
    cell.set("created_at", clock::stamp(now));
    cell.set("created_by", text("created_by").unwrap_or(created_by));
    cell.set("status", "active");
    for key in ["isolation_level", "max_agents", "timeout"] {
        if let Some(v) = mission.get(key) {
            cell.set(key, v.clone());
        }
    }
    if let Some(Value::Object(p)) = mission.get("policies") {
        let mut policies = cell
            .get("policies")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (k, v) in p {
            policies.insert(k.clone(), v.clone());
        }
        cell.set("policies", Value::Object(policies));
    }
    if let Value::Object(m) = mission {
        for (k, v) in m {
            let known = [
                "mission_name",
                "created_by",
                "isolation_level",
                "max_agents",
                "timeout",
                "policies",
                "config",
                "agents",
                "tasks",
            ];
            if !known.contains(&k.as_str()) && !CELL_RUNTIME.contains(&k.as_str()) {
                cell.set(k, v.clone());
            }
        }
    }
    let config = mission.get("config");
    let mut isolation = merged(
        templates::ISOLATION,
        "templates/isolation.json",
        config.and_then(|c| c.get("isolation")),
    )?;
    if let Some(level) = cell.str("isolation_level").map(str::to_string) {
        isolation.set("level", level);
    }
    let policies = merged(
        templates::POLICIES,
        "templates/policies.json",
        config.and_then(|c| c.get("policies")),
    )?;
    let permissions = merged(
        templates::PERMISSIONS,
        "templates/permissions.json",
        config.and_then(|c| c.get("permissions")),
    )?;

    let empty = Vec::new();
    let agent_items = mission
        .get("agents")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let task_items = mission
        .get("tasks")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    if let Some(max) = cell.u64("max_agents") {
        if agent_items.len() as u64 > max {
            return Err(bad(format!(
                "the mission has {} agents but max_agents is {max}",
                agent_items.len()
            )));
        }
    }
    let mut files: Vec<(String, Doc)> = Vec::new();
    let mut agents = Vec::new();
    for (i, item) in agent_items.iter().enumerate() {
        let id = item
            .get("agent_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        check_id(IdKind::Agent, &id)
            .map_err(|e| bad(format!("agent {id:?} (agents[{i}]): {}", e.message)))?;
        if agents.contains(&id) {
            return Err(bad(format!("agent {id} (agents[{i}]) is listed twice")));
        }
        let mut doc = merged(templates::AGENT, "templates/agent.json", Some(item))?;
        if item.get("name").is_none() {
            doc.set("name", id.as_str());
        }
        doc.set("created_at", clock::stamp(now));
        files.push((FileKey::Agent(&id).relative(), doc));
        agents.push(id);
    }
    let mut tasks = Vec::new();
    let mut task_docs = BTreeMap::new();
    for (i, item) in task_items.iter().enumerate() {
        let id = item
            .get("task_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        check_id(IdKind::Task, &id)
            .map_err(|e| bad(format!("task {id:?} (tasks[{i}]): {}", e.message)))?;
        if tasks.contains(&id) {
            return Err(bad(format!("task {id} (tasks[{i}]) is listed twice")));
        }
        let mut doc = merged(templates::TASK, "templates/task.json", Some(item))?;
        doc.set("status", "pending");
        doc.set("created_at", clock::stamp(now));
        if let Some(agent) = doc.str("assigned_to") {
            if !agents.iter().any(|a| a == agent) {
                return Err(bad(format!(
                    "task {id} (tasks[{i}]) is assigned to unknown agent {agent}"
                )));
            }
        }
        task_docs.insert(id.clone(), doc.clone());
        files.push((FileKey::Task(&id).relative(), doc));
        tasks.push(id);
    }
    if let Some((id, dep)) = task::dangling_dependencies(&task_docs).into_iter().next() {
        let i = tasks.iter().position(|t| *t == id).unwrap_or(0);
        return Err(bad(format!(
            "task {id} (tasks[{i}]) depends on unknown task {dep}"
        )));
    }
    if let Some(cycle) = task::find_cycle(&task::graph(&task_docs)) {
        return Err(bad(format!("dependency cycle: {}", cycle.join(" -> "))));
    }
    files.insert(0, (FileKey::Cell.relative(), cell));
    files.insert(
        1,
        (FileKey::Config(ConfigFile::Isolation).relative(), isolation),
    );
    files.insert(
        2,
        (FileKey::Config(ConfigFile::Policies).relative(), policies),
    );
    files.insert(
        3,
        (
            FileKey::Config(ConfigFile::Permissions).relative(),
            permissions,
        ),
    );
    // Every document must follow its schema before anything is written.
    for (rel, doc) in &files {
        let kind = kind_of(rel);
        if let Some(v) = schema::validate(kind, &doc.to_value()).into_iter().next() {
            return Err(bad(format!(
                "{rel} would break its schema at {}: {}",
                if v.path.is_empty() { "/" } else { &v.path },
                v.reason
            )));
        }
    }
    Ok(Planned {
        cell_id,
        files,
        agents,
        tasks,
    })
}

fn kind_of(rel: &str) -> SchemaKind {
    match rel {
        "cell.json" => SchemaKind::Cell,
        "config/isolation.json" => SchemaKind::Isolation,
        "config/policies.json" => SchemaKind::Policies,
        "config/permissions.json" => SchemaKind::Permissions,
        r if r.starts_with("agents/") => SchemaKind::Agent,
        _ => SchemaKind::Task,
    }
}

/// Reads a mission file (a path, or `-` for stdin is handled by the caller).
pub fn parse(bytes: &[u8], path: &Path) -> Result<Value> {
    Ok(Doc::parse(bytes, path)
        .map_err(|e| Error::usage(e.message).hint("fix the mission file; nothing was created"))?
        .to_value())
}

/// Creates a cell from a mission; returns its id.
pub fn create(
    store: &dyn Store,
    mission: &Value,
    created_by: &str,
    now: DateTime<Utc>,
) -> Result<String> {
    let planned = plan(mission, created_by, now)?;
    let keys: Vec<(FileKey<'_>, Doc)> = planned
        .files
        .iter()
        .map(|(rel, doc)| {
            let key = match rel.as_str() {
                "cell.json" => FileKey::Cell,
                "config/isolation.json" => FileKey::Config(ConfigFile::Isolation),
                "config/policies.json" => FileKey::Config(ConfigFile::Policies),
                "config/permissions.json" => FileKey::Config(ConfigFile::Permissions),
                r => {
                    let (dir, file) = r.split_once('/').unwrap_or(("tasks", r));
                    let id = file.trim_end_matches(".json");
                    if dir == "agents" {
                        FileKey::Agent(id)
                    } else {
                        FileKey::Task(id)
                    }
                }
            };
            (key, doc.clone())
        })
        .collect();
    let name = mission
        .get("mission_name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let event = NewEvent::new(
        Level::Info,
        EventKind::CellCreated,
        format!(
            "cell {name:?} created from a mission file with {} agent(s) and {} task(s)",
            planned.agents.len(),
            planned.tasks.len()
        ),
    )
    .details(json!({ "agents": planned.agents, "tasks": planned.tasks }));
    store.create_cell(&planned.cell_id, &keys, &[event], now)?;
    Ok(planned.cell_id)
}

fn without(doc: &Doc, runtime: &[&str]) -> Value {
    let map: Map<String, Value> = doc
        .map()
        .iter()
        .filter(|(k, _)| !runtime.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Value::Object(map)
}

/// The mission file of an existing cell.
pub fn export(store: &dyn Store, cell: &str) -> Result<Value> {
    let cell_doc = crate::store::read_required(store, cell, FileKey::Cell)?;
    let mut out = Map::new();
    if let Value::Object(m) = without(&cell_doc, &CELL_RUNTIME) {
        out.extend(m);
    }
    let mut config = Map::new();
    for (name, file) in [
        ("isolation", ConfigFile::Isolation),
        ("policies", ConfigFile::Policies),
        ("permissions", ConfigFile::Permissions),
    ] {
        if let Some(doc) = store.read(cell, FileKey::Config(file))? {
            config.insert(name.into(), doc.to_value());
        }
    }
    out.insert("config".into(), Value::Object(config));
    let (agents, errors) = crate::ops::agent::read_all(store, cell)?;
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    out.insert(
        "agents".into(),
        Value::from(
            agents
                .iter()
                .map(|a| without(a, &AGENT_RUNTIME))
                .collect::<Vec<_>>(),
        ),
    );
    let (tasks, errors) = task::read_all(store, cell)?;
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    // Dependencies first, so the file reads in the order work happens.
    let mut ordered: Vec<&Doc> = Vec::new();
    let mut placed = BTreeSet::new();
    while ordered.len() < tasks.len() {
        let before = ordered.len();
        for (id, t) in &tasks {
            if !placed.contains(id)
                && t.strings("dependencies")
                    .iter()
                    .all(|d| placed.contains(d) || !tasks.contains_key(d))
            {
                ordered.push(t);
                placed.insert(id.clone());
            }
        }
        if ordered.len() == before {
            ordered.extend(
                tasks
                    .iter()
                    .filter(|(id, _)| !placed.contains(*id))
                    .map(|(_, t)| t),
            );
            break;
        }
    }
    out.insert(
        "tasks".into(),
        Value::from(
            ordered
                .iter()
                .map(|t| without(t, &TASK_RUNTIME))
                .collect::<Vec<_>>(),
        ),
    );
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_mission_plans_cleanly() {
        let mission: Value = serde_json::from_str(templates::MISSION).unwrap();
        let planned = plan(&mission, "test", clock::now()).unwrap();
        assert_eq!(planned.agents.len(), 4);
        assert_eq!(
            planned.tasks,
            ["outline", "chapter_1", "chapter_2", "review"]
        );
    }

    #[test]
    fn a_bad_task_is_named() {
        let mut mission: Value = serde_json::from_str(templates::MISSION).unwrap();
        mission["tasks"][2]["priority"] = json!("urgent");
        let err = plan(&mission, "t", clock::now()).err().unwrap();
        assert!(
            err.message
                .contains("task chapter_2 (tasks[2]) field priority"),
            "{}",
            err.message
        );
        let mut mission: Value = serde_json::from_str(templates::MISSION).unwrap();
        mission["tasks"][3]["dependencies"] = json!(["nope"]);
        let err = plan(&mission, "t", clock::now()).err().unwrap();
        assert!(
            err.message
                .contains("task review (tasks[3]) depends on unknown task nope"),
            "{}",
            err.message
        );
    }
}
