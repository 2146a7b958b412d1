//! What every request shares: JSON errors with the CLI's messages and its exit code, the
//! token and loopback checks, the choice of cell, bodies read as JSON within the limit,
//! and store work moved off the async threads.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::Request as HttpRequest;

type Request<B = axum::body::Body> = HttpRequest<B>;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::App;
use crate::error::{Error, Kind};
use crate::store::{check_id, IdKind};

/// The peer of a connection, put on each of its requests.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The header naming the cell of a request (see [`cell_of`]).
pub const CELL_HEADER: &str = "x-pas-cell";

/// The header naming the agent a request acts as (permissions.json applies, as `--as`).
pub const AS_HEADER: &str = "x-pas-as";

/// An error as the server answers it: `{"error": "<the CLI's message>", "code": <exit code>}`
/// with the HTTP status of its kind.
#[derive(Debug)]
pub struct ApiError {
    error: Error,
    /// A status more precise than the kind's (401, 405, 408, 413).
    status: Option<StatusCode>,
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        ApiError {
            error,
            status: None,
        }
    }
}

impl ApiError {
    /// What kind of error it is.
    pub fn kind(&self) -> Kind {
        self.error.kind
    }

    /// An error answered with `status` instead of its kind's.
    pub fn with_status(status: StatusCode, error: Error) -> ApiError {
        ApiError {
            error,
            status: Some(status),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.error;
        let status = self.status.unwrap_or_else(|| {
            StatusCode::from_u16(e.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        });
        let mut body = json!({ "error": e.line(), "code": e.kind.exit_code() });
        if let Some(committed) = e.committed {
            body["committed"] = json!(committed);
        }
        (status, axum::Json(body)).into_response()
    }
}

/// A handler's result.
pub type Reply = Result<Response, ApiError>;

/// A JSON answer with 200.
pub fn ok(value: Value) -> Reply {
    Ok(axum::Json(value).into_response())
}

/// An error of `kind` with an HTTP status of its own (the body still carries the code).
fn with_status(status: StatusCode, kind: Kind, message: String, hint: &str) -> ApiError {
    ApiError::with_status(status, Error::new(kind, message).hint(hint))
}

/// Runs store work on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> crate::error::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(Error::failure(format!("the request's work stopped: {e}")).into()),
    }
}

/// The request body as a JSON object: 413 over the limit, 400 when it is not JSON or not
/// an object. An empty body is an empty object.
pub fn body_object(
    body: Result<Bytes, BytesRejection>,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    let bytes = body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            with_status(
                status,
                Kind::Usage,
                format!("the request body is over {} bytes", super::MAX_BODY),
                "send less; one request is at most 1 MiB",
            )
        } else {
            with_status(
                status,
                Kind::Usage,
                format!("cannot read the request body: {}", rejection.body_text()),
                "send the whole body with a correct Content-Length",
            )
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::usage("the request body is JSON but not an object")
            .hint("send one JSON object, as in docs/http.md")
            .into()),
        Err(e) => Err(Error::usage(format!("the request body is not JSON: {e}"))
            .hint("send one JSON object with Content-Type: application/json")
            .into()),
    }
}

/// A seed endpoint's request: its body as a JSON object (empty when there is none), its
/// cell (see [`cell_of`]) and its headers. Refused as [`body_object`] and [`cell_of`] say.
pub struct SeedRequest {
    /// The body.
    pub body: serde_json::Map<String, Value>,
    /// The cell it works on.
    pub cell: String,
    /// Its headers (`X-Pas-As`).
    pub headers: HeaderMap,
}

impl axum::extract::FromRequest<Arc<App>> for SeedRequest {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<SeedRequest, ApiError> {
        let headers = req.headers().clone();
        let bytes = Bytes::from_request(req, app).await;
        let body = body_object(bytes)?;
        let app2 = Arc::clone(app);
        let chosen = headers.clone();
        let cell = blocking(move || cell_of(&app2, &chosen)).await?;
        Ok(SeedRequest {
            body,
            cell,
            headers,
        })
    }
}

/// The agent a request acts as (`X-Pas-As`), checked as `--as` is; `None` for an operator.
pub fn acting(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(AS_HEADER) else {
        return Ok(None);
    };
    let agent = value
        .to_str()
        .map_err(|_| Error::usage("the X-Pas-As header is not text"))?
        .to_string();
    check_id(IdKind::Agent, &agent)?;
    Ok(Some(agent))
}

/// The cell a seed endpoint works on: the `X-Pas-Cell` header (also set by a
/// `/cells/{cell}/...` prefix), else the server's `--cell`, else the root's only cell.
pub fn cell_of(app: &App, headers: &HeaderMap) -> crate::error::Result<String> {
    if let Some(value) = headers.get(CELL_HEADER) {
        let query = value
            .to_str()
            .map_err(|_| Error::usage("the X-Pas-Cell header is not text"))?;
        return crate::ops::cell::resolve(&app.store(), query);
    }
    if let Some(cell) = &app.default_cell {
        return Ok(cell.clone());
    }
    let ids = crate::store::Store::cell_ids(&app.store())?;
    match ids.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(Error::not_found("the root has no cell for this request")
            .hint("create one with `pas cell create`, then restart `pas serve --cell CELL`")),
        _ => Err(Error::usage(format!(
            "the root has {} cells and the request names none",
            ids.len()
        ))
        .hint("send X-Pas-Cell: CELL, prefix the path with /cells/CELL, or start `pas serve --cell CELL`")),
    }
}

/// Paths open to anyone, anywhere: liveness only.
fn open_to_all(path: &str) -> bool {
    path == "/health"
}

/// GETs that change something (an AINS poll claims a task), so they need the token too.
fn changes_on_get(path: &str) -> bool {
    path.starts_with("/ains/agents/") && path.ends_with("/tasks")
}

/// A `/cells/{cell}` prefix whose cell is not an id: the request is refused with this.
#[derive(Clone)]
struct BadCellPrefix(Error);

/// Moves a `/cells/{cell}` prefix into `X-Pas-Cell` before the request is routed:
/// `/cells/3f2a/register` is `/register` for cell 3f2a. A cell that is not an id is kept
/// for [`guard`] to refuse.
pub fn route_cell_prefix(
    mut req: Request<hyper::body::Incoming>,
) -> Request<hyper::body::Incoming> {
    let Some(rest) = req.uri().path().strip_prefix("/cells/") else {
        return req;
    };
    let (cell, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if let Err(e) = check_id(IdKind::Cell, cell) {
        req.extensions_mut().insert(BadCellPrefix(e));
        return req;
    }
    let cell = cell.to_string();
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let (Ok(uri), Ok(value)) = (
        format!("/{tail}{query}").parse(),
        HeaderValue::from_str(&cell),
    ) else {
        return req;
    };
    *req.uri_mut() = uri;
    req.headers_mut().insert(CELL_HEADER, value);
    req
}

/// Runs before every handler: refuses a bad `/cells/{cell}` prefix, checks the bearer
/// token (every write; reads from other hosts than loopback), counts the request.
pub async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(BadCellPrefix(e)) = req.extensions().get::<BadCellPrefix>() {
        let refusal = ApiError::from(e.clone()).into_response();
        app.seed.count_request(refusal.status().as_u16());
        return refusal;
    }
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    let loopback = req
        .extensions()
        .get::<Peer>()
        .is_some_and(|p| p.0.ip().is_loopback());
    let path = req.uri().path();
    let needs_token =
        !(open_to_all(path) || loopback && (app.trust_loopback || read && !changes_on_get(path)));
    if needs_token {
        if let Err(refusal) = authorized(&app, req.headers()).await {
            let refusal = refusal.into_response();
            app.seed.count_request(refusal.status().as_u16());
            return refusal;
        }
    }
    let response = next.run(req).await;
    app.seed.count_request(response.status().as_u16());
    response
}

/// Whether the request carries the token: `Authorization: Bearer <token>`. The token file
/// is looked at (a stat) on each such request and read again when it changed, so `pas
/// serve token --rotate` takes effect at once and the old token is refused.
async fn authorized(app: &Arc<App>, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(given) = given else {
        return Err(with_status(
            StatusCode::UNAUTHORIZED,
            Kind::Denied,
            "this request needs the server's bearer token".into(),
            &format!(
                "send Authorization: Bearer <token>; `pas serve token` prints it (from {})",
                app.token_path.display()
            ),
        ));
    };
    let version = app.store.serve_token_version();
    let cached = app.token.read().map(|t| t.clone()).ok();
    let token = match cached {
        Some((token, seen)) if seen == version => token,
        _ => {
            let app2 = Arc::clone(app);
            let fresh = tokio::task::spawn_blocking(move || app2.store().serve_token(false))
                .await
                .map_err(|e| Error::failure(format!("cannot read the token: {e}")))?
                .map_err(ApiError::from)?
                .0;
            if let Ok(mut cached) = app.token.write() {
                *cached = (fresh.clone(), app.store.serve_token_version());
            }
            fresh
        }
    };
    if same(given, &token) {
        return Ok(());
    }
    Err(with_status(
        StatusCode::UNAUTHORIZED,
        Kind::Denied,
        "the bearer token is wrong".into(),
        "`pas serve token` prints the current one",
    ))
}

/// Compares in time independent of where the strings differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// No such route.
pub async fn no_route(req: Request) -> Response {
    ApiError::from(
        Error::not_found(format!(
            "no such endpoint: {} {}",
            req.method(),
            req.uri().path()
        ))
        .hint("docs/http.md and /docs list the endpoints"),
    )
    .into_response()
}

/// A route that exists for other methods.
pub async fn wrong_method(req: Request) -> Response {
    with_status(
        StatusCode::METHOD_NOT_ALLOWED,
        Kind::Usage,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
        "docs/http.md and /docs list the methods of each endpoint",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        let table = [
            ("abc", "abc", true),
            ("abc", "abd", false),
            ("abc", "abcd", false),
            ("", "", true),
            ("", "a", false),
        ];
        for (a, b, want) in table {
            assert_eq!(same(a, b), want, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn an_ains_poll_changes_and_other_gets_do_not() {
        let table = [
            ("/ains/agents/a1/tasks", true),
            ("/ains/agents/a1", false),
            ("/ains/agents", false),
            ("/services", false),
        ];
        for (path, changes) in table {
            assert_eq!(changes_on_get(path), changes, "{path}");
        }
    }

    #[test]
    fn only_health_is_open_to_all() {
        for (path, open) in [("/health", true), ("/", false), ("/api/status", false)] {
            assert_eq!(open_to_all(path), open, "{path}");
        }
    }
}
