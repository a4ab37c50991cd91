//! Change channels for stores that learn of changes from a watch (etcd,
//! Kubernetes): one channel per record long-polled now, fed by the store's
//! single watch, plus a generation bumped whenever that watch breaks, after
//! which every waiter reads again; and the store-wide [`Feed`] of every
//! change, for watches over many names.
//!
//! A channel lives exactly as long as someone waits on it: the last waiter
//! to leave (answered, timed out, or dropped with its request) removes it,
//! so names long-polled once and never changed leave nothing behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, watch};

use super::{Change, FEED_CAPACITY, Feed, StoreError};

/// Per-record change channels, the feed of every change, and the watch's
/// generation.
pub(crate) struct Changes {
    records: Mutex<HashMap<String, watch::Sender<u64>>>,
    feed: broadcast::Sender<Arc<Change>>,
    generation: watch::Sender<u64>,
}

impl Default for Changes {
    fn default() -> Self {
        Changes {
            records: Mutex::default(),
            feed: broadcast::channel(FEED_CAPACITY).0,
            generation: watch::Sender::default(),
        }
    }
}

/// One waiter's subscription to a record's channel; dropping it removes the
/// channel if it was the last (on every way out of [`Changes::wait`],
/// cancellation included).
struct Subscription<'a> {
    changes: &'a Changes,
    id: String,
    receiver: watch::Receiver<u64>,
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        let mut records = self.changes.records();
        // Subscribing happens under this lock too, so nobody can join
        // between the count and the removal. Our own receiver still counts.
        if records.get(&self.id).is_some_and(|sender| sender.receiver_count() <= 1) {
            records.remove(&self.id);
        }
    }
}

impl Changes {
    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<u64>>> {
        mpsync_core::lock(&self.records)
    }

    /// How many records are being waited on now.
    pub(crate) fn len(&self) -> usize {
        self.records().len()
    }

    /// Records that record `id` is now at `version` (0: deleted); `change`
    /// makes what the feed reports, only if someone follows it (decoding
    /// the record is then paid for once, here).
    pub(crate) fn publish(&self, id: &str, version: u64, change: impl FnOnce() -> Change) {
        if let Some(sender) = self.records().get(id) {
            sender.send_replace(version);
        }
        if self.feed.receiver_count() > 0 {
            // No receiver is no error: nobody follows the feed now.
            let _ = self.feed.send(Arc::new(change()));
        }
    }

    /// A new subscription to every change (see [`Feed`]).
    pub(crate) fn feed(&self) -> Feed {
        Feed { changed: self.feed.subscribe(), generation: self.generation.subscribe() }
    }

    /// The watch broke or restarted: whatever happened meanwhile, every
    /// waiter must read again.
    pub(crate) fn wake_all(&self) {
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    fn subscribe(&self, id: String, version: u64) -> Subscription<'_> {
        let receiver = self.records().entry(id.clone()).or_insert_with(|| watch::channel(version).0).subscribe();
        Subscription { changes: self, id, receiver }
    }

    /// Waits until record `id` leaves `version`. `read` gives its version
    /// now; it is called after subscribing, so a change made before the
    /// subscription shows in the read and one made after it on the channel.
    /// Also returns (early, harmlessly) when the watch breaks.
    pub(crate) async fn wait(
        &self,
        id: String,
        version: u64,
        read: impl Future<Output = Result<u64, StoreError>>,
        store: &str,
    ) -> Result<(), StoreError> {
        let mut subscription = self.subscribe(id, version);
        let changes = &mut subscription.receiver;
        let mut generation = self.generation.subscribe();
        generation.borrow_and_update();
        if read.await? != version {
            return Ok(());
        }
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Err(StoreError::Unavailable(format!("{store} store is shutting down")));
                    }
                    if *changes.borrow_and_update() != version {
                        return Ok(());
                    }
                }
                _ = generation.changed() => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_channel_lives_only_while_someone_waits_on_it() {
        let changes = Changes::default();
        let wait = |id: &str, read: u64| changes.wait(id.to_owned(), 1, async move { Ok(read) }, "test");
        // Answered: the record changes while two wait; both leave.
        let (mut first, mut second) = (Box::pin(wait("a", 1)), Box::pin(wait("a", 1)));
        assert!(futures::poll!(first.as_mut()).is_pending() && futures::poll!(second.as_mut()).is_pending());
        assert_eq!(changes.len(), 1);
        let change =
            |id: &'static str| move || Change { id: id.to_owned(), key: None, seen: super::super::Seen::Deleted(0) };
        changes.publish("a", 2, change("a"));
        first.await.unwrap();
        second.await.unwrap();
        assert_eq!(changes.len(), 0, "answered");
        // Already changed when read: answered at once.
        wait("b", 2).await.unwrap();
        assert_eq!(changes.len(), 0, "answered at once");
        // Dropped while waiting (a timeout, a client gone) on a name that
        // never changes.
        let mut never = Box::pin(wait("c", 1));
        assert!(futures::poll!(never.as_mut()).is_pending());
        drop(never);
        assert_eq!(changes.len(), 0, "dropped");
        // One of two waiters leaves: the channel stays for the other.
        let (mut kept, mut gone) = (Box::pin(wait("d", 1)), Box::pin(wait("d", 1)));
        assert!(futures::poll!(kept.as_mut()).is_pending() && futures::poll!(gone.as_mut()).is_pending());
        drop(gone);
        assert_eq!(changes.len(), 1, "the other waiter still needs it");
        changes.publish("d", 3, change("d"));
        kept.await.unwrap();
        assert_eq!(changes.len(), 0);
    }
}
