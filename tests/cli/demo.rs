//! `pas demo` runs a whole mission, green.

use crate::harness::Root;

#[test]
fn the_demo_completes_a_mission_with_a_kill_a_revival_and_a_breach() {
    let root = Root::new();
    let demo_root = root.path.join("demo");
    let out = std::process::Command::new(crate::harness::pas_bin())
        .args(["--root", demo_root.to_str().unwrap(), "demo"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let run = crate::harness::Run::from(out);
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    for needle in [
        "demo.kill",
        "agent.revived",
        "agent.revival_succeeded",
        "budget.compacted",
        "cell status active -> completed",
        "mission completed in",
        "tasks 6/6 done",
    ] {
        assert!(
            run.stdout.contains(needle),
            "{needle:?} missing from:\n{}",
            run.stdout
        );
    }
    // The revived agent resumed from its checkpoint rather than starting over.
    let cell = std::fs::read_dir(&demo_root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| !n.starts_with('.'))
        .unwrap();
    let log = std::fs::read_to_string(demo_root.join(&cell).join("logs/writer_1.log")).unwrap();
    assert!(log.contains("resuming from checkpoint: task="), "{log}");
    // writer_2 worked through `pas mcp`: its claims, beats, checkpoints and completions were
    // MCP tool calls, and they count as the CLI's would.
    assert!(
        run.stdout.contains("writer_2 works through `pas mcp`"),
        "{}",
        run.stdout
    );
    let log = std::fs::read_to_string(demo_root.join(&cell).join("logs/writer_2.log")).unwrap();
    assert!(!log.contains("pas mcp "), "a tool call failed: {log}");
    let doc = root.read_json(format!("demo/{cell}/agents/writer_2.json"));
    assert!(doc["heartbeat_count"].as_u64().unwrap_or(0) > 0, "{doc}");
    // Nothing is left running.
    for a in ["lead", "writer_1", "writer_2"] {
        let doc = root.read_json(format!("demo/{cell}/agents/{a}.json"));
        assert!(doc["pid"].is_null(), "{a} still has a process: {doc}");
    }
}
