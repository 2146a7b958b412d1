//! `pas status`, `pas check`, `pas metrics`

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::Args;
use serde::ser::{SerializeSeq, SerializeStruct};
use serde::Serialize;
use serde_json::Value;

use super::agent::health_tone;
use crate::cli::Ctx;
use crate::clock;
use crate::error::{Error, Kind, Result};
use crate::ops::budget::State;
use crate::ops::cell;
use crate::ops::health::Health;
use crate::ops::status::{self, AgentView, CellView, RunState};
use crate::output::{Styled, Tone};
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
    /// Redraw the table in place until Ctrl-C (plain repeated tables when not a terminal).
    #[arg(long)]
    pub watch: bool,
    /// Seconds between redraws with --watch (default 2).
    #[arg(long, requires = "watch", value_name = "SECS", value_parser = crate::cli::words::seconds)]
    pub interval: Option<f64>,
    /// Only agents in this health; repeat or separate with commas (`--health down,dead`).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "HEALTH")]
    pub health: Vec<Health>,
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

/// When the next restart is due, humanly: `in 3s`, `due`, or `-`.
fn next_restart(a: &AgentView) -> String {
    match a.next_restart_in_seconds {
        Some(s) if s > 0.0 => format!("in {}", clock::human_duration(s.ceil())),
        Some(_) => "due".to_string(),
        None => "-".to_string(),
    }
}

/// The tone of a run state.
fn state_tone(state: Option<RunState>) -> Tone {
    match state {
        Some(RunState::Running) => Tone::Good,
        Some(RunState::Backoff | RunState::Approval | RunState::Paused) => Tone::Warn,
        Some(RunState::Crashloop | RunState::Failed | RunState::Exited) => Tone::Bad,
        Some(RunState::Stopped) | None => Tone::Dim,
    }
}

/// Keeps only the agents in one of `healths` (all when empty), and the cells that have one.
fn keep_health(views: Vec<CellView>, healths: &[Health]) -> Vec<CellView> {
    if healths.is_empty() {
        return views;
    }
    views
        .into_iter()
        .filter_map(|mut v| {
            v.agents.retain(|a| healths.contains(&a.health));
            v.health_counts
                .retain(|h, _| healths.iter().any(|w| w.as_str() == h));
            (!v.agents.is_empty()).then_some(v)
        })
        .collect()
}

fn health_summary(v: &CellView) -> String {
    if v.agents.is_empty() {
        return "no agents".into();
    }
    let parts: Vec<String> = crate::ops::health::Health::ALL
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

/// How the limits of the cell's running agents are enforced, by mechanism (as their
/// files' `limits` say, `agent show` in full): `limits cgroup_v1: a1, a2; cgroup_v1 in a
/// crun container: a3`. `None` when no running agent has limits on file.
fn limits_summary(v: &CellView) -> Option<String> {
    let mut by: Vec<(String, Vec<&str>)> = Vec::new();
    for a in v
        .agents
        .iter()
        .filter(|a| a.state == Some(RunState::Running))
    {
        let Some(mechanism) = a.limits.as_ref().and_then(|l| l["mechanism"].as_str()) else {
            continue;
        };
        let runtime = a.limits.as_ref().and_then(|l| l["container"].as_str());
        let how = match runtime.and_then(|c| c.split(' ').next()) {
            Some(r) => format!("{mechanism} in a {r} container"),
            None => mechanism.to_string(),
        };
        match by.iter_mut().find(|(h, _)| *h == how) {
            Some((_, agents)) => agents.push(&a.id),
            None => by.push((how, vec![&a.id])),
        }
    }
    (!by.is_empty()).then(|| {
        let parts: Vec<String> = by
            .iter()
            .map(|(how, agents)| format!("{how}: {}", agents.join(", ")))
            .collect();
        format!("limits {}", parts.join("; "))
    })
}

/// A column of the agents' table: its header, how long it stays when the terminal is too
/// narrow for all (a higher `keep` stays longer), and its cell in each row.
struct Column {
    header: &'static str,
    keep: u8,
    cells: Vec<Styled>,
}

/// The agents' table, its columns left to right.
fn agent_columns(agents: &[AgentView]) -> Vec<Column> {
    let column = |header, keep, cell: &dyn Fn(&AgentView) -> Styled| Column {
        header,
        keep,
        cells: agents.iter().map(cell).collect(),
    };
    let dash = |v: Option<String>| Styled::from(v.unwrap_or_else(|| "-".into()));
    vec![
        column("  AGENT", 255, &|a| Styled::from(format!("  {}", a.id))),
        column("HEALTH", 254, &|a| {
            Styled::new(a.health.as_str(), health_tone(a.health))
        }),
        column("STATE", 253, &|a| {
            Styled::new(a.state.map_or("-", RunState::as_str), state_tone(a.state))
        }),
        column("PID", 170, &|a| dash(a.pid.map(|p| p.to_string()))),
        column("UPTIME", 150, &|a| {
            dash(a.uptime_seconds.map(clock::human_duration))
        }),
        column("RESTARTS", 200, &|a| {
            Styled::from(a.restart_count.to_string())
        }),
        column("NEXT", 210, &|a| Styled::from(next_restart(a))),
        column("LAST BEAT", 190, &|a| Styled::from(status::beat_age(a))),
        column("TASK", 120, &|a| dash(a.current_task.clone())),
        column("CONTEXT", 100, &|a| {
            Styled::from(match a.ctx_state {
                Some(s) if s != State::Ok => format!("{} {s}", percent(a.ctx_used, a.ctx_limit)),
                _ => percent(a.ctx_used, a.ctx_limit),
            })
        }),
        column("PROGRESS", 90, &|a| {
            dash(a.progress.map(|p| format!("{:.0}%", p * 100.0)))
        }),
        column("BEATS", 60, &|a| {
            Styled::from(a.heartbeat_count.to_string())
        }),
        column("REPORTED", 50, &|a| {
            Styled::from(a.reported_status.map_or("-", |r| r.as_str()))
        }),
    ]
}

/// Drops the columns that matter least until the table fits `width` (two spaces between
/// columns, none after the last).
fn fit(mut columns: Vec<Column>, width: Option<usize>) -> Vec<Column> {
    let Some(width) = width else {
        return columns;
    };
    let wide = |c: &Column| {
        c.cells
            .iter()
            .map(|s| s.text.chars().count())
            .chain([c.header.len()])
            .max()
            .unwrap_or(0)
    };
    loop {
        let total: usize = columns
            .iter()
            .map(|c| wide(c) + 2)
            .sum::<usize>()
            .saturating_sub(2);
        if total <= width || columns.len() <= 3 {
            return columns;
        }
        let Some(least) = columns
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| c.keep)
            .map(|(i, _)| i)
        else {
            return columns;
        };
        columns.remove(least);
    }
}

/// Runs `pas status`.
pub fn run_status(ctx: &Ctx, args: StatusArgs) -> Result<()> {
    let StatusArgs {
        cell,
        all: _,
        watch,
        interval,
        health,
    } = args;
    if watch {
        return watch_status(ctx, cell.as_deref(), interval.unwrap_or(2.0), &health);
    }
    if cell.is_none() {
        return if ctx.out.is_json() {
            status_json_streamed(ctx, &health)
        } else {
            status_table_streamed(ctx, &health)
        };
    }
    let (views, errors) = views(ctx, cell.as_deref(), true)?;
    let views = keep_health(views, &health);
    for e in &errors {
        ctx.out.note(&format!("pas: skipped: {}", e.message));
    }
    if ctx.out.is_json() {
        let doc = StatusDoc {
            time: clock::stamp(clock::now()),
            store: ctx.store.to_json(),
            cells: CellsOut::Views(&views),
            totals: RefCell::new(Totals::default()),
            errors: RefCell::new(errors.iter().map(|e| e.message.clone()).collect()),
        };
        write_json(ctx, &doc);
        return Ok(());
    }
    let width = ctx.out.terminal_size().map(|(w, _)| w);
    let text = status_text(ctx, &views, width, !health.is_empty());
    ctx.out.info(text.trim_end_matches('\n'));
    store_line(ctx);
    Ok(())
}

/// Under the table, the store, when it is not the file store at the root (`--store`).
fn store_line(ctx: &Ctx) {
    if !matches!(ctx.store, crate::store::Selected::File(_)) {
        ctx.out.info(&format!("store: {}", ctx.store.describe()));
    }
}

/// `pas status --watch`: the table again every `interval` seconds, redrawn in place on a
/// terminal, until SIGINT or SIGTERM (exit 0). On a terminal no line is longer than its
/// width and the frame no taller than it, so nothing wraps and the header stays in view.
fn watch_status(ctx: &Ctx, cell: Option<&str>, interval: f64, health: &[Health]) -> Result<()> {
    if ctx.out.is_json() {
        return Err(
            Error::usage("--watch redraws a table for people and takes no --json")
                .hint("poll `pas status --json` from a script instead"),
        );
    }
    if !(interval > 0.0 && interval <= 86_400.0) {
        return Err(Error::usage(format!(
            "--interval {interval} is outside (0, 86400] seconds"
        )));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, std::sync::Arc::clone(&stop))
            .map_err(|e| Error::failure(format!("cannot listen for signals: {e}")))?;
    }
    let pause = std::time::Duration::from_secs_f64(interval);
    let mut first = true;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) && !ctx.out.is_closed() {
        let (views, errors) = views(ctx, cell, true)?;
        let views = keep_health(views, health);
        // Asked each time: the terminal may have been resized.
        let size = ctx.out.terminal_size();
        let mut text = format!(
            "pas status --watch: every {}s, {} (Ctrl-C stops)\n\n",
            interval,
            clock::now().format("%Y-%m-%d %H:%M:%S UTC")
        );
        for e in &errors {
            text.push_str(&format!("pas: skipped: {}\n", e.message));
        }
        text.push_str(&status_text(
            ctx,
            &views,
            size.map(|(w, _)| w),
            !health.is_empty(),
        ));
        let frame = match size {
            Some((width, height)) => {
                // Home, each line then clear to its end, clear below: no flicker.
                let clear = if first { "\x1b[2J" } else { "" };
                let lines: Vec<&str> = text.lines().collect();
                let room = height.saturating_sub(1).max(1);
                let mut body: String = lines
                    .iter()
                    .take(if lines.len() > room { room - 1 } else { room })
                    .map(|l| format!("{}\x1b[K\n", crate::output::clip(l, width)))
                    .collect();
                if lines.len() > room {
                    let more = format!(
                        "... {} more line(s): name a CELL or pass --health to narrow it",
                        lines.len() - (room - 1)
                    );
                    body.push_str(&format!("{}\x1b[K\n", crate::output::clip(&more, width)));
                }
                format!("\x1b[H{clear}{body}\x1b[J")
            }
            None => format!("{text}\n"),
        };
        first = false;
        ctx.out.raw(&frame);
        let until = std::time::Instant::now() + pause;
        while std::time::Instant::now() < until && !stop.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(pause.min(std::time::Duration::from_millis(100)));
        }
    }
    Ok(())
}

/// The status table of `pas status` as text (problems noted on stderr), fitted to `width`
/// when one is given.
fn status_text(ctx: &Ctx, views: &[CellView], width: Option<usize>, filtered: bool) -> String {
    if views.is_empty() {
        return nothing_text(ctx, filtered);
    }
    let mut text = String::new();
    for (i, v) in views.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        cell_text(ctx, v, width, &mut text);
    }
    text
}

/// What the table says when it has no cell to show.
fn nothing_text(ctx: &Ctx, filtered: bool) -> String {
    if filtered {
        "no agent in that health\n".to_string()
    } else {
        format!("no cells under {}\n", ctx.store.location())
    }
}

/// Appends one cell of the status table to `text`: its line, its tasks, its unreadable
/// files (also noted on stderr) and its agents' table.
fn cell_text(ctx: &Ctx, v: &CellView, width: Option<usize>, text: &mut String) {
    let fitted = |line: String| match width {
        Some(w) => crate::output::clip(&line, w),
        None => line,
    };
    let status = Styled::new(v.status.as_str(), super::cell::status_tone(v.status));
    text.push_str(&fitted(format!(
        "cell {}  {}  {}  {}",
        v.id.get(..8).unwrap_or(&v.id),
        v.name,
        ctx.out.paint(&status),
        health_summary(v),
    )));
    text.push('\n');
    text.push_str(&fitted(format!("  {}", task_summary(v))));
    text.push('\n');
    if let Some(limits) = limits_summary(v) {
        text.push_str(&fitted(format!("  {limits}")));
        text.push('\n');
    }
    for p in &v.problems {
        ctx.out.note(&format!("pas: cannot read: {p}"));
        let broken = Styled::new("BROKEN", Tone::Bad);
        text.push_str(&fitted(format!("  {}  {p}", ctx.out.paint(&broken))));
        text.push('\n');
    }
    if v.agents.is_empty() {
        return;
    }
    let columns = fit(agent_columns(&v.agents), width);
    let headers: Vec<&str> = columns.iter().map(|c| c.header).collect();
    let mut rows: Vec<Vec<Styled>> = vec![Vec::with_capacity(columns.len()); v.agents.len()];
    for c in columns {
        for (row, cell) in rows.iter_mut().zip(c.cells) {
            row.push(cell);
        }
    }
    match width {
        None => ctx.out.render_table_into(text, &headers, &rows),
        Some(_) => {
            for line in ctx.out.render_table(&headers, rows).lines() {
                text.push_str(&fitted(line.to_string()));
                text.push('\n');
            }
        }
    }
}

/// `pas status` over the whole root as a table: each cell is viewed (and its health
/// changes recorded) and written out in turn, in pieces of about 64 KiB, so neither the
/// views nor the text of the fleet are ever held whole. The same text as [`status_text`].
fn status_table_streamed(ctx: &Ctx, health: &[Health]) -> Result<()> {
    let ids = ctx.store.cell_ids()?;
    let now = clock::now();
    let width = ctx.out.terminal_size().map(|(w, _)| w);
    let mut text = String::with_capacity(80 * 1024);
    let mut shown = 0usize;
    status::with_views(&ctx.store, &ids, true, now, |views| {
        for view in views {
            let view = match view {
                Ok(v) => v,
                Err(e) => {
                    ctx.out.note(&format!("pas: skipped: {}", e.message));
                    continue;
                }
            };
            for v in keep_health(vec![view], health) {
                if shown > 0 {
                    text.push('\n');
                }
                cell_text(ctx, &v, width, &mut text);
                shown += 1;
            }
            if text.len() >= 64 * 1024 {
                // Trailing newlines wait: the end of the table has exactly one.
                let body = text.trim_end_matches('\n').len();
                ctx.out.info_text(&text[..body]);
                text.drain(..body);
            }
        }
    });
    if shown == 0 {
        text = nothing_text(ctx, !health.is_empty());
    }
    ctx.out.info(text.trim_end_matches('\n'));
    store_line(ctx);
    Ok(())
}

/// The totals of `pas status --json`.
#[derive(Debug, Default, Serialize)]
struct Totals {
    cells: usize,
    agents: usize,
    health: BTreeMap<String, usize>,
}

impl Totals {
    fn add(&mut self, v: &CellView) {
        self.cells += 1;
        self.agents += v.agents.len();
        for (h, n) in &v.health_counts {
            *self.health.entry(h.clone()).or_insert(0) += n;
        }
    }
}

/// Where the cells of the document come from: views already built, or the root's cells,
/// each viewed as it is written and dropped after.
enum CellsOut<'a> {
    Views(&'a [CellView]),
    Root {
        ctx: &'a Ctx,
        ids: Vec<String>,
        now: DateTime<Utc>,
        health: &'a [Health],
    },
}

/// The `pas status --json` document: `time`, `cells`, `totals` (summed while the cells are
/// written) and `errors`, in that order.
struct StatusDoc<'a> {
    time: String,
    /// Which store the cells are in (`{"kind": "file"|"etcd", "location": ...}`).
    store: serde_json::Value,
    cells: CellsOut<'a>,
    totals: RefCell<Totals>,
    errors: RefCell<Vec<String>>,
}

struct CellsField<'d, 'a>(&'d StatusDoc<'a>);

impl Serialize for CellsField<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let doc = self.0;
        let mut seq = s.serialize_seq(None)?;
        match &doc.cells {
            CellsOut::Views(views) => {
                for v in *views {
                    doc.totals.borrow_mut().add(v);
                    seq.serialize_element(v)?;
                }
            }
            CellsOut::Root {
                ctx,
                ids,
                now,
                health,
            } => {
                status::with_views(&ctx.store, ids, true, *now, |views| {
                    for view in views {
                        match view {
                            Ok(v) => {
                                for v in keep_health(vec![v], health) {
                                    doc.totals.borrow_mut().add(&v);
                                    seq.serialize_element(&v)?;
                                }
                            }
                            Err(e) => doc.errors.borrow_mut().push(e.message),
                        }
                    }
                    Ok(())
                })?;
            }
        }
        seq.end()
    }
}

impl Serialize for StatusDoc<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_struct("Status", 5)?;
        map.serialize_field("time", &self.time)?;
        map.serialize_field("store", &self.store)?;
        map.serialize_field("cells", &CellsField(self))?;
        map.serialize_field("totals", &*self.totals.borrow())?;
        map.serialize_field("errors", &*self.errors.borrow())?;
        map.end()
    }
}

/// Hands serialised JSON to the printer in pieces of about 64 KiB, so a large document is
/// never held whole.
struct Chunks<'a> {
    ctx: &'a Ctx,
    buf: Vec<u8>,
}

impl Chunks<'_> {
    fn pass_on(&mut self) {
        let valid = match std::str::from_utf8(&self.buf) {
            Ok(text) => text.len(),
            // A character cut at the end of a piece goes out with the next one.
            Err(e) => e.valid_up_to(),
        };
        if let Ok(text) = std::str::from_utf8(&self.buf[..valid]) {
            self.ctx.out.raw(text);
        }
        self.buf.drain(..valid);
    }
}

impl std::io::Write for Chunks<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= 64 * 1024 {
            self.pass_on();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One JSON document on stdout, pretty as `Printer::json` writes it, without building a
/// JSON value of it first.
fn write_json(ctx: &Ctx, doc: &StatusDoc<'_>) {
    let mut out = Chunks {
        ctx,
        buf: Vec::with_capacity(80 * 1024),
    };
    // Writing into `Chunks` cannot fail, and the document has only string keys.
    let _ = doc.serialize(&mut serde_json::Serializer::pretty(&mut out));
    out.buf.push(b'\n');
    out.pass_on();
}

/// `pas status --json` over the whole root: each cell is viewed (and its health changes
/// recorded) as it is written, so memory stays that of one cell, not of the fleet.
fn status_json_streamed(ctx: &Ctx, health: &[Health]) -> Result<()> {
    let doc = StatusDoc {
        time: clock::stamp(clock::now()),
        store: ctx.store.to_json(),
        cells: CellsOut::Root {
            ctx,
            ids: ctx.store.cell_ids()?,
            now: clock::now(),
            health,
        },
        totals: RefCell::new(Totals::default()),
        errors: RefCell::new(Vec::new()),
    };
    write_json(ctx, &doc);
    for e in doc.errors.borrow().iter() {
        ctx.out.note(&format!("pas: skipped: {e}"));
    }
    Ok(())
}

/// Runs `pas check`: one line on stdout, the Nagios exit code.
pub fn run_check(ctx: &Ctx, args: CheckArgs) -> Result<()> {
    let CheckArgs { cell } = args;
    // A missing or unreadable root is UNKNOWN, never an empty fleet that is OK.
    let root = match cell {
        None => ctx.store.check_root(),
        Some(_) => Ok(()),
    };
    let outcome = match (root, cell) {
        (Err(e), _) => status::check(&[], &[e]),
        // The whole root one cell at a time: each view is counted and dropped.
        (Ok(()), None) => {
            let mut tally = status::CheckTally::default();
            let mut errors = Vec::new();
            let seen = status::each_root_view(&ctx.store, true, clock::now(), |view| match view {
                Ok(v) => tally.add(&v),
                Err(e) => errors.push(e),
            });
            match seen {
                Ok(()) => tally.outcome(&errors),
                Err(e) => status::check(&[], &[e]),
            }
        }
        (Ok(()), Some(query)) => match views(ctx, Some(&query), true) {
            Ok((views, errors)) => status::check(&views, &errors),
            Err(e) => status::check(&[], &[e]),
        },
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
            crate::store::write_outside(&path, text.as_bytes())?;
        }
        None => {
            // Exposition text goes out as is, whatever --json says.
            ctx.out.raw(&text);
        }
    }
    Ok(())
}
