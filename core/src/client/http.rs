//! The protocol's requests, and the decoders of the elector's answers.

use core::time::Duration;

use thiserror::Error;

use super::POLL_GRACE;
use super::error::{Error, Leader};
use crate::wire::{
    AcquireRequest, ConflictView, ErrorBody, ErrorCode, Kind, LeaseKey, LeaseView, ListView, QueuedView,
    ReleaseRequest, TransferRequest,
};

/// An HTTP method the protocol uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Read or long-poll.
    Get,
    /// Acquire or renew.
    Put,
    /// Release.
    Delete,
    /// A watch over many names.
    Post,
}

impl Method {
    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Post => "POST",
        }
    }
}

/// One request to send to the elector. Bodies are JSON. `Debug` shows the
/// body's length, not its bytes: a claim or release carries the holder's
/// key.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method.
    pub method: Method,
    /// Path and query, from `/v1/…`.
    pub path: String,
    /// The JSON body, if any.
    pub body: Option<Vec<u8>>,
    /// Give up on the answer after this long.
    pub timeout: Duration,
}

impl core::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("body_bytes", &self.body.as_ref().map(Vec::len))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The path of a record.
pub fn path(kind: Kind, name: &str) -> String {
    format!("/v1/{}/{name}", kind.plural())
}

/// A plain read (`wait` = `None`), or a long-poll for a version other than
/// `wait.0`, answered after at most `wait.1`.
pub fn read_request(kind: Kind, name: &str, wait: Option<(u64, Duration)>, timeout: Duration) -> HttpRequest {
    let (path, timeout) = match wait {
        Some((version, slice)) => {
            (format!("{}?wait={version}&timeout_ms={}", path(kind, name), slice.as_millis()), slice + POLL_GRACE)
        }
        None => (path(kind, name), timeout),
    };
    HttpRequest { method: Method::Get, path, body: None, timeout }
}

/// A page of the listing of every lock or election (`GET /v1/locks`):
/// `limit` records from `cursor` (the `next` of the previous page) on.
pub fn list_request(kind: Kind, limit: usize, cursor: Option<&str>, timeout: Duration) -> HttpRequest {
    let mut path = format!("/v1/{}?limit={limit}", kind.plural());
    if let Some(cursor) = cursor {
        path.push_str("&cursor=");
        for byte in cursor.bytes() {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                path.push(char::from(byte));
            } else {
                path.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    HttpRequest { method: Method::Get, path, body: None, timeout }
}

/// Decodes the answer to a listing.
pub fn decode_list(status: u16, body: &[u8]) -> Result<ListView, AnswerError> {
    match status {
        200 => json(status, body),
        _ => Err(unexpected(status, body)),
    }
}

/// `GET /v1/history`: up to `limit` changes of holder after seq `after`,
/// answered at once.
pub fn history_request(after: u64, limit: usize, timeout: Duration) -> HttpRequest {
    HttpRequest { method: Method::Get, path: format!("/v1/history?after={after}&limit={limit}"), body: None, timeout }
}

/// `GET /v1/{locks,elections}/{name}/history`: one name's last changes.
pub fn name_history_request(kind: Kind, name: &str, timeout: Duration) -> HttpRequest {
    HttpRequest { method: Method::Get, path: format!("{}/history", path(kind, name)), body: None, timeout }
}

/// Decodes the answer to either history request (a
/// [`crate::history::Page`] or a [`crate::history::NameHistory`]).
pub fn decode_history<T: serde::de::DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, AnswerError> {
    match status {
        200 => json(status, body),
        _ => Err(unexpected(status, body)),
    }
}

fn json_body(value: &impl serde::Serialize) -> Option<Vec<u8>> {
    // The wire types hold strings and integers only; encoding cannot fail.
    serde_json::to_vec(value).ok()
}

/// A `PUT`: acquire (no token) or renew.
pub fn claim_request(kind: Kind, name: &str, body: &AcquireRequest, timeout: Duration) -> HttpRequest {
    HttpRequest { method: Method::Put, path: path(kind, name), body: json_body(body), timeout }
}

/// A `DELETE` of the lease `token` of `holder`, presenting the `key` it
/// was acquired with.
pub fn release_request(
    kind: Kind,
    name: &str,
    holder: &str,
    token: u64,
    key: Option<&LeaseKey>,
    timeout: Duration,
) -> HttpRequest {
    let body = ReleaseRequest { holder: holder.to_owned(), token, ticket: None, key: key.cloned() };
    HttpRequest { method: Method::Delete, path: path(kind, name), body: json_body(&body), timeout }
}

/// A `DELETE` that gives up the place `ticket` of `holder` in a lock's
/// line, presenting the `key` it was taken with.
pub fn leave_request(name: &str, holder: &str, ticket: u64, key: Option<&LeaseKey>, timeout: Duration) -> HttpRequest {
    let body = ReleaseRequest { holder: holder.to_owned(), token: 0, ticket: Some(ticket), key: key.cloned() };
    HttpRequest { method: Method::Delete, path: path(Kind::Lock, name), body: json_body(&body), timeout }
}

/// An answer the protocol does not expect.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AnswerError {
    /// A status this request does not expect.
    #[error("answered {status}: {body}")]
    Status {
        /// The status.
        status: u16,
        /// The body, as text.
        body: String,
    },
    /// The expected status with a body that is not the documented JSON.
    #[error("answered {status} with a body that is not the documented JSON: {reason}")]
    Decode {
        /// The status.
        status: u16,
        /// What did not parse.
        reason: String,
    },
}

pub(super) fn unexpected(status: u16, body: &[u8]) -> AnswerError {
    let mut text = String::from_utf8_lossy(body).into_owned();
    if text.len() > 200 {
        let cut = (0..=200).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    AnswerError::Status { status, body: text }
}

pub(super) fn json<T: serde::de::DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, AnswerError> {
    serde_json::from_slice(body).map_err(|e| AnswerError::Decode { status, reason: e.to_string() })
}

/// The request itself is wrong, so sending it again cannot help: the
/// elector refused the name (`invalid_name`, which also covers a valid
/// name the store cannot keep) or an option (any other 400, such as a TTL
/// above the store's maximum, and 413). `None` for every other answer.
pub fn rejection(status: u16, body: &[u8]) -> Option<Error> {
    let said = || match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => (Some(e.error), e.message),
        Err(_) => (None, String::from_utf8_lossy(body).chars().take(200).collect()),
    };
    match status {
        400 => match said() {
            (Some(ErrorCode::InvalidName), message) => Some(Error::InvalidName(message)),
            (_, message) => Some(Error::InvalidOption(message)),
        },
        413 => Some(Error::InvalidOption(said().1)),
        _ => None,
    }
}

/// The answer to an acquire or renew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// 200.
    Granted(LeaseView),
    /// 409.
    Refused(ConflictView),
    /// 202: waiting in line (a `PUT` with `"queue": true`).
    Queued(QueuedView),
}

/// Decodes the answer to a `PUT`.
pub fn decode_claim(status: u16, body: &[u8]) -> Result<Claimed, AnswerError> {
    match status {
        200 => json(status, body).map(Claimed::Granted),
        202 => json(status, body).map(Claimed::Queued),
        409 => json(status, body).map(Claimed::Refused),
        _ => Err(unexpected(status, body)),
    }
}

/// The answer to a read or long-poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// 200: held.
    Held(LeaseView),
    /// 404: free or absent, at this version (long-poll on it).
    Free {
        /// The record's version; a name without a record reads at a
        /// version no lower than any it had.
        version: u64,
    },
}

impl Read {
    /// The version to long-poll on next.
    pub fn version(&self) -> u64 {
        match self {
            Read::Held(view) => view.version,
            Read::Free { version } => *version,
        }
    }

    /// The leader this read shows (elections).
    pub fn leader(&self) -> Option<Leader> {
        match self {
            Read::Held(view) => Some(Leader::from(view)),
            Read::Free { .. } => None,
        }
    }
}

/// Decodes the answer to a `GET` (plain or long-poll).
pub fn decode_read(status: u16, body: &[u8]) -> Result<Read, AnswerError> {
    match status {
        200 => json(status, body).map(Read::Held),
        404 => json::<ErrorBody>(status, body).map(|e| Read::Free { version: e.version.unwrap_or(0) }),
        _ => Err(unexpected(status, body)),
    }
}

/// A `POST /v1/elections/{name}/transfer`: asks the leader to hand over.
pub fn transfer_request(name: &str, body: &TransferRequest, timeout: Duration) -> HttpRequest {
    let path = format!("{}/transfer", path(Kind::Election, name));
    HttpRequest { method: Method::Post, path, body: json_body(body), timeout }
}

/// Decodes the answer to a transfer: the leader asked (200, its view with
/// the `transfer`), or why not (409: `not_held` when nobody leads, `held`
/// naming the leader when `from` does not lead or `to` leads already).
pub fn decode_transfer(status: u16, body: &[u8]) -> Result<Result<LeaseView, ConflictView>, AnswerError> {
    match status {
        200 => json(status, body).map(Ok),
        409 => json(status, body).map(Err),
        _ => Err(unexpected(status, body)),
    }
}

/// Decodes the answer to a `DELETE`: `true` when released, `false` when the
/// elector says the caller does not hold it (409) or there is no record.
pub fn decode_release(status: u16, body: &[u8]) -> Result<bool, AnswerError> {
    match status {
        204 => Ok(true),
        409 | 404 => Ok(false),
        _ => Err(unexpected(status, body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_decode_as_documented() {
        assert_eq!(
            decode_read(404, br#"{"error":"not_found","message":"free","version":12}"#),
            Ok(Read::Free { version: 12 })
        );
        assert!(matches!(decode_read(404, b"<html>"), Err(AnswerError::Decode { status: 404, .. })));
        assert!(matches!(decode_read(500, b"boom"), Err(AnswerError::Status { status: 500, .. })));
        assert_eq!(decode_release(204, b""), Ok(true));
        assert_eq!(decode_release(409, b""), Ok(false));
        let long = "x".repeat(1000);
        let Err(AnswerError::Status { body, .. }) = decode_claim(502, long.as_bytes()) else { panic!() };
        assert!(body.len() < 210);
    }

    #[test]
    fn a_refused_name_or_option_is_permanent() {
        let name = br#"{"error":"invalid_name","message":"too long for the kubernetes store","field":"name"}"#;
        assert_eq!(rejection(400, name), Some(Error::InvalidName("too long for the kubernetes store".into())));
        let ttl = br#"{"error":"invalid_field","message":"ttl_ms above 3600000","field":"ttl_ms"}"#;
        assert_eq!(rejection(400, ttl), Some(Error::InvalidOption("ttl_ms above 3600000".into())));
        assert_eq!(rejection(400, b"not json"), Some(Error::InvalidOption("not json".into())));
        assert!(matches!(rejection(413, b"{}"), Some(Error::InvalidOption(_))));
        for status in [200, 404, 409, 429, 500, 503] {
            assert_eq!(rejection(status, name), None, "{status}");
        }
    }
}
