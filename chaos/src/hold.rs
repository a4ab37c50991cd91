//! How a critical section holds its lock (the one holder, a reader of a
//! read-write lock, or one permit of a counting semaphore), which holds
//! exclude each other, and the fencing rule of a resource guarding such a
//! lock.
//!
//! Every grant of a name, shared or not, has its own fencing token from one
//! counter per name, so tokens only grow per name. A write is **stale**
//! when a hold it excludes was granted after it: an exclusive holder's
//! after any later grant; a permit's after a later exclusive grant or a
//! later grant of the same permit; a reader's only after a later exclusive
//! grant. The resource ([`Seen::admit`]) and the checker
//! ([`crate::check`]) apply the same rule, the resource by tokens, the
//! checker by the order in which sections entered.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// How a section holds its lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hold {
    /// The one holder: a lock's, or a read-write lock's writer.
    #[default]
    Exclusive,
    /// One of any number of readers of a read-write lock.
    Shared,
    /// Permit `permit` (0-based) of a semaphore of `of` permits.
    Permit {
        /// Which permit.
        permit: u32,
        /// How many the semaphore has.
        of: u32,
    },
}

impl Hold {
    /// The plain hold (what a history without holds records).
    pub fn is_exclusive(&self) -> bool {
        *self == Hold::Exclusive
    }

    /// Whether two holds of one lock must never be held at once.
    pub fn excludes(self, other: Hold) -> bool {
        match (self, other) {
            (Hold::Exclusive, _) | (_, Hold::Exclusive) => true,
            (Hold::Permit { permit: a, .. }, Hold::Permit { permit: b, .. }) => a == b,
            _ => false,
        }
    }

    /// The hold a report's query names: `shared=true` a reader,
    /// `permit=P&permits=N` a permit, neither the exclusive hold.
    pub fn from_query(shared: Option<bool>, permit: Option<u32>, permits: Option<u32>) -> Hold {
        match (permit, shared) {
            (Some(permit), _) => Hold::Permit { permit, of: permits.unwrap_or(0) },
            (None, Some(true)) => Hold::Shared,
            (None, _) => Hold::Exclusive,
        }
    }

    /// The query that names this hold (appended to `?lock=..`).
    pub fn query(self) -> String {
        match self {
            Hold::Exclusive => String::new(),
            Hold::Shared => "&shared=true".to_owned(),
            Hold::Permit { permit, of } => format!("&permit={permit}&permits={of}"),
        }
    }

    /// Whether a hold is a permit the semaphore does not have.
    pub fn out_of_range(self) -> bool {
        matches!(self, Hold::Permit { permit, of } if permit >= of)
    }
}

/// The tokens a resource has seen for one lock, by the holds they came
/// with: all the fencing rule needs.
#[derive(Debug, Default)]
pub struct Seen {
    largest: u64,
    exclusive: u64,
    permits: HashMap<u32, u64>,
}

impl Seen {
    /// Whether an entry or a write with `token` under `hold` is current
    /// (nothing it excludes was granted later); if so, remembers the token.
    pub fn admit(&mut self, hold: Hold, token: u64) -> bool {
        let floor = match hold {
            Hold::Exclusive => self.largest,
            Hold::Shared => self.exclusive,
            Hold::Permit { permit, .. } => self.exclusive.max(self.permits.get(&permit).copied().unwrap_or(0)),
        };
        if token < floor {
            return false;
        }
        self.largest = self.largest.max(token);
        match hold {
            Hold::Exclusive => self.exclusive = self.exclusive.max(token),
            Hold::Shared => {}
            Hold::Permit { permit, .. } => {
                let last = self.permits.entry(permit).or_insert(0);
                *last = (*last).max(token);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn permit(permit: u32) -> Hold {
        Hold::Permit { permit, of: 2 }
    }

    #[test]
    fn the_fencing_rule_of_each_hold() {
        let mut seen = Seen::default();
        assert!(seen.admit(Hold::Shared, 3));
        assert!(seen.admit(Hold::Shared, 2), "readers exclude no reader");
        assert!(!seen.admit(Hold::Exclusive, 2), "a writer is stale after any later grant");
        assert!(seen.admit(Hold::Exclusive, 4));
        assert!(!seen.admit(Hold::Shared, 3), "a reader is stale after a later writer");
        let mut seen = Seen::default();
        assert!(seen.admit(permit(0), 5));
        assert!(seen.admit(permit(1), 4), "another permit's later token does not make it stale");
        assert!(seen.admit(permit(0), 6));
        assert!(!seen.admit(permit(0), 5), "the same permit's later token does");
        assert!(seen.admit(permit(1), 4));
        assert!(seen.admit(Hold::Exclusive, 7));
        assert!(!seen.admit(permit(1), 4), "and a later exclusive one");
    }

    #[test]
    fn which_holds_exclude_which() {
        assert!(Hold::Exclusive.excludes(Hold::Shared) && Hold::Shared.excludes(Hold::Exclusive));
        assert!(!Hold::Shared.excludes(Hold::Shared));
        assert!(permit(1).excludes(permit(1)) && !permit(0).excludes(permit(1)));
        assert!(Hold::Permit { permit: 2, of: 2 }.out_of_range() && !permit(1).out_of_range());
        for hold in [Hold::Exclusive, Hold::Shared, permit(1)] {
            let query = hold.query();
            let param =
                |name: &str| query.split('&').find_map(|kv| kv.strip_prefix(&format!("{name}="))).map(|v| v.to_owned());
            let parsed = Hold::from_query(
                param("shared").map(|v| v == "true"),
                param("permit").and_then(|v| v.parse().ok()),
                param("permits").and_then(|v| v.parse().ok()),
            );
            assert_eq!(parsed, hold, "{query}");
        }
    }
}
