//! The etcd store: records in etcd v3, for electors on many machines
//! outside Kubernetes.
//!
//! - Each record is one key, `{prefix}{locks|elections}/{name}`, holding the
//!   record as JSON (with the SHA-256 digest of the holder's key, if it
//!   acquired with one; never the key). Its version is the key's
//!   `mod_revision`.
//! - Writes are transactions that compare the `mod_revision` read (or that
//!   the key does not exist), so two electors never both win.
//! - Every record is bound to this elector's etcd lease (one per process,
//!   kept alive in the background). If the elector dies or loses etcd, the
//!   etcd lease runs out and etcd deletes its records. That deletion comes
//!   at least two thirds of the etcd lease TTL after the elector's last
//!   write, so a record never vanishes while its holder may still believe
//!   in it: hence [`EtcdStore::max_ttl_ms`] is half the etcd lease TTL.
//! - Because records can vanish, the fencing token of a write that changes
//!   hands is that write's revision, which etcd never reuses: tokens keep
//!   growing across deletions and restarts.
//! - A released record, and one the elector cleared once its lease ran out,
//!   stays in etcd, free, until this elector's etcd lease ends; the
//!   elector's memory keeps nothing of it.
//! - Long-polls wait on one prefix watch per elector, resumed from the last
//!   revision seen after a break.
//! - Every call has a deadline; a store that stops answering is
//!   [`StoreError::Unavailable`], never a hang.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use mpsync_core::line::Line;
use mpsync_core::record::KeyDigest;
use mpsync_core::{Kind, Record, Transfer, Why};
use serde::{Deserialize, Serialize};

use super::changes::Changes;
use super::{Change, Key, Page, Seen, Store, StoreError, Versioned};

/// How often the connection to etcd is pinged: above etcd's default
/// `--grpc-keepalive-min-time` of 5 s.
const ETCD_PING_INTERVAL: Duration = Duration::from_secs(6);
/// How to reach etcd and how to keep records there.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Endpoints, e.g. `http://10.0.0.5:2379`.
    pub endpoints: Vec<String>,
    /// Key prefix for every record, e.g. `/metaparticle-sync/`.
    pub prefix: String,
    /// TTL of this elector's etcd lease (whole seconds, at least 2).
    pub lease_ttl: Duration,
    /// Deadline for each call to etcd.
    pub timeout: Duration,
}

impl EtcdConfig {
    /// Defaults for `endpoints`: prefix `/metaparticle-sync/`, etcd lease
    /// TTL 90 s (leases up to 45 s), 1 s per call.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            prefix: "/metaparticle-sync/".into(),
            lease_ttl: Duration::from_secs(90),
            timeout: Duration::from_secs(1),
        }
    }
}

/// A record as kept in etcd. `token` is absent on the write that changed
/// hands: the token is then that write's revision (`mod_revision`).
#[derive(Serialize, Deserialize)]
struct Stored {
    holder: Option<String>,
    ttl_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<u64>,
    /// Absent in values written before keys existed: they read as keyless.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_sha256: Option<KeyDigest>,
    /// A lock's waiters in line; absent when it never had any.
    #[serde(default, skip_serializing_if = "Line::is_empty")]
    line: Line,
    /// Why the holder last changed; absent in values written before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    why: Option<Why>,
    /// A hand-over asked of the holder, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    transfer: Option<Transfer>,
}

/// Calls made to etcd, for `/metrics` and the benchmark.
#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    writes: AtomicU64,
    lease_grants: AtomicU64,
    keepalives: AtomicU64,
}

/// This elector's etcd lease.
struct Session {
    id: i64,
    alive: Arc<std::sync::atomic::AtomicBool>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Records in etcd.
pub struct EtcdStore {
    client: Client,
    config: EtcdConfig,
    changes: Arc<Changes>,
    counters: Arc<Counters>,
    session: tokio::sync::Mutex<Option<Session>>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("etcd {what}: {e}"))
}

/// Why a conditional write did not land.
enum PutError {
    /// etcd no longer knows the elector's lease (it ran out while the
    /// elector was paused or cut off): take a new one.
    LeaseNotFound,
    /// Anything else.
    Store(StoreError),
}

impl From<StoreError> for PutError {
    fn from(e: StoreError) -> Self {
        PutError::Store(e)
    }
}

/// etcd answers a write under a lease it does not know with `NotFound`
/// ("etcdserver: requested lease not found"); nothing else in a put
/// transaction can be missing.
fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(status) if status.code() == tonic::Code::NotFound)
}

impl EtcdStore {
    /// A store over the etcd cluster at `config.endpoints`. Connecting is
    /// lazy: an etcd that is down at start makes the elector not ready
    /// until it answers, not fail.
    pub async fn connect(config: EtcdConfig) -> Result<Self, StoreError> {
        if config.endpoints.is_empty() {
            return Err(StoreError::Unavailable("no etcd endpoints given".into()));
        }
        if config.lease_ttl < Duration::from_secs(2) {
            return Err(StoreError::Unavailable("the etcd lease TTL must be at least 2 s".into()));
        }
        // No per-request timeout here: it would also cut the watch and
        // keep-alive streams. Unary calls get their own deadline below;
        // HTTP/2 pings notice a dead connection under the streams, no more
        // often than etcd allows (`--grpc-keepalive-min-time`, 5 s by
        // default): a client that pings more often is sent GOAWAY
        // `too_many_pings`, and every call on the connection fails.
        let options = ConnectOptions::new()
            .with_connect_timeout(config.timeout)
            .with_keep_alive(ETCD_PING_INTERVAL, config.timeout)
            .with_keep_alive_while_idle(true);
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(|e| unavailable(&format!("connecting to {}", config.endpoints.join(",")), e))?;
        let changes = Arc::new(Changes::default());
        let watcher = tokio::spawn(watch_prefix(client.clone(), config.prefix.clone(), changes.clone()));
        Ok(EtcdStore {
            client,
            config,
            changes,
            counters: Arc::default(),
            session: tokio::sync::Mutex::new(None),
            watcher,
        })
    }

    fn etcd_key(&self, key: &Key) -> Vec<u8> {
        self.feed_id(key).into_bytes()
    }

    async fn deadline<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.config.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(unavailable(what, e)),
            Err(_) => Err(unavailable(what, format!("no answer within {:?}", self.config.timeout))),
        }
    }

    /// This elector's etcd lease, granted (and kept alive) on first use or
    /// after the previous one was lost.
    async fn lease(&self) -> Result<i64, StoreError> {
        let mut session = self.session.lock().await;
        if let Some(s) = session.as_ref().filter(|s| s.alive.load(Ordering::SeqCst)) {
            return Ok(s.id);
        }
        let ttl = i64::try_from(self.config.lease_ttl.as_secs()).unwrap_or(i64::MAX);
        let granted = self.deadline("granting a lease", self.client.clone().lease_grant(ttl, None)).await?;
        self.counters.lease_grants.fetch_add(1, Ordering::Relaxed);
        let id = granted.id();
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let keeper = tokio::spawn(keep_alive(
            self.client.clone(),
            id,
            self.config.lease_ttl / 3,
            self.config.timeout,
            alive.clone(),
            self.counters.clone(),
        ));
        tracing::info!(lease = format!("{id:x}"), ttl_s = ttl, "etcd lease granted");
        *session = Some(Session { id, alive, keeper });
        Ok(id)
    }

    async fn lease_lost(&self, id: i64) {
        let mut session = self.session.lock().await;
        if session.as_ref().is_some_and(|s| s.id == id) {
            tracing::warn!(lease = format!("{id:x}"), "etcd lease lost; a new one will be granted");
            *session = None;
        }
    }

    fn decode(key: &[u8], value: &[u8], mod_revision: i64) -> Result<Versioned, StoreError> {
        let stored: Stored = serde_json::from_slice(value).map_err(|e| {
            StoreError::Unavailable(format!(
                "etcd key {} does not hold a metaparticle-sync record: {e}",
                String::from_utf8_lossy(key)
            ))
        })?;
        let version = u64::try_from(mod_revision).unwrap_or(0);
        let mut record = Record {
            holder: stored.holder,
            token: stored.token.unwrap_or(0),
            ttl_ms: stored.ttl_ms,
            address: stored.address,
            key_sha256: stored.key_sha256,
            line: stored.line,
            why: stored.why,
            transfer: stored.transfer,
        };
        if stored.token.is_none() {
            // Minted by the write that stored it: its revision (a shared
            // hold granted by it is stored with token 0 for the same).
            record.retoken(version);
        }
        Ok(Versioned::new(record, version))
    }

    async fn try_put(
        &self,
        etcd_key: &[u8],
        record: &Record,
        current: Option<&Versioned>,
        lease: i64,
    ) -> Result<Option<Versioned>, PutError> {
        let changes_hands = current.is_none_or(|c| c.record.token != record.token);
        let stored = Stored {
            holder: record.holder.clone(),
            ttl_ms: record.ttl_ms,
            address: record.address.clone(),
            token: (!changes_hands).then_some(record.token),
            key_sha256: record.key_sha256.clone(),
            line: {
                let mut stored = record.clone();
                if changes_hands {
                    // The token of this write is its revision, unknown
                    // until it is written: 0 stands for it (see decode).
                    stored.retoken(0);
                }
                stored.line
            },
            why: record.why,
            transfer: record.transfer.clone(),
        };
        let value = serde_json::to_vec(&stored).map_err(|e| unavailable("encoding", e))?;
        let compare = match current {
            None => Compare::version(etcd_key, CompareOp::Equal, 0),
            Some(c) => Compare::mod_revision(etcd_key, CompareOp::Equal, i64::try_from(c.version).unwrap_or(i64::MAX)),
        };
        let txn = Txn::new().when([compare]).and_then([TxnOp::put(
            etcd_key,
            value,
            Some(PutOptions::new().with_lease(lease)),
        )]);
        let response = match tokio::time::timeout(self.config.timeout, self.client.clone().txn(txn)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) if is_lease_not_found(&e) => return Err(PutError::LeaseNotFound),
            Ok(Err(e)) => return Err(unavailable("writing", e).into()),
            Err(_) => return Err(unavailable("writing", format!("no answer within {:?}", self.config.timeout)).into()),
        };
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        if !response.succeeded() {
            return Ok(None);
        }
        let revision = response.header().map_or(0, |h| h.revision());
        let version = u64::try_from(revision).unwrap_or(0);
        let mut stored = record.clone();
        if changes_hands {
            stored.retoken(version);
        }
        Ok(Some(Versioned::new(stored, version)))
    }
}

/// Keeps lease `id` alive every `every` until etcd says it is gone.
async fn keep_alive(
    mut client: Client,
    id: i64,
    every: Duration,
    timeout: Duration,
    alive: Arc<std::sync::atomic::AtomicBool>,
    counters: Arc<Counters>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stream = None;
    loop {
        ticks.tick().await;
        let result = tokio::time::timeout(timeout, async {
            if stream.is_none() {
                stream = Some(client.lease_keep_alive(id).await?);
            }
            let Some((keeper, responses)) = stream.as_mut() else { unreachable!("set above") };
            keeper.keep_alive().await?;
            responses.message().await
        })
        .await;
        counters.keepalives.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(Ok(Some(response))) if response.ttl() > 0 => {}
            Ok(Ok(Some(_))) => {
                // TTL 0: etcd no longer has this lease.
                alive.store(false, Ordering::SeqCst);
                return;
            }
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                // The stream broke or etcd is away: try again next tick on
                // a new stream. Records stay safe: etcd deletes them no
                // sooner than the lease TTL after the last keep-alive.
                stream = None;
            }
        }
    }
}

/// The key of an etcd key's part after the prefix (`locks/orders`).
fn key_of(path: &str) -> Option<Key> {
    let (plural, name) = path.split_once('/')?;
    let kind = [Kind::Lock, Kind::Election].into_iter().find(|k| k.plural() == plural)?;
    Some(Key { kind, name: name.to_owned() })
}

/// Feeds `changes` from one watch on `prefix`, resuming after the last
/// revision seen when the watch breaks.
async fn watch_prefix(mut client: Client, prefix: String, changes: Arc<Changes>) {
    let mut next_revision: i64 = 0;
    let mut pause = Duration::from_millis(50);
    loop {
        let mut options = WatchOptions::new().with_prefix();
        if next_revision > 0 {
            options = options.with_start_revision(next_revision);
        }
        if let Ok(mut stream) = client.watch(prefix.as_bytes(), Some(options)).await {
            loop {
                let response = match stream.message().await {
                    Ok(Some(response)) => response,
                    Ok(None) | Err(_) => break,
                };
                pause = Duration::from_millis(50);
                if response.compact_revision() > 0 {
                    // Too far behind: start again from now; everyone reads.
                    next_revision = 0;
                    break;
                }
                if response.canceled() {
                    break;
                }
                if let Some(header) = response.header() {
                    next_revision = next_revision.max(header.revision() + 1);
                }
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let revision = u64::try_from(kv.mod_revision()).unwrap_or(0);
                    let id = String::from_utf8_lossy(kv.key()).into_owned();
                    let put = event.event_type() == EventType::Put;
                    // The record as the watch delivered it: a follower of
                    // the feed need not read it again.
                    let change = || {
                        let seen = match put.then(|| EtcdStore::decode(kv.key(), kv.value(), kv.mod_revision())) {
                            None => Seen::Deleted(revision),
                            Some(Ok(stored)) => Seen::Written(stored),
                            Some(Err(_)) => Seen::Unreadable,
                        };
                        Change { key: id.strip_prefix(prefix.as_str()).and_then(key_of), id: id.clone(), seen }
                    };
                    changes.publish(&id, if put { revision } else { 0 }, change);
                    next_revision = next_revision.max(kv.mod_revision() + 1);
                }
            }
        }
        // Whatever happened while the watch was down, waiters read again.
        changes.wake_all();
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn max_ttl_ms(&self) -> u64 {
        u64::try_from(self.config.lease_ttl.as_millis() / 2).unwrap_or(u64::MAX)
    }

    /// At most about 420 bytes per waiter, well within the 1.5 MiB etcd
    /// accepts in one request by default.
    fn max_waiters(&self) -> usize {
        2_000
    }

    async fn get(&self, key: &Key) -> Result<Option<Versioned>, StoreError> {
        let etcd_key = self.etcd_key(key);
        let response = self.deadline("reading", self.client.clone().get(etcd_key.as_slice(), None)).await?;
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        match response.kvs().first() {
            Some(kv) => Ok(Some(Self::decode(kv.key(), kv.value(), kv.mod_revision())?)),
            None => Ok(None),
        }
    }

    async fn put(&self, key: &Key, record: &Record, current: Option<&Versioned>) -> Result<Versioned, StoreError> {
        let etcd_key = self.etcd_key(key);
        let lease = self.lease().await?;
        match self.try_put(&etcd_key, record, current, lease).await {
            Ok(Some(stored)) => Ok(stored),
            Ok(None) => Err(StoreError::Conflict),
            Err(PutError::LeaseNotFound) => {
                // The etcd lease ran out (the elector was paused or cut
                // off for longer than its TTL): take a new one, once.
                self.lease_lost(lease).await;
                let lease = self.lease().await?;
                match self.try_put(&etcd_key, record, current, lease).await {
                    Ok(stored) => stored.ok_or(StoreError::Conflict),
                    Err(PutError::LeaseNotFound) => Err(unavailable("writing", "the lease just granted is not found")),
                    Err(PutError::Store(e)) => Err(e),
                }
            }
            Err(PutError::Store(e)) => Err(e),
        }
    }

    async fn list(&self, kind: Kind, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        // Keys sort by name under `{prefix}{plural}/`; the range ends at
        // `{prefix}{plural}0` ('0' follows '/'), and starts just after the
        // cursor (the last name of the previous page) when there is one.
        let base = format!("{}{}/", self.config.prefix, kind.plural());
        let start = match cursor {
            Some(after) => format!("{base}{after}\0"),
            None => base.clone(),
        };
        let end = format!("{}{}0", self.config.prefix, kind.plural());
        let limit = limit.max(1);
        let options = GetOptions::new().with_range(end).with_limit(i64::try_from(limit + 1).unwrap_or(i64::MAX));
        let response = self.deadline("listing", self.client.clone().get(start, Some(options))).await?;
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        let mut records = Vec::with_capacity(limit.min(response.kvs().len()));
        for kv in response.kvs().iter().take(limit) {
            let name = String::from_utf8_lossy(&kv.key()[base.len()..]).into_owned();
            records.push((name, Self::decode(kv.key(), kv.value(), kv.mod_revision())?));
        }
        let next = (response.kvs().len() > limit).then(|| records.last().map(|(n, _)| n.clone())).flatten();
        Ok(Page { records, next })
    }

    async fn wait_change(&self, key: &Key, version: u64) -> Result<(), StoreError> {
        let etcd_key = self.etcd_key(key);
        let id = String::from_utf8_lossy(&etcd_key).into_owned();
        // A long-poll is dropped at its timeout or when its client goes,
        // maybe while this read is in flight. A dropped call resets its
        // HTTP/2 stream, and after a burst of such resets the connection to
        // etcd closes itself (h2's `too_many_internal_resets`), failing
        // every call on it. So the read runs on a task of its own, which a
        // dropped long-poll merely stops awaiting.
        let (mut client, counters, timeout) = (self.client.clone(), self.counters.clone(), self.config.timeout);
        let read = tokio::spawn(async move {
            let response = tokio::time::timeout(timeout, client.get(etcd_key, None)).await;
            counters.reads.fetch_add(1, Ordering::Relaxed);
            match response {
                Ok(Ok(r)) => Ok(r.kvs().first().map_or(0, |kv| u64::try_from(kv.mod_revision()).unwrap_or(0))),
                Ok(Err(e)) => Err(unavailable("reading", e)),
                Err(_) => Err(unavailable("reading", format!("no answer within {timeout:?}"))),
            }
        });
        let read = async { read.await.map_err(|e| unavailable("reading", e))? };
        self.changes.wait(id, version, read, "etcd").await
    }

    fn feed(&self) -> super::Feed {
        self.changes.feed()
    }

    fn feed_id(&self, key: &Key) -> String {
        // As the watch reports it: the whole etcd key.
        format!("{}{}/{}", self.config.prefix, key.kind.plural(), key.name)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // A linearizable read: it needs a quorum, like every write.
        let options = GetOptions::new().with_count_only();
        let key = format!("{}ready", self.config.prefix);
        self.deadline("reading", self.client.clone().get(key, Some(options))).await.map(drop)
    }

    fn sizes(&self) -> Vec<(&'static str, usize)> {
        vec![("watched", self.changes.len())]
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = &self.counters;
        vec![
            ("read", c.reads.load(Ordering::Relaxed)),
            ("write", c.writes.load(Ordering::Relaxed)),
            ("lease_grant", c.lease_grants.load(Ordering::Relaxed)),
            ("keepalive", c.keepalives.load(Ordering::Relaxed)),
        ]
    }
}
