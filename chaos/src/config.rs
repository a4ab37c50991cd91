//! What a run is given: the store, the binaries, the contenders, the faults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::check::Findings;
use crate::fault::FaultKind;
pub use crate::store::StoreKind;

/// The wasm contenders' components, in the folder `scripts/build-wasm.sh`
/// prints.
pub const WASM_APPS: [&str; 2] = ["chaos.wasm", "chaos.portable.wasm"];

/// The binaries a run starts.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `elector`.
    pub elector: PathBuf,
    /// `mpsync`.
    pub mpsync: PathBuf,
    /// `chaos-worker`.
    pub worker: PathBuf,
    /// The folder with `chaos.wasm` and `chaos.portable.wasm`, if the wasm
    /// contenders take part.
    pub wasm: Option<PathBuf>,
}

impl Bins {
    /// The binaries next to `exe` (cargo puts a workspace's binaries in one
    /// folder; a test binary lives one level below it, in `deps/`).
    pub fn beside(exe: &Path) -> anyhow::Result<Bins> {
        let mut dir = exe.parent().context("no folder")?.to_owned();
        if dir.ends_with("deps") {
            dir.pop();
        }
        let find = |name: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                bail!("{} is missing: build it first (cargo build -p elector -p mpsync -p chaos)", path.display())
            }
        };
        Ok(Bins { elector: find("elector")?, mpsync: find("mpsync")?, worker: find("chaos-worker")?, wasm: None })
    }

    /// Lets the wasm contenders take part, from `dir`, which must hold both
    /// of [`WASM_APPS`].
    pub fn with_wasm(mut self, dir: &Path) -> anyhow::Result<Bins> {
        for app in WASM_APPS {
            let path = dir.join(app);
            anyhow::ensure!(path.is_file(), "{} is missing: run scripts/build-wasm.sh", path.display());
        }
        self.wasm = Some(dir.to_owned());
        Ok(self)
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The store.
    pub store: StoreKind,
    /// Stop after this many hand-overs of exclusive holds (the plain locks'
    /// and the read-write lock's writers')...
    pub handovers: usize,
    /// ...or after this long.
    pub time_limit: Duration,
    /// The seed of every random choice.
    pub seed: u64,
    /// `mpsync lock` contenders.
    pub contenders: usize,
    /// Locks they share.
    pub locks: usize,
    /// `mpsync lock --permits` contenders on a counting semaphore
    /// ([`crate::contender::SEMAPHORE`]).
    pub semaphore: usize,
    /// `mpsync lock` contenders on a read-write lock
    /// ([`crate::contender::RW_LOCK`]), reading or writing.
    pub readers_writers: usize,
    /// `mpsync elect` contenders in one election
    /// ([`crate::elect::ELECTION`]), and with any, the transferrer
    /// ([`crate::transferrer`]).
    pub elections: usize,
    /// Lease TTL.
    pub ttl: Duration,
    /// Mean time between faults.
    pub fault_every: Duration,
    /// Electors sharing the store (1 on the memory store).
    pub electors: usize,
    /// The binaries.
    pub bins: Bins,
    /// One more `mpsync lock` contender, `skewed-0`, whose clock runs at
    /// this rate relative to everyone else's (libfaketime), with partitions
    /// of it among the faults. Safe at `1 − margin` (0.8) and above.
    pub clock_rate: Option<f64>,
    /// Append the history here too, as JSON lines.
    pub history: Option<PathBuf>,
    /// The electors' output goes here (default: a file in a new temporary
    /// folder); the report names it.
    pub elector_log: Option<PathBuf>,
    /// End the run early, between two faults, once the findings so far
    /// satisfy this: for the runs meant to be caught, which need only show
    /// that they are.
    pub stop_when: Option<fn(&Findings) -> bool>,
    /// Print a line per fault and progress.
    pub verbose: bool,
    /// Delete an elector's state file when restarting it: the memory store
    /// as it was before it had one. Only to show that the checker catches
    /// what that breaks.
    pub forget_state: bool,
    /// Whether the contenders hold their leases under sessions with their
    /// elector (our clients' default); without, `MPSYNC_NO_SESSION=1`.
    pub sessions: bool,
    /// `mpsync lock`'s command goes on writing after a SIGTERM, every
    /// 10 ms, until the SIGKILL a grace later (what `mpsync lock` allows a
    /// command), instead of exiting at once.
    pub lingering_commands: bool,
    /// Run the electors with `--chaos-unsafe-release-on-own-close`: a
    /// session an elector ends at shutdown releases its leases. Only to
    /// show that the checker catches what that breaks.
    pub unsafe_release_on_own_close: bool,
    /// The fairness control: the contenders race for the locks (a plain
    /// claim, then a long-poll until the lock changes, as before fair
    /// locks; [`crate::race`]) instead of waiting in line, and no wasm app
    /// takes part. Only to show that the checker catches overtakings.
    pub race: bool,
    /// The shared-holds control: the semaphore's contenders ask the elector
    /// for one permit more than they tell the resource there are, and the
    /// read-write lock's writers ask for a shared hold (they still report
    /// as writers). Only to show that the checker catches more holders
    /// than permits and a reader beside a writer.
    pub overcommit: bool,
    /// The watch control: the observer takes views without the version
    /// rule, each answer after the next one, and names each holder after
    /// the one it saw before ([`crate::observer`]). Only to show that the
    /// checker catches a watch that goes back or shows a phantom holder.
    pub watch_stale: bool,
    /// The transfer control: the transferrer asks nothing and records, now
    /// and then, a transfer of the election to a candidate that it makes up
    /// ([`crate::transferrer`]). Only to show that the checker catches a
    /// term that a transfer's reservation should have kept out.
    pub transfer_made_up: bool,
    /// Draw faults only of these kinds (of those the store has); empty:
    /// every kind.
    pub faults: Vec<FaultKind>,
    /// Draw no fault at all: a baseline, or a control whose proof needs
    /// stretches no fault overlaps. The transferrer and the stranger keep
    /// their pace (`fault_every`).
    pub no_faults: bool,
}
