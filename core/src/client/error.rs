//! The client error, as the WIT `error` variant has it, and the leader.

use thiserror::Error;

use crate::wire::LeaseView;

/// What a client call can fail with; the WIT `error` variant.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// Someone else holds the lock (their id; empty when the elector did
    /// not say).
    #[error("held by {0}")]
    HeldBy(String),
    /// The wait ran out.
    #[error("timed out")]
    Timeout,
    /// This client does not hold the lease (any more).
    #[error("not held")]
    NotHeld,
    /// The name is not a valid Kubernetes object name.
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// An option is out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The elector could not be reached or failed.
    #[error("elector unavailable: {0}")]
    Unavailable(String),
}

/// Writes `From` conversions from [`Error`] and [`Leader`] into the
/// `error` and `leader` types of a set of `metaparticle:sync` bindings
/// (wasmtime's on the host, wit-bindgen's in a guest), so the mapping is
/// written once.
///
/// ```ignore
/// mpsync_core::wit_conversions!(types::Error, types::Leader);
/// ```
#[macro_export]
macro_rules! wit_conversions {
    ($error:ty, $leader:ty) => {
        impl From<$crate::client::Error> for $error {
            fn from(e: $crate::client::Error) -> Self {
                use $crate::client::Error as E;
                match e {
                    E::HeldBy(holder) => Self::HeldBy(holder),
                    E::Timeout => Self::Timeout,
                    E::NotHeld => Self::NotHeld,
                    E::InvalidName(reason) => Self::InvalidName(reason),
                    E::InvalidOption(reason) => Self::InvalidOption(reason),
                    E::Unavailable(reason) => Self::Unavailable(reason),
                }
            }
        }
        impl From<$crate::client::Leader> for $leader {
            fn from(l: $crate::client::Leader) -> Self {
                Self { id: l.id, address: l.address, token: l.token }
            }
        }
    };
}

pub use crate::route::Leader;

impl From<&LeaseView> for Leader {
    fn from(l: &LeaseView) -> Self {
        Leader { id: l.holder.clone(), address: l.address.clone(), token: l.token }
    }
}
