//! Leadership transfer on every store (`POST /v1/elections/{name}/transfer`):
//! the leader is asked, its client steps down, the named candidate wins
//! with a larger token, and the reservation keeps everyone else (the old
//! leader included) out for one TTL, then lets anyone in. On Kubernetes the
//! transfer is `spec.preferredHolder`, whoever writes it.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use hyper::{Method, StatusCode};
use mpsync_client::{Claimed, Client, Lease, Options, Read};
use mpsync_core::wire::{AcquireRequest, ConflictReason, ConflictView, Kind, LeaseView, TransferRequest, TransferView};

#[macro_use]
mod common;

use common::*;

/// Each test makes a few requests within one TTL (a leader's renewal after
/// the transfer, a claim refused while the reservation lasts): 5 s leaves a
/// loaded machine room. Only `a_transfer_away_keeps_only_the_old_leader_out`
/// waits one out.
const TTL_MS: u64 = 5_000;

fn stand(holder: &str) -> AcquireRequest {
    AcquireRequest::new(holder, Duration::from_millis(TTL_MS), None, Some("10.0.0.7:8080"))
}

async fn leads(client: &Client, name: &str, req: &AcquireRequest) -> LeaseView {
    match client.claim(Kind::Election, name, req).await.unwrap() {
        Claimed::Granted(lease) => lease,
        other => panic!("{} does not lead: {other:?}", req.holder),
    }
}

async fn kept_out(client: &Client, name: &str, holder: &str) -> ConflictView {
    match client.claim(Kind::Election, name, &stand(holder)).await.unwrap() {
        Claimed::Refused(c) => c,
        other => panic!("{holder} was let in: {other:?}"),
    }
}

async fn transfer(
    client: &Client,
    name: &str,
    to: Option<&str>,
    from: Option<&str>,
) -> Result<LeaseView, ConflictView> {
    let request = TransferRequest { to: to.map(str::to_owned), from: from.map(str::to_owned) };
    client.transfer(name, &request).await.unwrap()
}

fn asked(from: &str, to: Option<&str>) -> Option<TransferView> {
    Some(TransferView { from: from.into(), to: to.map(str::to_owned) })
}

/// The leader learns of the transfer from its renewal and resigns; the
/// election is then the named candidate's alone, until it takes it.
async fn a_transfer_hands_over_to_the_candidate(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("pod-a", &[]).await;
    let name = unique("to");
    let a = leads(&client, &name, &stand("a")).await;
    let told = transfer(&client, &name, Some("b"), None).await.unwrap();
    assert_eq!((told.holder.as_str(), told.token, told.transfer.clone()), ("a", a.token, asked("a", Some("b"))));
    // Asked again: the same answer, nothing new written.
    let again = transfer(&client, &name, Some("b"), None).await.unwrap();
    assert_eq!((again.version, again.transfer), (told.version, asked("a", Some("b"))));
    let Read::Held(read) = client.read(Kind::Election, &name, None).await.unwrap() else { panic!() };
    assert_eq!(read.transfer, asked("a", Some("b")), "readers see it pending");
    let renewed = leads(&client, &name, &AcquireRequest { token: Some(a.token), ..stand("a") }).await;
    assert_eq!(renewed.transfer, asked("a", Some("b")), "the leader learns it from its renewal");
    assert!(client.release(Kind::Election, &name, "a", a.token).await.unwrap());
    for other in ["a", "c"] {
        let refused = kept_out(&client, &name, other).await;
        assert_eq!((refused.reason, refused.holder), (ConflictReason::Reserved, None), "{other}");
        assert!(refused.expires_in_ms <= TTL_MS);
    }
    let listed = client.list(Kind::Election, 100, None).await.unwrap();
    let item = listed.items.iter().find(|r| r.name == name).unwrap();
    assert_eq!((item.holder.as_deref(), item.transfer.clone()), (None, asked("a", Some("b"))), "the reservation");
    let b = leads(&client, &name, &stand("b")).await;
    assert!(b.token > a.token, "fenced as always: {} then {}", a.token, b.token);
    assert_eq!(b.transfer, None, "the acquisition ends the reservation");
}

/// A transfer to anyone else: the old leader cannot win it back while the
/// reservation lasts; anyone else can; after the TTL, the old leader too.
async fn a_transfer_away_keeps_only_the_old_leader_out(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("pod-a", &[]).await;
    let name = unique("away");
    let a = leads(&client, &name, &stand("a")).await;
    assert_eq!(transfer(&client, &name, None, Some("a")).await.unwrap().transfer, asked("a", None));
    assert!(client.release(Kind::Election, &name, "a", a.token).await.unwrap());
    let refused = kept_out(&client, &name, "a").await;
    assert_eq!(refused.reason, ConflictReason::Reserved);
    // Nobody came: the reservation runs out, the judge clears it (a write,
    // which wakes this long-poll), and the old leader may stand again.
    let cleared = tokio::time::timeout(PATIENCE, async {
        let mut version = refused.version;
        loop {
            match client.read(Kind::Election, &name, Some((version, PATIENCE))).await.unwrap() {
                Read::Free { version: v } if v != refused.version => return,
                other => version = other.version(),
            }
        }
    });
    cleared.await.expect("the reservation was never cleared");
    let back = leads(&client, &name, &stand("a")).await;
    assert!(back.token > a.token);

    // And while it lasts, anyone else gets it.
    assert_eq!(transfer(&client, &name, None, None).await.unwrap().transfer, asked("a", None));
    assert!(client.release(Kind::Election, &name, "a", back.token).await.unwrap());
    assert_eq!(kept_out(&client, &name, "a").await.reason, ConflictReason::Reserved);
    assert!(leads(&client, &name, &stand("c")).await.token > back.token);
}

/// Refusals: nobody leads; `from` does not lead; `to` leads already; bad
/// bodies.
async fn a_transfer_is_refused_unless_asked_of_the_leader(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("pod-a", &[]).await;
    let name = unique("refused");
    let nobody = transfer(&client, &name, Some("b"), None).await.unwrap_err();
    assert_eq!(nobody.reason, ConflictReason::NotHeld);
    let a = leads(&client, &name, &stand("a")).await;
    let not_from = transfer(&client, &name, None, Some("b")).await.unwrap_err();
    assert_eq!((not_from.reason, not_from.holder.as_deref()), (ConflictReason::Held, Some("a")));
    let already = transfer(&client, &name, Some("a"), None).await.unwrap_err();
    assert_eq!((already.reason, already.holder.as_deref()), (ConflictReason::Held, Some("a")));
    let path = format!("/v1/elections/{name}/transfer");
    for body in [serde_json::json!({"to": ""}), serde_json::json!({"too": "b"}), serde_json::json!({"from": "x\u{7}"})]
    {
        let reply = client.request(Method::POST, &path, Some(&body)).await.unwrap();
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
    }
    let reply = client.request(Method::POST, "/v1/locks/x/transfer", Some(&serde_json::json!({}))).await.unwrap();
    assert_ne!(reply.status, StatusCode::OK, "locks have no transfer");
    // Nothing was asked: the leader's renewal carries none.
    let renewed = leads(&client, &name, &AcquireRequest { token: Some(a.token), ..stand("a") }).await;
    assert_eq!(renewed.transfer, None);
}

/// The native client of the leader steps down by itself (the default), and
/// the candidate's blocking campaign wins.
async fn the_leaders_client_steps_down_and_the_candidate_wins(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("pod-a", &[]).await;
    let name = unique("client");
    let candidate = |id: &str| {
        let options = Options { ttl: Duration::from_millis(TTL_MS), holder: id.into(), address: None };
        Lease::new(client.clone(), Kind::Election, &name, options).unwrap()
    };
    let (a, b) = (candidate("a"), candidate("b"));
    let first = a.acquire(PATIENCE).await.unwrap();
    let b_wins = tokio::spawn(async move { (b.acquire(PATIENCE).await, b) });
    let mut changes = a.changes();
    transfer(&client, &name, Some("b"), None).await.unwrap();
    tokio::time::timeout(PATIENCE, changes.wait_for(|_| a.held().is_none())).await.unwrap().unwrap();
    let (won, _b) = b_wins.await.unwrap();
    assert!(won.unwrap().token > first.token);
}

/// A leader that decides itself sees the request, keeps leading, and hands
/// over when it resigns.
async fn a_leader_that_decides_itself_resigns_when_ready(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("pod-a", &[]).await;
    let name = unique("decides");
    let options = Options { ttl: Duration::from_millis(TTL_MS), holder: "a".into(), address: None };
    let a = Lease::new(client.clone(), Kind::Election, &name, options).unwrap();
    a.step_down_on_transfer(false).await;
    let first = a.acquire(PATIENCE).await.unwrap();
    let mut changes = a.changes();
    transfer(&client, &name, None, None).await.unwrap();
    tokio::time::timeout(PATIENCE, changes.wait_for(|_| a.transfer_requested().is_some())).await.unwrap().unwrap();
    assert_eq!(a.held().map(|g| g.token), Some(first.token), "still leading");
    assert_eq!(a.transfer_requested(), asked("a", None));
    a.release().await.unwrap();
    assert_eq!(kept_out(&client, &name, "a").await.reason, ConflictReason::Reserved);
    assert!(leads(&client, &name, &stand("c")).await.token > first.token);
}

suite!(memory: a_transfer_hands_over_to_the_candidate, a_transfer_away_keeps_only_the_old_leader_out,
    a_transfer_is_refused_unless_asked_of_the_leader, the_leaders_client_steps_down_and_the_candidate_wins,
    a_leader_that_decides_itself_resigns_when_ready);
suite!(etcd: a_transfer_hands_over_to_the_candidate, a_transfer_away_keeps_only_the_old_leader_out,
    a_transfer_is_refused_unless_asked_of_the_leader, the_leaders_client_steps_down_and_the_candidate_wins,
    a_leader_that_decides_itself_resigns_when_ready);
suite!(kubernetes: a_transfer_hands_over_to_the_candidate, a_transfer_away_keeps_only_the_old_leader_out,
    a_transfer_is_refused_unless_asked_of_the_leader, the_leaders_client_steps_down_and_the_candidate_wins,
    a_leader_that_decides_itself_resigns_when_ready, preferred_holder_is_the_transfer);
suite!(real_cluster #[ignore = "needs MPSYNC_TEST_KUBECONFIG (a real cluster)"]: a_transfer_hands_over_to_the_candidate,
    a_transfer_away_keeps_only_the_old_leader_out, a_transfer_is_refused_unless_asked_of_the_leader,
    the_leaders_client_steps_down_and_the_candidate_wins, a_leader_that_decides_itself_resigns_when_ready);

// ------------------------------------------------------ Kubernetes only

/// Our transfer is written as `spec.preferredHolder`, and a preferred holder
/// someone else writes (here a `kubectl replace`-like PUT) makes our leader
/// step down for it.
async fn preferred_holder_is_the_transfer(store: &str) {
    let backend = Backend::start(store).await;
    let Backend::Kubernetes { api, .. } = &backend else { panic!("Kubernetes only") };
    let (_elector, client) = backend.elector("pod-a", &[]).await;
    let name = unique("preferred");
    let lease_of =
        || api.leases("sync-test").into_iter().find(|l| l["metadata"]["name"] == format!("election.{name}")).unwrap();
    let a = leads(&client, &name, &stand("a")).await;
    transfer(&client, &name, Some("b"), None).await.unwrap();
    let written = lease_of();
    assert_eq!(written["spec"]["preferredHolder"], "b", "{written}");
    assert_eq!(written["spec"]["strategy"], "sync.metaparticle.io/transfer");
    assert_eq!(written["metadata"]["annotations"]["sync.metaparticle.io/transfer-from"], "a");
    // b takes over: the field goes.
    assert!(client.release(Kind::Election, &name, "a", a.token).await.unwrap());
    leads(&client, &name, &stand("b")).await;
    assert!(lease_of()["spec"].get("preferredHolder").is_none_or(|p| p.is_null()), "{}", lease_of());

    // Someone else asks, on the Lease itself, while our client leads.
    let name = unique("patched");
    let options = Options { ttl: Duration::from_millis(TTL_MS), holder: "a".into(), address: None };
    let leader = Lease::new(client.clone(), Kind::Election, &name, options).unwrap();
    let first = leader.acquire(PATIENCE).await.unwrap();
    let lease_of =
        || api.leases("sync-test").into_iter().find(|l| l["metadata"]["name"] == format!("election.{name}")).unwrap();
    let mut lease = lease_of();
    lease["spec"]["preferredHolder"] = "c".into();
    lease["spec"]["strategy"] = "OldestEmulationVersion".into();
    let kube = Client::new(&api.url());
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/sync-test/leases/election.{name}");
    let reply = kube.request(Method::PUT, &path, Some(&lease)).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    let mut changes = leader.changes();
    tokio::time::timeout(PATIENCE, changes.wait_for(|_| leader.held().is_none())).await.unwrap().unwrap();
    // The client stops believing it leads before its release is answered:
    // wait for the elector to have it.
    wait_free(&client, Kind::Election, &name, 0).await;
    assert_eq!(kept_out(&client, &name, "a").await.reason, ConflictReason::Reserved, "reserved for c");
    assert!(leads(&client, &name, &stand("c")).await.token > first.token);
}
