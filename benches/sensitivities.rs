//! The cost of `--sensitivities` relative to the plain run: the plain flow
//! (`flow::integrate`, default tolerances, to `t_end`, no companion run) against the
//! augmented run of `flow::sensitivity::sensitivities` with `k = 1, 2, 7` parameters, at
//! `d = 1e2` and `1e6` (`m = 2`, the paper's head). Goal (issue 23): at most `2 + k/4`.
//!
//! Run: `cargo bench --bench sensitivities -- --warm-up-time 1 --measurement-time 3`.
//! Figures: benches/README.md, "Sensitivities".

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use predhead::config::parse_config;
use predhead::flow::sensitivity::{sensitivities, Parameter, SensitivityOptions};
use predhead::flow::{integrate, Options};
use predhead::setting::Config;
use std::hint::black_box;

fn config(dim: u64) -> Config {
    parse_config(&format!(
        "[setting]\ndim = {dim}\npatches = 8\nfeature_patches = 2\nalpha = [2.0, 1.0]\n\
         noise_std = 1.0\nneurons = 2\n[model]\nhead = \"identity-offdiag\"\n\
         normalization = \"batchnorm\"\nstop_gradient = true\n\
         [training]\nlr = 1e-3\nlr_head = 2e-4\n"
    ))
    .expect("bench config")
}

fn bench(c: &mut Criterion) {
    let params = [
        Parameter::LnD,
        Parameter::Alpha1,
        Parameter::Alpha2,
        Parameter::NoiseStd,
        Parameter::HeadRatio,
        Parameter::P0Ratio,
        Parameter::LnDFamily,
    ];
    let mut g = c.benchmark_group("sensitivities");
    for dim in [100u64, 1_000_000] {
        let cfg = config(dim);
        let x0 = predhead::init::reduced(&cfg.setting, 0).expect("init");
        let mut opts = Options::new(&cfg);
        opts.stop_at_t_end = true;
        g.bench_with_input(BenchmarkId::new("plain", dim), &dim, |b, _| {
            b.iter(|| black_box(integrate(&cfg, &x0, &opts, &mut |_, _| Ok(())).expect("flow")))
        });
        let so = SensitivityOptions::from_options(&opts);
        for k in [1usize, 2, 7] {
            g.bench_with_input(BenchmarkId::new(format!("k{k}"), dim), &dim, |b, _| {
                b.iter(|| {
                    black_box(sensitivities(&cfg, &x0, true, &params[..k], &so).expect("sens"))
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
