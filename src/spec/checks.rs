//! The validators `parse` runs: each image's base, steps, overlay, labels,
//! variables and cache entries, and the checks across images. Each error
//! points at the key it is about.

use std::collections::BTreeMap;

use toml::Spanned;

use super::locate::{join, Source};
use super::raw::{
    OneOrMany, RawCopy, RawGit, RawImage, RawOverlay, RawSbom, RawStep, RawVars, SeqOrMap,
    STEP_KINDS,
};
use super::{
    dockerfile, Base, CopyFrom, Image, ImageSettings, LocalPath, OverlayItem, PathPolicy,
    PlatformPath, Spec, SpecError, Step, StepKind,
};
use crate::llb::{Platform, Platforms};
use crate::options::SbomGenerator;
use crate::reference::ImageRef;
use crate::tools::{Tool, ToolStep};

/// Where an image's checks point.
pub(super) struct Positions {
    /// The image's table.
    pub(super) image: usize,
    /// Its `platform` value, when it has one.
    pub(super) platform: usize,
}

impl Spec {
    /// Rejects `from` chains that loop, naming the loop.
    pub(super) fn check_cycles(
        &self,
        src: &Source,
        positions: &[Positions],
    ) -> Result<(), SpecError> {
        for image in &self.images {
            let chain: Vec<&str> = self.from_chain(image).map(|i| i.name.as_str()).collect();
            // The first name seen twice closes the loop.
            let repeat = (1..chain.len()).find_map(|i| {
                let first = chain[..i].iter().position(|n| *n == chain[i])?;
                Some((first, i))
            });
            let Some((start, end)) = repeat else { continue };
            let cycle = &chain[start..end];
            let first = self.index(cycle[0]);
            return Err(src.error(
                positions[first].image,
                join("images", cycle[0]),
                format!("cycle {} -> {}", cycle.join(" -> "), cycle[0]),
            ));
        }
        Ok(())
    }

    /// An image built `from` another runs on its platforms: it may name
    /// some of them, no other.
    pub(super) fn check_platforms(
        &self,
        src: &Source,
        positions: &[Positions],
    ) -> Result<(), SpecError> {
        for (i, image) in self.images.iter().enumerate() {
            let Some(own) = &image.platform else { continue };
            let differing = self
                .from_chain(image)
                .skip(1)
                .find(|parent| parent.platform.as_ref().is_some_and(|p| !own.within(p)));
            if let Some(parent) = differing {
                return Err(src.error(
                    positions[i].platform,
                    format!("{}.platform", join("images", &image.name)),
                    format!(
                        "{own} is not among {}, the platforms of {} it is built from",
                        parent.platform.as_ref().expect("found by it"),
                        parent.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Position of an image known to exist (parse checked every `from`).
    fn index(&self, name: &str) -> usize {
        self.images
            .iter()
            .position(|i| i.name == name)
            .unwrap_or_default()
    }
}

/// Checks one image of the spec.
pub(super) fn check_image(
    src: &Source,
    dir: &PathPolicy,
    names: &[String],
    name: String,
    at: usize,
    mut raw: RawImage,
) -> Result<Image, SpecError> {
    let prefix = join("images", &name);
    let key = |k: &str| format!("{prefix}.{k}");
    let base = match raw.dockerfile.take() {
        Some(dockerfile) => {
            only_dockerfile(src, &raw, dockerfile.span().start, &prefix)?;
            let checked = dockerfile::check(src, dir, names, dockerfile, &key("dockerfile"))?;
            Base::Dockerfile(checked)
        }
        None => check_base(src, names, &prefix, at, raw.base, raw.from)?,
    };
    let platform = raw
        .platform
        .map(|p| check_platforms(src, p, &key("platform")))
        .transpose()?;
    let env = check_vars(src, raw.env, &key("env"), at)?;
    let push = raw
        .push
        .map(|p| parse_at::<ImageRef>(src, p, &key("push")))
        .transpose()?;
    let provenance = raw
        .provenance
        .map(|p| parse_at::<crate::options::ProvenanceMode>(src, p, &key("provenance")))
        .transpose()?;
    let sbom = raw
        .sbom
        .map(|s| check_sbom(src, s, &key("sbom")))
        .transpose()?
        .flatten();
    let cache_to = check_cache_entries(src, dir, raw.cache_to, &key("cache_to"))?;
    let cache_from = check_cache_entries(src, dir, raw.cache_from, &key("cache_from"))?;
    let steps = raw
        .toolchain
        .into_iter()
        .enumerate()
        .map(|(i, step)| {
            let key = format!("{prefix}.toolchain[{}]", i + 1);
            let at = step.span().start;
            let step = check_step(src, &key, step)?;
            match (&step.platforms, &platform) {
                (Some(only), Some(all)) if !only.within(all) => Err(src.error(
                    at,
                    format!("{key}.platforms"),
                    format!("{only} is not among {all}, the platforms of {name}"),
                )),
                _ => Ok(step),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;

    let overlay = match raw.overlay {
        Some(o) => check_overlay(src, dir, o.into_inner(), &key("overlay"))?,
        None => Vec::new(),
    };
    Ok(Image {
        name,
        base,
        platform,
        settings: ImageSettings {
            env,
            workdir: raw.workdir.filter(|w| !w.is_empty()),
            user: raw.user,
            entrypoint: raw.entrypoint,
            cmd: raw.cmd,
            labels: check_labels(src, raw.labels, &key("labels"))?,
        },
        steps,
        overlay,
        push,
        cache_to,
        cache_from,
        provenance,
        sbom,
    })
}

/// `sbom = true` (the default generator), `false` (none) or
/// `{ generator = "IMAGE" }`, the image reference checked here.
fn check_sbom(
    src: &Source,
    sbom: Spanned<RawSbom>,
    key: &str,
) -> Result<Option<SbomGenerator>, SpecError> {
    match sbom.into_inner() {
        RawSbom::On(true) => Ok(Some(SbomGenerator::Default)),
        RawSbom::On(false) => Ok(None),
        RawSbom::Generator(table) => {
            parse_at::<SbomGenerator>(src, table.generator, &format!("{key}.generator")).map(Some)
        }
    }
}

/// A Dockerfile image takes its base, steps and config from the Dockerfile:
/// an image key that would also set them is an error naming it.
fn only_dockerfile(src: &Source, raw: &RawImage, at: usize, prefix: &str) -> Result<(), SpecError> {
    let conflicting = [
        ("base", raw.base.is_some()),
        ("from", raw.from.is_some()),
        ("toolchain", !raw.toolchain.is_empty()),
        ("overlay", raw.overlay.is_some()),
        ("env", !raw.env.is_empty()),
        ("workdir", raw.workdir.is_some()),
        ("user", raw.user.is_some()),
        ("entrypoint", raw.entrypoint.is_some()),
        ("cmd", raw.cmd.is_some()),
    ];
    match conflicting.iter().find(|(_, set)| *set) {
        Some((key, _)) => Err(src.error(
            at,
            format!("{prefix}.dockerfile"),
            format!("a dockerfile image takes its base, steps and config from the Dockerfile; remove {key}"),
        )),
        None => Ok(()),
    }
}

/// A value parsed where it stands; an error names its place and key.
/// `platform`: one platform (a string) or a list (an array), each entry
/// checked where it is written.
fn check_platforms(
    src: &Source,
    value: Spanned<OneOrMany>,
    key: &str,
) -> Result<Platforms, SpecError> {
    let at = value.span().start;
    let list = match value.into_inner() {
        OneOrMany::One(one) => vec![one.parse().map_err(|e: String| src.error(at, key, e))?],
        OneOrMany::Many(many) => many
            .iter()
            .map(|p| p.parse::<Platform>())
            .collect::<Result<_, _>>()
            .map_err(|e| src.error(at, key, e))?,
    };
    Platforms::new(list).map_err(|e| src.error(at, key, e))
}

fn parse_at<T>(src: &Source, value: Spanned<String>, key: &str) -> Result<T, SpecError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    value
        .get_ref()
        .parse()
        .map_err(|e: T::Err| src.error(value.span().start, key, e.to_string()))
}

/// Where an image starts: `base` (a reference, or `scratch`) or `from`
/// (another image of the file), exactly one of them.
fn check_base(
    src: &Source,
    names: &[String],
    prefix: &str,
    at: usize,
    base: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
) -> Result<Base, SpecError> {
    match (base, from) {
        (Some(_), Some(from)) => Err(src.error(
            from.span().start,
            prefix,
            "give either base (an image reference) or from (another image of this file), not both",
        )),
        (None, None) => Err(src.error(
            at,
            prefix,
            "needs a base (an image reference) or from (another image of this file)",
        )),
        (Some(base), None) if base.get_ref() == "scratch" => Ok(Base::Scratch),
        (Some(base), None) => Ok(Base::Image(parse_at(src, base, &format!("{prefix}.base"))?)),
        (None, Some(from)) if names.contains(from.get_ref()) => Ok(Base::From(from.into_inner())),
        (None, Some(from)) => {
            let file = src.path.file_name().map_or_else(
                || src.path.display().to_string(),
                |f| f.to_string_lossy().into_owned(),
            );
            Err(src.error(
                from.span().start,
                format!("{prefix}.from"),
                format!(
                    "no image named {:?} in {file} (images: {})",
                    from.get_ref(),
                    names.join(", ")
                ),
            ))
        }
    }
}

/// The overlay: copies first, then git checkouts.
fn check_overlay(
    src: &Source,
    dir: &PathPolicy,
    raw: RawOverlay,
    key: &str,
) -> Result<Vec<OverlayItem>, SpecError> {
    let mut overlay = Vec::new();
    for (copy, key) in numbered(raw.copy, &format!("{key}.copy")) {
        overlay.push(check_copy(src, dir, copy, &key)?);
    }
    for (git, key) in numbered(raw.git, &format!("{key}.git")) {
        overlay.push(check_git(src, git, &key)?);
    }
    Ok(overlay)
}

/// The most one label may hold: the whole image config travels in one gRPC
/// message of at most 4 MiB, and labels are for short facts.
pub const MAX_LABEL: usize = 64 << 10;

/// Labels, each within [`MAX_LABEL`] (name and value), or an error at the
/// value that is not.
fn check_labels(
    src: &Source,
    labels: BTreeMap<String, Spanned<String>>,
    key: &str,
) -> Result<BTreeMap<String, String>, SpecError> {
    labels
        .into_iter()
        .map(|(name, value)| {
            if name.len() + value.get_ref().len() > MAX_LABEL {
                return Err(src.error(
                    value.span().start,
                    format!("{key}.{name}"),
                    format!(
                        "{} bytes: a label is at most {MAX_LABEL} bytes (name and value)",
                        name.len() + value.get_ref().len()
                    ),
                ));
            }
            Ok((name, value.into_inner()))
        })
        .collect()
}

/// `cache_to` / `cache_from` entries, parsed as the command line parses them,
/// a local cache's directory under the spec's path policy (a spec must not
/// write or read caches elsewhere on the runner); an error names the entry's
/// place in the file.
fn check_cache_entries<T>(
    src: &Source,
    policy: &PathPolicy,
    entries: Vec<Spanned<String>>,
    key: &str,
) -> Result<Vec<T>, SpecError>
where
    T: std::str::FromStr<Err = crate::options::OptionError> + crate::options::LocalCachePath,
{
    entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let fail =
                |reason: String| src.error(e.span().start, format!("{key}[{}]", i + 1), reason);
            let mut entry = e.get_ref().parse::<T>().map_err(|err| fail(err.reason))?;
            if let Some(path) = entry.local_path() {
                *path = policy.resolve_new(&path.to_string_lossy()).map_err(fail)?;
            }
            Ok(entry)
        })
        .collect()
}

/// The items of a "table or array of tables" key, with the key path of each.
fn numbered<T>(value: Option<SeqOrMap<Vec<T>, T>>, key: &str) -> Vec<(T, String)> {
    match value {
        None => Vec::new(),
        Some(SeqOrMap::Map(one)) => vec![(one, key.to_owned())],
        Some(SeqOrMap::Seq(many)) => many
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, format!("{key}[{}]", i + 1)))
            .collect(),
    }
}

/// Environment variables in file order, with valid names.
fn check_vars(
    src: &Source,
    vars: RawVars,
    key: &str,
    at: usize,
) -> Result<Vec<(String, String)>, SpecError> {
    let mut vars: Vec<(Spanned<String>, String)> = vars.into_iter().collect();
    vars.sort_by_key(|(k, _)| k.span().start);
    vars.into_iter()
        .map(|(name, value)| {
            let n = name.get_ref();
            if n.is_empty() || n.contains('=') || n.contains('\0') {
                let at = if name.span().is_empty() {
                    at
                } else {
                    name.span().start
                };
                Err(src.error(
                    at,
                    key,
                    format!("{n:?} is not a variable name (no '=', not empty)"),
                ))
            } else {
                Ok((name.into_inner(), value))
            }
        })
        .collect()
}

/// A package list, as its tool checks it, located in the file.
fn check_packages(
    src: &Source,
    list: Spanned<Vec<String>>,
    tool: Tool,
    key: &str,
) -> Result<Vec<String>, SpecError> {
    let at = list.span().start;
    let list = list.into_inner();
    crate::tools::check_packages(tool, &list).map_err(|why| src.error(at, key, why))?;
    Ok(list)
}

/// A toolchain table names exactly one step kind.
fn check_one_kind(src: &Source, key: &str, at: usize, raw: &RawStep) -> Result<(), SpecError> {
    let present: Vec<(&str, usize)> = [
        raw.apt.as_ref().map(|v| v.span().start),
        raw.pip.as_ref().map(|v| v.span().start),
        raw.npm.as_ref().map(|v| v.span().start),
        raw.run.as_ref().map(|v| v.span().start),
        raw.env.as_ref().map(|v| v.span().start),
        raw.workdir.as_ref().map(|v| v.span().start),
        raw.user.as_ref().map(|v| v.span().start),
    ]
    .into_iter()
    .zip(STEP_KINDS)
    .filter_map(|(at, kind)| at.map(|at| (kind, at)))
    .collect();
    match present.as_slice() {
        [] => Err(src.error(
            at,
            key,
            format!("a step needs one of {}", STEP_KINDS.join(", ")),
        )),
        [_] => Ok(()),
        [.., (_, second_at)] => {
            let kinds: Vec<&str> = present.iter().map(|(k, _)| *k).collect();
            Err(src.error(
                *second_at,
                key,
                format!(
                    "a step has exactly one of {}; this one has {} (split it into several steps)",
                    STEP_KINDS.join(", "),
                    kinds.join(" and ")
                ),
            ))
        }
    }
}

/// A `run` step: a script, and absolute cache paths.
fn check_run(
    src: &Source,
    key: &str,
    script: Spanned<String>,
    cache: Option<Spanned<Vec<Spanned<String>>>>,
) -> Result<StepKind, SpecError> {
    if script.get_ref().trim().is_empty() {
        return Err(src.error(
            script.span().start,
            format!("{key}.run"),
            "run needs a script",
        ));
    }
    let mut paths = Vec::new();
    for path in cache.map(Spanned::into_inner).unwrap_or_default() {
        if !path.get_ref().starts_with('/') {
            return Err(src.error(
                path.span().start,
                format!("{key}.cache"),
                format!("cache paths are absolute; {:?} is not", path.get_ref()),
            ));
        }
        paths.push(path.into_inner());
    }
    Ok(StepKind::Tool(ToolStep::Run {
        script: script.into_inner(),
        cache: paths,
    }))
}

/// One toolchain table: exactly one kind, `cache` only with `run`, no empty lists.
fn check_step(src: &Source, key: &str, step: Spanned<RawStep>) -> Result<Step, SpecError> {
    let step_at = step.span().start;
    let raw = step.into_inner();
    let field = |k: &str| format!("{key}.{k}");
    check_one_kind(src, key, step_at, &raw)?;
    if let (Some(cache), None) = (&raw.cache, &raw.run) {
        return Err(src.error(
            cache.span().start,
            field("cache"),
            "cache is only valid with run (apt, pip and npm steps get their cache mounts already)",
        ));
    }
    let name = raw.name.filter(|n| !n.trim().is_empty());
    let platforms = raw
        .platforms
        .map(|p| check_platforms(src, p, &field("platforms")))
        .transpose()?;
    let kind = if let Some(list) = raw.apt {
        StepKind::Tool(ToolStep::Apt(check_packages(
            src,
            list,
            Tool::Apt,
            &field("apt"),
        )?))
    } else if let Some(list) = raw.pip {
        StepKind::Tool(ToolStep::Pip(check_packages(
            src,
            list,
            Tool::Pip,
            &field("pip"),
        )?))
    } else if let Some(npm) = raw.npm {
        let span = npm.span();
        let (packages, dir) = match npm.into_inner() {
            SeqOrMap::Seq(packages) => (packages, None),
            SeqOrMap::Map(d) => (d.packages, d.dir),
        };
        if dir.as_deref().is_some_and(|d| d.trim().is_empty()) {
            return Err(src.error(span.start, field("npm.dir"), "must not be empty"));
        }
        let packages = check_packages(src, Spanned::new(span, packages), Tool::Npm, &field("npm"))?;
        StepKind::Tool(ToolStep::Npm { packages, dir })
    } else if let Some(script) = raw.run {
        check_run(src, key, script, raw.cache)?
    } else if let Some(env) = raw.env {
        let at = env.span().start;
        let vars = check_vars(src, env.into_inner(), &field("env"), at)?;
        if vars.is_empty() {
            return Err(src.error(at, field("env"), "env needs at least one variable"));
        }
        StepKind::Env(vars)
    } else if let Some(w) = raw.workdir {
        StepKind::Workdir(non_empty(src, w, &field("workdir"))?)
    } else if let Some(u) = raw.user {
        StepKind::User(non_empty(src, u, &field("user"))?)
    } else {
        // `present` held exactly one kind.
        return Err(src.error(step_at, key, "a step needs a kind"));
    };
    Ok(Step {
        name,
        kind,
        platforms,
    })
}

fn check_copy(
    src: &Source,
    policy: &PathPolicy,
    copy: RawCopy,
    key: &str,
) -> Result<OverlayItem, SpecError> {
    let from = copy.from.get_ref();
    let at = copy.from.span().start;
    let from_key = format!("{key}.from");
    if from.trim().is_empty() {
        return Err(src.error(at, from_key, "must not be empty"));
    }
    let from = match PlatformPath::new(from, policy).map_err(|e| src.error(at, &from_key, e))? {
        Some(path) => CopyFrom::PerPlatform {
            path,
            at: src.place(at, from_key),
        },
        None => {
            CopyFrom::Dir(LocalPath::dir(policy, from).map_err(|e| src.error(at, from_key, e))?)
        }
    };
    let to = non_empty(src, copy.to, &format!("{key}.to"))?;
    Ok(OverlayItem::Copy {
        from,
        to,
        exclude: copy.exclude,
    })
}

fn check_git(src: &Source, git: RawGit, key: &str) -> Result<OverlayItem, SpecError> {
    let url_at = git.url.span().start;
    let url = non_empty(src, git.url, &format!("{key}.url"))?;
    if url_has_credentials(&url) {
        return Err(src.error(
            url_at,
            format!("{key}.url"),
            "the URL carries credentials, which would be kept in the image's history and \
             the daemon's cache keys; give a token as a secret instead: \
             --secret id=GIT_AUTH_TOKEN,src=FILE",
        ));
    }
    Ok(OverlayItem::Git {
        url,
        reference: git.reference,
        to: non_empty(src, git.to, &format!("{key}.to"))?,
    })
}

/// A string field that must say something: its value, or the error at its position.
fn non_empty(src: &Source, value: Spanned<String>, key: &str) -> Result<String, SpecError> {
    if value.get_ref().trim().is_empty() {
        return Err(src.error(value.span().start, key, "must not be empty"));
    }
    Ok(value.into_inner())
}

/// `scheme://user[:token]@host/…`: credentials in the URL's authority (not
/// `git@host:path`, the ssh form, whose user is no secret).
fn url_has_credentials(url: &str) -> bool {
    url.split_once("://")
        .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(rest))
        .is_some_and(|authority| authority.contains('@'))
}
