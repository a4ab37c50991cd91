//! One watch over many names against one long-poll per name (issue 21,
//! item 5): prints numbers, asserts nothing.
//!
//! Through a real elector process on the memory store (not etcd yet: its
//! store guards leases of at most 45 s, so the bench would have to keep
//! 10,000 leaders renewed meanwhile), each mode in an elector of its own started the same way (so neither inherits the
//! other's heap), in the same run: `WATCH_NAMES` (10,000) elections
//! `shard-0` … each with a leader, followed
//! 1. **watch, resumed**: by one client holding one `POST /v1/watch` over
//!    all of them (`mpsync_core::client::watch::Tracked`, as the Envoy
//!    filter's worker and `mpsync leader` follow many elections), on one
//!    keep-alive connection, its set kept by the elector between watches:
//!    each watch after the first sends only what changed;
//! 2. **watch, whole set**: the same, sending every name every time
//!    (`Tracked::without_kept_set`, as before kept sets);
//! 3. **long-polls**: by one `GET /v1/elections/NAME?wait=VERSION` per
//!    name, each on its own connection, as every per-election watcher did
//!    before the watch (`--max-long-polls` and `--max-connections` raised
//!    for it).
//!
//! Measured for each: the elector's resident memory (VmRSS) with the
//! leaders only and with the watchers parked; what following starts with
//! (the first request and answer); the cost of asking again (the same
//! request with `timeout_ms=0`, answered at once: for the watch, the
//! elector parsing 10,000 names, reading and judging every record); and
//! `WATCH_CHANGES` (200) changes of leadership, spread over the names,
//! each one write: the leader resigns (`DELETE`), then, next change, a new
//! leader is elected on the same name (`PUT`). Per change: the time from
//! the write's answer to the watcher's answer (0 when the watcher's answer
//! came first) and from the write sent, the bytes of the watcher's answer
//! and of its next request (a whole-set watch sends every name again), all on the
//! wire (headers included). Requests are written by hand on raw
//! connections so that every byte is counted.
//!
//! Before each write the watcher must be parked again: the
//! `mpsync_watchers` gauge is back up, and then, for a watch (which counts
//! itself before reading its records), twice the p99 of asking again has
//! passed.
//!
//! The bench process needs a file per connection: `ulimit -n` above
//! `WATCH_NAMES` + 100 (it says so and stops if not).
//!
//! `cargo bench -p elector --bench watch` (`make bench` runs it). Knobs:
//! `WATCH_NAMES` (10000), `WATCH_CHANGES` (200), `WATCH_PROBES` (20: asks
//! again with `timeout_ms=0`).

#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hyper::Method;
use mpsync_client::{Claimed, Client, Tracked};
use mpsync_core::client::watch::decode_watch;
use mpsync_core::wire::{AcquireRequest, Kind, MAX_WAIT_MS};
use testkit::bench::{env_or, metric, mib, ms, percentile, rss_kib};
use testkit::elector::ElectorProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The leaders' lease: none runs out during the run.
const TTL: Duration = Duration::from_secs(3600);
/// How long a watcher parks: the longest the elector allows.
const SLICE: Duration = Duration::from_millis(MAX_WAIT_MS);
/// Claims in flight while electing the first leaders.
const SETUP_IN_FLIGHT: usize = 32;
/// The watch's id: each watch supersedes the one before it.
const WATCHER: &str = "bench-watch";

/// One HTTP/1.1 keep-alive connection written and read by hand, so that
/// the bytes each way are known exactly.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// An answer read off a [`Conn`].
struct Answer {
    status: u16,
    /// Bytes on the wire, headers included.
    wire: usize,
    body: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Conn { stream, buf: Vec::new() }
    }

    /// Sends `request`; returns its size.
    async fn send(&mut self, request: &[u8]) -> usize {
        self.stream.write_all(request).await.unwrap();
        request.len()
    }

    /// Reads one answer (the elector's answers carry content-length).
    async fn answer(&mut self) -> Answer {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or_else(|| panic!("an answer without content-length: {head}"));
                let wire = end + 4 + length;
                while self.buf.len() < wire {
                    self.fill().await;
                }
                let body = self.buf[end + 4..wire].to_vec();
                self.buf.drain(..wire);
                return Answer { status, wire, body };
            }
            self.fill().await;
        }
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the elector closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

fn post_watch(body: &[u8]) -> Vec<u8> {
    let head = format!(
        "POST /v1/watch HTTP/1.1\r\nhost: elector\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    [head.as_bytes(), body].concat()
}

/// `GET` of one election, a long-poll on `version` (or a plain read when
/// `None`).
fn get_election(name: &str, version: Option<u64>) -> Vec<u8> {
    let query = match version {
        Some(v) => format!("wait={v}&timeout_ms={}", SLICE.as_millis()),
        None => "timeout_ms=0".to_owned(),
    };
    format!("GET /v1/elections/{name}?{query} HTTP/1.1\r\nhost: elector\r\n\r\n").into_bytes()
}

/// The view version an answer to a `GET` shows (a lease's, or a free
/// record's in its 404).
fn version_of(answer: &Answer) -> u64 {
    let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    json["version"].as_u64().unwrap_or(0)
}

fn name(i: usize) -> String {
    format!("shard-{i}")
}

/// The leader of one election, as the bench last made it.
#[derive(Clone)]
struct Leader {
    holder: String,
    token: u64,
    version: u64,
}

async fn claim(client: &Client, name: &str, holder: &str) -> Leader {
    let request = AcquireRequest::new(holder, TTL, None, Some("127.0.0.1:8080"));
    let Claimed::Granted(lease) = client.claim(Kind::Election, name, &request).await.unwrap() else {
        panic!("{holder} was refused {name}")
    };
    Leader { holder: holder.to_owned(), token: lease.token, version: lease.version }
}

/// A running elector (memory store) with a leader in each of `names` elections.
async fn elector_with_leaders(names: usize) -> (ElectorProcess, Client, Vec<Leader>) {
    let limit = (names + 1000).to_string();
    let elector = ElectorProcess::spawn(
        env!("CARGO_BIN_EXE_elector"),
        &["--log", "error", "--max-connections", &limit, "--max-long-polls", &limit, "--header-read-timeout", "10m"],
    )
    .await
    .unwrap();
    let client = Client::new(&elector.url()).with_sessions(false);
    let claims = (0..names).map(|i| {
        let client = client.clone();
        async move { claim(&client, &name(i), "leader-0").await }
    });
    let leaders = futures::stream::iter(claims).buffered(SETUP_IN_FLIGHT).collect().await;
    (elector, client, leaders)
}

async fn watchers(client: &Client) -> u64 {
    let reply = client.request(Method::GET, "/metrics", None::<&()>).await.unwrap();
    metric(&String::from_utf8_lossy(&reply.body), "mpsync_watchers").unwrap_or(0.0) as u64
}

/// Waits until `want` long-polls are parked (by the gauge).
async fn parked(client: &Client, want: u64) {
    let start = Instant::now();
    while watchers(client).await < want {
        assert!(start.elapsed() < Duration::from_secs(120), "fewer than {want} long-polls parked after 2 minutes");
        tokio::task::yield_now().await;
    }
}

/// Change `k` of the run: on which name, and the write. Even changes
/// release the leader, odd ones elect the next on the same name.
async fn change(client: &Client, leaders: &mut [Leader], names: usize, k: usize) -> (usize, Instant, Instant) {
    // Spread over the names; a prime step visits them all before coming back.
    let i = (k / 2 * 7919) % names;
    let sent = Instant::now();
    if k.is_multiple_of(2) {
        let leader = &leaders[i];
        assert!(client.release(Kind::Election, &name(i), &leader.holder, leader.token).await.unwrap());
    } else {
        leaders[i] = claim(client, &name(i), &format!("leader-{}", k / 2 + 1)).await;
    }
    (i, sent, Instant::now())
}

/// What one mode measured.
#[derive(Default)]
struct Run {
    label: &'static str,
    connections: usize,
    idle_kib: u64,
    parked_kib: u64,
    /// Bytes of the first requests and answers, and how long they took.
    first_sent: usize,
    first_answered: usize,
    first_took: Duration,
    /// Asking again, answered at once.
    again: Vec<Duration>,
    /// From the write's answer, and from the write sent, to the watcher's answer.
    after_answer: Vec<Duration>,
    after_sent: Vec<Duration>,
    answer_bytes: Vec<usize>,
    request_bytes: Vec<usize>,
}

async fn run_watch(names: usize, changes: usize, probes: usize, whole: bool) -> Run {
    let (elector, client, mut leaders) = elector_with_leaders(names).await;
    let pid = elector.pid().unwrap();
    let label = if whole { "one watch, whole set" } else { "one watch, resumed" };
    let mut run = Run { label, connections: 1, idle_kib: rss_kib(pid), ..Run::default() };
    let mut tracked = Tracked::as_watcher(WATCHER);
    if whole {
        tracked = tracked.without_kept_set();
    }
    for i in 0..names {
        tracked.follow(Kind::Election, &name(i), 0);
    }
    let mut conn = Conn::open(elector.addr()).await;
    // Nothing known: every leader is news, answered at once.
    let start = Instant::now();
    run.first_sent = conn.send(&post_watch(&tracked.request(SLICE).body.unwrap())).await;
    let first = conn.answer().await;
    run.first_took = start.elapsed();
    run.first_answered = first.wire;
    let learned = tracked.merge(decode_watch(first.status, &first.body).unwrap()).len();
    assert_eq!(learned, names, "the first answer shows every leader");

    // Asking again with everything known, answered at once: what the
    // elector does to take in a watch of every name.
    let mut again = tracked.watch();
    again.timeout_ms = Some(0);
    again.watcher = None;
    let again = post_watch(&serde_json::to_vec(&again).unwrap());
    for _ in 0..probes {
        let start = Instant::now();
        conn.send(&again).await;
        let answer = conn.answer().await;
        run.again.push(start.elapsed());
        assert!(decode_watch(answer.status, &answer.body).unwrap().changed.is_empty());
    }
    run.again.sort();
    let settle = 2 * percentile(&run.again, 0.99);

    let mut next = tracked.request(SLICE).body.unwrap();
    conn.send(&post_watch(&next)).await;
    parked(&client, 1).await;
    tokio::time::sleep(settle).await;
    run.parked_kib = rss_kib(pid);
    for k in 0..changes {
        let reader = tokio::spawn(async move {
            let answer = conn.answer().await;
            (Instant::now(), answer, conn)
        });
        let (i, sent, written) = change(&client, &mut leaders, names, k).await;
        let (at, answer, back) = reader.await.unwrap();
        conn = back;
        run.after_answer.push(at.saturating_duration_since(written));
        run.after_sent.push(at - sent);
        run.answer_bytes.push(answer.wire);
        let news = tracked.merge(decode_watch(answer.status, &answer.body).unwrap());
        assert!(news.iter().any(|(_, n, _)| *n == name(i)), "change {k}: the watch answered without {}", name(i));
        next = tracked.request(SLICE).body.unwrap();
        run.request_bytes.push(conn.send(&post_watch(&next)).await);
        parked(&client, 1).await;
        tokio::time::sleep(settle).await;
    }
    run
}

async fn run_long_polls(names: usize, changes: usize, probes: usize) -> Run {
    let (elector, client, mut leaders) = elector_with_leaders(names).await;
    let pid = elector.pid().unwrap();
    let mut run = Run { label: "a long-poll per name", connections: names, idle_kib: rss_kib(pid), ..Run::default() };
    // What following starts with: a read of every name, on its own connection.
    let start = Instant::now();
    let mut conns = Vec::with_capacity(names);
    for (i, leader) in leaders.iter().enumerate() {
        let mut conn = Conn::open(elector.addr()).await;
        run.first_sent += conn.send(&get_election(&name(i), None)).await;
        let answer = conn.answer().await;
        run.first_answered += answer.wire;
        assert_eq!(version_of(&answer), leader.version);
        conns.push(Some(conn));
    }
    run.first_took = start.elapsed();
    for _ in 0..probes {
        let conn = conns[0].as_mut().unwrap();
        let start = Instant::now();
        conn.send(&get_election(&name(0), None)).await;
        conn.answer().await;
        run.again.push(start.elapsed());
    }
    run.again.sort();
    let settle = 2 * percentile(&run.again, 0.99);
    for (i, conn) in conns.iter_mut().enumerate() {
        conn.as_mut().unwrap().send(&get_election(&name(i), Some(leaders[i].version))).await;
    }
    parked(&client, names as u64).await;
    tokio::time::sleep(settle).await;
    run.parked_kib = rss_kib(pid);
    for k in 0..changes {
        let i = (k / 2 * 7919) % names;
        let mut conn = conns[i].take().unwrap();
        let reader = tokio::spawn(async move {
            let answer = conn.answer().await;
            (Instant::now(), answer, conn)
        });
        let (changed, sent, written) = change(&client, &mut leaders, names, k).await;
        assert_eq!(changed, i);
        let (at, answer, mut conn) = reader.await.unwrap();
        run.after_answer.push(at.saturating_duration_since(written));
        run.after_sent.push(at - sent);
        run.answer_bytes.push(answer.wire);
        let version = version_of(&answer);
        run.request_bytes.push(conn.send(&get_election(&name(i), Some(version))).await);
        conns[i] = Some(conn);
        parked(&client, names as u64).await;
        tokio::time::sleep(settle).await;
    }
    run
}

fn print(runs: &[Run], names: usize, changes: usize) {
    println!(
        "\nElector (memory store), {names} elections each with a leader, followed by one client; \
         {changes} changes of leadership (one write each: resign, then a new leader), same run:\n"
    );
    println!(
        "{:>20} | {:>5} | {:>9} | {:>9} | {:>12} | {:>23} | {:>21} | {:>21} | {:>21} | {:>11} | {:>11}",
        "watcher",
        "conns",
        "RSS idle",
        "parked",
        "per name",
        "first: sent / answered",
        "ask again p50 / p99",
        "write answered → news",
        "write sent → news",
        "answer",
        "next req."
    );
    for r in runs {
        let (idle, parked) = (r.idle_kib, r.parked_kib);
        let mean = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len().max(1) as f64;
        let (mut after_answer, mut after_sent) = (r.after_answer.clone(), r.after_sent.clone());
        after_answer.sort();
        after_sent.sort();
        let pair = |v: &[Duration]| format!("{} / {}", ms(percentile(v, 0.5)), ms(percentile(v, 0.99)));
        println!(
            "{:>20} | {:>5} | {:>5.1} MiB | {:>5.1} MiB | {:>8.0} B | {:>9} B / {:>9} B | {:>21} | {:>21} | {:>21} | {:>9.0} B | {:>9.0} B",
            r.label,
            r.connections,
            mib(idle),
            mib(parked),
            parked.saturating_sub(idle) as f64 * 1024.0 / names as f64,
            r.first_sent,
            r.first_answered,
            pair(&r.again),
            pair(&after_answer),
            pair(&after_sent),
            mean(&r.answer_bytes),
            mean(&r.request_bytes),
        );
    }
    for r in runs {
        println!("  {}: first answer(s) in {}", r.label, ms(r.first_took));
    }
    if let [resumed, whole, polls] = runs {
        let p99 = |r: &Run| {
            let mut v = r.after_answer.clone();
            v.sort();
            percentile(&v, 0.99).as_secs_f64()
        };
        let grown = |r: &Run| r.parked_kib.saturating_sub(r.idle_kib).max(1) as f64;
        let total = |r: &Run| r.answer_bytes.iter().chain(&r.request_bytes).sum::<usize>() as f64;
        for (a, b) in [(resumed, polls), (whole, polls), (resumed, whole)] {
            println!(
                "  {} / {}: memory parked {:.4}, news p99 {:.2}, bytes per change (answer + next request) {:.3}",
                a.label,
                b.label,
                grown(a) / grown(b),
                p99(a) / p99(b).max(1e-9),
                total(a) / total(b).max(1.0)
            );
        }
    }
    println!(
        "  ask again: the same request with timeout_ms=0, answered at once (for the watch: every name parsed, read and judged)"
    );
}

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() {
    let names = env_or("WATCH_NAMES", 10_000).max(1) as usize;
    let changes = env_or("WATCH_CHANGES", 200) as usize;
    let probes = env_or("WATCH_PROBES", 20).max(1) as usize;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(limit) = open_files
        && limit < names + 100
    {
        eprintln!("watch: {names} long-polls need `ulimit -n` above {} (it is {limit})", names + 100);
        std::process::exit(2);
    }
    let resumed = run_watch(names, changes, probes, false).await;
    let whole = run_watch(names, changes, probes, true).await;
    let polls = run_long_polls(names, changes, probes).await;
    print(&[resumed, whole, polls], names, changes);
}
