//! `mpsync elect`, the supervised candidate, as a user drives it: real
//! elector, real `mpsync` processes, real commands.

#![allow(clippy::unwrap_used, missing_docs)]

use mpsync_client::{Client, Read};
use mpsync_core::Kind;
use testkit::proc::{Proc, args, elector, is_leading, leading};

/// The token in a "leading with token N" line.
/// The pid in a "pid=N" line.
fn pid(line: &str) -> i32 {
    line.trim_start_matches("pid=").trim().parse().unwrap()
}

/// `mpsync elect` for `holder` with a TTL longer than the tests' patience:
/// a candidate that did not resign at once would hold the election past
/// every await below.
fn candidate(url: &str, holder: &str, extra: &[&str], command: &str) -> Proc {
    let mut all = args(&["elect", "--elector", url, "--holder", holder, "--address", "127.0.0.1:7001", "--ttl", "60s"]);
    all.extend(args(extra));
    all.extend(args(&["web", "--", "sh", "-c", command]));
    Proc::mpsync(holder, &all)
}

async fn leader(url: &str) -> Option<String> {
    match Client::new(url).read(Kind::Election, "web", None).await.unwrap() {
        Read::Held(view) => Some(view.holder),
        Read::Free { .. } => None,
    }
}

#[tokio::test]
async fn a_killed_server_makes_its_candidate_resign_at_once_and_the_other_lead() {
    let elector = elector().await;
    let url = elector.url();
    let server = "echo pid=$$; exec sleep 600";
    let mut a = candidate(&url, "a", &[], server);
    let [said, led] = any_order(&mut a, [&|l| l.starts_with("pid="), &is_leading]).await;
    let (a_pid, first) = (pid(&said), leading(&led));
    let mut b = candidate(&url, "b", &[], server);
    b.expect("b starts not leading", |l| l == "not leading").await;
    b.expect_line("pid=").await;
    assert_eq!(leader(&url).await.as_deref(), Some("a"), "one leads");
    let killed = std::process::Command::new("kill").args(["-KILL", &a_pid.to_string()]).status().unwrap();
    assert!(killed.success());
    // b's 60 s wait ends only because a resigned.
    let second = leading(&b.expect("b leads once a's server is gone", is_leading).await);
    assert!(second > first, "tokens grow: {first} then {second}");
    a.expect("a says so", |l| l == "not leading").await;
    assert_eq!(a.wait().await.code(), Some(137), "128 + SIGKILL: {}", a.output());
}

#[tokio::test]
async fn an_unhealthy_server_resigns_keeps_running_and_stands_again_once_healthy() {
    let elector = elector().await;
    let url = elector.url();
    // The health endpoint this test controls: it answers while `serve` runs.
    let serve = |listener: tokio::net::TcpListener| {
        tokio::spawn(async move {
            loop {
                let _ = listener.accept().await;
            }
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let health = listener.local_addr().unwrap();
    let answering = serve(listener);
    let flags = ["--health-tcp", &health.to_string(), "--health-period", "50ms", "--health-threshold", "2"];
    let mut p = candidate(&url, "a", &flags, "echo pid=$$; exec sleep 600");
    let [said, led] = any_order(&mut p, [&|l| l.starts_with("pid="), &is_leading]).await;
    let (server, first) = (pid(&said), leading(&led));
    // The port stops answering: refused connections.
    answering.abort();
    let _ = answering.await;
    // The server is told first ("not leading"), then the lease released.
    any_order(
        &mut p,
        [&|l| l.contains("resigning from web: the server is unhealthy"), &|l| l == "not leading", &|l| {
            l.contains("resigned from web")
        }],
    )
    .await;
    assert_eq!(leader(&url).await, None, "released at once, not after the 60 s TTL");
    assert!(std::path::Path::new(&format!("/proc/{server}")).exists(), "the server keeps running");
    let again = serve(tokio::net::TcpListener::bind(health).await.unwrap());
    let second = leading(&p.expect("stands again once healthy", is_leading).await);
    assert!(second > first, "{first} then {second}");
    again.abort();
}

#[tokio::test]
async fn an_http_health_check_goes_by_the_status() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU16, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let elector = elector().await;
    let url = elector.url();
    // A health endpoint that answers the status the test sets.
    let status = Arc::new(AtomicU16::new(200));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let health = format!("http://{}/healthz", listener.local_addr().unwrap());
    let answer = status.clone();
    let server = tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let code = answer.load(Ordering::SeqCst);
            tokio::spawn(async move {
                let mut request = [0; 1024];
                let _ = stream.read(&mut request).await;
                let reply = format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    let flags = ["--health-http", &health, "--health-period", "50ms", "--health-threshold", "2"];
    let mut p = candidate(&url, "a", &flags, "exec sleep 600");
    let first = leading(&p.expect("leads on 200", is_leading).await);
    status.store(503, Ordering::SeqCst);
    any_order(&mut p, [&|l| l.contains("answered 503"), &|l| l == "not leading"]).await;
    status.store(204, Ordering::SeqCst);
    let second = leading(&p.expect("leads again on 204", is_leading).await);
    assert!(second > first, "{first} then {second}");
    server.abort();
}

#[tokio::test]
async fn the_leader_file_and_the_environment_say_what_stdout_says() {
    let elector = elector().await;
    let url = elector.url();
    let dir = std::env::temp_dir().join(format!("mpsync-elect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("leader.json");
    let read = || -> serde_json::Value { serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap() };
    let server = "echo env=$MPSYNC_ELECT_NAME,$MPSYNC_ELECT_LEADER_FILE; exec sleep 600";
    let mut p = candidate(&url, "a", &["--leader-file", path.to_str().unwrap()], server);
    let [env, led] = any_order(&mut p, [&|l| l.starts_with("env="), &is_leading]).await;
    assert_eq!(env, format!("env=web,{}", path.display()));
    let token = leading(&led);
    let file = read();
    assert_eq!(
        (&file["name"], &file["leader"], &file["token"]),
        (&"web".into(), &true.into(), &token.into()),
        "{file}"
    );
    assert!(file["valid_until_ms"].as_u64().is_some(), "{file}");
    p.signal("TERM");
    p.expect("resigned", |l| l == "not leading").await;
    let file = read();
    assert_eq!((&file["leader"], &file["token"]), (&false.into(), &serde_json::Value::Null), "{file}");
    assert_eq!(p.wait().await.code(), Some(143), "{}", p.output());
    assert_eq!(leader(&url).await, None);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn an_unreachable_elector_or_bad_input_is_exit_2_before_the_command_runs() {
    let mut p = Proc::mpsync(
        "unreachable",
        &args(&[
            "elect",
            "--elector",
            "http://127.0.0.1:1",
            "--address",
            "127.0.0.1:7001",
            "--ttl",
            "300ms",
            "web",
            "--",
            "sh",
            "-c",
            "echo ran",
        ]),
    );
    assert_eq!(p.wait().await.code(), Some(2), "{}", p.output());
    assert!(p.output().contains("stayed unreachable"), "{}", p.output());
    assert!(!p.output().lines().any(|l| l == "ran"), "{}", p.output());
    let mut bad = Proc::mpsync("bad", &args(&["elect", "--address", "nowhere", "web", "--", "true"]));
    assert_eq!(bad.wait().await.code(), Some(2), "{}", bad.output());
}

/// Waits for one line matching each of `wanted`, in any order: the
/// server's lines and mpsync's, and stdout and stderr, are written and read
/// side by side, so their order is not fixed. Returns them in the order of
/// `wanted`.
async fn any_order<const N: usize>(p: &mut Proc, wanted: [&dyn Fn(&str) -> bool; N]) -> [String; N] {
    let mut found: [Option<String>; N] = std::array::from_fn(|_| None);
    while found.iter().any(Option::is_none) {
        let line = p.expect("the lines awaited", |l| wanted.iter().zip(&found).any(|(w, f)| f.is_none() && w(l))).await;
        if let Some(slot) =
            wanted.iter().zip(found.iter_mut()).find_map(|(w, f)| (f.is_none() && w(&line)).then_some(f))
        {
            *slot = Some(line);
        }
    }
    found.map(Option::unwrap_or_default)
}
