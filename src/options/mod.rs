//! The values several layers share, below all of them: what a build exports
//! ([`Output`]), the caches it exports and imports ([`CacheExport`],
//! [`CacheImport`], with the cache mounts that travel with them,
//! [`MountOptions`]), the cache mounts its steps use ([`CacheMountUse`]),
//! the local directories it reads ([`LocalDir`]) and the frontend it may run
//! instead of LLB ([`Frontend`]), and the attestations the daemon attaches
//! ([`ProvenanceMode`]).
//!
//! The spec resolves into these, the session serves them, the solve hands
//! them to the daemon, `mounts` carries cache mounts by them; so this module
//! imports none of those (only `llb`, `reference`, `units` and `wire`), and
//! each of them can import it without a circle.

mod attest;
mod attrs;
mod cache;
mod frontend;
mod local;
mod mounts;
mod output;
mod s3;
mod stream;

pub use attest::{
    Attestations, Chosen, ProvenanceFlag, ProvenanceMode, Sbom, SbomFlag, SbomGenerator,
    DEFAULT_SBOM_GENERATOR,
};
pub use attrs::OptionError;
pub use cache::{
    local_store_id, CacheExport, CacheImport, CacheMode, CacheReport, Compression, LayerOptions,
    LocalCachePath,
};
pub use frontend::Frontend;
pub use local::LocalDir;
pub use mounts::{CacheMountUse, MountName, MountOptions, MountSelection};
pub use output::{ExporterResponse, Output};
pub use s3::{S3Cache, S3Credentials, S3Env, ACCESS_DENIED};
pub use stream::TarStream;
