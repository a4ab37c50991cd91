//! The history of changes of holder this elector keeps, from the time it
//! started (`GET /v1/history`, `GET /v1/{locks,elections}/{name}/history`).
//!
//! One task follows the store's [`Feed`](crate::store::Feed): it subscribes,
//! then lists every record once (paging through [`Store::list`]) to learn
//! who holds what, and from then on hands each record the feed carries to
//! [`mpsync_core::history::History`], which keeps the entries (the rules and
//! bounds are there). The feed carries the record as written or as the
//! store's watch delivered it, so following costs no read per change; only
//! a record the watch could not decode is read again. When the feed lags
//! or the store's own watch broke (its generation bumped), the task lists
//! again and records what changed meanwhile, each with the `why` its record
//! now says.
//!
//! With etcd or Kubernetes every elector sees every change, whoever wrote
//! it; with the memory store there is one elector. Each elector's history
//! is its own: what it saw since it started, numbered from its start time
//! in microseconds, so that a reader's place from before a restart reads
//! as a gap.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use mpsync_core::history::{Entry, History as Kept, Limits, NameHistory, Page};
use mpsync_core::{Kind, Record};
use tokio::sync::{broadcast, watch};

use crate::metrics::Metrics;
use crate::store::{Change, Feed, Key, Seen, Store, StoreError};

/// How many records one page of the listing asks for.
const LIST_PAGE: usize = 500;

/// The history, shared by the following task and the API.
pub struct History {
    kept: Mutex<Kept>,
    /// The seq of the newest entry, for long-polls (`after=`).
    newest: watch::Sender<u64>,
    /// True once the first listing is in.
    listed: watch::Sender<bool>,
    origin: Instant,
}

impl History {
    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        mpsync_core::lock(&self.kept)
    }

    /// Up to `limit` entries after seq `after`, oldest first.
    pub fn page(&self, after: u64, limit: usize) -> Page {
        self.kept().after(after, limit)
    }

    /// The entries kept for `key`, oldest first.
    pub fn of(&self, key: &Key) -> NameHistory {
        self.kept().of(key.kind, &key.name)
    }

    /// Resolves once there is an entry after seq `after` (at once if there
    /// is one already). Cancel-safe.
    pub async fn changed_after(&self, after: u64) {
        let mut newest = self.newest.subscribe();
        // The sender lives as long as `self`: this only ever returns Ok.
        let _ = newest.wait_for(|n| *n > after).await;
    }

    /// Resolves once the first listing of the store is in: changes written
    /// after that are entries.
    pub async fn listed(&self) {
        let _ = self.listed.subscribe().wait_for(|listed| *listed).await;
    }

    /// Hands `record` of `key`, at `version`, to the history; counts and
    /// announces the entry it makes, if any.
    fn observe(&self, key: &Key, record: Option<&Record>, version: u64, metrics: &Metrics) {
        let (now, unix_ms) = (self.origin.elapsed(), unix_ms());
        let entry = self.kept().observe(key.kind, &key.name, record, version, now, unix_ms);
        self.announce(entry.as_deref(), metrics);
    }

    fn announce<'a>(&self, entries: impl IntoIterator<Item = &'a Entry>, metrics: &Metrics) {
        let mut newest = None;
        for entry in entries {
            metrics.count_handover(entry.kind, entry.why.map_or("unknown", mpsync_core::Why::as_str));
            newest = Some(entry.seq);
        }
        if let Some(seq) = newest {
            self.newest.send_replace(seq);
        }
    }
}

fn unix_ms() -> u64 {
    let since = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// The history and the task that follows the store for it; dropping it
/// stops the task.
pub struct Following {
    history: Arc<History>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Following {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Following {
    /// Starts following `store` (inside a tokio runtime), keeping what
    /// `limits` allow, counting entries in `metrics`, until `stopping`
    /// turns true.
    pub fn start(
        store: Arc<dyn Store>,
        limits: Limits,
        metrics: Arc<Metrics>,
        stopping: watch::Receiver<bool>,
    ) -> Following {
        let history = Arc::new(History {
            // Seqs start at the wall clock in microseconds (see
            // `Kept::starting_after`): a reader from before a restart sees a gap.
            kept: Mutex::new(Kept::starting_after(limits, start_seq())),
            newest: watch::channel(0).0,
            listed: watch::channel(false).0,
            origin: Instant::now(),
        });
        metrics.report_history({
            let history = Arc::downgrade(&history);
            move || {
                let Some(history) = history.upgrade() else { return (0, Vec::new()) };
                let kept = history.kept();
                let now = history.origin.elapsed();
                let leaderless = kept.leaderless(now).map(|(name, d)| (name.to_owned(), d.as_secs_f64())).collect();
                (kept.names(), leaderless)
            }
        });
        // Subscribed now, not when the task first runs.
        let feed = store.feed();
        let task = tokio::spawn(follow(store, feed, history.clone(), metrics, stopping));
        Following { history, task }
    }

    /// The history.
    pub fn history(&self) -> &History {
        &self.history
    }
}

async fn follow(
    store: Arc<dyn Store>,
    feed: Feed,
    history: Arc<History>,
    metrics: Arc<Metrics>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut first = true;
    let mut pause = Duration::from_millis(50);
    let mut subscribed = Some(feed);
    loop {
        if *stopping.borrow_and_update() {
            return;
        }
        // Subscribed before listing: a change after the listing is in the feed.
        let mut feed = subscribed.take().unwrap_or_else(|| store.feed());
        feed.generation.borrow_and_update();
        let listed = match list_all(store.as_ref()).await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(error = %e, "history: listing the store failed; trying again in {pause:?}");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = stopping.changed() => return,
                }
                pause = (pause * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        pause = Duration::from_millis(50);
        let entries = history.kept().relist(listed, first, history.origin.elapsed(), unix_ms());
        history.announce(entries.iter().map(|e| &**e), &metrics);
        history.listed.send_replace(true);
        first = false;
        let mut generation_open = true;
        loop {
            tokio::select! {
                received = feed.changed.recv() => match received {
                    Ok(change) => take(store.as_ref(), &history, &change, &metrics).await,
                    // Missed some: list again.
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                changed = feed.generation.changed(), if generation_open => {
                    // A store without a watch of its own never bumps it.
                    generation_open = changed.is_ok();
                    if generation_open {
                        break;
                    }
                }
                _ = stopping.changed() => return,
            }
        }
    }
}

/// Hands one change of the feed to the history.
async fn take(store: &dyn Store, history: &History, change: &Change, metrics: &Metrics) {
    let Some(key) = &change.key else { return };
    match &change.seen {
        Seen::Written(stored) => history.observe(key, Some(&stored.record), stored.version, metrics),
        Seen::Deleted(version) => history.observe(key, None, *version, metrics),
        Seen::Unreadable => match store.get(key).await {
            Ok(Some(stored)) => history.observe(key, Some(&stored.record), stored.version, metrics),
            Ok(None) => history.observe(key, None, 0, metrics),
            Err(e) => tracing::warn!(error = %e, name = %key.name, "history: reading a changed record failed"),
        },
    }
}

/// Every record in the store, of both kinds.
async fn list_all(store: &dyn Store) -> Result<Vec<(Kind, String, Record, u64)>, StoreError> {
    let mut listed = Vec::new();
    for kind in [Kind::Lock, Kind::Election] {
        let mut cursor = None;
        loop {
            let page = store.list(kind, cursor.as_deref(), LIST_PAGE).await?;
            listed.extend(page.records.into_iter().map(|(name, v)| (kind, name, v.record, v.version)));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    Ok(listed)
}

/// The seq this process counts its history from: now, in microseconds
/// since the Unix epoch (below 2^53 until the year 2255, so a browser's
/// JSON numbers keep it exact).
fn start_seq() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX / 2)
}
