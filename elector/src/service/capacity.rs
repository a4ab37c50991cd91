//! How full the elector's limits are, for `/metrics`: read at each scrape
//! rather than counted as slots come and go, so that the figure is the
//! semaphore's own and cannot drift from it.

use super::Service;

impl Service {
    /// Reports the long-poll slots taken now (`mpsync_long_polls`), and
    /// `--max-long-polls` and `--max-sessions` (`mpsync_limit`), which the
    /// alerts compare them with; and the names of kept watch sets, with
    /// their bound.
    pub fn report_capacity(&self) {
        let taken = self.max_long_polls.saturating_sub(self.long_polls.available_permits());
        self.metrics.report_capacity(taken, self.max_long_polls, self.sessions.max(), self.kept_watch_names());
    }
}
