//! A leadership transfer on a Lease: `spec.preferredHolder`, the field
//! client-go's coordinated leader election (KEP-4355) reads, so a transfer
//! asked through the elector and a preferred holder set by anyone else
//! (`kubectl`, a coordinator) mean the same.
//!
//! - `spec.preferredHolder` is the candidate asked to take over, with
//!   `spec.strategy` [`STRATEGY`] beside it (the API server accepts a
//!   preferred holder only with a strategy; a custom one, prefixed, tells
//!   Kubernetes' own coordinator this Lease is not its to run). The
//!   [`TO_ANNOTATION`] repeats it, because an API server with the
//!   `CoordinatedLeaderElection` gate off drops both fields silently.
//! - The [`FROM_ANNOTATION`] names the leader asked: it is what survives
//!   its release, as the reservation, and what a transfer to anyone else
//!   (no preferred holder) is.
//! - A preferred holder that is not the holder reads as a transfer from
//!   the holder to it, whoever set it; on a free Lease, as a reservation
//!   for it. Elections only: a lock's Lease reads as having none.
//!
//! The elector's writes carry what the record says: a strategy someone
//! else set is replaced with [`STRATEGY`] while a transfer is pending, and
//! dropped once it is done.

use std::collections::BTreeMap;

use mpsync_core::Transfer;

/// Annotation naming the leader a transfer was asked of.
pub const FROM_ANNOTATION: &str = "sync.metaparticle.io/transfer-from";
/// Annotation naming the candidate, as `spec.preferredHolder` does.
pub const TO_ANNOTATION: &str = "sync.metaparticle.io/transfer-to";
/// Annotation with the version of the leader's last own write when the
/// transfer was asked ([`Transfer::over`]): its lease is dated by it.
pub const OVER_ANNOTATION: &str = "sync.metaparticle.io/transfer-over";
/// The `spec.strategy` written beside a preferred holder.
pub const STRATEGY: &str = "sync.metaparticle.io/transfer";

/// The transfer the Lease `lease_name` with holder `holder`, preferred
/// holder `preferred`, strategy `strategy` and `annotations` reads as.
pub(super) fn decode(
    lease_name: &str,
    holder: Option<&str>,
    preferred: Option<&str>,
    strategy: Option<&str>,
    annotations: &BTreeMap<String, String>,
) -> Option<Transfer> {
    if !lease_name.starts_with("election.") {
        return None;
    }
    let preferred = preferred.filter(|p| !p.is_empty());
    let named = annotations.get(TO_ANNOTATION).map(String::as_str);
    // The annotation stands in for `preferredHolder` only on a server that
    // drops the field, which drops the strategy too: a strategy still there
    // without a preferred holder means someone withdrew the transfer.
    if named.is_some() && preferred.is_none() && strategy.is_some() {
        return None;
    }
    let from = annotations.get(FROM_ANNOTATION).map(String::as_str);
    let to = preferred.or_else(|| from.and(named)).map(str::to_owned);
    let over = annotations.get(OVER_ANNOTATION).and_then(|v| v.parse().ok());
    match holder.filter(|h| !h.is_empty()) {
        // The preferred holder leads already: nothing to do.
        Some(holder) if to.as_deref() == Some(holder) => None,
        Some(holder) if to.is_some() || from == Some(holder) => {
            // Set by someone else (no annotation of ours): dated by the
            // version it was read at, as any write by someone else is.
            let over = over.filter(|_| from == Some(holder));
            Some(Transfer { from: holder.to_owned(), to, over })
        }
        // An annotation left from another holder's time.
        Some(_) => None,
        // Released while a transfer was pending (or a preferred holder set
        // on a free Lease): reserved.
        None if from.is_some() || to.is_some() => {
            Some(Transfer { from: from.unwrap_or_default().to_owned(), to, over: None })
        }
        None => None,
    }
}

/// Writes `transfer` into `annotations`; returns `spec.preferredHolder` and
/// `spec.strategy`.
pub(super) fn encode(
    transfer: Option<&Transfer>,
    annotations: &mut BTreeMap<String, String>,
) -> (Option<String>, Option<String>) {
    let Some(transfer) = transfer else { return (None, None) };
    annotations.insert(FROM_ANNOTATION.to_owned(), transfer.from.clone());
    if let Some(over) = transfer.over {
        annotations.insert(OVER_ANNOTATION.to_owned(), over.to_string());
    }
    if let Some(to) = &transfer.to {
        annotations.insert(TO_ANNOTATION.to_owned(), to.clone());
    }
    (transfer.to.clone(), transfer.to.as_ref().map(|_| STRATEGY.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(holder: Option<&str>, preferred: Option<&str>, from: Option<&str>) -> Option<Transfer> {
        let annotations = from.map(|f| (FROM_ANNOTATION.to_owned(), f.to_owned())).into_iter().collect();
        decode("election.web", holder, preferred, preferred.map(|_| STRATEGY), &annotations)
    }

    fn transfer(from: &str, to: Option<&str>) -> Option<Transfer> {
        Some(Transfer { from: from.into(), to: to.map(str::to_owned), over: None })
    }

    #[test]
    fn what_we_write_reads_back() {
        let asked = |from: &str, to: Option<&str>| Some(Transfer { over: Some(41), ..transfer(from, to)? });
        for t in [asked("a", Some("b")), asked("a", None), None] {
            let mut annotations = BTreeMap::new();
            let (preferred, strategy) = encode(t.as_ref(), &mut annotations);
            assert_eq!(strategy.is_some(), preferred.is_some());
            let (preferred, strategy) = (preferred.as_deref(), strategy.as_deref());
            let holder = t.as_ref().map(|t| t.from.as_str());
            assert_eq!(decode("election.web", holder, preferred, strategy, &annotations), t, "held");
            // Released: a reservation, dated by its release.
            let reserved = t.clone().map(|t| Transfer { over: None, ..t });
            assert_eq!(decode("election.web", None, preferred, strategy, &annotations), reserved, "reserved");
            // A server with the gate off drops the spec fields: the
            // annotations still tell.
            assert_eq!(decode("election.web", holder, None, None, &annotations), t, "gate off");
            // Someone withdrew the preferred holder, leaving our strategy.
            if preferred.is_some() {
                assert_eq!(decode("election.web", holder, None, strategy, &annotations), None, "withdrawn");
            }
        }
    }

    #[test]
    fn a_preferred_holder_set_by_anyone_else_is_a_transfer_from_the_holder() {
        assert_eq!(read(Some("a"), Some("b"), None), transfer("a", Some("b")));
        assert_eq!(read(Some("a"), Some("b"), Some("old")), transfer("a", Some("b")));
        assert_eq!(read(Some("b"), Some("b"), None), None, "it leads already");
        assert_eq!(read(Some("a"), None, Some("old")), None, "another holder's leftover");
        assert_eq!(read(None, Some("b"), None), transfer("", Some("b")), "a free Lease: reserved for it");
        assert_eq!(read(None, None, None), None);
        let lock = decode("lock.web", Some("a"), Some("b"), Some(STRATEGY), &BTreeMap::new());
        assert_eq!(lock, None, "elections only");
    }
}
