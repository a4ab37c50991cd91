//! The leader-routing decision with arbitrary leaders, modes and
//! allowlists: never panics, never routes to an address no rule allows,
//! passes traffic through only on the leader's own sidecar.

#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use mpsync_core::route::{Allowlist, Decision, Leader, Mode, decide};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let rules: Vec<&str> = lines.next().unwrap_or_default().split(',').filter(|r| !r.is_empty()).collect();
    let Ok(allow) = Allowlist::parse(rules) else { return };
    let address = lines.next().map(str::to_owned);
    let id = lines.next().unwrap_or("leader").to_owned();
    let token = lines.next().and_then(|t| t.parse().ok()).unwrap_or(1);
    let mode = match lines.next().and_then(|m| m.parse::<SocketAddr>().ok()) {
        Some(self_address) => Mode::Sidecar { self_address, forward: data.len().is_multiple_of(2) },
        None => Mode::Gateway,
    };
    let leader = Leader { id, address: address.clone(), token };
    match decide(Some(&leader), &mode, &allow) {
        Decision::Route { address: to, token: t, .. } => {
            assert!(allow.allows(to));
            assert_eq!(t, token);
            assert_eq!(address.as_deref().and_then(|a| a.parse().ok()), Some(to));
        }
        Decision::Pass { .. } => {
            let Mode::Sidecar { self_address, .. } = mode else { panic!("pass through on a gateway") };
            assert_eq!(address.as_deref().and_then(|a| a.parse().ok()), Some(self_address));
        }
        Decision::NotLeader { .. } => assert!(matches!(mode, Mode::Sidecar { forward: false, .. })),
        Decision::NoLeader => panic!("a leader was given"),
        Decision::Disallowed { .. } => {}
    }
    assert_eq!(decide(None, &mode, &allow), Decision::NoLeader);
});
