//! `pas top` driven in a real terminal (tmux), and `pas status --watch`.

use std::io::Read;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::harness::{pas_bin, tool_available, wait_until, Root};

/// A tmux server of its own (a private socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// A detached 100x30 session running a plain shell; `None` (the test is skipped) when
    /// tmux is missing, see [`tool_available`].
    fn start() -> Option<Tmux> {
        if !tool_available(
            "tmux",
            &["-V"],
            "the `pas top` tests drive the real binary in a tmux pane; install it \
             (apt-get install -y tmux)",
        ) {
            return None;
        }
        let tmux = Tmux {
            socket: format!("pas-top-{}", uuid::Uuid::new_v4().simple()),
        };
        tmux.run(&[
            "new-session",
            "-d",
            "-x",
            "100",
            "-y",
            "30",
            "-s",
            "top",
            "env",
            "-i",
            "PATH=/usr/bin:/bin",
            "TERM=xterm-256color",
            "LANG=C.UTF-8",
            "NO_COLOR=1",
            // As the harness does: tests run as root in CI.
            "PAS_AGENTS_AS_ROOT=1",
            "PS1=$ ",
            "sh",
        ]);
        // Keys sent before the shell's first prompt would be echoed ahead of it.
        tmux.wait_for("the shell's prompt", |s| s.trim_end().ends_with('$'));
        Some(tmux)
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

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn text(&self, text: &str) {
        self.run(&["send-keys", "-t", "top", "-l", text]);
    }

    /// Types a command line into the pane's shell and presses Enter.
    fn enter(&self, line: &str) {
        self.text(line);
        self.keys(&["Enter"]);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    fn wait_for(&self, what: &str, f: impl Fn(&str) -> bool) {
        let mut last = String::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            last = self.screen();
            if f(&last) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("timed out waiting for {what}; the screen:\n{last}");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

#[test]
fn top_shows_filters_pauses_and_restores_the_terminal() {
    let root = Root::new();
    let docs = root.cell("Docs sprint");
    root.ok(&["agent", "add", &docs, "lead"]);
    root.ok(&["agent", "add", &docs, "writer_1"]);
    root.ok(&[
        "agent",
        "beat",
        &docs,
        "lead",
        "--ctx-used",
        "300",
        "--ctx-limit",
        "1000",
    ]);
    let audit = root.cell("Audit");
    root.ok(&["agent", "add", &audit, "auditor"]);

    let Some(tmux) = Tmux::start() else {
        return;
    };
    tmux.enter(&format!(
        "{} --root {} top; echo TOP-EXITED $?",
        pas_bin(),
        root.path.display()
    ));
    tmux.wait_for("the tree with an agent", |s| {
        s.contains("Docs sprint") && s.contains("lead") && s.contains("healthy")
    });
    assert_eq!(
        tmux.run(&["display", "-p", "-t", "top", "#{alternate_on}"])
            .trim(),
        "1"
    );

    tmux.keys(&["/"]);
    tmux.text("auditor");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the filter to leave only the auditor", |s| {
        s.contains("auditor") && !s.contains("writer_1") && s.contains("[filter: auditor]")
    });

    // The filtered tree starts with the Audit cell: pause it, after a confirmation.
    tmux.keys(&["p"]);
    tmux.wait_for("the confirmation", |s| {
        s.contains(&format!(
            "same as: pas cell set {} --status paused",
            &audit[..8]
        ))
    });
    assert_eq!(
        root.read_json(format!("{audit}/cell.json"))["status"],
        "active"
    );
    tmux.keys(&["y"]);
    wait_until(30.0, "the cell file to say paused", || {
        root.read_json(format!("{audit}/cell.json"))["status"] == "paused"
    });
    tmux.wait_for("the result and the event", |s| {
        s.contains("active -> paused") && s.contains("cell.status")
    });
    assert_eq!(
        root.read_json(format!("{docs}/cell.json"))["status"],
        "active"
    );

    tmux.keys(&["q"]);
    tmux.wait_for("the shell again", |s| {
        s.contains("TOP-EXITED 0") && s.trim_end().ends_with('$')
    });
    assert_eq!(
        tmux.run(&["display", "-p", "-t", "top", "#{alternate_on}"])
            .trim(),
        "0"
    );
    assert_eq!(
        tmux.run(&["display", "-p", "-t", "top", "#{cursor_flag}"])
            .trim(),
        "1"
    );
    // The shell's screen is back: what was typed before, and a fresh prompt after.
    let screen = tmux.screen();
    let lines: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.first().is_some_and(|l| l.starts_with("$ ")),
        "{screen}"
    );
    assert_eq!(lines.last().map(|l| l.trim()), Some("$"), "{screen}");
}

#[test]
fn top_reads_again_only_the_cell_whose_files_changed() {
    if !tool_available(
        "strace",
        &["-V"],
        "this test counts the files `pas top` opens; install it (apt-get install -y strace)",
    ) {
        return;
    }
    let root = Root::new();
    let alpha = root.cell("Alpha");
    let beta = root.cell("Beta");
    root.ok(&["agent", "add", &alpha, "alpha_1"]);
    root.ok(&["agent", "add", &beta, "beta_1"]);
    let Some(tmux) = Tmux::start() else {
        return;
    };
    // Outside the root: the log's writes must not be changes in it.
    let log = std::env::temp_dir().join(format!("pas-top-opens-{}.log", uuid::Uuid::new_v4()));
    tmux.enter(&format!(
        "strace -f -qq -e trace=openat -o {} {} --root {} top; echo TOP-EXITED $?",
        log.display(),
        pas_bin(),
        root.path.display()
    ));
    let opened = || std::fs::read_to_string(&log).unwrap_or_default();
    tmux.wait_for("both cells", |s| {
        s.contains("alpha_1") && s.contains("beta_1") && s.contains("never")
    });
    assert!(opened().contains("\"beta_1.json\""), "{}", opened());
    let before = opened().len();

    root.ok(&["agent", "beat", &alpha, "alpha_1"]);
    tmux.wait_for("the beat to show", |s| {
        s.lines()
            .any(|l| l.contains("alpha_1") && l.contains("healthy"))
    });
    let after = opened();
    let since = &after[before..];
    assert!(since.contains("\"alpha_1.json\""), "{since}");
    // The other cell was left as it was read.
    assert!(!since.contains("\"beta_1.json\""), "{since}");
    tmux.keys(&["q"]);
    tmux.wait_for("pas top to exit", |s| s.contains("TOP-EXITED 0"));
    let _ = std::fs::remove_file(&log);
}

#[test]
fn top_restores_the_terminal_on_sigterm() {
    let root = Root::new();
    let cell = root.cell("Solo");
    root.ok(&["agent", "add", &cell, "only"]);
    let Some(tmux) = Tmux::start() else {
        return;
    };
    tmux.enter(&format!(
        "{} --root {} top Solo; echo TOP-EXITED $?",
        pas_bin(),
        root.path.display()
    ));
    tmux.wait_for("the tree", |s| s.contains("only") && s.contains("Solo"));
    let pid = pid_of_top(&root).expect("pas top's pid in /proc");
    let pid = rustix::process::Pid::from_raw(pid).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    tmux.wait_for("the shell again", |s| s.contains("TOP-EXITED 0"));
    assert_eq!(
        tmux.run(&["display", "-p", "-t", "top", "#{alternate_on}"])
            .trim(),
        "0"
    );
}

#[test]
fn top_approves_a_revival_request_and_stops_an_agent() {
    let root = Root::new();
    let cell = root.cell("Ops");
    root.policies(
        &cell,
        json!({"auto_revive": "ask", "checkpoint_required": false, "restart_delay_seconds": 0,
               "startup_grace": 5, "stop_grace": 1, "storm_limit": 0}),
    );
    let dies = root.script("dies.sh", "sleep 0.2; exit 1");
    let runs = root.script("runs.sh", "exec sleep 60");
    root.ok(&["agent", "add", &cell, "asked", "--", &dies]);
    root.ok(&["agent", "add", &cell, "runner", "--", &runs]);
    root.ok(&["agent", "start", &cell, "asked"]);
    root.ok(&["agent", "start", &cell, "runner"]);
    wait_until(10.0, "asked to exit", || {
        root.agent(&cell, "asked")["pid"].is_null()
    });
    // auto_revive: ask, so a pass files a request instead of restarting.
    root.ok(&["revive", &cell]);
    assert_eq!(
        root.json(&["revive", "requests"]).as_array().unwrap().len(),
        1
    );

    let Some(tmux) = Tmux::start() else {
        return;
    };
    tmux.enter(&format!(
        "{} --root {} top Ops; echo TOP-EXITED $?",
        pas_bin(),
        root.path.display()
    ));
    tmux.wait_for("both agents", |s| {
        s.contains("asked") && s.contains("runner")
    });
    // A running agent's memory and CPU follow its row.
    tmux.wait_for("runner's usage", |s| {
        s.lines()
            .any(|l| l.contains("runner") && l.contains("B ") && l.contains("% cpu"))
    });

    // The first agent under the cell: `r` approves its request, as `pas revive approve`.
    tmux.keys(&["j", "r"]);
    tmux.wait_for("the revive confirmation", |s| {
        s.contains(&format!("same as: pas revive {} --agent asked", &cell[..8]))
    });
    tmux.keys(&["y"]);
    wait_until(30.0, "the approved restart", || {
        root.agent(&cell, "asked")["restart_count"] == 1
    });
    assert_eq!(root.json(&["revive", "requests"]), json!([]));

    // The next one: `s` stops it with the policy's grace, as `pas agent stop`.
    let pid = root.agent(&cell, "runner")["pid"]
        .as_i64()
        .expect("runner's pid");
    tmux.keys(&["j", "s"]);
    tmux.wait_for("the stop confirmation", |s| {
        s.contains(&format!("same as: pas agent stop {} runner", &cell[..8]))
    });
    tmux.keys(&["y"]);
    wait_until(30.0, "runner to be stopped", || {
        root.agent(&cell, "runner")["pid"].is_null()
    });
    tmux.wait_for("the result line", |s| {
        s.contains("agent runner stopped (SIGTERM)")
    });
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the agent process {pid} is gone"
    );
    tmux.keys(&["q"]);
    tmux.wait_for("the shell again", |s| s.contains("TOP-EXITED 0"));
}

#[test]
fn top_ends_when_its_terminal_goes_away() {
    let root = Root::new();
    let cell = root.cell("Hangup");
    root.ok(&["agent", "add", &cell, "only"]);
    let Some(tmux) = Tmux::start() else {
        return;
    };
    tmux.enter(&format!(
        "exec {} --root {} top Hangup",
        pas_bin(),
        root.path.display()
    ));
    tmux.wait_for("the tree", |s| s.contains("only") && s.contains("Hangup"));
    assert!(pid_of_top(&root).is_some());
    drop(tmux);
    wait_until(30.0, "pas top to exit after its terminal closed", || {
        pid_of_top(&root).is_none()
    });
}

/// The pid of the `pas top` running on this root, from /proc.
fn pid_of_top(root: &Root) -> Option<i32> {
    let root_arg = root.path.display().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_top = args.contains(&root_arg.as_bytes())
            && args.contains(&b"top".as_slice())
            && args.first().is_some_and(|a| a.ends_with(b"pas"));
        is_top.then_some(pid)
    })
}

#[test]
fn top_needs_a_terminal_and_an_existing_cell() {
    let root = Root::new();
    root.cell("Here");
    root.run(&["top"]).refused(2, "needs a terminal");
    root.run(&["top", "nowhere"]).refused(3, "no cell matches");
}

#[test]
fn status_watch_repeats_the_table_when_not_a_terminal() {
    let root = Root::new();
    let cell = root.cell("Watched");
    root.ok(&["agent", "add", &cell, "lead"]);
    let mut child = root
        .cmd(&["status", "--watch", "--interval", "0.2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        while seen.matches("pas status --watch").count() < 2 {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        seen
    });
    let seen = reader.join().unwrap();
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "Ctrl-C ends the watch cleanly");
    assert!(seen.matches("pas status --watch").count() >= 2, "{seen}");
    assert!(seen.contains("cell ") && seen.contains("Watched"), "{seen}");
    assert!(seen.contains("  lead"), "{seen}");
    assert!(
        !seen.contains('\x1b'),
        "no terminal escapes into a pipe: {seen:?}"
    );
}

#[test]
fn status_watch_checks_its_interval() {
    let root = Root::new();
    root.run(&["status", "--watch", "--interval", "0"])
        .refused(2, "--interval 0 is outside");
    root.run(&["status", "--watch", "--interval", "soon"])
        .refused(2, "--interval");
    root.run(&["status", "--interval", "2"])
        .refused(2, "--watch");
    root.run(&["--json", "status", "--watch"])
        .refused(2, "--json");
}
