//! Resource quotas and reservations: leases of CPU, memory, GPU, GPU memory and ports that
//! agents' jobs hold against the cell's `config/isolation.json` `resource_limits`.
//!
//! Reserving holds the cell lock while it adds up what is active, so 50 concurrent
//! reservations never exceed the quota. A reservation is a lease of its agent: when the agent
//! finally fails or is removed, its reservations are released (with an event).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::clock;
use crate::doc::Doc;
use crate::error::{Error, Result};
use crate::model::{EventKind, ReservationStatus};
use crate::process::{self, StopOutcome};
use crate::store::events::{Level, NewEvent};
use crate::store::{self, check_id, ConfigFile, FileKey, IdKind, Store, Txn};
use crate::templates;
use crate::units::{self, Unit};

/// The resources a quota limits: key in `resource_limits` and in a reservation, unit, label.
pub const RESOURCES: [(&str, Unit, &str); 4] = [
    ("cpu", Unit::Cores, "cpu"),
    ("memory", Unit::Bytes, "memory"),
    ("gpu", Unit::Count, "gpu"),
    ("gpu_memory", Unit::Bytes, "gpu memory"),
];

/// Amounts of the four resources, in `RESOURCES` order.
pub type Amounts = [f64; 4];

/// What `pas reserve` asks for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The job's id.
    pub job: String,
    /// The agent holding the lease.
    pub agent: String,
    /// Amounts wanted.
    pub amounts: Amounts,
    /// A port.
    pub port: Option<u16>,
    /// The job's process group.
    pub pgid: Option<i32>,
}

/// The capacity in `config/isolation.json` (`None`: no limit for that resource).
pub fn capacity(isolation: Option<&Doc>) -> Result<[Option<f64>; 4]> {
    let mut cap = [None; 4];
    let limits = isolation
        .and_then(|d| d.get("resource_limits"))
        .and_then(Value::as_object);
    if let Some(limits) = limits {
        for (i, (key, unit, _)) in RESOURCES.iter().enumerate() {
            if let Some(v) = limits.get(*key).filter(|v| !v.is_null()) {
                cap[i] = Some(units::parse(
                    v,
                    *unit,
                    &format!("config/isolation.json resource_limits.{key}"),
                )?);
            }
        }
    }
    Ok(cap)
}

fn load(store: &dyn Store, cell: &str) -> Result<Vec<Value>> {
    Ok(list_of(store.read(cell, FileKey::Reservations)?.as_ref()))
}

fn list_of(doc: Option<&crate::doc::Doc>) -> Vec<Value> {
    doc.and_then(|d| d.get("reservations").and_then(Value::as_array).cloned())
        .unwrap_or_default()
}

/// The reservations as the transaction sees them.
fn load_in(txn: &mut Txn<'_>) -> Result<Vec<Value>> {
    Ok(list_of(txn.read(FileKey::Reservations)?.as_ref()))
}

fn save_in(txn: &mut Txn<'_>, list: Vec<Value>) -> Result<()> {
    let mut doc = txn.read(FileKey::Reservations)?.unwrap_or_default();
    doc.set("reservations", Value::from(list));
    txn.put(FileKey::Reservations, doc);
    Ok(())
}

fn amounts_of(r: &Value) -> Amounts {
    let mut a = [0.0; 4];
    for (i, (key, _, _)) in RESOURCES.iter().enumerate() {
        a[i] = r.get(*key).and_then(Value::as_f64).unwrap_or(0.0);
    }
    a
}

fn is_active(r: &Value) -> bool {
    r.get("status").and_then(Value::as_str) == Some("active")
}

/// What is reserved now, by resource.
pub fn reserved(list: &[Value]) -> Amounts {
    let mut sum = [0.0; 4];
    for r in list.iter().filter(|r| is_active(r)) {
        for (i, v) in amounts_of(r).iter().enumerate() {
            sum[i] += v;
        }
    }
    sum
}

/// Reserves, or refuses naming every resource that is short.
pub fn reserve(store: &dyn Store, cell: &str, req: &Request, now: DateTime<Utc>) -> Result<Value> {
    check_id(IdKind::Job, &req.job)?;
    check_id(IdKind::Agent, &req.agent)?;
    crate::ops::agent::read(store, cell, &req.agent)?;
    store::transact(store, cell, now, |txn| {
        let cap = capacity(txn.read(FileKey::Config(ConfigFile::Isolation))?.as_ref())?;
        let mut list = load_in(txn)?;
        if list
            .iter()
            .any(|r| is_active(r) && r.get("job").and_then(Value::as_str) == Some(req.job.as_str()))
        {
            return Err(Error::conflict(format!(
                "job {} already holds a reservation in cell {cell}",
                req.job
            ))
            .hint("release it first, or pick another job id"));
        }
        if let Some(port) = req.port {
            if let Some(holder) = list.iter().find(|r| {
                is_active(r) && r.get("port").and_then(Value::as_u64) == Some(u64::from(port))
            }) {
                return Err(Error::conflict(format!(
                    "port {port} is already reserved by job {}",
                    holder.get("job").and_then(Value::as_str).unwrap_or("?")
                )));
            }
        }
        let held = reserved(&list);
        let mut short = Vec::new();
        for (i, (_, unit, label)) in RESOURCES.iter().enumerate() {
            if let Some(c) = cap[i] {
                let free = (c - held[i]).max(0.0);
                if req.amounts[i] > free + 1e-9 {
                    short.push(format!(
                        "{label}: {} asked, {} free of {} (short by {})",
                        units::show(req.amounts[i], *unit),
                        units::show(free, *unit),
                        units::show(c, *unit),
                        units::show(req.amounts[i] - free, *unit)
                    ));
                }
            }
        }
        if !short.is_empty() {
            return Err(Error::conflict(format!(
                "reservation {} refused, over quota: {}",
                req.job,
                short.join("; ")
            ))
            .hint("release something, ask for less, or raise the quota with `pas quota set`"));
        }
        let mut entry = Map::new();
        entry.insert("job".into(), json!(req.job));
        entry.insert("agent".into(), json!(req.agent));
        for (i, (key, _, _)) in RESOURCES.iter().enumerate() {
            entry.insert((*key).into(), json!(req.amounts[i]));
        }
        entry.insert("port".into(), json!(req.port));
        entry.insert("pgid".into(), json!(req.pgid));
        entry.insert("status".into(), json!("active"));
        entry.insert("reserved_at".into(), json!(clock::stamp(now)));
        entry.insert("ended_at".into(), Value::Null);
        entry.insert("end_reason".into(), Value::Null);
        let entry = Value::Object(entry);
        list.push(entry.clone());
        save_in(txn, list)?;
        txn.event(
            NewEvent::new(
                Level::Info,
                EventKind::ReservationMade,
                format!("job {} reserved resources for agent {}", req.job, req.agent),
            )
            .agent(&req.agent)
            .details(entry.clone()),
        );
        Ok(entry)
    })
}

/// Ends the active reservations matching `which`; returns them.
fn end(
    store: &dyn Store,
    cell: &str,
    which: &dyn Fn(&Value) -> bool,
    status: ReservationStatus,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Value>> {
    store::transact(store, cell, now, |txn| {
        let mut list = load_in(txn)?;
        let mut ended = Vec::new();
        for r in list.iter_mut().filter(|r| is_active(r) && which(r)) {
            if let Value::Object(m) = r {
                m.insert("status".into(), json!(status.as_str()));
                m.insert("ended_at".into(), json!(clock::stamp(now)));
                m.insert("end_reason".into(), json!(reason));
            }
            ended.push(r.clone());
        }
        if !ended.is_empty() {
            save_in(txn, list)?;
        }
        for r in &ended {
            let job = r.get("job").and_then(Value::as_str).unwrap_or("?");
            let agent = r.get("agent").and_then(Value::as_str).unwrap_or("?");
            txn.event(
                NewEvent::new(
                    Level::Info,
                    EventKind::reservation(status),
                    format!("reservation of job {job} {} ({reason})", status.as_str()),
                )
                .agent(agent)
                .details(r.clone()),
            );
        }
        Ok(ended)
    })
}

/// Releases a job's reservation; releasing twice is harmless (`false` the second time).
pub fn release(store: &dyn Store, cell: &str, job: &str, now: DateTime<Utc>) -> Result<bool> {
    check_id(IdKind::Job, job)?;
    let known = load(store, cell)?
        .iter()
        .any(|r| r.get("job").and_then(Value::as_str) == Some(job));
    if !known {
        return Err(
            Error::not_found(format!("no reservation for job {job} in cell {cell}"))
                .hint("`pas reservations` lists them"),
        );
    }
    Ok(!end(
        store,
        cell,
        &|r| r.get("job").and_then(Value::as_str) == Some(job),
        ReservationStatus::Released,
        "released",
        now,
    )?
    .is_empty())
}

/// Stops a job's process group (if it has one) and ends its reservation as killed.
pub fn kill(
    store: &dyn Store,
    cell: &str,
    job: &str,
    grace: std::time::Duration,
    now: DateTime<Utc>,
) -> Result<(StopOutcome, bool)> {
    check_id(IdKind::Job, job)?;
    let list = load(store, cell)?;
    let Some(r) = list
        .iter()
        .rev()
        .find(|r| r.get("job").and_then(Value::as_str) == Some(job))
    else {
        return Err(Error::not_found(format!(
            "no reservation for job {job} in cell {cell}"
        )));
    };
    let outcome = match process::recorded_pid(r.get("pgid")) {
        Some(pgid) if is_active(r) => process::stop_group(pgid, grace)
            .map_err(|e| Error::failure(format!("cannot signal job {job}: {e}")))?,
        _ => StopOutcome::NotRunning,
    };
    let ended = end(
        store,
        cell,
        &|r| r.get("job").and_then(Value::as_str) == Some(job),
        ReservationStatus::Killed,
        "killed",
        now,
    )?;
    Ok((outcome, !ended.is_empty()))
}

/// Releases every active reservation of an agent (its lease ends with it).
pub fn release_agent(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Value>> {
    end(
        store,
        cell,
        &|r| r.get("agent").and_then(Value::as_str) == Some(agent),
        ReservationStatus::Released,
        reason,
        now,
    )
}

/// Reservations, optionally only those with a status.
pub fn list(store: &dyn Store, cell: &str, status: Option<&str>) -> Result<Vec<Value>> {
    Ok(load(store, cell)?
        .into_iter()
        .filter(|r| status.is_none_or(|s| r.get("status").and_then(Value::as_str) == Some(s)))
        .collect())
}

/// One resource of a quota.
#[derive(Debug, Clone, Serialize)]
pub struct QuotaLine {
    /// The resource.
    pub resource: &'static str,
    /// The capacity (`None`: unlimited).
    pub capacity: Option<f64>,
    /// Reserved now.
    pub reserved: f64,
    /// Free now (`None`: unlimited).
    pub free: Option<f64>,
    /// For people.
    pub shown: [String; 3],
}

/// Capacity, reserved and free, per resource.
pub fn quota(store: &dyn Store, cell: &str) -> Result<Vec<QuotaLine>> {
    let cap = capacity(
        store
            .read(cell, FileKey::Config(ConfigFile::Isolation))?
            .as_ref(),
    )?;
    let held = reserved(&load(store, cell)?);
    Ok(RESOURCES
        .iter()
        .enumerate()
        .map(|(i, (key, unit, _))| {
            let free = cap[i].map(|c| (c - held[i]).max(0.0));
            QuotaLine {
                resource: key,
                capacity: cap[i],
                reserved: held[i],
                free,
                shown: [
                    cap[i].map_or("unlimited".into(), |c| units::show(c, *unit)),
                    units::show(held[i], *unit),
                    free.map_or("unlimited".into(), |f| units::show(f, *unit)),
                ],
            }
        })
        .collect())
}

/// Sets quota values (as typed: `"4 cores"`, `"8GB"`) in `config/isolation.json`.
pub fn set_quota(
    store: &dyn Store,
    cell: &str,
    values: &[(&str, String)],
    now: DateTime<Utc>,
) -> Result<()> {
    for (key, text) in values {
        let unit = RESOURCES
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, u, _)| *u)
            .unwrap_or(Unit::Count);
        let flag = match *key {
            "memory" => "--mem".to_string(),
            "gpu_memory" => "--gpu-mem".to_string(),
            k => format!("--{k}"),
        };
        units::parse_text(text, unit, &flag)?;
    }
    store::transact(store, cell, now, |txn| {
        let key = FileKey::Config(ConfigFile::Isolation);
        let mut doc = match txn.read(key)? {
            Some(d) => d,
            None => templates::doc(templates::ISOLATION, "templates/isolation.json")?,
        };
        let mut limits = doc
            .get("resource_limits")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (k, v) in values {
            limits.insert((*k).to_string(), Value::from(v.as_str()));
        }
        doc.set("resource_limits", Value::Object(limits));
        txn.put(key, doc);
        txn.event(
            NewEvent::new(
                Level::Info,
                EventKind::QuotaSet,
                "quota changed".to_string(),
            )
            .details(json!(values
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<std::collections::BTreeMap<_, _>>())),
        );
        Ok(())
    })
}
