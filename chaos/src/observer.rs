//! The watch observer: one client following every lock of the run with
//! one watch over all of them (`POST /v1/watch`), as a proxy routing many
//! shards does, beside the line watcher ([`crate::watcher`]).
//!
//! It sends [`ROUNDS_PER_ELECTOR`] watches to each elector in turn (a
//! failed or late answer moves it on to the next at once). The first watch
//! on an elector resumes the set another elector keeps, is answered 410,
//! and sends the whole set; the others resume it with only what changed
//! ([`Rounds`] counts each).
//! It merges each answer with
//! [`Tracked::merge`], which keeps only views newer than those it knows
//! (two electors of one store may answer in either order), and records
//! every view it accepts in the history ([`Step::Watched`]): the lock, its
//! holder or none, the token, the view's version and the elector that
//! answered. The checks are in [`crate::views`]: tokens never go back, no
//! holder nobody was granted, and at the end, with the faults over, views
//! that agree with a plain read.
//!
//! That last part is [`Observer::settle`]: once the contenders are
//! stopped (their leases released as their sessions close, or running out
//! at their TTL), it reads every lock with a plain `GET`
//! ([`Step::Read`]), and, while any read disagrees with its last view,
//! watches once more and reads again, for at most [`SETTLE_ROUNDS`] watch
//! rounds ([`Step::Settle`] marks each round).
//!
//! Last, it reads each elector's history of changes of holder (`GET
//! /v1/history`) and records each change of the run's locks
//! ([`Step::History`]): in each, a lock's tokens must never go back.
//!
//! **The control** (`--watch-stale`): the observer takes every view of an
//! answer without the version rule, records each answer only after the
//! next one (as a slow elector's answer arrives late), and names each
//! holder after the one it recorded before on that lock. The checks must
//! find tokens going back and holders that never held those tokens.

use std::collections::BTreeMap;
use std::time::Duration;

use mpsync_client::{Client, Kind, Read, Tracked, WatchAnswer};
use tokio::sync::watch;

use crate::contender::PERMITS;
use crate::fence::{Fence, Hold, Step, View};

/// The observer's id on the electors ([`Tracked::as_watcher`]): each of
/// its watches answers the one before it on the same elector.
pub const WATCHER: &str = "chaos-observer";

/// Watches sent to one elector before the next: its kept set is resumed
/// in all but the first.
pub const ROUNDS_PER_ELECTOR: usize = 4;

/// How long a watch waits on the elector with nothing news.
const SLICE: Duration = Duration::from_secs(1);

/// How much later than its slice an answer may come (a paused store, an
/// elector restarting) before the observer moves on to the next elector.
const LATE: Duration = Duration::from_millis(500);

/// How long a plain read at the end may take.
const READ_TIMEOUT: Duration = Duration::from_millis(500);

/// How long the observer waits after a failed watch before the next.
const RETRY: Duration = Duration::from_millis(10);

/// The most watch rounds the views may take to agree with plain reads once
/// the run is over: every lease then ends (one change per lock, plus a
/// hand-over in flight), and each watch answers the first change it sees.
pub const SETTLE_ROUNDS: u64 = 8;

/// How the observer's answered watches went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rounds {
    /// Resumed the set the elector keeps, with only what changed.
    pub resumed: u64,
    /// Resumed a set the elector does not keep (another elector's): answered
    /// 410, then sent the whole set.
    pub gone: u64,
    /// Sent the whole set (the first, and those after a failure).
    pub whole: u64,
}

/// The watch observer.
pub struct Observer {
    clients: Vec<Client>,
    tracked: Tracked,
    locks: Vec<String>,
    /// The elections whose history is read too (not watched).
    elections: Vec<String>,
    fence: Fence,
    turn: usize,
    /// The last view recorded per lock (holder and token; none: free).
    last: BTreeMap<String, Option<(String, u64)>>,
    /// The control: see the module's documentation.
    stale: bool,
    /// The control's answer not recorded yet, with the elector it came from.
    held_back: Option<(usize, WatchAnswer)>,
    rounds: Rounds,
}

impl Observer {
    /// Follows `locks` through the electors at `urls`, recording into
    /// `fence`; `stale`: the control.
    pub fn new(urls: &[String], locks: &[String], fence: Fence, stale: bool) -> Observer {
        let mut tracked = Tracked::as_watcher(WATCHER);
        for lock in locks {
            // Nothing known: the first answer shows every lock held.
            tracked.follow(Kind::Lock, lock, 0);
        }
        Observer {
            clients: urls.iter().map(|u| Client::new(u).with_sessions(false)).collect(),
            tracked,
            locks: locks.to_vec(),
            elections: Vec::new(),
            fence,
            turn: 0,
            last: BTreeMap::new(),
            stale,
            held_back: None,
            rounds: Rounds::default(),
        }
    }

    /// Reads the history of `elections` too, at the end.
    pub fn with_elections(mut self, elections: &[String]) -> Observer {
        self.elections = elections.to_vec();
        self
    }

    /// Watches until `stop` turns true, and returns itself for
    /// [`Observer::settle`].
    pub async fn observe(mut self, mut stop: watch::Receiver<bool>) -> Observer {
        while !*stop.borrow() {
            let answered = tokio::select! {
                answered = self.round() => answered,
                _ = stop.changed() => {
                    // The watch given up may have told the elector nothing.
                    self.tracked.failed();
                    break;
                }
            };
            if !answered {
                tokio::select! {
                    () = tokio::time::sleep(RETRY) => {}
                    _ = stop.changed() => break,
                }
            }
        }
        self
    }

    /// Once the run's faults are over and its contenders stopped: reads
    /// every lock, and watches again while a read disagrees with the last
    /// view, for at most [`SETTLE_ROUNDS`] watches. The control takes
    /// these answers as the honest observer does. Returns how its watches
    /// went.
    pub async fn settle(mut self) -> Rounds {
        (self.stale, self.held_back) = (false, None);
        for round in 0..=SETTLE_ROUNDS {
            self.fence.mark_settle(round);
            let i = self.next_elector();
            let mut agree = true;
            for lock in &self.locks {
                let read = tokio::time::timeout(READ_TIMEOUT, self.clients[i].read(Kind::Lock, lock, None)).await;
                let view = match read {
                    Ok(Ok(read)) => view(&read),
                    _ => {
                        agree = false;
                        self.fence.record_view(Step::Read, lock, None, self.clients[i].base(), false);
                        continue;
                    }
                };
                let shown = view.lease.as_ref().map(|(holder, token, _)| (holder.clone(), *token));
                agree &= self.last.get(lock).cloned().flatten() == shown;
                self.fence.record_view(Step::Read, lock, Some(&view), self.clients[i].base(), true);
            }
            if agree || round == SETTLE_ROUNDS {
                self.read_histories().await;
                return self.rounds;
            }
            if !self.round().await {
                tokio::time::sleep(RETRY).await;
            }
        }
        self.rounds
    }

    /// Records every elector's history of the run's locks (`GET
    /// /v1/history`, every change it still keeps, oldest first): the checks
    /// find a token going back in any of them ([`crate::views`]).
    async fn read_histories(&self) {
        for client in &self.clients {
            let mut after = 0;
            loop {
                let page = tokio::time::timeout(READ_TIMEOUT, client.history(after, 1000)).await;
                let Ok(Ok(page)) = page else { break };
                if page.changes.is_empty() {
                    break;
                }
                after = page.next;
                let ours = |e: &&mpsync_core::history::Entry| match e.kind {
                    Kind::Lock => self.locks.contains(&e.name),
                    Kind::Election => self.elections.contains(&e.name),
                };
                for e in page.changes.iter().filter(ours) {
                    self.fence.record_history(e, client.base());
                }
            }
        }
    }

    /// The elector to ask next.
    fn next_elector(&mut self) -> usize {
        self.turn += 1;
        ((self.turn - 1) / ROUNDS_PER_ELECTOR) % self.clients.len()
    }

    /// One watch, to the next elector; false if it failed or came late
    /// (then the next watch goes to the next elector).
    async fn round(&mut self) -> bool {
        let i = self.next_elector();
        let (resuming, whole_sets) = (self.tracked.resumes(), self.tracked.whole_sets());
        let asked = tokio::time::timeout(SLICE + LATE, self.clients[i].watch(&mut self.tracked, SLICE)).await;
        let Ok(Ok(answer)) = asked else {
            self.tracked.failed();
            self.turn = self.turn.next_multiple_of(ROUNDS_PER_ELECTOR);
            return false;
        };
        match (resuming, self.tracked.whole_sets() > whole_sets) {
            (true, false) => self.rounds.resumed += 1,
            (true, true) => self.rounds.gone += 1,
            (false, _) => self.rounds.whole += 1,
        }
        if !self.stale {
            for (_, lock, read) in self.tracked.merge(answer) {
                self.record(&lock, view(&read), i);
            }
            return true;
        }
        // The control: what it asks next still follows the news, but it
        // records every view, each answer after the next one.
        self.tracked.merge(answer.clone());
        match self.held_back.take() {
            None => self.held_back = Some((i, answer)),
            Some((before, earlier)) => {
                for (answer, elector) in [(answer, i), (earlier, before)] {
                    for watched in answer.changed {
                        let lock = watched.name.clone();
                        let mut view = view(&mpsync_core::client::watch::read(watched));
                        if let (Some((holder, _, _)), Some(Some((previous, _)))) =
                            (&mut view.lease, self.last.get(&lock))
                        {
                            holder.clone_from(previous);
                        }
                        self.record(&lock, view, elector);
                    }
                }
            }
        }
        true
    }

    /// Records a view `lock` accepted from the elector at `i`.
    fn record(&mut self, lock: &str, view: View, i: usize) {
        let shown = view.lease.as_ref().map(|(holder, token, _)| (holder.clone(), *token));
        self.last.insert(lock.to_owned(), shown);
        self.fence.record_view(Step::Watched, lock, Some(&view), self.clients[i].base(), true);
    }
}

/// A read as the history records it (a permit's semaphore is the run's, of
/// [`PERMITS`]).
fn view(read: &Read) -> View {
    match read {
        Read::Held(lease) => {
            let hold = match (lease.permit, lease.shared) {
                (Some(permit), _) => Hold::Permit { permit, of: PERMITS },
                (None, true) => Hold::Shared,
                (None, false) => Hold::Exclusive,
            };
            View { version: lease.version, lease: Some((lease.holder.clone(), lease.token, hold)) }
        }
        Read::Free { version } => View { version: *version, lease: None },
    }
}
