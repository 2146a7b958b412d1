//! `pas store ...`

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use crate::cli::Ctx;
use crate::error::Result;
use crate::ops::{store_copy, store_gc};
use crate::store::{etcd, FsStore, Selected, Store};

// Subcommands of `pas store`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy every cell of a root into an empty store: documents byte for byte, events with
    /// their hash chains and heads, checkpoints with their files, summaries; then read each
    /// cell back, compare it with the source and verify its chain. A destination that holds
    /// any cell is refused (a copy never merges roots).
    ///
    /// An etcd side keeps its checkpoint blobs under this command's --root (or the URL's
    /// blobs=DIR), as every command on etcd does.
    ///
    /// Example: pas --root /var/missions store copy --from /var/missions --to etcd://h1:2379/pas
    Copy(CopyArgs),
    /// Remove the checkpoint blobs no manifest of the store names, once older than a grace.
    ///
    /// On etcd every file of a checkpoint is a blob in the blob directory, shared by the
    /// generations that hold the same bytes, so a pruned or removed generation leaves its
    /// own blobs behind. A blob a manifest names is never removed; one written or reused
    /// within --older-than is kept (a save in progress writes its blobs before its
    /// manifest). Prints a line per blob removed and a total. The file store keeps a
    /// checkpoint's files with its generation: there it exits 2.
    ///
    /// Example: pas --store etcd://h1:2379/pas store gc --dry-run
    Gc(GcArgs),
}

// Arguments of `pas store gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Keep unnamed blobs written more recently than this (`90s`, `30m`, `1h`, `2d`).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = crate::cli::words::whole_seconds)]
    pub older_than: u64,
    /// List what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

// Arguments of `pas store copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The root to copy: a directory, or an etcd://... URL.
    #[arg(long, value_name = "DIR|URL")]
    pub from: String,
    /// Where to: a directory (created if missing), or an etcd://... URL; it must hold no cell.
    #[arg(long, value_name = "DIR|URL")]
    pub to: String,
}

/// Runs a `pas store` command.
pub fn run(ctx: &Ctx, command: StoreCommand) -> Result<()> {
    match command {
        StoreCommand::Copy(args) => copy(ctx, args),
        StoreCommand::Gc(args) => gc(ctx, args),
    }
}

/// The directory this command keeps local files in (an etcd side's blobs).
fn local_root(ctx: &Ctx) -> PathBuf {
    match &ctx.store {
        Selected::File(s) => s.root().to_path_buf(),
        Selected::Etcd { blobs, .. } => blobs.clone(),
    }
}

/// The store `spec` names, and how to name it in messages.
fn open(ctx: &Ctx, spec: &str) -> Result<(Box<dyn Store + Send + Sync>, String)> {
    if etcd::is_etcd(spec) {
        let url = etcd::parse_url(spec)?;
        let opener = crate::cli::etcd_opener()?;
        let store = opener(
            &url,
            local_root(ctx),
            Duration::from_secs(10),
            serde_json::Map::new(),
        )?;
        Ok((store, url.display()))
    } else {
        let store = FsStore::new(PathBuf::from(spec));
        Ok((Box::new(store), spec.to_string()))
    }
}

fn copy(ctx: &Ctx, args: CopyArgs) -> Result<()> {
    let (from, from_name) = open(ctx, &args.from)?;
    let (to, to_name) = open(ctx, &args.to)?;
    let copied = store_copy::copy(&*from, &*to, &from_name, &to_name, &mut |p| {
        ctx.out.progress(p)
    })?;
    ctx.out.progress_done();
    let documents: usize = copied.cells.iter().map(|c| c.documents).sum();
    let events: usize = copied.cells.iter().map(|c| c.events).sum();
    if ctx.out.is_json() {
        ctx.out.json(&json!({
            "from": copied.from,
            "to": copied.to,
            "cells": copied.cells,
            "documents": documents,
            "events": events,
            "verified": true,
        }));
        return Ok(());
    }
    for c in &copied.cells {
        ctx.out.line(&format!(
            "cell {}: {} documents, {} events (chain verified), {} checkpoints, {} summaries",
            c.cell, c.documents, c.events, c.checkpoints, c.summaries
        ));
    }
    ctx.out.line(&format!(
        "copied {} cells ({documents} documents, {events} events) from {from_name} to {to_name}; each read back the same on both sides",
        copied.cells.len()
    ));
    Ok(())
}

fn gc(ctx: &Ctx, args: GcArgs) -> Result<()> {
    let GcArgs {
        older_than,
        dry_run,
    } = args;
    // Past a century every blob is young anyway; beyond chrono's range `now - grace`
    // would not be a time.
    let grace = chrono::Duration::seconds(older_than.min(100 * 366 * 86_400) as i64);
    let done = store_gc::collect(&ctx.store, grace, dry_run, crate::clock::now())?;
    if ctx.out.is_json() {
        ctx.out.json(&json!(done));
        return Ok(());
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    for r in &done.removed {
        // A short hash, as git prints one; `--json` has the whole of it.
        let short = r.sha256.get(..12).unwrap_or(&r.sha256);
        ctx.out.line(&format!(
            "{verb} blob {short} ({} bytes, unnamed, written {} ago)",
            r.size,
            crate::clock::human_duration(r.age_seconds as f64)
        ));
    }
    ctx.out.line(&format!(
        "{verb} {} blob(s), {} bytes, from {}",
        done.removed.len(),
        done.bytes,
        done.dir
    ));
    ctx.out.line(&format!(
        "kept {} named by a manifest and {} written within {}",
        done.named,
        done.young,
        crate::clock::human_duration(older_than as f64)
    ));
    Ok(())
}
