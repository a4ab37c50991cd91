//! `mpsync elect`'s health check: an HTTP GET or a TCP connect every
//! period, and the verdict after `threshold` failures in a row.

use std::time::Duration;

use anyhow::{Context, anyhow};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// What to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `GET` of a plain `http://` URL: healthy on a 2xx or 3xx status.
    Http {
        /// `HOST:PORT` to connect to.
        authority: String,
        /// The request target (path and query).
        target: String,
    },
    /// A TCP connect to `HOST:PORT`: healthy when it is accepted.
    Tcp(String),
}

/// A health check: the probe, how often, and how many failures in a row
/// make the server unhealthy.
#[derive(Debug, Clone)]
pub struct Check {
    /// What to probe.
    pub probe: Probe,
    /// Between probes; also each probe's timeout.
    pub period: Duration,
    /// Failures in a row that make the server unhealthy.
    pub threshold: u32,
}

/// `--health-http URL`: only `http://HOST[:PORT][/PATH]` (a health
/// endpoint is local and plain; TLS would only add a way to fail).
pub fn parse_http(url: &str) -> Result<Probe, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
    let (authority, target) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("{url:?} has no HOST[:PORT] (and no user info)"));
    }
    let has_port = authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok());
    let authority = if has_port { authority.to_owned() } else { format!("{authority}:80") };
    Ok(Probe::Http { authority, target: target.to_owned() })
}

/// `--health-tcp HOST:PORT`.
pub fn parse_tcp(addr: &str) -> Result<Probe, String> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(Probe::Tcp(addr.to_owned())),
        _ => Err(format!("{addr:?} is not HOST:PORT")),
    }
}

impl Probe {
    /// One probe; `Err` says why it failed.
    async fn once(&self) -> anyhow::Result<()> {
        match self {
            Probe::Tcp(addr) => {
                TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
                Ok(())
            }
            Probe::Http { authority, target } => {
                let mut stream =
                    TcpStream::connect(authority).await.with_context(|| format!("connecting to {authority}"))?;
                let request = format!(
                    "GET {target} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: mpsync-elect\r\nConnection: close\r\n\r\n"
                );
                stream.write_all(request.as_bytes()).await?;
                // Only the status line matters: read until its end.
                let mut head = Vec::new();
                let mut buf = [0; 256];
                while !head.contains(&b'\n') && head.len() < 4096 {
                    let n = stream.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                let line = String::from_utf8_lossy(&head);
                let status = line.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok());
                match status {
                    Some(200..=399) => Ok(()),
                    Some(code) => Err(anyhow!("GET http://{authority}{target} answered {code}")),
                    None => Err(anyhow!("GET http://{authority}{target}: no HTTP status line")),
                }
            }
        }
    }
}

/// Starts probing in the background. The receiver says whether the server
/// is healthy: `false` until the first probe succeeds (a server that is
/// still starting must not lead), `false` again after `threshold` failures
/// in a row, `true` at the next success.
pub fn watch(check: Check) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut failures = 0u32;
        let mut ticks = tokio::time::interval(check.period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let result = match tokio::time::timeout(check.period, check.probe.once()).await {
                Ok(result) => result,
                Err(_) => Err(anyhow!("no answer within {}", humantime::format_duration(check.period))),
            };
            match result {
                Ok(()) => {
                    failures = 0;
                    if !*tx.borrow() {
                        eprintln!("mpsync: health check passed");
                    }
                    tx.send_if_modified(|h| !std::mem::replace(h, true));
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::debug!("health check failed ({failures} in a row): {e:#}");
                    if failures == check.threshold && *tx.borrow() {
                        eprintln!("mpsync: health check failed {failures} times in a row ({e:#}): unhealthy");
                        tx.send_replace(false);
                    }
                }
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_addresses() {
        let http = |a: &str, t: &str| Ok(Probe::Http { authority: a.into(), target: t.into() });
        assert_eq!(parse_http("http://127.0.0.1:8080/healthz?x=1"), http("127.0.0.1:8080", "/healthz?x=1"));
        assert_eq!(parse_http("http://localhost"), http("localhost:80", "/"));
        assert!(parse_http("https://x/").is_err());
        assert!(parse_http("http:///x").is_err());
        assert_eq!(parse_tcp("127.0.0.1:80"), Ok(Probe::Tcp("127.0.0.1:80".into())));
        assert!(parse_tcp("127.0.0.1").is_err());
    }
}
