//! Data on the etcd store (issue 19, items 5 to 7): checkpoints as content-addressed blobs
//! with their manifests in etcd, `pas store copy` between a directory and etcd, and what
//! survives killed members (each such test on a 3-member cluster of its own). Skipped
//! without etcd or `pas-etcd`, as in `etcd.rs`.

use crate::etcd::{cluster, etcd_program_built};
use crate::harness::Root;

/// `pas --store URL ARGS...` in `root`, which must succeed; its stdout.
fn on(root: &Root, url: &str, args: &[&str]) -> String {
    let mut all = vec!["--store", url];
    all.extend_from_slice(args);
    root.ok(&all)
}

#[test]
fn a_3_mib_artifact_goes_to_the_blob_directory_and_a_corrupt_blob_is_refused_on_load() {
    if !etcd_program_built() {
        return;
    }
    let Some(cluster) = cluster::shared() else {
        return;
    };
    let root = Root::new();
    let url = cluster.url();
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
        .join(".pas/blobs/sha256")
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
