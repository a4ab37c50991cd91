//! A Kubernetes Service that reaches only the leader: the elector keeps
//! the EndpointSlice of a selector-less Service listing the current leader
//! of an election, and nothing else (`--leader-service`).
//!
//! The promise: the slice `SERVICE-leader` names the leader's advertised
//! `ip:port` while it leads, with its id and fencing token in annotations,
//! and no endpoint while nobody leads (released, or its lease ran out), so
//! kube-proxy sends the Service's traffic to the leader only and refuses it
//! while there is none. Every pod's elector sidecar may keep the same
//! slice; they agree without talking to each other:
//!
//! - A slice is written from a *view* of the election, and carries that
//!   view's version (`sync.metaparticle.io/version`). The view versions of
//!   one record grow, and are the same on every elector sharing the store
//!   (they are derived from the Lease's `resourceVersion`), so an elector
//!   never replaces a slice written from a newer view than its own: a slow
//!   elector cannot put a resigned leader back.
//! - Writes carry the `resourceVersion` read (409 Conflict: read again and
//!   decide again), and happen only when the slice says something else: a
//!   renewal, which changes the view but not who leads, writes nothing.
//!
//! The rejected alternative: the `Endpoints` object Patroni keeps. It is
//! deprecated since Kubernetes 1.33, and the EndpointSlice mirroring
//! controller would copy it into a slice anyway.
//!
//! What the slice must say is decided here, by [`decide`], a pure function
//! of the election's view and the slice as read; [`keeper`] runs one task
//! per `--leader-service` that reads the view, decides and writes;
//! [`cluster`] builds the one Kubernetes client the store and the keepers
//! share.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::service::View;

pub mod cluster;
pub mod keeper;
#[cfg(test)]
mod tests;

pub use keeper::spawn;

/// The label that ties a slice to its Service (kube-proxy reads it).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label that tells the EndpointSlice controller the slice is not its
/// own (it leaves slices managed by others alone).
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Our value of [`MANAGED_BY_LABEL`]; a slice with another is never touched.
pub const MANAGED_BY: &str = "elector.sync.metaparticle.io";
/// Annotation: the election whose leader the slice lists.
pub const ELECTION_ANNOTATION: &str = "sync.metaparticle.io/election";
/// Annotation: the leader's id (absent while nobody leads).
pub const LEADER_ANNOTATION: &str = "sync.metaparticle.io/leader";
/// Annotation: the leader's fencing token (absent while nobody leads).
pub const TOKEN_ANNOTATION: &str = "sync.metaparticle.io/token";
/// Annotation: the version of the view the slice was last changed from.
pub const VERSION_ANNOTATION: &str = "sync.metaparticle.io/version";

/// One `--leader-service ELECTION=SERVICE[:PORT_NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderService {
    /// The election whose leader the Service reaches.
    pub election: String,
    /// The selector-less Service (a DNS-1035 label).
    pub service: String,
    /// The name of the Service's port the leader's port stands for; `None`
    /// for a Service whose one port has no name.
    pub port_name: Option<String>,
}

/// A DNS-1123 label: what Kubernetes asks of a port name, and (starting
/// with a letter, `service` true) of a Service name.
fn dns_label(what: &str, s: &str, service: bool) -> Result<(), String> {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = s.as_bytes();
    let ok = !s.is_empty()
        && s.len() <= 63
        && bytes.iter().all(|b| alnum(*b) || *b == b'-')
        && bytes.first().is_some_and(|b| if service { b.is_ascii_lowercase() } else { alnum(*b) })
        && bytes.last().is_some_and(|b| alnum(*b));
    if ok {
        Ok(())
    } else {
        let start = if service { "a lowercase letter" } else { "a lowercase letter or digit" };
        Err(format!(
            "{what} {s:?} must be at most 63 lowercase letters, digits and '-', starting with {start} and ending \
             with a letter or digit"
        ))
    }
}

impl std::str::FromStr for LeaderService {
    type Err = String;

    /// Parses `ELECTION=SERVICE[:PORT_NAME]`, e.g. `web=web-leader:http`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (election, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not ELECTION=SERVICE[:PORT_NAME] (e.g. web=web-leader:http)"))?;
        mpsync_core::validate_name(election).map_err(|e| format!("election {election:?}: {e}"))?;
        let (service, port_name) = match rest.split_once(':') {
            Some((service, port)) => (service, Some(port)),
            None => (rest, None),
        };
        dns_label("Service name", service, true)?;
        if let Some(port) = port_name {
            dns_label("port name", port, false)?;
        }
        Ok(LeaderService {
            election: election.to_owned(),
            service: service.to_owned(),
            port_name: port_name.map(str::to_owned),
        })
    }
}

impl LeaderService {
    /// The name of the slice this keeps: `SERVICE-leader`.
    pub fn slice_name(&self) -> String {
        format!("{}-leader", self.service)
    }
}

/// What a view asks the slice to say, whatever its Kubernetes form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Says {
    /// The leader and its fencing token; `None` while nobody leads.
    pub leader: Option<(String, u64)>,
    /// The one endpoint; `None` while nobody leads, or the leader
    /// advertises no IP address.
    pub endpoint: Option<SocketAddr>,
}

/// Something the operator should hear about once (the keeper logs each
/// when it starts to apply, not at every change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// The leader advertises no address: the slice lists no endpoint.
    NoAddress {
        /// The leader.
        leader: String,
    },
    /// The leader's address is not `ip:port`: the slice lists no endpoint.
    NotIp {
        /// The leader.
        leader: String,
        /// What it advertises.
        address: String,
    },
    /// The leader's address is one the API server refuses in an endpoint
    /// (unspecified, loopback, link-local): the slice lists no endpoint.
    Unroutable {
        /// The leader.
        leader: String,
        /// Its address.
        address: SocketAddr,
    },
    /// The leader's address is of the other IP family than the slice's
    /// `addressType`, which Kubernetes never lets change: the slice lists
    /// no endpoint until it is deleted (the next leader's family then
    /// creates it again).
    Family {
        /// The leader's address.
        address: SocketAddr,
        /// The slice's address type.
        address_type: String,
    },
    /// A slice by this name exists that someone else manages: it is left
    /// alone.
    Foreign {
        /// Its `endpointslice.kubernetes.io/managed-by` label.
        managed_by: Option<String>,
    },
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::NoAddress { leader } => {
                write!(f, "leader {leader:?} advertises no address: the slice lists no endpoint")
            }
            Warning::NotIp { leader, address } => {
                write!(f, "leader {leader:?} advertises {address:?}, not an ip:port: the slice lists no endpoint")
            }
            Warning::Unroutable { leader, address } => write!(
                f,
                "leader {leader:?} advertises {address}, which no endpoint may have (unspecified, loopback or \
                 link-local): the slice lists no endpoint"
            ),
            Warning::Family { address, address_type } => write!(
                f,
                "the leader's address {address} does not fit the slice's addressType {address_type}, which cannot \
                 change: the slice lists no endpoint; delete it to have it created again for this family"
            ),
            Warning::Foreign { managed_by } => write!(
                f,
                "the slice exists and is managed by {managed_by:?}, not {MANAGED_BY:?}: left alone; delete it or \
                 choose another Service name"
            ),
        }
    }
}

/// Why nothing is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unchanged {
    /// The slice already says what the view asks.
    AlreadyRight,
    /// No slice and nothing to list: a Service without one has no
    /// endpoints, which is what the view asks.
    NothingToList,
    /// The slice was written from a newer view than this one.
    WrittenFromNewer {
        /// Its view version.
        version: u64,
    },
    /// Someone else manages a slice by this name.
    Foreign,
}

/// What to do with the slice.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Create it (there is none).
    Create(EndpointSlice),
    /// Replace it, at the `resourceVersion` read.
    Update(EndpointSlice),
    /// Write nothing.
    Nothing(Unchanged),
}

/// The decision for one view and one slice read.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The write.
    pub write: Write,
    /// What the operator should hear about, if anything.
    pub warning: Option<Warning>,
}

/// What `view` asks the slice to say, and what is wrong with the leader's
/// address, if anything.
pub fn says(view: &View) -> (Says, Option<Warning>) {
    let View::Held(lease) = view else { return (Says { leader: None, endpoint: None }, None) };
    let leader = Some((lease.holder.clone(), lease.token));
    let (endpoint, warning) = match &lease.address {
        None => (None, Some(Warning::NoAddress { leader: lease.holder.clone() })),
        Some(address) => match address.parse::<SocketAddr>() {
            Ok(endpoint) if special(endpoint.ip()) => {
                (None, Some(Warning::Unroutable { leader: lease.holder.clone(), address: endpoint }))
            }
            Ok(endpoint) => (Some(endpoint), None),
            Err(_) => (None, Some(Warning::NotIp { leader: lease.holder.clone(), address: address.clone() })),
        },
    };
    (Says { leader, endpoint }, warning)
}

/// The addresses the API server refuses in an endpoint (its
/// `ValidateNonSpecialIP`): unspecified, loopback, link-local, and
/// link-local multicast.
fn special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_unspecified() || v4.is_loopback() || v4.is_link_local() || v4.octets()[..3] == [224, 0, 0]
        }
        IpAddr::V6(v6) => {
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_unicast_link_local()
                || v6.segments()[0] & 0xff0f == 0xff02
                || v6.to_ipv4_mapped().is_some_and(|v4| special(IpAddr::V4(v4)))
        }
    }
}

fn address_type(endpoint: &SocketAddr) -> &'static str {
    if endpoint.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// The view version `slice` was written from (0 if it carries none).
pub fn written_from(slice: &EndpointSlice) -> u64 {
    annotation(slice, VERSION_ANNOTATION).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn annotation<'a>(slice: &'a EndpointSlice, key: &str) -> Option<&'a str> {
    slice.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

fn label<'a>(slice: &'a EndpointSlice, key: &str) -> Option<&'a str> {
    slice.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// Decides what to write to the slice of `spec`, in `namespace`, for
/// `view`, given the slice as read (`None`: there is none).
pub fn decide(spec: &LeaderService, namespace: &str, view: &View, current: Option<&EndpointSlice>) -> Plan {
    let (mut wanted, mut warning) = says(view);
    let Some(current) = current else {
        // Created only once there is someone to list, so that its
        // addressType (fixed for good) is the first leader's family.
        let write = match wanted.endpoint {
            None => Write::Nothing(Unchanged::NothingToList),
            Some(endpoint) => {
                Write::Create(render(spec, namespace, &wanted, address_type(&endpoint), view.version(), None))
            }
        };
        return Plan { write, warning };
    };
    if label(current, MANAGED_BY_LABEL) != Some(MANAGED_BY) {
        let managed_by = label(current, MANAGED_BY_LABEL).map(str::to_owned);
        return Plan { write: Write::Nothing(Unchanged::Foreign), warning: Some(Warning::Foreign { managed_by }) };
    }
    let version = written_from(current);
    if version > view.version() {
        return Plan { write: Write::Nothing(Unchanged::WrittenFromNewer { version }), warning };
    }
    if let Some(endpoint) = wanted.endpoint
        && address_type(&endpoint) != current.address_type
    {
        wanted.endpoint = None;
        warning = Some(Warning::Family { address: endpoint, address_type: current.address_type.clone() });
    }
    let desired = render(spec, namespace, &wanted, &current.address_type, view.version(), Some(current));
    let write = if content(&desired) == content(current) {
        Write::Nothing(Unchanged::AlreadyRight)
    } else {
        Write::Update(desired)
    };
    Plan { write, warning }
}

/// The slice for `says`, written from view `version`: over `current`
/// (keeping its `resourceVersion`, and the labels and annotations others
/// put on it), or new.
fn render(
    spec: &LeaderService,
    namespace: &str,
    says: &Says,
    address_type: &str,
    version: u64,
    current: Option<&EndpointSlice>,
) -> EndpointSlice {
    let meta = current.map(|c| c.metadata.clone()).unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.to_owned(), spec.service.clone());
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(ELECTION_ANNOTATION.to_owned(), spec.election.clone());
    annotations.insert(VERSION_ANNOTATION.to_owned(), version.to_string());
    match &says.leader {
        Some((leader, token)) => {
            annotations.insert(LEADER_ANNOTATION.to_owned(), leader.clone());
            annotations.insert(TOKEN_ANNOTATION.to_owned(), token.to_string());
        }
        None => {
            annotations.remove(LEADER_ANNOTATION);
            annotations.remove(TOKEN_ANNOTATION);
        }
    }
    // Every field the API server would default is set, so that a slice
    // read back compares equal to the one written.
    let (endpoints, ports) = match says.endpoint {
        None => (Vec::new(), None),
        Some(endpoint) => (
            vec![Endpoint {
                addresses: vec![endpoint.ip().to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                ..Endpoint::default()
            }],
            Some(vec![EndpointPort {
                name: Some(spec.port_name.clone().unwrap_or_default()),
                port: Some(i32::from(endpoint.port())),
                protocol: Some("TCP".to_owned()),
                app_protocol: None,
            }]),
        ),
    };
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(spec.slice_name()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            annotations: Some(annotations),
            resource_version: meta.resource_version,
            ..ObjectMeta::default()
        },
        address_type: address_type.to_owned(),
        endpoints,
        ports,
    }
}

/// What a slice says, as compared for "already right": what kube-proxy
/// reads and our labels and annotations, with the API server's defaults
/// filled in, and without the view version (a later view that asks the
/// same thing need not write).
fn content(slice: &EndpointSlice) -> impl PartialEq + use<> {
    let endpoints: Vec<(Vec<String>, bool)> = slice
        .endpoints
        .iter()
        .map(|e| (e.addresses.clone(), e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)))
        .collect();
    let ports: Vec<(String, Option<i32>, String)> = slice
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap_or_default(), p.port, p.protocol.clone().unwrap_or_else(|| "TCP".to_owned())))
        .collect();
    let ours: BTreeMap<&str, Option<String>> = [SERVICE_NAME_LABEL, MANAGED_BY_LABEL]
        .into_iter()
        .map(|k| (k, label(slice, k).map(str::to_owned)))
        .chain(
            [ELECTION_ANNOTATION, LEADER_ANNOTATION, TOKEN_ANNOTATION]
                .into_iter()
                .map(|k| (k, annotation(slice, k).map(str::to_owned))),
        )
        .collect();
    (slice.address_type.clone(), endpoints, ports, ours)
}
