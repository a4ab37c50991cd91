//! Property tests of the safety story, in virtual time, with clocks that
//! drift.
//!
//! Three clients ([`LeaseClient`]) contend for one record held by a
//! simulated store that applies [`decide_claim`] / [`decide_release`] and
//! judges expiry on its own clock from the moment it applied each write.
//! The store's clock is the reference ("real" time here); each client reads
//! a clock of its own, which starts anywhere and runs at its own rate
//! relative to the store's. Every request and response takes an arbitrary
//! delay (from nothing to three TTLs), and some are lost. After every event
//! the simulation checks:
//! - a client that believes it holds the lease (`lease(its now)` is `Some`)
//!   is the store's holder with the same token, and the real instant at
//!   which its clock reaches its local deadline comes no later than the
//!   store's expiry: it learns of the loss before the store could hand the
//!   record to anyone else;
//! - the store only ever grants increasing tokens, and renewals keep them;
//! - the tokens clients come to believe in only ever increase.
//!
//! # The clock-drift bound
//!
//! A holder whose clock runs at rate `r` relative to the judge's (it counts
//! `r` seconds while the judge counts one) sends a request at real time `S`
//! and believes in the grant until its own clock has advanced by
//! `ttl × (1 − margin)`, that is until real `S + ttl × (1 − margin) / r`. The
//! judge saw the write at `O ≥ S` and lets someone else in at `O + ttl`. The
//! network may deliver at once (`O = S`), so the holder is safe whatever the
//! delays exactly when `(1 − margin) / r ≤ 1`:
//!
//! **`r ≥ 1 − margin`.** With the default 20% margin a holder's clock may
//! run up to 20% slow relative to the elector's (or the elector's up to 25%
//! fast relative to the holder's); a holder's clock that runs fast is always
//! safe (it gives up early). Renewal timing and request timeouts do not move
//! the bound: every grant is counted from its own send, and an answer that
//! arrives after the local deadline is not believed.
//! [`the_drift_bound_is_one_minus_the_margin`] finds the boundary by
//! bisection over rates, for three margins, and checks it is exactly that.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use mpsync_core::lease::{Output, Request, Response};
use mpsync_core::record::{decide_claim, decide_release};
use mpsync_core::{Claim, Current, LeaseClient, LeaseConfig, Outcome, Record, ReleaseOutcome, RequestId};
use proptest::prelude::*;

const MS: Duration = Duration::from_millis(1);

/// Clock rates are in parts per this many.
const PARTS: u64 = 10_000;

fn nanos(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap())
}

/// A client's clock: it reads `offset + rate × t` when the store's reads
/// `t`, with `rate` in parts per [`PARTS`].
#[derive(Debug, Clone, Copy)]
struct Clock {
    offset: Duration,
    rate: u64,
}

impl Clock {
    fn at_rate(rate: u64) -> Clock {
        Clock { offset: Duration::ZERO, rate }
    }

    /// What this clock reads at the store's time `t`.
    fn local(self, t: Duration) -> Duration {
        self.offset + nanos(t.as_nanos() * u128::from(self.rate) / u128::from(PARTS))
    }

    /// The first store time at which this clock reads `local` or more.
    fn real(self, local: Duration) -> Duration {
        let since = local.saturating_sub(self.offset).as_nanos();
        nanos((since * u128::from(PARTS)).div_ceil(u128::from(self.rate)))
    }
}

struct Store {
    record: Option<Record>,
    version: u64,
    observed_at: Duration,
    last_granted: u64,
}

impl Store {
    fn current(&self) -> Option<Current<'_>> {
        self.record.as_ref().map(|record| Current { record, version: self.version, observed_at: self.observed_at })
    }

    fn write(&mut self, record: Record, now: Duration) {
        self.record = Some(record);
        self.version += 1;
        self.observed_at = now;
    }

    fn handle(&mut self, holder: &str, ttl_ms: u64, request: Request, now: Duration) -> Response {
        let token = match request {
            Request::Acquire => None,
            Request::Renew { token } => Some(token),
            Request::Release { token } => {
                let outcome = decide_release(self.current().as_ref(), holder, token, None, now);
                if let ReleaseOutcome::Released { record } = outcome {
                    self.write(record, now);
                }
                return Response::Refused;
            }
        };
        let claim = Claim { holder, ttl_ms, token, address: None, key: None, shared: false, permits: None };
        match decide_claim(self.current().as_ref(), &claim, now) {
            Outcome::Acquired { record, .. } => {
                assert!(record.token > self.last_granted, "a new grant must get a higher token");
                self.last_granted = record.token;
                let token = record.token;
                self.write(record, now);
                Response::Granted { token, version: self.version }
            }
            Outcome::Renewed { record } => {
                assert_eq!(Some(record.token), token, "a renewal keeps its token");
                let token = record.token;
                self.write(record, now);
                Response::Granted { token, version: self.version }
            }
            Outcome::Refused(_) => Response::Refused,
        }
    }
}

enum Msg {
    ToStore { client: usize, id: RequestId, request: Request },
    ToClient { client: usize, id: RequestId, response: Response },
}

struct Client {
    name: String,
    ttl_ms: u64,
    clock: Clock,
    lease: LeaseClient,
}

/// How a simulated run went.
#[derive(Debug)]
struct Ran {
    acquisitions: usize,
    /// The first broken promise, if any (the run stops there).
    violation: Option<String>,
}

struct Sim {
    /// The store's clock.
    now: Duration,
    rng: u64,
    store: Store,
    clients: Vec<Client>,
    net: Vec<(Duration, u64, Msg)>,
    seq: u64,
    believed: u64,
    acquisitions: usize,
    violation: Option<String>,
}

impl Sim {
    fn new(seed: u64, ttls: [u64; 3], clocks: [Clock; 3], margin: f64) -> Sim {
        let clients = ttls
            .iter()
            .zip(clocks)
            .enumerate()
            .map(|(i, (&ttl_ms, clock))| {
                let config = LeaseConfig { margin, ..LeaseConfig::new(MS * ttl_ms as u32) };
                Client { name: format!("c{i}"), ttl_ms, clock, lease: LeaseClient::new(config).unwrap() }
            })
            .collect();
        let store = Store { record: None, version: 0, observed_at: Duration::ZERO, last_granted: 0 };
        Sim {
            now: Duration::ZERO,
            rng: seed | 1,
            store,
            clients,
            net: Vec::new(),
            seq: 0,
            believed: 0,
            acquisitions: 0,
            violation: None,
        }
    }

    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Mostly quick (whole milliseconds, none at all now and then), sometimes
    /// up to a TTL, now and then up to three TTLs.
    fn delay(&mut self, ttl_ms: u64) -> Duration {
        let r = self.rand();
        let ms = match r % 10 {
            0..=6 => r % 20,
            7 | 8 => r % ttl_ms,
            _ => r % (3 * ttl_ms),
        };
        MS * ms as u32
    }

    fn violated(&mut self, what: String) {
        self.violation.get_or_insert(what);
    }

    /// What client `c`'s clock reads now.
    fn local(&self, c: usize) -> Duration {
        self.clients[c].clock.local(self.now)
    }

    fn post(&mut self, at: Duration, msg: Msg) {
        self.seq += 1;
        self.net.push((at, self.seq, msg));
    }

    fn flush(&mut self, c: usize) {
        while let Some(out) = self.clients[c].lease.poll_output() {
            match out {
                Output::Send { id, request } => {
                    let ttl = self.clients[c].ttl_ms;
                    let at = self.now + self.delay(ttl);
                    if self.rand().is_multiple_of(12) {
                        // Lost on the way: the client hears nothing but a failure.
                        self.post(at, Msg::ToClient { client: c, id, response: Response::Failed });
                    } else {
                        self.post(at, Msg::ToStore { client: c, id, request });
                    }
                }
                Output::Acquired { token } => {
                    if token <= self.believed {
                        self.violated(format!("token {token} believed after {}", self.believed));
                    }
                    self.believed = self.believed.max(token);
                    self.acquisitions += 1;
                }
                Output::NotAcquired | Output::Lost { .. } => {}
            }
        }
    }

    fn deliver(&mut self, msg: Msg) {
        match msg {
            Msg::ToStore { client, id, request } => {
                let (name, ttl_ms) = (self.clients[client].name.clone(), self.clients[client].ttl_ms);
                let mut response = self.store.handle(&name, ttl_ms, request, self.now);
                if matches!(request, Request::Release { .. }) {
                    return;
                }
                if self.rand().is_multiple_of(12) {
                    response = Response::Failed;
                }
                let at = self.now + self.delay(ttl_ms);
                self.post(at, Msg::ToClient { client, id, response });
            }
            Msg::ToClient { client, id, response } => {
                let now = self.local(client);
                self.clients[client].lease.handle_response(id, response, now);
                self.flush(client);
            }
        }
    }

    fn check(&mut self) {
        for c in 0..self.clients.len() {
            let client = &self.clients[c];
            let Some(held) = client.lease.lease(client.clock.local(self.now)) else {
                continue;
            };
            let broken = match self.store.current() {
                Some(cur) if cur.record.holder.as_deref() == Some(&client.name) && cur.record.token == held.token => {
                    let believed_until = client.clock.real(held.valid_until);
                    let expiry = cur.expires_at().unwrap();
                    (believed_until > expiry).then(|| {
                        format!(
                            "{} (clock rate {}/{PARTS}) believes in token {} until {believed_until:?}, the store \
                             lets others in at {expiry:?}",
                            client.name, client.clock.rate, held.token
                        )
                    })
                }
                other => Some(format!(
                    "{} believes it holds token {} at {:?}; the store has {:?}",
                    client.name,
                    held.token,
                    self.now,
                    other.map(|cur| (cur.record.holder.clone(), cur.record.token))
                )),
            };
            if let Some(what) = broken {
                self.violated(what);
            }
        }
    }

    fn run_until(&mut self, target: Duration) {
        while self.violation.is_none() {
            let msg =
                self.net.iter().enumerate().min_by_key(|(_, (at, seq, _))| (*at, *seq)).map(|(i, (at, ..))| (*at, i));
            // Timers are set on each client's clock: the store's time at
            // which that clock gets there.
            let timer = self
                .clients
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.lease.poll_timeout().map(|t| (c.clock.real(t), i)))
                .min();
            let next = match (msg, timer) {
                (Some((m, i)), Some((t, _))) if m <= t => (m, Some(i), None),
                (_, Some((t, c))) => (t, None, Some(c)),
                (Some((m, i)), None) => (m, Some(i), None),
                (None, None) => break,
            };
            if next.0 > target {
                break;
            }
            self.now = self.now.max(next.0);
            if let Some(i) = next.1 {
                let (_, _, msg) = self.net.swap_remove(i);
                self.deliver(msg);
            }
            if let Some(c) = next.2 {
                let now = self.local(c);
                self.clients[c].lease.handle_timeout(now);
                self.flush(c);
            }
            self.check();
        }
        self.now = self.now.max(target);
        self.check();
    }

    fn act(&mut self, c: usize, op: u8) {
        match op {
            0 => {
                let now = self.local(c);
                let _ = self.clients[c].lease.acquire(now);
            }
            1 => {
                self.clients[c].lease.release();
            }
            _ => {}
        }
        self.flush(c);
        self.check();
    }
}

/// Runs `ops` (client, operation, store milliseconds to let pass first),
/// then ten more seconds; stops at the first broken promise.
fn run(seed: u64, ttls: [u64; 3], clocks: [Clock; 3], margin: f64, ops: &[(usize, u8, u64)]) -> Ran {
    let mut sim = Sim::new(seed, ttls, clocks, margin);
    for &(c, op, advance) in ops {
        let target = sim.now + MS * advance as u32;
        sim.run_until(target);
        sim.act(c, op);
        if sim.violation.is_some() {
            break;
        }
    }
    let end = sim.now + MS * 10_000;
    sim.run_until(end);
    Ran { acquisitions: sim.acquisitions, violation: sim.violation }
}

/// A clock starting anywhere in its first 10,000 s, at a rate from `min` to
/// `max` parts per [`PARTS`].
fn clock(min: u64, max: u64) -> impl Strategy<Value = Clock> {
    (0u64..10_000_000, min..=max).prop_map(|(offset_ms, rate)| Clock { offset: MS * offset_ms as u32, rate })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Every clock inside the bound, from exactly `1 − margin` (20% slow)
    /// to three times as fast as the store's.
    #[test]
    fn a_holder_always_knows_first_and_tokens_only_grow(
        seed in any::<u64>(),
        ttls in prop::array::uniform3(prop::sample::select(vec![50u64, 200, 1000])),
        clocks in prop::array::uniform3(clock(8_000, 30_000)),
        ops in prop::collection::vec((0usize..3, 0u8..4, 0u64..1500), 1..60),
    ) {
        let ran = run(seed, ttls, clocks, 0.2, &ops);
        prop_assert!(ran.violation.is_none(), "{}", ran.violation.unwrap_or_default());
    }
}

/// Three clients taking turns for a while, over many seeds.
fn busy(clocks: [Clock; 3], margin: f64, seeds: u64) -> Vec<Ran> {
    let ops: Vec<_> = (0..300).map(|i| (i % 3, (i % 4) as u8, 137 * (i as u64 % 7))).collect();
    (1..=seeds).map(|seed| run(seed * 7919, [50, 200, 1000], clocks, margin, &ops)).collect()
}

/// The simulation is not vacuous: with many contenders and bad networks,
/// leases do change hands many times.
#[test]
fn the_simulation_hands_the_lease_around() {
    let runs = busy([Clock::at_rate(PARTS); 3], 0.2, 19);
    assert!(runs.iter().all(|r| r.violation.is_none()), "{runs:?}");
    let total: usize = runs.iter().map(|r| r.acquisitions).sum();
    assert!(total > 100, "only {total} acquisitions");
}

/// Whether every client may run at `rate` (parts per [`PARTS`]) with
/// `margin`, over the busy runs.
fn safe_at(rate: u64, margin: f64) -> bool {
    busy([Clock::at_rate(rate); 3], margin, 8).iter().all(|r| r.violation.is_none())
}

/// The slowest safe clock, found by bisection to one part in [`PARTS`],
/// is exactly `1 − margin`, as the module documentation derives.
#[test]
fn the_drift_bound_is_one_minus_the_margin() {
    for margin in [0.1, 0.2, 0.3] {
        let (mut slow, mut fine) = (PARTS / 2, PARTS);
        assert!(!safe_at(slow, margin), "a clock at half speed went unnoticed with margin {margin}");
        assert!(safe_at(fine, margin), "a true clock broke a promise with margin {margin}");
        while fine - slow > 1 {
            let mid = (slow + fine) / 2;
            if safe_at(mid, margin) {
                fine = mid;
            } else {
                slow = mid;
            }
        }
        let bound = ((1.0 - margin) * PARTS as f64).round() as u64;
        println!("margin {margin}: safe down to a clock rate of {fine}/{PARTS}, broken at {slow}/{PARTS}");
        assert_eq!(fine, bound, "margin {margin}: the boundary is not 1 - margin");
    }
}
