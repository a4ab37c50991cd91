//! Sessions (`POST /v1/sessions`): the leases granted under each open
//! session, so that when the holder's end of one closes every lease under
//! it is released at once, through the same path as a `DELETE`.
//!
//! Only the holder's end closing is evidence that the holder can no longer
//! act (its process exited, or it closed the session itself), so only that
//! releases anything. A session the elector ends itself (shutdown, restart)
//! is forgotten: its leases run out at their TTL, as without a session.
//! The connection itself is `api/session.rs`'s; nothing here knows HTTP.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use mpsync_core::wire::{ConflictReason, ConflictView, LeaseKey, ReleaseRequest, SESSION_ID_LEN};

use super::{ReleaseResult, Service, ServiceError, View};
use crate::metrics::{Event, Refusal};
use crate::store::Key;

/// The default cap on sessions open at once.
pub const DEFAULT_MAX_SESSIONS: usize = 4_096;

/// A lease granted under a session: what its release names.
#[derive(Debug, Clone)]
struct Granted {
    holder: String,
    token: u64,
    key: Option<LeaseKey>,
    /// When it runs out unless renewed, on the service's clock.
    expires: Duration,
}

/// A place in line under a session: the lock and ticket, who waits and
/// with which key.
type Place = ((Key, u64), (String, Option<LeaseKey>));

/// Where a lease lives: the lock or election, and for a shared hold its
/// token (a lock has one exclusive lease at a time, but many shared ones).
type Slot = (Key, Option<u64>);

/// What a closed session leaves to undo: its leases and its places.
type Left = (Vec<(Key, Granted)>, Vec<Place>);

/// One open session: the names of the leases granted under it, and the
/// places in line taken under it.
#[derive(Debug, Default)]
struct Open {
    names: HashSet<Slot>,
    /// Places in line by lock and ticket: who waits, with which key.
    waiting: HashMap<(Key, u64), (String, Option<LeaseKey>)>,
    /// Past this many names, those whose lease ran out are dropped, so a
    /// session that lives for days holds only what may still be live.
    prune_at: usize,
}

const PRUNE_AT_LEAST: usize = 64;

#[derive(Debug, Default)]
struct Inner {
    open: HashMap<String, Open>,
    /// Every lease granted under an open session, by name, with its
    /// session: a name has one live lease at a time, so a newer grant
    /// replaces an older entry.
    leases: HashMap<Slot, (String, Granted)>,
    /// Every place in line taken under an open session, with its session:
    /// a place refreshed under another session (or none), handed over or
    /// given up is no longer the first one's to give up.
    places: HashMap<(Key, u64), String>,
}

/// The open sessions and the leases granted under them.
#[derive(Debug)]
pub(super) struct Sessions {
    inner: Mutex<Inner>,
    max: usize,
    /// How many are open or still releasing, for whoever waits for them
    /// all to end.
    count: tokio::sync::watch::Sender<usize>,
    /// The chaos checker's unsafe control (`--chaos-unsafe-release-on-own-close`):
    /// a session the elector ends at shutdown releases its leases as if the
    /// holder had closed it.
    unsafe_release_on_own_close: bool,
}

impl Sessions {
    pub(super) fn new(max: usize) -> Self {
        Sessions {
            inner: Mutex::new(Inner::default()),
            max: max.max(1),
            count: tokio::sync::watch::channel(0).0,
            unsafe_release_on_own_close: false,
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        mpsync_core::lock(&self.inner)
    }

    /// The most sessions open at once (`--max-sessions`).
    pub(super) fn max(&self) -> usize {
        self.max
    }

    /// Opens session `id`; false when `max` are open already.
    fn open(&self, id: &str) -> bool {
        let mut inner = self.inner();
        if inner.open.len() >= self.max {
            return false;
        }
        inner.open.insert(id.to_owned(), Open { prune_at: PRUNE_AT_LEAST, ..Open::default() });
        self.count.send_modify(|n| *n += 1);
        true
    }

    fn is_open(&self, id: &str) -> bool {
        self.inner().open.contains_key(id)
    }

    /// Records a lease granted under session `id`; false if the session
    /// is not open (any more).
    fn record(&self, id: &str, key: &Slot, granted: Granted, now: Duration) -> bool {
        let mut guard = self.inner();
        let Inner { open, leases, .. } = &mut *guard;
        let Some(session) = open.get_mut(id) else { return false };
        session.names.insert(key.clone());
        if session.names.len() >= session.prune_at {
            session.names.retain(|name| {
                let ours = leases.get(name).filter(|(owner, _)| owner == id);
                let keep = name == key || ours.is_some_and(|(_, g)| g.expires > now);
                if !keep && ours.is_some() {
                    leases.remove(name);
                }
                keep
            });
            session.prune_at = (session.names.len() * 2).max(PRUNE_AT_LEAST);
        }
        if let Some((before, _)) = leases.insert(key.clone(), (id.to_owned(), granted))
            && before != id
            && let Some(other) = open.get_mut(&before)
        {
            other.names.remove(key);
        }
        true
    }

    /// A claim that names no session: whatever lease of `key` a session
    /// held is no longer that session's to release.
    fn detach(&self, key: &Slot) {
        let mut guard = self.inner();
        let Inner { open, leases, .. } = &mut *guard;
        if let Some((id, _)) = leases.remove(key)
            && let Some(session) = open.get_mut(&id)
        {
            session.names.remove(key);
        }
    }

    /// A lease released (a `DELETE`): nothing left to release for it.
    fn released(&self, key: &Slot, token: u64) {
        let mut guard = self.inner();
        let Inner { open, leases, .. } = &mut *guard;
        if leases.get(key).is_some_and(|(_, g)| g.token == token)
            && let Some((id, _)) = leases.remove(key)
            && let Some(session) = open.get_mut(&id)
        {
            session.names.remove(key);
        }
    }

    /// A place in line taken or kept under session `id` (`None`: under no
    /// session), by `holder` with `lease_key`; `holder` `None`: the place
    /// ended (handed over, or given up). Either way a session it was under
    /// before has it no more.
    fn waiting(&self, id: Option<&str>, key: &Key, ticket: u64, holder: Option<(&str, Option<&LeaseKey>)>) {
        let mut guard = self.inner();
        let Inner { open, places, .. } = &mut *guard;
        let at = (key.clone(), ticket);
        if let Some(before) = places.remove(&at)
            && let Some(session) = open.get_mut(&before)
        {
            session.waiting.remove(&at);
        }
        if let (Some(id), Some((holder, lease_key))) = (id, holder)
            && let Some(session) = open.get_mut(id)
        {
            session.waiting.insert(at.clone(), (holder.to_owned(), lease_key.cloned()));
            places.insert(at, id.to_owned());
        }
    }

    /// Ends session `id`: the leases granted under it, by name, and the
    /// places in line taken under it, or `None` if it was not open. Call
    /// [`Sessions::ended`] once done with them.
    fn close(&self, id: &str) -> Option<Left> {
        let mut guard = self.inner();
        let Inner { open, leases, places } = &mut *guard;
        let session = open.remove(id)?;
        for place in session.waiting.keys() {
            places.remove(place);
        }
        let granted =
            session.names.into_iter().filter_map(|name| leases.remove(&name).map(|(_, g)| (name.0, g))).collect();
        Some((granted, session.waiting.into_iter().collect()))
    }

    /// A closed session is done releasing.
    fn ended(&self) {
        self.count.send_modify(|n| *n = n.saturating_sub(1));
    }

    fn len(&self) -> usize {
        self.inner().open.len()
    }
}

/// A fresh session id: 128 random bits from the OS, in hex.
fn new_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; SESSION_ID_LEN / 2];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The holder's end closed (EOF or an error on a read): the holder can
    /// no longer act. Every lease under the session is released.
    ByHolder,
    /// The elector ended it (shutdown) or cannot tell: nothing is released;
    /// the leases run out at their TTL.
    ByElector,
}

impl Service {
    /// Caps the sessions open at once; one more is refused with
    /// [`ServiceError::TooManySessions`].
    pub fn with_max_sessions(mut self, max: usize) -> Self {
        self.sessions.max = max.max(1);
        self
    }

    /// UNSAFE, for the chaos checker's control only: sessions the elector
    /// ends at shutdown release their leases, as if each holder had closed
    /// its end, although the holder may still be acting under them. The
    /// checker must find the overlaps this causes (`chaos/README.md`).
    pub fn with_unsafe_release_on_own_close(mut self) -> Self {
        self.sessions.unsafe_release_on_own_close = true;
        self
    }

    /// How a session the elector ends at shutdown counts: as its own end
    /// ([`Ended::ByElector`], nothing released), unless the unsafe control
    /// is on.
    pub(crate) fn ended_at_shutdown(&self) -> Ended {
        if self.sessions.unsafe_release_on_own_close { Ended::ByHolder } else { Ended::ByElector }
    }

    /// Opens a session: its id, or [`ServiceError::TooManySessions`].
    pub fn open_session(&self) -> Result<String, ServiceError> {
        let id = new_id().map_err(|e| ServiceError::NoRandomness(e.to_string()))?;
        if !self.sessions.open(&id) {
            self.metrics.refuse(Refusal::Session);
            if self.quiet.speak() {
                tracing::warn!(max = self.sessions.max, "refusing sessions past --max-sessions");
            }
            return Err(ServiceError::TooManySessions(self.sessions.max));
        }
        self.metrics.set_sessions(self.sessions.len());
        Ok(id)
    }

    /// Ends session `id`. [`Ended::ByHolder`] releases every lease granted
    /// under it at once, each exactly as a `DELETE` with its holder, token
    /// and key would (a lease renewed since under another key, released or
    /// taken over is refused, harmlessly); [`Ended::ByElector`] releases
    /// nothing. Returns how many leases were released.
    pub async fn end_session(&self, id: &str, how: Ended) -> usize {
        let Some((leases, waiting)) = self.sessions.close(id) else { return 0 };
        self.metrics.set_sessions(self.sessions.len());
        let released = if how == Ended::ByHolder {
            // Places first: a lease released while its session's waiters
            // still stand in line would be handed to one of them.
            self.leave_all(waiting).await;
            self.release_all(leases).await
        } else {
            0
        };
        self.sessions.ended();
        released
    }

    /// Gives up `places` in line, each as a `DELETE` of its waiter would
    /// (a lease handed over to one of them meanwhile is released with it).
    async fn leave_all(&self, places: Vec<Place>) {
        let leaves = places.into_iter().map(|((key, ticket), (holder, lease_key))| async move {
            let request = ReleaseRequest { holder, token: 0, ticket: Some(ticket), key: lease_key };
            if let Err(e) = self.leave(&key, &request).await {
                tracing::warn!(error = %e, name = %key.name, "leaving the line for a closed session");
            }
        });
        futures::future::join_all(leaves).await;
    }

    /// Records a place in line as `session`'s (none: no session's), or,
    /// `holder` `None`, as ended.
    pub(super) fn record_waiting(
        &self,
        session: Option<&str>,
        key: &Key,
        ticket: u64,
        holder: Option<(&str, Option<&LeaseKey>)>,
    ) {
        self.sessions.waiting(session, key, ticket, holder);
    }

    /// Releases `leases`, each as a `DELETE` of its holder would; how many
    /// were.
    async fn release_all(&self, leases: Vec<(Key, Granted)>) -> usize {
        let releases = leases.into_iter().map(|(key, granted)| async move {
            let request =
                ReleaseRequest { holder: granted.holder, token: granted.token, ticket: None, key: granted.key };
            match self.release_as(&key, &request, true).await {
                Ok(ReleaseResult::Released) => {
                    self.metrics.count(key.kind, Event::SessionRelease);
                    true
                }
                Ok(_) => false,
                // Not sure it was released: it runs out at its TTL.
                Err(e) => {
                    tracing::warn!(error = %e, name = %key.name, "releasing a lease of a closed session");
                    false
                }
            }
        });
        futures::future::join_all(releases).await.into_iter().filter(|released| *released).count()
    }

    /// Resolves once no session is open: after [`Service::begin_shutdown`]
    /// each ends itself promptly, releasing nothing.
    pub async fn sessions_ended(&self) {
        let mut count = self.sessions.count.subscribe();
        let _ = count.wait_for(|open| *open == 0).await;
    }

    /// Refuses a claim naming a session that is not open, before any write.
    pub(super) async fn check_session(
        &self,
        key: &Key,
        session: Option<&str>,
    ) -> Result<Option<ConflictView>, ServiceError> {
        match session {
            Some(id) if !self.sessions.is_open(id) => Ok(Some(self.session_gone(key).await?)),
            _ => Ok(None),
        }
    }

    /// Records a lease just granted (at `now`, for `ttl`) under `session`.
    /// A claim without a session detaches the name from any session: a
    /// lease renewed by a request that names no session is no longer one
    /// a session's close may release (it may come from another process).
    /// If the session ended while the claim was in flight, the claim is
    /// refused: a fresh acquisition (`fresh`) nobody has heard of is undone
    /// first (a release like the session's own would have been), while a
    /// renewal is left to run out at its TTL, since its holder may still
    /// believe in it (the elector may have ended the session itself).
    pub(super) async fn record_grant(
        &self,
        key: &Key,
        request: &mpsync_core::wire::AcquireRequest,
        fresh: bool,
        token: u64,
        expires: Duration,
    ) -> Result<Option<ConflictView>, ServiceError> {
        let slot = (key.clone(), request.shared.then_some(token));
        let Some(id) = request.session.as_deref() else {
            self.sessions.detach(&slot);
            return Ok(None);
        };
        let granted = Granted { holder: request.holder.clone(), token, key: request.key.clone(), expires };
        if self.sessions.record(id, &slot, granted, self.now()) {
            return Ok(None);
        }
        if fresh {
            let undo = ReleaseRequest { holder: request.holder.clone(), token, ticket: None, key: request.key.clone() };
            self.release(key, &undo).await?;
        }
        Ok(Some(self.session_gone(key).await?))
    }

    /// A lease released by its holder: its session has nothing left to
    /// release for it.
    pub(super) fn forget_released(&self, key: &Key, token: u64) {
        self.sessions.released(&(key.clone(), None), token);
        self.sessions.released(&(key.clone(), Some(token)), token);
    }

    async fn session_gone(&self, key: &Key) -> Result<ConflictView, ServiceError> {
        self.metrics.count(key.kind, Event::Conflict);
        let (holder, expires_in_ms, version) = match self.read(key).await? {
            View::Held(lease) => (Some(lease.holder), lease.expires_in_ms, lease.version),
            other => (None, 0, other.version()),
        };
        Ok(ConflictView { holder, expires_in_ms, version, reason: ConflictReason::SessionGone })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpsync_core::wire::Kind;

    fn key(name: &str) -> Key {
        Key { kind: Kind::Lock, name: name.into() }
    }

    /// The exclusive lease of `name`.
    fn slot(name: &str) -> Slot {
        (key(name), None)
    }

    fn granted(token: u64, expires: Duration) -> Granted {
        Granted { holder: "h".into(), token, key: None, expires }
    }

    #[test]
    fn a_session_holds_what_was_granted_under_it_until_released_or_replaced() {
        let sessions = Sessions::new(2);
        assert!(sessions.open("a") && sessions.open("b"));
        assert!(!sessions.open("c"), "past the cap");
        let s = Duration::from_secs(1);
        assert!(sessions.record("a", &slot("x"), granted(1, 10 * s), s));
        assert!(sessions.record("a", &slot("y"), granted(2, 10 * s), s));
        assert!(!sessions.record("c", &slot("z"), granted(3, 10 * s), s), "no such session");
        sessions.released(&slot("y"), 2);
        // x changed hands to a lease under b: a's close leaves it alone.
        assert!(sessions.record("b", &slot("x"), granted(4, 10 * s), s));
        // Shared holds of one lock are each the session's own.
        assert!(sessions.record("b", &(key("sem"), Some(5)), granted(5, 10 * s), s));
        assert!(sessions.record("b", &(key("sem"), Some(6)), granted(6, 10 * s), s));
        sessions.waiting(Some("b"), &key("w"), 7, Some(("b1", None)));
        sessions.waiting(Some("b"), &key("w"), 8, Some(("b2", None)));
        sessions.waiting(Some("b"), &key("w"), 9, Some(("b3", None)));
        sessions.waiting(None, &key("w"), 7, None);
        // A place kept under another session (or none) is not b's any more.
        sessions.waiting(Some("a"), &key("w"), 9, Some(("b3", None)));
        assert!(sessions.close("a").unwrap().0.is_empty());
        let (leases, places) = sessions.close("b").unwrap();
        let mut tokens: Vec<_> = leases.into_iter().map(|(_, g)| g.token).collect();
        tokens.sort_unstable();
        assert_eq!(tokens, [4, 5, 6]);
        assert_eq!(places, [((key("w"), 8), ("b2".to_owned(), None))], "only the place still taken");
        assert_eq!(sessions.inner().leases.len(), 0);
        assert!(!sessions.is_open("b"));
    }

    #[test]
    fn a_long_session_keeps_only_leases_that_may_be_live() {
        let sessions = Sessions::new(1);
        assert!(sessions.open("a"));
        let s = Duration::from_secs(1);
        for i in 0..10_000u64 {
            // Each lease runs out a second after it was granted.
            let now = Duration::from_secs(i);
            assert!(sessions.record("a", &slot(&format!("n{i}")), granted(i + 1, now + s), now));
        }
        let inner = sessions.inner();
        let (names, leases) = (inner.open["a"].names.len(), inner.leases.len());
        assert!(names <= 2 * PRUNE_AT_LEAST && leases == names, "{names} names and {leases} leases kept");
    }
}
