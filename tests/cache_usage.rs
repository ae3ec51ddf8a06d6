//! `strata du` and `strata prune` against real build cache (filled with
//! buildctl until strata builds on its own).

mod common;

use common::{buildctl, stack, strata};
use serde_json::Value;

/// Builds a small image with a 4 MB layer and an 8 MB cache mount, no export.
fn fill_cache(tag: &str) {
    let s = stack();
    let dir = tempfile::tempdir().unwrap();
    let nonce = format!(
        "{tag}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {base}\n\
             RUN echo {nonce} > /nonce && dd if=/dev/zero of=/layer bs=1M count=4 status=none\n\
             RUN --mount=type=cache,target=/cache,id=strata-test-{tag} dd if=/dev/zero of=/cache/blob bs=1M count=8 status=none\n",
            base = s.base_image
        ),
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let run = buildctl(
        &s.buildkit_host,
        &[
            "build",
            "--frontend",
            "dockerfile.v0",
            "--local",
            &format!("context={d}"),
            "--local",
            &format!("dockerfile={d}"),
        ],
        None,
    );
    assert_eq!(run.code, Some(0), "buildctl failed to fill cache: {run:#?}");
}

fn du_json(addr: &str, extra: &[&str]) -> Value {
    let mut args = vec!["--addr", addr, "du", "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(strata(&args).ok()).expect("du --json is JSON")
}

/// One test, in order, because prune empties the one daemon every case shares.
#[test]
fn du_and_prune_report_real_cache() {
    let s = stack();
    fill_cache("du");

    // du: totals and records, JSON and text.
    let du = du_json(&s.buildkit_host, &[]);
    let total = du["total"].as_u64().unwrap();
    assert!(
        total >= 12_000_000,
        "at least the 4 MB layer and 8 MB cache mount: {du}"
    );
    let records = du["records"].as_array().unwrap();
    assert!(
        records
            .iter()
            .any(|r| r["record_type"] == "exec.cachemount"),
        "the cache mount is a record: {du}"
    );
    let accounted = du["reclaimable"].as_u64().unwrap()
        + du["in_use"].as_u64().unwrap()
        + du["shared"].as_u64().unwrap();
    assert!(
        accounted >= total,
        "every byte is reclaimable, in use or shared: {du}"
    );
    let text = strata(["--addr", &s.buildkit_host, "du"]).ok().to_owned();
    assert!(text.contains("Reclaimable:"), "{text}");
    assert!(text.contains("Total:"), "{text}");
    assert!(
        !text.contains("DESCRIPTION"),
        "per-record table only with -v: {text}"
    );
    let verbose = strata(["--addr", &s.buildkit_host, "du", "--verbose"])
        .ok()
        .to_owned();
    assert!(verbose.contains("DESCRIPTION"), "{verbose}");
    assert!(verbose.contains("exec.cachemount"), "{verbose}");

    // A filter narrows du and prune to one record type.
    let mounts = du_json(&s.buildkit_host, &["--filter", "type==exec.cachemount"]);
    let mounts = mounts["records"].as_array().unwrap();
    assert!(!mounts.is_empty());
    assert!(mounts.iter().all(|r| r["record_type"] == "exec.cachemount"));
    let pruned: Value = serde_json::from_str(
        strata([
            "--addr",
            &s.buildkit_host,
            "prune",
            "--filter",
            "type==exec.cachemount",
            "--json",
        ])
        .ok(),
    )
    .unwrap();
    let removed = pruned["records"].as_array().unwrap();
    assert!(!removed.is_empty(), "{pruned}");
    // The daemon's prune stream leaves record types out; match by id instead.
    let mount_ids: Vec<&Value> = mounts.iter().map(|r| &r["id"]).collect();
    assert!(
        removed.iter().all(|r| mount_ids.contains(&&r["id"])),
        "only cache mounts were pruned: {pruned}"
    );
    assert!(pruned["freed"].as_u64().unwrap() >= 8_000_000, "{pruned}");
    let after = du_json(&s.buildkit_host, &[]);
    assert!(
        after["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["record_type"] != "exec.cachemount"),
        "{after}"
    );
    assert!(
        after["total"].as_u64().unwrap() > 0,
        "other records stay: {after}"
    );

    // keep-storage above the total frees nothing.
    let kept = strata([
        "--addr",
        &s.buildkit_host,
        "prune",
        "--keep-storage",
        "100GB",
    ])
    .ok()
    .to_owned();
    assert!(kept.starts_with("Freed 0 B"), "{kept}");

    // prune --all empties the builder and says how much it freed.
    let all = strata(["--addr", &s.buildkit_host, "prune", "--all"])
        .ok()
        .to_owned();
    assert!(all.starts_with("Freed "), "{all}");
    assert!(!all.starts_with("Freed 0 B"), "{all}");
    let empty = du_json(&s.buildkit_host, &[]);
    assert_eq!(empty["reclaimable"].as_u64().unwrap(), 0, "{empty}");
}

#[test]
fn prune_flags_are_validated_by_name() {
    let run = strata(["prune", "--keep-storage", "ten"]);
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(run.stderr.contains("--keep-storage"), "{}", run.stderr);
    assert!(run.stderr.contains("not a size"), "{}", run.stderr);
    let run = strata(["prune", "--keep-duration", "soon"]);
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(run.stderr.contains("--keep-duration"), "{}", run.stderr);
}
