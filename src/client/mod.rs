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
    #[error("{call} on {addr} failed: {}", status_text(.status))]
    Rpc {
        call: &'static str,
        addr: String,
        #[source]
        status: tonic::Status,
    },
}

/// The status message alone; the code is noise for users unless the message is empty.
fn status_text(status: &tonic::Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_owned()
    }
}

/// A BuildKit daemon we are connected to.
#[derive(Clone)]
pub struct Client {
    addr: Addr,
    channel: Channel,
    control: ControlClient<Channel>,
}

impl Client {
    /// Connects to the daemon at `addr` (see [`connect::connect`]).
    pub async fn connect(addr: Addr, tls: &TlsOptions) -> Result<Self, ClientError> {
        let channel = connect::connect(&addr, tls).await?;
        let control = ControlClient::new(channel.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        Ok(Self {
            addr,
            channel,
            control,
        })
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
        ClientError::Rpc {
            call,
            addr: self.addr.to_string(),
            status,
        }
    }
}
