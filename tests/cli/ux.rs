//! Everyday operation: `pas logs` like journalctl, the status glance at 80 columns, and
//! the shell's details (completion of a spaced name in a real bash).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use serde_json::json;

use crate::harness::{pas_bin, supervisors_of, tool_available, wait_until, Root};

/// A cell with agent `a1` running a script that prints `$COUNT` numbered lines and exits 3.
fn counting_agent(root: &Root) -> String {
    let cell = root.cell("Logs");
    let script = root.script(
        "count.sh",
        r#"i=0; while [ "$i" -lt "$COUNT" ]; do echo "line $i of a run that writes a lot"; i=$((i+1)); done; exit 3"#,
    );
    root.ok(&["agent", "add", &cell, "a1", "--", &script]);
    // One run per start: its supervisor files a revival request instead of restarting it.
    root.policies(
        &cell,
        json!({"log_max_bytes": 1000, "log_keep": 2, "auto_revive": "ask"}),
    );
    cell
}

/// Runs the agent once with `count` lines and waits until its supervisor recorded the end.
fn run_once(root: &Root, cell: &str, count: u32, run: u64) {
    root.ok(&[
        "agent",
        "set",
        cell,
        "a1",
        "--env",
        &format!("COUNT={count}"),
    ]);
    root.ok(&["agent", "start", cell, "a1"]);
    wait_until(15.0, "the run's end", || {
        let a = root.agent(cell, "a1");
        // The end of an earlier run stays recorded until this one's replaces it.
        a["runs"] == run && a["pid"].is_null() && a["exit"]["code"] == 3
    });
    // Its supervisor applies the rules after recording the end (a revival request): done
    // once it is gone. Found in `/proc`, not in the agent file: a short run may be over,
    // and its supervisor gone from the file, before the start's reply is read.
    wait_until(15.0, "its supervisor to end", || {
        supervisors_of(root, cell, "a1").is_empty()
    });
}

/// The text after `TIME a1: ` of each line, checking that TIME is a time.
fn texts(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| {
            let (time, text) = l.split_once(" a1: ").unwrap_or_else(|| panic!("{l:?}"));
            assert!(
                chrono::DateTime::parse_from_rfc3339(time).is_ok(),
                "a time first: {l:?}"
            );
            text.to_string()
        })
        .collect()
}

fn numbered(from: u32, to: u32) -> Vec<String> {
    (from..to)
        .map(|i| format!("line {i} of a run that writes a lot"))
        .collect()
}

#[test]
fn logs_are_stamped_marked_rotated_tailed_and_followed() {
    let root = Root::new();
    let cell = counting_agent(&root);
    run_once(&root, &cell, 100, 1);

    // About 6 KB at 1000 bytes a file: rotated, and only the two newest old files kept.
    let logs = root.cell_dir(&cell).join("logs");
    let mut files: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("a1.log"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        3,
        "the current file and log_keep=2 old ones: {files:?}"
    );
    for f in &files {
        let len = std::fs::metadata(logs.join(f)).unwrap().len();
        assert!(len <= 1100, "{f} is {len} bytes");
    }

    // Everything kept, in order, ending with the exit marker.
    let all = texts(&root.ok(&["logs", &cell, "a1"]));
    let last = all.len() - 1;
    assert!(
        all[last].starts_with("-- run 1 exited (pid ") && all[last].ends_with("): exit code 3"),
        "{all:?}"
    );
    let first: u32 = all[0]
        .strip_prefix("line ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{all:?}"));
    assert!(first > 0, "the oldest lines were rotated away");
    assert_eq!(all[..last], numbered(first, 100)[..]);
    // The run survives rotation: its start marker is gone, its lines still belong to it.
    assert_eq!(
        root.ok(&["logs", &cell, "a1", "--run", "1"]),
        root.ok(&["logs", &cell, "a1"])
    );

    // -n, --since (a duration with units, a time), and the agent named by the cell.
    assert_eq!(
        texts(&root.ok(&["logs", &cell, "a1", "-n", "2"])),
        [numbered(99, 100)[0].clone(), all[last].clone()]
    );
    assert_eq!(
        root.ok(&["logs", &cell, "-n", "2"]),
        root.ok(&["logs", &cell, "a1", "-n", "2"])
    );
    assert_eq!(
        texts(&root.ok(&["logs", &cell, "a1", "--since", "1h30m"])),
        all
    );
    assert_eq!(
        root.ok(&["logs", &cell, "a1", "--since", "2999-01-01T00:00:00Z"]),
        ""
    );
    assert_eq!(
        root.ok(&["-q", "logs", &cell, "a1", "-n", "2"]),
        numbered(99, 100)[0]
    );
    let json_line = root.ok(&["--json", "logs", &cell, "a1", "-n", "1"]);
    let v: serde_json::Value = serde_json::from_str(&json_line).unwrap();
    assert_eq!(
        (v["kind"].as_str(), v["run"].as_u64(), v["agent"].as_str()),
        (Some("exited"), Some(1), Some("a1"))
    );

    // Following across rotations: every line of the next run, in order, none lost.
    let mut follower = root
        .cmd(&["logs", &cell, "a1", "-f", "-n", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // It starts with the last line; once that is shown, it is following.
    let mut followed: Vec<String> = Vec::new();
    wait_until(15.0, "the follower's first line", || {
        followed.extend(rx.try_iter());
        !followed.is_empty()
    });
    assert!(followed[0].contains("-- run 1 exited"), "{followed:?}");
    followed.clear();
    // Six rotations in a blink: kept long enough for the follower, which polls every 200 ms.
    root.policies(
        &cell,
        json!({"log_max_bytes": 1000, "log_keep": 20, "auto_revive": "ask"}),
    );
    run_once(&root, &cell, 100, 2);
    wait_until(15.0, "the follower to see run 2 end", || {
        followed.extend(rx.try_iter());
        followed
            .iter()
            .any(|l: &String| l.contains("-- run 2 exited"))
    });
    let _ = follower.kill();
    let _ = follower.wait();
    let followed = texts(&followed.join("\n"));
    assert!(
        followed[0].starts_with("-- run 2 started (pid "),
        "{followed:?}"
    );
    assert_eq!(followed[1..101], numbered(0, 100)[..]);

    // Runs by number and counted back from the latest.
    run_once(&root, &cell, 2, 3);
    let latest = texts(&root.ok(&["logs", &cell, "a1", "--run", "0"]));
    assert_eq!(latest.len(), 4, "{latest:?}");
    assert_eq!(latest[1..3], numbered(0, 2)[..]);
    assert_eq!(
        root.ok(&["logs", &cell, "a1", "--run", "3"]),
        root.ok(&["logs", &cell, "a1", "--run", "0"])
    );
    let before = texts(&root.ok(&["logs", &cell, "a1", "--run", "-1"]));
    assert!(
        before.last().unwrap().starts_with("-- run 2 exited"),
        "{before:?}"
    );

    // Refusals: one line, a documented code, nothing changed.
    let snapshot = root.snapshot();
    root.run(&["logs", &cell, "a1", "--run", "-3"])
        .refused(3, "there is no run -3");
    root.run(&["logs", &cell, "--run", "1"])
        .refused(2, "--run needs an AGENT");
    root.run(&["logs", &cell, "nobody"])
        .refused(3, "no agent nobody");
    root.run(&["logs", &cell, "a1", "--since", "soon"])
        .refused(2, "neither a duration nor a time");
    assert_eq!(root.snapshot(), snapshot);
}

#[test]
fn events_take_a_tail_and_durations_with_units() {
    let root = Root::new();
    let cell = root.cell("Events");
    for a in ["a1", "a2", "a3"] {
        root.ok(&["agent", "add", &cell, a]);
    }
    let last_two = root.ok(&["events", &cell, "-n", "2"]);
    assert_eq!(last_two.lines().count(), 2, "{last_two}");
    assert!(last_two.ends_with("agent a3 added as write"), "{last_two}");
    let all = root.ok(&["events", &cell, "--since", "1h30m"]);
    assert_eq!(all.lines().count(), 4, "{all}");
    // Other duration flags take units too, and keep their range checks.
    root.run(&["agent", "stop", &cell, "a1", "--grace", "2d"])
        .refused(2, "outside 0..86400 seconds");
    root.run(&["agent", "stop", &cell, "a1", "--grace", "soon"])
        .refused(2, "is not a duration");
}

/// A tmux server of its own (a private socket) with one detached session of the given
/// size running `sh`, killed when dropped; `None` (the test is skipped) without tmux.
struct Pane {
    socket: String,
}

impl Pane {
    fn start(width: u16, height: u16, root: &Root) -> Option<Pane> {
        Pane::start_shell(width, height, root, &["sh"])
    }

    fn start_shell(width: u16, height: u16, root: &Root, shell: &[&str]) -> Option<Pane> {
        if !tool_available(
            "tmux",
            &["-V"],
            "terminal tests drive the real binary in a tmux pane; install it \
             (apt-get install -y tmux)",
        ) {
            return None;
        }
        let pane = Pane {
            socket: format!("pas-ux-{}", uuid::Uuid::new_v4().simple()),
        };
        let bin_dir = std::path::Path::new(pas_bin())
            .parent()
            .unwrap()
            .display()
            .to_string();
        let (w, h) = (width.to_string(), height.to_string());
        let path = format!("PATH={bin_dir}:/usr/bin:/bin");
        let pas_root = format!("PAS_ROOT={}", root.path.display());
        let mut args = vec![
            "new-session",
            "-d",
            "-x",
            &w,
            "-y",
            &h,
            "-s",
            "ux",
            "env",
            "-i",
            &path,
            "TERM=xterm-256color",
            "LANG=C.UTF-8",
            "NO_COLOR=1",
            "PAS_AGENTS_AS_ROOT=1",
            &pas_root,
            "PS1=$ ",
        ];
        args.extend_from_slice(shell);
        pane.run(&args);
        pane.wait_for("the shell's prompt", |s| s.trim_end().ends_with('$'));
        Some(pane)
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `text` and, unless `enter` is false, presses Enter.
    fn type_line(&self, text: &str, enter: bool) {
        self.run(&["send-keys", "-t", "ux", "-l", text]);
        if enter {
            self.run(&["send-keys", "-t", "ux", "Enter"]);
        }
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "ux"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "ux"])
    }

    fn wait_for(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            last = self.screen();
            if f(&last) {
                return last;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("timed out waiting for {what}; the screen:\n{last}");
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// Rewrites an agent file the way pas's revival would have left it.
fn edit_agent(root: &Root, cell: &str, agent: &str, f: impl FnOnce(&mut serde_json::Value)) {
    let path = root.cell_dir(cell).join(format!("agents/{agent}.json"));
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut doc);
    std::fs::write(&path, doc.to_string()).unwrap();
}

/// A fleet with an agent in each state: running, backing off, failed, never started.
fn a_fleet_in_every_state(root: &Root) -> (String, i64) {
    let cell = root.cell("A mission with a rather long name");
    let sleeper = root.script("sleeper.sh", "exec sleep 60");
    root.ok(&[
        "agent",
        "add",
        &cell,
        "runner_with_a_long_id",
        "--",
        &sleeper,
    ]);
    let pid: i64 = root
        .ok(&["agent", "start", &cell, "runner_with_a_long_id"])
        .parse()
        .unwrap();
    root.ok(&["agent", "add", &cell, "crasher", "--", &sleeper]);
    let soon = chrono::Utc::now() + chrono::Duration::seconds(90);
    edit_agent(root, &cell, "crasher", |d| {
        d["status"] = json!("active");
        d["restart_count"] = json!(3);
        d["exit"] = json!({"at": chrono::Utc::now().to_rfc3339(), "cause": "exit", "code": 1});
        d["next_restart_at"] = json!(soon.to_rfc3339());
    });
    root.ok(&["agent", "add", &cell, "quitter", "--", &sleeper]);
    edit_agent(root, &cell, "quitter", |d| {
        d["status"] = json!("failed");
        d["failed_reason"] = json!("5 restarts in a row");
    });
    root.ok(&["agent", "add", &cell, "newcomer"]);
    (cell, pid)
}

#[test]
fn status_is_a_process_manager_glance_that_fits_80_columns() {
    let root = Root::new();
    let (cell, pid) = a_fleet_in_every_state(&root);
    // The data, in JSON: state, pid, uptime, the next restart in seconds; null for none.
    let json = root.json(&["status", &cell]);
    let agents = json["cells"][0]["agents"].as_array().unwrap().clone();
    let agent = |id: &str| agents.iter().find(|a| a["id"] == id).unwrap().clone();
    let runner = agent("runner_with_a_long_id");
    assert_eq!(
        (runner["state"].as_str(), runner["pid"].as_i64()),
        (Some("running"), Some(pid))
    );
    assert!(runner["uptime_seconds"].as_f64().is_some(), "{runner}");
    let crasher = agent("crasher");
    assert_eq!(crasher["state"], "backoff");
    let wait = crasher["next_restart_in_seconds"].as_f64().unwrap();
    assert!(wait > 60.0 && wait <= 90.0, "{crasher}");
    assert_eq!(agent("quitter")["state"], "failed");
    let newcomer = agent("newcomer");
    assert!(
        newcomer["state"].is_null() && newcomer["process"].is_null() && newcomer["pid"].is_null(),
        "{newcomer}"
    );

    // On an 80-column terminal: nothing wraps, the states and the countdown are there.
    if tool_available("script", &["-V"], "the status table is checked on a pseudo-terminal made by `script` (apt-get install -y bsdutils)") {
        let out = Command::new("script")
            .args(["-q", "-e", "-c", &format!("stty cols 80 rows 24; {} status", pas_bin()), "/dev/null"])
            .env("PAS_ROOT", &root.path)
            .env("TERM", "xterm")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let screen = String::from_utf8_lossy(&out.stdout).replace('\r', "");
        for line in screen.lines() {
            assert!(line.chars().count() <= 80, "wider than 80 columns: {line:?}\n{screen}");
        }
        let row = |id: &str| {
            screen
                .lines()
                .find(|l| l.trim_start().starts_with(id))
                .unwrap_or_else(|| panic!("{id} in {screen}"))
                .to_string()
        };
        assert!(screen.contains("STATE") && screen.contains("NEXT"), "{screen}");
        assert!(row("runner_with_a_long_id").contains(&format!(" running  {pid} ")), "{screen}");
        let crasher = row("crasher");
        assert!(crasher.contains("backoff") && crasher.contains(" in 1m"), "{crasher}");
        assert!(row("quitter").contains("failed"), "{screen}");
    }
    // In a pipe, every column.
    let piped = root.ok(&["status", &cell]);
    assert!(
        piped.contains("REPORTED") && piped.contains("BEATS"),
        "{piped}"
    );
    // --health keeps the agents in those healths, and a bad one is refused.
    let failed = root.ok(&["status", "--health", "failed,dead"]);
    assert!(
        failed.contains("quitter") && !failed.contains("crasher"),
        "{failed}"
    );
    assert_eq!(
        root.ok(&["status", "--health", "offline"]),
        "no agent in that health"
    );
    root.run(&["status", "--health", "sleepy"])
        .refused(2, "invalid value 'sleepy'");
    root.ok(&[
        "agent",
        "stop",
        &cell,
        "runner_with_a_long_id",
        "--grace",
        "1",
    ]);
}

#[test]
fn status_watch_never_wraps_and_keeps_its_header_in_view() {
    let root = Root::new();
    let cell = root.cell("Crowded");
    for i in 0..10 {
        root.ok(&[
            "agent",
            "add",
            &cell,
            &format!("agent_with_a_long_name_{i:02}"),
        ]);
    }
    let Some(pane) = Pane::start(60, 12, &root) else {
        return;
    };
    pane.type_line("pas status --watch --interval 0.3", true);
    let screen = pane.wait_for("a frame", |s| {
        s.contains("agent_with_a_long_name_00") && s.contains("more line(s)")
    });
    let lines: Vec<&str> = screen.lines().collect();
    assert!(
        lines[0].starts_with("pas status --watch: every 0.3s"),
        "the header stays: {screen}"
    );
    assert!(lines.iter().all(|l| l.chars().count() <= 60), "{screen}");
    pane.keys(&["C-c"]);
    pane.wait_for("the prompt again", |s| s.trim_end().ends_with('$'));
}

#[test]
fn agents_start_once_restart_and_describe_themselves() {
    let root = Root::new();
    let cell = root.cell("Describe");
    let script = root.script("worker.sh", "echo working; exec sleep 60");
    root.ok(&[
        "agent",
        "add",
        &cell,
        "w1",
        "--",
        &script,
        "--token=hunter2",
    ]);
    root.ok(&["agent", "set", &cell, "w1", "--env", "API_KEY=secret-value"]);
    let first: i64 = root.ok(&["agent", "start", &cell, "w1"]).parse().unwrap();
    wait_until(15.0, "the first run's output", || {
        root.ok(&["logs", &cell, "w1"]).contains("working")
    });
    // A start of a running agent changes nothing and says so; exit 0.
    let before = root.snapshot();
    let again = root.run(&["agent", "start", &cell, "w1"]);
    assert_eq!(
        (again.code, again.stdout.trim()),
        (0, first.to_string().as_str()),
        "{}",
        again.stderr
    );
    assert!(again.stderr.contains("already running"), "{}", again.stderr);
    assert!(
        root.snapshot() == before,
        "a start of a running agent changed files"
    );
    // A restart: a new process, a second run in the log.
    let second: i64 = root
        .ok(&["agent", "restart", &cell, "w1", "--grace", "2"])
        .parse()
        .unwrap();
    assert_ne!(first, second);
    wait_until(15.0, "the second run's output", || {
        root.ok(&["logs", &cell, "w1", "--run", "2"])
            .contains("working")
    });
    let shown = root.ok(&["agent", "show", &cell, "w1"]);
    for needle in [
        "state            running".to_string(),
        format!("process          running, pid {second}, up "),
        "runs             2".to_string(),
        "env              API_KEY".to_string(),
        format!(
            "log              {}",
            root.cell_dir(&cell).join("logs/w1.log").display()
        ),
        "--token=***".to_string(),
        "recent events:".to_string(),
        "agent.started".to_string(),
    ] {
        assert!(shown.contains(&needle), "{needle:?} in:\n{shown}");
    }
    assert!(
        !shown.contains("secret-value") && !shown.contains("hunter2"),
        "{shown}"
    );
    let json = root.json(&["agent", "show", &cell, "w1"]);
    assert_eq!(
        (json["state"].as_str(), json["process"].as_str()),
        (Some("running"), Some("running"))
    );
    assert!(
        json["recent_events"]
            .as_array()
            .is_some_and(|e| !e.is_empty()),
        "{json}"
    );
    root.ok(&["agent", "stop", &cell, "w1", "--grace", "2"]);
    let stopped = root.json(&["agent", "show", &cell, "w1"]);
    assert_eq!(stopped["state"], "stopped");
    // A restart of an agent without a command is refused before anything is stopped.
    root.ok(&["agent", "add", &cell, "bare"]);
    root.run(&["agent", "restart", &cell, "bare"])
        .refused(2, "no command");
}

#[test]
fn bash_completes_a_spaced_cell_name_escaped_in_a_real_bash() {
    let root = Root::new();
    let cell = root.cell("Docs sprint");
    root.ok(&["agent", "add", &cell, "writer"]);
    if !tool_available(
        "bash",
        &["--version"],
        "completion is checked in a real bash",
    ) {
        return;
    }
    let Some(pane) = Pane::start_shell(100, 20, &root, &["bash", "--norc", "--noprofile"]) else {
        return;
    };
    pane.type_line("source <(pas completions bash)", true);
    pane.wait_for("the script sourced", |s| {
        s.lines().filter(|l| l.starts_with('$')).count() >= 2
    });
    // Unquoted: the name comes back escaped, and the line runs as it reads.
    pane.type_line("pas cell show Docs", false);
    pane.keys(&["Tab"]);
    pane.wait_for("the escaped name", |s| {
        s.contains("$ pas cell show Docs\\ sprint")
    });
    pane.keys(&["Enter"]);
    pane.wait_for("the cell shown", |s| {
        s.contains(&cell) && s.contains("active")
    });
    pane.keys(&["C-l"]);
    // In an open quote: bash closes it; the agent then completes from that cell.
    pane.type_line("pas agent show \"Docs sp", false);
    pane.keys(&["Tab"]);
    // (and a space after it, which the screen capture trims)
    pane.wait_for("the quoted name, closed", |s| {
        s.contains("$ pas agent show \"Docs sprint\"")
    });
    pane.type_line("wr", false);
    pane.keys(&["Tab"]);
    pane.wait_for("the agent", |s| {
        s.contains("$ pas agent show \"Docs sprint\" writer")
    });
    pane.keys(&["Enter"]);
    pane.wait_for("the agent shown", |s| s.contains("agent writer added"));
}

#[test]
fn man_pages_install_where_man_finds_them_with_exit_status_and_environment() {
    let root = Root::new();
    let dir = root.path.join("share/man");
    let out = root.ok(&["man", "--install", dir.to_str().unwrap()]);
    assert!(
        out.ends_with(&format!("{}", dir.join("man1").display())),
        "{out}"
    );
    let page = std::fs::read_to_string(dir.join("man1/pas-logs.1")).unwrap();
    let exit = page
        .find(".SH \"EXIT STATUS\"")
        .expect("an EXIT STATUS section");
    let env = page
        .find(".SH \"ENVIRONMENT\"")
        .expect("an ENVIRONMENT section");
    assert!(exit < env && page.contains("\\fBPAS_ROOT\\fR"), "{page}");
    root.run(&["man"]).refused(2, "--install");
    if tool_available(
        "man",
        &["--version"],
        "installed pages are looked up with man(1)",
    ) {
        let found = Command::new("man")
            .args(["-w", "pas-agent-restart"])
            .env("MANPATH", &dir)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&found.stdout).trim(),
            dir.join("man1/pas-agent-restart.1").display().to_string()
        );
    }
}

#[test]
fn quiet_prints_ids_and_json_is_json_or_refused() {
    let root = Root::new();
    let a = root.cell("First");
    let b = root.cell("Second");
    root.ok(&["agent", "add", &a, "alpha"]);
    root.ok(&["agent", "add", &b, "beta"]);
    // -q: the agents' ids, not the cells' prefixes that lead the --all table.
    let mut ids: Vec<String> = root
        .ok(&["-q", "agent", "list", "--all"])
        .lines()
        .map(str::to_string)
        .collect();
    ids.sort();
    assert_eq!(ids, ["alpha", "beta"]);
    // One spelling of "no value" in JSON: null, in every command.
    let shown = root.json(&["agent", "show", &a, "alpha"]);
    assert!(
        shown["process"].is_null() && shown["state"].is_null(),
        "{shown}"
    );
    let listed = root.json(&["agent", "list", &a]);
    assert!(listed[0]["process"].is_null(), "{listed}");
    // A command without a JSON form refuses --json rather than print text.
    for (args, name) in [
        (vec!["--json", "metrics"], "pas metrics"),
        (vec!["--json", "completions", "bash"], "pas completions"),
        (vec!["--json", "top"], "pas top"),
        (vec!["--json", "demo"], "pas demo"),
    ] {
        root.run(&args)
            .refused(2, &format!("`{name}` has no JSON form"));
    }
}

#[test]
fn logs_of_an_agent_on_another_host_say_which_host_and_where() {
    let root = Root::new();
    let cell = root.cell("Far");
    root.ok(&["agent", "add", &cell, "a1", "--", "true"]);
    root.ok(&["agent", "add", &cell, "a2", "--", "true"]);
    // a1 ran on host far-away (its supervisor recorded it): its log is there.
    let doc = root.cell_dir(&cell).join("agents/a1.json");
    let mut a1: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&doc).unwrap()).unwrap();
    a1["host"] = json!("far-away");
    std::fs::write(&doc, a1.to_string()).unwrap();
    let log = root.cell_dir(&cell).join("logs/a1.log");
    let on_host = |args: &[&str]| root.run_env(args, "PAS_HOST", "here");
    let said = "the log of agent a1 is on host far-away, not on this one (here)";
    // Nothing of it here: not found here, naming the host, the command and the path there.
    let run = on_host(&["logs", &cell, "a1"]);
    run.refused(3, said);
    let hint = format!(
        "run `pas logs {cell} a1` on far-away (its PAS_HOST or host name): it is {} there",
        log.display()
    );
    assert!(run.stderr.contains(&hint), "{}", run.stderr);
    assert_eq!(run.stdout, "");
    let run = on_host(&["--json", "logs", &cell, "a1"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(
        v,
        json!({"cell": cell, "agent": "a1", "host": "far-away", "log": log.display().to_string()})
    );
    // Lines of an earlier run here are shown, then where the rest is; exit 0.
    std::fs::write(&log, "2026-12-01T10:00:00Z | from an earlier run here\n").unwrap();
    let run = on_host(&["logs", &cell, "a1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(texts(&run.stdout), ["from an earlier run here"]);
    let noted = format!("pas: {said}, at {}", log.display());
    assert!(run.stderr.contains(&noted), "{}", run.stderr);
    // The whole cell: a2's (empty) log here, a note for a1; on a1's own host, as always.
    let run = on_host(&["logs", &cell]);
    assert_eq!(
        (run.code, run.stderr.lines().count()),
        (0, 1),
        "{}",
        run.stderr
    );
    let run = root.run_env(&["logs", &cell, "a1"], "PAS_HOST", "far-away");
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    assert_eq!(texts(&run.stdout), ["from an earlier run here"]);
}

#[test]
fn a_host_name_or_node_lease_pas_cannot_use_is_refused_before_anything_is_written() {
    let root = Root::new();
    let cell = root.cell("Hosts");
    root.ok(&["agent", "add", &cell, "a1"]);
    let before = root.snapshot();
    for bad in ["a b", "a/b", ".hidden"] {
        root.run(&["--host", bad, "agent", "beat", &cell, "a1"])
            .refused(2, "is not usable");
        root.run_env(&["agent", "beat", &cell, "a1"], "PAS_HOST", bad)
            .refused(2, "is not usable");
    }
    for bad in ["1", "0.5", "nan", "100000"] {
        root.run(&["watch", "--once", "--node-ttl", bad])
            .refused(2, "--node-ttl");
    }
    assert_eq!(root.snapshot(), before, "a refusal writes nothing");
}
