//! The stream-to-connection tunnel. BuildKit calls back into its client (for
//! local files, credentials, secrets, exporter output) over a gRPC connection in
//! which the *client* is the server. That connection's bytes travel inside the
//! client's `Control.Session` stream of `BytesMessage`s, or, through dockerd,
//! inside the upgraded `POST /session` connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio_util::io::ReaderStream;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::server::Connected;

use crate::client::Client;
use crate::wire::moby::buildkit::v1::BytesMessage;

/// The metadata that tells the daemon which session this is and what it serves.
#[derive(Debug, Clone)]
pub(crate) struct SessionHeaders {
    pub id: String,
    pub name: String,
    pub shared_key: String,
    /// Full gRPC method paths, e.g. `/moby.filesync.v1.FileSync/DiffCopy`.
    pub methods: Vec<String>,
}

impl SessionHeaders {
    /// Header name/value pairs, in the order BuildKit's own client sends them.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            ("x-docker-expose-session-uuid", self.id.clone()),
            ("x-docker-expose-session-name", self.name.clone()),
            ("x-docker-expose-session-sharedkey", self.shared_key.clone()),
        ];
        pairs.extend(
            self.methods
                .iter()
                .map(|m| ("x-docker-expose-session-grpc-method", m.clone())),
        );
        pairs
    }
}

/// Opens `Control.Session` and returns our end of the byte pipe it carries.
/// Bytes we write go to the daemon as `BytesMessage`s; its messages arrive as
/// bytes to read. The pipe closes when either side ends the stream.
pub(crate) async fn over_control(
    client: &Client,
    headers: &SessionHeaders,
) -> Result<DuplexStream, tonic::Status> {
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let (from_server, mut to_server) = tokio::io::split(theirs);

    // A read error ends ReaderStream, which ends the outbound stream.
    let outbound = ReaderStream::with_capacity(from_server, 1 << 16).filter_map(|chunk| {
        futures::future::ready(chunk.ok().map(|data: Bytes| BytesMessage { data }))
    });
    let mut request = tonic::Request::new(outbound);
    for (name, value) in headers.pairs() {
        let value = MetadataValue::try_from(value.as_str())
            .map_err(|_| tonic::Status::invalid_argument(format!("bad session header {name}")))?;
        request
            .metadata_mut()
            .append(MetadataKey::from_static(name), value);
    }
    let mut inbound = client.control().session(request).await?.into_inner();
    tokio::spawn(async move {
        while let Some(Ok(message)) = inbound.next().await {
            if to_server.write_all(&message.data).await.is_err() {
                break;
            }
        }
        let _ = to_server.shutdown().await;
    });
    Ok(ours)
}

/// Any byte stream a tonic server can accept one connection on.
pub(crate) struct TunnelIo<T>(pub T);

impl<T> Connected for TunnelIo<T> {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl<T: AsyncRead + Unpin> AsyncRead for TunnelIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TunnelIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
