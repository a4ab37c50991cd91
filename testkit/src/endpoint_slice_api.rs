//! The `discovery.k8s.io/v1` EndpointSlice API of the emulator
//! ([`LeaseApi`]): the same server, the same object store and the same
//! resourceVersion counter as its Leases.
//!
//! It follows the documented behaviour of the real API server for what
//! the elector's `--leader-service` uses, and nothing more (no watch, no
//! patch, no delete):
//! - `POST .../namespaces/{ns}/endpointslices`: 201 with the stored
//!   object; 409 `AlreadyExists`; 422 `Invalid` (below); 400 `BadRequest`
//!   for a body that is not an EndpointSlice or names another namespace.
//! - `GET .../endpointslices/{name}`: 200 or 404 `NotFound`.
//! - `PUT .../endpointslices/{name}`: 200; 404 `NotFound`; 409 `Conflict`
//!   when `metadata.resourceVersion` is set and stale (unset:
//!   unconditional); 422 `Invalid`, also for a changed `addressType`
//!   (immutable); 400 when the body's name differs from the URL's.
//! - `GET .../endpointslices`: an `EndpointSliceList` with
//!   `metadata.resourceVersion`, filtered by `labelSelector`.
//!
//! Validation, as the API server's: the name a DNS-1123 subdomain;
//! `addressType` one of `IPv4`, `IPv6`, `FQDN`; at most 1,000 endpoints,
//! each with 1 to 100 addresses of that type (none unspecified, loopback
//! or link-local); at most 100 ports, with
//! unique names that are DNS-1123 labels (or empty), numbers 1-65535 and
//! protocols `TCP`, `UDP` or `SCTP`.

// Handlers return a ready error response as their `Err`, axum's way.
#![allow(clippy::result_large_err)]

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::lease_api::{Inner, LeaseApi, Objects, Q, Shared, api_status, labels_match, valid_name};

const GROUP: &str = "discovery.k8s.io";
const API_VERSION: &str = "discovery.k8s.io/v1";
const KIND: &str = "EndpointSlice";
const MAX_ENDPOINTS: usize = 1000;
const MAX_ADDRESSES: usize = 100;
const MAX_PORTS: usize = 100;

fn status(code: StatusCode, reason: &str, message: String, name: Option<&str>) -> Response {
    api_status(GROUP, "endpointslices", code, reason, message, name)
}

fn not_found(name: &str) -> Response {
    status(StatusCode::NOT_FOUND, "NotFound", format!("endpointslices.{GROUP} \"{name}\" not found"), Some(name))
}

fn bad_request(message: String) -> Response {
    status(StatusCode::BAD_REQUEST, "BadRequest", message, None)
}

fn invalid(name: &str, field: &str, value: &Value, detail: &str) -> Response {
    status(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("{KIND}.{GROUP} \"{name}\" is invalid: {field}: Invalid value: {value}: {detail}"),
        Some(name),
    )
}

fn dns_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && valid_name(s)
}

/// Why `address` cannot be an endpoint of a slice of `address_type`, as
/// the API server words it (its `IsValidIP` and `ValidateNonSpecialIP`).
fn address_error(address_type: &str, address: &str) -> Option<String> {
    let ip: IpAddr = match (address_type, address.parse::<IpAddr>()) {
        ("IPv4", Ok(ip @ IpAddr::V4(_))) | ("IPv6", Ok(ip @ IpAddr::V6(_))) => ip,
        ("IPv4" | "IPv6", _) => return Some(format!("must be a valid {address_type} address")),
        _ => return (!valid_name(address)).then(|| "must be a valid DNS subdomain".to_owned()),
    };
    let (loopback, link_local, multicast) = match ip {
        IpAddr::V4(v4) => (v4.is_loopback(), v4.is_link_local(), v4.octets()[..3] == [224, 0, 0]),
        IpAddr::V6(v6) => (v6.is_loopback(), v6.is_unicast_link_local(), v6.segments()[0] & 0xff0f == 0xff02),
    };
    if ip.is_unspecified() {
        Some("may not be unspecified (0.0.0.0)".to_owned())
    } else if loopback {
        Some("may not be in the loopback range (127.0.0.0/8, ::1/128)".to_owned())
    } else if link_local {
        Some("may not be in the link-local range (169.254.0.0/16, fe80::/10)".to_owned())
    } else if multicast {
        Some("may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)".to_owned())
    } else {
        None
    }
}

fn validate(name: &str, slice: &Value) -> Result<(), Response> {
    if !valid_name(name) {
        return Err(invalid(
            name,
            "metadata.name",
            &json!(name),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and \
             must start and end with an alphanumeric character",
        ));
    }
    let address_type = slice["addressType"].as_str().unwrap_or_default();
    if !["IPv4", "IPv6", "FQDN"].contains(&address_type) {
        let detail = "supported values: \"FQDN\", \"IPv4\", \"IPv6\"";
        return Err(invalid(name, "addressType", &slice["addressType"], detail));
    }
    let endpoints = slice["endpoints"].as_array().map(Vec::as_slice).unwrap_or_default();
    if endpoints.len() > MAX_ENDPOINTS {
        let detail = format!("must have at most {MAX_ENDPOINTS} items");
        return Err(invalid(name, "endpoints", &json!(endpoints.len()), &detail));
    }
    for (i, endpoint) in endpoints.iter().enumerate() {
        let addresses = endpoint["addresses"].as_array().map(Vec::as_slice).unwrap_or_default();
        if addresses.is_empty() || addresses.len() > MAX_ADDRESSES {
            let detail = format!("must have between 1 and {MAX_ADDRESSES} addresses");
            return Err(invalid(name, &format!("endpoints[{i}].addresses"), &json!(addresses.len()), &detail));
        }
        for (j, address) in addresses.iter().enumerate() {
            let detail = match address.as_str() {
                Some(a) => address_error(address_type, a),
                None => Some("must be a string".to_owned()),
            };
            if let Some(detail) = detail {
                return Err(invalid(name, &format!("endpoints[{i}].addresses[{j}]"), address, &detail));
            }
        }
    }
    let ports = slice["ports"].as_array().map(Vec::as_slice).unwrap_or_default();
    if ports.len() > MAX_PORTS {
        let detail = format!("must have at most {MAX_PORTS} items");
        return Err(invalid(name, "ports", &json!(ports.len()), &detail));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let port_name = port["name"].as_str().unwrap_or_default();
        if !port_name.is_empty() && !dns_label(port_name) {
            return Err(invalid(name, &format!("ports[{i}].name"), &port["name"], "must be a DNS-1123 label"));
        }
        if !names.insert(port_name) {
            let message =
                format!("{KIND}.{GROUP} \"{name}\" is invalid: ports[{i}].name: Duplicate value: {port_name:?}");
            return Err(status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message, Some(name)));
        }
        if let Some(number) = port.get("port").filter(|p| !p.is_null())
            && number.as_u64().is_none_or(|p| !(1..=65535).contains(&p))
        {
            return Err(invalid(name, &format!("ports[{i}].port"), number, "must be between 1 and 65535, inclusive"));
        }
        let protocol = port["protocol"].as_str().unwrap_or("TCP");
        if !["TCP", "UDP", "SCTP"].contains(&protocol) {
            let detail = "supported values: \"SCTP\", \"TCP\", \"UDP\"";
            return Err(invalid(name, &format!("ports[{i}].protocol"), &port["protocol"], detail));
        }
    }
    Ok(())
}

fn parse(body: &Bytes) -> Result<Value, Response> {
    let slice: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("the body of the request was in an unknown format: {e}")))?;
    let kind_ok = slice.get("kind").is_none_or(|k| k == KIND);
    let version_ok = slice.get("apiVersion").is_none_or(|v| v == API_VERSION);
    if !slice.is_object() || !kind_ok || !version_ok {
        return Err(bad_request(format!(
            "the object provided is unrecognized (must be of type {KIND} in {API_VERSION})"
        )));
    }
    Ok(slice)
}

fn with_type(mut slice: Value) -> Value {
    slice["kind"] = json!(KIND);
    slice["apiVersion"] = json!(API_VERSION);
    slice
}

/// Stores `slice` under `key` at the next resourceVersion, with the
/// defaults the API server fills in (a port's name `""`, protocol `TCP`).
fn put(objects: &mut Objects, key: (String, String), mut slice: Value) -> Value {
    for port in slice["ports"].as_array_mut().into_iter().flatten() {
        for (field, default) in [("name", ""), ("protocol", "TCP")] {
            if port.get(field).is_none_or(Value::is_null) {
                port[field] = json!(default);
            }
        }
    }
    objects.version += 1;
    slice["metadata"]["resourceVersion"] = json!(objects.version.to_string());
    let slice = with_type(slice);
    objects.slices.insert(key, slice.clone());
    objects.slice_writes.push(slice.clone());
    slice
}

/// Tells whoever waits on [`LeaseApi::endpoint_slice_changes`].
fn written(inner: &Inner) {
    inner.slices_written.send_modify(|n| *n += 1);
}

async fn list(State(inner): Shared, UrlPath(ns): UrlPath<String>, Query(q): Q) -> Response {
    let objects = inner.objects();
    let items: Vec<Value> = objects
        .slices
        .iter()
        .filter(|((n, _), slice)| *n == ns && q.get("labelSelector").is_none_or(|s| labels_match(slice, s)))
        .map(|(_, slice)| slice.clone())
        .collect();
    let metadata = json!({"resourceVersion": objects.version.to_string()});
    Json(json!({"kind": "EndpointSliceList", "apiVersion": API_VERSION, "metadata": metadata, "items": items}))
        .into_response()
}

async fn create(State(inner): Shared, UrlPath(ns): UrlPath<String>, body: Bytes) -> Response {
    let mut slice = match parse(&body) {
        Ok(slice) => slice,
        Err(response) => return response,
    };
    let Some(name) = slice["metadata"]["name"].as_str().map(str::to_owned) else {
        return invalid("", "metadata.name", &json!(""), "name or generateName is required");
    };
    if let Some(other) = slice["metadata"]["namespace"].as_str().filter(|n| *n != ns) {
        return bad_request(format!(
            "the namespace of the provided object ({other}) does not match the namespace sent on the request ({ns})"
        ));
    }
    if let Err(response) = validate(&name, &slice) {
        return response;
    }
    let key = (ns.clone(), name.clone());
    let mut objects = inner.objects();
    if objects.slices.contains_key(&key) {
        let message = format!("endpointslices.{GROUP} \"{name}\" already exists");
        return status(StatusCode::CONFLICT, "AlreadyExists", message, Some(&name));
    }
    objects.uids += 1;
    let meta = &mut slice["metadata"];
    meta["namespace"] = json!(ns);
    meta["uid"] = json!(format!("00000000-0000-4000-9000-{:012x}", objects.uids));
    meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    meta["generation"] = json!(1);
    let stored = put(&mut objects, key, slice);
    drop(objects);
    written(&inner);
    (StatusCode::CREATED, Json(stored)).into_response()
}

async fn read(State(inner): Shared, UrlPath((ns, name)): UrlPath<(String, String)>) -> Response {
    match inner.objects().slices.get(&(ns, name.clone())) {
        Some(slice) => Json(slice.clone()).into_response(),
        None => not_found(&name),
    }
}

async fn replace(State(inner): Shared, UrlPath((ns, name)): UrlPath<(String, String)>, body: Bytes) -> Response {
    let mut slice = match parse(&body) {
        Ok(slice) => slice,
        Err(response) => return response,
    };
    if let Some(other) = slice["metadata"]["name"].as_str().filter(|n| *n != name) {
        return bad_request(format!("the name of the object ({other}) does not match the name on the URL ({name})"));
    }
    if let Err(response) = validate(&name, &slice) {
        return response;
    }
    let key = (ns.clone(), name.clone());
    // Compared and stored under one lock: a compare-and-swap.
    let mut objects = inner.objects();
    let Some(current) = objects.slices.get(&key).cloned() else { return not_found(&name) };
    let expected = slice["metadata"]["resourceVersion"].as_str().filter(|v| !v.is_empty());
    if expected.is_some_and(|v| Some(v) != current["metadata"]["resourceVersion"].as_str()) {
        let message = format!(
            "Operation cannot be fulfilled on endpointslices.{GROUP} \"{name}\": the object has been modified; please \
             apply your changes to the latest version and try again"
        );
        return status(StatusCode::CONFLICT, "Conflict", message, Some(&name));
    }
    if slice["addressType"] != current["addressType"] {
        return invalid(&name, "addressType", &slice["addressType"], "field is immutable");
    }
    let meta = &mut slice["metadata"];
    meta["name"] = json!(name);
    meta["namespace"] = json!(ns);
    for kept in ["uid", "creationTimestamp"] {
        meta[kept] = current["metadata"][kept].clone();
    }
    meta["generation"] = json!(current["metadata"]["generation"].as_u64().unwrap_or(1) + 1);
    let stored = put(&mut objects, key, slice);
    drop(objects);
    written(&inner);
    Json(stored).into_response()
}

/// The EndpointSlice routes, for the emulator's router.
pub(crate) fn routes() -> Router<Arc<Inner>> {
    let base = "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices";
    Router::new().route(base, get(list).post(create)).route(&format!("{base}/{{name}}"), get(read).put(replace))
}

impl LeaseApi {
    /// The EndpointSlice `name` in `namespace`, as stored.
    pub fn endpoint_slice(&self, namespace: &str, name: &str) -> Option<Value> {
        self.inner.objects().slices.get(&(namespace.to_owned(), name.to_owned())).cloned()
    }

    /// Every EndpointSlice as each write (create or update) stored it, in
    /// the order of the writes.
    pub fn endpoint_slice_writes(&self) -> Vec<Value> {
        self.inner.objects().slice_writes.clone()
    }

    /// The number of EndpointSlice writes so far, changing with each: wait
    /// on it for the next write.
    pub fn endpoint_slice_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.slices_written.subscribe()
    }

    /// Stores `slice` in `namespace` as a create by someone else would (no
    /// validation), for tests of slices the elector does not own.
    pub fn insert_endpoint_slice(&self, namespace: &str, mut slice: Value) -> Value {
        let name = slice["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        slice["metadata"]["namespace"] = json!(namespace);
        let stored = put(&mut self.inner.objects(), (namespace.to_owned(), name), slice);
        written(&self.inner);
        stored
    }
}
