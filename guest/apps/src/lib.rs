//! Shared pieces of the example apps: the `metaparticle:sync/client`
//! bindings, a tiny flag parser and a line printer.
//!
//! Apps are plain `wasi:cli/command` components (`bin` targets built for
//! wasm32-wasip2) that import `metaparticle:sync`. They run under `mpsync
//! run` (which provides the imports natively) or, composed with the
//! `sync-guest` component, on any WASI-HTTP runtime.

#![allow(missing_docs)]

wit_bindgen::generate!({
    path: "../../wit",
    world: "metaparticle:sync/client",
    with: { "wasi:io/poll@0.2.12": wasip2::io::poll },
});

pub use metaparticle::sync::{election, lock, shared, types};

use std::time::Duration;

/// `--key value` flags from the command line (and `KEY` from the
/// environment as a fallback, upper-cased with `-` as `_`).
pub struct Flags(Vec<String>);

impl Flags {
    pub fn parse() -> Flags {
        Flags(std::env::args().skip(1).collect())
    }

    pub fn get(&self, key: &str) -> Option<String> {
        let flag = format!("--{key}");
        if let Some(i) = self.0.iter().position(|a| *a == flag) {
            return self.0.get(i + 1).cloned();
        }
        std::env::var(key.to_uppercase().replace('-', "_")).ok()
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.iter().any(|a| *a == format!("--{key}"))
    }

    pub fn str(&self, key: &str, default: &str) -> String {
        self.get(key).unwrap_or_else(|| default.to_owned())
    }

    /// A duration in milliseconds (`--hold-ms 45000`).
    pub fn ms(&self, key: &str, default: u64) -> Duration {
        Duration::from_millis(self.get(key).and_then(|v| v.parse().ok()).unwrap_or(default))
    }
}

/// Prints one line and flushes, so a test reading stdout sees it at once.
pub fn say(line: impl std::fmt::Display) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Blocks until `pollable` is ready or `timeout` passes; true if ready.
pub fn wait(pollable: &wasip2::io::poll::Pollable, timeout: Duration) -> bool {
    let timer = wasip2::clocks::monotonic_clock::subscribe_duration(timeout.as_nanos() as u64);
    let ready = wasip2::io::poll::poll(&[pollable, &timer]);
    ready.contains(&0)
}

/// Milliseconds on the monotonic clock.
pub fn now() -> Duration {
    Duration::from_nanos(wasip2::clocks::monotonic_clock::now())
}

/// Sleeps on the monotonic clock.
pub fn sleep(d: Duration) {
    wasip2::clocks::monotonic_clock::subscribe_duration(d.as_nanos() as u64).block();
}

/// `POST base+path` with no body over wasi:http; the status code.
pub fn post(base: &str, path: &str) -> Result<u16, String> {
    use wasip2::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
    let authority = base.strip_prefix("http://").ok_or("only http:// URLs")?;
    let request = OutgoingRequest::new(Fields::new());
    let set = request
        .set_method(&Method::Post)
        .and_then(|()| request.set_scheme(Some(&Scheme::Http)))
        .and_then(|()| request.set_authority(Some(authority)))
        .and_then(|()| request.set_path_with_query(Some(path)));
    set.map_err(|()| format!("cannot address {base}{path}"))?;
    let body = request.body().map_err(|()| "no body")?;
    let pending = wasip2::http::outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    match pending.get() {
        Some(Ok(Ok(response))) => Ok(response.status()),
        other => Err(format!("{base}{path}: {other:?}")),
    }
}
