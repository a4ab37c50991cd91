//! Envoy leader-filter benchmark: prints numbers, asserts nothing.
//!
//! 1. Throughput and latency through Envoy with the filter (gateway mode,
//!    leader known) vs. Envoy with a plain static route to the same
//!    upstream, same run, same load; the ratio filter/plain.
//! 2. Graceful hand-over: time from the leader's resignation (DELETE) to the
//!    first request served by the new leader, over many hand-overs; the new
//!    leader is a candidate long-polling the elector, as `campaign` does.
//! 3. Crash failover: time from SIGKILL of the leader (an `mpsync run
//!    election.wasm` process) to the first request served by the new one,
//!    next to the TTL.
//!
//! `make bench`. `BENCH_SECONDS` (default 3), `BENCH_HANDOVERS` (default
//! 100), `BENCH_FAILOVERS` (default 5), `BENCH_CLIENTS` (default 16).

#![allow(clippy::unwrap_used, missing_docs, dead_code)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::envoy::{Envoy, HttpClient, Upstream, config, plain_config};
use common::{Proc, elector};
use elector::client::{Claimed, Client, Read};
use mpsync_core::Kind;
use mpsync_core::wire::AcquireRequest;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

async fn load(
    http: &HttpClient,
    target: std::net::SocketAddr,
    clients: usize,
    length: Duration,
) -> (f64, Duration, Duration) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let http = http.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let end = Instant::now() + length;
                while Instant::now() < end {
                    let t = Instant::now();
                    let a = http.get(target, "/", &[]).await;
                    assert_eq!(a.status, 200, "{a:?}");
                    samples.push(t.elapsed());
                }
                samples
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    all.sort();
    (rate, pct(&all, 0.5), pct(&all, 0.99))
}

fn claim(address: std::net::SocketAddr, holder: &str) -> AcquireRequest {
    AcquireRequest { holder: holder.into(), ttl_ms: 60_000, token: None, address: Some(address.to_string()) }
}

/// A candidate that takes the election the moment it is free.
async fn standby(client: Client, address: std::net::SocketAddr, holder: String) -> u64 {
    let mut version = 0;
    loop {
        if let Claimed::Granted(l) = client.claim(Kind::Election, "bench", &claim(address, &holder)).await.unwrap() {
            return l.token;
        }
        loop {
            match client.read(Kind::Election, "bench", Some((version, Duration::from_secs(60)))).await.unwrap() {
                Read::Held(l) => version = l.version,
                Read::Free { version: v } => {
                    version = v;
                    break;
                }
            }
        }
    }
}

/// Long-polls waiting at the elector right now.
async fn watchers(client: &Client) -> u64 {
    let body = client.request(hyper::Method::GET, "/metrics", None::<&()>).await.unwrap().body;
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines().find_map(|l| l.strip_prefix("mpsync_watchers ")).unwrap().trim().parse().unwrap()
}

/// Sends requests until one is answered by `id`; returns when it was.
async fn first_served_by(http: &HttpClient, envoy: std::net::SocketAddr, id: &str) -> Instant {
    loop {
        let a = http.get(envoy, "/", &[]).await;
        if a.status == 200 && a.body.starts_with(&format!("{id} ")) {
            return Instant::now();
        }
    }
}

#[tokio::main]
async fn main() {
    let length = Duration::from_secs(env_or("BENCH_SECONDS", 3));
    let clients = env_or("BENCH_CLIENTS", 16) as usize;
    let elector = elector().await;
    let url = elector.url();
    let client = Client::new(&url);
    let http = HttpClient::new();
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;

    // 1. Throughput: the filter (leader known) vs a plain route.
    let filter = r#"{"elector_cluster":"elector","election":"bench","allow":["127.0.0.0/8"],"hold_ms":5000}"#;
    let gateway = Envoy::start(&config(filter, elector.addr(), None)).await;
    let plain = Envoy::start(&plain_config(a.addr)).await;
    let Claimed::Granted(lease) = client.claim(Kind::Election, "bench", &claim(a.addr, "a")).await.unwrap() else {
        panic!()
    };
    first_served_by(&http, gateway.listener, "a").await;
    let _ = load(&http, gateway.listener, clients, Duration::from_millis(500)).await;
    let _ = load(&http, plain.listener, clients, Duration::from_millis(500)).await;
    let (f_rate, f50, f99) = load(&http, gateway.listener, clients, length).await;
    let (p_rate, p50, p99) = load(&http, plain.listener, clients, length).await;
    println!("Envoy 1.40, 2 workers, {clients} keep-alive clients, {length:?} each, same upstream, same run:");
    println!("{:>22} | {:>10} {:>10} {:>10}", "", "req/s", "p50", "p99");
    println!("{:>22} | {f_rate:>10.0} {:>10} {:>10}", "leader filter", ms(f50), ms(f99));
    println!("{:>22} | {p_rate:>10.0} {:>10} {:>10}", "plain static route", ms(p50), ms(p99));
    println!("{:>22} | {:>10.2}", "ratio filter/plain", f_rate / p_rate);
    drop(plain);

    // 2. Graceful hand-overs between a and b.
    let n = env_or("BENCH_HANDOVERS", 100) as usize;
    let (mut leader, mut token) = (("a", a.addr), lease.token);
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let next = if leader.0 == "a" { ("b", b.addr) } else { ("a", a.addr) };
        let parked = watchers(&client).await;
        let waiting = tokio::spawn(standby(client.clone(), next.1, next.0.to_owned()));
        // The standby is parked on its long-poll before the resignation
        // (Envoy's workers hold long-polls of their own).
        while watchers(&client).await <= parked {
            tokio::task::yield_now().await;
        }
        let resigned = Instant::now();
        assert!(client.release(Kind::Election, "bench", leader.0, token).await.unwrap());
        let served = first_served_by(&http, gateway.listener, next.0).await;
        samples.push(served - resigned);
        token = waiting.await.unwrap();
        leader = next;
    }
    samples.sort();
    println!("\nGraceful hand-over, resignation -> first request served by the new leader ({n} hand-overs):");
    println!("  p50 {}   p99 {}   max {}", ms(pct(&samples, 0.5)), ms(pct(&samples, 0.99)), ms(samples[n - 1]));
    assert!(client.release(Kind::Election, "bench", leader.0, token).await.unwrap());

    // 3. Crash failover: kill the leader's host process.
    let failovers = env_or("BENCH_FAILOVERS", 5) as usize;
    let ttl_ms = 1000;
    let mut kills = Vec::new();
    for i in 0..failovers {
        let name = format!("crash-{i}");
        let filter =
            format!(r#"{{"elector_cluster":"elector","election":"{name}","allow":["127.0.0.0/8"],"hold_ms":5000}}"#);
        let envoy = Envoy::start(&config(&filter, elector.addr(), None)).await;
        let ttl = ttl_ms.to_string();
        let (aa, ba) = (a.addr.to_string(), b.addr.to_string());
        let mut first = Proc::run(
            "a",
            &url,
            &[],
            "election.wasm",
            &["--name", &name, "--id", "a", "--address", &aa, "--ttl-ms", &ttl],
        );
        first.expect_line("I am the leader").await;
        first_served_by(&http, envoy.listener, "a").await;
        let mut second = Proc::run(
            "b",
            &url,
            &[],
            "election.wasm",
            &["--name", &name, "--id", "b", "--address", &ba, "--ttl-ms", &ttl],
        );
        // b is campaigning (its campaign is a long-poll on the election).
        let killed = Instant::now();
        first.signal("KILL");
        let served = first_served_by(&http, envoy.listener, "b").await;
        kills.push(served - killed);
        second.expect_line("I am the leader").await;
    }
    kills.sort();
    println!(
        "\nCrash failover, SIGKILL of the leader -> first request served by the new one (TTL {ttl_ms} ms, {failovers} runs):"
    );
    println!("  min {}   median {}   max {}", ms(kills[0]), ms(pct(&kills, 0.5)), ms(kills[failovers - 1]));
}
