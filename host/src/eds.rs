//! `mpsync leader --watch --envoy-eds FILE --cluster NAME`: the leader of an
//! election as an Envoy endpoint assignment, for leader-only routing with
//! no filter at all.
//!
//! Envoy loads a cluster's endpoints from a file it watches
//! (`eds_config.path_config_source` with `watched_directory`). On every
//! change of leader the file is rewritten with a `ClusterLoadAssignment`
//! holding just the leader (none while there is no leader, so Envoy answers
//! 503 at once), with the leader's id and fencing token as endpoint metadata
//! (`metaparticle.sync`: `leader_id`, `leader_token`), which a route can
//! stamp on requests with `%UPSTREAM_METADATA(metaparticle.sync:leader_token)%`
//! (`envoy/examples/gateway-eds.yaml`). Each write goes to a temporary file in the same
//! folder that is then renamed over FILE: Envoy never reads half a file.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use mpsync_core::route::Leader;
use serde_json::json;

/// The endpoint-metadata namespace of the leader's id and token.
pub const METADATA_NAMESPACE: &str = "metaparticle.sync";

/// The discovery response for `cluster` with `leader` as its only endpoint
/// (no endpoint without a leader, or when the leader advertised no
/// `ip:port`). `version` is the elector's view version.
pub fn assignment(cluster: &str, leader: Option<&Leader>, version: u64) -> serde_json::Value {
    let endpoint = leader.and_then(|l| {
        let address: std::net::SocketAddr = l.address.as_deref()?.parse().ok()?;
        Some(json!({
            "endpoint": { "address": { "socket_address": {
                "address": address.ip().to_string(), "port_value": address.port() } } },
            "metadata": { "filter_metadata": { METADATA_NAMESPACE: {
                "leader_id": l.id, "leader_token": l.token.to_string() } } },
        }))
    });
    let endpoints = match endpoint {
        Some(e) => json!([{ "lb_endpoints": [e] }]),
        None => json!([]),
    };
    json!({
        "version_info": version.to_string(),
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            "cluster_name": cluster,
            "endpoints": endpoints,
        }],
    })
}

/// Writes endpoint assignments to one file, atomically.
pub struct EdsFile {
    path: PathBuf,
    temp: PathBuf,
    cluster: String,
}

impl EdsFile {
    /// The file `path` (`.json` or `.yaml`: Envoy reads either by its
    /// extension; the contents are JSON, which is also YAML) for `cluster`.
    pub fn new(path: &Path, cluster: &str) -> anyhow::Result<Self> {
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
        if !matches!(extension, "json" | "yaml" | "yml") {
            return Err(anyhow!(
                "--envoy-eds {}: Envoy picks the format by the extension; name it .json (or .yaml)",
                path.display()
            ));
        }
        let name = path.file_name().ok_or_else(|| anyhow!("--envoy-eds {} is not a file name", path.display()))?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{}.tmp", std::process::id()));
        let temp = path.with_file_name(temp_name);
        Ok(EdsFile { path: path.to_owned(), temp, cluster: cluster.to_owned() })
    }

    /// Replaces the file with the assignment for `leader`.
    pub fn write(&self, leader: Option<&Leader>, version: u64) -> anyhow::Result<()> {
        let body = serde_json::to_vec_pretty(&assignment(&self.cluster, leader, version))?;
        std::fs::write(&self.temp, body).with_context(|| format!("writing {}", self.temp.display()))?;
        std::fs::rename(&self.temp, &self.path)
            .with_context(|| format!("renaming {} to {}", self.temp.display(), self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(address: Option<&str>) -> Leader {
        Leader { id: "replica-1".into(), address: address.map(String::from), token: 7 }
    }

    #[test]
    fn a_leader_is_the_only_endpoint_with_its_id_and_token() {
        let doc = assignment("web", Some(&leader(Some("10.0.0.7:8080"))), 42);
        assert_eq!(doc["version_info"], "42");
        let resource = &doc["resources"][0];
        assert_eq!(resource["cluster_name"], "web");
        let endpoints = resource["endpoints"][0]["lb_endpoints"].as_array().unwrap();
        assert_eq!(endpoints.len(), 1);
        let socket = &endpoints[0]["endpoint"]["address"]["socket_address"];
        assert_eq!((socket["address"].as_str(), socket["port_value"].as_u64()), (Some("10.0.0.7"), Some(8080)));
        let metadata = &endpoints[0]["metadata"]["filter_metadata"][METADATA_NAMESPACE];
        assert_eq!((metadata["leader_id"].as_str(), metadata["leader_token"].as_str()), (Some("replica-1"), Some("7")));
    }

    #[test]
    fn no_leader_or_no_address_is_no_endpoint() {
        for doc in [assignment("web", None, 3), assignment("web", Some(&leader(None)), 3)] {
            assert_eq!(doc["resources"][0]["endpoints"], json!([]));
        }
        let ipv6 = assignment("web", Some(&leader(Some("[fd00::7]:443"))), 3);
        let socket = &ipv6["resources"][0]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
        assert_eq!(socket["address"], "fd00::7");
    }

    #[test]
    fn the_file_is_replaced_whole_and_needs_a_known_extension() {
        let dir = std::env::temp_dir().join(format!("mpsync-eds-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(EdsFile::new(&dir.join("eds.txt"), "web").is_err());
        let file = EdsFile::new(&dir.join("eds.json"), "web").unwrap();
        file.write(Some(&leader(Some("127.0.0.1:1"))), 1).unwrap();
        file.write(None, 2).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("eds.json")).unwrap()).unwrap();
        assert_eq!(doc["version_info"], "2");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["eds.json"], "no temporary file left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
