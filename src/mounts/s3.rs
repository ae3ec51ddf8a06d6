//! Cache-mount artifacts in an S3 cache's bucket. The daemon cannot write to
//! S3 itself (its s3 backend carries build cache only), so an artifact goes
//! through an OCI layout staged on this machine: the export's solve writes
//! it there through the session, strata uploads the blobs the bucket lacks
//! and then the pointer; a seed downloads the blobs into a staged layout the
//! seed's solve reads. Blobs are content-addressed (checked on the way in),
//! and the pointer is written last, so an interrupted upload leaves the
//! previous artifact whole.

use bytes::Bytes;

use crate::cleanup::TempPath;
use crate::objectstore::Bucket;
use crate::ocilayout::OciLayout;
use crate::options::S3Cache;

/// An OCI layout in the temp directory, removed when dropped (also on a signal).
pub struct Staged {
    guard: TempPath,
}

impl Staged {
    pub fn new() -> std::io::Result<Staged> {
        let id = crate::ids::random_id();
        let guard = TempPath::new(std::env::temp_dir().join(format!("strata-s3-{}", &id[..16])));
        OciLayout::new(guard.path()).init()?;
        Ok(Staged { guard })
    }

    pub fn dir(&self) -> &std::path::Path {
        self.guard.path()
    }

    fn layout(&self) -> OciLayout {
        OciLayout::new(self.guard.path())
    }
}

/// Why an artifact could not be read from or written to the bucket.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct S3ArtifactError(String);

fn s3_error(e: impl std::fmt::Display) -> S3ArtifactError {
    S3ArtifactError(e.to_string())
}

/// The artifact `name` points at: its manifest's digest and the manifest.
pub async fn find(
    cache: &S3Cache,
    name: &str,
) -> Result<Option<(String, serde_json::Value)>, S3ArtifactError> {
    let bucket = Bucket::open(cache).map_err(s3_error)?;
    let Some(pointer) = bucket.mount_pointer(name).await.map_err(s3_error)? else {
        return Ok(None);
    };
    let pointer: serde_json::Value = serde_json::from_slice(&pointer)
        .map_err(|e| s3_error(format!("{}: {e}", bucket.mount_url(name))))?;
    let Some(digest) = pointer["digest"].as_str() else {
        return Err(s3_error(format!("{}: no digest", bucket.mount_url(name))));
    };
    let Some(manifest) = bucket.blob(digest).await.map_err(s3_error)? else {
        return Ok(None);
    };
    let manifest = serde_json::from_slice(&manifest)
        .map_err(|e| s3_error(format!("manifest {digest}: {e}")))?;
    Ok(Some((digest.to_owned(), manifest)))
}

/// Every blob of `manifest`: config, layers, then the manifest itself.
fn blobs_of(digest: &str, manifest: &serde_json::Value) -> Vec<String> {
    let config = manifest["config"]["digest"].as_str().map(str::to_owned);
    let layers = manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["digest"].as_str().map(str::to_owned));
    config
        .into_iter()
        .chain(layers)
        .chain([digest.to_owned()])
        .collect()
}

/// Uploads the artifact `digest` of `staged` as `name`: the blobs the
/// bucket lacks, then the pointer. Returns the bytes sent.
pub async fn upload(
    cache: &S3Cache,
    staged: &Staged,
    digest: &str,
    name: &str,
) -> Result<u64, S3ArtifactError> {
    let bucket = Bucket::open(cache).map_err(s3_error)?;
    let layout = staged.layout();
    let read = |d: &str| -> Result<Bytes, S3ArtifactError> {
        let path = layout.blob_path(d).map_err(s3_error)?;
        std::fs::read(&path)
            .map(Bytes::from)
            .map_err(|e| s3_error(format!("{}: {e}", path.display())))
    };
    let manifest_bytes = read(digest)?;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).map_err(s3_error)?;
    let mut sent = 0;
    for blob in blobs_of(digest, &manifest) {
        if bucket.has_blob(&blob).await.map_err(s3_error)? {
            continue;
        }
        let bytes = read(&blob)?;
        sent += bytes.len() as u64;
        bucket.put_blob(&blob, bytes).await.map_err(s3_error)?;
    }
    let pointer = serde_json::json!({
        "mediaType": manifest["mediaType"],
        "digest": digest,
        "size": manifest_bytes.len(),
        "annotations": manifest["annotations"],
    });
    bucket
        .put_mount_pointer(name, Bytes::from(pointer.to_string()))
        .await
        .map_err(s3_error)?;
    Ok(sent)
}

/// Downloads the artifact `digest` into a new staged layout (every blob
/// checked against its digest) for a seed's solve to read.
pub async fn download(cache: &S3Cache, digest: &str) -> Result<Staged, S3ArtifactError> {
    let bucket = Bucket::open(cache).map_err(s3_error)?;
    let staged = Staged::new().map_err(s3_error)?;
    let layout = staged.layout();
    let missing = |blob: &str| s3_error(format!("no blob {blob} in s3://{}", cache.bucket));
    let write = |blob: &str, bytes: &[u8]| {
        let path = layout.blob_path(blob).map_err(s3_error)?;
        std::fs::write(&path, bytes).map_err(|e| s3_error(format!("{}: {e}", path.display())))
    };
    let manifest_bytes = bucket
        .blob(digest)
        .await
        .map_err(s3_error)?
        .ok_or_else(|| missing(digest))?;
    write(digest, &manifest_bytes)?;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).map_err(s3_error)?;
    // The manifest (the last of them) is written already.
    let blobs = blobs_of(digest, &manifest);
    for blob in &blobs[..blobs.len() - 1] {
        let bytes = bucket
            .blob(blob)
            .await
            .map_err(s3_error)?
            .ok_or_else(|| missing(blob))?;
        write(blob, &bytes)?;
    }
    Ok(staged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_artifact_s_blobs_end_with_its_manifest() {
        let manifest = serde_json::json!({
            "config": { "digest": "sha256:c" },
            "layers": [{ "digest": "sha256:l1" }, { "digest": "sha256:l2" }],
        });
        assert_eq!(
            blobs_of("sha256:m", &manifest),
            ["sha256:c", "sha256:l1", "sha256:l2", "sha256:m"],
            "the manifest last: never one naming a blob not yet there"
        );
    }
}
