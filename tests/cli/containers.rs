//! Isolation level_3: an agent in a crun container started from a bundle pas writes, with
//! the host's file system read-only but for its cell's directory, a private `/tmp`, its own
//! PID namespace, and its group's limits: a 64 MB agent allocating 300 MB dies as `oom`
//! and is revived. Level_3 takes root and crun; without them the tests print why and
//! return (with `PAS_TEST_REQUIRE_ALL=1`, a missing crun fails them).

use serde_json::{json, Value};

use crate::harness::{tool_available, wait_until, Root};

/// Whether level_3 can run here: root, and crun installed.
fn containers_here() -> bool {
    if !rustix::process::geteuid().is_root() {
        println!("skipped: level_3 needs root for the agent's container, and this test does not run as root");
        return false;
    }
    tool_available(
        "crun",
        &["--version"],
        "isolation level_3 runs agents with crun",
    )
}

/// A level_3 cell `name` with agent `a1` running `body` (a script in the cell's directory:
/// the container's private /tmp hides the root's scripts), under `limits`.
fn contained(root: &Root, name: &str, body: &str, limits: Value) -> String {
    let cell = root.ok(&["cell", "create", "--name", name, "--isolation", "level_3"]);
    let script = root.cell_dir(&cell).join("agent.sh");
    std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
    let mut perms = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).unwrap();
    root.ok(&["agent", "add", &cell, "a1", "--", script.to_str().unwrap()]);
    let path = root.cell_dir(&cell).join("agents/a1.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    doc["resource_limits"] = limits;
    std::fs::write(&path, doc.to_string()).unwrap();
    cell
}

#[test]
fn a_level_3_agent_sees_its_cell_writable_the_rest_read_only_and_its_own_pids() {
    if !containers_here() {
        return;
    }
    let root = Root::new();
    let body = r#"
echo "my_pid=$$"
echo "processes_seen=$(ls /proc | grep -c '^[0-9]')"
echo in > ./inside.txt && echo "inside ok"
if touch /usr/pas-level3 2>/dev/null; then echo "usr WROTE"; else echo "usr refused"; fi
echo t > "$TMPDIR/t" && echo "tmp $TMPDIR ok"
echo done
exec sleep 30"#;
    let cell = contained(&root, "Box", body, json!({"memory": "64MB", "pids": 32}));
    let text = root.start_for_report(&cell, "a1");
    for line in ["inside ok", "usr refused", "tmp /tmp ok"] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    // Its own PID namespace: the agent is pid 2, under the container's init (or pid 1
    // without one), and sees a handful of processes, not the host's.
    let number = |key: &str| -> u32 {
        text.split(key)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{key} in {text}"))
    };
    assert!(number("my_pid=") <= 2, "{text}");
    assert!(number("processes_seen=") < 10, "{text}");
    assert!(root.cell_dir(&cell).join("inside.txt").exists());
    assert!(!std::path::Path::new("/usr/pas-level3").exists());
    // Its private /tmp is the agent's TMPDIR on the host.
    let a = root.agent(&cell, "a1");
    let tmpdir = a["limits"]["tmpdir"].as_str().unwrap().to_string();
    assert!(std::path::Path::new(&tmpdir).join("t").exists(), "{a}");
    let shown = root.ok(&["agent", "show", &cell, "a1"]);
    assert!(
        shown.contains("in a crun container: memory 64 MB"),
        "{shown}"
    );
    let status = root.ok(&["status", &cell]);
    assert!(status.contains("\n  limits cgroup_v"), "{status}");
    assert!(status.contains(" in a crun container: a1\n"), "{status}");
    root.ok(&["agent", "stop", &cell, "a1", "--grace", "2"]);
    wait_until(10.0, "the agent's temporary directory removed", || {
        !std::path::Path::new(&tmpdir).exists()
    });
}

#[test]
fn a_level_3_agent_over_its_memory_limit_dies_as_oom_and_is_revived() {
    if !containers_here() {
        return;
    }
    let root = Root::new();
    let hog = "exec python3 -c 'b = bytearray(300 << 20); print(\"allocated\")'";
    let cell = contained(&root, "Hog", hog, json!({"memory": "64MB"}));
    root.ok(&["agent", "start", &cell, "a1"]);
    wait_until(20.0, "an oom death and a restart", || {
        root.event_kinds(&cell).iter().any(|k| k == "agent.revived")
    });
    let exited = root.ok(&["--json", "events", &cell, "--kind", "agent.exited"]);
    let first: Value = serde_json::from_str(exited.lines().next().unwrap()).unwrap();
    assert_eq!(first["details"]["cause"], "oom", "{first}");
    let log = std::fs::read_to_string(root.cell_dir(&cell).join("logs/a1.log")).unwrap();
    assert!(!log.contains("allocated"), "{log}");
    root.ok(&["agent", "stop", &cell, "a1", "--grace", "1"]);
}

/// The processes whose command line is exactly `words`.
fn processes(words: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = words
        .iter()
        .flat_map(|w| [w.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

#[test]
fn a_killed_runtime_takes_its_container_with_it_before_the_restart() {
    if !containers_here() {
        return;
    }
    let root = Root::new();
    // Each run sleeps for a time of its own: 3001 s the first, 3002 s the second.
    let body = r#"n=$(( $(cat runs 2>/dev/null || echo 0) + 1 )); echo $n > runs
exec sleep $(( 3000 + n ))"#;
    let cell = contained(&root, "Kill", body, json!({}));
    root.ok(&["agent", "start", &cell, "a1"]);
    let mut pid = 0;
    wait_until(10.0, "the first run's sleep", || {
        pid = root.agent(&cell, "a1")["pid"].as_i64().unwrap_or(0);
        pid > 0 && !processes(&["sleep", "3001"]).is_empty()
    });
    // SIGKILL to crun alone: its container, in a session of its own, would live on.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    // Until its supervisor has recorded the second run: a stop between the restart's spawn
    // and that record is lost (a known race, docs/isolation.md).
    wait_until(15.0, "the second run's sleep, recorded", || {
        let now = root.agent(&cell, "a1")["pid"].as_i64().unwrap_or(0);
        now > 0 && now != pid && !processes(&["sleep", "3002"]).is_empty()
    });
    assert!(
        processes(&["sleep", "3001"]).is_empty(),
        "the first run's container ended with its runtime"
    );
    root.ok(&["agent", "stop", &cell, "a1", "--grace", "2"]);
    wait_until(10.0, "the second run ended", || {
        processes(&["sleep", "3002"]).is_empty()
    });
}

#[test]
fn level_3_without_crun_is_refused_naming_what_to_install() {
    let root = Root::new();
    let cell = root.ok(&["cell", "create", "--name", "Box", "--isolation", "level_3"]);
    root.ok(&["agent", "add", &cell, "a1", "--", "true"]);
    let before = root.snapshot();
    let out = root
        .cmd(&["agent", "start", &cell, "a1"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let run = crate::harness::Run::from(out);
    run.refused(1, "isolation level_3");
    assert!(
        run.stderr.contains("apt-get install crun"),
        "{}",
        run.stderr
    );
    assert_eq!(root.snapshot(), before, "nothing changed");
}
