//! Checkpoints and supervised agent processes.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{wait_until, Root};

fn pid_alive(pid: i64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap();
    state != 'Z'
}

#[test]
fn a_checkpoint_from_stdin_and_files_is_restored_byte_for_byte() {
    let root = Root::new();
    let cell = root.cell("Ckpt");
    root.ok(&["agent", "add", &cell, "a1"]);
    let context = root.path.join("ctx.json");
    let context_bytes = b"{\n  \"messages\": [\"hello\", \"world\"],\n  \"tokens\": 1234\n}  \n";
    std::fs::write(&context, context_bytes).unwrap();
    let artifact = root.path.join("notes.md");
    std::fs::write(&artifact, b"# notes\n\x00binary\xff").unwrap();
    let state_bytes = b"{\"step\":3,   \"odd spacing\" : true}";
    let mut child = root
        .cmd(&[
            "checkpoint",
            "save",
            &cell,
            "a1",
            "--state",
            "-",
            "--context",
            context.to_str().unwrap(),
            "--artifact",
            artifact.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(state_bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");

    let agent = root.read_json(format!("{cell}/agents/a1.json"));
    let record = &agent["checkpoint"];
    assert_eq!(record["generation"], 1);
    assert_eq!(record["artifacts"], json!(["notes.md"]));
    assert_eq!(record["context_hash"].as_str().unwrap().len(), 64);
    assert!(record["last_checkpoint"].as_str().unwrap().ends_with('Z'));
    // The spec's layout holds the latest checkpoint.
    let top = root.cell_dir(&cell).join("checkpoints/a1");
    assert_eq!(
        std::fs::read(top.join("context.json")).unwrap(),
        context_bytes
    );
    assert_eq!(std::fs::read(top.join("state.json")).unwrap(), state_bytes);
    assert_eq!(
        std::fs::read(top.join("artifacts/notes.md")).unwrap(),
        std::fs::read(&artifact).unwrap()
    );

    let dest = root.path.join("restored");
    root.ok(&[
        "checkpoint",
        "restore",
        &cell,
        "a1",
        "--to",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(dest.join("state.json")).unwrap(), state_bytes);
    assert_eq!(
        std::fs::read(dest.join("context.json")).unwrap(),
        context_bytes
    );
    assert_eq!(
        std::fs::read(dest.join("artifacts/notes.md")).unwrap(),
        std::fs::read(&artifact).unwrap()
    );

    let before = root.snapshot();
    let bad = root.run(&[
        "checkpoint",
        "save",
        &cell,
        "a1",
        "--context",
        artifact.to_str().unwrap(),
    ]);
    bad.refused(2, "the context is not JSON");
    assert_eq!(before, root.snapshot());
}

#[test]
fn old_generations_are_pruned_and_a_corrupt_one_is_refused_by_name() {
    let root = Root::new();
    let cell = root.cell("Prune");
    root.ok(&["agent", "add", &cell, "a1"]);
    std::fs::write(
        root.cell_dir(&cell).join("config/policies.json"),
        r#"{"checkpoint_keep": 2}"#,
    )
    .unwrap();
    for i in 1..=4 {
        let out = root
            .cmd(&["checkpoint", "save", &cell, "a1", "--context", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let mut out = out;
        out.stdin
            .take()
            .unwrap()
            .write_all(format!("{{\"i\": {i}}}").as_bytes())
            .unwrap();
        assert!(out.wait().unwrap().success());
    }
    let gens: Vec<u64> = root
        .json(&["checkpoint", "list", &cell, "a1"])
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["generation"].as_u64().unwrap())
        .collect();
    assert_eq!(gens, [3, 4]);
    // Corrupt the latest generation's context: resume is refused, naming generation 4.
    let latest = root
        .cell_dir(&cell)
        .join("checkpoints/a1/history/4/context.json");
    std::fs::write(&latest, "{\"i\": 999}").unwrap();
    root.run(&["checkpoint", "show", &cell, "a1"]).refused(5, "checkpoint generation 4 of agent a1 cannot be resumed: context.json does not match its hash");
    let list = root.json(&["checkpoint", "list", &cell, "a1"]);
    assert_eq!(list[1]["ok"], false);
    std::fs::write(&latest, "not json").unwrap();
    let never = root.path.join("never");
    root.run(&[
        "checkpoint",
        "restore",
        &cell,
        "a1",
        "--to",
        never.to_str().unwrap(),
    ])
    .refused(
        5,
        "generation 4 of agent a1 cannot be resumed: context.json does not parse",
    );
    assert!(!never.exists());
    // The older one is still good.
    assert_eq!(
        root.json(&["checkpoint", "show", &cell, "a1", "--generation", "3"])["generation"],
        3
    );
}

#[test]
fn a_save_killed_mid_write_leaves_the_previous_generation_intact() {
    let root = Root::new();
    let cell = root.cell("Killsave");
    root.ok(&["agent", "add", &cell, "a1"]);
    let big = root.path.join("big.bin");
    std::fs::write(&big, vec![7u8; 8 << 20]).unwrap();
    root.ok(&[
        "checkpoint",
        "save",
        &cell,
        "a1",
        "--artifact",
        big.to_str().unwrap(),
    ]);
    for round in 0..25u64 {
        let mut child = root
            .cmd(&[
                "checkpoint",
                "save",
                &cell,
                "a1",
                "--artifact",
                big.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(2000 + round * 1500));
        let _ = child.kill();
        let _ = child.wait();
        // The latest checkpoint the agent points at verifies, whatever the moment of the kill.
        let shown = root.json(&["checkpoint", "show", &cell, "a1"]);
        assert!(shown["generation"].as_u64().unwrap() >= 1);
        for g in root
            .json(&["checkpoint", "list", &cell, "a1"])
            .as_array()
            .unwrap()
        {
            assert_eq!(
                g["ok"], true,
                "generation {} broken after a kill: {}",
                g["generation"], g["problem"]
            );
        }
        root.assert_all_json_parses();
    }
}

#[test]
fn a_started_agent_sees_its_environment_beats_and_logs() {
    let root = Root::new();
    let cell = root.cell("Start");
    let body = r#"echo "root=$PAS_ROOT cell=$PAS_CELL agent=$PAS_AGENT checkpoint=$PAS_CHECKPOINT"
pas agent beat --note "from the script" || echo "beat failed"
echo "to stderr" >&2
sleep 30"#;
    let path = root.script("agent.sh", body);
    root.ok(&["agent", "add", &cell, "a1", "--", &path]);
    root.ok(&["checkpoint", "save", &cell, "a1"]);
    let pid: i64 = root.ok(&["agent", "start", &cell, "a1"]).parse().unwrap();
    let log_path = root.cell_dir(&cell).join("logs/a1.log");
    wait_until(15.0, "the first beat and the script's last line", || {
        root.read_json(format!("{cell}/agents/a1.json"))["heartbeat_count"] == 1
            && std::fs::read_to_string(&log_path).is_ok_and(|log| log.contains("to stderr"))
    });
    let shown = root.json(&["agent", "show", &cell, "a1"]);
    assert_eq!(shown["pid"], pid);
    assert_eq!(shown["process"], "running");
    assert_eq!(shown["note"], "from the script");
    assert_eq!(shown["restart_count"], 0);
    assert!(shown["started_at"].is_string() && shown["pid_start_time"].is_u64());
    let log = std::fs::read_to_string(&log_path).unwrap();
    let canonical = std::fs::canonicalize(&root.path).unwrap();
    assert!(
        log.contains(&format!(
            "root={} cell={cell} agent=a1",
            canonical.display()
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "checkpoint={}",
            canonical
                .join(&cell)
                .join("checkpoints/a1/history/1")
                .display()
        )),
        "{log}"
    );
    assert!(
        log.contains("to stderr") && !log.contains("beat failed"),
        "{log}"
    );
    // Starting what runs is done already: its pid again, a note, exit 0.
    let again = root.run(&["agent", "start", &cell, "a1"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.stdout.trim(), pid.to_string());
    assert!(again.stderr.contains("already running"), "{}", again.stderr);
    // A grace outside 0..86400 s is refused before anything is signalled or written.
    let before = std::fs::read(root.cell_dir(&cell).join("agents/a1.json")).unwrap();
    for bad in ["--grace=-1", "--grace=100000"] {
        root.run(&["agent", "stop", &cell, "a1", bad])
            .refused(2, "outside 0..86400 seconds");
    }
    assert!(pid_alive(pid));
    assert_eq!(
        std::fs::read(root.cell_dir(&cell).join("agents/a1.json")).unwrap(),
        before
    );
    root.ok(&["agent", "stop", &cell, "a1", "--grace", "2"]);
    assert!(!pid_alive(pid));
    let doc = root.read_json(format!("{cell}/agents/a1.json"));
    assert_eq!(doc["status"], "idle");
    assert_eq!(doc["exit"]["cause"], "signal");
    assert_eq!(doc["exit"]["signal"], 15);
}

/// The program running as `pid`, from `/proc/PID/exe`.
fn program_of(pid: i64) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap()
}

#[test]
fn agents_are_supervised_by_pas_supervise_and_by_pas_where_it_is_missing() {
    let root = Root::new();
    let cell = root.cell("Lean");
    let path = root.script("agent.sh", "echo up\nexec sleep 30");
    // `pas` alone in a directory (a hard link: /proc/PID/exe names the path it ran as).
    let alone = root.path.join("alone");
    std::fs::create_dir(&alone).unwrap();
    let lone_pas = alone.join("pas");
    if std::fs::hard_link(crate::harness::pas_bin(), &lone_pas).is_err() {
        std::fs::copy(crate::harness::pas_bin(), &lone_pas).unwrap();
    }
    for (agent, via) in [("a1", None), ("a2", Some(&lone_pas))] {
        root.ok(&["agent", "add", &cell, agent, "--", &path]);
        let args = ["agent", "start", &cell, agent];
        let out = match via {
            None => root.cmd(&args).output(),
            Some(pas) => std::process::Command::new(pas)
                .arg("--root")
                .arg(&root.path)
                .args(args)
                .env("PAS_AGENTS_AS_ROOT", "1")
                .env_remove("PAS_ROOT")
                .env_remove("PAS_STORE")
                .stdin(Stdio::null())
                .output(),
        }
        .unwrap();
        assert!(out.status.success(), "{out:?}");
        let doc = root.agent(&cell, agent);
        let supervisor = program_of(doc["supervisor_pid"].as_i64().unwrap());
        let expected = match via {
            None => std::path::Path::new(crate::harness::pas_bin()).with_file_name("pas-supervise"),
            Some(pas) => pas.clone(),
        };
        assert_eq!(supervisor, expected, "{agent}");
        // Either way the agent runs, logs and stops as before.
        let log = root.cell_dir(&cell).join(format!("logs/{agent}.log"));
        wait_until(15.0, "the agent's first line", || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("| up"))
        });
        // glibc's malloc settings are the supervisor's own: the agent's environment has none.
        let tunables = |pid: i64| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .unwrap()
                .split(|b| *b == 0)
                .find_map(|v| v.strip_prefix(b"GLIBC_TUNABLES=").map(<[u8]>::to_vec))
        };
        // (glibc cuts the text it parsed after the first setting: /proc shows only that.)
        let ours = tunables(doc["supervisor_pid"].as_i64().unwrap()).unwrap_or_default();
        assert!(
            ours.starts_with(b"glibc.malloc."),
            "{agent}: {}",
            String::from_utf8_lossy(&ours)
        );
        assert_eq!(tunables(doc["pid"].as_i64().unwrap()), None, "{agent}");
        root.ok(&["agent", "stop", &cell, agent, "--grace", "2"]);
        assert_eq!(root.agent(&cell, agent)["exit"]["signal"], 15);
    }
    // The supervisor's program refuses any other command line, as pas would.
    let lean = std::path::Path::new(crate::harness::pas_bin()).with_file_name("pas-supervise");
    let out = std::process::Command::new(&lean)
        .args([
            "--root",
            root.path.to_str().unwrap(),
            "agent",
            "list",
            "--nope",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// An ELF file's type (2: a fixed-address executable, 3: position-independent) and
/// whether it names a program interpreter (the dynamic loader), from its headers.
fn elf_kind(path: &std::path::Path) -> (u16, bool) {
    use std::io::Read;
    let mut head = vec![0u8; 4096];
    let n = std::fs::File::open(path).unwrap().read(&mut head).unwrap();
    assert!(n >= 64 && head.starts_with(b"\x7fELF\x02\x01"), "{path:?}");
    let u16_at = |at: usize| u16::from_le_bytes([head[at], head[at + 1]]);
    let phoff = u64::from_le_bytes(head[32..40].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(54) as usize, u16_at(56) as usize);
    assert!(
        phoff + size * count <= n,
        "{path:?}: program headers past 4 KiB"
    );
    let interp = (0..count).any(|i| {
        let at = phoff + i * size;
        u32::from_le_bytes(head[at..at + 4].try_into().unwrap()) == 3
    });
    (u16_at(16), interp)
}

/// Whether build.rs could link pas-supervise statically (the C toolchain has the static
/// archives); says why not, as a skip, or fails under `PAS_TEST_REQUIRE_ALL=1`.
fn supervisor_is_static() -> bool {
    for archive in ["libc.a", "libgcc_eh.a"] {
        let out = std::process::Command::new("cc")
            .arg(format!("-print-file-name={archive}"))
            .output();
        let found = out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim().starts_with('/'));
        if !found {
            let problem =
                format!("cc finds no {archive}, so build.rs linked pas-supervise dynamically");
            assert!(
                std::env::var("PAS_TEST_REQUIRE_ALL").as_deref() != Ok("1"),
                "{problem} (install libc6-dev and gcc; PAS_TEST_REQUIRE_ALL=1 makes this a failure)"
            );
            println!("skipped: {problem}");
            return false;
        }
    }
    true
}

#[test]
fn the_supervisor_program_is_static_and_pas_stays_position_independent() {
    if !supervisor_is_static() {
        return;
    }
    let pas = std::path::Path::new(crate::harness::pas_bin());
    assert_eq!(
        elf_kind(pas),
        (3, true),
        "pas: a PIE run by the dynamic loader"
    );
    let lean = pas.with_file_name("pas-supervise");
    assert_eq!(
        elf_kind(&lean),
        (2, false),
        "pas-supervise: static, not PIE"
    );
}

#[test]
fn a_command_file_without_a_shebang_runs_with_sh_by_path_and_by_name() {
    // The static supervisor starts agents the way execvp(3) does, whether the command
    // names a path or is found on PATH: a file the kernel cannot run is run by /bin/sh.
    if !supervisor_is_static() {
        return;
    }
    let root = Root::new();
    let cell = root.cell("Plain");
    let plain = root.executable("plain-agent", "echo \"plain $1\"\nexec sleep 30\n");
    let bin = root.path.join(".scripts");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let by_path = plain.as_str();
    for (agent, command) in [("a1", by_path), ("a2", "plain-agent")] {
        let word = format!("via-{agent}");
        root.ok(&["agent", "add", &cell, agent, "--", command, &word]);
        let out = root
            .cmd(&["agent", "start", &cell, agent])
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{agent}: {out:?}");
    }
    for agent in ["a1", "a2"] {
        let log = root.cell_dir(&cell).join(format!("logs/{agent}.log"));
        wait_until(15.0, "the plain script's line", || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains(&format!("plain via-{agent}")))
        });
        let doc = root.read_json(format!("{cell}/agents/{agent}.json"));
        assert!(pid_alive(doc["pid"].as_i64().unwrap()), "{doc}");
        root.ok(&["agent", "stop", &cell, agent, "--grace", "2"]);
    }
}

#[test]
fn stop_kills_the_whole_group_after_the_grace_period() {
    let root = Root::new();
    let cell = root.cell("Group");
    let body = r#"sh -c 'trap "" TERM; echo grandchild $$; while true; do sleep 0.1; done' &
echo "launched"
wait"#;
    let path = root.script("stubborn.sh", body);
    root.ok(&["agent", "add", &cell, "a1", "--", &path]);
    root.ok(&["agent", "start", &cell, "a1"]);
    let log = root.cell_dir(&cell).join("logs/a1.log");
    wait_until(15.0, "the child", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("grandchild ")
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let child: i64 = text
        .lines()
        .find_map(|l| {
            l.split_once(" | ")?
                .1
                .strip_prefix("grandchild ")
                .and_then(|p| p.trim().parse().ok())
        })
        .unwrap();
    assert!(pid_alive(child));
    // Without --grace the stop waits the agent's stop_grace policy, then kills.
    root.policies(&cell, serde_json::json!({"stop_grace": 0.5}));
    let out = root.json(&["agent", "stop", &cell, "a1"]);
    assert_eq!(out["outcome"], "killed");
    wait_until(15.0, "the stubborn child to die", || !pid_alive(child));
}

#[test]
fn a_reused_pid_is_not_taken_for_the_agent() {
    let root = Root::new();
    let cell = root.cell("Reuse");
    root.ok(&["agent", "add", &cell, "a1", "--", "true"]);
    // Point the agent at a live unrelated process (this test) with a start time that is not its own.
    let me = std::process::id();
    let path = format!("{cell}/agents/a1.json");
    let mut doc = root.read_json(&path);
    doc["pid"] = json!(me);
    doc["pgid"] = json!(me);
    doc["pid_start_time"] = json!(1);
    doc["status"] = json!("active");
    std::fs::write(root.path.join(&path), doc.to_string()).unwrap();
    assert_eq!(
        root.json(&["agent", "show", &cell, "a1"])["process"],
        "vanished"
    );
    root.ok(&[
        "agent",
        "wait",
        &cell,
        "a1",
        "--for",
        "stopped",
        "--timeout",
        "2",
    ]);
    // Stopping it must not signal this test process.
    let out = root.json(&["agent", "stop", &cell, "a1", "--grace", "0"]);
    assert_eq!(out["outcome"], "not_running");
    assert!(pid_alive(me as i64));
}

#[test]
fn exit_codes_and_signals_are_recorded_and_wait_times_out() {
    let root = Root::new();
    let cell = root.cell("Deaths");
    // How deaths are recorded, not revival: their supervisors must not restart them (with
    // `ask` they file a request and leave them active and dead).
    root.policies(&cell, json!({"auto_revive": "ask"}));
    let exits = root.script("exits.sh", "sleep 0.2; exit 3");
    let killed = root.script("killed.sh", "sleep 0.2; kill -9 $$");
    let sleeper = root.script("sleeper.sh", "sleep 30");
    root.ok(&["agent", "add", &cell, "exits", "--", &exits]);
    root.ok(&["agent", "add", &cell, "killed", "--", &killed]);
    root.ok(&["agent", "add", &cell, "sleeper", "--", &sleeper]);
    for a in ["exits", "killed", "sleeper"] {
        root.ok(&["agent", "start", &cell, a]);
    }
    root.ok(&[
        "agent",
        "wait",
        &cell,
        "exits",
        "--for",
        "dead",
        "--timeout",
        "10",
    ]);
    root.ok(&[
        "agent",
        "wait",
        &cell,
        "killed",
        "--for",
        "dead",
        "--timeout",
        "10",
    ]);
    // `wait --for dead` can return in the moment between the supervisor reaping the
    // process and writing down how it ended.
    for a in ["exits", "killed"] {
        wait_until(15.0, "the exit recorded", || {
            root.agent(&cell, a)["exit"]["cause"].is_string()
        });
    }
    let e = root.read_json(format!("{cell}/agents/exits.json"))["exit"].clone();
    assert_eq!(
        (e["cause"].as_str(), e["code"].as_i64()),
        (Some("exit"), Some(3))
    );
    let k = root.read_json(format!("{cell}/agents/killed.json"))["exit"].clone();
    assert_eq!(
        (k["cause"].as_str(), k["signal"].as_i64()),
        (Some("signal"), Some(9))
    );
    let run = root.run(&[
        "agent",
        "wait",
        &cell,
        "sleeper",
        "--for",
        "stopped",
        "--timeout",
        "0.3",
    ]);
    run.refused(8, "did not become stopped");
    root.ok(&["agent", "stop", &cell, "sleeper", "--grace", "1"]);
    wait_until(15.0, "three agent.exited events", || {
        root.event_kinds(&cell)
            .iter()
            .filter(|k| *k == "agent.exited")
            .count()
            == 3
    });
    let kinds = root.ok(&["--json", "events", &cell, "--kind", "agent.exited"]);
    assert_eq!(kinds.lines().count(), 3);
    let value: Value = serde_json::from_str(kinds.lines().next().unwrap()).unwrap();
    assert!(value["details"]["pid"].is_i64());
}

#[test]
fn an_agent_without_a_command_is_refused_with_a_clear_message() {
    let root = Root::new();
    let cell = root.cell("Iso");
    root.ok(&["agent", "add", &cell, "a2"]);
    root.run(&["agent", "start", &cell, "a2"])
        .refused(2, "has no command");
}

#[test]
fn a_started_agent_gets_its_reserved_memory_as_its_address_space_limit() {
    let root = Root::new();
    let cell = root.cell("Limits");
    let path = root.script("limits.sh", "echo \"as=$(ulimit -v)\"; sleep 30");
    root.ok(&["agent", "add", &cell, "a1", "--", &path]);
    root.ok(&[
        "reserve", &cell, "--job", "j1", "--agent", "a1", "--mem", "512MiB",
    ]);
    root.ok(&["agent", "start", &cell, "a1"]);
    let log = root.cell_dir(&cell).join("logs/a1.log");
    wait_until(15.0, "the limit line", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("as=")
    });
    // `ulimit -v` is in KiB.
    assert!(
        std::fs::read_to_string(&log).unwrap().contains("as=524288"),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    root.ok(&["agent", "stop", &cell, "a1", "--grace", "1"]);
}
