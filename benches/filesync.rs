//! Context upload: strata's FileSync sender against buildctl's, sending the
//! same directory (20,000 files, 500 MB by default) to the same daemon, runs
//! alternating, the daemon's record of earlier uploads pruned before each run.
//! Reports median wall time, throughput and peak RSS of each client.
//!
//! `cargo bench --bench filesync` (needs `eval "$(scripts/daemon.sh up)"`);
//! STRATA_BENCH_FILES / STRATA_BENCH_MB / STRATA_BENCH_RUNS change the size.
//! Under `cargo test` it makes a small tree and checks both clients send it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use strata::client::PruneOptions;
use strata::llb::source::{self, LocalOptions};
use strata::llb::{Copy, FileAction, State};
use strata::options::LocalDir;
use strata::solve::{self, progress::Quiet, SolveOpt};
use strata::{Addr, Client, TlsOptions};

mod common;
use common::{env_or, make_tree};

/// Peak RSS of this process since the last reset, in KiB.
fn own_peak_kib() -> u64 {
    vm_hwm(&std::fs::read_to_string("/proc/self/status").unwrap_or_default())
}

fn reset_own_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

async fn forget_uploads(client: &Client) {
    let options = PruneOptions {
        all: true,
        filters: vec!["type==source.local".into()],
        ..PruneOptions::default()
    };
    client.prune(&options, |_| {}).await.expect("prune");
}

async fn strata_upload(
    client: &Client,
    dir: &Path,
    definition: &strata::llb::Definition,
) -> (f64, u64) {
    let opt = SolveOpt {
        local_dirs: BTreeMap::from([(
            "ctx".to_owned(),
            LocalDir {
                path: dir.to_owned(),
                excludes: vec![],
            },
        )]),
        ..SolveOpt::default()
    };
    reset_own_peak();
    let t = Instant::now();
    solve::solve(client, definition, &opt, &mut Quiet)
        .await
        .expect("strata upload");
    (t.elapsed().as_secs_f64(), own_peak_kib())
}

/// Runs buildctl and returns its wall time and its own peak RSS (KiB), read
/// from its /proc status while it runs (rusage would count what the child
/// shared with this process before exec).
fn buildctl_upload(buildctl: &Path, addr: &str, dir: &Path, llb: &Path) -> (f64, u64) {
    let stdin = std::fs::File::open(llb).unwrap();
    let t = Instant::now();
    let mut child = std::process::Command::new(buildctl)
        .args(["--addr", addr, "build", "--progress", "quiet", "--local"])
        .arg(format!("ctx={}", dir.display()))
        .stdin(stdin)
        .spawn()
        .expect("running buildctl");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for buildctl") {
            break s;
        }
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            peak = peak.max(vm_hwm(&text));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let wall = t.elapsed().as_secs_f64();
    assert!(status.success(), "buildctl failed: {status}");
    (wall, peak)
}

fn vm_hwm(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (files, mb, runs) = if full {
        (
            env_or("STRATA_BENCH_FILES", 20_000),
            env_or("STRATA_BENCH_MB", 500),
            env_or("STRATA_BENCH_RUNS", 3),
        )
    } else {
        (200, 2, 1)
    };
    let addr = std::env::var("BUILDKIT_HOST")
        .expect("BUILDKIT_HOST is not set: run eval \"$(scripts/daemon.sh up)\" first");
    let buildctl = std::env::var("STRATA_BUILDCTL").unwrap_or_else(|_| "buildctl".into());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tree");
    eprintln!("filesync bench: {files} files, {mb} MB, {runs} run(s) each, alternating");
    make_tree(&dir, files, mb << 20);

    let ctx = source::local("ctx", &LocalOptions::default());
    let definition = State::scratch()
        .file(
            vec![FileAction::copy(Copy::new(&ctx, "/", "/ctx"))],
            Some("copy context"),
        )
        .marshal();
    let llb = tmp.path().join("upload.llb");
    std::fs::File::create(&llb)
        .unwrap()
        .write_all(&definition.to_bytes())
        .unwrap();

    // The runtime the strata binary runs on, allocator tuning included.
    let runtime = strata::runtime::new().unwrap();
    let client = runtime.block_on(async {
        Client::connect(addr.parse::<Addr>().unwrap(), &TlsOptions::default())
            .await
            .expect("connecting")
    });
    let (mut ours, mut theirs, mut our_rss, mut their_rss) = (Vec::new(), Vec::new(), 0, 0);
    for run in 1..=runs {
        runtime.block_on(forget_uploads(&client));
        let (wall, rss) = runtime.block_on(strata_upload(&client, &dir, &definition));
        ours.push(wall);
        our_rss = our_rss.max(rss);
        runtime.block_on(forget_uploads(&client));
        let (wall, rss) = buildctl_upload(Path::new(&buildctl), &addr, &dir, &llb);
        theirs.push(wall);
        their_rss = their_rss.max(rss);
        eprintln!(
            "run {run}: strata {:.2}s, buildctl {:.2}s",
            ours[run - 1],
            theirs[run - 1]
        );
    }
    let (s, b) = (median(ours), median(theirs));
    let mbps = |secs: f64| mb as f64 / secs;
    println!("context upload ({files} files, {mb} MB), median of {runs}:");
    println!(
        "  strata   {s:7.2}s  {:7.1} MB/s  peak RSS {:>7} KiB",
        mbps(s),
        our_rss
    );
    println!(
        "  buildctl {b:7.2}s  {:7.1} MB/s  peak RSS {:>7} KiB",
        mbps(b),
        their_rss
    );
    println!(
        "  time ratio strata/buildctl: {:.2}   RSS ratio: {:.2}",
        s / b,
        our_rss as f64 / their_rss.max(1) as f64
    );
}
