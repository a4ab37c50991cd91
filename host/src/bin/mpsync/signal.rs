//! The one waiter for SIGTERM and SIGINT, shared by `mpsync run` and
//! `mpsync lock`: a pod being deleted sends SIGTERM, a terminal SIGINT, and
//! both mean "release and stop".

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// A flag that turns `true` on the first SIGTERM or SIGINT. The handlers
/// are installed before this returns, so a signal that comes at once is
/// not missed (nor left to kill the process without a release).
pub fn stop_on_signal() -> std::io::Result<watch::Receiver<bool>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tx.send_replace(true);
    });
    Ok(rx)
}
