//! The command line: every command, flag and its help text, and the
//! parsers of flag values.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::health::{self, Probe};

/// Locks and leader elections for WebAssembly apps and commands, through a
/// metaparticle-sync elector.
///
/// `mpsync run` runs a wasm command component and provides the
/// metaparticle:sync imports natively (leases renewed in the background),
/// plus WASI 0.2 and wasi:http. `mpsync lock` holds a lock while a command
/// runs. `mpsync elect` stands in an election on behalf of a server it
/// runs, resigning when the server exits or fails its health check.
/// `mpsync leader` prints (or watches) the leaders of elections, and can
/// keep them as Envoy endpoint files;
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

/// Whether leases are claimed under a session with the elector.
#[derive(Debug, Args)]
pub struct SessionArg {
    /// Hold leases without a session with the elector. With one (the
    /// default), the elector releases them the moment this process exits,
    /// however it exits (a successor gets in within milliseconds); without
    /// one, a dead holder's leases run out at their TTL. A frozen holder
    /// waits out its TTL either way. An elector that is not on this
    /// machine's loopback opens no session, and leases are then held
    /// without one. MPSYNC_NO_SESSION takes 1/0, true/false, yes/no.
    #[arg(long, env = "MPSYNC_NO_SESSION", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_session: bool,
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
        #[command(flatten)]
        session: SessionArg,
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
    /// Waiters get the lock in the order they came (a fair lock): a
    /// release hands it to the next waiter at once.
    ///
    /// The lock is released when the command exits. The command never
    /// outlives the lease: it runs in a process group of its own under a
    /// watchdog process that sends SIGTERM at the deadline (or as soon as
    /// the lock is lost) and SIGKILL --grace later, even if mpsync itself is
    /// frozen; if mpsync dies, the group gets SIGKILL at once. The lock is
    /// held under a session with the elector (unless --no-session), which
    /// the watchdog and the command keep open until the whole group is gone
    /// (leave the inherited socket alone): so when mpsync is killed, the
    /// lock is released within milliseconds and never while the command
    /// could still act.
    ///
    /// Exits with the command's code; 2 if the elector stays unreachable
    /// (it is retried for one TTL, or --timeout if shorter) or the input is
    /// wrong; 3 if the lock was lost; 4 if it could not be acquired within
    /// --timeout; 143 on SIGTERM or SIGINT.
    Lock {
        #[command(flatten)]
        elector: ElectorArg,
        #[command(flatten)]
        session: SessionArg,
        /// Lease duration (renewed at a third of it).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Give up if the lock is not acquired within this long.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        /// Holder id (default: HOSTNAME-PID).
        #[arg(long)]
        holder: Option<String>,
        /// Hold the lock shared: as one of any number of readers of a
        /// read-write lock (a plain `mpsync lock` is the writer: it waits
        /// for every reader, and readers that come after a waiting writer
        /// wait behind it).
        #[arg(long)]
        shared: bool,
        /// Hold one of N permits of a counting semaphore (implies
        /// --shared): at most N holders at once, each with its own fencing
        /// token; the command also gets MPSYNC_LOCK_PERMIT (0 to N-1).
        /// Every holder of the name must ask for the same N.
        #[arg(long, value_name = "N")]
        permits: Option<u32>,
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
    /// Stand in an election on behalf of a server: run CMD, and campaign
    /// for it while it runs and passes its health check, so that no dead
    /// or sick server keeps leading.
    ///
    /// CMD starts at once and serves whether or not it leads. mpsync
    /// prints one line per change on stdout, `leading with token N` or `not
    /// leading` (the first line is `not leading`). It resigns at once when
    /// CMD exits or is killed, and exits with CMD's code (128 + the signal
    /// if it was killed). With a health check (--health-http or
    /// --health-tcp), the server is unhealthy until a first probe passes
    /// and after --health-threshold failures in a row: mpsync then resigns
    /// (CMD keeps running, the probes go on) and stands again at the next
    /// probe that passes. A lease lost (the elector unreachable past the
    /// local deadline) is `not leading`, and mpsync campaigns again.
    ///
    /// CMD gets MPSYNC_ELECT_NAME (the election) and, with --leader-file,
    /// MPSYNC_ELECT_LEADER_FILE: a file rewritten whole (write, then
    /// rename) at every change and renewal, one JSON object on one line:
    /// `{"name":"web","leader":true,"token":7,"valid_until_ms":...}`, or
    /// `"leader":false` with `token` and `valid_until_ms` null.
    /// `valid_until_ms` is the lease's local deadline (Unix milliseconds):
    /// a leader that acts past it may no longer lead. The file is written
    /// before the stdout line. If mpsync dies, CMD gets SIGTERM.
    ///
    /// On SIGTERM or SIGINT: resign, send SIGTERM to CMD's process group,
    /// wait for CMD, exit 143. Exits with CMD's code; 2 if the input is
    /// wrong, CMD cannot start, the elector stays unreachable at start
    /// (read for one TTL before CMD starts), or the leader file cannot be
    /// written (then mpsync resigns and stops CMD first); 143 on SIGTERM or
    /// SIGINT.
    Elect {
        #[command(flatten)]
        elector: ElectorArg,
        #[command(flatten)]
        session: SessionArg,
        /// The address CMD serves on, advertised as the leader's (IP:PORT).
        #[arg(long, value_name = "IP:PORT", value_parser = parse_address)]
        address: String,
        /// Lease duration (renewed at a third of it). A candidate that
        /// dies with mpsync (SIGKILL) is replaced at once through its
        /// session; with --no-session it leads until the lease runs out,
        /// and so does a frozen one (SIGSTOP) either way.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Candidate id (default: HOSTNAME-PID).
        #[arg(long)]
        holder: Option<String>,
        /// Health check: GET of a plain http:// URL, healthy on a 2xx or
        /// 3xx status.
        #[arg(long, value_name = "URL", value_parser = health::parse_http, conflicts_with = "health_tcp")]
        health_http: Option<Probe>,
        /// Health check: a TCP connect to HOST:PORT, healthy when accepted.
        #[arg(long, value_name = "HOST:PORT", value_parser = health::parse_tcp)]
        health_tcp: Option<Probe>,
        /// Time between probes; also each probe's timeout.
        #[arg(long, default_value = "1s", value_parser = parse_period)]
        health_period: Duration,
        /// Failed probes in a row that make the server unhealthy.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
        health_threshold: u32,
        /// Keep this file telling the leadership (JSON; see above).
        #[arg(long, value_name = "PATH")]
        leader_file: Option<PathBuf>,
        /// The election name.
        name: String,
        /// The server to run and its arguments (after `--`).
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
        /// The lock's session socket, inherited: kept open until the
        /// command's process group is gone.
        #[arg(long)]
        session_fd: Option<i32>,
        /// The command.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// List the locks and elections the elector keeps: name, holder (or
    /// `-` when free; a lock held shared lists its holders, each semaphore
    /// holder with its permit, `a[0] b[1] (2 of 3)`), fencing token, time
    /// left on the lease, for an election the leader's address, and for a
    /// lock who waits in line, next first (`2: b c*`; `*` waits to share).
    /// Reads every page of `GET /v1/locks` and `GET /v1/elections`.
    ///
    /// With --history NAME, instead the last changes of holder of that lock
    /// and election the elector saw (`GET /v1/{locks,elections}/NAME/history`);
    /// with --history alone, the recent changes across names (`GET
    /// /v1/history`, the last 4,096 at most): when, which, from whom to
    /// whom, the fencing token after, and why (acquired, released, expired,
    /// session_ended, transferred). Each elector keeps its own history,
    /// from the time it started (its --history flag).
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
        /// The changes of holder of NAME (alone: of every name), oldest
        /// first, instead of the holders now.
        #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
        history: Option<String>,
        /// One JSON object per line (the API's fields plus `kind`) instead
        /// of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the leader of one or more elections: `LEADER ADDRESS TOKEN`
    /// (or `none`) for one NAME; for several (or --from-file), one line each,
    /// in the order given and prefixed by the election's name, `NAME LEADER
    /// ADDRESS TOKEN` or `NAME none`. With --watch, then print every change
    /// of leader as it happens, prefixed the same way. However many
    /// elections are followed, it is with one watch: one long-poll parked
    /// at the elector (`POST /v1/watch`), up to the elector's
    /// --max-watch-names (10,000 unless told otherwise).
    ///
    /// With --envoy-eds FILE --cluster NAME (one election, and --watch),
    /// also keep FILE an Envoy endpoint assignment (EDS,
    /// `path_config_source`) for cluster NAME holding only the leader, with
    /// its id and fencing token as endpoint metadata (`metaparticle.sync`:
    /// `leader_id`, `leader_token`): leader-only routing with no filter. No
    /// leader: no endpoint (Envoy answers 503 at once). With --envoy-eds-dir
    /// DIR (any number of elections), keep one such file per election,
    /// DIR/ELECTION.json, for the cluster --cluster-template names. Every
    /// file is written at the start, empty if the elector does not answer
    /// yet, and replaced whole (write, then rename) at each change of its
    /// own election's leader, before that change's line is printed. If the
    /// elector stops answering, the watch keeps trying (backing off, and no
    /// sooner than a 429's retry-after asks), and empties each file once
    /// its own last leader's lease may have run out.
    ///
    /// Exits with 0 once the leaders are printed (without --watch); 2 if a
    /// name or a flag is wrong (before anything is sent), if the elector
    /// refuses the watch (more names than its --max-watch-names), or, with
    /// no endpoint file, if it cannot be reached.
    ///
    /// With --transfer-to ID or --transfer-away (one election): ask its
    /// leader to hand over, to the candidate ID or to anyone else
    /// (`POST /v1/elections/NAME/transfer`). The leader's mpsync learns it
    /// at its next renewal (within a third of its TTL) and resigns; for
    /// one TTL after that, only ID (or anyone but the old leader) can win.
    /// Prints `asked LEADER to hand over to ID` (or `to anyone else`).
    /// With --from ID, only if ID leads now (otherwise nothing is asked and
    /// it exits 0: for a preStop hook, `--transfer-away --from POD`).
    /// With --wait, then wait until someone else leads and print it
    /// (`LEADER ADDRESS TOKEN`). Exits 0 once asked (and, with --wait,
    /// handed over), or when there is nothing to do (ID leads already;
    /// --from's candidate does not lead); 3 if nobody leads (without
    /// --from); 4 if --wait ran out first; 2 on errors.
    Leader {
        #[command(flatten)]
        elector: ElectorArg,
        /// Keep watching and print each change.
        #[arg(long)]
        watch: bool,
        /// Also follow the elections named in FILE, one a line (`-`: read
        /// them from stdin). Blank lines and lines starting with # are
        /// skipped.
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
        /// Keep this file an Envoy EDS assignment of the leader (.json or
        /// .yaml); one election only.
        #[arg(long, value_name = "FILE", conflicts_with = "envoy_eds_dir")]
        envoy_eds: Option<PathBuf>,
        /// The Envoy cluster the assignment is for (with --envoy-eds).
        #[arg(long, value_name = "NAME", conflicts_with = "envoy_eds_dir")]
        cluster: Option<String>,
        /// Keep DIR/ELECTION.json an Envoy EDS assignment of each
        /// election's leader (the folder must exist; Envoy watches it).
        #[arg(long, value_name = "DIR")]
        envoy_eds_dir: Option<PathBuf>,
        /// Each file's cluster name (with --envoy-eds-dir), where {name}
        /// stands for the election, e.g. shard-{name} [default: {name}]
        #[arg(long, value_name = "TEMPLATE")]
        cluster_template: Option<String>,
        /// Ask the leader to hand over to the candidate ID (see above).
        #[arg(long, value_name = "ID", group = "transfer", conflicts_with_all = ["watch", "from_file", "envoy_eds", "envoy_eds_dir"])]
        transfer_to: Option<String>,
        /// Ask the leader to hand over to any other candidate.
        #[arg(long, group = "transfer", conflicts_with_all = ["watch", "from_file", "envoy_eds", "envoy_eds_dir"])]
        transfer_away: bool,
        /// With a transfer: ask only if the candidate ID leads now. From
        /// MPSYNC_TRANSFER_FROM when not given (a preStop hook has no shell
        /// to expand $POD_NAME in); ignored without a transfer.
        #[arg(long = "from", value_name = "ID", env = "MPSYNC_TRANSFER_FROM")]
        transfer_from: Option<String>,
        /// With a transfer: wait up to this long for another leader, e.g.
        /// 30s.
        #[arg(long, value_name = "DURATION", requires = "transfer", value_parser = humantime::parse_duration)]
        wait: Option<Duration>,
        /// The election names.
        #[arg(value_name = "NAME", value_parser = parse_election_name, required_unless_present = "from_file")]
        names: Vec<String>,
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

fn parse_election_name(s: &str) -> Result<String, String> {
    mpsync_core::validate_name(s).map(|()| s.to_owned()).map_err(|e| format!("invalid election name {s:?}: {e}"))
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

fn parse_address(s: &str) -> Result<String, String> {
    s.parse::<std::net::SocketAddr>().map(|_| s.to_owned()).map_err(|_| format!("{s:?} is not IP:PORT"))
}

fn parse_period(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("the period must be longer than 0".into()),
        Ok(d) if d > Duration::from_secs(3600) => Err("the period must be at most 1h".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}
