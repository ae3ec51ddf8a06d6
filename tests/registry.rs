//! The registry client against the real local registry (Debian's
//! docker-registry from the daemon stack): the base image's manifest, config
//! and layers, a multi-platform index, and clear failures.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::stack;
use sha2::{Digest, Sha256};
use strata::llb::Platform;
use strata::registry::{ImageRef, Registry, RegistryError, RegistryOptions};

fn registry() -> Registry {
    Registry::new(RegistryOptions::default())
}

fn image(reference: &str) -> ImageRef {
    reference.parse().unwrap_or_else(|e| panic!("{e}"))
}

fn sha256(data: &[u8]) -> String {
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// One plain HTTP/1.1 request to the local registry: status, headers, body.
fn http(
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(&stack().registry).expect("connecting to the registry");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        stack().registry,
        body.len()
    );
    if let Some(t) = content_type {
        request.push_str(&format!("Content-Type: {t}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, head, response[split + 4..].to_vec())
}

#[tokio::test]
async fn reads_the_base_image_manifest_and_config() {
    let s = stack();
    let base = image(&s.base_image);
    assert_eq!(base.registry, s.registry);
    assert_eq!(base.to_string(), s.base_image);

    let (resolved, config) = registry()
        .config(&base, &Platform::host())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(resolved.digest.starts_with("sha256:"), "{resolved:?}");
    assert!(
        resolved.media_type == "application/vnd.docker.distribution.manifest.v2+json"
            || resolved.media_type == "application/vnd.oci.image.manifest.v1+json",
        "{}",
        resolved.media_type
    );
    assert!(!resolved.manifest.layers().is_empty(), "{resolved:?}");
    assert_eq!(config.os().to_string(), "linux");
    assert_eq!(
        config.architecture().to_string(),
        Platform::host().architecture
    );
    let env = config
        .config()
        .as_ref()
        .and_then(|c| c.env().clone())
        .unwrap_or_default();
    assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");

    // The same manifest pinned by digest.
    let pinned = image(&format!(
        "{}/{}@{}",
        base.registry, base.repository, resolved.digest
    ));
    let again = registry()
        .manifest(&pinned, &Platform::host())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.digest, resolved.digest);
    assert_eq!(again.index_digest, None);
}

#[tokio::test]
async fn fetches_layer_blobs_and_checks_their_digest() {
    let base = image(&stack().base_image);
    let resolved = registry()
        .manifest(&base, &Platform::host())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let layer = &resolved.manifest.layers()[0];
    let digest = layer.digest().to_string();
    // Layers are streamed, digest-checked on the way.
    let mut blob = Vec::new();
    let size = registry()
        .blob_to(&base, &digest, &mut blob)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sha256(&blob), digest);
    assert_eq!(size, layer.size());
    assert_eq!(blob.len() as u64, layer.size());
    // Read whole, a blob is capped (configs, not layers).
    let err = registry().blob(&base, &digest).await.unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");

    // A blob that is not there is named in the error.
    let missing = format!("sha256:{}", "0".repeat(64));
    let err = registry().blob(&base, &missing).await.unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&missing) && msg.contains(&stack().base_image),
        "{msg}"
    );
}

#[tokio::test]
async fn lists_the_paths_in_each_layer() {
    let base = image(&stack().base_image);
    let layers = registry()
        .layer_paths(&base, &Platform::host())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!layers.is_empty());
    assert!(
        layers
            .iter()
            .flatten()
            .any(|p| p.trim_start_matches("./").trim_start_matches('/') == "etc/debian_version"),
        "no etc/debian_version in {} layers",
        layers.len()
    );
}

#[tokio::test]
async fn a_missing_tag_is_a_clear_not_found() {
    let s = stack();
    let reference = format!("{}/strata/debian:no-such-tag", s.registry);
    let err = registry()
        .config(&image(&reference), &Platform::host())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&reference), "{msg}");
    assert!(msg.contains("not found"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");

    // A missing repository too.
    let reference = format!("{}/strata/no-such-repo:latest", s.registry);
    let err = registry()
        .manifest(&image(&reference), &Platform::host())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains(&reference), "{err}");
}

#[tokio::test]
async fn an_unreachable_registry_is_a_clear_error() {
    let reference = "127.0.0.1:1/strata/debian:bookworm";
    let err = registry()
        .manifest(&image(reference), &Platform::host())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(reference), "{msg}");
    assert!(
        msg.contains("127.0.0.1:1") && msg.contains("refused"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
}

/// Pushes an OCI index over the base image's manifest (listed for the host
/// platform, s390x, and an attestation-style unknown/unknown entry), then
/// resolves it for the host and for a platform it lacks.
#[tokio::test]
async fn follows_an_index_to_the_platform_manifest() {
    let s = stack();
    let base = image(&s.base_image);
    let resolved = registry()
        .manifest(&base, &Platform::host())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The manifest's exact bytes, for its size and media type.
    let (status, head, manifest) = {
        let path = format!("/v2/{}/manifests/{}", base.repository, resolved.digest);
        let mut stream = TcpStream::connect(&s.registry).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: {}\r\n\r\n",
            s.registry, resolved.media_type
        )
        .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&response[..split]).into_owned();
        let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, head, response[split + 4..].to_vec())
    };
    assert_eq!(status, 200, "{head}");
    assert_eq!(sha256(&manifest), resolved.digest);

    let host = Platform::host();
    let entry = |os: &str, arch: &str| {
        serde_json::json!({
            "mediaType": resolved.media_type,
            "digest": resolved.digest,
            "size": manifest.len(),
            "platform": {"os": os, "architecture": arch},
        })
    };
    let other_arch = if host.architecture == "s390x" {
        "ppc64le"
    } else {
        "s390x"
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            entry("linux", other_arch),
            entry("unknown", "unknown"),
            entry("linux", &host.architecture),
        ],
    });
    let index = serde_json::to_vec(&index).unwrap();
    let tag = "registry-test-index";
    let (status, head, body) = http(
        "PUT",
        &format!("/v2/{}/manifests/{tag}", base.repository),
        Some("application/vnd.oci.image.index.v1+json"),
        &index,
    );
    assert_eq!(
        status,
        201,
        "pushing the index: {head}\n{}",
        String::from_utf8_lossy(&body)
    );

    let indexed = image(&format!("{}/{}:{tag}", base.registry, base.repository));
    let picked = registry()
        .manifest(&indexed, &host)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(picked.digest, resolved.digest);
    assert_eq!(
        picked.index_digest.as_deref(),
        Some(sha256(&index).as_str())
    );
    assert_eq!(picked.media_type, resolved.media_type);
    assert_eq!(
        picked.manifest.layers().len(),
        resolved.manifest.layers().len()
    );

    let riscv: Platform = "linux/riscv64".parse().unwrap();
    let err = registry().manifest(&indexed, &riscv).await.unwrap_err();
    assert!(matches!(err, RegistryError::NoPlatform { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&indexed.to_string()) && msg.contains("linux/riscv64"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("linux/{other_arch}"))
            && msg.contains(&format!("linux/{}", host.architecture)),
        "{msg}"
    );
    assert!(!msg.contains("unknown/unknown"), "{msg}");
}

fn quick(options: RegistryOptions) -> Registry {
    Registry::new(RegistryOptions {
        timeout: Some(std::time::Duration::from_secs(1)),
        ..options
    })
}

#[tokio::test]
async fn a_registry_that_never_answers_is_given_up_on_naming_it() {
    let (addr, _) =
        common::hostile_http(|_, _| std::thread::sleep(std::time::Duration::from_secs(600)));
    let err = quick(RegistryOptions::default())
        .manifest(&image(&format!("{addr}/x:y")), &Platform::host())
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, RegistryError::Unreachable { .. }),
        "{message}"
    );
    assert!(
        message.contains(&addr) && message.contains("no answer"),
        "{message}"
    );
}

#[tokio::test]
async fn an_endless_manifest_is_refused_not_buffered() {
    let (addr, _) = common::hostile_http(|stream, _| {
        let head =
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n\
                    Transfer-Encoding: chunked\r\n\r\n";
        if stream.write_all(head.as_bytes()).is_err() {
            return;
        }
        let chunk = format!("{:x}\r\n{}\r\n", 65536, " ".repeat(65536));
        while stream.write_all(chunk.as_bytes()).is_ok() {}
    });
    let err = quick(RegistryOptions::default())
        .manifest(&image(&format!("{addr}/x:y")), &Platform::host())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
}

/// A registry asking for Basic auth over plain http gets the stored
/// credentials only when its host was named insecure; a token realm on plain
/// http likewise.
#[tokio::test]
async fn credentials_go_over_plain_http_only_to_hosts_named_insecure() {
    for challenge in ["basic", "bearer"] {
        let (addr, seen) = common::hostile_http(|stream, head| {
            let answer = if head.starts_with("GET /token") {
                "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"token\":\"tok\"}".to_owned()
            } else if head.contains("authorization: Bearer tok") {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned()
            } else {
                let port = head
                    .lines()
                    .find_map(|l| l.strip_prefix("host: "))
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                let scheme = if head.contains("/basic/") {
                    "Basic realm=\"r\"".to_owned()
                } else {
                    format!("Bearer realm=\"http://{port}/token\",service=\"s\"")
                };
                format!("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {scheme}\r\nContent-Length: 0\r\n\r\n")
            };
            let _ = stream.write_all(answer.as_bytes());
        });
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("config.json");
        std::fs::write(
            &config,
            format!(r#"{{"auths": {{"{addr}": {{"username": "u", "password": "hunter2"}}}}}}"#),
        )
        .unwrap();
        let auth = strata::credentials::DockerAuth::from_file(&config);
        let reference = image(&format!("{addr}/{challenge}/x:y"));
        let sent_password = |seen: &std::sync::Mutex<Vec<String>>| {
            seen.lock()
                .unwrap()
                .iter()
                .any(|h| h.contains("authorization: Basic"))
        };
        let unnamed = quick(RegistryOptions {
            auth: Some(auth.clone()),
            ..Default::default()
        });
        assert!(unnamed
            .manifest(&reference, &Platform::host())
            .await
            .is_err());
        assert!(
            !sent_password(&seen),
            "{challenge}: {:?}",
            seen.lock().unwrap()
        );
        let named = quick(RegistryOptions {
            auth: Some(auth),
            insecure: vec![addr.clone()],
            ..Default::default()
        });
        let _ = named.manifest(&reference, &Platform::host()).await;
        assert!(
            sent_password(&seen),
            "{challenge}: {:?}",
            seen.lock().unwrap()
        );
    }
}

/// A manifest sent one byte every 300 ms (each byte well within the
/// per-chunk deadline) ends at the document's one deadline, not after
/// thousands of seconds.
#[tokio::test]
async fn a_trickled_manifest_ends_at_one_deadline() {
    let (addr, _) = common::hostile_http(|stream, _| {
        let head =
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n\
                    Content-Length: 100000\r\n\r\n";
        if stream.write_all(head.as_bytes()).is_err() {
            return;
        }
        while stream.write_all(b" ").is_ok() {
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    });
    let began = std::time::Instant::now();
    let err = quick(RegistryOptions::default())
        .manifest(&image(&format!("{addr}/x:y")), &Platform::host())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("did not arrive whole"), "{err}");
    assert!(
        began.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        began.elapsed()
    );
}
