//! A store seen through its outcomes: [`Observed`] wraps any [`Store`] and
//! tells the metrics what each call found (`mpsync_store_up`,
//! `mpsync_store_errors_total`), so that an operator learns the store is
//! down from the calls the elector makes anyway, with no probe of its own.
//!
//! Why a wrapper rather than a probe at each scrape: a probe is a call the
//! elector would not otherwise make (one more Lease list per scrape and
//! pod on a cluster), and it would answer a different question, "does the
//! store answer a ping now", where an operator asks "are the elector's
//! calls failing". The calls that pass through here are the trait's:
//! reads, writes, listings, waits and `/readyz`'s ping. An elector with no
//! traffic still gets the kubelet's readiness probe every few seconds; one
//! without a probe and without traffic keeps the last outcome (the etcd
//! store's keep-alives and the stores' own watches run beneath the trait
//! and are not counted).

use std::sync::Arc;

use async_trait::async_trait;
use mpsync_core::{Kind, Record};

use super::{Feed, Key, NameRefused, Page, Store, StoreError, Versioned};
use crate::metrics::Metrics;

/// `inner`, with the outcome of every call counted in `metrics`.
///
/// Every method of [`Store`] is forwarded, the ones with a default too: a
/// method left to its default here would hide the inner store's own.
pub struct Observed {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl Observed {
    /// Wraps `inner`, reporting to `metrics`.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        metrics.observe_store(inner.name());
        Observed { inner, metrics }
    }

    /// Counts `result`'s outcome for `call` and hands it on. Only
    /// [`StoreError::Unavailable`] says the store is down: a conflict, a
    /// full store or a stale cursor are answers.
    fn seen<T>(&self, call: &'static str, result: Result<T, StoreError>) -> Result<T, StoreError> {
        let answered = !matches!(result, Err(StoreError::Unavailable(_)));
        self.metrics.store_outcome(self.inner.name(), call, answered);
        result
    }
}

#[async_trait]
impl Store for Observed {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn check_name(&self, key: &Key) -> Result<(), NameRefused> {
        self.inner.check_name(key)
    }

    fn max_ttl_ms(&self) -> u64 {
        self.inner.max_ttl_ms()
    }

    fn max_waiters(&self) -> usize {
        self.inner.max_waiters()
    }

    async fn get(&self, key: &Key) -> Result<Option<Versioned>, StoreError> {
        self.seen("read", self.inner.get(key).await)
    }

    async fn put(&self, key: &Key, record: &Record, current: Option<&Versioned>) -> Result<Versioned, StoreError> {
        self.seen("write", self.inner.put(key, record, current).await)
    }

    async fn wait_change(&self, key: &Key, version: u64) -> Result<(), StoreError> {
        self.seen("watch", self.inner.wait_change(key, version).await)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.seen("ping", self.inner.ping().await)
    }

    fn feed(&self) -> Feed {
        self.inner.feed()
    }

    fn feed_id(&self, key: &Key) -> String {
        self.inner.feed_id(key)
    }

    async fn list(&self, kind: Kind, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        self.seen("list", self.inner.list(kind, cursor, limit).await)
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.inner.counters()
    }

    fn absent_version(&self) -> u64 {
        self.inner.absent_version()
    }

    fn sizes(&self) -> Vec<(&'static str, usize)> {
        self.inner.sizes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn an_unavailable_store_is_down_until_it_answers_again() {
        let metrics = Arc::new(Metrics::new());
        let store = Observed::new(Arc::new(MemoryStore::new()), metrics.clone());
        let key = Key { kind: Kind::Lock, name: "a".into() };
        let text = || metrics.render(0, "memory", &[]);
        assert!(text().contains("\nmpsync_store_up 1\n"), "{}", text());
        // Every call's series from the start, at zero.
        for call in ["read", "write", "watch", "list", "ping"] {
            let zero = format!("mpsync_store_errors_total{{store=\"memory\",call=\"{call}\"}} 0\n");
            assert!(text().contains(&zero), "{zero} missing from {}", text());
        }
        store.seen("write", Err::<(), _>(StoreError::Unavailable("etcd: no answer".into()))).unwrap_err();
        assert!(text().contains("\nmpsync_store_up 0\n"), "{}", text());
        assert!(text().contains("mpsync_store_errors_total{store=\"memory\",call=\"write\"} 1\n"), "{}", text());
        // A conflict is an answer: the store is up.
        store.seen("write", Err::<(), _>(StoreError::Conflict)).unwrap_err();
        assert!(text().contains("\nmpsync_store_up 1\n"), "{}", text());
        store.seen("read", Err::<(), _>(StoreError::Unavailable("again".into()))).unwrap_err();
        assert_eq!(store.get(&key).await, Ok(None));
        assert!(text().contains("\nmpsync_store_up 1\n"), "{}", text());
        assert!(text().contains("mpsync_store_errors_total{store=\"memory\",call=\"read\"} 1\n"), "{}", text());
    }
}
