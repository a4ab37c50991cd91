//! The transferrer: an operator who now and then asks the leader of the
//! election ([`ELECTION`]) to hand over (`POST
//! /v1/elections/{name}/transfer`), through a random elector.
//!
//! Each round it reads the election (a plain `GET`, recorded as
//! [`Step::Leader`]: that read proves the grant it shows), then asks one of:
//! a transfer to a random candidate (the leader itself among them: refused
//! `held`), with or without `from` naming the leader it read; a transfer
//! away (no `to`); or a transfer with a `from` that is not the leader it
//! read, which the elector must refuse unless that candidate has come to
//! lead meanwhile (the answer names the leader: see
//! [`crate::transfers`]). Every ask goes into the history with its answer
//! ([`Step::Transfer`]), an ask that got no answer too (it may have been
//! written).
//!
//! **The control** (`--transfer-made-up`): it asks nothing, and records a
//! transfer to a candidate that is not the leader as asked and accepted:
//! nothing reserves the election for that candidate, so the next term often
//! goes to another within a TTL, which the check counts as a term that the
//! reservation should have kept out.

use std::time::Duration;

use mpsync_client::{Client, Kind, Read, TransferRequest};
use tokio::sync::watch;

use crate::elect::ELECTION;
use crate::fence::{Event, Fence, Step, TRANSFERRER};
use crate::rng::Rng;

/// How long one request may take (a paused store, an elector restarting).
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the transferrer is given.
pub struct Transferrer {
    /// The electors' URLs.
    pub urls: Vec<String>,
    /// The candidates' client ids.
    pub candidates: Vec<String>,
    /// The history.
    pub fence: Fence,
    /// The mean time between asks.
    pub every: Duration,
    /// The control (see the module's documentation).
    pub made_up: bool,
}

impl Transferrer {
    /// Asks until `stop` turns true.
    pub async fn run(self, mut rng: Rng, mut stop: watch::Receiver<bool>) {
        let clients: Vec<Client> = self.urls.iter().map(|u| Client::new(u).with_sessions(false)).collect();
        // The control makes up four times as often: it is caught sooner.
        let every = if self.made_up { self.every / 4 } else { self.every };
        while !*stop.borrow() {
            let pause = every.mul_f64(0.5 + rng.unit());
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = stop.changed() => break,
            }
            let client = &clients[rng.below(clients.len() as u64) as usize];
            let read = tokio::time::timeout(ASK_TIMEOUT, client.read(Kind::Election, ELECTION, None)).await;
            let Ok(Ok(Read::Held(view))) = read else { continue };
            let mut seen = Event::new(Step::Leader, ELECTION, TRANSFERRER, view.token, true);
            (seen.holder, seen.elector) = (Some(view.holder.clone()), Some(client.base().to_owned()));
            self.fence.record_transfer(seen);
            let request = if self.made_up {
                // Always a hand-over to someone else, to make up.
                let others: Vec<&String> = self.candidates.iter().filter(|c| **c != view.holder).collect();
                let Some(to) = (!others.is_empty()).then(|| others[rng.below(others.len() as u64) as usize]) else {
                    continue;
                };
                TransferRequest { to: Some(to.clone()), from: None }
            } else {
                self.draw(&view.holder, &mut rng)
            };
            let mut asked = Event::new(Step::Transfer, ELECTION, TRANSFERRER, 0, false);
            (asked.from, asked.to) = (request.from.clone(), request.to.clone());
            (asked.since_us, asked.elector) = (Some(self.fence.now_us()), Some(client.base().to_owned()));
            if self.made_up {
                // Nothing asked: recorded as if accepted.
                (asked.accepted, asked.holder, asked.token) = (true, Some(view.holder.clone()), view.token);
                asked.ttl_ms = Some(view.ttl_ms);
                self.fence.record_transfer(asked);
                continue;
            }
            match tokio::time::timeout(ASK_TIMEOUT, client.transfer(ELECTION, &request)).await {
                Ok(Ok(Ok(leader))) => {
                    (asked.accepted, asked.holder, asked.token) = (true, Some(leader.holder), leader.token);
                    asked.ttl_ms = Some(leader.ttl_ms);
                }
                Ok(Ok(Err(conflict))) => {
                    asked.holder = conflict.holder;
                    asked.why = serde_json::to_value(conflict.reason).ok().and_then(|v| v.as_str().map(Into::into));
                }
                // It may have been written: the checks take it as asked.
                _ => asked.why = Some(NO_ANSWER.to_owned()),
            }
            self.fence.record_transfer(asked);
        }
    }

    /// A request for the election led by `leader`: to a candidate (half of
    /// the time), away (a quarter), or from a candidate that did not lead
    /// when read (a quarter).
    fn draw(&self, leader: &str, rng: &mut Rng) -> TransferRequest {
        let any = |rng: &mut Rng| self.candidates[rng.below(self.candidates.len() as u64) as usize].clone();
        let others: Vec<&String> = self.candidates.iter().filter(|c| *c != leader).collect();
        let named = |rng: &mut Rng| (rng.below(2) == 0).then(|| leader.to_owned());
        match rng.below(4) {
            0 | 1 => TransferRequest { to: Some(any(rng)), from: named(rng) },
            2 => TransferRequest { to: None, from: named(rng) },
            _ if others.is_empty() => TransferRequest { to: None, from: None },
            _ => {
                let from = others[rng.below(others.len() as u64) as usize].clone();
                TransferRequest { to: (rng.below(2) == 0).then(|| any(rng)), from: Some(from) }
            }
        }
    }
}

/// The `why` of an ask that got no answer.
pub const NO_ANSWER: &str = "no answer";
