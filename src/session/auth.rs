//! `moby.filesync.v1.Auth`: registry credentials for pulls, pushes and cache,
//! read from `~/.docker/config.json` (`auths`), anonymous otherwise. The token
//! authority calls answer Unimplemented, which makes the daemon fall back to
//! plain credentials.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use tonic::{Request, Response, Status};

use crate::wire::moby::filesync::v1::auth_server::{Auth, AuthServer};
use crate::wire::moby::filesync::v1::{
    CredentialsRequest, CredentialsResponse, FetchTokenRequest, FetchTokenResponse,
    GetTokenAuthorityRequest, GetTokenAuthorityResponse, VerifyTokenAuthorityRequest,
    VerifyTokenAuthorityResponse,
};

pub(crate) const METHODS: &[&str] = &[
    "/moby.filesync.v1.Auth/Credentials",
    "/moby.filesync.v1.Auth/FetchToken",
    "/moby.filesync.v1.Auth/GetTokenAuthority",
    "/moby.filesync.v1.Auth/VerifyTokenAuthority",
];

/// A username and secret (password or identity token) for one registry host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Credential {
    pub username: String,
    pub secret: String,
}

/// Credentials by registry host, as in Docker's config file.
#[derive(Debug, Clone, Default)]
pub struct DockerAuth {
    hosts: Arc<BTreeMap<String, Credential>>,
}

impl DockerAuth {
    /// Reads `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`; missing
    /// or unreadable config means anonymous access.
    pub fn from_env() -> Self {
        let path = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
            .map(|d| d.join("config.json"));
        path.map(|p| Self::from_file(&p)).unwrap_or_default()
    }

    pub fn from_file(path: &Path) -> Self {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Self::default();
        };
        match Self::parse(&text) {
            Ok(auth) => auth,
            Err(e) => {
                tracing::warn!("ignoring {}: {e}", path.display());
                Self::default()
            }
        }
    }

    fn parse(text: &str) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut hosts = BTreeMap::new();
        if let Some(auths) = value.get("auths").and_then(|a| a.as_object()) {
            for (host, entry) in auths {
                let mut cred = Credential::default();
                if let Some(encoded) = entry.get("auth").and_then(|a| a.as_str()) {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(encoded)
                        .map_err(|e| format!("auths.{host}.auth: {e}"))?;
                    let decoded = String::from_utf8_lossy(&decoded);
                    if let Some((u, p)) = decoded.split_once(':') {
                        cred.username = u.to_owned();
                        cred.secret = p.to_owned();
                    }
                }
                if let Some(u) = entry.get("username").and_then(|v| v.as_str()) {
                    cred.username = u.to_owned();
                }
                if let Some(p) = entry.get("password").and_then(|v| v.as_str()) {
                    cred.secret = p.to_owned();
                }
                if let Some(t) = entry.get("identitytoken").and_then(|v| v.as_str()) {
                    cred.username = String::new();
                    cred.secret = t.to_owned();
                }
                hosts.insert(normalize_host(host), cred);
            }
        }
        Ok(DockerAuth {
            hosts: Arc::new(hosts),
        })
    }

    /// The credential for `host`, if any.
    pub fn credential(&self, host: &str) -> Option<&Credential> {
        self.hosts.get(&normalize_host(host))
    }

    pub(crate) fn service(self) -> AuthServer<DockerAuth> {
        AuthServer::new(self)
    }
}

/// `https://index.docker.io/v1/` and `docker.io` name the same registry.
fn normalize_host(host: &str) -> String {
    let h = host
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let h = h.split('/').next().unwrap_or(h);
    match h {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        other => other.to_owned(),
    }
}

#[tonic::async_trait]
impl Auth for DockerAuth {
    async fn credentials(
        &self,
        request: Request<CredentialsRequest>,
    ) -> Result<Response<CredentialsResponse>, Status> {
        let host = request.into_inner().host;
        let cred = self.credential(&host).cloned().unwrap_or_default();
        Ok(Response::new(CredentialsResponse {
            username: cred.username,
            secret: cred.secret,
        }))
    }

    async fn fetch_token(
        &self,
        _request: Request<FetchTokenRequest>,
    ) -> Result<Response<FetchTokenResponse>, Status> {
        Err(Status::unimplemented(
            "strata hands out credentials, not tokens",
        ))
    }

    async fn get_token_authority(
        &self,
        _request: Request<GetTokenAuthorityRequest>,
    ) -> Result<Response<GetTokenAuthorityResponse>, Status> {
        Err(Status::unimplemented("no token authority"))
    }

    async fn verify_token_authority(
        &self,
        _request: Request<VerifyTokenAuthorityRequest>,
    ) -> Result<Response<VerifyTokenAuthorityResponse>, Status> {
        Err(Status::unimplemented("no token authority"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_config_auths() {
        let auth = DockerAuth::parse(
            r#"{"auths": {
                "https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"},
                "127.0.0.1:5000": {"username": "ci", "password": "s3cret"},
                "ghcr.io": {"identitytoken": "tok"}
            }}"#,
        )
        .unwrap();
        assert_eq!(
            auth.credential("registry-1.docker.io"),
            Some(&Credential {
                username: "user".into(),
                secret: "pass".into()
            })
        );
        assert_eq!(auth.credential("127.0.0.1:5000").unwrap().secret, "s3cret");
        assert_eq!(auth.credential("ghcr.io").unwrap().username, "");
        assert!(auth.credential("quay.io").is_none());
        assert!(DockerAuth::parse("not json").is_err());
    }
}
