//! A real Envoy (from `.tools/envoy`, installed by scripts/setup.sh) with the
//! leader filter, upstream replicas that answer with their own id, and an
//! HTTP client that can set any header.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::process::{Child, Command};

use testkit::proc::PATIENCE;

pub fn envoy_bin() -> PathBuf {
    let bin = testkit::workspace().join(".tools/envoy/envoy/_bin/envoy");
    assert!(bin.is_file(), "{} is missing: run scripts/setup.sh (make test does)", bin.display());
    bin
}

pub fn filter_wasm() -> PathBuf {
    wasip1("leader_filter.wasm")
}

/// The no-op proxy-wasm filter (envoy/baseline), for the benchmark's floor.
pub fn baseline_wasm() -> PathBuf {
    wasip1("baseline_filter.wasm")
}

fn wasip1(file: &str) -> PathBuf {
    let path = testkit::proc::wasm("lock.wasm").parent().unwrap().join("../../wasm32-wasip1/release").join(file);
    assert!(path.is_file(), "{} is missing: run scripts/build-wasm.sh", path.display());
    path.canonicalize().unwrap()
}

/// An upstream replica: answers every request with
/// `ID leader-id=… leader-token=…` (the headers the filter stamped).
pub struct Upstream {
    pub id: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
}

impl Upstream {
    pub async fn start(id: &str) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let (name, counter) = (id.to_owned(), hits.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (name, counter) = (name.clone(), counter.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let h = |k: &str| req.headers().get(k).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
                        let body =
                            format!("{name} leader-id={} leader-token={}", h("x-leader-id"), h("x-leader-token"));
                        async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Upstream { id: id.to_owned(), addr, hits }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// An answer from Envoy.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

#[derive(Clone)]
pub struct HttpClient(Client<HttpConnector, Full<Bytes>>);

impl HttpClient {
    #[allow(clippy::new_without_default)]
    pub fn new() -> HttpClient {
        HttpClient(Client::builder(TokioExecutor::new()).build(HttpConnector::new()))
    }

    pub async fn get(&self, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        self.get_bytes(addr, path, &headers).await
    }

    /// [`get`](Self::get) with header values of any bytes (HTTP allows
    /// more than text in them).
    pub async fn get_bytes(&self, addr: SocketAddr, path: &str, headers: &[(&str, &[u8])]) -> Answer {
        let mut req = Request::get(format!("http://{addr}{path}"));
        for (k, v) in headers {
            req = req.header(*k, hyper::header::HeaderValue::from_bytes(v).unwrap());
        }
        let sent = self.0.request(req.body(Full::new(Bytes::new())).unwrap());
        let resp = tokio::time::timeout(PATIENCE, sent)
            .await
            .unwrap_or_else(|_| panic!("no answer from {addr}{path}"))
            .unwrap();
        let status = resp.status().as_u16();
        let headers =
            resp.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned())).collect();
        let body = String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned();
        Answer { status, headers, body }
    }
}

/// The filter's JSON configuration inside an Envoy listener, routing either
/// to an ORIGINAL_DST cluster (gateway) or to one static replica (sidecar).
pub fn config(filter_json: &str, elector: SocketAddr, local_replica: Option<SocketAddr>) -> String {
    let wasm = filter_wasm().display().to_string();
    let (route_cluster, extra_cluster) = match local_replica {
        None => (
            "leader",
            "  - name: leader\n    type: ORIGINAL_DST\n    lb_policy: CLUSTER_PROVIDED\n    connect_timeout: 1s\n    original_dst_lb_config: { use_http_header: true }\n".to_owned(),
            ),
        Some(addr) => (
            "local_replica",
            format!(
                "  - name: local_replica\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: local_replica\n      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }} }}] }}]\n",
                addr.ip(),
                addr.port()
            ),
        ),
    };
    let json = serde_json::to_string(filter_json).unwrap();
    format!(
        r#"admin:
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
              - match: {{ prefix: "/" }}
                route: {{ cluster: {route_cluster}, timeout: 30s }}
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: leader_filter
                root_id: leader_filter
                vm_config:
                  vm_id: leader_filter
                  runtime: envoy.wasm.runtime.v8
                  code: {{ local: {{ filename: {wasm} }} }}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {json}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: elector
    type: STATIC
    connect_timeout: 1s
    # One watch per worker, and a long-poll of its own for each request held
    # while its election has no leader: a benchmark holding thousands of
    # requests at once would pass Envoy's default of 1,024 requests.
    circuit_breakers:
      thresholds: [{{ max_connections: 100000, max_pending_requests: 100000, max_requests: 100000 }}]
    # HTTP/2 (prior knowledge): each worker's watch, the watch that replaces
    # it and every held request's long-poll share one connection per worker.
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: elector
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }} }}] }}]
{extra_cluster}"#,
        elector.ip(),
        elector.port()
    )
}

/// `yaml` (from [`config`]) with the listener handing each new connection
/// to the worker that has the fewest, so that a test's few connections
/// reach every worker.
pub fn exact_balance(yaml: &str) -> String {
    let chains = "    filter_chains:\n";
    assert!(yaml.contains(chains), "the listener's filter chains moved");
    yaml.replacen(chains, &format!("    connection_balance_config: {{ exact_balance: {{}} }}\n{chains}"), 1)
}

/// The same listener with a plain route to `upstream` and no filter: the
/// comparison for the benchmark.
pub fn plain_config(upstream: SocketAddr) -> String {
    without_filter(&config("{}", upstream, Some(upstream)))
}

/// The gateway's listener and ORIGINAL_DST cluster without the filter: the
/// client's own `x-envoy-original-dst-host` picks the upstream (benchmark
/// only: this is exactly what the filter exists to prevent).
pub fn original_dst_config(elector: SocketAddr) -> String {
    without_filter(&config("{}", elector, None))
}

/// The plain route with the no-op wasm filter in the leader filter's place.
pub fn baseline_config(upstream: SocketAddr) -> String {
    with_baseline(&config("{}", upstream, Some(upstream)))
}

/// The gateway's ORIGINAL_DST cluster with the no-op wasm filter in the
/// leader filter's place: the client's `x-envoy-original-dst-host` picks
/// the upstream, as the leader filter's header would (benchmark only).
pub fn baseline_original_dst_config(elector: SocketAddr) -> String {
    with_baseline(&config("{}", elector, None))
}

fn with_baseline(yaml: &str) -> String {
    yaml.replace(&filter_wasm().display().to_string(), &baseline_wasm().display().to_string())
}

fn without_filter(yaml: &str) -> String {
    let start = yaml.find("          - name: envoy.filters.http.wasm").unwrap();
    let end = yaml.find("          - name: envoy.filters.http.router").unwrap();
    yaml[..start].to_owned() + &yaml[end..]
}

/// `mpsync leader --watch --envoy-eds FILE --cluster leader ELECTION`
/// against the elector at `url`.
pub fn eds_watch(url: &str, election: &str, file: &std::path::Path) -> testkit::proc::Proc {
    let file = file.display().to_string();
    let args = ["leader", "--elector", url, "--watch", "--envoy-eds", &file, "--cluster", "leader", election];
    testkit::proc::Proc::mpsync("eds", &args.map(String::from))
}

/// A listener that routes everything to the `leader` cluster, whose
/// endpoints come from `eds_file` (kept by `mpsync leader --watch
/// --envoy-eds`), stamping the leader's id and token from the endpoint's
/// metadata, as `envoy/examples/gateway-eds.yaml` does. No filter.
pub fn eds_config(eds_file: &std::path::Path) -> String {
    eds_config_with(eds_file, true)
}

/// `eds_config`, with the leader's id and token stamped or not (what the
/// stamping costs is measured against it).
pub fn eds_config_with(eds_file: &std::path::Path, stamp: bool) -> String {
    let dir = eds_file.parent().unwrap().display().to_string();
    let file = eds_file.display().to_string();
    let routed = without_filter(&config("{}", SocketAddr::from(([127, 0, 0, 1], 9)), None));
    let route = "                route: { cluster: leader, timeout: 30s }\n";
    // What a client sent under these names never reaches the leader.
    let stripped = format!("{route}                request_headers_to_remove: [x-leader-id, x-leader-token]\n");
    let start = routed.find("  - name: leader\n").unwrap();
    let mut eds_cluster = format!(
        r#"  - name: leader
    type: EDS
    connect_timeout: 1s
    eds_cluster_config:
      eds_config:
        resource_api_version: V3
        path_config_source:
          path: {file}
          watched_directory: {{ path: {dir} }}
"#
    );
    if stamp {
        eds_cluster.push_str(
            r#"    # After the endpoint is chosen (an upstream filter), the leader's id and
    # token from its metadata.
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http_protocol_options: {} }
        http_filters:
        - name: envoy.filters.http.header_mutation
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation
            mutations:
              request_mutations:
              - append:
                  header: { key: x-leader-id, value: "%UPSTREAM_METADATA(metaparticle.sync:leader_id)%" }
                  append_action: OVERWRITE_IF_EXISTS_OR_ADD
              - append:
                  header: { key: x-leader-token, value: "%UPSTREAM_METADATA(metaparticle.sync:leader_token)%" }
                  append_action: OVERWRITE_IF_EXISTS_OR_ADD
        - name: envoy.filters.http.upstream_codec
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec
"#,
        );
    }
    let yaml = "node: { id: gateway, cluster: gateway }\n".to_owned() + &routed[..start] + &eds_cluster;
    assert!(yaml.contains(route), "the route line moved");
    if stamp { yaml.replace(route, &stripped) } else { yaml }
}

/// A running Envoy.
pub struct Envoy {
    child: Child,
    pub admin: SocketAddr,
    pub listener: SocketAddr,
    dir: PathBuf,
}

fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir =
        std::env::temp_dir().join(format!("mpsync-envoy-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Envoy {
    /// Envoy with 2 workers, on any CPU.
    pub async fn start(yaml: &str) -> Envoy {
        Envoy::start_on(yaml, 2, None).await
    }

    /// Envoy with `workers` worker threads, pinned to `cpu` when given
    /// (with `taskset`).
    pub async fn start_on(yaml: &str, workers: usize, cpu: Option<usize>) -> Envoy {
        let wrapper = match cpu {
            Some(cpu) => vec!["taskset".to_owned(), "-c".to_owned(), cpu.to_string()],
            None => vec![],
        };
        Envoy::start_under(yaml, workers, &wrapper, PATIENCE).await
    }

    /// Envoy with `workers` worker threads, run by `wrapper` (a command and
    /// its arguments, e.g. `taskset -c 0` or valgrind; none when empty),
    /// ready within `patience`.
    pub async fn start_under(yaml: &str, workers: usize, wrapper: &[String], patience: Duration) -> Envoy {
        let dir = temp_dir();
        let (config, admin_file) = (dir.join("envoy.yaml"), dir.join("admin"));
        std::fs::write(&config, yaml).unwrap();
        let log = std::fs::File::create(dir.join("envoy.log")).unwrap();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(envoy_bin());
                c
            }
            None => Command::new(envoy_bin()),
        };
        let workers = workers.to_string();
        let child = command
            .args([
                "-c",
                &config.display().to_string(),
                "--disable-hot-restart",
                "--concurrency",
                &workers,
                "-l",
                "info",
            ])
            .arg("--admin-address-path")
            .arg(&admin_file)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let http = HttpClient::new();
        // Envoy writes its admin address once it listens; then the listener
        // shows up in /listeners. Both are awaited with a bounded retry.
        let found = tokio::time::timeout(patience, async {
            loop {
                if let Ok(text) = std::fs::read_to_string(&admin_file)
                    && let Ok(admin) = text.trim().parse::<SocketAddr>()
                {
                    let answer = http.get(admin, "/listeners?format=json", &[]).await;
                    let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_default();
                    let port = json["listener_statuses"][0]["local_address"]["socket_address"]["port_value"].as_u64();
                    let ready = http.get(admin, "/ready", &[]).await.status == 200;
                    if let (Some(port), true) = (port, ready) {
                        return (admin, SocketAddr::from(([127, 0, 0, 1], port as u16)));
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let Ok((admin, listener)) = found else {
            panic!("envoy did not start; log:\n{}", std::fs::read_to_string(dir.join("envoy.log")).unwrap_or_default());
        };
        Envoy { child, admin, listener, dir }
    }

    /// A counter of the filter (`routed`, `held`, …).
    pub async fn stat(&self, name: &str) -> u64 {
        self.envoy_stat(&format!("^wasmcustom.leader_filter.{name}$")).await
    }

    /// Envoy's process id (taskset and valgrind exec what they run, so
    /// under them it is still Envoy's).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("envoy is running")
    }

    /// The value of the first of Envoy's own stats whose name matches the
    /// regular expression `pattern` (`^cluster.elector.upstream_rq_active$`: a dot matches itself too);
    /// 0 when none does.
    pub async fn envoy_stat(&self, pattern: &str) -> u64 {
        let text = HttpClient::new().get(self.admin, &format!("/stats?filter={pattern}"), &[]).await.body;
        text.lines().find_map(|l| l.rsplit_once(": ")).map_or(0, |(_, v)| v.trim().parse().unwrap())
    }

    /// Waits (within `PATIENCE`) until the filter's counter `name` is at
    /// least `n` (the `routed` counter is flushed every 100 ms), then
    /// returns its value.
    pub async fn stat_reaching(&self, name: &str, n: u64) -> u64 {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let v = self.stat(name).await;
                if v >= n {
                    return v;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the filter's {name} counter did not reach {n}"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
