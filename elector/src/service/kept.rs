//! The state of one watcher's set for a watch over many names
//! ([`super::many`]): the records it follows and what the client knows of
//! each, the store's feed it learns of changes from, when to look again at
//! leases shown held, and the records to look at before parking. A watch
//! builds it from its request, or takes it from its watcher's last watch
//! (`resume`, kept in [`super::watchers`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use mpsync_core::watch::Since;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::store::{Change, Feed, Key, Store, Versioned};

/// One record a watch follows.
pub(super) struct Followed {
    pub(super) key: Key,
    /// What the client knows of it.
    pub(super) known: Since,
    pub(super) stored: Option<Versioned>,
    /// A valid name the store cannot keep (too long for a Lease's name):
    /// never held, so never news, rather than failing the watch (and so
    /// every other name a proxy follows) for one client's odd shard key.
    pub(super) never: bool,
}

/// The state of one watcher's set: the records it follows, the feed it
/// learns of changes from, when to look again at leases shown held, and
/// the records to look at before parking. A watch builds it from its
/// request, or takes it kept from its watcher's last watch (`resume`).
pub(crate) struct Kept {
    /// The id the client gave it (`keep`).
    pub(super) id: String,
    pub(super) followed: Vec<Followed>,
    /// The index of each record in `followed`, by key and by feed id.
    pub(super) by_key: HashMap<Key, usize>,
    pub(super) by_feed_id: HashMap<String, usize>,
    /// Subscribed before the first read: a change after it is in the feed.
    pub(super) feed: Feed,
    /// Whether the store bumps the feed's generation (one without a watch
    /// of its own drops it).
    pub(super) generation_open: bool,
    pub(super) expiries: Expiries,
    /// To look at before parking.
    pub(super) due: Vec<usize>,
}

/// When to look again at each record shown held: when its lease would
/// run out. A record's newer time replaces its older one (the heap keeps
/// the older entry until it comes up, then drops it).
pub(super) struct Expiries {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
    at: Vec<Option<Instant>>,
}

impl Expiries {
    pub(super) fn new(records: usize) -> Expiries {
        Expiries { heap: BinaryHeap::new(), at: vec![None; records] }
    }

    /// One more record, not scheduled.
    fn grow(&mut self) {
        self.at.push(None);
    }

    pub(super) fn set(&mut self, i: usize, at: Instant) {
        if self.at[i] != Some(at) {
            self.at[i] = Some(at);
            self.heap.push(Reverse((at, i)));
        }
    }

    /// The earliest time to look again.
    pub(super) fn next(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, i))) = self.heap.peek().copied() {
            if self.at[i] == Some(at) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// The records due at `now`, no longer scheduled.
    pub(super) fn due(&mut self, now: Instant) -> Vec<usize> {
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

impl Kept {
    /// Follows one more record (not read yet); its index.
    pub(super) fn add(&mut self, store: &dyn Store, key: Key, known: Since) -> usize {
        let i = self.followed.len();
        let never = store.check_name(&key).is_err();
        if !never {
            self.by_feed_id.insert(store.feed_id(&key), i);
        }
        self.by_key.insert(key.clone(), i);
        self.followed.push(Followed { key, known, stored: None, never });
        self.expiries.grow();
        i
    }

    /// The records to read again after `first` from the feed and whatever
    /// else is queued behind it: those named, or all after a lag.
    pub(super) fn stale(
        &mut self,
        first: Option<Result<std::sync::Arc<Change>, broadcast::error::RecvError>>,
    ) -> Vec<usize> {
        let mut stale = Vec::new();
        let mut everything = false;
        let mut push = |received: Result<std::sync::Arc<Change>, broadcast::error::RecvError>| match received {
            Ok(change) => stale.extend(self.by_feed_id.get(&change.id).copied()),
            Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => everything = true,
        };
        if let Some(first) = first {
            push(first);
        }
        loop {
            match self.feed.changed.try_recv() {
                Ok(change) => push(Ok(change)),
                Err(broadcast::error::TryRecvError::Lagged(n)) => push(Err(broadcast::error::RecvError::Lagged(n))),
                Err(_) => break,
            }
        }
        if everything {
            stale = (0..self.followed.len()).collect();
        }
        stale.sort_unstable();
        stale.dedup();
        stale
    }
}
