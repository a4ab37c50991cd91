//! The lease service: the elector's behaviour, independent of HTTP.
//!
//! Each operation reads a record from the [`Store`], lets the judge date it
//! on this process's monotonic clock, asks `mpsync_core::record` what to do,
//! and writes back with compare-and-swap, retrying from the read when
//! another writer got in between. A sweeper (`service/sweep.rs`) clears
//! the leases that ran out with nobody to release them, so the judge and
//! the stores keep only what is live. Sessions (`service/sessions.rs`)
//! release the leases granted under one when its holder's end closes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mpsync_core::record::{Claim, Outcome, ReleaseOutcome, decide_claim, decide_release, ended_by_session};
use mpsync_core::wire::{AcquireRequest, ConflictView, LeaseView, ListView, RecordView, ReleaseRequest, TransferView};
use mpsync_core::{Conflict, Current, Judge, Kind, Record};
use thiserror::Error;
use tokio::sync::watch;

use crate::metrics::{Event, Metrics};
use crate::store::{Key, NameRefused, Store, StoreError, Versioned};

mod capacity;
mod history;
mod kept;
mod line;
mod many;
mod sessions;
mod sweep;
mod transfer;
mod watchers;

pub use many::LIST_ABOVE;
pub use watchers::{DEFAULT_MAX_KEPT_NAMES, KEEP_IDLE};

pub use line::QueueResult;

pub use sessions::{DEFAULT_MAX_SESSIONS, Ended};

pub use transfer::TransferResult;

/// How many turns ([`Service::apply`]) names share: enough that names
/// written at once rarely wait on each other.
const TURNS: usize = 1024;

fn turn_of(key: &Key) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    usize::try_from(hasher.finish() % TURNS as u64).unwrap_or(0)
}

/// How many times a write is retried after losing a compare-and-swap race.
const CAS_ATTEMPTS: usize = 16;

/// Errors of the service; each becomes a 503 with its message.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// The store failed or could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Every compare-and-swap attempt lost a race; retrying later helps.
    #[error("the record kept changing during {CAS_ATTEMPTS} attempts; retry")]
    Contended,
    /// The store cannot keep a record under this name.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// Lock or election.
        kind: &'static str,
        /// The name.
        name: String,
        /// Why.
        reason: NameRefused,
    },
    /// The lease asked for is longer than the store can guard.
    #[error("ttl_ms is {ttl_ms}; the {store} store guards leases of at most {max_ms} ms")]
    TtlTooLong {
        /// What was asked.
        ttl_ms: u64,
        /// The store.
        store: &'static str,
        /// The longest it guards.
        max_ms: u64,
    },
    /// As many long-polls as allowed are already parked.
    #[error("{0} long-polls are already waiting (--max-long-polls); retry in a second")]
    TooManyLongPolls(usize),
    /// As many sessions as allowed are open.
    #[error("{0} sessions are already open (--max-sessions); retry in a second")]
    TooManySessions(usize),
    /// The lock's line is as long as the store lets it be.
    #[error("{waiting} waiters are already in line for this lock (the most this store keeps); retry later")]
    LineFull {
        /// How many wait.
        waiting: usize,
    },
    /// The OS gave no random bytes for a session id.
    #[error("no randomness for a session id: {0}")]
    NoRandomness(String),
    /// A watch resumes a set this elector does not keep (a 410).
    #[error(
        "this elector keeps no such watch set (restarted, idle for long, replaced, or a request lost): send the whole set"
    )]
    WatchGone,
    /// A watch over many names that cannot be served as asked (a 400).
    #[error("{message}")]
    InvalidWatch {
        /// The field to blame: `elections`, `locks`, `watcher`, `timeout_ms`.
        field: &'static str,
        /// A name in it is invalid (rather than some other value).
        name: bool,
        /// What is wrong.
        message: String,
    },
}

/// The default cap on long-polls parked at once.
pub const DEFAULT_MAX_LONG_POLLS: usize = 8_192;

/// The state of a record as this elector judges it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// Someone holds the lease.
    Held(LeaseView),
    /// The record exists but nobody holds it (released or expired).
    Free {
        /// Its version.
        version: u64,
    },
    /// The store has no record: never written, or forgotten once nobody
    /// held it or waited on it.
    Absent {
        /// Never below a version this record had before it was forgotten:
        /// 0 in a store that never forgot anything.
        version: u64,
    },
}

impl View {
    /// The version the view was taken at (0 when absent).
    pub fn version(&self) -> u64 {
        match self {
            View::Held(lease) => lease.version,
            View::Free { version } => *version,
            View::Absent { version } => *version,
        }
    }
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimResult {
    /// Granted (acquired or renewed).
    Granted(LeaseView),
    /// Refused: someone else holds it, or the token is stale.
    Refused(ConflictView),
}

/// The answer to a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseResult {
    /// Released.
    Released,
    /// No record by that name.
    NotFound,
    /// The caller does not hold it with that token.
    Refused(ConflictView),
}

/// What a decision inside [`Service::apply`] asks for.
#[allow(clippy::large_enum_variant, reason = "short-lived, one per request; boxing the record buys nothing")]
enum Step<W, A> {
    /// Write this record (compare-and-swap); report `W` once written.
    Write(Record, W),
    /// Write nothing; answer `A`.
    Answer(A),
}

/// What [`Service::apply`] did.
#[allow(clippy::large_enum_variant, reason = "short-lived, one per request; boxing the record buys nothing")]
enum Applied<W, A> {
    /// The record was written at `version`, decided at `now`.
    Written { value: W, record: Record, version: u64, now: Duration },
    /// Nothing was written.
    Answered(A),
}

/// Locks and elections over one store.
pub struct Service {
    store: Arc<dyn Store>,
    judge: Arc<Mutex<Judge<Key>>>,
    sweeper: sweep::Sweeper,
    metrics: Arc<Metrics>,
    origin: Instant,
    identity: String,
    compat_ttl: Duration,
    stopping: watch::Sender<bool>,
    long_polls: Arc<tokio::sync::Semaphore>,
    max_long_polls: usize,
    sessions: sessions::Sessions,
    quiet: crate::quiet::Quiet,
    line_dates: Arc<Mutex<line::Dates>>,
    parked: Arc<line::Parked>,
    /// Writes to one name take turns ([`Service::apply`]); names share
    /// these by hash, so that the map does not grow with them.
    turns: Vec<tokio::sync::Mutex<()>>,
    max_line_wait: Duration,
    watchers: watchers::Watchers,
    max_watch_names: usize,
    max_poll_wait: Duration,
    /// The history of changes of holder, when kept ([`Service::with_history`]).
    history: Option<crate::history::Following>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The version clients see. It changes with every write and also when a
/// lease runs out, which writes nothing: store version `v` is `2v` while as
/// written and `2v + 1` once its holder's lease has run out. So a long-poll
/// on what a client last saw always has something to wait for, and an
/// expiry wakes it like any other change. (`CLEAR_AFTER` later the sweeper
/// clears the record, a write like any other: `2w` at its new version `w`,
/// or absent where the store then forgets it.)
fn view_version(store_version: u64, expired: bool) -> u64 {
    store_version * 2 + u64::from(expired)
}

/// The store version behind a view version.
fn store_version(view_version: u64) -> u64 {
    view_version / 2
}

fn conflict_view(c: Conflict, expired: bool) -> ConflictView {
    let version = view_version(c.version, expired);
    ConflictView { holder: c.holder, expires_in_ms: ms(c.expires_in), version, reason: c.reason }
}

impl Service {
    /// A service over `store`. `identity` and `compat_ttl` serve the
    /// compatible surface (`/locks/{name}`), whose clients name neither.
    pub fn new(store: Arc<dyn Store>, identity: String, compat_ttl: Duration) -> Self {
        let judge = Arc::new(Mutex::new(Judge::new()));
        let metrics = Arc::new(Metrics::default());
        let store: Arc<dyn Store> = Arc::new(crate::store::observed::Observed::new(store, metrics.clone()));
        let line_dates = Arc::new(Mutex::new(line::Dates::default()));
        let parked = Arc::new(line::Parked::default());
        metrics.report_sizes({
            let (judge, store, line_dates, parked) = (judge.clone(), store.clone(), line_dates.clone(), parked.clone());
            move || {
                let mut sizes = vec![
                    ("judge", mpsync_core::lock(&judge).len()),
                    ("lines", mpsync_core::lock(&line_dates).len()),
                    ("parked", parked.len()),
                ];
                sizes.extend(store.sizes());
                sizes
            }
        });
        let (origin, stopping) = (Instant::now(), watch::channel(false).0);
        Service {
            sweeper: sweep::Sweeper::new(store.clone(), judge.clone(), metrics.clone(), origin, stopping.subscribe()),
            store,
            judge,
            metrics,
            origin,
            identity,
            compat_ttl,
            stopping,
            long_polls: Arc::new(tokio::sync::Semaphore::new(DEFAULT_MAX_LONG_POLLS)),
            max_long_polls: DEFAULT_MAX_LONG_POLLS,
            sessions: sessions::Sessions::new(DEFAULT_MAX_SESSIONS),
            quiet: crate::quiet::Quiet::new(),
            turns: (0..TURNS).map(|_| tokio::sync::Mutex::new(())).collect(),
            max_line_wait: Duration::from_millis(mpsync_core::wire::MAX_WAIT_MS),
            line_dates,
            parked,
            watchers: watchers::Watchers::default(),
            max_watch_names: mpsync_core::watch::DEFAULT_MAX_WATCH_NAMES,
            max_poll_wait: Duration::from_millis(mpsync_core::wire::MAX_WAIT_MS),
            history: None,
        }
    }

    /// Caps how long a claim waits parked in a lock's line before it is
    /// answered (it asks for its own wait, at most half its TTL).
    pub fn with_max_line_wait(mut self, max: Duration) -> Self {
        self.max_line_wait = max;
        self
    }

    /// Caps how long a long-poll (`GET ?wait=`, `POST /v1/watch`) parks,
    /// whatever `timeout_ms` it asks for: behind a proxy that closes idle
    /// connections, set it below the proxy's idle timeout.
    pub fn with_max_poll_wait(mut self, max: Duration) -> Self {
        self.max_poll_wait = max;
        self
    }

    /// Caps the long-polls parked at once; one more is refused with
    /// [`ServiceError::TooManyLongPolls`].
    pub fn with_max_long_polls(mut self, max: usize) -> Self {
        self.max_long_polls = max.max(1);
        self.long_polls = Arc::new(tokio::sync::Semaphore::new(self.max_long_polls));
        self
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The store's name.
    pub fn store_name(&self) -> &'static str {
        self.store.name()
    }

    /// This elector's identity (`--identity`), as the status page names it.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn judge(&self) -> std::sync::MutexGuard<'_, Judge<Key>> {
        // Whatever the judge learns, the sweeper will clear once it ran out.
        self.sweeper.start();
        mpsync_core::lock(&self.judge)
    }

    /// The number of leases held right now, as this elector last saw them.
    pub fn held_count(&self) -> usize {
        self.judge().held_count(self.now())
    }

    /// Tells long-polls to answer now: the server is shutting down.
    pub fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves once the server is shutting down.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stopping = self.stopping.subscribe();
        async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        }
    }

    /// Checks that the store can keep a record named like `key`.
    pub fn check_name(&self, key: &Key) -> Result<(), ServiceError> {
        self.store.check_name(key).map_err(|reason| ServiceError::InvalidName {
            kind: key.kind.singular(),
            name: key.name.clone(),
            reason,
        })
    }

    /// The longest lease the store can guard, in milliseconds.
    pub fn max_ttl_ms(&self) -> u64 {
        self.store.max_ttl_ms()
    }

    /// Calls made to the store so far, by kind.
    pub fn store_calls(&self) -> Vec<(&'static str, u64)> {
        self.store.counters()
    }

    /// Checks that the store answers.
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    fn view(&self, key: &Key, stored: Option<&Versioned>, now: Duration) -> View {
        let Some(v) = stored else {
            // Gone from the store: nothing to judge, nothing to remember.
            self.judge().forget(key);
            return self.absent_view();
        };
        let cur = self.judge().observe(key, &v.record, v.version, now);
        let line = self.line_view(key, &v.record, now);
        let waiting = line.waiting;
        match cur.live_holder(now) {
            Some(holder) => View::Held(LeaseView {
                name: key.name.clone(),
                holder: holder.to_owned(),
                token: v.record.token,
                ttl_ms: v.record.ttl_ms,
                version: view_version(v.version, false),
                expires_in_ms: ms(cur.expires_in(now)),
                address: v.record.address.clone(),
                waiting,
                shared: false,
                permit: None,
                transfer: v.record.transfer.as_ref().map(TransferView::from),
            }),
            // Shared holds only: the newest stands for them all.
            None if let Some((holder, token, ttl_ms, permit, left)) = line.newest => View::Held(LeaseView {
                name: key.name.clone(),
                holder,
                token,
                ttl_ms,
                version: view_version(v.version, false),
                expires_in_ms: ms(left),
                address: None,
                waiting,
                shared: true,
                permit,
                transfer: None,
            }),
            None => View::Free { version: view_version(v.version, cur.is_expired(now)) },
        }
    }

    /// How a name with no record reads (see [`View::Absent`]).
    pub fn absent_view(&self) -> View {
        // Odd, as a view that ran out: at least the last view of any record
        // before it was forgotten, below any later write's.
        let floor = self.store.absent_version();
        View::Absent { version: if floor == 0 { 0 } else { view_version(floor, true) } }
    }

    /// Reads a record as judged now.
    pub async fn read(&self, key: &Key) -> Result<View, ServiceError> {
        let stored = self.store.get(key).await?;
        Ok(self.view(key, stored.as_ref(), self.now()))
    }

    /// A page of the records of `kind`, each judged now (see
    /// [`Store::list`] for `cursor` and `limit`).
    pub async fn list(&self, kind: Kind, cursor: Option<&str>, limit: usize) -> Result<ListView, ServiceError> {
        let page = self.store.list(kind, cursor, limit).await?;
        let now = self.now();
        let items = page
            .records
            .into_iter()
            .map(|(name, stored)| {
                let key = Key { kind, name };
                let (token, ttl_ms, address) =
                    (stored.record.token, stored.record.ttl_ms, stored.record.address.clone());
                let line = self.line_view(&key, &stored.record, now);
                let (waiting, permits) = (line.waiting, line.permits);
                let (shares, line) = (line.shares, line.line);
                // Held: the hand-over asked of the leader; released: the
                // reservation it left (cleared by the judge once it ends).
                let transfer = stored.record.transfer.as_ref().map(TransferView::from);
                let reservation = transfer.clone().filter(|_| stored.record.holder.is_none());
                match self.view(&key, Some(&stored), now) {
                    View::Held(lease) if lease.shared => RecordView {
                        name: key.name,
                        holder: None,
                        token,
                        ttl_ms,
                        expires_in_ms: None,
                        version: lease.version,
                        address: None,
                        waiting,
                        line,
                        shares,
                        permits,
                        transfer: None,
                    },
                    View::Held(lease) => RecordView {
                        name: key.name,
                        holder: Some(lease.holder),
                        token,
                        ttl_ms,
                        expires_in_ms: Some(lease.expires_in_ms),
                        version: lease.version,
                        address,
                        waiting,
                        line,
                        shares,
                        permits,
                        transfer,
                    },
                    other => RecordView {
                        name: key.name,
                        holder: None,
                        token,
                        ttl_ms,
                        expires_in_ms: None,
                        version: other.version(),
                        address: None,
                        waiting,
                        line,
                        shares,
                        permits,
                        transfer: reservation,
                    },
                }
            })
            .collect();
        Ok(ListView { items, next: page.next })
    }

    /// Long-poll: answers as soon as the view's version differs from
    /// `version` (a write, or the lease shown running out), at shutdown, or
    /// after `timeout` with the unchanged view, read again then (so the
    /// time left on a lease is as of the answer, not of the start).
    pub async fn wait(&self, key: &Key, version: u64, timeout: Duration) -> Result<View, ServiceError> {
        let deadline = tokio::time::Instant::now() + timeout.min(self.max_poll_wait);
        let _parked = self.park()?;
        let mut stopping = self.stopping.subscribe();
        loop {
            let view = self.read(key).await?;
            if view.version() != version || *stopping.borrow_and_update() {
                return Ok(view);
            }
            // A held lease running out changes the view: look again then
            // (rounded up, so the look comes after the expiry, not before).
            let expiry = match &view {
                View::Held(lease) => Some(tokio::time::Instant::now() + Duration::from_millis(lease.expires_in_ms + 1)),
                _ => None,
            };
            tokio::select! {
                changed = self.store.wait_change(key, store_version(version)) => changed?,
                () = tokio::time::sleep_until(deadline) => return self.read(key).await,
                () = async { tokio::time::sleep_until(expiry.unwrap_or(deadline)).await }, if expiry.is_some() => {}
                _ = stopping.changed() => {}
            }
        }
    }

    /// Takes a long-poll slot, counted as watching until dropped; refused
    /// past `--max-long-polls`.
    fn park(&self) -> Result<(tokio::sync::SemaphorePermit<'_>, crate::metrics::Watching<'_>), ServiceError> {
        let Ok(slot) = self.long_polls.try_acquire() else {
            self.metrics.refuse(crate::metrics::Refusal::LongPoll);
            if self.quiet.speak() {
                tracing::warn!(max = self.max_long_polls, "refusing long-polls past --max-long-polls");
            }
            return Err(ServiceError::TooManyLongPolls(self.max_long_polls));
        };
        Ok((slot, self.metrics.watching()))
    }

    /// [`Service::park`], waiting up to `patience` for a slot to come
    /// free.
    async fn park_within(
        &self,
        patience: Duration,
    ) -> Result<(tokio::sync::SemaphorePermit<'_>, crate::metrics::Watching<'_>), ServiceError> {
        if let Ok(Ok(slot)) = tokio::time::timeout(patience, self.long_polls.acquire()).await {
            return Ok((slot, self.metrics.watching()));
        }
        self.park()
    }

    /// Reads the record, lets `decide` choose at `now`, and writes what it
    /// chose with compare-and-swap, reading and deciding again when another
    /// writer got in between.
    async fn apply<W, A>(
        &self,
        key: &Key,
        decide: impl Fn(Option<&Current<'_>>, Duration) -> Step<W, A>,
    ) -> Result<Applied<W, A>, ServiceError> {
        // One read-decide-write at a time per name on this elector: a
        // crowd taking places in one lock's line would otherwise lose
        // compare-and-swap races until it gave up. Other electors' writes
        // still race, and compare-and-swap still decides them.
        let _turn = self.turns[turn_of(key)].lock().await;
        for _ in 0..CAS_ATTEMPTS {
            let stored = self.store.get(key).await?;
            let now = self.now();
            // Decided on the line without the waiters judged dead, written
            // over the version read: the write drops them.
            let pruned = stored.as_ref().and_then(|v| self.prune_line(key, &v.record, now));
            let step = {
                let mut judge = self.judge();
                let current =
                    stored.as_ref().map(|v| judge.observe(key, pruned.as_ref().unwrap_or(&v.record), v.version, now));
                decide(current.as_ref(), now)
            };
            let (record, value) = match step {
                Step::Answer(value) => return Ok(Applied::Answered(value)),
                Step::Write(record, value) => (record, value),
            };
            match self.store.put(key, &record, stored.as_ref()).await {
                Ok(Versioned { record, version, .. }) => {
                    // Dated from before the write: never later than the
                    // moment the store applied it, so the judge's expiry
                    // can only come early for others, never late.
                    self.judge().observe(key, &record, version, now);
                    self.wrote_line(key, stored.as_ref().map(|v| &v.record), &record, now);
                    return Ok(Applied::Written { value, record, version, now });
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Contended)
    }

    /// Refuses names the store cannot keep and leases longer than it can
    /// guard.
    fn check_claim(&self, key: &Key, request: &AcquireRequest) -> Result<(), ServiceError> {
        self.check_name(key)?;
        let max_ms = self.store.max_ttl_ms();
        if request.ttl_ms > max_ms {
            return Err(ServiceError::TtlTooLong { ttl_ms: request.ttl_ms, store: self.store.name(), max_ms });
        }
        Ok(())
    }

    /// Acquires (no token) or renews (with token) a lease.
    /// Refuses names the store cannot keep and leases longer than it can
    /// guard before any call to it.
    pub async fn claim(&self, key: &Key, request: &AcquireRequest) -> Result<ClaimResult, ServiceError> {
        self.check_claim(key, request)?;
        if let Some(gone) = self.check_session(key, request.session.as_deref()).await? {
            return Ok(ClaimResult::Refused(gone));
        }
        let claim = Claim {
            holder: &request.holder,
            ttl_ms: request.ttl_ms,
            token: request.token,
            address: request.address.as_deref(),
            key: request.key.as_ref(),
            shared: request.shared,
            permits: request.permits,
        };
        let applied = self
            .apply(key, |current, now| match decide_claim(current, &claim, now) {
                Outcome::Refused(conflict) => Step::Answer((conflict, current.is_some_and(|c| c.is_expired(now)))),
                Outcome::Acquired { record, took_over_expired } => {
                    Step::Write(record, (Event::Acquisition, took_over_expired))
                }
                Outcome::Renewed { record } => Step::Write(record, (Event::Renewal, false)),
            })
            .await?;
        match applied {
            Applied::Answered((conflict, expired)) => {
                self.metrics.count(key.kind, Event::Conflict);
                Ok(ClaimResult::Refused(conflict_view(conflict, expired)))
            }
            Applied::Written { value: (event, took_over_expired), record, version, now } => {
                let fresh = matches!(event, Event::Acquisition);
                if let Some(gone) = self.record_grant(key, request, fresh, record.token, now + record.ttl()).await? {
                    return Ok(ClaimResult::Refused(gone));
                }
                if took_over_expired {
                    self.metrics.count(key.kind, Event::Expiry);
                }
                self.metrics.count(key.kind, event);
                let expires_in = (now + request.ttl()).saturating_sub(self.now());
                let token = request.token.unwrap_or(record.token);
                let share = record.line.shares.iter().find(|s| request.shared && s.token == token);
                Ok(ClaimResult::Granted(LeaseView {
                    name: key.name.clone(),
                    holder: request.holder.clone(),
                    token,
                    ttl_ms: request.ttl_ms,
                    version: view_version(version, false),
                    expires_in_ms: ms(expires_in),
                    address: record.address.clone(),
                    waiting: record.line.waiters.len() as u64,
                    shared: share.is_some(),
                    permit: share.and_then(|s| s.permit),
                    // The leader learns of a transfer from its renewal.
                    transfer: record.transfer.as_ref().filter(|_| share.is_none()).map(TransferView::from),
                }))
            }
        }
    }

    /// Releases a lease at once.
    pub async fn release(&self, key: &Key, request: &ReleaseRequest) -> Result<ReleaseResult, ServiceError> {
        self.release_as(key, request, false).await
    }

    /// [`Service::release`]; `session_ended`: for a session that ended, not
    /// at the holder's request (the record's `why` says so).
    async fn release_as(
        &self,
        key: &Key,
        request: &ReleaseRequest,
        session_ended: bool,
    ) -> Result<ReleaseResult, ServiceError> {
        let (holder, token, lease_key) = (&request.holder, request.token, request.key.as_ref());
        let applied = self
            .apply(key, |current, now| match decide_release(current, holder, token, lease_key, now) {
                ReleaseOutcome::NotFound => Step::Answer(ReleaseResult::NotFound),
                ReleaseOutcome::Refused(conflict) => {
                    let expired = current.is_some_and(|c| c.is_expired(now));
                    Step::Answer(ReleaseResult::Refused(conflict_view(conflict, expired)))
                }
                ReleaseOutcome::Released { record } => match current {
                    Some(before) if session_ended => Step::Write(ended_by_session(record, before.record), ()),
                    _ => Step::Write(record, ()),
                },
            })
            .await?;
        let result = match applied {
            Applied::Answered(result) => result,
            // The judge dropped its entry on seeing the record written free.
            Applied::Written { .. } => ReleaseResult::Released,
        };
        match result {
            ReleaseResult::Refused(_) => self.metrics.count(key.kind, Event::Conflict),
            ReleaseResult::Released => {
                self.forget_released(key, token);
                self.metrics.count(key.kind, Event::Release);
            }
            ReleaseResult::NotFound => {}
        }
        Ok(result)
    }

    /// The compatible `PUT /locks/{name}`: acquire or heartbeat as this
    /// elector's identity with the compatible TTL. Its clients have no key,
    /// so it presents none: it cannot renew a lease a v1 client acquired
    /// with a key under the same holder name (409 `wrong_key`), and its
    /// own leases are keyless, renewable by anyone who can reach the port.
    pub async fn compat_put(&self, key: &Key) -> Result<ClaimResult, ServiceError> {
        let token = match self.read(key).await? {
            View::Held(lease) if lease.holder == self.identity => Some(lease.token),
            _ => None,
        };
        let request = AcquireRequest::new(&self.identity, self.compat_ttl, token, None);
        self.claim(key, &request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use mpsync_core::wire::{Kind, MAX_TTL_MS};

    #[test]
    fn view_versions_grow_with_every_write_and_with_an_expiry() {
        for v in [0, 1, 41, u64::MAX / 2 - 1] {
            let (written, expired) = (view_version(v, false), view_version(v, true));
            assert!(written < expired && expired < view_version(v + 1, false), "{v}: {written} {expired}");
            assert_eq!((store_version(written), store_version(expired)), (v, v));
        }
    }

    #[tokio::test]
    async fn a_library_caller_cannot_ask_for_a_lease_longer_than_the_store_guards() {
        let service = Service::new(Arc::new(MemoryStore::new()), "me".into(), Duration::from_secs(30));
        let key = Key { kind: Kind::Lock, name: "db".into() };
        let request = AcquireRequest::new("a", Duration::from_millis(MAX_TTL_MS + 1), None, None);
        let refused = service.claim(&key, &request).await;
        assert!(
            matches!(refused, Err(ServiceError::TtlTooLong { ttl_ms, .. }) if ttl_ms == MAX_TTL_MS + 1),
            "{refused:?}"
        );
        let fine = AcquireRequest { ttl_ms: MAX_TTL_MS, ..request };
        assert!(matches!(service.claim(&key, &fine).await, Ok(ClaimResult::Granted(_))));
    }
}
