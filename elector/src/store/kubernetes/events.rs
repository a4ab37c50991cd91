//! Kubernetes Events on the Lease at each change of holder, as client-go's
//! leader election records them (reason `LeaderElection`, note `"<holder>
//! became leader"`), through the `events.k8s.io/v1` API, so that `kubectl
//! events --for lease/election.web` tells an operator who led when.
//!
//! An Event is a courtesy to operators, never part of a lease: the store's
//! `put` hands the write's before and after to [`Recorder::record`], which
//! decides ([`change`], pure) and queues without waiting; one background
//! task creates the Events in order. A full queue, an API server that
//! refuses (RBAC without `create` on `events`) or does not answer drops
//! the Event: counted (`mpsync_store_calls_total{call="event_dropped"}`)
//! and logged at most once a minute, the lease write long since answered.
//!
//! Only the exclusive holder is reported: the shared holds of semaphores
//! and read-write locks come and go with every reader, and an Event each
//! would bury the hand-overs an operator looks for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use mpsync_core::history::changed_hands;
use mpsync_core::record::Why;
use mpsync_core::{Kind, Record};
use tokio::sync::mpsc;

use crate::quiet::Quiet;

/// `reportingController` of every Event the elector writes.
pub const REPORTING_CONTROLLER: &str = "metaparticle.io/elector";
/// Events waiting for the background task; one more is dropped.
pub const QUEUE: usize = 1024;
/// The API server's limits on `reportingInstance`, `note` and an object name.
const MAX_INSTANCE: usize = 128;
const MAX_NOTE: usize = 1024;
const MAX_NAME: usize = 253;

/// What one write did to the holder, as an Event says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `Acquire` (someone holds it now) or `Release` (nobody does).
    pub action: &'static str,
    /// `LeaderElection` for elections (client-go's), `LockHolder` for locks.
    pub reason: &'static str,
    /// For people: who, the token, and why.
    pub note: String,
}

/// Why the holder changed, for a note: `previous` is who held it before.
fn why_text(why: Option<Why>, previous: Option<&str>) -> Option<String> {
    Some(match (why?, previous) {
        (Why::Acquired, _) => "acquired".to_owned(),
        (Why::Released, Some(p)) => format!("{p} released it"),
        (Why::Released, None) => "released".to_owned(),
        (Why::Expired, Some(p)) => format!("{p}'s lease expired"),
        (Why::Expired, None) => "lease expired".to_owned(),
        (Why::SessionEnded, Some(p)) => format!("{p}'s session ended"),
        (Why::SessionEnded, None) => "session ended".to_owned(),
        (Why::Transferred, Some(p)) => format!("transferred from {p}"),
        (Why::Transferred, None) => "transferred".to_owned(),
    })
}

/// The Event a write from `before` to `after` of a `kind` record calls
/// for, if it changed the holder: a new lease (its token differs, or there
/// was no record), or a lease let go with nobody taking it. A renewal, or
/// a change to the line of waiters alone, calls for none.
pub fn change(kind: Kind, before: Option<&Record>, after: &Record) -> Option<Change> {
    let previous = before.and_then(|b| b.holder.as_deref());
    let was = (previous, before.map_or(0, |b| b.token));
    if !changed_hands(was, (after.holder.as_deref(), after.token)) {
        return None;
    }
    let (action, what, token, previous) = match (after.holder.as_deref(), previous) {
        (Some(holder), previous) => {
            let what = match kind {
                Kind::Election => format!("{holder} became leader"),
                Kind::Lock => format!("{holder} acquired the lock"),
            };
            // A new lease of the same holder (it let its lease run out and
            // claimed again) still names who held it before.
            ("Acquire", what, after.token, previous)
        }
        (None, Some(previous)) => {
            let what = match (kind, after.why) {
                (Kind::Election, _) => format!("{previous} stopped leading"),
                (Kind::Lock, Some(Why::Released)) => format!("{previous} released the lock"),
                (Kind::Lock, Some(_)) => format!("{previous} lost the lock"),
                (Kind::Lock, None) => format!("{previous} no longer holds the lock"),
            };
            ("Release", what, before.map_or(after.token, |b| b.token), None)
        }
        _ => return None,
    };
    let note = match why_text(after.why, previous) {
        Some(why) => format!("{what} (token {token}; {why})"),
        None => format!("{what} (token {token})"),
    };
    let reason = match kind {
        Kind::Election => "LeaderElection",
        Kind::Lock => "LockHolder",
    };
    Some(Change { action, reason, note: truncate(note, MAX_NOTE) })
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The Event's name: the Lease's, a dot and 16 hex digits of `nanos`, as
/// kubectl and client-go name theirs; the Lease's name shortened if the
/// whole would pass the 253 characters of an object name.
pub fn event_name(lease: &str, nanos: u64) -> String {
    let room = MAX_NAME - 17;
    let mut base = truncate(lease.to_owned(), room);
    // A shortened name must still end in an alphanumeric character.
    while base.ends_with(['.', '-']) {
        base.pop();
    }
    format!("{base}.{nanos:016x}")
}

/// What the Lease was after the write, for `regarding`.
pub struct Written<'a> {
    /// The Lease's name.
    pub name: &'a str,
    /// Its uid, as the API server answered the write.
    pub uid: Option<&'a str>,
    /// Its resourceVersion after the write.
    pub resource_version: Option<&'a str>,
}

/// Running counts, for `/metrics`.
struct Counts {
    created: AtomicU64,
    dropped: AtomicU64,
    quiet: Quiet,
}

impl Counts {
    fn drop_one(&self, why: impl std::fmt::Display) {
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if self.quiet.speak() {
            tracing::warn!(
                dropped,
                "a Kubernetes Event was dropped ({why}); leases are unaffected. Events need `create` on `events` in \
                 `events.k8s.io` (deploy/base/role.yaml); --kubernetes-events false turns them off. Logged at most \
                 once a minute"
            );
        }
    }
}

/// Queues Events for one background task that creates them.
pub struct Recorder {
    queue: mpsc::Sender<Event>,
    namespace: String,
    instance: String,
    /// The last name's nanoseconds: each Event's are above it, so two
    /// Events of one elector never share a name.
    last_nanos: AtomicU64,
    counts: Arc<Counts>,
}

impl Recorder {
    /// A recorder that creates Events in `namespace` through `client`,
    /// reported by `instance` (the elector's identity), each call bounded
    /// by `timeout`. Spawns its task, which ends when the recorder is
    /// dropped and its queue is empty.
    pub fn spawn(client: kube::Client, namespace: &str, instance: &str, timeout: Duration) -> Recorder {
        let (queue, rx) = mpsc::channel(QUEUE);
        let counts =
            Arc::new(Counts { created: AtomicU64::new(0), dropped: AtomicU64::new(0), quiet: Quiet::every(MINUTE) });
        tokio::spawn(deliver(Api::namespaced(client, namespace), rx, counts.clone(), timeout));
        Recorder {
            queue,
            namespace: namespace.to_owned(),
            instance: truncate(instance.to_owned(), MAX_INSTANCE),
            last_nanos: AtomicU64::new(0),
            counts,
        }
    }

    /// Queues the Event that the write of `lease` from `before` to `after`
    /// calls for, if any, without waiting.
    pub fn record(&self, kind: Kind, before: Option<&Record>, after: &Record, lease: Written<'_>) {
        let Some(change) = change(kind, before, after) else { return };
        let now = k8s_openapi::jiff::Timestamp::now();
        let nanos = u64::try_from(now.as_nanosecond()).unwrap_or(0);
        let nanos = match self
            .last_nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(nanos.max(last.saturating_add(1))))
        {
            Ok(last) | Err(last) => nanos.max(last.saturating_add(1)),
        };
        let event = Event {
            metadata: ObjectMeta {
                name: Some(event_name(lease.name, nanos)),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            reporting_controller: Some(REPORTING_CONTROLLER.to_owned()),
            reporting_instance: Some(self.instance.clone()),
            action: Some(change.action.to_owned()),
            reason: Some(change.reason.to_owned()),
            note: Some(change.note),
            type_: Some("Normal".to_owned()),
            regarding: Some(ObjectReference {
                api_version: Some("coordination.k8s.io/v1".to_owned()),
                kind: Some("Lease".to_owned()),
                name: Some(lease.name.to_owned()),
                namespace: Some(self.namespace.clone()),
                uid: lease.uid.map(str::to_owned),
                resource_version: lease.resource_version.map(str::to_owned),
                ..ObjectReference::default()
            }),
            ..Event::default()
        };
        if self.queue.try_send(event).is_err() {
            self.counts.drop_one(format_args!("{QUEUE} Events already wait for the API server"));
        }
    }

    /// `(created, dropped)` so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.counts.created.load(Ordering::Relaxed), self.counts.dropped.load(Ordering::Relaxed))
    }
}

const MINUTE: Duration = Duration::from_secs(60);

/// Creates the queued Events one at a time, in order.
async fn deliver(api: Api<Event>, mut queue: mpsc::Receiver<Event>, counts: Arc<Counts>, timeout: Duration) {
    let params = PostParams::default();
    while let Some(event) = queue.recv().await {
        match tokio::time::timeout(timeout, api.create(&params, &event)).await {
            Ok(Ok(_)) => {
                counts.created.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(kube::Error::Api(status))) => {
                counts.drop_one(format_args!("{} {}: {}", status.code, status.reason, status.message.trim()))
            }
            Ok(Err(e)) => counts.drop_one(e),
            Err(_) => counts.drop_one(format_args!("no answer within {timeout:?}")),
        }
    }
}

#[cfg(test)]
mod tests;
