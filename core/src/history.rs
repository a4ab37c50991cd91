//! The history of changes of holder an elector keeps: what it saw of each
//! name, the last few changes of each, and a ring of the latest changes
//! across names with a sequence number, for readers that follow it.
//!
//! The elector feeds [`History`] every record its store reports (a write, a
//! watch event, a listing); a change of (holder, token) is one [`Entry`].
//! Renewals, waiters joining and leaving, shared holds and version-only
//! changes are not: they move no exclusive holder. Records are compared by
//! version, so a report older than what was already seen of a name (a watch
//! event queued before a listing) changes nothing.
//!
//! What is kept is bounded: [`Limits::per_name`] entries per name,
//! [`Limits::names`] names with entries (the least recently changed lose
//! theirs; a name held now keeps its holder and token, so its next renewal
//! is still no change), and the last [`Limits::ring`] entries in the ring.
//! A name nobody holds and without entries is not kept at all: a name this
//! history does not know is free as far as it knows.
//!
//! Time: `now` (monotonic, for how long an election has been leaderless)
//! and `unix_ms` (the wall clock an entry is stamped with) are passed in.

use core::time::Duration;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::record::{Record, Why};
use crate::wire::Kind;

/// Whether a record whose holder and token were `before` and are now
/// `after` changed hands: another holder (or none, or one where there was
/// none), or the same holder with a new lease (another token: it let its
/// lease run out and claimed again). A renewal, or a change to the line of
/// waiters alone, is not one. (`(None, 0)` stands for no record.)
pub fn changed_hands(before: (Option<&str>, u64), after: (Option<&str>, u64)) -> bool {
    before.0 != after.0 || (after.0.is_some() && before.1 != after.1)
}

/// One change of holder of one name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its place in this elector's history: one more per change, across
    /// names, counted from the process's start time in microseconds (see
    /// [`History::starting_after`]).
    pub seq: u64,
    /// Lock or election.
    pub kind: Kind,
    /// The name.
    pub name: String,
    /// When this elector saw the change (RFC 3339, UTC, milliseconds).
    pub at: String,
    /// The holder before (`None`: nobody).
    pub from: Option<String>,
    /// The holder after (`None`: nobody).
    pub to: Option<String>,
    /// The fencing token after the change (kept by a release).
    pub token: u64,
    /// Elections: the new leader's address.
    pub address: Option<String>,
    /// Why, as the record says (`None`: the record does not say, for
    /// instance it vanished from the store).
    pub why: Option<Why>,
}

/// `GET /v1/history`: changes after a sequence number, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// The changes, oldest first.
    pub changes: Vec<Entry>,
    /// The `after` to ask with next.
    pub next: u64,
    /// Changes after the `after` asked are no longer kept (they left the
    /// ring, or came from before the elector restarted): read the
    /// current holders again; `changes` starts at the oldest kept.
    pub gap: bool,
}

/// `GET /v1/{locks,elections}/{name}/history`: one name's last changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameHistory {
    /// Lock or election.
    pub kind: Kind,
    /// The name.
    pub name: String,
    /// Its last changes this elector saw, oldest first.
    pub changes: Vec<Entry>,
}

/// How much a [`History`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries kept per name.
    pub per_name: usize,
    /// Names whose entries are kept.
    pub names: usize,
    /// Entries kept across names for readers that follow (`after=`).
    pub ring: usize,
    /// Elections tracked as leaderless at once (the longest leaderless are
    /// kept).
    pub leaderless: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { per_name: 32, names: 1000, ring: 4096, leaderless: 1000 }
    }
}

type Name = (Kind, String);

/// What is known of one name.
#[derive(Debug, Default)]
struct Known {
    holder: Option<String>,
    token: u64,
    version: u64,
    entries: VecDeque<Arc<Entry>>,
}

/// The history of changes of holder (see the module documentation).
#[derive(Debug)]
pub struct History {
    limits: Limits,
    names: HashMap<Name, Known>,
    /// Names with entries, by the seq of their last one.
    by_change: BTreeMap<u64, Name>,
    ring: VecDeque<Arc<Entry>>,
    last_seq: u64,
    /// The seq before this history's first entry.
    first_after: u64,
    /// Elections whose leader left and that have none yet, since when.
    leaderless: HashMap<String, Duration>,
}

impl History {
    /// An empty history whose first entry is seq 1.
    pub fn new(limits: Limits) -> Self {
        History::starting_after(limits, 0)
    }

    /// An empty history whose first entry is seq `last_seq + 1`. The
    /// elector starts its count at its start time in microseconds, so a
    /// reader's `after` from before a restart is below every seq of the
    /// new process (a gap) however many changes the new one has seen:
    /// the old one would have needed more than one change per
    /// microsecond of its life to count past it.
    pub fn starting_after(limits: Limits, last_seq: u64) -> Self {
        History {
            limits,
            names: HashMap::new(),
            by_change: BTreeMap::new(),
            ring: VecDeque::new(),
            last_seq,
            first_after: last_seq,
            leaderless: HashMap::new(),
        }
    }

    /// The record of `kind`/`name` at `version` is `record` (`None`: it is
    /// gone; `version` 0: unknown, taken as newest). Returns the entry if
    /// its holder changed.
    pub fn observe(
        &mut self,
        kind: Kind,
        name: &str,
        record: Option<&Record>,
        version: u64,
        now: Duration,
        unix_ms: u64,
    ) -> Option<Arc<Entry>> {
        let key = (kind, name.to_owned());
        let known = self.names.get(&key);
        if known.is_some_and(|k| version != 0 && version <= k.version) {
            return None;
        }
        let (holder, token) = match (record, known) {
            (Some(r), _) => (r.holder.as_deref(), r.token),
            (None, Some(k)) => (None, k.token),
            (None, None) => (None, 0),
        };
        let before = known.map_or((None, 0), |k| (k.holder.as_deref(), k.token));
        let changed = changed_hands(before, (holder, token));
        let entry = changed.then(|| {
            self.last_seq += 1;
            Arc::new(Entry {
                seq: self.last_seq,
                kind,
                name: name.to_owned(),
                at: rfc3339_ms(unix_ms),
                from: before.0.map(str::to_owned),
                to: holder.map(str::to_owned),
                token,
                address: record.and_then(|r| r.address.clone()),
                why: record.and_then(|r| r.why),
            })
        });
        let known = self.names.entry(key.clone()).or_default();
        (known.holder, known.token, known.version) = (holder.map(str::to_owned), token, version);
        if let Some(entry) = &entry {
            if let Some(last) = known.entries.back() {
                self.by_change.remove(&last.seq);
            }
            known.entries.push_back(entry.clone());
            if known.entries.len() > self.limits.per_name {
                known.entries.pop_front();
            }
            self.by_change.insert(entry.seq, key.clone());
            self.ring.push_back(entry.clone());
            if self.ring.len() > self.limits.ring {
                self.ring.pop_front();
            }
            if kind == Kind::Election {
                self.note_leader(name, holder.is_some(), now);
            }
        }
        if self.names.get(&key).is_some_and(|k| k.holder.is_none() && k.entries.is_empty()) {
            self.names.remove(&key);
        }
        while self.by_change.len() > self.limits.names {
            let Some((_, oldest)) = self.by_change.pop_first() else { break };
            if oldest.0 == Kind::Election {
                // Forgotten here, and so in the gauge: nothing would clear it.
                self.leaderless.remove(&oldest.1);
            }
            if let Some(known) = self.names.get_mut(&oldest) {
                known.entries.clear();
                if known.holder.is_none() {
                    self.names.remove(&oldest);
                }
            }
        }
        entry
    }

    /// Takes in a listing of every record (`listed`: kind, name, record,
    /// version). The first listing only learns who holds what; a later one
    /// (after changes may have been missed) records what changed since,
    /// names that are no longer listed included. Returns the entries.
    pub fn relist(
        &mut self,
        listed: Vec<(Kind, String, Record, u64)>,
        first: bool,
        now: Duration,
        unix_ms: u64,
    ) -> Vec<Arc<Entry>> {
        let mut entries = Vec::new();
        let mut seen = std::collections::HashSet::with_capacity(listed.len());
        for (kind, name, record, version) in listed {
            if first {
                if record.holder.is_some() {
                    let known = Known { holder: record.holder, token: record.token, version, ..Known::default() };
                    self.names.insert((kind, name.clone()), known);
                }
            } else {
                entries.extend(self.observe(kind, &name, Some(&record), version, now, unix_ms));
            }
            seen.insert((kind, name));
        }
        let gone: Vec<Name> = self.names.keys().filter(|k| !seen.contains(*k)).cloned().collect();
        for (kind, name) in gone {
            entries.extend(self.observe(kind, &name, None, 0, now, unix_ms));
        }
        entries
    }

    fn note_leader(&mut self, election: &str, led: bool, now: Duration) {
        if led {
            self.leaderless.remove(election);
            return;
        }
        if !self.leaderless.contains_key(election) && self.leaderless.len() >= self.limits.leaderless {
            // Full: the one leaderless longest (most likely retired on
            // purpose) makes room, so that a new outage always shows.
            let longest = self.leaderless.iter().min_by_key(|(_, since)| **since).map(|(name, _)| name.clone());
            if let Some(longest) = longest {
                self.leaderless.remove(&longest);
            }
        }
        self.leaderless.entry(election.to_owned()).or_insert(now);
    }

    /// Elections whose leader left and that have none yet, with how long
    /// they have been leaderless at `now`.
    pub fn leaderless(&self, now: Duration) -> impl Iterator<Item = (&str, Duration)> {
        self.leaderless.iter().map(move |(name, since)| (name.as_str(), now.saturating_sub(*since)))
    }

    /// The seq of the newest entry (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// How many names have entries kept.
    pub fn names(&self) -> usize {
        self.by_change.len()
    }

    /// Up to `limit` entries with seq above `after`, oldest first.
    pub fn after(&self, after: u64, limit: usize) -> Page {
        // 0: a reader that knows nothing yet, who missed only what left
        // the ring; any other `after` below this history's first entry
        // comes from before a restart.
        let after = if after == 0 { self.first_after } else { after };
        let oldest = self.ring.front().map_or(self.last_seq + 1, |e| e.seq);
        let gap = after > self.last_seq || oldest > after + 1;
        // Seqs in the ring are consecutive.
        let from = if gap { 0 } else { usize::try_from(after + 1 - oldest).unwrap_or(usize::MAX) };
        let changes: Vec<Entry> = self.ring.iter().skip(from).take(limit).map(|e| Entry::clone(e)).collect();
        let next = changes.last().map_or(if gap { self.last_seq } else { after }, |e| e.seq);
        Page { changes, next, gap }
    }

    /// The entries kept for `kind`/`name`, oldest first.
    pub fn of(&self, kind: Kind, name: &str) -> NameHistory {
        let changes = self
            .names
            .get(&(kind, name.to_owned()))
            .map(|k| k.entries.iter().map(|e| Entry::clone(e)).collect())
            .unwrap_or_default();
        NameHistory { kind, name: name.to_owned(), changes }
    }
}

/// `unix_ms` as RFC 3339 in UTC with milliseconds
/// (`2026-11-30T14:00:00.123Z`).
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let (days, ms) = (unix_ms / 86_400_000, unix_ms % 86_400_000);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let (h, m, s, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests;
