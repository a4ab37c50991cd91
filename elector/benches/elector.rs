//! Elector benchmark: prints numbers, asserts nothing.
//!
//! 1. Acquire+release cycles (`PUT /v1/locks/{name}` then `DELETE`) per
//!    second and cycle latency p50/p99 for 1, 8 and 64 concurrent clients,
//!    against a real elector process on the memory store, next to the same
//!    client load against a bare hyper server that answers 200 to
//!    everything (the floor: what HTTP on loopback costs here), in the same
//!    run, with the ratio elector/floor.
//! 2. Hand-over latency: time from sending a `DELETE` to a waiting
//!    long-poll's answer, p50/p99.
//!
//! `make bench` (or `cargo bench -p elector --bench elector`). Set
//! `BENCH_SECONDS` (default 3) for the length of each load row and
//! `BENCH_HANDOVERS` (default 300) for the number of hand-overs.

#![allow(clippy::unwrap_used, missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Response};
use hyper_util::rt::TokioIo;
use mpsync_client::{Claimed, Client, Read};
use mpsync_core::wire::{AcquireRequest, Kind, ReleaseRequest};
use testkit::bench::{env_or, ms, percentile};
use testkit::elector::ElectorProcess;

/// The floor: a bare hyper HTTP/1.1 server that answers 200 with an empty
/// body, on its own two-thread runtime (the elector gets the same).
fn start_floor() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                stream.set_nodelay(true).unwrap();
                tokio::spawn(async move {
                    let service =
                        service_fn(|_req| async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::new()))) });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
    });
    rx.recv().unwrap()
}

struct Row {
    cycles_per_sec: f64,
    p50: Duration,
    p99: Duration,
}

/// `clients` tasks, each acquiring and releasing its own lock in a loop for
/// `length`. Every cycle must succeed (the floor answers 200 to both).
async fn load(client: &Client, clients: usize, length: Duration, strict: bool) -> Row {
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let name = format!("bench-{i}");
                let holder = format!("client-{i}");
                let path = format!("/v1/locks/{name}");
                let mut samples = Vec::new();
                let end = Instant::now() + length;
                while Instant::now() < end {
                    let t = Instant::now();
                    let acquire = AcquireRequest::new(&holder, Duration::from_secs(10), None, None);
                    let put = client.request(Method::PUT, &path, Some(&acquire)).await.unwrap();
                    let token = if strict {
                        assert_eq!(put.status, 200, "{:?}", put.body);
                        put.json::<mpsync_core::wire::LeaseView>().unwrap().token
                    } else {
                        1
                    };
                    let release = ReleaseRequest { holder: holder.clone(), token, ticket: None, key: None };
                    let delete = client.request(Method::DELETE, &path, Some(&release)).await.unwrap();
                    assert!(delete.status.is_success(), "{:?}", delete.status);
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
    let elapsed = start.elapsed();
    all.sort();
    Row {
        cycles_per_sec: all.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
    }
}

async fn wait_for_watcher(client: &Client) {
    loop {
        let reply = client.request(Method::GET, "/metrics", None::<&()>).await.unwrap();
        if String::from_utf8_lossy(&reply.body).contains("mpsync_watchers 1") {
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// DELETE → answer of a long-poll parked on the lock.
async fn handovers(client: &Client, count: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let acquire = AcquireRequest::new("holder", Duration::from_secs(60), None, None);
        let Claimed::Granted(lease) = client.claim(Kind::Lock, "handover", &acquire).await.unwrap() else {
            panic!("handover lock is held");
        };
        let waiter = tokio::spawn({
            let client = client.clone();
            async move {
                let read = client.read(Kind::Lock, "handover", Some((lease.version, Duration::from_secs(60)))).await;
                (read.unwrap(), Instant::now())
            }
        });
        wait_for_watcher(client).await;
        let sent = Instant::now();
        assert!(client.release(Kind::Lock, "handover", "holder", lease.token).await.unwrap());
        let (read, answered) = waiter.await.unwrap();
        assert!(matches!(read, Read::Free { .. }));
        samples.push(answered - sent);
    }
    samples.sort();
    samples
}

#[tokio::main]
async fn main() {
    let length = Duration::from_secs(env_or("BENCH_SECONDS", 3));
    let count = env_or("BENCH_HANDOVERS", 300) as usize;
    let elector = ElectorProcess::spawn(env!("CARGO_BIN_EXE_elector"), &["--log", "warn"]).await.unwrap();
    let floor = start_floor();
    let elector_client = Client::new(&elector.url());
    let floor_client = Client::new(&format!("http://{floor}"));

    println!("Acquire+release cycles (PUT + DELETE on loopback, keep-alive), {length:?} per row, same run.");
    println!("Floor: a bare hyper server answering 200 to the same requests.\n");
    println!(
        "{:>7} | {:>14} {:>10} {:>10} | {:>14} {:>10} {:>10} | {:>10}",
        "clients", "elector cyc/s", "p50", "p99", "floor cyc/s", "p50", "p99", "ratio"
    );
    for clients in [1, 8, 64] {
        let ours = load(&elector_client, clients, length, true).await;
        let base = load(&floor_client, clients, length, false).await;
        println!(
            "{clients:>7} | {:>14.0} {:>10} {:>10} | {:>14.0} {:>10} {:>10} | {:>10.2}",
            ours.cycles_per_sec,
            ms(ours.p50),
            ms(ours.p99),
            base.cycles_per_sec,
            ms(base.p50),
            ms(base.p99),
            ours.cycles_per_sec / base.cycles_per_sec
        );
    }

    let samples = handovers(&elector_client, count).await;
    println!("\nDELETE -> waiting long-poll answered ({count} hand-overs):");
    println!(
        "  p50 {}   p99 {}   max {}",
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(samples[samples.len() - 1])
    );
    drop(elector);
}
