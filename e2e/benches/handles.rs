//! Handle churn benchmark: prints numbers, asserts nothing.
//!
//! One `mpsync run churn.wasm` opens `BENCH_HANDLES` (default 100) lock and
//! election handles on names never used before, drops them, and does it
//! again, `BENCH_ROUNDS` times (default 200). Between rounds, once the
//! elector has no long-poll parked (every leader watch of the round has
//! stopped), it prints the host's resident memory (`VmRSS`), its lease
//! registry's size and the tokio tasks alive when the next round starts
//! (from the host's `mpsync::leases` debug lines). A host that kept
//! anything per dropped handle would show it growing round after round.

#![allow(clippy::unwrap_used, missing_docs)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use testkit::bench::{env_or, metric, mib, rss_kib};
use testkit::elector::ElectorProcess;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

fn field(line: &str, key: &str) -> usize {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

async fn watchers(url: &str) -> u64 {
    let text = testkit::proc::get(&format!("{url}/metrics")).await;
    metric(&text, "mpsync_watchers").unwrap() as u64
}

#[tokio::main]
async fn main() {
    let (rounds, handles) = (env_or("BENCH_ROUNDS", 200) as usize, env_or("BENCH_HANDLES", 100) as usize);
    let elector = ElectorProcess::spawn(testkit::bin("elector"), &["--log", "warn"]).await.unwrap();
    let url = elector.url();
    let churn = testkit::proc::wasm("churn.wasm");
    let mut child = Command::new(testkit::proc::mpsync())
        .args(["run", "--log", "mpsync::leases=debug", "--elector", &url])
        .arg(&churn)
        .args(["--rounds", &rounds.to_string(), "--handles", &handles.to_string(), "--ttl-ms", "60000", "--cue"])
        .env("MPSYNC_CACHE_DIR", testkit::proc::cache_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (tx, mut lines) = mpsc::unbounded_channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stream).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);

    println!("{rounds} rounds of {handles} handles on new names, each opened and dropped (mpsync run churn.wasm):");
    println!(
        "{:>6} | {:>9} | {:>13} | {:>13} | {:>16}",
        "round", "RSS MiB", "registry peak", "registry after", "tasks at start"
    );
    let started = Instant::now();
    let mut closed = 0;
    let mut rss = Vec::new();
    for round in 0..rounds {
        let (mut done, mut peak, mut after, mut tasks) = (false, 0, 0, None);
        while !done || closed < handles * (round + 1) {
            let Some(line) = lines.recv().await else { panic!("mpsync ended early") };
            if line.starts_with(&format!("round {round} done")) {
                done = true;
            } else if line.contains("FAILED") {
                panic!("{line}");
            } else if line.contains("lease handle") {
                after = field(&line, "open");
                peak = peak.max(after);
                // The tasks alive before the round opened its second handle.
                tasks.get_or_insert(field(&line, "tasks"));
                if line.contains("lease handle closed") {
                    closed += 1;
                }
            }
        }
        // Every leader watch of the round has stopped once the elector has
        // no long-poll parked; it offers no event for that.
        while watchers(&url).await != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        rss.push(rss_kib(pid));
        let shown = round < 5 || (round + 1) % (rounds / 10).max(1) == 0;
        if shown {
            println!(
                "{:>6} | {:>9.1} | {peak:>13} | {after:>13} | {:>16}",
                round + 1,
                mib(rss[round]),
                tasks.unwrap_or(0)
            );
        }
        // The guest waits for this line, the last round's too: every figure
        // is taken while it is parked between rounds, not while it exits.
        stdin.write_all(b"next\n").await.unwrap();
    }
    let status = child.wait().await.unwrap();
    assert!(status.success(), "mpsync: {status}");
    let (first, last) = (rss[0], rss[rss.len() - 1]);
    let tenth = rss.len() / 10;
    println!(
        "{} handles in {:.1?}. RSS: {:.1} MiB after round 1, {:.1} MiB after round {tenth}, {:.1} MiB after round {}: \
         {:+.1} MiB over the last {} rounds",
        handles * rounds,
        started.elapsed(),
        mib(first),
        mib(rss[tenth.max(1) - 1]),
        mib(last),
        rss.len(),
        mib(last) - mib(rss[tenth.max(1) - 1]),
        rss.len() - tenth.max(1),
    );
}
