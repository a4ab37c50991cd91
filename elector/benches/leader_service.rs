//! Leader Service benchmark: prints numbers, asserts nothing.
//!
//! How long from a change of leadership to the EndpointSlice of
//! `--leader-service` saying so, against the Lease API emulator (`testkit`,
//! real HTTP, in this process): `BENCH_HAND_OVERS` (default 200) hand-overs
//! of one election between two holders, with 1 elector keeping the slice
//! and with 3 (every pod's sidecar keeps it; claims and releases go to the
//! first). Each hand-over, on this process's monotonic clock:
//! - **named**: from the new leader's claim sent to the slice naming it
//!   (its address, id and token), seen the moment the emulator stores the
//!   write; the claim's own round trip (a Lease write) is printed beside
//!   it;
//! - **emptied**: from the leader's release sent to the slice listing no
//!   endpoint.
//!
//! Then kube-proxy takes its own time to apply the slice (not measured
//! here: no cluster).
//!
//! `cargo bench -p elector --bench leader_service`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use mpsync_client::{Claimed, Client};
use mpsync_core::wire::{AcquireRequest, Kind, LeaseView};
use serde_json::Value;
use testkit::LeaseApi;
use testkit::bench::{env_or, ms, percentile};
use testkit::elector::ElectorProcess;

const BIN: &str = env!("CARGO_BIN_EXE_elector");
const NAMESPACE: &str = "bench";
const SLICE: &str = "web-leader";
/// Bound on each wait: past it, the slice never said so (a bug).
const PATIENCE: Duration = Duration::from_secs(20);

/// Waits for the emulator to store a slice for which `done` holds.
async fn until(api: &LeaseApi, done: impl Fn(&Value) -> bool) {
    let mut changes = api.endpoint_slice_changes();
    tokio::time::timeout(PATIENCE, async {
        loop {
            changes.borrow_and_update();
            if api.endpoint_slice(NAMESPACE, SLICE).is_some_and(|s| done(&s)) {
                return;
            }
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("the slice never said so");
}

fn names(slice: &Value, lease: &LeaseView, ip: &str) -> bool {
    slice["endpoints"][0]["addresses"][0] == ip
        && slice["metadata"]["annotations"]["sync.metaparticle.io/token"] == lease.token.to_string().as_str()
}

fn lists_nobody(slice: &Value) -> bool {
    slice["endpoints"].as_array().is_some_and(Vec::is_empty)
}

struct Figures {
    claim: Vec<Duration>,
    named: Vec<Duration>,
    emptied: Vec<Duration>,
}

async fn run(electors: usize, hand_overs: usize) -> Figures {
    let api = LeaseApi::start().await.unwrap();
    let dir = testkit::temp_dir("bench-leader-service").unwrap();
    let kubeconfig = api.write_kubeconfig(&dir, NAMESPACE).unwrap().display().to_string();
    let mut processes = Vec::new();
    for i in 0..electors {
        let identity = format!("elector-{i}");
        let args = [
            "--store",
            "kubernetes",
            "--kubeconfig",
            &kubeconfig,
            "--identity",
            &identity,
            "--log",
            "warn",
            "--store-timeout",
            "5s",
            "--leader-service",
            "web=web:http",
        ];
        processes.push(ElectorProcess::spawn(BIN, &args).await.unwrap());
    }
    let client = Client::new(&processes[0].url());
    let mut figures = Figures { claim: Vec::new(), named: Vec::new(), emptied: Vec::new() };
    for i in 0..hand_overs {
        let (holder, ip) = if i % 2 == 0 { ("pod-a", "10.0.0.1") } else { ("pod-b", "10.0.0.2") };
        let request = AcquireRequest::new(holder, Duration::from_secs(30), None, Some(&format!("{ip}:8080")));
        let sent = Instant::now();
        let Claimed::Granted(lease) = client.claim(Kind::Election, "web", &request).await.unwrap() else {
            panic!("{holder} was refused")
        };
        figures.claim.push(sent.elapsed());
        until(&api, |s| names(s, &lease, ip)).await;
        figures.named.push(sent.elapsed());
        let sent = Instant::now();
        assert!(client.release(Kind::Election, "web", holder, lease.token).await.unwrap());
        until(&api, lists_nobody).await;
        figures.emptied.push(sent.elapsed());
    }
    let _ = std::fs::remove_dir_all(dir);
    figures
}

fn row(what: &str, samples: &mut [Duration]) {
    samples.sort();
    println!("  {what:<44} p50 {:>10}  p99 {:>10}", ms(percentile(samples, 0.5)), ms(percentile(samples, 0.99)));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let hand_overs = env_or("BENCH_HAND_OVERS", 200) as usize;
    println!("leader Service: {hand_overs} hand-overs, Lease API emulator");
    for electors in [1, 3] {
        let mut f = run(electors, hand_overs).await;
        println!("{electors} elector(s) keeping the slice:");
        row("claim round trip (Lease written)", &mut f.claim);
        row("claim sent -> slice names the new leader", &mut f.named);
        row("release sent -> slice lists no endpoint", &mut f.emptied);
    }
}
