//! Data on the etcd store (issue 19, items 5 to 7): checkpoints as content-addressed blobs
//! with their manifests in etcd, `pas store copy` between a directory and etcd, and what
//! survives killed members (each such test on a 3-member cluster of its own). Skipped
//! without etcd or `pas-etcd`, as in `etcd.rs`.

use crate::etcd::{cluster, etcd_program_built};
use crate::harness::Root;

/// The shared test cluster, when `pas-etcd` is built and etcd installed (else one
/// `skipped:` line).
fn shared_cluster() -> Option<&'static cluster::Cluster> {
    if !etcd_program_built() {
        return None;
    }
    cluster::shared()
}

/// `pas --store URL ARGS...` in `root`, which must succeed; its stdout.
fn on(root: &Root, url: &str, args: &[&str]) -> String {
    let mut all = vec!["--store", url];
    all.extend_from_slice(args);
    root.ok(&all)
}

#[test]
fn a_3_mib_artifact_goes_to_the_blob_directory_and_a_corrupt_blob_is_refused_on_load() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    let root = Root::new();
    let url = cluster.url();
    // The blob directory as pas.toml sets it (relative to the root).
    std::fs::write(root.path.join("pas.toml"), "blobs = \"shared-blobs\"\n").unwrap();
    let cell = on(&root, &url, &["cell", "create", "--name", "blobs"]);
    on(
        &root,
        &url,
        &["agent", "add", &cell, "a1", "--", "sleep", "60"],
    );
    let big: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let artifact = root.path.join("big.bin");
    std::fs::write(&artifact, &big).unwrap();
    let state = root.path.join("state.json");
    std::fs::write(&state, "{\"step\": 3}\n").unwrap();
    on(
        &root,
        &url,
        &[
            "checkpoint",
            "save",
            &cell,
            "a1",
            "--state",
            state.to_str().unwrap(),
            "--artifact",
            artifact.to_str().unwrap(),
        ],
    );
    // The artifact is a blob named by its sha256; etcd holds only the manifest.
    let hash = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(&big);
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let blob = root
        .path
        .join("shared-blobs/sha256")
        .join(&hash[..2])
        .join(&hash[2..]);
    assert_eq!(std::fs::read(&blob).unwrap(), big);
    assert!(!root.path.join(&cell).join("checkpoints").exists());
    let listed = on(&root, &url, &["--json", "checkpoint", "list", &cell, "a1"]);
    assert!(
        listed.contains("\"ok\": true") || listed.contains("\"ok\":true"),
        "{listed}"
    );
    assert!(listed.contains("/.pas/checkpoints/a1/"), "{listed}");
    let out = root.path.join("restored");
    on(
        &root,
        &url,
        &[
            "checkpoint",
            "restore",
            &cell,
            "a1",
            "--to",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read(out.join("artifacts/big.bin")).unwrap(), big);
    assert_eq!(
        std::fs::read_to_string(out.join("state.json")).unwrap(),
        "{\"step\": 3}\n"
    );
    // One byte changed in the blob: loading says so in one line and writes nothing.
    let mut bad = big.clone();
    bad[1 << 20] ^= 1;
    std::fs::write(&blob, &bad).unwrap();
    let again = root.path.join("again");
    let mut args = vec!["--store", url.as_str()];
    args.extend([
        "checkpoint",
        "restore",
        &cell,
        "a1",
        "--to",
        again.to_str().unwrap(),
    ]);
    root.run(&args).refused(5, "artifact big.bin: its blob");
    assert!(!again.exists(), "nothing was restored");
}

/// Every file of a file root that `pas store copy` carries, by path: documents, events log
/// and head, checkpoint generations.
fn copied_files(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let path = e.path();
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            // Local to a host: locks, blobs, the machine's ledger, agents' logs and workdirs;
            // the ready index, made from the tasks; files beside the cells.
            let local = rel.starts_with(".pas")
                || rel.contains("/.pas/locks")
                || rel.contains("/.pas/ready")
                || (!rel.contains('/') && !path.is_dir())
                || rel.ends_with(".log")
                || rel.contains("/work");
            if local {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[test]
fn store_copy_moves_a_root_to_etcd_and_back_unchanged() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    let root = Root::new();
    let cell = root.cell("copied");
    root.ok(&["agent", "add", &cell, "a1", "--", "sleep", "60"]);
    root.ok(&["agent", "add", &cell, "a2", "--", "sleep", "60"]);
    for t in ["t1", "t2", "t3"] {
        root.ok(&["task", "add", &cell, t, "--title", t]);
    }
    assert_eq!(root.ok(&["task", "claim", &cell, "--as", "a1"]), "t1");
    root.ok(&["task", "done", &cell, "t1", "--as", "a1"]);
    root.ok(&[
        "reserve", &cell, "--job", "j1", "--agent", "a1", "--cpu", "1",
    ]);
    let artifact = root.path.join("notes.md");
    std::fs::write(&artifact, "# notes\n").unwrap();
    root.ok(&[
        "checkpoint",
        "save",
        &cell,
        "a1",
        "--artifact",
        artifact.to_str().unwrap(),
    ]);
    root.ok(&["checkpoint", "save", &cell, "a1", "--reason", "second"]);
    // A field pas does not know, in a key order of its own: kept byte for byte.
    let task = root.cell_dir(&cell).join("tasks/t3.json");
    let text = std::fs::read_to_string(&task).unwrap();
    std::fs::write(&task, text.replacen('{', "{\"zz_custom\": [1, 2],", 1)).unwrap();
    let other = root.cell("second");
    root.ok(&["task", "add", &other, "x", "--title", "x"]);
    let before = copied_files(&root.path);

    let url = cluster.url();
    let root_arg = root.path.to_str().unwrap();
    let out = root.ok(&["store", "copy", "--from", root_arg, "--to", &url]);
    assert!(out.contains(&format!("cell {cell}: ")), "{out}");
    assert!(out.contains("copied 2 cells"), "{out}");
    // On etcd: the chains verify, the cells and tasks are there, claims go on.
    let verified = on(&root, &url, &["events", "verify"]);
    assert_eq!(
        verified.lines().filter(|l| l.starts_with("ok: ")).count(),
        2,
        "{verified}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&on(&root, &url, &["--json", "status"])).unwrap();
    assert_eq!(
        status["cells"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );
    let listed = on(&root, &url, &["checkpoint", "list", &cell, "a1"]);
    assert!(listed.contains("second"), "{listed}");
    // Copying into a store that holds cells is refused, and changes nothing.
    root.run(&["store", "copy", "--from", root_arg, "--to", url.as_str()])
        .refused(4, "already holds 2 cell(s)");

    // And back, into a new directory: the same files.
    let back = root.path.join("back");
    let json: serde_json::Value = serde_json::from_str(&root.ok(&[
        "--json",
        "store",
        "copy",
        "--from",
        &url,
        "--to",
        back.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(json["verified"], true);
    assert_eq!(json["cells"].as_array().map(Vec::len), Some(2), "{json}");
    let after = copied_files(&back);
    let keys =
        |m: &std::collections::BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    let before_docs: std::collections::BTreeMap<_, _> = before
        .into_iter()
        .filter(|(k, _)| !k.starts_with("back"))
        .collect();
    assert_eq!(keys(&after), keys(&before_docs));
    for (k, v) in &before_docs {
        assert!(after[k] == *v, "{k} differs after the round trip");
    }
    // The claims still work on the copy (the ready index is rebuilt from the tasks).
    let claim = std::process::Command::new(crate::harness::pas_bin())
        .args([
            "--root",
            back.to_str().unwrap(),
            "task",
            "claim",
            &cell,
            "--as",
            "a2",
        ])
        .env_remove("PAS_STORE")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&claim.stdout).trim(),
        "t2",
        "{claim:?}"
    );
}

/// A cluster of this test's own, when `pas-etcd` is built and etcd installed.
fn private_cluster() -> Option<cluster::Cluster> {
    if !etcd_program_built() {
        return None;
    }
    cluster::private()
}

/// Waits (bounded) until the cluster has a leader; which member it is.
fn leader_of(c: &cluster::Cluster) -> usize {
    let mut leader = None;
    crate::harness::wait_until(15.0, "an etcd leader", || {
        leader = c.leader();
        leader.is_some()
    });
    leader.unwrap_or_default()
}

/// A cell on `url` with `agents` agents and `tasks` tasks, made in a file root and moved
/// there by `pas store copy` (faster than a command per task on etcd).
fn queue_on(root: &Root, url: &str, agents: usize, tasks: usize) -> String {
    let staging = Root::new();
    let cell = staging.ok(&[
        "cell",
        "create",
        "--name",
        "storm",
        "--max-agents",
        &agents.to_string(),
    ]);
    for i in 0..agents {
        staging.ok(&["agent", "add", &cell, &format!("a{i:02}")]);
    }
    for i in 0..tasks {
        let id = format!("t{i:03}");
        staging.ok(&["task", "add", &cell, &id, "--title", &id]);
    }
    let from = staging.path.to_str().unwrap().to_string();
    root.ok(&["store", "copy", "--from", &from, "--to", url]);
    cell
}

#[test]
fn claims_go_on_while_the_leader_and_then_a_follower_are_killed_and_each_task_is_claimed_once() {
    const AGENTS: usize = 12;
    const TASKS: usize = 50;
    let Some(c) = private_cluster() else {
        return;
    };
    let root = Root::new();
    let url = c.url();
    let cell = queue_on(&root, &url, AGENTS, TASKS);
    let claimed = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let problems = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let claimers: Vec<_> = (0..AGENTS)
        .map(|i| {
            let (url, cell) = (url.clone(), cell.clone());
            let root_dir = root.path.clone();
            let (claimed, problems) = (claimed.clone(), problems.clone());
            std::thread::spawn(move || {
                let agent = format!("a{i:02}");
                while std::time::Instant::now() < deadline {
                    let out = std::process::Command::new(crate::harness::pas_bin())
                        .args(["--root", root_dir.to_str().unwrap(), "--store", &url])
                        .args(["task", "claim", &cell, "--as", &agent])
                        .output()
                        .unwrap();
                    match out.status.code() {
                        Some(0) => claimed
                            .lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&out.stdout).trim().to_string()),
                        Some(7) => return,
                        // No quorum for a moment, or an outcome the election hid: the
                        // task (if it was claimed) shows in the store; claim again.
                        Some(4) | Some(10) => {}
                        _ => problems.lock().unwrap().push(format!("{out:?}")),
                    }
                }
                problems
                    .lock()
                    .unwrap()
                    .push(format!("{agent} ran out of time"));
            })
        })
        .collect();
    let count = || claimed.lock().unwrap().len();
    let all_done = || claimers.iter().all(|t| t.is_finished());
    let wait_for = |n: usize| {
        crate::harness::wait_until(60.0, &format!("{n} claims"), || count() >= n || all_done())
    };
    // The leader dies a few claims in, comes back; then a follower dies and comes back.
    wait_for(8);
    let leader = leader_of(&c);
    let at_kill = count();
    let started = std::time::Instant::now();
    c.kill(leader);
    wait_for(at_kill + 12);
    c.restart(leader).unwrap();
    let now_leader = leader_of(&c);
    let follower = (0..3).find(|i| *i != now_leader).unwrap_or_default();
    let at_second = count();
    c.kill(follower);
    wait_for(at_second + 12);
    c.restart(follower).unwrap();
    for t in claimers {
        t.join().unwrap();
    }
    println!(
        "{} claims by {AGENTS} processes, {:.1} s from the leader's death to the end",
        count(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(problems.lock().unwrap().as_slice(), &[] as &[String]);
    assert!(at_kill < TASKS, "the leader died while claims went on");
    assert!(at_second < TASKS, "the follower died while claims went on");
    // No task twice to the claimers, and in the store each task is claimed, by one agent.
    let mut seen = claimed.lock().unwrap().clone();
    let n = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), n, "a task was handed out twice");
    let tasks: serde_json::Value =
        serde_json::from_str(&on(&root, &url, &["--json", "task", "list", &cell])).unwrap();
    let tasks = tasks.as_array().cloned().unwrap_or_default();
    assert_eq!(tasks.len(), TASKS);
    for t in &tasks {
        assert!(t["claimed_by"].is_string(), "unclaimed: {t}");
    }
    let verified = on(&root, &url, &["events", "verify", &cell]);
    assert!(verified.starts_with("ok: "), "{verified}");
}

#[test]
fn without_quorum_a_command_exits_10_writes_nothing_and_restarted_members_have_all_data() {
    let Some(c) = private_cluster() else {
        return;
    };
    let root = Root::new();
    let url = c.url();
    let cell = on(&root, &url, &["cell", "create", "--name", "quorum"]);
    on(
        &root,
        &url,
        &["task", "add", &cell, "kept", "--title", "before"],
    );
    let before = on(&root, &url, &["--json", "task", "list", &cell]);
    let leader = leader_of(&c);
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    c.kill(others[0]);
    c.kill(leader);
    let started = std::time::Instant::now();
    root.run(&[
        "--store", &url, "task", "add", &cell, "lost", "--title", "during",
    ])
    .refused(10, "has no quorum; nothing was written");
    let took = started.elapsed();
    // Nothing waits forever: the command gives up after its few seconds of retries.
    assert!(took < std::time::Duration::from_secs(30), "{took:?}");
    println!("quorum loss answered in {:.2} s", took.as_secs_f64());
    c.restart(leader).unwrap();
    c.restart(others[0]).unwrap();
    leader_of(&c);
    assert_eq!(on(&root, &url, &["--json", "task", "list", &cell]), before);
    let verified = on(&root, &url, &["events", "verify", &cell]);
    assert!(verified.starts_with("ok: "), "{verified}");
}
