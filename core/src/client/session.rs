//! One lease of one holder on one record, with the protocol around it.

use core::time::Duration;

use super::POLL_SLICE;
use super::error::{Error, Leader};
use super::http::{
    Claimed, HttpRequest, Read, claim_request, decode_claim, decode_release, leave_request, path, read_request,
    rejection, release_request,
};
use crate::lease::{Held, LeaseClient, LeaseConfig, Output, Request, RequestId, Response};
use crate::wire::{AcquireRequest, ConflictReason, ConflictView, Kind, LeaseKey, TransferView};

mod transfer;

/// The floor of any request timeout.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_millis(5);

/// How many random bytes [`Session::new`] takes: 16 for the holder's key,
/// 8 to seed the jitter of its backoff.
pub const ENTROPY_LEN: usize = 24;

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
    /// The holder's secret, sent on every claim and release: the elector
    /// lets only a request that presents it renew or release the lease.
    key: LeaseKey,
    /// The state of the jitter generator (xorshift64*, never 0).
    jitter: u64,
    /// The last version seen of the record (long-poll on it).
    version: u64,
    /// Elections: the leader as last seen.
    leader: Option<Leader>,
    /// Since the last [`Session::start_acquire`]: whether a grant came, the
    /// last refusal, the last failure.
    acquired: bool,
    refusal: Option<ConflictView>,
    failure: Option<String>,
    /// The elector refused the request itself (a name or an option it
    /// cannot take): retrying cannot help.
    rejected: Option<Error>,
    /// The `DELETE` of the last [`Session::release`], and how it ended
    /// (`None` inside: not answered yet, or released).
    release: Option<(RequestId, Option<String>)>,
    /// The elector session (`POST /v1/sessions`) claims are made under:
    /// the elector releases the lease at once when the holder's end of it
    /// closes.
    under: Option<String>,
    /// Locks: the place held in the lock's line, from the last `202`.
    ticket: Option<u64>,
    /// Locks: make the next acquisition in line, parked up to this long.
    line_wait: Option<Duration>,
    /// The last attempt ended in line (a `202`, or a place that ran out):
    /// the next one goes at once.
    in_line: bool,
    /// The last claim went in line and the elector could not park it (it
    /// is at its `--max-long-polls`: 429): back off before the next.
    overloaded: bool,
    /// The claim in flight was made in line.
    sent_in_line: bool,
    /// Locks: held shared (a reader, or one of `permits`), not exclusive.
    share: Option<Option<u32>>,
    /// Semaphores: the permit of the lease held.
    permit: Option<u32>,
    /// Elections: step down as soon as a transfer is asked of this leader
    /// (the default), or leave it to the application.
    step_down_on_transfer: bool,
    /// The transfer asked of this holder, as its last renewal answer said.
    transfer: Option<TransferView>,
    /// `transfer` changed since [`Session::transfer_changed`] last looked.
    transfer_news: bool,
    /// The transfer this holder last stepped down for by itself, until the
    /// next acquisition.
    stepped_down: Option<TransferView>,
}

impl Session {
    /// A session for `name` on the elector at `elector` (its base URL, for
    /// messages), with the name and every option checked. Sends nothing.
    /// `entropy` must come from a cryptographically secure source (the
    /// OS's, or WASI's `get-random-bytes`): the first 16 bytes become the
    /// holder's key.
    pub fn new(
        elector: &str,
        kind: Kind,
        name: &str,
        options: Options,
        entropy: &[u8; ENTROPY_LEN],
    ) -> Result<Session, Error> {
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
            key: LeaseKey::from_random(&entropy[..16]),
            jitter: u64::from_le_bytes([
                entropy[16],
                entropy[17],
                entropy[18],
                entropy[19],
                entropy[20],
                entropy[21],
                entropy[22],
                entropy[23],
            ]) | 1,
            version: 0,
            leader: None,
            acquired: false,
            refusal: None,
            failure: None,
            rejected: None,
            release: None,
            under: None,
            ticket: None,
            line_wait: None,
            in_line: false,
            share: None,
            permit: None,
            step_down_on_transfer: true,
            transfer: None,
            transfer_news: false,
            stepped_down: None,
            overloaded: false,
            sent_in_line: false,
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
        self.stepped_down = None;
        self.transfer = None;
        self.acquired = false;
        self.refusal = None;
        self.failure = None;
        self.rejected = None;
        self.in_line = false;
        self.machine.acquire(now).map_err(|e| Error::InvalidOption(e.to_string()))?;
        Ok(None)
    }

    /// Locks: holds the lock shared instead of exclusively: as one of any
    /// number of readers (`permits` `None`), or as one of `permits` holders
    /// of a counting semaphore. Set it before the first acquisition.
    pub fn hold_shared(&mut self, permits: Option<u32>) -> Result<(), Error> {
        let check = AcquireRequest::new(&self.options.holder, self.options.ttl, None, None).shared(permits);
        check.validate(self.kind).map_err(|e| Error::InvalidOption(format!("{}: {}", e.field, e.message)))?;
        self.share = Some(permits);
        Ok(())
    }

    /// Semaphores: which permit the lease held is (0-based).
    pub fn permit(&self) -> Option<u32> {
        self.permit
    }

    /// Locks: makes the next acquisition wait its turn in the lock's line
    /// (`"queue": true`), parked on the elector up to `wait` for the lock to
    /// be handed over; a place taken before is kept (`None`: the next
    /// acquisition is a single attempt, even if a blocking call that asked
    /// to wait was abandoned before it sent its request). One acquisition
    /// only. Ignored for elections.
    pub fn wait_in_line(&mut self, wait: Option<Duration>) {
        self.line_wait = wait.filter(|_| self.kind == Kind::Lock);
    }

    /// The last attempt went in line and the elector was too busy to park
    /// it (429, at its `--max-long-polls`): the place is kept, and the next
    /// attempt comes after a backoff, as after a refused long-poll.
    pub fn overloaded(&self) -> bool {
        self.overloaded
    }

    /// The last attempt left this holder waiting in line (or its place ran
    /// out): attempt again at once, with no long-poll.
    pub fn in_line(&self) -> bool {
        self.in_line
    }

    /// The `DELETE` that gives up the place held in line, if any: send it
    /// when a blocking acquire gives up (a place not kept runs out after
    /// the TTL, holding up the line until then).
    pub fn leave_line(&mut self) -> Option<HttpRequest> {
        self.in_line = false;
        let ticket = self.ticket.take()?;
        Some(leave_request(&self.name, &self.options.holder, ticket, Some(&self.key), self.request_timeout()))
    }

    /// Makes the claims from now on under the elector session `id` (or
    /// none). Set it before [`start_acquire`](Self::start_acquire): the
    /// renewals of a lease go under the session it was granted under.
    pub fn claim_under(&mut self, id: Option<&str>) {
        self.under = id.map(str::to_owned);
    }

    /// The elector session claims are made under.
    pub fn under(&self) -> Option<&str> {
        self.under.as_deref()
    }

    /// The elector session `id` ended (for any reason: the elector may have
    /// released every lease under it): a lease held under it is lost at
    /// once ([`Output::Lost`] follows from [`next_step`](Self::next_step)).
    /// Returns whether one was.
    pub fn session_ended(&mut self, id: &str) -> bool {
        if self.under.as_deref() != Some(id) {
            return false;
        }
        self.under = None;
        self.machine.forfeit()
    }

    /// Whether the last attempt was refused because its elector session was
    /// no longer open there.
    pub fn refused_for_session(&self) -> bool {
        self.refusal.as_ref().is_some_and(|c| c.reason == ConflictReason::SessionGone)
    }

    /// After the attempt begun by [`start_acquire`](Self::start_acquire)
    /// was driven: the lease, or why not.
    pub fn acquisition(&self, now: Duration) -> Result<Held, Error> {
        if self.acquired {
            return self.lease(now).ok_or(Error::NotHeld);
        }
        if let Some(rejected) = &self.rejected {
            return Err(rejected.clone());
        }
        match (&self.refusal, &self.failure) {
            (Some(c), _) => Err(match (&c.holder, c.reason) {
                (Some(holder), _) => Error::HeldBy(holder.clone()),
                (
                    None,
                    ConflictReason::Held
                    | ConflictReason::Queued
                    | ConflictReason::NotQueued
                    | ConflictReason::Reserved,
                ) => Error::HeldBy(String::new()),
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
        if self.transfer.take().is_some() {
            self.transfer_news = true;
        }
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
                let mut body = AcquireRequest::new(&options.holder, options.ttl, token, options.address.as_deref())
                    .with_key(Some(&self.key))
                    .with_session(self.under.as_deref());
                if let Some(permits) = self.share {
                    body = body.shared(permits);
                }
                let wait = self.line_wait.take().filter(|_| token.is_none());
                self.sent_in_line = wait.is_some();
                match wait {
                    Some(wait) => claim_request(kind, name, &body.in_line(self.ticket, wait), timeout + wait),
                    None => claim_request(kind, name, &body, timeout),
                }
            }
            Request::Release { token } => release_request(kind, name, &options.holder, token, Some(&self.key), timeout),
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
        self.overloaded = self.sent_in_line && matches!(reply, Ok((429, _)));
        if let Ok((status, body)) = &reply
            && let Some(rejected) = rejection(*status, body)
        {
            let said = format!("{} refused the request: {rejected}", url());
            self.rejected = Some(rejected);
            self.machine.handle_response(id, Response::Failed, now);
            return Some(said);
        }
        let mut transfer = None;
        let (response, failure) = match reply.map(|(status, body)| decode_claim(status, body)) {
            Ok(Ok(Claimed::Granted(view))) => {
                transfer = Some(view.transfer.clone());
                self.version = view.version;
                self.ticket = None;
                self.permit = view.permit;
                if self.kind == Kind::Election {
                    self.leader = Some(Leader::from(&view));
                }
                (Response::Granted { token: view.token, version: view.version }, None)
            }
            Ok(Ok(Claimed::Refused(conflict))) if conflict.reason == ConflictReason::PermitsDiffer => {
                // Waiting cannot help: the lock is a semaphore of another size.
                let said = match self.share {
                    Some(Some(n)) => format!("{n} permits"),
                    _ => "any number of readers".to_owned(),
                };
                let wrong = format!(
                    "{}: this asks for {said}, but the lock's shared holders and waiters asked for another number of permits",
                    url()
                );
                self.rejected = Some(Error::InvalidOption(wrong.clone()));
                (Response::Failed, Some(wrong))
            }
            Ok(Ok(Claimed::Refused(conflict))) => {
                self.version = conflict.version;
                if conflict.reason == ConflictReason::NotQueued {
                    // The place ran out (or its session ended): take a new one.
                    self.ticket = None;
                    self.in_line = true;
                }
                self.refusal = Some(conflict);
                (Response::Refused, None)
            }
            Ok(Ok(Claimed::Queued(place))) => {
                self.version = place.version;
                self.ticket = Some(place.ticket);
                self.in_line = true;
                let waiting = ConflictView {
                    holder: place.holder,
                    expires_in_ms: 0,
                    version: place.version,
                    reason: ConflictReason::Held,
                };
                self.refusal = Some(waiting);
                (Response::Refused, None)
            }
            Ok(Err(e)) => (Response::Failed, Some(format!("{} {e}", url()))),
            Err(e) => (Response::Failed, Some(e)),
        };
        if let Some(failure) = &failure {
            self.failure = Some(failure.clone());
        }
        self.machine.handle_response(id, response, now);
        if let Some(transfer) = transfer {
            self.learn_transfer(transfer);
        }
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

    /// A number for the jitter of this session's backoff (xorshift64*:
    /// spreads retries, nothing more).
    pub fn draw(&mut self) -> u64 {
        let mut x = self.jitter;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.jitter = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// The request that waits for the record to change from the version
    /// last seen, for at most `slice` (capped at [`POLL_SLICE`]).
    pub fn wait_request(&self, slice: Duration) -> HttpRequest {
        self.wait_request_from(self.version, slice)
    }

    /// The request that waits for the record to change from `version`,
    /// for at most `slice` (capped at [`POLL_SLICE`]).
    pub fn wait_request_from(&self, version: u64, slice: Duration) -> HttpRequest {
        read_request(self.kind, &self.name, Some((version, slice.min(POLL_SLICE))), self.request_timeout())
    }

    /// The version of the record the last attempt was refused at, if it
    /// was: a blocking acquire waits for a change from there, not from a
    /// later read (see [`crate::client::blocking::Acquire`]).
    pub fn refused_at(&self) -> Option<u64> {
        self.refusal.as_ref().map(|c| c.version)
    }

    /// A plain read of the record.
    pub fn read_request(&self) -> HttpRequest {
        read_request(self.kind, &self.name, None, self.request_timeout().max(Duration::from_secs(1)))
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Method, decode_read};

    const MS: Duration = Duration::from_millis(1);
    const ENTROPY: [u8; ENTROPY_LEN] = [7; ENTROPY_LEN];

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
        let mut s = Session::new("http://e", Kind::Lock, "db", options(), &ENTROPY).unwrap();
        assert_eq!(s.start_acquire(MS).unwrap(), None);
        let (id, request, http) = send(&mut s);
        assert_eq!((http.method, http.path.as_str(), http.timeout), (Method::Put, "/v1/locks/db", MS * 600));
        let body: AcquireRequest = serde_json::from_slice(http.body.as_deref().unwrap()).unwrap();
        let key = LeaseKey::from_random(&ENTROPY[..16]);
        assert_eq!(body, AcquireRequest::new("me", MS * 3000, None, None).with_key(Some(&key)));
        assert_eq!(s.answer(id, request, Ok((200, &granted(4, 9, "me"))), MS * 2), None);
        assert_eq!(s.next_step(), Some(Step::Event(Output::Acquired { token: 4 })));
        assert_eq!(s.acquisition(MS * 2).unwrap().token, 4);
        assert_eq!(s.version(), 9);
        s.release().unwrap();
        let (_, request, http) = send(&mut s);
        assert_eq!((request, http.method), (Request::Release { token: 4 }, Method::Delete));
        let body: crate::wire::ReleaseRequest = serde_json::from_slice(http.body.as_deref().unwrap()).unwrap();
        assert_eq!(body.key, Some(key), "the release presents the key");
        assert_eq!(s.release(), Err(Error::NotHeld));
    }

    #[test]
    fn renewals_present_the_key_and_keys_differ_by_entropy() {
        let mut s = Session::new("http://e", Kind::Lock, "db", options(), &ENTROPY).unwrap();
        s.start_acquire(MS).unwrap();
        let (id, request, _) = send(&mut s);
        s.answer(id, request, Ok((200, &granted(4, 9, "me"))), MS * 2);
        s.tick(MS * 1100);
        let (_, request, http) = next_send(&mut s);
        assert_eq!(request, Request::Renew { token: 4 });
        let body: AcquireRequest = serde_json::from_slice(http.body.as_deref().unwrap()).unwrap();
        assert_eq!(body.key, Some(LeaseKey::from_random(&ENTROPY[..16])));
        let other = Session::new("http://e", Kind::Lock, "db", options(), &[8; ENTROPY_LEN]).unwrap();
        assert_ne!(other.key, s.key);
        assert!(!format!("{s:?}").contains(s.key.as_str()), "Debug never shows the key");
        s.release().unwrap();
        let step = s.next_step();
        assert!(matches!(step, Some(Step::Send { .. })));
        assert!(!format!("{step:?}").contains(s.key.as_str()), "nor a request that carries it");
    }

    #[test]
    fn claims_go_under_the_elector_session_and_its_end_loses_the_lease_at_once() {
        let id = "0123456789abcdef0123456789abcdef";
        let mut s = Session::new("http://e", Kind::Lock, "db", options(), &ENTROPY).unwrap();
        s.claim_under(Some(id));
        s.start_acquire(MS).unwrap();
        let (rid, request, http) = send(&mut s);
        let body: AcquireRequest = serde_json::from_slice(http.body.as_deref().unwrap()).unwrap();
        assert_eq!(body.session.as_deref(), Some(id));
        s.answer(rid, request, Ok((200, &granted(4, 9, "me"))), MS * 2);
        s.tick(MS * 1100);
        let (_, _, http) = next_send(&mut s);
        let body: AcquireRequest = serde_json::from_slice(http.body.as_deref().unwrap()).unwrap();
        assert_eq!(body.session.as_deref(), Some(id), "renewals stay under the session");
        assert!(!s.session_ended("ffffffffffffffffffffffffffffffff"), "another session's end changes nothing");
        assert!(s.lease(MS * 1200).is_some());
        assert!(s.session_ended(id));
        assert_eq!(s.lease(MS * 1200), None, "lost at once, long before the deadline");
        assert_eq!(s.next_step(), Some(Step::Event(Output::Lost { token: 4 })));
        assert_eq!(s.next_step(), None, "and nothing is sent: the elector released it or lets it run out");
        assert_eq!(s.under(), None);
    }

    #[test]
    fn a_claim_under_a_closed_session_is_a_retryable_refusal() {
        let mut s = Session::new("http://e", Kind::Lock, "db", options(), &ENTROPY).unwrap();
        s.claim_under(Some("0123456789abcdef0123456789abcdef"));
        s.start_acquire(MS).unwrap();
        let (id, request, _) = send(&mut s);
        let gone = br#"{"name":"db","reason":"session_gone","holder":null,"version":3,"expires_in_ms":0}"#;
        s.answer(id, request, Ok((409, gone)), MS);
        assert!(s.refused_for_session());
        assert_eq!(s.acquisition(MS), Err(Error::NotHeld));
    }

    #[test]
    fn a_refused_option_is_reported_as_such_not_as_an_outage() {
        let mut s = Session::new("http://e", Kind::Lock, "db", options(), &ENTROPY).unwrap();
        s.start_acquire(MS).unwrap();
        let (id, request, _) = next_send(&mut s);
        let ttl = br#"{"error":"invalid_field","message":"ttl_ms is above the store's maximum","field":"ttl_ms"}"#;
        assert!(s.answer(id, request, Ok((400, ttl)), MS).is_some());
        assert_eq!(s.acquisition(MS), Err(Error::InvalidOption("ttl_ms is above the store's maximum".into())));
        s.start_acquire(MS * 2).unwrap();
        let (id, request, _) = next_send(&mut s);
        let name = br#"{"error":"invalid_name","message":"too long for this store","field":"name"}"#;
        s.answer(id, request, Ok((400, name)), MS * 2);
        assert_eq!(s.acquisition(MS * 2), Err(Error::InvalidName("too long for this store".into())));
        s.start_acquire(MS * 3).unwrap();
        let (id, request, _) = next_send(&mut s);
        s.answer(id, request, Ok((503, b"{}")), MS * 3);
        assert!(matches!(s.acquisition(MS * 3), Err(Error::Unavailable(_))), "a new attempt starts clean");
    }

    #[test]
    fn a_refusal_names_the_holder_and_a_failure_is_unavailable() {
        let mut s = Session::new("http://e", Kind::Lock, "db", options(), &ENTROPY).unwrap();
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
        let mut s = Session::new("http://e", Kind::Lock, "db", options(), &ENTROPY).unwrap();
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
        assert!(matches!(
            Session::new("http://e", Kind::Lock, "Not_A_Name", options(), &ENTROPY),
            Err(Error::InvalidName(_))
        ));
        let zero = Options { ttl: Duration::ZERO, ..options() };
        assert!(matches!(Session::new("http://e", Kind::Lock, "db", zero, &ENTROPY), Err(Error::InvalidOption(_))));
        let address = Options { address: Some("10.0.0.1:80".into()), ..options() };
        assert!(matches!(Session::new("http://e", Kind::Lock, "db", address, &ENTROPY), Err(Error::InvalidOption(_))));
    }

    #[test]
    fn an_election_follows_its_leader() {
        let mut s = Session::new("http://e", Kind::Election, "primary", options(), &ENTROPY).unwrap();
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
        let mut s = Session::new("http://e", Kind::Election, "primary", options(), &ENTROPY).unwrap();
        s.start_acquire(MS).unwrap();
        let (id, request, _) = send(&mut s);
        s.answer(id, request, Ok((200, &granted(4, 9, "me"))), MS * 2);
        assert_eq!(s.leader(MS * 2).unwrap().id, "me");
        assert!(!s.observe(&Read::Free { version: 8 }), "the watch's read from before the grant");
        assert_eq!(s.leader(MS * 2).unwrap().id, "me");
        assert!(s.observe(&Read::Free { version: 10 }), "a later one counts");
    }
}
