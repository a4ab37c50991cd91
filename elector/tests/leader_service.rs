//! `--leader-service`: a real elector on the Kubernetes store keeps the
//! EndpointSlice of a selector-less Service listing only the leader of an
//! election, against the Lease API emulator (`kubernetes::*`, real HTTP;
//! it serves EndpointSlices from the same object store) and a real cluster
//! (`real_cluster::*`, when `MPSYNC_TEST_KUBECONFIG` names a kubeconfig
//! whose credentials may also get, create, update and delete
//! EndpointSlices; `#[ignore]`d otherwise, run them with `--run-ignored
//! only`).
//!
//! Every wait is for the slice to reach a state, read in a loop with a
//! short pause, bounded by `PATIENCE` (a failure, never a timing claim).

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams};
use mpsync_client::{Claimed, Client};
use mpsync_core::wire::{AcquireRequest, Kind, LeaseView};
use serde_json::Value;

#[macro_use]
mod common;

use common::*;

const LEADER: &str = "sync.metaparticle.io/leader";
const TOKEN: &str = "sync.metaparticle.io/token";
const VERSION: &str = "sync.metaparticle.io/version";

/// One election and the Service that follows it, with names no other
/// test (or an earlier run on a real cluster) uses.
struct Names {
    election: String,
    service: String,
    slice: String,
    flag: String,
}

fn names() -> Names {
    let (election, service) = (unique("web"), unique("svc"));
    let slice = format!("{service}-leader");
    let flag = format!("{election}={service}:http");
    Names { election, service, slice, flag }
}

async fn slices(backend: &Backend) -> Option<Api<EndpointSlice>> {
    match backend {
        Backend::RealCluster { kubeconfig, namespace } => {
            let (client, _) = elector::leader_service::cluster::connect(Some(kubeconfig.as_path())).await.unwrap();
            Some(Api::namespaced(client, namespace))
        }
        _ => None,
    }
}

/// The slice `name` as the API server has it now.
async fn slice(backend: &Backend, name: &str) -> Option<Value> {
    match backend {
        Backend::Kubernetes { api, .. } => api.endpoint_slice("sync-test", name),
        Backend::RealCluster { .. } => {
            let slice = slices(backend).await.unwrap().get_opt(name).await.unwrap();
            slice.map(|s| serde_json::to_value(s).unwrap())
        }
        _ => panic!("no EndpointSlices in this store"),
    }
}

/// Reads the slice every 10 ms until `done` holds, and returns it.
async fn until(backend: &Backend, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = None;
    let reached = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(s) = slice(backend, name).await {
                if done(&s) {
                    return s;
                }
                last = Some(s);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    reached.unwrap_or_else(|_| panic!("the slice {name} never {what}; last seen: {last:#?}"))
}

fn addresses(slice: &Value) -> Vec<String> {
    let endpoints = slice["endpoints"].as_array().cloned().unwrap_or_default();
    let listed = endpoints.iter().flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default());
    listed.filter_map(|a| a.as_str().map(str::to_owned)).collect()
}

fn annotation<'a>(slice: &'a Value, key: &str) -> Option<&'a str> {
    slice["metadata"]["annotations"][key].as_str()
}

/// True when the slice lists `lease`'s holder alone, at `ip` (and the
/// port of its address), with its token.
fn names_leader(slice: &Value, lease: &LeaseView, ip: &str) -> bool {
    let port: u64 = lease.address.as_ref().unwrap().rsplit(':').next().unwrap().parse().unwrap();
    addresses(slice) == [ip]
        && slice["ports"][0]["port"] == port
        && annotation(slice, LEADER) == Some(&lease.holder)
        && annotation(slice, TOKEN) == Some(&lease.token.to_string())
}

fn lists_nobody(slice: &Value) -> bool {
    addresses(slice).is_empty() && annotation(slice, LEADER).is_none() && annotation(slice, TOKEN).is_none()
}

async fn lead(client: &Client, election: &str, holder: &str, ttl_ms: u64, address: &str) -> LeaseView {
    let request = AcquireRequest::new(holder, Duration::from_millis(ttl_ms), None, Some(address));
    match client.claim(Kind::Election, election, &request).await.unwrap() {
        Claimed::Granted(lease) => lease,
        other => panic!("{holder} does not lead {election}: {other:?}"),
    }
}

async fn renew(client: &Client, election: &str, lease: &LeaseView) -> LeaseView {
    let address = lease.address.as_deref();
    let request = AcquireRequest::new(&lease.holder, Duration::from_millis(lease.ttl_ms), Some(lease.token), address);
    match client.claim(Kind::Election, election, &request).await.unwrap() {
        Claimed::Granted(lease) => lease,
        other => panic!("not renewed: {other:?}"),
    }
}

async fn resign(client: &Client, election: &str, lease: &LeaseView) {
    assert!(client.release(Kind::Election, election, &lease.holder, lease.token).await.unwrap());
}

/// Deletes the slice a case made on a real cluster (the emulator goes away
/// with the test).
async fn clean_up(backend: &Backend, name: &str) {
    if let Some(api) = slices(backend).await {
        let _ = api.delete(name, &DeleteParams::default()).await;
    }
}

// ---------------------------------------------------------------- the cases

async fn names_the_leader_and_follows_a_hand_over(store: &str) {
    let backend = Backend::start(store).await;
    let n = names();
    let (_elector, client) = backend.elector("elector-a", &["--leader-service", &n.flag]).await;

    let a = lead(&client, &n.election, "pod-a", 30_000, "10.0.0.1:8080").await;
    let listed = until(&backend, &n.slice, "named pod-a", |s| names_leader(s, &a, "10.0.0.1")).await;
    assert_eq!(listed["addressType"], "IPv4");
    assert_eq!(listed["ports"][0]["name"], "http", "the Service's port name");
    assert_eq!(listed["metadata"]["labels"]["kubernetes.io/service-name"], n.service);
    assert_eq!(listed["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"], "elector.sync.metaparticle.io");
    assert_eq!(listed["metadata"]["annotations"]["sync.metaparticle.io/election"], n.election);

    // Renewals change the view, not who leads: nothing to write.
    let mut renewed = a.clone();
    for _ in 0..10 {
        renewed = renew(&client, &n.election, &renewed).await;
    }
    resign(&client, &n.election, &renewed).await;
    until(&backend, &n.slice, "was emptied after the resignation", lists_nobody).await;

    let b = lead(&client, &n.election, "pod-b", 30_000, "10.0.0.2:9090").await;
    assert!(b.token > a.token);
    let listed = until(&backend, &n.slice, "named pod-b", |s| names_leader(s, &b, "10.0.0.2")).await;
    let version = |s: &Value| annotation(s, VERSION).unwrap().parse::<u64>().unwrap();
    assert!(version(&listed) >= b.version, "written from the view that named pod-b");
    if let Backend::Kubernetes { api, .. } = &backend {
        // Created naming pod-a, emptied, then naming pod-b: no write for
        // the renewals.
        let writes = api.endpoint_slice_writes();
        let mine: Vec<_> = writes.iter().filter(|w| w["metadata"]["name"] == n.slice.as_str()).collect();
        assert_eq!(mine.len(), 3, "{mine:#?}");
    }
    resign(&client, &n.election, &b).await;
    clean_up(&backend, &n.slice).await;
}

async fn emptied_when_the_lease_runs_out(store: &str) {
    let backend = Backend::start(store).await;
    let n = names();
    let (_elector, client) = backend.elector("elector-a", &["--leader-service", &n.flag]).await;
    // An IPv6 leader that stops renewing.
    let a = lead(&client, &n.election, "pod-a", 1_000, "[fd00::1]:8080").await;
    let listed = until(&backend, &n.slice, "named pod-a", |s| names_leader(s, &a, "fd00::1")).await;
    assert_eq!(listed["addressType"], "IPv6");
    let emptied = until(&backend, &n.slice, "was emptied when the lease ran out", lists_nobody).await;
    assert_eq!(emptied["addressType"], "IPv6", "the address type stays");
    clean_up(&backend, &n.slice).await;
}

/// Two electors keep the same slice through hand-overs made through
/// either: no write ever carries an older view than the one before it.
async fn two_electors_never_write_an_older_view(store: &str) {
    const HAND_OVERS: usize = 50;
    let backend = Backend::start(store).await;
    let n = names();
    let (_a, client_a) = backend.elector("elector-a", &["--leader-service", &n.flag]).await;
    let (_b, client_b) = backend.elector("elector-b", &["--leader-service", &n.flag]).await;
    let mut last = None;
    for i in 0..HAND_OVERS {
        let client = if i % 2 == 0 { &client_a } else { &client_b };
        let lease = lead(client, &n.election, &format!("pod-{i}"), 30_000, &format!("10.0.{i}.1:8080")).await;
        if i + 1 < HAND_OVERS {
            resign(client, &n.election, &lease).await;
        }
        last = Some(lease);
    }
    let last = last.unwrap();
    let ip = format!("10.0.{}.1", HAND_OVERS - 1);
    until(&backend, &n.slice, "named the last leader", |s| names_leader(s, &last, &ip)).await;
    if let Backend::Kubernetes { api, .. } = &backend {
        let writes: Vec<Value> =
            api.endpoint_slice_writes().into_iter().filter(|w| w["metadata"]["name"] == n.slice.as_str()).collect();
        let versions: Vec<u64> = writes.iter().map(|w| annotation(w, VERSION).unwrap().parse().unwrap()).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "an older view written over a newer one: {versions:?}");
        // At most one write per change of what the slice says (a leader,
        // then nobody, per hand-over), whichever elector made it.
        assert!(writes.len() <= 2 * HAND_OVERS, "{} writes for {HAND_OVERS} hand-overs", writes.len());
    }
    resign(&client_a, &n.election, &last).await;
    clean_up(&backend, &n.slice).await;
}

suite!(kubernetes: names_the_leader_and_follows_a_hand_over, emptied_when_the_lease_runs_out,
    two_electors_never_write_an_older_view);
suite!(real_cluster #[ignore = "needs MPSYNC_TEST_KUBECONFIG (a real cluster)"]:
    names_the_leader_and_follows_a_hand_over, emptied_when_the_lease_runs_out, two_electors_never_write_an_older_view);

/// `--leader-service` where it cannot work is a command-line error.
#[tokio::test]
async fn refused_where_it_cannot_work() {
    let state = testkit::temp_dir("leader-service-refused").unwrap().join("elector.json");
    let refused = async |args: &[&str]| {
        let mut command = tokio::process::Command::new(BIN);
        command.args(args).args(["--listen", "127.0.0.1:0", "--state-file"]).arg(&state).kill_on_drop(true);
        let out = tokio::time::timeout(PATIENCE, command.output())
            .await
            .unwrap_or_else(|_| panic!("{args:?}: the elector started instead of refusing"))
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    let stderr = refused(&["--store", "memory", "--leader-service", "web=web-leader"]).await;
    assert!(stderr.contains("--leader-service needs --store kubernetes"), "{stderr}");
    let twice = ["--store", "kubernetes", "--leader-service", "web=web-leader", "--leader-service", "db=web-leader"];
    let stderr = refused(&twice).await;
    assert!(stderr.contains("one Service follows one election"), "{stderr}");
    let stderr = refused(&["--store", "kubernetes", "--leader-service", "web=Web"]).await;
    assert!(stderr.contains("Service name"), "{stderr}");
}
