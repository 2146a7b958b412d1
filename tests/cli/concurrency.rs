//! Many writers at once, and writers killed with SIGKILL mid-write.

use std::process::{Child, Stdio};
use std::time::Duration;

use crate::harness::Root;

#[test]
fn fifty_concurrent_agent_adds_all_land() {
    let root = Root::new();
    let cell = root.ok(&["cell", "create", "--name", "Crowd", "--max-agents", "100"]);
    let children: Vec<Child> = (0..50)
        .map(|i| {
            root.cmd(&["agent", "add", &cell, &format!("agent_{i:03}")])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let agents = root.json(&["agent", "list", &cell]);
    assert_eq!(agents.as_array().unwrap().len(), 50);
    assert!(root.assert_all_json_parses() >= 54);
}

#[test]
fn concurrent_adds_never_exceed_max_agents() {
    let root = Root::new();
    let cell = root.ok(&["cell", "create", "--name", "Tight", "--max-agents", "5"]);
    let children: Vec<Child> = (0..20)
        .map(|i| {
            root.cmd(&["agent", "add", &cell, &format!("a{i}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let ok = children
        .into_iter()
        .filter(|_| true)
        .map(|mut c| c.wait().unwrap().success())
        .filter(|s| *s)
        .count();
    assert_eq!(ok, 5);
    assert_eq!(
        root.json(&["agent", "list", &cell])
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

#[test]
fn writers_killed_mid_write_never_leave_a_torn_file() {
    let root = Root::new();
    let cell = root.cell("Kill");
    for i in 0..5 {
        root.ok(&["agent", "add", &cell, &format!("a{i}")]);
        root.ok(&["task", "add", &cell, &format!("t{i}"), "--title", "x"]);
    }
    let statuses = ["paused", "active"];
    for round in 0..120u64 {
        // Start a writer and kill it at a varying moment of its run.
        let mut child = match round % 3 {
            0 => root.cmd(&[
                "cell",
                "set",
                &cell,
                "--status",
                statuses[(round % 2) as usize],
            ]),
            1 => root.cmd(&["agent", "add", &cell, &format!("k{round}")]),
            _ => root.cmd(&[
                "task",
                "add",
                &cell,
                &format!("k{round}"),
                "--title",
                "killed",
            ]),
        }
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        std::thread::sleep(Duration::from_micros((round * 97) % 4000));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        root.assert_all_json_parses();
    }
    // The cell is still fully usable afterwards.
    root.ok(&["validate", &cell]);
}

/// The `pas` processes below `pid` (its children's children too).
fn pas_descendants(pid: u32, out: &mut Vec<u32>) {
    let kids =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for kid in kids
        .split_whitespace()
        .filter_map(|k| k.parse::<u32>().ok())
    {
        let comm = std::fs::read_to_string(format!("/proc/{kid}/comm")).unwrap_or_default();
        if comm.trim() == "pas" {
            out.push(kid);
        }
        pas_descendants(kid, out);
    }
}

#[test]
fn claimers_killed_at_random_moments_leave_every_task_claimed_exactly_once() {
    const TASKS: usize = 120;
    const CLAIMERS: usize = 20;
    let root = Root::new();
    let cell = root.ok(&["cell", "create", "--name", "Storm", "--max-agents", "20"]);
    for i in 0..CLAIMERS {
        root.ok(&["agent", "add", &cell, &format!("a{i:02}")]);
    }
    // A queue written as files, as a script would, then indexed.
    for i in 0..TASKS {
        let id = format!("t{i:03}");
        let doc = serde_json::json!({"task_id": id, "title": "work", "status": "pending"});
        std::fs::write(
            root.cell_dir(&cell).join(format!("tasks/{id}.json")),
            doc.to_string(),
        )
        .unwrap();
    }
    root.ok(&["task", "reindex", &cell]);
    // Each loop claims until nothing is ready (exit 7); a killed or busy claim is retried.
    let script = r#"while :; do id=$("$PAS" task claim "$PAS_CELL"); rc=$?; [ "$rc" -eq 7 ] && exit 0; [ "$rc" -eq 0 ] && echo "$id"; done"#;
    let mut loops: Vec<Child> = (0..CLAIMERS)
        .map(|i| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .env("PAS", crate::harness::pas_bin())
                .env("PAS_ROOT", &root.path)
                .env("PAS_CELL", &cell)
                .env("PAS_AGENT", format!("a{i:02}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // The storm: SIGKILL a random claim in flight at a random moment, while claims go on.
    let mut seed: u64 = 17;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        seed >> 33
    };
    let mut killed = 0;
    for _ in 0..60 {
        let mut victims = Vec::new();
        for l in &loops {
            pas_descendants(l.id(), &mut victims);
        }
        if let Some(&victim) = victims.get(next() as usize % victims.len().max(1)) {
            if let Some(pid) = rustix::process::Pid::from_raw(victim as i32) {
                if rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok() {
                    killed += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_micros(next() % 15_000));
    }
    let mut printed = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for l in &mut loops {
        crate::harness::wait_until(
            deadline
                .saturating_duration_since(std::time::Instant::now())
                .as_secs_f64(),
            "a claim loop to drain the queue",
            || l.try_wait().unwrap().is_some(),
        );
    }
    for l in loops {
        let out = l.wait_with_output().unwrap();
        assert!(out.status.success());
        printed.extend(
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(str::to_string),
        );
    }
    assert!(killed > 0, "the storm killed no claim");
    // Every task claimed once: in progress, first attempt, one task.claimed event each;
    // nothing printed twice and nothing printed that is not claimed.
    let tasks = root.json(&["task", "list", &cell]);
    let tasks = tasks.as_array().unwrap();
    assert_eq!(tasks.len(), TASKS);
    for t in tasks {
        assert_eq!(t["status"], "in_progress", "{t}");
        assert_eq!(t["attempts"], 1, "{t}");
        assert!(t["claimed_by"].is_string(), "{t}");
    }
    let mut claimed_events = std::collections::BTreeMap::new();
    let log = std::fs::read_to_string(root.cell_dir(&cell).join("logs/events.jsonl")).unwrap();
    for line in log.lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        if e["kind"] == "task.claimed" {
            *claimed_events
                .entry(e["task"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
    }
    assert_eq!(claimed_events.len(), TASKS);
    assert!(
        claimed_events.values().all(|n| *n == 1),
        "{claimed_events:?}"
    );
    let unique: std::collections::BTreeSet<_> = printed.iter().collect();
    assert_eq!(unique.len(), printed.len(), "a task printed twice");
    assert!(printed.iter().all(|p| claimed_events.contains_key(p)));
    let run = root.run(&["validate", "--strict", &cell]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(root
        .cell_dir(&cell)
        .join(".pas/ready")
        .read_dir()
        .unwrap()
        .next()
        .is_none());
}
