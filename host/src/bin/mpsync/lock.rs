//! `mpsync lock`: holds a lock while a command runs under the watchdog.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow};
use mpsync::watchdog::{Launch, Watchdog};
use mpsync_client::{Client, Lease, Options};
use mpsync_core::wire::Kind;

/// The grace between SIGTERM and SIGKILL: `--grace`, at most a tenth of the
/// TTL, by default that tenth capped at 1 s.
pub fn check_grace(grace: Option<Duration>, ttl: Duration) -> anyhow::Result<Duration> {
    let most = ttl / 10;
    match grace {
        None => Ok(most.min(Duration::from_secs(1))),
        Some(g) if g <= most => Ok(g),
        Some(g) => Err(anyhow!(
            "--grace {} is longer than a tenth of --ttl {} ({}): the command could still run when another \
             holder gets the lock; shorten --grace or lengthen --ttl",
            humantime::format_duration(g),
            humantime::format_duration(ttl),
            humantime::format_duration(most)
        )),
    }
}

/// Acquires `name`, runs `command` under the watchdog while the lease holds,
/// and returns the exit code the `lock --help` text documents.
pub async fn lock_command(
    client: Client,
    name: &str,
    options: Options,
    share: Option<Option<u32>>,
    timeout: Option<Duration>,
    grace: Duration,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("finding the mpsync executable to run the watchdog")?;
    let mut lease = Lease::new(client, Kind::Lock, name, options).map_err(|e| anyhow!("{e}"))?;
    if let Some(permits) = share {
        lease = lease.hold_shared(permits).map_err(|e| anyhow!("{e}"))?;
    }
    let wait = timeout.unwrap_or(Duration::from_secs(100 * 365 * 24 * 3600));
    let granted = match lease.acquire(wait).await {
        Ok(g) => g,
        Err(mpsync_client::Error::Timeout) => {
            eprintln!("mpsync: lock {name} not acquired within {}", humantime::format_duration(wait));
            return Ok(ExitCode::from(4));
        }
        Err(e) => return Err(anyhow!("lock {name}: {e}")),
    };
    let permit = lease.permit();
    match (share, permit) {
        (None, _) => eprintln!("mpsync: holding lock {name} (fencing token {})", granted.token),
        (Some(_), Some(p)) => eprintln!("mpsync: holding permit {p} of {name} (fencing token {})", granted.token),
        (Some(_), None) => eprintln!("mpsync: holding lock {name} shared (fencing token {})", granted.token),
    }
    // The session may have ended since the grant (the elector restarted):
    // then the lock is lost already, and the command must not start.
    if lease.held().is_none() {
        eprintln!("mpsync: lost lock {name} before the command started");
        return Ok(ExitCode::from(3));
    }
    // Before the command starts: from its first line on, a SIGTERM is a
    // request to stop it and release, never the end of mpsync alone.
    let mut stop = crate::signal::stop_on_signal()?;
    let mut deadlines = lease.deadlines();
    // The watchdog keeps the session open until the command's group is
    // gone, even if mpsync is killed first.
    let session = lease.elector_session();
    let (mut watchdog, mut exit) = Watchdog::start(Launch {
        exe: &exe,
        command,
        env: [("MPSYNC_LOCK_TOKEN".into(), granted.token.to_string()), ("MPSYNC_LOCK_NAME".into(), name.into())]
            .into_iter()
            .chain(permit.map(|p| ("MPSYNC_LOCK_PERMIT".into(), p.to_string())))
            .collect(),
        grace,
        deadline: granted.valid_until,
        session: session.as_ref().map(|s| s.socket()),
    })
    .await
    .with_context(|| format!("starting {}", command[0]))?;
    let mut changes = lease.changes();
    // Why the command is being stopped, once it is.
    let mut stopping: Option<ExitCode> = None;
    loop {
        let held = lease.held();
        let lost = async {
            match held {
                // The state machine reports the loss at the deadline; look
                // again then, or when anything changes.
                Some(h) => tokio::time::sleep_until(h.valid_until.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            status = &mut exit => {
                let status = status.context("waiting for the watchdog")??;
                if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
                    // The watchdog itself was killed: the command died with
                    // it (its parent-death signal), but what it left in its
                    // group may run on, unwaited for. No release: the lock
                    // goes when the last process holding its session is
                    // gone, or at its TTL.
                    eprintln!(
                        "mpsync: the watchdog was killed (signal {signal}); lock {name} is not released: it goes \
                         when the last of the command's processes is gone, or at its TTL"
                    );
                    return Ok(ExitCode::from(3));
                }
                let held = lease.held().is_some();
                if held {
                    let _ = lease.release().await;
                }
                if let Some(code) = stopping {
                    return Ok(code);
                }
                if !held {
                    // Lost while the command ran (the watchdog stopped it at
                    // the deadline while mpsync itself was frozen, say).
                    // Same words as below: which of the two sees it first
                    // is a race.
                    eprintln!("mpsync: lost lock {name}; stopping the command");
                    return Ok(ExitCode::from(3));
                }
                return Ok(ExitCode::from(status.code().unwrap_or(128).clamp(0, 255) as u8));
            }
            changed = deadlines.changed(), if stopping.is_none() => {
                if changed.is_ok() && let Some(deadline) = *deadlines.borrow_and_update() {
                    // A watchdog that is gone has stopped the command; its
                    // exit is handled above.
                    let _ = watchdog.set_deadline(deadline).await;
                }
            }
            _ = changes.changed(), if stopping.is_none() => {}
            () = lost, if stopping.is_none() => {}
            _ = stop.wait_for(|stop| *stop), if stopping.is_none() => {
                stopping = Some(ExitCode::from(143));
                let _ = watchdog.stop().await;
            }
        }
        if stopping.is_none() && lease.held().is_none() {
            eprintln!("mpsync: lost lock {name}; stopping the command");
            stopping = Some(ExitCode::from(3));
            let _ = watchdog.stop().await;
        }
    }
}
