//! `strata build`: the spec's images (all, or those named) solved on the
//! daemon, pushed or exported; a summary line per image, the cache each export
//! wrote, and `--metadata-file` for machines.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use strata::build::{BuildError, Built, Failed, Outcome, Summary};
use strata::options::Output;
use strata::pool::label;
use strata::reference::ImageRef;
use strata::solve::SolveError;
use strata::units::{human_bytes, human_duration};

use super::args::{BuildFlags, SpecArgs};
use super::progress::ProgressMode;
use super::Cli;

#[derive(Args)]
pub struct BuildArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Images to build (default: every image of the spec).
    #[arg(value_name = "IMAGE")]
    images: Vec<String>,
    /// Push the image to this reference (one image only).
    #[arg(long, value_name = "REF")]
    push: Option<ImageRef>,
    /// Export the image: type=registry,name=REF | type=image,name=REF[,push=true] |
    /// type=oci,dest=FILE | type=docker,dest=FILE | type=local,dest=DIR (repeatable).
    #[arg(short, long, value_name = "SPEC")]
    output: Vec<Output>,
    #[command(flatten)]
    build: BuildFlags,
    #[command(flatten)]
    dockerfile: DockerfileArgs,
}

/// `--dockerfile`: one Dockerfile instead of a spec.
#[derive(Args)]
#[command(next_help_heading = "Dockerfile (instead of a spec)")]
struct DockerfileArgs {
    /// Build this Dockerfile with BuildKit's Dockerfile frontend (dockerfile.v0)
    /// instead of the spec's images; every other option applies.
    #[arg(long, value_name = "FILE", conflicts_with = "images")]
    dockerfile: Option<PathBuf>,
    /// Its build context (default: the Dockerfile's directory).
    #[arg(long, value_name = "DIR", requires = "dockerfile")]
    context: Option<PathBuf>,
    /// The stage to build (default: the last).
    #[arg(long, value_name = "STAGE", requires = "dockerfile")]
    target: Option<String>,
    /// A build argument (repeatable).
    #[arg(long = "build-arg", value_name = "KEY=VALUE", value_parser = strata::values::parse_pair, requires = "dockerfile")]
    build_args: Vec<(String, String)>,
    /// A label on the image (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = strata::values::parse_label, requires = "dockerfile")]
    labels: Vec<(String, String)>,
}

impl DockerfileArgs {
    /// The one-image spec `--dockerfile` asks for, if it does.
    fn spec(&self) -> Result<Option<strata::spec::Spec>> {
        let Some(file) = &self.dockerfile else {
            return Ok(None);
        };
        let context = match &self.context {
            Some(dir) => dir.clone(),
            None => file.parent().map_or_else(|| ".".into(), Path::to_path_buf),
        };
        let context = if context.as_os_str().is_empty() {
            ".".into()
        } else {
            context
        };
        let dockerfile = strata::spec::Dockerfile::new(
            file.clone(),
            context,
            self.target.clone(),
            self.build_args.iter().cloned().collect(),
        )
        .map_err(|e| anyhow::anyhow!("--dockerfile: {e}"))?;
        let labels = self.labels.iter().cloned().collect();
        Ok(Some(strata::spec::Spec::of_dockerfile(dockerfile, labels)))
    }
}

pub async fn run(cli: &Cli, args: &BuildArgs) -> Result<()> {
    let spec = match args.dockerfile.spec()? {
        Some(spec) => spec,
        None => args.spec.load()?,
    };
    let overrides = strata::spec::Overrides {
        images: args.images.clone(),
        push: args.push.clone(),
        outputs: args.output.clone(),
        ..args.spec.overrides()
    };
    let overrides = args.build.apply(overrides, cli)?;
    build_and_report(
        cli,
        &spec.resolve(&overrides)?,
        &args.build.progress,
        args.build.metadata_file.as_deref(),
    )
    .await
}

/// Builds `plan`, prints a line per image (and per failure), writes
/// `--metadata-file`; an error when any image failed.
pub async fn build_and_report(
    cli: &Cli,
    plan: &strata::spec::BuildPlan,
    progress: &ProgressMode,
    metadata_file: Option<&Path>,
) -> Result<()> {
    let began = std::time::Instant::now();
    // Tiers (and the budget between them) are the pool build's; one daemon
    // with a budget is a pool of one.
    let tiered = cli.daemon.is_pool() || plan.keep_storage.is_some();
    let outcome = if tiered {
        let pool = cli.daemon.pool()?;
        strata::build::build_on_pool(&pool, plan, progress).await
    } else {
        let daemon = cli.daemon.daemon()?;
        strata::build::build_all(&daemon, plan, progress).await
    };
    let outcome = outcome.inspect_err(print_failed_step_logs)?;
    let summary = Summary::of(&outcome, began.elapsed());
    if *progress == ProgressMode::Json {
        eprintln!("{}", serde_json::json!({ "summary": summary }));
    } else if tiered {
        print_summary(&summary);
    }
    for note in &outcome.notes {
        eprintln!("warning: {note}");
    }
    for b in &outcome.built {
        print_built(b);
    }
    for f in &outcome.failed {
        print_failed(f);
    }
    if let Some(path) = metadata_file {
        write_metadata(path, &outcome)?;
    }
    match outcome.failed.as_slice() {
        [] => Ok(()),
        failed => {
            let names: Vec<&str> = failed.iter().map(|f| f.image.as_str()).collect();
            let tried = outcome.built.len() + failed.len();
            anyhow::bail!(
                "{} of {tried} images failed: {}",
                failed.len(),
                names.join(", ")
            )
        }
    }
}

/// The closing table: a row per image (node, tier, time, steps run and
/// cached, hit rate), a line per tier with its totals and what the budget
/// freed, and the pool's total.
fn print_summary(summary: &Summary) {
    use super::table::{number, text, Table};
    let mut table = Table::new(vec![
        text("IMAGE"),
        text("NODE"),
        number("TIER"),
        number("TIME"),
        number("RUN"),
        number("CACHED"),
        number("HIT"),
    ]);
    for i in &summary.images {
        let node = match i.nodes.is_empty() {
            true => "-".to_owned(),
            false => i
                .nodes
                .iter()
                .map(|n| label(n))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let tier = i.tier.map_or("-".into(), |t| t.to_string());
        let mut row = vec![i.image.clone(), node, tier];
        match &i.error {
            Some(_) => row.push("failed".into()),
            None => row.extend([
                human_duration(std::time::Duration::from_secs_f64(i.seconds)),
                i.steps_run.to_string(),
                i.steps_cached.to_string(),
                format!("{:.0}%", 100.0 * i.hit_rate),
            ]),
        }
        table.row(row);
    }
    eprint!("{}", table.render());
    for t in &summary.tiers {
        let r = &t.report;
        eprintln!(
            "tier {}: {} images, {} steps: {} run, {} cached ({:.0}% hit), {}",
            r.tier,
            r.images.len(),
            r.steps_run + r.steps_cached,
            r.steps_run,
            r.steps_cached,
            100.0 * t.hit_rate,
            human_duration(std::time::Duration::from_secs_f64(r.seconds))
        );
        if !r.freed.is_empty() {
            let each: Vec<String> = r
                .freed
                .iter()
                .map(|(n, b)| format!("{} {}", label(n), human_bytes(*b)))
                .collect();
            let all = r.freed.values().sum::<u64>();
            eprintln!(
                "  --keep-storage: freed {} ({})",
                human_bytes(all),
                each.join(", ")
            );
        }
    }
    let nodes: Vec<String> = summary
        .nodes
        .iter()
        .map(|(n, c)| format!("{}: {c}", label(n)))
        .collect();
    eprintln!(
        "pool: {} images on {} nodes in {} ({})",
        summary.images.len(),
        summary.nodes.len(),
        human_duration(std::time::Duration::from_secs_f64(summary.seconds)),
        nodes.join(", ")
    );
}

/// `IMAGE: failed: ERROR`, then where a runner can start instead.
fn print_failed(f: &Failed) {
    print_failed_step_logs(&f.error);
    match &f.error {
        BuildError::Solve { source, .. } => eprintln!("{}: failed: {source}", f.image),
        other => eprintln!("{}: failed: {other}", f.image),
    }
    let from = match (&f.fallback.reference, &f.fallback.image) {
        (Some(reference), Some(image)) => format!("{reference} (image {image})"),
        (Some(reference), None) => format!("{reference} (the base image)"),
        (None, _) => "scratch".to_owned(),
    };
    let steps: Vec<&str> = f.fallback.steps.iter().map(|s| s.name.as_str()).collect();
    eprintln!(
        "  fallback: start from {from} and run {} steps: {}",
        steps.len(),
        steps.join("; ")
    );
}

/// The tail of a failed step's output, above the one-line error.
fn print_failed_step_logs(err: &BuildError) {
    if let BuildError::Solve {
        source: SolveError::StepFailed { name, logs, .. },
        ..
    } = err
    {
        if !logs.is_empty() {
            eprintln!("--- last output of {name} ---");
            for line in logs {
                eprintln!("{line}");
            }
            eprintln!("---");
        }
    }
}

/// `IMAGE: loaded into docker as NAME (how) in TIME`.
fn print_loaded(b: &Built) {
    if let Some(loaded) = &b.loaded {
        let platform = match &loaded.platform {
            Some(p) => format!("; its {p} image, docker's platform"),
            None => String::new(),
        };
        println!(
            "{}: loaded into docker as {} ({}{platform}) in {}",
            b.image,
            loaded.names[0],
            loaded.path.describe(),
            human_duration(loaded.duration)
        );
    }
}

/// `IMAGE  DIGEST  N steps: R run, C cached, TIME  [pushed REF]`, then the cache exports.
fn print_built(b: &Built) {
    if b.up_to_date {
        println!(
            "{}: up to date ({}) in {}",
            b.image,
            b.key.tag(&b.image),
            human_duration(b.solved.duration)
        );
        print_loaded(b);
        print_mounts(b);
        return;
    }
    let (run, cached) = b.step_counts();
    let digest = b.solved.image_digest().unwrap_or("(no image exported)");
    let mut line = format!(
        "{}  {digest}  {} steps: {run} run, {cached} cached, {}",
        b.image,
        run + cached,
        human_duration(b.solved.duration)
    );
    if let Some(pushed) = &b.pushed {
        line.push_str(&format!("  pushed {pushed}"));
    }
    if !b.nodes.is_empty() {
        line.push_str(&format!("  on {}", b.nodes.join(", ")));
    }
    println!("{line}");
    if !b.platforms_found.is_empty() {
        let found: Vec<String> = b.platforms_found.iter().map(|p| p.to_string()).collect();
        println!(
            "  {} up to date under {} key tag, not solved; the index written from its platforms",
            found.join(", "),
            if found.len() == 1 { "its" } else { "their" }
        );
    }
    print_loaded(b);
    for c in b.cache() {
        let size = match (c.bytes, c.blobs) {
            (Some(bytes), Some(blobs)) => format!("{} in {blobs} blobs", human_bytes(bytes)),
            _ => "size unknown".into(),
        };
        let mode = c
            .mode
            .map(|m| format!(" mode={}", m.name()))
            .unwrap_or_default();
        println!(
            "  cache exported: type={}{mode} to {} ({size})",
            c.kind, c.location
        );
    }
    print_mounts(b);
}

/// A line per cache mount seeded or exported; what went wrong is a warning.
fn print_mounts(b: &Built) {
    for m in &b.mounts {
        if m.is_warning() {
            eprintln!("  warning: {m}");
        } else {
            println!("  {m}");
        }
    }
}

/// `--metadata-file`: per image, the exporters' response as the daemon gave it
/// (`containerimage.digest`, `containerimage.config.digest`, `image.name`, …)
/// plus strata's own counts — the same the summary line prints; per failed
/// image (`--keep-going`), its error and fallback. Written whole or not at all.
fn write_metadata(path: &Path, outcome: &Outcome) -> Result<()> {
    let mut all = serde_json::Map::new();
    for f in &outcome.failed {
        let entry = serde_json::json!({
            "strata.key": f.key.to_string(),
            "strata.error": f.error.to_string(),
            "strata.fallback": f.fallback,
        });
        all.insert(f.image.clone(), entry);
    }
    for b in &outcome.built {
        let mut entry = serde_json::Map::new();
        for (k, v) in b.solved.exported.entries() {
            entry.insert(k.clone(), v.clone().into());
        }
        let (run, cached) = b.step_counts();
        entry.insert("strata.steps".into(), (run + cached).into());
        entry.insert("strata.cached".into(), cached.into());
        entry.insert("strata.key".into(), b.key.to_string().into());
        entry.insert("strata.up_to_date".into(), b.up_to_date.into());
        if !b.nodes.is_empty() {
            entry.insert("strata.node".into(), b.nodes.join(", ").into());
        }
        if let Some(t) = outcome.tiers.iter().find(|t| t.images.contains(&b.image)) {
            entry.insert("strata.tier".into(), t.tier.into());
        }
        if !b.mounts.is_empty() {
            entry.insert("strata.mounts".into(), serde_json::to_value(&b.mounts)?);
        }
        entry.insert(
            "strata.duration_seconds".into(),
            b.solved.duration.as_secs_f64().into(),
        );
        if let Some(loaded) = &b.loaded {
            let load = serde_json::json!({
                "path": loaded.path,
                "names": loaded.names,
                "image_id": loaded.image_id,
                "seconds": loaded.duration.as_secs_f64(),
            });
            entry.insert("strata.load".into(), load);
        }
        entry.insert(
            "strata.cache_exports".into(),
            serde_json::to_value(b.cache())?,
        );
        all.insert(b.image.clone(), entry.into());
    }
    let text = serde_json::to_string_pretty(&all)? + "\n";
    let mut tmp = strata::cleanup::TempPath::beside(path);
    let written = std::fs::File::create_new(tmp.path())
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(tmp.path(), path));
    written.with_context(|| format!("--metadata-file {}", path.display()))?;
    tmp.keep();
    Ok(())
}
