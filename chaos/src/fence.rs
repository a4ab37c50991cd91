//! The fencing-aware resource, which is also the history's recorder.
//!
//! Critical sections report to it over HTTP: `POST /enter`, `/write` and
//! `/exit`, each with `lock`, `client` and `token` in the query. Entering
//! and writing are *fenced*: accepted only when the token is at least the
//! largest this resource has seen for that lock (entering registers the new
//! holder's token, so a late write from an earlier holder is refused even
//! before the new holder writes), answered 409 otherwise. Every request is
//! recorded, accepted or not, stamped on this process's monotonic clock, in
//! an append-only history (in memory, and as JSON lines in a file if asked).
//! The stranger's attempts on other holders' leases
//! ([`crate::stranger`]) go into the same history, with the elector's
//! verdict.

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

/// The client id of the stranger's attempts in the history.
pub const STRANGER: &str = "stranger";

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
    /// The stranger tried to renew someone else's lease (`accepted`: the
    /// elector granted it).
    Renew,
    /// The stranger tried to release someone else's lease (`accepted`: the
    /// elector released it).
    Release,
}

impl Step {
    /// Whether a critical section reports this step (the others are the
    /// stranger's).
    pub fn is_section(self) -> bool {
        matches!(self, Step::Enter | Step::Write | Step::Exit)
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
    /// The fencing token it held.
    pub token: u64,
    /// Whether the resource accepted it (exits are always accepted); for
    /// the stranger's steps, whether the elector did.
    pub accepted: bool,
    /// The stranger's steps: the holder whose lease it tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

impl Event {
    /// An event not stamped yet.
    fn new(step: Step, lock: &str, client: &str, token: u64, accepted: bool) -> Event {
        Event { at_us: 0, step, lock: lock.to_owned(), client: client.to_owned(), token, accepted, holder: None }
    }
}

#[derive(Debug, Deserialize)]
struct Report {
    lock: String,
    client: String,
    token: u64,
}

struct Inner {
    largest: HashMap<String, u64>,
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
            inner: Arc::new(Mutex::new(Inner {
                largest: HashMap::new(),
                last: HashMap::new(),
                events: Vec::new(),
                file,
            })),
            entered: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        mpsync_core::lock(&self.inner)
    }

    /// Records one report of a critical section and decides it.
    pub fn record(&self, step: Step, lock: &str, client: &str, token: u64) -> bool {
        let mut inner = self.inner();
        let largest = inner.largest.entry(lock.to_owned()).or_insert(0);
        let accepted = match step {
            Step::Enter | Step::Write if token >= *largest => {
                *largest = token;
                true
            }
            Step::Enter | Step::Write => false,
            Step::Exit => true,
            // Not the resource's to decide: see `record_attempt`.
            Step::Renew | Step::Release => false,
        };
        self.append(inner, Event::new(step, lock, client, token, accepted));
        if step == Step::Enter {
            self.entered.send_modify(|n| *n += 1);
        }
        accepted
    }

    /// Records one of the stranger's attempts on `holder`'s lease of `lock`
    /// with `token`, and whether the elector accepted it.
    pub fn record_attempt(&self, step: Step, lock: &str, holder: &str, token: u64, accepted: bool) {
        let event = Event { holder: Some(holder.to_owned()), ..Event::new(step, lock, STRANGER, token, accepted) };
        self.append(self.inner(), event);
    }

    /// Stamps `event` and appends it to the history.
    fn append(&self, mut inner: MutexGuard<'_, Inner>, mut event: Event) {
        event.at_us = self.now_us();
        if let Some(file) = &mut inner.file
            && let Ok(line) = serde_json::to_string(&event)
        {
            let _ = writeln!(file, "{line}");
        }
        inner.last.insert(event.client.clone(), (event.step, event.lock.clone()));
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

    /// How many sections have entered so far.
    pub fn entered(&self) -> usize {
        *self.entered.borrow()
    }

    /// Resolves once `n` sections have entered.
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
            .with_state(self.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(addr)
    }
}

async fn report(step: Step, State(fence): State<Fence>, Query(r): Query<Report>) -> StatusCode {
    if fence.record(step, &r.lock, &r.client, r.token) { StatusCode::OK } else { StatusCode::CONFLICT }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_smaller_token_is_refused_once_a_larger_one_entered() {
        let fence = Fence::new(Instant::now(), None);
        assert!(fence.record(Step::Enter, "a", "c1", 5));
        assert!(fence.record(Step::Write, "a", "c1", 5));
        assert!(fence.record(Step::Enter, "a", "c2", 7));
        assert!(!fence.record(Step::Write, "a", "c1", 5), "the earlier holder's late write");
        assert!(fence.record(Step::Exit, "a", "c1", 5));
        assert!(fence.record(Step::Write, "b", "c1", 1), "locks are fenced apart");
        assert_eq!(fence.events().iter().filter(|e| !e.accepted).count(), 1);
    }
}
