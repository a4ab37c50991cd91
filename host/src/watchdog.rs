//! Keeps `mpsync lock`'s command inside its lease, whatever happens to
//! `mpsync` itself.
//!
//! `mpsync lock` does not start the command directly. It starts a watchdog,
//! `mpsync __watchdog` (the same binary, a process of its own), which starts
//! the command in a process group of its own with SIGKILL as its
//! parent-death signal. `mpsync` talks to the watchdog over a Unix socket:
//! it sends the lease's local deadline on `CLOCK_MONOTONIC` (one clock for
//! every process on the machine) after every renewal, and `stop` when the
//! lease is lost or `mpsync` is told to stop. The watchdog then:
//!
//! - at the deadline, or on `stop`: SIGTERM to the command's group, and
//!   SIGKILL `grace` later;
//! - when the socket closes (`mpsync` died): SIGKILL to the group at once;
//! - when the command exits: SIGKILL to what it left in its group, and
//!   exits with the command's status (128 + signal if killed) once the whole
//!   group is gone (it is the group's child subreaper, so it can wait for
//!   every process of the group, orphans included).
//!
//! So a frozen `mpsync` cannot keep the command running past the deadline
//! plus the grace, a killed one takes the command with it, and a killed
//! watchdog takes the command with it through the parent-death signal.
//!
//! The watchdog (in a process group of its own, so that a signal to
//! mpsync's group does not take it along) also holds a copy of the socket of
//! the lock's session with the elector (inherited, `--session-fd`), and so
//! does the command (and whatever it starts that keeps it). The elector
//! releases the lock when the last copy closes: when `mpsync` is killed,
//! that is once the watchdog has buried the whole group and exited, or once
//! the last process that kept the socket is gone. So a successor gets the
//! lock within milliseconds of a crash, and never while anything of the
//! command could still act: a process that escaped the group and closed
//! the socket is the one case left.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use tokio::io::AsyncWriteExt;

/// Now on `CLOCK_MONOTONIC`, shared by every process on the machine.
pub fn monotonic_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), u32::try_from(t.tv_nsec).unwrap_or(0))
}

/// `at` (this process's `Instant`) on another clock that reads `base` now.
fn on_clock(base: Duration, at: Instant) -> Duration {
    let now = Instant::now();
    if at >= now { base + (at - now) } else { base.saturating_sub(now - at) }
}

/// `at` as a `CLOCK_MONOTONIC` time.
fn monotonic(at: Instant) -> Duration {
    on_clock(monotonic_now(), at)
}

/// `at` as milliseconds since the Unix epoch on the wall clock, for a
/// command that wants to check its deadline with `date`.
pub fn unix_ms(at: Instant) -> u128 {
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    on_clock(wall, at).as_millis()
}

/// The `mpsync` side: a running watchdog and its command.
pub struct Watchdog {
    control: tokio::net::UnixStream,
    dir: PathBuf,
}

/// The watchdog's exit status, which is the command's.
pub type Exit = tokio::task::JoinHandle<std::io::Result<ExitStatus>>;

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the command gets in its environment beside the lease.
pub struct Launch<'a> {
    /// This executable (`mpsync`), to run as the watchdog.
    pub exe: &'a Path,
    /// The command and its arguments.
    pub command: &'a [String],
    /// Extra environment for the command.
    pub env: Vec<(String, String)>,
    /// Between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// The lease's local deadline.
    pub deadline: Instant,
    /// The socket of the session the lock is held under, if any: the
    /// watchdog keeps a copy open until the command's group is gone.
    pub session: Option<std::os::fd::BorrowedFd<'a>>,
}

impl Watchdog {
    /// Starts the watchdog, which starts the command. The command also gets
    /// `MPSYNC_LOCK_DEADLINE` (Unix milliseconds, wall clock) and
    /// `MPSYNC_LOCK_DEADLINE_FILE`, a file that always holds the current
    /// deadline in the same form. The [`Exit`] resolves when the watchdog
    /// (and so the command) has exited.
    pub async fn start(launch: Launch<'_>) -> std::io::Result<(Watchdog, Exit)> {
        let dir = private_dir()?;
        let socket = dir.join("control.sock");
        let deadline_file = dir.join("deadline");
        write_deadline(&deadline_file, launch.deadline)?;
        let listener = tokio::net::UnixListener::bind(&socket)?;
        let mut watchdog = tokio::process::Command::new(launch.exe);
        // A group of its own: what is sent to mpsync's group (`kill --
        // -PGID`, `timeout -s KILL`, a terminal's signals) must not take the
        // watchdog with it, or nothing would wait for the command's group.
        watchdog.arg("__watchdog").process_group(0);
        if let Some(session) = launch.session {
            use std::os::fd::AsRawFd;
            let fd = session.as_raw_fd();
            watchdog.arg("--session-fd").arg(fd.to_string());
            // Only the watchdog inherits the socket: its close-on-exec
            // flag is cleared in the child, between fork and exec, with one
            // async-signal-safe system call.
            #[allow(unsafe_code)]
            // SAFETY: `fd` stays open in the parent until the spawn returns
            // (`launch` borrows it), so in the child it is the same socket;
            // the hook makes one fcntl call and allocates nothing.
            unsafe {
                watchdog.pre_exec(move || {
                    let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())
                        .map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error()))
                });
            }
        }
        let mut child = watchdog
            .arg("--control")
            .arg(&socket)
            .arg("--grace-ms")
            .arg(launch.grace.as_millis().to_string())
            .arg("--deadline-ns")
            .arg(monotonic(launch.deadline).as_nanos().to_string())
            .arg("--")
            .args(launch.command)
            .envs(launch.env)
            .env("MPSYNC_LOCK_DEADLINE", unix_ms(launch.deadline).to_string())
            .env("MPSYNC_LOCK_DEADLINE_FILE", &deadline_file)
            .spawn()?;
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            status = child.wait() => Err(std::io::Error::other(format!("the watchdog exited at start: {}", status?))),
        };
        let (control, _) = accepted?;
        let exit = tokio::spawn(async move { child.wait().await });
        Ok((Watchdog { control, dir }, exit))
    }

    /// Moves the deadline (after a renewal).
    pub async fn set_deadline(&mut self, deadline: Instant) -> std::io::Result<()> {
        write_deadline(&self.dir.join("deadline"), deadline)?;
        let line = format!("deadline {}\n", monotonic(deadline).as_nanos());
        self.control.write_all(line.as_bytes()).await
    }

    /// SIGTERM to the command now, SIGKILL after the grace.
    pub async fn stop(&mut self) -> std::io::Result<()> {
        self.control.write_all(b"stop\n").await
    }
}

/// A new folder only this user can enter. A folder of the same name may
/// be left by an mpsync that was SIGKILLed with the same pid: then another
/// name is tried, never the old folder reused.
fn private_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut last = None;
    for _ in 0..64 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        let dir = std::env::temp_dir().join(format!("mpsync-lock-{}-{n}-{nanos:08x}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free name for the lock's private folder")))
}

fn write_deadline(path: &Path, deadline: Instant) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{}\n", unix_ms(deadline)))?;
    std::fs::rename(tmp, path)
}

enum Event {
    Deadline(Duration),
    Stop,
    Gone,
    Exited(std::io::Result<ExitStatus>),
}

/// A `pre_exec` hook: the child gets `signal` when `parent` (the process
/// that forks it) dies, and is not started at all if `parent` is already
/// gone. It runs between fork and exec, where only async-signal-safe calls
/// are allowed: prctl and getppid are single system calls, and an error is
/// an errno that `from_raw_os_error` builds without allocating.
pub fn dies_with(parent: Pid, signal: Signal) -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
    move || {
        let errno = |e: rustix::io::Errno| std::io::Error::from_raw_os_error(e.raw_os_error());
        rustix::process::set_parent_process_death_signal(Some(signal)).map_err(errno)?;
        if rustix::process::getppid() != Some(parent) {
            // The parent died before the signal was armed.
            return Err(errno(rustix::io::Errno::SRCH));
        }
        Ok(())
    }
}

/// The watchdog process: starts `command`, keeps it inside the deadline
/// (see the module documentation) and returns its exit code. Call it before
/// starting any thread or runtime: it forks the command while the process
/// is still single-threaded, and starts its own two threads after that.
pub fn run(control: &Path, grace: Duration, deadline: Duration, session: Option<i32>, command: &[String]) -> i32 {
    // Held until this process exits, never inherited by the command.
    let _session = match session.map(keep_session) {
        Some(Err(e)) => {
            eprintln!("mpsync watchdog: the session socket: {e}");
            return 2;
        }
        kept => kept.and_then(Result::ok),
    };
    // This process is in a process group of its own, so a signal to
    // mpsync's group (a terminal's Ctrl-C, `kill -- -PGID`, `timeout`) does
    // not reach it. One still could: when mpsync dies while this process is
    // stopped, the kernel sends SIGHUP (then SIGCONT) to its orphaned group.
    // Dying of it would leave the command's group unwaited for.
    #[allow(unsafe_code)]
    // SAFETY: setting a signal to be ignored installs no handler; the
    // process is single-threaded here.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    // Orphans of the command's group become this process's children, so
    // that it can wait for every one of them (see `bury`).
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        eprintln!("mpsync watchdog: becoming the command's subreaper: {e}");
        return 2;
    }
    let stream = match std::os::unix::net::UnixStream::connect(control) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mpsync watchdog: connecting to {}: {e}", control.display());
            return 2;
        }
    };
    let Some((program, args)) = command.split_first() else { return 2 };
    let parent = rustix::process::getpid();
    let mut cmd = std::process::Command::new(program);
    cmd.args(args).process_group(0);
    // The command dies with this process even if it is SIGKILLed (then
    // nothing else would stop the command). The closure runs in the child
    // between fork and exec, where only async-signal-safe calls are allowed:
    // no allocation and no lock, since another thread of the parent may have
    // held the allocator's lock at the fork. `main` runs the watchdog before
    // any runtime starts, so the process is single-threaded here anyway.
    #[allow(unsafe_code)]
    // SAFETY: the hook makes only async-signal-safe system calls and does
    // not allocate (see `dies_with`).
    unsafe {
        let mut dies = dies_with(parent, Signal::KILL);
        cmd.pre_exec(move || {
            // The command gets SIGHUP's default action back (an ignored
            // signal stays ignored across exec); `signal` is
            // async-signal-safe.
            libc::signal(libc::SIGHUP, libc::SIG_DFL);
            dies()
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mpsync: starting {program}: {e}");
            return 127;
        }
    };
    let group = Pid::from_child(&child);
    let (tx, rx) = mpsc::channel();
    let reader = {
        let tx = tx.clone();
        let stream = match stream.try_clone() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("mpsync watchdog: {e}");
                let _ = rustix::process::kill_process_group(group, Signal::KILL);
                return 2;
            }
        };
        move || {
            for line in BufReader::new(stream).lines() {
                let event = match line.as_deref().map(str::trim) {
                    Ok("stop") => Event::Stop,
                    Ok(l) => match l.strip_prefix("deadline ").and_then(|n| n.parse::<u128>().ok()) {
                        Some(ns) => Event::Deadline(Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))),
                        None => continue,
                    },
                    Err(_) => break,
                };
                if tx.send(event).is_err() {
                    return;
                }
            }
            let _ = tx.send(Event::Gone);
        }
    };
    std::thread::spawn(reader);
    std::thread::spawn(move || {
        let _ = tx.send(Event::Exited(child.wait()));
    });
    drop(stream);

    let mut deadline = deadline;
    let mut kill_at: Option<Duration> = None;
    loop {
        let wake = kill_at.unwrap_or(deadline);
        let wait = wake.saturating_sub(monotonic_now());
        let event = if wait.is_zero() { Err(mpsc::RecvTimeoutError::Timeout) } else { rx.recv_timeout(wait) };
        match event {
            Ok(Event::Deadline(d)) => deadline = d,
            Ok(Event::Stop) if kill_at.is_none() => {
                let _ = rustix::process::kill_process_group(group, Signal::TERM);
                kill_at = Some(monotonic_now() + grace);
            }
            Ok(Event::Stop) => {}
            Ok(Event::Gone) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                // mpsync is gone: nobody renews the lease, nobody can be
                // told. Stop the command now.
                let _ = rustix::process::kill_process_group(group, Signal::KILL);
                kill_at = Some(monotonic_now());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => match kill_at {
                None => {
                    eprintln!("mpsync: the lock's deadline passed without a renewal; stopping the command");
                    let _ = rustix::process::kill_process_group(group, Signal::TERM);
                    kill_at = Some(monotonic_now() + grace);
                }
                Some(_) => {
                    let _ = rustix::process::kill_process_group(group, Signal::KILL);
                    // Wait for the exit only from now on.
                    deadline = Duration::MAX;
                    kill_at = Some(Duration::MAX);
                }
            },
            Ok(Event::Exited(status)) => {
                // Whatever the command left in its group goes with it, and
                // is gone before the session (and then the lock) is.
                bury(group);
                let _ = std::io::stderr().flush();
                return match status {
                    Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
                    Err(_) => 2,
                };
            }
        }
    }
}

/// Takes the inherited session socket `fd`, after checking it is open
/// (a wrong number would make this process own, and close, another file).
/// It stays open across exec: the command inherits it too, so that the
/// session lasts as long as any process that holds a copy (mpsync, this
/// process, the command, its children that keep it).
fn keep_session(fd: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let errno = |e: rustix::io::Errno| std::io::Error::from_raw_os_error(e.raw_os_error());
    if fd < 3 {
        return Err(std::io::Error::other(format!("fd {fd} is not an inherited socket")));
    }
    #[allow(unsafe_code)]
    // SAFETY: only borrowed for this one call.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    rustix::io::fcntl_getfd(borrowed).map_err(errno)?;
    #[allow(unsafe_code)]
    // SAFETY: `mpsync lock` passed this descriptor to this process alone
    // (`--session-fd`), it is open (the fcntl above succeeded), and nothing
    // else in this process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// SIGKILL to every process of `group`, then waits until none is left: as
/// the group's subreaper, every one of them is (or becomes, as its parent
/// dies) a child of this process. A process that left the group is not
/// waited for.
fn bury(group: Pid) {
    loop {
        let _ = rustix::process::kill_process_group(group, Signal::KILL);
        match rustix::process::waitpgid(group, rustix::process::WaitOptions::empty()) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            // ECHILD: no child of this process is left in the group.
            Err(_) => return,
        }
    }
}
