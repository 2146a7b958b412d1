//! How the file store commits a transaction: one lock per cell, compare-and-swap on the
//! bytes, and an intent record so a change and its events land together.
//!
//! Protocol, under the cell's lock (`.pas/locks/cell.lock`):
//! 1. finish the intent a killed or failed writer left (`.pas/intent.json`), then clear
//!    `.pas/tmp/`, where every temporary file of a document write lives (under the lock
//!    nobody else is writing there, so whatever is left belongs to a dead writer);
//! 2. check that every document to be written is still as the transaction read it;
//! 3. a commit of one document and no event, or of events only, is one atomic step (a
//!    rename, or one append) and is done directly;
//! 4. anything else is written as an intent record first: the new bytes of every document
//!    and the chained event lines. Renaming the intent into place is the commit point.
//!    Then the documents are replaced, the lines appended and the intent removed. A crash
//!    or a failed system call after the commit point leaves the intent, which this writer
//!    retries once and the next writer finishes: documents are replaced again (idempotent)
//!    and only the event lines the log does not have yet are appended.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs, Mode, OFlags};
use serde_json::{json, Value};

use super::atomic::{self, Durability, FILE_MODE};
use super::layout::{ConfigFile, FileKey, LogFile, PAS_DIR};
use super::lock::{self, LockGuard};
use super::txn::{ChangeSet, CommitError, DocKey, Expect, Op, ReadyChanges, Revision};
use super::{FsStore, Store};
use crate::error::{Error, Result};
use crate::store::events;

/// The intent record, under the cell's `.pas/`.
pub(crate) const INTENT: &str = "intent.json";
/// Where temporary files of document writes live, under the cell's `.pas/`.
pub(crate) const TMP_DIR: &str = "tmp";
/// The lock file of the cell lock, under `.pas/locks/`.
const CELL_LOCK: &str = "cell.lock";
/// The events chain's head ([`events::Head`]), under the cell's `.pas/`.
pub(crate) const EVENTS_HEAD: &str = "events-head.json";
/// Where the cell's `on_event` hooks have got to in its events log, under `.pas/`.
pub(crate) const HOOKS_CURSOR: &str = "hooks.json";

/// One document write, ready to apply.
struct Prepared {
    key: DocKey,
    bytes: Option<Vec<u8>>,
}

/// The event lines of a commit, chained, with their human lines for `mission.log`.
#[derive(Default)]
struct Lines {
    events: Vec<String>,
    mission: Vec<String>,
}

fn key_to_json(key: &DocKey) -> Value {
    match key {
        DocKey::Cell => json!({ "doc": "cell" }),
        DocKey::Reservations => json!({ "doc": "reservations" }),
        DocKey::Agent(id) => json!({ "doc": "agent", "id": id }),
        DocKey::Task(id) => json!({ "doc": "task", "id": id }),
        DocKey::Config(c) => json!({ "doc": "config", "id": c.file_name() }),
    }
}

fn key_from_json(v: &Value) -> Option<DocKey> {
    let id = v.get("id").and_then(Value::as_str);
    match (v.get("doc").and_then(Value::as_str)?, id) {
        ("cell", _) => Some(DocKey::Cell),
        ("reservations", _) => Some(DocKey::Reservations),
        ("agent", Some(id)) => Some(DocKey::Agent(id.to_string())),
        ("task", Some(id)) => Some(DocKey::Task(id.to_string())),
        ("config", Some(name)) => ConfigFile::ALL
            .into_iter()
            .find(|c| c.file_name() == name)
            .map(DocKey::Config),
        _ => None,
    }
}

/// The ready index's part of an intent record.
fn ready_to_json(ready: &ReadyChanges) -> Value {
    json!({
        "entries": ready.entries.iter().map(|(n, p)| json!([n, p])).collect::<Vec<_>>(),
        "head": ready.head,
    })
}

fn ready_from_json(v: &Value) -> Option<ReadyChanges> {
    let mut entries = Vec::new();
    for e in v.get("entries")?.as_array()? {
        let pair = e.as_array()?;
        entries.push((pair.first()?.as_str()?.to_string(), pair.get(1)?.as_bool()?));
    }
    let head = match v.get("head") {
        None | Some(Value::Null) => None,
        Some(h) => Some(serde_json::from_value(h.clone()).ok()?),
    };
    Some(ReadyChanges {
        entries,
        head,
        ..ReadyChanges::default()
    })
}

fn seq_of(line: &str) -> u64 {
    serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|v| v.get("seq").and_then(Value::as_u64))
        .unwrap_or(0)
}

impl FsStore {
    /// Takes the cell lock (re-entrant within a thread). Whoever takes it first in a thread
    /// finishes a pending intent and clears stale temporary files.
    pub(crate) fn cell_lock(&self, cell: &str) -> Result<LockGuard> {
        let cell_fd = self.cell_fd(cell)?;
        let key = format!("{}\0{cell}", self.root().display());
        let (guard, fresh) =
            lock::lock_reentrant(cell_fd.as_fd(), CELL_LOCK, &key, self.lock_wait()).map_err(
                |e| {
                    self.io_error(
                        "lock",
                        &self
                            .pas_path(cell)
                            .join(super::layout::LOCKS_DIR)
                            .join(CELL_LOCK),
                        e,
                    )
                },
            )?;
        if fresh {
            self.recover(cell, cell_fd.as_fd())?;
        }
        Ok(guard)
    }

    fn pas_path(&self, cell: &str) -> std::path::PathBuf {
        self.cell_path(cell).join(PAS_DIR)
    }

    pub(crate) fn pas_dir(&self, cell: &str, cell_fd: BorrowedFd<'_>) -> Result<OwnedFd> {
        atomic::ensure_subdir(cell_fd, PAS_DIR)
            .map_err(|e| self.io_error("open", &self.pas_path(cell), e))
    }

    /// The directory for temporary files of document writes (created when missing).
    pub(crate) fn tmp_dir(&self, cell: &str, cell_fd: BorrowedFd<'_>) -> Result<OwnedFd> {
        let pas = self.pas_dir(cell, cell_fd)?;
        atomic::ensure_subdir(pas.as_fd(), TMP_DIR)
            .map_err(|e| self.io_error("open", &self.pas_path(cell).join(TMP_DIR), e))
    }

    /// Finishes a pending intent and removes leftovers of killed writers. Caller holds the
    /// cell lock.
    fn recover(&self, cell: &str, cell_fd: BorrowedFd<'_>) -> Result<()> {
        let pas = match atomic::open_subdir(cell_fd, PAS_DIR) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io_error("open", &self.pas_path(cell), e)),
        };
        let intent_path = self.pas_path(cell).join(INTENT);
        if let Some(bytes) = atomic::read_at(pas.as_fd(), INTENT, super::layout::INTENT_LIMIT)
            .map_err(|e| self.io_error("read", &intent_path, e))?
        {
            let intent: Value = serde_json::from_slice(&bytes).map_err(|e| {
                Error::data(format!(
                    "{} is not a readable intent record ({e}); pas cannot finish the change it describes",
                    intent_path.display()
                ))
                .hint("compare it with the documents it names, then remove it by hand")
            })?;
            if self.intent_done(cell, cell_fd, &intent)? {
                // Applied, and only its removal was lost (it is not synced when the intent
                // carries events, see `apply_intent`): applying it again would undo what
                // was written after it without an intent (a plain heartbeat).
                match rfs::unlinkat(&pas, INTENT, rfs::AtFlags::empty()) {
                    Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                    Err(e) => return Err(self.io_error("remove", &intent_path, e.into())),
                }
                rfs::fsync(&pas)
                    .map_err(|e| self.io_error("sync", &self.pas_path(cell), e.into()))?;
            } else {
                self.apply_intent(cell, cell_fd, pas.as_fd(), &intent)?;
            }
        }
        if let Ok(tmp) = atomic::open_subdir(pas.as_fd(), TMP_DIR) {
            let entries = atomic::list_entries(tmp.as_fd())
                .map_err(|e| self.io_error("list", &self.pas_path(cell).join(TMP_DIR), e))?;
            for e in entries.into_iter().filter(|e| !e.is_dir) {
                let _ = rfs::unlinkat(&tmp, e.name.as_str(), rfs::AtFlags::empty());
            }
        }
        Ok(())
    }

    /// Whether `intent` was applied in full: it carries events and the log has its last one.
    /// Its event lines reach the log (synced) only after every document it names is synced,
    /// so the log holding them says the documents are on disk too.
    fn intent_done(&self, cell: &str, cell_fd: BorrowedFd<'_>, intent: &Value) -> Result<bool> {
        let Some(last) = intent
            .get("events")
            .and_then(Value::as_array)
            .and_then(|events| events.last())
            .and_then(Value::as_str)
        else {
            return Ok(false);
        };
        let Ok(logs) = atomic::open_subdir(cell_fd, "logs") else {
            return Ok(false);
        };
        let events_name = LogFile::Events.file_name();
        // Opened as a writer opens it (a torn end is cut), but never created.
        let Ok(log) = rfs::openat(
            &logs,
            events_name.as_str(),
            OFlags::RDWR | OFlags::APPEND | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return Ok(false);
        };
        let mut log = std::fs::File::from(log);
        let tail = self.log_tail(cell, cell_fd, &mut log)?;
        let logged = tail.map_or(0, |l| seq_of(&String::from_utf8_lossy(&l)));
        Ok(logged >= seq_of(last) && seq_of(last) > 0)
    }

    /// Applies an intent record (again): every document, then the event lines the log does
    /// not have yet, then removes the record.
    fn apply_intent(
        &self,
        cell: &str,
        cell_fd: BorrowedFd<'_>,
        pas: BorrowedFd<'_>,
        intent: &Value,
    ) -> Result<()> {
        let intent_path = self.pas_path(cell).join(INTENT);
        let bad = || {
            Error::data(format!(
                "{} does not describe a change pas can finish",
                intent_path.display()
            ))
            .hint("compare it with the documents it names, then remove it by hand")
        };
        let mut writes = Vec::new();
        for w in intent
            .get("writes")
            .and_then(Value::as_array)
            .ok_or_else(bad)?
        {
            let key = key_from_json(w).ok_or_else(bad)?;
            let bytes = match w.get("bytes") {
                Some(Value::String(text)) => Some(text.clone().into_bytes()),
                _ if w.get("remove") == Some(&Value::Bool(true)) => None,
                _ => return Err(bad()),
            };
            writes.push(Prepared { key, bytes });
        }
        let strings = |field: &str| -> Vec<String> {
            intent
                .get(field)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|l| l.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let lines = Lines {
            events: strings("events"),
            mission: strings("mission"),
        };
        let tmp = self.tmp_dir(cell, cell_fd)?;
        // Every replacement first, unsynced, then one pass of fsyncs: the first forces the
        // journal commit that carries all of them, so the rest find little left to do (one
        // commit instead of two per document). Nothing is durable until the pass ends, and
        // the intent stays until then, so a crash before it only means a replay.
        for w in &writes {
            self.apply_write(cell, cell_fd, tmp.as_fd(), w, Durability::Relaxed)?;
        }
        let ready = match intent.get("ready") {
            Some(r) => ready_from_json(r).ok_or_else(bad)?,
            None => ReadyChanges::default(),
        };
        self.apply_ready(cell, cell_fd, &ready, Durability::Relaxed)?;
        self.sync_applied(cell, cell_fd, &writes, &ready)?;
        self.append_lines(cell, cell_fd, &lines, true)?;
        match rfs::unlinkat(pas, INTENT, rfs::AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(self.io_error("remove", &intent_path, e.into())),
        }
        if !lines.events.is_empty() {
            // The removal needs no fsync: an intent that a crash brings back is known to be
            // applied by its events in the log (`intent_done`), and only removed.
            return Ok(());
        }
        rfs::fsync(pas).map_err(|e| self.io_error("sync", &self.pas_path(cell), e.into()))
    }

    /// Replaces or removes one document.
    fn apply_write(
        &self,
        cell: &str,
        cell_fd: BorrowedFd<'_>,
        tmp: BorrowedFd<'_>,
        w: &Prepared,
        durability: Durability,
    ) -> Result<()> {
        let key = w.key.file_key();
        let path = self.path_of(cell, key);
        let (sub, name) = Self::key_name(key)?;
        let dir = match sub {
            None => None,
            Some(sub) => Some(
                atomic::ensure_subdir(cell_fd, sub)
                    .map_err(|e| self.io_error("open", &self.cell_path(cell).join(sub), e))?,
            ),
        };
        let dir_fd = dir.as_ref().map_or(cell_fd, |d| d.as_fd());
        match &w.bytes {
            Some(bytes) => atomic::replace_via(
                tmp,
                dir_fd,
                &name,
                bytes,
                durability,
                super::layout::doc_mode(key, bytes),
            )
            .map_err(|e| self.io_error("write", &path, e)),
            None => match durability {
                Durability::Durable => atomic::remove_at(dir_fd, &name).map(|_| ()),
                Durability::Relaxed => atomic::unlink_at(dir_fd, &name).map(|_| ()),
            }
            .map_err(|e| self.io_error("remove", &path, e)),
        }
    }

    /// Makes the documents and index changes an intent applied unsynced durable: each file
    /// written, then each directory changed.
    fn sync_applied(
        &self,
        cell: &str,
        cell_fd: BorrowedFd<'_>,
        writes: &[Prepared],
        ready: &ReadyChanges,
    ) -> Result<()> {
        let mut dirs: Vec<Option<&'static str>> = Vec::new();
        for w in writes {
            let key = w.key.file_key();
            let (sub, name) = Self::key_name(key)?;
            if w.bytes.is_some() {
                let file = match sub {
                    None => name,
                    Some(sub) => format!("{sub}/{name}"),
                };
                atomic::sync_file_at(cell_fd, &file)
                    .map_err(|e| self.io_error("sync", &self.path_of(cell, key), e))?;
            }
            if !dirs.contains(&sub) {
                dirs.push(sub);
            }
        }
        for sub in dirs {
            let path = self.cell_path(cell).join(sub.unwrap_or(""));
            atomic::sync_file_at(cell_fd, sub.unwrap_or("."))
                .map_err(|e| self.io_error("sync", &path, e))?;
        }
        self.sync_ready(cell, cell_fd, ready)
    }

    /// Writes the ready index's part of a commit: entries, then the head.
    fn apply_ready(
        &self,
        cell: &str,
        cell_fd: BorrowedFd<'_>,
        ready: &ReadyChanges,
        durability: Durability,
    ) -> Result<()> {
        self.write_ready_entries(cell, cell_fd, &ready.entries, durability)?;
        match &ready.head {
            Some(head) => self.write_ready_head(cell, cell_fd, head, durability),
            None => Ok(()),
        }
    }

    /// Appends event lines (only those past the log's last sequence number when `resume`)
    /// and their human lines.
    fn append_lines(
        &self,
        cell: &str,
        cell_fd: BorrowedFd<'_>,
        lines: &Lines,
        resume: bool,
    ) -> Result<()> {
        if lines.events.is_empty() {
            return Ok(());
        }
        let logs_path = self.cell_path(cell).join("logs");
        let logs = atomic::ensure_subdir(cell_fd, "logs")
            .map_err(|e| self.io_error("open", &logs_path, e))?;
        let events_name = LogFile::Events.file_name();
        let events_path = logs_path.join(&events_name);
        let mut log = atomic::open_append(logs.as_fd(), &events_name, atomic::FILE_MODE)
            .map_err(|e| self.io_error("open", &events_path, e))?;
        let skip = if resume {
            let last = self.log_tail(cell, cell_fd, &mut log)?;
            let last_seq = last
                .as_deref()
                .map(|l| seq_of(&String::from_utf8_lossy(l)))
                .unwrap_or(0);
            lines
                .events
                .iter()
                .take_while(|l| seq_of(l) <= last_seq)
                .count()
        } else {
            0
        };
        if skip == lines.events.len() {
            return Ok(());
        }
        let size_before = log
            .metadata()
            .map_err(|e| self.io_error("read", &events_path, e))?
            .len();
        let mut jsonl = String::new();
        for l in &lines.events[skip..] {
            jsonl.push_str(l);
            jsonl.push('\n');
        }
        atomic::append(&mut log, jsonl.as_bytes(), Durability::Durable)
            .map_err(|e| self.io_error("append to", &events_path, e))?;
        // The append is the change; the head follows it. A head write that fails or is
        // lost leaves lines past the head that continue the chain, which the next writer
        // takes in: so its failure is no failure of this command, and it needs no fsync.
        let head = events::head_after(
            &lines.events[skip..],
            size_before,
            events::Head {
                seq: 0,
                hash: events::GENESIS.to_string(),
                size: 0,
            },
        );
        let _ = self.write_head(cell, cell_fd, &head);
        let mut human = String::new();
        for l in lines.mission.iter().skip(skip) {
            human.push_str(l);
            human.push('\n');
        }
        let mission_name = LogFile::Mission.file_name();
        atomic::open_append(logs.as_fd(), &mission_name, atomic::FILE_MODE)
            .and_then(|mut f| atomic::append(&mut f, human.as_bytes(), Durability::Relaxed))
            .map_err(|e| self.io_error("append to", &logs_path.join(&mission_name), e))
    }

    /// The chained lines for the commit's events, after the log's last complete line (a
    /// torn tail is cut first).
    fn chain_events(&self, cell: &str, cell_fd: BorrowedFd<'_>, cs: &ChangeSet) -> Result<Lines> {
        if cs.events.is_empty() {
            return Ok(Lines::default());
        }
        let logs_path = self.cell_path(cell).join("logs");
        let logs = atomic::ensure_subdir(cell_fd, "logs")
            .map_err(|e| self.io_error("open", &logs_path, e))?;
        let events_name = LogFile::Events.file_name();
        let mut log = atomic::open_append(logs.as_fd(), &events_name, atomic::FILE_MODE)
            .map_err(|e| self.io_error("open", &logs_path.join(&events_name), e))?;
        let last = self.log_tail(cell, cell_fd, &mut log)?;
        let events = events::chain(&cs.events, last.as_deref(), cs.now);
        let mission = events
            .iter()
            .map(|line| {
                serde_json::from_str::<events::Event>(line)
                    .map(|e| events::human_line(&e))
                    .unwrap_or_default()
            })
            .collect();
        Ok(Lines { events, mission })
    }

    /// The chain's head as pas last recorded it; `None` for a log from before heads (it is
    /// anchored by the next append).
    pub(crate) fn read_head(
        &self,
        cell: &str,
        cell_fd: BorrowedFd<'_>,
    ) -> Result<Option<events::Head>> {
        let path = self.pas_path(cell).join(EVENTS_HEAD);
        let pas = match atomic::open_subdir(cell_fd, PAS_DIR) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io_error("open", &self.pas_path(cell), e)),
        };
        let Some(bytes) = atomic::read_at(pas.as_fd(), EVENTS_HEAD, 4096)
            .map_err(|e| self.io_error("read", &path, e))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::data(format!(
                "{} is not a readable events head ({e})",
                path.display()
            ))
            .hint("remove it: the next change records the head of the log as it is")
        })
    }

    /// Where the cell's hooks have got to; `None` before they first looked.
    pub(crate) fn read_hook_cursor(
        &self,
        cell: &str,
        cell_fd: BorrowedFd<'_>,
    ) -> Result<Option<events::Cursor>> {
        let path = self.pas_path(cell).join(HOOKS_CURSOR);
        let pas = match atomic::open_subdir(cell_fd, PAS_DIR) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io_error("open", &self.pas_path(cell), e)),
        };
        let Some(bytes) = atomic::read_at(pas.as_fd(), HOOKS_CURSOR, 4096)
            .map_err(|e| self.io_error("read", &path, e))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::data(format!(
                "{} is not a readable hooks cursor ({e})",
                path.display()
            ))
            .hint("remove it: the hooks then start at the end of the log")
        })
    }

    /// Records where the cell's hooks have got to.
    pub(crate) fn write_hook_cursor(
        &self,
        cell: &str,
        cell_fd: BorrowedFd<'_>,
        cursor: &events::Cursor,
    ) -> Result<()> {
        let bytes = serde_json::to_vec(cursor).unwrap_or_default();
        self.write_pas_file(cell, cell_fd, HOOKS_CURSOR, &bytes, Durability::Durable)
    }

    /// Replaces the file `name` of the cell's `.pas/` with `bytes`, atomically.
    pub(crate) fn write_pas_file(
        &self,
        cell: &str,
        cell_fd: BorrowedFd<'_>,
        name: &str,
        bytes: &[u8],
        durability: Durability,
    ) -> Result<()> {
        let pas = self.pas_dir(cell, cell_fd)?;
        let tmp = self.tmp_dir(cell, cell_fd)?;
        atomic::replace_via(tmp.as_fd(), pas.as_fd(), name, bytes, durability, FILE_MODE)
            .map_err(|e| self.io_error("write", &self.pas_path(cell).join(name), e))
    }

    fn write_head(&self, cell: &str, cell_fd: BorrowedFd<'_>, head: &events::Head) -> Result<()> {
        let bytes = serde_json::to_vec(head).unwrap_or_default();
        self.write_pas_file(cell, cell_fd, EVENTS_HEAD, &bytes, Durability::Relaxed)
    }

    /// The log's last complete line, after checking that the log still ends where pas left
    /// it and cutting a torn line that never completed. A log whose end was cut, edited
    /// or added to by something else is refused, before anything is changed.
    fn log_tail(
        &self,
        cell: &str,
        cell_fd: BorrowedFd<'_>,
        log: &mut std::fs::File,
    ) -> Result<Option<Vec<u8>>> {
        use std::io::{Read, Seek, SeekFrom};
        let path = self
            .cell_path(cell)
            .join("logs")
            .join(LogFile::Events.file_name());
        let io_err = |what: &str, e: io::Error| self.io_error(what, &path, e);
        let cut_refused = |e: io::Error| {
            if e.kind() == io::ErrorKind::PermissionDenied {
                Error::data(format!(
                    "{} ends in a torn line that pas cannot cut: the file is append-only (chattr +a) or read-only",
                    path.display()
                ))
                .hint("remove the torn line by hand (or `chattr -a` the log), then retry; nothing was changed")
            } else {
                io_err("cut the torn end of", e)
            }
        };
        let Some(head) = self.read_head(cell, cell_fd)? else {
            return atomic::last_line_repairing(log).map_err(cut_refused);
        };
        let len = log.metadata().map_err(|e| io_err("read", e))?.len();
        let mut reach: u64 = 4096;
        let (window, start) = loop {
            let start = head.size.saturating_sub(reach).min(len);
            log.seek(SeekFrom::Start(start))
                .map_err(|e| io_err("read", e))?;
            let mut window = Vec::new();
            log.by_ref()
                .take(len - start)
                .read_to_end(&mut window)
                .map_err(|e| io_err("read", e))?;
            // The window must hold the whole line that ends at the head.
            let before = head.size.saturating_sub(start).saturating_sub(1) as usize;
            let whole = start == 0 || window[..before.min(window.len())].contains(&b'\n');
            if whole {
                break (window, start);
            }
            reach *= 2;
        };
        match events::judge_tail(&window, start, &head) {
            events::Tail::Tampered(why) => Err(Error::data(format!("{}: {why}", path.display()))
                .hint("`pas events verify` says where; once the log is as it should be, remove .pas/events-head.json to anchor it again; nothing was changed")),
            events::Tail::Append { last, keep } => {
                if keep < len {
                    log.set_len(keep).map_err(cut_refused)?;
                }
                Ok(last)
            }
        }
    }

    /// The current revision of a document.
    fn current_revision(&self, cell: &str, key: FileKey<'_>) -> Result<Revision> {
        let (sub, name) = Self::key_name(key)?;
        let cell_fd = self.cell_fd(cell)?;
        let dir = match sub {
            None => cell_fd,
            Some(sub) => match atomic::open_subdir(cell_fd.as_fd(), sub) {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Revision::ABSENT),
                Err(e) => return Err(self.io_error("open", &self.cell_path(cell).join(sub), e)),
            },
        };
        match atomic::read_at(dir.as_fd(), &name, key.size_limit()) {
            Ok(Some(bytes)) => Ok(Revision::of_bytes(&bytes)),
            Ok(None) => Ok(Revision::ABSENT),
            Err(e) => Err(self.io_error("read", &self.path_of(cell, key), e)),
        }
    }

    /// Commits a change set. The caller holds the cell lock.
    pub(crate) fn commit_locked(&self, cell: &str, cs: ChangeSet) -> Result<(), CommitError> {
        if cs.is_empty() {
            return Ok(());
        }
        for w in &cs.writes {
            if let Expect::Revision(expected) = w.expect {
                let now = self.current_revision(cell, w.key.file_key())?;
                if now != expected {
                    let path = self.path_of(cell, w.key.file_key());
                    return Err(CommitError::Conflict(
                        if expected.exists() && !now.exists() {
                            format!("{} was removed", path.display())
                        } else if !expected.exists() {
                            format!("{} already exists", path.display())
                        } else {
                            format!("{}", path.display())
                        },
                    ));
                }
            }
        }
        let nothing = |e: Error| CommitError::Failed(e.outcome(false));
        let mut ready = cs.ready.clone();
        if ready.kept && self.ready_version(cell).map_err(nothing)? != ready.version {
            // tasks/ changed behind pas's back while the transaction ran.
            ready = ReadyChanges {
                kept: false,
                ..ReadyChanges::default()
            };
            ready.tasks_written = cs.ready.tasks_written;
        }
        if ready.tasks_written && !ready.kept {
            // Tasks change without their index entries: the index goes stale first.
            self.ready_invalidate(cell).map_err(nothing)?;
        }
        let ready = &ready;
        let cell_fd = self.cell_fd(cell).map_err(nothing)?;
        let tmp = self.tmp_dir(cell, cell_fd.as_fd()).map_err(nothing)?;
        let prepared: Vec<Prepared> = cs
            .writes
            .iter()
            .map(|w| Prepared {
                key: w.key.clone(),
                bytes: match &w.op {
                    Op::Put(doc) => Some(doc.to_bytes()),
                    Op::Remove => None,
                },
            })
            .collect();
        let lines = self
            .chain_events(cell, cell_fd.as_fd(), &cs)
            .map_err(nothing)?;

        let index = ready.writes_index();
        let done = |r: Result<(), CommitError>| {
            if r.is_ok() && ready.kept && ready.tasks_written {
                // A stamp that fails to be written leaves the index stale: rebuilt later.
                let _ = self.ready_stamp(cell);
            }
            r
        };
        if prepared.is_empty() && lines.events.is_empty() {
            // Only the index's head (a refill): a cache, written on its own.
            return self
                .apply_ready(
                    cell,
                    cell_fd.as_fd(),
                    ready,
                    super::ready::index_durability(),
                )
                .map_err(nothing);
        }
        // One atomic step: no intent needed.
        if lines.events.is_empty() && prepared.len() == 1 && !index {
            return done(
                self.apply_write(
                    cell,
                    cell_fd.as_fd(),
                    tmp.as_fd(),
                    &prepared[0],
                    cs.durability,
                )
                .map_err(|e| CommitError::Failed(self.maybe_applied(cell, &prepared[0], e))),
            );
        }
        if prepared.is_empty() && !index {
            // An append either reached the log (its line is whole) or it did not; a torn
            // line is cut by the next writer.
            return self
                .append_lines(cell, cell_fd.as_fd(), &lines, false)
                .map_err(|e| CommitError::Failed(self.maybe_appended(cell, &lines, e)));
        }

        let mut intent = json!({
            "writes": prepared.iter().map(|w| {
                let mut v = key_to_json(&w.key);
                match &w.bytes {
                    Some(b) => v["bytes"] = Value::String(String::from_utf8_lossy(b).into_owned()),
                    None => v["remove"] = Value::Bool(true),
                }
                v
            }).collect::<Vec<_>>(),
            "events": lines.events,
            "mission": lines.mission,
        });
        if index {
            intent["ready"] = ready_to_json(ready);
        }
        let pas = self.pas_dir(cell, cell_fd.as_fd()).map_err(nothing)?;
        let intent_path = self.pas_path(cell).join(INTENT);
        let intent_bytes = serde_json::to_vec(&intent).unwrap_or_default();
        write_intent(tmp.as_fd(), pas.as_fd(), &intent_bytes)
            .map_err(|e| nothing(self.io_error("write", &intent_path, e)))?;
        // Committed: from here on the change happens, by this writer or the next one.
        let finish = || self.apply_intent(cell, cell_fd.as_fd(), pas.as_fd(), &intent);
        if let Err(first) = finish() {
            // One retry (a transient failure), then leave it to the next writer.
            if finish().is_err() {
                let message = format!(
                    "{}; the change is committed (in {}) and the next pas command that changes this cell completes it",
                    first.message,
                    intent_path.display()
                );
                return Err(CommitError::Failed(Error {
                    message,
                    committed: Some(true),
                    ..first
                }));
            }
        }
        done(Ok(()))
    }

    /// The error of a failed append of events, saying whether they are in the log.
    fn maybe_appended(&self, cell: &str, lines: &Lines, e: Error) -> Error {
        let last = lines.events.last().map(String::as_bytes);
        let log = self.read_log(cell, LogFile::Events, 0).unwrap_or_default();
        let there = last.is_some_and(|l| {
            let (complete, _) = events::split_lines(&log);
            complete.last() == Some(&l)
        });
        e.outcome(there)
    }

    /// The error of a failed single write, saying whether the document was replaced.
    fn maybe_applied(&self, cell: &str, w: &Prepared, e: Error) -> Error {
        let now = self.current_revision(cell, w.key.file_key()).ok();
        let written = match &w.bytes {
            Some(bytes) => now == Some(Revision::of_bytes(bytes)),
            None => now == Some(Revision::ABSENT),
        };
        if written {
            let message = format!(
                "{}; the change was made but may not survive a power loss",
                e.message
            );
            Error {
                message,
                committed: Some(true),
                ..e
            }
        } else {
            e.outcome(false)
        }
    }
}

/// Writes the intent record: a temporary file in `tmp`, fsynced, renamed to
/// `.pas/intent.json` (the commit point), then the directory fsynced.
fn write_intent(tmp: BorrowedFd<'_>, pas: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<()> {
    let name = format!(".{INTENT}.{}.tmp", std::process::id());
    let fd = rfs::openat(
        tmp,
        name.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(FILE_MODE),
    )?;
    let written = (|| -> io::Result<()> {
        let mut file = std::fs::File::from(fd);
        std::io::Write::write_all(&mut file, bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = rfs::unlinkat(tmp, name.as_str(), rfs::AtFlags::empty());
        return Err(e);
    }
    if let Err(e) = rfs::renameat(tmp, name.as_str(), pas, INTENT) {
        let _ = rfs::unlinkat(tmp, name.as_str(), rfs::AtFlags::empty());
        return Err(e.into());
    }
    // The rename is visible to every later writer; the directory fsync makes it durable.
    // If that fails the change is still committed (the next writer finishes it), so the
    // caller goes on applying it.
    let _ = rfs::fsync(pas);
    Ok(())
}
