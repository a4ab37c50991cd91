//! The sweeper: clears the leases that ran out, so the judge and the
//! stores keep only what is live.
//!
//! Nobody releases a lease whose holder died, so without this the judge
//! would keep an entry for it for ever, and the memory store its record.
//! The judge says which entries are due ([`Judge::due`]: a lease that ran
//! out [`CLEAR_AFTER`] ago) and what to write ([`Judge::settle`]); this
//! task only reads each record again and writes, with compare-and-swap at
//! the version judged, the record a release would have written. A renewal
//! or takeover that got in first wins the race and the clearing just
//! loses, as any other writer would.
//!
//! It runs in the background once the service first meets the judge, and
//! stops at shutdown (or when the service is dropped).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mpsync_core::Judge;
use mpsync_core::judge::CLEAR_AFTER;
use tokio::sync::watch;

use crate::metrics::{Event, Metrics};
use crate::store::{Key, Store, StoreError};

/// Records read and cleared per pass, and at once.
const BATCH: usize = 256;
const AT_ONCE: usize = 8;
/// The pause after a pass that failed on the store.
const RETRY: Duration = Duration::from_secs(1);

/// What the sweeping task shares with the service.
struct State {
    store: Arc<dyn Store>,
    judge: Arc<Mutex<Judge<Key>>>,
    metrics: Arc<Metrics>,
    /// The origin of the judge's clock.
    origin: Instant,
}

/// Aborts the sweeping task when the service goes.
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The service's sweeper: started on first use, inside a runtime.
pub(super) struct Sweeper {
    state: Arc<State>,
    stopping: watch::Receiver<bool>,
    task: OnceLock<Task>,
}

impl Sweeper {
    /// A sweeper over `store` and `judge` (whose clock starts at `origin`),
    /// counting what it clears in `metrics`, until `stopping` turns true.
    pub(super) fn new(
        store: Arc<dyn Store>,
        judge: Arc<Mutex<Judge<Key>>>,
        metrics: Arc<Metrics>,
        origin: Instant,
        stopping: watch::Receiver<bool>,
    ) -> Sweeper {
        Sweeper { state: Arc::new(State { store, judge, metrics, origin }), stopping, task: OnceLock::new() }
    }

    /// Starts the sweeping task if it is not running yet and a runtime is
    /// there to run it.
    pub(super) fn start(&self) {
        if self.task.get().is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        self.task.get_or_init(|| Task(runtime.spawn(sweep(self.state.clone(), self.stopping.clone()))));
    }
}

async fn sweep(state: Arc<State>, mut stopping: watch::Receiver<bool>) {
    loop {
        let now = state.origin.elapsed();
        let due = mpsync_core::lock(&state.judge).due(now, BATCH);
        let pause = if due.is_empty() {
            // Whatever the judge learns meanwhile comes due CLEAR_AFTER
            // after it is seen at the earliest, so a look that often misses
            // nothing.
            let next = mpsync_core::lock(&state.judge).next_due().map_or(CLEAR_AFTER, |at| at.saturating_sub(now));
            next.min(CLEAR_AFTER)
        } else {
            let cleared: Vec<_> = futures::stream::iter(due)
                .map(|(key, judged)| clear(&state, key, judged))
                .buffer_unordered(AT_ONCE)
                .collect()
                .await;
            match cleared.into_iter().find_map(Result::err) {
                Some(e) => {
                    tracing::debug!("clearing leases that ran out: {e}; trying again in {RETRY:?}");
                    RETRY
                }
                None => Duration::ZERO,
            }
        };
        if *stopping.borrow_and_update() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stopping.changed() => return,
        }
    }
}

/// Reads `key` again and clears it if its lease, at version `judged`, ran
/// out there.
async fn clear(state: &State, key: Key, judged: u64) -> Result<(), StoreError> {
    let stored = state.store.get(&key).await?;
    let now = state.origin.elapsed();
    let record =
        mpsync_core::lock(&state.judge).settle(&key, judged, stored.as_ref().map(|v| (&v.record, v.version)), now);
    let Some(record) = record else { return Ok(()) };
    match state.store.put(&key, &record, stored.as_ref()).await {
        // A reservation that ran out (a transfer nobody took up) is no
        // lease's expiry.
        Ok(_) if record.holder.is_none() && stored.as_ref().is_some_and(|v| v.record.holder.is_none()) => {}
        Ok(_) => state.metrics.count(key.kind, Event::Expiry),
        // Someone wrote first: a renewal, a takeover, another elector's
        // clearing.
        Err(StoreError::Conflict) => {}
        Err(e) => return Err(e),
    }
    // Either way the version judged is gone: forget that one only. A claim
    // on this elector may have written a newer one since, which the judge
    // dated before this write's answer came back; any other, the judge
    // learns when it is next read.
    mpsync_core::lock(&state.judge).forget_version(&key, judged);
    Ok(())
}
