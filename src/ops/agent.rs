//! Agents: adding one to a cell (within `max_agents`), reading and removing them.
//!
//! Adding takes the cell lock, so concurrent adds never exceed `max_agents`; the agent file
//! itself is created with a no-replace rename, so two adds of one id never overwrite.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::clock;
use crate::doc::Doc;
use crate::error::{Error, Result};
use crate::model::EventKind;
use crate::ops::cell;
use crate::store::events::{Level, NewEvent};
use crate::store::{self, check_id, Collection, FileKey, IdKind, Store};
use crate::templates;

/// Roles (the spec's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Leads the mission.
    Lead,
    /// Writes (code, documents).
    Write,
    /// Reads only.
    Read,
    /// Reviews.
    Audit,
}

impl Role {
    /// The on-disk spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Lead => "lead",
            Role::Write => "write",
            Role::Read => "read",
            Role::Audit => "audit",
        }
    }
}

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
    pub status: Option<String>,
    /// A new `command`.
    pub command: Option<Vec<String>>,
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
        let mut old_status = None;
        if let Some(n) = &c.name {
            doc.set("name", n.as_str());
        }
        if let Some(cwd) = &c.cwd {
            doc.set("cwd", cwd.as_str());
        }
        if !c.env.is_empty() || !c.unset_env.is_empty() {
            let mut env = doc
                .get("env")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for (k, v) in &c.env {
                env.insert(k.clone(), Value::from(v.as_str()));
            }
            for k in &c.unset_env {
                env.shift_remove(k);
            }
            doc.set("env", Value::Object(env));
        }
        if let Some(cmd) = &c.command {
            doc.set(
                "command",
                Value::from(
                    cmd.iter()
                        .map(|a| Value::from(a.as_str()))
                        .collect::<Vec<_>>(),
                ),
            );
        }
        if let Some(s) = &c.status {
            old_status = doc.str("status").map(str::to_string);
            doc.set("status", s.as_str());
        }
        txn.put(FileKey::Agent(agent_id), doc.clone());
        if let (Some(new), Some(old)) = (&c.status, &old_status) {
            if new != old {
                txn.event(
                    NewEvent::new(
                        Level::Info,
                        EventKind::AgentStatus,
                        format!("agent {agent_id} status {old} -> {new}"),
                    )
                    .agent(agent_id),
                );
            }
        }
        Ok(doc)
    })
}

/// The document of a new agent, from the template.
pub fn new_agent_doc(spec: &NewAgent, now: DateTime<Utc>) -> Result<Doc> {
    check_id(IdKind::Agent, &spec.id)?;
    let mut doc = templates::doc(templates::AGENT, "templates/agent.json")?;
    doc.set("agent_id", spec.id.as_str());
    doc.set("name", spec.name.clone().unwrap_or_else(|| spec.id.clone()));
    doc.set("role", spec.role.as_str());
    doc.set(
        "capabilities",
        Value::from(
            spec.capabilities
                .iter()
                .map(|c| Value::from(c.as_str()))
                .collect::<Vec<_>>(),
        ),
    );
    doc.set(
        "gateway",
        spec.gateway.clone().map_or(Value::Null, Value::from),
    );
    if !spec.command.is_empty() {
        doc.set(
            "command",
            Value::from(
                spec.command
                    .iter()
                    .map(|a| Value::from(a.as_str()))
                    .collect::<Vec<_>>(),
            ),
        );
    }
    doc.set("created_at", clock::stamp(now));
    Ok(doc)
}

/// Adds an agent to a cell, refusing duplicates and going past `max_agents`.
pub fn add(store: &dyn Store, cell_id: &str, spec: &NewAgent, now: DateTime<Utc>) -> Result<()> {
    let doc = new_agent_doc(spec, now)?;
    store::transact(store, cell_id, now, |txn| {
        let cell_doc = txn.read_required(FileKey::Cell)?;
        let existing = txn.list(Collection::Agents)?;
        if existing.iter().any(|a| a == &spec.id) {
            return Err(Error::conflict(format!(
                "agent {} already exists in cell {cell_id}",
                spec.id
            ))
            .hint("pick another id, or `pas agent rm` the old one first"));
        }
        if let Some(max) = cell::max_agents(&cell_doc) {
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
        for (task_id, task) in txn.read_collection(Collection::Tasks)? {
            let task = task?;
            let open = !matches!(task.str("status"), Some("completed") | Some("failed"));
            if open && task.str("assigned_to") == Some(agent_id) {
                assigned.push((task_id, task));
            }
        }
        if !assigned.is_empty() && !force {
            let ids: Vec<&str> = assigned.iter().map(|(id, _)| id.as_str()).collect();
            return Err(Error::conflict(format!(
                "agent {agent_id} is assigned unfinished tasks: {}",
                ids.join(", ")
            ))
            .hint("reassign them, or pass --force to hand them back to the queue"));
        }
        let mut released = Vec::new();
        for (task_id, mut task) in assigned {
            task.set("assigned_to", Value::Null);
            if task.str("status") == Some("in_progress") {
                task.set("status", "pending");
            }
            txn.put(FileKey::Task(&task_id), task);
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
