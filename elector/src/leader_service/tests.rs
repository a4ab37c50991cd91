use std::collections::BTreeMap;

use mpsync_core::wire::LeaseView;

use super::*;

fn spec() -> LeaderService {
    "web=web:http".parse().unwrap()
}

fn held(holder: &str, token: u64, address: Option<&str>, version: u64) -> View {
    View::Held(LeaseView {
        name: "web".into(),
        holder: holder.into(),
        token,
        ttl_ms: 5000,
        version,
        expires_in_ms: 5000,
        address: address.map(str::to_owned),
        waiting: 0,
        shared: false,
        permit: None,
        transfer: None,
    })
}

/// The slice `view` creates, as the API server would give it back: with
/// a resourceVersion, a uid and what else it adds.
fn stored(view: &View) -> EndpointSlice {
    let Write::Create(mut slice) = decide(&spec(), "ns", view, None).write else { panic!("no create for {view:?}") };
    slice.metadata.resource_version = Some("41".into());
    slice.metadata.uid = Some("u-1".into());
    slice.metadata.generation = Some(1);
    slice
}

fn annotations(slice: &EndpointSlice) -> &BTreeMap<String, String> {
    slice.metadata.annotations.as_ref().unwrap()
}

#[test]
fn parses_election_service_and_port_name() {
    let parsed: LeaderService = "db.primary=db-leader".parse().unwrap();
    assert_eq!(parsed, LeaderService { election: "db.primary".into(), service: "db-leader".into(), port_name: None });
    assert_eq!(spec().port_name.as_deref(), Some("http"));
    assert_eq!(spec().slice_name(), "web-leader");
    assert_eq!("web=web-leader".parse::<LeaderService>().unwrap().slice_name(), "web-leader-leader");
    for bad in
        ["web", "=svc", "Web=svc", "web=", "web=Svc", "web=1svc", "web=svc-", "web=svc:", "web=svc:Http", "web=a.b"]
    {
        assert!(bad.parse::<LeaderService>().is_err(), "{bad}");
    }
    assert!(format!("web={}", "s".repeat(64)).parse::<LeaderService>().is_err());
}

#[test]
fn nobody_leads_and_no_slice_writes_nothing() {
    let plan = decide(&spec(), "ns", &View::Free { version: 8 }, None);
    assert_eq!(plan, Plan { write: Write::Nothing(Unchanged::NothingToList), warning: None });
    let plan = decide(&spec(), "ns", &View::Absent { version: 0 }, None);
    assert_eq!(plan.write, Write::Nothing(Unchanged::NothingToList));
}

#[test]
fn a_leader_creates_the_slice_listing_it_alone() {
    let plan = decide(&spec(), "ns", &held("pod-a", 3, Some("10.0.0.7:8080"), 12), None);
    assert_eq!(plan.warning, None);
    let Write::Create(slice) = plan.write else { panic!("{:?}", plan.write) };
    assert_eq!(slice.metadata.name.as_deref(), Some("web-leader"));
    assert_eq!(slice.metadata.namespace.as_deref(), Some("ns"));
    assert_eq!(slice.metadata.resource_version, None);
    let labels = slice.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[SERVICE_NAME_LABEL], "web");
    assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
    let a = annotations(&slice);
    assert_eq!((a[LEADER_ANNOTATION].as_str(), a[TOKEN_ANNOTATION].as_str()), ("pod-a", "3"));
    assert_eq!((a[VERSION_ANNOTATION].as_str(), a[ELECTION_ANNOTATION].as_str()), ("12", "web"));
    assert_eq!(slice.address_type, "IPv4");
    assert_eq!(slice.endpoints.len(), 1);
    assert_eq!(slice.endpoints[0].addresses, ["10.0.0.7"]);
    let ports = slice.ports.unwrap();
    assert_eq!((ports[0].name.as_deref(), ports[0].port), (Some("http"), Some(8080)));

    let Write::Create(v6) = decide(&spec(), "ns", &held("pod-a", 3, Some("[fd00::7]:8080"), 12), None).write else {
        panic!()
    };
    assert_eq!((v6.address_type.as_str(), v6.endpoints[0].addresses[0].as_str()), ("IPv6", "fd00::7"));

    // A Service whose one port has no name: the slice's port has none.
    let unnamed: LeaderService = "web=web".parse().unwrap();
    let Write::Create(slice) = decide(&unnamed, "ns", &held("a", 1, Some("10.0.0.7:80"), 2), None).write else {
        panic!()
    };
    assert_eq!(slice.ports.unwrap()[0].name.as_deref(), Some(""));
}

#[test]
fn a_renewal_writes_nothing() {
    let slice = stored(&held("pod-a", 3, Some("10.0.0.7:8080"), 12));
    // The same leader, token and address at later views (renewals).
    for version in [12, 14, 15, 40] {
        let plan = decide(&spec(), "ns", &held("pod-a", 3, Some("10.0.0.7:8080"), version), Some(&slice));
        assert_eq!(plan.write, Write::Nothing(Unchanged::AlreadyRight), "{version}");
    }
}

#[test]
fn a_slice_written_from_a_newer_view_is_never_replaced() {
    // Emptied from view 14 (the leader resigned); an elector still at view
    // 12, where pod-a led, must not put it back.
    let free =
        decide(&spec(), "ns", &View::Free { version: 14 }, Some(&stored(&held("pod-a", 3, Some("10.0.0.7:8080"), 12))));
    let Write::Update(mut emptied) = free.write else { panic!("{:?}", free.write) };
    emptied.metadata.resource_version = Some("50".into());
    let stale = decide(&spec(), "ns", &held("pod-a", 3, Some("10.0.0.7:8080"), 12), Some(&emptied));
    assert_eq!(stale.write, Write::Nothing(Unchanged::WrittenFromNewer { version: 14 }));
    // Nor may an older expiry view (odd) empty a slice naming a newer leader.
    let newer = stored(&held("pod-b", 4, Some("10.0.0.8:8080"), 20));
    let old = decide(&spec(), "ns", &View::Free { version: 13 }, Some(&newer));
    assert_eq!(old.write, Write::Nothing(Unchanged::WrittenFromNewer { version: 20 }));
}

#[test]
fn nobody_leading_empties_the_slice_over_the_version_read() {
    let slice = stored(&held("pod-a", 3, Some("10.0.0.7:8080"), 12));
    for view in [View::Free { version: 13 }, View::Free { version: 16 }, View::Absent { version: 17 }] {
        let Write::Update(empty) = decide(&spec(), "ns", &view, Some(&slice)).write else { panic!("{view:?}") };
        assert!(empty.endpoints.is_empty(), "{view:?}");
        assert_eq!(empty.ports, None);
        assert_eq!(empty.metadata.resource_version.as_deref(), Some("41"), "written over the version read");
        let a = annotations(&empty);
        assert!(!a.contains_key(LEADER_ANNOTATION) && !a.contains_key(TOKEN_ANNOTATION), "{a:?}");
        assert_eq!(a[VERSION_ANNOTATION], view.version().to_string());
        assert_eq!(empty.address_type, "IPv4", "addressType never changes");
    }
}

#[test]
fn a_new_leader_replaces_the_old_one() {
    let slice = stored(&held("pod-a", 3, Some("10.0.0.7:8080"), 12));
    let Write::Update(next) = decide(&spec(), "ns", &held("pod-b", 4, Some("10.0.0.8:9090"), 16), Some(&slice)).write
    else {
        panic!()
    };
    assert_eq!(next.endpoints[0].addresses, ["10.0.0.8"]);
    assert_eq!(next.ports.as_ref().unwrap()[0].port, Some(9090));
    assert_eq!(
        (annotations(&next)[LEADER_ANNOTATION].as_str(), annotations(&next)[TOKEN_ANNOTATION].as_str()),
        ("pod-b", "4")
    );
    // The same leader again after a resignation: a new token, so a write.
    let again = decide(&spec(), "ns", &held("pod-a", 5, Some("10.0.0.7:8080"), 20), Some(&slice));
    assert!(matches!(again.write, Write::Update(_)), "{again:?}");
}

#[test]
fn what_others_put_on_the_slice_is_kept() {
    let mut slice = stored(&held("pod-a", 3, Some("10.0.0.7:8080"), 12));
    slice.metadata.labels.as_mut().unwrap().insert("team".into(), "web".into());
    slice.metadata.annotations.as_mut().unwrap().insert("note".into(), "hi".into());
    let Write::Update(next) = decide(&spec(), "ns", &View::Free { version: 13 }, Some(&slice)).write else { panic!() };
    assert_eq!(next.metadata.labels.as_ref().unwrap()["team"], "web");
    assert_eq!(annotations(&next)["note"], "hi");
}

#[test]
fn a_leader_without_an_ip_gets_no_endpoint_and_a_warning() {
    let slice = stored(&held("pod-a", 3, Some("10.0.0.7:8080"), 12));
    let plan = decide(&spec(), "ns", &held("pod-b", 4, None, 16), Some(&slice));
    assert_eq!(plan.warning, Some(Warning::NoAddress { leader: "pod-b".into() }));
    let Write::Update(next) = plan.write else { panic!() };
    assert!(next.endpoints.is_empty());
    assert_eq!(annotations(&next)[LEADER_ANNOTATION], "pod-b", "the annotations still say who leads");
    let plan = decide(&spec(), "ns", &held("pod-b", 4, Some("web-0.example:80"), 16), None);
    assert_eq!(plan.write, Write::Nothing(Unchanged::NothingToList));
    assert!(matches!(plan.warning, Some(Warning::NotIp { .. })), "{plan:?}");
    // Addresses the API server refuses in an endpoint.
    for address in ["127.0.0.1:80", "0.0.0.0:80", "169.254.1.1:80", "224.0.0.5:80", "[::1]:80", "[fe80::1]:80"] {
        let plan = decide(&spec(), "ns", &held("pod-b", 4, Some(address), 16), None);
        assert_eq!(plan.write, Write::Nothing(Unchanged::NothingToList), "{address}");
        assert!(matches!(plan.warning, Some(Warning::Unroutable { .. })), "{address}: {plan:?}");
    }
}

#[test]
fn a_leader_of_the_other_family_empties_the_slice() {
    let slice = stored(&held("pod-a", 3, Some("10.0.0.7:8080"), 12));
    let plan = decide(&spec(), "ns", &held("pod-b", 4, Some("[fd00::8]:8080"), 16), Some(&slice));
    assert!(matches!(&plan.warning, Some(Warning::Family { address_type, .. }) if address_type == "IPv4"), "{plan:?}");
    let Write::Update(next) = plan.write else { panic!() };
    assert_eq!(next.address_type, "IPv4");
    assert!(next.endpoints.is_empty());
}

#[test]
fn a_slice_managed_by_someone_else_is_left_alone() {
    let mut slice = stored(&held("pod-a", 3, Some("10.0.0.7:8080"), 12));
    slice.metadata.labels.as_mut().unwrap().insert(MANAGED_BY_LABEL.into(), "endpointslice-controller.k8s.io".into());
    let plan = decide(&spec(), "ns", &View::Free { version: 20 }, Some(&slice));
    assert_eq!(plan.write, Write::Nothing(Unchanged::Foreign));
    assert_eq!(plan.warning, Some(Warning::Foreign { managed_by: Some("endpointslice-controller.k8s.io".into()) }));
}

#[test]
fn defaults_the_api_server_fills_in_compare_equal() {
    let mut slice = stored(&held("pod-a", 3, Some("10.0.0.7:8080"), 12));
    // A server that left out what it would default, or added a hint.
    slice.ports.as_mut().unwrap()[0].protocol = None;
    slice.endpoints[0].conditions = None;
    slice.endpoints[0].node_name = Some("node-1".into());
    let plan = decide(&spec(), "ns", &held("pod-a", 3, Some("10.0.0.7:8080"), 14), Some(&slice));
    assert_eq!(plan.write, Write::Nothing(Unchanged::AlreadyRight));
}
