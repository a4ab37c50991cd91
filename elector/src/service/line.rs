//! Fair locks on the elector: waiters in line (see `mpsync_core::line`).
//!
//! - [`Dates`] dates each waiter's refresh mark on this process's monotonic
//!   clock, as the judge dates a lease, so a waiter nobody saw refresh its
//!   place for its TTL is dropped by the next write ([`Service::apply`]
//!   prunes the line before any decision).
//! - A waiter's `PUT` parks on this elector until the lock is handed to it,
//!   its wait is over, or the elector stops. A write by this elector wakes
//!   only the waiter it handed the lock to and the new first in line
//!   ([`Parked::nudge`]); the first in line also watches the store, for a
//!   release through another elector, and every waiter wakes when a lease
//!   or a place ahead of it may run out. So a release answers one parked
//!   request, not every waiter's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mpsync_core::line::{LeaveOutcome, Line, LineOutcome, Queue, Share, Waiter, decide_leave, decide_line};
use mpsync_core::record::Claim;
use mpsync_core::wire::{
    AcquireRequest, ConflictView, LeaseView, MAX_LISTED_WAITERS, QueuedView, ReleaseRequest, ShareView, WaiterView,
};
use mpsync_core::{Current, Record};
use tokio::sync::Notify;

use super::{Applied, ClaimResult, ReleaseResult, Service, ServiceError, Step, conflict_view, ms, view_version};
use crate::metrics::Event;
use crate::store::Key;

/// When this elector first saw each waiter's (or shared holder's) current
/// mark, and when it first saw the waiter at all.
#[derive(Debug, Clone, Copy)]
struct Dated {
    mark: u64,
    at: Duration,
    since: Duration,
    ttl: Duration,
}

/// How [`Dates`] keys a shared hold: by its token, with this bit set apart
/// from waiters' tickets. A token is never handed out twice for a name,
/// even where the record is forgotten and made anew (its tickets start
/// over), so a new hold is never dated by an old one's sighting.
const SHARE: u64 = 1 << 63;

fn share_id(share: &Share) -> u64 {
    share.token | SHARE
}

/// How often [`Dates`] drops the lines of names it has not seen for long.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// One lock's line as this elector last dated it.
#[derive(Debug, Default)]
struct LineDates {
    /// The waiters last dated, kept (so that the vector is not freed and
    /// its address reused while this compares it): a record read again
    /// shares it, and then nothing in it needs dating again.
    waiters: Arc<Vec<Arc<Waiter>>>,
    /// The line's counter then: any place, refresh or shared grant since
    /// changes it.
    tickets: u64,
    /// The shared holds then, by token and mark.
    shares: Vec<(u64, u64)>,
    dated: HashMap<u64, Dated>,
    /// The tickets that had run out at the last look.
    dead: Vec<u64>,
    /// When the next of those alive at the last look runs out.
    next_expiry: Option<Duration>,
}

impl LineDates {
    /// Dates what changed in `line` (a mark first seen now is dated now).
    fn date(&mut self, line: &Line, now: Duration) {
        // The line only ever loses waiters and gains them at the back, and
        // a waiter refreshed is a new `Arc`: walk the old and the new side
        // by side and date only what changed (a hand-over touches one
        // entry, however long the line).
        let before = std::mem::take(&mut self.waiters);
        let (old, new) = (&before[..], &line.waiters[..]);
        let (mut i, mut j) = (0, 0);
        while j < new.len() {
            match old.get(i) {
                Some(o) if Arc::ptr_eq(o, &new[j]) => {
                    i += 1;
                    j += 1;
                }
                Some(o) if o.ticket == new[j].ticket => {
                    self.see(new[j].ticket, new[j].refreshed, new[j].ttl(), now);
                    i += 1;
                    j += 1;
                }
                Some(o) => {
                    self.dated.remove(&o.ticket);
                    i += 1;
                }
                None => {
                    self.see(new[j].ticket, new[j].refreshed, new[j].ttl(), now);
                    j += 1;
                }
            }
        }
        for o in &old[i..] {
            self.dated.remove(&o.ticket);
        }
        // Shared holds are few: date each, forget those gone.
        for share in &line.shares {
            self.see(share_id(share), share.refreshed, share.ttl(), now);
        }
        for (token, _) in &self.shares {
            if !line.shares.iter().any(|s| s.token == *token) {
                self.dated.remove(&(token | SHARE));
            }
        }
        self.waiters = line.waiters.clone();
        self.tickets = line.tickets;
        self.shares = line.shares.iter().map(|s| (s.token, s.refreshed)).collect();
    }

    /// Dates one entry's `mark` (first seen now, unless already seen).
    fn see(&mut self, id: u64, mark: u64, ttl: Duration, now: Duration) {
        let dated = self.dated.entry(id).or_insert(Dated { mark, at: now, since: now, ttl });
        if dated.mark != mark {
            (dated.mark, dated.at, dated.ttl) = (mark, now, ttl);
        }
    }

    /// Which entries ran out by `now`, and when the next will.
    fn judge(&mut self, now: Duration) {
        self.dead.clear();
        self.next_expiry = None;
        for (ticket, d) in &self.dated {
            let expiry = d.at + d.ttl;
            if now >= expiry {
                self.dead.push(*ticket);
            } else if self.next_expiry.is_none_or(|next| expiry < next) {
                self.next_expiry = Some(expiry);
            }
        }
    }

    fn unchanged(&self, line: &Line) -> bool {
        Arc::ptr_eq(&self.waiters, &line.waiters)
            && self.tickets == line.tickets
            && self.shares.len() == line.shares.len()
            && self.shares.iter().zip(&line.shares).all(|(seen, s)| *seen == (s.token, s.refreshed))
    }
}

/// Waiters and shared holders dated per lock.
#[derive(Debug, Default)]
pub(super) struct Dates {
    lines: HashMap<Key, LineDates>,
    last_sweep: Duration,
}

impl Dates {
    /// Dates the waiters and shared holds of `line` and forgets those no
    /// longer in it; the tickets of those that ran out. A line read again
    /// unchanged costs nothing to date, however long it is.
    fn observe(&mut self, key: &Key, line: &Line, now: Duration) -> Vec<u64> {
        self.sweep(now);
        if line.waiters.is_empty() && line.shares.is_empty() {
            self.lines.remove(key);
            return Vec::new();
        }
        let dates = self.lines.entry(key.clone()).or_default();
        if line.tickets < dates.tickets {
            // A record made anew (the old one was forgotten): its tickets
            // start over, and nothing seen of the old one applies.
            *dates = LineDates::default();
        }
        if !dates.unchanged(line) {
            dates.date(line, now);
            dates.judge(now);
        } else if dates.next_expiry.is_some_and(|next| now >= next) {
            dates.judge(now);
        }
        dates.dead.clone()
    }

    fn dated(&self, key: &Key, ticket: u64) -> Option<&Dated> {
        self.lines.get(key).and_then(|l| l.dated.get(&ticket))
    }

    /// When this elector first saw the current mark of the shared hold.
    fn share_dated_at(&self, key: &Key, share: &Share) -> Option<Duration> {
        self.dated(key, share_id(share)).map(|d| d.at)
    }

    /// Drops the lines whose every entry ran out long ago: a name nobody
    /// reads again must not stay here for ever. An entry dropped here and
    /// seen again is dated anew, later: it lasts longer, never shorter.
    fn sweep(&mut self, now: Duration) {
        if now < self.last_sweep + SWEEP_EVERY {
            return;
        }
        self.last_sweep = now;
        self.lines.retain(|_, line| line.dated.values().any(|d| now < d.at + d.ttl + SWEEP_EVERY));
    }

    /// True when the waiter holding `ticket` should write a new refresh
    /// mark: this elector has not seen it refreshed within a quarter of its
    /// TTL.
    fn refresh_due(&self, key: &Key, ticket: u64, now: Duration) -> bool {
        self.dated(key, ticket).is_none_or(|d| now >= d.at + d.ttl / 4)
    }

    /// When the next waiter's place, or shared hold, alive at the last look
    /// may run out.
    fn next_expiry(&self, key: &Key) -> Option<Duration> {
        self.lines.get(key).and_then(|l| l.next_expiry)
    }

    /// How long the waiter with `ticket` has been seen in line.
    fn waited(&self, key: &Key, ticket: u64, now: Duration) -> Option<Duration> {
        self.dated(key, ticket).map(|d| now.saturating_sub(d.since))
    }

    /// Locks with a line dated here, for `/metrics`.
    pub(super) fn len(&self) -> usize {
        self.lines.len()
    }
}

/// One parked request: how to wake it, and when this elector itself
/// wrote the hand-over of the lock to it, if it did.
#[derive(Debug, Default)]
struct Waiting {
    notify: Notify,
    handed_at: Mutex<Option<Duration>>,
}

/// The waiters' requests parked on this elector, by lock and ticket.
#[derive(Debug, Default)]
pub(super) struct Parked {
    waiting: Mutex<HashMap<(Key, u64), Arc<Waiting>>>,
}

/// A parked request's registration, undone when it ends.
struct Registration<'a> {
    parked: &'a Parked,
    at: (Key, u64),
    waiting: Arc<Waiting>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        mpsync_core::lock(&self.parked.waiting).remove(&self.at);
    }
}

impl Registration<'_> {
    /// When this elector decided the write that handed the lock to this
    /// request's waiter, if it was this elector's.
    fn handed_at(&self) -> Option<Duration> {
        *mpsync_core::lock(&self.waiting.handed_at)
    }
}

impl Parked {
    fn register(&self, key: &Key, ticket: u64) -> Registration<'_> {
        let waiting = Arc::new(Waiting::default());
        let at = (key.clone(), ticket);
        mpsync_core::lock(&self.waiting).insert(at.clone(), waiting.clone());
        Registration { parked: self, at, waiting }
    }

    /// Wakes, after a write of `record` decided at `now`, the waiters it
    /// handed the lock to (`handed`, telling each when) and the first in
    /// line (a wake-up left for one not parked right now waits for it).
    fn nudge(&self, key: &Key, record: &Record, handed: &[u64], now: Duration) {
        let first = record.line.waiters.first().map(|w| w.ticket);
        if handed.is_empty() && first.is_none() {
            return;
        }
        let waiting = mpsync_core::lock(&self.waiting);
        for ticket in handed {
            if let Some(w) = waiting.get(&(key.clone(), *ticket)) {
                *mpsync_core::lock(&w.handed_at) = Some(now);
                w.notify.notify_one();
            }
        }
        if let Some(w) = first.and_then(|ticket| waiting.get(&(key.clone(), ticket))) {
            w.notify.notify_one();
        }
    }

    /// Requests parked now, for `/metrics`.
    pub(super) fn len(&self) -> usize {
        mpsync_core::lock(&self.waiting).len()
    }
}

/// A lock's line and shared holds as a view shows them.
#[derive(Debug, Default)]
pub(super) struct LineView {
    /// How many wait, alive.
    pub waiting: u64,
    /// The first of them.
    pub line: Vec<WaiterView>,
    /// The first shared holds.
    pub shares: Vec<ShareView>,
    /// The newest shared hold: holder, token, TTL, permit, time left.
    pub newest: Option<(String, u64, u64, Option<u32>, Duration)>,
    /// Semaphores: the permits.
    pub permits: Option<u32>,
}

/// The answer to a claim that waits in line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueResult {
    /// The lock is the claimant's.
    Granted(LeaseView),
    /// The claimant holds a place in line.
    Queued(QueuedView),
    /// Refused (the ticket is not in line, a wrong key, a session gone).
    Refused(ConflictView),
}

/// What a decision in [`Service::queue`] came to.
enum Turn {
    Granted {
        took_over_expired: bool,
        ticket: Option<u64>,
    },
    Holds {
        lease: LeaseView,
    },
    Queued {
        ticket: u64,
        position: usize,
        waiting: usize,
        holder: Option<String>,
        version: u64,
        wake: Option<Duration>,
    },
    Full(usize),
    Refused(ConflictView),
}

impl Service {
    /// Removes the waiters and shared holds this elector judges dead from
    /// `record`'s line: the record to decide on instead, or `None` if none
    /// died.
    pub(super) fn prune_line(&self, key: &Key, record: &Record, now: Duration) -> Option<Record> {
        if record.line.waiters.is_empty() && record.line.shares.is_empty() {
            if !record.line.is_empty() {
                mpsync_core::lock(&self.line_dates).lines.remove(key);
            }
            return None;
        }
        let dead = mpsync_core::lock(&self.line_dates).observe(key, &record.line, now);
        if dead.is_empty() {
            return None;
        }
        let mut pruned = record.clone();
        mpsync_core::line::prune(&mut pruned.line, |w| !dead.contains(&w.ticket), |s| !dead.contains(&share_id(s)));
        Some(pruned)
    }

    /// After this elector wrote `record` over `before` (as read), in a
    /// write decided at `now`: dates its waiters' and shared holders' marks
    /// and wakes the waiters the write concerns, telling those it handed
    /// the lock to when.
    pub(super) fn wrote_line(&self, key: &Key, before: Option<&Record>, record: &Record, now: Duration) {
        if record.line.is_empty() {
            return;
        }
        mpsync_core::lock(&self.line_dates).observe(key, &record.line, now);
        let (granted, token) = before.map_or((None, 0), |b| (b.line.granted, b.token));
        let exclusive = record.line.granted.filter(|t| Some(*t) != granted);
        let shares = record.line.shares.iter().filter(|s| s.token > token).map(|s| s.ticket);
        let handed: Vec<u64> = exclusive.into_iter().chain(shares).collect();
        self.parked.nudge(key, record, &handed, now);
    }

    /// `record`'s line as judged now, the dead left out: how many wait, the
    /// first [`MAX_LISTED_WAITERS`] of them, and the shared holds (as many).
    pub(super) fn line_view(&self, key: &Key, record: &Record, now: Duration) -> LineView {
        if record.line.waiters.is_empty() && record.line.shares.is_empty() {
            return LineView::default();
        }
        let dead = mpsync_core::lock(&self.line_dates).observe(key, &record.line, now);
        let live = |id: &u64| !dead.contains(id);
        let line = record
            .line
            .waiters
            .iter()
            .filter(|w| live(&w.ticket))
            .take(MAX_LISTED_WAITERS)
            .enumerate()
            .map(|(position, w)| WaiterView {
                holder: w.holder.clone(),
                shared: w.shared,
                ticket: w.ticket,
                position: position as u64,
            })
            .collect();
        let shares: Vec<_> = record.line.shares.iter().filter(|s| live(&share_id(s))).collect();
        let newest = shares.iter().max_by_key(|s| s.token).map(|s| {
            let expires_at = mpsync_core::lock(&self.line_dates).share_dated_at(key, s).unwrap_or(now) + s.ttl();
            (s.holder.clone(), s.token, s.ttl_ms, s.permit, expires_at.saturating_sub(now))
        });
        let dead_waiters = record.line.waiters.iter().filter(|w| !live(&w.ticket)).count();
        LineView {
            waiting: (record.line.waiters.len() - dead_waiters) as u64,
            line,
            shares: shares
                .iter()
                .take(MAX_LISTED_WAITERS)
                .map(|s| ShareView { holder: s.holder.clone(), token: s.token, permit: s.permit })
                .collect(),
            newest,
            permits: record.line.permits,
        }
    }

    /// A claim to have the lock, or to wait in line for it
    /// (`"queue": true`): takes or keeps a place, waits up to
    /// `request.wait_ms` for the lock to be handed over, and answers with the
    /// lease or the place.
    pub async fn queue(&self, key: &Key, request: &AcquireRequest) -> Result<QueueResult, ServiceError> {
        self.check_claim(key, request)?;
        if let Some(gone) = self.check_session(key, request.session.as_deref()).await? {
            return Ok(QueueResult::Refused(gone));
        }
        let claim = Claim {
            holder: &request.holder,
            ttl_ms: request.ttl_ms,
            token: None,
            address: None,
            key: request.key.as_ref(),
            shared: request.shared,
            permits: request.permits,
        };
        let arrived = self.now();
        // Held while this request is parked (see below).
        let mut _slot = None;
        let deadline = tokio::time::Instant::now() + request.line_wait().min(self.max_line_wait);
        let max_waiters = self.store.max_waiters();
        let mut ticket = request.ticket;
        let mut registration = None;
        let _waiting = self.metrics.waiting();
        let mut stopping = self.stopping.subscribe();
        loop {
            let refresh = ticket.is_none_or(|t| mpsync_core::lock(&self.line_dates).refresh_due(key, t, self.now()));
            let queue = Queue { ticket, session: request.session.as_deref(), refresh, max_waiters };
            let applied = self.apply(key, |current, now| self.take_turn(key, current, &claim, &queue, now)).await?;
            let turn = match applied {
                Applied::Answered(turn) => turn,
                Applied::Written {
                    value: Turn::Queued { ticket, position, waiting, holder, wake, .. },
                    version,
                    ..
                } => Turn::Queued { ticket, position, waiting, holder, version: view_version(version, false), wake },
                Applied::Written { value, record, version, now } => {
                    if let Turn::Granted { took_over_expired, ticket } = value {
                        if let Some(place) = ticket {
                            self.record_waiting(request.session.as_deref(), key, place, None);
                        }
                        return self
                            .granted_from_line(key, request, &record, version, now, took_over_expired, ticket)
                            .await;
                    }
                    unreachable!("only a grant or a place is written")
                }
            };
            let (place, position, version, wake) = match turn {
                Turn::Refused(view) => {
                    self.metrics.count(key.kind, Event::Conflict);
                    return Ok(QueueResult::Refused(view));
                }
                Turn::Full(waiting) => return Err(ServiceError::LineFull { waiting }),
                Turn::Holds { lease } => {
                    if let Some(place) = ticket {
                        self.record_waiting(request.session.as_deref(), key, place, None);
                    }
                    // Handed over by a write of this elector's, decided
                    // after this request arrived: dated after it was sent,
                    // here and by every other elector (which first see it
                    // later still).
                    let after = registration.as_ref().and_then(Registration::handed_at).is_some_and(|d| d >= arrived);
                    return self.handed_over(key, request, lease, after).await;
                }
                Turn::Granted { .. } => unreachable!("a grant is always written"),
                Turn::Queued { ticket, position, waiting, holder, version, wake } => {
                    let me = Some((request.holder.as_str(), request.key.as_ref()));
                    self.record_waiting(request.session.as_deref(), key, ticket, me);
                    let view = QueuedView {
                        name: key.name.clone(),
                        ticket,
                        position: position as u64,
                        waiting: waiting as u64,
                        holder,
                        version,
                    };
                    if tokio::time::Instant::now() >= deadline || *stopping.borrow_and_update() {
                        return Ok(QueueResult::Queued(view));
                    }
                    (ticket, position, version, wake)
                }
            };
            if ticket != Some(place) || registration.is_none() {
                // Registered after the write that gave the place: look once
                // more before parking, for a hand-over in between.
                ticket = Some(place);
                registration = Some(self.parked.register(key, place));
                // A parked waiter is a long-poll: counted against
                // --max-long-polls (its place is kept; it backs off).
                match self.long_polls.clone().try_acquire_owned() {
                    Ok(permit) => _slot = Some(permit),
                    Err(_) => {
                        self.metrics.refuse(crate::metrics::Refusal::LongPoll);
                        return Err(ServiceError::TooManyLongPolls(self.max_long_polls));
                    }
                }
                continue;
            }
            let Some(parked) = &registration else { continue };
            let wake_at = wake.map_or(deadline, |at| {
                deadline.min(tokio::time::Instant::now() + at.saturating_sub(self.now()) + Duration::from_millis(1))
            });
            let first = position == 0;
            tokio::select! {
                () = parked.waiting.notify.notified() => {}
                () = tokio::time::sleep_until(wake_at) => {}
                changed = self.store.wait_change(key, super::store_version(version)), if first => changed?,
                _ = stopping.changed() => {}
            }
        }
    }

    /// The decision of one turn of [`Service::queue`].
    fn take_turn(
        &self,
        key: &Key,
        current: Option<&Current<'_>>,
        claim: &Claim<'_>,
        queue: &Queue<'_>,
        now: Duration,
    ) -> Step<Turn, Turn> {
        match decide_line(current, claim, queue, now) {
            LineOutcome::Granted { record, took_over_expired } => {
                let ticket = record.line.granted;
                Step::Write(record, Turn::Granted { took_over_expired, ticket })
            }
            LineOutcome::Holds { token } => {
                let Some(c) = current else { unreachable!("a lock handed over has a record") };
                let share = c.record.line.shares.iter().find(|s| s.token == token);
                let (dated_at, ttl) = match share {
                    Some(share) => {
                        let dated = mpsync_core::lock(&self.line_dates).share_dated_at(key, share);
                        (dated.unwrap_or(now), share.ttl())
                    }
                    None => (c.observed_at, c.record.ttl()),
                };
                let lease = LeaseView {
                    name: key.name.clone(),
                    holder: claim.holder.to_owned(),
                    token,
                    ttl_ms: ms(ttl),
                    version: view_version(c.version, false),
                    expires_in_ms: ms((dated_at + ttl).saturating_sub(now)),
                    address: None,
                    waiting: c.record.line.waiters.len() as u64,
                    shared: share.is_some(),
                    permit: share.and_then(|s| s.permit),
                    transfer: None,
                };
                Step::Answer(Turn::Holds { lease })
            }
            LineOutcome::Full { waiting } => Step::Answer(Turn::Full(waiting)),
            LineOutcome::Refused(conflict) => {
                let expired = current.is_some_and(|c| c.is_expired(now));
                Step::Answer(Turn::Refused(conflict_view(conflict, expired)))
            }
            LineOutcome::Queued { record, ticket, position, waiting } => {
                // Wake when the lease held, or a place or shared hold, may
                // run out.
                let holder_expiry = current.and_then(|c| c.live_holder(now).and(c.expires_at()));
                let other = mpsync_core::lock(&self.line_dates).next_expiry(key);
                let wake = [holder_expiry, other].into_iter().flatten().min();
                let holder = current.and_then(|c| c.live_holder(now)).map(str::to_owned);
                let version = current.map_or(0, |c| view_version(c.version, c.is_expired(now)));
                let turn = Turn::Queued { ticket, position, waiting, holder, version, wake };
                match record {
                    Some(record) => Step::Write(record, turn),
                    None => Step::Answer(turn),
                }
            }
        }
    }

    /// The claimant took the lock (from the front of the line, or with
    /// nobody in it): the lease, recorded under its session.
    #[allow(clippy::too_many_arguments)]
    async fn granted_from_line(
        &self,
        key: &Key,
        request: &AcquireRequest,
        record: &Record,
        version: u64,
        now: Duration,
        took_over_expired: bool,
        ticket: Option<u64>,
    ) -> Result<QueueResult, ServiceError> {
        if let Some(gone) = self.record_grant(key, request, true, record.token, now + request.ttl()).await? {
            return Ok(QueueResult::Refused(gone));
        }
        if took_over_expired {
            self.metrics.count(key.kind, Event::Expiry);
        }
        self.metrics.count(key.kind, Event::Acquisition);
        if let Some(waited) = ticket.and_then(|t| mpsync_core::lock(&self.line_dates).waited(key, t, now)) {
            self.metrics.observe_lock_wait(waited);
        }
        let share = record.line.shares.iter().find(|s| s.token == record.token);
        Ok(QueueResult::Granted(LeaseView {
            name: key.name.clone(),
            holder: request.holder.clone(),
            token: record.token,
            ttl_ms: request.ttl_ms,
            version: view_version(version, false),
            expires_in_ms: ms((now + request.ttl()).saturating_sub(self.now())),
            address: None,
            waiting: record.line.waiters.len() as u64,
            shared: share.is_some(),
            permit: share.and_then(|s| s.permit),
            transfer: None,
        }))
    }

    /// The lock was handed to the claimant as `lease`. Unless this
    /// elector wrote the hand-over after the request arrived
    /// (`dated_after`), the hand-over may have been decided (by any
    /// elector) before the holder sent it, and dated from then, earlier
    /// than the holder counts it: renew it first, so that the count starts
    /// now for every elector.
    async fn handed_over(
        &self,
        key: &Key,
        request: &AcquireRequest,
        lease: LeaseView,
        dated_after: bool,
    ) -> Result<QueueResult, ServiceError> {
        if !dated_after {
            let renewal = AcquireRequest {
                token: Some(lease.token),
                queue: false,
                ticket: None,
                wait_ms: None,
                ..request.clone()
            };
            return Ok(match self.claim(key, &renewal).await? {
                ClaimResult::Granted(lease) => QueueResult::Granted(lease),
                ClaimResult::Refused(view) => QueueResult::Refused(view),
            });
        }
        let waited = request.ticket.and_then(|t| mpsync_core::lock(&self.line_dates).waited(key, t, self.now()));
        let expires = self.now() + Duration::from_millis(lease.expires_in_ms);
        if let Some(gone) = self.record_grant(key, request, true, lease.token, expires).await? {
            return Ok(QueueResult::Refused(gone));
        }
        if let Some(waited) = waited {
            self.metrics.observe_lock_wait(waited);
        }
        Ok(QueueResult::Granted(lease))
    }

    /// Gives up a place in line (`DELETE` with a ticket); a lease the lock
    /// was handed over as is released with it.
    pub async fn leave(&self, key: &Key, request: &ReleaseRequest) -> Result<ReleaseResult, ServiceError> {
        let Some(ticket) = request.ticket else {
            return self.release(key, request).await;
        };
        let (holder, lease_key) = (&request.holder, request.key.as_ref());
        let applied = self
            .apply(key, |current, now| match decide_leave(current, holder, ticket, lease_key, now) {
                LeaveOutcome::NotFound => Step::Answer(ReleaseResult::NotFound),
                LeaveOutcome::Refused(conflict) => {
                    let expired = current.is_some_and(|c| c.is_expired(now));
                    Step::Answer(ReleaseResult::Refused(conflict_view(conflict, expired)))
                }
                LeaveOutcome::Left { record, released } => Step::Write(record, released),
            })
            .await?;
        Ok(match applied {
            Applied::Answered(result) => {
                if matches!(result, ReleaseResult::Refused(_)) {
                    self.metrics.count(key.kind, Event::Conflict);
                }
                result
            }
            Applied::Written { value: released, .. } => {
                self.record_waiting(None, key, ticket, None);
                if let Some(token) = released {
                    self.forget_released(key, token);
                    self.metrics.count(key.kind, Event::Release);
                }
                ReleaseResult::Released
            }
        })
    }
}
