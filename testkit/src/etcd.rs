//! A real etcd server as a child process, on loopback ports picked by the
//! OS, with its data in a fresh directory that outlives restarts.
//!
//! The binary is `$ETCD_BIN`, else the one `scripts/setup.sh` unpacks into
//! `.tools/etcd/usr/bin/etcd`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long etcd may take to say it serves clients.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running (or killed, to be restarted) etcd.
pub struct Etcd {
    bin: PathBuf,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The etcd binary tests use.
pub fn etcd_bin() -> PathBuf {
    std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace().join(".tools/etcd/usr/bin/etcd"))
}

impl Etcd {
    /// Starts a single-member etcd and returns once it serves clients.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = etcd_bin();
        if !bin.exists() {
            bail!("no etcd at {}: run scripts/setup.sh (or set ETCD_BIN)", bin.display());
        }
        let dir = crate::temp_dir("etcd")?;
        // The ports are free now; etcd binds them a moment later. Another
        // process taking one in between makes the start fail loudly.
        let mut etcd = Etcd { bin, dir, client_port: free_port()?, peer_port: free_port()?, child: None };
        etcd.launch().await?;
        Ok(etcd)
    }

    /// The client URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut child = Command::new(&self.bin)
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .args(["--logger=zap", "--log-outputs=stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let mut last = Vec::new();
        let ready = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if line.contains("serving client traffic") {
                    return Ok(true);
                }
                last.push(line);
                if last.len() > 20 {
                    last.remove(0);
                }
            }
            Ok::<_, std::io::Error>(false)
        })
        .await;
        match ready {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => bail!("etcd exited before serving:\n{}", last.join("\n")),
            Ok(Err(e)) => bail!("reading etcd's log: {e}"),
            Err(_) => bail!("etcd did not serve within {START_TIMEOUT:?}:\n{}", last.join("\n")),
        }
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        Ok(())
    }

    fn signal(&self, name: &str) -> anyhow::Result<()> {
        let pid = self.child.as_ref().and_then(Child::id).context("etcd is not running")?;
        let status = std::process::Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status()?;
        if !status.success() {
            bail!("kill -{name} {pid}: {status}");
        }
        Ok(())
    }

    /// SIGKILL, and waits for the process to be gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts it again on the same ports with the same data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        self.launch().await
    }

    /// SIGSTOP: it keeps its connections but answers nothing.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("STOP")
    }

    /// SIGCONT after [`Etcd::pause`].
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("CONT")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // A paused etcd must be resumed to die promptly; kill_on_drop sends
        // SIGKILL, which works on a stopped process too.
        drop(self.child.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
