//! The portable build on every runtime: each example composed with the
//! sync-guest component (`wac plug`) needs only WASI and wasi:http, and
//! behaves like the native build under `mpsync run --no-sync-imports`
//! (nothing of metaparticle:sync linked), under the stock `wasmtime run -S
//! http`, and under `jco run` on Node. `behaviour.rs` runs the WIT contract
//! on each of them too.

#![allow(clippy::unwrap_used, missing_docs)]

use testkit::proc::{Proc, Provider, app, elector, metric, token};

#[tokio::test]
async fn the_native_app_is_refused_without_the_imports() {
    let elector = elector().await;
    let mut p = Proc::run("native", &elector.url(), &["--no-sync-imports"], "lock.wasm", &[]);
    assert_eq!(p.wait().await.code(), Some(2));
    assert!(p.output().contains("metaparticle:sync/lock@0.1.0"), "{}", p.output());
}

/// Two contenders serialize: the second gets the lock when the first
/// unlocks (a release the elector counts, not an expiry), with a larger
/// token.
async fn two_lock_examples_take_turns_with_growing_tokens(provider: Provider) {
    let elector = elector().await;
    let url = elector.url();
    let mut alice = app(provider, "alice", &url, "lock", &["--id", "alice", "--hold-ms", "2500", "--ttl-ms", "1500"]);
    let first = alice.expect_line("I have the lock!").await;
    let mut bob = app(provider, "bob", &url, "lock", &["--id", "bob", "--hold-ms", "200", "--ttl-ms", "1500"]);
    let second = bob.expect_line("I have the lock!").await;
    alice.expect_line("Unlocked").await;
    assert!(!alice.output().contains("I lost the lock"), "the app's waits renewed its lease");
    assert!(token(&second) > token(&first), "{first} / {second}");
    assert!(alice.wait().await.success() && bob.wait().await.success());
    assert_eq!(metric(&elector, "mpsync_expiries_total{kind=\"lock\"}").await, 0);
    assert_eq!(metric(&elector, "mpsync_releases_total{kind=\"lock\"}").await, 2, "both unlocks reached the elector");
}

/// A killed leader is replaced once its lease runs out.
async fn a_killed_leader_is_replaced_after_its_ttl(provider: Provider) {
    let elector = elector().await;
    let url = elector.url();
    let args = |id: &'static str| ["--id", id, "--ttl-ms", "1500", "--name", "failover"];
    let mut a = app(provider, "a", &url, "election", &args("a"));
    let first = a.expect_line("I am the leader").await;
    let mut b = app(provider, "b", &url, "election", &args("b"));
    a.signal_group("KILL");
    let second = b.expect_line("I am the leader").await;
    assert!(token(&second) > token(&first));
    assert_eq!(metric(&elector, "mpsync_expiries_total{kind=\"election\"}").await, 1);
}

/// A leader that resigns hands over at once: the next candidate leads by
/// a release the elector counts, not by an expiry (the TTL is 30 s).
async fn a_resignation_hands_over_at_once(provider: Provider) {
    let elector = elector().await;
    let url = elector.url();
    let args = |id: &'static str, resign: &'static str| {
        ["--id", id, "--ttl-ms", "30000", "--name", "handover", "--resign-after-ms", resign]
    };
    let mut a = app(provider, "a", &url, "election", &args("a", "1500"));
    let first = a.expect_line("I am the leader").await;
    let mut b = app(provider, "b", &url, "election", &args("b", "3600000"));
    a.expect_line("I resigned").await;
    let second = b.expect_line("I am the leader").await;
    assert!(token(&second) > token(&first));
    assert!(a.wait().await.success(), "{}", a.output());
    assert_eq!(metric(&elector, "mpsync_expiries_total{kind=\"election\"}").await, 0);
    assert_eq!(metric(&elector, "mpsync_releases_total{kind=\"election\"}").await, 1);
}

macro_rules! on {
    ($runtime:ident, $provider:expr) => {
        mod $runtime {
            #[tokio::test]
            async fn two_lock_examples_take_turns_with_growing_tokens() {
                super::two_lock_examples_take_turns_with_growing_tokens($provider).await;
            }

            #[tokio::test]
            async fn a_killed_leader_is_replaced_after_its_ttl() {
                super::a_killed_leader_is_replaced_after_its_ttl($provider).await;
            }

            #[tokio::test]
            async fn a_resignation_hands_over_at_once() {
                super::a_resignation_hands_over_at_once($provider).await;
            }
        }
    };
}

on!(mpsync, testkit::proc::Provider::Portable);
on!(wasmtime, testkit::proc::Provider::Wasmtime);
on!(jco, testkit::proc::Provider::Jco);
