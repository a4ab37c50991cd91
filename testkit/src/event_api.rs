//! The `events.k8s.io/v1` Event API of the emulator ([`LeaseApi`]): the
//! same server, the same object store and the same resourceVersion counter
//! as its Leases.
//!
//! It follows the API reference and the real server's validation of an
//! Event created through `events.k8s.io/v1`, for what the elector writes
//! and what an operator reads, and nothing more (no watch, no update):
//! - `POST .../namespaces/{ns}/events`: 201 with the stored object (uid,
//!   resourceVersion, creationTimestamp filled in); 409 `AlreadyExists`;
//!   400 `BadRequest` for a body that is not an Event or names another
//!   namespace; 422 `Invalid` with one cause per field error, listed as
//!   the server lists them (`eventTime`, `reportingController`,
//!   `reportingInstance`, `action`, `reason` required; `type` `Normal` or
//!   `Warning`; `reportingController` a qualified name; `reportingInstance`,
//!   `action` and `reason` at most 128 characters, `note` at most 1 kB;
//!   `regarding.namespace`, if set, the Event's; the name a DNS-1123
//!   subdomain, from `metadata.name` or `metadata.generateName` plus five
//!   random characters).
//! - `GET .../namespaces/{ns}/events/{name}`: 200 or 404 `NotFound`.
//! - `GET .../namespaces/{ns}/events` and `GET /apis/events.k8s.io/v1/events`
//!   (every namespace): an `EventList` in namespace and name order, with
//!   `metadata.resourceVersion`, filtered by `fieldSelector` on the
//!   fields the real server selects on (`metadata.name`,
//!   `metadata.namespace`, `regarding.{kind,name,namespace,uid,apiVersion,
//!   resourceVersion}`, `reason`, `type`, `reportingController`; `=`, `==`,
//!   `!=`, comma = and); another field gets 400 `BadRequest`.
//! - `DELETE .../namespaces/{ns}/events/{name}`: 200 with the object, or 404.
//!
//! For failure tests, creates can be refused with any status (403
//! `Forbidden`, as RBAC without `create` on `events` refuses them) or held
//! unanswered ([`EventsMode`]); reads are always answered.

// Handlers return a ready error response as their `Err`, axum's way.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::lease_api::{Inner, LeaseApi, Q, Shared, api_status, valid_name};

const GROUP: &str = "events.k8s.io";
const API_VERSION: &str = "events.k8s.io/v1";
const KIND: &str = "Event";
/// The API server's limits (`pkg/apis/core/validation/events.go`).
const MAX_FIELD: usize = 128;
const MAX_NOTE: usize = 1024;

/// How the emulator answers Event creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventsMode {
    /// Validates and stores them, as a real server does.
    #[default]
    Answer,
    /// Refuses every one with this status (403: as RBAC refuses).
    Refuse(StatusCode),
    /// Answers none until the mode changes (a server that hangs).
    Hold,
}

/// The Event API's own state, beside the object store.
pub(crate) struct EventsState {
    mode: watch::Sender<EventsMode>,
    /// Creates received so far (answered or not).
    received: watch::Sender<u64>,
    /// Creates waiting unanswered now ([`EventsMode::Hold`]).
    held: watch::Sender<u64>,
    /// Events stored so far.
    stored: watch::Sender<u64>,
}

impl Default for EventsState {
    fn default() -> Self {
        EventsState {
            mode: watch::channel(EventsMode::Answer).0,
            received: watch::channel(0).0,
            held: watch::channel(0).0,
            stored: watch::channel(0).0,
        }
    }
}

fn status(code: StatusCode, reason: &str, message: String, name: Option<&str>) -> Response {
    api_status(GROUP, "events", code, reason, message, name)
}

fn bad_request(message: String) -> Response {
    status(StatusCode::BAD_REQUEST, "BadRequest", message, None)
}

fn not_found(name: &str) -> Response {
    status(StatusCode::NOT_FOUND, "NotFound", format!("events.{GROUP} \"{name}\" not found"), Some(name))
}

/// One field error, as the server's `field.Error` says it.
struct FieldError {
    field: &'static str,
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueTooLong`.
    reason: &'static str,
    /// The error's body: `Required value`, `Invalid value: ...`.
    body: String,
}

fn required(field: &'static str) -> FieldError {
    FieldError { field, reason: "FieldValueRequired", body: "Required value".to_owned() }
}

fn invalid(field: &'static str, value: &Value, detail: &str) -> FieldError {
    FieldError { field, reason: "FieldValueInvalid", body: format!("Invalid value: {value}: {detail}") }
}

fn too_long(field: &'static str, max: usize) -> FieldError {
    FieldError { field, reason: "FieldValueTooLong", body: format!("Too long: may not be more than {max} bytes") }
}

/// A qualified name (`[prefix/]name`), as `ValidateQualifiedName` checks it.
fn qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, s),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    name_ok && prefix.is_none_or(valid_name)
}

/// The errors the server finds in `event` created in namespace `ns`.
fn field_errors(ns: &str, event: &Value) -> Vec<FieldError> {
    let text = |field: &str| event[field].as_str().unwrap_or_default();
    let mut errors = Vec::new();
    if event["eventTime"].as_str().is_none_or(str::is_empty) {
        errors.push(required("eventTime"));
    }
    let kind = text("type");
    if kind != "Normal" && kind != "Warning" {
        errors.push(invalid("type", &json!(""), &format!("has invalid value: {kind}")));
    }
    let controller = text("reportingController");
    if controller.is_empty() {
        errors.push(required("reportingController"));
    } else if !qualified_name(controller) {
        let detail = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end \
                      with an alphanumeric character, with an optional DNS subdomain prefix and '/'";
        errors.push(invalid("reportingController", &json!(controller), detail));
    }
    for field in ["reportingInstance", "action", "reason"] {
        let value = text(field);
        if value.is_empty() {
            errors.push(required(field));
        } else if value.len() > MAX_FIELD {
            errors.push(too_long(field, MAX_FIELD));
        }
    }
    if text("note").len() > MAX_NOTE {
        errors.push(invalid("note", &json!(""), &format!("can have at most {MAX_NOTE} characters")));
    }
    if let Some(other) = event["regarding"]["namespace"].as_str().filter(|n| !n.is_empty() && *n != ns) {
        errors.push(invalid("regarding.namespace", &json!(other), "does not match event.namespace"));
    }
    errors
}

/// 422 `Invalid`, worded and detailed as the server words it.
fn unprocessable(name: &str, errors: &[FieldError]) -> Response {
    let said: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.body)).collect();
    let all = if said.len() == 1 { said[0].clone() } else { format!("[{}]", said.join(", ")) };
    let causes: Vec<Value> =
        errors.iter().map(|e| json!({"reason": e.reason, "message": e.body, "field": e.field})).collect();
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("{KIND}.{GROUP} \"{name}\" is invalid: {all}"), "reason": "Invalid",
        "details": {"name": name, "group": GROUP, "kind": "events", "causes": causes}, "code": 422,
    });
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

/// A status that stands for a refusal of `code`, as the server would give it.
fn refusal(code: StatusCode, ns: &str) -> Response {
    let (reason, message) = match code.as_u16() {
        403 => (
            "Forbidden",
            format!(
                "events.{GROUP} is forbidden: User \"test\" cannot create resource \"events\" in API group \
                 \"{GROUP}\" in the namespace \"{ns}\""
            ),
        ),
        429 => ("TooManyRequests", "too many requests, please try again later".to_owned()),
        503 => ("ServiceUnavailable", "the server is currently unable to handle the request".to_owned()),
        _ => ("InternalError", "an error on the server has prevented the request from succeeding".to_owned()),
    };
    status(code, reason, message, None)
}

/// A field selector's terms, each `(field, wanted, equal)`; a field the
/// server does not select on is 400.
fn selector(s: &str) -> Result<Vec<(String, String, bool)>, Response> {
    const FIELDS: [&str; 11] = [
        "metadata.name",
        "metadata.namespace",
        "regarding.kind",
        "regarding.name",
        "regarding.namespace",
        "regarding.uid",
        "regarding.apiVersion",
        "regarding.resourceVersion",
        "reason",
        "type",
        "reportingController",
    ];
    let mut terms = Vec::new();
    for term in s.split(',').filter(|t| !t.is_empty()) {
        let (field, value, equal) = if let Some((f, v)) = term.split_once("!=") {
            (f, v, false)
        } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            (f, v, true)
        } else {
            return Err(bad_request(format!("invalid selector: '{s}'; can't understand '{term}'")));
        };
        if !FIELDS.contains(&field) {
            return Err(bad_request(format!("field label not supported: {field}")));
        }
        terms.push((field.to_owned(), value.to_owned(), equal));
    }
    Ok(terms)
}

fn matches(event: &Value, terms: &[(String, String, bool)]) -> bool {
    terms.iter().all(|(field, wanted, equal)| {
        let value = field.split('.').fold(event, |v, part| &v[part]).as_str().unwrap_or_default();
        (value == wanted) == *equal
    })
}

fn list(inner: &Inner, ns: Option<&str>, q: &std::collections::BTreeMap<String, String>) -> Response {
    let terms = match selector(q.get("fieldSelector").map(String::as_str).unwrap_or_default()) {
        Ok(terms) => terms,
        Err(response) => return response,
    };
    let objects = inner.objects();
    let items: Vec<Value> = objects
        .events
        .iter()
        .filter(|((n, _), event)| ns.is_none_or(|ns| ns == n) && matches(event, &terms))
        .map(|(_, event)| event.clone())
        .collect();
    let metadata = json!({"resourceVersion": objects.version.to_string()});
    Json(json!({"kind": "EventList", "apiVersion": API_VERSION, "metadata": metadata, "items": items})).into_response()
}

async fn list_namespace(State(inner): Shared, UrlPath(ns): UrlPath<String>, Query(q): Q) -> Response {
    list(&inner, Some(&ns), &q)
}

async fn list_all(State(inner): Shared, Query(q): Q) -> Response {
    list(&inner, None, &q)
}

/// Counts a create as held for as long as it lives (its client may give up).
struct Held<'a>(&'a watch::Sender<u64>);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

async fn create(State(inner): Shared, UrlPath(ns): UrlPath<String>, body: Bytes) -> Response {
    let state = &inner.events_api;
    state.received.send_modify(|n| *n += 1);
    let mut mode = state.mode.subscribe();
    if *mode.borrow() == EventsMode::Hold {
        state.held.send_modify(|n| *n += 1);
        let _held = Held(&state.held);
        let _ = mode.wait_for(|m| *m != EventsMode::Hold).await;
    }
    let current = *mode.borrow();
    if let EventsMode::Refuse(code) = current {
        return refusal(code, &ns);
    }
    let mut event: Value = match serde_json::from_slice(&body) {
        Ok(event) => event,
        Err(e) => return bad_request(format!("the body of the request was in an unknown format: {e}")),
    };
    let kind_ok = event.get("kind").is_none_or(|k| k == KIND);
    let version_ok = event.get("apiVersion").is_none_or(|v| v == API_VERSION);
    if !event.is_object() || !kind_ok || !version_ok {
        return bad_request(format!("the object provided is unrecognized (must be of type {KIND} in {API_VERSION})"));
    }
    if let Some(other) = event["metadata"]["namespace"].as_str().filter(|n| *n != ns) {
        return bad_request(format!(
            "the namespace of the provided object ({other}) does not match the namespace sent on the request ({ns})"
        ));
    }
    let mut objects = inner.objects();
    let name = match (event["metadata"]["name"].as_str(), event["metadata"]["generateName"].as_str()) {
        (Some(name), _) if !name.is_empty() => name.to_owned(),
        (_, Some(prefix)) if !prefix.is_empty() => format!("{prefix}{}", suffix(objects.uids + 1)),
        _ => return unprocessable("", &[required("metadata.name")]),
    };
    let mut errors = Vec::new();
    if !valid_name(&name) {
        let detail = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', \
                      and must start and end with an alphanumeric character";
        errors.push(invalid("metadata.name", &json!(name), detail));
    }
    errors.extend(field_errors(&ns, &event));
    if !errors.is_empty() {
        return unprocessable(&name, &errors);
    }
    let key = (ns.clone(), name.clone());
    if objects.events.contains_key(&key) {
        let message = format!("events.{GROUP} \"{name}\" already exists");
        return status(StatusCode::CONFLICT, "AlreadyExists", message, Some(&name));
    }
    objects.version += 1;
    objects.uids += 1;
    let meta = &mut event["metadata"];
    meta["name"] = json!(name);
    meta["namespace"] = json!(ns);
    meta["resourceVersion"] = json!(objects.version.to_string());
    meta["uid"] = json!(format!("00000000-0000-4000-a000-{:012x}", objects.uids));
    meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    event["kind"] = json!(KIND);
    event["apiVersion"] = json!(API_VERSION);
    objects.events.insert(key, event.clone());
    objects.event_order.push(event.clone());
    drop(objects);
    state.stored.send_modify(|n| *n += 1);
    (StatusCode::CREATED, Json(event)).into_response()
}

/// Five characters from the server's alphabet for generated names (no
/// vowels), different for each `n`.
fn suffix(mut n: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| {
            let c = ALPHABET[usize::try_from(n % 27).unwrap_or(0)];
            n /= 27;
            char::from(c)
        })
        .collect()
}

async fn read(State(inner): Shared, UrlPath((ns, name)): UrlPath<(String, String)>) -> Response {
    match inner.objects().events.get(&(ns, name.clone())) {
        Some(event) => Json(event.clone()).into_response(),
        None => not_found(&name),
    }
}

async fn delete(State(inner): Shared, UrlPath((ns, name)): UrlPath<(String, String)>) -> Response {
    let mut objects = inner.objects();
    match objects.events.remove(&(ns, name.clone())) {
        Some(event) => Json(event).into_response(),
        None => not_found(&name),
    }
}

/// The Event routes, for the emulator's router.
pub(crate) fn routes() -> Router<Arc<Inner>> {
    let base = "/apis/events.k8s.io/v1/namespaces/{ns}/events";
    Router::new()
        .route("/apis/events.k8s.io/v1/events", get(list_all))
        .route(base, get(list_namespace).post(create))
        .route(&format!("{base}/{{name}}"), get(read).delete(delete))
}

impl LeaseApi {
    /// Every Event created so far, in `namespace` (all namespaces with
    /// `None`), in the order they were created (deleted ones included).
    pub fn events(&self, namespace: Option<&str>) -> Vec<Value> {
        let objects = self.inner.objects();
        let wanted = |e: &&Value| namespace.is_none_or(|ns| e["metadata"]["namespace"] == ns);
        objects.event_order.iter().filter(wanted).cloned().collect()
    }

    /// How Event creates are answered from now on; creates held until now
    /// are answered the new way.
    pub fn set_events_mode(&self, mode: EventsMode) {
        self.inner.events_api.mode.send_replace(mode);
    }

    /// The number of Event creates received so far (answered or not),
    /// changing with each: wait on it for the next.
    pub fn event_requests(&self) -> watch::Receiver<u64> {
        self.inner.events_api.received.subscribe()
    }

    /// The number of Events created (stored) so far, changing with each:
    /// wait on it for the next.
    pub fn events_created(&self) -> watch::Receiver<u64> {
        self.inner.events_api.stored.subscribe()
    }

    /// The number of Event creates held unanswered now
    /// ([`EventsMode::Hold`]).
    pub fn events_held(&self) -> watch::Receiver<u64> {
        self.inner.events_api.held.subscribe()
    }
}
