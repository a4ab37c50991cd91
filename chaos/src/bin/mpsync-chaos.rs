//! `mpsync-chaos`: one fault-injection run per store, a report each.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chaos::config::{Bins, Config, StoreKind};
use chaos::fault::FaultKind;
use chaos::report::Report;
use chaos::run::run;
use clap::Parser;

/// Runs real clients (`mpsync lock`, and the chaos wasm app under `mpsync
/// run`, native and portable) against a real elector while faults come at
/// random times, on plain locks, a counting semaphore and a read-write lock,
/// and checks the history: no two critical sections whose holds exclude
/// each other (a writer and anyone, two holders of one permit) may
/// overlap unless the earlier holder was frozen (then the fencing resource
/// must refuse its late writes), no stale write may be accepted, and tokens
/// must grow at every hand-over; no waiter may be overtaken by one that
/// came later unless a fault may have cost it its place in line (a line
/// watcher lists the locks to see who waits). A stranger reads held locks and tries to
/// renew and release them without the holder's key: the elector must refuse
/// every attempt. A watch observer follows every lock with one watch
/// (`POST /v1/watch`, resuming the set each elector keeps for it): its
/// views must never show a token going back or a
/// holder that was never granted that token, and must agree with plain
/// reads once the run is over. Candidates stand in an election through
/// `mpsync elect`, and a transferrer asks the leader to hand over: the
/// next term must be the target's while the reservation lasts, and a
/// transfer from a candidate that does not lead must be refused; the
/// electors' histories (`GET /v1/history`) must never show a token going
/// back or a holder that never had its token. With --clock-rate, one more holder runs with its clocks
/// skewed and is cut off from its elector now and then: inside the bound
/// (a rate of 0.8 or more, for the 20% margin) nothing may break; below it,
/// the checker catches the holder working past its lease. Prints a report
/// per store on stdout, naming the file that holds the electors' output
/// (and writes the reports as JSON with --json); exits 1 if any run found a
/// violation.
///
/// Example: `mpsync-chaos --store memory --store etcd --handovers 10000
/// --time-limit 20m --seed 7`.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Stores to run against, one run each (repeatable).
    #[arg(long = "store", value_enum, default_values = ["memory", "etcd", "kubernetes"])]
    stores: Vec<StoreKind>,
    /// Hand-overs per run, of exclusive holds (the plain locks', the
    /// read-write lock's writers'); the run stops after this many (or
    /// --time-limit).
    #[arg(long, default_value_t = 10_000)]
    handovers: usize,
    /// Longest a run may take.
    #[arg(long, default_value = "20m", value_parser = humantime::parse_duration)]
    time_limit: Duration,
    /// Seed of every random choice (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// `mpsync lock` contenders.
    #[arg(long, default_value_t = 4)]
    contenders: usize,
    /// Locks they share.
    #[arg(long, default_value_t = 2)]
    locks: usize,
    /// `mpsync lock --permits 2` contenders on a counting semaphore of 2
    /// permits (chaos-sem): never more than 2 holders at once, each fenced
    /// by its permit.
    #[arg(long, default_value_t = 3)]
    semaphore_contenders: usize,
    /// `mpsync lock` contenders on a read-write lock (chaos-rw), each
    /// section a reader (`--shared`) two times in three, else the writer:
    /// never a reader beside a writer.
    #[arg(long, default_value_t = 3)]
    rw_contenders: usize,
    /// `mpsync elect` contenders in one election (chaos-election), each
    /// term reported by its command as a section with its token; with any,
    /// a transferrer asks the leader to hand over now and then (to a
    /// candidate, away, or from a candidate that does not lead).
    #[arg(long, default_value_t = 3)]
    elect_contenders: usize,
    /// Lease TTL.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Mean time between faults.
    #[arg(long, default_value = "1500ms", value_parser = humantime::parse_duration)]
    fault_every: Duration,
    /// Electors sharing an etcd or Kubernetes store.
    #[arg(long, default_value_t = 2)]
    electors: usize,
    /// Add a holder (`skewed-0`, an `mpsync lock` contender) whose clocks
    /// run at this rate relative to everyone else's, through libfaketime
    /// (0.5: half as fast), and partitions of it from its elector to the
    /// faults. Safe from 0.8 up (the 20% margin); below that the checker
    /// must find violations.
    #[arg(long, value_name = "RATE")]
    clock_rate: Option<f64>,
    /// The folder with chaos.wasm and chaos.portable.wasm (scripts/build-wasm.sh
    /// prints it); without it only `mpsync lock` contends.
    #[arg(long, env = "MPSYNC_WASM_DIR")]
    wasm_dir: Option<PathBuf>,
    /// Write the reports here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep each run's history here, as DIR/STORE.jsonl, and the electors'
    /// output as DIR/STORE-electors.log (without it, the logs go to a
    /// temporary folder, named in the report).
    #[arg(long)]
    history_dir: Option<PathBuf>,
    /// Only check the history in this file (kept with --history-dir), with
    /// the faults kept beside it (STORE.faults.json; without it no fault
    /// excuses anything), and print the findings.
    #[arg(long, value_name = "HISTORY.jsonl")]
    check: Option<PathBuf>,
    /// Draw faults only of this kind (repeatable; default: every kind the
    /// store has): contender-kill, command-kill, contender-freeze,
    /// holder-freeze, elector-restart, elector-stop, store-pause,
    /// store-restart, etcd-member-restart, etcd-leader-restart,
    /// network-delay, network-blackhole, network-cut, holder-partition.
    #[arg(long = "fault", value_name = "KIND")]
    faults: Vec<FaultKind>,
    /// Draw no fault at all: a baseline of the same run (the stranger and
    /// the transferrer still come every --fault-every).
    #[arg(long, conflicts_with = "faults")]
    no_faults: bool,
    /// The contenders hold their leases without sessions (they set
    /// MPSYNC_NO_SESSION): a dead holder's lease runs out at its TTL.
    #[arg(long)]
    no_session: bool,
    /// `mpsync lock`'s command goes on writing after a SIGTERM, every
    /// 10 ms, until `mpsync lock` SIGKILLs it a grace later (which it may:
    /// the grace ends inside the lease's margin).
    #[arg(long)]
    lingering_commands: bool,
    /// A control that must be found UNSAFE: the electors run with the
    /// hidden --chaos-unsafe-release-on-own-close (at a graceful stop, they
    /// release the leases of the sessions they end, while the holders may
    /// still act). Use with --fault elector-stop --lingering-commands
    /// (chaos/README.md says why).
    #[arg(long)]
    unsafe_release_on_own_close: bool,
    /// A control that must be found UNSAFE: the contenders race for the
    /// locks (a plain claim, then a long-poll until the lock changes, as
    /// before fair locks) instead of waiting in line, without the wasm
    /// apps; the fairness check must find waiters overtaken by later ones.
    /// Use with --locks 1 (chaos/README.md says why).
    #[arg(long)]
    race: bool,
    /// A control that must be found UNSAFE: the semaphore's contenders ask
    /// the elector for 3 permits while the resource is told 2, and the
    /// read-write lock's writers ask for a shared hold; the checker must
    /// find a permit out of range and writers beside readers.
    #[arg(long)]
    shared_overcommit: bool,
    /// A control that must be found UNSAFE: the watch observer (one
    /// `POST /v1/watch` over every lock) takes views without the version
    /// rule, records each answer after the next one, and names each holder
    /// after the one it saw before; the checker must find tokens going
    /// back and phantom holders.
    #[arg(long)]
    watch_stale: bool,
    /// A control that must be found UNSAFE: the transferrer asks nothing
    /// and records made-up transfers to a candidate that is not the leader,
    /// as accepted; the checker must find terms that the (missing)
    /// reservation should have kept out. Use with --fault contender-kill.
    #[arg(long)]
    transfer_made_up: bool,
    /// Print each fault as it is injected.
    #[arg(long, short)]
    verbose: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    match go().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("mpsync-chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn go() -> anyhow::Result<bool> {
    let args = Args::parse();
    if let Some(path) = &args.check {
        // Check a history kept by an earlier run, with the faults kept
        // beside it (none if they are not there: nothing is excused).
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let events: Vec<chaos::fence::Event> =
            text.lines().map(serde_json::from_str).collect::<Result<_, _>>().context("a history line")?;
        let faults = match std::fs::read(chaos::run::faults_beside(path)) {
            Ok(bytes) => serde_json::from_slice(&bytes).context("the faults beside the history")?,
            Err(_) => Vec::new(),
        };
        let findings = chaos::check::check(&events, &faults);
        println!("{}", serde_json::to_string_pretty(&findings)?);
        return Ok(findings.safe());
    }
    let mut bins = Bins::beside(&std::env::current_exe()?)?;
    if let Some(dir) = &args.wasm_dir {
        bins = bins.with_wasm(dir)?;
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let mut reports: Vec<Report> = Vec::new();
    for store in &args.stores {
        eprintln!(
            "mpsync-chaos: {} store, seed {seed}, up to {} hand-overs or {}",
            store.name(),
            args.handovers,
            humantime::format_duration(args.time_limit)
        );
        let (history, elector_log) = match &args.history_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                let (history, log) = (format!("{}.jsonl", store.name()), format!("{}-electors.log", store.name()));
                (Some(dir.join(history)), Some(dir.join(log)))
            }
            None => (None, None),
        };
        let report = run(Config {
            store: *store,
            handovers: args.handovers,
            time_limit: args.time_limit,
            seed,
            contenders: args.contenders,
            locks: args.locks,
            semaphore: args.semaphore_contenders,
            readers_writers: args.rw_contenders,
            elections: args.elect_contenders,
            ttl: args.ttl,
            fault_every: args.fault_every,
            electors: args.electors,
            bins: bins.clone(),
            clock_rate: args.clock_rate,
            history,
            elector_log,
            stop_when: None,
            verbose: args.verbose,
            forget_state: false,
            sessions: !args.no_session,
            lingering_commands: args.lingering_commands,
            unsafe_release_on_own_close: args.unsafe_release_on_own_close,
            race: args.race,
            overcommit: args.shared_overcommit,
            watch_stale: args.watch_stale,
            transfer_made_up: args.transfer_made_up,
            faults: args.faults.clone(),
            no_faults: args.no_faults,
        })
        .await?;
        print!("{}", report.text());
        println!();
        reports.push(report);
    }
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, serde_json::to_vec_pretty(&reports)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(reports.iter().all(Report::safe))
}
