//! The seed-001 health heartbeat endpoint (its `agent/health_heartbeat.py`, port 8080 there):
//! `POST /heartbeat/{agent_id}` with `{"metadata": {...}}` and `GET /agent/{agent_id}`, on
//! the request's cell. They are the MCP tools `beat` and `get_agent_health` under the seed's
//! names ([`crate::mcp::call`]), so a beat here is a `pas agent beat` with `--meta` for each
//! metadata entry. `GET /health` (in `api.rs`) answers both seeds at once.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};

use super::reply::{acting, blocking, ok, ApiError, Reply, SeedRequest};
use super::App;
use crate::error::Error;
use crate::mcp::tools::Defaults;

/// The routes of this file.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/heartbeat/{agent_id}", post(heartbeat))
        .route("/agent/{agent_id}", get(agent))
        .route("/health", get(health))
}

/// Runs one MCP tool for a request, as its acting agent (`X-Pas-As`) on its cell.
async fn tool(
    app: &Arc<App>,
    req: &SeedRequest,
    name: &'static str,
    args: Value,
) -> Result<Value, ApiError> {
    let defaults = Defaults {
        cell: Some(req.cell.clone()),
        agent: acting(&req.headers)?,
    };
    let store = app.store();
    let launch = app.launch;
    let args: Map<String, Value> = args.as_object().cloned().unwrap_or_default();
    blocking(move || crate::mcp::call(&store, launch, name, &args, &defaults)).await
}

/// `POST /heartbeat/{agent_id}`: `{"metadata"?: {...}}` (scalar values), a beat of that
/// agent. Answers the seed's `{"status": "ok", "agent_id", "timestamp", "next_heartbeat"}`
/// and pas's beat reply (`directive`, `health`, ...) beside it.
async fn heartbeat(
    State(app): State<Arc<App>>,
    Path(agent_id): Path<String>,
    req: SeedRequest,
) -> Reply {
    let metadata = match req.body.get("metadata") {
        None | Some(Value::Null) => json!({}),
        Some(m @ Value::Object(_)) => m.clone(),
        Some(other) => {
            return Err(
                Error::usage(format!("\"metadata\" must be an object, not {other}"))
                    .hint("send {\"metadata\": {\"status\": \"active\"}}")
                    .into(),
            )
        }
    };
    let args = json!({ "agent": agent_id, "meta": metadata });
    let Value::Object(mut reply) = tool(&app, &req, "beat", args).await? else {
        return Err(Error::failure("the beat gave no reply").into());
    };
    app.seed.count_beat();
    let next = reply.get("next_beat_in").cloned().unwrap_or(Value::Null);
    reply.insert("status".into(), json!("ok"));
    reply.insert("agent_id".into(), json!(agent_id));
    reply.insert("timestamp".into(), json!(epoch_seconds()));
    reply.insert("next_heartbeat".into(), next);
    ok(Value::Object(reply))
}

/// `GET /agent/{agent_id}`: the seed's health record of the agent (the MCP tool
/// `get_agent_health`); 404 with the CLI's message for an agent the cell does not have.
async fn agent(
    State(app): State<Arc<App>>,
    Path(agent_id): Path<String>,
    req: SeedRequest,
) -> Reply {
    ok(tool(
        &app,
        &req,
        "get_agent_health",
        json!({ "agent_id": agent_id }),
    )
    .await?)
}

/// Now as the seed writes times: seconds since the epoch, with fractions.
pub fn epoch_seconds() -> f64 {
    let now = crate::clock::now();
    now.timestamp() as f64 + f64::from(now.timestamp_subsec_micros()) / 1e6
}

/// `GET /health`, open to all: one answer for both seeds. pas's `{"status": "ok"|"degraded",
/// "service": "pas", "version", "cells", "uptime_s"}` (the server answers and can read its
/// root), and seed 001's `{"timestamp", "total_agents", "healthy", "degraded",
/// "unhealthy"}` for the request's cell (as the seed endpoints choose it; none: zeros),
/// with its `"agents": {id: record}` for loopback peers only (others may not read the
/// fleet without the token).
async fn health(State(app): State<Arc<App>>, req: axum::extract::Request) -> Reply {
    let store = app.store();
    let cells = blocking(move || crate::store::Store::cell_ids(&store).map(|c| c.len())).await;
    let (status, cells) = match cells {
        Ok(n) => ("ok", json!(n)),
        Err(_) => ("degraded", Value::Null),
    };
    let loopback = req
        .extensions()
        .get::<super::reply::Peer>()
        .is_some_and(|p| p.0.ip().is_loopback());
    let app2 = Arc::clone(&app);
    let headers = req.headers().clone();
    let store = app.store();
    let launch = app.launch;
    // The cell's agents, each as the seed's record; no cell to choose is no agents.
    let agents = blocking(move || {
        let Ok(cell) = super::reply::cell_of(&app2, &headers) else {
            return Ok((Value::Null, Vec::new()));
        };
        let list = crate::cli::run_captured(store, None, launch, &["agent", "list", &cell])?;
        let records = match list {
            Value::Array(items) => items.iter().map(crate::mcp::tools::health_view).collect(),
            _ => Vec::new(),
        };
        Ok((json!(cell), records))
    })
    .await
    .unwrap_or((Value::Null, Vec::new()));
    let (cell, records) = agents;
    let count = |word: &str| records.iter().filter(|r| r["status"] == word).count();
    let mut answer = json!({
        "status": status,
        "service": "pas",
        "version": env!("CARGO_PKG_VERSION"),
        "cells": cells,
        "uptime_s": app.started.elapsed().as_secs(),
        "timestamp": epoch_seconds(),
        "cell": cell,
        "total_agents": records.len(),
        "healthy": count("healthy"),
        "degraded": count("degraded"),
        "unhealthy": count("unhealthy"),
    });
    if loopback {
        let by_id: Map<String, Value> = records
            .into_iter()
            .map(|r| (r["agent_id"].as_str().unwrap_or_default().to_string(), r))
            .collect();
        answer["agents"] = Value::Object(by_id);
    }
    ok(answer)
}
