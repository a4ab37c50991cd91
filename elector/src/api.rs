//! The HTTP API: routes, request parsing and responses.
//!
//! Two surfaces on one listener (see `elector/openapi.yaml`):
//! - compatible: `GET`/`PUT /locks/{name}`, as the original metaparticle
//!   clients drive it, holding locks as this elector's identity, with no
//!   holder key;
//! - versioned: `/v1/locks/{name}` and `/v1/elections/{name}` with
//!   `PUT` (acquire/renew, or wait in a lock's line with `"queue": true`),
//!   `DELETE` (release, or leave the line) and `GET` (read, long-poll),
//!   and `GET /v1/locks` and `/v1/elections`: every record, paginated. A
//!   `PUT` or `DELETE` may carry the holder's `key`; no answer and no log
//!   line ever holds it (bodies are never logged).
//!
//! And `POST /v1/sessions` (`api/session.rs`): a connection upgraded into
//! a session, whose close by the holder releases the leases claimed with
//! its id. Plus `/healthz`, `/readyz` and `/metrics`, also alone on the
//! probe port ([`health_router`]).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use mpsync_core::watch::WatchRequest;
use mpsync_core::wire::{
    AcquireRequest, CompatLock, ConflictView, DEFAULT_LIST_LIMIT, ErrorCode, Kind, LeaseView, MAX_CURSOR_LEN,
    MAX_LIST_LIMIT, ReleaseRequest, valid_cursor,
};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::service::{ClaimResult, QueueResult, ReleaseResult, Service, View};
use crate::store::Key;

mod history;
mod session;
mod session_stream;
mod transfer;

/// The peer of the connection a request came on, set by the server.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

/// The largest request body accepted (bytes).
pub const MAX_BODY: usize = 16 * 1024;

/// The largest body of a watch over many names (bytes): 10,000 names of
/// up to 253 characters with their versions fit.
pub const MAX_WATCH_BODY: usize = 4 * 1024 * 1024;

type Shared = State<Arc<Service>>;

/// The elector's routes over `service`.
pub fn router(service: Arc<Service>) -> Router {
    let v1 = |kind: Kind| {
        get(move |s: Shared, p, q| v1_get(kind, s, p, q))
            .put(move |s: Shared, p, b| v1_put(kind, s, p, b))
            .delete(move |s: Shared, p, b| v1_delete(kind, s, p, b))
    };
    Router::new()
        .route("/locks/{name}", get(compat_get).put(compat_put))
        .route("/v1/locks", get(|s: Shared, q| v1_list(Kind::Lock, s, q)))
        .route("/v1/elections", get(|s: Shared, q| v1_list(Kind::Election, s, q)))
        .route("/v1/locks/{name}", v1(Kind::Lock))
        .route("/v1/elections/{name}", v1(Kind::Election))
        .route("/v1/elections/{name}/transfer", post(transfer::transfer))
        .route("/v1/history", get(history::changes))
        .route("/v1/locks/{name}/history", get(|s: Shared, p, q| history::of_name(Kind::Lock, s, p, q)))
        .route("/v1/elections/{name}/history", get(|s: Shared, p, q| history::of_name(Kind::Election, s, p, q)))
        .route("/v1/sessions", post(session::open))
        .route("/v1/watch", post(v1_watch))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(crate::status::page))
        .route("/status.js", get(crate::status::script))
        .route("/status.css", get(crate::status::style))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(service.clone(), track))
        .with_state(service)
}

/// Only `/healthz`, `/readyz` and `/metrics`: for `--health-listen`, an
/// address probes and scrapers can reach without reaching the lease API.
pub fn health_router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(service)
}

fn route_label(method: &Method, path: &str, query: Option<&str>) -> &'static str {
    let watching = query.is_some_and(|q| q.split('&').any(|p| p.starts_with("wait=")));
    match path {
        "/v1/locks" => return "lock_list",
        "/v1/elections" => return "election_list",
        "/v1/sessions" => return "session_open",
        "/v1/watch" => return "watch_many",
        "/v1/history" => return "history",
        _ if path.ends_with("/history") && path.matches('/').count() == 4 => return "name_history",
        _ => {}
    }
    let surface = if path.starts_with("/v1/locks/") {
        "lock"
    } else if path.starts_with("/v1/elections/") {
        "election"
    } else if path.starts_with("/locks/") {
        "compat"
    } else {
        return "other";
    };
    match (surface, method.as_str(), watching) {
        ("lock", "GET", true) => "lock_watch",
        ("lock", "GET", false) => "lock_get",
        ("lock", "PUT", _) => "lock_put",
        ("lock", "DELETE", _) => "lock_delete",
        ("election", "GET", true) => "election_watch",
        ("election", "GET", false) => "election_get",
        ("election", "PUT", _) => "election_put",
        ("election", "DELETE", _) => "election_delete",
        ("election", "POST", _) if path.ends_with("/transfer") => "election_transfer",
        ("compat", "GET", _) => "compat_get",
        ("compat", "PUT", _) => "compat_put",
        _ => "other",
    }
}

async fn track(State(service): Shared, request: Request, next: Next) -> Response {
    let route = route_label(request.method(), request.uri().path(), request.uri().query());
    let start = Instant::now();
    let response = next.run(request).await;
    service.metrics().observe_request(route, response.status().as_u16(), start.elapsed());
    response
}

/// The record a request names, checked against the name rules and the
/// store's own limits before any call to the store.
fn key(s: &Service, kind: Kind, path: Result<Path<String>, PathRejection>) -> Result<Key, ApiError> {
    let Path(name) = path.map_err(|e| ApiError::bad(ErrorCode::InvalidName, "name", e.body_text()))?;
    let what = kind.plural().trim_end_matches('s');
    mpsync_core::validate_name(&name)
        .map_err(|e| ApiError::bad(ErrorCode::InvalidName, "name", format!("invalid {what} name {name:?}: {e}")))?;
    let key = Key { kind, name };
    s.check_name(&key)?;
    Ok(key)
}

async fn read_json<T: DeserializeOwned>(body: Body, example: &str) -> Result<T, ApiError> {
    read_json_within(body, MAX_BODY, example).await
}

async fn read_json_within<T: DeserializeOwned>(body: Body, limit: usize, example: &str) -> Result<T, ApiError> {
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::BodyTooLarge,
                format!("request body is larger than {limit} bytes"),
            ));
        }
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::MalformedBody,
                format!("could not read the body: {e}"),
            ));
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedBody,
            format!("the body is empty; expected JSON such as {example}"),
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = format!("the body is not valid: {inner}; expected JSON such as {example}");
        // serde names a missing or unknown field in its message, not in the path.
        // A syntax error has no path ("?"); the root has ".".
        let field = if path == "." || path == "?" {
            let msg = inner.to_string();
            msg.split('`').nth(1).map(str::to_owned).filter(|_| msg.contains(" field `"))
        } else {
            Some(path)
        };
        match field {
            Some(field) => ApiError::bad(ErrorCode::MalformedBody, field, message),
            None => ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::MalformedBody, message),
        }
    })
}

/// `?wait=VERSION&timeout_ms=N` (see [`mpsync_core::wire::parse_wait`]).
fn parse_wait(query: Option<&str>) -> Result<Option<(u64, Duration)>, ApiError> {
    mpsync_core::wire::parse_wait(query)
        .map(|wait| wait.map(|w| (w.version, Duration::from_millis(w.timeout_ms))))
        .map_err(|e| ApiError::bad(ErrorCode::InvalidQuery, e.param, e.message))
}

fn view_response(key: &Key, view: View) -> Response {
    let what = key.kind.plural().trim_end_matches('s');
    match view {
        View::Held(lease) => Json(lease).into_response(),
        View::Free { version } => ApiError::free(format!("{what} {:?} is free", key.name), version).into_response(),
        View::Absent { version } => ApiError::free(format!("no {what} named {:?}", key.name), version).into_response(),
    }
}

fn conflict(view: ConflictView) -> Response {
    (StatusCode::CONFLICT, Json(view)).into_response()
}

/// `?limit=N&cursor=C` of a listing: the page size (1 to
/// [`MAX_LIST_LIMIT`], default [`DEFAULT_LIST_LIMIT`]) and where to go on
/// from (the `next` of the previous page).
fn parse_list_query(query: Option<&str>) -> Result<(usize, Option<String>), ApiError> {
    let mut limit = DEFAULT_LIST_LIMIT;
    let mut cursor = None;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| ApiError::bad(ErrorCode::InvalidQuery, "query", format!("the query string is malformed: {e}")))?;
    for (param, value) in pairs {
        match param.as_str() {
            "limit" => {
                limit = value.parse::<usize>().ok().filter(|l| (1..=MAX_LIST_LIMIT).contains(l)).ok_or_else(|| {
                    ApiError::bad(
                        ErrorCode::InvalidQuery,
                        "limit",
                        format!("limit is {value:?}; it must be a whole number from 1 to {MAX_LIST_LIMIT}"),
                    )
                })?;
            }
            "cursor" if !valid_cursor(&value) => {
                return Err(ApiError::bad(
                    ErrorCode::InvalidQuery,
                    "cursor",
                    format!(
                        "cursor must be the `next` of a previous page: 1 to {MAX_CURSOR_LEN} of A-Z a-z 0-9 . _ ~ : + \
                         / = -"
                    ),
                ));
            }
            "cursor" => cursor = Some(value),
            other => {
                return Err(ApiError::bad(
                    ErrorCode::InvalidQuery,
                    other,
                    format!("unknown query parameter {other:?}; a listing takes `limit` and `cursor`"),
                ));
            }
        }
    }
    Ok((limit, cursor))
}

async fn v1_list(kind: Kind, State(s): Shared, RawQuery(q): RawQuery) -> Response {
    let result = async {
        let (limit, cursor) = parse_list_query(q.as_deref())?;
        Ok::<_, ApiError>(Json(s.list(kind, cursor.as_deref(), limit).await?).into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn v1_get(
    kind: Kind,
    State(s): Shared,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Response {
    let result = async {
        let key = key(&s, kind, path)?;
        let view = match parse_wait(q.as_deref())? {
            Some((version, timeout)) => s.wait(&key, version, timeout).await?,
            None => s.read(&key).await?,
        };
        Ok::<_, ApiError>(view_response(&key, view))
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /v1/watch`: answers once any record named differs from the
/// version sent (see [`mpsync_core::watch`]).
async fn v1_watch(State(s): Shared, body: Body) -> Response {
    let result = async {
        let example = r#"{"elections":[{"name":"orders-1","version":0},{"name":"orders-2","version":14,"token":3}]}"#;
        let request: WatchRequest = read_json_within(body, MAX_WATCH_BODY, example).await?;
        Ok::<_, ApiError>(Json(s.watch_many(&request).await?).into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn v1_put(kind: Kind, State(s): Shared, path: Result<Path<String>, PathRejection>, body: Body) -> Response {
    let result = async {
        let key = key(&s, kind, path)?;
        let example = match kind {
            Kind::Lock => r#"{"holder":"worker-1","ttl_ms":10000}"#,
            Kind::Election => r#"{"holder":"replica-1","ttl_ms":10000,"address":"10.0.0.7:8080"}"#,
        };
        let request: AcquireRequest = read_json(body, example).await?;
        request.validate(kind).map_err(|e| ApiError::bad(ErrorCode::InvalidField, e.field, e.message))?;
        if request.queue {
            return Ok(match s.queue(&key, &request).await? {
                QueueResult::Granted(lease) => Json(lease).into_response(),
                QueueResult::Queued(place) => (StatusCode::ACCEPTED, Json(place)).into_response(),
                QueueResult::Refused(view) => conflict(view),
            });
        }
        Ok::<_, ApiError>(match s.claim(&key, &request).await? {
            ClaimResult::Granted(lease) => Json(lease).into_response(),
            ClaimResult::Refused(view) => conflict(view),
        })
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn v1_delete(kind: Kind, State(s): Shared, path: Result<Path<String>, PathRejection>, body: Body) -> Response {
    let result = async {
        let key = key(&s, kind, path)?;
        let request: ReleaseRequest = read_json(body, r#"{"holder":"worker-1","token":42}"#).await?;
        request.validate().map_err(|e| ApiError::bad(ErrorCode::InvalidField, e.field, e.message))?;
        if request.ticket.is_some() && kind == Kind::Election {
            return Err(ApiError::bad(ErrorCode::InvalidField, "ticket", "ticket is only accepted for locks"));
        }
        Ok::<_, ApiError>(match s.leave(&key, &request).await? {
            ReleaseResult::Released => StatusCode::NO_CONTENT.into_response(),
            ReleaseResult::NotFound => view_response(&key, s.absent_view()),
            ReleaseResult::Refused(view) => conflict(view),
        })
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

fn compat_lock(lease: LeaseView) -> CompatLock {
    let expires_in = Duration::from_millis(lease.expires_in_ms);
    CompatLock {
        expiry: humantime::format_rfc3339_millis(SystemTime::now() + expires_in).to_string(),
        name: lease.name,
        owner: lease.holder,
        expires_in_ms: lease.expires_in_ms,
        token: lease.token,
    }
}

async fn compat_get(State(s): Shared, path: Result<Path<String>, PathRejection>) -> Response {
    let result = async {
        let key = key(&s, Kind::Lock, path)?;
        Ok::<_, ApiError>(match s.read(&key).await? {
            View::Held(lease) => Json(compat_lock(lease)).into_response(),
            other => view_response(&key, other),
        })
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn compat_put(State(s): Shared, path: Result<Path<String>, PathRejection>) -> Response {
    let result = async {
        let key = key(&s, Kind::Lock, path)?;
        Ok::<_, ApiError>(match s.compat_put(&key).await? {
            ClaimResult::Granted(lease) => Json(compat_lock(lease)).into_response(),
            ClaimResult::Refused(view) => conflict(view),
        })
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn readyz(State(s): Shared) -> Response {
    match s.ready().await {
        Ok(()) => Json(serde_json::json!({"status": "ready", "store": s.store_name()})).into_response(),
        Err(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            format!("{} store: {e}", s.store_name()),
        )
        .into_response(),
    }
}

async fn metrics(State(s): Shared) -> Response {
    s.report_capacity();
    let text = s.metrics().render(s.held_count(), s.store_name(), &s.store_calls());
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no route for {method} {}; the API is described in elector/openapi.yaml", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_its_own_latency_label() {
        let cases = [
            (Method::GET, "/v1/locks/a", None, "lock_get"),
            (Method::GET, "/v1/locks/a", Some("wait=3&timeout_ms=10"), "lock_watch"),
            (Method::GET, "/v1/locks/a", Some("timeout_ms=10"), "lock_get"),
            (Method::PUT, "/v1/elections/a", None, "election_put"),
            (Method::GET, "/v1/elections/a", Some("timeout_ms=5&wait=0"), "election_watch"),
            (Method::POST, "/v1/watch", None, "watch_many"),
            (Method::DELETE, "/v1/elections/a", None, "election_delete"),
            (Method::POST, "/v1/elections/a/transfer", None, "election_transfer"),
            (Method::PUT, "/locks/a", None, "compat_put"),
            (Method::POST, "/v1/locks/a", None, "other"),
            (Method::GET, "/metrics", None, "other"),
            (Method::POST, "/v1/sessions", None, "session_open"),
            (Method::GET, "/v1/history", Some("after=3"), "history"),
            (Method::GET, "/v1/locks/db/history", None, "name_history"),
            (Method::GET, "/v1/locks/history", None, "lock_get"),
        ];
        for (method, path, query, label) in cases {
            assert_eq!(route_label(&method, path, query), label, "{method} {path}?{query:?}");
        }
    }

    async fn read(body: &str) -> Result<AcquireRequest, ApiError> {
        read_json::<AcquireRequest>(Body::from(body.to_owned()), "EXAMPLE").await
    }

    #[tokio::test]
    async fn bodies_are_read_with_the_offending_field_named() {
        assert_eq!(read(r#"{"holder":"a","ttl_ms":1000}"#).await.unwrap().holder, "a");
        let empty = read("  \n").await.unwrap_err();
        assert_eq!((empty.status(), empty.body().error), (StatusCode::BAD_REQUEST, ErrorCode::MalformedBody));
        assert!(empty.body().message.contains("EXAMPLE"), "{}", empty.body().message);
        let missing = read(r#"{"holder":"a"}"#).await.unwrap_err();
        assert_eq!(missing.body().field.as_deref(), Some("ttl_ms"));
        let wrong_type = read(r#"{"holder":"a","ttl_ms":"soon"}"#).await.unwrap_err();
        assert_eq!(wrong_type.body().field.as_deref(), Some("ttl_ms"));
        let syntax = read("not json").await.unwrap_err();
        assert_eq!((syntax.status(), syntax.body().field.as_deref()), (StatusCode::BAD_REQUEST, None));
        let huge = read(&format!(r#"{{"holder":"{}","ttl_ms":1}}"#, "a".repeat(MAX_BODY))).await.unwrap_err();
        assert_eq!((huge.status(), huge.body().error), (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::BodyTooLarge));
    }

    #[test]
    fn a_wait_query_becomes_a_version_and_a_timeout_or_names_the_bad_parameter() {
        assert_eq!(parse_wait(None).unwrap(), None);
        assert_eq!(parse_wait(Some("wait=7&timeout_ms=250")).unwrap(), Some((7, Duration::from_millis(250))));
        let bad = parse_wait(Some("wait=seven")).unwrap_err();
        assert_eq!((bad.body().error, bad.body().field.as_deref()), (ErrorCode::InvalidQuery, Some("wait")));
    }
}
