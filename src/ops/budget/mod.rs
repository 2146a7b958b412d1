//! Budgets: context window, money and tokens per agent, time per cell.
//!
//! Context: below `target_ratio` of `ctx_limit` an agent is `ok`, from it `warning`, from
//! `hard_max_ratio` `breach`; each change is an event. A breach runs Save-State → Clear →
//! Resume: a checkpoint of the agent's state, a summary file under
//! `checkpoints/<agent>/summaries/`, `ctx_used` reset to 0, and a `summarize` directive on the
//! agent's beat reply. A thrash guard (`compact_min_interval`, `compact_max_per_hour`) flags an
//! agent instead of compacting it again and again.
//!
//! Money and tokens: soft limits warn; hard limits answer beats with `stop` (reason
//! `budget_reached`), keeping all state, so raising the limit lets the agent go on.
//! Time: an active cell past its `timeout` (seconds from `activated_at`, else `created_at`)
//! becomes `failed`.

pub mod rules;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::clock;
use crate::doc::Doc;
use crate::error::{Error, Result};
use crate::model::EventKind;
use crate::ops::budget::rules::{
    BreachAction, CellClock, ContextFacts, ContextPolicy, SpendLimits, Spent, TimeDecision,
};
use crate::ops::cell::{self, CellStatus};
use crate::ops::checkpoint::{self, SaveRequest};
use crate::ops::policy::Policy;
use crate::store::events::{Level, NewEvent};
use crate::store::{self, check_id, ConfigFile, FileKey, IdKind, Store, Txn};

pub use crate::ops::budget::rules::State;

/// The context ratios at which an agent is warned and breaches: (`target_ratio`,
/// `hard_max_ratio`), so displays can mark them on a context bar.
pub fn context_thresholds(policy: &Policy) -> (f64, f64) {
    let p = ContextPolicy::from_policy(policy);
    (p.target_ratio, p.hard_max_ratio)
}

/// The context state from use and limit; `None` when the agent reports no limit.
pub fn context_state(
    used: Option<u64>,
    limit: Option<u64>,
    policy: &Policy,
) -> Option<(State, f64)> {
    rules::context_state(used, limit, &ContextPolicy::from_policy(policy))
}

/// The money-and-tokens state of an agent, with the reason when it is not ok. `cell_totals`
/// is what all agents of the cell spent together.
pub fn spend_state(agent: &Doc, policy: &Policy, cell_totals: Spent) -> (State, Option<String>) {
    rules::spend_state(
        Spent::of_agent(agent),
        cell_totals,
        &SpendLimits::from_policy(policy),
    )
}

/// What all agents of a cell spent together.
pub fn cell_spend(store: &dyn Store, cell: &str) -> Result<Spent> {
    let (agents, _) = crate::ops::agent::read_all(store, cell)?;
    Ok(Spent::total(&agents))
}

/// What a compaction did.
#[derive(Debug, Clone, Serialize)]
pub struct Compaction {
    /// The checkpoint generation saved.
    pub generation: u64,
    /// The summary file.
    pub summary: String,
    /// Context use before the reset.
    pub ctx_used_before: u64,
}

/// An agent's file in a transaction, or the error `pas` gives for an agent that is not
/// there.
fn read_agent(txn: &mut Txn<'_>, agent: &str) -> Result<Doc> {
    let cell = txn.cell().to_string();
    txn.read(FileKey::Agent(agent))?.ok_or_else(|| {
        Error::not_found(format!("no agent {agent} in cell {cell}"))
            .hint(format!("`pas agent list {cell}` shows its agents"))
    })
}

/// The policy layers of a cell that do not depend on the agent: `cell.json` and
/// `config/policies.json`, read before a transaction resolves them with the agent's own.
fn policy_layers(store: &dyn Store, cell: &str) -> Result<(Option<Doc>, Option<Doc>)> {
    Ok((
        store.read(cell, FileKey::Cell)?,
        store.read(cell, FileKey::Config(ConfigFile::Policies))?,
    ))
}

/// Reacts to a new context reading: the state change and a new thrashing flag with their
/// events in one transaction, then on a breach the guard allows Save-State → Clear →
/// Resume. Returns the compaction when one ran.
pub fn context_changed(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    now: DateTime<Utc>,
) -> Result<Option<Compaction>> {
    check_id(IdKind::Agent, agent)?;
    let (cell_doc, policies) = policy_layers(store, cell)?;
    let (decision, doc) = store::transact(store, cell, now, |txn| {
        let mut doc = read_agent(txn, agent)?;
        let policy = Policy::resolve(
            store.root_policies(),
            cell_doc.as_ref(),
            policies.as_ref(),
            Some(&doc),
        );
        let Some(decision) = rules::decide_context(
            &ContextFacts::from_doc(&doc),
            &ContextPolicy::from_policy(&policy),
            now,
        ) else {
            return Ok((None, doc));
        };
        let mut changed = false;
        if let Some(t) = &decision.transition {
            doc.set("ctx_state", t.to.as_str());
            changed = true;
        }
        if let BreachAction::Thrashing { flag: true, .. } = decision.action {
            doc.set("budget_flag", "thrashing");
            changed = true;
        }
        if changed {
            txn.put(FileKey::Agent(agent), doc.clone());
        }
        for event in decision.events(agent) {
            txn.event(event);
        }
        Ok((Some(decision), doc))
    })?;
    match decision {
        Some(d) if d.action == BreachAction::Compact => {
            compact(store, cell, agent, &doc, d.ratio, now).map(Some)
        }
        _ => Ok(None),
    }
}

/// Save-State → Clear → Resume: a checkpoint generation and a summary file (not documents:
/// written first, outside any transaction), then the agent's context reset, its compaction
/// noted and a `summarize` directive left for it, with the event, in one transaction.
fn compact(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    doc: &Doc,
    ratio: f64,
    now: DateTime<Utc>,
) -> Result<Compaction> {
    let used = doc.u64("ctx_used").unwrap_or(0);
    let saved = checkpoint::save(
        store,
        cell,
        agent,
        SaveRequest {
            reason: "context budget breach".into(),
            ..SaveRequest::default()
        },
        now,
    )?;
    let summary = json!({
        "time": clock::stamp(now),
        "agent_id": agent,
        "run": doc.u64("restart_count").unwrap_or(0),
        "reason": format!("context budget breached at {:.0}% of the window", ratio * 100.0),
        "ctx_used_before": used,
        "ctx_limit": doc.u64("ctx_limit"),
        "last_note": doc.get("note"),
        "progress": doc.get("progress"),
        "current_task": doc.get("current_task"),
        "checkpoint_generation": saved.generation,
    });
    let mut bytes = serde_json::to_vec_pretty(&summary).unwrap_or_default();
    bytes.push(b'\n');
    let name = format!("{}.json", now.format("%Y%m%dT%H%M%S%.6fZ"));
    let path = store.write_summary(cell, agent, &name, &bytes)?;
    store::transact(store, cell, now, |txn| {
        let mut d = txn.read_required(FileKey::Agent(agent))?;
        d.set("ctx_used", 0);
        d.set("ctx_state", "ok");
        d.remove("budget_flag");
        let mut list: Vec<String> =
            rules::compactions_last_hour(&ContextFacts::from_doc(&d).compactions, now)
                .into_iter()
                .map(clock::stamp)
                .collect();
        list.push(clock::stamp(now));
        d.set("compactions", json!(list));
        d.set("pending_directive", json!({ "action": "summarize", "reason": "context_budget", "summary": path, "at": clock::stamp(now) }));
        txn.put(FileKey::Agent(agent), d);
        txn.event(
            NewEvent::new(Level::Warn, EventKind::BudgetCompacted, format!("agent {agent}: state saved (checkpoint {}), context cleared ({used} tokens), told to summarize", saved.generation))
                .agent(agent)
                .details(json!({ "generation": saved.generation, "summary": path, "ctx_used_before": used })),
        );
        Ok(())
    })?;
    Ok(Compaction {
        generation: saved.generation,
        summary: path.clone(),
        ctx_used_before: used,
    })
}

/// Records the agent's spend state when it changed, with its event; returns the state.
pub fn spend_changed(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    now: DateTime<Utc>,
) -> Result<(State, Option<String>)> {
    check_id(IdKind::Agent, agent)?;
    let (cell_doc, policies) = policy_layers(store, cell)?;
    let totals = cell_spend(store, cell)?;
    let decision = store::transact(store, cell, now, |txn| {
        let mut doc = read_agent(txn, agent)?;
        let policy = Policy::resolve(
            store.root_policies(),
            cell_doc.as_ref(),
            policies.as_ref(),
            Some(&doc),
        );
        let decision = rules::decide_spend(
            Spent::of_agent(&doc),
            doc.str("spend_state").unwrap_or("ok"),
            totals,
            &SpendLimits::from_policy(&policy),
        );
        if let Some(event) = decision.event(agent) {
            doc.set("spend_state", decision.state.as_str());
            txn.put(FileKey::Agent(agent), doc);
            txn.event(event);
        }
        Ok(decision)
    })?;
    Ok((decision.state, decision.why))
}

/// Records usage reported outside a beat (`pas budget track`) and reacts like a beat would.
#[allow(clippy::too_many_arguments)]
pub fn track(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    used: Option<u64>,
    limit: Option<u64>,
    cost: Option<f64>,
    tokens: Option<u64>,
    now: DateTime<Utc>,
) -> Result<(Option<Compaction>, State)> {
    if limit == Some(0) {
        return Err(crate::error::Error::usage("--limit must be at least 1"));
    }
    if cost.is_some_and(|c| !(c >= 0.0 && c.is_finite())) {
        return Err(crate::error::Error::usage(
            "--cost-usd must be a non-negative amount",
        ));
    }
    crate::ops::agent::read(store, cell, agent)?;
    store::update_agent(store, cell, agent, &mut |d| {
        if let Some(u) = used {
            d.set("ctx_used", u);
        }
        if let Some(l) = limit {
            d.set("ctx_limit", l);
        }
        if let Some(c) = cost {
            d.set("cost_usd", c);
        }
        if let Some(t) = tokens {
            d.set("tokens_used", t);
        }
        Ok(())
    })?;
    let compaction = context_changed(store, cell, agent, now)?;
    let (spend, _) = spend_changed(store, cell, agent, now)?;
    Ok((compaction, spend))
}

/// The summaries (compaction history) of one agent or of every agent of a cell.
pub fn history(store: &dyn Store, cell: &str, agent: Option<&str>) -> Result<Vec<Value>> {
    let agents = match agent {
        Some(a) => vec![a.to_string()],
        None => store.list(cell, crate::store::Collection::Agents)?,
    };
    let mut out = Vec::new();
    for a in agents {
        for (name, bytes) in store.summaries(cell, &a)? {
            let mut v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.insert("agent".into(), json!(a));
                m.insert(
                    "file".into(),
                    json!(store.describe_summary(cell, &a, &name)),
                );
            }
            out.push(v);
        }
    }
    out.sort_by(|x, y| {
        x.get("time")
            .and_then(Value::as_str)
            .cmp(&y.get("time").and_then(Value::as_str))
    });
    Ok(out)
}

/// Seconds a cell has run against its timeout: (used, timeout).
pub fn cell_time(cell_doc: &Doc, now: DateTime<Utc>) -> (Option<f64>, Option<f64>) {
    let clock = CellClock::from_doc(cell_doc);
    (clock.used(now), clock.timeout)
}

/// Fails an active cell past its timeout; true when it did.
pub fn enforce_time(store: &dyn Store, cell: &str, now: DateTime<Utc>) -> Result<bool> {
    let doc = store::read_required(store, cell, FileKey::Cell)?;
    enforce_time_with(store, cell, &doc, now)
}

/// [`enforce_time`] with `cell.json` already read (`doc`); true when it failed the cell
/// (then `cell.json` has changed and `doc` is out of date).
pub fn enforce_time_with(
    store: &dyn Store,
    cell: &str,
    doc: &Doc,
    now: DateTime<Utc>,
) -> Result<bool> {
    // Most passes end here, on the document the caller read, without a transaction.
    if !matches!(
        rules::decide_time(&CellClock::from_doc(doc), now),
        TimeDecision::TimedOut { .. }
    ) {
        return Ok(false);
    }
    store::transact(store, cell, now, |txn| {
        let decision = rules::decide_time(
            &CellClock::from_doc(&txn.read_required(FileKey::Cell)?),
            now,
        );
        let Some(event) = decision.event() else {
            return Ok(false);
        };
        cell::set_status_in(txn, CellStatus::Failed)?;
        txn.event(event);
        Ok(true)
    })
}

/// When a cell's time budget runs out.
pub fn cell_deadline(cell_doc: &Doc) -> Option<DateTime<Utc>> {
    let clock = CellClock::from_doc(cell_doc);
    let timeout = clock.timeout?;
    Some(clock.started? + chrono::Duration::milliseconds((timeout * 1000.0) as i64))
}

/// One agent's budgets.
#[derive(Debug, Clone, Serialize)]
pub struct AgentBudget {
    /// The agent.
    pub agent: String,
    /// Context in use.
    pub ctx_used: Option<u64>,
    /// Context window.
    pub ctx_limit: Option<u64>,
    /// ctx_used / ctx_limit.
    pub ctx_ratio: Option<f64>,
    /// The context state.
    pub ctx_state: Option<State>,
    /// Money spent.
    pub cost_usd: Option<f64>,
    /// Tokens used.
    pub tokens_used: Option<f64>,
    /// The spend state.
    pub spend_state: State,
    /// Why, when not ok.
    pub spend_reason: Option<String>,
    /// `thrashing` when compactions come too often.
    pub flag: Option<String>,
    /// Compactions in the last hour.
    pub compactions_last_hour: usize,
}

/// A cell's budgets.
#[derive(Debug, Clone, Serialize)]
pub struct CellBudget {
    /// The cell.
    pub cell: String,
    /// Its status.
    pub status: String,
    /// Per agent.
    pub agents: Vec<AgentBudget>,
    /// Quota lines.
    pub quota: Vec<crate::ops::reservation::QuotaLine>,
    /// Seconds used of the time budget.
    pub time_used: Option<f64>,
    /// The time budget.
    pub timeout: Option<f64>,
    /// The worst state of all.
    pub state: State,
}

/// Every budget of a cell.
pub fn cell_budget(store: &dyn Store, cell: &str, now: DateTime<Utc>) -> Result<CellBudget> {
    let cell_doc = store::read_required(store, cell, FileKey::Cell)?;
    let policies = store.read(cell, FileKey::Config(crate::store::ConfigFile::Policies))?;
    let (agents, _) = crate::ops::agent::read_all(store, cell)?;
    let totals = Spent::total(&agents);
    let mut worst = State::Ok;
    let mut rows = Vec::new();
    for a in &agents {
        let policy = Policy::resolve(
            store.root_policies(),
            Some(&cell_doc),
            policies.as_ref(),
            Some(a),
        );
        let ctx = context_state(a.u64("ctx_used"), a.u64("ctx_limit"), &policy);
        let (spend, reason) = spend_state(a, &policy, totals);
        let flag = a.str("budget_flag").map(str::to_string);
        worst = worst.max(spend).max(ctx.map_or(State::Ok, |c| c.0));
        if flag.is_some() {
            worst = worst.max(State::Warning);
        }
        rows.push(AgentBudget {
            agent: a.str("agent_id").unwrap_or_default().to_string(),
            ctx_used: a.u64("ctx_used"),
            ctx_limit: a.u64("ctx_limit"),
            ctx_ratio: ctx.map(|c| c.1),
            ctx_state: ctx.map(|c| c.0),
            cost_usd: a.f64("cost_usd"),
            tokens_used: a.f64("tokens_used"),
            spend_state: spend,
            spend_reason: reason,
            flag,
            compactions_last_hour: rules::compactions_last_hour(
                &ContextFacts::from_doc(a).compactions,
                now,
            )
            .len(),
        });
    }
    let quota = crate::ops::reservation::quota(store, cell)?;
    let (time_used, timeout) = cell_time(&cell_doc, now);
    let status = cell_doc.str("status").unwrap_or("?").to_string();
    if let (Some(u), Some(t)) = (time_used, timeout) {
        if status == "active" {
            if u > t {
                worst = State::Breach;
            } else if u >= 0.75 * t {
                worst = worst.max(State::Warning);
            }
        }
    }
    if status == "failed"
        && cell_doc.str("status_changed_at").is_some()
        && timeout.is_some_and(|t| time_used.is_some_and(|u| u > t))
    {
        worst = State::Breach;
    }
    Ok(CellBudget {
        cell: cell.to_string(),
        status,
        agents: rows,
        quota,
        time_used,
        timeout,
        state: worst,
    })
}
