//! Expiry judged on the judge's own monotonic clock.
//!
//! Wall clocks on different machines disagree, and timestamps written into
//! a record by its holder say nothing reliable about the judge's "now". So,
//! as client-go's leader election does, a judge remembers when *it* first
//! saw each version of each record, and a lease runs out `ttl` after that
//! moment. A judge that has never seen a record before counts from the
//! moment it first reads it, which can only make the lease last longer,
//! never shorter: safe for the holder.
//!
//! # What a judge keeps, and for how long
//!
//! An entry only for a record it last saw *held*, or *reserved* (released
//! while a leadership transfer was pending: reserved for its candidate for
//! one TTL, dated like a lease, see [`crate::transfer`]): any other free
//! record needs no dating. A lease that runs out keeps its entry for [`CLEAR_AFTER`] more
//! (so readers see it as expired, with no write), then the entry is
//! [due](Judge::due): the elector reads the record again and hands it to
//! [`Judge::settle`]. If it is still the version judged, the judge asks for
//! it to be cleared, a compare-and-swap write at that version of what a
//! release writes ([`decide_clear`]), after which the record is free and
//! its entry goes. If it changed where this judge did not see it (another
//! elector, a deletion), the entry is simply forgotten, which is always
//! safe: a later sighting counts the lease from then, later, never earlier.
//! So a judge holds the leases it saw held within the last TTL and
//! [`CLEAR_AFTER`], not every name it ever saw, and [`Judge::held_count`]
//! looks only at the entries that ran out.
//!
//! # Versions only grow
//!
//! Every store gives a name a larger version on every write: the memory
//! store's one counter (continued across restarts by its state file),
//! etcd's `mod_revision`, a Kubernetes Lease's `resourceVersion` (the etcd
//! revision of an etcd-backed API server, which the store requires as a
//! decimal; comparable as integers within a resource since Kubernetes 1.35,
//! KEP-5504). So an older version read after a newer one was dated is a
//! late answer, and leaves the entry alone ([`Judge::observe`]); the
//! clearing of a version forgets only that version
//! ([`Judge::forget_version`]). Safety does not
//! rest on that order: a version is only ever dated when first seen, or
//! later, so if a store's versions ever went back (a restore from an older
//! backup) leases would only last longer, until the entry of the higher
//! version came due and, changed unseen, was forgotten.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;

use crate::record::{Current, Record, decide_clear};

/// How long a lease that ran out is shown as expired before the judge asks
/// for it to be cleared: long enough that a reader who saw it held learns
/// of the expiry from the expiry itself (a change of the view with nothing
/// written), short enough that expired leases do not pile up.
pub const CLEAR_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
struct Seen {
    version: u64,
    /// The lease's mark ([`Record::lease_mark`]): a new version with the
    /// same mark (a waiter's write) keeps the date.
    mark: (bool, u64, u64),
    at: Duration,
    expires_at: Duration,
    /// Tells apart entries that run out at the same moment in `by_expiry`.
    seq: u64,
    /// A reservation, not a lease: not counted as held.
    reserved: bool,
}

/// Remembers, per key held when last seen, the version seen and when it
/// was first seen.
#[derive(Debug)]
pub struct Judge<K> {
    seen: HashMap<K, Seen>,
    /// The same entries by when they run out, earliest first.
    by_expiry: BTreeMap<(Duration, u64), K>,
    /// The entries of `by_expiry` that are reservations (few: one per
    /// transfer, for one TTL).
    reservations: BTreeSet<(Duration, u64)>,
    next_seq: u64,
}

impl<K> Default for Judge<K> {
    fn default() -> Self {
        Judge { seen: HashMap::new(), by_expiry: BTreeMap::new(), reservations: BTreeSet::new(), next_seq: 0 }
    }
}

impl<K: Eq + Hash + Clone> Judge<K> {
    /// An empty judge.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `record` at `version` was seen at `now`, and returns the
    /// record as judged: `observed_at` is when this version was first seen
    /// (`now` for a free record, which keeps no entry).
    ///
    /// A version older than the entry's (a read answered late, after a
    /// newer version was dated) changes nothing: replacing the entry would
    /// lose the newer lease, which then runs out unswept. It is judged as
    /// first seen `now`, as if this judge had never seen it: later than it
    /// was, so its lease only lasts longer, and a write at that version
    /// fails its compare-and-swap anyway.
    pub fn observe<'r>(&mut self, key: &K, record: &'r Record, version: u64, now: Duration) -> Current<'r> {
        let entry = self.seen.get(key).map(|seen| (seen.version, seen.at));
        let mark = record.lease_mark(version);
        if entry.is_some_and(|(newer, _)| version < newer) {
            return Current { record, version, observed_at: now };
        }
        let reserved = record.holder.is_none() && record.transfer.is_some();
        if record.holder.is_none() && !reserved {
            self.forget(key);
            return Current { record, version, observed_at: now };
        }
        let at = match entry {
            Some((seen, at)) if seen == version => at,
            // Written, but not by the holder (a waiter joining, a transfer
            // asked): the lease is as it was. Without a line or a transfer
            // the mark is the version, dated by the arm above.
            Some((_, at)) if self.seen.get(key).is_some_and(|s| s.mark == mark) => {
                if let Some(seen) = self.seen.get_mut(key) {
                    seen.version = version;
                }
                at
            }
            _ => {
                let seq = self.next_seq;
                self.next_seq += 1;
                let seen = Seen { version, mark, at: now, expires_at: now + record.ttl(), seq, reserved };
                if let Some(old) = self.seen.insert(key.clone(), seen) {
                    self.by_expiry.remove(&(old.expires_at, old.seq));
                    self.reservations.remove(&(old.expires_at, old.seq));
                }
                self.by_expiry.insert((seen.expires_at, seq), key.clone());
                if reserved {
                    self.reservations.insert((seen.expires_at, seq));
                }
                now
            }
        };
        Current { record, version, observed_at: at }
    }

    /// Forgets a key (its record is gone, free, or changed unseen).
    pub fn forget(&mut self, key: &K) {
        if let Some(old) = self.seen.remove(key) {
            self.by_expiry.remove(&(old.expires_at, old.seq));
            if old.reserved {
                self.reservations.remove(&(old.expires_at, old.seq));
            }
            // A map keeps the room it grew to: give it back once mostly
            // empty (halving at most, so the rehash is paid for).
            if self.seen.capacity() > 1024 && self.seen.len() * 4 < self.seen.capacity() {
                self.seen.shrink_to(self.seen.len() * 2);
            }
        }
    }

    /// Forgets `key` if its entry is still at `version`: the record changed
    /// from that version (a clearing written over it, or one that lost its
    /// compare-and-swap), and a newer version dated meanwhile stays.
    pub fn forget_version(&mut self, key: &K, version: u64) {
        if self.seen.get(key).is_some_and(|s| s.version == version) {
            self.forget(key);
        }
    }

    /// How many records this judge last saw held with a lease still running
    /// at `now`. Looks only at the leases that ran out, and reservations.
    pub fn held_count(&self, now: Duration) -> usize {
        let running = self.seen.len() - self.by_expiry.range(..=(now, u64::MAX)).count();
        let later = (core::ops::Bound::Excluded((now, u64::MAX)), core::ops::Bound::Unbounded);
        running - self.reservations.range(later).count()
    }

    /// How many entries the judge keeps.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when the judge keeps no entry.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// When the earliest entry comes due (see [`Judge::due`]), if any.
    pub fn next_due(&self) -> Option<Duration> {
        self.by_expiry.keys().next().map(|(expires_at, _)| *expires_at + CLEAR_AFTER)
    }

    /// Up to `limit` keys whose lease ran out [`CLEAR_AFTER`] or more ago
    /// at `now`, earliest first, each with the version judged: read each
    /// again and pass it to [`Judge::settle`].
    pub fn due(&self, now: Duration, limit: usize) -> Vec<(K, u64)> {
        let Some(ran_out_by) = now.checked_sub(CLEAR_AFTER) else { return Vec::new() };
        self.by_expiry
            .range(..=(ran_out_by, u64::MAX))
            .take(limit)
            .filter_map(|(_, key)| self.seen.get(key).map(|s| (key.clone(), s.version)))
            .collect()
    }

    /// Settles a due entry, given its record as just read (`None`: absent)
    /// at `now`: the record to write at the version judged, if the lease
    /// ran out there (once written, [`Judge::forget_version`] drops the
    /// entry); otherwise nothing, and the entry is forgotten if the
    /// record changed where this judge did not see it. An entry this judge
    /// dated anew since `due` listed it is left alone.
    pub fn settle(&mut self, key: &K, judged: u64, stored: Option<(&Record, u64)>, now: Duration) -> Option<Record> {
        let seen = *self.seen.get(key).filter(|s| s.version == judged)?;
        let clear = match stored {
            Some((record, version)) if version == judged => {
                decide_clear(&Current { record, version, observed_at: seen.at }, now)
            }
            _ => None,
        };
        if clear.is_none() {
            self.forget(key);
        }
        clear
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(ttl_ms: u64) -> Record {
        Record { holder: Some("a".into()), token: 1, ..Record::free(ttl_ms) }
    }

    const fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn counts_from_first_sight_of_each_version() {
        let mut judge = Judge::new();
        let r = held(1000);
        assert_eq!(judge.observe(&"k", &r, 1, s(5)).observed_at, s(5));
        assert_eq!(judge.observe(&"k", &r, 1, s(9)).observed_at, s(5));
        assert_eq!(judge.held_count(s(5)), 1);
        assert_eq!(judge.held_count(s(6)), 0);
        assert_eq!(judge.observe(&"k", &r, 2, s(9)).observed_at, s(9));
        judge.forget(&"k");
        assert_eq!(judge.observe(&"k", &r, 2, s(12)).observed_at, s(12));
    }

    #[test]
    fn keeps_entries_only_for_leases_seen_held() {
        let mut judge = Judge::new();
        let free = Record { holder: None, ..held(1000) };
        judge.observe(&"free", &free, 1, s(0));
        assert!(judge.is_empty(), "a free record needs no dating");
        judge.observe(&"k", &held(1000), 2, s(0));
        judge.observe(&"k", &held(1000), 3, s(1));
        assert_eq!((judge.len(), judge.next_due()), (1, Some(s(2) + CLEAR_AFTER)), "one entry per key, re-dated");
        judge.observe(&"k", &free, 4, s(1));
        assert_eq!((judge.len(), judge.next_due(), judge.held_count(s(1))), (0, None, 0), "released: gone");
    }

    #[test]
    fn a_lease_that_ran_out_comes_due_after_clear_after_and_is_cleared_at_its_version() {
        let mut judge = Judge::new();
        let (short, long) = (held(1000), held(5000));
        judge.observe(&"short", &short, 7, s(10));
        judge.observe(&"long", &long, 8, s(10));
        assert_eq!(judge.held_count(s(11)), 1);
        assert!(judge.due(s(11) + CLEAR_AFTER - Duration::from_millis(1), 10).is_empty(), "shown expired a while");
        assert_eq!(judge.due(s(11) + CLEAR_AFTER, 10), vec![("short", 7)]);
        assert_eq!(judge.due(s(100), 1), vec![("short", 7)], "earliest first, at most `limit`");
        let cleared = judge.settle(&"short", 7, Some((&short, 7)), s(14)).unwrap();
        assert_eq!((&cleared.holder, cleared.token, &cleared.key_sha256), (&None, short.token, &None));
        let live = Current { record: &long, version: 8, observed_at: s(10) };
        assert_eq!(decide_clear(&live, s(14)), None, "a live lease is never cleared");
        // The entry goes once the written (free) record is observed.
        judge.observe(&"short", &cleared, 9, s(14));
        assert_eq!(judge.len(), 1);
    }

    #[test]
    fn a_due_entry_that_changed_unseen_is_forgotten_and_one_dated_anew_is_kept() {
        let mut judge = Judge::new();
        let r = held(1000);
        judge.observe(&"renewed-elsewhere", &r, 1, s(0));
        judge.observe(&"gone", &r, 2, s(0));
        judge.observe(&"renewed-here", &r, 3, s(0));
        let due = s(1) + CLEAR_AFTER;
        assert_eq!(judge.due(due, 10).len(), 3);
        assert_eq!(judge.settle(&"renewed-elsewhere", 1, Some((&r, 4)), due), None);
        assert_eq!(judge.settle(&"gone", 2, None, due), None);
        judge.observe(&"renewed-here", &r, 5, due);
        assert_eq!(judge.settle(&"renewed-here", 3, Some((&r, 3)), due), None, "read before the renewal landed");
        assert_eq!(judge.len(), 1);
        assert_eq!(judge.observe(&"renewed-here", &r, 5, due).observed_at, due, "its dating kept");
        judge.forget_version(&"renewed-here", 3);
        assert_eq!(judge.len(), 1, "a lost write at an older version forgets nothing newer");
        judge.forget_version(&"renewed-here", 5);
        assert!(judge.is_empty());
    }

    #[test]
    fn an_older_version_read_late_leaves_the_newer_entry_dated_and_due() {
        let mut judge = Judge::new();
        let r = held(1000);
        judge.observe(&"k", &r, 5, s(0));
        judge.observe(&"k", &r, 6, s(1));
        // A read of version 5 sent before the renewal, answered after it.
        let late = judge.observe(&"k", &r, 5, s(2));
        assert_eq!(late.observed_at, s(2), "never earlier than this judge first saw version 5");
        let free = Record { holder: None, ..r.clone() };
        judge.observe(&"k", &free, 4, s(2));
        assert_eq!(judge.observe(&"k", &r, 6, s(2)).observed_at, s(1), "version 6 keeps its dating");
        assert_eq!(judge.held_count(s(1)), 1);
        assert_eq!(judge.due(s(2) + CLEAR_AFTER, 10), vec![("k", 6)], "and comes due when it runs out");
        assert!(judge.settle(&"k", 6, Some((&r, 6)), s(2) + CLEAR_AFTER).is_some(), "so it is swept");
    }

    #[test]
    fn a_clearing_that_lands_after_a_new_acquisition_forgets_only_what_it_cleared() {
        let mut judge = Judge::new();
        let r = held(1000);
        judge.observe(&"k", &r, 7, s(0));
        let at = s(1) + CLEAR_AFTER;
        assert_eq!(judge.due(at, 10), vec![("k", 7)]);
        let cleared = judge.settle(&"k", 7, Some((&r, 7)), at).unwrap();
        // The clearing is written as version 8; before the sweeper hears
        // back, a claim on this elector acquires the free record (version
        // 9) and the judge dates it. Then the sweeper's clearing returns,
        // as does any read of version 8 answered late.
        judge.observe(&"k", &r, 9, at);
        judge.forget_version(&"k", 7);
        judge.observe(&"k", &cleared, 8, at);
        assert_eq!((judge.len(), judge.held_count(at)), (1, 1), "the new lease is still tracked");
        assert_eq!(judge.observe(&"k", &r, 9, s(10)).observed_at, at);
        assert_eq!(judge.due(s(10), 10), vec![("k", 9)], "and swept once it runs out");
    }

    #[test]
    fn a_waiter_s_write_does_not_make_the_lease_look_renewed() {
        let mut judge = Judge::new();
        let mut r = held(1000);
        r.line.tickets = 1;
        judge.observe(&"k", &r, 5, s(0));
        // A waiter refreshed its place (a new version, the lease as it was).
        let mut refreshed = r.clone();
        refreshed.line.tickets = 2;
        let seen = judge.observe(&"k", &refreshed, 6, s(1));
        assert_eq!(seen.observed_at, s(0), "dated from the holder's own last write");
        assert!(seen.is_expired(s(1) + Duration::from_millis(1)));
        assert_eq!(judge.due(s(1) + CLEAR_AFTER, 10), vec![("k", 6)], "cleared at the version now stored");
        // The holder renews: a new mark, dated anew.
        let mut renewed = refreshed.clone();
        renewed.line.renewed = 3;
        assert_eq!(judge.observe(&"k", &renewed, 7, s(1)).observed_at, s(1));
        // Without a line every write is the holder's: a new version is a renewal.
        let plain = held(1000);
        judge.observe(&"p", &plain, 5, s(0));
        assert_eq!(judge.observe(&"p", &plain, 6, s(1)).observed_at, s(1));
    }
}
