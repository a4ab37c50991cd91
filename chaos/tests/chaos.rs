//! The short chaos runs of `make test`: at least 300 hand-overs per store
//! through every real client (`mpsync lock`, and the wasm app native and
//! portable, which `make test` builds) under faults, checked for safety,
//! with the stranger refused every time; the memory run with a holder whose
//! clock runs 10% slow (inside the bound); no waiter overtaken by a later
//! one unless a fault excuses it. And seven runs the checker must find
//! unsafe, so that a green run means something: the memory store's state
//! file thrown away at each restart, a holder whose clock runs at half
//! speed (outside the bound), electors that release, at a graceful stop,
//! the leases of the sessions they end themselves (beside the same run with
//! safe electors, which must be found safe), contenders that race for a
//! lock instead of waiting in line, holds the elector did not exclude,
//! a watch observer that takes views out of order and names holders
//! that never had them, and a transferrer that makes transfers up (never
//! asked, so never reserved). Every run follows its locks with one watch
//! (`POST /v1/watch`), whose views are checked too; every run has
//! candidates standing in an election through `mpsync elect`, whose terms
//! are sections like any lock's, and a transferrer asking the leader to
//! hand over; and the electors' histories are read at the end and checked
//! for tokens going back and phantom holders.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

use chaos::config::{Bins, Config, StoreKind};
use chaos::contender::{RW_LOCK, SEMAPHORE, SKEWED};
use chaos::fault::FaultKind;
use chaos::report::Report;
use chaos::run::run;

fn config(store: StoreKind, handovers: usize, seed: u64) -> Config {
    let bins = Bins::beside(std::path::Path::new(env!("CARGO_BIN_EXE_chaos-worker"))).unwrap();
    // Never without the wasm contenders: make test builds them and names
    // their folder.
    let dir = std::env::var_os("MPSYNC_WASM_DIR")
        .map(PathBuf::from)
        .expect("MPSYNC_WASM_DIR is not set: export the folder scripts/build-wasm.sh prints last (make test does)");
    let bins = bins.with_wasm(&dir).unwrap();
    Config {
        store,
        handovers,
        time_limit: Duration::from_secs(240),
        seed,
        contenders: 4,
        locks: 2,
        semaphore: 3,
        readers_writers: 3,
        elections: 3,
        ttl: Duration::from_secs(1),
        fault_every: Duration::from_millis(1500),
        electors: 2,
        bins,
        clock_rate: None,
        // To look into a failure: CHAOS_HISTORY_DIR keeps each run's
        // history (and its faults) there.
        history: std::env::var_os("CHAOS_HISTORY_DIR")
            .map(|dir| PathBuf::from(dir).join(format!("{}-{seed}.jsonl", store.name()))),
        elector_log: None,
        stop_when: None,
        verbose: false,
        forget_state: false,
        sessions: true,
        lingering_commands: false,
        unsafe_release_on_own_close: false,
        race: false,
        overcommit: false,
        watch_stale: false,
        transfer_made_up: false,
        faults: Vec::new(),
        no_faults: false,
    }
}

async fn short_run(config: Config) -> Report {
    let report = run(config).await.unwrap();
    println!("{}", report.text());
    let f = &report.findings;
    assert!(report.safe(), "{}", report.text());
    assert!(f.handovers >= 300, "the run ended early: {}", report.text());
    assert!(!report.faults.is_empty(), "no fault was injected: {}", report.text());
    assert!(f.stranger_attempts > 0, "the stranger tried nothing: {}", report.text());
    assert!(report.sessions.most_open > 0, "no contender held a session: {}", report.text());
    // The fairness check had waiters to look at.
    assert!(f.fairness.seen_in_line > 0, "the line watcher saw nobody waiting: {}", report.text());
    // The semaphore and the read-write lock were held, shared at times.
    let shared = |lock: &str| report.shared_locks.iter().find(|l| l.lock == lock).cloned();
    let sem = shared(SEMAPHORE).unwrap_or_else(|| panic!("nobody took the semaphore: {}", report.text()));
    assert!(sem.most_at_once > 1, "never two permits held at once: {}", report.text());
    let rw = shared(RW_LOCK).unwrap_or_else(|| panic!("nobody took the read-write lock: {}", report.text()));
    assert!(rw.shared > 0 && rw.exclusive > 0, "no reader or no writer: {}", report.text());
    // One watch followed every lock the run takes (the plain locks, the
    // semaphore, the read-write lock), its views were those of real
    // holders, and it caught up with plain reads at the end.
    let w = &f.watch;
    assert_eq!(w.names, 4, "the watch did not show every lock held: {}", report.text());
    assert!(w.proven > 0, "no view of the watch showed a holder that entered: {}", report.text());
    assert!(w.settled_after.is_some(), "the watch was not compared with plain reads: {}", report.text());
    // Every elector's history was read at the end (its tokens checked).
    assert!(w.history_changes > 0, "no elector's history was read: {}", report.text());
    // The election had terms through mpsync elect, the transferrer asked
    // hand-overs that were accepted and taken, and the electors' histories
    // were checked against the sections.
    let t = &f.transfers;
    assert!(t.terms > 0, "nobody led the election: {}", report.text());
    assert!(t.accepted > 0 && t.honoured > 0, "no transfer was accepted and taken: {}", report.text());
    assert!(t.wrong_from > 0, "no transfer from a candidate that did not lead: {}", report.text());
    assert!(f.history.entered > 0, "no history entry was checked against a section: {}", report.text());
    report
}

#[tokio::test]
async fn memory_store_with_elector_restarts_and_a_slow_clock_is_safe() {
    let mut config = config(StoreKind::Memory, 300, 11);
    // 10% slow: inside the bound of the 20% margin, with room for the time
    // a stop takes on a busy machine.
    config.clock_rate = Some(0.9);
    let report = short_run(config).await;
    assert!(report.faults.contains_key(&FaultKind::ElectorRestart), "{}", report.text());
    let clock = report.clock.as_ref().unwrap();
    assert!(clock.partitioned > 0, "the slow holder was never cut off inside a section: {}", report.text());
}

#[tokio::test]
async fn etcd_store_is_safe() {
    let report = short_run(config(StoreKind::Etcd, 300, 12)).await;
    assert_eq!(report.findings.watch.electors, 2, "one elector answered every watch: {}", report.text());
    let rounds = report.watch_rounds;
    assert!(rounds.resumed > 0 && rounds.gone > 0, "kept sets were not resumed and refused: {}", report.text());
}

#[tokio::test]
async fn kubernetes_store_is_safe() {
    let report = short_run(config(StoreKind::Kubernetes, 300, 13)).await;
    assert_eq!(report.findings.watch.electors, 2, "one elector answered every watch: {}", report.text());
    let rounds = report.watch_rounds;
    assert!(rounds.resumed > 0 && rounds.gone > 0, "kept sets were not resumed and refused: {}", report.text());
}

#[tokio::test]
async fn a_memory_store_that_forgets_across_restarts_is_caught() {
    let mut config = config(StoreKind::Memory, 200, 14);
    config.forget_state = true;
    // Restarts often, and stop as soon as the damage shows.
    config.fault_every = Duration::from_millis(400);
    config.time_limit = Duration::from_secs(30);
    config.stop_when = Some(|f| f.token_regressions > 0);
    let report = run(config).await.unwrap();
    println!("{}", report.text());
    let f = &report.findings;
    assert!(!f.safe(), "the checker missed what a forgetful restart breaks: {}", report.text());
    assert!(f.token_regressions > 0, "{}", report.text());
}

#[tokio::test]
async fn a_holder_whose_clock_runs_slower_than_the_bound_is_caught() {
    let mut config = config(StoreKind::Memory, 200, 15);
    // Half speed: it believes in each grant for 1.6 TTLs of real time.
    config.clock_rate = Some(0.5);
    // The faults it has always had: the partitions it needs come often.
    config.faults = vec![
        FaultKind::ContenderKill,
        FaultKind::ContenderFreeze,
        FaultKind::ElectorRestart,
        FaultKind::HolderPartition,
    ];
    config.fault_every = Duration::from_millis(1000);
    config.time_limit = Duration::from_secs(60);
    config.stop_when = Some(|f| f.overlaps_violating_by.contains_key(SKEWED));
    let report = run(config).await.unwrap();
    println!("{}", report.text());
    let f = &report.findings;
    assert!(!report.safe(), "the checker missed a holder whose clock runs at half speed: {}", report.text());
    assert!(f.overlaps_violating_by.get(SKEWED).is_some_and(|n| *n > 0), "{}", report.text());
    // The slow holder, and only it, kept working past its lease.
    assert!(f.overlaps_violating_by.keys().all(|c| c == SKEWED), "{}", report.text());
}

/// Graceful elector stops only, with commands that write on for their
/// grace after a SIGTERM; `unsafe_release` runs the elector with
/// `--chaos-unsafe-release-on-own-close`. On the memory store: the
/// restarted elector grants at once what the stopped one released, while
/// the holders that learned of their session's end only as it closed are
/// still winding down.
fn graceful_stops(unsafe_release: bool) -> Config {
    // Few hand-overs: a safe elector restarted with leases live grants
    // nothing until they have run out, so they come at about 2/s.
    let mut config = config(StoreKind::Memory, 40, 16);
    config.faults = vec![FaultKind::ElectorStop];
    config.lingering_commands = true;
    config.unsafe_release_on_own_close = unsafe_release;
    config.fault_every = Duration::from_millis(1000);
    config.time_limit = Duration::from_secs(60);
    config
}

#[tokio::test]
async fn graceful_elector_stops_under_sessions_are_safe() {
    let report = run(graceful_stops(false)).await.unwrap();
    println!("{}", report.text());
    assert!(report.safe(), "{}", report.text());
    assert!(report.findings.handovers >= 40, "the run ended early: {}", report.text());
    assert!(report.faults.get(&FaultKind::ElectorStop).is_some_and(|n| *n > 0), "{}", report.text());
    assert!(report.sessions.most_open > 0, "no contender held a session: {}", report.text());
}

#[tokio::test]
async fn an_elector_that_releases_the_sessions_it_ends_is_caught() {
    let mut config = graceful_stops(true);
    // Stop as soon as the damage shows.
    config.stop_when = Some(|f| f.overlaps_violating > 0);
    let report = run(config).await.unwrap();
    println!("{}", report.text());
    let f = &report.findings;
    assert!(!report.safe(), "the checker missed an elector that releases what it ends itself: {}", report.text());
    // A holder that had not yet heard its session end (its command winding
    // down in its grace) was overlapped by its successor.
    assert!(f.overlaps_violating > 0, "{}", report.text());
}

#[tokio::test]
async fn contenders_that_race_are_caught_overtaking() {
    let mut config = config(StoreKind::Memory, 300, 17);
    config.race = true;
    // One lock for six: waits of several sections, long past the margin
    // the check allows a waiter it never saw in line.
    config.locks = 1;
    config.contenders = 6;
    // No fault: the racers are no processes to kill, so none is injected
    // (the run checks its findings between the faults it draws).
    config.faults = vec![FaultKind::ContenderKill];
    config.fault_every = Duration::from_millis(1000);
    config.time_limit = Duration::from_secs(60);
    config.stop_when = Some(|f| f.fairness.overtakings > 0);
    let report = run(config).await.unwrap();
    println!("{}", report.text());
    let f = &report.findings;
    assert!(!report.safe(), "the checker missed racers overtaking each other: {}", report.text());
    assert!(f.fairness.overtakings > 0, "{}", report.text());
    assert!(f.fairness.overtaken.keys().all(|c| c.starts_with("racer-")), "{}", report.text());
    // Racing is unfair, not unsafe: nothing else broke.
    assert_eq!((f.overlaps_violating, f.stale_accepted, f.token_regressions), (0, 0, 0), "{}", report.text());
}

#[tokio::test]
async fn shared_holds_the_elector_did_not_exclude_are_caught() {
    let mut config = config(StoreKind::Memory, 300, 18);
    // The elector is asked for 3 permits while the resource is told 2, and
    // the writers ask for shared holds.
    config.overcommit = true;
    config.faults = vec![FaultKind::ContenderKill];
    config.time_limit = Duration::from_secs(60);
    config.stop_when = Some(|f| f.permits_out_of_range > 0 && f.overlaps_violating > 0);
    let report = run(config).await.unwrap();
    println!("{}", report.text());
    let f = &report.findings;
    assert!(!report.safe(), "the checker missed holds the elector did not exclude: {}", report.text());
    assert!(f.permits_out_of_range > 0, "{}", report.text());
    // Writers beside readers: violating overlaps, with a read-write lock's
    // contender inside first.
    assert!(f.overlaps_violating_by.keys().any(|c| c.starts_with("rw-")), "{}", report.text());
}

#[tokio::test]
async fn a_term_that_a_transfer_s_reservation_should_have_kept_out_is_caught() {
    // A set number of hand-overs, not a stop condition: what proves a
    // reservation broken (an elector's history showing the release) is
    // read only at the end, so the run cannot stop as soon as it shows.
    let mut config = config(StoreKind::Memory, 300, 20);
    // Transfers made up, never asked: nothing reserves the election for
    // their target, so the next term often goes to another within a TTL.
    // No faults: a term that overlaps one proves nothing (with faults
    // drawn, a run on a loaded machine had each of its 37 terms that went
    // to another overlapped by one). Three hundred hand-overs: on a loaded
    // machine a hundred gave as few as 10 terms, and none of them proved.
    config.transfer_made_up = true;
    config.no_faults = true;
    config.time_limit = Duration::from_secs(60);
    let report = run(config).await.unwrap();
    println!("{}", report.text());
    assert!(report.faults.is_empty(), "{}", report.text());
    let f = &report.findings;
    assert!(!report.safe(), "the checker missed a term inside a reservation: {}", report.text());
    assert!(f.transfers.reservation_broken > 0, "{}", report.text());
    // The record was wrong, not the election.
    assert_eq!((f.overlaps_violating, f.stale_accepted, f.token_regressions), (0, 0, 0), "{}", report.text());
}

#[tokio::test]
async fn a_watch_that_goes_back_or_makes_up_holders_is_caught() {
    let mut config = config(StoreKind::Memory, 300, 19);
    // The observer takes each answer after the next one, without the
    // version rule, and names each holder after the one it saw before.
    config.watch_stale = true;
    config.faults = vec![FaultKind::ContenderKill];
    config.time_limit = Duration::from_secs(60);
    config.stop_when = Some(|f| f.watch.regressions > 0 && f.watch.phantoms > 0);
    let report = run(config).await.unwrap();
    println!("{}", report.text());
    let w = &report.findings.watch;
    assert!(!report.safe(), "the checker missed a stale watch: {}", report.text());
    assert!(w.regressions > 0, "no token seen going back: {}", report.text());
    assert!(w.phantoms > 0, "no made-up holder caught: {}", report.text());
    // The watch was wrong, not the locks.
    let f = &report.findings;
    assert_eq!((f.overlaps_violating, f.stale_accepted, f.token_regressions), (0, 0, 0), "{}", report.text());
}
