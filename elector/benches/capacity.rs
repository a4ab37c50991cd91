//! Capacity benchmark: prints numbers, asserts nothing.
//!
//! What the elector (memory store) costs as it fills up, against the same
//! elector empty, in the same run:
//! 1. resident memory (VmRSS) and acquire latency p50/p99 with 0 and with
//!    `BENCH_HELD` (default 10,000) locks held;
//! 2. resident memory with 0 and with `BENCH_PARKED` (default 5,000)
//!    long-polls parked, each on its own keep-alive connection and its own
//!    lock name, and the memory per parked long-poll.
//!
//! The floor, a bare hyper server in a process of its own, runs on the
//! elector's allocator (jemalloc), so the two compare like for like.
//!
//! `make bench` (or `cargo bench -p elector --bench capacity`).

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use hyper::Method;
use mpsync_client::{Claimed, Client};
use mpsync_core::wire::{AcquireRequest, Kind};
use testkit::bench::{env_or, metric, ms, percentile, rss_kib};
use testkit::elector::ElectorProcess;
use tokio::io::AsyncWriteExt;

fn acquire(holder: &str) -> AcquireRequest {
    AcquireRequest::new(holder, Duration::from_secs(3600), None, None)
}

/// Latencies of `n` acquisitions of fresh names, one after another (each
/// released right after, so the count held stays as it was).
async fn acquire_latency(client: &Client, tag: &str, n: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("probe-{tag}-{i}");
        let start = Instant::now();
        let Claimed::Granted(lease) = client.claim(Kind::Lock, &name, &acquire("probe")).await.unwrap() else {
            panic!("refused")
        };
        samples.push(start.elapsed());
        client.release(Kind::Lock, &name, "probe", lease.token).await.unwrap();
    }
    samples.sort();
    samples
}

async fn watchers(client: &Client) -> u64 {
    let reply = client.request(Method::GET, "/metrics", None::<&()>).await.unwrap();
    metric(&String::from_utf8_lossy(&reply.body), "mpsync_watchers").unwrap() as u64
}

/// The floor for parked requests: a bare hyper HTTP/1.1 server (in a
/// process of its own, this benchmark run with `--floor N`) whose every
/// request waits for ever. It prints its address, then `parked` once N
/// requests are waiting.
async fn floor_server(expect: usize) {
    use hyper::server::conn::http1;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static PARKED: AtomicUsize = AtomicUsize::new(0);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("floor listening on {}", listener.local_addr().unwrap());
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_req| async move {
                if PARKED.fetch_add(1, Ordering::Relaxed) + 1 == expect {
                    println!("parked");
                }
                std::future::pending::<()>().await;
                Ok::<_, std::convert::Infallible>(hyper::Response::new(
                    http_body_util::Empty::<hyper::body::Bytes>::new(),
                ))
            });
            let _ = http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
        });
    }
}

/// Parks `n` requests on `addr`, one per connection, and returns the
/// connections (closing them ends the requests).
async fn park(addr: std::net::SocketAddr, n: usize, path: impl Fn(usize) -> String) -> Vec<tokio::net::TcpStream> {
    let mut connections = Vec::with_capacity(n);
    for i in 0..n {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {} HTTP/1.1\r\nHost: elector\r\n\r\n", path(i));
        stream.write_all(request.as_bytes()).await.unwrap();
        connections.push(stream);
    }
    connections
}

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--floor") {
        return floor_server(args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(1)).await;
    }
    let held = env_or("BENCH_HELD", 10_000) as usize;
    let parked = env_or("BENCH_PARKED", 5_000) as usize;
    let probes = 1_000;
    let elector = ElectorProcess::spawn(
        env!("CARGO_BIN_EXE_elector"),
        &["--log", "error", "--max-connections", "20000", "--max-long-polls", "20000", "--header-read-timeout", "120s"],
    )
    .await
    .unwrap();
    let pid = elector.pid().unwrap();
    let client = Client::new(&elector.url());
    // Warm up the code paths and the allocator.
    acquire_latency(&client, "warm", probes).await;

    let empty_rss = rss_kib(pid);
    let empty = acquire_latency(&client, "empty", probes).await;
    for i in 0..held {
        let Claimed::Granted(_) = client.claim(Kind::Lock, &format!("held-{i}"), &acquire("holder")).await.unwrap()
        else {
            panic!("refused")
        };
    }
    let full_rss = rss_kib(pid);
    let full = acquire_latency(&client, "full", probes).await;
    println!("Elector (memory store), {probes} acquisitions one after another, same run:\n");
    println!("{:>12} | {:>10} | {:>10} {:>10}", "locks held", "RSS", "p50", "p99");
    for (count, rss, samples) in [(0, empty_rss, &empty), (held, full_rss, &full)] {
        println!(
            "{count:>12} | {:>7} MiB | {:>10} {:>10}",
            format!("{:.1}", rss as f64 / 1024.0),
            ms(percentile(samples, 0.5)),
            ms(percentile(samples, 0.99))
        );
    }
    println!(
        "  {:.0} bytes per held lock; p99 with {held} held / empty = {:.2}\n",
        (full_rss.saturating_sub(empty_rss) * 1024) as f64 / held as f64,
        percentile(&full, 0.99).as_secs_f64() / percentile(&empty, 0.99).as_secs_f64()
    );

    // A name nobody holds reads at one version (404 with it): wait on that.
    let absent = client.request(Method::GET, "/v1/locks/parked-x", None::<&()>).await.unwrap();
    let version = absent.json::<mpsync_core::wire::ErrorBody>().unwrap().version.unwrap_or(0);
    let before = rss_kib(pid);
    let connections =
        park(elector.addr(), parked, |i| format!("/v1/locks/parked-{i}?wait={version}&timeout_ms=300000")).await;
    let waiting = Instant::now();
    loop {
        let now = watchers(&client).await;
        if now >= parked as u64 {
            break;
        }
        assert!(waiting.elapsed() < Duration::from_secs(60), "only {now} of {parked} long-polls parked after a minute");
        tokio::task::yield_now().await;
    }
    let after = rss_kib(pid);
    println!("Long-polls parked, each on its own connection and lock name:\n");
    println!("{:>12} | {:>10}", "parked", "RSS");
    println!("{:>12} | {:>6.1} MiB", 0, before as f64 / 1024.0);
    println!("{parked:>12} | {:>6.1} MiB", after as f64 / 1024.0);
    let per = after.saturating_sub(before) as f64 / parked as f64;
    println!("  {per:.2} KiB ({:.0} bytes) per parked long-poll (goal: at most 8 KB)", per * 1024.0);
    drop(connections);
    drop(elector);

    // The same against a bare hyper server, in a process of its own.
    let mut floor = tokio::process::Command::new(std::env::current_exe().unwrap())
        .arg("--floor")
        .arg(parked.to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(floor.stdout.take().unwrap()));
    let line = lines.next_line().await.unwrap().unwrap();
    let addr: std::net::SocketAddr = line.trim_start_matches("floor listening on ").parse().unwrap();
    let floor_pid = floor.id().unwrap();
    let floor_before = rss_kib(floor_pid);
    let connections = park(addr, parked, |i| format!("/parked-{i}")).await;
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("parked"));
    let floor_after = rss_kib(floor_pid);
    let floor_per = floor_after.saturating_sub(floor_before) as f64 / parked as f64;
    println!(
        "  floor (bare hyper on the same allocator, every request pending for ever): {floor_per:.2} KiB ({:.0} bytes) per parked request",
        floor_per * 1024.0
    );
    drop(connections);
}
