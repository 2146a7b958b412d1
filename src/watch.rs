//! `pas watch`: the long-running Lazarus loop.
//!
//! One instance per root (a lock recording the holder's pid). It runs a revive pass over a
//! cell when something may need doing there: at the cell's next deadline (an agent turning
//! late/down/dead, a backoff or cooldown ending, a revival's first-beat deadline), when the
//! filesystem says the cell changed (a new cell, a new agent, task or cell changes), and in a
//! periodic reconcile of the whole root, because network filesystems deliver no events.
//! Events are hints only: every decision re-reads the files under the cell's revive lock.
//! Beats of known agents wake nothing: the agent's deadline already says when to look.
//! Running out of inotify watches is reported and the loop falls back to polling. On SIGTERM
//! or SIGINT it finishes the pass in hand and exits 0.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::rc::Rc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use inotify::{EventMask, Inotify, WatchMask};

use crate::clock;
use crate::error::{Error, Kind, Result};
use crate::process;
use crate::revive::{self, Action, Options};
use crate::store::Store;

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Seconds between full reconciles of the root.
    pub interval: f64,
    /// One pass over everything, then exit.
    pub once: bool,
}

/// What the loop reports as it goes.
pub enum Report<'a> {
    /// A line about the loop itself.
    Note(String),
    /// Something a revive pass did.
    Action(&'a Action),
    /// A problem with one cell (reported once per distinct problem).
    Problem {
        /// The cell.
        cell: &'a str,
        /// What is wrong.
        message: &'a str,
    },
}

/// One inotify event, as the reader thread hands it over: the watch, what happened, and the
/// name of the entry (none for an event about the watched directory itself).
struct FsEvent {
    wd: i32,
    mask: EventMask,
    name: Option<String>,
}

enum Msg {
    Fs(FsEvent),
    FsFailed(String),
    Stop,
}

/// A cell id, stored once and shared by every table that mentions the cell.
type Id = Rc<str>;

/// What the loop remembers per cell, and nothing more: the memory of a watch over a large
/// root is a few hundred bytes per cell (about 40 per agent), not the cell's documents.
#[derive(Default)]
struct CellState {
    /// When a revive pass is next due.
    due: Option<DateTime<Utc>>,
    /// Hashes of the agent ids the last pass saw, sorted: a new agent file wakes the loop,
    /// a beat (a rename over a known agent's file) does not.
    known: Vec<u64>,
    /// Which of the cell's directories are watched ([`DIRS`] bits).
    watched: u8,
}

fn id_hash(id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

/// Which directory a watch is on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Root,
    Cell,
    Agents,
    Tasks,
    Logs,
}

/// The directories of a cell that are watched, with their bit in [`CellState::watched`].
/// State changes (a process exit, a status change) are appended to the events log; beats
/// are not, so watching `logs/` wakes the loop for deaths without waking it for beats.
const DIRS: [(Dir, &str, u8); 4] = [
    (Dir::Cell, "", 1),
    (Dir::Agents, "agents", 2),
    (Dir::Tasks, "tasks", 4),
    (Dir::Logs, "logs", 8),
];

/// Changes only: reading a file (open, access, close without writing) is no event here, so
/// the loop's own reads never wake it and never queue up while a pass runs.
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
}

struct Watches {
    inotify: Option<inotify::Watches>,
    /// Watch descriptor -> the directory and its cell (none for the root).
    by_wd: HashMap<i32, (Dir, Option<Id>)>,
    polling: bool,
}

impl Watches {
    fn add(
        &mut self,
        path: &Path,
        what: (Dir, Option<Id>),
        report: &mut dyn FnMut(Report<'_>),
    ) -> bool {
        if self.polling || !path.is_dir() {
            return false;
        }
        let Some(w) = self.inotify.as_mut() else {
            return false;
        };
        match w.add(path, watch_mask()) {
            Ok(wd) => {
                self.by_wd.insert(wd.get_watch_descriptor_id(), what);
                true
            }
            Err(e) if e.raw_os_error() == Some(28) => {
                report(Report::Note(format!(
                    "out of inotify watches (ENOSPC) at {}; falling back to polling (raise fs.inotify.max_user_watches to get events back)",
                    path.display()
                )));
                self.polling = true;
                self.inotify = None;
                self.by_wd = HashMap::new();
                false
            }
            Err(_) => false,
        }
    }

    fn add_cell(
        &mut self,
        root: &Path,
        cell: &Id,
        state: &mut CellState,
        report: &mut dyn FnMut(Report<'_>),
    ) {
        let dir = root.join(&**cell);
        for (kind, sub, bit) in DIRS {
            if state.watched & bit != 0 {
                continue;
            }
            let path = if sub.is_empty() {
                dir.clone()
            } else {
                dir.join(sub)
            };
            if self.add(&path, (kind, Some(cell.clone())), report) {
                state.watched |= bit;
            }
        }
    }
}

/// The canonical shared id of a cell name.
fn intern(ids: &mut HashSet<Id>, name: &str) -> Id {
    if let Some(id) = ids.get(name) {
        return id.clone();
    }
    let id: Id = Rc::from(name);
    ids.insert(id.clone());
    id
}

/// Runs the loop until a signal (or after one pass with `once`).
pub fn run(
    store: &dyn Store,
    opts: &WatchOptions,
    report: &mut dyn FnMut(Report<'_>),
) -> Result<()> {
    let _lock =
        match store.try_lock_root("watch")? {
            Ok(guard) => guard,
            Err(holder) => return Err(Error::new(
                Kind::Busy,
                format!(
                    "pas watch is already running for {} (pid {})",
                    store.root().display(),
                    holder.map_or("unknown".into(), |p| p.to_string())
                ),
            )
            .hint(
                "one watch per root; stop that one first, or use `pas revive` for a single pass",
            )),
        };
    let root = std::fs::canonicalize(store.root()).unwrap_or_else(|_| store.root().to_path_buf());
    let (tx, rx) = mpsc::channel::<Msg>();
    let stop_tx = tx.clone();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(|e| Error::failure(format!("cannot listen for signals: {e}")))?;
    let signal_handle = signals.handle();
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let _ = stop_tx.send(Msg::Stop);
        }
    });
    let mut watches = Watches {
        inotify: None,
        by_wd: HashMap::new(),
        polling: false,
    };
    match Inotify::init() {
        Ok(mut inotify) => {
            watches.inotify = Some(inotify.watches());
            let fs_tx = tx.clone();
            std::thread::spawn(move || {
                let mut buffer = vec![0u8; 64 * 1024];
                loop {
                    let events = match inotify.read_events_blocking(&mut buffer) {
                        Ok(events) => events,
                        Err(e) => {
                            let _ = fs_tx.send(Msg::FsFailed(e.to_string()));
                            return;
                        }
                    };
                    for e in events {
                        let event = FsEvent {
                            wd: e.wd.get_watch_descriptor_id(),
                            mask: e.mask,
                            name: e.name.map(|n| n.to_string_lossy().into_owned()),
                        };
                        if fs_tx.send(Msg::Fs(event)).is_err() {
                            return;
                        }
                    }
                }
            });
        }
        Err(_) => {
            report(Report::Note("file events are unavailable; polling".into()));
            watches.polling = true;
        }
    }
    watches.add(&root, (Dir::Root, None), report);

    let interval = Duration::milliseconds((opts.interval.max(0.1) * 1000.0) as i64);
    let mut ids: HashSet<Id> = HashSet::new();
    let mut cells: HashMap<Id, CellState> = HashMap::new();
    let mut reported: HashSet<(Id, String)> = HashSet::new();
    let mut dirty: HashSet<Id> = HashSet::new();
    let mut next_reconcile = clock::now();
    let mut stopping = false;
    report(Report::Note(format!(
        "pas watch: looking after {} (pid {})",
        root.display(),
        std::process::id()
    )));

    loop {
        process::reap_children();
        let now = clock::now();
        let mut todo: Vec<Id> = std::mem::take(&mut dirty).into_iter().collect();
        if now >= next_reconcile {
            let present: HashSet<Id> = store
                .cell_ids()
                .unwrap_or_default()
                .iter()
                .map(|c| intern(&mut ids, c))
                .collect();
            cells.retain(|c, _| present.contains(c));
            ids.retain(|c| present.contains(c));
            for id in present {
                let state = cells.entry(id.clone()).or_default();
                watches.add_cell(&root, &id, state, report);
                todo.push(id);
            }
            let poll = if watches.polling {
                interval.min(Duration::seconds(2))
            } else {
                interval
            };
            next_reconcile = now + poll;
        }
        todo.extend(
            cells
                .iter()
                .filter(|(_, s)| s.due.is_some_and(|t| t <= now))
                .map(|(c, _)| c.clone()),
        );
        todo.sort();
        todo.dedup();
        for cell in &todo {
            if !store.has_cell(cell) {
                if let Some(state) = cells.get_mut(cell) {
                    state.due = None;
                }
                continue;
            }
            let result = revive::pass_cell(store, cell, &Options::default(), clock::now());
            let state = cells.entry(cell.clone()).or_default();
            match result {
                Ok(pass) => {
                    for a in &pass.actions {
                        report(Report::Action(a));
                    }
                    // A hair after the deadline, so the state has really changed then.
                    state.due = pass.next_due.map(|t| t + Duration::milliseconds(5));
                    reported.retain(|(c, _)| c != cell);
                    let mut known: Vec<u64> = store
                        .list(cell, crate::store::Collection::Agents)
                        .unwrap_or_default()
                        .iter()
                        .map(|a| id_hash(a))
                        .collect();
                    known.sort_unstable();
                    known.shrink_to_fit();
                    state.known = known;
                }
                Err(e) => {
                    if reported.insert((cell.clone(), e.message.clone())) {
                        report(Report::Problem {
                            cell,
                            message: &e.message,
                        });
                    }
                    state.due = Some(clock::now() + interval);
                }
            }
        }
        if opts.once || stopping {
            break;
        }
        let wake = cells
            .values()
            .filter_map(|s| s.due)
            .min()
            .map_or(next_reconcile, |d| d.min(next_reconcile));
        let wait = (wake - clock::now()).num_milliseconds().clamp(0, 3_600_000) as u64;
        let first = match rx.recv_timeout(StdDuration::from_millis(wait)) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut messages: Vec<Msg> = first.into_iter().collect();
        messages.extend(rx.try_iter());
        for m in messages {
            match m {
                Msg::Stop => stopping = true,
                Msg::FsFailed(e) => {
                    report(Report::Note(format!("file events stopped ({e}); polling")));
                    watches.polling = true;
                    watches.inotify = None;
                    watches.by_wd = HashMap::new();
                    next_reconcile = clock::now();
                }
                Msg::Fs(event) => {
                    if event.mask.contains(EventMask::Q_OVERFLOW) {
                        // Events were lost: look at everything again.
                        next_reconcile = clock::now();
                        continue;
                    }
                    let Some((dir, cell)) = watches.by_wd.get(&event.wd).cloned() else {
                        continue;
                    };
                    if event.mask.contains(EventMask::IGNORED) {
                        // The directory is gone (or unwatched): forget the watch, so a
                        // reconcile can watch its successor.
                        watches.by_wd.remove(&event.wd);
                        if let Some(state) = cell.as_ref().and_then(|c| cells.get_mut(c)) {
                            let bit = DIRS.iter().find(|d| d.0 == dir).map_or(0, |d| d.2);
                            state.watched &= !bit;
                        }
                        continue;
                    }
                    let name = event.name.as_deref();
                    if name.is_some_and(|n| n.starts_with('.')) {
                        continue;
                    }
                    match (dir, cell, name) {
                        // A new directory under the root: a cell being made.
                        (Dir::Root, _, Some(name)) => {
                            let id = intern(&mut ids, name);
                            let state = cells.entry(id.clone()).or_default();
                            watches.add_cell(&root, &id, state, report);
                            dirty.insert(id);
                        }
                        (Dir::Root, _, None) => {}
                        (Dir::Agents, Some(cell), Some(name)) => {
                            let id = name.strip_suffix(".json").unwrap_or("");
                            let known = cells
                                .get(&cell)
                                .is_some_and(|s| s.known.binary_search(&id_hash(id)).is_ok());
                            if !id.is_empty() && !known {
                                dirty.insert(cell);
                            }
                        }
                        (Dir::Cell, Some(cell), Some("agents"))
                        | (Dir::Agents, Some(cell), None) => {
                            let state = cells.entry(cell.clone()).or_default();
                            watches.add_cell(&root, &cell, state, report);
                            dirty.insert(cell);
                        }
                        (Dir::Logs, Some(cell), Some("events.jsonl"))
                        | (Dir::Cell, Some(cell), Some("cell.json") | Some("tasks") | None)
                        | (Dir::Tasks, Some(cell), _) => {
                            dirty.insert(cell);
                        }
                        _ => {}
                    }
                }
            }
        }
        if stopping {
            // Finish with a last look at what was pending, then leave.
            continue;
        }
    }
    signal_handle.close();
    report(Report::Note("pas watch: stopped".into()));
    Ok(())
}
