//! `unix://PATH`: the daemon's local socket.

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::{Addr, ConnectError};

pub(super) async fn open(addr: Addr, path: PathBuf) -> Result<TokioIo<UnixStream>, ConnectError> {
    UnixStream::connect(&path)
        .await
        .map(TokioIo::new)
        .map_err(|e| ConnectError::from_io(&addr, Some(&path.display().to_string()), e))
}
