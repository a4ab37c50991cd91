//! The emulator's EndpointSlice API answers as the Kubernetes API
//! documents, seen through kube-rs (the client the elector uses).

#![allow(clippy::unwrap_used, missing_docs)]

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use kube::api::{Api, ListParams, PostParams};
use kube::core::ObjectMeta;
use testkit::LeaseApi;

async fn client(api: &LeaseApi) -> kube::Client {
    let dir = testkit::temp_dir("kubeconfig-slices").unwrap();
    let path = api.write_kubeconfig(&dir, "team-a").unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let options = kube::config::KubeConfigOptions::default();
    kube::Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.unwrap()).unwrap()
}

fn slice(name: &str, service: &str, address_type: &str, addresses: &[&str]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("kubernetes.io/service-name".to_owned(), service.to_owned())].into()),
            ..ObjectMeta::default()
        },
        address_type: address_type.into(),
        endpoints: addresses.iter().map(|a| Endpoint { addresses: vec![(*a).into()], ..Endpoint::default() }).collect(),
        ports: Some(vec![EndpointPort { name: Some("http".into()), port: Some(8080), ..EndpointPort::default() }]),
    }
}

fn status(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason),
        other => panic!("not an API error: {other}"),
    }
}

fn rv(slice: &EndpointSlice) -> u64 {
    slice.metadata.resource_version.as_deref().unwrap().parse().unwrap()
}

#[tokio::test]
async fn create_read_replace_list_with_documented_errors() {
    let server = LeaseApi::start().await.unwrap();
    let client = client(&server).await;
    let slices: Api<EndpointSlice> = Api::default_namespaced(client.clone());
    let pp = PostParams::default();

    let created = slices.create(&pp, &slice("web-leader", "web", "IPv4", &["10.0.0.1"])).await.unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("team-a"));
    assert!(created.metadata.uid.is_some());
    let port = &created.ports.as_ref().unwrap()[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"), "defaulted");
    let again = slices.create(&pp, &slice("web-leader", "web", "IPv4", &[])).await.unwrap_err();
    assert_eq!(status(again), (409, "AlreadyExists".into()));
    assert_eq!(status(slices.get("missing").await.unwrap_err()), (404, "NotFound".into()));
    assert_eq!(slices.get_opt("web-leader").await.unwrap(), Some(created.clone()));

    // One resourceVersion counter for Leases and slices.
    let leases: Api<Lease> = Api::default_namespaced(client);
    let lease = Lease { metadata: ObjectMeta { name: Some("l".into()), ..ObjectMeta::default() }, spec: None };
    let lease_rv: u64 = leases.create(&pp, &lease).await.unwrap().metadata.resource_version.unwrap().parse().unwrap();
    assert!(lease_rv > rv(&created));

    // Replace at the resourceVersion read: accepted, at a larger one.
    let mut next = created.clone();
    next.endpoints.clear();
    let replaced = slices.replace("web-leader", &pp, &next).await.unwrap();
    assert!(rv(&replaced) > lease_rv);
    assert!(replaced.endpoints.is_empty());
    // At a stale one: 409 Conflict, nothing stored.
    let stale = slices.replace("web-leader", &pp, &created).await.unwrap_err();
    assert_eq!(status(stale), (409, "Conflict".into()));
    assert_eq!(slices.get("web-leader").await.unwrap(), replaced);
    // Without one: unconditional.
    let mut blind = created.clone();
    blind.metadata.resource_version = None;
    assert!(rv(&slices.replace("web-leader", &pp, &blind).await.unwrap()) > rv(&replaced));
    let missing = slices.replace("gone", &pp, &slice("gone", "web", "IPv4", &[])).await.unwrap_err();
    assert_eq!(status(missing), (404, "NotFound".into()));
    // addressType is immutable.
    let mut v6 = slices.get("web-leader").await.unwrap();
    (v6.address_type, v6.endpoints) = ("IPv6".into(), Vec::new());
    assert_eq!(status(slices.replace("web-leader", &pp, &v6).await.unwrap_err()), (422, "Invalid".into()));

    slices.create(&pp, &slice("db-leader", "db", "IPv6", &["fd00::1"])).await.unwrap();
    let listed = slices.list(&ListParams::default().labels("kubernetes.io/service-name=db")).await.unwrap();
    let names: Vec<_> = listed.items.iter().map(|s| s.metadata.name.clone().unwrap()).collect();
    assert_eq!(names, ["db-leader"]);
    assert_eq!(slices.list(&ListParams::default()).await.unwrap().items.len(), 2);

    // Every write is kept, in order; and none counts as a Lease request.
    assert_eq!(server.endpoint_slice_writes().len(), 4);
    assert_eq!(server.lease_requests(), 1);
    assert_eq!(server.endpoint_slice("team-a", "db-leader").unwrap()["addressType"], "IPv6");
}

#[tokio::test]
async fn invalid_slices_get_422() {
    let server = LeaseApi::start().await.unwrap();
    let slices: Api<EndpointSlice> = Api::default_namespaced(client(&server).await);
    let pp = PostParams::default();
    let refused = async |s: EndpointSlice| status(slices.create(&pp, &s).await.unwrap_err());
    let invalid = (422, "Invalid".to_owned());

    assert_eq!(refused(slice("Web", "web", "IPv4", &[])).await, invalid, "name");
    assert_eq!(refused(slice("a", "web", "IPv5", &[])).await, invalid, "addressType");
    assert_eq!(refused(slice("a", "web", "IPv4", &["fd00::1"])).await, invalid, "an IPv6 address in IPv4");
    assert_eq!(refused(slice("a", "web", "IPv6", &["10.0.0.1"])).await, invalid, "an IPv4 address in IPv6");
    for special in ["127.0.0.1", "0.0.0.0", "169.254.0.9", "224.0.0.1"] {
        assert_eq!(refused(slice("a", "web", "IPv4", &[special])).await, invalid, "{special}");
    }
    for special in ["::1", "fe80::1", "ff02::1"] {
        assert_eq!(refused(slice("a", "web", "IPv6", &[special])).await, invalid, "{special}");
    }
    let many: Vec<String> = (0..1001).map(|i| format!("10.0.{}.{}", i / 250, i % 250 + 1)).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(refused(slice("a", "web", "IPv4", &many)).await, invalid, "1001 endpoints");
    slices.create(&pp, &slice("a", "web", "IPv4", &many[..1000])).await.unwrap();

    let mut no_address = slice("b", "web", "IPv4", &[]);
    no_address.endpoints.push(Endpoint::default());
    assert_eq!(refused(no_address).await, invalid, "an endpoint with no address");
    let port = |name: &str, number: i32, protocol: &str| EndpointPort {
        name: Some(name.into()),
        port: Some(number),
        protocol: Some(protocol.into()),
        app_protocol: None,
    };
    for (ports, what) in [
        (vec![port("http", 80, "TCP"), port("http", 81, "TCP")], "duplicate port names"),
        (vec![port("Http", 80, "TCP")], "a port name that is not a DNS label"),
        (vec![port("http", 0, "TCP")], "port 0"),
        (vec![port("http", 65536, "TCP")], "port 65536"),
        (vec![port("http", 80, "HTTP")], "protocol"),
    ] {
        let mut s = slice("b", "web", "IPv4", &["10.0.0.1"]);
        s.ports = Some(ports);
        assert_eq!(refused(s).await, invalid, "{what}");
    }
    let mut unnamed = slice("b", "web", "IPv4", &["10.0.0.1"]);
    unnamed.ports = Some(vec![port("", 80, "UDP")]);
    slices.create(&pp, &unnamed).await.unwrap();
}
