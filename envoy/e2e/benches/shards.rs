//! 10,000 shards through one Envoy (issue 21, item 5): prints numbers,
//! asserts nothing.
//!
//! For each worker count in `WORKERS` ("2 4"), in an elector and an Envoy
//! of their own: a real elector (memory store) with `SHARDS` (10,000)
//! elections `s-0` … each with a leader (all at upstream `a`, a real
//! `envoy_e2e::Upstream`; a new leader moves to `b` and back), and a real
//! Envoy with the leader filter sharded by the `x-shard` header (the
//! gateway's ORIGINAL_DST cluster, `hold_ms` 10 s).
//!
//! 1. **Warm**: one keep-alive connection per worker, each found by opening
//!    connections until Envoy's per-worker listener counter
//!    (`listener.…worker_N.downstream_cx_total`) shows one on every worker;
//!    each sends one request per shard, so every worker meets every shard.
//!    Then the bench waits until the elector follows workers × shards names
//!    (`mpsync_watched_names`, or `mpsync_watchers` where the filter parks a
//!    long-poll per election).
//! 2. **Connections**: TCP connections Envoy holds established to the
//!    elector's port (its own sockets, matched by inode in /proc/net/tcp),
//!    and the elector's `mpsync_watchers` and `mpsync_watched_names` gauges.
//!    Goal: at most one per worker plus a constant.
//! 3. **Memory**: elector and Envoy VmRSS, before and after the warm-up.
//! 4. **Leader changes**: `CHANGES` (200), each on another shard: every
//!    worker's connection sends requests for that shard in a tight loop
//!    while the leader resigns (`DELETE`) and a new one is elected (`PUT`,
//!    another holder at the other upstream). Per worker, the time from the
//!    new leader's `PUT` answered to the first answer that reached it (the
//!    upstream's echo of `x-leader-id`); a request sent in between is held
//!    by the filter until the new leader is known. p50/p99 over every
//!    worker's sample, and of the slowest worker per change. Goal: p99 at
//!    most 5 ms.
//!
//! Each worker count runs first with one shard (the comparison), then with
//! `SHARDS`; the ratios are printed. The elector keeps each worker's watch
//! set, so a watch after a change sends only what changed; with `WHOLE=1`
//! (the default) each worker count also runs `SHARDS` with an elector that
//! keeps none (`--max-kept-watch-names 0`: every watch sends every name),
//! the comparison for the leader change, and the ratios are printed.
//! Envoy's elector cluster speaks HTTP/2 (as in the examples); with
//! `HTTP1=1` each worker count also runs `SHARDS` with the cluster on
//! HTTP/1.1, the comparison for the connections.
//!
//! Instructions per request at 10,000 shards against 1 are counted by the
//! `instructions` bench: `BENCH_SHARDS=10000 BENCH_ONLY=8,9 make
//! bench-instructions`.
//!
//! Needs the release builds (`make bench-shards` does them) and file
//! limits above the connections: where the filter parks a long-poll per
//! election, workers × shards of them on each side.
//!
//! `make bench-shards`. Knobs: `SHARDS` (10000), `WORKERS` ("2 4"),
//! `CHANGES` (200), `WHOLE` (1: also with whole sets; 0: not), `HTTP1` (0;
//! 1: also with the cluster on HTTP/1.1), `SETTLE_MS` (0: a pause between
//! the resignation and the new leader, so that what the resignation set
//! off is over first).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use envoy_e2e::{Envoy, Upstream, config};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{SendRequest, handshake};
use hyper_util::rt::TokioIo;
use mpsync_client::{Claimed, Client};
use mpsync_core::Kind;
use mpsync_core::wire::AcquireRequest;
use testkit::bench::{env_or, metric, mib, ms, percentile, rss_kib};
use testkit::elector::ElectorProcess;
use testkit::proc::PATIENCE;

/// The leaders' lease: none runs out during the run.
const TTL: Duration = Duration::from_secs(3600);
/// Claims in flight while electing the first leaders.
const SETUP_IN_FLIGHT: usize = 32;
/// Connections opened at most while looking for one on each worker.
const MAX_PROBES: usize = 200;

fn shard_name(shard: usize) -> String {
    format!("s-{shard}")
}

/// One keep-alive connection to Envoy: every request on it goes to the
/// worker that accepted it.
struct Conn(SendRequest<Full<Bytes>>);

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (send, connection) = handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        Conn(send)
    }

    /// A request for `shard`: the status and the leader the upstream was
    /// told of (`-` when none).
    async fn get(&mut self, shard: usize) -> (u16, String) {
        let request = hyper::Request::get("/")
            .header("host", "bench")
            .header("x-shard", shard.to_string())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = tokio::time::timeout(PATIENCE, self.0.send_request(request)).await.expect("no answer").unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        let leader = body.split_whitespace().find_map(|w| w.strip_prefix("leader-id=")).unwrap_or("-").to_owned();
        (status, leader)
    }
}

/// Envoy's count of connections each worker accepted so far.
async fn per_worker(envoy: &Envoy, workers: usize) -> Vec<u64> {
    let mut counts = Vec::with_capacity(workers);
    for w in 0..workers {
        // Named after the configured address (port 0), not the bound one.
        counts.push(envoy.envoy_stat(&format!("^listener.127.0.0.1_.*worker_{w}.downstream_cx_total$")).await);
    }
    counts
}

/// One connection accepted by each worker (as close as `MAX_PROBES`
/// connections get), each having sent one request.
async fn one_per_worker(envoy: &Envoy, workers: usize) -> Vec<Conn> {
    let mut found: Vec<Option<Conn>> = (0..workers).map(|_| None).collect();
    let mut before = per_worker(envoy, workers).await;
    for _ in 0..MAX_PROBES {
        if found.iter().all(Option::is_some) {
            break;
        }
        let mut conn = Conn::open(envoy.listener).await;
        conn.get(0).await;
        let after = per_worker(envoy, workers).await;
        let worker = (0..workers).find(|&w| after[w] > before[w]);
        before = after;
        if let Some(w) = worker
            && found[w].is_none()
        {
            found[w] = Some(conn);
        }
    }
    let missing = found.iter().filter(|c| c.is_none()).count();
    if missing > 0 {
        println!("  ({missing} of {workers} workers accepted none of {MAX_PROBES} connections: they meet no shard)");
    }
    found.into_iter().flatten().collect()
}

/// The established TCP connections process `pid` holds to `port`.
fn connections_to(pid: u32, port: u16) -> usize {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut count = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port =
                fields.get(2).and_then(|r| r.rsplit_once(':')).and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            let established = fields.get(3) == Some(&"01");
            if established && remote_port == Some(port) && fields.get(9).is_some_and(|i| inodes.contains(*i)) {
                count += 1;
            }
        }
    }
    count
}

/// The elector's gauges: long-polls parked (`mpsync_watchers`, a watch
/// counting once) and names followed by watches (`mpsync_watched_names`).
async fn gauges(client: &Client) -> (u64, u64) {
    let reply = client.request(hyper::Method::GET, "/metrics", None::<&()>).await.unwrap();
    let text = String::from_utf8_lossy(&reply.body);
    let g = |series| metric(&text, series).unwrap_or(0.0) as u64;
    (g("mpsync_watchers"), g("mpsync_watched_names"))
}

/// Names the elector follows for Envoy: by watches, else by long-polls.
fn followed((watchers, names): (u64, u64)) -> u64 {
    if names > 0 { names } else { watchers }
}

#[derive(Clone)]
struct Leader {
    holder: String,
    token: u64,
    /// Which upstream it is at (0: a, 1: b).
    at: usize,
}

async fn elect(client: &Client, shard: usize, holder: &str, at: usize, upstreams: &[SocketAddr]) -> Leader {
    let address = upstreams[at].to_string();
    let request = AcquireRequest::new(holder, TTL, None, Some(&address));
    let Claimed::Granted(lease) = client.claim(Kind::Election, &shard_name(shard), &request).await.unwrap() else {
        panic!("{holder} was refused {}", shard_name(shard))
    };
    Leader { holder: holder.to_owned(), token: lease.token, at }
}

/// What one worker count and shard count measured.
struct Run {
    /// The elector cluster's protocol.
    http: &'static str,
    /// The elector keeps the workers' watch sets.
    kept: bool,
    workers: usize,
    shards: usize,
    reached: usize,
    followed: u64,
    want: u64,
    warm: Duration,
    /// Envoy's connections to the elector after the warm-up, and after the changes.
    connections: (usize, usize),
    watchers: u64,
    watched_names: u64,
    elector_kib: (u64, u64),
    envoy_kib: (u64, u64),
    /// Per worker and per change, and the slowest worker per change.
    routed: Vec<Duration>,
    slowest: Vec<Duration>,
    /// From the resignation sent (the whole change) to the slowest worker.
    whole: Vec<Duration>,
}

#[allow(clippy::too_many_lines)]
async fn run(
    http: &'static str,
    kept: bool,
    workers: usize,
    shards: usize,
    changes: usize,
    settle: Duration,
    upstreams: &[SocketAddr],
) -> Run {
    let limit = (workers * shards + 1000).to_string();
    let max_names = shards.max(mpsync_core::watch::DEFAULT_MAX_WATCH_NAMES).to_string();
    let max_kept = if kept { workers * shards + 1000 } else { 0 }.to_string();
    let elector = ElectorProcess::spawn(
        testkit::bin("elector"),
        &[
            "--log",
            "error",
            "--max-long-polls",
            &limit,
            "--max-connections",
            &limit,
            "--max-watch-names",
            &max_names,
            "--max-kept-watch-names",
            &max_kept,
        ],
    )
    .await
    .unwrap();
    let client = Client::new(&elector.url()).with_sessions(false);
    // SETUP_IN_FLIGHT claimers, each taking every SETUP_IN_FLIGHT-th shard.
    let claimers: Vec<_> = (0..SETUP_IN_FLIGHT)
        .map(|first| {
            let (client, upstreams) = (client.clone(), upstreams.to_vec());
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for shard in (first..shards).step_by(SETUP_IN_FLIGHT) {
                    mine.push((shard, elect(&client, shard, "leader-init", 0, &upstreams).await));
                }
                mine
            })
        })
        .collect();
    let mut leaders: Vec<Option<Leader>> = vec![None; shards];
    for claimer in claimers {
        for (shard, leader) in claimer.await.unwrap() {
            leaders[shard] = Some(leader);
        }
    }
    let mut leaders: Vec<Leader> = leaders.into_iter().map(Option::unwrap).collect();
    let filter = format!(
        r#"{{"elector_cluster":"elector","shard":{{"header":"x-shard","template":"s-{{shard}}"}},"allow":["127.0.0.0/8"],"hold_ms":10000,"max_elections":{}}}"#,
        shards.max(10_000)
    );
    let mut yaml = config(&filter, elector.addr(), None);
    if http == "1.1" {
        assert!(yaml.contains("http2_protocol_options"), "the elector cluster is not on HTTP/2:\n{yaml}");
        yaml = yaml.replace("http2_protocol_options", "http_protocol_options");
    }
    let envoy = Envoy::start_on(&yaml, workers, None).await;
    let (elector_pid, envoy_pid) = (elector.pid().unwrap(), envoy.pid());
    let before = (rss_kib(elector_pid), rss_kib(envoy_pid));

    let mut conns = one_per_worker(&envoy, workers).await;
    let reached = conns.len();
    let start = Instant::now();
    let warming: Vec<_> = conns
        .drain(..)
        .map(|mut conn| {
            tokio::spawn(async move {
                for shard in 0..shards {
                    conn.get(shard).await;
                }
                conn
            })
        })
        .collect();
    for task in warming {
        conns.push(task.await.unwrap());
    }
    let want = (reached * shards) as u64;
    // Settled: every worker follows every shard, with one watch each (a
    // watch superseded while it was still reading its names can linger a
    // moment); or with a long-poll per election and worker.
    let settled = |(watchers, names): (u64, u64)| match names {
        0 => watchers >= want,
        names => names == want && watchers == reached as u64,
    };
    let waiting = Instant::now();
    let mut now = gauges(&client).await;
    while !settled(now) && waiting.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        now = gauges(&client).await;
    }
    let warm = start.elapsed();
    let warm_connections = connections_to(envoy_pid, elector.addr().port());
    let after = (rss_kib(elector_pid), rss_kib(envoy_pid));
    eprintln!("shards: HTTP/{http}, {workers} workers, {shards} shards warm in {warm:?}; {changes} leader changes");

    let (mut routed, mut slowest, mut whole) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..changes {
        // Spread over the shards: a prime step visits them all first.
        let shard = (k * 7919 + 1) % shards;
        let old = leaders[shard].clone();
        let holder = format!("leader-{k}");
        let (ready_tx, mut ready) = tokio::sync::mpsc::unbounded_channel();
        let loops: Vec<_> = conns
            .drain(..)
            .map(|mut conn| {
                let (holder, ready_tx) = (holder.clone(), ready_tx.clone());
                tokio::spawn(async move {
                    let mut told = false;
                    let deadline = Instant::now() + PATIENCE;
                    loop {
                        let (status, leader) = conn.get(shard).await;
                        let at = Instant::now();
                        if !told {
                            ready_tx.send(()).unwrap();
                            told = true;
                        }
                        if status == 200 && leader == holder {
                            return (Some(at), conn);
                        }
                        if at > deadline {
                            return (None, conn);
                        }
                    }
                })
            })
            .collect();
        for _ in 0..loops.len() {
            ready.recv().await.unwrap();
        }
        let sent = Instant::now();
        assert!(client.release(Kind::Election, &shard_name(shard), &old.holder, old.token).await.unwrap());
        // What the resignation set off (every worker's watch sent again)
        // is over before the new leader, when asked to.
        tokio::time::sleep(settle).await;
        leaders[shard] = elect(&client, shard, &holder, 1 - old.at, upstreams).await;
        let elected = Instant::now();
        let mut last = Duration::ZERO;
        for task in loops {
            let (at, conn) = task.await.unwrap();
            conns.push(conn);
            let Some(at) = at else {
                println!("  change {k} ({}): a worker never routed to {holder} within {PATIENCE:?}", shard_name(shard));
                continue;
            };
            let took = at.saturating_duration_since(elected);
            routed.push(took);
            last = last.max(took);
            whole.push(at - sent);
        }
        slowest.push(last);
    }
    routed.sort();
    slowest.sort();
    whole.sort();
    let connections = (warm_connections, connections_to(envoy_pid, elector.addr().port()));
    Run {
        http,
        workers,
        shards,
        reached,
        followed: followed(now),
        want,
        warm,
        kept,
        connections,
        watchers: now.0,
        watched_names: now.1,
        elector_kib: (before.0, after.0),
        envoy_kib: (before.1, after.1),
        routed,
        slowest,
        whole,
    }
}

fn print(runs: &[Run], changes: usize) {
    println!(
        "\nShards (elections, each with a leader) through one Envoy, leader filter sharded by x-shard; \
         {changes} leader changes each (resign, then a new leader at the other upstream), same run:\n"
    );
    println!(
        "{:>4} | {:>5} | {:>7} | {:>6} | {:>9} | {:>15} | {:>9} | {:>8} | {:>8} | {:>16} | {:>18} | {:>23} | {:>23} | {:>23}",
        "HTTP",
        "sets",
        "workers",
        "shards",
        "warm",
        "names followed",
        "TCP conns",
        "watchers",
        "w. names",
        "elector RSS",
        "Envoy RSS",
        "routed p50 / p99",
        "slowest p50 / p99",
        "resign sent p50 / p99"
    );
    for r in runs {
        let pair = |v: &[Duration]| format!("{} / {}", ms(percentile(v, 0.5)), ms(percentile(v, 0.99)));
        println!(
            "{:>4} | {:>5} | {:>7} | {:>6} | {:>7.1} s | {:>7} / {:>5} | {:>4} / {:>2} | {:>8} | {:>8} | {:>5.1} → {:>5.1} MiB | {:>6.1} → {:>6.1} MiB | {:>23} | {:>23} | {:>23}",
            r.http,
            if r.kept { "kept" } else { "whole" },
            if r.reached == r.workers { r.workers.to_string() } else { format!("{} of {}", r.reached, r.workers) },
            r.shards,
            r.warm.as_secs_f64(),
            r.followed,
            r.want,
            r.connections.0,
            r.connections.1,
            r.watchers,
            r.watched_names,
            mib(r.elector_kib.0),
            mib(r.elector_kib.1),
            mib(r.envoy_kib.0),
            mib(r.envoy_kib.1),
            pair(&r.routed),
            pair(&r.slowest),
            pair(&r.whole),
        );
    }
    let p99 = |r: &Run| percentile(&r.routed, 0.99).as_secs_f64();
    let grown = |r: &Run| r.elector_kib.1.saturating_sub(r.elector_kib.0).max(1) as f64;
    let envoy_grown = |r: &Run| r.envoy_kib.1.saturating_sub(r.envoy_kib.0).max(1) as f64;
    for many in runs.iter().filter(|r| r.shards > 1 && r.http == "2" && r.kept) {
        let find = |shards: usize, http: &str, kept: bool| {
            runs.iter().find(|r| r.workers == many.workers && r.shards == shards && r.http == http && r.kept == kept)
        };
        if let Some(one) = find(1, "2", true) {
            println!(
                "  {} workers, {} shards / {}: routed p99 {:.2}, elector RSS grown {:.1}, Envoy RSS grown {:.1}; \
                 warm-up {} per shard and worker (a request for a shard its worker has not met waits for the watch)",
                many.workers,
                many.shards,
                one.shards,
                p99(many) / p99(one).max(1e-9),
                grown(many) / grown(one),
                envoy_grown(many) / envoy_grown(one),
                ms(many.warm / u32::try_from(many.shards).unwrap_or(u32::MAX)),
            );
        }
        if let Some(whole) = find(many.shards, "2", false) {
            println!(
                "  {} workers, {} shards, kept sets / whole sets: routed p99 {:.3} ({} / {}); slowest p99 {:.3}; \
                 resignation p50 {:.3}; elector RSS grown {:.2}; warm-up {:.2}",
                many.workers,
                many.shards,
                p99(many) / p99(whole).max(1e-9),
                ms(percentile(&many.routed, 0.99)),
                ms(percentile(&whole.routed, 0.99)),
                percentile(&many.slowest, 0.99).as_secs_f64()
                    / percentile(&whole.slowest, 0.99).as_secs_f64().max(1e-9),
                percentile(&many.whole, 0.5).as_secs_f64() / percentile(&whole.whole, 0.5).as_secs_f64().max(1e-9),
                grown(many) / grown(whole),
                many.warm.as_secs_f64() / whole.warm.as_secs_f64().max(1e-9),
            );
        }
        if let Some(http1) = find(many.shards, "1.1", true) {
            println!(
                "  {} workers, {} shards, HTTP/2 / HTTP/1.1: connections {} / {} after the warm-up, {} / {} after the \
                 changes; routed p99 {:.2}; elector RSS grown {:.2}; warm-up {:.2}",
                many.workers,
                many.shards,
                many.connections.0,
                http1.connections.0,
                many.connections.1,
                http1.connections.1,
                p99(many) / p99(http1).max(1e-9),
                grown(many) / grown(http1),
                many.warm.as_secs_f64() / http1.warm.as_secs_f64().max(1e-9),
            );
        }
    }
    println!(
        "  names followed: by the elector for Envoy (at the end of the warm-up), against workers × shards; TCP conns: \
         Envoy's, established to the elector, after the warm-up / after the changes (goal: at most one per worker plus \
         a constant); RSS: before → after the warm-up"
    );
    println!(
        "  routed: from the new leader's PUT answered to a worker's first answer from it (one sample per worker and \
         change; goal p99 ≤ 5 ms); slowest: the last worker per change; resign sent: the whole change, from its DELETE"
    );
}

#[tokio::main]
async fn main() {
    let shards = env_or("SHARDS", 10_000).max(1) as usize;
    let changes = env_or("CHANGES", 200) as usize;
    let settle = Duration::from_millis(env_or("SETTLE_MS", 0));
    let workers: Vec<usize> = std::env::var("WORKERS")
        .unwrap_or_else(|_| "2 4".to_owned())
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let wasm = envoy_e2e::filter_wasm();
    let watching = std::fs::read(&wasm).unwrap_or_default().windows(8).any(|w| w == b"v1/watch");
    let how = if watching {
        "one POST /v1/watch per worker"
    } else {
        "no POST /v1/watch in it: one long-poll per election and worker"
    };
    println!("filter: {} ({how})", wasm.display());
    let upstreams = [Upstream::start("a").await, Upstream::start("b").await];
    let addrs: Vec<SocketAddr> = upstreams.iter().map(|u| u.addr).collect();
    let mut runs = Vec::new();
    let (whole, http1) = (env_or("WHOLE", 1) != 0, env_or("HTTP1", 0) != 0);
    for &w in &workers {
        // The comparison first: the same Envoy and elector with one shard.
        runs.push(run("2", true, w, 1, changes, settle, &addrs).await);
        runs.push(run("2", true, w, shards, changes, settle, &addrs).await);
        if whole {
            runs.push(run("2", false, w, shards, changes, settle, &addrs).await);
        }
        if http1 {
            runs.push(run("1.1", true, w, shards, changes, settle, &addrs).await);
        }
    }
    print(&runs, changes);
}
