//! The checks of the watch observer's views ([`crate::observer`]), from
//! the history alone:
//!
//! 1. **Tokens never go back**: on each lock, a held view the observer
//!    accepted never shows a smaller token than an earlier held view whose
//!    hold excludes its own ([`Hold::excludes`]). A watch must never show
//!    an older holder after a newer one. (Readers, or two permits, may:
//!    the elector shows the newest shared hold, and once it ends, an older
//!    one still held.)
//! 2. **No phantom holder**: each held view names a holder that was
//!    granted that lock with that token. The elector's grants are not in
//!    the history, but what the contenders did is: a view is *proven* when
//!    its holder entered a section on that lock with that token. It is a
//!    **phantom** when another contender entered with that token (every
//!    grant of a name takes the next token of one counter), when its
//!    holder is no contender of the run at all, or when its holder is one
//!    whose waits the run marks ([`Step::Wait`]) and it had not started
//!    waiting for that lock by the time of the view. Otherwise it is
//!    *unproven*: a grant its holder never entered with (killed or frozen
//!    before its section began, the grant's answer lost to a fault, a
//!    place in line its waiter had given up for a new one handed the lock,
//!    or the run's end), counted, not a violation. A restarted memory
//!    elector shows [`RECOVERING_HOLDER`] on every name while it waits out
//!    the leases its previous process may have granted: counted apart.
//! 3. **Liveness**: once the faults are over and the contenders stopped,
//!    the observer's last view of each lock agrees with a plain read (same
//!    holder and token, or both free) within [`SETTLE_ROUNDS`] watch
//!    rounds ([`Step::Settle`], [`Step::Read`]).
//!
//! 4. **Histories only grow**: in each elector's history of changes of
//!    holder read at the end ([`Step::History`]), a lock's token never
//!    goes back from one change to the next (a release keeps it).
//!
//! Not a violation, but counted: views that show a grant held **again**
//! after a view showed it ended (free). A holder may renew a lease that ran
//! out while nobody took it; and two electors judge a lease's end apart,
//! each by its own clock from when it saw the record (one restarted since
//! waits a whole TTL), while every write to the record (a waiter's refresh
//! of its place) raises the version both answer with, so a watch sent to
//! each in turn may accept "ended" from one and "held" from the other, one
//! after the other, until both agree.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::fence::{Event, Hold, Step};
pub use crate::observer::SETTLE_ROUNDS;

/// The holder a restarted memory elector shows on every name while it
/// waits out the leases its previous process may have granted: the
/// elector's `store::memory::RECOVERING_HOLDER`, which this crate does not
/// link.
pub const RECOVERING_HOLDER: &str = "(unknown: held before the elector restarted)";

/// What the checks of the watch observer's views found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchFindings {
    /// Views the observer accepted.
    pub views: usize,
    /// Of those, views of a held lock.
    pub held: usize,
    /// Locks they were of.
    pub names: usize,
    /// Electors whose answers it accepted views from.
    pub electors: usize,
    /// Grants the held views showed (lock, holder and token, however many
    /// views showed each) whose holder entered a section with that token.
    pub proven: usize,
    /// Grants they showed that nobody entered a section with (see the
    /// module's documentation).
    pub unproven: usize,
    /// Grants they showed to [`RECOVERING_HOLDER`].
    pub recovering: usize,
    /// Held views of a grant an earlier view had shown ended.
    pub revived: usize,
    /// Of those, the ones where another elector had shown it ended.
    pub revived_across: usize,
    /// Held views with a smaller token than an earlier one they exclude:
    /// must be 0.
    pub regressions: usize,
    /// Held views of a holder that never had that token: must be 0.
    pub phantoms: usize,
    /// Watch rounds until the views agreed with plain reads at the end
    /// (none: the history has no reads at the end).
    pub settled_after: Option<u64>,
    /// Locks whose last view still disagreed with a plain read after the
    /// last round: must be 0.
    pub unsettled: usize,
    /// Changes of holder read from the electors' histories at the end.
    #[serde(default)]
    pub history_changes: usize,
    /// Of those, changes with a smaller token than the one before it in the
    /// same elector's history of that lock: must be 0.
    #[serde(default)]
    pub history_regressions: usize,
    /// The first few violations, described.
    pub examples: Vec<String>,
}

impl WatchFindings {
    /// No violation.
    pub fn safe(&self) -> bool {
        self.regressions == 0 && self.phantoms == 0 && self.unsettled == 0 && self.history_regressions == 0
    }

    fn example(&mut self, text: String) {
        if self.examples.len() < 10 {
            self.examples.push(text);
        }
    }
}

/// A view's holder and token (none: free).
type Shown<'a> = Option<(&'a str, u64)>;

fn shown(e: &Event) -> Shown<'_> {
    e.holder.as_deref().map(|holder| (holder, e.token))
}

/// Checks the observer's records in `events`.
pub fn check(events: &[Event]) -> WatchFindings {
    let mut f = WatchFindings::default();
    let watched: Vec<&Event> = events.iter().filter(|e| e.step == Step::Watched).collect();
    f.views = watched.len();
    f.names = watched.iter().map(|e| e.lock.as_str()).collect::<BTreeSet<_>>().len();
    f.electors = watched.iter().filter_map(|e| e.elector.as_deref()).collect::<BTreeSet<_>>().len();
    regressions(&watched, &mut f);
    revivals(&watched, &mut f);
    phantoms(events, &watched, &mut f);
    settle(events, &mut f);
    histories(events, &mut f);
    f
}

/// Check 4: per elector and lock, the token of each change of holder at
/// least the one before (they are recorded oldest first).
fn histories(events: &[Event], f: &mut WatchFindings) {
    let mut last: HashMap<(&str, &str), (u64, u64)> = HashMap::new();
    for e in events.iter().filter(|e| e.step == Step::History) {
        f.history_changes += 1;
        let seq = e.version.unwrap_or(0);
        let key = (e.elector.as_deref().unwrap_or(""), e.lock.as_str());
        if let Some((token, before)) = last.insert(key, (e.token, seq))
            && e.token < token
        {
            f.history_regressions += 1;
            f.example(format!(
                "{}: {}'s history has token {} (change {seq}) after token {token} (change {before})",
                e.lock, key.0, e.token
            ));
        }
    }
}

/// Check 1: the largest token seen so far per lock and hold.
fn regressions(watched: &[&Event], f: &mut WatchFindings) {
    let mut most: BTreeMap<&str, HashMap<Hold, (u64, &str)>> = BTreeMap::new();
    for e in watched.iter().filter(|e| e.holder.is_some()) {
        f.held += 1;
        let seen = most.entry(&e.lock).or_default();
        let newer = seen.iter().find(|(hold, (token, _))| hold.excludes(e.hold) && *token > e.token);
        if let Some((_, (token, holder))) = newer {
            f.regressions += 1;
            f.example(format!(
                "{}: the watch showed {} with token {} at {} µs after {holder} with token {token}",
                e.lock,
                e.holder.as_deref().unwrap_or("?"),
                e.token,
                e.at_us
            ));
        }
        let slot = seen.entry(e.hold).or_insert((0, ""));
        if e.token >= slot.0 {
            *slot = (e.token, e.holder.as_deref().unwrap_or(""));
        }
    }
}

/// Grants shown held again after a view showed them ended.
fn revivals(watched: &[&Event], f: &mut WatchFindings) {
    // Per lock: the last grant shown held, and the elector that showed it
    // ended since, if one did.
    let mut last: HashMap<&str, (Shown<'_>, Option<&str>)> = HashMap::new();
    for e in watched {
        let entry = last.entry(&e.lock).or_insert((None, None));
        match shown(e) {
            Some(grant) => {
                if let (Some(before), Some(ended_by)) = entry
                    && *before == grant
                {
                    f.revived += 1;
                    f.revived_across += usize::from(Some(*ended_by) != e.elector.as_deref());
                }
                *entry = (Some(grant), None);
            }
            None => entry.1 = Some(e.elector.as_deref().unwrap_or("")),
        }
    }
}

/// Check 2: each held view against the sections and waits of the history.
fn phantoms(events: &[Event], watched: &[&Event], f: &mut WatchFindings) {
    // Who entered each lock with each token.
    let mut entered: HashMap<(&str, u64), BTreeSet<&str>> = HashMap::new();
    // The contenders of the run; those whose waits are marked, and when
    // each first started waiting for each lock.
    let mut contenders: BTreeSet<&str> = BTreeSet::new();
    let mut marked: BTreeSet<&str> = BTreeSet::new();
    let mut first_wait: HashMap<(&str, &str), u64> = HashMap::new();
    for e in events {
        match e.step {
            Step::Enter => {
                entered.entry((&e.lock, e.token)).or_default().insert(&e.client);
                contenders.insert(&e.client);
            }
            Step::Wait => {
                contenders.insert(&e.client);
                marked.insert(&e.client);
                first_wait.entry((&e.client, &e.lock)).or_insert(e.at_us);
            }
            _ => {}
        }
    }
    // Grants, by what became of them; each view of a phantom counts.
    let (mut proven, mut unproven, mut recovering) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for e in watched {
        let Some((holder, token)) = shown(e) else { continue };
        let grant = (e.lock.as_str(), holder, token);
        if holder == RECOVERING_HOLDER {
            recovering.insert(grant);
            continue;
        }
        let by = entered.get(&(e.lock.as_str(), token));
        let why = if by.is_some_and(|by| by.contains(holder)) {
            proven.insert(grant);
            continue;
        } else if let Some(by) = by {
            let others: Vec<&str> = by.iter().copied().collect();
            format!("token {token} was entered with by {}", others.join(", "))
        } else if !contenders.contains(holder) {
            "no contender of the run has that id".to_owned()
        } else if marked.contains(holder) && first_wait.get(&(holder, e.lock.as_str())).is_none_or(|w| *w > e.at_us) {
            format!("{holder} had not started waiting for {} by then", e.lock)
        } else {
            unproven.insert(grant);
            continue;
        };
        f.phantoms += 1;
        f.example(format!("{}: the watch showed {holder} with token {token} at {} µs, but {why}", e.lock, e.at_us));
    }
    (f.proven, f.unproven, f.recovering) = (proven.len(), unproven.len(), recovering.len());
}

/// Check 3: the rounds of reads at the end against the last views.
fn settle(events: &[Event], f: &mut WatchFindings) {
    let mut last: BTreeMap<&str, Shown<'_>> = BTreeMap::new();
    // Each round: its number, how many reads, and those that disagreed.
    let mut rounds: Vec<(u64, usize, Vec<String>)> = Vec::new();
    let describe = |s: Option<Shown<'_>>| match s {
        None => "no answer".to_owned(),
        Some(None) => "free".to_owned(),
        Some(Some((holder, token))) => format!("{holder} with token {token}"),
    };
    for e in events {
        match e.step {
            Step::Watched => {
                last.insert(&e.lock, shown(e));
            }
            Step::Settle => rounds.push((e.token, 0, Vec::new())),
            Step::Read => {
                let Some((_, reads, disagreeing)) = rounds.last_mut() else { continue };
                *reads += 1;
                let (view, read) = (last.get(e.lock.as_str()).copied().flatten(), e.accepted.then(|| shown(e)));
                if read != Some(view) {
                    let (view, read) = (describe(Some(view)), describe(read));
                    disagreeing.push(format!("{}: the watch last showed {view}, a plain read {read}", e.lock));
                }
            }
            _ => {}
        }
    }
    let Some((_, _, at_the_end)) = rounds.last() else { return };
    let agreed = rounds.iter().find(|(_, reads, disagreeing)| *reads > 0 && disagreeing.is_empty());
    match agreed {
        Some((n, _, _)) if *n <= SETTLE_ROUNDS => f.settled_after = Some(*n),
        _ => {
            f.unsettled = at_the_end.len().max(1);
            let at_the_end = at_the_end.clone();
            if at_the_end.is_empty() {
                f.example(format!("after the run: no plain read agreed with the views within {SETTLE_ROUNDS} rounds"));
            }
            for text in at_the_end {
                f.example(format!("after the run, {} rounds: {text}", rounds.len() - 1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fence::OBSERVER;

    fn event(at_us: u64, step: Step, lock: &str, client: &str, token: u64) -> Event {
        Event { at_us, ..Event::new(step, lock, client, token, true) }
    }

    /// A view the observer accepted (`holder` none: free).
    fn view(at_us: u64, lock: &str, holder: Option<&str>, token: u64, hold: Hold) -> Event {
        Event {
            holder: holder.map(Into::into),
            hold,
            version: Some(at_us),
            elector: Some("e0".into()),
            ..event(at_us, Step::Watched, lock, OBSERVER, token)
        }
    }

    fn held(at_us: u64, holder: &str, token: u64) -> Event {
        view(at_us, "l", Some(holder), token, Hold::Exclusive)
    }

    fn enter(at_us: u64, client: &str, token: u64) -> Event {
        event(at_us, Step::Enter, "l", client, token)
    }

    #[test]
    fn an_exclusive_token_going_back_is_a_regression_and_readers_may() {
        let h = [enter(1, "a", 1), enter(2, "b", 2), held(3, "a", 1), held(4, "b", 2), held(5, "a", 1)];
        let f = check(&h);
        assert_eq!((f.views, f.held, f.names, f.electors, f.regressions, f.proven), (3, 3, 1, 1, 1, 2), "{f:?}");
        assert!(!f.safe() && f.examples[0].contains("showed a with token 1 at 5 µs after b with token 2"), "{f:?}");
        // The newest reader ended; an older one still reads: no regression.
        let r = Hold::Shared;
        let readers = [view(1, "l", Some("r1"), 1, r), view(2, "l", Some("r2"), 2, r), view(3, "l", Some("r1"), 1, r)];
        assert_eq!(check(&readers).regressions, 0);
        // But a writer older than a reader seen before is.
        let mut writer = readers.to_vec();
        writer.push(held(4, "w", 1));
        assert_eq!(check(&writer).regressions, 1);
        // Permits: another permit may go back, the same one may not.
        let p = |permit| Hold::Permit { permit, of: 2 };
        let permits = [view(1, "s", Some("a"), 5, p(0)), view(2, "s", Some("b"), 4, p(1))];
        assert_eq!(check(&permits).regressions, 0);
        let same = [view(1, "s", Some("a"), 5, p(0)), view(2, "s", Some("b"), 4, p(0))];
        assert_eq!(check(&same).regressions, 1);
        // A free view in between changes nothing.
        let freed = [held(1, "b", 2), view(2, "l", None, 0, Hold::Exclusive), held(3, "a", 1)];
        assert_eq!(check(&freed).regressions, 1);
    }

    #[test]
    fn a_token_going_back_in_an_elector_s_history_is_a_regression() {
        let change = |seq, elector: &str, holder: Option<&str>, token| {
            let mut e = event(seq, Step::History, "l", "observer", token);
            (e.holder, e.version, e.elector) = (holder.map(str::to_owned), Some(seq), Some(elector.to_owned()));
            e
        };
        // A release keeps the token; another elector's history is its own.
        let fine = [change(1, "x", Some("a"), 3), change(2, "x", None, 3), change(3, "x", Some("b"), 4)];
        let other = [change(1, "y", Some("b"), 4), change(2, "x", Some("a"), 3)];
        for h in [&fine[..], &other[..]] {
            let f = check(h);
            assert_eq!((f.history_changes, f.history_regressions, f.safe()), (h.len(), 0, true), "{f:?}");
        }
        let back = [change(1, "x", Some("b"), 4), change(2, "x", Some("a"), 3)];
        let f = check(&back);
        assert_eq!(f.history_regressions, 1);
        assert!(!f.safe() && f.examples[0].contains("x's history has token 3 (change 2) after token 4"), "{f:?}");
    }

    #[test]
    fn a_holder_must_have_entered_or_at_least_waited_for_that_token() {
        let wait = |at_us, client: &str, lock: &str| event(at_us, Step::Wait, lock, client, 0);
        let mut h = vec![wait(0, "a", "l"), enter(10, "a", 1), held(5, "a", 1)];
        let f = check(&h);
        assert_eq!((f.proven, f.unproven, f.phantoms), (1, 0, 0), "the view may come before the entry");
        // Another contender entered with that token.
        h.push(enter(20, "b", 2));
        h.push(held(21, "a", 2));
        let f = check(&h);
        assert_eq!(f.phantoms, 1, "{f:?}");
        assert!(f.examples[0].contains("token 2 was entered with by b"), "{f:?}");
        // Nobody entered with it: a grant its holder never entered with...
        let unentered = [wait(0, "a", "l"), enter(1, "a", 1), held(30, "a", 3)];
        assert_eq!((check(&unentered).unproven, check(&unentered).phantoms), (1, 0));
        // ...unless the holder is no contender, or had not started waiting.
        let nobody = [enter(1, "a", 1), held(30, "ghost", 3)];
        assert_eq!(check(&nobody).phantoms, 1);
        let early = [wait(0, "a", "other"), wait(40, "a", "l"), held(30, "a", 3)];
        assert_eq!(check(&early).phantoms, 1);
        // A contender whose waits are not marked (a wasm app) is not held
        // to them; a restarted elector's placeholder is counted apart.
        let wasm = [enter(1, "wasm-0", 1), held(30, "wasm-0", 3), held(31, RECOVERING_HOLDER, 65537)];
        let f = check(&wasm);
        assert_eq!((f.unproven, f.recovering, f.phantoms), (1, 1, 0), "{f:?}");
        assert!(f.safe());
    }

    #[test]
    fn a_grant_shown_held_again_after_it_ended_is_counted_by_who_said_so() {
        let on = |elector: &str, e: Event| Event { elector: Some(elector.into()), ..e };
        let free = |at_us| view(at_us, "l", None, 0, Hold::Exclusive);
        let h = [
            enter(0, "a", 1),
            enter(0, "b", 2),
            on("e0", held(1, "a", 1)),
            on("e1", free(2)),
            on("e0", held(3, "a", 1)),
            on("e0", free(4)),
            on("e0", held(5, "a", 1)),
            on("e0", held(6, "a", 1)),
            on("e1", free(7)),
            on("e0", held(8, "a", 1)),
            on("e0", free(9)),
            on("e0", held(10, "b", 2)),
        ];
        let f = check(&h);
        assert_eq!((f.revived, f.revived_across), (3, 2), "{f:?}");
        assert!(f.safe(), "not a violation");
    }

    #[test]
    fn the_views_must_agree_with_plain_reads_within_the_rounds() {
        let settle = |round| event(100 + round, Step::Settle, "", OBSERVER, round);
        let read = |at_us, holder: Option<&str>, token| Event {
            step: Step::Read,
            ..view(at_us, "l", holder, token, Hold::Exclusive)
        };
        let free = |at_us| view(at_us, "l", None, 0, Hold::Exclusive);
        // No rounds: not compared.
        let h = vec![enter(1, "a", 1), held(2, "a", 1)];
        assert_eq!((check(&h).settled_after, check(&h).unsettled), (None, 0));
        // Round 0: the watch still shows a; the read, free. One watch
        // later, both free.
        let mut h = h;
        h.extend([settle(0), read(101, None, 0), free(102), settle(1), read(103, None, 0)]);
        let f = check(&h);
        assert_eq!((f.settled_after, f.unsettled), (Some(1), 0), "{f:?}");
        // A watch that never showed the release.
        let stuck: Vec<Event> = h.iter().filter(|e| e.step != Step::Watched || e.holder.is_some()).cloned().collect();
        let f = check(&stuck);
        assert_eq!((f.settled_after, f.unsettled), (None, 1), "{f:?}");
        assert!(f.examples[0].contains("the watch last showed a with token 1, a plain read free"), "{f:?}");
        // A read that failed agrees with nothing.
        let mut failed = h[..2].to_vec();
        failed.extend([settle(0), Event { accepted: false, ..read(101, None, 0) }]);
        assert_eq!(check(&failed).unsettled, 1);
        // Agreement only past the bound is too late.
        let mut late = h[..2].to_vec();
        for round in 0..=SETTLE_ROUNDS {
            late.extend([settle(round), read(101 + round, None, 0)]);
        }
        late.extend([free(200), settle(SETTLE_ROUNDS + 1), read(201, None, 0)]);
        assert_eq!(check(&late).unsettled, 1);
    }
}
