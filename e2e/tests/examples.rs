//! The seed's examples as wasm apps under `mpsync run`, against a real
//! elector: two lock contenders, three election replicas.

#![allow(clippy::unwrap_used, missing_docs)]

use mpsync_client::{Client, Read};
use mpsync_core::Kind;
use mpsync_core::wire::LeaseView;
use testkit::proc::{PATIENCE, Proc, elector, metric, token};

#[tokio::test]
async fn two_lock_examples_contend_and_the_second_gets_it_at_release() {
    let elector = elector().await;
    let url = elector.url();
    let mut alice =
        Proc::run("alice", &url, &[], "lock.wasm", &["--id", "alice", "--hold-ms", "2500", "--ttl-ms", "1000"]);
    let first = alice.expect_line("I have the lock!").await;
    let mut bob = Proc::run("bob", &url, &[], "lock.wasm", &["--id", "bob", "--hold-ms", "200", "--ttl-ms", "1000"]);
    bob.expect_line("Attempting to lock").await;
    let second = bob.expect_line("I have the lock!").await;
    // bob got in only once alice unlocked: alice says so, bob's token is the
    // next one, and the elector saw no expiry (it was a release, not a TTL
    // running out). The hold (2.5 s) spans several TTLs (1 s), so alice
    // also renewed in the background while bob waited.
    alice.expect_line("Unlocked").await;
    assert!(!alice.output().contains("I lost the lock"));
    assert!(token(&second) > token(&first), "{first} / {second}");
    assert_eq!(metric(&elector, "mpsync_expiries_total{kind=\"lock\"}").await, 0);
    assert!(metric(&elector, "mpsync_renewals_total{kind=\"lock\"}").await >= 2);
    bob.expect_line("Unlocked").await;
    assert!(alice.wait().await.success() && bob.wait().await.success());
}

/// Long-polls the elector until someone other than `not` leads `name`.
async fn next_leader(url: &str, name: &str, not: &str) -> LeaseView {
    let client = Client::new(url);
    let mut version = 0;
    loop {
        match client.read(Kind::Election, name, Some((version, PATIENCE))).await.unwrap() {
            Read::Held(l) if l.holder != not => return l,
            Read::Held(l) => version = l.version,
            Read::Free { version: v } => version = v,
        }
    }
}

#[tokio::test]
async fn three_replicas_one_leader_failover_on_kill_and_handover_on_resign() {
    let elector = elector().await;
    let url = elector.url();
    let replica = |i: usize, extra: &[&str]| {
        let (id, addr) = (format!("replica-{i}"), format!("127.0.0.1:{}", 9000 + i));
        let mut args = vec!["--id", &id, "--address", &addr, "--ttl-ms", "1500", "--name", "shard"];
        args.extend_from_slice(extra);
        Proc::run(&id, &url, &[], "election.wasm", &args)
    };
    // replica-0 leads first; it will be killed. Start it alone so we know.
    let mut replicas = vec![replica(0, &[])];
    let first = replicas[0].expect_line("I am the leader").await;
    replicas.push(replica(1, &["--resign-after-ms", "500"]));
    replicas.push(replica(2, &["--resign-after-ms", "500"]));
    let held = Client::new(&url).read(Kind::Election, "shard", None).await.unwrap();
    assert!(
        matches!(held, Read::Held(ref l) if l.holder == "replica-0" && l.address.as_deref() == Some("127.0.0.1:9000"))
    );

    // SIGKILL: mpsync's session with the elector closes, and the elector
    // releases the lease at once (the TTL is 1.5 s, but no expiry).
    replicas[0].signal("KILL");
    let leader = next_leader(&url, "shard", "replica-0").await;
    let second: usize = leader.holder.trim_start_matches("replica-").parse().unwrap();
    let line = replicas[second].expect_line("I am the leader").await;
    assert_eq!(token(&line), leader.token);
    assert!(leader.token > token(&first));
    assert_eq!(metric(&elector, "mpsync_session_releases_total{kind=\"election\"}").await, 1, "from the session");
    assert_eq!(metric(&elector, "mpsync_expiries_total{kind=\"election\"}").await, 0, "not from an expiry");
    let third = 3 - second;
    assert!(!replicas[third].output().contains("I am the leader"), "two leaders at once");

    // The new leader resigns after 500 ms: the last replica leads at once
    // (a release, not an expiry).
    replicas[second].expect_line("I resigned").await;
    let line3 = replicas[third].expect_line("I am the leader").await;
    assert!(token(&line3) > leader.token);
    assert_eq!(metric(&elector, "mpsync_expiries_total{kind=\"election\"}").await, 0, "the hand-over was an expiry");
    assert!(metric(&elector, "mpsync_releases_total{kind=\"election\"}").await >= 1);
}

#[tokio::test]
async fn sigterm_releases_the_leadership_at_once() {
    // A pod being deleted: Kubernetes sends SIGTERM. The leader steps down
    // at once (a release), not after its lease runs out.
    let elector = elector().await;
    let url = elector.url();
    let args = ["--id", "replica-0", "--address", "127.0.0.1:9100", "--ttl-ms", "30000", "--name", "term"];
    let mut leader = Proc::run("replica-0", &url, &[], "election.wasm", &args);
    leader.expect_line("I am the leader").await;
    leader.signal("TERM");
    let status = leader.wait().await;
    assert_eq!(status.code(), Some(143), "mpsync exits 143 after SIGTERM");
    // Already free: no need to wait out the 30 s lease.
    assert!(matches!(Client::new(&url).read(Kind::Election, "term", None).await.unwrap(), Read::Free { .. }));
    assert_eq!(metric(&elector, "mpsync_releases_total{kind=\"election\"}").await, 1);
    assert_eq!(metric(&elector, "mpsync_expiries_total{kind=\"election\"}").await, 0);
}

#[tokio::test]
async fn the_lock_example_can_take_turns_for_a_number_of_rounds() {
    let elector = elector().await;
    let url = elector.url();
    let mut worker = Proc::run("worker", &url, &[], "lock.wasm", &["--id", "w", "--hold-ms", "50", "--rounds", "3"]);
    let mut tokens = Vec::new();
    for _ in 0..3 {
        tokens.push(token(&worker.expect_line("I have the lock!").await));
        worker.expect_line("Unlocked").await;
    }
    assert!(worker.wait().await.success());
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "each round is a new acquisition: {tokens:?}");
    assert_eq!(metric(&elector, "mpsync_releases_total{kind=\"lock\"}").await, 3);
}
