//! The population gradient against two independent paths (`derivations/population.md`,
//! eqs. (P7), (P10), (P11)):
//!
//! 1. central differences of the loss in every explicit coordinate of `W` and `E`, for
//!    every head x normalization x stop-gradient at `m = 2` and `3`; with
//!    `stop_gradient = true` the differenced function is the two-copy loss
//!    [`loss_two_copy`] in its online copy only (eq. (P7));
//! 2. forward-mode derivatives (dual numbers) of the two-copy loss computed directly from
//!    the moments (eqs. (P3)-(P6), no rearrangement) in every explicit coordinate: these are
//!    exact up to rounding, so the explicit gradient assembled from the reduced one
//!    (eq. (P10)) must agree to `1e-13` relative (normwise per block), including `d - 2 < m`
//!    where the Gram block is singular.
//!
//! The loss of [`evaluate`] (cancellation-free form, eq. (P9)) is also checked against the
//! direct two-copy loss to `1e-13` relative.

use predhead::data::{standard_normals, stream_rng, Domain};
use predhead::moments::population::{evaluate, loss_two_copy, Constants, Reduced};
use predhead::reduced::{evaluate_explicit, reduce};
use predhead::scalar::Scalar;
use predhead::setting::{HeadMode, Model, Normalization, Setting};
use predhead::square::Square;
use predhead::state::State;
use rug::{Float, Rational};
use std::ops::{Add, Div, Mul, Neg, Sub};

/// A dual number `v + d eps`, `eps^2 = 0`, over any scalar: forward-mode derivative of any
/// generic formula. Over 128-bit MPFR it gives the exact derivative of the direct formulas
/// to ~1e-35.
#[derive(Clone, Debug, PartialEq)]
struct Dual<S> {
    v: S,
    d: S,
}

impl<S: Scalar> PartialOrd for Dual<S> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        self.v.partial_cmp(&o.v)
    }
}
impl<S: Scalar> Add for Dual<S> {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Dual {
            v: self.v + o.v,
            d: self.d + o.d,
        }
    }
}
impl<S: Scalar> Sub for Dual<S> {
    type Output = Self;
    fn sub(self, o: Self) -> Self {
        Dual {
            v: self.v - o.v,
            d: self.d - o.d,
        }
    }
}
impl<S: Scalar> Mul for Dual<S> {
    type Output = Self;
    fn mul(self, o: Self) -> Self {
        Dual {
            d: self.d * o.v.clone() + self.v.clone() * o.d,
            v: self.v * o.v,
        }
    }
}
impl<S: Scalar> Div for Dual<S> {
    type Output = Self;
    fn div(self, o: Self) -> Self {
        Dual {
            d: (self.d * o.v.clone() - self.v.clone() * o.d) / o.v.sq(),
            v: self.v / o.v,
        }
    }
}
impl<S: Scalar> Neg for Dual<S> {
    type Output = Self;
    fn neg(self) -> Self {
        Dual {
            v: -self.v,
            d: -self.d,
        }
    }
}

impl<S: Scalar> Scalar for Dual<S> {
    type Ctx = S::Ctx;
    fn ctx(&self) -> S::Ctx {
        self.v.ctx()
    }
    fn from_f64(x: f64, ctx: S::Ctx) -> Self {
        Dual {
            v: S::from_f64(x, ctx),
            d: S::zero(ctx),
        }
    }
    fn from_rational(q: &Rational, ctx: S::Ctx) -> Self {
        Dual {
            v: S::from_rational(q, ctx),
            d: S::zero(ctx),
        }
    }
    fn sqrt(self) -> Self {
        let s = self.v.sqrt();
        Dual {
            d: self.d / (s.cst(2.0) * s.clone()),
            v: s,
        }
    }
    fn abs(self) -> Self {
        if self.v < S::zero(self.v.ctx()) {
            -self
        } else {
            self
        }
    }
    fn ln(self) -> Self {
        Dual {
            d: self.d / self.v.clone(),
            v: self.v.ln(),
        }
    }
    fn exp(self) -> Self {
        let e = self.v.exp();
        Dual {
            d: self.d * e.clone(),
            v: e,
        }
    }
    fn to_f64(&self) -> f64 {
        self.v.to_f64()
    }
    fn is_finite(&self) -> bool {
        self.v.is_finite() && self.d.is_finite()
    }
    fn to_decimal(&self) -> String {
        format!("{}+{}eps", self.v.to_decimal(), self.d.to_decimal())
    }
}

/// Which explicit coordinate carries the derivative seed.
#[derive(Clone, Copy)]
enum Seed {
    W(usize, usize),
    E(usize, usize),
    None,
}

/// The reduced coordinates of `state` as dual numbers at precision `prec`, with derivative
/// 1 in `seed`.
fn reduce_dual(state: &State, seed: Seed, prec: u32) -> Reduced<Dual<Float>> {
    let m = state.neurons();
    let unit = |on: bool| Float::with_val(prec, if on { 1.0 } else { 0.0 });
    let lift = |j: usize, i: usize| Dual {
        v: Float::with_val(prec, state.w[j][i]),
        d: unit(matches!(seed, Seed::W(a, b) if a == j && b == i)),
    };
    let gram = Square::from_fn(m, |j, k| {
        let mut acc = Dual::<Float>::zero(prec);
        for i in 2..state.dim() {
            acc = acc + lift(j, i) * lift(k, i);
        }
        acc
    });
    Reduced {
        a: (0..m).map(|j| lift(j, 0)).collect(),
        b: (0..m).map(|j| lift(j, 1)).collect(),
        gram,
        e: Square::from_fn(m, |j, r| Dual {
            v: Float::with_val(prec, state.e[j][r]),
            d: unit(matches!(seed, Seed::E(a, b) if a == j && b == r)),
        }),
    }
}

fn setting(dim: u64, m: usize) -> Setting {
    Setting {
        dim,
        patches: 6,
        feature_patches: 2,
        alpha: [2.0, 1.2],
        noise_std: 0.8,
        neurons: m,
    }
}

/// A random state: W entries N(0, scale^2) with the feature coordinates boosted so both
/// features matter, and a head `I + offdiag` with off-diagonal entries N(0, 0.1^2) (and a
/// perturbed diagonal for the `linear` head).
fn random_state(dim: usize, m: usize, seed: u64) -> State {
    let mut rng = stream_rng(Domain::Aux, seed, 0, 0);
    let z = standard_normals(&mut rng, m * dim + m * m);
    let w = (0..m)
        .map(|j| {
            (0..dim)
                .map(|i| {
                    let s = if i < 2 { 0.8 } else { 0.5 };
                    s * z[j * dim + i]
                })
                .collect()
        })
        .collect();
    let e = (0..m)
        .map(|j| {
            (0..m)
                .map(|r| {
                    let x = 0.1 * z[m * dim + j * m + r];
                    if j == r {
                        1.0 + x
                    } else {
                        x
                    }
                })
                .collect()
        })
        .collect();
    State { w, e }
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

/// The population loss as a function of the explicit online copy (the target copy fixed at
/// `target`) or of the one shared copy (`target = None`).
fn loss_at(k: &Constants<f64>, model: &Model, online: &State, target: Option<&State>) -> f64 {
    let on = reduce::<f64>(online, ());
    let tg = reduce::<f64>(target.unwrap_or(online), ());
    loss_two_copy(k, model, &on, &tg).unwrap()
}

/// Central differences with one Richardson step, `(4 D(h/2) - D(h)) / 3` with `h = 2e-5`.
/// The loss can vary on a scale `~1e-2` in a head entry (a small neuron mixed with one 60
/// times larger), so the truncation error is `O((h / 1e-2)^4) ~ 1e-11` relative, and the
/// rounding `~1e-16 L / h ~ 1e-11`; the bound `1e-7` relative to the largest gradient entry
/// of the block is far above both, and a sign or factor error anywhere gives O(1).
#[test]
fn central_differences_every_model_and_stop_gradient() {
    for (m, dim) in [(2usize, 5usize), (3, 5), (3, 3)] {
        let s = setting(dim as u64, m);
        let k = Constants::<f64>::new(&s, ());
        for (si, seed) in [11u64, 12].into_iter().enumerate() {
            let mut st = random_state(dim, m, seed + 10 * m as u64 + si as u64);
            for model in models() {
                if model.head == HeadMode::IdentityOffdiag {
                    for j in 0..m {
                        st.e[j][j] = 1.0;
                    }
                }
                let ev = evaluate_explicit::<f64>(&k, &model, &st, ()).unwrap();
                let target = if model.stop_gradient { Some(&st) } else { None };
                // Richardson-extrapolated central difference: (4 D(h/2) - D(h)) / 3.
                let h = 2e-5;
                let cd = |f: &dyn Fn(&mut State, f64)| {
                    let d = |h: f64| {
                        let mut p = st.clone();
                        f(&mut p, h);
                        let mut q = st.clone();
                        f(&mut q, -h);
                        (loss_at(&k, &model, &p, target) - loss_at(&k, &model, &q, target))
                            / (2.0 * h)
                    };
                    (4.0 * d(h / 2.0) - d(h)) / 3.0
                };
                let gw_scale = ev
                    .grad_w
                    .iter()
                    .flatten()
                    .fold(0.0f64, |a, x| a.max(x.abs()));
                let ge_scale = ev
                    .grad_e
                    .iter()
                    .flatten()
                    .fold(0.0f64, |a, x| a.max(x.abs()));
                for j in 0..m {
                    for i in 0..dim {
                        let d = cd(&|s: &mut State, h| s.w[j][i] += h);
                        let an = ev.grad_w[j][i];
                        assert!(
                            (d - an).abs() <= 1e-7 * gw_scale.max(1e-300),
                            "{model:?} m={m} d={dim} w[{j}][{i}]: fd {d} analytic {an}"
                        );
                    }
                    for r in 0..m {
                        let d = cd(&|s: &mut State, h| s.e[j][r] += h);
                        let want = if model.head.trainable(j, r) { d } else { 0.0 };
                        let an = ev.grad_e[j][r];
                        assert!(
                            (want - an).abs() <= 1e-7 * ge_scale.max(d.abs()).max(1e-300),
                            "{model:?} m={m} d={dim} E[{j}][{r}]: fd {d} analytic {an}"
                        );
                    }
                }
            }
        }
    }
}

/// Relative normwise difference of two blocks: `max |x - y| / max |y|` (0 when both vanish).
fn block_err(x: &[f64], y: &[f64]) -> f64 {
    let diff = x
        .iter()
        .zip(y)
        .fold(0.0f64, |a, (p, q)| a.max((p - q).abs()));
    let scale = y.iter().fold(0.0f64, |a, q| a.max(q.abs()));
    if diff == 0.0 {
        0.0
    } else {
        diff / scale
    }
}

/// Forward-mode derivatives of the direct two-copy loss (eq. (P7), computed from
/// eqs. (P3)-(P6) without any rearrangement) in every explicit coordinate, in 128-bit MPFR
/// dual numbers, against the explicit gradient assembled from the reduced one (eqs.
/// (P10)-(P11)):
/// - in 128-bit MPFR the two agree to `1e-30` relative (normwise per block): an algebraic
///   identity check of every rearranged adjoint formula, free of `f64` rounding;
/// - the `f64` gradient agrees with the exact derivative to `1e-13` relative, normwise per
///   block (`W` block, `E` block), and the `f64` loss with the direct loss to `1e-13`.
///
/// Includes `d - 2 < m` (d = 3 with m = 3, 4; d = 4 with m = 4), where the Gram block is
/// singular, and `d = 40`.
#[test]
fn explicit_gradient_equals_forward_mode_derivative_of_direct_loss() {
    const PREC: u32 = 128;
    let mut worst64: f64 = 0.0;
    let mut worst_mp: f64 = 0.0;
    for (m, dim) in [(2usize, 5usize), (3, 6), (3, 3), (4, 3), (4, 4), (2, 40)] {
        let s = setting(dim as u64, m);
        let k = Constants::<f64>::new(&s, ());
        let kmp = Constants::<Float>::new(&s, PREC);
        let kd = Constants::<Dual<Float>>::new(&s, PREC);
        for seed in 0..2u64 {
            let mut st = random_state(dim, m, 1000 + 31 * seed + m as u64 * 7 + dim as u64);
            for model in models() {
                if model.head == HeadMode::IdentityOffdiag {
                    for j in 0..m {
                        st.e[j][j] = 1.0;
                    }
                }
                let ev = evaluate_explicit::<f64>(&k, &model, &st, ()).unwrap();
                let evmp = evaluate_explicit::<Float>(&kmp, &model, &st, PREC).unwrap();
                let plain = reduce_dual(&st, Seed::None, PREC);
                let direct = loss_two_copy(&kd, &model, &plain, &plain).unwrap().v;
                let lerr = rel(&Float::with_val(PREC, ev.loss), &direct);
                let lerr_mp = rel(&evmp.loss, &direct);
                let deriv = |seed: Seed| {
                    let on = reduce_dual(&st, seed, PREC);
                    let tg = if model.stop_gradient {
                        plain.clone()
                    } else {
                        on.clone()
                    };
                    loss_two_copy(&kd, &model, &on, &tg).unwrap().d
                };
                let (mut fw, mut a64, mut amp) = (Vec::new(), Vec::new(), Vec::new());
                for j in 0..m {
                    for i in 0..dim {
                        fw.push(deriv(Seed::W(j, i)));
                        a64.push(Float::with_val(PREC, ev.grad_w[j][i]));
                        amp.push(evmp.grad_w[j][i].clone());
                    }
                }
                let (mut fe, mut e64, mut emp) = (Vec::new(), Vec::new(), Vec::new());
                for j in 0..m {
                    for r in 0..m {
                        let d = deriv(Seed::E(j, r));
                        fe.push(if model.head.trainable(j, r) {
                            d
                        } else {
                            Float::with_val(PREC, 0)
                        });
                        e64.push(Float::with_val(PREC, ev.grad_e[j][r]));
                        emp.push(evmp.grad_e[j][r].clone());
                    }
                }
                let (ew, ee) = (block_err_mp(&a64, &fw), block_err_mp(&e64, &fe));
                let (ew_mp, ee_mp) = (block_err_mp(&amp, &fw), block_err_mp(&emp, &fe));
                worst64 = worst64.max(ew).max(ee).max(lerr);
                worst_mp = worst_mp.max(ew_mp).max(ee_mp).max(lerr_mp);
                let tag = format!("{model:?} m={m} d={dim} seed={seed}");
                assert!(lerr_mp <= 1e-30, "{tag}: MPFR loss rel err {lerr_mp:e}");
                assert!(ew_mp <= 1e-30, "{tag}: MPFR W block rel err {ew_mp:e}");
                assert!(ee_mp <= 1e-30, "{tag}: MPFR E block rel err {ee_mp:e}");
                assert!(lerr <= 1e-13, "{tag}: f64 loss rel err {lerr:e}");
                assert!(ew <= 1e-13, "{tag}: f64 W block rel err {ew:e}");
                assert!(ee <= 1e-13, "{tag}: f64 E block rel err {ee:e}");
            }
        }
    }
    eprintln!("worst relative error vs exact derivative: f64 {worst64:e}, MPFR-128 {worst_mp:e}");
}

/// `|x - y| / |y|` in MPFR, as `f64`.
fn rel(x: &Float, y: &Float) -> f64 {
    let d = Float::with_val(y.prec(), x - y);
    (d / y).to_f64().abs()
}

/// Relative normwise difference `max |x - y| / max |y|` of two MPFR blocks (0 when equal).
fn block_err_mp(x: &[Float], y: &[Float]) -> f64 {
    let diff = x.iter().zip(y).fold(0.0f64, |a, (p, q)| {
        a.max(Float::with_val(q.prec(), p - q).to_f64().abs())
    });
    let scale = y.iter().fold(0.0f64, |a, q| a.max(q.to_f64().abs()));
    if diff == 0.0 {
        0.0
    } else {
        diff / scale
    }
}

/// The loss and gradient depend on the noise parts only through the Gram block
/// (eq. (P11)): rotating the noise coordinates of every `w_j` by one orthogonal map leaves
/// the loss unchanged and rotates the noise part of the gradient, to `1e-13` relative.
#[test]
fn noise_rotation_invariance() {
    let (m, dim) = (3usize, 6usize);
    let s = setting(dim as u64, m);
    let k = Constants::<f64>::new(&s, ());
    let st = random_state(dim, m, 77);
    // A Givens rotation in coordinates (2, 4) and one in (3, 5).
    let (c1, s1) = (0.6f64, 0.8f64);
    let (c2, s2) = (0.28f64, 0.96f64);
    let rot = |w: &[f64]| {
        let mut v = w.to_vec();
        v[2] = c1 * w[2] - s1 * w[4];
        v[4] = s1 * w[2] + c1 * w[4];
        v[3] = c2 * w[3] - s2 * w[5];
        v[5] = s2 * w[3] + c2 * w[5];
        v
    };
    let st2 = State {
        w: st.w.iter().map(|w| rot(w)).collect(),
        e: st.e.clone(),
    };
    for model in models() {
        let a = evaluate_explicit::<f64>(&k, &model, &st, ()).unwrap();
        let b = evaluate_explicit::<f64>(&k, &model, &st2, ()).unwrap();
        assert!((a.loss - b.loss).abs() <= 1e-13 * a.loss.abs(), "{model:?}");
        let ga: Vec<f64> = a.grad_w.iter().flat_map(|g| rot(g)).collect();
        let gb: Vec<f64> = b.grad_w.iter().flatten().copied().collect();
        assert!(block_err(&gb, &ga) <= 1e-13, "{model:?}");
        let ea: Vec<f64> = a.grad_e.iter().flatten().copied().collect();
        let eb: Vec<f64> = b.grad_e.iter().flatten().copied().collect();
        assert!(block_err(&eb, &ea) <= 1e-13, "{model:?}");
    }
}

/// `evaluate` on reduced coordinates and `evaluate_explicit` agree on the loss and on the
/// reduced gradient mapped back (eq. (P10)), for the same state.
#[test]
fn reduced_and_explicit_agree() {
    let (m, dim) = (2usize, 7usize);
    let s = setting(dim as u64, m);
    let k = Constants::<f64>::new(&s, ());
    let st = random_state(dim, m, 5);
    for model in models() {
        let x = reduce::<f64>(&st, ());
        let ev = evaluate(&k, &model, &x).unwrap();
        let ex = evaluate_explicit::<f64>(&k, &model, &st, ()).unwrap();
        assert_eq!(ev.loss, ex.loss);
        for j in 0..m {
            assert_eq!(ev.grad_a[j], ex.grad_w[j][0]);
            assert_eq!(ev.grad_b[j], ex.grad_w[j][1]);
        }
    }
}
