//! The liveness model's words: an agent's [`Health`] and an [`Assessment`] of it at a given
//! time, from its last heartbeat, what it reported and the effective policy. The rules
//! themselves are [`crate::ops::heartbeat::rules::assess`]; [`assess`] applies them to an
//! agent. Pure; the time is a parameter.
//!
//! Silence longer than one `heartbeat_interval` makes an agent `late`, longer than
//! `misses_down` intervals `down`, longer than `heartbeat_ttl` `dead`. An agent that never
//! beat is judged by its process when it has one (running: alive; not running while
//! `active`: `down`; unless `heartbeat_required`), else it is `unknown`; one that reported
//! `OFFLINE` is `offline`. An agent alive that reported `DEGRADED` or has 1 to
//! `failure_threshold` - 1 consecutive recorded failures is `degraded`, one with
//! `failure_threshold` of them `unhealthy`. An agent pas gave up on (`status: failed`) is
//! `failed`.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::Agent;
use crate::ops::policy::Policy;

/// An agent's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Beating on time.
    Healthy,
    /// Beating, but reported DEGRADED.
    Degraded,
    /// Beating, but failing again and again.
    Unhealthy,
    /// One interval missed.
    Late,
    /// `misses_down` intervals missed.
    Down,
    /// Silent past `heartbeat_ttl`.
    Dead,
    /// Never beat.
    Unknown,
    /// Said it is offline.
    Offline,
    /// pas gave up on it.
    Failed,
}

impl Health {
    /// Every health, in display order.
    pub const ALL: [Health; 9] = [
        Health::Healthy,
        Health::Degraded,
        Health::Unhealthy,
        Health::Late,
        Health::Down,
        Health::Dead,
        Health::Unknown,
        Health::Offline,
        Health::Failed,
    ];

    /// The spelling everywhere (tables, `--json`, the agent file's `health`).
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Unhealthy => "unhealthy",
            Health::Late => "late",
            Health::Down => "down",
            Health::Dead => "dead",
            Health::Unknown => "unknown",
            Health::Offline => "offline",
            Health::Failed => "failed",
        }
    }

    /// Parses the spelling.
    pub fn parse(text: &str) -> Option<Health> {
        Health::ALL.into_iter().find(|h| h.as_str() == text)
    }

    /// How serious for monitoring: 0 ok, 1 warning, 2 critical.
    pub fn severity(self) -> u8 {
        match self {
            Health::Healthy | Health::Unknown | Health::Offline => 0,
            Health::Late | Health::Degraded => 1,
            Health::Down | Health::Dead | Health::Unhealthy | Health::Failed => 2,
        }
    }

    /// Whether the agent has stopped answering (a beat from here on is a recovery).
    pub fn is_silent(self) -> bool {
        matches!(self, Health::Down | Health::Dead)
    }
}

/// An agent's health at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assessment {
    /// The health.
    pub health: Health,
    /// Seconds since the last beat, if it ever beat.
    pub age: Option<f64>,
    /// When the health changes next if no beat arrives (late, down, dead).
    pub next_change: Option<DateTime<Utc>>,
}

/// Assesses an agent at `now` by the rules of [`crate::ops::heartbeat::rules::assess`]. An
/// agent that never beat and has a command is judged by its process.
pub fn assess(agent: &Agent, policy: &Policy, now: DateTime<Utc>) -> Assessment {
    use crate::ops::heartbeat::rules::{self, HealthPolicy};
    rules::assess(
        &crate::ops::heartbeat::vitals(agent),
        &HealthPolicy::from_policy(policy),
        now,
    )
}
