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
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};

use crate::clock;
use crate::error::{Error, Kind, Result};
use crate::ops::revive::placement::Nodes;
use crate::ops::revive::{self, Action, Options};
use crate::process;
use crate::store::changes::{CellId, Change};
use crate::store::Store;

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Seconds between full reconciles of the root.
    pub interval: f64,
    /// One pass over everything, then exit.
    pub once: bool,
    /// What agents it restarts are allowed.
    pub launch: crate::ops::supervisor::Launch,
    /// On a shared store, the TTL of this node's key (`nodes/<host>`).
    pub node_ttl: StdDuration,
}

/// What the loop reports as it goes.
pub enum Report<'a> {
    /// A line about the loop itself.
    Note(String),
    /// Something a revive pass did.
    Action(&'a Action),
    /// A problem with one cell, or with one of its agents (reported once per distinct
    /// problem, while it lasts).
    Problem {
        /// The cell.
        cell: &'a str,
        /// What is wrong.
        message: &'a str,
    },
}

enum Msg {
    Change(Change),
    Stop,
}

/// A cell id, stored once and shared by every table that mentions the cell (the watcher's
/// included: [`ChangeFeed::watch_cell`](crate::store::changes::ChangeFeed::watch_cell) keeps the same allocation).
type Id = CellId;

/// What the loop remembers per cell, and nothing more: the memory of a watch over a large
/// root is a few hundred bytes per cell (about 40 per agent), not the cell's documents.
#[derive(Default)]
struct CellState {
    /// When a revive pass is next due.
    due: Option<DateTime<Utc>>,
    /// Hashes of the agent ids the last pass saw, sorted: a new agent file wakes the loop,
    /// a beat (a rename over a known agent's file) does not.
    known: Vec<u64>,
}

fn id_hash(id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

/// The canonical shared id of a cell name: the key of the loop's table when the cell is in
/// it, so no id is stored twice.
fn intern(cells: &HashMap<Id, CellState>, name: &str) -> Id {
    match cells.get_key_value(name) {
        Some((id, _)) => id.clone(),
        None => Id::from(name),
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
                    store.location(),
                    holder.map_or("unknown".into(), |p| p.to_string())
                ),
            )
            .hint(
                "one watch per root; stop that one first, or use `pas revive` for a single pass",
            )),
        };
    // On a shared store this watch is one node of several: its key lives while it runs
    // (revoked when it ends, gone a TTL after it dies), and it handles the agents placement
    // gives it. The file store has no nodes: every agent is this watch's.
    let here = crate::host::name();
    let node_key = store.keep_node(&here, opts.node_ttl)?;
    let mut nodes = node_key.is_some().then(|| Nodes {
        here: here.clone(),
        alive: HashSet::new(),
        gone_since: HashMap::new(),
        since: clock::now(),
    });
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
    let changes = store.changes(Box::new(move |c| tx.send(Msg::Change(c)).is_ok()));
    changes.watch_root();

    let interval = Duration::milliseconds((opts.interval.max(0.1) * 1000.0) as i64);
    let mut cells: HashMap<Id, CellState> = HashMap::new();
    let mut reported: HashSet<(Id, String)> = HashSet::new();
    let mut dirty: HashSet<Id> = HashSet::new();
    let mut next_reconcile = clock::now();
    let mut stopping = false;
    report(Report::Note(match &nodes {
        Some(_) => format!(
            "pas watch: node {here} looking after {} (pid {})",
            store.location(),
            std::process::id()
        ),
        None => format!(
            "pas watch: looking after {} (pid {})",
            store.location(),
            std::process::id()
        ),
    }));
    let mut placed: Option<Arc<Nodes>> = None;

    loop {
        process::reap_children();
        let now = clock::now();
        let mut todo: Vec<Id> = std::mem::take(&mut dirty).into_iter().collect();
        if now >= next_reconcile {
            // A root made (or remade) since is followed from here.
            changes.watch_root();
            if let Some(view) = nodes.as_mut() {
                match store.nodes() {
                    Ok(Some(alive)) => view.observe(alive.into_iter().collect(), now),
                    Ok(None) => {}
                    // The passes fail the same way; the view stays as last seen.
                    Err(e) => report(Report::Note(format!(
                        "cannot list the nodes: {}",
                        e.message
                    ))),
                }
                placed = Some(Arc::new(view.clone()));
            }
            let present: HashSet<Id> = store
                .cell_ids()
                .unwrap_or_default()
                .iter()
                .map(|c| intern(&cells, c))
                .collect();
            cells.retain(|c, _| present.contains(c));
            for id in present {
                cells.entry(id.clone()).or_default();
                changes.watch_cell(&id);
                todo.push(id);
            }
            // What supervisors killed with SIGKILL left: empty groups, stale TMPDIRs.
            for line in crate::ops::limits::sweep() {
                report(Report::Note(line));
            }
            let poll = if changes.polling() {
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
            let result = revive::pass_cell_each(
                store,
                cell,
                &Options {
                    launch: opts.launch,
                    nodes: placed.clone(),
                    ..Options::default()
                },
                clock::now(),
            );
            let state = cells.entry(cell.clone()).or_default();
            match result {
                Ok(pass) => {
                    for a in &pass.actions {
                        report(Report::Action(a));
                    }
                    // A hair after the deadline, so the state has really changed then.
                    state.due = pass.next_due.map(|t| t + Duration::milliseconds(5));
                    // The cell's other agents were handled; each agent that was not is a
                    // problem of its own, reported once while it lasts.
                    reported
                        .retain(|(c, m)| c != cell || pass.errors.iter().any(|e| &e.message == m));
                    for e in &pass.errors {
                        if reported.insert((cell.clone(), e.message.clone())) {
                            report(Report::Problem {
                                cell,
                                message: &e.message,
                            });
                            record_problem(store, cell, e);
                        }
                    }
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
                        record_problem(store, cell, &e);
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
            let change = match m {
                Msg::Stop => {
                    stopping = true;
                    continue;
                }
                Msg::Change(change) => change,
            };
            match change {
                // Events were lost, or the root-wide policies changed: look at everything.
                Change::Rescan | Change::Root => next_reconcile = clock::now(),
                Change::Lost { reason } => {
                    report(Report::Note(format!("{reason}; falling back to polling")));
                    next_reconcile = clock::now();
                }
                // A new (or removed) cell, its cell.json, or a directory of it made anew:
                // follow what is there now and look.
                Change::Cell { cell } => {
                    let id = intern(&cells, &cell);
                    cells.entry(id.clone()).or_default();
                    changes.watch_cell(&id);
                    dirty.insert(id);
                }
                // A beat is a rename over a known agent's file: its deadline already says
                // when to look. A new agent is looked at now.
                Change::Agent { cell, agent } => {
                    let known = cells
                        .get(&cell)
                        .is_some_and(|s| s.known.binary_search(&id_hash(&agent)).is_ok());
                    if !known {
                        dirty.insert(cell);
                    }
                }
                // State changes (a process exit, a status change) are appended to the events
                // log; beats are not, so deaths wake the loop and beats do not.
                Change::Task { cell, .. } | Change::Events { cell } => {
                    dirty.insert(cell);
                }
                Change::Reservations { .. } => {}
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

/// Records a problem of a cell in its events log, once per watch while it lasts. Best
/// effort: the problem may be the log itself or the cell's lock, and the watch has
/// reported it already.
fn record_problem(store: &dyn Store, cell: &str, e: &crate::error::Error) {
    let event = crate::store::events::NewEvent::new(
        crate::store::events::Level::Error,
        crate::model::EventKind::CellProblem,
        e.message.clone(),
    )
    .details(serde_json::json!({ "fix": e.hint }));
    let _ = crate::store::events::record_one(store, cell, event, clock::now());
}
