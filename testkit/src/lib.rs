//! Real servers for metaparticle-sync's tests and benchmarks.
//!
//! - [`elector::ElectorProcess`]: a real elector binary on a port the OS
//!   picked.
//! - [`proc::Proc`]: a process whose output lines arrive as events, and
//!   where the project's binaries and components are.
//! - [`etcd::Etcd`]: a real etcd process on loopback ports the OS picked.
//! - [`bench`]: percentiles and formatting for the benchmarks.
//! - [`relay::Relay`]: a TCP relay that delays, black-holes and cuts.
//! - [`lease_api::LeaseApi`]: a Kubernetes Lease API emulator over real
//!   HTTP, the one stand-in allowed (no API server can run here). It
//!   follows the documented status codes, resourceVersion conflicts and
//!   watch semantics; see its module documentation. It also serves
//!   EndpointSlices ([`endpoint_slice_api`]) and Events ([`event_api`])
//!   from the same object store.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

pub mod bench;
pub mod elector;
pub mod endpoint_slice_api;
pub mod etcd;
pub mod event_api;
pub mod lease_api;
pub mod proc;
pub mod relay;

pub use etcd::Etcd;
pub use lease_api::LeaseApi;

/// The workspace root (where `.tools/` lives).
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).unwrap_or_default()
}

/// A new empty directory under the system's temp dir, named for `what`,
/// this process and a counter.
pub fn temp_dir(what: &str) -> std::io::Result<PathBuf> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("mpsync-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The build's output folder of the running test or benchmark
/// (`target/debug` or `target/release`): its executable lives in `deps/`
/// below it.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") { dir.parent().map(PathBuf::from).unwrap_or(dir) } else { dir }
}

/// The project binary `name` of the same build as the running test, which
/// the build of the workspace put there. Panics with the one command that
/// is missing when it is absent.
pub fn bin(name: &str) -> PathBuf {
    let path = profile_dir().join(name);
    let profile = if profile_dir().ends_with("release") { " --release" } else { " --profile test" };
    assert!(path.is_file(), "{} is missing: run `cargo build{profile} --bins` first (make test does)", path.display());
    path
}
