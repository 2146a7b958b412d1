//! Odd files and stuck processes: a FIFO, a device, a planted hard link or a held lock
//! gets a clear one-line error within a time limit, never a hang, a huge read or a write
//! outside the root.

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
        assert!(
            run.stderr
                .contains("pas.toml is a FIFO, not a regular file"),
            "pas {args:?}: {}",
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
        seen.push(modes.len());
        std::mem::forget(root); // inside base, which is removed when dropped
    }
    assert_eq!(seen[0], seen[1], "the same paths under both umasks");
}
