//! `elector/openapi.yaml` describes what the code serves: every route, and
//! every error code and conflict reason of `mpsync_core::wire`.

#![allow(clippy::unwrap_used, missing_docs)]

use mpsync_core::wire::{ConflictReason, ErrorCode};

const SPEC: &str = include_str!("../openapi.yaml");

#[test]
fn every_route_is_documented() {
    for path in ["/locks/{name}:", "/v1/locks/{name}:", "/v1/elections/{name}:", "/healthz:", "/readyz:", "/metrics:"] {
        assert!(SPEC.lines().any(|l| l.trim() == path), "{path} missing from openapi.yaml");
    }
}

#[test]
fn every_error_code_and_conflict_reason_is_documented() {
    use ErrorCode::*;
    let codes =
        [InvalidName, MalformedBody, InvalidField, InvalidQuery, NotFound, MethodNotAllowed, BodyTooLarge, Unavailable];
    let enum_line = SPEC.lines().find(|l| l.contains("enum: [invalid_name")).unwrap();
    for code in codes {
        let name = serde_json::to_value(code).unwrap();
        assert!(enum_line.contains(name.as_str().unwrap()), "{name} missing from the Error enum");
    }
    for reason in [ConflictReason::Held, ConflictReason::StaleToken, ConflictReason::NotHeld] {
        let name = serde_json::to_value(reason).unwrap();
        assert!(SPEC.contains(&format!(" {}", name.as_str().unwrap())), "{name} missing");
    }
}
