//! Fair locks: the line of waiters a lock record keeps.
//!
//! A claimant that asks to wait its turn (`"queue": true` on a lock's
//! `PUT`) takes a place at the back of the record's [`Line`] when it cannot
//! have the lock at once, and gets a ticket. The lock goes to the waiter at
//! the front, and only to it: an acquisition without a place in line is
//! refused while anyone waits ([`ConflictReason::Queued`]), so nobody jumps
//! the line. A release hands the lock straight to the front waiter in the
//! same write ([`hand_over`]): the waiter holds it with a new token before
//! it asks again, and the elector wakes only that waiter.
//!
//! # Waiters that die
//!
//! A waiter keeps its place by asking again (`PUT` with its ticket) within
//! its TTL; each refresh writes a new `refreshed` mark, and an elector dates
//! each waiter from when it first saw that mark, on its own monotonic clock,
//! as the judge dates a lease. A waiter it saw no refresh of for its TTL is
//! dead: the next write drops it (the elector prunes the line before it
//! decides), so a dead waiter holds up the line for at most its TTL. A
//! waiter the lock was handed to while it was dead holds a lease like any
//! other holder that stopped renewing: it runs out after its TTL.
//!
//! # Safety of a handed-over lease
//!
//! A waiter counts a lease it was handed from the moment it sent the
//! request that told it so, as for any grant. Electors date the
//! handed-over lease from the write that made it (the deciding elector
//! from its decision), which may precede that request: unless the elector
//! answering wrote the hand-over itself after the request arrived, it
//! renews the lease before answering ([`LineOutcome::Holds`]), so that no
//! elector's count starts before the holder's.

use core::time::Duration;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::record::{Claim, Conflict, ConflictReason, Current, KeyDigest, Record, Why, key_fits};
use crate::wire::LeaseKey;

/// One waiter in a lock's line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    /// Who waits.
    pub holder: String,
    /// Its place: unique within the record, given out in order.
    pub ticket: u64,
    /// The lease it asks for, and how long its place lasts unrefreshed.
    pub ttl_ms: u64,
    /// Changes at every refresh (a value of the line's counter): the mark an
    /// elector dates the waiter by.
    pub refreshed: u64,
    /// The digest of the key it waits with; the lease it gets is bound to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_sha256: Option<KeyDigest>,
    /// The session it waits under, if any: the elector that has it drops
    /// the waiter when the session ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// It waits for a shared hold (a reader, or one permit).
    #[serde(default, skip_serializing_if = "core::ops::Not::not")]
    pub shared: bool,
}

/// A shared hold of a lock: one of its readers, or one permit of a
/// semaphore. Each has its own lease and fencing token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// Who holds it.
    pub holder: String,
    /// Its fencing token, from the record's one counter.
    pub token: u64,
    /// Unique within the record: the place it waited in, or one given out
    /// at the grant.
    pub ticket: u64,
    /// The lease duration.
    pub ttl_ms: u64,
    /// Changes at every renewal: the mark an elector dates the lease by.
    pub refreshed: u64,
    /// Semaphores: which of the permits it holds (0-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permit: Option<u32>,
    /// The digest of the key it was granted with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_sha256: Option<KeyDigest>,
}

impl Share {
    /// The lease duration.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }
}

impl Waiter {
    /// How long its place lasts without a refresh.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }
}

/// The waiters of one lock, first in line first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// The waiters, in the order they took their places. Shared between
    /// the copies of a record (a read copies it), and copied only when one
    /// is written: a line thousands long costs a read nothing.
    #[serde(default, skip_serializing_if = "no_waiters")]
    pub waiters: Arc<Vec<Arc<Waiter>>>,
    /// The last ticket or refresh mark given out (only grows).
    #[serde(default)]
    pub tickets: u64,
    /// The ticket of the waiter the lock was handed to, while it holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted: Option<u64>,
    /// The shared holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<Share>,
    /// Changes at every grant and renewal of the exclusive lease, once the
    /// record has a line: the mark the judge dates that lease by, so that
    /// a waiter's write does not make it look renewed (see
    /// [`Record::lease_mark`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub renewed: u64,
    /// How many shared holds there may be at once (a semaphore); `None`:
    /// any number (the readers of a read-write lock). Set by the first
    /// shared claim while nobody shares or waits to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permits: Option<u32>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn no_waiters(waiters: &Arc<Vec<Arc<Waiter>>>) -> bool {
    waiters.is_empty()
}

impl Line {
    /// A new mark for the exclusive lease just granted or renewed, in a
    /// record that has a line (one that never had stays without).
    pub(crate) fn renew_mark(mut self) -> Line {
        if !self.is_empty() {
            self.renewed = self.mint();
        }
        self
    }

    /// True for a record that never had a line: nothing to store.
    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
            && self.tickets == 0
            && self.granted.is_none()
            && self.shares.is_empty()
            && self.permits.is_none()
    }

    /// Whether a claim can be had now, as far as holders go (the line is
    /// the caller's to check): a shared one while no exclusive lease is
    /// live and a permit is free, an exclusive one while nobody holds.
    fn admits(&self, exclusive_live: bool, shared: bool) -> bool {
        !exclusive_live
            && if shared { self.permits.is_none_or(|n| self.shares.len() < n as usize) } else { self.shares.is_empty() }
    }

    /// The lowest permit nobody holds (semaphores).
    fn free_permit(&self) -> Option<u32> {
        let n = self.permits?;
        (0..n).find(|p| !self.shares.iter().any(|s| s.permit == Some(*p)))
    }

    /// Whether shared claims asking for `permits` fit this lock: they must
    /// ask for what its shared holders and waiters asked for; with none,
    /// the lock takes the new number.
    fn fit_permits(&mut self, permits: Option<u32>) -> bool {
        if self.shares.is_empty() && !self.waiters.iter().any(|w| w.shared) {
            self.permits = permits;
        }
        self.permits == permits
    }

    /// Where `ticket` stands (0: next), if it is in line.
    pub fn position(&self, ticket: u64) -> Option<usize> {
        self.waiters.iter().position(|w| w.ticket == ticket)
    }

    fn mint(&mut self) -> u64 {
        self.tickets += 1;
        self.tickets
    }
}

/// Grants `holder` a shared hold of `record` with the next token (the one
/// new token of this write), in the place `ticket` or one given out now.
/// An exclusive lease that ran out is cleared with it.
fn grant_share(record: &mut Record, holder: &str, ttl_ms: u64, key_sha256: Option<KeyDigest>, ticket: Option<u64>) {
    if record.holder.take().is_some() {
        (record.address, record.key_sha256, record.line.granted) = (None, None, None);
    }
    record.token += 1;
    let ticket = ticket.unwrap_or_else(|| record.line.mint());
    let refreshed = record.line.mint();
    let permit = record.line.free_permit();
    record.line.shares.push(Share {
        holder: holder.to_owned(),
        token: record.token,
        ticket,
        ttl_ms,
        refreshed,
        permit,
        key_sha256,
    });
}

/// Decides a claim for a shared hold made without a place in line: a
/// grant when one can be had now and nobody waits, a renewal of the
/// shared hold `claim.token` names, or a refusal. The record's dead shared
/// holders and waiters must already be removed.
pub fn decide_shared(current: Option<&Current<'_>>, claim: &Claim<'_>, now: Duration) -> crate::record::Outcome {
    use crate::record::Outcome;
    let refuse = |reason| Outcome::Refused(refusal(current, now, reason));
    let mut record = current.map_or_else(|| Record::free(claim.ttl_ms), |c| c.record.clone());
    if !record.line.fit_permits(claim.permits) {
        return refuse(ConflictReason::PermitsDiffer);
    }
    let live = current.and_then(|c| c.live_holder(now)).is_some();
    match claim.token {
        None if record.line.admits(live, true) && record.line.waiters.is_empty() => {
            let took_over_expired = current.is_some_and(|c| c.is_expired(now));
            grant_share(&mut record, claim.holder, claim.ttl_ms, claim.key.map(KeyDigest::of), None);
            Outcome::Acquired { record, took_over_expired }
        }
        None if record.line.admits(live, true) => refuse(ConflictReason::Queued),
        None => refuse(ConflictReason::Held),
        Some(token) => {
            let mark = record.line.mint();
            let Some(share) = record.line.shares.iter_mut().find(|s| s.token == token && s.holder == claim.holder)
            else {
                return refuse(if live { ConflictReason::Held } else { ConflictReason::NotHeld });
            };
            if !key_fits(share.key_sha256.as_ref(), claim.key) {
                return refuse(ConflictReason::WrongKey);
            }
            (share.refreshed, share.ttl_ms) = (mark, claim.ttl_ms);
            Outcome::Renewed { record }
        }
    }
}

/// The conflict to answer with: who holds it exclusively, else the first
/// shared holder.
fn refusal(current: Option<&Current<'_>>, now: Duration, reason: ConflictReason) -> Conflict {
    current
        .map_or(Conflict { holder: None, expires_in: Duration::ZERO, version: 0, reason }, |c| c.conflict(now, reason))
}

/// Releases the shared hold `token` of `holder`, presenting `key`: the
/// record to write (handed on to the line), `None` if it holds none such,
/// `Err` for a wrong key.
pub fn release_share(record: &Record, holder: &str, token: u64, key: Option<&LeaseKey>) -> Option<Result<Record, ()>> {
    let at = record.line.shares.iter().position(|s| s.token == token && s.holder == holder)?;
    if !key_fits(record.line.shares[at].key_sha256.as_ref(), key) {
        return Some(Err(()));
    }
    let mut freed = record.clone();
    freed.line.shares.remove(at);
    Some(Ok(hand_over(freed, Why::Released)))
}

/// What to do with a claim to wait in line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineOutcome {
    /// Write `record`: the claimant holds the lock now, with a new token.
    Granted {
        /// The record to write.
        record: Record,
        /// The previous holder's lease had run out.
        took_over_expired: bool,
    },
    /// The lock was handed to the claimant already, with `token`: nothing to
    /// write here (the caller renews it when the hand-over came before the
    /// request).
    Holds {
        /// The token of the lease handed over.
        token: u64,
    },
    /// The claimant waits at `position` (0: next) among `waiting`; write
    /// `record` if there is one (a new place, or a refresh).
    Queued {
        /// The record to write, if anything changed.
        record: Option<Record>,
        /// The claimant's ticket.
        ticket: u64,
        /// Its place, 0 being next.
        position: usize,
        /// How many wait in all.
        waiting: usize,
    },
    /// The line is as long as it may be.
    Full {
        /// How many wait.
        waiting: usize,
    },
    /// Write nothing; answer 409.
    Refused(Conflict),
}

/// A claim to wait in line for a lock.
#[derive(Debug, Clone, Copy)]
pub struct Queue<'a> {
    /// The place held, from an earlier answer; `None` to take a new one.
    pub ticket: Option<u64>,
    /// The session the claimant waits under.
    pub session: Option<&'a str>,
    /// Write a new refresh mark for the claimant's place (the caller says
    /// when one is due).
    pub refresh: bool,
    /// The longest the line may grow.
    pub max_waiters: usize,
}

/// Decides a claim (`claim.token` must be `None`) to have the lock or wait
/// for it in line, against the current record with its dead waiters
/// already removed.
pub fn decide_line(current: Option<&Current<'_>>, claim: &Claim<'_>, queue: &Queue<'_>, now: Duration) -> LineOutcome {
    let refuse = |reason| LineOutcome::Refused(refusal(current, now, reason));
    let mut record = current.map_or_else(|| Record::free(claim.ttl_ms), |c| c.record.clone());
    if claim.shared && !record.line.fit_permits(claim.permits) {
        return refuse(ConflictReason::PermitsDiffer);
    }
    let live = current.and_then(|c| c.live_holder(now));
    if let Some(ticket) = queue.ticket {
        if record.line.granted == Some(ticket) && live == Some(claim.holder) {
            if !key_fits(record.key_sha256.as_ref(), claim.key) {
                return refuse(ConflictReason::WrongKey);
            }
            return LineOutcome::Holds { token: record.token };
        }
        if let Some(share) = record.line.shares.iter().find(|s| s.ticket == ticket && s.holder == claim.holder) {
            if !key_fits(share.key_sha256.as_ref(), claim.key) {
                return refuse(ConflictReason::WrongKey);
            }
            return LineOutcome::Holds { token: share.token };
        }
    }
    let mine = match queue.ticket {
        None => None,
        Some(ticket) => match record.line.position(ticket) {
            Some(at)
                if record.line.waiters[at].holder == claim.holder && record.line.waiters[at].shared == claim.shared =>
            {
                Some(at)
            }
            _ => return refuse(ConflictReason::NotQueued),
        },
    };
    if let Some(at) = mine
        && !key_fits(record.line.waiters[at].key_sha256.as_ref(), claim.key)
    {
        return refuse(ConflictReason::WrongKey);
    }
    if mine.unwrap_or(record.line.waiters.len()) == 0 && record.line.admits(live.is_some(), claim.shared) {
        let (ticket, key_sha256) = match mine {
            Some(at) => {
                let waiter = Arc::make_mut(&mut record.line.waiters).remove(at);
                (Some(waiter.ticket), waiter.key_sha256.clone())
            }
            None => (None, claim.key.map(KeyDigest::of)),
        };
        let took_over_expired = current.is_some_and(|c| c.is_expired(now));
        // A lock nobody held, or whose holder's lease ran out.
        let why = if took_over_expired { Why::Expired } else { Why::Acquired };
        if claim.shared {
            grant_share(&mut record, claim.holder, claim.ttl_ms, key_sha256, ticket);
            return LineOutcome::Granted { record, took_over_expired };
        }
        let line = Line { granted: ticket, ..record.line }.renew_mark();
        let record = Record {
            holder: Some(claim.holder.to_owned()),
            token: record.token + 1,
            ttl_ms: claim.ttl_ms,
            address: None,
            key_sha256,
            line,
            why: Some(why),
            transfer: None,
        };
        return LineOutcome::Granted { record, took_over_expired };
    }
    let waiting = record.line.waiters.len();
    match mine {
        Some(at) if !queue.refresh => {
            LineOutcome::Queued { record: None, ticket: record.line.waiters[at].ticket, position: at, waiting }
        }
        Some(at) => {
            let mark = record.line.mint();
            let waiter = Arc::make_mut(&mut Arc::make_mut(&mut record.line.waiters)[at]);
            (waiter.refreshed, waiter.ttl_ms, waiter.session) = (mark, claim.ttl_ms, queue.session.map(str::to_owned));
            let ticket = waiter.ticket;
            LineOutcome::Queued { record: Some(record), ticket, position: at, waiting }
        }
        // Shared holds take room in the record too.
        None if waiting + record.line.shares.len() >= queue.max_waiters => LineOutcome::Full { waiting },
        None => {
            let ticket = record.line.mint();
            Arc::make_mut(&mut record.line.waiters).push(Arc::new(Waiter {
                holder: claim.holder.to_owned(),
                ticket,
                ttl_ms: claim.ttl_ms,
                refreshed: ticket,
                key_sha256: claim.key.map(KeyDigest::of),
                session: queue.session.map(str::to_owned),
                shared: claim.shared,
            }));
            LineOutcome::Queued { record: Some(record), ticket, position: waiting, waiting: waiting + 1 }
        }
    }
}

/// Clears the exclusive holder of `record` (its token kept) and hands the
/// lock to the first waiter that can have it: what a release writes.
pub fn release_exclusive(record: Record) -> Record {
    // Stepping down when asked to is a transfer (see [`crate::record::Transfer`]).
    let asked = record.transfer.as_ref().is_some_and(|t| record.holder.as_deref() == Some(t.from.as_str()));
    let why = if asked { Why::Transferred } else { Why::Released };
    hand_over(Record { holder: None, address: None, key_sha256: None, why: Some(why), ..record }, why)
}

/// Hands a lock a holder just left (its exclusive lease cleared, or a
/// shared hold removed) to the first waiter, if it can have it now: it
/// becomes a holder with the next token, bound to the key it waited with.
/// One hand-over per write, so that the store mints one token per write
/// (see `elector/src/store`); a shared waiter behind it is let in by its
/// own next request. `why` is the reason the grant records: why the lock
/// was let go.
pub fn hand_over(mut record: Record, why: Why) -> Record {
    if record.holder.is_none() {
        record.line.granted = None;
    }
    let Some(next) = record.line.waiters.first() else { return record };
    if !record.line.admits(record.holder.is_some(), next.shared) {
        return record;
    }
    let next = Arc::make_mut(&mut record.line.waiters).remove(0);
    if next.shared {
        grant_share(&mut record, &next.holder, next.ttl_ms, next.key_sha256.clone(), Some(next.ticket));
        return record;
    }
    Record {
        holder: Some(next.holder.clone()),
        token: record.token + 1,
        ttl_ms: next.ttl_ms,
        address: None,
        key_sha256: next.key_sha256.clone(),
        line: Line { granted: Some(next.ticket), ..record.line }.renew_mark(),
        why: Some(why),
        transfer: None,
    }
}

/// What to do with a waiter giving up its place (`DELETE` with a ticket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaveOutcome {
    /// Write `record`: the place is given up, or the lease handed over to
    /// it is released (and handed on).
    Left {
        /// The record to write.
        record: Record,
        /// The token of the lease released with it, if the lock had been
        /// handed over to the waiter already.
        released: Option<u64>,
    },
    /// No record by that name.
    NotFound,
    /// Write nothing; answer 409.
    Refused(Conflict),
}

/// Decides `holder` giving up the place `ticket`, presenting `key` (the
/// one it took the place with, if any). A waiter the lock was handed to
/// while it gave up releases the lease it got, so the next waiter has it.
pub fn decide_leave(
    current: Option<&Current<'_>>,
    holder: &str,
    ticket: u64,
    key: Option<&LeaseKey>,
    now: Duration,
) -> LeaveOutcome {
    let Some(cur) = current else { return LeaveOutcome::NotFound };
    let mut record = cur.record.clone();
    if record.line.granted == Some(ticket) && record.holder.as_deref() == Some(holder) {
        if !key_fits(record.key_sha256.as_ref(), key) {
            return LeaveOutcome::Refused(cur.conflict(now, ConflictReason::WrongKey));
        }
        let released = Some(record.token);
        return LeaveOutcome::Left { record: release_exclusive(record), released };
    }
    if let Some(share) = record.line.shares.iter().find(|s| s.ticket == ticket && s.holder == holder) {
        let released = Some(share.token);
        return match release_share(&record, holder, share.token, key) {
            Some(Ok(record)) => LeaveOutcome::Left { record, released },
            _ => LeaveOutcome::Refused(cur.conflict(now, ConflictReason::WrongKey)),
        };
    }
    match record.line.position(ticket) {
        Some(at) if record.line.waiters[at].holder == holder => {
            if !key_fits(record.line.waiters[at].key_sha256.as_ref(), key) {
                return LeaveOutcome::Refused(cur.conflict(now, ConflictReason::WrongKey));
            }
            Arc::make_mut(&mut record.line.waiters).remove(at);
            LeaveOutcome::Left { record, released: None }
        }
        _ => LeaveOutcome::Refused(cur.conflict(now, ConflictReason::NotQueued)),
    }
}

/// Removes the waiters and the shared holds the callers say are dead,
/// keeping the order of the rest; true if any went.
pub fn prune(line: &mut Line, waiter_alive: impl Fn(&Waiter) -> bool, share_alive: impl Fn(&Share) -> bool) -> bool {
    let before = (line.waiters.len(), line.shares.len());
    if line.waiters.iter().any(|w| !waiter_alive(w)) {
        Arc::make_mut(&mut line.waiters).retain(|w| waiter_alive(w));
    }
    line.shares.retain(|s| share_alive(s));
    (line.waiters.len(), line.shares.len()) != before
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Outcome, ReleaseOutcome, decide_claim, decide_release};

    const S: Duration = Duration::from_secs(1);

    fn claim(holder: &str) -> Claim<'_> {
        Claim { holder, ttl_ms: 10_000, token: None, address: None, key: None, shared: false, permits: None }
    }

    fn queue(ticket: Option<u64>) -> Queue<'static> {
        Queue { ticket, session: None, refresh: true, max_waiters: 3 }
    }

    fn at(record: &Record) -> Current<'_> {
        Current { record, version: 7, observed_at: Duration::ZERO }
    }

    /// Runs a claim to wait against `record` and returns what it wrote
    /// with the ticket and position it got.
    fn wait(record: &Record, holder: &str, ticket: Option<u64>) -> (Record, u64, usize) {
        match decide_line(Some(&at(record)), &claim(holder), &queue(ticket), S) {
            LineOutcome::Queued { record: Some(written), ticket, position, .. } => (written, ticket, position),
            other => panic!("{holder} did not queue: {other:?}"),
        }
    }

    fn granted(record: Option<&Record>, holder: &str, ticket: Option<u64>) -> Record {
        let current = record.map(at);
        match decide_line(current.as_ref(), &claim(holder), &queue(ticket), S) {
            LineOutcome::Granted { record, .. } => record,
            other => panic!("{holder} was not granted: {other:?}"),
        }
    }

    #[test]
    fn waiters_get_the_lock_in_the_order_they_came_and_nobody_jumps_the_line() {
        let held = granted(None, "a", None);
        assert_eq!((held.holder.as_deref(), held.token, held.line.granted), (Some("a"), 1, None));
        let (r, b, pos_b) = wait(&held, "b", None);
        let (r, c, pos_c) = wait(&r, "c", None);
        assert_eq!((pos_b, pos_c), (0, 1));
        // A plain acquisition is refused while anyone waits, even on a free lock.
        let ReleaseOutcome::Released { record: r } = decide_release(Some(&at(&r)), "a", 1, None, S) else { panic!() };
        assert_eq!((r.holder.as_deref(), r.token, r.line.granted), (Some("b"), 2, Some(b)), "handed to the first");
        assert_eq!(r.line.waiters.iter().map(|w| w.ticket).collect::<Vec<_>>(), [c]);
        // The second in line cannot take it, and the first learns it holds it.
        let (r2, _, pos) = wait(&r, "c", Some(c));
        assert_eq!(pos, 0);
        assert!(matches!(
            decide_line(Some(&at(&r2)), &claim("b"), &queue(Some(b)), S),
            LineOutcome::Holds { token: 2 }
        ));
        let free = Record { holder: None, line: Line { granted: None, ..r2.line.clone() }, ..r2.clone() };
        assert!(
            matches!(
                decide_line(Some(&at(&free)), &claim("d"), &queue(None), S),
                LineOutcome::Queued { position: 1, .. }
            ),
            "a newcomer on a free lock with a line takes its place, it is not granted"
        );
        let Outcome::Refused(conflict) = decide_claim(Some(&at(&free)), &claim("d"), S) else { panic!() };
        assert_eq!(conflict.reason, ConflictReason::Queued);
        let got = granted(Some(&free), "c", Some(c));
        assert_eq!((got.token, got.line.granted, got.line.waiters.len()), (3, Some(c), 0));
    }

    #[test]
    fn a_ticket_not_in_line_or_someone_elses_is_refused() {
        let held = granted(None, "a", None);
        let (r, b, _) = wait(&held, "b", None);
        for (who, ticket) in [("b", b + 1), ("x", b)] {
            let LineOutcome::Refused(c) = decide_line(Some(&at(&r)), &claim(who), &queue(Some(ticket)), S) else {
                panic!("{who} {ticket}")
            };
            assert_eq!(c.reason, ConflictReason::NotQueued);
        }
    }

    #[test]
    fn a_place_taken_with_a_key_is_kept_only_with_it_and_the_lease_is_bound_to_it() {
        let key = LeaseKey::parse("the-waiters-own-key-0001").unwrap();
        let held = granted(None, "a", None);
        let keyed = Claim { key: Some(&key), ..claim("b") };
        let LineOutcome::Queued { record: Some(r), ticket, .. } =
            decide_line(Some(&at(&held)), &keyed, &queue(None), S)
        else {
            panic!()
        };
        let LineOutcome::Refused(c) = decide_line(Some(&at(&r)), &claim("b"), &queue(Some(ticket)), S) else {
            panic!()
        };
        assert_eq!(c.reason, ConflictReason::WrongKey);
        let ReleaseOutcome::Released { record } = decide_release(Some(&at(&r)), "a", 1, None, S) else { panic!() };
        assert!(record.key_sha256.as_ref().is_some_and(|d| d.matches(&key)));
    }

    #[test]
    fn a_refresh_writes_a_new_mark_and_the_line_has_a_limit() {
        let held = granted(None, "a", None);
        let (r, b, _) = wait(&held, "b", None);
        let (again, _, _) = wait(&r, "b", Some(b));
        assert!(again.line.waiters[0].refreshed > r.line.waiters[0].refreshed);
        let quiet = Queue { refresh: false, ..queue(Some(b)) };
        assert!(matches!(
            decide_line(Some(&at(&again)), &claim("b"), &quiet, S),
            LineOutcome::Queued { record: None, position: 0, waiting: 1, .. }
        ));
        let (r, _, _) = wait(&again, "c", None);
        let (r, _, _) = wait(&r, "d", None);
        assert!(matches!(decide_line(Some(&at(&r)), &claim("e"), &queue(None), S), LineOutcome::Full { waiting: 3 }));
    }

    #[test]
    fn a_waiter_leaves_its_place_or_hands_on_the_lease_it_was_given() {
        let held = granted(None, "a", None);
        let (r, b, _) = wait(&held, "b", None);
        let (r, c, _) = wait(&r, "c", None);
        let (r, d, _) = wait(&r, "d", None);
        let LeaveOutcome::Left { record: r, released: None } = decide_leave(Some(&at(&r)), "c", c, None, S) else {
            panic!()
        };
        assert_eq!(r.line.waiters.iter().map(|w| w.ticket).collect::<Vec<_>>(), [b, d]);
        let LeaveOutcome::Refused(x) = decide_leave(Some(&at(&r)), "c", c, None, S) else { panic!() };
        assert_eq!(x.reason, ConflictReason::NotQueued);
        let ReleaseOutcome::Released { record: r } = decide_release(Some(&at(&r)), "a", 1, None, S) else { panic!() };
        assert_eq!(r.holder.as_deref(), Some("b"));
        let LeaveOutcome::Left { record: r, released: Some(2) } = decide_leave(Some(&at(&r)), "b", b, None, S) else {
            panic!()
        };
        assert_eq!((r.holder.as_deref(), r.token, r.line.granted), (Some("d"), 3, Some(d)), "handed on to the next");
        assert_eq!(decide_leave(None, "d", d, None, S), LeaveOutcome::NotFound);
    }

    fn shared(holder: &str, permits: Option<u32>) -> Claim<'_> {
        Claim { shared: true, permits, ..claim(holder) }
    }

    fn in_line(record: Option<&Record>, claim: &Claim<'_>) -> LineOutcome {
        let current = record.map(at);
        decide_line(current.as_ref(), claim, &Queue { max_waiters: 100, ..queue(None) }, S)
    }

    #[test]
    fn a_semaphore_lets_in_n_each_with_its_own_permit_and_a_token_that_grows() {
        let LineOutcome::Granted { record: r, .. } = in_line(None, &shared("a", Some(2))) else { panic!() };
        let LineOutcome::Granted { record: r, .. } = in_line(Some(&r), &shared("b", Some(2))) else { panic!() };
        let holds: Vec<_> = r.line.shares.iter().map(|s| (s.holder.as_str(), s.token, s.permit)).collect();
        assert_eq!(holds, [("a", 1, Some(0)), ("b", 2, Some(1))]);
        let LineOutcome::Queued { record: Some(r), ticket: c, position: 0, .. } =
            in_line(Some(&r), &shared("c", Some(2)))
        else {
            panic!("a third waits")
        };
        let LineOutcome::Refused(x) = in_line(Some(&r), &shared("x", Some(3))) else { panic!() };
        assert_eq!(x.reason, ConflictReason::PermitsDiffer);
        // A plain claim (the exclusive one) is refused beside shared holders.
        let Outcome::Refused(x) = decide_claim(Some(&at(&r)), &claim("w"), S) else { panic!() };
        assert_eq!((x.reason, x.holder.as_deref()), (ConflictReason::Queued, Some("a")));
        // a leaves: its permit goes to c, with the next token.
        let ReleaseOutcome::Released { record: r } = decide_release(Some(&at(&r)), "a", 1, None, S) else { panic!() };
        let c_hold = r.line.shares.iter().find(|s| s.holder == "c").unwrap();
        assert_eq!((c_hold.token, c_hold.permit, c_hold.ticket), (3, Some(0), c));
        assert!(matches!(
            decide_line(Some(&at(&r)), &shared("c", Some(2)), &queue(Some(c)), S),
            LineOutcome::Holds { token: 3 }
        ));
        // A renewal of a shared hold keeps its token and writes a new mark.
        let renew = Claim { token: Some(2), ..shared("b", Some(2)) };
        let Outcome::Renewed { record: renewed } = decide_claim(Some(&at(&r)), &renew, S) else { panic!() };
        let (before, after) = (&r.line.shares[0], &renewed.line.shares[0]);
        assert_eq!((after.token, after.holder.as_str()), (2, "b"));
        assert!(after.refreshed > before.refreshed);
    }

    #[test]
    fn readers_share_a_writer_waits_and_later_readers_wait_behind_it() {
        let LineOutcome::Granted { record: r, .. } = in_line(None, &shared("r1", None)) else { panic!() };
        let LineOutcome::Granted { record: r, .. } = in_line(Some(&r), &shared("r2", None)) else { panic!() };
        assert_eq!(r.line.shares.iter().map(|s| s.permit).collect::<Vec<_>>(), [None, None], "readers have no permit");
        let LineOutcome::Queued { record: Some(r), ticket: w, .. } = in_line(Some(&r), &claim("w")) else { panic!() };
        // A reader that comes after the writer waits behind it.
        let LineOutcome::Queued { record: Some(r), ticket: r3, position: 1, .. } =
            in_line(Some(&r), &shared("r3", None))
        else {
            panic!("a later reader overtook the writer")
        };
        let Outcome::Refused(x) = decide_claim(Some(&at(&r)), &shared("r4", None), S) else { panic!() };
        assert_eq!(x.reason, ConflictReason::Queued);
        let ReleaseOutcome::Released { record: r } = decide_release(Some(&at(&r)), "r1", 1, None, S) else { panic!() };
        assert_eq!(r.holder, None, "the writer waits for every reader");
        let ReleaseOutcome::Released { record: r } = decide_release(Some(&at(&r)), "r2", 2, None, S) else { panic!() };
        assert_eq!((r.holder.as_deref(), r.token, r.line.granted), (Some("w"), 3, Some(w)));
        let ReleaseOutcome::Released { record: r } = decide_release(Some(&at(&r)), "w", 3, None, S) else { panic!() };
        let r3_hold = &r.line.shares[0];
        assert_eq!((r3_hold.holder.as_str(), r3_hold.token, r3_hold.ticket, r.holder.clone()), ("r3", 4, r3, None));
    }

    #[test]
    fn pruning_keeps_the_order_of_the_living() {
        let held = granted(None, "a", None);
        let (r, _, _) = wait(&held, "b", None);
        let (r, _, _) = wait(&r, "c", None);
        let (mut r, _, _) = wait(&r, "d", None);
        let c = r.line.waiters[1].ticket;
        assert!(prune(&mut r.line, |w| w.ticket != c, |_| true));
        assert_eq!(r.line.waiters.iter().map(|w| w.holder.as_str()).collect::<Vec<_>>(), ["b", "d"]);
        assert!(!prune(&mut r.line, |_| true, |_| true));
    }
}
