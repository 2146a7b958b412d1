//! The store: the only code that touches the filesystem.
//!
//! Commands and domain rules see cells through the narrow [`Store`] trait (documents by
//! [`FileKey`], locks by [`LockKey`]), so another backend can be added without touching them.
//! [`FsStore`] is the mission-cell directory layout on a local filesystem.
//!
//! Writers follow one discipline: take the lock, read, change, write atomically, unlock.
//! Readers take no lock: atomic replacement means they always see a whole file.

mod agent_logs;
pub mod atomic;
pub mod changes;
mod checkpoints;
mod commit;
#[cfg(test)]
pub(crate) mod contract;
pub mod etcd;
pub mod events;
pub mod image;
pub mod layout;
pub mod lock;
pub mod ready;
pub mod schema;
mod secret;
pub mod select;
pub mod txn;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use atomic::Durability;
pub use layout::{
    check_id, Collection, ConfigFile, FileKey, IdKind, LockKey, LogFile, RootDoc, CELL_SUBDIRS,
};
pub use lock::LockGuard;
pub(crate) use secret::TokenVersion;
pub use select::Selected;
pub use txn::{transact, DocKey, Revision, Txn};

use crate::doc::Doc;
use crate::error::{Error, Result};

/// What `pas validate` needs to know about a cell's directory beyond its documents.
#[derive(Debug, Default, Clone)]
pub struct CellListing {
    /// Spec subdirectories that are missing.
    pub missing_dirs: Vec<&'static str>,
    /// Symbolic links found where pas expects files or directories (relative paths).
    pub links: Vec<String>,
    /// Files in `agents/` or `tasks/` that are not `<id>.json` documents.
    pub stray: Vec<String>,
    /// Temporary files left by a writer that was killed mid-write.
    pub temp_files: Vec<String>,
}

/// An entry of the root that looks like it should be a cell but is not one.
#[derive(Debug, Clone)]
pub struct RootOddity {
    /// The entry's name.
    pub name: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The files of one checkpoint generation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckpointFiles {
    /// `state.json`, byte for byte as the agent gave it.
    pub state: Vec<u8>,
    /// `context.json`, byte for byte.
    pub context: Vec<u8>,
    /// `manifest.json`: pas's record of the generation (hashes, time, reason).
    pub manifest: Vec<u8>,
    /// `artifacts/<name>` files.
    pub artifacts: Vec<(String, Vec<u8>)>,
    /// The permission bits of artifacts by name, kept as they were (a 0600 file stays
    /// 0600); an artifact not named here is 0644.
    pub modes: std::collections::BTreeMap<String, u32>,
}

/// One file of an agent's log ([`Store::log_segments`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSegment {
    /// `None` for the current file ([`LogFile::Agent`]); `Some(n)` for a file moved aside
    /// by rotation ([`LogFile::AgentRotated`]), a higher `n` being newer.
    pub rotated: Option<u64>,
    /// Its size when it was listed.
    pub len: u64,
    /// Which file it is, the same after a rotation moved it aside: a follower finds the
    /// file it was reading by it.
    pub id: (u64, u64),
    /// When it was last written.
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

impl LogSegment {
    /// The log file this segment is, of `agent`.
    pub fn log<'a>(&self, agent: &'a str) -> LogFile<'a> {
        match self.rotated {
            Some(n) => LogFile::AgentRotated(agent, n),
            None => LogFile::Agent(agent),
        }
    }
}

/// A piece of one log file ([`Store::read_log_chunk`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// The bytes read.
    pub bytes: Vec<u8>,
    /// Which file they came from ([`LogSegment::id`]).
    pub id: (u64, u64),
}

/// The documents of a collection with their revisions (an unreadable one as its error).
pub type RevisionedDocs = Vec<(String, Result<(Doc, Revision)>)>;

/// Where processes run for a cell live on this host (see [`Store::workspace`]).
#[derive(Debug)]
pub struct Workspace {
    /// The working directory (the cell's directory).
    pub dir: PathBuf,
    /// The agent's log, open for appending (its stdout and stderr), when an agent was named.
    pub log: Option<std::fs::File>,
    /// That log's size when it was opened (the supervisor rotates it at `log_max_bytes`).
    pub log_len: u64,
    /// Where that log is, for messages.
    pub log_name: String,
    /// Arguments that make a `pas` child use this store (`--root DIR`).
    pub store_args: Vec<std::ffi::OsString>,
    /// Environment that leads a child back to this store (`PAS_ROOT`).
    pub env: Vec<(String, std::ffi::OsString)>,
}

/// Who could have written one step of the way to a document (the root, `pas.toml`, the
/// cell, its directory, the document): what pas checks before it runs a command the
/// document names, the way sshd checks `authorized_keys` and the directories above it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Where it is, for messages.
    pub what: String,
    /// The owner's uid.
    pub owner: u32,
    /// Its permission bits (`0o755`, ...).
    pub mode: u32,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// Whether it is the document's own directory or the document (not the root, its
    /// `pas.toml` or the cell): what an agent running as its own user may own.
    pub near: bool,
}

/// Where a store's documents come from when owners and modes cannot tell who wrote them:
/// a store on the network (etcd), which records no writer. What pas checks instead before
/// it runs a command from there is [`crate::ops::trust::check_remote`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// The store, for messages (`etcd at h1:2379,h2:2379/prefix`).
    pub location: String,
    /// The user pas authenticates as (`user=` in the store URL), when it does.
    pub user: Option<String>,
}

/// A store's blob directory, for garbage collection ([`Store::blob_inventory`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobInventory {
    /// The directory, for messages.
    pub dir: String,
    /// Its blobs, listed before the manifests were read.
    pub blobs: Vec<BlobFile>,
    /// The hashes the store's checkpoint manifests name.
    pub named: std::collections::HashSet<String>,
}

/// One blob of a blob directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobFile {
    /// Its sha256 (hex), which is its name.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written or reused by a save.
    pub modified: chrono::DateTime<chrono::Utc>,
}

/// What keeps an agent's liveness key alive while it is held (see [`Store::keep_alive`]).
pub type AliveGuard = Box<dyn std::any::Any + Send>;

/// Everything commands may do to cells. Ids must have passed [`check_id`]; implementations
/// check again and refuse anything else before building a path.
pub trait Store {
    /// Where the store is, for messages (the missions root).
    fn location(&self) -> String;
    /// Where a document is, for messages.
    fn describe(&self, cell: &str, key: FileKey<'_>) -> String;
    /// Where a cell is, for messages and listings.
    fn describe_cell(&self, cell: &str) -> String;
    /// Where a log of a cell is, for messages.
    fn describe_log(&self, cell: &str, log: LogFile<'_>) -> String;
    /// Where a context summary is, for messages and listings.
    fn describe_summary(&self, cell: &str, agent: &str, name: &str) -> String;
    /// Where a checkpoint generation is (0: the top-level files), for messages.
    fn describe_checkpoint(&self, cell: &str, agent: &str, generation: u64) -> String;
    /// The place on this host where processes run for `cell` (and `agent`) live: working
    /// directory, log, and the environment that leads them back to this store.
    fn workspace(&self, cell: &str, agent: Option<&str>) -> Result<Workspace>;
    /// Starts a feed of this store's changes into `sink` (subscribe through the feed).
    fn changes(&self, sink: changes::Sink) -> Box<dyn changes::ChangeFeed>;
    /// How many changes this store has committed (transactions, creates and removals of
    /// cells, checkpoint generations), so a command that fails can say whether it changed
    /// anything.
    fn commits(&self) -> usize;
    /// The root-wide policy layer (`pas.toml` `[policies]`; empty without one).
    fn root_policies(&self) -> &serde_json::Map<String, serde_json::Value>;
    /// Ids of all cells (directories holding `cell.json`), sorted; none when the root does
    /// not exist (yet).
    fn cell_ids(&self) -> Result<Vec<String>>;
    /// Checks that the missions root exists and can be listed: for monitoring, which must
    /// not take a missing root (an unmounted volume, a typo) for an empty one.
    fn check_root(&self) -> Result<()>;
    /// Whether `cell` exists (has a `cell.json`).
    fn has_cell(&self, cell: &str) -> bool;
    /// Creates a whole cell at once: all spec subdirectories, `files`, and its events log
    /// starting with `events`. The cell appears complete, with its events, or not at all.
    fn create_cell(
        &self,
        cell: &str,
        files: &[(FileKey<'_>, Doc)],
        events: &[crate::store::events::NewEvent],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<()>;
    /// Removes a cell and everything in it; the cell disappears at once.
    fn remove_cell(&self, cell: &str) -> Result<()>;
    /// Reads one document; `None` when the file does not exist.
    fn read(&self, cell: &str, key: FileKey<'_>) -> Result<Option<Doc>>;
    /// Reads one document with the revision a transaction's commit compares against.
    fn read_revision(&self, cell: &str, key: FileKey<'_>) -> Result<(Option<Doc>, Revision)>;
    /// [`Store::read_collection`] with each document's revision.
    fn read_collection_revisions(&self, cell: &str, what: Collection) -> Result<RevisionedDocs>;
    /// Runs `body` as one transaction on `cell` and commits what it staged, all or nothing
    /// (see [`txn`]); the body may run again after a conflict. Prefer [`transact`], which
    /// passes the body's result back.
    fn transact(
        &self,
        cell: &str,
        now: chrono::DateTime<chrono::Utc>,
        body: &mut dyn FnMut(&mut Txn<'_>) -> Result<()>,
    ) -> Result<()>;
    /// Ids of the documents of a collection, sorted.
    fn list(&self, cell: &str, what: Collection) -> Result<Vec<String>>;
    /// The cell's ready index ([`ready`]): its head, or stale when `tasks/` changed since
    /// it was kept. Inside a transaction for an answer that holds until the commit.
    fn ready_index(&self, cell: &str) -> Result<ready::ReadyIndex>;
    /// Every entry of the ready index, sorted.
    fn ready_entries(&self, cell: &str) -> Result<Vec<String>>;
    /// The `k` smallest entries of the ready index, sorted, and how many entries it has
    /// (what refills its head). By default from [`Store::ready_entries`].
    fn ready_first(&self, cell: &str, k: usize) -> Result<(Vec<String>, usize)> {
        let mut all = self.ready_entries(cell)?;
        let total = all.len();
        all.truncate(k);
        Ok((all, total))
    }
    /// Makes the ready index exactly `entries` (sorted, made from every task file as read
    /// in the calling transaction), at once; returns its head. Inside a transaction only.
    /// The version is `None` when the index could not be stamped (it then stays stale).
    fn rebuild_ready(&self, cell: &str, entries: &[String]) -> Result<(ready::Head, Option<u64>)>;
    /// Every document of a collection, by id in [`Store::list`] order: the same as `list`
    /// then `read` of each (a document removed in between is left out), in one pass over
    /// the directory.
    fn read_collection(&self, cell: &str, what: Collection) -> Result<Vec<(String, Result<Doc>)>>;
    /// [`Store::read_collection`] leaving each document as its bytes: for read-only views
    /// that type only what they need (`Record::from_text`) and parse a document with
    /// [`Store::parse_doc`] only when that fails.
    fn read_collection_bytes(
        &self,
        cell: &str,
        what: Collection,
    ) -> Result<Vec<(String, Result<Vec<u8>>)>>;
    /// [`Store::read`] leaving the document as its bytes (`None`: it does not exist), for
    /// read-only views as [`Store::read_collection_bytes`]. By default the document is read
    /// and written out again; a store that keeps bytes returns them as they are.
    fn read_bytes(&self, cell: &str, key: FileKey<'_>) -> Result<Option<Vec<u8>>> {
        Ok(self.read(cell, key)?.map(|doc| doc.to_bytes()))
    }
    /// Parses `bytes` read for `key` as [`Store::read`] does: a document that is not a JSON
    /// object is an error naming its file.
    fn parse_doc(&self, cell: &str, key: FileKey<'_>, bytes: &[u8]) -> Result<Doc>;
    /// Takes an operation lock of the cell ([`LockKey`]), waiting for it. Documents need
    /// none: transactions lock inside the store.
    fn lock(&self, cell: &str, key: LockKey<'_>) -> Result<LockGuard>;
    /// The bytes of a log from `offset` to its end; empty when it does not exist yet.
    fn read_log(&self, cell: &str, log: LogFile<'_>, offset: u64) -> Result<Vec<u8>>;
    /// The files of an agent's log, oldest first: the rotated ones, then the current one
    /// (when it exists). Empty for an agent that never ran.
    fn log_segments(&self, cell: &str, agent: &str) -> Result<Vec<LogSegment>>;
    /// Up to `max` bytes of one log file from `offset`, with the file's identity; `None`
    /// when the file does not exist (any more).
    fn read_log_chunk(
        &self,
        cell: &str,
        log: LogFile<'_>,
        offset: u64,
        max: usize,
    ) -> Result<Option<LogChunk>>;
    /// Moves an agent's current log aside as its newest rotated file, removes all but the
    /// `keep` newest rotated files (with 0, the current file itself), and opens a fresh
    /// current file for appending. Only the agent's supervisor calls it.
    fn rotate_log(&self, cell: &str, agent: &str, keep: usize) -> Result<std::fs::File>;
    /// Who could have written the document `key` and everything above it, from the root
    /// down (the root's `pas.toml` included when there is one): for the trust check before
    /// pas runs a command from it.
    fn origins(&self, cell: &str, key: FileKey<'_>) -> Result<Vec<Origin>>;
    /// Where the documents come from when they are not local files (see [`Remote`]);
    /// `None` for the file store, whose [`Store::origins`] say who could have written them.
    fn remote(&self) -> Option<Remote>;
    /// Keeps a liveness key of the agent while the guard is held, on a store with leases
    /// (etcd: `cells/<cell>/alive/<agent>` on a lease of `ttl`, renewed on an open stream;
    /// it goes when the guard is dropped, or when the lease expires because the holder
    /// died). `None` on the file store, where the pid in `/proc` is the liveness.
    fn keep_alive(
        &self,
        cell: &str,
        agent: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<AliveGuard>>;
    /// The blob directory's blobs, then the hashes every checkpoint manifest of the store
    /// names (in that order, so a blob saved meanwhile is named or new); `None` for a store
    /// without blobs (the file store keeps a checkpoint's files with its generation).
    fn blob_inventory(&self) -> Result<Option<BlobInventory>>;
    /// Removes blob `sha256` unless it was written or reused after `cutoff` (a save in
    /// progress); whether it was removed.
    fn remove_blob(&self, sha256: &str, cutoff: chrono::DateTime<chrono::Utc>) -> Result<bool>;
    /// Whether the store keeps liveness keys on leases ([`Store::keep_alive`] and
    /// [`Store::alive_agents`] answer `Some`): etcd does, the file store does not. Asks
    /// nothing of the store.
    fn has_leases(&self) -> bool {
        false
    }
    /// The agents of `cell` whose liveness key exists now (a supervisor holds it, or held
    /// it less than its lease's TTL ago), sorted; `None` on the file store, which has no
    /// such keys (the pid in `/proc` is the liveness there).
    fn alive_agents(&self, cell: &str) -> Result<Option<Vec<String>>>;
    /// The hosts whose `pas watch` node key exists now (etcd: `nodes/<host>`, bound to the
    /// node's lease), sorted; `None` on the file store, which is one machine's.
    fn nodes(&self) -> Result<Option<Vec<String>>>;
    /// Keeps this host's node key (`host`) while the guard is held, as
    /// [`Store::keep_alive`] keeps an agent's; `None` on the file store.
    fn keep_node(&self, host: &str, ttl: std::time::Duration) -> Result<Option<AliveGuard>>;
    /// Where the events chain ended when pas last appended to it, for `pas events verify`;
    /// `None` for a log from before heads were kept.
    fn events_head(&self, cell: &str) -> Result<Option<events::Head>>;
    /// Where the cell's `on_event` hooks have got to in its events log; `None` before
    /// they first looked.
    fn hook_cursor(&self, cell: &str) -> Result<Option<events::Cursor>>;
    /// Records where the cell's `on_event` hooks have got to.
    fn set_hook_cursor(&self, cell: &str, cursor: &events::Cursor) -> Result<()>;
    /// Checkpoint generations of an agent, oldest first.
    fn checkpoint_generations(&self, cell: &str, agent: &str) -> Result<Vec<u64>>;
    /// Writes a checkpoint generation completely or not at all (built aside, then one
    /// rename). It counts once the agent's record points at it (a transaction); then
    /// [`Store::mirror_checkpoint`] publishes it. The caller holds the agent's checkpoint lock.
    fn write_checkpoint(
        &self,
        cell: &str,
        agent: &str,
        generation: u64,
        files: &CheckpointFiles,
    ) -> Result<()>;
    /// Mirrors a committed generation to the spec's `checkpoints/<agent>/{state,context}.json`
    /// and `artifacts/`, for people and tools that read the spec's layout.
    fn mirror_checkpoint(&self, cell: &str, agent: &str, files: &CheckpointFiles) -> Result<()>;
    /// Reads a generation; `None` when it does not exist. `generation` 0 is the spec's
    /// top-level `checkpoints/<agent>/` files (as agents or people may write them by hand).
    fn read_checkpoint(
        &self,
        cell: &str,
        agent: &str,
        generation: u64,
    ) -> Result<Option<CheckpointFiles>>;
    /// Removes a generation.
    fn remove_checkpoint(&self, cell: &str, agent: &str, generation: u64) -> Result<()>;
    /// Writes a context summary (`checkpoints/<agent>/summaries/<name>`), atomically.
    fn write_summary(&self, cell: &str, agent: &str, name: &str, bytes: &[u8]) -> Result<String>;
    /// Every summary of an agent, oldest first: name and bytes.
    fn summaries(&self, cell: &str, agent: &str) -> Result<Vec<(String, Vec<u8>)>>;
    /// Takes a root-wide lock (`<root>/.pas/locks/<name>.lock`) if it is free, recording this
    /// process's pid in it; otherwise returns the holder's pid. Creates the root if missing.
    fn try_lock_root(&self, name: &str) -> Result<std::result::Result<LockGuard, Option<u32>>>;
    /// Takes a root-wide lock, waiting for another holder as long as the cell locks do (then
    /// an error naming the lock). Root-wide locks come before any cell lock.
    fn lock_root(&self, name: &str) -> Result<LockGuard>;
    /// A root-level document; `None` when it does not exist. Change it only while holding
    /// its lock ([`RootDoc::lock_name`]).
    fn read_root_doc(&self, key: RootDoc) -> Result<Option<Doc>>;
    /// Replaces a root-level document atomically (readers see the old or the new one).
    /// The caller holds its lock.
    fn write_root_doc(&self, key: RootDoc, doc: &Doc) -> Result<()>;
    /// Directory facts of one cell, for validation.
    fn inspect(&self, cell: &str) -> Result<CellListing>;
    /// Root entries that look like broken cells, for validation.
    fn root_oddities(&self) -> Result<Vec<RootOddity>>;
    /// The root-wide configuration file ([`layout::ROOT_CONFIG`]) as bytes with where it
    /// is; `None` when it (or the root) does not exist.
    fn read_root_config(&self) -> Result<Option<(Vec<u8>, String)>>;
    /// A cell's documents byte for byte and its events log with its head (`pas store copy`).
    fn export_cell(&self, cell: &str) -> Result<image::CellImage>;
    /// Makes cell `cell` from an image, whole or not at all (refused when it exists): its
    /// documents byte for byte, its events log with the same hash chain and head. The ready
    /// index is rebuilt from the tasks on the first claim.
    fn import_cell(&self, cell: &str, image: &image::CellImage) -> Result<()>;
}

/// Writes a file outside the root atomically (exports, man pages, metrics for
/// node_exporter), creating its directory.
pub fn write_outside(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        atomic::create_dir_all(parent, atomic::DIR_MODE)
            .map_err(|e| Error::io("create", parent, e))?;
    }
    atomic::write_path_atomic(path, bytes).map_err(|e| Error::io("write", path, e))
}

/// Writes checkpoint files into a directory outside the root (`checkpoint restore --to`).
pub fn write_checkpoint_outside(dest: &Path, files: &CheckpointFiles) -> Result<()> {
    checkpoints::write_out(dest, files).map_err(|e| Error::io("write checkpoint to", dest, e))
}

/// Reads an input the user names: a file path, or `-` for standard input.
pub fn read_input(spec: &str, what: &str) -> Result<(Vec<u8>, PathBuf)> {
    if spec == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .map_err(|e| Error::failure(format!("cannot read the {what} from stdin: {e}")))?;
        return Ok((buf, PathBuf::from("<stdin>")));
    }
    let path = PathBuf::from(spec);
    match std::fs::read(&path) {
        Ok(bytes) => Ok((bytes, path)),
        Err(e) => Err(Error::not_found(format!(
            "cannot read the {what} {spec}: {e}"
        ))),
    }
}

/// The permission bits of a file the user names (an artifact to keep with a checkpoint), so
/// a private file stays private; `None` for stdin or when it cannot be read.
pub fn input_mode(spec: &str) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    (spec != "-")
        .then(|| std::fs::metadata(spec).ok())
        .flatten()
        .map(|m| m.permissions().mode() & 0o777)
}

/// Finds an artifact a task produced (relative to the cell, else to the current directory)
/// and returns how it is recorded: relative to the cell when inside it, so the cell can move.
pub fn locate_artifact(cell_path: &Path, given: &str) -> Result<String> {
    let path = Path::new(given);
    let in_cell = if path.is_absolute() {
        path.to_path_buf()
    } else {
        cell_path.join(path)
    };
    let in_cwd = std::env::current_dir()
        .map(|d| d.join(path))
        .unwrap_or_default();
    let found = if in_cell.exists() {
        in_cell
    } else if in_cwd.exists() {
        in_cwd
    } else {
        return Err(Error::not_found(format!(
            "artifact {given} does not exist (looked in the cell and the current directory)"
        ))
        .hint("write the file first; artifacts are recorded by path, not copied"));
    };
    Ok(found
        .strip_prefix(cell_path)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| found.display().to_string()))
}

/// Reads a document that must exist.
pub fn read_required(store: &dyn Store, cell: &str, key: FileKey<'_>) -> Result<Doc> {
    store
        .read(cell, key)?
        .ok_or_else(|| Error::not_found(format!("{} does not exist", store.describe(cell, key))))
}

/// A read-modify-write of one document as a transaction: read, change, commit.
pub fn update(
    store: &dyn Store,
    cell: &str,
    key: FileKey<'_>,
    durability: Durability,
    change: &mut dyn FnMut(&mut Doc) -> Result<()>,
) -> Result<Doc> {
    transact(store, cell, chrono::Utc::now(), |txn| {
        let mut doc = txn.read_required(key)?;
        change(&mut doc)?;
        if durability == Durability::Relaxed {
            txn.relaxed();
        }
        txn.put(key, doc.clone());
        Ok(doc)
    })
}

/// [`update`] of one agent file under that agent's lock, durably: the most common change.
pub fn update_agent(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    change: &mut dyn FnMut(&mut Doc) -> Result<()>,
) -> Result<Doc> {
    update_agent_with(store, cell, agent, chrono::Utc::now(), Vec::new(), change)
}

/// Finishes a change that an interrupted writer committed but did not apply (any writer of
/// the cell does this first; readers that must see a settled cell call it).
pub fn settle(store: &dyn Store, cell: &str) -> Result<()> {
    transact(store, cell, chrono::Utc::now(), |_| Ok(()))
}

/// [`update_agent`] with the events that describe the change, in the same commit.
pub fn update_agent_with(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    now: chrono::DateTime<chrono::Utc>,
    events: Vec<crate::store::events::NewEvent>,
    change: &mut dyn FnMut(&mut Doc) -> Result<()>,
) -> Result<Doc> {
    transact(store, cell, now, |txn| {
        let mut doc = txn.read_required(FileKey::Agent(agent))?;
        change(&mut doc)?;
        txn.put(FileKey::Agent(agent), doc.clone());
        for e in &events {
            txn.event(e.clone());
        }
        Ok(doc)
    })
}

/// The mission-cell layout on a local filesystem.
#[derive(Debug)]
pub struct FsStore {
    root: PathBuf,
    root_fd: OnceLock<OwnedFd>,
    /// Changes this store committed, so a failing command can say whether it changed
    /// anything before it failed.
    commits: std::sync::atomic::AtomicUsize,
    /// The root-wide policy layer (`pas.toml` `[policies]`), given by whoever opened the
    /// store: it travels with the store, not in a process-wide global.
    root_policies: serde_json::Map<String, serde_json::Value>,
    /// How long a command waits for a lock another process holds before it gives up.
    lock_wait: std::time::Duration,
}

/// How long a lock is waited for unless the caller says otherwise (`--lock-timeout`): far
/// longer than any commit holds one, short enough that a stuck holder is reported.
pub const DEFAULT_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn root_hint() -> &'static str {
    "pass --root DIR or set PAS_ROOT to a directory you can write"
}

impl FsStore {
    /// The missions root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a document lives.
    pub(crate) fn path_of(&self, cell: &str, key: FileKey<'_>) -> PathBuf {
        self.cell_path(cell).join(key.relative())
    }

    /// The directory of a cell.
    pub(crate) fn cell_path(&self, cell: &str) -> PathBuf {
        self.root.join(cell)
    }

    /// A store over `root`; nothing is touched until a command needs it.
    pub fn new(root: impl Into<PathBuf>) -> FsStore {
        FsStore {
            root: root.into(),
            root_fd: OnceLock::new(),
            commits: std::sync::atomic::AtomicUsize::new(0),
            root_policies: serde_json::Map::new(),
            lock_wait: DEFAULT_LOCK_WAIT,
        }
    }

    /// This store, waiting at most `wait` for a lock another process holds.
    pub fn with_lock_wait(mut self, wait: std::time::Duration) -> FsStore {
        self.lock_wait = wait;
        self
    }

    /// How long this store waits for a lock.
    pub(crate) fn lock_wait(&self) -> std::time::Duration {
        self.lock_wait
    }

    /// A new store over the same root with the same lock wait and root policies, counting
    /// its own commits: `pas serve` gives each request one, as each CLI command has one.
    pub(crate) fn fresh(&self) -> FsStore {
        FsStore::new(self.root.clone())
            .with_lock_wait(self.lock_wait)
            .with_root_policies(self.root_policies.clone())
    }

    /// This store with the root-wide policy layer read from its `pas.toml`.
    pub fn with_root_policies(
        mut self,
        policies: serde_json::Map<String, serde_json::Value>,
    ) -> FsStore {
        self.root_policies = policies;
        self
    }

    pub(crate) fn io_error(&self, what: &str, path: &Path, err: io::Error) -> Error {
        if let Some(busy) = lock::busy(&err) {
            let stop = busy
                .holder
                .map(|pid| format!(", or stop process {pid} if it is stuck"))
                .unwrap_or_default();
            return Error::busy(format!("cannot {what} {}: {busy}", path.display())).hint(format!(
                "retry later, allow a longer wait with --lock-timeout SECONDS{stop}"
            ));
        }
        if let Some(refused) = atomic::refused(&err) {
            return Error::data(format!("cannot {what} {}: {err}", path.display()))
                .hint(refused.hint());
        }
        let error = Error::io(what, path, &err);
        if err.kind() == io::ErrorKind::PermissionDenied {
            error.hint(root_hint())
        } else {
            error
        }
    }

    /// Who could have written the root directory and its `pas.toml` (the first steps of
    /// [`Store::origins`]; all of them for a store whose documents are elsewhere).
    pub fn root_origins(&self) -> Result<Vec<Origin>> {
        use rustix::fs::{fstat, statat, AtFlags};
        let stat_err = |path: &Path, e: rustix::io::Errno| self.io_error("inspect", path, e.into());
        let root = self.root_fd()?;
        let mut out = vec![origin_of(
            &self.root,
            fstat(root).map_err(|e| stat_err(&self.root, e))?,
        )];
        let config = self.root.join(layout::ROOT_CONFIG);
        match statat(root, layout::ROOT_CONFIG, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => out.push(origin_of(&config, stat)),
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(stat_err(&config, e)),
        }
        Ok(out)
    }

    fn root_fd(&self) -> Result<&OwnedFd> {
        if let Some(fd) = self.root_fd.get() {
            return Ok(fd);
        }
        let fd = atomic::open_root(&self.root).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::not_found(format!(
                    "missions root {} does not exist",
                    self.root.display()
                ))
                .hint("create a cell with `pas cell create`, or pass --root DIR / set PAS_ROOT")
            } else {
                self.io_error("open missions root", &self.root, e)
            }
        })?;
        Ok(self.root_fd.get_or_init(|| fd))
    }

    fn ensure_root(&self) -> Result<&OwnedFd> {
        if !self.root.exists() {
            atomic::create_dir_all(&self.root, atomic::DIR_MODE).map_err(|e| {
                Error::failure(format!(
                    "cannot create missions root {}: {e}",
                    self.root.display()
                ))
                .hint(root_hint())
            })?;
        }
        self.root_fd()
    }

    /// Runs `take` on the root-wide lock file `name` (creating the root), naming the file
    /// in an error.
    fn with_root_lock_file<T>(
        &self,
        name: &str,
        take: impl FnOnce(std::os::fd::BorrowedFd<'_>, &str) -> io::Result<T>,
    ) -> Result<T> {
        let root = self.ensure_root()?;
        let file = format!("{name}.lock");
        take(root.as_fd(), &file).map_err(|e| {
            self.io_error(
                "lock",
                &self
                    .root
                    .join(layout::PAS_DIR)
                    .join(layout::LOCKS_DIR)
                    .join(&file),
                e,
            )
        })
    }

    pub(crate) fn cell_fd(&self, cell: &str) -> Result<OwnedFd> {
        check_id(IdKind::Cell, cell)?;
        let root = self.root_fd()?;
        atomic::open_subdir(root.as_fd(), cell).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::not_found(format!("no cell {cell} under {}", self.root.display()))
                    .hint("`pas cell list` shows the cells")
            } else {
                self.io_error("open cell", &self.root.join(cell), e)
            }
        })
    }

    fn key_name(key: FileKey<'_>) -> Result<(Option<&'static str>, String)> {
        match key {
            FileKey::Agent(id) => check_id(IdKind::Agent, id)?,
            FileKey::Task(id) => check_id(IdKind::Task, id)?,
            FileKey::Cell | FileKey::Config(_) | FileKey::Reservations => {}
        }
        Ok(key.dir_and_name())
    }

    /// Reads and parses `name` (the file of `key`) in its opened directory `dir`; the path
    /// is spelled out only for an error.
    fn read_in(
        &self,
        dir: std::os::fd::BorrowedFd<'_>,
        cell: &str,
        key: FileKey<'_>,
        name: &str,
        with_revision: bool,
    ) -> Result<Option<(Doc, Revision)>> {
        match atomic::read_at(dir, name, key.size_limit()) {
            Ok(None) => Ok(None),
            Ok(Some(bytes)) => {
                let doc = self.parse_doc(cell, key, &bytes)?;
                // Hashing is for transactions only: a fleet view reads 100,000 documents.
                let revision = if with_revision {
                    Revision::of_bytes(&bytes)
                } else {
                    Revision::ABSENT
                };
                Ok(Some((doc, revision)))
            }
            Err(e) => Err(self.io_error("read", &self.path_of(cell, key), e)),
        }
    }

    /// The opened directory of `key`'s file and the file's name; `None` when the
    /// directory does not exist.
    fn key_dir(&self, cell: &str, key: FileKey<'_>) -> Result<Option<(OwnedFd, String)>> {
        let (sub, name) = Self::key_name(key)?;
        let cell_fd = self.cell_fd(cell)?;
        let dir = match sub {
            None => cell_fd,
            Some(sub) => match atomic::open_subdir(cell_fd.as_fd(), sub) {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(self.io_error("open", &self.cell_path(cell).join(sub), e)),
            },
        };
        Ok(Some((dir, name)))
    }

    /// Reads a document, with its revision when `with_revision`.
    fn read_doc(
        &self,
        cell: &str,
        key: FileKey<'_>,
        with_revision: bool,
    ) -> Result<(Option<Doc>, Revision)> {
        let Some((dir, name)) = self.key_dir(cell, key)? else {
            return Ok((None, Revision::ABSENT));
        };
        Ok(
            match self.read_in(dir.as_fd(), cell, key, &name, with_revision)? {
                Some((doc, revision)) => (Some(doc), revision),
                None => (None, Revision::ABSENT),
            },
        )
    }

    /// Every document of a collection in one pass, with revisions when `with_revision`.
    fn read_collection_inner(
        &self,
        cell: &str,
        what: Collection,
        with_revision: bool,
    ) -> Result<RevisionedDocs> {
        self.each_in_collection(cell, what, |dir, key, name| {
            self.read_in(dir, cell, key, name, with_revision)
        })
    }

    /// `read` of every file of a collection (its directory, key and file name) in one pass
    /// over the directory, by id in [`Store::list`] order; files gone are left out.
    fn each_in_collection<T>(
        &self,
        cell: &str,
        what: Collection,
        mut read: impl FnMut(std::os::fd::BorrowedFd<'_>, FileKey<'_>, &str) -> Result<Option<T>>,
    ) -> Result<Vec<(String, Result<T>)>> {
        let cell_fd = self.cell_fd(cell)?;
        let dir = match atomic::open_subdir(cell_fd.as_fd(), what.dir()) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io_error("open", &self.cell_path(cell).join(what.dir()), e)),
        };
        drop(cell_fd);
        let list_err = |e| self.io_error("list", &self.cell_path(cell).join(what.dir()), e);
        let (names, listing) = atomic::list_names_owned(dir, ".json").map_err(list_err)?;
        let dir = listing.fd().map_err(|e| list_err(e.into()))?;
        let mut docs = Vec::with_capacity(names.len());
        for id in names.into_iter().filter(|n| layout::is_valid_id(n)) {
            let key = match what {
                Collection::Agents => FileKey::Agent(&id),
                Collection::Tasks => FileKey::Task(&id),
            };
            let (_, name) = key.dir_and_name();
            match read(dir, key, &name) {
                Ok(None) => {}
                Ok(Some(doc)) => docs.push((id, Ok(doc))),
                Err(e) => docs.push((id, Err(e))),
            }
        }
        Ok(docs)
    }
}

/// One step of [`Store::origins`] from its `stat`.
fn origin_of(what: &Path, stat: rustix::fs::Stat) -> Origin {
    Origin {
        what: what.display().to_string(),
        owner: stat.st_uid,
        mode: stat.st_mode & 0o7777,
        is_dir: rustix::fs::FileType::from_raw_mode(stat.st_mode)
            == rustix::fs::FileType::Directory,
        near: false,
    }
}

impl Store for FsStore {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn describe(&self, cell: &str, key: FileKey<'_>) -> String {
        self.path_of(cell, key).display().to_string()
    }

    fn describe_cell(&self, cell: &str) -> String {
        self.cell_path(cell).display().to_string()
    }

    fn describe_log(&self, cell: &str, log: LogFile<'_>) -> String {
        self.cell_path(cell)
            .join(layout::LOGS_DIR)
            .join(log.file_name())
            .display()
            .to_string()
    }

    fn describe_summary(&self, cell: &str, agent: &str, name: &str) -> String {
        self.summary_path(cell, agent, name).display().to_string()
    }

    fn describe_checkpoint(&self, cell: &str, agent: &str, generation: u64) -> String {
        self.generation_path(cell, agent, generation)
            .display()
            .to_string()
    }

    fn workspace(&self, cell: &str, agent: Option<&str>) -> Result<Workspace> {
        check_id(IdKind::Cell, cell)?;
        let root = std::fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        let log = match agent {
            Some(agent) => Some(self.open_log(cell, LogFile::Agent(agent))?),
            None => None,
        };
        let log_len = log
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        Ok(Workspace {
            dir: root.join(cell),
            log,
            log_len,
            log_name: agent
                .map_or_else(String::new, |a| self.describe_log(cell, LogFile::Agent(a))),
            store_args: vec!["--root".into(), root.clone().into_os_string()],
            env: vec![("PAS_ROOT".to_string(), root.clone().into_os_string())],
        })
    }

    fn changes(&self, sink: changes::Sink) -> Box<dyn changes::ChangeFeed> {
        Box::new(changes::Changes::start(self, sink))
    }

    fn root_policies(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.root_policies
    }

    fn commits(&self) -> usize {
        self.commits.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn cell_ids(&self) -> Result<Vec<String>> {
        let root = match self.root_fd() {
            Ok(fd) => fd,
            Err(e) if e.kind == crate::error::Kind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let entries =
            atomic::list_entries(root.as_fd()).map_err(|e| self.io_error("list", &self.root, e))?;
        let mut ids: Vec<String> = entries
            .into_iter()
            .filter(|e| layout::is_valid_id(&e.name))
            // A link in place of a cell is listed so that reading it is refused, loudly.
            // (`stat` of `<id>/cell.json` from the root's descriptor, following links as
            // `Path::is_file` does, without walking the root's path again for each cell.)
            .filter(|e| {
                e.is_symlink
                    || (e.is_dir
                        && rustix::fs::statat(
                            root.as_fd(),
                            format!("{}/cell.json", e.name).as_str(),
                            rustix::fs::AtFlags::empty(),
                        )
                        .is_ok_and(|st| {
                            rustix::fs::FileType::from_raw_mode(st.st_mode)
                                == rustix::fs::FileType::RegularFile
                        }))
            })
            .map(|e| e.name)
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn check_root(&self) -> Result<()> {
        let root = self.root_fd()?;
        atomic::list_entries(root.as_fd()).map_err(|e| self.io_error("list", &self.root, e))?;
        Ok(())
    }

    fn has_cell(&self, cell: &str) -> bool {
        layout::is_valid_id(cell) && self.path_of(cell, FileKey::Cell).is_file()
    }

    fn create_cell(
        &self,
        cell: &str,
        files: &[(FileKey<'_>, Doc)],
        events: &[crate::store::events::NewEvent],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        let docs: Vec<(FileKey<'_>, Vec<u8>)> =
            files.iter().map(|(k, d)| (*k, d.to_bytes())).collect();
        let (log, head) = if events.is_empty() {
            (Vec::new(), None)
        } else {
            let lines = crate::store::events::chain(events, None, now);
            let mut jsonl = String::new();
            for line in &lines {
                jsonl.push_str(line);
                jsonl.push('\n');
            }
            let genesis = crate::store::events::Head {
                seq: 0,
                hash: crate::store::events::GENESIS.to_string(),
                size: 0,
            };
            let head = crate::store::events::head_after(&lines, 0, genesis);
            (jsonl.into_bytes(), Some(head))
        };
        self.build_cell(cell, &docs, &log, head.as_ref())
    }

    fn remove_cell(&self, cell: &str) -> Result<()> {
        let root = self.root_fd()?;
        let trash = format!("{TRASH_PREFIX}{cell}-{}", std::process::id());
        {
            let _guard = self.cell_lock(cell)?;
            atomic::rename_noreplace(root.as_fd(), cell, &trash)
                .map_err(|e| self.io_error("remove cell", &self.cell_path(cell), e))?;
            self.committed();
        }
        let trash_path = self.root.join(&trash);
        // std's remove_dir_all never follows symlinks inside the tree.
        std::fs::remove_dir_all(&trash_path).map_err(|e| self.io_error("remove", &trash_path, e))
    }

    fn read(&self, cell: &str, key: FileKey<'_>) -> Result<Option<Doc>> {
        Ok(self.read_doc(cell, key, false)?.0)
    }

    fn read_revision(&self, cell: &str, key: FileKey<'_>) -> Result<(Option<Doc>, Revision)> {
        self.read_doc(cell, key, true)
    }

    fn read_collection(&self, cell: &str, what: Collection) -> Result<Vec<(String, Result<Doc>)>> {
        Ok(self
            .read_collection_inner(cell, what, false)?
            .into_iter()
            .map(|(id, r)| (id, r.map(|(doc, _)| doc)))
            .collect())
    }

    fn read_collection_revisions(&self, cell: &str, what: Collection) -> Result<RevisionedDocs> {
        self.read_collection_inner(cell, what, true)
    }

    fn read_collection_bytes(
        &self,
        cell: &str,
        what: Collection,
    ) -> Result<Vec<(String, Result<Vec<u8>>)>> {
        self.each_in_collection(cell, what, |dir, key, name| {
            atomic::read_at(dir, name, key.size_limit())
                .map_err(|e| self.io_error("read", &self.path_of(cell, key), e))
        })
    }

    fn read_bytes(&self, cell: &str, key: FileKey<'_>) -> Result<Option<Vec<u8>>> {
        let Some((dir, name)) = self.key_dir(cell, key)? else {
            return Ok(None);
        };
        atomic::read_at(dir.as_fd(), &name, key.size_limit())
            .map_err(|e| self.io_error("read", &self.path_of(cell, key), e))
    }

    fn parse_doc(&self, cell: &str, key: FileKey<'_>, bytes: &[u8]) -> Result<Doc> {
        match Doc::parse_object(bytes) {
            Some(doc) => Ok(doc),
            None => Doc::parse(bytes, &self.path_of(cell, key)),
        }
    }

    fn list(&self, cell: &str, what: Collection) -> Result<Vec<String>> {
        let cell_fd = self.cell_fd(cell)?;
        let dir = match atomic::open_subdir(cell_fd.as_fd(), what.dir()) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io_error("open", &self.cell_path(cell).join(what.dir()), e)),
        };
        let names = atomic::list_names(dir.as_fd(), ".json")
            .map_err(|e| self.io_error("list", &self.cell_path(cell).join(what.dir()), e))?;
        Ok(names
            .into_iter()
            .filter(|n| layout::is_valid_id(n))
            .collect())
    }

    fn ready_index(&self, cell: &str) -> Result<ready::ReadyIndex> {
        self.ready_state(cell)
    }

    fn ready_entries(&self, cell: &str) -> Result<Vec<String>> {
        self.ready_list(cell)
    }

    fn ready_first(&self, cell: &str, k: usize) -> Result<(Vec<String>, usize)> {
        self.ready_smallest(cell, k)
    }

    fn rebuild_ready(&self, cell: &str, entries: &[String]) -> Result<(ready::Head, Option<u64>)> {
        let _guard = self.cell_lock(cell)?;
        self.ready_rebuild(cell, entries)
    }

    fn transact(
        &self,
        cell: &str,
        now: chrono::DateTime<chrono::Utc>,
        body: &mut dyn FnMut(&mut Txn<'_>) -> Result<()>,
    ) -> Result<()> {
        let _guard = self.cell_lock(cell)?;
        let mut conflict = String::new();
        for _ in 0..txn::MAX_ATTEMPTS {
            let mut t = Txn::new(self, cell, now);
            body(&mut t)?;
            let changes = t.into_changes();
            let empty = changes.is_empty();
            match self.commit_locked(cell, changes) {
                Ok(()) => {
                    if !empty {
                        self.committed();
                    }
                    return Ok(());
                }
                Err(txn::CommitError::Conflict(what)) => conflict = what,
                Err(txn::CommitError::Failed(e)) => return Err(e),
            }
        }
        Err(txn::conflict_error(cell, &conflict))
    }

    fn lock(&self, cell: &str, key: LockKey<'_>) -> Result<LockGuard> {
        if let LockKey::Checkpoint(id) = key {
            check_id(IdKind::Agent, id)?;
        }
        let cell_fd = self.cell_fd(cell)?;
        lock::lock(cell_fd.as_fd(), &key.file_name(), self.lock_wait).map_err(|e| {
            self.io_error(
                "lock",
                &self
                    .cell_path(cell)
                    .join(layout::PAS_DIR)
                    .join(key.file_name()),
                e,
            )
        })
    }

    fn origins(&self, cell: &str, key: FileKey<'_>) -> Result<Vec<Origin>> {
        use rustix::fs::{fstat, statat, AtFlags};
        let (sub, name) = Self::key_name(key)?;
        let origin = origin_of;
        let near = |o: Origin| Origin { near: true, ..o };
        let stat_err = |path: &Path, e: rustix::io::Errno| self.io_error("inspect", path, e.into());
        let mut out = self.root_origins()?;
        let cell_fd = self.cell_fd(cell)?;
        let cell_path = self.cell_path(cell);
        out.push(origin(
            &cell_path,
            fstat(&cell_fd).map_err(|e| stat_err(&cell_path, e))?,
        ));
        let (dir, dir_path) = match sub {
            None => (cell_fd, cell_path),
            Some(sub) => {
                let path = cell_path.join(sub);
                let fd = atomic::open_subdir(cell_fd.as_fd(), sub)
                    .map_err(|e| self.io_error("open", &path, e))?;
                out.push(near(origin(
                    &path,
                    fstat(&fd).map_err(|e| stat_err(&path, e))?,
                )));
                (fd, path)
            }
        };
        let file = dir_path.join(&name);
        match statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => out.push(near(origin(&file, stat))),
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(stat_err(&file, e)),
        }
        Ok(out)
    }

    fn remote(&self) -> Option<Remote> {
        None
    }

    fn keep_alive(
        &self,
        _cell: &str,
        _agent: &str,
        _ttl: std::time::Duration,
    ) -> Result<Option<AliveGuard>> {
        Ok(None)
    }

    fn blob_inventory(&self) -> Result<Option<BlobInventory>> {
        Ok(None)
    }

    fn remove_blob(&self, _sha256: &str, _cutoff: chrono::DateTime<chrono::Utc>) -> Result<bool> {
        Ok(false)
    }

    fn alive_agents(&self, _cell: &str) -> Result<Option<Vec<String>>> {
        Ok(None)
    }

    fn nodes(&self) -> Result<Option<Vec<String>>> {
        Ok(None)
    }

    fn keep_node(&self, _host: &str, _ttl: std::time::Duration) -> Result<Option<AliveGuard>> {
        Ok(None)
    }

    fn events_head(&self, cell: &str) -> Result<Option<events::Head>> {
        let cell_fd = self.cell_fd(cell)?;
        self.read_head(cell, cell_fd.as_fd())
    }

    fn hook_cursor(&self, cell: &str) -> Result<Option<events::Cursor>> {
        let cell_fd = self.cell_fd(cell)?;
        self.read_hook_cursor(cell, cell_fd.as_fd())
    }

    fn set_hook_cursor(&self, cell: &str, cursor: &events::Cursor) -> Result<()> {
        // Its temporary file lives in .pas/tmp/, which the next holder of the cell lock
        // clears: written under that lock, or another writer may remove it mid-write.
        let _lock = self.cell_lock(cell)?;
        let cell_fd = self.cell_fd(cell)?;
        self.write_hook_cursor(cell, cell_fd.as_fd(), cursor)
    }

    fn read_log(&self, cell: &str, log: LogFile<'_>, offset: u64) -> Result<Vec<u8>> {
        if let Some(id) = log.agent() {
            check_id(IdKind::Agent, id)?;
        }
        let cell_fd = self.cell_fd(cell)?;
        let logs_path = self.cell_path(cell).join("logs");
        let logs = match atomic::open_subdir(cell_fd.as_fd(), "logs") {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io_error("open", &logs_path, e)),
        };
        let name = log.file_name();
        atomic::read_from(logs.as_fd(), &name, offset)
            .map_err(|e| self.io_error("read", &logs_path.join(&name), e))
    }

    fn log_segments(&self, cell: &str, agent: &str) -> Result<Vec<LogSegment>> {
        self.agent_log_segments(cell, agent)
    }

    fn read_log_chunk(
        &self,
        cell: &str,
        log: LogFile<'_>,
        offset: u64,
        max: usize,
    ) -> Result<Option<LogChunk>> {
        self.read_log_piece(cell, log, offset, max)
    }

    fn rotate_log(&self, cell: &str, agent: &str, keep: usize) -> Result<std::fs::File> {
        self.rotate_agent_log(cell, agent, keep)
    }

    fn checkpoint_generations(&self, cell: &str, agent: &str) -> Result<Vec<u64>> {
        self.generations(cell, agent)
    }

    fn write_checkpoint(
        &self,
        cell: &str,
        agent: &str,
        generation: u64,
        files: &CheckpointFiles,
    ) -> Result<()> {
        self.write_generation(cell, agent, generation, files)
    }

    fn mirror_checkpoint(&self, cell: &str, agent: &str, files: &CheckpointFiles) -> Result<()> {
        self.mirror_generation(cell, agent, files)
    }

    fn read_checkpoint(
        &self,
        cell: &str,
        agent: &str,
        generation: u64,
    ) -> Result<Option<CheckpointFiles>> {
        self.read_generation(cell, agent, generation)
    }

    fn remove_checkpoint(&self, cell: &str, agent: &str, generation: u64) -> Result<()> {
        self.remove_generation(cell, agent, generation)
    }

    fn write_summary(&self, cell: &str, agent: &str, name: &str, bytes: &[u8]) -> Result<String> {
        self.write_summary_file(cell, agent, name, bytes)
            .map(|p| p.display().to_string())
    }

    fn summaries(&self, cell: &str, agent: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.read_summaries(cell, agent)
    }

    fn try_lock_root(&self, name: &str) -> Result<std::result::Result<LockGuard, Option<u32>>> {
        self.with_root_lock_file(name, lock::try_lock_recording_pid)
    }

    fn lock_root(&self, name: &str) -> Result<LockGuard> {
        self.with_root_lock_file(name, |root, file| lock::lock(root, file, self.lock_wait))
    }

    fn read_root_doc(&self, key: RootDoc) -> Result<Option<Doc>> {
        let Ok(root) = self.root_fd() else {
            return Ok(None);
        };
        let path = self.root.join(layout::PAS_DIR).join(key.file_name());
        let pas = match atomic::open_subdir(root.as_fd(), layout::PAS_DIR) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io_error("open", &path, e)),
        };
        match atomic::read_at(pas.as_fd(), key.file_name(), layout::RESERVATIONS_LIMIT) {
            Ok(Some(bytes)) => Doc::parse(&bytes, &path).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(self.io_error("read", &path, e)),
        }
    }

    fn write_root_doc(&self, key: RootDoc, doc: &Doc) -> Result<()> {
        let root = self.ensure_root()?;
        let path = self.root.join(layout::PAS_DIR).join(key.file_name());
        let pas = atomic::ensure_subdir(root.as_fd(), layout::PAS_DIR)
            .map_err(|e| self.io_error("create", &path, e))?;
        atomic::replace_at(
            pas.as_fd(),
            key.file_name(),
            &doc.to_bytes(),
            Durability::Durable,
        )
        .map_err(|e| self.io_error("write", &path, e))
    }

    fn inspect(&self, cell: &str) -> Result<CellListing> {
        let cell_fd = self.cell_fd(cell)?;
        let cell_path = self.cell_path(cell);
        let mut listing = CellListing::default();
        let top = atomic::list_entries(cell_fd.as_fd())
            .map_err(|e| self.io_error("list", &cell_path, e))?;
        for sub in CELL_SUBDIRS {
            match top.iter().find(|e| e.name == sub) {
                None => listing.missing_dirs.push(sub),
                Some(e) if e.is_symlink => listing.links.push(sub.to_string()),
                Some(_) => {}
            }
        }
        for e in &top {
            if e.is_symlink && e.name == "cell.json" {
                listing.links.push(e.name.clone());
            }
        }
        for sub in ["agents", "tasks", "config"] {
            let Ok(dir) = atomic::open_subdir(cell_fd.as_fd(), sub) else {
                continue;
            };
            let entries = atomic::list_entries(dir.as_fd())
                .map_err(|e| self.io_error("list", &cell_path.join(sub), e))?;
            for e in entries {
                let rel = format!("{sub}/{}", e.name);
                if e.is_symlink {
                    listing.links.push(rel);
                } else if is_leftover(&e.name) {
                    // Found by the walk below.
                } else if sub != "config"
                    && (!e.is_file
                        || !e.name.ends_with(".json")
                        || !layout::is_valid_id(e.name.trim_end_matches(".json")))
                {
                    listing.stray.push(rel);
                }
            }
        }
        self.find_leftovers(cell_fd.as_fd(), "", &mut listing.temp_files, 0);
        listing.links.sort();
        listing.stray.sort();
        listing.temp_files.sort();
        Ok(listing)
    }

    fn read_root_config(&self) -> Result<Option<(Vec<u8>, String)>> {
        // A root that cannot be opened has no configuration; the command itself then
        // reports the root with its own advice (create it, or pass --root).
        let Ok(root) = self.root_fd() else {
            return Ok(None);
        };
        let path = self.root.join(layout::ROOT_CONFIG);
        match atomic::read_at(root.as_fd(), layout::ROOT_CONFIG, layout::ROOT_CONFIG_LIMIT) {
            Ok(bytes) => Ok(bytes.map(|b| (b, path.display().to_string()))),
            Err(e) => Err(self.io_error("read", &path, e)),
        }
    }

    fn export_cell(&self, cell: &str) -> Result<image::CellImage> {
        self.export_image(cell)
    }

    fn import_cell(&self, cell: &str, image: &image::CellImage) -> Result<()> {
        let docs = image::doc_keys(image)?;
        let head = image.head.clone().or_else(|| image::head_of(&image.events));
        self.build_cell(cell, &docs, &image.events, head.as_ref())
    }

    fn root_oddities(&self) -> Result<Vec<RootOddity>> {
        let root = match self.root_fd() {
            Ok(fd) => fd,
            Err(e) if e.kind == crate::error::Kind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let entries =
            atomic::list_entries(root.as_fd()).map_err(|e| self.io_error("list", &self.root, e))?;
        let mut odd = Vec::new();
        for e in entries {
            if e.is_dir && leftover_pid(&e.name).is_some() {
                odd.push(RootOddity {
                    name: e.name,
                    reason: "is a cell being created or removed by a writer that was interrupted; the next `pas cell create` removes it".to_string(),
                });
                continue;
            }
            if e.name.starts_with('.') {
                continue;
            }
            let reason = if e.is_symlink {
                "is a symbolic link; pas ignores links inside the root"
            } else if !e.is_dir {
                continue;
            } else if !layout::is_valid_id(&e.name) {
                "its name is not a valid cell id"
            } else if !self.root.join(&e.name).join("cell.json").exists() {
                "is a directory without cell.json"
            } else {
                continue;
            };
            odd.push(RootOddity {
                name: e.name,
                reason: reason.to_string(),
            });
        }
        odd.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(odd)
    }
}

/// Whether `name` is a temporary file or staging directory a writer makes and renames away
/// when it finishes: seen later, the writer was interrupted.
fn is_leftover(name: &str) -> bool {
    atomic::is_temp_name(name)
        || [".staging-", ".artifacts-", ".intent"]
            .iter()
            .any(|p| name.starts_with(p))
}

impl FsStore {
    /// Collects the leftovers of interrupted writers under `dir` (relative path `rel`),
    /// including `.pas/tmp/`, without following links.
    fn find_leftovers(
        &self,
        dir: std::os::fd::BorrowedFd<'_>,
        rel: &str,
        out: &mut Vec<String>,
        depth: usize,
    ) {
        // Cells are shallow (checkpoints/<agent>/history/<G>/artifacts is the deepest).
        if depth > 8 {
            return;
        }
        let Ok(entries) = atomic::list_entries(dir) else {
            return;
        };
        for e in entries {
            let path = if rel.is_empty() {
                e.name.clone()
            } else {
                format!("{rel}/{}", e.name)
            };
            if is_leftover(&e.name) || (rel == ".pas/tmp" && !e.is_dir) {
                out.push(path);
            } else if e.is_dir && e.name != layout::LOCKS_DIR {
                if let Ok(sub) = atomic::open_subdir(dir, &e.name) {
                    self.find_leftovers(sub.as_fd(), &path, out, depth + 1);
                }
            }
        }
    }

    /// Opens a log for appending (an agent's stdout and stderr go there).
    pub(crate) fn open_log(&self, cell: &str, log: LogFile<'_>) -> Result<std::fs::File> {
        if let Some(id) = log.agent() {
            check_id(IdKind::Agent, id)?;
        }
        let cell_fd = self.cell_fd(cell)?;
        let logs_path = self.cell_path(cell).join("logs");
        let logs = atomic::ensure_subdir(cell_fd.as_fd(), "logs")
            .map_err(|e| self.io_error("open", &logs_path, e))?;
        let name = log.file_name();
        let mode = match log {
            LogFile::Agent(_) | LogFile::AgentRotated(..) => atomic::LOG_MODE,
            LogFile::Events | LogFile::Mission => atomic::FILE_MODE,
        };
        atomic::open_append(logs.as_fd(), &name, mode)
            .map_err(|e| self.io_error("open", &logs_path.join(&name), e))
    }

    /// Counts one committed change.
    fn committed(&self) {
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Hidden directories in the root where a cell is built before it is renamed into place.
const STAGING_PREFIX: &str = ".creating-";
/// Hidden directories in the root that a removed cell is renamed to before deletion.
const TRASH_PREFIX: &str = ".removing-";

impl FsStore {
    /// Removes staging and trash directories left in the root by killed writers: those
    /// whose process (named in the directory) is gone. Best effort: the next one tries again.
    fn clear_stale_staging(&self, root: std::os::fd::BorrowedFd<'_>) {
        let Ok(entries) = atomic::list_entries(root) else {
            return;
        };
        for e in entries.into_iter().filter(|e| e.is_dir) {
            if let Some(pid) = leftover_pid(&e.name) {
                if !crate::process::alive(pid, None) {
                    let _ = std::fs::remove_dir_all(self.root.join(&e.name));
                }
            }
        }
    }
}

/// The pid of the writer that made a staging or trash directory, when `name` is one.
pub(crate) fn leftover_pid(name: &str) -> Option<i32> {
    let rest = name
        .strip_prefix(STAGING_PREFIX)
        .or_else(|| name.strip_prefix(TRASH_PREFIX))?;
    rest.rsplit('-').next()?.parse().ok().filter(|pid| *pid > 0)
}

/// ENOTEMPTY: what renaming a directory onto a non-empty one says.
fn libc_enotempty() -> i32 {
    rustix::io::Errno::NOTEMPTY.raw_os_error()
}

impl FsStore {
    /// Makes cell `cell` whole or not at all: `docs` as given, and the events `log` with
    /// its `head` (none: no log yet), built in a staging directory renamed into place.
    fn build_cell(
        &self,
        cell: &str,
        docs: &[(FileKey<'_>, Vec<u8>)],
        log: &[u8],
        head: Option<&crate::store::events::Head>,
    ) -> Result<()> {
        check_id(IdKind::Cell, cell)?;
        let root = self.ensure_root()?;
        self.clear_stale_staging(root.as_fd());
        let staging = format!("{STAGING_PREFIX}{cell}-{}", std::process::id());
        let staging_path = self.root.join(&staging);
        let build = || -> io::Result<()> {
            let dir = atomic::ensure_subdir(root.as_fd(), &staging)?;
            for sub in CELL_SUBDIRS {
                atomic::ensure_subdir(dir.as_fd(), sub)?;
            }
            for (key, bytes) in docs {
                let (sub, name) = key.dir_and_name();
                match sub {
                    None => atomic::replace_at(dir.as_fd(), &name, bytes, Durability::Durable)?,
                    Some(sub) => {
                        let sub_fd = atomic::open_subdir(dir.as_fd(), sub)?;
                        atomic::replace_at(sub_fd.as_fd(), &name, bytes, Durability::Durable)?;
                        rustix::fs::fsync(&sub_fd)?;
                    }
                }
            }
            if let Some(head) = head {
                let logs = atomic::open_subdir(dir.as_fd(), "logs")?;
                let mut human = String::new();
                for e in crate::store::events::parse_all(log) {
                    human.push_str(&crate::store::events::human_line(&e));
                    human.push('\n');
                }
                let mut jsonl = atomic::open_append(
                    logs.as_fd(),
                    &LogFile::Events.file_name(),
                    atomic::FILE_MODE,
                )?;
                atomic::append(&mut jsonl, log, Durability::Durable)?;
                let mut mission = atomic::open_append(
                    logs.as_fd(),
                    &LogFile::Mission.file_name(),
                    atomic::FILE_MODE,
                )?;
                atomic::append(&mut mission, human.as_bytes(), Durability::Durable)?;
                rustix::fs::fsync(&logs)?;
                let pas = atomic::ensure_subdir(dir.as_fd(), layout::PAS_DIR)?;
                atomic::replace_at(
                    pas.as_fd(),
                    commit::EVENTS_HEAD,
                    &serde_json::to_vec(head).unwrap_or_default(),
                    Durability::Durable,
                )?;
            }
            rustix::fs::fsync(&dir)?;
            rustix::fs::renameat_with(
                root.as_fd(),
                staging.as_str(),
                root.as_fd(),
                cell,
                rustix::fs::RenameFlags::NOREPLACE,
            )?;
            Ok(())
        };
        build().map_err(|e| {
            let _ = std::fs::remove_dir_all(&staging_path);
            if e.kind() == io::ErrorKind::AlreadyExists
                || e.raw_os_error() == Some(libc_enotempty())
            {
                Error::conflict(format!("cell {cell} already exists"))
            } else {
                self.io_error("create cell", &self.cell_path(cell), e)
                    .outcome(false)
            }
        })?;
        // The cell is there, whole, with its events: created.
        self.committed();
        rustix::fs::fsync(root).map_err(|e| {
            self.io_error("sync", &self.root, io::Error::from(e))
                .outcome(true)
                .hint("the cell exists; it may not survive a power loss")
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    /// A fresh root under the system's temporary directory, removed when dropped.
    struct TempRoot(PathBuf);

    impl TempRoot {
        fn new() -> TempRoot {
            let dir = std::env::temp_dir().join(format!("pas-store-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).expect("temp root");
            TempRoot(dir)
        }
    }

    impl Drop for TempRoot {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_file_store_keeps_the_contract() {
        let parent = TempRoot::new();
        let n = std::sync::atomic::AtomicUsize::new(0);
        contract::run_all(&|| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let root = parent.0.join(format!("root{i}"));
            let store = Arc::new(FsStore::new(&root));
            // Another program writing a document in place, without pas's lock.
            let foreign: contract::ForeignWrite = Box::new(move |cell, key, doc| {
                std::fs::write(root.join(cell).join(key.relative()), doc.to_bytes())
                    .expect("foreign write");
            });
            (store as Arc<dyn Store + Send + Sync>, foreign)
        });
    }

    fn now() -> chrono::DateTime<chrono::Utc> {
        crate::clock::parse("2026-12-01T10:00:00Z").expect("time")
    }

    fn cell_with_log(store: &FsStore) {
        let cell = Doc::parse_object(br#"{"cell_id":"c1","status":"active"}"#).expect("doc");
        store
            .create_cell("c1", &[(FileKey::Cell, cell)], &[], now())
            .expect("cell");
        crate::store::events::record_one(
            store,
            "c1",
            crate::store::events::NewEvent::new(
                crate::store::events::Level::Info,
                crate::model::EventKind::CellStatus,
                "first",
            ),
            now(),
        )
        .expect("first event");
    }

    /// The intent a writer killed after the commit point leaves behind: a new agent and
    /// two chained events.
    /// The messages of the events in `log`, in order.
    fn messages_of(log: &[u8]) -> Vec<String> {
        crate::store::events::parse_all(log)
            .into_iter()
            .map(|e| e.message)
            .collect()
    }

    /// Appends `lines` to c1's events log as a writer would have.
    fn append_to_log(root: &TempRoot, lines: &[String]) {
        let log_path = root.0.join("c1/logs/events.jsonl");
        let mut log = std::fs::read_to_string(&log_path).expect("log");
        for line in lines {
            log.push_str(line);
            log.push('\n');
        }
        std::fs::write(&log_path, log).expect("log");
    }

    fn leave_intent(store: &FsStore) -> Vec<String> {
        let log = store.read_log("c1", LogFile::Events, 0).expect("log");
        let last = log
            .split(|b| *b == b'\n')
            .rfind(|l| !l.is_empty())
            .map(<[u8]>::to_vec);
        let new = [
            crate::store::events::NewEvent::new(
                crate::store::events::Level::Info,
                crate::model::EventKind::CellStatus,
                "second",
            ),
            crate::store::events::NewEvent::new(
                crate::store::events::Level::Info,
                crate::model::EventKind::CellStatus,
                "third",
            ),
        ];
        let lines = crate::store::events::chain(&new, last.as_deref(), now());
        let intent = json!({
            "writes": [{ "doc": "agent", "id": "a1", "bytes": "{\"agent_id\": \"a1\"}\n" }],
            "events": lines,
            "mission": ["second", "third"],
        });
        let pas = store.root.join("c1").join(layout::PAS_DIR);
        std::fs::create_dir_all(&pas).expect("pas dir");
        std::fs::write(pas.join(commit::INTENT), intent.to_string()).expect("intent");
        lines
    }

    #[test]
    fn the_next_writer_finishes_a_committed_intent() {
        let root = TempRoot::new();
        let store = FsStore::new(&root.0);
        cell_with_log(&store);
        leave_intent(&store);
        // Any transaction (here one that changes nothing) finishes it first.
        transact(&store, "c1", now(), |_| Ok(())).expect("txn");
        assert!(store
            .read("c1", FileKey::Agent("a1"))
            .expect("read")
            .is_some());
        let log = store.read_log("c1", LogFile::Events, 0).expect("log");
        assert_eq!(messages_of(&log), ["first", "second", "third"]);
        assert_eq!(crate::store::events::verify(&log).first_break, None);
        assert!(!root.0.join("c1/.pas").join(commit::INTENT).exists());
    }

    #[test]
    fn an_applied_intent_whose_removal_was_lost_is_not_applied_again() {
        let root = TempRoot::new();
        let store = FsStore::new(&root.0);
        cell_with_log(&store);
        let lines = leave_intent(&store);
        // The writer applied it in full (documents, then both lines in the log) and a crash
        // lost only its unsynced unlink; a plain write changed the agent after it.
        append_to_log(&root, &lines);
        let later = "{\"agent_id\": \"a1\", \"heartbeat_count\": 7}\n";
        std::fs::create_dir_all(root.0.join("c1/agents")).expect("agents");
        std::fs::write(root.0.join("c1/agents/a1.json"), later).expect("agent");
        transact(&store, "c1", now(), |_| Ok(())).expect("txn");
        assert_eq!(
            std::fs::read_to_string(root.0.join("c1/agents/a1.json")).expect("agent"),
            later
        );
        let log = store.read_log("c1", LogFile::Events, 0).expect("log");
        assert_eq!(messages_of(&log), ["first", "second", "third"]);
        assert!(!root.0.join("c1/.pas").join(commit::INTENT).exists());
    }

    #[test]
    fn a_half_applied_intent_appends_only_the_missing_events() {
        let root = TempRoot::new();
        let store = FsStore::new(&root.0);
        cell_with_log(&store);
        let lines = leave_intent(&store);
        // The killed writer got as far as appending the first of the two lines.
        append_to_log(&root, &lines[..1]);
        transact(&store, "c1", now(), |t| {
            t.put(FileKey::Task("t1"), Doc::default());
            Ok(())
        })
        .expect("txn");
        let log = store.read_log("c1", LogFile::Events, 0).expect("log");
        assert_eq!(messages_of(&log), ["first", "second", "third"]);
        assert_eq!(crate::store::events::verify(&log).first_break, None);
    }

    #[test]
    fn leftover_temporary_files_are_cleared_by_the_next_writer() {
        let root = TempRoot::new();
        let store = FsStore::new(&root.0);
        cell_with_log(&store);
        let tmp = root.0.join("c1/.pas/tmp");
        std::fs::create_dir_all(&tmp).expect("tmp");
        std::fs::write(tmp.join(".a1.json.99999.0.tmp"), "{").expect("leftover");
        transact(&store, "c1", now(), |t| {
            t.put(FileKey::Agent("a1"), Doc::default());
            Ok(())
        })
        .expect("txn");
        let left: Vec<_> = std::fs::read_dir(&tmp).expect("list").collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
