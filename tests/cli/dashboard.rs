//! The dashboard of `pas serve` in a real headless Chromium, driven through chromedriver
//! (WebDriver: JSON over HTTP, spoken here with a plain `TcpStream`): it loads without a
//! console error, shows the root's fleet (tree, cards, a task, a reservation), follows an
//! agent killed with SIGKILL and revived by `pas watch`, shows the server's refusal of a
//! wrong token, approves a revival request and pauses an agent with its buttons (checked in
//! the agent files), and fits a phone's 360 px. Set `PAS_DASHBOARD_SCREENSHOT=FILE` to save
//! what it shows (docs/dashboard.png is made this way).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{tool_available, wait_until, Root};

/// Agents that beat with progress and context use, like a worker part way through a task.
const WORKER: &str = r#"n=0
while true; do
  n=$((n+1))
  pas agent beat --progress "0.$(( (n % 9) + 1 ))" --ctx-used $((30000 + n * 500)) --ctx-limit 100000 >/dev/null
  sleep 0.3
done"#;

/// An unused loopback port (the listener is closed again at once).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request: the status and the body. The body is read by its
/// `Content-Length` (chromedriver answers `Connection: close` but keeps the connection).
fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let (head_len, head) = loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break (
                at + 4,
                String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase(),
            );
        }
    };
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().to_string())
    };
    let length: Option<usize> = header("content-length").and_then(|v| v.parse().ok());
    let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
    loop {
        let have = &raw[head_len..];
        let complete = match length {
            Some(n) => have.len() >= n,
            None if chunked => have.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&raw[head_len..]).into_owned();
    Ok((code, if chunked { unchunk(&text) } else { text }))
}

/// The body of a chunked response.
fn unchunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// Standard base64, for the screenshot WebDriver sends.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .map(value)
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | (u32::from(*d) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// A child process in a group of its own, killed (the whole group) when dropped.
struct Group(Child);

impl Group {
    fn spawn(cmd: &mut Command) -> Group {
        use std::os::unix::process::CommandExt;
        Group(cmd.process_group(0).spawn().unwrap())
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.0.id() as i32).unwrap();
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.signal(rustix::process::Signal::KILL);
        let _ = self.0.wait();
    }
}

/// chromedriver on a free port with one headless Chromium session.
struct Browser {
    port: u16,
    session: String,
    _driver: Group,
    _profile: tempdir::Dir,
}

/// A directory removed when dropped (Chromium's profile).
mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Browser {
    /// Whether Chromium and chromedriver are here; see [`tool_available`].
    fn available() -> bool {
        let why = "the dashboard test drives the page in headless Chromium; install it \
                   (apt-get install -y chromium chromium-driver)";
        tool_available("chromium", &["--version"], why)
            && tool_available("chromedriver", &["--version"], why)
    }

    /// chromedriver and a session (a second or two: the test starts it in a thread while
    /// it makes its root).
    fn start() -> Browser {
        let port = free_port();
        let driver = Group::spawn(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_until(
            15.0,
            "chromedriver to answer",
            || matches!(http(port, "GET", "/status", None), Ok((200, body)) if body.contains("\"ready\":true")),
        );
        let profile = tempdir::Dir(
            std::env::temp_dir().join(format!("pas-chromium-{}", uuid::Uuid::new_v4())),
        );
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", "--window-size=1280,1000",
                         format!("--user-data-dir={}", profile.0.display())],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let (code, body) = http(port, "POST", "/session", Some(&caps)).unwrap();
        assert_eq!(code, 200, "chromedriver refused a session: {body}");
        let reply: Value = serde_json::from_str(&body).unwrap();
        let session = reply["value"]["sessionId"].as_str().unwrap().to_string();
        Browser {
            port,
            session,
            _driver: driver,
            _profile: profile,
        }
    }

    /// A WebDriver command of this session; its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("/session/{}{path}", self.session);
        let (code, text) = http(self.port, method, &url, body.as_ref()).unwrap();
        let reply: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"));
        assert_eq!(code, 200, "{method} {path}: {reply}");
        reply["value"].clone()
    }

    fn open(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// The WebDriver id of the element `css` finds.
    fn element(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        match found["element-6066-11e4-a52e-4f735466cecf"].as_str() {
            Some(id) => id.to_string(),
            None => panic!("no element {css}: {found}"),
        }
    }

    /// Clicks the element `css` finds, as a user would (WebDriver's element click).
    fn click(&self, css: &str) {
        let id = self.element(css);
        self.call("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    /// Types `text` into the element `css` finds.
    fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// The page's text as a reader sees it.
    fn text(&self) -> String {
        self.js("return document.body.innerText;")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Console messages and page errors at level SEVERE since the last call.
    fn severe_logs(&self) -> Vec<String> {
        let logs = self.call("POST", "/se/log", Some(json!({"type": "browser"})));
        logs.as_array()
            .unwrap()
            .iter()
            .filter(|l| l["level"] == "SEVERE")
            .map(|l| l["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    fn resize(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    fn screenshot(&self) -> Vec<u8> {
        base64_decode(self.call("GET", "/screenshot", None).as_str().unwrap())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closes Chromium; the driver's group is killed after.
        let _ = http(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
    }
}

/// A cell's agents, stopped when dropped so that a failed test leaves none running.
struct Fleet<'a> {
    root: &'a Root,
    agents: Vec<(String, &'static str)>,
}

impl Fleet<'_> {
    /// Adds `agent` running `command` to `cell` and starts it.
    fn start(&mut self, cell: &str, agent: &'static str, command: &str) {
        self.root.ok(&[
            "agent", "add", cell, agent, "--role", "write", "--", command,
        ]);
        self.root.ok(&["agent", "start", cell, agent]);
        self.agents.push((cell.to_string(), agent));
    }

    fn pid(&self, agent: &str) -> i64 {
        let (cell, _) = self.agents.iter().find(|(_, a)| *a == agent).unwrap();
        self.root.agent(cell, agent)["pid"].as_i64().unwrap_or(0)
    }
}

impl Drop for Fleet<'_> {
    fn drop(&mut self) {
        for (cell, agent) in &self.agents {
            let _ = self
                .root
                .run(&["agent", "stop", cell, agent, "--grace", "1"]);
        }
    }
}

fn kill9(pid: i64) {
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
}

#[test]
fn the_dashboard_shows_the_fleet_follows_revivals_and_its_controls_work() {
    if !Browser::available() {
        return;
    }
    let browser = std::thread::spawn(Browser::start);
    let root = Root::new();
    let quick = json!({"restart_delay_seconds": 0, "heartbeat_interval": 1, "startup_grace": 5,
                       "stop_grace": 1, "storm_limit": 0});
    let notes = root.cell("Release notes");
    root.policies(&notes, quick.clone());
    // A cell whose dead agents wait for an operator's approval.
    let audit = root.cell("Audit");
    let mut ask = quick;
    ask["auto_revive"] = json!("ask");
    root.policies(&audit, ask);
    let worker = root.script("worker.sh", WORKER);
    root.ok(&["task", "add", &notes, "outline", "--title", "Outline"]);
    root.ok(&["quota", "set", &notes, "--cpu", "8", "--mem", "16GB"]);
    let mut fleet = Fleet {
        root: &root,
        agents: Vec::new(),
    };
    for a in ["lead", "writer_1", "writer_2"] {
        fleet.start(&notes, a, &worker);
    }
    fleet.start(&audit, "auditor", &worker);
    root.ok(&["task", "claim", &notes, "--agent", "lead"]);
    root.ok(&[
        "reserve", &notes, "--job", "build-1", "--agent", "writer_1", "--cpu", "2",
    ]);

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut serve = root.cmd(&["serve", "--listen", &listen]);
    let log = std::fs::File::create(root.path.join("serve.log")).unwrap();
    let _serve = Group::spawn(serve.stdout(Stdio::null()).stderr(log));
    wait_until(15.0, "pas serve to answer /health", || {
        matches!(http(port, "GET", "/health", None), Ok((200, _)))
    });
    let mut watch = root.cmd(&["watch", "--interval", "1"]);
    let _watch = Group::spawn(watch.stdout(Stdio::null()).stderr(Stdio::null()));
    let browser = browser
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));

    // The fleet: every agent healthy, the lead's task in the tree, a reservation, the events
    // stream live.
    browser.open(&format!("http://{listen}/"));
    wait_until(15.0, "the page to show every agent healthy", || {
        browser.js("return [...document.querySelectorAll('.card')]
                .filter(c => c.dataset.health === 'healthy').length;")
            == 4
    });
    let text = browser.text();
    for needle in [
        "Release notes",
        "Audit",
        "lead",
        "writer_1",
        "writer_2",
        "auditor",
        "task outline",
    ] {
        assert!(
            text.contains(needle),
            "{needle:?} missing from the page:\n{text}"
        );
    }
    let nodes = browser.js("return document.querySelectorAll('#tree svg .node.agent').length;");
    assert_eq!(nodes, 4, "one tree node per agent");
    // writer_1's reservation against the cell's quota, as a bar on its card.
    let bars = browser.js(
        "return document.querySelector('.card[data-agent=\"writer_1\"] .resources').innerText;",
    );
    assert!(
        bars.as_str()
            .is_some_and(|t| t.contains("2 cores of 8 cores")),
        "{bars}"
    );
    wait_until(10.0, "the events stream to be live", || {
        browser.js("return document.getElementById('conn').dataset.state;") == "live"
    });

    // Two agents killed with SIGKILL: the watch revives one; the other's revival waits for
    // the Approve button (the first control: the page asks for the token).
    let (writer, auditor) = (fleet.pid("writer_1"), fleet.pid("auditor"));
    kill9(writer);
    kill9(auditor);
    let shows_pid = |agent: &str, pid: i64| {
        let script = format!(
            "return document.querySelector('.card[data-agent=\"{agent}\"] [data-fact=proc]').textContent;"
        );
        browser
            .js(&script)
            .as_str()
            .is_some_and(|s| s.contains(&format!("pid {pid}")))
    };
    wait_until(
        20.0,
        "the page to show writer_1 revived with a new pid",
        || {
            let new = fleet.pid("writer_1");
            new != 0
                && new != writer
                && shows_pid("writer_1", new)
                && browser.text().contains("agent.revived")
        },
    );
    assert!(
        !shows_pid("writer_1", writer),
        "the old pid is gone from the card"
    );
    wait_until(20.0, "the page to show auditor's revival request", || {
        browser.js("return document.querySelectorAll('#requests li[data-agent=auditor] button[data-action=approve]').length;") == 1
    });
    if let Ok(path) = std::env::var("PAS_DASHBOARD_SCREENSHOT") {
        // A moment worth showing: one agent revived, another waiting for approval.
        browser.resize(1280, 1150);
        std::fs::write(&path, browser.screenshot()).unwrap();
    }
    let token = std::fs::read_to_string(root.path.join(".pas/serve-token")).unwrap();
    let dialog_open = || browser.js("return document.getElementById('token-dialog').open;");
    let approve = "#requests li[data-agent=auditor] button[data-action=approve]";
    // A wrong token first: the server's error is shown, the token forgotten, nothing done.
    browser.click(approve);
    wait_until(5.0, "the token dialog", || dialog_open() == true);
    browser.type_into("#token-input", "not-the-token");
    browser.click("#token-form button[value=save]");
    wait_until(10.0, "the server's refusal shown", || {
        browser
            .js("return document.getElementById('notice').textContent;")
            .as_str()
            .is_some_and(|t| t.contains("the bearer token is wrong"))
    });
    assert_eq!(
        fleet.pid("auditor"),
        0,
        "a refused approval revives nothing"
    );
    browser.click(approve);
    wait_until(5.0, "the token dialog again", || dialog_open() == true);
    browser.type_into("#token-input", token.trim());
    browser.click("#token-form button[value=save]");
    // Pause at once, with the token kept: the agent file says paused, the card offers
    // Resume.
    browser.click(".card[data-agent=\"writer_2\"] button[data-action=pause]");
    wait_until(
        20.0,
        "auditor revived by the approval, shown with its new pid",
        || {
            let new = fleet.pid("auditor");
            new != 0 && new != auditor && shows_pid("auditor", new)
        },
    );
    let kinds = root.event_kinds(&audit);
    assert!(
        kinds.contains(&"agent.revive_approved".to_string()),
        "{kinds:?}"
    );
    wait_until(10.0, "writer_2 paused in its file", || {
        root.json(&["agent", "show", &notes, "writer_2"])["status"] == "paused"
    });
    assert_eq!(dialog_open(), false, "a kept token is not asked for again");
    wait_until(10.0, "the page to offer Resume for writer_2", || {
        browser.js(
            "const c = document.querySelector('.card[data-agent=\"writer_2\"]');
             return c.dataset.status === 'paused'
                 && !c.querySelector('button[data-action=resume]').hidden;",
        ) == true
    });

    // A phone's width: nothing wider than the screen.
    browser.resize(360, 800);
    wait_until(
        5.0,
        "a 360 px wide layout with no sideways scrolling",
        || {
            browser
                .js("return [window.innerWidth, document.documentElement.scrollWidth];")
                .as_array()
                .is_some_and(|v| v[0].as_i64() <= Some(400) && v[1].as_i64() <= v[0].as_i64())
        },
    );

    // Nothing but the browser's own line for the refused request.
    let severe = browser.severe_logs();
    let unexpected: Vec<&String> = severe
        .iter()
        .filter(|l| !l.contains("status of 401"))
        .collect();
    assert!(unexpected.is_empty(), "console errors: {severe:#?}");
    assert_eq!(severe.len(), 1, "the refused request: {severe:#?}");
}
