use super::*;

fn held(holder: &str, token: u64, why: Option<Why>) -> Record {
    Record { holder: Some(holder.to_owned()), token, why, ..Record::free(10_000) }
}

fn free(token: u64, why: Option<Why>) -> Record {
    Record { token, why, ..Record::free(10_000) }
}

fn note(kind: Kind, before: Option<&Record>, after: &Record) -> Option<(&'static str, &'static str, String)> {
    change(kind, before, after).map(|c| (c.action, c.reason, c.note))
}

#[test]
fn a_first_leader_becomes_leader_as_client_go_says_it() {
    let after = held("pod-a", 1, Some(Why::Acquired));
    assert_eq!(
        note(Kind::Election, None, &after),
        Some(("Acquire", "LeaderElection", "pod-a became leader (token 1; acquired)".to_owned()))
    );
    assert_eq!(
        note(Kind::Lock, Some(&free(4, Some(Why::Released))), &held("w", 5, Some(Why::Acquired))),
        Some(("Acquire", "LockHolder", "w acquired the lock (token 5; acquired)".to_owned()))
    );
}

#[test]
fn a_take_over_names_the_previous_holder_and_why() {
    let before = held("pod-a", 3, Some(Why::Acquired));
    for (why, text) in [
        (Why::Expired, "pod-b became leader (token 4; pod-a's lease expired)"),
        (Why::Released, "pod-b became leader (token 4; pod-a released it)"),
        (Why::SessionEnded, "pod-b became leader (token 4; pod-a's session ended)"),
        (Why::Transferred, "pod-b became leader (token 4; transferred from pod-a)"),
    ] {
        let (_, _, note) = note(Kind::Election, Some(&before), &held("pod-b", 4, Some(why))).unwrap();
        assert_eq!(note, text);
    }
    // The same holder on a new lease is a change of holder too.
    let again = note(Kind::Lock, Some(&before), &held("pod-a", 4, Some(Why::Expired))).unwrap();
    assert_eq!(again.2, "pod-a acquired the lock (token 4; pod-a's lease expired)");
}

#[test]
fn a_lease_let_go_with_nobody_taking_it_stops_leading() {
    let before = held("pod-a", 3, Some(Why::Acquired));
    assert_eq!(
        note(Kind::Election, Some(&before), &free(3, Some(Why::Released))),
        Some(("Release", "LeaderElection", "pod-a stopped leading (token 3; released)".to_owned()))
    );
    assert_eq!(
        note(Kind::Lock, Some(&before), &free(3, Some(Why::Released))).unwrap().2,
        "pod-a released the lock (token 3; released)"
    );
    assert_eq!(
        note(Kind::Lock, Some(&before), &free(3, Some(Why::Expired))).unwrap().2,
        "pod-a lost the lock (token 3; lease expired)"
    );
    assert_eq!(note(Kind::Lock, Some(&before), &free(3, None)).unwrap().2, "pod-a no longer holds the lock (token 3)");
}

#[test]
fn renewals_and_writes_to_a_free_record_call_for_none() {
    let before = held("pod-a", 3, Some(Why::Acquired));
    assert_eq!(change(Kind::Election, Some(&before), &before.clone()), None);
    assert_eq!(change(Kind::Lock, Some(&free(3, None)), &free(3, None)), None);
    assert_eq!(change(Kind::Lock, None, &free(0, None)), None);
}

#[test]
fn names_are_unique_per_nanosecond_and_fit_an_object_name() {
    assert_eq!(event_name("election.web", 0x1800_0000_0000_0001), "election.web.1800000000000001");
    let long = format!("lock.{}", "a-".repeat(124));
    let name = event_name(&long, 7);
    assert!(name.len() <= 253, "{}", name.len());
    assert!(name.ends_with(".0000000000000007") && !name.contains("-."), "{name}");
}

/// The queue holds [`QUEUE`] Events behind the one being created: one
/// more is dropped and counted, never waited for; the rest are created, in
/// order, once the API server answers.
#[tokio::test]
async fn a_full_queue_drops_and_counts_without_waiting() {
    use testkit::event_api::EventsMode;
    let api = testkit::LeaseApi::start().await.unwrap();
    let dir = testkit::temp_dir("events-queue").unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(api.write_kubeconfig(&dir, "team-a").unwrap()).unwrap();
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.unwrap();
    let recorder = Recorder::spawn(kube::Client::try_from(config).unwrap(), "team-a", "me", Duration::from_secs(60));
    let lease = || Written { name: "lock.jobs", uid: None, resource_version: None };
    let acquired = |n: u64| held(&format!("w{n}"), n, Some(Why::Acquired));

    api.set_events_mode(EventsMode::Hold);
    let mut waiting = api.events_held();
    recorder.record(Kind::Lock, None, &acquired(1), lease());
    waiting.wait_for(|n| *n == 1).await.unwrap();
    for n in 2..=u64::try_from(QUEUE).unwrap() + 2 {
        recorder.record(Kind::Lock, Some(&acquired(n - 1)), &acquired(n), lease());
    }
    assert_eq!(recorder.counts(), (0, 1), "one past the queue dropped");

    api.set_events_mode(EventsMode::Answer);
    let all = u64::try_from(QUEUE).unwrap() + 1;
    api.events_created().wait_for(|n| *n == all).await.unwrap();
    let created = api.events(None);
    let notes: Vec<&str> = created.iter().map(|e| e["note"].as_str().unwrap()).collect();
    assert_eq!(notes.len(), QUEUE + 1);
    assert!(notes[0].starts_with("w1 acquired") && notes[QUEUE].starts_with(&format!("w{} acquired", QUEUE + 1)));
    assert!(notes.iter().all(|n| !n.starts_with(&format!("w{} ", QUEUE + 2))), "the last one was dropped");
    let names: Vec<&str> = created.iter().map(|e| e["metadata"]["name"].as_str().unwrap()).collect();
    assert!(names.is_sorted(), "names grow with each Event, in the order created");
}
