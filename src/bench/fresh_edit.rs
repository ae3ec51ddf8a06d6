//! The `fresh-edit` mode: what a fresh CI runner pays when one apt package
//! and one pip requirement were added since the cache was exported. The
//! builder is emptied (cache mounts too), the cache imported, the edited
//! spec built; done once with `mounts=all` on the cache entries and once
//! without, each reporting what the changed steps downloaded (apt's
//! `Fetched N MB`, pip's `Downloading … (N kB)`) and the wall time. With
//! `--compare buildctl`, buildctl does what the run without mounts did: the
//! same edited graph on an emptied builder, importing the same cache.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use super::external::{External, Tool, Work};
use super::{built_showing, empty_builder, rawjson, write_file, BenchError, Runner};
use crate::options::{CacheExport, CacheImport, LayerOptions};
use crate::options::{MountOptions, MountSelection};
use crate::reference::ImageRef;
use crate::solve::progress::{Event, Progress, Quiet, Renderer, Tracker};
use crate::spec::{Overrides, Spec};
use crate::wire::moby::buildkit::v1::StatusResponse;

/// The apt package and pip requirement the edit adds.
pub const ADDED_APT: &str = "tree";
pub const ADDED_PIP: &str = "toml==0.10.2";

/// The cache tag of the run without mounts, which buildctl imports too.
const PLAIN_TAG: &str = "fresh-plain";

/// One build of the edited spec on an emptied builder.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FreshEditRun {
    /// `strata` or the client compared.
    pub tool: String,
    /// Whether the cache entries carried the cache mounts.
    pub mounts: bool,
    pub seconds: f64,
    pub apt_packages: usize,
    pub apt_bytes: u64,
    pub pip_downloads: usize,
    pub pip_bytes: u64,
}

/// Runs the mode with and without mounts, then each client compared; the
/// spec's file restored after each.
pub(super) async fn run(
    runner: &Runner<'_>,
    spec_file: &Path,
    say: &mut dyn FnMut(&str),
) -> Result<Vec<FreshEditRun>, BenchError> {
    let original = std::fs::read_to_string(spec_file)
        .map_err(|e| BenchError::Setup(format!("reading {}: {e}", spec_file.display())))?;
    let edited = edit(&original)?;
    let edit = Edit {
        file: spec_file,
        original: &original,
        edited: &edited,
    };
    let mut runs = Vec::new();
    for mounts in [true, false] {
        runs.push(strata_run(runner, &edit, mounts, say).await?);
    }
    for external in &runner.options.compare {
        if external.tool != Tool::Buildctl {
            say(&format!(
                "fresh-edit: {} builds Dockerfiles only, not this spec's graph; not compared",
                external.tool.name()
            ));
            continue;
        }
        runs.push(client_run(runner, external, &edit, say).await?);
    }
    Ok(runs)
}

/// The spec's file, as it is and with the edit.
struct Edit<'a> {
    file: &'a Path,
    original: &'a str,
    edited: &'a str,
}

impl Edit<'_> {
    /// The spec as it is, or edited, loaded from its file.
    fn load(&self, edited: bool) -> Result<Spec, BenchError> {
        let text = if edited { self.edited } else { self.original };
        write_file(self.file, text.as_bytes())?;
        Ok(Spec::load(self.file)?)
    }

    fn restore(&self) -> Result<(), BenchError> {
        write_file(self.file, self.original.as_bytes())
    }
}

/// strata: the cache (with or without the mounts) exported from the spec as
/// it is, the builder emptied, the edit built importing it.
async fn strata_run(
    runner: &Runner<'_>,
    edit: &Edit<'_>,
    mounts: bool,
    say: &mut dyn FnMut(&str),
) -> Result<FreshEditRun, BenchError> {
    let (client, base, repo) = (runner.client, &runner.base, &runner.cache.repo);
    let with = if mounts {
        "with mounts"
    } else {
        "without mounts"
    };
    let tag = if mounts { "fresh-mounts" } else { PLAIN_TAG };
    let (export, import) = entries(repo, tag, mounts);
    say(&format!(
        "fresh-edit ({with}): exporting the cache of the spec as it is"
    ));
    let exporting = Overrides {
        cache_to: vec![export],
        ..base.clone()
    };
    built_showing(client, &edit.load(false)?, &exporting, &Quiet).await?;
    say(&format!(
        "fresh-edit ({with}): emptying the builder, then building the edit"
    ));
    empty_builder(client).await?;
    let spec = edit.load(true)?;
    let importing = Overrides {
        cache_from: vec![import],
        ..base.clone()
    };
    let counter = Downloads::default();
    let began = Instant::now();
    let built = built_showing(client, &spec, &importing, &counter).await;
    let seconds = began.elapsed().as_secs_f64();
    edit.restore()?;
    built?;
    Ok(FreshEditRun {
        tool: "strata".into(),
        mounts,
        seconds,
        ..counter.total()
    })
}

/// A client compared (buildctl): the builder emptied, strata's graph of the
/// edit on its stdin, importing the cache the run without mounts exported.
async fn client_run(
    runner: &Runner<'_>,
    external: &External,
    edit: &Edit<'_>,
    say: &mut dyn FnMut(&str),
) -> Result<FreshEditRun, BenchError> {
    let tool = external.tool.name();
    say(&format!(
        "fresh-edit ({tool}): emptying the builder, then building the edit"
    ));
    empty_builder(runner.client).await?;
    let spec = edit.load(true)?;
    let llb_file = runner.llb_file.with_file_name("edited.llb");
    let lowered = super::lowered(&spec, &runner.base, &llb_file).await;
    edit.restore()?;
    let (image, ca_cert) = lowered?;
    let work = Work {
        image: &image,
        dockerfile: None,
        llb_file: &llb_file,
        ca_cert: ca_cert.as_deref(),
        output: runner.cache.output(tool),
    };
    let (_, import) = entries(&runner.cache.repo, PLAIN_TAG, false);
    let captured = external
        .capture(&work, Some(&import))
        .await
        .map_err(BenchError::Setup)?;
    let mut run = FreshEditRun {
        tool: tool.into(),
        seconds: captured.seconds,
        ..FreshEditRun::default()
    };
    for (step, log) in rawjson::step_logs(&captured.progress) {
        for line in log.lines() {
            count(&mut run, &step, line);
        }
    }
    Ok(run)
}

/// The registry cache entries of one variant.
fn entries(repo: &ImageRef, tag: &str, mounts: bool) -> (CacheExport, CacheImport) {
    let mounts = mounts.then_some(MountOptions {
        select: MountSelection::All,
        max_size: None,
    });
    let reference = repo.with_tag(tag);
    let export = CacheExport::Registry {
        reference: reference.clone(),
        options: LayerOptions::default(),
        insecure: reference.is_loopback(),
        mounts: mounts.clone(),
    };
    let import = CacheImport::Registry {
        insecure: reference.is_loopback(),
        reference,
        mounts,
    };
    (export, import)
}

/// The spec with [`ADDED_APT`] and [`ADDED_PIP`] put first in its first
/// `apt = [` and `pip = [` lists.
fn edit(spec: &str) -> Result<String, BenchError> {
    let mut out = spec.to_owned();
    for (key, added) in [("apt = [", ADDED_APT), ("pip = [", ADDED_PIP)] {
        let at = out.find(key).ok_or_else(|| {
            BenchError::Setup(format!(
                "fresh-edit adds to the spec's first apt and pip steps; it has no `{key}`"
            ))
        })?;
        out.insert_str(at + key.len(), &format!("\"{added}\", "));
    }
    Ok(out)
}

/// A quiet progress that adds up what apt and pip steps download.
#[derive(Clone, Default)]
struct Downloads(Arc<Mutex<FreshEditRun>>);

impl Downloads {
    fn total(&self) -> FreshEditRun {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Progress for Downloads {
    fn renderer(&self, _: Option<&str>) -> Box<dyn Renderer> {
        Box::new(self.clone())
    }
}

impl Renderer for Downloads {
    fn update(&mut self, tracker: &Tracker, _: &StatusResponse, events: &[Event]) {
        let mut total = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for event in events {
            if let Event::Log { step, line } = event {
                count(&mut total, &tracker.steps()[*step].name, line);
            }
        }
    }

    fn finish(&mut self, _: &Tracker) {}
}

/// Adds what one log line of the step named `step` says it downloaded.
fn count(total: &mut FreshEditRun, step: &str, line: &str) {
    if step.contains("apt install") {
        count_apt(total, line);
    } else if step.contains("pip install") {
        count_pip(total, line);
    }
}

/// `Get:5 http://… tree amd64 2.1.0-1 [52.5 kB]` and `Fetched 52.5 kB in 0s`.
fn count_apt(total: &mut FreshEditRun, line: &str) {
    let index = ["InRelease", "Release", "Packages", "Translation"];
    if line.contains("Get:") && !index.iter().any(|w| line.contains(w)) {
        total.apt_packages += 1;
    }
    if let Some(rest) = line.trim_start().strip_prefix("Fetched ") {
        total.apt_bytes += size_words(rest).unwrap_or(0);
    }
}

/// `Downloading toml-0.10.2-py2.py3-none-any.whl (16 kB)`.
fn count_pip(total: &mut FreshEditRun, line: &str) {
    let Some(at) = line.find("Downloading ") else {
        return;
    };
    total.pip_downloads += 1;
    let rest = &line[at..];
    if let Some(open) = rest.rfind('(') {
        total.pip_bytes += size_words(&rest[open + 1..]).unwrap_or(0);
    }
}

/// The size `52.5 kB` (or `1,234 B`, `1.2 MB`) at the start of `text`.
fn size_words(text: &str) -> Option<u64> {
    let mut words = text.split_whitespace();
    let number: f64 = words.next()?.replace(',', "").parse().ok()?;
    let unit = words.next()?.trim_end_matches([')', ',']);
    let factor = match unit {
        "B" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => return None,
    };
    Some((number * factor) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_apt_and_pip_downloads() {
        let mut t = FreshEditRun::default();
        count_apt(
            &mut t,
            "Get:1 http://deb.debian.org/debian bookworm InRelease [151 kB]",
        );
        count_apt(
            &mut t,
            "Get:2 http://deb.debian.org/debian bookworm/main amd64 tree amd64 2.1.0-1 [52.5 kB]",
        );
        count_apt(&mut t, "Fetched 52.5 kB in 0s (5139 kB/s)");
        count_pip(
            &mut t,
            "  Downloading toml-0.10.2-py2.py3-none-any.whl (16 kB)",
        );
        count_pip(
            &mut t,
            "Using cached six-1.16.0-py2.py3-none-any.whl (11 kB)",
        );
        assert_eq!((t.apt_packages, t.apt_bytes), (1, 52_500));
        assert_eq!((t.pip_downloads, t.pip_bytes), (1, 16_000));
    }

    #[test]
    fn adds_a_package_and_a_requirement() {
        let spec = "apt = [\"git\"]\npip = [\"six\"]\n";
        let edited = edit(spec).unwrap();
        assert!(edited.contains("apt = [\"tree\", \"git\"]"), "{edited}");
        assert!(
            edited.contains("pip = [\"toml==0.10.2\", \"six\"]"),
            "{edited}"
        );
        assert!(edit("apt = []").is_err());
    }
}
