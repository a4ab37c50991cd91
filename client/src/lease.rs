//! The native async client: one [`Lease`] per lock or election handle.
//!
//! It drives `mpsync_core`'s [`Session`] (the lease state machine and the
//! protocol around it) against the elector and renews in a background task,
//! so a lease survives an app that computes for a long time without calling
//! in. Every change (acquired, lost, released, another leader) bumps a
//! generation counter that pollables and callers can wait on.
//!
//! Claims go under the client's session with the elector when it has one
//! ([`Client::session`]): the elector then releases the lease the moment
//! this process exits, and the lease is lost here the moment the session
//! ends, whoever ended it.
//!
//! Each request is bounded by a timeout shorter than the renewal interval,
//! so a hung elector or network turns into a failed renewal and, at the
//! local deadline, a lost lease — never a stuck belief.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mpsync_core::client::{
    Acquire, Action, Backoff, ENTROPY_LEN, Error, Leader, Options, POLL_SLICE, Read, Session, Step, decode_read,
    retry_after,
};
use mpsync_core::lease::{Held, Output, Request};
use mpsync_core::wire::{Kind, TransferView};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::http::Client;
use crate::session::ElectorSession;

/// A lease this client holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    /// The fencing token.
    pub token: u64,
    /// When it is lost unless renewed.
    pub valid_until: Instant,
}

struct Shared {
    client: Client,
    origin: Instant,
    session: Mutex<Session>,
    generation: watch::Sender<u64>,
    /// The local deadline of the lease held, after every answer.
    deadline: watch::Sender<Option<Instant>>,
    /// The session with the elector the lease held was granted under: its
    /// end is the loss of the lease.
    tether: Mutex<Option<Arc<ElectorSession>>>,
}

/// Gives up the place in line an acquire holds when it is dropped before
/// it ends (a timeout around it, a task aborted): a place nobody refreshes
/// would hold up the line until it runs out.
struct LeaveOnDrop(Arc<Shared>);

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        let leave = lock(&self.0.session).leave_line();
        if let (Some(leave), Ok(runtime)) = (leave, tokio::runtime::Handle::try_current()) {
            let client = self.0.client.clone();
            runtime.spawn(async move {
                if let Err(e) = client.call(&leave).await {
                    tracing::warn!(error = %e, "leaving a lock's line after an abandoned acquire");
                }
            });
        }
    }
}

/// One client's handle on a lock or an election candidacy.
pub struct Lease {
    shared: Arc<Shared>,
    kind: Kind,
    name: String,
    options: Options,
    renewer: Mutex<Option<JoinHandle<()>>>,
    watcher: Mutex<Option<JoinHandle<()>>>,
}

use mpsync_core::lock;

impl Shared {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn bump(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Sends what the session asks for and feeds the answers back; returns
    /// the events.
    async fn drive(&self) -> Vec<Output> {
        let mut events = Vec::new();
        loop {
            let step = lock(&self.session).next_step();
            let (id, request, http) = match step {
                None => break,
                Some(Step::Event(event)) => {
                    if let Output::Acquired { .. } | Output::Lost { .. } = event {
                        self.bump();
                    }
                    events.push(event);
                    continue;
                }
                Some(Step::Send { id, request, http }) => (id, request, http),
            };
            let reply = self.client.call(&http).await;
            let answer = reply.as_ref().map(|r| (r.status.as_u16(), &r.body[..])).map_err(ToString::to_string);
            let now = self.now();
            let mut session = lock(&self.session);
            if let Some(problem) = session.answer(id, request, answer, now) {
                let name = session.name();
                if let Request::Release { .. } = request {
                    tracing::warn!(name, "release failed ({problem}); the lease will run out on its own");
                } else {
                    tracing::debug!(name, "{problem}");
                }
            }
            let deadline = session.lease(now).map(|h| self.origin + h.valid_until);
            // A transfer asked of this leader (or withdrawn): the app that
            // decides itself learns it from the generation.
            let news = session.transfer_changed();
            drop(session);
            if news {
                self.bump();
            }
            self.deadline.send_if_modified(|d| std::mem::replace(d, deadline) != deadline);
        }
        events
    }

    /// If the session the lease was granted under has ended, the lease is
    /// lost now.
    async fn notice_session_end(&self) {
        let ended = lock(&self.tether).as_ref().filter(|t| !t.is_open()).map(|t| t.id().to_owned());
        if let Some(id) = ended {
            *lock(&self.tether) = None;
            if lock(&self.session).session_ended(&id) {
                tracing::warn!(name = lock(&self.session).name(), "the session with the elector ended: lease lost");
            }
            self.drive().await;
        }
    }

    /// Takes in a read; bumps the generation when the leader changed.
    fn observe(&self, read: &Read) {
        if lock(&self.session).observe(read) {
            self.bump();
        }
    }
}

impl Lease {
    /// A handle on the lock or election `name`. Checks the name and the
    /// options; sends nothing.
    pub fn new(client: Client, kind: Kind, name: &str, options: Options) -> Result<Lease, Error> {
        let mut entropy = [0; ENTROPY_LEN];
        getrandom::fill(&mut entropy)
            .map_err(|e| Error::Unavailable(format!("no random bytes for the holder's key: {e}")))?;
        let session = Session::new(client.base(), kind, name, options.clone(), &entropy)?;
        let shared = Arc::new(Shared {
            client,
            origin: Instant::now(),
            session: Mutex::new(session),
            generation: watch::channel(0).0,
            deadline: watch::channel(None).0,
            tether: Mutex::new(None),
        });
        Ok(Lease { shared, kind, name: name.to_owned(), options, renewer: Mutex::new(None), watcher: Mutex::new(None) })
    }

    /// Locks: holds the lock shared, as one of any number of readers
    /// (`permits` `None`) or one of `permits` holders of a counting
    /// semaphore, instead of exclusively. Call it before acquiring.
    pub fn hold_shared(self, permits: Option<u32>) -> Result<Lease, Error> {
        lock(&self.shared.session).hold_shared(permits)?;
        Ok(self)
    }

    /// Semaphores: which permit the lease held is (0-based).
    pub fn permit(&self) -> Option<u32> {
        lock(&self.shared.session).permit()
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The holder id.
    pub fn holder(&self) -> &str {
        &self.options.holder
    }

    /// The lease duration.
    pub fn ttl(&self) -> Duration {
        self.options.ttl
    }

    /// The lease, while held and valid (checked against the local deadline
    /// now, whether or not the renewal task has run).
    /// A lease granted under a session that has ended is not held, even
    /// before the renewal task has seen the end.
    pub fn held(&self) -> Option<Granted> {
        if lock(&self.shared.tether).as_ref().is_some_and(|t| !t.is_open()) {
            return None;
        }
        let now = self.shared.now();
        lock(&self.shared.session)
            .lease(now)
            .map(|h| Granted { token: h.token, valid_until: self.shared.origin + h.valid_until })
    }

    /// A receiver that changes on every acquisition, loss, release and
    /// leader change.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.generation.subscribe()
    }

    /// A receiver of the local deadline of the lease held (`None` when
    /// none is), which changes with every renewal, loss and release.
    pub fn deadlines(&self) -> watch::Receiver<Option<Instant>> {
        self.shared.deadline.subscribe()
    }

    fn granted(&self, held: Held) -> Granted {
        Granted { token: held.token, valid_until: self.shared.origin + held.valid_until }
    }

    /// One attempt to acquire.
    pub async fn try_acquire(&self) -> Result<Granted, Error> {
        // One attempt, never in line, whatever an abandoned acquire left.
        lock(&self.shared.session).wait_in_line(None);
        self.attempt().await.map(|held| self.granted(held))
    }

    /// The session with the elector the lease held was granted under,
    /// while it is open (`None` without one).
    pub fn elector_session(&self) -> Option<Arc<ElectorSession>> {
        lock(&self.shared.tether).clone().filter(|t| t.is_open())
    }

    async fn attempt(&self) -> Result<Held, Error> {
        self.shared.notice_session_end().await;
        if let Some(held) = lock(&self.shared.session).lease(self.shared.now()) {
            return Ok(held);
        }
        let timeout = lock(&self.shared.session).request_timeout();
        let tether = self.shared.client.session(timeout).await;
        {
            let mut session = lock(&self.shared.session);
            session.claim_under(tether.as_ref().map(|t| t.id()));
            if let Some(held) = session.start_acquire(self.shared.now())? {
                return Ok(held);
            }
        }
        self.shared.drive().await;
        let now = self.shared.now();
        let acquisition = lock(&self.shared.session).acquisition(now);
        if let Some(t) = &tether
            && lock(&self.shared.session).refused_for_session()
        {
            self.shared.client.forget_session(t.id()).await;
        }
        let held = acquisition?;
        *lock(&self.shared.tether) = tether;
        self.start_renewer();
        Ok(held)
    }

    /// Acquires, waiting up to `timeout` (long-polling the elector, so a
    /// release is learned at once and an expiry as it happens), driven by
    /// [`Acquire`]: an elector that fails is retried for up to one TTL,
    /// then reported `Unavailable`; a refused long-poll is followed by a
    /// jittered backoff that honours `retry-after`.
    pub async fn acquire(&self, timeout: Duration) -> Result<Granted, Error> {
        let mut acquire = Acquire::new(self.shared.now(), timeout, self.ttl());
        let _leave = LeaveOnDrop(self.shared.clone());
        loop {
            let action = acquire.next(&mut lock(&self.shared.session), self.shared.now(), None);
            match action {
                Action::Attempt => {
                    let result = self.attempt().await;
                    acquire.attempted(result, &mut lock(&self.shared.session), self.shared.now());
                }
                Action::Wait(request) => {
                    // Wakes when the record changes (released, taken over)
                    // or the lease it shows runs out.
                    let reply = self.shared.client.call(&request).await;
                    let retry = reply
                        .as_ref()
                        .ok()
                        .and_then(|r| r.headers.get("retry-after"))
                        .and_then(|v| retry_after(v.as_bytes()));
                    let answer = reply.as_ref().map(|r| (r.status.as_u16(), &r.body[..])).map_err(ToString::to_string);
                    let now = self.shared.now();
                    if acquire.waited(answer, retry, &mut lock(&self.shared.session), now) {
                        self.shared.bump();
                    }
                }
                Action::SleepUntil(at) => tokio::time::sleep_until((self.shared.origin + at).into()).await,
                Action::Done(result) => {
                    // Gave up while in line: give the place up too, or it
                    // holds up the line until it runs out.
                    let leave = lock(&self.shared.session).leave_line();
                    if let Some(leave) = leave
                        && let Err(e) = self.shared.client.call(&leave).await
                    {
                        tracing::warn!(error = %e, name = %self.name, "leaving the lock's line");
                    }
                    return result.map(|held| self.granted(held));
                }
            }
        }
    }

    /// Releases at once: from now on this client does not hold the lease.
    /// `NotHeld` if it did not; `Unavailable` if the elector did not
    /// confirm the release (then the lease runs out there at its TTL).
    pub async fn release(&self) -> Result<(), Error> {
        let released = lock(&self.shared.session).release();
        if let Some(handle) = lock(&self.renewer).take() {
            handle.abort();
        }
        *lock(&self.shared.tether) = None;
        released?;
        self.shared.bump();
        self.shared.drive().await;
        lock(&self.shared.session).released()
    }

    /// Elections: whether this candidate steps down by itself when a
    /// transfer of the leadership is asked of it (`true`, the default: it
    /// releases as soon as a renewal answer carries the request, and the
    /// lease is lost), or leaves it to the app (`false`: it keeps leading;
    /// [`transfer_requested`](Self::transfer_requested) shows the request
    /// and [`changes`](Self::changes) moves when it comes or goes; call
    /// [`release`](Self::release) when ready). Turning it on with a request
    /// pending steps down now.
    pub async fn step_down_on_transfer(&self, at_once: bool) {
        lock(&self.shared.session).step_down_on_transfer(at_once);
        self.shared.drive().await;
    }

    /// Elections: the transfer this candidate stepped down for by itself
    /// (the default), until it stands again: why its leadership ended.
    pub fn stepped_down_for(&self) -> Option<TransferView> {
        lock(&self.shared.session).stepped_down_for().cloned()
    }

    /// Elections: the hand-over asked of this leader, while it leads and
    /// has not stepped down.
    pub fn transfer_requested(&self) -> Option<TransferView> {
        lock(&self.shared.session).transfer_requested()
    }

    /// Elections: the leader as last seen (this candidate while it leads).
    pub fn leader(&self) -> Option<Leader> {
        lock(&self.shared.session).leader(self.shared.now())
    }

    /// Elections: starts a background watch of the leader (long-poll), so
    /// [`leader`](Self::leader) and [`changes`](Self::changes) follow other
    /// candidates too. Idempotent.
    pub fn watch_leader(self: &Arc<Self>) {
        let mut watcher = lock(&self.watcher);
        if watcher.is_some() || self.kind != Kind::Election {
            return;
        }
        let shared = Arc::downgrade(&self.shared);
        let client = self.shared.client.clone();
        let ttl = self.ttl();
        *watcher = Some(tokio::spawn(async move {
            // First a plain read: the version the session last saw may be
            // the current one, and the leader behind it not known yet.
            let mut first = true;
            let mut backoff = Backoff::new(ttl);
            loop {
                let next = |s: Arc<Shared>| {
                    let session = lock(&s.session);
                    if first { session.read_request() } else { session.wait_request(POLL_SLICE) }
                };
                let Some(wait) = shared.upgrade().map(next) else { return };
                first = false;
                let reply = client.call(&wait).await;
                let Some(shared) = shared.upgrade() else { return };
                let retry = reply
                    .as_ref()
                    .ok()
                    .and_then(|r| r.headers.get("retry-after"))
                    .and_then(|v| retry_after(v.as_bytes()));
                match reply.map(|r| decode_read(r.status.as_u16(), &r.body)) {
                    Ok(Ok(read)) => {
                        backoff.reset();
                        shared.observe(&read);
                    }
                    failed => {
                        tracing::debug!("leader watch: {failed:?}");
                        let pause = backoff.next(lock(&shared.session).draw(), retry);
                        drop(shared);
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        }));
    }

    fn start_renewer(&self) {
        let shared = self.shared.clone();
        let name = self.name.clone();
        let handle = tokio::spawn(async move {
            loop {
                let wake = lock(&shared.session).next_due();
                let Some(wake) = wake else { return };
                let tether = lock(&shared.tether).clone();
                let session_end = async {
                    match &tether {
                        Some(t) => t.closed().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep_until((shared.origin + wake).into()) => {
                        let now = shared.now();
                        lock(&shared.session).tick(now);
                    }
                    // The session's end is the loss of the lease, at once.
                    () = session_end => shared.notice_session_end().await,
                }
                let events = shared.drive().await;
                if let Some(Output::Lost { token }) = events.iter().find(|e| matches!(e, Output::Lost { .. })) {
                    match lock(&shared.session).stepped_down_for() {
                        Some(t) => {
                            tracing::info!(name, token, to = t.to.as_deref(), "stepped down: a transfer was asked")
                        }
                        None => tracing::warn!(name, token, "lease lost"),
                    }
                    return;
                }
            }
        });
        if let Some(old) = lock(&self.renewer).replace(handle) {
            old.abort();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        for slot in [&self.renewer, &self.watcher] {
            if let Some(task) = lock(slot).take() {
                task.abort();
            }
        }
    }
}
