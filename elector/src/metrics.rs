//! Prometheus metrics for `GET /metrics`, kept and encoded by
//! `prometheus-client` (the Prometheus project's own Rust client) in the
//! OpenMetrics text format.
//!
//! Counters are per kind (`lock`, `election`); request latency is a
//! histogram per route and status. Long-polls are timed under their own
//! route so their deliberate waiting does not hide the latency of ordinary
//! requests. `mpsync_build_info` says which build answers.
//! `mpsync_state_entries` gives the size of each map the elector keeps in
//! memory, read at each scrape: each must come back to its size at rest
//! however many names come and go.

use std::sync::atomic::AtomicI64;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use mpsync_core::Kind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The content type of what [`Metrics::render`] returns.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0];

/// Buckets of `mpsync_lock_wait_seconds`: a wait in line lasts from no
/// time to as long as the holders ahead keep the lock.
const WAIT_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0];

/// A lease event that is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A lease was granted to a new holder.
    Acquisition,
    /// A holder renewed its lease.
    Renewal,
    /// A holder released its lease.
    Release,
    /// A lease ran out without a release: taken over by another claimant,
    /// or cleared by the elector's sweeper, whichever wrote first.
    Expiry,
    /// A claim or release was refused with 409.
    Conflict,
    /// A lease was released because the holder's end of its session closed
    /// (also counted as a [`Event::Release`]).
    SessionRelease,
}

/// A request or connection turned away at a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A connection past `--max-connections`.
    Connection,
    /// A long-poll past `--max-long-polls`.
    LongPoll,
    /// A session past `--max-sessions`.
    Session,
    /// A watch set past `--max-kept-watch-names` (served, not kept).
    KeptWatchNames,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreCallLabels {
    store: &'static str,
    call: String,
}

/// Labels of `mpsync_store_errors_total`: the store and the call that
/// found it unavailable.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreErrorLabels {
    store: &'static str,
    call: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabel {
    map: &'static str,
}

/// Labels of `mpsync_handovers_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandoverLabels {
    kind: &'static str,
    why: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ElectionLabel {
    election: String,
}

/// Where the history's gauges come from: names with history kept, and the
/// leaderless elections with seconds since their leader left.
type HistorySource = Box<dyn Fn() -> (usize, Vec<(String, f64)>) + Send + Sync>;

/// Where the sizes of the in-memory maps come from, by map.
type SizeSource = Box<dyn Fn() -> Vec<(&'static str, usize)> + Send + Sync>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

type Events = Family<KindLabel, Counter>;

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The elector's metrics.
pub struct Metrics {
    registry: Registry,
    acquisitions: Events,
    renewals: Events,
    releases: Events,
    expiries: Events,
    conflicts: Events,
    session_releases: Events,
    refusals: Family<LimitLabel, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    store_calls: Family<StoreCallLabels, Counter>,
    held: Gauge,
    watchers: Gauge<i64, AtomicI64>,
    watched_names: Gauge<i64, AtomicI64>,
    sessions: Gauge,
    waiters: Gauge<i64, AtomicI64>,
    lock_wait: Histogram,
    sizes: Family<MapLabel, Gauge>,
    size_source: OnceLock<SizeSource>,
    store_up: Gauge,
    store_errors: Family<StoreErrorLabels, Counter>,
    long_polls: Gauge,
    kept_watch_names: Gauge,
    limits: Family<LimitLabel, Gauge>,
    handovers: Family<HandoverLabels, Counter>,
    leaderless: Family<ElectionLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    history_names: Gauge,
    history_source: OnceLock<HistorySource>,
    /// Scrapes mirror the store's and the judge's own counts into the
    /// registry one at a time.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Counts one waiting long-poll (or parked waiter) for as long as it lives.
pub struct Watching<'a>(&'a Gauge<i64, AtomicI64>);

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts the names a parked watch follows for as long as it lives.
pub struct WatchingNames<'a>(&'a Gauge<i64, AtomicI64>, i64);

impl Drop for WatchingNames<'_> {
    fn drop(&mut self) {
        self.0.dec_by(self.1);
    }
}

fn kind_label(kind: Kind) -> KindLabel {
    KindLabel { kind: kind.singular() }
}

impl Metrics {
    /// Every metric registered, at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let events = [
            ("mpsync_acquisitions", "Leases granted to a new holder."),
            ("mpsync_renewals", "Leases renewed by their holder."),
            ("mpsync_releases", "Leases released by their holder."),
            ("mpsync_expiries", "Leases that ran out without a release (taken over, or cleared by the elector)."),
            ("mpsync_conflicts", "Claims and releases refused with 409."),
            ("mpsync_session_releases", "Leases released because the holder's end of their session closed."),
        ]
        .map(|(name, help)| {
            let family = Events::default();
            for kind in [Kind::Lock, Kind::Election] {
                let _ = family.get_or_create(&kind_label(kind));
            }
            registry.register(name, help, family.clone());
            family
        });
        let [acquisitions, renewals, releases, expiries, conflicts, session_releases] = events;
        let refusals = Family::<LimitLabel, Counter>::default();
        for limit in ["connections", "long_polls", "sessions", "kept_watch_names"] {
            let _ = refusals.get_or_create(&LimitLabel { limit });
        }
        registry.register("mpsync_refusals", "Connections and requests turned away at a limit.", refusals.clone());
        let held = Gauge::default();
        registry.register("mpsync_held_leases", "Leases held right now, as this elector last saw them.", held.clone());
        let watchers = Gauge::<i64, AtomicI64>::default();
        registry.register("mpsync_watchers", "Long-polls waiting for a change right now.", watchers.clone());
        let watched_names = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "mpsync_watched_names",
            "Names followed by the watches over many names (POST /v1/watch) parked right now.",
            watched_names.clone(),
        );
        let sessions = Gauge::default();
        registry.register("mpsync_sessions", "Sessions open right now.", sessions.clone());
        let waiters = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "mpsync_waiters",
            "Waiters in a lock's line with a request parked on this elector right now.",
            waiters.clone(),
        );
        let lock_wait = Histogram::new(WAIT_BUCKETS);
        registry.register(
            "mpsync_lock_wait_seconds",
            "Time from taking a place in a lock's line to holding the lock, for waiters served here.",
            lock_wait.clone(),
        );
        let sizes = Family::<MapLabel, Gauge>::default();
        registry.register(
            "mpsync_state_entries",
            "Entries in the elector's in-memory maps, by map: judge (leases seen held lately), and the store's \
             (records: the memory store's records and watched names; watched: names long-polled now).",
            sizes.clone(),
        );
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "mpsync_request_duration_seconds",
            "Time to answer a request, by route and status.",
            latency.clone(),
        );
        let store_calls = Family::<StoreCallLabels, Counter>::default();
        registry.register("mpsync_store_calls", "Calls made to the store, by kind of call.", store_calls.clone());
        let store_up = Gauge::default();
        store_up.set(1);
        registry.register(
            "mpsync_store_up",
            "1 while the store answers: 0 from a call that found it unavailable (no answer, an error, past \
             --store-timeout) to the next call it answers. Calls: every read, write and watch the elector makes, and \
             the ping of each /readyz.",
            store_up.clone(),
        );
        let store_errors = Family::<StoreErrorLabels, Counter>::default();
        registry.register(
            "mpsync_store_errors",
            "Calls that found the store unavailable, by store and call (read, write, watch, list, ping).",
            store_errors.clone(),
        );
        let long_polls = Gauge::default();
        registry.register(
            "mpsync_long_polls",
            "Long-poll slots taken right now, of mpsync_limit{limit=\"long_polls\"}: parked long-polls, watches over \
             many names and claims parked in a lock's line.",
            long_polls.clone(),
        );
        let kept_watch_names = Gauge::default();
        registry.register(
            "mpsync_kept_watch_names",
            "Names held by the watch sets kept for their watchers' next watch, of \
             mpsync_limit{limit=\"kept_watch_names\"}.",
            kept_watch_names.clone(),
        );
        let limits = Family::<LimitLabel, Gauge>::default();
        registry.register(
            "mpsync_limit",
            "The limits mpsync_refusals_total counts refusals at, by limit: long_polls (--max-long-polls), sessions \
             (--max-sessions); and kept_watch_names (--max-kept-watch-names).",
            limits.clone(),
        );
        let handovers = Family::<HandoverLabels, Counter>::default();
        registry.register(
            "mpsync_handovers",
            "Changes of holder in this elector's history, by kind and why (acquired, released, expired, \
             session_ended, transferred; unknown when the record does not say).",
            handovers.clone(),
        );
        let leaderless = Family::<ElectionLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "mpsync_election_leaderless_seconds",
            "Seconds since the leader of an election left, for elections that have none yet (as this elector's \
             history saw them; at most 1,000, the longest leaderless).",
            leaderless.clone(),
        );
        let history_names = Gauge::default();
        registry.register("mpsync_history_names", "Names whose history this elector keeps.", history_names.clone());
        let build = Family::<BuildLabels, Gauge>::default();
        build.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
        registry.register("mpsync_build_info", "The elector's build: 1, labelled with its version.", build);
        Metrics {
            registry,
            acquisitions,
            renewals,
            releases,
            expiries,
            conflicts,
            session_releases,
            refusals,
            latency,
            store_calls,
            held,
            watchers,
            watched_names,
            sessions,
            waiters,
            lock_wait,
            sizes,
            size_source: OnceLock::new(),
            store_up,
            store_errors,
            long_polls,
            kept_watch_names,
            limits,
            handovers,
            leaderless,
            history_names,
            history_source: OnceLock::new(),
            scrape: Mutex::new(()),
        }
    }

    /// Counts one event.
    pub fn count(&self, kind: Kind, event: Event) {
        let family = match event {
            Event::Acquisition => &self.acquisitions,
            Event::Renewal => &self.renewals,
            Event::Release => &self.releases,
            Event::Expiry => &self.expiries,
            Event::Conflict => &self.conflicts,
            Event::SessionRelease => &self.session_releases,
        };
        family.get_or_create(&kind_label(kind)).inc();
    }

    /// Counts one refusal at a limit.
    pub fn refuse(&self, what: Refusal) {
        let limit = match what {
            Refusal::Connection => "connections",
            Refusal::LongPoll => "long_polls",
            Refusal::Session => "sessions",
            Refusal::KeptWatchNames => "kept_watch_names",
        };
        self.refusals.get_or_create(&LimitLabel { limit }).inc();
    }

    /// Reports the sessions open now.
    pub fn set_sessions(&self, open: usize) {
        self.sessions.set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    /// Counts a long-poll as waiting until the returned guard is dropped.
    pub fn watching(&self) -> Watching<'_> {
        self.watchers.inc();
        Watching(&self.watchers)
    }

    /// Counts `names` followed by a parked watch until the returned guard
    /// is dropped.
    pub fn watching_names(&self, names: usize) -> WatchingNames<'_> {
        let names = i64::try_from(names).unwrap_or(i64::MAX);
        self.watched_names.inc_by(names);
        WatchingNames(&self.watched_names, names)
    }

    /// Counts a waiter as parked until the returned guard is dropped.
    pub fn waiting(&self) -> Watching<'_> {
        self.waiters.inc();
        Watching(&self.waiters)
    }

    /// Records how long a waiter waited in line for the lock.
    pub fn observe_lock_wait(&self, waited: Duration) {
        self.lock_wait.observe(waited.as_secs_f64());
    }

    /// Reports `source`'s sizes (map name, entries) in
    /// `mpsync_state_entries` at every scrape. The first source set stays.
    pub fn report_sizes(&self, source: impl Fn() -> Vec<(&'static str, usize)> + Send + Sync + 'static) {
        let _ = self.size_source.set(Box::new(source));
    }

    /// Creates `store`'s series of `mpsync_store_errors_total` at zero, so
    /// that the first error is an increase Prometheus sees (a counter
    /// born at 1 has no earlier sample to rise from).
    pub fn observe_store(&self, store: &'static str) {
        for call in ["read", "write", "watch", "list", "ping"] {
            let _ = self.store_errors.get_or_create(&StoreErrorLabels { store, call });
        }
    }

    /// Records what a call to the store found: an answer (any, a conflict
    /// included), or the store unavailable (`call`: read, write, watch,
    /// list, ping).
    pub fn store_outcome(&self, store: &'static str, call: &'static str, answered: bool) {
        self.store_up.set(i64::from(answered));
        if !answered {
            self.store_errors.get_or_create(&StoreErrorLabels { store, call }).inc();
        }
    }

    /// Reports the long-poll slots taken now, the names of kept watch
    /// sets, and the limits of `mpsync_limit`.
    pub fn report_capacity(
        &self,
        long_polls: usize,
        max_long_polls: usize,
        max_sessions: usize,
        (kept_names, max_kept_names): (usize, usize),
    ) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.long_polls.set(gauge(long_polls));
        self.kept_watch_names.set(gauge(kept_names));
        self.limits.get_or_create(&LimitLabel { limit: "kept_watch_names" }).set(gauge(max_kept_names));
        self.limits.get_or_create(&LimitLabel { limit: "long_polls" }).set(gauge(max_long_polls));
        self.limits.get_or_create(&LimitLabel { limit: "sessions" }).set(gauge(max_sessions));
    }

    /// Records how long a request on `route` took and its status code.
    pub fn observe_request(&self, route: &'static str, status: u16, elapsed: Duration) {
        self.latency.get_or_create(&RouteLabels { route, status }).observe(elapsed.as_secs_f64());
    }

    /// Counts one change of holder in the history; `why` as on the wire.
    pub fn count_handover(&self, kind: Kind, why: &'static str) {
        self.handovers.get_or_create(&HandoverLabels { kind: kind.singular(), why }).inc();
    }

    /// Reports the history's gauges from `source`, read at each scrape.
    pub fn report_history(&self, source: impl Fn() -> (usize, Vec<(String, f64)>) + Send + Sync + 'static) {
        let _ = self.history_source.set(Box::new(source));
    }

    /// Renders every metric in the OpenMetrics text format ([`CONTENT_TYPE`]);
    /// `held` is the number of leases held now, `store_calls` the store's
    /// own running counts by kind of call.
    pub fn render(&self, held: usize, store: &'static str, store_calls: &[(&str, u64)]) -> String {
        let _one_at_a_time = mpsync_core::lock(&self.scrape);
        self.held.set(i64::try_from(held).unwrap_or(i64::MAX));
        for (map, n) in self.size_source.get().map(|source| source()).unwrap_or_default() {
            self.sizes.get_or_create(&MapLabel { map }).set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if let Some(source) = self.history_source.get() {
            let (names, leaderless) = source();
            self.history_names.set(i64::try_from(names).unwrap_or(i64::MAX));
            // Only the elections leaderless now: the others' series go.
            self.leaderless.clear();
            for (election, seconds) in leaderless {
                self.leaderless.get_or_create(&ElectionLabel { election }).set(seconds);
            }
        }
        for (call, n) in store_calls {
            let counter = self.store_calls.get_or_create(&StoreCallLabels { store, call: (*call).to_owned() });
            counter.inc_by(n.saturating_sub(counter.get()));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_renders_under_its_documented_name() {
        let m = Metrics::new();
        m.count(Kind::Election, Event::Acquisition);
        m.refuse(Refusal::LongPoll);
        m.refuse(Refusal::Session);
        m.count(Kind::Lock, Event::SessionRelease);
        m.set_sessions(2);
        m.observe_request("election_put", 200, Duration::from_millis(2));
        let watching = m.watching();
        m.report_sizes(|| vec![("judge", 2), ("records", 4)]);
        m.report_capacity(5, 8, 16, (3, 40));
        m.store_outcome("memory", "read", false);
        let text = m.render(3, "memory", &[("write", 5)]);
        for line in [
            "mpsync_acquisitions_total{kind=\"election\"} 1",
            "mpsync_acquisitions_total{kind=\"lock\"} 0",
            "mpsync_refusals_total{limit=\"long_polls\"} 1",
            "mpsync_refusals_total{limit=\"connections\"} 0",
            "mpsync_refusals_total{limit=\"sessions\"} 1",
            "mpsync_refusals_total{limit=\"kept_watch_names\"} 0",
            "mpsync_session_releases_total{kind=\"lock\"} 1",
            "mpsync_sessions 2",
            "mpsync_held_leases 3",
            "mpsync_watchers 1",
            "mpsync_state_entries{map=\"judge\"} 2",
            "mpsync_state_entries{map=\"records\"} 4",
            "mpsync_store_calls_total{store=\"memory\",call=\"write\"} 5",
            "mpsync_request_duration_seconds_count{route=\"election_put\",status=\"200\"} 1",
            "mpsync_request_duration_seconds_bucket{le=\"0.0025\",route=\"election_put\",status=\"200\"} 1",
            "mpsync_build_info{version=\"0.1.0\"} 1",
            "mpsync_long_polls 5",
            "mpsync_limit{limit=\"long_polls\"} 8",
            "mpsync_limit{limit=\"sessions\"} 16",
            "mpsync_kept_watch_names 3",
            "mpsync_limit{limit=\"kept_watch_names\"} 40",
            "mpsync_store_up 0",
            "mpsync_store_errors_total{store=\"memory\",call=\"read\"} 1",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        drop(watching);
        let text = m.render(0, "memory", &[("write", 7)]);
        assert!(text.contains("mpsync_watchers 0\n") && text.contains("call=\"write\"} 7\n"), "{text}");
    }
}
