//! `pas watch` on etcd follows an etcd watch on the store's prefix instead of polling: the
//! expiry of a dead supervisor's alive key wakes it (skipped without etcd or pas-etcd).

use std::process::{Child, Stdio};

use crate::etcd::{cluster, etcd_program_built};
use crate::etcd_helpers::{agent, authenticate, ok, PASSWORD};
use crate::etcd_live::revision;
use crate::harness::{wait_until, Root};

fn kill(pid: i64, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    let _ = rustix::process::kill_process(pid, signal);
}

/// A cell with policies under which nothing but a death is due for an hour, and one
/// sleeping agent started in it (its command names the root, so the harness kills it with
/// the root). Returns the cell.
fn cell_with_agent(root: &Root, url: &str, name: &str, agent_id: &str) -> String {
    let cell = ok(root, url, &["cell", "create", "--name", name]);
    ok(
        root,
        url,
        &[
            "policy",
            "set",
            &cell,
            "heartbeat_ttl=3",
            "heartbeat_interval=3600",
            "startup_grace=3600",
            "restart_delay_seconds=0",
            "storm_limit=0",
            "checkpoint_required=false",
        ],
    );
    let root_path = root.path.display().to_string();
    ok(
        root,
        url,
        &[
            "agent",
            "add",
            &cell,
            agent_id,
            "--",
            "sh",
            "-c",
            "sleep 60; :",
            &root_path,
        ],
    );
    ok(root, url, &["agent", "start", &cell, agent_id]);
    cell
}

/// SIGKILLs an agent's supervisor, then the agent: nothing is left to record the death.
/// Returns the agent's pid.
fn kill_both(root: &Root, url: &str, cell: &str, agent_id: &str) -> i64 {
    let doc = agent(root, url, cell, agent_id);
    let (pid, supervisor) = (
        doc["pid"].as_i64().unwrap(),
        doc["supervisor_pid"].as_i64().unwrap(),
    );
    kill(supervisor, rustix::process::Signal::KILL);
    kill(pid, rustix::process::Signal::KILL);
    pid
}

fn revived(root: &Root, url: &str, cell: &str, agent_id: &str, old: i64) -> bool {
    agent(root, url, cell, agent_id)["pid"]
        .as_i64()
        .is_some_and(|p| p != old)
}

/// The create revision of `key` (`None`: absent). A put over a live key keeps it; a key
/// deleted and made again gets a new one.
fn created_at(cluster: &cluster::Cluster, key: &str) -> Option<i64> {
    revision(cluster, Some("pas"), key, "create_revision")
}

#[test]
fn watch_on_etcd_revives_when_the_alive_key_expires_not_at_its_next_reconcile() {
    if !etcd_program_built() {
        return;
    }
    // Its own cluster: authentication on (pas may run as root, which starts agents from
    // etcd only as a user pas.toml lists).
    let Some(cluster) = cluster::private() else {
        return;
    };
    let prefix = cluster::unique_prefix();
    authenticate(&cluster, &prefix);
    let url = format!("etcd://{}/{prefix}?user=pas", cluster.members.join(","));
    let root = Root::new();
    std::fs::write(
        root.path.join("pas.toml"),
        "etcd_root_writers = [\"pas\"]\n",
    )
    .unwrap();
    // Two cells: the watch's first pass goes over them in id order, so once the canary (in
    // the later cell) is revived, the earlier cell has had its first pass too.
    let first = cell_with_agent(&root, &url, "first", "a1");
    let second = cell_with_agent(&root, &url, "second", "a1");
    let (watched, canary) = if first < second {
        (first, second)
    } else {
        (second, first)
    };
    let canary_pid = kill_both(&root, &url, &canary, "a1");
    let watch: Child = root
        .cmd(&["--store", &url, "--json", "watch", "--interval", "600"])
        .env("PAS_ETCD_PASSWORD", PASSWORD)
        .env("PAS_HOST", "a")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(20.0, "the watch's first pass revives the canary", || {
        revived(&root, &url, &canary, "a1", canary_pid)
    });
    // From here the watched cell is looked at again only when a change of it arrives (or
    // in 600 s): its agent is killed with its supervisor, which leaves nothing written
    // until etcd deletes the alive key when its 2 s lease expires.
    let alive = format!("{prefix}/cells/{watched}/alive/a1");
    let old = created_at(&cluster, &alive);
    assert!(old.is_some(), "the supervisor holds its alive key");
    let pid = kill_both(&root, &url, &watched, "a1");
    wait_until(20.0, "the alive key's expiry wakes the watch", || {
        revived(&root, &url, &watched, "a1", pid)
    });
    // What woke it was the key's deletion: the new supervisor made the key anew. (A poll,
    // every 2 s, would have found the dead pid before the 3 s lease expired, and the new
    // supervisor's put would have taken over the old key, keeping its create revision.)
    let mut now = None;
    wait_until(10.0, "the new supervisor's alive key", || {
        now = created_at(&cluster, &alive);
        now.is_some()
    });
    assert_ne!(now, old, "the old alive key was never deleted");
    let doc = agent(&root, &url, &watched, "a1");
    assert_eq!(doc["exit"]["cause"], "vanished");
    assert_eq!(doc["restart_count"], 1);
    kill(watch.id() as i64, rustix::process::Signal::TERM);
    let out = watch.wait_with_output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("polling"), "{stderr}");
    for cell in [&watched, &canary] {
        ok(&root, &url, &["agent", "stop", cell, "a1", "--grace", "1"]);
    }
}
