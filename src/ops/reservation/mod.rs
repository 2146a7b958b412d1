//! Resource quotas and reservations: leases of CPU, memory, GPU, GPU memory and ports that
//! agents' jobs hold against the cell's `config/isolation.json` `resource_limits`.
//!
//! Reserving holds the cell lock while it adds up what is active, so 50 concurrent
//! reservations never exceed the quota. A reservation is a lease of its agent: when the agent
//! finally fails or is removed, its reservations are released (with an event).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::doc::Doc;
use crate::error::{Error, Result};
use crate::model::field::Field;
use crate::model::{
    EventKind, Isolation, Quantity, Reservation, ReservationStatus, Reservations, ResourceLimits,
};
use crate::process::{self, StopOutcome};
use crate::store::events::{Level, NewEvent};
use crate::store::{self, check_id, ConfigFile, FileKey, IdKind, Store, Txn};
use crate::templates;
use crate::units::{self, Unit};

/// The resources a quota limits: name (in `resource_limits`, in a reservation, in `pas
/// quota`'s output), unit, label.
pub const RESOURCES: [(&str, Unit, &str); 4] = [
    ("cpu", Unit::Cores, "cpu"),
    ("memory", Unit::Bytes, "memory"),
    ("gpu", Unit::Count, "gpu"),
    ("gpu_memory", Unit::Bytes, "gpu memory"),
];

/// Amounts of the four resources, in `RESOURCES` order.
pub type Amounts = [f64; 4];

/// The limits of `limits`, in `RESOURCES` order.
fn limits_mut(limits: &mut ResourceLimits) -> [&mut Option<Quantity>; 4] {
    [
        &mut limits.cpu,
        &mut limits.memory,
        &mut limits.gpu,
        &mut limits.gpu_memory,
    ]
}

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

/// The capacity in `config/isolation.json` (`None`: no limit for that resource); a file
/// with a field of the wrong shape is a data error naming it.
pub fn capacity(isolation: Option<&Doc>) -> Result<[Option<f64>; 4]> {
    let Some(doc) = isolation else {
        return Ok([None; 4]);
    };
    let mut limits = Isolation::from_doc(doc)?.resource_limits;
    let mut cap = [None; 4];
    for (i, limit) in limits_mut(&mut limits).into_iter().enumerate() {
        let (key, unit, _) = RESOURCES[i];
        if let Some(q) = limit {
            cap[i] = Some(q.amount(
                unit,
                &format!("config/isolation.json resource_limits.{key}"),
            )?);
        }
    }
    Ok(cap)
}

/// The cell's reservations; a cell without the file has none.
fn load(store: &dyn Store, cell: &str) -> Result<Reservations> {
    match store.read(cell, FileKey::Reservations)? {
        Some(doc) => Reservations::from_doc(&doc),
        None => Ok(Reservations::default()),
    }
}

/// The reservations as the transaction sees them: the document and its typed view.
fn load_in(txn: &mut Txn<'_>) -> Result<(Doc, Reservations)> {
    let doc = txn.read(FileKey::Reservations)?.unwrap_or_default();
    let list = Reservations::from_doc(&doc)?;
    Ok((doc, list))
}

/// Writes `list` into `doc` (entry by entry, keeping what it does not know) and stages it.
fn save_in(txn: &mut Txn<'_>, mut doc: Doc, list: &Reservations) {
    list.write_into(&mut doc);
    txn.put(FileKey::Reservations, doc);
}

/// What the reservations of `list` hold, by resource (ended ones too: filter them first).
pub fn held<'a>(list: impl IntoIterator<Item = &'a Reservation>) -> Amounts {
    let mut sum = [0.0; 4];
    for r in list {
        for (i, v) in r.amounts().iter().enumerate() {
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
        let (doc, mut list) = load_in(txn)?;
        if list.active().any(|r| r.job == req.job) {
            return Err(Error::conflict(format!(
                "job {} already holds a reservation in cell {cell}",
                req.job
            ))
            .hint("release it first, or pick another job id"));
        }
        if let Some(port) = req.port {
            if let Some(holder) = list.active().find(|r| r.port == Some(port)) {
                return Err(Error::conflict(format!(
                    "port {port} is already reserved by job {}",
                    holder.job
                )));
            }
        }
        let held = held(list.active());
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
        let [cpu, memory, gpu, gpu_memory] = req.amounts;
        let entry = Reservation {
            job: req.job.clone(),
            agent: req.agent.clone(),
            cpu,
            memory,
            gpu,
            gpu_memory,
            port: req.port,
            pgid: req.pgid,
            status: ReservationStatus::Active,
            reserved_at: now,
            ended_at: None,
            end_reason: None,
            extra: Map::new(),
        };
        let shown = entry.encode();
        list.reservations.push(entry);
        save_in(txn, doc, &list);
        txn.event(
            NewEvent::new(
                Level::Info,
                EventKind::ReservationMade,
                format!("job {} reserved resources for agent {}", req.job, req.agent),
            )
            .agent(&req.agent)
            .details(shown.clone()),
        );
        Ok(shown)
    })
}

/// Ends the active reservations matching `which`; returns them.
fn end(
    store: &dyn Store,
    cell: &str,
    which: &dyn Fn(&Reservation) -> bool,
    status: ReservationStatus,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Reservation>> {
    store::transact(store, cell, now, |txn| {
        let (doc, mut list) = load_in(txn)?;
        let mut ended = Vec::new();
        for r in list
            .reservations
            .iter_mut()
            .filter(|r| r.status == ReservationStatus::Active && which(r))
        {
            r.status = status;
            r.ended_at = Some(now);
            r.end_reason = Some(reason.to_string());
            ended.push(r.clone());
        }
        if !ended.is_empty() {
            save_in(txn, doc, &list);
        }
        for r in &ended {
            txn.event(
                NewEvent::new(
                    Level::Info,
                    EventKind::reservation(status),
                    format!("reservation of job {} {status} ({reason})", r.job),
                )
                .agent(&r.agent)
                .details(r.encode()),
            );
        }
        Ok(ended)
    })
}

/// Releases a job's reservation; releasing twice is harmless (`false` the second time).
pub fn release(store: &dyn Store, cell: &str, job: &str, now: DateTime<Utc>) -> Result<bool> {
    check_id(IdKind::Job, job)?;
    let known = load(store, cell)?.reservations.iter().any(|r| r.job == job);
    if !known {
        return Err(
            Error::not_found(format!("no reservation for job {job} in cell {cell}"))
                .hint("`pas reservations` lists them"),
        );
    }
    Ok(!end(
        store,
        cell,
        &|r| r.job == job,
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
    let Some(r) = list.reservations.iter().rev().find(|r| r.job == job) else {
        return Err(Error::not_found(format!(
            "no reservation for job {job} in cell {cell}"
        )));
    };
    // Only a positive pgid names one process group (0 and -1 mean others to kill(2)).
    let outcome = match r.pgid.filter(|p| *p > 0) {
        Some(pgid) if r.status == ReservationStatus::Active => process::stop_group(pgid, grace)
            .map_err(|e| Error::failure(format!("cannot signal job {job}: {e}")))?,
        _ => StopOutcome::NotRunning,
    };
    let ended = end(
        store,
        cell,
        &|r| r.job == job,
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
) -> Result<Vec<Reservation>> {
    end(
        store,
        cell,
        &|r| r.agent == agent,
        ReservationStatus::Released,
        reason,
        now,
    )
}

/// Reservations, optionally only those with a status.
pub fn list(
    store: &dyn Store,
    cell: &str,
    status: Option<ReservationStatus>,
) -> Result<Vec<Reservation>> {
    let mut all = load(store, cell)?.reservations;
    all.retain(|r| status.is_none_or(|s| s == r.status));
    Ok(all)
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
    let held = held(load(store, cell)?.active());
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
        let Some((_, unit, _)) = RESOURCES.iter().find(|(k, _, _)| k == key) else {
            return Err(Error::usage(format!(
                "{key} is not a quota resource; the quota limits cpu, memory, gpu and gpu_memory"
            )));
        };
        let flag = match *key {
            "memory" => "--mem".to_string(),
            "gpu_memory" => "--gpu-mem".to_string(),
            k => format!("--{k}"),
        };
        units::parse_text(text, *unit, &flag)?;
    }
    store::transact(store, cell, now, |txn| {
        let key = FileKey::Config(ConfigFile::Isolation);
        let mut doc = match txn.read(key)? {
            Some(d) => d,
            None => templates::doc(templates::ISOLATION, "templates/isolation.json")?,
        };
        Isolation::edit(&mut doc, |iso| {
            let limits = limits_mut(&mut iso.resource_limits);
            for (k, v) in values {
                if let Some(i) = RESOURCES.iter().position(|(name, _, _)| name == k) {
                    *limits[i] = Some(Quantity::Text(v.clone()));
                }
            }
        })?;
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
