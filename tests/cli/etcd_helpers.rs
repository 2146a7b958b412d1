//! What the tests of agents on etcd share (`etcd_live`, `etcd_nodes`): etcd users for
//! authentication (root starts agents from etcd only as a listed authenticated user), `pas`
//! on a named host, and SIGKILL.

use std::process::Command;

use crate::etcd::cluster;
use crate::harness::Root;

/// The password of the etcd users the authenticated cluster has.
pub(crate) const PASSWORD: &str = "pw-for-tests";

/// `etcdctl` on `cluster` as `user` (`None`: no authentication): its output; panics when
/// it fails.
pub(crate) fn etcdctl(cluster: &cluster::Cluster, user: Option<&str>, args: &[&str]) -> Vec<u8> {
    let mut cmd = Command::new("etcdctl");
    cmd.arg(format!("--endpoints={}", cluster.members.join(",")));
    if let Some(user) = user {
        cmd.arg(format!("--user={user}:{PASSWORD}"));
    }
    let out = cmd.args(args).output().expect("etcdctl runs");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Turns authentication on in `cluster`: users `root`, `pas` (read and write under
/// `prefix`) and `eve` (the same), all with [`PASSWORD`].
pub(crate) fn authenticate(cluster: &cluster::Cluster, prefix: &str) {
    let within = format!("{prefix}/");
    for args in [
        vec!["user", "add", &format!("root:{PASSWORD}")],
        vec!["user", "grant-role", "root", "root"],
        vec!["role", "add", "writer"],
        vec![
            "role",
            "grant-permission",
            "writer",
            "--prefix=true",
            "readwrite",
            &within,
        ],
    ] {
        etcdctl(cluster, None, &args);
    }
    for user in ["pas", "eve"] {
        etcdctl(
            cluster,
            None,
            &["user", "add", &format!("{user}:{PASSWORD}")],
        );
        etcdctl(cluster, None, &["user", "grant-role", user, "writer"]);
    }
    etcdctl(cluster, None, &["auth", "enable"]);
}

/// The value of `key` in `cluster` as etcd user pas (`None`: no such key).
pub(crate) fn get(cluster: &cluster::Cluster, key: &str) -> Option<String> {
    let out = etcdctl(cluster, Some("pas"), &["get", "--print-value-only", key]);
    let text = String::from_utf8_lossy(&out).trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// `pas --store URL ARGS` in `root` on host `host` (`PAS_HOST`), with the etcd password set.
pub(crate) fn pas_on(host: &str, root: &Root, url: &str, args: &[&str]) -> crate::harness::Run {
    let mut all = vec!["--store", url];
    all.extend_from_slice(args);
    crate::harness::Run::from(
        root.cmd(&all)
            .env("PAS_ETCD_PASSWORD", PASSWORD)
            .env("PAS_HOST", host)
            .output()
            .unwrap(),
    )
}

/// [`pas_on`] on host `a`, which must succeed: its output, trimmed.
pub(crate) fn ok(root: &Root, url: &str, args: &[&str]) -> String {
    let run = pas_on("a", root, url, args);
    assert_eq!(run.code, 0, "pas {args:?} failed: {}", run.stderr);
    run.stdout.trim().to_string()
}

/// `pas agent show` of `agent` on host `a`, as JSON.
pub(crate) fn agent(root: &Root, url: &str, cell: &str, agent: &str) -> serde_json::Value {
    serde_json::from_str(&ok(root, url, &["--json", "agent", "show", cell, agent])).unwrap()
}

/// SIGKILLs `pid` (gone already: nothing).
pub(crate) fn kill9(pid: i64) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}
