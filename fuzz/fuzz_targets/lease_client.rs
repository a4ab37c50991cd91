//! The client lease state machine fed arbitrary answers at arbitrary times:
//! it must never panic, never report a lease past its deadline, never count
//! a lease beyond the usable part of the TTL from when the request that
//! granted it was sent, and only report tokens the elector granted.
//!
//! Input: a TTL byte, then a script of (operation, argument) byte pairs.

#![no_main]

use std::collections::HashMap;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mpsync_core::lease::{Output, Request, RequestId, Response};
use mpsync_core::{LeaseClient, LeaseConfig};

fuzz_target!(|data: &[u8]| {
    let Some((&ttl, script)) = data.split_first() else { return };
    let config = LeaseConfig::new(Duration::from_millis(10 + u64::from(ttl) * 10));
    let usable = config.usable();
    let Ok(mut client) = LeaseClient::new(config) else { return };
    let mut now = Duration::ZERO;
    let mut sent: HashMap<RequestId, Duration> = HashMap::new();
    let mut pending: Vec<RequestId> = Vec::new();
    let mut granted_tokens = Vec::new();
    // The latest a lease may be counted to: sent + usable of a granted request.
    let mut latest_allowed = Duration::ZERO;
    for step in script.chunks(2) {
        let (op, arg) = (step[0], u64::from(*step.get(1).unwrap_or(&0)));
        match op % 6 {
            0 => {
                let _ = client.acquire(now);
            }
            1 => {
                let _ = client.release();
            }
            2 | 3 => {
                if pending.is_empty() {
                    continue;
                }
                let id = pending.remove(arg as usize % pending.len());
                let response = match (op % 6, arg % 3) {
                    (2, _) | (3, 0) => {
                        let token = 1 + arg % 4;
                        granted_tokens.push(token);
                        latest_allowed = latest_allowed.max(sent[&id] + usable);
                        Response::Granted { token, version: arg }
                    }
                    (_, 1) => Response::Refused,
                    _ => Response::Failed,
                };
                client.handle_response(id, response, now);
            }
            4 => client.handle_timeout(now),
            _ => now += Duration::from_millis(arg * u64::from(ttl % 7 + 1)),
        }
        while let Some(output) = client.poll_output() {
            match output {
                Output::Send { id, request } => {
                    sent.insert(id, now);
                    if !matches!(request, Request::Release { .. }) {
                        pending.push(id);
                    }
                }
                Output::Acquired { token } | Output::Lost { token } => assert!(granted_tokens.contains(&token)),
                Output::NotAcquired => {}
            }
        }
        if let Some(held) = client.lease(now) {
            assert!(now < held.valid_until, "held past its deadline");
            assert!(held.valid_until <= latest_allowed, "counted beyond sent + usable TTL");
            assert!(granted_tokens.contains(&held.token));
        }
    }
});
