//! Host benchmark: prints numbers, asserts nothing.
//!
//! 1. Guest->host call cost: `is-leader` (a metaparticle:sync import) next
//!    to `wasi:clocks/monotonic-clock.resolution` (a no-op WASI import), in
//!    the same guest loop, same run; also `is-leader` through the portable
//!    sync-guest component, which answers inside the guest.
//! 2. Component start: `mpsync run` of a component that does nothing, cold
//!    (compilation cache off) vs cached.
//!
//! `make bench` builds what it needs (release elector, wasm components).
//! `BENCH_STARTS` (default 5) sets how many starts are timed per case.

#![allow(clippy::unwrap_used, missing_docs)]

use std::process::Command;
use std::time::{Duration, Instant};

use testkit::elector::ElectorProcess;

fn wasm(name: &str) -> String {
    testkit::proc::wasm(name).display().to_string()
}

fn mpsync(args: &[&str], cache: &std::path::Path) -> (Duration, String) {
    let start = Instant::now();
    let out = Command::new(testkit::proc::mpsync()).args(args).env("MPSYNC_CACHE_DIR", cache).output().unwrap();
    let took = start.elapsed();
    assert!(out.status.success(), "mpsync {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    (took, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace().find_map(|kv| kv.strip_prefix(&format!("{key}="))).unwrap().parse().unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let elector_bin = testkit::bin("elector");
    let elector = ElectorProcess::spawn(&elector_bin, &["--log", "warn"]).await.unwrap();
    let url = elector.url();
    let cache = std::env::temp_dir().join(format!("mpsync-bench-cache-{}", std::process::id()));
    let env = format!("MPSYNC_ELECTOR={url}");

    println!("Guest->host call cost (same guest loop, same run; median of 3 runs of 200000 calls):");
    let mut rows = Vec::new();
    for (label, args) in [
        (
            "mpsync host",
            vec!["run", "--elector", &url, &wasm("probe.wasm")[..], "--mode", "bench", "--name", "bench-native"],
        ),
        (
            "portable guest",
            vec![
                "run",
                "--no-sync-imports",
                "--env",
                &env,
                &wasm("probe.portable.wasm")[..],
                "--mode",
                "bench",
                "--name",
                "bench-portable",
            ],
        ),
    ] {
        let mut leader = Vec::new();
        let mut noop = Vec::new();
        for _ in 0..3 {
            let (_, out) = mpsync(&args, &cache);
            let line = out.lines().find(|l| l.starts_with("bench ")).unwrap();
            let n = field(line, "iterations");
            leader.push(Duration::from_nanos((field(line, "is_leader_ns") / n * 1000.0) as u64));
            noop.push(Duration::from_nanos((field(line, "noop_ns") / n * 1000.0) as u64));
        }
        // Stored ×1000 to keep sub-nanosecond precision in a Duration.
        let (l, o) = (median(leader).as_nanos() as f64 / 1000.0, median(noop).as_nanos() as f64 / 1000.0);
        rows.push((label, l, o));
    }
    println!("{:>16} | {:>16} {:>22} | {:>8}", "provider", "is-leader ns", "no-op import ns", "ratio");
    for (label, l, o) in rows {
        println!("{label:>16} | {l:>16.1} {o:>22.1} | {:>8.2}", l / o);
    }

    let starts: usize = std::env::var("BENCH_STARTS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    println!("\nComponent start (`mpsync run` of probe.wasm --mode noop, whole process, median of {starts}):");
    let noop = wasm("probe.wasm");
    let cold: Vec<_> = (0..starts)
        .map(|_| mpsync(&["run", "--no-cache", "--elector", &url, &noop, "--mode", "noop"], &cache).0)
        .collect();
    mpsync(&["run", "--elector", &url, &noop, "--mode", "noop"], &cache);
    let warm: Vec<_> =
        (0..starts).map(|_| mpsync(&["run", "--elector", &url, &noop, "--mode", "noop"], &cache).0).collect();
    let (cold, warm) = (median(cold), median(warm));
    println!(
        "  cold (compile): {cold:.1?}   cached: {warm:.1?}   ratio cold/cached: {:.1}",
        cold.as_secs_f64() / warm.as_secs_f64()
    );

    languages(&url, &cache, starts);
    let _ = std::fs::remove_dir_all(cache);
}

/// The same figures for the example in each component language, same run:
/// component size, start cold and cached (`--noop`), and `is-leader` next
/// to a no-op WASI import.
fn languages(url: &str, cache: &std::path::Path, starts: usize) {
    let n = 20_000;
    println!("\nPer language (`mpsync run`, median of {starts} starts; {n} calls per loop):");
    println!(
        "{:>10} | {:>9} | {:>10} {:>10} | {:>14} {:>14} | {:>6}",
        "language", "size MB", "cold", "cached", "is-leader ns", "no-op ns", "ratio"
    );
    let rows = [
        ("Rust", "probe.wasm", vec!["--mode", "noop"], vec!["--mode", "bench", "--iterations"]),
        ("JavaScript", "election-js.wasm", vec!["--noop"], vec!["--bench"]),
        ("Python", "election-py.wasm", vec!["--noop"], vec!["--bench"]),
    ];
    for (language, file, noop, bench) in rows {
        let app = wasm(file);
        let size = std::fs::metadata(&app).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
        let start = |cached: bool| {
            let mut args = vec!["run"];
            if !cached {
                args.push("--no-cache");
            }
            args.extend(["--elector", url, &app[..]]);
            args.extend(noop.iter().copied());
            mpsync(&args, cache).0
        };
        let cold = median((0..starts).map(|_| start(false)).collect());
        start(true);
        let cached = median((0..starts).map(|_| start(true)).collect());
        let count = n.to_string();
        let name = format!("bench-{}", language.to_lowercase());
        let mut args = vec!["run", "--elector", url, &app[..], "--name", &name];
        args.extend(bench.iter().copied());
        args.push(&count);
        let (_, out) = mpsync(&args, cache);
        let line = out.lines().find(|l| l.starts_with("bench ")).unwrap_or_else(|| panic!("{language}: {out}"));
        let calls = field(line, "iterations");
        let (leader, noop_ns) = (field(line, "is_leader_ns") / calls, field(line, "noop_ns") / calls);
        println!(
            "{language:>10} | {size:>9.1} | {cold:>10.1?} {cached:>10.1?} | {leader:>14.1} {noop_ns:>14.1} | {:>6.2}",
            leader / noop_ns
        );
    }
}
