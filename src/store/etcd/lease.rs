//! Liveness by leases: while an agent's supervisor lives, its key
//! `PREFIX/cells/<cell>/alive/<agent>` is bound to a lease the supervisor keeps alive on an
//! open keep-alive stream (no write, no revision per renewal). When the supervisor ends
//! cleanly the lease is revoked; when it dies, the lease expires after its TTL and etcd
//! deletes the key: a watch on `alive/` sees the death.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, PutOptions};

/// How long one renewal or the final revoke may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(2);

/// The keeper of one alive key: renews its lease every third of the TTL on a thread of its
/// own (with its own runtime), and revokes it when dropped.
pub struct Alive {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Alive {
    fn drop(&mut self) {
        // Closing the channel wakes the thread, which revokes the lease and ends.
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What to keep alive, and how to reach the cluster.
pub struct Keeper {
    /// The members' URLs.
    pub endpoints: Vec<String>,
    /// As the store connected (TLS, user).
    pub options: ConnectOptions,
    /// The alive key.
    pub key: String,
    /// Its value (the host).
    pub value: String,
    /// The lease's TTL in seconds.
    pub ttl: i64,
}

impl Keeper {
    /// On a thread of its own (its own runtime and connection: a client is served by the
    /// runtime that made it, and the store's runs only while the store is used), grants a
    /// lease of `ttl` seconds and binds the key to it, then keeps it alive until the
    /// returned [`Alive`] is dropped. A renewal that finds the lease gone (the process
    /// stalled past its TTL) grants a new one and binds the key again; one that fails (no
    /// leader) is tried again at the next period. `Err(None)`: no answer within `wait`.
    pub fn start(self, wait: Duration) -> Result<Alive, Option<etcd_client::Error>> {
        let (ready, started) = mpsc::channel();
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("pas-lease".to_string())
            .spawn(move || self.run(wait, &ready, &stopped))
            .map_err(|e| Some(etcd_client::Error::IoError(e)))?;
        let alive = Alive {
            stop: Some(stop),
            thread: Some(thread),
        };
        match started.recv_timeout(wait) {
            Ok(Ok(())) => Ok(alive),
            Ok(Err(e)) => Err(Some(e)),
            Err(_) => Err(None),
        }
    }

    /// The keeper's thread: connects and binds, says so on `ready`, then renews every
    /// third of the TTL until `stopped` closes, and revokes.
    fn run(
        self,
        wait: Duration,
        ready: &mpsc::Sender<Result<(), etcd_client::Error>>,
        stopped: &mpsc::Receiver<()>,
    ) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready.send(Err(etcd_client::Error::IoError(e)));
                return;
            }
        };
        let started = rt.block_on(async {
            tokio::time::timeout(wait, async {
                let mut c = Client::connect(&self.endpoints, Some(self.options.clone())).await?;
                let id = bind(&mut c, &self.key, &self.value, self.ttl).await?;
                Ok::<_, etcd_client::Error>((c, id))
            })
            .await
        });
        let (mut c, mut id) = match started {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                let _ = ready.send(Err(e));
                return;
            }
            // The caller stops waiting at the same time.
            Err(_) => return,
        };
        if ready.send(Ok(())).is_err() {
            // Nobody waits any more (it gave up): leave no key behind.
            let _ = rt.block_on(c.lease_revoke(id));
            return;
        }
        let period = Duration::from_millis((self.ttl.max(1) as u64) * 1000 / 3);
        let mut stream = None;
        loop {
            match stopped.recv_timeout(period) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // Dropped (or a message): the supervisor ends, the key goes with the lease.
                _ => {
                    let _ = rt.block_on(async {
                        tokio::time::timeout(STEP_TIMEOUT, c.lease_revoke(id)).await
                    });
                    return;
                }
            }
            let renewed = rt.block_on(async {
                tokio::time::timeout(STEP_TIMEOUT, async {
                    if stream.is_none() {
                        stream = Some(c.lease_keep_alive(id).await?);
                    }
                    let Some((keeper, answers)) = stream.as_mut() else {
                        return Ok(None);
                    };
                    keeper.keep_alive().await?;
                    Ok::<_, etcd_client::Error>(answers.message().await?.map(|a| a.ttl()))
                })
                .await
            });
            match renewed {
                // Renewed: the lease has its TTL again.
                Ok(Ok(Some(left))) if left > 0 => {}
                // The lease is gone: bind the key to a new one.
                Ok(Ok(_)) => {
                    stream = None;
                    let rebound = rt.block_on(async {
                        tokio::time::timeout(
                            STEP_TIMEOUT,
                            bind(&mut c, &self.key, &self.value, self.ttl),
                        )
                        .await
                    });
                    if let Ok(Ok(new)) = rebound {
                        id = new;
                    }
                }
                // A member that does not know the token (etcd's simple tokens are per
                // member; the client moved after a leader died): connect and authenticate
                // again, a new stream at the next period.
                Ok(Err(e)) if super::client::stale_token(&e) => {
                    stream = None;
                    let fresh = rt.block_on(async {
                        tokio::time::timeout(
                            STEP_TIMEOUT,
                            Client::connect(&self.endpoints, Some(self.options.clone())),
                        )
                        .await
                    });
                    if let Ok(Ok(fresh)) = fresh {
                        c = fresh;
                    }
                }
                // No answer (no leader, a member gone): a new stream at the next period.
                _ => stream = None,
            }
        }
    }
}

/// A new lease with `key` bound to it; the lease's id.
async fn bind(c: &mut Client, key: &str, value: &str, ttl: i64) -> Result<i64, etcd_client::Error> {
    let id = c.lease_grant(ttl, None).await?.id();
    c.put(key, value, Some(PutOptions::new().with_lease(id)))
        .await?;
    Ok(id)
}
