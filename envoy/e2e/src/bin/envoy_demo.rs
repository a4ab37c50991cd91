//! Part 3 of `make demo`: Envoy follows the leader.
//!
//! Three replicas of a tiny HTTP service (each answers with its name and the
//! fencing token Envoy stamped on the request) stand in election `web`, each
//! under `mpsync elect web --address ADDR --health-http … -- envoy-demo
//! serve …`: the candidate runs its replica's server and leads only while
//! that server runs and answers. A real Envoy with the leader filter sends
//! every request to the current leader; a client sends one every 100 ms and
//! prints who answered. replica-1 is stopped the way a rolling update stops
//! a pod (SIGTERM: it resigns, then stops its server); then the next
//! leader's server is killed (SIGKILL) while its candidate lives, and the
//! candidate resigns at once. Both switches take milliseconds whatever the
//! TTL, and the demo prints how many.
//!
//! `envoy-demo --elector URL --mpsync PATH` (scripts/demo.sh passes both;
//! `MPSYNC_WASM_DIR` names the folder of the filter). `envoy-demo serve`
//! is the replica's server that each `mpsync elect` runs.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use clap::{Parser, Subcommand};
use envoy_e2e::{Envoy, HttpClient, config};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Envoy follows the leader: three replicas behind Envoy's leader filter.
#[derive(Parser)]
#[command(name = "envoy-demo", subcommand_negates_reqs = true)]
struct Args {
    /// The elector's URL.
    #[arg(long, required = true)]
    elector: Option<String>,
    /// The mpsync binary that stands in the election for each replica.
    #[arg(long, required = true)]
    mpsync: Option<PathBuf>,
    /// The election's lease TTL (ms). No switch in this demo waits for it:
    /// a candidate whose server died resigns at once.
    #[arg(long, default_value_t = 5000)]
    ttl_ms: u64,
    #[command(subcommand)]
    serve: Option<Serve>,
}

#[derive(Subcommand)]
enum Serve {
    /// One replica's server, as `mpsync elect` runs it: answers every
    /// request with its name and the leader headers Envoy stamped.
    Serve {
        /// The replica's name.
        #[arg(long)]
        name: String,
        /// Where to serve (the address its candidate advertises).
        #[arg(long)]
        listen: SocketAddr,
    },
}

/// What the demo runs: the elector to use and the mpsync that stands for
/// each replica.
struct Demo {
    elector: String,
    mpsync: PathBuf,
    ttl_ms: u64,
}

const EVERY: Duration = Duration::from_millis(100);

fn stamp() -> String {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap();
    let (secs, ms) = (now.as_secs() % 86_400, now.subsec_millis());
    format!("{:02}:{:02}:{:02}.{ms:03}", secs / 3600, secs / 60 % 60, secs % 60)
}

fn say(who: &str, what: &str) {
    println!("{} [{who:<9}] {what}", stamp());
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Sends `signal` to process `pid` (a process this demo started, or its
/// candidate did).
fn kill(signal: &str, pid: u32) {
    let status = std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// The replica's server: every answer is `NAME leader-id=… leader-token=…`.
async fn serve(listener: TcpListener, name: String) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        let name = name.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let h = |k: &str| req.headers().get(k).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
                let body = format!("{name} leader-id={} leader-token={}", h("x-leader-id"), h("x-leader-token"));
                async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// An address nobody listens on yet: `mpsync elect` advertises it before
/// its server binds it.
fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Prints each line of `stream` under `who` and passes it on.
fn relay(who: &'static str, stream: impl AsyncRead + Unpin + Send + 'static, tx: mpsc::UnboundedSender<String>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            say(who, &line);
            let _ = tx.send(line);
        }
    });
}

/// One replica: `mpsync elect` and the server it runs.
struct Candidate {
    name: &'static str,
    elect: Child,
    /// The server's process id, as it said.
    server: u32,
}

impl Candidate {
    /// Starts the candidate and returns once its server serves (what
    /// mpsync and the server say is printed under the replica's name).
    async fn start(demo: &Demo, name: &'static str) -> Candidate {
        let addr = free_address().to_string();
        let mut elect = Command::new(&demo.mpsync)
            .args(["elect", "--elector", &demo.elector, "--holder", name, "--address", &addr])
            .args(["--ttl", &format!("{}ms", demo.ttl_ms), "--health-http", &format!("http://{addr}/")])
            .args(["--health-period", "200ms", "web", "--"])
            .arg(std::env::current_exe().unwrap())
            .args(["serve", "--name", name, "--listen", &addr])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting mpsync elect");
        let (tx, mut lines) = mpsc::unbounded_channel();
        relay(name, elect.stdout.take().unwrap(), tx.clone());
        relay(name, elect.stderr.take().unwrap(), tx);
        let server = loop {
            let line = lines.recv().await.expect("mpsync elect ended before its server served");
            if let Some(pid) = line.strip_prefix("serving on ").and_then(|l| l.split("pid ").nth(1)) {
                break pid.trim_end_matches(')').parse().unwrap();
            }
        };
        Candidate { name, elect, server }
    }
}

/// `mpsync leader --watch web`: the elector's view, each line printed and
/// kept with the moment it came.
struct Watch {
    lines: mpsc::UnboundedReceiver<(Instant, String)>,
    _child: Child,
}

impl Watch {
    fn start(demo: &Demo) -> Watch {
        let mut child = Command::new(&demo.mpsync)
            .args(["leader", "--elector", &demo.elector, "--watch", "web"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting mpsync leader --watch");
        let mut reader = BufReader::new(child.stdout.take().unwrap()).lines();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = reader.next_line().await {
                let at = Instant::now();
                say("watch", &format!("leader: {line}"));
                let _ = tx.send((at, line));
            }
        });
        Watch { lines, _child: child }
    }

    /// Forgets the lines seen so far.
    fn drain(&mut self) {
        while self.lines.try_recv().is_ok() {}
    }

    /// Waits for a leader other than `replica`: when it was named, and who.
    async fn until_not(&mut self, replica: &str) -> (Instant, String) {
        loop {
            let (at, line) = self.lines.recv().await.expect("mpsync leader --watch ended");
            let holder = line.split_whitespace().next().unwrap_or("none");
            if holder != "none" && holder != replica {
                return (at, holder.to_owned());
            }
        }
    }
}

/// What the client saw: runs of answers from one replica with one token.
struct Client {
    http: HttpClient,
    envoy: SocketAddr,
    run: Option<(String, usize)>,
    sent: usize,
    failed: usize,
    slowest: Duration,
}

impl Client {
    /// Sends one request and prints the answer when it differs from the last one.
    async fn once(&mut self) -> String {
        let sent = Instant::now();
        let answer = self.http.get(self.envoy, "/", &[]).await;
        let took = sent.elapsed();
        self.sent += 1;
        self.slowest = self.slowest.max(took);
        let what = if answer.status == 200 {
            let mut words = answer.body.split_whitespace();
            let replica = words.next().unwrap_or("?").to_owned();
            let token = words.find_map(|w| w.strip_prefix("leader-token=")).unwrap_or("-").to_owned();
            format!("200 from {replica} (fencing token {token})")
        } else {
            self.failed += 1;
            format!("{} {}", answer.status, answer.body.trim())
        };
        let held =
            if took > Duration::from_millis(50) { format!(", held {} ms", took.as_millis()) } else { String::new() };
        match &mut self.run {
            Some((last, count)) if *last == what && held.is_empty() => *count += 1,
            _ => {
                self.end_run();
                say("client", &format!("{what}{held}"));
                self.run = Some((what.clone(), 0));
            }
        }
        what
    }

    fn end_run(&mut self) {
        if let Some((what, count)) = self.run.take()
            && count > 0
        {
            say("client", &format!("  … {count} more: {what}"));
        }
    }

    /// Sends a request every 100 ms for `how_long`.
    async fn for_a_while(&mut self, how_long: Duration) {
        let until = Instant::now() + how_long;
        while Instant::now() < until {
            self.once().await;
            tokio::time::sleep(EVERY).await;
        }
    }

    /// Sends a request every 100 ms until one is answered by someone other
    /// than `replica`: when that answer came, and what it was.
    async fn until_not(&mut self, replica: &str) -> (Instant, String) {
        loop {
            let what = self.once().await;
            if what.starts_with("200 from ") && !what.starts_with(&format!("200 from {replica} ")) {
                return (Instant::now(), what);
            }
            tokio::time::sleep(EVERY).await;
        }
    }

    /// One request, then `act` (so that the client's next request comes a
    /// full 100 ms after it, as it would have anyway), then requests every
    /// 100 ms until someone other than `replica` answers. Says when the
    /// elector named the new leader and when it first served, counted from
    /// the moment before `act` (`what` names it).
    async fn switch(&mut self, watch: &mut Watch, replica: &str, what: &str, act: impl FnOnce()) -> String {
        self.once().await;
        watch.drain();
        let acted = Instant::now();
        act();
        tokio::time::sleep(EVERY).await;
        let ((named, leader), (served, _)) = tokio::join!(watch.until_not(replica), self.until_not(replica));
        say(
            "demo",
            &format!(
                "{leader} leads {} after the {what} (the elector's view); the first request it served came {} \
                 after it (the client sends one every 100 ms)",
                ms(named - acted),
                ms(served - acted)
            ),
        );
        leader
    }
}

async fn demo(demo: Demo) {
    let elector: SocketAddr = demo
        .elector
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("--elector must be http://IP:PORT");
    let filter = r#"{"elector_cluster": "elector", "election": "web", "allow": ["127.0.0.1/32"], "hold_ms": 10000}"#;
    let envoy = Envoy::start(&config(filter, elector, None)).await;
    say("envoy", &format!("listening on {} with the leader filter (election \"web\")", envoy.listener));
    let mut watch = Watch::start(&demo);
    let mut client = Client {
        http: HttpClient::new(),
        envoy: envoy.listener,
        run: None,
        sent: 0,
        failed: 0,
        slowest: Duration::ZERO,
    };

    // replica-1 alone first, so the story starts with it leading.
    say(
        "demo",
        &format!(
            "replica-1 stands in election \"web\" under `mpsync elect` (TTL {} ms), which runs its server and \
             leads only while the server runs and answers its health check",
            demo.ttl_ms
        ),
    );
    let mut candidates = vec![Candidate::start(&demo, "replica-1").await];
    say("demo", "the client sends a request every 100 ms");
    client.until_not("none").await;
    for name in ["replica-2", "replica-3"] {
        candidates.push(Candidate::start(&demo, name).await);
    }
    say("demo", "replica-2 and replica-3 stand too");
    client.for_a_while(Duration::from_secs(1)).await;
    client.end_run();

    say(
        "demo",
        "stopping replica-1 as a rolling update would (SIGTERM to its mpsync elect): \
         it resigns first, then stops its server",
    );
    let elect = candidates[0].elect.id().unwrap();
    let leader = client.switch(&mut watch, "replica-1", "SIGTERM", || kill("TERM", elect)).await;
    client.for_a_while(Duration::from_secs(1)).await;
    client.end_run();

    let dying = candidates.iter().find(|c| c.name == leader).unwrap();
    say(
        "demo",
        &format!(
            "killing {leader}'s server (SIGKILL) while its mpsync elect lives: mpsync sees its command exit \
             and resigns at once, not after the {} ms TTL",
            demo.ttl_ms
        ),
    );
    let server = dying.server;
    client.switch(&mut watch, &leader, "kill", || kill("KILL", server)).await;
    say(
        "demo",
        "(a request that reached Envoy between the server's death and the resignation would have failed: \
         nothing served it; this client's next request came 100 ms after the kill)",
    );
    client.for_a_while(Duration::from_secs(1)).await;
    client.end_run();
    let held = envoy.stat("held").await;
    say(
        "demo",
        &format!(
            "{} requests, {} failed; {held} held by the filter while there was no leader; the slowest took {} ms",
            client.sent,
            client.failed,
            client.slowest.as_millis()
        ),
    );
    drop(candidates);
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match args.serve {
        Some(Serve::Serve { name, listen }) => {
            let listener = TcpListener::bind(listen).await.expect("binding the replica's address");
            println!("serving on {listen} (pid {})", std::process::id());
            serve(listener, name).await;
        }
        None => {
            let (elector, mpsync) = (args.elector.unwrap(), args.mpsync.unwrap());
            demo(Demo { elector, mpsync, ttl_ms: args.ttl_ms }).await;
        }
    }
}
