//! Checkpoints on the etcd store: their files in a content-addressed blob directory, their
//! manifests in etcd.
//!
//! Every file of a generation (`state.json`, `context.json`, pas's `manifest.json` and each
//! artifact) is a blob at `<blobs>/sha256/<first 2 hex>/<other 62 hex>`, written atomically
//! (a temporary file renamed into place) and verified against its name when read. The
//! generation itself is one etcd key, `P/cells/<cell>/.pas/checkpoints/<agent>/<G>` (G
//! zero-padded to 20 digits; G = 0 is the copy the spec's top-level files show), whose
//! value lists the files with their sizes and hashes. A value that would pass etcd's limit
//! on a request never goes into etcd: it is refused first ([`check_value`]).
//!
//! Blobs are shared between generations, agents and cells (the same bytes are one file), so
//! removing a generation removes its key only; the directory can be shared between hosts
//! (NFS) or kept per host and copied with the checkpoints by `pas store copy`.

use std::io::Write;
use std::path::{Path, PathBuf};

use etcd_client::{Compare, CompareOp, DeleteOptions, Txn as EtcdTxn, TxnOp};
use serde::{Deserialize, Serialize};

use super::EtcdStore;
use crate::error::{Error, Result};
use crate::store::events::hash_line;
use crate::store::layout::{check_id, IdKind};
use crate::store::{BlobFile, BlobInventory, CheckpointFiles, Store};
use chrono::{DateTime, Utc};

/// The largest value pas puts into etcd: etcd refuses requests over 1.5 MiB
/// (`--max-request-bytes`), and a commit carries other keys beside the value.
pub(crate) const VALUE_LIMIT: usize = 1 << 20;

/// Refuses a value for `what` larger than [`VALUE_LIMIT`] before it is sent.
pub(crate) fn check_value(what: &str, len: usize) -> Result<()> {
    if len <= VALUE_LIMIT {
        return Ok(());
    }
    Err(Error::usage(format!(
        "{what} would be {len} bytes in etcd, over the {VALUE_LIMIT} bytes pas puts in one value (etcd refuses requests over 1.5 MiB); nothing was written"
    ))
    .hint("keep documents small: large data belongs in checkpoint artifacts, which go to the blob directory"))
}

/// One file of a generation, as its manifest in etcd lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BlobRef {
    /// Its sha256 (hex): the blob's name.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// An artifact of a generation: its name, blob and permission bits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ArtifactRef {
    pub name: String,
    #[serde(flatten)]
    pub blob: BlobRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// The value of a generation's key in etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredCheckpoint {
    pub state: BlobRef,
    pub context: BlobRef,
    pub manifest: BlobRef,
    pub artifacts: Vec<ArtifactRef>,
}

impl StoredCheckpoint {
    /// Reads a generation's value, stored at the key `described` names.
    fn parse(bytes: &[u8], described: &str) -> Result<StoredCheckpoint> {
        serde_json::from_slice(bytes).map_err(|e| {
            Error::data(format!(
                "{described} is not a readable checkpoint manifest ({e})"
            ))
        })
    }
}

/// A content-addressed directory of blobs.
#[derive(Debug, Clone)]
pub(crate) struct BlobDir {
    root: PathBuf,
}

impl BlobDir {
    /// The blob directory `dir` (relative: under `root`), else `<root>/.pas/blobs`.
    pub fn new(root: &Path, dir: Option<&Path>) -> BlobDir {
        let root = match dir {
            Some(d) => root.join(d),
            None => root.join(crate::store::layout::PAS_DIR).join("blobs"),
        };
        BlobDir { root }
    }

    /// Where the blob of `hash` is.
    pub fn path(&self, hash: &str) -> PathBuf {
        let (head, tail) = hash.split_at(2.min(hash.len()));
        self.root.join("sha256").join(head).join(tail)
    }

    /// Stores `bytes` (once: a blob already there is kept) and says where they are.
    pub fn put(&self, bytes: &[u8]) -> Result<BlobRef> {
        let sha256 = hash_line(bytes);
        let path = self.path(&sha256);
        let blob = BlobRef {
            sha256,
            size: bytes.len() as u64,
        };
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == blob.size) {
            // Reused: made new again, so garbage collection (which spares blobs younger
            // than its grace) leaves it to the manifest about to name it.
            let _ = std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            return Ok(blob);
        }
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        let tmp = dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io("write blob", &path, e)
        })?;
        Ok(blob)
    }

    /// The directory, for messages.
    pub fn describe(&self) -> String {
        self.root.display().to_string()
    }

    /// Every blob in the directory (temporary files and names that are not hashes left
    /// out); none when the directory does not exist yet.
    pub fn list(&self) -> Result<Vec<BlobFile>> {
        let top = self.root.join("sha256");
        let mut found = Vec::new();
        let heads = match std::fs::read_dir(&top) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
            Err(e) => return Err(Error::io("list", &top, e)),
        };
        for head in heads {
            let head = head.map_err(|e| Error::io("list", &top, e))?;
            let head_name = head.file_name().to_string_lossy().into_owned();
            if !is_hex(&head_name, 2) {
                continue;
            }
            let dir = head.path();
            for entry in std::fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))? {
                let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
                let tail = entry.file_name().to_string_lossy().into_owned();
                if !is_hex(&tail, 62) {
                    continue;
                }
                let meta = match entry.metadata() {
                    Ok(m) if m.is_file() => m,
                    // Removed meanwhile, or not a file: not a blob to collect.
                    _ => continue,
                };
                let modified = meta
                    .modified()
                    .map_err(|e| Error::io("stat", &entry.path(), e))?;
                found.push(BlobFile {
                    sha256: format!("{head_name}{tail}"),
                    size: meta.len(),
                    modified: modified.into(),
                });
            }
        }
        found.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        Ok(found)
    }

    /// Removes blob `sha256` unless it was modified after `cutoff`; whether it was.
    pub fn remove(&self, sha256: &str, cutoff: DateTime<Utc>) -> Result<bool> {
        if !is_hex(sha256, 64) {
            return Err(Error::usage(format!("{sha256:?} is not a blob's sha256")));
        }
        let path = self.path(sha256);
        let modified = match std::fs::metadata(&path).and_then(|m| m.modified()) {
            Ok(t) => DateTime::<Utc>::from(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io("stat", &path, e)),
        };
        if modified > cutoff {
            return Ok(false);
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("remove", &path, e)),
        }
    }

    /// The bytes of `blob`, checked against its hash; `what` names it in messages.
    pub fn get(&self, blob: &BlobRef, what: &str) -> Result<Vec<u8>> {
        let path = self.path(&blob.sha256);
        let bytes = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::data(format!("{what}: its blob {} is missing", path.display()))
                    .hint("copy the blob directory from the host that saved it (docs/etcd.md), or save a new checkpoint")
            } else {
                Error::io("read blob", &path, e)
            }
        })?;
        let found = hash_line(&bytes);
        if found != blob.sha256 || bytes.len() as u64 != blob.size {
            return Err(Error::data(format!(
                "{what}: its blob {} is corrupt ({} bytes hashing to {}, the manifest says {} bytes)",
                path.display(),
                bytes.len(),
                &found[..12],
                blob.size
            ))
            .hint("restore the blob from a backup or another host's blob directory, or load another generation (`pas checkpoint list`)"));
        }
        Ok(bytes)
    }
}

/// Whether `name` is `len` lower-case hex digits.
fn is_hex(name: &str, len: usize) -> bool {
    name.len() == len && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl EtcdStore {
    /// The blobs of the blob directory, then the hashes every manifest of every cell names.
    /// A manifest pas cannot read stops it: what it names is unknown.
    pub(super) fn inventory(&self) -> Result<BlobInventory> {
        let blobs = self.blob_dir.list()?;
        let mut named = std::collections::HashSet::new();
        for cell in self.cell_ids()? {
            for kv in self.get_prefix(self.meta_key(&cell, "checkpoints/"))? {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let stored = StoredCheckpoint::parse(kv.value(), &self.describe_key(&key))
                    .map_err(|e| {
                        Error::data(format!(
                            "{}, so which blobs it names is unknown; nothing was removed",
                            e.message
                        ))
                        .hint("remove the generation (`etcdctl del KEY`) or repair its value, then collect again")
                    })?;
                for blob in [&stored.state, &stored.context, &stored.manifest]
                    .into_iter()
                    .chain(stored.artifacts.iter().map(|a| &a.blob))
                {
                    named.insert(blob.sha256.clone());
                }
            }
        }
        Ok(BlobInventory {
            dir: self.blob_dir.describe(),
            blobs,
            named,
        })
    }

    /// Removes an unnamed blob ([`BlobDir::remove`]).
    pub(super) fn drop_blob(&self, sha256: &str, cutoff: DateTime<Utc>) -> Result<bool> {
        self.blob_dir.remove(sha256, cutoff)
    }

    fn checkpoint_prefix(&self, cell: &str, agent: &str) -> String {
        self.meta_key(cell, &format!("checkpoints/{agent}/"))
    }

    pub(super) fn checkpoint_key(&self, cell: &str, agent: &str, generation: u64) -> String {
        format!("{}{generation:020}", self.checkpoint_prefix(cell, agent))
    }

    /// The generations of an agent (not 0), sorted.
    pub(super) fn etcd_generations(&self, cell: &str, agent: &str) -> Result<Vec<u64>> {
        check_id(IdKind::Cell, cell)?;
        check_id(IdKind::Agent, agent)?;
        let mut gens: Vec<u64> = self
            .names_under(self.checkpoint_prefix(cell, agent))?
            .iter()
            .filter_map(|n| n.parse().ok())
            .filter(|g| *g > 0)
            .collect();
        gens.sort_unstable();
        Ok(gens)
    }

    /// Stores a generation's files as blobs, then its manifest in etcd: created when
    /// `create` (refused when it exists), else replaced (the top-level copy, generation 0).
    pub(super) fn put_checkpoint(
        &self,
        cell: &str,
        agent: &str,
        generation: u64,
        files: &CheckpointFiles,
        create: bool,
    ) -> Result<()> {
        check_id(IdKind::Cell, cell)?;
        check_id(IdKind::Agent, agent)?;
        for (name, _) in &files.artifacts {
            if !crate::store::layout::is_valid_id(name) {
                return Err(Error::usage(format!("artifact name {name:?} is not a plain file name"))
                    .hint("artifact names are 1-128 characters of [A-Za-z0-9._-], not starting with '-' or '.'"));
            }
        }
        let mut artifacts = Vec::with_capacity(files.artifacts.len());
        for (name, bytes) in &files.artifacts {
            artifacts.push(ArtifactRef {
                name: name.clone(),
                blob: self.blob_dir.put(bytes)?,
                mode: files.modes.get(name).map(|m| m & 0o777),
            });
        }
        let stored = StoredCheckpoint {
            state: self.blob_dir.put(&files.state)?,
            context: self.blob_dir.put(&files.context)?,
            manifest: self.blob_dir.put(&files.manifest)?,
            artifacts,
        };
        let key = self.checkpoint_key(cell, agent, generation);
        let value = serde_json::to_vec(&stored).unwrap_or_default();
        check_value(&self.describe_key(&key), value.len())?;
        let put = TxnOp::put(key.clone(), value, None);
        let txn = if create {
            EtcdTxn::new()
                .when(vec![Compare::version(key.clone(), CompareOp::Equal, 0)])
                .and_then(vec![put])
        } else {
            EtcdTxn::new().and_then(vec![put])
        };
        if !self.send(txn)?.succeeded() {
            return Err(Error::conflict(format!(
                "checkpoint generation {generation} of agent {agent} already exists ({})",
                self.describe_key(&key)
            )));
        }
        self.committed();
        Ok(())
    }

    /// Reads a generation: its manifest from etcd, its files from the blob directory
    /// (each checked against its hash). `None` when it does not exist.
    pub(super) fn get_checkpoint(
        &self,
        cell: &str,
        agent: &str,
        generation: u64,
    ) -> Result<Option<CheckpointFiles>> {
        check_id(IdKind::Cell, cell)?;
        check_id(IdKind::Agent, agent)?;
        let key = self.checkpoint_key(cell, agent, generation);
        let Some(kv) = self.get_one(key.clone())? else {
            return Ok(None);
        };
        let stored = StoredCheckpoint::parse(kv.value(), &self.describe_key(&key))?;
        let what = |file: &str| format!("checkpoint {generation} of agent {agent}, {file}");
        let mut files = CheckpointFiles {
            state: self.blob_dir.get(&stored.state, &what("state.json"))?,
            context: self.blob_dir.get(&stored.context, &what("context.json"))?,
            manifest: self
                .blob_dir
                .get(&stored.manifest, &what("manifest.json"))?,
            ..CheckpointFiles::default()
        };
        for a in &stored.artifacts {
            let bytes = self
                .blob_dir
                .get(&a.blob, &what(&format!("artifact {}", a.name)))?;
            if let Some(mode) = a.mode {
                files.modes.insert(a.name.clone(), mode);
            }
            files.artifacts.push((a.name.clone(), bytes));
        }
        files.artifacts.sort();
        Ok(Some(files))
    }

    /// Removes a generation's key (its blobs may be shared and stay).
    pub(super) fn delete_checkpoint(&self, cell: &str, agent: &str, generation: u64) -> Result<()> {
        check_id(IdKind::Cell, cell)?;
        check_id(IdKind::Agent, agent)?;
        let key = self.checkpoint_key(cell, agent, generation);
        self.send(EtcdTxn::new().and_then(vec![TxnOp::delete(key, None::<DeleteOptions>)]))?;
        self.committed();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_named_by_their_hash_and_checked_when_read() {
        let dir = std::env::temp_dir().join(format!("pas-blobs-{}", uuid::Uuid::new_v4()));
        let blobs = BlobDir::new(&dir, None);
        let big = vec![7u8; 3 << 20];
        let cases: &[(&str, &[u8])] = &[("empty", b""), ("small", b"{}\n"), ("3 MiB", &big)];
        for (why, bytes) in cases {
            let blob = blobs.put(bytes).unwrap();
            assert_eq!(blob.size, bytes.len() as u64, "{why}");
            let path = blobs.path(&blob.sha256);
            assert!(path.starts_with(dir.join(".pas/blobs/sha256")), "{why}");
            assert_eq!(
                path.parent().unwrap().file_name().unwrap().len(),
                2,
                "{why}"
            );
            assert_eq!(blobs.get(&blob, why).unwrap(), *bytes, "{why}");
            // Stored twice: still one file.
            assert_eq!(blobs.put(bytes).unwrap(), blob, "{why}");
        }
        let blob = blobs.put(b"original").unwrap();
        std::fs::write(blobs.path(&blob.sha256), b"tampered").unwrap();
        let err = blobs.get(&blob, "artifact x").unwrap_err();
        assert_eq!(err.kind, crate::error::Kind::Data);
        assert!(
            err.message.contains("artifact x: its blob"),
            "{}",
            err.message
        );
        assert!(err.message.contains("is corrupt"), "{}", err.message);
        std::fs::remove_file(blobs.path(&blob.sha256)).unwrap();
        let err = blobs.get(&blob, "artifact x").unwrap_err();
        assert!(err.message.contains("is missing"), "{}", err.message);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn values_over_the_limit_are_refused_before_sending() {
        let cases = [
            (0, true),
            (VALUE_LIMIT, true),
            (VALUE_LIMIT + 1, false),
            (3 << 20, false),
        ];
        for (len, ok) in cases {
            let got = check_value("k", len);
            assert_eq!(got.is_ok(), ok, "{len}");
            if let Err(e) = got {
                assert!(e.message.contains("nothing was written"), "{}", e.message);
            }
        }
    }
}
