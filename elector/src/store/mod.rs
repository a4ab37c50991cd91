//! Where records live: the [`Store`] trait and its implementations.
//!
//! A store is a map from [`Key`] to [`Record`] with two primitives every
//! backend can provide faithfully: compare-and-swap on a version
//! ([`Store::put`]) and waiting for a version to change
//! ([`Store::wait_change`], which serves long-polls). All lease rules live
//! above the store, in `mpsync_core::record`; a store never decides who
//! holds what.
//!
//! Fencing tokens: the core's rule (`previous + 1` per change of hands) needs
//! a record that outlives its holders. A store whose records can vanish
//! (etcd deletes a record when its etcd lease runs out) replaces the token
//! of a write that changes hands with its own revision, which only grows;
//! [`Store::put`] returns the record as stored.
//!
//! - [`memory`]: in-process, the embedded default for one machine, made
//!   safe across restarts by its [`state_file`].
//! - [`etcd`]: etcd v3, records bound to an etcd lease, revisions as tokens.
//! - [`kubernetes`]: `coordination.k8s.io/v1` Lease objects.
//! - [`observed`]: any store, with the outcome of each call in the metrics.

use async_trait::async_trait;
use mpsync_core::{Kind, Record};
use thiserror::Error;
use tokio::sync::{broadcast, watch};

mod changes;
pub mod etcd;
pub mod kubernetes;
pub mod memory;
pub mod observed;
pub mod state_file;

pub use etcd::EtcdStore;
pub use kubernetes::KubernetesStore;
pub use memory::MemoryStore;

/// How many waiters a lock's line may hold, in a store with room for them
/// (the memory store).
pub const DEFAULT_MAX_WAITERS: usize = 10_000;

/// Identifies one record: a lock or an election, by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Lock or election.
    pub kind: Kind,
    /// A validated name (see `mpsync_core::validate_name`).
    pub name: String,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind.plural(), self.name)
    }
}

/// A record with the version the store gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The record.
    pub record: Record,
    /// Its version: never 0 (0 stands for "absent"), and a new value on
    /// every write.
    pub version: u64,
    /// When the record last changed hands, in a store that records it (a
    /// Kubernetes Lease's `acquireTime`), so that a renewal written over
    /// this version keeps it; `None` elsewhere.
    pub acquired_at: Option<std::time::SystemTime>,
}

impl Versioned {
    /// `record` at `version`, in a store that does not record when it
    /// changed hands.
    pub fn new(record: Record, version: u64) -> Versioned {
        Versioned { record, version, acquired_at: None }
    }
}

/// What can go wrong in a store.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    /// The compare-and-swap failed: the record is no longer at the expected
    /// version. Read again and decide again.
    #[error("the record changed since it was read")]
    Conflict,
    /// The store could not be reached or did not answer in time; the
    /// message says what was tried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store keeps as many records as it may; the message says which
    /// limit. Releasing locks makes room.
    #[error("store full: {0}")]
    Full(String),
    /// A listing's cursor is not one this store gave out (or has expired).
    #[error("invalid cursor: {0}")]
    BadCursor(String),
}

/// One page of a listing: records of one kind in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// The records, by name.
    pub records: Vec<(String, Versioned)>,
    /// Where the next page starts, if there may be one (opaque).
    pub next: Option<String>,
}

/// A name a store cannot keep a record under, though it is a valid name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameRefused {
    /// Too long once the store adds its own prefix.
    #[error(
        "it is {length} characters; in the {store} store it becomes the object name {object:?}, so at most {room} \
         characters fit in the {limit} allowed"
    )]
    TooLong {
        /// The name's length.
        length: usize,
        /// The store.
        store: &'static str,
        /// The shape of the object name it would become.
        object: String,
        /// How many characters of name fit.
        room: usize,
        /// The store's own limit on object names.
        limit: usize,
    },
}

/// How many changes a [`Feed`] holds for a reader that fell behind; one
/// that falls further behind reads everything again.
pub const FEED_CAPACITY: usize = 4096;

/// Every change in a store, for a watch over many names and the history:
/// each record written or deleted, as the store learns of it, with what it
/// holds now (so a follower need not read it again), and a generation
/// bumped when the store may have missed changes (its own watch broke),
/// after which a reader reads again whatever it follows.
pub struct Feed {
    /// Records that changed. A reader that lags reads everything again
    /// (`RecvError::Lagged`).
    pub changed: broadcast::Receiver<std::sync::Arc<Change>>,
    /// Bumped when changes may have been missed.
    pub generation: watch::Receiver<u64>,
}

/// One change a [`Feed`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The record's id (see [`Store::feed_id`]).
    pub id: String,
    /// Its key; `None` for an id that names no record of this store's
    /// (an object someone else wrote under its prefix).
    pub key: Option<Key>,
    /// What it holds now.
    pub seen: Seen,
}

/// What a changed record holds now, as the store wrote it or its watch
/// delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant, reason = "sent once behind an Arc; boxing the record buys nothing")]
pub enum Seen {
    /// Written: the record as stored.
    Written(Versioned),
    /// Deleted, at this version of the store (0: unknown).
    Deleted(u64),
    /// Written, but it did not decode: read it again ([`Store::get`]).
    Unreadable,
}

/// A place to keep records, with compare-and-swap and change notification.
///
/// The service sees every store through [`observed::Observed`]: a method
/// added here must be forwarded there too, or its default would hide the
/// store's own.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and `/readyz` (`memory`, `etcd`, `kubernetes`).
    fn name(&self) -> &'static str;

    /// Checks that this store can keep a record under `key`'s name, before
    /// any call to the store (a Kubernetes object name has a prefix to fit
    /// in, for example).
    fn check_name(&self, _key: &Key) -> Result<(), NameRefused> {
        Ok(())
    }

    /// The longest lease this store can guard, in milliseconds.
    fn max_ttl_ms(&self) -> u64 {
        mpsync_core::wire::MAX_TTL_MS
    }

    /// The most waiters one lock's line may hold here: each is written into
    /// the record, so a store whose records are small holds fewer.
    fn max_waiters(&self) -> usize {
        DEFAULT_MAX_WAITERS
    }

    /// Reads a record; `None` if it was never written (or, in a store whose
    /// records expire, after it expired there).
    async fn get(&self, key: &Key) -> Result<Option<Versioned>, StoreError>;

    /// Writes `record` if the stored record is still `current` (compared by
    /// version; `None`: only if the record does not exist). Returns the
    /// record as stored, with its new version, or [`StoreError::Conflict`].
    ///
    /// When `record.token` differs from `current`'s, the write changes
    /// hands: a store may then replace the token with a larger one of its
    /// own (see the module documentation); otherwise it keeps it.
    async fn put(&self, key: &Key, record: &Record, current: Option<&Versioned>) -> Result<Versioned, StoreError>;

    /// Resolves once the record's version differs from `version` (0 for
    /// "absent"); at once if it already does. Must be cancel-safe.
    async fn wait_change(&self, key: &Key, version: u64) -> Result<(), StoreError>;

    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Subscribes to every change this store learns of, from now on (see
    /// [`Feed`]); subscribe before reading, so that nothing written after
    /// the read is missed.
    fn feed(&self) -> Feed;

    /// The id under which [`Store::feed`] reports `key`.
    fn feed_id(&self, key: &Key) -> String;

    /// Up to `limit` (at least 1) records of `kind` in name order, from
    /// where `cursor` (the `next` of the previous page) left off. A name
    /// written while a listing pages through may or may not show up, as in
    /// any paginated listing of a live store.
    async fn list(&self, kind: Kind, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError>;

    /// Calls made to the backing store so far, by kind (`read`, `write`,
    /// ...), for `/metrics` and the benchmarks.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// The version to report for a name with no record: at least the last
    /// version of every record this store has forgotten (0 if it forgets
    /// nothing), so that what a client sees of one name never goes back.
    fn absent_version(&self) -> u64 {
        0
    }

    /// Entries in the maps this store keeps in the elector's memory, by
    /// map (`records`, `watched`), for `/metrics`: each comes back to its
    /// size at rest however many names come and go.
    fn sizes(&self) -> Vec<(&'static str, usize)> {
        Vec::new()
    }
}
