//! Where records live: the [`Store`] trait and its implementations.
//!
//! A store is a map from [`Key`] to [`Record`] with two primitives every
//! backend can provide faithfully: compare-and-swap on a version
//! ([`Store::put`]) and waiting for a version to change
//! ([`Store::wait_change`], which serves long-polls). All lease rules live
//! above the store, in `mpsync_core::record`; a store never decides who
//! holds what.
//!
//! - [`memory`]: in-process, the embedded default for one machine.

use async_trait::async_trait;
use mpsync_core::{Kind, Record};
use thiserror::Error;

pub mod memory;

pub use memory::MemoryStore;

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
}

/// A place to keep records, with compare-and-swap and change notification.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and `/readyz` (`memory`, `etcd`, `kubernetes`).
    fn name(&self) -> &'static str;

    /// Reads a record; `None` if it was never written.
    async fn get(&self, key: &Key) -> Result<Option<Versioned>, StoreError>;

    /// Writes `record` if the stored version is `expected` (`None`: only if
    /// the record does not exist). Returns the new version, or
    /// [`StoreError::Conflict`].
    async fn put(&self, key: &Key, record: &Record, expected: Option<u64>) -> Result<u64, StoreError>;

    /// Resolves once the record's version differs from `version` (0 for
    /// "absent"); at once if it already does. Must be cancel-safe.
    async fn wait_change(&self, key: &Key, version: u64) -> Result<(), StoreError>;

    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
}
