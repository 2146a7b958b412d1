//! The OpenAPI 3.1 document of `pas serve` (`GET /openapi.json`), built from one table of
//! endpoints, and the page that shows it (`GET /docs`, embedded, no CDN).

use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

use super::App;

/// One endpoint: method, path, group, whether it needs the token, what it does, and an
/// example body for writes.
struct Endpoint {
    method: &'static str,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
    body: Option<&'static str>,
}

const fn read(path: &'static str, tag: &'static str, summary: &'static str) -> Endpoint {
    Endpoint {
        method: "get",
        path,
        tag,
        summary,
        body: None,
    }
}

const fn write(
    method: &'static str,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
    body: &'static str,
) -> Endpoint {
    Endpoint {
        method,
        path,
        tag,
        summary,
        body: Some(body),
    }
}

const ENDPOINTS: &[Endpoint] = &[
    read("/", "dashboard", "The dashboard for browsers (Accept: text/html); the server's information as JSON for everyone else"),
    read("/health", "dashboard", "Liveness, open to every peer, no token: pas's status, version, cells, uptime_s and seed 001's timestamp, total_agents, healthy, degraded, unhealthy (the agents map for loopback peers)"),
    write("post", "/heartbeat/{agent_id}", "heartbeat", "Seed 001's heartbeat: `pas agent beat` of the agent with each metadata entry as --meta; {\"status\": \"ok\", \"agent_id\", \"timestamp\", \"next_heartbeat\"} and pas's beat reply", r#"{"metadata": {"status": "active"}}"#),
    read("/agent/{agent_id}", "heartbeat", "Seed 001's health record of an agent (status healthy|degraded|unhealthy, last_heartbeat, consecutive_failures, metadata) with pas's health"),
    write("post", "/mcp", "mcp", "The MCP server (streamable HTTP, JSON-RPC): the tools and resources of `pas mcp`, acting as X-Pas-As; see docs/mcp.md", r#"{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}"#),
    read("/api/status", "dashboard", "The fleet: the same JSON as `pas status --all --json`"),
    read("/events", "dashboard", "Server-sent events of every cell's events log from now (Last-Event-ID, ?since=, ?cell=)"),
    write("post", "/api/cells/{cell}/agents/{agent}/{action}", "dashboard", "pause, resume, revive, stop or restart an agent, as the CLI command; answers with its --json result", r#"{"grace": 5}"#),
    read("/api/cells/{cell}/requests", "dashboard", "Pending revival and budget requests of a cell: {\"items\": [...]}, each with \"kind\""),
    write("post", "/api/cells/{cell}/requests/{id}/{decision}", "dashboard", "approve or deny a pending request, as `pas revive|budget approve|deny ID`", "{}"),
    write("post", "/register", "registry", "Register a service (an agent of the cell); returns its service_id", r#"{"name": "llama-3.1-8b", "type": "model", "role": "production", "url": "http://127.0.0.1:8050", "caps": ["infer", "classify"], "labels": {"space": "local"}, "ctx_limit": 32768, "heartbeat_interval_s": 30, "ttl_s": 90}"#),
    write("put", "/heartbeat", "registry", "A service's beat: the agent's beat (same file, health, events)", r#"{"service_id": "...", "status": "ok"}"#),
    read("/discover", "registry", "Services filtered by type, role, cap, name, status: {\"items\": [...]}"),
    write("post", "/promote", "registry", "Change a service's role (production, staging, canary, experimental)", r#"{"service_id": "...", "role": "staging"}"#),
    write("post", "/deregister", "registry", "Remove a service, as `pas agent rm CELL ID --force`", r#"{"service_id": "..."}"#),
    read("/services", "registry", "Every service of the cell: {\"items\": [...]}"),
    read("/services/{id}", "registry", "One service"),
    read("/stats", "heartbeat monitor", "Services by status and the monitor's passes"),
    read("/alerts", "heartbeat monitor", "Liveness events of the cell, one JSON object a line (?limit=N)"),
    write("post", "/reserve", "resource manager", "Reserve resources for a job, as `pas reserve` (409 with the shortfall over quota)", r#"{"job_id": "J-TRAIN-001", "agent": "trainer", "cpu": 4.0, "mem_mb": 8192, "gpu": 1, "gpu_mem_mb": 4096}"#),
    write("post", "/release", "resource manager", "Release a job's reservation, as `pas release`", r#"{"job_id": "J-TRAIN-001"}"#),
    write("post", "/kill", "resource manager", "Stop a job's process group and end its reservation, as `pas kill`", r#"{"job_id": "J-TRAIN-001"}"#),
    read("/quotas", "resource manager", "Capacity, reserved and free per resource: {\"items\": [...]}"),
    write("post", "/quotas/update", "resource manager", "Change the cell's quota, as `pas quota set`", r#"{"resource": "cpu", "capacity": 12}"#),
    read("/reservations", "resource manager", "The cell's reservations (?status=active|released|killed): {\"items\": [...]}"),
    write("post", "/track", "token governor", "Record an agent's context use, as `pas budget track`; answers ok, warning or breach", r#"{"agent": "architect", "run_id": "R-001", "ctx_used": 8000, "ctx_limit": 16000}"#),
    read("/status", "token governor", "Context use of every agent, or one (?agent=)"),
    write("post", "/summarize", "token governor", "Save-State, Clear, Resume now: a checkpoint, a summary, a summarize directive", r#"{"agent": "architect", "run_id": "R-001", "trigger_reason": "hard_max_breach"}"#),
    read("/summaries", "token governor", "Summaries (compaction history), as `pas budget history` (?agent=)"),
    write("post", "/clear", "token governor", "Set an agent's context use to 0", r#"{"agent": "architect"}"#),
    write("post", "/ains/agents", "ains", "Register an agent", r#"{"agent_id": "sample-agent", "display_name": "Sample agent"}"#),
    read("/ains/agents", "ains", "Every agent of the cell: {\"items\": [...]}"),
    read("/ains/agents/{id}", "ains", "One agent"),
    write("post", "/ains/agents/{id}/capabilities", "ains", "Declare a capability", r#"{"name": "summarize", "input_schema": {}, "output_schema": {}, "pricing_model": "free"}"#),
    write("post", "/ains/agents/{id}/heartbeat", "ains", "A beat with ACTIVE, DEGRADED or OFFLINE", r#"{"timestamp": 1764590000, "status": "ACTIVE", "uptime_ms": 1200, "metrics": {}}"#),
    write("get", "/ains/agents/{id}/tasks", "ains", "Poll: claim the agent's next ready task (as `pas task claim --agent ID`); {\"tasks\": [...]}, empty when none", ""),
    write("post", "/ains/tasks", "ains", "Add a task, as `pas task add`", r#"{"task_id": "t1", "title": "Review the patch"}"#),
    write("post", "/ains/tasks/{task}/complete", "ains", "Complete a claimed task, as `pas task done --as AGENT`", r#"{"agent_id": "sample-agent"}"#),
    write("post", "/ains/tasks/{task}/fail", "ains", "Fail a claimed task, as `pas task fail --as AGENT`", r#"{"agent_id": "sample-agent", "reason": "tool call timed out"}"#),
    read("/metrics", "dashboard", "Prometheus text: `pas metrics` and the server's counters"),
    read("/openapi.json", "dashboard", "This document"),
    read("/docs", "dashboard", "This document, browsable"),
];

/// The routes of this file.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/openapi.json", get(|| async { axum::Json(document()) }))
        .route(
            "/docs",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    include_str!("docs.html"),
                )
                    .into_response()
            }),
        )
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for e in ENDPOINTS {
        let params: Vec<Value> = e
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let mut op = json!({
            "tags": [e.tag],
            "summary": e.summary,
            "parameters": params,
            "responses": {
                "200": { "description": "OK" },
                "4XX": { "description": "The caller's mistake: {\"error\": \"<the CLI's message>\", \"code\": <exit code>}" },
                "5XX": { "description": "The server's trouble, same body" },
            },
        });
        let write = e.method != "get";
        if write {
            op["security"] = json!([{ "bearer": [] }]);
        }
        if let Some(body) = e.body.filter(|b| !b.is_empty()) {
            let example: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            op["requestBody"] = json!({
                "content": { "application/json": { "schema": { "type": "object" }, "example": example } }
            });
        }
        let entry = paths.entry(e.path.to_string()).or_insert_with(|| json!({}));
        entry[e.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "pas serve",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The seed's Registry, Heartbeat Monitor, Resource Manager, Token Governor and AINS endpoints, and the dashboard's API, over the cells of one missions root. Writes need `Authorization: Bearer <token>` (`pas serve token`); reads are open on loopback. A request's cell: X-Pas-Cell header, a /cells/{cell} path prefix, `pas serve --cell`, or the root's only cell. See docs/http.md.",
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
        },
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_body_is_json_and_every_write_needs_the_token() {
        for e in ENDPOINTS {
            if let Some(body) = e.body.filter(|b| !b.is_empty()) {
                assert!(
                    serde_json::from_str::<Value>(body).is_ok(),
                    "{} {}",
                    e.method,
                    e.path
                );
            }
        }
        let doc = document();
        assert_eq!(
            doc["paths"]["/register"]["post"]["security"][0]["bearer"],
            json!([])
        );
        assert!(doc["paths"]["/services"]["get"].get("security").is_none());
        assert_eq!(
            doc["paths"]["/services/{id}"]["get"]["parameters"][0]["name"],
            "id"
        );
    }
}
