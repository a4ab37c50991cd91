//! An elector at its `--max-long-polls` answers a long-poll, or a claim
//! that would park in a lock's line, with 429 at once. A waiting client
//! must then back off before it claims again, not claim in a tight loop
//! that makes the overload worse (one waiting `mpsync lock` used to send
//! about 3,000 claims a second).

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use mpsync_client::{Client, Kind, Lease, Options};
use testkit::elector::ElectorProcess;
use testkit::proc::{Proc, metric, park_the_only_long_poll};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_long_polls_are_refused_backs_off() {
    let elector =
        ElectorProcess::spawn(testkit::bin("elector"), &["--log", "error", "--max-long-polls", "1"]).await.unwrap();
    let client = Client::new(&elector.url());
    let parked = park_the_only_long_poll(&elector).await;

    let ttl = Duration::from_secs(10);
    let holder =
        Lease::new(client.clone(), Kind::Lock, "contended", Options { ttl, holder: "holder".into(), address: None })
            .unwrap();
    holder.try_acquire().await.unwrap();

    let args = ["lock", "--elector", &elector.url(), "--ttl", "10s", "contended", "--", "true"].map(String::from);
    let mut waiter = Proc::mpsync("waiter", &args);
    // The window the rates are counted over: a measurement, not a wait
    // for an event.
    let window = Duration::from_secs(3);
    tokio::time::sleep(window).await;
    let refused = metric(&elector, "mpsync_refusals_total{limit=\"long_polls\"}").await;
    let conflicts = metric(&elector, "mpsync_conflicts_total{kind=\"lock\"}").await;
    println!("in {window:?}: {refused} long-polls refused, {conflicts} claims refused");
    waiter.signal("KILL");
    let _ = waiter.wait().await;
    parked.abort();
    // With the backoff (a twentieth of the TTL, doubling, at least the
    // elector's `retry-after: 1`), a few in 3 s; without it, thousands.
    assert!(refused >= 1, "the waiter never asked to be parked: {}", waiter.output());
    assert!(
        refused <= 6 && conflicts <= 7,
        "{refused} parked requests refused and {conflicts} claims refused in {window:?}"
    );
}
