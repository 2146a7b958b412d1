//! Tasks: adding them with their dependencies checked, listing them with the derived
//! `blocked` state.
//!
//! Every change to task files holds the cell's tasks lock, so the dependency graph that is
//! checked for cycles is the graph that gets written.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::doc::Doc;
use crate::error::{Error, Result};
use crate::model::{self, EventKind, Task, TaskStatus};
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

impl From<Priority> for model::Priority {
    fn from(p: Priority) -> model::Priority {
        match p {
            Priority::High => model::Priority::High,
            Priority::Medium => model::Priority::Medium,
            Priority::Low => model::Priority::Low,
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
    Task::edit(&mut doc, |t| {
        t.task_id = spec.id.clone();
        t.title = spec.title.clone();
        t.description = spec.description.clone();
        t.assigned_to = spec.assign.clone();
        t.status = TaskStatus::Pending;
        t.priority = spec.priority.into();
        t.dependencies = spec.deps.clone();
        if let Some(timeout) = spec.timeout {
            t.timeout = Some(timeout as f64);
        }
        t.created_at = Some(now);
    })?;
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

/// The typed view of the task file `tasks/<id>.json`; a field of the wrong shape is a data
/// error naming the file and the field.
pub fn view(id: &str, doc: &Doc) -> Result<Task> {
    Task::from_doc_at(doc, &FileKey::Task(id).relative())
}

/// The tasks of a cell, as [`read_all`] reads them.
#[derive(Debug, Default)]
pub struct TaskFiles {
    /// The files that read, by id, as they are on disk (what `--json` shows).
    pub docs: BTreeMap<String, Doc>,
    /// Their typed views, by the same ids (what the rules take).
    pub tasks: BTreeMap<String, Task>,
    /// The files that do not read: a task with a field of the wrong shape is one of these,
    /// named, not a task shown with a guess.
    pub errors: Vec<Error>,
}

/// Every task of a cell.
pub fn read_all(store: &dyn Store, cell_id: &str) -> Result<TaskFiles> {
    let mut files = TaskFiles::default();
    for (id, doc) in store.read_collection(cell_id, Collection::Tasks)? {
        match doc.and_then(|doc| Ok((view(&id, &doc)?, doc))) {
            Ok((task, doc)) => {
                files.tasks.insert(id.clone(), task);
                files.docs.insert(id, doc);
            }
            Err(e) => files.errors.push(e),
        }
    }
    Ok(files)
}

/// What the dependency checks read of a task.
pub trait Dependencies {
    /// The ids of the tasks it depends on.
    fn dependency_ids(&self) -> Vec<String>;
}

impl Dependencies for Task {
    fn dependency_ids(&self) -> Vec<String> {
        self.dependencies.clone()
    }
}

/// A task file that may not read as a whole: `pas validate` checks the graph of every task
/// file, one with an unknown status too, and `pas task add` is not stopped by a bad field
/// of another task. Only the strings of the list count.
impl Dependencies for Doc {
    fn dependency_ids(&self) -> Vec<String> {
        self.strings("dependencies")
    }
}

/// The dependency graph of a set of tasks.
pub fn graph<T: Dependencies>(tasks: &BTreeMap<String, T>) -> BTreeMap<String, Vec<String>> {
    tasks
        .iter()
        .map(|(id, t)| (id.clone(), t.dependency_ids()))
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
        let entry = view(&spec.id, &doc)
            .ok()
            .and_then(|t| crate::ops::queue::rules::entry_name(&spec.id, &t));
        txn.index_task(&spec.id, None, entry)?;
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

/// Reads one task, which must exist and read: a field of the wrong shape is a data error
/// naming it.
pub fn read(store: &dyn Store, cell_id: &str, task_id: &str) -> Result<Doc> {
    check_id(IdKind::Task, task_id)?;
    let doc = store
        .read(cell_id, FileKey::Task(task_id))?
        .ok_or_else(|| {
            Error::not_found(format!("no task {task_id} in cell {cell_id}"))
                .hint(format!("`pas task list {cell_id}` shows its tasks"))
        })?;
    view(task_id, &doc)?;
    Ok(doc)
}

/// What a task list shows for a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Its status.
    Status(TaskStatus),
    /// Pending, waiting on an unfinished dependency; derived, never written.
    Blocked,
}

impl State {
    /// The word shown.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Status(status) => status.as_str(),
            State::Blocked => "blocked",
        }
    }
}

/// Whether dependency `id` is not done: not completed, or not there at all.
fn open(id: &str, all: &BTreeMap<String, Task>) -> bool {
    all.get(id)
        .is_none_or(|t| t.status != TaskStatus::Completed)
}

/// The unfinished dependencies of a task (missing ones count as unfinished).
pub fn unfinished(task: &Task, all: &BTreeMap<String, Task>) -> Vec<String> {
    task.dependencies
        .iter()
        .filter(|d| open(d, all))
        .cloned()
        .collect()
}

/// A task's state: its status, or blocked for a pending task waiting on unfinished
/// dependencies.
pub fn state(task: &Task, all: &BTreeMap<String, Task>) -> State {
    if task.status == TaskStatus::Pending && task.dependencies.iter().any(|d| open(d, all)) {
        State::Blocked
    } else {
        State::Status(task.status)
    }
}

impl StatusFilter {
    /// Whether a task passes the filter (`pending` takes the blocked ones too).
    pub fn admits(self, task: &Task, state: State) -> bool {
        match self {
            StatusFilter::Pending => task.status == TaskStatus::Pending,
            StatusFilter::Blocked => state == State::Blocked,
            StatusFilter::InProgress => task.status == TaskStatus::InProgress,
            StatusFilter::Completed => task.status == TaskStatus::Completed,
            StatusFilter::Failed => task.status == TaskStatus::Failed,
        }
    }
}

/// Ids that appear as dependencies but are not tasks of the set.
pub fn dangling_dependencies<T: Dependencies>(
    all: &BTreeMap<String, T>,
) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (id, t) in all {
        for dep in t.dependency_ids() {
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
