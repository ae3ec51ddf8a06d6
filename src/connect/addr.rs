//! Daemon addresses as buildctl and buildx spell them.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::ConnectError;

/// Where buildctl looks when neither `--addr` nor `BUILDKIT_HOST` is set.
pub const DEFAULT_ADDR: &str = "unix:///run/buildkit/buildkitd.sock";
/// The Docker API socket `docker://` means when it names none.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// A parsed daemon address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    /// `unix:///path/to/buildkitd.sock`
    Unix(PathBuf),
    /// `tcp://host:port`; TLS is chosen by the TLS options, as with buildctl.
    Tcp { host: String, port: u16 },
    /// `docker://[/path/to/docker.sock]`: dockerd's embedded BuildKit.
    Docker(PathBuf),
}

impl FromStr for Addr {
    type Err = ConnectError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| ConnectError::BadAddress {
            addr: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| bad("expected unix://PATH, tcp://HOST:PORT or docker://[SOCKET]"))?;
        match scheme {
            "unix" => {
                if rest.is_empty() {
                    return Err(bad(
                        "unix:// needs a socket path, e.g. unix:///run/buildkit/buildkitd.sock",
                    ));
                }
                Ok(Addr::Unix(PathBuf::from(rest)))
            }
            "tcp" => {
                let (host, port) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| bad("tcp:// needs HOST:PORT, e.g. tcp://127.0.0.1:1234"))?;
                let port = port
                    .trim_end_matches('/')
                    .parse::<u16>()
                    .map_err(|_| bad("the port must be a number from 1 to 65535"))?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                if host.is_empty() || port == 0 {
                    return Err(bad("tcp:// needs HOST:PORT, e.g. tcp://127.0.0.1:1234"));
                }
                Ok(Addr::Tcp {
                    host: host.to_owned(),
                    port,
                })
            }
            "docker" => {
                let path = rest.strip_prefix("unix://").unwrap_or(rest);
                let path = if path.is_empty() {
                    DEFAULT_DOCKER_SOCKET
                } else {
                    path
                };
                Ok(Addr::Docker(PathBuf::from(path)))
            }
            other => Err(bad(&format!(
                "unknown scheme {other}://; expected unix://, tcp:// or docker://"
            ))),
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Unix(path) => write!(f, "unix://{}", path.display()),
            Addr::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            Addr::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Addr::Docker(path) => write!(f, "docker://{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        assert_eq!(
            "unix:///run/buildkit/buildkitd.sock"
                .parse::<Addr>()
                .unwrap(),
            Addr::Unix("/run/buildkit/buildkitd.sock".into())
        );
        assert_eq!(
            "tcp://127.0.0.1:1234".parse::<Addr>().unwrap(),
            Addr::Tcp {
                host: "127.0.0.1".into(),
                port: 1234
            }
        );
        assert_eq!(
            "tcp://[::1]:1234".parse::<Addr>().unwrap().to_string(),
            "tcp://[::1]:1234"
        );
        assert_eq!(
            "docker://".parse::<Addr>().unwrap(),
            Addr::Docker(DEFAULT_DOCKER_SOCKET.into())
        );
        assert_eq!(
            "docker:///tmp/d.sock".parse::<Addr>().unwrap(),
            Addr::Docker("/tmp/d.sock".into())
        );
        assert_eq!(
            "docker://unix:///tmp/d.sock".parse::<Addr>().unwrap(),
            Addr::Docker("/tmp/d.sock".into())
        );
    }

    #[test]
    fn rejects_bad_addresses_with_a_reason() {
        for (input, needle) in [
            ("/run/buildkit/buildkitd.sock", "expected unix://"),
            ("http://127.0.0.1:80", "unknown scheme http://"),
            ("tcp://127.0.0.1", "needs HOST:PORT"),
            ("tcp://127.0.0.1:http", "port must be a number"),
            ("tcp://:1234", "needs HOST:PORT"),
            ("unix://", "needs a socket path"),
        ] {
            let err = input.parse::<Addr>().unwrap_err().to_string();
            assert!(err.contains(needle), "{input}: {err}");
            assert!(err.contains(input), "{input}: {err}");
        }
    }
}
