//! Budgets: context window, money and tokens per agent, time per cell.
//!
//! Context: below `target_ratio` of `ctx_limit` an agent is `ok`, from it `warning`, from
//! `hard_max_ratio` `breach`; each change is an event. A breach runs Save-State → Clear →
//! Resume: a checkpoint of the agent's state, a summary file under
//! `checkpoints/<agent>/summaries/`, and a `summarize` directive on the agent's beat reply.
//! The clearing is the agent's to do: the breach lasts (in `budget check` too) until it
//! reports use below `hard_max_ratio`. A thrash guard (`compact_min_interval`,
//! `compact_max_per_hour`) flags an agent instead of compacting it again and again.
//!
//! Money and tokens: soft limits warn; hard limits answer beats with `stop` (reason
//! `budget_reached`), keeping all state, so raising the limit lets the agent go on.
//! Time: an active cell past its `timeout` (seconds of active time from `activated_at`,
//! else `created_at`; time paused does not count) becomes `failed`.

pub mod rules;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::clock;
use crate::doc::Doc;
use crate::error::{Error, Result};
use crate::model::{
    Agent, AgentStatus, BudgetFlag, BudgetRequest, Cell, CellStatus, Directive, EventKind,
    PendingDirective, Policies,
};
use crate::ops::budget::rules::{
    BreachAction, CellClock, ContextFacts, ContextPolicy, SpendLimits, Spent, TimeDecision,
};
use crate::ops::cell;
use crate::ops::checkpoint::{self, SaveRequest};
use crate::ops::policy::{self, Policy};
use crate::store::events::{Level, NewEvent};
use crate::store::{self, check_id, FileKey, IdKind, Store, Txn};

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
pub fn spend_state(agent: &Agent, policy: &Policy, cell_totals: Spent) -> (State, Option<String>) {
    rules::spend_state(
        Spent::of(agent),
        cell_totals,
        &SpendLimits::from_policy(policy),
    )
}

/// What all agents of a cell spent together.
pub fn cell_spend(store: &dyn Store, cell: &str) -> Result<Spent> {
    let (agents, _) = crate::ops::agent::load_all(store, cell)?;
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

/// A compaction summary (`checkpoints/<agent>/summaries/<time>.json`): where the agent was
/// when its context was cleared, to resume from. Written by a compaction, read back by
/// `pas budget history`; its keys are spelled here only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    /// When the context was cleared.
    pub time: Option<String>,
    /// The agent.
    pub agent_id: Option<String>,
    /// Its restarts so far: which run of the agent it was.
    pub run: Option<u64>,
    /// Why.
    pub reason: Option<String>,
    /// Context tokens in use before the reset.
    pub ctx_used_before: Option<u64>,
    /// Its context window.
    pub ctx_limit: Option<u64>,
    /// Its last note.
    pub last_note: Option<String>,
    /// Its reported progress.
    pub progress: Option<f64>,
    /// The task it worked on.
    pub current_task: Option<String>,
    /// The checkpoint generation saved before the reset.
    pub checkpoint_generation: Option<u64>,
}

/// An agent's file in a transaction with its typed view, or the error `pas` gives for an
/// agent that is not there.
fn read_agent(txn: &mut Txn<'_>, agent: &str) -> Result<(Doc, Agent)> {
    let cell = txn.cell().to_string();
    let doc = txn.read(FileKey::Agent(agent))?.ok_or_else(|| {
        Error::not_found(format!("no agent {agent} in cell {cell}"))
            .hint(format!("`pas agent list {cell}` shows its agents"))
    })?;
    let typed = crate::ops::agent::typed(agent, &doc)?;
    Ok((doc, typed))
}

/// The policy layers of a cell that do not depend on the agent: `cell.json`'s policies and
/// `config/policies.json`, read before a transaction resolves them with the agent's own.
fn policy_layers(store: &dyn Store, cell: &str) -> Result<(Option<Policies>, Option<Policies>)> {
    let cell_doc = store
        .read(cell, FileKey::Cell)?
        .map(|doc| Cell::from_doc(&doc))
        .transpose()?;
    Ok((
        cell_doc.map(|c| c.policies),
        policy::read_file_layer(store, cell)?,
    ))
}

/// The effective policy of `agent` over the cell's layers.
fn agent_policy(
    store: &dyn Store,
    layers: &(Option<Policies>, Option<Policies>),
    agent: &Agent,
) -> Policy {
    Policy::of(
        store.root_policies(),
        layers.0.as_ref(),
        layers.1.as_ref(),
        Some(&agent.policies),
    )
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
    let layers = policy_layers(store, cell)?;
    let (decision, typed) = store::transact(store, cell, now, |txn| {
        let (mut doc, mut typed) = read_agent(txn, agent)?;
        let policy = agent_policy(store, &layers, &typed);
        let Some(decision) = rules::decide_context(
            &ContextFacts::of(&typed),
            &ContextPolicy::from_policy(&policy),
            now,
        ) else {
            return Ok((None, typed));
        };
        let mut changed = false;
        if let Some(t) = &decision.transition {
            typed.ctx_state = Some(t.to);
            changed = true;
        }
        if let BreachAction::Thrashing { flag: true, .. } = decision.action {
            typed.budget_flag = Some(BudgetFlag::Thrashing);
            changed = true;
        }
        let mut asked = None;
        if decision.action == BreachAction::Ask {
            let id = format!("b-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
            typed.budget_request = Some(BudgetRequest {
                id: id.clone(),
                at: Some(now),
                ratio: Some(decision.ratio),
                extra: Map::new(),
            });
            if typed.status == AgentStatus::Active {
                typed.status = AgentStatus::Paused;
            }
            asked = Some(id);
            changed = true;
        }
        if changed {
            typed.write_into(&mut doc);
            txn.put(FileKey::Agent(agent), doc);
        }
        for event in decision.events(agent) {
            txn.event(event);
        }
        if let Some(id) = asked {
            txn.event(
                NewEvent::new(
                    Level::Warn,
                    EventKind::BudgetBreachRequested,
                    format!(
                        "agent {agent} breached its context budget ({:.0}%) and is paused; `pas budget approve {id}` compacts and resumes it, `pas budget deny {id}` leaves it paused",
                        decision.ratio * 100.0
                    ),
                )
                .agent(agent)
                .details(json!({ "request": id, "ratio": decision.ratio })),
            );
        }
        Ok((Some(decision), typed))
    })?;
    match decision {
        Some(d) if d.action == BreachAction::Compact => compact(
            store,
            cell,
            agent,
            &typed,
            &Why::Breach { ratio: d.ratio },
            now,
        )
        .map(Some),
        _ => Ok(None),
    }
}

/// Save-State → Clear → Resume on request (the seed Token Governor's `POST /summarize`),
/// whatever the agent's context use: the same compaction a breach runs, recorded as asked
/// for (with the caller's `trigger`, when it gave one) rather than as a breach.
pub fn compact_now(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    trigger: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Compaction> {
    let typed = crate::ops::agent::load(store, cell, agent)?;
    let ratio = match (typed.ctx_used, typed.ctx_limit) {
        (Some(used), Some(limit)) if limit > 0 => used as f64 / limit as f64,
        _ => 0.0,
    };
    let why = Why::Asked {
        ratio,
        trigger: trigger.map(str::to_string),
    };
    compact(store, cell, agent, &typed, &why, now)
}

/// Why a compaction runs: what its checkpoint, summary and event say.
enum Why {
    /// The context budget was breached at this share of the window.
    Breach { ratio: f64 },
    /// Someone asked for it (`POST /summarize`), at this share of the window.
    Asked { ratio: f64, trigger: Option<String> },
}

impl Why {
    /// The checkpoint's reason.
    fn checkpoint(&self) -> String {
        match self {
            Why::Breach { .. } => "context budget breach".into(),
            Why::Asked { .. } => "summary requested".into(),
        }
    }

    /// The summary's reason.
    fn summary(&self) -> String {
        match self {
            Why::Breach { ratio } => format!(
                "context budget breached at {:.0}% of the window",
                ratio * 100.0
            ),
            Why::Asked { ratio, trigger } => format!(
                "summary requested at {:.0}% of the window{}",
                ratio * 100.0,
                trigger
                    .as_deref()
                    .map(|t| format!(" (trigger: {t})"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// Save-State → Clear → Resume: a checkpoint generation and a summary file (not documents:
/// written first, outside any transaction), then the agent's context reset, its compaction
/// noted and a `summarize` directive left for it, with the event, in one transaction.
fn compact(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    typed: &Agent,
    why: &Why,
    now: DateTime<Utc>,
) -> Result<Compaction> {
    let used = typed.ctx_used.unwrap_or(0);
    let saved = checkpoint::save(
        store,
        cell,
        agent,
        SaveRequest {
            reason: why.checkpoint(),
            ..SaveRequest::default()
        },
        now,
    )?;
    let summary = Summary {
        time: Some(clock::stamp(now)),
        agent_id: Some(agent.to_string()),
        run: Some(typed.restart_count),
        reason: Some(why.summary()),
        ctx_used_before: Some(used),
        ctx_limit: typed.ctx_limit,
        last_note: typed.note.clone(),
        progress: typed.progress,
        current_task: typed.current_task.clone(),
        checkpoint_generation: Some(saved.generation),
    };
    let mut bytes = serde_json::to_vec_pretty(&summary).unwrap_or_default();
    bytes.push(b'\n');
    let name = format!("{}.json", now.format("%Y%m%dT%H%M%S%.6fZ"));
    let path = store.write_summary(cell, agent, &name, &bytes)?;
    store::transact(store, cell, now, |txn| {
        let (mut doc, mut a) = read_agent(txn, agent)?;
        // Its use stays as it reported it: the breach lasts until it reports less.
        a.budget_flag = None;
        a.compactions = rules::compactions_last_hour(&a.compactions, now);
        a.compactions.push(now);
        a.pending_directive = Some(PendingDirective {
            action: Some(Directive::Summarize),
            reason: Some(match why {
                Why::Breach { .. } => "context_budget".into(),
                Why::Asked { .. } => "requested".into(),
            }),
            summary: Some(path.clone()),
            at: Some(now),
            extra: Map::new(),
        });
        a.write_into(&mut doc);
        txn.put(FileKey::Agent(agent), doc);
        txn.event(
            NewEvent::new(Level::Warn, EventKind::BudgetCompacted, match why {
                Why::Breach { .. } => format!("agent {agent}: state saved (checkpoint {}), told to summarize its context ({used} tokens); the breach lasts until it reports less", saved.generation),
                Why::Asked { .. } => format!("agent {agent}: state saved (checkpoint {}), told to summarize its context ({used} tokens), as requested", saved.generation),
            })
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

/// A context breach waiting for an operator (`breach_action: ask`).
#[derive(Debug, Clone, Serialize)]
pub struct BreachRequest {
    /// The request's id.
    pub id: String,
    /// The cell.
    pub cell: String,
    /// The agent, paused meanwhile.
    pub agent: String,
    /// When it was filed.
    pub at: Option<String>,
    /// The context use at the breach.
    pub ratio: Option<f64>,
}

/// Every pending breach request of the given cells.
pub fn requests(store: &dyn Store, cells: &[String]) -> Result<Vec<BreachRequest>> {
    let mut out = Vec::new();
    for cell in cells {
        // A file that does not read holds no request pas could act on.
        let (agents, _) = crate::ops::agent::load_all(store, cell)?;
        for a in agents {
            if let Some(r) = a.budget_request {
                out.push(BreachRequest {
                    id: r.id,
                    cell: cell.clone(),
                    agent: a.agent_id,
                    at: r.at.map(clock::stamp),
                    ratio: r.ratio,
                });
            }
        }
    }
    Ok(out)
}

/// Approves (compact now, then resume the agent) or denies (it stays paused) a pending
/// breach request, found by id in any cell. Returns the request and, when approved, the
/// compaction.
pub fn settle(
    store: &dyn Store,
    id: &str,
    approve: bool,
    now: DateTime<Utc>,
) -> Result<(BreachRequest, Option<Compaction>)> {
    let found = requests(store, &store.cell_ids()?)?
        .into_iter()
        .find(|r| r.id == id);
    let Some(req) = found else {
        return Err(Error::not_found(format!("no pending budget request {id}"))
            .hint("`pas budget requests` lists them"));
    };
    let (cell, agent) = (req.cell.as_str(), req.agent.as_str());
    let compaction = if approve {
        let typed = crate::ops::agent::load(store, cell, agent)?;
        let ratio = req.ratio.unwrap_or(0.0);
        Some(compact(
            store,
            cell,
            agent,
            &typed,
            &Why::Breach { ratio },
            now,
        )?)
    } else {
        None
    };
    let (kind, level, message) = if approve {
        (
            EventKind::BudgetBreachApproved,
            Level::Info,
            format!("budget request {id} approved: agent {agent} compacted and resumed"),
        )
    } else {
        (
            EventKind::BudgetBreachDenied,
            Level::Warn,
            format!("budget request {id} denied: agent {agent} stays paused"),
        )
    };
    store::transact(store, cell, now, |txn| {
        let (mut doc, mut a) = read_agent(txn, agent)?;
        if a.budget_request.as_ref().map(|r| r.id.as_str()) != Some(id) {
            return Err(Error::conflict(format!(
                "budget request {id} was settled meanwhile"
            )));
        }
        a.budget_request = None;
        if approve && a.status == AgentStatus::Paused {
            a.status = AgentStatus::Active;
            crate::ops::agent::activated(&mut a, AgentStatus::Paused, now);
        }
        a.write_into(&mut doc);
        txn.put(FileKey::Agent(agent), doc);
        txn.event(
            NewEvent::new(level, kind, message.clone())
                .agent(agent)
                .details(json!({ "request": id })),
        );
        Ok(())
    })?;
    Ok((req, compaction))
}

/// Records the agent's spend state when it changed, with its event; returns the state.
pub fn spend_changed(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    now: DateTime<Utc>,
) -> Result<(State, Option<String>)> {
    check_id(IdKind::Agent, agent)?;
    let layers = policy_layers(store, cell)?;
    let totals = cell_spend(store, cell)?;
    let decision = store::transact(store, cell, now, |txn| {
        let (mut doc, mut typed) = read_agent(txn, agent)?;
        let policy = agent_policy(store, &layers, &typed);
        let decision = rules::decide_spend(
            Spent::of(&typed),
            typed.spend_state.unwrap_or(State::Ok),
            totals,
            &SpendLimits::from_policy(&policy),
        );
        if let Some(event) = decision.event(agent) {
            typed.spend_state = Some(decision.state);
            typed.write_into(&mut doc);
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
        let mut a = crate::ops::agent::typed(agent, d)?;
        if used.is_some() {
            a.ctx_used = used;
        }
        if limit.is_some() {
            a.ctx_limit = limit;
        }
        if cost.is_some() {
            a.cost_usd = cost;
        }
        if let Some(t) = tokens {
            a.tokens_used = Some(t as f64);
        }
        a.write_into(d);
        Ok(())
    })?;
    let compaction = context_changed(store, cell, agent, now)?;
    let (spend, _) = spend_changed(store, cell, agent, now)?;
    Ok((compaction, spend))
}

/// One compaction of `pas budget history`.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// The agent whose summary it is.
    pub agent: String,
    /// The summary as `--json` shows it: the file as written, with `agent` and `file`.
    pub shown: Value,
    /// The summary, typed (empty when the file does not read as one).
    pub summary: Summary,
}

/// The summaries (compaction history) of one agent or of every agent of a cell, oldest
/// first.
pub fn history(store: &dyn Store, cell: &str, agent: Option<&str>) -> Result<Vec<HistoryEntry>> {
    let agents = match agent {
        Some(a) => vec![a.to_string()],
        None => store.list(cell, crate::store::Collection::Agents)?,
    };
    let mut out = Vec::new();
    for a in agents {
        for (name, bytes) in store.summaries(cell, &a)? {
            let mut shown: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let summary = serde_json::from_value(shown.clone()).unwrap_or_default();
            if let Value::Object(m) = &mut shown {
                m.insert("agent".into(), json!(a));
                m.insert(
                    "file".into(),
                    json!(store.describe_summary(cell, &a, &name)),
                );
            }
            out.push(HistoryEntry {
                agent: a.clone(),
                shown,
                summary,
            });
        }
    }
    out.sort_by(|x, y| x.summary.time.cmp(&y.summary.time));
    Ok(out)
}

/// Seconds a cell has run against its timeout: (used, timeout).
pub fn cell_time(cell: &Cell, now: DateTime<Utc>) -> (Option<f64>, Option<f64>) {
    let clock = CellClock::of(cell);
    (clock.used(now), clock.timeout)
}

/// Fails an active cell past its timeout, `typed` being its `cell.json` as the caller read
/// it; true when it did (then `cell.json` has changed and `typed` is out of date).
pub fn enforce_time(
    store: &dyn Store,
    cell: &str,
    typed: &Cell,
    now: DateTime<Utc>,
) -> Result<bool> {
    // Most passes end here, on the document the caller read, without a transaction.
    if !matches!(
        rules::decide_time(&CellClock::of(typed), now),
        TimeDecision::TimedOut { .. }
    ) {
        return Ok(false);
    }
    store::transact(store, cell, now, |txn| {
        let decision = rules::decide_time(
            &CellClock::of(&Cell::from_doc(&txn.read_required(FileKey::Cell)?)?),
            now,
        );
        let Some(event) = decision.event() else {
            return Ok(false);
        };
        cell::set_status_in(txn, cell::CellStatus::Failed)?;
        txn.event(event);
        Ok(true)
    })
}

/// When a cell's time budget runs out; `None` without a timeout.
pub fn deadline(cell: &Cell) -> Option<DateTime<Utc>> {
    let clock = CellClock::of(cell);
    let timeout = clock.timeout?;
    let counted = timeout + clock.paused;
    Some(clock.started? + chrono::Duration::milliseconds((counted * 1000.0) as i64))
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
    pub flag: Option<BudgetFlag>,
    /// Compactions in the last hour.
    pub compactions_last_hour: usize,
}

/// A cell's budgets.
#[derive(Debug, Clone, Serialize)]
pub struct CellBudget {
    /// The cell.
    pub cell: String,
    /// Its status.
    pub status: CellStatus,
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
    /// Agent files that could not be read: their spend is unknown, so the cell's totals
    /// and its state are not the whole truth.
    pub problems: Vec<String>,
}

/// Every budget of a cell.
pub fn cell_budget(store: &dyn Store, cell: &str, now: DateTime<Utc>) -> Result<CellBudget> {
    let cell_doc = Cell::from_doc(&store::read_required(store, cell, FileKey::Cell)?)?;
    let file = policy::read_file_layer(store, cell)?;
    let (agents, unreadable) = crate::ops::agent::load_all(store, cell)?;
    let totals = Spent::total(&agents);
    let mut worst = State::Ok;
    let mut rows = Vec::new();
    for a in &agents {
        let policy = Policy::of(
            store.root_policies(),
            Some(&cell_doc.policies),
            file.as_ref(),
            Some(&a.policies),
        );
        let ctx = context_state(a.ctx_used, a.ctx_limit, &policy);
        let (spend, reason) = spend_state(a, &policy, totals);
        let flag = a.budget_flag;
        worst = worst.max(spend).max(ctx.map_or(State::Ok, |c| c.0));
        if flag.is_some() {
            worst = worst.max(State::Warning);
        }
        rows.push(AgentBudget {
            agent: a.agent_id.clone(),
            ctx_used: a.ctx_used,
            ctx_limit: a.ctx_limit,
            ctx_ratio: ctx.map(|c| c.1),
            ctx_state: ctx.map(|c| c.0),
            cost_usd: a.cost_usd,
            tokens_used: a.tokens_used,
            spend_state: spend,
            spend_reason: reason,
            flag,
            compactions_last_hour: rules::compactions_last_hour(&a.compactions, now).len(),
        });
    }
    let quota = crate::ops::reservation::quota(store, cell)?;
    let (time_used, timeout) = cell_time(&cell_doc, now);
    let status = cell_doc.status;
    if let (Some(u), Some(t)) = (time_used, timeout) {
        if status == CellStatus::Active {
            if u > t {
                worst = State::Breach;
            } else if u >= 0.75 * t {
                worst = worst.max(State::Warning);
            }
        }
    }
    if status == CellStatus::Failed
        && cell_doc.status_changed_at.is_some()
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
        problems: unreadable.into_iter().map(|e| e.message).collect(),
    })
}
