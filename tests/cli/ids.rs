//! Ids become path names only after they are checked.

use crate::harness::Root;

const BAD_IDS: [&str; 6] = ["../x", "a/b", "", ".hidden", "-rf", "with space"];

fn long_id() -> String {
    "x".repeat(200)
}

#[test]
fn bad_agent_ids_are_refused_and_nothing_is_written() {
    let root = Root::new();
    let cell = root.cell("Ids");
    let before = root.snapshot();
    let long = long_id();
    for id in BAD_IDS.iter().copied().chain([long.as_str()]) {
        // `--` lets ids that look like flags reach pas, as a script would pass them.
        if id.starts_with('-') {
            // After `--` comes the agent's command, so a flag-like id is refused by the parser.
            assert_eq!(root.run(&["agent", "add", &cell, id]).code, 2);
        } else {
            root.run(&["agent", "add", &cell, id])
                .refused(2, "invalid agent id");
        }
        root.run(&["agent", "show", &cell, "--", id])
            .refused(2, "invalid agent id");
        root.run(&["agent", "rm", &cell, "--", id])
            .refused(2, "invalid agent id");
    }
    assert_eq!(before, root.snapshot());
    assert!(
        !root.path.join("x").exists(),
        "../x must not escape the agents directory"
    );
}

#[test]
fn bad_task_ids_and_dependencies_are_refused_and_nothing_is_written() {
    let root = Root::new();
    let cell = root.cell("Ids");
    root.ok(&["agent", "add", &cell, "a1"]);
    let before = root.snapshot();
    let long = long_id();
    for id in BAD_IDS.iter().copied().chain([long.as_str()]) {
        let dep = format!("--dep={id}");
        let assign = format!("--assign={id}");
        root.run(&["task", "add", &cell, "--title", "t", "--", id])
            .refused(2, "invalid task id");
        root.run(&["task", "add", &cell, "ok", "--title", "t", &dep])
            .refused(2, "invalid task id");
        root.run(&["task", "add", &cell, "ok", "--title", "t", &assign])
            .refused(2, "invalid agent id");
    }
    assert_eq!(before, root.snapshot());
}

#[test]
fn a_planted_symlink_is_never_written_through() {
    let root = Root::new();
    let cell = root.cell("Links");
    let outside = root.path.join("outside");
    std::fs::create_dir(&outside).unwrap();
    // tasks/ replaced by a link to a directory outside the cell.
    let tasks = root.cell_dir(&cell).join("tasks");
    std::fs::remove_dir(&tasks).unwrap();
    std::os::unix::fs::symlink(&outside, &tasks).unwrap();
    let run = root.run(&["task", "add", &cell, "t1", "--title", "x"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("symbolic link"), "{}", run.stderr);
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    // An agent file that is a link to a file outside: never read or written through.
    let secret = root.path.join("secret.json");
    std::fs::write(&secret, "{\"agent_id\":\"a1\",\"secret\":true}").unwrap();
    std::os::unix::fs::symlink(&secret, root.cell_dir(&cell).join("agents/a1.json")).unwrap();
    let run = root.run(&["agent", "show", &cell, "a1"]);
    assert_ne!(run.code, 0);
    assert!(!run.stdout.contains("secret"));
    let validate = root.run(&["validate", &cell]);
    assert_eq!(validate.code, 5);
    assert!(validate.stdout.contains("symbolic link"));
}

#[test]
fn files_get_fixed_modes_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let root = Root::new();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 077 && exec {} --root {} cell create --name Umask",
            crate::harness::pas_bin(),
            root.path.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mode = |rel: &str| {
        std::fs::metadata(root.cell_dir(&id).join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("cell.json"), 0o644);
    assert_eq!(mode("config/policies.json"), 0o644);
    assert_eq!(mode("agents"), 0o755);
}
