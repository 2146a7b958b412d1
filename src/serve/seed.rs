//! The seed's services over the same cells: Registry, Heartbeat Monitor, Resource Manager,
//! Token Governor and the AINS agent API (docs/http.md maps each onto the cell).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::json;

use super::App;

/// What the seed's services keep between requests (everything else is in the cells).
#[derive(Default)]
pub struct State {
    requests: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
}

impl State {
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
}

/// The seed's monitor loop.
pub async fn monitor(_app: Arc<App>, _stop: tokio::sync::watch::Receiver<bool>) {}

/// `GET /` for JSON clients: what this server is and what it serves.
pub async fn service_info(app: &Arc<App>, headers: &HeaderMap) -> Response {
    let cell = super::reply::cell_of(app, headers).ok();
    axum::Json(json!({
        "service": "pas",
        "version": env!("CARGO_PKG_VERSION"),
        "cell": cell,
        "requests": app.seed.requests.load(Ordering::Relaxed),
        "docs": "/docs",
        "openapi": "/openapi.json",
    }))
    .into_response()
}
