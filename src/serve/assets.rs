//! Files embedded in the binary: the dashboard (`src/serve/dashboard/`), the OpenAPI
//! document and the page that shows it. Nothing is fetched from elsewhere, so the pages
//! work offline.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::App;

const INDEX: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

/// The routes of this file.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(root))
        .route(
            "/index.html",
            get(|| async { page(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { page(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/style.css",
            get(|| async { page(STYLE, "text/css; charset=utf-8") }),
        )
}

/// An embedded file with its type; browsers check again on each load (`no-cache`), so a
/// new binary's page is seen at once.
fn page(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// Whether a request wants JSON rather than the page: browsers name `text/html` in
/// `Accept`; curl (`*/*`), scripts and the seed's clients do not, and get JSON.
pub fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    !accept.contains("text/html")
}

/// `GET /`: the dashboard for browsers, the registry's service information for
/// everyone else.
async fn root(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if wants_json(&headers) {
        return super::seed::service_info(&app, &headers).await;
    }
    page(INDEX, "text/html; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_served_only_to_who_asks_for_it() {
        let table = [
            (None, true),
            (Some("*/*"), true),
            (Some("application/json"), true),
            (Some("application/json, text/plain, */*"), true),
            (
                Some("text/html,application/xhtml+xml,application/json;q=0.9"),
                false,
            ),
        ];
        for (accept, want) in table {
            let mut headers = HeaderMap::new();
            if let Some(a) = accept {
                headers.insert(header::ACCEPT, HeaderValue::from_static(a));
            }
            assert_eq!(wants_json(&headers), want, "{accept:?}");
        }
    }
}
