//! What one running guest owns: its WASI context, its wasi:http context, its
//! resource table, its limits and its metaparticle:sync leases.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::imports::SyncCtx;
use crate::runtime::GuestLimits;

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
