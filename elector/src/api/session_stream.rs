//! `POST /v1/sessions` for clients that cannot upgrade a connection: a
//! component over `wasi:http`, whose runtimes forbid the `Connection` and
//! `Upgrade` headers. The session is one request whose body the holder
//! never finishes (`Transfer-Encoding: chunked`), answered `200` at once
//! with the session's id in the `mpsync-session` header and a body the
//! elector never finishes either (a newline at once and every minute, so
//! that no runtime times it out). It lasts for as long as that exchange.
//!
//! The holder's end closed is the same evidence as for an upgraded
//! session: its request body ends (it finished the session itself), or the
//! connection closes in the middle of it (its process exited: the kernel
//! closed the socket). Bytes it sends are read and ignored. At shutdown the
//! elector ends its answer's body, which releases nothing.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use futures::StreamExt;
use mpsync_core::wire::SESSION_HEADER;

use crate::service::{Ended, Service};

/// How often the elector writes a newline into a streaming session's
/// answer: runtimes time out a response body that stays silent (between
/// bytes), and a session must not end for that. The bytes say nothing
/// about the holder, and the holder's silence says nothing either.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(60);

/// The request streams a body of unknown length: a streaming session.
pub(super) fn asks_for_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| coding.trim().eq_ignore_ascii_case("chunked"))
}

/// Opens a streaming session for `request` (from loopback, checked).
pub(super) fn open(service: Arc<Service>, request: Request) -> Response {
    let (id, id_header) = match super::session::new_session(&service) {
        Ok(opened) => opened,
        Err(refused) => return *refused,
    };
    // The answer's body: a newline at once and every `HEARTBEAT`, until
    // `end` is dropped or sent on.
    let (end, ended) = tokio::sync::oneshot::channel::<()>();
    let body = futures::stream::unfold(true, |first| async move {
        if !first {
            tokio::time::sleep(HEARTBEAT).await;
        }
        Some((Ok::<_, std::io::Error>(b"\n".to_vec()), false))
    })
    .take_until(ended);
    tokio::spawn(hold(service, id, request.into_body(), end));
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(SESSION_HEADER, id_header);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Keeps session `id` open for as long as the holder's request body:
/// reads (and ignores) it until it ends, then ends the session.
async fn hold(service: Arc<Service>, id: String, body: Body, end: tokio::sync::oneshot::Sender<()>) {
    let stopped = service.stopped();
    tokio::pin!(stopped);
    let mut body = body.into_data_stream();
    let how = loop {
        tokio::select! {
            biased;
            () = &mut stopped => break service.ended_at_shutdown(),
            frame = body.next() => match frame {
                Some(Ok(_)) => {}
                // The holder finished its body: it closed the session.
                None => break Ended::ByHolder,
                Some(Err(e)) if body_closed_by_peer(&e) => break Ended::ByHolder,
                // Anything else is no evidence about the holder.
                Some(Err(_)) => break Ended::ByElector,
            },
        }
    };
    drop(end);
    let released = service.end_session(&id, how).await;
    if released > 0 {
        tracing::info!(released, "the holder's end of a streaming session closed: its leases were released");
    }
}

/// The connection closed in the middle of the body (hyper's "incomplete
/// message"), or was reset.
fn body_closed_by_peer(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = source {
        if let Some(hyper) = error.downcast_ref::<hyper::Error>()
            && hyper.is_incomplete_message()
        {
            return true;
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && super::session::closed_by_peer(io.kind())
        {
            return true;
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_chunked_body_asks_for_a_streaming_session() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert!(asks_for_stream(&headers(&[("transfer-encoding", "chunked")])));
        assert!(asks_for_stream(&headers(&[("transfer-encoding", "gzip, Chunked")])));
        assert!(!asks_for_stream(&headers(&[("content-length", "0")])));
        assert!(!asks_for_stream(&headers(&[])));
    }
}
