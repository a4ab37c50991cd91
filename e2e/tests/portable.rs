//! The seed's examples on every runtime and in every language. Composed
//! with the sync-guest component (`wac plug`), an example needs only WASI
//! and wasi:http, and behaves like the native build under `mpsync run
//! --no-sync-imports` (nothing of metaparticle:sync linked), under the
//! stock `wasmtime run -S http`, and under `jco run` on Node. The
//! JavaScript and Python examples (`guest/js`, componentize-js;
//! `guest/python`, componentize-py) play the same scenarios under `mpsync
//! run` and composed under stock wasmtime.
//! `behaviour.rs` runs the WIT contract on every provider too.

#![allow(clippy::unwrap_used, missing_docs)]

use testkit::proc::{Proc, Provider, app, elector, metric, token};

#[tokio::test]
async fn the_native_app_is_refused_without_the_imports() {
    let elector = elector().await;
    let mut p = Proc::run("native", &elector.url(), &["--no-sync-imports"], "lock.wasm", &[]);
    assert_eq!(p.wait().await.code(), Some(2));
    assert!(p.output().contains("metaparticle:sync/lock@0.1.2"), "{}", p.output());
}

/// Two contenders serialize: the second gets the lock when the first
/// unlocks (a release the elector counts, not an expiry), with a larger
/// token.
async fn two_lock_examples_take_turns_with_growing_tokens(provider: Provider, lang: &str) {
    let elector = elector().await;
    let url = elector.url();
    let mut alice = app(
        provider,
        "alice",
        &url,
        &format!("lock{lang}"),
        &["--id", "alice", "--hold-ms", "2500", "--ttl-ms", "1500"],
    );
    let first = alice.expect_first_line("I have the lock!").await;
    let mut bob =
        app(provider, "bob", &url, &format!("lock{lang}"), &["--id", "bob", "--hold-ms", "200", "--ttl-ms", "1500"]);
    let second = bob.expect_first_line("I have the lock!").await;
    alice.expect_line("Unlocked").await;
    assert!(!alice.output().contains("I lost the lock"), "the app's waits renewed its lease");
    assert!(token(&second) > token(&first), "{first} / {second}");
    assert!(alice.wait().await.success() && bob.wait().await.success());
    assert_eq!(metric(&elector, "mpsync_expiries_total{kind=\"lock\"}").await, 0);
    assert_eq!(metric(&elector, "mpsync_releases_total{kind=\"lock\"}").await, 2, "both unlocks reached the elector");
}

/// The elector goes away while the example holds the lock: the example's
/// loss handler fires (the seed's `onLost`), from its own waiting, by the
/// lease's local deadline.
async fn a_lost_lock_is_reported_by_the_example(provider: Provider, lang: &str) {
    let elector = elector().await;
    let url = elector.url();
    let args = ["--id", "alice", "--hold-ms", "600000", "--ttl-ms", "1000", "--name", "lost"];
    let mut alice = app(provider, "alice", &url, &format!("lock{lang}"), &args);
    alice.expect_first_line("I have the lock!").await;
    elector.signal("KILL").unwrap();
    alice.expect_line("I lost the lock!").await;
}

/// A killed leader is replaced at once, with every provider: its session
/// with the elector (a connection upgraded by `mpsync run`'s own imports, a
/// request never finished over wasi:http) closes with its process, and the
/// elector releases its lease then, not at the end of its TTL.
async fn a_killed_leader_is_replaced_at_once(provider: Provider, lang: &str) {
    let elector = elector().await;
    let url = elector.url();
    let args = |id: &'static str| ["--id", id, "--ttl-ms", "1500", "--name", "failover"];
    let mut a = app(provider, "a", &url, &format!("election{lang}"), &args("a"));
    let first = a.expect_first_line("I am the leader").await;
    let mut b = app(provider, "b", &url, &format!("election{lang}"), &args("b"));
    a.signal_group("KILL");
    let second = b.expect_first_line("I am the leader").await;
    assert!(token(&second) > token(&first));
    assert_eq!(metric(&elector, "mpsync_session_releases_total{kind=\"election\"}").await, 1, "{provider:?}");
    assert_eq!(metric(&elector, "mpsync_expiries_total{kind=\"election\"}").await, 0, "{provider:?}");
}

/// A leader that resigns hands over at once: the next candidate leads by
/// a release the elector counts, not by an expiry (the TTL is 30 s).
async fn a_resignation_hands_over_at_once(provider: Provider, lang: &str) {
    let elector = elector().await;
    let url = elector.url();
    let args = |id: &'static str, resign: &'static str| {
        ["--id", id, "--ttl-ms", "30000", "--name", "handover", "--resign-after-ms", resign]
    };
    let mut a = app(provider, "a", &url, &format!("election{lang}"), &args("a", "1500"));
    let first = a.expect_first_line("I am the leader").await;
    let mut b = app(provider, "b", &url, &format!("election{lang}"), &args("b", "3600000"));
    a.expect_line("I resigned").await;
    let second = b.expect_first_line("I am the leader").await;
    assert!(token(&second) > token(&first));
    assert!(a.wait().await.success(), "{}", a.output());
    assert_eq!(metric(&elector, "mpsync_expiries_total{kind=\"election\"}").await, 0);
    assert_eq!(metric(&elector, "mpsync_releases_total{kind=\"election\"}").await, 1);
}

/// The SDKs' `SharedLock` (JavaScript, Python), as a semaphore of two: two
/// examples hold permits 0 and 1 at once; a third waits, and gets the
/// permit of the one killed, at once (its session closed).
async fn two_sdk_examples_hold_a_semaphore_at_once(provider: Provider, lang: &str) {
    let elector = elector().await;
    let url = elector.url();
    let args =
        |id: &'static str| ["--id", id, "--permits", "2", "--hold-ms", "600000", "--ttl-ms", "60000", "--name", "pool"];
    let example = format!("lock{lang}");
    let mut a = app(provider, "a", &url, &example, &args("a"));
    let first = a.expect_first_line("I have the lock!").await;
    let mut b = app(provider, "b", &url, &example, &args("b"));
    let second = b.expect_first_line("I have the lock!").await;
    let permit =
        |line: &str| line.split("permit ").nth(1).unwrap_or_else(|| panic!("no permit in {line}"))[..1].to_owned();
    let mut both = [permit(&first), permit(&second)];
    both.sort();
    assert_eq!(both, ["0", "1"], "{first} / {second}");
    let mut c = app(provider, "c", &url, &example, &args("c"));
    c.expect_first_line("Attempting to lock").await;
    a.signal_group("KILL");
    let third = c.expect_line("I have the lock!").await;
    assert_eq!(permit(&third), permit(&first), "the permit of the killed holder: {third}");
    assert!(token(&third) > token(&second), "{second} / {third}");
    b.signal_group("KILL");
    c.signal_group("KILL");
}

/// The scenarios for one runtime and one language (`""`: the Rust
/// examples, `"-js"`: the JavaScript ones, `"-py"`: the Python ones).
macro_rules! on {
    ($module:ident, $provider:expr, $lang:expr) => {
        mod $module {
            #[tokio::test]
            async fn two_lock_examples_take_turns_with_growing_tokens() {
                super::two_lock_examples_take_turns_with_growing_tokens($provider, $lang).await;
            }

            #[tokio::test]
            async fn a_lost_lock_is_reported_by_the_example() {
                super::a_lost_lock_is_reported_by_the_example($provider, $lang).await;
            }

            #[tokio::test]
            async fn a_killed_leader_is_replaced_at_once() {
                super::a_killed_leader_is_replaced_at_once($provider, $lang).await;
            }

            #[tokio::test]
            async fn a_resignation_hands_over_at_once() {
                super::a_resignation_hands_over_at_once($provider, $lang).await;
            }
        }
    };
}

on!(rust_on_mpsync, testkit::proc::Provider::Portable, "");
on!(rust_on_wasmtime, testkit::proc::Provider::Wasmtime, "");
on!(rust_on_jco, testkit::proc::Provider::Jco, "");
/// The SDKs' shared holds, for one runtime and one language.
macro_rules! shared {
    ($module:ident, $provider:expr, $lang:expr) => {
        mod $module {
            #[tokio::test]
            async fn two_sdk_examples_hold_a_semaphore_at_once() {
                super::two_sdk_examples_hold_a_semaphore_at_once($provider, $lang).await;
            }
        }
    };
}

shared!(js_shared_native, testkit::proc::Provider::Native, "-js");
shared!(js_shared_on_wasmtime, testkit::proc::Provider::Wasmtime, "-js");
shared!(python_shared_native, testkit::proc::Provider::Native, "-py");
shared!(python_shared_on_wasmtime, testkit::proc::Provider::Wasmtime, "-py");
on!(js_native, testkit::proc::Provider::Native, "-js");
on!(js_on_wasmtime, testkit::proc::Provider::Wasmtime, "-js");
on!(python_native, testkit::proc::Provider::Native, "-py");
on!(python_on_wasmtime, testkit::proc::Provider::Wasmtime, "-py");
