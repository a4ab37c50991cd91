//! What one running guest owns: its WASI context, its wasi:http context, its
//! resource table, its limits and its metaparticle:sync leases. Each set of
//! imports gets a view of the parts it needs, never the whole.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::imports::SyncView;
use crate::leases::SyncCtx;
use crate::limits::GuestLimits;

/// The data of a guest's `Store`.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: GuestLimits,
    pub(crate) sync: SyncCtx,
    /// Epoch ticks (10 ms each) the guest has spent running so far.
    pub(crate) cpu_ticks: u64,
}

impl HostState {
    /// What the metaparticle:sync imports see.
    pub fn sync_view(&mut self) -> SyncView<'_> {
        SyncView { ctx: &mut self.sync, table: &mut self.table }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: Default::default() }
    }
}
