//! Part 3 of `make demo`: Envoy follows the leader.
//!
//! Three replicas of a tiny HTTP service (each answers with its name and the
//! fencing token Envoy stamped on the request) stand in election `web`, each
//! through its own `mpsync run election.wasm` sidecar. A real Envoy with the
//! leader filter sends every request to the current leader; a client sends
//! one every 100 ms and prints who answered. The leader resigns (the switch
//! takes milliseconds), then the next leader's sidecar is killed with
//! SIGKILL: its replica is still the leader until its lease runs out, then
//! requests are held, not failed, until the last replica takes over.
//!
//! `envoy-demo --elector URL --mpsync PATH` (scripts/demo.sh passes both;
//! `MPSYNC_WASM_DIR` names the folder of election.wasm and the filter).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use envoy_e2e::{Envoy, HttpClient, Upstream, config};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Envoy follows the leader: three replicas behind Envoy's leader filter.
#[derive(Parser)]
#[command(name = "envoy-demo")]
struct Args {
    /// The elector's URL.
    #[arg(long)]
    elector: String,
    /// The mpsync binary that runs each replica's election sidecar.
    #[arg(long)]
    mpsync: PathBuf,
    /// The election's lease TTL (ms): how long a dead sidecar's replica stays leader.
    #[arg(long, default_value_t = 1500)]
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

/// One replica's election sidecar: `mpsync run election.wasm`.
fn sidecar(args: &Args, id: &str, address: SocketAddr, resign_after_ms: Option<u64>) -> Child {
    let wasm = testkit::proc::wasm("election.wasm");
    let mut command = Command::new(&args.mpsync);
    command.args(["run", "--elector", &args.elector]).arg(wasm).args([
        "--name",
        "web",
        "--id",
        id,
        "--address",
        &address.to_string(),
        "--ttl-ms",
        &args.ttl_ms.to_string(),
    ]);
    if let Some(ms) = resign_after_ms {
        command.args(["--resign-after-ms", &ms.to_string()]);
    }
    command.stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true).spawn().expect("starting mpsync run")
}

/// What the client saw: runs of answers from one replica with one token.
struct Client {
    http: HttpClient,
    envoy: SocketAddr,
    run: Option<(String, usize, Instant)>,
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
            Some((last, count, _)) if *last == what && held.is_empty() => *count += 1,
            _ => {
                self.end_run();
                say("client", &format!("{what}{held}"));
                self.run = Some((what.clone(), 0, Instant::now()));
            }
        }
        what
    }

    fn end_run(&mut self) {
        if let Some((what, count, _)) = self.run.take()
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

    /// Sends a request every 100 ms until one is answered by someone other than `replica`.
    async fn until_not(&mut self, replica: &str) -> String {
        loop {
            let what = self.once().await;
            if what.starts_with("200 from ") && !what.starts_with(&format!("200 from {replica} ")) {
                return what;
            }
            tokio::time::sleep(EVERY).await;
        }
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let elector: SocketAddr = args
        .elector
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("--elector must be http://IP:PORT");
    let names = ["replica-1", "replica-2", "replica-3"];
    let mut replicas = Vec::new();
    for name in names {
        replicas.push(Upstream::start(name).await);
    }
    let filter = r#"{"elector_cluster": "elector", "election": "web", "allow": ["127.0.0.1/32"], "hold_ms": 10000}"#;
    let envoy = Envoy::start(&config(filter, elector, None)).await;
    say("envoy", &format!("listening on {} with the leader filter (election \"web\")", envoy.listener));
    for replica in &replicas {
        say(&replica.id, &format!("serving on {}", replica.addr));
    }
    // The elector's view, as `mpsync leader --watch` prints it.
    let mut watch = Command::new(&args.mpsync)
        .args(["leader", "--elector", &args.elector, "--watch", "web"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting mpsync leader --watch");
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            say("watch", &format!("leader: {line}"));
        }
    });
    let mut client = Client {
        http: HttpClient::new(),
        envoy: envoy.listener,
        run: None,
        sent: 0,
        failed: 0,
        slowest: Duration::ZERO,
    };

    // replica-1 alone first, so the story starts with it leading; it resigns after 3 s.
    let mut sidecars = vec![sidecar(&args, names[0], replicas[0].addr, Some(3000))];
    say("demo", "replica-1's sidecar campaigns (it will resign after 3 s); the client sends a request every 100 ms");
    client.until_not("none").await;
    for (name, replica) in names.iter().zip(&replicas).skip(1) {
        sidecars.push(sidecar(&args, name, replica.addr, None));
    }
    say("demo", "replica-2 and replica-3 campaign too");
    let next = client.until_not("replica-1").await;
    let leader = if next.contains("replica-2") { 1 } else { 2 };
    client.for_a_while(Duration::from_secs(2)).await;
    client.end_run();
    say(
        "demo",
        &format!(
            "killing {}'s sidecar (SIGKILL): no release, so {} stays the leader until its {} ms lease runs out",
            names[leader], names[leader], args.ttl_ms
        ),
    );
    sidecars[leader].start_kill().unwrap();
    client.until_not(names[leader]).await;
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
    drop(sidecars);
    drop(watch);
}
