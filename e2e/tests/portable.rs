//! The portable build: each example composed with the sync-guest component
//! (`wac plug`) needs only WASI and wasi:http. Run under `mpsync run
//! --no-sync-imports` (nothing of metaparticle:sync linked) it behaves like
//! the native build. `behaviour.rs` runs the WIT contract on it.

#![allow(clippy::unwrap_used, missing_docs)]

use testkit::proc::{Proc, elector, metric, token};

fn portable(name: &str, url: &str, app: &str, args: &[&str]) -> Proc {
    let env = format!("MPSYNC_ELECTOR={url}");
    Proc::run(name, url, &["--no-sync-imports", "--env", &env], app, args)
}

#[tokio::test]
async fn the_native_app_is_refused_without_the_imports() {
    let elector = elector().await;
    let mut p = Proc::run("native", &elector.url(), &["--no-sync-imports"], "lock.wasm", &[]);
    assert_eq!(p.wait().await.code(), Some(2));
    assert!(p.output().contains("metaparticle:sync/lock@0.1.0"), "{}", p.output());
}

#[tokio::test]
async fn portable_lock_examples_contend_like_native_ones() {
    let elector = elector().await;
    let url = elector.url();
    let mut alice =
        portable("alice", &url, "lock.portable.wasm", &["--id", "alice", "--hold-ms", "2500", "--ttl-ms", "1500"]);
    let first = alice.expect_line("I have the lock!").await;
    let mut bob = portable("bob", &url, "lock.portable.wasm", &["--id", "bob", "--hold-ms", "200", "--ttl-ms", "1500"]);
    let second = bob.expect_line("I have the lock!").await;
    alice.expect_line("Unlocked").await;
    assert!(!alice.output().contains("I lost the lock"), "the app's waits renewed its lease");
    assert!(token(&second) > token(&first), "{first} / {second}");
    assert_eq!(metric(&elector, "mpsync_expiries_total{kind=\"lock\"}").await, 0);
    assert!(alice.wait().await.success() && bob.wait().await.success());
}

#[tokio::test]
async fn portable_election_fails_over_when_the_leader_is_killed() {
    let elector = elector().await;
    let url = elector.url();
    let args = |id: &'static str| ["--id", id, "--ttl-ms", "1500", "--name", "portable"];
    let mut a = portable("a", &url, "election.portable.wasm", &args("a"));
    let first = a.expect_line("I am the leader").await;
    let mut b = portable("b", &url, "election.portable.wasm", &args("b"));
    a.signal("KILL");
    let second = b.expect_line("I am the leader").await;
    assert!(token(&second) > token(&first));
    assert_eq!(metric(&elector, "mpsync_expiries_total{kind=\"election\"}").await, 1);
}
