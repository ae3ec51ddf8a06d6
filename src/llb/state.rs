//! [`State`]: one point in the build graph plus what later steps inherit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::platform::Platform;
use crate::wire::pb;

/// One operation of the graph. Immutable once built; shared by every state
/// derived from it, so a common prefix marshals (and caches) once.
#[derive(Debug)]
pub(crate) struct Node {
    pub op: pb::op::Op,
    pub inputs: Vec<Output>,
    pub platform: Platform,
    pub description: BTreeMap<String, String>,
    pub caps: BTreeSet<&'static str>,
    pub ignore_cache: bool,
    /// Set when another client marshalled this op (see `super::foreign`):
    /// it is sent as those bytes, the fields above only read.
    pub foreign: Option<Foreign>,
}

/// An op as another client marshalled it.
#[derive(Debug, Clone)]
pub(crate) struct Foreign {
    pub bytes: bytes::Bytes,
    pub metadata: pb::OpMetadata,
}

/// One output of a node (exec ops can have several: root and writable mounts).
#[derive(Debug, Clone)]
pub(crate) struct Output {
    pub node: Arc<Node>,
    pub index: i64,
}

/// What a command started from this state inherits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Meta {
    /// Ordered, unique names.
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub user: String,
    pub platform: Platform,
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            env: Vec::new(),
            cwd: "/".into(),
            user: String::new(),
            platform: Platform::host(),
        }
    }
}

/// A filesystem state: the result of an operation (or empty: scratch) and the
/// environment, working directory, user and platform later steps inherit.
/// Every method returns a new state; none changes this one.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub(crate) output: Option<Output>,
    pub(crate) meta: Meta,
}

impl State {
    /// The empty filesystem.
    pub fn scratch() -> State {
        State::default()
    }

    /// Sets (or replaces) an environment variable for later commands.
    pub fn env(&self, key: &str, value: &str) -> State {
        let mut s = self.clone();
        match s.meta.env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_owned(),
            None => s.meta.env.push((key.to_owned(), value.to_owned())),
        }
        s
    }

    /// The value of an environment variable set on this state.
    pub fn get_env(&self, key: &str) -> Option<&str> {
        self.meta
            .env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every environment variable, in the order set.
    pub fn env_list(&self) -> &[(String, String)] {
        &self.meta.env
    }

    /// Changes the working directory; a relative path is taken from the current one.
    pub fn dir(&self, dir: &str) -> State {
        let mut s = self.clone();
        s.meta.cwd = if dir.starts_with('/') {
            clean_path(dir)
        } else {
            clean_path(&format!("{}/{dir}", s.meta.cwd))
        };
        s
    }

    pub fn get_dir(&self) -> &str {
        &self.meta.cwd
    }

    /// Sets the user later commands run as (`name`, `uid`, `uid:gid`).
    pub fn user(&self, user: &str) -> State {
        let mut s = self.clone();
        s.meta.user = user.to_owned();
        s
    }

    pub fn get_user(&self) -> &str {
        &self.meta.user
    }

    /// Sets the platform later operations build for.
    pub fn platform(&self, platform: Platform) -> State {
        let mut s = self.clone();
        s.meta.platform = platform;
        s
    }

    pub fn get_platform(&self) -> &Platform {
        &self.meta.platform
    }

    /// Whether this state is the empty filesystem.
    pub fn is_scratch(&self) -> bool {
        self.output.is_none()
    }

    /// A state with `node`'s output `index` as its filesystem and this state's metadata.
    pub(crate) fn with_output(&self, node: Node, index: i64) -> State {
        self.at_output(Arc::new(node), index)
    }

    /// A state with output `index` of a shared `node` and this state's metadata.
    pub(crate) fn at_output(&self, node: Arc<Node>, index: i64) -> State {
        State {
            output: Some(Output { node, index }),
            meta: self.meta.clone(),
        }
    }
}

/// Cleans a `/`-separated absolute path: no `.`, `..` resolved, no trailing `/`.
pub(crate) fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_values() {
        let a = State::scratch().env("A", "1").dir("/work");
        let b = a.env("A", "2").dir("sub/../x").user("app");
        assert_eq!(a.get_env("A"), Some("1"));
        assert_eq!(a.get_dir(), "/work");
        assert_eq!(a.get_user(), "");
        assert_eq!(b.get_env("A"), Some("2"));
        assert_eq!(b.get_dir(), "/work/x");
        assert_eq!(b.get_user(), "app");
        assert_eq!(b.env_list().len(), 1, "replacing keeps one entry");
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean_path("/a/./b/../c/"), "/a/c");
        assert_eq!(clean_path("/../.."), "/");
        assert_eq!(clean_path("a//b"), "/a/b");
    }
}
