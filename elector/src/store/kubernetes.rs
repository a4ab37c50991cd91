//! The Kubernetes store: records as `coordination.k8s.io/v1` Lease objects,
//! the same objects client-go's leader election uses.
//!
//! - A lock `orders` is the Lease `lock.orders`, an election `orders` the
//!   Lease `election.orders`, in one namespace (`--namespace`, else the
//!   service account's or the kubeconfig context's).
//! - `spec.holderIdentity` is the holder (absent once released),
//!   `spec.leaseDurationSeconds` the TTL rounded up to whole seconds (the
//!   exact TTL is in the `sync.metaparticle.io/ttl-ms` annotation),
//!   `spec.acquireTime`/`spec.renewTime` when it changed hands and when it
//!   was last written, `spec.leaseTransitions` the fencing token, the
//!   `sync.metaparticle.io/address` annotation an election leader's address,
//!   and the `sync.metaparticle.io/key-sha256` annotation the SHA-256 digest
//!   of the holder's key, if it acquired with one (never the key: anyone
//!   who may read Leases sees annotations). A fair lock's line of waiters
//!   (holder, ticket, TTL, refresh mark, key digest, session id) is JSON in
//!   the `sync.metaparticle.io/line` annotation; annotations hold 256 KiB
//!   in all, so the store lets at most [`MAX_WAITERS`] wait for one lock.
//!   Why the holder last changed (`acquired`, `released`, `expired`,
//!   `session_ended`, `transferred`) is the `sync.metaparticle.io/why`
//!   annotation.
//! - A leadership transfer asked of an election's leader is
//!   `spec.preferredHolder`, as client-go's coordinated leader election
//!   has it, with the leader asked in an annotation (see [`transfer`]).
//! - The version is `metadata.resourceVersion`: writes are `create` (which
//!   fails with 409 AlreadyExists if someone got there first) or `replace`
//!   carrying the resourceVersion read (409 Conflict if it changed).
//! - Long-polls wait on one watch of the namespace's metaparticle-sync
//!   Leases (by label), resumed from the last resourceVersion, relisted
//!   after 410 Gone.
//! - Leases are never deleted by the elector, so the token survives its
//!   holders: a released Lease, and one the elector cleared once its lease
//!   ran out, stays with its holder cleared. Deleting a Lease by hand
//!   restarts its token at 1: don't. The elector's memory keeps nothing per
//!   Lease: a renewal keeps `acquireTime` from the Lease it read.
//!
//! The elector needs `get`, `list`, `watch`, `create` and `update` on
//! `leases` in its namespace, and `create` on `events` (`events.k8s.io`)
//! for the Event it writes at each change of holder ([`events`]; see
//! `deploy/base/role.yaml`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use mpsync_core::line::Line;
use mpsync_core::record::KeyDigest;
use mpsync_core::{Kind, Record};

use super::changes::Changes;
use super::{Change, Key, NameRefused, Page, Seen, Store, StoreError, Versioned};

pub mod events;
pub mod transfer;

/// Label on every Lease the elector writes (and watches).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "metaparticle-sync");
/// Label with the record's kind (`lock` or `election`), for listings.
pub const KIND_LABEL: &str = "sync.metaparticle.io/kind";
/// Annotation with the exact TTL in milliseconds.
pub const TTL_ANNOTATION: &str = "sync.metaparticle.io/ttl-ms";
/// Annotation with an election leader's advertised address.
pub const ADDRESS_ANNOTATION: &str = "sync.metaparticle.io/address";
/// Annotation with the SHA-256 digest (hex) of the holder's key.
pub const KEY_DIGEST_ANNOTATION: &str = "sync.metaparticle.io/key-sha256";
/// The most waiters one lock's line holds in a Lease: at most about 420
/// bytes each (a holder name of 253 characters, a key digest, a session
/// id), within the 256 KiB the API server allows annotations in all.
pub const MAX_WAITERS: usize = 500;
/// The annotation that holds a lock's line of waiters, as JSON.
pub const LINE_ANNOTATION: &str = "sync.metaparticle.io/line";
/// Annotation with why the holder last changed (`released`, `expired`, ...).
pub const WHY_ANNOTATION: &str = "sync.metaparticle.io/why";
/// The longest Kubernetes object name.
const MAX_OBJECT_NAME: usize = 253;

/// Calls made to the API server, for `/metrics` and the benchmark.
#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    writes: AtomicU64,
}

/// Records as Lease objects in one namespace.
pub struct KubernetesStore {
    leases: Api<Lease>,
    namespace: String,
    timeout: Duration,
    changes: Arc<Changes>,
    counters: Counters,
    watcher: tokio::task::JoinHandle<()>,
    /// Writes an Event at each change of holder, unless turned off.
    events: Option<events::Recorder>,
}

impl Drop for KubernetesStore {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("kubernetes {what}: {e}"))
}

fn api_error(what: &str, e: kube::Error) -> StoreError {
    match e {
        kube::Error::Api(status) => StoreError::Unavailable(format!(
            "kubernetes {what}: {} {} ({})",
            status.code,
            status.reason,
            status.message.trim()
        )),
        other => unavailable(what, other),
    }
}

fn lease_name(key: &Key) -> String {
    format!("{}.{}", key.kind.singular(), key.name)
}

/// The key a Lease name stands for (`lock.orders`), if it is one of ours.
fn key_of(lease_name: &str) -> Option<Key> {
    let (singular, name) = lease_name.split_once('.')?;
    let kind = [Kind::Lock, Kind::Election].into_iter().find(|k| k.singular() == singular)?;
    Some(Key { kind, name: name.to_owned() })
}

fn parse_version(name: &str, resource_version: Option<&str>) -> Result<u64, StoreError> {
    let rv = resource_version.unwrap_or("");
    rv.parse::<u64>().ok().filter(|v| *v > 0).ok_or_else(|| {
        StoreError::Unavailable(format!(
            "kubernetes Lease {name} has resourceVersion {rv:?}; metaparticle-sync needs the decimal revisions every \
             etcd-backed API server gives"
        ))
    })
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl KubernetesStore {
    /// A store over Leases in `namespace` (default: the client's own), with
    /// `timeout` per call. The client comes from `kubeconfig` if given,
    /// else from the usual places: `$KUBECONFIG`, `~/.kube/config`, the
    /// in-cluster service account.
    pub async fn connect(
        namespace: Option<String>,
        kubeconfig: Option<&std::path::Path>,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let config = match kubeconfig {
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| unavailable(&format!("kubeconfig {}", path.display()), e))?;
                kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                    .await
                    .map_err(|e| unavailable(&format!("kubeconfig {}", path.display()), e))?
            }
            None => kube::Config::infer()
                .await
                .map_err(|e| unavailable("configuration (no service account and no usable kubeconfig)", e))?,
        };
        let namespace = namespace.unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config).map_err(|e| unavailable("client", e))?;
        Ok(Self::with_client(client, namespace, timeout))
    }

    /// A store over Leases in `namespace` through `client`.
    pub fn with_client(client: kube::Client, namespace: String, timeout: Duration) -> Self {
        let leases: Api<Lease> = Api::namespaced(client, &namespace);
        let changes = Arc::new(Changes::default());
        let watcher = tokio::spawn(watch_leases(leases.clone(), changes.clone()));
        KubernetesStore { leases, namespace, timeout, changes, counters: Counters::default(), watcher, events: None }
    }

    /// Writes a Kubernetes Event on the Lease at each change of holder,
    /// reported by `instance` (the elector's identity); see [`events`].
    pub fn with_events(mut self, instance: &str) -> Self {
        let client = self.leases.clone().into_client();
        self.events = Some(events::Recorder::spawn(client, &self.namespace, instance, self.timeout));
        self
    }

    /// The namespace the Leases live in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    async fn deadline<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, StoreError> {
        self.deadline_or(what, call, |_| false).await
    }

    /// [`Self::deadline`], with API errors whose status `conflict` accepts
    /// turned into [`StoreError::Conflict`].
    async fn deadline_or<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, kube::Error>>,
        conflict: impl Fn(u16) -> bool,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(kube::Error::Api(status))) if conflict(status.code) => Err(StoreError::Conflict),
            Ok(Err(e)) => Err(api_error(what, e)),
            Err(_) => Err(unavailable(what, format!("no answer within {:?}", self.timeout))),
        }
    }

    fn decode(lease: &Lease) -> Result<Versioned, StoreError> {
        let name = lease.metadata.name.clone().unwrap_or_default();
        let version = parse_version(&name, lease.metadata.resource_version.as_deref())?;
        let spec = lease.spec.clone().unwrap_or_default();
        let annotations = lease.metadata.annotations.clone().unwrap_or_default();
        let ttl_ms = annotations
            .get(TTL_ANNOTATION)
            .and_then(|v| v.parse::<u64>().ok())
            .or_else(|| spec.lease_duration_seconds.and_then(|s| u64::try_from(s).ok()).map(|s| s * 1000))
            .unwrap_or(0);
        let token = spec.lease_transitions.and_then(|t| u64::try_from(t).ok()).unwrap_or(0);
        let holder = spec.holder_identity.as_deref();
        let transfer =
            transfer::decode(&name, holder, spec.preferred_holder.as_deref(), spec.strategy.as_deref(), &annotations);
        let record = Record {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            token,
            ttl_ms,
            address: annotations.get(ADDRESS_ANNOTATION).cloned(),
            key_sha256: annotations.get(KEY_DIGEST_ANNOTATION).cloned().map(KeyDigest::from_stored),
            line: match annotations.get(LINE_ANNOTATION) {
                None => Line::default(),
                Some(json) => serde_json::from_str(json).map_err(|e| {
                    StoreError::Unavailable(format!("Lease {name}: annotation {LINE_ANNOTATION} is not a line: {e}"))
                })?,
            },
            // An unknown word (a newer elector's) reads as "not said".
            why: annotations.get(WHY_ANNOTATION).and_then(|w| serde_json::from_value(w.as_str().into()).ok()),
            transfer,
        };
        // Carried with the version read, so a renewal over it keeps it.
        let acquired_at = spec.acquire_time.map(|at| at.0.into());
        Ok(Versioned { record, version, acquired_at })
    }

    fn encode(&self, key: &Key, record: &Record, current: Option<&Versioned>) -> Result<Lease, StoreError> {
        let name = lease_name(key);
        let token = i32::try_from(record.token).map_err(|_| {
            StoreError::Unavailable(format!("Lease {name}: token {} exceeds leaseTransitions", record.token))
        })?;
        let changes_hands = current.is_none_or(|c| c.record.token != record.token);
        let now = now();
        let acquire_time = match current {
            Some(c) if !changes_hands => c.acquired_at.and_then(|at| at.try_into().ok()).map(MicroTime),
            _ => None,
        }
        .unwrap_or_else(|| now.clone());
        let mut annotations = BTreeMap::from([(TTL_ANNOTATION.to_owned(), record.ttl_ms.to_string())]);
        if let Some(address) = &record.address {
            annotations.insert(ADDRESS_ANNOTATION.to_owned(), address.clone());
        }
        if let Some(digest) = &record.key_sha256 {
            annotations.insert(KEY_DIGEST_ANNOTATION.to_owned(), digest.as_str().to_owned());
        }
        if !record.line.is_empty() {
            let json = serde_json::to_string(&record.line).map_err(|e| unavailable("encoding", e))?;
            annotations.insert(LINE_ANNOTATION.to_owned(), json);
        }
        if let Some(why) = record.why {
            annotations.insert(WHY_ANNOTATION.to_owned(), why.as_str().to_owned());
        }
        let (preferred_holder, strategy) = transfer::encode(record.transfer.as_ref(), &mut annotations);
        let labels = BTreeMap::from([
            (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
            (KIND_LABEL.to_owned(), key.kind.singular().to_owned()),
        ]);
        Ok(Lease {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(self.namespace.clone()),
                labels: Some(labels),
                annotations: Some(annotations),
                resource_version: current.map(|c| c.version.to_string()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: record.holder.clone(),
                lease_duration_seconds: Some(i32::try_from(record.ttl_ms.div_ceil(1000)).unwrap_or(i32::MAX)),
                acquire_time: record.holder.as_ref().map(|_| acquire_time),
                renew_time: record.holder.as_ref().map(|_| now),
                lease_transitions: Some(token),
                preferred_holder,
                strategy,
            }),
        })
    }
}

/// Feeds `changes` from one watch on the managed Leases.
async fn watch_leases(leases: Api<Lease>, changes: Arc<Changes>) {
    let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
    let mut pause = Duration::from_millis(50);
    loop {
        // List for a starting point, then watch from it for as long as the
        // server keeps the watch open.
        let list = leases.list_metadata(&ListParams::default().labels(&selector).limit(1)).await;
        if let Ok(list) = list {
            let mut version = list.metadata.resource_version.unwrap_or_default();
            // Everything before the list is now seen: waiters read again.
            changes.wake_all();
            'watching: loop {
                let params = WatchParams::default().labels(&selector).timeout(290).disable_bookmarks();
                let Ok(stream) = leases.watch(&params, &version).await else { break };
                let mut stream = stream.boxed();
                while let Some(event) = stream.next().await {
                    pause = Duration::from_millis(50);
                    let (lease, deleted) = match event {
                        Ok(WatchEvent::Added(l) | WatchEvent::Modified(l)) => (l, false),
                        Ok(WatchEvent::Deleted(l)) => (l, true),
                        Ok(WatchEvent::Bookmark(b)) => {
                            version = b.metadata.resource_version;
                            continue;
                        }
                        // 410 Gone (too old) or anything else: list again.
                        Ok(WatchEvent::Error(_)) | Err(_) => break 'watching,
                    };
                    let name = lease.metadata.name.clone().unwrap_or_default();
                    if let Some(rv) = lease.metadata.resource_version.clone() {
                        let v = rv.parse::<u64>().unwrap_or(0);
                        // The record as the watch delivered it: a follower
                        // of the feed need not read it again.
                        let change = || {
                            let seen = match (!deleted).then(|| KubernetesStore::decode(&lease)) {
                                None => Seen::Deleted(v),
                                Some(Ok(stored)) => Seen::Written(stored),
                                Some(Err(_)) => Seen::Unreadable,
                            };
                            Change { key: key_of(&name), id: name.clone(), seen }
                        };
                        changes.publish(&name, if deleted { 0 } else { v }, change);
                        version = rv;
                    }
                }
                // The server closed the watch (its timeout): resume.
            }
        }
        changes.wake_all();
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

#[async_trait]
impl Store for KubernetesStore {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn max_waiters(&self) -> usize {
        MAX_WAITERS
    }

    fn check_name(&self, key: &Key) -> Result<(), NameRefused> {
        let name = lease_name(key);
        if name.len() > MAX_OBJECT_NAME {
            return Err(NameRefused::TooLong {
                length: key.name.len(),
                store: "kubernetes",
                object: format!("{}.NAME", key.kind.singular()),
                room: MAX_OBJECT_NAME - (name.len() - key.name.len()),
                limit: MAX_OBJECT_NAME,
            });
        }
        Ok(())
    }

    async fn get(&self, key: &Key) -> Result<Option<Versioned>, StoreError> {
        let lease = self.deadline("reading a Lease", self.leases.get_opt(&lease_name(key))).await?;
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        lease.as_ref().map(Self::decode).transpose()
    }

    async fn put(&self, key: &Key, record: &Record, current: Option<&Versioned>) -> Result<Versioned, StoreError> {
        let lease = self.encode(key, record, current)?;
        let params = PostParams::default();
        let name = lease_name(key);
        // 409: AlreadyExists on create, Conflict on a stale resourceVersion;
        // 404: deleted since it was read. Each means: read again.
        let lost_race = |code: u16| code == 409 || code == 404;
        let written = match current {
            None => self.deadline_or("creating a Lease", self.leases.create(&params, &lease), lost_race).await,
            Some(_) => {
                self.deadline_or("updating a Lease", self.leases.replace(&name, &params, &lease), lost_race).await
            }
        };
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        let written = written?;
        if let Some(events) = &self.events {
            // `record` as asked, not as decoded: it carries the `why`.
            let lease = events::Written {
                name: &name,
                uid: written.metadata.uid.as_deref(),
                resource_version: written.metadata.resource_version.as_deref(),
            };
            events.record(key.kind, current.map(|c| &c.record), record, lease);
        }
        Self::decode(&written)
    }

    async fn wait_change(&self, key: &Key, version: u64) -> Result<(), StoreError> {
        let read = async { Ok(self.get(key).await?.map_or(0, |v| v.version)) };
        self.changes.wait(lease_name(key), version, read, "kubernetes").await
    }

    fn feed(&self) -> super::Feed {
        self.changes.feed()
    }

    fn feed_id(&self, key: &Key) -> String {
        lease_name(key)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let params = ListParams::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)).limit(1);
        self.deadline("listing Leases", self.leases.list_metadata(&params)).await.map(drop)
    }

    async fn list(&self, kind: Kind, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        let selector = format!("{}={},{KIND_LABEL}={}", MANAGED_BY.0, MANAGED_BY.1, kind.singular());
        let mut params = ListParams::default().labels(&selector).limit(u32::try_from(limit.max(1)).unwrap_or(u32::MAX));
        if let Some(token) = cursor {
            params = params.continue_token(token);
        }
        // The cursor is the API server's continue token: 410 Gone once it
        // expired (the snapshot behind it was compacted), 400 if it is not one.
        let expired = |code: u16| cursor.is_some() && (code == 410 || code == 400);
        let list = match tokio::time::timeout(self.timeout, self.leases.list(&params)).await {
            Ok(Ok(list)) => list,
            Ok(Err(kube::Error::Api(status))) if expired(status.code) => {
                return Err(StoreError::BadCursor(format!(
                    "the Kubernetes API refused the continue token ({}); list again from the start",
                    status.message
                )));
            }
            Ok(Err(e)) => return Err(api_error("listing Leases", e)),
            Err(_) => return Err(unavailable("listing Leases", format!("no answer within {:?}", self.timeout))),
        };
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{}.", kind.singular());
        let mut records = Vec::with_capacity(list.items.len());
        for lease in &list.items {
            let object = lease.metadata.name.as_deref().unwrap_or_default();
            let Some(name) = object.strip_prefix(&prefix) else { continue };
            records.push((name.to_owned(), Self::decode(lease)?));
        }
        let next = list.metadata.continue_.filter(|c| !c.is_empty());
        Ok(Page { records, next })
    }

    fn sizes(&self) -> Vec<(&'static str, usize)> {
        vec![("watched", self.changes.len())]
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let mut counters = vec![
            ("read", self.counters.reads.load(Ordering::Relaxed)),
            ("write", self.counters.writes.load(Ordering::Relaxed)),
        ];
        if let Some(events) = &self.events {
            let (created, dropped) = events.counts();
            counters.extend([("event", created), ("event_dropped", dropped)]);
        }
        counters
    }
}
