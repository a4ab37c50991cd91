//! The election contenders: `elect-N`, each `mpsync elect --leader-file F
//! ELECTION -- chaos-worker` in a loop, standing in one election
//! ([`ELECTION`]) through the real client an operator runs.
//!
//! The worker is the leader's server: it learns its token from the leader
//! file `mpsync elect` keeps, and reports each term as a section with that
//! token (see `chaos-worker`), so that the checks of every lock (overlaps,
//! stale writes, tokens growing) cover the election too. A term ends when
//! the worker has made its writes (it reports its exit and ends; `mpsync
//! elect` resigns once it is gone, and the loop starts the next `mpsync
//! elect`), or when the leadership is taken from it (a transfer made its
//! `mpsync elect` step down, or the lease was lost): it reports the term
//! `lost` and waits to lead again, while its `mpsync elect` campaigns
//! again. The faults aim at them as at the lock contenders: `mpsync elect`
//! killed or frozen, the worker killed, the whole holder frozen.
//!
//! Their campaigns wait in no line and no wait is marked: the fairness
//! check does not apply to an election.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::process::Command;

use crate::fence::Hold;
use crate::rng::Rng;

/// The election the `elect-N` contenders stand in.
pub const ELECTION: &str = "chaos-election";

/// The client id of election contender `n`.
pub fn candidate(n: usize) -> String {
    format!("elect-{n}")
}

/// What one election contender is given.
pub struct Candidate {
    /// Its client id, and holder.
    pub client: String,
    /// Its elector.
    pub url: String,
    /// The address it advertises (no server listens there).
    pub address: String,
    /// `mpsync`.
    pub mpsync: PathBuf,
    /// `chaos-worker`.
    pub worker: PathBuf,
    /// The fencing resource.
    pub fence: std::net::SocketAddr,
    /// The lease TTL.
    pub ttl: Duration,
    /// Where its leader files go (one per `mpsync elect`, so that a dying
    /// worker never reads its successor's).
    pub dir: PathBuf,
    /// Whether it holds its lease under a session.
    pub sessions: bool,
}

impl Candidate {
    /// The commands of its loop: one `mpsync elect` each.
    pub fn commands(self, mut rng: Rng) -> impl FnMut() -> (Command, Option<(String, Hold)>) + Send + 'static {
        let started = Arc::new(AtomicU64::new(0));
        move || {
            let n = started.fetch_add(1, Ordering::Relaxed);
            let file = leader_file(&self.dir, &self.client, n);
            // Terms long enough for a transfer to find a leader: 2 to 9
            // writes, a tenth to a fifth of the TTL apart.
            let writes = 2 + rng.below(8);
            let tenth = self.ttl.as_millis() as u64 / 10;
            let gap = tenth + rng.below(tenth + 1);
            let mut cmd = Command::new(&self.mpsync);
            cmd.args(["elect", "--elector", &self.url, "--holder", &self.client, "--address", &self.address])
                .arg("--ttl")
                .arg(humantime::format_duration(self.ttl).to_string())
                .arg("--leader-file")
                .arg(&file)
                .args([ELECTION, "--"])
                .arg(&self.worker)
                .env("CHAOS_FENCE", self.fence.to_string())
                .env("CHAOS_CLIENT", &self.client)
                .env("CHAOS_WRITES", writes.to_string())
                .env("CHAOS_GAP_MS", gap.to_string());
            crate::contender::no_session(&mut cmd, self.sessions);
            // A campaign has no place in a line to mark.
            (cmd, None)
        }
    }
}

/// The leader file of `client`'s `n`th `mpsync elect`.
fn leader_file(dir: &Path, client: &str, n: u64) -> PathBuf {
    dir.join(format!("{client}.{n}.leader.json"))
}
