//! Registry credentials, found as docker finds them: `$DOCKER_CONFIG/config.json`
//! (or `~/.docker/config.json`) names a helper per host (`credHelpers`) or one
//! for all (`credsStore`), run as `docker-credential-NAME get`; otherwise the
//! `auths` entries hold them. Read once per build; a helper runs at most once
//! per host. A bad entry is skipped with a warning, never the whole file.
//!
//! Which hosts may get credentials over plain http is part of this too: only
//! hosts the user named insecure. Not even the loopback by default: on a
//! shared machine any local process may be listening there.
//!
//! Not the `docker_credential` crate (weighed for this): it runs helpers with
//! a blocking `std::process::Command` and no deadline (a hung keychain would
//! stall a runtime worker and the build's session), re-reads config.json and
//! re-runs the helper on every lookup, fails every lookup when one entry is
//! malformed, ignores an entry's `username`/`password` fields, turns a
//! helper's "credentials not found" into an error, and takes any helper name
//! as part of a program path. What it would replace here is about 100 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

/// How long a credential helper may take (it may ask a keychain).
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// A username and secret (password or identity token) for one registry host.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Credential {
    pub username: String,
    pub secret: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Credential {
    /// An identity token (username empty) rather than a password.
    pub fn is_identity_token(&self) -> bool {
        self.username.is_empty() && !self.secret.is_empty()
    }

    /// `Basic base64(user:secret)`.
    pub fn basic(&self) -> String {
        let pair = format!("{}:{}", self.username, self.secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

#[derive(Default)]
struct Config {
    auths: BTreeMap<String, Credential>,
    helpers: BTreeMap<String, String>,
    store: Option<String>,
    /// Hosts named insecure: plain http, credentials allowed.
    insecure: Vec<String>,
}

/// Credentials by registry host. Cheap to clone; helper answers are shared.
#[derive(Clone, Default)]
pub struct DockerAuth {
    config: Arc<Config>,
    from_helpers: Arc<Mutex<BTreeMap<String, Option<Credential>>>>,
    /// The only hosts credentials are given for, when limited ([`DockerAuth::only_for`]).
    only: Option<Arc<BTreeSet<String>>>,
}

impl std::fmt::Debug for DockerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerAuth")
            .field("hosts", &self.config.auths.keys().collect::<Vec<_>>())
            .field("helpers", &self.config.helpers)
            .field("store", &self.config.store)
            .finish()
    }
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
            Ok((auth, skipped)) => {
                for reason in skipped {
                    tracing::warn!("{}: skipping {reason}", path.display());
                }
                auth
            }
            Err(e) => {
                tracing::warn!("ignoring {}: {e}", path.display());
                Self::default()
            }
        }
    }

    /// The config, and why each skipped entry was skipped.
    pub(crate) fn parse(text: &str) -> Result<(Self, Vec<String>), String> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut config = Config::default();
        let mut skipped = Vec::new();
        if let Some(auths) = value.get("auths").and_then(|a| a.as_object()) {
            for (host, entry) in auths {
                match auth_entry(entry) {
                    Ok(Some(cred)) => {
                        config.auths.insert(normalize_host(host), cred);
                    }
                    Ok(None) => {}
                    Err(e) => skipped.push(format!("auths.{host}: {e}")),
                }
            }
        }
        if let Some(helpers) = value.get("credHelpers").and_then(|h| h.as_object()) {
            for (host, helper) in helpers {
                match helper.as_str().filter(|h| is_helper_name(h)) {
                    Some(h) => {
                        config.helpers.insert(normalize_host(host), h.to_owned());
                    }
                    None => skipped.push(format!("credHelpers.{host}: not a helper name")),
                }
            }
        }
        match value.get("credsStore").and_then(|s| s.as_str()) {
            Some(s) if is_helper_name(s) => config.store = Some(s.to_owned()),
            Some("") | None => {}
            Some(_) => skipped.push("credsStore: not a helper name".into()),
        }
        let auth = DockerAuth {
            config: Arc::new(config),
            from_helpers: Default::default(),
            only: None,
        };
        Ok((auth, skipped))
    }

    /// The same credentials, with `hosts` named insecure (`--insecure-registry`).
    pub fn with_insecure_hosts(self, hosts: &[String]) -> Self {
        let mut config = Config {
            auths: self.config.auths.clone(),
            helpers: self.config.helpers.clone(),
            store: self.config.store.clone(),
            insecure: hosts.iter().map(|h| normalize_host(h)).collect(),
        };
        config.insecure.sort();
        DockerAuth {
            config: Arc::new(config),
            from_helpers: self.from_helpers,
            only: self.only,
        }
    }

    /// The same credentials, given only for `hosts` (the registries one
    /// build uses): asked for another host, there are none, and no
    /// credential helper runs.
    pub fn only_for(self, hosts: impl IntoIterator<Item = String>) -> Self {
        let only = hosts.into_iter().map(|h| normalize_host(&h)).collect();
        DockerAuth {
            only: Some(Arc::new(only)),
            ..self
        }
    }

    /// Whether credentials may travel to `host` over plain http: only if it
    /// was named insecure.
    pub fn plain_http_allowed(&self, host: &str) -> bool {
        self.config.insecure.contains(&normalize_host(host))
    }

    /// The credential for `host`: its helper's (`credHelpers`, else
    /// `credsStore`), else its `auths` entry; none means anonymous.
    pub async fn credential(&self, host: &str) -> Option<Credential> {
        let host = normalize_host(host);
        if self.only.as_ref().is_some_and(|only| !only.contains(&host)) {
            tracing::debug!("no credentials for {host}: this build does not use it");
            return None;
        }
        let helper = self
            .config
            .helpers
            .get(&host)
            .or(self.config.store.as_ref());
        if let Some(helper) = helper {
            let mut cache = self.from_helpers.lock().await;
            if let Some(known) = cache.get(&host) {
                return known
                    .clone()
                    .or_else(|| self.config.auths.get(&host).cloned());
            }
            let found = match run_helper(helper, &host).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!("docker-credential-{helper} for {host}: {e}");
                    None
                }
            };
            cache.insert(host.clone(), found.clone());
            if found.is_some() {
                return found;
            }
        }
        self.config.auths.get(&host).cloned()
    }
}

/// One `auths` entry: `auth` (base64 user:secret), `username`/`password`,
/// or `identitytoken`; an entry with none of them (a helper's placeholder) is none.
fn auth_entry(entry: &serde_json::Value) -> Result<Option<Credential>, String> {
    let mut cred = Credential::default();
    if let Some(encoded) = entry.get("auth").and_then(|a| a.as_str()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| format!("auth is not base64: {e}"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| "auth is not UTF-8".to_owned())?;
        let (u, p) = decoded.split_once(':').ok_or("auth is not user:password")?;
        cred.username = u.to_owned();
        cred.secret = p.to_owned();
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
    Ok((!cred.secret.is_empty() || !cred.username.is_empty()).then_some(cred))
}

/// Helper names become a program name: letters, digits, `-`, `_`, `.` only.
fn is_helper_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Asks `docker-credential-HELPER get` for `host`, as docker does: the server
/// URL on stdin, `{"Username","Secret"}` on stdout; "not found" is none.
async fn run_helper(helper: &str, host: &str) -> Result<Option<Credential>, String> {
    let program = format!("docker-credential-{helper}");
    let server = if host == "docker.io" {
        "https://index.docker.io/v1/"
    } else {
        host
    };
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .await
            .map_err(|e| format!("{program}: {e}"))?;
    }
    let out = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| format!("{program} gave no answer in {}s", HELPER_TIMEOUT.as_secs()))?
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if said.contains("credentials not found") {
            return Ok(None);
        }
        return Err(format!("{program} failed: {}", said.trim()));
    }
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{program} answered something other than JSON: {e}"))?;
    let field = |k: &str| answer[k].as_str().unwrap_or_default().to_owned();
    let mut cred = Credential {
        username: field("Username"),
        secret: field("Secret"),
    };
    // Docker's convention for identity tokens stored by a helper.
    if cred.username == "<token>" {
        cred.username.clear();
    }
    Ok((!cred.secret.is_empty()).then_some(cred))
}

/// `https://index.docker.io/v1/` and `docker.io` name the same registry.
pub(crate) fn normalize_host(host: &str) -> String {
    let h = host
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let h = h.split('/').next().unwrap_or(h);
    match h {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn credentials_only_for_the_hosts_a_build_uses() {
        let (auth, _) = DockerAuth::parse(
            r#"{"auths": {
                "127.0.0.1:5000": {"username": "ci", "password": "s3cret"},
                "ghcr.io": {"identitytoken": "tok"}
            }, "credsStore": "strata-never-run"}"#,
        )
        .unwrap();
        let limited = auth.only_for(["127.0.0.1:5000".to_owned()]);
        assert_eq!(
            limited.credential("127.0.0.1:5000").await.unwrap().secret,
            "s3cret"
        );
        // Not asked of config.json, and no helper runs (none would be found).
        assert_eq!(limited.credential("ghcr.io").await, None);
        assert!(limited.from_helpers.lock().await.get("ghcr.io").is_none());
    }

    #[tokio::test]
    async fn reads_docker_config_auths_and_skips_bad_entries() {
        let (auth, skipped) = DockerAuth::parse(
            r#"{"auths": {
                "https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"},
                "127.0.0.1:5000": {"username": "ci", "password": "s3cret"},
                "ghcr.io": {"identitytoken": "tok"},
                "bad.example": {"auth": "!!!"},
                "helper.example": {}
            }}"#,
        )
        .unwrap();
        assert_eq!(
            auth.credential("registry-1.docker.io").await,
            Some(Credential {
                username: "user".into(),
                secret: "pass".into()
            })
        );
        assert_eq!(
            auth.credential("127.0.0.1:5000").await.unwrap().secret,
            "s3cret"
        );
        assert!(auth
            .credential("ghcr.io")
            .await
            .unwrap()
            .is_identity_token());
        assert!(auth.credential("quay.io").await.is_none());
        assert!(auth.credential("helper.example").await.is_none());
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(skipped[0].contains("bad.example"), "{skipped:?}");
        assert!(!format!("{auth:?}").contains("s3cret"));
        assert!(DockerAuth::parse("not json").is_err());
    }

    #[test]
    fn plain_http_credentials_only_for_named_hosts() {
        let auth = DockerAuth::default().with_insecure_hosts(&["reg.lan:5000".into()]);
        assert!(auth.plain_http_allowed("reg.lan:5000"));
        assert!(!auth.plain_http_allowed("127.0.0.1:5000"));
        assert!(!auth.plain_http_allowed("reg.lan"));
        assert!(!auth.plain_http_allowed("other.lan:5000"));
    }
}
