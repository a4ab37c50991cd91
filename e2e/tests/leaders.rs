//! `mpsync leader` over several elections: one watch for all of them, each
//! change printed with its election's name, and one Envoy endpoint file
//! per election kept right through a hand-over and an elector restart.
//! (One election: `cli.rs`.)

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::time::Duration;

use mpsync_client::{Claimed, Client, Kind};
use mpsync_core::wire::AcquireRequest;
use testkit::elector::ElectorProcess;
use testkit::proc::{Proc, args, metric};

/// `holder` takes `name` (no key, no session) for `ttl`, advertising
/// `address`; returns its token.
async fn lead(url: &str, name: &str, holder: &str, ttl: Duration, address: &str) -> u64 {
    let request = AcquireRequest::new(holder, ttl, None, Some(address));
    match Client::new(url).claim(Kind::Election, name, &request).await.unwrap() {
        Claimed::Granted(lease) => lease.token,
        other => panic!("{holder} does not lead {name}: {other:?}"),
    }
}

async fn elector_with(extra: &[&str]) -> ElectorProcess {
    let mut all = vec!["--log", "warn", "--identity", "test-elector"];
    all.extend_from_slice(extra);
    ElectorProcess::spawn(testkit::bin("elector"), &all).await.unwrap()
}

/// With room for one long-poll at the elector, one process follows three
/// elections: a process that parked one long-poll per election would have
/// the others refused (429).
#[tokio::test]
async fn one_watch_follows_several_elections_and_prints_each_change_with_its_name() {
    let elector = elector_with(&["--max-long-polls", "1"]).await;
    let url = elector.url();
    let second = Duration::from_secs(1);
    let c = lead(&url, "c", "r2", 60 * second, "127.0.0.1:7002").await;

    // Without --watch: each leader once, in the order given, names read
    // from a file too (comments, blank lines and repeats skipped).
    let dir = testkit::temp_dir("leaders").unwrap();
    let list = dir.join("names");
    std::fs::write(&list, "# shards\nc\n\nb\nc\n").unwrap();
    let list = list.display().to_string();
    let mut once = Proc::mpsync("once", &args(&["leader", "--elector", &url, "a", "--from-file", &list]));
    assert!(once.wait().await.success(), "{}", once.output());
    let lines: Vec<String> = once.output().lines().map(String::from).collect();
    assert_eq!(lines, ["a none", &format!("c r2 127.0.0.1:7002 {c}"), "b none"]);
    std::fs::remove_dir_all(&dir).unwrap();

    let mut watch = Proc::mpsync("watch", &args(&["leader", "--elector", &url, "--watch", "a", "b", "c"]));
    for line in ["a none", "b none", &format!("c r2 127.0.0.1:7002 {c}")] {
        watch.expect(line, |l| l == line).await;
    }
    let b = lead(&url, "b", "r1", 60 * second, "127.0.0.1:7001").await;
    watch.expect("b: r1 leads", |l| l == format!("b r1 127.0.0.1:7001 {b}")).await;
    assert!(Client::new(&url).release(Kind::Election, "c", "r2", c).await.unwrap());
    watch.expect("c: nobody after the release", |l| l == "c none").await;
    let a = lead(&url, "a", "r3", 60 * second, "127.0.0.1:7003").await;
    watch.expect("a: r3 leads", |l| l == format!("a r3 127.0.0.1:7003 {a}")).await;

    let refused = metric(&elector, "mpsync_refusals_total{limit=\"long_polls\"}").await;
    assert_eq!(refused, 0, "a long-poll was refused: more than one at a time\n{}", watch.output());
    let watches = metric(&elector, "mpsync_request_duration_seconds_count{route=\"watch_many\",status=\"200\"}").await;
    assert!(watches >= 4, "the changes came through the watch over many names: {watches}");
    let metrics = testkit::proc::get(&format!("{url}/metrics")).await;
    assert!(!metrics.contains("route=\"election_watch\""), "no long-poll on one election: {metrics}");
}

/// The leader ids in an endpoint file, and the cluster it is for.
fn endpoints(file: &Path) -> (String, Vec<String>) {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let resource = &doc["resources"][0];
    let ids = resource["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["lb_endpoints"].as_array().unwrap())
        .map(|e| e["metadata"]["filter_metadata"]["metaparticle.sync"]["leader_id"].as_str().unwrap().to_owned())
        .collect();
    (resource["cluster_name"].as_str().unwrap().to_owned(), ids)
}

/// One file per election, each following its own leader: written (empty)
/// at once, replaced at a hand-over, emptied while the elector is down
/// once that election's own leader's lease may have run out (the other's
/// stays), and following the elector again once it is back.
#[tokio::test]
async fn each_election_keeps_its_own_endpoint_file_through_a_handover_and_an_elector_restart() {
    let elector = elector_with(&[]).await;
    let (url, addr) = (elector.url(), elector.addr());
    let dir = testkit::temp_dir("eds-dir").unwrap();
    let (file_a, file_b) = (dir.join("a.json"), dir.join("b.json"));
    let dir_arg = dir.display().to_string();
    let mut watch = Proc::mpsync(
        "eds",
        &args(&[
            "leader",
            "--elector",
            &url,
            "--watch",
            "--envoy-eds-dir",
            &dir_arg,
            "--cluster-template",
            "shard-{name}",
            "a",
            "b",
        ]),
    );
    watch.expect_line("b none").await;
    assert_eq!(endpoints(&file_a), ("shard-a".into(), vec![]));
    assert_eq!(endpoints(&file_b), ("shard-b".into(), vec![]));

    let second = Duration::from_secs(1);
    let r1 = lead(&url, "a", "r1", 60 * second, "127.0.0.1:7001").await;
    watch.expect_line("a r1 127.0.0.1:7001 ").await;
    lead(&url, "b", "s1", 60 * second, "127.0.0.1:7002").await;
    watch.expect_line("b s1 127.0.0.1:7002 ").await;
    assert_eq!(endpoints(&file_a), ("shard-a".into(), vec!["r1".into()]));
    assert_eq!(endpoints(&file_b), ("shard-b".into(), vec!["s1".into()]));

    // A hand-over of a: b's file is not touched.
    assert!(Client::new(&url).release(Kind::Election, "a", "r1", r1).await.unwrap());
    watch.expect("a: nobody", |l| l == "a none").await;
    lead(&url, "a", "r2", 3 * second, "127.0.0.1:7003").await;
    watch.expect_line("a r2 127.0.0.1:7003 ").await;
    assert_eq!(endpoints(&file_a).1, ["r2"]);
    assert_eq!(endpoints(&file_b).1, ["s1"]);

    // The elector goes away: a's file is emptied once r2's short lease may
    // have run out; s1's lease has a minute left, so b's file keeps it.
    drop(elector);
    watch.expect_line("a: the last leader's lease may have run out").await;
    watch.expect("a: nobody", |l| l == "a none").await;
    assert_eq!(endpoints(&file_a).1, Vec::<String>::new());
    assert_eq!(endpoints(&file_b).1, ["s1"], "b's own lease has not run out");

    // Back, where it was, without its state: it knows of no leader, and
    // the files say so; a new leader of a is followed as before.
    let elector = ElectorProcess::spawn_on(testkit::bin("elector"), &["--log", "warn"], addr).await.unwrap();
    watch.expect("b: nobody, as the elector now says", |l| l == "b none").await;
    assert_eq!(endpoints(&file_b), ("shard-b".into(), vec![]));
    let r3 = lead(&elector.url(), "a", "r3", 60 * second, "127.0.0.1:7004").await;
    watch.expect("a: r3 leads", |l| l == format!("a r3 127.0.0.1:7004 {r3}")).await;
    assert_eq!(endpoints(&file_a), ("shard-a".into(), vec!["r3".into()]));
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "no temporary file left behind: {names:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A watch parked longer than a lease it then reports has left: the lease
/// is read again at once rather than vouched for from when the watch was
/// sent (which would drop the leader the moment it is shown, and show it
/// again at its next renewal).
#[tokio::test]
async fn a_leader_reported_by_a_long_parked_watch_is_not_dropped_before_its_lease_runs_out() {
    let elector = elector_with(&[]).await;
    let url = elector.url();
    let mut watch = Proc::mpsync("watch", &args(&["leader", "--elector", &url, "--watch", "web"]));
    watch.expect("nobody yet", |l| l == "none").await;
    // Not awaiting an event: the watch must stay parked for longer than
    // the lease below lasts.
    let ttl = Duration::from_secs(2);
    tokio::time::sleep(ttl + ttl / 4).await;
    let token = lead(&url, "web", "r1", ttl, "127.0.0.1:7001").await;
    watch.expect("r1 leads", |l| l == format!("r1 127.0.0.1:7001 {token}")).await;
    let client = Client::new(&url);
    // Renewed for three leases' time: a renewal must vouch for the leader
    // (a watcher that heard of none would drop it after one TTL).
    for _ in 0..12 {
        tokio::time::sleep(ttl / 4).await;
        let renew = AcquireRequest::new("r1", ttl, Some(token), Some("127.0.0.1:7001"));
        assert!(matches!(client.claim(Kind::Election, "web", &renew).await.unwrap(), Claimed::Granted(_)));
    }
    // Three leases' time renewed: still r1, nothing else printed since.
    let output = watch.output();
    assert!(output.lines().last().is_some_and(|l| l.starts_with("r1 ")), "{output}");
    assert!(client.release(Kind::Election, "web", "r1", token).await.unwrap());
    watch.expect("nobody after the release", |l| l == "none").await;
    let output = watch.output();
    let after: Vec<&str> = output.lines().skip_while(|l| !l.starts_with("r1 ")).collect();
    assert_eq!(after, [format!("r1 127.0.0.1:7001 {token}").as_str(), "none"], "{output}");
}
