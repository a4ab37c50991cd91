//! `mpsync leader NAME --transfer-to ID` / `--transfer-away` against real
//! `mpsync elect` candidates: the leader's mpsync steps down at its next
//! renewal and campaigns again, the named candidate leads with a larger
//! token, and the reservation keeps the old leader from winning it back.
//! `--from` is the preStop hook's guard; `--wait` prints who leads next.

#![allow(clippy::unwrap_used, missing_docs)]

use testkit::proc::{Proc, args, elector, is_leading, leading};

/// `mpsync elect` for `holder`, renewing every second (TTL 3 s): it learns
/// of a transfer within a second.
fn candidate(url: &str, holder: &str, port: u16) -> Proc {
    let address = format!("127.0.0.1:{port}");
    let all = ["elect", "--elector", url, "--holder", holder, "--address", &address, "--ttl", "3s", "web", "--"];
    let mut all = args(&all);
    all.extend(args(&["sleep", "600"]));
    Proc::mpsync(holder, &all)
}

/// `mpsync leader` with `extra`, run to its end: exit code and output.
async fn leader(url: &str, extra: &[&str]) -> (i32, String) {
    let mut all = args(&["leader", "--elector", url]);
    all.extend(args(extra));
    let mut p = Proc::mpsync("leader", &all);
    let code = p.wait().await.code().unwrap();
    (code, p.output())
}

#[tokio::test]
async fn a_transfer_moves_leadership_to_the_named_candidate_and_away_again() {
    let elector = elector().await;
    let url = elector.url();
    let mut a = candidate(&url, "a", 7001);
    let first = leading(&a.expect("a leads", is_leading).await);
    let mut b = candidate(&url, "b", 7002);
    b.expect("b starts not leading", |l| l == "not leading").await;

    // Not a's pod: a preStop hook on b's asks nothing.
    let (code, out) = leader(&url, &["web", "--transfer-away", "--from", "b"]).await;
    assert_eq!((code, out.trim()), (0, "nothing asked: a leads, not b"), "{out}");

    let (code, out) = leader(&url, &["web", "--transfer-to", "b", "--wait", "20s"]).await;
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "asked a to hand over to b", "{out}");
    let next: Vec<&str> = lines[1].split(' ').collect();
    assert_eq!(next[..2], ["b", "127.0.0.1:7002"], "{out}");
    let second: u64 = next[2].parse().unwrap();
    assert!(second > first, "fenced as always: {first} then {second}");
    a.expect("a says why", |l| l.contains("resigning from web: leadership transfer to b asked")).await;
    a.expect("a is told", |l| l == "not leading").await;
    assert_eq!(leading(&b.expect("b leads", is_leading).await), second);

    // The hook on b's pod: away from b, and b's own campaign cannot win it
    // back while the reservation lasts, so a does.
    let (code, out) = leader(&url, &["web", "--transfer-away", "--from", "b", "--wait", "20s"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.lines().any(|l| l.starts_with("a 127.0.0.1:7001 ")), "{out}");
    b.expect("b steps down", |l| l == "not leading").await;
    assert!(leading(&a.expect("a leads again", is_leading).await) > second);

    // It leads already: nothing to do.
    let (code, out) = leader(&url, &["web", "--transfer-to", "a"]).await;
    assert_eq!((code, out.trim()), (0, "nothing asked: a leads already"), "{out}");
}

#[tokio::test]
async fn nobody_to_ask_and_bad_input_have_their_own_exit_codes() {
    let elector = elector().await;
    let url = elector.url();
    let (code, out) = leader(&url, &["nobody", "--transfer-away"]).await;
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("nobody leads nobody"), "{out}");
    // The hook's guard: nobody leads, so certainly not this pod.
    let (code, out) = leader(&url, &["nobody", "--transfer-away", "--from", "pod-0"]).await;
    assert_eq!(code, 0, "{out}");
    for bad in [
        &["a", "b", "--transfer-away"][..],
        &["a", "--transfer-to", "b", "--transfer-away"],
        &["a", "--transfer-to", "b", "--watch"],
        &["a", "--wait", "5s"],
        &["a", "--transfer-to", ""],
    ] {
        let (code, out) = leader(&url, bad).await;
        assert_eq!(code, 2, "{bad:?}: {out}");
    }
}
