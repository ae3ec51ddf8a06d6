//! `moby.filesync.v1.Auth`: registry credentials for the daemon's pulls,
//! pushes and cache, found by [`crate::credentials`].
//!
//! For registries with token auth the daemon first asks `GetTokenAuthority`;
//! strata answers with a public key, which tells the daemon to get tokens
//! through `FetchToken`: strata fetches the short-lived bearer token itself
//! and hands the daemon only that, never the password (BuildKit's own client
//! does the same). `VerifyTokenAuthority` signs the daemon's payload with that
//! key, so the daemon can tell which sessions share an authority. Keys are
//! ed25519, derived per host from the daemon's salt and a seed private to this
//! process (anonymous access: from the salt alone, as BuildKit does).
//! `Credentials` remains for registries with Basic auth (and identity tokens,
//! which need OAuth); a daemon that asks for it gets the secret, which is why
//! docs/security.md lists the daemon as trusted with the credentials of the
//! registries a build touches.

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
    /// Mixed into authority keys of hosts we hold credentials for.
    seed: [u8; 32],
}

pub(crate) fn service(auth: DockerAuth) -> AuthServer<AuthService> {
    use ring::rand::SecureRandom;
    let mut seed = [0u8; 32];
    // Without randomness the keys are still per salt, just not secret.
    let _ = ring::rand::SystemRandom::new().fill(&mut seed);
    AuthServer::new(AuthService { auth, seed })
}

impl AuthService {
    /// The ed25519 key of the token authority for `host`, as the daemon's
    /// `salt` asks for it.
    async fn authority_key(
        &self,
        host: &str,
        salt: &[u8],
    ) -> Result<ring::signature::Ed25519KeyPair, Status> {
        use ring::hmac;
        let mut mac = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, salt));
        if self.auth.credential(host).await.is_some() {
            mac.update(&self.seed);
            mac.update(host.as_bytes());
        }
        let sum = mac.sign();
        ring::signature::Ed25519KeyPair::from_seed_unchecked(&sum.as_ref()[..32])
            .map_err(|e| Status::internal(format!("token authority key: {e}")))
    }
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
        request: Request<GetTokenAuthorityRequest>,
    ) -> Result<Response<GetTokenAuthorityResponse>, Status> {
        use ring::signature::KeyPair;
        let req = request.into_inner();
        let key = self.authority_key(&req.host, &req.salt).await?;
        Ok(Response::new(GetTokenAuthorityResponse {
            public_key: key.public_key().as_ref().to_vec().into(),
        }))
    }

    /// NaCl `sign` format: the 64-byte signature, then the payload.
    async fn verify_token_authority(
        &self,
        request: Request<VerifyTokenAuthorityRequest>,
    ) -> Result<Response<VerifyTokenAuthorityResponse>, Status> {
        let req = request.into_inner();
        let key = self.authority_key(&req.host, &req.salt).await?;
        let mut signed = key.sign(&req.payload).as_ref().to_vec();
        signed.extend_from_slice(&req.payload);
        Ok(Response::new(VerifyTokenAuthorityResponse {
            signed: signed.into(),
        }))
    }
}
