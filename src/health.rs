//! The liveness model: an agent's health from its last heartbeat, what it reported and the
//! effective policy, at a given time. Pure; the time is a parameter.
//!
//! Silence longer than one `heartbeat_interval` makes an agent `late`, longer than
//! `misses_down` intervals `down`, longer than `heartbeat_ttl` `dead`. An agent that never
//! beat is `unknown`; one that reported `OFFLINE` is `offline`. A beating agent that
//! reported `DEGRADED` is `degraded`, and one with `failure_threshold` consecutive recorded
//! failures is `unhealthy`. An agent pas gave up on (`status: failed`) is `failed`.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::clock;
use crate::doc::Doc;
use crate::policy::Policy;

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

fn seconds(s: f64) -> Duration {
    Duration::milliseconds((s * 1000.0).round() as i64)
}

/// The agent's last heartbeat time.
pub fn last_heartbeat(agent: &Doc) -> Option<DateTime<Utc>> {
    agent.str("last_heartbeat").and_then(clock::parse)
}

/// Assesses an agent at `now`.
pub fn assess(agent: &Doc, policy: &Policy, now: DateTime<Utc>) -> Assessment {
    let last = last_heartbeat(agent);
    let age = last.map(|t| ((now - t).num_milliseconds() as f64 / 1000.0).max(0.0));
    let interval = policy.heartbeat_interval();
    let down = policy.down_after();
    let dead = policy.heartbeat_ttl();
    let next_change = match (last, age) {
        (Some(t), Some(a)) => [interval, down, dead]
            .into_iter()
            .filter(|limit| a <= *limit)
            .map(|limit| t + seconds(limit))
            .min(),
        _ => None,
    };
    // A started agent is not judged by heartbeats until its first beat since the start or
    // until startup_grace has passed, whichever comes first.
    let started = agent.str("started_at").and_then(clock::parse);
    let starting = match started {
        Some(s) if last.is_none_or(|l| l < s) => Some(s),
        _ => None,
    };
    let health = if agent.str("status") == Some("failed") {
        Health::Failed
    } else if agent.str("reported_status") == Some("OFFLINE") {
        Health::Offline
    } else if let Some(s) = starting {
        let grace = policy.positive("startup_grace");
        if (now - s).num_milliseconds() as f64 / 1000.0 <= grace {
            Health::Unknown
        } else {
            Health::Dead
        }
    } else {
        match age {
            None => Health::Unknown,
            Some(a) if a > dead => Health::Dead,
            Some(a) if a > down => Health::Down,
            Some(a) if a > interval => Health::Late,
            Some(_) => {
                let threshold = policy.positive("failure_threshold") as u64;
                if agent.u64("failures").unwrap_or(0) >= threshold.max(1) {
                    Health::Unhealthy
                } else if agent.str("reported_status") == Some("DEGRADED") {
                    Health::Degraded
                } else {
                    Health::Healthy
                }
            }
        }
    };
    let next_change = if matches!(health, Health::Failed | Health::Offline) {
        None
    } else if let (Some(s), Health::Unknown) = (starting, health) {
        Some(s + seconds(policy.positive("startup_grace")))
    } else if starting.is_some() {
        None
    } else {
        next_change
    };
    Assessment {
        health,
        age,
        next_change,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn agent(json: &str) -> Doc {
        Doc::parse(json.as_bytes(), Path::new("a.json")).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        clock::parse(s).unwrap()
    }

    #[test]
    fn silence_walks_healthy_late_down_dead() {
        let a = agent(r#"{"agent_id": "a", "last_heartbeat": "2026-11-23T10:00:00Z"}"#);
        let p = Policy::resolve(None, None, None);
        let h = |t: &str| assess(&a, &p, at(t)).health;
        assert_eq!(h("2026-11-23T10:00:30Z"), Health::Healthy);
        assert_eq!(h("2026-11-23T10:00:31Z"), Health::Late);
        assert_eq!(h("2026-11-23T10:01:01Z"), Health::Down);
        assert_eq!(h("2026-11-23T10:01:30Z"), Health::Down);
        assert_eq!(h("2026-11-23T10:01:31Z"), Health::Dead);
        let first = assess(&a, &p, at("2026-11-23T10:00:10Z"));
        assert_eq!(first.next_change, Some(at("2026-11-23T10:00:30Z")));
        assert_eq!(first.age, Some(10.0));
        let later = assess(&a, &p, at("2026-11-23T10:01:10Z"));
        assert_eq!(later.next_change, Some(at("2026-11-23T10:01:30Z")));
    }

    #[test]
    fn reported_states_and_failures_show() {
        let p = Policy::resolve(None, None, None);
        let now = at("2026-11-23T10:00:05Z");
        let base = r#""agent_id": "a", "last_heartbeat": "2026-11-23T10:00:00Z""#;
        assert_eq!(
            assess(
                &agent(&format!("{{{base}, \"reported_status\": \"DEGRADED\"}}")),
                &p,
                now
            )
            .health,
            Health::Degraded
        );
        assert_eq!(
            assess(
                &agent(&format!("{{{base}, \"reported_status\": \"OFFLINE\"}}")),
                &p,
                now
            )
            .health,
            Health::Offline
        );
        assert_eq!(
            assess(&agent(&format!("{{{base}, \"failures\": 3}}")), &p, now).health,
            Health::Unhealthy
        );
        assert_eq!(
            assess(&agent(&format!("{{{base}, \"failures\": 2}}")), &p, now).health,
            Health::Healthy
        );
        assert_eq!(
            assess(&agent(r#"{"agent_id": "a"}"#), &p, now).health,
            Health::Unknown
        );
        assert_eq!(
            assess(
                &agent(&format!("{{{base}, \"status\": \"failed\"}}")),
                &p,
                now
            )
            .health,
            Health::Failed
        );
    }

    #[test]
    fn a_started_agent_has_a_startup_grace() {
        let p = Policy::resolve(None, None, None);
        let a = agent(
            r#"{"agent_id": "a", "last_heartbeat": "2026-11-23T09:00:00Z", "started_at": "2026-11-23T10:00:00Z"}"#,
        );
        let starting = assess(&a, &p, at("2026-11-23T10:00:59Z"));
        assert_eq!(starting.health, Health::Unknown);
        assert_eq!(starting.next_change, Some(at("2026-11-23T10:01:00Z")));
        assert_eq!(
            assess(&a, &p, at("2026-11-23T10:01:01Z")).health,
            Health::Dead
        );
        let beating = agent(
            r#"{"agent_id": "a", "last_heartbeat": "2026-11-23T10:00:05Z", "started_at": "2026-11-23T10:00:00Z"}"#,
        );
        assert_eq!(
            assess(&beating, &p, at("2026-11-23T10:00:20Z")).health,
            Health::Healthy
        );
    }

    #[test]
    fn an_agent_ttl_outlasts_the_cell_interval() {
        let a = agent(
            r#"{"agent_id": "a", "last_heartbeat": "2026-11-23T10:00:00Z", "policies": {"heartbeat_ttl": 600}}"#,
        );
        let p = Policy::resolve(None, None, Some(&a));
        assert_eq!(
            assess(&a, &p, at("2026-11-23T10:05:00Z")).health,
            Health::Down
        );
        assert_eq!(
            assess(&a, &p, at("2026-11-23T10:10:01Z")).health,
            Health::Dead
        );
    }
}
