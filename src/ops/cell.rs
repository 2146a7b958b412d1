//! Cells: creating one from the templates, finding one by id, prefix or name, changing its
//! status and removing it.
//!
//! A cell's id is its directory name. Hand-written cells may carry a different `cell_id`
//! inside `cell.json` (the spec's own shell example does); lookups accept either, and
//! `pas validate` warns about the mismatch.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::doc::Doc;
use crate::error::{Error, Kind, Result};
use crate::model::{self, Cell, EventKind, Isolation};
use crate::ops::task;
use crate::store::events::{Level, NewEvent};
use crate::store::{self, check_id, Collection, ConfigFile, FileKey, IdKind, Store};
use crate::templates;

/// The statuses a cell can have (the spec's), as `pas cell set --status` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CellStatus {
    /// Agents run; pas revives them.
    Active,
    /// Work is held: agents are told to stop on their next beat.
    Paused,
    /// Every task is done.
    Completed,
    /// The mission failed (time ran out, or an operator said so).
    Failed,
}

impl CellStatus {
    /// The on-disk spelling.
    pub fn as_str(self) -> &'static str {
        model::CellStatus::from(self).as_str()
    }
}

impl From<CellStatus> for model::CellStatus {
    fn from(s: CellStatus) -> model::CellStatus {
        match s {
            CellStatus::Active => model::CellStatus::Active,
            CellStatus::Paused => model::CellStatus::Paused,
            CellStatus::Completed => model::CellStatus::Completed,
            CellStatus::Failed => model::CellStatus::Failed,
        }
    }
}

/// Isolation levels (the spec's), as `pas cell create --isolation` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IsolationLevel {
    /// No isolation: each agent in its own process group.
    None,
    /// Own session, cgroup, enforced resource_limits and TMPDIR.
    #[value(name = "level_1")]
    Level1,
    /// Level 1 plus a mount namespace where only the cell is writable (root).
    #[value(name = "level_2")]
    Level2,
    /// Level 1 in a crun container: own PID, IPC and mount namespaces, private /tmp (root).
    #[value(name = "level_3")]
    Level3,
}

impl From<IsolationLevel> for model::IsolationLevel {
    fn from(l: IsolationLevel) -> model::IsolationLevel {
        match l {
            IsolationLevel::None => model::IsolationLevel::None,
            IsolationLevel::Level1 => model::IsolationLevel::Level1,
            IsolationLevel::Level2 => model::IsolationLevel::Level2,
            IsolationLevel::Level3 => model::IsolationLevel::Level3,
        }
    }
}

/// What `pas cell create` was asked for.
#[derive(Debug, Clone)]
pub struct NewCell {
    /// `mission_name`.
    pub name: String,
    /// `isolation_level` (and `config/isolation.json` `level`).
    pub isolation: IsolationLevel,
    /// `max_agents`.
    pub max_agents: u64,
    /// `timeout` in seconds; `None` for no limit.
    pub timeout: Option<u64>,
    /// `created_by`.
    pub created_by: String,
}

/// The documents of a new cell, from the templates.
pub fn new_cell_files(
    id: &str,
    spec: &NewCell,
    now: DateTime<Utc>,
) -> Result<Vec<(FileKey<'static>, Doc)>> {
    if spec.name.trim().is_empty() {
        return Err(Error::usage("the mission name is empty").hint("pass --name \"Some mission\""));
    }
    if spec.max_agents == 0 {
        return Err(Error::usage("--max-agents must be at least 1"));
    }
    let mut cell = templates::doc(templates::CELL, "templates/cell.json")?;
    Cell::edit(&mut cell, |c| {
        c.cell_id = id.to_string();
        c.mission_name = spec.name.clone();
        c.created_at = now;
        c.created_by = Some(spec.created_by.clone());
        c.status = model::CellStatus::Active;
        c.isolation_level = spec.isolation.into();
        c.max_agents = Some(spec.max_agents);
        c.timeout = spec.timeout.map(|t| t as f64);
    })?;
    let mut isolation = templates::doc(templates::ISOLATION, "templates/isolation.json")?;
    Isolation::edit(&mut isolation, |i| i.level = spec.isolation.into())?;
    let policies = templates::doc(templates::POLICIES, "templates/policies.json")?;
    let permissions = templates::doc(templates::PERMISSIONS, "templates/permissions.json")?;
    Ok(vec![
        (FileKey::Cell, cell),
        (FileKey::Config(ConfigFile::Isolation), isolation),
        (FileKey::Config(ConfigFile::Policies), policies),
        (FileKey::Config(ConfigFile::Permissions), permissions),
    ])
}

/// Creates a cell and returns its id: `id` when given (a retry after an unknown outcome
/// finds the cell it made and creates nothing), else a new uuid. The cell appears with its
/// `cell.created` event or not at all.
pub fn create(
    store: &dyn Store,
    spec: &NewCell,
    id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<String> {
    let id = match id {
        Some(id) => {
            check_id(IdKind::Cell, id)?;
            if let Some(existing) = existing_same(store, id, spec)? {
                return Ok(existing);
            }
            id.to_string()
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    let files = new_cell_files(&id, spec, now)?;
    let event = NewEvent::new(
        Level::Info,
        EventKind::CellCreated,
        format!("cell {:?} created by {}", spec.name, spec.created_by),
    )
    .details(json!({ "mission_name": spec.name, "created_by": spec.created_by }));
    match store.create_cell(&id, &files, &[event], now) {
        // Another creator with the same id and spec got there first: same outcome.
        Err(e) if e.kind == Kind::Conflict => match existing_same(store, &id, spec)? {
            Some(existing) => Ok(existing),
            None => Err(e),
        },
        Err(e) => Err(e),
        Ok(()) => Ok(id),
    }
}

/// `Some(id)` when cell `id` exists and is the one `spec` describes (a retried create);
/// a conflict when it is another cell; `None` when there is none.
fn existing_same(store: &dyn Store, id: &str, spec: &NewCell) -> Result<Option<String>> {
    if !store.has_cell(id) {
        return Ok(None);
    }
    let doc = crate::store::read_required(store, id, FileKey::Cell)?;
    let existing = Cell::from_doc(&doc)?;
    if existing.mission_name == spec.name {
        Ok(Some(id.to_string()))
    } else {
        Err(Error::conflict(format!(
            "cell {id} already exists as mission {:?}, not {:?}",
            existing.mission_name, spec.name
        ))
        .hint("pick another --id, or leave --id out for a new uuid"))
    }
}

/// Finds the cell a user means: its id (directory name), a unique prefix of it, its
/// `cell_id`, or its unique mission name. Ambiguity is refused with the candidates.
pub fn resolve(store: &dyn Store, query: &str) -> Result<String> {
    if query.is_empty() {
        return Err(Error::usage("the cell name is empty").hint("`pas cell list` shows the cells"));
    }
    if store.has_cell(query) {
        return Ok(query.to_string());
    }
    let mut by_prefix = Vec::new();
    let mut by_name = Vec::new();
    for id in store.cell_ids()? {
        if id.starts_with(query) {
            by_prefix.push(id.clone());
        }
        // A cell.json that does not read cannot match by name; validate reports it.
        let cell = store.read(&id, FileKey::Cell).ok().flatten();
        if let Some(cell) = cell.and_then(|doc| Cell::from_doc(&doc).ok()) {
            if cell.mission_name == query || cell.cell_id == query {
                by_name.push(id);
            }
        }
    }
    let candidates = if by_name.is_empty() {
        by_prefix
    } else {
        by_name
    };
    match candidates.len() {
        1 => Ok(candidates.into_iter().next().unwrap_or_default()),
        0 => Err(Error::not_found(format!(
            "no cell matches {query:?} under {}",
            store.location()
        ))
        .hint("`pas cell list` shows the cells; pass an id, a unique id prefix or a mission name")),
        _ => Err(Error::conflict(format!(
            "{query:?} matches {} cells: {}",
            candidates.len(),
            candidates.join(", ")
        ))
        .hint("pass more of the id")),
    }
}

/// A cell at a glance.
#[derive(Debug, Clone)]
pub struct CellSummary {
    /// The directory name.
    pub id: String,
    /// `cell.json` as on disk.
    pub doc: Doc,
    /// Number of agent files.
    pub agents: usize,
    /// Tasks by status (`pending`, `in_progress`, `completed`, `failed`, `unreadable`).
    pub tasks: std::collections::BTreeMap<String, usize>,
}

impl CellSummary {
    /// The summary as JSON: `cell.json`'s fields plus `id`, `path`, `agents`, `tasks`.
    pub fn to_json(&self, store: &dyn Store) -> Value {
        let mut value = self.doc.to_value();
        if let Value::Object(map) = &mut value {
            map.insert("id".into(), json!(self.id));
            map.insert("path".into(), json!(store.describe_cell(&self.id)));
            map.insert("agent_count".into(), json!(self.agents));
            map.insert("task_counts".into(), json!(self.tasks));
        }
        value
    }
}

/// Reads a cell's summary.
pub fn summary(store: &dyn Store, id: &str) -> Result<CellSummary> {
    let doc = store::read_required(store, id, FileKey::Cell)?;
    let agents = store.list(id, Collection::Agents)?.len();
    let mut tasks = std::collections::BTreeMap::new();
    for task_id in store.list(id, Collection::Tasks)? {
        let status = match store.read(id, FileKey::Task(&task_id)) {
            Ok(Some(doc)) => task::view(&task_id, &doc).ok().map(|t| t.status.as_str()),
            _ => None,
        };
        *tasks
            .entry(status.unwrap_or("unreadable").to_string())
            .or_insert(0) += 1;
    }
    Ok(CellSummary {
        id: id.to_string(),
        doc,
        agents,
        tasks,
    })
}

/// Sets a cell's status; returns the previous one.
pub fn set_status(
    store: &dyn Store,
    id: &str,
    status: impl Into<model::CellStatus>,
    now: DateTime<Utc>,
) -> Result<model::CellStatus> {
    let status = status.into();
    store::transact(store, id, now, |txn| set_status_in(txn, status))
}

/// [`set_status`] inside a transaction: the change and its `cell.status` event.
pub fn set_status_in(
    txn: &mut store::Txn<'_>,
    status: impl Into<model::CellStatus>,
) -> Result<model::CellStatus> {
    let status = status.into();
    let now = txn.now();
    let mut doc = txn.read_required(FileKey::Cell)?;
    let mut cell = Cell::from_doc(&doc)?;
    let previous = cell.status;
    if previous == status {
        return Ok(previous);
    }
    // A cell resumed from a pause does not count the pause against its time budget.
    if let (model::CellStatus::Paused, model::CellStatus::Active, Some(since)) =
        (previous, status, cell.status_changed_at)
    {
        let paused = ((now - since).num_milliseconds() as f64 / 1000.0).max(0.0);
        cell.paused_seconds = Some(cell.paused_seconds.unwrap_or(0.0) + paused);
    }
    cell.status = status;
    cell.status_changed_at = Some(now);
    cell.write_into(&mut doc);
    txn.put(FileKey::Cell, doc);
    let level = if status == model::CellStatus::Failed {
        Level::Error
    } else {
        Level::Info
    };
    txn.event(
        NewEvent::new(
            level,
            EventKind::CellStatus,
            format!("cell status {previous} -> {status}"),
        )
        .details(json!({ "from": previous.as_str(), "to": status.as_str() })),
    );
    Ok(previous)
}

/// Removes a cell; an active cell only with `force` (which removes one whose `cell.json`
/// does not read, too).
pub fn remove(store: &dyn Store, id: &str, force: bool) -> Result<()> {
    let doc = store::read_required(store, id, FileKey::Cell)?;
    if !force {
        let cell = Cell::from_doc(&doc).map_err(|e| {
            e.hint("fix the file by hand, or pass --force to remove the cell as it is")
        })?;
        if cell.status == model::CellStatus::Active {
            return Err(Error::conflict(format!("cell {id} is still active")).hint(
                "set it completed, failed or paused first (`pas cell set`), or pass --force",
            ));
        }
    }
    store.remove_cell(id)
}
