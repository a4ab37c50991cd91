//! The short chaos runs of `make test`: at least 300 hand-overs per store
//! through real clients under faults, checked for safety; and one run with
//! the memory store's state file thrown away at each restart, which the
//! checker must find unsafe (so a green run means something).

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

use chaos::run::{Bins, Config, Report, StoreKind, run};

fn config(store: StoreKind, handovers: usize, seed: u64) -> Config {
    let mut bins = Bins::beside(std::path::Path::new(env!("CARGO_BIN_EXE_chaos-worker"))).unwrap();
    // make test builds the wasm contenders and names their folder.
    bins.wasm = std::env::var_os("MPSYNC_WASM_DIR").map(PathBuf::from).filter(|d| d.join("chaos.wasm").is_file());
    Config {
        store,
        handovers,
        time_limit: Duration::from_secs(240),
        seed,
        contenders: 4,
        locks: 2,
        ttl: Duration::from_secs(1),
        fault_every: Duration::from_millis(1500),
        electors: 2,
        bins,
        history: None,
        verbose: false,
        forget_state: false,
    }
}

async fn short_run(store: StoreKind, seed: u64) -> Report {
    let report = run(config(store, 300, seed)).await.unwrap();
    println!("{}", report.text());
    assert!(report.findings.safe(), "{}", report.text());
    assert!(report.findings.handovers >= 300, "the run ended early: {}", report.text());
    assert!(!report.faults.is_empty(), "no fault was injected: {}", report.text());
    report
}

#[tokio::test]
async fn memory_store_with_elector_restarts_is_safe() {
    let report = short_run(StoreKind::Memory, 11).await;
    assert!(report.faults.contains_key("elector-restart"), "{}", report.text());
}

#[tokio::test]
async fn etcd_store_is_safe() {
    short_run(StoreKind::Etcd, 12).await;
}

#[tokio::test]
async fn kubernetes_store_is_safe() {
    short_run(StoreKind::Kubernetes, 13).await;
}

#[tokio::test]
async fn a_memory_store_that_forgets_across_restarts_is_caught() {
    let mut config = config(StoreKind::Memory, 200, 14);
    config.forget_state = true;
    // Restarts often, and stop as soon as the damage shows.
    config.fault_every = Duration::from_millis(400);
    config.time_limit = Duration::from_secs(30);
    let report = run(config).await.unwrap();
    println!("{}", report.text());
    let f = &report.findings;
    assert!(!f.safe(), "the checker missed what a forgetful restart breaks: {}", report.text());
    assert!(f.token_regressions > 0, "{}", report.text());
}
