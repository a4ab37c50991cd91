//! `mpsync lock` and `mpsync leader` as a user drives them.

#![allow(clippy::unwrap_used, missing_docs)]

use mpsync_client::{Client, Read};
use mpsync_core::Kind;
use testkit::proc::{Proc, args, elector, metric};

#[tokio::test]
async fn lock_runs_the_command_with_the_token_and_releases_after() {
    let elector = elector().await;
    let url = elector.url();
    let script = "echo token=$MPSYNC_LOCK_TOKEN name=$MPSYNC_LOCK_NAME; exit 7";
    let mut p = Proc::mpsync("lock", &args(&["lock", "--elector", &url, "batch", "--", "sh", "-c", script]));
    assert_eq!(p.wait().await.code(), Some(7), "the command's exit code is passed on");
    assert!(p.output().contains("token=1 name=batch"), "a new elector's first token is 1: {}", p.output());
    let read = Client::new(&url).read(Kind::Lock, "batch", None).await.unwrap();
    assert!(matches!(read, Read::Free { .. }), "released when the command exited: {read:?}");
    // The next holder gets a larger token.
    let mut again = Proc::mpsync(
        "again",
        &args(&["lock", "--elector", &url, "batch", "--", "sh", "-c", "echo token=$MPSYNC_LOCK_TOKEN"]),
    );
    assert!(again.wait().await.success());
    let output = again.output();
    let second = output.lines().find_map(|l| l.strip_prefix("token=")?.trim().parse::<u64>().ok());
    let second = second.unwrap_or_else(|| panic!("no token line in: {output}"));
    assert!(second > 1, "{}", again.output());
}

/// A process's exit, as an event: its pidfd turns readable.
async fn exited(pid: i32) {
    let pid = rustix::process::Pid::from_raw(pid).unwrap();
    let Ok(fd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else { return };
    let wait = tokio::task::spawn_blocking(move || {
        let mut fds = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
        let patience = rustix::event::Timespec { tv_sec: testkit::proc::PATIENCE.as_secs() as i64, tv_nsec: 0 };
        rustix::event::poll(&mut fds, Some(&patience)).unwrap_or(0)
    });
    assert_eq!(wait.await.unwrap(), 1, "the command is still running");
}

/// Starts `mpsync lock` around a command that prints its pid and sleeps;
/// returns the process and the command's pid.
async fn holding(url: &str, name: &str, ttl: &str) -> (Proc, i32) {
    let mut p = Proc::mpsync(
        name,
        &args(&["lock", "--elector", url, "--ttl", ttl, name, "--", "sh", "-c", "echo pid=$$; exec sleep 600"]),
    );
    let line = p.expect_line("pid=").await;
    (p, line.trim_start_matches("pid=").trim().parse().unwrap())
}

/// The watchdog forks the command, and a fork is only safe to work in
/// while nothing else runs: the watchdog process has no async runtime and
/// so none of its worker threads (only the two threads of its own it starts
/// after the fork).
#[tokio::test]
async fn the_watchdog_forks_the_command_with_no_runtime_threads() {
    let elector = elector().await;
    let (_p, pid) = holding(&elector.url(), "threads", "10s").await;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let watchdog: u32 = stat.rsplit(')').next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let cmdline = std::fs::read_to_string(format!("/proc/{watchdog}/cmdline")).unwrap();
    assert!(cmdline.contains("__watchdog"), "the command's parent is not the watchdog: {cmdline:?}");
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{watchdog}/task"))
        .unwrap()
        .map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).unwrap().trim().to_owned())
        .collect();
    assert!(!threads.iter().any(|name| name.starts_with("tokio")), "the watchdog's threads: {threads:?}");
    assert!(threads.len() <= 3, "the watchdog's threads: {threads:?}");
}

#[tokio::test]
async fn the_command_dies_with_a_killed_mpsync() {
    let elector = elector().await;
    let (mut p, pid) = holding(&elector.url(), "orphan", "10s").await;
    p.signal("KILL");
    exited(pid).await;
    p.wait().await;
}

#[tokio::test]
async fn a_frozen_mpsync_cannot_keep_the_command_past_the_deadline() {
    let elector = elector().await;
    let url = elector.url();
    let (mut p, pid) = holding(&url, "frozen", "1s").await;
    p.signal("STOP");
    // Nobody renews; the watchdog stops the command at the deadline.
    exited(pid).await;
    // Someone else gets the lock once the lease has run out at the elector.
    let mut next = Proc::mpsync("next", &args(&["lock", "--elector", &url, "frozen", "--", "true"]));
    assert!(next.wait().await.success());
    p.signal("CONT");
    assert_eq!(p.wait().await.code(), Some(3), "mpsync reports the lost lock: {}", p.output());
}

#[tokio::test]
async fn the_command_gets_its_deadline_and_a_grace_too_long_is_refused() {
    let elector = elector().await;
    let url = elector.url();
    let script =
        "echo deadline=$MPSYNC_LOCK_DEADLINE; echo file=$(cat $MPSYNC_LOCK_DEADLINE_FILE); echo now=$(date +%s%3N)";
    let mut p =
        Proc::mpsync("deadline", &args(&["lock", "--elector", &url, "--ttl", "5s", "d", "--", "sh", "-c", script]));
    assert!(p.wait().await.success());
    let out = p.output();
    let value = |key: &str| -> u128 {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{out}"))
    };
    let (deadline, file, now) = (value("deadline="), value("file="), value("now="));
    assert_eq!(deadline, file);
    assert!(deadline > now && deadline <= now + 4_000, "the deadline is 80% of the TTL ahead: {out}");
    let mut bad =
        Proc::mpsync("bad", &args(&["lock", "--elector", &url, "--ttl", "1s", "--grace", "500ms", "d", "--", "true"]));
    assert_eq!(bad.wait().await.code(), Some(2));
    assert!(bad.output().contains("longer than a tenth of --ttl"), "{}", bad.output());
}

#[tokio::test]
async fn lock_on_sigterm_stops_the_command_releases_and_exits_143() {
    let elector = elector().await;
    let url = elector.url();
    let (mut p, pid) = holding(&url, "stopped", "10s").await;
    p.signal("TERM");
    exited(pid).await;
    assert_eq!(p.wait().await.code(), Some(143), "{}", p.output());
    // Released at once, not when the 10 s lease runs out.
    let read = Client::new(&url).read(Kind::Lock, "stopped", None).await.unwrap();
    assert!(matches!(read, Read::Free { .. }), "{read:?}");
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

#[tokio::test]
async fn ls_lists_every_page_of_locks_and_elections() {
    let elector = elector().await;
    let url = elector.url();
    let client = Client::new(&url);
    for (i, name) in ["job-b", "job-a", "job-c"].iter().enumerate() {
        let request =
            mpsync_core::wire::AcquireRequest::new(&format!("w{i}"), std::time::Duration::from_secs(60), None, None);
        assert!(matches!(client.claim(Kind::Lock, name, &request).await.unwrap(), mpsync_client::Claimed::Granted(_)));
    }
    let request =
        mpsync_core::wire::AcquireRequest::new("r1", std::time::Duration::from_secs(60), None, Some("10.0.0.7:8080"));
    assert!(matches!(client.claim(Kind::Election, "web", &request).await.unwrap(), mpsync_client::Claimed::Granted(_)));

    // Pages of one record: every record must still be there, once, in order.
    let mut table = Proc::mpsync("ls", &args(&["ls", "--elector", &url, "--page-size", "1"]));
    assert!(table.wait().await.success(), "{}", table.output());
    let output = table.output();
    let rows: Vec<Vec<&str>> = output.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["KIND", "NAME", "HOLDER", "TOKEN", "TIME", "LEFT", "ADDRESS", "WAITING"], "{output}");
    let kinds_names: Vec<(&str, &str, &str)> = rows[1..].iter().map(|r| (r[0], r[1], r[2])).collect();
    assert_eq!(
        kinds_names,
        [("lock", "job-a", "w1"), ("lock", "job-b", "w0"), ("lock", "job-c", "w2"), ("election", "web", "r1")],
        "{output}"
    );
    assert_eq!(rows[4][5], "10.0.0.7:8080", "{output}");

    let mut json = Proc::mpsync("ls-json", &args(&["ls", "elections", "--elector", &url, "--json"]));
    assert!(json.wait().await.success());
    let lines: Vec<serde_json::Value> =
        json.output().lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{}", json.output());
    assert_eq!((lines[0]["kind"].as_str(), lines[0]["holder"].as_str()), (Some("election"), Some("r1")));
    assert!(lines[0]["expires_in_ms"].as_u64().is_some_and(|ms| ms <= 60_000));

    let mut bad = Proc::mpsync("ls-bad", &args(&["ls", "--elector", &url, "--page-size", "0"]));
    assert_eq!(bad.wait().await.code(), Some(2));
    assert!(bad.output().contains("--page-size"), "{}", bad.output());
}

fn endpoints(file: &std::path::Path) -> Vec<String> {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let endpoints = doc["resources"][0]["endpoints"].as_array().unwrap();
    endpoints
        .iter()
        .flat_map(|e| e["lb_endpoints"].as_array().unwrap())
        .map(|e| e["metadata"]["filter_metadata"]["metaparticle.sync"]["leader_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn leader_keeps_an_envoy_endpoint_file_and_empties_it_when_it_cannot_vouch_for_the_leader() {
    let dir = testkit::temp_dir("eds-cli").unwrap();
    let file = dir.join("web.json");
    let eds = |url: &str| {
        let file = file.display().to_string();
        args(&["leader", "--elector", url, "--watch", "--envoy-eds", &file, "--cluster", "leader", "web"])
    };
    // An elector that does not answer yet: the file is there at once, empty.
    let mut early = Proc::mpsync("early", &eds("http://127.0.0.1:9"));
    early.expect_line("none").await;
    assert!(endpoints(&file).is_empty());
    drop(early);

    let elector = elector().await;
    let url = elector.url();
    let mut watch = Proc::mpsync("eds", &eds(&url));
    watch.expect_line("none").await;
    let request = mpsync_core::wire::AcquireRequest::new(
        "r1",
        std::time::Duration::from_millis(1500),
        None,
        Some("127.0.0.1:7001"),
    );
    let granted = Client::new(&url).claim(Kind::Election, "web", &request).await.unwrap();
    assert!(matches!(granted, mpsync_client::Claimed::Granted(_)));
    watch.expect_line("r1 127.0.0.1:7001 ").await;
    assert_eq!(endpoints(&file), ["r1"]);

    // The elector goes away: after r1's lease may have run out, nobody.
    drop(elector);
    watch.expect(": none once r1's lease may have run out", |l| l == "none").await;
    assert!(endpoints(&file).is_empty());

    for (bad, says) in [
        (args(&["leader", "--envoy-eds", "x.json", "--cluster", "c", "web"]), "needs --watch"),
        (args(&["leader", "--watch", "--envoy-eds", "x.json", "web"]), "needs --cluster"),
        (args(&["leader", "--watch", "--envoy-eds", "x.txt", "--cluster", "c", "web"]), "name it .json"),
    ] {
        let mut p = Proc::mpsync("bad", &bad);
        assert_eq!(p.wait().await.code(), Some(2));
        assert!(p.output().contains(says), "{}", p.output());
    }
}

#[tokio::test]
async fn ls_history_shows_each_change_of_holder_with_its_why() {
    let elector = elector().await;
    let url = elector.url();
    let client = Client::new(&url);
    let hold =
        |holder: &str| mpsync_core::wire::AcquireRequest::new(holder, std::time::Duration::from_secs(60), None, None);
    let mpsync_client::Claimed::Granted(first) = client.claim(Kind::Lock, "job-a", &hold("w1")).await.unwrap() else {
        panic!("w1 did not get job-a")
    };
    assert!(client.release(Kind::Lock, "job-a", "w1", first.token).await.unwrap());
    assert!(matches!(
        client.claim(Kind::Lock, "job-a", &hold("w2")).await.unwrap(),
        mpsync_client::Claimed::Granted(_)
    ));
    assert!(matches!(
        client.claim(Kind::Lock, "job-b", &hold("w3")).await.unwrap(),
        mpsync_client::Claimed::Granted(_)
    ));

    let mut table = Proc::mpsync("ls-history", &args(&["ls", "--elector", &url, "--history", "job-a"]));
    assert!(table.wait().await.success(), "{}", table.output());
    let output = table.output();
    let rows: Vec<Vec<&str>> = output.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["AT", "KIND", "NAME", "FROM", "TO", "TOKEN", "WHY", "ADDRESS"], "{output}");
    let changes: Vec<(&str, &str, &str, &str)> = rows[1..].iter().map(|r| (r[2], r[3], r[4], r[6])).collect();
    assert_eq!(
        changes,
        [("job-a", "-", "w1", "acquired"), ("job-a", "w1", "-", "released"), ("job-a", "-", "w2", "acquired")],
        "{output}"
    );

    // Alone: every name's, as the API's entries.
    let mut json = Proc::mpsync("ls-history-json", &args(&["ls", "locks", "--elector", &url, "--json", "--history"]));
    assert!(json.wait().await.success(), "{}", json.output());
    let lines: Vec<serde_json::Value> =
        json.output().lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    let names: Vec<&str> = lines.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["job-a", "job-a", "job-a", "job-b"], "{}", json.output());
    assert_eq!((lines[3]["to"].as_str(), lines[3]["why"].as_str()), (Some("w3"), Some("acquired")));
}
