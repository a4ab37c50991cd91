//! `mpsync`: runs WebAssembly apps on wasmtime and gives them named locks and
//! leader elections through the `metaparticle:sync` WIT interfaces.
//!
//! The host keeps leases alive in the background while the app computes,
//! reports a lease lost at its local deadline (before the elector could hand
//! it to anyone else), and releases whatever a guest still holds when it
//! exits or traps.
//!
//! The native client it runs leases with is the `mpsync-client` crate.
//!
//! # Modules
//!
//! Each module uses only modules listed above it (no cycles):
//!
//! - [`leases`]: the lease handles one guest holds, and their registry.
//! - [`bindings`]: host bindings generated from `wit/`, with the handles as
//!   the `lock` and `election` resources.
//! - [`imports`]: those resources on the native client, seeing only a view
//!   of the store ([`imports::SyncView`]).
//! - [`limits`]: a guest's memory and CPU limits.
//! - [`state`]: what one guest's store holds, and the views of it.
//! - [`runtime`]: the engine, its cache, and running commands.
//! - [`watchdog`]: keeps `mpsync lock`'s command inside its lease.
//! - [`eds`]: the leader as an Envoy endpoint file (`mpsync leader
//!   --envoy-eds`).
//!
//! The command line is the `mpsync` binary, in `src/bin/mpsync/`.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod bindings;
pub mod eds;
pub mod imports;
pub mod leases;
pub mod limits;
pub mod runtime;
pub mod state;
pub mod watchdog;
