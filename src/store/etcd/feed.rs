//! The etcd store's change feed: one etcd watch on the store's prefix, mapping each key
//! event to the [`Change`] the file store's inotify feed gives for the same document.
//!
//! Invariants:
//! - One watch stream, on a thread of its own with its own runtime and connection (a
//!   client is served by the runtime that made it; the store's runs only while the store is
//!   used). It starts from the revision current when the feed was made, so nothing written
//!   after [`Feed::start`] returns is missed.
//! - A lost stream (its member died, the member lost its leader, the connection broke) is
//!   opened again from the revision after the last one seen, on a new connection, after a
//!   short pause that doubles up to 2 s; etcd then replays what was missed. While it is
//!   down [`ChangeFeed::polling`] is true, and the loss is said once as a
//!   [`Change::Rescan`] so a caller that only looks at `polling()` on a rescan starts
//!   polling. When the revision to resume from was compacted away, the stream is opened
//!   at the current revision and a `Rescan` is sent once it is up.
//! - The deletion of `cells/<cell>/alive/<agent>` (the lease of a supervisor that died
//!   expired, or a supervisor that ended revoked it) is a [`Change::Cell`] of that cell:
//!   `pas watch` looks at the cell at once instead of at its next reconcile.
//! - A `pas watch` node's key (`nodes/<host>`) put or deleted is a [`Change::Root`] when
//!   the root is subscribed: the watch reconciles at once, so it learns that a host's node
//!   is gone when its lease expires, not at its next reconcile.
//! - Changes are hints, as with files: the caller re-reads before deciding anything. Only
//!   subscribed cells' documents are reported; cells appearing and leaving when the root
//!   is subscribed.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, WatchOptions};
use tokio::sync::oneshot;

use super::{ALIVE_DIR, NODES_DIR};
use crate::store::changes::{CellId, Change, ChangeFeed, Sink};
use crate::store::layout;

/// How long connecting, asking the current revision or opening the stream may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(2);
/// The first pause before opening a lost stream again; it doubles up to [`MAX_PAUSE`].
const MIN_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between attempts to open the stream.
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// What a key under the store's prefix means to subscribers; `None` from [`decode`]: nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Meaning<'a> {
    /// `cell-ids/<cell>`: the cell appeared in the store or left it.
    Listed(&'a str),
    /// The cell's `cell.json` or one of its `config/` documents.
    Cell(&'a str),
    /// `agents/<id>.json`.
    Agent(&'a str, &'a str),
    /// `tasks/<id>.json`.
    Task(&'a str, &'a str),
    /// A line appended to the events log (`.pas/events/<seq>`).
    Events(&'a str),
    /// `reservations.json`.
    Reservations(&'a str),
    /// `alive/<agent>` deleted: the agent's supervisor ended or died (its lease expired).
    Died(&'a str, &'a str),
    /// `nodes/<host>` put or deleted: a `pas watch` node started, ended or died, which
    /// decides who looks after that host's agents (`ops::revive::placement`).
    Node,
}

impl Meaning<'_> {
    /// The cell it is about; none for a node.
    fn cell(&self) -> Option<&str> {
        match *self {
            Meaning::Listed(c)
            | Meaning::Cell(c)
            | Meaning::Agent(c, _)
            | Meaning::Task(c, _)
            | Meaning::Events(c)
            | Meaning::Reservations(c)
            | Meaning::Died(c, _) => Some(c),
            Meaning::Node => None,
        }
    }
}

/// What the event on `key` (a put, or a delete when `deleted`) means, for a store whose
/// keys start with `prefix/`. Ids are checked ([`layout::is_valid_id`]); anything else
/// (commit tokens, the ready index, the events head, checkpoints, a supervisor taking its
/// alive key) means nothing.
pub(crate) fn decode<'a>(prefix: &str, key: &'a str, deleted: bool) -> Option<Meaning<'a>> {
    let rest = key.strip_prefix(prefix)?.strip_prefix('/')?;
    if let Some(host) = rest
        .strip_prefix(NODES_DIR)
        .and_then(|r| r.strip_prefix('/'))
    {
        return crate::host::check(host).is_ok().then_some(Meaning::Node);
    }
    if let Some(cell) = rest.strip_prefix("cell-ids/") {
        return layout::is_valid_id(cell).then_some(Meaning::Listed(cell));
    }
    let (cell, tail) = rest.strip_prefix("cells/")?.split_once('/')?;
    if !layout::is_valid_id(cell) {
        return None;
    }
    let (dir, name) = match tail.split_once('/') {
        Some((dir, name)) => (Some(dir), name),
        None => (None, tail),
    };
    match (dir, name) {
        (None, layout::CELL_FILE) => Some(Meaning::Cell(cell)),
        (None, layout::RESERVATIONS_FILE) => Some(Meaning::Reservations(cell)),
        (Some(layout::CONFIG_DIR), name) => layout::doc_id(name).map(|_| Meaning::Cell(cell)),
        (Some(layout::AGENTS_DIR), name) => layout::doc_id(name).map(|a| Meaning::Agent(cell, a)),
        (Some(layout::TASKS_DIR), name) => layout::doc_id(name).map(|t| Meaning::Task(cell, t)),
        (Some(".pas"), name) if !deleted => name
            .strip_prefix("events/")
            .filter(|seq| !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()))
            .map(|_| Meaning::Events(cell)),
        (Some(ALIVE_DIR), agent) if deleted && layout::is_valid_id(agent) => {
            Some(Meaning::Died(cell, agent))
        }
        _ => None,
    }
}

/// What the subscribing caller and the feed's thread share.
struct Shared {
    sink: Sink,
    /// Whether the watch stream is open.
    up: AtomicBool,
    /// Whether cells appearing and leaving are reported.
    root: AtomicBool,
    /// The subscribed cells, with the caller's allocation of each id.
    cells: Mutex<HashSet<CellId>>,
}

impl Shared {
    /// The change a meaning gives, when its cell (or the root, for a listing) is subscribed.
    fn change(&self, meaning: Meaning<'_>) -> Option<Change> {
        let Some(id) = meaning.cell() else {
            // A node: what the root's watcher wants to hear of.
            return self.root.load(Ordering::SeqCst).then_some(Change::Root);
        };
        let cells = self.cells.lock().unwrap_or_else(PoisonError::into_inner);
        let cell = match cells.get(id) {
            Some(cell) => cell.clone(),
            None if matches!(meaning, Meaning::Listed(_)) && self.root.load(Ordering::SeqCst) => {
                CellId::from(id)
            }
            None => return None,
        };
        Some(match meaning {
            Meaning::Listed(_) | Meaning::Cell(_) | Meaning::Died(..) => Change::Cell { cell },
            Meaning::Agent(_, agent) => Change::Agent {
                cell,
                agent: agent.to_string(),
            },
            Meaning::Task(_, task) => Change::Task {
                cell,
                task: task.to_string(),
            },
            Meaning::Events(_) => Change::Events { cell },
            Meaning::Reservations(_) => Change::Reservations { cell },
            // Answered above: a node has no cell.
            Meaning::Node => return None,
        })
    }
}

/// The feed of one etcd store. Dropping it ends the watch.
pub struct Feed {
    shared: Arc<Shared>,
    /// Dropped with the feed: wakes the thread, which ends.
    _stop: oneshot::Sender<()>,
}

/// Where the feed's thread connects, and what it watches.
pub struct Target {
    /// The members' URLs.
    pub endpoints: Vec<String>,
    /// As the store connected (TLS, user).
    pub options: ConnectOptions,
    /// The store's key prefix (no trailing `/`).
    pub prefix: String,
}

impl Feed {
    /// Starts watching `target`'s prefix; `sink` gets the changes of what is subscribed
    /// later, from the feed's thread. Waits at most `wait` for the stream to open: when it
    /// could not, the feed starts polling ([`ChangeFeed::polling`]) and keeps trying, and
    /// sends a [`Change::Rescan`] once the stream is up.
    pub fn start(target: Target, sink: Sink, wait: Duration) -> Feed {
        let shared = Arc::new(Shared {
            sink,
            up: AtomicBool::new(false),
            root: AtomicBool::new(false),
            cells: Mutex::new(HashSet::new()),
        });
        let (stop, stopped) = oneshot::channel();
        let (ready, opened) = mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("pas-etcd-feed".into())
            .spawn(move || run(&thread_shared, &target, ready, stopped));
        match spawned {
            // Whether it opened or not, the caller goes on: `polling()` says which.
            Ok(_) => {
                let _ = opened.recv_timeout(wait);
            }
            Err(e) => {
                (shared.sink)(Change::Lost {
                    reason: format!("cannot start the etcd watch ({e})"),
                });
            }
        }
        Feed {
            shared,
            _stop: stop,
        }
    }
}

impl ChangeFeed for Feed {
    fn watch_root(&self) {
        self.shared.root.store(true, Ordering::SeqCst);
    }

    fn watch_cell(&self, cell: &CellId) {
        if layout::is_valid_id(cell) {
            self.shared
                .cells
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(cell.clone());
        }
    }

    fn polling(&self) -> bool {
        !self.shared.up.load(Ordering::SeqCst)
    }
}

/// Why a watch stream ended.
enum Ended {
    /// Nobody listens any more.
    Stopped,
    /// The stream broke (or never opened): resume from the last revision seen.
    Lost,
    /// The revision to resume from was compacted away: start at the current one, rescan.
    Compacted,
}

/// The feed's thread: opens the stream and follows it until the feed is dropped or
/// nobody listens, opening it again whenever it is lost.
fn run(
    shared: &Shared,
    target: &Target,
    ready: mpsc::Sender<()>,
    mut stopped: oneshot::Receiver<()>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            (shared.sink)(Change::Lost {
                reason: format!("cannot start the etcd watch ({e})"),
            });
            return;
        }
    };
    let key = format!("{}/", target.prefix);
    // The revision to watch from; 0 until the current one is known.
    let mut next: i64 = 0;
    let mut ready = Some(ready);
    // Whether the caller must look at everything once the stream is up.
    let mut rescan = false;
    let mut pause = MIN_PAUSE;
    rt.block_on(async {
        loop {
            let attempt = follow(shared, target, &key, &mut next, &mut ready, &mut rescan);
            let ended = tokio::select! {
                _ = &mut stopped => return,
                ended = attempt => ended,
            };
            let was_up = shared.up.swap(false, Ordering::SeqCst);
            match ended {
                Ended::Stopped => return,
                Ended::Lost => {}
                Ended::Compacted => {
                    next = 0;
                    rescan = true;
                }
            }
            if ready.take().is_some() {
                // The caller stopped waiting for the first stream: whatever it read first may
                // predate the revision the stream will start at.
                rescan = true;
            }
            if was_up {
                // Wake the caller so it sees `polling()` and polls while the stream is down.
                if !(shared.sink)(Change::Rescan) {
                    return;
                }
                pause = MIN_PAUSE;
            }
            tokio::select! {
                _ = &mut stopped => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(MAX_PAUSE);
        }
    });
}

/// One stream: connects, learns the current revision if `next` is 0, watches the prefix
/// from `next` and hands the changes to the sink until the stream ends.
async fn follow(
    shared: &Shared,
    target: &Target,
    key: &str,
    next: &mut i64,
    ready: &mut Option<mpsc::Sender<()>>,
    rescan: &mut bool,
) -> Ended {
    let opened = tokio::time::timeout(STEP_TIMEOUT, async {
        let mut c = Client::connect(&target.endpoints, Some(target.options.clone())).await?;
        if *next == 0 {
            let now = c
                .get(key, Some(GetOptions::new().with_prefix().with_count_only()))
                .await?;
            *next = now.header().map_or(0, |h| h.revision()) + 1;
        }
        let options = WatchOptions::new().with_prefix().with_start_revision(*next);
        let stream = c.watch(key, Some(options)).await?;
        Ok::<_, etcd_client::Error>((c, stream))
    })
    .await;
    let (_client, (_watcher, mut stream)) = match opened {
        Ok(Ok(v)) => v,
        _ => return Ended::Lost,
    };
    shared.up.store(true, Ordering::SeqCst);
    if let Some(ready) = ready.take() {
        if ready.send(()).is_err() {
            // The caller gave up waiting before the stream opened.
            *rescan = true;
        }
    }
    if std::mem::take(rescan) && !(shared.sink)(Change::Rescan) {
        return Ended::Stopped;
    }
    let mut changes: Vec<Change> = Vec::new();
    loop {
        let answer = match stream.message().await {
            Ok(Some(answer)) => answer,
            Ok(None) | Err(_) => return Ended::Lost,
        };
        if answer.compact_revision() > 0 {
            return Ended::Compacted;
        }
        if answer.canceled() {
            return Ended::Lost;
        }
        for event in answer.events() {
            let Some(kv) = event.kv() else { continue };
            *next = (*next).max(kv.mod_revision() + 1);
            let Ok(key) = kv.key_str() else { continue };
            let deleted = event.event_type() == EventType::Delete;
            let Some(change) = decode(&target.prefix, key, deleted).and_then(|m| shared.change(m))
            else {
                continue;
            };
            // A commit is several keys of one document's cell: say each change once.
            if !changes.contains(&change) {
                changes.push(change);
            }
        }
        for change in changes.drain(..) {
            if !(shared.sink)(change) {
                return Ended::Stopped;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_mean_what_the_file_store_would_say() {
        use Meaning::*;
        let p = "team/a";
        let cases: &[(&str, bool, Option<Meaning<'_>>)] = &[
            ("team/a/cell-ids/c1", false, Some(Listed("c1"))),
            ("team/a/cell-ids/c1", true, Some(Listed("c1"))),
            ("team/a/cells/c1/cell.json", false, Some(Cell("c1"))),
            (
                "team/a/cells/c1/config/policies.json",
                false,
                Some(Cell("c1")),
            ),
            (
                "team/a/cells/c1/agents/a1.json",
                false,
                Some(Agent("c1", "a1")),
            ),
            (
                "team/a/cells/c1/agents/a1.json",
                true,
                Some(Agent("c1", "a1")),
            ),
            (
                "team/a/cells/c1/tasks/t-1.json",
                false,
                Some(Task("c1", "t-1")),
            ),
            (
                "team/a/cells/c1/reservations.json",
                false,
                Some(Reservations("c1")),
            ),
            (
                "team/a/cells/c1/.pas/events/00000000000000000007",
                false,
                Some(Events("c1")),
            ),
            // A dead supervisor's lease expired (or a clean end revoked it).
            ("team/a/cells/c1/alive/a1", true, Some(Died("c1", "a1"))),
            // A supervisor taking its key is no news: the agent document says it started.
            ("team/a/cells/c1/alive/a1", false, None),
            // A watch node started, ended or died: who handles its host's agents changes.
            ("team/a/nodes/web-1", false, Some(Node)),
            ("team/a/nodes/web-1", true, Some(Node)),
            ("team/a/nodes/a b", true, None),
            // Bookkeeping keys.
            ("team/a/cells/c1/.pas/events-head", false, None),
            ("team/a/cells/c1/.pas/ready/0001", false, None),
            ("team/a/cells/c1/.pas/tasks-gen", false, None),
            ("team/a/cells/c1/.pas/hooks-cursor", false, None),
            ("team/a/cells/c1/.pas/checkpoints/a1/0", false, None),
            ("team/a/commits/5b0c", false, None),
            // Not ids, or not under this prefix.
            ("team/a/cells/../cell.json", false, None),
            ("team/a/cells/c1/agents/.a1.json.tmp", false, None),
            ("team/a/cells/c1/agents/a1.txt", false, None),
            ("team/a/cells/c1/alive/-x", true, None),
            ("team/a/cell-ids/.pas", false, None),
            ("team/ab/cells/c1/cell.json", false, None),
            ("team/a", false, None),
            ("other/cells/c1/cell.json", false, None),
        ];
        for (key, deleted, want) in cases {
            assert_eq!(decode(p, key, *deleted), *want, "{key} deleted={deleted}");
        }
    }

    fn shared() -> (Shared, mpsc::Receiver<Change>) {
        let (tx, rx) = mpsc::channel();
        let shared = Shared {
            sink: Box::new(move |c| tx.send(c).is_ok()),
            up: AtomicBool::new(true),
            root: AtomicBool::new(false),
            cells: Mutex::new(HashSet::new()),
        };
        (shared, rx)
    }

    #[test]
    fn only_subscribed_cells_and_with_the_root_new_cells_give_changes() {
        let (shared, _rx) = shared();
        let c1 = CellId::from("c1");
        let cases: Vec<(Meaning<'_>, bool, bool, Option<Change>)> = vec![
            // (meaning, root subscribed, c1 subscribed, change)
            (Meaning::Agent("c1", "a1"), false, false, None),
            (Meaning::Listed("c1"), false, false, None),
            (
                Meaning::Listed("c2"),
                true,
                false,
                Some(Change::Cell { cell: "c2".into() }),
            ),
            (
                Meaning::Agent("c1", "a1"),
                false,
                true,
                Some(Change::Agent {
                    cell: c1.clone(),
                    agent: "a1".into(),
                }),
            ),
            (
                Meaning::Died("c1", "a1"),
                false,
                true,
                Some(Change::Cell { cell: c1.clone() }),
            ),
            (
                Meaning::Task("c1", "t"),
                false,
                true,
                Some(Change::Task {
                    cell: c1.clone(),
                    task: "t".into(),
                }),
            ),
            (
                Meaning::Events("c1"),
                false,
                true,
                Some(Change::Events { cell: c1.clone() }),
            ),
            (
                Meaning::Reservations("c1"),
                true,
                true,
                Some(Change::Reservations { cell: c1.clone() }),
            ),
            // A watch node came or went: the root's watcher hears of it, nobody else.
            (Meaning::Node, true, false, Some(Change::Root)),
            (Meaning::Node, false, true, None),
        ];
        for (meaning, root, subscribed, want) in cases {
            shared.root.store(root, Ordering::SeqCst);
            let mut cells = shared.cells.lock().unwrap();
            cells.clear();
            if subscribed {
                cells.insert(c1.clone());
            }
            drop(cells);
            let got = shared.change(meaning);
            assert_eq!(got, want, "{meaning:?} root={root} subscribed={subscribed}");
            if let Some(Change::Cell { cell } | Change::Agent { cell, .. }) = &got {
                if &**cell == "c1" {
                    assert!(Arc::ptr_eq(cell, &c1), "the caller's id is shared");
                }
            }
        }
    }

    /// Takes changes until one equals `want`, failing after `secs` seconds.
    fn wait_for(rx: &mpsc::Receiver<Change>, want: &Change, secs: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(c) if &c == want => return,
                Ok(c) => seen.push(c),
                Err(_) => panic!("no {want:?} within {secs} s; saw {seen:?}"),
            }
        }
    }

    /// A feed on `url`'s prefix, its changes on a channel.
    fn feed_on(url: &str) -> (Feed, mpsc::Receiver<Change>, String) {
        let url = crate::store::etcd::parse_url(url).expect("url");
        let (tx, rx) = mpsc::channel();
        let feed = Feed::start(
            Target {
                endpoints: url.endpoints(),
                options: ConnectOptions::new(),
                prefix: url.prefix.clone(),
            },
            Box::new(move |c| tx.send(c).is_ok()),
            Duration::from_secs(5),
        );
        (feed, rx, url.prefix)
    }

    /// Runs `f` with a client of `members` on a runtime of its own.
    fn with_client<T>(
        members: &[String],
        f: impl FnOnce(Client) -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>>,
    ) -> T {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let c = Client::connect(members, None).await.expect("connect");
            f(c).await
        })
    }

    #[test]
    fn a_put_and_a_lease_expiry_reach_the_sink() {
        let Some(cluster) = crate::store::etcd::cluster::shared() else {
            return;
        };
        let (feed, rx, prefix) = feed_on(&cluster.url());
        assert!(!feed.polling(), "the stream is up");
        let c1 = CellId::from("c1");
        feed.watch_cell(&c1);
        let agent = format!("{prefix}/cells/c1/agents/a1.json");
        let alive = format!("{prefix}/cells/c1/alive/a1");
        with_client(&cluster.members, |mut c| {
            Box::pin(async move {
                c.put(agent, "{}", None).await.expect("put");
                // A supervisor's key on a 2 s lease that nobody keeps alive.
                let lease = c.lease_grant(2, None).await.expect("lease").id();
                let with = etcd_client::PutOptions::new().with_lease(lease);
                c.put(alive, "a", Some(with)).await.expect("alive");
            })
        });
        wait_for(
            &rx,
            &Change::Agent {
                cell: c1.clone(),
                agent: "a1".into(),
            },
            5,
        );
        // etcd deletes the key when the lease expires: the cell's change.
        wait_for(&rx, &Change::Cell { cell: c1 }, 10);
        assert!(!feed.polling());
    }

    #[test]
    fn a_lost_stream_polls_then_resumes_from_the_last_revision_seen() {
        let Some(cluster) = crate::store::etcd::cluster::private() else {
            return;
        };
        let (feed, rx, prefix) = feed_on(&cluster.url());
        let c1 = CellId::from("c1");
        feed.watch_cell(&c1);
        for i in 0..3 {
            cluster.kill(i);
        }
        // Said once, and polling while down.
        wait_for(&rx, &Change::Rescan, 10);
        assert!(feed.polling());
        for i in 0..3 {
            cluster.restart(i).expect("restart");
        }
        // A write made before the stream is back is replayed from the revision after the
        // last one seen.
        let task = format!("{prefix}/cells/c1/tasks/t1.json");
        with_client(&cluster.members, |mut c| {
            Box::pin(async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(15);
                while let Err(e) = c.put(task.clone(), "{}", None).await {
                    assert!(std::time::Instant::now() < deadline, "no quorum back: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        });
        wait_for(
            &rx,
            &Change::Task {
                cell: c1,
                task: "t1".into(),
            },
            15,
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while feed.polling() {
            assert!(
                std::time::Instant::now() < deadline,
                "the stream stayed down"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
