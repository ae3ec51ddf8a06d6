//! Content keys against the real registry (bases are pinned by digest): a key
//! changes with what decides the image — overlay bytes, a step, the platform,
//! the base re-pushed under the same tag, the parent — and not with the CA
//! bundle or where the project is checked out.

mod common;

use common::project::{copy_dir, rand_suffix, small_spec, Project};
use common::{stack, strata};

/// `strata key -f SPEC IMAGE ARGS… --json` → IMAGE's key.
fn key(p: &Project, image: &str, args: &[&str]) -> String {
    let spec = p.spec().display().to_string();
    let mut all = vec!["key", "-f", &spec, image, "--json"];
    all.extend_from_slice(args);
    let run = strata(&all);
    let keys: serde_json::Value = serde_json::from_str(run.ok()).expect("JSON keys");
    let key = keys[image]["key"].as_str().expect("a key").to_owned();
    assert!(key.starts_with("sha256:") && key.len() == 71, "{key}");
    key
}

#[test]
fn keys_follow_what_decides_the_image() {
    let p = Project::new(&small_spec("k", ""));
    let base = key(&p, "k", &[]);
    assert_eq!(key(&p, "k", &[]), base, "stable");

    // Elsewhere on disk, same content: same key.
    let elsewhere = tempfile::tempdir().unwrap();
    copy_dir(p.dir.path(), elsewhere.path());
    let moved = Project { dir: elsewhere };
    assert_eq!(key(&moved, "k", &[]), base, "not the checkout's location");

    // One overlay byte.
    std::fs::write(p.path("overlay/hello.txt"), "hellp\n").unwrap();
    let edited = key(&p, "k", &[]);
    assert_ne!(edited, base);
    std::fs::write(p.path("overlay/hello.txt"), "hello\n").unwrap();
    assert_eq!(
        key(&p, "k", &[]),
        base,
        "back to the same bytes, back to the same key"
    );

    // The CA bundle is a mount, not an input.
    let (ca1, ca2) = (p.path("ca1.pem"), p.path("ca2.pem"));
    std::fs::write(&ca1, "one").unwrap();
    std::fs::write(&ca2, "two").unwrap();
    let with_ca = key(&p, "k", &["--ca-cert", ca1.to_str().unwrap()]);
    assert_eq!(key(&p, "k", &["--ca-cert", ca2.to_str().unwrap()]), with_ca);

    // The platform.
    assert_ne!(key(&p, "k", &["--platform", "linux/arm64"]), base);

    // One step.
    let extra = "[[images.k.toolchain]]\nrun = \"echo one more\"\n";
    std::fs::write(p.spec(), small_spec("k", extra)).unwrap();
    assert_ne!(key(&p, "k", &[]), base);
}

#[test]
fn a_base_re_pushed_under_the_same_tag_and_a_changed_parent_change_the_key() {
    let s = stack();
    let tag = format!("{}/strata/keys-base-{}:1", s.registry, rand_suffix());
    let push = |p: &Project, image: &str| {
        p.build(&s.buildkit_host, &[image, "--push", &tag]).ok();
    };
    let first = Project::new(&small_spec("b", ""));
    push(&first, "b");
    let child_spec = format!(
        "[images.c]\nbase = \"{tag}\"\n[images.c.overlay]\ncopy = {{ from = \"overlay/\", to = \"/c\" }}\n\
         [images.d]\nfrom = \"c\"\n[[images.d.toolchain]]\nrun = \"true\"\n"
    );
    let user = Project::new(&child_spec);
    let (c, d) = (key(&user, "c", &[]), key(&user, "d", &[]));

    // The same tag now names another image.
    let second = Project::new(&small_spec(
        "b",
        "[[images.b.toolchain]]\nrun = \"echo v2\"\n",
    ));
    push(&second, "b");
    assert_ne!(key(&user, "c", &[]), c, "the base is pinned by digest");

    // A parent's overlay is part of its children's keys.
    let d2 = key(&user, "d", &[]);
    assert_ne!(d2, d);
    std::fs::write(user.path("overlay/hello.txt"), "changed\n").unwrap();
    assert_ne!(key(&user, "d", &[]), d2);
}

/// The second build of an unchanged spec opens no session and runs no solve:
/// it passes with no daemon reachable at all, reporting the same digest.
#[test]
fn an_unchanged_image_is_found_by_its_key_tag_without_a_daemon() {
    let s = stack();
    let repo = format!("{}/strata/keyskip-{}", s.registry, rand_suffix());
    let target = format!("{repo}:latest");
    let p = Project::new(&small_spec("skip", ""));
    let first = p.build(&s.buildkit_host, &["skip", "--push", &target]);
    first.ok();
    let digest = first.meta("skip", "containerimage.digest");
    let key = key(&p, "skip", &[]);
    let tag = first.metadata.as_ref().unwrap()["skip"]["strata.key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(tag, key, "the build and strata key agree");

    let nowhere = "unix:///nonexistent/strata-no-daemon.sock";
    let again = p.build(nowhere, &["skip", "--push", &target]);
    let out = &again.ok().run.stdout;
    assert!(out.contains("skip: up to date (strata-"), "{out}");
    assert_eq!(again.meta("skip", "containerimage.digest"), digest);
    assert_eq!(
        again.metadata.as_ref().unwrap()["skip"]["strata.up_to_date"],
        true
    );

    // A new tag in the same repository is a manifest PUT, still no daemon.
    let other = format!("{repo}:v2");
    let tagged = p.build(nowhere, &["skip", "--push", &other]);
    tagged.ok();
    assert_eq!(tagged.meta("skip", "containerimage.digest"), digest);

    // --no-skip and a changed input both need the daemon.
    assert_ne!(
        p.build(nowhere, &["skip", "--push", &target, "--no-skip"])
            .run
            .code,
        Some(0)
    );
    std::fs::write(p.path("overlay/hello.txt"), "changed\n").unwrap();
    assert_ne!(
        p.build(nowhere, &["skip", "--push", &target]).run.code,
        Some(0)
    );
}

/// `push = "REPO:{key}"` pushes under the key tag itself.
#[test]
fn a_key_placeholder_in_the_push_target_becomes_the_key_tag() {
    let s = stack();
    let repo = format!("{}/strata/keyed-{}", s.registry, rand_suffix());
    let p = Project::new(&small_spec("keyed", ""));
    let target = format!("{repo}:{{key}}");
    let built = p.build(&s.buildkit_host, &["keyed", "--push", &target]);
    built.ok();
    let key = key(&p, "keyed", &[]);
    let tag = format!("strata-keyed-{}", &key["sha256:".len()..][..32]);
    let tags = common::project::registry_tags(&repo);
    assert_eq!(tags, std::slice::from_ref(&tag), "only the key tag");
    let again = p.build(
        "unix:///nonexistent/strata-no-daemon.sock",
        &["keyed", "--push", &target],
    );
    let out = &again.ok().run.stdout;
    assert!(out.contains(&format!("up to date ({tag})")), "{out}");
}

/// `--keep-going`: the images that can be built are; a failed image's
/// metadata entry names the nearest built ancestor (its key tag) and the
/// steps it lacks, or the pinned base when no ancestor built.
#[test]
fn keep_going_builds_the_others_and_names_a_fallback() {
    let s = stack();
    let repo = format!("{}/strata/keepgoing-{}", s.registry, rand_suffix());
    let extra = format!(
        "[images.good]\nfrom = \"kg\"\npush = \"{repo}-good:latest\"\n\
         [[images.good.toolchain]]\nrun = \"echo good > /good\"\n\
         [images.bad]\nfrom = \"kg\"\npush = \"{repo}-bad:latest\"\n\
         [[images.bad.toolchain]]\nrun = \"echo half > /half\"\n\
         [[images.bad.toolchain]]\nrun = \"echo broken; exit 3\"\n\
         [images.alone]\nbase = \"{}\"\n\
         [[images.alone.toolchain]]\nrun = \"exit 4\"\n",
        s.base_image
    );
    let spec = small_spec("kg", &format!("{extra}\n")).replace(
        "[images.kg]\n",
        &format!("[images.kg]\npush = \"{repo}:latest\"\n"),
    );
    let p = Project::new(&spec);

    let stopped = p.build(&s.buildkit_host, &[]);
    assert_ne!(
        stopped.run.code,
        Some(0),
        "without --keep-going a failure fails the build"
    );

    let b = p.build(&s.buildkit_host, &["--keep-going"]);
    assert_eq!(b.run.code, Some(1), "{}", b.run.stderr);
    assert!(
        b.run.stderr.contains("2 of 4 images failed: "),
        "{}",
        b.run.stderr
    );
    let meta = b
        .metadata
        .as_ref()
        .expect("metadata written even though images failed");
    for built in ["kg", "good"] {
        assert!(meta[built]["containerimage.digest"].is_string(), "{meta:#}");
    }
    let kg_key = meta["kg"]["strata.key"].as_str().unwrap();
    let kg_tag = format!("strata-kg-{}", &kg_key["sha256:".len()..][..32]);

    let bad = &meta["bad"]["strata.fallback"];
    assert_eq!(bad["image"], "kg", "{meta:#}");
    assert_eq!(bad["reference"], format!("{repo}:{kg_tag}"));
    let steps = bad["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "the two steps of bad: {bad:#}");
    assert_eq!(steps[1]["command"][2], "echo broken; exit 3");
    assert!(meta["bad"]["strata.error"]
        .as_str()
        .unwrap()
        .contains("exit code: 3"));

    let alone = &meta["alone"]["strata.fallback"];
    assert!(alone["image"].is_null());
    let base_pinned = alone["reference"].as_str().unwrap();
    assert!(
        base_pinned.starts_with(&format!("{}@sha256:", s.base_image)),
        "{alone:#}"
    );
    assert_eq!(alone["steps"].as_array().unwrap().len(), 1);
    // The fallback image is really there.
    assert!(common::project::registry_tags(&repo).contains(&kg_tag));
}

/// `strata images` lists the key tags, current first; `images prune --keep 1`
/// deletes the stale ones but a manifest another tag still names.
#[test]
fn images_prune_keeps_the_current_key_tag_and_shared_manifests() {
    let s = stack();
    let repo = format!("{}/strata/prune-{}", s.registry, rand_suffix());
    let spec = small_spec("pr", "").replace(
        "[images.pr]\n",
        &format!("[images.pr]\npush = \"{repo}:latest\"\n"),
    );
    let p = Project::new(&spec);
    // As `Project::build` passes it: a CA bundle changes the LLB (a mount).
    let ca: Vec<&str> = match s.var("STRATA_CA_CERT") {
        Some(ca) => vec!["--ca-cert", ca],
        None => Vec::new(),
    };
    let mut keys = Vec::new();
    for version in ["one", "two", "three"] {
        std::fs::write(p.path("overlay/hello.txt"), version).unwrap();
        p.build(&s.buildkit_host, &[]).ok();
        keys.push(key(&p, "pr", &ca));
        if version == "one" {
            // A release tag names the first image too.
            p.build(&s.buildkit_host, &["--push", &format!("{repo}:v1")])
                .ok();
        }
    }
    let tag = |key: &str| format!("strata-pr-{}", &key["sha256:".len()..][..32]);
    let spec_path = p.spec().display().to_string();
    let listed = strata([&["images", "-f", &spec_path, "--json"], &ca[..]].concat());
    let listed: serde_json::Value = serde_json::from_str(listed.ok()).unwrap();
    let tags: Vec<&str> = listed["pr"]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["reference"].as_str().unwrap().rsplit(':').next().unwrap())
        .collect();
    let newest_first: Vec<String> = keys.iter().rev().map(|k| tag(k)).collect();
    assert_eq!(tags, newest_first, "current first, then newest first");
    assert_eq!(listed["pr"]["tags"][0]["current"], true);

    let pruned = strata(
        [
            &["images", "prune", "--keep", "1", "-f", &spec_path],
            &ca[..],
        ]
        .concat(),
    );
    let out = pruned.ok();
    assert!(
        out.contains(&format!("removed {repo}:{}", tag(&keys[1]))),
        "{out}"
    );
    assert!(out.contains("its manifest is also tagged v1"), "{out}");
    let mut want = vec![
        "latest".to_owned(),
        "v1".to_owned(),
        tag(&keys[2]),
        tag(&keys[0]),
    ];
    want.sort();
    assert_eq!(common::project::registry_tags(&repo), want);
}

/// `HOST/NAME` as the push target of image `image` of `spec`.
fn pushing(spec: &str, image: &str, target: &str) -> String {
    spec.replace(
        &format!("[images.{image}]\n"),
        &format!("[images.{image}]\npush = \"{target}\"\n"),
    )
}

/// The key tag of image `image` for `key`, as strata names it.
fn key_tag(image: &str, key: &str) -> String {
    format!("strata-{image}-{}", &key["sha256:".len()..][..32])
}

/// A CA bundle changes the LLB (a mount): passed as `Project::build` does.
fn ca_args() -> Vec<&'static str> {
    match stack().var("STRATA_CA_CERT") {
        Some(ca) => vec!["--ca-cert", ca],
        None => Vec::new(),
    }
}

/// A registry that drops `Docker-Content-Digest` and lists one tag per page
/// (14 pages here): the stale key tag's manifest is still protected by the
/// release tag on the last page, found from the manifests' own bytes; a
/// next page on another host is refused and nothing is deleted.
#[test]
fn images_prune_protects_by_manifest_bytes_and_refuses_a_partial_tag_list() {
    let s = stack();
    let name = format!("strata/prune-lies-{}", rand_suffix());
    let repo = format!("{}/{name}", s.registry);
    let spec_via = |registry: &str| {
        pushing(
            &small_spec("pr", ""),
            "pr",
            &format!("{registry}/{name}:latest"),
        )
    };
    let p = Project::new(&spec_via(&s.registry));
    std::fs::write(p.path("overlay/hello.txt"), "one").unwrap();
    p.build(&s.buildkit_host, &[]).ok();
    common::project::registry_retag(&repo, "latest", "v1");
    std::fs::write(p.path("overlay/hello.txt"), "two").unwrap();
    p.build(&s.buildkit_host, &[]).ok();
    // Eleven tags of the current image, listed before v1.
    for i in 0..11 {
        common::project::registry_retag(&repo, "latest", &format!("f{i:02}"));
    }
    let before = common::project::registry_tags(&repo);
    assert_eq!(before.len(), 15, "{before:?}");
    let spec = p.spec().display().to_string();
    let prune = [
        &["images", "prune", "--keep", "1", "-f", &spec][..],
        &ca_args(),
    ]
    .concat();

    let lying = common::registry_proxy(common::ProxyFaults {
        strip_digest: true,
        one_tag_pages: true,
        ..Default::default()
    });
    std::fs::write(p.spec(), spec_via(&lying)).unwrap();
    let out = strata(&prune);
    assert!(
        out.ok().contains("its manifest is also tagged v1"),
        "{out:?}"
    );
    assert_eq!(common::project::registry_tags(&repo), before);

    let elsewhere = common::registry_proxy(common::ProxyFaults {
        one_tag_pages: true,
        link_elsewhere: true,
        ..Default::default()
    });
    std::fs::write(p.spec(), spec_via(&elsewhere)).unwrap();
    let out = strata(&prune);
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("another host"), "{}", out.stderr);
    assert_eq!(common::project::registry_tags(&repo), before);
}

/// Two images push into one repository: pruning one never takes the
/// other's key tags. A tag a concurrent build points at a stale manifest
/// between the listing and the delete protects it (read again right before
/// each delete), and a delete the registry fails still leaves the report
/// of what was removed before it.
#[test]
fn images_prune_of_one_image_leaves_another_images_tags_and_rechecks_before_each_delete() {
    let s = stack();
    let repo = format!("{}/strata/prune-two-{}", s.registry, rand_suffix());
    let both = |registry: &str| {
        let target = format!("{registry}/{}:{{key}}", repo.split_once('/').unwrap().1);
        let spec = format!("{}\n{}", small_spec("a", ""), small_spec("b", ""));
        pushing(&pushing(&spec, "a", &target), "b", &target)
    };
    let p = Project::new(&both(&s.registry));
    let ca = ca_args();
    let mut a_keys = Vec::new();
    for version in ["one", "two", "three", "four"] {
        std::fs::write(p.path("overlay/hello.txt"), version).unwrap();
        p.build(&s.buildkit_host, &[]).ok();
        a_keys.push(key(&p, "a", &ca));
    }
    let before = common::project::registry_tags(&repo);
    assert_eq!(before.len(), 8, "four key tags of each image: {before:?}");
    let a_tag = |i: usize| key_tag("a", &a_keys[i]);
    // Right after prune's first listing, a build points `release` at the
    // newest stale image (a3).
    let (hook_repo, hook_tag) = (repo.clone(), a_tag(2));
    let proxy = common::registry_proxy(common::ProxyFaults {
        deletes_allowed: Some(1),
        before_second_listing: Some(std::sync::Arc::new(move || {
            common::project::registry_retag(&hook_repo, &hook_tag, "release")
        })),
        ..Default::default()
    });
    std::fs::write(p.spec(), both(&proxy)).unwrap();
    let spec = p.spec().display().to_string();
    let out = strata(
        [
            &["images", "prune", "--keep", "1", "-f", &spec, "a"][..],
            &ca,
        ]
        .concat(),
    );
    assert_ne!(out.code, Some(0), "the second delete fails: {out:?}");
    assert!(out.stdout.contains(&format!("removed {proxy}/")), "{out:?}");
    assert!(
        out.stdout.contains(&a_tag(1)),
        "a2 removed and said: {out:?}"
    );
    let mut want: Vec<String> = before.into_iter().filter(|t| *t != a_tag(1)).collect();
    want.push("release".into());
    want.sort();
    assert_eq!(common::project::registry_tags(&repo), want);
}

/// `git -C DIR ARGS…`, which must succeed.
fn git(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

/// A git overlay's branch is resolved to the commit it names (as BuildKit
/// resolves it at solve time): a new commit changes the key; a repository
/// that cannot be reached fails the key in one line.
#[test]
fn a_git_overlay_is_keyed_by_the_commit_its_branch_names() {
    let upstream = tempfile::tempdir().unwrap();
    git(upstream.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(upstream.path().join("tool.txt"), "one").unwrap();
    git(upstream.path(), &["add", "."]);
    git(upstream.path(), &["commit", "-q", "-m", "one"]);
    let url = format!("file://{}", upstream.path().display());
    let overlay = format!("git = {{ url = \"{url}\", ref = \"main\", to = \"/opt/tool\" }}\n");
    let spec = small_spec("g", "").replace(
        "[images.g.overlay]\n",
        &format!("[images.g.overlay]\n{overlay}"),
    );
    let p = Project::new(&spec);
    let first = key(&p, "g", &[]);
    assert_eq!(key(&p, "g", &[]), first, "stable while main stays");
    std::fs::write(upstream.path().join("tool.txt"), "two").unwrap();
    git(upstream.path(), &["commit", "-q", "-am", "two"]);
    assert_ne!(
        key(&p, "g", &[]),
        first,
        "a new commit on main is a new key"
    );

    let gone = spec.replace(&url, "file:///nonexistent/strata-no-repo");
    std::fs::write(p.spec(), gone).unwrap();
    let spec_path = p.spec().display().to_string();
    let out = strata(["key", "-f", &spec_path]);
    assert_ne!(out.code, Some(0), "{out:?}");
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("overlay git file:///nonexistent/strata-no-repo main"),
        "{last}"
    );
}

/// A Dockerfile whose `FROM` strata cannot read without building is not
/// keyed: `strata key` says why, every build solves it (one line saying
/// so) and no key tag is pushed for it.
#[test]
fn a_dockerfile_with_a_from_strata_cannot_read_is_always_solved() {
    let s = stack();
    let repo = format!("{}/strata/unkeyable-{}", s.registry, rand_suffix());
    let spec = format!(
        "[images.uk]\npush = \"{repo}:latest\"\ndockerfile = {{ file = \"Dockerfile\" }}\n"
    );
    let p = Project::new(&spec);
    let (name, tag) = s.base_image.rsplit_once(':').unwrap();
    let dockerfile =
        format!("ARG TAG={tag}\nFROM {name}:${{TAG%%-*}}\nRUN echo built > /built.txt\n");
    std::fs::write(p.path("Dockerfile"), dockerfile).unwrap();
    let spec_path = p.spec().display().to_string();
    let keyed = strata(["key", "-f", &spec_path]);
    assert!(keyed.ok().contains("unkeyable: FROM"), "{keyed:?}");
    for _ in 0..2 {
        let built = p.build(&s.buildkit_host, &[]);
        built.ok();
        assert!(
            built.run.stderr.contains("not keyed, solved every time"),
            "{}",
            built.run.stderr
        );
        assert!(
            !built.run.stdout.contains("up to date"),
            "{}",
            built.run.stdout
        );
    }
    assert_eq!(common::project::registry_tags(&repo), ["latest"]);
}

/// A key tag whose image does not record its key (someone pushed another
/// image under it) is never taken for a hit: the image is built again.
#[test]
fn a_key_tag_whose_image_does_not_record_the_key_is_no_hit() {
    let s = stack();
    let repo = format!("{}/strata/poison-{}", s.registry, rand_suffix());
    let spec = pushing(&small_spec("pz", ""), "pz", &format!("{repo}:latest"));
    let p = Project::new(&spec);
    let ca = ca_args();
    std::fs::write(p.path("overlay/hello.txt"), "one").unwrap();
    p.build(&s.buildkit_host, &[]).ok();
    let one = key_tag("pz", &key(&p, "pz", &ca));
    std::fs::write(p.path("overlay/hello.txt"), "two").unwrap();
    p.build(&s.buildkit_host, &[]).ok();
    // The first inputs' key tag now names the second image.
    common::project::registry_retag(&repo, "latest", &one);
    std::fs::write(p.path("overlay/hello.txt"), "one").unwrap();
    let again = p.build(&s.buildkit_host, &[]);
    again.ok();
    assert!(
        !again.run.stdout.contains("up to date"),
        "{}",
        again.run.stdout
    );
    assert!(
        again.run.stderr.contains("does not record key"),
        "{}",
        again.run.stderr
    );
    assert!(
        again.steps().iter().any(|s| s.name.contains("overlay")),
        "solved"
    );
}
