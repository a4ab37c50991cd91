//! The leader-routing decision, for proxies that send traffic only to the
//! current leader of an election (the Envoy filter).
//!
//! Given what the proxy knows of the leader, where it runs (in front of
//! every replica, or as a gateway) and which addresses leaders may
//! advertise, [`decide`] says what to do with a request. A leader address is
//! taken from the elector, which anyone who can reach it can write to, so it
//! is never routed to unless an [`Allowlist`] rule admits it.

use core::fmt;
use core::net::{IpAddr, SocketAddr};
use core::ops::RangeInclusive;

/// The leader as a proxy last learned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The leader's candidate id.
    pub id: String,
    /// Its advertised `ip:port`, if it advertised one.
    pub address: Option<String>,
    /// Its fencing token.
    pub token: u64,
}

/// Whether a view of a record (`version`, held or not) replaces an older
/// one: a later version, or the same version seen free after its lease ran
/// out (the elector reports an expiry without writing a new version).
/// Watchers that learn from several answers use it so an old answer that
/// arrives late never overwrites a newer one.
pub fn supersedes(new_version: u64, new_held: bool, old_version: u64, old_held: bool) -> bool {
    new_version > old_version || (new_version == old_version && old_held && !new_held)
}

/// Where the proxy runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// In front of all replicas: route each request to the leader.
    Gateway,
    /// In front of one replica (`self_address`): pass requests through when
    /// it leads; otherwise refuse them or forward them to the leader.
    Sidecar {
        /// The address this replica advertises when it leads.
        self_address: SocketAddr,
        /// What to do on a follower.
        forward: bool,
    },
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send it to `address` (the leader's), stamped with its id and token.
    Route {
        /// The leader's address.
        address: SocketAddr,
        /// The leader's id.
        id: String,
        /// The leader's fencing token.
        token: u64,
    },
    /// Sidecar on the leader: let it through, stamped with id and token.
    Pass {
        /// The leader's id (this replica).
        id: String,
        /// Its fencing token.
        token: u64,
    },
    /// Sidecar on a follower, not forwarding: refuse (503), naming the leader.
    NotLeader {
        /// The leader's id.
        id: String,
    },
    /// No leader is known: hold the request until one appears, or refuse.
    NoLeader,
    /// The leader advertises no address, an unparsable one, or one that no
    /// rule allows: never route there.
    Disallowed {
        /// What it advertised.
        address: Option<String>,
    },
}

/// Decides what to do with one request.
pub fn decide(leader: Option<&Leader>, mode: &Mode, allow: &Allowlist) -> Decision {
    let Some(leader) = leader else { return Decision::NoLeader };
    let parsed = leader.address.as_deref().and_then(|a| a.parse::<SocketAddr>().ok());
    let Some(address) = parsed.filter(|a| allow.allows(*a)) else {
        return Decision::Disallowed { address: leader.address.clone() };
    };
    let (id, token) = (leader.id.clone(), leader.token);
    match mode {
        Mode::Gateway => Decision::Route { address, id, token },
        Mode::Sidecar { self_address, .. } if *self_address == address => Decision::Pass { id, token },
        Mode::Sidecar { forward: true, .. } => Decision::Route { address, id, token },
        Mode::Sidecar { forward: false, .. } => Decision::NotLeader { id },
    }
}

/// One allowlist rule: a network and a port range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    network: IpAddr,
    prefix: u8,
    ports: RangeInclusive<u16>,
}

/// Why a rule did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError(pub String);

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Rule {
    /// Parses `10.0.0.0/8`, `10.0.0.7`, `10.0.0.0/8:8080`,
    /// `10.0.0.0/8:8000-8999`, `[fd00::]/8:443` (IPv6 in brackets when a
    /// port follows).
    pub fn parse(text: &str) -> Result<Rule, RuleError> {
        let bad = |why: &str| {
            RuleError(format!(
                "allow rule {text:?}: {why} (examples: \"10.0.0.0/8\", \"127.0.0.1/32:8000-8999\", \"[fd00::]/8:443\")"
            ))
        };
        let (net, ports) = if let Some(rest) = text.strip_prefix('[') {
            let (ip, after) = rest.split_once(']').ok_or_else(|| bad("missing ']'"))?;
            let (prefix, ports) = match after.strip_prefix('/') {
                Some(p) => p.split_once(':').map_or((Some(p), None), |(a, b)| (Some(a), Some(b))),
                None => (None, after.strip_prefix(':')),
            };
            ((ip, prefix), ports)
        } else if text.matches(':').count() > 1 {
            let (ip, prefix) = text.split_once('/').map_or((text, None), |(a, b)| (a, Some(b)));
            ((ip, prefix), None)
        } else {
            let (addr, ports) = text.split_once(':').map_or((text, None), |(a, b)| (a, Some(b)));
            let (ip, prefix) = addr.split_once('/').map_or((addr, None), |(a, b)| (a, Some(b)));
            ((ip, prefix), ports)
        };
        let network: IpAddr = net.0.parse().map_err(|_| bad("not an IP address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match net.1 {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| bad("bad prefix length"))?,
            None => max,
        };
        let ports = match ports {
            None | Some("") => 1..=u16::MAX,
            Some(p) => {
                let (lo, hi) = p.split_once('-').unwrap_or((p, p));
                let lo: u16 = lo.parse().map_err(|_| bad("bad port"))?;
                let hi: u16 = hi.parse().map_err(|_| bad("bad port"))?;
                if lo == 0 || lo > hi {
                    return Err(bad("bad port range"));
                }
                lo..=hi
            }
        };
        Ok(Rule { network, prefix, ports })
    }

    /// True when `addr` is inside the network and the port range.
    pub fn allows(&self, addr: SocketAddr) -> bool {
        if !self.ports.contains(&addr.port()) {
            return false;
        }
        let bits = |ip: IpAddr| -> u128 {
            match ip {
                IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
                IpAddr::V6(v6) => u128::from(v6),
            }
        };
        if self.network.is_ipv4() != addr.ip().is_ipv4() {
            return false;
        }
        let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(self.prefix)) };
        bits(self.network) & mask == bits(addr.ip()) & mask
    }
}

/// The addresses a leader may advertise and still get traffic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Allowlist(pub Vec<Rule>);

impl Allowlist {
    /// Parses every rule; fails on the first bad one.
    pub fn parse<'a>(rules: impl IntoIterator<Item = &'a str>) -> Result<Allowlist, RuleError> {
        rules.into_iter().map(Rule::parse).collect::<Result<_, _>>().map(Allowlist)
    }

    /// True when some rule allows `addr`.
    pub fn allows(&self, addr: SocketAddr) -> bool {
        self.0.iter().any(|r| r.allows(addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(addr: &str) -> Leader {
        Leader { id: "r1".into(), address: Some(addr.into()), token: 7 }
    }

    fn allow(rules: &[&str]) -> Allowlist {
        Allowlist::parse(rules.iter().copied()).unwrap()
    }

    #[test]
    fn later_versions_and_expiries_supersede() {
        assert!(supersedes(5, true, 4, true));
        assert!(supersedes(5, false, 5, true));
        assert!(!supersedes(5, true, 5, false));
        assert!(!supersedes(4, false, 5, true));
        assert!(!supersedes(5, true, 5, true));
    }

    #[test]
    fn rules_match_networks_and_ports() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let r = Rule::parse("10.0.0.0/8:8000-8999").unwrap();
        assert!(r.allows(a("10.1.2.3:8080")));
        assert!(!r.allows(a("10.1.2.3:9000")));
        assert!(!r.allows(a("11.0.0.1:8080")));
        assert!(Rule::parse("127.0.0.1").unwrap().allows(a("127.0.0.1:1")));
        assert!(!Rule::parse("127.0.0.1").unwrap().allows(a("127.0.0.2:1")));
        assert!(Rule::parse("0.0.0.0/0").unwrap().allows(a("8.8.8.8:53")));
        assert!(Rule::parse("[fd00::]/8:443").unwrap().allows(a("[fd12::1]:443")));
        assert!(Rule::parse("::1/128").unwrap().allows(a("[::1]:80")));
        assert!(!Rule::parse("::1/128").unwrap().allows(a("127.0.0.1:80")));
        for bad in ["", "10.0.0.0/33", "nowhere", "10.0.0.0/8:0", "10.0.0.0/8:9-8", "10.0.0.0/8:x", "[::1"] {
            assert!(Rule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gateway_routes_to_an_allowed_leader_only() {
        let allow = allow(&["127.0.0.0/8"]);
        let d = decide(Some(&leader("127.0.0.1:8081")), &Mode::Gateway, &allow);
        assert_eq!(d, Decision::Route { address: "127.0.0.1:8081".parse().unwrap(), id: "r1".into(), token: 7 });
        assert!(matches!(decide(Some(&leader("10.0.0.1:80")), &Mode::Gateway, &allow), Decision::Disallowed { .. }));
        assert!(matches!(decide(Some(&leader("leader:80")), &Mode::Gateway, &allow), Decision::Disallowed { .. }));
        let no_addr = Leader { address: None, ..leader("x") };
        assert!(matches!(decide(Some(&no_addr), &Mode::Gateway, &allow), Decision::Disallowed { address: None }));
        assert_eq!(decide(None, &Mode::Gateway, &allow), Decision::NoLeader);
    }

    #[test]
    fn sidecar_passes_on_the_leader_and_refuses_or_forwards_on_followers() {
        let allow = allow(&["127.0.0.0/8"]);
        let me = "127.0.0.1:8081".parse().unwrap();
        let reject = Mode::Sidecar { self_address: me, forward: false };
        let forward = Mode::Sidecar { self_address: me, forward: true };
        assert_eq!(
            decide(Some(&leader("127.0.0.1:8081")), &reject, &allow),
            Decision::Pass { id: "r1".into(), token: 7 }
        );
        assert_eq!(decide(Some(&leader("127.0.0.1:8082")), &reject, &allow), Decision::NotLeader { id: "r1".into() });
        assert!(matches!(decide(Some(&leader("127.0.0.1:8082")), &forward, &allow), Decision::Route { .. }));
    }
}
