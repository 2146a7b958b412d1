//! The etcd store: the [`Store`] trait on an etcd cluster (`--store etcd://...`).
//!
//! Keys, under the URL's prefix `P` (see `docs/etcd.md`):
//! - `P/cell-ids/<cell>`: one per cell, so listing cells reads no documents;
//! - `P/cells/<cell>/<file>`: the documents, named as in a cell directory (`cell.json`,
//!   `agents/<id>.json`, `tasks/<id>.json`, `config/<name>.json`, `reservations.json`),
//!   each value the JSON text the file store would write; a document's revision is its
//!   etcd `mod_revision`;
//! - `P/cells/<cell>/.pas/events/<seq>` (seq zero-padded to 20 digits): the events log, one
//!   line each, hash-chained exactly as `logs/events.jsonl`; `.pas/events-head` anchors the
//!   chain (its [`events::Head`] plus the last line);
//! - `P/cells/<cell>/.pas/ready/<entry>`, `.pas/ready-head` and `.pas/tasks-gen`: the ready
//!   index. It is fresh while `ready-head` exists and is not older (by mod revision) than
//!   `tasks-gen`, which every commit that writes tasks without keeping the index rewrites;
//! - `P/cells/<cell>/.pas/hooks-cursor`;
//! - `P/commits/<token>`: one per commit, written in the commit's own etcd transaction and
//!   kept for ten minutes by a lease: a commit whose answer was lost (a timeout, a member
//!   that died) is sent again and its token tells whether it had already happened.
//!
//! A transaction runs its body on plain reads, then commits in one etcd transaction that
//! compares the mod revision of every document it read and writes (and the events head it
//! chained onto); on a mismatch the body runs again. Nothing is locked in etcd.
//!
//! Agent logs, checkpoints, summaries, operation locks and the working directories of
//! agents stay in a local directory (the `--root`), as in the file store: etcd refuses
//! values over 1.5 MiB and logs are per host. The trait is synchronous: a current-thread
//! tokio runtime inside the store drives the gRPC client, created only when this store is.

mod url;

#[cfg(all(test, feature = "etcd"))]
pub(crate) mod cluster;

#[cfg(feature = "etcd")]
mod client;

#[cfg(feature = "etcd")]
mod lease;

#[cfg(feature = "etcd")]
mod feed;

#[cfg(feature = "etcd")]
pub use client::EtcdStore;
pub use url::{is_etcd, parse as parse_url, EtcdUrl, PASSWORD_ENV};

/// The environment variable that selects the store (also `--store`).
pub const STORE_ENV: &str = "PAS_STORE";

/// The key directory of a cell's alive keys (`cells/<cell>/alive/<agent>`), each on its
/// supervisor's lease.
#[cfg(feature = "etcd")]
pub(crate) const ALIVE_DIR: &str = "alive";
/// The key directory of the hosts that run a watch (`nodes/<host>`), each on its lease.
#[cfg(feature = "etcd")]
pub(crate) const NODES_DIR: &str = "nodes";
