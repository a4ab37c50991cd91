//! The seed's election example: stand in the election `test`; say so when
//! leading and when no longer leading.
//!
//! Flags (or environment): `--name test`, `--id ID`, `--address IP:PORT`,
//! `--ttl-ms 10000`, `--resign-after-ms N` (lead for N ms, resign, exit).

use sync_apps::election::{Election, ElectionOptions};
use sync_apps::{Flags, now, say, wait};

fn main() {
    let flags = Flags::parse();
    let name = flags.str("name", "test");
    let options = ElectionOptions {
        ttl_ms: flags.get("ttl-ms").and_then(|v| v.parse().ok()),
        candidate: flags.get("id"),
        address: flags.get("address"),
    };
    let resign_after = flags.get("resign-after-ms").and_then(|v| v.parse::<u64>().ok());
    let election = Election::new(&name, &options);
    loop {
        let leader = match election.campaign(u64::MAX) {
            Ok(leader) => leader,
            Err(e) => {
                say(format!("Campaign failed: {e:?}"));
                std::process::exit(2);
            }
        };
        say(format!("I am the leader (fencing token {})", leader.token));
        let resign_at = resign_after.map(|ms| now() + std::time::Duration::from_millis(ms));
        loop {
            // Subscribe, then look, then wait: a loss between the look and
            // the wait still wakes us.
            let changed = election.subscribe();
            if !election.is_leader() {
                break;
            }
            let timeout = resign_at.map_or(std::time::Duration::from_secs(3600), |at| at.saturating_sub(now()));
            wait(&changed, timeout);
            drop(changed);
            if resign_at.is_some_and(|at| now() >= at) && election.is_leader() {
                match election.resign() {
                    Ok(()) => say("I resigned"),
                    Err(e) => say(format!("Resign failed: {e:?}")),
                }
                return;
            }
        }
        say("I lost the leader");
    }
}
