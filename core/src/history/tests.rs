use super::*;

const S: Duration = Duration::from_secs(1);

fn held(holder: &str, token: u64) -> Record {
    Record { holder: Some(holder.into()), token, why: Some(Why::Acquired), ..Record::free(1000) }
}

fn free(token: u64, why: Why) -> Record {
    Record { token, why: Some(why), ..Record::free(1000) }
}

fn small() -> History {
    History::new(Limits { per_name: 2, names: 2, ring: 3, leaderless: 1 })
}

fn who(entries: &[Entry]) -> Vec<(Option<&str>, Option<&str>, u64)> {
    entries.iter().map(|e| (e.from.as_deref(), e.to.as_deref(), e.token)).collect()
}

#[test]
fn only_a_change_of_holder_or_token_is_an_entry_and_older_reports_change_nothing() {
    let mut h = History::new(Limits::default());
    let lock = |h: &mut History, r: Option<&Record>, v| h.observe(Kind::Lock, "db", r, v, S, 1_000).map(|e| e.seq);
    assert_eq!(lock(&mut h, Some(&held("a", 5)), 5), Some(1));
    assert_eq!(lock(&mut h, Some(&held("a", 5)), 6), None, "a renewal");
    let waiting = Record { line: Default::default(), ..held("a", 5) };
    assert_eq!(lock(&mut h, Some(&waiting), 7), None, "a version-only change");
    assert_eq!(lock(&mut h, Some(&free(5, Why::Released)), 6), None, "older than what was seen");
    assert_eq!(lock(&mut h, Some(&free(5, Why::Released)), 8), Some(2));
    assert_eq!(lock(&mut h, Some(&held("a", 9)), 9), Some(3), "the same holder again, with a new token");
    let page = h.of(Kind::Lock, "db");
    assert_eq!(who(&page.changes), [(None, Some("a"), 5), (Some("a"), None, 5), (None, Some("a"), 9)]);
    assert_eq!(page.changes[1].why, Some(Why::Released));
    assert_eq!(page.changes[0].at, "1970-01-01T00:00:01.000Z");
    // A record that vanishes: its holder left, nobody says why.
    assert_eq!(lock(&mut h, None, 0), Some(4));
    let gone = &h.of(Kind::Lock, "db").changes[3];
    assert_eq!((gone.from.as_deref(), gone.to.as_deref(), gone.token, gone.why), (Some("a"), None, 9, None));
    assert!(h.of(Kind::Election, "db").changes.is_empty(), "kinds are apart");
}

#[test]
fn entries_names_and_the_ring_are_bounded_and_a_held_name_forgotten_stays_quiet() {
    let mut h = small();
    for (v, name) in [(1, "x"), (2, "y"), (3, "z")] {
        h.observe(Kind::Lock, name, Some(&held("a", v)), v, S, 0);
    }
    assert_eq!(h.names(), 2, "the least recently changed name lost its entries");
    assert!(h.of(Kind::Lock, "x").changes.is_empty());
    // x is still known as held by a: its renewal is no change.
    assert!(h.observe(Kind::Lock, "x", Some(&held("a", 1)), 9, S, 0).is_none());
    for v in [10, 12, 14] {
        h.observe(Kind::Lock, "z", Some(&free(v, Why::Released)), v, S, 0);
        h.observe(Kind::Lock, "z", Some(&held("b", v + 1)), v + 1, S, 0);
    }
    assert_eq!(h.of(Kind::Lock, "z").changes.len(), 2, "per name");
    let page = h.after(0, 100);
    assert_eq!((page.changes.len(), page.gap), (3, true), "the ring keeps 3; the first ones left it");
    assert_eq!(page.next, h.last_seq());
}

#[test]
fn after_pages_through_the_ring_and_says_when_there_is_a_gap() {
    let mut h = History::new(Limits { ring: 4, ..Limits::default() });
    assert_eq!(h.after(0, 10), Page { changes: vec![], next: 0, gap: false });
    for v in 1..=3 {
        h.observe(Kind::Election, "e", Some(&held(&format!("p{v}"), v)), v, S, 0);
    }
    let page = h.after(0, 2);
    assert_eq!((page.changes.iter().map(|e| e.seq).collect::<Vec<_>>(), page.next, page.gap), (vec![1, 2], 2, false));
    let page = h.after(2, 10);
    assert_eq!((page.changes.len(), page.next, page.gap), (1, 3, false));
    assert_eq!(h.after(3, 10), Page { changes: vec![], next: 3, gap: false }, "nothing new");
    // A reader from before a restart: beyond the newest.
    let page = h.after(50, 10);
    assert_eq!((page.changes.len(), page.next, page.gap), (3, 3, true));
    for v in 4..=6 {
        h.observe(Kind::Election, "e", Some(&held(&format!("p{v}"), v)), v, S, 0);
    }
    let page = h.after(1, 10);
    assert_eq!((page.changes[0].seq, page.next, page.gap), (3, 6, true), "seq 2 left the ring");
    assert!(!h.after(2, 10).gap, "seq 3 on are all there");
}

#[test]
fn a_reader_from_before_a_restart_sees_a_gap_however_many_changes_came_since() {
    // The old process counted to 5; the new one starts its count above.
    let mut h = History::starting_after(Limits::default(), 1000);
    for v in 1..=10 {
        h.observe(Kind::Election, "e", Some(&held(&format!("p{v}"), v)), v, S, 0);
    }
    let page = h.after(5, 100);
    assert_eq!((page.changes.first().map(|e| e.seq), page.next, page.gap), (Some(1001), 1010, true));
    assert!(!h.after(1003, 100).gap);
    let first = h.after(0, 100);
    assert_eq!((first.changes.len(), first.gap), (10, false), "a new reader (0) missed nothing kept");
}

#[test]
fn a_first_listing_learns_and_a_later_one_records_what_changed_meanwhile() {
    let mut h = History::new(Limits::default());
    let listing = vec![(Kind::Lock, "a".into(), held("x", 1), 1), (Kind::Lock, "b".into(), held("y", 2), 2)];
    assert!(h.relist(listing, true, S, 0).is_empty());
    assert!(h.observe(Kind::Lock, "a", Some(&held("x", 1)), 1, S, 0).is_none(), "queued before the listing");
    // Missed: a was handed to z, b released and forgotten by the store.
    let listing = vec![(Kind::Lock, "a".into(), Record { why: Some(Why::Expired), ..held("z", 3) }, 3)];
    let entries = h.relist(listing, false, S, 0);
    let got: Vec<_> = entries.iter().map(|e| (e.name.as_str(), e.to.as_deref(), e.why)).collect();
    assert_eq!(got, [("a", Some("z"), Some(Why::Expired)), ("b", None, None)]);
}

#[test]
fn an_election_is_leaderless_from_its_leader_leaving_until_the_next_one() {
    let mut h = small();
    h.observe(Kind::Election, "e", Some(&held("a", 1)), 1, S, 0);
    assert_eq!(h.leaderless(S).count(), 0);
    h.observe(Kind::Election, "e", Some(&free(1, Why::Released)), 2, S, 0);
    h.observe(Kind::Election, "f", Some(&held("a", 3)), 3, S, 0);
    h.observe(Kind::Election, "f", Some(&free(3, Why::Expired)), 4, S * 2, 0);
    h.observe(Kind::Lock, "l", Some(&free(3, Why::Expired)), 4, S * 2, 0);
    assert_eq!(h.leaderless(S * 5).collect::<Vec<_>>(), [("f", S * 3)], "one at most: a new outage shows");
    h.observe(Kind::Election, "e", Some(&held("b", 5)), 5, S * 6, 0);
    assert_eq!(h.leaderless(S * 6).collect::<Vec<_>>(), [("f", S * 4)]);
    h.observe(Kind::Election, "f", Some(&held("b", 6)), 6, S * 7, 0);
    assert_eq!(h.leaderless(S * 7).count(), 0);
    // A name the history forgets (--history-names) leaves the gauge too.
    h.observe(Kind::Election, "g", Some(&held("a", 7)), 7, S * 8, 0);
    h.observe(Kind::Election, "g", Some(&free(7, Why::Released)), 8, S * 8, 0);
    assert_eq!(h.leaderless(S * 9).count(), 1);
    for (v, name) in [(9, "x"), (10, "y")] {
        h.observe(Kind::Lock, name, Some(&held("a", v)), v, S * 9, 0);
    }
    assert_eq!(h.leaderless(S * 9).count(), 0, "g was forgotten");
}

#[test]
fn wall_clock_stamps_are_rfc_3339_with_milliseconds() {
    assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
    assert_eq!(rfc3339_ms(1_796_047_200_123), "2026-11-30T14:00:00.123Z");
}

#[test]
fn entries_read_as_the_api_documents_them() {
    let entry = Entry {
        seq: 12,
        kind: Kind::Lock,
        name: "db".into(),
        at: rfc3339_ms(1_796_047_200_123),
        from: Some("alice".into()),
        to: Some("bob".into()),
        token: 7,
        address: None,
        why: Some(Why::Released),
    };
    let page = Page { changes: vec![entry], next: 12, gap: false };
    assert_eq!(
        serde_json::to_string(&page).unwrap(),
        r#"{"changes":[{"seq":12,"kind":"lock","name":"db","at":"2026-11-30T14:00:00.123Z","from":"alice","to":"bob","token":7,"address":null,"why":"released"}],"next":12,"gap":false}"#
    );
}

#[test]
fn changing_hands_is_another_holder_or_a_new_lease_never_a_renewal() {
    let (a, b) = (Some("a"), Some("b"));
    assert!(changed_hands((None, 0), (a, 1)), "taken where there was no record");
    assert!(changed_hands((a, 1), (b, 2)), "another holder");
    assert!(changed_hands((a, 1), (None, 1)), "let go");
    assert!(changed_hands((a, 1), (a, 2)), "the same holder, a new lease");
    assert!(!changed_hands((a, 1), (a, 1)), "a renewal");
    assert!(!changed_hands((None, 1), (None, 3)), "free, and still free");
    assert!(!changed_hands((None, 0), (None, 0)), "no record, then a free one");
}
