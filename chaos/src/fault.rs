//! The faults a run can inject, and the record of one that the checker
//! reads.

use serde::{Deserialize, Serialize};

use crate::store::StoreKind;

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// A contender's process SIGKILLed: `mpsync` (`mpsync lock`'s watchdog
    /// then kills the command's group, and only then lets the session
    /// close), or the wasm app's whole process.
    ContenderKill,
    /// The command alone SIGKILLed (`chaos-worker` under `mpsync lock`):
    /// `mpsync` must release at once.
    CommandKill,
    /// A contender's process SIGSTOPped for longer than its TTL, then
    /// continued: `mpsync lock`'s own process, whose watchdog must stop the
    /// command at the deadline; the wasm app's whole process.
    ContenderFreeze,
    /// The whole holder SIGSTOPped for longer than its TTL, then continued:
    /// `mpsync lock`, its watchdog and its command. Its session stays open
    /// and silent: its lease must run out at its TTL, never earlier.
    HolderFreeze,
    /// An elector SIGKILLed and restarted on the same address (on the
    /// memory store, with the same state file).
    ElectorRestart,
    /// An elector stopped gracefully (SIGTERM: it ends its sessions itself,
    /// which releases nothing) and restarted on the same address.
    ElectorStop,
    /// The store paused past the electors' store timeout.
    StorePause,
    /// The store restarted.
    StoreRestart,
    /// One etcd member killed and restarted.
    EtcdMemberRestart,
    /// The etcd raft leader killed and restarted.
    EtcdLeaderRestart,
    /// The network between electors and store slowed down.
    NetworkDelay,
    /// The network between electors and store black-holed past the store
    /// timeout.
    NetworkBlackhole,
    /// Every connection between electors and store closed.
    NetworkCut,
    /// The holder whose clock runs at another rate (`--clock-rate`) cut off
    /// from its elector, while it is inside a critical section, for longer
    /// than its TTL: its renewals stop, and only its own clock tells it
    /// when to stop.
    HolderPartition,
    /// Not drawn: the end of the run, from when it stops its contenders
    /// (every one SIGKILLed, their places in line gone) to the checks, so
    /// that what that does is excused like any fault at everyone.
    RunEnd,
}

impl FaultKind {
    /// The name in reports (`contender-kill`, ...).
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::ContenderKill => "contender-kill",
            FaultKind::CommandKill => "command-kill",
            FaultKind::ContenderFreeze => "contender-freeze",
            FaultKind::HolderFreeze => "holder-freeze",
            FaultKind::ElectorRestart => "elector-restart",
            FaultKind::ElectorStop => "elector-stop",
            FaultKind::StorePause => "store-pause",
            FaultKind::StoreRestart => "store-restart",
            FaultKind::EtcdMemberRestart => "etcd-member-restart",
            FaultKind::EtcdLeaderRestart => "etcd-leader-restart",
            FaultKind::NetworkDelay => "network-delay",
            FaultKind::NetworkBlackhole => "network-blackhole",
            FaultKind::NetworkCut => "network-cut",
            FaultKind::HolderPartition => "holder-partition",
            FaultKind::RunEnd => "run-end",
        }
    }

    /// The faults a run on `store` draws from, evenly; with a holder whose
    /// clock is skewed, partitions of that holder too (twice as often).
    pub fn for_run(store: StoreKind, skewed_holder: bool) -> Vec<FaultKind> {
        use FaultKind::*;
        let mut kinds = vec![ContenderKill, CommandKill, ContenderFreeze, HolderFreeze, ElectorRestart, ElectorStop];
        match store {
            StoreKind::Memory => {}
            StoreKind::Etcd => kinds.extend([
                StorePause,
                StoreRestart,
                EtcdMemberRestart,
                EtcdLeaderRestart,
                NetworkDelay,
                NetworkBlackhole,
                NetworkCut,
            ]),
            StoreKind::Kubernetes => {
                kinds.extend([StorePause, StoreRestart, NetworkDelay, NetworkBlackhole, NetworkCut])
            }
        }
        if skewed_holder {
            // Twice: it is the one fault that puts the clock bound to the
            // test, and it needs the skewed holder inside a section.
            kinds.extend([HolderPartition, HolderPartition]);
        }
        kinds
    }
}

impl std::str::FromStr for FaultKind {
    type Err = String;

    /// From the name in reports.
    fn from_str(name: &str) -> Result<Self, String> {
        let every = FaultKind::for_run(StoreKind::Etcd, true);
        every.iter().copied().find(|k| k.name() == name).ok_or_else(|| {
            let mut names: Vec<&str> = every.iter().map(|k| k.name()).collect();
            names.dedup();
            format!("no fault named {name:?} (one of: {})", names.join(", "))
        })
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A fault the run injected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// What was done.
    pub kind: FaultKind,
    /// The contender it was done to, if any.
    pub client: Option<String>,
    /// When it started (microseconds since the run started).
    pub from_us: u64,
    /// When it ended.
    pub to_us: u64,
    /// Whether it froze the code inside the critical section itself, which
    /// excuses an overlap that fencing then has to catch.
    pub freezes_section: bool,
    /// The lock whose critical section a killed contender was inside, if
    /// it was: how long its successor took to enter tells whether the
    /// lease was released at once or ran out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
}

impl Fault {
    /// It killed a contender's process (mpsync, or its command alone).
    pub fn kills_section(&self) -> bool {
        matches!(self.kind, FaultKind::ContenderKill | FaultKind::CommandKill)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_serialized_names() {
        for store in [StoreKind::Memory, StoreKind::Etcd, StoreKind::Kubernetes] {
            for kind in FaultKind::for_run(store, true) {
                assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{}\"", kind.name()));
            }
        }
        assert!(!FaultKind::for_run(StoreKind::Memory, false).contains(&FaultKind::HolderPartition));
        for kind in FaultKind::for_run(StoreKind::Etcd, true) {
            assert_eq!(kind.name().parse::<FaultKind>(), Ok(kind));
        }
        assert!("nothing".parse::<FaultKind>().is_err());
    }
}
