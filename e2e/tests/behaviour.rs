//! One behaviour suite for the WIT contract: the same cases, run by the same
//! test app (`probe.wasm`), against every provider of `metaparticle:sync`:
//!
//! - `native`: the `mpsync` host's own imports (`mpsync run probe.wasm`);
//! - `portable`: the app composed with the `sync-guest` component
//!   (`probe.portable.wasm`) under `mpsync run --no-sync-imports`, which
//!   links nothing of metaparticle:sync;
//! - `wasmtime`: the same composition under the stock `wasmtime run -S
//!   http` (the wasmtime CLI that `tools/` builds with the workspace, in
//!   the build's own folder beside `mpsync`);
//! - `jco`: the same composition transpiled to JavaScript and run on Node
//!   by `jco run` (`.tools/jco`), on the WASI shims of preview2-shim.
//!
//! A case that one provider passes and another fails is a bug in one of
//! them: the WIT promises the same behaviour from both.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mpsync_client::{Client, Kind, Lease, Options, Read};
use testkit::bin;
use testkit::elector::ElectorProcess;
use testkit::proc::{Proc, Provider, app, elector, token};

/// The probe in `mode`, talking to the elector at `url`, under `provider`.
fn probe(provider: Provider, url: &str, mode: &str, args: &[&str]) -> Proc {
    let mut all = vec!["--mode", mode];
    all.extend(args);
    app(provider, &format!("{provider:?}-{mode}"), url, "probe", &all)
}

fn wall_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()
}

/// The number after `key` in `line`.
fn number(line: &str, key: &str) -> u128 {
    let tail = line.split(key).nth(1).unwrap_or_else(|| panic!("no {key:?} in {line:?}"));
    tail.trim_start().split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

/// Every function: try-lock, lock with a timeout, held-by, not-held,
/// unlock, tokens growing, subscribe on acquisition and release, invalid
/// names and options, campaign, resign, leader, is-leader,
/// transfer-requested (none while nothing is asked).
async fn every_function_answers_as_documented(provider: Provider) {
    let elector = elector().await;
    let mut p = probe(provider, &elector.url(), "api", &[]);
    let status = p.wait().await;
    let out = p.output();
    assert!(status.success() && out.contains("probe api ok"), "{out}");
    assert!(out.contains("invalid name: \"Bad_Name\": name contains 'B'"), "{out}");
}

/// Semaphores and read-write locks through `shared-lock`: permits, tokens
/// growing per name, the waiter getting the permit given back, readers
/// beside readers and never beside the writer.
async fn shared_holds_answer_as_documented(provider: Provider) {
    let elector = elector().await;
    let mut p = probe(provider, &elector.url(), "shared", &[]);
    let status = p.wait().await;
    let out = p.output();
    assert!(status.success() && out.contains("probe shared ok"), "{out}");
}

/// An unreachable elector is `unavailable`, naming the URL: at once for
/// try-lock, after one TTL of retries for a blocking call however long it
/// would wait.
async fn an_unreachable_elector_is_unavailable_after_one_ttl(provider: Provider) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut p = probe(provider, &url, "unavailable", &["--ttl-ms", "1000"]);
    assert!(p.wait().await.success(), "{}", p.output());
    let out = p.output();
    assert!(out.contains(&format!("unavailable: elector at {url}/v1/locks/probe")), "{out}");
    let line = out.lines().find(|l| l.contains("lock-within: unavailable after")).unwrap_or_else(|| panic!("{out}"));
    assert!(number(line, "after") >= 1000, "gave up before one TTL: {line}");
}

/// The elector goes away while the app holds a lock: the app learns it
/// through subscribe(), and lease() stops answering no later than the local
/// deadline (80% of the TTL after the last renewal the dead elector could
/// have granted).
async fn an_elector_that_goes_away_is_a_lost_lease_by_the_deadline(provider: Provider) {
    let mut elector = elector().await;
    let mut p = probe(provider, &elector.url(), "gone", &["--ttl-ms", "1000", "--name", "gone"]);
    p.expect_line("I have the lock!").await;
    elector.signal("KILL").unwrap();
    let killed_at = wall_ms();
    let _ = elector.wait().await;
    let line = p.expect_line("lost:").await;
    assert!(p.wait().await.success(), "{}", p.output());
    let last_held = number(&line, "last held at");
    // 800 ms: the local deadline; 50 ms: the signal's delivery after kill().
    assert!(
        last_held <= killed_at + 850,
        "lease() answered {} ms after the elector died: {line}",
        last_held - killed_at
    );
}

/// A candidate that does not lead follows the leader through subscribe():
/// one leader, its resignation, the next one.
async fn a_follower_sees_every_leader_change(provider: Provider) {
    let elector = elector().await;
    let client = Client::new(&elector.url());
    let candidate = |id: &str| {
        let options = Options { ttl: Duration::from_secs(2), holder: id.into(), address: None };
        Lease::new(client.clone(), Kind::Election, "follow", options).unwrap()
    };
    let (x, y) = (candidate("x"), candidate("y"));
    x.try_acquire().await.unwrap();
    let mut p = probe(provider, &elector.url(), "follow", &["--name", "follow", "--until", "y", "--ttl-ms", "2000"]);
    p.expect_line("leader: x").await;
    x.release().await.unwrap();
    y.try_acquire().await.unwrap();
    p.expect_line("leader: y").await;
    assert!(p.wait().await.success(), "{}", p.output());
}

/// Asks the leader of the election `name` to hand over to `to`, as an
/// operator does (`POST /v1/elections/{name}/transfer`).
async fn transfer(client: &Client, name: &str, to: &str) {
    let body = serde_json::json!({ "to": to }).to_string();
    let path = format!("/v1/elections/{name}/transfer");
    let reply = client.send(hyper::Method::POST, &path, Some(body.into())).await.unwrap();
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
}

/// The candidate `id` of the election `name`, campaigning (in a task) for
/// up to 30 s: the named candidate of a transfer.
fn campaigning(client: &Client, name: &str, id: &str) -> tokio::task::JoinHandle<(u64, Lease)> {
    let options = Options { ttl: Duration::from_secs(2), holder: id.into(), address: None };
    let lease = Lease::new(client.clone(), Kind::Election, name, options).unwrap();
    tokio::spawn(async move {
        let won = lease.acquire(Duration::from_secs(30)).await.unwrap();
        (won.token, lease)
    })
}

/// A transfer asked of a leader that left it to its provider (the
/// default): it steps down at once, and the named candidate, campaigning
/// all along, leads with a larger token; the old leader sees it lead.
async fn a_leader_steps_down_at_once_on_a_transfer(provider: Provider) {
    let elector = elector().await;
    let client = Client::new(&elector.url());
    let mut p = probe(provider, &elector.url(), "transfer", &["--name", "handover", "--id", "x", "--ttl-ms", "1500"]);
    let old = token(&p.expect_line("I am the leader").await);
    let y = campaigning(&client, "handover", "y");
    transfer(&client, "handover", "y").await;
    p.expect_line("stepped down").await;
    let (new, y) = y.await.unwrap();
    assert!(new > old, "the named candidate leads with a larger token: {new} after {old}");
    assert_eq!(token(&p.expect_line("leader: y").await), new);
    assert!(p.wait().await.success(), "{}", p.output());
    y.release().await.unwrap();
}

/// A leader that decides itself (`step-down-on-transfer(false)`) sees the
/// request and keeps leading, renewed across two TTLs, the named candidate
/// waiting all along; when it resigns, the named candidate leads.
async fn a_leader_that_decides_leads_until_it_resigns(provider: Provider) {
    let elector = elector().await;
    let client = Client::new(&elector.url());
    let args = ["--name", "decide", "--id", "x", "--ttl-ms", "1500", "--decide"];
    let mut p = probe(provider, &elector.url(), "transfer", &args);
    let old = token(&p.expect_line("I am the leader").await);
    let y = campaigning(&client, "decide", "y");
    transfer(&client, "decide", "y").await;
    p.expect_line("transfer asked: to y").await;
    p.expect_line("still leading after two TTLs").await;
    match client.read(Kind::Election, "decide", None).await.unwrap() {
        Read::Held(view) => assert_eq!((view.holder.as_str(), view.token), ("x", old)),
        free => panic!("the leader that decides no longer leads: {free:?}"),
    }
    assert!(!y.is_finished(), "the named candidate led before the leader resigned");
    p.send_line("resign").await;
    p.expect_line("resigned").await;
    let (new, y) = y.await.unwrap();
    assert!(new > old, "the named candidate leads with a larger token: {new} after {old}");
    assert_eq!(token(&p.expect_line("leader: y").await), new);
    assert!(p.wait().await.success(), "{}", p.output());
    y.release().await.unwrap();
}

/// An unlock the elector cannot confirm (it does not answer) is reported
/// `unavailable`, not success; the lock is given up here all the same.
async fn an_unlock_the_elector_did_not_confirm_is_unavailable(provider: Provider) {
    let elector = elector().await;
    let mut p = probe(provider, &elector.url(), "unconfirmed", &["--ttl-ms", "5000", "--name", "unconfirmed"]);
    p.expect_line("I have the lock!").await;
    // Frozen, not killed: a killed elector closes the app's session, and
    // the app then knows at once that it lost the lock.
    elector.signal("STOP").unwrap();
    p.send_line("unlock").await;
    let line = p.expect_line("unlock:").await;
    assert!(line.contains("did not confirm the release"), "{line}");
    assert!(p.wait().await.success(), "{}", p.output());
}

/// A blocking call whose long-polls the elector refuses (at its
/// `--max-long-polls`) backs off; meanwhile the app's other lock (TTL 1 s,
/// renewed every third of it) must stay held: the backoff's pauses (at
/// least the elector's `retry-after: 1`) are longer than that lock's TTL.
async fn a_lock_stays_held_while_another_call_backs_off(provider: Provider) {
    let elector = ElectorProcess::spawn(bin("elector"), &["--log", "error", "--max-long-polls", "1"]).await.unwrap();
    let client = Client::new(&elector.url());
    let parked = testkit::proc::park_the_only_long_poll(&elector).await;
    let options = Options { ttl: Duration::from_secs(60), holder: "other".into(), address: None };
    let other = Lease::new(client.clone(), Kind::Lock, "backoff-wanted", options).unwrap();
    other.try_acquire().await.unwrap();
    let mut p = probe(provider, &elector.url(), "backoff", &["--name", "backoff", "--ttl-ms", "1000"]);
    assert!(p.wait().await.success(), "{}", p.output());
    assert!(p.output().contains("still held after the backoff"), "{}", p.output());
    parked.abort();
}

/// What the client cannot check and the elector's store refuses (a name
/// too long for the Kubernetes store's object names, a TTL above the etcd
/// store's longest lease) is `invalid-name` / `invalid-option`, from
/// try-lock and from a blocking lock-within alike: a 400 is not an outage
/// to retry and report `unavailable` a TTL later.
async fn a_refusal_by_the_store_is_invalid_not_unavailable(provider: Provider) {
    let api = testkit::LeaseApi::start().await.unwrap();
    let dir = testkit::temp_dir("refused").unwrap();
    let kubeconfig = api.write_kubeconfig(&dir, "default").unwrap();
    let kubeconfig = kubeconfig.display().to_string();
    let kube =
        ElectorProcess::spawn(bin("elector"), &["--log", "warn", "--store", "kubernetes", "--kubeconfig", &kubeconfig])
            .await
            .unwrap();
    let long = "n".repeat(253);
    let mut p = probe(provider, &kube.url(), "refused", &["--name", &long, "--ttl-ms", "1000"]);
    assert!(p.wait().await.success(), "{}", p.output());
    let out = p.output();
    for call in ["try-lock", "lock-within"] {
        assert!(out.contains(&format!("{call}: invalid name: ")) && out.contains("kubernetes"), "{out}");
    }

    let etcd = testkit::Etcd::start().await.unwrap();
    let endpoint = etcd.endpoint();
    let args =
        ["--log", "warn", "--store", "etcd", "--etcd-endpoints", &endpoint, "--etcd-lease-ttl", "2s", "--ttl", "1s"];
    let short = ElectorProcess::spawn(bin("elector"), &args).await.unwrap();
    let mut p = probe(provider, &short.url(), "refused", &["--name", "refused", "--ttl-ms", "1500"]);
    assert!(p.wait().await.success(), "{}", p.output());
    let out = p.output();
    for call in ["try-lock", "lock-within"] {
        assert!(out.contains(&format!("{call}: invalid option: ")) && out.contains("ttl"), "{out}");
    }
}

macro_rules! suite {
    ($provider:ident, $variant:expr $(, $ignore:meta)?) => {
        mod $provider {
            #[tokio::test]
            $(#[$ignore])?
            async fn every_function_answers_as_documented() {
                super::every_function_answers_as_documented($variant).await;
            }

            #[tokio::test]
            $(#[$ignore])?
            async fn shared_holds_answer_as_documented() {
                super::shared_holds_answer_as_documented($variant).await;
            }

            #[tokio::test]
            $(#[$ignore])?
            async fn an_unreachable_elector_is_unavailable_after_one_ttl() {
                super::an_unreachable_elector_is_unavailable_after_one_ttl($variant).await;
            }

            #[tokio::test]
            $(#[$ignore])?
            async fn an_elector_that_goes_away_is_a_lost_lease_by_the_deadline() {
                super::an_elector_that_goes_away_is_a_lost_lease_by_the_deadline($variant).await;
            }

            #[tokio::test]
            $(#[$ignore])?
            async fn an_unlock_the_elector_did_not_confirm_is_unavailable() {
                super::an_unlock_the_elector_did_not_confirm_is_unavailable($variant).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$ignore])?
            async fn a_lock_stays_held_while_another_call_backs_off() {
                super::a_lock_stays_held_while_another_call_backs_off($variant).await;
            }

            #[tokio::test]
            $(#[$ignore])?
            async fn a_refusal_by_the_store_is_invalid_not_unavailable() {
                super::a_refusal_by_the_store_is_invalid_not_unavailable($variant).await;
            }

            #[tokio::test]
            $(#[$ignore])?
            async fn a_follower_sees_every_leader_change() {
                super::a_follower_sees_every_leader_change($variant).await;
            }

            #[tokio::test]
            $(#[$ignore])?
            async fn a_leader_steps_down_at_once_on_a_transfer() {
                super::a_leader_steps_down_at_once_on_a_transfer($variant).await;
            }

            #[tokio::test]
            $(#[$ignore])?
            async fn a_leader_that_decides_leads_until_it_resigns() {
                super::a_leader_that_decides_leads_until_it_resigns($variant).await;
            }
        }
    };
}

suite!(native, testkit::proc::Provider::Native);
suite!(portable, testkit::proc::Provider::Portable);
suite!(wasmtime, testkit::proc::Provider::Wasmtime);
suite!(jco, testkit::proc::Provider::Jco);
