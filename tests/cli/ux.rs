//! Everyday operation: `pas logs` like journalctl, the status glance at 80 columns, and
//! the shell's details (completion of a spaced name in a real bash).

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;

use serde_json::json;

use crate::harness::{wait_until, Root};

/// A cell with agent `a1` running a script that prints `$COUNT` numbered lines and exits 3.
fn counting_agent(root: &Root) -> String {
    let cell = root.cell("Logs");
    let script = root.script(
        "count.sh",
        r#"i=0; while [ "$i" -lt "$COUNT" ]; do echo "line $i of a run that writes a lot"; i=$((i+1)); done; exit 3"#,
    );
    root.ok(&["agent", "add", &cell, "a1", "--", &script]);
    root.policies(&cell, json!({"log_max_bytes": 1000, "log_keep": 2}));
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
    root.policies(&cell, json!({"log_max_bytes": 1000, "log_keep": 20}));
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
