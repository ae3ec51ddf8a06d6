//! One HTTP/1.1 request to a registry, over plain TCP (loopback and insecure
//! registries) or TLS with the system's CA bundle. A connection per request
//! keeps it simple: strata makes a handful of registry calls per build.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
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

/// How long a TCP connect or TLS handshake may take before the registry
/// counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
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

/// Sends a GET (or HEAD) for `uri` with `headers`; `Err` is a transport failure.
pub(super) async fn send(
    method: http::Method,
    uri: &Uri,
    headers: &[(http::HeaderName, String)],
) -> Result<Response, String> {
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().ok_or("no host in URL")?.to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let connect = TcpStream::connect((host.trim_matches(['[', ']']), port));
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| {
            format!(
                "cannot connect to {host}:{port}: no answer in {}s",
                CONNECT_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
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
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad request: {e}"))?;

    if https {
        let config = tls_config()?;
        let name = ServerName::try_from(host.clone()).map_err(|e| format!("{host}: {e}"))?;
        let handshake = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
            .await
            .map_err(|_| {
                format!(
                    "TLS with {host}: no handshake in {}s",
                    CONNECT_TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| format!("TLS with {host}: {e}"))?;
        exchange(TokioIo::new(tls), request).await
    } else {
        exchange(TokioIo::new(tcp), request).await
    }
}

async fn exchange<IO>(io: IO, request: Request<Empty<Bytes>>) -> Result<Response, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok(Response {
        status,
        headers,
        body,
    })
}
