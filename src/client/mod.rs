//! A connected BuildKit daemon: BuildKit's Control API behind typed calls.

mod info;
mod usage;

use tonic::transport::Channel;

use crate::connect::{self, Addr, ConnectError, TlsOptions};
use crate::wire::moby::buildkit::v1::control_client::ControlClient;

pub use info::{DaemonInfo, GcPolicy, Worker};
pub use usage::{DiskUsage, PruneOptions, PruneReport, UsageRecord};

/// What went wrong talking to a daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The daemon answered a call with an error status.
    #[error("{call} on {addr} failed: {}{hint}", status_text(.status))]
    Rpc {
        call: &'static str,
        addr: String,
        /// A likely cause, when the failure has a well-known one.
        hint: &'static str,
        #[source]
        status: tonic::Status,
    },
    /// The daemon kept the connection but did not answer a call in time.
    #[error("{call} on {addr}: no answer within {}s (is the daemon frozen or overloaded?)", after.as_secs_f64())]
    NoAnswer {
        call: &'static str,
        addr: String,
        after: std::time::Duration,
    },
}

/// How long a call that lists or removes cache may take (per streamed
/// record for Prune): longer than a probe, since a large cache is slow to
/// walk, but never without end.
pub const SLOW_CALL: std::time::Duration = std::time::Duration::from_secs(120);

/// The status message alone (the code is noise for users unless the message
/// is empty), plus the innermost cause of a transport failure, which is where
/// TLS alerts such as "certificate required" end up.
fn status_text(status: &tonic::Status) -> String {
    let mut text = if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_owned()
    };
    let mut innermost = None;
    let mut cause = std::error::Error::source(status);
    while let Some(err) = cause {
        innermost = Some(err.to_string());
        cause = err.source();
    }
    if let Some(inner) = innermost.filter(|inner| !text.contains(inner.as_str())) {
        text = format!("{text}: {inner}");
    }
    text
}

/// A BuildKit daemon we are connected to.
#[derive(Clone)]
pub struct Client {
    addr: Addr,
    tls: bool,
    client_cert: bool,
    channel: Channel,
    control: ControlClient<Channel>,
    /// How long the daemon may take to answer a probe ([`Client::still_answers`]).
    answer_within: std::time::Duration,
}

impl Client {
    /// Connects to the daemon at `addr` (see [`connect::connect`]).
    pub async fn connect(addr: Addr, tls: &TlsOptions) -> Result<Self, ClientError> {
        Self::connect_within(addr, tls, connect::CONNECT_TIMEOUT).await
    }

    /// Connects, and checks that the daemon answers, within `timeout`: a
    /// daemon that accepts connections and never answers is an error here,
    /// not a build that hangs.
    pub async fn connect_within(
        addr: Addr,
        tls: &TlsOptions,
        timeout: std::time::Duration,
    ) -> Result<Self, ClientError> {
        let channel = connect::connect_within(&addr, tls, timeout).await?;
        let control = ControlClient::new(channel.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let client = Self {
            addr,
            tls: tls.enabled(),
            client_cert: tls.has_client_cert(),
            channel,
            control,
            answer_within: timeout,
        };
        // Not answering here is not reaching the daemon at all.
        match client.still_answers().await {
            Ok(()) => Ok(client),
            Err(ClientError::NoAnswer { addr, after, .. }) => {
                Err(connect::ConnectError::NoAnswer { addr, after }.into())
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the daemon answers a cheap call (ListWorkers) within the
    /// connection's timeout: a daemon that accepts connections and never
    /// answers is an error, not a wait without end.
    pub async fn still_answers(&self) -> Result<(), ClientError> {
        let mut control = self.control();
        let probe =
            control.list_workers(crate::wire::moby::buildkit::v1::ListWorkersRequest::default());
        self.within("ListWorkers", self.answer_within, probe)
            .await?;
        Ok(())
    }

    /// `answer` to `call` under a deadline: a daemon that keeps its
    /// connection but never answers (a frozen or wedged one) is an error,
    /// not a wait without end.
    pub(crate) async fn within<T>(
        &self,
        call: &'static str,
        after: std::time::Duration,
        answer: impl std::future::Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, ClientError> {
        match tokio::time::timeout(after, answer).await {
            Ok(answered) => answered.map_err(|s| self.rpc_error(call, s)),
            Err(_) => Err(ClientError::NoAnswer {
                call,
                addr: self.addr.to_string(),
                after,
            }),
        }
    }

    /// How long a quick call (Info, ListWorkers) may take: `--timeout`.
    pub(crate) fn answer_within(&self) -> std::time::Duration {
        self.answer_within
    }

    /// The address this client is connected to.
    pub fn addr(&self) -> &Addr {
        &self.addr
    }

    /// The gRPC channel, for services beyond Control.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub(crate) fn control(&self) -> ControlClient<Channel> {
        self.control.clone()
    }

    pub(crate) fn rpc_error(&self, call: &'static str, status: tonic::Status) -> ClientError {
        use tonic::Code;
        // A TLS listener drops a plaintext HTTP/2 connection without a word,
        // and with TLS 1.3 a missing client certificate is only noticed after
        // the handshake; the call then fails with one of these codes.
        let dropped = matches!(
            status.code(),
            Code::Cancelled | Code::Unavailable | Code::Unknown | Code::Internal
        );
        let hint = match self.addr {
            Addr::Tcp { .. } if dropped && !self.tls => {
                " (the connection was dropped; if the daemon expects TLS, pass --tlscacert, --tlscert and --tlskey or --tlsdir)"
            }
            Addr::Tcp { .. } if dropped && !self.client_cert => {
                " (the connection was dropped; if the daemon requires a client certificate, pass --tlscert and --tlskey)"
            }
            _ => "",
        };
        ClientError::Rpc {
            call,
            addr: self.addr.to_string(),
            hint,
            status,
        }
    }
}

/// A daemon connected to on first use: a build whose images are all known
/// to be built already (their content keys are in the registry) never
/// connects at all.
pub struct Daemon {
    addr: Addr,
    tls: TlsOptions,
    timeout: std::time::Duration,
    client: tokio::sync::OnceCell<Client>,
}

impl Daemon {
    pub fn new(addr: Addr, tls: TlsOptions, timeout: std::time::Duration) -> Self {
        Daemon {
            addr,
            tls,
            timeout,
            client: tokio::sync::OnceCell::new(),
        }
    }

    /// The connected client, connecting (within the timeout) the first time.
    pub async fn client(&self) -> Result<&Client, ClientError> {
        self.client
            .get_or_try_init(|| Client::connect_within(self.addr.clone(), &self.tls, self.timeout))
            .await
    }

    /// Where the daemon is.
    pub fn addr(&self) -> &Addr {
        &self.addr
    }

    /// Whether a connection was made.
    pub fn connected(&self) -> bool {
        self.client.initialized()
    }
}

impl From<Client> for Daemon {
    fn from(client: Client) -> Self {
        Daemon {
            addr: client.addr.clone(),
            tls: TlsOptions::default(),
            timeout: connect::CONNECT_TIMEOUT,
            client: tokio::sync::OnceCell::new_with(Some(client)),
        }
    }
}
