//! JSON types of the elector's HTTP API.
//!
//! The versioned surface (`/v1/locks/{name}`, `/v1/elections/{name}`) is
//! described in `elector/openapi.yaml`; these types are its single Rust
//! definition, shared by the elector and every client. Request bodies refuse
//! unknown fields so a typo such as `"tll_ms"` is an error, not a default.

use core::net::SocketAddr;
use core::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::key::{LeaseKey, MAX_KEY_LEN, MIN_KEY_LEN};
pub use transfer::{TransferRequest, TransferView};

mod transfer;

/// The shortest lease a client may ask for.
pub const MIN_TTL_MS: u64 = 10;
/// The longest lease a client may ask for (one day).
pub const MAX_TTL_MS: u64 = 24 * 60 * 60 * 1000;
/// The longest a long-poll (`GET …?wait=`) may be asked to wait.
pub const MAX_WAIT_MS: u64 = 5 * 60 * 1000;
/// The longest holder identity accepted, in characters (the length of a
/// Kubernetes name).
pub const MAX_HOLDER_LEN: usize = 253;

/// What a record guards: a plain lock, or an election whose holder is the
/// leader and advertises an address. Locks and elections of the same name
/// are different records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `/v1/locks/{name}` and the compatible `/locks/{name}`.
    Lock,
    /// `/v1/elections/{name}`.
    Election,
}

impl Kind {
    /// The plural used in URL paths: `locks` or `elections`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Lock => "locks",
            Kind::Election => "elections",
        }
    }

    /// The singular: `lock` or `election`.
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Lock => "lock",
            Kind::Election => "election",
        }
    }
}

/// Body of `PUT /v1/{locks,elections}/{name}`: acquire (no `token`) or renew
/// (with the current `token`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcquireRequest {
    /// Who asks: a stable identity of one client (pod name, host:pid, …).
    pub holder: String,
    /// How long the lease lasts after the elector sees this request.
    pub ttl_ms: u64,
    /// The fencing token of the lease being renewed; absent to acquire.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
    /// Elections only: the `ip:port` where the leader serves traffic.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The holder's secret: chosen by the acquirer, sent on the acquire and
    /// on every renewal and release of that lease. A lease acquired with a
    /// key can be renewed or released only by a request that presents it.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub key: Option<LeaseKey>,
    /// The id of an open session of the caller's (`POST /v1/sessions`): the
    /// lease granted is released at once when the holder's end of that
    /// session closes. A session that is not open refuses the claim (409
    /// [`ConflictReason::SessionGone`]) and nothing is granted.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Locks only, to acquire: when the lock cannot be had at once, take a
    /// place in line (or keep the one `ticket` names) instead of being
    /// refused; answered `202` with a [`QueuedView`] until the lock is
    /// handed over (see `mpsync_core::line`).
    #[serde(default, skip_serializing_if = "core::ops::Not::not")]
    pub queue: bool,
    /// With `queue`: the place in line an earlier `202` gave. Sending it
    /// again within three quarters of `ttl_ms` keeps the place (a request
    /// refreshes it once a quarter of the TTL passed since its last
    /// refresh, and a place not refreshed for the TTL is dropped).
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub ticket: Option<u64>,
    /// With `queue`: how long to wait for the lock before answering `202`,
    /// and never longer than half of `ttl_ms` (so a lease handed over
    /// meanwhile still has part of its TTL when the answer arrives; our
    /// clients wait a third); absent or 0 answers at once.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// Locks only: a shared hold (one reader of a read-write lock, or one
    /// permit of a semaphore) instead of the exclusive one. Shared holds
    /// are held beside each other, never beside an exclusive one.
    #[serde(default, skip_serializing_if = "core::ops::Not::not")]
    pub shared: bool,
    /// With `shared`: how many shared holds the lock allows at once (a
    /// counting semaphore); absent, any number (readers). Every shared
    /// claim on a lock must name the same number.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub permits: Option<u32>,
}

/// The most permits a semaphore may have.
pub const MAX_PERMITS: u32 = 10_000;

/// The most waiters a listing shows per lock (`RecordView::line`).
pub const MAX_LISTED_WAITERS: usize = 16;

/// The answer to a `PUT` with `"queue": true` that did not get the lock
/// (yet): `202`, with the place held in line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedView {
    /// The lock name.
    pub name: String,
    /// The place held: send it back (`"ticket"`) within three quarters of
    /// `ttl_ms` to keep it.
    pub ticket: u64,
    /// How many are ahead (0: next).
    pub position: u64,
    /// How many wait in all, this waiter included.
    pub waiting: u64,
    /// The current holder, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// The view's version.
    pub version: u64,
}

/// One waiter in line, as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaiterView {
    /// Who waits.
    pub holder: String,
    /// It waits for a shared hold.
    #[serde(default, skip_serializing_if = "core::ops::Not::not")]
    pub shared: bool,
    /// Its ticket.
    pub ticket: u64,
    /// Its place (0: next).
    pub position: u64,
}

/// The length of a session id: 128 random bits in lowercase hex.
pub const SESSION_ID_LEN: usize = 32;
/// The protocol a session upgrades to (`Upgrade: mpsync-session`).
pub const SESSION_PROTOCOL: &str = "mpsync-session";
/// The response header of a `101` that carries the session id.
pub const SESSION_HEADER: &str = "mpsync-session";

/// Checks a session id: [`SESSION_ID_LEN`] characters of `0-9 a-f`.
pub fn validate_session(id: &str) -> Result<(), InvalidField> {
    if id.len() != SESSION_ID_LEN || !id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(invalid(
            "session",
            format!("session must be the id of a session the elector opened: {SESSION_ID_LEN} characters of 0-9 a-f"),
        ));
    }
    Ok(())
}

/// An optional field that, when present, must hold a value: `null` is
/// refused (the API document allows only a number or a string there), so
/// that "absent" has one spelling.
pub(crate) fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Body of `DELETE /v1/{locks,elections}/{name}`: release at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The holder that acquired the lease (or waits in line).
    pub holder: String,
    /// The fencing token it was granted; absent to leave the line instead
    /// (with `ticket`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub token: u64,
    /// Locks: the place in line to give up, instead of a lease to release.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub ticket: Option<u64>,
    /// The key the lease was acquired with, if it was.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub key: Option<LeaseKey>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How long a long-poll waits when `timeout_ms` is not given.
pub const DEFAULT_WAIT_MS: u64 = 30_000;

/// A long-poll asked for in a query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    /// Answer once the view's version differs from this one.
    pub version: u64,
    /// ...or after this many milliseconds.
    pub timeout_ms: u64,
}

/// A query parameter that is wrong, with a message for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidQuery {
    /// The parameter.
    pub param: String,
    /// What is wrong with it.
    pub message: String,
}

/// Parses the query of a `GET` on a record: `wait=VERSION` asks for a
/// long-poll, `timeout_ms=N` bounds it (at most [`MAX_WAIT_MS`], default
/// [`DEFAULT_WAIT_MS`]); `timeout_ms` alone is a plain read. Any other
/// parameter, or a value that is not a number, is refused with the
/// parameter named.
pub fn parse_wait(query: Option<&str>) -> Result<Option<Wait>, InvalidQuery> {
    let (mut wait, mut timeout) = (None, None);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let number = |what: &str| {
            v.parse::<u64>()
                .map_err(|_| InvalidQuery { param: k.to_owned(), message: format!("{k}={v:?} is not {what}") })
        };
        match k {
            "wait" => wait = Some(number("a version (a non-negative integer)")?),
            "timeout_ms" => timeout = Some(number("a number of milliseconds")?),
            _ => {
                return Err(InvalidQuery {
                    param: k.to_owned(),
                    message: format!("unknown query parameter {k:?}; only wait and timeout_ms are accepted"),
                });
            }
        }
    }
    match (wait, timeout) {
        (_, Some(t)) if t > MAX_WAIT_MS => Err(InvalidQuery {
            param: "timeout_ms".into(),
            message: format!("timeout_ms is {t}; at most {MAX_WAIT_MS} is allowed"),
        }),
        (None, _) => Ok(None),
        (Some(version), t) => Ok(Some(Wait { version, timeout_ms: t.unwrap_or(DEFAULT_WAIT_MS) })),
    }
}

/// A request field that failed validation, with a message for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidField {
    /// The JSON field name.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> InvalidField {
    InvalidField { field, message: message.into() }
}

/// Checks a holder identity: non-empty, at most [`MAX_HOLDER_LEN`]
/// characters, no control characters.
pub fn validate_holder(holder: &str) -> Result<(), InvalidField> {
    if holder.is_empty() {
        return Err(invalid("holder", "holder must not be empty"));
    }
    let chars = holder.chars().count();
    if chars > MAX_HOLDER_LEN {
        return Err(invalid(
            "holder",
            format!("holder is {chars} characters long; at most {MAX_HOLDER_LEN} are allowed"),
        ));
    }
    if holder.chars().any(char::is_control) {
        return Err(invalid("holder", "holder must not contain control characters"));
    }
    Ok(())
}

impl AcquireRequest {
    /// The body that asks for a lease of `ttl` (milliseconds, saturating):
    /// `token` absent to acquire, the current one to renew.
    pub fn new(holder: &str, ttl: Duration, token: Option<u64>, address: Option<&str>) -> Self {
        AcquireRequest {
            holder: holder.to_owned(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            token,
            address: address.map(str::to_owned),
            key: None,
            session: None,
            queue: false,
            ticket: None,
            wait_ms: None,
            shared: false,
            permits: None,
        }
    }

    /// The same request, for a shared hold of a lock allowing `permits`
    /// shared holds at once (`None`: any number).
    pub fn shared(mut self, permits: Option<u32>) -> Self {
        self.shared = true;
        self.permits = permits;
        self
    }

    /// The same request, waiting in line (with the place `ticket` names,
    /// if any) for up to `wait` before the answer.
    pub fn in_line(mut self, ticket: Option<u64>, wait: Duration) -> Self {
        self.queue = true;
        self.ticket = ticket;
        self.wait_ms = Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// The same request, under session `id`.
    pub fn with_session(mut self, id: Option<&str>) -> Self {
        self.session = id.map(str::to_owned);
        self
    }

    /// The same request, presenting `key`.
    pub fn with_key(mut self, key: Option<&LeaseKey>) -> Self {
        self.key = key.cloned();
        self
    }

    /// Checks every field against the documented bounds for a record of
    /// `kind`.
    pub fn validate(&self, kind: Kind) -> Result<(), InvalidField> {
        validate_holder(&self.holder)?;
        if !(MIN_TTL_MS..=MAX_TTL_MS).contains(&self.ttl_ms) {
            return Err(invalid(
                "ttl_ms",
                format!("ttl_ms is {}; it must be between {MIN_TTL_MS} and {MAX_TTL_MS}", self.ttl_ms),
            ));
        }
        if self.token == Some(0) {
            return Err(invalid("token", "token 0 is never granted; omit token to acquire"));
        }
        if let Some(key) = &self.key {
            key.validate()?;
        }
        if let Some(session) = &self.session {
            validate_session(session)?;
        }
        self.validate_queue(kind)?;
        self.validate_shared(kind)?;
        match (kind, &self.address) {
            (Kind::Lock, Some(_)) => Err(invalid("address", "address is only accepted for elections")),
            (Kind::Election, Some(addr)) if addr.parse::<SocketAddr>().is_err() => {
                Err(invalid("address", format!("address {addr:?} is not an ip:port pair such as \"10.0.0.7:8080\"")))
            }
            _ => Ok(()),
        }
    }

    fn validate_queue(&self, kind: Kind) -> Result<(), InvalidField> {
        if !self.queue {
            return match (self.ticket, self.wait_ms) {
                (Some(_), _) => Err(invalid("ticket", "ticket is only accepted with \"queue\": true")),
                (_, Some(_)) => Err(invalid("wait_ms", "wait_ms is only accepted with \"queue\": true")),
                _ => Ok(()),
            };
        }
        if kind == Kind::Election {
            return Err(invalid("queue", "queue is only accepted for locks: candidates in an election race"));
        }
        if self.token.is_some() {
            return Err(invalid("queue", "queue is for acquiring; a renewal (with token) needs no place in line"));
        }
        if self.ticket == Some(0) {
            return Err(invalid("ticket", "ticket 0 is never given out; omit ticket to take a place"));
        }
        match self.wait_ms {
            Some(wait) if wait > MAX_WAIT_MS => {
                Err(invalid("wait_ms", format!("wait_ms is {wait}; it may be at most {MAX_WAIT_MS}")))
            }
            _ => Ok(()),
        }
    }

    fn validate_shared(&self, kind: Kind) -> Result<(), InvalidField> {
        if self.shared && kind == Kind::Election {
            return Err(invalid("shared", "shared is only accepted for locks: an election has one leader"));
        }
        match self.permits {
            Some(_) if !self.shared => Err(invalid("permits", "permits is only accepted with \"shared\": true")),
            Some(n) if !(1..=MAX_PERMITS).contains(&n) => {
                Err(invalid("permits", format!("permits is {n}; it must be between 1 and {MAX_PERMITS}")))
            }
            _ => Ok(()),
        }
    }

    /// How long a claim in line waits for the lock before its answer:
    /// `wait_ms`, and at most half of the TTL.
    pub fn line_wait(&self) -> Duration {
        Duration::from_millis(self.wait_ms.unwrap_or(0).min(self.ttl_ms / 2))
    }

    /// The requested lease duration.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }
}

impl ReleaseRequest {
    /// Checks the holder identity, and that the request names either a
    /// token or a ticket.
    pub fn validate(&self) -> Result<(), InvalidField> {
        validate_holder(&self.holder)?;
        match (self.token, self.ticket) {
            (0, None) => return Err(invalid("token", "token is required (or ticket, to leave a lock's line)")),
            (t, Some(_)) if t != 0 => {
                return Err(invalid("ticket", "name either a token to release or a ticket, not both"));
            }
            (_, Some(0)) => return Err(invalid("ticket", "ticket 0 is never given out")),
            _ => {}
        }
        self.key.as_ref().map_or(Ok(()), LeaseKey::validate)
    }
}

/// A held lease as the elector reports it: the body of a granted `PUT` and
/// of `GET` while the record is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    /// The lock or election name.
    pub name: String,
    /// The current holder (for an election: the leader).
    pub holder: String,
    /// The fencing token: grows each time the record changes hands.
    pub token: u64,
    /// The lease duration the holder asked for.
    pub ttl_ms: u64,
    /// The view's version (opaque; grows with every write and when a lease
    /// runs out); pass it as `?wait=` to long-poll for a change.
    pub version: u64,
    /// How long until the elector would let someone else in, unless renewed.
    pub expires_in_ms: u64,
    /// Elections: the leader's advertised `ip:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Locks: how many wait in line for it (absent: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub waiting: u64,
    /// Locks: this is a shared hold (a reader, or one permit); the lock
    /// may have other shared holders beside it.
    #[serde(default, skip_serializing_if = "core::ops::Not::not")]
    pub shared: bool,
    /// Semaphores: which permit the shared hold is (0-based). A resource
    /// fenced per permit refuses a write whose token is below the last it
    /// saw for that permit, or below the last exclusive holder's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permit: Option<u32>,
    /// Elections: a hand-over asked of this leader and not done yet (see
    /// [`TransferView`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferView>,
}

/// A shared hold, as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareView {
    /// Who holds it.
    pub holder: String,
    /// Its fencing token.
    pub token: u64,
    /// Semaphores: which permit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permit: Option<u32>,
}

/// How many records a listing page holds unless `?limit=` says otherwise.
pub const DEFAULT_LIST_LIMIT: usize = 100;
/// The most records one listing page may hold.
pub const MAX_LIST_LIMIT: usize = 1000;
/// The longest `?cursor=` a listing accepts (a Kubernetes continue token
/// is the longest kind: base64 of the last name and a revision).
pub const MAX_CURSOR_LEN: usize = 1024;

/// Whether `cursor` can be one a listing gave out: 1 to [`MAX_CURSOR_LEN`]
/// of the characters names and base64 use (`A-Z a-z 0-9 . _ ~ : + / = -`),
/// so that a request with any valid cursor fits the elector's header limit.
pub fn valid_cursor(cursor: &str) -> bool {
    (1..=MAX_CURSOR_LEN).contains(&cursor.len())
        && cursor.bytes().all(|b| b.is_ascii_alphanumeric() || b"._~:+/=-".contains(&b))
}

/// One record in a listing (`GET /v1/locks`, `GET /v1/elections`): held or
/// free, as the elector judges it at the time of the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordView {
    /// The lock or election name.
    pub name: String,
    /// The holder (for an election: the leader); absent when nobody holds
    /// it (released, or the lease ran out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// The fencing token of the current (or, when free, the last) holder.
    pub token: u64,
    /// The lease duration the holder asked for.
    pub ttl_ms: u64,
    /// Held only: how long until someone else may take it, unless renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<u64>,
    /// The view's version, as `GET /v1/{locks|elections}/{name}` reports it.
    pub version: u64,
    /// Elections: the leader's advertised `ip:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Locks: how many wait in line for it (absent: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub waiting: u64,
    /// Locks: the first [`MAX_LISTED_WAITERS`] waiters, next first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub line: Vec<WaiterView>,
    /// Locks: the shared holds (the first [`MAX_LISTED_WAITERS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<ShareView>,
    /// Semaphores: how many shared holds the lock allows at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permits: Option<u32>,
    /// Elections: a hand-over asked of the leader and not done yet, or,
    /// with no holder, the reservation it left (see [`TransferView`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferView>,
}

/// A page of a listing, in name order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListView {
    /// The records of this page.
    pub items: Vec<RecordView>,
    /// Present when there may be more: pass it as `?cursor=` for the next
    /// page. Opaque: a name for the memory and etcd stores, a continue
    /// token for Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Why a `PUT` or `DELETE` was refused with 409.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictReason {
    /// Another holder has the lease.
    Held,
    /// The caller named a token that is not the current one: its lease
    /// changed hands or was released since.
    StaleToken,
    /// The caller's lease is gone (expired or released) and nobody holds the
    /// record: acquire again, without a token.
    NotHeld,
    /// The lease was acquired with a key and this request did not present
    /// it: only the acquirer may renew or release.
    WrongKey,
    /// The claim named a session that is not open: the holder's end closed
    /// (its leases were released), or the elector ended it (a restart, a
    /// shutdown). Nothing was granted; a holder takes it as having lost
    /// every lease under that session.
    SessionGone,
    /// Waiters are in line for the lock: only the first of them may have
    /// it. Ask with `"queue": true` to take a place at the back.
    Queued,
    /// The `ticket` is not in line (any more): the place ran out unrefreshed
    /// or its session ended. Ask again without a ticket for a new place.
    NotQueued,
    /// A shared claim asked for another number of `permits` than the
    /// lock's shared holders and waiters did.
    PermitsDiffer,
    /// Nobody holds the election, but its last leader handed it over (a
    /// transfer, `POST …/transfer`) to another candidate, or away from the
    /// claimant: reserved for one TTL from the release (`expires_in_ms`
    /// says how long is left). Wait, as for `held`.
    Reserved,
}

/// Body of a 409: who holds the record, and when it may expire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictView {
    /// The current holder, if any.
    pub holder: Option<String>,
    /// How long until the current lease may expire (0 when nobody holds it).
    pub expires_in_ms: u64,
    /// The record's version; long-poll `GET …?wait=VERSION` to learn of a
    /// release at once.
    pub version: u64,
    /// Why the request was refused.
    pub reason: ConflictReason,
}

/// The machine-readable code of an error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the name is not a valid Kubernetes object name.
    InvalidName,
    /// 400: the body is not JSON of the documented shape.
    MalformedBody,
    /// 400: a field is present but out of bounds.
    InvalidField,
    /// 400: a query parameter is malformed.
    InvalidQuery,
    /// 404: no such record, or the record is free (then `version` is set).
    NotFound,
    /// 405: the path exists but not with this method.
    MethodNotAllowed,
    /// 413: the body is larger than the elector accepts.
    BodyTooLarge,
    /// 400: `POST /v1/sessions` without `Connection: upgrade` and
    /// `Upgrade: mpsync-session`.
    UpgradeRequired,
    /// 403: a session asked for from beyond loopback.
    Forbidden,
    /// 410: the watch set a `resume` names is not kept by this elector
    /// (it restarted, nobody resumed it for a minute, a newer `keep`
    /// replaced it, or `total` differs): send the whole set again.
    Gone,
    /// 503: the store is unreachable or failed; retry later.
    Unavailable,
}

/// Every error the elector answers with, whatever the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub error: ErrorCode,
    /// What is wrong, for a person.
    pub message: String,
    /// The offending field or parameter, when one is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For a 404 on a record that exists but is free: its version, to
    /// long-poll on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// The lock document of the original (compatible) API, `GET /locks/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompatLock {
    /// The lock name.
    pub name: String,
    /// Who holds it.
    pub owner: String,
    /// When the lease expires unless renewed, RFC 3339 (an estimate from
    /// the elector's clock, for people; expiry itself is judged on a
    /// monotonic clock).
    pub expiry: String,
    /// Milliseconds until expiry.
    pub expires_in_ms: u64,
    /// The fencing token.
    pub token: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> Result<AcquireRequest, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn acquire_request_round_trips_and_refuses_unknown_fields() {
        let r = req(r#"{"holder":"a","ttl_ms":1000}"#).unwrap();
        assert_eq!(r.token, None);
        assert!(r.validate(Kind::Lock).is_ok());
        assert!(req(r#"{"holder":"a","tll_ms":1000}"#).is_err());
        assert!(req(r#"{"ttl_ms":1000}"#).unwrap_err().to_string().contains("holder"));
    }

    #[test]
    fn a_session_id_is_32_lowercase_hex_characters() {
        let with = |session: &str| req(&format!(r#"{{"holder":"a","ttl_ms":1000,"session":"{session}"}}"#)).unwrap();
        assert!(with("0123456789abcdef0123456789abcdef").validate(Kind::Lock).is_ok());
        for bad in ["", "0123456789ABCDEF0123456789ABCDEF", "0123456789abcdef", "0123456789abcdef0123456789abcdeg"] {
            assert_eq!(with(bad).validate(Kind::Election).unwrap_err().field, "session", "{bad:?}");
        }
        assert!(req(r#"{"holder":"a","ttl_ms":1000,"session":null}"#).is_err(), "absent has one spelling");
        let sent = AcquireRequest::new("a", Duration::from_secs(1), None, None).with_session(Some("s"));
        assert_eq!(serde_json::to_value(&sent).unwrap()["session"], "s");
    }

    #[test]
    fn validation_names_the_field() {
        let bad = |json: &str, kind| req(json).unwrap().validate(kind).unwrap_err().field;
        assert_eq!(bad(r#"{"holder":"","ttl_ms":1000}"#, Kind::Lock), "holder");
        assert_eq!(bad(r#"{"holder":"a","ttl_ms":1}"#, Kind::Lock), "ttl_ms");
        assert_eq!(bad(r#"{"holder":"a","ttl_ms":1000,"token":0}"#, Kind::Lock), "token");
        assert_eq!(bad(r#"{"holder":"a","ttl_ms":1000,"address":"1.2.3.4:5"}"#, Kind::Lock), "address");
        assert_eq!(bad(r#"{"holder":"a","ttl_ms":1000,"address":"nowhere"}"#, Kind::Election), "address");
        assert!(req(r#"{"holder":"a","ttl_ms":1000,"address":"[::1]:80"}"#).unwrap().validate(Kind::Election).is_ok());
    }
}

#[cfg(test)]
mod wait_tests {
    use super::*;

    #[test]
    fn wait_queries_parse_with_the_culprit_named() {
        assert_eq!(parse_wait(None), Ok(None));
        assert_eq!(parse_wait(Some("timeout_ms=5")), Ok(None), "timeout_ms alone is a plain read");
        assert_eq!(parse_wait(Some("wait=4")), Ok(Some(Wait { version: 4, timeout_ms: DEFAULT_WAIT_MS })));
        assert_eq!(parse_wait(Some("wait=4&timeout_ms=9&")), Ok(Some(Wait { version: 4, timeout_ms: 9 })));
        for (query, param) in [("wait=x", "wait"), ("wait=1&timeout_ms=300001", "timeout_ms"), ("colour=red", "colour")]
        {
            assert_eq!(parse_wait(Some(query)).unwrap_err().param, param, "{query}");
        }
    }

    #[test]
    fn optional_fields_are_values_or_absent_never_null() {
        assert!(serde_json::from_str::<AcquireRequest>(r#"{"holder":"a","ttl_ms":10,"token":null}"#).is_err());
        assert!(serde_json::from_str::<AcquireRequest>(r#"{"holder":"a","ttl_ms":10,"address":null}"#).is_err());
        let r: AcquireRequest = serde_json::from_str(r#"{"holder":"a","ttl_ms":10}"#).unwrap();
        assert_eq!((r.token, r.address), (None, None));
        let long = "é".repeat(MAX_HOLDER_LEN);
        assert!(validate_holder(&long).is_ok(), "counted in characters, not bytes");
        assert!(validate_holder(&format!("{long}x")).is_err());
    }
}
