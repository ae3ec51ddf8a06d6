//! A directory on this machine a build reads (FileSync serves it).

use std::path::PathBuf;

/// A local directory the build may read, by the name its `local://NAME` source uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDir {
    pub path: PathBuf,
    /// Patterns excluded on top of what the LLB source asks for.
    pub excludes: Vec<String>,
}
