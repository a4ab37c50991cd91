//! Leadership transfer (`POST /v1/elections/{name}/transfer`): the rules
//! are `mpsync_core::transfer`'s; this writes what they decide.

use mpsync_core::transfer::{TransferOutcome, decide_transfer};
use mpsync_core::wire::{ConflictView, LeaseView, TransferRequest, TransferView};

use super::{Applied, Service, ServiceError, Step, View, conflict_view, ms, view_version};
use crate::store::Key;

/// The answer to a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferResult {
    /// The leader is asked (or was already, for this very transfer): its
    /// view, with the `transfer`.
    Asked(LeaseView),
    /// Nobody leads (`not_held`), or `from` does not, or `to` does already
    /// (`held`, naming the leader).
    Refused(ConflictView),
}

impl Service {
    /// Asks the leader of the election `key` to hand over to `request.to`
    /// (to anyone else when absent), only if it is `request.from` when
    /// given. The leader's client learns it from its next renewal and
    /// releases; the election is then reserved for the candidate for one
    /// TTL (see `mpsync_core::transfer`).
    pub async fn transfer(&self, key: &Key, request: &TransferRequest) -> Result<TransferResult, ServiceError> {
        self.check_name(key)?;
        let (from, to) = (request.from.as_deref(), request.to.as_deref());
        let applied = self
            .apply(key, |current, now| match decide_transfer(current, from, to, now) {
                TransferOutcome::Asked { record } => Step::Write(record, ()),
                TransferOutcome::Pending => Step::Answer(None),
                TransferOutcome::Refused(conflict) => {
                    Step::Answer(Some(conflict_view(conflict, current.is_some_and(|c| c.is_expired(now)))))
                }
            })
            .await?;
        match applied {
            Applied::Answered(Some(conflict)) => Ok(TransferResult::Refused(conflict)),
            Applied::Answered(None) => match self.read(key).await? {
                View::Held(lease) => Ok(TransferResult::Asked(lease)),
                // Handed over between the two reads: nobody leads to ask.
                other => Ok(TransferResult::Refused(ConflictView {
                    holder: None,
                    expires_in_ms: 0,
                    version: other.version(),
                    reason: mpsync_core::ConflictReason::NotHeld,
                })),
            },
            Applied::Written { record, version, now, .. } => {
                let transfer = record.transfer.as_ref().map(TransferView::from);
                tracing::info!(
                    election = key.name,
                    from = transfer.as_ref().map(|t| t.from.as_str()),
                    to = transfer.as_ref().and_then(|t| t.to.as_deref()),
                    "leadership transfer asked"
                );
                // The judge dated this version at `now` (see `Service::apply`).
                let expires_in = (now + record.ttl()).saturating_sub(self.now());
                Ok(TransferResult::Asked(LeaseView {
                    name: key.name.clone(),
                    holder: record.holder.clone().unwrap_or_default(),
                    token: record.token,
                    ttl_ms: record.ttl_ms,
                    version: view_version(version, false),
                    expires_in_ms: ms(expires_in),
                    address: record.address.clone(),
                    waiting: 0,
                    shared: false,
                    permit: None,
                    transfer,
                }))
            }
        }
    }
}
