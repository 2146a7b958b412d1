//! `pas serve`: one long-running process serving HTTP/1.1 and JSON over the same store the
//! CLI uses. Only `pas serve` reaches this module, so the short commands never start tokio.
//!
//! Invariants:
//! - Every change goes through the same code as the CLI: the dashboard's controls run the
//!   CLI command itself in-process ([`crate::cli::run_captured`]), the seed's endpoints call
//!   the same operations; ids from a request are checked by the store before any path is
//!   built, and an acting agent (`X-Pas-As`) meets the same permissions.
//! - Store work is blocking file I/O with bounded lock waits: it runs on tokio's blocking
//!   pool, each request with its own [`FsStore`] (as each CLI command has one).
//! - Writes need the bearer token of `<root>/.pas/serve-token`; reads are open to loopback
//!   peers only. Bodies are limited to [`MAX_BODY`] bytes, requests (headers included) to
//!   the request timeout; a slow or hostile client gets a 4xx and the server keeps serving.
//! - SIGTERM or SIGINT stops accepting, lets requests in flight finish (at most
//!   [`DRAIN`]), and exits 0.

mod api;
mod assets;
mod heartbeat;
mod mcp;
mod openapi;
mod reply;
mod seed;
mod sse;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::error::{Error, Result};
use crate::store::FsStore;

/// The largest request body accepted (413 beyond it).
pub const MAX_BODY: usize = 1 << 20;

/// How long requests in flight may take to finish after SIGTERM before the server exits.
pub const DRAIN: Duration = Duration::from_secs(5);

/// What `pas serve` was asked for.
pub struct Options<'a> {
    /// The root, as the command line opened it (each request gets a fresh copy).
    pub store: FsStore,
    /// Where to listen.
    pub addrs: Vec<SocketAddr>,
    /// The cell of requests that name none.
    pub default_cell: Option<String>,
    /// The bearer token writes need, as read at start (the file is read again when it
    /// changes, so a rotation takes effect without a restart).
    pub token: String,
    /// Where the token is kept.
    pub token_path: PathBuf,
    /// What agents started through the server are allowed (the command line's).
    pub launch: crate::ops::supervisor::Launch,
    /// Longest time for one request, from its first byte to its response head.
    pub request_timeout: Duration,
    /// Writes from loopback need no token (`--trust-loopback`).
    pub trust_loopback: bool,
    /// Says where the server listens (one line per address, on stdout).
    pub announce: &'a dyn Fn(&str),
}

/// What every request handler shares.
pub(crate) struct App {
    store: FsStore,
    default_cell: Option<String>,
    /// The token as last read, and which file it was read from.
    token: std::sync::RwLock<(String, crate::store::TokenVersion)>,
    token_path: PathBuf,
    launch: crate::ops::supervisor::Launch,
    /// Writes from loopback need no token (`--trust-loopback`).
    trust_loopback: bool,
    events: sse::Hub,
    seed: seed::State,
    started: std::time::Instant,
    /// Turns true when the server stops (event streams end then).
    stop: tokio::sync::watch::Receiver<bool>,
}

impl App {
    /// A store for one request.
    fn store(&self) -> FsStore {
        self.store.fresh()
    }
}

/// Serves until SIGTERM or SIGINT.
pub fn run(opts: Options<'_>) -> Result<()> {
    // Bound before the runtime starts, so a taken port is one clear error and nothing else
    // has happened yet.
    let mut listeners = Vec::new();
    for addr in &opts.addrs {
        let listener = std::net::TcpListener::bind(addr).map_err(|e| bind_error(*addr, &e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::failure(format!("cannot listen on {addr}: {e}")))?;
        listeners.push(listener);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pas-serve")
        .build()
        .map_err(|e| Error::failure(format!("cannot start the server's runtime: {e}")))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let token_version = opts.store.serve_token_version();
    let app = Arc::new(App {
        store: opts.store,
        default_cell: opts.default_cell,
        token: std::sync::RwLock::new((opts.token, token_version)),
        token_path: opts.token_path,
        launch: opts.launch,
        trust_loopback: opts.trust_loopback,
        events: sse::Hub::new(),
        seed: seed::State::default(),
        started: std::time::Instant::now(),
        stop: stop_rx.clone(),
    });
    let timeout = opts.request_timeout;
    runtime.block_on(async move {
        let mut bound = Vec::new();
        for l in listeners {
            let l = TcpListener::from_std(l)
                .map_err(|e| Error::failure(format!("cannot listen: {e}")))?;
            let local = l
                .local_addr()
                .map_err(|e| Error::failure(format!("cannot listen: {e}")))?;
            (opts.announce)(&format!("pas serve: listening on http://{local}"));
            bound.push(l);
        }
        (opts.announce)(&if app.trust_loopback {
            format!(
                "pas serve: loopback writes need no token; others need {}",
                app.token_path.display()
            )
        } else {
            format!(
                "pas serve: writes need the token in {}",
                app.token_path.display()
            )
        });
        let any_host = opts.addrs.iter().any(|a| !a.ip().is_loopback());
        let router = routes(Arc::clone(&app), timeout, any_host);
        tokio::spawn(sse::tail(Arc::clone(&app), stop_rx.clone()));
        tokio::spawn(seed::monitor(Arc::clone(&app), stop_rx.clone()));
        let graceful = Arc::new(hyper_util::server::graceful::GracefulShutdown::new());
        let mut accepting = Vec::new();
        for listener in bound {
            accepting.push(tokio::spawn(accept(
                listener,
                router.clone(),
                timeout,
                Arc::clone(&graceful),
                stop_rx.clone(),
            )));
        }
        wait_for_signal().await;
        let _ = stop_tx.send(true);
        for a in accepting {
            let _ = a.await;
        }
        // Requests in flight finish; event streams end with the stop signal.
        if let Ok(graceful) = Arc::try_unwrap(graceful) {
            let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
        }
        Ok::<(), Error>(())
    })?;
    // Blocking store work still running (a stop waiting out its grace) is not waited for.
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

/// The error for a port that cannot be had.
fn bind_error(addr: SocketAddr, e: &std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => Error::busy(format!(
            "cannot listen on {addr}: the port is taken by another process"
        ))
        .hint("stop that process or pass --listen ADDR:PORT with a free port"),
        std::io::ErrorKind::PermissionDenied => Error::new(
            crate::error::Kind::Denied,
            format!("cannot listen on {addr}: permission denied"),
        )
        .hint("ports below 1024 need privileges; pick a port above 1023"),
        _ => Error::failure(format!("cannot listen on {addr}: {e}"))
            .hint("pass --listen ADDR:PORT with an address of this machine"),
    }
}

/// Accepts connections until told to stop; each is served on its own task with the
/// header-read timeout, keep-alive, and the peer's address for the loopback check.
async fn accept(
    listener: TcpListener,
    router: Router,
    timeout: Duration,
    graceful: Arc<hyper_util::server::graceful::GracefulShutdown>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use tower::ServiceExt;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                // Out of descriptors or a connection reset before accept: try again soon.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let service = router.clone().map_request(
            move |req: axum::extract::Request<hyper::body::Incoming>| {
                let mut req = reply::route_cell_prefix(req);
                req.extensions_mut().insert(reply::Peer(peer));
                req
            },
        );
        let service = hyper_util::service::TowerToHyperService::new(service);
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(timeout)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

/// Resolves on the first SIGTERM or SIGINT.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the default action (exit) still stops the server.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Every route, with the body limit and request timeout; `/mcp` is the MCP server on
/// streamable HTTP (docs/mcp.md), behind the same token guard.
fn routes(app: Arc<App>, timeout: Duration, any_host: bool) -> Router {
    Router::new()
        .merge(mcp::routes(&app, any_host))
        .merge(api::routes())
        .merge(assets::routes())
        .merge(openapi::routes())
        .merge(sse::routes())
        .merge(seed::routes())
        .merge(heartbeat::routes())
        .fallback(reply::no_route)
        .method_not_allowed_fallback(reply::wrong_method)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            reply::guard,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .with_state(app)
}
