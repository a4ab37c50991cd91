//! The `metaparticle:sync` imports, implemented on the native client.
//!
//! Each `lock` / `election` resource is a [`Lease`] kept in the store's
//! [`SyncCtx`], which remembers every lease a guest created so that the
//! runtime can release them all when the guest exits or traps. A resource
//! dropped by the guest is released in the background.

use std::sync::Arc;
use std::time::Duration;

use mpsync_core::wire::Kind;
use tokio::sync::watch;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};

use crate::bindings::{election, lock, types};
use crate::state::HostState;
use mpsync_client::{Client, DEFAULT_TTL, Error as SyncError, Lease, Options};

/// Per-store state of the metaparticle:sync imports.
pub struct SyncCtx {
    client: Client,
    instance: String,
    created: u64,
    leases: Vec<Arc<Lease>>,
}

impl SyncCtx {
    /// Imports talking to the elector at `elector_url`; default holder ids
    /// start with `instance` (unique per process).
    pub fn new(elector_url: &str, instance: String) -> Self {
        SyncCtx { client: Client::new(elector_url), instance, created: 0, leases: Vec::new() }
    }

    fn next_id(&mut self) -> String {
        self.created += 1;
        format!("{}-{}", self.instance, self.created)
    }

    fn open(
        &mut self,
        kind: Kind,
        name: &str,
        ttl_ms: Option<u64>,
        holder: Option<String>,
        address: Option<String>,
    ) -> Handle {
        let holder = holder.unwrap_or_else(|| self.next_id());
        let ttl = ttl_ms.map_or(DEFAULT_TTL, Duration::from_millis);
        let lease = Lease::new(self.client.clone(), kind, name, Options { ttl, holder, address }).map(Arc::new);
        if let Ok(lease) = &lease {
            self.leases.push(lease.clone());
        }
        Handle { lease }
    }

    /// Releases every lease the guest still holds (after it exits or traps).
    /// Returns how many were released.
    pub async fn release_all(&mut self) -> usize {
        let mut released = 0;
        for lease in self.leases.drain(..) {
            if lease.held().is_some() && lease.release().await.is_ok() {
                tracing::info!(name = lease.name(), "released a lease the guest still held");
                released += 1;
            }
        }
        released
    }
}

/// A lease handle as the guest sees it: a name or option the constructor
/// could not accept is kept and reported by every call.
pub struct Handle {
    lease: Result<Arc<Lease>, SyncError>,
}

/// The host side of the `lock` resource.
pub type LockHandle = Handle;
/// The host side of the `election` resource.
pub type ElectionHandle = Handle;

/// The pollable behind `subscribe`: ready once the lease state changed after
/// the call, or the lease seen then ran out.
struct LeaseWatch {
    lease: Arc<Lease>,
    changes: watch::Receiver<u64>,
    seen: u64,
    was_held: bool,
}

#[wasmtime_wasi::async_trait]
impl Pollable for LeaseWatch {
    async fn ready(&mut self) {
        loop {
            if *self.changes.borrow() != self.seen {
                return;
            }
            let held = self.lease.held();
            if self.was_held && held.is_none() {
                return;
            }
            let until = held.map(|h| tokio::time::Instant::from_std(h.valid_until));
            tokio::select! {
                changed = self.changes.changed() => if changed.is_err() { return },
                () = async { tokio::time::sleep_until(until.unwrap_or_else(tokio::time::Instant::now)).await }, if until.is_some() => {}
            }
        }
    }
}

mpsync_core::wit_conversions!(types::Error, types::Leader);

fn to_wit(e: SyncError) -> types::Error {
    e.into()
}

fn lease_of(table: &ResourceTable, r: &Resource<Handle>) -> wasmtime::Result<Result<Arc<Lease>, SyncError>> {
    Ok(table.get(r)?.lease.clone())
}

fn watch(table: &mut ResourceTable, lease: Arc<Lease>) -> wasmtime::Result<Resource<DynPollable>> {
    let changes = lease.changes();
    let seen = *changes.borrow();
    let was_held = lease.held().is_some();
    let watch = table.push(LeaseWatch { lease, changes, seen, was_held })?;
    subscribe(table, watch)
}

fn closed_watch(table: &mut ResourceTable) -> wasmtime::Result<Resource<DynPollable>> {
    struct Ready;
    #[wasmtime_wasi::async_trait]
    impl Pollable for Ready {
        async fn ready(&mut self) {}
    }
    let ready = table.push(Ready)?;
    subscribe(table, ready)
}

/// Dropping a handle releases its lease before the call returns, so the
/// guest's next step already sees the lock free.
async fn drop_handle(table: &mut ResourceTable, rep: Resource<Handle>) -> wasmtime::Result<()> {
    let handle = table.delete(rep)?;
    if let Ok(lease) = handle.lease
        && lease.held().is_some()
    {
        let _ = lease.release().await;
    }
    Ok(())
}

impl types::Host for HostState {}
impl lock::Host for HostState {}
impl election::Host for HostState {}

fn lease_record(lease: &Lease) -> Option<types::Lease> {
    lease.held().map(|g| types::Lease {
        name: lease.name().to_owned(),
        holder: lease.holder().to_owned(),
        token: g.token,
        ttl_ms: lease.ttl().as_millis() as u64,
    })
}

impl lock::HostLock for HostState {
    async fn new(&mut self, name: String, options: lock::LockOptions) -> wasmtime::Result<Resource<LockHandle>> {
        let handle = self.sync.open(Kind::Lock, &name, options.ttl_ms, options.holder, None);
        Ok(self.table.push(handle)?)
    }

    async fn try_lock(&mut self, me: Resource<LockHandle>) -> wasmtime::Result<Result<types::Lease, types::Error>> {
        let lease = match lease_of(&self.table, &me)? {
            Ok(lease) => lease,
            Err(e) => return Ok(Err(to_wit(e))),
        };
        Ok(lease
            .try_acquire()
            .await
            .map(|_| lease_record(&lease))
            .and_then(|r| r.ok_or(SyncError::NotHeld))
            .map_err(to_wit))
    }

    async fn lock_within(
        &mut self,
        me: Resource<LockHandle>,
        timeout_ms: u64,
    ) -> wasmtime::Result<Result<types::Lease, types::Error>> {
        let lease = match lease_of(&self.table, &me)? {
            Ok(lease) => lease,
            Err(e) => return Ok(Err(to_wit(e))),
        };
        let acquired = lease.acquire(Duration::from_millis(timeout_ms)).await;
        Ok(acquired.map(|_| lease_record(&lease)).and_then(|r| r.ok_or(SyncError::NotHeld)).map_err(to_wit))
    }

    async fn unlock(&mut self, me: Resource<LockHandle>) -> wasmtime::Result<Result<(), types::Error>> {
        let lease = match lease_of(&self.table, &me)? {
            Ok(lease) => lease,
            Err(e) => return Ok(Err(to_wit(e))),
        };
        Ok(lease.release().await.map_err(to_wit))
    }

    async fn lease(&mut self, me: Resource<LockHandle>) -> wasmtime::Result<Option<types::Lease>> {
        Ok(lease_of(&self.table, &me)?.ok().and_then(|l| lease_record(&l)))
    }

    async fn subscribe(&mut self, me: Resource<LockHandle>) -> wasmtime::Result<Resource<DynPollable>> {
        match lease_of(&self.table, &me)? {
            Ok(lease) => watch(&mut self.table, lease),
            Err(_) => closed_watch(&mut self.table),
        }
    }

    async fn drop(&mut self, rep: Resource<LockHandle>) -> wasmtime::Result<()> {
        drop_handle(&mut self.table, rep).await
    }
}

impl election::HostElection for HostState {
    async fn new(
        &mut self,
        name: String,
        options: election::ElectionOptions,
    ) -> wasmtime::Result<Resource<ElectionHandle>> {
        let handle = self.sync.open(Kind::Election, &name, options.ttl_ms, options.candidate, options.address);
        if let Ok(lease) = &handle.lease {
            lease.watch_leader();
        }
        Ok(self.table.push(handle)?)
    }

    async fn campaign(
        &mut self,
        me: Resource<ElectionHandle>,
        timeout_ms: u64,
    ) -> wasmtime::Result<Result<types::Leader, types::Error>> {
        let lease = match lease_of(&self.table, &me)? {
            Ok(lease) => lease,
            Err(e) => return Ok(Err(to_wit(e))),
        };
        let won = lease.acquire(Duration::from_millis(timeout_ms)).await;
        Ok(won.and_then(|_| lease.leader().ok_or(SyncError::NotHeld)).map(types::Leader::from).map_err(to_wit))
    }

    async fn resign(&mut self, me: Resource<ElectionHandle>) -> wasmtime::Result<Result<(), types::Error>> {
        let lease = match lease_of(&self.table, &me)? {
            Ok(lease) => lease,
            Err(e) => return Ok(Err(to_wit(e))),
        };
        Ok(lease.release().await.map_err(to_wit))
    }

    async fn is_leader(&mut self, me: Resource<ElectionHandle>) -> wasmtime::Result<bool> {
        Ok(lease_of(&self.table, &me)?.is_ok_and(|l| l.held().is_some()))
    }

    async fn leader(&mut self, me: Resource<ElectionHandle>) -> wasmtime::Result<Option<types::Leader>> {
        Ok(lease_of(&self.table, &me)?.ok().and_then(|l| l.leader()).map(types::Leader::from))
    }

    async fn subscribe(&mut self, me: Resource<ElectionHandle>) -> wasmtime::Result<Resource<DynPollable>> {
        match lease_of(&self.table, &me)? {
            Ok(lease) => watch(&mut self.table, lease),
            Err(_) => closed_watch(&mut self.table),
        }
    }

    async fn drop(&mut self, rep: Resource<ElectionHandle>) -> wasmtime::Result<()> {
        drop_handle(&mut self.table, rep).await
    }
}
