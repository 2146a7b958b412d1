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
