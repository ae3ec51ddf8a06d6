//! Flags several commands share: how to reach the daemon (global), the
//! spec with its build-wide settings (`build`, `bench`, `llb`), and how a
//! build runs (`build` and `compose build`: [`BuildFlags`]).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use strata::options::{CacheExport, CacheImport};
use strata::spec::{Overrides, Spec};
use strata::{Addr, Client, TlsOptions};

/// How to reach the daemon; the names are buildctl's.
#[derive(Args)]
#[command(next_help_heading = "Daemon connection (every command)")]
pub struct DaemonArgs {
    /// Daemon address: unix:///PATH, tcp://HOST:PORT or docker://[SOCKET].
    /// Given several times (or BUILDKIT_HOST as a comma list): a pool, which
    /// every command but `bench` takes (`info`, `du`, `prune`: every node).
    #[arg(
        long = "addr",
        env = "BUILDKIT_HOST",
        default_value = strata::connect::DEFAULT_ADDR,
        value_delimiter = ',',
        action = clap::ArgAction::Append,
        global = true
    )]
    pub addrs: Vec<String>,
    /// A pool as TOML: one [[node]] table per daemon (addr, name, TLS files,
    /// weight, labels); instead of --addr.
    #[arg(long, value_name = "FILE", global = true)]
    pub builders: Option<PathBuf>,
    /// How a pool places images: rendezvous (strata's: sticky by image,
    /// bounded load), or, to compare with, context-path (buildx's sticky
    /// hash of the context path) or random.
    #[arg(long, value_enum, default_value = "rendezvous", global = true)]
    pub placement: strata::pool::place::Placement,
    /// A pool's shared cache, `type=registry,ref=REPO[:TAG]`: every node
    /// exports each image's cache there (REPO:TAG-IMAGE) and imports from it,
    /// so an image moved off a lost node, or placed apart from its parent,
    /// is not built cold.
    #[arg(long, value_name = "type=registry,ref=REF", global = true)]
    pub pool_cache: Option<strata::options::CacheExport>,
    /// CA certificate that signed the daemon's certificate (turns TLS on for tcp://).
    #[arg(long, value_name = "FILE", global = true)]
    pub tlscacert: Option<PathBuf>,
    /// Client certificate, for daemons that require mutual TLS.
    #[arg(long, value_name = "FILE", global = true)]
    pub tlscert: Option<PathBuf>,
    /// Private key of the client certificate.
    #[arg(long, value_name = "FILE", global = true)]
    pub tlskey: Option<PathBuf>,
    /// Name the daemon's certificate must carry (default: the host of --addr).
    #[arg(long, value_name = "NAME", global = true)]
    pub tlsservername: Option<String>,
    /// Directory with ca.pem, cert.pem and key.pem, for whichever is not given alone.
    #[arg(long, value_name = "DIR", global = true)]
    pub tlsdir: Option<PathBuf>,
    /// How long to wait for the daemon to accept the connection and answer.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration, global = true)]
    pub timeout: std::time::Duration,
}

fn parse_duration(value: &str) -> Result<std::time::Duration, String> {
    strata::units::parse_duration(value)
}

impl DaemonArgs {
    pub fn tls(&self) -> TlsOptions {
        TlsOptions {
            ca_cert: self.tlscacert.clone(),
            cert: self.tlscert.clone(),
            key: self.tlskey.clone(),
            server_name: self.tlsservername.clone(),
            dir: self.tlsdir.clone(),
        }
    }

    /// The one daemon address; a pool is an error here (`bench` measures one
    /// daemon and says so).
    pub fn addr(&self) -> Result<&str> {
        if self.builders.is_some() {
            anyhow::bail!("--builders: this command takes one daemon (give one --addr)");
        }
        match self.addrs.as_slice() {
            [one] => Ok(one),
            several => anyhow::bail!(
                "--addr: this command takes one daemon, not {}",
                several.len()
            ),
        }
    }

    /// The daemon, connected to only when first needed.
    pub fn daemon(&self) -> Result<strata::client::Daemon> {
        let addr: Addr = self.addr()?.parse()?;
        Ok(strata::client::Daemon::new(addr, self.tls(), self.timeout))
    }

    pub async fn connect(&self) -> Result<Client> {
        let addr: Addr = self.addr()?.parse()?;
        Ok(Client::connect_within(addr, &self.tls(), self.timeout).await?)
    }

    /// Whether several daemons were given (a pool), or a pool cache for
    /// one (a pool of one: `--pool-cache` is never silently ignored).
    pub fn is_pool(&self) -> bool {
        self.builders.is_some() || self.addrs.len() > 1 || self.pool_cache.is_some()
    }

    /// Every daemon given: `--builders FILE`, else each `--addr`.
    pub fn pool(&self) -> Result<strata::pool::Pool> {
        let mut pool = self.pool_nodes()?;
        pool.placement = self.placement;
        pool.cache = match &self.pool_cache {
            None => None,
            Some(strata::options::CacheExport::Registry { reference, .. }) => {
                Some(reference.clone())
            }
            Some(other) => anyhow::bail!(
                "--pool-cache {other}: a pool cache is a registry (type=registry,ref=REPO[:TAG])"
            ),
        };
        Ok(pool)
    }

    fn pool_nodes(&self) -> Result<strata::pool::Pool> {
        if let Some(file) = &self.builders {
            return Ok(strata::pool::Pool::load(file, self.timeout, &self.tls())?);
        }
        let addrs = self
            .addrs
            .iter()
            .map(|a| {
                a.parse::<Addr>()
                    .map_err(|e| anyhow::anyhow!("--addr {a:?}: {e}"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(strata::pool::Pool::of_addrs(
            addrs,
            &self.tls(),
            self.timeout,
        ))
    }
}

/// The spec file and the build-wide settings `build`, `bench` and `llb` share.
#[derive(Args)]
pub struct SpecArgs {
    /// The spec to read.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        default_value = "strata.toml"
    )]
    pub file: PathBuf,
    /// A CA bundle to trust inside toolchain steps (for networks that re-sign TLS);
    /// mounted as a secret, never stored in a layer. Overrides the spec's ca_cert.
    #[arg(long, value_name = "FILE", env = "STRATA_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Target platforms, e.g. linux/arm64 or linux/amd64,linux/arm64: several
    /// make one image index, built in one solve (default: the spec's, else this machine's).
    #[arg(long, value_name = "PLATFORMS")]
    pub platform: Option<strata::llb::Platforms>,
    /// Let the spec read files in DIR (overlay copies, ca_cert) besides its own
    /// directory, which is all an untrusted spec may read by default (repeatable).
    #[arg(long, value_name = "DIR")]
    pub allow_path: Vec<PathBuf>,
}

impl SpecArgs {
    pub fn load(&self) -> Result<Spec> {
        Ok(Spec::load_allowing(&self.file, &self.allow_path)?)
    }

    /// The overrides these flags make (the rest is the command's to fill in).
    pub fn overrides(&self) -> Overrides {
        Overrides {
            ca_cert: self.ca_cert.clone(),
            platform: self.platform.clone(),
            s3: s3_env(),
            ..Overrides::default()
        }
    }
}

/// How a build runs and what it reads and writes besides the images: one
/// set for `strata build` and `strata compose build`.
#[derive(Args)]
#[command(next_help_heading = "Build")]
pub struct BuildFlags {
    /// Export build cache: type=registry,ref=REF[,mode=min|max] | type=local,dest=DIR |
    /// type=s3,bucket=B,region=R[,endpoint_url=URL,use_path_style=true,name=N,prefix=P] |
    /// type=inline (repeatable; mode defaults to max, which keeps toolchain layers).
    /// S3 credentials come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
    /// AWS_SESSION_TOKEN, the region from AWS_REGION when not given.
    #[arg(long, value_name = "SPEC")]
    pub cache_to: Vec<CacheExport>,
    /// Import build cache: type=registry,ref=REF | type=local,src=DIR |
    /// type=s3,bucket=B,region=R[,name=A;B,…] (repeatable; several names: each imported).
    #[arg(long, value_name = "SPEC")]
    pub cache_from: Vec<CacheImport>,
    /// A secret for `run` steps and Dockerfile `RUN --mount=type=secret,id=ID`:
    /// id=ID,src=FILE (repeatable).
    #[arg(long, value_name = "id=ID,src=FILE", value_parser = strata::values::parse_secret)]
    pub secret: Vec<(String, PathBuf)>,
    /// Reach this registry (HOST[:PORT]) over plain http, and allow sending it
    /// credentials that way (repeatable; loopback registries always are plain http).
    #[arg(long, value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    /// Solve at most N images at once (default 4).
    #[arg(long, value_name = "N")]
    pub max_parallel: Option<std::num::NonZeroUsize>,
    /// Solve even an image whose key tag (REPO:strata-KEY) says it is built.
    #[arg(long)]
    pub no_skip: bool,
    /// Do not also push images under their key tag (nor look for it first).
    #[arg(long)]
    pub no_key_tag: bool,
    /// Load each image into a docker daemon (default: the builder when it is a
    /// docker:// daemon, else DOCKER_HOST, else /var/run/docker.sock): skipped if it has
    /// the image already, exported by the builder when that daemon builds, pulled
    /// when the image was pushed, else a docker tarball streamed into it.
    #[arg(long, value_name = "docker://SOCKET", num_args = 0..=1, default_missing_value = "")]
    pub load: Option<String>,
    /// Build every image that can be built even when one fails; a failed
    /// image's --metadata-file entry names the nearest built ancestor to fall
    /// back to and the steps it lacks. Exits non-zero if any image failed.
    #[arg(long)]
    pub keep_going: bool,
    /// A disk budget, e.g. 20GB: images are built in tiers (those whose
    /// parents are built), and after each tier every builder above SIZE is
    /// pruned down to it, saying what was freed.
    #[arg(long, value_name = "SIZE", value_parser = strata::units::parse_size)]
    pub keep_storage: Option<u64>,
    /// Attach SLSA provenance to each platform's image: true|min (the default
    /// when given bare), max (also the steps), or false (off, over the spec's
    /// `provenance`). Off by default: the record carries the build's
    /// timestamps, so an unchanged rebuild then pushes a new digest.
    #[arg(long, value_name = "MODE", num_args = 0..=1, default_missing_value = "min")]
    pub provenance: Option<strata::options::ProvenanceFlag>,
    /// Attach an SPDX SBOM to each platform's image, made by a generator
    /// image the daemon runs: true (the default generator: $STRATA_SBOM_GENERATOR,
    /// else Docker Hub's docker/buildkit-syft-scanner:stable-1), generator=IMAGE,
    /// or false (off, over the spec's `sbom`). examples/sbom-generator is one
    /// that builds offline; it lists what dpkg, pip and npm recorded.
    #[arg(long, value_name = "generator=IMAGE", num_args = 0..=1, default_missing_value = "true")]
    pub sbom: Option<strata::options::SbomFlag>,
    /// How to show progress.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: super::progress::ProgressMode,
    /// Write what the exporters returned (image digests, …) as JSON, by image.
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
}

impl BuildFlags {
    /// `overrides` with what these flags set.
    pub fn apply(&self, overrides: Overrides, cli: &super::Cli) -> Result<Overrides> {
        Ok(Overrides {
            insecure_registries: self.insecure_registry.clone(),
            secrets: self.secret.iter().cloned().collect(),
            cache_to: self.cache_to.clone(),
            cache_from: self.cache_from.clone(),
            max_parallel: self.max_parallel,
            no_skip: self.no_skip,
            no_key_tag: self.no_key_tag,
            keep_going: self.keep_going,
            load: load_flag(self.load.as_deref(), cli)?,
            keep_storage: self.keep_storage,
            provenance: self.provenance.map(|f| f.0),
            sbom: self.sbom.clone().map(|f| f.0),
            sbom_generator: sbom_generator_from_env()?,
            s3: s3_env(),
            ..overrides
        })
    }
}

/// `STRATA_SBOM_GENERATOR`: the generator `--sbom` and `sbom = true` use.
fn sbom_generator_from_env() -> Result<Option<strata::reference::ImageRef>> {
    let Some(value) = std::env::var_os("STRATA_SBOM_GENERATOR").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let value = value.to_string_lossy();
    let parsed = value.trim().parse().map_err(|e| {
        anyhow::anyhow!("STRATA_SBOM_GENERATOR={value:?} is not an image reference: {e}")
    })?;
    Ok(Some(parsed))
}

/// The S3 region and credentials of strata's environment (`AWS_REGION`,
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).
pub fn s3_env() -> strata::options::S3Env {
    strata::options::S3Env::from_lookup(|k| std::env::var(k).ok())
}

/// `--load [VALUE]` as given (none: not asked for), resolved to a socket.
pub fn load_flag(value: Option<&str>, cli: &super::Cli) -> Result<Option<PathBuf>> {
    value
        .map(|value| load_socket(value, cli.daemon.addr().unwrap_or_default()))
        .transpose()
}

/// The docker API socket `--load VALUE` names: `docker://PATH` or
/// `unix://PATH`; empty: the builder's when it is a docker daemon, else
/// `DOCKER_HOST`'s, else the default socket.
pub fn load_socket(value: &str, builder: &str) -> Result<PathBuf> {
    let candidates = [
        Some(value.to_owned()).filter(|v| !v.is_empty()),
        Some(builder.to_owned()).filter(|b| b.starts_with("docker://")),
        // Empty means unset, as with every variable strata reads.
        std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()),
    ];
    let Some(chosen) = candidates.into_iter().flatten().next() else {
        return Ok(PathBuf::from(strata::connect::DEFAULT_DOCKER_SOCKET));
    };
    match chosen.parse::<strata::Addr>() {
        Ok(strata::Addr::Docker(path) | strata::Addr::Unix(path)) => Ok(path),
        // A tcp:// or ssh:// DOCKER_HOST is refused, never swapped for the
        // default socket (which may be another daemon).
        _ => anyhow::bail!(
            "--load {chosen}: strata loads through a docker daemon's unix socket \
             (docker://SOCKET or unix://SOCKET; tcp:// and ssh:// DOCKER_HOSTs are not supported)"
        ),
    }
}
