//! A watch over many names in one request (`POST /v1/watch`, see
//! `mpsync_core::watch`): one long-poll that answers when any of the
//! records it names is news to the client.
//!
//! It holds one long-poll slot, whatever the number of names, and learns
//! of changes from the store's [`Feed`](crate::store::Feed): it subscribes,
//! reads every record it names once, then reads again only the records the
//! feed says changed (all of them when the feed lagged or the store's own
//! watch broke). A lease running out writes nothing: the watch looks again
//! at the earliest expiry among the leases it shows held.
//!
//! A new watch from the same `watcher` on this elector answers the one
//! before it at once ([`Watchers`]), so a client whose set of names grows
//! never holds two.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use mpsync_core::watch::{Since, WatchAnswer, WatchRequest, Watched};
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;

use super::{Service, ServiceError, View};
use crate::store::{Key, Store, StoreError, Versioned};

/// Above this many names a watch reads its records by listing them (one
/// call per page) rather than one read each, where the store is remote.
pub const LIST_ABOVE: usize = 64;

/// How long a watch that replaces another waits for the slot it gives back.
const REPLACING: Duration = Duration::from_secs(1);

/// Reads at once while reading records one by one.
const READS_IN_FLIGHT: usize = 32;

/// The watch in progress for each watcher id, so that the next one from
/// the same watcher can answer it.
#[derive(Default)]
pub(crate) struct Watchers {
    current: Mutex<HashMap<String, (u64, Arc<Notify>)>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// A watch registered under a watcher id; leaving removes it unless a
/// newer watch of the same watcher replaced it.
pub(crate) struct Registered<'a> {
    watchers: &'a Watchers,
    watcher: Option<(String, u64)>,
    /// Notified when a newer watch of the same watcher arrives.
    pub(crate) superseded: Arc<Notify>,
    /// This watch answered an older one of its watcher, which is about to
    /// give its long-poll slot back.
    pub(crate) replaces: bool,
}

impl Watchers {
    /// How many watchers have a watch in progress.
    pub(crate) fn len(&self) -> usize {
        mpsync_core::lock(&self.current).len()
    }

    /// Registers a watch of `watcher`, answering its previous one.
    pub(crate) fn register(&self, watcher: Option<&str>) -> Registered<'_> {
        let superseded = Arc::new(Notify::new());
        let Some(watcher) = watcher else {
            return Registered { watchers: self, watcher: None, superseded, replaces: false };
        };
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let previous = mpsync_core::lock(&self.current).insert(watcher.to_owned(), (id, superseded.clone()));
        let replaces = previous.is_some();
        if let Some((_, previous)) = previous {
            // A permit is stored if the previous watch is between two
            // looks: it answers at its next one.
            previous.notify_one();
        }
        Registered { watchers: self, watcher: Some((watcher.to_owned(), id)), superseded, replaces }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Some((watcher, id)) = &self.watcher {
            let mut current = mpsync_core::lock(&self.watchers.current);
            if current.get(watcher).is_some_and(|(current_id, _)| current_id == id) {
                current.remove(watcher);
            }
        }
    }
}

/// One record a watch follows.
struct Followed {
    key: Key,
    /// What the client knows of it.
    known: Since,
    stored: Option<Versioned>,
}

/// When to look again at each record shown held: when its lease would
/// run out. A record's newer time replaces its older one (the heap keeps
/// the older entry until it comes up, then drops it).
struct Expiries {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
    at: Vec<Option<Instant>>,
}

impl Expiries {
    fn new(records: usize) -> Expiries {
        Expiries { heap: BinaryHeap::new(), at: vec![None; records] }
    }

    fn set(&mut self, i: usize, at: Instant) {
        if self.at[i] != Some(at) {
            self.at[i] = Some(at);
            self.heap.push(Reverse((at, i)));
        }
    }

    /// The earliest time to look again.
    fn next(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, i))) = self.heap.peek().copied() {
            if self.at[i] == Some(at) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// The records due at `now`, no longer scheduled.
    fn due(&mut self, now: Instant) -> Vec<usize> {
        let mut due = Vec::new();
        while let Some(at) = self.next() {
            if at > now {
                break;
            }
            if let Some(Reverse((_, i))) = self.heap.pop() {
                self.at[i] = None;
                due.push(i);
            }
        }
        due
    }
}

/// Reads the records of `keys`, in order: one by one, or by listing their
/// kinds where there are many and the store is remote.
async fn read_all(store: &dyn Store, keys: &[&Key]) -> Result<Vec<Option<Versioned>>, StoreError> {
    if keys.len() > LIST_ABOVE && store.name() != "memory" {
        return read_by_listing(store, keys).await;
    }
    // Made first, then run (a closure in the stream would have to be
    // general over the lifetimes, and is not).
    let reads: Vec<_> = keys.iter().map(|key| store.get(key)).collect();
    let reads = futures::stream::iter(reads).buffered(READS_IN_FLIGHT);
    reads.collect::<Vec<_>>().await.into_iter().collect()
}

async fn read_by_listing(store: &dyn Store, keys: &[&Key]) -> Result<Vec<Option<Versioned>>, StoreError> {
    let mut found: HashMap<&Key, Versioned> = HashMap::new();
    let wanted: std::collections::HashSet<&Key> = keys.iter().copied().collect();
    for kind in [mpsync_core::Kind::Election, mpsync_core::Kind::Lock] {
        if !keys.iter().any(|k| k.kind == kind) {
            continue;
        }
        let mut cursor = None;
        loop {
            let page = store.list(kind, cursor.as_deref(), mpsync_core::wire::MAX_LIST_LIMIT).await?;
            for (name, stored) in page.records {
                let key = Key { kind, name };
                if let Some(wanted) = wanted.get(&key) {
                    found.insert(wanted, stored);
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    Ok(keys.iter().map(|key| found.remove(key)).collect())
}

impl Service {
    /// The watch in progress per watcher id, for `/metrics`.
    pub fn watchers_count(&self) -> usize {
        self.watchers.len()
    }

    /// The most names one watch may follow.
    pub fn max_watch_names(&self) -> usize {
        self.max_watch_names
    }

    /// Caps the names one watch may follow.
    pub fn with_max_watch_names(mut self, max: usize) -> Self {
        self.max_watch_names = max.max(1);
        self
    }

    /// Checks a watch before it parks: how many names, each name valid
    /// for the store.
    pub fn check_watch(&self, request: &WatchRequest) -> Result<(), ServiceError> {
        let field = if request.elections.is_empty() { "locks" } else { "elections" };
        let invalid = |field, name, message| ServiceError::InvalidWatch { field, name, message };
        if request.is_empty() {
            return Err(invalid(field, false, "a watch names at least one election or lock".into()));
        }
        if request.len() > self.max_watch_names {
            let (n, max) = (request.len(), self.max_watch_names);
            let message = format!("the watch names {n} records; at most {max} are allowed (--max-watch-names)");
            return Err(invalid(field, false, message));
        }
        if let Some(watcher) = &request.watcher
            && !mpsync_core::watch::valid_watcher(watcher)
        {
            let max = mpsync_core::watch::MAX_WATCHER_LEN;
            return Err(invalid(
                "watcher",
                false,
                format!("watcher {watcher:?} is not 1 to {max} of A-Z a-z 0-9 - _ ."),
            ));
        }
        for (kind, name, _) in request.entries() {
            let field = match kind {
                mpsync_core::Kind::Election => "elections",
                mpsync_core::Kind::Lock => "locks",
            };
            let refused =
                |reason: String| invalid(field, true, format!("invalid {} name {name:?}: {reason}", kind.singular()));
            mpsync_core::validate_name(name).map_err(|e| refused(e.to_string()))?;
        }
        Ok(())
    }

    /// Answers with the records of `request` that are news (see
    /// `WatchRequest`), as soon as there is one; with none after its
    /// timeout, at shutdown, or when a newer watch of the same watcher
    /// arrives (then with whatever differs at that moment).
    pub async fn watch_many(&self, request: &WatchRequest) -> Result<WatchAnswer, ServiceError> {
        self.check_watch(request)?;
        let timeout = request.timeout().map_err(|message| ServiceError::InvalidWatch {
            field: "timeout_ms",
            name: false,
            message,
        })?;
        let deadline = Instant::now() + timeout.min(self.max_poll_wait);
        let registered = self.watchers.register(request.watcher.as_deref());
        // A look with nothing to wait for parks nothing. A watch that
        // replaces an older one of its watcher may wait a moment for the
        // slot that one gives back: at --max-long-polls, a proxy's grown
        // set would otherwise be refused while its old watch stays parked.
        let _parked = match (timeout.is_zero(), registered.replaces) {
            (true, _) => None,
            (false, false) => Some(self.park()?),
            (false, true) => Some(self.park_within(REPLACING).await?),
        };
        let _names = self.metrics.watching_names(request.len());
        let mut stopping = self.stopping.subscribe();
        // Subscribed before reading: a change after the read is in the feed.
        let mut feed = self.store.feed();
        feed.generation.borrow_and_update();
        // A valid name the store cannot keep (too long for a Lease's name)
        // can never be held: followed by nobody, rather than failing the
        // watch, and so every other name a proxy follows, for one
        // client's odd shard key.
        let mut followed: Vec<Followed> = request
            .entries()
            .map(|(kind, name, known)| Followed { key: Key { kind, name: name.to_owned() }, known, stored: None })
            .filter(|f| self.store.check_name(&f.key).is_ok())
            .collect();
        let ids: HashMap<String, usize> =
            followed.iter().enumerate().map(|(i, f)| (self.store.feed_id(&f.key), i)).collect();
        self.read_again(&mut followed, None).await?;
        // Every record is looked at first; then only those read again or
        // whose lease may have run out.
        let mut due: Vec<usize> = (0..followed.len()).collect();
        let mut expiries = Expiries::new(followed.len());
        let mut generation_open = true;
        loop {
            let changed = self.look(&followed, &due, &mut expiries);
            if !changed.is_empty() || *stopping.borrow_and_update() {
                return Ok(WatchAnswer { changed });
            }
            due.clear();
            let next_expiry = expiries.next();
            tokio::select! {
                received = feed.changed.recv() => {
                    let mut stale = Vec::new();
                    let mut everything = false;
                    // Read again rather than use the record the feed
                    // carries: the look compares what a read returns.
                    let mut push = |received: Result<std::sync::Arc<crate::store::Change>, _>| match received {
                        Ok(change) => stale.extend(ids.get(&change.id).copied()),
                        Err(broadcast::error::RecvError::Lagged(_)) => everything = true,
                        Err(broadcast::error::RecvError::Closed) => everything = true,
                    };
                    push(received);
                    // Whatever else is already queued, in the same look.
                    loop {
                        match feed.changed.try_recv() {
                            Ok(id) => push(Ok(id)),
                            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                                push(Err(broadcast::error::RecvError::Lagged(n)));
                            }
                            Err(_) => break,
                        }
                    }
                    if everything {
                        stale = (0..followed.len()).collect();
                    }
                    stale.sort_unstable();
                    stale.dedup();
                    self.read_again(&mut followed, Some(&stale)).await?;
                    due = stale;
                }
                changed = feed.generation.changed(), if generation_open => {
                    // A store without a watch of its own never bumps it.
                    generation_open = changed.is_ok();
                    if generation_open {
                        self.read_again(&mut followed, None).await?;
                        due = (0..followed.len()).collect();
                    }
                }
                () = async { tokio::time::sleep_until(next_expiry.unwrap_or(deadline)).await }, if next_expiry.is_some() => {
                    // Read again first: a renewal through another
                    // elector may not be in the feed yet.
                    due = expiries.due(Instant::now());
                    self.read_again(&mut followed, Some(&due)).await?;
                }
                // At the end, and when superseded: whatever differs now.
                () = tokio::time::sleep_until(deadline) => return Ok(self.last_look(&followed)),
                () = registered.superseded.notified() => return Ok(self.last_look(&followed)),
                _ = stopping.changed() => {}
            }
        }
    }

    /// Reads the records at `which` (all when `None`) again.
    async fn read_again(&self, followed: &mut [Followed], which: Option<&[usize]>) -> Result<(), StoreError> {
        let indices: Vec<usize> = match which {
            Some(which) => which.to_vec(),
            None => (0..followed.len()).collect(),
        };
        let keys: Vec<&Key> = indices.iter().map(|&i| &followed[i].key).collect();
        let read = read_all(self.store.as_ref(), &keys).await?;
        for (i, stored) in indices.into_iter().zip(read) {
            followed[i].stored = stored;
        }
        Ok(())
    }

    /// Judges every record now, for the last answer.
    fn last_look(&self, followed: &[Followed]) -> WatchAnswer {
        let every: Vec<usize> = (0..followed.len()).collect();
        WatchAnswer { changed: self.look(followed, &every, &mut Expiries::new(followed.len())) }
    }

    /// Judges the records at `due` now: those whose view differs from
    /// what the client knows, and, for the rest held, when to look again.
    fn look(&self, followed: &[Followed], due: &[usize], expiries: &mut Expiries) -> Vec<Watched> {
        let now = self.now();
        let mut changed = Vec::new();
        for &i in due {
            let f = &followed[i];
            let view = self.view(&f.key, f.stored.as_ref(), now);
            let news = match (f.known, &view) {
                // Nobody known: only a holder is news (see WatchRequest).
                (Since { version: 0, .. }, view) => matches!(view, View::Held(_)),
                // A holder known by its token: renewals are no news.
                // (Or one at a lower version: the store's tokens began
                // again, a memory store restarted without its state.)
                (Since { version, token: Some(token) }, View::Held(lease)) => {
                    lease.token != token || lease.version < version
                }
                (Since { token: Some(_), .. }, _) => true,
                (Since { version, token: None }, view) => view.version() != version,
            };
            if news {
                let version = view.version();
                let lease = match view {
                    View::Held(lease) => Some(lease),
                    View::Free { .. } | View::Absent { .. } => None,
                };
                changed.push(Watched { kind: f.key.kind, name: f.key.name.clone(), version, lease });
            } else if let View::Held(lease) = &view {
                // Rounded up, so the look comes after the expiry.
                expiries.set(i, Instant::now() + Duration::from_millis(lease.expires_in_ms + 1));
            }
        }
        changed
    }
}
