//! A worker's one watch over every election its requests use (`POST
//! /v1/watch`, see `mpsync_core::watch`), as a state machine: the root
//! context moves the bytes, [`Watch`] says when to send the next watch and
//! what an answer means. Time is passed in (`now`, from the root's ticks).
//!
//! One watch is in flight at a time. A request meeting a new election has
//! the root follow it; at the next tick a fresh watch goes out, and the
//! elector answers the one before it at once (same watcher id), so a burst
//! of new shards costs one watch per tick, not one per shard. The answer of
//! the watch in flight sends the next one at once; the answer of a
//! superseded one is merged, and that is all.
//!
//! The elector keeps the worker's set between watches (see
//! `mpsync_core::watch`): after the first answer, a watch sends only the
//! new elections and what changed, not every one. When the elector no
//! longer keeps it (410: restarted, or a request lost), the whole set goes
//! again at once, with no pause; any other failure sends the whole set
//! after the pause.

use std::time::Duration;

use mpsync_core::client::watch::{Tracked, gone};
use mpsync_core::client::{Backoff, HttpRequest, Read};
use mpsync_core::wire::Kind;

/// The pauses after a failed watch: the first about a tick, the longest a
/// second (an elector that is down or refusing gets a watch per worker per
/// second, and is followed again within a second of coming back).
const BACKOFF_OF: Duration = Duration::from_secs(2);

/// What an answer brought.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Answered {
    /// The elections whose view changed, as a read of each would have
    /// answered.
    pub(crate) news: Vec<(String, Read)>,
    /// The watch in flight failed (why, and the pause before the next).
    pub(crate) failed: Option<(String, Duration)>,
}

/// The watch of one worker.
pub(crate) struct Watch {
    tracked: Tracked,
    /// The watch in flight (call token) whose answer sends the next one;
    /// an older one still out has been superseded.
    current: Option<u32>,
    /// Elections followed since the watch in flight was sent.
    grown: bool,
    /// After a failure: no watch before this instant.
    retry_at: Option<Duration>,
    backoff: Backoff,
    /// State of the jitter's generator (xorshift64*; never 0).
    random: u64,
}

impl Watch {
    /// A watch as `watcher` (unique per worker and Envoy process), its
    /// jitter drawn from `seed`; `keep`: ask the elector to keep the set.
    pub(crate) fn new(watcher: &str, seed: u64, keep: bool) -> Watch {
        let tracked = Tracked::as_watcher(watcher);
        Watch {
            tracked: if keep { tracked } else { tracked.without_kept_set() },
            current: None,
            grown: false,
            retry_at: None,
            backoff: Backoff::new(BACKOFF_OF),
            random: seed | 1,
        }
    }

    /// Follows election `name` (the next watch carries it), and records
    /// what the worker knows of it, if anything (a held request's own
    /// long-poll, another worker through shared data): the watch then
    /// brings only what is newer.
    /// `known` is the view's version and its holder's token (`None`:
    /// nobody holds it).
    pub(crate) fn follow(&mut self, name: &str, known: Option<(u64, Option<u64>)>) {
        if self.tracked.follow(Kind::Election, name, 0) {
            self.grown = true;
        }
        if let Some((version, token)) = known {
            self.tracked.learn_view(Kind::Election, name, version, token);
        }
    }

    /// How many elections are followed.
    pub(crate) fn len(&self) -> usize {
        self.tracked.len()
    }

    /// Whether to send a watch now: none is in flight, or the one in
    /// flight lacks elections, and no failure asks for a pause.
    pub(crate) fn due(&self, now: Duration) -> bool {
        !self.tracked.is_empty() && (self.current.is_none() || self.grown) && self.retry_at.is_none_or(|at| now >= at)
    }

    /// The next watch, waiting up to `slice` on the elector: call
    /// [`Watch::sent`] or [`Watch::not_sent`] after.
    pub(crate) fn request(&mut self, slice: Duration) -> HttpRequest {
        self.tracked.request(slice)
    }

    /// The watch went out as call `token`: it supersedes any in flight.
    pub(crate) fn sent(&mut self, token: u32) {
        self.current = Some(token);
        self.grown = false;
        self.retry_at = None;
    }

    /// Envoy refused to send it: try again after a pause, which this
    /// returns.
    pub(crate) fn not_sent(&mut self, now: Duration) -> Duration {
        self.tracked.failed();
        self.pause(now, None)
    }

    /// Takes in the answer to call `token`: `status` (none if the call
    /// failed), its body and its `retry-after`.
    pub(crate) fn answered(
        &mut self,
        token: u32,
        status: Option<u16>,
        body: &[u8],
        retry_after: Option<Duration>,
        now: Duration,
    ) -> Answered {
        let current = self.current == Some(token);
        if current {
            self.current = None;
        }
        let answer = match status {
            Some(status) => self.tracked.decode(status, body).map_err(|e| (gone(&e), e.to_string())),
            None => {
                self.tracked.failed();
                Err((false, "no answer".to_owned()))
            }
        };
        match answer {
            Ok(answer) => {
                if current {
                    self.backoff.reset();
                }
                let news = self.tracked.merge(answer);
                let news = news.into_iter().filter(|(kind, _, _)| *kind == Kind::Election);
                Answered { news: news.map(|(_, name, read)| (name, read)).collect(), failed: None }
            }
            // A superseded watch's failure pauses nothing (another is out);
            // the next watch sends the whole set all the same.
            Err(_) if !current => Answered::default(),
            // The elector no longer keeps the set: the whole set at once.
            Err((true, _)) => Answered::default(),
            Err((false, why)) => {
                let pause = self.pause(now, retry_after);
                Answered { news: Vec::new(), failed: Some((why, pause)) }
            }
        }
    }

    /// No watch for a while after a failure: the pause, at least `floor`.
    fn pause(&mut self, now: Duration, floor: Option<Duration>) -> Duration {
        let random = self.next_random();
        let pause = self.backoff.next(random, floor);
        self.retry_at = Some(now + pause);
        pause
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.random;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.random = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn names(request: &HttpRequest) -> Vec<(String, u64)> {
        let body: serde_json::Value = serde_json::from_slice(request.body.as_deref().unwrap()).unwrap();
        let elections = body["elections"].as_array().unwrap_or_else(|| panic!("{body}"));
        let entry = |e: &serde_json::Value| (e["name"].as_str().unwrap().to_owned(), e["version"].as_u64().unwrap());
        elections.iter().map(entry).collect()
    }

    fn changed(name: &str, version: u64, holder: Option<&str>) -> Vec<u8> {
        let lease = holder.map(|h| {
            serde_json::json!({"name": name, "holder": h, "token": 3, "ttl_ms": 1000, "version": version,
                "expires_in_ms": 900})
        });
        let mut record = serde_json::json!({"kind": "election", "name": name, "version": version});
        if let Some(lease) = lease {
            record["lease"] = lease;
        }
        serde_json::to_vec(&serde_json::json!({"changed": [record]})).unwrap()
    }

    #[test]
    fn new_elections_wait_for_the_tick_and_go_out_together_superseding_the_watch_in_flight() {
        let mut w = Watch::new("envoy-1-ab", 7, true);
        assert!(!w.due(Duration::ZERO), "nothing followed: nothing to watch");
        w.follow("a", Some((4, Some(3))));
        w.follow("b", None);
        assert!(w.due(MS * 100));
        let first = w.request(MS * 30_000);
        assert_eq!(names(&first), vec![("a".into(), 4), ("b".into(), 0)]);
        let body: serde_json::Value = serde_json::from_slice(first.body.as_deref().unwrap()).unwrap();
        assert_eq!((body["watcher"].as_str(), body["timeout_ms"].as_u64()), (Some("envoy-1-ab"), Some(30_000)));
        w.sent(1);
        assert!(!w.due(MS * 200), "one watch in flight, nothing new");
        w.follow("a", None);
        assert!(!w.due(MS * 200), "a is followed already");
        w.follow("c", Some((2, None)));
        w.follow("d", None);
        assert!(w.due(MS * 300));
        let all = names(&w.request(MS * 30_000));
        assert_eq!(all.len(), 4, "the whole set, once");
        assert!(all.contains(&("c".into(), 0)), "known free: news only once held: {all:?}");
        w.sent(2);
        // The superseded watch is answered at once: merged, and nothing sent.
        let old = w.answered(1, Some(200), &changed("a", 6, Some("x")), None, MS * 310);
        assert_eq!(old.news.len(), 1);
        assert!(!w.due(MS * 310));
        // The current one's answer (the same news: not news any more) sends
        // the next at once, with the version learnt.
        let current = w.answered(2, Some(200), &changed("a", 6, Some("x")), None, MS * 320);
        assert_eq!(current, Answered::default());
        assert!(w.due(MS * 320));
        assert!(names(&w.request(MS * 30_000)).contains(&("a".into(), 6)));
        assert_eq!(w.len(), 4);
    }

    #[test]
    fn news_is_what_a_read_would_have_answered() {
        let mut w = Watch::new("w", 1, true);
        w.follow("a", Some((2, Some(3))));
        w.sent(1);
        let held = w.answered(1, Some(200), &changed("a", 4, Some("x")), None, MS);
        let (name, read) = &held.news[0];
        assert_eq!((name.as_str(), read.leader().map(|l| l.id)), ("a", Some("x".into())));
        w.sent(2);
        let free = w.answered(2, Some(200), &changed("a", 5, None), None, MS);
        assert_eq!(free.news, vec![("a".into(), Read::Free { version: 5 })]);
    }

    #[test]
    fn a_failed_watch_is_sent_again_after_a_growing_pause_at_least_what_the_elector_asks() {
        let mut w = Watch::new("w", 1, true);
        w.follow("a", None);
        w.sent(1);
        let down = w.answered(1, None, b"", None, MS * 1000);
        let (why, pause) = down.failed.unwrap();
        assert!(why.contains("no answer") && pause >= MS * 50 && pause <= MS * 100, "{why} {pause:?}");
        assert!(!w.due(MS * 1000) && w.due(MS * 1000 + pause));
        w.sent(2);
        let busy = w.answered(2, Some(429), br#"{"error":"busy"}"#, Some(MS * 1000), MS * 2000);
        let (why, pause) = busy.failed.unwrap();
        assert!(why.contains("429") && pause == MS * 1000, "{why} {pause:?}");
        assert!(!w.due(MS * 2999) && w.due(MS * 3000));
        // A superseded watch's failure is not the current one's.
        w.sent(3);
        w.follow("b", None);
        w.sent(4);
        assert_eq!(w.answered(3, Some(503), b"", None, MS * 3100), Answered::default());
        assert!(!w.due(MS * 3100));
        // Envoy refusing to send it: a pause as well.
        w.follow("c", None);
        let pause = w.not_sent(MS * 4000);
        assert!(!w.due(MS * 4000) && w.due(MS * 4000 + pause));
        // A success starts the pauses from the shortest again.
        w.sent(5);
        w.answered(5, Some(200), br#"{"changed":[]}"#, None, MS * 5000);
        w.sent(6);
        let (_, pause) = w.answered(6, Some(500), b"", None, MS * 6000).failed.unwrap();
        assert!(pause <= MS * 100, "{pause:?}");
    }

    fn body(request: &HttpRequest) -> serde_json::Value {
        serde_json::from_slice(request.body.as_deref().unwrap()).unwrap()
    }

    #[test]
    fn once_the_elector_keeps_the_set_a_watch_sends_only_what_changed_and_after_410_the_whole_set_at_once() {
        const SLICE: Duration = Duration::from_secs(30);
        let mut w = Watch::new("w", 1, true);
        w.follow("a", None);
        w.follow("b", None);
        let first = w.request(SLICE);
        assert_eq!((body(&first)["keep"].as_str(), names(&first).len()), (Some("k1"), 2));
        w.sent(1);
        let mut kept: serde_json::Value = serde_json::from_slice(&changed("a", 4, Some("x"))).unwrap();
        kept["resume"] = "k1.0a".into();
        let answered = w.answered(1, Some(200), &serde_json::to_vec(&kept).unwrap(), None, MS);
        assert_eq!(answered.news.len(), 1);
        // Only what the elector was not told: the election the answer brought.
        assert!(w.due(MS));
        let next = w.request(SLICE);
        assert_eq!((body(&next)["resume"].as_str(), body(&next)["total"].as_u64()), (Some("k1.0a"), Some(2)));
        assert_eq!(names(&next), vec![("a".into(), 4)]);
        w.sent(2);
        // A new election: only it.
        w.follow("c", None);
        assert!(w.due(MS * 2));
        let grown = w.request(SLICE);
        assert_eq!((names(&grown), body(&grown)["total"].as_u64()), (vec![("c".into(), 0)], Some(3)));
        w.sent(3);
        // The superseded watch's answer is merged; 410 to the current one
        // sends the whole set at once, under a new id, with no pause.
        w.answered(2, Some(200), br#"{"changed":[],"resume":"k1.0a"}"#, None, MS * 3);
        let gone = br#"{"error":"gone","message":"send the whole set"}"#;
        assert_eq!(w.answered(3, Some(410), gone, None, MS * 4), Answered::default());
        assert!(w.due(MS * 4));
        let whole = w.request(SLICE);
        assert_eq!((body(&whole)["keep"].as_str(), names(&whole).len()), (Some("k2"), 3));
        w.sent(4);
        // Any other failure: the whole set too, after the pause.
        w.answered(4, Some(200), br#"{"changed":[],"resume":"k2.0b"}"#, None, MS * 5);
        w.sent(5);
        let (_, pause) = w.answered(5, Some(503), b"", None, MS * 6).failed.unwrap();
        assert!(!w.due(MS * 6) && w.due(MS * 6 + pause));
        assert_eq!(body(&w.request(SLICE))["keep"].as_str(), Some("k3"));
        // Told not to: whole sets, never kept.
        let mut whole = Watch::new("w", 1, false);
        whole.follow("a", None);
        assert_eq!(body(&whole.request(SLICE)).get("keep"), None);
    }
}
