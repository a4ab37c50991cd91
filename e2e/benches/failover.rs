//! Crash failover and what sessions cost: prints numbers, asserts nothing.
//!
//! 1. Crash failover for locks, on every store (memory; etcd, 3 members;
//!    the Kubernetes Lease API emulator), at each TTL, with sessions and
//!    without (`mpsync lock --no-session`). A holder `mpsync lock NAME
//!    --ttl T -- sleep 100000` holds; a successor, the same command, waits
//!    with its long-poll parked (the elector's `mpsync_watchers` says so);
//!    then SIGKILL of the holder's `mpsync` process (its watchdog kills the
//!    command's group, and only then does the session close). Measured from
//!    just before the `kill` to the moment the successor's stderr line
//!    "holding lock" is read: when the successor knows it holds and starts
//!    its command, the failover a user sees; and it adds no long-poll of the
//!    bench's own to the count that tells the successor is parked. The
//!    successor then holds, a new one waits, and so on: `FAILOVER_LANES`
//!    (10) names at once, `FAILOVER_KILLS` (50) kills in all. With sessions
//!    the lanes are killed one after another (each failover has the machine
//!    to itself); without, each kill costs about a TTL, so a round kills
//!    every lane at once.
//! 2. What sessions cost: the elector's resident memory per open session
//!    (raw upgraded connections, from `BENCH_SESSIONS` (1,000) open to
//!    twice as many) against per parked long-poll, each on a fresh elector;
//!    and lock cycles per second (acquire + release with
//!    `mpsync_client::Lease`, one client, serial and `BENCH_TASKS` (8)
//!    concurrent) with a session and without, on every store:
//!    `BENCH_CYCLE_ROUNDS` (5) alternating runs of `BENCH_CYCLE_SECS` (1)
//!    each, the median of each.
//!
//! Knobs: `FAILOVER_STORES` (`memory etcd kubernetes`), `FAILOVER_TTLS`
//! (`10 30`, seconds), `FAILOVER_KILLS` (50; 0 skips part 1),
//! `FAILOVER_LANES` (10). `make bench-failover`, or `cargo bench -p
//! mpsync-e2e --bench failover`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use mpsync_client::{Client, Kind, Lease, Options};
use rustix::process::{Pid, Signal, kill_process};
use testkit::bench::{env_or, metric, mib, ms, percentile, rss_kib};
use testkit::elector::ElectorProcess;
use testkit::proc::PATIENCE;
use testkit::{Etcd, LeaseApi};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Whether a run's clients hold their leases under a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Session,
    NoSession,
}

impl Mode {
    /// Its name in the table, and in lock and holder names.
    fn label(self) -> (&'static str, &'static str) {
        match self {
            Mode::Session => ("session", "s"),
            Mode::NoSession => ("no session", "n"),
        }
    }
}

/// The goal for the p99 with sessions, per store.
fn goal(store: &str) -> Duration {
    Duration::from_millis(if store == "memory" { 50 } else { 100 })
}

/// An elector on one store, and what keeps the store running.
struct Backend {
    elector: ElectorProcess,
    _etcd: Option<Etcd>,
    _api: Option<LeaseApi>,
}

async fn backend(store: &str) -> Backend {
    let mut args: Vec<String> = vec!["--log".into(), "warn".into()];
    let (mut etcd, mut api) = (None, None);
    match store {
        "memory" => {}
        "etcd" => {
            let cluster = Etcd::cluster(3).await.unwrap();
            args.extend(["--store", "etcd", "--etcd-endpoints", &cluster.endpoints().join(",")].map(String::from));
            etcd = Some(cluster);
        }
        "kubernetes" => {
            let emulator = LeaseApi::start().await.unwrap();
            let dir = testkit::temp_dir("failover-kubeconfig").unwrap();
            let kubeconfig = emulator.write_kubeconfig(&dir, "bench").unwrap();
            let kubeconfig = kubeconfig.display().to_string();
            args.extend(["--store", "kubernetes", "--kubeconfig", &kubeconfig].map(String::from));
            api = Some(emulator);
        }
        other => panic!("unknown store {other:?} (FAILOVER_STORES takes memory, etcd, kubernetes)"),
    }
    let all: Vec<&str> = args.iter().map(String::as_str).collect();
    let elector = ElectorProcess::spawn(testkit::bin("elector"), &all).await.unwrap();
    Backend { elector, _etcd: etcd, _api: api }
}

/// A gauge or counter of the elector's `/metrics`.
async fn gauge(url: &str, series: &str) -> u64 {
    let text = testkit::proc::get(&format!("{url}/metrics")).await;
    metric(&text, series).unwrap_or_else(|| panic!("no {series} in the elector's metrics")) as u64
}

/// Waits until the elector's `series` is at least `at_least`. Asked every 5 ms: what it counts happens in other
/// processes, and the elector offers no event for it.
async fn await_gauge(url: &str, series: &str, at_least: u64) {
    await_until(url, series, |v| v >= at_least, &format!("at least {at_least}")).await;
}

async fn await_until(url: &str, series: &str, ok: impl Fn(u64) -> bool, what: &str) {
    let waited = tokio::time::timeout(PATIENCE, async {
        while !ok(gauge(url, series).await) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "{series} was not {what} within {PATIENCE:?}");
}

/// Answers the elector gave with 503 so far (the store failed or did not
/// answer in time), every route.
async fn unavailable(url: &str) -> u64 {
    let text = testkit::proc::get(&format!("{url}/metrics")).await;
    text.lines()
        .filter(|l| l.starts_with("mpsync_request_duration_seconds_count{") && l.contains("status=\"503\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The elector's figures a run reports as differences.
async fn counters(url: &str) -> [u64; 2] {
    [gauge(url, "mpsync_session_releases_total{kind=\"lock\"}").await, unavailable(url).await]
}

/// One `mpsync lock NAME --ttl T --holder H -- sleep 100000`, its stderr
/// lines stamped with the moment they were read.
struct Locker {
    holder: String,
    child: Child,
    pid: Pid,
    lines: mpsc::UnboundedReceiver<(Instant, String)>,
    seen: Vec<String>,
}

impl Locker {
    fn spawn(url: &str, name: &str, holder: &str, ttl: Duration, no_session: Option<&str>) -> Locker {
        let mut command = Command::new(testkit::proc::mpsync());
        command.arg("lock").args(no_session);
        command
            .args(["--elector", url, "--ttl", &format!("{}ms", ttl.as_millis()), "--holder", holder, name])
            .args(["--", "sleep", "100000"])
            // The client says at debug level when a claim goes without a
            // session (the elector did not answer the upgrade in time).
            .env("RUST_LOG", "warn,mpsync_client::http=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap();
        let pid = Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap()).unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let _ = tx.send((Instant::now(), line));
            }
        });
        Locker { holder: holder.to_owned(), child, pid, lines, seen: Vec::new() }
    }

    /// When the line containing `needle` was read.
    async fn line(&mut self, needle: &str, patience: Duration) -> Instant {
        let found = tokio::time::timeout(patience, async {
            while let Some((at, line)) = self.lines.recv().await {
                let hit = line.contains(needle);
                if !hit && !line.contains("session with the elector opened") {
                    // Anything else is news: a lost lock, a session that
                    // could not be opened, a retry.
                    eprintln!("[{}] {line}", self.holder);
                }
                self.seen.push(line);
                if hit {
                    return Some(at);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(at)) => at,
            _ => {
                panic!("{}: no line {needle:?} within {patience:?}; its stderr:\n{}", self.holder, self.seen.join("\n"))
            }
        }
    }

    /// SIGKILL to the `mpsync` process alone; returns the moment just before.
    fn kill(&self) -> Instant {
        let at = Instant::now();
        kill_process(self.pid, Signal::KILL).unwrap();
        at
    }

    /// SIGTERM (stop the command, release, exit), and waits for the exit.
    async fn stop(mut self) {
        let _ = kill_process(self.pid, Signal::TERM);
        let _ = tokio::time::timeout(PATIENCE, self.child.wait()).await;
    }
}

/// One failover run: the samples (SIGKILL to "holding lock"), and the
/// elector's figures that show what happened (with sessions: at least one
/// open per holder, one session release per kill).
async fn failover(url: &str, ttl: Duration, mode: Mode, kills: usize, lanes: usize, flag: Option<&str>) -> Run {
    let rounds = kills.div_ceil(lanes);
    let name = |lane: usize| format!("fo-{}ms-{}-{lane}", ttl.as_millis(), mode.label().1);
    let holder = |lane: usize, generation: usize| format!("lane{lane}-{}{generation}", mode.label().1);
    let no_session = (mode == Mode::NoSession).then_some(flag).flatten();
    let mut holders: Vec<Locker> =
        (0..lanes).map(|lane| Locker::spawn(url, &name(lane), &holder(lane, 0), ttl, no_session)).collect();
    for h in &mut holders {
        h.line("holding lock", PATIENCE).await;
    }
    let mut samples = Vec::with_capacity(rounds * lanes);
    let mut sessions = u64::MAX;
    let before = counters(url).await;
    for round in 1..=rounds {
        let mut successors: Vec<Locker> =
            (0..lanes).map(|lane| Locker::spawn(url, &name(lane), &holder(lane, round), ttl, no_session)).collect();
        // Each successor has been refused and is parked on its name.
        await_gauge(url, "mpsync_watchers", lanes as u64).await;
        sessions = sessions.min(gauge(url, "mpsync_sessions").await);
        // Enough for the slowest grant without a session: the rest of the
        // TTL, the elector's margin past it, a sweep.
        let patience = ttl * 2 + PATIENCE;
        match mode {
            Mode::Session => {
                for (i, (h, s)) in holders.iter().zip(&mut successors).enumerate() {
                    // A renewal wakes the successor's long-poll (the version
                    // moves), and it parks again: look once more.
                    await_gauge(url, "mpsync_watchers", (lanes - i) as u64).await;
                    let killed = h.kill();
                    samples.push(s.line("holding lock", patience).await - killed);
                }
            }
            Mode::NoSession => {
                let killed: Vec<Instant> = holders.iter().map(Locker::kill).collect();
                for (at, s) in killed.into_iter().zip(&mut successors) {
                    samples.push(s.line("holding lock", patience).await - at);
                }
            }
        }
        for mut h in holders {
            let _ = h.child.wait().await;
        }
        holders = successors;
    }
    let after = counters(url).await;
    for h in holders {
        h.stop().await;
    }
    // A watchdog closes its session once the command is gone, after mpsync
    // exits: the next run's counts start when every session has closed.
    await_until(url, "mpsync_sessions", |open| open == 0, "0").await;
    samples.sort();
    Run { samples, sessions, session_releases: after[0] - before[0], unavailable: after[1] - before[1] }
}

struct Run {
    samples: Vec<Duration>,
    /// The fewest the elector had open while successors waited.
    sessions: u64,
    /// Leases the elector released because a session closed.
    session_releases: u64,
    /// Its 503 answers during the run.
    unavailable: u64,
}

fn secs(d: Duration) -> String {
    if d >= Duration::from_secs(1) { format!("{:.3} s", d.as_secs_f64()) } else { ms(d) }
}

/// Prints the two runs of one store and TTL, sessions first.
fn print_pair(store: &str, ttl: Duration, with: &Run, without: &Run) {
    for (mode, run) in [(Mode::Session, with), (Mode::NoSession, without)] {
        let p99 = percentile(&run.samples, 0.99);
        let versus = match mode {
            Mode::Session => {
                let met = if p99 <= goal(store) { "met" } else { "missed" };
                let over = run.samples.iter().filter(|&&d| d > goal(store)).count();
                format!(
                    "{:.4}x no session; goal {} {met} ({over} of {} over)",
                    p99.as_secs_f64() / percentile(&without.samples, 0.99).as_secs_f64().max(1e-9),
                    ms(goal(store)),
                    run.samples.len()
                )
            }
            Mode::NoSession => format!("{:.2}x the TTL", p99.as_secs_f64() / ttl.as_secs_f64()),
        };
        println!(
            "{store:<10} | {:>5} | {:<10} | {:>5} | {:>8} | {:>8} | {:>4} | {:>10} | {:>10} | {:>10} | {versus}",
            format!("{} s", ttl.as_secs()),
            mode.label().0,
            run.samples.len(),
            run.sessions,
            run.session_releases,
            run.unavailable,
            secs(percentile(&run.samples, 0.5)),
            secs(p99),
            secs(run.samples.last().copied().unwrap_or_default()),
        );
    }
}

/// Lock cycles (acquire, then release) per second: `tasks` leases on
/// names of their own, one client, for `time`. Also the sessions the
/// elector had open meanwhile.
async fn cycles(url: &str, tag: &str, sessions: bool, tasks: usize, time: Duration) -> (f64, u64) {
    let client = Client::new(url).with_sessions(sessions);
    let mut leases = Vec::new();
    for t in 0..tasks {
        let options = Options { ttl: Duration::from_secs(10), holder: format!("cycler-{t}"), address: None };
        let lease = Lease::new(client.clone(), Kind::Lock, &format!("cycle-{tag}-{t}"), options).unwrap();
        // One cycle first: it opens the session, if any.
        lease.try_acquire().await.unwrap();
        lease.release().await.unwrap();
        leases.push(lease);
    }
    let open = gauge(url, "mpsync_sessions").await;
    let start = Instant::now();
    let deadline = start + time;
    let runs: Vec<_> = leases
        .into_iter()
        .map(|lease| {
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    lease.try_acquire().await.unwrap();
                    lease.release().await.unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for run in runs {
        total += run.await.unwrap();
    }
    (total as f64 / start.elapsed().as_secs_f64(), open)
}

/// Cycles per second with a session and without, in `BENCH_CYCLE_ROUNDS`
/// alternating runs of `BENCH_CYCLE_SECS` each (the machine is shared:
/// alternating spreads a busy spell over both), the median of each.
async fn print_cycles(store: &str, url: &str) {
    let tasks = env_or("BENCH_TASKS", 8) as usize;
    let (rounds, time) = (env_or("BENCH_CYCLE_ROUNDS", 5).max(1), Duration::from_secs(env_or("BENCH_CYCLE_SECS", 1)));
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for n in [1, tasks] {
        let (mut with, mut without, mut open) = (Vec::new(), Vec::new(), (u64::MAX, 0));
        for round in 0..rounds {
            let (rate, sessions) = cycles(url, &format!("s{n}-{round}"), true, n, time).await;
            with.push(rate);
            open.0 = open.0.min(sessions);
            let (rate, sessions) = cycles(url, &format!("n{n}-{round}"), false, n, time).await;
            without.push(rate);
            open.1 = open.1.max(sessions);
        }
        let (with, without) = (median(with), median(without));
        println!(
            "{store:<10} | {n:>5} | {with:>12.0} ({} open) | {without:>12.0} ({} open) | {:.2}x",
            open.0,
            open.1,
            with / without
        );
    }
}

/// The head of an HTTP answer, read up to its blank line.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the end of the answer: {}", String::from_utf8_lossy(&head));
        head.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Sends `request` on a new connection and keeps the connection: a session
/// (answered 101 at once) or a long-poll (no answer until it times out).
async fn connect(addr: SocketAddr, request: &str, answer: Option<&str>) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    if let Some(status) = answer {
        let head = read_head(&mut stream).await;
        assert!(head.starts_with(status), "expected {status}, got:\n{head}");
    }
    stream
}

/// Resident memory of a fresh elector (memory store) with `n` connections
/// made by `request(i)` and with `2n`, once `series` counts them: bytes per
/// connection of the second `n`, and the two figures in KiB. The first `n`
/// pay for what any first connections touch (threads' arenas, buffers the
/// allocator keeps), which is no cost of one more.
async fn bytes_each(
    n: usize,
    series: &str,
    request: impl Fn(usize) -> String,
    answer: Option<&str>,
) -> (f64, u64, u64) {
    let limit = (3 * n).to_string();
    let args = ["--log", "error", "--max-sessions", &limit, "--max-long-polls", &limit, "--max-connections", &limit];
    let elector = ElectorProcess::spawn(testkit::bin("elector"), &args).await.unwrap();
    let (url, pid) = (elector.url(), elector.pid().unwrap());
    let mut open = Vec::with_capacity(2 * n);
    let mut rss = Vec::new();
    for batch in 1..=2 {
        for i in open.len()..batch * n {
            open.push(connect(elector.addr(), &request(i), answer).await);
        }
        await_gauge(&url, series, (batch * n) as u64).await;
        rss.push(rss_kib(pid));
    }
    drop(open);
    (rss[1].saturating_sub(rss[0]) as f64 * 1024.0 / n as f64, rss[0], rss[1])
}

async fn print_session_memory() {
    let n = env_or("BENCH_SESSIONS", 1000) as usize;
    let session = |_| {
        "POST /v1/sessions HTTP/1.1\r\nHost: elector\r\nConnection: Upgrade\r\nUpgrade: mpsync-session\r\n\
         Content-Length: 0\r\n\r\n"
            .to_owned()
    };
    let (per_session, s0, s1) = bytes_each(n, "mpsync_sessions", session, Some("HTTP/1.1 101")).await;
    // A name nobody ever held reads at version 0: a long-poll on it parks.
    let long_poll = |i| format!("GET /v1/locks/parked-{i}?wait=0&timeout_ms=300000 HTTP/1.1\r\nHost: elector\r\n\r\n");
    let (per_long_poll, l0, l1) = bytes_each(n, "mpsync_watchers", long_poll, None).await;
    println!(
        "# elector RSS (memory store, a fresh elector each), from {n} to {} open sessions (raw upgraded \
         connections), against as many parked long-polls (each on its own connection and name)",
        2 * n
    );
    println!("{:<12} | {:>9} | {:>9} | {:>10} | ratio", "what", &format!("{n}"), &format!("{}", 2 * n), "bytes each");
    println!(
        "{:<12} | {:>5.1} MiB | {:>5.1} MiB | {per_session:>10.0} | {:.2}x a long-poll",
        "session",
        mib(s0),
        mib(s1),
        per_session / per_long_poll
    );
    println!("{:<12} | {:>5.1} MiB | {:>5.1} MiB | {per_long_poll:>10.0} |", "long-poll", mib(l0), mib(l1));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let stores = std::env::var("FAILOVER_STORES").unwrap_or_else(|_| "memory etcd kubernetes".into());
    let ttls: Vec<Duration> = std::env::var("FAILOVER_TTLS")
        .unwrap_or_else(|_| "10 30".into())
        .split_whitespace()
        .map(|t| Duration::from_secs(t.parse().unwrap_or_else(|_| panic!("FAILOVER_TTLS: {t:?} is not seconds"))))
        .collect();
    let kills = env_or("FAILOVER_KILLS", 50) as usize;
    let lanes = (env_or("FAILOVER_LANES", 10) as usize).clamp(1, kills.max(1));
    let help = std::process::Command::new(testkit::proc::mpsync()).args(["lock", "--help"]).output().unwrap();
    let flag = String::from_utf8_lossy(&help.stdout).contains("--no-session").then_some("--no-session");
    let profile = if testkit::profile_dir().ends_with("release") { "release" } else { "test (debug)" };
    println!(
        "# failover bench, {profile} profile, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if flag.is_none() {
        println!("# this mpsync has no --no-session flag: its locks open no session, both modes below are without");
    }

    let mut pairs = Vec::new();
    println!(
        "\n# lock cycles per second (acquire + release, mpsync_client::Lease, one client; median of alternating runs; \
         sessions open meanwhile)"
    );
    println!("{:<10} | {:>5} | {:>21} | {:>21} | ratio", "store", "tasks", "with session", "without");
    for store in stores.split_whitespace() {
        let backend = backend(store).await;
        let url = backend.elector.url();
        print_cycles(store, &url).await;
        for &ttl in ttls.iter().filter(|_| kills > 0) {
            let with = failover(&url, ttl, Mode::Session, kills, lanes, flag).await;
            let without = failover(&url, ttl, Mode::NoSession, kills, lanes, flag).await;
            let p = |run: &Run, q| secs(percentile(&run.samples, q));
            eprintln!(
                "failover {store} TTL {ttl:?}: session p50 {} p99 {}; no session p50 {} p99 {}",
                p(&with, 0.5),
                p(&with, 0.99),
                p(&without, 0.5),
                p(&without, 0.99)
            );
            pairs.push((store.to_owned(), ttl, with, without));
        }
    }
    if !pairs.is_empty() {
        println!(
            "\n# crash failover: SIGKILL of the holder's `mpsync lock` to the successor's \"holding lock\" line. \
             {lanes} names at once, {} rounds: with sessions one kill at a time, without all {lanes} of a round at \
             once (each costs about a TTL). A holder is killed soon after its grant, so without a session the \
             successor waits out nearly the whole TTL.\n# sessions: open on the elector while the successors \
             waited (the fewest); released: leases it released because their session closed; 503s: its answers \
             that the store failed, during the run",
            kills.div_ceil(lanes)
        );
        println!(
            "{:<10} | {:>5} | {:<10} | {:>5} | {:>8} | {:>8} | {:>4} | {:>10} | {:>10} | {:>10} | p99 against",
            "store", "TTL", "mode", "kills", "sessions", "released", "503s", "p50", "p99", "max"
        );
        for (store, ttl, with, without) in &pairs {
            print_pair(store, *ttl, with, without);
        }
    }
    println!();
    print_session_memory().await;
}
