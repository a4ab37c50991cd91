//! `POST /v1/sessions`: a session is a connection upgraded away from HTTP
//! (`Connection: upgrade`, `Upgrade: mpsync-session`, answered `101` with
//! the session's id in the `mpsync-session` header). Leases claimed with
//! `"session": ID` are released at once when the holder's end of that
//! connection closes (see `service/sessions.rs`).
//!
//! Why an upgraded connection: an HTTP/1.1 keep-alive connection may be
//! closed by either side when idle, so its close says nothing about the
//! holder; an upgraded one has no idle timeout and closes only when one of
//! its two ends does. Only a loopback peer may open one: the evidence that a
//! holder is gone is its kernel closing the socket, which is only sure when
//! that kernel is this machine's.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use mpsync_core::wire::{ErrorCode, SESSION_HEADER, SESSION_PROTOCOL};
use tokio::io::AsyncReadExt;

use super::Peer;
use crate::error::ApiError;
use crate::service::{Ended, Service};

/// `POST /v1/sessions`.
pub(super) async fn open(State(service): State<Arc<Service>>, mut request: Request) -> Response {
    let peer = request.extensions().get::<Peer>().map(|p| p.0);
    if !on_loopback(peer) {
        let from = peer.map_or_else(|| "an unknown address".to_owned(), |p| p.ip().to_string());
        return ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            format!(
                "sessions are opened from loopback only (127.0.0.0/8, ::1), not from {from}: a session's close is \
                 evidence only when this machine's kernel closed the holder's socket"
            ),
        )
        .into_response();
    }
    if request.version() >= axum::http::Version::HTTP_2 {
        // An HTTP/2 stream shares its connection: its end is not the
        // kernel closing the holder's own socket.
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::UpgradeRequired,
            "sessions need HTTP/1.1: a session is a connection of its own (upgraded, or one request that never \
             ends), and this request came over HTTP/2",
        )
        .into_response();
    }
    if !asks_for_upgrade(request.headers()) && super::session_stream::asks_for_stream(request.headers()) {
        return super::session_stream::open(service, request);
    }
    if !asks_for_upgrade(request.headers()) {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::UpgradeRequired,
            format!(
                "a session is a connection upgraded away from HTTP: send `Connection: upgrade` and `Upgrade: \
                 {SESSION_PROTOCOL}`, and keep the connection open for as long as the session lasts (or, where \
                 upgrading is not possible, a request body of unknown length, `Transfer-Encoding: chunked`, \
                 never finished)"
            ),
        )
        .into_response();
    }
    let Some(upgrade) = request.extensions_mut().remove::<OnUpgrade>() else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::UpgradeRequired,
            "this connection cannot be upgraded (HTTP/1.1 only)",
        )
        .into_response();
    };
    let (id, id_header) = match new_session(&service) {
        Ok(opened) => opened,
        Err(refused) => return *refused,
    };
    tokio::spawn(hold(service, id, upgrade));
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(SESSION_PROTOCOL));
    headers.insert(SESSION_HEADER, id_header);
    response
}

/// Opens a session: its id, and the id as the `mpsync-session` header's
/// value; or the answer that refuses it (past `--max-sessions`).
pub(super) fn new_session(service: &Arc<Service>) -> Result<(String, HeaderValue), Box<Response>> {
    let id = service.open_session().map_err(|e| Box::new(ApiError::from(e).into_response()))?;
    match HeaderValue::from_str(&id) {
        Ok(header) => Ok((id, header)),
        Err(_) => {
            // Hex is always a valid header value.
            let service = service.clone();
            tokio::spawn(async move { service.end_session(&id, Ended::ByElector).await });
            Err(Box::new(StatusCode::INTERNAL_SERVER_ERROR.into_response()))
        }
    }
}

/// A read error that means the holder's end closed (its kernel reset or
/// ended the connection), the one evidence a session's end counts as the
/// holder's, whatever the session's shape.
pub(super) fn closed_by_peer(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(kind, ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof)
}

/// The peer is on this machine's loopback (an IPv4 address mapped into
/// IPv6 counts as itself).
fn on_loopback(peer: Option<std::net::SocketAddr>) -> bool {
    peer.is_some_and(|p| p.ip().to_canonical().is_loopback())
}

/// `Connection` lists `upgrade` and `Upgrade` names the session protocol.
fn asks_for_upgrade(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let upgrade = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|protocol| protocol.trim().eq_ignore_ascii_case(SESSION_PROTOCOL));
    connection_upgrade && upgrade
}

/// Keeps session `id` open for as long as its connection: reads (and
/// ignores) what the holder sends until its end closes, then ends the
/// session. Silence is no evidence: no timeout here. At shutdown the
/// elector ends the session itself, which releases nothing.
async fn hold(service: Arc<Service>, id: String, upgrade: OnUpgrade) {
    let stopped = service.stopped();
    tokio::pin!(stopped);
    let upgraded = tokio::select! {
        biased;
        () = &mut stopped => None,
        upgraded = upgrade => upgraded.ok(),
    };
    // No connection (the 101 never reached the holder, so it named the
    // session in no claim): nothing to release either way.
    let how = match upgraded {
        None => Ended::ByElector,
        Some(upgraded) => {
            let mut connection = TokioIo::new(upgraded);
            let mut ignored = [0u8; 256];
            loop {
                tokio::select! {
                    biased;
                    // (Released as the holder's close only under the chaos
                    // checker's unsafe control flag.)
                    () = &mut stopped => break service.ended_at_shutdown(),
                    read = connection.read(&mut ignored) => match read {
                        // The holder's end closed (its process exited, or
                        // it closed the session): the kernel says so.
                        Ok(0) => break Ended::ByHolder,
                        Err(e) if closed_by_peer(e.kind()) => break Ended::ByHolder,
                        // Anything else is no evidence about the holder.
                        Err(_) => break Ended::ByElector,
                        Ok(_) => {}
                    },
                }
            }
        }
    };
    let released = service.end_session(&id, how).await;
    if released > 0 {
        tracing::info!(released, "the holder's end of a session closed: its leases were released");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_peers_open_sessions() {
        for (peer, ok) in
            [("127.0.0.1:1", true), ("127.9.9.9:1", true), ("[::1]:1", true), ("[::ffff:127.0.0.1]:1", true)]
                .into_iter()
                .chain([("10.0.0.7:1", false), ("[::ffff:10.0.0.7]:1", false), ("[fd00::7]:1", false)])
        {
            assert_eq!(on_loopback(Some(peer.parse().unwrap())), ok, "{peer}");
        }
        assert!(!on_loopback(None), "a request the server did not label");
    }

    #[test]
    fn only_connection_upgrade_to_the_session_protocol_asks_for_one() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert!(asks_for_upgrade(&headers(&[("connection", "Upgrade"), ("upgrade", "mpsync-session")])));
        assert!(asks_for_upgrade(&headers(&[("connection", "keep-alive, upgrade"), ("upgrade", "MPSYNC-SESSION")])));
        assert!(!asks_for_upgrade(&headers(&[("upgrade", "mpsync-session")])));
        assert!(!asks_for_upgrade(&headers(&[("connection", "upgrade"), ("upgrade", "websocket")])));
        assert!(!asks_for_upgrade(&headers(&[])));
    }
}
