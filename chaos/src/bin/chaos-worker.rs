//! `chaos-worker`: the command a contender runs under `mpsync lock`.
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
        let lock = var("MPSYNC_LOCK_NAME")?;
        let token = var("MPSYNC_LOCK_TOKEN")?;
        // The query chaos::hold::Hold::query writes.
        let hold = match (var("MPSYNC_LOCK_PERMIT"), var("CHAOS_SHARED").as_deref()) {
            (Ok(permit), _) => format!("&permit={permit}&permits={}", var("CHAOS_PERMITS")?),
            (Err(_), Ok("1")) => "&shared=true".to_owned(),
            (Err(_), _) => String::new(),
        };
        let writes: u32 = var("CHAOS_WRITES").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
        let gap = Duration::from_millis(var("CHAOS_GAP_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(5));
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
