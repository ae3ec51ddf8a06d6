use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;
use crate::llb::marshal::digest_of;
use crate::wire::pb;

const BASE: &str = "127.0.0.1:5000/strata/debian:bookworm";

/// A spec file in a temp dir with an `overlay/` directory beside it.
fn spec_in(dir: &Path, text: &str) -> Result<Spec, SpecError> {
    std::fs::create_dir_all(dir.join("overlay")).unwrap();
    let path = dir.join("strata.toml");
    std::fs::write(&path, text).unwrap();
    Spec::load(&path)
}

fn parse(text: &str) -> Result<Spec, SpecError> {
    let dir = tempfile::tempdir().unwrap();
    spec_in(dir.path(), text)
}

fn err(text: &str) -> String {
    parse(text).expect_err("the spec is invalid").to_string()
}

fn two_images() -> String {
    format!(
        r#"
[images.python-base]
base = "{BASE}"
env = {{ LANG = "C.UTF-8" }}

[[images.python-base.toolchain]]
apt = ["python3", "python3-pip"]

[[images.python-base.toolchain]]
pip = ["requests==2.31.0"]

[images.app]
from = "python-base"
workdir = "/app"
cmd = ["python3", "-m", "app"]

[[images.app.toolchain]]
npm = ["is-number@7.0.0"]

[[images.app.toolchain]]
run = "cargo --version || true"
cache = ["/root/.cargo/registry"]

[images.app.overlay]
copy = {{ from = "overlay/", to = "/app", exclude = ["*.pyc"] }}
"#
    )
}

/// Exec ops of a definition that run a package step (not the overlay copy).
fn toolchain_digests(image: &LoweredImage) -> Vec<String> {
    image
        .definition
        .ops()
        .iter()
        .filter(|bytes| {
            matches!(
                pb::Op::decode(bytes.as_ref()).unwrap().op,
                Some(pb::op::Op::Exec(_))
            )
        })
        .map(|bytes| digest_of(bytes))
        .collect()
}

fn cache_ids(image: &LoweredImage) -> Vec<String> {
    let mut ids = Vec::new();
    for bytes in image.definition.ops() {
        if let Some(pb::op::Op::Exec(exec)) = pb::Op::decode(bytes.as_ref()).unwrap().op {
            for m in exec.mounts {
                if let Some(c) = m.cache_opt {
                    ids.push(c.id);
                }
            }
        }
    }
    ids
}

use prost::Message;

#[test]
fn parses_images_in_file_order_with_their_steps() {
    let spec = parse(&two_images()).unwrap();
    assert_eq!(spec.names(), vec!["python-base", "app"]);
    assert_eq!(spec.base_refs(), vec![BASE.to_owned()]);
    let app = spec.image("app").unwrap();
    assert_eq!(app.base, Base::From("python-base".into()));
    assert_eq!(app.steps.len(), 2);
    assert!(
        matches!(&app.steps[1].kind, StepKind::Run { cache, .. } if cache == &["/root/.cargo/registry"])
    );
    assert_eq!(
        spec.closure(&["app".into()]).unwrap(),
        vec!["python-base", "app"]
    );
    assert!(spec
        .closure(&["nope".into()])
        .unwrap_err()
        .to_string()
        .contains("no image named \"nope\" (images: python-base, app)"));
}

#[test]
fn unknown_keys_name_line_and_table() {
    let e = err(&format!(
        "[images.a]\nbase = \"{BASE}\"\n\n[[images.a.toolchain]]\naptt = [\"git\"]\n"
    ));
    assert!(e.contains("strata.toml:5:1"), "{e}");
    assert!(e.contains("images.a.toolchain"), "{e}");
    assert!(e.contains("aptt"), "{e}");
}

#[test]
fn wrong_types_name_the_line() {
    let e = err(&format!(
        "[images.a]\nbase = \"{BASE}\"\nentrypoint = \"bash\"\n"
    ));
    assert!(e.contains("strata.toml:3"), "{e}");
    let e = err(&format!(
        "[images.a]\nbase = \"{BASE}\"\n[[images.a.toolchain]]\napt = \"git\"\n"
    ));
    assert!(e.contains("strata.toml:4"), "{e}");
}

#[test]
fn base_and_from_are_checked() {
    let e = err("[images.a]\nworkdir = \"/x\"\n");
    assert!(
        e.contains("strata.toml:1") && e.contains("needs a base"),
        "{e}"
    );
    let e = err(&format!("[images.a]\nbase = \"{BASE}\"\nfrom = \"b\"\n"));
    assert!(
        e.contains("strata.toml:3:8") && e.contains("not both"),
        "{e}"
    );
    let e = err(&format!(
        "[images.python-base]\nbase = \"{BASE}\"\n[images.app]\nfrom = \"pyhton-base\"\n"
    ));
    assert!(e.contains("strata.toml:4:8: images.app.from"), "{e}");
    assert!(e.contains("no image named \"pyhton-base\""), "{e}");
    assert!(e.contains("images: python-base, app"), "{e}");
    let e = err("[images.a]\nbase = \"Not A Ref\"\n");
    assert!(
        e.contains("images.a.base") && e.contains("not a valid image reference"),
        "{e}"
    );
}

#[test]
fn cycles_are_named() {
    let e = err("[images.a]\nfrom = \"b\"\n\n[images.b]\nfrom = \"a\"\n");
    assert!(e.contains("cycle a -> b -> a"), "{e}");
    assert!(e.contains("strata.toml:1:1"), "{e}");
    let e = err("[images.a]\nfrom = \"a\"\n");
    assert!(e.contains("cycle a -> a"), "{e}");
}

#[test]
fn steps_need_exactly_one_kind() {
    let step = |body: &str| {
        err(&format!(
            "[images.a]\nbase = \"{BASE}\"\n[[images.a.toolchain]]\n{body}\n"
        ))
    };
    let e = step("name = \"nothing\"");
    assert!(
        e.contains("images.a.toolchain[1]") && e.contains("needs one of"),
        "{e}"
    );
    let e = step("apt = [\"git\"]\npip = [\"x\"]");
    assert!(e.contains("exactly one"), "{e}");
    let e = step("apt = [\"git\"]\ncache = [\"/x\"]");
    assert!(e.contains("cache is only valid with run"), "{e}");
    let e = step("apt = []");
    assert!(e.contains("at least one package"), "{e}");
    let e = step("run = \"make\"\ncache = [\"relative\"]");
    assert!(e.contains("absolute"), "{e}");
}

#[test]
fn overlay_dirs_must_exist_and_names_be_valid() {
    let e = err(&format!(
        "[images.a]\nbase = \"{BASE}\"\n[images.a.overlay]\ncopy = {{ from = \"missing/\", to = \"/w\" }}\n"
    ));
    assert!(
        e.contains("strata.toml:4") && e.contains("missing") && e.contains("not a directory"),
        "{e}"
    );
    let e = err(&format!("[images.Bad]\nbase = \"{BASE}\"\n"));
    assert!(e.contains("images.Bad") && e.contains("lowercase"), "{e}");
    let e = err("");
    assert!(e.contains("defines no image"), "{e}");
    let e = err("[images.a\n");
    assert!(e.contains("strata.toml:1"), "{e}");
}

#[test]
fn the_same_spec_marshals_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_in(dir.path(), &two_images()).unwrap();
    let options = LowerOptions::default();
    let a = spec.lower("app", &BTreeMap::new(), &options).unwrap();
    let b = spec.lower("app", &BTreeMap::new(), &options).unwrap();
    assert_eq!(a.definition.to_bytes(), b.definition.to_bytes());
    let reparsed = Spec::load(&dir.path().join("strata.toml")).unwrap();
    let c = reparsed.lower("app", &BTreeMap::new(), &options).unwrap();
    assert_eq!(a.definition.to_bytes(), c.definition.to_bytes());
}

#[test]
fn overlay_changes_leave_toolchain_digests_alone() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_in(dir.path(), &two_images()).unwrap();
    let before = spec
        .lower("app", &BTreeMap::new(), &LowerOptions::default())
        .unwrap();
    std::fs::write(dir.path().join("overlay/new.txt"), "content").unwrap();
    let changed = two_images().replace("exclude = [\"*.pyc\"]", "exclude = [\"*.pyc\", \"*.log\"]");
    let spec = spec_in(dir.path(), &changed).unwrap();
    let after = spec
        .lower("app", &BTreeMap::new(), &LowerOptions::default())
        .unwrap();
    assert_eq!(toolchain_digests(&before), toolchain_digests(&after));
    assert_ne!(before.definition.to_bytes(), after.definition.to_bytes());
    assert_eq!(before.local_dirs.len(), 1);
}

#[test]
fn steps_get_cache_mounts_shared_across_images_not_platforms() {
    let text = format!(
        "[images.a]\nbase = \"{BASE}\"\n[[images.a.toolchain]]\napt = [\"git\"]\n\
         [images.b]\nbase = \"{BASE}\"\n[[images.b.toolchain]]\napt = [\"curl\"]\n\
         [images.c]\nbase = \"{BASE}\"\nplatform = \"linux/arm64\"\n[[images.c.toolchain]]\napt = [\"curl\"]\n"
    );
    let spec = parse(&text).unwrap();
    let lower = |n| {
        spec.lower(n, &BTreeMap::new(), &LowerOptions::default())
            .unwrap()
    };
    let (a, b, c) = (lower("a"), lower("b"), lower("c"));
    assert_eq!(cache_ids(&a), cache_ids(&b));
    assert_eq!(cache_ids(&a).len(), 2, "/var/cache/apt and /var/lib/apt");
    assert!(cache_ids(&c).iter().all(|id| !cache_ids(&a).contains(id)));
    assert!(cache_ids(&c)[0].contains("linux/arm64"));
    assert_eq!(a.steps[0].name, "[a 1/1] apt install git");
}

#[test]
fn the_ca_bundle_is_a_secret_mount_and_step_env_only() {
    let spec = parse(&two_images()).unwrap();
    let options = LowerOptions {
        ca_cert: Some("strata-ca-cert".into()),
        platform: None,
    };
    let app = spec.lower("app", &BTreeMap::new(), &options).unwrap();
    let mut execs = 0;
    for bytes in app.definition.ops() {
        if let Some(pb::op::Op::Exec(exec)) = pb::Op::decode(bytes.as_ref()).unwrap().op {
            execs += 1;
            assert!(exec.mounts.iter().any(|m| m
                .secret_opt
                .as_ref()
                .is_some_and(|s| s.id == "strata-ca-cert")));
            let env = exec.meta.unwrap().env;
            assert!(env
                .iter()
                .any(|e| e == "NODE_EXTRA_CA_CERTS=/run/secrets/strata-ca.crt"));
        }
    }
    assert_eq!(execs, 4);
    let env = app.config["config"]["Env"].to_string();
    assert!(!env.contains("SSL_CERT_FILE"), "{env}");
    assert!(env.contains("LANG=C.UTF-8"), "{env}");
}

#[test]
fn image_config_merges_the_base_config() {
    let spec = parse(&two_images()).unwrap();
    let base: oci_spec::image::ImageConfiguration = serde_json::from_value(serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["bash"], "Labels": {"from": "base"}},
        "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .unwrap();
    let bases = BTreeMap::from([(BASE.to_owned(), base)]);
    let app = spec.lower("app", &bases, &LowerOptions::default()).unwrap();
    let c = &app.config["config"];
    assert_eq!(
        c["Env"],
        serde_json::json!(["PATH=/usr/bin:/bin", "LANG=C.UTF-8"])
    );
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["Cmd"], serde_json::json!(["python3", "-m", "app"]));
    assert_eq!(c["Labels"]["from"], "base");
    assert_eq!(app.config["rootfs"]["type"], "layers");
}

#[test]
fn env_steps_expand_earlier_values() {
    let text = format!(
        "[images.a]\nbase = \"{BASE}\"\nenv = {{ PATH = \"/usr/bin\" }}\n\
         [[images.a.toolchain]]\nenv = {{ PATH = \"/opt/bin:$PATH\", X = \"${{PATH}}:y\" }}\n"
    );
    let spec = parse(&text).unwrap();
    let a = spec
        .lower("a", &BTreeMap::new(), &LowerOptions::default())
        .unwrap();
    let env = a.config["config"]["Env"].to_string();
    assert!(env.contains("PATH=/opt/bin:/usr/bin"), "{env}");
}

#[test]
fn the_codex_example_lowers() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/codex/strata.toml");
    let spec = Spec::load(&path).unwrap();
    let codex = spec
        .lower("codex", &BTreeMap::new(), &LowerOptions::default())
        .unwrap();
    let kinds: Vec<&str> = codex.steps.iter().map(|s| s.kind).collect();
    assert_eq!(kinds, vec!["apt", "pip", "npm", "run", "overlay"]);
    assert_eq!(codex.local_dirs.len(), 1);
}

#[test]
fn package_names_are_shell_quoted() {
    assert_eq!(
        lower::quote_for_test("requests==2.31.0"),
        "requests==2.31.0"
    );
    assert_eq!(lower::quote_for_test("a b"), "'a b'");
    assert_eq!(
        lower::quote_for_test("x';rm -rf /;'"),
        r"'x'\'';rm -rf /;'\'''"
    );
}
