use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;

use super::*;
use crate::llb::exec::DEFAULT_PATH;
use crate::llb::marshal::digest_of;
use crate::reference::ImageRef;
use crate::wire::pb;

/// An image config as JSON, to look into.
fn json(config: &oci_spec::image::ImageConfiguration) -> serde_json::Value {
    serde_json::to_value(config).unwrap()
}

const BASE: &str = "127.0.0.1:5000/strata/debian:bookworm";

/// Writes `text` as `strata.toml` in `dir`, with an `overlay/` directory beside it.
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

/// The error message of an invalid spec, with its temp directory written `DIR`.
fn err(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let e = spec_in(dir.path(), text).expect_err("the spec is invalid");
    let real = std::fs::canonicalize(dir.path()).unwrap();
    e.to_string()
        .replace(&real.display().to_string(), "DIR")
        .replace(&dir.path().display().to_string(), "DIR")
}

/// An image `a` on the base image, then `rest`.
fn image_a(rest: &str) -> String {
    format!("[images.a]\nbase = \"{BASE}\"\n{rest}")
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

fn lower(spec: &Spec, name: &str) -> LoweredImage {
    spec.lower(name, &BTreeMap::new(), &LowerOptions::default())
        .unwrap()
}

fn ops(image: &LoweredImage) -> Vec<(String, pb::Op)> {
    image
        .llb()
        .unwrap()
        .definition
        .ops()
        .iter()
        .map(|bytes| (digest_of(bytes), pb::Op::decode(bytes.as_ref()).unwrap()))
        .collect()
}

fn execs(image: &LoweredImage) -> Vec<pb::ExecOp> {
    ops(image)
        .into_iter()
        .filter_map(|(_, op)| match op.op {
            Some(pb::op::Op::Exec(e)) => Some(e),
            _ => None,
        })
        .collect()
}

/// Digests of the exec ops (the toolchain steps), in definition order.
fn toolchain_digests(image: &LoweredImage) -> Vec<String> {
    ops(image)
        .into_iter()
        .filter(|(_, op)| matches!(op.op, Some(pb::op::Op::Exec(_))))
        .map(|(d, _)| d)
        .collect()
}

fn cache_ids(image: &LoweredImage) -> Vec<String> {
    execs(image)
        .into_iter()
        .flat_map(|e| e.mounts)
        .filter_map(|m| m.cache_opt.map(|c| c.id))
        .collect()
}

fn script(exec: &pb::ExecOp) -> String {
    exec.meta.as_ref().unwrap().args.last().cloned().unwrap()
}

// ---- parsing ----

#[test]
fn parses_images_in_file_order_with_their_steps() {
    let spec = parse(&two_images()).unwrap();
    assert_eq!(spec.names(), vec!["python-base", "app"]);
    assert_eq!(spec.base_refs(), vec![BASE.parse::<ImageRef>().unwrap()]);
    let app = spec.image("app").unwrap();
    assert_eq!(app.base, Base::From("python-base".into()));
    assert_eq!(app.steps.len(), 2);
    assert!(
        matches!(&app.steps[1].kind, StepKind::Tool(crate::tools::ToolStep::Run { cache, .. }) if cache == &["/root/.cargo/registry"])
    );
    assert!(
        matches!(&app.overlay[0], OverlayItem::Copy { from: CopyFrom::Dir(dir), to, exclude }
        if dir.path.is_absolute() && dir.path.ends_with("overlay") && to == "/app" && exclude == &["*.pyc"])
    );
}

#[test]
fn base_refs_are_normalized() {
    let spec = parse("[images.a]\nbase = \"debian:bookworm\"\n").unwrap();
    assert_eq!(
        spec.base_refs()[0].to_string(),
        "docker.io/library/debian:bookworm"
    );
}

#[test]
fn closure_orders_dependencies_first_and_names_unknown_images() {
    let text = format!(
        "[images.c]\nfrom = \"b\"\n[images.b]\nfrom = \"a\"\n[images.a]\nbase = \"{BASE}\"\n[images.d]\nbase = \"{BASE}\"\n"
    );
    let spec = parse(&text).unwrap();
    assert_eq!(spec.names(), vec!["c", "b", "a", "d"]);
    assert_eq!(
        spec.closure(&["c".into(), "d".into(), "b".into()]).unwrap(),
        vec!["a", "b", "c", "d"]
    );
    let e = spec.closure(&["nope".into()]).unwrap_err();
    assert_eq!(e.line, 0);
    assert!(
        e.to_string()
            .ends_with("strata.toml: no image named \"nope\" (images: c, b, a, d)"),
        "{e}"
    );
}

#[test]
fn env_keeps_file_order() {
    let spec = parse(&image_a("env = { Z = \"1\", A = \"$Z-2\" }\n")).unwrap();
    let a = spec.image("a").unwrap();
    assert_eq!(
        a.settings.env,
        vec![("Z".into(), "1".into()), ("A".into(), "$Z-2".into())]
    );
    let env = json(&lower(&spec, "a").llb().unwrap().config)["config"]["Env"].clone();
    assert_eq!(
        env,
        serde_json::json!([format!("PATH={DEFAULT_PATH}"), "Z=1", "A=1-2"])
    );
}

#[test]
fn copy_and_git_take_a_table_or_an_array() {
    let spec = parse(&image_a(
        "[[images.a.overlay.copy]]\nfrom = \"overlay\"\nto = \"/x\"\n\
         [[images.a.overlay.copy]]\nfrom = \".\"\nto = \"y\"\n\
         [images.a.overlay.git]\nurl = \"https://example.invalid/r.git\"\nto = \"/r\"\n",
    ))
    .unwrap();
    let overlay = &spec.image("a").unwrap().overlay;
    assert_eq!(overlay.len(), 3);
    assert!(matches!(&overlay[2], OverlayItem::Git { reference, .. } if reference.is_empty()));
}

// ---- errors: one line, file:line:col: key: message ----

#[test]
fn unknown_keys() {
    let text = format!(
        "[images.codex]\nbase = \"{BASE}\"\n\n[[images.codex.toolchain]]\napt = [\"git\"]\n\n\
         [[images.codex.toolchain]]\naptt = [\"git\"]\n"
    );
    assert_eq!(
        err(&text),
        "DIR/strata.toml:8:1: images.codex.toolchain[2]: unknown key \"aptt\" \
         (expected one of apt, pip, npm, run, cache, name, env, workdir, user, platforms)"
    );
    assert_eq!(
        err("[images.a]\nbse = \"x\"\n"),
        "DIR/strata.toml:2:1: images.a: unknown key \"bse\" (expected one of base, from, \
         platform, env, workdir, user, entrypoint, cmd, labels, push, provenance, sbom, \
         cache_to, cache_from, toolchain, overlay, dockerfile)"
    );
    assert_eq!(
        err("image = 1\n"),
        "DIR/strata.toml:1:1: unknown key \"image\" (expected one of ca_cert, images)"
    );
    assert_eq!(
        err(&image_a(
            "[images.a.overlay]\ncopy = { from = \"overlay\", too = \"/w\" }\n"
        )),
        "DIR/strata.toml:4:28: images.a.overlay.copy: unknown key \"too\" (expected one of from, to, exclude)"
    );
    assert_eq!(
        err(&image_a(
            "[[images.a.toolchain]]\nnpm = { packages = [\"x\"], dri = \"/a\" }\n"
        )),
        "DIR/strata.toml:4:27: images.a.toolchain[1].npm: unknown key \"dri\" (expected one of packages, dir)"
    );
}

#[test]
fn wrong_types() {
    assert_eq!(
        err(&image_a("entrypoint = \"bash\"\n")),
        "DIR/strata.toml:3:14: images.a.entrypoint: invalid type: string \"bash\", expected an array"
    );
    assert_eq!(
        err(&image_a("cmd = [\"a\", 1]\n")),
        "DIR/strata.toml:3:13: images.a.cmd[2]: invalid type: integer `1`, expected a string"
    );
    assert_eq!(
        err(&image_a("[[images.a.toolchain]]\napt = \"git\"\n")),
        "DIR/strata.toml:4:7: images.a.toolchain[1].apt: invalid type: string \"git\", expected an array"
    );
    assert_eq!(
        err(&image_a("env = { A = 1 }\n")),
        "DIR/strata.toml:3:13: images.a.env.A: invalid type: integer `1`, expected a string"
    );
    assert_eq!(
        err(&image_a("[[images.a.toolchain]]\nnpm = \"x\"\n")),
        "DIR/strata.toml:4:7: images.a.toolchain[1].npm: invalid type: string \"x\", expected an array or a table"
    );
    assert_eq!(
        err("images = 3\n"),
        "DIR/strata.toml:1:10: images: invalid type: integer `3`, expected a table"
    );
    assert_eq!(
        err(&image_a(
            "[images.a.overlay]\ncopy = { from = \"overlay\" }\n"
        )),
        "DIR/strata.toml:4:8: images.a.overlay.copy: missing key \"to\""
    );
}

#[test]
fn syntax_errors_and_duplicates() {
    assert_eq!(
        err(&image_a("base = \"y\"\n")),
        "DIR/strata.toml:3:1: images.a: duplicate key \"base\""
    );
    let e = err("[images.a\nbase = \"x\"\n");
    assert!(e.starts_with("DIR/strata.toml:1:10: "), "{e}");
    assert!(e.contains("expected `]`"), "{e}");
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn base_and_from() {
    assert_eq!(
        err("[images.a]\nworkdir = \"/x\"\n"),
        "DIR/strata.toml:1:1: images.a: needs a base (an image reference) or from (another image of this file)"
    );
    assert_eq!(
        err(&image_a("from = \"b\"\n")),
        "DIR/strata.toml:3:8: images.a: give either base (an image reference) or from \
         (another image of this file), not both"
    );
    assert_eq!(
        err(&format!(
            "[images.python-base]\nbase = \"{BASE}\"\n[images.app]\nfrom = \"pyhton-base\"\n"
        )),
        "DIR/strata.toml:4:8: images.app.from: no image named \"pyhton-base\" in strata.toml \
         (images: python-base, app)"
    );
    assert_eq!(
        err("[images.a]\nbase = \"Not A Ref\"\n"),
        "DIR/strata.toml:2:8: images.a.base: \"Not A Ref\" is not a valid image reference: \
         it contains white space"
    );
    assert_eq!(
        err(&image_a("push = \"bad ref\"\n")),
        "DIR/strata.toml:3:8: images.a.push: \"bad ref\" is not a valid image reference: \
         it contains white space"
    );
}

#[test]
fn cycles() {
    assert_eq!(
        err("[images.a]\nfrom = \"b\"\n\n[images.b]\nfrom = \"a\"\n"),
        "DIR/strata.toml:1:1: images.a: cycle a -> b -> a"
    );
    assert_eq!(
        err("[images.a]\nfrom = \"a\"\n"),
        "DIR/strata.toml:1:1: images.a: cycle a -> a"
    );
    assert_eq!(
        err("[images.a]\nfrom = \"b\"\n[images.b]\nfrom = \"c\"\n[images.c]\nfrom = \"b\"\n"),
        "DIR/strata.toml:3:1: images.b: cycle b -> c -> b"
    );
}

#[test]
fn platforms() {
    assert_eq!(
        err(&image_a("platform = \"linux\"\n")),
        "DIR/strata.toml:3:12: images.a.platform: \"linux\" is not a platform (linux is an OS: name its architecture too; expected OS/ARCH[/VARIANT], e.g. linux/amd64)"
    );
    assert_eq!(
        err(&image_a(
            "platform = \"linux/arm64\"\n[images.b]\nfrom = \"a\"\nplatform = \"linux/amd64\"\n"
        )),
        "DIR/strata.toml:6:12: images.b.platform: linux/amd64 is not among linux/arm64, the \
         platforms of a it is built from"
    );
    // A list is an array, each entry checked; a child may take some of its parent's.
    let listed = parse(&image_a(
        "platform = [\"linux/amd64\", \"aarch64\"]\n[images.b]\nfrom = \"a\"\nplatform = \"arm64\"\n",
    ))
    .unwrap();
    let a = listed.image("a").unwrap();
    assert_eq!(
        a.platform.as_ref().unwrap().to_string(),
        "linux/amd64,linux/arm64"
    );
    assert_eq!(
        err(&image_a("platform = [\"linux/amd64\", \"linux/amd65\"]\n")),
        "DIR/strata.toml:3:12: images.a.platform: \"linux/amd65\" is not a platform (unknown \
         architecture \"amd65\"; expected OS/ARCH[/VARIANT], e.g. linux/amd64)"
    );
    assert_eq!(
        err(&image_a("platform = [\"arm64\", \"linux/aarch64\"]\n")),
        "DIR/strata.toml:3:12: images.a.platform: linux/arm64 is named twice"
    );
    assert_eq!(
        err(&image_a("platform = []\n")),
        "DIR/strata.toml:3:12: images.a.platform: no platform given"
    );
    assert!(err(&image_a("platform = 3\n")).contains("a string or an array of strings"));
}

/// Run steps get the TARGET* variables of the platform they run for; the
/// image config does not.
#[test]
fn run_steps_get_the_target_platform_and_the_config_does_not() {
    let spec = parse(&image_a("[[images.a.toolchain]]\nrun = \"true\"\n")).unwrap();
    let options = LowerOptions {
        platform: Some("linux/arm/v7".parse().unwrap()),
        ..LowerOptions::default()
    };
    let image = spec.lower("a", &BTreeMap::new(), &options).unwrap();
    let env = execs(&image)[0].meta.as_ref().unwrap().env.clone();
    for want in [
        "TARGETPLATFORM=linux/arm/v7",
        "TARGETOS=linux",
        "TARGETARCH=arm",
        "TARGETVARIANT=v7",
    ] {
        assert!(env.iter().any(|e| e == want), "{want} in {env:?}");
    }
    let config = json(&image.llb().unwrap().config);
    assert!(!config.to_string().contains("TARGET"), "{config}");
}

/// `image` lowered for `platform`.
fn lower_for(spec: &Spec, image: &str, platform: &str) -> Result<LoweredImage, SpecError> {
    let options = LowerOptions {
        platform: Some(platform.parse().unwrap()),
        ..LowerOptions::default()
    };
    spec.lower(image, &BTreeMap::new(), &options)
}

#[test]
fn a_step_limited_to_platforms_runs_only_for_them() {
    let spec = parse(&image_a(
        "platform = [\"linux/amd64\", \"linux/arm64\"]\n\
         [[images.a.toolchain]]\nrun = \"echo all\"\n\
         [[images.a.toolchain]]\nrun = \"echo amd\"\nplatforms = [\"amd64\"]\n",
    ))
    .unwrap();
    let names = |p: &str| -> Vec<String> {
        let image = lower_for(&spec, "a", p).unwrap();
        image.steps.iter().map(|s| s.name.clone()).collect()
    };
    assert_eq!(
        names("linux/amd64"),
        ["[a 1/2] run: echo all", "[a 2/2] run: echo amd"]
    );
    assert_eq!(names("linux/arm64"), ["[a 1/1] run: echo all"]);
    assert_eq!(
        err(&image_a(
            "platform = \"linux/amd64\"\n[[images.a.toolchain]]\nrun = \"x\"\n\
             platforms = [\"linux/arm64\"]\n"
        )),
        "DIR/strata.toml:4:1: images.a.toolchain[1].platforms: linux/arm64 is not among \
         linux/amd64, the platforms of a"
    );
}

#[test]
fn an_overlay_path_may_name_the_platform() {
    let dir = tempfile::tempdir().unwrap();
    for arch in ["amd64", "arm64"] {
        std::fs::create_dir_all(dir.path().join("rootfs").join(arch)).unwrap();
    }
    let text = image_a("[images.a.overlay]\ncopy = { from = \"rootfs/{arch}\", to = \"/\" }\n");
    let spec = spec_in(dir.path(), &text).unwrap();
    let arm = lower_for(&spec, "a", "linux/arm64").unwrap();
    let local = &arm.local_dirs["a-overlay-0-linux-arm64"];
    assert!(local.path.ends_with("rootfs/arm64"), "{local:?}");
    assert_eq!(arm.steps[0].name, "[a 1/1] overlay rootfs/arm64 -> /");
    let amd = lower_for(&spec, "a", "linux/amd64").unwrap();
    assert!(amd.local_dirs.contains_key("a-overlay-0-linux-amd64"));
    let missing = lower_for(&spec, "a", "linux/386").unwrap_err().to_string();
    assert!(
        missing.contains("strata.toml:4:17: images.a.overlay.copy.from: \"rootfs/{arch}\" for linux/386: \"rootfs/386\": No such file"),
        "{missing}"
    );
    let unknown = image_a("[images.a.overlay]\ncopy = { from = \"rootfs/{cpu}\", to = \"/\" }\n");
    assert_eq!(
        err(&unknown),
        "DIR/strata.toml:4:17: images.a.overlay.copy.from: \"rootfs/{cpu}\": a path may name \
         the platform only with {os}, {arch}, {variant}"
    );
}

#[test]
fn step_kinds() {
    let step = |body: &str| err(&image_a(&format!("[[images.a.toolchain]]\n{body}\n")));
    assert_eq!(
        step("name = \"nothing\""),
        "DIR/strata.toml:3:1: images.a.toolchain[1]: a step needs one of apt, pip, npm, run, env, workdir, user"
    );
    assert_eq!(
        step("apt = [\"git\"]\npip = [\"x\"]"),
        "DIR/strata.toml:5:7: images.a.toolchain[1]: a step has exactly one of apt, pip, npm, \
         run, env, workdir, user; this one has apt and pip (split it into several steps)"
    );
    assert_eq!(
        step("apt = [\"git\"]\ncache = [\"/x\"]"),
        "DIR/strata.toml:5:9: images.a.toolchain[1].cache: cache is only valid with run (apt, \
         pip and npm steps get their cache mounts already)"
    );
    assert_eq!(
        step("apt = []"),
        "DIR/strata.toml:4:7: images.a.toolchain[1].apt: apt needs at least one package"
    );
    assert_eq!(
        step("pip = [\"\"]"),
        "DIR/strata.toml:4:7: images.a.toolchain[1].pip: a package name is empty"
    );
    assert_eq!(
        step("npm = { packages = [] }"),
        "DIR/strata.toml:4:7: images.a.toolchain[1].npm: npm needs at least one package"
    );
    assert_eq!(
        step("run = \"make\"\ncache = [\"/ok\", \"relative\"]"),
        "DIR/strata.toml:5:17: images.a.toolchain[1].cache: cache paths are absolute; \"relative\" is not"
    );
    assert_eq!(
        step("run = \"  \""),
        "DIR/strata.toml:4:7: images.a.toolchain[1].run: run needs a script"
    );
    assert_eq!(
        step("env = {}"),
        "DIR/strata.toml:4:7: images.a.toolchain[1].env: env needs at least one variable"
    );
}

#[test]
fn variable_names() {
    assert_eq!(
        err(&image_a("env = { \"A=B\" = \"x\" }\n")),
        "DIR/strata.toml:3:9: images.a.env: \"A=B\" is not a variable name (no '=', not empty)"
    );
}

#[test]
fn overlay_dirs_and_names() {
    assert_eq!(
        err(&image_a(
            "[images.a.overlay]\ncopy = { from = \"missing/\", to = \"/w\" }\n"
        )),
        "DIR/strata.toml:4:17: images.a.overlay.copy.from: \"missing/\": No such file or \
         directory (os error 2) (looked for DIR/missing/)"
    );
    assert_eq!(
        err(&image_a(
            "[[images.a.overlay.copy]]\nfrom = \"overlay\"\nto = \"/w\"\n\
             [[images.a.overlay.copy]]\nfrom = \"nope\"\nto = \"/w\"\n"
        )),
        "DIR/strata.toml:7:8: images.a.overlay.copy[2].from: \"nope\": No such file or \
         directory (os error 2) (looked for DIR/nope)"
    );
    assert_eq!(
        err(&image_a(
            "[images.a.overlay]\ngit = { url = \"https://ci:s3cret@git.example/r.git\", to = \"/w\" }\n"
        )),
        "DIR/strata.toml:4:15: images.a.overlay.git.url: the URL carries credentials, which \
         would be kept in the image's history and the daemon's cache keys; give a token as a \
         secret instead: --secret id=GIT_AUTH_TOKEN,src=FILE"
    );
    assert_eq!(
        err(&image_a(
            "[images.a.overlay]\ngit = { url = \"\", to = \"/w\" }\n"
        )),
        "DIR/strata.toml:4:15: images.a.overlay.git.url: must not be empty"
    );
    assert_eq!(
        err(&format!("[images.Bad]\nbase = \"{BASE}\"\n")),
        "DIR/strata.toml:1:9: images.Bad: image names are lowercase letters, digits, '.', '_' \
         and '-', starting with a letter or digit"
    );
    assert_eq!(
        err("[images.\"a b\"]\nbase = \"x\"\n"),
        "DIR/strata.toml:1:9: images.\"a b\": image names are lowercase letters, digits, '.', '_' \
         and '-', starting with a letter or digit"
    );
    assert_eq!(
        err(""),
        "DIR/strata.toml:1:1: images: the spec defines no image (add an [images.NAME] table)"
    );
    assert_eq!(
        err(&format!("ca_cert = \"\"\n{}", image_a(""))),
        "DIR/strata.toml:1:11: ca_cert: must not be empty"
    );
}

#[test]
fn unreadable_files_are_named() {
    let e = Spec::load(Path::new("/nonexistent/strata.toml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/strata.toml: cannot read the spec: "),
        "{e}"
    );
}

/// Whatever the input, parsing answers Ok or Err, never panics; every error is one line.
#[test]
fn never_panics() {
    let path = example();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut inputs: Vec<String> = Vec::new();
    for (i, _) in text.char_indices() {
        inputs.push(text[..i].to_owned());
        inputs.push(format!("{}]{}", &text[..i], &text[i..]));
        inputs.push(format!("{}\"é{}", &text[..i], &text[i..]));
    }
    inputs.extend(
        [
            "\u{feff}[images.a]",
            "[images.é]\nbase = \"é\"",
            "[images.a]\nfrom = \"a\"\n[images.a.toolchain]\n",
            "[[images.a]]\nbase = \"x\"",
            "[images]\na = 1",
            "[images.a]\nbase = \"x\"\n[images.a.overlay]\ncopy = []\ngit = []",
            "[images.a]\nbase=\"x\"\nenv = { \"\" = \"x\" }",
            "[images.a]\nbase=\"x\"\n[[images.a.toolchain]]\nenv = { A = \"${\" }\n[[images.a.toolchain]]\nenv = { B = \"$\" }",
            "a = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
            "\0\0\0",
        ]
        .map(str::to_owned),
    );
    for input in &inputs {
        match Spec::parse(input, &path) {
            Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
            Ok(spec) => {
                for name in spec.names() {
                    let _ = spec.lower(name, &BTreeMap::new(), &LowerOptions::default());
                }
            }
        }
    }
}

// ---- lowering ----

#[test]
fn the_same_spec_marshals_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_in(dir.path(), &two_images()).unwrap();
    let a = lower(&spec, "app");
    let b = lower(&spec, "app");
    assert_eq!(
        a.llb().unwrap().definition.to_bytes(),
        b.llb().unwrap().definition.to_bytes()
    );
    let reparsed = Spec::load(&dir.path().join("strata.toml")).unwrap();
    let c = lower(&reparsed, "app");
    assert_eq!(
        a.llb().unwrap().definition.to_bytes(),
        c.llb().unwrap().definition.to_bytes()
    );
    assert_eq!(a.llb().unwrap().config, c.llb().unwrap().config);
}

#[test]
fn overlay_changes_leave_toolchain_digests_alone() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_in(dir.path(), &two_images()).unwrap();
    let before = lower(&spec, "app");
    assert_eq!(toolchain_digests(&before).len(), 4);

    // New content, another exclude pattern, a second copy and a git checkout.
    std::fs::write(dir.path().join("overlay/new.txt"), "content").unwrap();
    std::fs::create_dir(dir.path().join("more")).unwrap();
    let changed = two_images()
        .replace("exclude = [\"*.pyc\"]", "exclude = [\"*.pyc\", \"*.log\"]")
        .replace(
            "copy = {",
            "git = { url = \"https://example.invalid/x.git\", ref = \"v1\", to = \"/x\" }\ncopy = [{ from = \"more\", to = \"/more\" }, {",
        )
        .replace("\"*.log\"] }", "\"*.log\"] }]");
    let spec = spec_in(dir.path(), &changed).unwrap();
    assert_eq!(spec.image("app").unwrap().overlay.len(), 3);
    let after = lower(&spec, "app");
    assert_eq!(toolchain_digests(&before), toolchain_digests(&after));
    assert_ne!(
        before.llb().unwrap().definition.to_bytes(),
        after.llb().unwrap().definition.to_bytes()
    );
    assert_eq!(after.local_dirs.len(), 2);
    let kinds: Vec<String> = after.steps.iter().map(|s| s.kind.to_string()).collect();
    assert_eq!(
        kinds,
        ["apt", "pip", "npm", "run", "overlay", "overlay", "git"]
    );
}

#[test]
fn local_sources_are_named_by_position_with_their_excludes() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_in(dir.path(), &two_images()).unwrap();
    let app = lower(&spec, "app");
    let local = &app.local_dirs["app-overlay-0"];
    assert_eq!(
        local.path,
        std::fs::canonicalize(dir.path().join("overlay")).unwrap()
    );
    assert_eq!(local.excludes, ["*.pyc"]);
    let source = ops(&app)
        .into_iter()
        .find_map(|(_, op)| match op.op {
            Some(pb::op::Op::Source(s)) if s.identifier.starts_with("local://") => Some(s),
            _ => None,
        })
        .unwrap();
    assert_eq!(source.identifier, "local://app-overlay-0");
    assert_eq!(source.attrs["local.excludepatterns"], "[\"*.pyc\"]");
    // Spec-relative: the graph does not depend on where the checkout is.
    assert_eq!(source.attrs["local.sharedkeyhint"], "overlay");
}

#[test]
fn steps_get_cache_mounts_shared_across_images_not_platforms() {
    let text = format!(
        "[images.a]\nbase = \"{BASE}\"\nplatform = \"linux/amd64\"\n[[images.a.toolchain]]\napt = [\"git\"]\n\
         [images.b]\nbase = \"{BASE}\"\nplatform = \"linux/amd64\"\n[[images.b.toolchain]]\napt = [\"curl\"]\n\
         [images.c]\nbase = \"{BASE}\"\nplatform = \"linux/arm64\"\n[[images.c.toolchain]]\napt = [\"curl\"]\n"
    );
    let spec = parse(&text).unwrap();
    let (a, b, c) = (lower(&spec, "a"), lower(&spec, "b"), lower(&spec, "c"));
    assert_eq!(cache_ids(&a), cache_ids(&b));
    assert_eq!(
        cache_ids(&a),
        [
            "strata:apt:linux/amd64:/var/cache/apt",
            "strata:apt:linux/amd64:/var/lib/apt"
        ]
    );
    assert!(cache_ids(&c).iter().all(|id| !cache_ids(&a).contains(id)));
    assert!(cache_ids(&c)[0].contains("linux/arm64"));
    for exec in execs(&a) {
        for m in exec.mounts.iter().filter(|m| m.cache_opt.is_some()) {
            assert_eq!(
                m.cache_opt.as_ref().unwrap().sharing,
                pb::CacheSharingOpt::Locked as i32
            );
        }
    }
}

#[test]
fn from_images_inherit_the_platform() {
    let text = image_a(
        "platform = \"linux/arm64\"\n[images.b]\nfrom = \"a\"\n[[images.b.toolchain]]\npip = [\"six\"]\n",
    );
    let spec = parse(&text).unwrap();
    let b = lower(&spec, "b");
    assert_eq!(cache_ids(&b), ["strata:pip:linux/arm64:/root/.cache/pip"]);
    assert_eq!(json(&b.llb().unwrap().config)["architecture"], "arm64");
    for (_, op) in ops(&b) {
        if let Some(pb::op::Op::Exec(_)) = op.op {
            assert_eq!(op.platform.unwrap().architecture, "arm64");
        }
    }
    // --platform overrides both.
    let options = LowerOptions {
        ca_cert: None,
        platform: Some("linux/riscv64".parse().unwrap()),
        ..LowerOptions::default()
    };
    let b = spec.lower("b", &BTreeMap::new(), &options).unwrap();
    assert_eq!(json(&b.llb().unwrap().config)["architecture"], "riscv64");
}

#[test]
fn package_steps_run_the_documented_commands() {
    let text = image_a(
        "[[images.a.toolchain]]\napt = [\"git\", \"curl\"]\n\
         [[images.a.toolchain]]\npip = [\"requests==2.32.3\", \"a b\"]\n\
         [[images.a.toolchain]]\nnpm = [\"typescript@5\"]\n\
         [[images.a.toolchain]]\nnpm = { packages = [\"left-pad\"], dir = \"/app\" }\n\
         [[images.a.toolchain]]\nname = \"install rust\"\nrun = \"curl https://sh.rustup.rs | sh\"\ncache = [\"/root/.cargo/registry\"]\n\
         [[images.a.toolchain]]\nrun = \"\\n  echo one\\necho two\"\n",
    );
    let spec = parse(&text).unwrap();
    let a = lower(&spec, "a");
    let names: Vec<&str> = a.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "[a 1/6] apt install git curl",
            "[a 2/6] pip install requests==2.32.3 a b",
            "[a 3/6] npm install -g typescript@5",
            "[a 4/6] npm install left-pad in /app",
            "[a 5/6] install rust",
            "[a 6/6] run: echo one",
        ]
    );
    let execs = execs(&a);
    let scripts: Vec<String> = execs.iter().map(script).collect();
    assert_eq!(
        scripts[0],
        "set -e; rm -f /etc/apt/apt.conf.d/docker-clean; \
         echo 'Binary::apt::APT::Keep-Downloaded-Packages \"true\";' > /etc/apt/apt.conf.d/keep-cache; \
         apt-get update; \
         DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends git curl"
    );
    assert_eq!(
        scripts[1],
        "set -e; python3 -m pip wheel --wheel-dir /root/.cache/pip/strata-wheels \
         --find-links /root/.cache/pip/strata-wheels requests==2.32.3 'a b'; \
         python3 -m pip install --break-system-packages --no-index \
         --find-links /root/.cache/pip/strata-wheels requests==2.32.3 'a b'"
    );
    assert_eq!(scripts[2], "npm install -g typescript@5");
    assert_eq!(
        scripts[3],
        "mkdir -p /app && cd /app && npm install left-pad"
    );
    assert_eq!(scripts[4], "curl https://sh.rustup.rs | sh");
    assert_eq!(execs[0].meta.as_ref().unwrap().args[..2], ["/bin/sh", "-c"]);
    let targets = |e: &pb::ExecOp| -> Vec<String> {
        e.mounts
            .iter()
            .filter(|m| m.cache_opt.is_some())
            .map(|m| m.dest.clone())
            .collect()
    };
    assert_eq!(targets(&execs[0]), ["/var/cache/apt", "/var/lib/apt"]);
    assert_eq!(targets(&execs[1]), ["/root/.cache/pip"]);
    assert_eq!(targets(&execs[2]), ["/root/.npm"]);
    assert_eq!(targets(&execs[4]), ["/root/.cargo/registry"]);
    assert!(targets(&execs[5]).is_empty());
    // Progress shows the spec's names.
    let described: Vec<String> = a
        .llb()
        .unwrap()
        .definition
        .metadata()
        .values()
        .filter_map(|m| m.description.get("llb.customname").cloned())
        .collect();
    assert!(described.contains(&"[a 5/6] install rust".to_owned()));
}

#[test]
fn long_scripts_are_named_by_their_first_line_truncated() {
    let long = "x".repeat(100);
    let spec = parse(&image_a(&format!(
        "[[images.a.toolchain]]\nrun = \"{long}\"\n"
    )))
    .unwrap();
    let a = lower(&spec, "a");
    assert_eq!(a.steps[0].name, format!("[a 1/1] run: {}…", "x".repeat(60)));
}

#[test]
fn the_ca_bundle_is_a_secret_mount_and_step_env_only() {
    let spec = parse(&two_images()).unwrap();
    let options = LowerOptions {
        ca_cert: Some("strata-ca-cert".into()),
        ..LowerOptions::default()
    };
    let app = spec.lower("app", &BTreeMap::new(), &options).unwrap();
    let execs = execs(&app);
    assert_eq!(execs.len(), 4);
    for exec in &execs {
        let secret = exec
            .mounts
            .iter()
            .find(|m| m.secret_opt.is_some())
            .expect("a secret mount");
        assert_eq!(secret.dest, CA_MOUNT);
        assert_eq!(secret.secret_opt.as_ref().unwrap().id, "strata-ca-cert");
        let env = &exec.meta.as_ref().unwrap().env;
        for var in [
            "SSL_CERT_FILE",
            "CURL_CA_BUNDLE",
            "REQUESTS_CA_BUNDLE",
            "PIP_CERT",
            "NODE_EXTRA_CA_CERTS",
            "npm_config_cafile",
            "GIT_SSL_CAINFO",
        ] {
            assert!(
                env.contains(&format!("{var}=/run/secrets/strata-ca.crt")),
                "{var}: {env:?}"
            );
        }
    }
    assert!(script(&execs[0]).contains(
        "apt-get -o Acquire::https::CAInfo=/run/secrets/strata-ca.crt update; \
         DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::https::CAInfo=/run/secrets/strata-ca.crt install"
    ));
    // Never in the image: not in its config, not in any file op.
    let env = json(&app.llb().unwrap().config)["config"]["Env"].to_string();
    assert!(
        !env.contains("SSL_CERT_FILE") && !env.contains("strata-ca"),
        "{env}"
    );
    assert!(env.contains("LANG=C.UTF-8"), "{env}");
    // Without the option there is no trace of it.
    let plain = lower(&spec, "app");
    assert!(execs_have_no_secret(&plain));
}

fn execs_have_no_secret(image: &LoweredImage) -> bool {
    execs(image)
        .iter()
        .all(|e| e.mounts.iter().all(|m| m.secret_opt.is_none()))
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
    let bases = BTreeMap::from([(BASE.parse::<ImageRef>().unwrap(), pinned(base))]);
    let app = spec.lower("app", &bases, &LowerOptions::default()).unwrap();
    let app_config = json(&app.llb().unwrap().config);
    let c = &app_config["config"];
    assert_eq!(
        c["Env"],
        serde_json::json!(["PATH=/usr/bin:/bin", "LANG=C.UTF-8"])
    );
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["Cmd"], serde_json::json!(["python3", "-m", "app"]));
    assert_eq!(c["Labels"]["from"], "base");
    assert_eq!(
        json(&app.llb().unwrap().config)["rootfs"],
        serde_json::json!({"type": "layers", "diff_ids": []})
    );
    assert_eq!(json(&app.llb().unwrap().config)["os"], "linux");
    // The config is a valid OCI image config.
    let typed: oci_spec::image::ImageConfiguration = app.llb().unwrap().config.clone();
    assert_eq!(
        typed.config().as_ref().unwrap().working_dir().as_deref(),
        Some("/app")
    );
    // Steps see the base's PATH.
    let exec = &execs(&app)[0];
    assert!(exec
        .meta
        .as_ref()
        .unwrap()
        .env
        .contains(&"PATH=/usr/bin:/bin".to_owned()));
}

#[test]
fn entrypoint_drops_the_inherited_cmd_and_labels_merge() {
    let base: oci_spec::image::ImageConfiguration = serde_json::from_value(serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["bash"], "User": "nobody", "Labels": {"a": "1"}},
        "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .unwrap();
    let spec = parse(&image_a(
        "entrypoint = [\"bash\", \"-lc\"]\nuser = \"root\"\nlabels = { b = \"2\", \"org.x\" = \"y\" }\n",
    ))
    .unwrap();
    let bases = BTreeMap::from([(BASE.parse::<ImageRef>().unwrap(), pinned(base))]);
    let a = spec.lower("a", &bases, &LowerOptions::default()).unwrap();
    let a_config = json(&a.llb().unwrap().config);
    let c = &a_config["config"];
    assert_eq!(c["Entrypoint"], serde_json::json!(["bash", "-lc"]));
    assert!(c.get("Cmd").is_none(), "{c}");
    assert_eq!(c["User"], "root");
    assert_eq!(
        c["Labels"],
        serde_json::json!({"a": "1", "b": "2", "org.x": "y"})
    );
}

#[test]
fn env_workdir_and_user_steps_change_later_steps_and_the_image() {
    let text = image_a(
        "env = { PATH = \"/usr/bin\" }\nworkdir = \"/srv\"\n\
         [[images.a.toolchain]]\nenv = { PATH = \"/opt/bin:$PATH\", X = \"${PATH}:y\", Y = \"$$ ${NOPE}z $\" }\n\
         [[images.a.toolchain]]\nworkdir = \"app\"\n\
         [[images.a.toolchain]]\nuser = \"nobody\"\n\
         [[images.a.toolchain]]\nrun = \"true\"\n",
    );
    let spec = parse(&text).unwrap();
    let a = lower(&spec, "a");
    let a_config = json(&a.llb().unwrap().config);
    let c = &a_config["config"];
    assert_eq!(
        c["Env"],
        serde_json::json!([
            "PATH=/opt/bin:/usr/bin",
            "X=/opt/bin:/usr/bin:y",
            "Y=$$ z $"
        ])
    );
    assert_eq!(c["WorkingDir"], "/srv/app");
    assert_eq!(c["User"], "nobody");
    let meta = execs(&a)[0].meta.clone().unwrap();
    assert_eq!(meta.cwd, "/srv/app");
    assert_eq!(meta.user, "nobody");
    assert_eq!(a.steps.len(), 1, "env/workdir/user are no layers");
    assert_eq!(a.steps[0].name, "[a 1/1] run: true");
}

#[test]
fn from_wires_the_other_image_state() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_in(dir.path(), &two_images()).unwrap();
    let base = lower(&spec, "python-base");
    let app = lower(&spec, "app");
    let base_digests = base.llb().unwrap().definition.digests();
    // Every op of python-base (but its terminal) is in app's definition.
    let app_digests = app.llb().unwrap().definition.digests();
    let shared = base_digests
        .iter()
        .filter(|d| app_digests.contains(d))
        .count();
    assert_eq!(shared, base_digests.len() - 1);
    assert!(ops(&app).iter().all(|(_, op)| !matches!(
        &op.op,
        Some(pb::op::Op::Source(s)) if s.identifier.contains("python-base")
    )));
    assert_eq!(
        app.steps[0].name,
        "[python-base 1/2] apt install python3 python3-pip"
    );
    assert_eq!(
        app.steps[2].name,
        "[app 1/3] npm install -g is-number@7.0.0"
    );
}

#[test]
fn package_names_are_shell_quoted() {
    assert_eq!(crate::tools::quote("requests==2.31.0"), "requests==2.31.0");
    assert_eq!(crate::tools::quote("a b"), "'a b'");
    assert_eq!(crate::tools::quote("$(id)"), "'$(id)'");
    assert_eq!(crate::tools::quote("~root"), "'~root'");
    assert_eq!(crate::tools::quote("pkg=1.0~rc1"), "pkg=1.0~rc1");
    assert_eq!(
        crate::tools::quote("x';rm -rf /;'"),
        r"'x'\'';rm -rf /;'\'''"
    );
}

// ---- the example ----

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/codex/strata.toml")
}

#[test]
fn the_codex_example_lowers() {
    let spec = Spec::load(&example()).unwrap();
    assert_eq!(spec.names(), ["codex"]);
    assert_eq!(spec.base_refs(), [BASE.parse::<ImageRef>().unwrap()]);
    let codex = lower(&spec, "codex");
    let kinds: Vec<String> = codex.steps.iter().map(|s| s.kind.to_string()).collect();
    assert_eq!(kinds, ["apt", "pip", "npm", "run", "overlay"]);
    assert!(codex.steps[0]
        .name
        .starts_with("[codex 1/5] apt install git curl"));
    assert_eq!(codex.local_dirs.len(), 1);
    let overlay = codex.local_dirs.values().next().unwrap();
    assert!(overlay.path.join("AGENTS.md").is_file());
    let codex_config = json(&codex.llb().unwrap().config);
    let c = &codex_config["config"];
    assert_eq!(c["WorkingDir"], "/workspace");
    assert!(c["Entrypoint"].is_array() && c["Cmd"].is_array());
    assert!(c["Labels"]["org.opencontainers.image.title"] == "codex");
    assert!(c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e.as_str().unwrap().starts_with("PATH=/workspace/bin:")));
    // Deterministic.
    let again = lower(&Spec::load(&example()).unwrap(), "codex");
    assert_eq!(
        codex.llb().unwrap().definition.to_bytes(),
        again.llb().unwrap().definition.to_bytes()
    );
}

/// The complete example of docs/spec.md is valid and lowers.
#[test]
fn the_documented_example_is_valid() {
    let docs =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/spec.md"))
            .unwrap();
    let start = docs.find("```toml\n").unwrap() + "```toml\n".len();
    let text = &docs[start..start + docs[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    std::fs::write(dir.path().join("certs/corp-ca.pem"), "").unwrap();
    let spec = spec_in(dir.path(), text).unwrap();
    assert_eq!(spec.names(), ["python-base", "app"]);
    assert_eq!(
        spec.ca_cert(),
        Some(&*std::fs::canonicalize(dir.path().join("certs/corp-ca.pem")).unwrap())
    );
    let app = lower(&spec, "app");
    let kinds: Vec<String> = app.steps.iter().map(|s| s.kind.to_string()).collect();
    assert_eq!(kinds, ["apt", "pip", "apt", "npm", "run", "overlay", "git"]);
    assert_eq!(app.steps[4].name, "[app 3/5] install rust");
    assert_eq!(json(&app.llb().unwrap().config)["architecture"], "amd64");
    assert_eq!(spec.image("app").unwrap().cache_to.len(), 1);
    assert_eq!(
        spec.image("python-base")
            .unwrap()
            .push
            .as_ref()
            .map(|p| p.to_string()),
        Some("127.0.0.1:5000/strata/python-base:latest".to_owned())
    );
}

#[test]
fn the_base_image_is_pulled_for_the_image_platform() {
    let text = format!("[images.arm]\nbase = \"{BASE}\"\nplatform = \"linux/arm64\"\n[[images.arm.toolchain]]\nrun = \"true\"\n");
    let spec = parse(&text).unwrap();
    let arm = spec
        .lower("arm", &BTreeMap::new(), &LowerOptions::default())
        .unwrap();
    for bytes in arm.llb().unwrap().definition.ops() {
        let op = pb::Op::decode(bytes.as_ref()).unwrap();
        if let Some(pb::op::Op::Source(_)) = op.op {
            assert_eq!(op.platform.unwrap().architecture, "arm64");
        }
    }
}

#[test]
fn scratch_starts_from_nothing() {
    let spec = parse(
        "[images.root]\nbase = \"scratch\"\ncmd = [\"bash\"]\n\n[images.root.overlay]\ncopy = { from = \"overlay/\", to = \"/\" }\n",
    )
    .unwrap();
    assert_eq!(spec.image("root").unwrap().base, Base::Scratch);
    assert!(spec.base_refs().is_empty(), "no registry base to resolve");
    let root = lower(&spec, "root");
    let sources: Vec<String> = ops(&root)
        .into_iter()
        .filter_map(|(_, op)| match op.op {
            Some(pb::op::Op::Source(s)) => Some(s.identifier),
            _ => None,
        })
        .collect();
    assert!(
        sources.iter().all(|id| id.starts_with("local://")),
        "no image source: {sources:?}"
    );
    assert_eq!(
        json(&root.llb().unwrap().config)["config"]["Cmd"],
        serde_json::json!(["bash"])
    );
    let env = json(&root.llb().unwrap().config)["config"]["Env"].to_string();
    assert!(
        env.contains("PATH="),
        "the default PATH, as FROM scratch: {env}"
    );
    assert_eq!(
        json(&root.llb().unwrap().config)["history"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

// ---- cache entries and resolving ----

#[test]
fn cache_entries_are_checked_at_load_with_their_place() {
    assert_eq!(
        err(&image_a(
            "cache_to = [\"type=inline\", \"type=registry,ref=r.io/x,mode=all\"]\n"
        )),
        "DIR/strata.toml:3:28: images.a.cache_to[2]: mode must be min or max, not \"all\""
    );
    assert_eq!(
        err(&image_a("cache_from = [\"type=local\"]\n")),
        "DIR/strata.toml:3:15: images.a.cache_from[1]: type=local needs src="
    );
    let outside = err(&image_a("cache_to = [\"type=local,dest=/c\"]\n"));
    assert!(
        outside.starts_with("DIR/strata.toml:3:13: images.a.cache_to[1]: \"/c\" lies outside")
            && outside.contains("--allow-path"),
        "{outside}"
    );
    let spec = parse(&image_a(
        "cache_to = [\"type=local,dest=c\"]\ncache_from = [\"r.io/x:cache\"]\n",
    ))
    .unwrap();
    let a = spec.image("a").unwrap();
    let dest = spec.dir.join("c").display().to_string();
    assert_eq!(
        a.cache_to[0].to_string(),
        format!("type=local,dest={dest},mode=max")
    );
    assert_eq!(
        a.cache_from[0].to_string(),
        "type=registry,ref=r.io/x:cache"
    );
}

#[test]
fn resolving_merges_the_spec_and_the_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "ca_cert = \"ca.pem\"\n[images.a]\nbase = \"{BASE}\"\npush = \"{BASE}-a\"\n\
         cache_to = [\"type=registry,ref=127.0.0.1:5000/c:a\"]\n\
         [images.b]\nfrom = \"a\"\n"
    );
    std::fs::write(dir.path().join("ca.pem"), "").unwrap();
    let spec = spec_in(dir.path(), &text).unwrap();
    let plan = spec.resolve(&Overrides::default()).unwrap();
    // A library caller gets the spec's CA bundle without asking for it.
    assert_eq!(plan.ca_cert.as_deref(), spec.ca_cert());
    let names: Vec<&str> = plan.jobs.iter().map(|j| j.image.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let a = &plan.jobs[0];
    assert_eq!(a.push.as_ref().unwrap().to_string(), format!("{BASE}-a"));
    assert!(
        matches!(
            &a.outputs[..],
            [crate::options::Output::Image {
                push: true,
                insecure: true,
                ..
            }]
        ),
        "the push target is an output, plain http on the loopback"
    );
    assert!(a.cache_exports[0]
        .to_string()
        .contains("registry.insecure=true"));
    assert!(plan.jobs[1].outputs.is_empty());

    let overrides = Overrides {
        images: vec!["b".into()],
        push: Some("127.0.0.1:5000/other:1".parse().unwrap()),
        ca_cert: Some("/elsewhere.pem".into()),
        ..Overrides::default()
    };
    let plan = spec.resolve(&overrides).unwrap();
    assert_eq!(plan.ca_cert.as_deref(), Some(Path::new("/elsewhere.pem")));
    assert_eq!(plan.jobs.len(), 1);
    assert_eq!(
        plan.jobs[0].push.as_ref().unwrap().to_string(),
        "127.0.0.1:5000/other:1"
    );
    let several = Overrides {
        push: overrides.push.clone(),
        ..Overrides::default()
    };
    let e = spec.resolve(&several).unwrap_err().to_string();
    assert!(e.contains("--push and --output apply to one image"), "{e}");
}

#[test]
fn an_image_from_a_dockerfile_image_is_lowered_on_the_frontends_result() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), format!("FROM {BASE}\n")).unwrap();
    // No push target on web: app is solved with it, not from its push.
    let text = "[images.web]\ndockerfile = { file = \"Dockerfile\" }\n\
         [images.app]\nfrom = \"web\"\n[[images.app.toolchain]]\nrun = \"make\"\n";
    let spec = spec_in(dir.path(), text).unwrap();
    let plan = spec.resolve(&Overrides::default()).unwrap();
    assert_eq!(plan.only(&["app".to_owned()]).images(), ["app"]);
    let names = vec!["app".to_owned()];
    let app = spec
        .lower_all(&names, &BTreeMap::new(), &LowerOptions::default())
        .unwrap()
        .remove(0);
    let ImageGraph::OnFrontend(graphs) = &app.graph else {
        panic!("not lowered on the frontend: {:?}", app.graph)
    };
    let (_, on) = &graphs[0];
    assert_eq!(on.frontend.name, DOCKERFILE_FRONTEND);
    // The session serves the Dockerfile's context and file, and app's own.
    assert!(
        app.local_dirs.contains_key("context"),
        "{:?}",
        app.local_dirs.keys()
    );
    assert!(app.local_dirs.contains_key("dockerfile"));

    // What the frontend answered: a graph and a config whose env the steps see.
    let base = crate::llb::source::local("context", &Default::default()).marshal();
    let mut config: oci_spec::image::ImageConfiguration = serde_json::from_str(
        r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
            "config":{"Env":["PATH=/opt/web/bin:/usr/bin","WEB=1"]}}"#,
    )
    .unwrap();
    let mut labelled_on = on.clone();
    labelled_on
        .labels
        .insert("strata.key".into(), "sha256:k".into());
    let llb = labelled_on.lower_on(&base, Some(&config)).unwrap();
    let make = llb.definition.ops()[llb.definition.ops().len() - 2].clone();
    let op = <crate::wire::pb::Op as prost::Message>::decode(make.as_ref()).unwrap();
    let Some(crate::wire::pb::op::Op::Exec(exec)) = op.op else {
        panic!("the last op is not the step")
    };
    let env = exec.meta.unwrap().env;
    assert!(env.contains(&"WEB=1".to_owned()), "{env:?}");
    assert!(
        env.contains(&"PATH=/opt/web/bin:/usr/bin".to_owned()),
        "{env:?}"
    );
    // The frontend's own ops come first, byte for byte.
    assert_eq!(llb.definition.ops()[0], base.ops()[0]);
    let labels = llb
        .config
        .config()
        .clone()
        .unwrap()
        .labels()
        .clone()
        .unwrap();
    assert_eq!(labels["strata.key"], "sha256:k");
    config.set_config(None);
    assert!(labelled_on.lower_on(&base, Some(&config)).is_ok());
}

#[test]
fn each_image_is_lowered_once_and_its_children_start_from_it() {
    let spec = parse(&two_images()).unwrap();
    let names = vec!["python-base".to_owned(), "app".to_owned()];
    let all = spec
        .lower_all(&names, &BTreeMap::new(), &LowerOptions::default())
        .unwrap();
    let (base, app) = (&all[0], &all[1]);
    // The child's steps start with the parent's, digest for digest.
    assert_eq!(app.steps[..base.steps.len()], base.steps[..]);
    assert!(app
        .llb()
        .unwrap()
        .definition
        .digests()
        .contains(&base.llb().unwrap().state.digest().unwrap()));
    // Every recorded step is an op of the image's graph.
    let digests = app.llb().unwrap().definition.digests();
    assert!(app.steps.iter().all(|s| digests.contains(&s.digest)));
    // One history entry per layer, each recorded once (no base config here).
    let history = json(&app.llb().unwrap().config)["history"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(history, app.steps.len());
}

/// An untrusted spec reads only beside itself: overlay copies and ca_cert
/// outside its directory (directly, by `..` or through a symlink) are
/// refused unless allowed; names and history show paths relative to the spec.
#[test]
fn a_spec_reads_only_inside_its_directory_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tmp.path()).unwrap();
    let project = root.join("project");
    let private = root.join("private");
    std::fs::create_dir_all(project.join("overlay")).unwrap();
    std::fs::create_dir_all(&private).unwrap();
    std::fs::write(private.join("ca.pem"), "").unwrap();
    std::os::unix::fs::symlink(&private, project.join("innocent")).unwrap();
    let path = project.join("strata.toml");
    for (text, key) in [
        (
            image_a("[images.a.overlay]\ncopy = { from = \"../private\", to = \"/w\" }\n"),
            "images.a.overlay.copy.from",
        ),
        (
            image_a(&format!(
                "[images.a.overlay]\ncopy = {{ from = \"{}\", to = \"/w\" }}\n",
                private.display()
            )),
            "images.a.overlay.copy.from",
        ),
        (
            image_a("[images.a.overlay]\ncopy = { from = \"innocent\", to = \"/w\" }\n"),
            "images.a.overlay.copy.from",
        ),
        (
            format!("ca_cert = \"innocent/ca.pem\"\n{}", image_a("")),
            "ca_cert",
        ),
    ] {
        std::fs::write(&path, &text).unwrap();
        let e = Spec::load(&path).unwrap_err();
        assert_eq!(e.key, key, "{e}");
        assert!(e.message.contains("--allow-path"), "{e}");
        let allowed = Spec::load_allowing(&path, std::slice::from_ref(&private)).unwrap();
        if let Some(OverlayItem::Copy {
            from: CopyFrom::Dir(dir),
            ..
        }) = allowed.image("a").unwrap().overlay.first()
        {
            assert_eq!(dir.shown, "../private");
        }
    }
    std::fs::write(
        &path,
        image_a("[images.a.overlay]\ncopy = { from = \"overlay\", to = \"/w\" }\n"),
    )
    .unwrap();
    let spec = Spec::load(&path).unwrap();
    let a = lower(&spec, "a");
    let names: Vec<&str> = a.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["[a 1/1] overlay overlay -> /w"]);
    let history = json(&a.llb().unwrap().config)["history"].to_string();
    assert!(!history.contains(&*root.display().to_string()), "{history}");
}

/// A base config as build resolves it, pinned to a made-up digest.
fn pinned(config: oci_spec::image::ImageConfiguration) -> crate::spec::BaseImage {
    let reference: ImageRef = BASE.parse().unwrap();
    crate::spec::BaseImage {
        pinned: reference.with_digest(&format!("sha256:{}", "d".repeat(64))),
        config_bytes: serde_json::to_vec(&config).unwrap().into(),
        config,
    }
}

#[test]
fn the_base_is_pulled_by_the_digest_its_config_came_from() {
    let spec = parse(&image_a("")).unwrap();
    let config = serde_json::from_value(serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .unwrap();
    let bases = BTreeMap::from([(BASE.parse::<ImageRef>().unwrap(), pinned(config))]);
    let a = spec.lower("a", &bases, &LowerOptions::default()).unwrap();
    let identifiers: Vec<String> = ops(&a)
        .into_iter()
        .filter_map(|(_, op)| match op.op {
            Some(pb::op::Op::Source(s)) => Some(s.identifier),
            _ => None,
        })
        .collect();
    assert_eq!(
        identifiers,
        [format!("docker-image://{BASE}@sha256:{}", "d".repeat(64))]
    );
}

#[test]
fn dockerfile_images_check_their_keys_and_order_after_the_spec_images_they_use() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("ARG V=1\nFROM tools AS t\nFROM {BASE} AS other\nFROM t\nRUN true\n"),
    )
    .unwrap();
    let text = format!(
        "[images.app]\ndockerfile = {{ file = \"Dockerfile\", args = {{ V = \"2\" }} }}\n\
         [images.tools]\nbase = \"{BASE}\"\n"
    );
    let spec = spec_in(dir.path(), &text).unwrap();
    let Base::Dockerfile(d) = &spec.image("app").unwrap().base else {
        panic!("a dockerfile image");
    };
    assert_eq!(d.spec_froms, ["tools"]);
    assert_eq!(d.froms.len(), 1, "{:?}", d.froms);
    assert_eq!(d.args["V"], "2");
    assert_eq!(spec.closure(&["app".into()]).unwrap(), ["tools", "app"]);

    let both =
        format!("[images.app]\nbase = \"{BASE}\"\ndockerfile = {{ file = \"Dockerfile\" }}\n");
    let e = spec_in(dir.path(), &both).unwrap_err().to_string();
    assert!(
        e.contains("images.app.dockerfile") && e.contains("remove base"),
        "{e}"
    );
    // Built on it in one solve: no push target needed.
    let from_it = format!("{text}[images.child]\nfrom = \"app\"\n");
    assert!(spec_in(dir.path(), &from_it).is_ok());
    let missing = "[images.app]\ndockerfile = { file = \"Nope\" }\n";
    let e = spec_in(dir.path(), missing).unwrap_err().to_string();
    assert!(
        e.contains("images.app.dockerfile.file") && e.contains("Nope"),
        "{e}"
    );
}

/// A registry `FROM` reaches the frontend as an input for the platform,
/// with the config as the registry served it (so the frontend resolves
/// nothing), and as a pinned `docker-image://` context for clients that
/// cannot send inputs.
#[test]
fn a_dockerfile_from_is_handed_to_the_frontend_pinned_with_its_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), format!("FROM {BASE}\n")).unwrap();
    let spec = spec_in(
        dir.path(),
        "[images.df]\ndockerfile = { file = \"Dockerfile\" }\n",
    )
    .unwrap();
    let config: oci_spec::image::ImageConfiguration = serde_json::from_value(serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .unwrap();
    let mut base = pinned(config);
    let mut served: serde_json::Value = serde_json::from_slice(&base.config_bytes).unwrap();
    served["created"] = "2026-01-01T00:00:00Z".into();
    served["config"] = serde_json::json!({ "Healthcheck": { "Test": ["CMD", "true"] } });
    base.config_bytes = serde_json::to_vec(&served).unwrap().into();
    let bases = BTreeMap::from([(BASE.parse::<ImageRef>().unwrap(), base)]);
    let options = LowerOptions {
        platform: Some("linux/amd64".parse().unwrap()),
        ..LowerOptions::default()
    };
    let df = spec.lower("df", &bases, &options).unwrap();
    let frontend = df.frontend().unwrap();
    let input = format!("{BASE}::linux/amd64");
    assert_eq!(
        frontend.attrs[&format!("context:{input}")],
        format!("input:{input}")
    );
    let metadata: serde_json::Value =
        serde_json::from_str(&frontend.attrs[&format!("input-metadata:{input}")]).unwrap();
    use base64::Engine;
    let config = base64::engine::general_purpose::STANDARD
        .decode(metadata["containerimage.config"].as_str().unwrap())
        .unwrap();
    // As the frontend keeps a config it resolved: no `created`; the rest,
    // fields oci-spec does not model too, as served.
    let handed: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert!(handed.get("created").is_none(), "{handed}");
    assert_eq!(handed["config"]["Healthcheck"]["Test"][1], "true");
    let pinned_ref = format!("docker-image://{BASE}@sha256:{}", "d".repeat(64));
    let source = frontend.inputs[&input].ops().first().cloned().unwrap();
    let op = <pb::Op as prost::Message>::decode(source.as_ref()).unwrap();
    assert!(matches!(op.op, Some(pb::op::Op::Source(s)) if s.identifier == pinned_ref));
    let plain = frontend.attrs_without_inputs();
    assert_eq!(plain[&format!("context:{BASE}")], pinned_ref);
    assert!(!plain
        .keys()
        .any(|k| k.contains("::") || k.starts_with("input-metadata:")));
}

#[test]
fn provenance_is_min_or_max_and_a_flag_overrides_it() {
    let e = err(&format!(
        "[images.a]\nbase = \"{BASE}\"\nprovenance = \"most\"\n"
    ));
    assert!(
        e.starts_with("DIR/strata.toml:3:")
            && e.contains("images.a.provenance")
            && e.contains("min or max"),
        "{e}"
    );
    let spec = parse(&format!(
        "[images.a]\nbase = \"{BASE}\"\nprovenance = \"max\"\n"
    ))
    .unwrap();
    let plan = spec.resolve(&Overrides::default()).unwrap();
    assert_eq!(
        plan.jobs[0].attest.provenance,
        Some(crate::options::ProvenanceMode::Max)
    );
    let off = Overrides {
        provenance: Some(None),
        ..Overrides::default()
    };
    assert_eq!(spec.resolve(&off).unwrap().jobs[0].attest.provenance, None);
}

#[test]
fn sbom_is_true_or_names_its_generator_and_the_default_is_resolved_once() {
    use crate::options::{Chosen, SbomGenerator};
    let sbom_of = |value: &str, overrides: &Overrides| {
        let spec = parse(&format!("[images.a]\nbase = \"{BASE}\"\nsbom = {value}\n")).unwrap();
        spec.resolve(overrides).unwrap().jobs[0].attest.sbom.clone()
    };
    let default = sbom_of("true", &Overrides::default()).unwrap();
    assert_eq!(
        default.generator.to_string(),
        crate::options::DEFAULT_SBOM_GENERATOR
    );
    assert_eq!(default.chosen, Chosen::ByDefault);
    let local: crate::reference::ImageRef =
        "127.0.0.1:5000/strata/sbom-generator:1".parse().unwrap();
    let with_local = Overrides {
        sbom_generator: Some(local.clone()),
        ..Overrides::default()
    };
    assert_eq!(sbom_of("true", &with_local).unwrap().generator, local);
    let named = sbom_of("{ generator = \"127.0.0.1:5000/gen:2\" }", &with_local).unwrap();
    assert_eq!(
        (named.generator.to_string(), named.chosen),
        ("127.0.0.1:5000/gen:2".to_owned(), Chosen::Named)
    );
    assert_eq!(sbom_of("false", &Overrides::default()), None);
    let flag_off = Overrides {
        sbom: Some(None),
        ..Overrides::default()
    };
    assert_eq!(sbom_of("true", &flag_off), None);
    let flag_on = Overrides {
        sbom: Some(Some(SbomGenerator::Default)),
        ..Overrides::default()
    };
    assert!(sbom_of("false", &flag_on).is_some());

    let e = err(&format!("[images.a]\nbase = \"{BASE}\"\nsbom = \"yes\"\n"));
    assert!(
        e.starts_with("DIR/strata.toml:3:") && e.contains("true, false or a table"),
        "{e}"
    );
    let e = err(&format!(
        "[images.a]\nbase = \"{BASE}\"\nsbom = {{ generator = \"Bad Ref\" }}\n"
    ));
    assert!(
        e.starts_with("DIR/strata.toml:3:") && e.contains("images.a.sbom.generator"),
        "{e}"
    );
    let e = err(&format!(
        "[images.a]\nbase = \"{BASE}\"\nsbom = {{ gen = \"x\" }}\n"
    ));
    assert!(
        e.contains("unknown field") || e.contains("unknown key"),
        "{e}"
    );
}
