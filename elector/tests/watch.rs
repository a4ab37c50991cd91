//! A watch over many names in one request (`POST /v1/watch`) on every
//! store (a real elector over memory, a real etcd, the Lease API
//! emulator): it answers with just the record that changed among many,
//! when a lease runs out without a write, when another elector of the
//! same store writes, and when the same watcher sends a newer watch; it
//! holds one long-poll slot whatever the number of names; bad requests
//! are refused with the field named. A set kept between a watcher's
//! watches (`keep`, `resume`) is resumed with only what changed, catches
//! up with what happened between two watches, answers again what the
//! client does not say it learnt, and is answered 410 when the elector
//! does not keep it (any more, at all, or within its bound).

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use hyper::Method;
use mpsync_client::Client;
use mpsync_core::watch::{Since, WatchAnswer, WatchRequest, Watched};
use mpsync_core::wire::{AcquireRequest, ErrorBody, Kind};

#[macro_use]
mod common;

use common::*;

/// Long enough that no lease here runs out unless the case says so.
const TTL_MS: u64 = 40_000;

async fn watch(client: &Client, request: &WatchRequest) -> Result<WatchAnswer, (u16, ErrorBody)> {
    let reply = client.request(Method::POST, "/v1/watch", Some(request)).await.unwrap();
    match reply.status.as_u16() {
        200 => Ok(serde_json::from_slice(&reply.body).unwrap()),
        status => Err((status, serde_json::from_slice(&reply.body).unwrap())),
    }
}

/// A watch of `names`, each known at the held view's version in
/// `versions` (0: no holder known), without tokens: every write is news.
fn elections(names: &[String], versions: &[u64], timeout_ms: u64) -> WatchRequest {
    let since = |version: u64| Since { version, token: None };
    WatchRequest {
        elections: names.iter().cloned().zip(versions.iter().map(|v| since(*v))).collect(),
        timeout_ms: Some(timeout_ms),
        ..WatchRequest::default()
    }
}

async fn lead(client: &Client, name: &str, holder: &str, ttl_ms: u64) -> u64 {
    let address = format!("10.0.0.1:80{holder}");
    let request = AcquireRequest::new(holder, Duration::from_millis(ttl_ms), None, Some(&address));
    match client.claim(Kind::Election, name, &request).await.unwrap() {
        mpsync_client::Claimed::Granted(lease) => lease.token,
        other => panic!("{holder} does not lead {name}: {other:?}"),
    }
}

/// The versions a watch with nothing known answers at once, in `names`'
/// order (0 where there is no record).
async fn versions_now(client: &Client, names: &[String]) -> Vec<u64> {
    let answer = watch(client, &elections(names, &vec![0; names.len()], 0)).await.unwrap();
    names.iter().map(|n| answer.changed.iter().find(|w| &w.name == n).map_or(0, |w| w.version)).collect()
}

fn only(answer: WatchAnswer) -> Watched {
    assert_eq!(answer.changed.len(), 1, "{answer:?}");
    answer.changed.into_iter().next().unwrap()
}

/// 200 elections (more than the elector reads one by one), a third of
/// them led: a watch knowing them all answers with exactly the one that
/// changes, held then free.
async fn a_watch_answers_with_the_one_record_that_changed(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("e1", &[]).await;
    let names: Vec<String> = (0..200).map(|i| unique(&format!("shard{i}"))).collect();
    for name in names.iter().step_by(3) {
        lead(&client, name, "1", TTL_MS).await;
    }
    let versions = versions_now(&client, &names).await;
    assert_eq!(versions.iter().filter(|v| **v != 0).count(), 67, "every record held is news to a watch at 0");
    // An election elsewhere taken and released: the memory store forgets
    // it, which moves the version every absent name reads at. Still
    // nobody holds the 133 free ones: no news.
    let elsewhere = unique("elsewhere");
    let token = lead(&client, &elsewhere, "3", TTL_MS).await;
    assert!(client.release(Kind::Election, &elsewhere, "3", token).await.unwrap());
    // Nothing is news: the watch parks, and answers empty at its timeout.
    let quiet = watch(&client, &elections(&names, &versions, 200)).await.unwrap();
    assert!(quiet.changed.is_empty(), "{quiet:?}");
    let parked = tokio::spawn({
        let (client, request) = (client.clone(), elections(&names, &versions, PATIENCE.as_millis() as u64));
        async move { watch(&client, &request).await.unwrap() }
    });
    until_watching(&client, 1).await;
    let token = lead(&client, &names[137], "2", TTL_MS).await;
    let changed = only(tokio::time::timeout(PATIENCE, parked).await.expect("the watch never answered").unwrap());
    assert_eq!((changed.kind, changed.name.as_str()), (Kind::Election, names[137].as_str()));
    let lease = changed.lease.expect("held");
    assert_eq!((lease.holder.as_str(), lease.token, lease.version), ("2", token, changed.version));
    assert!(changed.version > versions[137]);
    // Released: free, at a newer version.
    let mut known = versions.clone();
    known[137] = changed.version;
    let parked = tokio::spawn({
        let (client, request) = (client.clone(), elections(&names, &known, PATIENCE.as_millis() as u64));
        async move { watch(&client, &request).await.unwrap() }
    });
    until_watching(&client, 1).await;
    assert!(client.release(Kind::Election, &names[137], "2", token).await.unwrap());
    let freed = only(tokio::time::timeout(PATIENCE, parked).await.expect("the watch never answered").unwrap());
    assert_eq!(freed.name, names[137]);
    assert!(freed.lease.is_none() && freed.version > known[137], "{freed:?}");
}

/// A lease running out writes nothing; the watch still answers, with the
/// record free.
async fn a_lease_running_out_answers_a_watch(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("e1", &[]).await;
    let names: Vec<String> = (0..3).map(|i| unique(&format!("expiring{i}"))).collect();
    lead(&client, &names[1], "1", 1500).await;
    let versions = versions_now(&client, &names).await;
    let answer = watch(&client, &elections(&names, &versions, PATIENCE.as_millis() as u64)).await.unwrap();
    let expired = only(answer);
    assert_eq!(expired.name, names[1]);
    // The same write seen run out (the next view version), not a later
    // write such as the sweeper clearing the record.
    assert!(expired.lease.is_none() && expired.version == versions[1] + 1, "{expired:?}");
}

/// Two electors of one store: a write through one answers a watch parked
/// on the other (the store's own watch feeds it).
async fn a_watch_sees_writes_through_another_elector(store: &str) {
    let backend = Backend::start(store).await;
    let (_one, watching) = backend.elector("e1", &[]).await;
    let (_two, writing) = backend.elector("e2", &[]).await;
    let names: Vec<String> = (0..100).map(|i| unique(&format!("other{i}"))).collect();
    let versions = versions_now(&watching, &names).await;
    let parked = tokio::spawn({
        let (client, request) = (watching.clone(), elections(&names, &versions, PATIENCE.as_millis() as u64));
        async move { watch(&client, &request).await.unwrap() }
    });
    until_watching(&watching, 1).await;
    let token = lead(&writing, &names[42], "9", TTL_MS).await;
    let changed = only(tokio::time::timeout(PATIENCE, parked).await.expect("the watch never answered").unwrap());
    assert_eq!((changed.name.as_str(), changed.lease.map(|l| l.token)), (names[42].as_str(), Some(token)));
}

/// A newer watch of the same watcher answers the one before it at once,
/// and takes its long-poll slot even when every slot is taken; another
/// watcher's is left alone. Each counts as one long-poll.
async fn a_newer_watch_of_the_same_watcher_answers_the_older(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("e1", &["--max-long-polls", "2"]).await;
    let names: Vec<String> = (0..50).map(|i| unique(&format!("grow{i}"))).collect();
    let long = PATIENCE.as_millis() as u64 * 3;
    let as_watcher = |watcher: &str, n: usize| WatchRequest {
        watcher: Some(watcher.into()),
        ..elections(&names[..n], &vec![0; n], long)
    };
    let spawn = |request: WatchRequest| {
        let client = client.clone();
        tokio::spawn(async move { watch(&client, &request).await })
    };
    let older = spawn(as_watcher("worker-1", 10));
    let other = spawn(as_watcher("worker-2", 10));
    until_watching(&client, 2).await;
    assert_eq!(metric(&client, "mpsync_watched_names").await, Some(20));
    // Both slots taken: the newer watch of worker-1 takes the older's.
    let newer = spawn(as_watcher("worker-1", 50));
    let answer = tokio::time::timeout(PATIENCE, older).await.expect("the older watch was never answered").unwrap();
    assert!(answer.unwrap().changed.is_empty(), "nothing had changed");
    let mut every = tokio::time::interval(Duration::from_millis(10));
    while metric(&client, "mpsync_watched_names").await != Some(60) {
        assert!(!newer.is_finished(), "the newer watch was refused: {:?}", newer.await);
        every.tick().await;
    }
    assert!(!other.is_finished(), "the other watcher's watch still waits");
    // Every slot taken: another watcher is refused, whatever its number of names.
    let (status, refused) = watch(&client, &as_watcher("worker-3", 1)).await.unwrap_err();
    assert_eq!((status, refused.error), (429, mpsync_core::wire::ErrorCode::Unavailable), "{refused:?}");
    for task in [other, newer] {
        task.abort();
    }
}

/// A watch that sends the token of the lease it knows is not answered by
/// renewals, only by the release; a look with timeout 0 parks nothing, so
/// it is served even with every long-poll slot taken.
async fn a_renewal_is_no_news_to_a_watch_that_knows_the_token(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("e1", &["--max-long-polls", "1"]).await;
    let name = unique("renewed");
    let address = "10.0.0.1:801";
    let acquire = AcquireRequest::new("1", Duration::from_millis(TTL_MS), None, Some(address));
    let lease = match client.claim(Kind::Election, &name, &acquire).await.unwrap() {
        mpsync_client::Claimed::Granted(lease) => lease,
        other => panic!("{other:?}"),
    };
    let request = WatchRequest {
        elections: [(name.clone(), Since { version: lease.version, token: Some(lease.token) })].into(),
        timeout_ms: Some(PATIENCE.as_millis() as u64),
        ..WatchRequest::default()
    };
    let parked = tokio::spawn({
        let (client, request) = (client.clone(), request.clone());
        async move { watch(&client, &request).await.unwrap() }
    });
    until_watching(&client, 1).await;
    let look = WatchRequest { timeout_ms: Some(0), ..request };
    assert!(watch(&client, &look).await.unwrap().changed.is_empty(), "a look is served beside the parked watch");
    for _ in 0..3 {
        let renew = AcquireRequest::new("1", Duration::from_millis(TTL_MS), Some(lease.token), Some(address));
        let renewed = client.claim(Kind::Election, &name, &renew).await.unwrap();
        assert!(matches!(renewed, mpsync_client::Claimed::Granted(_)), "{renewed:?}");
    }
    assert!(client.release(Kind::Election, &name, "1", lease.token).await.unwrap());
    let answer = only(tokio::time::timeout(PATIENCE, parked).await.expect("never answered").unwrap());
    assert!(answer.lease.is_none(), "answered by a renewal, not by the release: {answer:?}");
}

/// A valid name the store cannot keep (over 244 characters for a Lease)
/// is never held: the watch is served for the other names, not refused.
async fn a_name_the_store_cannot_keep_is_never_news(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("e1", &[]).await;
    let long = format!("{}.{}", "a".repeat(63), ["b".repeat(63), "c".repeat(63), "d".repeat(58)].join("."));
    assert_eq!(long.len(), 250);
    let names = vec![long, unique("kept")];
    let parked = tokio::spawn({
        let (client, request) = (client.clone(), elections(&names, &[0, 0], PATIENCE.as_millis() as u64));
        async move { watch(&client, &request).await }
    });
    until_watching(&client, 1).await;
    let token = lead(&client, &names[1], "1", TTL_MS).await;
    let answer = tokio::time::timeout(PATIENCE, parked).await.expect("never answered").unwrap();
    let changed = only(answer.expect("the watch is served"));
    assert_eq!((changed.name.as_str(), changed.lease.map(|l| l.token)), (names[1].as_str(), Some(token)));
}

/// Bad watches are refused before anything parks, with the field named.
async fn watch_requests_are_checked(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("e1", &["--max-watch-names", "3", "--max-poll-wait", "300ms"]).await;
    let names = |n: usize| (0..n).map(|i| format!("n{i}")).collect::<Vec<_>>();
    let refused = |request: serde_json::Value| {
        let client = client.clone();
        async move {
            let reply = client.request(Method::POST, "/v1/watch", Some(&request)).await.unwrap();
            let body: ErrorBody = serde_json::from_slice(&reply.body).unwrap();
            (reply.status.as_u16(), body.field.unwrap_or_default())
        }
    };
    let map = |names: Vec<String>| {
        names.into_iter().map(|n| serde_json::json!({"name": n, "version": 0})).collect::<Vec<_>>()
    };
    assert_eq!(refused(serde_json::json!({})).await, (400, "locks".into()), "nothing to watch");
    assert_eq!(refused(serde_json::json!({"elections": map(names(4))})).await, (400, "elections".into()));
    assert_eq!(
        refused(serde_json::json!({"locks": [{"name": "Not_A_Name", "version": 0}]})).await,
        (400, "locks".into())
    );
    assert_eq!(refused(serde_json::json!({"locks": map(names(1)), "watcher": "a b"})).await, (400, "watcher".into()));
    assert_eq!(
        refused(serde_json::json!({"locks": map(names(1)), "timeout_ms": 300_001})).await,
        (400, "timeout_ms".into())
    );
    assert_eq!(refused(serde_json::json!({"locks": map(names(1)), "colour": 1})).await.0, 400, "unknown fields");
    // Kept sets: per watcher, keep or resume, a resume with its total.
    assert_eq!(refused(serde_json::json!({"locks": map(names(1)), "keep": "k1"})).await, (400, "keep".into()));
    assert_eq!(refused(serde_json::json!({"resume": "k1", "total": 1})).await, (400, "resume".into()));
    let both = serde_json::json!({"locks": map(names(1)), "watcher": "w", "keep": "k2", "resume": "k1", "total": 1});
    assert_eq!(refused(both).await, (400, "resume".into()));
    assert_eq!(refused(serde_json::json!({"watcher": "w", "resume": "k1"})).await, (400, "total".into()));
    let odd = serde_json::json!({"locks": map(names(1)), "watcher": "w", "keep": "k 1"});
    assert_eq!(refused(odd).await, (400, "keep".into()));
    let long = serde_json::json!({"locks": map(names(1)), "watcher": "w", "keep": "k".repeat(48)});
    assert_eq!(refused(long).await, (400, "keep".into()));
    let word = serde_json::json!({"locks": [{"name": "a", "version": "x"}]});
    assert_eq!(refused(word).await.0, 400, "a version is a number");
    // Three names are allowed: answered (nothing written, nothing new).
    let fine =
        WatchRequest { locks: names(3).into_iter().map(|n| (n, Since::NOTHING)).collect(), ..WatchRequest::default() };
    let fine = WatchRequest { timeout_ms: Some(0), ..fine };
    assert!(watch(&client, &fine).await.unwrap().changed.is_empty());
    // Asking for a minute, parked at most --max-poll-wait.
    let long = WatchRequest { timeout_ms: Some(60_000), ..fine };
    let capped = tokio::time::timeout(PATIENCE, watch(&client, &long)).await.expect("parked past --max-poll-wait");
    assert!(capped.unwrap().changed.is_empty());
    // A body past the limit: 413, read no further.
    let huge = "x".repeat(elector::api::MAX_WATCH_BODY + 1);
    let reply = client.send(Method::POST, "/v1/watch", Some(huge.into())).await.unwrap();
    assert_eq!(reply.status, 413);
}

/// A watch of `entries` with the client's knowledge, resuming kept set `id`
/// of watcher `w` whose whole set has `total` names.
fn resume(entries: &[(&String, Since)], id: &str, total: usize, timeout_ms: u64) -> WatchRequest {
    WatchRequest {
        elections: entries.iter().map(|(n, s)| ((*n).clone(), *s)).collect(),
        watcher: Some("w".into()),
        resume: Some(id.into()),
        total: Some(total),
        timeout_ms: Some(timeout_ms),
        ..WatchRequest::default()
    }
}

/// What a client knows of a record it was answered.
fn known(watched: &Watched) -> Since {
    match &watched.lease {
        Some(lease) => Since { version: watched.version, token: Some(lease.token) },
        None => Since::NOTHING,
    }
}

/// Waits until a plain read shows `name` free (a lease running out writes
/// nothing to wait on).
async fn until_free(client: &Client, name: &str) {
    let mut every = tokio::time::interval(Duration::from_millis(20));
    tokio::time::timeout(PATIENCE, async {
        while !matches!(client.read(Kind::Election, name, None).await.unwrap(), mpsync_client::Read::Free { .. }) {
            every.tick().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{name} never ran out"));
}

/// A watcher's kept set, resumed: each watch sends only what changed, and
/// is answered with what happened between two watches (a write, through
/// another elector on a shared store, and a lease running out), with what
/// the last answer brought unless the watch says it learnt it (that
/// answer may have been lost), and with names it adds.
async fn a_kept_set_is_resumed_with_only_what_changed(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("e1", &[]).await;
    // Writes come through a second elector where the store is shared.
    let (_other, writing) = match store {
        "memory" => (None, client.clone()),
        _ => {
            let (elector, writing) = backend.elector("e2", &[]).await;
            (Some(elector), writing)
        }
    };
    let names: Vec<String> = (0..100).map(|i| unique(&format!("kept{i}"))).collect();
    for name in names.iter().step_by(10) {
        lead(&writing, name, "1", TTL_MS).await;
    }
    // One short lease the client knows of from the start: the elector
    // looks again when it runs out.
    let short = lead(&writing, &names[55], "5", 1500).await;
    let mut whole =
        WatchRequest { watcher: Some("w".into()), keep: Some("k1".into()), ..elections(&names, &[0; 100], 0) };
    let version = versions_now(&client, &names[55..56]).await[0];
    whole.elections.insert(names[55].clone(), Since { version, token: Some(short) });
    // The whole set, kept: answered at once with the other 10 leaders.
    let first = watch(&client, &whole).await.unwrap();
    let id = first.resume.clone().expect("kept");
    assert!(id.starts_with("k1.") && first.changed.len() == 10, "{first:?}");
    let told: Vec<(&String, Since)> =
        first.changed.iter().map(|w| (names.iter().find(|n| **n == w.name).unwrap(), known(w))).collect();
    // Between two watches: a write, and a lease running out.
    let token = lead(&writing, &names[3], "2", TTL_MS).await;
    until_free(&client, &names[55]).await;
    // Resumed with only what the client learnt: answered at once with both.
    let second = watch(&client, &resume(&told, &id, 100, PATIENCE.as_millis() as u64)).await.unwrap();
    let mut changed: Vec<(&str, Option<u64>)> =
        second.changed.iter().map(|w| (w.name.as_str(), w.lease.as_ref().map(|l| l.token))).collect();
    changed.sort();
    assert_eq!(changed, vec![(names[3].as_str(), Some(token)), (names[55].as_str(), None)], "{second:?}");
    assert_eq!(second.resume.as_ref(), Some(&id));
    // Not saying it learnt them (as if that answer were lost): answered again.
    let again = watch(&client, &resume(&[], &id, 100, PATIENCE.as_millis() as u64)).await.unwrap();
    assert_eq!(again.changed.len(), 2, "{again:?}");
    // Saying so: parked. A newer watch adding a name answers it (empty)
    // and takes the set over, parked until a change: the new name's.
    let learnt: Vec<(&String, Since)> =
        again.changed.iter().map(|w| (names.iter().find(|n| **n == w.name).unwrap(), known(w))).collect();
    let spawn = |request: WatchRequest| {
        let client = client.clone();
        tokio::spawn(async move { watch(&client, &request).await.unwrap() })
    };
    let older = spawn(resume(&learnt, &id, 100, PATIENCE.as_millis() as u64));
    until_watching(&client, 1).await;
    let extra = unique("kept-extra");
    let newer = spawn(resume(&[(&extra, Since::NOTHING)], &id, 101, PATIENCE.as_millis() as u64));
    let answered = tokio::time::timeout(PATIENCE, older).await.expect("the older watch was never answered").unwrap();
    assert!(answered.changed.is_empty(), "{answered:?}");
    until_watching(&client, 1).await;
    let token = lead(&writing, &extra, "3", TTL_MS).await;
    let news = only(tokio::time::timeout(PATIENCE, newer).await.expect("the resumed watch never answered").unwrap());
    assert_eq!((news.name.as_str(), news.lease.map(|l| l.token)), (extra.as_str(), Some(token)));
}

/// A resumed set this elector does not keep is answered 410 (`gone`): an
/// id it never kept, one a newer `keep` replaced (under the same name too:
/// the elector's part of the id differs), one whose watch said a different
/// total (a request's names lost on the way, which also drops the set);
/// and past `--max-kept-watch-names` a set is served but not kept (no
/// `resume` in its answer), and counted.
async fn a_set_the_elector_does_not_keep_is_gone(store: &str) {
    let backend = Backend::start(store).await;
    let (_elector, client) = backend.elector("e1", &["--max-kept-watch-names", "5"]).await;
    let names: Vec<String> = (0..6).map(|i| unique(&format!("gone{i}"))).collect();
    let gone = |request: WatchRequest| {
        let client = client.clone();
        async move {
            let (status, body) = watch(&client, &request).await.unwrap_err();
            assert_eq!((status, body.error), (410, mpsync_core::wire::ErrorCode::Gone), "{body:?}");
        }
    };
    let keep = |id: &str, n: usize| WatchRequest {
        watcher: Some("w".into()),
        keep: Some(id.into()),
        ..elections(&names[..n], &vec![0; n], 0)
    };
    gone(resume(&[], "never", 3, 0)).await;
    let k1 = watch(&client, &keep("k1", 3)).await.unwrap().resume.expect("kept");
    assert!(k1.starts_with("k1."), "{k1}");
    assert_eq!(metric(&client, "mpsync_kept_watch_names").await, Some(3));
    assert!(watch(&client, &resume(&[], &k1, 3, 0)).await.unwrap().changed.is_empty());
    // A newer set of the same watcher replaces it, even under the same
    // name (another client sharing the watcher id): the elector's part
    // of the id differs.
    let again = watch(&client, &keep("k1", 3)).await.unwrap().resume.expect("kept");
    assert_ne!(again, k1);
    gone(resume(&[], &k1, 3, 0)).await;
    // Another total: names were lost on the way; the set is dropped.
    gone(resume(&[], &again, 4, 0)).await;
    gone(resume(&[], &again, 3, 0)).await;
    // Past the bound: served, not kept, and counted.
    let big = watch(&client, &keep("k3", 6)).await.unwrap();
    assert_eq!(big.resume, None, "six names past a bound of five are not kept");
    assert_eq!(metric(&client, "mpsync_kept_watch_names").await, Some(0));
    let reply = client.request(Method::GET, "/metrics", None::<&()>).await.unwrap();
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    assert!(text.contains("mpsync_refusals_total{limit=\"kept_watch_names\"} 1\n"), "{text}");
}

/// The value of an unlabelled metric.
async fn metric(client: &Client, name: &str) -> Option<u64> {
    let reply = client.request(Method::GET, "/metrics", None::<&()>).await.unwrap();
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))?.parse::<u64>().ok())
}

/// Waits (polling /metrics: parking writes nothing to wait on) until
/// `n` long-polls are parked.
async fn until_watching(client: &Client, n: u64) {
    let mut every = tokio::time::interval(Duration::from_millis(10));
    tokio::time::timeout(PATIENCE, async {
        loop {
            every.tick().await;
            if metric(client, "mpsync_watchers").await == Some(n) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} long-polls never parked"));
}

suite!(memory: a_watch_answers_with_the_one_record_that_changed, a_lease_running_out_answers_a_watch,
    a_renewal_is_no_news_to_a_watch_that_knows_the_token,
    a_newer_watch_of_the_same_watcher_answers_the_older, watch_requests_are_checked,
    a_kept_set_is_resumed_with_only_what_changed, a_set_the_elector_does_not_keep_is_gone);
suite!(etcd: a_watch_answers_with_the_one_record_that_changed, a_lease_running_out_answers_a_watch,
    a_renewal_is_no_news_to_a_watch_that_knows_the_token,
    a_watch_sees_writes_through_another_elector, a_newer_watch_of_the_same_watcher_answers_the_older,
    a_kept_set_is_resumed_with_only_what_changed, a_set_the_elector_does_not_keep_is_gone);
suite!(kubernetes: a_watch_answers_with_the_one_record_that_changed, a_lease_running_out_answers_a_watch,
    a_renewal_is_no_news_to_a_watch_that_knows_the_token, a_name_the_store_cannot_keep_is_never_news,
    a_watch_sees_writes_through_another_elector, watch_requests_are_checked,
    a_kept_set_is_resumed_with_only_what_changed, a_set_the_elector_does_not_keep_is_gone);
suite!(real_cluster #[ignore = "needs MPSYNC_TEST_KUBECONFIG (a real cluster)"]:
    a_watch_answers_with_the_one_record_that_changed, a_lease_running_out_answers_a_watch,
    a_watch_sees_writes_through_another_elector, a_kept_set_is_resumed_with_only_what_changed);
