//! One chaos run: the store and electors ([`crate::cluster`]), the
//! contenders ([`crate::contender`]), the stranger ([`crate::stranger`])
//! and the transferrer ([`crate::transferrer`]), faults one after another
//! at random times from a seeded generator ([`crate::inject`]; the seed is
//! printed, so a run can be repeated), then the check ([`crate::check`])
//! and the report.
//!
//! The run ends after the asked number of hand-overs or its time limit,
//! whichever comes first.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context;
use tokio::sync::watch;

use crate::check::{Findings, check};
use crate::clock::Skew;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::contender::{Contenders, SKEWED, Setup};
use crate::contender::{RW_LOCK, SEMAPHORE};
use crate::elect::ELECTION;
use crate::fault::{Fault, FaultKind};
use crate::fence::{Event, Fence};
use crate::inject::{Target, inject};
use crate::observer::Observer;
use crate::report::{ClockReport, Report};
use crate::rng::Rng;
use crate::transferrer::Transferrer;
use crate::{electors, stranger, watcher};

/// Runs one chaos run and returns its report.
pub async fn run(config: Config) -> anyhow::Result<Report> {
    let origin = Instant::now();
    let work = testkit::temp_dir("chaos")?;
    let history = match &config.history {
        Some(p) => Some(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => None,
    };
    let elector_log = electors::create_log(config.elector_log.as_deref(), config.store.name())?;
    // Before anything relies on it: does the clock fault take effect?
    let skew = match config.clock_rate {
        Some(rate) => {
            let skew = Skew::new(rate)?;
            let measured = skew.measure(&config.bins.worker).await?;
            Some((skew, measured))
        }
        None => None,
    };
    let fence = Fence::new(origin, history);
    let fence_addr = fence.serve(tokio::net::TcpListener::bind("127.0.0.1:0").await?).await?;
    let mut cluster = Cluster::start(&config, &work, &elector_log).await?;
    let (urls, addrs) = (cluster.electors.urls(), cluster.electors.addrs());

    let (stop_tx, stop) = watch::channel(false);
    let mut rng = Rng::new(config.seed);
    let locks: Vec<String> = (0..config.locks.max(1)).map(|i| format!("chaos-{i}")).collect();
    let setup = Setup {
        config: &config,
        urls: &urls,
        addrs: &addrs,
        fence: fence_addr,
        history: &fence,
        locks: &locks,
        skew: skew.as_ref().map(|(s, _)| s),
        work: &work,
    };
    let contenders = Contenders::start(setup, &mut rng, stop.clone()).await?;
    let lines = tokio::spawn(watcher::watch_lines(urls.clone(), fence.clone(), stop.clone()));
    // One watch over every lock the run takes.
    let mut watched = locks.clone();
    if !config.race {
        watched.extend((config.semaphore > 0).then(|| SEMAPHORE.to_owned()));
        watched.extend((config.readers_writers > 0).then(|| RW_LOCK.to_owned()));
    }
    let elections: Vec<String> = (config.elections > 0).then(|| ELECTION.to_owned()).into_iter().collect();
    let observer = Observer::new(&urls, &watched, fence.clone(), config.watch_stale).with_elections(&elections);
    let observer = tokio::spawn(observer.observe(stop.clone()));
    let stranger = tokio::spawn(stranger::prowl(
        urls.clone(),
        locks.clone(),
        fence.clone(),
        config.fault_every,
        rng.fork(),
        stop.clone(),
    ));
    // The operator: a generator of its own, so that a seed draws the same
    // faults as before it existed.
    let transferrer = (config.elections > 0).then(|| {
        let transferrer = Transferrer {
            urls: urls.clone(),
            candidates: (0..config.elections).map(crate::elect::candidate).collect(),
            fence: fence.clone(),
            every: config.fault_every,
            made_up: config.transfer_made_up,
        };
        tokio::spawn(transferrer.run(Rng::new(config.seed ^ 0x7a5f_e400), stop.clone()))
    });

    // Faults, one at a time, until the run ends.
    let mut kinds = FaultKind::for_run(config.store, skew.is_some());
    if !config.faults.is_empty() {
        kinds.retain(|k| config.faults.contains(k));
        anyhow::ensure!(!kinds.is_empty(), "none of the faults asked for applies to the {} store", config.store.name());
    }
    let deadline = origin + config.time_limit;
    // The first section on each lock is not a hand-over; the semaphore's
    // and the readers' sections are not counted (see Fence::entered).
    let sections_wanted = config.handovers + locks.len() + usize::from(config.readers_writers > 0);
    let mut faults: Vec<Fault> = Vec::new();
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
        if config.stop_when.is_some_and(|caught| caught(&check(&fence.events(), &faults))) {
            break;
        }
        if config.no_faults {
            continue;
        }
        if config.verbose && last_progress.elapsed() > std::time::Duration::from_secs(5) {
            eprintln!("chaos: {} sections so far", fence.entered());
            last_progress = Instant::now();
        }
        // Who holds sessions now, before a fault ends some.
        cluster.electors.sample().await;
        let kind = kinds[rng.below(kinds.len() as u64) as usize];
        let target = Target { cluster: &mut cluster, contenders: &contenders, fence: &fence, ttl: config.ttl };
        let Some(fault) = inject(kind, target, &mut rng).await? else { continue };
        if config.verbose {
            eprintln!("chaos: {} {}", fault.kind, fault.client.as_deref().unwrap_or(""));
        }
        faults.push(fault);
    }

    let end_us = fence.now_us();
    stop_tx.send_replace(true);
    cluster.electors.sample().await;
    contenders.stop().await;
    let lock = None;
    faults.push(Fault {
        kind: FaultKind::RunEnd,
        client: None,
        from_us: end_us,
        to_us: u64::MAX,
        freezes_section: false,
        lock,
    });
    let _ = stranger.await;
    if let Some(transferrer) = transferrer {
        let _ = transferrer.await;
    }
    let _ = lines.await;
    // The faults are over and the contenders gone: the watch must catch up.
    let watch_rounds = observer.await.context("the watch observer")?.settle().await;
    let events = fence.events();
    if let Some(path) = &config.history {
        // Beside the history, for `mpsync-chaos --check` to excuse by.
        let path = faults_beside(path);
        std::fs::write(&path, serde_json::to_vec(&faults)?).with_context(|| format!("writing {}", path.display()))?;
    }
    let findings = check(&events, &faults);
    let mut by_kind = BTreeMap::new();
    for f in faults.iter().filter(|f| f.kind != FaultKind::RunEnd) {
        *by_kind.entry(f.kind).or_insert(0) += 1;
    }
    let clock = skew.map(|(skew, measured)| clock_report(skew.rate(), measured, &events, &faults, &findings));
    // The kills of the contenders just now closed their sessions: not
    // part of the run, so read before them.
    let sessions = cluster.electors.session_figures();
    drop(cluster);
    let _ = std::fs::remove_dir_all(&work);
    Ok(Report {
        store: config.store,
        seed: config.seed,
        seconds: origin.elapsed().as_secs_f64(),
        faults: by_kind,
        findings,
        clock,
        no_session: !config.sessions,
        sessions,
        watch_rounds,
        successors: crate::report::successors(&events, &faults),
        shared_locks: crate::report::shared_locks(&crate::check::sections(&events)),
        ttl_ms: config.ttl.as_millis() as u64,
        elector_log,
    })
}

/// Where the faults of the run whose history is at `history` are kept:
/// `STORE.faults.json` beside `STORE.jsonl`.
pub fn faults_beside(history: &std::path::Path) -> std::path::PathBuf {
    history.with_extension("faults.json")
}

/// What became of the skewed holder.
fn clock_report(rate: f64, measured: f64, events: &[Event], faults: &[Fault], findings: &Findings) -> ClockReport {
    let own: Vec<_> = crate::check::sections(events).into_iter().filter(|s| s.client == SKEWED).collect();
    let cut_off = |s: &&crate::check::Section| {
        faults.iter().any(|f| f.kind == FaultKind::HolderPartition && f.from_us < s.end_us && f.to_us > s.enter_us)
    };
    ClockReport {
        client: SKEWED.to_owned(),
        rate,
        measured,
        sections: own.len(),
        partitioned: own.iter().filter(cut_off).count(),
        violating: findings.overlaps_violating_by.get(SKEWED).copied().unwrap_or(0),
    }
}
