//! One conformance suite, the same test code, for every store: a real
//! elector process over the memory store, a real etcd, and the Kubernetes
//! Lease API emulator (real HTTP; no API server can run here).
//!
//! Cases that need the store to fail apart from the elector (pause,
//! restart) run for etcd and Kubernetes only: the memory store *is* the
//! elector's memory, so it cannot stop answering while the elector runs.
//!
//! `real_cluster::*` runs the suite against a real Kubernetes cluster when
//! `MPSYNC_TEST_KUBECONFIG` names a kubeconfig (they are `#[ignore]`d
//! otherwise; run them with `--run-ignored only`).

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use hyper::{Method, StatusCode};
use mpsync_client::{Claimed, Client, Read};
use mpsync_core::record::KeyDigest;
use mpsync_core::wire::{
    AcquireRequest, ConflictReason, ConflictView, ErrorBody, ErrorCode, Kind, LeaseKey, ReleaseRequest,
};

#[macro_use]
mod common;

use common::*;

// ---------------------------------------------------------------- the cases

async fn acquire_renew_release(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("pod-a", &[]).await;
    assert_eq!(ready(&client).await, StatusCode::OK);
    let name = unique("arr");
    let first = granted(&client, &name, &acquire("w1", 10_000)).await;
    assert_eq!(first.holder, "w1");
    assert_eq!(refused(&client, &name, &acquire("w2", 10_000)).await.reason, ConflictReason::Held);
    assert_eq!(
        refused(&client, &name, &acquire("w1", 10_000)).await.reason,
        ConflictReason::Held,
        "acquire is not renew"
    );
    let renewed = granted(&client, &name, &renew("w1", 10_000, first.token)).await;
    assert_eq!(renewed.token, first.token, "renewal keeps the token");
    assert_ne!(renewed.version, first.version, "every write is a new version");
    let Read::Held(read) = client.read(Kind::Lock, &name, None).await.unwrap() else { panic!("not held") };
    assert_eq!((read.holder.as_str(), read.token), ("w1", first.token));
    assert!(client.release(Kind::Lock, &name, "w1", first.token).await.unwrap());
    assert!(matches!(client.read(Kind::Lock, &name, None).await.unwrap(), Read::Free { .. }));
    assert!(!client.release(Kind::Lock, &name, "w1", first.token).await.unwrap(), "a second release is refused");
    let next = granted(&client, &name, &acquire("w2", 10_000)).await;
    assert!(next.token > first.token, "a new holder gets a larger token: {} then {}", first.token, next.token);
}

/// Only the acquirer, who alone has the key, renews or releases a lease it
/// took with one. The holder and the token are public: a stranger reads
/// them with `GET` and is refused all the same, with or without a key of
/// its own. The store keeps the key's digest, never the key.
async fn only_the_key_holder_renews_or_releases(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("pod-a", &[]).await;
    let name = unique("key");
    let path = format!("/v1/locks/{name}");
    let key = LeaseKey::parse("the-holders-own-key-00001").unwrap();
    let lease = granted(&client, &name, &acquire("w1", 30_000).with_key(Some(&key))).await;
    if let Some(stored) = backend.stored(&name).await {
        assert!(stored.contains(KeyDigest::of(&key).as_str()), "the digest is kept: {stored}");
        assert!(!stored.contains(key.as_str()), "never the key: {stored}");
    }
    let Read::Held(seen) = client.read(Kind::Lock, &name, None).await.unwrap() else { panic!("not held") };
    let wrong = LeaseKey::parse("a-strangers-guess-0000001").unwrap();
    for presented in [None, Some(&wrong)] {
        let conflict = refused(&client, &name, &renew(&seen.holder, 40_000, seen.token).with_key(presented)).await;
        assert_eq!((conflict.reason, conflict.holder.as_deref()), (ConflictReason::WrongKey, Some("w1")));
        let release =
            ReleaseRequest { holder: seen.holder.clone(), token: seen.token, ticket: None, key: presented.cloned() };
        let reply = client.request(Method::DELETE, &path, Some(&release)).await.unwrap();
        assert_eq!(reply.status, StatusCode::CONFLICT);
        assert_eq!(reply.json::<ConflictView>().unwrap().reason, ConflictReason::WrongKey);
    }
    let Read::Held(after) = client.read(Kind::Lock, &name, None).await.unwrap() else { panic!("released") };
    assert_eq!((after.token, after.version, after.ttl_ms), (lease.token, lease.version, 30_000), "nothing written");
    assert_eq!(refused(&client, &name, &acquire("w2", 30_000)).await.reason, ConflictReason::Held);
    // The holder renews (the digest stays with the lease) and releases.
    let renewed = granted(&client, &name, &renew("w1", 30_000, lease.token).with_key(Some(&key))).await;
    assert_eq!(renewed.token, lease.token);
    assert_eq!(
        refused(&client, &name, &renew("w1", 30_000, lease.token)).await.reason,
        ConflictReason::WrongKey,
        "still keyed after a renewal"
    );
    let release = ReleaseRequest { holder: "w1".into(), token: lease.token, ticket: None, key: Some(key.clone()) };
    let reply = client.request(Method::DELETE, &path, Some(&release)).await.unwrap();
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    // Free; the next holder, without a key, is bound to none.
    let next = granted(&client, &name, &acquire("w2", 30_000)).await;
    if let Some(stored) = backend.stored(&name).await {
        assert!(!stored.contains(KeyDigest::of(&key).as_str()), "the old digest went with the old lease: {stored}");
    }
    assert!(client.release(Kind::Lock, &name, "w2", next.token).await.unwrap());
}

async fn expiry(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("pod-a", &[]).await;
    let name = unique("exp");
    let first = granted(&client, &name, &acquire("w1", 300)).await;
    // The long-poll answers when the lease runs out, with nothing written.
    wait_free(&client, Kind::Lock, &name, first.version).await;
    assert_eq!(refused(&client, &name, &renew("w1", 300, first.token)).await.reason, ConflictReason::NotHeld);
    let next = granted(&client, &name, &acquire("w2", 10_000)).await;
    assert!(next.token > first.token);
    assert_eq!(refused(&client, &name, &renew("w1", 300, first.token)).await.reason, ConflictReason::Held);
}

async fn fencing(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("pod-a", &[]).await;
    let name = unique("fence");
    let mut tokens = Vec::new();
    for round in 0..5 {
        let holder = format!("w{round}");
        let lease = granted(&client, &name, &acquire(&holder, 10_000)).await;
        if let Some(previous) = tokens.last() {
            // The previous holder's token is stale now, for renew and release.
            let old = format!("w{}", round - 1);
            assert_eq!(refused(&client, &name, &renew(&old, 10_000, *previous)).await.reason, ConflictReason::Held);
            assert!(!client.release(Kind::Lock, &name, &old, *previous).await.unwrap());
        }
        let wrong = refused(&client, &name, &renew(&holder, 10_000, lease.token + 1)).await;
        assert_eq!(wrong.reason, ConflictReason::StaleToken);
        tokens.push(lease.token);
        assert!(client.release(Kind::Lock, &name, &holder, lease.token).await.unwrap());
    }
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "tokens only grow: {tokens:?}");
}

async fn long_poll_wakes_on_release(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("pod-a", &[]).await;
    let name = unique("poll");
    let lease = granted(&client, &name, &acquire("w1", 30_000)).await;
    let poll = tokio::spawn({
        let (client, name) = (client.clone(), name.clone());
        async move { client.read(Kind::Lock, &name, Some((lease.version, PATIENCE))).await.unwrap() }
    });
    assert!(client.release(Kind::Lock, &name, "w1", lease.token).await.unwrap());
    match tokio::time::timeout(PATIENCE, poll).await.expect("the long-poll never answered").unwrap() {
        Read::Free { version } => assert_ne!(version, lease.version),
        Read::Held(l) => panic!("still held after release: {l:?}"),
    }
}

async fn race_of_32(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("pod-a", &[]).await;
    let name = unique("race");
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let (client, name) = (client.clone(), name.clone());
            tokio::spawn(async move { client.claim(Kind::Lock, &name, &acquire(&format!("w{i}"), 30_000)).await })
        })
        .collect();
    let mut winners = Vec::new();
    let mut refusals = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(Claimed::Granted(lease)) => winners.push(lease),
            Ok(Claimed::Refused(c)) => {
                assert_eq!(c.reason, ConflictReason::Held);
                refusals += 1;
            }
            Ok(queued @ Claimed::Queued(_)) => panic!("nobody asked to wait in line: {queued:?}"),
            // Contention past the retry budget is a 503 to retry, never a
            // second winner.
            Err(e) => assert!(e.to_string().contains("503"), "{e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one winner: {winners:?}");
    assert!(refusals > 0);
    let Read::Held(read) = client.read(Kind::Lock, &name, None).await.unwrap() else { panic!("not held") };
    assert_eq!((read.holder.as_str(), read.token), (winners[0].holder.as_str(), winners[0].token));
}

async fn bad_names_never_reach_the_store(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("pod-a", &[]).await;
    // Let the elector's start-up calls (the watch, a lease) settle first.
    granted(&client, &unique("warm"), &acquire("w", 10_000)).await;
    let before = store_calls(&client).await;
    let requests_before = match &backend {
        Backend::Kubernetes { api, .. } => Some(api.lease_requests()),
        _ => None,
    };
    let too_long_for_a_lease = format!("a{}", ".b".repeat(124)); // 249 characters: fine alone, not as lock.NAME
    let mut names = vec!["Upper".to_owned(), "under_score".to_owned(), "-dash".to_owned(), "a..b".to_owned()];
    names.push("x".repeat(254));
    if matches!(backend, Backend::Kubernetes { .. } | Backend::RealCluster { .. }) {
        names.push(too_long_for_a_lease.clone());
    }
    for name in &names {
        for method in [Method::PUT, Method::GET] {
            let body = (method == Method::PUT).then(|| acquire("w", 1000));
            let reply = client.request(method.clone(), &format!("/v1/locks/{name}"), body.as_ref()).await.unwrap();
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{method} {name}");
            let error: ErrorBody = reply.json().unwrap();
            assert_eq!((error.error, error.field.as_deref()), (ErrorCode::InvalidName, Some("name")), "{name}");
        }
    }
    assert_eq!(store_calls(&client).await, before, "no store call for a bad name");
    if let (Backend::Kubernetes { api, .. }, Some(n)) = (&backend, requests_before) {
        assert_eq!(api.lease_requests(), n, "the API server saw no request for a bad name");
    }
}

async fn store_outage(store: &str) {
    let mut backend = Backend::start(store).await;
    // A short store timeout, so the paused store is reported soon; the
    // elector is awaited ready before anything is asked of it.
    let (_elector, client) = backend.elector("pod-a", &["--store-timeout", "1s"]).await;
    until_ready(&client).await;
    let name = unique("outage");
    let first = granted(&client, &name, &acquire("w1", 30_000)).await;

    backend.pause();
    // A store that does not answer: not ready. (SIGSTOP is delivered
    // asynchronously: a check already on its way may still be answered.)
    until_readyz(&client, StatusCode::SERVICE_UNAVAILABLE).await;
    for request in [renew("w1", 30_000, first.token), acquire("w2", 30_000)] {
        let reply = client.request(Method::PUT, &format!("/v1/locks/{name}"), Some(&request)).await.unwrap();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "never a grant without the store");
        let error: ErrorBody = reply.json().unwrap();
        assert_eq!(error.error, ErrorCode::Unavailable);
        assert!(error.message.contains(backend_name(store)), "the reason names the store: {}", error.message);
    }
    let read = client.request(Method::GET, &format!("/v1/locks/{name}"), None::<&()>).await.unwrap();
    assert_eq!(read.status, StatusCode::SERVICE_UNAVAILABLE);
    backend.resume();
    // The elector's connection may have been torn down meanwhile (HTTP/2
    // keep-alive): ready again once it has reconnected.
    until_ready(&client).await;
    let renewed = granted(&client, &name, &renew("w1", 30_000, first.token)).await;
    assert_eq!(renewed.token, first.token);

    backend.restart().await;
    // Calls in flight across the restart may fail; the elector is ready
    // again once the store answers.
    until_ready(&client).await;
    assert!(client.release(Kind::Lock, &name, "w1", first.token).await.unwrap(), "the record survived the restart");
    let next = granted(&client, &name, &acquire("w2", 30_000)).await;
    assert!(next.token > first.token, "tokens keep growing across a store restart");
}

fn backend_name(store: &str) -> &str {
    match store {
        "real_cluster" => "kubernetes",
        other => other,
    }
}

/// Three electors with their own identities over one store: the original
/// deployment's behaviour on the compatible surface (one pod holds, the
/// others get 409 until it releases or expires).
async fn electors_share_the_store(store: &str) {
    let backend = Backend::start(store).await;
    let mut electors = Vec::new();
    for id in ["pod-a", "pod-b", "pod-c"] {
        electors.push(backend.elector(id, &["--ttl", "2s"]).await);
    }
    let clients: Vec<&Client> = electors.iter().map(|(_, c)| c).collect();
    let name = unique("shared");
    let path = format!("/locks/{name}");
    let put = |c: &Client| {
        let (c, path) = (c.clone(), path.clone());
        async move { c.request(Method::PUT, &path, None::<&()>).await.unwrap() }
    };
    assert_eq!(put(clients[0]).await.status, StatusCode::OK);
    for other in &clients[1..] {
        assert_eq!(put(other).await.status, StatusCode::CONFLICT);
        let get = other.request(Method::GET, &path, None::<&()>).await.unwrap();
        assert_eq!(get.status, StatusCode::OK);
        assert_eq!(get.json::<serde_json::Value>().unwrap()["owner"], "pod-a");
    }
    // pod-a heartbeats; still its.
    assert_eq!(put(clients[0]).await.status, StatusCode::OK);
    assert_eq!(put(clients[1]).await.status, StatusCode::CONFLICT);
    // pod-a stops. Each elector judges the expiry on its own clock; pod-b
    // takes over once it has seen the lease run out.
    let Read::Held(lease) = clients[1].read(Kind::Lock, &name, None).await.unwrap() else { panic!("not held") };
    wait_free(clients[1], Kind::Lock, &name, lease.version).await;
    let taken = put(clients[1]).await;
    assert_eq!(taken.status, StatusCode::OK);
    let taken: serde_json::Value = taken.json().unwrap();
    assert_eq!(taken["owner"], "pod-b");
    assert!(taken["token"].as_u64().unwrap() > lease.token);
    assert_eq!(put(clients[0]).await.status, StatusCode::CONFLICT, "pod-a lost it");
    // A release through one elector frees it for the others at once.
    let b = granted(clients[1], &unique("v1"), &acquire("w-b", 30_000)).await;
    let poll = tokio::spawn({
        let (c, name) = (clients[2].clone(), b.name.clone());
        async move { c.read(Kind::Lock, &name, Some((0, PATIENCE))).await.unwrap() }
    });
    let seen = match tokio::time::timeout(PATIENCE, poll).await.unwrap().unwrap() {
        Read::Held(l) => l,
        Read::Free { .. } => panic!("pod-c does not see pod-b's lease"),
    };
    assert_eq!(seen.holder, "w-b");
    let poll = tokio::spawn({
        let (c, name) = (clients[2].clone(), b.name.clone());
        async move { c.read(Kind::Lock, &name, Some((seen.version, PATIENCE))).await.unwrap() }
    });
    assert!(clients[1].release(Kind::Lock, &b.name, "w-b", b.token).await.unwrap());
    assert!(matches!(tokio::time::timeout(PATIENCE, poll).await.unwrap().unwrap(), Read::Free { .. }));
    granted(clients[2], &b.name, &acquire("w-c", 30_000)).await;
    assert_eq!(refused(clients[0], &b.name, &acquire("w-a", 30_000)).await.holder.as_deref(), Some("w-c"));
}

async fn listing(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("pod-a", &[]).await;
    let prefix = unique("ls");
    let names: Vec<String> = (0..5).map(|i| format!("{prefix}-{i}")).collect();
    let mut tokens = Vec::new();
    for (i, name) in names.iter().enumerate() {
        tokens.push(granted(&client, name, &acquire(&format!("w{i}"), 30_000)).await.token);
    }
    assert!(client.release(Kind::Lock, &names[2], "w2", tokens[2]).await.unwrap());
    let election = format!("{prefix}-e");
    let mut campaign = acquire("r1", 30_000);
    campaign.address = Some("10.0.0.7:8080".into());
    assert!(matches!(client.claim(Kind::Election, &election, &campaign).await.unwrap(), Claimed::Granted(_)));

    // Every page, two records at a time; a real cluster's namespace may
    // hold other records, so only this test's are looked at.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = client.list(Kind::Lock, 2, cursor.as_deref()).await.unwrap();
        assert!(page.items.len() <= 2, "a page holds at most `limit` records");
        pages += 1;
        seen.extend(page.items.into_iter().filter(|r| r.name.starts_with(&prefix)));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 1000, "the listing never ends");
    }
    // A released lock is listed as free, or not at all where the store
    // forgets records nobody holds (the memory store).
    let listed: Vec<&str> = seen.iter().map(|r| r.name.as_str()).collect();
    let held: Vec<&str> = names.iter().enumerate().filter(|(i, _)| *i != 2).map(|(_, n)| n.as_str()).collect();
    let expected = if listed.len() == names.len() { names.iter().map(String::as_str).collect() } else { held };
    assert_eq!(listed, expected, "every lock once, in name order");
    assert!(pages >= listed.len().div_ceil(2), "{} locks in pages of 2 took {pages} pages", listed.len());
    for record in &seen {
        let i: usize = record.name.rsplit('-').next().unwrap().parse().unwrap();
        if i == 2 {
            assert_eq!((record.holder.as_deref(), record.expires_in_ms), (None, None), "released: free");
        } else {
            assert_eq!(record.holder.as_deref(), Some(format!("w{i}").as_str()));
            assert_eq!(record.token, tokens[i]);
            assert!(record.expires_in_ms.is_some_and(|ms| ms <= 30_000));
            assert_eq!(record.ttl_ms, 30_000);
        }
    }
    let elections = client.list(Kind::Election, 1000, None).await.unwrap();
    let ours: Vec<_> = elections.items.iter().filter(|r| r.name.starts_with(&prefix)).collect();
    assert_eq!(ours.len(), 1, "the election is listed with elections only: {ours:?}");
    assert_eq!((ours[0].holder.as_deref(), ours[0].address.as_deref()), (Some("r1"), Some("10.0.0.7:8080")));

    // A cursor the store never gave out: the memory and etcd stores take
    // any name to start after; the Kubernetes API refuses a continue token
    // that is not one, and so does the elector, with 400.
    let reply = client.send(Method::GET, "/v1/locks?cursor=not-a-cursor", None).await.unwrap();
    if store == "kubernetes" || store == "real_cluster" {
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(&reply.body));
        let body: ErrorBody = reply.json().unwrap();
        assert_eq!((body.error, body.field.as_deref()), (ErrorCode::InvalidQuery, Some("cursor")));
    } else {
        assert_eq!(reply.status, StatusCode::OK);
    }
}

// ------------------------------------------------------------- sessions

/// A lease longer than [`PATIENCE`]: a test that waited it out would fail
/// (the etcd store guards leases of at most 45 s by default).
const LONG_TTL_MS: u64 = 40_000;

fn key(seed: &str) -> LeaseKey {
    LeaseKey::parse(&format!("{seed:-<24}")).unwrap()
}

/// The holder's end of a session closes (its process exited: the kernel
/// closes the socket): every lease under it is released at once, as a
/// `DELETE` would, without waiting out the TTL. A parked waiter is
/// answered, the next holder gets a larger token, and a claim naming the
/// closed session grants nothing.
async fn a_closed_session_releases_its_leases_at_once(store: &str) {
    closed_session_releases(store, Shape::Upgrade).await;
}

/// The same, for a streaming session (the shape a component over
/// wasi:http opens): its connection closing in the middle of its body.
async fn a_closed_streaming_session_releases_its_leases_at_once(store: &str) {
    closed_session_releases(store, Shape::Stream).await;
}

async fn closed_session_releases(store: &str, shape: Shape) {
    let backend = Backend::start(store).await;
    let (elector, client) = backend.elector("pod-a", &[]).await;
    let session = open_session_as(elector.addr(), shape).await;
    let (lock, election) = (unique("sess-lock"), unique("sess-elect"));
    let under = |req: AcquireRequest, k: &str| req.with_key(Some(&key(k))).with_session(Some(&session.id));
    let lease = granted(&client, &lock, &under(acquire("w1", LONG_TTL_MS), "lock-key")).await;
    let mut stand = under(acquire("r1", LONG_TTL_MS), "election-key");
    stand.address = Some("10.0.0.7:8080".into());
    let Claimed::Granted(leader) = client.claim(Kind::Election, &election, &stand).await.unwrap() else {
        panic!("not elected")
    };
    // A renewal naming the session keeps it under the session.
    let renewed = granted(&client, &lock, &under(renew("w1", LONG_TTL_MS, lease.token), "lock-key")).await;
    // A renewal that names no session (another process with the same
    // holder, token and key) takes the lease out of the session: its close
    // must not release what someone else renews.
    let detached = unique("sess-detached");
    let taken = granted(&client, &detached, &under(acquire("w9", LONG_TTL_MS), "detached-key")).await;
    let on_its_own = renew("w9", LONG_TTL_MS, taken.token).with_key(Some(&key("detached-key")));
    let kept = granted(&client, &detached, &on_its_own).await;
    let waiter = tokio::spawn({
        let (client, lock) = (client.clone(), lock.clone());
        async move { client.read(Kind::Lock, &lock, Some((renewed.version, PATIENCE))).await.unwrap() }
    });
    drop(session.socket);
    match tokio::time::timeout(PATIENCE, waiter).await.expect("the waiter was never answered").unwrap() {
        Read::Free { .. } => {}
        Read::Held(l) => panic!("still held after its session closed: {l:?}"),
    }
    let next = granted(&client, &lock, &acquire("w2", LONG_TTL_MS)).await;
    assert!(next.token > lease.token, "a larger token: {} then {}", lease.token, next.token);
    wait_free(&client, Kind::Election, &election, leader.version).await;
    let mut successor = acquire("r2", LONG_TTL_MS);
    successor.address = Some("10.0.0.8:8080".into());
    let Claimed::Granted(successor) = client.claim(Kind::Election, &election, &successor).await.unwrap() else {
        panic!("the election was not free")
    };
    assert!(successor.token > leader.token);
    match client.read(Kind::Lock, &detached, None).await.unwrap() {
        Read::Held(l) => assert_eq!((l.holder.as_str(), l.token), ("w9", kept.token), "the detached lease is kept"),
        Read::Free { .. } => panic!("a lease renewed outside the session was released with it"),
    }
    // The session is gone: a claim naming it is refused and grants nothing.
    let fresh = unique("sess-gone");
    let gone = refused(&client, &fresh, &acquire("w3", LONG_TTL_MS).with_session(Some(&session.id))).await;
    assert_eq!((gone.reason, gone.holder), (ConflictReason::SessionGone, None));
    assert!(matches!(client.read(Kind::Lock, &fresh, None).await.unwrap(), Read::Free { .. }), "nothing granted");
}

/// Silence is not evidence: a session whose holder keeps its socket open
/// and says nothing keeps its leases, past many times the idle timeout of
/// an HTTP connection. And a session the elector ends itself (SIGTERM)
/// releases nothing: after a restart on the same store the lease is still
/// held, until its TTL, and the old session is gone.
async fn silence_and_shutdown_release_nothing(store: &str) {
    let backend = Backend::start(store).await;
    let state = testkit::temp_dir("session-state").unwrap();
    let state_file = state.join("elector.json").display().to_string();
    let args = ["--header-read-timeout", "100ms", "--state-file", &state_file];
    let (mut elector, client) = backend.elector("pod-a", &args).await;
    // One session of each shape, each with a lease under it.
    let mut held = Vec::new();
    for shape in [Shape::Upgrade, Shape::Stream] {
        let session = open_session_as(elector.addr(), shape).await;
        let (name, k) = (unique("sess-quiet"), key("quiet-key"));
        let claim = acquire("w1", LONG_TTL_MS).with_key(Some(&k)).with_session(Some(&session.id));
        let lease = granted(&client, &name, &claim).await;
        held.push((session, name, k, lease));
    }
    for (session, name, k, lease) in &held {
        let mut version = lease.version;
        for _ in 0..3 {
            // The elector waits 500 ms (five idle timeouts) for a change; none comes.
            match client.read(Kind::Lock, name, Some((version, Duration::from_millis(500)))).await.unwrap() {
                Read::Held(l) => assert_eq!((l.holder.as_str(), l.token, l.version), ("w1", lease.token, version)),
                Read::Free { .. } => panic!("released while its session was silent"),
            }
            let renewal = renew("w1", LONG_TTL_MS, lease.token).with_key(Some(k)).with_session(Some(&session.id));
            version = granted(&client, name, &renewal).await.version;
        }
    }
    elector.signal("TERM").unwrap();
    assert!(elector.wait().await.unwrap().success());
    let (_restarted, client) = backend.elector("pod-b", &args).await;
    for (session, name, k, lease) in held {
        drop(session.socket);
        let conflict = refused(&client, &name, &acquire("w2", LONG_TTL_MS)).await;
        assert_eq!(conflict.reason, ConflictReason::Held, "still held after the elector's own shutdown");
        assert!(conflict.expires_in_ms > 0);
        let renewal = renew("w1", LONG_TTL_MS, lease.token).with_key(Some(&k)).with_session(Some(&session.id));
        assert_eq!(refused(&client, &name, &renewal).await.reason, ConflictReason::SessionGone);
    }
    let _ = std::fs::remove_dir_all(state);
}

/// What a session request is refused with: no upgrade asked for (400),
/// past `--max-sessions` (429, counted); the open one is on `/metrics`.
async fn session_refusals(store: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = Backend::start(store).await;
    let (elector, client) = backend.elector("pod-a", &["--max-sessions", "1"]).await;
    let plain = client.request(Method::POST, "/v1/sessions", None::<&()>).await.unwrap();
    assert_eq!(plain.status, StatusCode::BAD_REQUEST);
    let error: ErrorBody = plain.json().unwrap();
    assert_eq!(error.error, ErrorCode::UpgradeRequired);
    assert!(error.message.contains("Upgrade: mpsync-session"), "{}", error.message);
    let _open = open_session(elector.addr()).await;
    let mut second = tokio::net::TcpStream::connect(elector.addr()).await.unwrap();
    let request = "POST /v1/sessions HTTP/1.1\r\nhost: elector\r\nconnection: upgrade\r\nupgrade: mpsync-session\r\n\
                   content-length: 0\r\n\r\n";
    second.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(second.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 429 ") && head.contains("retry-after: 1"), "{head}");
    let metrics = client.request(Method::GET, "/metrics", None::<&()>).await.unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    for line in ["mpsync_refusals_total{limit=\"sessions\"} 1", "mpsync_sessions 1"] {
        assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
    }
}

suite!(memory: acquire_renew_release, only_the_key_holder_renews_or_releases, expiry, fencing, long_poll_wakes_on_release,
    race_of_32, bad_names_never_reach_the_store, listing, a_closed_session_releases_its_leases_at_once,
    a_closed_streaming_session_releases_its_leases_at_once, silence_and_shutdown_release_nothing, session_refusals);
suite!(etcd: acquire_renew_release, only_the_key_holder_renews_or_releases, expiry, fencing, long_poll_wakes_on_release,
    race_of_32, bad_names_never_reach_the_store, store_outage, electors_share_the_store, listing,
    a_closed_session_releases_its_leases_at_once, a_closed_streaming_session_releases_its_leases_at_once,
    silence_and_shutdown_release_nothing);
suite!(kubernetes: acquire_renew_release, only_the_key_holder_renews_or_releases, expiry, fencing,
    long_poll_wakes_on_release, race_of_32, bad_names_never_reach_the_store, store_outage, electors_share_the_store,
    listing, a_closed_session_releases_its_leases_at_once, a_closed_streaming_session_releases_its_leases_at_once,
    silence_and_shutdown_release_nothing);
suite!(real_cluster #[ignore = "needs MPSYNC_TEST_KUBECONFIG (a real cluster)"]: acquire_renew_release,
    only_the_key_holder_renews_or_releases, expiry, fencing, long_poll_wakes_on_release, race_of_32,
    bad_names_never_reach_the_store, electors_share_the_store, listing);
