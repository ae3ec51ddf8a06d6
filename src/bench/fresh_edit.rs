//! The `fresh-edit` mode: what a fresh CI runner pays when one apt package
//! and one pip requirement were added since the cache was exported. The
//! builder is emptied (cache mounts too), the cache imported, the edited
//! spec built; done once with `mounts=all` on the cache entries and once
//! without, each reporting what the changed steps downloaded (apt's
//! `Fetched N MB`, pip's `Downloading … (N kB)`) and the wall time.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use super::{built_showing, empty_builder, write_file, BenchError};
use crate::client::Client;
use crate::mounts::{MountOptions, MountSelection};
use crate::reference::ImageRef;
use crate::solve::progress::{Event, Progress, Renderer, Tracker};
use crate::solve::{CacheExport, CacheImport, LayerOptions};
use crate::spec::{Overrides, Spec};
use crate::wire::moby::buildkit::v1::StatusResponse;

/// The apt package and pip requirement the edit adds.
pub const ADDED_APT: &str = "tree";
pub const ADDED_PIP: &str = "toml==0.10.2";

/// One build of the edited spec on an emptied builder.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FreshEditRun {
    /// Whether the cache entries carried the cache mounts.
    pub mounts: bool,
    pub seconds: f64,
    pub apt_packages: usize,
    pub apt_bytes: u64,
    pub pip_downloads: usize,
    pub pip_bytes: u64,
}

/// Runs the mode with and without mounts, the spec's file restored after.
pub async fn run(
    client: &Client,
    spec_file: &Path,
    base: &Overrides,
    repo: &ImageRef,
    say: &mut dyn FnMut(&str),
) -> Result<Vec<FreshEditRun>, BenchError> {
    let original = std::fs::read_to_string(spec_file)
        .map_err(|e| BenchError::Setup(format!("reading {}: {e}", spec_file.display())))?;
    let edited = edit(&original)?;
    let mut runs = Vec::new();
    for mounts in [true, false] {
        let with = if mounts {
            "with mounts"
        } else {
            "without mounts"
        };
        let tag = if mounts {
            "fresh-mounts"
        } else {
            "fresh-plain"
        };
        let (export, import) = entries(repo, tag, mounts);
        say(&format!(
            "fresh-edit ({with}): exporting the cache of the spec as it is"
        ));
        write_file(spec_file, original.as_bytes())?;
        let spec = Spec::load(spec_file)?;
        let exporting = Overrides {
            cache_to: vec![export],
            ..base.clone()
        };
        built_showing(client, &spec, &exporting, &crate::solve::progress::Quiet).await?;
        say(&format!(
            "fresh-edit ({with}): emptying the builder, then building the edit"
        ));
        empty_builder(client).await?;
        write_file(spec_file, edited.as_bytes())?;
        let spec = Spec::load(spec_file)?;
        let importing = Overrides {
            cache_from: vec![import],
            ..base.clone()
        };
        let counter = Downloads::default();
        let began = Instant::now();
        let built = built_showing(client, &spec, &importing, &counter).await;
        let seconds = began.elapsed().as_secs_f64();
        write_file(spec_file, original.as_bytes())?;
        built?;
        let mut run = counter.total();
        run.mounts = mounts;
        run.seconds = seconds;
        runs.push(run);
    }
    Ok(runs)
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
            let Event::Log { step, line } = event else {
                continue;
            };
            let name = &tracker.steps()[*step].name;
            if name.contains("apt install") {
                count_apt(&mut total, line);
            } else if name.contains("pip install") {
                count_pip(&mut total, line);
            }
        }
    }

    fn finish(&mut self, _: &Tracker) {}
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
