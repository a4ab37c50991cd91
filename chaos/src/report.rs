//! What a run did and found, as data and as text.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::check::Findings;
use crate::fault::FaultKind;
use crate::store::StoreKind;

/// The clock fault of a run, and what became of the skewed holder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClockReport {
    /// The skewed contender's client id.
    pub client: String,
    /// The rate asked for.
    pub rate: f64,
    /// The rate measured on a Rust process before the run.
    pub measured: f64,
    /// Its critical sections.
    pub sections: usize,
    /// Those it was inside when a partition cut it off from its elector.
    pub partitioned: usize,
    /// Overlaps of its sections with a later holder's that nothing excuses.
    pub violating: usize,
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
    pub faults: BTreeMap<FaultKind, usize>,
    /// What the checker found.
    pub findings: Findings,
    /// The clock fault, if the run had one.
    pub clock: Option<ClockReport>,
    /// The electors' output.
    pub elector_log: PathBuf,
}

impl Report {
    /// No violation of any kind.
    pub fn safe(&self) -> bool {
        self.findings.safe()
    }

    /// The report as text, a line per figure.
    pub fn text(&self) -> String {
        let f = &self.findings;
        let faults: Vec<String> = self.faults.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let mut out = format!(
            "store {}, seed {}, {:.1} s\n\
             critical sections {} (hand-overs {}, {:.0}/s), killed inside {}, writes accepted {}\n\
             faults: {}\n\
             overlapping sections: {} fenced (a frozen holder woke up late), {} violating\n\
             stale writes: {} refused by the resource, {} accepted\n\
             legitimate writes refused {}, token regressions {}\n\
             stranger: {} attempts to renew or release a lease it did not hold, {} accepted\n",
            self.store.name(),
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
            f.stranger_attempts,
            f.stranger_accepted,
        );
        if let Some(c) = &self.clock {
            out.push_str(&format!(
                "clock: {} at x{} (measured x{:.3}): {} sections, {} cut off from its elector, {} violating\n",
                c.client, c.rate, c.measured, c.sections, c.partitioned, c.violating
            ));
        }
        out.push_str(&format!(
            "verdict: {}\nelector logs: {}\n",
            if self.safe() { "SAFE" } else { "VIOLATED" },
            self.elector_log.display()
        ));
        for e in &f.examples {
            out.push_str(&format!("  violation: {e}\n"));
        }
        out
    }
}
