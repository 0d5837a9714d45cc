//! `f64` against 256-bit MPFR: the same generic code (`evaluate`, `correlation`, `opt`) at
//! both precisions, on the same `f64` inputs lifted exactly (`derivations/population.md`,
//! Section "Numerics").
//!
//! Error measure: normwise relative error per block, `max_i |x_i - X_i| / max_i |X_i|`
//! (`X` the MPFR value) for each of the blocks `loss`, `grad_a`, `grad_b`, `noise_coef`
//! (`Sigma`), `grad_e`. Why per block and normwise: the blocks have different units and
//! can differ in size by many orders of magnitude (with `alpha1 / alpha2 = 1e3`, `grad_b`
//! is ~1e-18 of `grad_a`), so each block gets its own scale; within a block the flow uses
//! the vector as a direction, and entries that vanish by structure (e.g. `dL/dE` at a
//! pure-feature state with `E = I`, or the untrained diagonal) make a componentwise
//! measure meaningless. The bound is `1e-12` for every block.

use predhead::data::{standard_normals, stream_rng, Domain};
use predhead::moments::population::{correlation, evaluate, opt, Constants, Reduced};
use predhead::setting::{HeadMode, Model, Normalization, Setting};
use predhead::square::Square;
use rug::{Float, Rational};

const PREC: u32 = 256;

fn models() -> Vec<Model> {
    let mut out = Vec::new();
    for head in HeadMode::ALL {
        for normalization in Normalization::ALL {
            for stop_gradient in [true, false] {
                out.push(Model {
                    head,
                    normalization,
                    stop_gradient,
                });
            }
        }
    }
    out
}

/// A reduced state in `f64`: feature coordinates `feat * N(0,1)` (per neuron scale),
/// noise parts `noise * N(0,1)` in `d - 2 = nd` dimensions (Gram computed in `f64`, then
/// used as exact input), head `I + offdiag * N(0,1)` (diagonal perturbed by `diag`).
struct Spec {
    m: usize,
    /// Noise dimension `d - 2` (the rank bound of the Gram block).
    nd: usize,
    feat: Vec<[f64; 2]>,
    noise: Vec<f64>,
    offdiag: f64,
    diag: f64,
}

fn state(spec: &Spec, seed: u64) -> Reduced<f64> {
    let m = spec.m;
    let nd = spec.nd;
    let mut rng = stream_rng(Domain::Aux, seed, 1, 0);
    let z = standard_normals(&mut rng, 2 * m + nd * m + m * m);
    let u: Vec<Vec<f64>> = (0..m)
        .map(|j| {
            (0..nd)
                .map(|i| spec.noise[j] * z[2 * m + j * nd + i])
                .collect()
        })
        .collect();
    let gram = Square::from_fn(m, |j, k| u[j].iter().zip(&u[k]).map(|(x, y)| x * y).sum());
    let e = Square::from_fn(m, |j, r| {
        let x = z[2 * m + nd * m + j * m + r];
        if j == r {
            1.0 + spec.diag * x
        } else {
            spec.offdiag * x
        }
    });
    Reduced {
        a: (0..m).map(|j| spec.feat[j][0] * z[2 * j]).collect(),
        b: (0..m).map(|j| spec.feat[j][1] * z[2 * j + 1]).collect(),
        gram,
        e,
    }
}

fn lift(x: &Reduced<f64>) -> Reduced<Float> {
    let f = |v: &f64| Float::with_val(PREC, *v);
    let sq = |s: &Square<f64>| Square::from_fn(s.n(), |i, j| f(s.at(i, j)));
    Reduced {
        a: x.a.iter().map(f).collect(),
        b: x.b.iter().map(f).collect(),
        gram: sq(&x.gram),
        e: sq(&x.e),
    }
}

/// `max |x - X| / max |X|`; 0 when both blocks are identically zero.
fn block_err(x: &[f64], big: &[Float]) -> f64 {
    let mut diff = Float::with_val(PREC, 0);
    let mut scale = Float::with_val(PREC, 0);
    for (a, b) in x.iter().zip(big) {
        let d = Float::with_val(PREC, b - *a).abs();
        if d > diff {
            diff = d;
        }
        let s = Float::with_val(PREC, b.abs_ref());
        if s > scale {
            scale = s;
        }
    }
    if diff == 0 {
        0.0
    } else {
        (diff / scale).to_f64()
    }
}

/// The per-block errors of `evaluate` in `f64` against 256-bit MPFR:
/// `[loss, grad_a, grad_b, noise_coef, grad_e]`.
fn errors(setting: &Setting, model: &Model, x: &Reduced<f64>) -> [f64; 5] {
    let k64 = Constants::<f64>::new(setting, ());
    let kmp = Constants::<Float>::new(setting, PREC);
    let a = evaluate(&k64, model, x).unwrap();
    let b = evaluate(&kmp, model, &lift(x)).unwrap();
    [
        block_err(&[a.loss], &[b.loss]),
        block_err(&a.grad_a, &b.grad_a),
        block_err(&a.grad_b, &b.grad_b),
        block_err(a.noise_coef.entries(), b.noise_coef.entries()),
        block_err(a.grad_e.entries(), b.grad_e.entries()),
    ]
}

fn setting(alpha: [f64; 2], m: usize, p: usize, p0: usize) -> Setting {
    Setting {
        dim: 7,
        patches: p,
        feature_patches: p0,
        alpha,
        noise_std: 1.0,
        neurons: m,
    }
}

/// The state families: generic, alpha ratio 1e3, tiny and large weights, mixed scales,
/// near-identity heads, near pure-feature states (noise 1e-6) in the "both features" and
/// the "collapse" configurations.
fn families() -> Vec<(&'static str, Setting, Spec)> {
    let mut out = Vec::new();
    for m in [2usize, 3, 4] {
        let s = setting([2.0, 1.0], m, 6, 2);
        out.push((
            "generic",
            s.clone(),
            Spec {
                m,
                nd: 5,
                feat: vec![[0.7, 0.7]; m],
                noise: vec![0.4; m],
                offdiag: 0.2,
                diag: 0.1,
            },
        ));
        out.push((
            "singular Gram (d - 2 = 1)",
            s.clone(),
            Spec {
                m,
                nd: 1,
                feat: vec![[0.7, 0.7]; m],
                noise: vec![0.6; m],
                offdiag: 0.2,
                diag: 0.1,
            },
        ));
        out.push((
            "alpha ratio 1e3",
            setting([10.0, 0.01], m, 8, 3),
            Spec {
                m,
                nd: 5,
                feat: vec![[0.5, 0.9]; m],
                noise: vec![0.3; m],
                offdiag: 0.1,
                diag: 0.05,
            },
        ));
        out.push((
            "tiny weights 1e-6",
            s.clone(),
            Spec {
                m,
                nd: 5,
                feat: vec![[1e-6, 1e-6]; m],
                noise: vec![1e-6; m],
                offdiag: 0.1,
                diag: 0.05,
            },
        ));
        out.push((
            "large weights 1e2",
            s.clone(),
            Spec {
                m,
                nd: 5,
                feat: vec![[1e2, 1e2]; m],
                noise: vec![1e2; m],
                offdiag: 0.1,
                diag: 0.05,
            },
        ));
        out.push((
            "mixed scales",
            s.clone(),
            Spec {
                m,
                nd: 5,
                feat: (0..m).map(|j| [10f64.powi(2 - 2 * j as i32); 2]).collect(),
                noise: (0..m).map(|j| 10f64.powi(-(j as i32))).collect(),
                offdiag: 0.1,
                diag: 0.05,
            },
        ));
        out.push((
            "near-identity head",
            s.clone(),
            Spec {
                m,
                nd: 5,
                feat: vec![[0.7, 0.7]; m],
                noise: vec![0.05; m],
                offdiag: 1e-8,
                diag: 1e-8,
            },
        ));
        out.push((
            "near pure-feature, both features",
            setting([4.0, 1.0], m, 16, 5),
            Spec {
                m,
                nd: 5,
                feat: (0..m)
                    .map(|j| if j % 2 == 0 { [1.0, 1e-3] } else { [1e-3, 1.0] })
                    .collect(),
                noise: vec![1e-6; m],
                offdiag: 1e-6,
                diag: 1e-7,
            },
        ));
        out.push((
            "near pure-feature, collapse",
            setting([4.0, 1.0], m, 16, 5),
            Spec {
                m,
                nd: 5,
                feat: vec![[1.0, 1e-3]; m],
                noise: vec![1e-6; m],
                offdiag: 1e-6,
                diag: 1e-7,
            },
        ));
    }
    out
}

fn fmt(x: &[f64]) -> String {
    x.iter()
        .map(|v| format!("{v:.1e}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `evaluate` in `f64` agrees with 256-bit MPFR to `1e-12` relative, normwise per block, on
/// 3 random states of each family, for every model.
#[test]
fn f64_matches_mpfr_on_random_and_ill_conditioned_states() {
    let names = ["loss", "grad_a", "grad_b", "noise_coef", "grad_e"];
    let mut worst = [0.0f64; 5];
    let mut report = String::new();
    for (fi, (name, setting, spec)) in families().into_iter().enumerate() {
        let mut fam = [0.0f64; 5];
        for seed in 0..3u64 {
            let x = state(&spec, 100 * fi as u64 + seed);
            for model in models() {
                let mut x = x.clone();
                if model.head == HeadMode::IdentityOffdiag {
                    for j in 0..spec.m {
                        *x.e.at_mut(j, j) = 1.0;
                    }
                }
                let err = errors(&setting, &model, &x);
                for b in 0..5 {
                    fam[b] = fam[b].max(err[b]);
                    worst[b] = worst[b].max(err[b]);
                }
                for b in 0..5 {
                    if std::env::var("MPFR_REPORT").is_ok() {
                        if err[b] > 1e-13 {
                            eprintln!("{name} m={} {model:?} {} {:e}", spec.m, names[b], err[b]);
                        }
                        continue;
                    }
                    assert!(
                        err[b] <= 1e-12,
                        "{name} m={} seed={seed} {model:?}: block {} rel err {:e}",
                        spec.m,
                        names[b],
                        err[b]
                    );
                }
            }
        }
        report += &format!("{name:<34} m={} {}\n", spec.m, fmt(&fam));
    }
    eprintln!("{report}worst per block {names:?}: {}", fmt(&worst));
}

/// A pure-feature state: no noise part (`G = 0`) and every neuron with a non-zero feature
/// coordinate. With `E = I` each neuron is its own target; in the collapse configuration
/// (all neurons on `v1`, `b = 0`) any head whose rows keep `(E p_1)_j` of the sign of
/// `p_j1` is optimal too.
fn pure_feature(m: usize, collapse: bool, head_offdiag: f64, seed: u64) -> Reduced<f64> {
    let mut rng = stream_rng(Domain::Aux, seed, 2, 0);
    let z = standard_normals(&mut rng, 2 * m);
    Reduced {
        a: (0..m).map(|j| 0.5 + z[2 * j].abs()).collect(),
        b: (0..m)
            .map(|j| if collapse { 0.0 } else { z[2 * j + 1] })
            .collect(),
        gram: Square::zeros(m, ()),
        e: Square::from_fn(m, |j, r| if j == r { 1.0 } else { head_offdiag }),
    }
}

/// Eq. (P12): at a pure-feature state the batchnorm population loss equals `m OPT`
/// exactly and the gradient vanishes. In 256-bit MPFR the loss agrees with the exact
/// rational `m (2 - 2 E[KK'] / E[K^2])` to `1e-70`; in `f64` to 2 ulps (the cancellation-free
/// form (P9) gives `m` copies of the correctly rounded `OPT` plus an exact 0), and the `f64`
/// gradient is exactly zero in every block (every term of (P10a)-(P10c) carries a factor
/// `Delta_j`, `B_j` or `G` that is exactly 0).
#[test]
fn pure_feature_states_reach_m_opt_exactly() {
    for (p, p0) in [(4usize, 2usize), (16, 5), (40, 7), (6, 6)] {
        for m in [2usize, 3] {
            let setting = Setting {
                dim: 6,
                patches: p,
                feature_patches: p0,
                alpha: [3.0, 1.5],
                noise_std: 1.0,
                neurons: m,
            };
            let exact = setting_opt(&setting) * Rational::from(m as u64);
            let k64 = Constants::<f64>::new(&setting, ());
            let kmp = Constants::<Float>::new(&setting, PREC);
            for (collapse, off) in [(false, 0.0), (true, 0.0), (true, 0.3)] {
                let x = pure_feature(m, collapse, off, p as u64 * 10 + m as u64);
                for stop_gradient in [true, false] {
                    for head in HeadMode::ALL {
                        let model = Model {
                            head,
                            normalization: Normalization::Batchnorm,
                            stop_gradient,
                        };
                        let mp = evaluate(&kmp, &model, &lift(&x)).unwrap();
                        let err = Float::with_val(PREC, &mp.loss - &exact).abs();
                        assert!(
                            err < 1e-70,
                            "P={p} P0={p0} m={m} {model:?}: MPFR error {err}"
                        );
                        let ev = evaluate(&k64, &model, &x).unwrap();
                        let want = opt(&k64, m, ());
                        let ulps =
                            (ev.loss - want).abs() / (want * f64::EPSILON).max(f64::MIN_POSITIVE);
                        assert!(ulps <= 2.0, "P={p} P0={p0} m={m} {model:?}: {ulps} ulps");
                        assert!(ev.grad_a.iter().chain(&ev.grad_b).all(|g| *g == 0.0));
                        assert!(ev.noise_coef.entries().iter().all(|g| *g == 0.0));
                        assert!(ev.grad_e.entries().iter().all(|g| *g == 0.0), "{model:?}");
                    }
                }
            }
        }
    }
}

/// Eq. (P13a): `observe::corr_gap` (eq. (P13) in 256-bit MPFR) resolves `1 - |Corr|` where
/// `f64` cannot. At collapse states with independent noise parts (`b = 0`,
/// `G = diag(g_0, g_1)`) it agrees to `1e-13` relative with the cancellation-free closed
/// form `-expm1(-(log1p(delta_0) + log1p(delta_1)) / 2)`, for gaps from `~1e-4` down to
/// `~1e-37` (`delta_j ~ g_j^3`), while the `f64` (P13) gives rounding there; at generic states (gap `>= 1e-3`)
/// it agrees with the `f64` (P13) to `1e-12`.
#[test]
fn corr_gap_resolves_collapsed_states() {
    use predhead::moments::population::moments;
    use predhead::observe::corr_gap;
    for (p, p0) in [(8usize, 2usize), (16, 5)] {
        let setting = setting([3.0, 1.0], 2, p, p0);
        let k = Constants::<f64>::new(&setting, ());
        for (scale, ratio) in [
            (1e-1, 1.0),
            (1e-2, 0.7),
            (1e-4, 1.3),
            (1e-6, 0.5),
            (1e-9, 2.0),
            (1e-12, 0.9),
        ] {
            let g = [scale, scale * ratio];
            let x = Reduced {
                a: vec![0.8, 1.3],
                b: vec![0.0, 0.0],
                gram: Square::from_fn(2, |i, j| if i == j { g[i] } else { 0.0 }),
                e: Square::identity(2, ()),
            };
            let mo = moments(&k, &x);
            let delta = |j: usize| k.noise_full * mo.psi.at(j, j) / (k.p0_sq * mo.phi.at(j, j));
            let closed = -(-(delta(0).ln_1p() + delta(1).ln_1p()) / 2.0).exp_m1();
            let gap = corr_gap(&setting, &x).unwrap();
            let rel = ((gap - closed) / closed).abs();
            assert!(
                rel <= 1e-13,
                "P = {p}, g = {g:?}: corr_gap {gap:e}, closed form {closed:e} (rel {rel:e})"
            );
            assert!(closed > 0.0);
            let c64 = correlation(&k, &x).at(0, 1).unwrap();
            if closed < 1e-17 {
                // The f64 evaluation of (P13) is rounding here.
                assert!(
                    (1.0 - c64.abs()).abs() <= 4.5e-16,
                    "f64 gap {}",
                    1.0 - c64.abs()
                );
            }
        }
    }
    for (fi, (name, setting, spec)) in families().into_iter().enumerate() {
        let k = Constants::<f64>::new(&setting, ());
        let x = state(&spec, 950 + fi as u64);
        let c64 = correlation(&k, &x).at(0, 1).unwrap();
        if 1.0 - c64.abs() < 1e-3 {
            continue;
        }
        let gap = corr_gap(&setting, &x).unwrap();
        assert!(
            (gap - (1.0 - c64.abs())).abs() <= 1e-12,
            "{name}: corr_gap {gap:e}, f64 {:e}",
            1.0 - c64.abs()
        );
    }
}

fn setting_opt(setting: &Setting) -> Rational {
    predhead::moments::overlap::OverlapMoments::new(setting).opt_per_neuron()
}

/// Eq. (P12) (Cauchy-Schwarz): the batchnorm population loss is at least `m OPT` at every
/// state. Checked at 400 random states of mixed scales per `m`, in `f64` with the
/// cancellation-free form (P9), whose excess `2 kappa sum_j (1 - beta_j)` is a sum of
/// non-negative computed terms: so the inequality holds exactly, not just to rounding.
#[test]
fn batchnorm_loss_is_at_least_m_opt() {
    for m in [2usize, 3, 4] {
        let setting = setting([3.0, 1.0], m, 10, 3);
        let k = Constants::<f64>::new(&setting, ());
        let floor = opt(&k, m, ());
        for seed in 0..400u64 {
            let scale = 10f64.powi((seed % 5) as i32 - 2);
            let spec = Spec {
                m,
                nd: 1 + (seed % 4) as usize,
                feat: (0..m).map(|j| [scale, scale * (1.0 + j as f64)]).collect(),
                noise: vec![scale * 0.3; m],
                offdiag: 0.5,
                diag: 0.5,
            };
            let x = state(&spec, 5000 + seed);
            for model in models() {
                if model.normalization != Normalization::Batchnorm {
                    continue;
                }
                let ev = evaluate(&k, &model, &x).unwrap();
                assert!(
                    ev.loss >= floor,
                    "m={m} seed={seed}: loss {} < m OPT {floor}",
                    ev.loss
                );
            }
        }
    }
}

/// Eq. (P13): the correlation on un-augmented `X` in `f64` agrees with MPFR to `1e-12`
/// (absolute, the correlation is in [-1, 1]), and equals 1 on the diagonal; at a collapse
/// state (both neurons on `v1` only, no noise) the correlation is exactly 1.
#[test]
fn correlation_f64_matches_mpfr() {
    for (fi, (name, setting, spec)) in families().into_iter().enumerate() {
        let k64 = Constants::<f64>::new(&setting, ());
        let kmp = Constants::<Float>::new(&setting, PREC);
        let x = state(&spec, 900 + fi as u64);
        let c64 = correlation(&k64, &x);
        let cmp = correlation(&kmp, &lift(&x));
        for (a, b) in c64.entries().iter().zip(cmp.entries()) {
            let (a, b) = (a.unwrap(), b.clone().unwrap());
            assert!(
                (a - b.to_f64()).abs() <= 1e-12,
                "{name}: {a} vs {}",
                b.to_f64()
            );
            assert!(a.abs() <= 1.0 + 1e-15);
        }
    }
    let setting = setting([3.0, 1.0], 2, 8, 3);
    let k = Constants::<f64>::new(&setting, ());
    let x = pure_feature(2, true, 0.0, 3);
    let c = correlation(&k, &x);
    assert_eq!(c.at(0, 1).unwrap(), 1.0);
}
