//! The etcd store's client side (built with the `etcd` feature only): see the module's
//! documentation in `mod.rs` for the key layout and how a commit works.

use std::cell::Cell;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, GetResponse, KeyValue,
    PutOptions, Txn as EtcdTxn, TxnOp, TxnOpResponse, TxnResponse,
};
use serde::{Deserialize, Serialize};

use super::url::{EtcdUrl, PASSWORD_ENV};

#[path = "blobs.rs"]
mod blobs;
#[path = "copy.rs"]
mod copy;
use super::{ALIVE_DIR, NODES_DIR, STORE_ENV};
use crate::doc::Doc;
use crate::error::{Error, Kind, Result};
use crate::store::changes::{self, ChangeFeed};
use crate::store::events::{self, NewEvent};
use crate::store::layout::{check_id, Collection, FileKey, IdKind, LockKey, LogFile, RootDoc};
use crate::store::ready::{Head as ReadyHead, ReadyIndex};
use crate::store::txn::{self, CommitError, Expect, Op, Revision, Txn};
use crate::store::{
    CellListing, CheckpointFiles, FsStore, LockGuard, LogChunk, LogSegment, Origin, RevisionedDocs,
    RootOddity, Store, Workspace,
};
use blobs::BlobDir;

/// How long one request may take before it is given up (and, for a commit, sent again).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a request is retried while the cluster has no leader or does not answer:
/// past this a command says so (exit 10) instead of waiting.
const AVAILABILITY_WAIT: Duration = Duration::from_secs(4);
/// How long a commit's token is kept: far longer than any retry of its commit.
const TOKEN_TTL_SECONDS: i64 = 600;

thread_local! {
    /// The etcd revision of the first read of the transaction running on this thread (0:
    /// none yet): a rebuild of the ready index from those reads is kept only if no task
    /// changed since.
    static TXN_START: Cell<i64> = const { Cell::new(0) };
}

/// The events head as kept in etcd: the file store's head plus the last line, so a commit
/// chains onto it with one read.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredHead {
    #[serde(flatten)]
    head: events::Head,
    last: Option<String>,
}

/// A store on an etcd cluster, with a local directory for logs and checkpoints.
pub struct EtcdStore {
    url: EtcdUrl,
    rt: tokio::runtime::Runtime,
    /// The connection; replaced when a member does not know its auth token
    /// ([`stale_token`]).
    client: std::sync::Mutex<Client>,
    blobs: FsStore,
    /// Checkpoints' files, content-addressed (their manifests are in etcd).
    blob_dir: BlobDir,
    commits: AtomicUsize,
    lease: OnceLock<i64>,
    lock_wait: Duration,
    availability_wait: Duration,
    /// Set once a request ran out of [`Self::availability_wait`]: later requests of this
    /// command try once, so a command of many requests says "no quorum" within one wait.
    gave_up: std::sync::atomic::AtomicBool,
    /// What the request that used up the wait was told: said again by the later ones.
    unavailable: std::sync::Mutex<Option<Error>>,
    /// How [`Client::connect`] was called: a lease keeper connects again on its own thread
    /// (a client's channel is served by the runtime that made it).
    connect: ConnectOptions,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("url", &self.url.display())
            .finish()
    }
}

impl EtcdStore {
    /// Connects to the cluster `url` names; `blobs` is the local directory for logs,
    /// checkpoints and locks. Nothing is sent until the first request.
    pub fn open(url: &EtcdUrl, blobs: impl Into<PathBuf>) -> Result<EtcdStore> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::failure(format!("cannot start the etcd client: {e}")))?;
        let mut options = ConnectOptions::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_require_leader(true);
        if url.tls {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &url.ca {
                let pem = read_pem(ca, "CA certificate")?;
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(pem));
            }
            if let Some((cert, key)) = &url.identity {
                let cert = read_pem(cert, "client certificate")?;
                let key = read_pem(key, "client key")?;
                tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
            }
            options = options.with_tls(tls);
        }
        if let Some(user) = &url.user {
            let password = std::env::var(PASSWORD_ENV).map_err(|_| {
                Error::usage(format!(
                    "store {} names user {user} but ${PASSWORD_ENV} is not set",
                    url.display()
                ))
                .hint(format!(
                    "export {PASSWORD_ENV}=... (the etcd user's password)"
                ))
            })?;
            options = options.with_user(user.clone(), password);
        }
        let endpoints = url.endpoints();
        let connect = options.clone();
        let client = rt
            .block_on(async {
                tokio::time::timeout(
                    AVAILABILITY_WAIT,
                    Client::connect(&endpoints, Some(options)),
                )
                .await
            })
            .map_err(|_| unreachable_error(url, "did not answer in time"))?
            .map_err(|e| classify(url, &e))?;
        let blobs: PathBuf = blobs.into();
        Ok(EtcdStore {
            url: url.clone(),
            rt,
            client: std::sync::Mutex::new(client),
            blob_dir: BlobDir::new(&blobs, url.blobs.as_deref()),
            blobs: FsStore::new(blobs),
            commits: AtomicUsize::new(0),
            lease: OnceLock::new(),
            lock_wait: Duration::from_secs(10),
            availability_wait: AVAILABILITY_WAIT,
            gave_up: std::sync::atomic::AtomicBool::new(false),
            unavailable: std::sync::Mutex::new(None),
            connect,
        })
    }

    /// How long a transaction keeps retrying conflicts, and operation locks wait.
    pub fn with_lock_wait(mut self, wait: Duration) -> EtcdStore {
        self.blobs = self.blobs.with_lock_wait(wait);
        self.lock_wait = wait;
        self
    }

    /// How long requests are retried while the cluster has no leader or does not answer.
    pub fn with_availability_wait(mut self, wait: Duration) -> EtcdStore {
        self.availability_wait = wait;
        self.answered();
        self
    }

    /// Sets the root-wide policy layer (from `pas.toml`).
    pub fn with_root_policies(
        mut self,
        policies: serde_json::Map<String, serde_json::Value>,
    ) -> EtcdStore {
        self.blobs = self.blobs.with_root_policies(policies);
        self
    }

    /// The URL this store was opened with (no password in it).
    pub fn url(&self) -> &EtcdUrl {
        &self.url
    }

    /// The local directory for logs, checkpoints and locks.
    pub fn blob_root(&self) -> &Path {
        self.blobs.root()
    }

    fn p(&self) -> &str {
        &self.url.prefix
    }

    fn cell_id_key(&self, cell: &str) -> String {
        format!("{}/cell-ids/{cell}", self.p())
    }

    fn cell_prefix(&self, cell: &str) -> String {
        format!("{}/cells/{cell}/", self.p())
    }

    /// Where the alive keys of a cell's supervisors live (`cells/<cell>/alive/`).
    fn alive_prefix(&self, cell: &str) -> String {
        format!("{}{ALIVE_DIR}/", self.cell_prefix(cell))
    }

    /// Where the hosts that run a watch keep their keys (`nodes/`).
    fn nodes_prefix(&self) -> String {
        format!("{}/{NODES_DIR}/", self.p())
    }

    fn doc_key(&self, cell: &str, key: FileKey<'_>) -> String {
        format!("{}{}", self.cell_prefix(cell), key.relative())
    }

    fn meta_key(&self, cell: &str, name: &str) -> String {
        format!("{}.pas/{name}", self.cell_prefix(cell))
    }

    fn event_key(&self, cell: &str, seq: u64) -> String {
        self.meta_key(cell, &format!("events/{seq:020}"))
    }

    /// What a key is, for messages: the URL's members and the key.
    fn describe_key(&self, key: &str) -> String {
        format!("etcd://{}/{key}", self.url.members.join(","))
    }

    /// Until when a request is retried while the cluster is unavailable: the availability
    /// wait, or no retry once a request of this command has used it up.
    fn availability_deadline(&self) -> Instant {
        if self.gave_up.load(Ordering::SeqCst) {
            Instant::now()
        } else {
            Instant::now() + self.availability_wait
        }
    }

    /// Records that a request used up the availability wait with `err`; returns what to
    /// say: a member's "no leader" once one said it (a dead member's silence says less).
    fn give_up(&self, err: Error) -> Error {
        self.gave_up.store(true, Ordering::SeqCst);
        let Ok(mut said) = self.unavailable.lock() else {
            return err;
        };
        match &*said {
            Some(e) if !err.message.contains(NO_QUORUM) => Error {
                message: e.message.clone(),
                hint: e.hint.clone(),
                ..err
            },
            _ => {
                *said = Some(err.clone());
                err
            }
        }
    }

    /// The cluster answered: requests wait for it again.
    fn answered(&self) {
        if self.gave_up.swap(false, Ordering::SeqCst) {
            if let Ok(mut said) = self.unavailable.lock() {
                *said = None;
            }
        }
    }

    /// The connection requests go through (a cheap clone).
    fn client(&self) -> Client {
        match self.client.lock() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Connects again, authenticating anew (a member that became leader, or that the client
    /// moved to, does not know the token another member gave: etcd's simple tokens are
    /// per member). True when it did; the request is then sent again (a request refused
    /// for its token was not applied).
    fn reauthenticate(&self) -> bool {
        let endpoints = self.url.endpoints();
        let options = self.connect.clone();
        let fresh = self.rt.block_on(async {
            tokio::time::timeout(REQUEST_TIMEOUT, Client::connect(&endpoints, Some(options))).await
        });
        match (fresh, self.client.lock()) {
            (Ok(Ok(c)), Ok(mut held)) => {
                *held = c;
                true
            }
            _ => false,
        }
    }

    /// Whether to send a request again after `e`: it was refused for a token this member
    /// does not know, no new one was sought yet in this request (`renewed`, set here), and
    /// one was had now. One try per request: a member that keeps refusing fresh tokens
    /// is reported, not retried until the deadline.
    fn renew_token(&self, e: &etcd_client::Error, renewed: &mut bool) -> bool {
        if !stale_token(e) || *renewed {
            return false;
        }
        *renewed = true;
        self.reauthenticate()
    }

    /// Runs one request with a bounded wait, retrying while the cluster has no leader or
    /// cannot be reached; reads and refused writes are safe to send again.
    fn request<T, F, Fut>(&self, mut make: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = self.availability_deadline();
        let mut quorum: Option<Error> = None;
        let mut renewed = false;
        loop {
            let fut = make(self.client());
            let answer = self
                .rt
                .block_on(async { tokio::time::timeout(REQUEST_TIMEOUT, fut).await });
            let err = match answer {
                Ok(Ok(v)) => {
                    self.answered();
                    return Ok(v);
                }
                Ok(Err(e)) if self.renew_token(&e, &mut renewed) => continue,
                Ok(Err(e)) => classify(&self.url, &e),
                Err(_) => unreachable_error(&self.url, "did not answer in time"),
            };
            if err.kind != Kind::Unavailable {
                return Err(err);
            }
            // A live member saying there is no leader says more than a dead one's silence.
            if err.message.contains(NO_QUORUM) || quorum.is_none() {
                quorum = Some(err);
            }
            if Instant::now() >= deadline {
                let err = quorum.unwrap_or_else(|| unreachable_error(&self.url, "did not answer"));
                return Err(self.give_up(err));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn get(&self, key: String, options: Option<GetOptions>) -> Result<GetResponse> {
        let resp = self.request(|mut c| {
            let key = key.clone();
            let options = options.clone();
            async move { c.get(key, options).await }
        })?;
        note_revision(resp.header().map(|h| h.revision()));
        Ok(resp)
    }

    fn get_prefix(&self, prefix: String) -> Result<Vec<KeyValue>> {
        let mut resp = self.get(prefix, Some(GetOptions::new().with_prefix()))?;
        Ok(resp.take_kvs())
    }

    /// The names of the keys under `prefix` (what follows it), in key order.
    fn names_under(&self, prefix: String) -> Result<Vec<String>> {
        let mut resp = self.get(
            prefix.clone(),
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )?;
        Ok(resp
            .take_kvs()
            .iter()
            .filter_map(|kv| {
                let name = kv.key().strip_prefix(prefix.as_bytes())?;
                Some(String::from_utf8_lossy(name).into_owned())
            })
            .collect())
    }

    /// The ids of the `<id>.json` documents under `prefix`, sorted.
    fn ids_under(&self, prefix: String, suffix: &str) -> Result<Vec<String>> {
        let mut ids: Vec<String> = self
            .names_under(prefix)?
            .into_iter()
            .filter_map(|name| {
                let id = name.strip_suffix(suffix)?;
                crate::store::layout::is_valid_id(id).then(|| id.to_string())
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Keeps `key` (valued with this host's name) bound to a lease of `ttl` while the
    /// guard lives ([`super::lease::Keeper`]).
    fn keep_key(&self, key: String, ttl: Duration) -> Result<Option<crate::store::AliveGuard>> {
        // etcd rounds a lease below its election timeout up; whole seconds, at least 2.
        let ttl = ttl.as_secs_f64().ceil().clamp(2.0, 1e9) as i64;
        let keeper = super::lease::Keeper {
            endpoints: self.url.endpoints(),
            options: self.connect.clone(),
            key,
            value: crate::host::name(),
            ttl,
        };
        match keeper.start(self.availability_wait) {
            Ok(alive) => Ok(Some(Box::new(alive))),
            Err(Some(e)) => Err(classify(&self.url, &e)),
            Err(None) => Err(unreachable_error(&self.url, "did not answer in time")),
        }
    }

    fn get_one(&self, key: String) -> Result<Option<KeyValue>> {
        let mut resp = self.get(key, None)?;
        Ok(resp.take_kvs().into_iter().next())
    }

    /// Sends a transaction that writes nothing unless its compares hold and that is safe to
    /// repeat (creates and removals that compare what they change).
    fn send(&self, txn: EtcdTxn) -> Result<TxnResponse> {
        self.request(|mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .map_err(|e| self.too_many_ops(e))
    }

    fn too_many_ops(&self, e: Error) -> Error {
        if e.message.contains("too many operations") {
            Error::failure(format!(
                "etcd at {} refused a transaction with more operations than its --max-txn-ops allows",
                self.url.members.join(",")
            ))
            .hint("start the members with --max-txn-ops 10000 (docs/etcd.md)")
        } else {
            e
        }
    }

    /// The lease that keeps this process's commit tokens for [`TOKEN_TTL_SECONDS`].
    fn token_lease(&self) -> Result<i64> {
        if let Some(id) = self.lease.get() {
            return Ok(*id);
        }
        let resp =
            self.request(|mut c| async move { c.lease_grant(TOKEN_TTL_SECONDS, None).await })?;
        Ok(*self.lease.get_or_init(|| resp.id()))
    }

    /// Sends a commit carrying `token_key`. A request whose answer is lost may have been
    /// applied: it is sent again (its compare on the token makes it apply at most once)
    /// until etcd answers or the wait runs out, when the outcome is unknown and the error
    /// says how to find it out.
    fn send_commit(&self, txn: EtcdTxn, token_key: &str) -> Result<TxnResponse> {
        let deadline = self.availability_deadline();
        let mut uncertain = false;
        let mut quorum: Option<Error> = None;
        let mut renewed = false;
        loop {
            let fut = {
                let mut c = self.client();
                let txn = txn.clone();
                async move { c.txn(txn).await }
            };
            let answer = self
                .rt
                .block_on(async { tokio::time::timeout(REQUEST_TIMEOUT, fut).await });
            let err = match answer {
                Ok(Ok(resp)) => {
                    self.answered();
                    return Ok(resp);
                }
                // Refused for its token before it was proposed: send it again.
                Ok(Err(e)) if self.renew_token(&e, &mut renewed) => continue,
                Ok(Err(e)) => {
                    let err = self.too_many_ops(classify(&self.url, &e));
                    // A refusal for want of a leader happens before the request is
                    // proposed, and a refused connection sends nothing; anything else at
                    // the transport may have been applied.
                    if !never_sent(&e) && err.kind == Kind::Unavailable {
                        uncertain = true;
                    }
                    err
                }
                Err(_) => {
                    uncertain = true;
                    unreachable_error(&self.url, "did not answer in time")
                }
            };
            if err.kind != Kind::Unavailable {
                return Err(err.outcome(false));
            }
            if err.message.contains(NO_QUORUM) || quorum.is_none() {
                quorum = Some(err);
            }
            if Instant::now() >= deadline {
                let err = self.give_up(
                    quorum.unwrap_or_else(|| unreachable_error(&self.url, "did not answer")),
                );
                if uncertain {
                    return Err(Error {
                        message: format!(
                            "etcd at {} did not answer whether the change was made",
                            self.url.members.join(",")
                        ),
                        committed: None,
                        ..err
                    }
                    .hint(format!(
                        "once the cluster answers, `etcdctl get {token_key}` prints the key if the change was made (kept 10 minutes); `pas events` shows it too"
                    )));
                }
                return Err(Error {
                    committed: Some(false),
                    ..err
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Makes the local directory of `cell` (logs, checkpoints, locks) exist.
    fn blob_cell(&self, cell: &str) -> Result<()> {
        check_id(IdKind::Cell, cell)?;
        let dir = self.blobs.root().join(cell);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))
    }

    fn parse_kv(&self, cell: &str, key: FileKey<'_>, kv: &KeyValue) -> Result<Doc> {
        self.parse_doc(cell, key, kv.value())
    }

    /// The events head and its mod revision (0: no head yet).
    fn stored_head(&self, cell: &str) -> Result<(Option<StoredHead>, i64)> {
        let key = self.meta_key(cell, "events-head");
        match self.get_one(key.clone())? {
            None => Ok((None, 0)),
            Some(kv) => {
                let head: StoredHead = serde_json::from_slice(kv.value()).map_err(|e| {
                    Error::data(format!(
                        "{} is not a readable events head ({e})",
                        self.describe_key(&key)
                    ))
                })?;
                Ok((Some(head), kv.mod_revision()))
            }
        }
    }

    /// The documents of a collection as `(id, key value)`, sorted by id.
    fn collection(&self, cell: &str, what: Collection) -> Result<Vec<(String, KeyValue)>> {
        check_id(IdKind::Cell, cell)?;
        let prefix = format!("{}{}/", self.cell_prefix(cell), what.dir());
        let kvs = self.get_prefix(prefix.clone())?;
        let mut out: Vec<(String, KeyValue)> = kvs
            .into_iter()
            .filter_map(|kv| {
                let name = kv.key().strip_prefix(prefix.as_bytes())?;
                let id = std::str::from_utf8(name).ok()?.strip_suffix(".json")?;
                let id = crate::store::layout::is_valid_id(id).then(|| id.to_string())?;
                Some((id, kv))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The bytes of the events log: its lines in order, each with its newline.
    fn events_log(&self, cell: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for kv in self.get_prefix(self.meta_key(cell, "events/"))? {
            out.extend_from_slice(kv.value());
            out.push(b'\n');
        }
        Ok(out)
    }

    /// Commits a change set in one etcd transaction. When only the events head moved (a
    /// concurrent commit appended events) the events are chained again onto the new head
    /// and the commit is sent again without running the body: what the body read still
    /// holds.
    fn commit(&self, cell: &str, cs: txn::ChangeSet) -> std::result::Result<(), Retry> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let token_key = format!("{}/commits/{token}", self.p());
        let lease = self.token_lease()?;
        let cell_key = self.doc_key(cell, FileKey::Cell);
        let keys_only = || Some(GetOptions::new().with_keys_only());
        let mut when = vec![
            Compare::version(cell_key.clone(), CompareOp::Greater, 0),
            Compare::version(token_key.clone(), CompareOp::Equal, 0),
        ];
        let mut ops = vec![TxnOp::put(
            token_key.clone(),
            cell,
            Some(PutOptions::new().with_lease(lease)),
        )];
        let ready_head_key = self.meta_key(cell, "ready-head");
        let mut checks = vec![
            TxnOp::get(cell_key, keys_only()),
            TxnOp::get(token_key.clone(), keys_only()),
            TxnOp::get(ready_head_key.clone(), keys_only()),
            TxnOp::get(self.meta_key(cell, "tasks-gen"), keys_only()),
        ];
        let mut expected = Vec::new();
        for w in &cs.writes {
            let k = self.doc_key(cell, w.key.file_key());
            if let Expect::Revision(r) = w.expect {
                when.push(match r.number() {
                    None => Compare::version(k.clone(), CompareOp::Equal, 0),
                    Some(n) => Compare::mod_revision(k.clone(), CompareOp::Equal, n as i64),
                });
                checks.push(TxnOp::get(k.clone(), keys_only()));
                expected.push((k.clone(), r));
            }
            ops.push(match &w.op {
                Op::Put(doc) => {
                    let bytes = doc.to_bytes();
                    blobs::check_value(&self.describe_key(&k), bytes.len())?;
                    TxnOp::put(k, bytes, None)
                }
                Op::Remove => TxnOp::delete(k, None),
            });
        }
        // No supervisor anywhere may hold these agents' alive keys (a revival's claim).
        for agent in &cs.not_alive {
            let k = format!("{}{agent}", self.alive_prefix(cell));
            when.push(Compare::version(k.clone(), CompareOp::Equal, 0));
            checks.push(TxnOp::get(k, keys_only()));
        }
        let ready = &cs.ready;
        let gen_key = self.meta_key(cell, "tasks-gen");
        let ready_version = ready.version.filter(|_| ready.kept);
        if ready.kept {
            if let Some(v) = ready_version {
                when.push(Compare::mod_revision(
                    ready_head_key.clone(),
                    CompareOp::Equal,
                    v as i64,
                ));
                when.push(Compare::mod_revision(
                    gen_key,
                    CompareOp::Less,
                    v as i64 + 1,
                ));
            }
            for (name, present) in &ready.entries {
                let k = self.meta_key(cell, &format!("ready/{name}"));
                ops.push(if *present {
                    TxnOp::put(k, "", None)
                } else {
                    TxnOp::delete(k, None)
                });
            }
            if let Some(h) = &ready.head {
                ops.push(TxnOp::put(ready_head_key, to_json(h), None));
            }
        } else if ready.tasks_written {
            ops.push(TxnOp::put(gen_key, "", None));
        }
        let deadline = Instant::now() + self.lock_wait.max(Duration::from_secs(1));
        loop {
            let (mut when, mut ops) = (when.clone(), ops.clone());
            if !cs.events.is_empty() {
                let (stored, head_rev) = self.stored_head(cell)?;
                when.push(Compare::mod_revision(
                    self.meta_key(cell, "events-head"),
                    CompareOp::Equal,
                    head_rev,
                ));
                let (head, last) = match stored {
                    Some(s) => (s.head, s.last),
                    None => (
                        events::Head {
                            seq: 0,
                            hash: events::GENESIS.to_string(),
                            size: 0,
                        },
                        None,
                    ),
                };
                let lines = events::chain(&cs.events, last.as_deref().map(str::as_bytes), cs.now);
                ops.extend(self.event_ops(cell, &lines, head)?);
            }
            let txn = EtcdTxn::new()
                .when(when)
                .and_then(ops)
                .or_else(checks.clone());
            let resp = self.send_commit(txn, &token_key)?;
            if resp.succeeded() {
                return Ok(());
            }
            let found: Vec<Option<i64>> = resp
                .op_responses()
                .into_iter()
                .map(|r| match r {
                    TxnOpResponse::Get(g) => g.kvs().first().map(KeyValue::mod_revision),
                    _ => None,
                })
                .collect();
            if found.first() == Some(&None) {
                return Err(Retry::Failed(Error::not_found(format!(
                    "cell {cell} does not exist ({})",
                    self.describe_key(&self.cell_id_key(cell))
                ))));
            }
            if found.get(1).is_some_and(Option::is_some) {
                // An earlier send of this very commit was applied; its answer was lost.
                return Ok(());
            }
            for ((key, r), now) in expected.iter().zip(found.iter().skip(4)) {
                let same = match (r.number(), now) {
                    (None, None) => true,
                    (Some(n), Some(m)) => n as i64 == *m,
                    _ => false,
                };
                if !same {
                    let what = self.describe_key(key);
                    return Err(match (r.exists(), now.is_some()) {
                        (false, true) => Retry::Conflict(format!("{what} already exists"), true),
                        (true, false) => Retry::Conflict(format!("{what} was removed"), false),
                        _ => Retry::Conflict(what, false),
                    });
                }
            }
            let alive = found.iter().skip(4 + expected.len());
            if let Some((agent, _)) = cs.not_alive.iter().zip(alive).find(|(_, k)| k.is_some()) {
                return Err(Retry::Conflict(
                    format!("agent {agent}'s alive key (its supervisor lives)"),
                    false,
                ));
            }
            let ready_moved = ready_version.is_some_and(|v| {
                found.get(2).copied().flatten() != Some(v as i64)
                    || found.get(3).copied().flatten().unwrap_or(0) > v as i64
            });
            if ready_moved || cs.events.is_empty() || Instant::now() >= deadline {
                // The ready index changed (or a tasks-gen bump made it stale): the body
                // decides again on it.
                return Err(Retry::Conflict(
                    format!("the events log or ready index of cell {cell}"),
                    false,
                ));
            }
            // Another commit appended events: chain onto it after a short random pause.
            let ms = uuid::Uuid::new_v4().as_u128() % 4;
            std::thread::sleep(Duration::from_millis(ms as u64));
        }
    }

    /// The puts of event `lines` chained after `head`, and of the new head.
    fn event_ops(&self, cell: &str, lines: &[String], head: events::Head) -> Result<Vec<TxnOp>> {
        let mut ops = Vec::with_capacity(lines.len() + 1);
        let mut seq = head.seq;
        for line in lines {
            seq += 1;
            ops.push(TxnOp::put(self.event_key(cell, seq), line.as_str(), None));
        }
        let stored = StoredHead {
            head: events::head_after(lines, head.size, head),
            last: lines.last().cloned(),
        };
        ops.push(TxnOp::put(
            self.meta_key(cell, "events-head"),
            to_json(&stored),
            None,
        ));
        Ok(ops)
    }

    fn committed(&self) {
        self.commits.fetch_add(1, Ordering::SeqCst);
    }

    /// Writes a document's bytes without a transaction, as another program would (tests).
    #[cfg(test)]
    pub(crate) fn put_raw(&self, cell: &str, key: FileKey<'_>, bytes: Vec<u8>) -> Result<()> {
        let k = self.doc_key(cell, key);
        self.request(|mut c| {
            let (k, bytes) = (k.clone(), bytes.clone());
            async move { c.put(k, bytes, None).await }
        })
        .map(|_| ())
    }
}

/// Why a commit did not happen: run the body again, or give up.
enum Retry {
    /// A document changed (`true`: one the body meant to create exists, which running the
    /// body again rarely changes, so it is tried a few times only).
    Conflict(String, bool),
    /// Report this.
    Failed(Error),
}

impl From<Error> for Retry {
    fn from(e: Error) -> Self {
        Retry::Failed(e)
    }
}

impl From<Retry> for CommitError {
    fn from(r: Retry) -> Self {
        match r {
            Retry::Conflict(what, _) => CommitError::Conflict(what),
            Retry::Failed(e) => CommitError::Failed(e),
        }
    }
}

fn to_json<T: Serialize>(v: &T) -> String {
    // Serialising plain data cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::usage(format!(
            "cannot read the etcd {what} {}: {e}",
            path.display()
        ))
        .hint("fix the path in the store URL (ca=, cert=, key=)")
    })
}

/// Records the revision of a read for the running transaction.
fn note_revision(revision: Option<i64>) {
    if let Some(r) = revision {
        TXN_START.with(|s| {
            if s.get() == 0 {
                s.set(r);
            }
        });
    }
}

fn is_no_leader(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("no leader"))
}

/// What the error for a cluster without a leader says.
const NO_QUORUM: &str = "has no quorum; nothing was written";

/// Whether the request certainly never reached etcd's log: refused for want of a leader,
/// or its connection was refused.
fn never_sent(e: &etcd_client::Error) -> bool {
    let chain = format!("{e:?}");
    is_no_leader(e) || chain.contains("Connection refused") || chain.contains("ConnectError")
}

/// Whether etcd refused a request because the member does not know the auth token the
/// client holds (a token another member gave: etcd's simple tokens are per member, so a
/// client moved to another member, as after a leader's death, must authenticate again).
pub(super) fn stale_token(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("invalid auth token"))
}

fn unreachable_error(url: &EtcdUrl, why: &str) -> Error {
    Error::new(
        Kind::Unavailable,
        format!(
            "etcd at {} {why}; nothing was written",
            url.members.join(",")
        ),
    )
    .hint("check the members: etcdctl --endpoints=... endpoint health (docs/etcd.md)")
}

/// The pas error for an etcd client error.
fn classify(url: &EtcdUrl, e: &etcd_client::Error) -> Error {
    // gRPC status codes (tonic::Code): 4 deadline exceeded, 7 permission denied,
    // 10 aborted, 14 unavailable, 16 unauthenticated.
    match e {
        etcd_client::Error::GRpcStatus(s) => match i32::from(s.code()) {
            _ if is_no_leader(e) => Error::new(
                Kind::Unavailable,
                format!("etcd at {} {NO_QUORUM}", url.members.join(",")),
            )
            .hint("bring a majority of the members back; pas retried for a few seconds"),
            4 | 10 | 14 | 1 => {
                unreachable_error(url, &format!("cannot be used ({})", s.message()))
            }
            // tonic reports a broken connection as an unknown status.
            2 if s.message().contains("transport") => {
                unreachable_error(url, &format!("cannot be used ({})", s.message()))
            }
            7 | 16 => Error::new(
                Kind::Denied,
                format!(
                    "etcd at {} refused pas: {}",
                    url.members.join(","),
                    s.message()
                ),
            )
            .hint(format!(
                "give the user of the store URL (user=) access to the prefix, with ${PASSWORD_ENV} set"
            )),
            _ => Error::failure(format!(
                "etcd at {} failed: {}",
                url.members.join(","),
                s.message()
            )),
        },
        etcd_client::Error::TransportError(t) => {
            unreachable_error(url, &format!("cannot be reached ({t})"))
        }
        etcd_client::Error::IoError(io) => {
            unreachable_error(url, &format!("cannot be reached ({io})"))
        }
        other => Error::failure(format!("etcd at {}: {other}", url.members.join(","))),
    }
}

impl Store for EtcdStore {
    fn location(&self) -> String {
        self.url.display()
    }

    fn describe(&self, cell: &str, key: FileKey<'_>) -> String {
        self.describe_key(&self.doc_key(cell, key))
    }

    fn describe_cell(&self, cell: &str) -> String {
        self.describe_key(self.cell_prefix(cell).trim_end_matches('/'))
    }

    fn describe_log(&self, cell: &str, log: LogFile<'_>) -> String {
        match log {
            LogFile::Events | LogFile::Mission => {
                self.describe_key(&self.meta_key(cell, "events/"))
            }
            _ => self.blobs.describe_log(cell, log),
        }
    }

    fn describe_summary(&self, cell: &str, agent: &str, name: &str) -> String {
        self.blobs.describe_summary(cell, agent, name)
    }

    fn describe_checkpoint(&self, cell: &str, agent: &str, generation: u64) -> String {
        self.describe_key(&self.checkpoint_key(cell, agent, generation))
    }

    fn workspace(&self, cell: &str, agent: Option<&str>) -> Result<Workspace> {
        self.blob_cell(cell)?;
        let mut ws = self.blobs.workspace(cell, agent)?;
        let url = self.url.display();
        ws.store_args = vec![
            "--store".into(),
            url.clone().into(),
            "--root".into(),
            self.blobs.root().as_os_str().to_os_string(),
        ];
        ws.env.retain(|(k, _)| k != STORE_ENV);
        ws.env.push((STORE_ENV.to_string(), url.into()));
        Ok(ws)
    }

    /// One etcd watch on the prefix ([`super::feed`]), on a thread and connection of its
    /// own; polling while its stream is down.
    fn changes(&self, sink: changes::Sink) -> Box<dyn ChangeFeed> {
        let target = super::feed::Target {
            endpoints: self.url.endpoints(),
            options: self.connect.clone(),
            prefix: self.url.prefix.clone(),
        };
        Box::new(super::feed::Feed::start(
            target,
            sink,
            self.availability_wait,
        ))
    }

    fn commits(&self) -> usize {
        self.commits.load(Ordering::SeqCst)
    }

    fn root_policies(&self) -> &serde_json::Map<String, serde_json::Value> {
        self.blobs.root_policies()
    }

    fn cell_ids(&self) -> Result<Vec<String>> {
        self.ids_under(format!("{}/cell-ids/", self.p()), "")
    }

    fn check_root(&self) -> Result<()> {
        self.get(
            format!("{}/cell-ids/", self.p()),
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .map(|_| ())
    }

    fn has_cell(&self, cell: &str) -> bool {
        check_id(IdKind::Cell, cell).is_ok()
            && self
                .get(
                    self.cell_id_key(cell),
                    Some(GetOptions::new().with_count_only()),
                )
                .is_ok_and(|r| r.count() > 0)
    }

    fn create_cell(
        &self,
        cell: &str,
        files: &[(FileKey<'_>, Doc)],
        new_events: &[NewEvent],
        now: DateTime<Utc>,
    ) -> Result<()> {
        check_id(IdKind::Cell, cell)?;
        let id_key = self.cell_id_key(cell);
        let cell_key = self.doc_key(cell, FileKey::Cell);
        let mut ops = vec![TxnOp::put(id_key.clone(), "", None)];
        for (key, doc) in files {
            ops.push(TxnOp::put(self.doc_key(cell, *key), doc.to_bytes(), None));
        }
        if !new_events.is_empty() {
            let lines = events::chain(new_events, None, now);
            let genesis = events::Head {
                seq: 0,
                hash: events::GENESIS.to_string(),
                size: 0,
            };
            ops.extend(self.event_ops(cell, &lines, genesis)?);
        }
        // Creating is safe to send again: it compares that neither key exists.
        let txn = EtcdTxn::new()
            .when(vec![
                Compare::version(id_key, CompareOp::Equal, 0),
                Compare::version(cell_key, CompareOp::Equal, 0),
            ])
            .and_then(ops);
        let resp = self.send(txn)?;
        if !resp.succeeded() {
            return Err(Error::conflict(format!(
                "cell {cell} already exists ({})",
                self.describe_cell(cell)
            )));
        }
        self.committed();
        self.blob_cell(cell)
    }

    fn remove_cell(&self, cell: &str) -> Result<()> {
        check_id(IdKind::Cell, cell)?;
        let id_key = self.cell_id_key(cell);
        let txn = EtcdTxn::new()
            .when(vec![Compare::version(
                id_key.clone(),
                CompareOp::Greater,
                0,
            )])
            .and_then(vec![
                TxnOp::delete(id_key, None),
                TxnOp::delete(
                    self.cell_prefix(cell),
                    Some(DeleteOptions::new().with_prefix()),
                ),
            ]);
        if !self.send(txn)?.succeeded() {
            return Err(Error::not_found(format!("cell {cell} does not exist")));
        }
        self.committed();
        let dir = self.blobs.root().join(cell);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(
                "remove the logs and checkpoints of the removed cell in",
                &dir,
                e,
            )),
            _ => Ok(()),
        }
    }

    fn read(&self, cell: &str, key: FileKey<'_>) -> Result<Option<Doc>> {
        Ok(self.read_revision(cell, key)?.0)
    }

    fn read_revision(&self, cell: &str, key: FileKey<'_>) -> Result<(Option<Doc>, Revision)> {
        check_id(IdKind::Cell, cell)?;
        match self.get_one(self.doc_key(cell, key))? {
            None => Ok((None, Revision::ABSENT)),
            Some(kv) => Ok((
                Some(self.parse_kv(cell, key, &kv)?),
                Revision::of_number(kv.mod_revision() as u64),
            )),
        }
    }

    fn read_collection_revisions(&self, cell: &str, what: Collection) -> Result<RevisionedDocs> {
        Ok(self
            .collection(cell, what)?
            .into_iter()
            .map(|(id, kv)| {
                let key = match what {
                    Collection::Agents => FileKey::Agent(&id),
                    Collection::Tasks => FileKey::Task(&id),
                };
                let doc = self
                    .parse_kv(cell, key, &kv)
                    .map(|d| (d, Revision::of_number(kv.mod_revision() as u64)));
                (id, doc)
            })
            .collect())
    }

    fn transact(
        &self,
        cell: &str,
        now: DateTime<Utc>,
        body: &mut dyn FnMut(&mut Txn<'_>) -> Result<()>,
    ) -> Result<()> {
        check_id(IdKind::Cell, cell)?;
        // Contention is retried until the lock wait runs out; a create that keeps finding
        // its document there, as many times as the file store tries.
        let deadline = Instant::now() + self.lock_wait.max(Duration::from_secs(1));
        let (mut hard, mut attempt) = (0, 0u32);
        loop {
            TXN_START.with(|s| s.set(0));
            let mut t = Txn::new(self, cell, now);
            body(&mut t)?;
            let changes = t.into_changes();
            if changes.is_empty() {
                return Ok(());
            }
            let what = match self.commit(cell, changes) {
                Ok(()) => {
                    self.committed();
                    return Ok(());
                }
                Err(Retry::Failed(e)) => return Err(e),
                Err(Retry::Conflict(what, is_hard)) => {
                    hard += usize::from(is_hard);
                    what
                }
            };
            attempt += 1;
            if hard >= txn::MAX_ATTEMPTS || Instant::now() >= deadline {
                return Err(txn::conflict_error(cell, &what));
            }
            // Jittered backoff, so contending writers spread out.
            let cap = 1u128 << attempt.min(6);
            let ms = uuid::Uuid::new_v4().as_u128() % cap;
            std::thread::sleep(Duration::from_millis(ms as u64));
        }
    }

    fn list(&self, cell: &str, what: Collection) -> Result<Vec<String>> {
        check_id(IdKind::Cell, cell)?;
        self.ids_under(
            format!("{}{}/", self.cell_prefix(cell), what.dir()),
            ".json",
        )
    }

    fn ready_index(&self, cell: &str) -> Result<ReadyIndex> {
        check_id(IdKind::Cell, cell)?;
        let head_key = self.meta_key(cell, "ready-head");
        let txn = EtcdTxn::new().and_then(vec![
            TxnOp::get(head_key.clone(), None),
            TxnOp::get(self.meta_key(cell, "tasks-gen"), None),
        ]);
        let resp = self.send(txn)?;
        note_revision(resp.header().map(|h| h.revision()));
        let kvs: Vec<Option<KeyValue>> = resp
            .op_responses()
            .into_iter()
            .map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().cloned(),
                _ => None,
            })
            .collect();
        let (Some(Some(head)), Some(generation)) = (kvs.first(), kvs.get(1)) else {
            return Ok(ReadyIndex::Stale);
        };
        let gen_rev = generation.as_ref().map_or(0, KeyValue::mod_revision);
        if head.mod_revision() < gen_rev {
            return Ok(ReadyIndex::Stale);
        }
        match serde_json::from_slice::<ReadyHead>(head.value()) {
            Ok(h) => Ok(ReadyIndex::Fresh {
                head: h,
                version: head.mod_revision() as u64,
            }),
            // An unreadable head is rebuilt like a missing one.
            Err(_) => Ok(ReadyIndex::Stale),
        }
    }

    fn ready_entries(&self, cell: &str) -> Result<Vec<String>> {
        check_id(IdKind::Cell, cell)?;
        self.names_under(self.meta_key(cell, "ready/"))
    }

    fn rebuild_ready(&self, cell: &str, entries: &[String]) -> Result<(ReadyHead, Option<u64>)> {
        check_id(IdKind::Cell, cell)?;
        let head = ReadyHead::of_sorted(entries);
        let start = TXN_START.with(Cell::get);
        if start == 0 {
            // Not inside a transaction that read anything: nothing to build from.
            return Ok((head, None));
        }
        let head_key = self.meta_key(cell, "ready-head");
        // etcd refuses a put under a range the same transaction deletes: the entries that
        // go are deleted one by one (any change to them since moves the head, compared below).
        let old: std::collections::BTreeSet<String> =
            self.ready_entries(cell)?.into_iter().collect();
        let new: std::collections::BTreeSet<&String> = entries.iter().collect();
        let mut ops = Vec::new();
        for e in old.iter().filter(|e| !new.contains(e)) {
            ops.push(TxnOp::delete(
                self.meta_key(cell, &format!("ready/{e}")),
                None,
            ));
        }
        for e in entries.iter().filter(|e| !old.contains(*e)) {
            ops.push(TxnOp::put(
                self.meta_key(cell, &format!("ready/{e}")),
                "",
                None,
            ));
        }
        ops.push(TxnOp::put(head_key.clone(), to_json(&head), None));
        // Kept only if no task changed since the transaction's first read.
        let txn = EtcdTxn::new()
            .when(vec![
                Compare::mod_revision(self.meta_key(cell, "tasks-gen"), CompareOp::Less, start + 1),
                Compare::mod_revision(head_key, CompareOp::Less, start + 1),
            ])
            .and_then(ops);
        let resp = self.send(txn)?;
        let version = resp
            .succeeded()
            .then(|| resp.header().map(|h| h.revision() as u64))
            .flatten();
        Ok((head, version))
    }

    fn read_collection(&self, cell: &str, what: Collection) -> Result<Vec<(String, Result<Doc>)>> {
        Ok(self
            .read_collection_revisions(cell, what)?
            .into_iter()
            .map(|(id, r)| (id, r.map(|(d, _)| d)))
            .collect())
    }

    fn read_collection_bytes(
        &self,
        cell: &str,
        what: Collection,
    ) -> Result<Vec<(String, Result<Vec<u8>>)>> {
        Ok(self
            .collection(cell, what)?
            .into_iter()
            .map(|(id, kv)| (id, Ok(kv.value().to_vec())))
            .collect())
    }

    fn parse_doc(&self, cell: &str, key: FileKey<'_>, bytes: &[u8]) -> Result<Doc> {
        match Doc::parse_object(bytes) {
            Some(doc) => Ok(doc),
            None => Doc::parse(bytes, Path::new(&self.describe(cell, key))),
        }
    }

    fn lock(&self, cell: &str, key: LockKey<'_>) -> Result<LockGuard> {
        self.blob_cell(cell)?;
        self.blobs.lock(cell, key)
    }

    fn read_log(&self, cell: &str, log: LogFile<'_>, offset: u64) -> Result<Vec<u8>> {
        check_id(IdKind::Cell, cell)?;
        let bytes = match log {
            LogFile::Events => self.events_log(cell)?,
            LogFile::Mission => {
                let log = self.events_log(cell)?;
                let mut out = String::new();
                for e in events::parse_all(&log) {
                    out.push_str(&events::human_line(&e));
                    out.push('\n');
                }
                out.into_bytes()
            }
            _ => return self.blobs.read_log(cell, log, offset),
        };
        let from = (offset as usize).min(bytes.len());
        Ok(bytes[from..].to_vec())
    }

    fn log_segments(&self, cell: &str, agent: &str) -> Result<Vec<LogSegment>> {
        self.blob_cell(cell)?;
        self.blobs.log_segments(cell, agent)
    }

    fn read_log_chunk(
        &self,
        cell: &str,
        log: LogFile<'_>,
        offset: u64,
        max: usize,
    ) -> Result<Option<LogChunk>> {
        self.blob_cell(cell)?;
        self.blobs.read_log_chunk(cell, log, offset, max)
    }

    fn rotate_log(&self, cell: &str, agent: &str, keep: usize) -> Result<std::fs::File> {
        self.blob_cell(cell)?;
        self.blobs.rotate_log(cell, agent, keep)
    }

    /// The local root and its `pas.toml` (which says whom pas trusts in etcd): the
    /// documents themselves are in etcd, which records no writer ([`Store::remote`]).
    fn origins(&self, cell: &str, _key: FileKey<'_>) -> Result<Vec<Origin>> {
        self.blob_cell(cell)?;
        self.blobs.root_origins()
    }

    fn keep_alive(
        &self,
        cell: &str,
        agent: &str,
        ttl: Duration,
    ) -> Result<Option<crate::store::AliveGuard>> {
        check_id(IdKind::Cell, cell)?;
        check_id(IdKind::Agent, agent)?;
        self.keep_key(format!("{}{agent}", self.alive_prefix(cell)), ttl)
    }

    fn has_leases(&self) -> bool {
        true
    }

    fn alive_agents(&self, cell: &str) -> Result<Option<Vec<String>>> {
        check_id(IdKind::Cell, cell)?;
        let mut agents: Vec<String> = self
            .names_under(self.alive_prefix(cell))?
            .into_iter()
            .filter(|a| crate::store::layout::is_valid_id(a))
            .collect();
        agents.sort();
        Ok(Some(agents))
    }

    fn nodes(&self) -> Result<Option<Vec<String>>> {
        let mut hosts: Vec<String> = self
            .names_under(self.nodes_prefix())?
            .into_iter()
            .filter(|h| crate::host::check(h).is_ok())
            .collect();
        hosts.sort();
        Ok(Some(hosts))
    }

    fn keep_node(&self, host: &str, ttl: Duration) -> Result<Option<crate::store::AliveGuard>> {
        crate::host::check(host)?;
        self.keep_key(format!("{}{host}", self.nodes_prefix()), ttl)
    }

    fn blob_inventory(&self) -> Result<Option<crate::store::BlobInventory>> {
        self.inventory().map(Some)
    }

    fn remove_blob(&self, sha256: &str, cutoff: DateTime<Utc>) -> Result<bool> {
        self.drop_blob(sha256, cutoff)
    }

    fn remote(&self) -> Option<crate::store::Remote> {
        Some(crate::store::Remote {
            location: format!("etcd at {}", self.url.display()),
            user: self.url.user.clone(),
        })
    }

    fn events_head(&self, cell: &str) -> Result<Option<events::Head>> {
        check_id(IdKind::Cell, cell)?;
        Ok(self.stored_head(cell)?.0.map(|s| s.head))
    }

    fn hook_cursor(&self, cell: &str) -> Result<Option<events::Cursor>> {
        check_id(IdKind::Cell, cell)?;
        let key = self.meta_key(cell, "hooks-cursor");
        match self.get_one(key.clone())? {
            None => Ok(None),
            Some(kv) => serde_json::from_slice(kv.value()).map(Some).map_err(|e| {
                Error::data(format!(
                    "{} is not a readable hooks cursor ({e})",
                    self.describe_key(&key)
                ))
                .hint("remove it (etcdctl del KEY): the hooks then start at the end of the log")
            }),
        }
    }

    fn set_hook_cursor(&self, cell: &str, cursor: &events::Cursor) -> Result<()> {
        check_id(IdKind::Cell, cell)?;
        let key = self.meta_key(cell, "hooks-cursor");
        let value = to_json(cursor);
        self.request(|mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move { c.put(key, value, None).await }
        })
        .map(|_| ())
    }

    fn checkpoint_generations(&self, cell: &str, agent: &str) -> Result<Vec<u64>> {
        self.etcd_generations(cell, agent)
    }

    fn write_checkpoint(
        &self,
        cell: &str,
        agent: &str,
        generation: u64,
        files: &CheckpointFiles,
    ) -> Result<()> {
        self.put_checkpoint(cell, agent, generation, files, true)
    }

    fn mirror_checkpoint(&self, cell: &str, agent: &str, files: &CheckpointFiles) -> Result<()> {
        self.put_checkpoint(cell, agent, 0, files, false)
    }

    fn read_checkpoint(
        &self,
        cell: &str,
        agent: &str,
        generation: u64,
    ) -> Result<Option<CheckpointFiles>> {
        self.get_checkpoint(cell, agent, generation)
    }

    fn remove_checkpoint(&self, cell: &str, agent: &str, generation: u64) -> Result<()> {
        self.delete_checkpoint(cell, agent, generation)
    }

    fn write_summary(&self, cell: &str, agent: &str, name: &str, bytes: &[u8]) -> Result<String> {
        self.blob_cell(cell)?;
        self.blobs.write_summary(cell, agent, name, bytes)
    }

    fn summaries(&self, cell: &str, agent: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.blob_cell(cell)?;
        self.blobs.summaries(cell, agent)
    }

    fn try_lock_root(&self, name: &str) -> Result<std::result::Result<LockGuard, Option<u32>>> {
        self.blobs.try_lock_root(name)
    }

    // The machine's ledger is this host's, like its logs: kept in the local directory.
    fn lock_root(&self, name: &str) -> Result<LockGuard> {
        self.blobs.lock_root(name)
    }

    fn read_root_doc(&self, key: RootDoc) -> Result<Option<Doc>> {
        self.blobs.read_root_doc(key)
    }

    fn write_root_doc(&self, key: RootDoc, doc: &Doc) -> Result<()> {
        self.blobs.write_root_doc(key, doc)
    }

    fn inspect(&self, cell: &str) -> Result<CellListing> {
        // etcd has no directories, links or temporary files; documents whose keys are not
        // `<id>.json` are the strays.
        check_id(IdKind::Cell, cell)?;
        let mut listing = CellListing::default();
        for what in [Collection::Agents, Collection::Tasks] {
            let prefix = format!("{}{}/", self.cell_prefix(cell), what.dir());
            for name in self.names_under(prefix)? {
                let ok = name
                    .strip_suffix(".json")
                    .is_some_and(crate::store::layout::is_valid_id);
                if !ok {
                    listing.stray.push(format!("{}/{name}", what.dir()));
                }
            }
        }
        listing.stray.sort();
        Ok(listing)
    }

    fn root_oddities(&self) -> Result<Vec<RootOddity>> {
        // Cells are created and removed in one etcd transaction: none is ever half there.
        Ok(Vec::new())
    }

    fn read_root_config(&self) -> Result<Option<(Vec<u8>, String)>> {
        self.blobs.read_root_config()
    }

    fn export_cell(&self, cell: &str) -> Result<crate::store::image::CellImage> {
        self.export_image(cell)
    }

    fn import_cell(&self, cell: &str, image: &crate::store::image::CellImage) -> Result<()> {
        self.import_image(cell, image)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::contract;
    use crate::store::etcd::{cluster, parse_url};

    /// A local directory for logs and checkpoints, removed when dropped (also on a panic).
    struct Blobs(PathBuf);

    impl Blobs {
        fn new() -> Blobs {
            Blobs(std::env::temp_dir().join(format!("pas-etcd-blobs-{}", cluster::unique_prefix())))
        }
    }

    impl Drop for Blobs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_etcd_store_keeps_the_contract() {
        let Some(cluster) = cluster::shared() else {
            return;
        };
        let blobs = Blobs::new();
        contract::run_all(&|| {
            let url = parse_url(&cluster.url()).expect("url");
            let store = Arc::new(EtcdStore::open(&url, blobs.0.join(&url.prefix)).expect("open"));
            let raw = Arc::clone(&store);
            let foreign: contract::ForeignWrite = Box::new(move |cell, key, doc| {
                raw.put_raw(cell, key, doc.to_bytes())
                    .expect("foreign write");
            });
            (store as Arc<dyn Store + Send + Sync>, foreign)
        });
    }

    fn now() -> DateTime<Utc> {
        crate::clock::parse("2026-12-01T10:00:00Z").expect("time")
    }

    fn agent(id: &str) -> Doc {
        Doc::parse_object(format!(r#"{{"agent_id":"{id}"}}"#).as_bytes()).expect("doc")
    }

    #[test]
    fn without_quorum_a_change_fails_with_exit_10_writes_nothing_and_the_data_comes_back() {
        let Some(cluster) = cluster::private() else {
            return;
        };
        let blobs = Blobs::new();
        let url = parse_url(&cluster.url()).expect("url");
        let store = EtcdStore::open(&url, &blobs.0)
            .expect("open")
            .with_availability_wait(Duration::from_secs(1));
        let cell_doc = Doc::parse_object(br#"{"cell_id":"c1"}"#).expect("doc");
        store
            .create_cell("c1", &[(FileKey::Cell, cell_doc)], &[], now())
            .expect("cell");
        txn::transact(&store, "c1", now(), |t| {
            t.create(FileKey::Agent("a1"), agent("a1"));
            t.event(NewEvent::new(
                events::Level::Info,
                crate::model::EventKind::AgentAdded,
                "a1 added",
            ));
            Ok(())
        })
        .expect("a1");
        cluster.kill(1);
        cluster.kill(2);
        // Until the survivor notices it is alone, a request may go unanswered (and a change
        // then has an unknown outcome): wait until it says there is no leader.
        let mut said = String::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            match store.check_root() {
                Err(e) if e.message.contains(NO_QUORUM) => break,
                Err(e) => said = e.message,
                Ok(()) => said = "it still answers".to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            store
                .check_root()
                .is_err_and(|e| e.message.contains(NO_QUORUM)),
            "the survivor never said it had no leader: {said}"
        );
        let err = txn::transact(&store, "c1", now(), |t| {
            t.create(FileKey::Agent("a2"), agent("a2"));
            Ok(())
        })
        .expect_err("no quorum, no change");
        assert_eq!(err.kind, Kind::Unavailable, "{}", err.message);
        assert_eq!(err.kind.exit_code(), 10);
        assert!(err.message.contains(NO_QUORUM), "{}", err.message);
        assert_eq!(err.committed, Some(false));
        cluster.restart(1).expect("restart m1");
        cluster.restart(2).expect("restart m2");
        let store = store.with_availability_wait(Duration::from_secs(10));
        assert!(store
            .read("c1", FileKey::Agent("a1"))
            .expect("read")
            .is_some());
        assert!(store
            .read("c1", FileKey::Agent("a2"))
            .expect("read")
            .is_none());
        let log = store.read_log("c1", LogFile::Events, 0).expect("log");
        let v = events::verify_against(&log, store.events_head("c1").expect("head").as_ref());
        assert_eq!((v.first_break, events::parse_all(&log).len()), (None, 1));
    }
}
