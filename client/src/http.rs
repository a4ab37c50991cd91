//! A small HTTP/1.1 client of the elector's versioned API, with keep-alive.
//!
//! It sends the [`HttpRequest`]s that `mpsync_core::client` builds and
//! decodes answers with the same module, so it knows nothing of the
//! protocol itself. Every request is bounded by its own timeout. It also
//! keeps the client's one session with the elector ([`Client::session`]).

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mpsync_core::client::watch::{Tracked, gone};
use mpsync_core::client::{self as protocol, AnswerError, Claimed, HttpRequest, Method, Read};
use mpsync_core::watch::WatchAnswer;
use mpsync_core::wire::{AcquireRequest, ConflictView, Kind, LeaseView, ListView, ReleaseRequest, TransferRequest};
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::session::{ElectorSession, OpenError};

/// The timeout of [`Client::claim`] and [`Client::release`], and of
/// [`Client::read`] beyond its wait.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong talking to the elector.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The request could not be sent or its answer not received in time.
    #[error("elector at {url}: {reason}")]
    Unavailable {
        /// The URL tried.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The elector answered what the protocol does not expect.
    #[error("elector at {url} {error}")]
    Answer {
        /// The URL.
        url: String,
        /// What was wrong with the answer.
        error: AnswerError,
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
        serde_json::from_slice(&self.body).map_err(|e| ClientError::Answer {
            url: self.url.clone(),
            error: AnswerError::Decode { status: self.status.as_u16(), reason: e.to_string() },
        })
    }

    /// Decodes the body with one of `mpsync_core::client`'s decoders.
    pub fn decode<T>(&self, decode: fn(u16, &[u8]) -> Result<T, AnswerError>) -> Result<T, ClientError> {
        decode(self.status.as_u16(), &self.body).map_err(|error| ClientError::Answer { url: self.url.clone(), error })
    }
}

/// A client of one elector.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: HyperClient<HttpConnector, Full<Bytes>>,
    /// The session leases are claimed under; `None`: without sessions.
    sessions: Option<Arc<Sessions>>,
}

/// The one session of a [`Client`] (and its clones) with its elector,
/// opened on the first acquisition and again after it ends.
#[derive(Default)]
struct Sessions {
    current: tokio::sync::Mutex<Option<Arc<ElectorSession>>>,
    /// The elector said it opens none for this client: do not ask again.
    refused: std::sync::atomic::AtomicBool,
}

impl Client {
    /// A client of the elector at `base` (`http://127.0.0.1:13131`).
    pub fn new(base: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let http = HyperClient::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build(connector);
        Client { base: base.trim_end_matches('/').to_owned(), http, sessions: Some(Arc::default()) }
    }

    /// Whether leases are claimed under a session with the elector (the
    /// default): then the elector releases them the moment this process
    /// exits, however it exits. Without one, a dead holder's leases run
    /// out at their TTL. An elector that opens no session for this client
    /// (not on loopback, an older elector) is used without one.
    pub fn with_sessions(mut self, on: bool) -> Self {
        self.sessions = on.then(Arc::default);
        self
    }

    /// The session `id` is gone at the elector (a claim under it was
    /// refused with `session_gone`): the next claim opens another.
    pub async fn forget_session(&self, id: &str) {
        if let Some(sessions) = &self.sessions {
            let mut current = sessions.current.lock().await;
            if current.as_ref().is_some_and(|s| s.id() == id) {
                *current = None;
            }
        }
    }

    /// The open session to claim leases under, opening one if there is
    /// none; `None` when sessions are off, the elector opens none for this
    /// client, or it cannot open one now (the claim then goes without; its
    /// lease runs out at its TTL if this process dies).
    /// Opening waits at most `timeout`.
    pub async fn session(&self, timeout: Duration) -> Option<Arc<ElectorSession>> {
        use std::sync::atomic::Ordering;
        let sessions = self.sessions.as_ref()?;
        if sessions.refused.load(Ordering::Relaxed) {
            return None;
        }
        let mut current = sessions.current.lock().await;
        if let Some(open) = current.as_ref().filter(|s| s.is_open()) {
            return Some(open.clone());
        }
        *current = None;
        match ElectorSession::open(&self.base, timeout).await {
            Ok(opened) => {
                tracing::debug!(id = opened.id(), "session with the elector opened");
                *current = Some(opened.clone());
                Some(opened)
            }
            Err(OpenError::Refused(why)) => {
                tracing::warn!("{why}; leases are held without a session and a dead holder's run out at their TTL");
                sessions.refused.store(true, Ordering::Relaxed);
                None
            }
            Err(OpenError::Unavailable(why)) => {
                tracing::warn!(
                    "{why}; this claim goes without a session: if this process dies, its lease runs out at its TTL"
                );
                None
            }
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request of the protocol and reads its whole answer within
    /// its timeout.
    pub async fn call(&self, request: &HttpRequest) -> Result<Reply, ClientError> {
        let url = format!("{}{}", self.base, request.path);
        let exchange = self.exchange(&url, request.method, request.body.clone().map(Bytes::from));
        match tokio::time::timeout(request.timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(ClientError::Unavailable { url, reason: format!("no answer within {:?}", request.timeout) }),
        }
    }

    /// Sends `method path` with an optional JSON body, without a timeout of
    /// its own (tests, benchmarks, tools).
    pub async fn request(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> Result<Reply, ClientError> {
        let url = format!("{}{path}", self.base);
        let bytes = match body {
            Some(b) => Some(Bytes::from(serde_json::to_vec(b).map_err(|e| ClientError::Unavailable {
                url: url.clone(),
                reason: format!("cannot encode the request: {e}"),
            })?)),
            None => None,
        };
        self.exchange_with(&url, method, bytes).await
    }

    /// Sends `method path` with an optional body of raw bytes, labelled
    /// JSON, without a timeout of its own.
    pub async fn send(&self, method: hyper::Method, path: &str, body: Option<Bytes>) -> Result<Reply, ClientError> {
        let url = format!("{}{path}", self.base);
        self.exchange_with(&url, method, body).await
    }

    async fn exchange(&self, url: &str, method: Method, body: Option<Bytes>) -> Result<Reply, ClientError> {
        let method = match method {
            Method::Get => hyper::Method::GET,
            Method::Put => hyper::Method::PUT,
            Method::Delete => hyper::Method::DELETE,
            Method::Post => hyper::Method::POST,
        };
        self.exchange_with(url, method, body).await
    }

    async fn exchange_with(&self, url: &str, method: hyper::Method, body: Option<Bytes>) -> Result<Reply, ClientError> {
        let unavailable = |reason: String| ClientError::Unavailable { url: url.to_owned(), reason };
        let mut builder = Request::builder().method(method).uri(url);
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        let request = builder.body(Full::new(body.unwrap_or_default())).map_err(|e| unavailable(e.to_string()))?;
        let response = self.http.request(request).await.map_err(|e| unavailable(error_chain(&e)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.map_err(|e| unavailable(e.to_string()))?.to_bytes();
        Ok(Reply { status, headers, body, url: url.to_owned() })
    }

    /// `PUT`: acquire (no token) or renew (with token).
    pub async fn claim(&self, kind: Kind, name: &str, request: &AcquireRequest) -> Result<Claimed, ClientError> {
        // A claim in line may park on the elector for its wait first.
        let timeout = DEFAULT_REQUEST_TIMEOUT + request.line_wait();
        let http = protocol::claim_request(kind, name, request, timeout);
        self.call(&http).await?.decode(protocol::decode_claim)
    }

    /// `POST /v1/elections/{name}/transfer`: asks the leader to hand over.
    /// `Ok(Ok(leader))` once asked (its view carries the `transfer`),
    /// `Ok(Err(conflict))` when nobody leads (`not_held`), or `from` does
    /// not or `to` already does (`held`, naming the leader).
    pub async fn transfer(
        &self,
        name: &str,
        request: &TransferRequest,
    ) -> Result<Result<LeaseView, ConflictView>, ClientError> {
        let http = protocol::transfer_request(name, request, DEFAULT_REQUEST_TIMEOUT);
        self.call(&http).await?.decode(protocol::decode_transfer)
    }

    /// `DELETE`: release a lease acquired without a key. `Ok(true)` when
    /// released, `Ok(false)` when the elector says the caller does not hold
    /// it (409) or it does not exist.
    pub async fn release(&self, kind: Kind, name: &str, holder: &str, token: u64) -> Result<bool, ClientError> {
        self.release_with(kind, name, &ReleaseRequest { holder: holder.to_owned(), token, ticket: None, key: None })
            .await
    }

    /// `DELETE` with the whole body: the holder, the token and the key the
    /// lease was acquired with (or, for a lock, the `ticket` of a place in
    /// line to give up). Answers as [`release`](Self::release).
    pub async fn release_with(&self, kind: Kind, name: &str, body: &ReleaseRequest) -> Result<bool, ClientError> {
        let http = match body.ticket {
            Some(ticket) => {
                protocol::leave_request(name, &body.holder, ticket, body.key.as_ref(), DEFAULT_REQUEST_TIMEOUT)
            }
            None => protocol::release_request(
                kind,
                name,
                &body.holder,
                body.token,
                body.key.as_ref(),
                DEFAULT_REQUEST_TIMEOUT,
            ),
        };
        self.call(&http).await?.decode(protocol::decode_release)
    }

    /// One page of the listing of every lock or election: up to `limit`
    /// records from `cursor` (the previous page's `next`) on.
    pub async fn list(&self, kind: Kind, limit: usize, cursor: Option<&str>) -> Result<ListView, ClientError> {
        let http = protocol::list_request(kind, limit, cursor, DEFAULT_REQUEST_TIMEOUT);
        self.call(&http).await?.decode(protocol::decode_list)
    }

    /// Up to `limit` changes of holder the elector saw after seq `after`
    /// (`GET /v1/history`), at once.
    pub async fn history(&self, after: u64, limit: usize) -> Result<mpsync_core::history::Page, ClientError> {
        let http = protocol::http::history_request(after, limit, DEFAULT_REQUEST_TIMEOUT);
        self.call(&http).await?.decode(protocol::http::decode_history)
    }

    /// The last changes of holder of one lock or election.
    pub async fn name_history(&self, kind: Kind, name: &str) -> Result<mpsync_core::history::NameHistory, ClientError> {
        let http = protocol::http::name_history_request(kind, name, DEFAULT_REQUEST_TIMEOUT);
        self.call(&http).await?.decode(protocol::http::decode_history)
    }

    /// `GET`, or with `wait` a long-poll for a version other than the given
    /// one.
    pub async fn read(&self, kind: Kind, name: &str, wait: Option<(u64, Duration)>) -> Result<Read, ClientError> {
        let http = protocol::read_request(kind, name, wait, DEFAULT_REQUEST_TIMEOUT);
        self.call(&http).await?.decode(protocol::decode_read)
    }

    /// `POST /v1/watch`: one long-poll over every record `tracked` follows,
    /// answered as soon as any of them differs from the version it knows,
    /// or empty after `slice` (0: at once, with whatever differs now). Merge
    /// the answer with [`Tracked::merge`] before the next call. A watcher's
    /// set kept by the elector is resumed with only what changed; when this
    /// elector no longer keeps it (410), the whole set goes again at once.
    /// A failed call leaves `tracked` sending its whole set next time; so
    /// must a caller that gives a call up ([`Tracked::failed`]).
    pub async fn watch(&self, tracked: &mut Tracked, slice: Duration) -> Result<WatchAnswer, ClientError> {
        let resumed = tracked.resumes();
        match self.ask(tracked, slice).await {
            Err(ClientError::Answer { error, .. }) if resumed && gone(&error) => self.ask(tracked, slice).await,
            answer => answer,
        }
    }

    async fn ask(&self, tracked: &mut Tracked, slice: Duration) -> Result<WatchAnswer, ClientError> {
        let reply = self.call(&tracked.request(slice)).await.inspect_err(|_| tracked.failed())?;
        let url = reply.url.clone();
        tracked.decode(reply.status.as_u16(), &reply.body).map_err(|error| ClientError::Answer { url, error })
    }
}
