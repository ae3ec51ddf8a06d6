//! A typed, immutable LLB builder, in the shape of BuildKit's Go `client/llb`:
//! a [`State`] is a value (a graph node plus the environment, working directory,
//! user and platform that later steps inherit); every method returns a new one.
//!
//! - [`source`]: images, local directories, git, http;
//! - [`exec`]: running commands, with mounts (the tools' cache mounts are `crate::tools`');
//! - [`file`]: mkdir, mkfile, copy, rm;
//! - [`marshal`]: the deterministic `pb.Definition` and its digests;
//! - [`foreign`]: a graph another client marshalled (a frontend's result), to build on.

pub mod exec;
pub mod file;
pub mod foreign;
pub mod marshal;
pub mod platform;
pub mod source;
mod state;

pub use exec::{CacheSharing, Exec, Mount, Run};
pub use file::{Copy, FileAction};
pub use marshal::Definition;
pub use platform::{normalize_arch, Platform, Platforms};
pub(crate) use state::clean_path;
pub use state::State;
