//! One lease, driven from inside the guest: `mpsync_core`'s state machine,
//! fed by blocking `wasi:http` requests and the `wasi:clocks` monotonic
//! clock. It renews only when the app calls in (every call first catches up
//! on due renewals of every lease this component holds) and while a
//! blocking call of this component waits.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::time::Duration;

use mpsync_core::lease::{Output, Request, Response};
use mpsync_core::wire::{AcquireRequest, ConflictView, ErrorBody, Kind, LeaseView, ReleaseRequest};
use mpsync_core::{LeaseClient, LeaseConfig};
use wasip2::clocks::monotonic_clock;
use wasip2::http::types::Method;

use crate::http;

/// The default lease duration.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// The longest one long-poll slice waits.
const POLL_SLICE: Duration = Duration::from_secs(30);

/// Errors, as the WIT `error` variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    HeldBy(String),
    Timeout,
    NotHeld,
    InvalidName(String),
    InvalidOption(String),
    Unavailable(String),
}

/// A leader as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub id: String,
    pub address: Option<String>,
    pub token: u64,
}

pub struct Lease {
    pub kind: Kind,
    pub name: String,
    pub holder: String,
    pub ttl: Duration,
    address: Option<String>,
    base: String,
    machine: RefCell<LeaseClient>,
    version: Cell<u64>,
    leader: RefCell<Option<Leader>>,
}

thread_local! {
    static LEASES: RefCell<Vec<Weak<Lease>>> = const { RefCell::new(Vec::new()) };
    static NEXT_ID: Cell<u64> = const { Cell::new(0) };
}

fn now() -> Duration {
    Duration::from_nanos(monotonic_clock::now())
}

/// A default holder id: unique per component instance.
pub fn default_holder() -> String {
    let n = NEXT_ID.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    let seed = wasip2::random::random::get_random_u64();
    format!("guest-{seed:016x}-{n}")
}

/// Catches up on due renewals of every live lease (and forgets dead ones).
pub fn tick_all() {
    let live: Vec<Rc<Lease>> = LEASES.with(|l| {
        l.borrow_mut().retain(|w| w.strong_count() > 0);
        l.borrow().iter().filter_map(Weak::upgrade).collect()
    });
    for lease in live {
        lease.tick();
    }
}

/// When the next renewal (or deadline) of any lease is due.
fn next_due() -> Option<Duration> {
    LEASES.with(|l| l.borrow().iter().filter_map(Weak::upgrade).filter_map(|x| x.machine.borrow().poll_timeout()).min())
}

impl Lease {
    pub fn open(
        kind: Kind,
        name: &str,
        ttl_ms: Option<u64>,
        holder: Option<String>,
        address: Option<String>,
    ) -> Result<Rc<Lease>, Error> {
        mpsync_core::validate_name(name).map_err(|e| Error::InvalidName(format!("{name:?}: {e}")))?;
        let holder = holder.unwrap_or_else(default_holder);
        let ttl = ttl_ms.map_or(DEFAULT_TTL, Duration::from_millis);
        let check = AcquireRequest::new(&holder, ttl, None, address.as_deref());
        check.validate(kind).map_err(|e| Error::InvalidOption(format!("{}: {}", e.field, e.message)))?;
        let machine = LeaseClient::new(LeaseConfig::new(ttl)).map_err(|e| Error::InvalidOption(e.to_string()))?;
        let lease = Rc::new(Lease {
            kind,
            name: name.to_owned(),
            holder,
            ttl,
            address,
            base: http::elector_url(),
            machine: RefCell::new(machine),
            version: Cell::new(0),
            leader: RefCell::new(None),
        });
        LEASES.with(|l| l.borrow_mut().push(Rc::downgrade(&lease)));
        Ok(lease)
    }

    fn path(&self) -> String {
        format!("/v1/{}/{}", self.kind.plural(), self.name)
    }

    fn request_timeout(&self) -> Duration {
        (self.ttl / 5).max(Duration::from_millis(5))
    }

    /// Sends what the state machine asks for; returns its events and the
    /// last conflict or transport error seen.
    fn drive(&self) -> (Vec<Output>, Option<Result<ConflictView, String>>) {
        let mut events = Vec::new();
        let mut problem = None;
        loop {
            let next = self.machine.borrow_mut().poll_output();
            let Some(output) = next else { break };
            let Output::Send { id, request } = output else {
                events.push(output);
                continue;
            };
            let token = match request {
                Request::Acquire => None,
                Request::Renew { token } => Some(token),
                Request::Release { token } => {
                    let body =
                        serde_json::to_vec(&ReleaseRequest { holder: self.holder.clone(), token }).unwrap_or_default();
                    let _ =
                        http::request(Method::Delete, &self.base, &self.path(), Some(&body), self.request_timeout());
                    continue;
                }
            };
            let body = AcquireRequest::new(&self.holder, self.ttl, token, self.address.as_deref());
            let bytes = serde_json::to_vec(&body).unwrap_or_default();
            let response =
                match http::request(Method::Put, &self.base, &self.path(), Some(&bytes), self.request_timeout()) {
                    Ok(reply) if reply.status == 200 => match serde_json::from_slice::<LeaseView>(&reply.body) {
                        Ok(view) => {
                            self.version.set(view.version);
                            if self.kind == Kind::Election {
                                *self.leader.borrow_mut() =
                                    Some(Leader { id: view.holder, address: view.address, token: view.token });
                            }
                            Response::Granted { token: view.token, version: view.version }
                        }
                        Err(e) => {
                            problem = Some(Err(format!("elector at {}: bad answer: {e}", self.base)));
                            Response::Failed
                        }
                    },
                    Ok(reply) if reply.status == 409 => {
                        if let Ok(conflict) = serde_json::from_slice::<ConflictView>(&reply.body) {
                            self.version.set(conflict.version);
                            problem = Some(Ok(conflict));
                        }
                        Response::Refused
                    }
                    Ok(reply) => {
                        problem =
                            Some(Err(format!("elector at {}{} answered {}", self.base, self.path(), reply.status)));
                        Response::Failed
                    }
                    Err(e) => {
                        problem = Some(Err(e));
                        Response::Failed
                    }
                };
            self.machine.borrow_mut().handle_response(id, response, now());
        }
        (events, problem)
    }

    /// Lets time pass: renews when due, notices loss at the deadline.
    pub fn tick(&self) {
        self.machine.borrow_mut().handle_timeout(now());
        self.drive();
    }

    pub fn held(&self) -> Option<mpsync_core::lease::Held> {
        self.machine.borrow().lease(now())
    }

    pub fn try_acquire(&self) -> Result<mpsync_core::lease::Held, Error> {
        tick_all();
        if let Some(held) = self.held() {
            return Ok(held);
        }
        let _ = self.machine.borrow_mut().release();
        self.machine.borrow_mut().acquire(now()).map_err(|e| Error::InvalidOption(e.to_string()))?;
        let (events, problem) = self.drive();
        if events.iter().any(|e| matches!(e, Output::Acquired { .. })) {
            return self.held().ok_or(Error::NotHeld);
        }
        Err(match problem {
            Some(Ok(conflict)) => {
                if self.kind == Kind::Election {
                    self.read_leader();
                }
                Error::HeldBy(conflict.holder.unwrap_or_default())
            }
            Some(Err(reason)) => Error::Unavailable(reason),
            None => Error::Unavailable(format!("elector at {} did not grant the lease in time", self.base)),
        })
    }

    /// Blocks until acquired or `timeout`; long-polls in slices short enough
    /// to renew every other lease of this component on time.
    pub fn acquire(&self, timeout: Duration) -> Result<mpsync_core::lease::Held, Error> {
        let deadline = now() + timeout;
        loop {
            match self.try_acquire() {
                Ok(held) => return Ok(held),
                Err(Error::HeldBy(_)) => {}
                Err(Error::Unavailable(reason)) if now() + self.ttl / 10 >= deadline => {
                    return Err(Error::Unavailable(reason));
                }
                Err(Error::Unavailable(_)) => {
                    monotonic_clock::subscribe_duration((self.ttl / 10).as_nanos() as u64).block();
                    continue;
                }
                Err(e) => return Err(e),
            }
            let t = now();
            if t >= deadline {
                return Err(Error::Timeout);
            }
            let mut slice = (deadline - t).min(POLL_SLICE);
            if let Some(due) = next_due() {
                slice = slice.min(due.saturating_sub(t)).max(Duration::from_millis(1));
            }
            // Wakes when the record changes (released, taken over) or the
            // lease it shows runs out.
            let _ = self.read(Some((self.version.get(), slice)));
        }
    }

    /// GET, or a long-poll; notes the version and (elections) the leader.
    fn read(&self, wait: Option<(u64, Duration)>) -> Result<Option<LeaseView>, Error> {
        let (path, timeout) = match wait {
            Some((v, t)) => {
                (format!("{}?wait={v}&timeout_ms={}", self.path(), t.as_millis()), t + Duration::from_secs(5))
            }
            None => (self.path(), self.request_timeout().max(Duration::from_secs(1))),
        };
        let reply = http::request(Method::Get, &self.base, &path, None, timeout).map_err(Error::Unavailable)?;
        let view = match reply.status {
            200 => serde_json::from_slice::<LeaseView>(&reply.body).ok(),
            404 => {
                if let Ok(e) = serde_json::from_slice::<ErrorBody>(&reply.body) {
                    self.version.set(e.version.unwrap_or(0));
                }
                None
            }
            s => return Err(Error::Unavailable(format!("elector at {}{path} answered {s}", self.base))),
        };
        if let Some(v) = &view {
            self.version.set(v.version);
        }
        if self.kind == Kind::Election {
            *self.leader.borrow_mut() =
                view.as_ref().map(|v| Leader { id: v.holder.clone(), address: v.address.clone(), token: v.token });
        }
        Ok(view)
    }

    fn read_leader(&self) {
        let _ = self.read(None);
    }

    pub fn release(&self) -> Result<(), Error> {
        tick_all();
        if self.machine.borrow_mut().release().is_none() {
            return Err(Error::NotHeld);
        }
        self.drive();
        *self.leader.borrow_mut() = None;
        Ok(())
    }

    /// Elections: the leader, read fresh unless this candidate leads.
    pub fn leader(&self) -> Option<Leader> {
        tick_all();
        if self.held().is_none() {
            self.read_leader();
        }
        self.leader.borrow().clone()
    }

    /// A pollable ready at the next moment this lease's state can change
    /// without the app: its renewal (the app should call in) or its
    /// deadline; when not held, after a short interval (re-check then).
    pub fn next_wake(&self) -> wasip2::io::poll::Pollable {
        tick_all();
        match self.machine.borrow().poll_timeout() {
            Some(at) => monotonic_clock::subscribe_instant(at.as_nanos() as u64),
            None => monotonic_clock::subscribe_duration((self.ttl / 4).as_nanos() as u64),
        }
    }
}
