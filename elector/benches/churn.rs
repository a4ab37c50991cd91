//! Churn benchmark: prints numbers, asserts nothing.
//!
//! What is left in a real elector after names come and go, round after
//! round, on each store (memory; a real etcd; the Kubernetes Lease API
//! emulator): each round acquires `BENCH_NAMES` (default 20,000) locks on
//! names never used before, with a 100 ms TTL, and leaves them to run out
//! (nobody releases them); and long-polls `BENCH_POLLS` (default 4,000)
//! names that never change, 200 ms each. Then it waits until every lease
//! ran out and was cleared (`mpsync_expiries_total`) and the elector's maps
//! (`mpsync_state_entries`) are back at rest, at most `BENCH_SETTLE_S`
//! (default 60) seconds, and prints the elector's resident memory right
//! after the round and once settled, and the size of each map.
//!
//! `make bench` (or `cargo bench -p elector --bench churn`). `BENCH_ROUNDS`
//! (default 3), `BENCH_STORES` (default `memory etcd kubernetes`).

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use hyper::Method;
use mpsync_client::{Claimed, Client};
use mpsync_core::wire::{AcquireRequest, Kind};
use testkit::bench::{env_or, metric, mib, rss_kib};
use testkit::elector::ElectorProcess;
use testkit::{Etcd, LeaseApi};

const TTL: Duration = Duration::from_millis(100);
const POLL: Duration = Duration::from_millis(200);
/// Requests in flight at once from this benchmark.
const AT_ONCE: usize = 64;

async fn metrics(client: &Client) -> String {
    let reply = client.request(Method::GET, "/metrics", None::<&()>).await.unwrap();
    String::from_utf8(reply.body.to_vec()).unwrap()
}

/// The elector's map sizes, by map, and the leases it counted as expired.
async fn sizes(client: &Client) -> (Vec<(String, u64)>, u64) {
    let text = metrics(client).await;
    let maps = text
        .lines()
        .filter_map(|l| l.strip_prefix("mpsync_state_entries{map=\""))
        .map(|l| {
            let map = l.split('"').next().unwrap();
            (map.to_owned(), metric(&text, &format!("mpsync_state_entries{{map=\"{map}\"}}")).unwrap() as u64)
        })
        .collect();
    (maps, metric(&text, "mpsync_expiries_total{kind=\"lock\"}").unwrap_or(0.0) as u64)
}

fn shown(maps: &[(String, u64)]) -> String {
    maps.iter().map(|(map, n)| format!("{map} {n}")).collect::<Vec<_>>().join(", ")
}

async fn round(client: &Client, r: usize, names: usize, polls: usize) {
    futures::stream::iter(0..names)
        .map(|i| async move {
            let request = AcquireRequest::new("churner", TTL, None, None);
            let claimed = client.claim(Kind::Lock, &format!("r{r}-lease-{i}"), &request).await.unwrap();
            assert!(matches!(claimed, Claimed::Granted(_)), "{claimed:?}");
        })
        .buffer_unordered(AT_ONCE)
        .collect::<()>()
        .await;
    futures::stream::iter(0..polls)
        .map(|i| async move {
            let name = format!("r{r}-quiet-{i}");
            let version = client.read(Kind::Lock, &name, None).await.unwrap().version();
            client.read(Kind::Lock, &name, Some((version, POLL))).await.unwrap();
        })
        .buffer_unordered(AT_ONCE * 8)
        .collect::<()>()
        .await;
}

async fn measure(store: &str, args: &[String]) {
    let (names, polls) = (env_or("BENCH_NAMES", 20_000) as usize, env_or("BENCH_POLLS", 4_000) as usize);
    let rounds = env_or("BENCH_ROUNDS", 3) as usize;
    let settle = Duration::from_secs(env_or("BENCH_SETTLE_S", 60));
    let mut all: Vec<&str> = vec!["--log", "warn", "--store-timeout", "5s"];
    all.extend(args.iter().map(String::as_str));
    let elector = ElectorProcess::spawn(env!("CARGO_BIN_EXE_elector"), &all).await.unwrap();
    let pid = elector.pid().unwrap();
    let client = Client::new(&elector.url());
    let (at_rest, _) = sizes(&client).await;
    println!("\n{store}: {rounds} rounds of {names} leases left to run out and {polls} long-polls on quiet names");
    println!("{:>7} | {:>13} | {:>13} | {:>9} | maps", "round", "RSS after MiB", "settled MiB", "settled");
    println!("{:>7} | {:>13} | {:>13.1} | {:>9} | {}", "empty", "", mib(rss_kib(pid)), "", shown(&at_rest));
    for r in 0..rounds {
        round(&client, r, names, polls).await;
        let after = rss_kib(pid);
        let ended = Instant::now();
        let cleared = ((r + 1) * names) as u64;
        let mut every = tokio::time::interval(Duration::from_millis(100));
        let (maps, settled) = loop {
            every.tick().await;
            let (maps, expired) = sizes(&client).await;
            let settled = expired >= cleared && maps == at_rest;
            if settled || ended.elapsed() > settle {
                break (maps, settled);
            }
        };
        let took = if settled { format!("{:.1} s", ended.elapsed().as_secs_f64()) } else { "no".to_owned() };
        println!("{:>7} | {:>13.1} | {:>13.1} | {took:>9} | {}", r + 1, mib(after), mib(rss_kib(pid)), shown(&maps));
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let stores = std::env::var("BENCH_STORES").unwrap_or_else(|_| "memory etcd kubernetes".into());
    println!("# churn: RSS of the elector (this build) and the sizes of its maps, round after round");
    for store in stores.split_whitespace() {
        let mut args = vec!["--store".to_owned(), store.to_owned()];
        match store {
            "memory" => measure(store, &args).await,
            "etcd" => {
                let etcd = Etcd::start().await.unwrap();
                args.extend(["--etcd-endpoints".into(), etcd.endpoint()]);
                measure(store, &args).await;
            }
            "kubernetes" => {
                let api = LeaseApi::start().await.unwrap();
                let dir = testkit::temp_dir("bench-churn-kubeconfig").unwrap();
                args.extend([
                    "--kubeconfig".into(),
                    api.write_kubeconfig(&dir, "bench").unwrap().display().to_string(),
                ]);
                measure(store, &args).await;
            }
            other => panic!("no store {other}"),
        }
    }
    println!(
        "# kubernetes is the Lease API emulator on loopback; its own memory holds every Lease, as an API server would"
    );
}
