//! `mpsync lock --permits N` (a semaphore) and `--shared` (a reader of a
//! read-write lock) as a user drives them, and `mpsync ls` showing the
//! holders and who waits.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use testkit::elector::ElectorProcess;
use testkit::proc::{PATIENCE, Proc, args, elector, metric};

/// `mpsync lock FLAGS… NAME` around a command that prints its permit and
/// token, then sleeps until stopped.
fn hold(url: &str, who: &str, flags: &[&str], name: &str) -> Proc {
    let script = "echo holding permit=${MPSYNC_LOCK_PERMIT:-none} token=$MPSYNC_LOCK_TOKEN; exec sleep 600";
    let mut list = vec!["lock", "--elector", url];
    list.extend_from_slice(flags);
    list.extend_from_slice(&[name, "--", "sh", "-c", script]);
    Proc::mpsync(who, &args(&list))
}

/// Asks /metrics every 20 ms (a waiter parking writes nothing a test could
/// wait on) until `n` waiters are parked.
async fn until_waiting(elector: &ElectorProcess, n: u64) {
    let mut every = tokio::time::interval(Duration::from_millis(20));
    let parked = tokio::time::timeout(PATIENCE, async {
        loop {
            every.tick().await;
            if metric(elector, "mpsync_waiters ").await == n {
                return;
            }
        }
    })
    .await;
    assert!(parked.is_ok(), "{n} waiters never parked");
}

async fn ls(url: &str) -> String {
    let mut p = Proc::mpsync("ls", &args(&["ls", "--elector", url, "locks"]));
    assert!(p.wait().await.success());
    p.output()
}

#[tokio::test]
async fn a_semaphore_runs_n_commands_at_once_and_the_next_gets_the_permit_given_back() {
    let elector = elector().await;
    let url = elector.url();
    let mut first = hold(&url, "first", &["--permits", "2"], "pool");
    let first_line = first.expect_line("holding permit=").await;
    let mut second = hold(&url, "second", &["--permits", "2"], "pool");
    let second_line = second.expect_line("holding permit=").await;
    let mut permits = [&first_line, &second_line].map(|l| l.split_whitespace().nth(1).unwrap().to_owned());
    permits.sort();
    assert_eq!(permits, ["permit=0", "permit=1"], "two at once, each with its own permit");
    let mut third = hold(&url, "third", &["--permits", "2"], "pool");
    until_waiting(&elector, 1).await;
    let listing = ls(&url).await;
    assert!(listing.contains("(2 of 2)") && listing.contains("[0]") && listing.contains("[1]"), "{listing}");
    assert!(listing.contains("1: "), "the waiter is listed: {listing}");
    // A holder that asks for another size is told so.
    let mut odd = Proc::mpsync("odd", &args(&["lock", "--elector", &url, "--permits", "3", "pool", "--", "true"]));
    assert_eq!(odd.wait().await.code(), Some(2), "told at once, not left waiting: {}", odd.output());
    assert!(odd.output().contains("another number of permits"), "{}", odd.output());
    let freed = first_line.split_whitespace().nth(1).unwrap().to_owned();
    first.signal("TERM");
    assert_eq!(first.wait().await.code(), Some(143));
    let third_line = third.expect_line("holding permit=").await;
    assert!(third_line.contains(&freed), "the permit given back: {third_line} after {freed}");
    let tokens = [&first_line, &second_line, &third_line]
        .map(|l| l.split("token=").nth(1).unwrap().trim().parse::<u64>().unwrap());
    assert!(tokens[2] > tokens[0].max(tokens[1]), "tokens only grow per name: {tokens:?}");
    second.signal("TERM");
    third.signal("TERM");
}

#[tokio::test]
async fn readers_share_and_a_waiting_writer_goes_before_later_readers() {
    let elector = elector().await;
    let url = elector.url();
    let mut r1 = hold(&url, "r1", &["--shared"], "book");
    r1.expect_line("holding permit=none").await;
    let mut r2 = hold(&url, "r2", &["--shared"], "book");
    r2.expect_line("holding permit=none").await;
    let mut writer = hold(&url, "writer", &[], "book");
    until_waiting(&elector, 1).await;
    let mut r3 = hold(&url, "r3", &["--shared"], "book");
    until_waiting(&elector, 2).await;
    let listing = ls(&url).await;
    assert!(listing.contains("(shared)") && listing.contains("2: "), "{listing}");
    for reader in [&mut r1, &mut r2] {
        reader.signal("TERM");
        assert_eq!(reader.wait().await.code(), Some(143));
    }
    writer.expect_line("holding permit=").await;
    assert_eq!(metric(&elector, "mpsync_waiters ").await, 1, "the later reader still waits, behind the writer");
    writer.signal("TERM");
    assert_eq!(writer.wait().await.code(), Some(143));
    r3.expect_line("holding permit=").await;
    r3.signal("TERM");
}
