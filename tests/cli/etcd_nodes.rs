//! `pas watch` nodes on several hosts sharing one etcd prefix (two processes with different
//! host names on this machine): each revives the agents of its own host, exactly once, and
//! one takes over the agents of a host whose node is gone (skipped without etcd).

use std::process::{Child, Stdio};

use serde_json::Value;

use crate::etcd::{cluster, etcd_program_built};
use crate::etcd_helpers::{authenticate, get, kill9, pas_on, PASSWORD};
use crate::harness::{wait_until, Root};

/// A `pas watch` node on host `host` in its own local root: `--host` on the command line,
/// a short reconcile interval and a node lease of 2 s (etcd's shortest).
fn node(root: &Root, url: &str, host: &str) -> Child {
    root.cmd(&[
        "--json",
        "--store",
        url,
        "--host",
        host,
        "watch",
        "--interval",
        "0.3",
        "--node-ttl",
        "2",
    ])
    .env("PAS_ETCD_PASSWORD", PASSWORD)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap()
}

/// What a node printed, once it is gone.
fn output(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn two_watch_nodes_revive_their_own_agents_once_and_take_over_a_gone_host() {
    if !etcd_program_built() {
        return;
    }
    let Some(cluster) = cluster::private() else {
        return;
    };
    // Root starts agents from etcd only as a listed, authenticated user.
    let prefix = cluster::unique_prefix();
    authenticate(&cluster, &prefix);
    let url = format!("etcd://{}/{prefix}?user=pas", cluster.members.join(","));
    let (root_a, root_b) = (Root::new(), Root::new());
    for root in [&root_a, &root_b] {
        std::fs::write(
            root.path.join("pas.toml"),
            "etcd_root_writers = [\"pas\"]\n",
        )
        .unwrap();
    }
    let ok = |host: &str, root: &Root, args: &[&str]| {
        let run = pas_on(host, root, &url, args);
        assert_eq!(run.code, 0, "pas {args:?} on {host}: {}", run.stderr);
        run.stdout.trim().to_string()
    };
    let agent = |cell: &str| -> Value {
        serde_json::from_str(&ok("a", &root_a, &["--json", "agent", "show", cell, "a1"])).unwrap()
    };
    let count = |cell: &str, kind: &str| -> usize {
        // One event a line.
        let events = ok("a", &root_a, &["--json", "events", cell]);
        events
            .lines()
            .filter(|l| serde_json::from_str::<Value>(l).unwrap()["kind"] == kind)
            .count()
    };
    let cell = ok("a", &root_a, &["cell", "create", "--name", "nodes"]);
    // Its process (naming root a, so the harness ends it with the root) sleeps; the lease of
    // its supervisor's alive key lasts 2 s, and a gone host is taken over 1 s after its
    // node key went.
    let command = [
        "sh",
        "-c",
        "sleep 60; :",
        &root_a.path.display().to_string(),
    ]
    .map(String::from);
    let mut add = vec!["agent", "add", &cell, "a1", "--"];
    add.extend(command.iter().map(String::as_str));
    ok("a", &root_a, &add);
    ok(
        "a",
        &root_a,
        &[
            "policy",
            "set",
            &cell,
            "heartbeat_ttl=2",
            "host_takeover_after=1",
            "restart_delay_seconds=0.1",
        ],
    );
    let pid: i64 = ok("a", &root_a, &["agent", "start", &cell, "a1"])
        .parse()
        .unwrap();
    assert_eq!(agent(&cell)["host"], "a");

    let node_a = node(&root_a, &url, "a");
    let node_b = node(&root_b, &url, "b");
    wait_until(10.0, "both nodes keep their keys", || {
        get(&cluster, &format!("{prefix}/nodes/a")).is_some()
            && get(&cluster, &format!("{prefix}/nodes/b")).is_some()
    });

    // a. The agent and its supervisor die on host a: node a revives it, once; node b,
    // whose node sees a's key alive, leaves it.
    let supervisor = agent(&cell)["supervisor_pid"].as_i64().unwrap();
    kill9(supervisor);
    kill9(pid);
    wait_until(15.0, "node a revives the agent", || {
        let a = agent(&cell);
        a["pid"].as_i64().is_some_and(|p| p != pid)
            && a["host"] == "a"
            && count(&cell, "agent.revived") >= 1
    });
    let revived_pid = agent(&cell)["pid"].as_i64().unwrap();
    assert_eq!(count(&cell, "agent.revived"), 1, "revived once");

    // b. Host a is gone: its node, the supervisor and the agent are SIGKILLed. Node b
    // takes the agent over once a's node key and the alive key are gone: it runs on b.
    let mut node_a = node_a;
    let supervisor = agent(&cell)["supervisor_pid"].as_i64().unwrap();
    node_a.kill().unwrap();
    kill9(supervisor);
    kill9(revived_pid);
    let printed_a = output(node_a);
    wait_until(20.0, "node b takes the agent over", || {
        let a = agent(&cell);
        a["host"] == "b"
            && a["pid"].as_i64().is_some_and(|p| p != revived_pid)
            && count(&cell, "agent.revived") >= 2
    });
    assert_eq!(count(&cell, "agent.revived"), 2, "revived once more");
    let events = ok("a", &root_a, &["--json", "events", &cell]);
    assert!(events.contains("taken over by node b"), "{events}");
    assert_eq!(
        get(&cluster, &format!("{prefix}/cells/{cell}/alive/a1")).as_deref(),
        Some("b")
    );

    let mut node_b = node_b;
    node_b.kill().unwrap();
    let printed_b = output(node_b);
    let revived = |printed: &str| printed.matches("\"action\":\"revived\"").count();
    assert!(printed_a.contains("node a looking after"), "{printed_a}");
    assert_eq!(
        revived(&printed_a),
        1,
        "node a revived its agent once: {printed_a}"
    );
    // Node b did nothing in a: its one revival is the one after its takeover.
    assert_eq!(revived(&printed_b), 1, "{printed_b}");
    assert_eq!(
        printed_b.matches("\"action\":\"taken_over\"").count(),
        1,
        "{printed_b}"
    );
}
