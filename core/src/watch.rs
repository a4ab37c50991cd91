//! A watch over many names in one request: `POST /v1/watch`.
//!
//! A proxy routing thousands of shards, or a controller following many
//! elections, would otherwise park one long-poll per name. Here the client
//! names every record it follows with the version of the held view it
//! knows (0 for none: no holder known), and the elector answers as soon as
//! any of them is news (a write, a lease seen running out, someone taking
//! a record known free), with only those. The client merges them and asks
//! again with what it now knows.
//!
//! A watcher may ask the elector to keep its set between requests
//! ([`WatchRequest::keep`]): the next request then sends only what changed
//! ([`WatchRequest::resume`]), new names and records whose knowledge moved,
//! and the elector goes on from where the last watch left off, with the
//! changes made in between. A proxy following 10,000 shards then re-arms
//! with a few names instead of all of them after every leader change. A set
//! the elector does not keep (it restarted, nobody resumed it for a minute,
//! a newer `keep` replaced it, or a request's names were lost on the way)
//! is answered 410, and the client sends the whole set again: nothing is
//! lost, and any elector of the store can answer a whole set.
//!
//! The client's side (the versions to send, merging answers) is
//! [`crate::client::watch`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::wire::{DEFAULT_WAIT_MS, Kind, LeaseView, MAX_WAIT_MS};

/// The most names one watch may follow unless the elector is told
/// otherwise (`--max-watch-names`): as many elections as the Envoy
/// filter's `max_elections` lets one worker follow.
pub const DEFAULT_MAX_WATCH_NAMES: usize = 10_000;

/// The body of `POST /v1/watch`: the records to follow, each with what
/// the client knows of it ([`Since`]). A record is news when someone holds
/// it that the client does not know of, or nobody holds it any more, and
/// (without a `token`) at every write: a record free or absent, and still
/// so, is never news, however its version moved (a store that forgets
/// free records moves them all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchRequest {
    /// Elections, by name (on the wire, a list of `{"name", "version",
    /// "token"}`; a name listed twice counts once, as listed last).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", with = "as_list")]
    pub elections: BTreeMap<String, Since>,
    /// Locks, by name (the same).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", with = "as_list")]
    pub locks: BTreeMap<String, Since>,
    /// Answer with nothing changed after this long (default
    /// [`DEFAULT_WAIT_MS`], at most [`MAX_WAIT_MS`]); 0 answers at once
    /// with whatever differs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Who watches (1 to [`MAX_WATCHER_LEN`] of `A-Z a-z 0-9 - _ .`): a
    /// new watch from the same watcher on the same elector answers the
    /// one before it at once, with what differs so far. A client whose set
    /// of names grows sends a new watch instead of waiting for the old one
    /// to end, and never holds more than one watch per elector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watcher: Option<String>,
    /// With `watcher`: keep this request's set on the elector, replacing
    /// the watcher's kept set, so that the next request may send only what
    /// changed (`resume`). The client's name for the set (1 to
    /// [`MAX_KEEP_LEN`] of `A-Z a-z 0-9 - _ .`): the answer's `resume` is it,
    /// a dot, and a part the elector adds, so that two clients that share a
    /// watcher id never resume each other's set.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::wire::present")]
    pub keep: Option<String>,
    /// With `watcher`: the records listed come on top of the set kept under
    /// this id (an answer's `resume`: new names, or what is now known of a
    /// name followed), and the watch goes on from the last one of the set,
    /// changes made since included. 410 when this elector does not keep
    /// that set.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::wire::present")]
    pub resume: Option<String>,
    /// With `resume`: how many records the client follows in all, this
    /// request's new ones included. A kept set of another size missed a
    /// request's names (one lost on the way) and is answered 410.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::wire::present")]
    pub total: Option<usize>,
}

/// What a client knows of one record it watches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Since {
    /// The version of the held view it knows, or 0 when it knows of no
    /// holder (or knows nothing): then only a holder is news.
    pub version: u64,
    /// With `version`: the token of the lease it knows held. Then a
    /// renewal (which writes, and so moves the version) is no news: only
    /// a release, the lease running out, or another holder is. Without
    /// it, every write is (a renewal that changes the advertised address
    /// needs it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
}

impl Since {
    /// Knows of no holder.
    pub const NOTHING: Since = Since { version: 0, token: None };
}

/// The records as a list of `{"name", "version", "token"}` on the wire,
/// which a schema can describe (names as map keys it cannot, in OpenAPI
/// 3.0).
mod as_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Since;

    #[derive(Serialize)]
    struct EntryRef<'a> {
        name: &'a str,
        #[serde(flatten)]
        since: &'a Since,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        name: String,
        version: u64,
        #[serde(default)]
        token: Option<u64>,
    }

    pub(super) fn serialize<S: Serializer>(map: &BTreeMap<String, Since>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter().map(|(name, since)| EntryRef { name, since }))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Since>, D::Error> {
        let entries = Vec::<Entry>::deserialize(d)?;
        Ok(entries.into_iter().map(|e| (e.name, Since { version: e.version, token: e.token })).collect())
    }
}

/// The longest `watcher` id, and `resume` id.
pub const MAX_WATCHER_LEN: usize = 64;

/// The longest `keep` id: with the dot and the 16 hexadecimal digits the
/// elector adds, a `resume` id.
pub const MAX_KEEP_LEN: usize = MAX_WATCHER_LEN - 17;

/// Whether `id` can be a watcher's id (or a `resume` id).
pub fn valid_watcher(id: &str) -> bool {
    (1..=MAX_WATCHER_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Whether `id` can be a `keep` id.
pub fn valid_keep(id: &str) -> bool {
    id.len() <= MAX_KEEP_LEN && valid_watcher(id)
}

impl WatchRequest {
    /// How many records it follows.
    pub fn len(&self) -> usize {
        self.elections.len() + self.locks.len()
    }

    /// It names no record (a `resume` may: nothing changed).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How long to wait, checked: at most [`MAX_WAIT_MS`].
    pub fn timeout(&self) -> Result<Duration, String> {
        match self.timeout_ms {
            Some(ms) if ms > MAX_WAIT_MS => Err(format!("timeout_ms is {ms}; at most {MAX_WAIT_MS} is allowed")),
            ms => Ok(Duration::from_millis(ms.unwrap_or(DEFAULT_WAIT_MS))),
        }
    }

    /// Every record followed, elections first, with what is known of it.
    pub fn entries(&self) -> impl Iterator<Item = (Kind, &str, Since)> {
        let elections = self.elections.iter().map(|(name, since)| (Kind::Election, name.as_str(), *since));
        elections.chain(self.locks.iter().map(|(name, since)| (Kind::Lock, name.as_str(), *since)))
    }
}

/// One record whose view is news to the watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watched {
    /// Lock or election.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// Its view version now (ask with it next time).
    pub version: u64,
    /// The lease, while the record is held (as `GET` shows it: a lock held
    /// only shared shows its newest shared hold, with `shared` set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseView>,
}

/// The answer to `POST /v1/watch` (200): the records that are news, none
/// if the watch timed out or the elector is shutting down. With a kept set
/// (`keep`, `resume`), a record answered is answered again by the next
/// watch unless that watch says what the client now knows of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchAnswer {
    /// The records that are news, in no particular order.
    pub changed: Vec<Watched>,
    /// The id of the set this elector keeps for the watcher after this
    /// answer (the request's `keep` or `resume`): the next request may
    /// `resume` it. Absent when nothing is kept (no `keep` asked, or the
    /// elector keeps as many names as it may for other watchers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_past_the_limit_is_refused() {
        let request = |ms| WatchRequest { timeout_ms: ms, ..WatchRequest::default() };
        assert_eq!(request(None).timeout(), Ok(Duration::from_millis(DEFAULT_WAIT_MS)));
        assert_eq!(request(Some(0)).timeout(), Ok(Duration::ZERO));
        assert!(request(Some(MAX_WAIT_MS + 1)).timeout().unwrap_err().contains("at most"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<WatchRequest>(r#"{"election": [{"name": "a", "version": 0}]}"#).is_err());
        assert!(serde_json::from_str::<WatchRequest>(r#"{"elections": [{"name": "a", "v": 0}]}"#).is_err());
        let text = r#"{"elections": [{"name": "a", "version": 1}, {"name": "a", "version": 2, "token": 5}]}"#;
        let parsed: WatchRequest = serde_json::from_str(text).unwrap();
        let since = Since { version: 2, token: Some(5) };
        assert_eq!(parsed.entries().collect::<Vec<_>>(), vec![(Kind::Election, "a", since)], "the last one counts");
        let back: serde_json::Value = serde_json::to_value(&parsed).unwrap();
        assert_eq!(back, serde_json::json!({"elections": [{"name": "a", "version": 2, "token": 5}]}));
        assert!(valid_watcher("envoy-worker-3.abc_1") && !valid_watcher("") && !valid_watcher("a b"));
        assert!(valid_keep("k1") && !valid_keep(&"k".repeat(MAX_KEEP_LEN + 1)));
        // Kept-set fields may be absent, not null.
        for null in ["keep", "resume", "total"] {
            let text = format!(r#"{{"locks": [{{"name": "a", "version": 0}}], "watcher": "w", "{null}": null}}"#);
            assert!(serde_json::from_str::<WatchRequest>(&text).is_err(), "{null}: null");
        }
        let resumed: WatchRequest = serde_json::from_str(r#"{"watcher": "w", "resume": "k1.00", "total": 3}"#).unwrap();
        assert_eq!((resumed.resume.as_deref(), resumed.total, resumed.keep), (Some("k1.00"), Some(3), None));
        assert!(!valid_watcher(&"w".repeat(MAX_WATCHER_LEN + 1)));
    }
}
