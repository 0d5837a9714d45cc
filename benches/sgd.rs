//! SGD throughput in patch-coordinates per second (`N P d` per step), beside the raw rate of
//! standard-normal generation (ChaCha8 + `rand_distr::StandardNormal`), on 1 and 2 threads.
//!
//! Run: `cargo bench --bench sgd` (criterion reports "elem/s" = coordinates per second).
//! Environment `SGD_BENCH_DIM`, `SGD_BENCH_BATCH` override the step's `d` and `N`.
//! The figures are recorded in benches/README.md, "SGD, explicit engine".

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use predhead::data;
use predhead::setting::{HeadMode, Model, Normalization, Setting};
use predhead::sgd::{batch_gradient, Kernel};
use predhead::state::State;
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Duration;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
}

/// Raw generation: `chunks` noise patches of `len` coordinates, each from its own stream
/// through `data::fill_noise` (ChaCha8 + `StandardNormal`), exactly the sampler's work
/// without any arithmetic on the result.
fn raw_normals(chunks: usize, len: usize) -> f64 {
    (0..chunks)
        .into_par_iter()
        .map_init(
            || vec![0.0; len],
            |buf, c| {
                let mut rng = data::noise_rng(1, 0, c as u64, 0);
                data::fill_noise(&mut rng, 1.0, buf);
                buf[len - 1]
            },
        )
        .sum()
}

fn bench(c: &mut Criterion) {
    let d = env_or("SGD_BENCH_DIM", 1024);
    let n = env_or("SGD_BENCH_BATCH", 256);
    let patches = 8;
    let setting = Setting {
        dim: d as u64,
        patches,
        feature_patches: 2,
        alpha: [4.0, 1.0],
        noise_std: 1.0,
        neurons: 2,
    };
    let w: Vec<Vec<f64>> = (0..2)
        .map(|j| {
            let mut rng = data::stream_rng(data::Domain::Aux, 5, 0, j);
            data::standard_normals(&mut rng, d)
                .into_iter()
                .map(|x| x / (d as f64).sqrt())
                .collect()
        })
        .collect();
    let state = State::with_identity_head(w);
    let coords = (n * patches * d) as u64;

    let mut g = c.benchmark_group("sgd");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Elements(coords));
    for threads in [1usize, 2] {
        let p = pool(threads);
        g.bench_function(BenchmarkId::new("raw-normals", threads), |b| {
            b.iter(|| p.install(|| black_box(raw_normals(n * patches, d))))
        });
        for (name, kernel, sg) in [
            ("step-fused", Kernel::Fused, true),
            ("step-regenerate", Kernel::Regenerate, true),
            ("step-fused-nosg", Kernel::Fused, false),
        ] {
            let model = Model {
                head: HeadMode::IdentityOffdiag,
                normalization: Normalization::Batchnorm,
                stop_gradient: sg,
            };
            let mut step = 0u64;
            g.bench_function(BenchmarkId::new(name, threads), |b| {
                b.iter(|| {
                    step += 1;
                    p.install(|| {
                        black_box(batch_gradient(&setting, &model, &state, 7, step, n, kernel))
                            .expect("gradient")
                    })
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
