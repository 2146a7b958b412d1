//! Heartbeats, and the health changes they and observers record: the entry points that
//! read an agent in a store transaction, ask the rules in [`crate::ops::heartbeat::rules`], and
//! apply the decision in the same transaction.
//!
//! A beat changes only the agent's own file (no scan of the root, no fsync: losing the last
//! stamp on power loss is harmless) and writes an event only when the agent's health
//! changes. Observers (`pas status`, `pas check`, `pas watch`, `pas top`, revive passes)
//! compare the health they compute with the `health` recorded in the agent file and record
//! each change once: it is decided again inside the transaction that writes it.

pub mod rules;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::clock;
use crate::doc::Doc;
use crate::error::{Error, Result};
use crate::ops::budget;
use crate::ops::budget::rules::{
    decide_context, decide_spend, ContextFacts, ContextPolicy, SpendLimits, Spent,
};
use crate::ops::health::{Assessment, Health};
use crate::ops::heartbeat::rules::{
    BeatDecision, Directive, HealthChange, HealthPolicy, ReplyState, Vitals,
};
use crate::ops::policy::Policy;
use crate::store::{self, Collection, ConfigFile, Durability, FileKey, Store, Txn};

pub use crate::ops::heartbeat::rules::Reported;

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

/// Writes a health change into an agent file and its event into the transaction.
fn apply_health(
    txn: &mut Txn<'_>,
    doc: &mut Doc,
    agent_id: &str,
    change: &HealthChange,
    now: DateTime<Utc>,
) {
    if let Some(health) = change.record {
        doc.set("health", health.as_str());
        doc.set("health_changed_at", clock::stamp(now));
    }
    if let Some(t) = &change.transition {
        txn.event(t.event(agent_id));
    }
}

/// Writes what a beat reports and what [`rules::decide_beat`] decided into the agent file,
/// in the order the fields have always been added (a new field goes at the end of the
/// file, so the order is visible).
fn apply_beat(
    txn: &mut Txn<'_>,
    doc: &mut Doc,
    agent_id: &str,
    report: &BeatReport,
    decision: &BeatDecision,
    now: DateTime<Utc>,
) {
    doc.set("last_heartbeat", clock::stamp(now));
    doc.set("heartbeat_count", decision.heartbeat_count);
    if let Some(reported) = decision.reported {
        doc.set("reported_status", reported.as_str());
    }
    if decision.reset_failures {
        doc.set("failures", 0);
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
    if decision.activate {
        doc.set("status", "active");
    }
    apply_health(txn, doc, agent_id, &decision.change, now);
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
    let (doc, pending, policy, decision) = store::transact(store, cell, now, |txn| {
        let mut doc = txn.read(FileKey::Agent(agent_id))?.ok_or_else(|| {
            Error::not_found(format!("no agent {agent_id} in cell {cell}"))
                .hint(format!("add it with `pas agent add {cell} {agent_id}`"))
        })?;
        let policy = Policy::resolve(
            store.root_policies(),
            Some(&cell_doc),
            policies.as_ref(),
            Some(&doc),
        );
        let decision = rules::decide_beat(
            &Vitals::from_doc(&doc),
            report.status,
            &HealthPolicy::from_policy(&policy),
            now,
        );
        apply_beat(txn, &mut doc, agent_id, report, &decision, now);
        // The beat delivers a directive left for the agent, so it is taken out.
        let pending = doc.remove("pending_directive");
        // A lost stamp on power loss is harmless; a commit with an event is durable anyway.
        txn.relaxed();
        txn.put(FileKey::Agent(agent_id), doc.clone());
        Ok((doc, pending, policy, decision))
    })?;
    // Budgets: a context breach compacts (and asks the agent to summarize); spend limits
    // may stop it. Both only cost something when the beat reports them or limits are set:
    // the rules are asked first on the document just written, and the budget code (which
    // reads files again, and for spend all agents of the cell) runs only when applying
    // their decision changes something.
    let mut pending = pending.as_ref().and_then(Directive::from_pending);
    let context_reported = report.ctx_used.is_some() || report.ctx_limit.is_some();
    let context_work = context_reported
        && decide_context(
            &ContextFacts::from_doc(&doc),
            &ContextPolicy::from_policy(&policy),
            now,
        )
        .is_some_and(|d| d.needs_work());
    if context_work && budget::context_changed(store, cell, agent_id, now)?.is_some() {
        // The compaction's directive goes out with this reply, not with the next beat.
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
        pending = Some(Directive::summarize_context());
    }
    let limits = SpendLimits::from_policy(&policy);
    let totals = if limits.has_cell_limits() {
        budget::cell_spend(store, cell)?
    } else {
        Spent::default()
    };
    let spend_reported = report.cost_usd.is_some() || report.tokens.is_some();
    let recorded_spend = doc.str("spend_state").unwrap_or("ok");
    let seen = decide_spend(Spent::of_agent(&doc), recorded_spend, totals, &limits);
    let spend = if spend_reported && seen.changed {
        budget::spend_changed(store, cell, agent_id, now)?.0
    } else {
        seen.state
    };

    let directive = rules::decide_reply(&ReplyState {
        cell_status: cell_doc.str("status").unwrap_or("active").to_string(),
        spend,
        pending,
        agent_paused: doc.str("status") == Some("paused"),
    });
    Ok(BeatReply {
        ack: true,
        cell: cell.to_string(),
        agent: agent_id.to_string(),
        heartbeat_count: decision.heartbeat_count,
        next_beat_in: policy.heartbeat_interval(),
        health: decision.health,
        reason: directive.as_ref().and_then(|d| d.reason.clone()),
        directive: directive.map(|d| d.action),
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
/// once: the change is decided again in the transaction that writes it).
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
    let cell_policy = Arc::new(Policy::resolve(
        store.root_policies(),
        Some(cell_doc),
        policies,
        None,
    ));
    let cell_rules = HealthPolicy::from_policy(&cell_policy);
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
        let (policy, rules_of) = if doc.get("policies").is_some_and(Value::is_object) {
            let policy =
                Policy::resolve(store.root_policies(), Some(cell_doc), policies, Some(&doc));
            let r = HealthPolicy::from_policy(&policy);
            (Arc::new(policy), r)
        } else {
            (Arc::clone(&cell_policy), cell_rules)
        };
        let seen = rules::decide_observe(&Vitals::from_doc(&doc), &rules_of, now);
        if record && !seen.change.is_empty() {
            changed.push((observed.len(), id));
        }
        observed.push(Observed {
            doc,
            assessment: seen.assessment,
            policy,
        });
    }
    if !changed.is_empty() {
        // Every transition seen in this pass, with its event, in one commit; each is
        // decided again on the document as it is now, so it is recorded once.
        let recorded = store::transact(store, cell, now, |txn| {
            let mut out = Vec::new();
            for (at, id) in &changed {
                let Some(mut doc) = txn.read(FileKey::Agent(id))? else {
                    continue;
                };
                let policy =
                    Policy::resolve(store.root_policies(), Some(cell_doc), policies, Some(&doc));
                let seen = rules::decide_observe(
                    &Vitals::from_doc(&doc),
                    &HealthPolicy::from_policy(&policy),
                    now,
                );
                if seen.change.is_empty() {
                    continue;
                }
                apply_health(txn, &mut doc, id, &seen.change, now);
                txn.put(FileKey::Agent(id), doc.clone());
                out.push((*at, doc, seen.assessment, policy));
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
        let policy = Policy::resolve(
            store.root_policies(),
            Some(&cell_doc),
            policies.as_ref(),
            Some(&doc),
        );
        let decision = rules::decide_failure(
            &Vitals::from_doc(&doc),
            &HealthPolicy::from_policy(&policy),
            now,
        );
        doc.set("failures", decision.consecutive);
        doc.set(
            "last_failure",
            json!({ "at": clock::stamp(now), "reason": reason }),
        );
        txn.event(decision.event(agent_id, reason));
        apply_health(txn, &mut doc, agent_id, &decision.change, now);
        txn.put(FileKey::Agent(agent_id), doc);
        Ok(decision.consecutive)
    })
}
