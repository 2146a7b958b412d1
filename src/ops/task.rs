//! Tasks: adding them with their dependencies checked, listing them with the derived
//! `blocked` state.
//!
//! Every change to task files holds the cell's tasks lock, so the dependency graph that is
//! checked for cycles is the graph that gets written.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::clock;
use crate::doc::Doc;
use crate::error::{Error, Result};
use crate::model::EventKind;
use crate::store::events::{Level, NewEvent};
use crate::store::{self, check_id, Collection, FileKey, IdKind, Store};
use crate::templates;

/// Priorities (the spec's), highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Priority {
    /// Done first.
    High,
    /// The default.
    Medium,
    /// Done last.
    Low,
}

impl Priority {
    /// The on-disk spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Medium => "medium",
            Priority::Low => "low",
        }
    }
}

/// What a task list can be filtered by: the spec's statuses plus the derived `blocked`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFilter {
    /// Waiting, dependencies done or not.
    Pending,
    /// Pending with an unfinished dependency.
    Blocked,
    /// Claimed and being worked on.
    #[value(name = "in_progress")]
    InProgress,
    /// Done.
    Completed,
    /// Failed for good.
    Failed,
}

/// What `pas task add` was asked for.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// `task_id`.
    pub id: String,
    /// `title`.
    pub title: String,
    /// `description`.
    pub description: String,
    /// `assigned_to`.
    pub assign: Option<String>,
    /// `priority`.
    pub priority: Priority,
    /// `dependencies`.
    pub deps: Vec<String>,
    /// `timeout` in seconds.
    pub timeout: Option<u64>,
}

/// The document of a new task, from the template.
pub fn new_task_doc(spec: &NewTask, now: DateTime<Utc>) -> Result<Doc> {
    check_id(IdKind::Task, &spec.id)?;
    if spec.title.trim().is_empty() {
        return Err(Error::usage("the task title is empty").hint("pass --title \"What to do\""));
    }
    for dep in &spec.deps {
        check_id(IdKind::Task, dep)?;
    }
    if let Some(agent) = &spec.assign {
        check_id(IdKind::Agent, agent)?;
    }
    let mut doc = templates::doc(templates::TASK, "templates/task.json")?;
    doc.set("task_id", spec.id.as_str());
    doc.set("title", spec.title.as_str());
    doc.set("description", spec.description.as_str());
    doc.set(
        "assigned_to",
        spec.assign.clone().map_or(Value::Null, Value::from),
    );
    doc.set("status", "pending");
    doc.set("priority", spec.priority.as_str());
    doc.set(
        "dependencies",
        Value::from(
            spec.deps
                .iter()
                .map(|d| Value::from(d.as_str()))
                .collect::<Vec<_>>(),
        ),
    );
    if let Some(timeout) = spec.timeout {
        doc.set("timeout", timeout);
    }
    doc.set("created_at", clock::stamp(now));
    Ok(doc)
}

/// A dependency cycle in `graph` (task -> its dependencies), as the path that closes it.
pub fn find_cycle(graph: &BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> = BTreeMap::new();
    for start in graph.keys() {
        if marks.contains_key(start.as_str()) {
            continue;
        }
        // Iterative depth-first search: (node, index of the next dependency to visit).
        let mut stack: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
        marks.insert(start.as_str(), Mark::Visiting);
        while let Some((node, next)) = stack.last().copied() {
            let deps = graph.get(node).map(Vec::as_slice).unwrap_or(&[]);
            if next < deps.len() {
                if let Some(top) = stack.last_mut() {
                    top.1 += 1;
                }
                let dep = deps[next].as_str();
                match marks.get(dep) {
                    Some(Mark::Visiting) => {
                        let from = stack.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                        let mut cycle: Vec<String> =
                            stack[from..].iter().map(|(n, _)| n.to_string()).collect();
                        cycle.push(dep.to_string());
                        return Some(cycle);
                    }
                    Some(Mark::Done) => {}
                    None => {
                        marks.insert(dep, Mark::Visiting);
                        stack.push((dep, 0));
                    }
                }
            } else {
                marks.insert(node, Mark::Done);
                stack.pop();
            }
        }
    }
    None
}

/// Every task of a cell that can be read, by id, with the errors of those that cannot.
pub fn read_all(store: &dyn Store, cell_id: &str) -> Result<(BTreeMap<String, Doc>, Vec<Error>)> {
    let mut docs = BTreeMap::new();
    let mut errors = Vec::new();
    for (id, doc) in store.read_collection(cell_id, Collection::Tasks)? {
        match doc {
            Ok(doc) => {
                docs.insert(id, doc);
            }
            Err(e) => errors.push(e),
        }
    }
    Ok((docs, errors))
}

/// The dependency graph of a set of tasks.
pub fn graph(tasks: &BTreeMap<String, Doc>) -> BTreeMap<String, Vec<String>> {
    tasks
        .iter()
        .map(|(id, doc)| (id.clone(), doc.strings("dependencies")))
        .collect()
}

/// Adds a task after checking its assignee and dependencies exist and that it closes no
/// dependency cycle.
pub fn add(store: &dyn Store, cell_id: &str, spec: &NewTask, now: DateTime<Utc>) -> Result<()> {
    let doc = new_task_doc(spec, now)?;
    if let Some(agent) = &spec.assign {
        if store.read(cell_id, FileKey::Agent(agent))?.is_none() {
            return Err(Error::not_found(format!(
                "no agent {agent} in cell {cell_id} to assign the task to"
            ))
            .hint(format!(
                "add it first with `pas agent add {cell_id} {agent}`"
            )));
        }
    }
    store::transact(store, cell_id, now, |txn| {
        let mut tasks = BTreeMap::new();
        for (id, doc) in txn.read_collection(Collection::Tasks)? {
            tasks.insert(id, doc?);
        }
        if tasks.contains_key(&spec.id) {
            return Err(Error::conflict(format!(
                "task {} already exists in cell {cell_id}",
                spec.id
            )));
        }
        let unknown: Vec<&str> = spec
            .deps
            .iter()
            .filter(|d| !tasks.contains_key(d.as_str()) && **d != spec.id)
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return Err(Error::not_found(format!(
                "task {} depends on unknown task(s): {}",
                spec.id,
                unknown.join(", ")
            ))
            .hint("add the dependencies first"));
        }
        let mut g = graph(&tasks);
        g.insert(spec.id.clone(), spec.deps.clone());
        if let Some(cycle) = find_cycle(&g) {
            return Err(
                Error::usage(format!("dependency cycle: {}", cycle.join(" -> ")))
                    .hint("a task cannot depend, directly or not, on itself"),
            );
        }
        txn.create(FileKey::Task(&spec.id), doc.clone());
        txn.event(
            NewEvent::new(
                Level::Info,
                EventKind::TaskAdded,
                format!("task {} added: {}", spec.id, spec.title),
            )
            .task(&spec.id),
        );
        Ok(())
    })
}

/// Reads one task, which must exist.
pub fn read(store: &dyn Store, cell_id: &str, task_id: &str) -> Result<Doc> {
    check_id(IdKind::Task, task_id)?;
    store.read(cell_id, FileKey::Task(task_id))?.ok_or_else(|| {
        Error::not_found(format!("no task {task_id} in cell {cell_id}"))
            .hint(format!("`pas task list {cell_id}` shows its tasks"))
    })
}

/// The unfinished dependencies of a task (missing ones count as unfinished).
pub fn open_dependencies(task: &Doc, all: &BTreeMap<String, Doc>) -> Vec<String> {
    task.strings("dependencies")
        .into_iter()
        .filter(|d| all.get(d).and_then(|t| t.str("status")) != Some("completed"))
        .collect()
}

/// The state shown for a task: its status, or `blocked` for a pending task waiting on
/// unfinished dependencies.
pub fn shown_state(task: &Doc, all: &BTreeMap<String, Doc>) -> String {
    let status = task.str("status").unwrap_or("unknown");
    if status == "pending" && !open_dependencies(task, all).is_empty() {
        "blocked".to_string()
    } else {
        status.to_string()
    }
}

/// Whether a task passes a status filter.
pub fn matches(filter: StatusFilter, task: &Doc, all: &BTreeMap<String, Doc>) -> bool {
    let status = task.str("status").unwrap_or("");
    match filter {
        StatusFilter::Pending => status == "pending",
        StatusFilter::Blocked => shown_state(task, all) == "blocked",
        StatusFilter::InProgress => status == "in_progress",
        StatusFilter::Completed => status == "completed",
        StatusFilter::Failed => status == "failed",
    }
}

/// Ids that appear as dependencies but are not tasks of the set.
pub fn dangling_dependencies(all: &BTreeMap<String, Doc>) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (id, doc) in all {
        for dep in doc.strings("dependencies") {
            if !all.contains_key(&dep) {
                out.insert((id.clone(), dep));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn no_cycle_in_a_diamond() {
        assert_eq!(
            find_cycle(&g(&[
                ("a", &["b", "c"]),
                ("b", &["d"]),
                ("c", &["d"]),
                ("d", &[])
            ])),
            None
        );
    }

    #[test]
    fn finds_long_and_self_cycles() {
        let cycle = find_cycle(&g(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])])).unwrap();
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4);
        assert_eq!(find_cycle(&g(&[("a", &["a"])])).unwrap(), ["a", "a"]);
    }
}
