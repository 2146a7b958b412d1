//! Change notification: the one file watcher of pas, used by `pas watch` and `pas top`.
//!
//! Callers subscribe to the root and to cells by id and receive typed [`Change`]s, handed
//! to a sink they give (usually a channel's sender) from a reader thread. They never see a
//! path: which directories are watched and what an entry's name means is decided here, from
//! the names in [`layout`].
//!
//! Invariants:
//! - A change is a hint, never a fact: callers re-read the files through the
//!   [`Store`](super::Store) before deciding anything. Events can be lost (the kernel's queue
//!   overflows: [`Change::Rescan`]) or stop for good ([`Change::Lost`], said once); after
//!   `Lost` the caller polls, and [`Changes::polling`] says so.
//! - Only changes are asked of the kernel (creates, deletes, writes, moves, attributes),
//!   never opens or reads, so a caller reading the files it was told about does not wake
//!   itself.
//! - No path is built from a name that is not a valid id ([`layout::is_valid_id`]); entries
//!   that are neither ids nor known layout names (temporary files, `.pas/`, stray files)
//!   give no change.
//! - The bookkeeping stays small for roots of 100,000 agents: per kernel watch its number,
//!   the directory kind and the shared cell id; per cell one map entry (the same shared id
//!   and a byte of watched directories); nothing per agent. Four watches per cell: its
//!   directory, `agents/`, `tasks/`, `logs/`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use inotify::{Event, EventMask, Inotify, WatchDescriptor, WatchMask};
use rustix::io::Errno;

use super::layout;
use super::FsStore;

/// A cell id as changes carry it: shared, so a caller that keeps a table of cells can key it
/// with the same allocation the watcher holds (one copy of each id however many tables
/// mention the cell).
pub type CellId = Arc<str>;

/// What changed. Every variant names the smallest thing the watcher can tell apart; several
/// writes in a row may come as one change or as several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The root itself or its configuration file (`pas.toml`) changed: the list of cells
    /// and every cell's effective policies may have changed.
    Root,
    /// A cell appeared in the root (a new cell is a directory renamed into place), left it,
    /// or its directory, its `cell.json` or one of its watched subdirectories changed.
    /// Directories made since the cell was subscribed are followed after another
    /// [`Changes::watch_cell`] (it is cheap and idempotent).
    Cell {
        /// The cell.
        cell: CellId,
    },
    /// An agent's document was written, created, replaced or removed.
    Agent {
        /// The cell.
        cell: CellId,
        /// The agent's id (checked).
        agent: String,
    },
    /// A task's document was written, created, replaced or removed.
    Task {
        /// The cell.
        cell: CellId,
        /// The task's id (checked).
        task: String,
    },
    /// The cell's events log grew (state changes, exits; beats are not logged there).
    Events {
        /// The cell.
        cell: CellId,
    },
    /// The cell's resource reservations changed.
    Reservations {
        /// The cell.
        cell: CellId,
    },
    /// Changes were lost (the kernel's queue overflowed): look at everything again.
    Rescan,
    /// Change events stopped for good (out of inotify watches, or the reader failed, or they
    /// never started): from now on the caller must poll. Sent once.
    Lost {
        /// What happened, for the operator.
        reason: String,
    },
}

/// Where a sink's changes go; `false` means nobody listens any more and the reader stops.
/// Where changes go; returning false stops the feed.
pub type Sink = Box<dyn Fn(Change) -> bool + Send + Sync>;

/// A subscription to a store's changes, whatever the backend: subscribe to the root and to
/// cells by id; when [`ChangeFeed::polling`] says so, the caller must poll instead.
pub trait ChangeFeed: Send + Sync {
    /// Subscribes to cells appearing and leaving and to root-wide settings (idempotent).
    fn watch_root(&self);
    /// Subscribes to one cell's documents and events (idempotent; invalid ids ignored).
    fn watch_cell(&self, cell: &CellId);
    /// Whether changes are no longer delivered and the caller must poll.
    fn polling(&self) -> bool;
}

/// A watched directory of a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Cell,
    Agents,
    Tasks,
    Logs,
}

impl Dir {
    const ALL: [Dir; 4] = [Dir::Cell, Dir::Agents, Dir::Tasks, Dir::Logs];

    /// Its bit in a cell's byte of watched directories.
    fn bit(self) -> u8 {
        1 << self as u8
    }

    /// Its subdirectory of the cell (none: the cell's directory itself).
    fn sub(self) -> Option<&'static str> {
        match self {
            Dir::Cell => None,
            Dir::Agents => Some(layout::AGENTS_DIR),
            Dir::Tasks => Some(layout::TASKS_DIR),
            Dir::Logs => Some(layout::LOGS_DIR),
        }
    }
}

/// Every [`Dir`] bit set: the cell is fully watched.
const ALL_DIRS: u8 = 0b1111;

/// Changes only: opening, reading or closing a file unwritten is no event, so the callers'
/// own reads never wake them and never queue up while they work. `ONLYDIR`: a name that is
/// not (or no longer) a directory is refused by the kernel, without a `stat` first.
fn watch_mask() -> WatchMask {
    WatchMask::ATTRIB
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::CLOSE_WRITE
        | WatchMask::MODIFY
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
}

/// The watcher's tables, shared by the subscribing caller and the reader thread.
struct State {
    /// Adds and removes kernel watches; none once watching stopped (or never started).
    watches: Option<inotify::Watches>,
    /// The root's watch, kept whole so that dropping can remove it (which wakes the reader).
    root_wd: Option<WatchDescriptor>,
    /// Watch number -> which directory of which cell.
    by_wd: HashMap<i32, (Dir, CellId)>,
    /// Cell -> its watched directories ([`Dir::bit`]s); a cell with none is not listed.
    cells: HashMap<CellId, u8>,
    /// Tests: how many watches the kernel grants before it says ENOSPC.
    #[cfg(test)]
    max_watches: Option<usize>,
}

impl State {
    /// Adds a kernel watch on a directory: `Ok(None)` when not watching, or when `path` is
    /// not a directory (yet); an error only when the kernel refuses for another reason.
    fn add(&mut self, path: &Path) -> io::Result<Option<WatchDescriptor>> {
        let Some(watches) = self.watches.as_mut() else {
            return Ok(None);
        };
        #[cfg(test)]
        if self
            .max_watches
            .is_some_and(|m| self.by_wd.len() + usize::from(self.root_wd.is_some()) >= m)
        {
            return Err(Errno::NOSPC.into());
        }
        match watches.add(path, watch_mask()) {
            Ok(wd) => Ok(Some(wd)),
            Err(e) if matches!(Errno::from_io_error(&e), Some(Errno::NOENT | Errno::NOTDIR)) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Stops watching: the tables are emptied and the reader, woken by the removal of the
    /// root's watch, ends and closes the inotify descriptor (freeing every kernel watch).
    /// Without a root watch the reader ends at its next event.
    fn shut(&mut self) {
        if let (Some(mut watches), Some(wd)) = (self.watches.take(), self.root_wd.take()) {
            let _ = watches.remove(wd);
        }
        self.by_wd = HashMap::new();
        self.cells = HashMap::new();
    }

    /// What one kernel event means; none when it means nothing to the callers.
    fn decode(&mut self, event: Event<&OsStr>) -> Option<Change> {
        if event.mask.contains(EventMask::Q_OVERFLOW) {
            return Some(Change::Rescan);
        }
        let id = event.wd.get_watch_descriptor_id();
        let is_root = self
            .root_wd
            .as_ref()
            .is_some_and(|r| r.get_watch_descriptor_id() == id);
        let ignored = event.mask.contains(EventMask::IGNORED);
        let moved = event.mask.contains(EventMask::MOVE_SELF);
        if ignored || moved {
            // IGNORED: the kernel dropped the watch (its directory is gone). MOVE_SELF: the
            // directory moved away and its watch with it, and a directory made under the old
            // name would never be watched while that watch stands: it is removed (its
            // IGNORED then finds nothing). Either way it is forgotten at once, so the
            // directory's successor can be watched.
            if moved {
                if let Some(watches) = self.watches.as_mut() {
                    let _ = watches.remove(event.wd.clone());
                }
            }
            let cell = self.forget(id, is_root);
            return match (moved, cell) {
                (false, _) => None,
                (true, Some(cell)) => Some(Change::Cell { cell }),
                (true, None) => is_root.then_some(Change::Root),
            };
        }
        let name = match event.name {
            Some(name) => Some(name.to_str()?),
            None => None,
        };
        if is_root {
            return self.decode_root(name);
        }
        let (dir, cell) = self.by_wd.get(&id)?;
        let Some(name) = name else {
            // The directory itself changed (moved, deleted, attributes).
            return Some(Change::Cell { cell: cell.clone() });
        };
        match dir {
            Dir::Cell => match name {
                layout::CELL_FILE | layout::AGENTS_DIR | layout::TASKS_DIR | layout::LOGS_DIR => {
                    Some(Change::Cell { cell: cell.clone() })
                }
                layout::RESERVATIONS_FILE => Some(Change::Reservations { cell: cell.clone() }),
                _ => None,
            },
            Dir::Agents => layout::doc_id(name).map(|agent| Change::Agent {
                cell: cell.clone(),
                agent: agent.to_string(),
            }),
            Dir::Tasks => layout::doc_id(name).map(|task| Change::Task {
                cell: cell.clone(),
                task: task.to_string(),
            }),
            Dir::Logs => {
                (name == layout::EVENTS_LOG).then(|| Change::Events { cell: cell.clone() })
            }
        }
    }

    /// Forgets watch `id` (the root's when `is_root`); the cell it was a directory of.
    fn forget(&mut self, id: i32, is_root: bool) -> Option<CellId> {
        if is_root {
            self.root_wd = None;
            return None;
        }
        let (dir, cell) = self.by_wd.remove(&id)?;
        if let Some(bits) = self.cells.get_mut(&cell) {
            *bits &= !dir.bit();
            if *bits == 0 {
                self.cells.remove(&cell);
            }
        }
        Some(cell)
    }

    /// An event of the root's watch: `name` is an entry of the root (none: the root itself).
    fn decode_root(&self, name: Option<&str>) -> Option<Change> {
        match name {
            None | Some(layout::ROOT_CONFIG) => Some(Change::Root),
            Some(name) if layout::is_valid_id(name) => {
                let cell = match self.cells.get_key_value(name) {
                    Some((cell, _)) => cell.clone(),
                    None => CellId::from(name),
                };
                Some(Change::Cell { cell })
            }
            // Staging and trash directories of cells being made or removed, `.pas/`.
            Some(_) => None,
        }
    }
}

/// What the caller's handle and the reader thread share.
struct Shared {
    /// The root, canonical when it could be resolved.
    root: PathBuf,
    sink: Sink,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held; were it poisoned, the tables are still
        // consistent enough for hints.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops watching and tells the caller to poll, once.
    fn lose(&self, reason: String) {
        {
            let mut state = self.lock();
            if state.watches.is_none() {
                return;
            }
            state.shut();
        }
        (self.sink)(Change::Lost { reason });
    }
}

/// The watcher over one root. Dropping it stops the watching.
pub struct Changes {
    shared: Arc<Shared>,
}

impl Changes {
    /// Starts watching nothing yet; `sink` gets the changes of what is subscribed later,
    /// called from a reader thread (or from the caller's own thread for [`Change::Lost`]).
    /// When file events are unavailable, `sink` gets `Lost` at once.
    pub(crate) fn start(store: &FsStore, sink: Sink) -> Changes {
        Changes::start_with(store, sink, None)
    }

    fn start_with(store: &FsStore, sink: Sink, max_watches: Option<usize>) -> Changes {
        #[cfg(not(test))]
        let _ = max_watches;
        let root = std::fs::canonicalize(store.root()).unwrap_or_else(|_| store.root().into());
        let inotify = Inotify::init();
        let shared = Arc::new(Shared {
            root,
            sink,
            state: Mutex::new(State {
                watches: inotify.as_ref().ok().map(Inotify::watches),
                root_wd: None,
                by_wd: HashMap::new(),
                cells: HashMap::new(),
                #[cfg(test)]
                max_watches,
            }),
        });
        let failed = match inotify {
            Ok(inotify) => {
                let reader = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name("pas-changes".into())
                    .spawn(move || read_loop(inotify, &reader))
                    .err()
            }
            Err(e) => Some(e),
        };
        if let Some(e) = failed {
            // `lose` says it only while watching; here watching never began.
            shared.lock().shut();
            (shared.sink)(Change::Lost {
                reason: format!("file events are unavailable ({e})"),
            });
        }
        Changes { shared }
    }

    /// Follows the root: cells appearing and leaving, `pas.toml`. Idempotent and cheap, so a
    /// caller may call it on every full reread (it picks up a root made since).
    pub fn watch_root(&self) {
        let mut state = self.shared.lock();
        if state.root_wd.is_some() {
            return;
        }
        match state.add(&self.shared.root) {
            Ok(wd) => state.root_wd = wd,
            Err(e) if out_of_watches(&e) => {
                drop(state);
                self.shared.lose(exhausted_reason(&self.shared.root));
            }
            // Refused (permissions): the caller's rereads cover the root.
            Err(_) => {}
        }
    }

    /// Follows a cell: its directory, `agents/`, `tasks/` and `logs/`. Idempotent and cheap
    /// once they are watched; directories missing now are tried again at the next call.
    /// An id that is not valid is ignored.
    pub fn watch_cell(&self, cell: &CellId) {
        if !layout::is_valid_id(cell) {
            return;
        }
        let mut state = self.shared.lock();
        let mut bits = state.cells.get(&**cell).copied().unwrap_or(0);
        if bits == ALL_DIRS || state.watches.is_none() {
            return;
        }
        // The id the tables already hold, if any, so that each id is stored once.
        let cell = match state.cells.get_key_value(&**cell) {
            Some((shared, _)) => shared.clone(),
            None => cell.clone(),
        };
        let dir = self.shared.root.join(&*cell);
        let mut exhausted = None;
        for kind in Dir::ALL {
            if bits & kind.bit() != 0 {
                continue;
            }
            let path = kind.sub().map_or_else(|| dir.clone(), |sub| dir.join(sub));
            match state.add(&path) {
                Ok(Some(wd)) => {
                    state
                        .by_wd
                        .insert(wd.get_watch_descriptor_id(), (kind, cell.clone()));
                    bits |= kind.bit();
                }
                Err(e) if out_of_watches(&e) => {
                    exhausted = Some(path);
                    break;
                }
                // Not there (yet), or refused (permissions): the caller's rereads cover it.
                Ok(None) | Err(_) => {}
            }
        }
        if bits != 0 {
            state.cells.insert(cell, bits);
        }
        drop(state);
        if let Some(path) = exhausted {
            self.shared.lose(exhausted_reason(&path));
        }
    }

    /// Whether change events stopped (or never started): the caller must poll.
    pub fn polling(&self) -> bool {
        self.shared.lock().watches.is_none()
    }
}

/// Whether the kernel refused a watch because the user's watches ran out
/// (`fs.inotify.max_user_watches`).
fn out_of_watches(e: &io::Error) -> bool {
    Errno::from_io_error(e) == Some(Errno::NOSPC)
}

/// What the operator is told when watches ran out, naming the knob that gets them back.
fn exhausted_reason(at: &Path) -> String {
    format!(
        "out of inotify watches (ENOSPC) at {} (raise fs.inotify.max_user_watches to get events back)",
        at.display()
    )
}

impl ChangeFeed for Changes {
    fn watch_root(&self) {
        Changes::watch_root(self);
    }

    fn watch_cell(&self, cell: &CellId) {
        Changes::watch_cell(self, cell);
    }

    fn polling(&self) -> bool {
        Changes::polling(self)
    }
}

impl Drop for Changes {
    fn drop(&mut self) {
        self.shared.lock().shut();
    }
}

/// The reader thread: reads kernel events, decodes them under the lock and hands the
/// changes to the sink outside it. Ends when watching stops or nobody listens.
fn read_loop(mut inotify: Inotify, shared: &Shared) {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut changes: Vec<Change> = Vec::new();
    loop {
        let events = match inotify.read_events_blocking(&mut buffer) {
            Ok(events) => events,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) =>
            {
                continue
            }
            Err(e) => {
                shared.lose(format!("file events stopped ({e})"));
                return;
            }
        };
        {
            let mut state = shared.lock();
            if state.watches.is_none() {
                return;
            }
            for event in events {
                // A rename over a document is several events; say it once.
                if let Some(change) = state.decode(event) {
                    if changes.last() != Some(&change) {
                        changes.push(change);
                    }
                }
            }
        }
        for change in changes.drain(..) {
            if !(shared.sink)(change) {
                shared.lock().shut();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FsStore;
    use std::sync::mpsc::{self, Receiver};
    use std::time::{Duration, Instant};

    /// A root in the temporary directory, removed when dropped.
    struct TempRoot(PathBuf);

    impl TempRoot {
        fn new() -> TempRoot {
            let dir = std::env::temp_dir().join(format!("pas-changes-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            TempRoot(dir)
        }

        /// A cell's directories made by hand, as the layout has them.
        fn cell(&self, id: &str) -> PathBuf {
            let dir = self.0.join(id);
            for sub in layout::CELL_SUBDIRS {
                std::fs::create_dir_all(dir.join(sub)).unwrap();
            }
            std::fs::write(dir.join(layout::CELL_FILE), "{}").unwrap();
            dir
        }
    }

    impl Drop for TempRoot {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Writes a file the way the store does: a hidden temporary file renamed over the name.
    fn write_by_rename(dir: &Path, name: &str, text: &str) {
        let tmp = dir.join(format!(".{name}.{}.0.tmp", std::process::id()));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }

    fn start(root: &TempRoot, max_watches: Option<usize>) -> (Changes, Receiver<Change>) {
        let (tx, rx) = mpsc::channel();
        let store = FsStore::new(&root.0);
        let changes =
            Changes::start_with(&store, Box::new(move |c| tx.send(c).is_ok()), max_watches);
        (changes, rx)
    }

    /// Takes changes until one satisfies `want` (returned), failing after a few seconds.
    fn wait_for(rx: &Receiver<Change>, what: &str, want: impl Fn(&Change) -> bool) -> Change {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(c) if want(&c) => return c,
                Ok(c) => seen.push(c),
                Err(_) => panic!("no {what} within 5 s; saw {seen:?}"),
            }
        }
    }

    /// Every change that arrived, after a marker write proved the earlier ones were read:
    /// changes are decoded in the kernel's order, so everything before the marker's change
    /// has been delivered when it arrives.
    fn drain_until_marker(rx: &Receiver<Change>, cell: &Path, id: &str) -> Vec<Change> {
        write_by_rename(&cell.join(layout::TASKS_DIR), "marker.json", "{}");
        let mut before = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Change::Task { cell, task }) if &*cell == id && task == "marker" => {
                    return before
                }
                Ok(c) => before.push(c),
                Err(_) => panic!("the marker never arrived; saw {before:?}"),
            }
        }
    }

    const CELL: &str = "3f1c2a9e-cell";

    #[test]
    fn an_agent_written_by_rename_is_one_agent_change() {
        let root = TempRoot::new();
        let cell = root.cell(CELL);
        let (changes, rx) = start(&root, None);
        changes.watch_cell(&CellId::from(CELL));
        assert!(!changes.polling());
        write_by_rename(&cell.join(layout::AGENTS_DIR), "agent_1.json", "{}");
        let got = wait_for(&rx, "agent change", |c| matches!(c, Change::Agent { .. }));
        assert_eq!(
            got,
            Change::Agent {
                cell: CELL.into(),
                agent: "agent_1".into()
            }
        );
        // The temporary file's own events were no change, and the rename came once.
        let rest = drain_until_marker(&rx, &cell, CELL);
        assert!(rest.is_empty(), "{rest:?}");
    }

    #[test]
    fn tasks_events_reservations_and_the_cell_file_are_told_apart() {
        let root = TempRoot::new();
        let cell = root.cell(CELL);
        let (changes, rx) = start(&root, None);
        changes.watch_cell(&CellId::from(CELL));
        let id = CellId::from(CELL);
        write_by_rename(&cell.join(layout::TASKS_DIR), "t-1.json", "{}");
        wait_for(&rx, "task change", |c| {
            *c == Change::Task {
                cell: id.clone(),
                task: "t-1".into(),
            }
        });
        std::fs::write(cell.join(layout::LOGS_DIR).join(layout::EVENTS_LOG), "{}\n").unwrap();
        wait_for(&rx, "events change", |c| {
            *c == Change::Events { cell: id.clone() }
        });
        write_by_rename(&cell, layout::RESERVATIONS_FILE, "{}");
        wait_for(&rx, "reservations change", |c| {
            *c == Change::Reservations { cell: id.clone() }
        });
        write_by_rename(&cell, layout::CELL_FILE, "{}");
        wait_for(&rx, "cell change", |c| {
            *c == Change::Cell { cell: id.clone() }
        });
    }

    #[test]
    fn a_new_cell_in_the_root_is_a_cell_change_and_odd_names_are_none() {
        let root = TempRoot::new();
        let watched = root.cell(CELL);
        let (changes, rx) = start(&root, None);
        changes.watch_root();
        changes.watch_cell(&CellId::from(CELL));
        // Names that are not ids, anywhere: no change.
        std::fs::create_dir(root.0.join(".creating-x-1")).unwrap();
        std::fs::write(watched.join(layout::AGENTS_DIR).join("notes.txt"), "x").unwrap();
        std::fs::write(watched.join(layout::AGENTS_DIR).join("-x.json"), "x").unwrap();
        std::fs::write(watched.join(layout::LOGS_DIR).join("agent_1.log"), "x").unwrap();
        let before = drain_until_marker(&rx, &watched, CELL);
        assert!(before.is_empty(), "{before:?}");
        // A cell made aside and renamed into place, as the store does.
        let staging = root.cell(".creating-new-1");
        std::fs::rename(&staging, root.0.join("new-cell")).unwrap();
        wait_for(&rx, "the new cell", |c| {
            *c == Change::Cell {
                cell: "new-cell".into(),
            }
        });
        std::fs::write(root.0.join(layout::ROOT_CONFIG), "").unwrap();
        wait_for(&rx, "root change", |c| *c == Change::Root);
        // Its agents are followed once it is subscribed.
        changes.watch_cell(&CellId::from("new-cell"));
        write_by_rename(&root.0.join("new-cell/agents"), "a.json", "{}");
        wait_for(&rx, "the new cell's agent", |c| {
            *c == Change::Agent {
                cell: "new-cell".into(),
                agent: "a".into(),
            }
        });
    }

    #[test]
    fn a_kernel_queue_overflow_asks_for_a_rescan() {
        let limit: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(16_384);
        if limit > 100_000 {
            eprintln!("max_queued_events is {limit}: too many files to overflow it here");
            return;
        }
        let root = TempRoot::new();
        let cell = root.cell(CELL);
        let (changes, rx) = start(&root, None);
        changes.watch_cell(&CellId::from(CELL));
        {
            // The reader cannot decode while the tables are held: the kernel's queue fills.
            let _held = changes.shared.lock();
            let logs = cell.join(layout::LOGS_DIR);
            for i in 0..=limit {
                std::fs::File::create(logs.join(format!("f{i}.log"))).unwrap();
            }
        }
        wait_for(&rx, "a rescan", |c| *c == Change::Rescan);
    }

    #[test]
    fn invalid_cell_ids_are_never_watched() {
        let root = TempRoot::new();
        let (changes, _rx) = start(&root, None);
        for id in ["..", "../x", "a/b", ".pas", ""] {
            changes.watch_cell(&CellId::from(id));
        }
        assert!(changes.shared.lock().by_wd.is_empty());
    }

    #[test]
    fn a_removed_cell_is_forgotten_and_its_successor_watched() {
        let root = TempRoot::new();
        let cell = root.cell(CELL);
        let (changes, rx) = start(&root, None);
        let id = CellId::from(CELL);
        changes.watch_cell(&id);
        assert_eq!(changes.shared.lock().cells.get(CELL), Some(&ALL_DIRS));
        // Removed as the store does: renamed aside, then deleted.
        let trash = root.0.join(".removing-x");
        std::fs::rename(&cell, &trash).unwrap();
        wait_for(&rx, "the cell moving", |c| {
            *c == Change::Cell { cell: id.clone() }
        });
        std::fs::remove_dir_all(&trash).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while changes.shared.lock().cells.contains_key(CELL) {
            assert!(
                Instant::now() < deadline,
                "the removed cell's watches stayed"
            );
            let _ = rx.recv_timeout(Duration::from_millis(50));
        }
        assert!(changes.shared.lock().by_wd.is_empty());
        // A new cell of the same id is watched afresh.
        let cell = root.cell(CELL);
        changes.watch_cell(&id);
        write_by_rename(&cell.join(layout::AGENTS_DIR), "b.json", "{}");
        wait_for(&rx, "the successor's agent", |c| {
            *c == Change::Agent {
                cell: id.clone(),
                agent: "b".into(),
            }
        });
    }

    #[test]
    fn out_of_watches_says_lost_once_and_polls() {
        let root = TempRoot::new();
        root.cell("c1");
        root.cell("c2");
        // The root and one cell's four directories, then ENOSPC.
        let (changes, rx) = start(&root, Some(5));
        changes.watch_root();
        changes.watch_cell(&CellId::from("c1"));
        assert!(!changes.polling());
        changes.watch_cell(&CellId::from("c2"));
        assert!(changes.polling());
        // Said at once, from the subscribing call.
        let Ok(Change::Lost { reason }) = rx.try_recv() else {
            panic!("no Lost change")
        };
        assert!(reason.contains("ENOSPC"), "{reason}");
        assert!(reason.contains("fs.inotify.max_user_watches"), "{reason}");
        // Later subscriptions do nothing and say nothing more.
        changes.watch_cell(&CellId::from("c1"));
        changes.watch_root();
        assert!(changes.shared.lock().by_wd.is_empty());
        let more: Vec<Change> = rx.try_iter().collect();
        assert!(more.is_empty(), "Lost is said once: {more:?}");
    }

    #[test]
    fn dropping_ends_the_reader_and_closes_the_descriptor() {
        let root = TempRoot::new();
        root.cell(CELL);
        let (changes, _rx) = start(&root, None);
        changes.watch_root();
        changes.watch_cell(&CellId::from(CELL));
        let shared = Arc::downgrade(&changes.shared);
        drop(changes);
        // The reader held the other reference; it lets go when it ends.
        let deadline = Instant::now() + Duration::from_secs(5);
        while shared.upgrade().is_some() {
            assert!(
                Instant::now() < deadline,
                "the reader thread outlived its watcher"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn ids_are_shared_with_the_caller() {
        let root = TempRoot::new();
        let cell = root.cell(CELL);
        let (changes, rx) = start(&root, None);
        let id = CellId::from(CELL);
        changes.watch_cell(&id);
        write_by_rename(&cell.join(layout::AGENTS_DIR), "a.json", "{}");
        let Change::Agent { cell, .. } = wait_for(&rx, "agent", |_| true) else {
            panic!("not an agent change")
        };
        assert!(Arc::ptr_eq(&cell, &id), "one allocation per cell id");
    }
}
