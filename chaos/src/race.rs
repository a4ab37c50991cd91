//! The fairness control: contenders that race for a lock, as every client
//! did before fair locks, so that the fairness check has overtakings to
//! find on a real run.
//!
//! A racer claims the lock with a plain `PUT` (no place in line); when it is
//! held, it long-polls until the record changes and claims again, and
//! whoever's claim lands first after a release wins, however long the
//! others have waited. It runs inside the run's process (the clients take
//! no flag that makes them race), reports its sections to the resource
//! directly, and marks each wait in the history as an `mpsync lock`
//! contender's is marked ([`crate::contender`]). Its sections are shorter
//! than its TTL, so it needs no renewal; no fault is aimed at it.

use std::time::Duration;

use mpsync_client::{Claimed, Client, Kind};
use mpsync_core::wire::{AcquireRequest, LeaseKey, ReleaseRequest};
use tokio::sync::watch;

use crate::fence::{Fence, Hold, Step};
use crate::rng::Rng;

/// How long a racer waits for one lock before it gives up (as `mpsync
/// lock --timeout 10s` does).
const GIVE_UP: Duration = Duration::from_secs(10);

/// What a racer is given.
pub struct Racer {
    /// Its client id, and holder.
    pub client: String,
    /// Its elector.
    pub url: String,
    /// The locks it takes, one at a time, at random.
    pub locks: Vec<String>,
    /// Its leases' TTL.
    pub ttl: Duration,
    /// The resource and history.
    pub fence: Fence,
}

impl Racer {
    /// Takes locks in a loop until `stop` turns true.
    pub async fn run(self, mut rng: Rng, stop: watch::Receiver<bool>) {
        let client = Client::new(&self.url).with_sessions(false);
        while !*stop.borrow() {
            let lock = &self.locks[rng.below(self.locks.len() as u64) as usize];
            let key = LeaseKey::from_random(&rng.next_u64().to_le_bytes().repeat(2));
            self.fence.mark(Step::Wait, lock, &self.client, 0, Hold::Exclusive);
            if let Some(token) = self.acquire(&client, lock, &key, stop.clone()).await {
                self.section(lock, token, &mut rng).await;
                let release =
                    ReleaseRequest { holder: self.client.clone(), token, ticket: None, key: Some(key.clone()) };
                let _ = client.release_with(Kind::Lock, lock, &release).await;
            }
            self.fence.mark(Step::Quit, lock, &self.client, 0, Hold::Exclusive);
        }
    }

    /// Claims `lock` until granted (its token), the wait gives up, or the
    /// run stops.
    async fn acquire(&self, client: &Client, lock: &str, key: &LeaseKey, stop: watch::Receiver<bool>) -> Option<u64> {
        let by = tokio::time::Instant::now() + GIVE_UP;
        while !*stop.borrow() && tokio::time::Instant::now() < by {
            let claim = AcquireRequest::new(&self.client, self.ttl, None, None).with_key(Some(key));
            match client.claim(Kind::Lock, lock, &claim).await {
                Ok(Claimed::Granted(view)) => return Some(view.token),
                Ok(Claimed::Refused(conflict)) => {
                    // Until the record changes (a release, an expiry).
                    let _ = client.read(Kind::Lock, lock, Some((conflict.version, self.ttl))).await;
                }
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        None
    }

    /// A section like `chaos-worker`'s: 1 to 4 writes, up to a tenth of the
    /// TTL apart.
    async fn section(&self, lock: &str, token: u64, rng: &mut Rng) {
        self.fence.record(Step::Enter, lock, &self.client, token, Hold::Exclusive);
        for _ in 0..1 + rng.below(4) {
            let gap = 1 + rng.below(self.ttl.as_millis() as u64 / 10 + 1);
            tokio::time::sleep(Duration::from_millis(gap)).await;
            self.fence.record(Step::Write, lock, &self.client, token, Hold::Exclusive);
        }
        self.fence.record(Step::Exit, lock, &self.client, token, Hold::Exclusive);
    }
}
