//! No input panics: property tests over every parser of user input (the spec,
//! sizes and durations, `--cache-to/--cache-from/--output`, image references).
//! The daemon-facing receivers (fsutil packets, the content store) have their
//! own in their modules. No daemon needed; well under a minute.

use std::path::Path;

use proptest::prelude::*;
use strata::options::{CacheExport, CacheImport, Output};
use strata::reference::ImageRef;
use strata::spec::Spec;
use strata::units::{parse_duration, parse_rfc3339, parse_size};

/// Pieces a spec is made of, to reach past the TOML parser into the checks.
const SPEC_PIECES: &[&str] = &[
    "[images.a]",
    "[images.b]",
    "[images.a.overlay]",
    "[[images.a.toolchain]]",
    "[[images.b.toolchain]]",
    "base = \"127.0.0.1:5000/x:y\"",
    "base = \"scratch\"",
    "base = \"\"",
    "base = \"a/b@sha256:00\"",
    "from = \"a\"",
    "from = \"b\"",
    "from = \"c\"",
    "platform = \"linux/arm64\"",
    "platform = \"//\"",
    "apt = [\"curl\"]",
    "apt = [\"\"]",
    "pip = [\"x==1\"]",
    "npm = { packages = [\"x\"], dir = \"/app\" }",
    "npm = 3",
    "run = \"echo hi\"",
    "run = \"\"",
    "cache = [\"/root/.cache\", \"\"]",
    "env = { A = \"$A:${B}\", B = \"${\" }",
    "copy = { from = \"src/\", to = \"/app\", exclude = [\"**\"] }",
    "copy = [{ from = \"/\", to = \"\" }]",
    "git = { url = \"https://u:t@h/r.git\", ref = \"main\", to = \"/src\" }",
    "cache_to = [\"type=local,dest=d\", \"type=\"]",
    "cache_from = [\"type=registry,ref=\"]",
    "push = \"127.0.0.1:5000/a\"",
    "ca_cert = \"x\"",
    "labels = { \"a\" = \"b\" }",
    "cmd = []",
    "entrypoint = [\"\\u0000\"]",
    "user = \"\"",
    "workdir = \"relative\"",
];

fn spec_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(SPEC_PIECES).prop_map(str::to_owned),
            1 => "[ -~]{0,30}",
        ],
        0..24,
    )
    .prop_map(|lines| lines.join("\n"))
}

fn option_value() -> impl Strategy<Value = String> {
    let keys = prop::sample::select(
        &[
            "type",
            "mode",
            "ref",
            "dest",
            "src",
            "tag",
            "digest",
            "name",
            "push",
            "compression",
            "compression-level",
            "force-compression",
            "oci-mediatypes",
            "image-manifest",
            "ignore-error",
            "registry.insecure",
            "replace",
            "",
        ][..],
    );
    let values = prop_oneof![
        prop::sample::select(
            &[
                "registry",
                "local",
                "inline",
                "oci",
                "docker",
                "image",
                "max",
                "min",
                "true",
                "zstd",
                "99999999999999999999",
                "-1",
                "",
                "127.0.0.1:5000/a:b",
                "sha256:"
            ][..]
        )
        .prop_map(str::to_owned),
        "[ -~]{0,12}",
    ];
    prop::collection::vec((keys, values, any::<bool>()), 0..6).prop_map(|parts| {
        parts
            .into_iter()
            .map(|(k, v, eq)| {
                if eq {
                    format!("{k}={v}")
                } else {
                    format!("{k}{v}")
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_spec_parser_never_panics(text in spec_text()) {
        let _ = Spec::parse(&text, Path::new("fuzz/strata.toml"));
    }

    #[test]
    fn the_spec_parser_takes_any_text(text in any::<String>()) {
        let _ = Spec::parse(&text, Path::new("strata.toml"));
    }

    #[test]
    fn sizes_and_durations_never_panic(
        number in "[0-9.]{0,25}",
        unit in "(|b|kb|MiB|gib|tb|ms|s|m|h|d|w|x|[a-z]{0,3})",
        more in "[0-9a-z.]{0,8}",
    ) {
        let text = format!("{number}{unit}{more}");
        let _ = parse_size(&text);
        let _ = parse_duration(&text);
    }

    #[test]
    fn cache_and_output_options_never_panic(value in option_value()) {
        if let Ok(export) = value.parse::<CacheExport>() {
            // What parses prints back to something that parses the same.
            prop_assert_eq!(export.to_string().parse::<CacheExport>().ok(), Some(export));
        }
        if let Ok(import) = value.parse::<CacheImport>() {
            prop_assert_eq!(import.to_string().parse::<CacheImport>().ok(), Some(import));
        }
        let _ = value.parse::<Output>();
    }

    #[test]
    fn times_never_panic(text in "[0-9]{1,20}-[0-9]{1,3}-[0-9]{1,3}[Tt][0-9]{1,3}:[0-9]{1,3}:[0-9.]{1,6}(Z|[+-][0-9]{1,20}:[0-9]{1,20}|)") {
        let _ = parse_rfc3339(&text);
    }

    #[test]
    fn command_line_values_are_read_whole_or_refused(text in "[a-z=,/:.@\\x00 -]{0,24}") {
        if let Ok((k, v)) = strata::values::parse_pair(&text) {
            prop_assert_eq!(format!("{k}={v}"), text.clone());
        }
        if let Ok((k, v)) = strata::values::parse_label(&text) {
            prop_assert!(!k.is_empty() && !k.contains('\0') && !v.contains('\0'));
        }
        if let Ok((id, src)) = strata::values::parse_secret(&text) {
            prop_assert!(!id.is_empty() && !src.as_os_str().is_empty());
            let said = format!("id={}", id);
            prop_assert!(text.contains(&said));
        }
        if let Ok(addr) = text.parse::<strata::Addr>() {
            let _ = addr.to_string();
        }
        let _ = text.parse::<strata::llb::Platform>();
    }

    #[test]
    fn builders_files_never_panic(text in "(\\[\\[node\\]\\]\n|addr = \"[a-z:/0-9.]{0,12}\"\n|weight = -?[0-9.e]{1,5}\n|name = \"[a-z]{0,3}\"\n|tlsdir = \"[a-z]{0,3}\"\n|[a-z =\"\\[\\]]{0,6}\n){0,8}") {
        if let Ok(nodes) = strata::pool::builders::parse(Path::new("b.toml"), &text) {
            prop_assert!(!nodes.is_empty());
            prop_assert!(nodes.iter().all(|n| n.weight > 0.0 && n.weight.is_finite()));
        }
    }

    #[test]
    fn image_references_never_panic(text in "[a-z0-9:/@._-]{0,40}") {
        if let Ok(r) = text.parse::<ImageRef>() {
            prop_assert_eq!(r.to_string().parse::<ImageRef>().ok(), Some(r));
        }
    }
}

/// Values too large for their type are a usage error (exit 2), not a panic.
#[test]
fn overflowing_flag_values_are_usage_errors() {
    for args in [
        &["prune", "--keep-duration", "99999999999999999999w"][..],
        &["prune", "--keep-storage", "99999999999999999999TB"],
        &["--timeout", "1e400s", "info"],
        &["build", "--max-parallel", "0"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .env_remove("BUILDKIT_HOST")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: invalid value"),
            "{args:?}: {stderr}"
        );
    }
}
