//! Resource quotas and reservations: leases of CPU, memory, GPU, GPU memory and ports that
//! agents' jobs hold against the cell's `config/isolation.json` `resource_limits`.
//!
//! A reservation must fit two levels: its cell's quota and the machine's capacity
//! (`pas.toml` `[capacity]`, else what the machine has), which all cells share. The machine
//! level is kept in a root-level ledger (the store's [`RootDoc::Machine`]): every active
//! reservation of every cell, changed only under the root-wide `machine` lock, which every
//! reserve and release holds around its cell transaction (lock order: machine, then cell).
//! So concurrent reservers from many cells are granted exactly what fits.
//!
//! The ledger is written before the cell when reserving and after it when releasing, so a
//! crash between the two leaves the ledger holding too much, never too little; when it
//! would refuse, entries whose cell no longer holds them are dropped first.
//!
//! A reservation is a lease of its agent: when the agent finally fails or is removed, its
//! reservations are released (with an event).

pub mod rules;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::doc::Doc;
use crate::error::{Error, Result};
use crate::model::field::Field;
use crate::model::{
    EventKind, Isolation, Quantity, Reservation, ReservationStatus, Reservations, ResourceLimits,
};
use crate::store::events::{Level, NewEvent};
use crate::store::{self, check_id, ConfigFile, FileKey, IdKind, RootDoc, Store, Txn};
use crate::templates;
use crate::units::{self, Unit};
use crate::usage::{self, Ended};

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
    /// The job's process (it and its descendants are what `pas kill` ends).
    pub pid: Option<i32>,
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

/// The machine's capacity: what `pas.toml` `[capacity]` sets, else what the machine has.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Machine {
    /// Per resource, `RESOURCES` order (`None`: unknown, so unlimited).
    pub capacity: [Option<f64>; 4],
    /// Which of them were measured rather than set in `pas.toml`.
    pub measured: [bool; 4],
    /// The ports reservations may hold (`None`: any).
    pub ports: Option<(u16, u16)>,
}

/// The machine's capacity for the root of `store`.
pub fn machine(store: &dyn Store) -> Result<Machine> {
    let set = crate::config::load(store)?.capacity;
    let mb = |v: Option<f64>| v.map(|m| m * 1e6);
    let configured = [set.cpu, mb(set.mem_mb), set.gpu, mb(set.gpu_mem_mb)];
    let measured = if configured.iter().all(Option::is_some) {
        [None; 4]
    } else {
        usage::machine()
    };
    let mut m = Machine {
        capacity: [None; 4],
        measured: [false; 4],
        ports: set.ports,
    };
    for i in 0..4 {
        m.capacity[i] = configured[i].or(measured[i]);
        m.measured[i] = configured[i].is_none();
    }
    Ok(m)
}

/// The machine ledger: one entry per active reservation of any cell.
struct Ledger {
    doc: Doc,
    entries: Vec<Value>,
}

impl Ledger {
    /// Reads it; the caller holds the `machine` lock.
    fn read(store: &dyn Store) -> Result<Ledger> {
        let doc = store.read_root_doc(RootDoc::Machine)?.unwrap_or_default();
        let entries = match doc.get("reservations") {
            None => Vec::new(),
            Some(Value::Array(list)) => list.clone(),
            Some(_) => {
                return Err(Error::data(
                    "the machine ledger's reservations is not a list".to_string(),
                )
                .hint("remove .pas/machine.json under the missions root; pas rebuilds it from the cells when it refuses"))
            }
        };
        Ok(Ledger { doc, entries })
    }

    fn write(&mut self, store: &dyn Store) -> Result<()> {
        self.doc
            .set("reservations", Value::Array(self.entries.clone()));
        store.write_root_doc(RootDoc::Machine, &self.doc)
    }

    fn names(e: &Value) -> (&str, &str) {
        (
            e.get("cell").and_then(Value::as_str).unwrap_or_default(),
            e.get("job").and_then(Value::as_str).unwrap_or_default(),
        )
    }

    /// What every entry holds, `RESOURCES` order.
    fn held(&self) -> Amounts {
        let mut sum = [0.0; 4];
        for e in &self.entries {
            for (i, (key, _, _)) in RESOURCES.iter().enumerate() {
                sum[i] += e.get(*key).and_then(Value::as_f64).unwrap_or(0.0);
            }
        }
        sum
    }

    /// The `(cell, job)` holding `port`.
    fn port_holder(&self, port: u16) -> Option<(&str, &str)> {
        self.entries
            .iter()
            .find(|e| e.get("port").and_then(Value::as_u64) == Some(u64::from(port)))
            .map(Self::names)
    }

    fn remove(&mut self, cell: &str, jobs: &[&str]) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| {
            let (c, j) = Self::names(e);
            !(c == cell && jobs.contains(&j))
        });
        self.entries.len() != before
    }

    /// Drops entries whose cell does not hold them (left by a crash between the ledger's
    /// write and the cell's, or by a cell removed meanwhile); `true` when any went.
    fn heal(&mut self, store: &dyn Store) -> Result<bool> {
        let mut cells: Vec<String> = self
            .entries
            .iter()
            .map(|e| Self::names(e).0.to_string())
            .collect();
        cells.sort();
        cells.dedup();
        let mut held: std::collections::HashSet<(String, String)> = Default::default();
        for cell in &cells {
            if !store.has_cell(cell) {
                continue;
            }
            for r in load(store, cell)?.active() {
                held.insert((cell.clone(), r.job.clone()));
            }
        }
        let before = self.entries.len();
        self.entries.retain(|e| {
            let (c, j) = Self::names(e);
            held.contains(&(c.to_string(), j.to_string()))
        });
        Ok(self.entries.len() != before)
    }
}

/// Refuses `req` at the machine level, healing the ledger once before saying no.
fn fits_machine(
    store: &dyn Store,
    ledger: &mut Ledger,
    machine: &Machine,
    req: &Request,
) -> Result<()> {
    let refusal = |ledger: &Ledger| -> Option<String> {
        if let Some(port) = req.port {
            if let Some(r) = rules::port_refusal(port, machine.ports, ledger.port_holder(port)) {
                return Some(r);
            }
        }
        let level = rules::Level {
            name: "machine",
            capacity: machine.capacity,
            held: ledger.held(),
        };
        rules::decide(&[level], &req.amounts).err()
    };
    let Some(mut why) = refusal(ledger) else {
        return Ok(());
    };
    if ledger.heal(store)? {
        ledger.write(store)?;
        match refusal(ledger) {
            None => return Ok(()),
            Some(w) => why = w,
        }
    }
    Err(Error::conflict(format!("reservation {} refused, {why}", req.job)).hint(
        "release something, ask for less, or raise the capacity in pas.toml [capacity] (see `pas quota`)",
    ))
}

/// Reserves, or refuses naming every resource that is short at the cell's level and the
/// machine's.
pub fn reserve(store: &dyn Store, cell: &str, req: &Request, now: DateTime<Utc>) -> Result<Value> {
    check_id(IdKind::Job, &req.job)?;
    check_id(IdKind::Agent, &req.agent)?;
    crate::ops::agent::read(store, cell, &req.agent)?;
    let machine = machine(store)?;
    let pid_start_time = match req.pid {
        None => None,
        Some(pid) => Some(crate::process::start_time(pid).ok_or_else(|| {
            Error::not_found(format!("--pid {pid}: no such process"))
                .hint("give the pid of the job's running process")
        })?),
    };
    let _machine_lock = store.lock_root(RootDoc::Machine.lock_name())?;
    let mut ledger = Ledger::read(store)?;
    let cell_held = || -> Result<Option<String>> {
        let cap = capacity(
            store
                .read(cell, FileKey::Config(ConfigFile::Isolation))?
                .as_ref(),
        )?;
        let list = load(store, cell)?;
        Ok(refuse_in_cell(&list, &cap, req))
    };
    if let Some(why) = cell_held()? {
        return Err(cell_refusal(why, req));
    }
    fits_machine(store, &mut ledger, &machine, req)?;
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
        pid: req.pid,
        pid_start_time,
        status: ReservationStatus::Active,
        reserved_at: now,
        ended_at: None,
        end_reason: None,
        extra: Map::new(),
    };
    let shown = entry.encode();
    // The ledger first: a crash before the cell's write leaves it holding too much.
    let mut line = json!({ "cell": cell, "job": req.job, "agent": req.agent });
    for (i, (key, _, _)) in RESOURCES.iter().enumerate() {
        line[*key] = json!(req.amounts[i]);
    }
    if let Some(port) = req.port {
        line["port"] = json!(port);
    }
    line["reserved_at"] = json!(crate::clock::stamp(now));
    ledger.entries.push(line);
    ledger.write(store)?;
    let made = store::transact(store, cell, now, |txn| {
        let cap = capacity(txn.read(FileKey::Config(ConfigFile::Isolation))?.as_ref())?;
        let (doc, mut list) = load_in(txn)?;
        if let Some(why) = refuse_in_cell(&list, &cap, req) {
            return Err(cell_refusal(why, req));
        }
        list.reservations.push(entry.clone());
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
        Ok(())
    });
    if let Err(e) = made {
        ledger.remove(cell, &[req.job.as_str()]);
        ledger.write(store)?;
        return Err(e);
    }
    Ok(shown)
}

/// Why the cell refuses `req`, if it does: the job or port is taken, or the quota is short.
fn refuse_in_cell(list: &Reservations, cap: &[Option<f64>; 4], req: &Request) -> Option<String> {
    if list.active().any(|r| r.job == req.job) {
        return Some(format!("job {} already holds a reservation", req.job));
    }
    if let Some(port) = req.port {
        if let Some(holder) = list.active().find(|r| r.port == Some(port)) {
            return Some(format!(
                "port {port} is already reserved by job {}",
                holder.job
            ));
        }
    }
    let level = rules::Level {
        name: "quota",
        capacity: *cap,
        held: held(list.active()),
    };
    rules::decide(&[level], &req.amounts)
        .err()
        .map(|why| format!("reservation {} refused, {why}", req.job))
}

fn cell_refusal(why: String, req: &Request) -> Error {
    let hint = if why.contains("over quota") {
        "release something, ask for less, or raise the quota with `pas quota set`"
    } else {
        "release it first, or pick another job id or port"
    };
    let _ = req;
    Error::conflict(why).hint(hint)
}

/// Ends the active reservations matching `which` (under the machine lock, returning their
/// capacity to the cell and the machine); returns them.
fn end(
    store: &dyn Store,
    cell: &str,
    which: &dyn Fn(&Reservation) -> bool,
    status: ReservationStatus,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Reservation>> {
    if !load(store, cell)?.active().any(which) {
        return Ok(Vec::new());
    }
    let _machine_lock = store.lock_root(RootDoc::Machine.lock_name())?;
    let ended = store::transact(store, cell, now, |txn| {
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
    })?;
    // The ledger after the cell: a crash between leaves it holding too much.
    let mut ledger = Ledger::read(store)?;
    let jobs: Vec<&str> = ended.iter().map(|r| r.job.as_str()).collect();
    if ledger.remove(cell, &jobs) {
        ledger.write(store)?;
    }
    Ok(ended)
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

/// How long `pas kill` waits after SIGKILL for the processes to be gone.
pub const KILL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Ends a job's processes (its process group's members and its pid, with all their
/// descendants) and only then ends its reservation as killed. A process that cannot be
/// signalled or survives is an error, and the reservation stays.
pub fn kill(
    store: &dyn Store,
    cell: &str,
    job: &str,
    grace: std::time::Duration,
    now: DateTime<Utc>,
) -> Result<(Ended, bool)> {
    check_id(IdKind::Job, job)?;
    let list = load(store, cell)?;
    let Some(r) = list.reservations.iter().rev().find(|r| r.job == job) else {
        return Err(Error::not_found(format!(
            "no reservation for job {job} in cell {cell}"
        )));
    };
    let outcome = if r.status == ReservationStatus::Active {
        let snap = usage::Snapshot::take()
            .map_err(|e| Error::failure(format!("cannot read /proc to find job {job}: {e}")))?;
        // A pid whose start time no longer matches is another process now: not the job.
        let pid = r.pid.filter(|p| {
            r.pid_start_time
                .is_none_or(|t| snap.procs.get(p).is_some_and(|pr| pr.start == t))
        });
        let targets = usage::job_processes(&snap, r.pgid, pid);
        usage::stop_tree(targets, grace, KILL_WAIT).map_err(|e| {
            Error::failure(format!("job {job} was not killed: {e}")).hint(match e {
                usage::StopError::Signal { .. } => {
                    "run pas kill as the user who owns the job's processes (or as root); the reservation stays active"
                }
                usage::StopError::Survived(_) => {
                    "a process in uninterruptible sleep (state D) ignores SIGKILL until its IO ends; try again, the reservation stays active"
                }
            })
        })?
    } else {
        Ended::NotRunning
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

/// Capacity, reserved and free of one level.
#[derive(Debug, Clone, Serialize)]
pub struct LevelLine {
    /// The capacity (`None`: unlimited).
    pub capacity: Option<f64>,
    /// Reserved now.
    pub reserved: f64,
    /// Free now (`None`: unlimited).
    pub free: Option<f64>,
}

impl LevelLine {
    fn new(capacity: Option<f64>, reserved: f64) -> LevelLine {
        LevelLine {
            capacity,
            reserved,
            free: capacity.map(|c| (c - reserved).max(0.0)),
        }
    }

    fn shown(&self, unit: Unit) -> [String; 3] {
        [
            self.capacity
                .map_or("unlimited".into(), |c| units::show(c, unit)),
            units::show(self.reserved, unit),
            self.free
                .map_or("unlimited".into(), |f| units::show(f, unit)),
        ]
    }
}

/// One resource of a quota: the cell's level (flat, as before) and the machine's.
#[derive(Debug, Clone, Serialize)]
pub struct QuotaLine {
    /// The resource.
    pub resource: &'static str,
    /// The cell's capacity (`None`: unlimited).
    pub capacity: Option<f64>,
    /// Reserved in the cell now.
    pub reserved: f64,
    /// Free in the cell now (`None`: unlimited).
    pub free: Option<f64>,
    /// For people: the cell's capacity, reserved, free.
    pub shown: [String; 3],
    /// The machine's level (all cells together), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<LevelLine>,
    /// For people: the machine's capacity, reserved, free.
    #[serde(skip)]
    pub machine_shown: [String; 3],
}

/// Capacity, reserved and free, per resource, of the cell only.
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
            let level = LevelLine::new(cap[i], held[i]);
            QuotaLine {
                resource: key,
                capacity: level.capacity,
                reserved: level.reserved,
                free: level.free,
                shown: level.shown(*unit),
                machine: None,
                machine_shown: Default::default(),
            }
        })
        .collect())
}

/// [`quota`] with the machine's level: its capacity and what all cells hold (the ledger).
pub fn quota_with_machine(store: &dyn Store, cell: &str) -> Result<(Vec<QuotaLine>, Machine)> {
    let mut lines = quota(store, cell)?;
    let machine = machine(store)?;
    let held = Ledger::read(store)?.held();
    for (i, line) in lines.iter_mut().enumerate() {
        let level = LevelLine::new(machine.capacity[i], held[i]);
        line.machine_shown = level.shown(RESOURCES[i].1);
        line.machine = Some(level);
    }
    Ok((lines, machine))
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
