//! The client's side of a watch over many names (`POST /v1/watch`, see
//! [`crate::watch`]): [`Tracked`], what a client knows and sends, and the
//! decoder of the answer.

use std::time::Duration;

use std::collections::BTreeMap;

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
}

/// The records of one kind, as `{"name", "version", "token"}` objects.
struct Entries<'a> {
    tracked: &'a Tracked,
    kind: Kind,
}

impl Entries<'_> {
    fn iter(&self) -> impl Iterator<Item = (&str, Since)> {
        let kind = self.kind;
        self.tracked.known.iter().filter(move |((k, _), _)| *k == kind).map(|((_, name), known)| {
            let since = match known.held {
                Some(token) => Since { version: known.version, token: (!self.tracked.renewals).then_some(token) },
                None => Since::NOTHING,
            };
            (name.as_str(), since)
        })
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
#[derive(Debug, Clone, Default)]
pub struct Tracked {
    known: BTreeMap<(Kind, String), Known>,
    watcher: Option<String>,
    /// Renewals are news too (no token is sent).
    renewals: bool,
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
        let Some(known) = self.known.get_mut(&(kind, name.to_owned())) else { return false };
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
        true
    }

    /// Stops following `name`.
    pub fn forget(&mut self, kind: Kind, name: &str) {
        self.known.remove(&(kind, name.to_owned()));
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
        let of = |kind| Entries { tracked: self, kind }.iter().map(|(name, since)| (name.to_owned(), since)).collect();
        WatchRequest {
            elections: of(Kind::Election),
            locks: of(Kind::Lock),
            timeout_ms: None,
            watcher: self.watcher.clone(),
        }
    }

    /// The next request, waiting up to `slice` on the elector: the body
    /// of [`Tracked::watch`], written straight from what is known (no
    /// copy of the names: a proxy sends thousands at each change).
    pub fn request(&self, slice: Duration) -> HttpRequest {
        let body = Body {
            elections: Entries { tracked: self, kind: Kind::Election },
            locks: Entries { tracked: self, kind: Kind::Lock },
            timeout_ms: timeout_ms(slice),
            watcher: self.watcher.as_deref(),
        };
        HttpRequest {
            method: Method::Post,
            path: "/v1/watch".into(),
            body: serde_json::to_vec(&body).ok(),
            timeout: slice + POLL_GRACE,
        }
    }

    /// Takes in an answer: returns the records that are news (followed,
    /// and a view that supersedes the one known; see
    /// [`crate::route::supersedes`]), with what they show recorded.
    pub fn merge(&mut self, answer: WatchAnswer) -> Vec<(Kind, String, Read)> {
        let mut news = Vec::new();
        for watched in answer.changed {
            let (kind, name) = (watched.kind, watched.name.clone());
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
        };
        let news = tracked.merge(answer);
        assert_eq!(news.len(), 2);
        assert_eq!(news[0].2.leader().map(|l| l.id), Some("x".into()));
        assert_eq!(news[1].2, Read::Free { version: 3 });
        assert_eq!((tracked.version(Kind::Election, "a"), tracked.version(Kind::Election, "b")), (Some(6), Some(3)));
        // A late answer with an older view changes nothing.
        assert!(tracked.merge(WatchAnswer { changed: vec![held("a", 5, "old")] }).is_empty());
        assert_eq!(tracked.version(Kind::Election, "a"), Some(6));
        // Free at 3 is sent as 0; a late held view older than it is no news.
        assert_eq!(tracked.watch().elections.get("b"), Some(&Since::NOTHING));
        assert!(tracked.merge(WatchAnswer { changed: vec![held("b", 2, "stale")] }).is_empty());
        // The same version seen free after held: the lease ran out.
        let ran_out = Watched { kind: Kind::Election, name: "a".into(), version: 6, lease: None };
        assert_eq!(tracked.merge(WatchAnswer { changed: vec![ran_out] }).len(), 1);
        // An elector that went back (restarted without its state) is
        // believed once it answers the same older version twice.
        let restarted = || WatchAnswer { changed: vec![held("a", 2, "after")] };
        assert!(tracked.merge(restarted()).is_empty(), "once: perhaps a late answer");
        assert_eq!(tracked.merge(restarted()).len(), 1, "twice: the elector's versions went back");
        assert_eq!(tracked.version(Kind::Election, "a"), Some(2));
        tracked.forget(Kind::Election, "a");
        assert!(!tracked.follows(Kind::Election, "a") && tracked.len() == 1);
    }
}
