//! The store-side rules: who may take a record and how fencing tokens move.
//!
//! A store keeps one [`Record`] per (kind, name) beside a version it uses for
//! compare-and-swap. The elector reads the record, asks [`decide_claim`] or
//! [`decide_release`] what the new record should be, and writes it back only
//! if the version is still the one it read. A release, and the judge's
//! clearing of a lease that ran out ([`decide_clear`]), write the record
//! with its holder cleared and its token kept.
//!
//! # How tokens grow, and which records are kept
//!
//! Within one record the token only grows: it stays across renewals and
//! becomes `previous + 1` when the record changes hands. A store that can
//! lose a record (it forgets it, or the record vanishes) must still never
//! hand out a token again, so it mints the token of a new record (and, in
//! etcd, of every change of hands) from a counter of its own that only
//! grows. Tokens therefore jump rather than count by one; they only ever
//! grow, per name, for the life of the store:
//!
//! | store | token of a change of hands | released and expired records |
//! | --- | --- | --- |
//! | memory | a new record: the version of its first write (one counter for every name, continued across restarts by the state file); then `previous + 1` | forgotten once free and nobody waits on them (an expired one once the judge cleared it) |
//! | etcd | the revision of that write (etcd's own counter) | kept free in etcd, bound to the elector's etcd lease: they vanish with it |
//! | Kubernetes | `previous + 1` (`leaseTransitions`) | kept: a Lease is never deleted, which is what keeps its token |
//!
//! The rules:
//! - a claim without a token *acquires*: it succeeds only when nobody holds
//!   the record (never held, released, or expired), and mints a new token
//!   (`previous + 1`). It is refused even when the claimant itself holds the
//!   record: an acquisition delayed in the network must not replace the
//!   lease its sender holds now (a new token would silently void it).
//! - a claim with a token *renews*: it succeeds only while the claimant holds
//!   the record with exactly that token, and keeps the token.
//! - a release succeeds only for the holder with the current token, and
//!   clears the holder while keeping the token.
//! - a lease acquired with a key (see [`crate::wire::LeaseKey`]) is renewed
//!   or released only by a request that presents the same key: holder and
//!   token are public (any reader sees them), the key is not. The record
//!   keeps only the key's SHA-256 digest, compared in constant time. A
//!   lease acquired without a key follows the rules above alone.
//! - whether a lease has expired is judged on the judge's monotonic clock
//!   from the moment it observed the record's current version (see
//!   [`crate::judge`]), never from timestamps in the record.

use core::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::key::KeyDigest;
use crate::line::{Line, release_exclusive};
pub use crate::wire::ConflictReason;
use crate::wire::LeaseKey;

/// What a store keeps for one lock or election.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The current holder; `None` once released (or never held).
    pub holder: Option<String>,
    /// The last fencing token granted; 0 if none was ever granted.
    pub token: u64,
    /// The lease duration the holder asked for.
    pub ttl_ms: u64,
    /// Elections: the holder's advertised `ip:port`.
    pub address: Option<String>,
    /// The digest of the key the lease was acquired with; `None` for a
    /// lease acquired without one (and in records written before keys
    /// existed, hence the serde default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_sha256: Option<KeyDigest>,
    /// Locks: the waiters in line for it (see [`crate::line`]).
    #[serde(default, skip_serializing_if = "Line::is_empty")]
    pub line: Line,
    /// Why the holder last changed (the elector's history, Kubernetes
    /// Events); `None` in records written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<Why>,
    /// A hand-over asked of the holder (leadership transfer); see
    /// [`Transfer`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<Transfer>,
}

/// Why a record's holder changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// Taken while nobody held it.
    Acquired,
    /// The holder let go (and handed it to the next waiter, if any).
    Released,
    /// The holder's lease ran out.
    Expired,
    /// The holder's session ended (its connection closed or timed out).
    SessionEnded,
    /// The holder stepped down because a transfer was asked.
    Transferred,
}

impl Why {
    /// The name on the wire and in labels (`session_ended`).
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Acquired => "acquired",
            Why::Released => "released",
            Why::Expired => "expired",
            Why::SessionEnded => "session_ended",
            Why::Transferred => "transferred",
        }
    }
}

/// A hand-over asked of the holder `from`: to the candidate `to`, or to
/// anyone else when `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// The holder asked to step down.
    pub from: String,
    /// Who should take over; `None`: anyone but `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The version of the holder's last own write (its grant or renewal)
    /// when the transfer was asked, kept until the holder renews again:
    /// the lease is dated by it, not by the transfer's write, which is not
    /// the holder's and must not make a dead leader's lease look renewed
    /// (see [`Record::lease_mark`]). `None` once the holder renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub over: Option<u64>,
}

impl Transfer {
    /// Whether `holder` may take the record this transfer reserves: `to`
    /// alone, or anyone but `from` when no candidate was named.
    pub fn admits(&self, holder: &str) -> bool {
        match &self.to {
            Some(to) => to == holder,
            None => self.from != holder,
        }
    }
}

/// Whether a request may act on a lease whose record keeps `digest`: a
/// keyed lease needs its key, a lease without one needs none (a key
/// presented for it is ignored, never adopted: a stranger's key must not
/// lock the real holder out).
pub(crate) fn key_fits(digest: Option<&KeyDigest>, presented: Option<&LeaseKey>) -> bool {
    match (digest, presented) {
        (None, _) => true,
        (Some(digest), Some(key)) => digest.matches(key),
        (Some(_), None) => false,
    }
}

impl Record {
    /// What the judge dates the exclusive lease by: the version, in a
    /// record without a line, where every write is the holder's (a grant,
    /// a renewal, a release); once it has one, the lease's own mark, so
    /// that waiters' writes do not make a dead holder's lease look renewed.
    /// Likewise a transfer asked of a holder dates its lease by the
    /// holder's last own write ([`Transfer::over`]), however many times it
    /// is asked.
    pub fn lease_mark(&self, version: u64) -> (bool, u64, u64) {
        if !self.line.is_empty() {
            return (true, self.token, self.line.renewed);
        }
        match self.transfer.as_ref().and_then(|t| t.over) {
            Some(over) if self.holder.is_some() => (false, over, 0),
            _ => (false, version, 0),
        }
    }

    /// Gives the grant this write made the token `token` instead of the
    /// one it was decided with: a store that mints tokens of its own (see
    /// the module documentation) calls it for a write that changed hands.
    /// The shared hold granted in that write, if any, gets it too (a write
    /// grants one token at most, see [`crate::line::hand_over`]).
    pub fn retoken(&mut self, token: u64) {
        let decided = self.token;
        for share in self.line.shares.iter_mut().filter(|s| s.token == decided) {
            share.token = token;
        }
        self.token = token;
    }

    /// A record nobody ever held.
    pub fn free(ttl_ms: u64) -> Record {
        Record {
            holder: None,
            token: 0,
            ttl_ms,
            address: None,
            key_sha256: None,
            line: Line::default(),
            why: None,
            transfer: None,
        }
    }

    /// The lease duration.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }
}

/// A record as the judge sees it: its content, its version and when the
/// judge first observed that version on its own monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct Current<'a> {
    /// The stored record.
    pub record: &'a Record,
    /// Its version in the store (never 0: 0 means "absent").
    pub version: u64,
    /// When the judge first saw this version.
    pub observed_at: Duration,
}

impl Current<'_> {
    /// When the current lease runs out, if there is a holder.
    pub fn expires_at(&self) -> Option<Duration> {
        self.record.holder.as_ref().map(|_| self.observed_at + self.record.ttl())
    }

    /// The holder, if there is one whose lease has not run out at `now`.
    pub fn live_holder(&self, now: Duration) -> Option<&str> {
        match self.expires_at() {
            Some(at) if now < at => self.record.holder.as_deref(),
            _ => None,
        }
    }

    /// Time left on the current lease at `now` (zero when free or expired).
    pub fn expires_in(&self, now: Duration) -> Duration {
        self.expires_at().map_or(Duration::ZERO, |at| at.saturating_sub(now))
    }

    /// True when the record has a holder whose lease ran out by `now`.
    pub fn is_expired(&self, now: Duration) -> bool {
        self.expires_at().is_some_and(|at| now >= at)
    }

    /// A released record keeps the transfer its holder was asked for as a
    /// reservation for one TTL from the release (as the judge dates it,
    /// like a lease): when it ends, if the record has one (see
    /// [`crate::transfer`]). An expired holder's transfer is no reservation:
    /// the judge's clearing drops it.
    pub fn reserved_until(&self) -> Option<Duration> {
        let reserved = self.record.holder.is_none() && self.record.transfer.is_some();
        reserved.then(|| self.observed_at + self.record.ttl())
    }

    /// The reservation in force at `now`, with the time it has left.
    pub fn reservation(&self, now: Duration) -> Option<(&Transfer, Duration)> {
        let until = self.reserved_until().filter(|until| now < *until)?;
        self.record.transfer.as_ref().map(|t| (t, until - now))
    }

    pub(crate) fn conflict(&self, now: Duration, reason: ConflictReason) -> Conflict {
        // Held shared only: the first shared holder stands for them.
        let shared = || self.record.line.shares.first().map(|s| s.holder.clone());
        let holder = self.live_holder(now).map(str::to_owned).or_else(shared);
        let expires_in = if holder.is_some() { self.expires_in(now) } else { Duration::ZERO };
        Conflict { holder, expires_in, version: self.version, reason }
    }
}

/// A request to acquire (no `token`) or renew (with `token`) a record.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// The holder's key: on an acquisition, the lease is bound to it; on a
    /// renewal, it must be the key the lease was acquired with.
    pub key: Option<&'a LeaseKey>,
    /// Who claims.
    pub holder: &'a str,
    /// The lease duration asked for.
    pub ttl_ms: u64,
    /// The token being renewed, or `None` to acquire.
    pub token: Option<u64>,
    /// Elections: the address to advertise.
    pub address: Option<&'a str>,
    /// Locks: a shared hold (a reader, or one permit) instead of the
    /// exclusive one (see [`crate::line`]).
    pub shared: bool,
    /// With `shared`: how many shared holds the lock allows at once
    /// (`None`: any number).
    pub permits: Option<u32>,
}

/// Why a claim or release was refused, and what the caller can do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The holder whose lease is live, if any.
    pub holder: Option<String>,
    /// How long until that lease may expire.
    pub expires_in: Duration,
    /// The version the decision was made on (long-poll on it).
    pub version: u64,
    /// Why.
    pub reason: ConflictReason,
}

/// What the store should do with a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Write `record`: the claimant acquires with a new token.
    Acquired {
        /// The record to write.
        record: Record,
        /// The previous holder's lease had run out (for the expiries metric).
        took_over_expired: bool,
    },
    /// Write `record`: the claimant keeps its lease and its token.
    Renewed {
        /// The record to write.
        record: Record,
    },
    /// Write nothing; answer 409.
    Refused(Conflict),
}

/// What the store should do with a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// Write `record` (holder cleared, token kept).
    Released {
        /// The record to write.
        record: Record,
    },
    /// No record by that name: answer 404.
    NotFound,
    /// The caller does not hold the lease with that token: answer 409.
    Refused(Conflict),
}

/// Decides a claim against the current record (`None` if absent) at `now`.
/// A shared claim goes to [`crate::line::decide_shared`].
pub fn decide_claim(current: Option<&Current<'_>>, claim: &Claim<'_>, now: Duration) -> Outcome {
    if claim.shared {
        return crate::line::decide_shared(current, claim, now);
    }
    // The line stays; a new holder was not handed the lock from it.
    let line = |fresh: bool| {
        let line = current.map(|c| c.record.line.clone()).unwrap_or_default();
        if fresh { Line { granted: None, ..line } } else { line }.renew_mark()
    };
    let granted = |token, key_sha256, fresh| Record {
        holder: Some(claim.holder.to_owned()),
        token,
        ttl_ms: claim.ttl_ms,
        address: claim.address.map(str::to_owned),
        key_sha256,
        line: line(fresh),
        // Renewals keep it; `acquired` (below) sets it for a grant.
        why: if fresh { None } else { current.and_then(|c| c.record.why) },
        // A renewal is the holder's own write: its lease is dated by it.
        transfer: if fresh {
            None
        } else {
            current.and_then(|c| c.record.transfer.clone()).map(|t| Transfer { over: None, ..t })
        },
    };
    let minted = || claim.key.map(KeyDigest::of);
    let acquired = |token, expired: bool| Record {
        why: Some(if expired { Why::Expired } else { Why::Acquired }),
        ..granted(token, minted(), true)
    };
    let Some(cur) = current else {
        return match claim.token {
            None => Outcome::Acquired { record: acquired(1, false), took_over_expired: false },
            Some(_) => Outcome::Refused(Conflict {
                holder: None,
                expires_in: Duration::ZERO,
                version: 0,
                reason: ConflictReason::NotHeld,
            }),
        };
    };
    let live = cur.live_holder(now);
    let mine = live == Some(claim.holder);
    match claim.token {
        // Nobody jumps the line: the first waiter gets the lock (see
        // `crate::line`).
        None if live.is_none() && !cur.record.line.waiters.is_empty() => {
            Outcome::Refused(cur.conflict(now, ConflictReason::Queued))
        }
        None if live.is_none() && !cur.record.line.shares.is_empty() => {
            Outcome::Refused(cur.conflict(now, ConflictReason::Held))
        }
        // A hand-over asked of the last holder: its candidate first.
        None if live.is_none()
            && let Some((reserved, left)) = cur.reservation(now)
            && !reserved.admits(claim.holder) =>
        {
            Outcome::Refused(Conflict { expires_in: left, ..cur.conflict(now, ConflictReason::Reserved) })
        }
        None if live.is_none() => Outcome::Acquired {
            record: acquired(cur.record.token + 1, cur.is_expired(now)),
            took_over_expired: cur.is_expired(now),
        },
        None => Outcome::Refused(cur.conflict(now, ConflictReason::Held)),
        Some(token) if mine && token == cur.record.token => {
            let digest = cur.record.key_sha256.as_ref();
            if key_fits(digest, claim.key) {
                Outcome::Renewed { record: granted(token, digest.cloned(), false) }
            } else {
                Outcome::Refused(cur.conflict(now, ConflictReason::WrongKey))
            }
        }
        Some(_) if live.is_some() && !mine => Outcome::Refused(cur.conflict(now, ConflictReason::Held)),
        Some(token) if token != cur.record.token => Outcome::Refused(cur.conflict(now, ConflictReason::StaleToken)),
        Some(_) => Outcome::Refused(cur.conflict(now, ConflictReason::NotHeld)),
    }
}

/// Decides a release by `holder` of the lease with `token`, presenting
/// `key` (the key it was acquired with, if any), at `now`.
///
/// A holder whose lease ran out but that nobody took over may still release
/// it: the version has not changed, so no one else can have held it since.
/// The record written hands the lock to the first waiter in line, if any
/// ([`crate::line::hand_over`]).
pub fn decide_release(
    current: Option<&Current<'_>>,
    holder: &str,
    token: u64,
    key: Option<&LeaseKey>,
    now: Duration,
) -> ReleaseOutcome {
    let Some(cur) = current else {
        return ReleaseOutcome::NotFound;
    };
    match crate::line::release_share(cur.record, holder, token, key) {
        Some(Ok(record)) => return ReleaseOutcome::Released { record },
        Some(Err(())) => return ReleaseOutcome::Refused(cur.conflict(now, ConflictReason::WrongKey)),
        None => {}
    }
    if cur.record.holder.as_deref() == Some(holder) && cur.record.token == token {
        if !key_fits(cur.record.key_sha256.as_ref(), key) {
            return ReleaseOutcome::Refused(cur.conflict(now, ConflictReason::WrongKey));
        }
        return ReleaseOutcome::Released { record: release_exclusive(cur.record.clone()) };
    }
    let reason = match (cur.live_holder(now), cur.record.holder.as_deref()) {
        (Some(live), _) if live != holder => ConflictReason::Held,
        (_, Some(h)) if h == holder => ConflictReason::StaleToken,
        _ => ConflictReason::NotHeld,
    };
    ReleaseOutcome::Refused(cur.conflict(now, reason))
}

/// Decides whether a judge clears `current` at `now`: the record to write
/// (compare-and-swap at `current.version`) if its lease ran out, which is
/// exactly what a release writes (holder, address and key digest cleared,
/// token kept); `None` if it is free or still live. A takeover would write
/// at the same version just as safely; this write lets a store forget the
/// record (see [`crate::judge`]).
///
/// A released record's reservation that ran out is cleared too (its
/// transfer dropped, nothing else changed), and so is the transfer asked
/// of a holder that expired instead of handing over: nobody is reserved
/// for then.
pub fn decide_clear(current: &Current<'_>, now: Duration) -> Option<Record> {
    if current.reserved_until().is_some_and(|until| now >= until) {
        return Some(Record { transfer: None, ..current.record.clone() });
    }
    current.is_expired(now).then(|| {
        let line = Line { granted: None, ..current.record.line.clone() };
        Record {
            holder: None,
            address: None,
            key_sha256: None,
            line,
            why: Some(Why::Expired),
            transfer: None,
            ..current.record.clone()
        }
    })
}

/// `released` (what [`decide_release`] decided over `before`), written
/// because the holder's session ended rather than at its request: a change
/// of holder it makes is told as [`Why::SessionEnded`].
pub fn ended_by_session(mut released: Record, before: &Record) -> Record {
    if (released.holder.as_deref(), released.token) != (before.holder.as_deref(), before.token) {
        released.why = Some(Why::SessionEnded);
    }
    released
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// A claim by `holder` for 10 s, with `token` to renew.
    pub(crate) fn claim(holder: &str, token: Option<u64>) -> Claim<'_> {
        Claim { holder, ttl_ms: 10_000, token, address: None, key: None, shared: false, permits: None }
    }

    /// `holder` holds it with `token`, for 10 s.
    pub(crate) fn held(holder: &str, token: u64) -> Record {
        Record { holder: Some(holder.into()), token, ..Record::free(10_000) }
    }

    fn at(record: &Record, observed_secs: u64) -> Current<'_> {
        Current { record, version: 7, observed_at: S * observed_secs as u32 }
    }

    #[test]
    fn first_claim_gets_token_one() {
        let out = decide_claim(None, &claim("a", None), S);
        assert!(matches!(out, Outcome::Acquired { record, took_over_expired: false } if record.token == 1));
    }

    #[test]
    fn renewal_keeps_the_token_and_needs_it() {
        let r = held("a", 4);
        let cur = at(&r, 0);
        assert!(
            matches!(decide_claim(Some(&cur), &claim("a", Some(4)), S), Outcome::Renewed { record } if record.token == 4)
        );
        let Outcome::Refused(c) = decide_claim(Some(&cur), &claim("a", Some(3)), S) else { panic!() };
        assert_eq!(c.reason, ConflictReason::StaleToken);
    }

    #[test]
    fn another_holder_is_refused_until_expiry_judged_from_observation() {
        let r = held("a", 4);
        let cur = at(&r, 100);
        let Outcome::Refused(c) = decide_claim(Some(&cur), &claim("b", None), S * 109) else { panic!() };
        assert_eq!((c.holder.as_deref(), c.expires_in, c.reason), (Some("a"), S, ConflictReason::Held));
        let out = decide_claim(Some(&cur), &claim("b", None), S * 110);
        assert!(matches!(out, Outcome::Acquired { record, took_over_expired: true } if record.token == 5));
    }

    #[test]
    fn acquiring_what_you_hold_is_refused() {
        let r = held("a", 4);
        let Outcome::Refused(c) = decide_claim(Some(&at(&r, 0)), &claim("a", None), S) else { panic!() };
        assert_eq!((c.holder.as_deref(), c.reason), (Some("a"), ConflictReason::Held));
    }

    #[test]
    fn expired_lease_cannot_be_renewed() {
        let r = held("a", 4);
        let Outcome::Refused(c) = decide_claim(Some(&at(&r, 0)), &claim("a", Some(4)), S * 11) else { panic!() };
        assert_eq!((c.holder, c.reason), (None, ConflictReason::NotHeld));
    }

    #[test]
    fn release_needs_holder_and_token_and_keeps_the_token() {
        let r = held("a", 4);
        let cur = at(&r, 0);
        assert!(matches!(decide_release(None, "a", 4, None, S), ReleaseOutcome::NotFound));
        let ReleaseOutcome::Refused(c) = decide_release(Some(&cur), "b", 4, None, S) else { panic!() };
        assert_eq!(c.reason, ConflictReason::Held);
        let ReleaseOutcome::Refused(c) = decide_release(Some(&cur), "a", 3, None, S) else { panic!() };
        assert_eq!(c.reason, ConflictReason::StaleToken);
        let ReleaseOutcome::Released { record } = decide_release(Some(&cur), "a", 4, None, S) else { panic!() };
        assert_eq!((record.holder, record.token), (None, 4));
        let free = Record { holder: None, ..r.clone() };
        let ReleaseOutcome::Refused(c) = decide_release(Some(&at(&free, 0)), "a", 4, None, S) else { panic!() };
        assert_eq!(c.reason, ConflictReason::NotHeld);
    }

    fn key(text: &str) -> LeaseKey {
        LeaseKey::parse(text).unwrap()
    }

    #[test]
    fn a_key_digest_is_the_sha256_of_the_key_and_never_printed() {
        let digest = KeyDigest::of(&key("holder-key-0123456789abcdef"));
        assert_eq!(digest.as_str(), "2bc00c368dd95e2adb7cd1666642ff0ed8099c0181405de498b5d0222c0010ec");
        assert!(digest.matches(&key("holder-key-0123456789abcdef")));
        assert!(!digest.matches(&key("holder-key-0123456789abcdeF")));
        assert!(!KeyDigest::from_stored("not a digest".into()).matches(&key("holder-key-0123456789abcdef")));
        let record = Record { key_sha256: Some(digest), ..held("a", 4) };
        assert!(!format!("{record:?}").contains("2bc00c"), "{record:?}");
        // Old records (state files, etcd values) have no digest and still read.
        let old: Record = serde_json::from_str(r#"{"holder":"a","token":4,"ttl_ms":10000,"address":null}"#).unwrap();
        assert_eq!(old, held("a", 4));
        assert!(!serde_json::to_string(&old).unwrap().contains("key_sha256"));
    }

    #[test]
    fn a_keyed_lease_is_renewed_and_released_only_with_its_key() {
        let (mine, other) = (key("the-holders-own-key-0001"), key("a-strangers-guess-000001"));
        let keyed = |token, key| Claim { key, ..claim("a", token) };
        let Outcome::Acquired { record, .. } = decide_claim(None, &keyed(None, Some(&mine)), S) else { panic!() };
        assert!(record.key_sha256.as_ref().is_some_and(|d| d.matches(&mine)));
        let cur = at(&record, 0);
        let token = record.token;
        // A stranger who read holder and token: refused, with and without a key.
        for stranger in [None, Some(&other)] {
            let Outcome::Refused(c) = decide_claim(Some(&cur), &keyed(Some(token), stranger), S) else { panic!() };
            assert_eq!((c.holder.as_deref(), c.reason), (Some("a"), ConflictReason::WrongKey));
            let ReleaseOutcome::Refused(c) = decide_release(Some(&cur), "a", token, stranger, S) else { panic!() };
            assert_eq!(c.reason, ConflictReason::WrongKey);
        }
        // The holder renews (the digest stays) and releases (it goes).
        let Outcome::Renewed { record: renewed } = decide_claim(Some(&cur), &keyed(Some(token), Some(&mine)), S) else {
            panic!()
        };
        assert_eq!(renewed.key_sha256, record.key_sha256);
        let ReleaseOutcome::Released { record: freed } = decide_release(Some(&cur), "a", token, Some(&mine), S) else {
            panic!()
        };
        assert_eq!((freed.holder, freed.key_sha256), (None, None));
    }

    #[test]
    fn a_lease_without_a_key_ignores_one_presented_later() {
        let r = held("a", 4);
        let cur = at(&r, 0);
        let stranger = key("a-strangers-guess-000001");
        let claim = Claim { key: Some(&stranger), ..claim("a", Some(4)) };
        let Outcome::Renewed { record } = decide_claim(Some(&cur), &claim, S) else { panic!() };
        assert_eq!(record.key_sha256, None, "a key is bound at acquisition only, never adopted by a renewal");
        assert!(matches!(decide_release(Some(&cur), "a", 4, None, S), ReleaseOutcome::Released { .. }));
    }
}
