//! The Envoy leader filter, end to end: a real Envoy (V8) with the filter, a
//! real elector, replicas that campaign through the elector (the election
//! example under `mpsync run`) and answer with their own id.

#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::process::Stdio;

use envoy_e2e::{Envoy, HttpClient, Upstream, config, envoy_bin};
use mpsync_client::{Client, Read};
use mpsync_core::Kind;
use testkit::proc::{PATIENCE, Proc, elector, metric};

/// Sharded: an election per shard, and many of them.
#[path = "envoy/shards.rs"]
mod shards;

/// A replica: an upstream server, and `mpsync run election.wasm`
/// campaigning for it with its address.
struct Replica {
    upstream: Upstream,
    campaign: Proc,
}

async fn replica(url: &str, election: &str, id: &str, extra: &[&str]) -> Replica {
    let upstream = Upstream::start(id).await;
    let addr = upstream.addr.to_string();
    let mut args = vec!["--name", election, "--id", id, "--address", &addr, "--ttl-ms", "2000"];
    args.extend_from_slice(extra);
    let campaign = Proc::run(id, url, &[], "election.wasm", &args);
    Replica { upstream, campaign }
}

fn gateway(election: &str, hold_ms: u64, allow: &str) -> String {
    format!(r#"{{"elector_cluster":"elector","election":"{election}","allow":["{allow}"],"hold_ms":{hold_ms}}}"#)
}

/// Long-polls the elector until `election` is led by someone in `ids`.
async fn led_by(url: &str, election: &str, ids: &[&str]) -> (String, u64) {
    let client = Client::new(url);
    let wait = async {
        let mut version = 0;
        loop {
            match client.read(Kind::Election, election, Some((version, PATIENCE))).await.unwrap() {
                Read::Held(l) if ids.contains(&l.holder.as_str()) => return (l.holder, l.token),
                Read::Held(l) => version = l.version,
                Read::Free { version: v } => version = v,
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait).await.unwrap_or_else(|_| panic!("{election} never led by any of {ids:?}"))
}

/// Sends requests until one is answered by `id`; returns how many it took.
async fn until_served_by(http: &HttpClient, envoy: SocketAddr, id: &str) -> usize {
    tokio::time::timeout(PATIENCE, async {
        for n in 1.. {
            let a = http.get(envoy, "/", &[]).await;
            if a.status == 200 && a.body.starts_with(&format!("{id} ")) {
                return n;
            }
        }
        unreachable!()
    })
    .await
    .unwrap_or_else(|_| panic!("no request reached {id}"))
}

#[tokio::test]
async fn every_request_goes_to_the_leader_with_its_id_and_token() {
    let elector = elector().await;
    let url = elector.url();
    let envoy = Envoy::start(&config(&gateway("web", 5000, "127.0.0.0/8"), elector.addr(), None)).await;
    let a = replica(&url, "web", "a", &[]).await;
    let (leader, token) = led_by(&url, "web", &["a"]).await;
    let b = replica(&url, "web", "b", &[]).await;
    let c = replica(&url, "web", "c", &[]).await;
    let http = HttpClient::new();
    for _ in 0..30 {
        let answer = http.get(envoy.listener, "/work", &[]).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body, format!("{leader} leader-id={leader} leader-token={token}"));
    }
    assert_eq!((a.upstream.hits(), b.upstream.hits(), c.upstream.hits()), (30, 0, 0));
    assert_eq!(envoy.stat_reaching("routed", 30).await, 30);
    drop((b, c));
}

#[tokio::test]
async fn leader_headers_can_be_renamed_or_turned_off() {
    let elector = elector().await;
    let url = elector.url();
    let filter = r#"{"elector_cluster":"elector","election":"quiet","allow":["127.0.0.0/8"],"headers":{"leader_id":null,"leader_token":"x-leader-token"}}"#;
    let envoy = Envoy::start(&config(filter, elector.addr(), None)).await;
    let _a = replica(&url, "quiet", "a", &[]).await;
    let (_, token) = led_by(&url, "quiet", &["a"]).await;
    let answer = HttpClient::new().get(envoy.listener, "/", &[]).await;
    assert_eq!(answer.body, format!("a leader-id=- leader-token={token}"), "{answer:?}");
}

#[tokio::test]
async fn traffic_follows_a_resignation_and_a_killed_leader_at_once() {
    let elector = elector().await;
    let url = elector.url();
    let envoy = Envoy::start(&config(&gateway("web", 5000, "127.0.0.0/8"), elector.addr(), None)).await;
    let http = HttpClient::new();
    let mut first = replica(&url, "web", "first", &["--resign-after-ms", "1500"]).await;
    led_by(&url, "web", &["first"]).await;
    until_served_by(&http, envoy.listener, "first").await;
    let others = [replica(&url, "web", "second", &[]).await, replica(&url, "web", "third", &[]).await];

    // Resign: the next leader gets the traffic; the elector saw a release.
    first.campaign.expect_line("I resigned").await;
    let (next, _) = led_by(&url, "web", &["second", "third"]).await;
    until_served_by(&http, envoy.listener, &next).await;
    assert_eq!(metric(&elector, "mpsync_expiries_total{kind=\"election\"}").await, 0);
    let before = first.upstream.hits();
    for _ in 0..10 {
        assert!(http.get(envoy.listener, "/", &[]).await.body.starts_with(&format!("{next} ")));
    }
    assert_eq!(first.upstream.hits(), before, "nothing for the leader that resigned");

    // SIGKILL the new leader's campaign: no release, but its session with
    // the elector closes with the process, and the elector releases the
    // lease at once (not when the 2 s lease runs out); traffic follows.
    let leading = others.iter().position(|r| r.upstream.id == next).unwrap();
    others[leading].campaign.signal("KILL");
    let survivor = others[1 - leading].upstream.id.clone();
    led_by(&url, "web", &[&survivor]).await;
    until_served_by(&http, envoy.listener, &survivor).await;
    assert_eq!(metric(&elector, "mpsync_session_releases_total{kind=\"election\"}").await, 1);
    assert_eq!(metric(&elector, "mpsync_expiries_total{kind=\"election\"}").await, 0);
    assert!(envoy.stat("leader_changes").await >= 3);
}

#[tokio::test]
async fn requests_without_a_leader_are_held_until_one_appears_then_refused_past_the_hold() {
    let elector = elector().await;
    let url = elector.url();
    let envoy = Envoy::start(&config(&gateway("held", 20_000, "127.0.0.0/8"), elector.addr(), None)).await;
    let http = HttpClient::new();
    let waiting: Vec<_> = (0..5)
        .map(|_| {
            let (http, listener) = (http.clone(), envoy.listener);
            tokio::spawn(async move { http.get(listener, "/", &[]).await })
        })
        .collect();
    // All five are parked in Envoy before a leader exists.
    envoy.stat_reaching("held", 5).await;
    let late = replica(&url, "held", "late", &[]).await;
    for w in waiting {
        let answer = w.await.unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(answer.body.starts_with("late "));
    }
    assert_eq!(envoy.stat("released_after_hold").await, 5);
    assert_eq!(late.upstream.hits(), 5);

    // Past the hold time with no leader: 503 with retry-after.
    let short = Envoy::start(&config(&gateway("nobody", 300, "127.0.0.0/8"), elector.addr(), None)).await;
    let answer = http.get(short.listener, "/", &[]).await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.headers.get("retry-after").map(String::as_str), Some("1"));
    assert!(answer.body.contains("no leader for election nobody"));
    assert_eq!(short.stat("no_leader").await, 1);
}

#[tokio::test]
async fn a_client_supplied_original_dst_host_never_decides_the_route() {
    let elector = elector().await;
    let url = elector.url();
    let envoy = Envoy::start(&config(&gateway("web", 300, "127.0.0.0/8"), elector.addr(), None)).await;
    let decoy = Upstream::start("decoy").await;
    let header = [("x-envoy-original-dst-host", &decoy.addr.to_string()[..])];
    let http = HttpClient::new();
    // No leader yet: held, then refused; never sent to the decoy.
    assert_eq!(http.get(envoy.listener, "/", &header).await.status, 503);
    let leader = replica(&url, "web", "leader", &[]).await;
    led_by(&url, "web", &["leader"]).await;
    for _ in 0..10 {
        let answer = http.get(envoy.listener, "/", &header).await;
        assert!(answer.body.starts_with("leader "), "{answer:?}");
    }
    assert_eq!(decoy.hits(), 0);
    assert_eq!(leader.upstream.hits(), 10);
}

#[tokio::test]
async fn a_leader_outside_the_allowlist_gets_no_traffic() {
    let elector = elector().await;
    let url = elector.url();
    let envoy = Envoy::start(&config(&gateway("web", 300, "10.0.0.0/8"), elector.addr(), None)).await;
    let outsider = replica(&url, "web", "outsider", &[]).await;
    led_by(&url, "web", &["outsider"]).await;
    let http = HttpClient::new();
    let answer = tokio::time::timeout(PATIENCE, async {
        loop {
            let a = http.get(envoy.listener, "/", &[]).await;
            if a.body.contains("not allowed") {
                return a;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(answer.status, 503);
    assert_eq!(outsider.upstream.hits(), 0);
    assert!(envoy.stat("rejected_address").await >= 1);
    assert!(envoy.log().contains("is not allowed; refusing"));
}

#[tokio::test]
async fn a_sidecar_passes_on_the_leader_and_refuses_on_a_follower() {
    let elector = elector().await;
    let url = elector.url();
    let me = replica(&url, "web", "me", &[]).await;
    let (_, token) = led_by(&url, "web", &["me"]).await;
    let filter = format!(
        r#"{{"elector_cluster":"elector","election":"web","mode":"sidecar","self_address":"{}","allow":["127.0.0.0/8"],"hold_ms":3000}}"#,
        me.upstream.addr
    );
    let envoy = Envoy::start(&config(&filter, elector.addr(), Some(me.upstream.addr))).await;
    let http = HttpClient::new();
    let answer = http.get(envoy.listener, "/", &[]).await;
    assert_eq!(answer.body, format!("me leader-id=me leader-token={token}"));
    // `me` dies; `other` leads once me's lease runs out; this sidecar,
    // still in front of me's replica, refuses and names the leader.
    let _other = replica(&url, "web", "other", &[]).await;
    me.campaign.signal("KILL");
    led_by(&url, "web", &["other"]).await;
    let refused = tokio::time::timeout(PATIENCE, async {
        loop {
            let a = http.get(envoy.listener, "/", &[]).await;
            if a.status == 503 {
                return a;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(refused.headers.get("x-leader-id").map(String::as_str), Some("other"));
}

#[tokio::test]
async fn a_forwarding_sidecar_sends_follower_traffic_to_the_leader() {
    let elector = elector().await;
    let url = elector.url();
    let me = replica(&url, "web", "me", &[]).await;
    let (_, token) = led_by(&url, "web", &["me"]).await;
    let other = Upstream::start("other").await;
    // This sidecar fronts `other`, a follower; the route is ORIGINAL_DST.
    let filter = format!(
        r#"{{"elector_cluster":"elector","election":"web","mode":"sidecar","self_address":"{}","on_follower":"forward","allow":["127.0.0.0/8"]}}"#,
        other.addr
    );
    let envoy = Envoy::start(&config(&filter, elector.addr(), None)).await;
    let http = HttpClient::new();
    let answer = http.get(envoy.listener, "/", &[]).await;
    assert_eq!(answer.body, format!("me leader-id=me leader-token={token}"));
    assert_eq!(other.hits(), 0);
    // A sidecar on the leader sends its traffic to its own replica.
    let filter = format!(
        r#"{{"elector_cluster":"elector","election":"web","mode":"sidecar","self_address":"{}","on_follower":"forward","allow":["127.0.0.0/8"]}}"#,
        me.upstream.addr
    );
    let on_leader = Envoy::start(&config(&filter, elector.addr(), None)).await;
    assert!(http.get(on_leader.listener, "/", &[]).await.body.starts_with("me "));
}

#[tokio::test]
async fn invalid_filter_configurations_are_refused_with_a_clear_message() {
    let elector: SocketAddr = "127.0.0.1:13131".parse().unwrap();
    let cases = [
        ("", "the configuration is empty"),
        ("{", "the configuration is not valid"),
        (r#"{"election":"web","allow":["127.0.0.0/8"]}"#, "missing field `elector_cluster`"),
        (r#"{"elector_cluster":"e","election":"web"}"#, "missing field `allow`"),
        (r#"{"elector_cluster":"e","election":"web","allow":[]}"#, "allow must list the networks"),
        (r#"{"elector_cluster":"e","allow":["127.0.0.0/8"]}"#, "set election"),
        (r#"{"elector_cluster":"e","election":"Web","allow":["127.0.0.0/8"]}"#, "election \"Web\""),
        (r#"{"elector_cluster":"e","election":"web","allow":["nowhere"]}"#, "allow rule \"nowhere\""),
        (r#"{"elector_cluster":"e","election":"web","allow":["10.0.0.0/8"],"mode":"mesh"}"#, "mode \"mesh\""),
        (r#"{"elector_cluster":"e","election":"web","allow":["10.0.0.0/8"],"mode":"sidecar"}"#, "needs self_address"),
        (
            r#"{"elector_cluster":"e","shard":{"header":"x-s","template":"orders"},"allow":["10.0.0.0/8"]}"#,
            "must contain {shard}",
        ),
        (r#"{"elector_cluster":"e","election":"web","allow":["10.0.0.0/8"],"hold_ms":999999}"#, "hold_ms is 999999"),
        (r#"{"elector_cluster":"e","election":"web","allow":["10.0.0.0/8"],"colour":"red"}"#, "unknown field `colour`"),
    ];
    let dir = std::env::temp_dir().join(format!("mpsync-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, (json, expected)) in cases.iter().enumerate() {
        let file = dir.join(format!("{i}.yaml"));
        std::fs::write(&file, config(json, elector, None)).unwrap();
        let out = tokio::process::Command::new(envoy_bin())
            .args(["--mode", "validate", "-c", &file.display().to_string()])
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{json}: accepted");
        assert!(log.contains("leader filter configuration refused") && log.contains(expected), "{json}: {log}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn every_example_configuration_validates() {
    let root = testkit::workspace();
    let examples = root.join("envoy/examples");
    // The EDS example's endpoint file must exist: an empty one, in a
    // folder of this test's own.
    let eds = testkit::temp_dir("example-eds").unwrap();
    std::fs::write(eds.join("web.json"), r#"{"version_info":"0","resources":[]}"#).unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            // The examples name the filter relative to the repository root.
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace(
                    "target/wasm32-wasip1/release/leader_filter.wasm",
                    &envoy_e2e::filter_wasm().display().to_string(),
                )
                .replace("/tmp/mpsync-eds", &eds.display().to_string());
            let file = std::env::temp_dir().join(format!("mpsync-example-{}-{n}.yaml", std::process::id()));
            std::fs::write(&file, text).unwrap();
            let out =
                std::process::Command::new(envoy_bin()).args(["--mode", "validate", "-c"]).arg(&file).output().unwrap();
            std::fs::remove_file(&file).unwrap();
            assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
            n += 1;
        }
    }
    assert!(n >= 4, "only {n} example configurations");
    std::fs::remove_dir_all(eds).unwrap();
}

/// `make demo`'s third part (`envoy-demo`), as the demo runs it: replica-1
/// leads, resigns, the next leader's sidecar is killed, the last one takes
/// over; the client saw all three in that order with growing tokens, and no
/// request failed.
#[tokio::test]
async fn the_demo_shows_envoy_following_the_leader_without_a_failed_request() {
    let elector = elector().await;
    let url = elector.url();
    let output = tokio::process::Command::new(testkit::bin("envoy-demo"))
        .args(["--elector", &url, "--mpsync"])
        .arg(testkit::bin("mpsync"))
        .args(["--ttl-ms", "1000"])
        .stderr(Stdio::inherit())
        .output();
    let output = tokio::time::timeout(PATIENCE * 3, output).await.expect("the demo did not end").unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    // The client's first line for each replica, with its token.
    let mut seen: Vec<(String, u64)> = Vec::new();
    for line in text.lines().filter(|l| l.contains("[client   ] 200 from ")) {
        let rest = line.split("200 from ").nth(1).unwrap();
        let replica = rest.split_whitespace().next().unwrap().to_owned();
        let token: u64 = rest.split("fencing token ").nth(1).unwrap().split(')').next().unwrap().parse().unwrap();
        if seen.last().is_none_or(|(r, _)| *r != replica) {
            seen.push((replica, token));
        }
    }
    let order: Vec<&str> = seen.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(order.len(), 3, "three leaders in turn: {text}");
    assert_eq!(order[0], "replica-1", "{text}");
    assert!(seen.windows(2).all(|w| w[0].1 < w[1].1), "tokens grow: {seen:?}");
    assert!(text.contains(" 0 failed;"), "{text}");
    assert!(!text.lines().any(|l| l.contains("[client   ] 5")), "no 5xx answer: {text}");
}

/// The EDS path: no filter; `mpsync leader --watch --envoy-eds` keeps the
/// cluster's endpoint file holding only the leader, and the route stamps
/// its id and token from the endpoint's metadata. No leader: 503 at once.
/// Traffic follows a resignation and a killed leader, and a reader that
/// reads the file the whole time never finds it half-written.
#[tokio::test]
async fn the_eds_file_routes_to_the_leader_without_a_filter() {
    let elector = elector().await;
    let url = elector.url();
    let dir = testkit::temp_dir("eds").unwrap();
    let file = dir.join("web.json");
    let mut watch = envoy_e2e::eds_watch(&url, "web", &file);
    watch.expect_line("none").await;

    // Every version of the file a reader can see parses whole.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = std::thread::spawn({
        let (file, stop) = (file.clone(), stop.clone());
        move || {
            let (mut whole, mut torn) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let bytes = std::fs::read(&file).unwrap();
                match serde_json::from_slice::<serde_json::Value>(&bytes) {
                    Ok(_) => whole += 1,
                    Err(e) => torn.push(format!("{e}: {}", String::from_utf8_lossy(&bytes))),
                }
            }
            (whole, torn)
        }
    });

    let envoy = Envoy::start(&envoy_e2e::eds_config(&file)).await;
    let http = HttpClient::new();
    let answer = http.get(envoy.listener, "/", &[]).await;
    assert_eq!(answer.status, 503, "no leader, no endpoint: {answer:?}");

    let mut first = replica(&url, "web", "first", &["--resign-after-ms", "1500"]).await;
    let (_, first_token) = led_by(&url, "web", &["first"]).await;
    until_served_by(&http, envoy.listener, "first").await;
    let answer = http.get(envoy.listener, "/", &[("x-leader-token", "999999")]).await;
    assert_eq!(
        answer.body,
        format!("first leader-id=first leader-token={first_token}"),
        "a client's header is replaced"
    );
    let others = [replica(&url, "web", "second", &[]).await, replica(&url, "web", "third", &[]).await];

    first.campaign.expect_line("I resigned").await;
    let (next, next_token) = led_by(&url, "web", &["second", "third"]).await;
    until_served_by(&http, envoy.listener, &next).await;
    assert!(next_token > first_token);
    let answer = http.get(envoy.listener, "/", &[]).await;
    assert_eq!(answer.body, format!("{next} leader-id={next} leader-token={next_token}"));

    let leading = others.iter().position(|r| r.upstream.id == next).unwrap();
    others[leading].campaign.signal("KILL");
    let last = &others[1 - leading].upstream.id;
    let (_, last_token) = led_by(&url, "web", &[last.as_str()]).await;
    until_served_by(&http, envoy.listener, last).await;
    let answer = http.get(envoy.listener, "/", &[]).await;
    assert_eq!(answer.body, format!("{last} leader-id={last} leader-token={last_token}"));

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (whole, torn) = reader.join().unwrap();
    assert!(torn.is_empty(), "the file was seen half-written: {torn:?}");
    assert!(whole > 0);
    drop(watch);
}
