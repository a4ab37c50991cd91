//! The history of changes of holder, as the service serves it: on, with
//! its bounds, and `after=` long-polls that take a slot like any other.

use std::time::Duration;

use mpsync_core::history::{Limits, NameHistory, Page};

use super::{Service, ServiceError};
use crate::history::Following;
use crate::store::Key;

impl Service {
    /// Keeps a history of every change of holder from now on (see
    /// [`crate::history`]), within `limits`. Call inside a tokio runtime.
    pub fn with_history(mut self, limits: Limits) -> Self {
        let following = Following::start(self.store.clone(), limits, self.metrics.clone(), self.stopping.subscribe());
        self.history = Some(following);
        self
    }

    /// Up to `limit` changes after seq `after`, oldest first; when there
    /// are none (and no gap), waits up to `timeout` (capped by
    /// `--max-poll-wait`) for one, in a long-poll slot. `None`: history is
    /// off.
    pub async fn history_after(
        &self,
        after: u64,
        limit: usize,
        timeout: Duration,
    ) -> Result<Option<Page>, ServiceError> {
        let Some(following) = &self.history else { return Ok(None) };
        let history = following.history();
        let page = history.page(after, limit);
        if !page.changes.is_empty() || page.gap || timeout.is_zero() {
            return Ok(Some(page));
        }
        let _parked = self.park()?;
        let mut stopping = self.stopping.subscribe();
        if !*stopping.borrow_and_update() {
            tokio::select! {
                () = history.changed_after(after) => {}
                () = tokio::time::sleep(timeout.min(self.max_poll_wait)) => {}
                _ = stopping.changed() => {}
            }
        }
        Ok(Some(history.page(after, limit)))
    }

    /// Resolves once the history (if kept) has listed the store, so that
    /// every change from then on is in it.
    pub async fn history_listed(&self) {
        if let Some(following) = &self.history {
            following.history().listed().await;
        }
    }

    /// The changes kept for `key`, oldest first; `None`: history is off.
    pub fn history_of(&self, key: &Key) -> Option<NameHistory> {
        self.history.as_ref().map(|f| f.history().of(key))
    }
}
