//! Which store a run keeps its records in.

use serde::{Deserialize, Serialize};

/// Where the records live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The embedded memory store with its state file; faults restart the
    /// elector.
    Memory,
    /// A real etcd; faults pause and restart it, and restart electors.
    Etcd,
    /// The Kubernetes Lease API emulator; faults pause and restart it, and
    /// restart electors.
    Kubernetes,
}

impl StoreKind {
    /// The name in file names and reports (`memory`, ...).
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Etcd => "etcd",
            StoreKind::Kubernetes => "kubernetes",
        }
    }
}
