//! Expiry judged on the judge's own monotonic clock.
//!
//! Wall clocks on different machines disagree, and timestamps written into
//! a record by its holder say nothing reliable about the judge's "now". So,
//! as client-go's leader election does, a judge remembers when *it* first
//! saw each version of each record, and a lease runs out `ttl` after that
//! moment. A judge that has never seen a record before counts from the
//! moment it first reads it, which can only make the lease last longer,
//! never shorter: safe for the holder.

use core::time::Duration;
use std::collections::HashMap;
use std::hash::Hash;

use crate::record::{Current, Record};

#[derive(Debug, Clone, Copy)]
struct Seen {
    version: u64,
    at: Duration,
    expires_at: Option<Duration>,
}

/// Remembers, per key, the version last seen and when it was first seen.
#[derive(Debug)]
pub struct Judge<K> {
    seen: HashMap<K, Seen>,
}

impl<K> Default for Judge<K> {
    fn default() -> Self {
        Judge { seen: HashMap::new() }
    }
}

impl<K: Eq + Hash + Clone> Judge<K> {
    /// An empty judge.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `record` at `version` was seen at `now`, and returns the
    /// record as judged: `observed_at` is when this version was first seen.
    pub fn observe<'r>(&mut self, key: &K, record: &'r Record, version: u64, now: Duration) -> Current<'r> {
        let at = match self.seen.get(key) {
            Some(seen) if seen.version == version => seen.at,
            _ => {
                let expires_at = record.holder.as_ref().map(|_| now + record.ttl());
                self.seen.insert(key.clone(), Seen { version, at: now, expires_at });
                now
            }
        };
        Current { record, version, observed_at: at }
    }

    /// Forgets a key (its record is gone from the store).
    pub fn forget(&mut self, key: &K) {
        self.seen.remove(key);
    }

    /// How many records this judge last saw held with a lease still running
    /// at `now`.
    pub fn held_count(&self, now: Duration) -> usize {
        self.seen.values().filter(|s| s.expires_at.is_some_and(|at| now < at)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_first_sight_of_each_version() {
        let mut judge = Judge::new();
        let r = Record { holder: Some("a".into()), token: 1, ttl_ms: 1000, address: None };
        let s = Duration::from_secs;
        assert_eq!(judge.observe(&"k", &r, 1, s(5)).observed_at, s(5));
        assert_eq!(judge.observe(&"k", &r, 1, s(9)).observed_at, s(5));
        assert_eq!(judge.held_count(s(5)), 1);
        assert_eq!(judge.held_count(s(6)), 0);
        assert_eq!(judge.observe(&"k", &r, 2, s(9)).observed_at, s(9));
        judge.forget(&"k");
        assert_eq!(judge.observe(&"k", &r, 2, s(12)).observed_at, s(12));
    }
}
