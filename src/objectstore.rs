//! strata's own access to an S3 cache's bucket, for what BuildKit's s3
//! backend does not carry (cache-mount artifacts). The `object_store` crate
//! signs and sends the requests (also GCS and Azure, later); this module
//! only knows where strata's objects go under the cache's prefix:
//!
//! - `{prefix}{blobs_prefix}sha256:…`: content-addressed blobs, the same
//!   keys BuildKit's s3 backend uses, so a blob either wrote is shared;
//! - `{prefix}{manifests_prefix}NAME`: BuildKit's cache manifest, read to
//!   report a cache's size;
//! - `{prefix}strata/mounts/NAME`: a small pointer (an OCI descriptor) to
//!   one mount artifact's manifest blob, written after every blob it names.

use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use crate::options::S3Cache;

/// Why a bucket could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    #[error("S3 bucket {bucket} at {endpoint}: {reason}")]
    Failed {
        bucket: String,
        endpoint: String,
        reason: String,
    },
    #[error("S3 object {key}: its content is not {digest}")]
    DigestMismatch { key: String, digest: String },
}

/// An S3 cache's bucket, opened with its region, endpoint and credentials.
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    cache: S3Cache,
}

impl Bucket {
    pub fn open(cache: &S3Cache) -> Result<Bucket, BucketError> {
        // reqwest is built without a TLS provider of its own: strata's is ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&cache.bucket)
            .with_region(cache.region.as_deref().unwrap_or("us-east-1"))
            .with_virtual_hosted_style_request(!cache.use_path_style);
        if let Some(url) = &cache.endpoint_url {
            builder = builder
                .with_endpoint(url)
                .with_allow_http(url.starts_with("http://"));
        }
        if let Some(c) = &cache.credentials {
            builder = builder
                .with_access_key_id(&c.access_key_id)
                .with_secret_access_key(&c.secret_access_key);
            if let Some(token) = &c.session_token {
                builder = builder.with_token(token);
            }
        }
        let store = builder.build().map_err(|e| failed(cache, &e))?;
        Ok(Bucket {
            store: Arc::new(store),
            cache: cache.clone(),
        })
    }

    fn blob_key(&self, digest: &str) -> Path {
        let blobs = self.cache.blobs_prefix.as_deref().unwrap_or("blobs/");
        Path::from(format!("{}{blobs}{digest}", self.cache.prefix))
    }

    fn mount_key(&self, name: &str) -> Path {
        Path::from(format!("{}strata/mounts/{name}", self.cache.prefix))
    }

    /// `s3://BUCKET/KEY` of a mount pointer, for messages.
    pub fn mount_url(&self, name: &str) -> String {
        format!("s3://{}/{}", self.cache.bucket, self.mount_key(name))
    }

    /// The cache manifest BuildKit wrote under the cache's first name.
    pub async fn cache_manifest(&self) -> Result<Option<Bytes>, BucketError> {
        let manifests = self
            .cache
            .manifests_prefix
            .as_deref()
            .unwrap_or("manifests/");
        let name = self.cache.names.first().map_or("buildkit", String::as_str);
        let key = Path::from(format!("{}{manifests}{name}", self.cache.prefix));
        self.get(&key).await
    }

    /// The pointer `name`, if there is one.
    pub async fn mount_pointer(&self, name: &str) -> Result<Option<Bytes>, BucketError> {
        self.get(&self.mount_key(name)).await
    }

    pub async fn put_mount_pointer(&self, name: &str, bytes: Bytes) -> Result<(), BucketError> {
        self.put(&self.mount_key(name), bytes).await
    }

    /// The blob `digest`, checked against it; none if the bucket lacks it.
    pub async fn blob(&self, digest: &str) -> Result<Option<Bytes>, BucketError> {
        let key = self.blob_key(digest);
        let Some(bytes) = self.get(&key).await? else {
            return Ok(None);
        };
        let found = format!("sha256:{:x}", Sha256::digest(&bytes));
        if found != digest {
            return Err(BucketError::DigestMismatch {
                key: key.to_string(),
                digest: digest.to_owned(),
            });
        }
        Ok(Some(bytes))
    }

    pub async fn has_blob(&self, digest: &str) -> Result<bool, BucketError> {
        match self.store.head(&self.blob_key(digest)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(failed(&self.cache, &e)),
        }
    }

    pub async fn put_blob(&self, digest: &str, bytes: Bytes) -> Result<(), BucketError> {
        self.put(&self.blob_key(digest), bytes).await
    }

    async fn get(&self, key: &Path) -> Result<Option<Bytes>, BucketError> {
        match self.store.get(key).await {
            Ok(found) => found
                .bytes()
                .await
                .map(Some)
                .map_err(|e| failed(&self.cache, &e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(failed(&self.cache, &e)),
        }
    }

    async fn put(&self, key: &Path, bytes: Bytes) -> Result<(), BucketError> {
        self.store
            .put(key, PutPayload::from_bytes(bytes))
            .await
            .map(drop)
            .map_err(|e| failed(&self.cache, &e))
    }
}

/// An `object_store` error as one line about the bucket: access denied and
/// unreachable said plainly (the crate's text repeats the whole request).
fn failed(cache: &S3Cache, e: &object_store::Error) -> BucketError {
    let text = format!("{e}");
    let reason = if text.contains("403") || text.contains("AccessDenied") {
        crate::options::ACCESS_DENIED.to_owned()
    } else if text.contains("error sending request") || text.contains("onnect") {
        "could not reach the server".to_owned()
    } else {
        text.lines().next().unwrap_or("").to_owned()
    };
    BucketError::Failed {
        bucket: cache.bucket.clone(),
        endpoint: cache
            .endpoint_url
            .clone()
            .unwrap_or_else(|| "AWS".to_owned()),
        reason,
    }
}
