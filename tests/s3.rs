//! `type=s3` build caches against the real daemon and the stack's real S3
//! server (SeaweedFS on loopback, `scripts/daemon.sh`): a pruned builder gets
//! the image back from S3 with every step cached and the same digest; the
//! credentials, taken from strata's environment, appear in no output; a wrong
//! key pair and a server that stops mid-export are one line each, and an
//! interrupted export leaves the earlier cache importable; a missing bucket
//! or region is a usage error naming the flag or the spec key.
//!
//! Each test has a buildkitd of its own (it prunes it), started without S3
//! credentials, so only what strata sends reaches the bucket.

mod common;

use common::project::{rand_suffix, Build, Project};
use common::{stack, strata, CutProxy, ScratchDaemon};

/// The stack's S3 server, bucket, region and key pair.
struct S3 {
    endpoint: String,
    bucket: String,
    region: String,
    key_id: String,
    secret: String,
}

fn s3() -> S3 {
    let s = stack();
    let var = |k: &str| {
        s.var(k)
            .unwrap_or_else(|| panic!("scripts/daemon.sh up exports {k}"))
            .to_owned()
    };
    S3 {
        endpoint: var("STRATA_S3_ENDPOINT"),
        bucket: var("STRATA_S3_BUCKET"),
        region: var("STRATA_S3_REGION"),
        key_id: var("AWS_ACCESS_KEY_ID"),
        secret: var("AWS_SECRET_ACCESS_KEY"),
    }
}

impl S3 {
    /// `type=s3,…` for the cache `name` at `endpoint` (the server, or a proxy).
    fn cache(&self, endpoint: &str, name: &str) -> String {
        format!(
            "type=s3,bucket={},region={},endpoint_url={endpoint},use_path_style=true,name={name}",
            self.bucket, self.region
        )
    }

    fn env(&self) -> [(&str, &str); 2] {
        [
            ("AWS_ACCESS_KEY_ID", self.key_id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.as_str()),
        ]
    }
}

/// A spec image of two `run` steps, the second's text `second`, pushed to a
/// new repository: the project and its push target.
fn project(second: &str) -> (Project, String) {
    let s = stack();
    let run = rand_suffix();
    let target = format!("{}/strata/s3-{run}:v1", s.registry);
    let spec = format!(
        "[images.s3c]\nbase = \"{}\"\npush = \"{target}\"\n\n\
         [[images.s3c.toolchain]]\nrun = \"echo {run} > /one.txt\"\n\n\
         [[images.s3c.toolchain]]\nrun = \"{second}\"\n",
        s.base_image
    );
    (Project::new(&spec), target)
}

/// `daemon` emptied, then `p` built again importing `cache`: it succeeded.
fn pruned_then_imported(daemon: &ScratchDaemon, p: &Project, cache: &str, s3: &S3) -> Build {
    strata(["--addr", &daemon.addr, "prune", "--all"]).ok();
    let built = p.build_env(
        &daemon.addr,
        &["--cache-from", cache, "--no-skip"],
        &s3.env(),
    );
    built.ok();
    built
}

fn digest(b: &Build) -> String {
    b.meta("s3c", "containerimage.digest")
}

/// The secret appears nowhere strata wrote: stdout, stderr, metadata.
fn assert_no_secret(b: &Build, secret: &str) {
    let meta = b
        .metadata
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_default();
    for (what, text) in [
        ("stdout", &b.run.stdout),
        ("stderr", &b.run.stderr),
        ("metadata", &meta),
    ] {
        assert!(
            !text.contains(secret),
            "the secret key is in strata's {what}"
        );
    }
}

/// The one `error:` line of a failed build (progress is JSON on stdout).
fn error_line(b: &Build) -> &str {
    assert_eq!(b.run.code, Some(1), "{:#?}", b.run);
    assert!(!b.run.stderr.contains("panicked"), "{}", b.run.stderr);
    let errors: Vec<&str> = b
        .run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", b.run.stderr);
    errors[0]
}

#[test]
fn an_s3_cache_restores_a_pruned_builder_with_the_same_digest() {
    let s3 = s3();
    let daemon = ScratchDaemon::start();
    let (p, _) = project("echo two > /two.txt");
    let cache = s3.cache(&s3.endpoint, &format!("restore-{}", rand_suffix()));
    let exported = p.build_env(&daemon.addr, &["--cache-to", &cache], &s3.env());
    exported.ok();
    assert_no_secret(&exported, &s3.secret);
    let report = &exported.metadata.as_ref().unwrap()["s3c"]["strata.cache_exports"][0];
    assert_eq!(report["kind"], "s3", "{report}");
    assert!(
        report["location"].as_str().unwrap().starts_with("s3://"),
        "{report}"
    );
    assert!(
        report["bytes"].as_u64().unwrap_or(0) > 1000,
        "measured: {report}"
    );

    let imported = pruned_then_imported(&daemon, &p, &cache, &s3);
    assert_eq!(imported.ran(), Vec::<String>::new(), "every step from S3");
    assert_eq!(digest(&imported), digest(&exported));
    assert_no_secret(&imported, &s3.secret);
}

#[test]
fn a_wrong_key_pair_is_one_line_saying_access_was_denied() {
    let s3 = s3();
    let daemon = ScratchDaemon::start();
    let (p, _) = project("echo denied > /two.txt");
    let wrong = format!("wrong-{}", rand_suffix());
    let cache = s3.cache(&s3.endpoint, "denied");
    let env = [
        ("AWS_ACCESS_KEY_ID", s3.key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", wrong.as_str()),
    ];
    let built = p.build_env(&daemon.addr, &["--cache-to", &cache], &env);
    let line = error_line(&built);
    assert!(line.contains("access denied"), "{line}");
    assert!(
        line.contains(&s3.endpoint) && line.contains(&s3.bucket),
        "{line}"
    );
    assert_no_secret(&built, &wrong);
}

/// A server that stops during an export: the build fails with one line
/// naming the endpoint and bucket, and the manifest the earlier export wrote
/// (BuildKit writes it after every blob) still imports.
#[test]
fn an_export_cut_off_keeps_the_earlier_cache() {
    let s3 = s3();
    let daemon = ScratchDaemon::start();
    let upstream = s3.endpoint.trim_start_matches("http://").to_owned();
    let proxy = CutProxy::start(&upstream, |chunk| {
        let text = String::from_utf8_lossy(chunk);
        text.starts_with("PUT ") && text.contains("/blobs/")
    });
    let name = format!("cut-{}", rand_suffix());
    let direct = s3.cache(&s3.endpoint, &name);
    let (first, _) = project("echo first > /two.txt");
    let good = first.build_env(&daemon.addr, &["--cache-to", &direct], &s3.env());
    good.ok();

    // The same cache name again, through the proxy: cut at its first new blob.
    let spec = std::fs::read_to_string(first.spec()).unwrap();
    std::fs::write(first.spec(), spec.replace("echo first", "echo second")).unwrap();
    let through = s3.cache(&format!("http://{}", proxy.addr), &name);
    let cut = first.build_env(&daemon.addr, &["--cache-to", &through], &s3.env());
    let line = error_line(&cut);
    assert!(
        line.contains(&proxy.addr) && line.contains(&s3.bucket) && line.contains("could not reach"),
        "{line}"
    );

    std::fs::write(first.spec(), spec).unwrap();
    let again = pruned_then_imported(&daemon, &first, &direct, &s3);
    assert_eq!(
        again.ran(),
        Vec::<String>::new(),
        "the earlier cache imports"
    );
    assert_eq!(digest(&again), digest(&good));
}

#[test]
fn a_missing_bucket_or_region_names_the_flag_or_the_spec_key() {
    let s = stack();
    let p = Project::new(&format!(
        "[images.a]\nbase = \"{}\"\ncache_to = [\"type=s3,region=r\"]\n",
        s.base_image
    ));
    let built = p.build(&s.buildkit_host, &[]);
    let line = error_line(&built);
    assert!(
        line.contains("images.a.cache_to[1]") && line.contains("needs bucket="),
        "{line}"
    );

    let p = Project::new(&format!("[images.a]\nbase = \"{}\"\n", s.base_image));
    let built = p.build(&s.buildkit_host, &["--cache-from", "type=s3,bucket=b"]);
    let line = error_line(&built);
    assert!(
        line.contains("--cache-from") && line.contains("needs region= (or AWS_REGION"),
        "{line}"
    );
}
