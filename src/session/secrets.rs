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
        let data = tokio::fs::read(path).await.map_err(|e| {
            Status::not_found(format!(
                "secret {id:?}: cannot read {}: {e}",
                path.display()
            ))
        })?;
        Ok(Response::new(GetSecretResponse { data: data.into() }))
    }
}
