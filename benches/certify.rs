//! The cost of certification: one population evaluation (loss and explicit gradient at a
//! state `W in R^{d x m}`, `E`) in plain `f64` (`reduced::evaluate_explicit`, what `predhead
//! eval` runs), against the same evaluation in [`predhead::interval::Interval`] arithmetic at
//! 53 and 106 bits (`certify::certify_eval`, what `predhead eval --certify` runs), and the
//! 256-bit MPFR point evaluation (`eval --precision 256`) for scale. `d = 100`, `m = 2, 4`,
//! batchnorm with stop-gradient, the paper's head. Run:
//! `cargo bench --bench certify -- --warm-up-time 1 --measurement-time 3`.

use criterion::{criterion_group, criterion_main, Criterion};
use predhead::certify::{certify_eval, ExactInput};
use predhead::moments::population::Constants;
use predhead::reduced::evaluate_explicit;
use predhead::setting::{HeadMode, Model, Normalization, Setting};
use predhead::state::State;
use rug::Float;
use std::hint::black_box;

fn setting(m: usize) -> Setting {
    Setting {
        dim: 100,
        patches: 16,
        feature_patches: 5,
        alpha: [4.0, 1.0],
        noise_std: 1.0,
        neurons: m,
    }
}

/// A generic state: entries from a fixed pattern, small off-diagonal head entries.
fn state(m: usize, d: usize) -> State {
    let f = |j: usize, i: usize| ((j * 7 + i * 3) % 11) as f64 / 11.0 - 0.5;
    let mut st = State::with_identity_head(
        (0..m)
            .map(|j| (0..d).map(|i| f(j, i) / (d as f64).sqrt()).collect())
            .collect(),
    );
    for j in 0..m {
        for r in 0..m {
            if j != r {
                st.e[j][r] = 0.05 * f(j, r);
            }
        }
    }
    st
}

fn bench(c: &mut Criterion) {
    let model = Model {
        head: HeadMode::IdentityOffdiag,
        normalization: Normalization::Batchnorm,
        stop_gradient: true,
    };
    for m in [2usize, 4] {
        let s = setting(m);
        let st = state(m, s.dim as usize);
        let k = Constants::<f64>::new(&s, ());
        c.bench_function(&format!("eval f64 m={m} d=100"), |b| {
            b.iter(|| evaluate_explicit::<f64>(black_box(&k), &model, black_box(&st), ()).unwrap())
        });
        let input = ExactInput::from_f64(&s, &st);
        for bits in [53u32, 106] {
            c.bench_function(&format!("eval certify {bits} bits m={m} d=100"), |b| {
                b.iter(|| certify_eval(black_box(&s), &model, black_box(&input), bits).unwrap())
            });
        }
        let kf = Constants::<Float>::new(&s, 256);
        c.bench_function(&format!("eval mpfr 256 m={m} d=100"), |b| {
            b.iter(|| {
                evaluate_explicit::<Float>(black_box(&kf), &model, black_box(&st), 256).unwrap()
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
