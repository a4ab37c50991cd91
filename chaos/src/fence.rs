//! The fencing-aware resource, which is also the history's recorder.
//!
//! Critical sections report to it over HTTP: `POST /enter`, `/write` and
//! `/exit`, each with `lock`, `client` and `token` in the query, and how
//! the lock is held if it is shared (`shared=true` for a reader,
//! `permit=P&permits=N` for a semaphore's permit; [`Hold`]). Entering and
//! writing are *fenced*: accepted only when no hold they exclude came with
//! a larger token (for a plain lock: when the token is at least the
//! largest this resource has seen for that lock; [`Seen::admit`]; entering
//! registers the new holder's token, so a late write from an earlier holder
//! is refused even before the new holder writes), answered 409 otherwise. Every request is
//! recorded, accepted or not, stamped on this process's monotonic clock, in
//! an append-only history (in memory, and as JSON lines in a file if asked).
//! The stranger's attempts on other holders' leases
//! ([`crate::stranger`]) go into the same history, with the elector's
//! verdict, and so do the marks the fairness check reads
//! ([`crate::fair`]): when a contender started waiting for a lock, when
//! it stopped, and each place in a lock's line the line watcher
//! ([`crate::watcher`]) saw. The watch observer ([`crate::observer`])
//! records there each view of a lock it accepted from `POST /v1/watch`,
//! and its plain reads at the end, for the checks of [`crate::views`].

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde::{Deserialize, Serialize};

pub use crate::hold::Hold;
use crate::hold::Seen;

/// The client id of the stranger's attempts in the history.
pub const STRANGER: &str = "stranger";

/// The client id of the watch observer's records in the history.
pub const OBSERVER: &str = "observer";

/// The client id of the transferrer's records in the history.
pub const TRANSFERRER: &str = "transferrer";

/// A view of a lock, as the watch observer records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The view's version.
    pub version: u64,
    /// Its holder, fencing token and hold; none when free.
    pub lease: Option<(String, u64, Hold)>,
}

/// What a critical section reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// It was told it holds the lock.
    Enter,
    /// It wrote to the resource.
    Write,
    /// It is about to give the lock up.
    Exit,
    /// An election's server saw its term taken away (its `mpsync elect`
    /// stepped down or lost the lease): the section ended at its last
    /// report before this one.
    Lost,
    /// The stranger tried to renew someone else's lease (`accepted`: the
    /// elector granted it).
    Renew,
    /// The stranger tried to release someone else's lease (`accepted`: the
    /// elector released it).
    Release,
    /// A contender started waiting for the lock: the run started its
    /// `mpsync lock` process (or a racer of the control its attempt).
    Wait,
    /// That process ended (or the racer gave up), in its section or not.
    Quit,
    /// The line watcher saw `client` waiting in the lock's line with the
    /// ticket in `token`, for the first time since it last did not: the
    /// place existed by then.
    Queued,
    /// The line watcher saw that place (ticket in `token`) gone, and
    /// `client` not holding the lock: it gave its place up, or lost it,
    /// after it was last seen (`since_us`).
    Left,
    /// The line watcher saw that place (ticket in `token`) gone and
    /// `client` among the lock's holders: the lock was handed to it by
    /// then.
    Handed,
    /// The watch observer accepted a view of the lock from a watch
    /// answer: `holder` (none: free) with `token` (0 when free), at view
    /// `version`, from `elector`.
    Watched,
    /// The watch observer read the lock with a plain `GET` once the run's
    /// faults were over (`accepted`: the read answered): what it showed,
    /// as for [`Step::Watched`].
    Read,
    /// The watch observer starts round `token` (from 0) of its reads at the
    /// end: a plain read of every lock it follows, then, unless its views
    /// agree with them, one more watch.
    Settle,
    /// The transferrer read the election with a plain `GET`: `holder` led
    /// with `token`.
    Leader,
    /// The transferrer asked a transfer of the election (`since_us`: when it
    /// asked) from `from` (none: whoever leads) to `to` (none: anyone
    /// else); `accepted`: answered 200, with the leader `holder` and its
    /// `token`; refused: `why` is the conflict's reason and `holder` the
    /// leader it names, if any.
    Transfer,
    /// A change of holder of the lock in an elector's history (`GET
    /// /v1/history`), read once the run is over: `holder` the holder after
    /// (none: nobody), `token` the token after, `version` its seq, from
    /// `elector`; `from` the holder before, `why` why it changed.
    History,
}

impl Step {
    /// Whether a critical section reports this step (the others are the
    /// stranger's).
    pub fn is_section(self) -> bool {
        matches!(self, Step::Enter | Step::Write | Step::Exit | Step::Lost)
    }
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Microseconds since the run started, when the resource received it.
    pub at_us: u64,
    /// What happened.
    pub step: Step,
    /// The lock.
    pub lock: String,
    /// The contender.
    pub client: String,
    /// The fencing token it held (a [`Step::Queued`]: its ticket).
    pub token: u64,
    /// Whether the resource accepted it (exits are always accepted); for
    /// the stranger's steps, whether the elector did.
    pub accepted: bool,
    /// The stranger's steps: the holder whose lease it tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// How the section holds the lock (a `wait` or `queued` mark: how it
    /// waits for it).
    #[serde(default, skip_serializing_if = "Hold::is_exclusive")]
    pub hold: Hold,
    /// A `left` mark: when the place was last seen; a transfer: when it was
    /// asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_us: Option<u64>,
    /// The observer's views and reads: the view's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The observer's views and reads, and history entries: the elector
    /// that answered (its URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elector: Option<String>,
    /// A transfer: the leader it was asked of (none: whoever leads); a
    /// history entry: the holder before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// A transfer: the candidate it was asked for (none: anyone else).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// A transfer refused: the conflict's reason; a history entry: why the
    /// holder changed (its wire name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// A transfer accepted: the leader's lease TTL, which is how long the
    /// reservation lasts from its release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

impl Event {
    /// An event not stamped yet.
    pub(crate) fn new(step: Step, lock: &str, client: &str, token: u64, accepted: bool) -> Event {
        Event {
            at_us: 0,
            step,
            lock: lock.to_owned(),
            client: client.to_owned(),
            token,
            accepted,
            holder: None,
            hold: Hold::Exclusive,
            since_us: None,
            version: None,
            elector: None,
            from: None,
            to: None,
            why: None,
            ttl_ms: None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Report {
    lock: String,
    client: String,
    token: u64,
    shared: Option<bool>,
    permit: Option<u32>,
    permits: Option<u32>,
}

struct Inner {
    seen: HashMap<String, Seen>,
    /// Each client's last step, and its lock.
    last: HashMap<String, (Step, String)>,
    events: Vec<Event>,
    file: Option<std::fs::File>,
}

/// The resource and its history.
#[derive(Clone)]
pub struct Fence {
    origin: Instant,
    inner: Arc<Mutex<Inner>>,
    entered: Arc<tokio::sync::watch::Sender<usize>>,
}

impl Fence {
    /// A resource whose history is also appended to `file`, if given.
    pub fn new(origin: Instant, file: Option<std::fs::File>) -> Fence {
        Fence {
            origin,
            inner: Arc::new(Mutex::new(Inner { seen: HashMap::new(), last: HashMap::new(), events: Vec::new(), file })),
            entered: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        mpsync_core::lock(&self.inner)
    }

    /// Records one report of a critical section holding `lock` as `hold`,
    /// and decides it.
    pub fn record(&self, step: Step, lock: &str, client: &str, token: u64, hold: Hold) -> bool {
        let mut inner = self.inner();
        let accepted = match step {
            Step::Enter | Step::Write => inner.seen.entry(lock.to_owned()).or_default().admit(hold, token),
            Step::Exit | Step::Lost => true,
            // Not the resource's to decide: see `record_attempt` and `mark`.
            Step::Renew
            | Step::Release
            | Step::Wait
            | Step::Quit
            | Step::Queued
            | Step::Left
            | Step::Handed
            | Step::Watched
            | Step::Read
            | Step::Settle
            | Step::Leader
            | Step::Transfer
            | Step::History => false,
        };
        self.append(inner, Event { hold, ..Event::new(step, lock, client, token, accepted) });
        // Hand-overs of the exclusive holds only: the shared ones come
        // many at a time, and a run of N hand-overs tests the plain locks
        // as much as it did before them.
        if step == Step::Enter && hold.is_exclusive() {
            self.entered.send_modify(|n| *n += 1);
        }
        accepted
    }

    /// Records a mark of the fairness check ([`Step::Wait`],
    /// [`Step::Quit`], [`Step::Queued`] and [`Step::Handed`] with the ticket
    /// as `n`), for a wait for `hold`.
    pub fn mark(&self, step: Step, lock: &str, client: &str, n: u64, hold: Hold) {
        debug_assert!(matches!(step, Step::Wait | Step::Quit | Step::Queued | Step::Handed));
        self.append(self.inner(), Event { hold, ..Event::new(step, lock, client, n, true) });
    }

    /// Records that `client`'s place `ticket` in `lock`'s line, last seen at
    /// `since_us`, is gone while it holds nothing ([`Step::Left`]).
    pub fn mark_left(&self, lock: &str, client: &str, ticket: u64, since_us: u64) {
        let event = Event { since_us: Some(since_us), ..Event::new(Step::Left, lock, client, ticket, true) };
        self.append(self.inner(), event);
    }

    /// Records one of the stranger's attempts on `holder`'s lease of `lock`
    /// with `token`, and whether the elector accepted it.
    pub fn record_attempt(&self, step: Step, lock: &str, holder: &str, token: u64, accepted: bool) {
        let event = Event { holder: Some(holder.to_owned()), ..Event::new(step, lock, STRANGER, token, accepted) };
        self.append(self.inner(), event);
    }

    /// Records a view of `lock` the watch observer accepted
    /// ([`Step::Watched`]) or read ([`Step::Read`]; `answered` false: the
    /// read failed, and `view` is `None`), as `elector` answered it.
    pub fn record_view(&self, step: Step, lock: &str, view: Option<&View>, elector: &str, answered: bool) {
        debug_assert!(matches!(step, Step::Watched | Step::Read));
        let mut event = Event::new(step, lock, OBSERVER, 0, answered);
        event.elector = Some(elector.to_owned());
        if let Some(view) = view {
            event.version = Some(view.version);
            if let Some((holder, token, hold)) = &view.lease {
                (event.holder, event.token, event.hold) = (Some(holder.clone()), *token, *hold);
            }
        }
        self.append(self.inner(), event);
    }

    /// Records a change of holder in `elector`'s history.
    pub fn record_history(&self, entry: &mpsync_core::history::Entry, elector: &str) {
        let mut event = Event::new(Step::History, &entry.name, OBSERVER, entry.token, true);
        (event.holder, event.from) = (entry.to.clone(), entry.from.clone());
        (event.version, event.elector) = (Some(entry.seq), Some(elector.to_owned()));
        event.why = entry.why.map(|w| w.as_str().to_owned());
        self.append(self.inner(), event);
    }

    /// Records what the transferrer ([`crate::transferrer`]) read
    /// ([`Step::Leader`]) or asked ([`Step::Transfer`]; see there): `event`
    /// as the caller built it, stamped now.
    pub fn record_transfer(&self, event: Event) {
        debug_assert!(matches!(event.step, Step::Leader | Step::Transfer));
        self.append(self.inner(), event);
    }

    /// Marks the start of round `round` of the observer's reads at the end
    /// ([`Step::Settle`]).
    pub fn mark_settle(&self, round: u64) {
        self.append(self.inner(), Event::new(Step::Settle, "", OBSERVER, round, true));
    }

    /// Stamps `event` and appends it to the history.
    fn append(&self, mut inner: MutexGuard<'_, Inner>, mut event: Event) {
        event.at_us = self.now_us();
        if let Some(file) = &mut inner.file
            && let Ok(line) = serde_json::to_string(&event)
        {
            let _ = writeln!(file, "{line}");
        }
        if event.step.is_section() {
            inner.last.insert(event.client.clone(), (event.step, event.lock.clone()));
        }
        inner.events.push(event);
    }

    /// Whether `client` entered a section and has not reported its exit
    /// (a section killed inside stays open until the client's next one).
    pub fn inside(&self, client: &str) -> bool {
        self.section_of(client).is_some()
    }

    /// The lock of the section `client` is inside, if it is (see
    /// [`Fence::inside`]).
    pub fn section_of(&self, client: &str) -> Option<String> {
        match self.inner().last.get(client) {
            Some((Step::Enter | Step::Write, lock)) => Some(lock.clone()),
            _ => None,
        }
    }

    /// The history so far.
    pub fn events(&self) -> Vec<Event> {
        self.inner().events.clone()
    }

    /// Microseconds since the run started.
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// How many sections with the exclusive hold have entered so far.
    pub fn entered(&self) -> usize {
        *self.entered.borrow()
    }

    /// Resolves once `n` sections with the exclusive hold have entered.
    pub async fn wait_entered(&self, n: usize) {
        let mut rx = self.entered.subscribe();
        let _ = rx.wait_for(|entered| *entered >= n).await;
    }

    /// Serves the resource on an already-bound listener until the runtime
    /// ends.
    pub async fn serve(&self, listener: tokio::net::TcpListener) -> std::io::Result<SocketAddr> {
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/enter", post(|s, q| report(Step::Enter, s, q)))
            .route("/write", post(|s, q| report(Step::Write, s, q)))
            .route("/exit", post(|s, q| report(Step::Exit, s, q)))
            .route("/lost", post(|s, q| report(Step::Lost, s, q)))
            .with_state(self.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(addr)
    }
}

async fn report(step: Step, State(fence): State<Fence>, Query(r): Query<Report>) -> StatusCode {
    let hold = Hold::from_query(r.shared, r.permit, r.permits);
    if fence.record(step, &r.lock, &r.client, r.token, hold) { StatusCode::OK } else { StatusCode::CONFLICT }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_smaller_token_is_refused_once_a_larger_one_entered() {
        let fence = Fence::new(Instant::now(), None);
        let x = Hold::Exclusive;
        assert!(fence.record(Step::Enter, "a", "c1", 5, x));
        assert!(fence.record(Step::Write, "a", "c1", 5, x));
        assert!(fence.record(Step::Enter, "a", "c2", 7, x));
        assert!(!fence.record(Step::Write, "a", "c1", 5, x), "the earlier holder's late write");
        assert!(fence.record(Step::Exit, "a", "c1", 5, x));
        assert!(fence.record(Step::Write, "b", "c1", 1, x), "locks are fenced apart");
        assert_eq!(fence.events().iter().filter(|e| !e.accepted).count(), 1);
    }

    #[test]
    fn the_observer_s_views_are_history_lines_and_older_lines_still_read() {
        let fence = Fence::new(Instant::now(), None);
        let view = View { version: 42, lease: Some(("lock-2".into(), 7, Hold::Shared)) };
        fence.record_view(Step::Watched, "chaos-rw", Some(&view), "http://127.0.0.1:1", true);
        fence.record_view(Step::Read, "chaos-rw", Some(&View { version: 43, lease: None }), "http://127.0.0.1:2", true);
        fence.mark_settle(0);
        let lines: Vec<serde_json::Value> = fence.events().iter().map(|e| serde_json::to_value(e).unwrap()).collect();
        let line = &lines[0];
        assert_eq!(
            (&line["step"], &line["client"], &line["holder"], &line["token"]),
            (&"watched".into(), &OBSERVER.into(), &"lock-2".into(), &7.into())
        );
        assert_eq!(
            (&line["hold"], &line["version"], &line["elector"]),
            (&"shared".into(), &42.into(), &"http://127.0.0.1:1".into())
        );
        assert!(lines[1].get("holder").is_none() && lines[1]["token"] == 0, "free: no holder, token 0");
        assert_eq!((&lines[2]["step"], &lines[2]["token"]), (&"settle".into(), &0.into()));
        // A line written before the observer existed still reads.
        let old = r#"{"at_us":1,"step":"enter","lock":"l","client":"a","token":1,"accepted":true}"#;
        let event: Event = serde_json::from_str(old).unwrap();
        assert_eq!((event.version, event.elector), (None, None));
    }
}
