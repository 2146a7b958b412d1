//! Checkpoints: saving where an agent was, listing and verifying generations, restoring one.
//!
//! A save writes a new generation completely (context and artifacts, then `state.json`,
//! then `manifest.json` with their sha256, then one rename), then points the agent file's
//! `checkpoint` record (`last_checkpoint`, `context_hash`, `artifacts`, `generation`) at it,
//! then prunes generations beyond the policy's `checkpoint_keep`. A generation whose files
//! do not parse or whose context does not match its hash is refused for resume, naming the
//! generation: pas never falls back to defaults.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::clock;
use crate::error::{Error, Result};
use crate::model::{CheckpointRecord, EventKind, Field};
use crate::ops::agent as agents;
use crate::ops::policy;
use crate::store::events::{hash_line, Level, NewEvent};
use crate::store::{CheckpointFiles, FileKey, LockKey, Store};

/// What to save.
#[derive(Debug, Clone, Default)]
pub struct SaveRequest {
    /// `state.json` bytes (JSON); `None` for a snapshot of the agent file.
    pub state: Option<Vec<u8>>,
    /// `context.json` bytes (JSON); `None` for `{}`.
    pub context: Option<Vec<u8>>,
    /// Files to keep with the checkpoint: name and bytes.
    pub artifacts: Vec<(String, Vec<u8>)>,
    /// Their permission bits by name (absent: 0644).
    pub modes: std::collections::BTreeMap<String, u32>,
    /// Why: `manual`, `breach`, `revival`, ...
    pub reason: String,
}

/// A saved or listed generation.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    /// The generation number (0: hand-written top-level files).
    pub generation: u64,
    /// When it was saved.
    pub created_at: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// sha256 of `context.json`.
    pub context_hash: Option<String>,
    /// Artifact names.
    pub artifacts: Vec<String>,
    /// Its directory.
    pub path: String,
    /// Whether it can be resumed from.
    pub ok: bool,
    /// Why not.
    pub problem: Option<String>,
}

/// `manifest.json`: pas's record of a generation, written with it and checked before a
/// resume. Its keys are spelled here only: this module writes and reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The agent it belongs to.
    pub agent_id: String,
    /// Its generation number.
    pub generation: u64,
    /// When it was saved.
    pub created_at: String,
    /// Why.
    pub reason: String,
    /// sha256 of `context.json`.
    pub context_sha256: String,
    /// sha256 of `state.json`.
    pub state_sha256: String,
    /// The artifacts saved with it.
    pub artifacts: Vec<ManifestArtifact>,
}

/// One artifact of a generation, as its manifest records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestArtifact {
    /// Its file name under `artifacts/`.
    pub name: String,
    /// sha256 of its bytes.
    pub sha256: String,
    /// Its size.
    pub bytes: usize,
}

impl Manifest {
    /// The manifest of a generation's files; an error names what does not parse.
    pub fn of(files: &CheckpointFiles) -> std::result::Result<Manifest, serde_json::Error> {
        serde_json::from_slice(&files.manifest)
    }
}

fn must_be_json(bytes: &[u8], what: &str) -> Result<()> {
    serde_json::from_slice::<Value>(bytes)
        .map(|_| ())
        .map_err(|e| {
            Error::usage(format!("the {what} is not JSON: {e}"))
                .hint(format!("pass the {what} as a JSON document"))
        })
}

/// Saves a new checkpoint generation; returns it.
pub fn save(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    req: SaveRequest,
    now: DateTime<Utc>,
) -> Result<Generation> {
    let typed = agents::load(store, cell, agent)?;
    if let Some(s) = &req.state {
        must_be_json(s, "state")?;
    }
    if let Some(c) = &req.context {
        must_be_json(c, "context")?;
    }
    let state = match req.state {
        Some(s) => s,
        None => {
            // The state.json of an agent that gave none: where it was, from its file.
            let snapshot = json!({
                "agent_id": agent,
                "current_task": typed.current_task,
                "progress": typed.progress.encode(),
                "note": typed.note,
                "ctx_used": typed.ctx_used,
                "ctx_limit": typed.ctx_limit,
                "heartbeat_count": typed.heartbeat_count,
            });
            let mut bytes = serde_json::to_vec_pretty(&snapshot).unwrap_or_default();
            bytes.push(b'\n');
            bytes
        }
    };
    let context = req.context.unwrap_or_else(|| b"{}\n".to_vec());
    let context_hash = hash_line(&context);
    let keep = policy::load(store, cell, Some(&typed))?.checkpoint_keep();

    let _save = store.lock(cell, LockKey::Checkpoint(agent))?;
    let gens = store.checkpoint_generations(cell, agent)?;
    let recorded = typed
        .checkpoint
        .as_ref()
        .and_then(|c| c.generation)
        .unwrap_or(0);
    let generation = gens.last().copied().unwrap_or(0).max(recorded) + 1;
    let artifact_names: Vec<String> = req.artifacts.iter().map(|(n, _)| n.clone()).collect();
    let manifest = Manifest {
        agent_id: agent.to_string(),
        generation,
        created_at: clock::stamp(now),
        reason: req.reason.clone(),
        context_sha256: context_hash.clone(),
        state_sha256: hash_line(&state),
        artifacts: req
            .artifacts
            .iter()
            .map(|(n, b)| ManifestArtifact {
                name: n.clone(),
                sha256: hash_line(b),
                bytes: b.len(),
            })
            .collect(),
    };
    let mut manifest_bytes = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    manifest_bytes.push(b'\n');
    let files = CheckpointFiles {
        state,
        context,
        manifest: manifest_bytes,
        artifacts: req.artifacts,
        modes: req.modes,
    };
    // A generation newer than the agent's record was left by a save that never committed.
    for orphan in gens.iter().filter(|g| **g > recorded) {
        store.remove_checkpoint(cell, agent, *orphan)?;
    }
    store.write_checkpoint(cell, agent, generation, &files)?;
    let record = CheckpointRecord {
        last_checkpoint: Some(now),
        context_hash: Some(context_hash.clone()),
        artifacts: artifact_names.clone(),
        generation: Some(generation),
        extra: Map::new(),
    };
    let committed = crate::store::transact(store, cell, now, |txn| {
        let mut doc = txn.read(FileKey::Agent(agent))?.ok_or_else(|| {
            Error::not_found(format!(
                "agent {agent} was removed while its checkpoint was saved"
            ))
        })?;
        let mut typed = agents::typed(agent, &doc)?;
        typed.checkpoint = Some(record.clone());
        typed.write_into(&mut doc);
        txn.put(FileKey::Agent(agent), doc);
        txn.event(
            NewEvent::new(
                Level::Info, EventKind::CheckpointSaved,
                format!("checkpoint {generation} of {agent} saved ({})", req.reason),
            )
            .agent(agent)
            .details(
                json!({ "generation": generation, "context_hash": context_hash, "reason": req.reason }),
            ),
        );
        Ok(())
    });
    if let Err(e) = committed {
        if e.committed != Some(true) {
            let _ = store.remove_checkpoint(cell, agent, generation);
        }
        return Err(e);
    }
    // Committed: publish it under the spec's names and prune old generations. A failure
    // here leaves the saved checkpoint intact; it is reported.
    store.mirror_checkpoint(cell, agent, &files)?;
    let mut all = store.checkpoint_generations(cell, agent)?;
    all.retain(|g| *g != generation);
    let excess = (all.len() + 1).saturating_sub(keep);
    for old in all.into_iter().take(excess) {
        store.remove_checkpoint(cell, agent, old)?;
    }
    drop(_save);
    Ok(Generation {
        generation,
        created_at: Some(clock::stamp(now)),
        reason: Some(req.reason),
        context_hash: Some(context_hash),
        artifacts: artifact_names,
        path: store.describe_checkpoint(cell, agent, generation),
        ok: true,
        problem: None,
    })
}

/// Checks a generation's files; the error names the generation and what is wrong.
pub fn verify(
    agent: &str,
    generation: u64,
    files: &CheckpointFiles,
    recorded_hash: Option<&str>,
) -> Result<Value> {
    let fail = |what: String| {
        Error::data(format!(
            "checkpoint generation {generation} of agent {agent} cannot be resumed: {what}"
        ))
        .hint("restore an older generation with --generation, or save a new checkpoint")
    };
    let state: Value = serde_json::from_slice(&files.state)
        .map_err(|e| fail(format!("state.json does not parse ({e})")))?;
    serde_json::from_slice::<Value>(&files.context)
        .map_err(|e| fail(format!("context.json does not parse ({e})")))?;
    let actual = hash_line(&files.context);
    let expected = if files.manifest.is_empty() {
        recorded_hash.map(str::to_string)
    } else {
        let manifest =
            Manifest::of(files).map_err(|e| fail(format!("manifest.json does not parse ({e})")))?;
        for a in &manifest.artifacts {
            let name = &a.name;
            match files.artifacts.iter().find(|(n, _)| n == name) {
                None => return Err(fail(format!("artifact {name} is missing"))),
                Some((_, bytes)) if hash_line(bytes) != a.sha256 => {
                    return Err(fail(format!("artifact {name} does not match its hash")))
                }
                Some(_) => {}
            }
        }
        Some(manifest.context_sha256)
    };
    match expected {
        Some(h) if h != actual => Err(fail(format!(
            "context.json does not match its hash (expected {}, found {})",
            short(&h),
            short(&actual)
        ))),
        _ => Ok(state),
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

fn describe(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    generation: u64,
    files: &CheckpointFiles,
    recorded_hash: Option<&str>,
) -> Generation {
    let manifest = Manifest::of(files).ok();
    let problem = verify(agent, generation, files, recorded_hash)
        .err()
        .map(|e| e.message);
    Generation {
        generation,
        created_at: manifest.as_ref().map(|m| m.created_at.clone()),
        reason: manifest.map(|m| m.reason),
        context_hash: Some(hash_line(&files.context)),
        artifacts: files.artifacts.iter().map(|(n, _)| n.clone()).collect(),
        path: store.describe_checkpoint(cell, agent, generation),
        ok: problem.is_none(),
        problem,
    }
}

fn recorded_hash(store: &dyn Store, cell: &str, agent: &str) -> Result<Option<String>> {
    Ok(agents::load(store, cell, agent)?
        .checkpoint
        .and_then(|c| c.context_hash))
}

/// Every generation of an agent, oldest first (with a hand-written top-level checkpoint as
/// generation 0 when there is no history).
pub fn list(store: &dyn Store, cell: &str, agent: &str) -> Result<Vec<Generation>> {
    let hash = recorded_hash(store, cell, agent)?;
    let mut out = Vec::new();
    let gens = store.checkpoint_generations(cell, agent)?;
    if gens.is_empty() {
        if let Some(files) = store.read_checkpoint(cell, agent, 0)? {
            out.push(describe(store, cell, agent, 0, &files, hash.as_deref()));
        }
    }
    for g in gens {
        if let Some(files) = store.read_checkpoint(cell, agent, g)? {
            out.push(describe(store, cell, agent, g, &files, None));
        }
    }
    Ok(out)
}

/// The generation to resume from: the one the agent record points at, else the newest.
pub fn latest_generation(store: &dyn Store, cell: &str, agent: &str) -> Result<Option<u64>> {
    let recorded = agents::load(store, cell, agent)?
        .checkpoint
        .and_then(|c| c.generation);
    let gens = store.checkpoint_generations(cell, agent)?;
    Ok(match recorded {
        Some(g) if gens.contains(&g) => Some(g),
        _ => gens.last().copied().or_else(|| {
            store
                .read_checkpoint(cell, agent, 0)
                .ok()
                .flatten()
                .map(|_| 0)
        }),
    })
}

/// Loads and verifies a generation for resume (the latest when `generation` is `None`).
pub fn load(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    generation: Option<u64>,
) -> Result<(u64, CheckpointFiles)> {
    let generation = match generation {
        Some(g) => g,
        None => latest_generation(store, cell, agent)?.ok_or_else(|| {
            Error::not_found(format!("agent {agent} has no checkpoint"))
                .hint("save one with `pas checkpoint save`")
        })?,
    };
    let files = store
        .read_checkpoint(cell, agent, generation)?
        .ok_or_else(|| {
            Error::not_found(format!(
                "agent {agent} has no checkpoint generation {generation}"
            ))
            .hint(format!("`pas checkpoint list {cell} {agent}` shows them"))
        })?;
    let hash = if generation == 0 {
        recorded_hash(store, cell, agent)?
    } else {
        None
    };
    verify(agent, generation, &files, hash.as_deref())?;
    Ok((generation, files))
}

/// Restores a generation: into `to` (byte for byte), or, without `to`, as the agent's
/// current checkpoint again (saved as a new generation, so history is kept).
pub fn restore(
    store: &dyn Store,
    cell: &str,
    agent: &str,
    generation: Option<u64>,
    to: Option<&std::path::Path>,
    now: DateTime<Utc>,
) -> Result<Generation> {
    let (g, files) = load(store, cell, agent, generation)?;
    if let Some(dest) = to {
        crate::store::write_checkpoint_outside(dest, &files)?;
        let mut shown = describe(store, cell, agent, g, &files, None);
        shown.path = dest.display().to_string();
        return Ok(shown);
    }
    save(
        store,
        cell,
        agent,
        SaveRequest {
            state: Some(files.state),
            context: Some(files.context),
            artifacts: files.artifacts,
            modes: files.modes,
            reason: format!("restore of generation {g}"),
        },
        now,
    )
}
