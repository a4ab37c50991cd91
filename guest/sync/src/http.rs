//! A blocking HTTP/1.1 client over `wasi:http/outgoing-handler`, just enough
//! for the elector's JSON API.

use mpsync_core::client::HttpRequest;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme};
use wasip2::io::streams::StreamError;

/// Where the elector is: `MPSYNC_ELECTOR` from the environment, default
/// `http://127.0.0.1:13131`.
pub fn elector_url() -> String {
    wasip2::cli::environment::get_environment()
        .into_iter()
        .find(|(k, _)| k == "MPSYNC_ELECTOR")
        .map(|(_, v)| v)
        .unwrap_or_else(|| "http://127.0.0.1:13131".into())
}

/// An answer: status and body.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// The pause the elector asked for with `retry-after`, if any.
    pub retry_after: Option<std::time::Duration>,
}

/// Sends one request of the protocol to the elector at `base` and reads
/// the whole answer, within the request's timeout for the first byte.
/// Errors name the URL.
pub fn request(request: &HttpRequest, base: &str) -> Result<Reply, String> {
    let (path, body, timeout) = (&request.path, request.body.as_deref(), request.timeout);
    let method = match request.method {
        mpsync_core::client::Method::Get => Method::Get,
        mpsync_core::client::Method::Put => Method::Put,
        mpsync_core::client::Method::Delete => Method::Delete,
        mpsync_core::client::Method::Post => Method::Post,
    };
    let url = format!("{base}{path}");
    let fail = |what: String| format!("elector at {url}: {what}");
    let authority = base.strip_prefix("http://").ok_or_else(|| fail("only http:// URLs are supported".into()))?;
    let mut fields = vec![("content-type".to_owned(), b"application/json".to_vec())];
    if let Some(bytes) = body {
        // A length up front: no chunked encoding for servers and proxies
        // that want a length.
        fields.push(("content-length".to_owned(), bytes.len().to_string().into_bytes()));
    }
    let headers = Fields::from_list(&fields).map_err(|e| fail(format!("{e:?}")))?;
    let req = OutgoingRequest::new(headers);
    req.set_method(&method).map_err(|()| fail("bad method".into()))?;
    req.set_scheme(Some(&Scheme::Http)).map_err(|()| fail("bad scheme".into()))?;
    req.set_authority(Some(authority.trim_end_matches('/'))).map_err(|()| fail("bad authority".into()))?;
    req.set_path_with_query(Some(path)).map_err(|()| fail("bad path".into()))?;
    let outgoing = req.body().map_err(|()| fail("no request body".into()))?;
    if let Some(bytes) = body {
        let stream = outgoing.write().map_err(|()| fail("no body stream".into()))?;
        for chunk in bytes.chunks(4096) {
            stream.blocking_write_and_flush(chunk).map_err(|e| fail(format!("writing: {e:?}")))?;
        }
    }
    let options = RequestOptions::new();
    let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    let _ = options.set_connect_timeout(Some(nanos.min(5_000_000_000)));
    let _ = options.set_first_byte_timeout(Some(nanos));
    let _ = options.set_between_bytes_timeout(Some(nanos));
    let future = outgoing_handler::handle(req, Some(options)).map_err(|e| fail(format!("{e:?}")))?;
    OutgoingBody::finish(outgoing, None).map_err(|e| fail(format!("{e:?}")))?;
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return Err(fail(format!("{e:?}"))),
        _ => return Err(fail("no response".into())),
    };
    let status = response.status();
    let retry_after = response.headers().get("retry-after").first().and_then(|v| mpsync_core::client::retry_after(v));
    let incoming = response.consume().map_err(|()| fail("no response body".into()))?;
    let stream = incoming.stream().map_err(|()| fail("no response stream".into()))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(e) => return Err(fail(format!("reading: {e:?}"))),
        }
    }
    Ok(Reply { status, body, retry_after })
}
