//! Attestations the daemon attaches, through `strata build` on the real
//! daemon and registry: SLSA provenance in the pushed index, one
//! attestation manifest per platform naming the base image by digest; the
//! content key does not cover it, so an unchanged rebuild is still a hit.

mod common;

use common::project::{rand_suffix, registry_json, Project};
use common::stack;

/// The pushed index of `image` (built into `repo` by `built`) and its
/// attestation manifest's entry.
fn index_and_attestation(
    built: &common::project::Build,
    image: &str,
    repo: &str,
) -> (serde_json::Value, serde_json::Value) {
    let digest = built.ok().meta(image, "containerimage.digest");
    let index = registry_json(repo, &format!("manifests/{digest}"));
    let attestation = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["vnd.docker.reference.type"] == "attestation-manifest")
        .cloned()
        .unwrap_or_else(|| panic!("no attestation manifest: {index}"));
    (index, attestation)
}

/// The in-toto statement of `attestation` (a manifest digest) in `repo`.
fn statement(repo: &str, attestation: &str) -> serde_json::Value {
    let manifest = registry_json(repo, &format!("manifests/{attestation}"));
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    registry_json(repo, &format!("blobs/{layer}"))
}

#[test]
fn provenance_is_attached_per_platform_and_the_key_still_hits() {
    let s = stack();
    let run = rand_suffix();
    let p = Project::new(&format!(
        "[images.prov]\nbase = \"{}\"\nprovenance = \"min\"\n\n\
         [[images.prov.toolchain]]\nrun = \"echo {run} > /made.txt\"\n",
        s.base_image
    ));
    let repo = format!("{}/strata/prov-{run}", s.registry);
    let target = format!("{repo}:v1");
    let built = p.build(
        &s.buildkit_host,
        &["prov", "--push", &target, "--provenance=mode=max"],
    );
    let (index, attestation) = index_and_attestation(&built, "prov", &repo);
    let image = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "amd64")
        .unwrap_or_else(|| panic!("no amd64 image: {index}"));
    assert_eq!(
        attestation["annotations"]["vnd.docker.reference.digest"], image["digest"],
        "the attestation is the amd64 image's"
    );
    let statement = statement(&repo, attestation["digest"].as_str().unwrap());
    let predicate_type = statement["predicateType"].as_str().unwrap_or_default();
    assert!(
        predicate_type.contains("slsa.dev/provenance"),
        "{statement}"
    );
    // The flag's mode=max over the spec's min: the steps are recorded.
    let text = statement.to_string();
    assert!(text.contains(&format!("echo {run}")), "the steps: {text}");
    let base = s.base_image.split(':').next().unwrap();
    assert!(
        statement["predicate"]["materials"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| {
                m["uri"]
                    .as_str()
                    .is_some_and(|u| u.contains(base.rsplit('/').next().unwrap()))
                    && m["digest"]["sha256"].is_string()
            })),
        "the base image by digest: {}",
        statement["predicate"]["materials"]
    );

    // The key is of the inputs: unchanged, the pushed index is up to date.
    let again = p.build(&s.buildkit_host, &["prov", "--push", &target]);
    assert!(
        again.ok().run.stdout.contains("prov: up to date ("),
        "{}",
        again.run.stdout
    );
    // --provenance=false is taken over the spec's: a plain manifest.
    let off = format!("{repo}:off");
    let plain = p.build(
        &s.buildkit_host,
        &["prov", "--push", &off, "--provenance=false", "--no-key-tag"],
    );
    let digest = plain.ok().meta("prov", "containerimage.digest");
    let manifest = registry_json(&repo, &format!("manifests/{digest}"));
    assert!(manifest["manifests"].is_null(), "{manifest}");
}

/// A Dockerfile image the same: the frontend's build gets its provenance.
#[test]
fn a_dockerfile_image_gets_its_provenance() {
    let s = stack();
    let run = rand_suffix();
    let p =
        Project::new("[images.web]\ndockerfile = { file = \"df/Dockerfile\", context = \"df\" }\n");
    std::fs::create_dir(p.path("df")).unwrap();
    let dockerfile = format!("FROM {}\nRUN echo {run} > /made.txt\n", s.base_image);
    std::fs::write(p.path("df/Dockerfile"), dockerfile).unwrap();
    let repo = format!("{}/strata/prov-df-{run}", s.registry);
    let target = format!("{repo}:v1");
    let built = p.build(
        &s.buildkit_host,
        &["web", "--push", &target, "--provenance"],
    );
    let (_, attestation) = index_and_attestation(&built, "web", &repo);
    let statement = statement(&repo, attestation["digest"].as_str().unwrap());
    let text = statement.to_string();
    assert!(
        text.contains("dockerfile.v0") || text.contains("Dockerfile"),
        "{text}"
    );
}
