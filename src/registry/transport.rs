//! One HTTP/1.1 request to a registry, over plain TCP (loopback and insecure
//! registries) or TLS with the system's CA bundle. Connections are kept and
//! reused (a few idle ones per host): a key-tag check is a handful of small
//! requests, and a new TCP (and TLS) connection each was most of their time.
//!
//! A registry is not trusted to behave: connecting, the TLS handshake, the
//! answer's headers and every chunk of its body each have a deadline, a
//! document read whole has one deadline for all of it, and a body is read
//! whole only up to a cap the caller names (or streamed).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

/// The system CA bundles strata trusts for registries, first found wins.
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// How long a connect, a handshake, the answer or any chunk of it may take
/// before the registry counts as not answering, unless the client says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// An answer whose body has not been read yet.
pub(super) struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: hyper::body::Incoming,
    timeout: Duration,
}

impl Response {
    /// Calls `each` with every chunk of the body as it arrives.
    pub async fn stream(
        mut self,
        mut each: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<u64, String> {
        let mut total = 0u64;
        loop {
            let frame = tokio::time::timeout(self.timeout, self.body.frame())
                .await
                .map_err(|_| format!("the answer stalled for {}s", self.timeout.as_secs()))?;
            let Some(frame) = frame else {
                return Ok(total);
            };
            let frame = frame.map_err(|e| format!("reading the answer: {e}"))?;
            if let Ok(data) = frame.into_data() {
                total += data.len() as u64;
                each(&data)?;
            }
        }
    }

    /// The whole body, refusing more than `limit` bytes (a manifest, a config,
    /// a token, an error message: never gigabytes), within one deadline for
    /// all of it: a registry trickling a document a byte at a time (each
    /// chunk well within its own deadline) cannot hold a caller.
    pub async fn bytes(self, limit: usize) -> Result<Bytes, String> {
        let whole = self.timeout;
        tokio::time::timeout(whole, self.bytes_unbounded(limit))
            .await
            .map_err(|_| {
                format!(
                    "the answer did not arrive whole within {}s",
                    whole.as_secs()
                )
            })?
    }

    async fn bytes_unbounded(self, limit: usize) -> Result<Bytes, String> {
        let mut body = Vec::new();
        self.stream(|chunk| {
            if body.len() + chunk.len() > limit {
                return Err(format!(
                    "the answer is larger than the {} KiB allowed for it",
                    limit / 1024
                ));
            }
            body.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        Ok(body.into())
    }
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let bundle = std::env::var("SSL_CERT_FILE")
                .ok()
                .into_iter()
                .chain(CA_BUNDLES.iter().map(|s| s.to_string()))
                .find(|p| std::path::Path::new(p).exists())
                .ok_or("no system CA bundle found (set SSL_CERT_FILE)")?;
            let certs =
                CertificateDer::pem_file_iter(&bundle).map_err(|e| format!("{bundle}: {e}"))?;
            for cert in certs.flatten() {
                let _ = roots.add(cert);
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Idle connections per `scheme://host:port`, at most this many each.
const IDLE_PER_HOST: usize = 4;

fn idle() -> std::sync::MutexGuard<'static, std::collections::HashMap<String, Vec<Sender>>> {
    static IDLE: OnceLock<std::sync::Mutex<std::collections::HashMap<String, Vec<Sender>>>> =
        OnceLock::new();
    IDLE.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An idle connection to `key` that can take a request now, if any.
fn reuse(key: &str) -> Option<Sender> {
    let mut idle = idle();
    let senders = idle.get_mut(key)?;
    while let Some(sender) = senders.pop() {
        if sender.is_ready() {
            return Some(sender);
        }
        // Closed, or still reading an earlier answer: leave it.
    }
    None
}

/// Keeps `sender` for the next request to `key` (it becomes ready once the
/// answer just received has been read).
fn give_back(key: String, sender: Sender) {
    let mut idle = idle();
    let senders = idle.entry(key).or_default();
    if senders.len() < IDLE_PER_HOST {
        senders.push(sender);
    }
}

/// Sends `method` for `uri` with `headers` and `body` (empty for GET and
/// HEAD); `Err` is a transport failure or a deadline (`timeout`) passed.
pub(super) async fn send(
    method: http::Method,
    uri: &Uri,
    headers: &[(http::HeaderName, String)],
    body: Bytes,
    timeout: Duration,
) -> Result<Response, String> {
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().ok_or("no host in URL")?.to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let key = format!("{}://{host}:{port}", if https { "https" } else { "http" });
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(
            http::header::HOST,
            uri.authority().map(|a| a.as_str()).unwrap_or(&host),
        )
        .header(
            http::header::USER_AGENT,
            concat!("strata/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| format!("bad request: {e}"))?;
    if let Some(sender) = reuse(&key) {
        // A kept connection the registry closed meanwhile never sent the
        // request: then a new connection sends it.
        match exchange(sender, clone_request(&request), timeout).await {
            Ok((response, sender)) => {
                give_back(key, sender);
                return Ok(response);
            }
            Err(Exchange::NotSent) => {}
            Err(Exchange::Failed(e)) => return Err(e),
        }
    }
    let sender = connect(https, &host, port, timeout).await?;
    match exchange(sender, request, timeout).await {
        Ok((response, sender)) => {
            give_back(key, sender);
            Ok(response)
        }
        Err(Exchange::NotSent) => Err(format!("{host}:{port} closed the connection")),
        Err(Exchange::Failed(e)) => Err(e),
    }
}

fn clone_request(request: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut copy = Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// A new connection (TCP, then TLS for https), with its HTTP/1.1 driver running.
async fn connect(https: bool, host: &str, port: u16, timeout: Duration) -> Result<Sender, String> {
    let connect = TcpStream::connect((host.trim_matches(['[', ']']), port));
    let tcp = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| {
            format!(
                "cannot connect to {host}:{port}: no answer in {}s",
                timeout.as_secs()
            )
        })?
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    if !https {
        return handshake(TokioIo::new(tcp)).await;
    }
    let config = tls_config()?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("{host}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
    let tls = tokio::time::timeout(timeout, tls)
        .await
        .map_err(|_| format!("TLS with {host}: no handshake in {}s", timeout.as_secs()))?
        .map_err(|e| format!("TLS with {host}: {e}"))?;
    handshake(TokioIo::new(tls)).await
}

async fn handshake<IO>(io: IO) -> Result<Sender, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Why an exchange did not give an answer.
enum Exchange {
    /// The connection was closed before the request went out.
    NotSent,
    Failed(String),
}

async fn exchange(
    mut sender: Sender,
    request: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<(Response, Sender), Exchange> {
    let post = request.method() == http::Method::POST;
    let response = tokio::time::timeout(timeout, sender.send_request(request))
        .await
        .map_err(|_| Exchange::Failed(format!("no answer in {}s", timeout.as_secs())))?
        .map_err(|e| {
            // Cancelled: it never left. Cut off mid-way: the server closed a
            // kept connection; sending again is safe unless it was a POST.
            let again = e.is_canceled() || (e.is_incomplete_message() && !post);
            if again {
                Exchange::NotSent
            } else {
                Exchange::Failed(format!("no answer: {e}"))
            }
        })?;
    let status = response.status();
    let headers = response.headers().clone();
    let response = Response {
        status,
        headers,
        body: response.into_body(),
        timeout,
    };
    Ok((response, sender))
}
