//! What a run did and found, as data and as text.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::check::{Findings, Section};
use crate::electors::SessionFigures;
use crate::fault::{Fault, FaultKind};
use crate::fence::{Event, Hold, Step};
use crate::store::StoreKind;

/// The clock fault of a run, and what became of the skewed holder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClockReport {
    /// The skewed contender's client id.
    pub client: String,
    /// The rate asked for.
    pub rate: f64,
    /// The rate measured on a Rust process before the run.
    pub measured: f64,
    /// Its critical sections.
    pub sections: usize,
    /// Those it was inside when a partition cut it off from its elector.
    pub partitioned: usize,
    /// Overlaps of its sections with a later holder's that nothing excuses.
    pub violating: usize,
}

/// How soon a killed holder's lock went to someone else, for one kind of
/// kill: at once when the lease was released (by `mpsync` when its command
/// died, or by the elector when the holder's session closed), a TTL later
/// when it had to run out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Successors {
    /// The kill.
    pub kind: FaultKind,
    /// Kills of a contender inside a section that a successor followed.
    pub count: usize,
    /// From the kill to the successor's entry: the median...
    pub p50_ms: f64,
    /// ...and the longest.
    pub max_ms: f64,
}

/// For each kind of kill, how soon another contender entered a section on
/// the lock the killed one was inside.
pub fn successors(events: &[Event], faults: &[Fault]) -> Vec<Successors> {
    let mut by_kind: BTreeMap<FaultKind, Vec<f64>> = BTreeMap::new();
    for f in faults {
        let (Some(lock), Some(client)) = (&f.lock, &f.client) else { continue };
        let next = events
            .iter()
            .find(|e| e.step == Step::Enter && e.at_us >= f.from_us && &e.lock == lock && &e.client != client);
        if let Some(e) = next {
            by_kind.entry(f.kind).or_default().push((e.at_us - f.from_us) as f64 / 1000.0);
        }
    }
    by_kind
        .into_iter()
        .map(|(kind, mut ms)| {
            ms.sort_by(f64::total_cmp);
            Successors { kind, count: ms.len(), p50_ms: ms[ms.len() / 2], max_ms: ms[ms.len() - 1] }
        })
        .collect()
}

/// A lock held shared in a run (a semaphore, or a read-write lock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedLock {
    /// The lock.
    pub lock: String,
    /// A semaphore's permits (none: a read-write lock).
    pub permits: Option<u32>,
    /// Sections with a shared hold (readers, or permits).
    pub shared: usize,
    /// Sections with the exclusive hold (writers).
    pub exclusive: usize,
    /// The most sections inside at once (from entry to last report).
    pub most_at_once: usize,
}

/// The locks held shared, from the sections of a run.
pub fn shared_locks(sections: &[Section]) -> Vec<SharedLock> {
    let mut by_lock: BTreeMap<&str, Vec<&Section>> = BTreeMap::new();
    for s in sections {
        by_lock.entry(&s.lock).or_default().push(s);
    }
    by_lock
        .into_iter()
        .filter(|(_, list)| list.iter().any(|s| !s.hold.is_exclusive()))
        .map(|(lock, list)| {
            // Ends before entries at the same instant.
            let mut edges: Vec<(u64, i64)> = list.iter().flat_map(|s| [(s.enter_us, 1), (s.end_us, -1)]).collect();
            edges.sort_unstable();
            let (mut inside, mut most) = (0i64, 0i64);
            for (_, d) in edges {
                inside += d;
                most = most.max(inside);
            }
            let permits = list.iter().find_map(|s| match s.hold {
                Hold::Permit { of, .. } => Some(of),
                _ => None,
            });
            SharedLock {
                lock: lock.to_owned(),
                permits,
                shared: list.iter().filter(|s| !s.hold.is_exclusive()).count(),
                exclusive: list.iter().filter(|s| s.hold.is_exclusive()).count(),
                most_at_once: usize::try_from(most).unwrap_or(0),
            }
        })
        .collect()
}

/// What a run did and found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The store.
    pub store: StoreKind,
    /// The seed (repeat the run with `--seed`).
    pub seed: u64,
    /// How long it ran, in seconds.
    pub seconds: f64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<FaultKind, usize>,
    /// What the checker found.
    pub findings: Findings,
    /// The clock fault, if the run had one.
    pub clock: Option<ClockReport>,
    /// Whether the contenders held their leases without sessions.
    #[serde(default)]
    pub no_session: bool,
    /// What the electors said about sessions.
    #[serde(default)]
    pub sessions: SessionFigures,
    /// How the watch observer's watches went.
    #[serde(default)]
    pub watch_rounds: crate::observer::Rounds,
    /// How soon killed holders' locks went to someone else.
    #[serde(default)]
    pub successors: Vec<Successors>,
    /// The semaphores and read-write locks, and how many held them at once.
    #[serde(default)]
    pub shared_locks: Vec<SharedLock>,
    /// The lease TTL, to read those by.
    #[serde(default)]
    pub ttl_ms: u64,
    /// The electors' output.
    pub elector_log: PathBuf,
}

impl Report {
    /// No violation of any kind.
    pub fn safe(&self) -> bool {
        self.findings.safe()
    }

    /// The report as text, a line per figure.
    pub fn text(&self) -> String {
        let f = &self.findings;
        let faults: Vec<String> = self.faults.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let mut out = format!(
            "store {}, seed {}, {:.1} s\n\
             critical sections {} (hand-overs {}, {:.0}/s), killed inside {}, writes accepted {}\n\
             faults: {}\n\
             overlapping sections: {} fenced (a frozen holder woke up late, or a killed one's last write arrived late), {} violating\n\
             stale writes: {} refused by the resource, {} accepted\n\
             legitimate writes refused {}, token regressions {}\n\
             stranger: {} attempts to renew or release a lease it did not hold, {} accepted\n",
            self.store.name(),
            self.seed,
            self.seconds,
            f.sections,
            f.handovers,
            f.handovers as f64 / self.seconds.max(0.001),
            f.killed_inside,
            f.writes_accepted,
            if faults.is_empty() { "none".into() } else { faults.join(", ") },
            f.overlaps_fenced,
            f.overlaps_violating,
            f.stale_refused,
            f.stale_accepted,
            f.legitimate_refused,
            f.token_regressions,
            f.stranger_attempts,
            f.stranger_accepted,
        );
        for l in &self.shared_locks {
            out.push_str(&match l.permits {
                Some(n) => format!(
                    "semaphore {} ({n} permits): {} sections, at most {} inside at once, {} permits out of range\n",
                    l.lock, l.shared, l.most_at_once, f.permits_out_of_range
                ),
                None => format!(
                    "read-write lock {}: {} reader and {} writer sections, at most {} inside at once \
                     (a reader beside a writer is an overlap above)\n",
                    l.lock, l.shared, l.exclusive, l.most_at_once
                ),
            });
        }
        let w = &f.fairness;
        out.push_str(&format!(
            "fairness: {} waits, {} seen in line; overtaken by a later waiter: {} excused by a fault or a lost place, \
             {} unexcused\n",
            w.waits, w.seen_in_line, w.overtakings_excused, w.overtakings
        ));
        if let Some((p50, max)) = w.place_after_start_us {
            out.push_str(&format!(
                "places in line: seen {} ms (median), {} ms at most after the start of mpsync lock; \
                 {} lost ({} with no fault to explain)\n",
                p50 / 1000,
                max / 1000,
                w.places_lost,
                w.places_lost_unexplained
            ));
        }
        let v = &f.watch;
        let settled = match (v.settled_after, v.unsettled) {
            (Some(n), _) => format!("agreed with plain reads after {n} watch rounds"),
            (None, 0) => "not compared with plain reads".to_owned(),
            (None, n) => format!("{n} locks still disagreeing with plain reads"),
        };
        out.push_str(&format!(
            "watch: {} views of {} locks ({} held) from {} electors; grants shown: {} entered by their holder, \
             {} never entered, {} a restarted elector's placeholder; {} tokens gone back, {} phantom holders; \
             at the end, {settled}\n",
            v.views, v.names, v.held, v.electors, v.proven, v.unproven, v.recovering, v.regressions, v.phantoms
        ));
        out.push_str(&format!(
            "watch: {} watches resumed the set an elector keeps, {} resumed one it does not (another elector's: \
             410, then the whole set), {} sent the whole set\n",
            self.watch_rounds.resumed, self.watch_rounds.gone, self.watch_rounds.whole
        ));
        out.push_str(&format!(
            "history: {} changes of holder in the electors' histories, {} tokens gone back\n",
            v.history_changes, v.history_regressions
        ));
        let t = &f.transfers;
        if t.terms > 0 || t.asked > 0 {
            let refused: Vec<String> = t.refused.iter().map(|(why, n)| format!("{n} {why}")).collect();
            out.push_str(&format!(
                "election: {} terms; transfers: {} asked, {} accepted, refused {}, {} unanswered; \
                 the next term the target's {}, another's {} (nothing proves it wrong), {} with no term after; \
                 {} broke the reservation; {} asked from a candidate not leading, {} of them accepted wrongly\n",
                t.terms,
                t.asked,
                t.accepted,
                if refused.is_empty() { "none".to_owned() } else { refused.join(", ") },
                t.unanswered,
                t.honoured,
                t.not_honoured,
                t.unjudged,
                t.reservation_broken,
                t.wrong_from,
                t.wrong_from_accepted
            ));
        }
        let h = &f.history;
        out.push_str(&format!(
            "history: {} of them to a holder: {} entered with their token, {} shown by a plain read, {} unproven, \
             {} a restarted elector's placeholder, {} phantoms\n",
            h.to_holder, h.entered, h.read, h.unproven, h.recovering, h.phantoms
        ));
        if v.revived > 0 {
            out.push_str(&format!(
                "watch: {} views showed a grant held again after one showed it ended ({} after another elector \
                 did: electors judge a lease's end apart)\n",
                v.revived, v.revived_across
            ));
        }
        let s = &self.sessions;
        if self.no_session {
            out.push_str("sessions: off (the contenders ran with MPSYNC_NO_SESSION)\n");
        } else {
            out.push_str(&format!(
                "sessions: up to {} open at once, {} leases released by the holder's close of its session\n",
                s.most_open, s.releases
            ));
        }
        for k in &self.successors {
            out.push_str(&format!(
                "after a {} inside a section: the next holder entered in {:.0} ms (median), {:.0} ms at most, \
                 over {} (TTL {} ms)\n",
                k.kind, k.p50_ms, k.max_ms, k.count, self.ttl_ms
            ));
        }
        if let Some(c) = &self.clock {
            out.push_str(&format!(
                "clock: {} at x{} (measured x{:.3}): {} sections, {} cut off from its elector, {} violating\n",
                c.client, c.rate, c.measured, c.sections, c.partitioned, c.violating
            ));
        }
        out.push_str(&format!(
            "verdict: {}\nelector logs: {}\n",
            if self.safe() { "SAFE" } else { "UNSAFE" },
            self.elector_log.display()
        ));
        for e in &f.examples {
            out.push_str(&format!("  violation: {e}\n"));
        }
        out
    }
}
