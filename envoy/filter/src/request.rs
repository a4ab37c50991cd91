//! A request's context: routes it by what its worker knows, or holds it
//! on a long-poll of its own while its election has no known leader.

use std::rc::Rc;
use std::time::{Duration, SystemTime};

use mpsync_core::client::read_request;
use mpsync_core::wire::Kind;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, Status};

use crate::config::{Election, ShardSource, Template};
use crate::metrics::bump;
use crate::worker::{Known, Prepared, Seen, Worker, publish};

/// The header an ORIGINAL_DST cluster routes by. Envoy does not strip it
/// from clients, so the filter always overwrites or removes it.
const DST_HOST: &str = "x-envoy-original-dst-host";

pub(crate) struct Request {
    worker: Rc<Worker>,
    election: Rc<str>,
    hold_until: Option<SystemTime>,
    /// The long-poll a held request waits on.
    waiting: Option<u32>,
}

impl Request {
    pub(crate) fn new(worker: Rc<Worker>) -> Request {
        Request { worker, election: Rc::from(""), hold_until: None, waiting: None }
    }

    fn reply(&self, status: u32, message: &str, extra: Vec<(&str, &str)>) -> Action {
        let body = serde_json::json!({"error": message}).to_string();
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(extra);
        self.send_http_response(status, headers, Some(body.as_bytes()));
        Action::Pause
    }

    fn no_leader(&self) -> Action {
        bump(self.worker.metrics.no_leader);
        let retry = (self.worker.config.hold_ms.div_ceil(1000)).max(1).to_string();
        let message = format!("no leader for election {}", self.election);
        self.reply(503, &message, vec![("retry-after", &retry)])
    }

    /// Writes the leader's headers: the request goes on.
    fn forward(&self, dst: Option<&str>, id: &str, token: &str) -> Action {
        let config = &self.worker.config;
        self.set_http_request_header(DST_HOST, dst);
        if let Some(h) = &config.leader_id_header {
            self.set_http_request_header(h, Some(id));
        }
        if let Some(h) = &config.leader_token_header {
            self.set_http_request_header(h, Some(token));
        }
        self.worker.routed.set(self.worker.routed.get() + 1);
        Action::Continue
    }

    /// Applies `prepared` (`None`: nothing known yet); `Pause` when the
    /// request was answered here or is held.
    fn apply(&mut self, prepared: Option<Prepared>) -> Action {
        match prepared {
            Some(Prepared::Forward { dst, id, token }) => self.forward(dst.as_deref(), &id, &token),
            Some(Prepared::NotLeader { id }) => {
                let message = format!("this replica is not the leader of {}; {id} is", self.election);
                let extra = match &self.worker.config.leader_id_header {
                    Some(h) => vec![(h.as_str(), id.as_str())],
                    None => vec![],
                };
                self.reply(503, &message, extra)
            }
            Some(Prepared::Disallowed) => {
                bump(self.worker.metrics.rejected_address);
                let message = format!("the leader of {} advertises an address that is not allowed", self.election);
                self.reply(503, &message, vec![])
            }
            Some(Prepared::NoLeader { version }) => self.hold(version),
            None => self.hold(0),
        }
    }

    /// The request's own long-poll on its election, from `version`.
    fn dispatch_wait(&self, version: u64, wait_ms: u64) -> Result<u32, Status> {
        let wait = Some((version, Duration::from_millis(wait_ms)));
        let request = read_request(Kind::Election, &self.election, wait, Duration::ZERO);
        self.dispatch_http_call(
            &self.worker.config.cluster,
            vec![
                (":method", request.method.as_str()),
                (":path", &request.path),
                (":authority", &self.worker.config.authority),
            ],
            None,
            vec![],
            request.timeout,
        )
    }

    /// Pauses the request and long-polls the elector until `hold_until`.
    fn hold(&mut self, version: u64) -> Action {
        let now = self.get_current_time();
        let until = *self.hold_until.get_or_insert_with(|| {
            bump(self.worker.metrics.held);
            now + Duration::from_millis(self.worker.config.hold_ms)
        });
        let left = until.duration_since(now).unwrap_or_default();
        if left.is_zero() {
            return self.no_leader();
        }
        match self.dispatch_wait(version, left.as_millis() as u64) {
            Ok(token) => {
                self.waiting = Some(token);
                Action::Pause
            }
            Err(e) => {
                log::warn!("leader filter: cannot call the elector cluster: {e:?}");
                self.reply(503, "the elector cannot be reached", vec![("retry-after", "1")])
            }
        }
    }
}

impl Context for Request {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        if self.waiting.take() != Some(token) {
            return;
        }
        let status = self.get_http_call_response_header(":status");
        let body = self.get_http_call_response_body(0, body_size);
        let Some(seen) = Seen::from_answer(status.as_deref(), body) else {
            self.reply(503, "the elector cannot be reached", vec![("retry-after", "1")]);
            return;
        };
        publish(&self.election, &seen);
        // This answer decides this request (a newer one this worker already
        // knows of decides the next ones).
        let prepared = self.worker.prepare(&seen);
        self.worker.learn(&self.election, seen);
        self.worker.learnt(&self.election);
        if let Prepared::NoLeader { version } = prepared {
            // Still no leader: wait for the next change, or give up (503).
            self.hold(version);
            return;
        }
        if self.apply(Some(prepared)) == Action::Continue {
            bump(self.worker.metrics.released_after_hold);
            self.resume_http_request();
        }
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        // A client's x-envoy-original-dst-host never decides the route: every
        // path below either overwrites it (route, forward), removes it (pass),
        // or answers locally (refuse, hold then refuse).
        let worker = self.worker.clone();
        let config = &worker.config;
        self.election = match (&worker.fixed, &config.election) {
            (Some(name), _) => name.clone(),
            (None, Election::Sharded { source, template }) => {
                let value = match source {
                    ShardSource::Header(h) => self.get_http_request_header_bytes(h),
                    ShardSource::PathSegment(_) => self.get_http_request_header_bytes(":path"),
                };
                let shard = match source.shard(value.as_deref()) {
                    Ok(shard) => shard,
                    Err(message) => return self.reply(400, &message, vec![]),
                };
                // The name is written into the worker's own buffer and
                // looked up as it is: an election this worker knows was
                // checked when it was first met, and its key is shared.
                let mut name = worker.name.borrow_mut();
                template.write(shard, &mut name);
                match worker.known.borrow().get_key_value(name.as_str()) {
                    Some((key, Known { prepared: Prepared::Forward { dst, id, token }, .. })) => {
                        self.election = key.clone();
                        return self.forward(dst.as_deref(), id, token);
                    }
                    Some((key, _)) => key.clone(),
                    None => match Template::check(shard, &name) {
                        Ok(()) => Rc::from(name.as_str()),
                        Err(message) => return self.reply(400, &message, vec![]),
                    },
                }
            }
            (None, Election::Fixed(name)) => Rc::from(name.as_str()),
        };
        // The common case: the leader is known here; only headers are written.
        if let Some(Known { prepared: Prepared::Forward { dst, id, token }, .. }) =
            worker.known.borrow().get(&*self.election)
        {
            return self.forward(dst.as_deref(), id, token);
        }
        if !worker.watch(&self.election) {
            bump(worker.metrics.too_many_elections);
            let message = format!(
                "election {} is not watched: this Envoy worker watches max_elections ({}) already",
                self.election, config.max_elections
            );
            return self.reply(503, &message, vec![("retry-after", "60")]);
        }
        let prepared = worker.prepared(&self.election);
        self.apply(prepared)
    }
}
