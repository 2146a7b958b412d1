//! The running `pas top`: terminal setup and restore, the event loop, the background loader
//! and the actions.
//!
//! The screen thread never touches the disk. A loader thread reads the fleet once, then
//! reads again only the cells the store's change notifications name (at most about twice a
//! second and never faster than twice the last read took), the cells whose health or
//! restart is due by the clock (looked at every few seconds; ages count on from each
//! cell's read), and, once a minute, every cell; without change notifications every read is
//! of the whole fleet. It also follows the selected cell's `logs/events.jsonl`; actions run
//! on threads of their own. So a slow disk or a 10,000-agent root slows what is shown,
//! never the keys, and one agent's beat reads one cell, not the fleet.
//!
//! The terminal is restored on every way out: `q`, Ctrl-C, SIGTERM/SIGINT/SIGHUP (checked
//! between frames), an error (a guard's `Drop`) and a panic (a hook that restores first).

use std::collections::BTreeSet;
use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::Terminal;

use super::model::{Action, Cells, Input, Level, Model, Outcome, Snapshot};
use super::view::{self, Palette};
use crate::clock;
use crate::error::{Error, Result};
use crate::ops::cell::{self, CellStatus};
use crate::ops::revive;
use crate::process::{self, StopOutcome};
use crate::store::changes::{CellId, Change, ChangeFeed};
use crate::store::events::{self, Event};
use crate::store::{FsStore, Store};

/// The clock's turn this often: cells whose health or restart is due by now are read again
/// (ages count on from each cell's read without one).
const RELOAD_EVERY: Duration = Duration::from_secs(5);
/// Every cell is read again this often anyway: the one change no file event reports is a
/// process that died with no supervisor left to write it down.
const FULL_EVERY: Duration = Duration::from_secs(60);
/// Re-reads after file events no more often than this.
const MIN_GAP: Duration = Duration::from_millis(500);
/// Redraws at least this often (heartbeat ages tick).
const TICK: Duration = Duration::from_secs(1);

/// What `pas top` is asked to show.
#[derive(Debug, Clone)]
pub struct Options {
    /// The missions root.
    pub root: PathBuf,
    /// Only this cell (its id).
    pub only: Option<String>,
    /// Colours.
    pub palette: Palette,
    /// What agents revived from the screen are allowed (the command line's).
    pub launch: crate::ops::supervisor::Launch,
}

enum ToLoader {
    /// Files changed.
    Changed(Change),
    /// Follow this cell's events.
    Follow(Option<String>),
    /// Read again now (after an action).
    Reload,
}

enum FromBackground {
    Snapshot(Snapshot),
    Failed(String),
    Events {
        cell: String,
        events: Vec<Event>,
        reset: bool,
    },
    Done(String, Level),
}

/// Puts the terminal back: raw mode off, the normal screen, the cursor shown. Safe to call
/// more than once.
fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(io::stdout(), terminal::LeaveAlternateScreen, cursor::Show);
}

/// Restores the terminal when dropped, whichever way `run` returns.
struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
    }
}

/// Runs `pas top` until `q`, Ctrl-C or a terminating signal.
pub fn run(opts: Options) -> Result<()> {
    if !io::stdout().is_terminal() || !io::stdin().is_terminal() {
        return Err(Error::usage("pas top needs a terminal").hint(
            "use `pas status --watch` for a plain redrawn table, or `pas status` in scripts",
        ));
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| Error::failure(format!("cannot listen for signals: {e}")))?;
    }
    // The loop looks at `stop` between frames, but crossterm's read can spin forever on a
    // terminal that hung up and never return to it: so a signal ends the process within a
    // second whatever the loop is doing.
    let done = Arc::new(AtomicBool::new(false));
    {
        let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
            }
            std::thread::sleep(Duration::from_secs(1));
            if !done.load(Ordering::SeqCst) {
                restore();
                std::process::exit(0);
            }
        });
    }
    let previous = std::panic::take_hook();
    let panicked = Arc::clone(&stop);
    std::panic::set_hook(Box::new(move |info| {
        panicked.store(true, Ordering::SeqCst);
        restore();
        previous(info);
    }));
    let term_error = |e: io::Error| Error::failure(format!("cannot drive the terminal: {e}"));
    terminal::enable_raw_mode().map_err(term_error)?;
    let _guard = Guard;
    execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide).map_err(term_error)?;
    let mut screen = Terminal::new(CrosstermBackend::new(io::stdout())).map_err(term_error)?;

    let (to_screen, from_background) = mpsc::channel();
    let loader = spawn_loader(opts.root.clone(), opts.only.clone(), to_screen.clone());
    let mut model = Model::new(&opts.root.display().to_string());
    let mut followed: Option<String> = None;
    let mut drawn = Instant::now() - TICK;
    let mut dirty = true;
    while !stop.load(Ordering::SeqCst) {
        if dirty || drawn.elapsed() >= TICK {
            let now = clock::now();
            screen
                .draw(|f| view::draw(f, &mut model, &opts.palette, now))
                .map_err(term_error)?;
            drawn = Instant::now();
            dirty = false;
        }
        if event::poll(Duration::from_millis(100)).map_err(term_error)? {
            match event::read().map_err(term_error)? {
                TermEvent::Key(k) if k.kind != KeyEventKind::Release => {
                    if let Some(input) = input_of(k.code, k.modifiers) {
                        match model.key(input) {
                            Outcome::Quit => break,
                            Outcome::Run(action) => spawn_action(
                                opts.root.clone(),
                                opts.launch,
                                action,
                                to_screen.clone(),
                            ),
                            Outcome::None => {}
                        }
                    }
                    dirty = true;
                }
                TermEvent::Resize(..) => {
                    screen.autoresize().map_err(term_error)?;
                    dirty = true;
                }
                _ => {}
            }
        }
        dirty |= receive(&mut model, &from_background, &loader);
        let now_followed = model.followed_cell();
        if now_followed != followed {
            followed = now_followed;
            let _ = loader.send(ToLoader::Follow(followed.clone()));
        }
        // Supervisors started by revive are this process's children.
        process::reap_children();
    }
    drop(screen);
    done.store(true, Ordering::SeqCst);
    Ok(())
}

/// Takes what the background threads sent; true when something changed on screen.
fn receive(model: &mut Model, rx: &Receiver<FromBackground>, loader: &Sender<ToLoader>) -> bool {
    let mut changed = false;
    for message in rx.try_iter() {
        changed = true;
        match message {
            FromBackground::Snapshot(s) => model.set_snapshot(s),
            FromBackground::Failed(e) => model.message = Some((e, Level::Error)),
            FromBackground::Events {
                cell,
                events,
                reset,
            } => model.add_events(&cell, events, reset),
            FromBackground::Done(text, level) => {
                model.message = Some((text, level));
                let _ = loader.send(ToLoader::Reload);
            }
        }
    }
    changed
}

fn input_of(code: KeyCode, modifiers: KeyModifiers) -> Option<Input> {
    Some(match code {
        KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => Input::Interrupt,
        KeyCode::Up => Input::Up,
        KeyCode::Down => Input::Down,
        KeyCode::PageUp => Input::PageUp,
        KeyCode::PageDown => Input::PageDown,
        KeyCode::Home => Input::Home,
        KeyCode::End => Input::End,
        KeyCode::Enter => Input::Enter,
        KeyCode::Esc => Input::Esc,
        KeyCode::Backspace => Input::Backspace,
        KeyCode::Char(c) => Input::Char(c),
        _ => return None,
    })
}

/// The loader: owns the change watcher and does every read.
fn spawn_loader(
    root: PathBuf,
    only: Option<String>,
    out: Sender<FromBackground>,
) -> Sender<ToLoader> {
    let (tx, rx) = mpsc::channel::<ToLoader>();
    let changes_tx = tx.clone();
    std::thread::spawn(move || {
        // pas.toml was checked when top started; if it broke since, defaults apply.
        let store = crate::config::open(root.clone()).unwrap_or_else(|_| FsStore::new(root));
        let changes = store.changes(Box::new(move |c| {
            changes_tx.send(ToLoader::Changed(c)).is_ok()
        }));
        load_loop(&store, only.as_deref(), &rx, &out, &*changes);
    });
    tx
}

fn load_loop(
    store: &FsStore,
    only: Option<&str>,
    rx: &Receiver<ToLoader>,
    out: &Sender<FromBackground>,
    changes: &dyn ChangeFeed,
) {
    changes.watch_root();
    let mut cells = Cells::default();
    let mut last_load: Option<Instant> = None;
    let mut last_full: Option<Instant> = None;
    let mut gap = MIN_GAP;
    let mut stale = true;
    // What the next read must cover: every cell, or the cells in `dirty` (and the list of
    // cells itself with `relist`).
    let mut full = true;
    let mut relist = false;
    let mut dirty: BTreeSet<String> = BTreeSet::new();
    // Without change events (none on this system, or they stopped), every read is full.
    let mut polling = false;
    let mut follow: Option<String> = None;
    let mut offset = 0u64;
    let mut events_stale = false;
    let mut reset = false;
    loop {
        let due = match last_load {
            None => Duration::ZERO,
            Some(t) if stale => (t + gap).saturating_duration_since(Instant::now()),
            Some(t) => (t + RELOAD_EVERY).saturating_duration_since(Instant::now()),
        };
        let first = match rx.recv_timeout(due) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        for message in first.into_iter().chain(rx.try_iter()) {
            match message {
                ToLoader::Changed(change) => {
                    events_stale |= match &change {
                        Change::Events { cell } => follow.as_deref() == Some(&**cell),
                        // Events may have been missed: read the followed log again.
                        Change::Rescan | Change::Lost { .. } => true,
                        _ => false,
                    };
                    match change {
                        Change::Root | Change::Rescan => full = true,
                        Change::Lost { .. } => (full, polling) = (true, true),
                        Change::Cell { cell } => {
                            relist = true;
                            dirty.insert(cell.to_string());
                        }
                        Change::Agent { cell, .. }
                        | Change::Task { cell, .. }
                        | Change::Reservations { cell } => {
                            dirty.insert(cell.to_string());
                        }
                        // The log is not part of the view.
                        Change::Events { .. } => continue,
                    }
                    stale = true;
                }
                ToLoader::Follow(cell) => {
                    follow = cell;
                    offset = 0;
                    reset = true;
                    events_stale = true;
                }
                ToLoader::Reload => {
                    stale = true;
                    full = true;
                    last_load = None;
                    events_stale = true;
                }
            }
        }
        if events_stale {
            events_stale = false;
            if let Some(cell) = &follow {
                if let Ok((new, next)) = events::read_new(store, cell, offset) {
                    offset = next;
                    if !new.is_empty() || reset {
                        let sent = out.send(FromBackground::Events {
                            cell: cell.clone(),
                            events: new,
                            reset,
                        });
                        if sent.is_err() {
                            return;
                        }
                        reset = false;
                    }
                }
            }
        }
        let ready = match last_load {
            None => true,
            Some(t) if stale => t.elapsed() >= gap,
            Some(t) => t.elapsed() >= RELOAD_EVERY,
        };
        if !ready {
            continue;
        }
        let now = clock::now();
        if !stale {
            // The clock's turn: cells whose health or restart is due by now, and, seldom,
            // everything (a process that died with no one left to write it down).
            full |= polling || last_full.is_none_or(|t| t.elapsed() >= FULL_EVERY);
            dirty.extend(cells.due(now));
            // Running agents' usage changes with no file written.
            dirty.extend(cells.running());
            if !full && dirty.is_empty() {
                last_load = Some(Instant::now());
                continue;
            }
        }
        let started = Instant::now();
        let read = if full {
            cells.load(store, only, now)
        } else {
            cells.reload(store, only, &dirty, relist, now)
        };
        let message = match read {
            Ok(()) => {
                // Cells made since the last read are followed from now on.
                changes.watch_root();
                for id in cells.ids() {
                    changes.watch_cell(&CellId::from(id));
                }
                FromBackground::Snapshot(cells.snapshot())
            }
            Err(e) => FromBackground::Failed(format!("cannot read the fleet: {}", e.message)),
        };
        if out.send(message).is_err() {
            return;
        }
        if full {
            last_full = Some(Instant::now());
        }
        last_load = Some(Instant::now());
        gap = (started.elapsed() * 2).max(MIN_GAP);
        (stale, full, relist) = (false, false, false);
        dirty.clear();
    }
}

/// Runs a confirmed action on its own thread, through the code of the matching command.
fn spawn_action(
    root: PathBuf,
    launch: crate::ops::supervisor::Launch,
    action: Action,
    out: Sender<FromBackground>,
) {
    std::thread::spawn(move || {
        // pas.toml was checked when top started; if it broke since, defaults apply.
        let store = crate::config::open(root.clone()).unwrap_or_else(|_| FsStore::new(root));
        let result = act(&store, launch, &action);
        process::reap_children();
        let message = match result {
            Ok(text) => (text, Level::Info),
            Err(e) => (
                format!("{} failed: {}", action.command(), e.message),
                Level::Error,
            ),
        };
        let _ = out.send(FromBackground::Done(message.0, message.1));
    });
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Does an action; the text says what happened.
fn act(
    store: &dyn Store,
    launch: crate::ops::supervisor::Launch,
    action: &Action,
) -> Result<String> {
    let now = clock::now();
    match action {
        Action::Pause { cell } | Action::Resume { cell } => {
            let to = if matches!(action, Action::Pause { .. }) {
                CellStatus::Paused
            } else {
                CellStatus::Active
            };
            let previous = cell::set_status(store, cell, to, now)?;
            Ok(format!(
                "cell {}: {} -> {}",
                short(cell),
                previous.as_str(),
                to.as_str()
            ))
        }
        Action::Revive { cell, agent } => {
            let pass = revive::revive_on_request(store, cell, agent, launch, now)?;
            let said: Vec<String> = pass.actions.iter().map(|a| a.message.clone()).collect();
            Ok(if said.is_empty() {
                format!(
                    "revive {agent}: nothing to do (it runs, backs off, or its cell is not active)"
                )
            } else {
                format!("revive {agent}: {}", said.join("; "))
            })
        }
        Action::Stop { cell, agent } => {
            let outcome = crate::ops::supervisor::stop_for(
                store,
                cell,
                agent,
                None,
                crate::model::StopCause::Stopped,
                now,
            )?;
            Ok(format!(
                "agent {agent} {}",
                match outcome {
                    StopOutcome::NotRunning => "was not running (now idle)",
                    StopOutcome::Terminated => "stopped (SIGTERM)",
                    StopOutcome::Killed => "killed (SIGKILL after the grace period)",
                }
            ))
        }
    }
}
