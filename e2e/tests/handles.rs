//! Handles a guest drops leave nothing behind in `mpsync`: round after
//! round of distinct names, the host's lease registry, the leases it keeps
//! alive, its tasks and the elector's parked long-polls come back to where
//! they were.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use testkit::elector::ElectorProcess;
use testkit::proc::{PATIENCE, Proc, elector, metric};

/// `open=… lingering=… tasks=…` of one of the host's `lease handle …`
/// debug lines.
#[derive(Debug, Clone, Copy)]
struct Counts {
    opened: bool,
    open: usize,
    lingering: usize,
    tasks: usize,
}

fn counts(line: &str) -> Counts {
    let field = |key: &str| -> usize {
        let value = line.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='));
        value.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {key} in {line:?}"))
    };
    Counts {
        opened: line.contains("lease handle opened"),
        open: field("open"),
        lingering: field("lingering"),
        tasks: field("tasks"),
    }
}

/// Waits until the elector has no long-poll parked. The elector offers no
/// event for it, so it is read again every 10 ms, up to [`PATIENCE`].
async fn no_watchers(elector: &ElectorProcess, round: u32) {
    let waited = tokio::time::timeout(PATIENCE, async {
        while metric(elector, "mpsync_watchers").await != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "round {round}: leader watches of dropped handles still poll the elector");
}

#[tokio::test]
async fn dropped_handles_leave_nothing_behind_round_after_round() {
    const ROUNDS: u32 = 5;
    const HANDLES: usize = 30;
    let elector = elector().await;
    let (rounds, handles) = (ROUNDS.to_string(), HANDLES.to_string());
    let mut churn = Proc::run(
        "churn",
        &elector.url(),
        &["--log", "mpsync::leases=debug"],
        "churn.wasm",
        &["--rounds", &rounds, "--handles", &handles, "--ttl-ms", "60000", "--cue"],
    );
    let mut closed_so_far = 0;
    for round in 0..ROUNDS {
        // The guest's `round R done` (stdout) and the host's lines about
        // the round (stderr) come through two pipes: take both, in any order.
        let (mut done, mut lines) = (false, Vec::new());
        while !done || lines.iter().filter(|c: &&Counts| !c.opened).count() < HANDLES {
            let line = churn
                .expect("a lease handle line or the end of the round", |l| {
                    l.contains("lease handle") || l.starts_with("round ") || l.contains("FAILED")
                })
                .await;
            assert!(!line.contains("FAILED"), "{line}");
            if line.starts_with("round ") {
                assert_eq!(line, format!("round {round} done"));
                done = true;
            } else {
                lines.push(counts(&line));
            }
        }
        closed_so_far += HANDLES;
        let peak = lines.iter().map(|c| c.open).max().unwrap();
        assert_eq!(peak, HANDLES, "round {round}: the registry holds the handles open now, no more: {lines:?}");
        let last = lines.last().unwrap();
        assert!(!last.opened, "{lines:?}");
        let tail = &lines[lines.len() - 3..];
        assert_eq!(
            (last.open, last.lingering),
            (0, 0),
            "round {round} ({closed_so_far} closed so far), last: {tail:?}"
        );

        // Every dropped lease was released before its drop returned, and
        // every leader watch stops.
        assert_eq!(metric(&elector, "mpsync_held_leases").await, 0, "round {round}");
        no_watchers(&elector, round).await;

        // What the host runs when the next round starts: the signal waiter
        // and the HTTP client's idle keep-alive connections (as many as
        // requests once overlapped, a handful), however many rounds came
        // before. Not an exact figure, so a bound: fewer tasks than one
        // round's handles. Leader watches of dropped handles, had they kept
        // running, would be two thirds of the handles every round, past the
        // bound by the second round.
        churn.send_line("next").await;
        if round + 1 < ROUNDS {
            let first =
                counts(&churn.expect("the next round's first handle", |l| l.contains("lease handle opened")).await);
            assert_eq!(first.open, 1);
            assert!(
                first.tasks < HANDLES,
                "round {}: {} tasks alive before it opens a second handle",
                round + 1,
                first.tasks
            );
        }
    }
    assert!(churn.wait().await.success(), "{}", churn.output());
}
