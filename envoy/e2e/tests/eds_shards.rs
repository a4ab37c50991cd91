//! The EDS path for several elections from one process: `mpsync leader
//! --watch --envoy-eds-dir DIR a b` keeps DIR/a.json and DIR/b.json, one
//! Envoy cluster each, and a real Envoy routes each shard to its own
//! leader, through a hand-over of one of them.

#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use envoy_e2e::{Envoy, HttpClient, Upstream};
use mpsync_client::{Claimed, Client, Kind};
use mpsync_core::wire::AcquireRequest;
use testkit::proc::{PATIENCE, Proc, elector};

/// A listener routing `/NAME` to cluster `shard-NAME`, whose endpoints come
/// from `DIR/NAME.json`, for each of `shards`. No filter.
fn shards_config(dir: &Path, shards: &[&str]) -> String {
    let dir = dir.display().to_string();
    let mut routes = String::new();
    let mut clusters = String::new();
    for shard in shards {
        routes.push_str(&format!(
            "              - match: {{ path: \"/{shard}\" }}\n                route: {{ cluster: shard-{shard}, timeout: 30s }}\n"
        ));
        clusters.push_str(&format!(
            r#"  - name: shard-{shard}
    type: EDS
    connect_timeout: 1s
    eds_cluster_config:
      eds_config:
        resource_api_version: V3
        path_config_source:
          path: {dir}/{shard}.json
          watched_directory: {{ path: {dir} }}
"#
        ));
    }
    format!(
        r#"node: {{ id: gateway, cluster: gateway }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
  - name: ingress
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{routes}          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{clusters}"#
    )
}

/// `upstream` takes `election`; returns its token.
async fn lead(url: &str, election: &str, upstream: &Upstream) -> u64 {
    let request = AcquireRequest::new(&upstream.id, Duration::from_secs(60), None, Some(&upstream.addr.to_string()));
    match Client::new(url).claim(Kind::Election, election, &request).await.unwrap() {
        Claimed::Granted(lease) => lease.token,
        other => panic!("{} does not lead {election}: {other:?}", upstream.id),
    }
}

/// Sends requests to `path` until one is answered by `id`.
async fn until_served_by(http: &HttpClient, envoy: SocketAddr, path: &str, id: &str) {
    let served = async {
        loop {
            let answer = http.get(envoy, path, &[]).await;
            if answer.status == 200 && answer.body.starts_with(&format!("{id} ")) {
                return;
            }
        }
    };
    tokio::time::timeout(PATIENCE, served).await.unwrap_or_else(|_| panic!("no request to {path} reached {id}"));
}

#[tokio::test]
async fn one_process_keeps_each_shards_cluster_on_its_own_leader() {
    let elector = elector().await;
    let url = elector.url();
    let dir = testkit::temp_dir("eds-shards").unwrap();
    let dir_arg = dir.display().to_string();
    let args =
        ["leader", "--elector", &url, "--watch", "--envoy-eds-dir", &dir_arg, "--cluster-template", "shard-{name}"];
    let mut watch =
        Proc::mpsync("eds", &[&args[..], &["a", "b"]].concat().into_iter().map(String::from).collect::<Vec<_>>());
    watch.expect_line("b none").await;

    let envoy = Envoy::start(&shards_config(&dir, &["a", "b"])).await;
    let http = HttpClient::new();
    for path in ["/a", "/b"] {
        assert_eq!(http.get(envoy.listener, path, &[]).await.status, 503, "{path}: no leader, no endpoint");
    }
    let (a1, b1, b2) = (Upstream::start("a1").await, Upstream::start("b1").await, Upstream::start("b2").await);
    lead(&url, "a", &a1).await;
    let b1_token = lead(&url, "b", &b1).await;
    until_served_by(&http, envoy.listener, "/a", "a1").await;
    until_served_by(&http, envoy.listener, "/b", "b1").await;

    // b changes hands; a's route does not move.
    assert!(Client::new(&url).release(Kind::Election, "b", "b1", b1_token).await.unwrap());
    lead(&url, "b", &b2).await;
    until_served_by(&http, envoy.listener, "/b", "b2").await;
    let answer = http.get(envoy.listener, "/a", &[]).await;
    assert!(answer.body.starts_with("a1 "), "{answer:?}");
    drop(watch);
    std::fs::remove_dir_all(&dir).unwrap();
}
