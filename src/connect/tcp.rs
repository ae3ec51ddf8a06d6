//! `tcp://HOST:PORT`, plain or with (mutual) TLS.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{Addr, ConnectError};

/// A TCP connection, wrapped in TLS when the options ask for it.
pub(crate) enum TcpIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

pub(super) async fn open(
    addr: Addr,
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    server_name: String,
) -> Result<TokioIo<TcpIo>, ConnectError> {
    let stream = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| ConnectError::from_io(&addr, None, e))?;
    stream.set_nodelay(true).ok();
    let Some(config) = tls else {
        return Ok(TokioIo::new(TcpIo::Plain(stream)));
    };
    let name = ServerName::try_from(server_name.clone()).map_err(|e| ConnectError::TlsConfig {
        addr: addr.to_string(),
        reason: format!("invalid TLS server name {server_name:?}: {e}"),
    })?;
    let tls = TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| ConnectError::TlsHandshake {
            addr: addr.to_string(),
            reason: tls_reason(&e),
        })?;
    Ok(TokioIo::new(TcpIo::Tls(Box::new(tls))))
}

/// rustls puts the interesting part (unknown issuer, bad name, alert from the
/// server) in the inner error; show that, not "io error".
fn tls_reason(e: &io::Error) -> String {
    match e.get_ref() {
        Some(inner) => inner.to_string(),
        None => e.to_string(),
    }
}

impl AsyncRead for TcpIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TcpIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            TcpIo::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TcpIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TcpIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            TcpIo::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TcpIo::Plain(s) => Pin::new(s).poll_flush(cx),
            TcpIo::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TcpIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            TcpIo::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
