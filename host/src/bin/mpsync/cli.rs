//! The command line: every command, flag and its help text, and the
//! parsers of flag values.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

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
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (tracing's EnvFilter syntax). Logs go to stderr.
    #[arg(long, global = true, env = "RUST_LOG", default_value = "warn")]
    pub log: String,
}

#[derive(Debug, Args)]
pub struct ElectorArg {
    /// The elector's URL.
    #[arg(long, env = "MPSYNC_ELECTOR", default_value = "http://127.0.0.1:13131")]
    pub elector: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a wasm command component (wasm32-wasip2 `bin`). Leases it still
    /// holds are released when it ends, traps, is stopped by a limit, or
    /// when mpsync gets SIGTERM or SIGINT.
    ///
    /// Exits with the guest's exit code; 2 with a one-line message if the
    /// file is not a command component mpsync can run, the guest traps or
    /// goes over --max-memory or --max-cpu; 143 on SIGTERM or SIGINT.
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
    /// frozen; if mpsync dies, the group gets SIGKILL at once.
    ///
    /// Exits with the command's code; 2 if the elector stays unreachable
    /// (it is retried for one TTL, or --timeout if shorter) or the input is
    /// wrong; 3 if the lock was lost; 4 if it could not be acquired within
    /// --timeout; 143 on SIGTERM or SIGINT.
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
pub enum Listing {
    /// Locks only.
    Locks,
    /// Elections only.
    Elections,
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
