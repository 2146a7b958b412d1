//! The state of `pas top`, pure: a snapshot of the fleet, the tree rows shown for it (cells,
//! their agents, each agent's current task), the selection, the filter, expansion, and what
//! a key press does. No terminal and no filesystem here; the time is a parameter, so the
//! rendering tests can fix it.
//!
//! Rows are rebuilt only when the snapshot, the filter or an expansion changes, never per
//! frame, and the selection is kept by key (cell, agent), so a reload does not move it.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Utc};

use crate::clock;
use crate::error::Result;
use crate::model::{CellStatus, Reservation, ReservationStatus};
use crate::ops::health::Health;
use crate::ops::reservation::{self, Amounts};
use crate::ops::status::{self, AgentView, CellView};
use crate::ops::supervisor::ProcState;
use crate::store::events::Event;
use crate::store::{ConfigFile, FileKey, Store};

/// Fleets up to this many agents open fully (cells and agents expanded) at start.
const OPEN_UP_TO: usize = 50;
/// Events kept for the events pane.
const EVENTS_KEPT: usize = 500;

/// One cell as `pas top` shows it.
#[derive(Debug, Clone)]
pub struct CellSnap {
    /// Agents, tasks, time: the same view `pas status` prints.
    pub view: CellView,
    /// The quota per resource (`reservation::RESOURCES` order); `None`: unlimited.
    pub capacity: [Option<f64>; 4],
    /// What active reservations hold, per agent.
    pub reserved_by_agent: BTreeMap<String, Amounts>,
    /// What active reservations hold in all.
    pub reserved: Amounts,
    /// When the cell was read: its ages count on from here (cells are read again only when
    /// their files change, or their health is due to change by the clock).
    pub taken: DateTime<Utc>,
    /// Its files that could not be read (the quota, reservations).
    pub errors: Vec<String>,
}

impl CellSnap {
    /// Reads one cell through the store, recording nothing: a viewer must not write.
    pub fn load(store: &dyn Store, id: &str, now: DateTime<Utc>) -> Result<CellSnap> {
        let view = status::cell_view(store, id, false, now)?;
        let mut errors = Vec::new();
        let isolation = store
            .read(&view.id, FileKey::Config(ConfigFile::Isolation))
            .unwrap_or(None);
        let capacity = reservation::capacity(isolation.as_ref()).unwrap_or_else(|e| {
            errors.push(e.message);
            [None; 4]
        });
        let active = reservation::list(store, &view.id, Some(ReservationStatus::Active))
            .unwrap_or_else(|e| {
                errors.push(e.message);
                Vec::new()
            });
        let mut by_agent: BTreeMap<&str, Vec<&Reservation>> = BTreeMap::new();
        for r in &active {
            by_agent.entry(&r.agent).or_default().push(r);
        }
        Ok(CellSnap {
            capacity,
            reserved: reservation::held(&active),
            reserved_by_agent: by_agent
                .into_iter()
                .map(|(a, list)| (a.to_string(), reservation::held(list)))
                .collect(),
            view,
            taken: now,
            errors,
        })
    }

    /// Seconds from when the cell was read to `now` (never negative).
    fn drift(&self, now: DateTime<Utc>) -> f64 {
        ((now - self.taken).num_milliseconds() as f64 / 1000.0).max(0.0)
    }

    /// Seconds since an agent's last beat at `now`, counting on from the read.
    pub fn beat_age(&self, agent: &AgentView, now: DateTime<Utc>) -> Option<f64> {
        agent.heartbeat_age_seconds.map(|a| a + self.drift(now))
    }

    /// Seconds the cell has run at `now`: an active cell's time counts on from the read.
    pub fn time_used(&self, now: DateTime<Utc>) -> Option<f64> {
        let v = &self.view;
        match v.status {
            CellStatus::Active => v.time_used.map(|u| u + self.drift(now)),
            _ => v.time_used,
        }
    }

    /// Whether what the cell shows may have changed by `now` with no file written: an
    /// agent's health is due to change (late, down, dead) or its restart or cool-down is
    /// due. Such a cell is read again; the others stay as they were read.
    pub fn due(&self, now: DateTime<Utc>) -> bool {
        let passed = |t: &Option<String>| {
            t.as_deref()
                .and_then(clock::parse)
                .is_some_and(|t| t <= now)
        };
        self.view.agents.iter().any(|a| {
            a.next_change.is_some_and(|t| t <= now)
                || passed(&a.next_restart_at)
                || passed(&a.cooldown_until)
        })
    }
}

/// The fleet at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The cells.
    pub cells: Vec<CellSnap>,
    /// Cells or files that could not be read.
    pub errors: Vec<String>,
}

impl Snapshot {
    /// Every agent in the snapshot.
    pub fn agent_count(&self) -> usize {
        self.cells.iter().map(|c| c.view.agents.len()).sum()
    }
}

/// Turns each running agent's CPU percent in `snap` into the percent between `prev`'s read
/// and this one (same pid); an agent not in `prev` keeps its percent since start.
pub fn rate_cpu(snap: &mut CellSnap, prev: &CellSnap) {
    let wall = (snap.taken - prev.taken).num_milliseconds() as f64 / 1000.0;
    for a in &mut snap.view.agents {
        let before = prev
            .view
            .agents
            .iter()
            .find(|p| p.id == a.id && p.pid == a.pid)
            .and_then(|p| p.usage.as_ref());
        if let (Some(u), Some(b)) = (a.usage.as_mut(), before) {
            if let Some(pct) = crate::usage::cpu_percent_between(b.cpu_seconds, u.cpu_seconds, wall)
            {
                u.cpu_percent = Some(pct);
            }
        }
    }
}

/// The cells as last read, by id, each read again on its own: what the loader of `pas top`
/// keeps between reads, so that a change reads the cell it touched, not the fleet.
#[derive(Debug, Default)]
pub struct Cells {
    read: BTreeMap<String, std::result::Result<CellSnap, String>>,
}

impl Cells {
    /// Reads every cell of the root again (only `only` when given; a cell that cannot be
    /// read is then an error, as it is for `pas status CELL`).
    pub fn load(
        &mut self,
        store: &dyn Store,
        only: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let before = std::mem::take(&mut self.read);
        match only {
            Some(id) => {
                let mut snap = CellSnap::load(store, id, now)?;
                if let Some(Ok(prev)) = before.get(id) {
                    rate_cpu(&mut snap, prev);
                }
                self.read.insert(id.to_string(), Ok(snap));
            }
            None => {
                for id in store.cell_ids()? {
                    let prev = before.get(&id).and_then(|p| p.as_ref().ok());
                    self.read_one(store, id, now, prev);
                }
            }
        }
        Ok(())
    }

    /// Reads again the cells in `dirty` that are in the root; with `relist`, the list of
    /// cells may have changed too: cells gone are dropped and new ones read.
    pub fn reload(
        &mut self,
        store: &dyn Store,
        only: Option<&str>,
        dirty: &BTreeSet<String>,
        relist: bool,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if only.is_some() {
            return self.load(store, only, now);
        }
        if relist {
            let ids = store.cell_ids()?;
            self.read.retain(|id, _| ids.binary_search(id).is_ok());
            for id in ids {
                if !self.read.contains_key(&id) {
                    self.read_one(store, id, now, None);
                }
            }
        }
        for id in dirty {
            if let Some(prev) = self.read.remove(id) {
                self.read_one(store, id.clone(), now, prev.as_ref().ok());
            }
        }
        Ok(())
    }

    fn read_one(
        &mut self,
        store: &dyn Store,
        id: String,
        now: DateTime<Utc>,
        prev: Option<&CellSnap>,
    ) {
        let mut snap = CellSnap::load(store, &id, now).map_err(|e| e.message);
        if let (Ok(snap), Some(prev)) = (&mut snap, prev) {
            rate_cpu(snap, prev);
        }
        self.read.insert(id, snap);
    }

    /// The cells with an agent running on this host: read again on the clock's turn, so
    /// their usage (and CPU percent over the last interval) stays current.
    pub fn running(&self) -> BTreeSet<String> {
        self.read
            .iter()
            .filter(|(_, snap)| {
                snap.as_ref()
                    .is_ok_and(|s| s.view.agents.iter().any(|a| a.usage.is_some()))
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The cells whose view may have changed by `now` without a file event ([`CellSnap::due`]).
    pub fn due(&self, now: DateTime<Utc>) -> BTreeSet<String> {
        self.read
            .iter()
            .filter(|(_, snap)| snap.as_ref().is_ok_and(|s| s.due(now)))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The ids of the cells read (readable or not).
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.read.keys().map(String::as_str)
    }

    /// The fleet as read: the cells in id order; the errors of cells that could not be
    /// read, then those of files inside readable cells.
    pub fn snapshot(&self) -> Snapshot {
        let cells: Vec<CellSnap> = self
            .read
            .values()
            .filter_map(|s| s.as_ref().ok())
            .cloned()
            .collect();
        let errors = self
            .read
            .values()
            .filter_map(|s| s.as_ref().err().cloned())
            .chain(cells.iter().flat_map(|c| c.errors.iter().cloned()))
            .collect();
        Snapshot { cells, errors }
    }
}

/// What a row of the tree shows: indexes into the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    /// A cell.
    Cell(usize),
    /// An agent of a cell.
    Agent(usize, usize),
    /// The current task of an agent.
    Task(usize, usize),
}

/// A row by identity rather than position (kept across reloads).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Cell(String),
    Agent(String, String),
    Task(String, String),
}

/// What the keys are doing now.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Moving around.
    Normal,
    /// Typing a filter.
    Filter,
    /// The help screen.
    Help,
    /// Asking before an action.
    Confirm(Action),
}

/// Something that changes the fleet; asked for with `y` first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `pas cell set CELL --status paused`.
    Pause {
        /// The cell's id.
        cell: String,
    },
    /// `pas cell set CELL --status active`.
    Resume {
        /// The cell's id.
        cell: String,
    },
    /// `pas revive CELL --agent AGENT` (or `pas revive approve` of its pending request).
    Revive {
        /// The cell's id.
        cell: String,
        /// The agent.
        agent: String,
    },
    /// `pas agent stop CELL AGENT`.
    Stop {
        /// The cell's id.
        cell: String,
        /// The agent.
        agent: String,
    },
}

impl Action {
    /// The question asked before doing it.
    pub fn prompt(&self) -> String {
        match self {
            Action::Pause { cell } => format!(
                "Pause cell {}? Its agents are told to stop at their next beat and are not revived.",
                short(cell)
            ),
            Action::Resume { cell } => format!("Resume cell {} (status active)?", short(cell)),
            Action::Revive { agent, .. } => format!(
                "Revive agent {agent} now? One revival pass for it, by its policy (as `pas revive --agent`)."
            ),
            Action::Stop { agent, .. } => format!(
                "Stop agent {agent}? SIGTERM, SIGKILL after 10s; it becomes idle and is not revived."
            ),
        }
    }

    /// The command line that does the same.
    pub fn command(&self) -> String {
        match self {
            Action::Pause { cell } => format!("pas cell set {} --status paused", short(cell)),
            Action::Resume { cell } => format!("pas cell set {} --status active", short(cell)),
            Action::Revive { cell, agent } => format!("pas revive {} --agent {agent}", short(cell)),
            Action::Stop { cell, agent } => format!("pas agent stop {} {agent}", short(cell)),
        }
    }
}

/// A key, as the model understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Up arrow or `k`.
    Up,
    /// Down arrow or `j`.
    Down,
    /// Page up.
    PageUp,
    /// Page down.
    PageDown,
    /// Home.
    Home,
    /// End.
    End,
    /// Enter.
    Enter,
    /// Escape.
    Esc,
    /// Backspace.
    Backspace,
    /// Ctrl-C.
    Interrupt,
    /// A character.
    Char(char),
}

/// What the caller must do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing beyond redrawing.
    None,
    /// Leave.
    Quit,
    /// Carry out a confirmed action.
    Run(Action),
}

/// How a message in the footer looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Plain information.
    Info,
    /// Something went wrong.
    Error,
}

/// Everything `pas top` shows.
#[derive(Debug)]
pub struct Model {
    /// The fleet (empty until the first load arrives).
    pub snapshot: Option<Snapshot>,
    /// The rows shown, in order.
    pub rows: Vec<Row>,
    /// The selected row.
    pub selected: usize,
    /// The first row on screen (kept by the view so that the selection stays visible).
    pub offset: usize,
    /// The filter text.
    pub filter: String,
    /// What the keys do now.
    pub mode: Mode,
    /// A message for the footer.
    pub message: Option<(String, Level)>,
    /// The events of the followed cell, oldest first.
    pub events: Vec<Event>,
    /// The cell whose events are shown.
    pub events_cell: Option<String>,
    /// The root, for the header.
    pub root: String,
    /// Rows a page moves.
    pub page: usize,
    toggled: HashSet<Key>,
    open_by_default: bool,
    selected_key: Option<Key>,
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// The health a filter text names (`dead`, `health:late`), if any.
pub fn health_filter(text: &str) -> Option<Health> {
    let t = text.trim().to_lowercase();
    Health::parse(t.strip_prefix("health:").unwrap_or(&t))
}

fn contains(hay: &str, needle: &str) -> bool {
    hay.to_lowercase().contains(needle)
}

fn agent_matches(a: &AgentView, needle: &str) -> bool {
    contains(&a.id, needle)
        || a.name.as_deref().is_some_and(|n| contains(n, needle))
        || contains(a.role.as_str(), needle)
        || a.current_task
            .as_deref()
            .is_some_and(|t| contains(t, needle))
        || a.health.as_str() == needle
}

impl Model {
    /// An empty model for a root.
    pub fn new(root: &str) -> Model {
        Model {
            snapshot: None,
            rows: Vec::new(),
            selected: 0,
            offset: 0,
            filter: String::new(),
            mode: Mode::Normal,
            message: None,
            events: Vec::new(),
            events_cell: None,
            root: root.to_string(),
            page: 10,
            toggled: HashSet::new(),
            open_by_default: true,
            selected_key: None,
        }
    }

    /// Takes a new snapshot; the first one decides whether the tree starts open.
    pub fn set_snapshot(&mut self, snapshot: Snapshot) {
        if self.snapshot.is_none() {
            self.open_by_default =
                snapshot.cells.len() == 1 || snapshot.agent_count() <= OPEN_UP_TO;
        }
        self.snapshot = Some(snapshot);
        self.rebuild();
    }

    /// Appends events of the followed cell (`reset`: they replace what was there).
    pub fn add_events(&mut self, cell: &str, events: Vec<Event>, reset: bool) {
        if reset || self.events_cell.as_deref() != Some(cell) {
            self.events.clear();
            self.events_cell = Some(cell.to_string());
        }
        self.events.extend(events);
        if self.events.len() > EVENTS_KEPT {
            let cut = self.events.len() - EVENTS_KEPT;
            self.events.drain(..cut);
        }
    }

    fn key_of(&self, row: Row) -> Option<Key> {
        let s = self.snapshot.as_ref()?;
        Some(match row {
            Row::Cell(c) => Key::Cell(s.cells.get(c)?.view.id.clone()),
            Row::Agent(c, a) => {
                let cell = s.cells.get(c)?;
                Key::Agent(cell.view.id.clone(), cell.view.agents.get(a)?.id.clone())
            }
            Row::Task(c, a) => {
                let cell = s.cells.get(c)?;
                Key::Task(cell.view.id.clone(), cell.view.agents.get(a)?.id.clone())
            }
        })
    }

    fn is_open(&self, key: &Key, base: bool) -> bool {
        base != self.toggled.contains(key)
    }

    /// Rebuilds the rows from the snapshot, the filter and the expansions, keeping the
    /// selected cell or agent selected.
    pub fn rebuild(&mut self) {
        let mut rows = Vec::new();
        if let Some(s) = &self.snapshot {
            let needle = self.filter.trim().to_lowercase();
            let health = health_filter(&needle);
            for (ci, cell) in s.cells.iter().enumerate() {
                let v = &cell.view;
                let cell_hit = needle.is_empty()
                    || (health.is_none()
                        && (contains(&v.id, &needle)
                            || contains(&v.name, &needle)
                            || v.status.as_str() == needle));
                let agents: Vec<usize> = v
                    .agents
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| match health {
                        Some(h) => a.health == h,
                        None => cell_hit || agent_matches(a, &needle),
                    })
                    .map(|(i, _)| i)
                    .collect();
                if !cell_hit && agents.is_empty() {
                    continue;
                }
                rows.push(Row::Cell(ci));
                let base = self.open_by_default || !needle.is_empty();
                if !self.is_open(&Key::Cell(v.id.clone()), base) {
                    continue;
                }
                for ai in agents {
                    rows.push(Row::Agent(ci, ai));
                    let a = &v.agents[ai];
                    let key = Key::Agent(v.id.clone(), a.id.clone());
                    if a.current_task.is_some() && self.is_open(&key, self.open_by_default) {
                        rows.push(Row::Task(ci, ai));
                    }
                }
            }
        }
        self.rows = rows;
        let keep = self.selected_key.clone();
        let found = keep.and_then(|k| {
            self.rows
                .iter()
                .position(|r| self.key_of(*r).as_ref() == Some(&k))
                .or_else(|| {
                    // The task row went away (finished): stay on its agent.
                    let Key::Task(c, a) = k else { return None };
                    let agent = Key::Agent(c, a);
                    self.rows
                        .iter()
                        .position(|r| self.key_of(*r).as_ref() == Some(&agent))
                })
        });
        self.select(found.unwrap_or(self.selected));
    }

    fn select(&mut self, index: usize) {
        self.selected = index.min(self.rows.len().saturating_sub(1));
        self.selected_key = self.rows.get(self.selected).and_then(|r| self.key_of(*r));
    }

    /// The selected row.
    pub fn selected_row(&self) -> Option<Row> {
        self.rows.get(self.selected).copied()
    }

    /// The selected cell (the cell of the selected row).
    pub fn selected_cell(&self) -> Option<&CellSnap> {
        let s = self.snapshot.as_ref()?;
        match self.selected_row()? {
            Row::Cell(c) | Row::Agent(c, _) | Row::Task(c, _) => s.cells.get(c),
        }
    }

    /// The selected agent, if an agent or task row is selected.
    pub fn selected_agent(&self) -> Option<(&CellSnap, &AgentView)> {
        let s = self.snapshot.as_ref()?;
        match self.selected_row()? {
            Row::Agent(c, a) | Row::Task(c, a) => {
                let cell = s.cells.get(c)?;
                Some((cell, cell.view.agents.get(a)?))
            }
            Row::Cell(_) => None,
        }
    }

    /// The id of the selected cell, whose events the pane follows.
    pub fn followed_cell(&self) -> Option<String> {
        self.selected_cell().map(|c| c.view.id.clone())
    }

    /// Handles a key.
    pub fn key(&mut self, input: Input) -> Outcome {
        if input == Input::Interrupt {
            return Outcome::Quit;
        }
        match self.mode.clone() {
            Mode::Help => {
                if matches!(input, Input::Char('q')) {
                    return Outcome::Quit;
                }
                self.mode = Mode::Normal;
                Outcome::None
            }
            Mode::Confirm(action) => {
                self.mode = Mode::Normal;
                if matches!(input, Input::Char('y') | Input::Char('Y')) {
                    self.message = Some((format!("running: {}", action.command()), Level::Info));
                    Outcome::Run(action)
                } else {
                    self.message = Some(("cancelled".into(), Level::Info));
                    Outcome::None
                }
            }
            Mode::Filter => {
                match input {
                    Input::Enter => self.mode = Mode::Normal,
                    Input::Esc => {
                        self.filter.clear();
                        self.mode = Mode::Normal;
                        self.rebuild();
                    }
                    Input::Backspace => {
                        self.filter.pop();
                        self.rebuild();
                    }
                    Input::Char(c) => {
                        self.filter.push(c);
                        self.rebuild();
                    }
                    Input::Up | Input::Down | Input::PageUp | Input::PageDown => {
                        self.mode = Mode::Normal;
                        return self.key(input);
                    }
                    _ => {}
                }
                Outcome::None
            }
            Mode::Normal => self.normal_key(input),
        }
    }

    fn normal_key(&mut self, input: Input) -> Outcome {
        self.message = None;
        let last = self.rows.len().saturating_sub(1);
        match input {
            Input::Up | Input::Char('k') => self.select(self.selected.saturating_sub(1)),
            Input::Down | Input::Char('j') => self.select((self.selected + 1).min(last)),
            Input::PageUp => self.select(self.selected.saturating_sub(self.page)),
            Input::PageDown => self.select((self.selected + self.page).min(last)),
            Input::Home | Input::Char('g') => self.select(0),
            Input::End | Input::Char('G') => self.select(last),
            Input::Enter | Input::Char(' ') => self.toggle(),
            Input::Char('/') => {
                self.mode = Mode::Filter;
            }
            Input::Esc if !self.filter.is_empty() => {
                self.filter.clear();
                self.rebuild();
            }
            Input::Char('?') | Input::Char('h') => self.mode = Mode::Help,
            Input::Char('q') => return Outcome::Quit,
            Input::Char('p') => self.ask_pause(),
            Input::Char('r') | Input::Char('s') => match self.selected_agent() {
                Some((cell, agent)) => {
                    let (cell, agent) = (cell.view.id.clone(), agent.id.clone());
                    self.mode = Mode::Confirm(if input == Input::Char('r') {
                        Action::Revive { cell, agent }
                    } else {
                        Action::Stop { cell, agent }
                    });
                }
                None => {
                    self.message = Some((
                        "select an agent first (r revives it, s stops it)".into(),
                        Level::Error,
                    ))
                }
            },
            _ => {}
        }
        Outcome::None
    }

    fn ask_pause(&mut self) {
        let Some(cell) = self.selected_cell() else {
            return;
        };
        let id = cell.view.id.clone();
        match cell.view.status {
            CellStatus::Active => self.mode = Mode::Confirm(Action::Pause { cell: id }),
            CellStatus::Paused => self.mode = Mode::Confirm(Action::Resume { cell: id }),
            other => {
                self.message = Some((
                    format!(
                        "cell {} is {other}: only an active cell pauses, only a paused one resumes",
                        short(&id)
                    ),
                    Level::Error,
                ))
            }
        }
    }

    fn toggle(&mut self) {
        let Some(row) = self.selected_row() else {
            return;
        };
        let key = match self.key_of(row) {
            Some(Key::Task(c, a)) => Key::Agent(c, a),
            Some(k) => k,
            None => return,
        };
        if !self.toggled.remove(&key) {
            self.toggled.insert(key.clone());
        }
        // Collapsing from a task row lands on its agent.
        self.selected_key = Some(key);
        self.rebuild();
    }

    /// Seconds since an agent of cell `cell` (an index into the snapshot) last beat, at
    /// `now`, counting on from the cell's read.
    pub fn beat_age(&self, cell: usize, agent: &AgentView, now: DateTime<Utc>) -> Option<f64> {
        self.snapshot
            .as_ref()?
            .cells
            .get(cell)?
            .beat_age(agent, now)
    }

    /// Keeps the selection within `height` rows on screen, scrolling as little as possible.
    pub fn scroll_into_view(&mut self, height: usize) {
        self.page = height.saturating_sub(1).max(1);
        if height == 0 {
            return;
        }
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + height {
            self.offset = self.selected + 1 - height;
        }
        let max_offset = self.rows.len().saturating_sub(height);
        self.offset = self.offset.min(max_offset);
    }
}

/// When an agent is next restarted, shortly: `in 12s`, `cooling 3m00s`, or `-`.
pub fn next_restart(agent: &AgentView, now: DateTime<Utc>) -> String {
    let until = |t: &Option<String>| {
        t.as_deref()
            .and_then(clock::parse)
            .map(|t| (t - now).num_milliseconds() as f64 / 1000.0)
    };
    if let Some(s) = until(&agent.cooldown_until).filter(|s| *s > 0.0) {
        return format!("cooling {}", clock::human_duration(s));
    }
    match until(&agent.next_restart_at) {
        Some(s) if s > 0.0 => format!("in {}", clock::human_duration(s)),
        // A past restart time of a running agent is history, not news.
        Some(_) if agent.process != ProcState::Running => "due".into(),
        _ => "-".into(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{AgentStatus, ReportedStatus, Role};
    use crate::ops::budget::State;

    /// A fixed fleet for the model and rendering tests: two cells, five agents.
    pub(crate) fn fleet(now: DateTime<Utc>) -> Snapshot {
        let agent = |id: &str, health: Health, age: Option<f64>, task: Option<&str>| AgentView {
            id: id.into(),
            name: None,
            role: Role::Write,
            gateway: None,
            capabilities: Vec::new(),
            status: AgentStatus::Active,
            health,
            heartbeat_age_seconds: age,
            last_heartbeat: None,
            heartbeat_count: 12,
            reported_status: Some(ReportedStatus::Active),
            progress: Some(0.4),
            ctx_used: Some(42_000),
            ctx_limit: Some(100_000),
            current_task: task.map(str::to_string),
            next_change: None,
            process: ProcState::Running,
            pid: Some(4242),
            uptime_seconds: Some(300.0),
            state: Some(crate::ops::status::RunState::Running),
            next_restart_in_seconds: None,
            restart_count: 0,
            restart_attempts: 0,
            next_restart_at: None,
            cooldown_until: None,
            backoff_schedule: Vec::new(),
            ctx_state: Some(State::Ok),
            ctx_thresholds: (0.5, 0.75),
            cost_usd: None,
            tokens_used: None,
            usage: None,
            cell_quota: None,
            reserved: None,
            pid_start_time: None,
            limits: None,
        };
        let mut dead = agent("writer_2", Health::Dead, Some(95.0), None);
        dead.restart_count = 2;
        dead.next_restart_at = Some(clock::stamp(now + chrono::Duration::seconds(20)));
        dead.ctx_used = Some(80_000);
        dead.ctx_state = Some(State::Breach);
        let mut late = agent("reviewer", Health::Late, Some(41.0), Some("review"));
        late.ctx_used = Some(55_000);
        late.ctx_state = Some(State::Warning);
        let counts = |agents: &[AgentView]| {
            let mut counts = BTreeMap::new();
            for a in agents {
                *counts.entry(a.health.as_str().to_string()).or_insert(0) += 1;
            }
            counts
        };
        let docs = CellView {
            id: "3f2a1b2c-0000-4000-8000-000000000001".into(),
            name: "Docs sprint".into(),
            status: CellStatus::Active,
            agents: vec![
                agent("lead", Health::Healthy, Some(3.0), Some("outline")),
                agent("writer_1", Health::Healthy, Some(7.5), Some("draft")),
                dead,
            ],
            health_counts: BTreeMap::new(),
            tasks: status::TaskCounts {
                total: 6,
                completed: 2,
                pending: 1,
                blocked: 1,
                in_progress: 2,
                failed: 0,
            },
            time_used: Some(750.0),
            timeout: Some(3600.0),
            problems: Vec::new(),
        };
        let audit = CellView {
            id: "9c8d7e6f-0000-4000-8000-000000000002".into(),
            name: "Audit".into(),
            status: CellStatus::Paused,
            agents: vec![late, agent("auditor", Health::Unknown, None, None)],
            health_counts: BTreeMap::new(),
            tasks: status::TaskCounts {
                total: 3,
                completed: 0,
                pending: 1,
                blocked: 0,
                in_progress: 1,
                failed: 1,
            },
            time_used: Some(100.0),
            timeout: None,
            problems: Vec::new(),
        };
        let (mut docs, mut audit) = (docs, audit);
        docs.health_counts = counts(&docs.agents);
        audit.health_counts = counts(&audit.agents);
        let mut held = BTreeMap::new();
        held.insert("writer_1".to_string(), [2.0, 4e9, 0.0, 0.0]);
        Snapshot {
            cells: vec![
                CellSnap {
                    view: docs,
                    capacity: [Some(8.0), Some(16e9), Some(1.0), None],
                    reserved_by_agent: held,
                    reserved: [2.0, 4e9, 0.0, 0.0],
                    taken: now,
                    errors: Vec::new(),
                },
                CellSnap {
                    view: audit,
                    capacity: [None; 4],
                    reserved_by_agent: BTreeMap::new(),
                    reserved: [0.0; 4],
                    taken: now,
                    errors: Vec::new(),
                },
            ],
            errors: Vec::new(),
        }
    }

    pub(crate) fn now() -> DateTime<Utc> {
        clock::parse("2026-11-23T10:00:00Z").unwrap()
    }

    #[test]
    fn cpu_percent_in_top_is_over_the_last_refresh() {
        let cell = |taken: DateTime<Utc>, pid: i32, cpu: Option<f64>| {
            let mut c = fleet(now()).cells.remove(0);
            c.taken = taken;
            c.view.agents.truncate(1);
            c.view.agents[0].pid = Some(pid);
            c.view.agents[0].usage = cpu.map(|s| crate::usage::Usage {
                cpu_seconds: s,
                cpu_percent: Some(1.0),
                ..Default::default()
            });
            c
        };
        let later = now() + chrono::Duration::seconds(5);
        // (before: pid, cpu seconds; after: time, pid, cpu seconds; percent shown)
        let cases = [
            ((7, Some(10.0)), (later, 7, Some(12.5)), Some(50.0)),
            ((7, Some(10.0)), (later, 7, Some(10.0)), Some(0.0)),
            // Another process now (a restart): its percent since start stays.
            ((6, Some(10.0)), (later, 7, Some(1.0)), Some(1.0)),
            // Not running before.
            ((7, None), (later, 7, Some(1.0)), Some(1.0)),
            // No time passed.
            ((7, Some(1.0)), (now(), 7, Some(2.0)), Some(1.0)),
        ];
        for ((pid0, cpu0), (t1, pid1, cpu1), want) in cases {
            let prev = cell(now(), pid0, cpu0);
            let mut snap = cell(t1, pid1, cpu1);
            rate_cpu(&mut snap, &prev);
            let got = snap.view.agents[0].usage.and_then(|u| u.cpu_percent);
            assert_eq!(got, want, "{pid0} {cpu0:?} -> {pid1} {cpu1:?}");
        }
    }

    fn model() -> Model {
        let mut m = Model::new("/var/missions");
        m.set_snapshot(fleet(now()));
        m
    }

    #[test]
    fn a_small_fleet_opens_fully_and_tasks_hang_under_their_agents() {
        let m = model();
        assert_eq!(
            m.rows,
            vec![
                Row::Cell(0),
                Row::Agent(0, 0),
                Row::Task(0, 0),
                Row::Agent(0, 1),
                Row::Task(0, 1),
                Row::Agent(0, 2),
                Row::Cell(1),
                Row::Agent(1, 0),
                Row::Task(1, 0),
                Row::Agent(1, 1),
            ]
        );
    }

    #[test]
    fn enter_collapses_and_the_selection_survives_a_reload() {
        let mut m = model();
        m.key(Input::Enter);
        assert_eq!(m.rows.len(), 5, "cell 0 collapsed");
        m.key(Input::Down);
        m.key(Input::Down);
        assert_eq!(m.selected_row(), Some(Row::Agent(1, 0)));
        m.set_snapshot(fleet(now()));
        assert_eq!(m.selected_row(), Some(Row::Agent(1, 0)));
        m.key(Input::Enter);
        assert_eq!(m.rows.len(), 4, "the task row of reviewer is hidden");
    }

    #[test]
    fn the_filter_matches_text_or_a_health() {
        let mut m = model();
        for c in "/dead".chars() {
            m.key(Input::Char(c));
        }
        assert_eq!(m.rows, vec![Row::Cell(0), Row::Agent(0, 2)]);
        m.key(Input::Enter);
        assert_eq!(m.mode, Mode::Normal);
        m.key(Input::Esc);
        assert_eq!(m.rows.len(), 10);
        m.key(Input::Char('/'));
        for c in "audit".chars() {
            m.key(Input::Char(c));
        }
        assert_eq!(m.rows.len(), 4, "a cell that matches shows all its agents");
        m.key(Input::Backspace);
        m.key(Input::Esc);
        assert!(m.filter.is_empty());
    }

    #[test]
    fn actions_are_asked_before_they_run() {
        let mut m = model();
        m.key(Input::Char('p'));
        let cell = fleet(now()).cells[0].view.id.clone();
        assert_eq!(m.mode, Mode::Confirm(Action::Pause { cell: cell.clone() }));
        assert_eq!(m.key(Input::Char('n')), Outcome::None);
        m.key(Input::Char('p'));
        assert_eq!(
            m.key(Input::Char('y')),
            Outcome::Run(Action::Pause { cell: cell.clone() })
        );
        m.key(Input::Char('r'));
        assert_eq!(m.mode, Mode::Normal, "no agent selected");
        m.key(Input::Down);
        m.key(Input::Char('s'));
        assert_eq!(
            m.key(Input::Char('y')),
            Outcome::Run(Action::Stop {
                cell,
                agent: "lead".into()
            })
        );
        m.key(Input::End);
        m.key(Input::Char('p'));
        assert!(matches!(m.mode, Mode::Confirm(Action::Resume { .. })));
    }

    #[test]
    fn a_cell_is_read_again_by_the_clock_only_when_a_change_is_due() {
        let now = now();
        let at = |secs: i64| Some(now + chrono::Duration::seconds(secs));
        let stamp = |secs: i64| at(secs).map(clock::stamp);
        // (next_change, next_restart_at, cooldown_until) of one agent -> due.
        let cases = [
            ((None, None, None), false),
            ((at(-1), None, None), true),
            ((at(0), None, None), true),
            ((at(1), None, None), false),
            ((None, stamp(-1), None), true),
            ((None, stamp(30), None), false),
            ((None, None, stamp(-1)), true),
            ((None, None, stamp(30)), false),
        ];
        for ((change, restart, cooldown), due) in cases {
            let mut cell = fleet(now).cells.remove(0);
            for a in &mut cell.view.agents {
                (a.next_change, a.next_restart_at, a.cooldown_until) = (None, None, None);
            }
            let a = &mut cell.view.agents[0];
            (a.next_change, a.next_restart_at, a.cooldown_until) =
                (change, restart.clone(), cooldown.clone());
            assert_eq!(cell.due(now), due, "{change:?} {restart:?} {cooldown:?}");
        }
    }

    #[test]
    fn ages_and_an_active_cells_time_count_on_from_its_read() {
        let now = now();
        let later = now + chrono::Duration::seconds(7);
        let cells = fleet(now).cells;
        let (active, paused) = (&cells[0], &cells[1]);
        let beaten = active
            .view
            .agents
            .iter()
            .find(|a| a.heartbeat_age_seconds.is_some())
            .unwrap();
        let age = beaten.heartbeat_age_seconds.unwrap();
        assert_eq!(active.beat_age(beaten, later), Some(age + 7.0));
        // A clock behind the read does not make ages younger.
        let earlier = now - chrono::Duration::seconds(3);
        assert_eq!(active.beat_age(beaten, earlier), Some(age));
        assert_eq!(
            active.time_used(later),
            active.view.time_used.map(|u| u + 7.0)
        );
        assert_eq!(paused.time_used(later), paused.view.time_used);
    }

    #[test]
    fn next_restart_counts_down() {
        let s = fleet(now());
        let dead = &s.cells[0].view.agents[2];
        assert_eq!(next_restart(dead, now()), "in 20s");
        let mut gone = dead.clone();
        gone.process = ProcState::Exited;
        let later = now() + chrono::Duration::seconds(30);
        assert_eq!(next_restart(&gone, later), "due");
        assert_eq!(next_restart(dead, later), "-", "it runs again");
        assert_eq!(next_restart(&s.cells[0].view.agents[0], now()), "-");
    }
}
