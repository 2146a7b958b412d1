//! A 3-member etcd cluster for tests: started once per test binary on free loopback ports
//! with its own data directories, and stopped when the test binary exits (a guard process
//! waits for it to end, then kills the members and removes their directories).
//!
//! Shared by the library's tests and the integration tests (`tests/cli`, which include
//! this file), so it uses the standard library only.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A running test cluster.
#[derive(Debug)]
pub struct Cluster {
    /// `host:port` of each member's client URL.
    pub members: Vec<String>,
    /// The command line of each member, to start it again.
    commands: Vec<Vec<String>>,
    /// The directory of the members' data and logs.
    dir: std::path::PathBuf,
    /// The process of each member, as last started.
    pids: std::sync::Mutex<Vec<u32>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.commands.len() {
            self.kill(i);
        }
    }
}

impl Cluster {
    /// SIGKILLs member `i` (and waits for it to be gone).
    pub fn kill(&self, i: usize) {
        let pid = self.pids.lock().map(|p| p[i]).unwrap_or(0);
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::path::Path::new(&format!("/proc/{pid}/status")).exists()
            && std::fs::read_to_string(format!("/proc/{pid}/status"))
                .is_ok_and(|s| !s.contains("State:\tZ"))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts member `i` again on its data directory (after [`Cluster::kill`]).
    pub fn restart(&self, i: usize) -> Result<(), String> {
        let pid = spawn(&self.commands[i], &self.dir, i)?;
        if let Ok(mut pids) = self.pids.lock() {
            pids[i] = pid;
        }
        // The guard kills the members it was told of: this one gets a guard of its own.
        guard(&[pid.to_string()], None)
    }

    /// A store URL on this cluster with a prefix no other test uses.
    pub fn url(&self) -> String {
        format!("etcd://{}/{}", self.members.join(","), unique_prefix())
    }
}

/// A key prefix unique to this call (tests share the cluster).
pub fn unique_prefix() -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("test-{}-{n}-{nanos}", std::process::id())
}

/// Why there is no cluster.
#[derive(Debug)]
enum NoCluster {
    /// etcd is not installed: the test is skipped.
    Missing(String),
    /// It is, but the cluster did not start: the test fails.
    Failed(String),
}

/// A cluster of its own for a test that kills members; `None` as for [`shared`].
pub fn private() -> Option<Cluster> {
    start().map_err(|e| skip_or_fail(&e)).ok()
}

/// Prints the one `skipped:` line for a missing etcd, or fails the test (a cluster that
/// did not start, or `PAS_TEST_REQUIRE_ALL=1`).
fn skip_or_fail(why: &NoCluster) {
    match why {
        NoCluster::Failed(problem) => panic!("{problem}"),
        NoCluster::Missing(problem) => {
            if std::env::var("PAS_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
                panic!("{problem} (PAS_TEST_REQUIRE_ALL=1 makes a missing tool a failure)");
            }
            println!("skipped: {problem}");
        }
    }
}

/// The shared cluster, started on first use; `None` (after one `skipped:` line) when etcd
/// is not installed, unless `PAS_TEST_REQUIRE_ALL=1`, where that fails the test. A cluster
/// that does not start fails the test.
pub fn shared() -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Result<Cluster, NoCluster>> = OnceLock::new();
    match CLUSTER.get_or_init(start) {
        Ok(c) => Some(c),
        Err(why) => {
            skip_or_fail(why);
            None
        }
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

fn start() -> Result<Cluster, NoCluster> {
    match Command::new("etcd").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(_) => {
            return Err(NoCluster::Missing(
                "etcd does not run here (`etcd --version` failed)".to_string(),
            ))
        }
        Err(_) => {
            return Err(NoCluster::Missing(
                "etcd is not installed (apt-get install etcd-server)".to_string(),
            ))
        }
    }
    launch().map_err(NoCluster::Failed)
}

fn launch() -> Result<Cluster, String> {
    let dir = std::env::temp_dir().join(format!("pas-etcd-{}", unique_prefix()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut clients = Vec::new();
    let mut peers = Vec::new();
    for _ in 0..3 {
        clients.push(free_port()?);
        peers.push(free_port()?);
    }
    let initial: Vec<String> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| format!("m{i}=http://127.0.0.1:{p}"))
        .collect();
    let token = unique_prefix();
    let mut pids = Vec::new();
    let mut commands = Vec::new();
    for i in 0..3 {
        let client = format!("http://127.0.0.1:{}", clients[i]);
        let peer = format!("http://127.0.0.1:{}", peers[i]);
        let data = dir.join(format!("m{i}")).display().to_string();
        let args: Vec<String> = [
            "--name",
            &format!("m{i}"),
            "--data-dir",
            &data,
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &initial.join(","),
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            &token,
            "--max-txn-ops",
            "10000",
            "--logger",
            "zap",
            "--log-level",
            "warn",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        pids.push(spawn(&args, &dir, i)?.to_string());
        commands.push(args);
    }
    guard(&pids, Some(&dir))?;
    let members: Vec<String> = clients.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !members.iter().all(|m| healthy(m)) {
        if Instant::now() > deadline {
            return Err(format!(
                "the test etcd cluster did not become healthy in 30 s (logs in {})",
                dir.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let pids = pids.iter().filter_map(|p| p.parse().ok()).collect();
    Ok(Cluster {
        members,
        commands,
        dir,
        pids: std::sync::Mutex::new(pids),
    })
}

/// Starts one member with `args`, its output appended to `m<i>.log` in `dir`.
fn spawn(args: &[String], dir: &std::path::Path, i: usize) -> Result<u32, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("m{i}.log")))
        .map_err(|e| format!("cannot create the etcd log: {e}"))?;
    let err = log
        .try_clone()
        .map_err(|e| format!("cannot create the etcd log: {e}"))?;
    Command::new("etcd")
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map(|c| c.id())
        .map_err(|e| format!("cannot start etcd: {e}"))
}

/// A process that waits for this one to end, then kills `pids` (and removes `dir`).
fn guard(pids: &[String], dir: Option<&std::path::Path>) -> Result<(), String> {
    let remove = dir
        .map(|d| format!("; rm -rf '{}'", d.display()))
        .unwrap_or_default();
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 0.2; done; kill -9 {pids} 2>/dev/null{remove}",
        me = std::process::id(),
        pids = pids.join(" "),
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(|_| ())
        .map_err(|e| format!("cannot start the etcd guard: {e}"))
}

impl Cluster {
    /// Which member is the leader now (its `/metrics` say `etcd_server_is_leader 1`);
    /// `None` while there is none or no member answers. (Used by `tests/cli`.)
    #[allow(dead_code)]
    pub fn leader(&self) -> Option<usize> {
        self.members
            .iter()
            .position(|m| get(m, "/metrics").contains("\netcd_server_is_leader 1"))
    }
}

/// The answer of the member at `addr` to `GET path`, empty when it does not answer.
fn get(addr: &str, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

/// Whether the member at `addr` says it is healthy (`GET /health`).
pub fn healthy(addr: &str) -> bool {
    get(addr, "/health").contains("\"health\":\"true\"")
}
