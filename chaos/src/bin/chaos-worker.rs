//! `chaos-worker`: the command a contender runs under `mpsync lock` (or `mpsync elect`).
//!
//! It reports its critical section to the fencing-aware resource: enter,
//! `CHAOS_WRITES` writes `CHAOS_GAP_MS` apart, exit, each with the token
//! `mpsync lock` gave it, and how it holds the lock: a permit
//! (`MPSYNC_LOCK_PERMIT`, of `CHAOS_PERMITS`), a reader (`CHAOS_SHARED=1`),
//! or the one holder. It checks nothing itself (no deadline, no answer):
//! the worst-behaved command, so that only `mpsync lock` keeps it inside its
//! lease. A refused write is reported on stderr and the worker goes on.
//!
//! With `CHAOS_LINGER=1`, a SIGTERM does not stop it either: it goes on
//! writing, every 10 ms, until the SIGKILL that `mpsync lock` sends a
//! grace later (a command that takes its time to wind down, which the
//! grace allows: the grace ends inside the lease's margin).
//!
//! Under `mpsync elect` (`MPSYNC_ELECT_LEADER_FILE` set) it is a leader's
//! server instead: it reads the leader file every [`LEADER_POLL`] and,
//! while the file says it leads with a deadline not past, reports a term
//! as a section with the file's token (enter, then a write every
//! `CHAOS_GAP_MS`, each only after the file was read again). When the file
//! says another token or not leading (a transfer made it step down, the
//! lease was lost), it reports the section `lost` and waits to lead again;
//! after `CHAOS_WRITES` writes in one term it reports its exit and ends,
//! and `mpsync elect` resigns once it is gone.
//!
//! `chaos-worker --clock-probe` instead answers each line on stdin with the
//! seconds its `Instant` says have passed since it started: how the clock
//! fault checks that libfaketime really skews a Rust process's clock.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often a lingering worker writes after a SIGTERM.
const LINGER_GAP: Duration = Duration::from_millis(10);

/// A lingering worker that was never SIGKILLed stops after this long.
const LINGER_AT_MOST: Duration = Duration::from_secs(5);

fn var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("chaos-worker: {name} is not set"))
}

/// One `POST /STEP?lock=..&client=..&token=..` and the hold (`&shared=..`
/// or `&permit=..&permits=..`); the status code.
fn report(fence: &str, step: &str, lock: &str, client: &str, token: &str, hold: &str) -> Result<u16, String> {
    let mut stream = TcpStream::connect(fence).map_err(|e| format!("connecting to {fence}: {e}"))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!(
        "POST /{step}?lock={lock}&client={client}&token={token}{hold} HTTP/1.1\r\nHost: {fence}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad answer: {text:?}"))
}

/// How often an election's server reads its leader file.
const LEADER_POLL: Duration = Duration::from_millis(2);

/// What the leader file says now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leads {
    /// Leading with this token, its deadline not past.
    Now(u64),
    /// The file still names this token, but its deadline passed (mpsync is
    /// frozen, or about to say the lease is lost).
    Lapsed(u64),
    /// Not leading (or the file cannot be read).
    No,
}

/// Reads the leader file `mpsync elect --leader-file` keeps.
fn leads(file: &str) -> Leads {
    let Ok(text) = std::fs::read_to_string(file) else { return Leads::No };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else { return Leads::No };
    let (Some(true), Some(token)) = (json["leader"].as_bool(), json["token"].as_u64()) else { return Leads::No };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    if json["valid_until_ms"].as_u64().is_some_and(|until| now_ms < until) {
        Leads::Now(token)
    } else {
        Leads::Lapsed(token)
    }
}

/// An election's server under `mpsync elect`: terms as sections (see the
/// crate's documentation), until one term has made `writes` writes.
fn serve_election(fence: &str, client: &str, file: &str, writes: u32, gap: Duration) -> Result<(), String> {
    let name = var("MPSYNC_ELECT_NAME")?;
    let step = |step: &str, token: u64| report(fence, step, &name, client, &token.to_string(), "");
    // The term this server reported entering, and the writes left in it.
    let mut term: Option<u64> = None;
    let mut left = writes;
    let mut next_write = Instant::now();
    loop {
        match (term, leads(file)) {
            (None, Leads::Now(token)) => {
                step("enter", token)?;
                (term, left, next_write) = (Some(token), writes, Instant::now() + gap);
            }
            (Some(t), Leads::Now(token)) if t == token => {
                if Instant::now() >= next_write {
                    // Read just now: the write goes out as the leader.
                    if step("write", t)? != 200 {
                        eprintln!("chaos-worker: {client}'s write with token {t} was refused");
                    }
                    left -= 1;
                    if left == 0 {
                        // Its own choice: reported before it resigns.
                        step("exit", t)?;
                        return Ok(());
                    }
                    next_write = Instant::now() + gap;
                }
            }
            // Past the deadline: no write until the file says more.
            (Some(t), Leads::Lapsed(token)) if t == token => {}
            (Some(t), _) => {
                // Taken away, not given up: its last write ended it.
                step("lost", t)?;
                term = None;
                continue;
            }
            (None, _) => {}
        }
        std::thread::sleep(LEADER_POLL);
    }
}

/// Answers each line on stdin with the seconds since start on `Instant`.
fn clock_probe() -> ExitCode {
    let start = Instant::now();
    let mut out = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        if line.is_err() || writeln!(out, "{}", start.elapsed().as_secs_f64()).and_then(|()| out.flush()).is_err() {
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

/// Catches SIGTERM from now on (a thread of its own waits for it): the
/// flag turns true when one came.
fn catch_sigterm() -> Result<Arc<AtomicBool>, String> {
    let termed = Arc::new(AtomicBool::new(false));
    let (ready, installed) = std::sync::mpsc::channel();
    let flag = termed.clone();
    std::thread::spawn(move || {
        let waited = tokio::runtime::Builder::new_current_thread().enable_all().build().map(|rt| {
            rt.block_on(async {
                use tokio::signal::unix::{SignalKind, signal};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        let _ = ready.send(Ok(()));
                        term.recv().await;
                        flag.store(true, Ordering::SeqCst);
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e.to_string()));
                    }
                }
            })
        });
        if let Err(e) = waited {
            eprintln!("chaos-worker: {e}");
        }
    });
    installed.recv().map_err(|_| "the SIGTERM thread ended".to_owned())??;
    Ok(termed)
}

/// Sleeps `gap`, or less if a SIGTERM comes meanwhile.
fn pause(gap: Duration, termed: Option<&AtomicBool>) {
    let until = Instant::now() + gap;
    while let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        if termed.is_some_and(|t| t.load(Ordering::SeqCst)) {
            return;
        }
        std::thread::sleep(left.min(LINGER_GAP / 2));
    }
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--clock-probe") {
        return clock_probe();
    }
    let run = || -> Result<(), String> {
        let fence = var("CHAOS_FENCE")?;
        let client = var("CHAOS_CLIENT")?;
        let writes: u32 = var("CHAOS_WRITES").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
        let gap = Duration::from_millis(var("CHAOS_GAP_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(5));
        if let Ok(file) = var("MPSYNC_ELECT_LEADER_FILE") {
            return serve_election(&fence, &client, &file, writes.max(1), gap);
        }
        let lock = var("MPSYNC_LOCK_NAME")?;
        let token = var("MPSYNC_LOCK_TOKEN")?;
        // The query chaos::hold::Hold::query writes.
        let hold = match (var("MPSYNC_LOCK_PERMIT"), var("CHAOS_SHARED").as_deref()) {
            (Ok(permit), _) => format!("&permit={permit}&permits={}", var("CHAOS_PERMITS")?),
            (Err(_), Ok("1")) => "&shared=true".to_owned(),
            (Err(_), _) => String::new(),
        };
        let termed = match var("CHAOS_LINGER").as_deref() {
            Ok("1") => Some(catch_sigterm()?),
            _ => None,
        };
        let write = || -> Result<(), String> {
            if report(&fence, "write", &lock, &client, &token, &hold)? != 200 {
                eprintln!("chaos-worker: {client}'s write with token {token} was refused");
            }
            Ok(())
        };
        report(&fence, "enter", &lock, &client, &token, &hold)?;
        let mut left = writes;
        while left > 0 {
            // The work a critical section does between writes.
            pause(gap, termed.as_deref());
            if termed.as_ref().is_some_and(|t| t.load(Ordering::SeqCst)) {
                // Told to stop: wind down, writing, until killed.
                let since = Instant::now();
                while since.elapsed() < LINGER_AT_MOST {
                    write()?;
                    std::thread::sleep(LINGER_GAP);
                }
                break;
            }
            write()?;
            left -= 1;
        }
        report(&fence, "exit", &lock, &client, &token, &hold)?;
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chaos-worker: {e}");
            ExitCode::from(1)
        }
    }
}
