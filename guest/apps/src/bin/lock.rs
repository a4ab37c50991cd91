//! The seed's lock example: take the lock `test`, hold it for 45 s, unlock.
//!
//! Flags (or the same names in the environment, e.g. `HOLD_MS`):
//! `--name test`, `--id ID`, `--ttl-ms 10000`, `--hold-ms 45000`,
//! `--rounds 1` (lock, hold, unlock this many times; 0: forever, as a
//! long-running Deployment does).
//! While holding it waits on the lock's pollable and a timer, and reports
//! the moment the lease is lost.

use sync_apps::lock::{Lock, LockOptions};
use sync_apps::{Flags, now, say, wait};

fn main() {
    let flags = Flags::parse();
    let name = flags.str("name", "test");
    let hold = flags.ms("hold-ms", 45_000);
    let options = LockOptions { ttl_ms: flags.get("ttl-ms").and_then(|v| v.parse().ok()), holder: flags.get("id") };
    let rounds = flags.get("rounds").and_then(|v| v.parse::<u64>().ok()).unwrap_or(1);
    let lock = Lock::new(&name, &options);
    let mut round = 0;
    while rounds == 0 || round < rounds {
        hold_once(&lock, hold);
        round += 1;
    }
}

/// Locks, holds for `hold` (reporting a loss), unlocks.
fn hold_once(lock: &Lock, hold: std::time::Duration) {
    say("Attempting to lock");
    let lease = match lock.lock_within(u64::MAX) {
        Ok(lease) => lease,
        Err(e) => {
            say(format!("Could not lock: {e:?}"));
            std::process::exit(2);
        }
    };
    say(format!("I have the lock! (fencing token {})", lease.token));
    say(format!("Holding the lock for {} seconds", hold.as_secs_f64()));
    let until = now() + hold;
    while now() < until {
        // Subscribe, then look, then wait: a loss between the look and the
        // wait still wakes us.
        let changed = lock.subscribe();
        if lock.lease().is_none() {
            say(format!("I lost the lock! (fencing token {})", lease.token));
            std::process::exit(1);
        }
        wait(&changed, until.saturating_sub(now()));
    }
    match lock.unlock() {
        Ok(()) => say("Unlocked"),
        Err(e) => say(format!("Unlock failed: {e:?}")),
    }
}
