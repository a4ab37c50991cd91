//! The client half of the elector's HTTP protocol, sans-IO.
//!
//! Every client of the elector (the `mpsync` host, the portable guest, the
//! Envoy filter, the native `mpsync-client` crate) moves bytes and calls
//! into this module, so the protocol is written once:
//!
//! - [`Session`] wraps one [`LeaseClient`] with what it needs to talk to the
//!   elector: it turns the state machine's requests into [`HttpRequest`]s
//!   and the elector's answers back into [`Response`]s, and keeps what the
//!   answers said (the last refusal, the leader, the version to long-poll).
//! - [`decode_claim`], [`decode_read`] and [`decode_release`] decode one
//!   answer of each kind.
//! - [`Blocking`] is the retry policy of the blocking calls: wait for the
//!   record to change while someone else holds it, retry an elector that
//!   fails for one TTL, then report it `unavailable`.
//! - [`Error`] is the client error of the WIT `error` variant, and
//!   [`wit_conversions!`](crate::wit_conversions) writes its mapping onto
//!   the bindings' types.
//!
//! The caller owns the clock (`now` is a [`Duration`] since an origin of its
//! monotonic clock) and the sockets.

use core::time::Duration;

use thiserror::Error;

use crate::lease::{Held, LeaseClient, LeaseConfig, Output, Request, RequestId, Response};
use crate::wire::{AcquireRequest, ConflictReason, ConflictView, ErrorBody, Kind, LeaseView, ListView, ReleaseRequest};

/// The lease duration when the app names none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// The longest one long-poll waits before asking again.
pub const POLL_SLICE: Duration = Duration::from_secs(30);
/// How much longer than its `timeout_ms` a long-poll may take to answer
/// before the client gives up on it.
pub const POLL_GRACE: Duration = Duration::from_secs(5);
/// The floor of any request timeout.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_millis(5);

/// What a client call can fail with; the WIT `error` variant.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// Someone else holds the lock (their id; empty when the elector did
    /// not say).
    #[error("held by {0}")]
    HeldBy(String),
    /// The wait ran out.
    #[error("timed out")]
    Timeout,
    /// This client does not hold the lease (any more).
    #[error("not held")]
    NotHeld,
    /// The name is not a valid Kubernetes object name.
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// An option is out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The elector could not be reached or failed.
    #[error("elector unavailable: {0}")]
    Unavailable(String),
}

/// Writes `From` conversions from [`Error`] and [`Leader`] into the
/// `error` and `leader` types of a set of `metaparticle:sync` bindings
/// (wasmtime's on the host, wit-bindgen's in a guest), so the mapping is
/// written once.
///
/// ```ignore
/// mpsync_core::wit_conversions!(types::Error, types::Leader);
/// ```
#[macro_export]
macro_rules! wit_conversions {
    ($error:ty, $leader:ty) => {
        impl From<$crate::client::Error> for $error {
            fn from(e: $crate::client::Error) -> Self {
                use $crate::client::Error as E;
                match e {
                    E::HeldBy(holder) => Self::HeldBy(holder),
                    E::Timeout => Self::Timeout,
                    E::NotHeld => Self::NotHeld,
                    E::InvalidName(reason) => Self::InvalidName(reason),
                    E::InvalidOption(reason) => Self::InvalidOption(reason),
                    E::Unavailable(reason) => Self::Unavailable(reason),
                }
            }
        }
        impl From<$crate::client::Leader> for $leader {
            fn from(l: $crate::client::Leader) -> Self {
                Self { id: l.id, address: l.address, token: l.token }
            }
        }
    };
}

pub use crate::route::Leader;

impl From<&LeaseView> for Leader {
    fn from(l: &LeaseView) -> Self {
        Leader { id: l.holder.clone(), address: l.address.clone(), token: l.token }
    }
}

/// An HTTP method the protocol uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Read or long-poll.
    Get,
    /// Acquire or renew.
    Put,
    /// Release.
    Delete,
}

impl Method {
    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

/// One request to send to the elector. Bodies are JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method.
    pub method: Method,
    /// Path and query, from `/v1/…`.
    pub path: String,
    /// The JSON body, if any.
    pub body: Option<Vec<u8>>,
    /// Give up on the answer after this long.
    pub timeout: Duration,
}

/// The path of a record.
pub fn path(kind: Kind, name: &str) -> String {
    format!("/v1/{}/{name}", kind.plural())
}

/// A plain read (`wait` = `None`), or a long-poll for a version other than
/// `wait.0`, answered after at most `wait.1`.
pub fn read_request(kind: Kind, name: &str, wait: Option<(u64, Duration)>, timeout: Duration) -> HttpRequest {
    let (path, timeout) = match wait {
        Some((version, slice)) => {
            (format!("{}?wait={version}&timeout_ms={}", path(kind, name), slice.as_millis()), slice + POLL_GRACE)
        }
        None => (path(kind, name), timeout),
    };
    HttpRequest { method: Method::Get, path, body: None, timeout }
}

/// A page of the listing of every lock or election (`GET /v1/locks`):
/// `limit` records from `cursor` (the `next` of the previous page) on.
pub fn list_request(kind: Kind, limit: usize, cursor: Option<&str>, timeout: Duration) -> HttpRequest {
    let mut path = format!("/v1/{}?limit={limit}", kind.plural());
    if let Some(cursor) = cursor {
        path.push_str("&cursor=");
        for byte in cursor.bytes() {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                path.push(char::from(byte));
            } else {
                path.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    HttpRequest { method: Method::Get, path, body: None, timeout }
}

/// Decodes the answer to a listing.
pub fn decode_list(status: u16, body: &[u8]) -> Result<ListView, AnswerError> {
    match status {
        200 => json(status, body),
        _ => Err(unexpected(status, body)),
    }
}

fn json_body(value: &impl serde::Serialize) -> Option<Vec<u8>> {
    // The wire types hold strings and integers only; encoding cannot fail.
    serde_json::to_vec(value).ok()
}

/// A `PUT`: acquire (no token) or renew.
pub fn claim_request(kind: Kind, name: &str, body: &AcquireRequest, timeout: Duration) -> HttpRequest {
    HttpRequest { method: Method::Put, path: path(kind, name), body: json_body(body), timeout }
}

/// A `DELETE` of the lease `token` of `holder`.
pub fn release_request(kind: Kind, name: &str, holder: &str, token: u64, timeout: Duration) -> HttpRequest {
    let body = ReleaseRequest { holder: holder.to_owned(), token };
    HttpRequest { method: Method::Delete, path: path(kind, name), body: json_body(&body), timeout }
}

/// An answer the protocol does not expect.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AnswerError {
    /// A status this request does not expect.
    #[error("answered {status}: {body}")]
    Status {
        /// The status.
        status: u16,
        /// The body, as text.
        body: String,
    },
    /// The expected status with a body that is not the documented JSON.
    #[error("answered {status} with a body that is not the documented JSON: {reason}")]
    Decode {
        /// The status.
        status: u16,
        /// What did not parse.
        reason: String,
    },
}

fn unexpected(status: u16, body: &[u8]) -> AnswerError {
    let mut text = String::from_utf8_lossy(body).into_owned();
    if text.len() > 200 {
        let cut = (0..=200).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    AnswerError::Status { status, body: text }
}

fn json<T: serde::de::DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, AnswerError> {
    serde_json::from_slice(body).map_err(|e| AnswerError::Decode { status, reason: e.to_string() })
}

/// The answer to an acquire or renew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// 200.
    Granted(LeaseView),
    /// 409.
    Refused(ConflictView),
}

/// Decodes the answer to a `PUT`.
pub fn decode_claim(status: u16, body: &[u8]) -> Result<Claimed, AnswerError> {
    match status {
        200 => json(status, body).map(Claimed::Granted),
        409 => json(status, body).map(Claimed::Refused),
        _ => Err(unexpected(status, body)),
    }
}

/// The answer to a read or long-poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// 200: held.
    Held(LeaseView),
    /// 404: free or absent, at this version (long-poll on it).
    Free {
        /// The record's version; a name without a record reads at a
        /// version no lower than any it had.
        version: u64,
    },
}

impl Read {
    /// The version to long-poll on next.
    pub fn version(&self) -> u64 {
        match self {
            Read::Held(view) => view.version,
            Read::Free { version } => *version,
        }
    }

    /// The leader this read shows (elections).
    pub fn leader(&self) -> Option<Leader> {
        match self {
            Read::Held(view) => Some(Leader::from(view)),
            Read::Free { .. } => None,
        }
    }
}

/// Decodes the answer to a `GET` (plain or long-poll).
pub fn decode_read(status: u16, body: &[u8]) -> Result<Read, AnswerError> {
    match status {
        200 => json(status, body).map(Read::Held),
        404 => json::<ErrorBody>(status, body).map(|e| Read::Free { version: e.version.unwrap_or(0) }),
        _ => Err(unexpected(status, body)),
    }
}

/// Decodes the answer to a `DELETE`: `true` when released, `false` when the
/// elector says the caller does not hold it (409) or there is no record.
pub fn decode_release(status: u16, body: &[u8]) -> Result<bool, AnswerError> {
    match status {
        204 => Ok(true),
        409 | 404 => Ok(false),
        _ => Err(unexpected(status, body)),
    }
}

/// How to hold a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The lease duration.
    pub ttl: Duration,
    /// The holder (candidate) id.
    pub holder: String,
    /// Elections: the address to advertise.
    pub address: Option<String>,
}

/// One step of driving a [`Session`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send `http` and pass its answer to [`Session::answer`] with `id`.
    Send {
        /// Names the request.
        id: RequestId,
        /// What the state machine asked for.
        request: Request,
        /// The bytes to send.
        http: HttpRequest,
    },
    /// Something happened to the lease.
    Event(Output),
}

/// One lease of one holder on one record, with the protocol around it. See
/// the [module docs](self).
#[derive(Debug)]
pub struct Session {
    elector: String,
    kind: Kind,
    name: String,
    options: Options,
    machine: LeaseClient,
    /// The last version seen of the record (long-poll on it).
    version: u64,
    /// Elections: the leader as last seen.
    leader: Option<Leader>,
    /// Since the last [`Session::start_acquire`]: whether a grant came, the
    /// last refusal, the last failure.
    acquired: bool,
    refusal: Option<ConflictView>,
    failure: Option<String>,
    /// The `DELETE` of the last [`Session::release`], and how it ended
    /// (`None` inside: not answered yet, or released).
    release: Option<(RequestId, Option<String>)>,
}

impl Session {
    /// A session for `name` on the elector at `elector` (its base URL, for
    /// messages), with the name and every option checked. Sends nothing.
    pub fn new(elector: &str, kind: Kind, name: &str, options: Options) -> Result<Session, Error> {
        crate::validate_name(name).map_err(|e| Error::InvalidName(format!("{name:?}: {e}")))?;
        let check = AcquireRequest::new(&options.holder, options.ttl, None, options.address.as_deref());
        check.validate(kind).map_err(|e| Error::InvalidOption(format!("{}: {}", e.field, e.message)))?;
        let machine =
            LeaseClient::new(LeaseConfig::new(options.ttl)).map_err(|e| Error::InvalidOption(e.to_string()))?;
        Ok(Session {
            elector: elector.trim_end_matches('/').to_owned(),
            kind,
            name: name.to_owned(),
            options,
            machine,
            version: 0,
            leader: None,
            acquired: false,
            refusal: None,
            failure: None,
            release: None,
        })
    }

    /// Lock or election.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The record's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The options.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// One request may take at most this long: a fifth of the TTL. Renewal
    /// is due at a third and the lease is usable for four fifths, so a
    /// renewal that times out still leaves room for a retry.
    pub fn request_timeout(&self) -> Duration {
        (self.options.ttl / 5).max(MIN_REQUEST_TIMEOUT)
    }

    /// The lease, while held and usable at `now`.
    pub fn lease(&self, now: Duration) -> Option<Held> {
        self.machine.lease(now)
    }

    /// When [`tick`](Self::tick) must next be called (a renewal or the
    /// deadline), while a lease is held.
    pub fn next_due(&self) -> Option<Duration> {
        self.machine.poll_timeout()
    }

    /// Lets time pass to `now`: queues a due renewal, reports the lease
    /// lost at its deadline.
    pub fn tick(&mut self, now: Duration) {
        self.machine.handle_timeout(now);
    }

    /// The last version of the record seen.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Elections: the leader as last seen; this candidate only while it
    /// holds the lease at `now`.
    pub fn leader(&self, now: Duration) -> Option<Leader> {
        match &self.leader {
            Some(l) if l.id == self.options.holder && self.lease(now).is_none() => None,
            other => other.clone(),
        }
    }

    /// Starts one attempt to acquire at `now`, abandoning an acquisition
    /// still in flight from a cancelled call (a late grant is handed back).
    /// `Ok(Some(held))` when the lease is already held.
    pub fn start_acquire(&mut self, now: Duration) -> Result<Option<Held>, Error> {
        if let Some(held) = self.lease(now) {
            return Ok(Some(held));
        }
        let _ = self.machine.release();
        self.acquired = false;
        self.refusal = None;
        self.failure = None;
        self.machine.acquire(now).map_err(|e| Error::InvalidOption(e.to_string()))?;
        Ok(None)
    }

    /// After the attempt begun by [`start_acquire`](Self::start_acquire)
    /// was driven: the lease, or why not.
    pub fn acquisition(&self, now: Duration) -> Result<Held, Error> {
        if self.acquired {
            return self.lease(now).ok_or(Error::NotHeld);
        }
        match (&self.refusal, &self.failure) {
            (Some(c), _) => Err(match (&c.holder, c.reason) {
                (Some(holder), _) => Error::HeldBy(holder.clone()),
                (None, ConflictReason::Held) => Error::HeldBy(String::new()),
                (None, _) => Error::NotHeld,
            }),
            (None, Some(failure)) => Err(Error::Unavailable(failure.clone())),
            (None, None) => {
                Err(Error::Unavailable(format!("elector at {} did not grant the lease in time", self.elector)))
            }
        }
    }

    /// Gives the lease up at once (a `DELETE` follows from
    /// [`next_step`](Self::next_step); once it is answered,
    /// [`released`](Self::released) says how it went). `NotHeld` when
    /// there was nothing to release.
    pub fn release(&mut self) -> Result<(), Error> {
        let released = self.machine.release();
        if self.leader.as_ref().is_some_and(|l| l.id == self.options.holder) {
            self.leader = None;
        }
        let id = released.ok_or(Error::NotHeld)?;
        self.release = Some((id, None));
        Ok(())
    }

    /// After the `DELETE` of [`release`](Self::release) was answered: `Ok`
    /// when the elector released the lease (or no longer had it for this
    /// holder), `Unavailable` when it could not be told — the lease then
    /// runs out on the elector at its TTL, and nobody else gets it before.
    /// A release is never reported done when the elector did not confirm it.
    pub fn released(&self) -> Result<(), Error> {
        match &self.release {
            Some((_, Some(failure))) => Err(Error::Unavailable(format!(
                "the lock was given up here, but the elector did not confirm the release ({failure}); \
                 others get it when the lease runs out"
            ))),
            _ => Ok(()),
        }
    }

    /// The next request to send or event to report.
    pub fn next_step(&mut self) -> Option<Step> {
        let output = self.machine.poll_output()?;
        let Output::Send { id, request } = output else {
            if let Output::Acquired { .. } = output {
                self.acquired = true;
            }
            return Some(Step::Event(output));
        };
        let timeout = self.request_timeout();
        let (kind, name, options) = (self.kind, &self.name, &self.options);
        let http = match request {
            Request::Acquire | Request::Renew { .. } => {
                let token = match request {
                    Request::Renew { token } => Some(token),
                    _ => None,
                };
                let body = AcquireRequest::new(&options.holder, options.ttl, token, options.address.as_deref());
                claim_request(kind, name, &body, timeout)
            }
            Request::Release { token } => release_request(kind, name, &options.holder, token, timeout),
        };
        Some(Step::Send { id, request, http })
    }

    /// Feeds the answer to the request `id` (`Err`: no answer, with why),
    /// received at `now`. Returns what went wrong, if anything, for the
    /// caller's log.
    pub fn answer(
        &mut self,
        id: RequestId,
        request: Request,
        reply: Result<(u16, &[u8]), String>,
        now: Duration,
    ) -> Option<String> {
        if let Request::Release { .. } = request {
            let failure = match reply.map(|(status, body)| decode_release(status, body)) {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(format!("elector at {}{} {e}", self.elector, path(self.kind, &self.name))),
                Err(e) => Some(e),
            };
            if let Some((mine, outcome)) = &mut self.release
                && *mine == id
            {
                outcome.clone_from(&failure);
            }
            return failure;
        }
        let url = || format!("elector at {}{}", self.elector, path(self.kind, &self.name));
        let (response, failure) = match reply.map(|(status, body)| decode_claim(status, body)) {
            Ok(Ok(Claimed::Granted(view))) => {
                self.version = view.version;
                if self.kind == Kind::Election {
                    self.leader = Some(Leader::from(&view));
                }
                (Response::Granted { token: view.token, version: view.version }, None)
            }
            Ok(Ok(Claimed::Refused(conflict))) => {
                self.version = conflict.version;
                self.refusal = Some(conflict);
                (Response::Refused, None)
            }
            Ok(Err(e)) => (Response::Failed, Some(format!("{} {e}", url()))),
            Err(e) => (Response::Failed, Some(e)),
        };
        if let Some(failure) = &failure {
            self.failure = Some(failure.clone());
        }
        self.machine.handle_response(id, response, now);
        failure
    }

    /// Takes in a read of the record. Returns whether the leader changed
    /// (elections). A read older than what the session already knows (a
    /// watch answered before a grant, processed after it) is ignored:
    /// versions only grow, so it cannot undo the grant.
    pub fn observe(&mut self, read: &Read) -> bool {
        if read.version() < self.version {
            return false;
        }
        self.version = read.version();
        if self.kind != Kind::Election {
            return false;
        }
        let leader = read.leader();
        let changed = self.leader != leader;
        self.leader = leader;
        changed
    }

    /// The request that waits for the record to change from the version
    /// last seen, for at most `slice` (capped at [`POLL_SLICE`]).
    pub fn wait_request(&self, slice: Duration) -> HttpRequest {
        read_request(self.kind, &self.name, Some((self.version, slice.min(POLL_SLICE))), self.request_timeout())
    }

    /// A plain read of the record.
    pub fn read_request(&self) -> HttpRequest {
        read_request(self.kind, &self.name, None, self.request_timeout().max(Duration::from_secs(1)))
    }
}

/// What a blocking acquire does after an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    /// Someone else holds it: wait (long-poll) for the record to change,
    /// for at most this long, then try again.
    Wait(Duration),
    /// The elector failed: try again at this instant.
    RetryAt(Duration),
    /// Give up with this error.
    Report(Error),
}

/// The retry policy of the blocking calls (`lock-within`, `campaign`).
///
/// While someone else holds the record it waits for the record to change,
/// up to the caller's deadline, then reports `timeout`. An elector that
/// fails (or answers what the protocol does not expect) is retried every
/// tenth of the TTL for up to one TTL (a restart, a blip), then reported
/// `unavailable` — never later than the caller's deadline. Invalid names
/// and options are reported at once.
#[derive(Debug, Clone)]
pub struct Blocking {
    deadline: Duration,
    ttl: Duration,
    failing_since: Option<Duration>,
}

impl Blocking {
    /// A blocking call started at `now` that waits up to `timeout`.
    pub fn new(now: Duration, timeout: Duration, ttl: Duration) -> Blocking {
        Blocking { deadline: now.saturating_add(timeout), ttl, failing_since: None }
    }

    /// The caller's deadline.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// What to do after an attempt at `now` failed with `error`.
    pub fn after(&mut self, error: Error, now: Duration) -> Then {
        match error {
            Error::HeldBy(_) => {
                self.failing_since = None;
                if now >= self.deadline { Then::Report(Error::Timeout) } else { Then::Wait(self.deadline - now) }
            }
            Error::InvalidName(_) | Error::InvalidOption(_) | Error::Timeout => Then::Report(error),
            Error::Unavailable(_) | Error::NotHeld => {
                let since = *self.failing_since.get_or_insert(now);
                let retry = now + self.ttl / 10;
                if retry >= self.deadline || now - since >= self.ttl {
                    Then::Report(error)
                } else {
                    Then::RetryAt(retry)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn options() -> Options {
        Options { ttl: MS * 3000, holder: "me".into(), address: None }
    }

    fn granted(token: u64, version: u64, holder: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "name": "n", "holder": holder, "token": token, "version": version,
            "ttl_ms": 3000, "expires_in_ms": 3000,
        }))
        .unwrap()
    }

    fn send(s: &mut Session) -> (RequestId, Request, HttpRequest) {
        match s.next_step() {
            Some(Step::Send { id, request, http }) => (id, request, http),
            other => panic!("expected a request, got {other:?}"),
        }
    }

    /// The next request, past the events before it.
    fn next_send(s: &mut Session) -> (RequestId, Request, HttpRequest) {
        loop {
            match s.next_step() {
                Some(Step::Send { id, request, http }) => return (id, request, http),
                Some(Step::Event(_)) => {}
                None => panic!("no request to send"),
            }
        }
    }

    #[test]
    fn an_acquisition_is_a_put_and_a_grant_is_held() {
        let mut s = Session::new("http://e", Kind::Lock, "db", options()).unwrap();
        assert_eq!(s.start_acquire(MS).unwrap(), None);
        let (id, request, http) = send(&mut s);
        assert_eq!((http.method, http.path.as_str(), http.timeout), (Method::Put, "/v1/locks/db", MS * 600));
        let body: AcquireRequest = serde_json::from_slice(http.body.as_deref().unwrap()).unwrap();
        assert_eq!(body, AcquireRequest::new("me", MS * 3000, None, None));
        assert_eq!(s.answer(id, request, Ok((200, &granted(4, 9, "me"))), MS * 2), None);
        assert_eq!(s.next_step(), Some(Step::Event(Output::Acquired { token: 4 })));
        assert_eq!(s.acquisition(MS * 2).unwrap().token, 4);
        assert_eq!(s.version(), 9);
        s.release().unwrap();
        let (_, request, http) = send(&mut s);
        assert_eq!((request, http.method), (Request::Release { token: 4 }, Method::Delete));
        assert_eq!(s.release(), Err(Error::NotHeld));
    }

    #[test]
    fn a_refusal_names_the_holder_and_a_failure_is_unavailable() {
        let mut s = Session::new("http://e", Kind::Lock, "db", options()).unwrap();
        s.start_acquire(MS).unwrap();
        let (id, request, _) = send(&mut s);
        let conflict = br#"{"name":"db","reason":"held","holder":"you","version":7,"expires_in_ms":10}"#;
        assert_eq!(s.answer(id, request, Ok((409, conflict)), MS), None);
        assert_eq!(s.next_step(), Some(Step::Event(Output::NotAcquired)));
        assert_eq!(s.acquisition(MS), Err(Error::HeldBy("you".into())));
        assert_eq!(s.version(), 7);
        s.start_acquire(MS).unwrap();
        let (id, request, _) = send(&mut s);
        let failure = s.answer(id, request, Ok((503, b"overloaded")), MS);
        let said = "elector at http://e/v1/locks/db answered 503: overloaded";
        assert_eq!(failure.as_deref(), Some(said));
        assert_eq!(s.acquisition(MS), Err(Error::Unavailable(said.into())));
    }

    #[test]
    fn a_release_the_elector_did_not_confirm_is_reported() {
        let mut s = Session::new("http://e", Kind::Lock, "db", options()).unwrap();
        s.start_acquire(MS).unwrap();
        let (id, request, _) = send(&mut s);
        s.answer(id, request, Ok((200, &granted(4, 9, "me"))), MS * 2);
        s.release().unwrap();
        let (id, request, http) = next_send(&mut s);
        assert_eq!((request, http.method), (Request::Release { token: 4 }, Method::Delete));
        let said = s.answer(id, request, Ok((400, b"the body is empty")), MS * 3);
        assert_eq!(said.as_deref(), Some("elector at http://e/v1/locks/db answered 400: the body is empty"));
        assert!(matches!(s.released(), Err(Error::Unavailable(reason)) if reason.contains("did not confirm")));
        s.start_acquire(MS * 4).unwrap();
        let (id, request, _) = send(&mut s);
        s.answer(id, request, Ok((200, &granted(5, 10, "me"))), MS * 5);
        s.release().unwrap();
        assert_eq!(s.released(), Ok(()), "a new release starts clean");
        let (id, request, _) = next_send(&mut s);
        assert_eq!(s.answer(id, request, Ok((204, b"")), MS * 6), None);
        assert_eq!(s.released(), Ok(()));
    }

    #[test]
    fn bad_names_and_options_are_refused_before_anything_is_sent() {
        assert!(matches!(Session::new("http://e", Kind::Lock, "Not_A_Name", options()), Err(Error::InvalidName(_))));
        let zero = Options { ttl: Duration::ZERO, ..options() };
        assert!(matches!(Session::new("http://e", Kind::Lock, "db", zero), Err(Error::InvalidOption(_))));
        let address = Options { address: Some("10.0.0.1:80".into()), ..options() };
        assert!(matches!(Session::new("http://e", Kind::Lock, "db", address), Err(Error::InvalidOption(_))));
    }

    #[test]
    fn answers_decode_as_documented() {
        assert_eq!(
            decode_read(404, br#"{"error":"not_found","message":"free","version":12}"#),
            Ok(Read::Free { version: 12 })
        );
        assert!(matches!(decode_read(404, b"<html>"), Err(AnswerError::Decode { status: 404, .. })));
        assert!(matches!(decode_read(500, b"boom"), Err(AnswerError::Status { status: 500, .. })));
        assert_eq!(decode_release(204, b""), Ok(true));
        assert_eq!(decode_release(409, b""), Ok(false));
        let long = "x".repeat(1000);
        let Err(AnswerError::Status { body, .. }) = decode_claim(502, long.as_bytes()) else { panic!() };
        assert!(body.len() < 210);
    }

    #[test]
    fn an_election_follows_its_leader() {
        let mut s = Session::new("http://e", Kind::Election, "primary", options()).unwrap();
        let read = decode_read(200, &granted(3, 5, "other")).unwrap();
        assert!(s.observe(&read));
        assert!(!s.observe(&read));
        assert_eq!(s.leader(MS).unwrap().id, "other");
        assert_eq!(s.wait_request(MS * 100_000).path, "/v1/elections/primary?wait=5&timeout_ms=30000");
        assert!(s.observe(&Read::Free { version: 6 }));
        assert_eq!(s.leader(MS), None);
    }

    #[test]
    fn a_read_older_than_a_grant_does_not_undo_it() {
        let mut s = Session::new("http://e", Kind::Election, "primary", options()).unwrap();
        s.start_acquire(MS).unwrap();
        let (id, request, _) = send(&mut s);
        s.answer(id, request, Ok((200, &granted(4, 9, "me"))), MS * 2);
        assert_eq!(s.leader(MS * 2).unwrap().id, "me");
        assert!(!s.observe(&Read::Free { version: 8 }), "the watch's read from before the grant");
        assert_eq!(s.leader(MS * 2).unwrap().id, "me");
        assert!(s.observe(&Read::Free { version: 10 }), "a later one counts");
    }

    #[test]
    fn an_unavailable_elector_is_retried_for_one_ttl_then_reported() {
        let ttl = MS * 1000;
        let mut b = Blocking::new(Duration::ZERO, MS * 60_000, ttl);
        let down = || Error::Unavailable("down".into());
        assert_eq!(b.after(down(), MS * 10), Then::RetryAt(MS * 110));
        assert_eq!(b.after(down(), MS * 900), Then::RetryAt(MS * 1000));
        assert_eq!(b.after(down(), MS * 1010), Then::Report(down()));
        assert_eq!(b.after(Error::HeldBy("x".into()), MS * 2000), Then::Wait(MS * 58_000));
        assert_eq!(b.after(down(), MS * 2100), Then::RetryAt(MS * 2200), "a held answer restarts the count");
        assert_eq!(b.after(Error::HeldBy("x".into()), MS * 60_000), Then::Report(Error::Timeout));
        let mut short = Blocking::new(Duration::ZERO, MS * 50, ttl);
        assert_eq!(short.after(down(), Duration::ZERO), Then::Report(down()), "never past the caller's deadline");
    }
}
