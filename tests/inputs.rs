//! Values read whole or refused, as a careless user gives them: an empty
//! `STRATA_*` variable means "none"; a `DOCKER_HOST` strata cannot load
//! through is refused, not swapped for the default socket; a label too
//! large for the daemon is one error at load naming file, line and column.

mod common;

use common::project::{small_spec, Project};
use common::{strata, strata_command, Run};

fn run(mut cmd: std::process::Command) -> Run {
    Run::from(cmd.output().expect("running the strata binary"))
}

/// `STRATA_CA_CERT=` and `BUILDKIT_HOST=` (as scripts/daemon.sh exports
/// the first into shells without a CA) mean unset: `strata key` works.
#[test]
fn empty_variables_mean_none() {
    let p = Project::new(&small_spec("empty", ""));
    let spec = p.spec().display().to_string();
    let mut cmd = strata_command(["key", "-f", &spec]);
    cmd.env("STRATA_CA_CERT", "").env("BUILDKIT_HOST", "");
    let out = run(cmd);
    assert!(out.ok().contains("empty  sha256:"), "{out:?}");
}

/// A tcp:// or ssh:// DOCKER_HOST is refused in one line naming it.
#[test]
fn a_docker_host_strata_cannot_load_through_is_refused() {
    let p = Project::new(&small_spec("dh", ""));
    let spec = p.spec().display().to_string();
    for host in ["tcp://127.0.0.1:2375", "ssh://user@127.0.0.1"] {
        let mut cmd = strata_command(["images", "-f", &spec, "--load"]);
        cmd.env("DOCKER_HOST", host);
        let out = run(cmd);
        assert_ne!(out.code, Some(0), "{out:?}");
        let line = out.clean_error();
        assert!(
            line.contains(host) && line.contains("unix socket"),
            "{line}"
        );
    }
}

/// A 10 MB label fails at load, naming the file, line and column and the
/// limit, before anything reaches a daemon; so does `--label`.
#[test]
fn a_label_too_large_is_refused_at_load() {
    let big = "x".repeat(10 << 20);
    let spec = small_spec("big", "").replace(
        "labels = { \"org.example.test\" = \"big\" }",
        &format!("labels = {{ \"org.example.test\" = \"{big}\" }}"),
    );
    let p = Project::new(&spec);
    let path = p.spec().display().to_string();
    let out = strata(["key", "-f", &path]);
    let line = out.clean_error();
    assert!(line.contains(&format!("{path}:")), "{line}");
    assert!(
        line.contains("at most 65536 bytes"),
        "{}",
        &line[..line.len().min(300)]
    );
    assert!(line.len() < 1000, "one short line");

    let flag = format!("k={}", "v".repeat(70_000));
    let out = strata(["build", "--dockerfile", "Dockerfile", "--label", &flag]);
    assert_eq!(out.code, Some(2), "a usage error");
    assert!(
        out.stderr.contains("at most 65536 bytes"),
        "{}",
        &out.stderr[..out.stderr.len().min(300)]
    );
}

/// `--pool-cache` with one daemon builds as a pool of one and exports the
/// image's cache there, instead of being silently ignored.
#[test]
fn a_pool_cache_with_one_daemon_is_used() {
    let s = common::stack();
    let repo = format!(
        "{}/strata/pool-one-{}",
        s.registry,
        common::project::rand_suffix()
    );
    let p = Project::new(&small_spec("one", ""));
    let cache = format!("type=registry,ref={repo}:pc");
    p.build(&s.buildkit_host, &["--pool-cache", &cache]).ok();
    let tags = common::project::registry_tags(&repo);
    assert_eq!(tags, ["pc-one"], "the pool cache of image one");
}

/// `NAME.dockerignore` beside a Dockerfile named NAME is what keeps files
/// out of the context (and the key), as BuildKit's clients read it; the
/// context's `.dockerignore` is then not used.
#[test]
fn a_dockerfiles_own_dockerignore_keeps_files_out_of_the_key() {
    let s = common::stack();
    let p = Project::new("[images.di]\ndockerfile = { file = \"app.Dockerfile\" }\n");
    std::fs::write(
        p.path("app.Dockerfile"),
        format!("FROM {}\nCOPY . /app\n", s.base_image),
    )
    .unwrap();
    std::fs::write(p.path("app.Dockerfile.dockerignore"), "junk.txt\n").unwrap();
    std::fs::write(p.path(".dockerignore"), "kept.txt\n").unwrap();
    let spec = p.spec().display().to_string();
    let key = || strata(["key", "-f", &spec, "--json"]).ok().to_owned();
    let first = key();
    std::fs::write(p.path("junk.txt"), "ignored").unwrap();
    assert_eq!(
        key(),
        first,
        "junk.txt is ignored by app.Dockerfile.dockerignore"
    );
    std::fs::write(p.path("kept.txt"), "in the context").unwrap();
    assert_ne!(
        key(),
        first,
        "the context's .dockerignore is not the one used"
    );
}

/// A platform list is read entry by entry (it was once read as os "linux",
/// arch "amd64,linux", variant "arm64", and pushed so): a bad entry is one
/// line naming the flag; the key of a list is not any one platform's; a
/// spec's unknown architecture, or a list in a string, names file, line and
/// column. Nothing reaches a daemon.
#[test]
fn platforms_are_parsed_strictly() {
    let p = Project::new(&small_spec("plat", ""));
    let spec = p.spec().display().to_string();
    let out = run(strata_command([
        "key",
        "-f",
        &spec,
        "--platform",
        "linux/amd64,linux/amd65",
    ]));
    // A flag clap refuses: exit 2, its line first (then the usage hint).
    assert_eq!(out.code, Some(2), "{out:?}");
    let line = out.stderr.lines().next().unwrap_or_default();
    assert!(
        line.contains("--platform") && line.contains("unknown architecture \"amd65\""),
        "{line}"
    );
    // Normalised as containerd does: the key of aarch64 is the key of arm64.
    let key = |platform: &str| {
        run(strata_command(["key", "-f", &spec, "--platform", platform]))
            .ok()
            .to_owned()
    };
    assert_eq!(key("linux/aarch64"), key("linux/arm64"));
    let both = key("linux/amd64,linux/arm64");
    assert_ne!(both, key("linux/amd64"));
    assert_ne!(both, key("linux/arm64"));
    assert_eq!(both, key("linux/amd64,aarch64"));
    let bad = small_spec("plat", "").replace(
        "workdir = \"/work\"\n",
        "workdir = \"/work\"\nplatform = \"linux/amd65\"\n",
    );
    let bad = Project::new(&bad);
    let out = run(strata_command([
        "key",
        "-f",
        &bad.spec().display().to_string(),
    ]));
    let line = out.clean_error();
    assert!(
        line.contains("strata.toml:") && line.contains("unknown architecture \"amd65\""),
        "{line}"
    );
    let listed = bad.spec().display().to_string();
    std::fs::write(
        &listed,
        std::fs::read_to_string(&listed)
            .unwrap()
            .replace("\"linux/amd65\"", "\"linux/amd64,linux/arm64\""),
    )
    .unwrap();
    let out = run(strata_command(["key", "-f", &listed]));
    let line = out.clean_error();
    assert!(
        line.contains("strata.toml:")
            && line.contains("several platforms")
            && line.contains("array"),
        "{line}"
    );
}
