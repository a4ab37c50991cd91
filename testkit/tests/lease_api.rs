//! The Lease API emulator answers as the Kubernetes API documents, seen
//! through kube-rs (the client the elector uses) and through raw HTTP.

#![allow(clippy::unwrap_used, missing_docs)]

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use kube::core::ObjectMeta;
use testkit::LeaseApi;

async fn client(api: &LeaseApi) -> kube::Client {
    let dir = testkit::temp_dir("kubeconfig-test").unwrap();
    let path = api.write_kubeconfig(&dir, "team-a").unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await.unwrap();
    assert_eq!(config.default_namespace, "team-a");
    kube::Client::try_from(config).unwrap()
}

fn lease(name: &str, holder: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("app".to_owned(), "test".to_owned())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(10),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }),
    }
}

fn status(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason),
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test]
async fn create_read_replace_delete_with_documented_errors() {
    let server = LeaseApi::start().await.unwrap();
    let leases: Api<Lease> = Api::default_namespaced(client(&server).await);
    let pp = PostParams::default();

    let created = leases.create(&pp, &lease("a", "x")).await.unwrap();
    let rv1 = created.metadata.resource_version.clone().unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("team-a"));
    assert!(created.metadata.uid.is_some());
    assert_eq!(status(leases.create(&pp, &lease("a", "y")).await.unwrap_err()), (409, "AlreadyExists".into()));
    assert_eq!(status(leases.get("missing").await.unwrap_err()), (404, "NotFound".into()));
    assert_eq!(leases.get_opt("missing").await.unwrap(), None);
    assert_eq!(status(leases.create(&pp, &lease("Not_A_Name", "x")).await.unwrap_err()), (422, "Invalid".into()));

    // Replace with the resourceVersion read: accepted, with a larger one.
    let mut update = created.clone();
    update.spec.as_mut().unwrap().holder_identity = Some("y".into());
    let replaced = leases.replace("a", &pp, &update).await.unwrap();
    let rv2 = replaced.metadata.resource_version.clone().unwrap();
    assert!(rv2.parse::<u64>().unwrap() > rv1.parse::<u64>().unwrap());
    // The same (now stale) resourceVersion again: 409 Conflict.
    assert_eq!(status(leases.replace("a", &pp, &update).await.unwrap_err()), (409, "Conflict".into()));
    // No resourceVersion: an unconditional update.
    update.metadata.resource_version = None;
    leases.replace("a", &pp, &update).await.unwrap();
    // Replace of a Lease that does not exist: 404 (no create on update).
    let mut ghost = lease("ghost", "x");
    ghost.metadata.resource_version = Some(rv2.clone());
    assert_eq!(status(leases.replace("ghost", &pp, &ghost).await.unwrap_err()), (404, "NotFound".into()));
    // A body naming another object: 400.
    assert_eq!(status(leases.replace("a", &pp, &lease("b", "x")).await.unwrap_err()), (400, "BadRequest".into()));

    let list = leases.list(&ListParams::default().labels("app=test")).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.resource_version.is_some());
    assert!(leases.list(&ListParams::default().labels("app=other")).await.unwrap().items.is_empty());

    leases.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(status(leases.delete("a", &DeleteParams::default()).await.unwrap_err()), (404, "NotFound".into()));
    // Namespaces are separate.
    let other: Api<Lease> = Api::namespaced(client(&server).await, "team-b");
    other.create(&pp, &lease("a", "x")).await.unwrap();
    assert_eq!(leases.get_opt("a").await.unwrap(), None);
}

#[tokio::test]
async fn watch_from_a_version_sees_every_later_change() {
    let server = LeaseApi::start().await.unwrap();
    let leases: Api<Lease> = Api::default_namespaced(client(&server).await);
    let pp = PostParams::default();
    let start = leases.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let created = leases.create(&pp, &lease("w", "x")).await.unwrap();
    let mut stream = leases.watch(&WatchParams::default().labels("app=test"), &start).await.unwrap().boxed();
    let mut update = created.clone();
    update.spec.as_mut().unwrap().holder_identity = Some("y".into());
    leases.replace("w", &pp, &update).await.unwrap();
    leases.delete("w", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match stream.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(l) => seen.push(("ADDED", l.spec.unwrap().holder_identity.unwrap())),
            WatchEvent::Modified(l) => seen.push(("MODIFIED", l.spec.unwrap().holder_identity.unwrap())),
            WatchEvent::Deleted(l) => seen.push(("DELETED", l.spec.unwrap().holder_identity.unwrap())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, [("ADDED", "x".into()), ("MODIFIED", "y".into()), ("DELETED", "y".into())]);
}

#[tokio::test]
async fn a_watch_from_a_compacted_version_gets_410_gone() {
    let server = LeaseApi::start().await.unwrap();
    let leases: Api<Lease> = Api::default_namespaced(client(&server).await);
    let created = leases.create(&PostParams::default(), &lease("busy", "x")).await.unwrap();
    // More changes than the emulator keeps (1000).
    let mut current = created;
    for i in 0..1001 {
        current.spec.as_mut().unwrap().holder_identity = Some(format!("h{i}"));
        current = leases.replace("busy", &PostParams::default(), &current).await.unwrap();
    }
    let mut stream = leases.watch(&WatchParams::default(), "1").await.unwrap().boxed();
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(status) => assert_eq!((status.code, status.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
}

#[tokio::test]
async fn pause_holds_requests_and_restart_cuts_watches() {
    let mut server = LeaseApi::start().await.unwrap();
    let leases: Api<Lease> = Api::default_namespaced(client(&server).await);
    let start = leases.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let mut stream = leases.watch(&WatchParams::default(), &start).await.unwrap().boxed();
    server.pause();
    let pending = tokio::spawn({
        let leases = leases.clone();
        async move { leases.create(&PostParams::default(), &lease("p", "x")).await }
    });
    tokio::task::yield_now().await;
    assert!(!pending.is_finished());
    server.resume();
    pending.await.unwrap().unwrap();
    assert!(matches!(stream.try_next().await.unwrap(), Some(WatchEvent::Added(_))));
    server.restart().await.unwrap();
    // The watch ends (cut); the objects are still there.
    while let Some(Ok(_)) = stream.next().await {}
    assert!(leases.get_opt("p").await.unwrap().is_some());
}

#[tokio::test]
async fn preferred_holder_and_strategy_are_kept_and_checked_as_documented() {
    let server = LeaseApi::start().await.unwrap();
    let leases: Api<Lease> = Api::default_namespaced(client(&server).await);
    let pp = PostParams::default();
    let coordinated = |name: &str, preferred: Option<&str>, strategy: Option<&str>| {
        let mut l = lease(name, "x");
        let spec = l.spec.as_mut().unwrap();
        spec.preferred_holder = preferred.map(str::to_owned);
        spec.strategy = strategy.map(str::to_owned);
        l
    };
    for strategy in ["OldestEmulationVersion", "sync.metaparticle.io/transfer"] {
        let name = format!("kept-{}", strategy.len());
        let created = leases.create(&pp, &coordinated(&name, Some("y"), Some(strategy))).await.unwrap();
        let spec = created.spec.unwrap();
        assert_eq!((spec.preferred_holder.as_deref(), spec.strategy.as_deref()), (Some("y"), Some(strategy)));
        let read = leases.get(&name).await.unwrap().spec.unwrap();
        assert_eq!(read.preferred_holder.as_deref(), Some("y"), "kept as written");
    }
    // A preferred holder needs a strategy; a strategy is the one defined or
    // a prefixed custom one.
    for (preferred, strategy) in
        [(Some("y"), None), (None, Some("Newest")), (None, Some("example.com/")), (None, Some("/x"))]
    {
        let refused = leases.create(&pp, &coordinated("refused", preferred, strategy)).await.unwrap_err();
        assert_eq!(status(refused), (422, "Invalid".into()), "{preferred:?} {strategy:?}");
    }
    assert!(leases.create(&pp, &coordinated("strategy-only", None, Some("example.com/mine"))).await.is_ok());
}
