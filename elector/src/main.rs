//! `elector`: the metaparticle-sync sidecar. Parses flags, sets up logging,
//! binds and serves until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser, ValueEnum};
use elector::leader_service::LeaderService;
use elector::service::Service;
use elector::store::etcd::EtcdConfig;
use elector::store::{EtcdStore, KubernetesStore, MemoryStore, Store};

/// Where records are kept.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum StoreKind {
    /// In this process's memory: one elector serves every app on one
    /// machine. Safe across restarts through --state-file: tokens continue
    /// above every earlier one, and after a crash no lease is granted until
    /// the longest one the previous process granted has run out.
    Memory,
    /// etcd v3 (--etcd-endpoints): electors on many machines outside
    /// Kubernetes share it. Records are bound to this elector's etcd lease;
    /// fencing tokens are etcd revisions.
    Etcd,
    /// Kubernetes Lease objects (coordination.k8s.io/v1) in --namespace,
    /// through the pod's service account or the kubeconfig.
    Kubernetes,
}

/// The metaparticle-sync elector: named locks and leader elections over
/// HTTP for the apps next to it.
///
/// Apps (the mpsync host, the guest component, the Envoy leader filter, or
/// the original metaparticle libraries) talk to it on loopback. Two
/// surfaces share one port: the original `GET`/`PUT /locks/{name}`, which
/// holds locks as this elector's --identity for --ttl, and the versioned
/// `/v1/locks/{name}` and `/v1/elections/{name}` (acquire, renew, release
/// at once, long-poll for changes, fencing tokens), and sessions: a holder
/// that opens one (`POST /v1/sessions`, from loopback) and claims under it
/// has every lease under it released at once when its end of the session
/// closes (its process exited). The API is described in
/// elector/openapi.yaml; `/healthz`, `/readyz` and `/metrics` serve
/// operations.
///
/// On start it prints one line to stdout, `elector listening on
/// http://ADDR`, with the bound address (useful with --listen
/// 127.0.0.1:0). SIGTERM or SIGINT: stop accepting, answer pending
/// long-polls, finish requests in flight, exit 0.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Address to listen on. Keep it on loopback unless the elector must be
    /// reached from elsewhere: the API has no authentication. Port 0 picks a
    /// free port.
    #[arg(long, env = "ELECTOR_LISTEN", default_value = "127.0.0.1:13131")]
    listen: SocketAddr,

    /// A second address serving only /healthz, /readyz and /metrics, for
    /// probes and scrapers that must not reach the lease API (in a pod:
    /// --listen 127.0.0.1:13131 --health-listen 0.0.0.0:13132). It has the
    /// same limits as --listen (--max-connections of its own,
    /// --header-read-timeout, --max-header-bytes).
    #[arg(long, env = "ELECTOR_HEALTH_LISTEN")]
    health_listen: Option<SocketAddr>,

    /// Who this elector is on the compatible surface: the holder recorded
    /// when an original client PUTs /locks/{name}. Defaults to the hostname
    /// (the pod name in Kubernetes), as the original elector did.
    #[arg(long, env = "ELECTOR_IDENTITY")]
    identity: Option<String>,

    /// Lease duration for locks taken through the compatible surface
    /// (original clients heartbeat every 10 s). Examples: 30s, 1500ms, 2m.
    #[arg(long, env = "ELECTOR_TTL", default_value = "30s", value_parser = parse_ttl)]
    ttl: Duration,

    /// Where records are kept.
    #[arg(long, env = "ELECTOR_STORE", value_enum, default_value = "memory")]
    store: StoreKind,

    /// The memory store's state file (with --store memory): the next token
    /// to hand out and the longest TTL granted, so that a restart keeps
    /// tokens growing and waits out the leases granted before it (a few
    /// dozen bytes; one fsync per 65,536 writes and per new longest TTL).
    /// Default: $STATE_DIRECTORY/elector.json (systemd), else
    /// $XDG_STATE_HOME/metaparticle-sync/elector.json, else
    /// ~/.local/state/metaparticle-sync/elector.json. One elector per file.
    #[arg(long, env = "ELECTOR_STATE_FILE")]
    state_file: Option<std::path::PathBuf>,

    /// Most records the memory store keeps at once (held, or waited on).
    /// Released records are forgotten at once; past the cap, a new name is
    /// refused with 503 and retry-after until leases are released or run
    /// out.
    #[arg(long, env = "ELECTOR_MAX_RECORDS", default_value_t = elector::store::memory::DEFAULT_MAX_RECORDS)]
    max_records: usize,

    /// Most connections open at once on each listening address; one more
    /// is answered 503 with retry-after and closed. Keep it (twice it, with
    /// --health-listen) under the process's file limit. The API port
    /// speaks HTTP/1.1 and HTTP/2 with prior knowledge (h2c: one connection
    /// per Envoy worker carries its calls, up to 128 at once); the probe
    /// port HTTP/1.1.
    #[arg(long, env = "ELECTOR_MAX_CONNECTIONS", default_value_t = elector::server::Limits::default().max_connections)]
    max_connections: usize,

    /// Most long-polls (`GET ...?wait=`, watches over many names `POST
    /// /v1/watch`, and claims parked in a lock's line) parked at once; one
    /// more gets 429 with retry-after. A watch counts once, whatever the
    /// number of names it follows.
    #[arg(long, env = "ELECTOR_MAX_LONG_POLLS", default_value_t = elector::service::DEFAULT_MAX_LONG_POLLS)]
    max_long_polls: usize,

    /// The longest a long-poll (`GET ...?wait=`, `POST /v1/watch`) parks,
    /// whatever `timeout_ms` it asks for (it then answers as at its
    /// timeout). Behind a proxy that closes idle connections, set it below
    /// the proxy's idle timeout.
    #[arg(long, env = "ELECTOR_MAX_POLL_WAIT", default_value = "5m", value_parser = humantime::parse_duration)]
    max_poll_wait: std::time::Duration,

    /// Most names one watch (`POST /v1/watch`) may follow; a watch naming
    /// more gets 400. The default is the Envoy leader filter's default
    /// `max_elections`, so that one watch per Envoy worker covers every
    /// election the filter lets a worker follow.
    #[arg(long, env = "ELECTOR_MAX_WATCH_NAMES", default_value_t = mpsync_core::watch::DEFAULT_MAX_WATCH_NAMES)]
    max_watch_names: usize,

    /// Most names the watch sets kept between a watcher's watches hold in
    /// all (`keep`/`resume` on `POST /v1/watch`: a kept set lets the next
    /// watch send only what changed instead of every name). A set that
    /// would go past it (a new one, or one grown) is served but not kept,
    /// and its watcher sends whole sets (a grown one after one 410); a set
    /// nobody resumes for a minute is dropped. 0 keeps none. The default holds four Envoy workers' sets
    /// at the default --max-watch-names.
    #[arg(long, env = "ELECTOR_MAX_KEPT_WATCH_NAMES", default_value_t = elector::service::DEFAULT_MAX_KEPT_NAMES)]
    max_kept_watch_names: usize,

    /// The longest a claim waits parked in a lock's line before its `202`
    /// (it asks for `wait_ms`, at most half its TTL; this caps it further).
    #[arg(long, env = "ELECTOR_MAX_LINE_WAIT", default_value = "5m", value_parser = humantime::parse_duration)]
    max_line_wait: std::time::Duration,

    /// Changes of holder kept per name in this elector's history (`GET
    /// /v1/history`, `GET /v1/{locks,elections}/{name}/history`, `mpsync ls
    /// --history`); 0 keeps no history. The history starts when the
    /// elector does; the last 4,096 changes across names stay for readers
    /// that follow it (`after=`).
    #[arg(long, env = "ELECTOR_HISTORY", default_value_t = mpsync_core::history::Limits::default().per_name)]
    history: usize,

    /// Most names whose history is kept; past it, the least recently
    /// changed names' history is forgotten. Each change kept costs about
    /// 230 bytes: 1,000 names of 32 changes about 7 MiB, 10,000 about 72
    /// MiB (more than the example manifests' 64 MiB memory limit).
    #[arg(long, env = "ELECTOR_HISTORY_NAMES", default_value_t = mpsync_core::history::Limits::default().names)]
    history_names: usize,

    /// Most sessions (`POST /v1/sessions`) open at once; one more gets 429
    /// with retry-after. Each holds a connection that --max-connections does
    /// not count: keep both together under the process's file limit.
    #[arg(long, env = "ELECTOR_MAX_SESSIONS", default_value_t = elector::service::DEFAULT_MAX_SESSIONS)]
    max_sessions: usize,

    /// Time a client has to send a request's headers; also how long an idle
    /// keep-alive connection (HTTP/1.1, or HTTP/2 with no request in
    /// flight) is kept open.
    #[arg(long, env = "ELECTOR_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    header_read_timeout: Duration,

    /// Largest request line plus headers, in bytes (431 past it; at least
    /// 8192).
    #[arg(long, env = "ELECTOR_MAX_HEADER_BYTES", default_value_t = elector::server::Limits::default().max_header_bytes)]
    max_header_bytes: usize,

    /// etcd endpoints, comma-separated (with --store etcd).
    #[arg(long, env = "ELECTOR_ETCD_ENDPOINTS", value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    etcd_endpoints: Vec<String>,

    /// Prefix of every etcd key the elector writes (with --store etcd).
    #[arg(long, env = "ELECTOR_ETCD_PREFIX", default_value = "/metaparticle-sync/")]
    etcd_prefix: String,

    /// TTL of this elector's etcd lease, which its records are bound to: if
    /// the elector dies, etcd deletes them this long after its last word.
    /// Leases taken through it may last at most half of this.
    #[arg(long, env = "ELECTOR_ETCD_LEASE_TTL", default_value = "90s", value_parser = parse_ttl)]
    etcd_lease_ttl: Duration,

    /// Namespace of the Lease objects (with --store kubernetes). Default:
    /// the service account's namespace in a pod, else the kubeconfig
    /// context's.
    #[arg(long, env = "ELECTOR_NAMESPACE")]
    namespace: Option<String>,

    /// Kubeconfig file (with --store kubernetes). Default: $KUBECONFIG,
    /// ~/.kube/config, else the pod's service account.
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,

    /// Write a Kubernetes Event on the Lease at each change of holder (with
    /// --store kubernetes), as client-go's leader election does: reason
    /// LeaderElection (elections) or LockHolder (locks), a note such as
    /// "pod-b became leader (token 4; pod-a's lease expired)", reported by
    /// metaparticle.io/elector and this elector's --identity; `kubectl
    /// events --for lease/election.NAME` lists them. Sent in the
    /// background: an Event never delays or fails a lease. One the API
    /// refuses (RBAC: create on events in events.k8s.io) or that finds 1,024
    /// waiting is dropped, counted in mpsync_store_calls_total{call="event_dropped"}
    /// and logged at most once a minute. false: none.
    #[arg(long, env = "ELECTOR_KUBERNETES_EVENTS", default_value_t = true, action = clap::ArgAction::Set,
          value_name = "BOOL")]
    kubernetes_events: bool,

    /// Keep a Service that reaches only the leader of an election (with
    /// --store kubernetes): ELECTION=SERVICE[:PORT_NAME], repeatable
    /// (comma-separated in the environment), e.g. web=web-leader:http.
    ///
    /// Create SERVICE yourself, without a selector, with a port named
    /// PORT_NAME (or a single unnamed port, PORT_NAME left out): clients
    /// connect to that port, kube-proxy forwards to the leader's advertised
    /// ip:port. The elector keeps the EndpointSlice SERVICE-leader in
    /// --namespace listing that address alone, the leader's id and fencing
    /// token in its annotations sync.metaparticle.io/leader and
    /// sync.metaparticle.io/token, updated at each change of leadership.
    /// While nobody leads (released, or the lease ran out) it lists no
    /// endpoint: connections to the Service are refused. Every pod's
    /// elector may keep the same slice: none writes over a slice written
    /// from a newer view of the election. RBAC: get and update on the
    /// slice (endpointslices, discovery.k8s.io), and create unless the
    /// slice is shipped (deploy/leader-service/ ships it empty, so that no
    /// sidecar may create slices for other Services).
    #[arg(long = "leader-service", env = "ELECTOR_LEADER_SERVICE", value_delimiter = ',',
          value_name = "ELECTION=SERVICE[:PORT_NAME]", value_parser = parse_leader_service)]
    leader_service: Vec<LeaderService>,

    /// Deadline for each call to etcd or the Kubernetes API; a call that
    /// takes longer fails with 503 (retry) instead of hanging the client.
    #[arg(long, env = "ELECTOR_STORE_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    store_timeout: Duration,

    /// Log filter (tracing's EnvFilter syntax), e.g. info, elector=debug.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,

    /// UNSAFE, hidden: the chaos checker's control (chaos/README.md). At
    /// shutdown, release every lease of the sessions this elector ends, as
    /// if their holders had closed them. The checker must find this unsafe.
    #[arg(long, hide = true)]
    chaos_unsafe_release_on_own_close: bool,
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 1500ms, 2m)"))?;
    let ms = ttl.as_millis();
    let (min, max) = (mpsync_core::wire::MIN_TTL_MS, mpsync_core::wire::MAX_TTL_MS);
    if ms < u128::from(min) || ms > u128::from(max) {
        return Err(format!("must be between {min} ms and {} h", max / 3_600_000));
    }
    Ok(ttl)
}

fn parse_leader_service(s: &str) -> Result<LeaderService, String> {
    s.parse()
}

/// Refuses `--leader-service` where it cannot work, as clap refuses a bad
/// flag (usage, exit 2): it needs the cluster, and one Service follows one
/// election.
fn check_leader_services(args: &Args) {
    let conflict = |message: String| Args::command().error(clap::error::ErrorKind::ArgumentConflict, message).exit();
    if !args.leader_service.is_empty() && !matches!(args.store, StoreKind::Kubernetes) {
        conflict("--leader-service needs --store kubernetes: it keeps EndpointSlices in the cluster".into());
    }
    for (i, a) in args.leader_service.iter().enumerate() {
        if let Some(b) = args.leader_service[..i].iter().find(|b| b.service == a.service) {
            conflict(format!(
                "--leader-service: Service {:?} is given for both {:?} and {:?}; one Service follows one election",
                a.service, b.election, a.election
            ));
        }
    }
}

fn default_state_file() -> Option<std::path::PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    if let Some(dirs) = std::env::var("STATE_DIRECTORY").ok().filter(|v| !v.is_empty()) {
        let first = dirs.split(':').next().unwrap_or_default();
        return Some(std::path::Path::new(first).join("elector.json"));
    }
    let base = var("XDG_STATE_HOME").or_else(|| var("HOME").map(|h| h.join(".local/state")))?;
    Some(base.join("metaparticle-sync/elector.json"))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM ({e}); only SIGINT stops the elector");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// jemalloc rather than glibc's heap: the pages of a connection's 8 KiB read
/// buffer that a parked long-poll never writes stay unbacked, so each
/// parked long-poll costs about 7.6 KiB instead of 14.6 (release build,
/// `benches/capacity.rs`).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    check_leader_services(&args);
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log).context("--log")?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let identity = match args.identity {
        Some(id) => id,
        None => gethostname::gethostname()
            .into_string()
            .map_err(|h| anyhow::anyhow!("hostname {h:?} is not UTF-8; pass --identity"))?,
    };
    mpsync_core::wire::validate_holder(&identity).map_err(|e| anyhow::anyhow!("--identity: {}", e.message))?;
    let mut memory = None;
    let mut cluster = None;
    let store: Arc<dyn Store> = match args.store {
        StoreKind::Memory => {
            let path = match &args.state_file {
                Some(path) => path.clone(),
                None => default_state_file().context("no --state-file given and no home to keep one in")?,
            };
            let store = Arc::new(MemoryStore::with_state_file(&path)?.with_max_records(args.max_records));
            let left = store.recovery_left();
            if !left.is_zero() {
                tracing::warn!(
                    state_file = %path.display(),
                    "the previous elector stopped with leases that may still be live: granting none for {} ms",
                    left.as_millis()
                );
            }
            memory = Some(store.clone());
            store
        }
        StoreKind::Etcd => {
            if args.etcd_lease_ttl.subsec_nanos() != 0 {
                anyhow::bail!(
                    "--etcd-lease-ttl must be whole seconds (etcd leases are), not {:?}",
                    args.etcd_lease_ttl
                );
            }
            let mut config = EtcdConfig::new(args.etcd_endpoints.clone());
            config.prefix = args.etcd_prefix.clone();
            config.lease_ttl = args.etcd_lease_ttl;
            config.timeout = args.store_timeout;
            Arc::new(EtcdStore::connect(config).await.context("--store etcd")?)
        }
        StoreKind::Kubernetes => {
            // One client for the Leases and the leader Services' slices.
            let (client, default_namespace) = elector::leader_service::cluster::connect(args.kubeconfig.as_deref())
                .await
                .context("--store kubernetes")?;
            let namespace = args.namespace.clone().unwrap_or(default_namespace);
            cluster = Some((client.clone(), namespace.clone()));
            let store = KubernetesStore::with_client(client, namespace, args.store_timeout);
            Arc::new(if args.kubernetes_events { store.with_events(&identity) } else { store })
        }
    };
    let max_ttl = Duration::from_millis(store.max_ttl_ms());
    if args.ttl > max_ttl {
        anyhow::bail!(
            "--ttl {:?} is longer than the {} store can guard ({max_ttl:?}){}",
            args.ttl,
            store.name(),
            if matches!(args.store, StoreKind::Etcd) { "; raise --etcd-lease-ttl to twice the TTL" } else { "" }
        );
    }
    for spec in &args.leader_service {
        let key = elector::store::Key { kind: mpsync_core::Kind::Election, name: spec.election.clone() };
        store.check_name(&key).map_err(|e| anyhow::anyhow!("--leader-service: election {:?}: {e}", spec.election))?;
    }
    let listener = listen(args.listen).with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    // Bound before the line below, so whoever waits for it can probe at once.
    let health_listener = match args.health_listen {
        Some(health) => Some(listen(health).with_context(|| format!("binding {health}"))?),
        None => None,
    };
    tracing::info!(%addr, store = store.name(), %identity, ttl = ?args.ttl, "elector starting");
    println!("elector listening on http://{addr}");
    let mut service = Service::new(store, identity, args.ttl)
        .with_max_long_polls(args.max_long_polls)
        .with_max_watch_names(args.max_watch_names)
        .with_max_kept_watch_names(args.max_kept_watch_names)
        .with_max_poll_wait(args.max_poll_wait)
        .with_max_line_wait(args.max_line_wait)
        .with_max_sessions(args.max_sessions);
    if args.chaos_unsafe_release_on_own_close {
        // An error, not a warning: it must show even under --log error.
        tracing::error!(
            "UNSAFE: --chaos-unsafe-release-on-own-close is on: at shutdown this elector releases the leases of \
             the sessions it ends while their holders may still act under them. For the chaos checker's control \
             only; never run it in production"
        );
        service = service.with_unsafe_release_on_own_close();
    }
    if args.history > 0 {
        let limits = mpsync_core::history::Limits {
            per_name: args.history,
            names: args.history_names.max(1),
            ..mpsync_core::history::Limits::default()
        };
        service = service.with_history(limits);
        // Served once the history knows who holds what (a store that does
        // not answer delays the start by --store-timeout at most): every
        // change made through this elector is then in it.
        let _ = tokio::time::timeout(args.store_timeout, service.history_listed()).await;
    }
    let service = Arc::new(service);
    let keepers = match &cluster {
        Some((client, namespace)) => {
            elector::leader_service::spawn(&service, client, namespace, &args.leader_service, args.store_timeout)
        }
        None => Vec::new(),
    };
    let limits = elector::server::Limits {
        max_connections: args.max_connections,
        header_read_timeout: args.header_read_timeout,
        max_header_bytes: args.max_header_bytes,
    };
    // One signal stops both listeners.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let health = match health_listener {
        Some(listener) => {
            tracing::info!(addr = %listener.local_addr()?, "health endpoints listening");
            let serving = elector::server::serve_health(listener, service.clone(), limits, until_stopped());
            Some(tokio::spawn(serving))
        }
        None => None,
    };
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.send_replace(true);
    });
    elector::server::serve(listener, service, limits, until_stopped()).await.context("serving")?;
    if let Some(health) = health {
        health.await.context("the health listener")?.context("serving health endpoints")?;
    }
    // They stop as the service does; the slices stay as they are.
    for keeper in keepers {
        keeper.await.context("a leader Service's keeper")?;
    }
    if let Some(memory) = memory {
        match memory.stop() {
            Ok(true) => tracing::info!("no lease live: the next start need not wait"),
            Ok(false) => tracing::info!("leases still live: the next start waits them out"),
            Err(e) => tracing::warn!("{e}"),
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// A listener with a backlog of 4,096 connections not yet accepted (the
/// kernel caps it at `net.core.somaxconn`): an Envoy with thousands of
/// shards opens a long-poll connection per shard and worker at once, and
/// tokio's default of 1,024 dropped the rest until their connect timed out.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
