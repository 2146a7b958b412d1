//! `pas logs CELL [AGENT]`

use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};

use crate::cli::Ctx;
use crate::clock;
use crate::error::{Error, Result};
use crate::ops::cell;
use crate::ops::logs::{self, LineKind, LogLine, Query};
use crate::output::{Styled, Tone};
use crate::store::{Collection, Store};

/// How many lines `--follow` starts with when `-n` does not say.
const FOLLOW_TAIL: usize = 10;

// Arguments of `pas logs`.
//
// Example: pas logs 3f2a agent_001 -f -n 20
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Cell id, unique id prefix, or mission name.
    pub cell: String,
    /// One agent (default: every agent of the cell, merged by time).
    pub agent: Option<String>,
    /// Keep printing lines as they are written, like `tail -f` (after the last 10 lines,
    /// unless -n says how many).
    #[arg(long, short)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long = "lines", short = 'n', value_name = "N")]
    pub lines: Option<usize>,
    /// Only lines since a duration ago (`90s`, `1h30m`, `2d`) or an RFC 3339 time.
    #[arg(long, value_name = "DURATION|TIME")]
    pub since: Option<String>,
    /// Only run N of the agent, as its start marker numbers it; 0 is the latest run, -1
    /// the one before.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub run: Option<i64>,
}

/// Runs `pas logs`.
pub fn run(ctx: &Ctx, args: LogsArgs) -> Result<()> {
    let LogsArgs {
        cell,
        agent,
        follow,
        lines,
        since,
        run,
    } = args;
    if let Some(a) = &agent {
        crate::store::check_id(crate::store::IdKind::Agent, a)?;
    }
    if run.is_some() && agent.is_none() {
        return Err(
            Error::usage("--run needs an AGENT: runs are numbered per agent")
                .hint("for example `pas logs CELL AGENT --run 0` for the latest run"),
        );
    }
    let since = since
        .as_deref()
        .map(|s| super::events::parse_since(s, clock::now()))
        .transpose()?;
    let cell_id = cell::resolve(&ctx.store, &cell)?;
    let agents = match &agent {
        Some(a) => {
            let file = ctx.store.read(&cell_id, crate::store::FileKey::Agent(a))?;
            if file.is_none() && ctx.store.log_segments(&cell_id, a)?.is_empty() {
                return Err(Error::not_found(format!(
                    "cell {cell_id} has no agent {a} and no log of one"
                ))
                .hint(format!("`pas agent list {cell_id}` shows its agents")));
            }
            vec![a.clone()]
        }
        None => ctx.store.list(&cell_id, Collection::Agents)?,
    };
    let run = match (run, &agent) {
        (Some(wanted), Some(a)) if wanted < 1 => {
            let runs = match ctx.store.read(&cell_id, crate::store::FileKey::Agent(a))? {
                Some(doc) => crate::model::Agent::from_doc(&doc)?.runs.unwrap_or(0),
                None => 0,
            };
            Some(logs::run_number(wanted, runs)?)
        }
        (Some(wanted), _) => Some(logs::run_number(wanted, 0)?),
        (None, _) => None,
    };
    let query = Query {
        since,
        run,
        tail: lines.or(follow.then_some(FOLLOW_TAIL)),
    };
    let here = crate::host::name();
    let remote = logs::elsewhere(&ctx.store, &cell_id, &agents, &here)?;
    let mut shown = 0usize;
    let mut cursors = logs::read(&ctx.store, &cell_id, &agents, &query, &mut |line| {
        shown += 1;
        print_line(ctx, &cell_id, line)
    })?;
    let said = |e: &logs::Elsewhere| {
        format!(
            "the log of agent {} is on host {}, not on this one ({here})",
            e.agent, e.host
        )
    };
    if ctx.out.is_json() {
        for e in &remote {
            let v = json!({"cell": cell_id, "agent": e.agent, "host": e.host, "log": e.log});
            ctx.out.line(&v.to_string());
        }
    }
    match logs::remote(agent.is_some(), shown, &remote) {
        logs::Remote::Missing(e) => {
            return Err(Error::not_found(said(e)).hint(format!(
                "run `pas logs {cell_id} {}` on {} (its PAS_HOST or host name): it is {} there",
                e.agent, e.host, e.log
            )));
        }
        logs::Remote::Notes(elsewhere) => {
            for e in elsewhere {
                ctx.out.note(&format!("pas: {}, at {}", said(e), e.log));
            }
        }
    }
    if !follow {
        if shown == 0 && remote.is_empty() {
            ctx.out.note("(no log lines)");
        }
        return Ok(());
    }
    while !ctx.out.is_closed() {
        std::thread::sleep(Duration::from_millis(200));
        if agent.is_none() {
            // Agents added while following are followed from their first line.
            for a in ctx.store.list(&cell_id, Collection::Agents)? {
                if !cursors.iter().any(|c| c.agent() == a) {
                    cursors.push(logs::Cursor::new(&a));
                }
            }
        }
        for line in logs::follow(&ctx.store, &cell_id, &mut cursors, &query)? {
            print_line(ctx, &cell_id, &line);
        }
    }
    Ok(())
}

/// One line: `TIME AGENT: TEXT` for people (markers dimmed), the text alone with `-q`, a
/// JSON object per line with `--json`.
fn print_line(ctx: &Ctx, cell: &str, line: &LogLine) {
    if ctx.out.is_json() {
        let mut v = serde_json::to_value(line).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.insert("cell".into(), json!(cell));
        }
        ctx.out.line(&v.to_string());
        return;
    }
    if ctx.out.is_quiet() {
        if line.kind == LineKind::Output {
            ctx.out.line(&line.text);
        }
        return;
    }
    let time = line.time.map_or_else(
        || format!("{:<24}", "-"),
        |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    );
    let text = match line.kind {
        LineKind::Output => line.text.clone(),
        LineKind::Started | LineKind::Exited | LineKind::Note | LineKind::Continued => ctx
            .out
            .paint(&Styled::new(format!("-- {}", line.text), Tone::Dim)),
    };
    ctx.out.line(&format!("{time} {}: {text}", line.agent));
}
