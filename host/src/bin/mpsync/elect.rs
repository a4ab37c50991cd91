//! `mpsync elect`: stands in an election on behalf of a server it runs,
//! and only while that server runs and is healthy.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow};
use mpsync::watchdog::unix_ms;
use mpsync_client::{Client, Error, Granted, Lease, Options};
use mpsync_core::wire::Kind;
use rustix::process::Signal;
use serde_json::json;
use tokio::sync::watch;

use crate::health::{self, Check};

/// Longer than any server runs: a campaign only ends when it wins.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A campaign under way: `Lease::acquire`, until it wins.
type Campaign<'a> = Pin<Box<dyn Future<Output = Result<Granted, Error>> + Send + 'a>>;

/// The leadership as CMD reads it, in the file `--leader-file` names.
struct LeaderFile {
    path: PathBuf,
    temp: PathBuf,
}

impl LeaderFile {
    fn new(path: &Path) -> anyhow::Result<Self> {
        let name = path.file_name().ok_or_else(|| anyhow!("--leader-file {} is not a file name", path.display()))?;
        let mut temp = std::ffi::OsString::from(".");
        temp.push(name);
        temp.push(format!(".{}.tmp", std::process::id()));
        Ok(LeaderFile { path: path.to_owned(), temp: path.with_file_name(temp) })
    }

    /// Replaces the file whole (write, then rename): a reader never sees
    /// half of it.
    fn write(&self, name: &str, held: Option<&Granted>) -> anyhow::Result<()> {
        let body = match held {
            Some(g) => {
                json!({ "name": name, "leader": true, "token": g.token, "valid_until_ms": unix_ms(g.valid_until) as u64 })
            }
            None => json!({ "name": name, "leader": false, "token": null, "valid_until_ms": null }),
        };
        let mut text = body.to_string();
        text.push('\n');
        std::fs::write(&self.temp, text).with_context(|| format!("writing {}", self.temp.display()))?;
        std::fs::rename(&self.temp, &self.path).with_context(|| format!("renaming to {}", self.path.display()))
    }
}

/// What `mpsync elect` was asked to do.
pub struct Elect {
    /// The elector's client (with or without sessions).
    pub client: Client,
    /// The election.
    pub name: String,
    /// TTL, holder and the address to advertise.
    pub options: Options,
    /// The health check, if any.
    pub health: Option<Check>,
    /// `--leader-file`.
    pub leader_file: Option<PathBuf>,
    /// CMD and its arguments.
    pub command: Vec<String>,
}

/// Runs CMD and campaigns for it; returns the exit code `elect --help`
/// documents.
pub async fn elect(elect: Elect) -> anyhow::Result<ExitCode> {
    let Elect { client, name, options, health, leader_file, command } = elect;
    let lease = Lease::new(client.clone(), Kind::Election, &name, options).map_err(|e| anyhow!("{e}"))?;
    reach(&client, &name, lease.ttl()).await?;
    // A transfer asked of this leader is handled below like any other
    // resignation, not by the client on its own: the server hears it
    // first (the file), and only then is the lease released.
    lease.step_down_on_transfer(false).await;
    let file = leader_file.as_deref().map(LeaderFile::new).transpose()?;
    if let Some(file) = &file {
        file.write(&name, None)?;
    }
    // Said before CMD starts, so it is the first line of the run.
    println!("not leading");
    // Before CMD starts: from then on a SIGTERM means "resign and stop
    // CMD", never the end of mpsync alone.
    let mut stop = crate::signal::stop_on_signal()?;
    // The session is opened before CMD starts, so that CMD inherits it: the
    // elector then hands leadership on only once CMD (and whatever it
    // started that kept the socket) is gone, even if mpsync is killed
    // first. A session opened later (after the elector restarted) is
    // mpsync's alone.
    let session = client.session(lease.ttl() / 5).await;
    let mut child = spawn(&name, leader_file.as_deref(), &command, session.as_ref().map(|s| s.socket()))?;
    let group = child.id().and_then(|pid| rustix::process::Pid::from_raw(pid as i32));
    // Without a check, always healthy: the sender is kept so that the
    // receiver never reports it gone.
    let (_always, mut healthy) = watch::channel(true);
    if let Some(check) = health {
        healthy = health::watch(check);
    }
    let mut changes = lease.changes();
    let mut deadlines = lease.deadlines();
    let mut shown: Option<Granted> = None;
    let mut campaign: Option<Campaign<'_>> = None;
    // After a campaign that failed: when to stand again.
    let mut retry: Option<tokio::time::Instant> = None;
    let mut exited: Option<ExitCode> = None;
    // Once set, the exit code after resigning and stopping CMD: 143 on
    // SIGTERM or SIGINT, 2 if the leader file cannot be written (CMD
    // could no longer know whether it leads).
    let mut stopping: Option<u8> = None;
    let mut termed = false;
    loop {
        let held = lease.held();
        let asked = held.as_ref().and_then(|_| lease.transfer_requested());
        let want = exited.is_none() && stopping.is_none() && *healthy.borrow() && asked.is_none();
        if !want {
            // Stop campaigning. A campaign dropped while its POST is in
            // flight may leave a grant at the elector that nobody here
            // renews or believes in: it runs out at its TTL.
            campaign = None;
            if held.is_some() {
                let why = match (exited.is_some(), stopping.is_some(), &asked) {
                    (true, ..) => "the command exited".to_owned(),
                    (_, true, _) => "stopping".to_owned(),
                    // Campaigning again once released: the reservation
                    // keeps this candidate from winning it straight back.
                    (.., Some(t)) => {
                        format!("leadership transfer to {} asked", t.to.as_deref().unwrap_or("anyone else"))
                    }
                    _ => "the server is unhealthy".to_owned(),
                };
                eprintln!("mpsync: resigning from {name}: {why}");
                // The server hears it first: once the lease is released a
                // successor may lead at once, and the file must not say
                // otherwise by then.
                if let Some(file) = &file
                    && let Err(e) = file.write(&name, None)
                {
                    eprintln!("mpsync: {e:#}");
                    stopping.get_or_insert(2);
                }
                println!("not leading");
                shown = None;
                match lease.release().await {
                    Ok(()) => eprintln!("mpsync: resigned from {name}"),
                    Err(e) => eprintln!("mpsync: {e}"),
                }
                continue;
            }
        }
        // Told before anything else happens: the file first, so that a
        // line on stdout means the file says the same.
        if held.as_ref().map(|g| g.token) != shown.as_ref().map(|g| g.token) {
            if let Some(file) = &file
                && let Err(e) = file.write(&name, held.as_ref())
            {
                eprintln!("mpsync: {e:#}; resigning and stopping the command");
                stopping.get_or_insert(2);
            }
            match &held {
                Some(g) => println!("leading with token {}", g.token),
                None => println!("not leading"),
            }
            shown = held.clone();
        }
        if let Some(code) = exited {
            return Ok(code);
        }
        if stopping.is_some() && !termed {
            // Resigned first, then the server is asked to stop.
            termed = true;
            if let Some(group) = group {
                let _ = rustix::process::kill_process_group(group, Signal::TERM);
            }
        }
        if want && held.is_none() && campaign.is_none() && retry.is_none() {
            campaign = Some(Box::pin(lease.acquire(FOREVER)));
        }
        let lost = async {
            match &held {
                // The lease is reported lost at its deadline: look again then.
                Some(g) => tokio::time::sleep_until(g.valid_until.into()).await,
                None => std::future::pending().await,
            }
        };
        let running = async {
            match &mut campaign {
                Some(c) => c.await,
                None => std::future::pending().await,
            }
        };
        let pause = async {
            match retry {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = running => {
                campaign = None;
                if let Err(e) = result {
                    // The policy already retried for a TTL; stand again after a breath.
                    eprintln!("mpsync: campaigning for {name}: {e}; standing again");
                    retry = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                }
            }
            () = pause => retry = None,
            status = child.wait() => {
                let status = status.context("waiting for the command")?;
                exited = Some(stopping.map_or_else(|| exit_code(status), ExitCode::from));
            }
            _ = changes.changed() => {}
            changed = deadlines.changed() => {
                // A renewal: the file's deadline moves on.
                if changed.is_ok()
                    && let (Some(file), Some(g)) = (&file, lease.held())
                    && let Err(e) = file.write(&name, Some(&g))
                {
                    eprintln!("mpsync: {e:#}; resigning and stopping the command");
                    stopping.get_or_insert(2);
                }
            }
            () = lost => {}
            _ = healthy.changed() => {}
            _ = stop.wait_for(|s| *s), if stopping.is_none() => stopping = Some(143),
        }
    }
}

/// CMD's exit code, or 128 + the signal that killed it (as a shell says).
fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    let code = status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(128);
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// One read of the election, retried with a backoff for up to one TTL: an
/// elector that does not answer by then is an error (exit 2) before CMD
/// starts.
async fn reach(client: &Client, name: &str, ttl: Duration) -> anyhow::Result<()> {
    let until = tokio::time::Instant::now() + ttl;
    let mut pause = Duration::from_millis(100);
    loop {
        match client.read(Kind::Election, name, None).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() + pause >= until => {
                return Err(anyhow!("the elector at {} stayed unreachable: {e}", client.base()));
            }
            Err(e) => tracing::debug!("reading {name}: {e}; trying again"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Starts CMD in a process group of its own (SIGTERM reaches whatever a
/// shell wrapper started too), with the election's name and the leader
/// file in its environment, and a copy of the `session` socket (the
/// session lasts while any copy is open). CMD gets SIGTERM if mpsync dies:
/// nobody would campaign for it or keep its leader file true any longer.
fn spawn(
    name: &str,
    leader_file: Option<&Path>,
    command: &[String],
    session: Option<std::os::fd::BorrowedFd<'_>>,
) -> anyhow::Result<tokio::process::Child> {
    let (program, args) = command.split_first().ok_or_else(|| anyhow!("no command"))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).process_group(0).env("MPSYNC_ELECT_NAME", name);
    if let Some(path) = leader_file {
        cmd.env("MPSYNC_ELECT_LEADER_FILE", path);
    }
    let parent = rustix::process::getpid();
    // The parent-death signal fires when the thread that forked ends: this
    // runs on the thread of `block_on` in `main`, which lives as long as
    // mpsync. The closure runs between fork and exec, where only
    // async-signal-safe calls are allowed: no allocation, no lock.
    #[allow(unsafe_code)]
    // SAFETY: the hook makes only async-signal-safe system calls (fcntl,
    // prctl, getppid) and does not allocate (see `dies_with`); the session
    // socket stays open in mpsync until the spawn returns.
    unsafe {
        let mut dies = mpsync::watchdog::dies_with(parent, Signal::TERM);
        let inherit = session.map(|s| std::os::fd::AsRawFd::as_raw_fd(&s));
        cmd.pre_exec(move || {
            if let Some(fd) = inherit {
                // CMD inherits the session socket: one fcntl call.
                let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())
                    .map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error()))?;
            }
            dies()
        });
    }
    cmd.spawn().with_context(|| format!("starting {program}"))
}
