//! At home in the shell: completions in a real bash, man pages that match the binary,
//! colour only on a terminal, help with examples.

use std::path::Path;
use std::process::Command;

use crate::harness::{pas_bin, tool_available, Root};

/// A bash with `pas` on its PATH and the root in `PAS_ROOT`, running `script`.
fn bash(root: &Root, script: &str) -> String {
    let dir = Path::new(pas_bin()).parent().unwrap();
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", script])
        .env("PATH", path)
        .env("PAS_ROOT", &root.path)
        .env_remove("PAS_CELL")
        .env_remove("PAS_AGENT")
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "bash failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn bash_completion_loads_and_completes_commands_cells_and_agents() {
    let root = Root::new();
    let cell = root.cell("alpha");
    root.cell("beta");
    root.ok(&["agent", "add", &cell, "writer-1"]);
    root.ok(&["agent", "add", &cell, "writer-2"]);
    let complete = |words: &str, index: usize| {
        bash(
            &root,
            &format!(
                r#"source <(pas completions bash)
COMP_WORDS=({words}); COMP_CWORD={index}
_clap_complete_pas pas "${{COMP_WORDS[$COMP_CWORD]}}" "${{COMP_WORDS[$COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#
            ),
        )
    };

    let registered = bash(&root, "source <(pas completions bash)\ncomplete -p pas");
    assert!(
        registered.contains("-F _clap_complete_pas pas"),
        "{registered}"
    );

    let commands = complete("pas ch", 1);
    let commands: Vec<&str> = commands.lines().collect();
    assert!(
        commands.contains(&"check") && commands.contains(&"checkpoint"),
        "{commands:?}"
    );

    let cells = complete("pas cell show ''", 3);
    for expected in [cell.as_str(), "alpha", "beta"] {
        assert!(
            cells.lines().any(|l| l == expected),
            "{expected} in {cells}"
        );
    }

    let agents = complete("pas agent show alpha w", 4);
    assert_eq!(agents.lines().collect::<Vec<_>>(), ["writer-1", "writer-2"]);
}

#[test]
fn every_shell_gets_a_script_and_a_bad_shell_is_refused() {
    let root = Root::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = root.ok(&["completions", shell]);
        assert!(script.contains("PAS_COMPLETE"), "{shell}: {script}");
    }
    root.run(&["completions", "tcsh"])
        .refused(2, "invalid value 'tcsh'");
}

#[test]
fn man_pages_in_docs_are_current() {
    let root = Root::new();
    let out = root.path.join("man");
    root.ok(&["man", "--out", out.to_str().unwrap()]);
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/man");
    let names = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let generated = names(&out);
    assert!(generated.len() > 40, "a page per command: {generated:?}");
    for page in [
        "pas.1",
        "pas-cell-create.1",
        "pas-agent-beat.1",
        "pas-completions.1",
    ] {
        assert!(generated.iter().any(|n| n == page), "{page}");
    }
    // An output directory that cannot exist: one line, exit 1, nothing written.
    let file = root.path.join("a-file");
    std::fs::write(&file, "x").unwrap();
    root.run(&["man", "--out", file.join("man").to_str().unwrap()])
        .refused(1, "cannot create");
    let fix = "the man pages are stale: run `cargo run -- man --out docs/man` (and delete pages of removed commands)";
    assert_eq!(names(&docs), generated, "{fix}");
    for name in &generated {
        let fresh = std::fs::read(out.join(name)).unwrap();
        let checked_in = std::fs::read(docs.join(name)).unwrap();
        assert!(fresh == checked_in, "{name} differs; {fix}");
    }
}

#[test]
fn pas_toml_sets_root_wide_policy_defaults_below_the_cells_own() {
    let root = Root::new();
    let cell = root.cell("Configured");
    root.ok(&["agent", "add", &cell, "a1"]);
    std::fs::write(
        root.path.join("pas.toml"),
        "# every cell of this root\n[policies]\nheartbeat_interval = 10\nauto_revive = \"ask\"\n",
    )
    .unwrap();
    root.policies(&cell, serde_json::json!({"auto_revive": "no"}));
    let shown = root.json(&["policy", "show", &cell]);
    let setting = |key: &str| {
        shown["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == key)
            .unwrap()
            .clone()
    };
    assert_eq!(setting("heartbeat_interval")["value"], 10);
    assert_eq!(setting("heartbeat_interval")["source"], "root_config");
    assert_eq!(setting("auto_revive")["value"], "no");
    assert_eq!(setting("auto_revive")["source"], "policies_file");
    assert!(root.ok(&["policy", "show", &cell]).contains("pas.toml"));
    let reply = root.json(&["agent", "beat", &cell, "a1"]);
    assert_eq!(reply["next_beat_in"], 10.0, "{reply}");

    std::fs::write(
        root.path.join("pas.toml"),
        "[policies]\nheartbeat_interval = 10\nheartbeat_intervl = 5\n",
    )
    .unwrap();
    let before = root.snapshot();
    let run = root.run(&["agent", "beat", &cell, "a1"]);
    run.refused(5, "pas.toml line 3: unknown policy `heartbeat_intervl`");
    assert_eq!(root.snapshot(), before, "a refused command changes nothing");
    std::fs::write(root.path.join("pas.toml"), "[policies\n").unwrap();
    root.run(&["status"]).refused(5, "pas.toml line 1");
}

/// Whether `script` (util-linux) is here; the test is skipped when not, see
/// [`tool_available`].
fn script_available() -> bool {
    tool_available(
        "script",
        &["-V"],
        "colour and progress are checked on a pseudo-terminal made by `script`; install it \
         (apt-get install -y bsdutils)",
    )
}

/// Runs `command` (a shell line) on a pseudo-terminal with `script`; returns all it showed.
fn on_terminal(root: &Root, command: &str, env: &[(&str, &str)]) -> String {
    let dir = Path::new(pas_bin()).parent().unwrap();
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", command, "/dev/null"])
        .env("PATH", path)
        .env("PAS_ROOT", &root.path)
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .env_remove("PAS_CELL")
        .env_remove("PAS_AGENT")
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("`script` (util-linux) runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fleet_with_a_healthy_and_a_dead_agent(root: &Root) -> String {
    let cell = root.cell("Colours");
    root.ok(&["agent", "add", &cell, "fine"]);
    root.ok(&["agent", "add", &cell, "gone"]);
    root.ok(&["agent", "beat", &cell, "fine"]);
    root.ok(&["agent", "beat", &cell, "gone"]);
    let path = root.cell_dir(&cell).join("agents/gone.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    doc["last_heartbeat"] = "2020-01-01T00:00:00Z".into();
    std::fs::write(&path, doc.to_string()).unwrap();
    cell
}

#[test]
fn colour_on_a_terminal_only_and_never_with_no_color_or_color_never() {
    if !script_available() {
        return;
    }
    let root = Root::new();
    fleet_with_a_healthy_and_a_dead_agent(&root);
    // The standard green and red, as SGR 32/31 or as 256-colour palette entries 2/1.
    let green = |t: &str, word: &str| {
        t.contains(&format!("\x1b[32m{word}")) || t.contains(&format!("\x1b[38;5;2m{word}"))
    };
    let red = |t: &str, word: &str| {
        t.contains(&format!("\x1b[31m{word}")) || t.contains(&format!("\x1b[38;5;1m{word}"))
    };

    let terminal = on_terminal(&root, "pas status", &[]);
    assert!(
        terminal.contains("healthy") && terminal.contains("dead"),
        "{terminal}"
    );
    assert!(
        green(&terminal, "healthy") && red(&terminal, "dead") && green(&terminal, "active"),
        "healthy is green and dead red on a terminal: {terminal:?}"
    );

    for (what, shown) in [
        (
            "NO_COLOR=1",
            on_terminal(&root, "pas status", &[("NO_COLOR", "1")]),
        ),
        (
            "--color never",
            on_terminal(&root, "pas --color never status", &[]),
        ),
        ("a pipe", on_terminal(&root, "pas status | cat", &[])),
    ] {
        assert!(shown.contains("healthy"), "{what}: {shown}");
        assert!(!shown.contains('\x1b'), "{what}: escape codes in {shown:?}");
    }

    let mut piped = root.cmd(&["status"]);
    piped.env_remove("NO_COLOR");
    let out = piped.output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains('\x1b'));
    let forced = root.ok(&["--color", "always", "status"]);
    assert!(
        green(&forced, "healthy"),
        "--color always colours a pipe too"
    );
}

#[test]
fn long_operations_show_progress_on_a_terminal_and_nothing_in_a_pipe() {
    if !script_available() {
        return;
    }
    let root = Root::new();
    for i in 0..3 {
        root.cell(&format!("c{i}"));
    }
    let terminal = on_terminal(&root, "pas validate", &[]);
    assert!(
        terminal.contains("validating: 1/3 cells checked"),
        "{terminal:?}"
    );
    assert!(
        terminal.contains("\r\x1b[K"),
        "the line is wiped: {terminal:?}"
    );
    assert!(terminal.contains("ok: no problems found"), "{terminal:?}");

    let piped = root.run(&["validate"]);
    assert_eq!(piped.code, 0);
    assert_eq!(piped.stderr, "", "no progress in a pipe");
    assert_eq!(piped.stdout, "ok: no problems found\n");
}

#[test]
fn quiet_lists_print_only_ids() {
    let root = Root::new();
    let a = root.cell("a");
    let b = root.cell("b");
    let mut listed: Vec<String> = root
        .ok(&["-q", "cell", "list"])
        .lines()
        .map(str::to_string)
        .collect();
    listed.sort();
    let mut expected = vec![a.clone(), b];
    expected.sort();
    assert_eq!(listed, expected);
    root.ok(&["agent", "add", &a, "w1"]);
    assert_eq!(root.ok(&["-q", "agent", "list", &a]), "w1");
}
