//! `mpsync leader`'s board: who leads each election it follows, as far as
//! it can vouch for it, without I/O (`now` and send times are passed in).
//!
//! What the board shows is what the output says and what the endpoint
//! files hold. A leader is shown until its lease may have run out, counted
//! from when the request that last reported it was sent: past that, with no
//! word from the elector, the board shows nobody rather than a leader it
//! cannot vouch for. Each election keeps its own "trusted until": an
//! elector that stops answering empties the elections one by one, each as
//! its own leader's lease may run out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mpsync_client::{Leader, Read};

/// One election whose shown leader changed: write its file, print its
/// line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its place in the order the elections were given.
    pub index: usize,
    /// The leader now shown (`None`: nobody).
    pub leader: Option<Leader>,
    /// The view version it comes from (the last one heard, when a leader
    /// is dropped for want of news).
    pub version: u64,
}

#[derive(Debug)]
struct Row {
    /// `None` until the first change is handed out.
    shown: Option<Option<Leader>>,
    version: u64,
    trusted_until: Instant,
}

/// Every election followed, in the order given.
#[derive(Debug)]
pub struct Board {
    rows: Vec<Row>,
    index: HashMap<String, usize>,
}

impl Board {
    /// The elections `names` (distinct), nothing shown yet.
    pub fn new(names: &[String], now: Instant) -> Board {
        let rows = names.iter().map(|_| Row { shown: None, version: 0, trusted_until: now }).collect();
        let index = names.iter().enumerate().map(|(i, name)| (name.clone(), i)).collect();
        Board { rows, index }
    }

    /// The elector reported `read` for `name`, in answer to a request sent
    /// at `sent`. A change if the leader shown differs (or nothing was
    /// shown yet).
    pub fn heard(&mut self, name: &str, read: &Read, sent: Instant) -> Option<Change> {
        let index = *self.index.get(name)?;
        let row = &mut self.rows[index];
        row.version = read.version();
        // The elector judged the lease when it answered, after `sent`: the
        // lease cannot run out before `sent` plus what it had left.
        row.trusted_until = match read {
            Read::Held(view) => sent + Duration::from_millis(view.expires_in_ms),
            Read::Free { .. } => sent,
        };
        let leader = read.leader();
        if row.shown.as_ref() == Some(&leader) {
            return None;
        }
        row.shown = Some(leader.clone());
        Some(Change { index, leader, version: row.version })
    }

    /// Nobody, for every election nothing was shown for yet: the elector
    /// did not answer for them (they were never written, or it could not
    /// be reached).
    pub fn settle(&mut self) -> Vec<Change> {
        let mut changes = Vec::new();
        for (index, row) in self.rows.iter_mut().enumerate() {
            if row.shown.is_none() {
                row.shown = Some(None);
                changes.push(Change { index, leader: None, version: row.version });
            }
        }
        changes
    }

    /// Nobody, for every election whose leader's lease may have run out by
    /// `now` with no word since.
    pub fn expire(&mut self, now: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        for (index, row) in self.rows.iter_mut().enumerate() {
            if matches!(row.shown, Some(Some(_))) && now >= row.trusted_until {
                row.shown = Some(None);
                changes.push(Change { index, leader: None, version: row.version });
            }
        }
        changes
    }

    /// When the next shown leader's lease may run out (`expire` then).
    pub fn next_expiry(&self) -> Option<Instant> {
        self.rows.iter().filter(|row| matches!(row.shown, Some(Some(_)))).map(|row| row.trusted_until).min()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use mpsync_core::wire::LeaseView;

    fn held(holder: &str, version: u64, expires_in_ms: u64) -> Read {
        Read::Held(LeaseView {
            name: "x".into(),
            holder: holder.into(),
            token: 7,
            ttl_ms: 1000,
            version,
            expires_in_ms,
            address: Some("127.0.0.1:1".into()),
            waiting: 0,
            shared: false,
            permit: None,
            transfer: None,
        })
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_first_word_on_each_is_shown_and_then_only_changes_of_leader() {
        let t0 = Instant::now();
        let mut board = Board::new(&names(&["a", "b", "c"]), t0);
        let change = board.heard("b", &held("x", 5, 1000), t0).unwrap();
        assert_eq!((change.index, change.leader.map(|l| l.id), change.version), (1, Some("x".into()), 5));
        assert_eq!(board.heard("b", &held("x", 6, 1000), t0), None, "a renewal is no change");
        assert_eq!(board.heard("unknown", &held("x", 6, 1000), t0), None);
        let settled = board.settle();
        assert_eq!(settled.iter().map(|c| (c.index, c.leader.is_none())).collect::<Vec<_>>(), [(0, true), (2, true)]);
        assert!(board.settle().is_empty());
        assert_eq!(board.heard("a", &Read::Free { version: 9 }, t0), None, "nobody, as shown");
        assert!(board.heard("a", &held("y", 10, 1000), t0).is_some());
    }

    #[test]
    fn each_leader_is_dropped_when_its_own_lease_may_have_run_out() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut board = Board::new(&names(&["short", "long", "free"]), t0);
        board.heard("short", &held("s", 1, 1000), t0);
        board.heard("long", &held("l", 2, 5000), t0 + ms(10));
        board.heard("free", &Read::Free { version: 3 }, t0);
        assert_eq!(board.next_expiry(), Some(t0 + ms(1000)), "nobody shown has nothing to run out");
        assert!(board.expire(t0 + ms(999)).is_empty());
        let dropped = board.expire(t0 + ms(1000));
        assert_eq!(dropped, [Change { index: 0, leader: None, version: 1 }]);
        assert_eq!(board.next_expiry(), Some(t0 + ms(5010)));
        // A renewal heard pushes the long one's expiry on, counted from
        // when its request was sent.
        board.heard("long", &held("l", 4, 5000), t0 + ms(3000));
        assert!(board.expire(t0 + ms(6000)).is_empty());
        assert_eq!(board.expire(t0 + ms(8000)).len(), 1);
        assert_eq!(board.next_expiry(), None);
    }
}
