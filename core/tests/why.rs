//! `Record::why`: every write that changes a record's holder says why, and
//! a renewal keeps it (one test per reason, over the public rules).
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use mpsync_core::line::{LeaveOutcome, LineOutcome, Queue, decide_leave, decide_line};
use mpsync_core::record::{
    Claim, Current, Outcome, Record, ReleaseOutcome, decide_claim, decide_clear, decide_release,
};
use mpsync_core::{Transfer, Why, record::ended_by_session};

const S: Duration = Duration::from_secs(1);

fn claim(holder: &str, token: Option<u64>) -> Claim<'_> {
    Claim { holder, ttl_ms: 10_000, token, address: None, key: None, shared: false, permits: None }
}

fn at(record: &Record) -> Current<'_> {
    Current { record, version: 7, observed_at: Duration::ZERO }
}

fn acquired(current: Option<&Record>, holder: &str, now: Duration) -> Record {
    match decide_claim(current.map(at).as_ref(), &claim(holder, None), now) {
        Outcome::Acquired { record, .. } => record,
        other => panic!("{holder} did not acquire: {other:?}"),
    }
}

fn released(record: &Record, holder: &str) -> Record {
    match decide_release(Some(&at(record)), holder, record.token, None, S) {
        ReleaseOutcome::Released { record } => record,
        other => panic!("{holder} did not release: {other:?}"),
    }
}

#[test]
fn taken_while_free_is_acquired_and_a_renewal_keeps_the_why() {
    let first = acquired(None, "a", S);
    assert_eq!(first.why, Some(Why::Acquired), "never held");
    let again = acquired(Some(&released(&first, "a")), "b", S);
    assert_eq!(again.why, Some(Why::Acquired), "released before");
    let Outcome::Renewed { record } = decide_claim(Some(&at(&again)), &claim("b", Some(again.token)), S) else {
        panic!()
    };
    assert_eq!(record.why, Some(Why::Acquired), "a renewal is no change of holder");
}

#[test]
fn a_takeover_of_a_lease_that_ran_out_and_the_judges_clearing_are_expired() {
    let held = acquired(None, "a", S);
    assert_eq!(acquired(Some(&held), "b", S * 11).why, Some(Why::Expired));
    let cleared = decide_clear(&at(&held), S * 11).unwrap();
    assert_eq!((cleared.holder, cleared.why), (None, Some(Why::Expired)));
}

#[test]
fn a_release_is_released_also_when_it_hands_the_lock_on() {
    let held = acquired(None, "a", S);
    assert_eq!(released(&held, "a").why, Some(Why::Released));
    // b waits in line; a's release hands it the lock in the same write.
    let queue = Queue { ticket: None, session: None, refresh: true, max_waiters: 3 };
    let LineOutcome::Queued { record: Some(waiting), ticket, .. } =
        decide_line(Some(&at(&held)), &claim("b", None), &queue, S)
    else {
        panic!()
    };
    let handed = released(&waiting, "a");
    assert_eq!((handed.holder.as_deref(), handed.why), (Some("b"), Some(Why::Released)));
    // b gives its place up with the lock it was handed: released on.
    let LeaveOutcome::Left { record, .. } = decide_leave(Some(&at(&handed)), "b", ticket, None, S) else { panic!() };
    assert_eq!((record.holder, record.why), (None, Some(Why::Released)));
}

#[test]
fn a_line_grant_is_acquired_or_expired() {
    let queue = Queue { ticket: None, session: None, refresh: true, max_waiters: 3 };
    let LineOutcome::Granted { record: held, .. } = decide_line(None, &claim("a", None), &queue, S) else { panic!() };
    assert_eq!(held.why, Some(Why::Acquired));
    let LineOutcome::Granted { record, .. } = decide_line(Some(&at(&held)), &claim("b", None), &queue, S * 11) else {
        panic!()
    };
    assert_eq!((record.holder.as_deref(), record.why), (Some("b"), Some(Why::Expired)));
}

#[test]
fn stepping_down_when_asked_is_transferred() {
    let held = acquired(None, "a", S);
    let asked =
        Record { transfer: Some(Transfer { from: "a".into(), to: Some("b".into()), over: None }), ..held.clone() };
    assert_eq!(released(&asked, "a").why, Some(Why::Transferred));
    // A transfer asked of someone else (stale) does not make it one.
    let stale = Record { transfer: Some(Transfer { from: "z".into(), to: None, over: None }), ..held };
    assert_eq!(released(&stale, "a").why, Some(Why::Released));
}

#[test]
fn a_release_for_a_session_that_ended_is_session_ended() {
    let held = acquired(None, "a", S);
    assert_eq!(ended_by_session(released(&held, "a"), &held).why, Some(Why::SessionEnded));
    // Nothing changed hands (a shared hold, say): the why stays.
    assert_eq!(ended_by_session(held.clone(), &held).why, Some(Why::Acquired));
}
