//! Injects one fault of a given kind into a running run.

use std::time::Duration;

use testkit::relay::Mode;

use crate::cluster::{Cluster, STORE_TIMEOUT, StoreProcess};
use crate::contender::{Contenders, SKEWED};
use crate::electors::{PORT_BACKOFF, PORT_TRIES, Stop};
use crate::fault::{Fault, FaultKind};
use crate::fence::Fence;
use crate::procs::{self, signal};
use crate::rng::Rng;

/// What a fault acts on.
pub struct Target<'a> {
    /// The store, the network and the electors.
    pub cluster: &'a mut Cluster,
    /// The contenders.
    pub contenders: &'a Contenders,
    /// The history's clock, and who is inside a section.
    pub fence: &'a Fence,
    /// The lease TTL.
    pub ttl: Duration,
}

/// Injects a fault of `kind` and returns once it is over, with its record;
/// `None` when there was nothing to aim it at right now.
pub async fn inject(kind: FaultKind, t: Target<'_>, rng: &mut Rng) -> anyhow::Result<Option<Fault>> {
    let from_us = t.fence.now_us();
    let mut fault = Fault { kind, client: None, from_us, to_us: from_us, freezes_section: false, lock: None };
    match kind {
        FaultKind::ContenderKill | FaultKind::ContenderFreeze | FaultKind::HolderFreeze => {
            // Under libfaketime a frozen mpsync is not what it is on a real
            // machine (see crate::clock): the skewed holder is only killed.
            let all: Vec<_> = t
                .contenders
                .running()
                .into_iter()
                .filter(|(client, _)| kind == FaultKind::ContenderKill || client != SKEWED)
                .collect();
            if all.is_empty() {
                return Ok(None);
            }
            let (client, process) = all[rng.below(all.len() as u64) as usize].clone();
            fault.client = Some(client.clone());
            // Longer than the TTL: the lease runs out meanwhile.
            let frozen = t.ttl.mul_f64(1.2 + 1.8 * rng.unit());
            match kind {
                FaultKind::ContenderKill => {
                    // An `mpsync lock` is inside a section while its
                    // command runs (its last section may have been killed
                    // inside, and it waits for the next).
                    let inside = process.whole_app || procs::worker_below(process.pid).is_some();
                    fault.lock = t.fence.section_of(&client).filter(|_| inside);
                    signal(process.pid, "KILL");
                }
                FaultKind::ContenderFreeze => {
                    fault.freezes_section = process.whole_app;
                    signal(process.pid, "STOP");
                    tokio::time::sleep(frozen).await;
                    signal(process.pid, "CONT");
                }
                _ => {
                    // mpsync, its watchdog and the command: nobody is left
                    // to act, and the session stays open, silent.
                    fault.freezes_section = true;
                    let stopped = procs::freeze_tree(process.pid);
                    tokio::time::sleep(frozen).await;
                    procs::resume(&stopped);
                }
            }
        }
        FaultKind::CommandKill => {
            // The command alone, inside its section: mpsync sees it exit.
            let workers: Vec<_> = t
                .contenders
                .running()
                .into_iter()
                .filter(|(client, p)| !p.whole_app && t.fence.inside(client))
                .filter_map(|(client, p)| Some((client, procs::worker_below(p.pid)?)))
                .collect();
            if workers.is_empty() {
                return Ok(None);
            }
            let (client, worker) = workers[rng.below(workers.len() as u64) as usize].clone();
            fault.lock = t.fence.section_of(&client);
            fault.client = Some(client);
            signal(worker, "KILL");
        }
        FaultKind::HolderPartition => {
            let Some(link) = &t.contenders.skewed_link else { return Ok(None) };
            // Inside a section, or soon: it waits its turn among the others.
            let by = tokio::time::Instant::now() + t.ttl * 3;
            while !(t.contenders.is_running(SKEWED) && t.fence.inside(SKEWED)) {
                if tokio::time::Instant::now() >= by {
                    return Ok(None);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            fault.client = Some(SKEWED.to_owned());
            fault.from_us = t.fence.now_us();
            // Longer than the TTL: its renewals cannot get through until
            // its lease has run out.
            link.set(Mode::BlackHole);
            tokio::time::sleep(t.ttl.mul_f64(1.2 + 1.8 * rng.unit())).await;
            link.set(Mode::Pass);
        }
        FaultKind::ElectorRestart | FaultKind::ElectorStop => {
            let i = rng.below(t.cluster.electors.len() as u64) as usize;
            let how = if kind == FaultKind::ElectorStop { Stop::Graceful } else { Stop::Kill };
            t.cluster.electors.restart(i, how).await?;
        }
        FaultKind::StorePause => {
            let pause = STORE_TIMEOUT.mul_f64(1.5 + rng.unit());
            match &t.cluster.store {
                StoreProcess::Etcd(etcd) => {
                    etcd.pause()?;
                    tokio::time::sleep(pause).await;
                    etcd.resume()?;
                }
                StoreProcess::Kubernetes(api) => {
                    api.pause();
                    tokio::time::sleep(pause).await;
                    api.resume();
                }
                StoreProcess::None => return Ok(None),
            }
        }
        FaultKind::EtcdMemberRestart | FaultKind::EtcdLeaderRestart => {
            let StoreProcess::Etcd(etcd) = &mut t.cluster.store else { return Ok(None) };
            let leader = match kind {
                FaultKind::EtcdLeaderRestart => etcd.leader().await,
                _ => None,
            };
            let member = leader.unwrap_or_else(|| rng.below(etcd.size() as u64) as usize);
            etcd.kill_member(member).await?;
            // Down for a while: the others carry on (or elect).
            tokio::time::sleep(STORE_TIMEOUT.mul_f64(1.0 + 2.0 * rng.unit())).await;
            let mut tries = 0;
            while let Err(e) = etcd.restart_member(member).await {
                // Its port taken meanwhile by some connection's ephemeral
                // port: wait for that to go.
                tries += 1;
                anyhow::ensure!(tries < PORT_TRIES, "restarting etcd member {member}: {e:#}");
                tokio::time::sleep(PORT_BACKOFF).await;
            }
        }
        FaultKind::NetworkDelay => {
            t.cluster.network.set(Mode::Delay(Duration::from_millis(50 + rng.below(300))));
            tokio::time::sleep(t.ttl.mul_f64(0.5 + rng.unit())).await;
            t.cluster.network.set(Mode::Pass);
        }
        FaultKind::NetworkBlackhole => {
            t.cluster.network.set(Mode::BlackHole);
            tokio::time::sleep(STORE_TIMEOUT.mul_f64(1.5 + rng.unit())).await;
            t.cluster.network.set(Mode::Pass);
        }
        FaultKind::NetworkCut => t.cluster.network.cut(),
        // Never drawn: the run's end is no fault to inject.
        FaultKind::RunEnd => return Ok(None),
        FaultKind::StoreRestart => {
            let mut tries = 0;
            loop {
                let restarted = match &mut t.cluster.store {
                    StoreProcess::Etcd(etcd) => etcd.restart().await,
                    StoreProcess::Kubernetes(api) => api.restart().await.map_err(anyhow::Error::from),
                    StoreProcess::None => return Ok(None),
                };
                let Err(e) = restarted else { break };
                // Its port taken meanwhile by some connection's ephemeral
                // port: wait for that to go.
                tries += 1;
                anyhow::ensure!(tries < PORT_TRIES, "restarting the store: {e:#}");
                tokio::time::sleep(PORT_BACKOFF).await;
            }
        }
    }
    fault.to_us = t.fence.now_us();
    Ok(Some(fault))
}
