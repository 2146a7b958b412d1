//! `pas validate`: every document of a cell against its schema, plus what hand-written
//! cells commonly get wrong.
//!
//! Errors make the cell unusable or ambiguous for pas (a file that does not parse, a schema
//! violation, an id that differs from its file name, a dependency on a missing task, a link
//! inside the cell). Warnings are worth fixing but pas copes (a `cell_id` that differs from
//! the directory name, a missing subdirectory, leftovers of a killed writer).

use serde::Serialize;

use crate::doc::Doc;
use crate::error::Result;
use crate::model::{Agent, Cell, Isolation, Permissions, Policies, Reservations, Task};
use crate::ops::task;
use crate::store::ready::ReadyIndex;
use crate::store::schema;
use crate::store::{Collection, ConfigFile, FileKey, Store};

/// How serious a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// pas cannot rely on the cell as it is.
    Error,
    /// pas copes, but the cell is not as the spec says.
    Warning,
}

/// One problem found.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The cell's id (directory name); empty for problems of the root itself.
    pub cell: String,
    /// The file, relative to the cell (or the root).
    pub file: String,
    /// A JSON pointer into the file; empty for the whole file.
    pub path: String,
    /// How serious.
    pub severity: Severity,
    /// What is wrong.
    pub reason: String,
}

struct Report<'a> {
    cell: &'a str,
    problems: Vec<Problem>,
}

impl Report<'_> {
    fn add(&mut self, severity: Severity, file: &str, path: &str, reason: impl Into<String>) {
        self.problems.push(Problem {
            cell: self.cell.to_string(),
            file: file.to_string(),
            path: path.to_string(),
            severity,
            reason: reason.into(),
        });
    }

    /// Reads and schema-checks one document; `None` when missing or unreadable. A document
    /// that follows its schema but that pas's commands would still refuse (a word or a time
    /// in a field pas keeps for itself) is reported too, as they would say it.
    fn check_doc(&mut self, store: &dyn Store, key: FileKey<'_>) -> Option<Doc> {
        let file = key.relative();
        match store.read(self.cell, key) {
            Ok(Some(doc)) => {
                let violations = schema::validate(key.schema(), &doc.to_value());
                if violations.is_empty() {
                    if let Err(e) = typed_read(key, &doc, &file) {
                        let prefix = format!("{file} ");
                        let reason = e.message.strip_prefix(&prefix).unwrap_or(&e.message);
                        self.add(Severity::Error, &file, "", reason);
                    }
                }
                for v in violations {
                    self.add(Severity::Error, &file, &v.path, v.reason);
                }
                Some(doc)
            }
            Ok(None) => None,
            Err(e) => {
                let reason = e
                    .message
                    .replace(&format!("{} ", store.describe(self.cell, key)), "");
                self.add(Severity::Error, &file, "", reason);
                None
            }
        }
    }
}

/// Reads `doc` as the typed document `key` holds, as every command does.
fn typed_read(key: FileKey<'_>, doc: &Doc, file: &str) -> Result<()> {
    match key {
        FileKey::Cell => Cell::from_doc_at(doc, file).map(drop),
        FileKey::Agent(_) => Agent::from_doc_at(doc, file).map(drop),
        FileKey::Task(_) => Task::from_doc_at(doc, file).map(drop),
        FileKey::Config(ConfigFile::Isolation) => Isolation::from_doc_at(doc, file).map(drop),
        FileKey::Config(ConfigFile::Policies) => Policies::from_doc_at(doc, file).map(drop),
        FileKey::Config(ConfigFile::Permissions) => Permissions::from_doc_at(doc, file).map(drop),
        FileKey::Reservations => Reservations::from_doc_at(doc, file).map(drop),
    }
}

/// Problems of one cell.
pub fn validate_cell(store: &dyn Store, cell: &str) -> Result<Vec<Problem>> {
    let mut r = Report {
        cell,
        problems: Vec::new(),
    };
    if let Err(e) = crate::store::settle(store, cell) {
        r.add(
            Severity::Warning,
            ".pas",
            "",
            format!(
                "cannot take the cell's lock to finish changes of interrupted writers: {}",
                e.message
            ),
        );
    }
    let listing = store.inspect(cell)?;
    for dir in &listing.missing_dirs {
        r.add(
            Severity::Warning,
            dir,
            "",
            format!("the subdirectory {dir}/ is missing (mkdir -p it; pas creates it when needed)"),
        );
    }
    for link in &listing.links {
        r.add(
            Severity::Error,
            link,
            "",
            "is a symbolic link; pas never follows links inside a cell",
        );
    }
    for stray in &listing.stray {
        r.add(
            Severity::Warning,
            stray,
            "",
            "is not an <id>.json document and is ignored",
        );
    }
    for tmp in &listing.temp_files {
        r.add(
            Severity::Warning,
            tmp,
            "",
            "was left by an interrupted writer; it can be deleted",
        );
    }

    match r.check_doc(store, FileKey::Cell) {
        Some(doc) => {
            if let Some(inner) = doc.str("cell_id") {
                if inner != cell {
                    r.add(
                        Severity::Warning,
                        &FileKey::Cell.relative(),
                        "/cell_id",
                        format!("cell_id {inner:?} differs from the directory name {cell:?}; pas knows the cell by its directory name"),
                    );
                }
            }
        }
        None => r.add(
            Severity::Error,
            &FileKey::Cell.relative(),
            "",
            "cell.json is missing or unreadable",
        ),
    }

    for config in ConfigFile::ALL {
        r.check_doc(store, FileKey::Config(config));
    }
    r.check_doc(store, FileKey::Reservations);

    let linked = |dir: &str| listing.links.iter().any(|l| l == dir);
    let agent_ids = if linked("agents") {
        Vec::new()
    } else {
        store.list(cell, Collection::Agents)?
    };
    for id in &agent_ids {
        let key = FileKey::Agent(id);
        if let Some(doc) = r.check_doc(store, key) {
            if let Some(inner) = doc.str("agent_id") {
                if inner != id {
                    r.add(
                        Severity::Error,
                        &key.relative(),
                        "/agent_id",
                        format!("agent_id {inner:?} differs from the file name {id:?}"),
                    );
                }
            }
        }
    }

    let mut tasks = std::collections::BTreeMap::new();
    let task_ids = if linked("tasks") {
        Vec::new()
    } else {
        store.list(cell, Collection::Tasks)?
    };
    let mut all_tasks_read = true;
    for id in task_ids {
        let key = FileKey::Task(&id);
        let read = r.check_doc(store, key);
        all_tasks_read &= read.is_some();
        if let Some(doc) = read {
            if let Some(inner) = doc.str("task_id") {
                if inner != id {
                    r.add(
                        Severity::Error,
                        &key.relative(),
                        "/task_id",
                        format!("task_id {inner:?} differs from the file name {id:?}"),
                    );
                }
            }
            if let Some(agent) = doc.str("assigned_to") {
                if !agent_ids.iter().any(|a| a == agent) {
                    r.add(
                        Severity::Error,
                        &key.relative(),
                        "/assigned_to",
                        format!("assigned to unknown agent {agent:?}"),
                    );
                }
            }
            tasks.insert(id.clone(), doc);
        }
    }
    for (id, dep) in task::dangling_dependencies(&tasks) {
        r.add(
            Severity::Error,
            &crate::store::FileKey::Task(&id).relative(),
            "/dependencies",
            format!("depends on unknown task {dep:?}"),
        );
    }
    if let Some(cycle) = task::find_cycle(&task::graph(&tasks)) {
        let first = cycle.first().cloned().unwrap_or_default();
        r.add(
            Severity::Error,
            &crate::store::FileKey::Task(&first).relative(),
            "/dependencies",
            format!("dependency cycle: {}", cycle.join(" -> ")),
        );
    }
    if all_tasks_read {
        if let Some(reason) = stale_ready_index(store, cell, &tasks)? {
            r.add(Severity::Warning, ".pas/ready", "", reason);
        }
    }
    Ok(r.problems)
}

/// Why the cell's ready index, while it claims to match `tasks/`, does not match the task
/// files `tasks` (every one of them, as read); `None` when it does or is already marked
/// stale (then the next claim rebuilds it).
fn stale_ready_index(
    store: &dyn Store,
    cell: &str,
    tasks: &std::collections::BTreeMap<String, Doc>,
) -> Result<Option<String>> {
    let ReadyIndex::Fresh { head, .. } = store.ready_index(cell)? else {
        return Ok(None);
    };
    let mut want: Vec<String> = tasks
        .iter()
        .filter_map(|(id, doc)| {
            task::view(id, doc)
                .ok()
                .and_then(|t| crate::ops::queue::rules::entry_name(id, &t))
        })
        .collect();
    want.sort_unstable();
    let have = store.ready_entries(cell)?;
    let missing = want
        .iter()
        .filter(|w| have.binary_search(w).is_err())
        .count();
    let extra = have
        .iter()
        .filter(|h| want.binary_search(h).is_err())
        .count();
    let head_ok = head.head.iter().all(|h| have.binary_search(h).is_ok())
        && have
            .iter()
            .take_while(|h| head.bound.as_ref().is_none_or(|b| *h <= b))
            .eq(head.head.iter());
    if missing == 0 && extra == 0 && head_ok {
        return Ok(None);
    }
    Ok(Some(format!(
        "the ready index does not match the task files ({missing} pending task(s) without an entry, {extra} entr(ies) for no pending task{}): claims may take tasks out of order; run `pas task reindex {cell}`",
        if head_ok { "" } else { ", its head is out of step" }
    )))
}

/// Problems of every cell and of the root; `progress(done, total)` is told after each cell.
pub fn validate_root(
    store: &dyn Store,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Problem>> {
    let mut problems = Vec::new();
    for odd in store.root_oddities()? {
        problems.push(Problem {
            cell: String::new(),
            file: odd.name,
            path: String::new(),
            severity: Severity::Warning,
            reason: odd.reason,
        });
    }
    let cells = store.cell_ids()?;
    for (done, cell) in cells.iter().enumerate() {
        problems.extend(validate_cell(store, cell)?);
        progress(done + 1, cells.len());
    }
    Ok(problems)
}
