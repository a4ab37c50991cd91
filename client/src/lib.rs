//! `mpsync-client`: the native Rust client of the metaparticle-sync
//! elector.
//!
//! - [`http::Client`]: a small HTTP/1.1 client of the elector's API, with
//!   keep-alive and a timeout on every request.
//! - [`lease::Lease`]: one lock or election candidacy, renewed in the
//!   background, reported lost at its local deadline.
//! - [`Client::watch`]: one long-poll over many names ([`Tracked`] keeps
//!   the versions known and merges the answers).
//! - [`session::ElectorSession`]: the client's session with its elector;
//!   leases claimed under it are released by the elector the moment this
//!   process exits (on by default; [`Client::with_sessions`]).
//!
//! The protocol (requests, answers, the retry policy of blocking calls, the
//! error) is `mpsync_core::client`'s; this crate only moves bytes. The
//! `mpsync` host, its tests and the benchmarks use it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mpsync_client::Error> {
//! use std::time::Duration;
//! use mpsync_client::{Client, Kind, Lease, Options};
//!
//! let client = Client::new("http://127.0.0.1:13131");
//! let options = Options { ttl: Duration::from_secs(10), holder: "me".into(), address: None };
//! let lease = Lease::new(client, Kind::Lock, "db-migration", options)?;
//! let granted = lease.acquire(Duration::from_secs(30)).await?;
//! println!("holding db-migration with token {}", granted.token);
//! lease.release().await?;
//! # Ok(()) }
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod http;
pub mod lease;
pub mod session;

pub use http::{Client, ClientError, Reply};
pub use lease::{Granted, Lease};
pub use mpsync_core::client::watch::Tracked;
pub use mpsync_core::client::{Claimed, DEFAULT_TTL, Error, Leader, Options, Read};
pub use mpsync_core::watch::{WatchAnswer, Watched};
pub use mpsync_core::wire::{Kind, TransferRequest, TransferView};
pub use session::{ElectorSession, OpenError};
