//! Time of one exact population evaluation (`moments::population::evaluate`: moments, loss
//! and gradient in reduced coordinates) in `f64` at `m = 2, 4, 8` and in 256-bit MPFR at
//! `m = 2`; `evaluate_into` reuses one buffer (no allocation). `evaluate_into dual9 m=2` is
//! one forward-mode pass on `Dual<9>` (value and 9 tangents: `a`, `b`, the Gram block and
//! the off-diagonal head entries seeded), the pass the flow's exact Jacobian makes. Run:
//! `cargo bench --bench moments`.

use criterion::{criterion_group, criterion_main, Criterion};
use predhead::flow::dual::Dual;
use predhead::moments::population::{evaluate, evaluate_into, Constants, Evaluation, Reduced};
use predhead::setting::{HeadMode, Model, Normalization, Setting};
use predhead::square::Square;
use rug::Float;
use std::hint::black_box;

fn setting(m: usize) -> Setting {
    Setting {
        dim: 1000,
        patches: 16,
        feature_patches: 5,
        alpha: [4.0, 1.0],
        noise_std: 1.0,
        neurons: m,
    }
}

/// A generic mid-training state: both features partly learned, a noise Gram block with
/// off-diagonal entries, a head with small off-diagonal entries.
fn state(m: usize) -> Reduced<f64> {
    let f = |j: usize, k: usize| ((j * 7 + k * 3) % 11) as f64 / 11.0;
    Reduced {
        a: (0..m).map(|j| 0.3 + 0.5 * f(j, 1)).collect(),
        b: (0..m).map(|j| 0.1 + 0.4 * f(j, 2)).collect(),
        gram: Square::from_fn(m, |j, k| {
            if j == k {
                0.5 + 0.1 * f(j, 0)
            } else {
                0.02 * (f(j.min(k), j.max(k)) - 0.5)
            }
        }),
        e: Square::from_fn(m, |j, r| if j == r { 1.0 } else { 0.05 * f(j, r) }),
    }
}

/// The `m = 2` state on `Dual<9>`, every free coordinate seeded: `a` (0-1), `b` (2-3),
/// `G_00, G_01 = G_10, G_11` (4-6), `E_01, E_10` (7-8).
fn dual_state(x: &Reduced<f64>) -> Reduced<Dual<9>> {
    let var = |v: f64, k: usize| Dual::<9>::variable(v, k);
    Reduced {
        a: vec![var(x.a[0], 0), var(x.a[1], 1)],
        b: vec![var(x.b[0], 2), var(x.b[1], 3)],
        gram: Square::from_fn(2, |i, j| var(*x.gram.at(i, j), 4 + i + j)),
        e: Square::from_fn(2, |i, j| {
            if i == j {
                Dual::constant(*x.e.at(i, j))
            } else {
                var(*x.e.at(i, j), 7 + i)
            }
        }),
    }
}

fn model() -> Model {
    Model {
        head: HeadMode::IdentityOffdiag,
        normalization: Normalization::Batchnorm,
        stop_gradient: true,
    }
}

fn bench(c: &mut Criterion) {
    for m in [2usize, 4, 8] {
        let k = Constants::<f64>::new(&setting(m), ());
        let x = state(m);
        let model = model();
        c.bench_function(&format!("evaluate f64 m={m}"), |b| {
            b.iter(|| evaluate(black_box(&k), black_box(&model), black_box(&x)).unwrap())
        });
        let mut out = Evaluation::zeros(m, ());
        c.bench_function(&format!("evaluate_into f64 m={m}"), |b| {
            b.iter(|| {
                evaluate_into(black_box(&k), black_box(&model), black_box(&x), &mut out).unwrap();
                black_box(&out.loss);
            })
        });
    }
    let m = 2;
    let k = Constants::<Dual<9>>::new(&setting(m), ());
    let xd = dual_state(&state(m));
    let mut out = Evaluation::zeros(m, ());
    c.bench_function("evaluate_into dual9 m=2", |b| {
        b.iter(|| {
            evaluate_into(black_box(&k), black_box(&model()), black_box(&xd), &mut out).unwrap();
            black_box(&out.loss);
        })
    });
    let k = Constants::<Float>::new(&setting(m), 256);
    let x64 = state(m);
    let lift = |s: &Square<f64>| Square::from_fn(m, |i, j| Float::with_val(256, *s.at(i, j)));
    let x = Reduced {
        a: x64.a.iter().map(|v| Float::with_val(256, *v)).collect(),
        b: x64.b.iter().map(|v| Float::with_val(256, *v)).collect(),
        gram: lift(&x64.gram),
        e: lift(&x64.e),
    };
    let model = model();
    c.bench_function("evaluate mpfr256 m=2", |b| {
        b.iter(|| evaluate(black_box(&k), black_box(&model), black_box(&x)).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
