//! How an elector on the Kubernetes store reaches the API server: one
//! client, built once, which the store (Leases) and the leader Services'
//! keepers (EndpointSlices) share, so both always talk to the same cluster
//! with the same credentials.

use std::path::Path;

/// The API server could not be configured or reached.
#[derive(Debug, thiserror::Error)]
#[error("kubernetes {0}")]
pub struct ClusterError(String);

/// A client for the cluster of `kubeconfig` if given, else of the usual
/// places (`$KUBECONFIG`, `~/.kube/config`, the pod's service account), and
/// the namespace it defaults to (the service account's, or the
/// kubeconfig context's).
pub async fn connect(kubeconfig: Option<&Path>) -> Result<(kube::Client, String), ClusterError> {
    let config = match kubeconfig {
        Some(path) => {
            let failed = |e: &dyn std::fmt::Display| ClusterError(format!("kubeconfig {}: {e}", path.display()));
            let file = kube::config::Kubeconfig::read_from(path).map_err(|e| failed(&e))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| failed(&e))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| ClusterError(format!("configuration (no service account and no usable kubeconfig): {e}")))?,
    };
    let namespace = config.default_namespace.clone();
    let client = kube::Client::try_from(config).map_err(|e| ClusterError(format!("client: {e}")))?;
    Ok((client, namespace))
}
