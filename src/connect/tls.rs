//! TLS settings for `tcp://` daemons, named as buildctl names them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{Addr, ConnectError};

/// `--tlscacert`, `--tlscert`, `--tlskey`, `--tlsservername`, `--tlsdir`.
/// Any of them turns TLS on; `--tlsdir` supplies `ca.pem`, `cert.pem` and
/// `key.pem` for whichever of the three is not given on its own.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    pub ca_cert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub server_name: Option<String>,
    pub dir: Option<PathBuf>,
}

impl TlsOptions {
    /// These options, each one not given taken from `defaults` (a pool
    /// file's node without TLS files of its own uses `--tlsdir` and the rest).
    pub fn or(&self, defaults: &TlsOptions) -> TlsOptions {
        TlsOptions {
            ca_cert: self.ca_cert.clone().or_else(|| defaults.ca_cert.clone()),
            cert: self.cert.clone().or_else(|| defaults.cert.clone()),
            key: self.key.clone().or_else(|| defaults.key.clone()),
            server_name: self
                .server_name
                .clone()
                .or_else(|| defaults.server_name.clone()),
            dir: self.dir.clone().or_else(|| defaults.dir.clone()),
        }
    }

    /// Whether the options ask for TLS at all.
    pub fn enabled(&self) -> bool {
        self.ca_cert.is_some()
            || self.cert.is_some()
            || self.key.is_some()
            || self.server_name.is_some()
            || self.dir.is_some()
    }

    /// Whether a client certificate is configured (mutual TLS).
    pub fn has_client_cert(&self) -> bool {
        self.file(&self.cert, "cert.pem").is_some()
    }

    /// The name the server certificate must carry: `--tlsservername`, else the host.
    pub(super) fn server_name(&self, host: &str) -> String {
        self.server_name.clone().unwrap_or_else(|| host.to_owned())
    }

    fn file(&self, own: &Option<PathBuf>, default_name: &str) -> Option<PathBuf> {
        own.clone().or_else(|| {
            let p = self.dir.as_ref()?.join(default_name);
            p.exists().then_some(p)
        })
    }

    /// Builds the rustls client configuration, or `None` for plain TCP.
    pub(super) fn client_config(
        &self,
        addr: &Addr,
    ) -> Result<Option<Arc<rustls::ClientConfig>>, ConnectError> {
        if !self.enabled() {
            return Ok(None);
        }
        let bad = |reason: String| ConnectError::TlsConfig {
            addr: addr.to_string(),
            reason,
        };
        let ca = self.file(&self.ca_cert, "ca.pem").ok_or_else(|| {
            bad("TLS needs a CA certificate to verify the daemon: pass --tlscacert (or --tlsdir with ca.pem)".into())
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_certs(&ca).map_err(bad)? {
            roots.add(cert).map_err(|e| {
                bad(format!(
                    "{}: not a usable CA certificate: {e}",
                    ca.display()
                ))
            })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots);
        let cert = self.file(&self.cert, "cert.pem");
        let key = self.file(&self.key, "key.pem");
        let mut config = match (cert, key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(&cert).map_err(bad)?;
                let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| {
                    bad(format!(
                        "{}: no private key in PEM form: {e}",
                        key.display()
                    ))
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| bad(format!("client certificate and key do not match: {e}")))?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => return Err(bad("--tlscert needs --tlskey".into())),
            (None, Some(_)) => return Err(bad("--tlskey needs --tlscert".into())),
        };
        // gRPC over TLS is HTTP/2; newer gRPC servers insist on the ALPN token.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Some(Arc::new(config)))
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    if !path.exists() {
        return Err(format!("{}: no such file", path.display()));
    }
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: cannot read PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}
