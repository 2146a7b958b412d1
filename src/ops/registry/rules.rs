//! The seed registry's rules, pure: reading a registration, the seed's status words for a
//! health, what a heartbeat's `status` reports, and when a silent service is deregistered.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::model::{Health, ReportedStatus};

/// The service types the seed registers.
pub const TYPES: [&str; 3] = ["model", "tool", "agent"];

/// The seed's roles (a service's stage, not the agent's role in its cell).
pub const ROLES: [&str; 4] = ["production", "staging", "canary", "experimental"];

/// Seconds between beats when a registration names none (the seed's utility default).
pub const DEFAULT_INTERVAL: f64 = 30.0;

/// Missed beats before a service is marked down (the seed monitor's `MAX_MISSES_BEFORE_DOWN`).
pub const MISSES_DOWN: u64 = 2;

/// Missed beats before a service is deregistered (`MAX_MISSES_BEFORE_DEREGISTER`).
pub const MISSES_DEREGISTER: f64 = 3.0;

/// A registration, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// The id asked for (`None`: the registry makes one).
    pub service_id: Option<String>,
    /// Display name.
    pub name: String,
    /// `model`, `tool` or `agent`.
    pub kind: String,
    /// `production`, `staging`, `canary` or `experimental`.
    pub role: String,
    /// Where the service answers.
    pub url: Option<String>,
    /// Capabilities.
    pub caps: Vec<String>,
    /// Free metadata.
    pub labels: Map<String, Value>,
    /// Context window, for models.
    pub ctx_limit: Option<u64>,
    /// Seconds between beats.
    pub heartbeat_interval_s: f64,
    /// Seconds of silence before the service is dead (`None`: 3 intervals).
    pub ttl_s: Option<f64>,
}

/// A string field of a body (absent or null: none); anything else is a usage error.
pub(crate) fn text(body: &Map<String, Value>, key: &str) -> Result<Option<String>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(Error::usage(format!(
            "\"{key}\" must be a string, not {other}"
        ))),
    }
}

fn seconds(body: &Map<String, Value>, key: &str) -> Result<Option<f64>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(s) if s > 0.0 && s <= 86_400.0 => Ok(Some(s)),
            _ => Err(Error::usage(format!(
                "\"{key}\" must be a number of seconds in (0, 86400], not {v}"
            ))),
        },
    }
}

fn one_of(value: String, key: &str, allowed: &[&str]) -> Result<String> {
    if allowed.contains(&value.as_str()) {
        Ok(value)
    } else {
        Err(Error::usage(format!(
            "\"{key}\" is {value:?}; it must be one of {}",
            allowed.join(", ")
        )))
    }
}

/// Reads a `POST /register` body.
pub fn registration(body: &Map<String, Value>) -> Result<Registration> {
    let name = text(body, "name")?
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| {
            Error::usage("a registration needs \"name\"")
                .hint("send {\"name\": ..., \"type\": \"model\"|\"tool\"|\"agent\", ...}")
        })?;
    let caps = match body.get("caps") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|c| c.as_str().map(String::from))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::usage("\"caps\" must be a list of strings"))?,
        Some(_) => return Err(Error::usage("\"caps\" must be a list of strings")),
    };
    let labels = match body.get("labels") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(Error::usage("\"labels\" must be an object")),
    };
    let ctx_limit = match body.get("ctx_limit") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().filter(|n| *n > 0).ok_or_else(|| {
            Error::usage(format!(
                "\"ctx_limit\" must be a positive whole number, not {v}"
            ))
        })?),
    };
    Ok(Registration {
        service_id: text(body, "service_id")?,
        name,
        kind: one_of(
            text(body, "type")?.unwrap_or_else(|| "agent".into()),
            "type",
            &TYPES,
        )?,
        role: one_of(
            text(body, "role")?.unwrap_or_else(|| "production".into()),
            "role",
            &ROLES,
        )?,
        url: text(body, "url")?,
        caps,
        labels,
        ctx_limit,
        heartbeat_interval_s: seconds(body, "heartbeat_interval_s")?.unwrap_or(DEFAULT_INTERVAL),
        ttl_s: seconds(body, "ttl_s")?,
    })
}

/// The seed's status word for a health: `ok`, `degraded` or `down`.
pub fn seed_status(health: Health) -> &'static str {
    match health {
        Health::Healthy | Health::Unknown | Health::Late => "ok",
        Health::Degraded | Health::Unhealthy | Health::Offline => "degraded",
        Health::Down | Health::Dead | Health::Failed => "down",
    }
}

/// What a heartbeat's `status` reports: the seed's words (`ok`, `degraded`, `down`) and
/// AINS's (`ACTIVE`, `DEGRADED`, `OFFLINE`), any case.
pub fn reported(status: Option<&str>) -> Result<Option<ReportedStatus>> {
    let Some(word) = status else {
        return Ok(None);
    };
    match word.to_ascii_lowercase().as_str() {
        "ok" | "active" | "healthy" | "up" => Ok(Some(ReportedStatus::Active)),
        "degraded" | "busy" => Ok(Some(ReportedStatus::Degraded)),
        "offline" | "down" | "inactive" => Ok(Some(ReportedStatus::Offline)),
        _ => Err(Error::usage(format!(
            "heartbeat status {word:?} is not one this registry knows"
        ))
        .hint("send ok, degraded or offline (or ACTIVE, DEGRADED, OFFLINE)")),
    }
}

/// Whether a registered service has been silent long enough to be deregistered: as many
/// intervals as [`MISSES_DEREGISTER`], and its ttl. A service that never beat is judged
/// from its registration.
pub fn deregister(silent_s: f64, interval_s: f64, ttl_s: Option<f64>) -> bool {
    let misses = silent_s / interval_s;
    misses >= MISSES_DEREGISTER && ttl_s.is_none_or(|ttl| silent_s >= ttl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn registrations_are_read_with_the_seeds_defaults_and_bad_ones_are_named() {
        let seed = registration(&body(json!({
            "name": "llama-3.1-8b", "type": "model", "role": "production",
            "url": "http://127.0.0.1:8050", "caps": ["infer", "classify"],
            "labels": {"space": "local", "tier": "2"}, "ctx_limit": 32768
        })))
        .unwrap();
        assert_eq!(seed.kind, "model");
        assert_eq!(seed.caps, ["infer", "classify"]);
        assert_eq!(seed.ctx_limit, Some(32768));
        assert_eq!(seed.heartbeat_interval_s, DEFAULT_INTERVAL);
        let minimal = registration(&body(json!({"name": "x"}))).unwrap();
        assert_eq!(
            (minimal.kind.as_str(), minimal.role.as_str()),
            ("agent", "production")
        );
        let refused = [
            (json!({}), "needs \"name\""),
            (json!({"name": ""}), "needs \"name\""),
            (
                json!({"name": "x", "type": "robot"}),
                "\"type\" is \"robot\"",
            ),
            (json!({"name": "x", "role": "prod"}), "\"role\" is \"prod\""),
            (json!({"name": "x", "caps": "infer"}), "\"caps\" must be"),
            (json!({"name": "x", "caps": [1]}), "\"caps\" must be"),
            (json!({"name": "x", "labels": []}), "\"labels\" must be"),
            (
                json!({"name": "x", "ctx_limit": -1}),
                "\"ctx_limit\" must be",
            ),
            (json!({"name": "x", "ttl_s": 0}), "\"ttl_s\" must be"),
            (json!({"name": 5}), "\"name\" must be a string"),
        ];
        for (b, says) in refused {
            let e = registration(&body(b.clone())).unwrap_err();
            assert!(e.message.contains(says), "{b}: {}", e.message);
        }
    }

    #[test]
    fn seed_status_words() {
        let table = [
            (Health::Healthy, "ok"),
            (Health::Unknown, "ok"),
            (Health::Late, "ok"),
            (Health::Degraded, "degraded"),
            (Health::Offline, "degraded"),
            (Health::Unhealthy, "degraded"),
            (Health::Down, "down"),
            (Health::Dead, "down"),
            (Health::Failed, "down"),
        ];
        for (h, word) in table {
            assert_eq!(seed_status(h), word, "{h:?}");
        }
    }

    #[test]
    fn heartbeat_status_words() {
        let table = [
            (None, Ok(None)),
            (Some("ok"), Ok(Some(ReportedStatus::Active))),
            (Some("ACTIVE"), Ok(Some(ReportedStatus::Active))),
            (Some("DEGRADED"), Ok(Some(ReportedStatus::Degraded))),
            (Some("OFFLINE"), Ok(Some(ReportedStatus::Offline))),
            (Some("down"), Ok(Some(ReportedStatus::Offline))),
            (Some("AVAILABLE"), Err(())),
        ];
        for (word, want) in table {
            assert_eq!(reported(word).map_err(|_| ()), want, "{word:?}");
        }
    }

    #[test]
    fn three_missed_beats_and_the_ttl_deregister() {
        let table = [
            (0.0, 30.0, None, false),
            (59.0, 30.0, None, false),
            (89.9, 30.0, None, false),
            (90.0, 30.0, None, true),
            (90.0, 30.0, Some(120.0), false),
            (120.0, 30.0, Some(120.0), true),
            (3.0, 1.0, Some(3.0), true),
        ];
        for (silent, interval, ttl, want) in table {
            assert_eq!(
                deregister(silent, interval, ttl),
                want,
                "{silent} {interval} {ttl:?}"
            );
        }
    }
}
