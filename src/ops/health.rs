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

/// An agent's health: the model's word, which the rules compute and the agent file
/// records (one enum for both).
pub use crate::model::Health;

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
