//! `pas serve` driven over real sockets: the seed's curl examples and a Python client
//! written like its heartbeat utility, checked with the CLI; the dashboard's API and event
//! stream; AINS polling; the monitor's deregistration; hostile requests that must change
//! nothing; a taken port; SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{tool_available, wait_until, Root};

/// A `pas serve` this test started on a free loopback port; stopped (SIGTERM) when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) port: u16,
    pub(crate) token: String,
}

impl Server {
    pub(crate) fn start(root: &Root, extra: &[&str]) -> Server {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--request-timeout", "1"];
        args.extend_from_slice(extra);
        let mut child = root
            .cmd(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // The first line names the address; read it on a thread so a server that never
        // prints fails the test within a bound instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep reading so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("pas serve printed where it listens");
        let port = line
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        let token = root.ok(&["serve", "token"]);
        Server { child, port, token }
    }

    fn url(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.port)
    }

    /// One request with the token; (status, body).
    pub(crate) fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        let auth = format!("Bearer {}", self.token);
        http(
            self.port,
            method,
            path,
            &[("Authorization", &auth)],
            body.map(|b| b.to_string()).as_deref(),
        )
    }

    /// A request that must answer 200 with JSON.
    fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, text) = self.call(method, path, body);
        assert_eq!(status, 200, "{method} {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
    }

    /// SIGTERM, then the exit status (within a bound).
    fn stop(mut self) -> std::process::ExitStatus {
        terminate(&self.child);
        let status = wait_exit(&mut self.child, 10.0);
        std::mem::forget(self);
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        terminate(&self.child);
        let _ = wait_exit(&mut self.child, 10.0);
    }
}

fn terminate(child: &Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
}

fn wait_exit(child: &mut Child, seconds: f64) -> std::process::ExitStatus {
    let mut status = None;
    wait_until(seconds, "pas serve to exit", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

/// A whole HTTP/1.1 exchange on a fresh connection (`Connection: close`).
pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    stream.write_all(request.as_bytes()).unwrap();
    read_response(stream)
}

fn read_response(mut stream: TcpStream) -> (u16, String) {
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The error body of a refusal: its status, code, and one line naming `needle`.
fn refused(answer: (u16, String), status: u16, code: u64, needle: &str) {
    let (got, text) = answer;
    assert_eq!(got, status, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(v["code"], code, "{text}");
    let message = v["error"].as_str().unwrap();
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(message.contains(needle), "expected {needle:?} in {message}");
}

#[test]
fn the_seeds_curl_examples_change_the_cell_as_the_cli_sees_it() {
    if !tool_available(
        "curl",
        &["--version"],
        "the seed's examples are curl commands",
    ) {
        return;
    }
    let (root, cell) = seed_root();
    let server = Server::start(&root, &[]);
    let auth = format!("Authorization: Bearer {}", server.token);
    let curl = |args: &[&str]| -> Value {
        let out = Command::new("curl").arg("-sS").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("curl {args:?}: {e}: {text}"))
    };
    // The seed's POST examples, with the port changed and the token added.
    let post = |path: &str, body: &str| -> Value {
        let url = server.url(path);
        curl(&[
            "-X",
            "POST",
            &url,
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
        ])
    };
    // "Check status" and the health checks, as written (reads need no token on loopback).
    let info = curl(&[&server.url("")]);
    assert_eq!(info["cell"], cell.as_str());
    assert_eq!(curl(&[&server.url("/health")])["status"], "ok");
    // Writes as written are refused for want of the token, and change nothing.
    let before = root.snapshot();
    let register = r#"{
    "name": "llama-3.1-8b",
    "type": "model",
    "role": "production",
    "url": "http://127.0.0.1:8050",
    "caps": ["infer", "classify"],
    "labels": {"space": "local", "tier": "2"},
    "ctx_limit": 32768
  }"#;
    let bare = curl(&[
        "-X",
        "POST",
        &server.url("/register"),
        "-H",
        "Content-Type: application/json",
        "-d",
        register,
    ]);
    assert_eq!(bare["code"], 9, "{bare}");
    assert_eq!(root.snapshot(), before);
    // With the token: Register a Service.
    let registered = post("/register", register);
    let id = registered["service_id"].as_str().unwrap().to_string();
    let shown = root.json(&["agent", "show", &cell, &id]);
    assert_eq!(shown["name"], "llama-3.1-8b");
    assert_eq!(shown["capabilities"], json!(["infer", "classify"]));
    assert_eq!(root.agent(&cell, &id)["service"]["type"], "model");
    assert_eq!(root.agent(&cell, &id)["service"]["labels"]["tier"], "2");
    // Reserve Resources.
    post(
        "/reserve",
        r#"{
    "job_id": "J-TRAIN-001",
    "agent": "Q-Tower-Trainer",
    "cpu": 4.0,
    "mem_mb": 8192,
    "gpu": 1,
    "gpu_mem_mb": 4096
  }"#,
    );
    let reservations = root.json(&["reservations", &cell]);
    assert_eq!(reservations[0]["job"], "J-TRAIN-001", "{reservations}");
    assert_eq!(reservations[0]["agent"], "Q-Tower-Trainer");
    // Track Context Usage: 50% is the seed's warning.
    let tracked = post(
        "/track",
        r#"{
    "agent": "Architect",
    "run_id": "R-001",
    "ctx_used": 8000,
    "ctx_limit": 16000
  }"#,
    );
    assert_eq!(tracked["status"], "warning", "{tracked}");
    let budget = root.json(&["budget", &cell]);
    let line = budget["cells"][0]["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == "Architect")
        .unwrap()
        .clone();
    assert_eq!(line["ctx_used"], 8000);
    // Trigger Summarization.
    let summarized = post(
        "/summarize",
        r#"{
    "agent": "Architect",
    "run_id": "R-001",
    "trigger_reason": "hard_max_breach"
  }"#,
    );
    assert_eq!(summarized["status"], "summarized");
    let history = root.json(&["budget", "history", &cell, "Architect"]);
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
    // Asked for, not a breach: the summary says so, with the caller's trigger.
    assert_eq!(
        history[0]["reason"], "summary requested at 50% of the window (trigger: hard_max_breach)",
        "{history}"
    );
    // A trigger that is not a short printable string is refused and changes nothing.
    let before = root.snapshot();
    let bad = post(
        "/summarize",
        r#"{"agent": "Architect", "trigger_reason": ["not", "a", "string"]}"#,
    );
    assert_eq!(bad["code"], 2, "{bad}");
    assert_eq!(root.snapshot(), before);
    // The lists the HMI reads are {"items": [...]}.
    let services = curl(&[&server.url("/services")]);
    assert!(services["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["service_id"] == id.as_str()));
    let found = curl(&[&server.url("/discover?type=model&cap=infer")]);
    assert_eq!(found["items"].as_array().unwrap().len(), 1, "{found}");
}

/// The seed's examples (seed 000, "Register a Service" to "Trigger Summarization"), as
/// written there but for the port: each service's port becomes the server's.
const SEED_EXAMPLES: &str = r#"set -e
curl http://localhost:6121
curl http://localhost:6104/health
curl -X POST http://localhost:6121/register \
  -H "Content-Type: application/json" \
  -d '{
    "name": "llama-3.1-8b",
    "type": "model",
    "role": "production",
    "url": "http://127.0.0.1:8050",
    "caps": ["infer", "classify"],
    "labels": {"space": "local", "tier": "2"},
    "ctx_limit": 32768
  }'
curl -X POST http://localhost:6104/reserve \
  -H "Content-Type: application/json" \
  -d '{
    "job_id": "J-TRAIN-001",
    "agent": "Q-Tower-Trainer",
    "cpu": 4.0,
    "mem_mb": 8192,
    "gpu": 1,
    "gpu_mem_mb": 4096
  }'
curl -X POST http://localhost:6105/track \
  -H "Content-Type: application/json" \
  -d '{
    "agent": "Architect",
    "run_id": "R-001",
    "ctx_used": 8000,
    "ctx_limit": 16000
  }'
curl -X POST http://localhost:6105/summarize \
  -H "Content-Type: application/json" \
  -d '{
    "agent": "Architect",
    "run_id": "R-001",
    "trigger_reason": "hard_max_breach"
  }'
"#;

#[test]
fn the_seeds_examples_run_unchanged_but_for_the_port_with_trust_loopback() {
    if !tool_available(
        "curl",
        &["--version"],
        "the seed's examples are curl commands",
    ) {
        return;
    }
    let (root, cell) = seed_root();
    let script = |port: u16| {
        ["6121", "6109", "6104", "6105"]
            .iter()
            .fold(SEED_EXAMPLES.to_string(), |s, seed_port| {
                s.replace(
                    &format!("localhost:{seed_port}"),
                    &format!("localhost:{port}"),
                )
            })
    };
    let run = |port: u16| {
        Command::new("sh")
            .args(["-c", &script(port)])
            .output()
            .unwrap()
    };
    // Without --trust-loopback the writes are refused (curl itself succeeds: a 401 is an
    // answer) and nothing changes.
    let guarded = Server::start(&root, &[]);
    let before = root.snapshot();
    let out = run(guarded.port);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("needs the server's bearer token"),
        "{out:?}"
    );
    assert_eq!(root.snapshot(), before);
    guarded.stop();
    // With it, the same script changes the cell as the CLI sees it.
    let trusting = Server::start(&root, &["--trust-loopback"]);
    let out = run(trusting.port);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(!stdout.contains("\"error\""), "{stdout}");
    let services = root.json(&["agent", "list", &cell]);
    assert!(
        services
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "llama-3.1-8b"),
        "{services}"
    );
    let reservations = root.json(&["reservations", &cell]);
    assert_eq!(reservations[0]["job"], "J-TRAIN-001", "{reservations}");
    let history = root.json(&["budget", "history", &cell, "Architect"]);
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
    trusting.stop();
}

/// A client written like the seed's registry heartbeat utility, with urllib only.
const PY_CLIENT: &str = r#"
import json, sys, time, urllib.request

REGISTRY_URL, TOKEN = sys.argv[1], sys.argv[2]

def call(method, path, payload):
    request = urllib.request.Request(
        REGISTRY_URL + path,
        data=json.dumps(payload).encode(),
        method=method,
        headers={"Content-Type": "application/json", "Authorization": "Bearer " + TOKEN},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, json.loads(response.read())

status, body = call("POST", "/register", {
    "service_id": "tron-heartbeat-monitor",
    "name": "TRON Heartbeat Monitor",
    "type": "agent",
    "role": "production",
    "url": "http://localhost:6109",
    "caps": ["health_monitoring", "timeout_detection", "service_alerts"],
    "labels": {"tier": "core", "category": "infrastructure", "port": 6109},
    "heartbeat_interval_s": 30,
    "ttl_s": 90,
})
assert status == 200, (status, body)
for beat in range(3):
    status, body = call("PUT", "/heartbeat", {"service_id": "tron-heartbeat-monitor", "status": "ok"})
    assert status == 200 and body["status"] == "ok", (status, body)
with urllib.request.urlopen(REGISTRY_URL + "/services", timeout=5) as response:
    items = json.loads(response.read())["items"]
print(json.dumps([s for s in items if s["service_id"] == "tron-heartbeat-monitor"][0]))
"#;

#[test]
fn a_python_client_like_the_seeds_utility_and_pas_agent_beat_share_one_agent_file() {
    if !tool_available("python3", &["--version"], "the client is a Python script") {
        return;
    }
    let root = Root::new();
    let cell = root.cell("hmi");
    let server = Server::start(&root, &[]);
    let script = root.path.join("client.py");
    std::fs::write(&script, PY_CLIENT).unwrap();
    let out = Command::new("python3")
        .arg(&script)
        .arg(format!("http://127.0.0.1:{}", server.port))
        .arg(&server.token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["name"], "TRON Heartbeat Monitor");
    assert_eq!(seen["status"], "ok");
    let shown = root.json(&["agent", "show", &cell, "tron-heartbeat-monitor"]);
    assert_eq!(shown["heartbeat_count"], 3, "{shown}");
    assert_eq!(shown["health"], "healthy");
    // The registration set the agent's heartbeat policies.
    let interval = root.json(&["policy", "show", &cell, "tron-heartbeat-monitor"]);
    assert!(
        interval.to_string().contains("heartbeat_interval"),
        "{interval}"
    );
    // A beat from the CLI lands in the same file the server reads.
    root.ok(&[
        "agent",
        "beat",
        &cell,
        "tron-heartbeat-monitor",
        "--note",
        "from the cli",
    ]);
    let service = server.ok("GET", "/services/tron-heartbeat-monitor", None);
    assert_eq!(
        service["last_heartbeat_ts"],
        root.agent(&cell, "tron-heartbeat-monitor")["last_heartbeat"]
    );
    assert_eq!(
        root.agent(&cell, "tron-heartbeat-monitor")["heartbeat_count"],
        4
    );
    // And one over HTTP after it counts on.
    server.ok(
        "PUT",
        "/heartbeat",
        Some(&json!({"service_id": "tron-heartbeat-monitor"})),
    );
    assert_eq!(
        root.agent(&cell, "tron-heartbeat-monitor")["heartbeat_count"],
        5
    );
}

#[test]
fn the_dashboards_api_is_the_clis_status_controls_and_event_stream() {
    let root = Root::new();
    let cell = root.cell("dash");
    root.ok(&["agent", "add", &cell, "a1"]);
    root.ok(&["agent", "beat", &cell, "a1"]);
    let server = Server::start(&root, &[]);
    let status = server.ok("GET", "/api/status", None);
    let cli = root.json(&["status", "--all"]);
    assert_eq!(status["cells"][0]["id"], cli["cells"][0]["id"]);
    assert_eq!(status["cells"][0]["agents"][0]["id"], "a1");
    assert_eq!(status["totals"], cli["totals"], "{status}");
    // The event stream, from now: a pause shows up as its event.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    reader.read_line(&mut head).unwrap();
    assert!(head.contains(" 200 "), "{head}");
    // Nothing is sent before a change; make one once the stream is open.
    let paused = server.ok("POST", &format!("/api/cells/{cell}/agents/a1/pause"), None);
    assert_eq!(paused["status"], "paused", "{paused}");
    assert_eq!(root.agent(&cell, "a1")["status"], "paused");
    let mut kind = None;
    let mut data = None;
    for _ in 0..200 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(k) = line.trim().strip_prefix("event: ") {
            kind = Some(k.to_string());
        }
        if let Some(d) = line.trim().strip_prefix("data: ") {
            data = Some(serde_json::from_str::<Value>(d).unwrap());
            break;
        }
    }
    assert_eq!(kind.as_deref(), Some("agent.status"));
    let data = data.unwrap();
    assert_eq!(data["cell"], cell.as_str());
    assert_eq!(data["agent"], "a1");
    // The same event, as `pas events --json` prints it.
    let events = root.ok(&["--json", "events", &cell, "--kind", "agent.status"]);
    let printed: Value = serde_json::from_str(events.lines().last().unwrap()).unwrap();
    assert_eq!(printed, data);
    // Resume, and the requests of a cell with none pending.
    server.ok("POST", &format!("/api/cells/{cell}/agents/a1/resume"), None);
    assert_eq!(root.agent(&cell, "a1")["status"], "active");
    assert_eq!(
        server.ok("GET", &format!("/api/cells/{cell}/requests"), None),
        json!({"items": []})
    );
    refused(
        server.call(
            "POST",
            &format!("/api/cells/{cell}/requests/r-12345678/approve"),
            None,
        ),
        404,
        3,
        "no pending request",
    );
    refused(
        server.call(
            "POST",
            &format!("/api/cells/{cell}/agents/a1/explode"),
            None,
        ),
        404,
        3,
        "no agent action",
    );
    // An acting agent meets the permissions the CLI applies.
    root.ok(&["agent", "add", &cell, "a2"]);
    let auth = format!("Bearer {}", server.token);
    let (code, text) = http(
        server.port,
        "POST",
        &format!("/api/cells/{cell}/agents/a1/pause"),
        &[("Authorization", &auth), ("X-Pas-As", "a2")],
        None,
    );
    let cli = root.run(&[
        "--as", "a2", "agent", "set", &cell, "a1", "--status", "paused",
    ]);
    assert_eq!(cli.code, 9, "{}", cli.stderr);
    refused(
        (code, text),
        403,
        9,
        cli.stderr.trim().trim_start_matches("pas: "),
    );
    // The dashboard page, and JSON for everyone else.
    let (code, page) = http(server.port, "GET", "/", &[("Accept", "text/html")], None);
    assert_eq!(code, 200);
    assert!(page.contains("<html"), "{page}");
    let (_, openapi) = http(server.port, "GET", "/openapi.json", &[], None);
    let openapi: Value = serde_json::from_str(&openapi).unwrap();
    assert!(openapi["paths"]["/heartbeat"]["put"].is_object());
    let (_, metrics) = http(server.port, "GET", "/metrics", &[], None);
    assert!(metrics.contains("pas_serve_requests_total"), "{metrics}");
    assert!(metrics.contains("pas_agents"), "{metrics}");
}

#[test]
fn an_ains_agent_registers_beats_polls_a_task_and_completes_it() {
    let root = Root::new();
    let cell = root.cell("ains");
    let server = Server::start(&root, &[]);
    let agent = server.ok(
        "POST",
        "/ains/agents",
        Some(&json!({"agent_id": "sample-agent-13fbe3cc", "display_name": "Sample agent"})),
    );
    assert_eq!(agent["agent_id"], "sample-agent-13fbe3cc");
    server.ok("POST", "/ains/agents/sample-agent-13fbe3cc/capabilities", Some(&json!({
        "name": "summarize", "input_schema": {"type": "object"}, "output_schema": {"type": "object"}, "pricing_model": "free"
    })));
    let beat = server.ok(
        "POST",
        "/ains/agents/sample-agent-13fbe3cc/heartbeat",
        Some(&json!({
            "timestamp": 1764590000, "status": "ACTIVE", "uptime_ms": 1200, "metrics": {}
        })),
    );
    assert_eq!(beat["acknowledged"], true);
    assert_eq!(beat["agent_health_status"], "ACTIVE");
    refused(
        server.call(
            "POST",
            "/ains/agents/sample-agent-13fbe3cc/heartbeat",
            Some(&json!({"timestamp": 1, "status": "AVAILABLE", "uptime_ms": 1})),
        ),
        400,
        2,
        "AVAILABLE",
    );
    let shown = root.json(&["agent", "show", &cell, "sample-agent-13fbe3cc"]);
    assert_eq!(shown["capabilities"], json!(["summarize"]));
    assert_eq!(shown["reported_status"], "ACTIVE", "{shown}");
    // Nothing to do yet, then a task from the CLI is claimed by polling.
    assert_eq!(
        server.ok("GET", "/ains/agents/sample-agent-13fbe3cc/tasks", None),
        json!({"tasks": []})
    );
    root.ok(&["task", "add", &cell, "t1", "--title", "Summarize the run"]);
    let polled = server.ok("GET", "/ains/agents/sample-agent-13fbe3cc/tasks", None);
    assert_eq!(polled["tasks"][0]["task_id"], "t1", "{polled}");
    server.ok(
        "POST",
        "/ains/tasks/t1/complete",
        Some(&json!({"agent_id": "sample-agent-13fbe3cc"})),
    );
    let task = root.json(&["task", "show", &cell, "t1"]);
    assert_eq!(task["status"], "completed", "{task}");
}

#[test]
fn the_monitor_marks_a_silent_service_down_then_deregisters_it() {
    let root = Root::new();
    let cell = root.cell("tron");
    let server = Server::start(&root, &[]);
    server.ok(
        "POST",
        "/register",
        Some(&json!({
            "service_id": "flaky", "name": "flaky", "heartbeat_interval_s": 0.3, "ttl_s": 0.9
        })),
    );
    server.ok("PUT", "/heartbeat", Some(&json!({"service_id": "flaky"})));
    wait_until(15.0, "the monitor to deregister the silent service", || {
        server.call("GET", "/services/flaky", None).0 == 404
    });
    root.run(&["agent", "show", &cell, "flaky"])
        .refused(3, "no agent flaky");
    let (_, alerts) = http(server.port, "GET", "/alerts", &[], None);
    let kinds: Vec<String> = alerts
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["alert"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(kinds.contains(&"down".to_string()), "{alerts}");
    assert!(kinds.contains(&"removed".to_string()), "{alerts}");
    let stats = server.ok("GET", "/stats", None);
    assert_eq!(stats["deregistered"], 1, "{stats}");
    // With two cells a request names its own: header, path prefix, or neither (refused).
    let other = root.cell("other");
    refused(server.call("GET", "/services", None), 400, 2, "names none");
    let prefixed = format!("/cells/{other}/register");
    server.ok(
        "POST",
        &prefixed,
        Some(&json!({"service_id": "elsewhere", "name": "elsewhere"})),
    );
    assert_eq!(root.agent(&other, "elsewhere")["name"], "elsewhere");
    let (_, listed) = http(
        server.port,
        "GET",
        "/services",
        &[("X-Pas-Cell", "other")],
        None,
    );
    assert!(listed.contains("\"elsewhere\""), "{listed}");
}

#[test]
fn hostile_requests_get_4xx_change_nothing_and_the_server_keeps_serving() {
    let root = Root::new();
    let cell = root.cell("hostile");
    root.ok(&["agent", "add", &cell, "a1"]);
    let server = Server::start(&root, &[]);
    let before = root.snapshot();
    let auth = format!("Bearer {}", server.token);
    let with_token = [("Authorization", auth.as_str())];
    // Oversized body.
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(2 << 20));
    refused(
        http(server.port, "POST", "/register", &with_token, Some(&big)),
        413,
        2,
        "over",
    );
    // Bad JSON, JSON that is not an object.
    refused(
        http(
            server.port,
            "POST",
            "/register",
            &with_token,
            Some("{\"name\": "),
        ),
        400,
        2,
        "not JSON",
    );
    refused(
        http(server.port, "PUT", "/heartbeat", &with_token, Some("[1]")),
        400,
        2,
        "not an object",
    );
    // Bad ids, in a path, a body and a header.
    refused(
        server.call(
            "POST",
            &format!("/api/cells/{cell}/agents/..%2Fx/pause"),
            None,
        ),
        400,
        2,
        "invalid agent id",
    );
    refused(
        server.call("POST", "/api/cells/../agents/a1/stop", None),
        400,
        2,
        "invalid cell id",
    );
    refused(
        server.call("PUT", "/heartbeat", Some(&json!({"service_id": "../x"}))),
        400,
        2,
        "invalid agent id",
    );
    refused(
        http(
            server.port,
            "GET",
            "/services",
            &[("X-Pas-Cell", "../x")],
            None,
        ),
        404,
        3,
        "no cell matches",
    );
    refused(
        server.call("GET", "/cells/..%2Fx/services", None),
        400,
        2,
        "invalid cell id",
    );
    // Missing and wrong tokens.
    refused(
        http(
            server.port,
            "POST",
            &format!("/api/cells/{cell}/agents/a1/pause"),
            &[],
            None,
        ),
        401,
        9,
        "bearer token",
    );
    refused(
        http(
            server.port,
            "POST",
            &format!("/api/cells/{cell}/agents/a1/pause"),
            &[("Authorization", "Bearer nope")],
            None,
        ),
        401,
        9,
        "wrong",
    );
    refused(
        http(server.port, "GET", "/ains/agents/a1/tasks", &[], None),
        401,
        9,
        "bearer token",
    );
    // Unknown fields of a registration that breaks the rules.
    refused(
        server.call(
            "POST",
            "/register",
            Some(&json!({"name": "x", "type": "robot"})),
        ),
        400,
        2,
        "\"type\" is \"robot\"",
    );
    // A slow client: half a body, then nothing: 408 within the request timeout.
    let mut slow = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    slow.write_all(format!("POST /register HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 100\r\n\r\n{{\"na").as_bytes()).unwrap();
    let (status, _) = read_response(slow);
    assert_eq!(status, 408);
    // Half the headers, then nothing: the connection is closed without an answer.
    let mut half = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    half.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    half.write_all(b"GET /health HTTP/1.1\r\nHo").unwrap();
    let mut rest = Vec::new();
    let _ = half.read_to_end(&mut rest);
    assert!(
        !String::from_utf8_lossy(&rest).contains(" 200 "),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    // Nothing changed, and the server still answers.
    assert_eq!(root.snapshot(), before);
    assert_eq!(server.ok("GET", "/health", None)["status"], "ok");
}

#[test]
fn a_taken_port_is_one_line_and_exit_6() {
    let root = Root::new();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    root.run(&["serve", "--listen", &format!("127.0.0.1:{port}")])
        .refused(6, "the port is taken");
    root.run(&["serve", "--listen", "localhost"])
        .refused(2, "not an address and port");
}

#[test]
fn the_token_is_private_rotates_at_once_and_sigterm_stops_the_server() {
    let root = Root::new();
    root.cell("token");
    let server = Server::start(&root, &[]);
    let file = root.path.join(".pas/serve-token");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let body = json!({"name": "svc", "service_id": "svc"});
    server.ok("POST", "/register", Some(&body));
    let old = server.token.clone();
    let new = root.ok(&["serve", "token", "--rotate"]);
    assert_ne!(new, old);
    let with = |t: &str| {
        http(
            server.port,
            "POST",
            "/promote",
            &[("Authorization", &format!("Bearer {t}"))],
            Some(&json!({"service_id": "svc", "role": "staging"}).to_string()),
        )
    };
    refused(with(&old), 401, 9, "wrong");
    assert_eq!(with(&new).0, 200);
    // An open event stream does not hold up SIGTERM.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    assert!(server.stop().success());
}

/// The machine the seed's resource manager assumed (10 cores, 32 GB, 1 GPU, 8 GB of GPU
/// memory) as the root's capacity: reservations must fit the machine too, and this one may
/// have fewer cores and no GPU.
/// A root on the seed's machine with one cell holding the agents the seed's examples name
/// and the seed's default quotas.
fn seed_root() -> (Root, String) {
    let root = Root::new();
    seed_machine(&root);
    let cell = root.cell("seed");
    root.ok(&["agent", "add", &cell, "Q-Tower-Trainer"]);
    root.ok(&["agent", "add", &cell, "Architect"]);
    root.ok(&[
        "quota",
        "set",
        &cell,
        "--cpu",
        "10",
        "--mem",
        "32768MiB",
        "--gpu",
        "1",
        "--gpu-mem",
        "8192MiB",
    ]);
    (root, cell)
}

fn seed_machine(root: &Root) {
    std::fs::write(
        root.path.join("pas.toml"),
        "[capacity]\ncpu = 10\nmem_mb = 32000\ngpu = 1\ngpu_mem_mb = 8000\n",
    )
    .unwrap();
}
