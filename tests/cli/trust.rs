//! Odd files and stuck processes: a FIFO, a device, a planted hard link or a held lock
//! gets a clear one-line error within a time limit, never a hang, a huge read or a write
//! outside the root.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Root, Run};

/// Runs `cmd`, killing it and failing the test if it has not finished within `seconds`.
fn run_within(mut cmd: Command, seconds: u64) -> Run {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if child.try_wait().unwrap().is_some() {
            return Run::from(child.wait_with_output().unwrap());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {seconds}s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the test runs as root (for `mknod`); otherwise prints why it is skipped, and
/// fails when `PAS_TEST_REQUIRE_ALL=1`.
fn running_as_root(why: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert_ne!(
        std::env::var("PAS_TEST_REQUIRE_ALL").as_deref(),
        Ok("1"),
        "{why} needs root (PAS_TEST_REQUIRE_ALL=1 makes that a failure)"
    );
    println!("skipped: {why} needs root");
    false
}

fn mkfifo(path: &std::path::Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

#[test]
fn a_fifo_agent_file_is_refused_at_once() {
    let root = Root::new();
    let cell = root.cell("odd");
    root.ok(&["agent", "add", &cell, "a1", "--", "sleep", "1"]);
    let file = root.cell_dir(&cell).join("agents/a1.json");
    std::fs::remove_file(&file).unwrap();
    mkfifo(&file);
    run_within(root.cmd(&["agent", "show", &cell, "a1"]), 10)
        .refused(5, "a1.json is a FIFO, not a regular file");
}

#[test]
fn a_fifo_pas_toml_does_not_hang_any_command() {
    let root = Root::new();
    let cell = root.cell("odd");
    mkfifo(&root.path.join("pas.toml"));
    for args in [vec!["check"], vec!["status"], vec!["agent", "list", &cell]] {
        let run = run_within(root.cmd(&args), 10);
        assert_ne!(run.code, 0, "pas {args:?}: {}", run.stdout);
        // check speaks on stdout (UNKNOWN); the others on stderr.
        let said = if args == ["check"] {
            &run.stdout
        } else {
            &run.stderr
        };
        assert!(
            said.contains("pas.toml is a FIFO, not a regular file"),
            "pas {args:?}: {} / {}",
            run.stdout,
            run.stderr
        );
    }
}

#[test]
fn a_device_agent_file_is_refused_without_reading_it() {
    if !running_as_root("mknod of a character device") {
        return;
    }
    let root = Root::new();
    let cell = root.cell("odd");
    root.ok(&["agent", "add", &cell, "a1", "--", "sleep", "1"]);
    let file = root.cell_dir(&cell).join("agents/a1.json");
    std::fs::remove_file(&file).unwrap();
    // /dev/zero's numbers: reading it never ends.
    let status = Command::new("mknod")
        .arg(&file)
        .args(["c", "1", "5"])
        .status()
        .unwrap();
    assert!(status.success());
    run_within(root.cmd(&["agent", "show", &cell, "a1"]), 10)
        .refused(5, "a1.json is a character device, not a regular file");
}

#[test]
fn an_oversized_document_is_refused_naming_the_limit() {
    let root = Root::new();
    let cell = root.cell("odd");
    root.ok(&["agent", "add", &cell, "a1", "--", "sleep", "1"]);
    let file = root.cell_dir(&cell).join("agents/a1.json");
    let mut big = String::from("{\"agent_id\": \"a1\", \"note\": \"");
    big.push_str(&"x".repeat(5 << 20));
    big.push_str("\"}");
    std::fs::write(&file, &big).unwrap();
    run_within(root.cmd(&["agent", "show", &cell, "a1"]), 10)
        .refused(5, "over the limit of 4194304 bytes");
}

#[test]
fn a_hard_link_planted_as_the_watch_lock_is_refused_and_left_alone() {
    let root = Root::new();
    root.cell("odd");
    let outside = root.path.join("..").join(format!(
        "pas-outside-{}",
        root.path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&outside, "precious\n").unwrap();
    let locks = root.path.join(".pas/locks");
    std::fs::create_dir_all(&locks).unwrap();
    std::fs::hard_link(&outside, locks.join("watch.lock")).unwrap();
    let run = run_within(root.cmd(&["watch", "--once"]), 20);
    std::fs::remove_file(locks.join("watch.lock")).unwrap();
    let kept = std::fs::read_to_string(&outside).unwrap();
    std::fs::remove_file(&outside).unwrap();
    run.refused(5, "watch.lock has 2 hard links");
    assert_eq!(kept, "precious\n");
}

#[test]
fn a_writer_refuses_a_log_whose_end_was_cut_and_changes_nothing() {
    let root = Root::new();
    let cell = root.cell("chain");
    root.ok(&["task", "add", &cell, "t1", "--title", "one"]);
    root.ok(&["task", "add", &cell, "t2", "--title", "two"]);
    let log = root.cell_dir(&cell).join("logs/events.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    let kept: Vec<&str> = text.lines().collect();
    std::fs::write(&log, kept[..kept.len() - 1].join("\n") + "\n").unwrap();
    let before = root.snapshot();
    root.run(&["task", "add", &cell, "t3", "--title", "three"])
        .refused(5, "events were removed or the log was cut");
    assert_eq!(root.snapshot(), before, "nothing was changed");
}

/// Every path under `dir` with its mode bits (permissions only).
fn modes_under(dir: &std::path::Path) -> Vec<(String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        out.push((
            path.strip_prefix(dir).unwrap().display().to_string(),
            meta.permissions().mode() & 0o7777,
        ));
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                todo.push(entry.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn created_paths_have_the_same_modes_under_any_umask() {
    let mut seen = Vec::new();
    for umask in ["000", "077"] {
        let base = Root::new();
        // A root (and a restore target) that do not exist yet: pas creates every level.
        let root = Root {
            path: base.path.join("deep/missions"),
        };
        let under = |args: &[&str]| {
            let script = format!("umask {umask}; exec \"$@\"");
            let out = root
                .cmd_via(&["sh", "-c", &script, "sh"], args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "umask {umask}: pas {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let cell = under(&["cell", "create", "--name", "modes", "-q"]);
        under(&["agent", "add", &cell, "a1", "--", "echo", "hello"]);
        under(&["task", "add", &cell, "t1", "--title", "one"]);
        under(&["agent", "start", &cell, "a1"]);
        crate::harness::wait_until(10.0, "the agent's log", || {
            std::fs::read_to_string(root.cell_dir(&cell).join("logs/a1.log"))
                .is_ok_and(|l| l.contains("hello"))
        });
        // Its supervisor takes the revive lock when the agent ends (a file of its own):
        // both runs look after that, whatever the load.
        under(&[
            "agent",
            "wait",
            &cell,
            "a1",
            "--for",
            "stopped",
            "--timeout",
            "10",
        ]);
        under(&["checkpoint", "save", &cell, "a1"]);
        let target = base.path.join("restored/here");
        let target_arg = target.display().to_string();
        under(&["checkpoint", "restore", &cell, "a1", "--to", &target_arg]);
        let mut modes = modes_under(&base.path.join("deep"));
        modes.extend(modes_under(&base.path.join("restored")));
        for (path, mode) in &modes {
            let want = if path.ends_with("a1.log") {
                0o640
            } else if std::fs::symlink_metadata(base.path.join("deep").join(path))
                .or_else(|_| std::fs::symlink_metadata(base.path.join("restored").join(path)))
                .is_ok_and(|m| m.is_dir())
            {
                0o755
            } else {
                0o644
            };
            assert_eq!(*mode, want, "umask {umask}: {path} has mode {mode:o}");
        }
        let paths = modes
            .into_iter()
            .map(|(path, _)| path.replace(&cell, "CELL"));
        seen.push(paths.collect::<Vec<_>>());
        std::mem::forget(root); // inside base, which is removed when dropped
    }
    assert_eq!(seen[0], seen[1], "the same paths under both umasks");
}

/// The second uid the trust tests plant files as.
const NOBODY: u32 = 65534;

fn chown(path: &std::path::Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A cell with agent `a1`, dead and due for a restart, whose command would leave `marker`
/// behind if it ran.
fn planted(root: &Root) -> (String, std::path::PathBuf) {
    let cell = root.cell("trust");
    let marker = root.path.join("ran");
    let script = root.script("mark.sh", &format!("id -u > {}", marker.display()));
    root.ok(&["agent", "add", &cell, "a1", "--", &script]);
    root.policies(
        &cell,
        serde_json::json!({"restart_delay_seconds": 0, "checkpoint_required": false, "storm_limit": 0}),
    );
    let file = root.cell_dir(&cell).join("agents/a1.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let two_seconds_ago = chrono::Utc::now() - chrono::Duration::seconds(2);
    doc["status"] = serde_json::json!("active");
    doc["started_at"] = serde_json::json!(two_seconds_ago.to_rfc3339());
    doc["exit"] = serde_json::json!({"at": two_seconds_ago.to_rfc3339(), "cause": "exit", "code": 2, "signal": null});
    std::fs::write(&file, doc.to_string()).unwrap();
    (cell, marker)
}

#[test]
fn root_runs_nothing_from_a_file_another_user_could_have_written() {
    if !running_as_root("chown to a second uid") {
        return;
    }
    type Plant = fn(&Root, &str);
    let ways: [(&str, Plant, &str); 4] = [
        (
            "an agent file owned by another user",
            |root, cell| chown(&root.cell_dir(cell).join("agents/a1.json"), NOBODY),
            "is owned by uid 65534",
        ),
        (
            "a world-writable agent file",
            |root, cell| chmod(&root.cell_dir(cell).join("agents/a1.json"), 0o666),
            "may be changed by anyone",
        ),
        (
            "an agent in a world-writable agents/",
            |root, cell| chmod(&root.cell_dir(cell).join("agents"), 0o777),
            "agents (mode 777) may be changed by anyone",
        ),
        (
            "a group-writable isolation.json",
            |root, cell| chmod(&root.cell_dir(cell).join("config/isolation.json"), 0o664),
            "may be changed by its group",
        ),
    ];
    for (why, plant, needle) in ways {
        let root = Root::new();
        let (cell, marker) = planted(&root);
        plant(&root, &cell);
        root.run(&["agent", "start", &cell, "a1"])
            .refused(9, needle);
        // The watch's pass refuses it too and records why, and runs nothing.
        let out = root.run(&["revive", &cell, "--json"]);
        assert!(!marker.exists(), "{why}: the command ran");
        let events = std::fs::read_to_string(root.cell_dir(&cell).join("logs/events.jsonl"))
            .unwrap_or_default();
        assert!(
            out.stderr.contains(needle) || out.stdout.contains(needle) || events.contains(needle),
            "{why}: revive said {} / {}",
            out.stdout,
            out.stderr
        );
    }
}

#[test]
fn as_root_an_agent_runs_as_the_cells_user_or_not_at_all() {
    if !running_as_root("switching to a second uid") {
        return;
    }
    let root = Root::new();
    let (cell, marker) = planted(&root);
    // The marker's directory must be writable by the agent's user.
    let out = root.path.join("out");
    std::fs::create_dir(&out).unwrap();
    chmod(&out, 0o777);
    let marker_path = out.join("ids");
    let script = root.script(
        "ids.sh",
        &format!(
            "id -u > {0}; id -g >> {0}; id -G >> {0}; env >> {0}",
            marker_path.display()
        ),
    );
    root.ok(&["agent", "set", &cell, "a1", "--", &script]);
    // Without an opt-in and with no user named, root refuses.
    let mut cmd = root.cmd(&["agent", "start", &cell, "a1"]);
    cmd.env_remove("PAS_AGENTS_AS_ROOT")
        .env("PAS_TEST_SECRET", "hunter2");
    Run::from(cmd.output().unwrap()).refused(9, "the agent would run as root");
    assert!(!marker.exists() && !marker_path.exists());
    // Named: it runs as that user, its own group only, in a clean environment.
    let isolation = root.cell_dir(&cell).join("config/isolation.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&isolation).unwrap()).unwrap();
    doc["security_context"]["user"] = serde_json::json!("65534");
    doc["security_context"]["group"] = serde_json::json!("");
    std::fs::write(&isolation, doc.to_string()).unwrap();
    let mut cmd = root.cmd(&["agent", "start", &cell, "a1"]);
    cmd.env_remove("PAS_AGENTS_AS_ROOT")
        .env("PAS_TEST_SECRET", "hunter2");
    let run = Run::from(cmd.output().unwrap());
    assert_eq!(run.code, 0, "{}", run.stderr);
    crate::harness::wait_until(10.0, "the agent's report", || {
        std::fs::read_to_string(&marker_path).is_ok_and(|t| t.contains("PAS_AGENT="))
    });
    let report = std::fs::read_to_string(&marker_path).unwrap();
    let mut lines = report.lines();
    assert_eq!(lines.next(), Some("65534"), "{report}");
    assert_eq!(lines.next(), Some("65534"), "{report}");
    assert_eq!(
        lines.next(),
        Some("65534"),
        "supplementary groups dropped: {report}"
    );
    assert!(
        !report.contains("hunter2"),
        "the caller's environment leaked: {report}"
    );
}

#[test]
fn an_on_failure_hook_from_a_group_writable_policy_file_is_not_run() {
    if !running_as_root("a root watch's hook") {
        return;
    }
    for (mode, runs) in [(0o664, false), (0o644, true)] {
        let root = Root::new();
        let (cell, _) = planted(&root);
        let hooked = root.path.join("hooked");
        root.policies(
            &cell,
            serde_json::json!({"restart_delay_seconds": 0, "checkpoint_required": false, "auto_revive": "no",
                "on_failure": format!("touch {}", hooked.display())}),
        );
        chmod(&root.cell_dir(&cell).join("config/policies.json"), mode);
        root.ok(&["revive", &cell]);
        assert_eq!(root.agent(&cell, "a1")["status"], "failed");
        assert_eq!(hooked.exists(), runs, "mode {mode:o}");
        let events =
            std::fs::read_to_string(root.cell_dir(&cell).join("logs/events.jsonl")).unwrap();
        let refused = events.contains("on_failure hook for agent a1 was not run")
            && events.contains("may be changed by its group");
        assert_eq!(refused, !runs, "mode {mode:o}: {events}");
    }
}

#[test]
fn environment_values_stay_private_and_secrets_stay_out_of_the_events() {
    use std::os::unix::fs::PermissionsExt;
    let root = Root::new();
    let cell = root.cell("secrets");
    let script = root.script("quiet.sh", "exit 0");
    root.ok(&["agent", "add", &cell, "plain", "--", &script]);
    root.ok(&["agent", "add", &cell, "keyed"]);
    root.ok(&[
        "agent",
        "set",
        &cell,
        "keyed",
        "--env",
        "API_TOKEN=s3cret-value",
        "--",
        &script,
        "--password",
        "hunter2",
    ]);
    let mode = |agent: &str| {
        std::fs::metadata(root.cell_dir(&cell).join(format!("agents/{agent}.json")))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!((mode("plain"), mode("keyed")), (0o644, 0o600));
    root.ok(&["agent", "beat", &cell, "keyed"]);
    assert_eq!(mode("keyed"), 0o600, "a rewrite keeps it private");
    root.ok(&["agent", "start", &cell, "keyed"]);
    crate::harness::wait_until(10.0, "the agent's start event", || {
        root.event_kinds(&cell)
            .contains(&"agent.started".to_string())
    });
    let events = std::fs::read_to_string(root.cell_dir(&cell).join("logs/events.jsonl")).unwrap();
    assert!(
        !events.contains("s3cret-value") && !events.contains("hunter2"),
        "{events}"
    );
    assert!(events.contains("\"--password\",\"***\""), "{events}");
}

/// A cell with agent `a1` recorded as dead a moment ago, due for an immediate restart.
fn dead_agent_cell(root: &Root, name: &str) -> String {
    let cell = root.cell(name);
    let script = root.script(&format!("{name}.sh"), "sleep 30");
    root.ok(&["agent", "add", &cell, "a1", "--", &script]);
    root.policies(
        &cell,
        serde_json::json!({"restart_delay_seconds": 0, "checkpoint_required": false, "storm_limit": 0}),
    );
    let file = root.cell_dir(&cell).join("agents/a1.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let ago = (chrono::Utc::now() - chrono::Duration::seconds(2)).to_rfc3339();
    doc["status"] = serde_json::json!("active");
    doc["started_at"] = serde_json::json!(ago);
    doc["exit"] = serde_json::json!({"at": ago, "cause": "signal", "code": null, "signal": 9});
    std::fs::write(&file, doc.to_string()).unwrap();
    cell
}

#[test]
fn a_held_lock_costs_its_cell_one_pass_and_never_stalls_the_others() {
    if !crate::harness::tool_available(
        "flock",
        &["--version"],
        "a second process must hold a cell's lock (util-linux)",
    ) {
        return;
    }
    let root = Root::new();
    let held = dead_agent_cell(&root, "held");
    let healthy = dead_agent_cell(&root, "healthy");
    let lock = root.cell_dir(&held).join(".pas/locks/cell.lock");
    // Any transaction creates the lock file; then a stranger holds it.
    root.ok(&["task", "add", &held, "t1", "--title", "x"]);
    let mut holder = Command::new("flock")
        .arg(&lock)
        .args(["sleep", "60"])
        .process_group(0)
        .spawn()
        .unwrap();
    crate::harness::wait_until(10.0, "the stranger's lock", || {
        let probe = [
            "--lock-timeout",
            "0",
            "task",
            "add",
            &held,
            "probe",
            "--title",
            "x",
        ];
        root.run(&probe).code == 6
    });
    let run = run_within(root.cmd(&["--lock-timeout", "1", "--json", "revive"]), 15);
    // flock's child holds the lock too: stop the whole group.
    let group = rustix::process::Pid::from_raw(holder.id() as i32).unwrap();
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    let _ = holder.wait();
    assert_eq!(
        root.agent(&healthy, "a1")["restart_count"],
        1,
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&held) && run.stdout.contains("has held it for more than 1.0s"),
        "the busy cell is reported: {} / {}",
        run.stdout,
        run.stderr
    );
    assert_ne!(run.code, 0);
    // Retried once the lock is free.
    root.ok(&["revive", &held]);
    assert_eq!(root.agent(&held, "a1")["restart_count"], 1);
    for cell in [&held, &healthy] {
        root.ok(&["agent", "stop", cell, "a1"]);
    }
}

#[test]
fn an_agent_acts_for_itself_unless_permissions_grant_more() {
    let root = Root::new();
    let cell = root.cell("acting");
    let other = root.cell("other");
    for agent in ["a1", "a2", "lead"] {
        root.ok(&["agent", "add", &cell, agent, "--", "true"]);
    }
    std::fs::write(
        root.cell_dir(&cell).join("config/permissions.json"),
        r#"{"lead": {"manage": ["a2"]}}"#,
    )
    .unwrap();
    let as_a1 = |args: &[&str]| {
        let mut all = vec!["--as", "a1"];
        all.extend_from_slice(args);
        root.run(&all)
    };
    // Its own record: fine.
    assert_eq!(as_a1(&["agent", "beat", &cell, "a1"]).code, 0);
    assert_eq!(
        as_a1(&["agent", "fail", &cell, "a1", "--reason", "x"]).code,
        0
    );
    // Another agent's record, process or checkpoint, or any cell: refused, nothing changed.
    let before = root.snapshot();
    let refusals: [&[&str]; 9] = [
        &["agent", "beat", &cell, "a2"],
        &["agent", "fail", &cell, "a2", "--reason", "x"],
        &["agent", "set", &cell, "a2", "--status", "paused"],
        &["agent", "set", &cell, "a2", "--", "id"],
        &["agent", "stop", &cell, "a2"],
        &["agent", "rm", &cell, "a2"],
        &["agent", "add", &cell, "a3"],
        &["checkpoint", "save", &cell, "a2"],
        &["agent", "reset", &cell, "a2"],
    ];
    for args in refusals {
        let target = if args[1] == "add" { "a3" } else { "a2" };
        as_a1(args).refused(9, &format!("agent a1 may not change agent {target}"));
    }
    as_a1(&["cell", "set", &cell, "--status", "paused"]).refused(9, "agent a1 may not change cell");
    as_a1(&["cell", "rm", &other]).refused(9, "agent a1 may not change cell");
    // PAS_AGENT is the same as --as.
    let mut cmd = root.cmd(&["agent", "beat", &cell, "a2"]);
    cmd.env("PAS_AGENT", "a1");
    Run::from(cmd.output().unwrap()).refused(9, "agent a1 may not change agent a2");
    assert_eq!(root.snapshot(), before, "a refusal changes nothing");
    // A grant: lead manages a2, and only a2.
    let lead = |args: &[&str]| {
        let mut all = vec!["--as", "lead"];
        all.extend_from_slice(args);
        root.run(&all)
    };
    assert_eq!(
        lead(&["agent", "set", &cell, "a2", "--status", "paused"]).code,
        0
    );
    lead(&["agent", "set", &cell, "a1", "--status", "paused"])
        .refused(9, "agent lead may not change agent a1");
    // The operator may do anything.
    root.ok(&["agent", "set", &cell, "a1", "--status", "paused"]);
}

#[test]
fn one_broken_cell_never_stops_the_revival_of_another() {
    type Break = fn(&Root, &str);
    let mut breakages: Vec<(&str, Break)> = vec![
        ("a FIFO policies.json", |root, cell| {
            let file = root.cell_dir(cell).join("config/policies.json");
            std::fs::remove_file(&file).unwrap();
            mkfifo(&file);
        }),
        ("a FIFO agent file", |root, cell| {
            let file = root.cell_dir(cell).join("agents/a1.json");
            std::fs::remove_file(&file).unwrap();
            mkfifo(&file);
        }),
        ("a malformed agent file", |root, cell| {
            std::fs::write(root.cell_dir(cell).join("agents/a1.json"), "{ torn").unwrap();
        }),
        ("a directory as an agent file", |root, cell| {
            let file = root.cell_dir(cell).join("agents/a1.json");
            std::fs::remove_file(&file).unwrap();
            std::fs::create_dir(&file).unwrap();
        }),
    ];
    if rustix::process::geteuid().is_root() {
        breakages.push(("a device agent file", |root, cell| {
            let file = root.cell_dir(cell).join("agents/a1.json");
            std::fs::remove_file(&file).unwrap();
            let status = Command::new("mknod")
                .arg(&file)
                .args(["c", "1", "5"])
                .status()
                .unwrap();
            assert!(status.success());
        }));
    }
    for (why, break_it) in breakages {
        let root = Root::new();
        let broken = dead_agent_cell(&root, "broken");
        let healthy = dead_agent_cell(&root, "healthy");
        break_it(&root, &broken);
        let run = run_within(root.cmd(&["--json", "revive"]), 15);
        assert_eq!(
            root.agent(&healthy, "a1")["restart_count"],
            1,
            "{why}: {}",
            run.stdout
        );
        assert_eq!(run.code, 5, "{why}: {}", run.stderr);
        let out: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        let errors = out["errors"].to_string();
        assert!(
            errors.contains(&broken),
            "{why}: the broken cell is named: {errors}"
        );
        // The watch serves the healthy cell too, and names the broken one.
        root.ok(&["agent", "stop", &healthy, "a1"]);
        let watch = run_within(root.cmd(&["watch", "--once"]), 15);
        assert!(
            watch.stdout.contains(&broken) || watch.stderr.contains(&broken),
            "{why}: the watch names the broken cell: {} / {}",
            watch.stdout,
            watch.stderr
        );
        assert!(
            root.event_kinds(&broken)
                .contains(&"cell.problem".to_string()),
            "{why}: the watch records the problem in the cell's events"
        );
        root.ok(&["agent", "stop", &healthy, "a1"]);
    }
}

#[test]
fn events_verify_notices_a_tail_cut_emptied_edited_or_forged() {
    type Tamper = fn(&str) -> String;
    let ways: [(&str, Tamper, &str); 5] = [
        (
            "the last line deleted",
            |log| {
                let lines: Vec<&str> = log.lines().collect();
                lines[..lines.len() - 1].join("\n") + "\n"
            },
            "seq 3 to 3 are missing",
        ),
        (
            "truncated mid-line",
            |log| log[..log.len() - 20].to_string(),
            "seq 3 to 3 are missing",
        ),
        ("emptied", |_| String::new(), "seq 1 to 3 are missing"),
        (
            "the last event edited",
            |log| {
                let mut lines: Vec<String> = log.lines().map(str::to_string).collect();
                let last = lines.len() - 1;
                lines[last] = lines[last].replace("\"info\"", "\"warn\"");
                lines.join("\n") + "\n"
            },
            "seq 3 is not the event pas wrote",
        ),
        (
            "a forged copy of an earlier event appended",
            |log| {
                let first = log.lines().next().unwrap().to_string();
                format!("{log}{first}\n")
            },
            "line 4",
        ),
    ];
    for (why, tamper, needle) in ways {
        let root = Root::new();
        let cell = root.cell("chain");
        root.ok(&["task", "add", &cell, "t1", "--title", "one"]);
        root.ok(&["task", "add", &cell, "t2", "--title", "two"]);
        root.ok(&["events", "verify", &cell]);
        let log = root.cell_dir(&cell).join("logs/events.jsonl");
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text.lines().count(), 3, "cell.created and two task.added");
        std::fs::write(&log, tamper(&text)).unwrap();
        let run = root.run(&["events", "verify", &cell]);
        assert_eq!(run.code, 5, "{why}: {}", run.stdout);
        assert!(run.stdout.contains(needle), "{why}: {}", run.stdout);
    }
}

#[test]
fn a_wrong_typed_pas_toml_value_is_refused_by_validate_and_every_command() {
    let root = Root::new();
    root.cell("typed");
    std::fs::write(
        root.path.join("pas.toml"),
        "[policies]\nheartbeat_interval = \"soon\"\n",
    )
    .unwrap();
    for args in [vec!["validate"], vec!["status"]] {
        let run = root.run(&args);
        assert_eq!(run.code, 5, "pas {args:?}: {}", run.stdout);
        assert!(
            run.stderr.contains("pas.toml line 2") && run.stderr.contains("heartbeat_interval"),
            "pas {args:?}: {}",
            run.stderr
        );
    }
    // Monitoring: UNKNOWN, on stdout, in one line.
    let check = root.run(&["check"]);
    assert_eq!(check.code, 3, "{}", check.stderr);
    assert!(
        check.stdout.starts_with("PAS UNKNOWN - cannot read: ")
            && check.stdout.contains("pas.toml line 2"),
        "{}",
        check.stdout
    );
}

#[test]
fn a_private_artifact_stays_private_in_the_checkpoint_and_when_restored() {
    use std::os::unix::fs::PermissionsExt;
    let root = Root::new();
    let cell = root.cell("modes");
    root.ok(&["agent", "add", &cell, "a1"]);
    let secret = root.path.join("creds.txt");
    let public = root.path.join("notes.md");
    std::fs::write(&secret, "token").unwrap();
    std::fs::write(&public, "notes").unwrap();
    chmod(&secret, 0o600);
    chmod(&public, 0o644);
    root.ok(&[
        "checkpoint",
        "save",
        &cell,
        "a1",
        "--artifact",
        &secret.display().to_string(),
        "--artifact",
        &public.display().to_string(),
    ]);
    let target = root.path.join("restored");
    root.ok(&[
        "checkpoint",
        "restore",
        &cell,
        "a1",
        "--to",
        &target.display().to_string(),
    ]);
    let mode = |p: std::path::PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let saved = root.cell_dir(&cell).join("checkpoints/a1");
    let stored: Vec<u32> = ["creds.txt", "notes.md"]
        .iter()
        .map(|n| mode(saved.join("artifacts").join(n)))
        .collect();
    assert_eq!(stored, [0o600, 0o644], "in the checkpoint");
    let restored: Vec<u32> = ["creds.txt", "notes.md"]
        .iter()
        .map(|n| mode(target.join("artifacts").join(n)))
        .collect();
    assert_eq!(restored, [0o600, 0o644], "restored with --to");
}

#[test]
fn an_append_only_log_is_appended_to_and_a_torn_end_it_keeps_is_refused_up_front() {
    let root = Root::new();
    let cell = root.cell("chattr");
    root.ok(&["task", "add", &cell, "t1", "--title", "one"]);
    let log = root.cell_dir(&cell).join("logs/events.jsonl");
    let chattr = |flag: &str| {
        Command::new("chattr")
            .arg(flag)
            .arg(&log)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !chattr("+a") {
        // tmpfs and some overlay filesystems have no append-only flag.
        println!("skipped: chattr +a does not work on this filesystem");
        return;
    }
    // Appends work on an append-only log.
    let appended = root.run(&["task", "add", &cell, "t2", "--title", "two"]);
    // A torn end (a writer killed mid-append) cannot be cut there: refused before any change.
    chattr("-a");
    let mut text = std::fs::read_to_string(&log).unwrap();
    text.push_str("{\"seq\": 99, \"tor");
    std::fs::write(&log, &text).unwrap();
    chattr("+a");
    let before = root.snapshot();
    let torn = root.run(&["task", "add", &cell, "t3", "--title", "three"]);
    let after = root.snapshot();
    chattr("-a");
    assert_eq!(appended.code, 0, "{}", appended.stderr);
    torn.refused(5, "is append-only (chattr +a)");
    assert_eq!(before, after, "nothing was changed");
    // Without the flag the next writer cuts the torn line and goes on.
    root.ok(&["task", "add", &cell, "t3", "--title", "three"]);
    root.ok(&["events", "verify", &cell]);
}

#[test]
fn budget_check_is_unknown_when_an_agents_spend_cannot_be_read() {
    let root = Root::new();
    let cell = root.cell("spend");
    root.ok(&["agent", "add", &cell, "a1"]);
    root.ok(&["agent", "add", &cell, "a2"]);
    assert_eq!(root.run(&["budget", "check", &cell]).code, 0);
    std::fs::write(root.cell_dir(&cell).join("agents/a2.json"), "{ torn").unwrap();
    let run = root.run(&["budget", "check", &cell]);
    assert_eq!(run.code, 3, "{}", run.stdout);
    assert!(
        run.stdout.contains("cannot read") && run.stdout.contains("a2.json"),
        "{}",
        run.stdout
    );
    let shown = root.run(&["budget", &cell]);
    assert!(shown.stderr.contains("a2.json"), "{}", shown.stderr);
}

#[test]
fn a_lock_timeout_that_is_not_a_number_of_seconds_is_refused() {
    let root = Root::new();
    root.cell("flags");
    let before = root.snapshot();
    root.run(&["--lock-timeout=-1", "status"])
        .refused(2, "--lock-timeout -1 is not a number of seconds");
    root.run(&["--lock-timeout", "NaN", "status"])
        .refused(2, "--lock-timeout NaN is not a number of seconds");
    root.run(&["--lock-timeout", "soon", "status"])
        .refused(2, "\"soon\" is not a duration");
    // A duration is read as people write it.
    assert_eq!(root.run(&["--lock-timeout", "500ms", "status"]).code, 0);
    assert_eq!(root.snapshot(), before);
}
