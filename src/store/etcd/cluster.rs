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
}

impl Cluster {
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

/// The shared cluster, started on first use; `None` (after one `skipped:` line) when etcd
/// is not installed, unless `PAS_TEST_REQUIRE_ALL=1`, where that fails the test. A cluster
/// that does not start fails the test.
pub fn shared() -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Result<Cluster, NoCluster>> = OnceLock::new();
    match CLUSTER.get_or_init(start) {
        Ok(c) => Some(c),
        Err(NoCluster::Failed(problem)) => panic!("{problem}"),
        Err(NoCluster::Missing(problem)) => {
            if std::env::var("PAS_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
                panic!("{problem} (PAS_TEST_REQUIRE_ALL=1 makes a missing tool a failure)");
            }
            println!("skipped: {problem}");
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
    for i in 0..3 {
        let log = std::fs::File::create(dir.join(format!("m{i}.log")))
            .map_err(|e| format!("cannot create the etcd log: {e}"))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("cannot create the etcd log: {e}"))?;
        let client = format!("http://127.0.0.1:{}", clients[i]);
        let peer = format!("http://127.0.0.1:{}", peers[i]);
        let child = Command::new("etcd")
            .args(["--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(dir.join(format!("m{i}")))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &token])
            .args(["--max-txn-ops", "10000"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start etcd: {e}"))?;
        pids.push(child.id().to_string());
    }
    // The guard outlives this process by a moment: when it is gone, the members go too.
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 0.2; done; kill -9 {pids} 2>/dev/null; rm -rf '{dir}'",
        me = std::process::id(),
        pids = pids.join(" "),
        dir = dir.display()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the etcd guard: {e}"))?;
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
    Ok(Cluster { members })
}

/// Whether the member at `addr` says it is healthy (`GET /health`).
pub fn healthy(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}
