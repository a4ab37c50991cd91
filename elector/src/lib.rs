//! The metaparticle-sync elector: a sidecar that serves locks and leader
//! elections over HTTP, backed by a pluggable store.
//!
//! Clients (the `mpsync` host, the guest component, the Envoy filter, the
//! original metaparticle libraries) talk to it on loopback; it does the
//! heavy lifting against the store. The lease rules themselves live in
//! `mpsync_core`; this crate moves bytes.
//!
//! # Modules
//!
//! - [`api`]: routes, request parsing and responses.
//! - [`status`]: the status page (`GET /status`), on the API port only.
//! - [`server`]: the HTTP server and its limits (connections, header
//!   time and size), for the API and for the probe port.
//! - [`error`]: JSON error answers.
//! - [`history`]: the changes of holder this elector saw, following the
//!   store's feed (`GET /v1/history`).
//! - [`service`]: the lease operations over a store (claim, release, read,
//!   long-poll, sessions), independent of HTTP.
//! - [`store`]: the [`Store`](store::Store) trait (compare-and-swap on a
//!   version, change notification) and the memory, etcd and Kubernetes
//!   stores.
//! - [`metrics`]: Prometheus counters and latency histograms.
//! - [`leader_service`]: `--leader-service`, the EndpointSlice of a
//!   selector-less Kubernetes Service kept listing only an election's
//!   leader.
//!
//! # Running it
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use elector::{service::Service, store::MemoryStore};
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let service = Arc::new(Service::new(Arc::new(MemoryStore::new()), "me".into(), std::time::Duration::from_secs(30)));
//! elector::run(listener, service, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::future::Future;
use std::sync::Arc;

pub mod api;
pub mod error;
pub mod history;
pub mod leader_service;
pub mod metrics;
mod quiet;
pub mod server;
pub mod service;
pub mod status;
pub mod store;

/// Serves the API on an already-bound `listener`, with the default
/// [`server::Limits`], until `shutdown` resolves; then stops accepting,
/// answers pending long-polls at once, finishes the requests in flight and
/// returns.
pub async fn run(
    listener: tokio::net::TcpListener,
    service: Arc<service::Service>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(listener, service, server::Limits::default(), shutdown).await
}
