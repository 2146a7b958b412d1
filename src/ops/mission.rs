//! Mission files: a whole cell (settings, config, agents, tasks) in one JSON document.
//!
//! `pas cell create --from` checks everything before anything is written, then creates the
//! cell in one atomic step, so a bad mission creates nothing. `pas cell export` writes the
//! definitional fields back (not run-time state like heartbeats), so a mission round-trips.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::doc::Doc;
use crate::error::{Error, Result};
use crate::model::field::Record;
use crate::model::{self, Agent, Cell, EventKind, Isolation, Task, TaskStatus};
use crate::ops::task;
use crate::store::events::{Level, NewEvent};
use crate::store::schema::{self, SchemaKind};
use crate::store::{check_id, ConfigFile, FileKey, IdKind, Store};
use crate::templates;

/// The schema of mission files.
pub const SCHEMA: &str = include_str!("../../schemas/mission.schema.json");

/// The parts of a mission file that become the cell's other files; the rest of its top
/// level is the cell's settings.
const CONFIG: &str = "config";
const AGENTS: &str = "agents";
const TASKS: &str = "tasks";

/// The config files of a mission's `config`, by their name there.
const CONFIG_FILES: [(&str, ConfigFile, &str, &str); 3] = [
    (
        "isolation",
        ConfigFile::Isolation,
        templates::ISOLATION,
        "templates/isolation.json",
    ),
    (
        "policies",
        ConfigFile::Policies,
        templates::POLICIES,
        "templates/policies.json",
    ),
    (
        "permissions",
        ConfigFile::Permissions,
        templates::PERMISSIONS,
        "templates/permissions.json",
    ),
];

/// A mission file's top level, as the mission schema shapes it (no model type has it): the
/// cell's settings, and the parts that become its other files.
struct Mission<'a> {
    /// The `created_by` it gives, if any (else the creator's name is used).
    created_by: Option<&'a str>,
    /// Everything but the parts, in file order: `cell.json`'s settings and any fields pas
    /// does not know.
    settings: Vec<(&'a String, &'a Value)>,
    /// `config`'s objects, by name.
    config: Option<&'a Map<String, Value>>,
    /// `agents`.
    agents: &'a [Value],
    /// `tasks`.
    tasks: &'a [Value],
}

impl<'a> Mission<'a> {
    /// Splits a mission that follows the mission schema.
    fn split(mission: &'a Map<String, Value>) -> Mission<'a> {
        let list = |key: &str| {
            mission
                .get(key)
                .and_then(Value::as_array)
                .map_or(&[][..], Vec::as_slice)
        };
        Mission {
            created_by: mission.get("created_by").and_then(Value::as_str),
            settings: mission
                .iter()
                .filter(|(k, _)| ![CONFIG, AGENTS, TASKS].contains(&k.as_str()))
                .collect(),
            config: mission.get(CONFIG).and_then(Value::as_object),
            agents: list(AGENTS),
            tasks: list(TASKS),
        }
    }

    /// The object `config.<name>`, if given.
    fn config_file(&self, name: &str) -> Option<&'a Map<String, Value>> {
        self.config?.get(name)?.as_object()
    }
}

/// Of the fields of a document of type `keys`, those a person writes (`definition`) and
/// those pas does not know (a person's own).
fn definitional(
    map: &Map<String, Value>,
    keys: &[&str],
    definition: &[&str],
) -> Map<String, Value> {
    map.iter()
        .filter(|(k, _)| definition.contains(&k.as_str()) || !keys.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

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

/// `template` with the fields of `over` set over it (each replacing the template's).
fn merged(template: &'static str, name: &str, over: Option<&Map<String, Value>>) -> Result<Doc> {
    let mut doc = templates::doc(template, name)?;
    for (k, v) in over.into_iter().flatten() {
        doc.set(k, v.clone());
    }
    Ok(doc)
}

/// The cell template with a mission's settings over it: a field pas records itself
/// (`status`, `created_at`, ...) is not the mission's to set, and an object over an object
/// (the cell's `policies`) is merged key by key.
fn cell_over_template(settings: &[(&String, &Value)]) -> Result<Doc> {
    let mut doc = templates::doc(templates::CELL, "templates/cell.json")?;
    for &(key, value) in settings {
        if Cell::KEYS.contains(&key.as_str()) && !Cell::DEFINITION.contains(&key.as_str()) {
            continue;
        }
        if let (Some(Value::Object(old)), Value::Object(new)) = (doc.map_mut().get_mut(key), value)
        {
            for (k, v) in new {
                old.insert(k.clone(), v.clone());
            }
            continue;
        }
        doc.set(key, value.clone());
    }
    Ok(doc)
}

/// Everything a mission file makes, checked and ready to write.
pub struct Planned {
    /// The new cell's id.
    pub cell_id: String,
    /// The mission's name.
    pub mission_name: String,
    /// Every document, by its place in the cell.
    pub files: Vec<(String, Doc)>,
    /// Agent ids, in file order.
    pub agents: Vec<String>,
    /// Task ids, in file order.
    pub tasks: Vec<String>,
}

/// Builds and checks every document of a mission; nothing is written.
pub fn plan(mission: &Value, created_by: &str, now: DateTime<Utc>) -> Result<Planned> {
    let Value::Object(top) = mission else {
        return Err(bad("a mission file holds one JSON object".into()));
    };
    if let Some(v) = schema_problems(mission).into_iter().next() {
        return Err(bad(format!("{}: {}", describe(mission, &v.path), v.reason)));
    }
    let m = Mission::split(top);
    let cell_id = uuid::Uuid::new_v4().to_string();
    let data = |e: Error| bad(e.message);

    // cell.json: the template, the mission's settings, and any extra top-level fields.
    let mut cell = cell_over_template(&m.settings)?;
    let settings = Cell::edit(&mut cell, |c| {
        c.cell_id = cell_id.clone();
        c.created_at = now;
        c.created_by = Some(m.created_by.unwrap_or(created_by).to_string());
        c.status = model::CellStatus::Active;
        c.clone()
    })
    .map_err(data)?;
    let mut config = Vec::new();
    for (name, file, template, template_name) in CONFIG_FILES {
        let mut doc = merged(template, template_name, m.config_file(name))?;
        if file == ConfigFile::Isolation {
            Isolation::edit(&mut doc, |i| i.level = settings.isolation_level).map_err(data)?;
        }
        config.push((file, doc));
    }

    if let Some(max) = settings.max_agents {
        if m.agents.len() as u64 > max {
            return Err(bad(format!(
                "the mission has {} agents but max_agents is {max}",
                m.agents.len()
            )));
        }
    }
    let mut files: Vec<(String, Doc)> = Vec::new();
    let mut agents = Vec::new();
    for (i, item) in m.agents.iter().enumerate() {
        let item = item.as_object().cloned().unwrap_or_default();
        let at = format!("agents[{i}]");
        // The agent as the mission gives it, before the template fills it in.
        let given = Agent::from_doc_at(&Doc::from_map(item.clone()), &at).map_err(data)?;
        let id = given.agent_id.clone();
        check_id(IdKind::Agent, &id)
            .map_err(|e| bad(format!("agent {id:?} (agents[{i}]): {}", e.message)))?;
        if agents.contains(&id) {
            return Err(bad(format!("agent {id} (agents[{i}]) is listed twice")));
        }
        let mut doc = merged(templates::AGENT, "templates/agent.json", Some(&item))?;
        Agent::edit(&mut doc, |a| {
            if given.name.is_none() {
                a.name = Some(id.clone());
            }
            a.created_at = Some(now);
        })
        .map_err(data)?;
        files.push((FileKey::Agent(&id).relative(), doc));
        agents.push(id);
    }
    let mut tasks = Vec::new();
    let mut task_views = BTreeMap::new();
    for (i, item) in m.tasks.iter().enumerate() {
        let mut doc = merged(templates::TASK, "templates/task.json", item.as_object())?;
        let mut t = Task::from_doc_at(&doc, &format!("tasks[{i}]")).map_err(data)?;
        t.status = TaskStatus::Pending;
        t.created_at = Some(now);
        t.write_into(&mut doc);
        let id = t.task_id.clone();
        check_id(IdKind::Task, &id)
            .map_err(|e| bad(format!("task {id:?} (tasks[{i}]): {}", e.message)))?;
        if tasks.contains(&id) {
            return Err(bad(format!("task {id} (tasks[{i}]) is listed twice")));
        }
        if let Some(agent) = &t.assigned_to {
            if !agents.contains(agent) {
                return Err(bad(format!(
                    "task {id} (tasks[{i}]) is assigned to unknown agent {agent}"
                )));
            }
        }
        task_views.insert(id.clone(), t);
        files.push((FileKey::Task(&id).relative(), doc));
        tasks.push(id);
    }
    if let Some((id, dep)) = task::dangling_dependencies(&task_views).into_iter().next() {
        let i = tasks.iter().position(|t| *t == id).unwrap_or(0);
        return Err(bad(format!(
            "task {id} (tasks[{i}]) depends on unknown task {dep}"
        )));
    }
    if let Some(cycle) = task::find_cycle(&task::graph(&task_views)) {
        return Err(bad(format!("dependency cycle: {}", cycle.join(" -> "))));
    }
    let mut head = vec![(FileKey::Cell.relative(), cell)];
    head.extend(
        config
            .into_iter()
            .map(|(file, doc)| (FileKey::Config(file).relative(), doc)),
    );
    files.splice(0..0, head);
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
        mission_name: settings.mission_name,
        files,
        agents,
        tasks,
    })
}

fn kind_of(rel: &str) -> SchemaKind {
    key_of(rel).schema()
}

/// The document a planned file's relative path names (the paths come from `FileKey`s).
fn key_of(rel: &str) -> FileKey<'_> {
    let fixed = [
        FileKey::Cell,
        FileKey::Config(ConfigFile::Isolation),
        FileKey::Config(ConfigFile::Policies),
        FileKey::Config(ConfigFile::Permissions),
    ];
    if let Some(key) = fixed.into_iter().find(|k| k.relative() == rel) {
        return key;
    }
    let file = rel.rsplit_once('/').map_or(rel, |(_, file)| file);
    let id = file.rsplit_once('.').map_or(file, |(stem, _)| stem);
    if FileKey::Agent(id).relative() == rel {
        FileKey::Agent(id)
    } else {
        FileKey::Task(id)
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
        .map(|(rel, doc)| (key_of(rel), doc.clone()))
        .collect();
    let name = &planned.mission_name;
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

/// The mission file of an existing cell: the definitional fields of its documents (see
/// [`Cell::DEFINITION`], [`Agent::DEFINITION`], [`Task::DEFINITION`]) and the fields pas
/// does not know, not the state of the run.
pub fn export(store: &dyn Store, cell: &str) -> Result<Value> {
    let cell_doc = crate::store::read_required(store, cell, FileKey::Cell)?;
    let mut out = definitional(cell_doc.map(), Cell::KEYS, Cell::DEFINITION);
    let mut config = Map::new();
    for (name, file, _, _) in CONFIG_FILES {
        if let Some(doc) = store.read(cell, FileKey::Config(file))? {
            config.insert(name.into(), doc.to_value());
        }
    }
    out.insert(CONFIG.into(), Value::Object(config));
    let (agents, errors) = crate::ops::agent::read_all(store, cell)?;
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    out.insert(
        AGENTS.into(),
        Value::from(
            agents
                .iter()
                .map(|a| Value::Object(definitional(a.map(), Agent::KEYS, Agent::DEFINITION)))
                .collect::<Vec<_>>(),
        ),
    );
    let files = task::read_all(store, cell)?;
    if let Some(e) = files.errors.into_iter().next() {
        return Err(e);
    }
    let tasks = &files.tasks;
    // Dependencies first, so the file reads in the order work happens.
    let mut ordered: Vec<(&String, &Task)> = Vec::new();
    let mut placed = BTreeSet::new();
    while ordered.len() < tasks.len() {
        let before = ordered.len();
        for (id, t) in tasks {
            if !placed.contains(id)
                && t.dependencies
                    .iter()
                    .all(|d| placed.contains(d) || !tasks.contains_key(d))
            {
                ordered.push((id, t));
                placed.insert(id.clone());
            }
        }
        if ordered.len() == before {
            ordered.extend(tasks.iter().filter(|(id, _)| !placed.contains(*id)));
            break;
        }
    }
    out.insert(
        TASKS.into(),
        Value::from(
            ordered
                .into_iter()
                .filter_map(|(id, t)| Some(Value::Object(task_definition(files.docs.get(id)?, t))))
                .collect::<Vec<_>>(),
        ),
    );
    Ok(Value::Object(out))
}

/// A task's definitional fields: an assignment its claim made (`queue_assigned`) is the
/// queue's, not the mission's, so it goes back to nobody.
fn task_definition(doc: &Doc, t: &Task) -> Map<String, Value> {
    let mut doc = doc.clone();
    if t.queue_assigned {
        let mut unassigned = t.clone();
        unassigned.assigned_to = None;
        unassigned.write_into(&mut doc);
    }
    definitional(doc.map(), Task::KEYS, Task::DEFINITION)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock;

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
    fn the_definitions_are_what_a_mission_file_writes() {
        let schema: Value = serde_json::from_str(SCHEMA).unwrap();
        let properties = |v: &Value| -> BTreeSet<String> {
            v["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect()
        };
        let set =
            |keys: &[&str]| -> BTreeSet<String> { keys.iter().map(|k| k.to_string()).collect() };
        let mut settings = properties(&schema);
        for part in [CONFIG, AGENTS, TASKS] {
            assert!(settings.remove(part), "{part}");
        }
        assert_eq!(settings, set(Cell::DEFINITION));
        assert_eq!(
            properties(&schema["properties"][TASKS]["items"]),
            set(Task::DEFINITION)
        );
        // An agent file defines how pas starts it, too (`pas agent add|set`).
        assert!(
            properties(&schema["properties"][AGENTS]["items"]).is_subset(&set(Agent::DEFINITION))
        );
        for (definition, keys) in [
            (Cell::DEFINITION, Cell::KEYS),
            (Agent::DEFINITION, Agent::KEYS),
            (Task::DEFINITION, Task::KEYS),
        ] {
            assert!(set(definition).is_subset(&set(keys)), "{definition:?}");
        }
        let config = properties(&schema["properties"][CONFIG]);
        assert_eq!(
            config,
            CONFIG_FILES.iter().map(|f| f.0.to_string()).collect()
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
