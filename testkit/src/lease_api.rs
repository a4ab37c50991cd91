//! A Kubernetes API server for `coordination.k8s.io/v1` Leases, served
//! over real HTTP on a loopback port, for tests where no cluster can run.
//!
//! It follows the documented behaviour of the real one for what the
//! elector (and kube-rs) use, and nothing more (no `PATCH`: the elector
//! never patches):
//! - `POST .../namespaces/{ns}/leases`: 201 with the stored object; 409
//!   `AlreadyExists`; 422 `Invalid` for a bad name or spec; 400 `BadRequest`
//!   for a body that is not a Lease or names another namespace.
//! - `GET .../leases/{name}`: 200 or 404 `NotFound`.
//! - `PUT .../leases/{name}`: 200; 404 `NotFound`; 409 `Conflict` when
//!   `metadata.resourceVersion` is set and stale (unset: unconditional);
//!   400 when the body's name differs from the URL's.
//! - `DELETE .../leases/{name}`: 200 with the object, or 404.
//! - `GET .../leases`: a `LeaseList` with `metadata.resourceVersion`;
//!   `labelSelector` (`k=v`, `k==v`, `k!=v`, `k`, comma = and),
//!   `fieldSelector` (`metadata.name=`), `limit` (with `continue`: pages in
//!   name order; a continue token that is not one it gave out gets 400
//!   `BadRequest`; unlike the real server, a later page shows the objects
//!   as they are then, not as of the first page).
//! - `GET .../leases?watch=true&resourceVersion=N`: a stream of
//!   `{"type": ADDED|MODIFIED|DELETED|ERROR, "object": ...}` lines for
//!   changes after N, closed after `timeoutSeconds`. Without N (or `0`), it
//!   starts with an `ADDED` for each existing Lease. A resourceVersion older
//!   than the retained history gets an `ERROR` event with a 410 `Expired`
//!   Status, as the real server does after compaction.
//! - `spec.preferredHolder` and `spec.strategy` are kept as a server with
//!   the `CoordinatedLeaderElection` gate on keeps them, and checked as it
//!   checks them (422: a preferred holder without a strategy; a strategy
//!   that is neither `OldestEmulationVersion` nor prefixed, `example.com/x`).
//! - Errors are `Status` objects (`kind: Status`, `status: Failure`,
//!   `reason`, `code`, `details`).
//!
//! The same server serves `discovery.k8s.io/v1` EndpointSlices
//! (`crate::endpoint_slice_api`) and `events.k8s.io/v1` Events
//! (`crate::event_api`), from the same object store.
//!
//! resourceVersions are decimal and grow across all objects, as an
//! etcd-backed server's do. For failure tests it can stop answering
//! ([`LeaseApi::pause`]) and restart ([`LeaseApi::restart`]: every
//! connection, watches included, is cut; the objects are kept, as a real
//! API server keeps them in etcd).

// Handlers return a ready error response as their `Err`, axum's way.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

/// How many changes are kept for watches that resume from a version.
const HISTORY: usize = 1000;
const GROUP: &str = "coordination.k8s.io";
const API_VERSION: &str = "coordination.k8s.io/v1";

#[derive(Clone, Debug)]
struct Event {
    version: u64,
    namespace: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
pub(crate) struct Objects {
    /// The resourceVersion of the last write, of any object.
    pub(crate) version: u64,
    leases: BTreeMap<(String, String), Value>,
    /// EndpointSlices by namespace and name.
    pub(crate) slices: BTreeMap<(String, String), Value>,
    /// Every EndpointSlice as stored by each write, in order.
    pub(crate) slice_writes: Vec<Value>,
    /// Events by namespace and name, and every one in the order created.
    pub(crate) events: BTreeMap<(String, String), Value>,
    pub(crate) event_order: Vec<Value>,
    history: VecDeque<Event>,
    /// The oldest version a watch may resume from.
    compacted: u64,
    pub(crate) uids: u64,
}

pub(crate) struct Inner {
    objects: Mutex<Objects>,
    events: broadcast::Sender<Event>,
    paused: watch::Sender<bool>,
    writes_and_reads: AtomicU64,
    /// How many EndpointSlice writes so far; changes with each.
    pub(crate) slices_written: watch::Sender<u64>,
    /// How Event creates are answered, and how many came.
    pub(crate) events_api: crate::event_api::EventsState,
}

impl Inner {
    pub(crate) fn objects(&self) -> std::sync::MutexGuard<'_, Objects> {
        mpsync_core::lock(&self.objects)
    }

    fn record(&self, objects: &mut Objects, namespace: &str, kind: &'static str, object: Value) {
        let event = Event { version: objects.version, namespace: namespace.to_owned(), kind, object };
        objects.history.push_back(event.clone());
        if objects.history.len() > HISTORY
            && let Some(old) = objects.history.pop_front()
        {
            objects.compacted = old.version;
        }
        let _ = self.events.send(event);
    }
}

/// A running emulator.
pub struct LeaseApi {
    pub(crate) inner: Arc<Inner>,
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for LeaseApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn status(code: StatusCode, reason: &str, message: String, name: Option<&str>) -> Response {
    api_status(GROUP, "leases", code, reason, message, name)
}

/// A `Status` answer about a resource (`group`, plural `resource`).
pub(crate) fn api_status(
    group: &str,
    resource: &str,
    code: StatusCode,
    reason: &str,
    message: String,
    name: Option<&str>,
) -> Response {
    let mut details = json!({"group": group, "kind": resource});
    if let Some(name) = name {
        details["name"] = json!(name);
    }
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "details": details, "code": code.as_u16(),
    });
    (code, Json(body)).into_response()
}

fn not_found(name: &str) -> Response {
    status(StatusCode::NOT_FOUND, "NotFound", format!("leases.{GROUP} \"{name}\" not found"), Some(name))
}

fn invalid(name: &str, field: &str, value: &Value, detail: &str) -> Response {
    status(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("Lease.{GROUP} \"{name}\" is invalid: {field}: Invalid value: {value}: {detail}"),
        Some(name),
    )
}

/// DNS-1123 subdomain, as Kubernetes requires of a Lease name.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn validate(name: &str, lease: &Value) -> Result<(), Response> {
    if !valid_name(name) {
        return Err(invalid(
            name,
            "metadata.name",
            &json!(name),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and \
             must start and end with an alphanumeric character",
        ));
    }
    let spec = &lease["spec"];
    if let Some(d) = spec.get("leaseDurationSeconds").filter(|v| !v.is_null())
        && d.as_i64().is_none_or(|d| d <= 0)
    {
        return Err(invalid(name, "spec.leaseDurationSeconds", d, "must be greater than 0"));
    }
    if let Some(t) = spec.get("leaseTransitions").filter(|v| !v.is_null())
        && t.as_i64().is_none_or(|t| t < 0)
    {
        return Err(invalid(name, "spec.leaseTransitions", t, "must be greater than or equal to 0"));
    }
    // Coordinated leader election (KEP-4355), as a server with the
    // CoordinatedLeaderElection gate on keeps and checks them: a
    // `preferredHolder` only with a `strategy`, and a strategy that is
    // either the one Kubernetes defines or a custom one, prefixed.
    let set = |field: &str| spec.get(field).and_then(Value::as_str).filter(|v| !v.is_empty());
    if let Some(holder) = set("preferredHolder")
        && set("strategy").is_none()
    {
        return Err(forbidden(name, "spec.preferredHolder", holder, "may only be specified if `strategy` is defined"));
    }
    if let Some(strategy) = set("strategy")
        && !valid_strategy(strategy)
    {
        return Err(invalid(
            name,
            "spec.strategy",
            &json!(strategy),
            "must be \"OldestEmulationVersion\" or a custom strategy: a qualified name with a prefix (example.com/my-strategy)",
        ));
    }
    Ok(())
}

/// A Lease strategy the real server accepts: `OldestEmulationVersion`, or a
/// prefixed qualified name (a DNS subdomain, `/`, a name of 1 to 63
/// alphanumerics, `-`, `_` or `.`, starting and ending alphanumeric).
fn valid_strategy(strategy: &str) -> bool {
    match strategy.split_once('/') {
        None => strategy == "OldestEmulationVersion",
        Some((prefix, name)) => {
            let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
            valid_name(prefix)
                && (1..=63).contains(&name.len())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && edge(name.chars().next())
                && edge(name.chars().last())
        }
    }
}

fn forbidden(name: &str, field: &str, value: &str, detail: &str) -> Response {
    status(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("Lease.{GROUP} \"{name}\" is invalid: {field}: Forbidden: {detail} (value {value:?})"),
        Some(name),
    )
}

fn parse_lease(body: &Bytes) -> Result<Value, Response> {
    let lease: Value = serde_json::from_slice(body).map_err(|e| {
        status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("the body of the request was in an unknown format: {e}"),
            None,
        )
    })?;
    let kind_ok = lease.get("kind").is_none_or(|k| k == "Lease");
    let version_ok = lease.get("apiVersion").is_none_or(|v| v == API_VERSION);
    if !lease.is_object() || !kind_ok || !version_ok {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("the object provided is unrecognized (must be of type Lease in {API_VERSION})"),
            None,
        ));
    }
    Ok(lease)
}

pub(crate) fn labels_match(lease: &Value, selector: &str) -> bool {
    let labels = &lease["metadata"]["labels"];
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            labels.get(k.trim()).and_then(Value::as_str) != Some(v.trim())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            labels.get(k.trim()).and_then(Value::as_str) == Some(v.trim())
        } else {
            labels.get(term.trim()).is_some()
        }
    })
}

fn fields_match(lease: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        match term.split_once("==").or_else(|| term.split_once('=')) {
            Some(("metadata.name", v)) => lease["metadata"]["name"] == v,
            Some(("metadata.namespace", v)) => lease["metadata"]["namespace"] == v,
            _ => false,
        }
    })
}

fn selected(lease: &Value, q: &BTreeMap<String, String>) -> bool {
    q.get("labelSelector").is_none_or(|s| labels_match(lease, s))
        && q.get("fieldSelector").is_none_or(|s| fields_match(lease, s))
}

fn with_type(mut lease: Value) -> Value {
    lease["kind"] = json!("Lease");
    lease["apiVersion"] = json!(API_VERSION);
    lease
}

pub(crate) type Shared = State<Arc<Inner>>;
pub(crate) type Q = Query<BTreeMap<String, String>>;

async fn list_or_watch(State(inner): Shared, UrlPath(ns): UrlPath<String>, Query(q): Q) -> Response {
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return watch_leases(inner, ns, q);
    }
    // A continue token names the last object of the previous page, as the
    // real server's does (base64 there; opaque to clients either way); the
    // next page starts after it, in name order. A token that is not one of
    // ours is refused with 400, as the real server refuses it.
    let after = match q.get("continue").filter(|c| !c.is_empty()) {
        None => None,
        Some(token) => match token.strip_prefix("after:") {
            Some(name) => Some(name.to_owned()),
            None => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("continue key is not valid: {token:?}"),
                    None,
                );
            }
        },
    };
    let objects = inner.objects();
    let mut items: Vec<(String, Value)> = objects
        .leases
        .iter()
        .filter(|((n, name), lease)| *n == ns && after.as_ref().is_none_or(|a| name > a) && selected(lease, &q))
        .map(|((_, name), lease)| (name.clone(), lease.clone()))
        .collect();
    let mut metadata = json!({"resourceVersion": objects.version.to_string()});
    if let Some(limit) = q.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0)
        && items.len() > limit
    {
        metadata["continue"] = json!(format!("after:{}", items[limit - 1].0));
        metadata["remainingItemCount"] = json!(items.len() - limit);
        items.truncate(limit);
    }
    let items: Vec<Value> = items.into_iter().map(|(_, lease)| lease).collect();
    Json(json!({"kind": "LeaseList", "apiVersion": API_VERSION, "metadata": metadata, "items": items})).into_response()
}

fn watch_leases(inner: Arc<Inner>, ns: String, q: BTreeMap<String, String>) -> Response {
    let from = q.get("resourceVersion").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let timeout = q.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).unwrap_or(1800);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(256);
    let line = |kind: &str, object: &Value| {
        let mut bytes = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    };
    // Subscribe before reading the history so nothing falls in between.
    let mut live = inner.events.subscribe();
    let mut first: Vec<Bytes> = Vec::new();
    let mut seen = from;
    {
        let objects = inner.objects();
        if from == 0 {
            for ((n, _), lease) in &objects.leases {
                if *n == ns && selected(lease, &q) {
                    first.push(line("ADDED", &with_type(lease.clone())));
                }
            }
            seen = objects.version;
        } else if from < objects.compacted {
            let gone = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {from} ({})", objects.compacted),
                "reason": "Expired", "code": 410,
            });
            first.push(line("ERROR", &gone));
            seen = u64::MAX;
        } else {
            for e in objects.history.iter().filter(|e| e.version > from && e.namespace == ns) {
                if selected(&e.object, &q) {
                    first.push(line(e.kind, &with_type(e.object.clone())));
                }
            }
            seen = seen.max(objects.version);
        }
    }
    tokio::spawn(async move {
        for bytes in first {
            if tx.send(Ok(bytes)).await.is_err() {
                return;
            }
        }
        if seen == u64::MAX {
            return;
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => return,
                event = live.recv() => match event {
                    Ok(e) if e.version > seen && e.namespace == ns => {
                        if selected(&e.object, &q) && tx.send(Ok(line(e.kind, &with_type(e.object)))).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // Fell behind the broadcast: end the watch; the client resumes.
                    Err(_) => return,
                },
            }
        }
    });
    let body = Body::from_stream(tokio_stream(rx));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn tokio_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::convert::Infallible>>,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn create(State(inner): Shared, UrlPath(ns): UrlPath<String>, body: Bytes) -> Response {
    let mut lease = match parse_lease(&body) {
        Ok(lease) => lease,
        Err(response) => return response,
    };
    let Some(name) = lease["metadata"]["name"].as_str().map(str::to_owned) else {
        return invalid("", "metadata.name", &json!(""), "name or generateName is required");
    };
    if let Some(other) = lease["metadata"]["namespace"].as_str().filter(|n| *n != ns) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!(
                "the namespace of the provided object ({other}) does not match the namespace sent on the request ({ns})"
            ),
            None,
        );
    }
    if let Err(response) = validate(&name, &lease) {
        return response;
    }
    let mut objects = inner.objects();
    let key = (ns.clone(), name.clone());
    if objects.leases.contains_key(&key) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("leases.{GROUP} \"{name}\" already exists"),
            Some(&name),
        );
    }
    objects.version += 1;
    objects.uids += 1;
    let meta = &mut lease["metadata"];
    meta["namespace"] = json!(ns);
    meta["resourceVersion"] = json!(objects.version.to_string());
    meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", objects.uids));
    meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    let lease = with_type(lease);
    objects.leases.insert(key, lease.clone());
    inner.record(&mut objects, &ns, "ADDED", lease.clone());
    (StatusCode::CREATED, Json(lease)).into_response()
}

async fn read(State(inner): Shared, UrlPath((ns, name)): UrlPath<(String, String)>) -> Response {
    match inner.objects().leases.get(&(ns, name.clone())) {
        Some(lease) => Json(lease.clone()).into_response(),
        None => not_found(&name),
    }
}

/// Stores `lease` over the existing `name`, checking its resourceVersion.
fn update(inner: &Inner, ns: &str, name: &str, mut lease: Value) -> Response {
    if let Some(other) = lease["metadata"]["name"].as_str().filter(|n| *n != name) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("the name of the object ({other}) does not match the name on the URL ({name})"),
            None,
        );
    }
    if let Err(response) = validate(name, &lease) {
        return response;
    }
    let mut objects = inner.objects();
    let key = (ns.to_owned(), name.to_owned());
    let Some(current) = objects.leases.get(&key).cloned() else { return not_found(name) };
    let expected = lease["metadata"]["resourceVersion"].as_str().filter(|v| !v.is_empty());
    if expected.is_some_and(|v| Some(v) != current["metadata"]["resourceVersion"].as_str()) {
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on leases.{GROUP} \"{name}\": the object has been modified; please apply \
                 your changes to the latest version and try again"
            ),
            Some(name),
        );
    }
    objects.version += 1;
    let meta = &mut lease["metadata"];
    meta["name"] = json!(name);
    meta["namespace"] = json!(ns);
    meta["resourceVersion"] = json!(objects.version.to_string());
    for kept in ["uid", "creationTimestamp"] {
        meta[kept] = current["metadata"][kept].clone();
    }
    let lease = with_type(lease);
    objects.leases.insert(key, lease.clone());
    inner.record(&mut objects, ns, "MODIFIED", lease.clone());
    Json(lease).into_response()
}

async fn replace(State(inner): Shared, UrlPath((ns, name)): UrlPath<(String, String)>, body: Bytes) -> Response {
    match parse_lease(&body) {
        Ok(lease) => update(&inner, &ns, &name, lease),
        Err(response) => response,
    }
}

async fn delete(State(inner): Shared, UrlPath((ns, name)): UrlPath<(String, String)>) -> Response {
    let mut objects = inner.objects();
    let Some(mut lease) = objects.leases.remove(&(ns.clone(), name.clone())) else { return not_found(&name) };
    objects.version += 1;
    lease["metadata"]["resourceVersion"] = json!(objects.version.to_string());
    inner.record(&mut objects, &ns, "DELETED", lease.clone());
    Json(lease).into_response()
}

pub(crate) async fn unknown(method: Method, uri: axum::http::Uri) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("the server could not find the requested resource ({method} {})", uri.path()),
        None,
    )
}

async fn gate(State(inner): Shared, request: Request, next: Next) -> Response {
    let mut paused = inner.paused.subscribe();
    // While paused, requests wait here, as on a server that stopped answering.
    let _ = paused.wait_for(|p| !*p).await;
    // Lease requests, all but listing and watching the collection.
    let path = request.uri().path();
    if path.contains("/leases") && (request.method() != Method::GET || !path.ends_with("/leases")) {
        inner.writes_and_reads.fetch_add(1, Ordering::Relaxed);
    }
    next.run(request).await
}

fn router(inner: Arc<Inner>) -> Router {
    let base = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases";
    Router::new()
        .route(base, get(list_or_watch).post(create))
        .route(&format!("{base}/{{name}}"), get(read).put(replace).delete(delete))
        .merge(crate::endpoint_slice_api::routes())
        .merge(crate::event_api::routes())
        .fallback(unknown)
        .layer(middleware::from_fn_with_state(inner.clone(), gate))
        .with_state(inner)
}

async fn serve(listener: tokio::net::TcpListener, app: Router) {
    // Connections live in this task's JoinSet: aborting the task (a
    // restart) cuts every one of them, watches included.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                connections.spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl LeaseApi {
    /// Serves an empty API on a loopback port picked by the OS.
    pub async fn start() -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            objects: Mutex::default(),
            events: broadcast::channel(4096).0,
            paused: watch::channel(false).0,
            writes_and_reads: AtomicU64::new(0),
            slices_written: watch::channel(0).0,
            events_api: crate::event_api::EventsState::default(),
        });
        let listener = bind("127.0.0.1:0".parse().map_err(std::io::Error::other)?)?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(serve(listener, router(inner.clone())));
        Ok(LeaseApi { inner, addr, server })
    }

    /// Its base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests for one Lease (create, read, replace, patch, delete) so
    /// far: all but listing and watching.
    pub fn lease_requests(&self) -> u64 {
        self.inner.writes_and_reads.load(Ordering::Relaxed)
    }

    /// Every Lease in `namespace`, as stored.
    pub fn leases(&self, namespace: &str) -> Vec<Value> {
        self.inner.objects().leases.iter().filter(|((n, _), _)| n == namespace).map(|(_, l)| l.clone()).collect()
    }

    /// Stops answering: requests wait (connections stay open) until
    /// [`LeaseApi::resume`].
    pub fn pause(&self) {
        self.inner.paused.send_replace(true);
    }

    /// Answers again, starting with the requests that waited.
    pub fn resume(&self) {
        self.inner.paused.send_replace(false);
    }

    /// Cuts every connection and serves again on the same port; objects
    /// and history are kept.
    pub async fn restart(&mut self) -> std::io::Result<()> {
        self.server.abort();
        let _ = (&mut self.server).await;
        let listener = bind(self.addr)?;
        self.server = tokio::spawn(serve(listener, router(self.inner.clone())));
        Ok(())
    }

    /// Writes a kubeconfig for this server with `namespace` as the
    /// context's namespace, into `dir`, and returns its path.
    pub fn write_kubeconfig(&self, dir: &Path, namespace: &str) -> std::io::Result<PathBuf> {
        self.write_kubeconfig_via(dir, namespace, &self.url())
    }

    /// Like [`LeaseApi::write_kubeconfig`], with the server reached at
    /// `server` instead (a relay in front of this one, say).
    pub fn write_kubeconfig_via(&self, dir: &Path, namespace: &str, server: &str) -> std::io::Result<PathBuf> {
        let path = dir.join("kubeconfig");
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n    server: {}\ncontexts:\n- name: \
             emulator\n  context:\n    cluster: emulator\n    user: test\n    namespace: {namespace}\ncurrent-context: \
             emulator\nusers:\n- name: test\n  user:\n    token: emulator-accepts-anyone\n",
            server
        );
        std::fs::write(&path, config)?;
        Ok(path)
    }
}
