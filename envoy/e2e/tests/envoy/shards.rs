//! Sharded: an election per shard, chosen by a header; many of them through
//! one watch per worker.

use std::time::Duration;

use envoy_e2e::{Envoy, HttpClient, Upstream, config, exact_balance};
use mpsync_client::{Claimed, Client};
use mpsync_core::Kind;
use mpsync_core::wire::AcquireRequest;
use testkit::elector::ElectorProcess;
use testkit::proc::{PATIENCE, elector, metric};

use super::{led_by, replica};

#[tokio::test]
async fn each_shard_reaches_its_own_leader() {
    let elector = elector().await;
    let url = elector.url();
    let filter = r#"{"elector_cluster":"elector","shard":{"header":"x-shard","template":"orders-{shard}"},"allow":["127.0.0.0/8"],"hold_ms":5000}"#;
    let envoy = Envoy::start(&config(filter, elector.addr(), None)).await;
    let one = replica(&url, "orders-1", "one", &[]).await;
    let two = replica(&url, "orders-2", "two", &[]).await;
    led_by(&url, "orders-1", &["one"]).await;
    led_by(&url, "orders-2", &["two"]).await;
    let http = HttpClient::new();
    for _ in 0..5 {
        assert!(http.get(envoy.listener, "/", &[("x-shard", "1")]).await.body.starts_with("one "));
        assert!(http.get(envoy.listener, "/", &[("x-shard", "2")]).await.body.starts_with("two "));
    }
    assert_eq!((one.upstream.hits(), two.upstream.hits()), (5, 5));
    let missing = http.get(envoy.listener, "/", &[]).await;
    assert_eq!(missing.status, 400);
    assert!(missing.body.contains("no x-shard header"), "{missing:?}");
    let bad = http.get(envoy.listener, "/", &[("x-shard", "A_B")]).await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn shards_past_max_elections_are_refused_not_watched() {
    let elector = elector().await;
    let url = elector.url();
    let filter = r#"{"elector_cluster":"elector","shard":{"header":"x-shard","template":"cap-{shard}"},"allow":["127.0.0.0/8"],"hold_ms":5000,"max_elections":2}"#;
    // One worker: the limit is per worker.
    let envoy = Envoy::start_on(&config(filter, elector.addr(), None), 1, None).await;
    let _one = replica(&url, "cap-1", "one", &[]).await;
    let _two = replica(&url, "cap-2", "two", &[]).await;
    let _three = replica(&url, "cap-3", "three", &[]).await;
    for (shard, id) in [("1", "one"), ("2", "two")] {
        led_by(&url, &format!("cap-{shard}"), &[id]).await;
        let answer = HttpClient::new().get(envoy.listener, "/", &[("x-shard", shard)]).await;
        assert!(answer.body.starts_with(&format!("{id} ")), "{answer:?}");
    }
    led_by(&url, "cap-3", &["three"]).await;
    let refused = HttpClient::new().get(envoy.listener, "/", &[("x-shard", "3")]).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.body.contains("max_elections (2)"), "{refused:?}");
    assert_eq!(envoy.stat("too_many_elections").await, 1);
    // The two it watches still route.
    assert!(HttpClient::new().get(envoy.listener, "/", &[("x-shard", "2")]).await.body.starts_with("two "));
}

/// Watches parked at the elector, the names they follow, and Envoy's
/// requests in flight to the elector.
async fn parked(elector: &ElectorProcess, envoy: &Envoy) -> (u64, u64, u64) {
    let watches = metric(elector, "mpsync_watchers").await;
    let names = metric(elector, "mpsync_watched_names").await;
    let in_flight = envoy.envoy_stat("^cluster.elector.upstream_rq_active$").await;
    (watches, names, in_flight)
}

/// Waits until [`parked`] shows `settled`; fails with what it shows if it
/// does not within `PATIENCE`.
async fn settles(elector: &ElectorProcess, envoy: &Envoy, settled: (u64, u64, u64)) {
    let wait = async {
        while parked(elector, envoy).await != settled {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(PATIENCE, wait).await.is_err() {
        let now = parked(elector, envoy).await;
        panic!("not one watch per worker: (watches, names, in flight) = {now:?}, not {settled:?}");
    }
}

/// Claims `name` for `holder` at `upstream`'s address, for an hour.
async fn lead(client: &Client, name: &str, holder: &str, upstream: &Upstream) -> u64 {
    let request = AcquireRequest::new(holder, Duration::from_secs(3600), None, Some(&upstream.addr.to_string()));
    match client.claim(Kind::Election, name, &request).await.unwrap() {
        Claimed::Granted(lease) => lease.token,
        other => panic!("{name}: {other:?}"),
    }
}

/// Elects leader "a" at `upstream` in shards `PREFIX-0` … `PREFIX-{n-1}`;
/// their tokens.
async fn lead_shards(client: &Client, prefix: &str, n: usize, upstream: &Upstream) -> Vec<u64> {
    let mut tokens = Vec::new();
    for shard in 0..n {
        tokens.push(lead(client, &format!("{prefix}-{shard}"), "a", upstream).await);
    }
    tokens
}

/// An Envoy gateway with two workers (connections balanced exactly) and
/// the filter sharded by `x-shard` into `PREFIX-{shard}`. Watches last as
/// long as the elector lets them: one the filter left behind would still
/// be parked at the end of a test.
async fn sharded_gateway(prefix: &str, elector: std::net::SocketAddr) -> Envoy {
    let filter = format!(
        r#"{{"elector_cluster":"elector","shard":{{"header":"x-shard","template":"{prefix}-{{shard}}"}},"allow":["127.0.0.0/8"],"hold_ms":5000,"poll_timeout_ms":300000}}"#
    );
    Envoy::start(&exact_balance(&config(&filter, elector, None))).await
}

/// Whether a shard's first answer must come from the upstream named, or one
/// soon after.
#[derive(Clone, Copy)]
enum Reached {
    AtOnce,
    Soon,
}

/// Sends a request for every shard `0..shards` on each of `clients` (one
/// task each), until it is answered by `upstream` (its echo starts with
/// it).
async fn visit_every_shard(
    clients: &[HttpClient],
    listener: std::net::SocketAddr,
    shards: usize,
    upstream: &'static str,
    reached: Reached,
) {
    let visits: Vec<_> = clients
        .iter()
        .map(|http| {
            let http = http.clone();
            tokio::spawn(async move {
                for shard in 0..shards {
                    let header = [("x-shard", &shard.to_string()[..])];
                    let answer = http.get(listener, "/", &header).await;
                    match reached {
                        Reached::AtOnce => assert!(answer.body.starts_with(upstream), "shard {shard}: {answer:?}"),
                        Reached::Soon if answer.body.starts_with(upstream) => {}
                        Reached::Soon => tokio::time::timeout(PATIENCE, async {
                            while !http.get(listener, "/", &header).await.body.starts_with(upstream) {}
                        })
                        .await
                        .unwrap_or_else(|_| panic!("shard {shard} never reached {upstream}")),
                    }
                }
            })
        })
        .collect();
    for visit in visits {
        visit.await.unwrap();
    }
}

/// Many shards through one Envoy with two workers: each worker follows
/// every shard its requests used in one watch, so the elector holds one
/// watch per worker (every shard in each), not a long-poll per shard and
/// worker; and a change of leader in any shard reaches the traffic of
/// both workers.
#[tokio::test]
async fn many_shards_cost_the_elector_one_watch_per_worker_and_every_change_reaches_traffic() {
    const SHARDS: usize = 200;
    const WORKERS: u64 = 2;
    let elector = elector().await;
    let client = Client::new(&elector.url());
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let tokens = lead_shards(&client, "many", SHARDS, &a).await;
    let envoy = sharded_gateway("many", elector.addr()).await;
    // Four clients, a connection each, two per worker; each visits every
    // shard, so each worker follows all of them.
    let clients: Vec<HttpClient> = (0..4).map(|_| HttpClient::new()).collect();
    visit_every_shard(&clients, envoy.listener, SHARDS, "a ", Reached::AtOnce).await;
    for worker in 0..WORKERS {
        let connections = envoy.envoy_stat(&format!("^listener.*worker_{worker}.downstream_cx_total$")).await;
        assert_eq!(connections, 2, "worker {worker}");
    }

    // Settled: one watch per worker, each following every shard, and
    // nothing else parked at the elector or in flight from Envoy to it.
    let settled = (WORKERS, WORKERS * SHARDS as u64, WORKERS);
    settles(&elector, &envoy, settled).await;

    // Hand every tenth shard over to b: the traffic of every connection
    // (both workers) follows; the other shards stay with a.
    let moved: Vec<usize> = (0..SHARDS).step_by(10).collect();
    for &shard in &moved {
        let name = format!("many-{shard}");
        assert!(client.release(Kind::Election, &name, "a", tokens[shard]).await.unwrap());
        lead(&client, &name, "b", &b).await;
    }
    for http in &clients {
        for &shard in &moved {
            let header = [("x-shard", &shard.to_string()[..])];
            tokio::time::timeout(PATIENCE, async {
                while !http.get(envoy.listener, "/", &header).await.body.starts_with("b ") {}
            })
            .await
            .unwrap_or_else(|_| panic!("shard {shard} never reached b"));
        }
        assert!(http.get(envoy.listener, "/", &[("x-shard", "1")]).await.body.starts_with("a "));
    }
    settles(&elector, &envoy, settled).await;
    // The elector keeps each worker's set between its watches: a watch
    // after a change sends only what changed.
    assert_eq!(metric(&elector, "mpsync_kept_watch_names").await, WORKERS * SHARDS as u64);
    // Each worker's watches (every one that replaced a smaller one, and
    // those the hand-overs answered) went over one HTTP/2 connection: over
    // HTTP/1.1 a replacing watch needs a second one (9 in all, measured).
    // Fewer than two per worker, so that a reconnect does not fail this.
    let opened = envoy.envoy_stat("^cluster.elector.upstream_cx_total$").await;
    assert!(opened < 2 * WORKERS, "Envoy opened {opened} connections to the elector");
}

/// An elector that restarts (cleanly, on the memory store: same state
/// file) has lost the workers' kept sets: each worker's next watch sends
/// its whole set again, the leaders elected after the restart reach the
/// traffic of both workers, and the new elector keeps the sets again.
#[tokio::test]
async fn after_an_elector_restart_each_worker_sends_its_whole_set_again() {
    const SHARDS: usize = 20;
    const WORKERS: u64 = 2;
    let state = testkit::temp_dir("shards-restart").unwrap();
    let state_file = state.join("elector.json");
    let args = ["--log", "warn", "--state-file", state_file.to_str().unwrap()];
    let mut elector = ElectorProcess::spawn(testkit::bin("elector"), &args).await.unwrap();
    let addr = elector.addr();
    let client = Client::new(&elector.url());
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let tokens = lead_shards(&client, "again", SHARDS, &a).await;
    let envoy = sharded_gateway("again", addr).await;
    let clients: Vec<HttpClient> = (0..4).map(|_| HttpClient::new()).collect();
    visit_every_shard(&clients, envoy.listener, SHARDS, "a ", Reached::AtOnce).await;
    let settled = (WORKERS, WORKERS * SHARDS as u64, WORKERS);
    settles(&elector, &envoy, settled).await;
    assert_eq!(metric(&elector, "mpsync_kept_watch_names").await, WORKERS * SHARDS as u64);
    // Every leader resigns (no lease live: the restart has nothing to wait
    // out), and the elector stops cleanly and starts again.
    for (shard, token) in tokens.into_iter().enumerate() {
        assert!(client.release(Kind::Election, &format!("again-{shard}"), "a", token).await.unwrap());
    }
    elector.signal("TERM").unwrap();
    elector.wait().await.unwrap();
    let elector = ElectorProcess::spawn_on(testkit::bin("elector"), &args, addr).await.unwrap();
    for shard in 0..SHARDS {
        lead(&client, &format!("again-{shard}"), "b", &b).await;
    }
    visit_every_shard(&clients, envoy.listener, SHARDS, "b ", Reached::Soon).await;
    settles(&elector, &envoy, settled).await;
    assert_eq!(metric(&elector, "mpsync_kept_watch_names").await, WORKERS * SHARDS as u64);
    drop(elector);
    std::fs::remove_dir_all(&state).ok();
}

/// A shard key is client input, and a header may carry any bytes: one that
/// is not text is refused with 400, and the filter goes on routing.
#[tokio::test]
async fn a_shard_header_that_is_not_text_is_refused() {
    let elector = elector().await;
    let client = Client::new(&elector.url());
    let a = Upstream::start("a").await;
    lead(&client, "bytes-1", "a", &a).await;
    let filter = r#"{"elector_cluster":"elector","shard":{"header":"x-shard","template":"bytes-{shard}"},"allow":["127.0.0.0/8"],"hold_ms":5000}"#;
    // One worker: the request that is refused and the next share it.
    let envoy = Envoy::start_on(&config(filter, elector.addr(), None), 1, None).await;
    let http = HttpClient::new();
    let refused = http.get_bytes(envoy.listener, "/", &[("x-shard", &b"1\xff"[..])]).await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.body.contains("x-shard header is not text"), "{refused:?}");
    assert!(http.get(envoy.listener, "/", &[("x-shard", "1")]).await.body.starts_with("a "));
}
