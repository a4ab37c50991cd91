//! A TCP relay on loopback that can delay, black-hole and cut the traffic
//! between a client and a server: the network between the elector and its
//! store, made to fail on demand.
//!
//! - [`Mode::Pass`]: bytes go through as they come;
//! - [`Mode::Delay`]: every chunk is held back for a while first (in both
//!   directions);
//! - [`Mode::BlackHole`]: nothing goes through, connections stay open (a
//!   partition: calls hang until the caller's deadline);
//! - [`Relay::cut`]: every open connection is closed at once (new ones are
//!   accepted as usual).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the relay does with the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Pass them on.
    Pass,
    /// Hold each chunk back this long.
    Delay(Duration),
    /// Pass nothing, keep connections open.
    BlackHole,
}

/// A running relay; it stops when dropped.
pub struct Relay {
    addr: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    cuts: Arc<watch::Sender<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        self.cuts.send_modify(|n| *n += 1);
    }
}

impl Relay {
    /// Starts a relay on `127.0.0.1:0` to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mode = Arc::new(watch::channel(Mode::Pass).0);
        let cuts = Arc::new(watch::channel(0).0);
        let task = tokio::spawn({
            let (mode, cuts) = (mode.clone(), cuts.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (mode, cuts) = (mode.subscribe(), cuts.subscribe());
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(target).await else { return };
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let (cr, cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        let mut cut = cuts.clone();
                        tokio::select! {
                            () = pipe(cr, sw, mode.clone()) => {}
                            () = pipe(sr, cw, mode) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            }
        });
        Ok(Relay { addr, mode, cuts, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes what happens to the bytes from now on.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Closes every open connection.
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        loop {
            let now = *mode.borrow_and_update();
            match now {
                Mode::Pass => break,
                Mode::Delay(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                // Hold the bytes until the mode changes.
                Mode::BlackHole => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream) -> std::io::Result<usize> {
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await
    }

    #[tokio::test]
    async fn passes_holds_and_cuts() {
        let relay = Relay::start(echo().await).await.unwrap();
        let mut s = TcpStream::connect(relay.addr()).await.unwrap();
        round_trip(&mut s).await.unwrap();
        relay.set(Mode::BlackHole);
        let held = tokio::time::timeout(Duration::from_millis(200), round_trip(&mut s)).await;
        assert!(held.is_err(), "a black hole passes nothing");
        relay.set(Mode::Pass);
        // What was held goes through once the hole closes.
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        relay.cut();
        let mut rest = Vec::new();
        assert_eq!(s.read_to_end(&mut rest).await.unwrap_or(0), 0, "a cut connection is closed");
    }
}
