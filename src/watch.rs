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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use notify::{RecursiveMode, Watcher};

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

enum Msg {
    Fs(notify::Result<notify::Event>),
    Stop,
}

/// The cell, subdirectory and file a path under the root names.
pub(crate) fn cell_of(
    root: &Path,
    path: &Path,
) -> Option<(String, Option<String>, Option<String>)> {
    let rel = path.strip_prefix(root).ok()?;
    let mut parts = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    let cell = parts.next()?;
    Some((cell, parts.next(), parts.next()))
}

/// The directories watched for changes in cells (shared with `pas top`).
pub(crate) struct Watches {
    watcher: Option<notify::RecommendedWatcher>,
    watched: HashSet<PathBuf>,
    pub(crate) polling: bool,
}

impl Watches {
    /// Watches with this watcher; none means polling.
    pub(crate) fn new(watcher: Option<notify::RecommendedWatcher>) -> Watches {
        Watches {
            polling: watcher.is_none(),
            watcher,
            watched: HashSet::new(),
        }
    }

    /// Watches one directory (not recursively); out of watches, switches to polling.
    pub(crate) fn add(&mut self, path: &Path, report: &mut dyn FnMut(Report<'_>)) {
        if self.polling || self.watched.contains(path) || !path.is_dir() {
            return;
        }
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        match w.watch(path, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.watched.insert(path.to_path_buf());
            }
            Err(e) => {
                let no_space = matches!(e.kind, notify::ErrorKind::MaxFilesWatch)
                    || matches!(&e.kind, notify::ErrorKind::Io(io) if io.raw_os_error() == Some(28));
                if no_space {
                    report(Report::Note(format!(
                        "out of inotify watches (ENOSPC) at {}; falling back to polling (raise fs.inotify.max_user_watches to get events back)",
                        path.display()
                    )));
                    self.polling = true;
                    self.watcher = None;
                    self.watched.clear();
                }
            }
        }
    }

    /// Watches a cell's directory, `agents/`, `tasks/` and `logs/`.
    pub(crate) fn add_cell(&mut self, root: &Path, cell: &str, report: &mut dyn FnMut(Report<'_>)) {
        let dir = root.join(cell);
        self.add(&dir, report);
        self.add(&dir.join("agents"), report);
        self.add(&dir.join("tasks"), report);
        // State changes (a process exit, a status change) are appended to the events log;
        // beats are not, so this wakes the loop for deaths without waking it for beats.
        self.add(&dir.join("logs"), report);
    }
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
    let fs_tx = tx.clone();
    let watcher = notify::recommended_watcher(move |res| {
        let _ = fs_tx.send(Msg::Fs(res));
    });
    let mut watches = Watches::new(watcher.ok());
    if watches.polling {
        report(Report::Note("file events are unavailable; polling".into()));
        watches.polling = true;
    }
    watches.add(&root, report);

    let interval = Duration::milliseconds((opts.interval.max(0.1) * 1000.0) as i64);
    let mut due: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let mut known_agents: HashMap<String, HashSet<String>> = HashMap::new();
    let mut reported: HashSet<(String, String)> = HashSet::new();
    let mut dirty: BTreeSet<String> = BTreeSet::new();
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
        let mut cells: BTreeSet<String> = std::mem::take(&mut dirty);
        if now >= next_reconcile {
            let ids = store.cell_ids().unwrap_or_default();
            due.retain(|c, _| ids.contains(c));
            known_agents.retain(|c, _| ids.contains(c));
            for id in ids {
                watches.add_cell(&root, &id, report);
                cells.insert(id);
            }
            let poll = if watches.polling {
                interval.min(Duration::seconds(2))
            } else {
                interval
            };
            next_reconcile = now + poll;
        }
        cells.extend(
            due.iter()
                .filter(|(_, t)| **t <= now)
                .map(|(c, _)| c.clone()),
        );
        for cell in &cells {
            if !store.has_cell(cell) {
                due.remove(cell);
                continue;
            }
            match revive::pass_cell(store, cell, &Options::default(), clock::now()) {
                Ok(pass) => {
                    for a in &pass.actions {
                        report(Report::Action(a));
                    }
                    match pass.next_due {
                        // A hair after the deadline, so the state has really changed then.
                        Some(t) => due.insert(cell.clone(), t + Duration::milliseconds(5)),
                        None => due.remove(cell),
                    };
                    reported.retain(|(c, _)| c != cell);
                    let ids = store
                        .list(cell, crate::store::Collection::Agents)
                        .unwrap_or_default();
                    known_agents.insert(cell.clone(), ids.into_iter().collect());
                }
                Err(e) => {
                    if reported.insert((cell.clone(), e.message.clone())) {
                        report(Report::Problem {
                            cell,
                            message: &e.message,
                        });
                    }
                    due.insert(cell.clone(), clock::now() + interval);
                }
            }
        }
        if opts.once || stopping {
            break;
        }
        let wake = due
            .values()
            .copied()
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
                Msg::Fs(Err(e)) => {
                    if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
                        watches.add(&root, report);
                    }
                    dirty.extend(due.keys().cloned());
                }
                Msg::Fs(Ok(event)) => {
                    // Reading a file is an event too (open, close); only changes matter, or
                    // every pass would wake the next one.
                    if matches!(event.kind, notify::EventKind::Access(_)) {
                        continue;
                    }
                    if event.need_rescan() {
                        next_reconcile = clock::now();
                        continue;
                    }
                    for path in &event.paths {
                        let Some((cell, sub, file)) = cell_of(&root, path) else {
                            continue;
                        };
                        if cell.starts_with('.') {
                            continue;
                        }
                        match (sub.as_deref(), file.as_deref()) {
                            // A new directory under the root: a cell being made.
                            (None, _) => {
                                watches.add_cell(&root, &cell, report);
                                dirty.insert(cell);
                            }
                            (Some("agents"), Some(name)) => {
                                let id = name.strip_suffix(".json").unwrap_or("");
                                let known = known_agents.get(&cell).is_some_and(|k| k.contains(id));
                                if !id.is_empty() && !name.starts_with('.') && !known {
                                    dirty.insert(cell);
                                }
                            }
                            (Some("logs"), Some("events.jsonl"))
                            | (Some("cell.json"), _)
                            | (Some("tasks"), _) => {
                                dirty.insert(cell);
                            }
                            (Some("agents"), None) => {
                                watches.add_cell(&root, &cell, report);
                                dirty.insert(cell);
                            }
                            _ => {}
                        }
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
