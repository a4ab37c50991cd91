//! `elector/openapi.yaml` is a valid OpenAPI 3.0 document (parsed by a real
//! OpenAPI library, every `$ref` resolved) and describes what the code
//! serves: every route and method, every error code and conflict reason of
//! `mpsync_core::wire`. That responses match it, and that requests it
//! forbids are refused, is checked against a running elector by
//! schemathesis (`scripts/check-openapi.sh`, run by `make test`).

#![allow(clippy::unwrap_used, missing_docs)]

use mpsync_core::wire::{ConflictReason, ErrorCode};
use openapiv3::{OpenAPI, ReferenceOr, Schema, SchemaKind, Type};

const SPEC: &str = include_str!("../openapi.yaml");

/// What the router serves, by path.
const ROUTES: &[(&str, &[&str])] = &[
    ("/locks/{name}", &["get", "put"]),
    ("/v1/locks", &["get"]),
    ("/v1/elections", &["get"]),
    ("/v1/locks/{name}", &["get", "put", "delete"]),
    ("/v1/elections/{name}", &["get", "put", "delete"]),
    ("/v1/elections/{name}/transfer", &["post"]),
    ("/v1/history", &["get"]),
    ("/v1/locks/{name}/history", &["get"]),
    ("/v1/elections/{name}/history", &["get"]),
    ("/v1/sessions", &["post"]),
    ("/v1/watch", &["post"]),
    ("/healthz", &["get"]),
    ("/readyz", &["get"]),
    ("/metrics", &["get"]),
    ("/status", &["get"]),
    ("/status.js", &["get"]),
    ("/status.css", &["get"]),
];

fn spec() -> OpenAPI {
    serde_yaml::from_str(SPEC).expect("openapi.yaml is not an OpenAPI 3.0 document")
}

fn schema<'a>(api: &'a OpenAPI, name: &str) -> &'a Schema {
    match api.components.as_ref().unwrap().schemas.get(name) {
        Some(ReferenceOr::Item(s)) => s,
        other => panic!("schema {name}: {other:?}"),
    }
}

fn property_enum(api: &OpenAPI, schema_name: &str, property: &str) -> Vec<String> {
    let SchemaKind::Type(Type::Object(object)) = &schema(api, schema_name).schema_kind else { panic!() };
    let Some(ReferenceOr::Item(p)) = object.properties.get(property) else { panic!("{schema_name}.{property}") };
    let SchemaKind::Type(Type::String(s)) = &p.schema_kind else { panic!() };
    s.enumeration.iter().flatten().cloned().collect()
}

#[test]
fn it_is_openapi_3_and_every_reference_resolves() {
    let api = spec();
    assert!(api.openapi.starts_with("3.0"));
    let value: serde_yaml::Value = serde_yaml::from_str(SPEC).unwrap();
    let mut refs = Vec::new();
    fn walk(v: &serde_yaml::Value, refs: &mut Vec<String>) {
        match v {
            serde_yaml::Value::Mapping(m) => {
                for (k, v) in m {
                    if k.as_str() == Some("$ref") {
                        refs.push(v.as_str().unwrap().to_owned());
                    }
                    walk(v, refs);
                }
            }
            serde_yaml::Value::Sequence(s) => s.iter().for_each(|v| walk(v, refs)),
            _ => {}
        }
    }
    walk(&value, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let mut at = &value;
        for part in r.trim_start_matches("#/").split('/') {
            at = at.get(part).unwrap_or_else(|| panic!("{r} does not resolve"));
        }
    }
}

#[test]
fn every_route_and_method_is_documented_and_nothing_else() {
    let api = spec();
    let documented: Vec<&String> = api.paths.paths.keys().collect();
    assert_eq!(documented.len(), ROUTES.len(), "{documented:?}");
    for &(path, methods) in ROUTES {
        let Some(ReferenceOr::Item(item)) = api.paths.paths.get(path) else { panic!("{path} missing") };
        let have: Vec<&str> = item.iter().map(|(m, _)| m).collect();
        assert_eq!(have, methods, "{path}");
        for (method, op) in item.iter() {
            assert!(op.operation_id.is_some(), "{method} {path} has no operationId");
            assert!(!op.responses.responses.is_empty(), "{method} {path} documents no response");
        }
    }
}

#[test]
fn every_error_code_and_conflict_reason_is_documented() {
    use ErrorCode::*;
    let api = spec();
    let codes = property_enum(&api, "Error", "error");
    for code in [
        InvalidName,
        MalformedBody,
        InvalidField,
        InvalidQuery,
        NotFound,
        MethodNotAllowed,
        BodyTooLarge,
        UpgradeRequired,
        Forbidden,
        Unavailable,
        Gone,
    ] {
        let name = serde_json::to_value(code).unwrap();
        assert!(codes.iter().any(|c| c == name.as_str().unwrap()), "{name} missing from the Error enum");
    }
    let reasons = property_enum(&api, "Conflict", "reason");
    use ConflictReason::*;
    let all = [Held, StaleToken, NotHeld, WrongKey, SessionGone, Queued, NotQueued, PermitsDiffer, Reserved];
    for reason in all {
        // A reason added to the code stops this compiling until it is listed.
        match reason {
            Held | StaleToken | NotHeld | WrongKey | SessionGone | Queued | NotQueued | PermitsDiffer | Reserved => {}
        }
        let name = serde_json::to_value(reason).unwrap();
        assert!(reasons.iter().any(|r| r == name.as_str().unwrap()), "{name} missing");
    }
    assert_eq!(reasons.len(), all.len(), "documented reasons the code never gives: {reasons:?}");
}

#[test]
fn every_why_of_the_history_is_documented() {
    use mpsync_core::Why::*;
    let all = [Acquired, Released, Expired, SessionEnded, Transferred];
    for why in all {
        // A reason added to the code stops this compiling until it is listed.
        match why {
            Acquired | Released | Expired | SessionEnded | Transferred => {}
        }
    }
    let documented = property_enum(&spec(), "HistoryEntry", "why");
    assert_eq!(documented, all.map(|w| w.as_str().to_owned()), "the why of HistoryEntry");
}

#[test]
fn request_bounds_match_the_core_constants() {
    let api = spec();
    let SchemaKind::Type(Type::Integer(ttl)) = &schema(&api, "TtlMs").schema_kind else { panic!() };
    assert_eq!(ttl.minimum, Some(mpsync_core::wire::MIN_TTL_MS as i64));
    assert_eq!(ttl.maximum, Some(mpsync_core::wire::MAX_TTL_MS as i64));
    let SchemaKind::Type(Type::String(holder)) = &schema(&api, "Holder").schema_kind else { panic!() };
    assert_eq!(holder.max_length, Some(mpsync_core::wire::MAX_HOLDER_LEN));
    let SchemaKind::Type(Type::String(key)) = &schema(&api, "Key").schema_kind else { panic!() };
    assert_eq!(
        (key.min_length, key.max_length),
        (Some(mpsync_core::wire::MIN_KEY_LEN), Some(mpsync_core::wire::MAX_KEY_LEN))
    );
    // Every request that renews, releases or waits in line may carry it.
    for request in ["LockRequest", "ElectionRequest", "ReleaseRequest", "LockReleaseRequest"] {
        let variants = match &schema(&api, request).schema_kind {
            SchemaKind::OneOf { one_of } => {
                one_of.iter().map(|v| if let ReferenceOr::Item(s) = v { s } else { panic!("{request}") }).collect()
            }
            _ => vec![schema(&api, request)],
        };
        for variant in variants {
            let SchemaKind::Type(Type::Object(object)) = &variant.schema_kind else { panic!("{request}") };
            assert!(object.properties.contains_key("key"), "{request} has no key");
        }
    }
}
