//! The HTTP server around the API, with the limits that keep a flood of
//! connections or half-sent requests from wearing the elector down.
//!
//! - at most `max_connections` open at once: one more is answered at once
//!   with 503 and `retry-after`, and closed;
//! - a request's headers must arrive within `header_read_timeout`, which is
//!   also how long an idle keep-alive connection is kept (a slow or silent
//!   client cannot hold a connection for ever);
//! - headers of at most `max_header_bytes`, answered 431 past it;
//! - bodies of at most 16 KiB (413, in [`crate::api`]) and at most
//!   `max_long_polls` long-polls parked at once (429, in [`crate::api`]).
//!
//! Connections are served with HTTP/1.1 upgrades, for sessions
//! (`POST /v1/sessions`, [`crate::api`]): once upgraded, a session's
//! connection leaves this loop's limits and timeouts (a session has no idle
//! timeout; `--max-sessions` bounds them) and its shutdown (the elector
//! ends its sessions itself, which releases nothing).
//!
//! Every refusal is counted in `/metrics` (`mpsync_refusals_total`) and
//! logged, at most once a second per limit.
//!
//! The probe port (`--health-listen`, [`serve_health`]) runs the same loop
//! with the same limits and a connection cap of its own: it is the one
//! address a pod exposes beyond loopback, and a flood there must neither
//! wear the elector down nor take connections from the lease API.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, watch};

use crate::api::Peer;
use crate::metrics::Refusal;
use crate::quiet::Quiet;
use crate::service::Service;

/// The server's limits, applied to each listening address on its own.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once (per listening address).
    pub max_connections: usize,
    /// Time to send a request's headers, and to keep an idle connection.
    pub header_read_timeout: Duration,
    /// Bytes of request line and headers.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_connections: 10_000, header_read_timeout: Duration::from_secs(10), max_header_bytes: 16 * 1024 }
    }
}

const FULL: &str = "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
connection: close\r\ncontent-length: 100\r\n\r\n\
{\"error\":\"unavailable\",\"message\":\"too many connections open (--max-connections); retry in a second\"}";

/// Serves the API on an already-bound `listener` within `limits` until
/// `shutdown` resolves; then stops accepting, answers pending long-polls
/// at once, finishes the requests in flight, ends every session (which
/// releases nothing) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<Service>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let open = accept(listener, crate::api::router(service.clone()), &service, limits, shutdown).await;
    tracing::info!("shutting down: finishing requests in flight");
    service.begin_shutdown();
    open.shutdown().await;
    // Ended by the elector, they release nothing; waited for so that
    // nothing is written to the store once this returns.
    service.sessions_ended().await;
    Ok(())
}

/// Serves only `/healthz`, `/readyz` and `/metrics` (the probe port,
/// `--health-listen`) on an already-bound `listener`, within `limits` as
/// [`serve`] does, until `shutdown` resolves; then stops accepting and
/// finishes the requests in flight.
pub async fn serve_health(
    listener: tokio::net::TcpListener,
    service: Arc<Service>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let open = accept(listener, crate::api::health_router(service.clone()), &service, limits, shutdown).await;
    open.shutdown().await;
    Ok(())
}

/// The connections still open, to finish at shutdown. (hyper-util's
/// `GracefulShutdown` does the same, but not for connections that may be
/// upgraded.)
struct Open {
    stop: watch::Sender<bool>,
}

impl Open {
    /// Asks every connection to finish its request in flight and close,
    /// and waits until they all have.
    async fn shutdown(self) {
        self.stop.send_replace(true);
        self.stop.closed().await;
    }
}

/// Accepts connections on `listener` and serves `app` on each, within
/// `limits`, until `shutdown` resolves; returns what tracks the
/// connections still open.
async fn accept(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    service: &Service,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Open {
    let app = TowerToHyperService::new(app);
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop, stopping) = watch::channel(false);
    let quiet = Quiet::new();
    let failing_accepts = Quiet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: keep serving the
                    // connections we have and try again shortly.
                    if failing_accepts.speak() {
                        tracing::warn!("accepting a connection: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small request/response exchanges: send each answer at once.
        let _ = stream.set_nodelay(true);
        let Ok(permit) = open.clone().try_acquire_owned() else {
            service.metrics().refuse(Refusal::Connection);
            if quiet.speak() {
                tracing::warn!(max = limits.max_connections, %addr, "refusing connections past --max-connections");
            }
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(FULL.as_bytes())).await;
            });
            continue;
        };
        // Each request learns its peer (only loopback opens a session).
        let app = app.clone();
        let labelled = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(Peer(peer));
            hyper::service::Service::call(&app, request)
        });
        let connection = http.serve_connection(TokioIo::new(stream), labelled).with_upgrades();
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop((stopping, permit));
        });
    }
    Open { stop }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_full_answer_says_how_long_it_is() {
        let (head, body) = FULL.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())), "{body}");
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }
}
