//! Dockerfile images through BuildKit's own frontend, with strata's session,
//! cache and outputs around them: examples/codex/Dockerfile (the codex image
//! with apt/pip/npm cache mounts) builds and pushes, restores from registry
//! and local cache after a prune, and gives the digest buildctl's Dockerfile
//! frontend gives for the same inputs and output; a broken Dockerfile's error
//! names its file and line.

mod common;

use common::project::{layer_file, rand_suffix, Build, Project};
use common::{buildctl, stack, strata};

fn dockerfile_build(p: &Project, args: &[&str]) -> Build {
    let mut all = vec!["--dockerfile", "Dockerfile", "--context", "."];
    all.extend_from_slice(args);
    let dockerfile = p.path("Dockerfile").display().to_string();
    let context = p.dir.path().display().to_string();
    all[1] = &dockerfile;
    all[3] = &context;
    p.build(&stack().buildkit_host, &all)
}

/// The image's digest (a `--dockerfile` image is named after its context
/// directory: here a temporary one).
fn image_digest(b: &Build) -> String {
    image_entry(b)["containerimage.digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The build's one image's metadata entry.
fn image_entry(b: &Build) -> &serde_json::Value {
    let meta = b.metadata.as_ref().expect("metadata written");
    let (_, entry) = meta.as_object().unwrap().iter().next().expect("one image");
    entry
}

/// The error line (progress is JSON lines before it).
fn error_line(b: &Build) -> &str {
    assert_eq!(b.run.code, Some(1), "{}", b.run.stderr);
    let last = b.run.stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{last}");
    last
}

/// Every RUN and COPY of the Dockerfile was found in the cache.
fn assert_all_cached(b: &Build, how: &str) {
    let steps: Vec<_> = b
        .steps()
        .into_iter()
        .filter(|s| s.name.contains("] RUN ") || s.name.contains("] COPY "))
        .collect();
    assert!(steps.len() >= 6, "{how}: {steps:?}");
    let ran: Vec<_> = steps
        .iter()
        .filter(|s| !s.cached)
        .map(|s| &s.name)
        .collect();
    assert!(ran.is_empty(), "{how}: these ran again: {ran:?}");
}

#[test]
fn codex_as_a_dockerfile_pushes_restores_after_a_prune_and_matches_buildctl() {
    let s = stack();
    let p = Project::codex();
    let repo = format!("{}/strata/codex-df-{}", s.registry, rand_suffix());
    let target = format!("{repo}:latest");
    let registry_cache = format!("type=registry,ref={repo}:cache");
    let local = p.path("cache-local");
    let local_to = format!("type=local,dest={}", local.display());
    let local_from = format!("type=local,src={}", local.display());
    // The test's own outputs land in the context: kept out of it (and so of
    // the key, which the image's label records).
    let ignore = p.path(".dockerignore");
    let mut ignored = std::fs::read_to_string(&ignore).unwrap();
    ignored.push_str("meta-*.json\ncache-local\nbuildctl-meta.json\n");
    std::fs::write(&ignore, ignored).unwrap();

    let first = dockerfile_build(
        &p,
        &[
            "--push",
            &target,
            "--cache-to",
            &registry_cache,
            "--cache-to",
            &local_to,
        ],
    );
    first.ok();
    let digest = image_digest(&first);
    let key = image_entry(&first)["strata.key"]
        .as_str()
        .unwrap()
        .to_owned();

    for (from, how) in [
        (registry_cache.as_str(), "registry"),
        (local_from.as_str(), "local"),
    ] {
        strata(["--addr", &s.buildkit_host, "prune", "--all"]).ok();
        let restored =
            dockerfile_build(&p, &["--push", &target, "--no-skip", "--cache-from", from]);
        restored.ok();
        assert_all_cached(&restored, how);
        assert_eq!(image_digest(&restored), digest, "{how}");
    }

    // buildctl's Dockerfile frontend, same inputs and output: the same image.
    let dir = p.dir.path();
    let ctx = format!("context={}", dir.display());
    let df = format!("dockerfile={}", dir.display());
    let out = format!("type=image,name={repo}:buildctl,push=true");
    let meta = p.path("buildctl-meta.json");
    let meta_arg = meta.display().to_string();
    // strata's image records its key in a label; buildctl is given the same.
    let label = format!("label:dev.strata.key={key}");
    let mut args = vec![
        "build",
        "--opt",
        &label,
        "--frontend",
        "dockerfile.v0",
        "--local",
        &ctx,
        "--local",
        &df,
        "--output",
        &out,
        "--metadata-file",
        &meta_arg,
    ];
    let secret;
    if let Some(ca) = s.var("STRATA_CA_CERT") {
        secret = format!("id=strata-ca-cert,src={ca}");
        args.extend(["--secret", &secret]);
    }
    buildctl(&s.buildkit_host, &args, None).ok();
    let theirs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    assert_eq!(theirs["containerimage.digest"], digest.as_str());
}

#[test]
fn a_broken_dockerfile_names_its_file_and_line() {
    let s = stack();
    let p = Project::new("");
    std::fs::write(
        p.path("Dockerfile"),
        format!("FROM {}\nRUN true\nBOGUS instruction\n", s.base_image),
    )
    .unwrap();
    let failed = dockerfile_build(&p, &[]);
    let line = error_line(&failed);
    assert!(
        line.contains("Dockerfile:3:") && line.contains("unknown instruction"),
        "{line}"
    );

    std::fs::write(
        p.path("Dockerfile"),
        format!(
            "FROM {}\nRUN true\nRUN echo failing; exit 3\n",
            s.base_image
        ),
    )
    .unwrap();
    let failed = dockerfile_build(&p, &[]);
    let line = error_line(&failed);
    assert!(
        line.contains("Dockerfile:3:") && line.contains("exit code: 3"),
        "{line}"
    );
}

/// A Dockerfile `FROM` naming an image of the same spec builds on that
/// image (a named context fed its LLB), solved together; the Dockerfile
/// image's key follows the spec image's.
#[test]
fn a_dockerfile_builds_from_an_image_of_the_same_spec() {
    let s = stack();
    let spec = format!(
        "[images.tools]\nbase = \"{}\"\n[[images.tools.toolchain]]\nrun = \"echo from-spec > /tools.txt\"\n\
         [images.tools.overlay]\ncopy = {{ from = \"overlay/\", to = \"/overlay\" }}\n\
         [images.app]\ndockerfile = {{ file = \"Dockerfile\" }}\n",
        s.base_image
    );
    let p = Project::new(&spec);
    std::fs::write(
        p.path("Dockerfile"),
        "FROM tools\nRUN grep from-spec /tools.txt && test -f /overlay/hello.txt && echo ok > /app.txt\n",
    )
    .unwrap();
    // The RUN greps what the spec image made: it fails if FROM tools was not it.
    let built = p.build(&s.buildkit_host, &["app"]);
    built.ok();
    assert!(built.meta_count("app", "strata.steps") >= 1);

    let key = |p: &Project| {
        let spec = p.spec().display().to_string();
        let out = strata(["key", "-f", &spec, "app", "--json"]);
        let v: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
        v["app"]["key"].as_str().unwrap().to_owned()
    };
    let before = key(&p);
    std::fs::write(p.path("overlay/hello.txt"), "changed\n").unwrap();
    assert_ne!(
        key(&p),
        before,
        "the spec image's overlay is part of the app's key"
    );
}

/// A two-platform Dockerfile `FROM` an image of the same spec: each
/// platform gets that platform's spec image (a named context per platform),
/// both solved together into one index.
#[test]
fn a_two_platform_dockerfile_builds_from_each_platforms_spec_image() {
    let s = stack();
    let spec = "[images.tools]\nbase = \"scratch\"\n\
         [images.tools.overlay]\ncopy = { from = \"files/{arch}/\", to = \"/\" }\n\
         [images.app]\ndockerfile = { file = \"Dockerfile\" }\n\
         platform = [\"linux/amd64\", \"linux/386\"]\n";
    let p = Project::new(spec);
    for arch in ["amd64", "386"] {
        let dir = p.path(&format!("files/{arch}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("arch.txt"), arch).unwrap();
    }
    std::fs::write(p.path("Dockerfile"), "FROM tools\nCOPY overlay/ /work/\n").unwrap();
    let dest = p.path("out");
    let output = format!("type=local,dest={}", dest.display());
    p.build(&s.buildkit_host, &["app", "--output", &output])
        .ok();
    for (dir, arch) in [("linux_amd64", "amd64"), ("linux_386", "386")] {
        let written = std::fs::read_to_string(dest.join(dir).join("arch.txt")).unwrap();
        assert_eq!(written, arch, "{dir}");
        assert!(dest.join(dir).join("work/hello.txt").exists(), "{dir}");
    }
}

/// An image of the spec built `from` a Dockerfile image, in one solve: the
/// frontend's graph and the child's steps on it (which see the Dockerfile's
/// ENV), the Dockerfile image needing no push of its own. Unchanged, the
/// child is found by its key tag; its key follows the Dockerfile's.
#[test]
fn a_spec_image_builds_from_a_dockerfile_image_in_one_solve() {
    let s = stack();
    let run = rand_suffix();
    let repo = format!("{}/strata/df-child-{run}", s.registry);
    let spec = format!(
        "[images.parent]\ndockerfile = {{ file = \"df/Dockerfile\", context = \"df\" }}\n\
         [images.child]\nfrom = \"parent\"\npush = \"{repo}:latest\"\n\
         [[images.child.toolchain]]\nrun = \"grep from-dockerfile /parent.txt > /child.txt && echo $MADE_BY >> /child.txt\"\n"
    );
    let p = Project::new(&spec);
    // A context of its own: the build's metadata file lands in the project dir.
    std::fs::create_dir(p.path("df")).unwrap();
    let dockerfile = |text: &str| {
        let body = format!(
            "FROM {}\nENV MADE_BY=dockerfile\nRUN echo {text} > /parent.txt\n",
            s.base_image
        );
        std::fs::write(p.path("df/Dockerfile"), body).unwrap();
    };
    // Unique to this run, so its RUN is not in the daemon's cache.
    let made = format!("from-dockerfile-{run}");
    dockerfile(&made);
    let first = p.build(&s.buildkit_host, &["child"]);
    let out = &first.ok().run.stdout;
    assert!(out.contains(&format!("pushed {repo}:latest")), "{out}");
    assert!(
        !out.contains("parent:"),
        "no build of the parent alone: {out}"
    );
    // The Dockerfile's RUN ran in the child's solve, and its ENV reached the step.
    let ran = first.ran();
    assert!(
        ran.iter().any(|r| r.contains(&format!("echo {made}"))),
        "{ran:?}"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let target = format!("{repo}:latest");
    let written = rt.block_on(layer_file(&target, "linux/amd64", "child.txt"));
    assert_eq!(
        written.as_deref(),
        Some(format!("{made}\ndockerfile\n").as_str())
    );

    let again = p.build(&s.buildkit_host, &["child"]);
    let out = &again.ok().run.stdout;
    assert!(out.contains("child: up to date"), "{out}");

    // Its key follows the Dockerfile's: changed, the child is built again on it.
    let spec_path = p.spec().display().to_string();
    let mut key_args = vec!["key", "-f", &spec_path, "child"];
    let ca;
    if let Some(c) = s.var("STRATA_CA_CERT") {
        ca = c.to_owned();
        key_args.extend(["--ca-cert", &ca]);
    }
    let before = strata(&key_args).ok().to_owned();
    let made = format!("{made}-v2");
    dockerfile(&made);
    let after = strata(&key_args).ok().to_owned();
    assert_ne!(before, after, "the key covers the Dockerfile");
    let third = p.build(&s.buildkit_host, &["child"]);
    third.ok();
    let written = rt.block_on(layer_file(&target, "linux/amd64", "child.txt"));
    assert_eq!(
        written.as_deref(),
        Some(format!("{made}\ndockerfile\n").as_str())
    );
}
