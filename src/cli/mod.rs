//! The `strata` command line: one file per command, each parsing its flags,
//! calling the library and printing. Flags shared by several commands live in
//! [`args`]; how progress is shown, in [`progress`].

pub mod args;
pub mod attestations;
pub mod bench;
pub mod build;
pub mod compose;
pub mod du;
pub mod images;
pub mod info;
pub mod key;
pub mod llb;
pub mod nodes;
pub mod pool;
pub mod progress;
pub mod prune;
pub mod signals;
pub mod table;

use clap::{Parser, Subcommand};

/// strata builds layered container images on a remote BuildKit daemon, talking
/// to buildkitd directly over gRPC (no docker CLI, no buildctl underneath).
#[derive(Parser)]
#[command(name = "strata", version, propagate_version = true)]
pub struct Cli {
    /// Show more detail: per-record listings, and the full cause chain of an error.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    #[command(flatten)]
    pub daemon: args::DaemonArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Show the daemon's version and, per worker, its platforms, labels and GC policy.
    Info(info::InfoArgs),
    /// Show how much disk the build cache uses and how much of it could be reclaimed
    /// (with -v, one line per cache record).
    Du(du::DuArgs),
    /// Free disk by removing unused build cache, and print how much was freed.
    Prune(prune::PruneArgs),
    /// Build the images of a strata.toml (all, or the ones named) on the daemon:
    /// base, toolchain steps with cache mounts, overlay; push or export the result.
    Build(Box<build::BuildArgs>),
    /// Build a compose file's services that have a build section, in one run
    /// (`compose build [SERVICE…] [--push] [--load]`).
    Compose(compose::ComposeArgs),
    /// Benchmark cache modes side by side (cold, warm, edit, registry-min,
    /// registry-max, local, inline): median and range per mode, steps run vs
    /// cached, per-step times; optionally the same work through buildctl.
    Bench(Box<bench::BenchArgs>),
    /// Print each image's content key (a digest of its steps, pinned base, config,
    /// overlay contents and parent) without solving; equal keys mean the same image.
    Key(key::KeyArgs),
    /// List each image's key tags (REPO:strata-KEY) in its registry, the current
    /// one marked; `images prune --keep N` deletes stale ones.
    Images(images::ImagesArgs),
    /// Write an image's LLB (a pb.Definition) to stdout, e.g. to run the very
    /// same graph with `buildctl build` (see README).
    Llb(llb::LlbArgs),
    /// A pool of daemons (several --addr, or --builders FILE): `pool status`
    /// probes each node at once; `pool bench` compares placements on it.
    Pool(pool::PoolArgs),
}

/// Runs the parsed command until it ends or a signal ends it ([`signals`]).
pub async fn run(cli: &Cli) -> anyhow::Result<()> {
    signals::until_signal(async {
        match &cli.command {
            Command::Info(args) => info::run(cli, args).await,
            Command::Du(args) => du::run(cli, args).await,
            Command::Prune(args) => prune::run(cli, args).await,
            Command::Build(args) => build::run(cli, args).await,
            Command::Compose(args) => compose::run(cli, args).await,
            Command::Bench(args) => bench::run(cli, args).await,
            Command::Llb(args) => llb::run(args).await,
            Command::Pool(args) => pool::run(cli, args).await,
            Command::Key(args) => key::run(args).await,
            Command::Images(args) => images::run(args).await,
        }
    })
    .await
}

/// Prints `value` as indented JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// The first 25 characters of a cache record id, as buildctl shows them.
pub fn short_id(id: &str) -> &str {
    match id.char_indices().nth(25) {
        Some((end, _)) => &id[..end],
        None => id,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_ids_cut_at_characters_not_bytes() {
        assert_eq!(super::short_id("abc"), "abc");
        let id = "é".repeat(30);
        assert_eq!(super::short_id(&id), "é".repeat(25));
    }
}
