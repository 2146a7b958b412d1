//! `config/permissions.json`: who may touch which task, and who may hand work to whom.
//!
//! The rule: an agent with no entry may do everything (a cell without permissions is an
//! open cell, as the spec's usage section writes it). An agent with an entry may do only
//! what its lists allow: `read` (show a task), `write` (report it done or failed),
//! `execute` (claim it), `handoff_to` / `handoff_from` (agents it may hand work to and take
//! work from). A list entry is a task or agent id, or `*` for all. An operator (no acting
//! agent) is not restricted.

use serde_json::Value;

use crate::doc::Doc;
use crate::error::{Error, Result};
use crate::store::{ConfigFile, FileKey, Store};

/// A permission on a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    /// See the task.
    Read,
    /// Report it done or failed.
    Write,
    /// Claim it.
    Execute,
}

impl Perm {
    /// The key in `permissions.json`.
    pub fn key(self) -> &'static str {
        match self {
            Perm::Read => "read",
            Perm::Write => "write",
            Perm::Execute => "execute",
        }
    }
}

/// The permissions of one cell.
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    doc: Option<Doc>,
}

fn list_allows(entry: &Value, key: &str, item: &str) -> bool {
    entry
        .get(key)
        .and_then(Value::as_array)
        .is_some_and(|items| {
            items
                .iter()
                .any(|v| v.as_str() == Some(item) || v.as_str() == Some("*"))
        })
}

impl Permissions {
    /// Permissions from a parsed `permissions.json` (or none: everything allowed).
    pub fn new(doc: Option<Doc>) -> Permissions {
        Permissions { doc }
    }

    /// Reads a cell's `config/permissions.json`.
    pub fn load(store: &dyn Store, cell: &str) -> Result<Permissions> {
        Ok(Permissions::new(
            store.read(cell, FileKey::Config(ConfigFile::Permissions))?,
        ))
    }

    fn entry(&self, agent: &str) -> Option<&Value> {
        self.doc.as_ref().and_then(|d| d.get(agent))
    }

    /// Whether `agent` may do `perm` on `task`.
    pub fn allows(&self, agent: &str, perm: Perm, task: &str) -> bool {
        match self.entry(agent) {
            None => true,
            Some(entry) => list_allows(entry, perm.key(), task),
        }
    }

    /// Refuses, naming the missing permission.
    pub fn check(&self, agent: &str, perm: Perm, task: &str) -> Result<()> {
        if self.allows(agent, perm, task) {
            return Ok(());
        }
        Err(Error::new(
            crate::error::Kind::Denied,
            format!(
                "agent {agent} lacks the {} permission on task {task}",
                perm.key()
            ),
        )
        .hint(format!(
            "add {task:?} to {agent}'s \"{}\" list in config/permissions.json",
            perm.key()
        )))
    }

    /// Whether `from` may hand work to `to` and `to` may take it from `from`.
    pub fn check_handoff(&self, from: &str, to: &str) -> Result<()> {
        if let Some(entry) = self.entry(from) {
            if !list_allows(entry, "handoff_to", to) {
                return Err(Error::new(
                    crate::error::Kind::Denied,
                    format!("agent {from} may not hand tasks to {to}"),
                )
                .hint(format!(
                    "add {to:?} to {from}'s \"handoff_to\" list in config/permissions.json"
                )));
            }
        }
        if let Some(entry) = self.entry(to) {
            if !list_allows(entry, "handoff_from", from) {
                return Err(Error::new(
                    crate::error::Kind::Denied,
                    format!("agent {to} may not take tasks from {from}"),
                )
                .hint(format!(
                    "add {from:?} to {to}'s \"handoff_from\" list in config/permissions.json"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn perms(text: &str) -> Permissions {
        Permissions::new(Some(Doc::parse(text.as_bytes(), Path::new("p")).unwrap()))
    }

    #[test]
    fn agents_without_an_entry_may_do_everything() {
        let p = perms(r#"{"a1": {"read": ["t1"]}}"#);
        assert!(p.allows("a2", Perm::Write, "t9"));
        assert!(Permissions::default().allows("a1", Perm::Execute, "t1"));
    }

    #[test]
    fn an_entry_is_an_allow_list() {
        let p = perms(
            r#"{"a1": {"read": ["*"], "write": ["t1"], "handoff_to": ["a2"]}, "a2": {"handoff_from": []}}"#,
        );
        assert!(p.allows("a1", Perm::Read, "anything"));
        assert!(p.allows("a1", Perm::Write, "t1"));
        assert!(!p.allows("a1", Perm::Write, "t2"));
        let err = p.check("a1", Perm::Execute, "t1").unwrap_err();
        assert!(
            err.message.contains("lacks the execute permission"),
            "{}",
            err.message
        );
        assert!(p
            .check_handoff("a1", "a3")
            .unwrap_err()
            .message
            .contains("a1 may not hand tasks to a3"));
        assert!(p
            .check_handoff("a1", "a2")
            .unwrap_err()
            .message
            .contains("a2 may not take tasks from a1"));
        // a1 has an entry without handoff_from: it takes work from nobody.
        assert!(p.check_handoff("a3", "a1").is_err());
        assert!(p.check_handoff("a3", "a4").is_ok());
    }
}
