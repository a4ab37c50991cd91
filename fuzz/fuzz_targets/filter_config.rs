//! The Envoy leader filter's configuration parser (the filter's own source
//! file, compiled here without the proxy-wasm host): any bytes are either
//! refused with a message or give a configuration that routes any request
//! without panicking.

#![no_main]

#[path = "../../envoy/filter/src/config.rs"]
#[allow(dead_code, missing_docs)]
mod config;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (json, probe) = match data.iter().position(|b| *b == 0xFF) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    match config::Config::parse(json) {
        Ok(config) => {
            // Bytes as a client sends them: not necessarily text.
            let (header, path) = match probe.iter().position(|b| *b == b'\n') {
                Some(i) => (&probe[..i], &probe[i + 1..]),
                None => (probe, &b"/"[..]),
            };
            let _ = config.election_for(|_| Some(header.to_vec()), path);
            let _ = config.election_for(|_| None, path);
        }
        Err(message) => assert!(!message.is_empty()),
    }
});
