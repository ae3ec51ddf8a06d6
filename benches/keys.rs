//! Content-key hashing of a local directory (what `strata key` and every
//! `strata build` do before anything else): 20,000 files / 500 MB by default.
//!
//! - **first**: no stat cache, every file read and hashed (the files were
//!   just written, so they come from the page cache: this is hashing speed,
//!   shown beside reading the same bytes without hashing);
//! - **warm**: the stat cache the first run left — only `stat` calls.
//!
//! `cargo bench --bench keys`; STRATA_BENCH_FILES / STRATA_BENCH_MB /
//! STRATA_BENCH_RUNS change the size. Under `cargo test` a small tree.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use strata::keys::tree_digest;
use strata::options::LocalDir;

mod common;
use common::{env_or, make_tree};

/// Reads every file under `dir` once, as a baseline for the first hash.
fn read_all(dir: &Path) -> u64 {
    let mut total = 0;
    let mut buf = vec![0u8; 1 << 20];
    for sub in std::fs::read_dir(dir).unwrap() {
        for file in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            let mut f = std::fs::File::open(file.unwrap().path()).unwrap();
            while let Ok(n @ 1..) = f.read(&mut buf) {
                total += n as u64;
            }
        }
    }
    total
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (files, mb, runs) = if full {
        (
            env_or("STRATA_BENCH_FILES", 20_000),
            env_or("STRATA_BENCH_MB", 500),
            env_or("STRATA_BENCH_RUNS", 5),
        )
    } else {
        (200, 2, 2)
    };
    let tree = tempfile::tempdir().unwrap();
    let caches = tempfile::tempdir().unwrap();
    make_tree(tree.path(), files, mb << 20);
    // Files younger than the stat cache's racy window are never cached.
    std::thread::sleep(Duration::from_millis(2_100));
    let dir = LocalDir {
        path: tree.path().to_owned(),
        excludes: Vec::new(),
    };

    let t = Instant::now();
    let bytes = read_all(tree.path());
    let read = t.elapsed();
    let t = Instant::now();
    let first = tree_digest(&dir, Some(caches.path())).unwrap();
    let hashed = t.elapsed();
    let warm: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            assert_eq!(tree_digest(&dir, Some(caches.path())).unwrap(), first);
            t.elapsed()
        })
        .collect();
    let mbps = |d: Duration| bytes as f64 / (1 << 20) as f64 / d.as_secs_f64();
    println!("content-key hashing, {files} files, {mb} MB, {runs} warm runs");
    println!(
        "  read only (1 thread):    {:>8.1} ms  {:>7.0} MB/s",
        read.as_secs_f64() * 1e3,
        mbps(read)
    );
    println!(
        "  first hash (no cache):  {:>8.1} ms  {:>7.0} MB/s",
        hashed.as_secs_f64() * 1e3,
        mbps(hashed)
    );
    println!(
        "  warm (stat cache):      {:>8.1} ms  median (min {:.1}, max {:.1})",
        median(warm.clone()).as_secs_f64() * 1e3,
        warm.iter().min().unwrap().as_secs_f64() * 1e3,
        warm.iter().max().unwrap().as_secs_f64() * 1e3
    );
}
