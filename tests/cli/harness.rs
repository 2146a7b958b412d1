//! A temporary missions root and a builder for running `pas` in it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// The `pas` binary under test.
pub fn pas_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pas")
}

/// A missions root that is removed when dropped.
pub struct Root {
    pub path: PathBuf,
}

impl Root {
    pub fn new() -> Root {
        let path = std::env::temp_dir().join(format!("pas-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).unwrap();
        Root { path }
    }

    /// A `pas` command with `--root` set and a clean environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_via(&[], args)
    }

    /// [`Root::cmd`] run by another program: `WRAPPER... pas --root ROOT ARGS` (for example
    /// under `strace`).
    pub fn cmd_via(&self, wrapper: &[&str], args: &[&str]) -> Command {
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(pas_bin());
                cmd
            }
            None => Command::new(pas_bin()),
        };
        cmd.arg("--root").arg(&self.path).args(args);
        // Tests run as root in CI; a test of the root refusal removes this again.
        cmd.env_remove("PAS_ROOT")
            .env_remove("PAS_STORE")
            .env_remove("PAS_CELL")
            .env_remove("PAS_AGENT")
            .env("PAS_AGENTS_AS_ROOT", "1")
            .env("NO_COLOR", "1");
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs the shell `script` with `$ROOT` set to the root; it must succeed (roots
    /// written by hand, as scripts and people write them).
    pub fn sh(&self, script: &str) {
        let status = Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("ROOT", &self.path)
            .status()
            .unwrap();
        assert!(status.success(), "the script failed: {script}");
    }

    /// Runs `pas ARGS` and returns what happened.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd(args).output().unwrap())
    }

    /// Runs `pas ARGS` with the environment variable `name` set to `value`.
    pub fn run_env(&self, args: &[&str], name: &str, value: &str) -> Run {
        Run::from(self.cmd(args).env(name, value).output().unwrap())
    }

    /// Runs `pas ARGS`, which must succeed, and returns its stdout trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(run.code, 0, "pas {args:?} failed: {}", run.stderr);
        run.stdout.trim().to_string()
    }

    /// Runs `pas --json ARGS`, which must succeed, and parses its stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    /// Creates a cell and returns its id.
    pub fn cell(&self, name: &str) -> String {
        self.ok(&["cell", "create", "--name", name])
    }

    pub fn cell_dir(&self, cell: &str) -> PathBuf {
        self.path.join(cell)
    }

    /// Starts `agent`, whose script prints a report ending in a line `done`, and returns
    /// its log once that line is there (within 10 s).
    pub fn start_for_report(&self, cell: &str, agent: &str) -> String {
        self.ok(&["agent", "start", cell, agent]);
        let log = self.cell_dir(cell).join(format!("logs/{agent}.log"));
        let read = || std::fs::read_to_string(&log).unwrap_or_default();
        wait_until(10.0, "the agent's report", || read().contains("done"));
        read()
    }

    /// A JSON file under the root, parsed.
    pub fn read_json(&self, rel: impl AsRef<Path>) -> Value {
        let path = self.path.join(rel);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Every file under the root (relative path -> bytes), lock files left out, to prove
    /// that a refused command changed nothing.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        snapshot_into(&self.path, &self.path, &mut out);
        out
    }

    /// Asserts that every `*.json` under the root parses.
    pub fn assert_all_json_parses(&self) -> usize {
        let mut count = 0;
        for (rel, bytes) in self.snapshot() {
            if rel.ends_with(".json") {
                serde_json::from_slice::<Value>(&bytes).unwrap_or_else(|e| {
                    panic!(
                        "{rel} does not parse ({e}): {:?}",
                        String::from_utf8_lossy(&bytes)
                    )
                });
                count += 1;
            }
        }
        count
    }
}

fn snapshot_into(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let entry = entry.unwrap();
        let path = entry.path();
        let rel = path
            .strip_prefix(base)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if rel.contains(".pas/locks") {
            continue;
        }
        let ft = entry.file_type().unwrap();
        if ft.is_dir() {
            out.insert(format!("{rel}/"), Vec::new());
            snapshot_into(base, &path, out);
        } else if ft.is_file() {
            out.insert(rel, std::fs::read(&path).unwrap_or_default());
        } else {
            out.insert(format!("{rel}@"), Vec::new());
        }
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        // A supervisor restarts its agent in place and outlives a test that failed before
        // stopping it: end every process the root started, so none runs on after its files.
        kill_processes_of(&self.path);
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// SIGKILLs every process whose command line names `root` (`pas --root ROOT ...`: watches,
/// supervisors, servers), then the agents the root's agent files name with a pid.
fn kill_processes_of(root: &Path) {
    use rustix::process::{kill_process, Pid, Signal};
    let needle = root.as_os_str().as_encoded_bytes();
    let kill = |pid: i64| {
        if pid as u32 == std::process::id() {
            return;
        }
        if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
            let _ = kill_process(pid, Signal::KILL);
        }
    };
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i64>().ok())
            else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            if cmdline.split(|b| *b == 0).any(|arg| arg == needle) {
                kill(pid);
            }
        }
    }
    let Ok(cells) = std::fs::read_dir(root) else {
        return;
    };
    for cell in cells.flatten() {
        let Ok(agents) = std::fs::read_dir(cell.path().join("agents")) else {
            continue;
        };
        for agent in agents.flatten() {
            // Only small regular files: tests plant devices and huge files as agent files.
            let plain = std::fs::symlink_metadata(agent.path())
                .is_ok_and(|m| m.is_file() && m.len() < 1 << 20);
            let doc: Option<Value> = plain
                .then(|| std::fs::read_to_string(agent.path()).ok())
                .flatten()
                .and_then(|text| serde_json::from_str(&text).ok());
            if let Some(pid) = doc.as_ref().and_then(|d| d["pid"].as_i64()) {
                // Only a process still in this root's workspace: a pid in a file may have
                // been reused by now.
                let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
                if cwd.starts_with(root) {
                    // An agent leads its own process group (its children go with it).
                    if let Some(group) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
                        let _ = rustix::process::kill_process_group(group, Signal::KILL);
                    }
                    kill(pid);
                }
            }
        }
    }
}

/// What a `pas` run did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Asserts a refusal: the exit code, nothing on stdout, and exactly one stderr line
    /// containing `needle`.
    pub fn refused(&self, code: i32, needle: &str) {
        assert_eq!(
            self.code, code,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert_eq!(self.stdout, "", "a refusal prints no data");
        assert_eq!(
            self.stderr.lines().count(),
            1,
            "one line on stderr, got: {}",
            self.stderr
        );
        assert!(self.stderr.starts_with("pas: "), "{}", self.stderr);
        assert!(
            self.stderr.contains(needle),
            "expected {needle:?} in: {}",
            self.stderr
        );
    }
}

impl Root {
    /// An executable shell script under the root's parent, for agents' commands.
    pub fn script(&self, name: &str, body: &str) -> String {
        self.executable(name, &format!("#!/bin/sh\n{body}\n"))
    }

    /// An executable file `name` holding exactly `text`, in the root's `.scripts/`
    /// directory; its path.
    pub fn executable(&self, name: &str, text: &str) -> String {
        let dir = self.path.join(".scripts");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&path, perms).unwrap();
        path.display().to_string()
    }

    /// Writes `config/policies.json` of a cell.
    pub fn policies(&self, cell: &str, value: Value) {
        std::fs::write(
            self.cell_dir(cell).join("config/policies.json"),
            value.to_string(),
        )
        .unwrap();
    }

    /// The agent file, parsed.
    pub fn agent(&self, cell: &str, agent: &str) -> Value {
        self.read_json(format!("{cell}/agents/{agent}.json"))
    }

    /// Kinds of the cell's events, in order.
    pub fn event_kinds(&self, cell: &str) -> Vec<String> {
        let path = self.cell_dir(cell).join("logs/events.jsonl");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| v["kind"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// Whether a program a test needs runs here (`tool PROBE...` exits 0). When it does not, the
/// test should return at once: this prints one line (`skipped: strace is not installed`),
/// unless `PAS_TEST_REQUIRE_ALL=1` (CI sets it), where a missing tool fails the test.
pub fn tool_available(tool: &str, probe: &[&str], why: &str) -> bool {
    let problem = match Command::new(tool).args(probe).stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => return true,
        Ok(out) => format!(
            "{tool} does not work here (`{tool} {}`: {}, {})",
            probe.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or_default()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!("{tool} is not installed"),
        Err(e) => format!("{tool} cannot be run ({e})"),
    };
    if std::env::var("PAS_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{problem}: {why} (PAS_TEST_REQUIRE_ALL=1 makes a missing tool a failure)");
    }
    println!("skipped: {problem}");
    false
}

/// Polls `f` every 50 ms for up to `seconds`; panics naming `what` when it never holds.
pub fn wait_until(seconds: f64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(seconds);
    while std::time::Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("timed out after {seconds}s waiting for {what}");
}

/// The live `pas __supervise CELL AGENT` processes, from `/proc`.
pub fn supervisors_of(root: &Root, cell: &str, agent: &str) -> Vec<i64> {
    let _ = root;
    let wanted = format!("__supervise\0{cell}\0{agent}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i64>().ok())
        .filter(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = status
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            !zombie && String::from_utf8_lossy(&cmdline).ends_with(&wanted)
        })
        .collect()
}
