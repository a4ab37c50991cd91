//! The `metaparticle:sync` imports, implemented on the native client.
//!
//! They see only a projection of the guest's store, [`SyncView`] (its
//! lease registry and its resource table), as wasmtime-wasi's imports see
//! a `WasiCtxView`: this module knows nothing of the store's other parts.
//! Each `lock` / `election` resource is a [`Handle`] whose lease the
//! [`SyncCtx`] registry also keeps until the guest drops it; a dropped
//! handle is released before the drop returns, and then forgotten. A
//! leadership transfer is the client's too: it steps down at once by
//! default, and its generation moves when a request comes for an app
//! that decides itself, which wakes `subscribe`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use mpsync_core::wire::Kind;
use tokio::sync::watch;
use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};

use crate::bindings::{election, lock, shared, types};
use crate::leases::{ElectionHandle, Handle, LockHandle, SharedHandle, SyncCtx};
use mpsync_client::{Error as SyncError, Lease};

/// What the imports may touch of a guest's store.
pub struct SyncView<'a> {
    /// The guest's leases.
    pub ctx: &'a mut SyncCtx,
    /// The guest's resources (handles and pollables live there).
    pub table: &'a mut ResourceTable,
}

/// The [`HasData`] of the imports, for `add_to_linker`: their data is a
/// [`SyncView`].
pub struct HasSync;

impl HasData for HasSync {
    type Data<'a> = SyncView<'a>;
}

/// The pollable behind `subscribe`: ready once the lease state changed after
/// the call, or the lease seen then ran out. It does not keep the lease
/// alive: a guest that drops the handle and keeps the pollable must not keep
/// the lease's tasks running, so a lease that is gone makes it ready.
struct LeaseWatch {
    lease: Weak<Lease>,
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
            let Some(held) = self.lease.upgrade().map(|lease| lease.held()) else { return };
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

fn watch(table: &mut ResourceTable, lease: &Arc<Lease>) -> wasmtime::Result<Resource<DynPollable>> {
    let changes = lease.changes();
    let seen = *changes.borrow();
    let was_held = lease.held().is_some();
    let watch = table.push(LeaseWatch { lease: Arc::downgrade(lease), changes, seen, was_held })?;
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

impl SyncView<'_> {
    /// The `subscribe` of both resources.
    fn subscribe(&mut self, me: &Resource<Handle>) -> wasmtime::Result<Resource<DynPollable>> {
        match lease_of(self.table, me)? {
            Ok(lease) => watch(self.table, &lease),
            Err(_) => closed_watch(self.table),
        }
    }

    /// Dropping a handle releases its lease before the call returns, so the
    /// guest's next step already sees the lock free; then the registry
    /// forgets it, and the lease's tasks stop with its last reference.
    async fn drop_handle(&mut self, rep: Resource<Handle>) -> wasmtime::Result<()> {
        let handle = self.table.delete(rep)?;
        if let Some(lease) = self.ctx.close(handle)
            && lease.held().is_some()
        {
            let _ = lease.release().await;
        }
        Ok(())
    }
}

impl types::Host for SyncView<'_> {}
impl lock::Host for SyncView<'_> {}
impl election::Host for SyncView<'_> {}
impl shared::Host for SyncView<'_> {}

fn lease_record(lease: &Lease) -> Option<types::Lease> {
    lease.held().map(|g| types::Lease {
        name: lease.name().to_owned(),
        holder: lease.holder().to_owned(),
        token: g.token,
        ttl_ms: lease.ttl().as_millis() as u64,
    })
}

/// The calls `lock` and `shared-lock` have in common, on a handle of either.
impl SyncView<'_> {
    async fn try_lock_handle(&mut self, me: &Resource<Handle>) -> wasmtime::Result<Result<types::Lease, types::Error>> {
        let lease = match lease_of(self.table, me)? {
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

    async fn lock_handle_within(
        &mut self,
        me: &Resource<Handle>,
        timeout_ms: u64,
    ) -> wasmtime::Result<Result<types::Lease, types::Error>> {
        let lease = match lease_of(self.table, me)? {
            Ok(lease) => lease,
            Err(e) => return Ok(Err(to_wit(e))),
        };
        let acquired = lease.acquire(Duration::from_millis(timeout_ms)).await;
        Ok(acquired.map(|_| lease_record(&lease)).and_then(|r| r.ok_or(SyncError::NotHeld)).map_err(to_wit))
    }

    async fn unlock_handle(&mut self, me: &Resource<Handle>) -> wasmtime::Result<Result<(), types::Error>> {
        let lease = match lease_of(self.table, me)? {
            Ok(lease) => lease,
            Err(e) => return Ok(Err(to_wit(e))),
        };
        Ok(lease.release().await.map_err(to_wit))
    }

    fn lease_of_handle(&self, me: &Resource<Handle>) -> wasmtime::Result<Option<types::Lease>> {
        Ok(lease_of(self.table, me)?.ok().and_then(|l| lease_record(&l)))
    }
}

impl lock::HostLock for SyncView<'_> {
    async fn new(&mut self, name: String, options: lock::LockOptions) -> wasmtime::Result<Resource<LockHandle>> {
        let handle = self.ctx.open(Kind::Lock, &name, options.ttl_ms, options.holder, None, None);
        Ok(self.table.push(handle)?)
    }

    async fn try_lock(&mut self, me: Resource<LockHandle>) -> wasmtime::Result<Result<types::Lease, types::Error>> {
        self.try_lock_handle(&me).await
    }

    async fn lock_within(
        &mut self,
        me: Resource<LockHandle>,
        timeout_ms: u64,
    ) -> wasmtime::Result<Result<types::Lease, types::Error>> {
        self.lock_handle_within(&me, timeout_ms).await
    }

    async fn unlock(&mut self, me: Resource<LockHandle>) -> wasmtime::Result<Result<(), types::Error>> {
        self.unlock_handle(&me).await
    }

    async fn lease(&mut self, me: Resource<LockHandle>) -> wasmtime::Result<Option<types::Lease>> {
        self.lease_of_handle(&me)
    }

    async fn subscribe(&mut self, me: Resource<LockHandle>) -> wasmtime::Result<Resource<DynPollable>> {
        SyncView::subscribe(self, &me)
    }

    async fn drop(&mut self, rep: Resource<LockHandle>) -> wasmtime::Result<()> {
        self.drop_handle(rep).await
    }
}

impl shared::HostSharedLock for SyncView<'_> {
    async fn new(&mut self, name: String, options: shared::SharedOptions) -> wasmtime::Result<Resource<SharedHandle>> {
        let handle = self.ctx.open(Kind::Lock, &name, options.ttl_ms, options.holder, None, Some(options.permits));
        Ok(self.table.push(handle)?)
    }

    async fn try_lock(&mut self, me: Resource<SharedHandle>) -> wasmtime::Result<Result<types::Lease, types::Error>> {
        self.try_lock_handle(&me).await
    }

    async fn lock_within(
        &mut self,
        me: Resource<SharedHandle>,
        timeout_ms: u64,
    ) -> wasmtime::Result<Result<types::Lease, types::Error>> {
        self.lock_handle_within(&me, timeout_ms).await
    }

    async fn unlock(&mut self, me: Resource<SharedHandle>) -> wasmtime::Result<Result<(), types::Error>> {
        self.unlock_handle(&me).await
    }

    async fn lease(&mut self, me: Resource<SharedHandle>) -> wasmtime::Result<Option<types::Lease>> {
        self.lease_of_handle(&me)
    }

    async fn permit(&mut self, me: Resource<SharedHandle>) -> wasmtime::Result<Option<u32>> {
        Ok(lease_of(self.table, &me)?.ok().filter(|l| l.held().is_some()).and_then(|l| l.permit()))
    }

    async fn subscribe(&mut self, me: Resource<SharedHandle>) -> wasmtime::Result<Resource<DynPollable>> {
        SyncView::subscribe(self, &me)
    }

    async fn drop(&mut self, rep: Resource<SharedHandle>) -> wasmtime::Result<()> {
        self.drop_handle(rep).await
    }
}

impl election::HostElection for SyncView<'_> {
    async fn new(
        &mut self,
        name: String,
        options: election::ElectionOptions,
    ) -> wasmtime::Result<Resource<ElectionHandle>> {
        let handle = self.ctx.open(Kind::Election, &name, options.ttl_ms, options.candidate, options.address, None);
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
        let lease = match lease_of(self.table, &me)? {
            Ok(lease) => lease,
            Err(e) => return Ok(Err(to_wit(e))),
        };
        let won = lease.acquire(Duration::from_millis(timeout_ms)).await;
        Ok(won.and_then(|_| lease.leader().ok_or(SyncError::NotHeld)).map(types::Leader::from).map_err(to_wit))
    }

    async fn resign(&mut self, me: Resource<ElectionHandle>) -> wasmtime::Result<Result<(), types::Error>> {
        let lease = match lease_of(self.table, &me)? {
            Ok(lease) => lease,
            Err(e) => return Ok(Err(to_wit(e))),
        };
        Ok(lease.release().await.map_err(to_wit))
    }

    async fn is_leader(&mut self, me: Resource<ElectionHandle>) -> wasmtime::Result<bool> {
        Ok(lease_of(self.table, &me)?.is_ok_and(|l| l.held().is_some()))
    }

    async fn leader(&mut self, me: Resource<ElectionHandle>) -> wasmtime::Result<Option<types::Leader>> {
        Ok(lease_of(self.table, &me)?.ok().and_then(|l| l.leader()).map(types::Leader::from))
    }

    async fn subscribe(&mut self, me: Resource<ElectionHandle>) -> wasmtime::Result<Resource<DynPollable>> {
        SyncView::subscribe(self, &me)
    }

    async fn step_down_on_transfer(&mut self, me: Resource<ElectionHandle>, at_once: bool) -> wasmtime::Result<()> {
        // A refused handle leads nothing: there is nothing to step down from.
        if let Ok(lease) = lease_of(self.table, &me)? {
            lease.step_down_on_transfer(at_once).await;
        }
        Ok(())
    }

    async fn transfer_requested(
        &mut self,
        me: Resource<ElectionHandle>,
    ) -> wasmtime::Result<Option<election::TransferRequest>> {
        // Only while the lease is valid here, as `is-leader` says.
        Ok(lease_of(self.table, &me)?
            .ok()
            .filter(|l| l.held().is_some())
            .and_then(|l| l.transfer_requested())
            .map(|t| election::TransferRequest { to: t.to }))
    }

    async fn drop(&mut self, rep: Resource<ElectionHandle>) -> wasmtime::Result<()> {
        self.drop_handle(rep).await
    }
}
