//! Property tests of the safety story, in virtual time.
//!
//! Three clients ([`LeaseClient`]) contend for one record held by a
//! simulated store that applies [`decide_claim`] / [`decide_release`] and
//! judges expiry from the moment it applied each write. Every request and
//! response takes an arbitrary delay (from nothing to three TTLs), and some
//! are lost. After every event the test checks:
//! - a client that believes it holds the lease (`lease(now)` is `Some`) is
//!   the store's holder with the same token, and its local deadline comes no
//!   later than the store's expiry: it learns of the loss before the store
//!   could hand the record to anyone else;
//! - the store only ever grants increasing tokens, and renewals keep them;
//! - the tokens clients come to believe in only ever increase.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use mpsync_core::lease::{Output, Request, Response};
use mpsync_core::record::{decide_claim, decide_release};
use mpsync_core::{Claim, Current, LeaseClient, LeaseConfig, Outcome, Record, ReleaseOutcome, RequestId};
use proptest::prelude::*;

const MS: Duration = Duration::from_millis(1);

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
                let outcome = decide_release(self.current().as_ref(), holder, token, now);
                if let ReleaseOutcome::Released { record } = outcome {
                    self.write(record, now);
                }
                return Response::Refused;
            }
        };
        let claim = Claim { holder, ttl_ms, token, address: None };
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
    lease: LeaseClient,
}

struct Sim {
    now: Duration,
    rng: u64,
    store: Store,
    clients: Vec<Client>,
    net: Vec<(Duration, u64, Msg)>,
    seq: u64,
    believed: u64,
    acquisitions: usize,
}

impl Sim {
    fn new(seed: u64, ttls: [u64; 3]) -> Sim {
        let clients = ttls
            .iter()
            .enumerate()
            .map(|(i, &ttl_ms)| Client {
                name: format!("c{i}"),
                ttl_ms,
                lease: LeaseClient::new(LeaseConfig::new(MS * ttl_ms as u32)).unwrap(),
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
        }
    }

    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Mostly quick, sometimes up to a TTL, now and then up to three TTLs.
    fn delay(&mut self, ttl_ms: u64) -> Duration {
        let r = self.rand();
        let ms = match r % 10 {
            0..=6 => r % 20,
            7 | 8 => r % ttl_ms,
            _ => r % (3 * ttl_ms),
        };
        MS * ms as u32
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
                    assert!(token > self.believed, "token {token} after {} was believed", self.believed);
                    self.believed = token;
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
                self.clients[client].lease.handle_response(id, response, self.now);
                self.flush(client);
            }
        }
    }

    fn check(&self) {
        for c in &self.clients {
            let Some(held) = c.lease.lease(self.now) else {
                continue;
            };
            let cur = self.store.current().expect("a believed lease has a record");
            assert_eq!(
                cur.record.holder.as_deref(),
                Some(c.name.as_str()),
                "{} believes it holds at {:?}",
                c.name,
                self.now
            );
            assert_eq!(cur.record.token, held.token);
            let expiry = cur.expires_at().unwrap();
            assert!(
                held.valid_until <= expiry,
                "{}: local deadline {:?} after store expiry {expiry:?}",
                c.name,
                held.valid_until
            );
        }
    }

    fn run_until(&mut self, target: Duration) {
        loop {
            let msg =
                self.net.iter().enumerate().min_by_key(|(_, (at, seq, _))| (*at, *seq)).map(|(i, (at, ..))| (*at, i));
            let timer =
                self.clients.iter().enumerate().filter_map(|(i, c)| c.lease.poll_timeout().map(|t| (t, i))).min();
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
                self.clients[c].lease.handle_timeout(self.now);
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
                let now = self.now;
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

fn run(seed: u64, ttls: [u64; 3], ops: &[(usize, u8, u64)]) -> usize {
    let mut sim = Sim::new(seed, ttls);
    for &(c, op, advance) in ops {
        let target = sim.now + MS * advance as u32;
        sim.run_until(target);
        sim.act(c, op);
    }
    let end = sim.now + MS * 10_000;
    sim.run_until(end);
    sim.acquisitions
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn a_holder_always_knows_first_and_tokens_only_grow(
        seed in any::<u64>(),
        ttls in prop::array::uniform3(prop::sample::select(vec![50u64, 200, 1000])),
        ops in prop::collection::vec((0usize..3, 0u8..4, 0u64..1500), 1..60),
    ) {
        run(seed, ttls, &ops);
    }
}

/// The simulation is not vacuous: with many contenders and bad networks,
/// leases do change hands many times.
#[test]
fn the_simulation_hands_the_lease_around() {
    let ops: Vec<_> = (0..300).map(|i| (i % 3, (i % 4) as u8, 137 * (i as u64 % 7))).collect();
    let total: usize = (1..20).map(|seed| run(seed * 7919, [50, 200, 1000], &ops)).sum();
    assert!(total > 100, "only {total} acquisitions");
}
