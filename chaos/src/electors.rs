//! The electors of a run: real `elector` processes, killed and restarted on
//! the same address, with their output in a log file.
//!
//! Everything an elector prints (its stderr, where kube-client's ERROR
//! lines go while the Lease API is paused, and its stdout after the line
//! that gives its address) is appended to one file per run, beside the
//! history, so that the terminal shows the report alone. (`testkit`'s
//! `ElectorProcess` lets the child inherit stderr, which is what a test that
//! starts one elector wants; a chaos run starts and kills hundreds.)

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a starting elector may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A server restarted on its old port may find it taken for a while by an
/// outgoing connection's ephemeral port: try this often, this far apart.
pub const PORT_TRIES: u32 = 100;
/// See [`PORT_TRIES`].
pub const PORT_BACKOFF: Duration = Duration::from_millis(100);

/// How long a gracefully stopped elector may take to exit before it is
/// killed (it finishes requests in flight and ends its sessions).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How [`Electors::restart`] stops an elector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGKILL: nothing is ended cleanly.
    Kill,
    /// SIGTERM, then wait for it to exit: it ends its sessions itself
    /// (which releases nothing, unless the unsafe control is on).
    Graceful,
}

/// The running electors.
pub struct Electors {
    bin: PathBuf,
    args: Vec<String>,
    forget_state: bool,
    state_dir: PathBuf,
    log: PathBuf,
    running: Vec<(SocketAddr, Option<Child>)>,
    sessions: Sessions,
}

/// What the electors' `/metrics` said about sessions over the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionFigures {
    /// The most sessions open at once, over every elector, at a sample
    /// (one per fault).
    pub most_open: u64,
    /// Leases released because the holder's end of their session closed
    /// (`mpsync_session_releases_total`), summed over every elector's
    /// lives: a lower bound, since what a SIGKILLed elector counted after
    /// its last sample is lost.
    pub releases: u64,
}

/// The session figures so far: those of electors stopped since, and the
/// last sample of each running one.
#[derive(Debug, Default)]
struct Sessions {
    figures: SessionFigures,
    retired: u64,
    current: Vec<u64>,
}

impl Electors {
    /// Starts `count` electors with `args`, each with a state file of its
    /// own in `state_dir`, their output appended to `log`.
    pub async fn start(
        bin: PathBuf,
        args: Vec<String>,
        count: usize,
        state_dir: &Path,
        log: &Path,
        forget_state: bool,
    ) -> anyhow::Result<Self> {
        let mut electors = Electors {
            bin,
            args,
            forget_state,
            state_dir: state_dir.to_owned(),
            log: log.to_owned(),
            running: Vec::new(),
            sessions: Sessions { current: vec![0; count], ..Sessions::default() },
        };
        for i in 0..count {
            let (child, addr) = electors.spawn(i, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
            electors.running.push((addr, Some(child)));
        }
        Ok(electors)
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Their base URLs, `http://ADDR`.
    pub fn urls(&self) -> Vec<String> {
        self.running.iter().map(|(a, _)| format!("http://{a}")).collect()
    }

    /// Their addresses.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.running.iter().map(|(a, _)| *a).collect()
    }

    /// Stops elector `i` (`how`) and starts it again on the same address,
    /// where the contenders keep talking to it.
    pub async fn restart(&mut self, i: usize, how: Stop) -> anyhow::Result<()> {
        // Its counters die with it: read them first.
        self.sample_one(i).await;
        let (addr, process) = &mut self.running[i];
        let addr = *addr;
        if let Some(mut child) = process.take() {
            match (how, child.id()) {
                (Stop::Graceful, Some(pid)) => {
                    crate::procs::signal(pid, "TERM");
                    if tokio::time::timeout(STOP_TIMEOUT, child.wait()).await.is_err() {
                        bail!("elector {i} did not exit within {STOP_TIMEOUT:?} of a SIGTERM");
                    }
                }
                _ => {
                    child.start_kill()?;
                    child.wait().await?;
                }
            }
        }
        let sessions = &mut self.sessions;
        sessions.retired += std::mem::take(&mut sessions.current[i]);
        if self.forget_state {
            let _ = std::fs::remove_file(self.state_file(i));
        }
        let mut last = None;
        for _ in 0..PORT_TRIES {
            match self.spawn(i, addr).await {
                Ok((child, _)) => {
                    self.running[i].1 = Some(child);
                    return Ok(());
                }
                // The port is briefly held by the dying process's sockets.
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(PORT_BACKOFF).await;
                }
            }
        }
        let last = last.map(|e| e.to_string()).unwrap_or_default();
        bail!("restarting the elector on {addr}: {last}")
    }

    /// Reads every elector's session figures (`/metrics`), adding up the
    /// sessions open now.
    pub async fn sample(&mut self) {
        let mut open = 0;
        for i in 0..self.running.len() {
            open += self.sample_one(i).await;
        }
        let figures = &mut self.sessions.figures;
        figures.most_open = figures.most_open.max(open);
    }

    /// The session figures so far.
    pub fn session_figures(&self) -> SessionFigures {
        let s = &self.sessions;
        SessionFigures { releases: s.retired + s.current.iter().sum::<u64>(), ..s.figures.clone() }
    }

    /// Reads elector `i`'s counters; the sessions it has open now (0 when
    /// it does not answer).
    async fn sample_one(&mut self, i: usize) -> u64 {
        let Some(text) = scrape(self.running[i].0).await else { return 0 };
        self.sessions.current[i] = metric(&text, "mpsync_session_releases_total");
        metric(&text, "mpsync_sessions")
    }

    /// Elector `i`'s state file, which outlives its restarts.
    fn state_file(&self, i: usize) -> PathBuf {
        self.state_dir.join(format!("elector-{i}.json"))
    }

    /// Starts elector `i` on `listen` and waits for the line that gives its
    /// address (an event, not a sleep).
    async fn spawn(&self, i: usize, listen: SocketAddr) -> std::io::Result<(Child, SocketAddr)> {
        let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        writeln!(log, "--- chaos: starting elector {i} on {listen}")?;
        let mut child = Command::new(&self.bin)
            .args(&self.args)
            .arg("--state-file")
            .arg(self.state_file(i))
            .arg("--listen")
            .arg(listen.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.try_clone()?)
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let found = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix("elector listening on http://") {
                    return addr.parse::<SocketAddr>().map_err(std::io::Error::other);
                }
            }
            Err(std::io::Error::other(format!("the elector exited before listening (see {})", self.log.display())))
        })
        .await
        .map_err(|_| std::io::Error::other(format!("the elector did not listen within {START_TIMEOUT:?}")))?;
        let addr = found?;
        // The rest of its stdout goes to the log too (and never fills a
        // pipe); a line to a local file is written at once.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = writeln!(log, "{line}");
            }
        });
        Ok((child, addr))
    }
}

/// Creates (or empties) the file for a run's elector logs: `path`, or else
/// `STORE-electors.log` in a new temporary folder.
pub fn create_log(path: Option<&Path>, store: &str) -> anyhow::Result<PathBuf> {
    let path = match path {
        Some(p) => p.to_owned(),
        None => testkit::temp_dir("chaos-logs")?.join(format!("{store}-electors.log")),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok(path)
}

/// How long a reading of `/metrics` may take (a loaded machine, a store
/// paused under the elector) before it is skipped.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);

/// `GET /metrics` from the elector at `addr`; `None` if it does not answer
/// within [`SCRAPE_TIMEOUT`].
async fn scrape(addr: SocketAddr) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let get = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        // HTTP/1.0: the answer is the body as it is, never chunked.
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        std::io::Result::Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    let text = tokio::time::timeout(SCRAPE_TIMEOUT, get).await.ok()?.ok()?;
    (text.split(' ').nth(1) == Some("200")).then_some(text)
}

/// The sum of every series of metric `name` (any labels) in a Prometheus
/// text exposition.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_is_summed_over_its_labels() {
        let text = "# HELP mpsync_sessions Sessions open right now.\n\
                    mpsync_sessions 3\n\
                    mpsync_session_releases_total{kind=\"lock\"} 5\n\
                    mpsync_session_releases_total{kind=\"election\"} 2\n\
                    mpsync_sessions_other 9\n";
        assert_eq!(metric(text, "mpsync_sessions"), 3);
        assert_eq!(metric(text, "mpsync_session_releases_total"), 7);
        assert_eq!(metric(text, "mpsync_nothing"), 0);
    }
}
