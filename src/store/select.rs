//! Which store a command uses: `--store URL`, else `$PAS_STORE`, else `store = "URL"` in
//! the root's `pas.toml`; none of them, the file store at the root.
//!
//! The etcd store (its gRPC client, tokio, TLS) is linked into the `pas-etcd` program only,
//! which hands [`open_etcd`] to the CLI; `pas` itself, without it, executes `pas-etcd` with
//! the same arguments when etcd is selected. So the short commands on the file store do not
//! load that code (the relocations and page faults of a much bigger binary at every start).

use std::path::PathBuf;
use std::time::Duration;

use super::etcd::{self, EtcdUrl};
use super::layout::{Collection, FileKey, LockKey, LogFile, RootDoc};
use super::{
    changes, events, ready, CellListing, CheckpointFiles, FsStore, LockGuard, LogChunk, LogSegment,
    Origin, Revision, RevisionedDocs, RootOddity, Store, Txn, Workspace,
};
use crate::doc::Doc;
use crate::error::{Error, Result};

/// The store a command runs on.
pub enum Selected {
    /// Mission cells as directories under the root.
    File(FsStore),
    /// Mission cells in an etcd cluster; logs and checkpoints under the root. Built by
    /// [`open_etcd`] (in `pas-etcd` only), kept as a trait object so that nothing else
    /// names the etcd store's code.
    Etcd {
        /// The store.
        store: Box<dyn Store + Send + Sync>,
        /// Its URL.
        url: Box<EtcdUrl>,
        /// The local directory of its logs and checkpoints.
        blobs: PathBuf,
    },
}

impl std::fmt::Debug for Selected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Builds the etcd store: [`open_etcd`], passed in by the program that links it.
pub type EtcdOpener = fn(
    &EtcdUrl,
    PathBuf,
    Duration,
    serde_json::Map<String, serde_json::Value>,
) -> Result<Box<dyn Store + Send + Sync>>;

/// Opens the etcd store at `url` with `root` for its logs and checkpoints.
#[cfg(feature = "etcd")]
pub fn open_etcd(
    url: &EtcdUrl,
    root: PathBuf,
    lock_wait: Duration,
    policies: serde_json::Map<String, serde_json::Value>,
) -> Result<Box<dyn Store + Send + Sync>> {
    Ok(Box::new(
        etcd::EtcdStore::open(url, root)?
            .with_lock_wait(lock_wait)
            .with_root_policies(policies),
    ))
}

impl std::ops::Deref for Selected {
    type Target = dyn Store + Send + Sync;

    fn deref(&self) -> &Self::Target {
        match self {
            Selected::File(s) => s,
            Selected::Etcd { store, .. } => &**store,
        }
    }
}

/// Each method of [`Store`] handed to the selected store, so `&ctx.store` is a
/// `&dyn Store` wherever one is wanted.
macro_rules! delegate {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        impl Store for Selected {
            $(fn $name(&self $(, $arg: $ty)*) -> $ret {
                (**self).$name($($arg),*)
            })*
        }
    };
}

delegate! {
        fn location(&self) -> String;
        fn describe(&self, cell: &str, key: FileKey<'_>) -> String;
        fn describe_cell(&self, cell: &str) -> String;
        fn describe_log(&self, cell: &str, log: LogFile<'_>) -> String;
        fn describe_summary(&self, cell: &str, agent: &str, name: &str) -> String;
        fn describe_checkpoint(&self, cell: &str, agent: &str, generation: u64) -> String;
        fn workspace(&self, cell: &str, agent: Option<&str>) -> Result<Workspace>;
        fn changes(&self, sink: changes::Sink) -> Box<dyn changes::ChangeFeed>;
        fn commits(&self) -> usize;
        fn root_policies(&self) -> &serde_json::Map<String, serde_json::Value>;
        fn cell_ids(&self) -> Result<Vec<String>>;
        fn check_root(&self) -> Result<()>;
        fn has_cell(&self, cell: &str) -> bool;
        fn create_cell(&self, cell: &str, files: &[(FileKey<'_>, Doc)], events: &[crate::store::events::NewEvent], now: chrono::DateTime<chrono::Utc>) -> Result<()>;
        fn remove_cell(&self, cell: &str) -> Result<()>;
        fn read(&self, cell: &str, key: FileKey<'_>) -> Result<Option<Doc>>;
        fn read_revision(&self, cell: &str, key: FileKey<'_>) -> Result<(Option<Doc>, Revision)>;
        fn read_collection_revisions(&self, cell: &str, what: Collection) -> Result<RevisionedDocs>;
        fn transact(&self, cell: &str, now: chrono::DateTime<chrono::Utc>, body: &mut dyn FnMut(&mut Txn<'_>) -> Result<()>) -> Result<()>;
        fn list(&self, cell: &str, what: Collection) -> Result<Vec<String>>;
        fn ready_index(&self, cell: &str) -> Result<ready::ReadyIndex>;
        fn ready_entries(&self, cell: &str) -> Result<Vec<String>>;
        fn ready_first(&self, cell: &str, k: usize) -> Result<(Vec<String>, usize)>;
        fn rebuild_ready(&self, cell: &str, entries: &[String]) -> Result<(ready::Head, Option<u64>)>;
        fn read_collection(&self, cell: &str, what: Collection) -> Result<Vec<(String, Result<Doc>)>>;
        fn read_collection_bytes(&self, cell: &str, what: Collection) -> Result<Vec<(String, Result<Vec<u8>>)>>;
        fn read_bytes(&self, cell: &str, key: FileKey<'_>) -> Result<Option<Vec<u8>>>;
        fn parse_doc(&self, cell: &str, key: FileKey<'_>, bytes: &[u8]) -> Result<Doc>;
        fn lock(&self, cell: &str, key: LockKey<'_>) -> Result<LockGuard>;
        fn read_log(&self, cell: &str, log: LogFile<'_>, offset: u64) -> Result<Vec<u8>>;
        fn log_segments(&self, cell: &str, agent: &str) -> Result<Vec<LogSegment>>;
        fn read_log_chunk(&self, cell: &str, log: LogFile<'_>, offset: u64, max: usize) -> Result<Option<LogChunk>>;
        fn rotate_log(&self, cell: &str, agent: &str, keep: usize) -> Result<std::fs::File>;
        fn origins(&self, cell: &str, key: FileKey<'_>) -> Result<Vec<Origin>>;
        fn remote(&self) -> Option<super::Remote>;
        fn keep_alive(&self, cell: &str, agent: &str, ttl: Duration) -> Result<Option<super::AliveGuard>>;
        fn blob_inventory(&self) -> Result<Option<super::BlobInventory>>;
        fn remove_blob(&self, sha256: &str, cutoff: chrono::DateTime<chrono::Utc>) -> Result<bool>;
        fn has_leases(&self) -> bool;
        fn alive_agents(&self, cell: &str) -> Result<Option<Vec<String>>>;
        fn nodes(&self) -> Result<Option<Vec<String>>>;
        fn keep_node(&self, host: &str, ttl: Duration) -> Result<Option<super::AliveGuard>>;
        fn events_head(&self, cell: &str) -> Result<Option<events::Head>>;
        fn hook_cursor(&self, cell: &str) -> Result<Option<events::Cursor>>;
        fn set_hook_cursor(&self, cell: &str, cursor: &events::Cursor) -> Result<()>;
        fn checkpoint_generations(&self, cell: &str, agent: &str) -> Result<Vec<u64>>;
        fn write_checkpoint(&self, cell: &str, agent: &str, generation: u64, files: &CheckpointFiles) -> Result<()>;
        fn mirror_checkpoint(&self, cell: &str, agent: &str, files: &CheckpointFiles) -> Result<()>;
        fn read_checkpoint(&self, cell: &str, agent: &str, generation: u64) -> Result<Option<CheckpointFiles>>;
        fn remove_checkpoint(&self, cell: &str, agent: &str, generation: u64) -> Result<()>;
        fn write_summary(&self, cell: &str, agent: &str, name: &str, bytes: &[u8]) -> Result<String>;
        fn summaries(&self, cell: &str, agent: &str) -> Result<Vec<(String, Vec<u8>)>>;
        fn try_lock_root(&self, name: &str) -> Result<std::result::Result<LockGuard, Option<u32>>>;
        fn lock_root(&self, name: &str) -> Result<LockGuard>;
        fn read_root_doc(&self, key: RootDoc) -> Result<Option<Doc>>;
        fn write_root_doc(&self, key: RootDoc, doc: &Doc) -> Result<()>;
        fn inspect(&self, cell: &str) -> Result<CellListing>;
        fn root_oddities(&self) -> Result<Vec<RootOddity>>;
        fn read_root_config(&self) -> Result<Option<(Vec<u8>, String)>>;
        fn export_cell(&self, cell: &str) -> Result<super::image::CellImage>;
        fn import_cell(&self, cell: &str, image: &super::image::CellImage) -> Result<()>;
}

impl Selected {
    /// The file store, for what only it does yet (`pas serve`, `pas top`, `pas demo`).
    pub fn file(&self, what: &str) -> Result<&FsStore> {
        match self {
            Selected::File(s) => Ok(s),
            Selected::Etcd { url, .. } => Err(Error::usage(format!(
                "{what} works on the file store only for now, and this command uses {}",
                url.display()
            ))
            .hint("run it without --store (and without PAS_STORE or store= in pas.toml)")),
        }
    }

    /// What `--version --verbose` and `pas status` say about the store.
    pub fn describe(&self) -> String {
        match self {
            Selected::File(s) => format!("file store at {}", s.root().display()),
            Selected::Etcd { url, blobs, .. } => format!(
                "etcd store at {} (logs and checkpoints under {})",
                url.display(),
                blobs.display()
            ),
        }
    }

    /// The store's kind and location for JSON: `{"kind": "file"|"etcd", "location": ...}`.
    pub fn to_json(&self) -> serde_json::Value {
        let kind = match self {
            Selected::File(_) => "file",
            Selected::Etcd { .. } => "etcd",
        };
        serde_json::json!({ "kind": kind, "location": self.location() })
    }
}

/// Where the choice of store came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `--store`.
    Flag,
    /// `$PAS_STORE`.
    Env,
    /// `store =` in `pas.toml`.
    Config,
}

/// What [`open`] found.
#[derive(Debug)]
pub enum Opened {
    /// The store.
    Store(Selected),
    /// The etcd store, which this program does not link: run `pas-etcd` instead.
    NeedsEtcd,
}

/// Opens the store `spec` names (an `etcd://` URL), with `root` for its logs and
/// checkpoints and `blobs` (`blobs` in pas.toml) for its blob directory unless the URL names one; `None` opens the file store at `root`. A bad URL is one usage error naming
/// where it came from.
pub fn open(
    spec: Option<(&str, Source)>,
    root: PathBuf,
    lock_wait: Duration,
    policies: serde_json::Map<String, serde_json::Value>,
    blobs: Option<&str>,
    opener: Option<EtcdOpener>,
) -> Result<Opened> {
    let Some((spec, source)) = spec.filter(|(s, _)| !s.is_empty()) else {
        return Ok(Opened::Store(Selected::File(
            FsStore::new(root)
                .with_lock_wait(lock_wait)
                .with_root_policies(policies),
        )));
    };
    let from = match source {
        Source::Flag => "--store",
        Source::Env => "PAS_STORE",
        Source::Config => "store in pas.toml",
    };
    let mut url = etcd::parse_url(spec).map_err(|e| Error {
        message: format!("{from}: {}", e.message),
        ..e
    })?;
    if url.blobs.is_none() {
        url.blobs = blobs.map(PathBuf::from);
    }
    let Some(opener) = opener else {
        return Ok(Opened::NeedsEtcd);
    };
    let store = opener(&url, root.clone(), lock_wait, policies)?;
    Ok(Opened::Store(Selected::Etcd {
        store,
        url: Box::new(url),
        blobs: root,
    }))
}
