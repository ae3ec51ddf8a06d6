//! The spec's trust boundary. A strata.toml may come from a pull request: by
//! default it reads files only inside its own directory (after resolving
//! symlinks, so a link cannot lead out); `--allow-path DIR` lets more in.
//! Paths shown in step names and image history are relative to the spec, so
//! an image never records where a runner keeps its checkouts.

use std::path::{Component, Path, PathBuf};

use crate::llb::Platform;

/// Where a spec may read host files from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPolicy {
    /// The spec's directory, canonical when it exists.
    dir: PathBuf,
    /// Extra roots the user allowed, canonical.
    allowed: Vec<PathBuf>,
}

impl PathPolicy {
    /// The policy of a spec in `dir`, with `allow` (`--allow-path`) added;
    /// an allowed path that does not exist allows nothing.
    pub fn new(dir: &Path, allow: &[PathBuf]) -> PathPolicy {
        PathPolicy {
            dir: std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned()),
            allowed: allow
                .iter()
                .filter_map(|p| std::fs::canonicalize(p).ok())
                .collect(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `value` (relative to the spec's directory, or absolute) resolved, and
    /// checked to lie inside the spec's directory or an allowed one.
    pub fn resolve(&self, value: &str) -> Result<PathBuf, String> {
        let joined = self.dir.join(value);
        let real = std::fs::canonicalize(&joined)
            .map_err(|e| format!("{value:?}: {e} (looked for {})", joined.display()))?;
        if real.starts_with(&self.dir) || self.allowed.iter().any(|a| real.starts_with(a)) {
            Ok(real)
        } else {
            Err(format!(
                "{value:?} resolves to {}, outside the spec's directory {}; a spec reads only \
                 files beside it unless you pass --allow-path {}",
                real.display(),
                self.dir.display(),
                real.display()
            ))
        }
    }

    /// `value` as a path that may not exist yet (a cache directory strata
    /// writes): its nearest existing ancestor must lie inside, resolved as
    /// [`PathPolicy::resolve`] does, and what follows it names no `..`.
    pub fn resolve_new(&self, value: &str) -> Result<PathBuf, String> {
        let joined = self.dir.join(value);
        let mut existing = joined.as_path();
        let mut rest = Vec::new();
        while std::fs::symlink_metadata(existing).is_err() {
            let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
                return Err(format!(
                    "{value:?}: '..' after a directory that does not exist"
                ));
            };
            rest.push(name.to_owned());
            existing = parent;
        }
        let root = self.resolve(&existing.to_string_lossy()).map_err(|_| {
            format!(
                "{value:?} lies outside the spec's directory {}; a spec writes and reads \
                 caches only beside it unless you pass --allow-path DIR",
                self.dir.display()
            )
        })?;
        Ok(rest.iter().rev().fold(root, |path, name| path.join(name)))
    }

    /// How `path` is shown in step names and history: relative to the spec's
    /// directory (`.` for the directory itself, `../x` outside it).
    pub fn shown(&self, path: &Path) -> String {
        let base: Vec<Component> = self.dir.components().collect();
        let target: Vec<Component> = path.components().collect();
        let common = base.iter().zip(&target).take_while(|(a, b)| a == b).count();
        let mut rel = PathBuf::new();
        for _ in common..base.len() {
            rel.push("..");
        }
        for c in &target[common..] {
            rel.push(c);
        }
        if rel.as_os_str().is_empty() {
            ".".into()
        } else {
            rel.display().to_string()
        }
    }
}

/// A host directory the spec reads, with how step names show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPath {
    /// Absolute, inside the spec's [`PathPolicy`].
    pub path: PathBuf,
    /// Relative to the spec, as step names and history show it.
    pub shown: String,
}

impl LocalPath {
    /// `value` resolved through `policy`; it must be a directory.
    pub fn dir(policy: &PathPolicy, value: &str) -> Result<LocalPath, String> {
        let path = policy.resolve(value)?;
        if !path.is_dir() {
            return Err(format!("{value:?} is not a directory ({})", path.display()));
        }
        Ok(LocalPath {
            shown: policy.shown(&path),
            path,
        })
    }
}

/// A path naming the platform: `{os}`, `{arch}` and `{variant}` are filled in
/// for each platform an image is built for. It is resolved then, not when the
/// spec is read: `--platform` may ask for one the file does not name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformPath {
    written: String,
    policy: PathPolicy,
}

/// The placeholders a [`PlatformPath`] may hold.
const PLACEHOLDERS: [&str; 3] = ["{os}", "{arch}", "{variant}"];

impl PlatformPath {
    /// `written` as a platform path when it names the platform (`None` when
    /// it holds no braces); an unknown placeholder is an error.
    pub fn new(written: &str, policy: &PathPolicy) -> Result<Option<PlatformPath>, String> {
        if !written.contains(['{', '}']) {
            return Ok(None);
        }
        let rest = PLACEHOLDERS
            .iter()
            .fold(written.to_owned(), |s, p| s.replace(p, ""));
        if rest.contains(['{', '}']) {
            return Err(format!(
                "{written:?}: a path may name the platform only with {}",
                PLACEHOLDERS.join(", ")
            ));
        }
        Ok(Some(PlatformPath {
            written: written.to_owned(),
            policy: policy.clone(),
        }))
    }

    /// The path for `platform` (`{variant}` is empty when it has none).
    pub fn fill(&self, platform: &Platform) -> String {
        self.written
            .replace("{os}", &platform.os)
            .replace("{arch}", &platform.architecture)
            .replace("{variant}", &platform.variant)
    }

    /// The directory for `platform`, checked as a fixed path is when the
    /// spec is read.
    pub fn dir_for(&self, platform: &Platform) -> Result<LocalPath, String> {
        LocalPath::dir(&self.policy, &self.fill(platform))
            .map_err(|e| format!("{:?} for {platform}: {e}", self.written))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_unless_allowed_and_symlinks_do_not_lead_out() {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let spec = root.join("project");
        let secret = root.join("secret");
        std::fs::create_dir_all(spec.join("src")).unwrap();
        std::fs::create_dir_all(&secret).unwrap();
        std::os::unix::fs::symlink(&secret, spec.join("link")).unwrap();
        let policy = PathPolicy::new(&spec, &[]);
        assert_eq!(policy.resolve("src").unwrap(), spec.join("src"));
        assert_eq!(policy.resolve(".").unwrap(), spec);
        for outside in ["../secret", "link", secret.to_str().unwrap(), "/"] {
            let err = policy.resolve(outside).unwrap_err();
            assert!(err.contains("--allow-path"), "{outside}: {err}");
        }
        let allowing = PathPolicy::new(&spec, std::slice::from_ref(&secret));
        assert_eq!(allowing.resolve("link").unwrap(), secret);
        assert_eq!(
            policy.resolve_new("cache/new").unwrap(),
            spec.join("cache/new")
        );
        for outside in [
            "../elsewhere/new",
            "link/new",
            "/tmp/new-cache",
            "missing/../../x",
        ] {
            assert!(policy.resolve_new(outside).is_err(), "{outside}");
        }
        assert_eq!(policy.shown(&spec.join("src")), "src");
        assert_eq!(policy.shown(&spec), ".");
        assert_eq!(policy.shown(&secret), "../secret");
    }
}
