//! Prometheus metrics, rendered as text for `GET /metrics`.
//!
//! Counters are per kind (`lock`, `election`); request latency is a
//! histogram per route. Long-polls are timed under their own route so their
//! deliberate waiting does not hide the latency of ordinary requests.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mpsync_core::Kind;

const BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0];

/// A lease event that is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A lease was granted to a new holder.
    Acquisition,
    /// A holder renewed its lease.
    Renewal,
    /// A holder released its lease.
    Release,
    /// A lease ran out and was taken over by another claimant.
    Expiry,
    /// A claim or release was refused with 409.
    Conflict,
}

const EVENTS: [(Event, &str, &str); 5] = [
    (Event::Acquisition, "mpsync_acquisitions_total", "Leases granted to a new holder."),
    (Event::Renewal, "mpsync_renewals_total", "Leases renewed by their holder."),
    (Event::Release, "mpsync_releases_total", "Leases released by their holder."),
    (Event::Expiry, "mpsync_expiries_total", "Leases that ran out and were taken over."),
    (Event::Conflict, "mpsync_conflicts_total", "Claims and releases refused with 409."),
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// A request or connection turned away at a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A connection past `--max-connections`.
    Connection,
    /// A long-poll past `--max-long-polls`.
    LongPoll,
}

const REFUSALS: [(Refusal, &str); 2] = [(Refusal::Connection, "connections"), (Refusal::LongPoll, "long_polls")];

/// The elector's metrics.
#[derive(Default)]
pub struct Metrics {
    events: [[AtomicU64; 2]; EVENTS.len()],
    refusals: [AtomicU64; REFUSALS.len()],
    latency: Mutex<BTreeMap<(&'static str, u16), Histogram>>,
    watchers: AtomicU64,
}

/// Counts one waiting long-poll for as long as it lives.
pub struct Watching<'a>(&'a AtomicU64);

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn kind_index(kind: Kind) -> usize {
    match kind {
        Kind::Lock => 0,
        Kind::Election => 1,
    }
}

impl Metrics {
    /// Counts one event.
    pub fn count(&self, kind: Kind, event: Event) {
        let i = EVENTS.iter().position(|(e, ..)| *e == event).unwrap_or(0);
        self.events[i][kind_index(kind)].fetch_add(1, Ordering::Relaxed);
    }

    /// The count of one event so far.
    pub fn get(&self, kind: Kind, event: Event) -> u64 {
        let i = EVENTS.iter().position(|(e, ..)| *e == event).unwrap_or(0);
        self.events[i][kind_index(kind)].load(Ordering::Relaxed)
    }

    /// Counts one refusal at a limit.
    pub fn refuse(&self, what: Refusal) {
        let i = REFUSALS.iter().position(|(r, _)| *r == what).unwrap_or(0);
        self.refusals[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a long-poll as waiting until the returned guard is dropped.
    pub fn watching(&self) -> Watching<'_> {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        Watching(&self.watchers)
    }

    /// Records how long a request on `route` took and its status code.
    pub fn observe_request(&self, route: &'static str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut latency = self.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let h = latency.entry((route, status)).or_default();
        h.count += 1;
        h.sum += secs;
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            h.counts[i] += 1;
        }
    }

    /// Renders every metric in the Prometheus text format; `held` is the
    /// number of leases currently held.
    pub fn render(&self, held: usize, store: &str, store_calls: &[(&str, u64)]) -> String {
        let mut out = String::new();
        let name = "mpsync_store_calls_total";
        let _ = writeln!(out, "# HELP {name} Calls made to the store, by kind of call.\n# TYPE {name} counter");
        for (call, n) in store_calls {
            let _ = writeln!(out, "{name}{{store=\"{store}\",call=\"{call}\"}} {n}");
        }
        for (i, (_, name, help)) in EVENTS.iter().enumerate() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for kind in [Kind::Lock, Kind::Election] {
                let v = self.events[i][kind_index(kind)].load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{kind=\"{}\"}} {v}", kind.plural().trim_end_matches('s'));
            }
        }
        let name = "mpsync_refusals_total";
        let _ = writeln!(out, "# HELP {name} Connections and requests turned away at a limit.\n# TYPE {name} counter");
        for (i, (_, reason)) in REFUSALS.iter().enumerate() {
            let _ = writeln!(out, "{name}{{limit=\"{reason}\"}} {}", self.refusals[i].load(Ordering::Relaxed));
        }
        let _ = writeln!(out, "# HELP mpsync_held_leases Leases held right now, as this elector last saw them.");
        let _ = writeln!(out, "# TYPE mpsync_held_leases gauge\nmpsync_held_leases {held}");
        let watchers = self.watchers.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP mpsync_watchers Long-polls waiting for a change right now.");
        let _ = writeln!(out, "# TYPE mpsync_watchers gauge\nmpsync_watchers {watchers}");
        let name = "mpsync_request_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Time to answer a request, by route and status.\n# TYPE {name} histogram");
        let latency = self.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for ((route, status), h) in latency.iter() {
            let labels = format!("route=\"{route}\",status=\"{status}\"");
            let mut cumulative = 0;
            for (bound, count) in BUCKETS.iter().zip(h.counts) {
                cumulative += count;
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
            }
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}\n{name}_count{{{labels}}} {}", h.sum, h.count);
        }
        out
    }
}
