//! The filter's counters in Envoy's stats (`wasmcustom.leader_filter.*`).

use proxy_wasm::hostcalls;
use proxy_wasm::types::{MetricType, Status};

/// The ids of the filter's counters, defined once per worker.
#[derive(Clone, Copy)]
pub(crate) struct Metrics {
    pub(crate) routed: u32,
    pub(crate) held: u32,
    pub(crate) released_after_hold: u32,
    pub(crate) no_leader: u32,
    pub(crate) rejected_address: u32,
    pub(crate) leader_changes: u32,
    pub(crate) too_many_elections: u32,
}

impl Metrics {
    pub(crate) fn define() -> Result<Metrics, Status> {
        let m = |name: &str| hostcalls::define_metric(MetricType::Counter, &format!("leader_filter.{name}"));
        Ok(Metrics {
            routed: m("routed")?,
            held: m("held")?,
            released_after_hold: m("released_after_hold")?,
            no_leader: m("no_leader")?,
            rejected_address: m("rejected_address")?,
            leader_changes: m("leader_changes")?,
            too_many_elections: m("too_many_elections")?,
        })
    }
}

pub(crate) fn bump(metric: u32) {
    let _ = hostcalls::increment_metric(metric, 1);
}
