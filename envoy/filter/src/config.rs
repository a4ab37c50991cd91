//! The filter's JSON configuration, checked in full in `on_configure` so
//! that Envoy refuses a bad one with a message saying what is wrong.

use std::net::SocketAddr;

use mpsync_core::route::{Allowlist, Mode};
use serde::Deserialize;

/// The configuration as written in the Envoy config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    elector_cluster: String,
    #[serde(default)]
    elector_authority: Option<String>,
    #[serde(default)]
    election: Option<String>,
    #[serde(default)]
    shard: Option<RawShard>,
    #[serde(default = "default_mode")]
    mode: String,
    #[serde(default)]
    self_address: Option<String>,
    #[serde(default)]
    on_follower: Option<String>,
    allow: Vec<String>,
    #[serde(default = "default_hold")]
    hold_ms: u64,
    #[serde(default = "default_poll")]
    poll_timeout_ms: u64,
    #[serde(default)]
    headers: RawHeaders,
    #[serde(default = "default_max_elections")]
    max_elections: usize,
    #[serde(default = "default_keep_watch_set")]
    keep_watch_set: bool,
}

fn default_keep_watch_set() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShard {
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    path_segment: Option<usize>,
    template: String,
}

/// Each header: absent for the default name, `null` for none at all.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaders {
    #[serde(default, deserialize_with = "present")]
    leader_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    leader_token: Option<Option<String>>,
}

/// A field that is there, `null` or not: absent stays `None` (the default).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn default_mode() -> String {
    "gateway".into()
}
fn default_hold() -> u64 {
    2000
}
fn default_poll() -> u64 {
    30_000
}
fn default_max_elections() -> usize {
    10_000
}

/// Where the election name of a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Election {
    /// One election for all traffic.
    Fixed(String),
    /// A shard key, mapped by `template` (`orders-{shard}`).
    Sharded {
        /// Where the shard key comes from.
        source: ShardSource,
        /// The election name, with `{shard}` replaced.
        template: Template,
    },
}

/// An election name template (`orders-{shard}`), split at its `{shard}`s
/// once, in `on_configure`: a request's election name is then written by
/// copies alone, into a buffer the worker reuses (no search, no
/// allocation per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The text around each `{shard}`: one more piece than there are
    /// `{shard}`s.
    pieces: Vec<String>,
}

impl Template {
    fn parse(text: &str) -> Template {
        Template { pieces: text.split("{shard}").map(str::to_owned).collect() }
    }

    /// Writes the election name of `shard` into `out` (cleared first). The
    /// name is not checked: see [`Template::check`].
    pub fn write(&self, shard: &str, out: &mut String) {
        out.clear();
        for (i, piece) in self.pieces.iter().enumerate() {
            if i > 0 {
                out.push_str(shard);
            }
            out.push_str(piece);
        }
    }

    /// Checks `name`, written by [`Template::write`] for `shard`; the error
    /// is what a 400 answer says.
    pub fn check(shard: &str, name: &str) -> Result<(), String> {
        mpsync_core::validate_name(name).map_err(|e| format!("shard {shard:?} gives election name {name:?}: {e}"))
    }
}

/// Where a request's shard key comes from: exactly one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardSource {
    /// A header (name in lowercase).
    Header(String),
    /// A path segment (0 = the first after `/`).
    PathSegment(usize),
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Envoy cluster of the elector.
    pub cluster: String,
    /// `:authority` for calls to the elector.
    pub authority: String,
    /// The election(s).
    pub election: Election,
    /// Gateway or sidecar.
    pub mode: Mode,
    /// Addresses leaders may advertise.
    pub allow: Allowlist,
    /// How long to hold a request while no leader is known.
    pub hold_ms: u64,
    /// Long-poll timeout for watching the elector.
    pub poll_timeout_ms: u64,
    /// Most elections watched at once (shards are named by clients).
    pub max_elections: usize,
    /// Ask the elector to keep the worker's watch set between watches, so
    /// that a watch after a change sends only what changed.
    pub keep_watch_set: bool,
    /// Header carrying the leader's id upstream (none: not sent).
    pub leader_id_header: Option<String>,
    /// Header carrying the leader's fencing token upstream (none: not sent).
    pub leader_token_header: Option<String>,
}

fn header_name(name: &str, what: &str) -> Result<String, String> {
    let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok { Ok(name.to_ascii_lowercase()) } else { Err(format!("{what}: {name:?} is not a valid header name")) }
}

fn optional_header(raw: Option<Option<String>>, default: &str, what: &str) -> Result<Option<String>, String> {
    match raw {
        None => Ok(Some(default.to_owned())),
        Some(None) => Ok(None),
        Some(Some(name)) => header_name(&name, what).map(Some),
    }
}

impl Config {
    /// Parses and checks `json`; the error says what is wrong, for the log.
    pub fn parse(json: &[u8]) -> Result<Config, String> {
        if json.is_empty() {
            return Err(
                "the configuration is empty; it needs at least elector_cluster, election (or shard) and allow".into()
            );
        }
        let raw: Raw = serde_json::from_slice(json).map_err(|e| format!("the configuration is not valid: {e}"))?;
        if raw.elector_cluster.is_empty() {
            return Err("elector_cluster must name the Envoy cluster of the elector".into());
        }
        let election = match (raw.election, raw.shard) {
            (Some(_), Some(_)) => return Err("set election or shard, not both".into()),
            (None, None) => {
                return Err("set election (one election for all traffic) or shard (an election per shard)".into());
            }
            (Some(name), None) => {
                mpsync_core::validate_name(&name).map_err(|e| format!("election {name:?}: {e}"))?;
                Election::Fixed(name)
            }
            (None, Some(shard)) => {
                if !shard.template.contains("{shard}") {
                    return Err(format!(
                        "shard.template {:?} must contain {{shard}}, e.g. \"orders-{{shard}}\"",
                        shard.template
                    ));
                }
                let template = Template::parse(&shard.template);
                let mut sample = String::new();
                template.write("1", &mut sample);
                mpsync_core::validate_name(&sample)
                    .map_err(|e| format!("shard.template {:?} gives invalid names: {e}", shard.template))?;
                let source = match (shard.header.as_deref(), shard.path_segment) {
                    (Some(_), Some(_)) => return Err("set shard.header or shard.path_segment, not both".into()),
                    (None, None) => return Err("shard needs header or path_segment".into()),
                    (Some(h), None) => ShardSource::Header(header_name(h, "shard.header")?),
                    (None, Some(i)) => ShardSource::PathSegment(i),
                };
                Election::Sharded { source, template }
            }
        };
        let mode = match raw.mode.as_str() {
            "gateway" => {
                if raw.self_address.is_some() || raw.on_follower.is_some() {
                    return Err("self_address and on_follower are for mode \"sidecar\"".into());
                }
                Mode::Gateway
            }
            "sidecar" => {
                let addr = raw
                    .self_address
                    .ok_or("mode \"sidecar\" needs self_address, the ip:port this replica advertises")?;
                let self_address: SocketAddr =
                    addr.parse().map_err(|_| format!("self_address {addr:?} is not an ip:port"))?;
                let forward = match raw.on_follower.as_deref().unwrap_or("reject") {
                    "reject" => false,
                    "forward" => true,
                    other => return Err(format!("on_follower {other:?} must be \"reject\" or \"forward\"")),
                };
                Mode::Sidecar { self_address, forward }
            }
            other => return Err(format!("mode {other:?} must be \"gateway\" or \"sidecar\"")),
        };
        if raw.allow.is_empty() {
            return Err("allow must list the networks leaders may advertise (e.g. [\"10.0.0.0/8\"]); traffic never goes elsewhere".into());
        }
        let allow = Allowlist::parse(raw.allow.iter().map(String::as_str)).map_err(|e| e.to_string())?;
        if raw.hold_ms > 60_000 {
            return Err(format!("hold_ms is {}; at most 60000 is allowed", raw.hold_ms));
        }
        if !(100..=300_000).contains(&raw.poll_timeout_ms) {
            return Err(format!("poll_timeout_ms is {}; it must be between 100 and 300000", raw.poll_timeout_ms));
        }
        if raw.max_elections == 0 {
            return Err("max_elections is 0; at least one election must be watched".into());
        }
        Ok(Config {
            max_elections: raw.max_elections,
            keep_watch_set: raw.keep_watch_set,
            authority: raw.elector_authority.unwrap_or_else(|| raw.elector_cluster.clone()),
            cluster: raw.elector_cluster,
            election,
            mode,
            allow,
            hold_ms: raw.hold_ms,
            poll_timeout_ms: raw.poll_timeout_ms,
            leader_id_header: optional_header(raw.headers.leader_id, "x-leader-id", "headers.leader_id")?,
            leader_token_header: optional_header(raw.headers.leader_token, "x-leader-token", "headers.leader_token")?,
        })
    }

    /// The election a request belongs to, from its headers and path; `Err`
    /// says why the request names none (answered with 400). The request
    /// path does the same in steps, checking a name only when its worker
    /// does not know it yet.
    pub fn election_for(&self, header: impl Fn(&str) -> Option<Vec<u8>>, path: &[u8]) -> Result<String, String> {
        match &self.election {
            Election::Fixed(name) => Ok(name.clone()),
            Election::Sharded { source, template } => {
                let value = match source {
                    ShardSource::Header(h) => header(h),
                    ShardSource::PathSegment(_) => Some(path.to_vec()),
                };
                let shard = source.shard(value.as_deref())?;
                let mut name = String::new();
                template.write(shard, &mut name);
                Template::check(shard, &name)?;
                Ok(name)
            }
        }
    }
}

impl ShardSource {
    /// The shard key in `value`, the request's header (`None`: absent) or
    /// its `:path`, as text; `Err` says why there is none (answered with
    /// 400).
    pub fn shard<'a>(&self, value: Option<&'a [u8]>) -> Result<&'a str, String> {
        match self {
            ShardSource::Header(h) => {
                let value = value.ok_or_else(|| format!("the request has no {h} header naming its shard"))?;
                // A client may send any bytes in a header: never trust them
                // to be text.
                std::str::from_utf8(value).map_err(|_| format!("the {h} header is not text"))
            }
            ShardSource::PathSegment(i) => {
                let path = std::str::from_utf8(value.unwrap_or_default()).unwrap_or("");
                let path = path.split(['?', '#']).next().unwrap_or("");
                path.split('/')
                    .filter(|s| !s.is_empty())
                    .nth(*i)
                    .ok_or_else(|| format!("the path has no segment {i} naming its shard"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_gateway_config() {
        let c = Config::parse(br#"{"elector_cluster":"elector","election":"web","allow":["127.0.0.0/8"]}"#).unwrap();
        assert_eq!(
            (c.hold_ms, c.leader_id_header.as_deref(), c.authority.as_str()),
            (2000, Some("x-leader-id"), "elector")
        );
        assert_eq!(c.election_for(|_| None, b"/x").unwrap(), "web");
        assert!(c.keep_watch_set, "kept watch sets by default");
        let whole = br#"{"elector_cluster":"e","election":"w","allow":["127.0.0.0/8"],"keep_watch_set":false}"#;
        assert!(!Config::parse(whole).unwrap().keep_watch_set);
    }

    #[test]
    fn leader_headers_renamed_or_turned_off() {
        let c = Config::parse(br#"{"elector_cluster":"e","election":"w","allow":["0.0.0.0/0"],"headers":{"leader_id":"X-Who","leader_token":null}}"#).unwrap();
        assert_eq!((c.leader_id_header.as_deref(), c.leader_token_header.as_deref()), (Some("x-who"), None));
        let d = Config::parse(br#"{"elector_cluster":"e","election":"w","allow":["0.0.0.0/0"],"headers":{}}"#).unwrap();
        assert_eq!(d.leader_token_header.as_deref(), Some("x-leader-token"));
        let bad = Config::parse(
            br#"{"elector_cluster":"e","election":"w","allow":["0.0.0.0/0"],"headers":{"leader_id":"a b"}}"#,
        );
        assert!(bad.unwrap_err().contains("headers.leader_id"));
    }

    #[test]
    fn shards_from_headers_and_paths() {
        let c = Config::parse(br#"{"elector_cluster":"e","shard":{"header":"X-Shard","template":"orders-{shard}"},"allow":["0.0.0.0/0"]}"#).unwrap();
        assert_eq!(c.election_for(|h| (h == "x-shard").then(|| b"7".to_vec()), b"/").unwrap(), "orders-7");
        assert!(c.election_for(|_| None, b"/").is_err());
        assert!(c.election_for(|_| Some(b"Bad!".to_vec()), b"/").is_err());
        let not_text = c.election_for(|_| Some(vec![0xff, b'1']), b"/").unwrap_err();
        assert!(not_text.contains("x-shard header is not text"), "{not_text}");
        let p = Config::parse(
            br#"{"elector_cluster":"e","shard":{"path_segment":1,"template":"t-{shard}"},"allow":["0.0.0.0/0"]}"#,
        )
        .unwrap();
        assert_eq!(p.election_for(|_| None, b"/orders/42/items?x=1").unwrap(), "t-42");
        assert!(p.election_for(|_| None, b"/orders").is_err());
    }

    #[test]
    fn a_template_is_written_by_pieces() {
        let t = Template::parse("{shard}.orders-{shard}");
        let mut out = String::from("left over");
        t.write("eu", &mut out);
        assert_eq!(out, "eu.orders-eu");
        Template::parse("plain-{shard}").write("7", &mut out);
        assert_eq!(out, "plain-7");
        assert!(Template::check("A", "plain-A").unwrap_err().contains("shard \"A\""));
    }
}
