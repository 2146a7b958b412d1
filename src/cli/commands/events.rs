//! `pas events ...`

use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::cli::Ctx;
use crate::clock;
use crate::error::{Error, Result};
use crate::ops::cell;
use crate::output::{Styled, Tone};
use crate::store::events::{self, Event, Filter, Level};
use crate::store::{LogFile, Store};

// Arguments of `pas events`.
//
// Example: pas events 3f2a --since 10m --level warn --follow
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EventsArgs {
    /// Verify the hash chain instead of listing.
    #[command(subcommand)]
    pub command: Option<EventsCommand>,
    /// One cell (default: every cell).
    pub cell: Option<String>,
    /// Only events since a duration ago (`90s`, `10m`, `2h`, `1d`) or an RFC 3339 time.
    #[arg(long, value_name = "DURATION|TIME")]
    pub since: Option<String>,
    /// Only events at least this loud.
    #[arg(long, value_enum)]
    pub level: Option<Level>,
    /// Only events about this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only events of this kind (`agent.dead`), or kinds starting with a prefix ending in `.` (`agent.`).
    #[arg(long)]
    pub kind: Option<String>,
    /// Keep printing new events as they are appended, like `tail -f` (after the last 10,
    /// unless -n says how many).
    #[arg(long, short)]
    pub follow: bool,
    /// Only the last N events (of those the filters select).
    #[arg(long = "lines", short = 'n', value_name = "N")]
    pub lines: Option<usize>,
}

// Subcommands of `pas events`.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum EventsCommand {
    /// Check each cell's hash chain and name the first broken or missing link.
    ///
    /// Example: pas events verify 3f2a
    Verify(VerifyArgs),
}

// Arguments of `pas events verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// One cell (default: every cell).
    pub cell: Option<String>,
}

/// Parses `--since`: a duration ago (`90s`, `1h30m`, `2d`), or a time.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    if let Some(t) = clock::parse(text) {
        return Ok(t);
    }
    let seconds = clock::parse_duration(text).ok_or_else(|| {
        Error::usage(format!("--since {text:?} is neither a duration nor a time"))
            .hint("use 90s, 10m, 1h30m, 2d, or an RFC 3339 time like 2026-11-23T10:00:00Z")
    })?;
    Ok(now - chrono::Duration::milliseconds((seconds * 1000.0).min(1e15) as i64))
}

fn cells(ctx: &Ctx, cell: Option<&str>) -> Result<Vec<String>> {
    match cell {
        Some(q) => Ok(vec![cell::resolve(&ctx.store, q)?]),
        None => ctx.store.cell_ids(),
    }
}

fn level_tone(l: Level) -> Tone {
    match l {
        Level::Info => Tone::Plain,
        Level::Warn => Tone::Warn,
        Level::Error => Tone::Bad,
    }
}

fn print_event(ctx: &Ctx, cell: &str, e: &Event, many_cells: bool) {
    if ctx.out.is_json() {
        let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.insert("cell".into(), json!(cell));
        }
        ctx.out.line(&v.to_string());
        return;
    }
    let mut subject = String::new();
    if many_cells {
        subject.push_str(cell.get(..8).unwrap_or(cell));
        subject.push(' ');
    }
    if let Some(a) = &e.agent {
        subject.push_str(a);
        subject.push(' ');
    }
    let level = ctx.out.paint(&Styled::new(
        format!("{:<5}", e.level.as_str()),
        level_tone(e.level),
    ));
    ctx.out.line(&format!(
        "{} {level} {:<16} {subject}{}",
        e.time, e.kind, e.message
    ));
}

/// Runs `pas events`.
pub fn run(ctx: &Ctx, args: EventsArgs) -> Result<()> {
    let EventsArgs {
        command,
        cell,
        since,
        level,
        agent,
        kind,
        follow,
        lines,
    } = args;
    if let Some(EventsCommand::Verify(VerifyArgs { cell })) = command {
        return verify(ctx, cell.as_deref());
    }
    let filter = Filter {
        since: since
            .as_deref()
            .map(|s| parse_since(s, clock::now()))
            .transpose()?,
        level,
        agent,
        kind,
    };
    let ids = cells(ctx, cell.as_deref())?;
    let many = cell.is_none();
    let mut offsets: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut all: Vec<(String, Event)> = Vec::new();
    for id in &ids {
        let bytes = ctx.store.read_log(id, LogFile::Events, 0)?;
        let (_, torn) = events::split_lines(&bytes);
        offsets.insert(id.clone(), (bytes.len() - torn) as u64);
        all.extend(
            events::parse_all(&bytes)
                .into_iter()
                .filter(|e| filter.matches(e))
                .map(|e| (id.clone(), e)),
        );
    }
    all.sort_by(|a, b| a.1.time.cmp(&b.1.time));
    // Following starts at the tail, as `tail -f` and `journalctl -f` do.
    if let Some(n) = lines.or(follow.then_some(10)) {
        all.drain(..all.len().saturating_sub(n));
    }
    for (id, e) in &all {
        print_event(ctx, id, e, many);
    }
    if !follow {
        return Ok(());
    }
    // Follow: poll for appended bytes; new cells are picked up when watching the whole root.
    while !ctx.out.is_closed() {
        std::thread::sleep(Duration::from_millis(200));
        let ids = if many {
            ctx.store.cell_ids()?
        } else {
            ids.clone()
        };
        for id in ids {
            let offset = offsets.get(&id).copied().unwrap_or(0);
            let bytes = match ctx.store.read_log(&id, LogFile::Events, offset) {
                Ok(b) => b,
                Err(_) => continue,
            };
            let (lines, torn) = events::split_lines(&bytes);
            for line in lines {
                if let Ok(e) = serde_json::from_slice::<Event>(line) {
                    if filter.matches(&e) {
                        print_event(ctx, &id, &e, many);
                    }
                }
            }
            offsets.insert(id, offset + (bytes.len() - torn) as u64);
        }
    }
    Ok(())
}

fn verify(ctx: &Ctx, cell: Option<&str>) -> Result<()> {
    let mut results = Vec::new();
    for id in cells(ctx, cell)? {
        // A change committed by an interrupted writer is finished first: its events are
        // part of the chain.
        crate::store::settle(&ctx.store, &id)?;
        let bytes = ctx.store.read_log(&id, LogFile::Events, 0)?;
        // The head pas recorded shows a log cut, emptied or edited at its end.
        let head = ctx.store.events_head(&id)?;
        results.push((id, events::verify_against(&bytes, head.as_ref())));
    }
    let broken = results
        .iter()
        .filter(|(_, v)| v.first_break.is_some())
        .count();
    if ctx.out.is_json() {
        let items: Vec<Value> = results
            .iter()
            .map(|(id, v)| json!({ "cell": id, "ok": v.first_break.is_none(), "lines": v.lines, "first_break": v.first_break, "torn_tail": v.torn_tail, "past_head": v.past_head }))
            .collect();
        ctx.out.json(&json!({ "ok": broken == 0, "cells": items }));
    } else {
        for (id, v) in &results {
            let path = ctx.store.describe_log(id, LogFile::Events);
            match &v.first_break {
                None => ctx.out.info(&format!(
                    "ok: {} ({} events{}{})",
                    path,
                    v.lines,
                    if v.torn_tail {
                        ", torn last line ignored"
                    } else {
                        ""
                    },
                    if v.past_head > 0 {
                        format!(
                            ", {} past the recorded head (taken in by the next change)",
                            v.past_head
                        )
                    } else {
                        String::new()
                    }
                )),
                Some(b) => ctx.out.line(&format!("broken: {}: {}", path, b.reason)),
            }
        }
    }
    if broken > 0 {
        return Err(
            Error::data(format!("{broken} events log(s) have a broken chain"))
                .hint("the log was edited, cut or had lines removed; keep the file as evidence"),
        );
    }
    Ok(())
}
