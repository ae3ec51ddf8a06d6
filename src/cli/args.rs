//! Flags several commands share: how to reach the daemon (global), and the
//! spec with its build-wide settings (`build`, `bench`, `llb`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

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
    /// Target platform, e.g. linux/arm64 (default: the spec's, else this machine's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<strata::llb::Platform>,
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
            ..Overrides::default()
        }
    }
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
