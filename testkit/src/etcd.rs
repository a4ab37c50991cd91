//! Real etcd servers as child processes: one member, or a cluster of
//! several, on loopback ports picked by the OS, with data in fresh
//! directories that outlive restarts.
//!
//! The binary is `$ETCD_BIN`, else the one `scripts/setup.sh` unpacks into
//! `.tools/etcd/usr/bin/etcd`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};

/// How long etcd may take to say it serves clients.
const START_TIMEOUT: Duration = Duration::from_secs(30);

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// A running etcd: one member or a cluster (members may be killed,
/// paused and restarted one by one).
pub struct Etcd {
    bin: PathBuf,
    dir: PathBuf,
    members: Vec<Member>,
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

fn signal(child: &Child, name: &str) -> anyhow::Result<()> {
    let pid = child.id().context("etcd is not running")?;
    let status = std::process::Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status()?;
    if !status.success() {
        bail!("kill -{name} {pid}: {status}");
    }
    Ok(())
}

impl Etcd {
    /// Starts a single-member etcd and returns once it serves clients.
    pub async fn start() -> anyhow::Result<Self> {
        Self::cluster(1).await
    }

    /// Starts a cluster of `size` members and returns once every member
    /// serves clients (which needs a leader).
    pub async fn cluster(size: usize) -> anyhow::Result<Self> {
        let bin = etcd_bin();
        if !bin.exists() {
            bail!("no etcd at {}: run scripts/setup.sh (or set ETCD_BIN)", bin.display());
        }
        let dir = crate::temp_dir("etcd")?;
        let mut etcd = Etcd { bin, dir, members: Vec::new() };
        // The ports are free when picked; etcd binds them a moment later.
        // Another process may take one in between (tests run side by side):
        // then start again on fresh ports, a few times.
        let mut attempt = 0;
        loop {
            attempt += 1;
            etcd.members.clear();
            for i in 0..size.max(1) {
                let (client_port, peer_port) = (free_port()?, free_port()?);
                etcd.members.push(Member { name: format!("m{i}"), client_port, peer_port, child: None });
            }
            match etcd.launch_all().await {
                Ok(()) => return Ok(etcd),
                Err(e) if attempt < 5 && format!("{e:#}").contains("address already in use") => {
                    etcd.kill().await?;
                    for m in &etcd.members {
                        let _ = std::fs::remove_dir_all(etcd.dir.join(&m.name));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The first member's client URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.members[0].client_port)
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| format!("http://127.0.0.1:{}", m.client_port)).collect()
    }

    /// Every member's client address.
    pub fn addrs(&self) -> Vec<std::net::SocketAddr> {
        self.members.iter().map(|m| std::net::SocketAddr::from(([127, 0, 0, 1], m.client_port))).collect()
    }

    /// How many members.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    fn spawn(&self, i: usize) -> anyhow::Result<(Child, Lines<BufReader<ChildStderr>>)> {
        let m = &self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let cluster: Vec<String> =
            self.members.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port)).collect();
        let mut child = Command::new(&self.bin)
            .arg(format!("--name={}", m.name))
            .arg(format!("--data-dir={}", self.dir.join(&m.name).display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={}", cluster.join(",")))
            .args(["--initial-cluster-token=mpsync-test", "--initial-cluster-state=new"])
            .args(["--logger=zap", "--log-outputs=stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let stderr = child.stderr.take().context("no stderr")?;
        Ok((child, BufReader::new(stderr).lines()))
    }

    /// SIGKILL to every member, and waits for them to be gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        for i in 0..self.members.len() {
            self.kill_member(i).await?;
        }
        Ok(())
    }

    /// Starts every member again on the same ports with the same data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        self.launch_all().await
    }

    /// Starts every member at once (a cluster needs a quorum to serve),
    /// then waits until each serves clients.
    async fn launch_all(&mut self) -> anyhow::Result<()> {
        let mut starting = Vec::new();
        for i in 0..self.members.len() {
            starting.push((i, self.spawn(i)?));
        }
        for (i, (child, lines)) in starting {
            self.members[i].child = Some(child);
            ready(lines).await?;
        }
        Ok(())
    }

    /// SIGKILL to member `i`, and waits for it to be gone.
    pub async fn kill_member(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.members[i].child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts member `i` again (killing it first if it runs) and waits
    /// until it serves clients.
    pub async fn restart_member(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill_member(i).await?;
        let (child, lines) = self.spawn(i)?;
        self.members[i].child = Some(child);
        ready(lines).await
    }

    /// SIGSTOP to every member: they keep their connections but answer
    /// nothing.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.members.iter().filter_map(|m| m.child.as_ref()).try_for_each(|c| signal(c, "STOP"))
    }

    /// SIGCONT after [`Etcd::pause`].
    pub fn resume(&self) -> anyhow::Result<()> {
        self.members.iter().filter_map(|m| m.child.as_ref()).try_for_each(|c| signal(c, "CONT"))
    }

    /// The member that is the raft leader now, if a running member knows
    /// one (asked through etcd's JSON gateway).
    pub async fn leader(&self) -> Option<usize> {
        let mut ids = Vec::new();
        let mut leader = None;
        for m in &self.members {
            let status = if m.child.is_some() { status(m.client_port).await } else { None };
            if let Some(s) = &status {
                leader = leader.or_else(|| s["leader"].as_str().map(str::to_owned));
            }
            ids.push(status.and_then(|s| s["header"]["member_id"].as_str().map(str::to_owned)));
        }
        let leader = leader?;
        ids.iter().position(|id| id.as_deref() == Some(leader.as_str()))
    }
}

/// `POST /v3/maintenance/status` on one member, within a second.
async fn status(port: u16) -> Option<serde_json::Value> {
    let ask = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let request = "POST /v3/maintenance/status HTTP/1.1\r\nHost: etcd\r\nContent-Type: application/json\r\n\
                       Content-Length: 2\r\nConnection: close\r\n\r\n{}";
        s.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.ok()?;
        let text = String::from_utf8_lossy(&answer).into_owned();
        let (_, body) = text.split_once("\r\n\r\n")?;
        serde_json::from_str(body).ok()
    };
    tokio::time::timeout(Duration::from_secs(1), ask).await.ok().flatten()
}

/// Waits for a member's "serving client traffic", then keeps draining its
/// log so it never blocks on a full pipe.
async fn ready(mut lines: Lines<BufReader<ChildStderr>>) -> anyhow::Result<()> {
    let mut last = Vec::new();
    let outcome = tokio::time::timeout(START_TIMEOUT, async {
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
    match outcome {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => bail!("etcd exited before serving:\n{}", last.join("\n")),
        Ok(Err(e)) => bail!("reading etcd's log: {e}"),
        Err(_) => bail!("etcd did not serve within {START_TIMEOUT:?}:\n{}", last.join("\n")),
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(())
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // kill_on_drop sends SIGKILL, which works on a stopped process too.
        for m in &mut self.members {
            drop(m.child.take());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_three_member_cluster_keeps_a_leader_when_the_leader_dies() {
        let mut etcd = Etcd::cluster(3).await.unwrap();
        let leader = etcd.leader().await.expect("a leader");
        etcd.kill_member(leader).await.unwrap();
        // The two left elect one of themselves.
        let mut next = None;
        for _ in 0..100 {
            next = etcd.leader().await.filter(|l| *l != leader);
            if next.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(next.is_some(), "no new leader");
        etcd.restart_member(leader).await.unwrap();
        assert_eq!(etcd.endpoints().len(), 3);
    }
}
