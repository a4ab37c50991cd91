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
//! - [`bindings`]: host bindings generated from `wit/`.
//! - [`imports`]: the `lock` and `election` resources on the native client.
//! - [`state`]: what one guest's store holds.
//! - [`runtime`]: the engine, its cache and limits, and running commands.
//! - [`watchdog`]: keeps `mpsync lock`'s command inside its lease.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod bindings;
pub mod eds;
pub mod imports;
pub mod runtime;
pub mod state;
pub mod watchdog;
