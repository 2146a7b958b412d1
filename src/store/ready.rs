//! The ready index of a cell: a cache that lets a claim find the best pending task without
//! reading every task file.
//!
//! On disk, under the cell's `.pas/`:
//! - `ready/`: one empty file per pending task, named by an *entry* that sorts as the
//!   queue does (the names are made and read by `ops::queue::rules`; here they are opaque
//!   strings ordered bytewise);
//! - `ready.json` (the [`Head`]): the first entries in order, so a claim reads one small
//!   document instead of listing `ready/`; every entry up to `bound` is in it (no bound:
//!   all are). When it runs dry the next claim reads `ready/` once, keeping only the
//!   smallest entries ([`Head::refill`]);
//! - `ready-stamp.json` (the [`Stamp`]): the modification time of `tasks/` when the index
//!   last matched it. Every file renamed into `tasks/` (pas renames, and the cell format
//!   asks the same of scripts) changes that time, so a task written behind pas's back makes
//!   the stamp differ and the index is rebuilt from the task files before it is used. File
//!   times move at the kernel's tick (4-10 ms), so a second rename within one tick could
//!   leave the time as it was: when pas stamps, it first sets `tasks/`'s time itself to the
//!   current time to the nanosecond, a value no later rename can leave behind.
//!
//! Entries and the head change in the same commit as the tasks they describe (they are part
//! of the intent record), so a crash leaves them consistent or finished by the next writer.
//! The stamp is written after the commit and removed before a commit that changes tasks
//! without keeping the index (or that saw `tasks/` change while it ran): a crash in between
//! leaves it stale (rebuilt), never wrong.
//!
//! A commit does not fsync the index (its entries, its head, `.pas/` for the head's
//! rename): the stamp names the boot it was written in (the kernel's `boot_id`), and an
//! index stamped in another boot is stale. Only a crash of the whole machine can lose
//! writes that were not synced, and after it the boot is another one, so the first claim
//! rebuilds the index from the task files, which are synced. A killed process loses
//! nothing (its writes are in the page cache), and within one boot every reader sees them.
//! Where `boot_id` cannot be read the index is synced in every commit as before.

use std::collections::{BTreeMap, BinaryHeap};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{self as rfs, Mode, OFlags};
use serde::{Deserialize, Serialize};

use super::atomic::{self, Durability, FILE_MODE};
use super::layout::{PAS_DIR, TASKS_DIR};
use super::FsStore;
use crate::error::Result;

/// The entries directory, under the cell's `.pas/`.
pub(crate) const READY_DIR: &str = "ready";
/// The head document, under the cell's `.pas/`.
pub(crate) const READY_HEAD: &str = "ready.json";
/// The freshness stamp, under the cell's `.pas/`.
pub(crate) const READY_STAMP: &str = "ready-stamp.json";
/// How many entries a refilled head holds (it is cut back to this when it grows to twice
/// as many): a refill lists `ready/` once per this many claims.
pub const HEAD_LEN: usize = 64;
/// The most entries a refilled head holds ([`Head::refill`]).
pub const REFILL_MAX: usize = 4 * HEAD_LEN;

/// The first entries of the index, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The smallest entries, sorted.
    pub head: Vec<String>,
    /// Every entry up to this one is in `head`; `None`: every entry is.
    pub bound: Option<String>,
}

impl Head {
    /// The head of a complete sorted list of entries.
    pub fn of_sorted(entries: &[String]) -> Head {
        Head::first(entries, HEAD_LEN)
    }

    /// The first `len` of `entries` (sorted), bounded when there are more.
    fn first(entries: &[String], len: usize) -> Head {
        let head: Vec<String> = entries.iter().take(len).cloned().collect();
        let bound = (entries.len() > len)
            .then(|| head.last().cloned())
            .flatten();
        Head { head, bound }
    }

    /// The head a claim refills when it ran dry, from `first`, the smallest entries of an
    /// index of `total` entries (sorted; every entry when there are no more than
    /// [`REFILL_MAX`], else at least that many: see [`FsStore::ready_smallest`]), with the
    /// refilling transaction's own `changes` to the index on top (`true`: created). It
    /// holds [`HEAD_LEN`] entries, more for a long queue (one per 256 entries, up to
    /// [`REFILL_MAX`]), so that the pass over `ready/`, which grows with the queue, is made
    /// once per that many claims.
    pub fn refill(mut first: Vec<String>, total: usize, changes: &BTreeMap<String, bool>) -> Head {
        let complete = first.len() >= total;
        // Entries past the last one read were not read: a name this transaction creates
        // beyond it may have unread entries before it, so it stays out (past the bound).
        let read_to = (!complete).then(|| first.last().cloned()).flatten();
        first.retain(|name| changes.get(name) != Some(&false));
        for (name, present) in changes {
            if *present && read_to.as_ref().is_none_or(|last| name <= last) {
                if let Err(at) = first.binary_search(name) {
                    first.insert(at, name.clone());
                }
            }
        }
        let len = (total / 256).clamp(HEAD_LEN, REFILL_MAX);
        let more = !complete || first.len() > len;
        first.truncate(len);
        let bound = more.then(|| first.last().cloned()).flatten();
        Head { head: first, bound }
    }

    /// Takes the entry `name` in (`present`) or out.
    pub fn apply(&mut self, name: &str, present: bool) {
        let at = self.head.binary_search_by(|e| e.as_str().cmp(name));
        match (at, present) {
            (Ok(i), false) => {
                self.head.remove(i);
            }
            (Err(i), true) if self.bound.as_deref().is_none_or(|b| name <= b) => {
                self.head.insert(i, name.to_string());
                if self.head.len() >= 2 * HEAD_LEN {
                    self.head.truncate(HEAD_LEN);
                    self.bound = self.head.last().cloned();
                }
            }
            _ => {}
        }
    }

    /// Whether the head must be refilled from the full list before it can answer.
    pub fn dry(&self) -> bool {
        self.head.is_empty() && self.bound.is_some()
    }
}

/// When the index last matched `tasks/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stamp {
    /// `tasks/`'s modification time then, in nanoseconds since the epoch (set by pas).
    tasks_mtime_ns: u64,
    /// The boot it was written in (`/proc/sys/kernel/random/boot_id`): an index stamped
    /// in another boot may have lost unsynced writes in a crash, and is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    boot: Option<String>,
}

/// This boot's id (read once per process), `None` where the kernel does not say.
pub(crate) fn boot_id() -> Option<&'static str> {
    static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let id = text.trim();
        (!id.is_empty() && id.len() <= 64).then(|| id.to_string())
    })
    .as_deref()
}

/// How a commit writes the index: unsynced when the stamp can name the boot (see the
/// module's header), else durably.
pub(crate) fn index_durability() -> Durability {
    if boot_id().is_some() {
        Durability::Relaxed
    } else {
        Durability::Durable
    }
}

/// The index as a transaction finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyIndex {
    /// Missing, or `tasks/` changed since it was kept: rebuild it before use.
    Stale,
    /// It matches `tasks/`.
    Fresh {
        /// Its head.
        head: Head,
        /// What it was checked against (`tasks/`'s time): a commit that finds another
        /// leaves the index stale.
        version: u64,
    },
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Whether `name` can be an entry: a plain, visible file name.
pub fn is_entry_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
}

impl FsStore {
    fn ready_path(&self, cell: &str, name: &str) -> std::path::PathBuf {
        self.cell_path(cell).join(PAS_DIR).join(name)
    }

    fn tasks_mtime_ns(&self, cell: &str, cell_fd: BorrowedFd<'_>) -> Result<Option<u64>> {
        match rfs::statat(cell_fd, TASKS_DIR, rfs::AtFlags::empty()) {
            Ok(st) => Ok(Some(
                (st.st_mtime as u64)
                    .saturating_mul(1_000_000_000)
                    .saturating_add(st.st_mtime_nsec),
            )),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(self.io_error("stat", &self.cell_path(cell).join(TASKS_DIR), e.into())),
        }
    }

    /// The index as it is now. Caller holds the cell lock.
    pub(crate) fn ready_state(&self, cell: &str) -> Result<ReadyIndex> {
        let cell_fd = self.cell_fd(cell)?;
        let pas = match atomic::open_subdir(cell_fd.as_fd(), PAS_DIR) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ReadyIndex::Stale),
            Err(e) => return Err(self.io_error("open", &self.cell_path(cell).join(PAS_DIR), e)),
        };
        let read = |name: &str| {
            atomic::read_at(pas.as_fd(), name, 1 << 20)
                .map_err(|e| self.io_error("read", &self.ready_path(cell, name), e))
        };
        let Some(stamp) = read(READY_STAMP)?.and_then(|b| serde_json::from_slice::<Stamp>(&b).ok())
        else {
            return Ok(ReadyIndex::Stale);
        };
        if stamp.boot.as_deref() != boot_id()
            || self.tasks_mtime_ns(cell, cell_fd.as_fd())? != Some(stamp.tasks_mtime_ns)
        {
            return Ok(ReadyIndex::Stale);
        }
        let Some(head) = read(READY_HEAD)?.and_then(|b| serde_json::from_slice::<Head>(&b).ok())
        else {
            return Ok(ReadyIndex::Stale);
        };
        Ok(ReadyIndex::Fresh {
            head,
            version: stamp.tasks_mtime_ns,
        })
    }

    /// `tasks/`'s modification time, the index's version; `None` without `tasks/`.
    pub(crate) fn ready_version(&self, cell: &str) -> Result<Option<u64>> {
        let cell_fd = self.cell_fd(cell)?;
        self.tasks_mtime_ns(cell, cell_fd.as_fd())
    }

    /// Every entry of the index, sorted.
    pub(crate) fn ready_list(&self, cell: &str) -> Result<Vec<String>> {
        Ok(self.ready_smallest(cell, usize::MAX)?.0)
    }

    /// The `k` smallest entries of the index, sorted, and how many entries it has: one pass
    /// over `ready/` that keeps no more than `k` names (no list of the whole index, no sort
    /// of it): what refills a head that ran dry.
    pub(crate) fn ready_smallest(&self, cell: &str, k: usize) -> Result<(Vec<String>, usize)> {
        let cell_fd = self.cell_fd(cell)?;
        let path = self.ready_path(cell, READY_DIR);
        let dir = match atomic::open_subdir(cell_fd.as_fd(), &format!("{PAS_DIR}/{READY_DIR}")) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(e) => return Err(self.io_error("open", &path, e)),
        };
        smallest_entries(dir.as_fd(), k).map_err(|e| self.io_error("list", &path, e))
    }

    /// Makes the index exactly `entries` (sorted), taken from every task file. Caller holds
    /// the cell lock.
    pub(crate) fn ready_rebuild(
        &self,
        cell: &str,
        entries: &[String],
    ) -> Result<(Head, Option<u64>)> {
        let cell_fd = self.cell_fd(cell)?;
        let pas = self.pas_dir(cell, cell_fd.as_fd())?;
        // First the stamp goes: a rebuild cut short leaves the index stale, not trusted.
        self.ready_invalidate(cell)?;
        let existing = self.ready_list(cell)?;
        let path = self.ready_path(cell, READY_DIR);
        let dir = atomic::ensure_subdir(pas.as_fd(), READY_DIR)
            .map_err(|e| self.io_error("open", &path, e))?;
        let mut changes: Vec<(&str, bool)> = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < existing.len() || j < entries.len() {
            match (existing.get(i), entries.get(j)) {
                (Some(a), Some(b)) if a == b => {
                    i += 1;
                    j += 1;
                }
                (Some(a), b) if b.is_none_or(|b| a < b) => {
                    changes.push((a, false));
                    i += 1;
                }
                (_, Some(b)) => {
                    changes.push((b, true));
                    j += 1;
                }
                _ => break,
            }
        }
        apply_entries(dir.as_fd(), changes.into_iter())
            .and_then(|()| rfs::fsync(&dir).map_err(io::Error::from))
            .map_err(|e| self.io_error("write", &path, e))?;
        let head = Head::of_sorted(entries);
        self.write_ready_head(cell, cell_fd.as_fd(), &head, Durability::Durable)?;
        let version = self.ready_stamp(cell)?;
        Ok((head, version))
    }

    /// Removes the stamp: the index is stale until rebuilt.
    pub(crate) fn ready_invalidate(&self, cell: &str) -> Result<()> {
        let cell_fd = self.cell_fd(cell)?;
        let pas = match atomic::open_subdir(cell_fd.as_fd(), PAS_DIR) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io_error("open", &self.cell_path(cell).join(PAS_DIR), e)),
        };
        match rfs::unlinkat(&pas, READY_STAMP, rfs::AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(self.io_error("remove", &self.ready_path(cell, READY_STAMP), e.into())),
        }
    }

    /// Records that the index matches `tasks/` as it is now; returns the version stamped
    /// (`None`: not stamped, the index stays stale).
    pub(crate) fn ready_stamp(&self, cell: &str) -> Result<Option<u64>> {
        let cell_fd = self.cell_fd(cell)?;
        // A time of pas's own, to the nanosecond: a later rename into tasks/ sets the
        // kernel's (tick-grained) time, which cannot be this one. When the time cannot be
        // set (tasks/ belongs to someone else) nothing is stamped: claims read every task.
        let now = now_ns();
        let at = rfs::Timestamps {
            last_access: rfs::Timespec {
                tv_sec: 0,
                tv_nsec: rfs::UTIME_OMIT,
            },
            last_modification: rfs::Timespec {
                tv_sec: (now / 1_000_000_000) as i64,
                tv_nsec: (now % 1_000_000_000) as _,
            },
        };
        if rfs::utimensat(cell_fd.as_fd(), TASKS_DIR, &at, rfs::AtFlags::empty()).is_err() {
            return Ok(None);
        }
        let Some(tasks_mtime_ns) = self.tasks_mtime_ns(cell, cell_fd.as_fd())? else {
            return Ok(None);
        };
        let stamp = Stamp {
            tasks_mtime_ns,
            boot: boot_id().map(str::to_string),
        };
        let bytes = serde_json::to_vec(&stamp).unwrap_or_default();
        // Not fsynced: it is written after what it vouches for, and a lost stamp only
        // costs a rebuild.
        self.write_pas_file(
            cell,
            cell_fd.as_fd(),
            READY_STAMP,
            &bytes,
            Durability::Relaxed,
        )?;
        Ok(Some(tasks_mtime_ns))
    }

    /// Writes the head document (unsynced within a commit, which syncs it after: see
    /// [`FsStore::sync_ready`]).
    pub(crate) fn write_ready_head(
        &self,
        cell: &str,
        cell_fd: BorrowedFd<'_>,
        head: &Head,
        durability: Durability,
    ) -> Result<()> {
        let bytes = serde_json::to_vec(head).unwrap_or_default();
        self.write_pas_file(cell, cell_fd, READY_HEAD, &bytes, durability)
    }

    /// Creates and removes entries (`true`: present), then (when durable) syncs the
    /// directory once.
    pub(crate) fn write_ready_entries(
        &self,
        cell: &str,
        cell_fd: BorrowedFd<'_>,
        entries: &[(String, bool)],
        durability: Durability,
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let path = self.ready_path(cell, READY_DIR);
        let pas = self.pas_dir(cell, cell_fd)?;
        let dir = atomic::ensure_subdir(pas.as_fd(), READY_DIR)
            .map_err(|e| self.io_error("open", &path, e))?;
        apply_entries(dir.as_fd(), entries.iter().map(|(n, p)| (n.as_str(), *p)))
            .map_err(|e| self.io_error("write", &path, e))?;
        if durability == Durability::Durable {
            rfs::fsync(&dir).map_err(|e| self.io_error("sync", &path, e.into()))?;
        }
        Ok(())
    }

    /// Makes a commit's unsynced index changes durable: the entries' directory, the head
    /// and `.pas/`; nothing when the stamp names the boot ([`index_durability`]).
    pub(crate) fn sync_ready(
        &self,
        cell: &str,
        cell_fd: BorrowedFd<'_>,
        ready: &super::txn::ReadyChanges,
    ) -> Result<()> {
        if index_durability() == Durability::Relaxed {
            return Ok(());
        }
        let sync = |rel: &str| {
            atomic::sync_file_at(cell_fd, &format!("{PAS_DIR}/{rel}"))
                .map_err(|e| self.io_error("sync", &self.ready_path(cell, rel), e))
        };
        if !ready.entries.is_empty() {
            sync(READY_DIR)?;
        }
        if ready.head.is_some() {
            sync(READY_HEAD)?;
            sync(".")?;
        }
        Ok(())
    }
}

/// The `k` smallest entry names of the directory `dir` (sorted) and how many it holds. The
/// names are read in place from the kernel's listing (no allocation but for a name that
/// goes into the `k` kept so far: about `k` times the log of the count over `k`).
fn smallest_entries(dir: BorrowedFd<'_>, k: usize) -> io::Result<(Vec<String>, usize)> {
    let mut buf = vec![MaybeUninit::<u8>::uninit(); 64 * 1024];
    let mut listing = rfs::RawDir::new(dir, &mut buf);
    // `k` may be unbounded (every entry): the heap then grows as names come.
    let mut kept: BinaryHeap<String> = BinaryHeap::with_capacity(k.min(4096));
    let mut total = 0;
    while let Some(entry) = listing.next() {
        let entry = entry?;
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if !is_entry_name(name) {
            continue;
        }
        total += 1;
        if kept.len() < k {
            kept.push(name.to_string());
        } else if let Some(mut largest) = kept.peek_mut() {
            if name < largest.as_str() {
                *largest = name.to_string();
            }
        }
    }
    Ok((kept.into_sorted_vec(), total))
}

/// Creates (`true`) or removes each entry (unsynced). Entries are empty files: creating one
/// is atomic, and what it holds is its name.
fn apply_entries<'a>(
    dir: BorrowedFd<'_>,
    entries: impl Iterator<Item = (&'a str, bool)>,
) -> io::Result<()> {
    for (name, present) in entries {
        if !is_entry_name(name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not a ready-index entry name"),
            ));
        }
        if present {
            let fd = rfs::openat(
                dir,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(FILE_MODE),
            )?;
            drop(fd);
        } else {
            match rfs::unlinkat(dir, name, rfs::AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("1-{i:05}+")).collect()
    }

    #[test]
    fn a_head_keeps_every_entry_up_to_its_bound() {
        let all = names(HEAD_LEN + 10);
        let mut head = Head::of_sorted(&all);
        assert_eq!(head.head.len(), HEAD_LEN);
        assert_eq!(head.bound.as_deref(), Some(all[HEAD_LEN - 1].as_str()));
        // Past the bound: stays out (it is in the directory).
        head.apply(&all[HEAD_LEN + 5], true);
        assert_eq!(head.head.len(), HEAD_LEN);
        // Before the bound: comes in, in order.
        head.apply("0-first+", true);
        assert_eq!(head.head[0], "0-first+");
        // Out again.
        head.apply("0-first+", false);
        assert_eq!(head.head[0], all[0]);
        // Grown to twice the length: cut back, bound moved down.
        let mut small = Head::default();
        for n in names(2 * HEAD_LEN) {
            small.apply(&n, true);
        }
        assert_eq!(small.head.len(), HEAD_LEN);
        assert_eq!(
            small.bound.as_deref(),
            Some(names(HEAD_LEN)[HEAD_LEN - 1].as_str())
        );
        // Drained: dry until refilled.
        let mut h = Head::of_sorted(&all);
        for n in all.iter().take(HEAD_LEN) {
            h.apply(n, false);
        }
        assert!(h.dry());
        assert!(!Head::of_sorted(&names(3)).dry());
    }

    #[test]
    fn a_refill_takes_more_of_a_long_queue() {
        // (entries, head length, bounded)
        let table = [
            (0, 0, false),
            (3, 3, false),
            (HEAD_LEN, HEAD_LEN, false),
            (1_000, HEAD_LEN, true),
            (10_000, HEAD_LEN, true),
            (40_000, 156, true),
            (100_000, REFILL_MAX, true),
            (1_000_000, REFILL_MAX, true),
        ];
        for (n, len, bounded) in table {
            let all = names(n);
            // What a pass over the directory keeps: the smallest REFILL_MAX.
            let first = all[..n.min(REFILL_MAX)].to_vec();
            let head = Head::refill(first, n, &BTreeMap::new());
            assert_eq!(head.head.len(), len, "{n}");
            assert_eq!(head.head[..], all[..len], "{n}");
            assert_eq!(head.bound.is_some(), bounded, "{n}");
            if bounded {
                assert_eq!(head.bound.as_deref(), Some(all[len - 1].as_str()), "{n}");
            }
        }
    }

    #[test]
    fn a_refill_applies_the_transactions_own_changes() {
        let all = names(1_000);
        let n = |i: usize| all[i].clone();
        // (why, entries read (the smallest of the index), index size, changes, head, bound)
        #[allow(clippy::type_complexity)]
        let rows: Vec<(
            &str,
            Vec<String>,
            usize,
            Vec<(String, bool)>,
            Vec<String>,
            Option<String>,
        )> = vec![
            (
                "a whole small index",
                vec![n(1), n(2)],
                2,
                vec![],
                vec![n(1), n(2)],
                None,
            ),
            (
                "a removal goes",
                vec![n(1), n(2)],
                2,
                vec![(n(1), false)],
                vec![n(2)],
                None,
            ),
            (
                "a creation comes in",
                vec![n(2)],
                1,
                vec![(n(1), true)],
                vec![n(1), n(2)],
                None,
            ),
            (
                "a creation past what was read stays out: unread entries may come before it",
                all[..80].to_vec(),
                1_000,
                vec![(n(500), true), (n(0), false)],
                all[1..=HEAD_LEN].to_vec(),
                Some(n(HEAD_LEN)),
            ),
            (
                "a creation within what was read comes in",
                all[1..81].to_vec(),
                1_000,
                vec![(n(0), true)],
                all[..HEAD_LEN].to_vec(),
                Some(n(HEAD_LEN - 1)),
            ),
            (
                "a whole index that fills more than the head is bounded",
                all[..HEAD_LEN].to_vec(),
                HEAD_LEN,
                vec![(n(HEAD_LEN), true)],
                all[..HEAD_LEN].to_vec(),
                Some(n(HEAD_LEN - 1)),
            ),
            (
                "an index emptied by the transaction",
                vec![n(3)],
                1,
                vec![(n(3), false)],
                vec![],
                None,
            ),
        ];
        for (why, first, total, changes, head, bound) in rows {
            let changes: BTreeMap<String, bool> = changes.into_iter().collect();
            let got = Head::refill(first, total, &changes);
            assert_eq!(got, Head { head, bound }, "{why}");
        }
    }

    #[test]
    fn a_pass_over_the_directory_keeps_the_smallest_entries() {
        let dir = std::env::temp_dir().join(format!("pas-ready-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("tempdir");
        let mut all = names(700);
        // Written in another order than their names', with names that are not entries.
        all.reverse();
        for name in all
            .iter()
            .chain([".hidden".to_string(), "a b".to_string()].iter())
        {
            std::fs::write(dir.join(name), b"").expect("write");
        }
        all.sort();
        let fd = rfs::open(&dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).expect("open");
        // (k, expected count kept)
        for (k, kept) in [
            (0, 0),
            (1, 1),
            (REFILL_MAX, REFILL_MAX),
            (700, 700),
            (5_000, 700),
            (usize::MAX, 700),
        ] {
            let fd2 = rfs::openat(&fd, ".", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
                .expect("reopen");
            let (first, total) = smallest_entries(fd2.as_fd(), k).expect("list");
            assert_eq!(total, 700, "{k}");
            assert_eq!(first[..], all[..kept], "{k}");
        }
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn a_stamp_of_another_boot_is_not_this_one() {
        let stamp = |boot: Option<&str>| Stamp {
            tasks_mtime_ns: 1,
            boot: boot.map(str::to_string),
        };
        // A stamp written before stamps named the boot reads as bootless.
        let old: Stamp = serde_json::from_str(r#"{"tasks_mtime_ns": 1}"#).expect("stamp");
        assert_eq!(old, stamp(None));
        let text = serde_json::to_string(&stamp(Some("b"))).expect("json");
        assert_eq!(text, r#"{"tasks_mtime_ns":1,"boot":"b"}"#);
        if let Some(now) = boot_id() {
            assert_ne!(stamp(None).boot.as_deref(), Some(now));
            assert_ne!(stamp(Some("another-boot")).boot.as_deref(), Some(now));
            assert_eq!(index_durability(), Durability::Relaxed);
        } else {
            assert_eq!(index_durability(), Durability::Durable);
        }
    }

    #[test]
    fn entry_names_are_plain_file_names() {
        for ok in ["110-job_1+", "2000-a.b+agent-1"] {
            assert!(is_entry_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "..", "a b", &"x".repeat(256)] {
            assert!(!is_entry_name(bad), "{bad:?}");
        }
    }
}
