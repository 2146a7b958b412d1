//! The contract every [`Store`] implementation keeps, as tests that take a fresh store.
//!
//! Each check builds what it needs through the trait only, so a second backend runs the
//! same suite by passing its own constructor to [`run_all`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::layout::{Collection, FileKey, LogFile, RootDoc};
use super::ready::ReadyIndex;
use super::txn::transact;
use super::Store;
use crate::doc::Doc;
use crate::error::{Error, Kind};
use crate::model::EventKind;
use crate::store::events::{self, Level, NewEvent};

/// Writes a document behind the store's back, as another program would (no transaction):
/// how the suite provokes a compare-and-swap conflict.
pub type ForeignWrite = Box<dyn Fn(&str, FileKey<'_>, &Doc) + Send + Sync>;

/// A fresh, empty store, shared between threads, and its foreign writer.
pub type MakeStore<'a> = &'a dyn Fn() -> (Arc<dyn Store + Send + Sync>, ForeignWrite);

const CELL: &str = "contract-cell";

fn now() -> DateTime<Utc> {
    crate::clock::parse("2026-12-01T10:00:00Z").unwrap_or_default()
}

fn doc(v: serde_json::Value) -> Doc {
    match v {
        serde_json::Value::Object(map) => Doc::from_map(map),
        _ => Doc::default(),
    }
}

fn new_cell(store: &dyn Store) {
    let cell = doc(json!({ "cell_id": CELL, "status": "active" }));
    store
        .create_cell(CELL, &[(FileKey::Cell, cell)], &[], now())
        .expect("create the cell");
}

fn event(kind: EventKind) -> NewEvent {
    NewEvent::new(Level::Info, kind, format!("{kind} happened"))
}

fn log_events(store: &dyn Store) -> Vec<events::Event> {
    let bytes = store.read_log(CELL, LogFile::Events, 0).expect("read log");
    let head = store.events_head(CELL).expect("read the head");
    assert!(
        bytes.is_empty() || head.is_some(),
        "a log pas appended to has a head"
    );
    let v = events::verify_against(&bytes, head.as_ref());
    assert_eq!(v.first_break, None, "the chain must be intact");
    assert_eq!(v.past_head, 0, "the head is the log's end");
    events::parse_all(&bytes)
}

/// Runs every check against stores made by `make`.
pub fn run_all(make: MakeStore<'_>) {
    crud_round_trip(&*make().0);
    create_never_overwrites(&*make().0);
    an_error_in_the_body_writes_nothing(&*make().0);
    writes_and_events_commit_together(&*make().0);
    let (store, foreign) = make();
    a_conflict_runs_the_body_again(&*store, &foreign);
    ready_index_follows_tasks(&*make().0);
    concurrent_claims_are_exactly_once(make().0);
    root_docs_round_trip(&*make().0);
    root_lock_makes_updates_exactly_once(make().0);
    two_revival_claims_on_one_read_commit_once(&*make().0);
}

/// A revival's claim ([`crate::ops::revive::claim_agent`]) commits only on the agent
/// document it decided on: of two claims made on the same read (two `pas watch` nodes that
/// saw the same death), exactly one commits, with its event, and the other writes nothing.
/// On a store with alive keys, a claim also fails while a supervisor holds the agent's.
pub fn two_revival_claims_on_one_read_commit_once(store: &dyn Store) {
    use crate::ops::revive::{claim_agent, Claimed};
    new_cell(store);
    let a1 = doc(json!({ "agent_id": "a1", "status": "active", "restart_count": 0 }));
    transact(store, CELL, now(), |txn| {
        txn.create(FileKey::Agent("a1"), a1.clone());
        Ok(())
    })
    .expect("create a1");
    let basis = store
        .read(CELL, FileKey::Agent("a1"))
        .expect("read")
        .expect("a1 exists");
    let claim = |basis: &Doc| {
        claim_agent(
            store,
            CELL,
            "a1",
            basis,
            now(),
            &[event(EventKind::AgentRevived)],
            &mut |a| a.restart_count += 1,
        )
        .expect("claim")
    };
    let alive = store
        .keep_alive(CELL, "a1", std::time::Duration::from_secs(2))
        .expect("keep a1 alive");
    assert_eq!(
        alive.is_some(),
        store.has_leases(),
        "a store keeps alive keys exactly when it says it has leases"
    );
    if alive.is_some() {
        assert_eq!(claim(&basis), Claimed::Alive, "a live supervisor holds it");
        drop(alive);
    }
    assert_eq!(claim(&basis), Claimed::Won);
    assert_eq!(claim(&basis), Claimed::Lost, "the same read claims once");
    let after = store
        .read(CELL, FileKey::Agent("a1"))
        .expect("read")
        .expect("a1");
    assert_eq!(after.get("restart_count"), Some(&json!(1)));
    let revived = log_events(store)
        .iter()
        .filter(|e| e.kind == EventKind::AgentRevived.to_string())
        .count();
    assert_eq!(revived, 1, "one claim, one event");
    // A claim on the new read wins again.
    assert_eq!(claim(&after), Claimed::Won);
}

/// A root document is absent until written, then reads back whole, unknown keys and
/// key order kept.
pub fn root_docs_round_trip(store: &dyn Store) {
    let key = RootDoc::Machine;
    assert!(store.read_root_doc(key).expect("read").is_none());
    let written = doc(json!({ "zz": 1, "entries": [{ "cell": "c", "job": "j" }], "aa": true }));
    {
        let _guard = store.lock_root(key.lock_name()).expect("lock");
        store.write_root_doc(key, &written).expect("write");
    }
    let read = store.read_root_doc(key).expect("read").expect("exists");
    assert_eq!(read, written);
    let keys: Vec<&String> = read.map().keys().collect();
    assert_eq!(keys, ["zz", "entries", "aa"], "key order kept");
}

/// Read-modify-write under the root lock from many threads loses no update.
pub fn root_lock_makes_updates_exactly_once(store: Arc<dyn Store + Send + Sync>) {
    let key = RootDoc::Machine;
    let (threads, rounds) = (8, 25);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    let _guard = store.lock_root(key.lock_name()).expect("lock");
                    let mut d = store.read_root_doc(key).expect("read").unwrap_or_default();
                    let n = d.get("count").and_then(|v| v.as_u64()).unwrap_or(0);
                    d.set("count", n + 1);
                    store.write_root_doc(key, &d).expect("write");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let d = store.read_root_doc(key).expect("read").expect("exists");
    assert_eq!(
        d.get("count").and_then(|v| v.as_u64()),
        Some(threads * rounds),
        "every update counted once"
    );
}

/// The ready index: rebuilt at once from the tasks a transaction read (replacing what was
/// there), kept fresh by commits that say how their tasks' entries change, stale after a
/// commit that writes a task without saying.
pub fn ready_index_follows_tasks(store: &dyn Store) {
    new_cell(store);
    transact(store, CELL, now(), |t| {
        for id in ["t1", "t2", "t3"] {
            t.create(FileKey::Task(id), doc(json!({ "task_id": id })));
        }
        Ok(())
    })
    .expect("tasks");
    assert_eq!(store.ready_index(CELL).expect("index"), ReadyIndex::Stale);
    let rebuild = |entries: &[&str]| {
        transact(store, CELL, now(), |t| {
            t.read_collection(Collection::Tasks)?;
            let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
            t.rebuild_ready(&entries)
        })
        .expect("rebuild");
    };
    let fresh_head = || match store.ready_index(CELL).expect("index") {
        ReadyIndex::Fresh { head, .. } => head.head,
        ReadyIndex::Stale => panic!("the index should be fresh"),
    };
    rebuild(&["a-t1", "b-t2"]);
    assert_eq!(
        store.ready_entries(CELL).expect("entries"),
        ["a-t1", "b-t2"]
    );
    assert_eq!(fresh_head(), ["a-t1", "b-t2"]);
    rebuild(&["b-t2", "c-t3"]);
    assert_eq!(
        store.ready_entries(CELL).expect("entries"),
        ["b-t2", "c-t3"]
    );
    // The smallest entries, and how many there are (what refills a head).
    for (k, first) in [(0, &[][..]), (1, &["b-t2"][..]), (5, &["b-t2", "c-t3"][..])] {
        assert_eq!(
            store.ready_first(CELL, k).expect("first"),
            (first.iter().map(|e| e.to_string()).collect(), 2),
            "{k}"
        );
    }
    transact(store, CELL, now(), |t| {
        let d = t.read_required(FileKey::Task("t2"))?;
        t.index_task("t2", Some("b-t2".to_string()), None)?;
        t.put(FileKey::Task("t2"), d);
        Ok(())
    })
    .expect("a commit that keeps the index");
    assert_eq!(store.ready_entries(CELL).expect("entries"), ["c-t3"]);
    assert_eq!(fresh_head(), ["c-t3"]);
    transact(store, CELL, now(), |t| {
        let d = t.read_required(FileKey::Task("t3"))?;
        t.put(FileKey::Task("t3"), d);
        Ok(())
    })
    .expect("a commit that does not");
    assert_eq!(store.ready_index(CELL).expect("index"), ReadyIndex::Stale);
}

/// Create, read, replace and remove a document, keeping fields pas does not know.
pub fn crud_round_trip(store: &dyn Store) {
    new_cell(store);
    let key = FileKey::Agent("a1");
    transact(store, CELL, now(), |t| {
        t.create(key, doc(json!({ "agent_id": "a1", "zz_unknown": [1, 2] })));
        Ok(())
    })
    .expect("create");
    let read = store.read(CELL, key).expect("read").expect("exists");
    assert_eq!(read.str("agent_id"), Some("a1"));
    assert_eq!(read.get("zz_unknown"), Some(&json!([1, 2])));
    transact(store, CELL, now(), |t| {
        let mut d = t.read_required(key)?;
        d.set("status", "active");
        t.put(key, d);
        Ok(())
    })
    .expect("update");
    let read = store.read(CELL, key).expect("read").expect("exists");
    let keys: Vec<&String> = read.map().keys().collect();
    assert_eq!(keys, ["agent_id", "zz_unknown", "status"], "key order kept");
    // Its bytes, as read-only views take them, are the same document.
    let bytes = store.read_bytes(CELL, key).expect("bytes").expect("exists");
    let parsed = store.parse_doc(CELL, key, &bytes).expect("parse");
    assert_eq!(parsed.map(), read.map());
    assert!(store
        .read_bytes(CELL, FileKey::Agent("nobody"))
        .expect("bytes")
        .is_none());
    assert_eq!(
        store.list(CELL, Collection::Agents).expect("list"),
        ["a1".to_string()]
    );
    transact(store, CELL, now(), |t| {
        t.remove(key);
        Ok(())
    })
    .expect("remove");
    assert!(store.read(CELL, key).expect("read").is_none());
    assert!(store.read_bytes(CELL, key).expect("bytes").is_none());
}

/// A create of an existing document is a conflict and changes nothing.
pub fn create_never_overwrites(store: &dyn Store) {
    new_cell(store);
    let key = FileKey::Task("t1");
    transact(store, CELL, now(), |t| {
        t.create(key, doc(json!({ "task_id": "t1", "title": "first" })));
        Ok(())
    })
    .expect("first create");
    let err = transact(store, CELL, now(), |t| {
        t.create(key, doc(json!({ "task_id": "t1", "title": "second" })));
        t.event(event(EventKind::TaskAdded));
        Ok(())
    })
    .expect_err("the second create must fail");
    assert_eq!(err.kind, Kind::Conflict, "{}", err.message);
    let read = store.read(CELL, key).expect("read").expect("exists");
    assert_eq!(read.str("title"), Some("first"));
    assert!(
        log_events(store).is_empty(),
        "no event for a refused create"
    );
}

/// An error returned by the body aborts: no write, no event.
pub fn an_error_in_the_body_writes_nothing(store: &dyn Store) {
    new_cell(store);
    let err = transact::<()>(store, CELL, now(), |t| {
        t.put(FileKey::Agent("a1"), doc(json!({ "agent_id": "a1" })));
        t.event(event(EventKind::AgentAdded));
        Err(Error::usage("changed my mind"))
    })
    .expect_err("the body failed");
    assert_eq!(err.kind, Kind::Usage);
    assert!(store
        .read(CELL, FileKey::Agent("a1"))
        .expect("read")
        .is_none());
    assert!(log_events(store).is_empty());
}

/// Several documents and several events: all there after the commit, chained in order.
pub fn writes_and_events_commit_together(store: &dyn Store) {
    new_cell(store);
    transact(store, CELL, now(), |t| {
        t.put(FileKey::Agent("a1"), doc(json!({ "agent_id": "a1" })));
        t.put(FileKey::Task("t1"), doc(json!({ "task_id": "t1" })));
        t.event(event(EventKind::TaskAdded));
        t.event(event(EventKind::TaskClaimed));
        Ok(())
    })
    .expect("commit");
    assert!(store
        .read(CELL, FileKey::Agent("a1"))
        .expect("read")
        .is_some());
    assert!(store
        .read(CELL, FileKey::Task("t1"))
        .expect("read")
        .is_some());
    let kinds: Vec<(u64, String)> = log_events(store)
        .into_iter()
        .map(|e| (e.seq, e.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            (1, "task.added".to_string()),
            (2, "task.claimed".to_string())
        ]
    );
}

/// A document changed between the read and the commit makes the store run the body
/// again on fresh reads; no update is lost.
pub fn a_conflict_runs_the_body_again(store: &dyn Store, foreign: &ForeignWrite) {
    new_cell(store);
    let key = FileKey::Agent("a1");
    transact(store, CELL, now(), |t| {
        t.create(key, doc(json!({ "agent_id": "a1", "count": 0 })));
        Ok(())
    })
    .expect("create");
    let runs = AtomicUsize::new(0);
    transact(store, CELL, now(), |t| {
        let mut d = t.read_required(key)?;
        if runs.fetch_add(1, Ordering::SeqCst) == 0 {
            // Another writer that does not use transactions changes the document now.
            let mut other = d.clone();
            other.set("count", 10);
            other.set("other", true);
            foreign(CELL, key, &other);
        }
        d.set("count", d.u64("count").unwrap_or(0) + 1);
        t.put(key, d);
        Ok(())
    })
    .expect("commit after the conflict");
    assert_eq!(runs.load(Ordering::SeqCst), 2, "the body ran again");
    let read = store.read(CELL, key).expect("read").expect("exists");
    assert_eq!(read.u64("count"), Some(11));
    assert_eq!(read.get("other"), Some(&json!(true)));
}

/// 20 threads claim 60 tasks: each task is claimed exactly once, each claim has its event.
pub fn concurrent_claims_are_exactly_once(store: Arc<dyn Store + Send + Sync>) {
    new_cell(&*store);
    let tasks = 60;
    transact(&*store, CELL, now(), |t| {
        for i in 0..tasks {
            let id = format!("t{i:03}");
            t.create(
                FileKey::Task(&id),
                doc(json!({ "task_id": id, "status": "pending" })),
            );
        }
        Ok(())
    })
    .expect("tasks");
    let threads: Vec<_> = (0..20)
        .map(|n| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let me = format!("agent{n}");
                let mut mine = Vec::new();
                loop {
                    let claimed = transact(&*store, CELL, now(), |t| {
                        let all = t.read_collection(Collection::Tasks)?;
                        let Some((id, mut task)) = all
                            .into_iter()
                            .filter_map(|(id, d)| d.ok().map(|d| (id, d)))
                            .find(|(_, d)| d.str("status") == Some("pending"))
                        else {
                            return Ok(None);
                        };
                        task.set("status", "in_progress");
                        task.set("claimed_by", me.as_str());
                        t.put(FileKey::Task(&id), task);
                        t.event(event(EventKind::TaskClaimed).task(&id).agent(&me));
                        Ok(Some(id))
                    })
                    .expect("claim");
                    match claimed {
                        Some(id) => mine.push(id),
                        None => return mine,
                    }
                }
            })
        })
        .collect();
    let mut all: Vec<String> = threads
        .into_iter()
        .flat_map(|h| h.join().expect("thread"))
        .collect();
    all.sort();
    let expected: Vec<String> = (0..tasks).map(|i| format!("t{i:03}")).collect();
    assert_eq!(all, expected, "every task claimed exactly once");
    let events = log_events(&*store);
    let mut claimed: Vec<String> = events.into_iter().filter_map(|e| e.task).collect();
    claimed.sort();
    assert_eq!(claimed, expected, "one event per claim");
    for (id, d) in store
        .read_collection(CELL, Collection::Tasks)
        .expect("read")
    {
        let d = d.expect("readable");
        assert_eq!(d.str("status"), Some("in_progress"), "{id}");
    }
}
