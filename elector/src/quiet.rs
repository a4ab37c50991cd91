//! Logging a refusal at most once a second.
//!
//! A flood of refused connections or long-polls must not become a flood of
//! log lines: the counters in `/metrics` have every refusal, the log says
//! that it is happening. Both the server (connections) and the service
//! (long-polls) use it, so it lives here rather than in either.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Says yes at most once a second.
pub(crate) struct Quiet {
    origin: Instant,
    last_ms: AtomicU64,
}

impl Quiet {
    pub(crate) fn new() -> Quiet {
        Quiet { origin: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    /// True at most once a second.
    pub(crate) fn speak(&self) -> bool {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1_000);
        let last = self.last_ms.load(Ordering::Relaxed);
        now >= last + 1_000 && self.last_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
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
}
