//! `pas store gc`: removes the blobs no checkpoint manifest names (generations pruned or
//! removed leave theirs behind, since equal files of several generations are one blob).
//!
//! A blob is removed only when no manifest of the store names it and it was last written
//! (or reused by a save) longer ago than the grace: a checkpoint being saved writes its
//! blobs before its manifest, and a save that reuses a blob makes it new again, so the
//! grace spares what a save in progress is about to name. The blob directory is listed
//! before the manifests are read, and each blob's time is looked at again just before it
//! is removed.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::{BlobFile, Store};

/// What becomes of one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A manifest names it: kept, however old.
    Named,
    /// Named by none, but written within the grace: kept (a save may be about to name it).
    Young,
    /// Named by none and older than the grace: removed.
    Unnamed,
}

/// The rule: which blobs go.
pub fn decide(
    blob: &BlobFile,
    named: &HashSet<String>,
    now: DateTime<Utc>,
    grace: Duration,
) -> Verdict {
    if named.contains(&blob.sha256) {
        Verdict::Named
    } else if blob.modified > now - grace {
        Verdict::Young
    } else {
        Verdict::Unnamed
    }
}

/// A blob removed (or, with a dry run, that would be).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    /// Its sha256.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// Seconds since it was last written.
    pub age_seconds: i64,
}

/// What a collection did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Collected {
    /// The blob directory.
    pub dir: String,
    /// Only listed, nothing removed.
    pub dry_run: bool,
    /// The blobs removed (or that would be), by hash.
    pub removed: Vec<Removed>,
    /// Their bytes.
    pub bytes: u64,
    /// Blobs kept because a manifest names them.
    pub named: usize,
    /// Blobs kept because they are younger than the grace.
    pub young: usize,
}

/// Collects the store's unnamed blobs older than `grace` (lists them only when `dry_run`).
pub fn collect(
    store: &dyn Store,
    grace: Duration,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<Collected> {
    let Some(inventory) = store.blob_inventory()? else {
        return Err(Error::usage(format!(
            "{} keeps a checkpoint's files with its generation and has no blob directory: there is nothing to collect",
            store.location()
        ))
        .hint("blobs are kept by the etcd store (docs/etcd.md, \"Checkpoints: blobs and manifests\")"));
    };
    let mut done = Collected {
        dir: inventory.dir,
        dry_run,
        removed: Vec::new(),
        bytes: 0,
        named: 0,
        young: 0,
    };
    for blob in &inventory.blobs {
        match decide(blob, &inventory.named, now, grace) {
            Verdict::Named => done.named += 1,
            Verdict::Young => done.young += 1,
            Verdict::Unnamed => {
                if dry_run || store.remove_blob(&blob.sha256, now - grace)? {
                    done.bytes += blob.size;
                    done.removed.push(Removed {
                        sha256: blob.sha256.clone(),
                        size: blob.size,
                        age_seconds: (now - blob.modified).num_seconds(),
                    });
                } else {
                    // Written again since it was listed: a save is reusing it.
                    done.young += 1;
                }
            }
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unnamed_blobs_older_than_the_grace_go() {
        let now = crate::clock::parse("2026-12-01T12:00:00Z").unwrap();
        let hour = Duration::hours(1);
        let named: HashSet<String> = ["aa".to_string()].into();
        let blob = |sha: &str, age: Duration| BlobFile {
            sha256: sha.into(),
            size: 1,
            modified: now - age,
        };
        let cases = [
            (blob("aa", Duration::days(30)), hour, Verdict::Named),
            (blob("aa", Duration::zero()), hour, Verdict::Named),
            (blob("bb", Duration::minutes(59)), hour, Verdict::Young),
            (blob("bb", hour), hour, Verdict::Unnamed),
            (blob("bb", Duration::days(2)), hour, Verdict::Unnamed),
            (
                blob("bb", Duration::seconds(1)),
                Duration::zero(),
                Verdict::Unnamed,
            ),
            // Written "in the future" (a clock stepped back): kept.
            (
                blob("bb", -Duration::minutes(5)),
                Duration::zero(),
                Verdict::Young,
            ),
            (
                blob("aa", Duration::days(2)),
                Duration::zero(),
                Verdict::Named,
            ),
        ];
        for (b, grace, want) in cases {
            assert_eq!(
                decide(&b, &named, now, grace),
                want,
                "{} aged {:?}, grace {grace:?}",
                b.sha256,
                now - b.modified
            );
        }
    }
}
