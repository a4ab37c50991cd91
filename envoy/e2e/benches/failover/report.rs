//! The failover benchmark's report: what each kill took, and every failed
//! request by kind, with why it happens.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use testkit::bench::{ms, percentile};

use super::{Kill, Outcome, Path, RESTART, Sample};

/// What a failed request was, and why it happens.
fn classify(outcome: &Outcome, before_kill: bool) -> (&'static str, &'static str) {
    let body = match outcome {
        Outcome::Served(_) => unreachable!("only failures are classified"),
        Outcome::Failed(_) => {
            return ("no answer (reset or timeout)", "not expected: the connection to Envoy broke");
        }
        Outcome::Refused { retry_after: true, body, .. } if body.contains("cannot be reached") => {
            return (
                "503 the elector cannot be reached (filter)",
                "held while no leader was known, the request's own long-poll got no usable answer from the \
                 elector, and the filter gave up at once rather than at hold_ms",
            );
        }
        Outcome::Refused { retry_after: true, .. } => {
            return ("503 no leader (filter)", "the filter held it hold_ms and knew no leader");
        }
        Outcome::Refused { body, .. } => body.as_str(),
    };
    if body.contains("no healthy upstream") {
        return (
            "503 no healthy upstream",
            "EDS: Envoy read the file while it named no leader: `mpsync leader --watch` writes the resignation \
             (no endpoint) and then the new leader, two writes",
        );
    }
    // Envoy's words: "connection termination" for a connection closed
    // under a request, "remote connection failure" for a connect refused,
    // "connection timeout" for a connect unanswered within the cluster's
    // connect_timeout (1 s).
    if body.contains("connection timeout") {
        return (
            "503 connect timed out",
            "routed to the dead server before Envoy learned of the new leader; its connect was not answered \
             within the cluster's connect_timeout (1 s)",
        );
    }
    let closed = body.contains("connection termination");
    let refused = body.contains("connection failure");
    match (before_kill, closed, refused) {
        (true, true, _) => (
            "503 connection closed, sent before the kill",
            "in flight to the killed server: the kernel closed its connections with it",
        ),
        (false, true, _) => (
            "503 connection closed, sent after the kill",
            "routed to the dead server before Envoy learned of the new leader, on a pooled connection whose \
             close Envoy had not read yet",
        ),
        (false, _, true) => (
            "503 connect refused, sent after the kill",
            "routed to the dead server before Envoy learned of the new leader, on a new connection",
        ),
        (true, _, true) => {
            ("503 connect refused, sent before the kill", "Envoy was still connecting to the server when it died")
        }
        _ => ("other", "not expected: see what Envoy answered"),
    }
}

/// Failures by scenario (`None`: before the first kill, or while the
/// replicas restarted between scenarios), gateway and kind (what, why):
/// how many, the longest one took, and what Envoy answered to the first.
type Kinds = BTreeMap<(Option<usize>, usize, (&'static str, &'static str)), (usize, Duration, String)>;

/// What the benchmark saw around one kill.
struct Seen {
    /// The kill to the elector reporting the lease free (the resignation or
    /// the session's end), and to it naming the new leader.
    free: Option<Duration>,
    elected: Option<Duration>,
    /// Per gateway: the kill to the first answer from another replica, and
    /// the requests answered in this kill's time that failed.
    served: Vec<Option<Duration>>,
    failed: Vec<usize>,
}

/// Everything one run saw.
pub struct Run<'a> {
    pub scenarios: &'a [&'a str],
    pub kills: &'a [Kill],
    /// When the elector reported each holder (`None`: free).
    pub changes: &'a [(Instant, Option<String>)],
    pub paths: &'a [Path],
    /// Per gateway, every request.
    pub samples: &'a [Vec<Sample>],
    pub every: Duration,
    pub ttl: &'a str,
    pub sessions: bool,
}

/// Prints the run's figures.
pub fn report(run: &Run<'_>) {
    let Run { scenarios, kills, changes, paths, samples, every, ttl, sessions } = *run;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let profile = if cfg!(debug_assertions) { "test profile (debug)" } else { "release" };
    println!(
        "Failover through Envoy 1.40 (2 workers each), the leader's death -> the first request served by the new \
         leader; 3 replicas under `mpsync elect --ttl {ttl}`; a request to each gateway every {every:?} (open \
         loop); {profile} build, {cpus} shared CPUs; mpsync elect {}",
        if sessions { "with sessions" } else { "without sessions (no `--no-session` in `mpsync elect --help` yet)" }
    );
    println!(
        "Each from the SIGKILL: the elector reports the lease free (mpsync elect's resignation, or its session's \
         end), then the new leader (a standby's long-poll woke and it claimed), then each gateway serves a \
         request from the new leader (the filter's long-poll, or the EDS file rewritten and read). Failed requests \
         are those answered between one kill and the next that got no 200."
    );
    // Which kill a request belongs to: the last one before its answer (kills
    // are further apart than the slowest failure, a 1 s connect timeout).
    let kill_of = |done: Instant| kills.iter().rposition(|k| k.at <= done);
    let after = |k: &Kill, pred: &dyn Fn(&Option<String>) -> bool| {
        changes.iter().find(|(t, h)| *t >= k.at && pred(h)).map(|(t, _)| *t - k.at)
    };
    let mut seen: Vec<Seen> = kills
        .iter()
        .map(|k| Seen {
            free: after(k, &|h| h.as_ref().is_none_or(|h| *h != k.leader)),
            elected: after(k, &|h| h.as_ref().is_some_and(|h| *h != k.leader)),
            served: samples
                .iter()
                .map(|all| {
                    let by_another = |x: &&Sample| matches!(&x.outcome, Outcome::Served(id) if *id != k.leader);
                    all.iter().filter(|x| x.done >= k.at).filter(by_another).map(|x| x.done - k.at).min()
                })
                .collect(),
            failed: vec![0; paths.len()],
        })
        .collect();
    let mut kinds: Kinds = BTreeMap::new();
    for (p, all) in samples.iter().enumerate() {
        for x in all.iter().filter(|x| !matches!(x.outcome, Outcome::Served(_))) {
            let k = kill_of(x.done).filter(|&k| kills[k].scenario != RESTART);
            if let Some(k) = k {
                seen[k].failed[p] += 1;
            }
            let kind = classify(&x.outcome, k.is_some_and(|k| x.sent < kills[k].at));
            let scenario = k.map(|k| kills[k].scenario);
            let entry = kinds.entry((scenario, p, kind)).or_insert_with(|| (0, Duration::ZERO, x.outcome.describe()));
            entry.0 += 1;
            entry.1 = entry.1.max(x.done - x.sent);
        }
    }
    let opt = |d: Option<Duration>| d.map_or("-".to_owned(), ms);
    for (k, s) in kills.iter().zip(&seen).filter(|(k, _)| k.scenario != RESTART) {
        eprintln!(
            "kill of {} ({}, {} sessions open): free {}, elected {}, served {:?}, failed {:?}",
            k.leader,
            scenarios[k.scenario],
            k.sessions,
            opt(s.free),
            opt(s.elected),
            s.served.iter().map(|d| opt(*d)).collect::<Vec<_>>(),
            s.failed
        );
    }
    for (scenario, what) in scenarios.iter().enumerate() {
        let ours: Vec<&Seen> =
            kills.iter().zip(&seen).filter(|(k, _)| k.scenario == scenario).map(|(_, s)| s).collect();
        if ours.is_empty() {
            continue;
        }
        println!("\n{what} ({} kills):", ours.len());
        line("elector: lease free", &mut ours.iter().filter_map(|s| s.free).collect::<Vec<_>>(), "");
        line("elector: new leader", &mut ours.iter().filter_map(|s| s.elected).collect::<Vec<_>>(), "");
        // Nothing but a lease running out takes a second here.
        let waited = ours.iter().filter(|s| s.free.is_none_or(|d| d > Duration::from_secs(1))).count();
        if waited > 0 {
            println!("  {waited} of {} kills waited out the lease's TTL (free after more than 1 s)", ours.len());
        }
        for (p, path) in paths.iter().enumerate() {
            let mut failed: Vec<usize> = ours.iter().map(|s| s.failed[p]).collect();
            failed.sort_unstable();
            let summary = format!(
                "; {} requests failed (per kill: p50 {}, max {})",
                failed.iter().sum::<usize>(),
                failed[failed.len() / 2],
                failed[failed.len() - 1]
            );
            line(path.name, &mut ours.iter().filter_map(|s| s.served[p]).collect::<Vec<_>>(), &summary);
            print_kinds(&kinds, Some(scenario), p);
        }
    }
    println!(
        "\nOutside the kills: the start, and the replicas restarted between scenarios (`mpsync elect` on SIGTERM \
         resigns, then stops its server: a request Envoy still routes to it fails as after a kill):"
    );
    for (p, path) in paths.iter().enumerate() {
        println!("  {}: {} requests in all", path.name, samples[p].len());
        print_kinds(&kinds, None, p);
    }
    // The goal is the server's kill (scenario 0), both gateways.
    let p99s: Vec<Duration> = (0..paths.len())
        .map(|p| {
            let mut took: Vec<Duration> =
                kills.iter().zip(&seen).filter(|(k, _)| k.scenario == 0).filter_map(|(_, s)| s.served[p]).collect();
            took.sort();
            percentile(&took, 0.99)
        })
        .collect();
    let met = if p99s.iter().all(|d| *d <= Duration::from_millis(100)) { "met" } else { "not met" };
    println!(
        "\nGoal (issue 22): p99 at most 100 ms at TTL 10 s, the server's kill to the first request served: {met} \
         at TTL {ttl} ({})",
        paths.iter().zip(&p99s).map(|(p, d)| format!("{} p99 {}", p.name, ms(*d))).collect::<Vec<_>>().join(", ")
    );
}

/// The failures of one scenario and gateway, by kind, each with why it
/// happens and what Envoy answered.
fn print_kinds(kinds: &Kinds, scenario: Option<usize>, path: usize) {
    let ours = kinds.iter().filter(|((s, p, _), _)| *s == scenario && *p == path);
    for ((_, _, (kind, why)), (n, longest, example)) in ours {
        let example: String = example.chars().take(150).collect();
        println!("    {n:>6} {kind}: {why}\n             e.g. \"{example}\", the longest in {}", ms(*longest));
    }
}

fn line(what: &str, samples: &mut [Duration], extra: &str) {
    samples.sort();
    if samples.is_empty() {
        println!("  {what:<30} no sample");
        return;
    }
    println!(
        "  {what:<30} p50 {:>10}   p99 {:>10}   max {:>10}{}",
        ms(percentile(samples, 0.5)),
        ms(percentile(samples, 0.99)),
        ms(samples[samples.len() - 1]),
        extra
    );
}
