//! Heartbeats, and the health changes they and observers record.
//!
//! A beat updates only the agent's own file under the agent's lock (no scan of the root, no
//! fsync: losing the last stamp on power loss is harmless) and writes an event only when the
//! agent's health changes. Observers (`pas status`, `pas check`, later `pas watch`) compare
//! the health they compute with the `health` recorded in the agent file and record each
//! change once, re-checking under the agent's lock.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::clock;
use crate::doc::Doc;
use crate::error::{Error, Result};
use crate::events::{Level, NewEvent};
use crate::health::{self, Assessment, Health};
use crate::policy::Policy;
use crate::store::{self, Collection, ConfigFile, Durability, FileKey, Store};

/// What an agent may report about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum Reported {
    /// Working normally.
    Active,
    /// Working, but impaired.
    Degraded,
    /// Deliberately not working; not judged by heartbeats.
    Offline,
}

impl Reported {
    /// The on-disk spelling (`reported_status`).
    pub fn as_str(self) -> &'static str {
        match self {
            Reported::Active => "ACTIVE",
            Reported::Degraded => "DEGRADED",
            Reported::Offline => "OFFLINE",
        }
    }
}

/// What a beat carries.
#[derive(Debug, Clone, Default)]
pub struct BeatReport {
    /// Reported status.
    pub status: Option<Reported>,
    /// Progress, 0 to 1.
    pub progress: Option<f64>,
    /// Context tokens in use.
    pub ctx_used: Option<u64>,
    /// Context window size.
    pub ctx_limit: Option<u64>,
    /// Metadata to merge.
    pub meta: Vec<(String, String)>,
    /// A short note (what the agent is doing).
    pub note: Option<String>,
    /// Money spent so far, in dollars (cumulative).
    pub cost_usd: Option<f64>,
    /// Tokens used so far (cumulative).
    pub tokens: Option<u64>,
}

/// Parses `KEY=VALUE`.
pub fn parse_meta(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(Error::usage(format!("--meta {text:?} is not KEY=VALUE"))
            .hint("for example --meta model=gpt-5")),
    }
}

impl BeatReport {
    fn check(&self) -> Result<()> {
        if let Some(p) = self.progress {
            if !(0.0..=1.0).contains(&p) || p.is_nan() {
                return Err(Error::usage(format!("--progress {p} is outside 0..1"))
                    .hint("pass a fraction, like 0.25"));
            }
        }
        if self.ctx_limit == Some(0) {
            return Err(Error::usage("--ctx-limit must be at least 1"));
        }
        if let Some(c) = self.cost_usd {
            if !(c >= 0.0 && c.is_finite()) {
                return Err(Error::usage(format!(
                    "--cost-usd {c} must be a non-negative amount"
                )));
            }
        }
        Ok(())
    }
}

/// What `pas agent beat` answers.
#[derive(Debug, Clone, Serialize)]
pub struct BeatReply {
    /// The beat was recorded.
    pub ack: bool,
    /// The cell.
    pub cell: String,
    /// The agent.
    pub agent: String,
    /// The agent's beat count after this beat.
    pub heartbeat_count: u64,
    /// Seconds until the next beat is due.
    pub next_beat_in: f64,
    /// The agent's health after this beat.
    pub health: Health,
    /// What pas wants from the agent: `stop`, `summarize`, or nothing.
    pub directive: Option<String>,
    /// Why (for `stop`: `cell_paused`, `cell_completed`, `agent_paused`, ...).
    pub reason: Option<String>,
}

/// The event for a health change, if it deserves one.
pub fn transition_event(
    agent_id: &str,
    from: Option<Health>,
    to: Health,
    age: Option<f64>,
) -> Option<NewEvent> {
    let from = from.unwrap_or(Health::Unknown);
    if from == to {
        return None;
    }
    let silent_for = age.map(clock::human_duration).unwrap_or_else(|| "-".into());
    let (level, kind, message) = match to {
        Health::Healthy if from.is_silent() => (
            Level::Info,
            "agent.recovered",
            format!("agent {agent_id} is beating again (was {})", from.as_str()),
        ),
        Health::Healthy if from == Health::Unknown => (
            Level::Info,
            "agent.alive",
            format!("agent {agent_id} sent its first beat"),
        ),
        Health::Healthy => (
            Level::Info,
            "agent.healthy",
            format!("agent {agent_id} is healthy again (was {})", from.as_str()),
        ),
        Health::Late => (
            Level::Warn,
            "agent.late",
            format!("agent {agent_id} missed a beat ({silent_for} silent)"),
        ),
        Health::Down => (
            Level::Error,
            "agent.down",
            format!("agent {agent_id} is down ({silent_for} silent)"),
        ),
        Health::Dead => (
            Level::Error,
            "agent.dead",
            format!("agent {agent_id} is dead ({silent_for} silent)"),
        ),
        Health::Degraded => (
            Level::Warn,
            "agent.degraded",
            format!("agent {agent_id} reports DEGRADED"),
        ),
        Health::Unhealthy => (
            Level::Error,
            "agent.unhealthy",
            format!("agent {agent_id} failed too often in a row"),
        ),
        Health::Offline => (
            Level::Info,
            "agent.offline",
            format!("agent {agent_id} reports OFFLINE"),
        ),
        Health::Failed => (
            Level::Error,
            "agent.failed",
            format!("agent {agent_id} has failed for good"),
        ),
        Health::Unknown => return None,
    };
    Some(
        NewEvent::new(level, kind, message)
            .agent(agent_id)
            .details(json!({ "from": from.as_str(), "to": to.as_str(), "silent_seconds": age })),
    )
}

fn recorded_health(doc: &Doc) -> Option<Health> {
    doc.str("health").and_then(Health::parse)
}

fn set_health(doc: &mut Doc, health: Health, now: DateTime<Utc>) {
    doc.set("health", health.as_str());
    doc.set("health_changed_at", clock::stamp(now));
}

/// Records a beat.
pub fn beat(
    store: &dyn Store,
    cell: &str,
    agent_id: &str,
    report: &BeatReport,
    now: DateTime<Utc>,
) -> Result<BeatReply> {
    report.check()?;
    let cell_doc = store::read_required(store, cell, FileKey::Cell)?;
    let policies = store.read(cell, FileKey::Config(ConfigFile::Policies))?;
    // The beat and the health transition it causes are one transaction.
    let (doc, pending, policy, count, after) = store::transact(store, cell, now, |txn| {
        let mut doc = txn.read(FileKey::Agent(agent_id))?.ok_or_else(|| {
            Error::not_found(format!("no agent {agent_id} in cell {cell}"))
                .hint(format!("add it with `pas agent add {cell} {agent_id}`"))
        })?;
        let policy = Policy::resolve(Some(&cell_doc), policies.as_ref(), Some(&doc));
        let before = health::assess(&doc, &policy, now);
        let recorded = recorded_health(&doc);

        doc.set("last_heartbeat", clock::stamp(now));
        let count = doc.u64("heartbeat_count").unwrap_or(0) + 1;
        doc.set("heartbeat_count", count);
        if let Some(status) = report.status {
            doc.set("reported_status", status.as_str());
            if status == Reported::Active {
                doc.set("failures", 0);
            }
        } else if doc.get("reported_status").is_none_or(Value::is_null) {
            doc.set("reported_status", Reported::Active.as_str());
        }
        if let Some(p) = report.progress {
            doc.set("progress", p);
        }
        if let Some(used) = report.ctx_used {
            doc.set("ctx_used", used);
        }
        if let Some(limit) = report.ctx_limit {
            doc.set("ctx_limit", limit);
        }
        if !report.meta.is_empty() {
            let mut meta = doc
                .get("metadata")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_else(Map::new);
            for (k, v) in &report.meta {
                meta.insert(k.clone(), Value::from(v.as_str()));
            }
            doc.set("metadata", Value::Object(meta));
        }
        if let Some(note) = &report.note {
            doc.set("note", note.as_str());
        }
        if let Some(cost) = report.cost_usd {
            doc.set("cost_usd", cost);
        }
        if let Some(tokens) = report.tokens {
            doc.set("tokens_used", tokens);
        }
        if matches!(doc.str("status"), Some("idle") | Some("failed") | None) {
            doc.set("status", "active");
        }
        let after = health::assess(&doc, &policy, now);
        let was = if before.health.is_silent() {
            Some(before.health)
        } else {
            recorded
        };
        if recorded != Some(after.health) {
            set_health(&mut doc, after.health, now);
        }
        if was != Some(after.health) {
            // A beat after silence nobody observed still logs the recovery.
            if let Some(event) = transition_event(agent_id, was, after.health, before.age) {
                txn.event(event);
            }
        }

        let pending = doc.remove("pending_directive");
        // A lost stamp on power loss is harmless; a commit with an event is durable anyway.
        txn.relaxed();
        txn.put(FileKey::Agent(agent_id), doc.clone());
        Ok((doc, pending, policy, count, after))
    })?;
    let paused = doc.str("status") == Some("paused");
    // Budgets: a context breach compacts (and asks the agent to summarize); spend limits
    // may stop it. Both only cost something when the beat reports them or limits are set.
    let mut summarize = pending.and_then(|p| match p {
        Value::Object(d) => Some((
            d.get("action")
                .and_then(Value::as_str)
                .unwrap_or("summarize")
                .to_string(),
            d.get("reason").and_then(Value::as_str).map(str::to_string),
        )),
        _ => None,
    });
    // Decide from the document just written; the budget code (which reads files again, and
    // for spend all agents of the cell) runs only when a state changes or a breach needs work.
    let context_reported = report.ctx_used.is_some() || report.ctx_limit.is_some();
    let context_now =
        crate::budget::context_state(doc.u64("ctx_used"), doc.u64("ctx_limit"), &policy);
    let context_moved = context_now.is_some_and(|(s, _)| {
        s == crate::budget::State::Breach
            || Some(s.as_str()) != Some(doc.str("ctx_state").unwrap_or("ok"))
    });
    if context_reported
        && context_moved
        && crate::budget::context_changed(store, cell, agent_id, now)?.is_some()
    {
        store::update(
            store,
            cell,
            FileKey::Agent(agent_id),
            Durability::Relaxed,
            &mut |d| {
                d.remove("pending_directive");
                Ok(())
            },
        )?;
        summarize = Some(("summarize".to_string(), Some("context_budget".to_string())));
    }
    let cell_limits = ["cell_cost_hard_usd", "cell_tokens_hard"]
        .iter()
        .any(|k| policy.get(k).is_some_and(|v| !v.is_null()));
    let totals = if cell_limits {
        crate::budget::cell_spend(store, cell)?
    } else {
        (0.0, 0.0)
    };
    let mut spend = crate::budget::spend_state(&doc, &policy, totals).0;
    let spend_reported = report.cost_usd.is_some() || report.tokens.is_some();
    if spend_reported && spend.as_str() != doc.str("spend_state").unwrap_or("ok") {
        spend = crate::budget::spend_changed(store, cell, agent_id, now)?.0;
    }

    // What pas wants from the agent, most urgent first.
    let cell_status = cell_doc.str("status").unwrap_or("active");
    let (directive, reason) = if cell_status != "active" {
        (
            Some("stop".to_string()),
            Some(format!("cell_{cell_status}")),
        )
    } else if spend == crate::budget::State::Breach {
        (Some("stop".to_string()), Some("budget_reached".to_string()))
    } else if let Some((action, reason)) = summarize {
        (Some(action), reason)
    } else if paused {
        (Some("stop".to_string()), Some("agent_paused".to_string()))
    } else {
        (None, None)
    };
    Ok(BeatReply {
        ack: true,
        cell: cell.to_string(),
        agent: agent_id.to_string(),
        heartbeat_count: count,
        next_beat_in: policy.heartbeat_interval(),
        health: after.health,
        directive,
        reason,
    })
}

/// An agent as an observer sees it.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The agent file.
    pub doc: Doc,
    /// Its health now.
    pub assessment: Assessment,
    /// Its effective policy (shared by every agent of the cell without policies of its own).
    pub policy: Arc<Policy>,
}

/// Assesses every agent of a cell at `now` and records the health changes it sees (each
/// once: the change is re-checked under the agent's lock before it is written).
pub fn observe_cell(
    store: &dyn Store,
    cell: &str,
    record: bool,
    now: DateTime<Utc>,
) -> Result<(Vec<Observed>, Vec<Error>)> {
    let cell_doc = store::read_required(store, cell, FileKey::Cell)?;
    let policies = store.read(cell, FileKey::Config(ConfigFile::Policies))?;
    observe_cell_with(store, cell, &cell_doc, policies.as_ref(), record, now)
}

/// [`observe_cell`] with the cell's `cell.json` and `config/policies.json` already read.
pub fn observe_cell_with(
    store: &dyn Store,
    cell: &str,
    cell_doc: &Doc,
    policies: Option<&Doc>,
    record: bool,
    now: DateTime<Utc>,
) -> Result<(Vec<Observed>, Vec<Error>)> {
    // Most agents have no policies of their own: they share the cell's, resolved once.
    let cell_policy = Arc::new(Policy::resolve(Some(cell_doc), policies, None));
    let mut observed = Vec::new();
    let mut errors = Vec::new();
    let mut changed = Vec::new();
    for (id, doc) in store.read_collection(cell, Collection::Agents)? {
        let doc = match doc {
            Ok(doc) => doc,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let policy = if doc.get("policies").is_some_and(Value::is_object) {
            Arc::new(Policy::resolve(Some(cell_doc), policies, Some(&doc)))
        } else {
            Arc::clone(&cell_policy)
        };
        let assessment = health::assess(&doc, &policy, now);
        let recorded = recorded_health(&doc).unwrap_or(Health::Unknown);
        if record && recorded != assessment.health {
            changed.push((observed.len(), id));
        }
        observed.push(Observed {
            doc,
            assessment,
            policy,
        });
    }
    if !changed.is_empty() {
        // Every transition seen in this pass, with its event, in one commit; each is
        // assessed again on the document as it is now, so it is recorded once.
        let recorded = store::transact(store, cell, now, |txn| {
            let mut out = Vec::new();
            for (at, id) in &changed {
                let Some(mut doc) = txn.read(FileKey::Agent(id))? else {
                    continue;
                };
                let policy = Policy::resolve(Some(cell_doc), policies, Some(&doc));
                let assessment = health::assess(&doc, &policy, now);
                let recorded = recorded_health(&doc);
                if recorded.unwrap_or(Health::Unknown) == assessment.health {
                    continue;
                }
                set_health(&mut doc, assessment.health, now);
                txn.put(FileKey::Agent(id), doc.clone());
                if let Some(event) =
                    transition_event(id, recorded, assessment.health, assessment.age)
                {
                    txn.event(event);
                }
                out.push((*at, doc, assessment, policy));
            }
            Ok(out)
        });
        match recorded {
            Ok(out) => {
                for (at, doc, assessment, policy) in out {
                    observed[at] = Observed {
                        doc,
                        assessment,
                        policy: Arc::new(policy),
                    };
                }
            }
            Err(e) => errors.push(e),
        }
    }
    Ok((observed, errors))
}

/// Records a failure an agent reports (`pas agent fail`); returns the consecutive count.
pub fn record_failure(
    store: &dyn Store,
    cell: &str,
    agent_id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<u64> {
    if reason.trim().is_empty() {
        return Err(
            Error::usage("the failure reason is empty").hint("pass --reason \"what went wrong\"")
        );
    }
    let cell_doc = store::read_required(store, cell, FileKey::Cell)?;
    let policies = store.read(cell, FileKey::Config(ConfigFile::Policies))?;
    store::transact(store, cell, now, |txn| {
        let mut doc = txn
            .read(FileKey::Agent(agent_id))?
            .ok_or_else(|| Error::not_found(format!("no agent {agent_id} in cell {cell}")))?;
        let failures = doc.u64("failures").unwrap_or(0) + 1;
        doc.set("failures", failures);
        doc.set(
            "last_failure",
            json!({ "at": clock::stamp(now), "reason": reason }),
        );
        txn.event(
            NewEvent::new(
                Level::Warn,
                "agent.failure",
                format!("agent {agent_id} failed ({failures} in a row): {reason}"),
            )
            .agent(agent_id)
            .details(json!({ "reason": reason, "consecutive": failures })),
        );
        let policy = Policy::resolve(Some(&cell_doc), policies.as_ref(), Some(&doc));
        let assessment = health::assess(&doc, &policy, now);
        let recorded = recorded_health(&doc);
        if recorded.unwrap_or(Health::Unknown) != assessment.health {
            set_health(&mut doc, assessment.health, now);
            if let Some(event) =
                transition_event(agent_id, recorded, assessment.health, assessment.age)
            {
                txn.event(event);
            }
        }
        txn.put(FileKey::Agent(agent_id), doc);
        Ok(failures)
    })
}
