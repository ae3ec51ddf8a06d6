//! strata used as a library (examples/local_cache.rs): a graph built with the
//! `llb` module, solved with a local cache export, the builder emptied, then
//! solved again importing that cache — the step comes back from it.

mod common;

#[path = "../examples/local_cache.rs"]
mod local_cache;

use common::stack;
use strata::{Addr, Client, TlsOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_example_exports_and_imports_a_local_cache() {
    let s = stack();
    let client = Client::connect(
        s.buildkit_host.parse::<Addr>().unwrap(),
        &TlsOptions::default(),
    )
    .await
    .expect("connecting to the test daemon");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let marker = strata::ids::random_id();
    let outcome = local_cache::run(&client, &s.base_image, &marker, cache.clone(), true)
        .await
        .unwrap_or_else(|e| panic!("the example failed: {e}"));
    assert!(!outcome.first_cached, "a new marker runs the step");
    assert!(
        outcome.second_cached,
        "after the prune, the step is restored from the local cache"
    );
    assert!(outcome.exported_bytes.is_some_and(|b| b > 0), "{outcome:?}");
    assert!(
        cache.join("index.json").is_file(),
        "index.json written after success"
    );
}
