//! The stranger: a process that can reach the elector but holds nothing,
//! and tries to renew and to release other holders' locks.
//!
//! Now and then it reads a lock (`GET /v1/locks/NAME`); when it is held, it
//! copies the holder and the token from the answer, which any reader sees,
//! and tries to renew the lease (`PUT` with that holder and token) and to
//! release it (`DELETE`), once without a key and once with a key of its
//! own. Every contender acquires with a key of its own, so the elector must
//! refuse each attempt (409 `wrong_key`, or `stale_token` when the lease
//! changed hands meanwhile). Each attempt goes into the history, accepted or
//! not; the checker counts every accepted one as a violation.

use std::time::Duration;

use mpsync_client::{Claimed, Client, Kind, Read};
use mpsync_core::wire::{AcquireRequest, LeaseKey, ReleaseRequest};
use tokio::sync::watch;

use crate::fence::{Fence, Step};
use crate::rng::Rng;

/// Prowls until `stop` turns true: one lock every `every` on average, on a
/// random elector.
pub async fn prowl(
    urls: Vec<String>,
    locks: Vec<String>,
    fence: Fence,
    every: Duration,
    mut rng: Rng,
    mut stop: watch::Receiver<bool>,
) {
    let clients: Vec<Client> = urls.iter().map(|u| Client::new(u)).collect();
    let mut round = 0u64;
    while !*stop.borrow() {
        let pause = every.mul_f64(0.5 + rng.unit());
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.changed() => break,
        }
        let client = &clients[rng.below(clients.len() as u64) as usize];
        let name = &locks[rng.below(locks.len() as u64) as usize];
        let Ok(Read::Held(view)) = client.read(Kind::Lock, name, None).await else { continue };
        // Alternately no key and a key of its own, for each request.
        let own = LeaseKey::from_random(&rng.next_u64().to_le_bytes().repeat(2));
        let (renew_key, release_key) = if round.is_multiple_of(2) { (None, Some(own)) } else { (Some(own), None) };
        round += 1;
        let renewal = AcquireRequest::new(&view.holder, Duration::from_millis(view.ttl_ms), Some(view.token), None)
            .with_key(renew_key.as_ref());
        // An attempt that got no answer is not recorded: nothing was
        // accepted that anyone knows of.
        if let Ok(answer) = client.claim(Kind::Lock, name, &renewal).await {
            fence.record_attempt(Step::Renew, name, &view.holder, view.token, matches!(answer, Claimed::Granted(_)));
        }
        let release = ReleaseRequest { holder: view.holder.clone(), token: view.token, ticket: None, key: release_key };
        if let Ok(released) = client.release_with(Kind::Lock, name, &release).await {
            fence.record_attempt(Step::Release, name, &view.holder, view.token, released);
        }
    }
}
