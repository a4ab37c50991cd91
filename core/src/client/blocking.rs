//! The blocking calls (`lock-within`, `campaign`): one driver, one policy.
//!
//! [`Acquire`] is the driver, sans-IO: it tells its caller to make an
//! attempt, to long-poll, or to sleep, and takes the outcomes back. The
//! native client and the portable guest run this same loop and differ only
//! in how they send a request and how they sleep. [`Blocking`] is its
//! retry policy and [`Backoff`] the pause between failures.

use core::time::Duration;

use super::error::Error;
use super::http::{HttpRequest, decode_read};
use super::session::Session;
use crate::lease::Held;

/// The shortest long-poll slice worth sending.
const MIN_SLICE: Duration = Duration::from_millis(1);

/// The pause after consecutive failures: doubling from a twentieth of the
/// TTL up to half of it, jittered (half of each pause fixed, half drawn at
/// random, so clients refused together do not come back together), and
/// never shorter than what the elector asked for with `retry-after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    /// The backoff of a lease of `ttl`.
    pub fn new(ttl: Duration) -> Backoff {
        let base = (ttl / 20).max(Duration::from_millis(1));
        Backoff { base, cap: (ttl / 2).max(base), failures: 0 }
    }

    /// The pause after one more failure; `random` is any random number
    /// (the jitter), `floor` what a `retry-after` asked for.
    pub fn next(&mut self, random: u64, floor: Option<Duration>) -> Duration {
        let full = self.base.saturating_mul(1 << self.failures.min(20)).min(self.cap);
        self.failures = self.failures.saturating_add(1);
        let half = full / 2;
        let spread = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).saturating_add(1);
        let pause = half + Duration::from_nanos(random % spread);
        pause.max(floor.unwrap_or(Duration::ZERO))
    }

    /// A success: the next failure starts from the shortest pause again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// What a blocking acquire does after an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    /// Someone else holds it: wait (long-poll) for the record to change,
    /// for at most this long, then try again.
    Wait(Duration),
    /// The elector failed, or refused the long-poll: try again at this
    /// instant.
    RetryAt(Duration),
    /// Give up with this error.
    Report(Error),
}

/// The retry policy of the blocking calls (`lock-within`, `campaign`).
///
/// While someone else holds the record it waits for the record to change,
/// up to the caller's deadline, then reports `timeout`. A long-poll that
/// fails (the elector at its `--max-long-polls`, a dropped connection) is
/// followed by a pause of the [`Backoff`] before the next attempt, so an
/// overloaded elector sees fewer requests, not more. An elector that fails
/// an attempt is retried after the same backoff for up to one TTL (a
/// restart, a blip), then reported `unavailable`, never later than the
/// caller's deadline. Invalid names and options are reported at once.
#[derive(Debug, Clone)]
pub struct Blocking {
    deadline: Duration,
    ttl: Duration,
    failing_since: Option<Duration>,
    backoff: Backoff,
}

impl Blocking {
    /// A blocking call started at `now` that waits up to `timeout`.
    pub fn new(now: Duration, timeout: Duration, ttl: Duration) -> Blocking {
        Blocking { deadline: now.saturating_add(timeout), ttl, failing_since: None, backoff: Backoff::new(ttl) }
    }

    /// The caller's deadline.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// What to do after an attempt at `now` failed with `error`; `random`
    /// jitters the backoff.
    pub fn after(&mut self, error: Error, now: Duration, random: u64) -> Then {
        match error {
            Error::HeldBy(_) => {
                self.failing_since = None;
                if now >= self.deadline { Then::Report(Error::Timeout) } else { Then::Wait(self.deadline - now) }
            }
            Error::InvalidName(_) | Error::InvalidOption(_) | Error::Timeout => Then::Report(error),
            Error::Unavailable(_) | Error::NotHeld => {
                let since = *self.failing_since.get_or_insert(now);
                let retry = now + self.backoff.next(random, None);
                if retry >= self.deadline || now - since >= self.ttl {
                    Then::Report(error)
                } else {
                    Then::RetryAt(retry)
                }
            }
        }
    }

    /// What to do after the long-poll failed at `now` (`retry_after`: the
    /// elector's `retry-after`, if it sent one): back off, then attempt
    /// again; a pause that would end past the deadline ends at it, for one
    /// last attempt (the lock may have been released meanwhile).
    pub fn after_failed_wait(&mut self, now: Duration, retry_after: Option<Duration>, random: u64) -> Then {
        if now >= self.deadline {
            return Then::Report(Error::Timeout);
        }
        Then::RetryAt((now + self.backoff.next(random, retry_after)).min(self.deadline))
    }

    /// The long-poll was answered: the elector is serving again.
    pub fn waited(&mut self) {
        self.backoff.reset();
    }
}

/// What the caller of an [`Acquire`] does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Make one attempt: [`Session::start_acquire`], send what the session
    /// asks for, then pass [`Session::acquisition`] to
    /// [`Acquire::attempted`].
    Attempt,
    /// Send this long-poll and pass its answer to [`Acquire::waited`].
    Wait(HttpRequest),
    /// Sleep until this instant, then ask again.
    SleepUntil(Duration),
    /// The call is over: return this.
    Done(Result<Held, Error>),
}

#[derive(Debug, Clone)]
enum State {
    Attempt,
    /// Long-poll for a change from this version.
    Wait(u64),
    Sleep(Duration),
    Done(Result<Held, Error>),
}

/// One blocking acquire, driven by its caller (see the [module
/// docs](self)):
///
/// ```ignore
/// let mut acquire = Acquire::new(now(), timeout, ttl);
/// loop {
///     match acquire.next(&mut session, now(), None) {
///         Action::Attempt => acquire.attempted(try_acquire(), &mut session, now()),
///         Action::Wait(request) => {
///             let reply = send(&request);
///             acquire.waited(reply, retry_after, &mut session, now());
///         }
///         Action::SleepUntil(at) => sleep_until(at),
///         Action::Done(result) => {
///             if let Some(leave) = session.leave_line() { send(&leave); }
///             return result;
///         }
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Acquire {
    blocking: Blocking,
    state: State,
}

impl Acquire {
    /// A blocking acquire started at `now` that waits up to `timeout` for
    /// a lease of `ttl`.
    pub fn new(now: Duration, timeout: Duration, ttl: Duration) -> Acquire {
        Acquire { blocking: Blocking::new(now, timeout, ttl), state: State::Attempt }
    }

    /// What to do at `now`. A long-poll, or a wait in a lock's line,
    /// lasts at most until the deadline, and at most `cap` when the caller
    /// must be back sooner (to renew other leases, for example).
    ///
    /// A lock is acquired in its line (see `mpsync_core::line`): each
    /// attempt keeps the holder's place and parks on the elector for up to
    /// a third of the TTL (so the place is refreshed well within it) until
    /// the lock is handed over; when the call gives up, send
    /// [`Session::leave_line`].
    pub fn next(&mut self, session: &mut Session, now: Duration, cap: Option<Duration>) -> Action {
        let left = self.blocking.deadline().saturating_sub(now);
        let slice = cap.map_or(left, |cap| left.min(cap)).max(MIN_SLICE);
        match &self.state {
            State::Attempt => self.attempt(session, slice),
            State::Wait(version) => Action::Wait(session.wait_request_from(*version, slice)),
            State::Sleep(at) if now >= *at => self.attempt(session, slice),
            State::Sleep(at) => Action::SleepUntil(*at),
            State::Done(result) => Action::Done(result.clone()),
        }
    }

    fn attempt(&self, session: &mut Session, slice: Duration) -> Action {
        session.wait_in_line(Some(slice.min(self.blocking.ttl / 3).min(super::POLL_SLICE)));
        Action::Attempt
    }

    /// The outcome of the attempt asked for by [`Action::Attempt`].
    pub fn attempted(&mut self, result: Result<Held, Error>, session: &mut Session, now: Duration) {
        self.state = match result {
            Ok(held) => State::Done(Ok(held)),
            // In line, but the elector could not park the attempt: back
            // off, as after a refused long-poll.
            Err(_) if session.overloaded() => match self.blocking.after_failed_wait(now, None, session.draw()) {
                Then::RetryAt(at) => State::Sleep(at),
                _ => State::Done(Err(Error::Timeout)),
            },
            // Waiting in line: the attempt itself waited; go again.
            Err(Error::HeldBy(_)) if session.in_line() => {
                self.blocking.waited();
                if now >= self.blocking.deadline() { State::Done(Err(Error::Timeout)) } else { State::Attempt }
            }
            Err(error) => match self.blocking.after(error, now, session.draw()) {
                Then::Report(error) => State::Done(Err(error)),
                Then::RetryAt(at) => State::Sleep(at),
                // From the record the refusal saw. Not from the session's
                // last version: a concurrent read (an election's leader
                // watch) may have seen the release since, and a wait from
                // there would sleep through the free record for a whole
                // slice.
                Then::Wait(_) => State::Wait(session.refused_at().unwrap_or(session.version())),
            },
        };
    }

    /// The answer to the long-poll of [`Action::Wait`] (`Err`: none came,
    /// with why), and the `retry-after` it carried. The session takes in
    /// what it read; returns whether the leader changed (elections).
    pub fn waited(
        &mut self,
        reply: Result<(u16, &[u8]), String>,
        retry_after: Option<Duration>,
        session: &mut Session,
        now: Duration,
    ) -> bool {
        match reply.map(|(status, body)| decode_read(status, body)) {
            Ok(Ok(read)) => {
                self.blocking.waited();
                self.state =
                    if now >= self.blocking.deadline() { State::Done(Err(Error::Timeout)) } else { State::Attempt };
                session.observe(&read)
            }
            _ => {
                self.state = match self.blocking.after_failed_wait(now, retry_after, session.draw()) {
                    Then::RetryAt(at) => State::Sleep(at),
                    _ => State::Done(Err(Error::Timeout)),
                };
                false
            }
        }
    }
}

/// Parses a `retry-after` header of delta-seconds (the form the elector
/// sends); an HTTP date, or anything else, is ignored.
pub fn retry_after(value: &[u8]) -> Option<Duration> {
    let text = core::str::from_utf8(value).ok()?.trim();
    text.parse::<u64>().ok().map(|s| Duration::from_secs(s.min(3600)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::session::{ENTROPY_LEN, Options};
    use crate::wire::Kind;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_unavailable_elector_is_retried_for_one_ttl_then_reported() {
        let ttl = MS * 1000;
        let mut b = Blocking::new(Duration::ZERO, MS * 60_000, ttl);
        let down = || Error::Unavailable("down".into());
        // No jitter drawn (random 0): each pause is half the backoff step.
        assert_eq!(b.after(down(), MS * 10, 0), Then::RetryAt(MS * 35));
        assert_eq!(b.after(down(), MS * 35, 0), Then::RetryAt(MS * 85));
        assert_eq!(b.after(down(), MS * 900, 0), Then::RetryAt(MS * 1000));
        assert_eq!(b.after(down(), MS * 1010, 0), Then::Report(down()));
        assert_eq!(b.after(Error::HeldBy("x".into()), MS * 2000, 0), Then::Wait(MS * 58_000));
        assert!(matches!(b.after(down(), MS * 2100, 0), Then::RetryAt(_)), "a held answer restarts the count");
        assert_eq!(b.after(Error::HeldBy("x".into()), MS * 60_000, 0), Then::Report(Error::Timeout));
        let mut short = Blocking::new(Duration::ZERO, MS * 20, ttl);
        assert_eq!(short.after(down(), Duration::ZERO, 0), Then::Report(down()), "never past the caller's deadline");
    }

    #[test]
    fn the_backoff_doubles_to_its_cap_jitters_and_honours_retry_after() {
        let mut b = Backoff::new(MS * 1000);
        let pauses: Vec<_> = (0..6).map(|_| b.next(0, None)).collect();
        assert_eq!(pauses, [MS * 25, MS * 50, MS * 100, MS * 200, MS * 250, MS * 250]);
        assert_eq!(b.next(u64::MAX, None), MS * 250 + Duration::from_nanos(u64::MAX % 250_000_001));
        let mut b = Backoff::new(MS * 1000);
        let jittered = b.next(12_345_678, None);
        assert!(jittered > MS * 25 && jittered <= MS * 50, "{jittered:?}");
        assert_eq!(b.next(0, Some(MS * 1000)), MS * 1000, "retry-after is a floor");
        b.reset();
        assert_eq!(b.next(0, None), MS * 25);
        assert_eq!(retry_after(b" 2"), Some(MS * 2000));
        assert_eq!(retry_after(b"Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    fn session() -> Session {
        let options = Options { ttl: MS * 1000, holder: "me".into(), address: None };
        Session::new("http://e", Kind::Lock, "db", options, &[3; ENTROPY_LEN]).unwrap()
    }

    /// The overload the backoff is for: the claim refused (someone holds
    /// it) and the long-poll refused at once (the elector is at its
    /// `--max-long-polls`). Before, the loop claimed again at once; now it
    /// sleeps between attempts, longer each time.
    #[test]
    fn a_refused_long_poll_backs_off_before_the_next_attempt() {
        let mut s = session();
        let mut a = Acquire::new(Duration::ZERO, MS * 10_000, MS * 1000);
        let mut now = Duration::ZERO;
        let mut pauses = Vec::new();
        for _ in 0..5 {
            assert_eq!(a.next(&mut s, now, None), Action::Attempt);
            a.attempted(Err(Error::HeldBy("other".into())), &mut s, now);
            let Action::Wait(request) = a.next(&mut s, now, None) else { panic!("a held lock is waited on") };
            assert!(request.path.starts_with("/v1/locks/db?wait="), "{}", request.path);
            a.waited(Ok((429, br#"{"error":"unavailable","message":"too many long-polls"}"#)), None, &mut s, now);
            let Action::SleepUntil(at) = a.next(&mut s, now, None) else { panic!("a refused long-poll backs off") };
            pauses.push(at - now);
            now = at;
        }
        // Each pause is drawn from [step/2, step]; the steps double from a
        // twentieth of the TTL up to half of it.
        for (pause, step) in pauses.iter().zip([50, 100, 200, 400, 500]) {
            assert!(*pause >= MS * step / 2 && *pause <= MS * step, "{pauses:?}");
        }
        a.attempted(Err(Error::HeldBy("other".into())), &mut s, now);
        let Action::Wait(_) = a.next(&mut s, now, None) else { panic!() };
        a.waited(Err("connection refused".into()), Some(MS * 3000), &mut s, now);
        assert_eq!(a.next(&mut s, now, None), Action::SleepUntil(now + MS * 3000), "retry-after is honoured");
    }

    /// An election's leader watch reads the record beside the campaign: it
    /// may learn the release between the refusal and the wait. The wait
    /// starts from what the refusal saw, so it is answered at once;
    /// from the watch's version it slept a whole slice on a free record.
    #[test]
    fn a_wait_starts_from_the_refusal_not_from_a_later_read() {
        let options = Options { ttl: MS * 1000, holder: "me".into(), address: None };
        let mut s = Session::new("http://e", Kind::Election, "lead", options, &[3; ENTROPY_LEN]).unwrap();
        let mut a = Acquire::new(Duration::ZERO, MS * 60_000, MS * 1000);
        assert_eq!(a.next(&mut s, Duration::ZERO, None), Action::Attempt);
        s.start_acquire(Duration::ZERO).unwrap();
        let Some(crate::client::session::Step::Send { id, request, .. }) = s.next_step() else { panic!("a claim") };
        let held = br#"{"name":"lead","reason":"held","holder":"you","version":14,"expires_in_ms":900}"#;
        s.answer(id, request, Ok((409, held)), MS);
        let refused = s.acquisition(MS);
        // The leader watch: released meanwhile.
        s.observe(&decode_read(404, br#"{"error":"not_found","message":"free","version":16}"#).unwrap());
        a.attempted(refused, &mut s, MS);
        let Action::Wait(request) = a.next(&mut s, MS, None) else { panic!("a held election is waited on") };
        assert!(request.path.starts_with("/v1/elections/lead?wait=14&"), "{}", request.path);
    }

    #[test]
    fn a_backoff_past_the_deadline_ends_at_it_with_one_last_attempt() {
        let mut s = session();
        let mut a = Acquire::new(Duration::ZERO, MS * 300, MS * 60_000);
        a.attempted(Err(Error::HeldBy("other".into())), &mut s, Duration::ZERO);
        let Action::Wait(_) = a.next(&mut s, Duration::ZERO, None) else { panic!() };
        a.waited(Ok((429, b"{}")), Some(MS * 1000), &mut s, MS * 10);
        assert_eq!(a.next(&mut s, MS * 10, None), Action::SleepUntil(MS * 300));
        assert_eq!(a.next(&mut s, MS * 300, None), Action::Attempt, "one last attempt at the deadline");
        a.attempted(Err(Error::HeldBy("other".into())), &mut s, MS * 300);
        assert_eq!(a.next(&mut s, MS * 300, None), Action::Done(Err(Error::Timeout)));
    }

    #[test]
    fn a_wait_is_capped_and_a_late_answer_is_a_timeout() {
        let mut s = session();
        let mut a = Acquire::new(Duration::ZERO, MS * 500, MS * 1000);
        a.attempted(Err(Error::HeldBy("other".into())), &mut s, Duration::ZERO);
        let Action::Wait(request) = a.next(&mut s, MS * 100, Some(MS * 50)) else { panic!() };
        assert!(request.path.ends_with("timeout_ms=50"), "{}", request.path);
        let free = br#"{"error":"not_found","message":"free","version":3}"#;
        a.waited(Ok((404, free)), None, &mut s, MS * 200);
        assert_eq!(a.next(&mut s, MS * 200, None), Action::Attempt);
        a.attempted(Err(Error::HeldBy("other".into())), &mut s, MS * 200);
        a.waited(Ok((404, free)), None, &mut s, MS * 500);
        assert_eq!(a.next(&mut s, MS * 500, None), Action::Done(Err(Error::Timeout)));
        let mut b = Acquire::new(Duration::ZERO, MS * 500, MS * 1000);
        b.attempted(Err(Error::InvalidOption("ttl".into())), &mut s, Duration::ZERO);
        assert_eq!(b.next(&mut s, Duration::ZERO, None), Action::Done(Err(Error::InvalidOption("ttl".into()))));
    }
}
