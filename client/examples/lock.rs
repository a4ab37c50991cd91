//! The seed's lock example, natively: take the lock `test`, hold it for a
//! while (renewed in the background), release it, and print the story.
//!
//! ```text
//! cargo run -p mpsync-client --example lock -- --id alice --hold 5s --ttl 2s
//! ```
//!
//! A contender that finds the lock held long-polls the elector and tries
//! again the moment the lock is released, instead of polling every 10 s as
//! the original did.

use std::time::{Duration, SystemTime};

use anyhow::bail;
use clap::Parser;
use mpsync_client::{Client, Kind, Lease, Options};

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

fn say(id: &str, text: impl std::fmt::Display) {
    let stamp = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    println!("{} [{id:<5}] {text}", &stamp[11..23]);
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let options = Options { ttl: args.ttl, holder: args.id.clone(), address: None };
    let lease = Lease::new(Client::new(&args.elector), Kind::Lock, &args.name, options)?;
    say(&args.id, "Attempting to lock");
    let granted = lease.acquire(Duration::MAX).await?;
    say(&args.id, format!("I have the lock! (fencing token {})", granted.token));
    say(&args.id, format!("Holding the lock for {}", humantime::format_duration(args.hold)));
    let mut deadlines = lease.deadlines();
    let hold = tokio::time::sleep(args.hold);
    tokio::pin!(hold);
    loop {
        tokio::select! {
            () = &mut hold => break,
            changed = deadlines.changed() => {
                if changed.is_err() || deadlines.borrow().is_none() {
                    say(&args.id, format!("I lost the lock! (token {})", granted.token));
                    bail!("lost the lock");
                }
                say(&args.id, format!("renewed in the background (token {})", granted.token));
            }
        }
    }
    lease.release().await?;
    say(&args.id, "Unlocked");
    Ok(())
}
