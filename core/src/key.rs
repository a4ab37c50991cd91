//! The holder's secret: the key an acquirer chooses and presents with every
//! renewal and release of its lease ([`LeaseKey`]), and the digest a store
//! keeps instead of it ([`KeyDigest`]). The fencing token is public (every
//! read shows it, for resources to check); the right to renew or release is
//! this key's. Neither type's `Debug` shows its text.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::wire::{InvalidField, invalid};

/// The shortest holder key accepted, in characters.
pub const MIN_KEY_LEN: usize = 22;
/// The longest holder key accepted, in characters.
pub const MAX_KEY_LEN: usize = 128;

/// A holder's secret (see [`AcquireRequest::key`](crate::wire::AcquireRequest::key)): 22 to 128 characters
/// of the URL-safe alphabet `A-Z a-z 0-9 - _`. The elector keeps only its
/// SHA-256 digest, and no read, listing, metric or log shows either;
/// `Debug` prints it redacted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseKey(String);

impl LeaseKey {
    /// A key made of `bytes` (random, at least 16 of them), hex-encoded.
    pub fn from_random(bytes: &[u8]) -> LeaseKey {
        let mut text = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            text.push_str(&format!("{b:02x}"));
        }
        LeaseKey(text)
    }

    /// A key as sent, checked against the documented alphabet and length.
    pub fn parse(text: &str) -> Result<LeaseKey, InvalidField> {
        let key = LeaseKey(text.to_owned());
        key.validate()?;
        Ok(key)
    }

    /// The key's text, to send.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks the alphabet and the length.
    pub fn validate(&self) -> Result<(), InvalidField> {
        let len = self.0.len();
        if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&len) {
            return Err(invalid("key", format!("key is {len} characters; it must be {MIN_KEY_LEN} to {MAX_KEY_LEN}")));
        }
        if !self.0.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(invalid("key", "key may hold only the characters A-Z, a-z, 0-9, - and _"));
        }
        Ok(())
    }
}

impl core::fmt::Debug for LeaseKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("LeaseKey(<redacted>)")
    }
}

/// The SHA-256 digest of a [`LeaseKey`], as lowercase hex: what a store
/// keeps instead of the key. `Debug` prints it redacted, so a record
/// logged by accident shows neither.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyDigest(String);

impl KeyDigest {
    /// The digest of `key`.
    pub fn of(key: &LeaseKey) -> KeyDigest {
        let hash = Sha256::digest(key.as_str().as_bytes());
        let mut hex = String::with_capacity(64);
        for b in hash {
            hex.push(char::from(HEX[usize::from(b >> 4)]));
            hex.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        KeyDigest(hex)
    }

    /// A digest as a store kept it (a Kubernetes annotation). Text that is
    /// not a digest is kept as it is: no key matches it, so the lease can
    /// only run out, never be taken by a guess.
    pub fn from_stored(text: String) -> KeyDigest {
        KeyDigest(text)
    }

    /// A digest that no key matches (it is not hex): for a record that
    /// stands for leases nobody here can name, such as the memory store's
    /// placeholder after a restart, which must only run out, never be
    /// renewed or released by whoever reads its holder and token.
    pub fn unmatchable() -> KeyDigest {
        KeyDigest("(no key matches)".to_owned())
    }

    /// The hex text, to store.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `key` is the key this is the digest of. Every byte is
    /// compared whatever the first difference, so the time taken says
    /// nothing about how much of a guess was right.
    pub fn matches(&self, key: &LeaseKey) -> bool {
        let presented = KeyDigest::of(key);
        let (a, b) = (self.0.as_bytes(), presented.0.as_bytes());
        a.len() == b.len() && core::hint::black_box(a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y))) == 0
    }
}

impl core::fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("KeyDigest(<redacted>)")
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";
