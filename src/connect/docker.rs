//! `docker://[SOCKET]`: dockerd's embedded BuildKit. The Docker API hands out a
//! raw connection through an HTTP/1.1 `Upgrade: h2c` on `POST /grpc` (the Control
//! API) or `POST /session` (a session tunnel), as buildx's docker driver does.

use std::path::PathBuf;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, UPGRADE};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::{Addr, ConnectError};

/// The Docker API endpoint that becomes a gRPC connection to BuildKit's Control API.
pub(crate) const GRPC_PATH: &str = "/grpc";
/// The Docker API endpoint that becomes a session tunnel.
pub(crate) const SESSION_PATH: &str = "/session";

/// Opens the Docker socket and upgrades `endpoint` to a raw h2c byte stream.
pub(crate) async fn open(
    addr: Addr,
    socket: PathBuf,
    endpoint: &'static str,
) -> Result<Upgraded, ConnectError> {
    upgrade(addr, socket, endpoint, Vec::new()).await
}

/// Like [`open`], sending `headers` with the upgrade request (the session's metadata).
pub(crate) async fn upgrade(
    addr: Addr,
    socket: PathBuf,
    endpoint: &'static str,
    headers: Vec<(String, String)>,
) -> Result<Upgraded, ConnectError> {
    let refused = |reason: String| ConnectError::DockerUpgrade {
        addr: addr.to_string(),
        reason,
    };
    let stream = UnixStream::connect(&socket)
        .await
        .map_err(|e| ConnectError::from_io(&addr, Some(&socket.display().to_string()), e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| refused(format!("HTTP handshake with the Docker API failed: {e}")))?;
    tokio::spawn(async move {
        // Drives the HTTP/1.1 exchange, then hands the socket to `upgrade::on`.
        let _ = conn.with_upgrades().await;
    });

    let mut request = Request::post(endpoint)
        .header(HOST, "docker")
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, "h2c");
    for (name, value) in &headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| refused(format!("bad upgrade request: {e}")))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| refused(format!("no answer from the Docker API: {e}")))?;

    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned())
            .unwrap_or_default();
        let hint = if status == StatusCode::NOT_FOUND {
            " (this dockerd has no BuildKit endpoint; BuildKit needs dockerd 23 or newer)"
        } else {
            ""
        };
        return Err(refused(format!(
            "{endpoint} answered {status}: {body}{hint}"
        )));
    }
    hyper::upgrade::on(response)
        .await
        .map_err(|e| refused(format!("upgrade of {endpoint} failed: {e}")))
}
