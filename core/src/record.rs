//! The store-side rules: who may take a record and how fencing tokens move.
//!
//! A store keeps one [`Record`] per (kind, name) beside a version it uses for
//! compare-and-swap. The elector reads the record, asks [`decide_claim`] or
//! [`decide_release`] what the new record should be, and writes it back only
//! if the version is still the one it read. Records are never deleted on
//! release (the holder is cleared), so the token keeps growing for the life
//! of the store. (A store whose records can vanish, like the elector's etcd
//! store, replaces the token of a write that changes hands with its own
//! revision, which only grows; the rules here are unchanged.)
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
//! - whether a lease has expired is judged on the judge's monotonic clock
//!   from the moment it observed the record's current version (see
//!   [`crate::judge`]), never from timestamps in the record.

use core::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::wire::ConflictReason;

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
}

impl Record {
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

    fn conflict(&self, now: Duration, reason: ConflictReason) -> Conflict {
        let holder = self.live_holder(now).map(str::to_owned);
        let expires_in = if holder.is_some() { self.expires_in(now) } else { Duration::ZERO };
        Conflict { holder, expires_in, version: self.version, reason }
    }
}

/// A request to acquire (no `token`) or renew (with `token`) a record.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// Who claims.
    pub holder: &'a str,
    /// The lease duration asked for.
    pub ttl_ms: u64,
    /// The token being renewed, or `None` to acquire.
    pub token: Option<u64>,
    /// Elections: the address to advertise.
    pub address: Option<&'a str>,
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
pub fn decide_claim(current: Option<&Current<'_>>, claim: &Claim<'_>, now: Duration) -> Outcome {
    let granted = |token| Record {
        holder: Some(claim.holder.to_owned()),
        token,
        ttl_ms: claim.ttl_ms,
        address: claim.address.map(str::to_owned),
    };
    let Some(cur) = current else {
        return match claim.token {
            None => Outcome::Acquired { record: granted(1), took_over_expired: false },
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
        None if live.is_none() => {
            Outcome::Acquired { record: granted(cur.record.token + 1), took_over_expired: cur.is_expired(now) }
        }
        None => Outcome::Refused(cur.conflict(now, ConflictReason::Held)),
        Some(token) if mine && token == cur.record.token => Outcome::Renewed { record: granted(token) },
        Some(_) if live.is_some() && !mine => Outcome::Refused(cur.conflict(now, ConflictReason::Held)),
        Some(token) if token != cur.record.token => Outcome::Refused(cur.conflict(now, ConflictReason::StaleToken)),
        Some(_) => Outcome::Refused(cur.conflict(now, ConflictReason::NotHeld)),
    }
}

/// Decides a release by `holder` of the lease with `token` at `now`.
///
/// A holder whose lease ran out but that nobody took over may still release
/// it: the version has not changed, so no one else can have held it since.
pub fn decide_release(current: Option<&Current<'_>>, holder: &str, token: u64, now: Duration) -> ReleaseOutcome {
    let Some(cur) = current else {
        return ReleaseOutcome::NotFound;
    };
    if cur.record.holder.as_deref() == Some(holder) && cur.record.token == token {
        return ReleaseOutcome::Released {
            record: Record { holder: None, token, ttl_ms: cur.record.ttl_ms, address: None },
        };
    }
    let reason = match (cur.live_holder(now), cur.record.holder.as_deref()) {
        (Some(live), _) if live != holder => ConflictReason::Held,
        (_, Some(h)) if h == holder => ConflictReason::StaleToken,
        _ => ConflictReason::NotHeld,
    };
    ReleaseOutcome::Refused(cur.conflict(now, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn claim(holder: &str, token: Option<u64>) -> Claim<'_> {
        Claim { holder, ttl_ms: 10_000, token, address: None }
    }

    fn held(holder: &str, token: u64) -> Record {
        Record { holder: Some(holder.into()), token, ttl_ms: 10_000, address: None }
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
        assert!(matches!(decide_release(None, "a", 4, S), ReleaseOutcome::NotFound));
        let ReleaseOutcome::Refused(c) = decide_release(Some(&cur), "b", 4, S) else { panic!() };
        assert_eq!(c.reason, ConflictReason::Held);
        let ReleaseOutcome::Refused(c) = decide_release(Some(&cur), "a", 3, S) else { panic!() };
        assert_eq!(c.reason, ConflictReason::StaleToken);
        let ReleaseOutcome::Released { record } = decide_release(Some(&cur), "a", 4, S) else { panic!() };
        assert_eq!((record.holder, record.token), (None, 4));
        let free = Record { holder: None, ..r.clone() };
        let ReleaseOutcome::Refused(c) = decide_release(Some(&at(&free, 0)), "a", 4, S) else { panic!() };
        assert_eq!(c.reason, ConflictReason::NotHeld);
    }
}
