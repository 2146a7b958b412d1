//! `cell.json`: a cell's identity, lifecycle and cell-wide settings.

use chrono::{DateTime, Utc};

use crate::model::config::Policies;
use crate::model::status::{CellStatus, IsolationLevel};

record! {
    /// The `cell.json` at the root of a cell.
    pub struct Cell {
        /// The cell's id. The directory name is authoritative: hand-written cells may carry
        /// another id here (the spec's own shell example does), and lookups accept both.
        cell_id: String = required,
        /// The mission's readable name; lookups accept it when unique.
        mission_name: String = required,
        /// When the cell was created; the time budget counts from here when the cell never
        /// recorded `activated_at`.
        created_at: DateTime<Utc> = required,
        /// Who created it: a user name or an agent id.
        created_by: Option<String> = optional,
        /// Its lifecycle: only an active cell's agents are judged and revived.
        status: CellStatus = required,
        /// The isolation its agents ask for.
        isolation_level: IsolationLevel = or_default,
        /// The most agents it may hold; absent: no limit.
        max_agents: Option<u64> = optional,
        /// Seconds the mission may run before the cell fails; `null`: no limit.
        timeout: Option<f64> = nullable,
        /// Cell-wide policies: the layer above `pas.toml` and below `config/policies.json`.
        policies: Policies = or_default,
        /// When the cell last became active; the time budget counts from here.
        activated_at: Option<DateTime<Utc>> = nullable,
        /// When `status` last changed.
        status_changed_at: Option<DateTime<Utc>> = nullable,
        /// Seconds the cell spent paused since its clock started: its time budget counts
        /// active time only. Absent: never resumed from a pause.
        paused_seconds: Option<f64> = optional,
    }
}

document!(Cell, |_| crate::store::FileKey::Cell.relative());

impl Cell {
    /// The keys a person writes to define a cell (a mission file's settings); the others
    /// are pas's records of its life, which `pas cell export` leaves out and a mission file
    /// cannot set.
    pub const DEFINITION: &'static [&'static str] = &[
        "mission_name",
        "created_by",
        "isolation_level",
        "max_agents",
        "timeout",
        "policies",
    ];

    /// Where the time budget counts from: `activated_at`, else `created_at`.
    pub fn clock_start(&self) -> DateTime<Utc> {
        self.activated_at.unwrap_or(self.created_at)
    }
}
