//! Monte Carlo checks of the population formulas against the sampler `src/data.rs`
//! (`derivations/overlap.md`, `derivations/noise.md`, `derivations/population.md`).
//!
//! Every check is a z-test: `z = (sample mean - exact) / (sample sd / sqrt(N))`, and
//! `|z| < 5` is required. Under the null hypothesis (the formula is right) `z` is
//! asymptotically standard normal, so each individual check fails by chance with
//! probability `P(|N(0,1)| >= 5) ~ 5.7e-7`; the seeds are fixed, so the tests are
//! deterministic. The statistics are polynomials of degree <= 6 in Gaussians, so their
//! variances are finite and the CLT applies; `N >= 1e5` keeps the normal approximation good
//! in the tails we use.
//!
//! Sample means are accumulated per chunk in parallel (rayon) and combined in chunk order,
//! so the results do not depend on the thread count.

use predhead::batch::Batch;
use predhead::data::{draw, sample, standard_normals, stream_rng, Domain, View};
use predhead::moments::overlap::OverlapMoments;
use predhead::moments::population::Constants;
use predhead::network::batch_loss_and_gradient;
use predhead::reduced::{evaluate_explicit, reduce};
use predhead::scalar::Scalar;
use predhead::setting::{HeadMode, Model, Normalization, Setting};
use predhead::state::State;
use rayon::prelude::*;

/// The z bound: `P(|z| >= 5) ~ 5.7e-7` per check under the null.
const Z: f64 = 5.0;

/// Running sums of a vector statistic.
#[derive(Clone)]
struct Sums {
    n: f64,
    s: Vec<f64>,
    s2: Vec<f64>,
}

impl Sums {
    fn new(len: usize) -> Self {
        Sums {
            n: 0.0,
            s: vec![0.0; len],
            s2: vec![0.0; len],
        }
    }
    fn push(&mut self, x: &[f64]) {
        self.n += 1.0;
        for (i, v) in x.iter().enumerate() {
            self.s[i] += v;
            self.s2[i] += v * v;
        }
    }
    fn merge(mut self, o: &Sums) -> Self {
        self.n += o.n;
        for i in 0..self.s.len() {
            self.s[i] += o.s[i];
            self.s2[i] += o.s2[i];
        }
        self
    }
    fn mean(&self, i: usize) -> f64 {
        self.s[i] / self.n
    }
    /// Standard error of the mean.
    fn se(&self, i: usize) -> f64 {
        let m = self.mean(i);
        let var = (self.s2[i] / self.n - m * m).max(0.0) * self.n / (self.n - 1.0);
        (var / self.n).sqrt()
    }
    /// `z` of component `i` against `exact`.
    fn z(&self, i: usize, exact: f64) -> f64 {
        let d = self.mean(i) - exact;
        if d == 0.0 {
            0.0
        } else {
            d / self.se(i)
        }
    }
}

/// Sums of `stat(i)` over `i in 0..n`, in parallel chunks combined in order.
fn mc(n: u64, len: usize, stat: impl Fn(u64) -> Vec<f64> + Sync) -> Sums {
    const CHUNK: u64 = 2048;
    let chunks: Vec<Sums> = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let mut s = Sums::new(len);
            for i in c * CHUNK..((c + 1) * CHUNK).min(n) {
                s.push(&stat(i));
            }
            s
        })
        .collect();
    chunks.iter().fold(Sums::new(len), |a, b| a.merge(b))
}

fn ratio_f64(q: &rug::Rational) -> f64 {
    <f64 as Scalar>::from_rational(q, ())
}

/// (O3)-(O5): `E[K]`, `E[K^2]`, `E[K K']` of the sampler's draws.
#[test]
fn overlap_moments_match_the_sampler() {
    for (p, p0) in [(8usize, 3usize), (6, 2), (10, 10)] {
        let setting = Setting {
            dim: 4,
            patches: p,
            feature_patches: p0,
            alpha: [2.0, 1.0],
            noise_std: 1.0,
            neurons: 2,
        };
        let o = OverlapMoments::new(&setting);
        let s = mc(200_000, 3, |i| {
            let d = draw(&setting, 41, 0, i);
            let k = d.overlap() as f64;
            let kp = (p0 as f64) - k;
            // K' counted directly from the second view.
            let kp_direct = (0..p)
                .filter(|&q| d.features[q] && d.in_view(q, View::Second))
                .count() as f64;
            assert_eq!(kp, kp_direct);
            vec![k, k * k, k * kp]
        });
        for (i, exact) in [&o.mean, &o.second, &o.cross].into_iter().enumerate() {
            let z = s.z(i, ratio_f64(exact));
            assert!(z.abs() < Z, "P={p} P0={p0} moment {i}: z = {z}");
        }
    }
}

fn setting(m: usize) -> Setting {
    Setting {
        dim: 5,
        patches: 6,
        feature_patches: 2,
        alpha: [1.5, 1.0],
        noise_std: 0.8,
        neurons: m,
    }
}

/// A random explicit state: feature coordinates `N(0, 0.8^2)`, noise coordinates
/// `N(0, 0.5^2)`, head `I + N(0, 0.2^2)` everywhere (the population formulas do not assume
/// a unit diagonal; the head mode only decides which entries are trained).
fn random_state(setting: &Setting, seed: u64) -> State {
    let (m, d) = (setting.neurons, setting.dim as usize);
    let z = standard_normals(&mut stream_rng(Domain::Aux, seed, 3, 0), m * d + m * m);
    State {
        w: (0..m)
            .map(|j| {
                (0..d)
                    .map(|i| z[j * d + i] * if i < 2 { 0.8 } else { 0.5 })
                    .collect()
            })
            .collect(),
        e: (0..m)
            .map(|j| {
                (0..m)
                    .map(|r| 0.2 * z[m * d + j * m + r] + if j == r { 1.0 } else { 0.0 })
                    .collect()
            })
            .collect(),
    }
}

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

/// `f(X) = sum_p <w, X_p>^3` on a patch-major view (written here independently of
/// `src/network.rs`).
fn encoder(w: &[f64], x: &[f64]) -> f64 {
    x.chunks(w.len())
        .map(|xp| w.iter().zip(xp).map(|(a, b)| a * b).sum::<f64>().powi(3))
        .sum()
}

/// `df/dw = 3 sum_p <w, X_p>^2 X_p`.
fn encoder_gradient(w: &[f64], x: &[f64]) -> Vec<f64> {
    let mut g = vec![0.0; w.len()];
    for xp in x.chunks(w.len()) {
        let t: f64 = w.iter().zip(xp).map(|(a, b)| a * b).sum();
        for (gi, xi) in g.iter_mut().zip(xp) {
            *gi += 3.0 * t * t * xi;
        }
    }
    g
}

/// One sample's encoder outputs and their gradients on both views.
struct Outputs {
    f1: Vec<f64>,
    f2: Vec<f64>,
    g1: Vec<Vec<f64>>,
    g2: Vec<Vec<f64>>,
}

fn outputs(setting: &Setting, state: &State, seed: u64, i: u64) -> Outputs {
    let s = sample(setting, seed, 0, i);
    let (x1, x2) = (s.view(View::First), s.view(View::Second));
    let grad = encoder_gradient;
    Outputs {
        f1: state.w.iter().map(|w| encoder(w, &x1)).collect(),
        f2: state.w.iter().map(|w| encoder(w, &x2)).collect(),
        g1: state.w.iter().map(|w| grad(w, &x1)).collect(),
        g2: state.w.iter().map(|w| grad(w, &x2)).collect(),
    }
}

/// (P0), (P3), (P4): the means of `f_j` on both views are 0, `E[f(X^(1)) f(X^(1))^T]` and
/// `E[f(X^(2)) f(X^(2))^T]` both equal `M = E[K^2] Phi + n Psi`, and
/// `E[f(X^(1)) f(X^(2))^T] = C = E[KK'] Phi`: 2m + 3m^2 z-tests per state, 3 states at m = 3
/// with 1e5 samples each.
#[test]
fn moments_match_monte_carlo() {
    let setting = setting(3);
    let m = setting.neurons;
    let k = Constants::<f64>::new(&setting, ());
    let mut zmax: f64 = 0.0;
    for seed in 0..3u64 {
        let state = random_state(&setting, 10 + seed);
        let mo = predhead::moments::population::moments(&k, &reduce::<f64>(&state, ()));
        let s = mc(100_000, 2 * m + 3 * m * m, |i| {
            let o = outputs(&setting, &state, 500 + seed, i);
            let mut v = Vec::with_capacity(2 * m + 3 * m * m);
            v.extend(&o.f1);
            v.extend(&o.f2);
            for a in 0..m {
                for b in 0..m {
                    v.push(o.f1[a] * o.f1[b]);
                    v.push(o.f2[a] * o.f2[b]);
                    v.push(o.f1[a] * o.f2[b]);
                }
            }
            v
        });
        let mut checks = Vec::new();
        for i in 0..2 * m {
            checks.push((format!("mean {i}"), s.z(i, 0.0)));
        }
        for a in 0..m {
            for b in 0..m {
                let base = 2 * m + 3 * (a * m + b);
                checks.push((format!("M1[{a}][{b}]"), s.z(base, *mo.second.at(a, b))));
                checks.push((format!("M2[{a}][{b}]"), s.z(base + 1, *mo.second.at(a, b))));
                checks.push((format!("C[{a}][{b}]"), s.z(base + 2, *mo.cross.at(a, b))));
            }
        }
        for (name, z) in checks {
            zmax = zmax.max(z.abs());
            assert!(z.abs() < Z, "state {seed}: {name}: z = {z}");
        }
    }
    eprintln!("moments: max |z| = {zmax:.2}");
}

/// The per-sample gradient estimator of every model, flattened `[grad_w (m x d), grad_e
/// (m x m)]`, with the normalization statistics `q_j, t_j, r_j` taken from the closed
/// form (so its mean is exactly the population gradient; `derivations/population.md`,
/// Section "Monte Carlo estimator").
fn per_sample_gradient(
    model: &Model,
    state: &State,
    stats: &[(f64, f64, f64)],
    o: &Outputs,
) -> Vec<f64> {
    let m = state.neurons();
    let d = state.dim();
    let e = &state.e;
    let f_on: Vec<f64> = (0..m)
        .map(|j| (0..m).map(|r| e[j][r] * o.f1[r]).sum())
        .collect();
    // coef_on[j]: d loss_j / d F_j(X1); coef_tg[j]: d loss_j / d f_j(X2) (both per sample).
    let (coef_on, coef_tg): (Vec<f64>, Vec<f64>) = (0..m)
        .map(|j| match model.normalization {
            Normalization::Batchnorm => {
                let (q, t, r) = stats[j];
                let s = (q * t).sqrt();
                (
                    -2.0 / s * o.f2[j] + r / s * 2.0 * f_on[j] / q,
                    -2.0 / s * f_on[j] + r / s * 2.0 * o.f2[j] / t,
                )
            }
            Normalization::None => (2.0 * (f_on[j] - o.f2[j]), -2.0 * (f_on[j] - o.f2[j])),
        })
        .unzip();
    let mut out = vec![0.0; m * d + m * m];
    for r in 0..m {
        for i in 0..d {
            let mut g = 0.0;
            for j in 0..m {
                g += coef_on[j] * e[j][r] * o.g1[r][i];
            }
            if !model.stop_gradient {
                g += coef_tg[r] * o.g2[r][i];
            }
            out[r * d + i] = g;
        }
    }
    for j in 0..m {
        for r in 0..m {
            if model.head.trainable(j, r) {
                out[m * d + j * m + r] = coef_on[j] * o.f1[r];
            }
        }
    }
    out
}

/// The population normalization statistics `(q_j, t_j, r_j)` = `((E M E^T)_jj, M_jj,
/// (E C)_jj)` (eq. (P5)).
fn stats(k: &Constants<f64>, state: &State) -> Vec<(f64, f64, f64)> {
    let mo = predhead::moments::population::moments(k, &reduce::<f64>(state, ()));
    let m = state.neurons();
    let e = &state.e;
    (0..m)
        .map(|j| {
            let mut q = 0.0;
            let mut r = 0.0;
            for a in 0..m {
                for b in 0..m {
                    q += e[j][a] * mo.second.at(a, b) * e[j][b];
                }
                r += e[j][a] * mo.cross.at(a, j);
            }
            (q, *mo.second.at(j, j), r)
        })
        .collect()
}

/// (P5)-(P10): the mean of the unbiased per-sample gradient estimator equals the population
/// gradient, coordinate by coordinate, for all 12 models, at 2 states for m = 2 and 2 for
/// m = 3, 1e5 samples each (the same samples serve all models). 12 (m d + m^2) z-tests per
/// state.
#[test]
fn population_gradient_matches_monte_carlo() {
    let mut zmax: f64 = 0.0;
    for m in [2usize, 3] {
        let setting = setting(m);
        let k = Constants::<f64>::new(&setting, ());
        let d = setting.dim as usize;
        let len = m * d + m * m;
        for seed in 0..2u64 {
            let state = random_state(&setting, 100 + 10 * m as u64 + seed);
            let st = stats(&k, &state);
            let models = models();
            let s = mc(100_000, models.len() * len, |i| {
                let o = outputs(&setting, &state, 900 + seed, i);
                models
                    .iter()
                    .flat_map(|model| per_sample_gradient(model, &state, &st, &o))
                    .collect()
            });
            for (mi, model) in models.iter().enumerate() {
                let ev = evaluate_explicit::<f64>(&k, model, &state, ()).unwrap();
                let exact: Vec<f64> = ev
                    .grad_w
                    .iter()
                    .flatten()
                    .chain(ev.grad_e.iter().flatten())
                    .copied()
                    .collect();
                for (c, x) in exact.iter().enumerate() {
                    let z = s.z(mi * len + c, *x);
                    zmax = zmax.max(z.abs());
                    assert!(
                        z.abs() < Z,
                        "m={m} state {seed} {model:?} coordinate {c}: mean {} exact {x} z = {z}",
                        s.mean(mi * len + c)
                    );
                }
            }
        }
    }
    eprintln!("gradient: max |z| = {zmax:.2}");
}

/// The gradient of the batch loss (3.3) of `src/network.rs` on samples `lo..hi` of
/// `seed` (one batch), flattened `[grad_w, grad_e]`.
fn batch_gradient(
    setting: &Setting,
    model: &Model,
    state: &State,
    views: &[(Vec<f64>, Vec<f64>)],
) -> Vec<f64> {
    let (x1, x2): (Vec<_>, Vec<_>) = views.iter().cloned().unzip();
    let batch = Batch::new(setting, x1, x2).unwrap();
    let g = batch_loss_and_gradient(setting, model, state, &batch).unwrap();
    g.grad_w
        .iter()
        .flatten()
        .chain(g.grad_e.iter().flatten())
        .copied()
        .collect()
}

/// The batch gradient is a biased estimator of the population gradient under batchnorm,
/// with a bias `b_N = c / N + O(1/N^2)` (`derivations/population.md`, Section "Batch
/// bias"); under `none` it is unbiased.
///
/// Design (common random numbers, independent replicates): `R = 128` groups of `G = 8192`
/// samples (2^20 in all). In each group the same samples are cut into batches of `N = 32`, of `4N = 128`,
/// and taken as one batch of `G`. The mean batch gradient at size `N` is
/// `g_pop + b_N + L + Q_N`, where `L` (the average over the group of the per-sample linear
/// fluctuation, `O(1/sqrt(G))`) is the SAME for the three cuttings of the same samples and
/// `Q_N` (higher order) is much smaller. So the differences `D_N = mean g_N - g_G` and
/// `D_4N = mean g_4N - g_G` contain no `L`: their expectations are `b_N - b_G` and
/// `b_4N - b_G`, with noise `~ sigma_2 / sqrt(N G)` instead of `sigma_1 / sqrt(G)`. The 64
/// groups are independent, so the across-group standard errors are honest (128 replicates;
/// the chance rate 5.7e-7 of `|z| >= 5` is the normal one, `t_127` makes it ~3x larger).
///
/// Claims checked:
/// 1. (batchnorm) the bias ratio `r = (b_N - b_G) / (b_4N - b_G)`, projected on the
///    direction of the measured `D_N`, is between 3 and 5 (a pure `1/N` bias gives
///    `(1/N - 1/G) / (1/(4N) - 1/G) = 255/63 = 4.05`; `O(1/N^2)` terms move it by
///    `~ c_2 / (c N)`), and its standard error (delta method over the groups) is below 0.25,
///    so a `1/sqrt(N)` bias (ratio 2) or a constant bias (ratio 1) would be rejected by more
///    than 4 standard errors;
/// 2. (batchnorm) the bias is real: `|D_N|` projected is more than 10 standard errors from
///    0;
/// 3. (every model) the full-group gradient, corrected by the fitted `c / G`, matches the
///    population gradient: per coordinate `|z| < 5` across the 128 groups;
/// 4. (`none`) the batch gradient at size `N` is unbiased: `|z| < 5` per coordinate.
#[test]
fn batch_gradient_bias_shrinks_like_one_over_n() {
    const R: u64 = 128;
    const G: u64 = 8192;
    const N: usize = 32;
    let setting = Setting {
        dim: 4,
        patches: 4,
        feature_patches: 2,
        alpha: [1.5, 1.0],
        noise_std: 0.8,
        neurons: 2,
    };
    let k = Constants::<f64>::new(&setting, ());
    let state = random_state(&setting, 7);
    let all = models();
    let chosen: Vec<Model> = vec![all[0], all[1], all[8], all[2]];
    // Per group and model: [mean g_N, mean g_4N, g_G], each flattened.
    let groups: Vec<Vec<[Vec<f64>; 3]>> = (0..R)
        .into_par_iter()
        .map(|g| {
            let views: Vec<(Vec<f64>, Vec<f64>)> = (g * G..(g + 1) * G)
                .map(|i| {
                    let s = sample(&setting, 2024, 0, i);
                    (s.view(View::First), s.view(View::Second))
                })
                .collect();
            chosen
                .iter()
                .map(|model| {
                    let mean_of = |n: usize| {
                        let chunks: Vec<Vec<f64>> = views
                            .chunks(n)
                            .map(|c| batch_gradient(&setting, model, &state, c))
                            .collect();
                        let len = chunks[0].len();
                        (0..len)
                            .map(|c| chunks.iter().map(|v| v[c]).sum::<f64>() / chunks.len() as f64)
                            .collect::<Vec<f64>>()
                    };
                    [mean_of(N), mean_of(4 * N), mean_of(G as usize)]
                })
                .collect()
        })
        .collect();
    let rf = R as f64;
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    let var = |xs: &[f64]| {
        let m = mean(xs);
        xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (xs.len() as f64 - 1.0)
    };
    for (mi, model) in chosen.iter().enumerate() {
        let ev = evaluate_explicit::<f64>(&k, model, &state, ()).unwrap();
        let exact: Vec<f64> = ev
            .grad_w
            .iter()
            .flatten()
            .chain(ev.grad_e.iter().flatten())
            .copied()
            .collect();
        let len = exact.len();
        let per = |which: usize, c: usize| -> Vec<f64> {
            groups.iter().map(|gr| gr[mi][which][c]).collect()
        };
        if model.normalization == Normalization::Batchnorm {
            // D_N, D_4N per group and coordinate.
            let dn: Vec<Vec<f64>> = (0..len)
                .map(|c| {
                    per(0, c)
                        .iter()
                        .zip(per(2, c))
                        .map(|(a, b)| a - b)
                        .collect()
                })
                .collect();
            let d4: Vec<Vec<f64>> = (0..len)
                .map(|c| {
                    per(1, c)
                        .iter()
                        .zip(per(2, c))
                        .map(|(a, b)| a - b)
                        .collect()
                })
                .collect();
            let mdn: Vec<f64> = dn.iter().map(|v| mean(v)).collect();
            let norm = mdn.iter().map(|x| x * x).sum::<f64>().sqrt();
            let u: Vec<f64> = mdn.iter().map(|x| x / norm).collect();
            let proj = |d: &[Vec<f64>]| -> Vec<f64> {
                (0..R as usize)
                    .map(|g| (0..len).map(|c| u[c] * d[c][g]).sum())
                    .collect()
            };
            let (x, y) = (proj(&dn), proj(&d4));
            let (mx, my) = (mean(&x), mean(&y));
            let r = mx / my;
            let cov = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - mx) * (b - my))
                .sum::<f64>()
                / (rf - 1.0);
            let se_r = ((var(&x) - 2.0 * r * cov + r * r * var(&y)) / rf).sqrt() / my.abs();
            let z_bias = mx / (var(&x) / rf).sqrt();
            eprintln!(
                "{model:?}: projected bias at N={N}: {mx:.3e} (z = {z_bias:.1}), at 4N: {my:.3e}, \
                 ratio {r:.3} +- {se_r:.3}"
            );
            assert!(z_bias > 10.0, "{model:?}: bias not resolved, z = {z_bias}");
            assert!(se_r < 0.25, "{model:?}: ratio too noisy: {r} +- {se_r}");
            assert!(
                (3.0..5.0).contains(&r),
                "{model:?}: bias ratio {r} +- {se_r}"
            );
            // Claim 3: g_G - c/G vs g_pop, with c fitted from D_4N = c (1/(4N) - 1/G).
            let gf = G as f64;
            for c in 0..len {
                let cfit = mean(&d4[c]) / (1.0 / (4.0 * N as f64) - 1.0 / gf);
                let full = per(2, c);
                let se = (var(&full) / rf).sqrt();
                let d = mean(&full) - cfit / gf - exact[c];
                let z = if d == 0.0 { 0.0 } else { d / se };
                assert!(z.abs() < Z, "{model:?} coordinate {c}: full-batch z = {z}");
            }
        } else {
            for which in [0usize, 2] {
                for (c, x) in exact.iter().enumerate() {
                    let v = per(which, c);
                    let d = mean(&v) - x;
                    let z = if d == 0.0 {
                        0.0
                    } else {
                        d / (var(&v) / rf).sqrt()
                    };
                    assert!(
                        z.abs() < Z,
                        "{model:?} coordinate {c}: unbiasedness z = {z}"
                    );
                }
            }
        }
    }
}
