//! One lease, driven from inside the guest: `mpsync_core`'s [`Session`],
//! fed by blocking `wasi:http` requests and the `wasi:clocks` monotonic
//! clock. It renews only when the app calls in (every call first catches up
//! on due renewals of every lease this component holds) and while a
//! blocking call of this component waits. A leadership transfer asked of a
//! leader is learned from a renewal's answer, so at such a call too; the
//! session then steps down at once (its release is sent by the same
//! [`Lease::drive`]) unless the app chose to decide.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::time::Duration;

use mpsync_core::client::{
    Acquire, Action, DEFAULT_TTL, ENTROPY_LEN, Error, HttpRequest, Leader, Options, Read, Session, Step, decode_read,
};
use mpsync_core::lease::Held;
use mpsync_core::wire::Kind;
use wasip2::clocks::monotonic_clock;

use crate::http;
use crate::session::{self as elector_session, ElectorSession};

pub struct Lease {
    pub kind: Kind,
    pub name: String,
    pub holder: String,
    pub ttl: Duration,
    base: String,
    session: RefCell<Session>,
    /// The elector session the lease held was granted under: its end is
    /// the loss of the lease.
    tether: RefCell<Option<Rc<ElectorSession>>>,
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
    LEASES.with(|l| l.borrow().iter().filter_map(Weak::upgrade).filter_map(|x| x.session.borrow().next_due()).min())
}

impl Lease {
    /// A lease of the lock or election `name`; a lock held shared with
    /// `share` (`Some(permits)`).
    pub fn open(
        kind: Kind,
        name: &str,
        ttl_ms: Option<u64>,
        holder: Option<String>,
        address: Option<String>,
        share: Option<Option<u32>>,
    ) -> Result<Rc<Lease>, Error> {
        let holder = holder.unwrap_or_else(default_holder);
        let ttl = ttl_ms.map_or(DEFAULT_TTL, Duration::from_millis);
        let base = http::elector_url();
        let mut entropy = [0; ENTROPY_LEN];
        entropy.copy_from_slice(&wasip2::random::random::get_random_bytes(ENTROPY_LEN as u64));
        let mut session = Session::new(&base, kind, name, Options { ttl, holder: holder.clone(), address }, &entropy)?;
        if let Some(permits) = share {
            session.hold_shared(permits)?;
        }
        let lease = Rc::new(Lease {
            kind,
            name: name.to_owned(),
            holder,
            ttl,
            base,
            session: RefCell::new(session),
            tether: RefCell::new(None),
        });
        LEASES.with(|l| l.borrow_mut().push(Rc::downgrade(&lease)));
        Ok(lease)
    }

    /// Semaphores: which permit the lease held is.
    pub fn permit(&self) -> Option<u32> {
        self.session.borrow().permit()
    }

    fn send(&self, request: &HttpRequest) -> Result<http::Reply, String> {
        http::request(request, &self.base)
    }

    /// Sends what the session asks for and feeds the answers back.
    fn drive(&self) {
        loop {
            let step = self.session.borrow_mut().next_step();
            let Some(Step::Send { id, request, http }) = step else {
                if step.is_none() {
                    break;
                }
                continue;
            };
            let reply = self.send(&http);
            let answer = reply.as_ref().map(|r| (r.status, &r.body[..])).map_err(Clone::clone);
            let _ = self.session.borrow_mut().answer(id, request, answer, now());
        }
    }

    /// Lets time pass: renews when due, notices loss at the deadline or at
    /// the end of the session the lease was granted under.
    pub fn tick(&self) {
        self.notice_session_end();
        self.session.borrow_mut().tick(now());
        self.drive();
    }

    /// If the session the lease was granted under has ended, the lease is
    /// lost now.
    fn notice_session_end(&self) {
        let ended = self.tether.borrow().as_ref().filter(|t| !t.is_open()).map(|t| t.id().to_owned());
        if let Some(id) = ended {
            *self.tether.borrow_mut() = None;
            self.session.borrow_mut().session_ended(&id);
        }
    }

    pub fn held(&self) -> Option<Held> {
        self.notice_session_end();
        self.session.borrow().lease(now())
    }

    pub fn try_acquire(&self) -> Result<Held, Error> {
        tick_all();
        if let Some(held) = self.held() {
            return Ok(held);
        }
        let mut result = self.attempt();
        // Elections: a read after a refusal learns who leads. A leader that
        // let go between the two leaves the election free, and a blocking
        // campaign would then wait for the free record to change, which
        // nobody may do for a whole long-poll: when the read shows it free
        // and changed since the refusal, attempt again now. (A free record
        // unchanged since the refusal is one reserved for another
        // candidate: waiting for its change is right.) Each retry follows
        // a change of the record; a few are plenty.
        for _ in 0..3 {
            if !matches!((&result, self.kind), (Err(Error::HeldBy(_)), Kind::Election)) {
                break;
            }
            let refused_at = self.session.borrow().version();
            if !self.read(None) || self.session.borrow().version() <= refused_at {
                break;
            }
            result = self.attempt();
        }
        result
    }

    /// One claim, under the component's elector session when it has one.
    fn attempt(&self) -> Result<Held, Error> {
        let timeout = self.session.borrow().request_timeout();
        let tether = elector_session::current(&self.base, timeout);
        self.session.borrow_mut().claim_under(tether.as_ref().map(|t| t.id()));
        if let Some(held) = self.session.borrow_mut().start_acquire(now())? {
            return Ok(held);
        }
        self.drive();
        let result = self.session.borrow().acquisition(now());
        match &tether {
            Some(t) if result.is_ok() => *self.tether.borrow_mut() = Some(t.clone()),
            Some(t) if self.session.borrow().refused_for_session() => elector_session::forget(t.id()),
            _ => {}
        }
        result
    }

    /// Blocks until acquired or `timeout`, driven by [`Acquire`] (the same
    /// driver and retry policy as the native client); long-polls in slices
    /// short enough to renew every other lease of this component on time.
    pub fn acquire(&self, timeout: Duration) -> Result<Held, Error> {
        let mut acquire = Acquire::new(now(), timeout, self.ttl);
        loop {
            let t = now();
            let cap = next_due().map(|due| due.saturating_sub(t));
            let action = acquire.next(&mut self.session.borrow_mut(), t, cap);
            match action {
                Action::Attempt => {
                    let result = self.try_acquire();
                    acquire.attempted(result, &mut self.session.borrow_mut(), now());
                }
                Action::Wait(request) => {
                    // Wakes when the record changes (released, taken over)
                    // or the lease it shows runs out.
                    let reply = self.send(&request);
                    let retry = reply.as_ref().ok().and_then(|r| r.retry_after);
                    let answer = reply.as_ref().map(|r| (r.status, &r.body[..])).map_err(Clone::clone);
                    acquire.waited(answer, retry, &mut self.session.borrow_mut(), now());
                }
                Action::SleepUntil(at) => {
                    // Back off, but wake for the renewals of this
                    // component's other leases: nothing else renews them.
                    let until = next_due().map_or(at, |due| due.min(at));
                    monotonic_clock::subscribe_instant(until.as_nanos() as u64).block();
                    tick_all();
                }
                Action::Done(result) => {
                    // Gave up while in line: give the place up too, or it
                    // holds up the line until it runs out.
                    let leave = self.session.borrow_mut().leave_line();
                    if let Some(leave) = leave {
                        let _ = self.send(&leave);
                    }
                    return result;
                }
            }
        }
    }

    /// A plain read, or a long-poll of at most `wait`; the session notes the
    /// version and (elections) the leader. A failure shows in the next call.
    /// Returns whether the record was read free.
    fn read(&self, wait: Option<Duration>) -> bool {
        let request = match wait {
            Some(slice) => self.session.borrow().wait_request(slice),
            None => self.session.borrow().read_request(),
        };
        if let Ok(Ok(read)) = self.send(&request).map(|r| decode_read(r.status, &r.body)) {
            self.session.borrow_mut().observe(&read);
            return matches!(read, Read::Free { .. });
        }
        false
    }

    /// Releases at once. `NotHeld` if not held; `Unavailable` if the
    /// elector did not confirm the release (it then runs out at its TTL).
    pub fn release(&self) -> Result<(), Error> {
        tick_all();
        *self.tether.borrow_mut() = None;
        self.session.borrow_mut().release()?;
        self.drive();
        self.session.borrow().released()
    }

    /// Elections: whether to step down by itself when a transfer is asked
    /// (the default) or leave it to the app. Turned back on while a request
    /// is pending, it steps down now: the release goes out before this
    /// returns.
    pub fn step_down_on_transfer(&self, at_once: bool) {
        self.session.borrow_mut().step_down_on_transfer(at_once);
        self.drive();
    }

    /// Elections: the candidate a transfer asked of this leader names
    /// (`Some(None)`: anyone else), as its last renewal said; `None` when
    /// nothing is asked or it has stepped down. The caller ticks first.
    pub fn transfer_requested(&self) -> Option<Option<String>> {
        self.held()?;
        self.session.borrow().transfer_requested().map(|t| t.to)
    }

    /// Elections: the leader, read fresh unless this candidate leads.
    pub fn leader(&self) -> Option<Leader> {
        tick_all();
        if self.held().is_none() {
            self.read(None);
        }
        self.session.borrow().leader(now())
    }

    /// A pollable ready at the next moment this lease's state can change
    /// without the app: its renewal (the app should call in) or its
    /// deadline; when not held, after a short interval (re-check then).
    pub fn next_wake(&self) -> wasip2::io::poll::Pollable {
        tick_all();
        match self.session.borrow().next_due() {
            Some(at) => monotonic_clock::subscribe_instant(at.as_nanos() as u64),
            None => monotonic_clock::subscribe_duration((self.ttl / 4).as_nanos() as u64),
        }
    }
}
