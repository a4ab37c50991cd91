//! Logging a refusal at most once a second (or once per any period).
//!
//! A flood of refused connections or long-polls must not become a flood of
//! log lines: the counters in `/metrics` have every refusal, the log says
//! that it is happening. The server (connections), the service
//! (long-polls) and the Kubernetes store's Events (once a minute) use it,
//! so it lives here rather than in any of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Says yes at most once a period (a second unless told otherwise).
pub(crate) struct Quiet {
    origin: Instant,
    period_ms: u64,
    last_ms: AtomicU64,
}

impl Quiet {
    pub(crate) fn new() -> Quiet {
        Quiet::every(Duration::from_secs(1))
    }

    /// Says yes at most once per `period`.
    pub(crate) fn every(period: Duration) -> Quiet {
        let period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX).max(1);
        Quiet { origin: Instant::now(), period_ms, last_ms: AtomicU64::new(0) }
    }

    /// True at most once a period.
    pub(crate) fn speak(&self) -> bool {
        let elapsed = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        // Offset by one period, so that the first call speaks at once.
        let now = elapsed.saturating_add(self.period_ms);
        let last = self.last_ms.load(Ordering::Relaxed);
        now >= last.saturating_add(self.period_ms)
            && self.last_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_logged_at_most_once_a_second() {
        let quiet = Quiet::new();
        assert!(quiet.speak());
        assert!(!quiet.speak());
    }

    #[test]
    fn a_longer_period_keeps_quiet_longer() {
        let quiet = Quiet::every(Duration::from_secs(60));
        assert!(quiet.speak());
        assert!(!quiet.speak());
    }
}
