//! The memory store's state file: the little that must outlive the process
//! for a restart to be safe.
//!
//! The memory store keeps its records in memory, so a restarted elector
//! does not know who held what. Two promises must hold anyway:
//!
//! - **no grant while an earlier lease may be live**: a client of the old
//!   process may still believe it holds a lock for up to the longest TTL
//!   the old process granted. The file keeps that ceiling (raised, with an
//!   fsync, before the first grant longer than it), and a restarted store
//!   grants nothing for that long (see [`Recovery`]). A clean stop with no
//!   lease live writes `clean`, and the next start has nothing to wait for.
//! - **tokens only grow**: fencing tokens are at most the version of the
//!   write that minted them, and versions come from one counter. The file
//!   keeps a reservation above every version handed out; a restarted store
//!   continues above it. Reservations are taken in blocks, so one fsync
//!   covers [`BLOCK`] writes.
//!
//! The file is replaced atomically (write, fsync, rename, fsync the folder)
//! and guarded by an exclusive lock on a sibling `.lock` file, so two
//! electors cannot share it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How many versions one reservation covers.
pub const BLOCK: u64 = 1 << 16;

/// What the file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Persisted {
    /// Format of the file.
    format: u32,
    /// Every version (and so every token) handed out so far is below this.
    reserved: u64,
    /// The longest TTL granted since the file was created (milliseconds).
    ttl_ceiling_ms: u64,
    /// The last process stopped cleanly with no lease live.
    clean: bool,
}

const FORMAT: u32 = 1;

/// What a starting store must do before it grants anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Versions start above this (every earlier one is below it).
    pub first_version: u64,
    /// Grant nothing for this long: an earlier lease may still be live.
    pub wait: Duration,
}

/// Errors opening or writing the state file.
#[derive(Debug, Error)]
pub enum StateError {
    /// Another process holds the file's lock.
    #[error("state file {0} is in use by another elector; give each elector its own --state-file")]
    InUse(PathBuf),
    /// The file exists but is not a state file this elector can read.
    #[error(
        "state file {path} is not readable as an elector state file ({reason}); \
         remove it only if no lease granted by the previous elector can still be in use"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// An open, locked state file.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    state: Persisted,
    // Held for the life of the store: the exclusive lock lives on it.
    _lock: File,
}

impl StateFile {
    /// Opens (or creates) the state file at `path`, locks it, and records
    /// this start: the versions below the returned `first_version` and the
    /// recovery wait are the previous processes'.
    pub fn open(path: &Path) -> Result<(StateFile, Recovery), StateError> {
        let io = |source| StateError::Io { path: path.to_owned(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let lock_path = with_suffix(path, ".lock");
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(StateError::InUse(path.to_owned())),
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let previous = match std::fs::read(path) {
            Ok(bytes) => Some(
                serde_json::from_slice::<Persisted>(&bytes)
                    .map_err(|e| StateError::Corrupt { path: path.to_owned(), reason: e.to_string() })?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(e)),
        };
        if let Some(p) = previous.filter(|p| p.format != FORMAT) {
            return Err(StateError::Corrupt { path: path.to_owned(), reason: format!("unknown format {}", p.format) });
        }
        let recovery = match previous {
            None => Recovery { first_version: 0, wait: Duration::ZERO },
            Some(p) => Recovery {
                first_version: p.reserved,
                wait: if p.clean { Duration::ZERO } else { Duration::from_millis(p.ttl_ceiling_ms) },
            },
        };
        let mut file = StateFile {
            path: path.to_owned(),
            state: Persisted {
                format: FORMAT,
                reserved: recovery.first_version,
                // Kept while recovering: a crash now must wait as long again.
                ttl_ceiling_ms: previous.map_or(0, |p| p.ttl_ceiling_ms),
                clean: false,
            },
            _lock: lock,
        };
        file.state.reserved = recovery.first_version.saturating_add(BLOCK);
        file.write()?;
        Ok((file, recovery))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Versions below this may be handed out without writing the file.
    pub fn reserved(&self) -> u64 {
        self.state.reserved
    }

    /// Reserves versions up to at least `version` (whole blocks), durably.
    pub fn reserve(&mut self, version: u64) -> Result<(), StateError> {
        if version < self.state.reserved {
            return Ok(());
        }
        let blocks = (version - self.state.reserved) / BLOCK + 1;
        self.update(|s| s.reserved = s.reserved.saturating_add(blocks.saturating_mul(BLOCK)))
    }

    /// Makes sure a restart waits at least `ttl_ms`, durably, before a lease
    /// that long is granted.
    pub fn cover_ttl(&mut self, ttl_ms: u64) -> Result<(), StateError> {
        if ttl_ms <= self.state.ttl_ceiling_ms {
            return Ok(());
        }
        self.update(|s| s.ttl_ceiling_ms = ttl_ms)
    }

    /// Records a clean stop with no lease live: the next start need not
    /// wait. Any later grant must call [`StateFile::mark_dirty`] first.
    pub fn mark_clean(&mut self) -> Result<(), StateError> {
        self.update(|s| s.clean = true)
    }

    /// Undoes [`StateFile::mark_clean`].
    pub fn mark_dirty(&mut self) -> Result<(), StateError> {
        if !self.state.clean {
            return Ok(());
        }
        self.update(|s| s.clean = false)
    }

    fn update(&mut self, change: impl FnOnce(&mut Persisted)) -> Result<(), StateError> {
        let before = self.state;
        change(&mut self.state);
        if let Err(e) = self.write() {
            self.state = before;
            return Err(e);
        }
        Ok(())
    }

    fn write(&self) -> Result<(), StateError> {
        let io = |source| StateError::Io { path: self.path.clone(), source };
        let tmp = with_suffix(&self.path, ".tmp");
        let bytes = serde_json::to_vec(&self.state).map_err(|e| io(std::io::Error::other(e)))?;
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mpsync-state-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("elector.json")
    }

    #[test]
    fn a_restart_continues_above_every_version_and_waits_for_the_longest_ttl() {
        let path = temp("restart");
        let (mut first, recovery) = StateFile::open(&path).unwrap();
        assert_eq!(recovery, Recovery { first_version: 0, wait: Duration::ZERO });
        first.cover_ttl(3_000).unwrap();
        first.cover_ttl(1_000).unwrap();
        first.reserve(BLOCK + 5).unwrap();
        assert!(first.reserved() > BLOCK + 5);
        let reserved = first.reserved();
        drop(first);
        let (second, recovery) = StateFile::open(&path).unwrap();
        assert_eq!(recovery, Recovery { first_version: reserved, wait: Duration::from_millis(3_000) });
        assert!(second.reserved() > reserved);
    }

    #[test]
    fn a_clean_stop_needs_no_wait_and_one_file_has_one_owner() {
        let path = temp("clean");
        let (mut first, _) = StateFile::open(&path).unwrap();
        first.cover_ttl(5_000).unwrap();
        assert!(matches!(StateFile::open(&path), Err(StateError::InUse(_))));
        first.mark_clean().unwrap();
        drop(first);
        let (_second, recovery) = StateFile::open(&path).unwrap();
        assert_eq!(recovery.wait, Duration::ZERO);
    }

    #[test]
    fn a_damaged_file_is_refused_not_ignored() {
        let path = temp("corrupt");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"{not json").unwrap();
        let err = StateFile::open(&path).unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
    }
}
