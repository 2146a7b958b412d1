//! The store selection (`--store`, `PAS_STORE`, `store` in pas.toml) and the main commands
//! on the etcd store, against the 3-member test cluster (skipped without etcd).

use serde_json::Value;

use crate::harness::Root;

#[path = "../../src/store/etcd/cluster.rs"]
#[allow(dead_code)]
pub(crate) mod cluster;

/// Whether `pas-etcd` was built (`cargo test --features etcd`; its gRPC client needs
/// `protoc`). When not, prints one `skipped:` line, unless `PAS_TEST_REQUIRE_ALL=1`.
pub(crate) fn etcd_program_built() -> bool {
    // Cargo names the program even when the feature is off; it exists only when built.
    if option_env!("CARGO_BIN_EXE_pas-etcd").is_some_and(|p| std::path::Path::new(p).exists()) {
        return true;
    }
    let problem = "pas-etcd is not built (cargo test --features etcd, which needs protoc)";
    if std::env::var("PAS_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{problem} (PAS_TEST_REQUIRE_ALL=1 makes a missing tool a failure)");
    }
    println!("skipped: {problem}");
    false
}

/// The shared test cluster and a store URL on it with a prefix of its own; `None` (after one
/// `skipped:` line) without `pas-etcd` or etcd.
pub(crate) fn shared_url() -> Option<(&'static cluster::Cluster, String)> {
    if !etcd_program_built() {
        return None;
    }
    let cluster = cluster::shared()?;
    Some((cluster, cluster.url()))
}

#[test]
fn bad_store_urls_are_refused_in_one_line_naming_where_they_came_from() {
    let root = Root::new();
    let before = root.snapshot();
    root.run(&["--store", "http://h:2379/p", "status"]).refused(
        2,
        "--store: store http://h:2379/p: the scheme must be etcd://",
    );
    let run = crate::harness::Run::from(
        root.cmd(&["status"])
            .env("PAS_STORE", "etcd://h:2379")
            .output()
            .unwrap(),
    );
    run.refused(2, "PAS_STORE: store etcd://h:2379: it names no key prefix");
    std::fs::write(root.path.join("pas.toml"), "store = \"etcd://h:0/p\"\n").unwrap();
    root.run(&["status"]).refused(
        2,
        "store in pas.toml: store etcd://h:0/p: member \"h:0\": the port",
    );
    std::fs::remove_file(root.path.join("pas.toml")).unwrap();
    assert_eq!(root.snapshot(), before, "nothing was written");
}

#[test]
fn version_verbose_names_the_file_store_by_default() {
    let root = Root::new();
    let out = root.ok(&["--version", "--verbose"]);
    assert!(out.starts_with("pas "), "{out}");
    assert!(
        out.contains(&format!("store: file store at {}", root.path.display())),
        "{out}"
    );
}

#[test]
fn the_main_commands_run_on_etcd() {
    let Some((cluster, url)) = shared_url() else {
        return;
    };
    let root = Root::new();
    let pas = |args: &[&str]| {
        let mut all = vec!["--store", url.as_str()];
        all.extend_from_slice(args);
        root.ok(&all)
    };
    let cell = pas(&["cell", "create", "--name", "on-etcd"]);
    pas(&["agent", "add", &cell, "a1", "--", "sleep", "60"]);
    pas(&["agent", "beat", &cell, "a1"]);
    pas(&["task", "add", &cell, "t1", "--title", "first"]);
    pas(&["task", "add", &cell, "t2", "--title", "second"]);
    assert_eq!(pas(&["task", "claim", &cell, "--as", "a1"]), "t1");
    pas(&["task", "done", &cell, "t1", "--as", "a1"]);
    assert_eq!(pas(&["task", "claim", &cell, "--as", "a1"]), "t2");
    let verified = pas(&["events", "verify", &cell]);
    assert!(verified.starts_with("ok: "), "{verified}");
    let status: Value = serde_json::from_str(&pas(&["--json", "status"])).unwrap();
    assert_eq!(status["store"]["kind"], "etcd");
    assert_eq!(status["cells"][0]["id"], Value::String(cell.clone()));
    let version = pas(&["--version", "--verbose"]);
    assert!(
        version.contains("store: etcd store at etcd://"),
        "{version}"
    );
    // The documents are in etcd, not under the root.
    assert!(!root.path.join(&cell).join("cell.json").exists());
    // Another prefix on the same cluster is another root: it has no cells.
    let mut other = vec!["--store".to_string(), cluster.url()];
    other.extend(["--json", "status"].map(String::from));
    let other: Vec<&str> = other.iter().map(String::as_str).collect();
    let status: Value = serde_json::from_str(&root.ok(&other)).unwrap();
    assert_eq!(status["cells"], Value::Array(Vec::new()));
}

#[test]
fn an_unreachable_cluster_is_exit_10_and_nothing_is_written() {
    if !etcd_program_built() {
        return;
    }
    let root = Root::new();
    let before = root.snapshot();
    // Port 1 on loopback: nothing listens there.
    root.run(&[
        "--store",
        "etcd://127.0.0.1:1/p",
        "cell",
        "create",
        "--name",
        "x",
    ])
    .refused(10, "etcd at 127.0.0.1:1 cannot be used");
    assert_eq!(root.snapshot(), before);
}
