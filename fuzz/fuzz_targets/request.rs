//! The elector's request parsing and validation: names, `?wait=` queries and
//! v1 bodies (acquire and release), as `elector::api` runs them. Nothing may
//! panic, and whatever is accepted must be within the documented bounds.
//!
//! Input: a kind byte, then name, query, acquire body, release body and
//! watch body (`POST /v1/watch`) separated by 0xFF bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mpsync_core::wire::{AcquireRequest, Kind, MAX_HOLDER_LEN, MAX_TTL_MS, MAX_WAIT_MS, MIN_TTL_MS, ReleaseRequest};

fn holder_ok(holder: &str) -> bool {
    !holder.is_empty() && holder.chars().count() <= MAX_HOLDER_LEN && !holder.chars().any(char::is_control)
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else { return };
    let kind = if kind % 2 == 0 { Kind::Lock } else { Kind::Election };
    let mut parts = rest.split(|b| *b == 0xFF);
    let name = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let query = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let acquire = parts.next().unwrap_or_default();
    let release = parts.next().unwrap_or_default();
    let watch = parts.next().unwrap_or_default();

    if mpsync_core::validate_name(&name).is_ok() {
        assert!(!name.is_empty() && name.len() <= 253, "{name:?}");
        assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'));
    }
    if let Ok(Some(wait)) = mpsync_core::wire::parse_wait(Some(&query)) {
        assert!(wait.timeout_ms <= MAX_WAIT_MS);
    }
    if let Ok(request) = serde_json::from_slice::<AcquireRequest>(acquire)
        && request.validate(kind).is_ok()
    {
        assert!(holder_ok(&request.holder), "{request:?}");
        assert!((MIN_TTL_MS..=MAX_TTL_MS).contains(&request.ttl_ms));
        assert_ne!(request.token, Some(0));
        match (kind, &request.address) {
            (Kind::Lock, address) => assert!(address.is_none()),
            (Kind::Election, Some(a)) => assert!(a.parse::<std::net::SocketAddr>().is_ok()),
            (Kind::Election, None) => {}
        }
        // What the elector accepted reads back the same.
        let again: AcquireRequest = serde_json::from_slice(&serde_json::to_vec(&request).unwrap()).unwrap();
        assert_eq!(again, request);
    }
    if let Ok(request) = serde_json::from_slice::<ReleaseRequest>(release)
        && request.validate().is_ok()
    {
        assert!(holder_ok(&request.holder));
    }
    if let Ok(request) = serde_json::from_slice::<mpsync_core::watch::WatchRequest>(watch) {
        // Accepted timeouts are within the bound; what was parsed reads
        // back the same (a name listed twice counts once).
        if let Ok(timeout) = request.timeout() {
            assert!(timeout.as_millis() <= u128::from(MAX_WAIT_MS));
        }
        assert_eq!(request.entries().count(), request.len());
        let again: mpsync_core::watch::WatchRequest =
            serde_json::from_slice(&serde_json::to_vec(&request).unwrap()).unwrap();
        assert_eq!(again, request);
    }
});
