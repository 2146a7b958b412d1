//! `pas budget ...`, `pas reserve`, `pas release`, `pas reservations`, `pas quota`, `pas kill`

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::cli::Ctx;
use crate::clock;
use crate::error::{Error, Kind, Result};
use crate::model::{Field, ReservationStatus};
use crate::ops::budget::{self, State};
use crate::ops::cell;
use crate::ops::reservation::{self, Request};
use crate::output::{Styled, Tone};
use crate::store::{check_id, IdKind, Store};
use crate::units::{self, Unit};

// Arguments of `pas budget`.
//
// Example: pas budget 3f2a --json
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BudgetArgs {
    /// Track usage, show history, or check for CI.
    #[command(subcommand)]
    pub command: Option<BudgetCommand>,
    /// One cell (default: every cell).
    pub cell: Option<String>,
}

// Budget subcommands.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum BudgetCommand {
    /// Record an agent's context use (and spend) outside a beat.
    ///
    /// Example: pas budget track 3f2a agent_001 --used 160000 --limit 200000
    Track(TrackArgs),
    /// The Save-State → Clear → Resume history (summaries) of a cell or an agent.
    ///
    /// Example: pas budget history 3f2a agent_001
    History(HistoryArgs),
    /// For CI gates: exit 0 ok, 1 warning, 2 breach (3 when something cannot be read).
    ///
    /// Example: pas budget check 3f2a || exit 1
    Check(CheckArgs),
    /// Context breaches waiting for an operator (breach_action: ask).
    ///
    /// Example: pas budget requests
    Requests(CheckArgs),
    /// Approve a breach request: compact the agent's context now and resume it.
    ///
    /// Example: pas budget approve b-1a2b3c4d
    Approve(RequestArgs),
    /// Deny a breach request: the agent stays paused.
    ///
    /// Example: pas budget deny b-1a2b3c4d
    Deny(RequestArgs),
}

// A budget request.
#[derive(Debug, Args)]
pub struct RequestArgs {
    /// The request's id (`pas budget requests` lists them).
    pub id: String,
}

// Arguments of `pas budget track`.
#[derive(Debug, Args)]
pub struct TrackArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// The agent's id.
    pub agent: String,
    /// Context tokens in use.
    #[arg(long, value_name = "N")]
    pub used: Option<u64>,
    /// Context window size.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Money spent so far, in dollars.
    #[arg(long, value_name = "USD")]
    pub cost_usd: Option<f64>,
    /// Tokens used so far.
    #[arg(long, value_name = "N")]
    pub tokens: Option<u64>,
}

// Arguments of `pas budget history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// Only this agent.
    pub agent: Option<String>,
}

// Arguments of `pas budget check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// One cell (default: every cell).
    pub cell: Option<String>,
}

// Arguments of `pas reserve`.
//
// Example: pas reserve 3f2a --job build-42 --agent agent_001 --cpu 2 --mem 4GB
#[derive(Debug, Args)]
pub struct ReserveArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// The job's id.
    #[arg(long)]
    pub job: String,
    /// The agent that holds the lease.
    #[arg(long)]
    pub agent: String,
    /// CPU cores (`2`, `1.5`, `500m`).
    #[arg(long, value_name = "N")]
    pub cpu: Option<String>,
    /// Memory (`4GB`, `512MiB`).
    #[arg(long, value_name = "SIZE")]
    pub mem: Option<String>,
    /// GPUs.
    #[arg(long, value_name = "N")]
    pub gpu: Option<String>,
    /// GPU memory (`16GB`).
    #[arg(long, value_name = "SIZE")]
    pub gpu_mem: Option<String>,
    /// A TCP port.
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// The job's process group: `pas kill` ends its members and their descendants (a pid
    /// that leads no group is taken as the job's process).
    #[arg(long, value_name = "PGID")]
    pub pgid: Option<i32>,
    /// The job's process: `pas kill` ends it and its descendants.
    #[arg(long, value_name = "PID")]
    pub pid: Option<i32>,
}

// A cell and a job.
#[derive(Debug, Args)]
pub struct JobArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// The job's id.
    pub job: String,
}

// Arguments of `pas kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// The job's id.
    pub job: String,
    /// Seconds between SIGTERM and SIGKILL (after SIGKILL pas waits up to 5 more seconds
    /// for the processes to be gone before it fails, keeping the reservation).
    #[arg(long, default_value_t = 5.0, value_name = "SECS", value_parser = crate::cli::words::seconds)]
    pub grace: f64,
}

// Arguments of `pas reservations`.
#[derive(Debug, Args)]
pub struct ReservationsArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// Only reservations with this status.
    #[arg(long, value_enum)]
    pub status: Option<ReservationStatus>,
}

// Arguments of `pas quota`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct QuotaArgs {
    /// Change the quota.
    #[command(subcommand)]
    pub command: Option<QuotaCommand>,
    /// Cell id, unique id prefix, or mission name.
    pub cell: Option<String>,
}

// Quota subcommands.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum QuotaCommand {
    /// Set quota values in config/isolation.json resource_limits.
    ///
    /// Example: pas quota set 3f2a --cpu "8 cores" --mem 32GB
    Set(QuotaSetArgs),
}

// Arguments of `pas quota set`.
#[derive(Debug, Args)]
pub struct QuotaSetArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// CPU cores.
    #[arg(long, value_name = "N")]
    pub cpu: Option<String>,
    /// Memory.
    #[arg(long, value_name = "SIZE")]
    pub mem: Option<String>,
    /// GPUs.
    #[arg(long, value_name = "N")]
    pub gpu: Option<String>,
    /// GPU memory.
    #[arg(long, value_name = "SIZE")]
    pub gpu_mem: Option<String>,
}

fn state_tone(s: State) -> Tone {
    match s {
        State::Ok => Tone::Good,
        State::Warning => Tone::Warn,
        State::Breach => Tone::Bad,
    }
}

fn cells(ctx: &Ctx, cell: Option<&str>) -> Result<Vec<String>> {
    match cell {
        Some(q) => Ok(vec![cell::resolve(&ctx.store, q)?]),
        None => ctx.store.cell_ids(),
    }
}

/// Runs `pas budget`.
pub fn run(ctx: &Ctx, args: BudgetArgs) -> Result<()> {
    let BudgetArgs { command, cell } = args;
    match command {
        Some(BudgetCommand::Track(a)) => track(ctx, a),
        Some(BudgetCommand::History(HistoryArgs { cell, agent })) => {
            history(ctx, &cell, agent.as_deref())
        }
        Some(BudgetCommand::Check(CheckArgs { cell })) => check(ctx, cell.as_deref()),
        Some(BudgetCommand::Requests(CheckArgs { cell })) => requests(ctx, cell.as_deref()),
        Some(BudgetCommand::Approve(RequestArgs { id })) => settle(ctx, &id, true),
        Some(BudgetCommand::Deny(RequestArgs { id })) => settle(ctx, &id, false),
        None => show(ctx, cell.as_deref()),
    }
}

fn requests(ctx: &Ctx, cell: Option<&str>) -> Result<()> {
    let list = budget::requests(&ctx.store, &cells(ctx, cell)?)?;
    if ctx.out.is_json() {
        ctx.out
            .json(&serde_json::to_value(&list).unwrap_or(Value::Null));
        return Ok(());
    }
    let rows = list
        .iter()
        .map(|r| {
            vec![
                Styled::from(r.id.as_str()),
                Styled::from(r.cell.get(..8).unwrap_or(&r.cell)),
                Styled::from(r.agent.as_str()),
                Styled::from(r.ratio.map_or("-".into(), |x| format!("{:.0}%", x * 100.0))),
                Styled::from(r.at.clone().unwrap_or_else(|| "-".into())),
            ]
        })
        .collect();
    ctx.out
        .table(&["ID", "CELL", "AGENT", "CONTEXT", "SINCE"], rows);
    Ok(())
}

fn settle(ctx: &Ctx, id: &str, approve: bool) -> Result<()> {
    if ctx.acting.is_some() {
        return Err(Error::new(
            Kind::Denied,
            format!("only an operator may settle budget request {id}"),
        )
        .hint("run it without --as and with PAS_AGENT unset"));
    }
    let (req, compaction) = budget::settle(&ctx.store, id, approve, clock::now())?;
    if ctx.out.is_json() {
        ctx.out.json(&json!({
            "id": id,
            "cell": req.cell,
            "agent": req.agent,
            "approved": approve,
            "compaction": compaction,
        }));
    } else if let Some(c) = compaction {
        ctx.out.info(&format!(
            "agent {}: state saved (checkpoint {}), told to summarize, resumed",
            req.agent, c.generation
        ));
    } else {
        ctx.out.info(&format!("agent {} stays paused", req.agent));
    }
    Ok(())
}

fn show(ctx: &Ctx, cell: Option<&str>) -> Result<()> {
    let now = clock::now();
    let mut all = Vec::new();
    for id in cells(ctx, cell)? {
        all.push(budget::cell_budget(&ctx.store, &id, now)?);
    }
    if ctx.out.is_json() {
        ctx.out.json(&json!({ "cells": all }));
        return Ok(());
    }
    for (i, b) in all.iter().enumerate() {
        if i > 0 {
            ctx.out.info("");
        }
        for p in &b.problems {
            ctx.out.note(&format!("pas: cannot read: {p}"));
        }
        let time = match (b.time_used, b.timeout) {
            (Some(u), Some(t)) => format!(
                "time {} of {} ({:.0}%)",
                clock::human_duration(u),
                clock::human_duration(t),
                100.0 * u / t
            ),
            (Some(u), None) => format!("time {} (no timeout)", clock::human_duration(u)),
            _ => "time -".into(),
        };
        ctx.out.info(&format!(
            "cell {}  {}  budget {}; {time}",
            b.cell,
            b.status,
            ctx.out
                .paint(&Styled::new(b.state.as_str(), state_tone(b.state)))
        ));
        let rows = b
            .agents
            .iter()
            .map(|a| {
                let ctx_text = match (a.ctx_used, a.ctx_limit, a.ctx_ratio) {
                    (Some(u), Some(l), Some(r)) => format!("{u}/{l} ({:.0}%)", r * 100.0),
                    _ => "-".into(),
                };
                vec![
                    Styled::from(format!("  {}", a.agent)),
                    Styled::from(ctx_text),
                    a.ctx_state.map_or(Styled::from("-"), |s| {
                        Styled::new(s.as_str(), state_tone(s))
                    }),
                    Styled::from(a.cost_usd.map_or("-".into(), |c| format!("${c:.2}"))),
                    Styled::from(a.tokens_used.map_or("-".into(), |t| format!("{t}"))),
                    Styled::new(a.spend_state.as_str(), state_tone(a.spend_state)),
                    Styled::from(a.compactions_last_hour.to_string()),
                    Styled::new(
                        a.flag.map_or("-", |f| f.as_str()),
                        if a.flag.is_some() {
                            Tone::Bad
                        } else {
                            Tone::Plain
                        },
                    ),
                ]
            })
            .collect();
        ctx.out.table(
            &[
                "  AGENT",
                "CONTEXT",
                "STATE",
                "COST",
                "TOKENS",
                "SPEND",
                "COMPACTIONS/H",
                "FLAG",
            ],
            rows,
        );
        let quota = b
            .quota
            .iter()
            .map(|q| {
                vec![
                    Styled::from(format!("  {}", q.resource)),
                    Styled::from(q.shown[0].as_str()),
                    Styled::from(q.shown[1].as_str()),
                    Styled::from(q.shown[2].as_str()),
                ]
            })
            .collect();
        ctx.out
            .table(&["  RESOURCE", "CAPACITY", "RESERVED", "FREE"], quota);
    }
    Ok(())
}

fn track(ctx: &Ctx, args: TrackArgs) -> Result<()> {
    let TrackArgs {
        cell,
        agent,
        used,
        limit,
        cost_usd,
        tokens,
    } = args;
    check_id(IdKind::Agent, &agent)?;
    if used.is_none() && limit.is_none() && cost_usd.is_none() && tokens.is_none() {
        return Err(
            Error::usage("nothing to track").hint("pass --used, --limit, --cost-usd or --tokens")
        );
    }
    let cell_id = cell::resolve(&ctx.store, &cell)?;
    let (compaction, spend) = budget::track(
        &ctx.store,
        &cell_id,
        &agent,
        used,
        limit,
        cost_usd,
        tokens,
        clock::now(),
    )?;
    if ctx.out.is_json() {
        ctx.out
            .json(&json!({ "agent": agent, "compaction": compaction, "spend_state": spend }));
    } else if let Some(c) = compaction {
        ctx.out.info(&format!(
            "context budget breached: state saved as checkpoint {}, context cleared, summary {}",
            c.generation, c.summary
        ));
    } else {
        ctx.out.info(&format!("recorded for {agent}"));
    }
    Ok(())
}

fn history(ctx: &Ctx, cell: &str, agent: Option<&str>) -> Result<()> {
    if let Some(a) = agent {
        check_id(IdKind::Agent, a)?;
    }
    let cell_id = cell::resolve(&ctx.store, cell)?;
    let list = budget::history(&ctx.store, &cell_id, agent)?;
    if ctx.out.is_json() {
        ctx.out.json(&Value::from(
            list.into_iter().map(|e| e.shown).collect::<Vec<_>>(),
        ));
        return Ok(());
    }
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let rows = list
        .iter()
        .map(|e| {
            let s = &e.summary;
            vec![
                Styled::from(or_dash(s.time.clone())),
                Styled::from(e.agent.as_str()),
                Styled::from(or_dash(s.ctx_used_before.map(|n| n.to_string()))),
                Styled::from(or_dash(s.checkpoint_generation.map(|n| n.to_string()))),
                Styled::from(or_dash(s.reason.clone())),
            ]
        })
        .collect();
    ctx.out.table_keyed(
        &["TIME", "AGENT", "CONTEXT BEFORE", "CHECKPOINT", "REASON"],
        rows,
        None,
    );
    Ok(())
}

fn check(ctx: &Ctx, cell: Option<&str>) -> Result<()> {
    let now = clock::now();
    let mut worst = State::Ok;
    let mut lines = Vec::new();
    let mut unreadable = None;
    match cells(ctx, cell) {
        Ok(ids) => {
            for id in ids {
                match budget::cell_budget(&ctx.store, &id, now) {
                    Ok(b) => {
                        // An agent whose spend cannot be read leaves the verdict unknown.
                        if let Some(p) = b.problems.first() {
                            unreadable = Some(p.clone());
                        }
                        worst = worst.max(b.state);
                        if b.state != State::Ok {
                            lines.push(format!(
                                "{} {}",
                                b.state.as_str(),
                                id.get(..8).unwrap_or(&id)
                            ));
                        }
                    }
                    Err(e) => unreadable = Some(e.message),
                }
            }
        }
        Err(e) => unreadable = Some(e.message),
    }
    let code = match (&unreadable, worst) {
        (Some(_), _) => 3,
        (None, State::Ok) => 0,
        (None, State::Warning) => 1,
        (None, State::Breach) => 2,
    };
    let word = ["OK", "WARNING", "BREACH", "UNKNOWN"][code as usize];
    let line = match &unreadable {
        Some(m) => format!("BUDGET {word} - cannot read: {m}"),
        None if lines.is_empty() => format!("BUDGET {word} - every budget within limits"),
        None => format!("BUDGET {word} - {}", lines.join(", ")),
    };
    if ctx.out.is_json() {
        ctx.out
            .json(&json!({ "code": code, "state": word, "line": line }));
    } else {
        ctx.out.line(&line);
    }
    if code == 0 {
        Ok(())
    } else {
        Err(Error::new(Kind::Verdict(code), ""))
    }
}

/// Runs `pas reserve`.
pub fn reserve(ctx: &Ctx, args: ReserveArgs) -> Result<()> {
    let ReserveArgs {
        cell,
        job,
        agent,
        cpu,
        mem,
        gpu,
        gpu_mem,
        port,
        pgid,
        pid,
    } = args;
    check_id(IdKind::Job, &job)?;
    for (flag, v) in [("--pgid", pgid), ("--pid", pid)] {
        if v.is_some_and(|v| v < 1) {
            return Err(Error::usage(format!(
                "{flag} must be a process id of at least 1"
            )));
        }
    }
    check_id(IdKind::Agent, &agent)?;
    let amount = |v: &Option<String>, unit: Unit, flag: &str| -> Result<f64> {
        v.as_deref()
            .map_or(Ok(0.0), |t| units::parse_text(t, unit, flag))
    };
    let amounts = [
        amount(&cpu, Unit::Cores, "--cpu")?,
        amount(&mem, Unit::Bytes, "--mem")?,
        amount(&gpu, Unit::Count, "--gpu")?,
        amount(&gpu_mem, Unit::Bytes, "--gpu-mem")?,
    ];
    let cell_id = cell::resolve(&ctx.store, &cell)?;
    let entry = reservation::reserve(
        &ctx.store,
        &cell_id,
        &Request {
            job: job.clone(),
            agent,
            amounts,
            port,
            pgid,
            pid,
        },
        clock::now(),
    )?;
    if ctx.out.is_json() {
        ctx.out.json(&entry);
    } else {
        ctx.out.line(&job);
    }
    Ok(())
}

/// Runs `pas release`.
pub fn release(ctx: &Ctx, args: JobArgs) -> Result<()> {
    let JobArgs { cell, job } = args;
    let cell_id = cell::resolve(&ctx.store, &cell)?;
    let was_active = reservation::release(&ctx.store, &cell_id, &job, clock::now())?;
    if ctx.out.is_json() {
        ctx.out.json(&json!({ "job": job, "released": was_active }));
    } else if was_active {
        ctx.out.info(&format!("released {job}"));
    } else {
        ctx.out.info(&format!("{job} was already released"));
    }
    Ok(())
}

/// Runs `pas kill`.
pub fn kill(ctx: &Ctx, args: KillArgs) -> Result<()> {
    let KillArgs { cell, job, grace } = args;
    if !(0.0..=86_400.0).contains(&grace) {
        return Err(Error::usage(format!(
            "--grace {grace} is outside 0..86400 seconds"
        )));
    }
    let cell_id = cell::resolve(&ctx.store, &cell)?;
    let (outcome, ended) = reservation::kill(
        &ctx.store,
        &cell_id,
        &job,
        std::time::Duration::from_secs_f64(grace),
        clock::now(),
    )?;
    if ctx.out.is_json() {
        ctx.out
            .json(&json!({ "job": job, "outcome": outcome, "released": ended }));
    } else {
        let how = match outcome {
            crate::usage::Ended::NotRunning => "no process was running",
            crate::usage::Ended::Terminated => "its processes ended after SIGTERM",
            crate::usage::Ended::Killed => "its processes were killed (SIGKILL after the grace)",
        };
        ctx.out.info(&format!(
            "job {job}: {how}; reservation {}",
            if ended {
                "ended (killed)"
            } else {
                "was not active"
            }
        ));
    }
    Ok(())
}

/// Runs `pas reservations`.
pub fn list(ctx: &Ctx, args: ReservationsArgs) -> Result<()> {
    let ReservationsArgs { cell, status } = args;
    let cell_id = cell::resolve(&ctx.store, &cell)?;
    let typed = reservation::list(&ctx.store, &cell_id, status)?;
    if ctx.out.is_json() {
        ctx.out.json(&Value::from(
            typed.iter().map(Field::encode).collect::<Vec<_>>(),
        ));
        return Ok(());
    }
    let num = |n: f64, unit: Unit| {
        if n > 0.0 {
            units::show(n, unit)
        } else {
            "-".into()
        }
    };
    let rows = typed
        .iter()
        .map(|r| {
            let [cpu, memory, gpu, gpu_memory] = r.amounts();
            vec![
                Styled::from(r.job.as_str()),
                Styled::from(r.agent.as_str()),
                Styled::from(num(cpu, Unit::Cores)),
                Styled::from(num(memory, Unit::Bytes)),
                Styled::from(num(gpu, Unit::Count)),
                Styled::from(num(gpu_memory, Unit::Bytes)),
                Styled::from(r.port.map_or("-".into(), |p| p.to_string())),
                Styled::new(
                    r.status.as_str(),
                    if r.status == ReservationStatus::Active {
                        Tone::Good
                    } else {
                        Tone::Dim
                    },
                ),
            ]
        })
        .collect();
    ctx.out.table(
        &[
            "JOB",
            "AGENT",
            "CPU",
            "MEMORY",
            "GPU",
            "GPU MEMORY",
            "PORT",
            "STATUS",
        ],
        rows,
    );
    Ok(())
}

/// Runs `pas quota`.
pub fn quota(ctx: &Ctx, args: QuotaArgs) -> Result<()> {
    let QuotaArgs { command, cell } = args;
    if let Some(QuotaCommand::Set(QuotaSetArgs {
        cell,
        cpu,
        mem,
        gpu,
        gpu_mem,
    })) = command
    {
        let mut values = Vec::new();
        // The resources in `RESOURCES` order: cpu, memory, gpu, gpu_memory.
        for ((key, _, _), v) in reservation::RESOURCES.iter().zip([cpu, mem, gpu, gpu_mem]) {
            if let Some(v) = v {
                values.push((*key, v));
            }
        }
        if values.is_empty() {
            return Err(
                Error::usage("nothing to set").hint("pass --cpu, --mem, --gpu or --gpu-mem")
            );
        }
        let cell_id = cell::resolve(&ctx.store, &cell)?;
        reservation::set_quota(&ctx.store, &cell_id, &values, clock::now())?;
        return show_quota(ctx, &cell_id);
    }
    let Some(cell) = cell else {
        return Err(Error::usage("which cell? pass CELL"));
    };
    let cell_id = cell::resolve(&ctx.store, &cell)?;
    show_quota(ctx, &cell_id)
}

fn show_quota(ctx: &Ctx, cell_id: &str) -> Result<()> {
    let (lines, machine) = reservation::quota_with_machine(&ctx.store, cell_id)?;
    if ctx.out.is_json() {
        ctx.out
            .json(&serde_json::to_value(&lines).unwrap_or(Value::Null));
        return Ok(());
    }
    let rows = lines
        .iter()
        .map(|q| {
            vec![
                Styled::from(q.resource),
                Styled::from(q.shown[0].as_str()),
                Styled::from(q.shown[1].as_str()),
                Styled::from(q.shown[2].as_str()),
                Styled::from(q.machine_shown[0].as_str()),
                Styled::from(q.machine_shown[1].as_str()),
                Styled::from(q.machine_shown[2].as_str()),
            ]
        })
        .collect();
    ctx.out.table(
        &[
            "RESOURCE",
            "CAPACITY",
            "RESERVED",
            "FREE",
            "MACHINE",
            "ALL CELLS",
            "MACHINE FREE",
        ],
        rows,
    );
    let measured: Vec<&str> = reservation::RESOURCES
        .iter()
        .zip(machine.measured)
        .filter(|(_, m)| *m)
        .map(|((k, _, _), _)| *k)
        .collect();
    if !measured.is_empty() {
        ctx.out.note(&format!(
            "machine capacity of {} measured on this host; set it in pas.toml [capacity]",
            measured.join(", ")
        ));
    }
    if let Some((lo, hi)) = machine.ports {
        ctx.out.note(&format!("ports {lo}-{hi} may be reserved"));
    }
    Ok(())
}
