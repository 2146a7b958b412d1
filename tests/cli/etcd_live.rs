//! Agents on the etcd store: who may start them (the trust rule for a store that records no
//! writer), supervision and revival, against test clusters (skipped without etcd).

use serde_json::Value;

use crate::etcd::{cluster, etcd_program_built};
use crate::etcd_helpers::{agent, authenticate, etcdctl, get, kill9, ok, pas_on};
use crate::harness::{wait_until, Root};

/// `pas --store URL ARGS` in `root` on host `a`, with the etcd password set.
fn pas(root: &Root, url: &str, args: &[&str]) -> crate::harness::Run {
    pas_on("a", root, url, args)
}

/// An agent command whose process names the root on its command line, so the harness
/// kills it with the root even though its file is in etcd.
fn sleeper(root: &Root) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        "sleep 60; :".into(),
        root.path.display().to_string(),
    ]
}

#[test]
fn root_starts_agents_from_etcd_only_as_a_listed_authenticated_user() {
    if !etcd_program_built() {
        return;
    }
    let Some(cluster) = cluster::private() else {
        return;
    };
    let root = Root::new();
    let mut add = vec!["agent", "add", "CELL", "a1", "--"];
    let command = sleeper(&root);
    add.extend(command.iter().map(String::as_str));
    // Without authentication: refused, one line, nothing started.
    let open = format!(
        "etcd://{}/{}",
        cluster.members.join(","),
        cluster::unique_prefix()
    );
    let cell = ok(&root, &open, &["cell", "create", "--name", "open"]);
    add[2] = &cell;
    ok(&root, &open, &add);
    pas(&root, &open, &["agent", "start", &cell, "a1"])
        .refused(9, "which pas reaches without a user");
    assert_eq!(agent(&root, &open, &cell, "a1")["pid"], Value::Null);

    // Authenticated as pas, which pas.toml lists: started, supervised, revived in place.
    let prefix = cluster::unique_prefix();
    authenticate(&cluster, &prefix);
    let members = cluster.members.join(",");
    let as_pas = format!("etcd://{members}/{prefix}?user=pas");
    let as_eve = format!("etcd://{members}/{prefix}?user=eve");
    let cell = ok(&root, &as_pas, &["cell", "create", "--name", "closed"]);
    add[2] = &cell;
    ok(&root, &as_pas, &add);
    pas(&root, &as_pas, &["agent", "start", &cell, "a1"]).refused(
        9,
        "as etcd user pas, which pas.toml's etcd_root_writers does not name",
    );
    std::fs::write(
        root.path.join("pas.toml"),
        "etcd_root_writers = [\"pas\"]\n",
    )
    .unwrap();
    pas(&root, &as_eve, &["agent", "start", &cell, "a1"]).refused(9, "as etcd user eve");
    let pid: i64 = ok(&root, &as_pas, &["agent", "start", &cell, "a1"])
        .parse()
        .unwrap();
    let shown = agent(&root, &as_pas, &cell, "a1");
    assert_eq!((&shown["pid"], &shown["host"]), (&pid.into(), &"a".into()));
    // From host b: taken as running on the record alone, and never signalled from there.
    let from_b = pas_on(
        "b",
        &root,
        &as_pas,
        &["--json", "agent", "show", &cell, "a1"],
    );
    let from_b: Value = serde_json::from_str(&from_b.stdout).unwrap();
    assert_eq!(from_b["process"], "running");
    pas_on("b", &root, &as_pas, &["agent", "stop", &cell, "a1"])
        .refused(4, "agent a1 runs on host a, not on this one (b)");
    kill9(pid);
    wait_until(10.0, "the supervisor restarts the agent", || {
        agent(&root, &as_pas, &cell, "a1")["pid"]
            .as_i64()
            .is_some_and(|p| p != pid)
    });
    let events = ok(&root, &as_pas, &["--json", "events", &cell]);
    assert!(events.contains("agent.revived"), "{events}");

    // Its supervisor holds the alive key on a lease: a stop revokes it at once...
    let alive = format!("{prefix}/cells/{cell}/alive/a1");
    assert_eq!(get(&cluster, &alive).as_deref(), Some("a"));
    ok(
        &root,
        &as_pas,
        &["agent", "stop", &cell, "a1", "--grace", "1"],
    );
    wait_until(5.0, "the stop revokes the alive lease", || {
        get(&cluster, &alive).is_none()
    });
    // ...and a supervisor that dies leaves it to expire after heartbeat_ttl.
    ok(&root, &as_pas, &["policy", "set", &cell, "heartbeat_ttl=2"]);
    let pid: i64 = ok(&root, &as_pas, &["agent", "start", &cell, "a1"])
        .parse()
        .unwrap();
    // Renewed on its stream: still there well past its TTL while the supervisor lives.
    let started = std::time::Instant::now();
    wait_until(10.0, "3 s with the alive key renewed", || {
        assert_eq!(get(&cluster, &alive).as_deref(), Some("a"), "renewed");
        started.elapsed().as_secs_f64() > 3.0
    });
    let supervisor = agent(&root, &as_pas, &cell, "a1")["supervisor_pid"]
        .as_i64()
        .unwrap();
    kill9(supervisor);
    wait_until(10.0, "the lease of a dead supervisor expires", || {
        get(&cluster, &alive).is_none()
    });
    kill9(pid);
}

/// A revision of `key` in `cluster` as `user` (`field`: `mod_revision`, `create_revision`),
/// `None` when it is absent.
pub(crate) fn revision(
    cluster: &cluster::Cluster,
    user: Option<&str>,
    key: &str,
    field: &str,
) -> Option<i64> {
    let out = etcdctl(cluster, user, &["get", key, "-w", "json"]);
    let got: Value = serde_json::from_slice(&out).unwrap();
    got["kvs"][0][field].as_i64()
}

/// The mod revision of `key` in `cluster` (no authentication), `None` when it is absent.
fn mod_revision(cluster: &cluster::Cluster, key: &str) -> Option<i64> {
    revision(cluster, None, key, "mod_revision")
}

#[test]
fn a_beat_on_etcd_writes_only_news_or_a_stamp_a_third_of_the_interval_old() {
    if !etcd_program_built() {
        return;
    }
    let Some(cluster) = cluster::shared() else {
        return;
    };
    let root = Root::new();
    let prefix = cluster::unique_prefix();
    let url = format!("etcd://{}/{prefix}", cluster.members.join(","));
    let cell = ok(&root, &url, &["cell", "create", "--name", "beats"]);
    ok(&root, &url, &["agent", "add", &cell, "a1"]);
    let key = format!("{prefix}/cells/{cell}/agents/a1.json");
    let beat = |args: &[&str]| -> Value {
        let mut all = vec!["--json", "agent", "beat", &cell, "a1"];
        all.extend_from_slice(args);
        serde_json::from_str(&ok(&root, &url, &all)).unwrap()
    };
    // The first beat is news (it activates the agent); the next ones within a third of
    // heartbeat_interval (30 s by default) change nothing the document shows.
    assert_eq!(beat(&[])["heartbeat_count"], 1);
    let written = mod_revision(cluster, &key).unwrap();
    for _ in 0..5 {
        let reply = beat(&[]);
        assert_eq!(
            (&reply["ack"], &reply["heartbeat_count"]),
            (&true.into(), &1.into())
        );
    }
    assert_eq!(
        mod_revision(cluster, &key),
        Some(written),
        "idle beats wrote"
    );
    // The reply still carries what pas wants: a paused cell stops the agent.
    ok(&root, &url, &["cell", "set", &cell, "--status", "paused"]);
    let before = mod_revision(cluster, &key);
    let reply = beat(&[]);
    assert_eq!(
        (&reply["directive"], &reply["reason"]),
        (&"stop".into(), &"cell_paused".into())
    );
    assert_eq!(
        mod_revision(cluster, &key),
        before,
        "a paused cell's beat wrote"
    );
    ok(&root, &url, &["cell", "set", &cell, "--status", "active"]);
    // Progress is news: written at once, with the count.
    let reply = beat(&["--progress", "0.5"]);
    assert_eq!(reply["heartbeat_count"], 2);
    assert_eq!(agent(&root, &url, &cell, "a1")["progress"], 0.5);
    // A stamp a third of the interval old is written again, so health keeps its resolution.
    ok(
        &root,
        &url,
        &["policy", "set", &cell, "heartbeat_interval=1"],
    );
    wait_until(10.0, "an idle beat rewrites an old stamp", || {
        beat(&[])["heartbeat_count"] == 3
    });
}
