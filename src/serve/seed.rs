//! The seed's services over the same cells, through the same operations: Registry,
//! Heartbeat Monitor, Resource Manager, Token Governor and the AINS agent API. Each
//! request works on one cell (see [`reply::cell_of`]); docs/http.md gives the mapping.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde_json::{json, Map, Value};

use super::api::{cli, run_cli};
use super::reply::{acting, blocking, cell_of, ok, ApiError, Reply, SeedRequest};
use super::App;
use crate::clock;
use crate::error::{Error, Kind};
use crate::ops::{budget, registry};
use crate::store::{check_id, events, IdKind, LogFile, Store};

/// The monitor's pass interval when no registered service asks for a shorter one (the
/// seed monitor's `CHECK_INTERVAL_S`).
const CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// The event kinds `GET /alerts` shows: a service's liveness changing, and its removal.
const ALERT_KINDS: [&str; 9] = [
    "agent.late",
    "agent.down",
    "agent.dead",
    "agent.recovered",
    "agent.healthy",
    "agent.degraded",
    "agent.offline",
    "agent.removed",
    "agent.alive",
];

/// What the seed's services keep between requests (everything else is in the cells).
#[derive(Default)]
pub struct State {
    requests: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    beats: AtomicU64,
    checks: AtomicU64,
    deregistered: AtomicU64,
    last_check: Mutex<Option<String>>,
    check_interval_ms: AtomicU64,
    /// Wakes the monitor when a service registers (its interval may be shorter).
    registered: tokio::sync::Notify,
}

impl State {
    /// Counts a beat received (`pas_serve_beats_total`).
    pub fn count_beat(&self) {
        self.beats.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request by its answer's status.
    pub fn count_request(&self, status: u16) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match status {
            400..=499 => self.client_errors.fetch_add(1, Ordering::Relaxed),
            500..=599 => self.server_errors.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }
}

/// The routes of this file.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        // Registry
        .route("/register", post(register))
        .route("/heartbeat", put(heartbeat))
        .route("/discover", get(discover))
        .route("/promote", post(promote))
        .route("/deregister", post(deregister))
        .route("/services", get(services))
        .route("/services/{id}", get(one_service))
        // Heartbeat Monitor
        .route("/stats", get(stats))
        .route("/alerts", get(alerts))
        // Resource Manager
        .route("/reserve", post(reserve))
        .route("/release", post(release))
        .route("/kill", post(kill))
        .route("/quotas", get(quotas))
        .route("/quotas/update", post(update_quotas))
        .route("/reservations", get(reservations))
        // Token Governor
        .route("/track", post(track))
        .route("/status", get(token_status))
        .route("/summarize", post(summarize))
        .route("/summaries", get(summaries))
        .route("/clear", post(clear))
        // AINS
        .route("/ains/agents", post(ains_register).get(ains_agents))
        .route("/ains/agents/{id}", get(ains_agent))
        .route("/ains/agents/{id}/capabilities", post(ains_capability))
        .route("/ains/agents/{id}/heartbeat", post(ains_heartbeat))
        .route("/ains/agents/{id}/tasks", get(ains_poll).post(ains_poll))
        .route("/ains/tasks", post(ains_add_task))
        .route("/ains/tasks/{task}/{end}", post(ains_task_end))
        // Prometheus
        .route("/metrics", get(metrics))
}

/// The request's cell, resolved off the async threads.
async fn cell(app: &Arc<App>, headers: &HeaderMap) -> Result<String, ApiError> {
    let app2 = Arc::clone(app);
    let headers = headers.clone();
    blocking(move || cell_of(&app2, &headers)).await
}

/// A required string field of a body.
fn field(body: &Map<String, Value>, key: &str) -> Result<String, ApiError> {
    match body.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        None | Some(Value::Null) => Err(Error::usage(format!("the request needs \"{key}\""))
            .hint("docs/http.md shows each body")
            .into()),
        Some(other) => Err(Error::usage(format!("\"{key}\" must be a string, not {other}")).into()),
    }
}

/// A required id field of a body, checked as the CLI checks ids.
fn id_field(body: &Map<String, Value>, key: &str, kind: IdKind) -> Result<String, ApiError> {
    let id = field(body, key)?;
    check_id(kind, &id)?;
    Ok(id)
}

/// A `{"items": [...]}` answer from a list.
fn items(list: Value) -> Reply {
    let list = match list {
        Value::Array(l) => l,
        Value::Null => Vec::new(),
        other => vec![other],
    };
    ok(json!({ "items": list }))
}

// ---------------------------------------------------------------- Registry

/// `GET /` for JSON clients: what this server is and what it serves.
pub async fn service_info(app: &Arc<App>, headers: &HeaderMap) -> Response {
    let chosen = cell(app, headers).await.ok();
    let store = app.store();
    let cell_id = chosen.clone();
    let count = blocking(move || match cell_id {
        Some(c) => registry::services(&store, &c, clock::now()).map(|s| s.len()),
        None => Ok(0),
    })
    .await
    .unwrap_or(0);
    axum::Json(json!({
        "service": "pas",
        "version": env!("CARGO_PKG_VERSION"),
        "cell": chosen,
        "services": count,
        "endpoints": {
            "registry": ["/register", "/heartbeat", "/discover", "/promote", "/deregister", "/services"],
            "heartbeat_monitor": ["/stats", "/alerts"],
            "resource_manager": ["/reserve", "/release", "/kill", "/quotas", "/quotas/update", "/reservations"],
            "token_governor": ["/track", "/status", "/summarize", "/summaries", "/clear"],
            "ains": ["/ains/agents", "/ains/tasks"],
            "dashboard": ["/", "/api/status", "/events"],
        },
        "docs": "/docs",
        "openapi": "/openapi.json",
    }))
    .into_response()
}

/// `POST /register`.
async fn register(AxState(app): AxState<Arc<App>>, req: SeedRequest) -> Reply {
    let SeedRequest {
        body,
        cell,
        headers: _,
    } = req;
    let reg = registry::rules::registration(&body)?;
    let store = app.store();
    let (id, view) = blocking(move || {
        let now = clock::now();
        let (id, _) = registry::register(&store, &cell, &reg, now)?;
        let view = registry::service(&store, &cell, &id, now)?;
        Ok((id, view))
    })
    .await?;
    app.seed.registered.notify_one();
    ok(json!({ "service_id": id, "status": "registered", "service": view }))
}

/// `PUT /heartbeat`: `{"service_id": ..., "status"?: ..., ...}`.
async fn heartbeat(AxState(app): AxState<Arc<App>>, req: SeedRequest) -> Reply {
    let SeedRequest {
        body,
        cell,
        headers,
    } = req;
    let id = id_field(&body, "service_id", IdKind::Agent)?;
    let report = registry::beat_report(&body)?;
    may_act_for(&app, &headers, &cell, &id).await?;
    let store = app.store();
    let beat_id = id.clone();
    let reply =
        blocking(move || registry::beat(&store, &cell, &beat_id, &report, clock::now())).await?;
    app.seed.beats.fetch_add(1, Ordering::Relaxed);
    let mut answer = serde_json::to_value(&reply).unwrap_or_default();
    answer["service_id"] = json!(id);
    answer["status"] = json!(registry::rules::seed_status(reply.health));
    ok(answer)
}

/// An acting agent (`X-Pas-As`) may beat only for itself unless permissions.json says more.
async fn may_act_for(
    app: &Arc<App>,
    headers: &HeaderMap,
    cell: &str,
    agent: &str,
) -> Result<(), ApiError> {
    let Some(actor) = acting(headers)? else {
        return Ok(());
    };
    let store = app.store();
    let (cell, agent) = (cell.to_string(), agent.to_string());
    blocking(move || {
        crate::ops::permissions::Permissions::load(&store, &cell)?.check_agent(Some(&actor), &agent)
    })
    .await
}

/// Every service of `cell`.
async fn all_services(app: &Arc<App>, cell: String) -> Result<Vec<Value>, ApiError> {
    let store = app.store();
    blocking(move || registry::services(&store, &cell, clock::now())).await
}

/// `GET /discover?type=&role=&cap=&name=&status=`.
async fn discover(
    AxState(app): AxState<Arc<App>>,
    Query(query): Query<BTreeMap<String, String>>,
    SeedRequest { cell, .. }: SeedRequest,
) -> Reply {
    const FILTERS: [&str; 5] = ["type", "role", "cap", "name", "status"];
    if let Some(unknown) = query.keys().find(|k| !FILTERS.contains(&k.as_str())) {
        return Err(Error::usage(format!("/discover has no filter {unknown:?}"))
            .hint("filter by type, role, cap, name or status")
            .into());
    }
    let list = all_services(&app, cell).await?;
    let kept: Vec<Value> = list
        .into_iter()
        .filter(|s| {
            query.iter().all(|(k, want)| match k.as_str() {
                "cap" => s["caps"]
                    .as_array()
                    .is_some_and(|caps| caps.iter().any(|c| c == want.as_str())),
                other => s[other] == want.as_str(),
            })
        })
        .collect();
    ok(json!({ "items": kept }))
}

/// `GET /services`.
async fn services(AxState(app): AxState<Arc<App>>, req: SeedRequest) -> Reply {
    ok(json!({ "items": all_services(&app, req.cell).await? }))
}

/// `GET /services/{id}`.
async fn one_service(
    AxState(app): AxState<Arc<App>>,
    Path(id): Path<String>,
    SeedRequest { cell, .. }: SeedRequest,
) -> Reply {
    check_id(IdKind::Agent, &id)?;
    let store = app.store();
    ok(blocking(move || registry::service(&store, &cell, &id, clock::now())).await?)
}

/// `POST /promote`: `{"service_id": ..., "role": ...}`.
async fn promote(AxState(app): AxState<Arc<App>>, req: SeedRequest) -> Reply {
    let SeedRequest {
        body,
        cell,
        headers: _,
    } = req;
    let id = id_field(&body, "service_id", IdKind::Agent)?;
    let role = field(&body, "role")?;
    let store = app.store();
    ok(blocking(move || {
        let now = clock::now();
        registry::promote(&store, &cell, &id, &role, now)?;
        registry::service(&store, &cell, &id, now)
    })
    .await?)
}

/// `POST /deregister`: `{"service_id": ...}`, as `pas agent rm CELL ID --force`.
async fn deregister(AxState(app): AxState<Arc<App>>, req: SeedRequest) -> Reply {
    let SeedRequest {
        body,
        cell,
        headers,
    } = req;
    let id = id_field(&body, "service_id", IdKind::Agent)?;
    let args = vec![
        "agent".into(),
        "rm".into(),
        cell,
        id.clone(),
        "--force".into(),
    ];
    let removed = run_cli(&app, acting(&headers)?, args).await?;
    ok(json!({ "service_id": id, "status": "deregistered", "removed": removed }))
}

// ---------------------------------------------------------------- Heartbeat Monitor

/// The seed monitor's loop: every check interval (the shortest a registered service asks
/// for, at most 30 s), one [`registry::sweep`] over every cell.
pub async fn monitor(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut pause = CHECK_INTERVAL;
    loop {
        app.seed
            .check_interval_ms
            .store(pause.as_millis() as u64, Ordering::Relaxed);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = app.seed.registered.notified() => {}
            _ = stop.changed() => return,
        }
        let store = app.store();
        let swept = blocking(move || {
            let now = clock::now();
            let mut gone = 0;
            let mut shortest: Option<f64> = None;
            for cell in store.cell_ids()? {
                // One cell that cannot be read does not stop the others.
                if let Ok((g, s)) = registry::sweep(&store, &cell, now) {
                    gone += g.len();
                    if let Some(s) = s {
                        shortest = Some(shortest.map_or(s, |m| m.min(s)));
                    }
                }
            }
            Ok((gone, shortest))
        })
        .await;
        app.seed.checks.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = app.seed.last_check.lock() {
            *last = Some(clock::stamp(clock::now()));
        }
        if let Ok((gone, shortest)) = swept {
            app.seed
                .deregistered
                .fetch_add(gone as u64, Ordering::Relaxed);
            // Half the shortest interval, so a miss is seen within half an interval.
            pause = shortest
                .map(|s| Duration::from_secs_f64((s / 2.0).clamp(0.25, 30.0)))
                .unwrap_or(CHECK_INTERVAL);
        }
    }
}

/// `GET /stats`.
async fn stats(AxState(app): AxState<Arc<App>>, req: SeedRequest) -> Reply {
    let list = all_services(&app, req.cell).await?;
    let count = |word: &str| list.iter().filter(|s| s["status"] == word).count();
    let last = app.seed.last_check.lock().ok().and_then(|l| l.clone());
    ok(json!({
        "services_total": list.len(),
        "ok": count("ok"),
        "degraded": count("degraded"),
        "down": count("down"),
        "checks": app.seed.checks.load(Ordering::Relaxed),
        "deregistered": app.seed.deregistered.load(Ordering::Relaxed),
        "check_interval_s": app.seed.check_interval_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        "last_check_ts": last,
        "max_misses_before_down": registry::rules::MISSES_DOWN,
        "max_misses_before_deregister": registry::rules::MISSES_DEREGISTER,
    }))
}

/// `GET /alerts[?limit=N]`: the cell's liveness events, one JSON object a line, newest last.
async fn alerts(
    AxState(app): AxState<Arc<App>>,
    Query(query): Query<BTreeMap<String, String>>,
    SeedRequest { cell, .. }: SeedRequest,
) -> Reply {
    let limit = match query.get("limit") {
        None => 100,
        Some(n) => n
            .parse::<usize>()
            .map_err(|_| Error::usage(format!("limit {n:?} is not a whole number")))?,
    };
    let store = app.store();
    let lines = blocking(move || {
        let bytes = store.read_log(&cell, LogFile::Events, 0)?;
        let mut alerts: Vec<String> = events::parse_all(&bytes)
            .into_iter()
            .filter(|e| ALERT_KINDS.contains(&e.kind.as_str()))
            .map(|e| {
                json!({
                    "ts": e.time,
                    "service_id": e.agent,
                    "alert": e.kind.trim_start_matches("agent."),
                    "level": e.level.as_str(),
                    "message": e.message,
                    "cell": cell,
                })
                .to_string()
            })
            .collect();
        alerts.drain(..alerts.len().saturating_sub(limit));
        Ok(alerts)
    })
    .await?;
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], text).into_response())
}

// ---------------------------------------------------------------- Resource Manager

/// A number field of a body, as text for a CLI flag (`None` when absent).
fn amount(body: &Map<String, Value>, key: &str) -> Result<Option<f64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(n) if n >= 0.0 && n.is_finite() => Ok(Some(n)),
            _ => Err(
                Error::usage(format!("\"{key}\" must be a non-negative number, not {v}")).into(),
            ),
        },
    }
}

/// The CLI flags for the seed's resource fields: cpu, mem_mb, gpu, gpu_mem_mb.
fn resource_flags(body: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let mut flags = Vec::new();
    for (key, flag, unit) in [
        ("cpu", "--cpu", ""),
        ("mem_mb", "--mem", "MiB"),
        ("gpu", "--gpu", ""),
        ("gpu_mem_mb", "--gpu-mem", "MiB"),
    ] {
        if let Some(n) = amount(body, key)? {
            flags.push(format!("{flag}={n}{unit}"));
        }
    }
    Ok(flags)
}

/// `POST /reserve`: `{"job_id", "agent", "cpu", "mem_mb", "gpu", "gpu_mem_mb", "port"?}`,
/// as `pas reserve`; over quota is 409 with the shortfall.
async fn reserve(AxState(app): AxState<Arc<App>>, req: SeedRequest) -> Reply {
    let SeedRequest {
        body,
        cell,
        headers,
    } = req;
    let job = field(&body, "job_id")?;
    let agent = id_field(&body, "agent", IdKind::Agent)?;
    let mut args = vec![
        "reserve".to_string(),
        cell,
        format!("--job={job}"),
        format!("--agent={agent}"),
    ];
    args.extend(resource_flags(&body)?);
    if let Some(port) = amount(&body, "port")? {
        args.push(format!("--port={port}"));
    }
    cli(&app, acting(&headers)?, args).await
}

/// `POST /release` and `POST /kill`: `{"job_id"}`, as `pas release|kill CELL JOB`.
async fn job_command(app: Arc<App>, command: &str, req: SeedRequest) -> Reply {
    let job = field(&req.body, "job_id")?;
    check_id(IdKind::Task, &job).map_err(|_| {
        Error::usage(format!("job_id {job:?} is not an id"))
            .hint("ids are 1-128 characters of [A-Za-z0-9._-], not starting with '-' or '.'")
    })?;
    cli(
        &app,
        acting(&req.headers)?,
        vec![command.into(), req.cell, job],
    )
    .await
}

async fn release(AxState(app): AxState<Arc<App>>, req: SeedRequest) -> Reply {
    job_command(app, "release", req).await
}

async fn kill(AxState(app): AxState<Arc<App>>, req: SeedRequest) -> Reply {
    job_command(app, "kill", req).await
}

/// `GET /quotas`: `pas quota CELL` as `{"items": [...]}`.
async fn quotas(AxState(app): AxState<Arc<App>>, SeedRequest { cell, .. }: SeedRequest) -> Reply {
    items(run_cli(&app, None, vec!["quota".into(), cell]).await?)
}

/// `POST /quotas/update`: `{"cpu", "mem_mb", "gpu", "gpu_mem_mb"}` or `{"resource",
/// "capacity"}`, as `pas quota set`.
async fn update_quotas(AxState(app): AxState<Arc<App>>, req: SeedRequest) -> Reply {
    let SeedRequest {
        mut body,
        cell,
        headers,
    } = req;
    if let (Some(resource), Some(capacity)) =
        (body.get("resource").cloned(), body.get("capacity").cloned())
    {
        let key = resource.as_str().unwrap_or_default().to_string();
        if !matches!(key.as_str(), "cpu" | "mem_mb" | "gpu" | "gpu_mem_mb") {
            return Err(Error::usage(format!("no resource {resource}"))
                .hint("resources are cpu, mem_mb, gpu and gpu_mem_mb")
                .into());
        }
        body.insert(key, capacity);
    }
    let flags = resource_flags(&body)?;
    if flags.is_empty() {
        return Err(Error::usage("the request changes no quota")
            .hint("send {\"cpu\": 8} (or mem_mb, gpu, gpu_mem_mb), or {\"resource\": \"cpu\", \"capacity\": 8}")
            .into());
    }
    let mut args = vec!["quota".to_string(), "set".into(), cell];
    args.extend(flags);
    cli(&app, acting(&headers)?, args).await
}

/// `GET /reservations[?status=]`: `pas reservations CELL [--status S]`.
async fn reservations(
    AxState(app): AxState<Arc<App>>,
    Query(query): Query<BTreeMap<String, String>>,
    SeedRequest { cell, .. }: SeedRequest,
) -> Reply {
    let mut args = vec!["reservations".to_string(), cell];
    if let Some(status) = query.get("status") {
        args.push(format!("--status={status}"));
    }
    items(run_cli(&app, None, args).await?)
}

// ---------------------------------------------------------------- Token Governor

/// The budget line of `agent` (or of every agent) as the Token Governor shows it.
async fn context_lines(
    app: &Arc<App>,
    cell: &str,
    agent: Option<&str>,
) -> Result<Vec<Value>, ApiError> {
    let budget = run_cli(app, None, vec!["budget".into(), cell.to_string()]).await?;
    let lines = budget["cells"][0]["agents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok(lines
        .into_iter()
        .filter(|l| agent.is_none_or(|a| l["agent"] == a))
        .map(|l| {
            json!({
                "agent": l["agent"],
                "ctx_used": l["ctx_used"],
                "ctx_limit": l["ctx_limit"],
                "ratio": l["ctx_ratio"],
                "status": l["ctx_state"],
                "compactions_last_hour": l["compactions_last_hour"],
            })
        })
        .collect())
}

/// `POST /track`: `{"agent", "run_id"?, "ctx_used", "ctx_limit"}`, as `pas budget track`;
/// answers with the agent's context state (ok, warning, breach).
async fn track(AxState(app): AxState<Arc<App>>, req: SeedRequest) -> Reply {
    let SeedRequest {
        body,
        cell,
        headers,
    } = req;
    let agent = id_field(&body, "agent", IdKind::Agent)?;
    let mut args = vec![
        "budget".to_string(),
        "track".into(),
        cell.clone(),
        agent.clone(),
    ];
    for (key, flag) in [("ctx_used", "--used"), ("ctx_limit", "--limit")] {
        match body.get(key) {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_u64() {
                Some(n) => args.push(format!("{flag}={n}")),
                None => {
                    return Err(
                        Error::usage(format!("\"{key}\" must be a whole number, not {v}")).into(),
                    )
                }
            },
        }
    }
    let tracked = run_cli(&app, acting(&headers)?, args).await?;
    let mut answer = context_lines(&app, &cell, Some(&agent))
        .await?
        .pop()
        .unwrap_or(Value::Null);
    answer["run_id"] = body.get("run_id").cloned().unwrap_or(Value::Null);
    answer["compaction"] = tracked["compaction"].clone();
    answer["spend_state"] = tracked["spend_state"].clone();
    ok(answer)
}

/// `GET /status[?agent=]`.
async fn token_status(
    AxState(app): AxState<Arc<App>>,
    Query(query): Query<BTreeMap<String, String>>,
    SeedRequest { cell, .. }: SeedRequest,
) -> Reply {
    let agent = query.get("agent").cloned();
    if let Some(a) = &agent {
        check_id(IdKind::Agent, a)?;
    }
    let mut lines = context_lines(&app, &cell, agent.as_deref()).await?;
    match agent {
        Some(a) => lines.pop().map_or_else(
            || Err(Error::not_found(format!("no agent {a} in cell {cell}")).into()),
            ok,
        ),
        None => ok(json!({ "items": lines })),
    }
}

/// `POST /summarize`: `{"agent", "run_id"?, "trigger_reason"?}`: Save-State → Clear →
/// Resume now (a checkpoint, a summary, a `summarize` directive on the next beat).
async fn summarize(AxState(app): AxState<Arc<App>>, req: SeedRequest) -> Reply {
    let SeedRequest {
        body,
        cell,
        headers,
    } = req;
    let agent = id_field(&body, "agent", IdKind::Agent)?;
    if acting(&headers)?.is_some() {
        return Err(Error::new(
            Kind::Denied,
            format!("only an operator may summarize agent {agent}"),
        )
        .hint("send the request without X-Pas-As")
        .into());
    }
    let trigger = match body.get("trigger_reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if t.len() <= 200 && !t.chars().any(char::is_control) => {
            Some(t.clone())
        }
        Some(_) => {
            return Err(Error::usage(
                "trigger_reason must be a string of at most 200 printable characters",
            )
            .hint("for example \"hard_max_breach\"")
            .into())
        }
    };
    let store = app.store();
    let who = agent.clone();
    let done = blocking(move || {
        budget::compact_now(&store, &cell, &who, trigger.as_deref(), clock::now())
    })
    .await?;
    ok(json!({
        "agent": agent,
        "run_id": body.get("run_id"),
        "trigger_reason": body.get("trigger_reason"),
        "status": "summarized",
        "summary": done.summary,
        "checkpoint_generation": done.generation,
        "ctx_used_before": done.ctx_used_before,
    }))
}

/// `GET /summaries[?agent=]`: `pas budget history CELL [AGENT]`.
async fn summaries(
    AxState(app): AxState<Arc<App>>,
    Query(query): Query<BTreeMap<String, String>>,
    SeedRequest { cell, .. }: SeedRequest,
) -> Reply {
    let mut args = vec!["budget".to_string(), "history".into(), cell];
    if let Some(a) = query.get("agent") {
        check_id(IdKind::Agent, a)?;
        args.push(a.clone());
    }
    items(run_cli(&app, None, args).await?)
}

/// `POST /clear`: `{"agent"}`: the agent's context use set to 0 (`pas budget track --used 0`).
async fn clear(AxState(app): AxState<Arc<App>>, req: SeedRequest) -> Reply {
    let SeedRequest {
        body,
        cell,
        headers,
    } = req;
    let agent = id_field(&body, "agent", IdKind::Agent)?;
    let args = vec![
        "budget".into(),
        "track".into(),
        cell.clone(),
        agent.clone(),
        "--used=0".into(),
    ];
    run_cli(&app, acting(&headers)?, args).await?;
    let line = context_lines(&app, &cell, Some(&agent))
        .await?
        .pop()
        .unwrap_or(Value::Null);
    ok(json!({ "agent": agent, "cleared": true, "context": line }))
}

// ---------------------------------------------------------------- AINS

/// `POST /ains/agents`: `{"agent_id"?, "display_name"|"name", "capabilities"?, ...}`.
async fn ains_register(AxState(app): AxState<Arc<App>>, req: SeedRequest) -> Reply {
    let SeedRequest {
        body,
        cell,
        headers: _,
    } = req;
    let mut seed = Map::new();
    let name = body
        .get("display_name")
        .or_else(|| body.get("name"))
        .cloned()
        .unwrap_or(Value::Null);
    seed.insert("name".into(), name);
    seed.insert("type".into(), json!("agent"));
    for (from, to) in [
        ("agent_id", "service_id"),
        ("endpoint", "url"),
        ("url", "url"),
        ("labels", "labels"),
        ("heartbeat_interval_s", "heartbeat_interval_s"),
        ("ttl_s", "ttl_s"),
    ] {
        if let Some(v) = body.get(from) {
            seed.insert(to.into(), v.clone());
        }
    }
    if let Some(Value::Array(caps)) = body.get("capabilities") {
        let names: Vec<Value> = caps
            .iter()
            .filter_map(|c| {
                c.as_str()
                    .or_else(|| c.get("name")?.as_str())
                    .map(Value::from)
            })
            .collect();
        seed.insert("caps".into(), Value::Array(names));
    }
    let reg = registry::rules::registration(&seed)?;
    let store = app.store();
    let (id, view) = blocking(move || {
        let now = clock::now();
        let (id, _) = registry::register(&store, &cell, &reg, now)?;
        Ok((id.clone(), registry::service(&store, &cell, &id, now)?))
    })
    .await?;
    app.seed.registered.notify_one();
    ok(
        json!({ "agent_id": id, "status": "AVAILABLE", "display_name": view["name"], "service": view }),
    )
}

/// `GET /ains/agents`.
async fn ains_agents(AxState(app): AxState<Arc<App>>, req: SeedRequest) -> Reply {
    ok(json!({ "items": all_services(&app, req.cell).await? }))
}

/// `GET /ains/agents/{id}`.
async fn ains_agent(app: AxState<Arc<App>>, id: Path<String>, req: SeedRequest) -> Reply {
    one_service(app, id, req).await
}

/// `POST /ains/agents/{id}/capabilities`: `{"name", "description"?, "input_schema"?,
/// "output_schema"?, "pricing_model"?, ...}`.
async fn ains_capability(
    AxState(app): AxState<Arc<App>>,
    Path(id): Path<String>,
    req: SeedRequest,
) -> Reply {
    check_id(IdKind::Agent, &id)?;
    let SeedRequest {
        body,
        cell,
        headers,
    } = req;
    may_act_for(&app, &headers, &cell, &id).await?;
    let store = app.store();
    let agent = id.clone();
    let declared = body.clone();
    blocking(move || registry::add_capability(&store, &cell, &agent, &declared, clock::now()))
        .await?;
    ok(json!({ "agent_id": id, "capability": body, "status": "registered" }))
}

/// `POST /ains/agents/{id}/heartbeat`: `{"timestamp", "status": ACTIVE|DEGRADED|OFFLINE,
/// "uptime_ms", "metrics"?}`.
async fn ains_heartbeat(
    AxState(app): AxState<Arc<App>>,
    Path(id): Path<String>,
    req: SeedRequest,
) -> Reply {
    check_id(IdKind::Agent, &id)?;
    let SeedRequest {
        body,
        cell,
        headers,
    } = req;
    for key in ["timestamp", "status", "uptime_ms"] {
        if !body.contains_key(key) {
            return Err(Error::usage(format!("an AINS heartbeat needs \"{key}\""))
                .hint("send {\"timestamp\": <unix seconds>, \"status\": \"ACTIVE\", \"uptime_ms\": <ms>}")
                .into());
        }
    }
    let status = body
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !matches!(status.as_str(), "ACTIVE" | "DEGRADED" | "OFFLINE") {
        return Err(Error::usage(format!(
            "heartbeat status {status:?} is not ACTIVE, DEGRADED or OFFLINE"
        ))
        .into());
    }
    let report = registry::beat_report(&body)?;
    may_act_for(&app, &headers, &cell, &id).await?;
    let store = app.store();
    let agent = id.clone();
    let now = clock::now();
    let reply = blocking(move || registry::beat(&store, &cell, &agent, &report, now)).await?;
    app.seed.beats.fetch_add(1, Ordering::Relaxed);
    ok(json!({
        "acknowledged": reply.ack,
        "next_heartbeat_in": reply.next_beat_in,
        "agent_health_status": status,
        "agent_status": reply.health.as_str(),
        "last_heartbeat": clock::stamp(now),
        "directive": reply.directive,
        "reason": reply.reason,
    }))
}

/// `GET /ains/agents/{id}/tasks`: the agent claims its next ready task, as `pas task claim
/// CELL --agent ID`; `{"tasks": [task]}`, or `{"tasks": []}` when none is ready.
async fn ains_poll(
    AxState(app): AxState<Arc<App>>,
    Path(id): Path<String>,
    SeedRequest { cell, headers, .. }: SeedRequest,
) -> Reply {
    check_id(IdKind::Agent, &id)?;
    let args = vec!["task".into(), "claim".into(), cell, format!("--agent={id}")];
    // Polling claims work, so it acts as the agent: permissions apply as to `--as ID`.
    let as_agent = acting(&headers)?.or(Some(id));
    match run_cli(&app, as_agent, args).await {
        Ok(task) => ok(json!({ "tasks": [task] })),
        Err(e) if e.kind() == Kind::Empty => ok(json!({ "tasks": [] })),
        Err(e) => Err(e),
    }
}

/// `POST /ains/tasks`: `{"task_id", "title", "description"?, "priority"?, "assign"?}`, as
/// `pas task add`.
async fn ains_add_task(AxState(app): AxState<Arc<App>>, req: SeedRequest) -> Reply {
    let SeedRequest {
        body,
        cell,
        headers,
    } = req;
    let task = id_field(&body, "task_id", IdKind::Task)?;
    let title = field(&body, "title")?;
    let mut args = vec![
        "task".to_string(),
        "add".into(),
        cell,
        task,
        format!("--title={title}"),
    ];
    for (key, flag) in [
        ("description", "--description"),
        ("priority", "--priority"),
        ("assign", "--assign"),
    ] {
        if let Some(v) = body.get(key).and_then(Value::as_str) {
            args.push(format!("{flag}={v}"));
        }
    }
    cli(&app, acting(&headers)?, args).await
}

/// `POST /ains/tasks/{task}/complete` (`{"agent_id"}`, as `pas task done CELL TASK --as
/// AGENT`) and `POST /ains/tasks/{task}/fail` (`{"agent_id", "reason"}`, as `pas task fail`).
async fn ains_task_end(
    AxState(app): AxState<Arc<App>>,
    Path((task, end)): Path<(String, String)>,
    req: SeedRequest,
) -> Reply {
    let SeedRequest {
        body,
        cell,
        headers,
    } = req;
    let (app, headers) = (&app, &headers);
    let how = match end.as_str() {
        "complete" => "done",
        "fail" => "fail",
        other => {
            return Err(Error::not_found(format!("no task ending {other:?}"))
                .hint("end a task with complete or fail")
                .into())
        }
    };
    check_id(IdKind::Task, &task)?;
    let agent = id_field(&body, "agent_id", IdKind::Agent)?;
    let mut args = vec!["task".to_string(), how.into(), cell, task];
    if how == "fail" {
        let reason = body
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("reported failed over AINS");
        args.push(format!("--reason={reason}"));
    }
    cli(app, acting(headers)?.or(Some(agent)), args).await
}

// ---------------------------------------------------------------- Prometheus

/// `GET /metrics`: `pas metrics` (agents, tasks, events) and the server's own counters.
async fn metrics(AxState(app): AxState<Arc<App>>) -> Reply {
    let store = app.store();
    let launch = app.launch;
    let fleet =
        blocking(move || crate::cli::run_captured_text(store, launch, &["metrics"])).await?;
    let s = &app.seed;
    let own = format!(
        "# HELP pas_serve_requests_total HTTP requests answered by pas serve.\n\
         # TYPE pas_serve_requests_total counter\n\
         pas_serve_requests_total{{class=\"all\"}} {}\n\
         pas_serve_requests_total{{class=\"4xx\"}} {}\n\
         pas_serve_requests_total{{class=\"5xx\"}} {}\n\
         # HELP pas_serve_beats_total Heartbeats received over HTTP.\n\
         # TYPE pas_serve_beats_total counter\n\
         pas_serve_beats_total {}\n\
         # HELP pas_serve_monitor_checks_total Passes of the seed monitor.\n\
         # TYPE pas_serve_monitor_checks_total counter\n\
         pas_serve_monitor_checks_total {}\n\
         # HELP pas_serve_deregistered_total Services the monitor deregistered after missed beats.\n\
         # TYPE pas_serve_deregistered_total counter\n\
         pas_serve_deregistered_total {}\n\
         # HELP pas_serve_uptime_seconds Seconds since pas serve started.\n\
         # TYPE pas_serve_uptime_seconds gauge\n\
         pas_serve_uptime_seconds {}\n",
        s.requests.load(Ordering::Relaxed),
        s.client_errors.load(Ordering::Relaxed),
        s.server_errors.load(Ordering::Relaxed),
        s.beats.load(Ordering::Relaxed),
        s.checks.load(Ordering::Relaxed),
        s.deregistered.load(Ordering::Relaxed),
        app.started.elapsed().as_secs(),
    );
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        format!("{fleet}{own}"),
    )
        .into_response())
}
