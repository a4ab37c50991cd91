//! The server side of a run: the store (an etcd cluster, the Lease API
//! emulator, or none for the memory store), the network between electors
//! and store (a relay per store address), and the electors.

use std::path::Path;
use std::time::Duration;

use testkit::relay::{Mode, Relay};

use crate::config::Config;
use crate::electors::Electors;
use crate::store::StoreKind;

/// How long an elector waits for its store; faults that stall the store
/// last longer than this.
pub const STORE_TIMEOUT: Duration = Duration::from_millis(500);

/// The store's processes.
pub enum StoreProcess {
    /// The memory store lives in the elector.
    None,
    /// A 3-member etcd cluster.
    Etcd(testkit::Etcd),
    /// The Kubernetes Lease API emulator.
    Kubernetes(testkit::LeaseApi),
}

/// The network between the electors and the store: one relay per store
/// address.
#[derive(Default)]
pub struct Network {
    /// The relays.
    pub relays: Vec<Relay>,
}

impl Network {
    /// Sets every relay's mode.
    pub fn set(&self, mode: Mode) {
        self.relays.iter().for_each(|r| r.set(mode));
    }

    /// Closes every connection.
    pub fn cut(&self) {
        self.relays.iter().for_each(Relay::cut);
    }
}

/// The store, the network and the electors of one run.
pub struct Cluster {
    /// The store.
    pub store: StoreProcess,
    /// The network between electors and store.
    pub network: Network,
    /// The electors.
    pub electors: Electors,
}

impl Cluster {
    /// Starts the store `config` names and its electors, with state files
    /// and any kubeconfig in `work` and the electors' output in `log`.
    pub async fn start(config: &Config, work: &Path, log: &Path) -> anyhow::Result<Cluster> {
        let mut store = StoreProcess::None;
        let mut network = Network::default();
        // `CHAOS_ELECTOR_LOG` (the electors' `--log`, `error` by default)
        // tells more of what they did, e.g. `info` for each session release.
        let mut args: Vec<String> = vec![
            "--log".into(),
            std::env::var("CHAOS_ELECTOR_LOG").unwrap_or_else(|_| "error".into()),
            "--identity".into(),
            "chaos".into(),
        ];
        args.extend(["--store-timeout".into(), humantime::format_duration(STORE_TIMEOUT).to_string()]);
        if config.unsafe_release_on_own_close {
            args.push("--chaos-unsafe-release-on-own-close".into());
        }
        let count = match config.store {
            StoreKind::Memory => {
                args.extend(["--store".into(), "memory".into()]);
                1
            }
            StoreKind::Etcd => {
                let etcd = testkit::Etcd::cluster(3).await?;
                for addr in etcd.addrs() {
                    network.relays.push(Relay::start(addr).await?);
                }
                let endpoints: Vec<String> = network.relays.iter().map(|r| format!("http://{}", r.addr())).collect();
                args.extend(["--store".into(), "etcd".into(), "--etcd-endpoints".into(), endpoints.join(",")]);
                store = StoreProcess::Etcd(etcd);
                config.electors.max(1)
            }
            StoreKind::Kubernetes => {
                let api = testkit::LeaseApi::start().await?;
                let target = api.url().trim_start_matches("http://").parse()?;
                network.relays.push(Relay::start(target).await?);
                let via = format!("http://{}", network.relays[0].addr());
                let kubeconfig = api.write_kubeconfig_via(work, "chaos", &via)?;
                args.extend(["--store".into(), "kubernetes".into()]);
                args.extend(["--kubeconfig".into(), kubeconfig.display().to_string()]);
                store = StoreProcess::Kubernetes(api);
                config.electors.max(1)
            }
        };
        let electors =
            Electors::start(config.bins.elector.clone(), args, count, work, log, config.forget_state).await?;
        Ok(Cluster { store, network, electors })
    }
}
