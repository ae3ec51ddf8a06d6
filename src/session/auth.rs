//! `moby.filesync.v1.Auth`: registry credentials for the daemon's pulls,
//! pushes and cache, found by [`crate::credentials`].
//!
//! `FetchToken` is answered first: for registries with token auth strata
//! fetches the short-lived bearer token itself and hands the daemon only that,
//! never the password. `Credentials` remains for registries with Basic auth
//! (and identity tokens, which need OAuth); a daemon that asks for it gets the
//! secret, which is why docs/security.md lists the daemon as trusted with the
//! credentials of the registries a build touches. The token-authority calls
//! answer Unimplemented (no session-signed tokens).

use tonic::{Request, Response, Status};

use crate::credentials::DockerAuth;
use crate::registry::token;
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

/// Deadline for a token fetch on the daemon's behalf.
const TOKEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The Auth service over a build's credentials.
#[derive(Debug, Clone)]
pub(crate) struct AuthService {
    auth: DockerAuth,
}

pub(crate) fn service(auth: DockerAuth) -> AuthServer<AuthService> {
    AuthServer::new(AuthService { auth })
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn credentials(
        &self,
        request: Request<CredentialsRequest>,
    ) -> Result<Response<CredentialsResponse>, Status> {
        let host = request.into_inner().host;
        let cred = self.auth.credential(&host).await.unwrap_or_default();
        Ok(Response::new(CredentialsResponse {
            username: cred.username,
            secret: cred.secret,
        }))
    }

    async fn fetch_token(
        &self,
        request: Request<FetchTokenRequest>,
    ) -> Result<Response<FetchTokenResponse>, Status> {
        let req = request.into_inner();
        let credential = self.auth.credential(&req.host).await;
        if credential.as_ref().is_some_and(|c| c.is_identity_token()) {
            // OAuth refresh-token exchange is left to the daemon.
            return Err(Status::unimplemented(
                "identity tokens go through Credentials",
            ));
        }
        let service = (!req.service.is_empty()).then_some(req.service.as_str());
        let token = token::fetch(
            &req.realm,
            service,
            &req.scopes,
            credential.as_ref(),
            &self.auth,
            TOKEN_TIMEOUT,
        )
        .await
        .map_err(Status::unavailable)?;
        Ok(Response::new(FetchTokenResponse {
            token: token.token,
            expires_in: token.expires_in,
            issued_at: token.issued_at,
        }))
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
