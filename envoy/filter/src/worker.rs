//! What one Envoy worker knows: its table of elections, each with what its
//! requests get, kept current by the root's watch and by held requests,
//! and Envoy's shared data, where every worker publishes what it learns.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use mpsync_core::client::{Read, decode_read};
use mpsync_core::route::{Decision, Leader, Mode, decide};
use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::metrics::{Metrics, bump};

fn leader_key(name: &str) -> String {
    format!("mpsync.leader.{name}")
}

/// What is known of one election, as published in shared data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Seen {
    pub(crate) version: u64,
    pub(crate) id: Option<String>,
    pub(crate) address: Option<String>,
    pub(crate) token: u64,
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

    /// From a read of the record (a long-poll's answer, or one record of a
    /// watch's answer).
    pub(crate) fn from_read(read: Read) -> Seen {
        match read {
            Read::Held(l) => Seen { version: l.version, id: Some(l.holder), address: l.address, token: l.token },
            Read::Free { version } => Seen { version, id: None, address: None, token: 0 },
        }
    }

    /// The view's version and its holder's token (`None`: nobody holds
    /// it), as the watch records what is known.
    pub(crate) fn as_view(&self) -> (u64, Option<u64>) {
        (self.version, self.id.as_ref().map(|_| self.token))
    }

    /// From an elector answer: 200 with a lease, or 404 with the version.
    pub(crate) fn from_answer(status: Option<&str>, body: Option<Vec<u8>>) -> Option<Seen> {
        let status = status?.parse().ok()?;
        Some(Seen::from_read(decode_read(status, &body.unwrap_or_default()).ok()?))
    }
}

fn read_seen(name: &str) -> Option<Seen> {
    let (bytes, _) = hostcalls::get_shared_data(&leader_key(name)).ok()?;
    serde_json::from_slice(&bytes?).ok()
}

/// Publishes `seen` unless something newer is there; true when the leader
/// (id or token) changed.
pub(crate) fn publish(name: &str, seen: &Seen) -> bool {
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

/// What a worker does with an election's requests, decided once per change
/// of what it knows, with every header value ready: the request path only
/// looks it up and writes headers.
#[derive(Debug, Clone)]
pub(crate) enum Prepared {
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
pub(crate) struct Known {
    pub(crate) seen: Seen,
    pub(crate) prepared: Prepared,
}

/// Per worker (each Envoy worker runs its own instance of the filter),
/// shared by its root context and its requests.
pub(crate) struct Worker {
    pub(crate) config: Config,
    pub(crate) metrics: Metrics,
    /// The fixed election's name, when there is one (no copy per request).
    pub(crate) fixed: Option<Rc<str>>,
    /// What this worker knows of each election in use: its root's watch
    /// (and held requests) keep it current, so a request reads no shared
    /// data.
    pub(crate) known: RefCell<HashMap<Rc<str>, Known>>,
    /// Requests routed since the counter was last flushed (every tick): a
    /// metric call per request would cost more than the rest of the path.
    pub(crate) routed: Cell<u64>,
    /// The elections this worker's requests have used: its root watches
    /// them (new ones from the next tick on).
    watched: RefCell<HashSet<Rc<str>>>,
    to_watch: RefCell<Vec<Rc<str>>>,
    /// Where a sharded request's election name is written (reused: no
    /// allocation per request).
    pub(crate) name: RefCell<String>,
}

impl Worker {
    pub(crate) fn new(config: Config, metrics: Metrics) -> Worker {
        let fixed = match &config.election {
            crate::config::Election::Fixed(name) => Some(Rc::from(name.as_str())),
            crate::config::Election::Sharded { .. } => None,
        };
        Worker {
            config,
            metrics,
            fixed,
            known: RefCell::new(HashMap::new()),
            routed: Cell::new(0),
            watched: RefCell::new(HashSet::new()),
            to_watch: RefCell::new(Vec::new()),
            name: RefCell::new(String::new()),
        }
    }

    /// Takes `seen` for `name` unless this worker knows something newer.
    pub(crate) fn learn(&self, name: &str, seen: Seen) {
        if self.known.borrow().get(name).is_some_and(|k| !seen.supersedes(&k.seen)) {
            return;
        }
        self.take(name, seen);
    }

    /// Takes `seen` for `name`, whatever this worker knew.
    fn take(&self, name: &str, seen: Seen) {
        let mut known = self.known.borrow_mut();
        let prepared = self.prepare(&seen);
        if let Prepared::Disallowed = prepared {
            log::warn!("leader filter: election {name}: leader address {:?} is not allowed; refusing", seen.address);
        }
        known.insert(Rc::from(name), Known { seen, prepared });
    }

    /// What the root's watch heard of `name`: published for the other
    /// workers, counted and logged if the leader changed, and taken here
    /// as is: the watch keeps only news, and believes an older version
    /// only when an elector that restarted without its state insists on
    /// it, which this worker must then follow too.
    pub(crate) fn heard(&self, name: &str, seen: Seen) {
        if publish(name, &seen) {
            bump(self.metrics.leader_changes);
            log::info!("leader filter: election {name}: leader {:?} (token {})", seen.id, seen.token);
        }
        self.take(name, seen);
    }

    pub(crate) fn prepare(&self, seen: &Seen) -> Prepared {
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
    pub(crate) fn prepared(&self, name: &str) -> Option<Prepared> {
        if let Some(k) = self.known.borrow().get(name) {
            return Some(k.prepared.clone());
        }
        let seen = read_seen(name)?;
        self.learn(name, seen);
        self.known.borrow().get(name).map(|k| k.prepared.clone())
    }

    /// What this worker knows of `name`, from its own table or shared
    /// data, as its version and holder's token: where the root's watch takes it up.
    pub(crate) fn known_view(&self, name: &str) -> Option<(u64, Option<u64>)> {
        let known = self.known.borrow().get(name).map(|k| k.seen.as_view());
        known.or_else(|| read_seen(name).map(|s| s.as_view()))
    }

    /// Has this worker's root watch `name` from the next tick on; false
    /// when it watches `max_elections` already (a shard key is client input,
    /// and each election watched costs the elector a name in the watch).
    pub(crate) fn watch(&self, name: &str) -> bool {
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

    /// Has the root take up what a held request's own long-poll learnt of
    /// `name` (an election this worker watches), so that its watch does not
    /// bring it again.
    pub(crate) fn learnt(&self, name: &Rc<str>) {
        if self.watched.borrow().contains(name) {
            self.to_watch.borrow_mut().push(name.clone());
        }
    }

    /// The elections first used, or learnt of by held requests, since the
    /// last call.
    pub(crate) fn take_to_watch(&self) -> Vec<Rc<str>> {
        std::mem::take(&mut self.to_watch.borrow_mut())
    }

    pub(crate) fn flush_routed(&self) {
        let n = self.routed.take();
        if n > 0 {
            let _ = hostcalls::increment_metric(self.metrics.routed, n as i64);
        }
    }
}
