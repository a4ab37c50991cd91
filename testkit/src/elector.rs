//! Starts a real `elector` binary as a child process on a port the OS picks.
//!
//! Tests, benchmarks and demos use it to run the real thing: it passes
//! `--listen 127.0.0.1:0`, waits for the `elector listening on http://ADDR`
//! line on stdout (an event, not a sleep), and kills the process when
//! dropped. Unless the arguments name a `--state-file`, each process gets a
//! fresh one of its own in the temporary folder (removed when dropped), so
//! electors started side by side never share one.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a starting elector may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running elector process.
pub struct ElectorProcess {
    child: Child,
    addr: SocketAddr,
    own_state: Option<std::path::PathBuf>,
}

impl Drop for ElectorProcess {
    fn drop(&mut self) {
        if let Some(dir) = &self.own_state {
            let _ = self.child.start_kill();
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A folder of its own for one elector's state file.
fn fresh_state_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("mpsync-elector-{}-{n}-{nanos}", std::process::id()))
}

fn other(message: String) -> std::io::Error {
    std::io::Error::other(message)
}

impl ElectorProcess {
    /// Starts `bin` with `args` plus `--listen 127.0.0.1:0`, and returns once
    /// it listens.
    pub async fn spawn(bin: impl AsRef<Path>, args: &[&str]) -> std::io::Result<Self> {
        Self::spawn_on(bin, args, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts `bin` with `args` plus `--listen LISTEN` (to restart an elector
    /// where its clients expect it), and returns once it listens.
    pub async fn spawn_on(bin: impl AsRef<Path>, args: &[&str], listen: SocketAddr) -> std::io::Result<Self> {
        let bin = bin.as_ref();
        let own_state = (!args.contains(&"--state-file")).then(fresh_state_dir);
        let mut command = Command::new(bin);
        command.args(args);
        if let Some(dir) = &own_state {
            command.arg("--state-file").arg(dir.join("elector.json"));
        }
        let mut child = command
            .arg("--listen")
            .arg(listen.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| other(format!("starting {}: {e}", bin.display())))?;
        let stdout = child.stdout.take().ok_or_else(|| other("no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix("elector listening on http://") {
                    return addr.parse::<SocketAddr>().map_err(|e| other(format!("bad address {addr:?}: {e}")));
                }
            }
            Err(other(format!("{} exited before listening", bin.display())))
        })
        .await
        .map_err(|_| other(format!("{} did not start listening within {START_TIMEOUT:?}", bin.display())))??;
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(ElectorProcess { child, addr, own_state })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`, `STOP`, `CONT`).
    pub fn signal(&self, name: &str) -> std::io::Result<()> {
        let pid = self.pid().ok_or_else(|| other("the elector has already exited".into()))?;
        let status = std::process::Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status()?;
        if status.success() { Ok(()) } else { Err(other(format!("kill -{name} {pid} failed: {status}"))) }
    }

    /// Waits for it to exit.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }
}
