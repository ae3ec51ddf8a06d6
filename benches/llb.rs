//! LLB generation and marshalling for a large graph: 2,000 toolchain steps,
//! each with the apt cache mounts, then a copy from a local source. The
//! target is "cheap enough to never matter next to a build".

use criterion::{criterion_group, criterion_main, Criterion};
use strata::llb::source::{self, LocalOptions};
use strata::llb::{Copy, FileAction, Platform, Run, State};
use strata::tools::Tool;

fn graph(steps: usize) -> State {
    let platform = Platform::host();
    let mut state = source::image(&"docker.io/library/debian:bookworm".parse().unwrap(), None)
        .platform(platform.clone());
    for i in 0..steps {
        state = state.env("STEP", &i.to_string()).run(
            Run::shell(&format!("echo step {i} >> /steps.txt"))
                .mounts(Tool::Apt.cache_mounts(&platform))
                .named(&format!("[bench {i}/{steps}] step")),
        );
    }
    let local = source::local("ctx", &LocalOptions::default());
    state.file(
        vec![FileAction::copy(Copy::new(&local, "/", "/ctx"))],
        Some("overlay"),
    )
}

fn bench(c: &mut Criterion) {
    c.bench_function("build a 2000-step graph", |b| b.iter(|| graph(2000)));
    let state = graph(2000);
    c.bench_function("marshal a 2000-step graph", |b| {
        b.iter(|| state.marshal().to_bytes())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
