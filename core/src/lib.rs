//! The sans-IO heart of metaparticle-sync.
//!
//! Everything here is deterministic: no sockets, no runtime, no clock. Every
//! function that depends on time takes `now`, a [`Duration`](core::time::Duration)
//! since an arbitrary origin of a monotonic clock that the caller owns. The
//! elector, the `mpsync` host, the guest component and the Envoy filter only
//! move bytes and call into this crate, so the safety rules are written once.
//!
//! # Modules
//!
//! - [`name`]: lock and election names (Kubernetes object names, DNS-1123
//!   subdomains), validated before any store sees them.
//! - [`wire`]: the JSON types of the elector's versioned HTTP API, and the
//!   lock document of the original (compatible) API.
//! - [`watch`]: the JSON types of a watch over many names in one request.
//! - [`key`]: the holder's secret key and the digest stores keep of it.
//! - [`record`]: the store-side rules: who may take a record, when a lease
//!   has expired, how fencing tokens advance in each store, and which
//!   records a store keeps once released or expired.
//! - [`history`]: the changes of holder an elector keeps and serves
//!   (`GET /v1/history`), bounded, fed by what its store reports.
//! - [`judge`]: expiry judged on the judge's own monotonic clock, from the
//!   moment it last saw a record change; when a lease that ran out is
//!   cleared, so that the judge keeps only the leases it saw held lately.
//! - [`transfer`]: leadership transfer: asking the leader to hand over,
//!   and the reservation that keeps the hand-over for its candidate.
//! - [`line`]: fair locks: the line of waiters a lock record keeps, who
//!   gets the lock next, and how a release hands it over.
//! - [`route`]: the leader-routing decision for proxies, and the allowlist
//!   of addresses leaders may advertise.
//! - [`lease`]: the client lease state machine: acquire, renew when due,
//!   report the lease lost before the store could hand it to anyone else.
//! - [`client`]: the client half of the protocol around it: requests and
//!   answers, the leader, the client error, the blocking calls' retry policy.
//!
//! # The safety story in one paragraph
//!
//! A client counts its lease from the moment it *sent* the request that
//! granted or renewed it, and reports it lost at `sent + ttl × (1 − margin)`.
//! The store counts the same lease from the moment it *observed* the write,
//! which is later, and lets another holder in only at `observed + ttl`. So the
//! holder always learns it lost the lock before anyone else can take it.
//! A fencing token stays the same across renewals and grows each time a
//! record changes hands (by one within a record; a store that forgets or
//! loses records mints from a counter of its own, so tokens may jump, see
//! [`record`]), and never goes back, so a resource guarded by the token can
//! refuse a stale holder.
//!
//! A holder's clock may drift: the promise holds while the holder's clock
//! runs at least `1 − margin` times as fast as the judge's (20% slow with
//! the default margin; a holder's clock that runs fast is always safe); see
//! [`lease`]. Only the acquirer can renew or release: it presents a secret
//! key the judge keeps only the digest of (see [`record`]).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod client;
pub mod history;
pub mod judge;
pub mod key;
pub mod lease;
pub mod line;
pub mod name;
pub mod record;
pub mod route;
pub mod transfer;
pub mod watch;
pub mod wire;

pub use judge::Judge;
pub use lease::{LeaseClient, LeaseConfig, Output, RequestId};
pub use name::{NameError, validate_name};
pub use record::{Claim, Conflict, ConflictReason, Current, Outcome, Record, ReleaseOutcome, Transfer, Why};
pub use wire::Kind;

/// Locks `mutex`, carrying on past a poisoned lock: every mutex in this
/// project guards state that each critical section leaves consistent at
/// every step, so a panic elsewhere while it was held is no reason to stop
/// serving. The one poison-tolerant lock of the workspace.
pub fn lock<T: ?Sized>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
