//! Reaching a BuildKit daemon: one `connect(addr) -> Channel` over every transport
//! buildctl and buildx know (unix socket, TCP with or without mutual TLS, and
//! dockerd's embedded BuildKit behind the Docker API's `/grpc` upgrade).

mod addr;
pub(crate) mod docker;
mod tcp;
mod tls;
mod unix;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use tonic::transport::{Channel, Endpoint};
use tower::service_fn;

pub use addr::{Addr, DEFAULT_ADDR, DEFAULT_DOCKER_SOCKET};
pub use tls::TlsOptions;

/// How long to wait for a daemon to accept a connection and speak HTTP/2.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a daemon could not be reached. Every variant names the address, so a user
/// sees one line that says where and what failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid daemon address {addr:?} (from --addr or BUILDKIT_HOST): {reason}")]
    BadAddress { addr: String, reason: String },
    #[error("cannot reach {addr}: no socket at {path}")]
    NoSocket { addr: String, path: String },
    #[error(
        "cannot reach {addr}: connection refused (is the daemon running and listening there?)"
    )]
    Refused { addr: String },
    #[error("cannot reach {addr}: permission denied on {path}")]
    PermissionDenied { addr: String, path: String },
    #[error("cannot reach {addr}: TLS handshake failed: {reason}")]
    TlsHandshake { addr: String, reason: String },
    #[error("cannot reach {addr}: bad TLS setup: {reason}")]
    TlsConfig { addr: String, reason: String },
    #[error("cannot reach {addr}: dockerd refused the /grpc upgrade: {reason}")]
    DockerUpgrade { addr: String, reason: String },
    #[error("cannot reach {addr}: timed out after {}s", .after.as_secs())]
    Timeout { addr: String, after: Duration },
    /// Something accepted the connection and then said nothing: a hung daemon,
    /// or not a daemon at all.
    #[error(
        "the daemon at {addr} accepted the connection but did not answer in {}s \
         (is it hung, or is something else listening there? --timeout sets the wait)",
        .after.as_secs()
    )]
    NoAnswer { addr: String, after: Duration },
    #[error("cannot reach {addr}: the connection opened but gRPC did not start: {reason}")]
    Handshake { addr: String, reason: String },
    #[error("cannot reach {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: Arc<io::Error>,
    },
}

impl ConnectError {
    /// Classifies an I/O error from opening a socket into the message a user needs.
    pub(crate) fn from_io(addr: &Addr, path: Option<&str>, err: io::Error) -> Self {
        let addr_s = addr.to_string();
        let path = path.map(str::to_owned).unwrap_or_else(|| addr_s.clone());
        match err.kind() {
            io::ErrorKind::NotFound => Self::NoSocket { addr: addr_s, path },
            io::ErrorKind::ConnectionRefused => Self::Refused { addr: addr_s },
            io::ErrorKind::PermissionDenied => Self::PermissionDenied { addr: addr_s, path },
            io::ErrorKind::TimedOut => Self::Timeout {
                addr: addr_s,
                after: CONNECT_TIMEOUT,
            },
            _ => Self::Io {
                addr: addr_s,
                source: Arc::new(err),
            },
        }
    }
}

/// Opens a gRPC channel to the daemon at `addr`. The connection is made eagerly,
/// so an unreachable daemon is reported here, with the address, not at the first call.
pub async fn connect(addr: &Addr, tls: &TlsOptions) -> Result<Channel, ConnectError> {
    connect_within(addr, tls, CONNECT_TIMEOUT).await
}

/// [`connect`], giving up after `timeout`.
pub async fn connect_within(
    addr: &Addr,
    tls: &TlsOptions,
    timeout: Duration,
) -> Result<Channel, ConnectError> {
    // The URI only feeds the HTTP/2 `:authority`; the connector picks the real socket.
    // Keep-alive pings with a deadline notice a daemon that vanished without
    // closing the connection (a dead host, a partition) during a long build.
    let endpoint = Endpoint::from_static("http://buildkitd")
        .connect_timeout(timeout)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        // The session tunnel arrives as many small messages; a large window
        // keeps h2's small-frame budget (half the window) from running out.
        .initial_connection_window_size(64 << 20)
        .initial_stream_window_size(16 << 20);
    let attempt = async {
        match addr {
            Addr::Unix(path) => {
                let (addr, path) = (addr.clone(), path.clone());
                endpoint
                    .connect_with_connector(service_fn(move |_: Uri| {
                        unix::open(addr.clone(), path.clone())
                    }))
                    .await
            }
            Addr::Tcp { host, port } => {
                let (addr, host, port) = (addr.clone(), host.clone(), *port);
                let config = tls.client_config(&addr)?;
                let server_name = tls.server_name(&host);
                endpoint
                    .connect_with_connector(service_fn(move |_: Uri| {
                        tcp::open(
                            addr.clone(),
                            host.clone(),
                            port,
                            config.clone(),
                            server_name.clone(),
                        )
                    }))
                    .await
            }
            Addr::Docker(path) => {
                let (addr, path) = (addr.clone(), path.clone());
                endpoint
                    .connect_with_connector(service_fn(move |_: Uri| {
                        docker::open(addr.clone(), path.clone(), docker::GRPC_PATH)
                    }))
                    .await
            }
        }
        .map_err(|e| classify(addr, tls.enabled(), e))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Timeout {
            addr: addr.to_string(),
            after: timeout,
        }),
    }
}

/// Finds our own `ConnectError` inside tonic's transport error, or describes
/// the HTTP/2 failure that happened after the socket opened.
fn classify(addr: &Addr, tls_enabled: bool, err: tonic::transport::Error) -> ConnectError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    let mut innermost = String::new();
    while let Some(e) = source {
        if let Some(ours) = e.downcast_ref::<ConnectError>() {
            return ours.clone();
        }
        innermost = e.to_string();
        source = e.source();
    }
    let hint = match addr {
        Addr::Tcp { .. } if !tls_enabled => {
            " (if the daemon expects TLS, pass --tlscacert, --tlscert and --tlskey)"
        }
        _ => "",
    };
    ConnectError::Handshake {
        addr: addr.to_string(),
        reason: format!("{innermost}{hint}"),
    }
}
