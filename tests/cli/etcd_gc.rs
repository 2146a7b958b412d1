//! `pas store gc`: the blobs no checkpoint manifest names go once past the grace; named and
//! young ones stay (skipped without etcd or pas-etcd; the file store has no blobs).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::etcd::shared_url;
use crate::etcd_helpers::etcdctl;
use crate::harness::Root;

/// Every blob file under `dir` (`sha256/<2>/<62>`), by hash.
fn blobs(dir: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let Ok(heads) = std::fs::read_dir(dir.join("sha256")) else {
        return found;
    };
    for head in heads {
        let head = head.unwrap();
        for f in std::fs::read_dir(head.path()).unwrap() {
            let f = f.unwrap();
            found.insert(format!(
                "{}{}",
                head.file_name().to_string_lossy(),
                f.file_name().to_string_lossy()
            ));
        }
    }
    found
}

fn blob_path(dir: &Path, sha: &str) -> PathBuf {
    dir.join("sha256").join(&sha[..2]).join(&sha[2..])
}

fn age(path: &Path, by: Duration) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - by)
        .unwrap();
}

#[test]
fn store_gc_removes_only_blobs_no_manifest_names_once_past_the_grace() {
    // The file store keeps a checkpoint's files with its generation: nothing to collect.
    let files = Root::new();
    let before = files.snapshot();
    files
        .run(&["store", "gc"])
        .refused(2, "has no blob directory: there is nothing to collect");
    assert_eq!(files.snapshot(), before);

    let Some((cluster, url)) = shared_url() else {
        return;
    };
    let root = Root::new();
    let prefix = url.rsplit('/').next().unwrap().to_string();
    let pas = |args: &[&str]| {
        let mut all = vec!["--store", url.as_str()];
        all.extend_from_slice(args);
        root.ok(&all)
    };
    let cell = pas(&["cell", "create", "--name", "gc"]);
    pas(&["agent", "add", &cell, "a1", "--", "true"]);
    pas(&["policy", "set", &cell, "checkpoint_keep=1"]);
    for n in 1..=3 {
        let state = root.path.join(format!("state-{n}.json"));
        std::fs::write(&state, format!("{{\"n\": {n}}}")).unwrap();
        let state = state.display().to_string();
        pas(&["checkpoint", "save", &cell, "a1", "--state", &state]);
    }
    // Generations 1 and 2 were pruned (checkpoint_keep=1): their own blobs are unnamed.
    let dir = root.path.join(".pas/blobs");
    let manifests = etcdctl(
        cluster,
        None,
        &[
            "get",
            "--prefix",
            "--print-value-only",
            &format!("{prefix}/cells/{cell}/.pas/checkpoints/"),
        ],
    );
    let mut named = BTreeSet::new();
    for line in String::from_utf8_lossy(&manifests).lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        for file in ["state", "context", "manifest"] {
            named.insert(v[file]["sha256"].as_str().unwrap().to_string());
        }
    }
    let all = blobs(&dir);
    assert!(named.is_subset(&all), "{named:?} {all:?}");
    let unnamed: BTreeSet<String> = all.difference(&named).cloned().collect();
    assert!(
        unnamed.len() >= 2,
        "two pruned states at least: {unnamed:?}"
    );
    for sha in &all {
        age(&blob_path(&dir, sha), Duration::from_secs(7200));
    }
    // A blob no manifest names yet, written a minute ago: a save in progress.
    let young = "ab".repeat(32);
    std::fs::create_dir_all(blob_path(&dir, &young).parent().unwrap()).unwrap();
    std::fs::write(blob_path(&dir, &young), "in progress").unwrap();
    age(&blob_path(&dir, &young), Duration::from_secs(60));

    // A dry run lists them and removes nothing.
    let listed: Value =
        serde_json::from_str(&pas(&["--json", "store", "gc", "--dry-run"])).unwrap();
    let would: BTreeSet<String> = listed["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["sha256"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(would, unnamed);
    assert_eq!(
        (&listed["named"], &listed["young"], &listed["dry_run"]),
        (&named.len().into(), &1.into(), &true.into())
    );
    assert_eq!(
        blobs(&dir).len(),
        all.len() + 1,
        "a dry run removes nothing"
    );

    // Then for real: a line each (a short hash), a total and what was kept; named and
    // young blobs stay.
    let out = pas(&["store", "gc"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), unnamed.len() + 2, "{out}");
    for sha in &unnamed {
        assert!(
            out.contains(&format!("removed blob {} (", &sha[..12])),
            "{out}"
        );
    }
    assert!(
        lines[unnamed.len()].starts_with(&format!("removed {} blob(s), ", unnamed.len())),
        "{out}"
    );
    assert!(lines[unnamed.len() + 1].starts_with("kept "), "{out}");
    let left = blobs(&dir);
    let mut want = named.clone();
    want.insert(young.clone());
    assert_eq!(left, want);
    // The latest generation still loads, every file checked against its hash.
    let shown: Value =
        serde_json::from_str(&pas(&["--json", "checkpoint", "show", &cell, "a1"])).unwrap();
    assert_eq!(shown["state"]["n"], 3, "{shown}");
    // With no grace the young one goes too; named ones never.
    pas(&["store", "gc", "--older-than", "0"]);
    assert_eq!(blobs(&dir), named);
}
