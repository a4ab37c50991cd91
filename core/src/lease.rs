//! The client lease state machine.
//!
//! One [`LeaseClient`] follows one lease of one holder: acquire, renew when
//! due, release, and report the lease lost before the store could hand it to
//! anyone else. It does no I/O and reads no clock: the caller feeds it
//! responses ([`LeaseClient::handle_response`]) and the passing of time
//! ([`LeaseClient::handle_timeout`]), and drains what it wants done
//! ([`LeaseClient::poll_output`]), in the style of quinn-proto.
//!
//! The lease is counted from the moment the granting request was **sent**:
//! it is valid until `sent + ttl × (1 − margin)`. The store counts it from
//! the moment it observed the write, which comes later, and lets anyone else
//! in only at `observed + ttl`; the margin absorbs clock-rate drift between
//! the two machines.
//!
//! **The drift bound.** If the holder's clock runs at rate `r` relative to
//! the store's (it counts `r` seconds while the store counts one), the
//! holder believes in a grant until real time `sent + ttl × (1 − margin) / r`,
//! and the store may have observed the write the moment it was sent. So the
//! promise holds, whatever the network delays, exactly when
//! `r ≥ 1 − margin`: with the default 20% margin, the holder's clock may run
//! up to 20% slow relative to the store's (the store's up to 25% fast); a
//! holder's clock that runs fast only makes it give up early. Renewal timing
//! and request timeouts do not move the bound (each grant counts from its
//! own send; a late answer is not believed). `core/tests/lease_safety.rs`
//! finds this boundary by simulation, and the chaos checker's clock fault
//! shows it on real processes.
//!
//! [`LeaseClient::lease`] answers `None` from the local deadline on, whether
//! or not anyone has called `handle_timeout` yet, so a caller that checks
//! before acting never acts on a lost lease.

use core::time::Duration;
use std::collections::VecDeque;

use thiserror::Error;

/// Timing of a client lease.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseConfig {
    /// The lease duration asked of the store.
    pub ttl: Duration,
    /// How long after the granting request was sent a renewal is due
    /// (default: a third of the TTL, so two renewals can fail before the
    /// lease is lost).
    pub renew_after: Duration,
    /// Fraction of the TTL given up as a safety margin (default 0.2).
    pub margin: f64,
    /// How long to wait before retrying a renewal that failed without an
    /// answer (default: a tenth of the TTL).
    pub retry_after: Duration,
}

/// A [`LeaseConfig`] that cannot keep its promise.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ConfigError {
    /// The margin is not strictly between 0 and 1.
    #[error("margin {0} must be greater than 0 and less than 1")]
    Margin(f64),
    /// Renewals would be due only after the lease is already lost.
    #[error("renew_after {renew_after:?} must be shorter than the usable lease {usable:?} (ttl minus margin)")]
    RenewTooLate {
        /// The configured renewal delay.
        renew_after: Duration,
        /// `ttl × (1 − margin)`.
        usable: Duration,
    },
    /// The TTL is zero.
    #[error("ttl must be greater than zero")]
    ZeroTtl,
}

impl LeaseConfig {
    /// The defaults for `ttl`: renew at a third, 20% margin, retry at a tenth.
    pub fn new(ttl: Duration) -> Self {
        LeaseConfig { ttl, renew_after: ttl / 3, margin: 0.2, retry_after: ttl / 10 }
    }

    /// How long a lease is usable after the request that granted it was sent.
    pub fn usable(&self) -> Duration {
        self.ttl.mul_f64(1.0 - self.margin)
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ttl.is_zero() {
            return Err(ConfigError::ZeroTtl);
        }
        if !(self.margin > 0.0 && self.margin < 1.0) {
            return Err(ConfigError::Margin(self.margin));
        }
        if self.renew_after >= self.usable() {
            return Err(ConfigError::RenewTooLate { renew_after: self.renew_after, usable: self.usable() });
        }
        Ok(())
    }
}

/// Names one request so its response can be matched to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// A request the caller must send to the elector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `PUT` without a token.
    Acquire,
    /// `PUT` with the token.
    Renew {
        /// The token of the lease being renewed.
        token: u64,
    },
    /// `DELETE` with the token. Its response needs no reporting back.
    Release {
        /// The token of the lease being released.
        token: u64,
    },
}

/// What the elector answered to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// 200: the lease is granted or renewed.
    Granted {
        /// The fencing token.
        token: u64,
        /// The record version after the write.
        version: u64,
    },
    /// 409 (or 404 on renewal): the store refused.
    Refused,
    /// No answer: transport error, timeout, 5xx. The request may or may not
    /// have reached the store.
    Failed,
}

/// Something the caller must do or report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Send `request`, remembering `id` to report its response.
    Send {
        /// Pass back to [`LeaseClient::handle_response`].
        id: RequestId,
        /// What to send.
        request: Request,
    },
    /// The lease is held from now on.
    Acquired {
        /// The fencing token.
        token: u64,
    },
    /// The acquisition did not succeed (refused, failed, or granted too late
    /// to be used); the client is idle again.
    NotAcquired,
    /// The lease is lost: renewal refused or not confirmed in time. The
    /// client is idle again.
    Lost {
        /// The token of the lost lease.
        token: u64,
    },
}

/// A lease the client holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The fencing token.
    pub token: u64,
    /// The record version after the last grant.
    pub version: u64,
    /// The local deadline: the lease is reported lost at this instant.
    pub valid_until: Duration,
}

/// A call that does not fit the client's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum StateError {
    /// `acquire` while acquiring or holding.
    #[error("an acquisition is already in progress or the lease is held")]
    Busy,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Idle,
    Acquiring { id: RequestId, sent: Duration },
    Held { lease: Held, renew_at: Duration, renewing: Option<(RequestId, Duration)> },
}

/// Follows one lease of one holder. See the [module docs](self).
#[derive(Debug)]
pub struct LeaseClient {
    config: LeaseConfig,
    phase: Phase,
    next_id: u64,
    outputs: VecDeque<Output>,
}

impl LeaseClient {
    /// A client that holds nothing yet.
    pub fn new(config: LeaseConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(LeaseClient { config, phase: Phase::Idle, next_id: 0, outputs: VecDeque::new() })
    }

    /// The configuration.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    fn send(&mut self, request: Request) -> RequestId {
        self.next_id += 1;
        let id = RequestId(self.next_id);
        self.outputs.push_back(Output::Send { id, request });
        id
    }

    /// Starts acquiring at `now`; an [`Output::Send`] with
    /// [`Request::Acquire`] follows.
    pub fn acquire(&mut self, now: Duration) -> Result<RequestId, StateError> {
        if !matches!(self.phase, Phase::Idle) {
            return Err(StateError::Busy);
        }
        let id = self.send(Request::Acquire);
        self.phase = Phase::Acquiring { id, sent: now };
        Ok(id)
    }

    /// Gives the lease up at once: from now on the client does not hold it.
    /// Queues a [`Request::Release`] when there was a lease to release.
    /// An acquisition in flight is abandoned; if it is granted later, the
    /// client releases that grant.
    pub fn release(&mut self) -> Option<RequestId> {
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Held { lease, .. } => Some(self.send(Request::Release { token: lease.token })),
            Phase::Acquiring { .. } | Phase::Idle => None,
        }
    }

    /// Steps down: gives the lease up at once (an [`Output::Send`] with
    /// [`Request::Release`] follows) and reports it lost ([`Output::Lost`]
    /// after it), as a leader asked to hand over does. `None` if nothing
    /// was held.
    pub fn step_down(&mut self) -> Option<RequestId> {
        let Phase::Held { lease, .. } = self.phase else { return None };
        let id = self.send(Request::Release { token: lease.token });
        self.lose(lease.token);
        Some(id)
    }

    /// Whether a lease is held (usable or not: its deadline may have come
    /// without a [`handle_timeout`](Self::handle_timeout) since).
    pub fn holds(&self) -> bool {
        matches!(self.phase, Phase::Held { .. })
    }

    /// The lease is lost now, for a reason the caller learned on its own
    /// (the session it was held under ended): reports [`Output::Lost`] and
    /// sends nothing. Returns whether a lease was held.
    pub fn forfeit(&mut self) -> bool {
        match self.phase {
            Phase::Held { lease, .. } => {
                self.lose(lease.token);
                true
            }
            Phase::Acquiring { .. } | Phase::Idle => false,
        }
    }

    /// The lease, if it is held and still usable at `now`.
    pub fn lease(&self, now: Duration) -> Option<Held> {
        match self.phase {
            Phase::Held { lease, .. } if now < lease.valid_until => Some(lease),
            _ => None,
        }
    }

    /// Feeds the response to request `id`, received at `now`.
    pub fn handle_response(&mut self, id: RequestId, response: Response, now: Duration) {
        match (self.phase, response) {
            (Phase::Acquiring { id: want, sent }, _) if want == id => self.on_acquired(sent, response, now),
            (Phase::Held { lease, renewing: Some((want, sent)), .. }, _) if want == id => {
                self.on_renewed(lease, sent, response, now)
            }
            (Phase::Held { lease, .. }, Response::Granted { token, .. }) if token == lease.token => {}
            // A grant nobody waits for (an abandoned acquisition, a renewal
            // answered after the lease was reported lost): the store believes
            // we hold a lease we do not want. Hand it back.
            (_, Response::Granted { token, .. }) => {
                self.send(Request::Release { token });
            }
            _ => {}
        }
    }

    fn on_acquired(&mut self, sent: Duration, response: Response, now: Duration) {
        match response {
            Response::Granted { token, version } => {
                let valid_until = sent + self.config.usable();
                if now >= valid_until {
                    self.phase = Phase::Idle;
                    self.send(Request::Release { token });
                    self.outputs.push_back(Output::NotAcquired);
                    return;
                }
                let renew_at = sent + self.config.renew_after;
                self.phase = Phase::Held { lease: Held { token, version, valid_until }, renew_at, renewing: None };
                self.outputs.push_back(Output::Acquired { token });
            }
            Response::Refused | Response::Failed => {
                self.phase = Phase::Idle;
                self.outputs.push_back(Output::NotAcquired);
            }
        }
    }

    fn on_renewed(&mut self, lease: Held, sent: Duration, response: Response, now: Duration) {
        match response {
            Response::Granted { token, version } if token == lease.token && now < lease.valid_until => {
                let valid_until = lease.valid_until.max(sent + self.config.usable());
                let renew_at = sent + self.config.renew_after;
                self.phase = Phase::Held { lease: Held { token, version, valid_until }, renew_at, renewing: None };
            }
            Response::Failed if now < lease.valid_until => {
                let renew_at = now + self.config.retry_after;
                self.phase = Phase::Held { lease, renew_at, renewing: None };
            }
            Response::Granted { token, .. } if token != lease.token => {
                self.lose(lease.token);
                self.send(Request::Release { token });
            }
            _ => self.lose(lease.token),
        }
    }

    fn lose(&mut self, token: u64) {
        self.phase = Phase::Idle;
        self.outputs.push_back(Output::Lost { token });
    }

    /// Lets time pass to `now`: reports the lease lost at its deadline and
    /// queues a renewal when one is due.
    pub fn handle_timeout(&mut self, now: Duration) {
        if let Phase::Held { lease, renew_at, renewing } = self.phase {
            if now >= lease.valid_until {
                self.lose(lease.token);
            } else if renewing.is_none() && now >= renew_at {
                let id = self.send(Request::Renew { token: lease.token });
                self.phase = Phase::Held { lease, renew_at, renewing: Some((id, now)) };
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Duration> {
        match self.phase {
            Phase::Held { lease, renewing: None, renew_at } => Some(renew_at.min(lease.valid_until)),
            Phase::Held { lease, .. } => Some(lease.valid_until),
            _ => None,
        }
    }

    /// The next thing to send or report, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn client() -> LeaseClient {
        LeaseClient::new(LeaseConfig::new(MS * 3000)).unwrap()
    }

    fn drain(c: &mut LeaseClient) -> Vec<Output> {
        std::iter::from_fn(|| c.poll_output()).collect()
    }

    #[test]
    fn counts_the_lease_from_the_send_and_renews_at_a_third() {
        let mut c = client();
        let id = c.acquire(MS * 100).unwrap();
        assert_eq!(drain(&mut c), [Output::Send { id, request: Request::Acquire }]);
        c.handle_response(id, Response::Granted { token: 7, version: 1 }, MS * 900);
        assert_eq!(drain(&mut c), [Output::Acquired { token: 7 }]);
        assert_eq!(c.lease(MS * 900).unwrap().valid_until, MS * 2500);
        assert_eq!(c.poll_timeout(), Some(MS * 1100));
        c.handle_timeout(MS * 1100);
        let [Output::Send { id: renew, request: Request::Renew { token: 7 } }] = drain(&mut c)[..] else { panic!() };
        assert_eq!(c.poll_timeout(), Some(MS * 2500));
        c.handle_response(renew, Response::Granted { token: 7, version: 2 }, MS * 1200);
        assert_eq!(c.lease(MS * 1200).unwrap().valid_until, MS * 3500);
        assert_eq!(c.lease(MS * 3500), None, "lost at the deadline even before handle_timeout");
        c.handle_timeout(MS * 3500);
        assert!(drain(&mut c).contains(&Output::Lost { token: 7 }));
    }

    #[test]
    fn a_grant_that_arrives_after_its_deadline_is_handed_back() {
        let mut c = client();
        let id = c.acquire(Duration::ZERO).unwrap();
        drain(&mut c);
        c.handle_response(id, Response::Granted { token: 3, version: 1 }, MS * 2400);
        let out = drain(&mut c);
        assert!(matches!(out[..], [Output::Send { request: Request::Release { token: 3 }, .. }, Output::NotAcquired]));
        assert_eq!(c.lease(MS * 2400), None);
    }

    #[test]
    fn failed_renewal_is_retried_and_refused_renewal_loses() {
        let mut c = client();
        let id = c.acquire(Duration::ZERO).unwrap();
        c.handle_response(id, Response::Granted { token: 1, version: 1 }, MS);
        c.handle_timeout(MS * 1000);
        let Some(Output::Send { id: r1, .. }) = drain(&mut c).pop() else { panic!() };
        c.handle_response(r1, Response::Failed, MS * 1010);
        assert_eq!(c.poll_timeout(), Some(MS * 1310));
        c.handle_timeout(MS * 1310);
        let Some(Output::Send { id: r2, .. }) = drain(&mut c).pop() else { panic!() };
        c.handle_response(r2, Response::Refused, MS * 1320);
        assert_eq!(drain(&mut c), [Output::Lost { token: 1 }]);
        assert!(c.acquire(MS * 1400).is_ok());
    }

    #[test]
    fn release_is_immediate_and_late_grants_are_returned() {
        let mut c = client();
        let id = c.acquire(Duration::ZERO).unwrap();
        assert_eq!(c.release(), None);
        drain(&mut c);
        c.handle_response(id, Response::Granted { token: 9, version: 1 }, MS);
        assert!(matches!(drain(&mut c)[..], [Output::Send { request: Request::Release { token: 9 }, .. }]));
    }

    #[test]
    fn bad_configurations_are_refused() {
        let mut cfg = LeaseConfig::new(MS * 1000);
        cfg.margin = 1.0;
        assert!(LeaseClient::new(cfg).is_err());
        cfg.margin = 0.2;
        cfg.renew_after = MS * 800;
        assert!(matches!(LeaseClient::new(cfg), Err(ConfigError::RenewTooLate { .. })));
        assert_eq!(LeaseClient::new(LeaseConfig::new(Duration::ZERO)).unwrap_err(), ConfigError::ZeroTtl);
    }
}
