//! Fair locks on every store (a real elector over memory, a real etcd, the
//! Lease API emulator): waiters get the lock in the order they came, a
//! release wakes only the next one, nobody jumps the line, and a waiter
//! that dies or gives up leaves it.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use hyper::Method;
use mpsync_client::{Claimed, Client, Read};
use mpsync_core::wire::{AcquireRequest, ConflictReason, Kind, LeaseView, QueuedView, ReleaseRequest};

#[macro_use]
mod common;

use common::*;

/// Long enough that no lease or place in these cases runs out unless the
/// case says so (the etcd store guards at most 45 s).
const TTL_MS: u64 = 40_000;
/// How long a parked waiter waits per request: half the TTL, the most.
const PARK: Duration = Duration::from_millis(TTL_MS / 2);

/// A claim to wait in line as `holder` (with the place `ticket`, if any),
/// parked up to `wait`.
fn in_line(holder: &str, ttl_ms: u64, ticket: Option<u64>, wait: Duration) -> AcquireRequest {
    acquire(holder, ttl_ms).in_line(ticket, wait)
}

async fn place(client: &Client, name: &str, holder: &str, ttl_ms: u64) -> QueuedView {
    match client.claim(Kind::Lock, name, &in_line(holder, ttl_ms, None, Duration::ZERO)).await.unwrap() {
        Claimed::Queued(place) => place,
        other => panic!("{holder} took no place in line: {other:?}"),
    }
}

/// Waits in line with `ticket` until the lock is handed over (a request
/// answered `202` at the end of its wait is sent again).
async fn turn(client: Client, name: String, holder: &'static str, ticket: u64) -> LeaseView {
    loop {
        match client.claim(Kind::Lock, &name, &in_line(holder, TTL_MS, Some(ticket), PARK)).await.unwrap() {
            Claimed::Granted(lease) => return lease,
            Claimed::Queued(_) => continue,
            Claimed::Refused(c) => panic!("{holder} lost its place: {c:?}"),
        }
    }
}

fn release(holder: &str, token: u64) -> ReleaseRequest {
    ReleaseRequest { holder: holder.into(), token, ticket: None, key: None }
}

/// Answers of `PUT /v1/locks/…` so far with `status`.
async fn put_answers(client: &Client, status: u16) -> u64 {
    let reply = client.request(Method::GET, "/metrics", None::<&()>).await.unwrap();
    let prefix = format!("mpsync_request_duration_seconds_count{{route=\"lock_put\",status=\"{status}\"}} ");
    String::from_utf8_lossy(&reply.body).lines().find_map(|l| l.strip_prefix(&prefix)?.parse().ok()).unwrap_or(0)
}

/// The waiters the listing shows for lock `name`, next first.
async fn line(client: &Client, name: &str) -> Vec<String> {
    let page = client.list(Kind::Lock, 1000, None).await.unwrap();
    let record = page.items.into_iter().find(|r| r.name == name);
    record.map(|r| r.line.into_iter().map(|w| w.holder).collect()).unwrap_or_default()
}

/// Asks the listing every 20 ms (a place running out writes nothing to
/// wait on) until the line of `name` is `expected`.
async fn until_line(client: &Client, name: &str, expected: &[&str]) {
    let mut every = tokio::time::interval(Duration::from_millis(20));
    let seen = tokio::time::timeout(PATIENCE, async {
        loop {
            every.tick().await;
            let now = line(client, name).await;
            if now == expected {
                return now;
            }
        }
    })
    .await;
    assert!(seen.is_ok(), "the line of {name} never became {expected:?}: {:?}", line(client, name).await);
}

fn leave(holder: &str, ticket: u64) -> ReleaseRequest {
    ReleaseRequest { holder: holder.into(), token: 0, ticket: Some(ticket), key: None }
}

/// Three waiters take places in order; each release hands the lock to the
/// next, with a larger token, and answers only that waiter's parked
/// request; a plain acquisition is refused while anyone waits.
async fn waiters_are_served_in_order(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("pod-a", &[]).await;
    let name = unique("fair");
    let first = granted(&client, &name, &acquire("a", TTL_MS)).await;
    let places = [place(&client, &name, "b", TTL_MS).await, place(&client, &name, "c", TTL_MS).await];
    assert_eq!(places.iter().map(|p| (p.position, p.waiting)).collect::<Vec<_>>(), [(0, 1), (1, 2)]);
    assert_eq!(places[0].holder.as_deref(), Some("a"));
    assert_eq!(line(&client, &name).await, ["b", "c"]);
    let jumper = refused(&client, &name, &acquire("x", TTL_MS)).await;
    assert_eq!((jumper.reason, jumper.holder.as_deref()), (ConflictReason::Held, Some("a")));
    let [b, c] = [("b", places[0].ticket), ("c", places[1].ticket)]
        .map(|(holder, ticket)| tokio::spawn(turn(client.clone(), name.clone(), holder, ticket)));
    let Read::Held(view) = client.read(Kind::Lock, &name, None).await.unwrap() else { panic!() };
    assert_eq!(view.waiting, 2);
    let (granted_before, queued_before) = (put_answers(&client, 200).await, put_answers(&client, 202).await);
    assert!(client.release_with(Kind::Lock, &name, &release("a", first.token)).await.unwrap());
    let b = tokio::time::timeout(PATIENCE, b).await.expect("b was never handed the lock").unwrap();
    assert!(b.token > first.token, "{} then {}", first.token, b.token);
    assert_eq!(put_answers(&client, 200).await, granted_before + 1, "the release answered b's request");
    assert_eq!(put_answers(&client, 202).await, queued_before, "and nobody else's");
    assert!(!c.is_finished(), "c was not handed the lock");
    // Free between two holders, the lock still goes to the line.
    let Claimed::Refused(jumper) = client.claim(Kind::Lock, &name, &acquire("x", TTL_MS)).await.unwrap() else {
        panic!("x jumped the line")
    };
    assert_eq!(jumper.holder.as_deref(), Some("b"));
    assert!(client.release_with(Kind::Lock, &name, &release("b", b.token)).await.unwrap());
    // Well before c's request would end on its own: only the hand-over
    // can answer it in time.
    let c = tokio::time::timeout(PARK / 2, c).await.expect("c's parked request was not woken").unwrap();
    assert!(c.token > b.token);
    assert_eq!(put_answers(&client, 202).await, queued_before);
    assert!(client.release_with(Kind::Lock, &name, &release("c", c.token)).await.unwrap());
    let last = granted(&client, &name, &acquire("x", TTL_MS)).await;
    assert!(last.token > c.token, "the line is empty: a plain acquisition is granted");
}

/// A waiter whose place runs out unrefreshed is dropped from the line, and
/// one that gives up leaves it at once: neither is handed the lock.
async fn a_waiter_that_dies_or_gives_up_leaves_the_line(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("pod-a", &[]).await;
    let name = unique("fair-dead");
    let first = granted(&client, &name, &acquire("a", TTL_MS)).await;
    // b dies at once: a place of 300 ms it never refreshes.
    let dead = place(&client, &name, "b", 300).await;
    let quitter = place(&client, &name, "q", TTL_MS).await;
    let c = place(&client, &name, "c", TTL_MS).await;
    assert!(client.release_with(Kind::Lock, &name, &leave("q", quitter.ticket)).await.unwrap(), "q leaves");
    until_line(&client, &name, &["c"]).await;
    let c = tokio::spawn(turn(client.clone(), name.clone(), "c", c.ticket));
    assert!(client.release_with(Kind::Lock, &name, &release("a", first.token)).await.unwrap());
    let Read::Held(handed) = client.read(Kind::Lock, &name, None).await.unwrap() else { panic!("not handed over") };
    assert_eq!(handed.holder, "c", "the release went past the dead and the gone");
    let c = tokio::time::timeout(PATIENCE, c).await.expect("c was never handed the lock").unwrap();
    assert!(c.token > first.token);
    for (holder, ticket) in [("b", dead.ticket), ("q", quitter.ticket)] {
        let gone = refused(&client, &name, &in_line(holder, TTL_MS, Some(ticket), Duration::ZERO)).await;
        assert_eq!(gone.reason, ConflictReason::NotQueued, "{holder}");
    }
}

/// A waiter handed the lock that never comes for it (it died while
/// waiting) holds it for its own TTL, no longer: the next waiter gets it
/// then.
async fn a_dead_waiter_handed_the_lock_holds_it_for_its_ttl_only(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("pod-a", &[]).await;
    let name = unique("fair-handed");
    let first = granted(&client, &name, &acquire("a", TTL_MS)).await;
    let dead = place(&client, &name, "d", 1_000).await;
    let next = place(&client, &name, "e", TTL_MS).await;
    let e = tokio::spawn(turn(client.clone(), name.clone(), "e", next.ticket));
    assert!(client.release_with(Kind::Lock, &name, &release("a", first.token)).await.unwrap());
    let Read::Held(handed) = client.read(Kind::Lock, &name, None).await.unwrap() else { panic!("not handed over") };
    assert_eq!(handed.holder, "d", "the lock went to the first in line, dead or not");
    let e = tokio::time::timeout(PATIENCE, e).await.expect("e was never handed the lock").unwrap();
    assert!(e.token > handed.token, "d's lease ran out; e holds it with a larger token");
    let gone = refused(&client, &name, &in_line("d", 1_000, Some(dead.ticket), Duration::ZERO)).await;
    assert_eq!(gone.reason, ConflictReason::NotQueued);
}

/// A waiter the lock was handed to between two of its requests learns of
/// it from the next, which renews the lease before answering: the
/// hand-over was written before that request was sent, and every elector
/// dates the lease from the hand-over, earlier than the holder would count
/// it. A waiter parked when the lock is handed over needs no renewal.
async fn a_waiter_told_late_of_its_hand_over_gets_a_renewed_lease(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("pod-a", &[]).await;
    let name = unique("fair-late");
    let renewals = |client: Client| async move {
        let reply = client.request(Method::GET, "/metrics", None::<&()>).await.unwrap();
        let text = String::from_utf8_lossy(&reply.body).into_owned();
        text.lines().find_map(|l| l.strip_prefix("mpsync_renewals_total{kind=\"lock\"} ")?.parse::<u64>().ok()).unwrap()
    };
    let first = granted(&client, &name, &acquire("a", TTL_MS)).await;
    let b = place(&client, &name, "b", TTL_MS).await;
    assert!(client.release_with(Kind::Lock, &name, &release("a", first.token)).await.unwrap());
    let before = renewals(client.clone()).await;
    let Claimed::Granted(lease) =
        client.claim(Kind::Lock, &name, &in_line("b", TTL_MS, Some(b.ticket), PARK)).await.unwrap()
    else {
        panic!("b was not handed the lock")
    };
    assert!(lease.token > first.token);
    assert_eq!(renewals(client.clone()).await, before + 1, "renewed before the answer");
    // Parked when the hand-over comes: the lease is dated after its request.
    let c = place(&client, &name, "c", TTL_MS).await;
    let c = tokio::spawn(turn(client.clone(), name.clone(), "c", c.ticket));
    until_waiting_parked(&client).await;
    assert!(client.release_with(Kind::Lock, &name, &release("b", lease.token)).await.unwrap());
    c.await.unwrap();
    assert_eq!(renewals(client.clone()).await, before + 1, "no renewal for a waiter told at once");
}

/// Asks /metrics every 20 ms until one waiter is parked.
async fn until_waiting_parked(client: &Client) {
    let mut every = tokio::time::interval(Duration::from_millis(20));
    let parked = tokio::time::timeout(PATIENCE, async {
        loop {
            every.tick().await;
            let reply = client.request(Method::GET, "/metrics", None::<&()>).await.unwrap();
            if String::from_utf8_lossy(&reply.body).lines().any(|l| l == "mpsync_waiters 1") {
                return;
            }
        }
    })
    .await;
    assert!(parked.is_ok(), "the waiter never parked");
}

/// The line is kept in the store: a new elector on it serves the same
/// places in the same order, and two electors serve one line.
async fn the_line_is_in_the_store(store: &str) {
    let backend = Backend::start(store).await;
    let (elector, client) = backend.elector("pod-a", &[]).await;
    let name = unique("fair-store");
    let first = granted(&client, &name, &acquire("a", TTL_MS)).await;
    let b = place(&client, &name, "b", TTL_MS).await;
    let c = place(&client, &name, "c", TTL_MS).await;
    drop(elector);
    let (_one, one) = backend.elector("pod-b", &[]).await;
    let (_two, two) = backend.elector("pod-c", &[]).await;
    assert_eq!(line(&one, &name).await, ["b", "c"], "the places outlive the elector that gave them");
    let b = tokio::spawn(turn(one.clone(), name.clone(), "b", b.ticket));
    let c = tokio::spawn(turn(two.clone(), name.clone(), "c", c.ticket));
    assert!(two.release_with(Kind::Lock, &name, &release("a", first.token)).await.unwrap());
    let b = tokio::time::timeout(PATIENCE, b).await.expect("b was never handed the lock").unwrap();
    assert!(b.token > first.token);
    assert!(!c.is_finished());
    // Released through one elector, handed over to a waiter parked on the other.
    assert!(one.release_with(Kind::Lock, &name, &release("b", b.token)).await.unwrap());
    let c = tokio::time::timeout(PATIENCE, c).await.expect("c was never handed the lock").unwrap();
    assert!(c.token > b.token);
}

/// A place taken under a session is given up when the holder's end of the
/// session closes; so is a lease handed over to it.
async fn a_closed_session_gives_up_its_places(store: &str) {
    let backend = Backend::start(store).await;
    let (elector, client) = backend.elector("pod-a", &[]).await;
    let name = unique("fair-session");
    let first = granted(&client, &name, &acquire("a", TTL_MS)).await;
    let session = open_session(elector.addr()).await;
    let under = in_line("b", TTL_MS, None, Duration::ZERO).with_session(Some(&session.id));
    let Claimed::Queued(b) = client.claim(Kind::Lock, &name, &under).await.unwrap() else { panic!() };
    let c = place(&client, &name, "c", TTL_MS).await;
    assert_eq!(line(&client, &name).await, ["b", "c"]);
    drop(session.socket);
    until_line(&client, &name, &["c"]).await;
    let c = tokio::spawn(turn(client.clone(), name.clone(), "c", c.ticket));
    assert!(client.release_with(Kind::Lock, &name, &release("a", first.token)).await.unwrap());
    let c = tokio::time::timeout(PATIENCE, c).await.expect("c was never handed the lock").unwrap();
    assert!(c.token > first.token);
    let gone = refused(&client, &name, &in_line("b", TTL_MS, Some(b.ticket), Duration::ZERO)).await;
    assert_eq!(gone.reason, ConflictReason::NotQueued);
}

/// Places are bound to the key they were taken with, and checked as a
/// lease's is; a request that asks to wait in line is checked too.
async fn places_are_keyed_and_requests_checked(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("pod-a", &[]).await;
    let name = unique("fair-key");
    let first = granted(&client, &name, &acquire("a", TTL_MS)).await;
    let secret = mpsync_core::wire::LeaseKey::parse("the-waiters-own-key-00001").unwrap();
    let keyed = in_line("b", TTL_MS, None, Duration::ZERO).with_key(Some(&secret));
    let Claimed::Queued(b) = client.claim(Kind::Lock, &name, &keyed).await.unwrap() else { panic!() };
    let stranger = refused(&client, &name, &in_line("b", TTL_MS, Some(b.ticket), Duration::ZERO)).await;
    assert_eq!(stranger.reason, ConflictReason::WrongKey);
    assert!(!client.release_with(Kind::Lock, &name, &leave("b", b.ticket)).await.unwrap(), "no key, no leaving");
    let b = tokio::spawn({
        let (client, name) = (client.clone(), name.clone());
        async move {
            let mine = in_line("b", TTL_MS, Some(b.ticket), PARK).with_key(Some(&secret));
            loop {
                match client.claim(Kind::Lock, &name, &mine).await.unwrap() {
                    Claimed::Granted(lease) => return lease,
                    Claimed::Queued(_) => continue,
                    Claimed::Refused(c) => panic!("refused: {c:?}"),
                }
            }
        }
    });
    assert!(client.release_with(Kind::Lock, &name, &release("a", first.token)).await.unwrap());
    let b = tokio::time::timeout(PATIENCE, b).await.expect("b was never handed the lock").unwrap();
    let unkeyed = refused(&client, &name, &renew("b", TTL_MS, b.token)).await;
    assert_eq!(unkeyed.reason, ConflictReason::WrongKey, "the lease handed over is bound to the place's key");
    for (body, field) in [
        (serde_json::json!({"holder": "z", "ttl_ms": 1000, "ticket": 3}), "ticket"),
        (serde_json::json!({"holder": "z", "ttl_ms": 1000, "queue": true, "token": 3}), "queue"),
        (serde_json::json!({"holder": "z", "ttl_ms": 1000, "queue": true, "wait_ms": 300_001}), "wait_ms"),
    ] {
        let reply = client.request(Method::PUT, &format!("/v1/locks/{name}"), Some(&body)).await.unwrap();
        assert_eq!(reply.status, 400, "{body}");
        let error: mpsync_core::wire::ErrorBody = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(error.field.as_deref(), Some(field), "{body}");
    }
    let election = serde_json::json!({"holder": "z", "ttl_ms": 1000, "queue": true});
    let reply = client.request(Method::PUT, &format!("/v1/elections/{name}"), Some(&election)).await.unwrap();
    assert_eq!(reply.status, 400, "candidates do not wait in line");
}

suite!(memory: waiters_are_served_in_order, a_waiter_that_dies_or_gives_up_leaves_the_line,
    a_waiter_told_late_of_its_hand_over_gets_a_renewed_lease,
    a_dead_waiter_handed_the_lock_holds_it_for_its_ttl_only, a_closed_session_gives_up_its_places,
    places_are_keyed_and_requests_checked);
suite!(etcd: waiters_are_served_in_order, a_waiter_that_dies_or_gives_up_leaves_the_line,
    a_waiter_told_late_of_its_hand_over_gets_a_renewed_lease,
    a_dead_waiter_handed_the_lock_holds_it_for_its_ttl_only, the_line_is_in_the_store,
    a_closed_session_gives_up_its_places, places_are_keyed_and_requests_checked);
suite!(kubernetes: waiters_are_served_in_order, a_waiter_that_dies_or_gives_up_leaves_the_line,
    a_waiter_told_late_of_its_hand_over_gets_a_renewed_lease,
    a_dead_waiter_handed_the_lock_holds_it_for_its_ttl_only, the_line_is_in_the_store,
    a_closed_session_gives_up_its_places, places_are_keyed_and_requests_checked);
suite!(real_cluster #[ignore = "needs MPSYNC_TEST_KUBECONFIG (a real cluster)"]: waiters_are_served_in_order,
    a_waiter_that_dies_or_gives_up_leaves_the_line, the_line_is_in_the_store);
