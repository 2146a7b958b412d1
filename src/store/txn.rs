//! Transactions: the one way to change a cell.
//!
//! A command opens a transaction on one cell with [`transact`], reads what it needs through
//! the [`Txn`] (each read remembers the document's [`Revision`]), stages writes and the
//! events that describe them, and returns. The store then commits everything at once:
//! - it compares the revisions of the documents being written with what is there now
//!   (compare-and-swap), and runs the body again on a conflict;
//! - the documents and their events become visible together: after any crash or failed
//!   system call a change on disk has its event and an event never describes a change that
//!   is not on disk (the file store writes an intent record first and the next writer
//!   finishes it; see `docs/design.md`);
//! - an error returned by the body aborts: nothing is written.
//!
//! The body may run more than once (after a conflict), so it must have no effect other than
//! through the transaction.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};

use chrono::{DateTime, Utc};

use super::layout::{Collection, ConfigFile, FileKey};
use super::ready::{Head, ReadyIndex, REFILL_MAX};
use super::{Durability, Store};
use crate::doc::Doc;
use crate::error::{Error, Result};
use crate::store::events::NewEvent;

/// A document's key, owned, so a transaction can keep it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DocKey {
    /// `cell.json`
    Cell,
    /// An agent's document.
    Agent(String),
    /// A task's document.
    Task(String),
    /// A config document.
    Config(ConfigFile),
    /// The cell's reservations.
    Reservations,
}

impl DocKey {
    /// The owned form of `key`.
    pub fn of(key: FileKey<'_>) -> DocKey {
        match key {
            FileKey::Cell => DocKey::Cell,
            FileKey::Agent(id) => DocKey::Agent(id.to_string()),
            FileKey::Task(id) => DocKey::Task(id.to_string()),
            FileKey::Config(c) => DocKey::Config(c),
            FileKey::Reservations => DocKey::Reservations,
        }
    }

    /// The borrowed form, for the store's methods.
    pub fn file_key(&self) -> FileKey<'_> {
        match self {
            DocKey::Cell => FileKey::Cell,
            DocKey::Agent(id) => FileKey::Agent(id),
            DocKey::Task(id) => FileKey::Task(id),
            DocKey::Config(c) => FileKey::Config(*c),
            DocKey::Reservations => FileKey::Reservations,
        }
    }
}

/// Which version of a document a transaction saw; `ABSENT` when there was none.
///
/// Opaque to callers: the file store hashes the bytes, another backend may use its own
/// revision numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revision(Option<u64>);

impl Revision {
    /// The document did not exist.
    pub const ABSENT: Revision = Revision(None);

    /// The revision of a document stored as `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Revision {
        // SipHash with fixed keys: the same bytes give the same revision in every process.
        let mut h = std::hash::DefaultHasher::new();
        bytes.hash(&mut h);
        Revision(Some(h.finish()))
    }

    /// A revision a backend numbers itself (etcd's mod revision).
    #[cfg(feature = "etcd")]
    pub(crate) fn of_number(n: u64) -> Revision {
        Revision(Some(n))
    }

    /// The number of a revision a backend numbered (`None`: absent).
    #[cfg(feature = "etcd")]
    pub(crate) fn number(self) -> Option<u64> {
        self.0
    }

    /// Whether the document existed.
    pub fn exists(self) -> bool {
        self.0.is_some()
    }
}

/// What a staged write does.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Replace (or create) the document.
    Put(Doc),
    /// Remove the document (nothing when it is already gone).
    Remove,
}

/// What the document must be at commit time for a write to go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Whatever it is (a blind write).
    Any,
    /// Exactly the revision the transaction read (`ABSENT`: it must not exist).
    Revision(Revision),
}

/// One staged write.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// Which document.
    pub key: DocKey,
    /// What to do.
    pub op: Op,
    /// The compare-and-swap condition.
    pub expect: Expect,
}

/// Everything a transaction asks the store to commit.
#[derive(Debug, Clone)]
pub struct ChangeSet {
    /// Document writes, in the order they were staged (one per document).
    pub writes: Vec<Write>,
    /// Events describing the change, appended to the cell's log in the same commit.
    pub events: Vec<NewEvent>,
    /// Whether the writes must reach the disk before the commit returns.
    pub durability: Durability,
    /// The time the events are stamped with.
    pub now: DateTime<Utc>,
    /// What the commit does to the ready index.
    pub ready: ReadyChanges,
    /// Agents whose liveness key must be absent at commit time ([`Txn::require_not_alive`]).
    pub not_alive: Vec<String>,
}

impl ChangeSet {
    /// Whether there is nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.events.is_empty() && !self.ready.writes_index()
    }
}

/// What a commit does to the ready index ([`super::ready`]).
#[derive(Debug, Clone, Default)]
pub struct ReadyChanges {
    /// Entries to create (`true`) or remove, in name order.
    pub entries: Vec<(String, bool)>,
    /// The new head, when it changed.
    pub head: Option<Head>,
    /// The commit writes task documents.
    pub tasks_written: bool,
    /// The index was fresh and every task written had its entries kept: it stays fresh.
    /// Otherwise a commit that writes tasks leaves it stale (rebuilt before its next use).
    pub kept: bool,
    /// The index's version when the transaction looked (see
    /// [`ReadyIndex::Fresh`]): the commit keeps it only if it is still that.
    pub version: Option<u64>,
}

impl ReadyChanges {
    /// Whether entries or the head change.
    pub fn writes_index(&self) -> bool {
        !self.entries.is_empty() || self.head.is_some()
    }
}

/// The ready index as a transaction found it and changes it.
#[derive(Debug, Default)]
struct ReadyTxn {
    /// Its head as this transaction sees it (`None`: stale); not looked at when `loaded`
    /// is false.
    head: Option<Head>,
    loaded: bool,
    /// Its version when looked at (`None`: stale, or rebuilt but not stamped).
    version: Option<u64>,
    head_changed: bool,
    /// Entries to create (`true`) or remove.
    entries: BTreeMap<String, bool>,
    /// Tasks whose entries this transaction kept.
    indexed: HashSet<String>,
    /// Tasks this transaction writes.
    written: HashSet<String>,
}

/// The first entries of the ready index, as a transaction sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyView {
    /// The first entries, in order.
    pub entries: Vec<String>,
    /// They are all of the index's entries.
    pub complete: bool,
}

/// Why a commit did not happen.
#[derive(Debug)]
pub enum CommitError {
    /// A document changed since the transaction read it: run the body again.
    Conflict(String),
    /// Anything else, as the command should report it.
    Failed(Error),
}

impl From<Error> for CommitError {
    fn from(e: Error) -> Self {
        CommitError::Failed(e)
    }
}

/// How many times a body is run before a conflict is reported.
pub const MAX_ATTEMPTS: usize = 5;

/// A transaction on one cell: reads with revisions, staged writes and events.
pub struct Txn<'a> {
    store: &'a dyn Store,
    cell: &'a str,
    seen: HashMap<DocKey, Revision>,
    writes: Vec<Write>,
    events: Vec<NewEvent>,
    durability: Durability,
    now: DateTime<Utc>,
    ready: ReadyTxn,
    not_alive: Vec<String>,
}

impl<'a> Txn<'a> {
    /// A fresh transaction; stores create these in `Store::transact`.
    pub fn new(store: &'a dyn Store, cell: &'a str, now: DateTime<Utc>) -> Txn<'a> {
        Txn {
            store,
            cell,
            seen: HashMap::new(),
            writes: Vec::new(),
            events: Vec::new(),
            durability: Durability::Durable,
            now,
            ready: ReadyTxn::default(),
            not_alive: Vec::new(),
        }
    }

    /// The cell this transaction changes.
    pub fn cell(&self) -> &str {
        self.cell
    }

    /// The time the transaction's events will carry.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    /// The store, for reads that are not documents (checkpoints, logs) and for messages.
    pub fn store(&self) -> &'a dyn Store {
        self.store
    }

    fn staged(&self, key: &DocKey) -> Option<&Op> {
        self.writes.iter().find(|w| &w.key == key).map(|w| &w.op)
    }

    /// Reads a document (what this transaction staged for it, if anything), remembering the
    /// revision read for the commit's compare-and-swap.
    pub fn read(&mut self, key: FileKey<'_>) -> Result<Option<Doc>> {
        let owned = DocKey::of(key);
        if let Some(op) = self.staged(&owned) {
            return Ok(match op {
                Op::Put(doc) => Some(doc.clone()),
                Op::Remove => None,
            });
        }
        let (doc, revision) = self.store.read_revision(self.cell, key)?;
        self.seen.entry(owned).or_insert(revision);
        Ok(doc)
    }

    /// Reads a document that must exist.
    pub fn read_required(&mut self, key: FileKey<'_>) -> Result<Doc> {
        let path = self.store.describe(self.cell, key);
        self.read(key)?
            .ok_or_else(|| Error::not_found(format!("{path} does not exist")))
    }

    /// Every document of a collection (as [`Store::read_collection`]), remembering their
    /// revisions; staged writes are not merged in.
    pub fn read_collection(&mut self, what: Collection) -> Result<Vec<(String, Result<Doc>)>> {
        let docs = self.store.read_collection_revisions(self.cell, what)?;
        let mut out = Vec::with_capacity(docs.len());
        for (id, read) in docs {
            match read {
                Ok((doc, revision)) => {
                    let key = match what {
                        Collection::Agents => DocKey::Agent(id.clone()),
                        Collection::Tasks => DocKey::Task(id.clone()),
                    };
                    self.seen.entry(key).or_insert(revision);
                    out.push((id, Ok(doc)));
                }
                Err(e) => out.push((id, Err(e))),
            }
        }
        Ok(out)
    }

    /// Ids of a collection's documents as stored (staged writes not merged in).
    pub fn list(&mut self, what: Collection) -> Result<Vec<String>> {
        self.store.list(self.cell, what)
    }

    fn stage(&mut self, key: DocKey, op: Op, expect: Option<Expect>) {
        if let DocKey::Task(id) = &key {
            self.ready.written.insert(id.clone());
        }
        let expect = expect.unwrap_or_else(|| match self.seen.get(&key) {
            Some(r) => Expect::Revision(*r),
            None => Expect::Any,
        });
        match self.writes.iter_mut().find(|w| w.key == key) {
            // A second write of one document keeps the first write's condition.
            Some(w) => w.op = op,
            None => self.writes.push(Write { key, op, expect }),
        }
    }

    /// Replaces a document. When the transaction read it, the commit checks that it is
    /// still as read.
    pub fn put(&mut self, key: FileKey<'_>, doc: Doc) {
        self.stage(DocKey::of(key), Op::Put(doc), None);
    }

    /// Creates a document that must not exist at commit time.
    pub fn create(&mut self, key: FileKey<'_>, doc: Doc) {
        self.stage(
            DocKey::of(key),
            Op::Put(doc),
            Some(Expect::Revision(Revision::ABSENT)),
        );
    }

    /// Removes a document.
    pub fn remove(&mut self, key: FileKey<'_>) {
        self.stage(DocKey::of(key), Op::Remove, None);
    }

    fn load_ready(&mut self) -> Result<()> {
        if !self.ready.loaded {
            match self.store.ready_index(self.cell)? {
                ReadyIndex::Stale => self.ready.head = None,
                ReadyIndex::Fresh { head, version } => {
                    self.ready.head = Some(head);
                    self.ready.version = Some(version);
                }
            }
            self.ready.loaded = true;
        }
        Ok(())
    }

    /// The first entries of the cell's ready index with this transaction's changes;
    /// `None` when the index is stale (rebuild it with [`Txn::rebuild_ready`]). A head
    /// that ran dry is refilled from the full list here.
    pub fn ready(&mut self) -> Result<Option<ReadyView>> {
        self.load_ready()?;
        let dry = self.ready.head.as_ref().is_some_and(Head::dry);
        if dry {
            // Enough of the smallest entries to fill the head after this transaction's own
            // removals.
            let removed = self.ready.entries.values().filter(|p| !**p).count();
            let (first, total) = self
                .store
                .ready_first(self.cell, REFILL_MAX.saturating_add(removed))?;
            self.ready.head = Some(Head::refill(first, total, &self.ready.entries));
            self.ready.head_changed = true;
        }
        Ok(self.ready.head.as_ref().map(|h| ReadyView {
            entries: h.head.clone(),
            complete: h.bound.is_none(),
        }))
    }

    /// Every entry of the ready index with this transaction's changes, sorted: one listing
    /// of the index (for a claim that found nothing in the head).
    pub fn ready_all(&mut self) -> Result<Vec<String>> {
        // The listing is sorted; this transaction's few changes are merged into it in
        // place (no second copy of a list that may hold 100,000 names).
        let mut all = self.store.ready_entries(self.cell)?;
        if self.ready.entries.values().any(|present| !present) {
            all.retain(|name| self.ready.entries.get(name) != Some(&false));
        }
        for (name, present) in &self.ready.entries {
            if let (true, Err(at)) = (*present, all.binary_search(name)) {
                all.insert(at, name.clone());
            }
        }
        Ok(all)
    }

    /// Keeps the ready index in step with a write of task `id` in this transaction: its
    /// entry was `old` and becomes `new` (`None`: it has none). A transaction that writes a
    /// task without this leaves the index stale.
    pub fn index_task(&mut self, id: &str, old: Option<String>, new: Option<String>) -> Result<()> {
        self.ready.indexed.insert(id.to_string());
        self.load_ready()?;
        if old == new {
            return Ok(());
        }
        let Some(head) = self.ready.head.as_mut() else {
            return Ok(());
        };
        for (name, present) in [(old, false), (new, true)] {
            if let Some(name) = name {
                head.apply(&name, present);
                self.ready.entries.insert(name, present);
            }
        }
        self.ready.head_changed = true;
        Ok(())
    }

    /// Rebuilds the ready index at once from `entries`, every entry of the cell's task
    /// files as this transaction read them (sorted); changes staged with
    /// [`Txn::index_task`] then apply on top.
    pub fn rebuild_ready(&mut self, entries: &[String]) -> Result<()> {
        let (mut head, version) = self.store.rebuild_ready(self.cell, entries)?;
        for (name, present) in &self.ready.entries {
            head.apply(name, *present);
        }
        self.ready.head_changed = !self.ready.entries.is_empty();
        self.ready.head = Some(head);
        self.ready.version = version;
        self.ready.loaded = true;
        Ok(())
    }

    /// Commits only if no supervisor anywhere holds `agent`'s liveness key at commit time
    /// (etcd: `alive/<agent>` is absent; compared in the same etcd transaction). The file
    /// store has no such key: its liveness is `/proc` on its one host, looked at before.
    pub fn require_not_alive(&mut self, agent: &str) {
        if !self.not_alive.iter().any(|a| a == agent) {
            self.not_alive.push(agent.to_string());
        }
    }

    /// Records an event in the same commit as the writes.
    pub fn event(&mut self, event: NewEvent) {
        self.events.push(event);
    }

    /// Lets the writes skip fsync (heartbeat stamps: losing the last one on power loss is
    /// harmless). A commit with more than one write or with events is always durable.
    pub fn relaxed(&mut self) {
        self.durability = Durability::Relaxed;
    }

    /// Whether anything has been staged.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.events.is_empty()
    }

    /// What to commit.
    pub fn into_changes(self) -> ChangeSet {
        let r = self.ready;
        let kept = r.head.is_some()
            && r.version.is_some()
            && r.written.iter().all(|id| r.indexed.contains(id));
        let ready = ReadyChanges {
            entries: if kept {
                r.entries.into_iter().collect()
            } else {
                Vec::new()
            },
            head: r.head.filter(|_| kept && r.head_changed),
            tasks_written: !r.written.is_empty(),
            kept,
            version: r.version,
        };
        ChangeSet {
            ready,
            writes: self.writes,
            events: self.events,
            durability: self.durability,
            now: self.now,
            not_alive: self.not_alive,
        }
    }
}

/// Runs `body` as one transaction on `cell` and commits what it staged; returns what the
/// body returned. An error from the body aborts the transaction: nothing is written.
pub fn transact<T>(
    store: &dyn Store,
    cell: &str,
    now: DateTime<Utc>,
    mut body: impl FnMut(&mut Txn<'_>) -> Result<T>,
) -> Result<T> {
    let mut out = None;
    store.transact(cell, now, &mut |txn| {
        out = Some(body(txn)?);
        Ok(())
    })?;
    // `Store::transact` returns Ok only after the body ran and returned Ok.
    out.ok_or_else(|| Error::failure("the transaction ran no body (a store bug)"))
}

/// The error for a commit whose documents kept changing under it.
pub fn conflict_error(cell: &str, what: &str) -> Error {
    Error::conflict(format!(
        "{what} in cell {cell} kept changing while pas was updating it ({MAX_ATTEMPTS} tries); nothing was changed"
    ))
    .hint("another program is writing the same file without pas's lock; retry")
}
