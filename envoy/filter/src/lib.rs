//! `leader-filter`: an Envoy HTTP filter (proxy-wasm) that sends traffic
//! only to the current leader of a metaparticle-sync election.
//!
//! - The root context of each worker long-polls the elector
//!   (`GET /v1/elections/{name}?wait=VERSION`) for every election that
//!   worker's requests use, so it sees a leader change the moment the
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
//! Modules: [`config`] (the JSON configuration, checked in `on_configure`).

#![allow(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod config;

use std::cell::{Cell, RefCell};
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

/// What a worker does with an election's requests, decided once per change
/// of what it knows, with every header value ready: the request path only
/// looks it up and writes headers.
#[derive(Debug, Clone)]
enum Prepared {
    /// Continue upstream with these headers (route to the leader, or pass
    /// on the leader's own sidecar): `dst` is the original-destination
    /// header's new value, or `None` to remove it.
    Forward { dst: Option<String>, id: String, token: String },
    /// Sidecar on a follower, `on_follower: reject`.
    NotLeader { id: String },
    /// The leader advertises an address outside `allow`.
    Disallowed,
    /// No leader: hold, long-polling from `version`.
    NoLeader { version: u64 },
}

/// One election as this worker knows it.
struct Known {
    seen: Seen,
    prepared: Prepared,
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

#[derive(Clone, Copy)]
struct Metrics {
    routed: u32,
    held: u32,
    released_after_hold: u32,
    no_leader: u32,
    rejected_address: u32,
    leader_changes: u32,
    too_many_elections: u32,
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
            too_many_elections: m("too_many_elections")?,
        })
    }
}

fn bump(metric: u32) {
    let _ = hostcalls::increment_metric(metric, 1);
}

/// Per worker (each Envoy worker runs its own instance of the filter).
struct Shared {
    config: Config,
    metrics: Metrics,
    /// The fixed election's name, when there is one (no copy per request).
    fixed: Option<Rc<str>>,
    /// What this worker knows of each election in use: its root's
    /// long-polls (and held requests) keep it current, so a request reads
    /// no shared data.
    known: RefCell<HashMap<Rc<str>, Known>>,
    /// Requests routed since the counter was last flushed (every tick): a
    /// metric call per request would cost more than the rest of the path.
    routed: Cell<u64>,
    /// The elections this worker's requests have used: its root watches
    /// them (new ones from the next tick on).
    watched: RefCell<HashSet<Rc<str>>>,
    to_watch: RefCell<Vec<Rc<str>>>,
}

impl Shared {
    /// Takes `seen` for `name` unless this worker knows something newer.
    fn learn(&self, name: &str, seen: Seen) {
        let mut known = self.known.borrow_mut();
        if known.get(name).is_some_and(|k| !seen.supersedes(&k.seen)) {
            return;
        }
        let prepared = self.prepare(&seen);
        if let Prepared::Disallowed = prepared {
            log::warn!("leader filter: election {name}: leader address {:?} is not allowed; refusing", seen.address);
        }
        known.insert(Rc::from(name), Known { seen, prepared });
    }

    fn prepare(&self, seen: &Seen) -> Prepared {
        let config = &self.config;
        match decide(seen.leader().as_ref(), &config.mode, &config.allow) {
            Decision::Route { address, id, token } => {
                Prepared::Forward { dst: Some(address.to_string()), id, token: token.to_string() }
            }
            Decision::Pass { id, token } => {
                // A forwarding sidecar routes through ORIGINAL_DST: on the
                // leader, that destination is the local replica itself.
                // Otherwise, whatever the client sent must not travel on.
                let dst = match &config.mode {
                    Mode::Sidecar { self_address, forward: true } => Some(self_address.to_string()),
                    _ => None,
                };
                Prepared::Forward { dst, id, token: token.to_string() }
            }
            Decision::NotLeader { id } => Prepared::NotLeader { id },
            Decision::Disallowed { .. } => Prepared::Disallowed,
            Decision::NoLeader => Prepared::NoLeader { version: seen.version },
        }
    }

    /// What to do with a request for `name`, from what this worker knows,
    /// else from shared data (an election another worker tracks already).
    fn prepared(&self, name: &str) -> Option<Prepared> {
        if let Some(k) = self.known.borrow().get(name) {
            return Some(k.prepared.clone());
        }
        let seen = read_seen(name)?;
        self.learn(name, seen);
        self.known.borrow().get(name).map(|k| k.prepared.clone())
    }

    /// Has this worker's root watch `name` from the next tick on; false
    /// when it watches `max_elections` already (a shard key is client input,
    /// and each election watched costs a long-poll).
    fn watch(&self, name: &str) -> bool {
        let mut watched = self.watched.borrow_mut();
        if watched.contains(name) {
            return true;
        }
        if watched.len() >= self.config.max_elections {
            return false;
        }
        let name: Rc<str> = Rc::from(name);
        watched.insert(name.clone());
        self.to_watch.borrow_mut().push(name);
        true
    }

    fn flush_routed(&self) {
        let n = self.routed.take();
        if n > 0 {
            let _ = hostcalls::increment_metric(self.metrics.routed, n as i64);
        }
    }

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
    /// Long-polls in flight, by call token.
    polls: HashMap<u32, Rc<str>>,
    /// Elections whose last poll failed: polled again on the next tick.
    to_poll: Vec<Rc<str>>,
}

impl Root {
    fn poll(&mut self, name: Rc<str>) {
        let Some(shared) = self.shared.clone() else { return };
        let version =
            shared.known.borrow().get(&*name).map(|k| k.seen.version).or_else(|| read_seen(&name).map(|s| s.version));
        match shared.dispatch_wait(self, &name, version.unwrap_or(0), shared.config.poll_timeout_ms) {
            Ok(token) => {
                self.polls.insert(token, name);
            }
            Err(e) => {
                log::warn!("leader filter: cannot call the elector cluster {:?}: {e:?}", shared.config.cluster);
                self.to_poll.push(name);
            }
        }
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let Some(name) = self.polls.remove(&token) else { return };
        let status = self.get_http_call_response_header(":status");
        let body = self.get_http_call_response_body(0, body_size);
        match Seen::from_answer(status.as_deref(), body) {
            Some(seen) => {
                let Some(shared) = self.shared.clone() else { return };
                if publish(&name, &seen) {
                    bump(shared.metrics.leader_changes);
                    log::info!("leader filter: election {name}: leader {:?} (token {})", seen.id, seen.token);
                }
                shared.learn(&name, seen);
                // Watch on at once.
                self.poll(name);
            }
            None => {
                log::warn!("leader filter: election {name}: the elector answered {status:?}; retrying");
                self.to_poll.push(name);
            }
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
        let fixed = match &config.election {
            Election::Fixed(name) => Some(Rc::from(name.as_str())),
            Election::Sharded { .. } => None,
        };
        self.shared = Some(Rc::new(Shared {
            config,
            metrics,
            fixed,
            known: RefCell::new(HashMap::new()),
            routed: Cell::new(0),
            watched: RefCell::new(HashSet::new()),
            to_watch: RefCell::new(Vec::new()),
        }));
        self.set_tick_period(TICK);
        true
    }

    fn on_tick(&mut self) {
        let mut due = std::mem::take(&mut self.to_poll);
        if let Some(shared) = &self.shared {
            shared.flush_routed();
            due.append(&mut shared.to_watch.borrow_mut());
        }
        for name in due {
            self.poll(name);
        }
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.clone()?;
        Some(Box::new(Request { shared, election: Rc::from(""), hold_until: None, waiting: None }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    shared: Rc<Shared>,
    election: Rc<str>,
    hold_until: Option<SystemTime>,
    /// The long-poll a held request waits on.
    waiting: Option<u32>,
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

    /// Writes the leader's headers: the request goes on.
    fn forward(&self, dst: Option<&str>, id: &str, token: &str) -> Action {
        let config = &self.shared.config;
        self.set_http_request_header(DST_HOST, dst);
        if let Some(h) = &config.leader_id_header {
            self.set_http_request_header(h, Some(id));
        }
        if let Some(h) = &config.leader_token_header {
            self.set_http_request_header(h, Some(token));
        }
        self.shared.routed.set(self.shared.routed.get() + 1);
        Action::Continue
    }

    /// Applies `prepared` (`None`: nothing known yet); `Pause` when the
    /// request was answered here or is held.
    fn apply(&mut self, prepared: Option<Prepared>) -> Action {
        match prepared {
            Some(Prepared::Forward { dst, id, token }) => self.forward(dst.as_deref(), &id, &token),
            Some(Prepared::NotLeader { id }) => {
                let message = format!("this replica is not the leader of {}; {id} is", self.election);
                let extra = match &self.shared.config.leader_id_header {
                    Some(h) => vec![(h.as_str(), id.as_str())],
                    None => vec![],
                };
                self.reply(503, &message, extra)
            }
            Some(Prepared::Disallowed) => {
                bump(self.shared.metrics.rejected_address);
                let message = format!("the leader of {} advertises an address that is not allowed", self.election);
                self.reply(503, &message, vec![])
            }
            Some(Prepared::NoLeader { version }) => self.hold(version),
            None => self.hold(0),
        }
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
        match self.shared.dispatch_wait(self, &self.election, version, left.as_millis() as u64) {
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
        let prepared = self.shared.prepare(&seen);
        self.shared.learn(&self.election, seen);
        if let Prepared::NoLeader { version } = prepared {
            // Still no leader: wait for the next change, or give up (503).
            self.hold(version);
            return;
        }
        if self.apply(Some(prepared)) == Action::Continue {
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
        let shared = self.shared.clone();
        let config = &shared.config;
        self.election = match &shared.fixed {
            Some(name) => name.clone(),
            None => {
                let path = match config.election {
                    Election::Sharded { source: ShardSource::PathSegment(_), .. } => {
                        self.get_http_request_header(":path").unwrap_or_default()
                    }
                    _ => String::new(),
                };
                match config.election_for(|h| self.get_http_request_header(h), &path) {
                    Ok(name) => Rc::from(name),
                    Err(message) => return self.reply(400, &message, vec![]),
                }
            }
        };
        // The common case: the leader is known here; only headers are written.
        if let Some(Known { prepared: Prepared::Forward { dst, id, token }, .. }) =
            shared.known.borrow().get(&*self.election)
        {
            return self.forward(dst.as_deref(), id, token);
        }
        if !shared.watch(&self.election) {
            bump(shared.metrics.too_many_elections);
            let message = format!(
                "election {} is not watched: this Envoy worker watches max_elections ({}) already",
                self.election, config.max_elections
            );
            return self.reply(503, &message, vec![("retry-after", "60")]);
        }
        let prepared = shared.prepared(&self.election);
        self.apply(prepared)
    }
}
