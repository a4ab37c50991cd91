//! The task that keeps one leader Service's EndpointSlice: it follows the
//! election through the elector's own [`Service`] (a long-poll, so it hears
//! of a release, a new leader and a lease running out at once), and after
//! each change reads the slice, lets [`decide`] choose, and writes.
//!
//! Reads are spared where nothing can have changed: a renewal (the same
//! leader, token and address, well before the lease it renews would have
//! run out on this elector's clock) and a long-poll that timed out keep the
//! slice this keeper last found right, for at most [`RESYNC`]; so an
//! elector costs the API server nothing per renewal, and a slice edited or
//! deleted by hand is set right within [`RESYNC`]. A renewal that comes
//! close to the lease's end is checked, since another elector may have seen
//! the lease run out and emptied the slice.
//!
//! Errors (the store, the API server, RBAC): logged once per outage, then
//! retried with a growing pause (about 50 ms doubling to 1 s, jittered), for
//! as long as the elector runs. At shutdown the task stops and leaves the
//! slice as it is: the electors of the other pods, or the next start, keep
//! it right.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use mpsync_core::Kind;
use mpsync_core::client::Backoff;

use super::{LeaderService, Says, Unchanged, Warning, Write, decide, says};
use crate::service::{Service, ServiceError, View};
use crate::store::Key;

/// How long one long-poll on the election waits.
const WAIT: Duration = Duration::from_secs(30);
/// The longest a keeper trusts the slice it last found right without
/// reading it again.
pub const RESYNC: Duration = Duration::from_secs(300);
/// A renewal this close to the end of the lease it renews (on this
/// elector's clock) is checked against the slice: another elector, which
/// saw the lease written a little earlier, may have judged it run out.
const EXPIRY_MARGIN: Duration = Duration::from_secs(1);
/// Reads and writes of the slice per change before giving up for a pause.
const ATTEMPTS: usize = 16;
/// The lease whose [`Backoff`] this is: pauses from about 50 ms to 1 s.
const BACKOFF_OF: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
enum KeepError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("kubernetes EndpointSlice {0}")]
    Api(String),
    /// A write found the slice changed (or gone) since it was read.
    #[error("the EndpointSlice changed while it was written")]
    Conflict,
    #[error("the EndpointSlice kept changing during {ATTEMPTS} attempts")]
    Contended,
}

/// The slice as this keeper last found it right.
struct Confirmed {
    /// For the view of this version.
    version: u64,
    says: Says,
    /// When it was last read.
    read_at: Instant,
    /// When the lease of that view runs out on this elector's clock.
    expires_at: Option<Instant>,
}

impl Confirmed {
    /// Whether `view` (with `wanted`, at `now`) certainly asks for what the
    /// slice said when last read.
    fn still_right(&self, view: &View, wanted: &Says, now: Instant) -> bool {
        if now.duration_since(self.read_at) >= RESYNC {
            return false;
        }
        view.version() == self.version
            || (matches!(view, View::Held(_))
                && *wanted == self.says
                && self.expires_at.is_some_and(|at| now + EXPIRY_MARGIN < at))
    }
}

fn expires_at(view: &View, now: Instant) -> Option<Instant> {
    match view {
        View::Held(lease) => Some(now + Duration::from_millis(lease.expires_in_ms)),
        _ => None,
    }
}

struct Keeper {
    service: Arc<Service>,
    slices: Api<EndpointSlice>,
    namespace: String,
    spec: LeaderService,
    timeout: Duration,
    warned: Option<Warning>,
    confirmed: Option<Confirmed>,
}

/// Starts one keeper per `specs`, over `client` in `namespace`, each API
/// call bounded by `timeout`. Each stops when `service` shuts down.
pub fn spawn(
    service: &Arc<Service>,
    client: &kube::Client,
    namespace: &str,
    specs: &[LeaderService],
    timeout: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    specs
        .iter()
        .map(|spec| {
            let keeper = Keeper {
                service: service.clone(),
                slices: Api::namespaced(client.clone(), namespace),
                namespace: namespace.to_owned(),
                spec: spec.clone(),
                timeout,
                warned: None,
                confirmed: None,
            };
            tokio::spawn(keeper.run())
        })
        .collect()
}

fn api_error(what: &str, e: kube::Error) -> KeepError {
    match e {
        kube::Error::Api(status) => {
            KeepError::Api(format!("{what}: {} {} ({})", status.code, status.reason, status.message.trim()))
        }
        other => KeepError::Api(format!("{what}: {other}")),
    }
}

impl Keeper {
    async fn run(mut self) {
        let stopped = self.service.stopped();
        tokio::pin!(stopped);
        let key = Key { kind: Kind::Election, name: self.spec.election.clone() };
        let mut seen: Option<u64> = None;
        let mut backoff = Backoff::new(BACKOFF_OF);
        let mut failing = false;
        loop {
            let step = async {
                let service = self.service.clone();
                let view = match seen {
                    None => service.read(&key).await?,
                    Some(version) => service.wait(&key, version, WAIT).await?,
                };
                self.keep(&view).await?;
                Ok::<_, KeepError>(view.version())
            };
            let outcome = tokio::select! {
                biased;
                () = &mut stopped => return,
                outcome = step => outcome,
            };
            match outcome {
                Ok(version) => {
                    seen = Some(version);
                    if failing {
                        tracing::info!(slice = self.spec.slice_name(), "keeping the leader's EndpointSlice again");
                        failing = false;
                    }
                    backoff.reset();
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(
                            slice = self.spec.slice_name(),
                            election = self.spec.election,
                            "cannot keep the leader's EndpointSlice, retrying: {e}"
                        );
                        failing = true;
                    }
                    (seen, self.confirmed) = (None, None);
                    let pause = backoff.next(getrandom::u64().unwrap_or(0), None);
                    tokio::select! {
                        biased;
                        () = &mut stopped => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    /// Makes the slice say what `view` asks, unless it certainly does.
    async fn keep(&mut self, view: &View) -> Result<(), KeepError> {
        let now = Instant::now();
        let (wanted, _) = says(view);
        if let Some(confirmed) = &mut self.confirmed
            && confirmed.still_right(view, &wanted, now)
        {
            // A renewal: the lease now runs out later.
            confirmed.version = view.version();
            confirmed.expires_at = expires_at(view, now);
            return Ok(());
        }
        self.confirmed = None;
        for _ in 0..ATTEMPTS {
            let current = self.read().await?;
            let plan = decide(&self.spec, &self.namespace, view, current.as_ref());
            self.warn(plan.warning);
            let written = match plan.write {
                Write::Nothing(Unchanged::AlreadyRight | Unchanged::NothingToList) => Ok(()),
                // Not ours to keep right: read again at the next change.
                Write::Nothing(Unchanged::WrittenFromNewer { .. } | Unchanged::Foreign) => return Ok(()),
                Write::Create(slice) => self.write(slice, true).await,
                Write::Update(slice) => self.write(slice, false).await,
            };
            match written {
                Ok(()) => {
                    let expires_at = expires_at(view, now);
                    self.confirmed =
                        Some(Confirmed { version: view.version(), says: wanted, read_at: now, expires_at });
                    return Ok(());
                }
                Err(KeepError::Conflict) => {}
                Err(e) => return Err(e),
            }
        }
        Err(KeepError::Contended)
    }

    fn warn(&mut self, warning: Option<Warning>) {
        if warning != self.warned {
            if let Some(w) = &warning {
                tracing::warn!(slice = self.spec.slice_name(), election = self.spec.election, "{w}");
            }
            self.warned = warning;
        }
    }

    async fn read(&self) -> Result<Option<EndpointSlice>, KeepError> {
        let name = self.spec.slice_name();
        match tokio::time::timeout(self.timeout, self.slices.get_opt(&name)).await {
            Ok(Ok(slice)) => Ok(slice),
            Ok(Err(e)) => Err(api_error("read", e)),
            Err(_) => Err(KeepError::Api(format!("read: no answer within {:?}", self.timeout))),
        }
    }

    /// Creates or replaces the slice; a 409 (someone else created or
    /// changed it) or a 404 (deleted since read) is a [`KeepError::Conflict`].
    async fn write(&self, slice: EndpointSlice, create: bool) -> Result<(), KeepError> {
        let name = self.spec.slice_name();
        let params = PostParams::default();
        let call = async {
            if create {
                self.slices.create(&params, &slice).await
            } else {
                self.slices.replace(&name, &params, &slice).await
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(_)) => {
                let leader = slice.metadata.annotations.as_ref().and_then(|a| a.get(super::LEADER_ANNOTATION));
                match (slice.endpoints.first().and_then(|e| e.addresses.first()), leader) {
                    (Some(ip), Some(leader)) => {
                        let port = slice.ports.iter().flatten().next().and_then(|p| p.port).unwrap_or(0);
                        tracing::info!(slice = name, %leader, "the leader's EndpointSlice lists {ip} port {port}");
                    }
                    _ => tracing::info!(slice = name, ?leader, "the leader's EndpointSlice lists no endpoint"),
                }
                Ok(())
            }
            Ok(Err(kube::Error::Api(status))) if status.code == 409 || status.code == 404 => Err(KeepError::Conflict),
            Ok(Err(e)) => Err(api_error(if create { "create" } else { "update" }, e)),
            Err(_) => Err(KeepError::Api(format!("write: no answer within {:?}", self.timeout))),
        }
    }
}

#[cfg(test)]
mod tests {
    use mpsync_core::wire::LeaseView;

    use super::*;

    fn held(token: u64, version: u64, expires_in_ms: u64) -> View {
        View::Held(LeaseView {
            name: "web".into(),
            holder: "pod-a".into(),
            token,
            ttl_ms: 5000,
            version,
            expires_in_ms,
            address: Some("10.0.0.7:8080".into()),
            waiting: 0,
            shared: false,
            permit: None,
            transfer: None,
        })
    }

    fn confirmed(view: &View, at: Instant) -> Confirmed {
        Confirmed { version: view.version(), says: says(view).0, read_at: at, expires_at: expires_at(view, at) }
    }

    #[test]
    fn only_what_cannot_have_changed_skips_the_read() {
        let t0 = Instant::now();
        let first = held(3, 10, 5000);
        let c = confirmed(&first, t0);
        let right = |view: &View, after: Duration| c.still_right(view, &says(view).0, t0 + after);
        // A long-poll that timed out: the same view.
        assert!(right(&first, Duration::from_secs(30)));
        // A renewal well before the end of the lease renewed.
        assert!(right(&held(3, 12, 5000), Duration::from_secs(1)));
        // One within a second of its end: another elector may have seen
        // it run out and emptied the slice.
        assert!(!right(&held(3, 12, 5000), Duration::from_millis(4500)));
        // Anything else that changed: a new token, nobody leading.
        assert!(!right(&held(4, 12, 5000), Duration::from_secs(1)));
        assert!(!right(&View::Free { version: 12 }, Duration::from_secs(1)));
        // And nothing is trusted past RESYNC.
        assert!(!right(&first, RESYNC));
        // Nobody leading, unchanged: skipped too.
        let free = View::Free { version: 13 };
        let c = confirmed(&free, t0);
        assert!(c.still_right(&free, &says(&free).0, t0 + Duration::from_secs(30)));
        assert!(!c.still_right(&View::Free { version: 14 }, &says(&free).0, t0 + Duration::from_secs(1)));
    }
}
