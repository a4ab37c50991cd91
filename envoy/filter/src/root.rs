//! The root context of each worker: configures the filter, and keeps the
//! worker's table current with one watch over every election the worker's
//! requests use (see [`crate::watch`]).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::rc::Rc;
use std::time::Duration;

use mpsync_core::client::retry_after;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::request::Request;
use crate::watch::Watch;
use crate::worker::{Seen, Worker};

/// How often the root flushes the `routed` counter and sends a watch that
/// grew: a burst of new shards within a tick costs one watch.
const TICK: Duration = Duration::from_millis(100);

pub(crate) struct Root {
    /// This root context's id.
    id: u32,
    worker: Option<Rc<Worker>>,
    watch: Option<Watch>,
    /// Ticks since configured: the watch's clock (monotonic, unlike the
    /// wall clock Envoy offers).
    ticks: u32,
}

impl Root {
    pub(crate) fn new(id: u32) -> Root {
        Root { id, worker: None, watch: None, ticks: 0 }
    }

    fn now(&self) -> Duration {
        TICK * self.ticks
    }

    /// Sends the watch if it is due: with every election followed, each
    /// with what this worker knows of it.
    fn send_watch_if_due(&mut self) {
        let now = self.now();
        let (Some(worker), Some(watch)) = (self.worker.clone(), self.watch.as_mut()) else { return };
        for name in worker.take_to_watch() {
            watch.follow(&name, worker.known_view(&name));
        }
        if !watch.due(now) {
            return;
        }
        let config = &worker.config;
        let request = watch.request(Duration::from_millis(config.poll_timeout_ms));
        let headers = vec![
            (":method", request.method.as_str()),
            (":path", request.path.as_str()),
            (":authority", config.authority.as_str()),
            ("content-type", "application/json"),
        ];
        let sent = self.dispatch_http_call(&config.cluster, headers, request.body.as_deref(), vec![], request.timeout);
        let Some(watch) = self.watch.as_mut() else { return };
        match sent {
            Ok(token) => watch.sent(token),
            Err(e) => {
                let pause = watch.not_sent(now);
                log::warn!(
                    "leader filter: cannot call the elector cluster {:?}: {e:?}; watching again in {pause:?}",
                    config.cluster
                );
            }
        }
    }
}

/// A watcher id unique per worker and Envoy process: each worker's VM
/// numbers its contexts itself (the roots of all workers may share an id),
/// so a random part tells them apart.
fn watcher_id(context_id: u32, random: u64) -> String {
    format!("envoy-{context_id}-{random:016x}")
}

/// Random bits from the entropy the standard library draws for hashing
/// (WASI's `random_get`, which Envoy provides).
fn random_u64() -> u64 {
    RandomState::new().hash_one(0u8)
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let Some(worker) = self.worker.clone() else { return };
        let status = self.get_http_call_response_header(":status").and_then(|s| s.parse().ok());
        let body = self.get_http_call_response_body(0, body_size).unwrap_or_default();
        let wait = self.get_http_call_response_header_bytes("retry-after").and_then(|v| retry_after(&v));
        let now = self.now();
        let Some(watch) = self.watch.as_mut() else { return };
        let answered = watch.answered(token, status, &body, wait, now);
        if let Some((why, pause)) = answered.failed {
            log::warn!(
                "leader filter: the watch of {} elections failed: {why}; watching again in {pause:?}, meanwhile \
                 routing to the leaders known",
                watch.len()
            );
        }
        for (name, news) in answered.news {
            worker.heard(&name, Seen::from_read(news));
        }
        // The answer of the watch in flight sends the next one at once.
        self.send_watch_if_due();
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let config = match Config::parse(&bytes) {
            Ok(config) => config,
            Err(e) => {
                log::error!("leader filter configuration refused: {e} ({size} bytes)");
                return false;
            }
        };
        let metrics = match Metrics::define() {
            Ok(m) => m,
            Err(e) => {
                log::error!("leader filter: cannot define metrics: {e:?}");
                return false;
            }
        };
        let keep = config.keep_watch_set;
        self.worker = Some(Rc::new(Worker::new(config, metrics)));
        let random = random_u64();
        self.watch = Some(Watch::new(&watcher_id(self.id, random), random.rotate_left(32), keep));
        self.set_tick_period(TICK);
        true
    }

    fn on_tick(&mut self) {
        self.ticks = self.ticks.saturating_add(1);
        if let Some(worker) = &self.worker {
            worker.flush_routed();
        }
        self.send_watch_if_due();
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request::new(self.worker.clone()?)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watcher_id_is_one_the_elector_accepts() {
        let id = watcher_id(u32::MAX, u64::MAX);
        assert!(mpsync_core::watch::valid_watcher(&id), "{id}");
        assert_ne!(watcher_id(1, 1), watcher_id(1, 2));
    }
}
