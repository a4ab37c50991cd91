//! The test app of the behaviour suite (`e2e/tests/behaviour.rs`), run the
//! same way against both providers: `--mode api` calls every function of
//! metaparticle:sync and checks the answers (`--mode shared`: those of
//! `shared-lock`); `unavailable`, `gone` and
//! `follow` report what the app sees when the elector is unreachable, goes
//! away mid-lease, or another candidate takes over; `transfer` follows a
//! leadership transfer asked of it (at once, or `--decide`); the other modes
//! misbehave on purpose (trap, hog memory or CPU, busy-loop while holding a
//! lock, keep working until the lease is lost). Prints `probe FAILED: …` and
//! exits 1 when an answer is not the documented one.

use std::time::Duration;

use sync_apps::election::{Election, ElectionOptions};
use sync_apps::lock::{Lock, LockOptions};
use sync_apps::shared::{SharedLock, SharedOptions};
use sync_apps::types::Error;
use sync_apps::{Flags, now, say, wait};

/// Milliseconds since the Unix epoch, on the wall clock (comparable with
/// the test's own clock, unlike the monotonic one).
fn wall_ms() -> u128 {
    let t = wasip2::clocks::wall_clock::now();
    u128::from(t.seconds) * 1000 + u128::from(t.nanoseconds / 1_000_000)
}

fn check(ok: bool, what: &str) {
    if !ok {
        say(format!("probe FAILED: {what}"));
        std::process::exit(1);
    }
}

fn opts(id: &str, ttl_ms: u64) -> LockOptions {
    LockOptions { ttl_ms: Some(ttl_ms), holder: Some(id.into()) }
}

fn api(prefix: &str) {
    let name = format!("{prefix}-lock");
    let a = Lock::new(&name, &opts("probe-a", 2000));
    check(a.lease().is_none(), "lease() before locking is none");
    let first = a.try_lock();
    check(matches!(first, Ok(ref l) if l.holder == "probe-a" && l.name == name), "try-lock acquires");
    let token = first.map(|l| l.token).unwrap_or_default();
    check(a.try_lock().is_ok_and(|l| l.token == token), "try-lock while holding returns the same lease");
    check(a.lease().is_some_and(|l| l.token == token && l.ttl_ms == 2000), "lease() while held");
    let b = Lock::new(&name, &opts("probe-b", 2000));
    check(matches!(b.try_lock(), Err(Error::HeldBy(ref h)) if h == "probe-a"), "try-lock by another is held-by");
    check(matches!(b.lock_within(50), Err(Error::Timeout)), "lock(timeout) times out while held");
    let changed = a.subscribe();
    check(!wait(&changed, Duration::ZERO), "subscribe() is not ready while nothing changed");
    drop(changed);
    let lost = a.subscribe();
    check(a.unlock().is_ok(), "unlock");
    check(wait(&lost, Duration::from_secs(5)), "subscribe() is ready after the lock is given up");
    drop(lost);
    check(matches!(a.unlock(), Err(Error::NotHeld)), "unlock twice is not-held");
    check(a.lease().is_none(), "lease() after unlock is none");
    let acquired = b.subscribe();
    let second = b.lock_within(2000);
    check(wait(&acquired, Duration::from_secs(5)), "subscribe() is ready after the lock is acquired");
    drop(acquired);
    check(second.as_ref().is_ok_and(|l| l.token > token), "the next holder gets a higher token");
    let changed = b.subscribe();
    drop(changed);
    drop(b);
    check(a.try_lock().is_ok(), "a dropped lock is released");
    check(a.unlock().is_ok(), "unlock again");

    let bad = Lock::new("Bad_Name", &opts("probe-a", 2000));
    match bad.try_lock() {
        Err(Error::InvalidName(reason)) => say(format!("invalid name: {reason}")),
        other => check(false, &format!("an invalid name is invalid-name, got {other:?}")),
    }
    let bad_ttl = Lock::new(&name, &opts("probe-a", 1));
    check(matches!(bad_ttl.try_lock(), Err(Error::InvalidOption(_))), "a 1 ms ttl is invalid-option");

    let ename = format!("{prefix}-election");
    let eo = |id: &str, addr: &str| ElectionOptions {
        ttl_ms: Some(2000),
        candidate: Some(id.into()),
        address: Some(addr.into()),
    };
    let x = Election::new(&ename, &eo("cand-x", "127.0.0.1:9001"));
    let y = Election::new(&ename, &eo("cand-y", "127.0.0.1:9002"));
    check(!x.is_leader() && x.leader().is_none(), "no leader before any campaign");
    check(x.transfer_requested().is_none(), "transfer-requested() before any campaign is none");
    let won = x.campaign(2000);
    check(
        matches!(won, Ok(ref l) if l.id == "cand-x" && l.address.as_deref() == Some("127.0.0.1:9001")),
        "campaign wins",
    );
    check(x.is_leader(), "is-leader after winning");
    check(x.transfer_requested().is_none(), "transfer-requested() while nothing is asked is none");
    check(matches!(y.campaign(50), Err(Error::Timeout)), "a second candidate times out");
    check(y.leader().is_some_and(|l| l.id == "cand-x"), "the other candidate sees the leader");
    let change = y.subscribe();
    check(x.resign().is_ok(), "resign");
    check(wait(&change, Duration::from_secs(5)), "subscribe() is ready after the leader resigns");
    drop(change);
    check(matches!(x.resign(), Err(Error::NotHeld)), "resign twice is not-held");
    check(y.campaign(2000).is_ok_and(|l| l.id == "cand-y"), "the next candidate leads at once");
    // x learns of the new leader through its watch: wait for the change.
    let until = now() + Duration::from_secs(5);
    while x.leader().is_none_or(|l| l.id != "cand-y") && now() < until {
        let change = x.subscribe();
        wait(&change, Duration::from_millis(100));
    }
    check(x.leader().is_some_and(|l| l.id == "cand-y"), "the new leader is seen");
    check(y.resign().is_ok(), "resign the second leader");
    say("probe api ok");
}

fn shared_opts(id: &str, permits: Option<u32>) -> SharedOptions {
    SharedOptions { ttl_ms: Some(2000), holder: Some(id.into()), permits }
}

/// Semaphores and read-write locks (`shared-lock`, new in 0.1.1): permits,
/// tokens, waiting in line, a writer (`lock`) beside readers.
fn shared(prefix: &str) {
    let name = format!("{prefix}-pool");
    let a = SharedLock::new(&name, &shared_opts("sem-a", Some(2)));
    let b = SharedLock::new(&name, &shared_opts("sem-b", Some(2)));
    let c = SharedLock::new(&name, &shared_opts("sem-c", Some(2)));
    check(a.permit().is_none(), "permit() before holding is none");
    let first = a.try_lock();
    check(first.as_ref().is_ok_and(|l| l.holder == "sem-a"), "a shared try-lock acquires");
    let second = b.try_lock();
    check(
        second.as_ref().is_ok_and(|l| l.token > first.as_ref().map_or(0, |f| f.token)),
        "each holder its own, larger token",
    );
    let mut permits = [a.permit(), b.permit()];
    permits.sort();
    check(permits == [Some(0), Some(1)], "two holders, permits 0 and 1");
    check(matches!(c.try_lock(), Err(Error::HeldBy(_))), "a third is held-by while both permits are held");
    check(matches!(c.lock_within(50), Err(Error::Timeout)), "and times out waiting");
    let other = SharedLock::new(&name, &shared_opts("sem-x", Some(3)));
    check(matches!(other.try_lock(), Err(Error::InvalidOption(_))), "another number of permits is invalid-option");
    check(matches!(other.lock_within(2000), Err(Error::InvalidOption(_))), "at once: waiting cannot help");
    let writer = Lock::new(&name, &opts("sem-w", 2000));
    check(matches!(writer.try_lock(), Err(Error::HeldBy(_))), "the exclusive lock is held-by beside shared holders");
    let freed = a.permit();
    let acquired = c.subscribe();
    check(a.unlock().is_ok(), "a shared holder unlocks");
    check(a.lease().is_none() && a.permit().is_none(), "lease() and permit() after unlock are none");
    let third = c.lock_within(2000);
    check(third.is_ok() && c.permit() == freed, "the waiter gets the permit given back");
    check(wait(&acquired, Duration::from_secs(5)), "subscribe() is ready after the shared hold is acquired");
    drop(acquired);
    check(third.as_ref().is_ok_and(|l| l.token > second.as_ref().map_or(0, |s| s.token)), "tokens only grow per name");
    check(b.unlock().is_ok() && c.unlock().is_ok(), "both unlock");
    check(writer.lock_within(2000).is_ok(), "the writer gets it once every shared holder left");
    let reader = SharedLock::new(&name, &shared_opts("reader", None));
    check(
        matches!(reader.try_lock(), Err(Error::HeldBy(ref h)) if h == "sem-w"),
        "a reader is held-by beside the writer",
    );
    check(writer.unlock().is_ok(), "the writer unlocks");
    let readers = [reader, SharedLock::new(&name, &shared_opts("reader-2", None))];
    check(readers.iter().all(|r| r.try_lock().is_ok() && r.permit().is_none()), "readers share, with no permit");
    let bad = SharedLock::new(&name, &shared_opts("zero", Some(0)));
    check(matches!(bad.try_lock(), Err(Error::InvalidOption(_))), "0 permits is invalid-option");
    say("probe shared ok");
}

/// Leadership transfer (new in 0.1.2): lead `name` as `id`, and follow a
/// transfer the test asks of it. By default the provider steps down at
/// once: print `stepped down`, then every leader seen until another one
/// leads. With `--decide` (`step-down-on-transfer(false)`) keep leading:
/// print the request, lead on across two TTLs of renewals, then resign on a
/// line from stdin.
fn transfer(name: &str, id: &str, ttl: u64, decide: bool) {
    let e = Election::new(name, &ElectionOptions { ttl_ms: Some(ttl), candidate: Some(id.into()), address: None });
    if decide {
        e.step_down_on_transfer(false);
    }
    let token = e.campaign(5_000).map(|l| l.token).unwrap_or_else(|e| {
        check(false, &format!("campaign: {e:?}"));
        unreachable!()
    });
    say(format!("I am the leader (fencing token {token})"));
    // Subscribe first, then look, then wait: a request or a step-down
    // between the look and the wait is still a wake-up.
    let asked = loop {
        let changed = e.subscribe();
        let (leading, asked) = (e.is_leader(), e.transfer_requested());
        match (decide, leading, asked) {
            (false, false, asked) => {
                check(asked.is_none(), "transfer-requested() after stepping down is none");
                say("stepped down");
                break None;
            }
            (true, false, _) => check(false, "a leader that decides lost the lead before it resigned"),
            (_, true, Some(asked)) if decide => break Some(asked),
            _ => {}
        }
        wait(&changed, Duration::from_secs(60));
    };
    if let Some(asked) = asked {
        say(format!("transfer asked: to {}", asked.to.as_deref().unwrap_or("anyone")));
        // Lead on across renewals (subscribe wakes for them), the request
        // shown all along.
        let until = now() + Duration::from_millis(2 * ttl);
        while now() < until {
            let changed = e.subscribe();
            check(e.is_leader(), "a leader that decides keeps leading until it resigns");
            check(e.transfer_requested().is_some_and(|a| a.to == asked.to), "the request stays shown until resigning");
            wait(&changed, until.saturating_sub(now()));
        }
        say(format!("still leading after two TTLs (fencing token {token})"));
        let mut cue = String::new();
        let _ = std::io::stdin().read_line(&mut cue);
        check(e.resign().is_ok(), "resign after a transfer request");
        check(!e.is_leader() && e.transfer_requested().is_none(), "after resigning: not leader, nothing asked");
        say("resigned");
    }
    // Follow the hand-over through subscribe() until someone else leads.
    loop {
        let changed = e.subscribe();
        if let Some(leader) = e.leader().filter(|l| l.id != id) {
            say(format!("leader: {} (fencing token {})", leader.id, leader.token));
            return;
        }
        wait(&changed, Duration::from_secs(60));
    }
}

fn main() {
    let flags = Flags::parse();
    let mode = flags.str("mode", "api");
    let name = flags.str("name", "probe");
    let ttl = flags.ms("ttl-ms", 1000).as_millis() as u64;
    match mode.as_str() {
        "api" => api(&name),
        "shared" => shared(&name),
        "backoff" => {
            // Hold one lock while a blocking call on another backs off
            // (its long-polls refused): the first lock must be renewed
            // all along, however long the backoff's pauses.
            let held = Lock::new(&format!("{name}-held"), &opts("probe", ttl));
            let token = held.try_lock().map(|l| l.token).unwrap_or_else(|e| {
                check(false, &format!("try-lock: {e:?}"));
                unreachable!()
            });
            let waiting = Lock::new(&format!("{name}-wanted"), &opts("probe", 60_000));
            let result = waiting.lock_within(flags.ms("wait-ms", 3 * ttl).as_millis() as u64);
            check(matches!(result, Err(Error::Timeout)), &format!("lock-within a held lock times out, got {result:?}"));
            match held.lease() {
                Some(l) if l.token == token => say(format!("still held after the backoff (fencing token {token})")),
                other => check(false, &format!("the other lock was lost while backing off: {other:?}")),
            }
        }
        "refused" => {
            // What only the elector's store can refuse: a name too long
            // for its object names, a TTL above its longest lease. Both
            // come back at once as the WIT error they are, from a single
            // attempt and from a blocking call alike (retrying cannot help).
            let lock = Lock::new(&name, &opts("probe", ttl));
            for (call, result) in [("try-lock", lock.try_lock()), ("lock-within", lock.lock_within(u64::MAX))] {
                match result {
                    Err(Error::InvalidName(reason)) => say(format!("{call}: invalid name: {reason}")),
                    Err(Error::InvalidOption(reason)) => say(format!("{call}: invalid option: {reason}")),
                    other => check(false, &format!("{call}: a refusal by the store, got {other:?}")),
                }
            }
        }
        "unavailable" => {
            let lock = Lock::new(&name, &opts("probe", ttl));
            match lock.try_lock() {
                Err(Error::Unavailable(reason)) => say(format!("unavailable: {reason}")),
                other => check(false, &format!("an unreachable elector is unavailable, got {other:?}")),
            }
            // A blocking call reports it too, after retrying for one TTL,
            // however long it was willing to wait.
            let start = now();
            match lock.lock_within(u64::MAX) {
                Err(Error::Unavailable(_)) => {
                    say(format!("lock-within: unavailable after {} ms", (now() - start).as_millis()))
                }
                other => check(false, &format!("lock-within on an unreachable elector, got {other:?}")),
            }
        }
        "trap" | "busy" | "work" => {
            let lock = Lock::new(&name, &opts(&flags.str("id", "probe"), ttl));
            let lease = lock.lock_within(u64::MAX).unwrap_or_else(|e| {
                check(false, &format!("lock: {e:?}"));
                unreachable!()
            });
            say(format!("I have the lock! (fencing token {})", lease.token));
            match mode.as_str() {
                "trap" => panic!("trapping on purpose while holding the lock"),
                "busy" => {
                    // Compute without calling into metaparticle:sync.
                    let until = now() + flags.ms("busy-ms", 3 * ttl);
                    let mut x = 0u64;
                    while now() < until {
                        for i in 0..10_000u64 {
                            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
                        }
                    }
                    match lock.lease() {
                        Some(l) if l.token == lease.token => {
                            say(format!("still held after busy loop (fencing token {}, {x})", l.token))
                        }
                        other => say(format!("lost during busy loop: {other:?}")),
                    }
                }
                _ => loop {
                    // Act only while the lease is valid; report the loss first.
                    if lock.lease().is_none() {
                        say(format!("I lost the lock! (fencing token {})", lease.token));
                        return;
                    }
                    say(format!("working with fencing token {}", lease.token));
                    let changed = lock.subscribe();
                    wait(&changed, Duration::from_millis(50));
                },
            }
        }
        "gone" => {
            // Hold the lock and follow it through subscribe() alone until it
            // is lost; then print, on the wall clock, the last moment
            // lease() still answered and the first it did not.
            let lock = Lock::new(&name, &opts(&flags.str("id", "probe"), ttl));
            let lease = lock.lock_within(5_000).unwrap_or_else(|e| {
                check(false, &format!("lock: {e:?}"));
                unreachable!()
            });
            say(format!("I have the lock! (fencing token {})", lease.token));
            let mut last_held = wall_ms();
            loop {
                // Subscribe first, then look, then wait: no change falls
                // between the look and the wait.
                let changed = lock.subscribe();
                let at = wall_ms();
                match lock.lease() {
                    Some(_) => last_held = at,
                    None => {
                        say(format!("lost: last held at {last_held} ms, not held at {at} ms"));
                        return;
                    }
                }
                wait(&changed, Duration::from_secs(60));
            }
        }
        "unconfirmed" => {
            // Hold the lock, wait for a line on stdin (the test stops the
            // elector first), then unlock: the release cannot be confirmed,
            // and unlock must say so rather than report success.
            let lock = Lock::new(&name, &opts(&flags.str("id", "probe"), ttl));
            let lease = lock.lock_within(5_000).unwrap_or_else(|e| {
                check(false, &format!("lock: {e:?}"));
                unreachable!()
            });
            say(format!("I have the lock! (fencing token {})", lease.token));
            let mut cue = String::new();
            let _ = std::io::stdin().read_line(&mut cue);
            match lock.unlock() {
                Err(Error::Unavailable(reason)) => say(format!("unlock: unavailable: {reason}")),
                other => check(false, &format!("an unconfirmed unlock is unavailable, got {other:?}")),
            }
            check(lock.lease().is_none(), "after an unconfirmed unlock the lock is not held here");
            check(matches!(lock.unlock(), Err(Error::NotHeld)), "unlock again is not-held");
        }
        "transfer" => transfer(&name, &flags.str("id", "probe"), ttl, flags.has("decide")),
        "follow" => {
            // A candidate that does not campaign: print every leader it
            // sees through subscribe(), until `--until` leads.
            let until = flags.str("until", "");
            let e = Election::new(
                &name,
                &ElectionOptions { ttl_ms: Some(ttl), candidate: Some("follower".into()), address: None },
            );
            let mut seen = None;
            loop {
                // Subscribe first, then look: a change between the two is
                // then still a wake-up, never lost.
                let changed = e.subscribe();
                let leader = e.leader().map(|l| l.id);
                if leader != seen {
                    say(format!("leader: {}", leader.as_deref().unwrap_or("none")));
                    if leader.as_deref() == Some(until.as_str()) {
                        return;
                    }
                    seen = leader;
                }
                wait(&changed, Duration::from_secs(60));
            }
        }
        "memory" => {
            let mut hog: Vec<Vec<u8>> = Vec::new();
            loop {
                hog.push(vec![1u8; 16 << 20]);
                say(format!("allocated {} MiB", hog.len() * 16));
            }
        }
        "cpu" => {
            let mut x = 1u64;
            loop {
                x = x.wrapping_mul(3).wrapping_add(1);
                if x == 0 {
                    say("never");
                }
            }
        }
        "noop" => {}
        "io" => {
            // What `mpsync run` hands a guest: arguments, environment, files.
            say(format!("args: {:?}", std::env::args().collect::<Vec<_>>()));
            say(format!("env GREETING={}", std::env::var("GREETING").unwrap_or_default()));
            let path = flags.str("path", "/data/hello.txt");
            match std::fs::read_to_string(&path) {
                Ok(text) => say(format!("read {path}: {}", text.trim())),
                Err(e) => check(false, &format!("reading {path}: {e}")),
            }
            let out = flags.str("write", "/data/out.txt");
            check(std::fs::write(&out, "written by the guest").is_ok(), "writing into the preopened dir");
        }
        "bench" => {
            // Guest->host call cost: is-leader (a metaparticle:sync import)
            // next to monotonic-clock.resolution (a WASI import that does
            // nothing but return a constant), same loop, same run.
            let n: u32 = flags.get("iterations").and_then(|v| v.parse().ok()).unwrap_or(200_000);
            let e = Election::new(
                &name,
                &ElectionOptions { ttl_ms: Some(10_000), candidate: Some("bench".into()), address: None },
            );
            check(e.campaign(5_000).is_ok(), "bench campaign");
            let time = |f: &dyn Fn() -> bool| {
                let start = wasip2::clocks::monotonic_clock::now();
                let mut yes = 0u32;
                for _ in 0..n {
                    yes += u32::from(f());
                }
                (wasip2::clocks::monotonic_clock::now() - start, yes)
            };
            let _ = time(&|| e.is_leader());
            let (leader_ns, yes) = time(&|| e.is_leader());
            check(yes == n, "is-leader stayed true");
            let (noop_ns, _) = time(&|| wasip2::clocks::monotonic_clock::resolution() > 0);
            say(format!("bench iterations={n} is_leader_ns={leader_ns} noop_ns={noop_ns}"));
            let _ = e.resign();
        }
        other => check(false, &format!("unknown mode {other}")),
    }
}
