//! `sync-guest`: metaparticle:sync as a portable component.
//!
//! It exports `metaparticle:sync/lock`, `election` and `shared`, implemented over
//! `wasi:http` (to the elector named by `MPSYNC_ELECTOR`, default
//! `http://127.0.0.1:13131`) and `wasi:clocks`, with `mpsync_core`'s lease
//! state machine (and its rule for a leadership transfer: a leader steps
//! down at once unless the app chose to decide). Compose it into an app with `wac plug APP --plug
//! sync_guest.wasm -o OUT`; OUT runs on any WASI-HTTP runtime.
//!
//! Unlike the `mpsync` host, a component cannot run in the background: it
//! renews whenever the app calls into it and while one of its own blocking
//! calls waits. A lease the app does not touch for longer than the usable
//! part of the TTL is reported lost at its local deadline, never later.
//!
//! - `http`: a blocking HTTP client over `wasi:http/outgoing-handler`.
//! - `lease`: one lease driven from inside the guest.
//! - `session`: the component's session with the elector (a request it
//!   never finishes), so that its leases go the moment its runtime exits.

#![allow(missing_docs)]
// The export glue that wit-bindgen generates is `unsafe` by nature.
#![allow(unsafe_code)]

mod http;
mod lease;
mod session;

use std::rc::Rc;
use std::time::Duration;

use mpsync_core::wire::Kind;

wit_bindgen::generate!({
    path: "../../wit",
    world: "metaparticle:sync/provider",
    with: { "wasi:io/poll@0.2.12": wasip2::io::poll },
});

use exports::metaparticle::sync::election::{self as election, ElectionOptions, TransferRequest};
use exports::metaparticle::sync::lock::{self as lock, LockOptions};
use exports::metaparticle::sync::shared::{self as shared, SharedOptions};
use exports::metaparticle::sync::types::{Error, Leader as LeaderRecord, Lease as LeaseRecord};
use wasip2::io::poll::Pollable;

struct Provider;

mpsync_core::wit_conversions!(Error, LeaderRecord);

fn to_wit(e: mpsync_core::client::Error) -> Error {
    e.into()
}

/// A handle: the lease, or why it could not be opened.
pub struct Handle(Result<Rc<lease::Lease>, mpsync_core::client::Error>);

impl Handle {
    fn get(&self) -> Result<&Rc<lease::Lease>, Error> {
        self.0.as_ref().map_err(|e| to_wit(e.clone()))
    }

    fn record(&self) -> Option<LeaseRecord> {
        let l = self.0.as_ref().ok()?;
        l.tick();
        l.held().map(|h| LeaseRecord {
            name: l.name.clone(),
            holder: l.holder.clone(),
            token: h.token,
            ttl_ms: l.ttl.as_millis() as u64,
        })
    }

    /// The `try-lock` of `lock` and `shared-lock`.
    fn try_hold(&self) -> Result<LeaseRecord, Error> {
        self.get()?.try_acquire().map_err(to_wit)?;
        self.record().ok_or(Error::NotHeld)
    }

    /// The `lock-within` of `lock` and `shared-lock`.
    fn hold_within(&self, timeout_ms: u64) -> Result<LeaseRecord, Error> {
        self.get()?.acquire(Duration::from_millis(timeout_ms)).map_err(to_wit)?;
        self.record().ok_or(Error::NotHeld)
    }

    fn wake(&self) -> Pollable {
        match &self.0 {
            Ok(l) => l.next_wake(),
            Err(_) => wasip2::clocks::monotonic_clock::subscribe_duration(0),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Nobody is left to return an error to: say it on stderr.
        if let Ok(l) = &self.0
            && let Err(e @ mpsync_core::client::Error::Unavailable(_)) = l.release()
        {
            eprintln!("metaparticle:sync: releasing {:?} on drop: {e}", l.name);
        }
    }
}

impl lock::Guest for Provider {
    type Lock = Handle;
}

impl lock::GuestLock for Handle {
    fn new(name: String, options: LockOptions) -> Self {
        Handle(lease::Lease::open(Kind::Lock, &name, options.ttl_ms, options.holder, None, None))
    }

    fn try_lock(&self) -> Result<LeaseRecord, Error> {
        self.try_hold()
    }

    fn lock_within(&self, timeout_ms: u64) -> Result<LeaseRecord, Error> {
        self.hold_within(timeout_ms)
    }

    fn unlock(&self) -> Result<(), Error> {
        self.get()?.release().map_err(to_wit)
    }

    fn lease(&self) -> Option<LeaseRecord> {
        lease::tick_all();
        self.record()
    }

    fn subscribe(&self) -> Pollable {
        self.wake()
    }
}

impl shared::Guest for Provider {
    type SharedLock = Handle;
}

impl shared::GuestSharedLock for Handle {
    fn new(name: String, options: SharedOptions) -> Self {
        Handle(lease::Lease::open(Kind::Lock, &name, options.ttl_ms, options.holder, None, Some(options.permits)))
    }

    fn try_lock(&self) -> Result<LeaseRecord, Error> {
        self.try_hold()
    }

    fn lock_within(&self, timeout_ms: u64) -> Result<LeaseRecord, Error> {
        self.hold_within(timeout_ms)
    }

    fn unlock(&self) -> Result<(), Error> {
        self.get()?.release().map_err(to_wit)
    }

    fn lease(&self) -> Option<LeaseRecord> {
        lease::tick_all();
        self.record()
    }

    fn permit(&self) -> Option<u32> {
        self.record()?;
        self.0.as_ref().ok()?.permit()
    }

    fn subscribe(&self) -> Pollable {
        self.wake()
    }
}

impl election::Guest for Provider {
    type Election = Handle;
}

impl election::GuestElection for Handle {
    fn new(name: String, options: ElectionOptions) -> Self {
        Handle(lease::Lease::open(Kind::Election, &name, options.ttl_ms, options.candidate, options.address, None))
    }

    fn campaign(&self, timeout_ms: u64) -> Result<LeaderRecord, Error> {
        let l = self.get()?;
        l.acquire(Duration::from_millis(timeout_ms)).map_err(to_wit)?;
        l.leader().map(LeaderRecord::from).ok_or(Error::NotHeld)
    }

    fn resign(&self) -> Result<(), Error> {
        self.get()?.release().map_err(to_wit)
    }

    fn is_leader(&self) -> bool {
        lease::tick_all();
        self.0.as_ref().is_ok_and(|l| l.held().is_some())
    }

    fn leader(&self) -> Option<LeaderRecord> {
        self.0.as_ref().ok()?.leader().map(LeaderRecord::from)
    }

    fn subscribe(&self) -> Pollable {
        self.wake()
    }

    fn step_down_on_transfer(&self, at_once: bool) {
        if let Ok(l) = &self.0 {
            l.step_down_on_transfer(at_once);
        }
    }

    fn transfer_requested(&self) -> Option<TransferRequest> {
        // A due renewal first: its answer is where a request is learned.
        lease::tick_all();
        self.0.as_ref().ok()?.transfer_requested().map(|to| TransferRequest { to })
    }
}

export!(Provider);
