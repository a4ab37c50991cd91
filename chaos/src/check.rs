//! The checker: reads a history of critical sections and the faults
//! injected, and counts what went wrong.
//!
//! A section is everything one contender reported for one lock under one
//! token: from its `enter` to its `exit`, or to its last report if it was
//! killed inside. On each lock, sections are ordered by when they entered.
//!
//! - Two sections **overlap** when one enters before the previous one's
//!   last report, and their holds exclude each other ([`Hold::excludes`]:
//!   a writer excludes everyone, a permit of a semaphore excludes the same
//!   permit; readers, and different permits, may overlap). That is what fencing tokens are for when the earlier
//!   holder was frozen while its lease ran out (it woke up late and went on),
//!   or is a careless contender (its id starts with `careless`: it never
//!   checks its lease before writing), or was killed inside its section
//!   before the next one entered (what the resource receives from it after
//!   that was in flight when it died: a successor gets in within
//!   milliseconds of a kill, sooner than a late packet may arrive): such an
//!   overlap is counted as *fenced*. Any other overlap means a holder did not learn in time that
//!   it lost the lock, or the elector granted while another lease was live:
//!   a *violation*.
//! - A write is **stale** when a later section whose hold excludes its own
//!   had already entered when the resource received it. Stale writes must be refused; one accepted is a
//!   violation. A refused write that was not stale means tokens went
//!   backwards (a legitimate holder was turned away).
//! - **Tokens** must grow at every hand-over (from a section to the next
//!   one whose hold excludes it); a permit must be one the semaphore has.
//! - The **stranger** ([`crate::stranger`]) must never renew or release a
//!   lease it does not hold: each attempt the elector accepted is a
//!   violation.
//! - **Fairness** ([`crate::fair`]): no waiter overtaken by one that came
//!   later, except where a fault may have cost it its place.
//! - **The watch** ([`crate::views`]): the views the watch observer
//!   accepted never show tokens going back or a holder that never had that
//!   token, and agree with plain reads once the run is over.
//! - **Transfers** ([`crate::transfers`]): a transfer's reservation keeps
//!   out everyone but its target, and a transfer `from` a candidate that
//!   does not lead is refused.
//! - **The electors' histories** ([`crate::histories`]): no entry names a
//!   holder that never had its token.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::fair::Fairness;
use crate::fault::Fault;
use crate::fence::{Event, Hold, Step};
use crate::histories::HistoryFindings;
use crate::transfers::TransferFindings;
use crate::views::WatchFindings;

/// One critical section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    /// The lock.
    pub lock: String,
    /// The contender.
    pub client: String,
    /// Its fencing token.
    pub token: u64,
    /// When it entered.
    pub enter_us: u64,
    /// Its last report.
    pub end_us: u64,
    /// Whether it reported its exit (it was not killed inside).
    pub exited: bool,
    /// How it held the lock.
    #[serde(default)]
    pub hold: Hold,
}

/// What the checker found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Findings {
    /// Critical sections.
    pub sections: usize,
    /// Sections that took a lock over from an earlier one.
    pub handovers: usize,
    /// Sections that ended without reporting an exit (killed inside).
    pub killed_inside: usize,
    /// Writes the resource accepted.
    pub writes_accepted: usize,
    /// Overlaps of a frozen holder that woke up late (fencing's job).
    pub overlaps_fenced: usize,
    /// Overlaps nothing excuses: must be 0.
    pub overlaps_violating: usize,
    /// The violating overlaps by the earlier holder's client id: who kept
    /// working after its lease was gone.
    #[serde(default)]
    pub overlaps_violating_by: BTreeMap<String, usize>,
    /// Stale writes the resource refused.
    pub stale_refused: usize,
    /// Stale writes the resource accepted: must be 0.
    pub stale_accepted: usize,
    /// Writes by the latest holder that the resource refused: must be 0.
    pub legitimate_refused: usize,
    /// Hand-overs where the token did not grow: must be 0.
    pub token_regressions: usize,
    /// Sections holding a permit the semaphore does not have: must be 0.
    #[serde(default)]
    pub permits_out_of_range: usize,
    /// The stranger's attempts to renew or release a lease it did not hold.
    #[serde(default)]
    pub stranger_attempts: usize,
    /// Those the elector accepted: must be 0.
    #[serde(default)]
    pub stranger_accepted: usize,
    /// Waits, and waiters overtaken by later ones (unexcused: must be 0).
    #[serde(default)]
    pub fairness: Fairness,
    /// The watch observer's views: tokens gone back, phantom holders, and
    /// whether they agreed with plain reads at the end (violations: 0).
    #[serde(default)]
    pub watch: WatchFindings,
    /// The transfers of the election: honoured, and the reservation and
    /// `from` kept (violations: 0).
    #[serde(default)]
    pub transfers: TransferFindings,
    /// The electors' histories: no phantom holder (violations: 0).
    #[serde(default)]
    pub history: HistoryFindings,
    /// The first few violations, described.
    pub examples: Vec<String>,
}

impl Findings {
    /// No violation of any kind.
    pub fn safe(&self) -> bool {
        self.overlaps_violating == 0
            && self.stale_accepted == 0
            && self.legitimate_refused == 0
            && self.token_regressions == 0
            && self.permits_out_of_range == 0
            && self.stranger_accepted == 0
            && self.fairness.overtakings == 0
            && self.watch.safe()
            && self.transfers.safe()
            && self.history.safe()
    }

    fn example(&mut self, text: String) {
        if self.examples.len() < 10 {
            self.examples.push(text);
        }
    }
}

/// A contender that never checks its lease before writing: its late writes
/// are the fencing resource's to refuse.
pub fn is_careless(client: &str) -> bool {
    client.starts_with("careless")
}

/// A hold, in an example.
fn describe(hold: Hold) -> String {
    match hold {
        Hold::Exclusive => "exclusive".to_owned(),
        Hold::Shared => "a reader".to_owned(),
        Hold::Permit { permit, of } => format!("permit {permit} of {of}"),
    }
}

/// Groups the history into sections, ordered by lock and entry.
pub fn sections(events: &[Event]) -> Vec<Section> {
    let mut open: HashMap<(&str, &str, u64), usize> = HashMap::new();
    let mut out: Vec<Section> = Vec::new();
    for e in events.iter().filter(|e| e.step.is_section()) {
        let key = (e.lock.as_str(), e.client.as_str(), e.token);
        match (e.step, open.get(&key)) {
            (Step::Enter, _) => {
                open.insert(key, out.len());
                out.push(Section {
                    lock: e.lock.clone(),
                    client: e.client.clone(),
                    token: e.token,
                    enter_us: e.at_us,
                    end_us: e.at_us,
                    exited: false,
                    hold: e.hold,
                });
            }
            // Noticed after the fact: the section ended at its last report.
            (Step::Lost, Some(&i)) => out[i].exited = true,
            (step, Some(&i)) => {
                out[i].end_us = out[i].end_us.max(e.at_us);
                out[i].exited |= step == Step::Exit;
            }
            (_, None) => {}
        }
    }
    out.sort_by(|a, b| (&a.lock, a.enter_us).cmp(&(&b.lock, b.enter_us)));
    out
}

/// Checks a history against the faults injected.
pub fn check(events: &[Event], faults: &[Fault]) -> Findings {
    let all = sections(events);
    let mut f = Findings { sections: all.len(), ..Findings::default() };
    let mut by_lock: BTreeMap<&str, Vec<&Section>> = BTreeMap::new();
    for s in &all {
        by_lock.entry(&s.lock).or_default().push(s);
    }
    let frozen = |client: &str, from: u64, to: u64| {
        faults
            .iter()
            .any(|x| x.freezes_section && x.client.as_deref() == Some(client) && x.from_us < to && x.to_us > from)
    };
    // Killed inside `s` at or before `to`: it could act no more from then.
    let killed = |s: &Section, to: u64| {
        !s.exited
            && faults.iter().any(|x| {
                x.kills_section()
                    && x.client.as_deref() == Some(s.client.as_str())
                    && x.from_us >= s.enter_us
                    && x.from_us <= to
            })
    };
    for (lock, list) in &by_lock {
        f.handovers += list.len().saturating_sub(1);
        f.killed_inside += list.iter().filter(|s| !s.exited).count();
        for (j, later) in list.iter().enumerate() {
            if later.hold.out_of_range() {
                f.permits_out_of_range += 1;
                f.example(format!("{lock}: {} entered with {:?}", later.client, later.hold));
            }
            // The hand-over: the last section before it that it excludes.
            let before = list[..j].iter().rev().find(|e| e.hold.excludes(later.hold));
            if let Some(before) = before
                && later.token <= before.token
            {
                f.token_regressions += 1;
                f.example(format!(
                    "{lock}: token {} (client {}) after token {} (client {})",
                    later.token, later.client, before.token, before.client
                ));
            }
            for earlier in list[..j].iter().filter(|e| e.hold.excludes(later.hold)) {
                if later.enter_us >= earlier.end_us {
                    continue;
                }
                if is_careless(&earlier.client)
                    || frozen(&earlier.client, earlier.enter_us, later.enter_us)
                    || killed(earlier, later.enter_us)
                {
                    f.overlaps_fenced += 1;
                } else {
                    f.overlaps_violating += 1;
                    *f.overlaps_violating_by.entry(earlier.client.clone()).or_default() += 1;
                    f.example(format!(
                        "{lock}: {} ({}) entered with token {} at {} µs while {} ({}, token {}) was inside until {} µs",
                        later.client,
                        describe(later.hold),
                        later.token,
                        later.enter_us,
                        earlier.client,
                        describe(earlier.hold),
                        earlier.token,
                        earlier.end_us
                    ));
                }
            }
        }
    }
    // Stale or not: did a later section enter before the resource got it?
    let index: HashMap<&str, &Vec<&Section>> = by_lock.iter().map(|(k, v)| (*k, v)).collect();
    for e in events.iter().filter(|e| matches!(e.step, Step::Enter | Step::Write)) {
        let Some(list) = index.get(e.lock.as_str()) else { continue };
        let Some(own) = list.iter().find(|s| s.client == e.client && s.token == e.token) else { continue };
        let stale = list.iter().any(|s| s.enter_us > own.enter_us && s.enter_us < e.at_us && s.hold.excludes(own.hold));
        match (stale, e.accepted) {
            (true, true) => {
                f.stale_accepted += 1;
                f.example(format!(
                    "{}: stale {:?} by {} with token {} accepted at {} µs",
                    e.lock, e.step, e.client, e.token, e.at_us
                ));
            }
            (true, false) => f.stale_refused += 1,
            (false, false) => {
                f.legitimate_refused += 1;
                f.example(format!(
                    "{}: {:?} by the latest holder {} with token {} refused at {} µs",
                    e.lock, e.step, e.client, e.token, e.at_us
                ));
            }
            (false, true) => f.writes_accepted += usize::from(e.step == Step::Write),
        }
    }
    for e in events.iter().filter(|e| matches!(e.step, Step::Renew | Step::Release)) {
        f.stranger_attempts += 1;
        if e.accepted {
            f.stranger_accepted += 1;
            f.example(format!(
                "{}: the stranger's {:?} of {}'s lease (token {}) was accepted at {} µs",
                e.lock,
                e.step,
                e.holder.as_deref().unwrap_or("?"),
                e.token,
                e.at_us
            ));
        }
    }
    f.fairness = crate::fair::check(events, faults);
    for e in f.fairness.examples.clone() {
        f.example(e);
    }
    f.watch = crate::views::check(events);
    for e in f.watch.examples.clone() {
        f.example(e);
    }
    f.transfers = crate::transfers::check(events, &all, faults);
    for e in f.transfers.examples.clone() {
        f.example(e);
    }
    f.history = crate::histories::check(events);
    for e in f.history.examples.clone() {
        f.example(e);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::FaultKind;

    fn ev(at_us: u64, step: Step, client: &str, token: u64, accepted: bool) -> Event {
        Event { at_us, ..Event::new(step, "l", client, token, accepted) }
    }

    /// The same, holding the lock as `hold`.
    fn held(hold: Hold, at_us: u64, step: Step, client: &str, token: u64, accepted: bool) -> Event {
        Event { hold, ..ev(at_us, step, client, token, accepted) }
    }

    #[test]
    fn clean_handovers_are_safe() {
        let h = [
            ev(1, Step::Enter, "a", 1, true),
            ev(2, Step::Write, "a", 1, true),
            ev(3, Step::Exit, "a", 1, true),
            ev(4, Step::Enter, "b", 2, true),
            ev(5, Step::Write, "b", 2, true),
        ];
        let f = check(&h, &[]);
        assert!(f.safe(), "{f:?}");
        assert_eq!((f.sections, f.handovers, f.killed_inside, f.writes_accepted), (2, 1, 1, 2));
    }

    #[test]
    fn an_overlap_is_fenced_only_when_the_earlier_holder_was_frozen() {
        let h = [ev(1, Step::Enter, "a", 1, true), ev(4, Step::Enter, "b", 2, true), ev(5, Step::Write, "a", 1, false)];
        let f = check(&h, &[]);
        assert_eq!((f.overlaps_violating, f.stale_refused), (1, 1));
        assert!(!f.safe());
        let freeze = Fault {
            kind: FaultKind::ContenderFreeze,
            client: Some("a".into()),
            from_us: 2,
            to_us: 5,
            freezes_section: true,
            lock: None,
        };
        let f = check(&h, &[freeze]);
        assert_eq!((f.overlaps_fenced, f.overlaps_violating), (1, 0));
        assert!(f.safe(), "{f:?}");
    }

    #[test]
    fn a_killed_holder_s_writes_in_flight_are_the_fence_s_to_refuse() {
        // a is killed at 3; b enters at 4; a's last write, sent before it
        // died, reaches the resource at 5 and is refused.
        let h = [ev(1, Step::Enter, "a", 1, true), ev(4, Step::Enter, "b", 2, true), ev(5, Step::Write, "a", 1, false)];
        let kill = |at: u64| Fault {
            kind: FaultKind::ContenderKill,
            client: Some("a".into()),
            from_us: at,
            to_us: at,
            freezes_section: false,
            lock: Some("l".into()),
        };
        let f = check(&h, &[kill(3)]);
        assert_eq!((f.overlaps_fenced, f.overlaps_violating, f.stale_refused), (1, 0, 1));
        assert!(f.safe(), "{f:?}");
        // Killed only after b entered: a was alive and inside meanwhile.
        let f = check(&h, &[kill(4_000)]);
        assert_eq!(f.overlaps_violating, 1);
        // A holder that exited its section was not killed inside it.
        let exited =
            [ev(1, Step::Enter, "a", 1, true), ev(4, Step::Enter, "b", 2, true), ev(5, Step::Exit, "a", 1, true)];
        assert_eq!(check(&exited, &[kill(3)]).overlaps_violating, 1);
    }

    #[test]
    fn a_careless_holder_s_late_writes_are_the_fence_s_to_refuse() {
        let h = [
            ev(1, Step::Enter, "careless-0", 1, true),
            ev(4, Step::Enter, "b", 2, true),
            ev(5, Step::Write, "careless-0", 1, false),
        ];
        let f = check(&h, &[]);
        assert_eq!((f.overlaps_fenced, f.overlaps_violating, f.stale_refused), (1, 0, 1));
        assert!(f.safe());
    }

    #[test]
    fn tokens_going_back_and_stale_writes_accepted_are_violations() {
        // A restart that forgot: b gets token 1 again after a held 5.
        let h = [
            ev(1, Step::Enter, "a", 5, true),
            ev(2, Step::Exit, "a", 5, true),
            ev(3, Step::Enter, "b", 1, false),
            ev(4, Step::Write, "b", 1, false),
        ];
        let f = check(&h, &[]);
        assert_eq!((f.token_regressions, f.legitimate_refused), (1, 2));
        // The same forgetful restart while a still runs: the resource keeps
        // taking a's writes and turns b away.
        let h = [ev(1, Step::Enter, "a", 5, true), ev(3, Step::Enter, "b", 1, false), ev(4, Step::Write, "a", 5, true)];
        let f = check(&h, &[]);
        assert_eq!((f.stale_accepted, f.legitimate_refused, f.token_regressions), (1, 1, 1));
        assert_eq!(f.overlaps_violating, 1);
        assert_eq!(f.overlaps_violating_by, BTreeMap::from([("a".to_owned(), 1)]));
    }

    #[test]
    fn a_stranger_s_accepted_attempt_is_a_violation() {
        let stranger = |step, accepted| Event {
            at_us: 3,
            holder: Some("a".into()),
            ..Event::new(step, "l", crate::fence::STRANGER, 1, accepted)
        };
        let mut h = vec![
            ev(1, Step::Enter, "a", 1, true),
            stranger(Step::Renew, false),
            stranger(Step::Release, false),
            ev(4, Step::Write, "a", 1, true),
        ];
        let f = check(&h, &[]);
        assert!(f.safe(), "{f:?}");
        assert_eq!((f.sections, f.stranger_attempts, f.stranger_accepted), (1, 2, 0));
        h.push(stranger(Step::Release, true));
        let f = check(&h, &[]);
        assert!(!f.safe());
        assert_eq!((f.stranger_attempts, f.stranger_accepted), (3, 1));
    }

    #[test]
    fn readers_share_and_a_writer_excludes_them() {
        let r = Hold::Shared;
        // Two readers at once, then a writer once both left: safe.
        let mut h = vec![
            held(r, 1, Step::Enter, "r1", 1, true),
            held(r, 2, Step::Enter, "r2", 2, true),
            held(r, 3, Step::Write, "r1", 1, true),
            held(r, 4, Step::Exit, "r1", 1, true),
            held(r, 5, Step::Exit, "r2", 2, true),
            ev(6, Step::Enter, "w", 3, true),
            ev(7, Step::Write, "w", 3, true),
        ];
        let f = check(&h, &[]);
        assert!(f.safe(), "{f:?}");
        assert_eq!((f.overlaps_fenced, f.overlaps_violating, f.token_regressions), (0, 0, 0));
        // A reader beside the writer: a violation, and its late write is
        // stale (the resource refused it).
        h.push(held(r, 8, Step::Write, "r2", 2, false));
        let f = check(&h, &[]);
        assert_eq!((f.overlaps_violating, f.stale_refused), (1, 1), "{f:?}");
        assert!(f.examples[0].contains("w (exclusive) entered with token 3 at 6 µs while r2 (a reader"), "{f:?}");
        // A writer beside a reader that entered after it.
        let h =
            [ev(1, Step::Enter, "w", 1, true), held(r, 2, Step::Enter, "r", 2, true), ev(3, Step::Exit, "w", 1, true)];
        assert_eq!(check(&h, &[]).overlaps_violating, 1);
    }

    #[test]
    fn a_permit_excludes_only_itself_and_must_exist() {
        let p = |permit| Hold::Permit { permit, of: 2 };
        let h = [
            held(p(0), 1, Step::Enter, "a", 1, true),
            held(p(1), 2, Step::Enter, "b", 2, true),
            held(p(0), 3, Step::Exit, "a", 1, true),
            held(p(0), 4, Step::Enter, "c", 3, true),
            held(p(1), 5, Step::Write, "b", 2, true),
        ];
        let f = check(&h, &[]);
        assert!(f.safe(), "{f:?}");
        // A third holder at once: with a permit already held, or one the
        // semaphore does not have.
        let mut twice = h.to_vec();
        twice.push(held(p(1), 6, Step::Enter, "d", 4, true));
        twice.push(held(p(1), 7, Step::Write, "b", 2, false));
        let f = check(&twice, &[]);
        assert_eq!((f.overlaps_violating, f.stale_refused, f.legitimate_refused), (1, 1, 0), "{f:?}");
        let mut third = h.to_vec();
        third.push(held(Hold::Permit { permit: 2, of: 2 }, 6, Step::Enter, "d", 4, true));
        let f = check(&third, &[]);
        assert_eq!((f.permits_out_of_range, f.overlaps_violating), (1, 0), "{f:?}");
        assert!(!f.safe());
        // Tokens grow per permit: the same permit handed over with a
        // smaller token is a regression, another permit's is not.
        let h = [
            held(p(0), 1, Step::Enter, "a", 5, true),
            held(p(1), 2, Step::Enter, "b", 4, true),
            held(p(0), 3, Step::Exit, "a", 5, true),
            held(p(0), 4, Step::Enter, "c", 3, false),
        ];
        let f = check(&h, &[]);
        assert_eq!((f.token_regressions, f.legitimate_refused), (1, 1), "{f:?}");
    }
}
