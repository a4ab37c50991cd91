//! The clock fault: a holder whose clocks run at another rate than
//! everyone else's, through Debian's libfaketime (`scripts/setup.sh`
//! installs the `faketime` package).
//!
//! libfaketime is preloaded (`LD_PRELOAD`) into `mpsync lock` and so into
//! every process it starts (its watchdog, the command), with
//! `FAKETIME="+0 xRATE"`: `clock_gettime` then answers for every clock,
//! `CLOCK_MONOTONIC` (Rust's `Instant`, tokio's timers) included, as if time
//! ran `RATE` times as fast since the process started, and sleeps are
//! stretched to match. [`Skew::measure`] checks that it really does, on a
//! Rust process, before a run relies on it.
//!
//! One thing it cannot fake faithfully: the faked `CLOCK_MONOTONIC` counts
//! from the wall clock's epoch, so a timed wait that hands the kernel an
//! absolute monotonic deadline (std's `recv_timeout`, as in `mpsync lock`'s
//! watchdog) waits until something else wakes it. Under libfaketime the
//! watchdog therefore stops the command only when `mpsync` tells it to, so
//! the run never freezes the skewed holder's `mpsync` (that would test
//! libfaketime, not us); it cuts the holder off from its elector instead
//! ([`FaultKind::HolderPartition`](crate::fault::FaultKind)), and only the
//! holder's own slow or fast clock then tells it when its lease is gone.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// Where Debian and others put the thread-safe library.
fn candidates() -> Vec<PathBuf> {
    let arch = std::env::consts::ARCH;
    [
        format!("/usr/lib/{arch}-linux-gnu/faketime/libfaketimeMT.so.1"),
        "/usr/lib/faketime/libfaketimeMT.so.1".to_owned(),
        "/usr/local/lib/faketime/libfaketimeMT.so.1".to_owned(),
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect()
}

/// How far the measured rate may be from the one asked for (the
/// measurement shares two cores with everything else).
const TOLERANCE: f64 = 0.1;

/// How long [`Skew::measure`] watches the clock: a measurement interval,
/// not a wait for an event.
const MEASURE_FOR: Duration = Duration::from_millis(500);

/// A clock rate, and the library that imposes it.
#[derive(Debug, Clone)]
pub struct Skew {
    rate: f64,
    library: PathBuf,
}

impl Skew {
    /// Clocks running `rate` times as fast as the real ones (0.5: half as
    /// fast). Fails when libfaketime is not installed.
    pub fn new(rate: f64) -> anyhow::Result<Skew> {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("a clock rate must be a positive number, not {rate}");
        }
        let library = candidates().into_iter().find(|p| p.is_file()).with_context(|| {
            format!(
                "libfaketime is missing (looked for {}): scripts/setup.sh installs Debian's faketime package",
                candidates().iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            )
        })?;
        Ok(Skew { rate, library })
    }

    /// The rate asked for.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Makes `command`, and every process it starts, see clocks at this
    /// rate.
    pub fn apply(&self, command: &mut Command) {
        command.env("LD_PRELOAD", &self.library).env("FAKETIME", format!("+0 x{}", self.rate));
    }

    /// Measures the rate a Rust process's `Instant` runs at under this
    /// skew (`chaos-worker --clock-probe`, started as [`apply`](Self::apply)
    /// would start a contender), against this process's own clock. Fails if
    /// it is not within 10% of the rate asked for.
    pub async fn measure(&self, worker: &Path) -> anyhow::Result<f64> {
        let mut command = Command::new(worker);
        command.arg("--clock-probe").stdin(Stdio::piped()).stdout(Stdio::piped()).kill_on_drop(true);
        self.apply(&mut command);
        let mut child = command.spawn().with_context(|| format!("starting {}", worker.display()))?;
        let mut stdin = child.stdin.take().context("no stdin")?;
        let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let mut read = async || -> anyhow::Result<(Instant, f64)> {
            let asked = Instant::now();
            stdin.write_all(b"\n").await?;
            let line = lines.next_line().await?.context("the clock probe exited")?;
            let answered = Instant::now();
            let theirs: f64 = line.trim().parse().with_context(|| format!("the clock probe said {line:?}"))?;
            // Their reading was taken somewhere between asking and answering.
            Ok((asked + (answered - asked) / 2, theirs))
        };
        let (t0, e0) = read().await?;
        tokio::time::sleep(MEASURE_FOR).await;
        let (t1, e1) = read().await?;
        let measured = (e1 - e0) / (t1 - t0).as_secs_f64();
        if (measured / self.rate - 1.0).abs() > TOLERANCE {
            bail!(
                "{} does not make a Rust process's clock run at x{} (measured x{measured:.3})",
                self.library.display(),
                self.rate
            );
        }
        Ok(measured)
    }
}
