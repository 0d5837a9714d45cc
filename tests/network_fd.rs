//! Finite-difference checks of the analytic batch gradient (`derivations/network.md`,
//! eqs. (B4)-(B9)) for every head mode x normalization x stop_gradient, at m = 2 and 3.
//!
//! `stop_gradient = true` is checked against central differences of the two-branch loss
//! (B5) in the online weights with the target weights held fixed (the target branch is a
//! constant); `stop_gradient = false` against central differences of the full loss (B4).

use predhead::data::batch_views;
use predhead::network::{
    batch_loss, batch_loss_and_gradient, normalize, normalize_backward, two_branch_loss, Batch,
};
use predhead::setting::{HeadMode, Model, Normalization, Setting};
use predhead::state::State;

fn setting(m: usize) -> Setting {
    Setting {
        dim: 4,
        patches: 4,
        feature_patches: 2,
        alpha: [1.5, 1.0],
        noise_std: 0.7,
        neurons: m,
    }
}

/// A deterministic, generic state: no symmetric or zero entries, E far from the identity.
fn state(m: usize) -> State {
    let w = (0..m)
        .map(|j| {
            (0..4)
                .map(|i| 0.6 * ((1.7 * (i as f64 + 1.0) + 2.3 * (j as f64 + 1.0)).sin()))
                .collect()
        })
        .collect();
    let mut st = State::with_identity_head(w);
    for j in 0..m {
        for r in 0..m {
            st.e[j][r] += 0.3 * ((0.9 * j as f64 + 1.3 * r as f64 + 0.4).cos());
        }
    }
    st
}

fn batch(s: &Setting, n: usize, seed: u64) -> Batch {
    let (x1, x2) = batch_views(s, seed, 0, n);
    Batch::new(s, x1, x2).unwrap()
}

/// Central differences with step h = 1e-5 (the state entries are O(1)): the truncation
/// error is h^2/6 |L'''| ~ 1e-11 |L'''| and the rounding error ~ 1e-16 |L| / h ~ 1e-11 |L|,
/// with |L|, |L'''| = O(10) here, so a correct gradient agrees to ~1e-9; the bound
/// 1e-6 * (1 + max |g|) leaves three orders of margin and still catches any missing term
/// (which would be O(|g|) = O(0.1..10)).
const H: f64 = 1e-5;
const TOL: f64 = 1e-6;

fn check_all(m: usize, n: usize) {
    let s = setting(m);
    let st = state(m);
    let b = batch(&s, n, 11 + m as u64);
    for head in HeadMode::ALL {
        for normalization in Normalization::ALL {
            let mut grads = Vec::new();
            for stop_gradient in [true, false] {
                let model = Model {
                    head,
                    normalization,
                    stop_gradient,
                };
                let ev = batch_loss_and_gradient(&s, &model, &st, &b).unwrap();
                // The loss of the evaluation is the plain loss, and the two-branch loss at
                // equal weights is the same number.
                let plain = batch_loss(&s, &model, &st, &b).unwrap();
                assert_eq!(ev.loss.to_bits(), plain.to_bits());
                let two = two_branch_loss(&s, &model, &st, &st.w, &b).unwrap();
                assert_eq!(ev.loss.to_bits(), two.to_bits());

                // The loss whose derivative in the online state is the gradient.
                let loss = |p: &State| -> f64 {
                    if stop_gradient {
                        two_branch_loss(&s, &model, p, &st.w, &b).unwrap()
                    } else {
                        batch_loss(&s, &model, p, &b).unwrap()
                    }
                };
                let gmax = ev
                    .grad_w
                    .iter()
                    .chain(&ev.grad_e)
                    .flatten()
                    .fold(0.0f64, |a, g| a.max(g.abs()));
                let tol = TOL * (1.0 + gmax);
                for j in 0..m {
                    for i in 0..4 {
                        let mut p = st.clone();
                        p.w[j][i] += H;
                        let mut q = st.clone();
                        q.w[j][i] -= H;
                        let fd = (loss(&p) - loss(&q)) / (2.0 * H);
                        let an = ev.grad_w[j][i];
                        assert!(
                            (fd - an).abs() <= tol,
                            "m={m} {model:?} w[{j}][{i}]: fd {fd} analytic {an} tol {tol}"
                        );
                    }
                    for r in 0..m {
                        let an = ev.grad_e[j][r];
                        if !head.trainable(j, r) {
                            assert_eq!(an, 0.0, "m={m} {model:?} e[{j}][{r}] not trained");
                            continue;
                        }
                        let mut p = st.clone();
                        p.e[j][r] += H;
                        let mut q = st.clone();
                        q.e[j][r] -= H;
                        let fd = (loss(&p) - loss(&q)) / (2.0 * H);
                        assert!(
                            (fd - an).abs() <= tol,
                            "m={m} {model:?} e[{j}][{r}]: fd {fd} analytic {an} tol {tol}"
                        );
                    }
                }
                grads.push((ev.grad_w, tol));
            }
            // The two stop-gradient settings must really differ, or the checks above
            // could not tell them apart.
            let (gt, tol) = &grads[0];
            let (gf, _) = &grads[1];
            let diff = gt
                .iter()
                .flatten()
                .zip(gf.iter().flatten())
                .fold(0.0f64, |a, (x, y)| a.max((x - y).abs()));
            assert!(
                diff > 1e3 * tol,
                "m={m} {head:?} {normalization:?}: stop_gradient changes grad_w by only {diff}"
            );
        }
    }
}

#[test]
fn gradient_matches_central_differences_m2() {
    check_all(2, 7);
}

#[test]
fn gradient_matches_central_differences_m3() {
    check_all(3, 9);
}

/// Batch normalization (B3): zero mean and unit variance over the batch; its backward pass
/// (B6) matches central differences of `sum_i c_i y_i` for a generic `c`.
#[test]
fn batchnorm_forward_and_backward() {
    let z = [0.3, -1.2, 2.5, 0.7, 0.05];
    let out = normalize(Normalization::Batchnorm, &z, "z", "z").unwrap();
    let n = z.len() as f64;
    let mean = out.y.iter().sum::<f64>() / n;
    let var = out.y.iter().map(|y| y * y).sum::<f64>() / n - mean * mean;
    assert!(mean.abs() < 1e-15, "mean {mean}");
    assert!((var - 1.0).abs() < 1e-14, "variance {var}");
    let c = [0.9, -0.4, 0.25, 1.3, -0.7];
    let dz = normalize_backward(Normalization::Batchnorm, &out, &c);
    let obj = |z: &[f64]| -> f64 {
        let y = normalize(Normalization::Batchnorm, z, "z", "z").unwrap().y;
        y.iter().zip(&c).map(|(a, b)| a * b).sum()
    };
    for i in 0..z.len() {
        let mut p = z;
        p[i] += H;
        let mut q = z;
        q[i] -= H;
        let fd = (obj(&p) - obj(&q)) / (2.0 * H);
        assert!(
            (fd - dz[i]).abs() < TOL,
            "dz[{i}]: fd {fd} analytic {}",
            dz[i]
        );
    }
    // The backward pass is orthogonal to the constant and to y (the statistics' terms).
    let s1: f64 = dz.iter().sum();
    let sy: f64 = dz.iter().zip(&out.y).map(|(a, b)| a * b).sum();
    assert!(s1.abs() < 1e-14 && sy.abs() < 1e-14, "{s1} {sy}");
}

/// A batch whose outputs are all equal has batch-norm variance exactly zero: an error
/// naming the view, never a NaN.
#[test]
fn zero_variance_is_an_error() {
    let s = setting(2);
    let st = state(2);
    let x = vec![vec![0.5; 16]; 3];
    let b = Batch::new(&s, x.clone(), x).unwrap();
    let model = Model {
        head: HeadMode::Linear,
        normalization: Normalization::Batchnorm,
        stop_gradient: false,
    };
    let err = batch_loss_and_gradient(&s, &model, &st, &b)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("batch.x1: batch-norm variance"), "{err}");
    // Without normalization the same batch is fine.
    let none = Model {
        normalization: Normalization::None,
        ..model
    };
    assert!(batch_loss_and_gradient(&s, &none, &st, &b).is_ok());
}

/// An independent path: without normalization the batch loss (B4) and its gradient are
/// sample means, so they are unbiased for the exact population loss and gradient
/// (`reduced::evaluate_explicit`). 200 independent batches of 50 samples (seed 2026, steps
/// 0..200) give a mean and a standard error per entry; each entry must be within 5
/// standard errors of the population value. Per entry a correct pair fails by chance with
/// probability ~1.3e-6 (Student t, 199 degrees of freedom); over the 78 entries of the six
/// models, < 1e-4.
#[test]
fn unnormalized_batch_gradient_is_unbiased_for_the_population_gradient() {
    use predhead::moments::population::Constants;
    use predhead::reduced::evaluate_explicit;
    let m = 2;
    let s = setting(m);
    let st = state(m);
    let k = Constants::<f64>::new(&s, ());
    let batches: Vec<Batch> = (0..200)
        .map(|step| {
            let (x1, x2) = batch_views(&s, 2026, step, 50);
            Batch::new(&s, x1, x2).unwrap()
        })
        .collect();
    for head in HeadMode::ALL {
        for stop_gradient in [true, false] {
            let model = Model {
                head,
                normalization: Normalization::None,
                stop_gradient,
            };
            let pop = evaluate_explicit::<f64>(&k, &model, &st, ()).unwrap();
            let flat = |loss: f64, gw: &[Vec<f64>], ge: &[Vec<f64>]| -> Vec<f64> {
                std::iter::once(loss)
                    .chain(gw.iter().flatten().copied())
                    .chain(ge.iter().flatten().copied())
                    .collect()
            };
            let want = flat(pop.loss, &pop.grad_w, &pop.grad_e);
            let samples: Vec<Vec<f64>> = batches
                .iter()
                .map(|b| {
                    let ev = batch_loss_and_gradient(&s, &model, &st, b).unwrap();
                    flat(ev.loss, &ev.grad_w, &ev.grad_e)
                })
                .collect();
            let nb = samples.len() as f64;
            for (c, w) in want.iter().enumerate() {
                let mean = samples.iter().map(|v| v[c]).sum::<f64>() / nb;
                let var = samples.iter().map(|v| (v[c] - mean).powi(2)).sum::<f64>() / (nb - 1.0);
                let se = (var / nb).sqrt();
                if se == 0.0 {
                    // An entry the head does not train: exactly zero on both sides.
                    assert_eq!((mean, *w), (0.0, 0.0), "{model:?} entry {c}");
                    continue;
                }
                let z = (mean - w) / se;
                assert!(
                    z.abs() < 5.0,
                    "{model:?} entry {c}: batch mean {mean} population {w} z = {z}"
                );
            }
        }
    }
}

/// The f64 rounding of the batch loss and gradient, bounded against the same code in MPFR
/// at 256 bits (`batch_loss_and_gradient_in::<rug::Float>`; state and batch are lifted
/// exactly). For every model at m = 2 and 3 (N = 7, 9) each entry of the f64 result must
/// agree with the MPFR one to 1e-14 * (1 + max |g|): each entry is a sum of a few dozen
/// products of relative error 2^-53 ~ 1.1e-16, and the batch-norm centring amplifies by
/// at most max|z - mu| / sqrt(v) <= sqrt(N) ~ 3 here, so a few 1e-15 is the worst case
/// expected (observed: 5.4e-16).
#[test]
fn f64_rounding_is_bounded_by_mpfr() {
    use predhead::network::batch_loss_and_gradient_in;
    use rug::Float;
    let mut worst = 0.0f64;
    for (m, n) in [(2usize, 7usize), (3, 9)] {
        let s = setting(m);
        let st = state(m);
        let b = batch(&s, n, 11 + m as u64);
        for head in HeadMode::ALL {
            for normalization in Normalization::ALL {
                for stop_gradient in [true, false] {
                    let model = Model {
                        head,
                        normalization,
                        stop_gradient,
                    };
                    let lo = batch_loss_and_gradient(&s, &model, &st, &b).unwrap();
                    let hi = batch_loss_and_gradient_in::<Float>(&s, &model, &st, &b, 256).unwrap();
                    let lo_all: Vec<f64> = std::iter::once(lo.loss)
                        .chain(lo.grad_w.iter().chain(&lo.grad_e).flatten().copied())
                        .collect();
                    let hi_all: Vec<f64> = std::iter::once(hi.loss.to_f64())
                        .chain(
                            hi.grad_w
                                .iter()
                                .chain(&hi.grad_e)
                                .flatten()
                                .map(Float::to_f64),
                        )
                        .collect();
                    let scale = 1.0 + hi_all.iter().fold(0.0f64, |a, x| a.max(x.abs()));
                    for (c, (x, y)) in lo_all.iter().zip(&hi_all).enumerate() {
                        let err = (x - y).abs() / scale;
                        worst = worst.max(err);
                        assert!(
                            err <= 1e-14,
                            "m={m} {model:?} entry {c}: f64 {x} mpfr {y} (relative {err:e})"
                        );
                    }
                }
            }
        }
    }
    eprintln!("worst f64 rounding relative to max |g|: {worst:e}");
}
