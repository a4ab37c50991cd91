//! The client's side of a watch over many names (`POST /v1/watch`, see
//! [`crate::watch`]): [`Tracked`], what a client knows and sends, and the
//! decoder of the answer.

use std::time::Duration;

use std::collections::{BTreeMap, BTreeSet};

use super::POLL_GRACE;
use super::http::{AnswerError, HttpRequest, Method, Read};
use crate::watch::{Since, WatchAnswer, WatchRequest, Watched};
use crate::wire::{Kind, MAX_WAIT_MS};

/// As a plain read of the record would have answered.
pub fn read(watched: Watched) -> Read {
    match watched.lease {
        Some(lease) => Read::Held(lease),
        None => Read::Free { version: watched.version },
    }
}

fn timeout_ms(slice: Duration) -> u64 {
    u64::try_from(slice.as_millis()).unwrap_or(MAX_WAIT_MS).min(MAX_WAIT_MS)
}

/// The body [`Tracked::request`] writes: a [`WatchRequest`], borrowed.
#[derive(serde::Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Entries::is_empty")]
    elections: Entries<'a>,
    #[serde(skip_serializing_if = "Entries::is_empty")]
    locks: Entries<'a>,
    timeout_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    watcher: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keep: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resume: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<usize>,
}

/// The records of one kind, as `{"name", "version", "token"}` objects:
/// every one followed, or only those to tell a kept set.
struct Entries<'a> {
    tracked: &'a Tracked,
    kind: Kind,
    only_untold: bool,
}

impl Entries<'_> {
    fn iter(&self) -> Box<dyn Iterator<Item = (&str, Since)> + '_> {
        let (tracked, kind) = (self.tracked, self.kind);
        let since = move |known: &Known| tracked.since(known);
        if self.only_untold {
            let untold = tracked.untold.iter().filter(move |(k, _)| *k == kind);
            let known = untold.filter_map(move |key| Some((key.1.as_str(), since(tracked.known.get(key)?))));
            return Box::new(known);
        }
        let all = tracked.known.iter().filter(move |((k, _), _)| *k == kind);
        Box::new(all.map(move |((_, name), known)| (name.as_str(), since(known))))
    }

    fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

impl serde::Serialize for Entries<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Entry<'a> {
            name: &'a str,
            version: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            token: Option<u64>,
        }
        s.collect_seq(self.iter().map(|(name, since)| Entry { name, version: since.version, token: since.token }))
    }
}

/// Whether a watch's failure is a 410: the elector does not keep the set
/// resumed, and the whole set is worth sending at once.
pub fn gone(error: &AnswerError) -> bool {
    matches!(error, AnswerError::Status { status: 410, .. })
}

/// Decodes the answer to a watch.
pub fn decode_watch(status: u16, body: &[u8]) -> Result<WatchAnswer, AnswerError> {
    match status {
        200 => super::http::json(status, body),
        _ => Err(super::http::unexpected(status, body)),
    }
}

/// The client's side of a watch: what it follows and what it knows of
/// each record: the view's version, and the token of the holder it showed,
/// if any. The request sends a held view's version and token, so that
/// renewals are no news, only a release, the lease running out or another
/// holder is; and 0 for a record known to be free or absent (or not known
/// at all), which the elector answers only once someone holds it: "still
/// nobody" is never news. Each answer is merged with [`Tracked::merge`],
/// which keeps only news: a record's view does not go back to an older
/// version, so a late answer from another elector cannot undo a newer one;
/// but an elector that answers the same older version twice in a row is
/// believed (it restarted without its state, and its versions started
/// again), or the watch would be answered at once for ever.
///
/// As a watcher, it asks the elector to keep its set (`keep`), and once an
/// answer says the elector does, its requests send only what the elector
/// has not been told ([`Tracked::request`]): the records followed or learnt
/// since, and every record an answer brought (that answer may have been
/// one the elector sent before the last request, or lost). Call
/// [`Tracked::failed`] when a request fails or is given up: the next one
/// sends the whole set again.
#[derive(Debug, Clone, Default)]
pub struct Tracked {
    known: BTreeMap<(Kind, String), Known>,
    watcher: Option<String>,
    /// Renewals are news too (no token is sent).
    renewals: bool,
    /// Records the kept set has not been told of as they are known now.
    untold: BTreeSet<(Kind, String)>,
    /// The id of the set asked to be kept by the last whole request.
    kept: Option<String>,
    /// The elector's id for it (`kept`, a dot, and the elector's part),
    /// once an answer said the elector keeps it: the next request resumes.
    resume: Option<String>,
    /// Sets asked to be kept so far, for the next id.
    sets: u64,
    /// Never ask the elector to keep the set.
    whole: bool,
}

/// What a client knows of one record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Known {
    version: u64,
    /// The holder's token, while the view known shows one.
    held: Option<u64>,
    /// An older version answered last time, not believed yet.
    older: Option<u64>,
}

impl Tracked {
    /// Follows nothing yet.
    pub fn new() -> Tracked {
        Tracked::default()
    }

    /// Follows nothing yet, as `watcher` (see [`WatchRequest::watcher`]):
    /// each request supersedes the one before it on the same elector.
    pub fn as_watcher(watcher: &str) -> Tracked {
        Tracked { watcher: Some(watcher.into()), ..Tracked::default() }
    }

    /// Sends the whole set every time, never asking the elector to keep
    /// it: for a watcher whose requests a balancer spreads over several
    /// electors (each would answer a resumed set 410).
    pub fn without_kept_set(mut self) -> Tracked {
        self.whole = true;
        self
    }

    /// Renewals are news too: the requests send no token, so every write
    /// to a record held answers the watch (for a client that counts on
    /// the time a lease has left; a proxy does not need them).
    pub fn with_renewals(mut self) -> Tracked {
        self.renewals = true;
        self
    }

    /// Starts following `name`, known free at `version` (0: nothing known;
    /// [`Tracked::learn`] records a read); false if already followed.
    pub fn follow(&mut self, kind: Kind, name: &str, version: u64) -> bool {
        let key = (kind, name.to_owned());
        if self.known.contains_key(&key) {
            return false;
        }
        self.untold.insert(key.clone());
        self.known.insert(key, Known { version, ..Known::default() });
        true
    }

    /// Records what a read of a followed record (a plain read or a
    /// long-poll of its own) showed, if it is newer than what is known (or
    /// the same older version a second time in a row); true if it was.
    pub fn learn(&mut self, kind: Kind, name: &str, read: &Read) -> bool {
        let token = match read {
            Read::Held(lease) => Some(lease.token),
            Read::Free { .. } => None,
        };
        self.learn_view(kind, name, read.version(), token)
    }

    /// [`Tracked::learn`] from a view's version and its holder's token
    /// (`None`: nobody holds it).
    pub fn learn_view(&mut self, kind: Kind, name: &str, version: u64, token: Option<u64>) -> bool {
        let key = (kind, name.to_owned());
        let Some(known) = self.known.get_mut(&key) else { return false };
        let newer = crate::route::supersedes(version, token.is_some(), known.version, known.held.is_some());
        if !newer {
            if version < known.version && known.older != Some(version) {
                known.older = Some(version);
                return false;
            }
            if version >= known.version {
                return false;
            }
        }
        *known = Known { version, held: token, older: None };
        self.untold.insert(key);
        true
    }

    /// Stops following `name` (the next request sends the whole set: a
    /// kept set only grows).
    pub fn forget(&mut self, kind: Kind, name: &str) {
        if self.known.remove(&(kind, name.to_owned())).is_some() {
            self.failed();
        }
    }

    /// The last request failed, was given up, or was answered 410: the
    /// elector may lack what it said, so the next one sends the whole set,
    /// to be kept under a new id.
    pub fn failed(&mut self) {
        self.resume = None;
        self.kept = None;
    }

    /// Whether the next request resumes a kept set (sends only what the
    /// elector was not told).
    pub fn resumes(&self) -> bool {
        self.resume.is_some()
    }

    /// Sets sent whole and asked to be kept so far (the first request, and
    /// one after each failure or 410).
    pub fn whole_sets(&self) -> u64 {
        self.sets
    }

    /// Decodes the answer to a request ([`Tracked::merge`] it next): any
    /// other status than 200, or a body that is not the documented JSON,
    /// makes the next request send the whole set. A 410 ([`gone`]) is
    /// worth sending again at once.
    pub fn decode(&mut self, status: u16, body: &[u8]) -> Result<WatchAnswer, AnswerError> {
        decode_watch(status, body).inspect_err(|_| self.failed())
    }

    /// What a request says the client knows of one record.
    fn since(&self, known: &Known) -> Since {
        match known.held {
            Some(token) => Since { version: known.version, token: (!self.renewals).then_some(token) },
            None => Since::NOTHING,
        }
    }

    /// Whether `name` is followed.
    pub fn follows(&self, kind: Kind, name: &str) -> bool {
        self.known.contains_key(&(kind, name.to_owned()))
    }

    /// The view version known for `name`, if followed.
    pub fn version(&self, kind: Kind, name: &str) -> Option<u64> {
        self.known.get(&(kind, name.to_owned())).map(|k| k.version)
    }

    /// How many records are followed.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Nothing is followed.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// The watch to send: every record followed, with the version and
    /// token of the lease known held, or nothing.
    pub fn watch(&self) -> WatchRequest {
        let of = |kind| {
            let entries = Entries { tracked: self, kind, only_untold: false };
            entries.iter().map(|(name, since)| (name.to_owned(), since)).collect()
        };
        WatchRequest {
            elections: of(Kind::Election),
            locks: of(Kind::Lock),
            watcher: self.watcher.clone(),
            ..WatchRequest::default()
        }
    }

    /// The next request, waiting up to `slice` on the elector, written
    /// straight from what is known (no copy of the names: a proxy sends
    /// thousands). A watcher's whole set (that of [`Tracked::watch`]) asks
    /// the elector to keep it; once an answer says it does, a request
    /// resumes it with only the records it was not told of. Either way, it
    /// counts them told: call [`Tracked::failed`] if it is not answered.
    pub fn request(&mut self, slice: Duration) -> HttpRequest {
        let resume = self.resume.is_some();
        if !resume && self.watcher.is_some() && !self.whole {
            self.sets += 1;
            self.kept = Some(format!("k{}", self.sets));
        }
        let keep = if resume { None } else { self.kept.as_deref() };
        let resume_id = self.resume.as_deref();
        let body = Body {
            elections: Entries { tracked: self, kind: Kind::Election, only_untold: resume },
            locks: Entries { tracked: self, kind: Kind::Lock, only_untold: resume },
            timeout_ms: timeout_ms(slice),
            watcher: self.watcher.as_deref(),
            keep,
            resume: resume_id,
            total: resume.then_some(self.known.len()),
        };
        let body = serde_json::to_vec(&body).ok();
        self.untold.clear();
        HttpRequest { method: Method::Post, path: "/v1/watch".into(), body, timeout: slice + POLL_GRACE }
    }

    /// Takes in an answer: returns the records that are news (followed,
    /// and a view that supersedes the one known; see
    /// [`crate::route::supersedes`]), with what they show recorded.
    /// Every record it brings is told to the kept set again, and an
    /// answer that names the set last asked to be kept makes the next
    /// requests resume it (until [`Tracked::failed`]).
    pub fn merge(&mut self, answer: WatchAnswer) -> Vec<(Kind, String, Read)> {
        if let (Some(id), Some(kept)) = (&answer.resume, &self.kept)
            && id.strip_prefix(kept.as_str()).is_some_and(|rest| rest.starts_with('.'))
        {
            self.resume = Some(id.clone());
        }
        let mut news = Vec::new();
        for watched in answer.changed {
            let (kind, name) = (watched.kind, watched.name.clone());
            if self.follows(kind, &name) {
                self.untold.insert((kind, name.clone()));
            }
            let read = read(watched);
            if self.learn(kind, &name, &read) {
                news.push((kind, name, read));
            }
        }
        news
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::LeaseView;

    fn held(name: &str, version: u64, holder: &str) -> Watched {
        Watched {
            kind: Kind::Election,
            name: name.into(),
            version,
            lease: Some(LeaseView {
                name: name.into(),
                holder: holder.into(),
                token: 1,
                ttl_ms: 1000,
                version,
                expires_in_ms: 900,
                address: None,
                waiting: 0,
                shared: false,
                permit: None,
                transfer: None,
            }),
        }
    }

    #[test]
    fn the_request_carries_every_name_with_its_version_and_the_slice() {
        let mut tracked = Tracked::new();
        assert!(tracked.follow(Kind::Election, "a", 0));
        assert!(tracked.follow(Kind::Lock, "b", 7));
        assert!(tracked.learn(Kind::Lock, "b", &Read::Held(held("b", 8, "x").lease.unwrap())));
        assert!(tracked.follow(Kind::Election, "c", 9));
        assert!(!tracked.follow(Kind::Election, "a", 3), "already followed: the known version stays");
        let request = tracked.request(Duration::from_secs(30));
        assert_eq!((request.method, request.path.as_str()), (Method::Post, "/v1/watch"));
        assert_eq!(request.timeout, Duration::from_secs(30) + POLL_GRACE);
        let body: serde_json::Value = serde_json::from_slice(&request.body.unwrap()).unwrap();
        // Held: its version; free (c) or unknown (a): 0, answered only once held.
        let entry = |name: &str, version: u64| serde_json::json!({"name": name, "version": version});
        let expected = serde_json::json!({
            "elections": [entry("a", 0), entry("c", 0)],
            "locks": [{"name": "b", "version": 8, "token": 1}],
            "timeout_ms": 30000
        });
        assert_eq!(body, expected);
        // Written from what is known: the same as the watch it stands for.
        let watch = serde_json::to_value(WatchRequest { timeout_ms: Some(30000), ..tracked.watch() }).unwrap();
        assert_eq!(body, watch);
        // With renewals: no token, so every write to b answers.
        let renewals = tracked.clone().with_renewals().watch();
        assert_eq!(renewals.locks.get("b"), Some(&Since { version: 8, token: None }));
    }

    #[test]
    fn merging_keeps_only_news_and_records_the_versions() {
        let mut tracked = Tracked::new();
        tracked.follow(Kind::Election, "a", 0);
        tracked.learn(Kind::Election, "a", &Read::Held(held("a", 4, "w").lease.unwrap()));
        tracked.follow(Kind::Election, "b", 0);
        let answer = WatchAnswer {
            changed: vec![
                held("a", 6, "x"),
                Watched { kind: Kind::Election, name: "b".into(), version: 3, lease: None },
                held("unfollowed", 9, "y"),
            ],
            resume: None,
        };
        let news = tracked.merge(answer);
        assert_eq!(news.len(), 2);
        assert_eq!(news[0].2.leader().map(|l| l.id), Some("x".into()));
        assert_eq!(news[1].2, Read::Free { version: 3 });
        assert_eq!((tracked.version(Kind::Election, "a"), tracked.version(Kind::Election, "b")), (Some(6), Some(3)));
        // A late answer with an older view changes nothing.
        assert!(tracked.merge(WatchAnswer { resume: None, changed: vec![held("a", 5, "old")] }).is_empty());
        assert_eq!(tracked.version(Kind::Election, "a"), Some(6));
        // Free at 3 is sent as 0; a late held view older than it is no news.
        assert_eq!(tracked.watch().elections.get("b"), Some(&Since::NOTHING));
        assert!(tracked.merge(WatchAnswer { resume: None, changed: vec![held("b", 2, "stale")] }).is_empty());
        // The same version seen free after held: the lease ran out.
        let ran_out = Watched { kind: Kind::Election, name: "a".into(), version: 6, lease: None };
        assert_eq!(tracked.merge(WatchAnswer { resume: None, changed: vec![ran_out] }).len(), 1);
        // An elector that went back (restarted without its state) is
        // believed once it answers the same older version twice.
        let restarted = || WatchAnswer { resume: None, changed: vec![held("a", 2, "after")] };
        assert!(tracked.merge(restarted()).is_empty(), "once: perhaps a late answer");
        assert_eq!(tracked.merge(restarted()).len(), 1, "twice: the elector's versions went back");
        assert_eq!(tracked.version(Kind::Election, "a"), Some(2));
        tracked.forget(Kind::Election, "a");
        assert!(!tracked.follows(Kind::Election, "a") && tracked.len() == 1);
    }

    fn body(request: HttpRequest) -> serde_json::Value {
        serde_json::from_slice(&request.body.unwrap()).unwrap()
    }

    fn names(body: &serde_json::Value) -> Vec<(&str, u64)> {
        let entries = body["elections"].as_array().map(Vec::as_slice).unwrap_or_default();
        entries.iter().map(|e| (e["name"].as_str().unwrap(), e["version"].as_u64().unwrap())).collect()
    }

    #[test]
    fn a_kept_set_is_resumed_with_only_what_the_elector_was_not_told() {
        const S: Duration = Duration::from_secs(30);
        // The elector's id: the client's, a dot, and its own part.
        let kept = |id: &str| Some(format!("{id}.00ff"));
        let mut tracked = Tracked::as_watcher("w");
        tracked.follow(Kind::Election, "a", 0);
        tracked.follow(Kind::Election, "b", 0);
        let first = body(tracked.request(S));
        assert_eq!((first["keep"].as_str(), first.get("resume"), names(&first).len()), (Some("k1"), None, 2));
        // Not answered yet: a grown set goes whole, to be kept under a new id.
        tracked.follow(Kind::Election, "c", 0);
        let second = body(tracked.request(S));
        assert_eq!((second["keep"].as_str(), names(&second).len()), (Some("k2"), 3));
        // The first set's answer is not the set last asked to be kept.
        tracked.merge(WatchAnswer { changed: vec![], resume: kept("k1") });
        assert!(!tracked.resumes());
        // The second's is: the next request sends what the elector was not
        // told: the record an answer brought, and one learnt meanwhile.
        assert_eq!(tracked.merge(WatchAnswer { changed: vec![held("a", 6, "x")], resume: kept("k2") }).len(), 1);
        assert!(tracked.resumes());
        assert!(tracked.learn_view(Kind::Election, "b", 9, None));
        let third = body(tracked.request(S));
        assert_eq!(
            (third["resume"].as_str(), third["total"].as_u64(), third.get("keep")),
            (Some("k2.00ff"), Some(3), None)
        );
        assert_eq!(names(&third), vec![("a", 6), ("b", 0)]);
        assert_eq!(third["elections"][0]["token"].as_u64(), Some(1));
        // Nothing new: only the resume.
        let fourth = body(tracked.request(S));
        assert_eq!((fourth["resume"].as_str(), fourth.get("elections")), (Some("k2.00ff"), None));
        // An answer bringing a record known already: told again all the same
        // (the elector answered it because it was not told).
        tracked.merge(WatchAnswer { changed: vec![held("a", 6, "x")], resume: kept("k2") });
        assert_eq!(names(&body(tracked.request(S))), vec![("a", 6)]);
        // A 410: whole again, under a new id.
        let gone = tracked.decode(410, br#"{"error":"gone","message":"send the whole set"}"#).unwrap_err();
        assert!(super::gone(&gone) && !tracked.resumes());
        let fifth = body(tracked.request(S));
        assert_eq!((fifth["keep"].as_str(), names(&fifth).len(), fifth.get("total")), (Some("k3"), 3, None));
        // An answer for another set of the same prefix is not this one's.
        tracked.merge(WatchAnswer { changed: vec![], resume: Some("k30.00ff".into()) });
        assert!(!tracked.resumes());
        // Another watch's answer (a plain look) changes nothing of that.
        tracked.merge(WatchAnswer { changed: vec![], resume: None });
        assert!(!tracked.resumes());
        tracked.merge(WatchAnswer { changed: vec![], resume: kept("k3") });
        tracked.merge(WatchAnswer { changed: vec![], resume: None });
        assert!(tracked.resumes());
        assert_eq!(body(tracked.request(S))["resume"].as_str(), Some("k3.00ff"));
        // Forgetting a record: whole again (a kept set only grows).
        tracked.forget(Kind::Election, "c");
        let sixth = body(tracked.request(S));
        assert_eq!((sixth["keep"].as_str(), names(&sixth)), (Some("k4"), vec![("a", 6), ("b", 0)]));
        // Without a watcher nothing is kept.
        let mut anonymous = Tracked::new();
        anonymous.follow(Kind::Lock, "l", 0);
        let plain = body(anonymous.request(S));
        assert_eq!((plain.get("keep"), plain.get("resume"), plain.get("watcher")), (None, None, None));
        // Nor when told not to.
        let mut whole = Tracked::as_watcher("w").without_kept_set();
        whole.follow(Kind::Lock, "l", 0);
        let plain = body(whole.request(S));
        assert_eq!((plain.get("keep"), plain["watcher"].as_str()), (None, Some("w")));
    }
}
