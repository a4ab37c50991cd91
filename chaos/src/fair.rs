//! The fairness check: no waiter overtaken by one that came later, except
//! where the earlier one's lease or wait ran out.
//!
//! # What the history says about waiting
//!
//! - [`Step::Wait`]: the run started an `mpsync lock` process (or a racer
//!   of the control its attempt): the contender cannot have had a place in
//!   line before. [`Step::Quit`]: that process ended.
//! - [`Step::Queued`]: the line watcher ([`crate::watcher`]) saw the contender
//!   in the lock's line with a ticket: its place existed by then. The wasm
//!   contenders, one process taking turns, have no `Wait` mark; for them a
//!   wait starts, at the earliest, at their previous report to the resource
//!   (they wait for one lock at a time, between sections).
//!
//! A **wait** runs from the first of these to the contender's `enter` on
//! that lock, or to its `Quit` (it gave up: its `--timeout` ran out, or it
//! was killed). Of a wait we know two times: `lo`, before which it surely
//! had no place, and `hi`, by which it surely had one: its first sighting
//! in line, or, if the watcher never saw it there (it waited less than a
//! poll, or never got a place, as when contenders race), its start plus
//! [`START_MARGIN_US`].
//!
//! # Overtaking
//!
//! Waiter `a` came before waiter `b` when `a.hi < b.lo`. `b` **overtook**
//! `a` when the lock was granted to `b` before `a`: the watcher had not
//! seen the lock handed to `a` ([`Step::Handed`]) by `b`'s entry, and `b`
//! entered with a smaller token than `a` entered with (every grant of a
//! name, shared or not, takes the next token of one counter), or `a` never
//! entered and still waited when `b` entered. (A waiter handed the lock may
//! lose it before it learns of it, to a fault, and enter later with a new
//! grant: it was not overtaken.) Grants, not entries, are compared: two
//! readers, or two permits, may hold at once, and the one granted first
//! may learn of it last (parked on another elector than the one that
//! handed it the lock, it learns at its next claim in line, up to a third
//! of the TTL later) and report its entry after the other. An
//! overtaking is *excused* when, between the start of `a`'s wait and `b`'s
//! entry, a fault could have cost `a` its place: one aimed at `a` (killed,
//! frozen, partitioned: its place not refreshed within its TTL, its session
//! closed), or one at the electors, the store or the network (a restarted
//! elector ends the sessions `a` waited under; a store out of reach lets
//! places run out unrefreshed); or when the watcher saw `a` lose its place
//! in that wait: under two tickets (its place ran out or its session ended,
//! and it took a new one at the back), or its place gone while it held
//! nothing ([`Step::Left`]) before `b` entered; or when `b`'s own process
//! was killed up to [`START_MARGIN_US`] before its wait began (its entry may
//! be the killed process's command's, in flight, not the new process's),
//! or the run was ending ([`FaultKind::RunEnd`](crate::fault::FaultKind):
//! every contender killed, its place in line gone). Any other overtaking is a
//! violation; the report counts the lost places no fault explains (a
//! refresh late on a busy machine, or an elector that dropped a live
//! waiter).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::fault::Fault;
use crate::fence::{Event, Step};

/// For a wait the watcher never saw in line: the most time, after the run
/// started its `mpsync lock` process, until the elector holds its place.
/// The process starts (a large binary on a busy two-core machine), opens
/// its session with the elector and sends its first claim in line. In our
/// short runs, with no fault during the wait, the watcher first saw the
/// place 23–47 ms after the start (median), 72–154 ms (99th percentile) and
/// 110–207 ms at most (memory, etcd, Lease API; up to a poll and a listing
/// of that is the watcher's): twice and a half the longest. Too small a
/// margin would count as overtaken a waiter that was still starting; too
/// large a one only narrows what the check sees (racers of the control
/// wait for seconds).
pub const START_MARGIN_US: u64 = 500_000;

/// What the fairness check found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fairness {
    /// Waits: for one lock, from the start of a wait to the entry or the
    /// end of the attempt.
    pub waits: usize,
    /// Those the line watcher saw in line.
    pub seen_in_line: usize,
    /// Those that lost their place (held two, or the watcher saw it go):
    /// it ran out, or the session it was held under ended.
    pub places_lost: usize,
    /// Of those, the ones no fault explains (a refresh that came late on a
    /// busy machine, or an elector that dropped a live waiter).
    pub places_lost_unexplained: usize,
    /// From the start of an `mpsync lock` process to its first sighting in
    /// line: the median and the longest, in µs (what [`START_MARGIN_US`]
    /// must cover).
    pub place_after_start_us: Option<(u64, u64)>,
    /// Overtakings a fault or a lost place excuses.
    pub overtakings_excused: usize,
    /// Overtakings nothing excuses: must be 0.
    pub overtakings: usize,
    /// The unexcused overtakings by the client overtaken.
    pub overtaken: BTreeMap<String, usize>,
    /// The first few, described.
    pub examples: Vec<String>,
}

/// One wait for one lock.
#[derive(Debug)]
struct WaitSpan<'a> {
    client: &'a str,
    lock: &'a str,
    /// It had no place before this.
    lo: u64,
    /// It started with a `Wait` mark.
    started: bool,
    /// It waits for a shared hold.
    shared: bool,
    /// Its first sighting in line.
    seen: Option<u64>,
    /// The last (first) sighting of a place of it.
    last_seen: u64,
    tickets: BTreeSet<u64>,
    /// It may have lost its place from then on (the watcher saw it gone).
    lost: Option<u64>,
    /// The watcher saw it among the holders then: it waited no longer.
    handed: Option<u64>,
    /// It entered the lock then, with that token.
    entered: Option<(u64, u64)>,
    /// It waited until then at least.
    end: u64,
}

impl WaitSpan<'_> {
    /// It waited until then at least: its end, or when the watcher saw the
    /// lock handed to it, whichever came first.
    fn waited_until(&self) -> u64 {
        self.handed.map_or(self.end, |h| h.min(self.end))
    }

    /// It surely had a place by then.
    fn hi(&self) -> u64 {
        match self.seen {
            Some(seen) => seen,
            None if self.started => self.lo + START_MARGIN_US,
            None => self.lo,
        }
    }
}

/// An entry into a section: `client` entered `lock` at `at` with `token`,
/// having had no place before `lo`.
struct Entry<'a> {
    client: &'a str,
    lock: &'a str,
    at: u64,
    lo: u64,
    shared: bool,
    token: u64,
}

/// Ends the wait `w` at `end` (at its last sighting at the earliest).
fn close<'a>(w: WaitSpan<'a>, end: u64, done: &mut Vec<WaitSpan<'a>>) {
    let end = end.max(w.last_seen);
    done.push(WaitSpan { end, ..w });
}

/// A wait for `e`'s lock, by `e`'s client, with no place before `lo`.
fn new_wait(e: &Event, lo: u64, started: bool) -> WaitSpan<'_> {
    WaitSpan {
        client: e.client.as_str(),
        lock: e.lock.as_str(),
        lo,
        started,
        shared: !e.hold.is_exclusive(),
        seen: None,
        last_seen: lo,
        tickets: BTreeSet::new(),
        lost: None,
        handed: None,
        entered: None,
        end: lo,
    }
}

/// Reads the waits and the entries out of a history.
fn waits(events: &[Event]) -> (Vec<WaitSpan<'_>>, Vec<Entry<'_>>) {
    let spawned: BTreeSet<&str> = events.iter().filter(|e| e.step == Step::Wait).map(|e| e.client.as_str()).collect();
    let mut done: Vec<WaitSpan<'_>> = Vec::new();
    let mut entries = Vec::new();
    // Per client: the wait open, and its last report to the resource.
    let mut open: BTreeMap<&str, WaitSpan<'_>> = BTreeMap::new();
    let mut last_report: BTreeMap<&str, u64> = BTreeMap::new();
    for e in events {
        let (client, at) = (e.client.as_str(), e.at_us);
        match e.step {
            Step::Wait => {
                if let Some(w) = open.remove(client) {
                    close(w, at, &mut done);
                }
                open.insert(client, new_wait(e, at, true));
            }
            Step::Queued => {
                let same = open.get(client).map(|w| w.lock == e.lock);
                match same {
                    // A contender that waits in one process per wait: a
                    // place outside its wait is a dead process's, left over.
                    Some(false) | None if spawned.contains(client) => continue,
                    Some(false) => {
                        if let Some(w) = open.remove(client) {
                            let last = w.last_seen;
                            close(w, last, &mut done);
                        }
                    }
                    _ => {}
                }
                let lo = last_report.get(client).copied().unwrap_or(0);
                let w = open.entry(client).or_insert_with(|| new_wait(e, lo, false));
                w.seen = w.seen.or(Some(at));
                w.shared |= !e.hold.is_exclusive();
                w.last_seen = at;
                w.tickets.insert(e.token);
            }
            Step::Handed => {
                if let Some(w) = open.get_mut(client).filter(|w| w.lock == e.lock && w.tickets.contains(&e.token)) {
                    w.handed = w.handed.or(Some(at));
                }
            }
            Step::Left => {
                if let Some(w) = open.get_mut(client).filter(|w| w.lock == e.lock && w.tickets.contains(&e.token)) {
                    let since = e.since_us.unwrap_or(at);
                    w.lost = Some(w.lost.map_or(since, |l| l.min(since)));
                }
            }
            Step::Enter => {
                let mut lo = last_report.get(client).copied().unwrap_or(0);
                if let Some(w) = open.remove(client) {
                    if w.lock == e.lock {
                        lo = w.lo;
                        close(WaitSpan { entered: Some((at, e.token)), ..w }, at, &mut done);
                    } else {
                        let end = if w.started { at } else { w.last_seen };
                        close(w, end, &mut done);
                    }
                }
                let shared = !e.hold.is_exclusive();
                entries.push(Entry { client, lock: e.lock.as_str(), at, lo, shared, token: e.token });
                last_report.insert(client, at);
            }
            Step::Write | Step::Exit | Step::Lost => {
                last_report.insert(client, at);
            }
            Step::Quit => {
                if let Some(w) = open.remove(client) {
                    close(w, at, &mut done);
                }
            }
            Step::Renew
            | Step::Release
            | Step::Watched
            | Step::Read
            | Step::Settle
            | Step::Leader
            | Step::Transfer
            | Step::History => {}
        }
    }
    for (_, w) in open {
        let end = if w.started { u64::MAX } else { w.last_seen };
        close(w, end, &mut done);
    }
    (done, entries)
}

/// Checks that no waiter was overtaken by one that came later, except where
/// a fault excuses it.
pub fn check(events: &[Event], faults: &[Fault]) -> Fairness {
    let (waits, entries) = waits(events);
    let mut f = Fairness {
        waits: waits.len(),
        seen_in_line: waits.iter().filter(|w| w.seen.is_some()).count(),
        ..Fairness::default()
    };
    // A fault that may have cost `client`'s place between `from` and `to`.
    let fault_on = |client: &str, from: u64, to: u64| {
        faults.iter().find(|x| x.client.as_deref().is_none_or(|c| c == client) && x.from_us <= to && x.to_us >= from)
    };
    for w in waits.iter().filter(|w| w.tickets.len() > 1 || w.lost.is_some()) {
        f.places_lost += 1;
        f.places_lost_unexplained += usize::from(fault_on(w.client, w.lo, w.end).is_none());
    }
    let mut after_start: Vec<u64> = waits.iter().filter(|w| w.started).filter_map(|w| Some(w.seen? - w.lo)).collect();
    after_start.sort_unstable();
    if let Some(max) = after_start.last() {
        f.place_after_start_us = Some((after_start[after_start.len() / 2], *max));
    }
    let mut by_lock: BTreeMap<&str, Vec<&WaitSpan<'_>>> = BTreeMap::new();
    for w in &waits {
        by_lock.entry(w.lock).or_default().push(w);
    }
    for b in &entries {
        let Some(list) = by_lock.get(b.lock) else { continue };
        // Granted after b: not seen handed the lock by b's entry, and a
        // later token, or none while it still waited.
        let overtaken = |a: &&&WaitSpan<'_>| {
            let after = match a.entered {
                Some((_, token)) => token > b.token && a.waited_until() > b.at,
                None => a.waited_until() > b.at,
            };
            a.client != b.client && a.hi() < b.lo && after
        };
        // b's process killed as it was handed the lock: its command's entry,
        // in flight, may arrive after the next process's wait began, which
        // is then no bound on when b had its place.
        let late_entry = faults.iter().any(|x| {
            x.kills_section()
                && x.client.as_deref() == Some(b.client)
                && x.from_us <= b.at
                && x.from_us + START_MARGIN_US >= b.lo
        });
        for a in list.iter().filter(overtaken) {
            let lost = a.tickets.len() > 1 || a.lost.is_some_and(|l| l <= b.at);
            if lost || late_entry || fault_on(a.client, a.lo, b.at).is_some() {
                f.overtakings_excused += 1;
                continue;
            }
            f.overtakings += 1;
            *f.overtaken.entry(a.client.to_owned()).or_default() += 1;
            if f.examples.len() < 10 {
                let place = match a.seen {
                    Some(seen) => format!("in line by {seen} µs"),
                    None => format!("started at {} µs, never seen in line", a.lo),
                };
                let until = match a.entered {
                    Some((at, token)) => format!("entered only at {at} µs, with token {token}"),
                    None if a.end == u64::MAX => "still waited at the end".to_owned(),
                    None => format!("gave up at {} µs", a.end),
                };
                let kind = |shared| if shared { "shared" } else { "exclusive" };
                f.examples.push(format!(
                    "{}: {} ({}; no place before {} µs) entered at {} µs with token {}, overtaking {} ({}; {place}; \
                     {until})",
                    b.lock,
                    b.client,
                    kind(b.shared),
                    b.lo,
                    b.at,
                    b.token,
                    a.client,
                    kind(a.shared)
                ));
            }
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::FaultKind;
    use crate::fence::Hold;

    fn ev(at_us: u64, step: Step, client: &str, token: u64) -> Event {
        Event { at_us, hold: Hold::Exclusive, ..Event::new(step, "l", client, token, true) }
    }

    const MS: u64 = 1000;

    /// `a` starts waiting at 0 and is seen in line at 10 ms; `b` starts at
    /// 50 ms and is seen at 60 ms; the holder `h` leaves at 100 ms; then
    /// the two enter in `order`.
    fn two_waiters(first: &str, second: &str) -> Vec<Event> {
        vec![
            ev(0, Step::Enter, "h", 1),
            ev(0, Step::Wait, "a", 0),
            ev(10 * MS, Step::Queued, "a", 1),
            ev(50 * MS, Step::Wait, "b", 0),
            ev(60 * MS, Step::Queued, "b", 2),
            ev(100 * MS, Step::Exit, "h", 1),
            ev(110 * MS, Step::Enter, first, 2),
            ev(120 * MS, Step::Exit, first, 2),
            ev(121 * MS, Step::Quit, first, 0),
            ev(130 * MS, Step::Enter, second, 3),
            ev(140 * MS, Step::Exit, second, 3),
            ev(141 * MS, Step::Quit, second, 0),
        ]
    }

    #[test]
    fn waiters_served_in_order_pass() {
        let f = check(&two_waiters("a", "b"), &[]);
        assert_eq!((f.waits, f.seen_in_line, f.overtakings, f.overtakings_excused), (2, 2, 0, 0), "{f:?}");
        assert_eq!(f.place_after_start_us, Some((10 * MS, 10 * MS)));
    }

    #[test]
    fn a_later_waiter_served_first_is_an_overtaking() {
        let f = check(&two_waiters("b", "a"), &[]);
        assert_eq!((f.overtakings, f.overtakings_excused), (1, 0), "{f:?}");
        assert_eq!(f.overtaken, BTreeMap::from([("a".to_owned(), 1)]));
        assert!(
            f.examples[0]
                .contains("b (exclusive; no place before 50000 µs) entered at 110000 µs with token 2, overtaking a"),
            "{f:?}"
        );
    }

    #[test]
    fn a_fault_that_may_have_cost_the_place_excuses_it() {
        let fault = |kind, client: Option<&str>, from_us, to_us| Fault {
            kind,
            client: client.map(str::to_owned),
            from_us,
            to_us,
            freezes_section: false,
            lock: None,
        };
        let h = two_waiters("b", "a");
        for excuse in [
            fault(FaultKind::ContenderFreeze, Some("a"), 20 * MS, 80 * MS),
            fault(FaultKind::ElectorRestart, None, 70 * MS, 90 * MS),
        ] {
            let f = check(&h, std::slice::from_ref(&excuse));
            assert_eq!((f.overtakings, f.overtakings_excused), (0, 1), "{excuse:?}: {f:?}");
        }
        // Aimed at someone else, or over before a waited, or after b entered.
        for no_excuse in [
            fault(FaultKind::ContenderFreeze, Some("c"), 20 * MS, 80 * MS),
            fault(FaultKind::ElectorRestart, None, 200 * MS, 300 * MS),
        ] {
            assert_eq!(check(&h, std::slice::from_ref(&no_excuse)).overtakings, 1, "{no_excuse:?}");
        }
    }

    #[test]
    fn an_entry_in_flight_from_a_killed_process_or_the_run_s_end_excuses_it() {
        // b's process, handed the lock, is killed at 100 ms; the next one
        // starts at 102 ms; the killed one's command's entry lands at 103.
        let h = [
            ev(0, Step::Wait, "a", 0),
            ev(10 * MS, Step::Queued, "a", 1),
            ev(101 * MS, Step::Quit, "b", 0),
            ev(102 * MS, Step::Wait, "b", 0),
            ev(103 * MS, Step::Enter, "b", 2),
            ev(130 * MS, Step::Enter, "a", 3),
        ];
        assert_eq!(check(&h, &[]).overtakings, 1);
        let at = |kind, client: Option<&str>, from_us| Fault {
            kind,
            client: client.map(Into::into),
            from_us,
            to_us: from_us,
            freezes_section: false,
            lock: None,
        };
        let f = check(&h, &[at(FaultKind::ContenderKill, Some("b"), 100 * MS)]);
        assert_eq!((f.overtakings, f.overtakings_excused), (0, 1), "{f:?}");
        // Killed only after its entry, or someone else killed: no excuse.
        assert_eq!(check(&h, &[at(FaultKind::ContenderKill, Some("b"), 104 * MS)]).overtakings, 1);
        assert_eq!(check(&h, &[at(FaultKind::ContenderKill, Some("c"), 100 * MS)]).overtakings, 1);
        // The run ending (every contender killed) excuses it too.
        let end = Fault { to_us: u64::MAX, ..at(FaultKind::RunEnd, None, 102 * MS) };
        assert_eq!(check(&h, &[end]).overtakings, 0);
    }

    #[test]
    fn a_place_seen_under_two_tickets_was_lost_and_excuses_it() {
        let mut h = two_waiters("b", "a");
        h.insert(5, ev(70 * MS, Step::Queued, "a", 3));
        let f = check(&h, &[]);
        assert_eq!((f.overtakings, f.overtakings_excused, f.places_lost, f.places_lost_unexplained), (0, 1, 1, 1));
    }

    #[test]
    fn a_waiter_never_seen_in_line_came_first_only_by_the_margin() {
        // Racers: no place, only the starts. b starts within the margin of
        // a's start: either may have reached the elector first.
        let race = |b_starts| {
            vec![
                ev(0, Step::Wait, "a", 0),
                ev(b_starts, Step::Wait, "b", 0),
                ev(START_MARGIN_US + 100 * MS, Step::Enter, "b", 1),
                ev(START_MARGIN_US + 110 * MS, Step::Quit, "b", 0),
                ev(START_MARGIN_US + 200 * MS, Step::Enter, "a", 2),
            ]
        };
        assert_eq!(check(&race(START_MARGIN_US / 2), &[]).overtakings, 0);
        let f = check(&race(START_MARGIN_US + MS), &[]);
        assert_eq!(f.overtakings, 1, "{f:?}");
        assert!(f.examples[0].contains("never seen in line"), "{f:?}");
    }

    #[test]
    fn a_wasm_waiter_is_known_by_its_place_and_a_waiter_that_gave_up_is_not_overtaken() {
        // wasm-0 reports its exit at 5 ms, is seen in line at 10 ms, enters
        // at 300 ms; lock-0 starts at 50 ms and enters at 100 ms.
        let mut h = vec![
            ev(0, Step::Enter, "wasm-0", 1),
            ev(5 * MS, Step::Exit, "wasm-0", 1),
            ev(10 * MS, Step::Queued, "wasm-0", 1),
            ev(50 * MS, Step::Wait, "lock-0", 0),
            ev(100 * MS, Step::Enter, "lock-0", 2),
            ev(200 * MS, Step::Quit, "lock-0", 0),
            ev(300 * MS, Step::Enter, "wasm-0", 3),
        ];
        let f = check(&h, &[]);
        assert_eq!((f.waits, f.overtakings), (2, 1), "{f:?}");
        // lock-0 waits from 0 (in line by 5 ms) but gives up at 90 ms,
        // before wasm-0, which came later, enters at 100 ms.
        h = vec![
            ev(0, Step::Wait, "lock-0", 0),
            ev(5 * MS, Step::Queued, "lock-0", 1),
            ev(50 * MS, Step::Exit, "wasm-0", 1),
            ev(60 * MS, Step::Queued, "wasm-0", 2),
            ev(90 * MS, Step::Quit, "lock-0", 0),
            ev(100 * MS, Step::Enter, "wasm-0", 2),
        ];
        let f = check(&h, &[]);
        assert_eq!((f.waits, f.overtakings), (2, 0), "{f:?}");
    }

    #[test]
    fn a_waiter_granted_first_may_report_its_entry_last() {
        let shared = |mut h: Vec<Event>| {
            for e in h.iter_mut().filter(|e| e.client != "h") {
                e.hold = Hold::Shared;
            }
            h
        };
        // Readers: a was granted first (token 2), b next (token 3), and b
        // reported its entry first.
        let mut h = shared(two_waiters("b", "a"));
        for e in &mut h {
            e.token = match (e.client.as_str(), e.step) {
                ("a", Step::Enter | Step::Exit) => 2,
                ("b", Step::Enter | Step::Exit) => 3,
                _ => e.token,
            };
        }
        assert_eq!(check(&h, &[]).overtakings, 0);
        // Granted after b: overtaken, shared or not.
        assert_eq!(check(&shared(two_waiters("b", "a")), &[]).overtakings, 1);
        // Unless the watcher saw the lock handed to a before b entered (a
        // then lost that grant, and came back with a later one).
        let mut regranted = shared(two_waiters("b", "a"));
        regranted.insert(6, Event { at_us: 105 * MS, hold: Hold::Shared, ..ev(0, Step::Handed, "a", 1) });
        assert_eq!(check(&regranted, &[]).overtakings, 0);
        // a never entered, and was seen handed the lock only after b
        // entered (or not at all): overtaken; before: not.
        let mut gave_up: Vec<Event> = two_waiters("b", "a")
            .into_iter()
            .filter(|e| !(e.client == "a" && e.step != Step::Wait && e.at_us > 100 * MS))
            .collect();
        gave_up.push(ev(200 * MS, Step::Quit, "a", 0));
        assert_eq!(check(&gave_up, &[]).overtakings, 1);
        let handed = Event { at_us: 105 * MS, ..ev(0, Step::Handed, "a", 1) };
        gave_up.insert(6, handed);
        assert_eq!(check(&gave_up, &[]).overtakings, 0);
    }

    #[test]
    fn a_place_seen_gone_before_the_entry_excuses_it_and_after_it_does_not() {
        let left = |since_us| Event { since_us: Some(since_us), ..ev(105 * MS, Step::Left, "a", 1) };
        // a's place went between 70 ms (last seen) and 105 ms; b entered at 110.
        let mut h = two_waiters("b", "a");
        h.insert(6, left(70 * MS));
        let f = check(&h, &[]);
        assert_eq!((f.overtakings, f.overtakings_excused, f.places_lost), (0, 1, 1), "{f:?}");
        // Seen still there after b entered: it was overtaken in line.
        let mut h = two_waiters("b", "a");
        let mut late = left(115 * MS);
        late.at_us = 125 * MS;
        h.insert(8, late);
        let f = check(&h, &[]);
        assert_eq!((f.overtakings, f.overtakings_excused), (1, 0), "{f:?}");
    }
}
