//! The in-memory store: the embedded default, one elector per machine.
//!
//! Versions come from one counter for the whole store, so a version is never
//! reused, not even across names. Records are kept for the life of the
//! process (a released record keeps its fencing token), which costs a few
//! dozen bytes per name ever used.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use mpsync_core::Record;
use tokio::sync::watch;

use super::{Key, Store, StoreError, Versioned};

struct Entry {
    value: Option<Versioned>,
    changes: watch::Sender<u64>,
}

impl Entry {
    fn new() -> Entry {
        Entry { value: None, changes: watch::channel(0).0 }
    }
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    last_version: u64,
}

/// Records in this process's memory.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    reads: AtomicU64,
    writes: AtomicU64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock would be a bug in the few lines
        // below; the map is still consistent, so keep serving.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &Key) -> Result<Option<Versioned>, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(self.inner().entries.get(key).and_then(|e| e.value.clone()))
    }

    async fn put(&self, key: &Key, record: &Record, current: Option<&Versioned>) -> Result<Versioned, StoreError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        let expected = current.map(|c| c.version);
        let mut inner = self.inner();
        let version = inner.last_version + 1;
        let entry = inner.entries.entry(key.clone()).or_insert_with(Entry::new);
        if entry.value.as_ref().map(|v| v.version) != expected {
            return Err(StoreError::Conflict);
        }
        let stored = Versioned { record: record.clone(), version };
        entry.value = Some(stored.clone());
        entry.changes.send_replace(version);
        inner.last_version = version;
        Ok(stored)
    }

    async fn wait_change(&self, key: &Key, version: u64) -> Result<(), StoreError> {
        let mut changes = self.inner().entries.entry(key.clone()).or_insert_with(Entry::new).changes.subscribe();
        // The sender lives as long as the entry, which lives as long as the
        // store, so `changed` only fails if the store is being dropped.
        while *changes.borrow_and_update() == version {
            if changes.changed().await.is_err() {
                return Err(StoreError::Unavailable("the memory store is shutting down".into()));
            }
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![("read", self.reads.load(Ordering::Relaxed)), ("write", self.writes.load(Ordering::Relaxed))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpsync_core::Kind;

    fn key(name: &str) -> Key {
        Key { kind: Kind::Lock, name: name.into() }
    }

    fn rec(holder: &str) -> Record {
        Record { holder: Some(holder.into()), token: 1, ttl_ms: 1000, address: None }
    }

    #[tokio::test]
    async fn compare_and_swap_on_the_version() {
        let store = MemoryStore::new();
        let v1 = store.put(&key("a"), &rec("x"), None).await.unwrap();
        assert_eq!(store.put(&key("a"), &rec("y"), None).await, Err(StoreError::Conflict));
        let stale = Versioned { version: v1.version + 1, ..v1.clone() };
        assert_eq!(store.put(&key("a"), &rec("y"), Some(&stale)).await, Err(StoreError::Conflict));
        let v2 = store.put(&key("a"), &rec("y"), Some(&v1)).await.unwrap();
        assert!(v2.version > v1.version);
        let other = store.put(&key("b"), &rec("x"), None).await.unwrap();
        assert!(other.version > v2.version, "versions are never reused across names");
        assert_eq!(store.get(&key("a")).await.unwrap().unwrap().record.holder.as_deref(), Some("y"));
    }

    #[tokio::test]
    async fn wait_change_wakes_on_write_and_returns_at_once_when_stale() {
        let store = std::sync::Arc::new(MemoryStore::new());
        store.wait_change(&key("a"), 5).await.unwrap();
        let waiter = tokio::spawn({
            let store = store.clone();
            async move { store.wait_change(&key("a"), 0).await }
        });
        tokio::task::yield_now().await;
        store.put(&key("a"), &rec("x"), None).await.unwrap();
        waiter.await.unwrap().unwrap();
    }
}
