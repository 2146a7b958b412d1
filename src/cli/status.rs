//! `pas status`, `pas check`, `pas metrics`

use std::path::PathBuf;

use clap::Args;
use serde_json::{json, Value};

use super::agent::health_tone;
use super::Ctx;
use crate::cell;
use crate::clock;
use crate::error::{Error, Kind, Result};
use crate::output::Styled;
use crate::status::{self, CellView};
use crate::store::Store;

// Arguments of `pas status`.
//
// Example: pas status --all --json
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One cell (default: every cell).
    pub cell: Option<String>,
    /// Every cell (the default when no CELL is given).
    #[arg(long, conflicts_with = "cell")]
    pub all: bool,
}

// Arguments of `pas check`.
//
// Example: pas check || alert "pas fleet not OK"
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// One cell (default: every cell).
    pub cell: Option<String>,
}

// Arguments of `pas metrics`.
//
// Example: pas metrics --output /var/lib/node_exporter/textfile/pas.prom
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Write to this file atomically instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

fn views(ctx: &Ctx, cell: Option<&str>, record: bool) -> Result<(Vec<CellView>, Vec<Error>)> {
    let now = clock::now();
    match cell {
        Some(query) => {
            let id = cell::resolve(&ctx.store, query)?;
            Ok((
                vec![status::cell_view(&ctx.store, &id, record, now)?],
                Vec::new(),
            ))
        }
        None => status::root_views(&ctx.store, record, now),
    }
}

fn percent(part: Option<u64>, whole: Option<u64>) -> String {
    match (part, whole) {
        (Some(p), Some(w)) if w > 0 => format!("{:.0}%", 100.0 * p as f64 / w as f64),
        (Some(p), _) => p.to_string(),
        _ => "-".into(),
    }
}

/// When the next restart is due and the waits that follow, or `-`.
fn next_restart(a: &crate::status::AgentView) -> String {
    let schedule: Vec<String> = a
        .backoff_schedule
        .iter()
        .skip(a.restart_attempts as usize)
        .take(4)
        .map(|s| clock::human_duration(*s))
        .collect();
    let when = a
        .cooldown_until
        .as_deref()
        .map(|c| format!("cooling down until {c}"))
        .or_else(|| a.next_restart_at.clone());
    match when {
        Some(w) => format!("{w} (backoff {})", schedule.join(", ")),
        None if a.restart_count > 0 || a.process != "-" => {
            format!("- (backoff {})", schedule.join(", "))
        }
        None => "-".to_string(),
    }
}

fn health_summary(v: &CellView) -> String {
    if v.agents.is_empty() {
        return "no agents".into();
    }
    let parts: Vec<String> = crate::health::Health::ALL
        .iter()
        .filter_map(|h| {
            v.health_counts
                .get(h.as_str())
                .map(|n| format!("{n} {}", h.as_str()))
        })
        .collect();
    format!("{} agent(s): {}", v.agents.len(), parts.join(", "))
}

fn task_summary(v: &CellView) -> String {
    let t = &v.tasks;
    let time = match (v.time_used, v.timeout) {
        (Some(u), Some(l)) => format!(
            "; time {} of {}",
            clock::human_duration(u),
            clock::human_duration(l)
        ),
        _ => String::new(),
    };
    format!(
        "tasks {}/{} done, {} in progress, {} blocked, {} failed{time}",
        t.completed, t.total, t.in_progress, t.blocked, t.failed
    )
}

/// Runs `pas status`.
pub fn run_status(ctx: &Ctx, args: StatusArgs) -> Result<()> {
    let StatusArgs { cell, all: _ } = args;
    let (views, errors) = views(ctx, cell.as_deref(), true)?;
    for e in &errors {
        ctx.out.note(&format!("pas: skipped: {}", e.message));
    }
    if ctx.out.is_json() {
        let agents: usize = views.iter().map(|v| v.agents.len()).sum();
        let mut by_health = std::collections::BTreeMap::new();
        for v in &views {
            for (h, n) in &v.health_counts {
                *by_health.entry(h.clone()).or_insert(0usize) += n;
            }
        }
        ctx.out.json(&json!({
            "time": clock::stamp(clock::now()),
            "cells": views,
            "totals": { "cells": views.len(), "agents": agents, "health": by_health },
            "errors": errors.iter().map(|e| e.message.clone()).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    if views.is_empty() {
        ctx.out
            .info(&format!("no cells under {}", ctx.store.root().display()));
        return Ok(());
    }
    for (i, v) in views.iter().enumerate() {
        if i > 0 {
            ctx.out.info("");
        }
        let status = Styled::new(v.status.as_str(), super::cell::status_tone(&v.status));
        ctx.out.info(&format!(
            "cell {}  {}  {}  {}; {}",
            v.id,
            v.name,
            ctx.out.paint(&status),
            health_summary(v),
            task_summary(v)
        ));
        for p in &v.problems {
            ctx.out.note(&format!("pas: cannot read: {p}"));
        }
        if v.agents.is_empty() {
            continue;
        }
        let rows = v
            .agents
            .iter()
            .map(|a| {
                vec![
                    Styled::from(format!("  {}", a.id)),
                    Styled::new(a.health.as_str(), health_tone(a.health)),
                    Styled::from(status::beat_age(a)),
                    Styled::from(a.heartbeat_count.to_string()),
                    Styled::from(a.reported_status.clone().unwrap_or_else(|| "-".into())),
                    Styled::from(
                        a.progress
                            .map_or("-".into(), |p| format!("{:.0}%", p * 100.0)),
                    ),
                    Styled::from(match &a.ctx_state {
                        Some(s) if s != "ok" => format!("{} {s}", percent(a.ctx_used, a.ctx_limit)),
                        _ => percent(a.ctx_used, a.ctx_limit),
                    }),
                    Styled::from(a.current_task.clone().unwrap_or_else(|| "-".into())),
                    Styled::from(a.process),
                    Styled::from(a.restart_count.to_string()),
                    Styled::from(next_restart(a)),
                ]
            })
            .collect();
        ctx.out.table(
            &[
                "  AGENT",
                "HEALTH",
                "LAST BEAT",
                "BEATS",
                "REPORTED",
                "PROGRESS",
                "CONTEXT",
                "TASK",
                "PROCESS",
                "RESTARTS",
                "NEXT RESTART (BACKOFF)",
            ],
            rows,
        );
    }
    Ok(())
}

/// Runs `pas check`: one line on stdout, the Nagios exit code.
pub fn run_check(ctx: &Ctx, args: CheckArgs) -> Result<()> {
    let CheckArgs { cell } = args;
    let outcome = match views(ctx, cell.as_deref(), true) {
        Ok((views, errors)) => status::check(&views, &errors),
        Err(e) => status::check(&[], &[e]),
    };
    if ctx.out.is_json() {
        ctx.out
            .json(&serde_json::to_value(&outcome).unwrap_or(Value::Null));
    } else {
        ctx.out.line(&outcome.line);
    }
    if outcome.code == 0 {
        Ok(())
    } else {
        Err(Error::new(Kind::Verdict(outcome.code), ""))
    }
}

/// Runs `pas metrics`.
pub fn run_metrics(ctx: &Ctx, args: MetricsArgs) -> Result<()> {
    let MetricsArgs { output } = args;
    let (views, errors) = status::root_views(&ctx.store, false, clock::now())?;
    for e in &errors {
        ctx.out.note(&format!("pas: skipped: {}", e.message));
    }
    let text = status::metrics(&ctx.store, &views, clock::now())?;
    match output {
        Some(path) => {
            ctx.store.export(&path, text.as_bytes())?;
        }
        None => {
            // Exposition text goes out as is, whatever --json says.
            ctx.out.raw(&text);
        }
    }
    Ok(())
}
