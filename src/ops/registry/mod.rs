//! The seed's service registry (and the AINS agent directory) over a cell: a registered
//! service is an agent of the cell. Its name and capabilities are the agent's; what only
//! the seed has (type, stage role, url, labels, ctx_limit, intervals) is kept under the
//! agent file's `service` key; its beats are agent beats (the same file, health and
//! events), and its silence is judged by the agent's heartbeat policies, set from the
//! registration: `heartbeat_interval`, `misses_down` 2, `heartbeat_ttl`.

pub mod rules;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::clock;
use crate::doc::Doc;
use crate::error::{Error, Kind, Result};
use crate::model::Role;
use crate::ops::agent::{self, NewAgent};
use crate::ops::heartbeat::{BeatReply, BeatReport};
use crate::ops::status::{self, AgentView};
use crate::store::{self, check_id, IdKind, Store};

pub use rules::Registration;

/// The agent file's key for what the seed registered.
pub const SERVICE_KEY: &str = "service";

/// Registers a service as an agent of `cell` (a known `service_id` is updated in place).
/// Returns its id and whether it is new.
pub fn register(
    store: &dyn Store,
    cell: &str,
    reg: &Registration,
    now: DateTime<Utc>,
) -> Result<(String, bool)> {
    let id = reg
        .service_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    check_id(IdKind::Agent, &id)?;
    let new = match agent::read(store, cell, &id) {
        Ok(_) => false,
        Err(e) if e.kind == Kind::NotFound && store.has_cell(cell) => true,
        Err(e) => return Err(e),
    };
    if new {
        let spec = NewAgent {
            id: id.clone(),
            name: Some(reg.name.clone()),
            role: Role::default(),
            capabilities: reg.caps.clone(),
            gateway: None,
            command: Vec::new(),
            cwd: None,
        };
        agent::add(store, cell, &spec, now)?;
    }
    let ttl = reg
        .ttl_s
        .unwrap_or(rules::MISSES_DEREGISTER * reg.heartbeat_interval_s);
    let registered_at = clock::stamp(now);
    store::update_agent_with(store, cell, &id, now, Vec::new(), &mut |doc: &mut Doc| {
        doc.set("name", reg.name.clone());
        doc.set("capabilities", json!(reg.caps));
        let kept_since = doc
            .get(SERVICE_KEY)
            .and_then(|s| s.get("registered_at"))
            .cloned()
            .unwrap_or_else(|| json!(registered_at));
        doc.set(
            SERVICE_KEY,
            json!({
                "type": reg.kind,
                "role": reg.role,
                "url": reg.url,
                "labels": reg.labels,
                "ctx_limit": reg.ctx_limit,
                "heartbeat_interval_s": reg.heartbeat_interval_s,
                "ttl_s": ttl,
                "registered_at": kept_since,
            }),
        );
        let mut policies = match doc.get("policies") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        policies.insert("heartbeat_interval".into(), json!(reg.heartbeat_interval_s));
        policies.insert("misses_down".into(), json!(rules::MISSES_DOWN));
        policies.insert("heartbeat_ttl".into(), json!(ttl));
        doc.set("policies", Value::Object(policies));
        Ok(())
    })?;
    Ok((id, new))
}

/// Changes a service's stage role (`POST /promote`).
pub fn promote(
    store: &dyn Store,
    cell: &str,
    id: &str,
    role: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    if !rules::ROLES.contains(&role) {
        return Err(Error::usage(format!(
            "role {role:?} is not one of {}",
            rules::ROLES.join(", ")
        )));
    }
    agent::read(store, cell, id)?;
    store::update_agent_with(store, cell, id, now, Vec::new(), &mut |doc: &mut Doc| {
        let mut service = match doc.get(SERVICE_KEY) {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        service.insert("role".into(), json!(role));
        doc.set(SERVICE_KEY, Value::Object(service));
        Ok(())
    })?;
    Ok(())
}

/// What a seed heartbeat body reports: `status` (the seed's or AINS's words), `progress`,
/// `ctx_used`, `ctx_limit`, `note`, `cost_usd`, `tokens`; other scalar fields (`p95_ms`,
/// `queue_depth`, `uptime_ms`, ...) are kept as the agent's metadata.
pub fn beat_report(body: &Map<String, Value>) -> Result<BeatReport> {
    let number = |key: &str| -> Result<Option<f64>> {
        match body.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| Error::usage(format!("\"{key}\" must be a number, not {v}"))),
        }
    };
    let count = |key: &str| -> Result<Option<u64>> {
        match body.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| Error::usage(format!("\"{key}\" must be a whole number, not {v}"))),
        }
    };
    let status = match body.get("status") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(v) => {
            return Err(Error::usage(format!(
                "\"status\" must be a string, not {v}"
            )))
        }
    };
    const OWN: [&str; 12] = [
        "service_id",
        "agent_id",
        "status",
        "progress",
        "ctx_used",
        "ctx_limit",
        "note",
        "cost_usd",
        "tokens",
        "timestamp",
        "metrics",
        "run_id",
    ];
    let mut meta = Vec::new();
    for (key, value) in body {
        if OWN.contains(&key.as_str()) {
            continue;
        }
        match value {
            Value::String(s) => meta.push((key.clone(), s.clone())),
            Value::Number(n) => meta.push((key.clone(), n.to_string())),
            Value::Bool(b) => meta.push((key.clone(), b.to_string())),
            _ => {}
        }
    }
    if let Some(Value::Object(metrics)) = body.get("metrics") {
        for (key, value) in metrics {
            if let Value::Number(n) = value {
                meta.push((key.clone(), n.to_string()));
            }
        }
    }
    Ok(BeatReport {
        status: rules::reported(status)?,
        progress: number("progress")?,
        ctx_used: count("ctx_used")?,
        ctx_limit: count("ctx_limit")?,
        meta,
        note: body.get("note").and_then(Value::as_str).map(String::from),
        cost_usd: number("cost_usd")?,
        tokens: count("tokens")?,
    })
}

/// A service as the seed shows it, from the agent's view and file.
pub fn service_view(cell: &str, view: &AgentView, doc: Option<&Doc>) -> Value {
    let service = doc
        .and_then(|d| d.get(SERVICE_KEY))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let field = |key: &str, default: Value| service.get(key).cloned().unwrap_or(default);
    json!({
        "service_id": view.id,
        "name": view.name.clone().unwrap_or_else(|| view.id.clone()),
        "type": field("type", json!("agent")),
        "role": field("role", json!("production")),
        "url": field("url", Value::Null),
        "caps": view.capabilities,
        "labels": field("labels", json!({})),
        "ctx_limit": field("ctx_limit", json!(view.ctx_limit)),
        "status": rules::seed_status(view.health),
        "health": view.health.as_str(),
        "last_heartbeat_ts": view.last_heartbeat,
        "heartbeat_interval_s": field("heartbeat_interval_s", Value::Null),
        "ttl_s": field("ttl_s", Value::Null),
        "registered_at": field("registered_at", Value::Null),
        "cell": cell,
    })
}

/// Every agent of `cell` as a seed service (agents pas knows without a registration are
/// services of type `agent`).
pub fn services(store: &dyn Store, cell: &str, now: DateTime<Utc>) -> Result<Vec<Value>> {
    let view = status::cell_view(store, cell, false, now)?;
    let (docs, _) = agent::read_all(store, cell)?;
    let by_id: BTreeMap<String, Doc> = docs
        .into_iter()
        .filter_map(|d| Some((d.str("agent_id")?.to_string(), d)))
        .collect();
    Ok(view
        .agents
        .iter()
        .map(|a| service_view(cell, a, by_id.get(&a.id)))
        .collect())
}

/// One service.
pub fn service(store: &dyn Store, cell: &str, id: &str, now: DateTime<Utc>) -> Result<Value> {
    check_id(IdKind::Agent, id)?;
    services(store, cell, now)?
        .into_iter()
        .find(|s| s["service_id"] == id)
        .ok_or_else(|| {
            Error::not_found(format!("no service {id} in cell {cell}"))
                .hint("GET /services lists them")
        })
}

/// Records a beat of service `id`.
pub fn beat(
    store: &dyn Store,
    cell: &str,
    id: &str,
    report: &BeatReport,
    now: DateTime<Utc>,
) -> Result<BeatReply> {
    check_id(IdKind::Agent, id)?;
    crate::ops::heartbeat::beat(store, cell, id, report, now)
}

/// One pass of the seed's monitor over `cell`: health changes are recorded (their events
/// are the alerts: `agent.late`, `agent.down`, `agent.dead`, `agent.recovered`), and
/// registered services silent for three intervals and their ttl are deregistered
/// (`agent.removed`). Returns the ids deregistered and the shortest interval seen.
pub fn sweep(
    store: &dyn Store,
    cell: &str,
    now: DateTime<Utc>,
) -> Result<(Vec<String>, Option<f64>)> {
    let view = status::cell_view(store, cell, true, now)?;
    let (docs, _) = agent::read_all(store, cell)?;
    let mut gone = Vec::new();
    let mut shortest: Option<f64> = None;
    for doc in docs {
        let Some(service) = doc.get(SERVICE_KEY) else {
            continue;
        };
        let Some(id) = doc.str("agent_id") else {
            continue;
        };
        let interval = service
            .get("heartbeat_interval_s")
            .and_then(Value::as_f64)
            .unwrap_or(rules::DEFAULT_INTERVAL);
        shortest = Some(shortest.map_or(interval, |s| s.min(interval)));
        let ttl = service.get("ttl_s").and_then(Value::as_f64);
        let since = view
            .agents
            .iter()
            .find(|a| a.id == id)
            .and_then(|a| a.heartbeat_age_seconds)
            .or_else(|| {
                let at = service.get("registered_at")?.as_str()?;
                Some((now - clock::parse(at)?).num_milliseconds() as f64 / 1000.0)
            });
        if since.is_some_and(|s| rules::deregister(s, interval, ttl)) {
            agent::remove(store, cell, id, true, now)?;
            gone.push(id.to_string());
        }
    }
    Ok((gone, shortest))
}

/// The agent file's key for the capabilities AINS registered, in full.
pub const AINS_CAPABILITIES_KEY: &str = "ains_capabilities";

/// Adds (or replaces, by `name`) a capability an AINS agent declares: its name joins the
/// agent's capabilities, the whole declaration is kept under `ains_capabilities`.
pub fn add_capability(
    store: &dyn Store,
    cell: &str,
    id: &str,
    capability: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<Doc> {
    let name = capability
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| {
            Error::usage("a capability needs \"name\"")
                .hint("send {\"name\": ..., \"input_schema\": {...}, \"output_schema\": {...}}")
        })?
        .to_string();
    agent::read(store, cell, id)?;
    store::update_agent_with(store, cell, id, now, Vec::new(), &mut |doc: &mut Doc| {
        let mut caps = doc.strings("capabilities");
        if !caps.contains(&name) {
            caps.push(name.clone());
        }
        doc.set("capabilities", json!(caps));
        let mut declared: Vec<Value> = match doc.get(AINS_CAPABILITIES_KEY) {
            Some(Value::Array(list)) => list.clone(),
            _ => Vec::new(),
        };
        declared.retain(|c| c.get("name").and_then(Value::as_str) != Some(name.as_str()));
        declared.push(Value::Object(capability.clone()));
        doc.set(AINS_CAPABILITIES_KEY, Value::Array(declared));
        Ok(())
    })
}
