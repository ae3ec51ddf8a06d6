//! A small OCI registry (distribution v2) client. strata sends raw LLB, which
//! carries no image config, so it reads a base image's config (ENV PATH, WORKDIR,
//! CMD…) itself, as BuildKit's Dockerfile frontend does; tests and benchmarks
//! read pushed images back through it.

mod artifact;
mod catalog;
mod index;
pub(crate) mod token;
mod transport;
mod write;

pub use index::IndexChild;
pub use write::RawManifest;

use std::collections::BTreeMap;
use std::io::Read;

use bytes::Bytes;
use http::{header, Method, StatusCode, Uri};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

pub use crate::reference::ImageRef;

use crate::credentials::DockerAuth;
use crate::llb::Platform;

/// Media types a manifest GET accepts: OCI and Docker, single and multi-platform.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// What went wrong talking to a registry; each names the image.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    BadReference(#[from] crate::reference::ReferenceError),
    #[error("cannot reach the registry of {image}: {reason}")]
    Unreachable { image: String, reason: String },
    #[error("{image}: {what} not found in its registry{detail}")]
    NotFound {
        image: String,
        /// `manifest`, `blob sha256:…`
        what: String,
        /// The registry's own words, as ` (manifest unknown)`, or empty.
        detail: String,
    },
    #[error("{image}: the registry refused access ({status}); log in with docker login or check ~/.docker/config.json")]
    Unauthorized { image: String, status: StatusCode },
    #[error("{image}: the registry answered {status} for {what}{detail}")]
    Status {
        image: String,
        what: String,
        status: StatusCode,
        /// The registry's own words, as ` (…)`, or empty.
        detail: String,
    },
    #[error("{image}: bad {what}: {reason}")]
    Invalid {
        image: String,
        what: String,
        reason: String,
    },
    #[error("{image} has no manifest for {platform} (it has: {available})")]
    NoPlatform {
        image: String,
        platform: String,
        available: String,
    },
}

/// Largest manifest, index or config read (real ones are a few KiB; an index
/// of hundreds of platforms stays well below).
pub const MAX_DOCUMENT: usize = 4 << 20;

/// Largest error body read for its message.
const MAX_ERROR_BODY: usize = 64 << 10;

/// Options of a [`Registry`] client.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Hosts reached over plain http, which may also get credentials over it
    /// (`--insecure-registry HOST`; loopback hosts are always plain http).
    pub insecure: Vec<String>,
    /// Credentials; anonymous when absent.
    pub auth: Option<DockerAuth>,
    /// Deadline for each connect, handshake, answer and chunk of an answer;
    /// none: 30 s.
    pub timeout: Option<std::time::Duration>,
}

/// A platform's manifest, and how it was found.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Digest of the platform's manifest.
    pub digest: String,
    /// Digest of the index it was picked from, for multi-platform images.
    pub index_digest: Option<String>,
    /// The manifest, Docker media types mapped to their OCI equivalents.
    pub manifest: ImageManifest,
    /// The media type the registry served the manifest as (Docker schema2 or
    /// OCI), before that mapping.
    pub media_type: String,
}

/// One request to a registry's API: what, and the token scopes it needs.
#[derive(Debug, Clone)]
struct Call {
    method: Method,
    /// Below `/v2/REPOSITORY/`.
    path: String,
    headers: Vec<(http::HeaderName, String)>,
    body: Bytes,
    /// Token scopes; empty: pull of the image's repository.
    scopes: Vec<String>,
}

impl Call {
    /// A read of the image's repository.
    fn pull(method: Method, path: &str, headers: Vec<(http::HeaderName, String)>) -> Call {
        Call {
            method,
            path: path.to_owned(),
            headers,
            body: Bytes::new(),
            scopes: Vec::new(),
        }
    }
}

/// A registry client: tokens are cached per host and scope.
#[derive(Debug, Default)]
pub struct Registry {
    options: RegistryOptions,
    tokens: Mutex<BTreeMap<String, String>>,
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The registry's explanation of a failure (`{"errors":[{"code","message"}]}`),
/// formatted as ` (message)`, or empty when the body has none.
fn registry_detail(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return String::new();
    };
    let messages: Vec<String> = value["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            e["message"]
                .as_str()
                .filter(|m| !m.is_empty())
                .or(e["code"].as_str())
                .map(str::to_owned)
        })
        .collect();
    if messages.is_empty() {
        String::new()
    } else {
        format!(" ({})", messages.join("; "))
    }
}

/// Whether an index entry's platform serves `wanted`: same OS and architecture,
/// and the variant if one is asked for (arm64's variant defaults to v8).
fn platform_matches(wanted: &Platform, os: &str, arch: &str, variant: &str) -> bool {
    // The manifest's names, normalised as the wanted platform was parsed.
    let (arch, variant) = crate::llb::normalize_arch(arch, variant);
    os == wanted.os
        && arch == wanted.architecture
        && (wanted.variant.is_empty() || variant == wanted.variant)
}

/// Reads a Docker schema2 or OCI manifest (they share a shape; the media types
/// differ, which strict parsers reject), mapping Docker's types to OCI ones.
fn normalize_media_types(mut value: serde_json::Value) -> serde_json::Value {
    fn map(t: &str) -> Option<&'static str> {
        Some(match t {
            "application/vnd.docker.distribution.manifest.v2+json" => {
                "application/vnd.oci.image.manifest.v1+json"
            }
            "application/vnd.docker.distribution.manifest.list.v2+json" => {
                "application/vnd.oci.image.index.v1+json"
            }
            "application/vnd.docker.container.image.v1+json" => {
                "application/vnd.oci.image.config.v1+json"
            }
            "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            }
            "application/vnd.docker.image.rootfs.diff.tar" => {
                "application/vnd.oci.image.layer.v1.tar"
            }
            _ => return None,
        })
    }
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(o) => {
                if let Some(serde_json::Value::String(t)) = o.get_mut("mediaType") {
                    if let Some(m) = map(t) {
                        *t = m.to_owned();
                    }
                }
                o.values_mut().for_each(walk);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut value);
    value
}

impl Registry {
    pub fn new(options: RegistryOptions) -> Registry {
        Registry {
            options,
            tokens: Mutex::new(BTreeMap::new()),
        }
    }

    fn timeout(&self) -> std::time::Duration {
        self.options.timeout.unwrap_or(transport::DEFAULT_TIMEOUT)
    }

    /// Credentials and which hosts may get them over plain http.
    fn auth(&self) -> DockerAuth {
        self.options
            .auth
            .clone()
            .unwrap_or_default()
            .with_insecure_hosts(&self.options.insecure)
    }

    fn scheme(&self, host: &str) -> &'static str {
        if crate::reference::is_loopback_host(host)
            || self.options.insecure.iter().any(|h| h == host)
        {
            "http"
        } else {
            "https"
        }
    }

    /// GET `path` on the image's registry, authenticating when challenged and
    /// following redirects (blob storage often lives elsewhere).
    async fn get(
        &self,
        image: &ImageRef,
        path: &str,
        accept: Option<&str>,
    ) -> Result<transport::Response, RegistryError> {
        let headers = accept
            .map(|a| vec![(header::ACCEPT, a.to_owned())])
            .unwrap_or_default();
        self.call(image, Call::pull(Method::GET, path, headers))
            .await
    }

    /// Runs `call` on the image's registry, authenticating when challenged;
    /// GET and HEAD follow redirects.
    async fn call(
        &self,
        image: &ImageRef,
        call: Call,
    ) -> Result<transport::Response, RegistryError> {
        let host = image.api_host();
        let mut url = format!(
            "{}://{host}/v2/{}/{}",
            self.scheme(host),
            image.repository,
            call.path
        );
        let scopes = if call.scopes.is_empty() {
            vec![format!("repository:{}:pull", image.repository)]
        } else {
            call.scopes.clone()
        };
        let token_key = format!("{host} {}", scopes.join(" "));
        let unreachable = |reason: String| RegistryError::Unreachable {
            image: image.to_string(),
            reason,
        };
        let follows = matches!(call.method, Method::GET | Method::HEAD);
        let mut authed = false;
        let auth = self.auth();
        for _ in 0..6 {
            let uri: Uri = url
                .parse()
                .map_err(|e| unreachable(format!("bad URL {url}: {e}")))?;
            let mut headers = call.headers.clone();
            // Credentials go only to the registry itself, never to a redirect
            // target, and over plain http only to a host named insecure.
            let same_host = uri.authority().map(|a| a.as_str()) == Some(host)
                && token::may_send_credentials(&uri, &auth);
            if same_host {
                if let Some(auth) = self.tokens.lock().await.get(&token_key) {
                    headers.push((header::AUTHORIZATION, auth.clone()));
                }
            }
            let response = transport::send(
                call.method.clone(),
                &uri,
                &headers,
                call.body.clone(),
                self.timeout(),
            )
            .await
            .map_err(unreachable)?;
            match response.status {
                s if s.is_redirection() && follows => {
                    let location = response
                        .headers
                        .get(header::LOCATION)
                        .and_then(|l| l.to_str().ok())
                        .ok_or_else(|| unreachable(format!("{s} without a Location")))?;
                    url = if location.starts_with('/') {
                        format!(
                            "{}://{}{location}",
                            uri.scheme_str().unwrap_or("https"),
                            uri.authority().map(|a| a.as_str()).unwrap_or(host)
                        )
                    } else {
                        location.to_owned()
                    };
                }
                StatusCode::UNAUTHORIZED if !authed && same_host => {
                    authed = true;
                    let challenge = response
                        .headers
                        .get(header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let auth = self.authorize(image, challenge, &scopes).await?;
                    self.tokens.lock().await.insert(token_key.clone(), auth);
                }
                _ => return Ok(response),
            }
        }
        Err(unreachable("too many redirects".into()))
    }

    /// Answers a 401 challenge: Basic with stored credentials, or a Bearer
    /// token from the realm (with credentials where allowed, anonymous otherwise).
    async fn authorize(
        &self,
        image: &ImageRef,
        challenge: &str,
        scopes: &[String],
    ) -> Result<String, RegistryError> {
        let unauthorized = || RegistryError::Unauthorized {
            image: image.to_string(),
            status: StatusCode::UNAUTHORIZED,
        };
        let auth = self.auth();
        let credential = auth.credential(&image.registry).await;
        let (scheme, params) = token::parse_challenge(challenge);
        match scheme.as_str() {
            "basic" => credential.map(|c| c.basic()).ok_or_else(unauthorized),
            "bearer" => {
                let realm = params.get("realm").ok_or_else(unauthorized)?;
                let service = params.get("service").map(String::as_str);
                let token = token::fetch(
                    realm,
                    service,
                    scopes,
                    credential.as_ref(),
                    &auth,
                    self.timeout(),
                )
                .await
                .map_err(|reason| RegistryError::Unreachable {
                    image: image.to_string(),
                    reason,
                })?;
                Ok(format!("Bearer {}", token.token))
            }
            _ => Err(unauthorized()),
        }
    }

    /// Fetches a manifest or index by tag or digest: its digest, the media type
    /// it was served as, and its JSON with Docker media types mapped to OCI ones.
    async fn fetch_manifest(
        &self,
        image: &ImageRef,
        reference: &str,
    ) -> Result<(String, String, serde_json::Value), RegistryError> {
        let invalid = |reason: String| RegistryError::Invalid {
            image: image.to_string(),
            what: "manifest".into(),
            reason,
        };
        let response = self
            .get(
                image,
                &format!("manifests/{reference}"),
                Some(MANIFEST_TYPES),
            )
            .await?;
        let response = self.check(image, "manifest", response).await?;
        let headers = response.headers.clone();
        let body = self.read(image, "manifest", response, MAX_DOCUMENT).await?;
        let digest = format!("sha256:{}", sha256_hex(&body));
        if reference.starts_with("sha256:") && reference != digest {
            return Err(invalid(format!(
                "content has digest {digest}, not {reference}"
            )));
        }
        let json: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| invalid(e.to_string()))?;
        if json["schemaVersion"] == 1 {
            return Err(invalid(
                "Docker schema 1 manifests are not supported (push the image again with a current client)".into(),
            ));
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
        let media_type = json["mediaType"]
            .as_str()
            .map(str::to_owned)
            .or(content_type)
            .unwrap_or_default();
        Ok((digest, media_type, normalize_media_types(json)))
    }

    /// The response if it succeeded; otherwise the error it stands for, with
    /// the registry's own words from its (capped) body.
    async fn check(
        &self,
        image: &ImageRef,
        what: &str,
        response: transport::Response,
    ) -> Result<transport::Response, RegistryError> {
        let status = response.status;
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes(MAX_ERROR_BODY).await.unwrap_or_default();
        Err(match status {
            StatusCode::NOT_FOUND => RegistryError::NotFound {
                image: image.to_string(),
                what: what.into(),
                detail: registry_detail(&body),
            },
            s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => RegistryError::Unauthorized {
                image: image.to_string(),
                status: s,
            },
            status => RegistryError::Status {
                image: image.to_string(),
                what: what.into(),
                status,
                detail: registry_detail(&body),
            },
        })
    }

    /// A successful response's body, up to `limit` bytes.
    async fn read(
        &self,
        image: &ImageRef,
        what: &str,
        response: transport::Response,
        limit: usize,
    ) -> Result<Bytes, RegistryError> {
        response
            .bytes(limit)
            .await
            .map_err(|reason| RegistryError::Invalid {
                image: image.to_string(),
                what: what.into(),
                reason,
            })
    }

    /// The manifest of `image` for `platform`, following an index if there is one.
    pub async fn manifest(
        &self,
        image: &ImageRef,
        platform: &Platform,
    ) -> Result<Resolved, RegistryError> {
        let invalid = |what: &str, e: String| RegistryError::Invalid {
            image: image.to_string(),
            what: what.into(),
            reason: e,
        };
        let (digest, media_type, json) = self.fetch_manifest(image, image.reference()).await?;
        let is_index = json["mediaType"] == "application/vnd.oci.image.index.v1+json"
            || (json.get("manifests").is_some() && json.get("layers").is_none());
        if !is_index {
            let manifest: ImageManifest =
                serde_json::from_value(json).map_err(|e| invalid("manifest", e.to_string()))?;
            return Ok(Resolved {
                digest,
                index_digest: None,
                manifest,
                media_type,
            });
        }
        let index: ImageIndex =
            serde_json::from_value(json).map_err(|e| invalid("index", e.to_string()))?;
        let mut available = Vec::new();
        let mut chosen = None;
        for m in index.manifests() {
            let Some(p) = m.platform() else { continue };
            let (os, arch) = (p.os().to_string(), p.architecture().to_string());
            let variant = p.variant().clone().unwrap_or_default();
            if os == "unknown" {
                continue; // attestation manifests
            }
            available.push(format!(
                "{os}/{arch}{}",
                if variant.is_empty() {
                    String::new()
                } else {
                    format!("/{variant}")
                }
            ));
            if chosen.is_none() && platform_matches(platform, &os, &arch, &variant) {
                chosen = Some(m.digest().to_string());
            }
        }
        // An index of one manifest with no platform: that manifest is the image.
        if chosen.is_none() && index.manifests().len() == 1 {
            if let Some(only) = index.manifests().first().filter(|m| m.platform().is_none()) {
                chosen = Some(only.digest().to_string());
            }
        }
        let Some(chosen) = chosen else {
            return Err(RegistryError::NoPlatform {
                image: image.to_string(),
                platform: platform.to_string(),
                available: if available.is_empty() {
                    "none".into()
                } else {
                    available.join(", ")
                },
            });
        };
        let (manifest_digest, media_type, json) = self.fetch_manifest(image, &chosen).await?;
        if json.get("layers").is_none() {
            return Err(invalid(
                "manifest",
                format!("{chosen} in the index is not an image manifest"),
            ));
        }
        let manifest: ImageManifest =
            serde_json::from_value(json).map_err(|e| invalid("manifest", e.to_string()))?;
        Ok(Resolved {
            digest: manifest_digest,
            index_digest: Some(digest),
            manifest,
            media_type,
        })
    }

    /// The platform's manifest and the image config it points to.
    pub async fn config(
        &self,
        image: &ImageRef,
        platform: &Platform,
    ) -> Result<(Resolved, ImageConfiguration), RegistryError> {
        let (resolved, config, _) = self.config_and_bytes(image, platform).await?;
        Ok((resolved, config))
    }

    /// [`Registry::config`], and the config's bytes as the registry served
    /// them (fields oci-spec does not model, as docker's `Healthcheck`,
    /// survive in them).
    pub async fn config_and_bytes(
        &self,
        image: &ImageRef,
        platform: &Platform,
    ) -> Result<(Resolved, ImageConfiguration, Bytes), RegistryError> {
        let resolved = self.manifest(image, platform).await?;
        let digest = resolved.manifest.config().digest().to_string();
        let blob = self.blob(image, &digest).await?;
        let config = serde_json::from_slice(&blob).map_err(|e| RegistryError::Invalid {
            image: image.to_string(),
            what: format!("image config {digest}"),
            reason: e.to_string(),
        })?;
        Ok((resolved, config, blob))
    }

    /// A small blob (a config) by digest, checked against it, up to
    /// [`MAX_DOCUMENT`] bytes. Layers go through [`Registry::blob_to`].
    pub async fn blob(&self, image: &ImageRef, digest: &str) -> Result<Bytes, RegistryError> {
        let mut body = Vec::new();
        self.stream_blob(image, digest, |chunk| {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                return Err(format!("larger than {} MiB", MAX_DOCUMENT >> 20));
            }
            body.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        Ok(body.into())
    }

    /// Streams blob `digest` into `sink`, hashing as it goes; an error if the
    /// content does not have that digest (what was written is then garbage).
    pub async fn blob_to(
        &self,
        image: &ImageRef,
        digest: &str,
        sink: &mut impl std::io::Write,
    ) -> Result<u64, RegistryError> {
        self.stream_blob(image, digest, |chunk| {
            sink.write_all(chunk).map_err(|e| e.to_string())
        })
        .await
    }

    async fn stream_blob(
        &self,
        image: &ImageRef,
        digest: &str,
        mut each: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<u64, RegistryError> {
        let what = format!("blob {digest}");
        let invalid = |reason: String| RegistryError::Invalid {
            image: image.to_string(),
            what: what.clone(),
            reason,
        };
        let hex = digest.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                "not a sha256 digest (only sha256 is supported)".into(),
            ));
        }
        let response = self.get(image, &format!("blobs/{digest}"), None).await?;
        let response = self.check(image, &what, response).await?;
        let mut hasher = Sha256::new();
        let size = response
            .stream(|chunk| {
                hasher.update(chunk);
                each(chunk)
            })
            .await
            .map_err(invalid)?;
        let actual: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if actual != hex {
            return Err(invalid(format!(
                "digest mismatch: the content has digest sha256:{actual}"
            )));
        }
        Ok(size)
    }

    /// The file paths in each layer of the platform's image, in layer order
    /// (for checking what an image carries, e.g. that no secret leaked into it).
    /// Layers may be gzipped or plain tar.
    pub async fn layer_paths(
        &self,
        image: &ImageRef,
        platform: &Platform,
    ) -> Result<Vec<Vec<String>>, RegistryError> {
        let resolved = self.manifest(image, platform).await?;
        let mut layers = Vec::new();
        for layer in resolved.manifest.layers() {
            let digest = layer.digest().to_string();
            let media_type = layer.media_type().to_string();
            if media_type.contains("zstd") {
                return Err(RegistryError::Invalid {
                    image: image.to_string(),
                    what: format!("layer {digest}"),
                    reason: format!("{media_type} layers are not supported"),
                });
            }
            let bad = |e: std::io::Error| RegistryError::Invalid {
                image: image.to_string(),
                what: format!("layer {digest}"),
                reason: e.to_string(),
            };
            let mut file = tempfile::tempfile().map_err(bad)?;
            self.blob_to(image, &digest, &mut file).await?;
            use std::io::Seek;
            file.rewind().map_err(bad)?;
            layers.push(tar_paths(std::io::BufReader::new(file)).map_err(bad)?);
        }
        Ok(layers)
    }
}

/// The entry paths of a tar archive, gunzipped first if it is gzip.
fn tar_paths(mut blob: impl std::io::BufRead) -> std::io::Result<Vec<String>> {
    let gzip = blob.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read + '_> = if gzip {
        Box::new(flate2::read::GzDecoder::new(blob))
    } else {
        Box::new(blob)
    };
    let mut archive = tar::Archive::new(reader);
    let mut paths = Vec::new();
    for entry in archive.entries()? {
        let entry = entry?;
        paths.push(entry.path()?.to_string_lossy().into_owned());
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_media_types_read_as_oci() {
        let docker = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 2,
                       "digest": format!("sha256:{}", "a".repeat(64))},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 3,
                        "digest": format!("sha256:{}", "b".repeat(64))}]
        });
        let m: ImageManifest = serde_json::from_value(normalize_media_types(docker)).unwrap();
        assert_eq!(m.layers().len(), 1);
    }

    #[test]
    fn docker_media_type_is_kept_apart_from_the_mapped_manifest() {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
            "manifests": [{"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                           "size": 1, "digest": format!("sha256:{}", "c".repeat(64)),
                           "platform": {"os": "linux", "architecture": "amd64"}}]
        });
        let mapped = normalize_media_types(index);
        assert_eq!(
            mapped["mediaType"],
            "application/vnd.oci.image.index.v1+json"
        );
        assert_eq!(
            mapped["manifests"][0]["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        let index: ImageIndex = serde_json::from_value(mapped).unwrap();
        assert_eq!(index.manifests().len(), 1);
        // Unknown types pass through untouched.
        let other = normalize_media_types(serde_json::json!({"mediaType": "x/y"}));
        assert_eq!(other["mediaType"], "x/y");
    }

    #[test]
    fn matches_platforms() {
        let p = |s: &str| s.parse::<Platform>().unwrap();
        assert!(platform_matches(&p("linux/amd64"), "linux", "amd64", ""));
        assert!(!platform_matches(&p("linux/amd64"), "linux", "arm64", ""));
        assert!(!platform_matches(&p("linux/amd64"), "windows", "amd64", ""));
        assert!(platform_matches(&p("linux/arm/v7"), "linux", "arm", "v7"));
        assert!(!platform_matches(&p("linux/arm/v7"), "linux", "arm", "v6"));
        // arm alone is arm/v7, on either side.
        assert!(platform_matches(&p("linux/arm"), "linux", "arm", ""));
        assert!(!platform_matches(&p("linux/arm"), "linux", "arm", "v6"));
        // No variant asked: any will do.
        let any_arm = Platform {
            variant: String::new(),
            ..p("linux/arm")
        };
        assert!(platform_matches(&any_arm, "linux", "arm", "v6"));
        // arm64 means arm64/v8.
        assert!(platform_matches(&p("linux/arm64/v8"), "linux", "arm64", ""));
        assert!(platform_matches(&p("linux/arm64"), "linux", "arm64", "v8"));
        assert!(platform_matches(&p("linux/arm64"), "linux", "aarch64", ""));
    }

    #[test]
    fn reads_registry_error_bodies() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"nope"}}]}"#;
        assert_eq!(registry_detail(body), " (manifest unknown)");
        assert_eq!(
            registry_detail(br#"{"errors":[{"code":"DENIED"}]}"#),
            " (DENIED)"
        );
        assert_eq!(registry_detail(b""), "");
        assert_eq!(registry_detail(b"<html>"), "");
    }

    #[test]
    fn lists_tar_and_tar_gzip_layers() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "etc/debian_version", &b"12\n"[..])
            .unwrap();
        let plain = builder.into_inner().unwrap();
        assert_eq!(tar_paths(&plain[..]).unwrap(), ["etc/debian_version"]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &plain).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(tar_paths(&gz[..]).unwrap(), ["etc/debian_version"]);
    }

    #[test]
    fn errors_name_the_image_on_one_line() {
        let e = RegistryError::NotFound {
            image: "127.0.0.1:5000/strata/debian:nope".into(),
            what: "manifest".into(),
            detail: " (manifest unknown)".into(),
        };
        assert_eq!(
            e.to_string(),
            "127.0.0.1:5000/strata/debian:nope: manifest not found in its registry (manifest unknown)"
        );
        let e = RegistryError::NoPlatform {
            image: "x/y:z".into(),
            platform: "linux/riscv64".into(),
            available: "linux/amd64, linux/arm64/v8".into(),
        };
        assert!(!e.to_string().contains('\n'));
        assert!(e.to_string().contains("linux/amd64, linux/arm64/v8"));
    }

    #[test]
    fn loopback_hosts_use_http() {
        let r = Registry::new(RegistryOptions::default());
        assert_eq!(r.scheme("127.0.0.1:5000"), "http");
        assert_eq!(r.scheme("localhost:5000"), "http");
        assert_eq!(r.scheme("[::1]:5000"), "http");
        assert_eq!(r.scheme("registry.example:5000"), "https");
    }
}
