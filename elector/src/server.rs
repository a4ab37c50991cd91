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
//! On the API port, a connection that opens with HTTP/2's preface (prior
//! knowledge, `h2c`) is served with HTTP/2: a proxy's worker then carries
//! its watch, the watch that replaces it and each held request's long-poll
//! on one connection, where HTTP/1.1 needs a connection for each request in
//! flight. Its limits: the preface within `header_read_timeout` (an
//! HTTP/1.1 client then has `header_read_timeout` again for the rest of
//! its first request's headers: at most twice it in all), header lists of at most `max_header_bytes`, at most [`MAX_STREAMS`]
//! requests in flight per connection, and a connection with none in flight
//! for `header_read_timeout` is closed (gracefully: a streamed answer
//! finishes). Each stream's handler runs in a task of its own, which
//! shutdown waits for. The 503 past `max_connections` is HTTP/1.1 bytes:
//! an HTTP/2 client sees the connection fail, and tries again. Sessions
//! need HTTP/1.1 ([`crate::api`]).
//!
//! Every refusal is counted in `/metrics` (`mpsync_refusals_total`) and
//! logged, at most once a second per limit.
//!
//! The probe port (`--health-listen`, [`serve_health`]) runs the same loop
//! with the same limits and a connection cap of its own: it is the one
//! address a pod exposes beyond loopback, and a flood there must neither
//! wear the elector down nor take connections from the lease API.

use std::future::Future;
use std::pin::Pin;
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

/// Requests in flight at once on one HTTP/2 connection (a proxy's worker
/// past it opens another connection), so that one connection holds about
/// what 128 HTTP/1.1 connections would. `--max-long-polls` bounds the
/// long-polls of all connections together.
pub const MAX_STREAMS: u32 = 128;

/// What a connection that speaks HTTP/2 with prior knowledge sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

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
    let open = accept(listener, crate::api::router(service.clone()), &service, limits, true, shutdown).await;
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
    // HTTP/1.1 only: the probe port is the one a pod exposes beyond
    // loopback, and its clients (the kubelet, Prometheus) need no more.
    let open = accept(listener, crate::api::health_router(service.clone()), &service, limits, false, shutdown).await;
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
    http2: bool,
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
        let (app, http, stopping) = (app.clone(), http.clone(), stopping.clone());
        tokio::spawn(async move {
            connection(stream, peer, app, http, http2, limits, stopping).await;
            drop(permit);
        });
    }
    Open { stop }
}

/// Serves one connection: tells its protocol by its first bytes (within
/// the header timeout, or until the elector stops), then serves it with
/// HTTP/1.1 or (where `http2` allows) HTTP/2 until it ends or the elector
/// stops.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    app: TowerToHyperService<axum::Router>,
    http: hyper::server::conn::http1::Builder,
    http2: bool,
    limits: Limits,
    mut stopping: watch::Receiver<bool>,
) {
    let within = limits.header_read_timeout;
    let told = tokio::select! {
        told = protocol(stream, within, http2) => told,
        _ = stopping.wait_for(|stop| *stop) => None,
    };
    // Closed, silent past the timeout, or the elector is stopping.
    let Some((protocol, stream)) = told else { return };
    // Each request learns its peer (only loopback opens a session).
    let labelled = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(Peer(peer));
        hyper::service::Service::call(&app, request)
    });
    match protocol {
        Protocol::Http1 => {
            let connection = http.serve_connection(TokioIo::new(stream), labelled).with_upgrades();
            served(connection, stopping, std::future::pending(), |c| c.graceful_shutdown()).await;
        }
        Protocol::Http2 => {
            let in_flight = InFlight::default();
            let (counted, held) = (in_flight.clone(), stopping.clone());
            // Each stream's handler runs in a task of its own: it holds a
            // receiver of `stopping`, so that shutdown waits for it too.
            let labelled = hyper::service::service_fn(move |request| {
                let guards = (counted.start(), held.clone());
                let answer = hyper::service::Service::call(&labelled, request);
                async move {
                    let answer = answer.await;
                    drop(guards);
                    answer
                }
            });
            let mut h2 = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
            h2.timer(TokioTimer::new())
                .max_concurrent_streams(MAX_STREAMS)
                .max_header_list_size(u32::try_from(limits.max_header_bytes.max(8192)).unwrap_or(u32::MAX))
                // A peer that stops answering pings is gone.
                .keep_alive_interval(Some(within))
                .keep_alive_timeout(within);
            let connection = h2.serve_connection(TokioIo::new(stream), labelled);
            served(connection, stopping, in_flight.idle_for(within), |c| c.graceful_shutdown()).await;
        }
    }
}

/// How a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Tells HTTP/2 with prior knowledge (its preface) from HTTP/1.1 by the
/// first bytes (every connection is HTTP/1.1 unless `http2`); the stream
/// comes back with those bytes, to be read again. `None` when the peer
/// closes, or has not told within `within`.
async fn protocol(mut stream: tokio::net::TcpStream, within: Duration, http2: bool) -> Option<(Protocol, Rewind)> {
    use tokio::io::AsyncReadExt;
    if !http2 {
        return Some((Protocol::Http1, Rewind::new(Vec::new(), stream)));
    }
    let mut first = Vec::with_capacity(H2_PREFACE.len());
    let decide = async {
        let mut buf = [0u8; H2_PREFACE.len()];
        loop {
            // At most what the preface still lacks: nothing past it is read.
            let n = stream.read(&mut buf[..H2_PREFACE.len() - first.len()]).await.ok()?;
            if n == 0 {
                return None;
            }
            first.extend_from_slice(&buf[..n]);
            if !H2_PREFACE.starts_with(&first) {
                return Some(Protocol::Http1);
            }
            if first.len() == H2_PREFACE.len() {
                return Some(Protocol::Http2);
            }
        }
    };
    let protocol = tokio::time::timeout(within, decide).await.ok().flatten()?;
    Some((protocol, Rewind::new(first, stream)))
}

/// A connection whose first bytes, read to tell its protocol, are read
/// again first.
struct Rewind {
    first: Vec<u8>,
    /// How much of `first` has been read again.
    at: usize,
    stream: tokio::net::TcpStream,
}

impl Rewind {
    fn new(first: Vec<u8>, stream: tokio::net::TcpStream) -> Rewind {
        Rewind { first, at: 0, stream }
    }
}

impl tokio::io::AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.at < this.first.len() {
            let n = (this.first.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.first[this.at..this.at + n]);
            this.at += n;
            return std::task::Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Serves `connection` to its end, or until the elector stops or `idle`
/// resolves: then lets it finish the requests in flight.
async fn served<C: Future>(
    connection: C,
    mut stopping: watch::Receiver<bool>,
    idle: impl Future<Output = ()>,
    graceful: impl FnOnce(Pin<&mut C>),
) {
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = stopping.wait_for(|stop| *stop) => {}
        () = idle => {}
    }
    graceful(connection.as_mut());
    let _ = connection.await;
}

/// The requests in flight on one HTTP/2 connection, to close it once it
/// has had none for a while (as an idle HTTP/1.1 keep-alive connection is).
#[derive(Clone, Default)]
struct InFlight(Arc<InFlightState>);

#[derive(Default)]
struct InFlightState {
    count: std::sync::atomic::AtomicUsize,
    changed: tokio::sync::Notify,
}

/// One request in flight, until dropped.
struct Started(Arc<InFlightState>);

impl Drop for Started {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

impl InFlight {
    fn start(&self) -> Started {
        self.0.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.changed.notify_waiters();
        Started(self.0.clone())
    }

    /// Resolves once no request has been in flight for `quiet`.
    async fn idle_for(self, quiet: Duration) {
        loop {
            let changed = self.0.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.0.count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                if tokio::time::timeout(quiet, changed).await.is_err() {
                    return;
                }
            } else {
                changed.await;
            }
        }
    }
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
