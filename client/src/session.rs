//! A session with the elector (`POST /v1/sessions`): one connection,
//! upgraded away from HTTP, that the elector keeps for as long as both ends
//! keep it open. Every lease claimed under it is released by the elector at
//! once when this end closes, which the kernel does when the process exits,
//! however it exits. So a holder that dies is replaced in milliseconds, not
//! at the end of its TTL.
//!
//! This end only reads (to see the elector close it) and never writes after
//! the upgrade: a frozen holder keeps the socket open and says nothing, and
//! its leases run out at their TTL, never earlier.
//!
//! A holder takes the end of its session, for any reason, as the loss of
//! every lease under it ([`ElectorSession::closed`]): it cannot tell an
//! elector that released them from one that restarted.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use hyper::Uri;
use mpsync_core::wire::{SESSION_HEADER, SESSION_PROTOCOL, validate_session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The longest answer head to a session request the client reads.
const MAX_HEAD: usize = 8 * 1024;

/// Why no session could be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// The elector does not open sessions for this client (not on
    /// loopback, an elector without sessions): hold leases without one.
    Refused(String),
    /// Not now (unreachable, too many sessions, no answer in time).
    Unavailable(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Refused(why) | OpenError::Unavailable(why) => f.write_str(why),
        }
    }
}

/// An open session. Dropping it closes this end: the elector then releases
/// every lease still under it.
pub struct ElectorSession {
    id: String,
    ended: watch::Receiver<bool>,
    /// A duplicate of the socket, for a process that must keep the session
    /// open for as long as it lives (`mpsync lock`'s watchdog).
    socket: OwnedFd,
    reader: JoinHandle<()>,
}

impl std::fmt::Debug for ElectorSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElectorSession").field("id", &self.id).field("open", &self.is_open()).finish()
    }
}

impl Drop for ElectorSession {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl ElectorSession {
    /// Opens a session with the elector at `base` (`http://127.0.0.1:13131`),
    /// waiting at most `timeout` for the upgrade.
    pub async fn open(base: &str, timeout: Duration) -> Result<Arc<ElectorSession>, OpenError> {
        let uri: Uri = base.parse().map_err(|e| OpenError::Refused(format!("elector URL {base:?}: {e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(OpenError::Refused(format!("sessions need a plain http:// elector URL, not {base}")));
        }
        let Some(authority) = uri.authority().cloned() else {
            return Err(OpenError::Refused(format!("elector URL {base:?} names no host")));
        };
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = authority.port_u16().unwrap_or(80);
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            OpenError::Unavailable(format!("opening a session with the elector at {base}: {what}: {e}"))
        };
        let opening = async {
            let mut stream = TcpStream::connect((host.as_str(), port)).await.map_err(|e| unavailable("connect", &e))?;
            stream.set_nodelay(true).map_err(|e| unavailable("socket", &e))?;
            let request = format!(
                "POST /v1/sessions HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: \
                 {SESSION_PROTOCOL}\r\nContent-Length: 0\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await.map_err(|e| unavailable("send", &e))?;
            let head = read_head(&mut stream).await.map_err(|e| unavailable("answer", &e))?;
            Ok::<_, OpenError>((stream, head))
        };
        let (stream, head) = match tokio::time::timeout(timeout, opening).await {
            Ok(opened) => opened?,
            Err(_) => return Err(unavailable("answer", &format!("none within {timeout:?}"))),
        };
        let id = upgraded(&head).map_err(|(status, why)| {
            let said = format!("the elector at {base} opened no session ({why})");
            // Overloaded or failing: try again later. Anything else says
            // this elector will not open one for this client.
            if status == 429 || status >= 500 { OpenError::Unavailable(said) } else { OpenError::Refused(said) }
        })?;
        let socket = stream.as_fd().try_clone_to_owned().map_err(|e| unavailable("socket", &e))?;
        let (tx, ended) = watch::channel(false);
        let reader = tokio::spawn(watch_close(stream, tx));
        Ok(Arc::new(ElectorSession { id, ended, socket, reader }))
    }

    /// The session's id, sent with every claim made under it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the connection is still open as far as this end knows.
    pub fn is_open(&self) -> bool {
        !*self.ended.borrow()
    }

    /// Resolves once the session has ended (the elector closed it, or the
    /// connection failed).
    pub async fn closed(&self) {
        let mut ended = self.ended.clone();
        let _ = ended.wait_for(|ended| *ended).await;
    }

    /// The socket, to hand to a process that must keep the session open
    /// for as long as it lives: the elector sees the close only once every
    /// copy of it is closed.
    pub fn socket(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// Reads until the connection closes or fails; then says so. Bytes the
/// elector sends are read and ignored.
async fn watch_close(mut stream: TcpStream, ended: watch::Sender<bool>) {
    let mut buf = [0; 512];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    tracing::debug!("session with the elector ended");
    ended.send_replace(true);
}

/// Reads the answer's head, up to the blank line, not a byte further: the
/// upgraded connection starts right after it.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return Err(std::io::Error::other("the answer's head is too long"));
        }
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before answering"));
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).map_err(|_| std::io::Error::other("the answer's head is not text"))
}

/// The session id of a `101` answer; otherwise its status and why.
fn upgraded(head: &str) -> Result<String, (u16, String)> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok()).unwrap_or(0);
    if status != 101 {
        return Err((status, format!("answered {}", status_line.trim())));
    }
    let id = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case(SESSION_HEADER))
        .map(|(_, value)| value.trim().to_owned())
        .ok_or_else(|| (status, format!("a 101 without the {SESSION_HEADER} header")))?;
    validate_session(&id).map_err(|e| (status, e.message))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_101_carries_the_id_and_anything_else_says_why() {
        let id = "0123456789abcdef0123456789abcdef";
        let head =
            format!("HTTP/1.1 101 Switching Protocols\r\nupgrade: mpsync-session\r\nMpsync-Session: {id}\r\n\r\n");
        assert_eq!(upgraded(&head), Ok(id.to_owned()));
        let forbidden = "HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\n";
        assert_eq!(upgraded(forbidden), Err((403, "answered HTTP/1.1 403 Forbidden".into())));
        assert!(matches!(upgraded("HTTP/1.1 101 Switching Protocols\r\n\r\n"), Err((101, _))));
        assert!(matches!(upgraded("HTTP/1.1 101 OK\r\nmpsync-session: nope\r\n\r\n"), Err((101, _))));
    }
}
