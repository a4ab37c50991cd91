//! The leases one guest holds: a handle per `lock` / `election` resource,
//! and the registry the runtime releases from when the guest ends.
//!
//! The registry owns one reference to each open handle's [`Lease`], so that
//! leases a guest still holds when it exits, traps or is stopped can be
//! released. A handle the guest drops leaves the registry at once: with the
//! guest's handle gone too, the lease's last reference goes, and the
//! client's `Lease` drop stops its renewal and leader-watch tasks. Nothing
//! here grows with the number of handles a guest has ever opened, only with
//! how many it holds now.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use mpsync_client::{Client, DEFAULT_TTL, Error as SyncError, Lease, Options};
use mpsync_core::wire::Kind;

/// A lease handle as the guest sees it: a name or option the constructor
/// could not accept is kept and reported by every call.
pub struct Handle {
    /// Its key in the registry (none for a refused handle, which holds
    /// nothing to release).
    id: Option<u64>,
    pub(crate) lease: Result<Arc<Lease>, SyncError>,
}

/// The host side of the `lock` resource.
pub type LockHandle = Handle;
/// The host side of the `election` resource.
pub type ElectionHandle = Handle;
/// The host side of the `shared-lock` resource.
pub type SharedHandle = Handle;

/// How many handles a guest holds and how many leases it left behind, as
/// [`SyncCtx::counts`] reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Handles open now (the registry's size).
    pub open: usize,
    /// Leases of dropped handles that are still alive somewhere (so their
    /// tasks still run): zero unless something kept a reference.
    pub lingering: usize,
}

/// Per-store state of the metaparticle:sync imports.
pub struct SyncCtx {
    client: Client,
    instance: String,
    created: u64,
    leases: HashMap<u64, Arc<Lease>>,
    /// Leases of closed handles that something else still held at the
    /// close: those still alive, plus at most one gone since.
    lingering: Vec<Weak<Lease>>,
}

impl SyncCtx {
    /// Imports talking to the elector at `elector_url`, claiming under a
    /// session with it unless `sessions` is off; default holder ids start
    /// with `instance` (unique per process).
    pub fn new(elector_url: &str, sessions: bool, instance: String) -> Self {
        SyncCtx {
            client: Client::new(elector_url).with_sessions(sessions),
            instance,
            created: 0,
            leases: HashMap::new(),
            lingering: Vec::new(),
        }
    }

    /// A new handle on the lock or election `name` (sends nothing); a lock
    /// held shared with `share` (`Some(permits)`).
    pub fn open(
        &mut self,
        kind: Kind,
        name: &str,
        ttl_ms: Option<u64>,
        holder: Option<String>,
        address: Option<String>,
        share: Option<Option<u32>>,
    ) -> Handle {
        self.created += 1;
        let id = self.created;
        let holder = holder.unwrap_or_else(|| format!("{}-{id}", self.instance));
        let ttl = ttl_ms.map_or(DEFAULT_TTL, Duration::from_millis);
        let lease = Lease::new(self.client.clone(), kind, name, Options { ttl, holder, address })
            .and_then(|lease| match share {
                Some(permits) => lease.hold_shared(permits),
                None => Ok(lease),
            })
            .map(Arc::new);
        let handle = match &lease {
            Ok(lease) => {
                self.leases.insert(id, lease.clone());
                Handle { id: Some(id), lease: Ok(lease.clone()) }
            }
            Err(_) => Handle { id: None, lease },
        };
        self.report("opened");
        handle
    }

    /// Forgets a handle the guest dropped and returns its lease, which the
    /// caller releases if it is held and then drops: the last reference,
    /// unless a call still running on it holds one.
    pub fn close(&mut self, handle: Handle) -> Option<Arc<Lease>> {
        if let Some(id) = handle.id {
            self.leases.remove(&id);
        }
        let lease = handle.lease.ok();
        if let Some(lease) = &lease
            && Arc::strong_count(lease) > 1
        {
            // Pruned as it grows, not only when counted: counts are taken
            // only for debug logging, and guests close handles without it.
            self.lingering.retain(|lease| lease.strong_count() > 0);
            self.lingering.push(Arc::downgrade(lease));
        }
        self.report("closed");
        lease
    }

    /// The registry's size and what dropped handles left behind.
    pub fn counts(&mut self) -> Counts {
        self.lingering.retain(|lease| lease.strong_count() > 0);
        Counts { open: self.leases.len(), lingering: self.lingering.len() }
    }

    /// One debug line per open and close (`RUST_LOG=mpsync::leases=debug`),
    /// which the churn test and benchmark read; the task count is the
    /// runtime's, every task of the process.
    fn report(&mut self, what: &str) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            let Counts { open, lingering } = self.counts();
            let tasks = tokio::runtime::Handle::try_current().map_or(0, |rt| rt.metrics().num_alive_tasks());
            tracing::debug!(open, lingering, tasks, "lease handle {what}");
        }
    }

    /// Releases every lease the guest still holds (after it exits or traps).
    /// Returns how many were released.
    pub async fn release_all(&mut self) -> usize {
        let mut released = 0;
        for (_, lease) in self.leases.drain() {
            if lease.held().is_some() && lease.release().await.is_ok() {
                tracing::info!(name = lease.name(), "released a lease the guest still held");
                released += 1;
            }
        }
        released
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn leases_that_outlived_their_handle_are_forgotten_once_gone_even_uncounted() {
        let mut ctx = SyncCtx::new("http://127.0.0.1:9", true, "test".into());
        let open = |ctx: &mut SyncCtx, name: &str| {
            let handle = ctx.open(Kind::Lock, name, None, None, None, None);
            // What a call still running on the handle keeps.
            let in_flight = handle.lease.as_ref().unwrap().clone();
            drop(ctx.close(handle));
            in_flight
        };
        let kept = open(&mut ctx, "kept");
        for round in 0..100 {
            drop(open(&mut ctx, &format!("lock-{round}")));
        }
        assert_eq!(ctx.lingering.len(), 2, "the one still alive and the last one gone, not every one ever closed");
        assert_eq!(ctx.counts(), Counts { open: 0, lingering: 1 });
        drop(kept);
        assert_eq!(ctx.counts(), Counts { open: 0, lingering: 0 });
    }
}
