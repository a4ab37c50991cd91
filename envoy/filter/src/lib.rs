//! `leader-filter`: an Envoy HTTP filter (proxy-wasm) that sends traffic
//! only to the current leader of a metaparticle-sync election.
//!
//! - The root context of each worker long-polls the elector
//!   (`GET /v1/elections/{name}?wait=VERSION`) for every election in use and
//!   publishes what it learns in Envoy's shared data, so every worker sees a
//!   leader change the moment the elector reports it. A request never waits
//!   on a call-out while the leader is known.
//! - A request for an election with no known leader is paused; it long-polls
//!   the elector itself and resumes the moment a leader appears, or gets a
//!   503 with `retry-after` when `hold_ms` runs out.
//! - What to do with a request is `mpsync_core::route::decide`: route to the
//!   leader (gateway), pass or refuse (sidecar), never to an address outside
//!   the allowlist.
//!
//! Modules: [`config`] (the JSON configuration, checked in `on_configure`).

#![allow(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod config;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use config::{Config, Election, ShardSource};
use mpsync_core::client::{Read, decode_read, read_request};
use mpsync_core::route::{Decision, Leader, Mode, decide};
use mpsync_core::wire::Kind;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType, Status};
use serde::{Deserialize, Serialize};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// The header an ORIGINAL_DST cluster routes by. Envoy does not strip it
/// from clients, so the filter always overwrites or removes it.
const DST_HOST: &str = "x-envoy-original-dst-host";
const TRACKED: &str = "mpsync.tracked";
const TICK: Duration = Duration::from_millis(100);

fn leader_key(name: &str) -> String {
    format!("mpsync.leader.{name}")
}

/// What is known of one election, as published in shared data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    version: u64,
    id: Option<String>,
    address: Option<String>,
    token: u64,
}

impl Seen {
    fn leader(&self) -> Option<Leader> {
        self.id.as_ref().map(|id| Leader { id: id.clone(), address: self.address.clone(), token: self.token })
    }

    /// Replaces `old`: a later version, or the same record seen free after
    /// its lease ran out (the elector reports that without a new version).
    fn supersedes(&self, old: &Seen) -> bool {
        mpsync_core::route::supersedes(self.version, self.id.is_some(), old.version, old.id.is_some())
    }

    /// From an elector answer: 200 with a lease, or 404 with the version.
    fn from_answer(status: Option<&str>, body: Option<Vec<u8>>) -> Option<Seen> {
        let status = status?.parse().ok()?;
        Some(match decode_read(status, &body.unwrap_or_default()).ok()? {
            Read::Held(l) => Seen { version: l.version, id: Some(l.holder), address: l.address, token: l.token },
            Read::Free { version } => Seen { version, id: None, address: None, token: 0 },
        })
    }
}

fn read_seen(name: &str) -> Option<Seen> {
    let (bytes, _) = hostcalls::get_shared_data(&leader_key(name)).ok()?;
    serde_json::from_slice(&bytes?).ok()
}

thread_local! {
    /// This worker's last decoded copy of each election's shared data:
    /// requests decode only when the bytes changed.
    static DECODED: RefCell<HashMap<String, (Vec<u8>, Seen)>> = RefCell::new(HashMap::new());
}

/// `read_seen` for the request path.
fn read_seen_cached(name: &str) -> Option<Seen> {
    let bytes = hostcalls::get_shared_data(&leader_key(name)).ok()?.0?;
    DECODED.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((raw, seen)) = cache.get(name)
            && *raw == bytes
        {
            return Some(seen.clone());
        }
        let seen: Seen = serde_json::from_slice(&bytes).ok()?;
        cache.insert(name.to_owned(), (bytes, seen.clone()));
        Some(seen)
    })
}

/// Publishes `seen` unless something newer is there; true when the leader
/// (id or token) changed.
fn publish(name: &str, seen: &Seen) -> bool {
    let key = leader_key(name);
    let Ok(json) = serde_json::to_vec(seen) else { return false };
    for _ in 0..8 {
        let Ok((bytes, cas)) = hostcalls::get_shared_data(&key) else { return false };
        let old: Option<Seen> = bytes.and_then(|b| serde_json::from_slice(&b).ok());
        if old.as_ref().is_some_and(|o| !seen.supersedes(o)) {
            return false;
        }
        match hostcalls::set_shared_data(&key, Some(&json), cas) {
            Ok(()) => return old.is_none_or(|o| (o.id, o.token) != (seen.id.clone(), seen.token)),
            Err(Status::CasMismatch) => continue,
            Err(_) => return false,
        }
    }
    false
}

/// Adds an election to the set every worker watches.
fn track(name: &str) {
    for _ in 0..8 {
        let Ok((bytes, cas)) = hostcalls::get_shared_data(TRACKED) else { return };
        let mut names = String::from_utf8(bytes.unwrap_or_default()).unwrap_or_default();
        if names.lines().any(|n| n == name) {
            return;
        }
        names.push_str(name);
        names.push('\n');
        match hostcalls::set_shared_data(TRACKED, Some(names.as_bytes()), cas) {
            Err(Status::CasMismatch) => continue,
            _ => return,
        }
    }
}

fn tracked() -> Vec<String> {
    let bytes = hostcalls::get_shared_data(TRACKED).ok().and_then(|(b, _)| b).unwrap_or_default();
    String::from_utf8_lossy(&bytes).lines().map(str::to_owned).collect()
}

#[derive(Clone, Copy)]
struct Metrics {
    routed: u32,
    held: u32,
    released_after_hold: u32,
    no_leader: u32,
    rejected_address: u32,
    leader_changes: u32,
}

impl Metrics {
    fn define() -> Result<Metrics, Status> {
        let m = |name: &str| hostcalls::define_metric(MetricType::Counter, &format!("leader_filter.{name}"));
        Ok(Metrics {
            routed: m("routed")?,
            held: m("held")?,
            released_after_hold: m("released_after_hold")?,
            no_leader: m("no_leader")?,
            rejected_address: m("rejected_address")?,
            leader_changes: m("leader_changes")?,
        })
    }
}

fn bump(metric: u32) {
    let _ = hostcalls::increment_metric(metric, 1);
}

struct Shared {
    config: Config,
    metrics: Metrics,
}

impl Shared {
    fn dispatch_wait(&self, ctx: &dyn Context, name: &str, version: u64, wait_ms: u64) -> Result<u32, Status> {
        let wait = Some((version, Duration::from_millis(wait_ms)));
        let request = read_request(Kind::Election, name, wait, Duration::ZERO);
        ctx.dispatch_http_call(
            &self.config.cluster,
            vec![
                (":method", request.method.as_str()),
                (":path", &request.path),
                (":authority", &self.config.authority),
            ],
            None,
            vec![],
            request.timeout,
        )
    }
}

#[derive(Default)]
struct Root {
    shared: Option<Rc<Shared>>,
    polls: HashMap<u32, String>,
    in_flight: HashSet<String>,
}

impl Root {
    fn poll(&mut self, name: &str) {
        let Some(shared) = self.shared.clone() else { return };
        let version = read_seen(name).map_or(0, |s| s.version);
        match shared.dispatch_wait(self, name, version, shared.config.poll_timeout_ms) {
            Ok(token) => {
                self.polls.insert(token, name.to_owned());
                self.in_flight.insert(name.to_owned());
            }
            Err(e) => log::warn!("leader filter: cannot call the elector cluster {:?}: {e:?}", shared.config.cluster),
        }
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let Some(name) = self.polls.remove(&token) else { return };
        self.in_flight.remove(&name);
        let status = self.get_http_call_response_header(":status");
        let body = self.get_http_call_response_body(0, body_size);
        match Seen::from_answer(status.as_deref(), body) {
            Some(seen) => {
                if publish(&name, &seen) {
                    if let Some(shared) = &self.shared {
                        bump(shared.metrics.leader_changes);
                    }
                    log::info!("leader filter: election {name}: leader {:?} (token {})", seen.id, seen.token);
                }
                // Watch on at once; a failed call is retried on the next tick.
                self.poll(&name);
            }
            None => log::warn!("leader filter: election {name}: the elector answered {status:?}; retrying"),
        }
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
        if let Election::Fixed(name) = &config.election {
            track(name);
        }
        self.shared = Some(Rc::new(Shared { config, metrics }));
        self.set_tick_period(TICK);
        true
    }

    fn on_tick(&mut self) {
        for name in tracked() {
            if !self.in_flight.contains(&name) {
                self.poll(&name);
            }
        }
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.clone()?;
        Some(Box::new(Request {
            shared,
            election: String::new(),
            hold_until: None,
            version: 0,
            waiting: RefCell::new(None),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    shared: Rc<Shared>,
    election: String,
    hold_until: Option<SystemTime>,
    version: u64,
    waiting: RefCell<Option<u32>>,
}

impl Request {
    fn reply(&self, status: u32, message: &str, extra: Vec<(&str, &str)>) -> Action {
        let body = serde_json::json!({"error": message}).to_string();
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(extra);
        self.send_http_response(status, headers, Some(body.as_bytes()));
        Action::Pause
    }

    fn no_leader(&self) -> Action {
        bump(self.shared.metrics.no_leader);
        let retry = (self.shared.config.hold_ms.div_ceil(1000)).max(1).to_string();
        let message = format!("no leader for election {}", self.election);
        self.reply(503, &message, vec![("retry-after", &retry)])
    }

    /// Applies the routing decision for `seen`; `Pause` when the request
    /// was answered here or is held.
    fn route(&mut self, seen: Option<&Seen>) -> Action {
        let config = &self.shared.config;
        let leader = seen.and_then(Seen::leader);
        match decide(leader.as_ref(), &config.mode, &config.allow) {
            Decision::Route { address, id, token } => {
                self.set_http_request_header(DST_HOST, Some(&address.to_string()));
                self.stamp(&id, token);
                Action::Continue
            }
            Decision::Pass { id, token } => {
                // A forwarding sidecar routes through ORIGINAL_DST: on the
                // leader, that destination is the local replica itself.
                // Otherwise, whatever the client sent must not travel on.
                let own = match &config.mode {
                    Mode::Sidecar { self_address, forward: true } => Some(self_address.to_string()),
                    _ => None,
                };
                self.set_http_request_header(DST_HOST, own.as_deref());
                self.stamp(&id, token);
                Action::Continue
            }
            Decision::NotLeader { id } => {
                let message = format!("this replica is not the leader of {}; {id} is", self.election);
                self.reply(503, &message, vec![(config.leader_id_header.as_str(), id.as_str())])
            }
            Decision::Disallowed { address } => {
                bump(self.shared.metrics.rejected_address);
                log::warn!(
                    "leader filter: election {}: leader address {address:?} is not allowed; refusing",
                    self.election
                );
                self.reply(
                    503,
                    &format!("the leader of {} advertises an address that is not allowed", self.election),
                    vec![],
                )
            }
            Decision::NoLeader => self.hold(seen.map_or(0, |s| s.version)),
        }
    }

    fn stamp(&self, id: &str, token: u64) {
        bump(self.shared.metrics.routed);
        self.set_http_request_header(&self.shared.config.leader_id_header, Some(id));
        self.set_http_request_header(&self.shared.config.leader_token_header, Some(&token.to_string()));
    }

    /// Pauses the request and long-polls the elector until `hold_until`.
    fn hold(&mut self, version: u64) -> Action {
        let now = self.get_current_time();
        let until = *self.hold_until.get_or_insert_with(|| {
            bump(self.shared.metrics.held);
            now + Duration::from_millis(self.shared.config.hold_ms)
        });
        let left = until.duration_since(now).unwrap_or_default();
        if left.is_zero() {
            return self.no_leader();
        }
        self.version = version;
        match self.shared.dispatch_wait(self, &self.election, version, left.as_millis() as u64) {
            Ok(token) => {
                *self.waiting.borrow_mut() = Some(token);
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
        if self.waiting.borrow_mut().take() != Some(token) {
            return;
        }
        let status = self.get_http_call_response_header(":status");
        let body = self.get_http_call_response_body(0, body_size);
        let Some(seen) = Seen::from_answer(status.as_deref(), body) else {
            self.reply(503, "the elector cannot be reached", vec![("retry-after", "1")]);
            return;
        };
        publish(&self.election, &seen);
        if seen.id.is_none() {
            // Still no leader: wait for the next change, or give up (503).
            self.hold(seen.version);
            return;
        }
        if self.route(Some(&seen)) == Action::Continue {
            bump(self.shared.metrics.released_after_hold);
            self.resume_http_request();
        }
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        // A client's x-envoy-original-dst-host never decides the route: every
        // path below either overwrites it (route, forward), removes it (pass),
        // or answers locally (refuse, hold then refuse).
        let config = &self.shared.config;
        let election = match config.election {
            Election::Fixed(ref name) => Ok(name.clone()),
            Election::Sharded { source: ShardSource::PathSegment(_), .. } => {
                let path = self.get_http_request_header(":path").unwrap_or_default();
                config.election_for(|h| self.get_http_request_header(h), &path)
            }
            Election::Sharded { source: ShardSource::Header(_), .. } => {
                config.election_for(|h| self.get_http_request_header(h), "")
            }
        };
        self.election = match election {
            Ok(name) => name,
            Err(message) => return self.reply(400, &message, vec![]),
        };
        let seen = read_seen_cached(&self.election);
        if seen.is_none() {
            track(&self.election);
        }
        self.route(seen.as_ref())
    }
}
