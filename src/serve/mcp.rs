//! `/mcp`: the MCP server of `pas mcp` on the streamable HTTP transport (docs/mcp.md),
//! behind the same token guard as every write. Each POST body is judged as a stdio line is
//! ([`crate::mcp::frame`]) before the SDK sees it, so a body that is not JSON, not a
//! JSON-RPC message, or over [`super::MAX_BODY`] gets a JSON-RPC error (400, 413) rather
//! than the SDK's plain-text answer, and nothing happens.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

use super::{App, MAX_BODY};
use crate::mcp::frame::{self, Frame};

/// The route, for `app`'s store and cell; `any_host` lets any `Host` header through (the
/// server listens beyond loopback).
pub fn routes(app: &Arc<App>, any_host: bool) -> Router<Arc<App>> {
    let service = crate::mcp::http_service(
        app.store(),
        app.launch,
        app.default_cell.clone(),
        any_host,
        app.stop.clone(),
    );
    Router::new()
        .route_service("/mcp", service)
        .layer(axum::middleware::from_fn(judge))
}

/// Passes a POST on only when its body is one JSON-RPC message of at most `MAX_BODY` bytes.
async fn judge(req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || refuse(StatusCode::PAYLOAD_TOO_LARGE, frame::too_large());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    // A body that stops short of its end or runs past the limit.
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return too_large();
    };
    match frame::judge(&bytes, false) {
        Frame::Forward => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Frame::Refuse(reply) => refuse(StatusCode::BAD_REQUEST, reply),
        Frame::Skip => refuse(
            StatusCode::BAD_REQUEST,
            frame::error(
                serde_json::Value::Null,
                frame::INVALID_REQUEST,
                "the request has no body; POST one JSON-RPC message",
            ),
        ),
    }
}

/// A refusal with its JSON-RPC error as the body.
fn refuse(status: StatusCode, reply: serde_json::Value) -> Response {
    (status, axum::Json(reply)).into_response()
}
