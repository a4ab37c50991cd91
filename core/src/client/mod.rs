//! The client half of the elector's HTTP protocol, sans-IO.
//!
//! Every client of the elector (the `mpsync` host, the portable guest, the
//! Envoy filter, the native `mpsync-client` crate) moves bytes and calls
//! into this module, so the protocol is written once:
//!
//! - [`session`]: a [`Session`] wraps one [`LeaseClient`](crate::LeaseClient)
//!   with what it needs to talk to the elector: it turns the state
//!   machine's requests into [`HttpRequest`]s and the elector's answers
//!   back into [`Response`](crate::lease::Response)s, and keeps what the
//!   answers said (the last refusal, the leader, the version to long-poll).
//!   It also holds the holder's key, which it sends on every claim and
//!   release, so that only this session can renew or release its lease.
//! - [`http`]: the requests ([`claim_request`], [`read_request`], …) and
//!   the decoders of their answers ([`decode_claim`], [`decode_read`],
//!   [`decode_release`]).
//! - [`blocking`]: [`Acquire`], the one driver of the blocking calls
//!   (`lock-within`, `campaign`): it says when to try, when to long-poll
//!   and how long to back off; [`Blocking`] is its retry policy.
//! - [`error`]: [`Error`], the client error of the WIT `error` variant, and
//!   [`wit_conversions!`](crate::wit_conversions), which writes its mapping
//!   onto the bindings' types.
//!
//! The caller owns the clock (`now` is a [`Duration`] since an origin of its
//! monotonic clock), the sockets and the entropy (a session's key and its
//! backoff jitter come from bytes the caller draws from its own source of
//! randomness).

use core::time::Duration;

pub mod blocking;
pub mod error;
pub mod http;
pub mod session;
pub mod watch;

pub use blocking::{Acquire, Action, Backoff, Blocking, Then, retry_after};
pub use error::{Error, Leader};
pub use http::{
    AnswerError, Claimed, HttpRequest, Method, Read, claim_request, decode_claim, decode_list, decode_read,
    decode_release, decode_transfer, leave_request, list_request, path, read_request, release_request,
    transfer_request,
};
pub use session::{ENTROPY_LEN, Options, Session, Step};

/// The lease duration when the app names none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// The longest one long-poll waits before asking again.
pub const POLL_SLICE: Duration = Duration::from_secs(30);
/// How much longer than its `timeout_ms` a long-poll may take to answer
/// before the client gives up on it.
pub const POLL_GRACE: Duration = Duration::from_secs(5);
