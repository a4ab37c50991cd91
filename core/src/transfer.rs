//! Leadership transfer: asking the leader of an election to hand over, and
//! the reservation that keeps the hand-over from being taken by anyone else.
//!
//! # The promise
//!
//! An operator (or a `preStop` hook) asks the leader `from` to hand over to
//! the candidate `to`, or to anyone else. Nothing is taken from the leader:
//! the record is written with [`Record::transfer`] set, the leader's client
//! learns it from the answer to its next renewal (within a third of its TTL)
//! and releases, as any holder would. Fencing is untouched: the next leader
//! acquires with a larger token by the usual rule, so a leader that did not
//! step down in time is fenced exactly as before.
//!
//! # The reservation
//!
//! Without one, whoever polls first after the release would win, most likely
//! the old leader's own next campaign. So a release while a transfer is
//! pending keeps the transfer on the free record as a reservation: for one
//! TTL from the release, judged on the judge's clock like a lease
//! ([`Current::reserved_until`]), only `to` may acquire (with no `to`,
//! anyone but `from`); the others are refused with
//! [`ConflictReason::Reserved`] and wait as for a held lease. The
//! acquisition that ends it clears the transfer; if nobody came, the judge
//! clears it when it runs out ([`crate::record::decide_clear`]) and anyone
//! may acquire. A leader that expires instead of releasing leaves no
//! reservation: the clearing of its lease drops the transfer.
//!
//! # Elections only
//!
//! A lock's holder decides when its work is done, and a lock's fair line
//! (see [`crate::line`]) already decides who is next: a transfer would ask
//! it to abandon the work and let a named holder jump the line. Locks keep
//! `release`; the elector offers transfer on elections alone.

use core::time::Duration;

use crate::record::{Conflict, ConflictReason, Current, Record, Transfer};
use crate::wire::TransferView;

/// What the store should do with a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferOutcome {
    /// Write `record`: the leader is asked to hand over.
    Asked {
        /// The record to write (compare-and-swap).
        record: Record,
    },
    /// This very transfer is pending already: write nothing (a rewrite
    /// would date the leader's lease anew), answer as if asked.
    Pending,
    /// Write nothing; answer 409.
    Refused(Conflict),
}

/// Decides a transfer asked at `now` of the live holder of `current` (of
/// `from` only, when given) to `to` (to anyone else, when `None`). Refused
/// with `not_held` when nobody leads, and with `held` (naming the leader)
/// when `from` does not lead or `to` leads already.
pub fn decide_transfer(
    current: Option<&Current<'_>>,
    from: Option<&str>,
    to: Option<&str>,
    now: Duration,
) -> TransferOutcome {
    let Some(cur) = current else {
        let conflict =
            Conflict { holder: None, expires_in: Duration::ZERO, version: 0, reason: ConflictReason::NotHeld };
        return TransferOutcome::Refused(conflict);
    };
    let Some(leader) = cur.live_holder(now) else {
        return TransferOutcome::Refused(cur.conflict(now, ConflictReason::NotHeld));
    };
    if from.is_some_and(|from| from != leader) || to == Some(leader) {
        return TransferOutcome::Refused(cur.conflict(now, ConflictReason::Held));
    }
    // Dated by the holder's last own write: this one is not its.
    let over = cur.record.transfer.as_ref().and_then(|t| t.over).unwrap_or(cur.version);
    let transfer = Transfer { from: leader.to_owned(), to: to.map(str::to_owned), over: Some(over) };
    if cur.record.transfer.as_ref().is_some_and(|t| (&t.from, &t.to) == (&transfer.from, &transfer.to)) {
        return TransferOutcome::Pending;
    }
    TransferOutcome::Asked { record: Record { transfer: Some(transfer), ..cur.record.clone() } }
}

impl From<&Transfer> for TransferView {
    fn from(t: &Transfer) -> Self {
        TransferView { from: t.from.clone(), to: t.to.clone() }
    }
}

impl From<&TransferView> for Transfer {
    fn from(t: &TransferView) -> Self {
        Transfer { from: t.from.clone(), to: t.to.clone(), over: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::Judge;
    use crate::record::tests::{claim, held};
    use crate::record::{Outcome, ReleaseOutcome, decide_claim, decide_clear, decide_release};

    const S: Duration = Duration::from_secs(1);

    fn at(record: &Record, version: u64, observed_secs: u64) -> Current<'_> {
        Current { record, version, observed_at: S * observed_secs as u32 }
    }

    fn asked(record: &Record, from: Option<&str>, to: Option<&str>) -> Record {
        match decide_transfer(Some(&at(record, 7, 0)), from, to, S) {
            TransferOutcome::Asked { record } => record,
            other => panic!("{other:?}"),
        }
    }

    fn refused(out: TransferOutcome) -> (Option<String>, ConflictReason) {
        let TransferOutcome::Refused(c) = out else { panic!("{out:?}") };
        (c.holder, c.reason)
    }

    #[test]
    fn asking_a_transfer_never_extends_the_leaders_lease() {
        // The leader's grant at version 7, seen at 0 s; TTL 10 s.
        let mut judge = Judge::new();
        let granted = held("a", 4);
        judge.observe(&"k", &granted, 7, Duration::ZERO);
        // Asked at 9 s, then asked again for someone else at 9.5 s: two
        // writes that are not the leader's.
        let first = asked(&granted, None, Some("b"));
        let seen = judge.observe(&"k", &first, 8, S * 9);
        assert_eq!(seen.expires_at(), Some(S * 10), "dated by the grant, not by the transfer's write");
        let TransferOutcome::Asked { record: second } = decide_transfer(Some(&seen), None, Some("c"), S * 9) else {
            panic!("asked again")
        };
        assert_eq!(second.transfer.as_ref().and_then(|t| t.over), Some(7), "still the leader's last own write");
        let seen = judge.observe(&"k", &second, 9, S * 9 + S / 2);
        assert!(seen.is_expired(S * 10), "the dead leader's lease runs out when it would have");
        // A renewal is the leader's own write: dated by it again.
        let Outcome::Renewed { record: renewed } = decide_claim(Some(&seen), &claim("a", Some(4)), S * 9) else {
            panic!("renewed")
        };
        assert_eq!(renewed.transfer.as_ref().map(|t| t.over), Some(None));
        assert_eq!(judge.observe(&"k", &renewed, 10, S * 9).expires_at(), Some(S * 19));
    }

    #[test]
    fn a_transfer_is_asked_of_the_live_leader_only() {
        let r = held("a", 4);
        let record = asked(&r, None, Some("b"));
        assert_eq!((record.holder.as_deref(), record.token), (Some("a"), 4), "nothing is taken from the leader");
        let over = Some(7);
        assert_eq!(record.transfer, Some(Transfer { from: "a".into(), to: Some("b".into()), over }));
        assert_eq!(asked(&r, Some("a"), None).transfer, Some(Transfer { from: "a".into(), to: None, over }));
        // Nobody leads: absent, released, expired.
        assert_eq!(refused(decide_transfer(None, None, None, S)), (None, ConflictReason::NotHeld));
        let free = Record::free(10_000);
        assert_eq!(refused(decide_transfer(Some(&at(&free, 7, 0)), None, None, S)), (None, ConflictReason::NotHeld));
        let out = decide_transfer(Some(&at(&r, 7, 0)), None, Some("b"), S * 10);
        assert_eq!(refused(out), (None, ConflictReason::NotHeld));
        // `from` does not lead; `to` leads already.
        let out = decide_transfer(Some(&at(&r, 7, 0)), Some("b"), None, S);
        assert_eq!(refused(out), (Some("a".into()), ConflictReason::Held));
        let out = decide_transfer(Some(&at(&r, 7, 0)), None, Some("a"), S);
        assert_eq!(refused(out), (Some("a".into()), ConflictReason::Held));
        // Asked twice: written once.
        let pending = asked(&r, None, Some("b"));
        assert_eq!(decide_transfer(Some(&at(&pending, 8, 0)), None, Some("b"), S), TransferOutcome::Pending);
        assert_eq!(asked(&pending, None, Some("c")).transfer.and_then(|t| t.to).as_deref(), Some("c"));
    }

    #[test]
    fn renewals_keep_the_transfer_and_the_release_reserves_for_one_ttl() {
        let pending = asked(&held("a", 4), None, Some("b"));
        let Outcome::Renewed { record: renewed } = decide_claim(Some(&at(&pending, 8, 0)), &claim("a", Some(4)), S)
        else {
            panic!()
        };
        let who = |r: &Record| r.transfer.as_ref().map(|t| (t.from.clone(), t.to.clone()));
        assert_eq!(who(&renewed), who(&pending), "the leader learns it from its renewal");
        let ReleaseOutcome::Released { record: released } = decide_release(Some(&at(&renewed, 9, 0)), "a", 4, None, S)
        else {
            panic!()
        };
        assert_eq!(who(&released), who(&pending), "kept as the reservation");
        // Released (observed) at 10 s: reserved until 20 s.
        let cur = at(&released, 10, 10);
        for other in ["a", "c"] {
            let Outcome::Refused(c) = decide_claim(Some(&cur), &claim(other, None), S * 12) else { panic!() };
            assert_eq!((c.holder, c.expires_in, c.reason), (None, S * 8, ConflictReason::Reserved));
        }
        let Outcome::Acquired { record, .. } = decide_claim(Some(&cur), &claim("b", None), S * 12) else { panic!() };
        assert_eq!((record.holder.as_deref(), record.token, record.transfer), (Some("b"), 5, None));
        // After the TTL anyone may; the judge clears it if nobody came.
        let Outcome::Acquired { record, .. } = decide_claim(Some(&cur), &claim("c", None), S * 20) else { panic!() };
        assert_eq!((record.token, record.transfer), (5, None));
        assert_eq!(decide_clear(&cur, S * 19), None);
        let cleared = decide_clear(&cur, S * 20).unwrap();
        assert_eq!((cleared.transfer, cleared.holder, cleared.token, cleared.why), (None, None, 4, released.why));
    }

    #[test]
    fn a_transfer_away_reserves_against_the_old_leader_only() {
        let pending = asked(&held("a", 4), None, None);
        let ReleaseOutcome::Released { record } = decide_release(Some(&at(&pending, 8, 0)), "a", 4, None, S) else {
            panic!()
        };
        let cur = at(&record, 9, 1);
        let Outcome::Refused(c) = decide_claim(Some(&cur), &claim("a", None), S * 2) else { panic!() };
        assert_eq!(c.reason, ConflictReason::Reserved);
        assert!(matches!(decide_claim(Some(&cur), &claim("c", None), S * 2), Outcome::Acquired { .. }));
    }

    #[test]
    fn an_expired_leader_leaves_no_reservation() {
        let pending = asked(&held("a", 4), None, Some("b"));
        let cur = at(&pending, 8, 0);
        let Outcome::Acquired { record, .. } = decide_claim(Some(&cur), &claim("c", None), S * 10) else { panic!() };
        assert_eq!((record.token, record.transfer), (5, None));
        let cleared = decide_clear(&cur, S * 10).unwrap();
        assert_eq!((cleared.holder, cleared.transfer), (None, None));
    }

    #[test]
    fn the_judge_dates_a_reservation_and_asks_for_it_cleared() {
        let pending = asked(&held("a", 4), None, Some("b"));
        let ReleaseOutcome::Released { record } = decide_release(Some(&at(&pending, 8, 0)), "a", 4, None, S) else {
            panic!()
        };
        let mut judge = Judge::new();
        assert_eq!(judge.observe(&"e", &record, 9, S * 3).observed_at, S * 3);
        assert_eq!(judge.observe(&"e", &record, 9, S * 5).observed_at, S * 3, "dated once, like a lease");
        assert_eq!(judge.held_count(S * 5), 0, "a reservation is not a lease held");
        let due = judge.due(S * 15, 10);
        assert_eq!(due, vec![("e", 9)]);
        let cleared = judge.settle(&"e", 9, Some((&record, 9)), S * 15).unwrap();
        assert_eq!(cleared.transfer, None);
    }
}
