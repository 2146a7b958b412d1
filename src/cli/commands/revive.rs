//! `pas revive ...` and `pas watch`

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::cli::Ctx;
use crate::clock;
use crate::error::{Error, Result};
use crate::ops::cell;
use crate::ops::revive::{self, Action, Options};
use crate::ops::watch::{self, Report, WatchOptions};
use crate::output::{Styled, Tone};
use crate::store::Store;

// Arguments of `pas revive`.
//
// Example: pas revive --dry-run
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReviveArgs {
    /// Requests of `auto_revive: ask`.
    #[command(subcommand)]
    pub command: Option<ReviveCommand>,
    /// One cell (default: every cell).
    pub cell: Option<String>,
    /// Only this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// Say what would be done, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

// Revival requests.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum ReviveCommand {
    /// List pending revival requests (auto_revive: ask).
    ///
    /// Example: pas revive requests
    Requests(RequestsArgs),
    /// Approve a request: the agent is revived now.
    ///
    /// Example: pas revive approve r-1a2b3c4d
    Approve(IdArgs),
    /// Deny a request: the agent is failed for good.
    ///
    /// Example: pas revive deny r-1a2b3c4d
    Deny(IdArgs),
}

// Arguments of `pas revive requests`.
#[derive(Debug, Args)]
pub struct RequestsArgs {
    /// One cell (default: every cell).
    pub cell: Option<String>,
}

// A request id.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The request's id (`r-...`).
    pub id: String,
}

// Arguments of `pas watch`.
//
// Example: pas --root /var/missions watch --interval 30
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Seconds between full reconciles of the root (events and deadlines wake it sooner).
    #[arg(long, default_value_t = 30.0, value_name = "SECS", value_parser = crate::cli::words::seconds)]
    pub interval: f64,
    /// One pass over every cell, then exit.
    #[arg(long)]
    pub once: bool,
    /// On a shared store (etcd): seconds this node's key `nodes/<host>` lives after the
    /// watch dies (its lease's TTL, renewed every third of it while the watch runs). Other
    /// nodes take over this host's dead agents `host_takeover_after` seconds after it went.
    #[arg(long, default_value_t = 10.0, value_name = "SECS", value_parser = crate::cli::words::seconds)]
    pub node_ttl: f64,
}

fn action_tone(a: &Action) -> Tone {
    match a.action.as_str() {
        "revived" | "revival_succeeded" | "reset" | "taken_over" => Tone::Good,
        "failed" | "revival_timed_out" | "hung" | "stopped_hung" => Tone::Bad,
        _ => Tone::Warn,
    }
}

fn print_action(ctx: &Ctx, a: &Action) {
    if ctx.out.is_json() {
        ctx.out.line(&serde_json::to_string(a).unwrap_or_default());
    } else {
        let tag = ctx
            .out
            .paint(&Styled::new(a.action.as_str(), action_tone(a)));
        let dry = if a.dry_run { " (dry run)" } else { "" };
        ctx.out.line(&format!(
            "{} {} {tag}: {}{dry}",
            a.time,
            a.cell.get(..8).unwrap_or(&a.cell),
            a.message
        ));
    }
}

/// Runs `pas revive`.
pub fn run(ctx: &Ctx, args: ReviveArgs) -> Result<()> {
    let ReviveArgs {
        command,
        cell,
        agent,
        dry_run,
    } = args;
    match command {
        Some(ReviveCommand::Requests(RequestsArgs { cell })) => {
            return requests(ctx, cell.as_deref())
        }
        Some(ReviveCommand::Approve(IdArgs { id })) => return decide(ctx, &id, true),
        Some(ReviveCommand::Deny(IdArgs { id })) => return decide(ctx, &id, false),
        None => {}
    }
    if let Some(a) = &agent {
        crate::store::check_id(crate::store::IdKind::Agent, a)?;
    }
    let cells = match &cell {
        Some(q) => vec![cell::resolve(&ctx.store, q)?],
        None => ctx.store.cell_ids()?,
    };
    let opts = Options {
        dry_run,
        agent,
        launch: ctx.launch,
        nodes: None,
    };
    // Each cell, and each agent in it, on its own: what could not be handled is reported
    // and the rest is still done.
    let mut failures: Vec<Error> = Vec::new();
    let mut all = Vec::new();
    for id in cells {
        match revive::pass_cell_each(&ctx.store, &id, &opts, clock::now()) {
            Ok(pass) => {
                all.extend(pass.actions);
                failures.extend(pass.errors.into_iter().map(|e| in_cell(&id, e)));
            }
            Err(e) => failures.push(in_cell(&id, e)),
        }
    }
    if ctx.out.is_json() {
        let errors: Vec<&str> = failures.iter().map(|e| e.message.as_str()).collect();
        ctx.out.json(&json!({ "actions": all, "errors": errors }));
    } else {
        for a in &all {
            print_action(ctx, a);
        }
        if all.is_empty() && failures.is_empty() {
            ctx.out.info("nothing to revive");
        }
    }
    crate::process::reap_children();
    let Some(first) = failures.first() else {
        return Ok(());
    };
    if !ctx.out.is_json() {
        for e in failures.iter().skip(1) {
            ctx.out.note(&format!("pas: {}", e.message));
        }
    }
    // The first problem decides the exit code (busy 6, denied 9, bad data 5, ...).
    let message = if failures.len() == 1 {
        first.message.clone()
    } else {
        format!(
            "{} (and {} more problem(s) above)",
            first.message,
            failures.len() - 1
        )
    };
    Err(Error {
        message,
        ..first.clone()
    })
}

/// Names the cell in an error of its pass.
fn in_cell(cell: &str, e: Error) -> Error {
    let message = format!("cell {cell}: {}", e.message);
    Error { message, ..e }
}

fn requests(ctx: &Ctx, cell: Option<&str>) -> Result<()> {
    let cells = match cell {
        Some(q) => vec![cell::resolve(&ctx.store, q)?],
        None => ctx.store.cell_ids()?,
    };
    let (list, unreadable) = revive::requests(&ctx.store, &cells)?;
    for e in &unreadable {
        ctx.out.note(&format!("pas: skipped: {}", e.message));
    }
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
                Styled::from(r.at.clone().unwrap_or_default()),
                Styled::from(r.cause.clone().unwrap_or_default()),
            ]
        })
        .collect();
    ctx.out
        .table(&["ID", "CELL", "AGENT", "FILED", "DEATH"], rows);
    Ok(())
}

fn decide(ctx: &Ctx, id: &str, approve: bool) -> Result<()> {
    let pass = revive::decide(&ctx.store, id, approve, ctx.launch, clock::now())?;
    if ctx.out.is_json() {
        ctx.out
            .json(&json!({ "id": id, "approved": approve, "actions": pass.actions }));
    } else {
        ctx.out.info(&format!(
            "request {id} {}",
            if approve { "approved" } else { "denied" }
        ));
        for a in &pass.actions {
            print_action(ctx, a);
        }
    }
    Ok(())
}

/// Runs `pas watch`.
pub fn run_watch(ctx: &Ctx, args: WatchArgs) -> Result<()> {
    let WatchArgs {
        interval,
        once,
        node_ttl,
    } = args;
    if !(interval > 0.0 && interval <= 86_400.0) {
        return Err(Error::usage(format!(
            "--interval {interval} is outside (0, 86400] seconds"
        )));
    }
    if !(2.0..=86_400.0).contains(&node_ttl) {
        return Err(Error::usage(format!(
            "--node-ttl {node_ttl} is outside [2, 86400] seconds"
        ))
        .hint("etcd leases are whole seconds, at least 2; the default is 10"));
    }
    let opts = WatchOptions {
        interval,
        once,
        launch: ctx.launch,
        node_ttl: std::time::Duration::from_secs_f64(node_ttl),
    };
    watch::run(&ctx.store, &opts, &mut |r| match r {
        Report::Note(text) => {
            if ctx.out.is_json() {
                ctx.out
                    .line(&json!({ "time": clock::stamp(clock::now()), "note": text }).to_string());
            } else {
                ctx.out
                    .line(&format!("{} {text}", clock::stamp(clock::now())));
            }
        }
        Report::Action(a) => print_action(ctx, a),
        Report::Problem { cell, message } => {
            if ctx.out.is_json() {
                ctx.out.line(&json!({ "time": clock::stamp(clock::now()), "cell": cell, "problem": message }).to_string());
            } else {
                ctx.out.line(&format!(
                    "{} {} problem: {message} (reported once; still watching)",
                    clock::stamp(clock::now()),
                    cell.get(..8).unwrap_or(cell)
                ));
            }
        }
    })
}
