//! Agents: adding one to a cell (within `max_agents`), reading and removing them.
//!
//! Adding takes the cell lock, so concurrent adds never exceed `max_agents`; the agent file
//! itself is created with a no-replace rename, so two adds of one id never overwrite.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::doc::Doc;
use crate::error::{Error, Result};
use crate::model::{Agent, AgentStatus, Cell, EventKind, Task, TaskStatus};
use crate::store::events::{Level, NewEvent};
use crate::store::{self, check_id, Collection, FileKey, IdKind, Store};
use crate::templates;

/// Roles (the spec's): the model's words.
pub use crate::model::Role;

/// What `pas agent add` was asked for.
#[derive(Debug, Clone)]
pub struct NewAgent {
    /// `agent_id`.
    pub id: String,
    /// `name`; the id when not given.
    pub name: Option<String>,
    /// `role`.
    pub role: Role,
    /// `capabilities`.
    pub capabilities: Vec<String>,
    /// `gateway`.
    pub gateway: Option<String>,
    /// `command`: the argv that runs the agent (empty: none).
    pub command: Vec<String>,
    /// `cwd`: the directory the command runs in (`None`: the cell's directory).
    pub cwd: Option<String>,
}

/// What `pas agent set` changes.
#[derive(Debug, Clone, Default)]
pub struct AgentChange {
    /// A new `name`.
    pub name: Option<String>,
    /// A new `cwd`.
    pub cwd: Option<String>,
    /// Variables to set in `env`.
    pub env: Vec<(String, String)>,
    /// Variables to remove from `env`.
    pub unset_env: Vec<String>,
    /// A new `status` (`idle`, `active`, `paused`).
    pub status: Option<AgentStatus>,
    /// A new `command`.
    pub command: Option<Vec<String>>,
}

impl AgentChange {
    fn apply(&self, a: &mut Agent) {
        if let Some(n) = &self.name {
            a.name = Some(n.clone());
        }
        if let Some(cwd) = &self.cwd {
            a.cwd = Some(cwd.clone());
        }
        for (k, v) in &self.env {
            a.env.insert(k.clone(), Value::from(v.as_str()));
        }
        for k in &self.unset_env {
            a.env.shift_remove(k);
        }
        if let Some(cmd) = &self.command {
            a.command = cmd.clone();
        }
        if let Some(s) = self.status {
            a.status = s;
        }
    }
}

/// Marks an agent made `active` by an operator at `now` (from another status): its process,
/// when it is not running, is to be started, and how it last ended is no death.
pub fn activated(a: &mut Agent, was: AgentStatus, now: DateTime<Utc>) {
    if a.status == AgentStatus::Active && was != AgentStatus::Active {
        a.activated_at = Some(now);
    }
}

/// An agent's command as it is stored: a program named by a path (`./my-agent.sh`,
/// `bin/run`) is made absolute against `base`, the directory the command was given in, and
/// must be a file that can be executed; a bare name (`python3`) is looked up on `PATH` when
/// it runs. Arguments are kept as given (they are read in the agent's `cwd`).
pub fn resolve_command(mut command: Vec<String>, base: &Path) -> Result<Vec<String>> {
    let Some(program) = command.first_mut() else {
        return Ok(command);
    };
    if !program.contains('/') {
        return Ok(command);
    }
    let path = base.join(program.as_str());
    let meta = std::fs::metadata(&path).map_err(|e| {
        let what = match e.kind() {
            std::io::ErrorKind::NotFound => "does not exist".to_string(),
            _ => format!("cannot be read ({e})"),
        };
        Error::not_found(format!(
            "the agent's command {program}: {} {what} (a relative path is taken from {}, the current directory)",
            absolute(&path),
            base.display()
        ))
        .hint("give its path from this directory, or an absolute one")
    })?;
    if !meta.is_file() {
        return Err(Error::usage(format!(
            "the agent's command {} is not a file",
            path.display()
        )));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(Error::usage(format!(
            "the agent's command {} is not executable",
            path.display()
        ))
        .hint(format!(
            "`chmod +x {}`, or run it through its interpreter (-- sh {})",
            path.display(),
            program
        )));
    }
    *program = absolute(&path);
    Ok(command)
}

/// An agent's `cwd` as it is stored: absolute (a relative one against `base`, the
/// directory it was given in), and an existing directory.
pub fn resolve_dir(dir: &str, base: &Path) -> Result<String> {
    let path = base.join(dir);
    if !path.is_dir() {
        return Err(Error::not_found(format!(
            "--cwd {dir}: {} is not a directory",
            path.display()
        ))
        .hint("give an existing directory, absolute or from this one"));
    }
    Ok(absolute(&path))
}

/// `path` without `.` components (and with `..` kept: links may make them matter).
fn absolute(path: &Path) -> String {
    path.components()
        .filter(|c| *c != std::path::Component::CurDir)
        .collect::<std::path::PathBuf>()
        .display()
        .to_string()
}

/// The typed view of agent `id`'s file; errors name the file by the id it is stored under.
pub fn typed(id: &str, doc: &Doc) -> Result<Agent> {
    Agent::from_doc_at(doc, &crate::store::FileKey::Agent(id).relative())
}

/// Applies a change to an agent under its lock; returns the new document.
pub fn change(
    store: &dyn Store,
    cell_id: &str,
    agent_id: &str,
    c: &AgentChange,
    now: DateTime<Utc>,
) -> Result<Doc> {
    read(store, cell_id, agent_id)?;
    store::transact(store, cell_id, now, |txn| {
        let mut doc = txn
            .read(FileKey::Agent(agent_id))?
            .ok_or_else(|| Error::not_found(format!("no agent {agent_id} in cell {cell_id}")))?;
        let mut agent = typed(agent_id, &doc)?;
        let old = agent.status;
        c.apply(&mut agent);
        activated(&mut agent, old, now);
        agent.write_into(&mut doc);
        txn.put(FileKey::Agent(agent_id), doc.clone());
        if c.status.is_some() && agent.status != old {
            txn.event(
                NewEvent::new(
                    Level::Info,
                    EventKind::AgentStatus,
                    format!("agent {agent_id} status {old} -> {}", agent.status),
                )
                .agent(agent_id),
            );
        }
        Ok(doc)
    })
}

/// The document of a new agent, from the template.
pub fn new_agent_doc(spec: &NewAgent, now: DateTime<Utc>) -> Result<Doc> {
    check_id(IdKind::Agent, &spec.id)?;
    let mut doc = templates::doc(templates::AGENT, "templates/agent.json")?;
    Agent::edit(&mut doc, |a| {
        a.agent_id = spec.id.clone();
        a.name = Some(spec.name.clone().unwrap_or_else(|| spec.id.clone()));
        a.role = spec.role;
        a.capabilities = spec.capabilities.clone();
        a.gateway = spec.gateway.clone();
        a.command = spec.command.clone();
        a.cwd = spec.cwd.clone();
        a.created_at = Some(now);
    })?;
    Ok(doc)
}

/// Adds an agent to a cell, refusing duplicates and going past `max_agents`.
pub fn add(store: &dyn Store, cell_id: &str, spec: &NewAgent, now: DateTime<Utc>) -> Result<()> {
    let doc = new_agent_doc(spec, now)?;
    store::transact(store, cell_id, now, |txn| {
        let max_agents = Cell::from_doc(&txn.read_required(FileKey::Cell)?)?.max_agents;
        let existing = txn.list(Collection::Agents)?;
        if existing.iter().any(|a| a == &spec.id) {
            return Err(Error::conflict(format!(
                "agent {} already exists in cell {cell_id}",
                spec.id
            ))
            .hint("pick another id, or `pas agent rm` the old one first"));
        }
        if let Some(max) = max_agents {
            if existing.len() as u64 >= max {
                return Err(Error::conflict(format!(
                    "cell {cell_id} already has {} agents, its max_agents is {max}",
                    existing.len()
                ))
                .hint("remove an agent, or raise max_agents in cell.json"));
            }
        }
        txn.create(FileKey::Agent(&spec.id), doc.clone());
        txn.event(
            NewEvent::new(
                Level::Info,
                EventKind::AgentAdded,
                format!("agent {} added as {}", spec.id, spec.role.as_str()),
            )
            .agent(&spec.id),
        );
        Ok(())
    })
}

/// Reads one agent, which must exist.
pub fn read(store: &dyn Store, cell_id: &str, agent_id: &str) -> Result<Doc> {
    check_id(IdKind::Agent, agent_id)?;
    store
        .read(cell_id, FileKey::Agent(agent_id))?
        .ok_or_else(|| {
            Error::not_found(format!("no agent {agent_id} in cell {cell_id}"))
                .hint(format!("`pas agent list {cell_id}` shows its agents"))
        })
}

/// Reads one agent, which must exist, typed.
pub fn load(store: &dyn Store, cell_id: &str, agent_id: &str) -> Result<Agent> {
    typed(agent_id, &read(store, cell_id, agent_id)?)
}

/// Every agent of a cell that reads as an agent, with the files that do not.
pub fn load_all(store: &dyn Store, cell_id: &str) -> Result<(Vec<Agent>, Vec<Error>)> {
    let mut agents = Vec::new();
    let mut errors = Vec::new();
    for (id, doc) in store.read_collection(cell_id, Collection::Agents)? {
        match doc.and_then(|d| typed(&id, &d)) {
            Ok(a) => agents.push(a),
            Err(e) => errors.push(e),
        }
    }
    Ok((agents, errors))
}

/// Every agent of a cell that can be read, with the files that could not.
pub fn read_all(store: &dyn Store, cell_id: &str) -> Result<(Vec<Doc>, Vec<crate::error::Error>)> {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for id in store.list(cell_id, Collection::Agents)? {
        match store.read(cell_id, FileKey::Agent(&id)) {
            Ok(Some(doc)) => docs.push(doc),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    Ok((docs, errors))
}

/// Removes an agent. Tasks assigned to it block the removal unless `force`, which hands
/// them back: unfinished ones become unassigned `pending` work.
pub fn remove(
    store: &dyn Store,
    cell_id: &str,
    agent_id: &str,
    force: bool,
    now: DateTime<Utc>,
) -> Result<Vec<String>> {
    read(store, cell_id, agent_id)?;
    let released = store::transact(store, cell_id, now, |txn| {
        let mut assigned = Vec::new();
        for (task_id, doc) in txn.read_collection(Collection::Tasks)? {
            let doc = doc?;
            let task = Task::from_doc_at(&doc, &crate::store::FileKey::Task(&task_id).relative())?;
            if !task.is_finished() && task.assigned_to.as_deref() == Some(agent_id) {
                assigned.push((task_id, doc, task));
            }
        }
        if !assigned.is_empty() && !force {
            let ids: Vec<&str> = assigned.iter().map(|(id, _, _)| id.as_str()).collect();
            return Err(Error::conflict(format!(
                "agent {agent_id} is assigned unfinished tasks: {}",
                ids.join(", ")
            ))
            .hint("reassign them, or pass --force to hand them back to the queue"));
        }
        let mut released = Vec::new();
        for (task_id, doc, mut task) in assigned {
            task.assigned_to = None;
            if task.status == TaskStatus::InProgress {
                task.status = TaskStatus::Pending;
            }
            crate::ops::queue::put_task(txn, &task_id, doc, &task)?;
            released.push(task_id);
        }
        if txn.read(FileKey::Agent(agent_id))?.is_none() {
            return Err(Error::not_found(format!(
                "no agent {agent_id} in cell {cell_id}"
            )));
        }
        txn.remove(FileKey::Agent(agent_id));
        txn.event(
            NewEvent::new(
                Level::Info,
                EventKind::AgentRemoved,
                format!("agent {agent_id} removed"),
            )
            .agent(agent_id)
            .details(serde_json::json!({ "released_tasks": released })),
        );
        Ok(released)
    })?;
    crate::ops::reservation::release_agent(store, cell_id, agent_id, "agent removed", now)?;
    Ok(released)
}
