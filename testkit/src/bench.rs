//! Small helpers the benchmarks share, and their one sampler of a
//! process's resources ([`rss_kib`], [`cpu_time`]) and of the elector's
//! own figures ([`metric`], from `/metrics`).

use std::time::Duration;

/// The environment variable `name` as a number, else `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The `p` quantile (0.0 to 1.0) of `sorted` samples; zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let last = sorted.len() - 1;
    // Rounded to the nearest sample; the cast is exact for any real count.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let index = ((last as f64) * p.clamp(0.0, 1.0)).round() as usize;
    sorted[index.min(last)]
}

/// A duration in milliseconds with three decimals: `1.234 ms`.
pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// Resident memory of process `pid` in KiB (`VmRSS`), from /proc.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for process {pid}"))
}

/// Kibibytes in mebibytes, for printing.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// CPU time process `pid` has used so far (user and system), from
/// /proc/PID/stat.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (in parentheses, and it may hold
    // spaces): utime is the 12th, stime the 13th, in clock ticks.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let (Some(user), Some(system)) = (ticks(11), ticks(12)) else { panic!("no CPU times for process {pid}") };
    Duration::from_millis((user + system) * 1000 / CLOCK_TICKS_PER_SECOND)
}

/// `USER_HZ`: 100 on every Linux architecture the project builds for.
const CLOCK_TICKS_PER_SECOND: u64 = 100;

/// The value of the series `series` (its name and labels as printed, e.g.
/// `mpsync_watchers` or `mpsync_state_entries{map="judge"}`) in the
/// Prometheus text `text`; `None` if it is not there.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}
