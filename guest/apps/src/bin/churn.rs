//! Opens and drops many lock and election handles, round after round, each
//! round on names never used before: what a long-running app that works on
//! ever-new shards does. The host must forget every handle the guest drops
//! (`e2e/tests/handles.rs` and the `handles` benchmark read its counts).
//!
//! Each round opens `--handles N` handles at once on the names
//! `NAME-ROUND-I`, a third of each sort: elections it campaigns in and
//! wins, elections it only follows (the host watches their leader), and
//! locks it takes. It subscribes to each, drops the handles (and all the
//! pollables but one, which must turn ready once its handle is gone), prints
//! `round R done` and, with `--cue`, waits for a line on stdin before going
//! on (the test looks at the host in between, the last round included).
//!
//! Flags: `--name churn --rounds 3 --handles 30 --ttl-ms 10000 --cue`.

use std::time::Duration;

use sync_apps::election::{Election, ElectionOptions};
use sync_apps::lock::{Lock, LockOptions};
use sync_apps::{Flags, say, wait};

/// A handle of either sort, kept until the end of its round.
enum Handle {
    Election(Election),
    Lock(Lock),
}

fn fail(what: String) -> ! {
    say(format!("churn FAILED: {what}"));
    std::process::exit(1);
}

fn main() {
    let flags = Flags::parse();
    let prefix = flags.str("name", "churn");
    let rounds: u32 = flags.get("rounds").and_then(|v| v.parse().ok()).unwrap_or(3);
    let handles: u32 = flags.get("handles").and_then(|v| v.parse().ok()).unwrap_or(30);
    let ttl_ms = Some(flags.ms("ttl-ms", 10_000).as_millis() as u64);
    let cue = flags.has("cue");
    for round in 0..rounds {
        let mut open = Vec::new();
        for i in 0..handles {
            let name = format!("{prefix}-{round}-{i}");
            let id = Some(format!("churn-{i}"));
            let handle = match i % 3 {
                0 => {
                    let e = Election::new(&name, &ElectionOptions { ttl_ms, candidate: id, address: None });
                    if let Err(e) = e.campaign(5_000) {
                        fail(format!("campaign in {name}: {e:?}"));
                    }
                    Handle::Election(e)
                }
                1 => Handle::Election(Election::new(&name, &ElectionOptions { ttl_ms, candidate: id, address: None })),
                _ => {
                    let lock = Lock::new(&name, &LockOptions { ttl_ms, holder: id });
                    if let Err(e) = lock.try_lock() {
                        fail(format!("lock {name}: {e:?}"));
                    }
                    Handle::Lock(lock)
                }
            };
            open.push(handle);
        }
        // A pollable per handle, each dropped at once but the last one's,
        // which outlives its handle: it must not keep the lease alive, and
        // it turns ready when the lease goes.
        let mut kept = None;
        for handle in &open {
            let changed = match handle {
                Handle::Election(e) => e.subscribe(),
                Handle::Lock(l) => l.subscribe(),
            };
            wait(&changed, Duration::ZERO);
            kept = Some(changed);
        }
        drop(open);
        if let Some(kept) = kept
            && !wait(&kept, Duration::from_secs(30))
        {
            fail("a pollable whose handle was dropped never turned ready".into());
        }
        say(format!("round {round} done"));
        if cue {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
        }
    }
}
