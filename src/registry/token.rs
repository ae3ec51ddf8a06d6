//! Registry token auth (distribution's token spec): parse a `WWW-Authenticate`
//! challenge, fetch a bearer token from its realm. Used by strata's own
//! registry client and by the session's `FetchToken`, so the daemon gets a
//! short-lived token instead of the password.
//!
//! Credentials go to a realm only over https, or to a host the user named
//! insecure (or the loopback): a token realm on plain http elsewhere is asked
//! anonymously.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Uri};

use super::transport;
use crate::credentials::{Credential, DockerAuth};

/// Largest token answer read (tokens are a few KiB).
const MAX_TOKEN_ANSWER: usize = 1 << 20;

/// Parses `Bearer realm="…",service="…",scope="…"` into its scheme and parameters.
pub(crate) fn parse_challenge(value: &str) -> (String, BTreeMap<String, String>) {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let mut params = BTreeMap::new();
    let mut rest = rest.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (val, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.insert(key, val.to_owned());
        rest = remainder.trim_start_matches([',', ' ']);
    }
    (scheme.to_ascii_lowercase(), params)
}

/// Percent-encodes a query parameter value.
pub(crate) fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether credentials may be sent to `uri`: https, or plain http to a host
/// the user allowed.
pub(crate) fn may_send_credentials(uri: &Uri, auth: &DockerAuth) -> bool {
    match uri.scheme_str() {
        Some("https") => true,
        _ => uri
            .authority()
            .is_some_and(|a| auth.plain_http_allowed(a.as_str())),
    }
}

/// A bearer token and how long it lives.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub token: String,
    /// Seconds; 0 when the realm did not say.
    pub expires_in: i64,
    /// Unix seconds; 0 when the realm did not say.
    pub issued_at: i64,
}

/// GETs a token from `realm` for `scopes`, with `credential` when allowed.
pub(crate) async fn fetch(
    realm: &str,
    service: Option<&str>,
    scopes: &[String],
    credential: Option<&Credential>,
    auth: &DockerAuth,
    timeout: Duration,
) -> Result<Token, String> {
    let mut url = realm.to_owned();
    let mut sep = if realm.contains('?') { '&' } else { '?' };
    for scope in scopes {
        url.push_str(&format!("{sep}scope={}", query_escape(scope)));
        sep = '&';
    }
    if let Some(service) = service {
        url.push_str(&format!("{sep}service={}", query_escape(service)));
    }
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("bad token realm {realm:?}: {e}"))?;
    if !matches!(uri.scheme_str(), Some("https" | "http")) {
        return Err(format!("bad token realm {realm:?}: not http(s)"));
    }
    let mut headers = Vec::new();
    if let Some(c) = credential.filter(|_| may_send_credentials(&uri, auth)) {
        headers.push((header::AUTHORIZATION, c.basic()));
    }
    let response = transport::send(Method::GET, &uri, &headers, Bytes::new(), timeout)
        .await
        .map_err(|e| format!("token service {realm}: {e}"))?;
    let status = response.status;
    let body = response
        .bytes(MAX_TOKEN_ANSWER)
        .await
        .map_err(|e| format!("token service {realm}: {e}"))?;
    if !status.is_success() {
        return Err(format!("token service {realm} answered {status}"));
    }
    let body: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("token service {realm}: {e}"))?;
    let token = body["token"]
        .as_str()
        .or(body["access_token"].as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("token service {realm} sent no token"))?;
    let issued_at = body["issued_at"]
        .as_str()
        .and_then(crate::units::parse_rfc3339)
        .map(|t| t as i64)
        .unwrap_or(0);
    Ok(Token {
        token: token.to_owned(),
        expires_in: body["expires_in"].as_i64().unwrap_or(0).max(0),
        issued_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_auth_challenges() {
        let (scheme, p) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(scheme, "bearer");
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull");
        let (scheme, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(scheme, "basic");
        assert_eq!(p["realm"], "Registry Realm");
    }

    #[test]
    fn escapes_token_query_values() {
        assert_eq!(
            query_escape("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
        assert_eq!(query_escape("registry.docker.io"), "registry.docker.io");
    }

    #[test]
    fn credentials_go_over_https_or_to_named_hosts_only() {
        let auth = DockerAuth::default().with_insecure_hosts(&["reg.lan:5000".into()]);
        let ok = |u: &str| may_send_credentials(&u.parse().unwrap(), &auth);
        assert!(ok("https://auth.example/token"));
        assert!(ok("http://reg.lan:5000/token"));
        assert!(!ok("http://127.0.0.1:5000/token"), "not named");
        assert!(!ok("http://auth.example/token"));
        assert!(!ok("http://reg.lan/token"));
    }
}
