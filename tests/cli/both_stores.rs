//! The same session of commands on the file store and on etcd gives the same results: the
//! same exit codes, the same JSON (once ids, times and hashes are masked) and the same
//! refusals. What the two stores must not differ in is what a user or a script sees.

use serde_json::Value;

use crate::etcd::{cluster, etcd_program_built};
use crate::harness::{Root, Run};

/// One step of the session: the arguments, with `CELL` standing for the cell's id.
const SESSION: &[&[&str]] = &[
    &["cell", "show", "CELL"],
    &["agent", "add", "CELL", "a1", "--", "sleep", "60"],
    &["agent", "add", "CELL", "a2", "--", "sleep", "60"],
    &["agent", "add", "CELL", "a1", "--", "sleep", "60"],
    &[
        "agent",
        "beat",
        "CELL",
        "a1",
        "--progress",
        "0.25",
        "--ctx-used",
        "1000",
        "--ctx-limit",
        "8000",
    ],
    &["agent", "beat", "CELL", "nobody"],
    &[
        "agent",
        "set",
        "CELL",
        "a2",
        "--env",
        "MODE=fast",
        "--name",
        "second",
    ],
    &["agent", "fail", "CELL", "a2", "--reason", "tool timed out"],
    &["agent", "show", "CELL", "a2"],
    &[
        "task",
        "add",
        "CELL",
        "t1",
        "--title",
        "first",
        "--priority",
        "high",
    ],
    &[
        "task", "add", "CELL", "t2", "--title", "second", "--dep", "t1",
    ],
    &[
        "task",
        "add",
        "CELL",
        "t3",
        "--title",
        "third",
        "--priority",
        "low",
    ],
    &[
        "task", "add", "CELL", "t4", "--title", "bad", "--dep", "nope",
    ],
    &["task", "ready", "CELL"],
    &["task", "claim", "CELL", "--as", "a1"],
    &["task", "claim", "CELL", "--as", "a2"],
    &["task", "done", "CELL", "t3", "--as", "a1"],
    &["task", "done", "CELL", "t1", "--as", "a1"],
    &["task", "list", "CELL"],
    &["task", "claim", "CELL", "--as", "a1"],
    &[
        "task", "fail", "CELL", "t2", "--as", "a1", "--reason", "flaky",
    ],
    &["task", "show", "CELL", "t2"],
    &["task", "claim", "CELL", "--as", "a1"],
    &["task", "claim", "CELL", "--as", "a1"],
    &[
        "budget",
        "track",
        "CELL",
        "a1",
        "--used",
        "7000",
        "--limit",
        "8000",
        "--tokens",
        "500",
        "--cost-usd",
        "0.5",
    ],
    &["budget", "check", "CELL"],
    &[
        "checkpoint",
        "save",
        "CELL",
        "a1",
        "--state",
        "STATE",
        "--reason",
        "halfway",
    ],
    &["checkpoint", "list", "CELL", "a1"],
    &["checkpoint", "show", "CELL", "a1"],
    &["budget", "history", "CELL"],
    &[
        "reserve", "CELL", "--job", "j1", "--agent", "a1", "--cpu", "1", "--mem", "64M",
    ],
    &["reservations", "CELL"],
    &["quota", "CELL"],
    &["release", "CELL", "j1"],
    &["release", "CELL", "j1"],
    &["cell", "set", "CELL", "--status", "paused"],
    &["agent", "beat", "CELL", "a1"],
    &["cell", "set", "CELL", "--status", "active"],
    &["policy", "show", "CELL", "a1"],
    &["check"],
    &["status"],
    &["events", "CELL"],
    &["events", "verify", "CELL"],
    &["agent", "rm", "CELL", "a2"],
    &["agent", "rm", "CELL", "a2", "--force"],
    &["agent", "list", "CELL"],
];

/// Runs the session with `pas` (given the arguments after `--root`), one transcript entry
/// per step: the command, its exit code, its masked stdout and its stderr.
fn transcript(pas: &dyn Fn(&[&str]) -> Run, root: &Root, state: &str) -> Vec<String> {
    let root = root.path.display().to_string();
    let cell = pas(&["cell", "create", "--name", "both"]);
    assert_eq!(cell.code, 0, "{}", cell.stderr);
    let cell = cell.stdout.trim().to_string();
    let mut out = Vec::new();
    for step in SESSION {
        let args: Vec<&str> = step
            .iter()
            .map(|a| match *a {
                "CELL" => cell.as_str(),
                "STATE" => state,
                a => a,
            })
            .collect();
        let mut all = vec!["--json"];
        all.extend_from_slice(&args);
        let run = pas(&all);
        let stdout = run.stdout.replace(&root, "ROOT");
        // One JSON document, or JSON lines (`events`), or text.
        let masked = |text: &str| match serde_json::from_str::<Value>(text) {
            Ok(mut v) => {
                mask(&mut v, &cell);
                serde_json::to_string_pretty(&v).unwrap()
            }
            Err(_) => text.replace(&cell, "CELL"),
        };
        let stdout = match serde_json::from_str::<Value>(&stdout) {
            Ok(_) => masked(&stdout),
            Err(_) => stdout.lines().map(masked).collect::<Vec<_>>().join("\n"),
        };
        out.push(format!(
            "$ pas {}\nexit {}\n{}\n{}",
            step.join(" "),
            run.code,
            stdout,
            run.stderr.replace(&cell, "CELL").replace(&root, "ROOT")
        ));
    }
    out
}

/// Masks what differs between any two runs: the cell's id, times, hashes, pids, and the
/// store's own description.
fn mask(v: &mut Value, cell: &str) {
    match v {
        Value::String(s) => {
            let time = s.len() >= 20 && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T';
            let hash = s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
            if time {
                *s = "TIME".into();
            } else if hash {
                *s = "HASH".into();
            } else {
                *s = s.replace(cell, "CELL");
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| mask(i, cell)),
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                let volatile = matches!(
                    k.as_str(),
                    "store" | "path" | "pid" | "host" | "age" | "time_used" | "summary" | "file"
                ) || (k == "line" && names_a_breach(val))
                    || k.ends_with("_seconds")
                    || k.ends_with("_ms");
                if volatile {
                    *val = Value::String("MASKED".into());
                } else {
                    mask(val, cell);
                }
            }
        }
        _ => {}
    }
}

/// A check's line naming a breach by its random id.
fn names_a_breach(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.contains(" - breach "))
}

#[test]
fn a_session_of_commands_gives_the_same_results_on_files_and_on_etcd() {
    if !etcd_program_built() {
        return;
    }
    let Some(cluster) = cluster::shared() else {
        return;
    };
    let on_files = Root::new();
    let state = on_files.path.join(".state.json");
    std::fs::write(&state, "{\"step\": 3}\n").unwrap();
    let state = state.display().to_string();
    let files = transcript(&|args| on_files.run(args), &on_files, &state);
    let on_etcd = Root::new();
    let url = cluster.url();
    let etcd = transcript(
        &|args| {
            let mut all = vec!["--store", url.as_str()];
            all.extend_from_slice(args);
            on_etcd.run(&all)
        },
        &on_etcd,
        &state,
    );
    let differ: Vec<String> = files
        .iter()
        .zip(&etcd)
        .filter(|(f, e)| f != e)
        .map(|(f, e)| format!("on files:\n{f}\non etcd:\n{e}"))
        .collect();
    assert!(
        differ.is_empty(),
        "the file store and etcd differ:\n{}",
        differ.join("\n\n")
    );
    // The session exercised refusals as well as successes.
    let codes: Vec<&str> = files
        .iter()
        .filter_map(|t| t.lines().nth(1))
        .filter(|l| *l != "exit 0")
        .collect();
    assert!(codes.len() >= 5, "{files:#?}");
}
