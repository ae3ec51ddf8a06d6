//! `strata compose build`: three services built from one shared Dockerfile
//! (a base stage they share), each with its own context, in one command; a
//! second run finds all three by their key tags; an edit rebuilds one. A
//! broken compose file's error names the file and line.

mod common;

use common::project::rand_suffix;
use common::{stack, strata, Run};

fn compose(dir: &std::path::Path, args: &[&str]) -> Run {
    let file = dir.join("compose.yaml").display().to_string();
    let mut all = vec![
        "--addr",
        &stack().buildkit_host,
        "compose",
        "build",
        "-f",
        &file,
        "--progress",
        "plain",
    ];
    all.extend_from_slice(args);
    strata(all)
}

#[test]
fn three_services_build_together_skip_when_unchanged_and_rebuild_one_on_an_edit() {
    let s = stack();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("Dockerfile"),
        format!(
            "FROM {} AS base\nRUN echo shared > /shared\nFROM base\nCOPY . /app/\n",
            s.base_image
        ),
    )
    .unwrap();
    let repo = format!("{}/strata/compose-{}", s.registry, rand_suffix());
    let mut yaml =
        String::from("x-note: extensions are ignored\nservices:\n  db:\n    image: postgres:16\n");
    for name in ["one", "two", "three"] {
        std::fs::create_dir(root.join(name)).unwrap();
        std::fs::write(root.join(name).join("file.txt"), name).unwrap();
        yaml.push_str(&format!(
            "  {name}:\n    build:\n      context: ./{name}\n      dockerfile: ../Dockerfile\n    image: {repo}-{name}:latest\n    ports: [\"80\"]\n"
        ));
    }
    std::fs::write(root.join("compose.yaml"), yaml).unwrap();

    let first = compose(root, &["--push"]);
    let out = first.ok();
    assert!(
        first.stderr.contains("extension x-note is ignored"),
        "{}",
        first.stderr
    );
    for name in ["one", "two", "three"] {
        assert!(
            out.contains(&format!("pushed {repo}-{name}:latest")),
            "{out}"
        );
    }
    assert!(
        !out.lines().any(|l| l.starts_with("db")),
        "a service without build is left out: {out}"
    );

    let again = compose(root, &["--push"]);
    let out = again.ok();
    for name in ["one", "two", "three"] {
        assert!(
            out.contains(&format!("{name}: up to date (strata-")),
            "{out}"
        );
    }

    std::fs::write(root.join("two/file.txt"), "edited").unwrap();
    let edited = compose(root, &["--push"]);
    let out = edited.ok();
    assert!(
        out.contains("one: up to date") && out.contains("three: up to date"),
        "{out}"
    );
    assert!(out.contains(&format!("pushed {repo}-two:latest")), "{out}");
}

#[test]
fn a_broken_compose_file_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("compose.yaml"),
        "services:\n  web:\n    build:\n      context: [not, a, string\n",
    )
    .unwrap();
    let run = compose(dir.path(), &[]);
    let line = run.clean_error();
    assert!(line.contains("compose.yaml:"), "{line}");
}

/// Services of one context directory upload it once: the first solve sends
/// it, the others start after and send nothing new.
#[test]
fn services_sharing_a_context_upload_it_once() {
    let s = stack();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Unique content: the daemon has never seen it.
    let mut big = rand_suffix().into_bytes();
    big.extend((0..4_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    std::fs::write(root.join("big.bin"), &big).unwrap();
    std::fs::write(
        root.join("Dockerfile"),
        format!(
            "FROM {} AS base\nCOPY big.bin /big.bin\nFROM base AS one\nRUN echo one > /one\nFROM base AS two\nRUN echo two > /two\n",
            s.base_image
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("compose.yaml"),
        "services:\n  one:\n    build: { context: ., target: one }\n  two:\n    build: { context: ., target: two }\n",
    )
    .unwrap();
    let file = root.join("compose.yaml").display().to_string();
    let run = strata([
        "--addr",
        &s.buildkit_host,
        "compose",
        "build",
        "-f",
        &file,
        "--progress",
        "json",
    ]);
    run.ok();
    // The largest amount each "transferring context" reached.
    let mut sent: Vec<u64> = Vec::new();
    for line in run.stderr.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        for st in v["statuses"].as_array().into_iter().flatten() {
            if st["id"] == "transferring context:" && !st["completed"].is_null() {
                sent.push(st["current"].as_u64().unwrap_or(0));
            }
        }
    }
    let full = sent.iter().filter(|&&n| n >= big.len() as u64).count();
    assert_eq!(full, 1, "the context is sent in full once: {sent:?}");
}

/// `--secret` reaches the Dockerfiles' secret mounts.
#[test]
fn secrets_reach_the_services() {
    let s = stack();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("token.txt"), "s3cret").unwrap();
    // A RUN of its own each time (never found in the cache).
    let new_dockerfile = || {
        std::fs::write(
            root.join("Dockerfile"),
            format!(
                "FROM {}\nRUN --mount=type=secret,id=tok grep s3cret /run/secrets/tok && echo {} > /ok\n",
                s.base_image,
                rand_suffix()
            ),
        )
        .unwrap()
    };
    new_dockerfile();
    std::fs::write(
        root.join("compose.yaml"),
        "services:\n  sec:\n    build: .\n",
    )
    .unwrap();
    let secret = format!("id=tok,src={}", root.join("token.txt").display());
    compose(root, &["--secret", &secret]).ok();
    // A new RUN (not in the cache) fails without the secret.
    new_dockerfile();
    let without = compose(root, &[]);
    assert_ne!(without.code, Some(0), "without the secret the RUN fails");
}

/// A compose file reads files only inside its directory: a `dockerfile:`
/// outside it is refused in one line that names --allow-path and shows
/// nothing of the file.
#[test]
fn a_dockerfile_outside_the_compose_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("token.txt"), "FROM secret-token-value\n").unwrap();
    std::fs::write(
        project.join("compose.yaml"),
        "services:\n  web:\n    build:\n      context: .\n      dockerfile: ../outside/token.txt\n",
    )
    .unwrap();
    let run = compose(&project, &[]);
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.contains("--allow-path"), "{}", run.stderr);
    assert!(!run.stderr.contains("secret-token-value"), "{}", run.stderr);
    assert!(!run.stdout.contains("secret-token-value"), "{}", run.stdout);
}

/// Values as compose reads them, through a real build: an arg without a
/// value that is unset is left out (the Dockerfile's default holds), one
/// set in `.env` is taken, and `${VAR:-default}` is filled.
#[test]
fn compose_values_are_interpolated_and_unset_args_left_out() {
    let s = stack();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("Dockerfile"),
        format!(
            "FROM {}\nARG UNSET_ARG=default\nARG FROM_DOTENV\nARG FILLED\n\
             RUN test \"$UNSET_ARG\" = default && test \"$FROM_DOTENV\" = dotenv \
             && test \"$FILLED\" = fallback\n",
            s.base_image
        ),
    )
    .unwrap();
    std::fs::write(root.join(".env"), "FROM_DOTENV=dotenv\n").unwrap();
    std::fs::write(
        root.join("compose.yaml"),
        "services:\n  vals:\n    build:\n      context: .\n      args:\n        - UNSET_ARG\n\
         \x20       - FROM_DOTENV\n        - FILLED=${STRATA_TEST_NEVER_SET:-fallback}\n",
    )
    .unwrap();
    compose(root, &["--no-skip"]).ok();
}
