//! Leadership transfer through the JavaScript and Python SDKs' `Election`
//! (`guest/js/sync.js`, `guest/python/metaparticle_sync.py`, WIT 0.1.2),
//! with the seed's election example in each language leading: it steps
//! down at once by default (its `onLost` fires, and the named candidate
//! leads); made with `onTransfer` (`--decide`) it is told, is still the
//! leader when told, and resigns itself. Under `mpsync run` and composed
//! under stock wasmtime. The named candidate is the test's own native
//! client, campaigning before the transfer is asked (an example would
//! first spend seconds compiling). `behaviour.rs` runs the WIT functions
//! themselves on every provider.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use mpsync_client::{Client, Kind, Lease, Options};
use testkit::proc::{Provider, app, elector, token};

/// Asks the leader of `name` to hand over to `to`, as an operator does.
async fn transfer(client: &Client, name: &str, to: &str) {
    let body = serde_json::json!({ "to": to }).to_string();
    let path = format!("/v1/elections/{name}/transfer");
    let reply = client.send(hyper::Method::POST, &path, Some(body.into())).await.unwrap();
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
}

/// Leader `a` (with `--decide` if `decide`), campaigning for ever, and
/// candidate `b` campaigning; a transfer to `b`: `b` leads with a larger
/// token, once `a` stepped down (`I lost the leader`) or, deciding, was
/// told and resigned; `a` campaigns again, and leads once `b` lets go.
async fn a_transfer_hands_over_to_the_named_candidate(provider: Provider, lang: &str, decide: bool) {
    let elector = elector().await;
    let url = elector.url();
    let example = format!("election{lang}");
    let name = if decide { "decide" } else { "at-once" };
    let mut args = vec!["--id", "a", "--ttl-ms", "1500", "--name", name];
    if decide {
        args.push("--decide");
    }
    let mut a = app(provider, "a", &url, &example, &args);
    let first = token(&a.expect_first_line("I am the leader").await);
    let client = Client::new(&url);
    let options = Options { ttl: Duration::from_secs(2), holder: "b".into(), address: None };
    let b = Lease::new(client.clone(), Kind::Election, name, options).unwrap();
    let b = tokio::spawn(async move {
        let won = b.acquire(Duration::from_secs(30)).await.unwrap();
        (won.token, b)
    });
    transfer(&client, name, "b").await;
    if decide {
        a.expect_line("Transfer asked: to b; still the leader: true").await;
        a.expect_line("I resigned").await;
    } else {
        a.expect_line("I lost the leader").await;
    }
    let (second, b) = b.await.unwrap();
    assert!(second > first, "the named candidate leads with a larger token: {second} after {first}");
    assert_eq!(b.leader().map(|l| l.id), Some("b".into()));
    // `run()` campaigned again after stepping down: `a` leads once `b`
    // lets go.
    b.release().await.unwrap();
    let third = token(&a.expect_line("I am the leader").await);
    assert!(third > second, "{third} after {second}");
    a.signal_group("KILL");
}

/// Both cases for one runtime and one language.
macro_rules! on {
    ($module:ident, $provider:expr, $lang:expr) => {
        mod $module {
            #[tokio::test]
            async fn a_leader_steps_down_at_once_and_the_named_candidate_leads() {
                super::a_transfer_hands_over_to_the_named_candidate($provider, $lang, false).await;
            }

            #[tokio::test]
            async fn a_leader_with_on_transfer_is_told_and_resigns() {
                super::a_transfer_hands_over_to_the_named_candidate($provider, $lang, true).await;
            }
        }
    };
}

on!(js_native, testkit::proc::Provider::Native, "-js");
on!(js_on_wasmtime, testkit::proc::Provider::Wasmtime, "-js");
on!(python_native, testkit::proc::Provider::Native, "-py");
on!(python_on_wasmtime, testkit::proc::Provider::Wasmtime, "-py");
