//! `pas watch` nodes on several hosts sharing one etcd prefix (two processes with different
//! host names on this machine): each revives the agents of its own host, exactly once, and
//! one takes over the agents of a host whose node is gone (skipped without etcd).

use std::process::{Child, Stdio};

use serde_json::Value;

use crate::etcd::{cluster, etcd_program_built};
use crate::etcd_helpers::{authenticate, get, kill9, pas_on, PASSWORD};
use crate::harness::{wait_until, Root};

/// Two hosts, `a` and `b`, each with its own local root, on one authenticated cluster of
/// their own (root starts agents from etcd only as a listed, authenticated user).
struct Hosts {
    cluster: cluster::Cluster,
    prefix: String,
    url: String,
    a: Root,
    b: Root,
}

impl Hosts {
    fn new() -> Option<Hosts> {
        if !etcd_program_built() {
            return None;
        }
        let cluster = cluster::private()?;
        let prefix = cluster::unique_prefix();
        authenticate(&cluster, &prefix);
        let url = format!("etcd://{}/{prefix}?user=pas", cluster.members.join(","));
        let (a, b) = (Root::new(), Root::new());
        for root in [&a, &b] {
            let listed = "etcd_root_writers = [\"pas\"]\n";
            std::fs::write(root.path.join("pas.toml"), listed).unwrap();
        }
        Some(Hosts {
            cluster,
            prefix,
            url,
            a,
            b,
        })
    }

    fn root(&self, host: &str) -> &Root {
        if host == "a" {
            &self.a
        } else {
            &self.b
        }
    }

    /// `pas ARGS` on `host`, which must succeed: its stdout.
    fn ok(&self, host: &str, args: &[&str]) -> String {
        let run = pas_on(host, self.root(host), &self.url, args);
        assert_eq!(run.code, 0, "pas {args:?} on {host}: {}", run.stderr);
        run.stdout.trim().to_string()
    }

    fn agent(&self, cell: &str, agent: &str) -> Value {
        serde_json::from_str(&self.ok("a", &["--json", "agent", "show", cell, agent])).unwrap()
    }

    /// Whether `agent` runs another process than `pid` and has `revivals` revivals or more;
    /// false also while the cluster cannot answer (exit 10, as in an election under load).
    fn revived_from(&self, cell: &str, agent: &str, pid: i64, revivals: usize) -> bool {
        let run = |args: &[&str]| {
            let run = pas_on("a", &self.a, &self.url, args);
            assert!(matches!(run.code, 0 | 10), "pas {args:?}: {}", run.stderr);
            (run.code == 0).then_some(run.stdout)
        };
        let Some(shown) = run(&["--json", "agent", "show", cell, agent]) else {
            return false;
        };
        let shown: Value = serde_json::from_str(&shown).unwrap();
        if shown["pid"].as_i64().is_none_or(|p| p == pid) {
            return false;
        }
        let Some(events) = run(&["--json", "events", cell]) else {
            return false;
        };
        count_in(&events, "agent.revived", agent) >= revivals
    }

    /// How many events of `kind` the cell has about `agent`.
    fn count(&self, cell: &str, kind: &str, agent: &str) -> usize {
        count_in(&self.ok("a", &["--json", "events", cell]), kind, agent)
    }

    /// A cell whose agents' alive keys last 2 s and whose gone hosts are taken over 1 s
    /// after their node key went, with `agents` agents started on host a: their process
    /// (naming root a, so the harness ends it with the root) sleeps.
    fn cell(&self, agents: &[&str]) -> String {
        let cell = self.ok("a", &["cell", "create", "--name", "nodes"]);
        let policies = [
            "heartbeat_ttl=2",
            "host_takeover_after=1",
            "restart_delay_seconds=0.1",
        ];
        let mut set = vec!["policy", "set", &cell];
        set.extend(policies);
        self.ok("a", &set);
        let root = self.a.path.display().to_string();
        for agent in agents {
            let add = [
                "agent",
                "add",
                &cell,
                agent,
                "--",
                "sh",
                "-c",
                "sleep 60; :",
            ];
            let mut add = add.to_vec();
            add.push(&root);
            self.ok("a", &add);
            self.ok("a", &["agent", "start", &cell, agent]);
            assert_eq!(self.agent(&cell, agent)["host"], "a");
        }
        cell
    }

    /// A `pas watch` node on `host` in its own local root: `--host` on the command line,
    /// a short reconcile interval and a node lease of 2 s (etcd's shortest); waits until its
    /// node key is there.
    fn node(&self, host: &str) -> Node {
        self.node_with_ttl(host, "2")
    }

    /// [`Hosts::node`] with a node lease of `ttl` seconds.
    fn node_with_ttl(&self, host: &str, ttl: &str) -> Node {
        let args = [
            "--json",
            "--store",
            &self.url,
            "--host",
            host,
            "watch",
            "--interval",
            "0.3",
            "--node-ttl",
            ttl,
        ];
        // Into a file, not a pipe: what it printed can be read while it runs.
        let out = std::env::temp_dir().join(format!("pas-node-{}.out", uuid::Uuid::new_v4()));
        let file = std::fs::File::create(&out).unwrap();
        let child = self
            .root(host)
            .cmd(&args)
            .env("PAS_ETCD_PASSWORD", PASSWORD)
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        let node = Node { child, out };
        let key = format!("{}/nodes/{host}", self.prefix);
        wait_until(30.0, "the node keeps its key", || {
            get(&self.cluster, &key).is_some()
        });
        node
    }

    /// SIGKILLs the agent's supervisor and process; its pid.
    fn kill_agent(&self, cell: &str, agent: &str) -> i64 {
        let shown = self.agent(cell, agent);
        let pid = shown["pid"].as_i64().unwrap();
        kill9(shown["supervisor_pid"].as_i64().unwrap());
        kill9(pid);
        pid
    }
}

/// A `pas watch` node of a test, its output going to a file.
struct Node {
    child: Child,
    out: std::path::PathBuf,
}

/// What `node` printed so far (stdout and stderr, as written).
fn printed(node: &Node) -> String {
    std::fs::read_to_string(&node.out).unwrap_or_default()
}

/// Stops `node` (SIGKILL) and returns all it printed.
fn output(mut node: Node) -> String {
    let _ = node.child.kill();
    let _ = node.child.wait();
    let text = printed(&node);
    let _ = std::fs::remove_file(&node.out);
    text
}

/// Waits until `node` has printed at least `count` actions `action`: an event in the store
/// is written before the node prints the action of the pass that wrote it.
fn wait_printed(node: &Node, action: &str, count: usize) {
    wait_until(15.0, &format!("the node prints {count} {action}"), || {
        actions(&printed(node), action) >= count
    });
}

/// How many actions `action` a node printed (JSON lines).
fn actions(printed: &str, action: &str) -> usize {
    printed.matches(&format!("\"action\":\"{action}\"")).count()
}

#[test]
fn two_watch_nodes_revive_their_own_agents_once_and_take_over_a_gone_host() {
    let Some(hosts) = Hosts::new() else {
        return;
    };
    let cell = hosts.cell(&["a1"]);
    let node_a = hosts.node("a");
    let node_b = hosts.node("b");

    // a. The agent and its supervisor die on host a: node a revives it, once; node b,
    // whose node sees a's key alive, leaves it.
    let pid = hosts.kill_agent(&cell, "a1");
    wait_until(30.0, "node a revives the agent", || {
        let a = hosts.agent(&cell, "a1");
        a["pid"].as_i64().is_some_and(|p| p != pid)
            && a["host"] == "a"
            && hosts.count(&cell, "agent.revived", "a1") >= 1
    });
    assert_eq!(hosts.count(&cell, "agent.revived", "a1"), 1, "revived once");

    // b. Host a is gone: its node, the supervisor and the agent are SIGKILLed. Node b
    // takes the agent over once a's node key and the alive key are gone: it runs on b.
    wait_printed(&node_a, "revived", 1);
    let printed_a = output(node_a);
    let revived_pid = hosts.kill_agent(&cell, "a1");
    wait_until(40.0, "node b takes the agent over", || {
        let a = hosts.agent(&cell, "a1");
        a["host"] == "b"
            && a["pid"].as_i64().is_some_and(|p| p != revived_pid)
            && hosts.count(&cell, "agent.revived", "a1") >= 2
    });
    assert_eq!(
        hosts.count(&cell, "agent.revived", "a1"),
        2,
        "revived once more"
    );
    let events = hosts.ok("a", &["--json", "events", &cell]);
    assert!(events.contains("taken over by node b"), "{events}");
    let alive = format!("{}/cells/{cell}/alive/a1", hosts.prefix);
    assert_eq!(get(&hosts.cluster, &alive).as_deref(), Some("b"));

    wait_printed(&node_b, "revived", 1);
    wait_printed(&node_b, "taken_over", 1);
    let printed_b = output(node_b);
    assert!(printed_a.contains("node a looking after"), "{printed_a}");
    assert_eq!(actions(&printed_a, "revived"), 1, "{printed_a}");
    // Node b did nothing in a: its one revival is the one after its takeover.
    assert_eq!(actions(&printed_b, "revived"), 1, "{printed_b}");
    assert_eq!(actions(&printed_b, "taken_over"), 1, "{printed_b}");
}

#[test]
fn agents_dying_while_the_etcd_leader_or_a_follower_is_killed_are_each_revived_once() {
    let Some(hosts) = Hosts::new() else {
        return;
    };
    let agents = ["a1", "a2", "a3"];
    let cell = hosts.cell(&agents);
    // Node a's lease outlives an election (a 2 s one may not: its renewals wait for the
    // new leader, and node b would rightly take host a's agents over).
    let node_a = hosts.node_with_ttl("a", "15");
    let node_b = hosts.node("b");
    let leader = || {
        let mut leader = None;
        wait_until(15.0, "an etcd leader", || {
            leader = hosts.cluster.leader();
            leader.is_some()
        });
        leader.unwrap_or_default()
    };
    // Round 1 kills the leader, round 2 a follower, each with every agent and its
    // supervisor on host a; each death is revived exactly once.
    for round in 1..=2u64 {
        let current = leader();
        let member = match round {
            1 => current,
            _ => (0..hosts.cluster.members.len())
                .find(|i| *i != current)
                .unwrap_or_default(),
        };
        let pids: Vec<i64> = agents.iter().map(|a| hosts.kill_agent(&cell, a)).collect();
        hosts.cluster.kill(member);
        wait_until(15.0, "a leader without the killed member", || {
            hosts.cluster.leader().is_some_and(|l| l != member)
        });
        hosts.cluster.restart(member).unwrap();
        let revived = || {
            agents
                .iter()
                .zip(&pids)
                .all(|(a, pid)| hosts.revived_from(&cell, a, *pid, round as usize))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !revived() {
            if std::time::Instant::now() > deadline {
                let shown: Vec<Value> = agents.iter().map(|a| hosts.agent(&cell, a)).collect();
                let events = hosts.ok("a", &["events", &cell]);
                panic!(
                    "round {round}: not every agent was revived in 30 s:\n{shown:#?}\n{events}\nnode a:\n{}\nnode b:\n{}",
                    output(node_a),
                    output(node_b)
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        for a in agents {
            assert_eq!(
                hosts.count(&cell, "agent.revived", a) as u64,
                round,
                "{a} revived once in round {round}"
            );
            assert_eq!(hosts.agent(&cell, a)["host"], "a", "{a} stays on its host");
        }
    }
    wait_printed(&node_a, "revived", 6);
    let (printed_a, printed_b) = (output(node_a), output(node_b));
    assert_eq!(actions(&printed_a, "revived"), 6, "{printed_a}");
    assert_eq!(actions(&printed_b, "revived"), 0, "{printed_b}");
    let verify = hosts.ok("a", &["events", "verify", &cell]);
    assert!(!verify.is_empty());
}

/// How many events of `kind` about `agent` the output of `pas --json events` has (one
/// event a line).
fn count_in(events: &str, kind: &str, agent: &str) -> usize {
    events
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["kind"] == kind && e["agent"] == agent)
        .count()
}
