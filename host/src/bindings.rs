//! Host bindings generated from `wit/` (world `metaparticle:sync/client`).
//!
//! `wasi:io` maps onto wasmtime-wasi's own bindings so the pollables we hand
//! out are the same `pollable` resource every WASI call understands; the
//! resources map onto [`LockHandle`](crate::leases::LockHandle),
//! [`ElectionHandle`](crate::leases::ElectionHandle) and
//! [`SharedHandle`](crate::leases::SharedHandle).

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "metaparticle:sync/client",
    imports: { default: async | trappable },
    require_store_data_send: true,
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "metaparticle:sync/lock.lock": crate::leases::LockHandle,
        "metaparticle:sync/election.election": crate::leases::ElectionHandle,
        "metaparticle:sync/shared.shared-lock": crate::leases::SharedHandle,
    },
});

pub use metaparticle::sync::{election, lock, shared, types};
