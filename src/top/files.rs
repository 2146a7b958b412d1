//! The directories `pas top` watches for changes, so it re-reads only when a file changed.
//!
//! `notify` rather than raw inotify (as `pas watch` uses): top wants "something changed
//! under this cell", not per-file bookkeeping, and it is one person's screen, not 100,000
//! agents' worth of state.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use notify::{RecursiveMode, Watcher};

/// The directories watched; out of inotify watches, top falls back to its periodic reload.
pub(crate) struct Watches {
    watcher: Option<notify::RecommendedWatcher>,
    watched: HashSet<PathBuf>,
}

impl Watches {
    /// Watches with this watcher; none means periodic reloads only.
    pub(crate) fn new(watcher: Option<notify::RecommendedWatcher>) -> Watches {
        Watches {
            watcher,
            watched: HashSet::new(),
        }
    }

    /// Watches one directory (not recursively). Out of watches (ENOSPC), stops watching:
    /// the periodic reload still keeps the screen current, only slower.
    pub(crate) fn add(&mut self, path: &Path) {
        if self.watched.contains(path) || !path.is_dir() {
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
                    self.watcher = None;
                    self.watched.clear();
                }
            }
        }
    }

    /// Watches a cell's directory, `agents/`, `tasks/` and `logs/`.
    pub(crate) fn add_cell(&mut self, root: &Path, cell: &str) {
        let dir = root.join(cell);
        self.add(&dir);
        for sub in ["agents", "tasks", "logs"] {
            self.add(&dir.join(sub));
        }
    }
}
