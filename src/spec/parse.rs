//! strata.toml → [`Spec`]: the TOML read with positions, each image checked
//! (`checks`), then the checks across images (loops, platforms, Dockerfile
//! parents); every error names file, line, column and key.

use std::path::{Path, PathBuf};

use super::checks::{check_image, Positions};
use super::locate::{join, Source};
use super::raw::RawSpec;
use super::{valid_image_name, PathPolicy, Spec, SpecError};

impl Spec {
    /// Reads and checks the spec at `path`, which may read files only inside
    /// its own directory.
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        Spec::load_allowing(path, &[])
    }

    /// Reads and checks the spec at `path`, which may also read files in the
    /// directories `allow` names (`--allow-path`).
    pub fn load_allowing(path: &Path, allow: &[PathBuf]) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            file: path.to_owned(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read the spec: {e}"),
        })?;
        Spec::parse_allowing(&text, path, allow)
    }

    /// Parses and checks spec text. `path` names the file in errors, and its
    /// directory anchors relative paths (overlay dirs, `ca_cert`).
    pub fn parse(text: &str, path: &Path) -> Result<Spec, SpecError> {
        Spec::parse_allowing(text, path, &[])
    }

    /// [`Spec::parse`], with the directories `allow` readable besides the spec's own.
    pub fn parse_allowing(text: &str, path: &Path, allow: &[PathBuf]) -> Result<Spec, SpecError> {
        let src = Source::new(path, text);
        let raw: RawSpec = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        let policy = PathPolicy::new(&dir, allow);
        let dir = policy.dir().to_owned();

        let ca_cert = match raw.ca_cert {
            Some(c) if c.get_ref().trim().is_empty() => {
                return Err(src.error(c.span().start, "ca_cert", "must not be empty"))
            }
            Some(c) => Some(
                policy
                    .resolve(c.get_ref())
                    .map_err(|e| src.error(c.span().start, "ca_cert", e))?,
            ),
            None => None,
        };

        let mut raw_images: Vec<_> = raw.images.into_iter().collect();
        raw_images.sort_by_key(|(name, _)| name.span().start);
        if raw_images.is_empty() {
            return Err(src.error(
                0,
                "images",
                "the spec defines no image (add an [images.NAME] table)",
            ));
        }
        let names: Vec<String> = raw_images
            .iter()
            .map(|(n, _)| n.get_ref().clone())
            .collect();
        let mut images = Vec::new();
        let mut positions = Vec::new();
        for (name, image) in raw_images {
            if !valid_image_name(name.get_ref()) {
                return Err(src.error(
                    name.span().start,
                    join("images", name.get_ref()),
                    "image names are lowercase letters, digits, '.', '_' and '-', \
                     starting with a letter or digit",
                ));
            }
            positions.push(Positions {
                image: image.span().start,
                platform: image
                    .get_ref()
                    .platform
                    .as_ref()
                    .map_or(image.span().start, |p| p.span().start),
            });
            let at = image.span().start;
            images.push(check_image(
                &src,
                &policy,
                &names,
                name.into_inner(),
                at,
                image.into_inner(),
            )?);
        }
        let spec = Spec {
            path: path.to_owned(),
            dir,
            ca_cert,
            images,
        };
        spec.check_cycles(&src, &positions)?;
        spec.check_platforms(&src, &positions)?;
        Ok(spec)
    }
}
