//! Kubernetes Events: a real elector on the Kubernetes store writes an
//! Event (`events.k8s.io/v1`) on the Lease at each change of holder,
//! against the Lease API emulator (`kubernetes::*`, real HTTP; it serves
//! Events from the same object store) and a real cluster
//! (`real_cluster::*`, when `MPSYNC_TEST_KUBECONFIG` names a kubeconfig
//! whose credentials may also create and list Events; `#[ignore]`d
//! otherwise, run them with `--run-ignored only`). And with the events API
//! refusing or not answering, every lease operation still succeeds, and
//! the drops are counted in `/metrics`.
//!
//! Every wait is for the Events to reach a state, read in a loop with a
//! short pause, bounded by `PATIENCE` (a failure, never a timing claim).

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use hyper::{Method, StatusCode};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use mpsync_client::{Claimed, Client};
use mpsync_core::wire::{AcquireRequest, Kind, LeaseView, ReleaseRequest};
use serde_json::Value;
use testkit::event_api::EventsMode;

#[macro_use]
mod common;

use common::*;

const TTL: Duration = Duration::from_secs(30);

async fn cluster(backend: &Backend) -> Option<(kube::Client, String)> {
    match backend {
        Backend::RealCluster { kubeconfig, namespace } => {
            let (client, _) = elector::leader_service::cluster::connect(Some(kubeconfig.as_path())).await.unwrap();
            Some((client, namespace.clone()))
        }
        _ => None,
    }
}

fn namespace(backend: &Backend) -> String {
    match backend {
        Backend::RealCluster { namespace, .. } => namespace.clone(),
        _ => "sync-test".to_owned(),
    }
}

/// The Events regarding the Lease `lease`, in the order of the writes they
/// report (the Lease's resourceVersion then).
async fn events(backend: &Backend, lease: &str) -> Vec<Value> {
    let mut events: Vec<Value> = match backend {
        Backend::Kubernetes { api, .. } => api.events(Some("sync-test")),
        Backend::RealCluster { .. } => {
            let (client, ns) = cluster(backend).await.unwrap();
            let api: Api<Event> = Api::namespaced(client, &ns);
            let listed = api.list(&ListParams::default().fields(&format!("regarding.name={lease}"))).await.unwrap();
            listed.items.into_iter().map(|e| serde_json::to_value(e).unwrap()).collect()
        }
        _ => panic!("no Events in this store"),
    };
    events.retain(|e| e["regarding"]["name"] == lease);
    events.sort_by_key(|e| e["regarding"]["resourceVersion"].as_str().unwrap().parse::<u64>().unwrap());
    events
}

/// Reads the Events every 10 ms until there are `n`, and returns them.
async fn until_events(backend: &Backend, lease: &str, n: usize) -> Vec<Value> {
    let mut last = Vec::new();
    let reached = tokio::time::timeout(PATIENCE, async {
        loop {
            last = events(backend, lease).await;
            if last.len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    reached.unwrap_or_else(|_| panic!("{n} Events on {lease} never came; last seen: {last:#?}"));
    last
}

/// The Lease `name` as the API server has it now.
async fn lease(backend: &Backend, name: &str) -> Value {
    match backend {
        Backend::Kubernetes { api, .. } => {
            api.leases("sync-test").into_iter().find(|l| l["metadata"]["name"] == name).unwrap()
        }
        Backend::RealCluster { .. } => {
            let (client, ns) = cluster(backend).await.unwrap();
            let leases: Api<Lease> = Api::namespaced(client, &ns);
            serde_json::to_value(leases.get(name).await.unwrap()).unwrap()
        }
        _ => panic!("no Leases in this store"),
    }
}

/// Checks that `events` report, in order, `(instance, action, note)` of
/// `expected`, each a well-formed Event regarding the Lease `name`.
async fn check(backend: &Backend, name: &str, reason: &str, events: &[Value], expected: &[(&str, &str, String)]) {
    let lease = lease(backend, name).await;
    let said: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            let text = |field: &str| e[field].as_str().unwrap_or_default();
            (text("reportingInstance"), text("action"), text("note"))
        })
        .collect();
    let expected: Vec<(&str, &str, &str)> = expected.iter().map(|(i, a, n)| (*i, *a, n.as_str())).collect();
    assert_eq!(said, expected, "{events:#?}");
    for e in events {
        let regarding = &e["regarding"];
        assert_eq!(regarding["apiVersion"], "coordination.k8s.io/v1");
        assert_eq!(regarding["kind"], "Lease");
        assert_eq!(regarding["namespace"], namespace(backend).as_str());
        assert_eq!(regarding["uid"], lease["metadata"]["uid"], "the Lease's uid");
        assert_eq!(e["metadata"]["namespace"], namespace(backend).as_str());
        assert_eq!(e["reportingController"], "metaparticle.io/elector");
        assert_eq!(e["reason"], reason);
        assert_eq!(e["type"], "Normal");
        assert!(e["eventTime"].as_str().is_some_and(|t| t.contains('T')), "{e}");
        let event_name = e["metadata"]["name"].as_str().unwrap();
        let suffix = event_name.strip_prefix(&format!("{name}.")).unwrap_or_else(|| panic!("{event_name}"));
        assert!(suffix.len() == 16 && suffix.bytes().all(|b| b.is_ascii_hexdigit()), "{event_name}");
    }
    // The last Event reports the last write.
    let last = events.last().unwrap();
    assert_eq!(last["regarding"]["resourceVersion"], lease["metadata"]["resourceVersion"]);
    // In the order of the writes, the Events' times never go back (the
    // same fixed-width RFC 3339 format, so text order is time order)...
    let times: Vec<&str> = events.iter().map(|e| e["eventTime"].as_str().unwrap()).collect();
    assert!(times.is_sorted(), "{times:?}");
    // ...and each elector created its own in that order.
    if let Backend::Kubernetes { api, .. } = backend {
        let created: Vec<Value> = api.events(None).into_iter().filter(|e| e["regarding"]["name"] == name).collect();
        for instance in ["elector-a", "elector-b"] {
            let of = |list: &[Value]| -> Vec<Value> {
                list.iter().filter(|e| e["reportingInstance"] == instance).map(|e| e["note"].clone()).collect()
            };
            assert_eq!(of(&created), of(events), "{instance} created its Events out of order");
        }
    }
}

async fn claim(client: &Client, kind: Kind, name: &str, request: &AcquireRequest) -> LeaseView {
    match client.claim(kind, name, request).await.unwrap() {
        Claimed::Granted(lease) => lease,
        other => panic!("{request:?} not granted: {other:?}"),
    }
}

/// An election led through one elector, left when its leader's session
/// ends, then led and resigned through another: four Events, each
/// reported by the elector that made the write.
async fn an_election_handed_over_between_electors(store: &str) {
    let backend = Backend::start(store).await;
    let (election, lease_name) = {
        let name = unique("web");
        let lease = format!("election.{name}");
        (name, lease)
    };
    let (elector_a, a) = backend.elector("elector-a", &[]).await;
    let (_elector_b, b) = backend.elector("elector-b", &[]).await;

    let session = open_session(elector_a.addr()).await;
    let request = AcquireRequest::new("pod-a", TTL, None, Some("10.0.0.1:8080")).with_session(Some(&session.id));
    let first = claim(&a, Kind::Election, &election, &request).await;
    let refused = b.claim(Kind::Election, &election, &AcquireRequest::new("pod-b", TTL, None, None)).await.unwrap();
    assert!(matches!(refused, Claimed::Refused(_)), "{refused:?}");
    // pod-a's process ends: its session closes, its leadership with it.
    drop(session);
    wait_free(&b, Kind::Election, &election, first.version).await;
    let second = claim(&b, Kind::Election, &election, &AcquireRequest::new("pod-b", TTL, None, None)).await;
    assert!(b.release(Kind::Election, &election, "pod-b", second.token).await.unwrap());

    let (t1, t2) = (first.token, second.token);
    let events = until_events(&backend, &lease_name, 4).await;
    let expected = [
        ("elector-a", "Acquire", format!("pod-a became leader (token {t1}; acquired)")),
        ("elector-a", "Release", format!("pod-a stopped leading (token {t1}; session ended)")),
        ("elector-b", "Acquire", format!("pod-b became leader (token {t2}; acquired)")),
        ("elector-b", "Release", format!("pod-b stopped leading (token {t2}; released)")),
    ];
    check(&backend, &lease_name, "LeaderElection", &events, &expected).await;
}

/// A fair lock taken, handed to the waiter in line by its release (one
/// write: the Event names both), and released with nobody waiting.
async fn a_lock_handed_to_the_next_in_line(store: &str) {
    let backend = Backend::start(store).await;
    let name = unique("jobs");
    let lease_name = format!("lock.{name}");
    let (_elector, client) = backend.elector("elector-a", &[]).await;

    let first = granted(&client, &name, &acquire("w1", 30_000)).await;
    let waiting = acquire("w2", 30_000).in_line(None, Duration::ZERO);
    let Claimed::Queued(place) = client.claim(Kind::Lock, &name, &waiting).await.unwrap() else {
        panic!("w2 took no place in line")
    };
    assert!(client.release_with(Kind::Lock, &name, &release("w1", first.token)).await.unwrap());
    // The release handed it over: w2's claim with its ticket is granted.
    let handed = claim(&client, Kind::Lock, &name, &acquire("w2", 30_000).in_line(Some(place.ticket), TTL / 2)).await;
    assert!(client.release_with(Kind::Lock, &name, &release("w2", handed.token)).await.unwrap());

    let (t1, t2) = (first.token, handed.token);
    let events = until_events(&backend, &lease_name, 3).await;
    let expected = [
        ("elector-a", "Acquire", format!("w1 acquired the lock (token {t1}; acquired)")),
        ("elector-a", "Acquire", format!("w2 acquired the lock (token {t2}; w1 released it)")),
        ("elector-a", "Release", format!("w2 released the lock (token {t2}; released)")),
    ];
    check(&backend, &lease_name, "LockHolder", &events, &expected).await;
}

fn release(holder: &str, token: u64) -> ReleaseRequest {
    ReleaseRequest { holder: holder.into(), token, ticket: None, key: None }
}

suite!(kubernetes: an_election_handed_over_between_electors, a_lock_handed_to_the_next_in_line);
suite!(real_cluster #[ignore = "needs MPSYNC_TEST_KUBECONFIG (a real cluster)"]:
    an_election_handed_over_between_electors, a_lock_handed_to_the_next_in_line);

/// `mpsync_store_calls_total{store="kubernetes",call=CALL}` now.
async fn store_call(client: &Client, call: &str) -> u64 {
    let reply = client.request(Method::GET, "/metrics", None::<&()>).await.unwrap();
    let prefix = format!("mpsync_store_calls_total{{store=\"kubernetes\",call=\"{call}\"}} ");
    String::from_utf8_lossy(&reply.body).lines().find_map(|l| l.strip_prefix(&prefix)?.parse().ok()).unwrap_or(0)
}

/// Asks `/metrics` every 20 ms (there is no event to wait on) until CALL
/// has been counted `n` times.
async fn until_counted(client: &Client, call: &str, n: u64) {
    let mut every = tokio::time::interval(Duration::from_millis(20));
    let mut seen = 0;
    let reached = tokio::time::timeout(PATIENCE, async {
        loop {
            every.tick().await;
            seen = store_call(client, call).await;
            if seen >= n {
                return;
            }
        }
    })
    .await;
    reached.unwrap_or_else(|_| panic!("{call} counted {seen} times, never {n}"));
    assert_eq!(seen, n, "{call}");
}

/// Lease operations go on while the events API holds the elector's first
/// Event unanswered (an elector that waited for it would hang here until
/// its 60 s store timeout), and then refuses every Event with 403: every
/// one is dropped and counted, none fails a lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_refused_or_unanswered_never_block_a_lease() {
    let backend = Backend::start("kubernetes").await;
    let Backend::Kubernetes { api, .. } = &backend else { unreachable!() };
    let name = unique("jobs");
    let (_elector, client) = backend.elector("elector-a", &["--store-timeout", "60s"]).await;

    api.set_events_mode(EventsMode::Hold);
    let mut held = api.events_held();
    let ops = tokio::time::timeout(PATIENCE, async {
        let a = granted(&client, &name, &acquire("w1", 30_000)).await;
        held.wait_for(|n| *n == 1).await.unwrap();
        assert!(client.release(Kind::Lock, &name, "w1", a.token).await.unwrap());
        let b = granted(&client, &name, &acquire("w2", 30_000)).await;
        assert!(client.release(Kind::Lock, &name, "w2", b.token).await.unwrap());
    })
    .await;
    ops.expect("a lease operation waited for an Event");
    assert_eq!(*held.borrow(), 1, "the first Event is still unanswered");
    assert_eq!(ready(&client).await, StatusCode::OK, "Events are not the store: /readyz stays 200");

    api.set_events_mode(EventsMode::Refuse(StatusCode::FORBIDDEN));
    until_counted(&client, "event_dropped", 4).await;
    let c = granted(&client, &name, &acquire("w3", 30_000)).await;
    until_counted(&client, "event_dropped", 5).await;
    assert_eq!(store_call(&client, "event").await, 0);
    assert!(api.events(None).is_empty());

    // Allowed again: the next change of holder is recorded.
    api.set_events_mode(EventsMode::Answer);
    assert!(client.release(Kind::Lock, &name, "w3", c.token).await.unwrap());
    until_counted(&client, "event", 1).await;
    let recorded = api.events(None);
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["note"], format!("w3 released the lock (token {}; released)", c.token));
}

/// `--kubernetes-events false`: no Event, and no counter for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turned_off_no_event_is_written() {
    let backend = Backend::start("kubernetes").await;
    let Backend::Kubernetes { api, .. } = &backend else { unreachable!() };
    let name = unique("jobs");
    let (_elector, client) = backend.elector("elector-a", &["--kubernetes-events", "false"]).await;
    let lease = granted(&client, &name, &acquire("w1", 30_000)).await;
    assert!(client.release(Kind::Lock, &name, "w1", lease.token).await.unwrap());
    assert!(api.events(None).is_empty());
    assert_eq!(*api.event_requests().borrow(), 0);
    let reply = client.request(Method::GET, "/metrics", None::<&()>).await.unwrap();
    assert!(!String::from_utf8_lossy(&reply.body).contains("call=\"event"));
}
