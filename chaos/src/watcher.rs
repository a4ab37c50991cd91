//! The line watcher: lists the locks every few milliseconds and marks in
//! the history ([`Step::Queued`]) each place in a lock's line it sees
//! appear, by holder and ticket: by then the elector had given that place.
//!
//! It also marks each place it sees go: with its waiter among the lock's
//! holders ([`Step::Handed`]: the lock was handed to it), or not
//! ([`Step::Left`]: given up, or lost).
//!
//! A listing (`GET /v1/locks`) shows each lock's line, next first, with the
//! tickets the elector gave out in order; the fairness check
//! ([`crate::fair`]) reads from these marks when each waiter surely had a
//! place. Asking the electors is the one way to see a place without
//! changing the clients (an `mpsync lock` process or a wasm app does not
//! say when it got one); the marks are only ever upper bounds (a place
//! given and handed the lock within one poll is never seen), and the check
//! never takes the elector's word for who should have gone first: that is
//! decided by when the contenders were seen waiting and when they entered.

use std::collections::BTreeSet;
use std::time::Duration;

use mpsync_client::{Client, Kind};
use tokio::sync::watch;

use crate::fence::{Fence, Hold, Step};

/// How often the watcher lists the locks.
pub const POLL: Duration = Duration::from_millis(10);

/// The longest a listing may take (a paused store, an elector restarting):
/// then the watcher moves on to the next elector.
const LIST_TIMEOUT: Duration = Duration::from_millis(500);

/// Watches the locks' lines through the electors at `urls`, in turn, until
/// `stop` turns true.
pub async fn watch_lines(urls: Vec<String>, fence: Fence, mut stop: watch::Receiver<bool>) {
    let clients: Vec<Client> = urls.iter().map(|u| Client::new(u).with_sessions(false)).collect();
    // The places seen at the last listing that answered, and when.
    let mut present: BTreeSet<(String, String, u64, bool)> = BTreeSet::new();
    let mut present_at = 0;
    let mut turn = 0;
    while !*stop.borrow() {
        let client = &clients[turn % clients.len()];
        turn += 1;
        let listed = tokio::select! {
            listed = tokio::time::timeout(LIST_TIMEOUT, client.list(Kind::Lock, 100, None)) => listed,
            _ = stop.changed() => break,
        };
        if let Ok(Ok(page)) = listed {
            let mut now = BTreeSet::new();
            let mut holding = BTreeSet::new();
            for record in page.items {
                let holders = record.holder.into_iter().chain(record.shares.into_iter().map(|s| s.holder));
                holding.extend(holders.map(|h| (record.name.clone(), h)));
                for waiter in record.line {
                    now.insert((record.name.clone(), waiter.holder, waiter.ticket, waiter.shared));
                }
            }
            for (lock, holder, ticket, shared) in now.difference(&present) {
                // A permit's number is known only once it is granted.
                let hold = if *shared { Hold::Shared } else { Hold::Exclusive };
                fence.mark(Step::Queued, lock, holder, *ticket, hold);
            }
            for (lock, holder, ticket, shared) in present.difference(&now) {
                if holding.contains(&(lock.clone(), holder.clone())) {
                    let hold = if *shared { Hold::Shared } else { Hold::Exclusive };
                    fence.mark(Step::Handed, lock, holder, *ticket, hold);
                } else {
                    fence.mark_left(lock, holder, *ticket, present_at);
                }
            }
            present = now;
            present_at = fence.now_us();
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => break,
        }
    }
}
