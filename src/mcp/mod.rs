//! `pas mcp`: the Model Context Protocol server, on stdio (what agent runtimes spawn) and,
//! inside `pas serve`, on streamable HTTP at `/mcp`. Built on the official Rust SDK
//! (`rmcp`); linked into the `pas-serve` program only, like the HTTP server, so `pas`'s
//! short commands do not load tokio.
//!
//! Invariants:
//! - A tool call is the `pas` command it names ([`tools::plan`]) run in-process as the
//!   acting agent, exactly as `pas serve`'s dashboard controls are: the same parsing, id
//!   checks, permissions, quotas, budgets, events and JSON result; its error is the CLI's
//!   one-line message, as an MCP tool error (`isError`) with the exit code beside it.
//!   A checkpoint's state comes with the call, so `save_checkpoint` calls the checkpoint
//!   operation itself after the same permission check.
//! - Store work is blocking file I/O with bounded lock waits: it runs on tokio's blocking
//!   pool, each call with its own [`FsStore`].
//! - On stdio every line is judged before the SDK sees it ([`frame`]): not JSON, not
//!   JSON-RPC, or over [`frame::MAX_MESSAGE`] bytes is a JSON-RPC error reply, and nothing
//!   else happens. Over HTTP the body limit is the same.
//! - Resources are read through the CLI's JSON views; `resources/subscribe` is served from
//!   the store's change feed ([`crate::store::Store::changes`]), never by polling files.

pub mod frame;
pub mod tools;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    Resource, ResourceContents, ResourceTemplate, ResourceUpdatedNotificationParam,
    ServerCapabilities, SubscribeRequestParams, Tool, UnsubscribeRequestParams,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{json, Value};

use crate::error::{Error, Kind, Result};
use crate::store::changes::{Change, ChangeFeed};
use crate::store::{FsStore, Store};
use tools::{Defaults, Plan};

/// How many events `pas://cell/<id>/events` shows (the newest).
pub const EVENTS_TAIL: usize = 50;

/// What `pas mcp` was asked for.
pub struct Options {
    /// The root.
    pub store: FsStore,
    /// What agents started through a tool are allowed (the command line's).
    pub launch: crate::ops::supervisor::Launch,
    /// The cell and the acting agent.
    pub defaults: Defaults,
}

/// The MCP server: one per stdio connection, one per HTTP session.
#[derive(Clone)]
pub struct Pas {
    inner: Arc<Inner>,
}

struct Inner {
    store: FsStore,
    launch: crate::ops::supervisor::Launch,
    defaults: Defaults,
    /// Over HTTP: each request's `X-Pas-As` and `X-Pas-Cell` choose the agent and cell.
    http: bool,
    /// The resources the client subscribed to.
    subscribed: Mutex<BTreeSet<String>>,
    /// The store's change feed, started by the first subscription.
    feed: Mutex<Option<Box<dyn ChangeFeed>>>,
}

impl Pas {
    /// A server over `store` with these defaults; `http` reads the agent and cell from
    /// each request's headers as well.
    pub fn new(
        store: FsStore,
        launch: crate::ops::supervisor::Launch,
        defaults: Defaults,
        http: bool,
    ) -> Pas {
        Pas {
            inner: Arc::new(Inner {
                store,
                launch,
                defaults,
                http,
                subscribed: Mutex::new(BTreeSet::new()),
                feed: Mutex::new(None),
            }),
        }
    }

    /// The defaults of one request: over HTTP, `X-Pas-As` acts as that agent (as on every
    /// other endpoint) and `X-Pas-Cell` names the cell.
    fn defaults(&self, extensions: &rmcp::model::Extensions) -> Result<Defaults> {
        let mut d = self.inner.defaults.clone();
        if !self.inner.http {
            return Ok(d);
        }
        // An HTTP request without X-Pas-As is an operator's, whatever the server's
        // environment says.
        d.agent = None;
        if let Some(parts) = extensions.get::<axum::http::request::Parts>() {
            let header = |name: &str| -> Result<Option<String>> {
                parts
                    .headers
                    .get(name)
                    .map(|v| {
                        v.to_str()
                            .map(str::to_string)
                            .map_err(|_| Error::usage(format!("the {name} header is not text")))
                    })
                    .transpose()
            };
            if let Some(agent) = header("x-pas-as")? {
                crate::store::check_id(crate::store::IdKind::Agent, &agent)?;
                d.agent = Some(agent);
            }
            if let Some(cell) = header("x-pas-cell")? {
                d.cell = Some(cell);
            }
        }
        Ok(d)
    }
}

/// Runs `pas --json ARGV` in-process as `acting`.
fn cli(
    store: &FsStore,
    launch: crate::ops::supervisor::Launch,
    acting: Option<String>,
    argv: &[String],
) -> Result<Value> {
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let result = crate::cli::run_captured(store.fresh(), acting, launch, &args);
    // Supervisors a start or revival forked are this process's children.
    crate::process::reap_children();
    result
}

/// One tool call, blocking, as `tools/call` makes it: for `pas serve`'s seed endpoints,
/// which are these tools under other names (`POST /heartbeat/{id}` is `beat`).
pub fn call(
    store: &FsStore,
    launch: crate::ops::supervisor::Launch,
    tool: &str,
    args: &serde_json::Map<String, Value>,
    defaults: &Defaults,
) -> Result<Value> {
    let plan = tools::plan(tool, args, defaults)?;
    execute(store, launch, tool, plan, defaults.agent.clone())
}

/// Does what a planned call says and returns its structured result.
fn execute(
    store: &FsStore,
    launch: crate::ops::supervisor::Launch,
    tool: &str,
    plan: Plan,
    acting: Option<String>,
) -> Result<Value> {
    match plan {
        Plan::Cli(argv) => Ok(tools::structured(tool, cli(store, launch, acting, &argv)?)),
        Plan::Health(argv) => Ok(tools::health_view(&cli(store, launch, acting, &argv)?)),
        Plan::Claim(argv) => match cli(store, launch, acting, &argv) {
            Ok(task) => Ok(json!({ "claimed": true, "task": task })),
            Err(e) if e.kind == Kind::Empty => Ok(json!({ "claimed": false, "task": null })),
            Err(e) => Err(e),
        },
        Plan::Save {
            cell,
            agent,
            state,
            context,
            reason,
        } => {
            let store = store.fresh();
            let cell = crate::ops::cell::resolve(&store, &cell)?;
            crate::ops::permissions::Permissions::load(&store, &cell)?
                .check_agent(acting.as_deref(), &agent)?;
            let saved = crate::ops::checkpoint::save(
                &store,
                &cell,
                &agent,
                crate::ops::checkpoint::SaveRequest {
                    state,
                    context,
                    artifacts: Vec::new(),
                    modes: Default::default(),
                    reason,
                },
                crate::clock::now(),
            )?;
            Ok(serde_json::to_value(&saved).unwrap_or(Value::Null))
        }
    }
}

impl Inner {
    /// The JSON a resource shows, read through the CLI as the acting agent.
    fn read(&self, uri: &Target, acting: Option<String>) -> Result<Value> {
        let argv: Vec<String> = match uri {
            Target::Cell(c) => vec!["status".into(), c.clone()],
            Target::Agent(c, a) => vec!["agent".into(), "show".into(), c.clone(), a.clone()],
            Target::Events(c) => vec!["events".into(), c.clone(), format!("--lines={EVENTS_TAIL}")],
        };
        let value = cli(&self.store, self.launch, acting, &argv)?;
        Ok(match (uri, value) {
            (Target::Events(_), Value::Null) => json!([]),
            (Target::Events(_), v @ Value::Object(_)) => json!([v]),
            (_, v) => v,
        })
    }
}

/// What a `pas://` URI names.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// `pas://cell/<id>`: the cell's status.
    Cell(String),
    /// `pas://cell/<id>/agent/<id>`: one agent.
    Agent(String, String),
    /// `pas://cell/<id>/events`: the newest events.
    Events(String),
}

impl Target {
    /// Reads a `pas://` URI; ids are checked as the CLI checks them.
    pub fn parse(uri: &str) -> Result<Target> {
        use crate::store::{check_id, IdKind};
        let bad = || {
            Error::new(
                Kind::NotFound,
                format!("no resource {uri:?}; pas serves pas://cell/<id>, pas://cell/<id>/agent/<id> and pas://cell/<id>/events"),
            )
        };
        let rest = uri.strip_prefix("pas://cell/").ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let target = match parts.as_slice() {
            [c] => Target::Cell(c.to_string()),
            [c, "events"] => Target::Events(c.to_string()),
            [c, "agent", a] => {
                check_id(IdKind::Agent, a)?;
                Target::Agent(c.to_string(), a.to_string())
            }
            _ => return Err(bad()),
        };
        let (Target::Cell(c) | Target::Events(c) | Target::Agent(c, _)) = &target;
        check_id(IdKind::Cell, c)?;
        Ok(target)
    }

    /// Its cell.
    fn cell(&self) -> &str {
        match self {
            Target::Cell(c) | Target::Events(c) | Target::Agent(c, _) => c,
        }
    }
}

/// The URIs a change makes stale, of those subscribed.
pub fn touched(change: &Change, subscribed: &BTreeSet<String>) -> Vec<String> {
    let mut stale = Vec::new();
    match change {
        Change::Root => {}
        Change::Cell { cell } | Change::Reservations { cell } | Change::Task { cell, .. } => {
            stale.push(format!("pas://cell/{cell}"));
        }
        Change::Agent { cell, agent } => {
            stale.push(format!("pas://cell/{cell}/agent/{agent}"));
            stale.push(format!("pas://cell/{cell}"));
        }
        Change::Events { cell } => stale.push(format!("pas://cell/{cell}/events")),
        // Changes were lost: every subscription may be stale.
        _ => return subscribed.iter().cloned().collect(),
    }
    stale.retain(|u| subscribed.contains(u));
    stale
}

/// A failed call as the client sees it: the CLI's message (and hint) as text, and as
/// structured content with its exit code.
fn tool_error(e: &Error) -> CallToolResult {
    let line = e.line();
    let mut body = json!({ "error": line, "code": e.kind.exit_code() });
    if let Some(committed) = e.committed {
        body["committed"] = json!(committed);
    }
    let mut result = CallToolResult::structured_error(body);
    result.content = vec![ContentBlock::text(line)];
    result
}

/// A failed resource read as a JSON-RPC error (resources have no tool-error form).
fn protocol_error(e: &Error) -> McpError {
    let line = e.line();
    let data = Some(json!({ "code": e.kind.exit_code() }));
    match e.kind {
        Kind::NotFound => McpError::resource_not_found(line, data),
        Kind::Usage | Kind::Denied => McpError::invalid_params(line, data),
        _ => McpError::internal_error(line, data),
    }
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) => Err(Error::failure(format!("the call's work stopped: {e}"))),
    }
}

impl ServerHandler for Pas {
    fn get_info(&self) -> InitializeResult {
        InitializeResult::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_resources_subscribe()
                .build(),
        )
        .with_server_info(Implementation::new("pas", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "pas keeps this agent alive. Call `beat` every next_beat_in seconds and obey its \
             directive (summarize: save_checkpoint, clear your context, resume; stop: finish). \
             Work loop: claim_task, then complete_task or fail_task.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> std::result::Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(
            tools::NAMES.iter().filter_map(|n| tool(n)).collect(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tool(name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> std::result::Result<CallToolResponse, McpError> {
        let name = request.name.to_string();
        if tools::describe(&name).is_none() {
            return Err(McpError::invalid_params(
                format!("there is no tool {name:?}; tools/list shows them"),
                None,
            ));
        }
        let defaults = match self.defaults(&context.extensions) {
            Ok(d) => d,
            Err(e) => return Ok(tool_error(&e).into()),
        };
        let args = request.arguments.unwrap_or_default();
        let plan = match tools::plan(&name, &args, &defaults) {
            Ok(p) => p,
            Err(e) => return Ok(tool_error(&e).into()),
        };
        let inner = Arc::clone(&self.inner);
        let acting = defaults.agent;
        let result =
            blocking(move || execute(&inner.store, inner.launch, &name, plan, acting)).await;
        Ok(match result {
            Ok(value) => CallToolResult::structured(value),
            Err(e) => tool_error(&e),
        }
        .into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> std::result::Result<ListResourcesResult, McpError> {
        let defaults = self
            .defaults(&context.extensions)
            .map_err(|e| protocol_error(&e))?;
        let store = self.inner.store.fresh();
        let (cells, own) = blocking(move || {
            let cells = store.cell_ids()?;
            // The acting agent's own record, when its cell is known.
            let own = match (&defaults.cell, &defaults.agent) {
                (Some(c), Some(a)) => crate::ops::cell::resolve(&store, c)
                    .ok()
                    .map(|c| (c, a.clone())),
                _ => None,
            };
            Ok((cells, own))
        })
        .await
        .map_err(|e| protocol_error(&e))?;
        let json_resource = |uri: String, name: String, what: &str| {
            Resource::new(uri, name)
                .with_description(what)
                .with_mime_type("application/json")
        };
        let mut list = Vec::new();
        if let Some((cell, agent)) = own {
            list.push(json_resource(
                format!("pas://cell/{cell}/agent/{agent}"),
                format!("agent {agent}"),
                "this agent, as `pas agent show --json` prints it",
            ));
        }
        for cell in cells {
            list.push(json_resource(
                format!("pas://cell/{cell}"),
                format!("cell {cell}"),
                "the cell's status, as `pas status CELL --json` prints it",
            ));
            list.push(json_resource(
                format!("pas://cell/{cell}/events"),
                format!("events of {cell}"),
                "the cell's newest events, as `pas events CELL --json` prints them",
            ));
        }
        Ok(ListResourcesResult::with_all_items(list))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> std::result::Result<ListResourceTemplatesResult, McpError> {
        let t = |uri: &str, name: &str| {
            ResourceTemplate::new(uri, name).with_mime_type("application/json")
        };
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            t("pas://cell/{cell}", "cell"),
            t("pas://cell/{cell}/agent/{agent}", "agent"),
            t("pas://cell/{cell}/events", "events"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> std::result::Result<ReadResourceResponse, McpError> {
        let defaults = self
            .defaults(&context.extensions)
            .map_err(|e| protocol_error(&e))?;
        let target = Target::parse(&request.uri).map_err(|e| protocol_error(&e))?;
        let inner = Arc::clone(&self.inner);
        let value = blocking(move || inner.read(&target, defaults.agent))
            .await
            .map_err(|e| protocol_error(&e))?;
        let text = serde_json::to_string_pretty(&value).unwrap_or_default();
        let ResourceContents::TextResourceContents {
            uri, text, meta, ..
        } = ResourceContents::text(text, request.uri)
        else {
            return Err(McpError::internal_error("not a text resource", None));
        };
        Ok(
            ReadResourceResult::new(vec![ResourceContents::TextResourceContents {
                uri,
                mime_type: Some("application/json".into()),
                text,
                meta,
            }])
            .into(),
        )
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> std::result::Result<(), McpError> {
        let target = Target::parse(&request.uri).map_err(|e| protocol_error(&e))?;
        let cell = target.cell().to_string();
        let store = self.inner.store.fresh();
        let check = cell.clone();
        blocking(move || {
            if store.has_cell(&check) {
                Ok(())
            } else {
                Err(Error::new(
                    Kind::NotFound,
                    format!("no cell {check}; subscribe with a cell's full id (`pas cell list`)"),
                ))
            }
        })
        .await
        .map_err(|e| protocol_error(&e))?;
        if let Ok(mut subs) = self.inner.subscribed.lock() {
            subs.insert(request.uri);
        }
        let mut feed = self
            .inner
            .feed
            .lock()
            .map_err(|_| McpError::internal_error("the change feed is broken", None))?;
        if feed.is_none() {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let started = self
                .inner
                .store
                .changes(Box::new(move |c| tx.send(c).is_ok()));
            started.watch_root();
            tokio::spawn(notify(Arc::clone(&self.inner), context.peer.clone(), rx));
            *feed = Some(started);
        }
        if let Some(feed) = feed.as_ref() {
            feed.watch_cell(&Arc::from(cell.as_str()));
        }
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> std::result::Result<(), McpError> {
        if let Ok(mut subs) = self.inner.subscribed.lock() {
            subs.remove(&request.uri);
        }
        Ok(())
    }
}

/// Sends `notifications/resources/updated` for each subscribed resource a change touches,
/// until the client is gone.
async fn notify(
    inner: Arc<Inner>,
    peer: rmcp::Peer<RoleServer>,
    mut changes: tokio::sync::mpsc::UnboundedReceiver<Change>,
) {
    while let Some(change) = changes.recv().await {
        let stale = match inner.subscribed.lock() {
            Ok(subs) => touched(&change, &subs),
            Err(_) => return,
        };
        for uri in stale {
            if peer
                .notify_resource_updated(ResourceUpdatedNotificationParam::new(uri))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// A tool as `tools/list` shows it.
fn tool(name: &str) -> Option<Tool> {
    let (name, (text, schema)) = tools::NAMES
        .iter()
        .find(|n| **n == name)
        .and_then(|n| tools::describe(n).map(|d| (*n, d)))?;
    let schema = match schema {
        Value::Object(map) => map,
        _ => return None,
    };
    Some(Tool::new(name, text, Arc::new(schema)))
}

/// The MCP server on streamable HTTP, for `pas serve` to mount at `/mcp`: a session per
/// client, each call acting as its request's `X-Pas-As` (else the operator) on its
/// `X-Pas-Cell` (else `cell`). Bodies are limited as on stdio. The `Host` header must name
/// a loopback host unless `any_host` (the server listens beyond loopback; writes still need
/// the token). Sessions end when `stop` turns true.
pub fn http_service(
    store: FsStore,
    launch: crate::ops::supervisor::Launch,
    cell: Option<String>,
    any_host: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> rmcp::transport::streamable_http_server::StreamableHttpService<
    Pas,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
> {
    use rmcp::transport::streamable_http_server::{
        session::local::LocalSessionManager, StreamableHttpServerConfig, StreamableHttpService,
    };
    let mut config =
        StreamableHttpServerConfig::default().with_max_request_body_bytes(frame::MAX_MESSAGE);
    if any_host {
        config = config.disable_allowed_hosts();
    }
    let sessions_end = config.cancellation_token.clone();
    tokio::spawn(async move {
        let _ = stop.changed().await;
        sessions_end.cancel();
    });
    StreamableHttpService::new(
        move || {
            let defaults = Defaults {
                cell: cell.clone(),
                agent: None,
            };
            Ok(Pas::new(store.fresh(), launch, defaults, true))
        },
        std::sync::Arc::new(LocalSessionManager::default()),
        config,
    )
}

/// Serves MCP on stdin and stdout until stdin ends.
pub fn run_stdio(opts: Options) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("pas-mcp")
        .build()
        .map_err(|e| Error::failure(format!("cannot start the MCP server's runtime: {e}")))?;
    let server = Pas::new(opts.store, opts.launch, opts.defaults, false);
    let result = runtime.block_on(stdio::serve(server));
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    result
}

mod stdio;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uris() {
        let ok = [
            ("pas://cell/c1", Target::Cell("c1".into())),
            ("pas://cell/c1/events", Target::Events("c1".into())),
            (
                "pas://cell/c1/agent/a1",
                Target::Agent("c1".into(), "a1".into()),
            ),
        ];
        for (uri, want) in ok {
            assert_eq!(Target::parse(uri).expect(uri), want);
        }
        for bad in [
            "pas://cell/",
            "pas://cell/../x",
            "pas://cell/c1/agent/..",
            "pas://cell/c1/agent",
            "pas://cell/c1/tasks",
            "file:///etc/passwd",
            "pas://cell/c1/agent/a1/x",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn changes_touch_subscriptions() {
        let subs: BTreeSet<String> = [
            "pas://cell/c1",
            "pas://cell/c1/agent/a1",
            "pas://cell/c1/events",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let c1: crate::store::changes::CellId = Arc::from("c1");
        let c2: crate::store::changes::CellId = Arc::from("c2");
        let cases: Vec<(Change, Vec<&str>)> = vec![
            (
                Change::Agent {
                    cell: c1.clone(),
                    agent: "a1".into(),
                },
                vec!["pas://cell/c1/agent/a1", "pas://cell/c1"],
            ),
            (
                Change::Agent {
                    cell: c1.clone(),
                    agent: "a2".into(),
                },
                vec!["pas://cell/c1"],
            ),
            (
                Change::Task {
                    cell: c1.clone(),
                    task: "t".into(),
                },
                vec!["pas://cell/c1"],
            ),
            (
                Change::Events { cell: c1.clone() },
                vec!["pas://cell/c1/events"],
            ),
            (Change::Cell { cell: c2.clone() }, vec![]),
            (Change::Events { cell: c2 }, vec![]),
            (Change::Root, vec![]),
            (
                Change::Rescan,
                vec![
                    "pas://cell/c1",
                    "pas://cell/c1/agent/a1",
                    "pas://cell/c1/events",
                ],
            ),
        ];
        for (change, want) in cases {
            assert_eq!(touched(&change, &subs), want, "{change:?}");
        }
    }
}
