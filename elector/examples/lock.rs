//! The seed's lock example, natively: take the lock `test`, hold it for a
//! while (renewing in the background), release it, and print the story.
//!
//! ```text
//! cargo run -p elector --example lock -- --id alice --hold 5s --ttl 2s
//! ```
//!
//! A contender that finds the lock held long-polls the elector and tries
//! again the moment the lock is released, instead of polling every 10 s as
//! the original did. The lease logic is `mpsync_core::LeaseClient`; this file
//! only moves its requests and answers.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use clap::Parser;
use elector::client::{Claimed, Client, Read};
use mpsync_core::lease::{Output, Request, Response};
use mpsync_core::wire::{AcquireRequest, Kind};
use mpsync_core::{LeaseClient, LeaseConfig};

/// Take a lock, hold it, release it: the seed's lock example.
#[derive(Debug, Parser)]
struct Args {
    /// The elector's URL.
    #[arg(long, default_value = "http://127.0.0.1:13131")]
    elector: String,
    /// The lock name.
    #[arg(long, default_value = "test")]
    name: String,
    /// Who this contender is.
    #[arg(long)]
    id: String,
    /// How long to hold the lock.
    #[arg(long, default_value = "45s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// The lease TTL; it is renewed in the background at a third of it.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    ttl: Duration,
}

struct Contender {
    args: Args,
    client: Client,
    lease: LeaseClient,
    origin: Instant,
}

impl Contender {
    fn say(&self, text: impl std::fmt::Display) {
        let stamp = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        println!("{} [{:<5}] {text}", &stamp[11..23], self.args.id);
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Sends what the state machine asks for and feeds the answers back.
    /// Returns the events it reported, and the version a refusal named.
    async fn drive(&mut self) -> anyhow::Result<(Vec<Output>, Option<u64>)> {
        let (mut events, mut refused_at) = (Vec::new(), None);
        while let Some(output) = self.lease.poll_output() {
            let Output::Send { id, request } = output else {
                events.push(output);
                continue;
            };
            let ttl_ms = self.args.ttl.as_millis() as u64;
            let (holder, name) = (self.args.id.clone(), self.args.name.clone());
            let token = match request {
                Request::Acquire => None,
                Request::Renew { token } => Some(token),
                Request::Release { token } => {
                    self.client.release(Kind::Lock, &name, &holder, token).await?;
                    continue;
                }
            };
            let body = AcquireRequest { holder, ttl_ms, token, address: None };
            let response = match self.client.claim(Kind::Lock, &name, &body).await {
                Ok(Claimed::Granted(lease)) => Response::Granted { token: lease.token, version: lease.version },
                Ok(Claimed::Refused(conflict)) => {
                    if let Some(holder) = &conflict.holder {
                        self.say(format!("{holder} holds the lock; waiting for it to be released"));
                    }
                    refused_at = Some(conflict.version);
                    Response::Refused
                }
                Err(e) => {
                    self.say(format!("elector unavailable: {e}"));
                    Response::Failed
                }
            };
            let now = self.now();
            self.lease.handle_response(id, response, now);
            if let (Request::Renew { .. }, Response::Granted { .. }, Some(held)) =
                (request, response, self.lease.lease(now))
            {
                let left = held.valid_until.saturating_sub(now);
                self.say(format!("renewed in the background (token {}, good for {left:.1?})", held.token));
            }
        }
        Ok((events, refused_at))
    }

    async fn lock(&mut self) -> anyhow::Result<u64> {
        self.say("Attempting to lock");
        loop {
            let now = self.now();
            self.lease.acquire(now).context("acquire")?;
            let (events, refused_at) = self.drive().await?;
            if let Some(Output::Acquired { token }) = events.first() {
                return Ok(*token);
            }
            let Some(mut version) = refused_at else {
                tokio::time::sleep(self.args.ttl / 10).await;
                continue;
            };
            // Long-poll: the elector answers the moment the record changes;
            // a renewal by the holder is a change too, so wait again until
            // the lock is free.
            while let Read::Held(lease) =
                self.client.read(Kind::Lock, &self.args.name, Some((version, Duration::from_secs(60)))).await?
            {
                version = lease.version;
            }
        }
    }

    async fn hold(&mut self, until: Instant) -> anyhow::Result<()> {
        loop {
            let wake = self.lease.poll_timeout().map_or(until, |t| self.origin + t).min(until);
            tokio::time::sleep_until(wake.into()).await;
            if Instant::now() >= until {
                return Ok(());
            }
            let now = self.now();
            self.lease.handle_timeout(now);
            let (events, _) = self.drive().await?;
            if let Some(Output::Lost { token }) = events.iter().find(|e| matches!(e, Output::Lost { .. })) {
                self.say(format!("I lost the lock! (token {token})"));
                bail!("lost the lock");
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let lease = LeaseClient::new(LeaseConfig::new(args.ttl))?;
    let client = Client::new(&args.elector);
    let mut me = Contender { args, client, lease, origin: Instant::now() };
    let token = me.lock().await?;
    me.say(format!("I have the lock! (fencing token {token})"));
    me.say(format!("Holding the lock for {}", humantime::format_duration(me.args.hold)));
    me.hold(Instant::now() + me.args.hold).await?;
    if me.lease.release().is_some() {
        me.drive().await?;
    }
    me.say("Unlocked");
    Ok(())
}
