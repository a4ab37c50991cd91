//! Fair-lock benchmark: prints numbers, asserts nothing.
//!
//! Through a real elector process on the memory store, each comparison in
//! the same run (the two modes one after the other, never mixed: with a
//! line, a racer's plain `PUT` is refused while anyone waits):
//! 1. **contention**: `CONTENDERS` (8) contenders re-locking one lock in a
//!    loop for `FAIR_SECONDS` (default 60) seconds each mode, holding it 20
//!    ms each time: the longest wait (in hold times) and Jain's fairness
//!    index of acquisitions per contender, for **fair**
//!    (`mpsync_client::Lease::acquire`, which waits in line) against
//!    **race** (the loop clients ran before lines: a plain `PUT`; on 409,
//!    long-poll `GET ?wait=VERSION`, and try again).
//! 2. **parked**: `FAIR_PARKED` (5,000) waiters parked on one lock, each
//!    its own task: the time from a release (`DELETE` sent) to the next
//!    holder's grant (its `200` arriving), on this process's monotonic
//!    clock (`std::time::Instant`), and how many answers each release
//!    caused, over `FAIR_RELEASES` (200) releases in line against
//!    `FAIR_RACE_RELEASES` (20) in the race (each of which answers every
//!    parked long-poll, and every loser then asks again).
//! 3. **semaphore**: 100 contenders in line for one semaphore of 10
//!    permits against the same 100 on 10 plain locks (contender `i` on lock
//!    `i % 10`): grants per second, each grant held 0 and 20 ms,
//!    `FAIR_SEM_SECONDS` (10) per row.
//!
//! `make bench-fair` (or `cargo bench -p elector --bench fair`).

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::Method;
use mpsync_client::{Claimed, Client, Lease, Options};
use mpsync_core::wire::{AcquireRequest, Kind, LeaseView};
use testkit::bench::{env_or, metric, ms, percentile};
use testkit::elector::ElectorProcess;
use tokio::sync::mpsc;

/// How long each contender holds the lock per acquisition.
const HOLD: Duration = Duration::from_millis(20);
const CONTENDERS: usize = 8;
/// The contenders' lease: long beside the hold, so none runs out.
const CONTENDER_TTL: Duration = Duration::from_secs(10);
/// A racer's long-poll, at most (it is answered at the first change).
const POLL: Duration = Duration::from_secs(120);
/// The parked waiters' lease: long enough that no place runs out during
/// the run, and their wait in line (half of it, at most 5 minutes).
const PARKED_TTL: Duration = Duration::from_secs(600);
const PARKED_WAIT: Duration = Duration::from_secs(300);
/// Waiters started at once while parking them.
const PARK_BATCH: usize = 250;

/// Which way contenders wait for the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// In line: `Lease::acquire` (contention) or queued `PUT`s (parked).
    Fair,
    /// The race before lines: plain `PUT`, long-poll on 409, try again.
    Race,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Fair => "fair (in line)",
            Mode::Race => "race (PUT, long-poll)",
        }
    }
}

async fn metrics(client: &Client) -> String {
    let reply = client.request(Method::GET, "/metrics", None::<&()>).await.unwrap();
    String::from_utf8(reply.body.to_vec()).unwrap()
}

fn lock_puts(text: &str, status: u16) -> u64 {
    let series = format!("mpsync_request_duration_seconds_count{{route=\"lock_put\",status=\"{status}\"}}");
    metric(text, &series).unwrap_or(0.0) as u64
}

/// Jain's fairness index of `counts`: 1 when all are equal, 1/n when one
/// contender got everything.
fn jain(counts: &[u64]) -> f64 {
    let sum: f64 = counts.iter().map(|&c| c as f64).sum();
    let squares: f64 = counts.iter().map(|&c| (c as f64) * (c as f64)).sum();
    if squares == 0.0 { 0.0 } else { sum * sum / (counts.len() as f64 * squares) }
}

/// Today's race for a lock: a plain `PUT`; on 409, a long-poll for the
/// version the refusal showed, then again. Counts each answer in `answers`.
async fn race_acquire(client: &Client, name: &str, holder: &str, ttl: Duration, answers: &AtomicU64) -> LeaseView {
    let request = AcquireRequest::new(holder, ttl, None, None);
    loop {
        let claimed = client.claim(Kind::Lock, name, &request).await.unwrap();
        answers.fetch_add(1, Ordering::Relaxed);
        match claimed {
            Claimed::Granted(lease) => return lease,
            Claimed::Refused(conflict) => {
                // An error (a refused long-poll) is tried again like a change.
                let _ = client.read(Kind::Lock, name, Some((conflict.version, POLL))).await;
                answers.fetch_add(1, Ordering::Relaxed);
            }
            Claimed::Queued(place) => panic!("a plain PUT was queued: {place:?}"),
        }
    }
}

/// One contender of part 1: acquires, holds [`HOLD`], releases, until
/// `end`; returns how long each acquisition waited.
async fn contender(url: String, mode: Mode, i: usize, end: Instant) -> Vec<Duration> {
    let (name, holder) = ("contended", format!("contender-{i}"));
    let client = Client::new(&url);
    let options = Options { ttl: CONTENDER_TTL, holder: holder.clone(), address: None };
    let lease = Lease::new(client.clone(), Kind::Lock, name, options).unwrap();
    let unused = AtomicU64::new(0);
    let mut waits = Vec::new();
    while Instant::now() < end {
        let start = Instant::now();
        match mode {
            Mode::Fair => {
                lease.acquire(Duration::from_secs(60)).await.unwrap();
                waits.push(start.elapsed());
                tokio::time::sleep(HOLD).await;
                lease.release().await.unwrap();
            }
            Mode::Race => {
                let held = race_acquire(&client, name, &holder, CONTENDER_TTL, &unused).await;
                waits.push(start.elapsed());
                tokio::time::sleep(HOLD).await;
                assert!(client.release(Kind::Lock, name, &holder, held.token).await.unwrap());
            }
        }
    }
    waits
}

/// What one mode of part 1 measured.
struct Contention {
    waits: Vec<Duration>,
    counts: Vec<u64>,
    seconds: f64,
}

async fn contention(mode: Mode, seconds: u64) -> Contention {
    let elector = ElectorProcess::spawn(env!("CARGO_BIN_EXE_elector"), &["--log", "warn"]).await.unwrap();
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..CONTENDERS).map(|i| tokio::spawn(contender(elector.url(), mode, i, end))).collect();
    let mut waits = Vec::new();
    let mut counts = Vec::new();
    for task in tasks {
        let mine = task.await.unwrap();
        counts.push(mine.len() as u64);
        waits.extend(mine);
    }
    waits.sort();
    Contention { waits, counts, seconds: start.elapsed().as_secs_f64() }
}

fn holds(d: Duration) -> f64 {
    d.as_secs_f64() / HOLD.as_secs_f64()
}

async fn part_contention() {
    let seconds = env_or("FAIR_SECONDS", 60);
    println!(
        "\n## 1. {CONTENDERS} contenders re-locking one lock for {seconds} s each mode, hold {} each time",
        ms(HOLD)
    );
    let race = contention(Mode::Race, seconds).await;
    let fair = contention(Mode::Fair, seconds).await;
    println!(
        "{:>22} | {:>6} | {:>8} | {:>9} | {:>10} | {:>10} | {:>10} | {:>12} | {:>13} | {:>10} | {:>6} | per contender",
        "mode",
        "grants",
        "grants/s",
        "cycle",
        "wait p50",
        "wait p99",
        "longest",
        "longest/hold",
        "longest/cycle",
        "> 8 cycles",
        "Jain"
    );
    for (mode, run) in [(Mode::Race, &race), (Mode::Fair, &fair)] {
        let longest = run.waits.last().copied().unwrap_or_default();
        // One lock, grants one after another: a cycle is a hold and a
        // hand-over.
        let cycle = run.seconds / run.waits.len() as f64;
        println!(
            "{:>22} | {:>6} | {:>8.1} | {:>6.2} ms | {:>10} | {:>10} | {:>10} | {:>12.1} | {:>13.1} | {:>10} | {:>6.4} | {:?}",
            mode.label(),
            run.waits.len(),
            1.0 / cycle,
            cycle * 1e3,
            ms(percentile(&run.waits, 0.5)),
            ms(percentile(&run.waits, 0.99)),
            ms(longest),
            holds(longest),
            longest.as_secs_f64() / cycle,
            run.waits.iter().filter(|w| w.as_secs_f64() > 8.0 * cycle).count(),
            jain(&run.counts),
            run.counts
        );
    }
    let longest = |r: &Contention| r.waits.last().copied().unwrap_or_default().as_secs_f64();
    println!(
        "  fair / race: longest wait {:.3}, grants/s {:.2}; goal: fair longest ≤ 8 hold times, Jain ≥ 0.99",
        longest(&fair) / longest(&race),
        (fair.waits.len() as f64 / fair.seconds) / (race.waits.len() as f64 / race.seconds)
    );
    println!(
        "  (in line a waiter has {} ahead of it at most: its longest wait is about that many cycles)",
        CONTENDERS - 1
    );
}

/// A parked waiter of part 2 (`i` of them): waits in line (fair) or races
/// (race) until it gets the lock, then says so on `granted` with the
/// moment its `200` arrived, and ends.
async fn parked_waiter(
    client: Client,
    mode: Mode,
    i: usize,
    answers: Arc<AtomicU64>,
    granted: mpsc::UnboundedSender<(String, u64, Instant)>,
) {
    let (name, holder) = ("parked", format!("waiter-{i}"));
    let lease = match mode {
        Mode::Race => race_acquire(&client, name, &holder, PARKED_TTL, &answers).await,
        Mode::Fair => {
            let mut ticket = None;
            loop {
                let request = AcquireRequest::new(&holder, PARKED_TTL, None, None).in_line(ticket, PARKED_WAIT);
                let claimed = client.claim(Kind::Lock, name, &request).await.unwrap();
                answers.fetch_add(1, Ordering::Relaxed);
                match claimed {
                    Claimed::Granted(lease) => break lease,
                    Claimed::Queued(place) => ticket = Some(place.ticket),
                    Claimed::Refused(conflict) => panic!("{holder} was refused in line: {conflict:?}"),
                }
            }
        }
    };
    let _ = granted.send((holder, lease.token, Instant::now()));
}

/// Waits until `series` in the elector's metrics reads `want`, at most
/// `limit`; returns whether it did.
async fn settle(client: &Client, series: &str, want: u64, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    let mut every = tokio::time::interval(Duration::from_millis(20));
    loop {
        every.tick().await;
        if metric(&metrics(client).await, series).unwrap_or(0.0) as u64 == want {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
    }
}

/// What one mode of part 2 measured.
struct Parked {
    samples: Vec<Duration>,
    answers: u64,
    puts_200: u64,
    puts_202: u64,
    park_time: Duration,
}

async fn parked(mode: Mode, n: usize, releases: usize) -> Parked {
    let elector = ElectorProcess::spawn(
        env!("CARGO_BIN_EXE_elector"),
        &["--log", "warn", "--max-connections", "20000", "--max-long-polls", "20000", "--header-read-timeout", "600s"],
    )
    .await
    .unwrap();
    let client = Client::new(&elector.url());
    let Claimed::Granted(first) =
        client.claim(Kind::Lock, "parked", &AcquireRequest::new("first", PARKED_TTL, None, None)).await.unwrap()
    else {
        panic!("the first holder was refused")
    };
    let answers = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    // Parked: in line (fair), or on a long-poll (race).
    let gauge = match mode {
        Mode::Fair => "mpsync_waiters",
        Mode::Race => "mpsync_watchers",
    };
    // In batches, each parked before the next, so the connections do not
    // overflow the elector's accept queue all at once.
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        tasks.push(tokio::spawn(parked_waiter(client.clone(), mode, i, answers.clone(), tx.clone())));
        if (i + 1) % PARK_BATCH == 0 || i + 1 == n {
            let parked = settle(&client, gauge, (i + 1) as u64, Duration::from_secs(120)).await;
            assert!(parked, "{} waiters did not park", i + 1);
        }
    }
    let park_time = started.elapsed();
    let before = metrics(&client).await;
    let answered_before = answers.load(Ordering::Relaxed);
    let (mut holder, mut token) = ("first".to_owned(), first.token);
    let mut samples = Vec::with_capacity(releases);
    for r in 0..releases {
        let released = Instant::now();
        assert!(client.release(Kind::Lock, "parked", &holder, token).await.unwrap());
        let (next, next_token, at) = rx.recv().await.unwrap();
        samples.push(at.saturating_duration_since(released));
        (holder, token) = (next, next_token);
        // The losers of a race are parked again before the next release.
        if mode == Mode::Race {
            settle(&client, gauge, (n - r - 1) as u64, Duration::from_secs(120)).await;
        }
    }
    // Late answers, if a release caused any more, arrive within this.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = metrics(&client).await;
    let answers = answers.load(Ordering::Relaxed) - answered_before;
    tasks.iter().for_each(|t| t.abort());
    samples.sort();
    Parked {
        samples,
        answers,
        puts_200: lock_puts(&after, 200) - lock_puts(&before, 200),
        puts_202: lock_puts(&after, 202) - lock_puts(&before, 202),
        park_time,
    }
}

async fn part_parked() {
    let n = env_or("FAIR_PARKED", 5_000) as usize;
    let releases = env_or("FAIR_RELEASES", 200) as usize;
    let race_releases = env_or("FAIR_RACE_RELEASES", 20) as usize;
    println!("\n## 2. {n} waiters parked on one lock: from a release (DELETE sent) to the next holder's 200 arriving");
    println!("   (clock: std::time::Instant, CLOCK_MONOTONIC, in this one process; answers: every PUT/GET answer");
    println!("   the waiters received, and the elector's lock_put counts of 200 and 202, over all the releases)");
    println!(
        "{:>22} | {:>8} | {:>10} | {:>10} | {:>10} | {:>12} | {:>8} | {:>8} | {:>8}",
        "mode", "releases", "p50", "p99", "max", "answers/rel", "PUT 200", "PUT 202", "parked in"
    );
    let mut p99 = Vec::new();
    for (mode, count) in [(Mode::Race, race_releases), (Mode::Fair, releases)] {
        let run = parked(mode, n, count).await;
        println!(
            "{:>22} | {:>8} | {:>10} | {:>10} | {:>10} | {:>12.2} | {:>8} | {:>8} | {:>7.1}s",
            mode.label(),
            count,
            ms(percentile(&run.samples, 0.5)),
            ms(percentile(&run.samples, 0.99)),
            ms(run.samples.last().copied().unwrap_or_default()),
            run.answers as f64 / count as f64,
            run.puts_200,
            run.puts_202,
            run.park_time.as_secs_f64()
        );
        p99.push(percentile(&run.samples, 0.99).as_secs_f64());
    }
    println!("  fair / race: p99 {:.4}; goal: fair p99 under 1 ms, one answer per release", p99[1] / p99[0]);
}

/// How many contenders of part 3 hold a grant now, and the most at once
/// (counted from each grant's `200` to its `DELETE` being sent, a span
/// within the elector's own, so never more than it granted at once).
#[derive(Default)]
struct Holding {
    now: AtomicU64,
    most: AtomicU64,
}

/// A contender of part 3: in line for a permit of `name` (a semaphore of
/// `permits`) or for the plain lock `name`, holds it `hold`, releases,
/// again, until `end`; returns its grants.
async fn permit_contender(
    client: Client,
    (name, permits): (String, Option<u32>),
    i: usize,
    hold: Duration,
    end: Instant,
    holding: Arc<Holding>,
) -> u64 {
    let holder = format!("contender-{i}");
    let mut grants = 0;
    while Instant::now() < end {
        let mut ticket = None;
        let lease = loop {
            let mut request = AcquireRequest::new(&holder, CONTENDER_TTL, None, None);
            if let Some(permits) = permits {
                request = request.shared(Some(permits));
            }
            match client.claim(Kind::Lock, &name, &request.in_line(ticket, CONTENDER_TTL / 3)).await.unwrap() {
                Claimed::Granted(lease) => break lease,
                Claimed::Queued(place) => ticket = Some(place.ticket),
                Claimed::Refused(conflict) => panic!("{holder} was refused in line: {conflict:?}"),
            }
        };
        grants += 1;
        let now = holding.now.fetch_add(1, Ordering::SeqCst) + 1;
        holding.most.fetch_max(now, Ordering::SeqCst);
        if !hold.is_zero() {
            tokio::time::sleep(hold).await;
        }
        holding.now.fetch_sub(1, Ordering::SeqCst);
        assert!(client.release(Kind::Lock, &name, &holder, lease.token).await.unwrap());
    }
    grants
}

const SEM_PERMITS: u32 = 10;
const SEM_CONTENDERS: usize = 100;

/// What one row of part 3 measured.
struct Permits {
    per_second: f64,
    jain: f64,
    most: u64,
}

/// [`SEM_CONTENDERS`] contenders for `seconds`: on one semaphore of
/// [`SEM_PERMITS`] permits, or contender `i` on plain lock `i % SEM_PERMITS`.
async fn permit_rate(semaphore: bool, hold: Duration, seconds: u64) -> Permits {
    let elector = ElectorProcess::spawn(env!("CARGO_BIN_EXE_elector"), &["--log", "warn"]).await.unwrap();
    let client = Client::new(&elector.url());
    let holding = Arc::new(Holding::default());
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..SEM_CONTENDERS)
        .map(|i| {
            let lock = if semaphore {
                ("semaphore".to_owned(), Some(SEM_PERMITS))
            } else {
                (format!("lock-{}", i % SEM_PERMITS as usize), None)
            };
            tokio::spawn(permit_contender(client.clone(), lock, i, hold, end, holding.clone()))
        })
        .collect();
    let mut counts = Vec::new();
    for task in tasks {
        counts.push(task.await.unwrap());
    }
    Permits {
        per_second: counts.iter().sum::<u64>() as f64 / start.elapsed().as_secs_f64(),
        jain: jain(&counts),
        most: holding.most.load(Ordering::SeqCst),
    }
}

/// Part 3: a semaphore of [`SEM_PERMITS`] permits under [`SEM_CONTENDERS`]
/// contenders against the same contenders on as many plain locks, all in
/// line (a queued `PUT`, parked up to a third of the TTL, as the client
/// does), each grant held 0 ms (what the elector sustains) and 20 ms,
/// `FAIR_SEM_SECONDS` (10) per row.
async fn semaphore() {
    let seconds = env_or("FAIR_SEM_SECONDS", 10);
    println!(
        "\n## 3. {SEM_CONTENDERS} contenders in line: one semaphore of {SEM_PERMITS} permits against {SEM_PERMITS} plain locks (contender i on lock i % {SEM_PERMITS}), {seconds} s per row"
    );
    println!(
        "{:>6} | {:>18} | {:>6} | {:>12} | {:>18} | {:>6} | {:>12} | {:>5}",
        "hold", "semaphore grants/s", "Jain", "most at once", "locks grants/s", "Jain", "most at once", "ratio"
    );
    for hold in [Duration::ZERO, HOLD] {
        let semaphore = permit_rate(true, hold, seconds).await;
        let plain = permit_rate(false, hold, seconds).await;
        println!(
            "{:>6} | {:>18.1} | {:>6.4} | {:>12} | {:>18.1} | {:>6.4} | {:>12} | {:>5.2}",
            format!("{} ms", hold.as_millis()),
            semaphore.per_second,
            semaphore.jain,
            semaphore.most,
            plain.per_second,
            plain.jain,
            plain.most,
            semaphore.per_second / plain.per_second
        );
    }
    println!(
        "  ratio: semaphore / plain locks; with a hold, {SEM_PERMITS} permits cap grants at {:.0}/s",
        f64::from(SEM_PERMITS) / HOLD.as_secs_f64()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let parts = std::env::var("FAIR_PARTS").unwrap_or_else(|_| "1 2 3".into());
    println!("# fair: fair locks against today's race, elector on the memory store (this build)");
    for part in parts.split_whitespace() {
        match part {
            "1" => part_contention().await,
            "2" => part_parked().await,
            "3" => semaphore().await,
            other => panic!("no part {other}"),
        }
    }
}
