//! A build cache in an S3 bucket (BuildKit's `type=s3` backend): where it is,
//! parsed once from the option text, and the credentials that reach it,
//! taken from strata's environment at the edge as buildx takes them — never
//! from the option text, which is printed in errors, progress and
//! `--metadata-file`.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use super::attrs::{Attrs, OptionError};

/// Where an S3 cache is: BuildKit's attributes, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Cache {
    pub bucket: String,
    /// `None` until resolved: then `AWS_REGION` of strata's environment.
    pub region: Option<String>,
    /// A self-hosted server's URL (`http://127.0.0.1:8333`); none: AWS.
    pub endpoint_url: Option<String>,
    /// `BUCKET` in the path, not the host name (what self-hosted servers need).
    pub use_path_style: bool,
    /// Put before both prefixes below (`ci/`).
    pub prefix: String,
    /// Where blobs go under `prefix`; none: BuildKit's `blobs/`.
    pub blobs_prefix: Option<String>,
    /// Where manifests go under `prefix`; none: BuildKit's `manifests/`.
    pub manifests_prefix: Option<String>,
    /// The cache manifests' names (`name=main;pr-12`): an export writes each,
    /// an import reads the first that exists. Empty: BuildKit's `buildkit`.
    pub names: Vec<String>,
    /// How old a blob found present may be before the export touches it
    /// (BuildKit's default: 24h).
    pub touch_refresh: Option<Duration>,
    /// Parts uploaded at once (daemons that support it; BuildKit 0.13 ignores it).
    pub upload_parallelism: Option<NonZeroU32>,
    /// Filled in at resolution from strata's environment; sent to the
    /// daemon, never printed.
    pub credentials: Option<S3Credentials>,
}

/// An S3 key pair (and session token), from `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("S3Credentials(redacted)")
    }
}

/// What strata's environment says about S3, read once at the edge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Env {
    /// `AWS_REGION`, the region of entries without `region=`.
    pub region: Option<String>,
    /// Sent with every S3 cache entry when both key variables are set.
    pub credentials: Option<S3Credentials>,
}

impl S3Env {
    /// From `lookup` (the process environment at the CLI edge); empty values
    /// count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> S3Env {
        let get = |k: &str| lookup(k).filter(|v| !v.is_empty());
        let credentials = match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret_access_key)) => Some(S3Credentials {
                access_key_id,
                secret_access_key,
                session_token: get("AWS_SESSION_TOKEN"),
            }),
            _ => None,
        };
        S3Env {
            region: get("AWS_REGION"),
            credentials,
        }
    }
}

/// What a refused key pair is said as, wherever strata meets it (the
/// daemon's export, strata's own requests to the bucket).
pub const ACCESS_DENIED: &str = "access denied: the server refused the key pair \
     (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or its rights on the bucket";

/// Attributes of the location; `mode` and `ignore-error` are the export's.
pub(super) const S3_ATTRS: &[&str] = &[
    "bucket",
    "region",
    "endpoint_url",
    "use_path_style",
    "prefix",
    "blobs_prefix",
    "manifests_prefix",
    "name",
    "touch_refresh",
    "upload_parallelism",
];

/// BuildKit takes these as attributes too; strata refuses them in the text.
const CREDENTIAL_ATTRS: &[&str] = &["access_key_id", "secret_access_key", "session_token"];

/// Refuses credentials written into an option, showing the value with them
/// blanked out (the error is printed).
pub(super) fn refuse_credentials(flag: &'static str, value: &str) -> Result<(), OptionError> {
    let has = |part: &str| {
        CREDENTIAL_ATTRS
            .iter()
            .any(|k| part.trim().starts_with(&format!("{k}=")))
    };
    if !value.split(',').any(has) {
        return Ok(());
    }
    let shown: Vec<String> = value
        .split(',')
        .map(|part| match part.split_once('=') {
            Some((k, _)) if has(part) => format!("{k}=***"),
            _ => part.to_owned(),
        })
        .collect();
    Err(OptionError::new(
        flag,
        &shown.join(","),
        "credentials are taken from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and \
         AWS_SESSION_TOKEN, never from the option (it is printed)",
    ))
}

impl Attrs {
    pub(super) fn s3(&mut self) -> Result<S3Cache, OptionError> {
        let bucket = self.need("bucket")?;
        let endpoint_url = self.take("endpoint_url");
        if let Some(url) = &endpoint_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(self.error(format!(
                    "endpoint_url is an http:// or https:// URL, not {url:?}"
                )));
            }
        }
        let touch_refresh = match self.take("touch_refresh") {
            None => None,
            Some(t) => Some(
                crate::units::parse_duration(&t)
                    .map_err(|e| self.error(format!("touch_refresh: {e}")))?,
            ),
        };
        let upload_parallelism = match self.take("upload_parallelism") {
            None => None,
            Some(n) => Some(n.parse().map_err(|_| {
                self.error(format!("upload_parallelism is a number above 0, not {n:?}"))
            })?),
        };
        let names = match self.take("name") {
            None => Vec::new(),
            Some(list) => list
                .split(';')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect(),
        };
        Ok(S3Cache {
            bucket,
            region: self.take("region").filter(|r| !r.is_empty()),
            endpoint_url,
            use_path_style: self.flag("use_path_style")?.unwrap_or(false),
            prefix: self.take("prefix").unwrap_or_default(),
            blobs_prefix: self.take("blobs_prefix"),
            manifests_prefix: self.take("manifests_prefix"),
            names,
            touch_refresh,
            upload_parallelism,
            credentials: None,
        })
    }
}

impl S3Cache {
    /// The region and credentials from `env` where the entry has none; an
    /// entry still without a region cannot be used (BuildKit would fail it
    /// late, or take the daemon's own `AWS_REGION`).
    pub fn resolve(&mut self, env: &S3Env) -> Result<(), String> {
        if self.region.is_none() {
            self.region = env.region.clone();
        }
        if self.region.is_none() {
            return Err(format!(
                "type=s3,bucket={} needs region= (or AWS_REGION in strata's environment)",
                self.bucket
            ));
        }
        if self.credentials.is_none() {
            self.credentials = env.credentials.clone();
        }
        Ok(())
    }

    /// The location's attributes as the option text has them (no credentials).
    pub(super) fn attrs(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![("bucket", self.bucket.clone())];
        let mut push = |k: &'static str, v: Option<String>| out.extend(v.map(|v| (k, v)));
        push("region", self.region.clone());
        push("endpoint_url", self.endpoint_url.clone());
        push("use_path_style", self.use_path_style.then(|| "true".into()));
        push(
            "prefix",
            Some(self.prefix.clone()).filter(|p| !p.is_empty()),
        );
        push("blobs_prefix", self.blobs_prefix.clone());
        push("manifests_prefix", self.manifests_prefix.clone());
        push("name", Some(self.names.join(";")).filter(|n| !n.is_empty()));
        push("touch_refresh", self.touch_refresh.map(go_duration));
        push(
            "upload_parallelism",
            self.upload_parallelism.map(|n| n.to_string()),
        );
        out
    }

    /// What the daemon is sent: the location, then the credentials.
    pub(super) fn wire_attrs(&self) -> Vec<(&'static str, String)> {
        let mut out = self.attrs();
        out.extend(self.credential_attrs());
        out
    }

    /// The credentials as BuildKit's attributes (none when not set).
    pub(super) fn credential_attrs(&self) -> Vec<(&'static str, String)> {
        let Some(c) = &self.credentials else {
            return Vec::new();
        };
        let mut out = vec![
            ("access_key_id", c.access_key_id.clone()),
            ("secret_access_key", c.secret_access_key.clone()),
        ];
        out.extend(c.session_token.clone().map(|t| ("session_token", t)));
        out
    }

    /// This entry reading (or writing) the one manifest `name`.
    pub fn named(&self, name: &str) -> S3Cache {
        S3Cache {
            names: vec![name.to_owned()],
            ..self.clone()
        }
    }

    /// `s3://BUCKET/KEY` of the first manifest, for reports.
    pub fn location(&self) -> String {
        let manifests = self.manifests_prefix.as_deref().unwrap_or("manifests/");
        let name = self.names.first().map_or("buildkit", String::as_str);
        format!("s3://{}/{}{manifests}{name}", self.bucket, self.prefix)
    }
}

/// A duration as Go's `time.ParseDuration` reads it back, in its largest
/// whole unit.
fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    match () {
        _ if d.subsec_nanos() != 0 => format!("{}ms", d.as_millis()),
        _ if s != 0 && s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s != 0 && s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_the_environment_whole_or_not_at_all() {
        let env = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            S3Env::from_lookup(move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
        };
        assert_eq!(env(&[("AWS_ACCESS_KEY_ID", "k")]).credentials, None);
        let full = env(&[
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "sekrit"),
            ("AWS_REGION", "eu-west-1"),
        ]);
        assert_eq!(full.region.as_deref(), Some("eu-west-1"));
        let creds = full.credentials.clone().unwrap();
        assert_eq!(creds.session_token, None);
        assert!(!format!("{full:?}").contains("sekrit"), "{full:?}");
        assert_eq!(format!("{creds:?}"), "S3Credentials(redacted)");
    }

    #[test]
    fn go_durations_read_back() {
        assert_eq!(go_duration(Duration::from_secs(86400)), "24h");
        assert_eq!(go_duration(Duration::from_secs(90)), "90s");
        assert_eq!(go_duration(Duration::from_secs(120)), "2m");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
    }
}
