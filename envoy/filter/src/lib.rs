//! `leader-filter`: an Envoy HTTP filter (proxy-wasm) that sends traffic
//! only to the current leader of a metaparticle-sync election.
//!
//! - The root context of each worker keeps one watch on the elector
//!   (`POST /v1/watch`) over every election that worker's requests use,
//!   whatever their number, so it sees a leader change the moment the
//!   elector reports it, and decides then what those requests get (header
//!   values ready to write). It also publishes what it learns in Envoy's
//!   shared data, where a worker meeting an election for the first time
//!   finds it. A request never waits on a call-out while the leader is
//!   known.
//! - A request for an election with no known leader is paused; it long-polls
//!   the elector itself and resumes the moment a leader appears, or gets a
//!   503 with `retry-after` when `hold_ms` runs out.
//! - What to do with a request is `mpsync_core::route::decide`, made once per
//!   change: route to the leader (gateway), pass or refuse (sidecar), never
//!   to an address outside the allowlist.
//!
//! Modules: [`config`] (the JSON configuration, checked in `on_configure`),
//! `worker` (what one worker knows: its table, shared data), `watch` (the
//! worker's one watch, sans-IO), `root` (the root context: configuration,
//! ticks, the watch's bytes), `request` (a request's context), `metrics`
//! (the counters).

#![allow(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod config;
mod metrics;
mod request;
mod root;
mod watch;
mod worker;

use proxy_wasm::traits::RootContext;
use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> { Box::new(root::Root::new(id)) });
}}
