//! The emulator's Event API (`events.k8s.io/v1`) answers as the Kubernetes
//! API documents, seen through kube-rs (the client the elector uses).

#![allow(clippy::unwrap_used, missing_docs)]

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ListParams, PostParams};
use kube::core::ObjectMeta;
use testkit::LeaseApi;
use testkit::event_api::EventsMode;

async fn client(api: &LeaseApi) -> kube::Client {
    let dir = testkit::temp_dir("kubeconfig-events").unwrap();
    let path = api.write_kubeconfig(&dir, "team-a").unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let options = kube::config::KubeConfigOptions::default();
    kube::Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.unwrap()).unwrap()
}

/// A valid Event about the Lease `lease` in `ns`.
fn event(name: &str, ns: &str, lease: &str) -> Event {
    Event {
        metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
        event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
        reporting_controller: Some("metaparticle.io/elector".into()),
        reporting_instance: Some("pod-a".into()),
        action: Some("Acquire".into()),
        reason: Some("LeaderElection".into()),
        note: Some("pod-a became leader".into()),
        type_: Some("Normal".into()),
        regarding: Some(ObjectReference {
            api_version: Some("coordination.k8s.io/v1".into()),
            kind: Some("Lease".into()),
            name: Some(lease.into()),
            namespace: Some(ns.into()),
            ..ObjectReference::default()
        }),
        ..Event::default()
    }
}

fn status(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("not an API error: {other}"),
    }
}

fn names(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.metadata.name.as_deref().unwrap()).collect()
}

#[tokio::test]
async fn create_get_list_with_documented_errors() {
    let server = LeaseApi::start().await.unwrap();
    let client = client(&server).await;
    let events: Api<Event> = Api::default_namespaced(client.clone());
    let elsewhere: Api<Event> = Api::namespaced(client.clone(), "team-b");
    let pp = PostParams::default();

    let created = events.create(&pp, &event("election.web.1", "team-a", "election.web")).await.unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("team-a"));
    assert!(created.metadata.uid.is_some() && created.metadata.resource_version.is_some());
    assert_eq!(created.note.as_deref(), Some("pod-a became leader"));
    assert_eq!(events.get("election.web.1").await.unwrap(), created);
    let again = status(events.create(&pp, &event("election.web.1", "team-a", "election.web")).await.unwrap_err());
    assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(status(events.get("missing").await.unwrap_err()).code, 404);

    // generateName: the prefix and five characters.
    let mut generated = event("", "team-a", "lock.jobs");
    generated.metadata = ObjectMeta { generate_name: Some("lock.jobs.".into()), ..ObjectMeta::default() };
    let generated = events.create(&pp, &generated).await.unwrap();
    let name = generated.metadata.name.clone().unwrap();
    assert!(name.starts_with("lock.jobs.") && name.len() == "lock.jobs.".len() + 5, "{name}");
    elsewhere.create(&pp, &event("election.web.2", "team-b", "election.web")).await.unwrap();

    // Lists: one namespace, every namespace, by the Lease regarded.
    assert_eq!(names(&events.list(&ListParams::default()).await.unwrap().items), ["election.web.1", name.as_str()]);
    let all: Api<Event> = Api::all(client);
    assert_eq!(all.list(&ListParams::default()).await.unwrap().items.len(), 3);
    let web = ListParams::default().fields("regarding.name=election.web");
    assert_eq!(names(&all.list(&web).await.unwrap().items), ["election.web.1", "election.web.2"]);
    let not_web = ListParams::default().fields("regarding.name!=election.web,reason=LeaderElection");
    assert_eq!(names(&events.list(&not_web).await.unwrap().items), [name.as_str()]);
    let unknown = status(events.list(&ListParams::default().fields("note=x")).await.unwrap_err());
    assert_eq!((unknown.code, unknown.message.as_str()), (400, "field label not supported: note"));
    assert_eq!(server.events(None).len(), 3);
    assert_eq!(server.events(Some("team-b")).len(), 1);
}

#[tokio::test]
async fn an_invalid_event_is_422_with_a_cause_per_field() {
    let server = LeaseApi::start().await.unwrap();
    let events: Api<Event> = Api::default_namespaced(client(&server).await);
    let pp = PostParams::default();
    let bare =
        Event { metadata: ObjectMeta { name: Some("bare".into()), ..ObjectMeta::default() }, ..Event::default() };
    let refused = status(events.create(&pp, &bare).await.unwrap_err());
    assert_eq!((refused.code, refused.reason.as_str()), (422, "Invalid"));
    let causes = refused.details.unwrap().causes;
    let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, ["eventTime", "type", "reportingController", "reportingInstance", "action", "reason"]);
    assert_eq!(causes[0].reason, "FieldValueRequired");
    assert!(refused.message.starts_with("Event.events.k8s.io \"bare\" is invalid: [eventTime: Required value, "));

    let mut warning = event("w", "team-a", "lock.jobs");
    warning.type_ = Some("Warning".into());
    events.create(&pp, &warning).await.unwrap();
    for (what, broken) in [
        ("type", Event { type_: Some("Critical".into()), ..event("a", "team-a", "l") }),
        (
            "reportingController",
            Event { reporting_controller: Some("not a name!".into()), ..event("b", "team-a", "l") },
        ),
        ("action", Event { action: Some("x".repeat(129)), ..event("c", "team-a", "l") }),
        ("note", Event { note: Some("x".repeat(1025)), ..event("d", "team-a", "l") }),
        ("regarding.namespace", event("e", "team-a", "l").tap_regarding_namespace("team-b")),
        ("metadata.name", event("Upper", "team-a", "l")),
    ] {
        let refused = status(events.create(&pp, &broken).await.unwrap_err());
        let fields: Vec<String> = refused.details.unwrap().causes.into_iter().map(|c| c.field).collect();
        assert_eq!((refused.code, fields), (422, vec![what.to_owned()]), "{what}");
    }
    let mut nameless = event("", "team-a", "l");
    nameless.metadata.name = None;
    assert_eq!(status(events.create(&pp, &nameless).await.unwrap_err()).code, 422);
    assert_eq!(server.events(None).len(), 1, "only the valid one is kept");
}

trait TapRegarding {
    fn tap_regarding_namespace(self, ns: &str) -> Self;
}

impl TapRegarding for Event {
    fn tap_regarding_namespace(mut self, ns: &str) -> Self {
        self.regarding.as_mut().unwrap().namespace = Some(ns.into());
        self
    }
}

#[tokio::test]
async fn creates_can_be_refused_or_held_for_failure_tests() {
    let server = LeaseApi::start().await.unwrap();
    let events: Api<Event> = Api::default_namespaced(client(&server).await);
    let pp = PostParams::default();
    server.set_events_mode(EventsMode::Refuse(hyper::StatusCode::FORBIDDEN));
    let refused = status(events.create(&pp, &event("a", "team-a", "l")).await.unwrap_err());
    assert_eq!((refused.code, refused.reason.as_str()), (403, "Forbidden"));
    assert!(refused.message.contains("cannot create resource \"events\" in API group \"events.k8s.io\""));

    server.set_events_mode(EventsMode::Hold);
    let mut held = server.events_held();
    let pending = tokio::spawn({
        let events = events.clone();
        async move { events.create(&PostParams::default(), &event("b", "team-a", "l")).await }
    });
    let bound = std::time::Duration::from_secs(20);
    tokio::time::timeout(bound, held.wait_for(|n| *n == 1)).await.expect("the create was not held").unwrap();
    // Reads are answered while creates are held.
    assert!(events.list(&ListParams::default()).await.unwrap().items.is_empty());
    server.set_events_mode(EventsMode::Answer);
    assert_eq!(pending.await.unwrap().unwrap().metadata.name.as_deref(), Some("b"));
    assert_eq!(*held.borrow(), 0);
    assert_eq!(*server.event_requests().borrow(), 2);
}
