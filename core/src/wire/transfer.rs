//! The JSON types of a leadership transfer
//! (`POST /v1/elections/{name}/transfer`, and the `transfer` of a view).

use serde::{Deserialize, Serialize};

use super::{InvalidField, validate_holder};

/// A hand-over asked of the leader, as views show it while it is pending:
/// on the leader's own renewals (its client steps down, or tells the
/// application), on reads, listings and watches, and for one TTL after the
/// leader released, while the election is reserved for `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferView {
    /// The leader asked to step down.
    pub from: String,
    /// The candidate it should hand over to; absent: anyone but `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// Body of `POST /v1/elections/{name}/transfer`: ask the leader to hand
/// over.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The candidate to hand over to; absent: anyone but the leader (it
    /// cannot win the election back while the reservation lasts).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::wire::present")]
    pub to: Option<String>,
    /// Ask only if this candidate leads now (a `preStop` hook names its
    /// own pod): otherwise 409 and nothing is asked.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::wire::present")]
    pub from: Option<String>,
}

impl TransferRequest {
    /// Checks `to` and `from` as holder identities.
    pub fn validate(&self) -> Result<(), InvalidField> {
        for (field, value) in [("to", &self.to), ("from", &self.from)] {
            if let Some(id) = value {
                validate_holder(id)
                    .map_err(|e| InvalidField { field, message: e.message.replacen("holder", field, 1) })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_request_checks_its_ids_and_refuses_unknown_fields() {
        let body: TransferRequest = serde_json::from_str(r#"{"to":"b","from":"a"}"#).unwrap();
        assert_eq!(body.validate(), Ok(()));
        assert_eq!(serde_json::from_str::<TransferRequest>("{}").unwrap(), TransferRequest::default());
        let empty = TransferRequest { to: Some(String::new()), from: None };
        assert_eq!(empty.validate().unwrap_err().field, "to");
        assert!(empty.validate().unwrap_err().message.starts_with("to "));
        assert!(serde_json::from_str::<TransferRequest>(r#"{"too":"b"}"#).is_err());
        // Absent, not null: the schema has no null there.
        assert!(serde_json::from_str::<TransferRequest>(r#"{"to":null}"#).is_err());
        assert!(serde_json::from_str::<TransferRequest>(r#"{"from":null}"#).is_err());
    }
}
