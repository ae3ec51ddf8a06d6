//! A tarball passed on as it arrives (to a docker daemon's image load)
//! instead of written here: the `DockerStream` and `Tar` outputs carry one.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// The sending end of a tarball that is not written here but passed on
/// chunk by chunk: [`TarStream::channel`]'s other end reads it. A transfer
/// cut short ends the reading side with an error, never a clean end.
#[derive(Clone)]
pub struct TarStream(Arc<Mutex<Option<TarSender>>>);

/// Chunks of a tarball, or why it was cut off.
type TarSender = mpsc::Sender<Result<Bytes, std::io::Error>>;

impl TarStream {
    /// A stream target and what reads it.
    pub fn channel() -> (TarStream, ReceiverStream<Result<Bytes, std::io::Error>>) {
        let (tx, rx) = mpsc::channel(16);
        (
            TarStream(Arc::new(Mutex::new(Some(tx)))),
            ReceiverStream::new(rx),
        )
    }

    /// The sender, for the one transfer that may use it.
    pub(crate) fn take(&self) -> Option<TarSender> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl std::fmt::Debug for TarStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TarStream")
    }
}

impl PartialEq for TarStream {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for TarStream {}
