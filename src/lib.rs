//! strata: a BuildKit client and LLB frontend that talks to buildkitd over gRPC.
//!
//! - [`connect`] reaches a daemon over unix, tcp (+mTLS) or dockerd's `/grpc`;
//! - [`spec`] reads strata.toml and lowers it to [`llb`]; [`build`] solves it
//!   with a [`session`] through [`solve`];
//! - [`options`] holds the values those layers share (outputs, caches,
//!   cache mounts, local dirs, frontends), below all of them;
//! - [`bench`] measures cache modes side by side;
//! - [`objectstore`] reads and writes strata's own objects in an S3 cache's bucket;
//! - [`credentials`] finds registry credentials as docker does (helpers, config);
//! - [`keys`] digests everything that decides an image ("is it built?" without solving);
//! - [`client`] wraps BuildKit's Control API in typed calls (info, du, prune);
//! - [`localtree`] walks local directories as fsutil does (FileSync and
//!   content keys alike); [`ids`] makes random identifiers;
//! - [`cleanup`] removes the temporary files strata made, also on a signal;
//! - [`runtime`] is how a strata process runs (async runtime, allocator);
//! - [`units`] parses and prints the sizes and durations users type and read;
//! - [`wire`] is the generated protobuf/gRPC code, and nothing else.

pub mod attestations;
pub mod bench;
pub mod build;
pub mod cleanup;
pub mod client;
pub mod compose;
pub mod connect;
pub mod credentials;
pub mod docker;
pub mod ids;
pub mod keys;
pub mod llb;
pub mod localtree;
pub mod mounts;
pub mod objectstore;
pub mod ocilayout;
pub mod options;
pub mod pool;
pub mod reference;
pub mod registry;
pub mod runtime;
pub mod session;
pub mod solve;
pub mod spec;
pub mod tools;
pub mod units;
pub mod values;
pub mod wire;

pub use client::Client;
pub use connect::{connect, Addr, ConnectError, TlsOptions};
