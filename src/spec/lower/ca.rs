//! The CA bundle of networks that re-sign TLS: mounted as a secret in every
//! toolchain step (so it never lands in a layer), with the variables that make
//! apt, pip, npm, curl, git and Python trust it.

use crate::llb::{Mount, Run};

/// Where the CA bundle is mounted in toolchain steps (a secret: never in a layer).
pub const CA_MOUNT: &str = "/run/secrets/strata-ca.crt";

/// The variables that make apt, pip, npm, curl, git and Python trust [`CA_MOUNT`].
const CA_ENV: &[&str] = &[
    "SSL_CERT_FILE",
    "CURL_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    "PIP_CERT",
    "NODE_EXTRA_CA_CERTS",
    "npm_config_cafile",
    "GIT_SSL_CAINFO",
];

/// `run` with the secret `id` mounted at [`CA_MOUNT`] and the variables set.
pub(super) fn trust(run: Run, id: &str) -> Run {
    // World-readable: steps after `user = "app"` need it too. A certificate
    // bundle is public; what matters is that it is a mount, so it never
    // lands in a layer.
    let run = run.mount(Mount::Secret {
        target: CA_MOUNT.to_owned(),
        id: id.to_owned(),
        mode: 0o444,
        optional: false,
    });
    CA_ENV.iter().fold(run, |run, var| run.env(var, CA_MOUNT))
}
