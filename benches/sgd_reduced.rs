//! Reduced SGD (`derivations/sgd_reduced.md`): steps per second at `d = 1e2 .. 1e12` (flat in
//! `d`), and one explicit step beside one reduced step at `d = 1024`, `N = 512`, `P = 16`,
//! `m = 2` (batch norm, stop-gradient, the paper's head), on 2 threads.
//!
//! Run: `cargo bench --bench sgd_reduced -- --warm-up-time 1 --measurement-time 3`.
//! Figures in `benches/README.md`, section "Reduced SGD".

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use predhead::config::parse_config;
use predhead::setting::Config;
use predhead::sgd::Sgd;
use predhead::sgd_reduced::ReducedSgd;
use std::hint::black_box;
use std::time::Duration;

/// The benchmark configuration at dimension `d`; `lr = 1e-3 / sqrt(d)` keeps the state
/// bounded for any number of iterations (the cost does not depend on the values).
fn config(d: u64) -> Config {
    parse_config(&format!(
        "[setting]\ndim = {d}\npatches = 16\nfeature_patches = 4\nalpha = [4.0, 1.0]\n\
         noise_std = 1.0\nneurons = 2\n[model]\nhead = \"identity-offdiag\"\n\
         normalization = \"batchnorm\"\nstop_gradient = true\n[training]\nlr = {}\n\
         batch = 512\nsteps = 1000000000\n",
        1e-3 / (d as f64).sqrt()
    ))
    .expect("config")
}

fn bench(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("thread pool");
    let mut g = c.benchmark_group("sgd_reduced");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for d in [100u64, 10_000, 1_000_000, 1_000_000_000, 1_000_000_000_000] {
        let cfg = config(d);
        let mut sgd = ReducedSgd::from_seed(&cfg, 1, 1).expect("reduced");
        g.bench_function(BenchmarkId::new("reduced-step", d), |b| {
            b.iter(|| pool.install(|| black_box(sgd.step().expect("step"))))
        });
    }
    let cfg = config(1024);
    let state = predhead::init::explicit(&cfg.setting, 1).expect("init");
    let mut sgd = Sgd::new(&cfg, state, 1).expect("explicit");
    g.bench_function(BenchmarkId::new("explicit-step", 1024), |b| {
        b.iter(|| pool.install(|| black_box(sgd.step().expect("step"))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
