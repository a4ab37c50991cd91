//! The elector's HTTP API. Most cases run the library in-process
//! (`elector::server::serve` on a listener bound to `127.0.0.1:0`, the
//! memory store); those where the process matters (SIGTERM, the probe port
//! from the command line, a restart over the state file) run the real
//! `elector` binary.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use async_trait::async_trait;
use elector::server::Limits;
use elector::service::Service;
use elector::store::{Key, MemoryStore, NameRefused, Page, Store, StoreError, Versioned};
use hyper::{Method, StatusCode};
use mpsync_client::{Claimed, Client, Read};
use mpsync_core::Record;
use mpsync_core::record::KeyDigest;
use mpsync_core::wire::{
    AcquireRequest, CompatLock, ConflictReason, ConflictView, ErrorBody, ErrorCode, Kind, LeaseKey, LeaseView,
    ReleaseRequest,
};
use serde_json::json;
use std::sync::Arc;
use testkit::elector::ElectorProcess;
use tokio::sync::watch;

const BIN: &str = env!("CARGO_BIN_EXE_elector");
/// Generous bound on waits for events that should happen in milliseconds;
/// reaching it means the event never came.
const PATIENCE: Duration = Duration::from_secs(20);

/// What an in-process elector is started with; the defaults are the
/// binary's.
#[derive(Default)]
struct Knobs {
    compat_ttl: Option<Duration>,
    max_records: Option<usize>,
    max_long_polls: Option<usize>,
    limits: Limits,
}

/// An elector served in-process; stops when dropped.
struct InProcess {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
    /// How many long-polls have parked so far (see [`Parking`]).
    parked: watch::Receiver<usize>,
}

impl InProcess {
    fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Resolves once `n` long-polls in all have parked: an event, no polling.
    async fn parked(&mut self, n: usize) {
        tokio::time::timeout(PATIENCE, self.parked.wait_for(|parked| *parked >= n))
            .await
            .expect("the long-poll never parked")
            .unwrap();
    }

    /// Resolves the shutdown future the server was given.
    fn shut_down(&mut self) {
        let _ = self.stop.take().map(|stop| stop.send(()));
    }
}

/// The memory store, telling the test each time a long-poll parks on it:
/// the service waits on [`Store::wait_change`] only once the long-poll holds
/// its slot and found nothing to answer yet.
struct Parking {
    inner: MemoryStore,
    parked: watch::Sender<usize>,
}

#[async_trait]
impl Store for Parking {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn check_name(&self, key: &Key) -> Result<(), NameRefused> {
        self.inner.check_name(key)
    }
    fn max_ttl_ms(&self) -> u64 {
        self.inner.max_ttl_ms()
    }
    async fn get(&self, key: &Key) -> Result<Option<Versioned>, StoreError> {
        self.inner.get(key).await
    }
    async fn put(&self, key: &Key, record: &Record, current: Option<&Versioned>) -> Result<Versioned, StoreError> {
        self.inner.put(key, record, current).await
    }
    async fn wait_change(&self, key: &Key, version: u64) -> Result<(), StoreError> {
        self.parked.send_modify(|n| *n += 1);
        self.inner.wait_change(key, version).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    fn feed(&self) -> elector::store::Feed {
        self.inner.feed()
    }
    fn feed_id(&self, key: &Key) -> String {
        self.inner.feed_id(key)
    }
    async fn list(&self, kind: Kind, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        self.inner.list(kind, cursor, limit).await
    }
    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.inner.counters()
    }
    fn absent_version(&self) -> u64 {
        self.inner.absent_version()
    }
    fn sizes(&self) -> Vec<(&'static str, usize)> {
        self.inner.sizes()
    }
}

async fn serve(knobs: Knobs) -> (InProcess, Client) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut store = MemoryStore::new();
    if let Some(max) = knobs.max_records {
        store = store.with_max_records(max);
    }
    let (parked_tx, parked) = watch::channel(0);
    let store = Parking { inner: store, parked: parked_tx };
    let compat_ttl = knobs.compat_ttl.unwrap_or(Duration::from_secs(30));
    let mut service = Service::new(Arc::new(store), "pod-a".into(), compat_ttl);
    if let Some(max) = knobs.max_long_polls {
        service = service.with_max_long_polls(max);
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let serving = tokio::spawn(elector::server::serve(listener, Arc::new(service), knobs.limits, shutdown));
    (InProcess { addr, stop: Some(stop), serving, parked }, Client::new(&format!("http://{addr}")))
}

async fn start(extra: &[&str]) -> (ElectorProcess, Client) {
    let mut args = vec!["--identity", "pod-a", "--log", "warn"];
    args.extend_from_slice(extra);
    let elector = ElectorProcess::spawn(BIN, &args).await.unwrap();
    let client = Client::new(&elector.url());
    (elector, client)
}

fn acquire(holder: &str, ttl_ms: u64) -> AcquireRequest {
    AcquireRequest::new(holder, Duration::from_millis(ttl_ms), None, None)
}

fn renew(holder: &str, ttl_ms: u64, token: u64) -> AcquireRequest {
    AcquireRequest { token: Some(token), ..acquire(holder, ttl_ms) }
}

fn lease_key(text: &str) -> LeaseKey {
    LeaseKey::parse(text).unwrap()
}

/// `DELETE` with the body as given (the client's `release` sends no key).
async fn release(client: &Client, path: &str, request: &ReleaseRequest) -> (StatusCode, String) {
    let reply = client.request(Method::DELETE, path, Some(request)).await.unwrap();
    (reply.status, String::from_utf8_lossy(&reply.body).into_owned())
}

async fn granted(client: &Client, kind: Kind, name: &str, req: &AcquireRequest) -> LeaseView {
    match client.claim(kind, name, req).await.unwrap() {
        Claimed::Granted(lease) => lease,
        other => panic!("{req:?} not granted: {other:?}"),
    }
}

async fn refused(client: &Client, kind: Kind, name: &str, req: &AcquireRequest) -> mpsync_core::wire::ConflictView {
    match client.claim(kind, name, req).await.unwrap() {
        Claimed::Refused(c) => c,
        other => panic!("{req:?} not refused: {other:?}"),
    }
}

#[tokio::test]
async fn compatible_surface_as_an_original_client_drives_it() {
    let (_elector, client) = serve(Knobs::default()).await;
    // The original client: GET (404 or 200 means "try"), PUT, then every
    // 10 s GET + PUT as a heartbeat. No body, no token.
    let get = client.request(Method::GET, "/locks/test", None::<&()>).await.unwrap();
    assert_eq!(get.status, StatusCode::NOT_FOUND);
    let put = client.request(Method::PUT, "/locks/test", None::<&()>).await.unwrap();
    assert_eq!(put.status, StatusCode::OK);
    let first: CompatLock = put.json().unwrap();
    assert_eq!((first.name.as_str(), first.owner.as_str()), ("test", "pod-a"));
    assert!(first.expires_in_ms > 29_000 && first.expires_in_ms <= 30_000, "default TTL is 30 s: {first:?}");
    humantime::parse_rfc3339(&first.expiry).unwrap();
    for _ in 0..3 {
        let get = client.request(Method::GET, "/locks/test", None::<&()>).await.unwrap();
        assert_eq!(get.status, StatusCode::OK);
        assert_eq!(get.json::<CompatLock>().unwrap().owner, "pod-a");
        let put = client.request(Method::PUT, "/locks/test", None::<&()>).await.unwrap();
        assert_eq!(put.status, StatusCode::OK);
        assert_eq!(put.json::<CompatLock>().unwrap().token, first.token, "a heartbeat keeps the token");
    }
    // The same lock on the versioned surface: held by the elector's identity.
    let Read::Held(lease) = client.read(Kind::Lock, "test", None).await.unwrap() else { panic!() };
    assert_eq!((lease.holder.as_str(), lease.token), ("pod-a", first.token));
    assert_eq!(refused(&client, Kind::Lock, "test", &acquire("worker-1", 1000)).await.holder.as_deref(), Some("pod-a"));
}

#[tokio::test]
async fn a_v1_holder_makes_a_compatible_put_return_409() {
    let (_elector, client) = serve(Knobs::default()).await;
    granted(&client, Kind::Lock, "shared", &acquire("worker-1", 60_000)).await;
    let put = client.request(Method::PUT, "/locks/shared", None::<&()>).await.unwrap();
    assert_eq!(put.status, StatusCode::CONFLICT);
    let body: serde_json::Value = put.json().unwrap();
    assert_eq!(body["holder"], "worker-1");
    // GET on the compatible surface shows the v1 holder as the owner.
    let get = client.request(Method::GET, "/locks/shared", None::<&()>).await.unwrap();
    assert_eq!(get.json::<CompatLock>().unwrap().owner, "worker-1");
}

/// What the holder key protects on the compatible surface, and what not.
#[tokio::test]
async fn the_compatible_surface_cannot_use_a_keyed_lease_and_its_own_have_no_key() {
    let (_elector, client) = serve(Knobs::default()).await;
    // A v1 client that happens to use the elector's identity, with a key:
    // the compatible PUT (no key) cannot heartbeat its lease.
    let key = lease_key("v1-clients-own-key-000001");
    let keyed = granted(&client, Kind::Lock, "keyed", &acquire("pod-a", 60_000).with_key(Some(&key))).await;
    let put = client.request(Method::PUT, "/locks/keyed", None::<&()>).await.unwrap();
    assert_eq!(put.status, StatusCode::CONFLICT);
    assert_eq!(put.json::<ConflictView>().unwrap().reason, ConflictReason::WrongKey);
    let Read::Held(after) = client.read(Kind::Lock, "keyed", None).await.unwrap() else { panic!() };
    assert_eq!((after.token, after.version), (keyed.token, keyed.version), "nothing was written");
    // The compatible surface's own leases have no key, as in the original:
    // anyone who can reach the port and read the token renews them.
    let own: CompatLock = client.request(Method::PUT, "/locks/own", None::<&()>).await.unwrap().json().unwrap();
    granted(&client, Kind::Lock, "own", &renew("pod-a", 60_000, own.token)).await;
    // A key sent then is not adopted: the elector's heartbeat still works.
    let stranger = lease_key("a-strangers-guess-0000001");
    granted(&client, Kind::Lock, "own", &renew("pod-a", 60_000, own.token).with_key(Some(&stranger))).await;
    let put = client.request(Method::PUT, "/locks/own", None::<&()>).await.unwrap();
    assert_eq!(put.status, StatusCode::OK);
}

/// Only the acquirer, who alone has the key, renews or releases; a
/// stranger who read the holder and the token from `GET` cannot, and no
/// answer of the elector shows the key or its digest.
#[tokio::test]
async fn a_stranger_with_holder_and_token_cannot_renew_or_release_a_keyed_lease() {
    let (_elector, client) = serve(Knobs::default()).await;
    let key = lease_key("the-holders-own-key-00001");
    let digest = KeyDigest::of(&key);
    let path = "/v1/locks/guarded";
    let grant = client.request(Method::PUT, path, Some(&acquire("w1", 10_000).with_key(Some(&key)))).await.unwrap();
    assert_eq!(grant.status, StatusCode::OK);
    let lease: LeaseView = grant.json().unwrap();
    let mut answers = vec![String::from_utf8_lossy(&grant.body).into_owned()];
    let Read::Held(seen) = client.read(Kind::Lock, "guarded", None).await.unwrap() else { panic!() };
    let wrong = lease_key("a-strangers-guess-0000001");
    for presented in [None, Some(&wrong)] {
        // What the issue tried: extend it to 10 minutes, then release it.
        let renew = renew(&seen.holder, 600_000, seen.token).with_key(presented);
        let refused = client.request(Method::PUT, path, Some(&renew)).await.unwrap();
        assert_eq!(refused.status, StatusCode::CONFLICT);
        let conflict: ConflictView = refused.json().unwrap();
        assert_eq!((conflict.reason, conflict.holder.as_deref()), (ConflictReason::WrongKey, Some("w1")));
        answers.push(String::from_utf8_lossy(&refused.body).into_owned());
        let request =
            ReleaseRequest { holder: seen.holder.clone(), token: seen.token, ticket: None, key: presented.cloned() };
        let (status, body) = release(&client, path, &request).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(serde_json::from_str::<ConflictView>(&body).unwrap().reason, ConflictReason::WrongKey);
        answers.push(body);
    }
    let Read::Held(after) = client.read(Kind::Lock, "guarded", None).await.unwrap() else { panic!() };
    assert_eq!((after.token, after.version, after.ttl_ms), (lease.token, lease.version, 10_000), "nothing written");
    // A third party still cannot get in; the holder renews and releases.
    assert_eq!(refused(&client, Kind::Lock, "guarded", &acquire("w2", 10_000)).await.reason, ConflictReason::Held);
    granted(&client, Kind::Lock, "guarded", &renew("w1", 10_000, lease.token).with_key(Some(&key))).await;
    for read in [path, "/v1/locks", "/locks/guarded", "/metrics"] {
        let reply = client.request(Method::GET, read, None::<&()>).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{read}");
        answers.push(String::from_utf8_lossy(&reply.body).into_owned());
    }
    for answer in &answers {
        assert!(!answer.contains(key.as_str()) && !answer.contains(digest.as_str()), "{answer}");
    }
    let request = ReleaseRequest { holder: "w1".into(), token: lease.token, ticket: None, key: Some(key.clone()) };
    assert_eq!(release(&client, path, &request).await.0, StatusCode::NO_CONTENT);
    // Free again, and a lease taken without a key behaves as it always did.
    let plain = granted(&client, Kind::Lock, "guarded", &acquire("w2", 10_000)).await;
    assert!(client.release(Kind::Lock, "guarded", "w2", plain.token).await.unwrap());
}

#[tokio::test]
async fn compatible_lock_expires_after_the_elector_ttl() {
    let (_elector, client) = serve(Knobs { compat_ttl: Some(Duration::from_millis(300)), ..Knobs::default() }).await;
    let put = client.request(Method::PUT, "/locks/short", None::<&()>).await.unwrap();
    let lock: CompatLock = put.json().unwrap();
    assert!(lock.expires_in_ms <= 300);
    // Wait for the expiry as an event: the long-poll answers when it runs out.
    let Read::Held(lease) = client.read(Kind::Lock, "short", None).await.unwrap() else { panic!() };
    let after = client.read(Kind::Lock, "short", Some((lease.version, PATIENCE))).await.unwrap();
    assert_eq!(after, Read::Free { version: lease.version + 1 }, "a lease running out is a change of the view");
    // Waiting on the expired view waits for the next write, not forever on
    // a stale answer.
    let quiet = client.read(Kind::Lock, "short", Some((lease.version + 1, Duration::from_millis(50)))).await.unwrap();
    assert_eq!(quiet, Read::Free { version: lease.version + 1 });
    let get = client.request(Method::GET, "/locks/short", None::<&()>).await.unwrap();
    assert_eq!(get.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn fencing_tokens_grow_across_holders_and_stay_across_renewals() {
    let (_elector, client) = serve(Knobs::default()).await;
    let a = granted(&client, Kind::Lock, "fence", &acquire("a", 60_000)).await;
    for _ in 0..3 {
        let r = granted(&client, Kind::Lock, "fence", &renew("a", 60_000, a.token)).await;
        assert_eq!(r.token, a.token);
        assert!(r.version > a.version);
    }
    let stale = refused(&client, Kind::Lock, "fence", &renew("a", 60_000, a.token + 1)).await;
    assert_eq!(stale.reason, ConflictReason::StaleToken);
    assert!(client.release(Kind::Lock, "fence", "a", a.token).await.unwrap());
    let b = granted(&client, Kind::Lock, "fence", &acquire("b", 60_000)).await;
    assert!(b.token > a.token);
    // a's token is dead for good: it cannot renew or release b's lease.
    assert_eq!(refused(&client, Kind::Lock, "fence", &renew("a", 60_000, a.token)).await.reason, ConflictReason::Held);
    assert!(!client.release(Kind::Lock, "fence", "a", a.token).await.unwrap());
    assert!(client.release(Kind::Lock, "fence", "b", b.token).await.unwrap());
    let a2 = granted(&client, Kind::Lock, "fence", &acquire("a", 60_000)).await;
    assert!(a2.token > b.token, "the same holder coming back gets a new, higher token");
}

#[tokio::test]
async fn a_holder_that_stops_renewing_loses_the_lock_after_its_ttl() {
    let (_elector, client) = serve(Knobs::default()).await;
    let a = granted(&client, Kind::Lock, "stale", &acquire("a", 400)).await;
    let c = refused(&client, Kind::Lock, "stale", &acquire("b", 60_000)).await;
    assert_eq!((c.holder.as_deref(), c.reason), (Some("a"), ConflictReason::Held));
    assert!(c.expires_in_ms > 0 && c.expires_in_ms <= 400);
    // b waits on the version it was refused at; the elector answers when
    // a's lease runs out.
    let read = client.read(Kind::Lock, "stale", Some((c.version, PATIENCE))).await.unwrap();
    assert_eq!(read, Read::Free { version: a.version + 1 });
    let b = granted(&client, Kind::Lock, "stale", &acquire("b", 60_000)).await;
    assert!(b.token > a.token);
    // a comes back too late: its renewal is refused.
    let late = refused(&client, Kind::Lock, "stale", &renew("a", 400, a.token)).await;
    assert_eq!((late.holder.as_deref(), late.reason), (Some("b"), ConflictReason::Held));
    let metrics = client.request(Method::GET, "/metrics", None::<&()>).await.unwrap();
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    assert!(text.contains("mpsync_expiries_total{kind=\"lock\"} 1"), "{text}");
}

#[tokio::test]
async fn a_waiter_who_saw_the_lease_held_is_answered_at_once_after_it_ran_out() {
    let (_elector, client) = serve(Knobs::default()).await;
    let a = granted(&client, Kind::Lock, "late", &acquire("a", 200)).await;
    // One waiter learns of the expiry as it happens...
    let first = client.read(Kind::Lock, "late", Some((a.version, PATIENCE))).await.unwrap();
    assert_eq!(first, Read::Free { version: a.version + 1 });
    // ...another, still holding the "held" view, asks only now: it must not
    // wait for a write that may never come.
    let late =
        tokio::time::timeout(PATIENCE, client.read(Kind::Lock, "late", Some((a.version, Duration::from_secs(120)))))
            .await
            .expect("a waiter on a view that already changed was not answered")
            .unwrap();
    assert_eq!(late, Read::Free { version: a.version + 1 });
}

#[tokio::test]
async fn delete_frees_the_lock_and_a_pending_long_poll_answers_at_once() {
    let (_elector, client) = serve(Knobs::default()).await;
    let a = granted(&client, Kind::Lock, "watched", &acquire("a", 60_000)).await;
    let waiter = tokio::spawn({
        let client = client.clone();
        let version = a.version;
        async move { client.read(Kind::Lock, "watched", Some((version, Duration::from_secs(120)))).await }
    });
    // The waiter is parked on the lease until the DELETE (a 120 s timeout or
    // the 60 s TTL would otherwise answer, and answer "held").
    assert!(client.release(Kind::Lock, "watched", "a", a.token).await.unwrap());
    let read = tokio::time::timeout(PATIENCE, waiter).await.expect("long-poll did not answer").unwrap().unwrap();
    let Read::Free { version } = read else { panic!("expected free, got {read:?}") };
    assert!(version > a.version);
    let b = granted(&client, Kind::Lock, "watched", &acquire("b", 60_000)).await;
    assert!(b.token > a.token);
}

#[tokio::test]
async fn a_long_poll_answers_with_the_unchanged_record_at_its_timeout() {
    let (_elector, client) = serve(Knobs::default()).await;
    let a = granted(&client, Kind::Lock, "quiet", &acquire("a", 60_000)).await;
    let read = client.read(Kind::Lock, "quiet", Some((a.version, Duration::from_millis(300)))).await.unwrap();
    let Read::Held(lease) = read else { panic!() };
    assert_eq!((lease.version, lease.holder.as_str()), (a.version, "a"));
    // The time left is as of the answer, not of the start of the wait.
    assert!(lease.expires_in_ms <= a.expires_in_ms - 300, "{} then {}", a.expires_in_ms, lease.expires_in_ms);
    // A stale version answers at once, with the current record.
    let Read::Held(now) = client.read(Kind::Lock, "quiet", Some((a.version - 1, PATIENCE))).await.unwrap() else {
        panic!()
    };
    assert_eq!(now.version, a.version);
}

#[tokio::test]
async fn thirty_two_clients_racing_for_one_lock_get_exactly_one_winner() {
    let (_elector, client) = serve(Knobs::default()).await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(32));
    let racers: Vec<_> = (0..32)
        .map(|i| {
            let (client, barrier) = (client.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                client.claim(Kind::Lock, "race", &acquire(&format!("racer-{i}"), 60_000)).await.unwrap()
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut holders_named = std::collections::BTreeSet::new();
    for r in racers {
        match r.await.unwrap() {
            Claimed::Granted(lease) => winners.push(lease),
            Claimed::Refused(c) => {
                holders_named.insert(c.holder.unwrap());
            }
            queued @ Claimed::Queued(_) => panic!("nobody asked to wait in line: {queued:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(holders_named.into_iter().collect::<Vec<_>>(), [winners[0].holder.clone()]);
    assert_eq!(winners[0].token, 1);
}

#[tokio::test]
async fn elections_carry_the_leader_address() {
    let (_elector, client) = serve(Knobs::default()).await;
    let req = AcquireRequest { address: Some("127.0.0.1:8080".into()), ..acquire("replica-1", 60_000) };
    let leader = granted(&client, Kind::Election, "orders", &req).await;
    assert_eq!(leader.address.as_deref(), Some("127.0.0.1:8080"));
    let Read::Held(seen) = client.read(Kind::Election, "orders", None).await.unwrap() else { panic!() };
    assert_eq!((seen.holder.as_str(), seen.address.as_deref()), ("replica-1", Some("127.0.0.1:8080")));
    // Locks and elections of the same name are different records.
    assert_eq!(client.read(Kind::Lock, "orders", None).await.unwrap(), Read::Free { version: 0 });
    let follower = AcquireRequest { address: Some("127.0.0.1:8081".into()), ..acquire("replica-2", 60_000) };
    assert_eq!(refused(&client, Kind::Election, "orders", &follower).await.holder.as_deref(), Some("replica-1"));
    assert!(client.release(Kind::Election, "orders", "replica-1", leader.token).await.unwrap());
    let next = granted(&client, Kind::Election, "orders", &follower).await;
    assert_eq!((next.address.as_deref(), next.token > leader.token), (Some("127.0.0.1:8081"), true));
}

#[tokio::test]
async fn bad_input_gets_its_documented_status_and_error() {
    let (_elector, client) = serve(Knobs::default()).await;
    let long = format!("/v1/locks/{}", "a".repeat(254));
    let big = json!({"holder": "x".repeat(20_000), "ttl_ms": 1000});
    let ok = r#"{"holder":"w","ttl_ms":1000}"#;
    // (method, path, body, status, code, field)
    type Case<'a> = (Method, &'a str, Option<String>, u16, Option<ErrorCode>, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (Method::PUT, "/v1/locks/Upper", Some(ok.into()), 400, Some(ErrorCode::InvalidName), Some("name")),
        (Method::PUT, "/v1/locks/under_score", Some(ok.into()), 400, Some(ErrorCode::InvalidName), Some("name")),
        (Method::PUT, "/v1/locks/-dash", Some(ok.into()), 400, Some(ErrorCode::InvalidName), Some("name")),
        (Method::PUT, &long, Some(ok.into()), 400, Some(ErrorCode::InvalidName), Some("name")),
        (Method::GET, "/locks/a%2Fb", None, 400, Some(ErrorCode::InvalidName), Some("name")),
        (Method::PUT, "/v1/elections/a..b", Some(ok.into()), 400, Some(ErrorCode::InvalidName), Some("name")),
        (Method::PUT, "/v1/locks/ok", None, 400, Some(ErrorCode::MalformedBody), None),
        (Method::PUT, "/v1/locks/ok", Some("{not json".into()), 400, Some(ErrorCode::MalformedBody), None),
        (
            Method::PUT,
            "/v1/locks/ok",
            Some(r#"{"ttl_ms":1000}"#.into()),
            400,
            Some(ErrorCode::MalformedBody),
            Some("holder"),
        ),
        (
            Method::PUT,
            "/v1/locks/ok",
            Some(r#"{"holder":"w"}"#.into()),
            400,
            Some(ErrorCode::MalformedBody),
            Some("ttl_ms"),
        ),
        (
            Method::PUT,
            "/v1/locks/ok",
            Some(r#"{"holder":"w","ttl_ms":"10"}"#.into()),
            400,
            Some(ErrorCode::MalformedBody),
            Some("ttl_ms"),
        ),
        (
            Method::PUT,
            "/v1/locks/ok",
            Some(r#"{"holder":"w","ttl_ms":-5}"#.into()),
            400,
            Some(ErrorCode::MalformedBody),
            Some("ttl_ms"),
        ),
        (
            Method::PUT,
            "/v1/locks/ok",
            Some(r#"{"holder":"w","tll_ms":10}"#.into()),
            400,
            Some(ErrorCode::MalformedBody),
            Some("tll_ms"),
        ),
        (
            Method::PUT,
            "/v1/locks/ok",
            Some(r#"{"holder":"","ttl_ms":1000}"#.into()),
            400,
            Some(ErrorCode::InvalidField),
            Some("holder"),
        ),
        (
            Method::PUT,
            "/v1/locks/ok",
            Some(r#"{"holder":"w","ttl_ms":1}"#.into()),
            400,
            Some(ErrorCode::InvalidField),
            Some("ttl_ms"),
        ),
        (
            Method::PUT,
            "/v1/locks/ok",
            Some(r#"{"holder":"w","ttl_ms":1000,"token":0}"#.into()),
            400,
            Some(ErrorCode::InvalidField),
            Some("token"),
        ),
        (
            Method::PUT,
            "/v1/locks/ok",
            Some(r#"{"holder":"w","ttl_ms":1000,"address":"1.2.3.4:5"}"#.into()),
            400,
            Some(ErrorCode::InvalidField),
            Some("address"),
        ),
        (
            Method::PUT,
            "/v1/elections/ok",
            Some(r#"{"holder":"w","ttl_ms":1000,"address":"leader"}"#.into()),
            400,
            Some(ErrorCode::InvalidField),
            Some("address"),
        ),
        (
            Method::PUT,
            "/v1/locks/ok",
            Some(r#"{"holder":"w","ttl_ms":1000,"key":"too-short"}"#.into()),
            400,
            Some(ErrorCode::InvalidField),
            Some("key"),
        ),
        (
            Method::PUT,
            "/v1/locks/ok",
            Some(r#"{"holder":"w","ttl_ms":1000,"key":"spaces are not in the alphabet"}"#.into()),
            400,
            Some(ErrorCode::InvalidField),
            Some("key"),
        ),
        (
            Method::PUT,
            "/v1/locks/ok",
            Some(r#"{"holder":"w","ttl_ms":1000,"key":null}"#.into()),
            400,
            Some(ErrorCode::MalformedBody),
            Some("key"),
        ),
        (
            Method::DELETE,
            "/v1/locks/ok",
            Some(r#"{"holder":"w","token":1,"key":"too-short"}"#.into()),
            400,
            Some(ErrorCode::InvalidField),
            Some("key"),
        ),
        (
            Method::DELETE,
            "/v1/locks/ok",
            Some(r#"{"holder":"w"}"#.into()),
            400,
            Some(ErrorCode::InvalidField),
            Some("token"),
        ),
        (
            Method::DELETE,
            "/v1/locks/ok",
            Some(r#"{"holder":"w","token":3,"ticket":4}"#.into()),
            400,
            Some(ErrorCode::InvalidField),
            Some("ticket"),
        ),
        (
            Method::DELETE,
            "/v1/elections/ok",
            Some(r#"{"holder":"w","ticket":4}"#.into()),
            400,
            Some(ErrorCode::InvalidField),
            Some("ticket"),
        ),
        (
            Method::DELETE,
            "/v1/locks/never",
            Some(r#"{"holder":"w","token":1}"#.into()),
            404,
            Some(ErrorCode::NotFound),
            None,
        ),
        (Method::GET, "/v1/locks/ok?wait=abc", None, 400, Some(ErrorCode::InvalidQuery), Some("wait")),
        // timeout_ms without wait: a plain read (the API document cannot
        // say "only with wait", so the server does not insist).
        (Method::GET, "/v1/locks/ok?timeout_ms=5", None, 404, Some(ErrorCode::NotFound), None),
        // An optional field is a value or absent, never null.
        (
            Method::PUT,
            "/v1/locks/ok",
            Some(r#"{"holder":"w","ttl_ms":1000,"token":null}"#.into()),
            400,
            Some(ErrorCode::MalformedBody),
            Some("token"),
        ),
        (
            Method::GET,
            "/v1/locks/ok?wait=1&timeout_ms=999999999",
            None,
            400,
            Some(ErrorCode::InvalidQuery),
            Some("timeout_ms"),
        ),
        (Method::GET, "/v1/locks/ok?colour=red", None, 400, Some(ErrorCode::InvalidQuery), Some("colour")),
        (Method::PUT, "/v1/locks/ok", Some(big.to_string()), 413, Some(ErrorCode::BodyTooLarge), None),
        (Method::POST, "/v1/locks/ok", Some(ok.into()), 405, Some(ErrorCode::MethodNotAllowed), None),
        (Method::DELETE, "/locks/ok", None, 405, Some(ErrorCode::MethodNotAllowed), None),
        (Method::GET, "/v2/locks/ok", None, 404, Some(ErrorCode::NotFound), None),
        (Method::GET, "/v1/locks/", None, 404, Some(ErrorCode::NotFound), None),
        (Method::GET, "/v1/locks/a/b", None, 404, Some(ErrorCode::NotFound), None),
    ];
    assert!(cases.len() >= 15);
    for (method, path, body, status, code, field) in cases {
        let reply = client.send(method.clone(), path, body.clone().map(Into::into)).await.unwrap();
        assert_eq!(reply.status.as_u16(), status, "{method} {path} {body:?}: {:?}", reply.body);
        let err: ErrorBody = reply.json().unwrap_or_else(|e| panic!("{method} {path}: not a JSON error: {e}"));
        assert_eq!(Some(err.error), code, "{method} {path}: {err:?}");
        assert_eq!(err.field.as_deref(), field, "{method} {path}: {err:?}");
        assert!(!err.message.is_empty());
    }
    // Nothing above reached the store.
    let metrics = client.request(Method::GET, "/metrics", None::<&()>).await.unwrap();
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    assert!(text.contains("mpsync_acquisitions_total{kind=\"lock\"} 0"), "{text}");
}

#[tokio::test]
async fn a_listing_pages_through_every_record_and_refuses_a_bad_query() {
    let (_elector, client) = serve(Knobs::default()).await;
    for name in ["c", "a", "e", "b", "d"] {
        granted(
            &client,
            Kind::Lock,
            name,
            &AcquireRequest::new(&format!("w-{name}"), Duration::from_secs(10), None, None),
        )
        .await;
    }
    let mut names = Vec::new();
    let mut cursor = None;
    loop {
        let page = client.list(Kind::Lock, 2, cursor.as_deref()).await.unwrap();
        names.extend(page.items.iter().map(|r| (r.name.clone(), r.holder.clone().unwrap())));
        let Some(next) = page.next else { break };
        cursor = Some(next);
    }
    let expected: Vec<(String, String)> = ["a", "b", "c", "d", "e"].map(|n| (n.to_owned(), format!("w-{n}"))).into();
    assert_eq!(names, expected);
    assert!(client.list(Kind::Election, 10, None).await.unwrap().items.is_empty(), "no elections");
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("cursor=", "cursor"),
        ("cursor=%C3%A9", "cursor"),
        ("wait=3", "wait"),
    ] {
        let reply = client.send(Method::GET, &format!("/v1/locks?{query}"), None).await.unwrap();
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        let body: ErrorBody = reply.json().unwrap();
        assert_eq!((body.error, body.field.as_deref()), (ErrorCode::InvalidQuery, Some(field)), "{query}");
    }
    let reply = client.send(Method::POST, "/v1/locks", None).await.unwrap();
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
}

/// The shutdown future (SIGTERM's, in the binary) answers a parked
/// long-poll at once with the record as it is, and the server returns once
/// the requests in flight are done.
#[tokio::test]
async fn shutdown_answers_pending_long_polls_at_once() {
    let (mut elector, client) = serve(Knobs::default()).await;
    let a = granted(&client, Kind::Lock, "bye", &acquire("a", 60_000)).await;
    let waiter = tokio::spawn({
        let client = client.clone();
        async move { client.read(Kind::Lock, "bye", Some((a.version, Duration::from_secs(120)))).await }
    });
    elector.parked(1).await;
    elector.shut_down();
    let read = tokio::time::timeout(PATIENCE, waiter).await.expect("long-poll hung at shutdown").unwrap().unwrap();
    assert!(matches!(read, Read::Held(ref l) if l.holder == "a"), "{read:?}");
    let served = tokio::time::timeout(PATIENCE, &mut elector.serving).await.expect("the server did not return");
    served.unwrap().unwrap();
}

/// SIGTERM is the binary's shutdown future, for both its listeners: it
/// exits 0 and stops accepting on each.
#[tokio::test]
async fn sigterm_stops_the_elector_and_it_exits_zero() {
    let (mut elector, client, health) = start_with_probe_port(&[]).await;
    granted(&client, Kind::Lock, "bye", &acquire("a", 60_000)).await;
    let probes = Client::new(&format!("http://{health}"));
    assert_eq!(probes.request(Method::GET, "/healthz", None::<&()>).await.unwrap().status, StatusCode::OK);
    elector.signal("TERM").unwrap();
    let status = tokio::time::timeout(PATIENCE, elector.wait()).await.expect("elector did not exit").unwrap();
    assert!(status.success(), "{status}");
    assert!(client.request(Method::GET, "/healthz", None::<&()>).await.is_err(), "stopped accepting");
    assert!(probes.request(Method::GET, "/healthz", None::<&()>).await.is_err(), "stopped accepting probes");
}

#[tokio::test]
async fn operations_endpoints_answer() {
    let (_elector, client) = serve(Knobs::default()).await;
    for path in ["/healthz", "/readyz"] {
        assert_eq!(client.request(Method::GET, path, None::<&()>).await.unwrap().status, StatusCode::OK, "{path}");
    }
    granted(&client, Kind::Election, "ops", &acquire("x", 60_000)).await;
    let text =
        String::from_utf8(client.request(Method::GET, "/metrics", None::<&()>).await.unwrap().body.to_vec()).unwrap();
    for needle in [
        "mpsync_acquisitions_total{kind=\"election\"} 1",
        "mpsync_held_leases 1",
        "mpsync_request_duration_seconds_count{route=\"election_put\",status=\"200\"} 1",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
}

/// The binary with `--health-listen` on a port that was free a moment ago,
/// and `extra` flags; its probe address. The elector binds both addresses
/// before it prints the line `start` waits for.
async fn start_with_probe_port(extra: &[&str]) -> (ElectorProcess, Client, std::net::SocketAddr) {
    let health = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let health_arg = health.to_string();
    let mut args = vec!["--health-listen", &health_arg];
    args.extend_from_slice(extra);
    let (elector, client) = start(&args).await;
    (elector, client, health)
}

#[tokio::test]
async fn health_listen_serves_probes_and_metrics_but_not_the_lease_api() {
    let (_elector, client, health) = start_with_probe_port(&[]).await;
    granted(&client, Kind::Lock, "probed", &acquire("w", 10_000)).await;
    let probes = Client::new(&format!("http://{health}"));
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(probes.request(Method::GET, path, None::<&()>).await.unwrap().status, StatusCode::OK, "{path}");
    }
    let lease_api = probes.request(Method::GET, "/v1/locks/probed", None::<&()>).await.unwrap();
    assert_eq!(lease_api.status, StatusCode::NOT_FOUND, "the lease API is not on the health address");
    let put = probes.request(Method::PUT, "/locks/probed", None::<&()>).await.unwrap();
    assert_eq!(put.status, StatusCode::NOT_FOUND);
}

/// The probe port is the one a pod exposes beyond loopback: it closes a
/// half-sent request and an idle connection at `--header-read-timeout`, as
/// the API port does. The wait is shorter than the default timeout, so an
/// ignored flag fails it, and a server without the limit (plain
/// `axum::serve`) keeps both open for ever.
#[tokio::test]
async fn the_probe_port_closes_slow_and_idle_connections_at_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let (_elector, _client, health) = start_with_probe_port(&["--header-read-timeout", "300ms"]).await;
    let mut half = tokio::net::TcpStream::connect(health).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut idle = tokio::net::TcpStream::connect(health).await.unwrap();
    let within = Limits::default().header_read_timeout / 2;
    read_until_closed(&mut half, within).await;
    read_until_closed(&mut idle, within).await;
}

/// The probe port has a connection cap of its own: one past it gets 503,
/// and the lease API, with its own, still answers.
#[tokio::test]
async fn the_probe_port_refuses_connections_past_its_cap() {
    // A long header timeout: the held connections stay until the test ends.
    let (_elector, client, health) =
        start_with_probe_port(&["--max-connections", "2", "--header-read-timeout", "10m"]).await;
    let _held =
        [tokio::net::TcpStream::connect(health).await.unwrap(), tokio::net::TcpStream::connect(health).await.unwrap()];
    let mut third = tokio::net::TcpStream::connect(health).await.unwrap();
    let answer = read_until_closed(&mut third, PATIENCE).await;
    assert!(answer.starts_with("HTTP/1.1 503") && answer.contains("--max-connections"), "{answer}");
    granted(&client, Kind::Lock, "capped", &acquire("w", 10_000)).await;
}

/// Restarts on the memory store: the `--state-file` keeps tokens growing,
/// and after a crash no lease is granted while one the crashed process
/// granted may still be live.
#[tokio::test]
async fn a_restarted_memory_elector_grants_nothing_an_old_holder_may_hold_and_tokens_keep_growing() {
    let dir = std::env::temp_dir().join(format!("mpsync-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let state = dir.join("elector.json");
    let args = ["--identity", "pod-a", "--log", "warn", "--state-file", state.to_str().unwrap()];
    let mut first = ElectorProcess::spawn(BIN, &args).await.unwrap();
    let client = Client::new(&first.url());
    granted(&client, Kind::Lock, "warmup", &acquire("a", 300)).await;
    let a = granted(&client, Kind::Lock, "restart", &acquire("a", 1_500)).await;
    first.signal("KILL").unwrap();
    first.wait().await.unwrap();

    let mut second = ElectorProcess::spawn(BIN, &args).await.unwrap();
    let client = Client::new(&second.url());
    let ready = client.request(Method::GET, "/readyz", None::<&()>).await.unwrap();
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "not ready while recovering");
    assert!(ready.json::<ErrorBody>().unwrap().message.contains("recovering after a restart"));
    // Someone new is refused: a may still believe it holds the lock.
    let c = refused(&client, Kind::Lock, "restart", &acquire("b", 60_000)).await;
    assert_eq!(c.holder.as_deref(), Some(elector::store::memory::RECOVERING_HOLDER));
    assert!(c.expires_in_ms > 0 && c.expires_in_ms <= 1_501, "{c:?}");
    // So is a name nobody used, and a's renewal: a learns it lost the lock.
    refused(&client, Kind::Lock, "fresh", &acquire("b", 60_000)).await;
    assert_eq!(refused(&client, Kind::Lock, "restart", &renew("a", 1_500, a.token)).await.reason, ConflictReason::Held);
    // Nobody can keep the placeholder going or end it early, though its
    // holder and token are there to read: it has no key anyone has.
    let Read::Held(shown) = client.read(Kind::Lock, "restart", None).await.unwrap() else { panic!("not held") };
    let placeholder = renew(&shown.holder, 60_000, shown.token);
    assert_eq!(refused(&client, Kind::Lock, "restart", &placeholder).await.reason, ConflictReason::WrongKey);
    let end = ReleaseRequest {
        holder: placeholder.holder.clone(),
        token: placeholder.token.unwrap(),
        ticket: None,
        key: None,
    };
    assert_eq!(release(&client, "/v1/locks/restart", &end).await.0, StatusCode::CONFLICT);
    // A waiter is answered when the recovery ends, and then b gets the lock
    // with a token above every one granted before the crash.
    let read = client.read(Kind::Lock, "restart", Some((c.version, PATIENCE))).await.unwrap();
    assert!(matches!(read, Read::Free { .. }), "{read:?}");
    let b = granted(&client, Kind::Lock, "restart", &acquire("b", 60_000)).await;
    assert!(b.token > a.token, "tokens keep growing across the restart: {} then {}", a.token, b.token);
    assert_eq!(client.request(Method::GET, "/readyz", None::<&()>).await.unwrap().status, StatusCode::OK);

    // A clean stop with nothing held: the next start grants at once.
    assert!(client.release(Kind::Lock, "restart", "b", b.token).await.unwrap());
    second.signal("TERM").unwrap();
    assert!(second.wait().await.unwrap().success());
    let _third = ElectorProcess::spawn(BIN, &args).await.unwrap();
    let client = Client::new(&_third.url());
    let c2 = granted(&client, Kind::Lock, "restart", &acquire("c", 60_000)).await;
    assert!(c2.token > b.token);
    // A second elector cannot share the state file.
    let clash = ElectorProcess::spawn(BIN, &args).await;
    assert!(clash.is_err(), "two electors on one state file");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The memory store keeps at most --max-records names; past that a new name
/// gets 503 with retry-after, counted in /metrics, until room is made.
#[tokio::test]
async fn past_max_records_a_new_name_is_refused_with_retry_after() {
    let (_elector, client) = serve(Knobs { max_records: Some(2), ..Knobs::default() }).await;
    let a = granted(&client, Kind::Lock, "one", &acquire("a", 60_000)).await;
    granted(&client, Kind::Lock, "two", &acquire("a", 60_000)).await;
    let body = serde_json::to_vec(&acquire("a", 60_000)).unwrap();
    let full = client.send(Method::PUT, "/v1/locks/three", Some(body.clone().into())).await.unwrap();
    assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(full.headers.contains_key("retry-after"));
    assert!(full.json::<ErrorBody>().unwrap().message.contains("--max-records"));
    assert!(client.release(Kind::Lock, "one", "a", a.token).await.unwrap());
    granted(&client, Kind::Lock, "three", &acquire("a", 60_000)).await;
    let metrics = client.request(Method::GET, "/metrics", None::<&()>).await.unwrap();
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    assert!(text.contains(r#"mpsync_store_calls_total{store="memory",call="refused_full"} 1"#), "{text}");
}

/// Reads from a raw connection until the server closes it, `within` at
/// most; what it sent.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, within: Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut answer))
        .await
        .expect("the elector kept the connection open")
        .unwrap_or_default();
    String::from_utf8_lossy(&answer).into_owned()
}

async fn metric_line(client: &Client, prefix: &str) -> String {
    let metrics = client.request(Method::GET, "/metrics", None::<&()>).await.unwrap();
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in {text}")).to_owned()
}

/// Closed within half the default timeout: a server that ignored the
/// limit given (or had none) would keep them open longer, and fail this.
#[tokio::test]
async fn a_half_sent_request_and_an_idle_connection_are_closed_at_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let (elector, _client) = serve(Knobs {
        limits: Limits { header_read_timeout: Duration::from_millis(300), ..Limits::default() },
        ..Knobs::default()
    })
    .await;
    let mut half = tokio::net::TcpStream::connect(elector.addr()).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut idle = tokio::net::TcpStream::connect(elector.addr()).await.unwrap();
    // A first byte that may yet be a POST or HTTP/2's preface, and a part
    // of the preface.
    let mut p = tokio::net::TcpStream::connect(elector.addr()).await.unwrap();
    p.write_all(b"P").await.unwrap();
    let mut preface = tokio::net::TcpStream::connect(elector.addr()).await.unwrap();
    preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let within = Limits::default().header_read_timeout / 2;
    for stream in [&mut half, &mut idle, &mut p, &mut preface] {
        read_until_closed(stream, within).await;
    }
}

/// One HTTP/2 connection with prior knowledge (h2c, as Envoy's elector
/// cluster speaks it), for the requests of one client.
struct H2 {
    send: hyper::client::conn::http2::SendRequest<http_body_util::Full<hyper::body::Bytes>>,
    /// Resolves when the connection ends.
    ended: tokio::task::JoinHandle<()>,
    addr: std::net::SocketAddr,
}

impl H2 {
    async fn connect(addr: std::net::SocketAddr) -> H2 {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let io = hyper_util::rt::TokioIo::new(stream);
        let (send, connection) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
        let ended = tokio::spawn(async move {
            let _ = connection.await;
        });
        H2 { send, ended, addr }
    }

    /// Sends a request on the connection; its status and body.
    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> impl Future<Output = (StatusCode, Vec<u8>)> + use<> {
        use http_body_util::BodyExt;
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(hyper::body::Bytes::from(body.unwrap_or_default())))
            .unwrap();
        let mut send = self.send.clone();
        async move {
            let answer = send.send_request(request).await.unwrap();
            let status = answer.status();
            (status, answer.into_body().collect().await.unwrap().to_bytes().to_vec())
        }
    }
}

/// A proxy's worker sends its watch, the watch that replaces it and each
/// held request's long-poll on one HTTP/2 connection: a claim, three
/// long-polls parked at once on that connection, and the release (on the
/// same connection) that answers all three.
#[tokio::test]
async fn http2_with_prior_knowledge_carries_parked_long_polls_and_writes_on_one_connection() {
    let (mut elector, _client) = serve(Knobs::default()).await;
    let h2 = H2::connect(elector.addr()).await;
    let claim = serde_json::to_vec(&acquire("a", 60_000)).unwrap();
    let (status, body) = h2.request(Method::PUT, "/v1/locks/multiplexed", Some(claim)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let lease: LeaseView = serde_json::from_slice(&body).unwrap();
    let path = format!("/v1/locks/multiplexed?wait={}&timeout_ms=60000", lease.version);
    let polls: Vec<_> = (0..3).map(|_| tokio::spawn(h2.request(Method::GET, &path, None))).collect();
    elector.parked(3).await;
    let end = serde_json::to_vec(&json!({"holder": "a", "token": lease.token})).unwrap();
    let (status, _) = h2.request(Method::DELETE, "/v1/locks/multiplexed", Some(end)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for poll in polls {
        // Free now: 404, at a newer version.
        let (status, body) = poll.await.unwrap();
        let read = mpsync_core::client::http::decode_read(status.as_u16(), &body).unwrap();
        assert!(matches!(read, Read::Free { version } if version > lease.version), "{read:?}");
    }
    assert!(!h2.ended.is_finished(), "one connection served them all");
}

/// An HTTP/2 connection with nothing in flight is closed at
/// `--header-read-timeout`, as an idle HTTP/1.1 one is (the client answers
/// the server's pings, so only the idle limit can close it).
#[tokio::test]
async fn an_idle_http2_connection_is_closed_at_the_header_timeout() {
    let (elector, _client) = serve(Knobs {
        limits: Limits { header_read_timeout: Duration::from_millis(300), ..Limits::default() },
        ..Knobs::default()
    })
    .await;
    let h2 = H2::connect(elector.addr()).await;
    assert_eq!(h2.request(Method::GET, "/healthz", None).await.0, StatusCode::OK);
    let within = Limits::default().header_read_timeout / 2;
    tokio::time::timeout(within, h2.ended).await.expect("the elector kept the idle connection open").unwrap();
}

/// The idle limit counts only an HTTP/2 connection with nothing in flight:
/// a long-poll parked longer than `--header-read-timeout` keeps it, is
/// answered at its own timeout, and the connection serves the next request.
#[tokio::test]
async fn an_http2_connection_with_a_parked_long_poll_is_not_idle() {
    let (mut elector, _client) = serve(Knobs {
        limits: Limits { header_read_timeout: Duration::from_secs(1), ..Limits::default() },
        ..Knobs::default()
    })
    .await;
    let h2 = H2::connect(elector.addr()).await;
    let claim = serde_json::to_vec(&acquire("a", 60_000)).unwrap();
    let (status, body) = h2.request(Method::PUT, "/v1/locks/busy", Some(claim)).await;
    assert_eq!(status, StatusCode::OK);
    let lease: LeaseView = serde_json::from_slice(&body).unwrap();
    // Three times the idle limit.
    let path = format!("/v1/locks/busy?wait={}&timeout_ms=3000", lease.version);
    let poll = tokio::spawn(h2.request(Method::GET, &path, None));
    elector.parked(1).await;
    let (status, body) = poll.await.unwrap();
    let read = mpsync_core::client::http::decode_read(status.as_u16(), &body).unwrap();
    assert!(matches!(read, Read::Held(ref l) if l.token == lease.token), "answered at its timeout: {read:?}");
    assert_eq!(h2.request(Method::GET, "/healthz", None).await.0, StatusCode::OK, "the connection still serves");
}

/// Shutdown answers a long-poll parked on an HTTP/2 connection at once, and
/// waits neither for a connection that has sent nothing nor for one that
/// has sent part of HTTP/2's preface (the header timeout here is 10 s).
#[tokio::test]
async fn shutdown_answers_http2_long_polls_and_waits_for_no_silent_connection() {
    use tokio::io::AsyncWriteExt;
    let (mut elector, _client) = serve(Knobs::default()).await;
    let _silent = tokio::net::TcpStream::connect(elector.addr()).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(elector.addr()).await.unwrap();
    partial.write_all(b"PRI * HT").await.unwrap();
    let h2 = H2::connect(elector.addr()).await;
    let claim = serde_json::to_vec(&acquire("a", 60_000)).unwrap();
    let (_, body) = h2.request(Method::PUT, "/v1/locks/bye-h2", Some(claim)).await;
    let lease: LeaseView = serde_json::from_slice(&body).unwrap();
    let path = format!("/v1/locks/bye-h2?wait={}&timeout_ms=120000", lease.version);
    let poll = tokio::spawn(h2.request(Method::GET, &path, None));
    elector.parked(1).await;
    elector.shut_down();
    let (status, _) = tokio::time::timeout(PATIENCE, poll).await.expect("long-poll hung at shutdown").unwrap();
    assert_eq!(status, StatusCode::OK);
    let within = Limits::default().header_read_timeout / 2;
    let served = tokio::time::timeout(within, &mut elector.serving).await.expect("shutdown waited for silence");
    served.unwrap().unwrap();
}

/// Sessions need a connection of their own: over HTTP/2 they are refused
/// with a clear 400, not reset.
#[tokio::test]
async fn a_session_over_http2_is_refused_with_400() {
    let (elector, _client) = serve(Knobs::default()).await;
    let h2 = H2::connect(elector.addr()).await;
    let (status, body) = h2.request(Method::POST, "/v1/sessions", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert!(error.message.contains("sessions need HTTP/1.1"), "{}", error.message);
}

#[tokio::test]
async fn past_max_connections_a_connection_gets_503_and_is_counted() {
    use tokio::io::AsyncWriteExt;
    let (elector, _client) =
        serve(Knobs { limits: Limits { max_connections: 2, ..Limits::default() }, ..Knobs::default() }).await;
    let connect = || tokio::net::TcpStream::connect(elector.addr());
    // The server accepts in order: these two hold the slots.
    let (mut first, mut second) = (connect().await.unwrap(), connect().await.unwrap());
    let mut third = connect().await.unwrap();
    let answer = read_until_closed(&mut third, PATIENCE).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1") && answer.contains("--max-connections"), "{answer}");
    // Counted: asked on a held connection, which has its slot already.
    first.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let metrics = read_until_closed(&mut first, PATIENCE).await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("mpsync_refusals_total{limit=\"connections\"} 1\n"), "{metrics}");
    // Once a held one is done, there is room again. This test runs on one
    // thread, and the server frees the slot in the same step in which it
    // closes the connection: before this task can see it closed.
    second.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    assert!(read_until_closed(&mut second, PATIENCE).await.starts_with("HTTP/1.1 200"));
    let mut fourth = connect().await.unwrap();
    fourth.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let answer = read_until_closed(&mut fourth, PATIENCE).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn past_max_long_polls_a_long_poll_gets_429_and_headers_past_the_limit_get_431() {
    let (mut elector, client) = serve(Knobs {
        max_long_polls: Some(1),
        limits: Limits { max_header_bytes: 8192, ..Limits::default() },
        ..Knobs::default()
    })
    .await;
    let parked = tokio::spawn({
        let client = client.clone();
        async move { client.read(Kind::Lock, "watched", Some((0, PATIENCE))).await }
    });
    elector.parked(1).await;
    assert_eq!(metric_line(&client, "mpsync_watchers").await, "mpsync_watchers 1");
    let second = client.request(Method::GET, "/v1/locks/watched?wait=0&timeout_ms=1000", None::<&()>).await.unwrap();
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(second.headers.contains_key("retry-after"));
    assert!(second.json::<ErrorBody>().unwrap().message.contains("--max-long-polls"));
    assert_eq!(
        metric_line(&client, "mpsync_refusals_total{limit=\"long_polls\"}").await,
        "mpsync_refusals_total{limit=\"long_polls\"} 1"
    );
    granted(&client, Kind::Lock, "watched", &acquire("a", 60_000)).await;
    assert!(matches!(parked.await.unwrap().unwrap(), Read::Held(_)));

    use tokio::io::AsyncWriteExt;
    let mut big = tokio::net::TcpStream::connect(elector.addr()).await.unwrap();
    let header = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nx-padding: {}\r\n\r\n", "a".repeat(20_000));
    let _ = big.write_all(header.as_bytes()).await;
    let answer = read_until_closed(&mut big, PATIENCE).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}
