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

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::cell::{self, CellStatus};
use crate::checkpoint::{self, SaveRequest};
use crate::clock;
use crate::doc::Doc;
use crate::error::Result;
use crate::events::{Level, NewEvent};
use crate::policy::Policy;
use crate::store::{self, FileKey, Store};

/// A budget's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Within budget.
    Ok,
    /// Past the soft threshold.
    Warning,
    /// Past the hard threshold.
    Breach,
}

impl State {
    /// The spelling in files and output.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Warning => "warning",
            State::Breach => "breach",
        }
    }
}

/// The context ratios at which an agent is warned and breaches: (`target_ratio`,
/// `hard_max_ratio`), so displays can mark them on a context bar.
pub fn context_thresholds(policy: &Policy) -> (f64, f64) {
    let target = policy
        .get("target_ratio")
        .and_then(Value::as_f64)
        .unwrap_or(0.5);
    let hard = policy
        .get("hard_max_ratio")
        .and_then(Value::as_f64)
        .unwrap_or(0.75);
    (target, hard)
}

/// The context state from use and limit; `None` when the agent reports no limit.
pub fn context_state(
    used: Option<u64>,
    limit: Option<u64>,
    policy: &Policy,
) -> Option<(State, f64)> {
    let (used, limit) = (used?, limit.filter(|l| *l > 0)?);
    let ratio = used as f64 / limit as f64;
    let (target, hard) = context_thresholds(policy);
    let state = if ratio >= hard {
        State::Breach
    } else if ratio >= target {
        State::Warning
    } else {
        State::Ok
    };
    Some((state, ratio))
}

fn limit(policy: &Policy, key: &str) -> Option<f64> {
    policy
        .get(key)
        .and_then(Value::as_f64)
        .filter(|v| *v >= 0.0)
}

/// The money-and-tokens state of an agent, with the reason when it is not ok. `cell_totals`
/// is what all agents of the cell spent together (cost, tokens).
pub fn spend_state(
    agent: &Doc,
    policy: &Policy,
    cell_totals: (f64, f64),
) -> (State, Option<String>) {
    let cost = agent.f64("cost_usd").unwrap_or(0.0);
    let tokens = agent.f64("tokens_used").unwrap_or(0.0);
    let checks = [
        (
            cost,
            limit(policy, "cost_hard_usd"),
            State::Breach,
            "cost_usd",
        ),
        (
            tokens,
            limit(policy, "tokens_hard"),
            State::Breach,
            "tokens",
        ),
        (
            cell_totals.0,
            limit(policy, "cell_cost_hard_usd"),
            State::Breach,
            "cell cost_usd",
        ),
        (
            cell_totals.1,
            limit(policy, "cell_tokens_hard"),
            State::Breach,
            "cell tokens",
        ),
        (
            cost,
            limit(policy, "cost_soft_usd"),
            State::Warning,
            "cost_usd",
        ),
        (
            tokens,
            limit(policy, "tokens_soft"),
            State::Warning,
            "tokens",
        ),
    ];
    for (value, lim, state, what) in checks {
        if let Some(l) = lim {
            if value >= l {
                return (state, Some(format!("{what} {value} reached the limit {l}")));
            }
        }
    }
    (State::Ok, None)
}

/// What all agents of a cell spent together: cost in dollars, tokens.
pub fn cell_spend(store: &dyn Store, cell: &str) -> Result<(f64, f64)> {
    let (agents, _) = crate::agent::read_all(store, cell)?;
    Ok(agents.iter().fold((0.0, 0.0), |(c, t), a| {
        (
            c + a.f64("cost_usd").unwrap_or(0.0),
            t + a.f64("tokens_used").unwrap_or(0.0),
        )
    }))
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

fn compactions_last_hour(doc: &Doc, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    doc.strings("compactions")
        .iter()
        .filter_map(|s| clock::parse(s))
        .filter(|t| (now - *t).num_seconds() < 3600)
        .collect()
}

/// Reacts to a new context reading: events on state changes, and on a breach Save-State →
/// Clear → Resume (or a thrash flag). Returns the compaction when one ran.
pub fn context_changed(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    now: DateTime<Utc>,
) -> Result<Option<Compaction>> {
    let doc = crate::agent::read(store, cell, agent)?;
    let policy = crate::policy::load(store, cell, Some(&doc))?;
    let Some((state, ratio)) = context_state(doc.u64("ctx_used"), doc.u64("ctx_limit"), &policy)
    else {
        return Ok(None);
    };
    let previous = doc.str("ctx_state").unwrap_or("ok").to_string();
    if previous != state.as_str() {
        let level = match state {
            State::Ok => Level::Info,
            State::Warning => Level::Warn,
            State::Breach => Level::Error,
        };
        let event = NewEvent::new(level, &format!("budget.context_{}", state.as_str()), format!("agent {agent} uses {:.0}% of its context ({previous} -> {})", ratio * 100.0, state.as_str()))
            .agent(agent)
            .details(json!({ "ctx_used": doc.u64("ctx_used"), "ctx_limit": doc.u64("ctx_limit"), "ratio": ratio }));
        store::update_agent_with(store, cell, agent, now, vec![event], &mut |d| {
            d.set("ctx_state", state.as_str());
            Ok(())
        })?;
    }
    if state != State::Breach {
        return Ok(None);
    }
    // The thrash guard: not too soon after the last compaction, not too many per hour.
    let recent = compactions_last_hour(&doc, now);
    let min_interval = policy.non_negative("compact_min_interval");
    let max_per_hour = policy
        .get("compact_max_per_hour")
        .and_then(Value::as_u64)
        .unwrap_or(4);
    let too_soon = recent
        .iter()
        .max()
        .is_some_and(|last| ((now - *last).num_milliseconds() as f64 / 1000.0) < min_interval);
    let too_many = recent.len() as u64 >= max_per_hour;
    if too_soon || too_many {
        let why = if too_soon {
            format!("the last compaction was less than {min_interval}s ago")
        } else {
            format!(
                "{} compactions in the last hour (compact_max_per_hour is {max_per_hour})",
                recent.len()
            )
        };
        if doc.str("budget_flag") != Some("thrashing") {
            let event = NewEvent::new(
                Level::Error,
                "budget.thrashing",
                format!("agent {agent} breached its context budget again; not compacting: {why}"),
            )
            .agent(agent);
            store::update_agent_with(store, cell, agent, now, vec![event], &mut |d| {
                d.set("budget_flag", "thrashing");
                Ok(())
            })?;
        }
        return Ok(None);
    }
    compact(store, cell, agent, &doc, ratio, now).map(Some)
}

/// Save-State → Clear → Resume.
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
    let event = NewEvent::new(Level::Warn, "budget.compacted", format!("agent {agent}: state saved (checkpoint {}), context cleared ({used} tokens), told to summarize", saved.generation))
        .agent(agent)
        .details(json!({ "generation": saved.generation, "summary": path, "ctx_used_before": used }));
    store::update_agent_with(store, cell, agent, now, vec![event], &mut |d| {
        d.set("ctx_used", 0);
        d.set("ctx_state", "ok");
        d.remove("budget_flag");
        let mut list: Vec<String> = compactions_last_hour(d, now)
            .into_iter()
            .map(clock::stamp)
            .collect();
        list.push(clock::stamp(now));
        d.set("compactions", json!(list));
        d.set("pending_directive", json!({ "action": "summarize", "reason": "context_budget", "summary": path, "at": clock::stamp(now) }));
        Ok(())
    })?;
    Ok(Compaction {
        generation: saved.generation,
        summary: path.clone(),
        ctx_used_before: used,
    })
}

/// Records spend and reacts to state changes (events); returns the agent's spend state.
pub fn spend_changed(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    now: DateTime<Utc>,
) -> Result<(State, Option<String>)> {
    let doc = crate::agent::read(store, cell, agent)?;
    let policy = crate::policy::load(store, cell, Some(&doc))?;
    let (state, why) = spend_state(&doc, &policy, cell_spend(store, cell)?);
    if doc.str("spend_state").unwrap_or("ok") != state.as_str() {
        let (level, kind) = match state {
            State::Ok => (Level::Info, "budget.spend_ok"),
            State::Warning => (Level::Warn, "budget.spend_warning"),
            State::Breach => (Level::Error, "budget.reached"),
        };
        let event = NewEvent::new(
            level,
            kind,
            format!(
                "agent {agent}: {}",
                why.clone().unwrap_or_else(|| "spend within budget".into())
            ),
        )
        .agent(agent);
        store::update_agent_with(store, cell, agent, now, vec![event], &mut |d| {
            d.set("spend_state", state.as_str());
            Ok(())
        })?;
    }
    Ok((state, why))
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
    crate::agent::read(store, cell, agent)?;
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
    let start = cell_doc
        .str("activated_at")
        .and_then(clock::parse)
        .or_else(|| cell_doc.str("created_at").and_then(clock::parse));
    let used = start.map(|s| (now - s).num_milliseconds() as f64 / 1000.0);
    (used, cell_doc.f64("timeout").filter(|t| *t > 0.0))
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
    if doc.str("status") != Some("active") {
        return Ok(false);
    }
    match cell_time(doc, now) {
        (Some(used), Some(timeout)) if used > timeout => {
            store::transact(store, cell, now, |txn| {
                cell::set_status_in(txn, CellStatus::Failed)?;
                txn.event(
                    NewEvent::new(
                        Level::Error,
                        "budget.cell_timeout",
                        format!(
                            "cell ran {} past its timeout of {}",
                            clock::human_duration(used - timeout),
                            clock::human_duration(timeout)
                        ),
                    )
                    .details(json!({ "used": used, "timeout": timeout })),
                );
                Ok(())
            })?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// When a cell's time budget runs out.
pub fn cell_deadline(cell_doc: &Doc) -> Option<DateTime<Utc>> {
    let start = cell_doc
        .str("activated_at")
        .and_then(clock::parse)
        .or_else(|| cell_doc.str("created_at").and_then(clock::parse))?;
    let timeout = cell_doc.f64("timeout").filter(|t| *t > 0.0)?;
    Some(start + chrono::Duration::milliseconds((timeout * 1000.0) as i64))
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
    pub quota: Vec<crate::reservation::QuotaLine>,
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
    let (agents, _) = crate::agent::read_all(store, cell)?;
    let totals = agents.iter().fold((0.0, 0.0), |(c, t), a| {
        (
            c + a.f64("cost_usd").unwrap_or(0.0),
            t + a.f64("tokens_used").unwrap_or(0.0),
        )
    });
    let mut worst = State::Ok;
    let mut rows = Vec::new();
    for a in &agents {
        let policy = Policy::resolve(Some(&cell_doc), policies.as_ref(), Some(a));
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
            compactions_last_hour: compactions_last_hour(a, now).len(),
        });
    }
    let quota = crate::reservation::quota(store, cell)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn doc(text: &str) -> Doc {
        Doc::parse(text.as_bytes(), Path::new("t")).unwrap()
    }

    #[test]
    fn context_thresholds_follow_the_governor() {
        let p = Policy::resolve(None, None, None);
        assert_eq!(context_state(Some(49), Some(100), &p).unwrap().0, State::Ok);
        assert_eq!(
            context_state(Some(50), Some(100), &p).unwrap().0,
            State::Warning
        );
        assert_eq!(
            context_state(Some(75), Some(100), &p).unwrap().0,
            State::Breach
        );
        assert!(context_state(Some(75), None, &p).is_none());
    }

    #[test]
    fn hard_limits_stop_and_soft_limits_warn() {
        let p = Policy::resolve(
            None,
            Some(&doc(
                r#"{"cost_soft_usd": 1, "cost_hard_usd": 5, "cell_tokens_hard": 1000}"#,
            )),
            None,
        );
        assert_eq!(
            spend_state(&doc(r#"{"cost_usd": 0.5}"#), &p, (0.5, 0.0)).0,
            State::Ok
        );
        assert_eq!(
            spend_state(&doc(r#"{"cost_usd": 2}"#), &p, (2.0, 0.0)).0,
            State::Warning
        );
        assert_eq!(
            spend_state(&doc(r#"{"cost_usd": 5}"#), &p, (5.0, 0.0)).0,
            State::Breach
        );
        assert_eq!(
            spend_state(&doc(r#"{"tokens_used": 10}"#), &p, (0.0, 1000.0)).0,
            State::Breach
        );
    }
}
