//! What the store suites share: each store under test, running, with an
//! elector over it; the helpers the cases use; and `suite!`, which runs
//! one case per store.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::time::Duration;

use hyper::{Method, StatusCode};
use mpsync_client::{Claimed, Client, Read};
use mpsync_core::wire::{AcquireRequest, ConflictView, Kind, LeaseView};
use testkit::elector::ElectorProcess;
use testkit::{Etcd, LeaseApi};

pub const BIN: &str = env!("CARGO_BIN_EXE_elector");
/// Bound on waits for events that should come in milliseconds; reaching it
/// means the event never came.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A store under test, running.
pub enum Backend {
    Memory,
    Etcd(Etcd),
    Kubernetes { api: LeaseApi, kubeconfig: PathBuf },
    RealCluster { kubeconfig: PathBuf, namespace: String },
}

impl Backend {
    pub async fn start(store: &str) -> Backend {
        match store {
            "memory" => Backend::Memory,
            "etcd" => Backend::Etcd(Etcd::start().await.unwrap()),
            "kubernetes" => {
                let api = LeaseApi::start().await.unwrap();
                let dir = testkit::temp_dir("kubeconfig").unwrap();
                let kubeconfig = api.write_kubeconfig(&dir, "sync-test").unwrap();
                Backend::Kubernetes { api, kubeconfig }
            }
            "real_cluster" => {
                let kubeconfig = std::env::var_os("MPSYNC_TEST_KUBECONFIG")
                    .map(PathBuf::from)
                    .expect("set MPSYNC_TEST_KUBECONFIG to a real cluster's kubeconfig to run these tests");
                let namespace = std::env::var("MPSYNC_TEST_NAMESPACE").unwrap_or_else(|_| "default".into());
                Backend::RealCluster { kubeconfig, namespace }
            }
            other => panic!("no store {other}"),
        }
    }

    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["--log", "warn"].map(String::from).to_vec();
        match self {
            Backend::Memory => args.extend(["--store".into(), "memory".into()]),
            Backend::Etcd(etcd) => {
                args.extend(["--store".into(), "etcd".into(), "--etcd-endpoints".into(), etcd.endpoint()])
            }
            Backend::Kubernetes { kubeconfig, .. } => args.extend([
                "--store".into(),
                "kubernetes".into(),
                "--kubeconfig".into(),
                kubeconfig.display().to_string(),
            ]),
            Backend::RealCluster { kubeconfig, namespace } => args.extend([
                "--store".into(),
                "kubernetes".into(),
                "--kubeconfig".into(),
                kubeconfig.display().to_string(),
                "--namespace".into(),
                namespace.clone(),
            ]),
        }
        args
    }

    pub async fn elector(&self, identity: &str, extra: &[&str]) -> (ElectorProcess, Client) {
        let mut args = self.args();
        // Store calls get 5 s unless the case says otherwise: a busy machine
        // (a build beside the tests) can hold an etcd write back for a
        // second, and these cases are about behaviour, not timing.
        if !extra.contains(&"--store-timeout") {
            args.extend(["--store-timeout".to_owned(), "5s".to_owned()]);
        }
        args.extend(["--identity".to_owned(), identity.to_owned()]);
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let elector = ElectorProcess::spawn(BIN, &args).await.unwrap();
        let client = Client::new(&elector.url());
        (elector, client)
    }

    pub fn pause(&self) {
        match self {
            Backend::Etcd(etcd) => etcd.pause().unwrap(),
            Backend::Kubernetes { api, .. } => api.pause(),
            _ => panic!("this store cannot be paused apart from the elector"),
        }
    }

    pub fn resume(&self) {
        match self {
            Backend::Etcd(etcd) => etcd.resume().unwrap(),
            Backend::Kubernetes { api, .. } => api.resume(),
            _ => panic!("this store cannot be paused apart from the elector"),
        }
    }

    /// The record of lock `name` as the store itself keeps it, as text:
    /// the etcd value, the Lease object. `None` where nothing outside the
    /// elector holds it (the memory store) or the test does not look (a
    /// real cluster).
    pub async fn stored(&self, name: &str) -> Option<String> {
        match self {
            Backend::Etcd(etcd) => {
                let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await.unwrap();
                let value = client.get(format!("/metaparticle-sync/locks/{name}"), None).await.unwrap();
                Some(value.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()).unwrap_or_default())
            }
            Backend::Kubernetes { api, .. } => {
                let lease =
                    api.leases("sync-test").into_iter().find(|l| l["metadata"]["name"] == format!("lock.{name}"));
                Some(lease.map(|l| l.to_string()).unwrap_or_default())
            }
            Backend::Memory | Backend::RealCluster { .. } => None,
        }
    }

    pub async fn restart(&mut self) {
        match self {
            Backend::Etcd(etcd) => etcd.restart().await.unwrap(),
            Backend::Kubernetes { api, .. } => api.restart().await.unwrap(),
            _ => panic!("this store cannot restart apart from the elector"),
        }
    }
}

/// A name no other test in this process (or an earlier run on a real
/// cluster) uses.
pub fn unique(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}

pub fn acquire(holder: &str, ttl_ms: u64) -> AcquireRequest {
    AcquireRequest::new(holder, Duration::from_millis(ttl_ms), None, None)
}

pub fn renew(holder: &str, ttl_ms: u64, token: u64) -> AcquireRequest {
    AcquireRequest { token: Some(token), ..acquire(holder, ttl_ms) }
}

pub async fn granted(client: &Client, name: &str, req: &AcquireRequest) -> LeaseView {
    match client.claim(Kind::Lock, name, req).await.unwrap() {
        Claimed::Granted(lease) => lease,
        other => panic!("{req:?} not granted: {other:?}"),
    }
}

pub async fn refused(client: &Client, name: &str, req: &AcquireRequest) -> ConflictView {
    match client.claim(Kind::Lock, name, req).await.unwrap() {
        Claimed::Refused(c) => c,
        other => panic!("{req:?} not refused: {other:?}"),
    }
}

/// Long-polls until the lock is free, from `version`.
pub async fn wait_free(client: &Client, kind: Kind, name: &str, mut version: u64) -> u64 {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match client.read(kind, name, Some((version, PATIENCE))).await.unwrap() {
                Read::Free { version } => return version,
                Read::Held(lease) => version = lease.version,
            }
        }
    })
    .await
    .expect("the lease never became free")
}

/// Reads and writes the elector has made to its store (not the
/// background keep-alives).
pub async fn store_calls(client: &Client) -> u64 {
    let reply = client.request(Method::GET, "/metrics", None::<&()>).await.unwrap();
    String::from_utf8_lossy(&reply.body)
        .lines()
        .filter(|l| l.starts_with("mpsync_store_calls_total{"))
        .filter(|l| l.contains("call=\"read\"") || l.contains("call=\"write\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

pub async fn ready(client: &Client) -> StatusCode {
    client.request(Method::GET, "/readyz", None::<&()>).await.unwrap().status
}

/// Asks `/readyz` every 20 ms (there is no event to wait on) until 200.
pub async fn until_ready(client: &Client) {
    until_readyz(client, StatusCode::OK).await;
}

/// Asks `/readyz` every 20 ms until it answers `status`.
pub async fn until_readyz(client: &Client, status: StatusCode) {
    let mut every = tokio::time::interval(Duration::from_millis(20));
    tokio::time::timeout(PATIENCE, async {
        loop {
            every.tick().await;
            if ready(client).await == status {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("/readyz never answered {status}"));
}

/// A session opened as a holder opens one: a raw connection, upgraded.
/// The socket *is* the session: dropping it closes the holder's end.
pub struct Session {
    pub id: String,
    pub socket: tokio::net::TcpStream,
}

pub async fn open_session(addr: std::net::SocketAddr) -> Session {
    open_session_as(addr, Shape::Upgrade).await
}

/// The two shapes of a session: an upgraded connection (native clients),
/// or a request whose chunked body is never finished (over wasi:http).
#[derive(Clone, Copy)]
pub enum Shape {
    Upgrade,
    Stream,
}

pub async fn open_session_as(addr: std::net::SocketAddr, shape: Shape) -> Session {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = match shape {
        Shape::Upgrade => {
            "POST /v1/sessions HTTP/1.1\r\nhost: elector\r\nconnection: upgrade\r\nupgrade: mpsync-session\r\n\
             content-length: 0\r\n\r\n"
        }
        Shape::Stream => {
            "POST /v1/sessions HTTP/1.1\r\nhost: elector\r\ntransfer-encoding: chunked\r\n\r\n3\r\nhi\n\r\n"
        }
    };
    socket.write_all(request.as_bytes()).await.unwrap();
    // Byte by byte up to the blank line: nothing of the session's may be
    // read past the head (nothing comes after it, in fact).
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(socket.read_u8().await.expect("the elector closed the session before answering"));
    }
    let head = String::from_utf8(head).unwrap();
    let status = match shape {
        Shape::Upgrade => "HTTP/1.1 101 ",
        Shape::Stream => "HTTP/1.1 200 ",
    };
    assert!(head.starts_with(status), "{head}");
    let id = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("mpsync-session")))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no session id in {head}"));
    assert_eq!(id.len(), 32, "{id}");
    Session { id, socket }
}

/// One test per case and store: `suite!(memory: case_a, case_b)` makes
/// `memory::case_a`, which runs `case_a("memory")`.
macro_rules! suite {
    ($store:ident $(#[$attr:meta])* : $($case:ident),* $(,)?) => {
        mod $store {
            suite!(@cases $store [$(#[$attr])*] $($case)*);
        }
    };
    (@cases $store:ident $attrs:tt $($case:ident)*) => {
        $( suite!(@case $store $attrs $case); )*
    };
    (@case $store:ident [$(#[$attr:meta])*] $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn $case() {
            super::$case(stringify!($store)).await
        }
    };
}
