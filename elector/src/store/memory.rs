//! The in-memory store: the embedded default, one elector per machine.
//!
//! Versions come from one counter for the whole store, so a version is never
//! reused, not even across names. A record that is created gets the version
//! of its first write as its fencing token; after that, tokens grow by one
//! per change of hands. So every token is at most the version that minted
//! it, and a record nobody holds or waits on can be forgotten: the next
//! holder of that name still gets a larger token. A record is forgotten as
//! soon as a write leaves it free with nobody waiting on it (a release, or
//! the elector clearing a lease that ran out, see `mpsync_core::judge`), or
//! when the last long-poll on a free or absent name ends; what is left is
//! the names held, or waited on, now. Records are capped at `max_records`;
//! past it, expired and free ones are swept, and a new name is refused with
//! [`StoreError::Full`] if that does not make room.
//!
//! With a [`StateFile`], the store is safe across restarts of the elector:
//! versions (and so tokens) continue above every one handed out before, and
//! after an unclean stop every name reads as held by
//! [`RECOVERING_HOLDER`] until the longest lease the previous process could
//! have granted has run out. See the state file's documentation.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mpsync_core::line::Line;
use mpsync_core::record::KeyDigest;
use mpsync_core::{Kind, Record};
use tokio::sync::{broadcast, watch};

use super::state_file::{StateError, StateFile};
use super::{Change, FEED_CAPACITY, Feed, Key, Page, Seen, Store, StoreError, Versioned};

/// The holder every name shows while a restarted store waits out the leases
/// its previous process may have granted.
pub const RECOVERING_HOLDER: &str = "(unknown: held before the elector restarted)";

/// The default cap on records kept at once.
pub const DEFAULT_MAX_RECORDS: usize = 100_000;

struct Entry {
    value: Option<Versioned>,
    /// When `value` was written, on this process's clock.
    written_at: Instant,
    changes: watch::Sender<u64>,
}

impl Entry {
    /// An entry without a record; `absent` is the version it reads at.
    fn new(absent: u64) -> Entry {
        Entry { value: None, written_at: Instant::now(), changes: watch::channel(absent).0 }
    }

    /// Someone holds it (exclusive or shared) with a lease that has not run
    /// out at `now`, or waits in line with a place that has not (a renewal
    /// or refresh writes the record, so each lasts at most its TTL past the
    /// last write).
    fn live(&self, now: Instant) -> bool {
        self.value.as_ref().is_some_and(|v| {
            // A released record with a transfer is reserved for one TTL.
            let holder = (v.record.holder.is_some() || v.record.transfer.is_some())
                && now < self.written_at + Duration::from_millis(v.record.ttl_ms);
            let line = &v.record.line;
            holder
                || line.waiters.iter().any(|w| now < self.written_at + w.ttl())
                || line.shares.iter().any(|s| now < self.written_at + s.ttl())
        })
    }

    /// Nothing in it needs keeping at `now`: nobody holds it (or the lease
    /// ran out) and nobody waits on it.
    fn forgettable(&self, now: Instant) -> bool {
        !self.live(now) && self.changes.receiver_count() == 0
    }
}

struct Inner {
    entries: HashMap<Key, Entry>,
    last_version: u64,
    /// The largest version of a record forgotten (or of the previous
    /// process, after a restart): what a name without a record reads at.
    forgotten: u64,
    state: Option<StateFile>,
    recovering_until: Option<Instant>,
    /// Every write, for watches over many names and the history (see
    /// [`Feed`]).
    feed: broadcast::Sender<Arc<Change>>,
}

/// Records in this process's memory.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    max_records: usize,
    reads: AtomicU64,
    writes: AtomicU64,
    refusals: AtomicU64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store that forgets everything when the process ends: fine
    /// for tests and for a library that lives as long as its clients.
    pub fn new() -> Self {
        MemoryStore {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                last_version: 0,
                forgotten: 0,
                state: None,
                recovering_until: None,
                feed: broadcast::channel(FEED_CAPACITY).0,
            }),
            max_records: DEFAULT_MAX_RECORDS,
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
        }
    }

    /// A store that keeps its state file at `path` (see the module
    /// documentation): safe across restarts.
    pub fn with_state_file(path: &Path) -> Result<Self, StateError> {
        let (state, recovery) = StateFile::open(path)?;
        let store = MemoryStore::new();
        {
            let mut inner = store.inner();
            inner.last_version = recovery.first_version;
            inner.forgotten = recovery.first_version;
            inner.state = Some(state);
            if !recovery.wait.is_zero() {
                inner.recovering_until = Some(Instant::now() + recovery.wait);
            }
        }
        Ok(store)
    }

    /// Caps the records kept at once.
    pub fn with_max_records(mut self, max: usize) -> Self {
        self.max_records = max.max(1);
        self
    }

    /// How long this store still refuses every grant after a restart.
    pub fn recovery_left(&self) -> Duration {
        self.inner().recovering_until.map_or(Duration::ZERO, |t| t.saturating_duration_since(Instant::now()))
    }

    /// Records a clean stop if no lease is live, so that the next start
    /// need not wait. Call once nothing can write any more.
    pub fn stop(&self) -> Result<bool, StateError> {
        let mut inner = self.inner();
        let now = Instant::now();
        let live = inner.entries.values().any(|e| e.live(now)) || inner.recovering_until.is_some_and(|t| now < t);
        match &mut inner.state {
            Some(state) if !live => state.mark_clean().map(|()| true),
            _ => Ok(false),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock would be a bug in the few lines
        // below; the map is still consistent, so keep serving.
        mpsync_core::lock(&self.inner)
    }

    fn refuse(&self, message: String) -> StoreError {
        self.refusals.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("{message}");
        StoreError::Full(message)
    }
}

impl Inner {
    /// Makes room for one more record if the cap is reached: forgets the
    /// records nothing needs. False if there is still no room.
    fn room_for_one(&mut self, max: usize) -> bool {
        if self.entries.len() < max {
            return true;
        }
        let now = Instant::now();
        let mut forgotten = self.forgotten;
        self.entries.retain(|_, e| {
            let keep = !e.forgettable(now);
            if !keep {
                forgotten = forgotten.max(e.value.as_ref().map_or(0, |v| v.version));
            }
            keep
        });
        self.forgotten = forgotten;
        self.entries.len() < max
    }

    /// Tells the feed that `key` is now `stored` (a record forgotten right
    /// after, as a release's is, still reports the write). A record
    /// forgotten by a sweep is not announced: it read as free before and
    /// reads as free after.
    fn announce(&self, key: &Key, stored: &Versioned) {
        if self.feed.receiver_count() > 0 {
            let change = Change { id: key.to_string(), key: Some(key.clone()), seen: Seen::Written(stored.clone()) };
            // No receiver is no error: nobody follows the feed now.
            let _ = self.feed.send(Arc::new(change));
        }
    }

    /// Forgets `key`'s entry.
    fn forget(&mut self, key: &Key) {
        if let Some(Some(v)) = self.entries.remove(key).map(|e| e.value) {
            self.forgotten = self.forgotten.max(v.version);
        }
        // The map keeps the room it grew to: give it back once mostly empty
        // (halving at most, so the rehash is paid for).
        if self.entries.capacity() > 1024 && self.entries.len() * 4 < self.entries.capacity() {
            self.entries.shrink_to(self.entries.len() * 2);
        }
    }

    fn entry(&mut self, key: &Key) -> &mut Entry {
        let absent = self.forgotten;
        self.entries.entry(key.clone()).or_insert_with(|| Entry::new(absent))
    }

    /// While recovering, a name nobody wrote reads as held until the
    /// recovery ends: materialised as a record with a version of its own so
    /// that compare-and-swap and long-polls work on it as on any other.
    fn recovering_record(&mut self, key: &Key, max: usize) -> Option<Versioned> {
        let until = self.recovering_until?;
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            self.recovering_until = None;
            return None;
        }
        if !self.room_for_one(max) {
            return None;
        }
        let version = self.last_version + 1;
        if self.state.as_mut().is_some_and(|s| s.reserve(version).is_err()) {
            return None;
        }
        self.last_version = version;
        let record = Record {
            holder: Some(RECOVERING_HOLDER.to_owned()),
            // Below every token this process mints (they are versions),
            // above every token the previous one did.
            token: version,
            ttl_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX).saturating_add(1),
            address: None,
            // Nobody can name the leases this stands for: it only runs
            // out, whoever reads its holder and token.
            key_sha256: Some(KeyDigest::unmatchable()),
            line: Line::default(),
            why: None,
            transfer: None,
        };
        let stored = Versioned::new(record, version);
        let entry = self.entry(key);
        entry.value = Some(stored.clone());
        entry.written_at = Instant::now();
        entry.changes.send_replace(version);
        self.announce(key, &stored);
        Some(stored)
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &Key) -> Result<Option<Versioned>, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.inner();
        if let Some(value) = inner.entries.get(key).and_then(|e| e.value.clone()) {
            return Ok(Some(value));
        }
        Ok(inner.recovering_record(key, self.max_records))
    }

    async fn put(&self, key: &Key, record: &Record, current: Option<&Versioned>) -> Result<Versioned, StoreError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        let expected = current.map(|c| c.version);
        let mut inner = self.inner();
        let stored_version = inner.entries.get(key).and_then(|e| e.value.as_ref().map(|v| v.version));
        if stored_version != expected {
            return Err(StoreError::Conflict);
        }
        if stored_version.is_none() && !inner.entries.contains_key(key) && !inner.room_for_one(self.max_records) {
            let max = self.max_records;
            drop(inner);
            return Err(self.refuse(format!(
                "the memory store holds {max} records (--max-records); refusing a new name until some are released"
            )));
        }
        let version = inner.last_version + 1;
        if let Some(state) = &mut inner.state {
            // Durable before the grant is: a restart must wait this long,
            // continue above this version, and not count on a clean stop.
            let durable = state
                .reserve(version)
                .and_then(|()| match longest_lease(record) {
                    Some(ttl_ms) => state.cover_ttl(ttl_ms),
                    None => Ok(()),
                })
                .and_then(|()| state.mark_dirty());
            if let Err(e) = durable {
                return Err(StoreError::Unavailable(format!("memory store: {e}")));
            }
        }
        let mut record = record.clone();
        if current.is_none() {
            // A new record: its token is this write's version, above every
            // token minted before (see the module documentation).
            record.retoken(version);
        }
        let stored = Versioned::new(record, version);
        inner.last_version = version;
        let entry = inner.entry(key);
        entry.value = Some(stored.clone());
        entry.written_at = Instant::now();
        entry.changes.send_replace(version);
        if entry.forgettable(Instant::now()) {
            inner.forget(key);
        }
        inner.announce(key, &stored);
        Ok(stored)
    }

    async fn list(&self, kind: Kind, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let inner = self.inner();
        // The cursor is the last name of the previous page.
        let mut records: Vec<(String, Versioned)> = inner
            .entries
            .iter()
            .filter(|(k, _)| k.kind == kind && cursor.is_none_or(|after| k.name.as_str() > after))
            .filter_map(|(k, e)| e.value.clone().map(|v| (k.name.clone(), v)))
            .collect();
        drop(inner);
        records.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let limit = limit.max(1);
        let next = (records.len() > limit).then(|| records[limit - 1].0.clone());
        records.truncate(limit);
        Ok(Page { records, next })
    }

    async fn wait_change(&self, key: &Key, version: u64) -> Result<(), StoreError> {
        let mut changes = self.inner().entry(key).changes.subscribe();
        // Forget the entry on the way out (also when the long-poll is
        // cancelled) if nothing else needs it.
        let _cleanup = Forget { store: self, key };
        while *changes.borrow_and_update() == version {
            if changes.changed().await.is_err() {
                // The entry was dropped while this waited: it was forgotten,
                // which is a change.
                return Ok(());
            }
        }
        Ok(())
    }

    fn feed(&self) -> Feed {
        // No watch to break: the generation never moves.
        Feed { changed: self.inner().feed.subscribe(), generation: watch::channel(0).1 }
    }

    fn feed_id(&self, key: &Key) -> String {
        key.to_string()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let left = self.recovery_left();
        if left.is_zero() {
            return Ok(());
        }
        Err(StoreError::Unavailable(format!(
            "recovering after a restart: no lease is granted for {} ms more, until every lease the previous \
             elector may have granted has run out",
            left.as_millis()
        )))
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("read", self.reads.load(Ordering::Relaxed)),
            ("write", self.writes.load(Ordering::Relaxed)),
            ("refused_full", self.refusals.load(Ordering::Relaxed)),
        ]
    }

    fn absent_version(&self) -> u64 {
        self.inner().forgotten
    }

    fn sizes(&self) -> Vec<(&'static str, usize)> {
        vec![("records", self.inner().entries.len())]
    }
}

/// The longest lease `record` grants, exclusive or shared (what a restart
/// must wait out), if it grants any.
fn longest_lease(record: &Record) -> Option<u64> {
    let exclusive = record.holder.as_ref().map(|_| record.ttl_ms);
    exclusive.into_iter().chain(record.line.shares.iter().map(|s| s.ttl_ms)).max()
}

struct Forget<'a> {
    store: &'a MemoryStore,
    key: &'a Key,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        let mut inner = self.store.inner();
        // Our own receiver is still alive while this runs: allow one.
        let unneeded = inner.entries.get(self.key).is_some_and(|e| {
            e.changes.receiver_count() <= 1
                && e.value.as_ref().is_none_or(|v| {
                    v.record.holder.is_none()
                        && v.record.transfer.is_none()
                        && v.record.line.waiters.is_empty()
                        && v.record.line.shares.is_empty()
                })
        });
        if unneeded {
            inner.forget(self.key);
        }
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
        Record { holder: Some(holder.into()), token: 1, ..Record::free(1000) }
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

    #[tokio::test]
    async fn released_records_are_forgotten_and_tokens_still_grow() {
        let store = MemoryStore::new();
        let held = store.put(&key("a"), &rec("x"), None).await.unwrap();
        let free = Record { holder: None, ..held.record.clone() };
        store.put(&key("a"), &free, Some(&held)).await.unwrap();
        assert_eq!(store.get(&key("a")).await.unwrap(), None, "a released record nobody waits on is forgotten");
        assert_eq!(store.sizes(), vec![("records", 0)]);
        let again = store.put(&key("a"), &rec("y"), None).await.unwrap();
        assert!(again.record.token > held.record.token);
    }

    #[tokio::test]
    async fn past_the_cap_a_new_name_is_refused_until_room_is_made() {
        let store = MemoryStore::new().with_max_records(2);
        let a = store.put(&key("a"), &rec("x"), None).await.unwrap();
        store.put(&key("b"), &rec("x"), None).await.unwrap();
        assert!(matches!(store.put(&key("c"), &rec("x"), None).await, Err(StoreError::Full(_))));
        let free = Record { holder: None, ..a.record.clone() };
        store.put(&key("a"), &free, Some(&a)).await.unwrap();
        store.put(&key("c"), &rec("x"), None).await.unwrap();
        assert_eq!(store.counters()[2], ("refused_full", 1));
    }

    #[tokio::test]
    async fn after_an_unclean_restart_every_name_is_held_until_the_old_leases_ran_out() {
        let dir = std::env::temp_dir().join(format!("mpsync-memory-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("state.json");
        let first = MemoryStore::with_state_file(&path).unwrap();
        let long = Record { ttl_ms: 60_000, ..rec("x") };
        let old = first.put(&key("a"), &long, None).await.unwrap();
        drop(first);
        let second = MemoryStore::with_state_file(&path).unwrap();
        assert!(second.recovery_left() > Duration::from_secs(50));
        assert!(second.ping().await.is_err(), "not ready while recovering");
        let seen = second.get(&key("b")).await.unwrap().unwrap();
        assert_eq!(seen.record.holder.as_deref(), Some(RECOVERING_HOLDER));
        assert!(seen.record.token > old.record.token);
        assert!(!second.stop().unwrap(), "not clean while recovering");
    }
}
