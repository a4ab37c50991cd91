//! Failover through Envoy when the leader's server dies (issue 22, item 5):
//! prints numbers, asserts nothing.
//!
//! Three replicas of a tiny HTTP server (this very executable run as
//! `failover serve ID IP:PORT`, answering `ID leader-id=… leader-token=…`)
//! each stand in election `web` under `mpsync elect web --address IP:PORT
//! --ttl 10s -- SERVER`. Two gateways follow the leader at once: a real
//! Envoy with the leader filter (`gateway.yaml`'s shape) and one on the EDS
//! path (`gateway-eds.yaml`'s shape, kept by `mpsync leader --watch
//! --envoy-eds`). A client sends a request to each every `BENCH_EVERY_US`
//! (open loop: a request does not wait for the one before, as users do not).
//!
//! Each round kills the leader and measures, per gateway, the time from the
//! kill to the first answer from another replica, and the kill to the
//! elector naming the new leader (a long-poll of our own), then starts the
//! killed replica again so that three stand before the next kill:
//!
//! 1. `server`: SIGKILL of CMD (the server under `mpsync elect`), which then
//!    resigns at once.
//! 2. `candidate`: SIGKILL of `mpsync elect` itself; its server gets SIGTERM
//!    (it dies with its parent) and the lease goes with the candidate's
//!    session (the elector releases it when the socket closes), or at its
//!    TTL where the client opens no session.
//! 3. `candidate, --no-session`: the same with `mpsync elect --no-session`,
//!    every replica restarted so: the lease runs out at its TTL (today's
//!    figure).
//!
//! Every request that did not get a 200 is counted, classified (what Envoy
//! answered, and whether it was sent before or after the kill) and
//! explained.
//!
//! `cargo bench --profile test -p envoy-e2e --bench failover` (or `make
//! bench`). Knobs: `BENCH_KILLS` (server kills, default 50),
//! `BENCH_CANDIDATE_KILLS` (default 50), `BENCH_NO_SESSION_KILLS` (default
//! 3: each waits out a TTL), `BENCH_TTL` (default `10s`), `BENCH_EVERY_US`
//! (default 1000), `BENCH_PAUSE_MS` (steady state between kills, default
//! 1000), `BENCH_WARMUP_MS` (traffic before the first kill, default 1000).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_e2e::{Envoy, config, eds_config};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client as Http;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mpsync_client::{Client, Read};
use mpsync_core::{Kind, lock};
use rustix::process::{Pid, Signal, kill_process};
use testkit::bench::env_or;
use testkit::proc::{PATIENCE, Proc, elector};
use tokio::sync::watch;

#[path = "failover/report.rs"]
mod report;

const ELECTION: &str = "web";

/// The scenario of the replicas' restart between scenarios.
const RESTART: usize = usize::MAX;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(serve(&args[2], args[3].parse().unwrap()));
    } else {
        tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(bench());
    }
}

/// The replica's server: answers every request with its id and the leader
/// headers it was sent, as `envoy_e2e::Upstream` does, in a process of its
/// own so that it can be killed.
async fn serve(id: &str, addr: SocketAddr) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    println!("{id} serving on {addr} pid={} ppid={}", std::process::id(), std::os::unix::process::parent_id());
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let id = id.to_owned();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let h = |k: &str| req.headers().get(k).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
                let body = format!("{id} leader-id={} leader-token={}", h("x-leader-id"), h("x-leader-token"));
                async move { Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(body)))) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// One replica: its `mpsync elect` and the server under it.
struct Replica {
    id: String,
    addr: SocketAddr,
    elect: Proc,
    server: i32,
    candidate: i32,
}

/// How a candidate and its server are started.
struct Cluster {
    url: String,
    ttl: String,
    /// `--no-session` or nothing.
    flags: Vec<&'static str>,
}

impl Cluster {
    /// Starts `mpsync elect` for `id` at `addr`; returns once its server
    /// listens (mpsync said `not leading` before starting it).
    async fn stand(&self, id: &str, addr: SocketAddr) -> Replica {
        let exe = std::env::current_exe().unwrap().display().to_string();
        let (address, url) = (addr.to_string(), self.url.clone());
        let mut args = vec!["elect"];
        args.extend(&self.flags);
        args.extend(["--elector", &url, "--holder", id, "--address", &address, "--ttl", &self.ttl, ELECTION, "--"]);
        args.extend([exe.as_str(), "serve", id, &address]);
        let mut elect = Proc::mpsync(id, &args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        let line = elect.expect_line(" serving on ").await;
        let pid = |key: &str| -> i32 {
            line.split_whitespace().find_map(|w| w.strip_prefix(key)).and_then(|p| p.parse().ok()).unwrap()
        };
        Replica { id: id.to_owned(), addr, elect, server: pid("pid="), candidate: pid("ppid=") }
    }
}

/// What one request got.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// 200 from this replica.
    Served(String),
    /// Another status from Envoy: its body, and whether it said `retry-after`.
    Refused { status: u16, body: String, retry_after: bool },
    /// No answer at all (reset, timeout).
    Failed(String),
}

impl Outcome {
    /// What a failed request got, printed next to its kind.
    fn describe(&self) -> String {
        match self {
            Outcome::Served(id) => format!("200 from {id}"),
            Outcome::Refused { status, body, .. } => format!("{status} {}", body.trim()),
            Outcome::Failed(e) => e.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Sample {
    sent: Instant,
    done: Instant,
    outcome: Outcome,
}

/// One gateway and what its client has seen.
pub struct Path {
    name: &'static str,
    samples: Arc<Mutex<Vec<Sample>>>,
    /// The last replica that answered, and when.
    served: watch::Receiver<(String, Instant)>,
}

async fn fetch(http: &Http<HttpConnector, Full<Bytes>>, target: SocketAddr) -> Outcome {
    let request = Request::get(format!("http://{target}/")).body(Full::new(Bytes::new())).unwrap();
    let response = match tokio::time::timeout(PATIENCE, http.request(request)).await {
        Err(_) => return Outcome::Failed(format!("no answer within {PATIENCE:?}")),
        Ok(Err(e)) => return Outcome::Failed(format!("{e:?}")),
        Ok(Ok(response)) => response,
    };
    let (status, retry_after) = (response.status().as_u16(), response.headers().contains_key("retry-after"));
    let body = match response.into_body().collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(e) => return Outcome::Failed(format!("reading the body: {e:?}")),
    };
    match status {
        200 => Outcome::Served(body.split_whitespace().next().unwrap_or("?").to_owned()),
        _ => Outcome::Refused { status, body, retry_after },
    }
}

/// Sends a request to `target` every `every`, each on its own task, for
/// as long as the benchmark runs.
fn drive(name: &'static str, target: SocketAddr, every: Duration) -> Path {
    let http = Http::builder(TokioExecutor::new()).build(HttpConnector::new());
    let samples = Arc::new(Mutex::new(Vec::new()));
    let (tell, served) = watch::channel((String::new(), Instant::now()));
    let (tell, all) = (Arc::new(tell), samples.clone());
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let (http, tell, all) = (http.clone(), tell.clone(), all.clone());
            tokio::spawn(async move {
                let sent = Instant::now();
                let outcome = fetch(&http, target).await;
                let done = Instant::now();
                if let Outcome::Served(id) = &outcome {
                    tell.send_replace((id.clone(), done));
                }
                lock(&all).push(Sample { sent, done, outcome });
            });
        }
    });
    Path { name, samples, served }
}

/// When the elector reported each holder (`None`: free).
type Changes = Arc<Mutex<Vec<(Instant, Option<String>)>>>;

/// Every change of the election's holder as the elector reports it
/// (`None`: free), from a long-poll of our own.
fn follow(client: Client) -> Changes {
    let changes = Arc::new(Mutex::new(Vec::new()));
    let seen = changes.clone();
    tokio::spawn(async move {
        let mut version = None;
        loop {
            match client.read(Kind::Election, ELECTION, version.map(|v| (v, Duration::from_secs(60)))).await {
                Ok(Read::Held(l)) => {
                    if version != Some(l.version) {
                        lock(&seen).push((Instant::now(), Some(l.holder)));
                    }
                    version = Some(l.version);
                }
                Ok(Read::Free { version: v }) => {
                    if version != Some(v) {
                        lock(&seen).push((Instant::now(), None));
                    }
                    version = Some(v);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });
    changes
}

async fn leader(client: &Client) -> String {
    loop {
        if let Ok(Read::Held(l)) = client.read(Kind::Election, ELECTION, None).await {
            return l.holder;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The elector's gauge `series` right now (`mpsync_watchers`: long-polls
/// waiting; `mpsync_sessions`: sessions open); 0 when it has none.
async fn gauge(client: &Client, series: &str) -> u64 {
    let body = client.request(hyper::Method::GET, "/metrics", None::<&()>).await.unwrap().body;
    testkit::bench::metric(&String::from_utf8_lossy(&body), series).unwrap_or(0.0) as u64
}

/// Waits until `path` was answered after `since` by a replica that
/// satisfies `pred`.
async fn answered(path: &mut Path, since: Instant, pred: impl Fn(&str) -> bool, patience: Duration) {
    let waited = path.served.wait_for(|(id, at)| *at > since && pred(id));
    tokio::time::timeout(patience, waited)
        .await
        .unwrap_or_else(|_| panic!("{}: no answer in time", path.name))
        .unwrap();
}

/// What was killed in a scenario.
#[derive(Clone, Copy, PartialEq)]
enum Victim {
    Server,
    Candidate,
}

/// One kill: when, whom, in which scenario (`RESTART`: not a kill, the
/// replicas restarted with or without sessions, each resigning first; what
/// fails then is no scenario's).
pub struct Kill {
    scenario: usize,
    at: Instant,
    leader: String,
    /// Sessions open at the elector just before the kill.
    sessions: u64,
}

#[allow(clippy::too_many_lines)]
async fn bench() {
    let every = Duration::from_micros(env_or("BENCH_EVERY_US", 1000));
    // Longer than the slowest failure (a connect timing out at the
    // cluster's connect_timeout, 1 s), so that each is counted with its kill.
    let pause = Duration::from_millis(env_or("BENCH_PAUSE_MS", 1000));
    let ttl = std::env::var("BENCH_TTL").unwrap_or_else(|_| "10s".to_owned());
    let ttl_time = ttl_duration(&ttl);
    let help = std::process::Command::new(testkit::proc::mpsync()).args(["elect", "--help"]).output().unwrap().stdout;
    let sessions = String::from_utf8_lossy(&help).contains("--no-session");
    let scenarios = [
        ("mpsync elect's server (CMD) SIGKILLed", Victim::Server, false, env_or("BENCH_KILLS", 50)),
        ("mpsync elect SIGKILLed (session)", Victim::Candidate, false, env_or("BENCH_CANDIDATE_KILLS", 50)),
        ("mpsync elect SIGKILLed, --no-session", Victim::Candidate, true, env_or("BENCH_NO_SESSION_KILLS", 3)),
    ];

    let elector = elector().await;
    let client = Client::new(&elector.url());
    let mut cluster = Cluster { url: elector.url(), ttl: ttl.clone(), flags: vec![] };
    let ids = ["r1", "r2", "r3"];
    let mut replicas = Vec::new();
    for id in ids {
        // A free port, kept across restarts (a replica comes back where it was).
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        replicas.push(cluster.stand(id, addr).await);
    }
    let filter = r#"{"elector_cluster":"elector","election":"web","allow":["127.0.0.0/8"],"hold_ms":2000}"#;
    let gateway = Envoy::start(&config(filter, elector.addr(), None)).await;
    let eds_file = testkit::temp_dir("failover-eds").unwrap().join("web.json");
    let mut eds_watch = envoy_e2e::eds_watch(&elector.url(), ELECTION, &eds_file);
    eds_watch.expect(": its first line", |_| true).await;
    let eds_gateway = Envoy::start(&eds_config(&eds_file)).await;
    let changes = follow(client.clone());
    let mut paths = [drive("leader filter", gateway.listener, every), drive("EDS file", eds_gateway.listener, every)];
    let first = leader(&client).await;
    for path in &mut paths {
        answered(path, Instant::now(), |id| id == first, PATIENCE).await;
    }
    // Gateways in steady state, as in production: a filter worker that met
    // the election less than a tick (100 ms) ago routes by what it read
    // from shared data and starts its own long-poll at the next tick, so a
    // kill right after Envoy's start is learned up to a tick late.
    tokio::time::sleep(Duration::from_millis(env_or("BENCH_WARMUP_MS", 1000))).await;

    let mut kills: Vec<Kill> = Vec::new();
    for (scenario, &(what, victim, no_session, n)) in scenarios.iter().enumerate() {
        if n == 0 || (no_session && !sessions) {
            continue;
        }
        if no_session == cluster.flags.is_empty() {
            // Every replica again, with or without sessions, one at a time
            // (a graceful stop resigns first).
            cluster.flags = if no_session { vec!["--no-session"] } else { vec![] };
            kills.push(Kill { scenario: RESTART, at: Instant::now(), leader: String::new(), sessions: 0 });
            for r in &mut replicas {
                r.elect.signal("TERM");
                r.elect.wait().await;
                *r = cluster.stand(&r.id.clone(), r.addr).await;
            }
            tokio::time::sleep(pause).await;
        }
        eprintln!("failover: {what}, {n} kills");
        for _ in 0..n {
            let led = leader(&client).await;
            for path in &mut paths {
                answered(path, Instant::now() - pause, |id| id == led, PATIENCE).await;
            }
            let i = replicas.iter().position(|r| r.id == led).unwrap();
            let (parked, sessions) = (gauge(&client, "mpsync_watchers").await, gauge(&client, "mpsync_sessions").await);
            let victim_pid = if victim == Victim::Server { replicas[i].server } else { replicas[i].candidate };
            let at = Instant::now();
            kill_process(Pid::from_raw(victim_pid).unwrap(), Signal::KILL).unwrap();
            for path in &mut paths {
                answered(path, at, |id| id != led, ttl_time + PATIENCE).await;
            }
            kills.push(Kill { scenario, at, leader: led, sessions });
            // Three stand again before the next kill: the killed one's
            // campaign is parked on its long-poll.
            replicas[i].elect.wait().await;
            let (id, addr) = (replicas[i].id.clone(), replicas[i].addr);
            replicas[i] = cluster.stand(&id, addr).await;
            let standing = async {
                while gauge(&client, "mpsync_watchers").await < parked {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            };
            tokio::time::timeout(PATIENCE, standing).await.expect("the restarted candidate did not campaign");
            tokio::time::sleep(pause).await;
        }
    }
    // Requests still in flight finish (or fail) before anything is counted.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let changes = lock(&changes).clone();
    let samples: Vec<Vec<Sample>> = paths.iter().map(|p| lock(&p.samples).clone()).collect();
    let names = scenarios.map(|s| s.0);
    report::report(&report::Run {
        scenarios: &names,
        kills: &kills,
        changes: &changes,
        paths: &paths,
        samples: &samples,
        every,
        ttl: &ttl,
        sessions,
    });
}

/// `10s`, `1500ms`: the benchmark's TTL as a duration (a bound on waiting).
fn ttl_duration(ttl: &str) -> Duration {
    match (ttl.strip_suffix("ms"), ttl.strip_suffix('s')) {
        (Some(ms), _) => Duration::from_millis(ms.parse().unwrap()),
        (None, Some(s)) => Duration::from_secs(s.parse().unwrap()),
        _ => panic!("BENCH_TTL: write 10s or 1500ms"),
    }
}
