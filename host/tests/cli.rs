//! `mpsync lock` and `mpsync leader` as a user drives them.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{Proc, elector, metric};
use elector::client::{Client, Read};
use mpsync_core::Kind;

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn lock_runs_the_command_with_the_token_and_releases_after() {
    let elector = elector().await;
    let url = elector.url();
    let script = "echo token=$MPSYNC_LOCK_TOKEN name=$MPSYNC_LOCK_NAME; exit 7";
    let mut p = Proc::mpsync("lock", &args(&["lock", "--elector", &url, "batch", "--", "sh", "-c", script]));
    assert_eq!(p.wait().await.code(), Some(7), "the command's exit code is passed on");
    assert!(p.output().contains("token=1 name=batch"), "{}", p.output());
    let read = Client::new(&url).read(Kind::Lock, "batch", None).await.unwrap();
    assert!(matches!(read, Read::Free { .. }), "released when the command exited: {read:?}");
    // The next holder gets the next token.
    let mut again = Proc::mpsync(
        "again",
        &args(&["lock", "--elector", &url, "batch", "--", "sh", "-c", "echo token=$MPSYNC_LOCK_TOKEN"]),
    );
    assert!(again.wait().await.success());
    assert!(again.output().contains("token=2"));
}

#[tokio::test]
async fn lock_stops_the_command_when_the_lock_is_lost() {
    let mut elector = elector().await;
    let url = elector.url();
    let mut p = Proc::mpsync(
        "lock",
        &args(&[
            "lock",
            "--elector",
            &url,
            "--ttl",
            "600ms",
            "--grace",
            "50ms",
            "doomed",
            "--",
            "sh",
            "-c",
            "echo started; exec sleep 60",
        ]),
    );
    p.expect_line("started").await;
    // The elector dies: renewals fail, and the lease is lost at its local
    // deadline, before anyone could have taken it over.
    elector.signal("KILL").unwrap();
    elector.wait().await.unwrap();
    p.expect_line("lost lock doomed; stopping the command").await;
    assert_eq!(p.wait().await.code(), Some(3));
}

#[tokio::test]
async fn lock_waits_its_turn_and_gives_up_after_its_timeout() {
    let elector = elector().await;
    let url = elector.url();
    let mut holder = Proc::mpsync(
        "holder",
        &args(&["lock", "--elector", &url, "busy", "--", "sh", "-c", "echo holding; exec sleep 60"]),
    );
    holder.expect_line("holding").await;
    let mut late =
        Proc::mpsync("late", &args(&["lock", "--elector", &url, "--timeout", "200ms", "busy", "--", "true"]));
    assert_eq!(late.wait().await.code(), Some(4));
    assert!(late.output().contains("not acquired within 200ms"), "{}", late.output());
    assert_eq!(metric(&elector, "mpsync_acquisitions_total{kind=\"lock\"}").await, 1);
}

#[tokio::test]
async fn leader_prints_and_watches_changes() {
    let elector = elector().await;
    let url = elector.url();
    let mut once = Proc::mpsync("leader", &args(&["leader", "--elector", &url, "web"]));
    assert!(once.wait().await.success());
    assert!(once.output().lines().any(|l| l == "none"), "{}", once.output());

    let mut watch = Proc::mpsync("watch", &args(&["leader", "--elector", &url, "--watch", "web"]));
    watch.expect_line("none").await;
    let mut a = Proc::run(
        "a",
        &url,
        &[],
        "election.wasm",
        &["--name", "web", "--id", "a", "--address", "127.0.0.1:7001", "--ttl-ms", "600", "--resign-after-ms", "700"],
    );
    watch.expect(": a leads", |l| l.starts_with("a 127.0.0.1:7001 ")).await;
    a.expect_line("I resigned").await;
    watch.expect(": none after the resignation", |l| l == "none").await;
    let mut bad = Proc::mpsync("bad", &args(&["leader", "--elector", &url, "Web"]));
    assert_eq!(bad.wait().await.code(), Some(2));
    assert!(bad.output().contains("invalid election name \"Web\""), "{}", bad.output());
}
