//! The lease client against an elector over a real etcd that dies under a
//! held lock: the client must learn it lost the lease by its own deadline,
//! the elector must turn not ready, and once etcd is back, locking works
//! again with larger tokens.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use hyper::{Method, StatusCode};
use mpsync_client::Client;
use mpsync_client::{Error as SyncError, Lease, Options};
use mpsync_core::wire::Kind;
use testkit::Etcd;
use testkit::elector::ElectorProcess;

/// The elector binary, built beside `mpsync` in the same target dir.
fn elector_bin() -> std::path::PathBuf {
    testkit::bin("elector")
}
const PATIENCE: Duration = Duration::from_secs(20);

fn options(holder: &str, ttl: Duration) -> Options {
    Options { ttl, holder: holder.into(), address: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_etcd_under_a_held_lock() {
    let mut etcd = Etcd::start().await.unwrap();
    let args = ["--store", "etcd", "--etcd-endpoints", &etcd.endpoint(), "--store-timeout", "1s", "--log", "warn"];
    let elector = ElectorProcess::spawn(elector_bin(), &args).await.unwrap();
    let client = Client::new(&elector.url());
    let ready = || async { client.request(Method::GET, "/readyz", None::<&()>).await.unwrap().status };
    // Asked every 20 ms: there is no event to wait on.
    let until_ready = || async {
        let mut every = tokio::time::interval(Duration::from_millis(20));
        tokio::time::timeout(PATIENCE, async {
            loop {
                every.tick().await;
                if ready().await == StatusCode::OK {
                    return;
                }
            }
        })
        .await
        .expect("the elector never became ready");
    };
    until_ready().await;

    let ttl = Duration::from_secs(2);
    let lease = Lease::new(client.clone(), Kind::Lock, "under-etcd", options("worker-1", ttl)).unwrap();
    let first = lease.try_acquire().await.unwrap();
    let mut changes = lease.changes();
    changes.borrow_and_update();

    etcd.kill().await.unwrap();
    assert_eq!(ready().await, StatusCode::SERVICE_UNAVAILABLE, "no etcd: not ready");

    // Renewals now fail. The client gives the lease up when its own
    // deadline passes, whatever the renewal task is doing.
    let last = lease.held().expect("still within its deadline right after the kill");
    assert!(last.valid_until <= tokio::time::Instant::now().into_std() + ttl, "never beyond one TTL from now");
    tokio::time::sleep_until(last.valid_until.into()).await;
    assert_eq!(lease.held(), None, "past its deadline the client does not hold the lease");
    // Announced too: the first change since the acquisition (renewals
    // change nothing) is the loss. (`held()` is already `None` here, so
    // waiting for that would prove nothing.)
    tokio::time::timeout(PATIENCE, changes.changed()).await.expect("the loss was never announced").unwrap();
    assert_eq!(lease.held(), None);
    // A second client cannot take it while etcd is away: unavailable, not granted.
    let other = Lease::new(client.clone(), Kind::Lock, "under-etcd", options("worker-2", ttl)).unwrap();
    match other.try_acquire().await {
        Err(SyncError::Unavailable(_)) => {}
        other => panic!("expected unavailable without etcd, got {other:?}"),
    }

    etcd.restart().await.unwrap();
    until_ready().await;
    let next = tokio::time::timeout(PATIENCE, other.acquire(PATIENCE)).await.unwrap().unwrap();
    assert!(next.token > first.token, "tokens keep growing: {} then {}", first.token, next.token);
    other.release().await.unwrap();
    let again = lease.try_acquire().await.unwrap();
    assert!(again.token > next.token);
}
