//! Semaphores and read-write locks on every store (a real elector over
//! memory, a real etcd, the Lease API emulator): shared holds beside each
//! other and never beside the exclusive one, each with its own lease and a
//! token that grows per name, waiters served in order.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use mpsync_client::{Claimed, Client, Read};
use mpsync_core::wire::{AcquireRequest, ConflictReason, Kind, LeaseView, ReleaseRequest};

#[macro_use]
mod common;

use common::*;

const TTL_MS: u64 = 40_000;
const PARK: Duration = Duration::from_millis(TTL_MS / 2);

fn shared(holder: &str, ttl_ms: u64, permits: Option<u32>) -> AcquireRequest {
    acquire(holder, ttl_ms).shared(permits)
}

fn release(holder: &str, token: u64) -> ReleaseRequest {
    ReleaseRequest { holder: holder.into(), token, ticket: None, key: None }
}

/// Takes a place in line with `request` (answered at once), then waits
/// its turn in a task: the lease it is handed.
async fn queued(client: &Client, name: &str, request: AcquireRequest) -> tokio::task::JoinHandle<LeaseView> {
    let first = request.clone().in_line(None, Duration::ZERO);
    let Claimed::Queued(place) = client.claim(Kind::Lock, name, &first).await.unwrap() else {
        panic!("{} took no place in line", request.holder)
    };
    let (client, name) = (client.clone(), name.to_owned());
    tokio::spawn(async move {
        let again = request.in_line(Some(place.ticket), PARK);
        loop {
            match client.claim(Kind::Lock, &name, &again).await.unwrap() {
                Claimed::Granted(lease) => return lease,
                Claimed::Queued(_) => continue,
                Claimed::Refused(c) => panic!("{} lost its place: {c:?}", again.holder),
            }
        }
    })
}

async fn handed(task: tokio::task::JoinHandle<LeaseView>, who: &str) -> LeaseView {
    tokio::time::timeout(PATIENCE, task).await.unwrap_or_else(|_| panic!("{who} was never handed the lock")).unwrap()
}

/// A semaphore of two: two shared holds at once, each with its own permit
/// and token; a third waits and gets the permit the first gives back; a
/// claim naming other permits, and the exclusive hold, are refused.
async fn a_semaphore_lets_in_its_permits(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("pod-a", &[]).await;
    let name = unique("sem");
    let a = granted(&client, &name, &shared("a", TTL_MS, Some(2))).await;
    let b = granted(&client, &name, &shared("b", TTL_MS, Some(2))).await;
    assert_eq!((a.shared, a.permit, b.shared, b.permit), (true, Some(0), true, Some(1)));
    assert!(b.token > a.token);
    let full = refused(&client, &name, &shared("c", TTL_MS, Some(2))).await;
    assert_eq!(full.reason, ConflictReason::Held);
    let other = refused(&client, &name, &shared("x", TTL_MS, Some(3))).await;
    assert_eq!(other.reason, ConflictReason::PermitsDiffer);
    let writer = refused(&client, &name, &acquire("w", TTL_MS)).await;
    assert_eq!(writer.reason, ConflictReason::Held);
    let renewed =
        granted(&client, &name, &AcquireRequest { token: Some(b.token), ..shared("b", TTL_MS, Some(2)) }).await;
    assert_eq!((renewed.token, renewed.permit), (b.token, Some(1)), "a renewal keeps token and permit");
    let page = client.list(Kind::Lock, 1000, None).await.unwrap();
    let record = page.items.iter().find(|r| r.name == name).unwrap();
    assert_eq!(record.permits, Some(2));
    assert_eq!(
        record.shares.iter().map(|s| (s.holder.as_str(), s.permit)).collect::<Vec<_>>(),
        [("a", Some(0)), ("b", Some(1))]
    );
    let c = queued(&client, &name, shared("c", TTL_MS, Some(2))).await;
    assert!(client.release_with(Kind::Lock, &name, &release("a", a.token)).await.unwrap());
    let c = handed(c, "c").await;
    assert_eq!((c.shared, c.permit), (true, Some(0)), "the permit a gave back");
    assert!(c.token > b.token, "tokens only grow per name: {} after {}", c.token, b.token);
}

/// Readers share; a writer waits for every reader, and readers that come
/// after it wait behind it (no starvation); each grant has a larger token.
async fn readers_share_and_a_writer_is_not_starved(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("pod-a", &[]).await;
    let name = unique("rw");
    let r1 = granted(&client, &name, &shared("r1", TTL_MS, None)).await;
    let r2 = granted(&client, &name, &shared("r2", TTL_MS, None)).await;
    assert_eq!((r1.permit, r2.permit), (None, None), "readers have no permit");
    let Read::Held(view) = client.read(Kind::Lock, &name, None).await.unwrap() else { panic!("not held") };
    assert!(view.shared && view.token == r2.token, "a read shows the newest shared hold: {view:?}");
    let w = queued(&client, &name, acquire("w", TTL_MS)).await;
    let r3 = queued(&client, &name, shared("r3", TTL_MS, None)).await;
    let late = refused(&client, &name, &shared("r4", TTL_MS, None)).await;
    assert_eq!(late.reason, ConflictReason::Queued, "a reader does not pass a waiting writer");
    assert!(client.release_with(Kind::Lock, &name, &release("r1", r1.token)).await.unwrap());
    assert!(!w.is_finished() && !r3.is_finished());
    assert!(client.release_with(Kind::Lock, &name, &release("r2", r2.token)).await.unwrap());
    let w = handed(w, "w").await;
    assert!(!w.shared && w.token > r2.token);
    assert!(!r3.is_finished(), "no reader beside the writer");
    assert!(client.release_with(Kind::Lock, &name, &release("w", w.token)).await.unwrap());
    let r3 = handed(r3, "r3").await;
    assert!(r3.shared && r3.token > w.token);
}

/// A shared holder that dies holds its permit for its TTL only, and the
/// waiter gets it then; a waiter's writes (refreshing its place) do not
/// make a dead exclusive holder's lease look renewed either.
async fn dead_holders_run_out_whatever_the_waiters_write(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("pod-a", &[]).await;
    let name = unique("sem-dead");
    let dead = granted(&client, &name, &shared("d", 600, Some(1))).await;
    let next = queued(&client, &name, shared("n", TTL_MS, Some(1))).await;
    let next = handed(next, "n").await;
    assert!(next.token > dead.token);
    // An exclusive holder that dies, and a waiter refreshing its place
    // every 100 ms (a quarter of its TTL), a write each time.
    let lock = unique("excl-dead");
    let gone = granted(&client, &lock, &acquire("g", 1_000)).await;
    let waiter = acquire("busy", 400);
    let Claimed::Queued(place) =
        client.claim(Kind::Lock, &lock, &waiter.clone().in_line(None, Duration::ZERO)).await.unwrap()
    else {
        panic!()
    };
    let busy = tokio::spawn({
        let (client, lock) = (client.clone(), lock.clone());
        async move {
            let again = waiter.in_line(Some(place.ticket), Duration::from_millis(100));
            loop {
                match client.claim(Kind::Lock, &lock, &again).await.unwrap() {
                    Claimed::Granted(lease) => return lease,
                    Claimed::Queued(_) => continue,
                    Claimed::Refused(c) => panic!("lost its place: {c:?}"),
                }
            }
        }
    });
    let busy = handed(busy, "the busy waiter").await;
    assert!(busy.token > gone.token);
}

/// Each shared hold under a session is released when the holder's end
/// closes, and the permit goes to the next waiter.
async fn a_closed_session_releases_its_shared_holds(store: &str) {
    let backend = Backend::start(store).await;
    let (elector, client) = backend.elector("pod-a", &[]).await;
    let name = unique("sem-session");
    let session = open_session(elector.addr()).await;
    let mine = |holder: &str| shared(holder, TTL_MS, Some(2)).with_session(Some(&session.id));
    let (a, b) = (granted(&client, &name, &mine("a")).await, granted(&client, &name, &mine("b")).await);
    let c = queued(&client, &name, shared("c", TTL_MS, Some(2))).await;
    drop(session.socket);
    let c = handed(c, "c").await;
    assert!(c.token > a.token.max(b.token));
    // The two releases run side by side: c may be handed a's permit before
    // b's is written. Ask the listing every 20 ms until it settles.
    let mut every = tokio::time::interval(Duration::from_millis(20));
    let settled = tokio::time::timeout(PATIENCE, async {
        loop {
            every.tick().await;
            let page = client.list(Kind::Lock, 1000, None).await.unwrap();
            let record = page.items.iter().find(|r| r.name == name).unwrap();
            if record.shares.iter().map(|s| s.holder.as_str()).collect::<Vec<_>>() == ["c"] {
                return;
            }
        }
    })
    .await;
    assert!(settled.is_ok(), "both holds released, only c's left");
}

suite!(memory: a_semaphore_lets_in_its_permits, readers_share_and_a_writer_is_not_starved,
    dead_holders_run_out_whatever_the_waiters_write, a_closed_session_releases_its_shared_holds);
suite!(etcd: a_semaphore_lets_in_its_permits, readers_share_and_a_writer_is_not_starved,
    dead_holders_run_out_whatever_the_waiters_write, a_closed_session_releases_its_shared_holds);
suite!(kubernetes: a_semaphore_lets_in_its_permits, readers_share_and_a_writer_is_not_starved,
    dead_holders_run_out_whatever_the_waiters_write, a_closed_session_releases_its_shared_holds);
suite!(real_cluster #[ignore = "needs MPSYNC_TEST_KUBECONFIG (a real cluster)"]: a_semaphore_lets_in_its_permits,
    readers_share_and_a_writer_is_not_starved);
