//! The session: the gRPC services strata serves *to* the daemon while a build
//! runs (health, and per build: local files, credentials, secrets, exporter
//! output, a local content store), carried through the [`tunnel`].
//!
//! Each per-build service is an [`Attachable`], as in BuildKit's Go client:
//! the built-in ones and any a library caller adds to a `SolveOpt` go
//! through the same door ([`Session::attach`]). A new service is a folder
//! or file here with an `Attachable` impl.

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

/// A service a session offers the daemon (BuildKit's `session.Attachable`).
pub trait Attachable: Send + Sync {
    /// Registers its gRPC service(s) with `session` ([`Session::serve`]).
    fn attach(&self, session: &mut Session);
}

/// Session services a caller adds to a solve or a build, besides the
/// built-in ones (BuildKit's `SolveOpt.Session`).
#[derive(Clone, Default)]
pub struct Attachables(Vec<std::sync::Arc<dyn Attachable>>);

impl Attachables {
    /// Adds `service`, served during each solve as the built-in ones are.
    pub fn add(&mut self, service: impl Attachable + 'static) -> &mut Self {
        self.0.push(std::sync::Arc::new(service));
        self
    }

    pub fn iter(&self) -> impl Iterator<Item = &dyn Attachable> {
        self.0.iter().map(|s| s.as_ref())
    }
}

impl std::fmt::Debug for Attachables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Attachables({})", self.0.len())
    }
}

/// Local directories (overlays, contexts) by name.
impl Attachable for LocalDirs {
    fn attach(&self, session: &mut Session) {
        session.serve(self.clone().service(), filesync::METHODS);
    }
}

/// Registry credentials.
impl Attachable for DockerAuth {
    fn attach(&self, session: &mut Session) {
        session.serve(auth::service(self.clone()), auth::METHODS);
    }
}

/// Secrets by id.
impl Attachable for SecretFiles {
    fn attach(&self, session: &mut Session) {
        session.serve(self.clone().service(), secrets::METHODS);
    }
}

/// Local cache directories and OCI layouts as content stores.
impl Attachable for ContentStores {
    fn attach(&self, session: &mut Session) {
        session.serve(self.clone().service(), content::METHODS);
    }
}

/// The receiver of exporter output files.
impl Attachable for ExportFiles {
    fn attach(&self, session: &mut Session) {
        session.serve(self.clone().service(), filesend::METHODS);
    }
}

/// The services one session offers, before it is started.
pub struct Session {
    headers: SessionHeaders,
    routes: RoutesBuilder,
    /// The gRPC services added, by name: each once.
    served: std::collections::BTreeSet<&'static str>,
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
            served: Default::default(),
        };
        session.serve(health::service(), health::METHODS);
        session
    }

    /// The id the Solve request must carry to use this session.
    pub fn id(&self) -> &str {
        &self.headers.id
    }

    /// Adds a gRPC service and the methods of it the daemon may call; a
    /// service of a name already served is not added again (the first wins).
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
        if !self.served.insert(S::NAME) {
            return self;
        }
        self.routes.add_service(service);
        self.headers
            .methods
            .extend(methods.iter().map(|m| (*m).to_owned()));
        self
    }

    /// Adds what `service` serves.
    pub fn attach(&mut self, service: &dyn Attachable) -> &mut Self {
        service.attach(self);
        self
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
