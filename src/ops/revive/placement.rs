//! Placement: which `pas watch` node looks after an agent on a shared store (etcd), where
//! several nodes on several hosts watch one prefix.
//!
//! A node handles the agents placed on its own host (`host` in the agent file, with `/proc`
//! checks, as a single watch does) and the agents with no host yet (never started: any
//! node may start one; the claim's transaction lets exactly one do it). An agent of another
//! host is that host's node's, until the host is gone: its node key (`nodes/<host>`) has
//! been absent longer than `host_takeover_after` AND the agent's alive key is absent (no
//! supervisor anywhere holds it). Then this node takes it over: places it here and revives
//! it, in claims that commit only on the agent document it decided on.
//!
//! Pure: the watch says which nodes it saw and since when a host's node was missing.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};

/// What a node knows of another host's node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// Its key exists now.
    Alive,
    /// Its key has been absent since then (as far as this node has seen: since this node
    /// first looked, for a host it never saw alive).
    GoneSince(DateTime<Utc>),
}

/// What a node knows of the nodes of a shared store, for one pass.
#[derive(Debug, Clone)]
pub struct Nodes {
    /// This node's host.
    pub here: String,
    /// The hosts whose node key exists now.
    pub alive: HashSet<String>,
    /// Since when each host this node saw alive before has been missing.
    pub gone_since: HashMap<String, DateTime<Utc>>,
    /// When this node started looking: the time a host it never saw is missing since.
    pub since: DateTime<Utc>,
}

impl Nodes {
    /// What this node knows of `host`'s node.
    pub fn node(&self, host: &str) -> Node {
        if self.alive.contains(host) {
            return Node::Alive;
        }
        Node::GoneSince(self.gone_since.get(host).copied().unwrap_or(self.since))
    }

    /// Takes in a listing of the node keys made at `now`: a host seen alive before and
    /// missing now has been gone since `now`; one back again is no longer gone.
    pub fn observe(&mut self, alive: HashSet<String>, now: DateTime<Utc>) {
        for went in self.alive.difference(&alive) {
            self.gone_since.insert(went.clone(), now);
        }
        self.gone_since.retain(|h, _| !alive.contains(h));
        self.alive = alive;
    }
}

/// A node's look at one agent: the nodes, and whether the agent's alive key exists.
#[derive(Debug, Clone, Copy)]
pub struct Looking<'a> {
    /// What the node knows of the others.
    pub nodes: &'a Nodes,
    /// Whether the agent's alive key exists.
    pub alive_key: bool,
}

/// What a node does about one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Its own (on this host, or on none yet): handle it as a single watch does.
    Here,
    /// Another host's: leave it; look again then (`None`: when something changes).
    Theirs {
        /// When the takeover grace of a gone host ends.
        until: Option<DateTime<Utc>>,
    },
    /// Its host is gone: take it over here.
    TakeOver {
        /// The host that is gone.
        from: String,
    },
}

/// Decides whether node `here` handles an agent placed on `agent_host`, given what it knows
/// of that host's node (`node`), whether the agent's alive key exists (`alive_key`), the
/// takeover grace (`None`: takeover is off) and the time.
pub fn decide(
    agent_host: Option<&str>,
    here: &str,
    node: Node,
    alive_key: bool,
    grace: Option<Duration>,
    now: DateTime<Utc>,
) -> Placement {
    let host = match agent_host {
        None => return Placement::Here,
        Some(h) if h == here => return Placement::Here,
        Some(h) => h,
    };
    let gone_since = match node {
        Node::Alive => return Placement::Theirs { until: None },
        Node::GoneSince(t) => t,
    };
    // A supervisor still holds it (or its lease has not run out): not dead, not ours.
    if alive_key {
        return Placement::Theirs { until: None };
    }
    let Some(grace) = grace else {
        return Placement::Theirs { until: None };
    };
    let until = gone_since + grace;
    if now >= until {
        Placement::TakeOver {
            from: host.to_string(),
        }
    } else {
        Placement::Theirs { until: Some(until) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        crate::clock::parse("2026-12-01T22:00:00Z").unwrap() + Duration::seconds(s)
    }

    #[test]
    fn listings_of_the_node_keys_say_since_when_each_host_is_gone() {
        let hosts = |names: &[&str]| names.iter().map(|h| h.to_string()).collect();
        let mut nodes = Nodes {
            here: "a".into(),
            alive: hosts(&["a", "b"]),
            gone_since: HashMap::new(),
            since: t(0),
        };
        // (what a listing at t(at) shows, then what each host is)
        type Row<'a> = (i64, &'a [&'a str], &'a [(&'a str, Node)]);
        let rows: [Row<'_>; 4] = [
            (
                10,
                &["a"],
                &[
                    ("a", Node::Alive),
                    ("b", Node::GoneSince(t(10))),
                    ("c", Node::GoneSince(t(0))),
                ],
            ),
            (20, &["a"], &[("b", Node::GoneSince(t(10)))]),
            (30, &["a", "b"], &[("b", Node::Alive)]),
            (
                40,
                &["a", "c"],
                &[("b", Node::GoneSince(t(40))), ("c", Node::Alive)],
            ),
        ];
        for (at, listed, want) in rows {
            nodes.observe(hosts(listed), t(at));
            for (host, node) in want {
                assert_eq!(nodes.node(host), *node, "{host} after the listing at {at}");
            }
        }
    }

    #[test]
    #[rustfmt::skip]
    fn a_node_handles_its_own_agents_and_takes_over_a_gone_hosts_after_the_grace() {
        let grace = Some(Duration::seconds(30));
        let here = || Placement::Here;
        let theirs = |until: Option<i64>| Placement::Theirs { until: until.map(t) };
        let take = || Placement::TakeOver { from: "a".to_string() };
        // (why, agent's host, node a, alive key, grace, now, want)
        type Row<'a> = (&'a str, Option<&'a str>, Node, bool, Option<Duration>, i64, Placement);
        let rows: Vec<Row> = vec![
            ("placed here: ours", Some("b"), Node::Alive, true, grace, 0, here()),
            ("placed here, its supervisor gone: ours (proc checks decide)",
                Some("b"), Node::GoneSince(t(-100)), false, grace, 0, here()),
            ("no host yet (never started): any node's, the claim decides",
                None, Node::Alive, false, grace, 0, here()),
            ("another host whose node lives: theirs", Some("a"), Node::Alive, false, grace, 0, theirs(None)),
            ("its node lives, no alive key (dead agent): still theirs to revive",
                Some("a"), Node::Alive, false, grace, 1000, theirs(None)),
            ("node gone, within the grace: wait for the grace's end",
                Some("a"), Node::GoneSince(t(-10)), false, grace, 0, theirs(Some(20))),
            ("node gone past the grace, no alive key: take it over",
                Some("a"), Node::GoneSince(t(-31)), false, grace, 0, take()),
            ("node gone exactly the grace: take it over",
                Some("a"), Node::GoneSince(t(-30)), false, grace, 0, take()),
            ("node gone past the grace but a supervisor holds its alive key: theirs",
                Some("a"), Node::GoneSince(t(-300)), true, grace, 0, theirs(None)),
            ("takeover off (host_takeover_after null): never",
                Some("a"), Node::GoneSince(t(-3000)), false, None, 0, theirs(None)),
            ("a grace of 0: at once once the node is gone",
                Some("a"), Node::GoneSince(t(0)), false, Some(Duration::zero()), 0, take()),
        ];
        let count = rows.len();
        let failures: Vec<String> = rows
            .into_iter()
            .filter_map(|(why, host, node, alive, grace, now, want)| {
                let got = decide(host, "b", node, alive, grace, t(now));
                (got != want).then(|| format!("{why}: want {want:?}, got {got:?}"))
            })
            .collect();
        assert!(failures.is_empty(), "{} of {count} rows fail:\n{}", failures.len(), failures.join("\n"));
    }
}
