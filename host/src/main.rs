//! `mpsync`: run wasm apps with metaparticle:sync, hold a lock around a
//! command, or watch an election.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use clap::{Args, Parser, Subcommand};
use mpsync::eds::EdsFile;
use mpsync::runtime::{RunOptions, Runtime, hostname};
use mpsync::watchdog::{Launch, Watchdog};
use mpsync_client::{Client, Lease, Options, Read};
use mpsync_core::wire::Kind;

/// Locks and leader elections for WebAssembly apps and commands, through a
/// metaparticle-sync elector.
///
/// `mpsync run` runs a wasm command component and provides the
/// metaparticle:sync imports natively (leases renewed in the background),
/// plus WASI 0.2 and wasi:http. `mpsync lock` holds a lock while a command
/// runs. `mpsync leader` prints (or watches) the leader of an election;
/// `mpsync ls` lists the locks and elections the elector keeps.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter (tracing's EnvFilter syntax). Logs go to stderr.
    #[arg(long, global = true, env = "RUST_LOG", default_value = "warn")]
    log: String,
}

#[derive(Debug, Args)]
struct ElectorArg {
    /// The elector's URL.
    #[arg(long, env = "MPSYNC_ELECTOR", default_value = "http://127.0.0.1:13131")]
    elector: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a wasm command component (wasm32-wasip2 `bin`). Exits with the
    /// guest's exit code; leases it still holds are released when it ends,
    /// traps, is stopped by a limit, or when mpsync gets SIGTERM or SIGINT
    /// (then it exits 143).
    Run {
        #[command(flatten)]
        elector: ElectorArg,
        /// Set an environment variable for the guest (repeatable).
        #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_env)]
        env: Vec<(String, String)>,
        /// Preopen a host directory for the guest, as HOST or HOST::GUEST
        /// (repeatable).
        #[arg(long = "dir", value_name = "HOST[::GUEST]", value_parser = parse_dir)]
        dirs: Vec<(PathBuf, String)>,
        /// Largest linear memory the guest may grow to (e.g. 64MiB, 1GiB).
        #[arg(long, default_value = "512MiB", value_parser = parse_size)]
        max_memory: usize,
        /// Most CPU time the guest may spend running its own code (time
        /// spent waiting in the host does not count), e.g. 30s. Unlimited
        /// by default.
        #[arg(long, value_parser = humantime::parse_duration)]
        max_cpu: Option<Duration>,
        /// Do not provide the metaparticle:sync imports (for composed,
        /// portable components that bring their own). The guest then gets
        /// MPSYNC_ELECTOR=--elector in its environment unless --env sets it.
        #[arg(long)]
        no_sync_imports: bool,
        /// Compile without the compilation cache (it lives in
        /// $MPSYNC_CACHE_DIR, else $XDG_CACHE_HOME/mpsync or ~/.cache/mpsync).
        #[arg(long)]
        no_cache: bool,
        /// The component.
        app: PathBuf,
        /// Arguments for the guest.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Hold a lock while a command runs, like `etcdctl lock` and `consul
    /// lock`. The command gets the fencing token in MPSYNC_LOCK_TOKEN, the
    /// name in MPSYNC_LOCK_NAME, and the lease's local deadline in
    /// MPSYNC_LOCK_DEADLINE (Unix milliseconds) and in the file named by
    /// MPSYNC_LOCK_DEADLINE_FILE (rewritten at every renewal): check it
    /// before acting, and pass the token to whatever you write to.
    ///
    /// The lock is released when the command exits. The command never
    /// outlives the lease: it runs in a process group of its own under a
    /// watchdog process that sends SIGTERM at the deadline (or as soon as
    /// the lock is lost) and SIGKILL --grace later, even if mpsync itself is
    /// frozen; if mpsync dies, the group gets SIGKILL at once. Exits with
    /// the command's code, 3 if the lock was lost, 4 if it could not be
    /// acquired in time, 143 on SIGTERM or SIGINT.
    Lock {
        #[command(flatten)]
        elector: ElectorArg,
        /// Lease duration (renewed at a third of it).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Give up if the lock is not acquired within this long.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        /// Holder id (default: HOSTNAME-PID).
        #[arg(long)]
        holder: Option<String>,
        /// How long the command gets between SIGTERM and SIGKILL once the
        /// lock is lost. At most a tenth of the TTL, so that the command is
        /// gone well before another holder can get in (the elector grants
        /// to others a fifth of the TTL after the local deadline at the
        /// earliest). Default: a tenth of the TTL, at most 1 s.
        #[arg(long, value_parser = humantime::parse_duration)]
        grace: Option<Duration>,
        /// The lock name.
        name: String,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// The watchdog `mpsync lock` starts between itself and the command.
    #[command(name = "__watchdog", hide = true)]
    Watchdog {
        /// The Unix socket mpsync listens on.
        #[arg(long)]
        control: PathBuf,
        /// Between SIGTERM and SIGKILL.
        #[arg(long)]
        grace_ms: u64,
        /// The first deadline, on CLOCK_MONOTONIC.
        #[arg(long)]
        deadline_ns: u64,
        /// The command.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// List the locks and elections the elector keeps: name, holder (or
    /// `-` when free), fencing token, time left on the lease and, for an
    /// election, the leader's address. Reads every page of `GET /v1/locks`
    /// and `GET /v1/elections`.
    Ls {
        #[command(flatten)]
        elector: ElectorArg,
        /// Only locks, or only elections (default: both).
        #[arg(value_enum)]
        what: Option<Listing>,
        /// Only records someone holds.
        #[arg(long)]
        held: bool,
        /// Records per request to the elector (1 to 1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
        page_size: u16,
        /// One JSON object per line (the API's fields plus `kind`) instead
        /// of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the leader of an election as `LEADER ADDRESS TOKEN` (or
    /// `none`). With --watch, print every change of leader as it happens.
    ///
    /// With --envoy-eds FILE --cluster NAME (and --watch), also keep FILE an
    /// Envoy endpoint assignment (EDS, `path_config_source`) for cluster
    /// NAME holding only the leader, with its id and fencing token as
    /// endpoint metadata (`metaparticle.sync`: `leader_id`,
    /// `leader_token`): leader-only routing with no filter. No leader: no
    /// endpoint (Envoy answers 503 at once). Each change replaces FILE
    /// whole (write, then rename). If the elector stops answering, the
    /// watch keeps trying, and empties FILE once the last leader's lease
    /// may have run out.
    Leader {
        #[command(flatten)]
        elector: ElectorArg,
        /// Keep watching and print each change.
        #[arg(long)]
        watch: bool,
        /// Keep this file an Envoy EDS assignment of the leader (.json or .yaml).
        #[arg(long, value_name = "FILE")]
        envoy_eds: Option<PathBuf>,
        /// The Envoy cluster the assignment is for (with --envoy-eds).
        #[arg(long, value_name = "NAME")]
        cluster: Option<String>,
        /// The election name.
        name: String,
    },
}

/// What `mpsync ls` lists.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Listing {
    /// Locks only.
    Locks,
    /// Elections only.
    Elections,
}

/// `mpsync ls`: every page of each listing, then one table (or JSON lines).
async fn ls(url: &str, what: Option<Listing>, held: bool, page_size: u16, json: bool) -> anyhow::Result<ExitCode> {
    let client = Client::new(url);
    let kinds = match what {
        None => vec![Kind::Lock, Kind::Election],
        Some(Listing::Locks) => vec![Kind::Lock],
        Some(Listing::Elections) => vec![Kind::Election],
    };
    let mut rows = Vec::new();
    for kind in kinds {
        let mut cursor = None;
        loop {
            let page = client.list(kind, usize::from(page_size), cursor.as_deref()).await?;
            rows.extend(page.items.into_iter().filter(|r| !held || r.holder.is_some()).map(|r| (kind, r)));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    if json {
        for (kind, record) in &rows {
            let mut value = serde_json::to_value(record)?;
            value["kind"] = serde_json::Value::from(kind.singular());
            println!("{value}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = vec![["KIND", "NAME", "HOLDER", "TOKEN", "TIME LEFT", "ADDRESS"].map(String::from)];
    for (kind, r) in &rows {
        let left = r.expires_in_ms.map_or("-".to_owned(), |ms| format!("{:.1}s", ms as f64 / 1000.0));
        table.push([
            kind.singular().to_owned(),
            r.name.clone(),
            r.holder.clone().unwrap_or_else(|| "-".to_owned()),
            r.token.to_string(),
            left,
            r.address.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    let widths: Vec<usize> =
        (0..6).map(|c| table.iter().map(|row| row[c].chars().count()).max().unwrap_or(0)).collect();
    for row in &table {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

fn check_grace(grace: Option<Duration>, ttl: Duration) -> anyhow::Result<Duration> {
    let most = ttl / 10;
    match grace {
        None => Ok(most.min(Duration::from_secs(1))),
        Some(g) if g <= most => Ok(g),
        Some(g) => Err(anyhow!(
            "--grace {} is longer than a tenth of --ttl {} ({}): the command could still run when another \
             holder gets the lock; shorten --grace or lengthen --ttl",
            humantime::format_duration(g),
            humantime::format_duration(ttl),
            humantime::format_duration(most)
        )),
    }
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("{s:?} is not NAME=VALUE"))
}

fn parse_dir(s: &str) -> Result<(PathBuf, String), String> {
    let (host, guest) = s.split_once("::").unwrap_or((s, s));
    Ok((PathBuf::from(host), guest.to_owned()))
}

fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: usize = digits.parse().map_err(|_| format!("{s:?} is not a size such as 64MiB"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        other => return Err(format!("unknown unit {other:?}: use B, KiB, MiB or GiB")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s} is too large"))
}

fn leader_line(read: &Read) -> String {
    match read {
        Read::Held(l) => format!("{} {} {}", l.holder, l.address.as_deref().unwrap_or("-"), l.token),
        Read::Free { .. } => "none".into(),
    }
}

async fn leader(url: &str, name: &str, watch: bool, eds: Option<EdsFile>) -> anyhow::Result<ExitCode> {
    mpsync_core::validate_name(name).map_err(|e| anyhow!("invalid election name {name:?}: {e}"))?;
    let client = Client::new(url);
    let mut sent = Instant::now();
    let mut read = match client.read(Kind::Election, name, None).await {
        Ok(read) => read,
        // An endpoint file is written at once, even before the elector
        // answers (Envoy refuses to start without it): no leader yet.
        Err(e) if eds.is_some() => {
            eprintln!("mpsync: {e}; no endpoint until the elector answers");
            Read::Free { version: 0 }
        }
        Err(e) => return Err(e.into()),
    };
    // What the endpoint file says, and until when that may be trusted
    // without hearing from the elector: the lease's expiry, counted from
    // when the read was sent. The file is written before the line is
    // printed, so a line means the file says the same.
    let mut written = read.leader();
    let mut trusted_until = valid_until(&read, sent);
    if let Some(file) = &eds {
        file.write(written.as_ref(), read.version())?;
    }
    println!("{}", leader_line(&read));
    if !watch {
        return Ok(ExitCode::SUCCESS);
    }
    let mut pause = Duration::from_millis(100);
    loop {
        sent = Instant::now();
        let next = match client.read(Kind::Election, name, Some((read.version(), Duration::from_secs(60)))).await {
            Ok(next) => next,
            Err(e) => {
                // Without an endpoint file, a watcher that cannot watch
                // says so and stops. With one, it keeps trying, and once
                // the last leader's lease may have run out it routes to
                // nobody rather than to a leader it can no longer vouch for.
                let Some(file) = &eds else { return Err(e.into()) };
                eprintln!("mpsync: {e}; trying again in {pause:?}");
                if written.is_some() && Instant::now() >= trusted_until {
                    eprintln!(
                        "mpsync: the last leader's lease may have run out: no endpoint until the elector answers"
                    );
                    file.write(None, read.version())?;
                    written = None;
                    println!("none");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        pause = Duration::from_millis(100);
        trusted_until = valid_until(&next, sent);
        let leader = next.leader();
        if leader != written {
            if let Some(file) = &eds {
                file.write(leader.as_ref(), next.version())?;
            }
            println!("{}", leader_line(&next));
            written = leader;
        }
        read = next;
    }
}

/// Until when a read sent at `sent` vouches for its leader.
fn valid_until(read: &Read, sent: Instant) -> Instant {
    match read {
        Read::Held(view) => sent + Duration::from_millis(view.expires_in_ms),
        Read::Free { .. } => sent,
    }
}

async fn lock_command(
    url: &str,
    name: &str,
    options: Options,
    timeout: Option<Duration>,
    grace: Duration,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("finding the mpsync executable to run the watchdog")?;
    let lease = Lease::new(Client::new(url), Kind::Lock, name, options).map_err(|e| anyhow!("{e}"))?;
    let wait = timeout.unwrap_or(Duration::from_secs(100 * 365 * 24 * 3600));
    let granted = match lease.acquire(wait).await {
        Ok(g) => g,
        Err(mpsync_client::Error::Timeout) => {
            eprintln!("mpsync: lock {name} not acquired within {}", humantime::format_duration(wait));
            return Ok(ExitCode::from(4));
        }
        Err(e) => return Err(anyhow!("lock {name}: {e}")),
    };
    eprintln!("mpsync: holding lock {name} (fencing token {})", granted.token);
    let mut deadlines = lease.deadlines();
    let (mut watchdog, mut exit) = Watchdog::start(Launch {
        exe: &exe,
        command,
        env: vec![("MPSYNC_LOCK_TOKEN".into(), granted.token.to_string()), ("MPSYNC_LOCK_NAME".into(), name.into())],
        grace,
        deadline: granted.valid_until,
    })
    .await
    .with_context(|| format!("starting {}", command[0]))?;
    let mut changes = lease.changes();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    // Why the command is being stopped, once it is.
    let mut stopping: Option<ExitCode> = None;
    loop {
        let held = lease.held();
        let lost = async {
            match held {
                // The state machine reports the loss at the deadline; look
                // again then, or when anything changes.
                Some(h) => tokio::time::sleep_until(h.valid_until.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            status = &mut exit => {
                let status = status.context("waiting for the watchdog")??;
                let held = lease.held().is_some();
                if held {
                    let _ = lease.release().await;
                }
                if let Some(code) = stopping {
                    return Ok(code);
                }
                if !held {
                    // Lost while the command ran (the watchdog stopped it at
                    // the deadline while mpsync itself was frozen, say).
                    // Same words as below: which of the two sees it first
                    // is a race.
                    eprintln!("mpsync: lost lock {name}; stopping the command");
                    return Ok(ExitCode::from(3));
                }
                return Ok(ExitCode::from(status.code().unwrap_or(128).clamp(0, 255) as u8));
            }
            changed = deadlines.changed(), if stopping.is_none() => {
                if changed.is_ok() && let Some(deadline) = *deadlines.borrow_and_update() {
                    // A watchdog that is gone has stopped the command; its
                    // exit is handled above.
                    let _ = watchdog.set_deadline(deadline).await;
                }
            }
            _ = changes.changed(), if stopping.is_none() => {}
            () = lost, if stopping.is_none() => {}
            () = async { tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} } }, if stopping.is_none() => {
                stopping = Some(ExitCode::from(143));
                let _ = watchdog.stop().await;
            }
        }
        if stopping.is_none() && lease.held().is_none() {
            eprintln!("mpsync: lost lock {name}; stopping the command");
            stopping = Some(ExitCode::from(3));
            let _ = watchdog.stop().await;
        }
    }
}

/// Turns `true` on the first SIGTERM or SIGINT.
fn stop_on_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => drop(tokio::signal::ctrl_c().await),
        }
        tx.send_replace(true);
    });
    rx
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Run { elector, env, dirs, max_memory, max_cpu, no_sync_imports, no_cache, app, args } => {
            run(
                &app,
                RunOptions {
                    elector: elector.elector,
                    args,
                    env,
                    dirs,
                    max_memory,
                    max_cpu,
                    link_sync: !no_sync_imports,
                    program: app.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                    stop: Some(stop_on_signal()),
                },
                !no_cache,
            )
            .await
        }
        Command::Lock { elector, ttl, timeout, holder, grace, name, command } => {
            let holder = holder.unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
            match check_grace(grace, ttl) {
                Ok(grace) => {
                    lock_command(
                        &elector.elector,
                        &name,
                        Options { ttl, holder, address: None },
                        timeout,
                        grace,
                        &command,
                    )
                    .await
                }
                Err(e) => Err(e),
            }
        }
        Command::Watchdog { control, grace_ms, deadline_ns, command } => {
            let code = mpsync::watchdog::run(
                &control,
                Duration::from_millis(grace_ms),
                Duration::from_nanos(deadline_ns),
                &command,
            );
            return ExitCode::from(code.clamp(0, 255) as u8);
        }
        Command::Leader { elector, watch, name, envoy_eds, cluster } => {
            let eds = match (envoy_eds, cluster) {
                (Some(_), _) if !watch => {
                    Some(Err(anyhow!("--envoy-eds needs --watch: the file must follow the leader")))
                }
                (Some(path), Some(cluster)) => Some(EdsFile::new(&path, &cluster)),
                (Some(_), None) => {
                    Some(Err(anyhow!("--envoy-eds needs --cluster: the Envoy cluster the endpoints are for")))
                }
                (None, Some(_)) => Some(Err(anyhow!("--cluster is for --envoy-eds"))),
                (None, None) => None,
            };
            match eds.transpose() {
                Ok(eds) => leader(&elector.elector, &name, watch, eds).await,
                Err(e) => Err(e),
            }
        }
        Command::Ls { elector, what, held, page_size, json } => ls(&elector.elector, what, held, page_size, json).await,
    };
    result.unwrap_or_else(|e| {
        eprintln!("mpsync: {e:#}");
        ExitCode::from(2)
    })
}

async fn run(app: &std::path::Path, options: RunOptions, cache: bool) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::new(cache)?;
    let component = runtime.load(app)?;
    match runtime.run(&component, &app.display().to_string(), &options).await {
        Ok(code) => Ok(ExitCode::from(code.clamp(0, 255) as u8)),
        // The conventional code for "ended by SIGTERM", after a clean release.
        Err(mpsync::runtime::RunError::Stopped) => Ok(ExitCode::from(143)),
        Err(e) => Err(e.into()),
    }
}
