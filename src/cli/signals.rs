//! SIGINT and SIGTERM (what CI runners send): the running command is dropped —
//! which cancels its Solve calls on the daemon and drops the guards of what it
//! staged — then every temporary path still registered is removed, and strata
//! exits with 128 + the signal's number (130, 143), as shells report it.

use std::future::Future;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

/// The command was ended by a signal.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by {name}: work in progress on the daemon was cancelled and temporary files removed")]
pub struct Interrupted {
    pub name: &'static str,
    pub number: i32,
}

impl Interrupted {
    /// 128 + the signal's number.
    pub fn exit_code(&self) -> u8 {
        (128 + self.number) as u8
    }
}

/// Resolves when `kind` arrives; never, if it cannot be listened for.
async fn arrival(kind: SignalKind) {
    match signal(kind) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

/// The first SIGINT or SIGTERM from now on.
async fn next_signal() -> Interrupted {
    tokio::select! {
        _ = arrival(SignalKind::interrupt()) => Interrupted { name: "SIGINT", number: libc::SIGINT },
        _ = arrival(SignalKind::terminate()) => Interrupted { name: "SIGTERM", number: libc::SIGTERM },
    }
}

/// Runs `command` unless a signal comes first; then cancels it and cleans up.
pub async fn until_signal(command: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    let interrupted = tokio::select! {
        result = command => return result,
        interrupted = next_signal() => interrupted,
    };
    // The command is dropped: give the connection a moment to tell the daemon
    // (which then stops the running step), and writer threads to notice.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let removed = strata::cleanup::remove_all();
    tracing::debug!("removed {removed} temporary paths");
    Err(interrupted.into())
}
