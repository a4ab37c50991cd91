//! The contenders: processes that take locks in a loop through real
//! clients and report every critical section to the fencing resource.
//!
//! - `lock-N`: `mpsync lock --ttl T NAME -- chaos-worker`, one process per
//!   section; the worker writes a few times, a little apart, and exits
//!   (with lingering commands, a SIGTERM does not stop it: it writes on
//!   until the SIGKILL a grace later).
//! - `wasm-0`, `wasm-1`: the `chaos` wasm app under `mpsync run` (native
//!   imports) and its portable build under `mpsync run --no-sync-imports`,
//!   taking turns until killed; `careless-0`, the same app with `--careless`,
//!   writes without checking its lease, so that fencing has late writes to
//!   refuse.
//! - `sem-N`: `mpsync lock --permits 2 chaos-sem -- chaos-worker`, a
//!   permit of a counting semaphore of [`PERMITS`] ([`SEMAPHORE`]); `rw-N`:
//!   on the read-write lock [`RW_LOCK`], a reader (`--shared`) two times in
//!   three, else the writer. Their workers report how they hold the lock
//!   ([`Hold`]), and the resource fences them by it.
//! - `skewed-0` (with a clock rate): an `mpsync lock` contender whose every
//!   process sees its clocks run at that rate ([`crate::clock`]), that
//!   reaches its elector through a relay of its own (which
//!   [`FaultKind::HolderPartition`](crate::fault::FaultKind) black-holes),
//!   and whose sections last one to three TTLs of its own time, so that
//!   they outlive leases and only renewals keep them legitimate.
//!
//! - `elect-N`: `mpsync elect` in one election, its worker the leader's
//!   server: see [`crate::elect`].
//!
//! - `racer-N` (the fairness control, instead of all of the above): see
//!   [`crate::race`].
//!
//! Every contender holds its leases under a session with its elector (our
//! clients' default), unless the run says otherwise (`MPSYNC_NO_SESSION`).
//!
//! The run marks in the history when it starts each `mpsync lock` process
//! ([`Step::Wait`]: the contender starts waiting for that lock) and when
//! the process ends ([`Step::Quit`]), for the fairness check
//! ([`crate::fair`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mpsync_core::lock;
use testkit::relay::Relay;
use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Skew;
use crate::config::Config;
use crate::elect::Candidate;
use crate::fence::{Fence, Hold, Step};
use crate::procs::signal;
use crate::race::Racer;
use crate::rng::Rng;

/// How long a contender waits before trying again to start a process that
/// failed to start.
const RESPAWN_AFTER: Duration = Duration::from_millis(100);

/// The client id of the contender whose clock is skewed.
pub const SKEWED: &str = "skewed-0";

/// The counting semaphore the `sem-N` contenders take a permit of.
pub const SEMAPHORE: &str = "chaos-sem";
/// How many permits it has.
pub const PERMITS: u32 = 2;
/// The read-write lock of the `rw-N` contenders.
pub const RW_LOCK: &str = "chaos-rw";

/// What an `mpsync lock` contender takes, section after section.
#[derive(Debug, Clone)]
enum Takes {
    /// One of the run's plain locks, at random.
    Locks(Vec<String>),
    /// A permit of [`SEMAPHORE`].
    Permit,
    /// [`RW_LOCK`], as a reader two times in three, else as the writer.
    ReadWrite,
}

/// A running contender process, for the faults to aim at.
#[derive(Debug, Clone, Copy)]
pub struct Process {
    /// Its pid.
    pub pid: u32,
    /// Whether the process runs the critical section's own code (freezing
    /// it freezes the section).
    pub whole_app: bool,
}

/// The contenders of a run.
pub struct Contenders {
    running: Arc<Mutex<BTreeMap<String, Process>>>,
    tasks: Vec<JoinHandle<()>>,
    history: Fence,
    /// The skewed contender's link to its elector.
    pub skewed_link: Option<Relay>,
}

/// What every contender needs to know.
pub struct Setup<'a> {
    /// The run's configuration.
    pub config: &'a Config,
    /// The electors' URLs; contender `i` talks to `urls[i % len]`.
    pub urls: &'a [String],
    /// The electors' addresses, in the same order.
    pub addrs: &'a [SocketAddr],
    /// The fencing resource.
    pub fence: SocketAddr,
    /// The history, for the marks of the fairness check.
    pub history: &'a Fence,
    /// The locks they share.
    pub locks: &'a [String],
    /// The clock fault, if any.
    pub skew: Option<&'a Skew>,
    /// A folder for the run's files (the election contenders' leader
    /// files).
    pub work: &'a std::path::Path,
}

impl Contenders {
    /// Starts every contender; they run until `stop` turns true.
    pub async fn start(setup: Setup<'_>, rng: &mut Rng, stop: watch::Receiver<bool>) -> anyhow::Result<Contenders> {
        let config = setup.config;
        let history = setup.history.clone();
        let mut contenders =
            Contenders { running: Arc::default(), tasks: Vec::new(), skewed_link: None, history: history.clone() };
        if config.race {
            // The fairness control: racers alone (a wasm app would wait in
            // line, and racers are refused while anyone does).
            for c in 0..config.contenders {
                let racer = Racer {
                    client: format!("racer-{c}"),
                    url: setup.urls[c % setup.urls.len()].clone(),
                    locks: setup.locks.to_vec(),
                    ttl: config.ttl,
                    fence: history.clone(),
                };
                contenders.tasks.push(tokio::spawn(racer.run(rng.fork(), stop.clone())));
            }
            return Ok(contenders);
        }
        let plain = Takes::Locks(setup.locks.to_vec());
        let shared = std::iter::repeat_n(("sem", Takes::Permit), config.semaphore)
            .chain(std::iter::repeat_n(("rw", Takes::ReadWrite), config.readers_writers));
        let mut counts = BTreeMap::new();
        // The shared locks' contenders draw from a generator of their own,
        // so that a seed draws the same faults as before they existed.
        let mut own = Rng::new(config.seed ^ 0x5ea7_ed00);
        for (c, (kind, takes)) in
            std::iter::repeat_n(("lock", plain.clone()), config.contenders).chain(shared).enumerate()
        {
            let n = counts.entry(kind).or_insert(0);
            let client = format!("{kind}-{n}");
            *n += 1;
            let url = setup.urls[c % setup.urls.len()].clone();
            let rng = if kind == "lock" { rng.fork() } else { own.fork() };
            let next = lock_contender(&setup, client.clone(), url, takes, None, rng);
            contenders.spawn(client, false, stop.clone(), next);
        }
        // A generator of their own too, for the same reason.
        let mut electing = Rng::new(config.seed ^ 0xe1ec_7000);
        for n in 0..config.elections {
            let candidate = Candidate {
                client: crate::elect::candidate(n),
                url: setup.urls[n % setup.urls.len()].clone(),
                address: format!("127.0.0.1:{}", 1000 + n),
                mpsync: config.bins.mpsync.clone(),
                worker: config.bins.worker.clone(),
                fence: setup.fence,
                ttl: config.ttl,
                dir: setup.work.to_owned(),
                sessions: config.sessions,
            };
            let client = candidate.client.clone();
            contenders.spawn(client, false, stop.clone(), candidate.commands(electing.fork()));
        }
        if let Some(skew) = setup.skew {
            let relay = Relay::start(setup.addrs[0]).await?;
            let url = format!("http://{}", relay.addr());
            contenders.skewed_link = Some(relay);
            let next = lock_contender(&setup, SKEWED.to_owned(), url, plain, Some(skew), rng.fork());
            contenders.spawn(SKEWED.to_owned(), false, stop.clone(), next);
        }
        if let Some(dir) = &config.bins.wasm {
            let apps = [
                ("wasm-0", "chaos.wasm", None, None),
                ("wasm-1", "chaos.portable.wasm", Some("--no-sync-imports"), None),
                ("careless-0", "chaos.wasm", None, Some("--careless")),
            ];
            for (c, (client, app, extra, careless)) in apps.into_iter().enumerate() {
                let url = setup.urls[c % setup.urls.len()].clone();
                let (mpsync, locks, ttl) = (config.bins.mpsync.clone(), setup.locks.join(","), config.ttl);
                let sessions = config.sessions;
                let (app, seed, fence) = (dir.join(app), rng.next_u64(), setup.fence);
                // One `mpsync run` taking turns until it is killed.
                let next = move || {
                    let mut cmd = Command::new(&mpsync);
                    cmd.args(["run", "--elector", &url]).args(extra).arg(&app);
                    cmd.args(["--fence", &format!("http://{fence}"), "--client", client])
                        .args(["--locks", &locks, "--ttl-ms", &ttl.as_millis().to_string()])
                        .args(["--seed", &seed.to_string(), "--rounds", "0"])
                        .args(careless);
                    no_session(&mut cmd, sessions);
                    // It takes turns on every lock: no mark of its own.
                    (cmd, None)
                };
                contenders.spawn(client.to_owned(), true, stop.clone(), next);
            }
        }
        Ok(contenders)
    }

    /// The running contender processes, by client id.
    pub fn running(&self) -> Vec<(String, Process)> {
        lock(&self.running).iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Whether `client` has a process running now.
    pub fn is_running(&self, client: &str) -> bool {
        lock(&self.running).contains_key(client)
    }

    /// Kills every contender and waits for their loops to end (the caller
    /// has turned `stop` true first).
    pub async fn stop(self) {
        for (_, p) in lock(&self.running).iter() {
            signal(p.pid, "KILL");
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Runs the commands `next` makes, one after another, until `stop`,
    /// keeping the pid where the faults can find it. A command made with
    /// the lock it waits for (and how it will hold it) is marked in the
    /// history as a wait, from its start to its end.
    fn spawn(
        &mut self,
        client: String,
        whole_app: bool,
        stop: watch::Receiver<bool>,
        mut next: impl FnMut() -> (Command, Option<(String, Hold)>) + Send + 'static,
    ) {
        let (running, history) = (self.running.clone(), self.history.clone());
        self.tasks.push(tokio::spawn(async move {
            while !*stop.borrow() {
                let (mut cmd, waits_for) = next();
                // Before it starts: it cannot have had a place before.
                let mark = |step| {
                    if let Some((lock, hold)) = &waits_for {
                        history.mark(step, lock, &client, 0, *hold);
                    }
                };
                mark(Step::Wait);
                let spawned =
                    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true).spawn();
                let Ok(mut child) = spawned else {
                    mark(Step::Quit);
                    // A binary relinked by a concurrent build is missing
                    // for a moment: try again rather than drop out.
                    tokio::time::sleep(RESPAWN_AFTER).await;
                    continue;
                };
                if let Some(pid) = child.id() {
                    lock(&running).insert(client.clone(), Process { pid, whole_app });
                }
                let _ = child.wait().await;
                lock(&running).remove(&client);
                mark(Step::Quit);
            }
        }));
    }
}

/// An `mpsync lock` contender: one process per critical section, on what
/// it `takes`; `skew` makes its clocks run at another rate and its
/// sections long.
fn lock_contender(
    setup: &Setup<'_>,
    client: String,
    url: String,
    takes: Takes,
    skew: Option<&Skew>,
    mut rng: Rng,
) -> impl FnMut() -> (Command, Option<(String, Hold)>) + Send + 'static {
    let (mpsync, worker, ttl) = (setup.config.bins.mpsync.clone(), setup.config.bins.worker.clone(), setup.config.ttl);
    let (fence, skew) = (setup.fence, skew.cloned());
    let (sessions, linger) = (setup.config.sessions, setup.config.lingering_commands);
    // The control asks the elector for more than the resource is told.
    let over = setup.config.overcommit;
    let (asked, permits) = ((PERMITS + u32::from(over)).to_string(), PERMITS.to_string());
    let writer: &[&str] = if over { &["--shared"] } else { &[] };
    move || {
        // The lock, how it waits for it, and the flags and variables that
        // say so to mpsync and to the worker.
        let (lock, hold, flags, vars): (&str, _, &[&str], &[(&str, &str)]) = match &takes {
            Takes::Locks(locks) => (&locks[rng.below(locks.len() as u64) as usize], Hold::Exclusive, &[], &[]),
            Takes::Permit => (SEMAPHORE, Hold::Shared, &["--permits", &asked], &[("CHAOS_PERMITS", &permits)]),
            Takes::ReadWrite if rng.below(3) < 2 => (RW_LOCK, Hold::Shared, &["--shared"], &[("CHAOS_SHARED", "1")]),
            Takes::ReadWrite => (RW_LOCK, Hold::Exclusive, writer, &[]),
        };
        let (writes, gap) = match skew {
            // One to three TTLs of its own time: renewals must carry it.
            Some(_) => (5 + rng.below(11), ttl / 5),
            None => (1 + rng.below(4), Duration::from_millis(1 + rng.below(ttl.as_millis() as u64 / 10 + 1))),
        };
        let mut cmd = Command::new(&mpsync);
        cmd.args(["lock", "--elector", &url, "--holder", &client, "--timeout", "10s"])
            .arg("--ttl")
            .arg(humantime::format_duration(ttl).to_string())
            .args(flags)
            .args([lock, "--"])
            .arg(&worker)
            .env("CHAOS_FENCE", fence.to_string())
            .env("CHAOS_CLIENT", &client)
            .env("CHAOS_WRITES", writes.to_string())
            .env("CHAOS_GAP_MS", gap.as_millis().to_string())
            .envs(vars.iter().copied());
        if linger {
            cmd.env("CHAOS_LINGER", "1");
        }
        no_session(&mut cmd, sessions);
        if let Some(skew) = &skew {
            skew.apply(&mut cmd);
        }
        (cmd, Some((lock.to_owned(), hold)))
    }
}

/// Makes an `mpsync` command hold its leases without a session unless
/// `sessions` (whatever this process's environment says).
pub(crate) fn no_session(cmd: &mut Command, sessions: bool) {
    if sessions {
        cmd.env_remove("MPSYNC_NO_SESSION");
    } else {
        // "true" rather than "1": clap reads a flag's variable as a bool.
        cmd.env("MPSYNC_NO_SESSION", "true");
    }
}
