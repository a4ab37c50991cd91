//! The component's session with the elector, over `wasi:http`.
//!
//! A component cannot upgrade a connection (`wasi:http` runtimes forbid the
//! `Connection` and `Upgrade` headers), so it opens the elector's streaming
//! session: `POST /v1/sessions` with a request body it never finishes,
//! answered `200` at once with the session's id. The request stays open
//! while the component computes, for as long as its instance lives; when
//! the runtime's process exits, the kernel closes the connection and the
//! elector releases every lease claimed under the session at once.
//!
//! A runtime that sends a request only once its body is finished (it
//! buffers the body) never gets the answer: the first attempt times out,
//! and this component holds its leases without a session from then on
//! (they run out at their TTL if it dies). The session's end, seen at any
//! call, is the loss of every lease under it.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use mpsync_core::wire::{SESSION_HEADER, validate_session};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, IncomingBody, IncomingResponse, Method, OutgoingBody, RequestOptions, Scheme};
use wasip2::io::streams::{InputStream, OutputStream, StreamError};

/// An open session. Dropping it finishes nothing: the request is abandoned,
/// the connection closes, and the elector releases its leases.
pub struct ElectorSession {
    id: String,
    // Children before their parents: wasi:http drops them in this order.
    input: InputStream,
    _incoming: IncomingBody,
    _response: IncomingResponse,
    output: OutputStream,
    _outgoing: OutgoingBody,
}

/// How long the session's answer may stay silent before the runtime ends
/// it (the elector writes every minute).
const BETWEEN_BYTES: Duration = Duration::from_secs(24 * 3600);

enum State {
    /// Not tried yet, or the last one ended or could not be opened now.
    Closed,
    Open(Rc<ElectorSession>),
    /// This runtime does not answer a request before its body is finished.
    Unsupported,
}

thread_local! {
    static SESSION: RefCell<State> = const { RefCell::new(State::Closed) };
}

impl ElectorSession {
    /// The session's id, sent with every claim made under it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the session is still open, as far as can be seen now
    /// without waiting: its answer's body has not ended and its request
    /// can still be written to.
    pub fn is_open(&self) -> bool {
        if self.output.check_write().is_err() {
            return false;
        }
        if !self.input.subscribe().ready() {
            return true;
        }
        // Bytes the elector sends are ignored; an end is the session's.
        !matches!(self.input.read(4096), Err(StreamError::Closed | StreamError::LastOperationFailed(_)))
    }
}

/// The session to claim under, opening one if none is open (waiting at
/// most `timeout` for the answer); `None` when the runtime cannot keep
/// one or the elector opens none now.
pub fn current(base: &str, timeout: Duration) -> Option<Rc<ElectorSession>> {
    if turned_off() {
        return None;
    }
    SESSION.with(|state| {
        let mut state = state.borrow_mut();
        match &*state {
            State::Unsupported => return None,
            State::Open(s) if s.is_open() => return Some(s.clone()),
            _ => {}
        }
        match open(base, timeout) {
            Ok(session) => {
                let session = Rc::new(session);
                *state = State::Open(session.clone());
                Some(session)
            }
            Err(Opening::Unsupported) => {
                *state = State::Unsupported;
                None
            }
            Err(Opening::NotNow) => {
                *state = State::Closed;
                None
            }
        }
    })
}

/// `MPSYNC_NO_SESSION` (1, true, yes or on) in the environment: hold
/// leases without a session (`mpsync run --no-session` sets it).
fn turned_off() -> bool {
    wasip2::cli::environment::get_environment().into_iter().any(|(k, v)| {
        k == "MPSYNC_NO_SESSION" && matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
    })
}

/// The open session `id` is gone at the elector (a claim under it was
/// refused): the next claim opens another.
pub fn forget(id: &str) {
    SESSION.with(|state| {
        let mut state = state.borrow_mut();
        if matches!(&*state, State::Open(s) if s.id() == id) {
            *state = State::Closed;
        }
    });
}

enum Opening {
    /// No answer before the timeout while connected, or a refusal that
    /// will not change (not on loopback, an elector without sessions).
    Unsupported,
    /// Unreachable or overloaded: try again at the next claim.
    NotNow,
}

fn open(base: &str, timeout: Duration) -> Result<ElectorSession, Opening> {
    let authority = base.strip_prefix("http://").ok_or(Opening::Unsupported)?.trim_end_matches('/');
    let headers = Fields::from_list(&[("content-type".to_owned(), b"application/octet-stream".to_vec())])
        .map_err(|_| Opening::Unsupported)?;
    let request = wasip2::http::types::OutgoingRequest::new(headers);
    request.set_method(&Method::Post).map_err(|()| Opening::Unsupported)?;
    request.set_scheme(Some(&Scheme::Http)).map_err(|()| Opening::Unsupported)?;
    request.set_authority(Some(authority)).map_err(|()| Opening::Unsupported)?;
    request.set_path_with_query(Some("/v1/sessions")).map_err(|()| Opening::Unsupported)?;
    let outgoing = request.body().map_err(|()| Opening::Unsupported)?;
    let output = outgoing.write().map_err(|()| Opening::Unsupported)?;
    let options = RequestOptions::new();
    let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    let _ = options.set_connect_timeout(Some(nanos.min(5_000_000_000)));
    let _ = options.set_first_byte_timeout(Some(nanos));
    // The elector writes a newline into the answer every minute; a day
    // fits every runtime's timer (Node's caps at 2^31 ms: a larger value
    // becomes 1 ms there).
    let _ = options.set_between_bytes_timeout(Some(BETWEEN_BYTES.as_nanos() as u64));
    let future = outgoing_handler::handle(request, Some(options)).map_err(|_| Opening::NotNow)?;
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        // Connected, but no answer while the body is open: this runtime
        // sends a request only once its body is finished.
        Some(Ok(Err(wasip2::http::types::ErrorCode::ConnectionReadTimeout))) => return Err(Opening::Unsupported),
        // Anything else (refused, reset, the elector restarting) may pass.
        _ => return Err(Opening::NotNow),
    };
    match response.status() {
        200 => {}
        // Not on loopback, or an elector that opens no streaming session.
        400 | 403 | 404 | 405 => return Err(Opening::Unsupported),
        _ => return Err(Opening::NotNow),
    }
    let id = response
        .headers()
        .get(SESSION_HEADER)
        .first()
        .and_then(|v| String::from_utf8(v.clone()).ok())
        .filter(|id| validate_session(id).is_ok())
        .ok_or(Opening::Unsupported)?;
    let incoming = response.consume().map_err(|()| Opening::Unsupported)?;
    let input = incoming.stream().map_err(|()| Opening::Unsupported)?;
    Ok(ElectorSession { id, input, _incoming: incoming, _response: response, output, _outgoing: outgoing })
}
