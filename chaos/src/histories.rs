//! The check that the electors' histories (`GET /v1/history`, read by the
//! watch observer once the run is over, [`Step::History`]) show no phantom:
//! every change to a holder names a grant that really happened.
//!
//! The grants are not in the history, but what the contenders did is, and
//! what plain reads showed: an entry naming `holder` with `token` on a name
//! is *proven* when `holder` entered a section there with that token, or a
//! plain read (the watch observer's reads and views, the transferrer's
//! reads of the election) showed that holder with that token. It is a
//! **phantom** when another contender entered a section there with that
//! token (every grant of a name takes a token of its own), or when its
//! holder is no contender of the run at all. Anything else is *unproven*
//! (a grant its holder never entered with: killed before its section, the
//! answer lost to a fault), counted. A restarted memory elector's
//! placeholder ([`RECOVERING_HOLDER`]) is counted apart. That tokens only
//! grow in each elector's history is [`crate::views`]'s check 4.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::fence::{Event, Step};
use crate::views::RECOVERING_HOLDER;

/// What the check of the electors' histories found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryFindings {
    /// Entries naming a holder (changes to a holder).
    pub to_holder: usize,
    /// Of those, proven by a section entered with their token.
    pub entered: usize,
    /// Proven by a plain read only.
    pub read: usize,
    /// Neither proven nor a phantom.
    pub unproven: usize,
    /// A restarted memory elector's placeholder.
    pub recovering: usize,
    /// Entries naming a holder that never had that token: must be 0.
    pub phantoms: usize,
    /// The first few, described.
    pub examples: Vec<String>,
}

impl HistoryFindings {
    /// No violation.
    pub fn safe(&self) -> bool {
        self.phantoms == 0
    }
}

/// Checks the history entries in `events`.
pub fn check(events: &[Event]) -> HistoryFindings {
    let mut f = HistoryFindings::default();
    let mut entered: HashMap<(&str, u64), BTreeSet<&str>> = HashMap::new();
    let mut shown: BTreeSet<(&str, &str, u64)> = BTreeSet::new();
    let mut contenders: BTreeSet<&str> = BTreeSet::new();
    for e in events {
        match e.step {
            Step::Enter => {
                entered.entry((&e.lock, e.token)).or_default().insert(&e.client);
                contenders.insert(&e.client);
            }
            Step::Wait => {
                contenders.insert(&e.client);
            }
            Step::Watched | Step::Read | Step::Leader if e.accepted => {
                if let Some(holder) = &e.holder {
                    shown.insert((&e.lock, holder, e.token));
                }
            }
            _ => {}
        }
    }
    for e in events.iter().filter(|e| e.step == Step::History) {
        let Some(holder) = e.holder.as_deref() else { continue };
        f.to_holder += 1;
        let by = entered.get(&(e.lock.as_str(), e.token));
        let why = if holder == RECOVERING_HOLDER {
            f.recovering += 1;
            continue;
        } else if by.is_some_and(|by| by.contains(holder)) {
            f.entered += 1;
            continue;
        } else if let Some(by) = by {
            format!("token {} was entered with by {}", e.token, by.iter().copied().collect::<Vec<_>>().join(", "))
        } else if shown.contains(&(e.lock.as_str(), holder, e.token)) {
            f.read += 1;
            continue;
        } else if !contenders.contains(holder) {
            "no contender of the run has that id".to_owned()
        } else {
            f.unproven += 1;
            continue;
        };
        f.phantoms += 1;
        if f.examples.len() < 10 {
            f.examples.push(format!(
                "{}: {}'s history (change {}) shows {holder} with token {}, but {why}",
                e.lock,
                e.elector.as_deref().unwrap_or("?"),
                e.version.unwrap_or(0),
                e.token
            ));
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fence::OBSERVER;

    fn event(step: Step, client: &str, token: u64) -> Event {
        Event::new(step, "l", client, token, true)
    }

    fn change(holder: Option<&str>, token: u64) -> Event {
        let mut e = event(Step::History, OBSERVER, token);
        (e.holder, e.version, e.elector) = (holder.map(Into::into), Some(1), Some("e0".into()));
        e
    }

    #[test]
    fn every_holder_in_a_history_had_that_token() {
        let read = Event { holder: Some("b".into()), ..event(Step::Read, OBSERVER, 2) };
        let h = vec![
            event(Step::Wait, "c", 0),
            event(Step::Enter, "a", 1),
            read,
            change(Some("a"), 1),
            change(None, 1),
            change(Some("b"), 2),
            change(Some("c"), 3),
            change(Some(RECOVERING_HOLDER), 4),
        ];
        let f = check(&h);
        assert_eq!((f.to_holder, f.entered, f.read, f.unproven, f.recovering, f.phantoms), (4, 1, 1, 1, 1, 0));
        assert!(f.safe());
        // Another entered with that token; a holder nobody in the run is.
        for bad in [change(Some("b"), 1), change(Some("ghost"), 9)] {
            let mut h = h.clone();
            h.push(bad);
            let f = check(&h);
            assert_eq!(f.phantoms, 1, "{f:?}");
            assert!(!f.safe());
        }
        let mut h = h;
        h.push(change(Some("b"), 1));
        assert!(
            check(&h).examples[0].contains("e0's history (change 1) shows b with token 1, but token 1 was entered")
        );
    }
}
