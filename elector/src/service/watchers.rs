//! Who watches: the watch in progress of each watcher id (a newer one
//! answers it), and the set each watcher asked this elector to keep
//! between its watches (`keep`, `resume`; see `mpsync_core::watch`).
//!
//! Kept sets are bounded by the names they hold in all
//! (`--max-kept-watch-names`), counted from when a watch takes its set in
//! (while it is parked, and between watches). A set nobody resumed for
//! [`KEEP_IDLE`] is dropped (one whose watch failed counts until then).
//! Past the bound a set is not kept (its answer carries no `resume`, and
//! its watcher goes on sending whole sets), rather than evicting a set
//! some watcher is using: evicting would only make that one send its whole
//! set, and the next evict another.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedMutexGuard};
use tokio::time::Instant;

use super::kept::Kept;

/// A kept set nobody resumed for this long is dropped.
pub const KEEP_IDLE: Duration = Duration::from_secs(60);

/// The names kept sets hold in all unless the elector is told otherwise
/// (`--max-kept-watch-names`): four proxy workers following the default
/// `--max-watch-names` each.
pub const DEFAULT_MAX_KEPT_NAMES: usize = 4 * mpsync_core::watch::DEFAULT_MAX_WATCH_NAMES;

/// A watcher's kept set, locked by the watch using it: the next watch of
/// the watcher waits for it.
pub(crate) type KeptSlot = Arc<tokio::sync::Mutex<Option<Kept>>>;

/// The watch in progress for each watcher id, so that the next one from
/// the same watcher can answer it, and the kept sets.
pub(crate) struct Watchers {
    current: Mutex<HashMap<String, (u64, Arc<Notify>)>>,
    next_id: AtomicU64,
    /// Keys drawn at start for [`Watchers::nonce`].
    random: std::collections::hash_map::RandomState,
    kept: Mutex<KeptSets>,
}

struct KeptSets {
    slots: HashMap<String, Entry>,
    /// Names held by every set in `slots`.
    names: usize,
    max_names: usize,
    /// When idle sets were last dropped.
    swept: Instant,
}

struct Entry {
    slot: KeptSlot,
    names: usize,
    used: Instant,
}

/// Whether a watch's set may be kept ([`Watchers::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admitted {
    /// Counted: it is kept after the answer.
    Yes,
    /// Past `--max-kept-watch-names`: served, not kept.
    Full,
    /// A newer set of the watcher took the slot meanwhile.
    Replaced,
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

impl Default for Watchers {
    fn default() -> Self {
        Watchers {
            current: Mutex::default(),
            next_id: AtomicU64::new(0),
            random: std::collections::hash_map::RandomState::new(),
            kept: Mutex::new(KeptSets {
                slots: HashMap::new(),
                names: 0,
                max_names: DEFAULT_MAX_KEPT_NAMES,
                swept: Instant::now(),
            }),
        }
    }
}

impl Watchers {
    /// How many watchers have a watch in progress.
    pub(crate) fn len(&self) -> usize {
        mpsync_core::lock(&self.current).len()
    }

    /// Names held by kept sets, and how many may be.
    pub(crate) fn kept_names(&self) -> (usize, usize) {
        let kept = mpsync_core::lock(&self.kept);
        (kept.names, kept.max_names)
    }

    /// Caps the names kept sets may hold in all (0: none kept).
    pub(crate) fn set_max_kept_names(&self, max: usize) {
        mpsync_core::lock(&self.kept).max_names = max;
    }

    /// Whether any set may be kept (`--max-kept-watch-names` above 0).
    pub(crate) fn keeps_any(&self) -> bool {
        mpsync_core::lock(&self.kept).max_names > 0
    }

    /// A number no other set of this process gets, hard to guess: the
    /// elector's part of a kept set's id.
    pub(crate) fn nonce(&self) -> u64 {
        use std::hash::BuildHasher;
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.random.hash_one(n)
    }

    /// Registers a watch of `watcher`, answering its previous one.
    pub(crate) fn register(&self, watcher: Option<&str>) -> Registered<'_> {
        let superseded = Arc::new(Notify::new());
        let Some(watcher) = watcher else {
            return Registered { watchers: self, watcher: None, superseded, replaces: false };
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let previous = mpsync_core::lock(&self.current).insert(watcher.to_owned(), (id, superseded.clone()));
        let replaces = previous.is_some();
        if let Some((_, previous)) = previous {
            // A permit is stored if the previous watch is between two
            // looks: it answers at its next one.
            previous.notify_one();
        }
        Registered { watchers: self, watcher: Some((watcher.to_owned(), id)), superseded, replaces }
    }

    /// The kept slot of `watcher`, locked: waits up to `patience` for the
    /// watch using it to give it back. Past that, a watch sending its
    /// whole set (`fresh`) gets a new slot in its place (the old watch's
    /// set is dropped when it ends); one resuming gets none.
    pub(crate) async fn lock(
        &self,
        watcher: &str,
        patience: Duration,
        fresh: bool,
    ) -> Option<(KeptSlot, OwnedMutexGuard<Option<Kept>>)> {
        let slot = {
            let mut kept = mpsync_core::lock(&self.kept);
            kept.sweep(Instant::now());
            // A resume makes no slot: a watcher this elector keeps nothing
            // for costs it nothing.
            let entry = match kept.slots.entry(watcher.to_owned()) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(_) if !fresh => return None,
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(Entry { slot: KeptSlot::default(), names: 0, used: Instant::now() })
                }
            };
            entry.used = Instant::now();
            entry.slot.clone()
        };
        if let Ok(guard) = tokio::time::timeout(patience, slot.clone().lock_owned()).await {
            return Some((slot, guard));
        }
        if !fresh {
            return None;
        }
        let slot = KeptSlot::default();
        let guard = slot.clone().try_lock_owned().ok()?;
        let mut kept = mpsync_core::lock(&self.kept);
        let entry = Entry { slot: slot.clone(), names: 0, used: Instant::now() };
        if let Some(old) = kept.slots.insert(watcher.to_owned(), entry) {
            kept.names -= old.names;
        }
        Some((slot, guard))
    }

    /// Counts `names` for `watcher`'s set in `slot` (locked by the
    /// caller) if the bound allows. Sets nobody used for [`KEEP_IDLE`] are
    /// dropped first.
    pub(crate) fn admit(&self, watcher: &str, slot: &KeptSlot, names: usize) -> Admitted {
        let now = Instant::now();
        let mut kept = mpsync_core::lock(&self.kept);
        kept.sweep(now);
        let KeptSets { slots, names: total, max_names, .. } = &mut *kept;
        let Some(entry) = slots.get_mut(watcher).filter(|e| Arc::ptr_eq(&e.slot, slot)) else {
            // Replaced meanwhile: the newer set is the one kept.
            return Admitted::Replaced;
        };
        let others = *total - entry.names;
        *total = others;
        if others + names > *max_names {
            // Not kept: its slot goes (it holds nothing for a resume).
            slots.remove(watcher);
            return Admitted::Full;
        }
        entry.names = names;
        entry.used = now;
        *total += names;
        Admitted::Yes
    }

    /// Puts `set`, admitted, back into `watcher`'s slot (still locked by
    /// the caller, through `guard`) unless the slot was replaced or
    /// dropped meanwhile; true if it is kept.
    pub(crate) fn keep(
        &self,
        watcher: &str,
        slot: &KeptSlot,
        guard: &mut OwnedMutexGuard<Option<Kept>>,
        set: Kept,
    ) -> bool {
        let mut kept = mpsync_core::lock(&self.kept);
        let Some(entry) = kept.slots.get_mut(watcher).filter(|e| Arc::ptr_eq(&e.slot, slot)) else {
            return false;
        };
        entry.used = Instant::now();
        **guard = Some(set);
        true
    }
}

impl KeptSets {
    /// Drops the sets nobody used for [`KEEP_IDLE`], at most once a second.
    fn sweep(&mut self, now: Instant) {
        if now.duration_since(self.swept) < Duration::from_secs(1) {
            return;
        }
        self.swept = now;
        let total = &mut self.names;
        self.slots.retain(|_, entry| {
            // A slot locked is in use: its watch puts it back or drops it.
            let idle = now.duration_since(entry.used) >= KEEP_IDLE && entry.slot.try_lock().is_ok();
            if idle {
                *total -= entry.names;
            }
            !idle
        });
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
