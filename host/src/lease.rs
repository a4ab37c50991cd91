//! The native async client: one [`Lease`] per lock or election handle.
//!
//! It drives `mpsync_core`'s [`LeaseClient`] against the elector's versioned
//! API and renews in a background task, so a lease survives an app that
//! computes for a long time without calling in. Every change (acquired,
//! lost, released, another leader) bumps a generation counter that
//! pollables and callers can wait on.
//!
//! Each HTTP request is bounded by a timeout shorter than the renewal
//! interval, so a hung elector or network turns into a failed renewal and,
//! at the local deadline, a lost lease — never a stuck belief.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use elector::client::{Claimed, Client, Read};
use mpsync_core::lease::{Held, Output, Request, Response};
use mpsync_core::wire::{AcquireRequest, ConflictReason, ConflictView, Kind, LeaseView};
use mpsync_core::{LeaseClient, LeaseConfig};
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The default lease duration.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// The longest a single long-poll waits before asking again.
const POLL_SLICE: Duration = Duration::from_secs(30);

/// What can go wrong; mirrors the WIT `error` variant.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SyncError {
    /// Someone else holds the lock.
    #[error("held by {0}")]
    HeldBy(String),
    /// The wait ran out.
    #[error("timed out")]
    Timeout,
    /// This client does not hold the lease (any more).
    #[error("not held")]
    NotHeld,
    /// The name is not a valid Kubernetes object name.
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// An option is out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The elector could not be reached or failed.
    #[error("elector unavailable: {0}")]
    Unavailable(String),
}

impl From<elector::client::ClientError> for SyncError {
    fn from(e: elector::client::ClientError) -> Self {
        SyncError::Unavailable(e.to_string())
    }
}

/// How to hold a lease.
#[derive(Debug, Clone)]
pub struct Options {
    /// The lease duration.
    pub ttl: Duration,
    /// The holder (candidate) id.
    pub holder: String,
    /// Elections: the address to advertise.
    pub address: Option<String>,
}

/// A lease this client holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    /// The fencing token.
    pub token: u64,
    /// When it is lost unless renewed.
    pub valid_until: Instant,
}

/// A leader as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// Its candidate id.
    pub id: String,
    /// Its advertised address.
    pub address: Option<String>,
    /// Its fencing token.
    pub token: u64,
}

impl From<&LeaseView> for Leader {
    fn from(l: &LeaseView) -> Self {
        Leader { id: l.holder.clone(), address: l.address.clone(), token: l.token }
    }
}

struct Shared {
    kind: Kind,
    name: String,
    options: Options,
    client: Client,
    origin: Instant,
    machine: Mutex<LeaseClient>,
    generation: watch::Sender<u64>,
    /// The local deadline of the lease held, after every answer.
    deadline: watch::Sender<Option<Instant>>,
    leader: Mutex<Option<Leader>>,
    last_error: Mutex<Option<String>>,
}

/// One client's handle on a lock or an election candidacy.
pub struct Lease {
    shared: Arc<Shared>,
    renewer: Mutex<Option<JoinHandle<()>>>,
    watcher: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn bump(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// One HTTP request may take at most this long: a fifth of the TTL.
    /// Renewal is due at a third and the lease is usable for four fifths,
    /// so a renewal that times out still leaves room for a retry.
    fn request_timeout(&self) -> Duration {
        (self.options.ttl / 5).max(Duration::from_millis(5))
    }

    /// Sends what the state machine asks for and feeds the answers back;
    /// returns the events and the last refusal seen.
    async fn drive(&self) -> (Vec<Output>, Option<ConflictView>) {
        let mut events = Vec::new();
        let mut refusal = None;
        loop {
            let next = lock(&self.machine).poll_output();
            let Some(output) = next else { break };
            let Output::Send { id, request } = output else {
                match output {
                    Output::Acquired { .. } | Output::Lost { .. } => self.bump(),
                    _ => {}
                }
                events.push(output);
                continue;
            };
            let token = match request {
                Request::Acquire => None,
                Request::Renew { token } => Some(token),
                Request::Release { token } => {
                    let release = self.client.release(self.kind, &self.name, &self.options.holder, token);
                    let failure = match tokio::time::timeout(self.request_timeout(), release).await {
                        Ok(Ok(_)) => None,
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(_) => Some(format!("no answer within {:?}", self.request_timeout())),
                    };
                    if let Some(failure) = failure {
                        tracing::warn!(name = %self.name, "release failed ({failure}); the lease will run out on its own");
                    }
                    continue;
                }
            };
            let body =
                AcquireRequest::new(&self.options.holder, self.options.ttl, token, self.options.address.as_deref());
            let answer =
                tokio::time::timeout(self.request_timeout(), self.client.claim(self.kind, &self.name, &body)).await;
            let response = match answer {
                Ok(Ok(Claimed::Granted(view))) => {
                    if self.kind == Kind::Election {
                        *lock(&self.leader) = Some(Leader::from(&view));
                    }
                    Response::Granted { token: view.token, version: view.version }
                }
                Ok(Ok(Claimed::Refused(conflict))) => {
                    refusal = Some(conflict);
                    Response::Refused
                }
                Ok(Err(e)) => {
                    self.last_error(e.to_string());
                    Response::Failed
                }
                Err(_) => {
                    self.last_error(format!(
                        "elector at {} did not answer within {:?}",
                        self.client.base(),
                        self.request_timeout()
                    ));
                    Response::Failed
                }
            };
            let now = self.now();
            let deadline = {
                let mut machine = lock(&self.machine);
                machine.handle_response(id, response, now);
                machine.lease(now).map(|h| self.origin + h.valid_until)
            };
            self.deadline.send_if_modified(|d| std::mem::replace(d, deadline) != deadline);
        }
        (events, refusal)
    }

    fn last_error(&self, message: String) {
        tracing::debug!(name = %self.name, "{message}");
        *lock(&self.last_error) = Some(message);
    }

    /// `Unavailable`, with the last transport error (which names the URL).
    fn unavailable(&self) -> SyncError {
        let reason = lock(&self.last_error).clone();
        SyncError::Unavailable(reason.unwrap_or_else(|| format!("elector at {} did not answer", self.client.base())))
    }

    fn held(&self) -> Option<Held> {
        lock(&self.machine).lease(self.now())
    }
}

impl Lease {
    /// A handle on the lock or election `name`. Checks the name and the
    /// options; sends nothing.
    pub fn new(client: Client, kind: Kind, name: &str, options: Options) -> Result<Lease, SyncError> {
        mpsync_core::validate_name(name).map_err(|e| SyncError::InvalidName(format!("{name:?}: {e}")))?;
        let request = AcquireRequest::new(&options.holder, options.ttl, None, options.address.as_deref());
        request.validate(kind).map_err(|e| SyncError::InvalidOption(format!("{}: {}", e.field, e.message)))?;
        let machine =
            LeaseClient::new(LeaseConfig::new(options.ttl)).map_err(|e| SyncError::InvalidOption(e.to_string()))?;
        let shared = Arc::new(Shared {
            kind,
            name: name.to_owned(),
            options,
            client,
            origin: Instant::now(),
            machine: Mutex::new(machine),
            generation: watch::channel(0).0,
            deadline: watch::channel(None).0,
            leader: Mutex::new(None),
            last_error: Mutex::new(None),
        });
        Ok(Lease { shared, renewer: Mutex::new(None), watcher: Mutex::new(None) })
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The holder id.
    pub fn holder(&self) -> &str {
        &self.shared.options.holder
    }

    /// The lease duration.
    pub fn ttl(&self) -> Duration {
        self.shared.options.ttl
    }

    /// The lease, while held and valid (checked against the local deadline
    /// now, whether or not the renewal task has run).
    pub fn held(&self) -> Option<Granted> {
        let now = self.shared.now();
        lock(&self.shared.machine)
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

    /// One attempt to acquire.
    pub async fn try_acquire(&self) -> Result<Granted, SyncError> {
        if let Some(granted) = self.held() {
            return Ok(granted);
        }
        let now = self.shared.now();
        // An acquisition still in flight from a cancelled call: abandon it
        // (a late grant is handed back by the state machine).
        let _ = lock(&self.shared.machine).release();
        lock(&self.shared.machine).acquire(now).map_err(|e| SyncError::InvalidOption(e.to_string()))?;
        let (events, refusal) = self.shared.drive().await;
        if events.iter().any(|e| matches!(e, Output::Acquired { .. })) {
            self.start_renewer();
            return self.held().ok_or(SyncError::NotHeld);
        }
        match refusal {
            Some(c) => Err(match (c.holder, c.reason) {
                (Some(holder), _) => SyncError::HeldBy(holder),
                (None, ConflictReason::Held) => SyncError::HeldBy(String::new()),
                (None, _) => SyncError::NotHeld,
            }),
            None => Err(self.shared.unavailable()),
        }
    }

    /// Acquires, waiting up to `timeout` (long-polling the elector, so a
    /// release is learned at once and an expiry as it happens). An elector
    /// that fails is retried for up to one TTL (a restart, a blip), then
    /// reported as `Unavailable`.
    pub async fn acquire(&self, timeout: Duration) -> Result<Granted, SyncError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut failing_since = None;
        loop {
            match self.try_acquire().await {
                Ok(granted) => return Ok(granted),
                Err(SyncError::HeldBy(_)) => failing_since = None,
                Err(e @ (SyncError::InvalidName(_) | SyncError::InvalidOption(_))) => return Err(e),
                Err(e) => {
                    let now = tokio::time::Instant::now();
                    let since = *failing_since.get_or_insert(now);
                    let retry = now + self.ttl() / 10;
                    if retry >= deadline || now - since >= self.ttl() {
                        return Err(e);
                    }
                    tokio::time::sleep_until(retry).await;
                    continue;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SyncError::Timeout);
            }
            match tokio::time::timeout_at(deadline, self.wait_until_free()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(SyncError::Timeout),
            }
        }
    }

    /// Long-polls until the record is free.
    async fn wait_until_free(&self) -> Result<(), SyncError> {
        let s = &self.shared;
        let mut version = match s.client.read(s.kind, &s.name, None).await? {
            Read::Held(view) => view.version,
            Read::Free { .. } => return Ok(()),
        };
        loop {
            match s.client.read(s.kind, &s.name, Some((version, POLL_SLICE))).await? {
                Read::Held(view) => {
                    self.note_leader(Some(Leader::from(&view)));
                    version = view.version;
                }
                Read::Free { .. } => {
                    self.note_leader(None);
                    return Ok(());
                }
            }
        }
    }

    fn note_leader(&self, leader: Option<Leader>) {
        if self.shared.kind != Kind::Election {
            return;
        }
        let mut current = lock(&self.shared.leader);
        if *current != leader {
            *current = leader;
            drop(current);
            self.shared.bump();
        }
    }

    /// Releases at once. `NotHeld` if not held.
    pub async fn release(&self) -> Result<(), SyncError> {
        let released = lock(&self.shared.machine).release();
        if let Some(handle) = lock(&self.renewer).take() {
            handle.abort();
        }
        if released.is_none() {
            return Err(SyncError::NotHeld);
        }
        self.shared.bump();
        self.shared.drive().await;
        if self.shared.kind == Kind::Election {
            let mut leader = lock(&self.shared.leader);
            if leader.as_ref().is_some_and(|l| l.id == self.shared.options.holder) {
                *leader = None;
            }
        }
        Ok(())
    }

    /// Elections: the leader as last seen (this candidate while it leads).
    pub fn leader(&self) -> Option<Leader> {
        let mine = self.held().is_some();
        let leader = lock(&self.shared.leader).clone();
        match leader {
            Some(l) if l.id == self.shared.options.holder && !mine => None,
            other => other,
        }
    }

    /// Elections: starts a background watch of the leader (long-poll), so
    /// [`leader`](Self::leader) and [`changes`](Self::changes) follow other
    /// candidates too. Idempotent.
    pub fn watch_leader(self: &Arc<Self>) {
        let mut watcher = lock(&self.watcher);
        if watcher.is_some() || self.shared.kind != Kind::Election {
            return;
        }
        let me = Arc::downgrade(self);
        let (client, kind, name) = (self.shared.client.clone(), self.shared.kind, self.shared.name.clone());
        *watcher = Some(tokio::spawn(async move {
            let mut version = 0;
            loop {
                let read = client.read(kind, &name, Some((version, POLL_SLICE))).await;
                let Some(me) = me.upgrade() else { return };
                match read {
                    Ok(Read::Held(view)) => {
                        version = view.version;
                        me.note_leader(Some(Leader::from(&view)));
                    }
                    Ok(Read::Free { version: v }) => {
                        version = v;
                        me.note_leader(None);
                    }
                    Err(e) => {
                        tracing::debug!("leader watch: {e}");
                        drop(me);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }));
    }

    fn start_renewer(&self) {
        let shared = self.shared.clone();
        let handle = tokio::spawn(async move {
            loop {
                let wake = lock(&shared.machine).poll_timeout();
                let Some(wake) = wake else { return };
                tokio::time::sleep_until((shared.origin + wake).into()).await;
                let now = shared.now();
                lock(&shared.machine).handle_timeout(now);
                let (events, _) = shared.drive().await;
                if let Some(Output::Lost { token }) = events.iter().find(|e| matches!(e, Output::Lost { .. })) {
                    tracing::warn!(name = %shared.name, token, "lease lost");
                    return;
                }
                if shared.held().is_none() && lock(&shared.machine).poll_timeout().is_none() {
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
