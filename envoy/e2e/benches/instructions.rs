//! Envoy's instructions per request, counted by callgrind: a figure that
//! does not move with the load on this shared machine, so a few percent of
//! filter cost can be told from luck. Prints numbers, asserts nothing.
//!
//! Each configuration runs in its own Envoy (one worker) under
//! `valgrind --tool=callgrind` with counting off; after a warm-up,
//! `callgrind_control` zeroes the counters, the same requests are sent one
//! after another on one keep-alive connection, and a dump gives every
//! instruction Envoy ran meanwhile, on all its threads. What it runs when
//! idle (timers, the filter's tick, long-polls parked at the elector) is
//! measured over a quiet window of its own and taken off, so the figure is
//! per request. The rows are built so that their differences are the
//! breakdown: routing by header (2 − 1), a wasm filter's calls (4 − 2),
//! the leader filter's own work (5 − 4), its two leader headers (5 − 6),
//! sharding (8 − 5), of which Envoy's work for the request's one more
//! header (12 − 5) and the filter's (8 − 12), the number of shards
//! (9 − 8), and the EDS path's stamping of the leader's id and token
//! (7 − 11). Each row is also split by where the instructions ran (see
//! `Profile`).
//!
//! Configurations: a plain static route; the gateway's ORIGINAL_DST
//! cluster with the client naming the upstream; the no-op proxy-wasm filter
//! (`envoy/baseline`) on each of those two routes; the leader filter in
//! gateway mode with a known leader, with its leader headers and without;
//! the EDS path (no filter); the leader filter sharded by a header, every
//! request for one shard and requests spread over 1,000 shards; the leader
//! filter sending only the token header; the EDS path without its upstream
//! filter stamping the leader's id and token; the leader filter on one
//! election with the requests of row 8 (an `x-shard` header it does not
//! read).
//!
//! `make bench-instructions`. `BENCH_REQUESTS` (default 2000, counted per
//! configuration), `BENCH_WARMUP` (default 500), `BENCH_SHARDS` (default
//! 1000), `BENCH_ONLY` (a comma-separated list of row numbers),
//! `BENCH_OBJECTS` (set: also print each row's 25 costliest functions).

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use envoy_e2e::{
    Envoy, HttpClient, Upstream, baseline_config, baseline_original_dst_config, config, eds_config, eds_config_with,
    original_dst_config, plain_config,
};
use mpsync_client::{Claimed, Client};
use mpsync_core::Kind;
use mpsync_core::wire::AcquireRequest;
use testkit::bench::env_or;
use testkit::proc::elector;

/// The ratios printed: a label and the two row numbers.
const RATIOS: [(&str, usize, usize); 15] = [
    ("ORIGINAL_DST / plain", 2, 1),
    ("no-op filter (static) / plain", 3, 1),
    ("no-op filter (ORIGINAL_DST) / ORIGINAL_DST", 4, 2),
    ("leader filter / plain", 5, 1),
    ("leader filter / no-op filter (static route)", 5, 3),
    ("leader filter / no-op filter (ORIGINAL_DST, same routing)", 5, 4),
    ("leader filter, headers off / no-op filter (ORIGINAL_DST)", 6, 4),
    ("leader filter / leader filter, headers off (two headers)", 5, 6),
    ("EDS / plain", 7, 1),
    ("EDS, nothing stamped / plain", 11, 1),
    ("leader filter, token header only / no-op filter (static route)", 10, 3),
    ("leader filter, sharded by header, 1 shard / one election", 8, 5),
    ("leader filter, one election, x-shard sent / not sent", 12, 5),
    ("leader filter, sharded, 1 shard / one election, same requests", 8, 12),
    ("leader filter, 1,000 shards / 1 shard", 9, 8),
];

/// How long a configuration is left alone to measure what it runs idle.
const QUIET: Duration = Duration::from_secs(2);

/// An Envoy under callgrind, counting off until [`Counted::count`].
struct Counted {
    envoy: Envoy,
    out: PathBuf,
}

impl Counted {
    async fn start(yaml: &str) -> Counted {
        let out = testkit::temp_dir("callgrind").unwrap();
        let wrapper = [
            "valgrind".to_owned(),
            "--tool=callgrind".to_owned(),
            "--instr-atstart=no".to_owned(),
            // V8 writes the code it compiles into memory it then runs.
            "--smc-check=all-non-file".to_owned(),
            format!("--callgrind-out-file={}", out.join("callgrind.out").display()),
        ];
        let envoy = Envoy::start_under(yaml, 1, &wrapper, Duration::from_secs(300)).await;
        Counted { envoy, out }
    }

    fn control(&self, args: &[&str]) {
        let out = std::process::Command::new("callgrind_control")
            .args(args)
            .arg(self.envoy.pid().to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "callgrind_control {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Counts what `work` makes Envoy run: zero, work, dump.
    async fn count<F: Future<Output = ()>>(&self, work: F) -> (Profile, Duration) {
        self.control(&["-i", "on"]);
        self.control(&["-z"]);
        let start = Instant::now();
        work.await;
        let took = start.elapsed();
        self.control(&["-d"]);
        (Profile::read(&self.out), took)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.out);
    }
}

/// Instructions by where they ran. Envoy's binary is stripped and V8
/// compiles the filter into memory no file backs, so the profile can tell
/// apart only: Envoy's own code (`envoy`), code in no file (`unmapped`:
/// V8's compiled wasm and builtins, and part of Envoy's text, since the
/// plain route has some too), and shared libraries (`libc`: libc's memory
/// copies and locks, the dynamic loader).
#[derive(Default, Clone)]
struct Profile {
    total: f64,
    envoy: f64,
    unmapped: f64,
    libc: f64,
    /// Self cost by object and function, with `BENCH_OBJECTS` set.
    objects: HashMap<String, f64>,
}

impl Profile {
    /// The newest dump in `dir`.
    fn read(dir: &Path) -> Profile {
        let newest = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.strip_prefix("callgrind.out.").and_then(|n| n.parse::<u32>().ok())
            })
            .max()
            .expect("callgrind wrote no dump");
        Profile::parse(&std::fs::read_to_string(dir.join(format!("callgrind.out.{newest}"))).unwrap())
    }

    /// Self cost by object and function from a callgrind dump (one event,
    /// `Ir`). Names may be compressed: `(7) name` defines 7, `(7)` uses it.
    fn parse(text: &str) -> Profile {
        // Objects, files and functions are numbered separately.
        let mut names: HashMap<(char, String), String> = HashMap::new();
        let mut resolve = |space: char, v: &str| -> String {
            let v = v.trim();
            match v.strip_prefix('(').and_then(|r| r.split_once(')')) {
                Some((id, rest)) if rest.trim().is_empty() => {
                    names.get(&(space, id.to_owned())).cloned().unwrap_or_default()
                }
                Some((id, rest)) => {
                    names.insert((space, id.to_owned()), rest.trim().to_owned());
                    rest.trim().to_owned()
                }
                None => v.to_owned(),
            }
        };
        let (mut ob, mut func) = (String::new(), String::new());
        let mut skip_call_cost = false;
        let by_function = std::env::var_os("BENCH_OBJECTS").is_some();
        let mut p = Profile::default();
        for line in text.lines() {
            let Some(first) = line.chars().next() else { continue };
            if let Some((key, value)) = line.split_once('=')
                && first.is_ascii_alphabetic()
            {
                // Every key that can define a compressed name resolves it.
                let space = match key {
                    "ob" | "cob" => 'o',
                    "fn" | "cfn" => 'n',
                    _ => 'f',
                };
                let name = resolve(space, value);
                match key {
                    "ob" => ob = name,
                    "fn" => func = name,
                    "calls" => skip_call_cost = true,
                    _ => {}
                }
                continue;
            }
            if !(first.is_ascii_digit() || first == '+' || first == '-' || first == '*') {
                continue;
            }
            if std::mem::take(&mut skip_call_cost) {
                continue; // the inclusive cost of a call, counted in the callee
            }
            let cost: f64 = line.split_whitespace().last().unwrap().parse().unwrap();
            p.total += cost;
            let object = ob.rsplit('/').next().unwrap_or("");
            if by_function {
                *p.objects.entry(format!("{object} {func}")).or_default() += cost;
            }
            if object == "envoy" {
                p.envoy += cost;
            } else if object.is_empty() || object == "???" {
                p.unmapped += cost;
            } else {
                p.libc += cost;
            }
        }
        p
    }

    /// Per request: `self` over `requests`, less `idle` (instructions per
    /// second) over `took`.
    fn per_request(&self, took: Duration, idle: &Profile, requests: usize) -> Profile {
        let (n, s) = (requests as f64, took.as_secs_f64());
        Profile { objects: self.objects.clone(), ..self.zip(idle, |a, i| ((a - i * s) / n).max(0.0)) }
    }

    fn per_second(&self, window: Duration) -> Profile {
        let s = window.as_secs_f64();
        self.zip(self, |a, _| a / s)
    }

    /// `f` of each figure of `self` and the same one of `other`.
    fn zip(&self, other: &Profile, f: impl Fn(f64, f64) -> f64) -> Profile {
        Profile {
            total: f(self.total, other.total),
            envoy: f(self.envoy, other.envoy),
            unmapped: f(self.unmapped, other.unmapped),
            libc: f(self.libc, other.libc),
            objects: HashMap::new(),
        }
    }
}

/// One configuration: its Envoy and the headers of its i-th request.
struct Setup {
    label: &'static str,
    yaml: String,
    headers: Box<dyn Fn(usize) -> Vec<(&'static str, String)>>,
    /// Requests before counting (at least this many).
    warmup: usize,
}

async fn send(http: &HttpClient, listener: SocketAddr, setup: &Setup, range: std::ops::Range<usize>) {
    for i in range {
        let headers = (setup.headers)(i);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let a = http.get(listener, "/", &headers).await;
        assert!(a.status == 200 && a.body.starts_with("a "), "{}: {a:?}", setup.label);
    }
}

fn claim(address: SocketAddr) -> AcquireRequest {
    AcquireRequest::new("a", Duration::from_secs(3600), None, Some(&address.to_string()))
}

fn k(n: f64) -> String {
    format!("{:.1}k", n / 1000.0)
}

#[tokio::main]
async fn main() {
    let requests = env_or("BENCH_REQUESTS", 2000) as usize;
    let warmup = env_or("BENCH_WARMUP", 500) as usize;
    let shards = env_or("BENCH_SHARDS", 1000) as usize;
    let only: Option<Vec<usize>> =
        std::env::var("BENCH_ONLY").ok().map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    let elector = elector().await;
    let client = Client::new(&elector.url());
    let a = Upstream::start("a").await;
    let granted = |c: Claimed| assert!(matches!(c, Claimed::Granted(_)), "{c:?}");
    granted(client.claim(Kind::Election, "bench", &claim(a.addr)).await.unwrap());
    for shard in 0..shards {
        granted(client.claim(Kind::Election, &format!("s-{shard}"), &claim(a.addr)).await.unwrap());
    }
    let eds_file = testkit::temp_dir("eds-instructions").unwrap().join("bench.json");
    let mut watch = envoy_e2e::eds_watch(&elector.url(), "bench", &eds_file);
    watch.expect(": its first line", |_| true).await;

    let dst = a.addr.to_string();
    let names_upstream = move |_: usize| vec![("x-envoy-original-dst-host", dst.clone())];
    let filter = r#"{"elector_cluster":"elector","election":"bench","allow":["127.0.0.0/8"]}"#;
    let filter_no_headers = r#"{"elector_cluster":"elector","election":"bench","allow":["127.0.0.0/8"],"headers":{"leader_id":null,"leader_token":null}}"#;
    let filter_token_only =
        r#"{"elector_cluster":"elector","election":"bench","allow":["127.0.0.0/8"],"headers":{"leader_id":null}}"#;
    let sharded = r#"{"elector_cluster":"elector","shard":{"header":"x-shard","template":"s-{shard}"},"allow":["127.0.0.0/8"],"hold_ms":10000}"#;
    let none = |_: usize| vec![];
    let setups = vec![
        Setup { label: "plain static route", yaml: plain_config(a.addr), headers: Box::new(none), warmup },
        Setup {
            label: "ORIGINAL_DST, client names upstream",
            yaml: original_dst_config(elector.addr()),
            headers: Box::new(names_upstream.clone()),
            warmup,
        },
        Setup {
            label: "no-op wasm filter, static route",
            yaml: baseline_config(a.addr),
            headers: Box::new(none),
            warmup,
        },
        Setup {
            label: "no-op wasm filter, ORIGINAL_DST",
            yaml: baseline_original_dst_config(elector.addr()),
            headers: Box::new(names_upstream),
            warmup,
        },
        Setup {
            label: "leader filter (gateway)",
            yaml: config(filter, elector.addr(), None),
            headers: Box::new(none),
            warmup,
        },
        Setup {
            label: "leader filter, leader headers off",
            yaml: config(filter_no_headers, elector.addr(), None),
            headers: Box::new(none),
            warmup,
        },
        Setup { label: "EDS file, id and token stamped", yaml: eds_config(&eds_file), headers: Box::new(none), warmup },
        Setup {
            label: "leader filter, 1 shard",
            yaml: config(sharded, elector.addr(), None),
            headers: Box::new(|_| vec![("x-shard", "0".to_owned())]),
            warmup,
        },
        Setup {
            label: "leader filter, 1,000 shards",
            yaml: config(sharded, elector.addr(), None),
            headers: Box::new(move |i| vec![("x-shard", (i % shards).to_string())]),
            warmup: warmup.max(2 * shards),
        },
        Setup {
            label: "leader filter, token header only",
            yaml: config(filter_token_only, elector.addr(), None),
            headers: Box::new(none),
            warmup,
        },
        Setup {
            label: "EDS file, id and token not stamped",
            yaml: eds_config_with(&eds_file, false),
            headers: Box::new(none),
            warmup,
        },
        // What Envoy does for the header that names a shard, apart from
        // the filter reading it.
        Setup {
            label: "leader filter, x-shard sent, unread",
            yaml: config(filter, elector.addr(), None),
            headers: Box::new(|_| vec![("x-shard", "0".to_owned())]),
            warmup,
        },
    ];

    let http = HttpClient::new();
    println!(
        "Envoy 1.40, 1 worker, under callgrind; {requests} requests counted per configuration after {warmup} \
         (1,000 shards: {}) to warm up, one keep-alive connection; instructions per request, idle work taken off:",
        warmup.max(2 * shards)
    );
    println!(
        "{:>2} {:>36} | {:>8} | {:>8} {:>8} {:>8} | {:>9}",
        "", "", "total", "envoy", "unmapped", "libc", "idle/s"
    );
    let mut results: Vec<(usize, &'static str, Profile)> = Vec::new();
    for (row, setup) in setups.iter().enumerate() {
        let row = row + 1;
        if only.as_ref().is_some_and(|o| !o.contains(&row)) {
            continue;
        }
        let counted = Counted::start(&setup.yaml).await;
        let listener = counted.envoy.listener;
        send(&http, listener, setup, 0..setup.warmup).await;
        let (idle, window) = counted.count(tokio::time::sleep(QUIET)).await;
        let idle = idle.per_second(window);
        let (busy, took) = counted.count(send(&http, listener, setup, setup.warmup..setup.warmup + requests)).await;
        let p = busy.per_request(took, &idle, requests);
        println!(
            "{row:>2} {:>36} | {:>8} | {:>8} {:>8} {:>8} | {:>9}",
            setup.label,
            k(p.total),
            k(p.envoy),
            k(p.unmapped),
            k(p.libc),
            k(idle.total)
        );
        if std::env::var_os("BENCH_OBJECTS").is_some() {
            let mut top: Vec<_> = p.objects.iter().collect();
            top.sort_by(|a, b| b.1.total_cmp(a.1));
            for (name, cost) in top.iter().take(25) {
                println!("      {:>10.1} {name}", *cost / requests as f64);
            }
        }
        results.push((row, setup.label, p));
    }
    let find = |row: usize| results.iter().find(|r| r.0 == row).map(|r| r.2.total);
    println!("\nRatios (instructions per request):");
    for (what, a, b) in RATIOS {
        if let (Some(x), Some(y)) = (find(a), find(b)) {
            println!("  {what:<64} {:.3}  (+{})", x / y, k(x - y));
        }
    }
    let _ = std::fs::remove_dir_all(eds_file.parent().unwrap());
}
