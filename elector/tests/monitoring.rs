//! `deploy/monitoring/` against real electors: the alert rules pass
//! `promtool check rules`, and fire in `promtool test rules` on series
//! scraped from real electors driven through what each alert is for (an
//! election left without a leader, a flapping election, long-polls and
//! sessions near their limits, refusals, an elector whose etcd is killed,
//! a full memory store, electors gone), and not before; every metric the
//! dashboard and the rules read shows up in a real elector's `/metrics`,
//! and every dashboard query parses.
//!
//! The scrapes become the test's `input_series`, one scrape per interval
//! step of one (virtual) minute, as Prometheus would have stored them: a
//! series missing from a scrape is marked stale, `up` is 1 for an answered
//! scrape and 0 for a failed one. The files are written under
//! `target/tmp/monitoring/` (never beside the sources).

#![allow(clippy::unwrap_used, missing_docs)]

#[path = "monitoring/rules.rs"]
mod alert_rules;
#[allow(unused_macros)]
mod common;
#[path = "monitoring/series.rs"]
mod series;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alert_rules::{alert_tests, expect, metric_names, rules};
use common::{Backend, PATIENCE, Session, open_session};
use hyper::{Method, StatusCode};
use mpsync_client::{Claimed, Client};
use mpsync_core::wire::{AcquireRequest, Kind};
use serde_yaml::Value;
use series::{JOB, Timeline, scrape, value};
use testkit::elector::ElectorProcess;

fn monitoring() -> PathBuf {
    testkit::workspace().join("deploy/monitoring")
}

fn promtool() -> PathBuf {
    let bin = testkit::workspace().join(".tools/prometheus/promtool");
    assert!(
        bin.is_file(),
        "{} is missing: run scripts/setup.sh (make test does), which unpacks promtool from Debian's prometheus \
         package",
        bin.display()
    );
    bin
}

/// Runs promtool with `args` in `dir`; panics with its output unless it
/// succeeds.
fn run_promtool(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(promtool()).args(args).current_dir(dir).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {} failed:\n{text}", args.join(" "));
    text
}

/// The folder test `name` writes its files into, emptied.
fn work_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("monitoring").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Scrapes `elector` every 20 ms (the change happens in another
/// process and shows nowhere else) until `ready` holds of its metrics.
async fn settle(elector: &ElectorProcess, what: &str, ready: impl Fn(&str) -> bool) {
    let mut last = String::new();
    let settled = tokio::time::timeout(PATIENCE, async {
        loop {
            last = scrape(elector).await;
            if ready(&last) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(settled.is_ok(), "never {what}; the last scrape:\n{last}");
}

fn election(holder: &str, session: &Session) -> AcquireRequest {
    AcquireRequest {
        session: Some(session.id.clone()),
        ..AcquireRequest::new(holder, Duration::from_secs(30), None, None)
    }
}

async fn lead(client: &Client, holder: &str, session: &Session) {
    match client.claim(Kind::Election, "web", &election(holder, session)).await.unwrap() {
        Claimed::Granted(_) => {}
        other => panic!("{holder} does not lead web: {other:?}"),
    }
}

/// Changes of leadership of `web` that ended a leader's session, as the
/// elector counts them.
fn session_ends(text: &str) -> f64 {
    value(text, "mpsync_handovers_total", &[("kind", "election"), ("why", "session_ended")]).unwrap_or(0.0)
}

fn leaderless(text: &str) -> bool {
    value(text, "mpsync_election_leaderless_seconds", &[("election", "web")]).is_some()
}

/// Parks a long-poll on `name`, which never changes, until aborted (from
/// the version it has now: a memory store's absent names move on with
/// every record it forgets).
async fn park(elector: &ElectorProcess, name: &str) -> tokio::task::JoinHandle<String> {
    let now: serde_json::Value =
        serde_json::from_str(&testkit::proc::get(&format!("{}/v1/locks/{name}", elector.url())).await).unwrap();
    let url = format!("{}/v1/locks/{name}?wait={}&timeout_ms=60000", elector.url(), now["version"]);
    tokio::spawn(async move { testkit::proc::get(&url).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_fire_on_what_real_electors_report() {
    let dir = work_dir("alerts");
    let alerts_file = monitoring().join("alerts.yaml");
    run_promtool(&dir, &["check", "rules", alerts_file.to_str().unwrap()]);
    let (_, rules) = rules(&alerts_file);

    // a: the memory store, small limits. b: etcd, which will be killed.
    // c: the memory store with room for one record.
    let (mut a, a_client) = Backend::Memory.elector("pod-a", &["--max-long-polls", "10", "--max-sessions", "5"]).await;
    let (mut c, c_client) = Backend::Memory.elector("pod-c", &["--max-records", "1"]).await;
    let mut etcd = Backend::start("etcd").await;
    let (mut b, b_client) = etcd.elector("pod-b", &["--store-timeout", "1s"]).await;
    let mut t = Timeline::default();
    let mut expects = Vec::new();
    macro_rules! both {
        () => {
            t.scrape(&[("a", Some(&a)), ("b", Some(&b)), ("c", Some(&c))]).await
        };
    }
    let a_labels: &[(&str, &str)] = &[("instance", "a"), ("job", JOB)];
    let b_labels: &[(&str, &str)] = &[("instance", "b"), ("job", JOB)];

    // Healthy: web has a leader, nothing is near a limit. No alert fires.
    let mut leader = open_session(a.addr()).await;
    lead(&a_client, "r0", &leader).await;
    let mut healthy = 0;
    for _ in 0..3 {
        healthy = both!();
    }
    expects.extend(rules.iter().map(|rule| expect(healthy, &rule.alert, &[])));

    // Flapping: each step, two leaders lose web as their process dies
    // (their session ends) and another takes over.
    let mut ended = 0.0;
    let mut flapped = 0;
    for _ in 0..4 {
        for _ in 0..2 {
            let next = open_session(a.addr()).await;
            drop(std::mem::replace(&mut leader, next));
            ended += 1.0;
            settle(&a, "counted the session's end", |m| session_ends(m) >= ended).await;
            lead(&a_client, &format!("r{ended}"), &leader).await;
        }
        settle(&a, "saw web led again", |m| !leaderless(m)).await;
        flapped = both!();
    }
    expects.push(expect(flapped, "MpsyncLeadershipFlapping", &[&[("job", JOB), ("kind", "election")]]));

    // Leaderless: the leader's session ends and nobody stands; firing once
    // it lasted a minute, not when it began; over when a leader comes.
    drop(std::mem::replace(&mut leader, open_session(a.addr()).await));
    settle(&a, "saw web leaderless", leaderless).await;
    let began = both!();
    both!();
    let lasted = both!();
    lead(&a_client, "r-last", &leader).await;
    settle(&a, "saw web led again", |m| !leaderless(m)).await;
    let led = both!();
    let web: &[(&str, &str)] = &[("election", "web"), ("job", JOB)];
    expects.extend([
        expect(began, "MpsyncElectionLeaderless", &[]),
        expect(lasted, "MpsyncElectionLeaderless", &[web]),
        expect(led, "MpsyncElectionLeaderless", &[]),
        expect(led, "MpsyncRefusing", &[]),
    ]);

    // Near the limits: 9 of 10 long-poll slots and 5 of 5 sessions, then
    // the 10th slot and an 11th long-poll refused; for 5 minutes.
    let mut parked = Vec::new();
    for i in 0..9 {
        parked.push(park(&a, &format!("parked-{i}")).await);
    }
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(open_session(a.addr()).await);
    }
    settle(&a, "parked 9 long-polls beside 5 sessions", |m| {
        value(m, "mpsync_long_polls", &[]) == Some(9.0) && value(m, "mpsync_sessions", &[]) == Some(5.0)
    })
    .await;
    let near = both!();
    parked.push(park(&a, "parked-9").await);
    settle(&a, "parked 10 long-polls", |m| value(m, "mpsync_long_polls", &[]) == Some(10.0)).await;
    let refused = a_client.request(Method::GET, "/v1/locks/parked-0?wait=1&timeout_ms=60000", None::<&()>).await;
    assert_eq!(refused.unwrap().status, StatusCode::TOO_MANY_REQUESTS);
    let refusing = both!();
    for _ in 0..5 {
        both!();
    }
    expects.extend([
        expect(refusing + 1, "MpsyncRefusing", &[&[("instance", "a"), ("job", JOB), ("limit", "long_polls")]]),
        expect(near + 4, "MpsyncLongPollsNearLimit", &[]),
        expect(near + 5, "MpsyncLongPollsNearLimit", &[a_labels]),
        expect(near + 4, "MpsyncSessionsNearLimit", &[]),
        expect(near + 5, "MpsyncSessionsNearLimit", &[a_labels]),
    ]);
    for p in parked {
        p.abort();
    }
    drop(sessions);

    // b's etcd killed: every claim through b is a 503, two a step.
    let before = t.steps.len() - 1;
    etcd_kill(&mut etcd).await;
    let mut down = Vec::new();
    for _ in 0..8 {
        for _ in 0..2 {
            let reply = b_client.request(Method::PUT, "/v1/locks/orders", Some(&common::acquire("w", 10_000))).await;
            assert_eq!(reply.unwrap().status, StatusCode::SERVICE_UNAVAILABLE);
        }
        settle(&b, "saw the store down", |m| value(m, "mpsync_store_up", &[]) == Some(0.0)).await;
        down.push(both!());
    }
    expects.extend([
        expect(before, "MpsyncStoreUnavailable", &[]),
        expect(down[0], "MpsyncStoreUnavailable", &[]),
        expect(down[2], "MpsyncStoreUnavailable", &[b_labels]),
        expect(before, "MpsyncStoreErrors", &[]),
        expect(down[3], "MpsyncStoreErrors", &[&[("instance", "b"), ("job", JOB), ("store", "etcd")]]),
        expect(before, "MpsyncRequestErrors", &[]),
        // The first 503s are a new series: a rate from the next step on
        // (down[1]), firing 5 minutes later (down[6]).
        expect(down[5], "MpsyncRequestErrors", &[]),
        expect(down[7], "MpsyncRequestErrors", &[b_labels]),
    ]);

    // etcd back: a claim through b answers again.
    etcd.restart().await;
    tokio::time::timeout(PATIENCE, async {
        loop {
            let reply = b_client.request(Method::PUT, "/v1/locks/orders", Some(&common::acquire("w", 10_000))).await;
            if reply.is_ok_and(|r| r.status == StatusCode::OK) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("b never answered again once etcd was back");
    // (Calls in flight before, such as the history's listing retried,
    // may still fail after the claim answered: the next one answers.)
    settle(&b, "saw the store up", |m| value(m, "mpsync_store_up", &[]) == Some(1.0)).await;
    let back = both!();
    expects.push(expect(back, "MpsyncStoreUnavailable", &[]));

    // b gone: its scrapes fail (up 0), its series go stale.
    b.signal("TERM").unwrap();
    b.wait().await.unwrap();
    // And c full: a second lock is refused.
    common::granted(&c_client, "first", &common::acquire("w", 60_000)).await;
    let full = c_client.request(Method::PUT, "/v1/locks/second", Some(&common::acquire("w", 60_000))).await;
    assert_eq!(full.unwrap().status, StatusCode::SERVICE_UNAVAILABLE);
    let mut gone = Vec::new();
    for _ in 0..4 {
        gone.push(t.scrape(&[("a", Some(&a)), ("b", None), ("c", Some(&c))]).await);
    }
    expects.extend([
        expect(back, "MpsyncElectorDown", &[]),
        expect(gone[1], "MpsyncElectorDown", &[]),
        expect(gone[3], "MpsyncElectorDown", &[b_labels]),
        expect(gone[3], "MpsyncMetricsAbsent", &[]),
        expect(back, "MpsyncStoreFull", &[]),
        expect(
            gone[1],
            "MpsyncStoreFull",
            &[&[("call", "refused_full"), ("instance", "c"), ("job", JOB), ("store", "memory")]],
        ),
    ]);

    // a and c gone too: no elector's metrics at all, for 10 minutes.
    drop(leader);
    for elector in [&mut a, &mut c] {
        elector.signal("TERM").unwrap();
        elector.wait().await.unwrap();
    }
    let mut none = Vec::new();
    for _ in 0..11 {
        none.push(t.scrape(&[("a", None), ("b", None), ("c", None)]).await);
    }
    expects.extend([expect(none[8], "MpsyncMetricsAbsent", &[]), expect(none[10], "MpsyncMetricsAbsent", &[&[]])]);

    let test = format!(
        "rule_files: [{}]\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{}    \
         alert_rule_test:\n{}",
        serde_json::to_string(alerts_file.to_str().unwrap()).unwrap(),
        t.input_series(),
        alert_tests(&rules, &expects)
    );
    std::fs::write(dir.join("alerts.test.yaml"), test).unwrap();
    run_promtool(&dir, &["test", "rules", "alerts.test.yaml"]);

    // Every alert is driven to fire, but MpsyncSlowRequests (checked by
    // promtool and by its metric's name).
    let driven: BTreeSet<&str> = expects.iter().filter(|e| !e.firing.is_empty()).map(|e| e.alert.as_str()).collect();
    let undriven: Vec<&str> = rules.iter().map(|r| r.alert.as_str()).filter(|a| !driven.contains(a)).collect();
    assert_eq!(undriven, ["MpsyncSlowRequests"]);

    // Every metric the rules and the dashboard read, seen in the scrapes.
    let mut used = metric_names(&rules_exprs(&alerts_file));
    used.extend(metric_names(&dashboard_exprs()));
    let missing: Vec<&String> = used.iter().filter(|n| !t.names.contains(*n) && n.as_str() != "up").collect();
    assert!(missing.is_empty(), "read by deploy/monitoring/ but in no elector's /metrics: {missing:?}");
}

async fn etcd_kill(backend: &mut Backend) {
    match backend {
        Backend::Etcd(etcd) => etcd.kill().await.unwrap(),
        _ => unreachable!("b runs on etcd"),
    }
}

fn rules_exprs(file: &Path) -> Vec<String> {
    rules(file).0.into_iter().map(|(_, e)| e).collect()
}

/// Every query of the dashboard, with Grafana's variables given values
/// PromQL takes (every instance, a 5-minute rate window).
fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(monitoring().join("dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            exprs.push(expr.replace("$__rate_interval", "5m").replace("$instance", ".*"));
        }
    }
    assert!(exprs.len() > 20, "{} queries in the dashboard", exprs.len());
    exprs
}

#[test]
fn every_dashboard_query_parses() {
    let dir = work_dir("dashboard");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in dashboard_exprs().iter().enumerate() {
        let _ = writeln!(
            rules,
            "      - record: dashboard:query_{i}\n        expr: {}",
            serde_json::to_string(expr).unwrap()
        );
    }
    std::fs::write(dir.join("dashboard.rules.yaml"), rules).unwrap();
    run_promtool(&dir, &["check", "rules", "dashboard.rules.yaml"]);

    // One data source, chosen at import or provisioning; one elector filter.
    let text = std::fs::read_to_string(monitoring().join("dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let variables: Vec<&str> =
        dashboard["templating"]["list"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(variables, ["DS_PROMETHEUS", "instance"]);
    for panel in dashboard["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", panel["title"]);
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", panel["title"]);
            assert!(target["expr"].as_str().unwrap().contains("$instance"), "{}: {}", panel["title"], target["expr"]);
        }
    }
}

#[test]
fn the_prometheus_rule_holds_the_rule_files_groups() {
    let read = |name: &str| -> Value {
        serde_yaml::from_str(&std::fs::read_to_string(monitoring().join(name)).unwrap()).unwrap()
    };
    let (wrapper, rules) = (read("prometheusrule.yaml"), read("alerts.yaml"));
    assert_eq!(wrapper["kind"], "PrometheusRule");
    assert!(
        wrapper["spec"]["groups"] == rules["groups"],
        "deploy/monitoring/prometheusrule.yaml's spec.groups differ from alerts.yaml's groups: copy them over"
    );
}
