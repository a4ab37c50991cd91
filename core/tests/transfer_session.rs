//! A leader's session and a transfer asked of it: it steps down at once by
//! default, or shows the request and leaves the resignation to the app
//! (sans-IO, `now` passed in).
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use mpsync_core::client::{ENTROPY_LEN, Error, Method, Options, Session, Step};
use mpsync_core::lease::{Output, Request, RequestId};
use mpsync_core::wire::{Kind, TransferView};

const MS: Duration = Duration::from_millis(1);

fn leader() -> Session {
    let options = Options { ttl: MS * 3000, holder: "me".into(), address: Some("10.0.0.1:80".into()) };
    Session::new("http://e", Kind::Election, "main", options, &[7; ENTROPY_LEN]).unwrap()
}

fn granted(token: u64, version: u64, transfer: Option<(&str, Option<&str>)>) -> Vec<u8> {
    let mut view = serde_json::json!({
        "name": "main", "holder": "me", "token": token, "version": version,
        "ttl_ms": 3000, "expires_in_ms": 3000, "address": "10.0.0.1:80",
    });
    if let Some((from, to)) = transfer {
        view["transfer"] = serde_json::json!({"from": from, "to": to});
    }
    serde_json::to_vec(&view).unwrap()
}

fn next_send(s: &mut Session) -> (RequestId, Request, Method) {
    loop {
        match s.next_step() {
            Some(Step::Send { id, request, http }) => return (id, request, http.method),
            Some(Step::Event(_)) => {}
            None => panic!("no request to send"),
        }
    }
}

/// Acquires with token 4, then makes the first renewal due and answers it
/// with `renewal`.
fn renewed(s: &mut Session, renewal: &[u8], now: Duration) {
    s.start_acquire(MS).unwrap();
    let (id, request, _) = next_send(s);
    s.answer(id, request, Ok((200, &granted(4, 9, None))), MS * 2);
    assert_eq!(s.next_step(), Some(Step::Event(Output::Acquired { token: 4 })));
    s.tick(now);
    let (id, request, _) = next_send(s);
    assert_eq!(request, Request::Renew { token: 4 });
    assert_eq!(s.answer(id, request, Ok((200, renewal)), now), None);
}

#[test]
fn a_leader_asked_to_hand_over_releases_at_once_and_reports_the_lease_lost() {
    let mut s = leader();
    renewed(&mut s, &granted(4, 11, Some(("me", Some("b")))), MS * 1100);
    let Some(Step::Send { request, http, .. }) = s.next_step() else { panic!("the release comes first") };
    assert_eq!((request, http.method), (Request::Release { token: 4 }, Method::Delete));
    assert_eq!(s.next_step(), Some(Step::Event(Output::Lost { token: 4 })));
    assert_eq!(s.lease(MS * 1100), None, "lost long before its deadline");
    assert_eq!(s.leader(MS * 1100), None);
    assert_eq!(s.transfer_requested(), None);
    assert_eq!(s.release(), Err(Error::NotHeld), "nothing left to release");
}

#[test]
fn a_leader_that_decides_itself_sees_the_request_and_resigns_when_ready() {
    let mut s = leader();
    s.step_down_on_transfer(false);
    renewed(&mut s, &granted(4, 11, Some(("me", None))), MS * 1100);
    assert_eq!(s.next_step(), None, "nothing sent, nothing lost");
    assert!(s.lease(MS * 1100).is_some());
    assert_eq!(s.transfer_requested(), Some(TransferView { from: "me".into(), to: None }));
    assert!(s.transfer_changed());
    assert!(!s.transfer_changed(), "told once");
    // The request withdrawn (or done) shows at the next renewal.
    s.tick(MS * 2200);
    let (id, request, _) = next_send(&mut s);
    s.answer(id, request, Ok((200, &granted(4, 12, None))), MS * 2200);
    assert_eq!(s.transfer_requested(), None);
    assert!(s.transfer_changed());
    // Asked again; the app resigns.
    s.tick(MS * 3300);
    let (id, request, _) = next_send(&mut s);
    s.answer(id, request, Ok((200, &granted(4, 13, Some(("me", Some("b")))))), MS * 3300);
    assert_eq!(s.transfer_requested().and_then(|t| t.to).as_deref(), Some("b"));
    s.release().unwrap();
    assert_eq!(next_send(&mut s).1, Request::Release { token: 4 });
    assert_eq!(s.transfer_requested(), None);
}

#[test]
fn turning_step_down_on_with_a_request_pending_steps_down_now() {
    let mut s = leader();
    s.step_down_on_transfer(false);
    renewed(&mut s, &granted(4, 11, Some(("me", Some("b")))), MS * 1100);
    s.step_down_on_transfer(true);
    assert_eq!(next_send(&mut s).1, Request::Release { token: 4 });
    assert_eq!(s.next_step(), Some(Step::Event(Output::Lost { token: 4 })));
}

#[test]
fn a_transfer_asked_of_someone_else_is_not_this_leaders() {
    let mut s = leader();
    renewed(&mut s, &granted(4, 11, Some(("other", Some("me")))), MS * 1100);
    assert_eq!(s.next_step(), None);
    assert!(s.lease(MS * 1100).is_some());
    assert_eq!(s.transfer_requested(), None);
}

#[test]
fn a_reserved_election_reads_as_held_so_candidates_wait() {
    let mut s = leader();
    s.start_acquire(MS).unwrap();
    let (id, request, _) = next_send(&mut s);
    let body = br#"{"holder":null,"expires_in_ms":2500,"version":14,"reason":"reserved"}"#;
    s.answer(id, request, Ok((409, body)), MS * 2);
    assert_eq!(s.acquisition(MS * 2), Err(Error::HeldBy(String::new())));
    assert_eq!(s.version(), 14);
}
