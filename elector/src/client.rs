//! A small HTTP/1.1 client for the elector's versioned API, with keep-alive.
//!
//! It speaks the wire types of `mpsync_core::wire` and nothing else; the
//! lease logic (when to renew, when a lease is lost) is the caller's, usually
//! an `mpsync_core::LeaseClient`. The demo, the integration tests and the
//! benchmark use it.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mpsync_core::wire::{AcquireRequest, ConflictView, ErrorBody, Kind, LeaseView, ReleaseRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// What can go wrong talking to the elector.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The request could not be sent or its answer not received.
    #[error("elector at {url} unavailable: {reason}")]
    Unavailable {
        /// The URL tried.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The elector answered with a status this call does not expect.
    #[error("elector answered {status} to {url}: {body}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: StatusCode,
        /// The body, as text.
        body: String,
    },
    /// The answer was not the documented JSON.
    #[error("elector answer from {url} is not the expected JSON: {reason}")]
    Decode {
        /// The URL.
        url: String,
        /// What did not parse.
        reason: String,
    },
}

/// An error and its sources, as `outer: inner: root cause`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A raw answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: hyper::HeaderMap,
    /// The body.
    pub body: Bytes,
    url: String,
}

impl Reply {
    /// Decodes the body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ClientError::Decode { url: self.url.clone(), reason: e.to_string() })
    }

    fn unexpected(&self) -> ClientError {
        ClientError::Status {
            url: self.url.clone(),
            status: self.status,
            body: String::from_utf8_lossy(&self.body).into_owned(),
        }
    }
}

/// The answer to an acquire or renew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// 200.
    Granted(LeaseView),
    /// 409.
    Refused(ConflictView),
}

/// The answer to a read or long-poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// 200: held.
    Held(LeaseView),
    /// 404: free or absent, at this version (0: absent).
    Free {
        /// The version to long-poll on.
        version: u64,
    },
}

/// A client of one elector.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Client {
    /// A client of the elector at `base` (`http://127.0.0.1:13131`).
    pub fn new(base: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let http = HyperClient::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build(connector);
        Client { base: base.trim_end_matches('/').to_owned(), http }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `method path` with an optional JSON body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Reply, ClientError> {
        let bytes = match body {
            Some(b) => Some(Bytes::from(serde_json::to_vec(b).map_err(|e| ClientError::Decode {
                url: format!("{}{path}", self.base),
                reason: format!("cannot encode the request: {e}"),
            })?)),
            None => None,
        };
        self.send(method, path, bytes).await
    }

    /// Sends `method path` with an optional body of raw bytes, labelled JSON.
    pub async fn send(&self, method: Method, path: &str, body: Option<Bytes>) -> Result<Reply, ClientError> {
        let url = format!("{}{path}", self.base);
        let unavailable = |reason: String| ClientError::Unavailable { url: url.clone(), reason };
        let mut builder = Request::builder().method(method).uri(&url);
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        let request = builder.body(Full::new(body.unwrap_or_default())).map_err(|e| unavailable(e.to_string()))?;
        let response = self.http.request(request).await.map_err(|e| unavailable(error_chain(&e)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.map_err(|e| unavailable(e.to_string()))?.to_bytes();
        Ok(Reply { status, headers, body, url })
    }

    fn path(kind: Kind, name: &str) -> String {
        format!("/v1/{}/{name}", kind.plural())
    }

    /// `PUT`: acquire (no token) or renew (with token).
    pub async fn claim(&self, kind: Kind, name: &str, request: &AcquireRequest) -> Result<Claimed, ClientError> {
        let reply = self.request(Method::PUT, &Self::path(kind, name), Some(request)).await?;
        match reply.status {
            StatusCode::OK => Ok(Claimed::Granted(reply.json()?)),
            StatusCode::CONFLICT => Ok(Claimed::Refused(reply.json()?)),
            _ => Err(reply.unexpected()),
        }
    }

    /// `DELETE`: release. `Ok(true)` when released, `Ok(false)` when the
    /// elector says the caller does not hold it (409) or it does not exist.
    pub async fn release(&self, kind: Kind, name: &str, holder: &str, token: u64) -> Result<bool, ClientError> {
        let body = ReleaseRequest { holder: holder.to_owned(), token };
        let reply = self.request(Method::DELETE, &Self::path(kind, name), Some(&body)).await?;
        match reply.status {
            StatusCode::NO_CONTENT => Ok(true),
            StatusCode::CONFLICT | StatusCode::NOT_FOUND => Ok(false),
            _ => Err(reply.unexpected()),
        }
    }

    /// `GET`, or with `wait` a long-poll for a version other than the given
    /// one.
    pub async fn read(&self, kind: Kind, name: &str, wait: Option<(u64, Duration)>) -> Result<Read, ClientError> {
        let mut path = Self::path(kind, name);
        if let Some((version, timeout)) = wait {
            path = format!("{path}?wait={version}&timeout_ms={}", timeout.as_millis());
        }
        let reply = self.request(Method::GET, &path, None::<&()>).await?;
        match reply.status {
            StatusCode::OK => Ok(Read::Held(reply.json()?)),
            StatusCode::NOT_FOUND => {
                let body: ErrorBody = reply.json()?;
                Ok(Read::Free { version: body.version.unwrap_or(0) })
            }
            _ => Err(reply.unexpected()),
        }
    }
}
