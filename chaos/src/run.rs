//! One chaos run: a store, electors, contenders and faults, then the check.
//!
//! Contenders take locks in a loop through real clients:
//! - `mpsync lock --ttl T NAME -- chaos-worker` (one process per section);
//! - the `chaos` wasm app under `mpsync run` (native imports), and its
//!   portable build under `mpsync run --no-sync-imports`, when the wasm
//!   components are given; plus a careless one (`--careless`) that writes
//!   without checking its lease, so that fencing has late writes to refuse.
//!
//! Every section reports to the fencing-aware resource ([`crate::fence`]).
//! Meanwhile faults come at random times from a seeded generator (the seed
//! is printed, so a run can be repeated): a contender SIGKILLed, a
//! contender SIGSTOPped for longer than its TTL, an elector SIGKILLed and
//! restarted on the same address (and, on the memory store, the same state
//! file), the store paused past the elector's store timeout, the store
//! restarted; on etcd (a 3-member cluster) a member, or the raft leader,
//! killed and restarted; and the network between electors and store
//! delayed, black-holed past the store timeout, or cut (a TCP relay). The run ends after the asked number of hand-overs or its
//! time limit, whichever comes first.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use testkit::elector::ElectorProcess;
use tokio::process::Command;
use tokio::sync::watch;

use testkit::relay::{Mode, Relay};

use crate::check::{Fault, Findings, check};
use crate::fence::Fence;
use crate::rng::Rng;

/// A server restarted on its old port may find it taken for a while by an
/// outgoing connection's ephemeral port: try this often, this far apart.
const PORT_TRIES: u32 = 100;
const PORT_BACKOFF: Duration = Duration::from_millis(100);

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
    pub fn beside(exe: &std::path::Path) -> anyhow::Result<Bins> {
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
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The store.
    pub store: StoreKind,
    /// Stop after this many hand-overs...
    pub handovers: usize,
    /// ...or after this long.
    pub time_limit: Duration,
    /// The seed of every random choice.
    pub seed: u64,
    /// `mpsync lock` contenders.
    pub contenders: usize,
    /// Locks they share.
    pub locks: usize,
    /// Lease TTL.
    pub ttl: Duration,
    /// Mean time between faults.
    pub fault_every: Duration,
    /// Electors sharing the store (1 on the memory store).
    pub electors: usize,
    /// The binaries.
    pub bins: Bins,
    /// Append the history here too, as JSON lines.
    pub history: Option<PathBuf>,
    /// Print a line per fault and progress.
    pub verbose: bool,
    /// Delete an elector's state file when restarting it: the memory store
    /// as it was before it had one. Only to show that the checker catches
    /// what that breaks.
    pub forget_state: bool,
}

/// What a run did and found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The store.
    pub store: StoreKind,
    /// The seed (repeat the run with `--seed`).
    pub seed: u64,
    /// How long it ran, in seconds.
    pub seconds: f64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, usize>,
    /// What the checker found.
    pub findings: Findings,
}

impl Report {
    /// The report as text, a line per figure.
    pub fn text(&self) -> String {
        let f = &self.findings;
        let faults: Vec<String> = self.faults.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let mut out = format!(
            "store {:?}, seed {}, {:.1} s\n\
             critical sections {} (hand-overs {}, {:.0}/s), killed inside {}, writes accepted {}\n\
             faults: {}\n\
             overlapping sections: {} fenced (a frozen holder woke up late), {} violating\n\
             stale writes: {} refused by the resource, {} accepted\n\
             legitimate writes refused {}, token regressions {}\n\
             verdict: {}\n",
            self.store,
            self.seed,
            self.seconds,
            f.sections,
            f.handovers,
            f.handovers as f64 / self.seconds.max(0.001),
            f.killed_inside,
            f.writes_accepted,
            if faults.is_empty() { "none".into() } else { faults.join(", ") },
            f.overlaps_fenced,
            f.overlaps_violating,
            f.stale_refused,
            f.stale_accepted,
            f.legitimate_refused,
            f.token_regressions,
            if f.safe() { "SAFE" } else { "VIOLATED" },
        );
        for e in &f.examples {
            out.push_str(&format!("  violation: {e}\n"));
        }
        out
    }
}

/// The running contender processes, by client id, for the faults to aim at.
#[derive(Default)]
struct Running {
    pids: BTreeMap<String, (u32, bool)>,
}

type Shared<T> = Arc<Mutex<T>>;

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn signal(pid: u32, name: &str) {
    let _ =
        std::process::Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).stderr(Stdio::null()).status();
}

enum StoreProcess {
    None,
    Etcd(testkit::Etcd),
    Kubernetes(testkit::LeaseApi),
}

/// The network between the electors and the store: one relay per store
/// address.
#[derive(Default)]
struct Network {
    relays: Vec<Relay>,
}

impl Network {
    fn set(&self, mode: Mode) {
        self.relays.iter().for_each(|r| r.set(mode));
    }
}

struct Electors {
    bin: PathBuf,
    args: Vec<String>,
    forget_state: bool,
    state_dir: PathBuf,
    running: Vec<(SocketAddr, Option<ElectorProcess>)>,
}

impl Electors {
    async fn start(
        bin: PathBuf,
        args: Vec<String>,
        count: usize,
        state_dir: &std::path::Path,
        forget_state: bool,
    ) -> anyhow::Result<Self> {
        let mut electors = Electors { bin, args, forget_state, state_dir: state_dir.to_owned(), running: Vec::new() };
        for i in 0..count {
            let args = electors.args(i);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let p = ElectorProcess::spawn(&electors.bin, &refs).await.context("starting an elector")?;
            electors.running.push((p.addr(), Some(p)));
        }
        Ok(electors)
    }

    /// Elector `i`'s arguments: each has a state file of its own, which
    /// outlives its restarts.
    fn args(&self, i: usize) -> Vec<String> {
        let mut args = self.args.clone();
        args.extend(["--state-file".into(), self.state_dir.join(format!("elector-{i}.json")).display().to_string()]);
        args
    }

    fn urls(&self) -> Vec<String> {
        self.running.iter().map(|(a, _)| format!("http://{a}")).collect()
    }

    async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let args = self.args(i);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (addr, process) = &mut self.running[i];
        if let Some(mut p) = process.take() {
            p.signal("KILL")?;
            p.wait().await?;
        }
        if self.forget_state {
            let _ = std::fs::remove_file(self.state_dir.join(format!("elector-{i}.json")));
        }
        // The same address: the contenders keep talking to it.
        let mut last = None;
        for _ in 0..PORT_TRIES {
            match ElectorProcess::spawn_on(&self.bin, &refs, *addr).await {
                Ok(p) => {
                    *process = Some(p);
                    return Ok(());
                }
                // The port is briefly held by the dying process's sockets.
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(PORT_BACKOFF).await;
                }
            }
        }
        bail!("restarting the elector on {addr}: {}", last.map(|e| e.to_string()).unwrap_or_default())
    }
}

/// A contender: runs the commands `next` makes, one after another, until
/// the run stops, keeping its pid where the faults can find it.
/// `whole_app`: the process runs the critical section's own code (freezing
/// it freezes the section).
async fn contend(
    client: String,
    whole_app: bool,
    running: Shared<Running>,
    stop: watch::Receiver<bool>,
    mut next: impl FnMut() -> Command,
) {
    while !*stop.borrow() {
        let spawned =
            next().stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true).spawn();
        let Ok(mut child) = spawned else { break };
        if let Some(pid) = child.id() {
            guard(&running).pids.insert(client.clone(), (pid, whole_app));
        }
        let _ = child.wait().await;
        guard(&running).pids.remove(&client);
    }
}

/// Runs one chaos run and returns its report.
pub async fn run(config: Config) -> anyhow::Result<Report> {
    let origin = Instant::now();
    let work = testkit::temp_dir("chaos")?;
    let history = match &config.history {
        Some(p) => Some(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => None,
    };
    let fence = Fence::new(origin, history);
    let fence_addr = fence.serve(tokio::net::TcpListener::bind("127.0.0.1:0").await?).await?;

    let store_timeout = Duration::from_millis(500);
    let mut store = StoreProcess::None;
    let mut network = Network::default();
    let mut args: Vec<String> = vec!["--log".into(), "error".into(), "--identity".into(), "chaos".into()];
    args.extend(["--store-timeout".into(), humantime::format_duration(store_timeout).to_string()]);
    let electors_wanted = match config.store {
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
            let kubeconfig = api.write_kubeconfig_via(&work, "chaos", &via)?;
            args.extend([
                "--store".into(),
                "kubernetes".into(),
                "--kubeconfig".into(),
                kubeconfig.display().to_string(),
            ]);
            store = StoreProcess::Kubernetes(api);
            config.electors.max(1)
        }
    };
    let electors =
        Electors::start(config.bins.elector.clone(), args, electors_wanted, &work, config.forget_state).await?;
    let urls = electors.urls();
    let electors = Arc::new(tokio::sync::Mutex::new(electors));

    let running: Shared<Running> = Arc::default();
    let faults: Shared<Vec<Fault>> = Arc::default();
    let (stop_tx, stop) = watch::channel(false);
    let mut rng = Rng::new(config.seed);
    let mut tasks = Vec::new();

    let lock_names: Vec<String> = (0..config.locks.max(1)).map(|i| format!("chaos-{i}")).collect();
    for c in 0..config.contenders {
        let client = format!("lock-{c}");
        let url = urls[c % urls.len()].clone();
        let (bins, locks, ttl) = (config.bins.clone(), lock_names.clone(), config.ttl);
        let mut rng = rng.fork();
        // One `mpsync lock` per critical section.
        let next = move || {
            let lock = &locks[rng.below(locks.len() as u64) as usize];
            let mut cmd = Command::new(&bins.mpsync);
            cmd.args(["lock", "--elector", &url, "--holder", &client, "--timeout", "10s"])
                .arg("--ttl")
                .arg(humantime::format_duration(ttl).to_string())
                .args([lock.as_str(), "--"])
                .arg(&bins.worker)
                .env("CHAOS_FENCE", fence_addr.to_string())
                .env("CHAOS_CLIENT", &client)
                .env("CHAOS_WRITES", (1 + rng.below(4)).to_string())
                .env("CHAOS_GAP_MS", (1 + rng.below(ttl.as_millis() as u64 / 10 + 1)).to_string());
            cmd
        };
        tasks.push(tokio::spawn(contend(format!("lock-{c}"), false, running.clone(), stop.clone(), next)));
    }
    if let Some(dir) = &config.bins.wasm {
        let apps = [
            ("wasm-0", "chaos.wasm", None, None),
            ("wasm-1", "chaos.portable.wasm", Some("--no-sync-imports"), None),
            ("careless-0", "chaos.wasm", None, Some("--careless")),
        ];
        for (c, (client, app, extra, careless)) in apps.into_iter().enumerate() {
            let client = client.to_owned();
            let url = urls[c % urls.len()].clone();
            let (bins, locks, ttl) = (config.bins.clone(), lock_names.join(","), config.ttl);
            let (app, seed) = (dir.join(app), rng.next_u64());
            // One `mpsync run` taking turns until it is killed.
            let next = {
                let client = client.clone();
                move || {
                    let mut cmd = Command::new(&bins.mpsync);
                    cmd.args(["run", "--elector", &url]).args(extra).arg(&app);
                    cmd.args(["--fence", &format!("http://{fence_addr}"), "--client", &client])
                        .args(["--locks", &locks, "--ttl-ms", &ttl.as_millis().to_string()])
                        .args(["--seed", &seed.to_string(), "--rounds", "0"])
                        .args(careless);
                    cmd
                }
            };
            tasks.push(tokio::spawn(contend(client, true, running.clone(), stop.clone(), next)));
        }
    }

    // Faults, one at a time, until the run ends.
    let mut kinds = vec!["contender-kill", "contender-freeze", "elector-restart"];
    match config.store {
        StoreKind::Memory => {}
        StoreKind::Etcd => kinds.extend([
            "store-pause",
            "store-restart",
            "etcd-member-restart",
            "etcd-leader-restart",
            "network-delay",
            "network-blackhole",
            "network-cut",
        ]),
        StoreKind::Kubernetes => {
            kinds.extend(["store-pause", "store-restart", "network-delay", "network-blackhole", "network-cut"])
        }
    }
    let deadline = origin + config.time_limit;
    // The first section on each lock is not a hand-over.
    let sections_wanted = config.handovers + lock_names.len();
    let mut last_progress = Instant::now();
    loop {
        let gap = config.fault_every.mul_f64(0.5 + rng.unit());
        let until = (Instant::now() + gap).min(deadline);
        // Or earlier, once the hand-overs are done.
        tokio::select! {
            () = tokio::time::sleep_until(until.into()) => {}
            () = fence.wait_entered(sections_wanted) => {}
        }
        if fence.entered() >= sections_wanted || Instant::now() >= deadline {
            break;
        }
        if config.verbose && last_progress.elapsed() > Duration::from_secs(5) {
            eprintln!("chaos: {} sections so far", fence.entered());
            last_progress = Instant::now();
        }
        let kind = kinds[rng.below(kinds.len() as u64) as usize];
        let from_us = fence.now_us();
        let mut fault = Fault { kind: kind.into(), client: None, from_us, to_us: from_us, freezes_section: false };
        match kind {
            "contender-kill" | "contender-freeze" => {
                let pick = {
                    let r = guard(&running);
                    let all: Vec<(String, (u32, bool))> = r.pids.iter().map(|(k, v)| (k.clone(), *v)).collect();
                    (!all.is_empty()).then(|| all[rng.below(all.len() as u64) as usize].clone())
                };
                let Some((client, (pid, whole_app))) = pick else { continue };
                fault.client = Some(client);
                if kind == "contender-kill" {
                    signal(pid, "KILL");
                } else {
                    // Longer than the TTL: the lease runs out meanwhile.
                    let frozen = config.ttl.mul_f64(1.2 + 1.8 * rng.unit());
                    fault.freezes_section = whole_app;
                    signal(pid, "STOP");
                    tokio::time::sleep(frozen).await;
                    signal(pid, "CONT");
                }
            }
            "elector-restart" => {
                let mut e = electors.lock().await;
                let i = rng.below(e.running.len() as u64) as usize;
                e.restart(i).await?;
            }
            "store-pause" => {
                let pause = store_timeout.mul_f64(1.5 + rng.unit());
                match &store {
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
                    StoreProcess::None => {}
                }
            }
            "etcd-member-restart" | "etcd-leader-restart" => {
                if let StoreProcess::Etcd(etcd) = &mut store {
                    let member = match kind {
                        "etcd-leader-restart" => etcd.leader().await,
                        _ => None,
                    }
                    .unwrap_or_else(|| rng.below(etcd.size() as u64) as usize);
                    etcd.kill_member(member).await?;
                    // Down for a while: the others carry on (or elect).
                    tokio::time::sleep(store_timeout.mul_f64(1.0 + 2.0 * rng.unit())).await;
                    let mut tries = 0;
                    while let Err(e) = etcd.restart_member(member).await {
                        // Its port taken meanwhile by some connection's
                        // ephemeral port: wait for that to go.
                        tries += 1;
                        anyhow::ensure!(tries < PORT_TRIES, "restarting etcd member {member}: {e:#}");
                        tokio::time::sleep(PORT_BACKOFF).await;
                    }
                }
            }
            "network-delay" => {
                network.set(Mode::Delay(Duration::from_millis(50 + rng.below(300))));
                tokio::time::sleep(config.ttl.mul_f64(0.5 + rng.unit())).await;
                network.set(Mode::Pass);
            }
            "network-blackhole" => {
                network.set(Mode::BlackHole);
                tokio::time::sleep(store_timeout.mul_f64(1.5 + rng.unit())).await;
                network.set(Mode::Pass);
            }
            "network-cut" => network.relays.iter().for_each(Relay::cut),
            "store-restart" => {
                let mut tries = 0;
                loop {
                    let restarted = match &mut store {
                        StoreProcess::Etcd(etcd) => etcd.restart().await,
                        StoreProcess::Kubernetes(api) => api.restart().await.map_err(anyhow::Error::from),
                        StoreProcess::None => Ok(()),
                    };
                    let Err(e) = restarted else { break };
                    // Its port taken meanwhile by some connection's
                    // ephemeral port: wait for that to go.
                    tries += 1;
                    anyhow::ensure!(tries < PORT_TRIES, "restarting the store: {e:#}");
                    tokio::time::sleep(PORT_BACKOFF).await;
                }
            }
            _ => {}
        }
        fault.to_us = fence.now_us();
        if config.verbose {
            eprintln!("chaos: {} {}", fault.kind, fault.client.as_deref().unwrap_or(""));
        }
        guard(&faults).push(fault);
    }

    stop_tx.send_replace(true);
    for (_, (pid, _)) in guard(&running).pids.iter() {
        signal(*pid, "KILL");
    }
    for t in tasks {
        let _ = t.await;
    }
    let events = fence.events();
    let faults = guard(&faults).clone();
    let findings = check(&events, &faults);
    let mut by_kind = BTreeMap::new();
    for f in &faults {
        *by_kind.entry(f.kind.clone()).or_insert(0) += 1;
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&work);
    Ok(Report {
        store: config.store,
        seed: config.seed,
        seconds: origin.elapsed().as_secs_f64(),
        faults: by_kind,
        findings,
    })
}
