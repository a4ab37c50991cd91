//! Store benchmark: prints numbers, asserts nothing.
//!
//! For each store (memory; a real etcd; the Kubernetes Lease API emulator
//! over HTTP), through a real elector process:
//! 1. acquire latency (`PUT` without a token, a fresh name each time) and
//!    renew latency (`PUT` with the token), p50/p99;
//! 2. store writes per held lease per TTL: `BENCH_LEASES` (default 20)
//!    leases held by the real lease client (`mpsync_client::Lease`, which
//!    renews on its own schedule) for `BENCH_TTLS` (default 5) TTLs of 1 s,
//!    counted from the elector's `mpsync_store_calls_total`. client-go's
//!    leader election, with its defaults (15 s lease, renew every 2 s),
//!    spends 7.5; the ratio is printed against that.
//!
//! `make bench` (or `cargo bench -p mpsync-e2e --bench stores`). Set
//! `BENCH_OPS` (default 300) for the number of acquires and renewals.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use hyper::Method;
use mpsync_client::{Claimed, Client};
use mpsync_client::{Lease, Options};
use mpsync_core::wire::{AcquireRequest, Kind};
use testkit::bench::{env_or, metric, ms, percentile};
use testkit::elector::ElectorProcess;
use testkit::{Etcd, LeaseApi};

/// client-go: LeaseDuration 15 s / RetryPeriod 2 s.
const CLIENT_GO_WRITES_PER_TTL: f64 = 15.0 / 2.0;

async fn calls(client: &Client, store: &str, call: &str) -> u64 {
    let reply = client.request(Method::GET, "/metrics", None::<&()>).await.unwrap();
    let series = format!("mpsync_store_calls_total{{store=\"{store}\",call=\"{call}\"}}");
    metric(&String::from_utf8_lossy(&reply.body), &series).unwrap_or(0.0) as u64
}

async fn measure(store: &str, args: &[String]) {
    let bin = testkit::bin("elector");
    let mut all: Vec<&str> = vec!["--log", "warn"];
    all.extend(args.iter().map(String::as_str));
    let elector = ElectorProcess::spawn(&bin, &all).await.unwrap();
    let client = Client::new(&elector.url());
    let ops = env_or("BENCH_OPS", 300) as usize;

    let mut acquire = Vec::with_capacity(ops);
    let mut renew = Vec::with_capacity(ops);
    let mut token = None;
    for i in 0..ops {
        let request = AcquireRequest::new("bench", Duration::from_secs(30), None, None);
        let start = Instant::now();
        let Claimed::Granted(lease) = client.claim(Kind::Lock, &format!("acq-{i}"), &request).await.unwrap() else {
            panic!("refused")
        };
        acquire.push(start.elapsed());
        token.get_or_insert(lease.token);
    }
    let token = token.unwrap();
    for _ in 0..ops {
        let request = AcquireRequest::new("bench", Duration::from_secs(30), Some(token), None);
        let start = Instant::now();
        let Claimed::Granted(_) = client.claim(Kind::Lock, "acq-0", &request).await.unwrap() else { panic!("refused") };
        renew.push(start.elapsed());
    }
    acquire.sort();
    renew.sort();

    let leases_n = env_or("BENCH_LEASES", 20);
    let ttls = env_or("BENCH_TTLS", 5);
    let ttl = Duration::from_secs(1);
    let mut leases = Vec::new();
    for i in 0..leases_n {
        let options = Options { ttl, holder: format!("holder-{i}"), address: None };
        let lease = Lease::new(client.clone(), Kind::Lock, &format!("held-{i}"), options).unwrap();
        lease.try_acquire().await.unwrap();
        leases.push(lease);
    }
    let (writes_before, keepalives_before) =
        (calls(&client, store, "write").await, calls(&client, store, "keepalive").await);
    let held_for = ttl * u32::try_from(ttls).unwrap();
    tokio::time::sleep(held_for).await;
    let writes = calls(&client, store, "write").await - writes_before;
    let keepalives = calls(&client, store, "keepalive").await - keepalives_before;
    let still_held = leases.iter().filter(|l| l.held().is_some()).count();
    for lease in &leases {
        lease.release().await.unwrap();
    }
    let per_lease_per_ttl = writes as f64 / (leases_n as f64 * held_for.as_secs_f64() / ttl.as_secs_f64());

    println!(
        "{store:<11} acquire p50 {} p99 {} | renew p50 {} p99 {} | writes per held lease per TTL {:.2} \
         ({:.2}x client-go's {CLIENT_GO_WRITES_PER_TTL}; {leases_n} leases for {ttls} TTLs, {still_held} held \
         throughout{})",
        ms(percentile(&acquire, 0.5)),
        ms(percentile(&acquire, 0.99)),
        ms(percentile(&renew, 0.5)),
        ms(percentile(&renew, 0.99)),
        per_lease_per_ttl,
        per_lease_per_ttl / CLIENT_GO_WRITES_PER_TTL,
        if store == "etcd" {
            format!("; plus {keepalives} keep-alives of the elector's one etcd lease")
        } else {
            String::new()
        },
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("# stores: {} acquires and renewals each; then leases held by the real client", env_or("BENCH_OPS", 300));
    measure("memory", &[]).await;
    let etcd = Etcd::start().await.unwrap();
    measure("etcd", &["--store".into(), "etcd".into(), "--etcd-endpoints".into(), etcd.endpoint()]).await;
    let api = LeaseApi::start().await.unwrap();
    let dir = testkit::temp_dir("bench-kubeconfig").unwrap();
    let kubeconfig = api.write_kubeconfig(&dir, "bench").unwrap();
    measure(
        "kubernetes",
        &["--store".into(), "kubernetes".into(), "--kubeconfig".into(), kubeconfig.display().to_string()],
    )
    .await;
    println!("# kubernetes is the Lease API emulator on loopback: a real API server adds its own etcd write per call");
}
