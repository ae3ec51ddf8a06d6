//! The session: the gRPC services strata serves *to* the daemon while a build
//! runs (health, and per build: local files, credentials, secrets, exporter
//! output, a local content store), carried through the [`tunnel`].

mod auth;
mod beneath;
mod content;
mod filesend;
mod filesync;
mod fsreceive;
mod health;
mod secrets;
pub mod staging;
pub(crate) mod tunnel;

pub use crate::credentials::DockerAuth;
pub use content::ContentStores;
pub use filesend::{ExportFiles, ExportTarget};
pub use filesync::LocalDirs;
pub use secrets::SecretFiles;
pub use staging::{ExportError, LocalDest, StagedExports};

use std::convert::Infallible;

use futures::StreamExt;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::Server;

use crate::client::{Client, ClientError};
use crate::connect::Addr;
use tunnel::{SessionHeaders, TunnelIo};

/// HTTP/2 flow-control windows of the session server (see [`serve_one`]).
const TUNNEL_CONNECTION_WINDOW: u32 = 64 << 20;
const TUNNEL_STREAM_WINDOW: u32 = 16 << 20;

/// A filesystem error as the daemon sees it: what was being done, and where.
pub(crate) fn io_status(what: &str, path: &std::path::Path, e: std::io::Error) -> tonic::Status {
    let message = format!("{what} {}: {e}", path.display());
    match e.kind() {
        std::io::ErrorKind::NotFound => tonic::Status::not_found(message),
        _ => tonic::Status::internal(message),
    }
}

/// The services one session offers, before it is started.
pub struct Session {
    headers: SessionHeaders,
    routes: RoutesBuilder,
}

impl Session {
    /// A session named `name` (shown by the daemon) whose `shared_key` lets the
    /// daemon reuse what earlier sessions with the same key already uploaded.
    pub fn new(name: &str, shared_key: &str) -> Self {
        let mut session = Session {
            headers: SessionHeaders {
                id: crate::ids::random_id(),
                name: name.to_owned(),
                shared_key: shared_key.to_owned(),
                methods: Vec::new(),
            },
            routes: RoutesBuilder::default(),
        };
        session.serve(health::service(), health::METHODS);
        session
    }

    /// The id the Solve request must carry to use this session.
    pub fn id(&self) -> &str {
        &self.headers.id
    }

    /// Adds a gRPC service and the methods of it the daemon may call.
    pub fn serve<S>(&mut self, service: S, methods: &[&str]) -> &mut Self
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes.add_service(service);
        self.headers
            .methods
            .extend(methods.iter().map(|m| (*m).to_owned()));
        self
    }

    /// Serves local directories (overlays, contexts) by name.
    pub fn local_dirs(&mut self, dirs: LocalDirs) -> &mut Self {
        self.serve(dirs.service(), filesync::METHODS)
    }

    /// Serves registry credentials.
    pub fn auth(&mut self, auth: DockerAuth) -> &mut Self {
        self.serve(auth::service(auth), auth::METHODS)
    }

    /// Serves secrets by id.
    pub fn secrets(&mut self, secrets: SecretFiles) -> &mut Self {
        self.serve(secrets.service(), secrets::METHODS)
    }

    /// Serves local cache directories as content stores.
    pub fn content_stores(&mut self, stores: ContentStores) -> &mut Self {
        self.serve(stores.service(), content::METHODS)
    }

    /// Receives exporter output files.
    pub fn export_files(&mut self, files: ExportFiles) -> &mut Self {
        self.serve(files.service(), filesend::METHODS)
    }

    /// Opens the tunnel to the daemon and starts serving in the background.
    pub async fn start(self, client: &Client) -> Result<RunningSession, ClientError> {
        let routes = self.routes.routes();
        let (stop, stopped) = oneshot::channel::<()>();
        let id = self.headers.id.clone();
        let task = match client.addr() {
            Addr::Docker(socket) => {
                let headers = self.headers.pairs();
                let headers = headers.into_iter().map(|(k, v)| (k.to_owned(), v));
                let io = crate::connect::docker::upgrade(
                    client.addr().clone(),
                    socket.clone(),
                    crate::connect::docker::SESSION_PATH,
                    headers.collect(),
                )
                .await?;
                serve_one(routes, hyper_util::rt::TokioIo::new(io), stopped)
            }
            _ => {
                let io = tunnel::over_control(client, &self.headers)
                    .await
                    .map_err(|s| client.rpc_error("Session", s))?;
                serve_one(routes, io, stopped)
            }
        };
        Ok(RunningSession {
            id,
            stop: Some(stop),
            task,
        })
    }
}

/// Serves `routes` on the one connection `io` until `stopped` fires or the daemon hangs up.
fn serve_one<IO>(
    routes: tonic::service::Routes,
    io: IO,
    stopped: oneshot::Receiver<()>,
) -> JoinHandle<()>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        // The incoming stream must stay open after its one connection: tonic
        // treats its end as a shutdown and would send GOAWAY at once.
        let incoming = futures::stream::iter([Ok::<_, std::io::Error>(TunnelIo(io))])
            .chain(futures::stream::pending());
        // Large windows: the daemon streams many small messages (a STAT per
        // file of a local export, chunks of cache blobs). h2 limits how many
        // small DATA frames may sit unread, by a budget of half the connection
        // window, and closes the connection when it runs out.
        let served = Server::builder()
            .initial_connection_window_size(TUNNEL_CONNECTION_WINDOW)
            .initial_stream_window_size(TUNNEL_STREAM_WINDOW)
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            tracing::debug!("session server ended: {e}");
        }
    })
}

/// A session being served; closing it ends the tunnel.
pub struct RunningSession {
    id: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl RunningSession {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stops serving and closes the tunnel.
    pub async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), &mut self.task).await;
        self.task.abort();
    }
}

/// Serves `routes` on a loopback port and connects to it, for service tests.
#[cfg(test)]
pub(crate) async fn serve_on_loopback(routes: tonic::service::Routes) -> tonic::transport::Channel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_routes(routes)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}
