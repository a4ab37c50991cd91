//! Names that come and go leave nothing behind: a real elector process on
//! each store (memory, a real etcd, the Kubernetes Lease API emulator)
//! churns distinct names round after round, and after each round the maps
//! it keeps in memory (`mpsync_state_entries` in `/metrics`: the judge's,
//! the memory store's records, the etcd and Kubernetes stores' watched
//! names) come back to their size at rest.
//!
//! Each round: leases acquired on fresh names and left to run out (nobody
//! releases them: the elector's sweeper clears them), long-polls on fresh
//! names that never change, some answered at their timeout and some
//! dropped by their client while parked. The rounds are counted, not timed:
//! the test waits for the sizes as an event, with a generous deadline.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use hyper::Method;
use mpsync_client::{Claimed, Client, Read};
use mpsync_core::wire::{AcquireRequest, Kind};
use testkit::elector::ElectorProcess;
use testkit::{Etcd, LeaseApi};

const BIN: &str = env!("CARGO_BIN_EXE_elector");
/// Bound on waits for events; reaching it means the event never came. A
/// lease is cleared `CLEAR_AFTER` (2 s) after it ran out.
const PATIENCE: Duration = Duration::from_secs(30);
const ROUNDS: usize = 3;
/// Per round: leases left to run out, long-polls answered at their
/// timeout, long-polls dropped by their client.
const LEASES: usize = 100;
const TIMED_OUT: usize = 30;
const DROPPED: usize = 30;
const TTL: Duration = Duration::from_millis(200);

/// A store under test, running, and the elector flags that select it.
struct Backend {
    args: Vec<String>,
    _etcd: Option<Etcd>,
    _api: Option<(LeaseApi, PathBuf)>,
}

impl Backend {
    async fn start(store: &str) -> Backend {
        let mut backend = Backend { args: vec!["--store".into(), store.into()], _etcd: None, _api: None };
        match store {
            "memory" => {}
            "etcd" => {
                let etcd = Etcd::start().await.unwrap();
                backend.args.extend(["--etcd-endpoints".into(), etcd.endpoint()]);
                backend._etcd = Some(etcd);
            }
            "kubernetes" => {
                let api = LeaseApi::start().await.unwrap();
                let dir = testkit::temp_dir("churn-kubeconfig").unwrap();
                let kubeconfig = api.write_kubeconfig(&dir, "churn").unwrap();
                backend.args.extend(["--kubeconfig".into(), kubeconfig.display().to_string()]);
                backend._api = Some((api, kubeconfig));
            }
            other => panic!("no store {other}"),
        }
        backend
    }
}

/// `mpsync_state_entries` by map, and the long-polls parked now.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sizes {
    maps: BTreeMap<String, u64>,
    watchers: u64,
}

async fn metrics(client: &Client) -> String {
    let reply = client.request(Method::GET, "/metrics", None::<&()>).await.unwrap();
    String::from_utf8(reply.body.to_vec()).unwrap()
}

fn value(line: &str) -> u64 {
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

async fn sizes(client: &Client) -> Sizes {
    let text = metrics(client).await;
    let maps = text
        .lines()
        .filter_map(|l| l.strip_prefix("mpsync_state_entries{map=\""))
        .map(|l| (l.split('"').next().unwrap().to_owned(), value(l)))
        .collect();
    let watchers = text.lines().find(|l| l.starts_with("mpsync_watchers ")).map(value).unwrap();
    Sizes { maps, watchers }
}

async fn expiries(client: &Client) -> u64 {
    metrics(client).await.lines().find(|l| l.starts_with("mpsync_expiries_total{kind=\"lock\"}")).map(value).unwrap()
}

/// Asks `/metrics` every 50 ms (no event says a map shrank) until `check`
/// holds for what it reads; panics with the last reading at the deadline.
async fn until<T: std::fmt::Debug>(
    client: &Client,
    what: &str,
    read: impl AsyncFn(&Client) -> T,
    check: impl Fn(&T) -> bool,
) {
    let mut every = tokio::time::interval(Duration::from_millis(50));
    let mut last = None;
    let reached = tokio::time::timeout(PATIENCE, async {
        loop {
            every.tick().await;
            let now = read(client).await;
            if check(&now) {
                return;
            }
            last = Some(now);
        }
    })
    .await;
    assert!(reached.is_ok(), "{what}: never reached; last seen {last:?}");
}

async fn round(client: &Client, tag: &str) -> Vec<(String, u64)> {
    // Leases on fresh names, left to run out.
    let mut leases = Vec::with_capacity(LEASES);
    for i in 0..LEASES {
        let name = format!("{tag}-lease-{i}");
        let request = AcquireRequest::new("churner", TTL, None, None);
        let Claimed::Granted(lease) = client.claim(Kind::Lock, &name, &request).await.unwrap() else {
            panic!("{name} refused")
        };
        leases.push((name, lease.token));
    }
    // Long-polls on names that never change, answered at their timeout.
    let polls: Vec<_> = (0..TIMED_OUT)
        .map(|i| {
            let (client, name) = (client.clone(), format!("{tag}-quiet-{i}"));
            tokio::spawn(async move {
                let version = client.read(Kind::Lock, &name, None).await.unwrap().version();
                client.read(Kind::Lock, &name, Some((version, Duration::from_millis(100)))).await.unwrap()
            })
        })
        .collect();
    for poll in polls {
        assert!(matches!(poll.await.unwrap(), Read::Free { .. }));
    }
    // Long-polls parked until their client goes away.
    let parked_before = sizes(client).await.watchers;
    let dropped: Vec<_> = (0..DROPPED)
        .map(|i| {
            let (client, name) = (client.clone(), format!("{tag}-dropped-{i}"));
            tokio::spawn(async move {
                let version = client.read(Kind::Lock, &name, None).await.unwrap().version();
                client.read(Kind::Lock, &name, Some((version, Duration::from_secs(120)))).await
            })
        })
        .collect();
    let parked = parked_before + DROPPED as u64;
    until(client, "the long-polls parked", sizes, |s| s.watchers >= parked).await;
    for task in dropped {
        task.abort();
    }
    leases
}

async fn churn(store: &str) {
    let backend = Backend::start(store).await;
    let mut args: Vec<&str> = vec!["--log", "warn", "--store-timeout", "5s"];
    args.extend(backend.args.iter().map(String::as_str));
    let elector = ElectorProcess::spawn(BIN, &args).await.unwrap();
    let client = Client::new(&elector.url());
    let at_rest = sizes(&client).await;
    assert!(at_rest.maps.contains_key("judge"), "{at_rest:?}");
    let expected_maps = if store == "memory" { "records" } else { "watched" };
    assert!(at_rest.maps.contains_key(expected_maps), "{at_rest:?}");
    let mut first = Vec::new();
    for r in 0..ROUNDS {
        let leases = round(&client, &format!("r{r}")).await;
        // Every lease ran out and was cleared (an expiry each), and every
        // map is back to its size at rest.
        let cleared = ((r + 1) * LEASES) as u64;
        until(&client, &format!("round {r}: every lease cleared"), expiries, |n| *n == cleared).await;
        until(&client, &format!("round {r}: sizes back at rest {at_rest:?}"), sizes, |s| *s == at_rest).await;
        if r == 0 {
            first = leases;
        }
    }
    // Names cleared and forgotten still hand out larger tokens.
    for (name, token) in first.iter().take(5) {
        let request = AcquireRequest::new("again", Duration::from_secs(30), None, None);
        let Claimed::Granted(lease) = client.claim(Kind::Lock, name, &request).await.unwrap() else { panic!() };
        assert!(lease.token > *token, "{name}: {} after {token}", lease.token);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store() {
    churn("memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store() {
    churn("etcd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_store() {
    churn("kubernetes").await;
}
