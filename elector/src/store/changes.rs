//! Change channels for stores that learn of changes from a watch (etcd,
//! Kubernetes): one channel per watched record, fed by the store's single
//! watch, plus a generation bumped whenever that watch breaks, after which
//! every waiter reads again.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use super::StoreError;

/// Per-record change channels and the watch's generation.
#[derive(Default)]
pub(crate) struct Changes {
    records: Mutex<HashMap<String, watch::Sender<u64>>>,
    generation: watch::Sender<u64>,
}

impl Changes {
    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<u64>>> {
        self.records.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that `id` is now at `version` (0: deleted).
    pub(crate) fn publish(&self, id: &str, version: u64) {
        let mut records = self.records();
        if let Some(sender) = records.get(id) {
            if sender.receiver_count() == 0 {
                records.remove(id);
            } else {
                sender.send_replace(version);
            }
        }
    }

    /// The watch broke or restarted: whatever happened meanwhile, every
    /// waiter must read again.
    pub(crate) fn wake_all(&self) {
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
        self.records().retain(|_, sender| sender.receiver_count() > 0);
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
        let mut changes = self.records().entry(id).or_insert_with(|| watch::channel(version).0).subscribe();
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
