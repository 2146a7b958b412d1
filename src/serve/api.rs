//! The dashboard's API (a stable contract; docs/http.md): the fleet as `pas status --all
//! --json` prints it, and the controls, each the CLI command itself run in-process with
//! its checks, permissions, events and `--json` result.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use super::reply::{self, acting, blocking, ok, ApiError, Reply};
use super::App;
use crate::error::Error;
use crate::store::{check_id, IdKind};

/// The routes of this file.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/status", get(status))
        .route("/api/cells/{cell}/agents/{agent}/{action}", post(control))
        .route("/api/cells/{cell}/requests", get(requests))
        .route("/api/cells/{cell}/requests/{id}/{decision}", post(decide))
}

/// Runs `pas --json ARGS` in-process as `as_agent` and returns its JSON result.
pub async fn run_cli(
    app: &Arc<App>,
    as_agent: Option<String>,
    args: Vec<String>,
) -> Result<Value, ApiError> {
    let store = app.store();
    let launch = app.launch;
    blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let result = crate::cli::run_captured(store, as_agent, launch, &args);
        // Supervisors a start, restart or revival forked are this process's children.
        crate::process::reap_children();
        result
    })
    .await
}

/// Runs `pas --json ARGS` in-process as `as_agent` and answers with its result.
pub async fn cli(app: &Arc<App>, as_agent: Option<String>, args: Vec<String>) -> Reply {
    ok(run_cli(app, as_agent, args).await?)
}

/// `GET /api/status`: `pas status --all --json`, its text passed on as it was printed
/// (the CLI writes it cell by cell; not parsing it again keeps a big fleet's answer at
/// the size of its text).
async fn status(State(app): State<Arc<App>>, headers: HeaderMap) -> Reply {
    let as_agent = acting(&headers)?;
    let store = app.store();
    let launch = app.launch;
    let text = blocking(move || {
        crate::cli::run_in_process(store, as_agent, launch, &["status", "--all"], true)
    })
    .await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response())
}

/// Checks the ids of a path before anything is built from them.
fn ids(cell: &str, agent: Option<&str>) -> Result<(), ApiError> {
    check_id(IdKind::Cell, cell)?;
    if let Some(agent) = agent {
        check_id(IdKind::Agent, agent)?;
    }
    Ok(())
}

/// `POST /api/cells/{cell}/agents/{agent}/{pause|resume|revive|stop|restart}`.
async fn control(
    State(app): State<Arc<App>>,
    Path((cell, agent, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    ids(&cell, Some(&agent))?;
    let body = reply::body_object(body)?;
    let as_agent = acting(&headers)?;
    let grace = match body.get("grace") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => {
            return Err(Error::usage("\"grace\" must be a number of seconds").into());
        }
    };
    let mut args: Vec<String> = match action.as_str() {
        "pause" | "resume" => {
            let to = if action == "pause" {
                "paused"
            } else {
                "active"
            };
            vec!["agent", "set", &cell, &agent, "--status", to]
                .into_iter()
                .map(String::from)
                .collect()
        }
        "stop" | "restart" => vec!["agent".into(), action.clone(), cell.clone(), agent.clone()],
        "revive" => {
            // As `pas top`'s revive: a pending request is approved, else one pass for it.
            let pending = pending_revival(&app, &cell, &agent).await?;
            match pending {
                Some(id) => vec!["revive".into(), "approve".into(), id],
                None => vec![
                    "revive".into(),
                    cell.clone(),
                    "--agent".into(),
                    agent.clone(),
                ],
            }
        }
        other => {
            return Err(Error::not_found(format!("no agent action {other:?}"))
                .hint("the actions are pause, resume, revive, stop and restart")
                .into())
        }
    };
    if let Some(grace) = grace.filter(|_| matches!(action.as_str(), "stop" | "restart")) {
        args.extend(["--grace".into(), grace]);
    }
    cli(&app, as_agent, args).await
}

/// The id of the pending revival request for `agent`, if there is one.
async fn pending_revival(
    app: &Arc<App>,
    cell: &str,
    agent: &str,
) -> Result<Option<String>, ApiError> {
    let list = cell_requests(app, cell).await?;
    Ok(list
        .into_iter()
        .find(|r| r["kind"] == "revive" && r["agent"] == agent)
        .and_then(|r| r["id"].as_str().map(String::from)))
}

/// A cell's pending requests of every kind, each with `"kind"`: revive (auto_revive: ask)
/// and budget (breach_action: ask), as `pas revive requests CELL` and `pas budget requests
/// CELL` list them.
async fn cell_requests(app: &Arc<App>, cell: &str) -> Result<Vec<Value>, ApiError> {
    let mut items = Vec::new();
    for kind in ["revive", "budget"] {
        let args = vec![kind.to_string(), "requests".into(), cell.to_string()];
        let list = run_cli(app, None, args).await?;
        if let Value::Array(list) = list {
            for mut r in list {
                r["kind"] = json!(kind);
                items.push(r);
            }
        }
    }
    Ok(items)
}

/// `GET /api/cells/{cell}/requests`: `{"items": [...]}`.
async fn requests(State(app): State<Arc<App>>, Path(cell): Path<String>) -> Reply {
    ids(&cell, None)?;
    let items = cell_requests(&app, &cell).await?;
    ok(json!({ "items": items }))
}

/// `POST /api/cells/{cell}/requests/{id}/{approve|deny}`: `pas revive approve ID` or
/// `pas budget approve ID` (by the request's kind); only a request of that cell.
async fn decide(
    State(app): State<Arc<App>>,
    Path((cell, id, decision)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Reply {
    ids(&cell, None)?;
    if !matches!(decision.as_str(), "approve" | "deny") {
        return Err(Error::not_found(format!("no decision {decision:?}"))
            .hint("decide with approve or deny")
            .into());
    }
    let as_agent = acting(&headers)?;
    let list = cell_requests(&app, &cell).await?;
    let Some(request) = list.iter().find(|r| r["id"] == id.as_str()) else {
        return Err(
            Error::not_found(format!("no pending request {id:?} in cell {cell}"))
                .hint("GET /api/cells/CELL/requests lists them")
                .into(),
        );
    };
    let kind = request["kind"].as_str().unwrap_or("revive").to_string();
    cli(&app, as_agent, vec![kind, decision, id]).await
}
