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
use serde_json::{Map, Value};

use crate::doc::Doc;
use crate::error::{Error, Result};
use crate::model::field::Record as _;
use crate::model::{self, Agent, AgentStatus, Cell, Failure, Policies};
use crate::ops::agent::typed;
use crate::ops::budget;
use crate::ops::budget::rules::{
    decide_context, decide_spend, ContextFacts, ContextPolicy, SpendLimits, Spent, State,
};
use crate::ops::health::{Assessment, Health};
use crate::ops::heartbeat::rules::{
    BeatDecision, Directive, HealthChange, HealthPolicy, ReplyState, Vitals,
};
use crate::ops::policy::{self, Policy};
use crate::ops::supervisor::{self, ProcState};
use crate::store::{self, Collection, Durability, FileKey, Store, Txn};

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
    pub directive: Option<model::Directive>,
    /// Why (for `stop`: `cell_paused`, `cell_completed`, `agent_paused`, ...).
    pub reason: Option<String>,
}

/// Writes a health change into an agent and its event into the transaction.
fn apply_health(
    txn: &mut Txn<'_>,
    agent: &mut Agent,
    agent_id: &str,
    change: &HealthChange,
    now: DateTime<Utc>,
) {
    if let Some(health) = change.record {
        agent.health = Some(health);
        agent.health_changed_at = Some(now);
    }
    if let Some(t) = &change.transition {
        txn.event(t.event(agent_id));
    }
}

/// Writes what a beat reports and what [`rules::decide_beat`] decided into the agent (a
/// field the file did not have yet goes at its end, in the model's field order).
fn apply_beat(
    txn: &mut Txn<'_>,
    agent: &mut Agent,
    agent_id: &str,
    report: &BeatReport,
    decision: &BeatDecision,
    now: DateTime<Utc>,
) {
    agent.last_heartbeat = Some(now);
    agent.heartbeat_count = decision.heartbeat_count;
    if decision.reported.is_some() {
        agent.reported_status = decision.reported;
    }
    if decision.reset_failures {
        agent.failures = 0;
    }
    if report.progress.is_some() {
        agent.progress = report.progress;
    }
    if report.ctx_used.is_some() {
        agent.ctx_used = report.ctx_used;
    }
    if report.ctx_limit.is_some() {
        agent.ctx_limit = report.ctx_limit;
    }
    for (k, v) in &report.meta {
        agent.metadata.insert(k.clone(), Value::from(v.as_str()));
    }
    if report.note.is_some() {
        agent.note.clone_from(&report.note);
    }
    if report.cost_usd.is_some() {
        agent.cost_usd = report.cost_usd;
    }
    if let Some(tokens) = report.tokens {
        agent.tokens_used = Some(tokens as f64);
    }
    if decision.activate {
        agent.status = AgentStatus::Active;
    }
    apply_health(txn, agent, agent_id, &decision.change, now);
}

/// Whether two versions of an agent document differ at most in the beat's stamp
/// (`last_heartbeat`, `heartbeat_count`).
fn same_but_stamp(a: &Doc, b: &Doc) -> bool {
    fn shown(d: &Doc) -> impl Iterator<Item = (&String, &Value)> {
        d.map()
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "last_heartbeat" | "heartbeat_count"))
    }
    shown(a).eq(shown(b))
}

/// The error for a beat or failure of an agent the cell does not have.
fn no_agent(cell: &str, agent_id: &str) -> Error {
    Error::not_found(format!("no agent {agent_id} in cell {cell}"))
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
    let cell_doc = Cell::from_doc(&store::read_required(store, cell, FileKey::Cell)?)?;
    let file = policy::read_file_layer(store, cell)?;
    // The beat and the health transition it causes are one transaction.
    let (agent, pending, policy, decision) = store::transact(store, cell, now, |txn| {
        let mut doc = txn.read(FileKey::Agent(agent_id))?.ok_or_else(|| {
            no_agent(cell, agent_id).hint(format!("add it with `pas agent add {cell} {agent_id}`"))
        })?;
        let before = doc.clone();
        let mut agent = typed(agent_id, &doc)?;
        let stored = (agent.last_heartbeat, agent.heartbeat_count);
        let policy = Policy::of(
            store.root_policies(),
            Some(&cell_doc.policies),
            file.as_ref(),
            Some(&agent.policies),
        );
        let health = HealthPolicy::from_policy(&policy);
        let mut decision = rules::decide_beat(&vitals(&agent), report.status, &health, now);
        apply_beat(txn, &mut agent, agent_id, report, &decision, now);
        // The beat delivers a directive left for the agent, so it is taken out.
        let pending = agent.pending_directive.take();
        agent.write_into(&mut doc);
        let shown_changed = !txn.is_empty() || !same_but_stamp(&before, &doc);
        let leased = store.remote().is_some();
        if rules::decide_beat_write(leased, shown_changed, stored.0, &health, now) {
            // A lost stamp on power loss is harmless; a commit with an event is durable
            // anyway.
            txn.relaxed();
            txn.put(FileKey::Agent(agent_id), doc);
        } else {
            // Nothing is written: the count the reply shows is the stored one.
            decision.heartbeat_count = stored.1;
        }
        Ok((agent, pending, policy, decision))
    })?;
    // Budgets: a context breach compacts (and asks the agent to summarize); spend limits
    // may stop it. Both only cost something when the beat reports them or limits are set:
    // the rules are asked first on the agent just written, and the budget code (which
    // reads files again, and for spend all agents of the cell) runs only when applying
    // their decision changes something.
    let mut pending = pending.as_ref().map(Directive::from_pending);
    let context_reported = report.ctx_used.is_some() || report.ctx_limit.is_some();
    let context_work = context_reported
        && decide_context(
            &ContextFacts::of(&agent),
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
                let mut a = typed(agent_id, d)?;
                a.pending_directive = None;
                a.write_into(d);
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
    let recorded_spend = agent.spend_state.unwrap_or(State::Ok);
    let seen = decide_spend(Spent::of(&agent), recorded_spend, totals, &limits);
    let spend = if spend_reported && seen.changed {
        budget::spend_changed(store, cell, agent_id, now)?.0
    } else {
        seen.state
    };

    let directive = rules::decide_reply(&ReplyState {
        cell_status: cell_doc.status,
        spend,
        pending,
        agent_paused: agent.status == AgentStatus::Paused,
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

/// What the rules read of an agent: its file's fields and, when it never beat and pas has
/// a command to run for it, whether its process runs (such an agent is judged by it).
pub fn vitals(agent: &Agent) -> Vitals {
    let mut v = Vitals::of(agent);
    if agent.last_heartbeat.is_none() && !agent.command.is_empty() {
        v.running = Some(supervisor::state_of(agent) == ProcState::Running);
    }
    v
}

/// An agent as an observer sees it.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The agent file, typed.
    pub agent: Agent,
    /// Its health now.
    pub assessment: Assessment,
    /// Its effective policy (shared by every agent of the cell without policies of its own).
    pub policy: Arc<Policy>,
}

/// Assesses every agent of a cell at `now` (`cell_doc` and `file` are its `cell.json` and
/// `config/policies.json`) and, with `record`, records the health changes it sees (each
/// once: the change is decided again in the transaction that writes it).
pub fn observe_cell(
    store: &dyn Store,
    cell: &str,
    cell_doc: &Cell,
    file: Option<&Policies>,
    record: bool,
    now: DateTime<Utc>,
) -> Result<(Vec<Observed>, Vec<Error>)> {
    let resolve = |agent: &Agent| {
        Policy::of(
            store.root_policies(),
            Some(&cell_doc.policies),
            file,
            Some(&agent.policies),
        )
    };
    // Most agents have no policies of their own: they share the cell's, resolved once.
    let cell_policy = Arc::new(Policy::of(
        store.root_policies(),
        Some(&cell_doc.policies),
        file,
        None,
    ));
    let cell_rules = HealthPolicy::from_policy(&cell_policy);
    let no_policies = Policies::default();
    let mut observed = Vec::new();
    let mut errors = Vec::new();
    let mut changed = Vec::new();
    // Each agent file is typed straight from its text; one that does not read that way is
    // read as a document, whose error names the problem.
    let agent_of = |id: &str, bytes: Vec<u8>| match Agent::from_text(&bytes) {
        Some(agent) => Ok(agent),
        None => typed(id, &store.parse_doc(cell, FileKey::Agent(id), &bytes)?),
    };
    for (id, bytes) in store.read_collection_bytes(cell, Collection::Agents)? {
        let agent = match bytes.and_then(|b| agent_of(&id, b)) {
            Ok(agent) => agent,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let (policy, rules_of) = if agent.policies != no_policies {
            let policy = resolve(&agent);
            let r = HealthPolicy::from_policy(&policy);
            (Arc::new(policy), r)
        } else {
            (Arc::clone(&cell_policy), cell_rules)
        };
        let seen = rules::decide_observe(&vitals(&agent), &rules_of, now);
        if record && !seen.change.is_empty() {
            changed.push((observed.len(), id));
        }
        observed.push(Observed {
            agent,
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
                let mut agent = typed(id, &doc)?;
                let policy = resolve(&agent);
                let seen = rules::decide_observe(
                    &vitals(&agent),
                    &HealthPolicy::from_policy(&policy),
                    now,
                );
                if seen.change.is_empty() {
                    continue;
                }
                apply_health(txn, &mut agent, id, &seen.change, now);
                agent.write_into(&mut doc);
                txn.put(FileKey::Agent(id), doc);
                out.push((*at, agent, seen.assessment, policy));
            }
            Ok(out)
        });
        match recorded {
            Ok(out) => {
                for (at, agent, assessment, policy) in out {
                    observed[at] = Observed {
                        agent,
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
    let cell_doc = Cell::from_doc(&store::read_required(store, cell, FileKey::Cell)?)?;
    let file = policy::read_file_layer(store, cell)?;
    store::transact(store, cell, now, |txn| {
        let mut doc = txn
            .read(FileKey::Agent(agent_id))?
            .ok_or_else(|| no_agent(cell, agent_id))?;
        let mut agent = typed(agent_id, &doc)?;
        let policy = Policy::of(
            store.root_policies(),
            Some(&cell_doc.policies),
            file.as_ref(),
            Some(&agent.policies),
        );
        let decision =
            rules::decide_failure(&vitals(&agent), &HealthPolicy::from_policy(&policy), now);
        agent.failures = decision.consecutive;
        agent.last_failure = Some(Failure {
            at: now,
            reason: reason.to_string(),
            extra: Map::new(),
        });
        txn.event(decision.event(agent_id, reason));
        apply_health(txn, &mut agent, agent_id, &decision.change, now);
        agent.write_into(&mut doc);
        txn.put(FileKey::Agent(agent_id), doc);
        Ok(decision.consecutive)
    })
}
