//! The chaos checker's wasm contender (`make chaos`): takes locks in a loop
//! and reports each critical section to the fencing-aware resource, as a
//! careful app does: it checks `lease()` right before every write and stops
//! writing once the lease is gone. With `--careless` it never checks: only
//! the resource's fencing then stands between its late writes and the data.
//!
//! Flags: `--fence http://HOST:PORT`, `--client ID`, `--locks a,b`,
//! `--ttl-ms 1000`, `--seed N`, `--rounds N` (0: forever), `--careless`.

use std::time::Duration;

use sync_apps::lock::{Lock, LockOptions};
use sync_apps::{Flags, post, sleep};

fn main() {
    let flags = Flags::parse();
    let fence = flags.str("fence", "http://127.0.0.1:8080");
    let client = flags.str("client", "wasm");
    let ttl_ms = flags.get("ttl-ms").and_then(|v| v.parse::<u64>().ok()).unwrap_or(1000);
    let rounds = flags.get("rounds").and_then(|v| v.parse::<u64>().ok()).unwrap_or(1);
    let careless = flags.has("careless");
    let mut seed = flags.get("seed").and_then(|v| v.parse::<u64>().ok()).unwrap_or(1) | 1;
    let mut next = move |n: u64| {
        // xorshift64: enough to vary the lock, the writes and the gaps.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n.max(1)
    };
    let options = LockOptions { ttl_ms: Some(ttl_ms), holder: Some(client.clone()) };
    let names: Vec<String> = flags.str("locks", "chaos-0").split(',').map(str::to_owned).collect();
    let locks: Vec<Lock> = names.iter().map(|n| Lock::new(n, &options)).collect();
    let mut round = 0;
    while rounds == 0 || round < rounds {
        round += 1;
        let i = next(locks.len() as u64) as usize;
        let (lock, name) = (&locks[i], &names[i]);
        let Ok(lease) = lock.lock_within(10_000) else { continue };
        let report = |step: &str| post(&fence, &format!("/{step}?lock={name}&client={client}&token={}", lease.token));
        if report("enter").is_err() {
            let _ = lock.unlock();
            continue;
        }
        let writes = 1 + next(4);
        let mut kept = true;
        for _ in 0..writes {
            // A careless one dawdles, so that faults catch it inside.
            let most = if careless { ttl_ms / 2 } else { ttl_ms / 10 };
            sleep(Duration::from_millis(1 + next(most + 1)));
            if !careless && lock.lease().is_none() {
                kept = false;
                break;
            }
            let _ = report("write");
        }
        if kept && (careless || lock.lease().is_some()) {
            let _ = report("exit");
            let _ = lock.unlock();
        }
    }
}
