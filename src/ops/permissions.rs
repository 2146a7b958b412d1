//! `config/permissions.json`: who may touch which task, and who may hand work to whom.
//!
//! The rule: an agent with no entry may do everything (a cell without permissions is an
//! open cell, as the spec's usage section writes it). An agent with an entry may do only
//! what its lists allow: `read` (show a task), `write` (report it done or failed),
//! `execute` (claim it), `handoff_to` / `handoff_from` (agents it may hand work to and take
//! work from). A list entry is a task or agent id, or `*` for all. An operator (no acting
//! agent) is not restricted.
//!
//! Agents act for themselves: with `--as a1` (or `PAS_AGENT=a1`), a1 may change its own
//! record, process and checkpoints, and another agent's only when its entry's `manage`
//! list names that agent. An acting agent never changes a cell (its status, settings or
//! existence); that is an operator's act.

use crate::error::{Error, Result};
use crate::model::{self, Grant};
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
    /// The name of its list in `permissions.json`, for messages.
    pub fn key(self) -> &'static str {
        match self {
            Perm::Read => "read",
            Perm::Write => "write",
            Perm::Execute => "execute",
        }
    }

    /// Its list in `grant`.
    fn list(self, grant: &Grant) -> &[String] {
        match self {
            Perm::Read => &grant.read,
            Perm::Write => &grant.write,
            Perm::Execute => &grant.execute,
        }
    }
}

/// The permissions of one cell.
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    file: Option<model::Permissions>,
}

impl Permissions {
    /// Permissions from a read `permissions.json` (or none: everything allowed).
    pub fn new(file: Option<model::Permissions>) -> Permissions {
        Permissions { file }
    }

    /// Reads a cell's `config/permissions.json`; an entry of the wrong shape is a data
    /// error naming it (read as "nothing allowed", it would lock an agent out unseen).
    pub fn load(store: &dyn Store, cell: &str) -> Result<Permissions> {
        let doc = store.read(cell, FileKey::Config(ConfigFile::Permissions))?;
        let file = doc.as_ref().map(model::Permissions::from_doc).transpose()?;
        Ok(Permissions::new(file))
    }

    fn entry(&self, agent: &str) -> Option<&Grant> {
        self.file.as_ref().and_then(|f| f.get(agent))
    }

    /// Whether `agent` may do `perm` on `task`.
    pub fn allows(&self, agent: &str, perm: Perm, task: &str) -> bool {
        match self.entry(agent) {
            None => true,
            Some(grant) => Grant::names(perm.list(grant), task),
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

    /// Whether `actor` (`None`: an operator) may change agent `target`'s record, process or
    /// checkpoints: itself always, another agent when its `manage` list names it.
    pub fn check_agent(&self, actor: Option<&str>, target: &str) -> Result<()> {
        let Some(actor) = actor else {
            return Ok(());
        };
        if actor == target
            || self
                .entry(actor)
                .is_some_and(|g| Grant::names(g.manage.as_deref().unwrap_or_default(), target))
        {
            return Ok(());
        }
        Err(Error::new(
            crate::error::Kind::Denied,
            format!("agent {actor} may not change agent {target}: an agent acts for itself"),
        )
        .hint(format!(
            "run it as an operator (without --as or PAS_AGENT), or add {target:?} to {actor}'s \"manage\" list in config/permissions.json"
        )))
    }

    /// Whether `actor` (`None`: an operator) may change the cell itself: only an operator.
    pub fn check_cell(actor: Option<&str>, cell: &str) -> Result<()> {
        match actor {
            None => Ok(()),
            Some(actor) => Err(Error::new(
                crate::error::Kind::Denied,
                format!("agent {actor} may not change cell {cell}: only an operator may"),
            )
            .hint("run it without --as and with PAS_AGENT unset")),
        }
    }

    /// Whether `from` may hand work to `to` and `to` may take it from `from`.
    pub fn check_handoff(&self, from: &str, to: &str) -> Result<()> {
        if let Some(grant) = self.entry(from) {
            if !Grant::names(&grant.handoff_to, to) {
                return Err(Error::new(
                    crate::error::Kind::Denied,
                    format!("agent {from} may not hand tasks to {to}"),
                )
                .hint(format!(
                    "add {to:?} to {from}'s \"handoff_to\" list in config/permissions.json"
                )));
            }
        }
        if let Some(grant) = self.entry(to) {
            if !Grant::names(&grant.handoff_from, from) {
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
    use crate::doc::Doc;
    use std::path::Path;

    fn perms(text: &str) -> Permissions {
        let doc = Doc::parse(text.as_bytes(), Path::new("p")).unwrap();
        Permissions::new(Some(model::Permissions::from_doc(&doc).unwrap()))
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

    #[test]
    fn agents_act_for_themselves_unless_granted_more() {
        let p = perms(
            r#"{"lead": {"manage": ["w1", "w2"]}, "boss": {"manage": ["*"]}, "w1": {"read": ["*"]}}"#,
        );
        let open = Permissions::default();
        // (why, permissions, actor, target, allowed)
        let cases: [(&str, &Permissions, Option<&str>, &str, bool); 9] = [
            ("an operator", &p, None, "w1", true),
            ("itself", &p, Some("w1"), "w1", true),
            ("itself in an open cell", &open, Some("w1"), "w1", true),
            ("another in an open cell", &open, Some("w1"), "w2", false),
            ("a peer without a grant", &p, Some("w1"), "w2", false),
            ("a managed agent", &p, Some("lead"), "w2", true),
            ("an agent not managed", &p, Some("lead"), "boss", false),
            ("anyone, managed by *", &p, Some("boss"), "lead", true),
            ("no entry at all", &p, Some("stranger"), "w1", false),
        ];
        for (why, perms, actor, target, allowed) in cases {
            let got = perms.check_agent(actor, target);
            assert_eq!(got.is_ok(), allowed, "{why}: {got:?}");
            if let Err(e) = got {
                assert_eq!(e.kind, crate::error::Kind::Denied, "{why}");
                assert!(e.message.contains("an agent acts for itself"), "{why}");
            }
        }
        assert!(Permissions::check_cell(None, "c").is_ok());
        let e = Permissions::check_cell(Some("w1"), "c").unwrap_err();
        assert!(
            e.message.contains("agent w1 may not change cell c"),
            "{}",
            e.message
        );
    }

    #[test]
    fn an_entry_of_the_wrong_shape_is_refused_not_read_as_nothing_allowed() {
        let doc = Doc::parse(br#"{"a1": {"read": "t1"}}"#, Path::new("p")).unwrap();
        let err = model::Permissions::from_doc(&doc).unwrap_err();
        assert!(
            err.message
                .contains("config/permissions.json a1.read: \"t1\" is a string, not an array"),
            "{}",
            err.message
        );
    }
}
