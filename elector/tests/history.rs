//! The history of changes of holder (`GET /v1/history`, `GET
//! /v1/{locks,elections}/{name}/history`) on every store: hand-overs written
//! through another elector (one elector for the memory store) show in this
//! elector's history with their holders, token and why; `after=` long-polls
//! answer when a change comes; a reader from beyond the newest change is
//! told of a gap; bad queries get 400 naming the parameter.

#![allow(clippy::unwrap_used, missing_docs)]

use hyper::{Method, StatusCode};
use mpsync_client::{Claimed, Client};
use mpsync_core::Why;
use mpsync_core::history::{Entry, NameHistory, Page};
use mpsync_core::wire::{ErrorBody, Kind};
use testkit::elector::ElectorProcess;

#[macro_use]
mod common;

use common::*;

/// What a change says, in short: (from, to, token, why).
type Change = (Option<String>, Option<String>, u64, Option<Why>);

fn short(entry: &Entry) -> Change {
    (entry.from.clone(), entry.to.clone(), entry.token, entry.why)
}

fn some(holder: &str) -> Option<String> {
    Some(holder.to_owned())
}

async fn get<T: serde::de::DeserializeOwned>(client: &Client, path: &str) -> T {
    let reply = client.request(Method::GET, path, None::<&()>).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", String::from_utf8_lossy(&reply.body));
    serde_json::from_slice(&reply.body).unwrap()
}

/// The observer and the elector changes are written through: another
/// process over the same store, except for the memory store (one elector
/// is all there is). The observer has listed the store once it answers.
async fn observer_and_writer(backend: &Backend) -> (ElectorProcess, Client, Option<ElectorProcess>, Client) {
    let (observer, watching) = backend.elector("observer", &[]).await;
    let _: Page = get(&watching, "/v1/history").await;
    if matches!(backend, Backend::Memory) {
        let writing = Client::new(&observer.url());
        return (observer, watching, None, writing);
    }
    let (writer, writing) = backend.elector("writer", &[]).await;
    (observer, watching, Some(writer), writing)
}

/// Follows `client`'s history from `after` (long-polls, no sleeps) until
/// `name` has `count` changes there; returns them.
async fn changes_of(client: &Client, name: &str, count: usize) -> Vec<Entry> {
    let mut after = 0;
    let mut seen = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while seen.len() < count {
            let page: Page = get(client, &format!("/v1/history?after={after}&timeout_ms=5000")).await;
            assert!(!page.gap, "nothing left the ring here");
            seen.extend(page.changes.into_iter().filter(|e| e.name == name));
            after = page.next;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{name}: {count} changes never came; saw {seen:?}"));
    seen
}

// ---------------------------------------------------------------- the cases

/// Acquired, released, expired, session ended: each change of holder,
/// written through another elector, in this one's history.
async fn every_hand_over_is_in_the_history_with_its_why(store: &str) {
    let backend = Backend::start(store).await;
    let (observer, watching, writer, writing) = observer_and_writer(&backend).await;
    let name = unique("hist");
    let alice = granted(&writing, &name, &acquire("alice", 30_000)).await;
    // A renewal is no change of holder.
    granted(&writing, &name, &renew("alice", 30_000, alice.token)).await;
    assert!(writing.release(Kind::Lock, &name, "alice", alice.token).await.unwrap());
    // bob's lease runs out; carol takes it once it has (the elector may
    // clear it first: then bob's change is to nobody).
    let bob = granted(&writing, &name, &acquire("bob", 300)).await;
    wait_free(&writing, Kind::Lock, &name, bob.version).await;
    let carol = granted(&writing, &name, &acquire("carol", 30_000)).await;
    assert!(writing.release(Kind::Lock, &name, "carol", carol.token).await.unwrap());
    // dave holds it under a session whose holder's end closes.
    let addr = writer.as_ref().map_or_else(|| observer.addr(), ElectorProcess::addr);
    let session = open_session(addr).await;
    let dave = granted(&writing, &name, &acquire("dave", 30_000).with_session(Some(&session.id))).await;
    drop(session);
    let released = wait_free(&writing, Kind::Lock, &name, dave.version).await;
    assert!(released > dave.version);

    let expired_by_sweeper =
        |changes: &[Entry]| changes.iter().any(|e| e.from.as_deref() == Some("bob") && e.to.is_none());
    let count = 8;
    let mut changes = changes_of(&watching, &name, count - 1).await;
    if expired_by_sweeper(&changes) && changes.len() < count {
        changes = changes_of(&watching, &name, count).await;
    }
    let mut expected: Vec<Change> = vec![
        (None, some("alice"), alice.token, Some(Why::Acquired)),
        (some("alice"), None, alice.token, Some(Why::Released)),
        (None, some("bob"), bob.token, Some(Why::Acquired)),
    ];
    if expired_by_sweeper(&changes) {
        expected.push((some("bob"), None, bob.token, Some(Why::Expired)));
        expected.push((None, some("carol"), carol.token, Some(Why::Acquired)));
    } else {
        expected.push((some("bob"), some("carol"), carol.token, Some(Why::Expired)));
    }
    expected.extend([
        (some("carol"), None, carol.token, Some(Why::Released)),
        (None, some("dave"), dave.token, Some(Why::Acquired)),
        (some("dave"), None, dave.token, Some(Why::SessionEnded)),
    ]);
    assert_eq!(changes.iter().map(short).collect::<Vec<_>>(), expected);
    assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq), "oldest first");
    assert!(changes.iter().all(|e| e.kind == Kind::Lock && e.at.ends_with('Z') && e.at.len() == 24), "{changes:?}");
    // The name's own history says the same.
    let own: NameHistory = get(&watching, &format!("/v1/locks/{name}/history")).await;
    assert_eq!((own.kind, own.name.as_str()), (Kind::Lock, name.as_str()));
    assert_eq!(own.changes, changes);
    let none: NameHistory = get(&watching, &format!("/v1/elections/{name}/history")).await;
    assert!(none.changes.is_empty(), "an election of the same name is another record");
    // Counted, by why.
    let metrics = String::from_utf8_lossy(&watching.request(Method::GET, "/metrics", None::<&()>).await.unwrap().body)
        .into_owned();
    for why in ["acquired", "released", "expired", "session_ended"] {
        let line = format!("mpsync_handovers_total{{kind=\"lock\",why=\"{why}\"}} ");
        assert!(metrics.lines().any(|l| l.starts_with(&line)), "no {line} in\n{metrics}");
    }
}

/// A reader waiting with `after=` is answered by the next change, and an
/// election that lost its leader is leaderless until the next one.
async fn a_long_poll_answers_when_a_change_comes(store: &str) {
    let backend = Backend::start(store).await;
    let (_observer, watching, _writer, writing) = observer_and_writer(&backend).await;
    let newest: Page = get(&watching, "/v1/history").await;
    let name = unique("hist-poll");
    let path = format!("/v1/history?after={}&timeout_ms=60000", newest.next);
    let waiting = tokio::spawn({
        let watching = watching.clone();
        async move { get::<Page>(&watching, &path).await }
    });
    // Parked (there is no event to await from outside): then the change.
    until_metric(&watching, "mpsync_long_polls ", 1.0).await;
    let mut stand = acquire("leader-1", 30_000);
    stand.address = Some("10.0.0.7:8080".into());
    let Claimed::Granted(lead) = writing.claim(Kind::Election, &name, &stand).await.unwrap() else { panic!() };
    let page = tokio::time::timeout(PATIENCE, waiting).await.expect("the long-poll never answered").unwrap();
    let change = page.changes.iter().find(|e| e.name == name).unwrap_or_else(|| panic!("{page:?}"));
    assert_eq!(
        (change.kind, short(change)),
        (Kind::Election, (None, some("leader-1"), lead.token, Some(Why::Acquired)))
    );
    assert_eq!(change.address.as_deref(), Some("10.0.0.7:8080"));
    assert_eq!(page.next, page.changes.last().unwrap().seq);
    assert!(writing.release(Kind::Election, &name, "leader-1", lead.token).await.unwrap());
    changes_of(&watching, &name, 2).await;
    until_metric(&watching, &format!("mpsync_election_leaderless_seconds{{election=\"{name}\"}} "), 0.0).await;
}

/// A reader from beyond the newest change (the elector restarted under
/// it) is told of a gap and given what there is; bad queries get 400.
async fn gaps_limits_and_bad_queries(store: &str) {
    let backend = Backend::start(store).await;
    let (_observer, watching, _writer, writing) = observer_and_writer(&backend).await;
    let name = unique("hist-gap");
    for holder in ["a", "b"] {
        let lease = granted(&writing, &name, &acquire(holder, 30_000)).await;
        assert!(writing.release(Kind::Lock, &name, holder, lease.token).await.unwrap());
    }
    let seen = changes_of(&watching, &name, 4).await;
    let newest = seen.last().unwrap().seq;
    let beyond: Page = get(&watching, &format!("/v1/history?after={}&limit=1000", newest + 1000)).await;
    assert!(beyond.gap, "after is beyond the newest change");
    assert_eq!(beyond.next, newest);
    assert_eq!(beyond.changes.last().map(|e| e.seq), Some(newest), "what there is, from the oldest kept");
    let two: Page = get(&watching, &format!("/v1/history?after={}&limit=2", seen[0].seq - 1)).await;
    assert_eq!(two.changes.iter().map(|e| e.seq).collect::<Vec<_>>(), [seen[0].seq, seen[0].seq + 1]);
    assert_eq!((two.next, two.gap), (seen[0].seq + 1, false));
    let now: Page = get(&watching, &format!("/v1/history?after={newest}")).await;
    assert!(now.changes.iter().all(|e| e.name != name) && !now.gap, "nothing after the newest, no wait asked");
    for (path, field) in [
        ("/v1/history?limit=0", "limit"),
        ("/v1/history?limit=1001", "limit"),
        ("/v1/history?after=-1", "after"),
        ("/v1/history?timeout_ms=soon", "timeout_ms"),
        ("/v1/history?wait=1", "wait"),
        ("/v1/locks/Not_A_Name/history", "name"),
        ("/v1/locks/db/history?after=1", "after"),
    ] {
        let reply = watching.request(Method::GET, path, None::<&()>).await.unwrap();
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        let body: ErrorBody = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body.field.as_deref(), Some(field), "{path}: {}", body.message);
    }
}

/// `--history 0` keeps none, and says so.
async fn history_off(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("no-history", &["--history", "0"]).await;
    for path in ["/v1/history", "/v1/locks/db/history"] {
        let reply = client.request(Method::GET, path, None::<&()>).await.unwrap();
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert!(String::from_utf8_lossy(&reply.body).contains("--history 0"));
    }
}

/// Asks `/metrics` every 20 ms (there is no event to wait on) until the
/// line starting with `series` shows at least `at_least`.
async fn until_metric(client: &Client, series: &str, at_least: f64) {
    let mut every = tokio::time::interval(std::time::Duration::from_millis(20));
    tokio::time::timeout(PATIENCE, async {
        loop {
            every.tick().await;
            let reply = client.request(Method::GET, "/metrics", None::<&()>).await.unwrap();
            let text = String::from_utf8_lossy(&reply.body).into_owned();
            let value = text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok());
            if value.is_some_and(|v| v >= at_least) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{series} never reached {at_least}"));
}

suite!(memory: every_hand_over_is_in_the_history_with_its_why, a_long_poll_answers_when_a_change_comes,
    gaps_limits_and_bad_queries, history_off);
suite!(etcd: every_hand_over_is_in_the_history_with_its_why, a_long_poll_answers_when_a_change_comes,
    gaps_limits_and_bad_queries);
suite!(kubernetes: every_hand_over_is_in_the_history_with_its_why, a_long_poll_answers_when_a_change_comes,
    gaps_limits_and_bad_queries);
suite!(real_cluster #[ignore = "needs MPSYNC_TEST_KUBECONFIG (a real cluster)"]:
    every_hand_over_is_in_the_history_with_its_why, a_long_poll_answers_when_a_change_comes);
