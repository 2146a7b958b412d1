//! `pas mcp` driven by a real MCP client, the official Python SDK (tests/cli/mcp_client.py),
//! over stdio and over `pas serve`'s `/mcp`; what it did checked with the CLI and the events
//! log. Hostile input (not JSON, not JSON-RPC, over 1 MiB) is answered with JSON-RPC errors,
//! changes nothing, and the server keeps serving. The seed-001 heartbeat endpoints.
//!
//! The SDK lives in a virtual environment (`.ci/run` makes it): `$PAS_TEST_MCP_PYTHON`,
//! else `target/mcp-venv/bin/python3` in the repository.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{tool_available, wait_until, Root};
use crate::serve::{http, Server};

/// The Python with the MCP SDK, or `None` (the test then skips, saying why).
fn sdk_python() -> Option<String> {
    let python = std::env::var("PAS_TEST_MCP_PYTHON").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/mcp-venv/bin/python3").to_string()
    });
    tool_available(
        &python,
        &["-c", "import mcp.client.stdio, mcp.client.streamable_http"],
        "the MCP tests need the official Python SDK (.ci/run: python3 -m venv target/mcp-venv && target/mcp-venv/bin/pip install mcp; or set PAS_TEST_MCP_PYTHON)",
    )
    .then_some(python)
}

/// Runs the SDK client (`mcp_client.py ARGS`) within a bound and parses what it printed.
fn client(python: &str, args: &[&str]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cli/mcp_client.py");
    let mut child = std::process::Command::new(python)
        .args(["-W", "ignore", script])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(30.0, "the MCP client to finish", || {
        child.try_wait().unwrap().is_some()
    });
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "the client printed no JSON ({e}): {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A cell with agents `a1` and `other`, and one task.
fn fixture(root: &Root) -> String {
    let cell = root.cell("mcp");
    root.ok(&["agent", "add", &cell, "a1"]);
    root.ok(&["agent", "add", &cell, "other"]);
    root.ok(&["task", "add", &cell, "t1", "--title", "write it"]);
    cell
}

/// What the client's loop must have done, checked in its answers and with the CLI.
fn check_loop(root: &Root, cell: &str, out: &Value) {
    let tools: Vec<&str> = out["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for name in [
        "beat",
        "claim_task",
        "complete_task",
        "save_checkpoint",
        "create_mission_cell",
        "add_agent_to_cell",
        "get_agent_health",
    ] {
        assert!(tools.contains(&name), "{name} in {tools:?}");
    }
    assert_eq!(out["schemas_are_objects"], true);
    // The beat's reply is `pas agent beat --json`'s, with the next beat and a directive.
    let beat = &out["beat"]["structured"];
    assert_eq!(out["beat"]["is_error"], false, "{out}");
    assert_eq!(beat["agent"], "a1");
    assert!(beat["next_beat_in"].as_f64().unwrap() > 0.0);
    assert!(beat.get("directive").is_some());
    // Claimed, completed; nothing more to claim.
    assert_eq!(out["claim"]["structured"]["task"]["task_id"], "t1", "{out}");
    assert_eq!(out["done"]["is_error"], false, "{out}");
    assert_eq!(
        out["claim_again"]["structured"],
        json!({"claimed": false, "task": null})
    );
    // The checkpoint round trip.
    assert_eq!(out["save"]["is_error"], false, "{out}");
    let generation = out["save"]["structured"]["generation"].as_u64().unwrap();
    assert_eq!(out["load"]["structured"]["generation"], generation);
    assert_eq!(
        out["load"]["structured"]["state"],
        json!({"step": 3, "notes": "half way"})
    );
    // The permission refusal: a tool error with the CLI's message and exit code 9.
    assert_eq!(out["refused"]["is_error"], true);
    assert_eq!(out["refused"]["structured"]["code"], 9);
    let message = out["refused"]["text"][0].as_str().unwrap();
    assert!(
        message.contains("a1 may not change agent other"),
        "{message}"
    );
    assert!(!message.contains('\n'));
    assert_eq!(out["bad_args"]["structured"]["code"], 2);
    assert_eq!(out["health"]["structured"]["status"], "healthy");
    assert_eq!(out["health"]["structured"]["metadata"]["model"], "m1");
    assert_eq!(out["resource"]["agent_id"], "a1");
    assert!(out["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "task.completed"));

    // The CLI sees the same.
    let agent = root.json(&["agent", "show", cell, "a1"]);
    assert_eq!(agent["progress"], 0.5);
    assert_eq!(agent["metadata"]["model"], "m1");
    assert_eq!(
        root.json(&["agent", "show", cell, "other"])["last_heartbeat"],
        Value::Null
    );
    let task = root.json(&["task", "show", cell, "t1"]);
    assert_eq!(task["status"], "completed");
    assert_eq!(task["claimed_by"], "a1");
    let shown = root.json(&["checkpoint", "show", cell, "a1"]);
    assert_eq!(shown["generation"], generation);
    assert_eq!(shown["manifest"]["reason"], "mcp test");
    assert_eq!(shown["state"]["step"], 3);
    let kinds = root.event_kinds(cell);
    for kind in ["agent.alive", "task.claimed", "task.completed"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
}

#[test]
fn the_python_sdk_runs_an_agents_loop_over_stdio() {
    let Some(python) = sdk_python() else { return };
    let root = Root::new();
    let cell = fixture(&root);
    let root_arg = root.path.display().to_string();
    let out = client(
        &python,
        &["stdio", crate::harness::pas_bin(), &root_arg, &cell, "a1"],
    );
    check_loop(&root, &cell, &out);
    // Subscribed to its own agent, the client heard of its next beat.
    assert_eq!(out["updated"], format!("pas://cell/{cell}/agent/a1"));
}

/// `pas mcp` with piped stdio: each line written is sent; the replies are read on a thread.
struct McpProcess {
    child: std::process::Child,
    replies: std::sync::mpsc::Receiver<String>,
}

impl McpProcess {
    fn start(root: &Root, cell: &str) -> McpProcess {
        let mut child = root
            .cmd(&["mcp", "--cell", cell, "--agent", "a1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, replies) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        McpProcess { child, replies }
    }

    fn send(&mut self, line: &[u8]) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(line).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// The next reply, within a bound.
    fn reply(&self) -> Value {
        let line = self
            .replies
            .recv_timeout(Duration::from_secs(20))
            .expect("pas mcp replied");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }
}

#[test]
fn malformed_and_oversized_messages_get_errors_and_change_nothing() {
    let root = Root::new();
    let cell = fixture(&root);
    let before = root.snapshot();
    let mut mcp = McpProcess::start(&root, &cell);
    // A beat so big it would change the agent file, were it read.
    let note = "x".repeat((1 << 20) + 10);
    let oversized = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "beat", "arguments": {"note": note}}})
    .to_string();
    let cases: Vec<(Vec<u8>, i64, Value)> = vec![
        (b"{this is not json".to_vec(), -32700, Value::Null),
        (b"[1, 2, 3]".to_vec(), -32600, Value::Null),
        (
            br#"{"id": 3, "method": "tools/call"}"#.to_vec(),
            -32600,
            json!(3),
        ),
        (br#"{"jsonrpc": "2.0", "id": 4}"#.to_vec(), -32600, json!(4)),
        (oversized.into_bytes(), -32600, Value::Null),
        (vec![0xff, 0xfe, b'{'], -32700, Value::Null),
    ];
    for (line, code, id) in &cases {
        mcp.send(line);
        let reply = mcp.reply();
        assert_eq!(reply["error"]["code"], *code, "{reply}");
        assert_eq!(reply["id"], *id, "{reply}");
        assert!(!reply["error"]["message"].as_str().unwrap().is_empty());
    }
    // A call before initializing is refused by the SDK; then a proper session still works.
    mcp.send(br#"{"jsonrpc":"2.0","id":7,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#);
    assert_eq!(mcp.reply()["result"]["serverInfo"]["name"], "pas");
    mcp.send(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    mcp.send(br#"{"jsonrpc":"2.0","id":8,"method":"ping"}"#);
    assert_eq!(mcp.reply()["id"], 8);
    // A call with arguments the tool does not take, a tool that does not exist: errors.
    mcp.send(br#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"beat","arguments":{"progress":2}}}"#);
    let reply = mcp.reply();
    assert_eq!(reply["result"]["isError"], true, "{reply}");
    assert_eq!(reply["result"]["structuredContent"]["code"], 2, "{reply}");
    mcp.send(br#"{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"rm_rf","arguments":{}}}"#);
    assert!(mcp.reply()["error"]["code"].is_i64());
    // Nothing was written, and the server ends cleanly when its input does.
    drop(mcp.child.stdin.take());
    let mut status = None;
    wait_until(10.0, "pas mcp to exit", || {
        status = mcp.child.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success());
    assert_eq!(root.snapshot(), before, "files changed");
}

#[test]
fn pas_mcp_refuses_a_bad_cell_or_agent_at_start() {
    let root = Root::new();
    root.cell("one");
    root.run(&["mcp", "--cell", "nope"]).refused(3, "nope");
    root.run(&["mcp", "--agent", "../x"]).refused(2, "../x");
}

#[test]
fn over_http_mcp_needs_the_token_and_the_seed_heartbeat_endpoints_answer() {
    let root = Root::new();
    let cell = fixture(&root);
    let server = Server::start(&root, &[]);
    let url = format!("http://127.0.0.1:{}/mcp", server.port);

    // Without the token an MCP request is refused and nothing changes.
    let before = root.snapshot();
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}).to_string();
    let accept = [("Accept", "application/json, text/event-stream")];
    let (status, body) = http(server.port, "POST", "/mcp", &accept, Some(&init));
    assert_eq!(status, 401, "{body}");
    assert_eq!(root.snapshot(), before);
    // With it, the initialize is answered.
    let auth = format!("Bearer {}", server.token);
    let with_token = [
        ("Accept", "application/json, text/event-stream"),
        ("Authorization", auth.as_str()),
    ];
    let (status, body) = http(server.port, "POST", "/mcp", &with_token, Some(&init));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"serverInfo\""), "{body}");

    // Malformed and oversized bodies: JSON-RPC errors, nothing written.
    let before = root.snapshot();
    let big = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "beat", "arguments": {"agent": "a1", "cell": cell, "note": "x".repeat(1 << 20)}}})
    .to_string();
    for (body, status, code) in [
        ("{not json".to_string(), 400, -32700),
        ("[]".to_string(), 400, -32600),
        (r#"{"jsonrpc": "2.0", "id": 3}"#.to_string(), 400, -32600),
        (big, 413, -32600),
    ] {
        let (got, text) = http(server.port, "POST", "/mcp", &with_token, Some(&body));
        assert_eq!(got, status, "{text}");
        let reply: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(reply["error"]["code"], code, "{text}");
    }
    assert_eq!(root.snapshot(), before);

    if let Some(python) = sdk_python() {
        let out = client(&python, &["http", &url, &server.token, &cell, "a1"]);
        check_loop(&root, &cell, &out);
    }

    // Seed 001: POST /heartbeat/{agent_id} with metadata, GET /agent/{agent_id}, GET /health.
    let (status, body) = server.call(
        "POST",
        "/heartbeat/other",
        Some(&json!({"metadata": {"status": "active", "gateway": "gw1"}})),
    );
    assert_eq!(status, 200, "{body}");
    let beat: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(beat["status"], "ok");
    assert_eq!(beat["agent_id"], "other");
    assert!(beat["timestamp"].as_f64().unwrap() > 1.7e9);
    assert_eq!(beat["next_heartbeat"], beat["next_beat_in"]);
    assert_eq!(
        root.json(&["agent", "show", &cell, "other"])["metadata"]["gateway"],
        "gw1"
    );
    let (status, body) = http(server.port, "GET", "/agent/other", &[], None);
    assert_eq!(status, 200, "{body}");
    let record: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(record["status"], "healthy");
    assert_eq!(record["metadata"]["status"], "active");
    let (status, body) = http(server.port, "GET", "/health", &[], None);
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["service"], "pas");
    assert_eq!(health["total_agents"], 2);
    assert_eq!(health["healthy"], 2);
    assert_eq!(health["agents"]["other"]["agent_id"], "other");
    // Refusals: no token, a bad metadata, an unknown agent; nothing changes.
    let before = root.snapshot();
    let (status, _) = http(server.port, "POST", "/heartbeat/other", &[], Some("{}"));
    assert_eq!(status, 401);
    let (status, body) = server.call("POST", "/heartbeat/other", Some(&json!({"metadata": [1]})));
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.call("POST", "/heartbeat/ghost", Some(&json!({})));
    assert_eq!(status, 404, "{body}");
    let (status, _) = http(server.port, "GET", "/agent/ghost", &[], None);
    assert_eq!(status, 404);
    assert_eq!(root.snapshot(), before);
}
