//! The checks of leadership transfers ([`crate::transferrer`]), from the
//! history alone. The election's terms are the `elect-N` contenders'
//! sections ([`crate::elect`]); the safety of transfers (no overlap, no
//! stale write, tokens growing) is the checks of every lock
//! ([`crate::check`]), which cover the election as they do the locks.
//!
//! 1. **A transfer is honoured**: after a transfer accepted (200) from the
//!    leader `L` with token `T` to the candidate `X` (or away from `L`), the
//!    next term (the one with the smallest token above `T`) is `X`'s (or
//!    not `L`'s): counted as honoured. Otherwise it is a violation only
//!    when the history proves that the reservation was broken: the next
//!    term entered within the reservation's TTL of the ask (the release
//!    came after the transfer was written, and the reservation lasts one
//!    TTL from the release), an elector's history shows `L` *released*
//!    its token `T` (a lease that ran out or a session that ended leaves no
//!    reservation), no other transfer was asked in between (it replaces
//!    the first), and no fault of any kind overlapped. Anything else is
//!    counted, not a violation: the target was not standing, was frozen or
//!    killed, or its campaign lost the race to the end of the reservation.
//! 2. **A wrong `from` is refused**: a transfer asked `from` a candidate
//!    and accepted must name that candidate as the leader, with a token
//!    no other contender entered a term with; anything else is a
//!    violation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::check::Section;
use crate::elect::ELECTION;
use crate::fault::Fault;
use crate::fence::{Event, Step};
use crate::transferrer::NO_ANSWER;

/// What the checks of transfers found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferFindings {
    /// The election's terms (its sections).
    pub terms: usize,
    /// Transfers asked.
    pub asked: usize,
    /// Of those, answered 200.
    pub accepted: usize,
    /// Refused, by the conflict's reason.
    pub refused: BTreeMap<String, usize>,
    /// Unanswered (they may have been written).
    pub unanswered: usize,
    /// Accepted, and the next term went to the target (or, away, not to the
    /// old leader).
    pub honoured: usize,
    /// Accepted, and the next term went to another, which nothing proves
    /// wrong (see the module's documentation).
    pub not_honoured: usize,
    /// Accepted, with no term after it in the run.
    pub unjudged: usize,
    /// Accepted, and the next term went to another within the reservation:
    /// must be 0.
    pub reservation_broken: usize,
    /// Transfers asked from a candidate that did not lead when read.
    pub wrong_from: usize,
    /// Transfers accepted from a candidate that did not lead (per the
    /// answer and the terms): must be 0.
    pub wrong_from_accepted: usize,
    /// The first few violations, described.
    pub examples: Vec<String>,
}

impl TransferFindings {
    /// No violation.
    pub fn safe(&self) -> bool {
        self.reservation_broken == 0 && self.wrong_from_accepted == 0
    }

    fn example(&mut self, text: String) {
        if self.examples.len() < 10 {
            self.examples.push(text);
        }
    }
}

/// Checks the transferrer's asks in `events` against the election's terms
/// among `sections` and the `faults`.
pub fn check(events: &[Event], sections: &[Section], faults: &[Fault]) -> TransferFindings {
    let mut terms: Vec<&Section> = sections.iter().filter(|s| s.lock == ELECTION).collect();
    terms.sort_by_key(|s| (s.token, s.enter_us));
    let mut f = TransferFindings { terms: terms.len(), ..TransferFindings::default() };
    let asks: Vec<&Event> = events.iter().filter(|e| e.step == Step::Transfer).collect();
    // Releases (not expiries) of the election that an elector's history
    // shows: (old leader, token).
    let released: Vec<(&str, u64)> = events
        .iter()
        .filter(|e| e.step == Step::History && e.lock == ELECTION && e.holder.is_none())
        .filter(|e| matches!(e.why.as_deref(), Some("released" | "transferred")))
        .filter_map(|e| Some((e.from.as_deref()?, e.token)))
        .collect();
    // The leader the transferrer read last before each ask.
    let mut read: Option<&str> = None;
    let mut read_before: Vec<Option<&str>> = Vec::new();
    for e in events {
        match e.step {
            Step::Leader => read = e.holder.as_deref(),
            Step::Transfer => read_before.push(read),
            _ => {}
        }
    }
    for (i, a) in asks.iter().enumerate() {
        f.asked += 1;
        let wrong = a.from.as_deref().is_some_and(|from| read_before[i] != Some(from));
        f.wrong_from += usize::from(wrong);
        if !a.accepted {
            match a.why.as_deref() {
                Some(NO_ANSWER) => f.unanswered += 1,
                why => *f.refused.entry(why.unwrap_or("?").to_owned()).or_default() += 1,
            }
            continue;
        }
        f.accepted += 1;
        let (Some(old), t) = (a.holder.as_deref(), a.token) else { continue };
        if let Some(from) = a.from.as_deref() {
            let entered_by_other = terms.iter().any(|s| s.token == t && s.client != from);
            if old != from || entered_by_other {
                f.wrong_from_accepted += 1;
                f.example(format!(
                    "{ELECTION}: a transfer from {from} asked at {} µs was accepted while {old} led with token {t}",
                    a.since_us.unwrap_or(a.at_us)
                ));
            }
        }
        let Some(next) = terms.iter().find(|s| s.token > t) else {
            f.unjudged += 1;
            continue;
        };
        let admitted = match a.to.as_deref() {
            Some(to) => next.client == to,
            None => next.client != old,
        };
        if admitted {
            f.honoured += 1;
            continue;
        }
        let asked_at = a.since_us.unwrap_or(a.at_us);
        let reservation_us = a.ttl_ms.unwrap_or(0) * 1000;
        let within = next.enter_us > asked_at && next.enter_us < asked_at + reservation_us;
        let replaced = asks[i + 1..].iter().any(|b| {
            b.since_us.unwrap_or(b.at_us) <= next.enter_us && (b.accepted || b.why.as_deref() == Some(NO_ANSWER))
        });
        let faulted = faults.iter().any(|x| x.from_us <= next.enter_us && x.to_us >= asked_at);
        if within && !replaced && !faulted && released.contains(&(old, t)) {
            f.reservation_broken += 1;
            let to = a.to.as_deref().map_or_else(|| format!("anyone but {old}"), str::to_owned);
            f.example(format!(
                "{ELECTION}: transfer from {old} (token {t}) to {to} accepted at {asked_at} µs, {old} released, \
                 yet {} entered the next term (token {}) at {} µs, within the reservation of {} ms",
                next.client,
                next.token,
                next.enter_us,
                reservation_us / 1000
            ));
        } else {
            f.not_honoured += 1;
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::FaultKind;
    use crate::fence::{OBSERVER, TRANSFERRER};

    fn term(client: &str, token: u64, enter_us: u64, end_us: u64) -> Section {
        let (lock, client) = (ELECTION.to_owned(), client.to_owned());
        Section { lock, client, token, enter_us, end_us, exited: true, hold: Default::default() }
    }

    /// A transfer asked at `at` of `leader` (token `token`) to `to`,
    /// answered 200.
    fn asked(at: u64, from: Option<&str>, to: Option<&str>, leader: &str, token: u64) -> Event {
        let mut e = Event::new(Step::Transfer, ELECTION, TRANSFERRER, token, true);
        (e.at_us, e.since_us, e.ttl_ms) = (at + 1, Some(at), Some(1000));
        (e.from, e.to, e.holder) = (from.map(Into::into), to.map(Into::into), Some(leader.into()));
        e
    }

    fn read(at: u64, leader: &str) -> Event {
        Event { at_us: at, holder: Some(leader.into()), ..Event::new(Step::Leader, ELECTION, TRANSFERRER, 1, true) }
    }

    fn released(leader: &str, token: u64) -> Event {
        let mut e = Event::new(Step::History, ELECTION, OBSERVER, token, true);
        (e.from, e.why) = (Some(leader.into()), Some("transferred".into()));
        e
    }

    #[test]
    fn the_next_term_must_be_the_target_s_within_the_reservation() {
        let terms = [term("a", 1, 0, 100), term("b", 2, 200, 300)];
        let h = [read(10, "a"), asked(10, None, Some("b"), "a", 1), released("a", 1)];
        let f = check(&h, &terms, &[]);
        assert_eq!((f.asked, f.accepted, f.honoured, f.reservation_broken), (1, 1, 1, 0), "{f:?}");
        // c took it instead, 190 µs after the ask: within the TTL.
        let terms = [term("a", 1, 0, 100), term("c", 2, 200, 300)];
        let f = check(&h, &terms, &[]);
        assert_eq!((f.honoured, f.reservation_broken), (0, 1), "{f:?}");
        assert!(!f.safe() && f.examples[0].contains("yet c entered the next term (token 2) at 200 µs"), "{f:?}");
        // Not proven: no release in a history (it may have run out), a
        // fault meanwhile, another transfer asked, or past the TTL.
        assert_eq!(check(&h[..2], &terms, &[]).not_honoured, 1);
        let kill = Fault {
            kind: FaultKind::ContenderKill,
            client: Some("b".into()),
            from_us: 150,
            to_us: 150,
            freezes_section: false,
            lock: None,
        };
        assert_eq!(check(&h, &terms, &[kill]).not_honoured, 1);
        let mut again = h.to_vec();
        again.push(asked(50, None, Some("c"), "a", 1));
        let f = check(&again, &terms, &[]);
        assert_eq!((f.reservation_broken, f.honoured, f.not_honoured), (0, 1, 1), "{f:?}");
        let late = [term("a", 1, 0, 100), term("c", 2, 1_000_011, 1_000_100)];
        assert_eq!(check(&h, &late, &[]).not_honoured, 1);
        // Away: anyone but the old leader; the old leader back is broken.
        let away = [read(10, "a"), asked(10, Some("a"), None, "a", 1), released("a", 1)];
        assert_eq!(check(&away, &[term("a", 1, 0, 100), term("c", 2, 200, 300)], &[]).honoured, 1);
        assert_eq!(check(&away, &[term("a", 1, 0, 100), term("a", 2, 200, 300)], &[]).reservation_broken, 1);
        // No term after it: not judged.
        assert_eq!(check(&h, &terms[..1], &[]).unjudged, 1);
    }

    #[test]
    fn a_transfer_from_a_candidate_that_does_not_lead_must_be_refused() {
        let terms = [term("a", 1, 0, 100)];
        let mut refused = asked(10, Some("b"), Some("c"), "a", 0);
        (refused.accepted, refused.why) = (false, Some("held".into()));
        let h = [read(5, "a"), refused.clone()];
        let f = check(&h, &terms, &[]);
        assert_eq!((f.wrong_from, f.wrong_from_accepted, f.refused.get("held")), (1, 0, Some(&1)), "{f:?}");
        assert!(f.safe());
        // Accepted, the answer naming a: broken (whether or not a entered a
        // term with that token).
        for token in [1, 7] {
            let h = [read(5, "a"), asked(10, Some("b"), Some("c"), "a", token)];
            let f = check(&h, &terms, &[]);
            assert_eq!(f.wrong_from_accepted, 1, "{f:?}");
            assert!(!f.safe());
        }
        // b came to lead in between, and the answer says so: fine; unless
        // another entered with the token the answer gave b.
        let h = [read(5, "a"), asked(10, Some("b"), Some("c"), "b", 2)];
        assert_eq!(check(&h, &[term("a", 1, 0, 8), term("b", 2, 9, 100)], &[]).wrong_from_accepted, 0);
        assert_eq!(check(&h, &[term("a", 1, 0, 8), term("a", 2, 9, 100)], &[]).wrong_from_accepted, 1);
    }
}
