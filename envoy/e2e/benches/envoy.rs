//! Envoy leader-filter benchmark: prints numbers, asserts nothing.
//!
//! 1. Throughput and latency through Envoy with the filter (gateway mode,
//!    leader known) vs. Envoy with a plain static route to the same
//!    upstream, same run, same load; the ratio filter/plain. Each Envoy has
//!    one worker pinned to CPU 0; this process (load generator and
//!    upstream) is pinned to CPU 1, so the two configurations are compared
//!    on what Envoy spends per request, not on who wins a shared CPU.
//!    Rounds alternate between the configurations; each one's ratio to the
//!    plain route is taken per round and its median reported with the
//!    range, next to Envoy's CPU time per request. Two more configurations
//!    show where the cost comes from: the gateway's ORIGINAL_DST cluster
//!    without the filter (the client names the upstream), and a no-op
//!    proxy-wasm filter (`envoy/baseline`) on the plain route and on the
//!    ORIGINAL_DST route (the leader filter's own routing). Then the EDS
//!    path: no filter, the cluster's endpoints from the file `mpsync leader
//!    --watch --envoy-eds` keeps, with the leader's id and token stamped by
//!    an upstream header filter, and without.
//! 2. Graceful hand-over: time from the leader's resignation (DELETE) to the
//!    first request served by the new leader, over many hand-overs; the new
//!    leader is a candidate long-polling the elector, as `campaign` does.
//!    The filter's gateway and the EDS gateway are measured at once.
//! 3. Crash failover: time from SIGKILL of the leader (an `mpsync run
//!    election.wasm` process) to the first request served by the new one,
//!    next to the TTL; the filter's gateway and the EDS gateway at once.
//!
//! 4. Sharding at scale: one Envoy (2 workers) and the filter sharded over
//!    `BENCH_SHARDS` elections, each led: the long-polls parked at the
//!    elector, the requests per second it answers at steady state, and the
//!    resident memory of both. (Per-request cost by shard count is in
//!    `instructions.rs`.)
//!
//! `make bench`. `BENCH_SECONDS` (default 2, per round), `BENCH_ROUNDS`
//! (default 5 pairs), `BENCH_HANDOVERS` (default 100), `BENCH_FAILOVERS`
//! (default 5), `BENCH_CLIENTS` (default 16), `BENCH_SHARDS` (default 1000),
//! `BENCH_SHARD_SECONDS` (default 60).

#![allow(clippy::unwrap_used, missing_docs, dead_code)]

use std::time::{Duration, Instant};

use envoy_e2e::{
    Envoy, HttpClient, Upstream, baseline_config, baseline_original_dst_config, config, eds_config, eds_config_with,
    original_dst_config, plain_config,
};
use mpsync_client::{Claimed, Client, Read};
use mpsync_core::Kind;
use mpsync_core::wire::AcquireRequest;
use testkit::bench::{cpu_time, env_or, ms, percentile, rss_kib};
use testkit::proc::{PATIENCE, Proc, elector};

/// Requests per second and every latency sample of one round; each request
/// carries `headers`.
async fn load(
    http: &HttpClient,
    target: std::net::SocketAddr,
    headers: &[(&'static str, String)],
    clients: usize,
    length: Duration,
) -> (f64, Vec<Duration>) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let http = http.clone();
            let headers = headers.to_vec();
            tokio::spawn(async move {
                let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let mut samples = Vec::new();
                let end = Instant::now() + length;
                while Instant::now() < end {
                    let t = Instant::now();
                    let a = http.get(target, "/", &headers).await;
                    assert_eq!(a.status, 200, "{a:?}");
                    samples.push(t.elapsed());
                }
                samples
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    (rate, all)
}

/// Pins every thread of this process to `cpu` (threads started later
/// inherit it). False when the machine has fewer CPUs or taskset fails.
fn pin_self(cpu: usize) -> bool {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    cpus > cpu
        && std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", &cpu.to_string(), &std::process::id().to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// One configuration and its totals over its rounds.
struct Totals {
    label: &'static str,
    envoy: Envoy,
    headers: Vec<(&'static str, String)>,
    requests: usize,
    seconds: f64,
    samples: Vec<Duration>,
    envoy_cpu: Duration,
    rates: Vec<f64>,
}

impl Totals {
    fn new(label: &'static str, envoy: Envoy, headers: Vec<(&'static str, String)>) -> Self {
        Totals {
            label,
            envoy,
            headers,
            requests: 0,
            seconds: 0.0,
            samples: Vec::new(),
            envoy_cpu: Duration::ZERO,
            rates: Vec::new(),
        }
    }

    async fn round(&mut self, http: &HttpClient, clients: usize, length: Duration) {
        let envoy = &self.envoy;
        let cpu = cpu_time(envoy.pid());
        let start = Instant::now();
        let (rate, samples) = load(http, envoy.listener, &self.headers, clients, length).await;
        self.seconds += start.elapsed().as_secs_f64();
        self.envoy_cpu += cpu_time(envoy.pid()) - cpu;
        self.requests += samples.len();
        self.samples.extend(samples);
        self.rates.push(rate);
    }

    /// Prints totals and the ratio to `plain`'s rate, round by round.
    fn row(&mut self, plain: &[f64]) {
        self.samples.sort();
        let rate = self.requests as f64 / self.seconds;
        let cpu_per_request = self.envoy_cpu.as_secs_f64() * 1e6 / self.requests as f64;
        let mut ratios: Vec<f64> = self.rates.iter().zip(plain).map(|(r, p)| r / p).collect();
        ratios.sort_by(f64::total_cmp);
        println!(
            "{:>34} | {rate:>7.0} {:>10} {:>10} {:>9.1} µs | {:.2} ({:.2}–{:.2})",
            self.label,
            ms(percentile(&self.samples, 0.5)),
            ms(percentile(&self.samples, 0.99)),
            cpu_per_request,
            ratios[ratios.len() / 2],
            ratios[0],
            ratios[ratios.len() - 1],
        );
    }
}

/// A lease that outlasts the benchmark: nobody renews it.
fn claim(address: std::net::SocketAddr, holder: &str) -> AcquireRequest {
    AcquireRequest::new(holder, Duration::from_secs(3600), None, Some(&address.to_string()))
}

/// A candidate that takes the election the moment it is free.
async fn standby(client: Client, address: std::net::SocketAddr, holder: String) -> u64 {
    let mut version = 0;
    loop {
        if let Claimed::Granted(l) = client.claim(Kind::Election, "bench", &claim(address, &holder)).await.unwrap() {
            return l.token;
        }
        loop {
            match client.read(Kind::Election, "bench", Some((version, Duration::from_secs(60)))).await.unwrap() {
                Read::Held(l) => version = l.version,
                Read::Free { version: v } => {
                    version = v;
                    break;
                }
            }
        }
    }
}

/// Long-polls waiting at the elector right now.
async fn watchers(client: &Client) -> u64 {
    let body = client.request(hyper::Method::GET, "/metrics", None::<&()>).await.unwrap().body;
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines().find_map(|l| l.strip_prefix("mpsync_watchers ")).unwrap().trim().parse().unwrap()
}

/// Sends requests until one is answered by `id`; returns when it was.
async fn first_served_by(http: &HttpClient, envoy: std::net::SocketAddr, id: &str) -> Instant {
    loop {
        let a = http.get(envoy, "/", &[]).await;
        if a.status == 200 && a.body.starts_with(&format!("{id} ")) {
            return Instant::now();
        }
    }
}

/// `mpsync leader --watch --envoy-eds` for `election`, its file in a
/// folder of its own; returns once the file is written.
async fn eds_watch(url: &str, election: &str) -> (Proc, std::path::PathBuf) {
    let file = testkit::temp_dir("eds-bench").unwrap().join(format!("{election}.json"));
    let mut watch = envoy_e2e::eds_watch(url, election, &file);
    watch.expect(": its first line", |_| true).await;
    (watch, file)
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let n = samples.len();
    println!(
        "  {what:<28} p50 {}   p99 {}   max {}",
        ms(percentile(samples, 0.5)),
        ms(percentile(samples, 0.99)),
        ms(samples[n - 1])
    );
}

#[tokio::main]
async fn main() {
    let length = Duration::from_secs(env_or("BENCH_SECONDS", 2));
    let clients = env_or("BENCH_CLIENTS", 16) as usize;
    let elector = elector().await;
    let url = elector.url();
    let client = Client::new(&url);
    let http = HttpClient::new();
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;

    // 1. Throughput: the filter (leader known) vs a plain route.
    let pinned = pin_self(1);
    let envoy_cpu = pinned.then_some(0);
    let filter = r#"{"elector_cluster":"elector","election":"bench","allow":["127.0.0.0/8"],"hold_ms":5000}"#;
    let gateway = Envoy::start_on(&config(filter, elector.addr(), None), 1, envoy_cpu).await;
    let Claimed::Granted(lease) = client.claim(Kind::Election, "bench", &claim(a.addr, "a")).await.unwrap() else {
        panic!()
    };
    first_served_by(&http, gateway.listener, "a").await;
    let gateway_listener = gateway.listener;
    let (_eds_watch, eds_file) = eds_watch(&url, "bench").await;
    let eds_gateway = Envoy::start_on(&eds_config(&eds_file), 1, envoy_cpu).await;
    first_served_by(&http, eds_gateway.listener, "a").await;
    let eds_listener = eds_gateway.listener;
    let mut configs = vec![
        Totals::new("plain static route", Envoy::start_on(&plain_config(a.addr), 1, envoy_cpu).await, vec![]),
        Totals::new("leader filter (ORIGINAL_DST)", gateway, vec![]),
        Totals::new(
            "ORIGINAL_DST, no filter",
            Envoy::start_on(&original_dst_config(elector.addr()), 1, envoy_cpu).await,
            vec![("x-envoy-original-dst-host", a.addr.to_string())],
        ),
        Totals::new(
            "no-op wasm filter, static route",
            Envoy::start_on(&baseline_config(a.addr), 1, envoy_cpu).await,
            vec![],
        ),
        Totals::new("EDS file, id and token stamped", eds_gateway, vec![]),
        Totals::new(
            "no-op wasm filter, ORIGINAL_DST",
            Envoy::start_on(&baseline_original_dst_config(elector.addr()), 1, envoy_cpu).await,
            vec![("x-envoy-original-dst-host", a.addr.to_string())],
        ),
        Totals::new(
            "EDS file, id and token not stamped",
            Envoy::start_on(&eds_config_with(&eds_file, false), 1, envoy_cpu).await,
            vec![],
        ),
    ];
    for c in &configs {
        let _ = load(&http, c.envoy.listener, &c.headers, clients, Duration::from_millis(500)).await;
    }
    let rounds = env_or("BENCH_ROUNDS", 5) as usize;
    for _ in 0..rounds {
        for c in &mut configs {
            c.round(&http, clients, length).await;
        }
    }
    let placement = if pinned {
        "1 worker on CPU 0; load generator and upstream on CPU 1"
    } else {
        "1 worker; fewer than 2 CPUs, nothing pinned"
    };
    println!(
        "Envoy 1.40, {placement}; {clients} keep-alive clients; {rounds} rounds of {length:?} per configuration, alternating:"
    );
    println!(
        "{:>34} | {:>7} {:>10} {:>10} {:>12} | vs plain: median (range)",
        "", "req/s", "p50", "p99", "Envoy CPU/req"
    );
    let plain_rates = configs[0].rates.clone();
    for c in &mut configs {
        c.row(&plain_rates);
    }
    // The filter against a wasm filter that does nothing, round by round.
    for (noop, what) in [(3, "static route"), (5, "ORIGINAL_DST")] {
        let mut ratios: Vec<f64> = configs[1].rates.iter().zip(&configs[noop].rates).map(|(f, n)| f / n).collect();
        ratios.sort_by(f64::total_cmp);
        println!(
            "  leader filter / no-op filter ({what}): {:.2} ({:.2}–{:.2})",
            ratios[ratios.len() / 2],
            ratios[0],
            ratios[ratios.len() - 1]
        );
    }
    drop(configs.drain(5..));
    // Keep the two gateways (the filter's and the EDS one) for what follows.
    let eds_gateway = configs.remove(4);
    drop(configs.drain(2..));
    let plain = configs.remove(0);
    drop(plain);

    // 2. Graceful hand-overs between a and b.
    let n = env_or("BENCH_HANDOVERS", 100) as usize;
    let (mut leader, mut token) = (("a", a.addr), lease.token);
    let mut samples = Vec::with_capacity(n);
    let mut eds_samples = Vec::with_capacity(n);
    for _ in 0..n {
        let next = if leader.0 == "a" { ("b", b.addr) } else { ("a", a.addr) };
        let parked = watchers(&client).await;
        let waiting = tokio::spawn(standby(client.clone(), next.1, next.0.to_owned()));
        // The standby is parked on its long-poll before the resignation
        // (Envoy's workers hold long-polls of their own).
        while watchers(&client).await <= parked {
            tokio::task::yield_now().await;
        }
        let resigned = Instant::now();
        assert!(client.release(Kind::Election, "bench", leader.0, token).await.unwrap());
        let (served, eds_served) = tokio::join!(
            first_served_by(&http, gateway_listener, next.0),
            first_served_by(&http, eds_listener, next.0)
        );
        samples.push(served - resigned);
        eds_samples.push(eds_served - resigned);
        token = waiting.await.unwrap();
        leader = next;
    }
    println!("\nGraceful hand-over, resignation -> first request served by the new leader ({n} hand-overs):");
    report("leader filter", &mut samples);
    report("EDS file (mpsync leader)", &mut eds_samples);
    drop(eds_gateway);
    assert!(client.release(Kind::Election, "bench", leader.0, token).await.unwrap());

    // 3. Crash failover: kill the leader's host process.
    let failovers = env_or("BENCH_FAILOVERS", 5) as usize;
    let ttl_ms = 1000;
    let mut kills = Vec::new();
    let mut eds_kills = Vec::new();
    for i in 0..failovers {
        let name = format!("crash-{i}");
        let filter =
            format!(r#"{{"elector_cluster":"elector","election":"{name}","allow":["127.0.0.0/8"],"hold_ms":5000}}"#);
        let envoy = Envoy::start(&config(&filter, elector.addr(), None)).await;
        let (_watch, file) = eds_watch(&url, &name).await;
        let eds = Envoy::start(&eds_config(&file)).await;
        let ttl = ttl_ms.to_string();
        let (aa, ba) = (a.addr.to_string(), b.addr.to_string());
        let mut first = Proc::run(
            "a",
            &url,
            &[],
            "election.wasm",
            &["--name", &name, "--id", "a", "--address", &aa, "--ttl-ms", &ttl],
        );
        first.expect_line("I am the leader").await;
        first_served_by(&http, envoy.listener, "a").await;
        first_served_by(&http, eds.listener, "a").await;
        let mut second = Proc::run(
            "b",
            &url,
            &[],
            "election.wasm",
            &["--name", &name, "--id", "b", "--address", &ba, "--ttl-ms", &ttl],
        );
        // b is campaigning (its campaign is a long-poll on the election).
        let killed = Instant::now();
        first.signal("KILL");
        let (served, eds_served) =
            tokio::join!(first_served_by(&http, envoy.listener, "b"), first_served_by(&http, eds.listener, "b"));
        kills.push(served - killed);
        eds_kills.push(eds_served - killed);
        second.expect_line("I am the leader").await;
    }
    println!(
        "\nCrash failover, SIGKILL of the leader -> first request served by the new one (TTL {ttl_ms} ms, {failovers} runs):"
    );
    report("leader filter", &mut kills);
    report("EDS file (mpsync leader)", &mut eds_kills);

    // 4. Sharding at scale: one Envoy (2 workers), the filter choosing the
    // election by x-shard among `shards`, each led (by a, at its address).
    let shards = env_or("BENCH_SHARDS", 1000) as usize;
    let window = Duration::from_secs(env_or("BENCH_SHARD_SECONDS", 60));
    let elector_pid = elector.pid().unwrap();
    let elector_rss = rss_kib(elector_pid);
    for shard in 0..shards {
        let c = client.claim(Kind::Election, &format!("shard-{shard}"), &claim(a.addr, "a")).await.unwrap();
        assert!(matches!(c, Claimed::Granted(_)), "{c:?}");
    }
    let sharded = r#"{"elector_cluster":"elector","shard":{"header":"x-shard","template":"shard-{shard}"},"allow":["127.0.0.0/8"],"hold_ms":10000}"#;
    let envoy = Envoy::start(&config(sharded, elector.addr(), None)).await;
    let envoy_rss = rss_kib(envoy.pid());
    // Clients on connections of their own, so that both workers get some;
    // each visits every shard.
    let visits: Vec<_> = (0..8)
        .map(|_| {
            let listener = envoy.listener;
            tokio::spawn(async move {
                let http = HttpClient::new();
                for shard in 0..shards {
                    let a = http.get(listener, "/", &[("x-shard", &shard.to_string())]).await;
                    assert!(a.status == 200 && a.body.starts_with("a "), "shard {shard}: {a:?}");
                }
            })
        })
        .collect();
    for v in visits {
        v.await.unwrap();
    }
    // Envoy's own count of its requests to the elector: each worker's root
    // context holds one watch (POST /v1/watch) over every shard its
    // requests used, so every worker that took a connection holds one,
    // and the elector follows busy x shards names.
    let mut busy = 0;
    for worker in 0..2 {
        let pattern = format!("^listener.*worker_{worker}.downstream_cx_total$");
        busy += u64::from(envoy.envoy_stat(&pattern).await > 0);
    }
    let active = || envoy.envoy_stat("^cluster.elector.upstream_rq_active$");
    let watched_names = || async {
        let reply = client.request(hyper::Method::GET, "/metrics", None::<&()>).await.unwrap();
        let text = String::from_utf8_lossy(&reply.body).into_owned();
        text.lines().find_map(|l| l.strip_prefix("mpsync_watched_names ")?.parse::<u64>().ok()).unwrap_or(0)
    };
    let watching = async {
        while active().await != busy || watched_names().await != busy * shards as u64 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(PATIENCE, watching).await.expect("the workers did not watch every shard");
    let total = || envoy.envoy_stat("^cluster.elector.upstream_rq_total$");
    let before = (total().await, Instant::now());
    tokio::time::sleep(window).await;
    let rate = (total().await - before.0) as f64 / before.1.elapsed().as_secs_f64();
    println!(
        "\n{shards} shards through one Envoy (2 workers, {busy} with connections; each holds one watch over every \
         shard its requests used, 30 s at a time):"
    );
    println!(
        "  {} requests parked at the elector following {} names, {rate:.1} requests/s to it at steady state (over \
         {window:?})",
        active().await,
        watched_names().await
    );
    println!(
        "  RSS: elector {} -> {} MiB; Envoy {} MiB started -> {} MiB with {shards} shards watched",
        elector_rss / 1024,
        rss_kib(elector_pid) / 1024,
        envoy_rss / 1024,
        rss_kib(envoy.pid()) / 1024
    );
}
