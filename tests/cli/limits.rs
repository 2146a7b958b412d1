//! Enforced limits and isolation levels, with real processes: an agent over its memory
//! limit is killed and recorded as `oom`, a CPU cap holds, rlimits and nice reach the
//! process, the group is removed when the agent ends. Where this machine does not let pas
//! make cgroups (not a missing tool: a missing privilege), the cgroup tests print why and
//! return; the rlimit path is tested everywhere.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::{json, Value};

use crate::harness::{wait_until, Root};

/// Sets `resource_limits` in the agent file (the files are the API).
fn set_limits(root: &Root, cell: &str, agent: &str, limits: Value) {
    let path = root.cell_dir(cell).join(format!("agents/{agent}.json"));
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    doc["resource_limits"] = limits;
    std::fs::write(&path, doc.to_string()).unwrap();
}

/// Starts the agent and returns its pid once its file records it with its limits.
fn start(root: &Root, cell: &str, agent: &str) -> i64 {
    root.ok(&["agent", "start", cell, agent]);
    let mut pid = 0;
    wait_until(10.0, "the agent's pid and limits on file", || {
        let a = root.agent(cell, agent);
        pid = a["pid"].as_i64().unwrap_or(0);
        pid > 0 && a["limits"].is_object()
    });
    pid
}

/// A cell `name` whose agent `a1` runs `body` under `limits`, started: its id and the
/// agent's pid. `None` (the agent stopped again, the reason printed) when the agent file
/// records no cgroup mechanism: this machine does not let pas make groups.
fn started_in_a_group(root: &Root, name: &str, body: &str, limits: Value) -> Option<(String, i64)> {
    let cell = root.cell(name);
    let script = root.script(&format!("{name}.sh"), body);
    root.ok(&["agent", "add", &cell, "a1", "--", &script]);
    set_limits(root, &cell, "a1", limits);
    let pid = start(root, &cell, "a1");
    let mechanism = root.agent(&cell, "a1")["limits"]["mechanism"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if mechanism.starts_with("cgroup") {
        return Some((cell, pid));
    }
    println!("skipped: pas may not create cgroups here (mechanism {mechanism}), so no group enforces the limit");
    root.ok(&["agent", "stop", &cell, "a1", "--grace", "1"]);
    None
}

/// The directory of `pid`'s group under a v1 `controller` (or the v2 one).
fn group_dir(pid: i64, controller: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        if controllers.split(',').any(|c| c == controller) {
            return Some(PathBuf::from(format!("/sys/fs/cgroup/{controller}{path}")));
        }
        if controllers.is_empty() && path.contains("/pas/") {
            return Some(PathBuf::from(format!("/sys/fs/cgroup{path}")));
        }
    }
    None
}

#[test]
fn an_agent_over_its_memory_limit_is_killed_recorded_as_oom_and_restarted() {
    let root = Root::new();
    // `tail` keeps the whole "line" of /dev/zero: its memory grows without bound.
    let hog = "exec tail /dev/zero";
    let Some((cell, pid)) = started_in_a_group(&root, "Oom", hog, json!({"memory": "64MB"})) else {
        return;
    };
    let group = group_dir(pid, "memory").expect("the agent is in a memory group");
    assert!(
        group.to_string_lossy().contains("/pas/"),
        "{}",
        group.display()
    );
    let limit = std::fs::read_to_string(group.join("memory.limit_in_bytes"))
        .or_else(|_| std::fs::read_to_string(group.join("memory.max")))
        .unwrap();
    // The kernel rounds the limit down to whole pages.
    assert_eq!(
        limit.trim().parse::<u64>().unwrap() / 4096,
        64_000_000 / 4096
    );
    wait_until(20.0, "an oom death and a restart", || {
        let a = root.agent(&cell, "a1");
        a["restart_count"].as_u64().unwrap_or(0) >= 1
            && root.event_kinds(&cell).iter().any(|k| k == "agent.revived")
    });
    let exited = root.ok(&["--json", "events", &cell, "--kind", "agent.exited"]);
    let first: Value = serde_json::from_str(exited.lines().next().unwrap()).unwrap();
    assert_eq!(first["details"]["cause"], "oom", "{first}");
    assert!(first["message"]
        .as_str()
        .unwrap()
        .contains("signal 9 (oom)"));
    let shown = root.ok(&["agent", "show", &cell, "a1"]);
    assert!(shown.contains("cgroup_v"), "{shown}");
    assert!(shown.contains("memory 64 MB"), "{shown}");
    root.ok(&["agent", "stop", &cell, "a1", "--grace", "1"]);
    wait_until(10.0, "the agent's group removed", || !group.exists());
    assert!(
        !group.parent().unwrap().exists(),
        "the cell's group goes too"
    );
}

#[test]
fn a_cpu_capped_busy_loop_uses_about_its_cap() {
    let root = Root::new();
    let spin = "while :; do :; done";
    let Some((cell, pid)) = started_in_a_group(&root, "Cpu", spin, json!({"cpu": "200m"})) else {
        return;
    };
    let usage = |dir: &PathBuf| -> u64 {
        std::fs::read_to_string(dir.join("cpuacct.usage"))
            .map(|t| t.trim().parse().unwrap())
            .or_else(|_| {
                std::fs::read_to_string(dir.join("cpu.stat")).map(|t| {
                    let usec = t.lines().find_map(|l| l.strip_prefix("usage_usec "));
                    usec.unwrap().trim().parse::<u64>().unwrap() * 1000
                })
            })
            .unwrap()
    };
    let dir = group_dir(pid, "cpuacct").expect("the agent is in a cpuacct group");
    let (start_ns, started) = (usage(&dir), Instant::now());
    wait_until(5.0, "a window of 1.5 s", || {
        started.elapsed().as_secs_f64() >= 1.5
    });
    let cores = (usage(&dir) - start_ns) as f64 / 1e9 / started.elapsed().as_secs_f64();
    assert!(
        (0.1..=0.35).contains(&cores),
        "used {cores:.3} cores, capped at 0.2"
    );
    let status = root.json(&["status", &cell]);
    let agent = &status["cells"][0]["agents"][0];
    assert_eq!(agent["limits"]["cpu"], 0.2, "{agent}");
    root.ok(&["agent", "stop", &cell, "a1", "--grace", "1"]);
}

#[test]
fn without_cgroups_rlimits_and_nice_reach_the_process() {
    let root = Root::new();
    let cell = root.cell("Rlimits");
    root.ok(&["agent", "add", &cell, "a1", "--", "sleep", "30"]);
    set_limits(
        &root,
        &cell,
        "a1",
        json!({"memory": "256MiB", "pids": 4000, "open_files": 200, "nice": 7, "cpu": 0.5}),
    );
    let mut cmd = root.cmd(&["agent", "start", &cell, "a1"]);
    let out = cmd.env("PAS_CGROUPS", "off").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pid = 0;
    wait_until(10.0, "the agent's pid", || {
        pid = root.agent(&cell, "a1")["pid"].as_i64().unwrap_or(0);
        pid > 0
    });
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let row = |name: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {limits}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(row("Max open files").contains("200 200"), "{limits}");
    assert!(row("Max processes").contains("4000 4000"), "{limits}");
    assert!(
        row("Max data size").contains(&format!("{0} {0}", 256 << 20)),
        "{limits}"
    );
    // Field 19 of /proc/<pid>/stat is the nice value.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    assert_eq!(fields[16], "7", "{stat}");
    let recorded = &root.agent(&cell, "a1")["limits"];
    assert_eq!(recorded["mechanism"], "rlimit");
    assert_eq!(recorded["why"], "cgroups are turned off (PAS_CGROUPS=off)");
    assert_eq!(recorded["nice"], 7);
    assert!(recorded["not_enforced"][0]
        .as_str()
        .unwrap()
        .starts_with("cpu: no rlimit caps a CPU rate"));
    // Its private TMPDIR exists while it runs and is gone when it ends.
    let tmp = PathBuf::from(recorded["tmpdir"].as_str().unwrap());
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(env
        .split(|b| *b == 0)
        .any(|kv| kv == format!("TMPDIR={}", tmp.display()).as_bytes()));
    assert!(tmp.is_dir());
    let shown = root.ok(&["agent", "show", &cell, "a1"]);
    assert!(
        shown.contains("rlimit (cgroups are turned off (PAS_CGROUPS=off))"),
        "{shown}"
    );
    assert!(shown.contains("not enforced: cpu"), "{shown}");
    root.ok(&["agent", "stop", &cell, "a1", "--grace", "1"]);
    wait_until(10.0, "its TMPDIR removed", || !tmp.exists());
}

#[test]
fn limits_pas_cannot_enforce_are_refused_before_anything_starts() {
    let root = Root::new();
    let cell = root.cell("Bad");
    root.ok(&["agent", "add", &cell, "a1", "--", "sleep", "30"]);
    set_limits(&root, &cell, "a1", json!({"nice": 40}));
    let before = root.snapshot();
    root.run(&["agent", "start", &cell, "a1"]).refused(
        2,
        "the agent file resource_limits.nice: 40 is outside -20 to 19",
    );
    assert_eq!(root.snapshot(), before, "nothing changed");
    set_limits(&root, &cell, "a1", json!({}));
    let iso = root.cell_dir(&cell).join("config/isolation.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&iso).unwrap()).unwrap();
    doc["resource_limits"]["memory"] = json!("plenty");
    std::fs::write(&iso, doc.to_string()).unwrap();
    root.run(&["agent", "start", &cell, "a1"]).refused(
        2,
        "config/isolation.json resource_limits.memory: cannot read \"plenty\"",
    );
}

#[test]
fn a_level_2_agent_writes_in_its_cell_and_nowhere_else() {
    if !rustix::process::geteuid().is_root() {
        println!("skipped: level_2 needs root for its mount namespace, and this test does not run as root");
        return;
    }
    let root = Root::new();
    let cell = root.ok(&["cell", "create", "--name", "Ns", "--isolation", "level_2"]);
    let other = root.cell("Other");
    let outside = std::env::temp_dir().join(format!("pas-l2-{}", uuid::Uuid::new_v4()));
    let script = root.script(
        "ns.sh",
        &format!(
            r#"
echo in > ./inside.txt && echo "inside ok"
echo t > "$TMPDIR/t" && echo "tmp ok"
if echo x > {outside} 2>/dev/null; then echo "outside WROTE"; else echo "outside refused"; fi
if echo x > {other}/x 2>/dev/null; then echo "other WROTE"; else echo "other refused"; fi
echo done
sleep 30"#,
            outside = outside.display(),
            other = root.cell_dir(&other).display(),
        ),
    );
    root.ok(&["agent", "add", &cell, "a1", "--", &script]);
    let text = root.start_for_report(&cell, "a1");
    for line in ["inside ok", "tmp ok", "outside refused", "other refused"] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    assert!(!outside.exists());
    assert!(!root.cell_dir(&other).join("x").exists());
    assert!(root.cell_dir(&cell).join("inside.txt").exists());
    root.ok(&["agent", "stop", &cell, "a1", "--grace", "1"]);
}

/// The memory limit of `pid`'s group, in bytes.
fn memory_limit(pid: i64) -> u64 {
    let group = group_dir(pid, "memory").expect("the agent is in a memory group");
    std::fs::read_to_string(group.join("memory.limit_in_bytes"))
        .or_else(|_| std::fs::read_to_string(group.join("memory.max")))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_restart_keeps_the_group_and_an_emptied_tmpdir_and_takes_a_changed_limit() {
    let root = Root::new();
    // Each run leaves a file in its TMPDIR and says whether the last run's was there.
    let body = r#"if [ -e "$TMPDIR/left" ]; then echo "saw left"; else echo "tmp empty"; fi
touch "$TMPDIR/left"
exec sleep 300"#;
    let Some((cell, first)) = started_in_a_group(&root, "Keep", body, json!({"memory": "64MB"}))
    else {
        return;
    };
    let tmpdir = root.agent(&cell, "a1")["limits"]["tmpdir"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(memory_limit(first) / 4096, 64_000_000 / 4096);
    // `status` says how the running agents' limits are enforced.
    let status = root.ok(&["status", &cell]);
    let mechanism = root.agent(&cell, "a1")["limits"]["mechanism"].clone();
    assert!(
        status.contains(&format!("\n  limits {}: a1\n", mechanism.as_str().unwrap())),
        "{status}"
    );
    let restarted = |after: i64| {
        let mut pid = 0;
        wait_until(10.0, "a restart", || {
            pid = root.agent(&cell, "a1")["pid"].as_i64().unwrap_or(0);
            pid > 0 && pid != after && std::path::Path::new(&tmpdir).join("left").exists()
        });
        pid
    };
    // The same limits: the same group and directory, emptied.
    kill9(first);
    let second = restarted(first);
    assert_eq!(memory_limit(second) / 4096, 64_000_000 / 4096);
    assert_eq!(root.agent(&cell, "a1")["limits"]["tmpdir"], tmpdir.as_str());
    // A changed limit: set up again, in force for the next run.
    set_limits(&root, &cell, "a1", json!({"memory": "32MB"}));
    kill9(second);
    let third = restarted(second);
    assert_eq!(memory_limit(third) / 4096, 32_000_000 / 4096);
    assert_eq!(
        root.agent(&cell, "a1")["limits"]["memory_bytes"],
        32_000_000
    );
    let log_file = root.cell_dir(&cell).join("logs/a1.log");
    let mut log = String::new();
    wait_until(10.0, "three runs' reports", || {
        log = std::fs::read_to_string(&log_file).unwrap_or_default();
        log.matches("tmp empty").count() + log.matches("saw left").count() >= 3
    });
    assert!(!log.contains("saw left"), "{log}");
    root.ok(&["agent", "stop", &cell, "a1", "--grace", "1"]);
}

/// A pid no process has now, for a planted directory's name.
fn unused_pid() -> u32 {
    (2000..32000)
        .rev()
        .find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
        .unwrap()
}

/// SIGKILL to `pid`, when it is still there.
fn kill9(pid: i64) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

#[test]
fn what_killed_supervisors_leave_is_swept_at_the_next_start_and_by_the_watch() {
    let root = Root::new();
    let Some((cell, pid)) =
        started_in_a_group(&root, "Sweep", "exec sleep 300", json!({"pids": 16}))
    else {
        return;
    };
    let a = root.agent(&cell, "a1");
    let first_tmp = PathBuf::from(a["limits"]["tmpdir"].as_str().unwrap());
    // Under v1 the group is a directory per controller; under v2 one.
    let mut groups: Vec<PathBuf> = ["memory", "cpu", "cpuacct", "pids"]
        .iter()
        .filter_map(|c| group_dir(pid, c))
        .collect();
    groups.sort();
    groups.dedup();
    assert!(!groups.is_empty());
    // A link planted under a name the sweep looks at, to a directory it must not empty.
    let stem = first_tmp.file_name().unwrap().to_str().unwrap();
    let stem = stem.rsplit_once('.').unwrap().0;
    let outside = root.path.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), "x").unwrap();
    let planted = std::env::temp_dir().join(format!("{stem}.{}", unused_pid()));
    std::os::unix::fs::symlink(&outside, &planted).unwrap();
    let kill_both = || {
        let a = root.agent(&cell, "a1");
        kill9(a["supervisor_pid"].as_i64().unwrap());
        kill9(a["pid"].as_i64().unwrap());
        wait_until(10.0, "the group emptied", || {
            groups.iter().all(|g| {
                std::fs::read_to_string(g.join("cgroup.procs")).is_ok_and(|p| p.trim().is_empty())
            })
        });
    };
    // A supervisor killed: its agent's next supervisor removes its TMPDIR.
    kill_both();
    assert!(first_tmp.exists());
    root.ok(&["agent", "start", &cell, "a1"]);
    wait_until(10.0, "the new run's limits", || {
        root.agent(&cell, "a1")["limits"]["tmpdir"].as_str() != first_tmp.to_str()
    });
    assert!(
        !first_tmp.exists(),
        "the killed supervisor's TMPDIR is gone"
    );
    let second_tmp = PathBuf::from(
        root.agent(&cell, "a1")["limits"]["tmpdir"]
            .as_str()
            .unwrap(),
    );
    // Killed again and not started: `pas watch` removes the empty group and the TMPDIR
    // (a group quiet for 10 s: its time is set back rather than waited for).
    kill_both();
    root.ok(&["agent", "stop", &cell, "a1", "--grace", "1"]);
    for g in &groups {
        let status = std::process::Command::new("touch")
            .args(["-d", "1 hour ago"])
            .arg(g)
            .status()
            .unwrap();
        assert!(status.success());
    }
    let watch = root.ok(&["watch", "--once"]);
    assert!(watch.contains("removed the stale control group"), "{watch}");
    for g in &groups {
        assert!(!g.exists(), "{} is gone", g.display());
        assert!(!g.parent().unwrap().exists(), "the cell's group too");
    }
    assert!(!second_tmp.exists(), "{watch}");
    // The planted link was neither followed nor removed.
    assert!(planted.symlink_metadata().is_ok());
    assert!(outside.join("keep").exists());
    std::fs::remove_file(&planted).unwrap();
}
