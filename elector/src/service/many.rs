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
//! before it at once ([`super::watchers`]), so a client whose set of names grows
//! never holds two.
//!
//! A watcher may have its set kept between watches ([`Kept`]: the records,
//! the feed subscription, the expiries): the next watch sends only what
//! changed, and goes on with what the feed brought in between. The records
//! a watch answered with are looked at again first by the next one, unless
//! it says what the client now knows of them: an answer lost on the way is
//! answered again.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use mpsync_core::watch::{Since, WatchAnswer, WatchRequest, Watched};
use tokio::time::Instant;

use super::kept::{Expiries, Followed, Kept};
use super::watchers::Admitted;
use super::{Service, ServiceError, View};
use crate::store::{Key, Store, StoreError, Versioned};

/// Above this many names a watch reads its records by listing them (one
/// call per page) rather than one read each, where the store is remote.
pub const LIST_ABOVE: usize = 64;

/// How long a watch that replaces another waits for the slot it gives back.
const REPLACING: Duration = Duration::from_secs(1);

/// Reads at once while reading records one by one.
const READS_IN_FLIGHT: usize = 32;

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
    /// Caps the names the sets kept for watchers hold in all (0: none is
    /// kept; see [`super::watchers`]).
    pub fn with_max_kept_watch_names(self, max: usize) -> Self {
        self.watchers.set_max_kept_names(max);
        self
    }

    /// Names held by the sets kept for watchers, and how many may be.
    pub fn kept_watch_names(&self) -> (usize, usize) {
        self.watchers.kept_names()
    }

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
        if request.is_empty() && request.resume.is_none() {
            return Err(invalid(field, false, "a watch names at least one election or lock".into()));
        }
        if request.len() > self.max_watch_names {
            let (n, max) = (request.len(), self.max_watch_names);
            let message = format!("the watch names {n} records; at most {max} are allowed (--max-watch-names)");
            return Err(invalid(field, false, message));
        }
        use mpsync_core::watch::{MAX_KEEP_LEN, MAX_WATCHER_LEN, valid_keep, valid_watcher};
        let ids = [
            ("watcher", &request.watcher, valid_watcher as fn(&str) -> bool, MAX_WATCHER_LEN),
            ("keep", &request.keep, valid_keep, MAX_KEEP_LEN),
            ("resume", &request.resume, valid_watcher, MAX_WATCHER_LEN),
        ];
        for (field, id, valid, max) in ids {
            if let Some(id) = id
                && !valid(id)
            {
                return Err(invalid(field, false, format!("{field} {id:?} is not 1 to {max} of A-Z a-z 0-9 - _ .")));
            }
        }
        let kept = match (&request.keep, &request.resume) {
            (Some(_), Some(_)) => return Err(invalid("resume", false, "a watch keeps a set or resumes one".into())),
            (Some(_), None) => Some("keep"),
            (None, Some(_)) => Some("resume"),
            (None, None) => None,
        };
        if let Some(field) = kept
            && request.watcher.is_none()
        {
            return Err(invalid(field, false, format!("{field} needs a watcher: sets are kept per watcher")));
        }
        match (&request.resume, request.total) {
            (Some(_), None) => return Err(invalid("total", false, "resume needs total".into())),
            (None, Some(_)) => return Err(invalid("total", false, "total goes with resume".into())),
            _ => {}
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
    /// arrives (then with whatever differs at that moment). With `keep` or
    /// `resume`, the set is kept for the watcher's next watch.
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
        // The watcher's kept set, once the watch using it gives it back.
        // (A whole set where none may be kept is served without one.)
        let resuming = request.resume.is_some();
        let mut slot = match request.watcher.as_deref() {
            Some(watcher) if resuming || (request.keep.is_some() && self.watchers.keeps_any()) => {
                let locked = self.watchers.lock(watcher, REPLACING, !resuming).await;
                Some((watcher, locked.ok_or(ServiceError::WatchGone)?))
            }
            _ => None,
        };
        // A whole set is counted before its records are read, as the
        // long-poll is; a resumed one once its new names are in.
        let (mut kept, _names) = match &request.resume {
            Some(id) => {
                let guard = slot.as_mut().map(|(_, (_, guard))| guard);
                let mut kept = guard.and_then(|g| g.take_if(|k| k.id == *id)).ok_or(ServiceError::WatchGone)?;
                // The kept set is gone from the slot until the answer: a
                // watch that ends early (an error, the client gone) leaves
                // nothing half done for the next one to resume.
                self.resume(&mut kept, request).await?;
                let names = self.metrics.watching_names(kept.followed.len());
                (kept, names)
            }
            None => {
                // A new set replaces the one kept, if any.
                if let Some((_, (_, guard))) = slot.as_mut() {
                    guard.take();
                }
                let names = self.metrics.watching_names(request.len());
                (self.start(request).await?, names)
            }
        };
        // Within the bound on kept names, or served and not kept.
        let keeping = slot.as_ref().is_some_and(|(watcher, (slot, _))| {
            let admitted = self.watchers.admit(watcher, slot, kept.followed.len());
            if admitted == Admitted::Full {
                self.metrics.refuse(crate::metrics::Refusal::KeptWatchNames);
                if self.quiet.speak() {
                    let (names, max) = self.watchers.kept_names();
                    tracing::warn!(
                        watcher,
                        names = kept.followed.len(),
                        kept = names,
                        "a watch set is served but not kept: the kept sets hold {names} of \
                         --max-kept-watch-names {max}; its watcher sends whole sets"
                    );
                }
            }
            admitted == Admitted::Yes
        });
        let mut stopping = self.stopping.subscribe();
        let changed = loop {
            let mut due = std::mem::take(&mut kept.due);
            // A record may be due twice over (told, and in the feed).
            due.sort_unstable();
            due.dedup();
            let changed = self.look(&kept.followed, &due, &mut kept.expiries);
            if !changed.is_empty() || *stopping.borrow_and_update() {
                break changed;
            }
            let next_expiry = kept.expiries.next();
            tokio::select! {
                received = kept.feed.changed.recv() => {
                    let stale = kept.stale(Some(received));
                    self.read_again(&mut kept.followed, Some(&stale)).await?;
                    kept.due = stale;
                }
                changed = kept.feed.generation.changed(), if kept.generation_open => {
                    kept.generation_open = changed.is_ok();
                    if kept.generation_open {
                        self.read_again(&mut kept.followed, None).await?;
                        kept.due = (0..kept.followed.len()).collect();
                    }
                }
                () = async { tokio::time::sleep_until(next_expiry.unwrap_or(deadline)).await }, if next_expiry.is_some() => {
                    // Read again first: a renewal through another
                    // elector may not be in the feed yet.
                    kept.due = kept.expiries.due(Instant::now());
                    self.read_again(&mut kept.followed, Some(&kept.due)).await?;
                }
                // At the end, and when superseded: whatever differs now.
                () = tokio::time::sleep_until(deadline) => break self.last_look(&mut kept),
                () = registered.superseded.notified() => break self.last_look(&mut kept),
                _ = stopping.changed() => {}
            }
        };
        // What this answer brings is looked at again by the next watch,
        // unless it says it knows: the answer may never reach the client.
        kept.due = changed.iter().map(|(i, _)| *i).collect();
        let changed = changed.into_iter().map(|(_, watched)| watched).collect();
        let resume = match &mut slot {
            Some((watcher, (slot, guard))) if keeping => {
                let id = kept.id.clone();
                self.watchers.keep(watcher, slot, guard, kept).then_some(id)
            }
            _ => None,
        };
        Ok(WatchAnswer { changed, resume })
    }

    /// The set of a watch that sends it whole: subscribed to the feed,
    /// then every record read.
    async fn start(&self, request: &WatchRequest) -> Result<Kept, ServiceError> {
        let mut feed = self.store.feed();
        feed.generation.borrow_and_update();
        let mut kept = Kept {
            // The elector's part keeps two clients of one watcher id apart.
            id: request.keep.as_ref().map(|keep| format!("{keep}.{:016x}", self.watchers.nonce())).unwrap_or_default(),
            followed: Vec::new(),
            by_key: HashMap::new(),
            by_feed_id: HashMap::new(),
            feed,
            generation_open: true,
            expiries: Expiries::new(0),
            due: Vec::new(),
        };
        for (kind, name, known) in request.entries() {
            kept.add(self.store.as_ref(), Key { kind, name: name.to_owned() }, known);
        }
        self.read_again(&mut kept.followed, None).await?;
        kept.due = (0..kept.followed.len()).collect();
        Ok(kept)
    }

    /// Takes a resumed watch's records into its kept set, then catches up
    /// with what happened since the last watch: the feed's changes, and
    /// the leases that ran out meanwhile (all in the first answer).
    async fn resume(&self, kept: &mut Kept, request: &WatchRequest) -> Result<(), ServiceError> {
        // Read again, all of them: new names, and those the client tells
        // (it may have read them itself, ahead of this elector's feed).
        let mut stale = Vec::new();
        for (kind, name, known) in request.entries() {
            let key = Key { kind, name: name.to_owned() };
            match kept.by_key.get(&key) {
                Some(&i) => {
                    kept.followed[i].known = known;
                    stale.push(i);
                }
                None => stale.push(kept.add(self.store.as_ref(), key, known)),
            }
        }
        if kept.followed.len() > self.max_watch_names {
            let (n, max) = (kept.followed.len(), self.max_watch_names);
            let message = format!("the watch follows {n} records; at most {max} are allowed (--max-watch-names)");
            return Err(ServiceError::InvalidWatch { field: "elections", name: false, message });
        }
        if request.total != Some(kept.followed.len()) {
            // A request's names were lost on the way: start again whole.
            return Err(ServiceError::WatchGone);
        }
        stale.extend(kept.stale(None));
        // Within the millisecond a look rounds its time up by: a lease a
        // read shows run out is in this answer.
        stale.extend(kept.expiries.due(Instant::now() + Duration::from_millis(1)));
        if kept.generation_open && kept.feed.generation.has_changed().unwrap_or(false) {
            kept.feed.generation.borrow_and_update();
            stale = (0..kept.followed.len()).collect();
        }
        stale.sort_unstable();
        stale.dedup();
        self.read_again(&mut kept.followed, Some(&stale)).await?;
        kept.due.extend(stale);
        Ok(())
    }

    /// Reads the records at `which` (all when `None`) again.
    async fn read_again(&self, followed: &mut [Followed], which: Option<&[usize]>) -> Result<(), StoreError> {
        let indices: Vec<usize> = match which {
            Some(which) => which.iter().copied().filter(|&i| !followed[i].never).collect(),
            None => (0..followed.len()).filter(|&i| !followed[i].never).collect(),
        };
        let keys: Vec<&Key> = indices.iter().map(|&i| &followed[i].key).collect();
        let read = read_all(self.store.as_ref(), &keys).await?;
        for (i, stored) in indices.into_iter().zip(read) {
            followed[i].stored = stored;
        }
        Ok(())
    }

    /// Judges every record now, for the last answer.
    fn last_look(&self, kept: &mut Kept) -> Vec<(usize, Watched)> {
        let every: Vec<usize> = (0..kept.followed.len()).collect();
        self.look(&kept.followed, &every, &mut kept.expiries)
    }

    /// Judges the records at `due` now: those whose view differs from
    /// what the client knows, and, for the rest held, when to look again.
    fn look(&self, followed: &[Followed], due: &[usize], expiries: &mut Expiries) -> Vec<(usize, Watched)> {
        let now = self.now();
        let mut changed = Vec::new();
        for &i in due {
            let f = &followed[i];
            if f.never {
                continue;
            }
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
                changed.push((i, Watched { kind: f.key.kind, name: f.key.name.clone(), version, lease }));
            } else if let View::Held(lease) = &view {
                // Rounded up, so the look comes after the expiry.
                expiries.set(i, Instant::now() + Duration::from_millis(lease.expires_in_ms + 1));
            }
        }
        changed
    }
}
