//! Our clients hold leases under a session with the elector: a holder that
//! dies is replaced at once, whatever its TTL; a holder whose session ends
//! loses its leases at once; and `mpsync lock`'s session outlives every
//! process of its command.
//!
//! Every lease here lasts longer than the tests' patience
//! (`testkit::proc::PATIENCE`): a release that waited for the TTL would
//! fail the test.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use mpsync_client::{Client, Read};
use mpsync_core::Kind;
use testkit::proc::{Proc, args, elector, metric};

const TTL: &str = "120s";
/// How long the tests that say "nothing changed" watch the record for.
const QUIET: Duration = Duration::from_secs(2);

/// `mpsync lock` for `holder` around `script`, with the long TTL.
fn lock(url: &str, holder: &str, name: &str, script: &str) -> Proc {
    let mut all = args(&["lock", "--elector", url, "--ttl", TTL, "--holder", holder]);
    all.extend(args(&[name, "--", "sh", "-c", script]));
    Proc::mpsync(holder, &all)
}

async fn read(url: &str, kind: Kind, name: &str) -> Read {
    Client::new(url).read(kind, name, None).await.unwrap()
}

fn holder(read: &Read) -> Option<&str> {
    match read {
        Read::Held(view) => Some(&view.holder),
        _ => None,
    }
}

/// Watches the record for [`QUIET`]: what it shows at the end (the first
/// change, if any, ends the watch).
async fn after_a_quiet_while(url: &str, kind: Kind, name: &str) -> Read {
    let now = read(url, kind, name).await;
    Client::new(url).read(kind, name, Some((now.version(), QUIET))).await.unwrap()
}

/// The parent of process `pid` (from /proc).
fn parent(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit(')').next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn kill(sig: &str, pid: i32) {
    assert!(std::process::Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap().success());
}

/// SIGKILL of `mpsync lock` while its watchdog is frozen: the command runs
/// on (its parent, the watchdog, lives), and so the lock must stay held —
/// the watchdog's copy of the session keeps it. Once the watchdog goes on,
/// it kills the command's group, waits for all of it, and exits: then the
/// session closes and the successor gets the lock at once, and finds
/// nothing of the first command's group, not even a zombie.
#[tokio::test]
async fn a_killed_mpsync_lock_is_replaced_at_once_but_never_while_its_command_lives() {
    // The orphaned watchdog becomes this test's child, not init's: its
    // process group is then not orphaned, so the kernel does not wake it
    // (SIGHUP + SIGCONT to a stopped, orphaned group) when mpsync dies; and
    // what the watchdog did not wait for stays here as a zombie, where the
    // successor's check sees it.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).unwrap();
    let elector = elector().await;
    let url = elector.url();
    // A child left in the background: the group outlives the shell.
    let mut first = lock(&url, "first", "crash", "sleep 600 & echo pgid=$$; wait");
    let pgid: i32 = first.expect_line("pgid=").await.trim_start_matches("pgid=").trim().parse().unwrap();
    let check = format!("if pgrep -g {pgid} >/dev/null; then echo overlap; else echo clean; fi");
    let mut second = lock(&url, "second", "crash", &check);
    let watchdog = parent(pgid);
    kill("STOP", watchdog);
    first.signal("KILL");
    // The frozen watchdog and the command keep mpsync's output open.
    first.exit().await;
    let held = after_a_quiet_while(&url, Kind::Lock, "crash").await;
    assert_eq!(holder(&held), Some("first"), "released while the command still ran: {held:?}");
    kill("CONT", watchdog);
    assert!(second.wait().await.success(), "{}", second.output());
    assert!(second.output().lines().any(|l| l == "clean"), "the first command's group: {}", second.output());
    assert_eq!(metric(&elector, "mpsync_session_releases_total{kind=\"lock\"}").await, 1);
}

/// SIGKILL (or SIGTERM) of mpsync's whole process group, as `kill --
/// -PGID` or `timeout -s KILL` send it: the watchdog, in a group of its
/// own, outlives it, buries the command's group, and only then lets the
/// session close.
#[tokio::test]
async fn a_killed_mpsync_group_still_frees_the_lock_only_after_its_command() {
    let elector = elector().await;
    let url = elector.url();
    for (round, signal) in ["KILL", "TERM"].into_iter().enumerate() {
        let name = format!("group-{round}");
        let mut first = lock(&url, "first", &name, "sleep 600 & echo pgid=$$; wait");
        let pgid: i32 = first.expect_line("pgid=").await.trim_start_matches("pgid=").trim().parse().unwrap();
        let check = format!("if pgrep -g {pgid} >/dev/null; then echo overlap; else echo clean; fi");
        let mut second = lock(&url, "second", &name, &check);
        first.signal_group(signal);
        assert!(second.wait().await.success(), "{}", second.output());
        assert!(second.output().lines().any(|l| l == "clean"), "after SIGKILL: {}", second.output());
    }
}

/// Without a session (`--no-session`, here as `MPSYNC_NO_SESSION=1`): a
/// killed holder's lock runs out at its TTL, as before.
#[tokio::test]
async fn without_a_session_a_killed_holder_keeps_its_lock_until_the_ttl() {
    let elector = elector().await;
    let url = elector.url();
    let all = args(&["lock", "--elector", &url, "--ttl", TTL, "--holder", "first", "ttl", "--", "sh", "-c"]);
    let all = [all, args(&["echo started; exec sleep 600"])].concat();
    let mpsync = testkit::proc::mpsync().display().to_string();
    let mut first = Proc::spawn_with_env("first", &mpsync, &all, &[("MPSYNC_NO_SESSION", "1")]);
    first.expect_line("started").await;
    first.signal("KILL");
    first.wait().await;
    let held = after_a_quiet_while(&url, Kind::Lock, "ttl").await;
    assert_eq!(holder(&held), Some("first"), "{held:?}");
}

/// A wasm app under `mpsync run` (native imports) that dies is replaced at
/// once.
#[tokio::test]
async fn a_killed_wasm_holder_is_replaced_at_once() {
    let elector = elector().await;
    let url = elector.url();
    let hold = ["--name", "app", "--id", "app-1", "--ttl-ms", "120000", "--hold-ms", "600000"];
    let mut app = Proc::run("app", &url, &[], "lock.wasm", &hold);
    app.expect_line("I have the lock!").await;
    let mut next = lock(&url, "next", "app", "echo token=$MPSYNC_LOCK_TOKEN");
    app.signal("KILL");
    assert!(next.wait().await.success(), "{}", next.output());
    assert!(next.output().lines().any(|l| l.starts_with("token=")), "{}", next.output());
}

/// The elector dies: every holder's session ends, and each takes that as
/// the loss of its leases at once (the elector may have released them),
/// not at its local deadline, 96 s away.
#[tokio::test]
async fn a_holder_whose_session_ends_loses_its_lease_at_once() {
    let mut elector = elector().await;
    let url = elector.url();
    let hold = ["--name", "app", "--ttl-ms", "120000", "--hold-ms", "600000"];
    let mut app = Proc::run("app", &url, &[], "lock.wasm", &hold);
    app.expect_line("I have the lock!").await;
    let mut command = lock(&url, "command", "cmd", "echo started; exec sleep 600");
    command.expect_line("started").await;
    elector.signal("KILL").unwrap();
    elector.wait().await.unwrap();
    app.expect_line("I lost the lock!").await;
    command.expect_line("lost lock cmd; stopping the command").await;
    assert_eq!(command.wait().await.code(), Some(3));
}

/// `mpsync elect` killed (not its server: mpsync itself): the other
/// candidate leads at once.
#[tokio::test]
async fn a_killed_candidate_is_replaced_at_once() {
    let elector = elector().await;
    let url = elector.url();
    let candidate = |holder: &str| {
        Proc::mpsync(
            holder,
            &args(&[
                "elect",
                "--elector",
                &url,
                "--holder",
                holder,
                "--address",
                "127.0.0.1:7001",
                "--ttl",
                TTL,
                "web",
                "--",
                "sleep",
                "600",
            ]),
        )
    };
    let mut a = candidate("a");
    a.expect_line("leading with token").await;
    let mut b = candidate("b");
    b.expect_line("not leading").await;
    a.signal("KILL");
    b.expect_line("leading with token").await;
    assert_eq!(holder(&read(&url, Kind::Election, "web").await), Some("b"));
}
