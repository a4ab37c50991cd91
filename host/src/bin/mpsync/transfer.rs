//! `mpsync leader NAME --transfer-to ID` / `--transfer-away`: ask the
//! leader to hand over, and optionally wait until someone else leads.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use mpsync_client::{Client, Kind, Read, TransferRequest};
use mpsync_core::client::POLL_SLICE;
use mpsync_core::wire::ConflictReason;

/// One transfer, as asked on the command line.
pub struct Ask {
    /// The election.
    pub name: String,
    /// The candidate to hand over to; `None`: anyone else.
    pub to: Option<String>,
    /// Ask only if this candidate leads.
    pub from: Option<String>,
    /// Then wait up to this long for another leader.
    pub wait: Option<Duration>,
}

/// Asks; see the `leader` command's help for the exit codes.
pub async fn transfer(elector: &str, ask: Ask) -> anyhow::Result<ExitCode> {
    let client = Client::new(elector);
    let request = TransferRequest { to: ask.to.clone(), from: ask.from.clone() };
    request
        .validate()
        .map_err(|e| anyhow::anyhow!("--{}: {}", if e.field == "to" { "transfer-to" } else { "from" }, e.message))?;
    let answer =
        client.transfer(&ask.name, &request).await.with_context(|| format!("asking {elector} for a transfer"))?;
    let to = ask.to.as_deref().map_or_else(|| "anyone else".to_owned(), str::to_owned);
    let leader = match answer {
        Ok(lease) => lease.holder,
        Err(c) if c.reason == ConflictReason::NotHeld && ask.from.is_none() => {
            eprintln!("mpsync: nobody leads {}: nothing to hand over", ask.name);
            return Ok(ExitCode::from(3));
        }
        Err(c) => {
            let said = match (c.reason, c.holder) {
                (ConflictReason::Held, Some(h)) if ask.to.as_deref() == Some(h.as_str()) => {
                    format!("{h} leads already")
                }
                (ConflictReason::Held, Some(h)) => format!("{h} leads, not {}", ask.from.as_deref().unwrap_or("?")),
                _ => format!("{} does not lead", ask.from.as_deref().unwrap_or("anyone")),
            };
            println!("nothing asked: {said}");
            return Ok(ExitCode::SUCCESS);
        }
    };
    println!("asked {leader} to hand over to {to}");
    let Some(wait) = ask.wait else { return Ok(ExitCode::SUCCESS) };
    match tokio::time::timeout(wait, next_leader(&client, &ask.name, &leader)).await {
        Ok(line) => {
            println!("{}", line?);
            Ok(ExitCode::SUCCESS)
        }
        Err(_) => {
            eprintln!("mpsync: {leader} still leads {} after {}", ask.name, humantime::format_duration(wait));
            Ok(ExitCode::from(4))
        }
    }
}

/// Long-polls the election until a leader other than `old` leads; its
/// `LEADER ADDRESS TOKEN` line.
async fn next_leader(client: &Client, name: &str, old: &str) -> anyhow::Result<String> {
    let mut version = None;
    loop {
        let read = client.read(Kind::Election, name, version.map(|v| (v, POLL_SLICE))).await;
        match read.with_context(|| format!("watching election {name}"))? {
            Read::Held(lease) if lease.holder != old => {
                return Ok(format!("{} {} {}", lease.holder, lease.address.as_deref().unwrap_or("-"), lease.token));
            }
            other => version = Some(other.version()),
        }
    }
}
