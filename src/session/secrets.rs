//! `moby.buildkit.secrets.v1.Secrets/GetSecret`: secrets a step mounts or reads
//! from its environment (`--secret id=…,src=…`, the CA bundle), served from
//! files on this machine at the moment the step asks — never stored in a layer.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::wire::moby::buildkit::secrets::v1::secrets_server::{Secrets, SecretsServer};
use crate::wire::moby::buildkit::secrets::v1::{GetSecretRequest, GetSecretResponse};

pub(crate) const METHODS: &[&str] = &["/moby.buildkit.secrets.v1.Secrets/GetSecret"];

/// Secret ids and the files that hold them.
#[derive(Debug, Clone, Default)]
pub struct SecretFiles {
    files: Arc<BTreeMap<String, PathBuf>>,
}

impl SecretFiles {
    pub fn new(files: BTreeMap<String, PathBuf>) -> Self {
        SecretFiles {
            files: Arc::new(files),
        }
    }

    pub(crate) fn service(self) -> SecretsServer<SecretFiles> {
        SecretsServer::new(self)
    }
}

#[tonic::async_trait]
impl Secrets for SecretFiles {
    async fn get_secret(
        &self,
        request: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        let id = request.into_inner().id;
        let path = self.files.get(&id).ok_or_else(|| {
            Status::not_found(format!(
                "secret {id:?} was not given to strata (--secret id={id},src=FILE)"
            ))
        })?;
        let data = read_capped(path).await.map_err(|e| {
            Status::not_found(format!(
                "secret {id:?}: cannot read {}: {e}",
                path.display()
            ))
        })?;
        Ok(Response::new(GetSecretResponse { data: data.into() }))
    }
}

/// BuildKit's own limit on a secret (`secrets.MaxSecretSize`): a secret is a
/// key or a token, and a larger file is almost surely the wrong one.
pub const MAX_SECRET_SIZE: u64 = 500 * 1024;

/// Reads at most [`MAX_SECRET_SIZE`] bytes; a larger file is an error.
async fn read_capped(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path).await?;
    let mut data = Vec::new();
    file.take(MAX_SECRET_SIZE + 1)
        .read_to_end(&mut data)
        .await?;
    if data.len() as u64 > MAX_SECRET_SIZE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "larger than the {} KiB a secret may be",
                MAX_SECRET_SIZE / 1024
            ),
        ));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn secrets_are_capped() {
        let tmp = tempfile::tempdir().unwrap();
        let small = tmp.path().join("small");
        let big = tmp.path().join("big");
        std::fs::write(&small, "token").unwrap();
        std::fs::write(&big, vec![b'x'; MAX_SECRET_SIZE as usize + 1]).unwrap();
        assert_eq!(read_capped(&small).await.unwrap(), b"token");
        let err = read_capped(&big).await.unwrap_err().to_string();
        assert!(err.contains("KiB"), "{err}");
    }
}
