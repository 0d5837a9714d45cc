//! The exact population loss and gradient of objective (3.3) in the limit `N -> infinity`
//! (`derivations/population.md`).
//!
//! Everything is a function of the reduced coordinates ([`Reduced`]): the feature
//! coordinates `a_j = <w_j, v1>`, `b_j = <w_j, v2>`, the Gram block `G = U^T U` of the
//! noise parts `u_j = Pi w_j`, and the head `E`. The gradient with respect to `w_j` is
//! `g_a[j] v1 + g_b[j] v2 + sum_k noise_coef[j][k] u_k` (eq. (P10)), so it never leaves
//! `span(v1, v2, u_1..u_m)` and the flow closes on these coordinates (eq. (P11)).
//!
//! [`evaluate`] returns a fresh [`Evaluation`]; [`evaluate_into`] overwrites a reused one
//! and does not allocate in `f64` (for the flow integrator). Both use the cancellation-free
//! forms (P8)-(P10), accurate to a few ulps per block (`tests/mpfr.rs`); [`loss_two_copy`]
//! is the direct definition (P7) that the tests differentiate.

use crate::error::{Error, Result};
use crate::moments::noise::{cube_moment, cube_moment_from};
use crate::moments::overlap::OverlapMoments;
use crate::scalar::Scalar;
use crate::setting::{Model, Normalization, Setting};
use crate::sized::with_neurons;
use crate::square::Square;

/// The constants of a setting at the working precision: overlap moments rounded once,
/// `alpha_l^6 / 2`, `s^6`.
#[derive(Clone, Debug)]
pub struct Constants<S: Scalar> {
    /// `E[K^2]`.
    pub ek2: S,
    /// `E[K K']`.
    pub ekk: S,
    /// `E[K^2] - E[K K'] = E[K (K - K')]`, exact rational rounded once (`derivations/population.md`,
    /// eq. (P9)).
    pub ek2_minus_ekk: S,
    /// `kappa = E[K K'] / E[K^2]`, exact rational rounded once (eq. (P9)).
    pub kappa: S,
    /// `OPT = 2 - 2 kappa` per neuron, exact rational rounded once (eq. (P12)).
    pub opt_neuron: S,
    /// `n = P/2 - E[K]`, expected noise patches per view.
    pub n: S,
    /// `h_l = alpha_l^6 / 2` (label uniform on {1, 2}).
    pub h: [S; 2],
    /// `s^6`.
    pub s6: S,
    /// `P0^2` (un-augmented `X`: all `P0` feature patches present).
    pub p0_sq: S,
    /// `P - P0` (un-augmented `X`: noise patches).
    pub noise_full: S,
    /// The exact overlap moments they came from.
    pub overlap: OverlapMoments,
}

impl<S: Scalar> Constants<S> {
    /// Rounds the exact constants of `setting` to the context `ctx`.
    pub fn new(setting: &Setting, ctx: S::Ctx) -> Self {
        let overlap = OverlapMoments::new(setting);
        let alpha6 = |a: f64| {
            let x = S::from_f64(a, ctx);
            x.cube().sq()
        };
        let half = S::from_f64(0.5, ctx);
        let s = S::from_f64(setting.noise_std, ctx);
        let p0 = S::from_f64(setting.feature_patches as f64, ctx);
        let gap = rug::Rational::from(&overlap.second - &overlap.cross);
        let kappa = rug::Rational::from(&overlap.cross / &overlap.second);
        Constants {
            ek2: S::from_rational(&overlap.second, ctx),
            ekk: S::from_rational(&overlap.cross, ctx),
            ek2_minus_ekk: S::from_rational(&gap, ctx),
            kappa: S::from_rational(&kappa, ctx),
            opt_neuron: S::from_rational(&overlap.opt_per_neuron(), ctx),
            n: S::from_rational(&overlap.noise_patches, ctx),
            h: [
                half.clone() * alpha6(setting.alpha[0]),
                half * alpha6(setting.alpha[1]),
            ],
            s6: s.cube().sq(),
            p0_sq: p0.sq(),
            noise_full: S::from_f64((setting.patches - setting.feature_patches) as f64, ctx),
            overlap,
        }
    }
}

/// The reduced coordinates of a state (`derivations/population.md`, eq. (P11)).
#[derive(Clone, Debug, PartialEq)]
pub struct Reduced<S: Scalar> {
    /// `a_j = <w_j, v1>`.
    pub a: Vec<S>,
    /// `b_j = <w_j, v2>`.
    pub b: Vec<S>,
    /// `G_jk = <u_j, u_k>`, `u_j = Pi w_j` (symmetric positive semi-definite).
    pub gram: Square<S>,
    /// The head `E`.
    pub e: Square<S>,
}

impl<S: Scalar> Reduced<S> {
    /// Number of neurons `m`.
    pub fn neurons(&self) -> usize {
        self.a.len()
    }

    /// Feature coordinate `c_{j,l}`: `a_j` for `l = 0`, `b_j` for `l = 1`.
    pub fn feature(&self, j: usize, l: usize) -> &S {
        if l == 0 {
            &self.a[j]
        } else {
            &self.b[j]
        }
    }

    /// `||w_j||^2 = a_j^2 + b_j^2 + G_jj`.
    pub fn norm_sq(&self, j: usize) -> S {
        self.a[j].sq() + self.b[j].sq() + self.gram.at(j, j).clone()
    }

    /// The context of the coordinates.
    pub fn ctx(&self) -> S::Ctx {
        self.e.at(0, 0).ctx()
    }
}

/// The population moment matrices at a state (`derivations/population.md`, eqs. (P1)-(P4)).
#[derive(Clone, Debug)]
pub struct Moments<S: Scalar> {
    /// `Phi_ij = sum_l h_l c_il^3 c_jl^3` (eq. (P1)).
    pub phi: Square<S>,
    /// `Psi_ij = s^6 (9 G_ii G_jj G_ij + 6 G_ij^3)` (eq. (P2), `derivations/noise.md` (N3)).
    pub psi: Square<S>,
    /// `M = E[f(X^(1)) f(X^(1))^T] = E[K^2] Phi + n Psi`, the same for `X^(2)` (eq. (P3)).
    pub second: Square<S>,
    /// `C = E[f(X^(1)) f(X^(2))^T] = E[K K'] Phi` (eq. (P4)).
    pub cross: Square<S>,
}

/// The feature cubes `p_{j,l} = c_{j,l}^3` (eq. (P1)).
fn cubes<S: Scalar>(x: &Reduced<S>) -> Vec<[S; 2]> {
    (0..x.neurons())
        .map(|j| [x.a[j].cube(), x.b[j].cube()])
        .collect()
}

/// `Phi_ij = sum_l h_l p_il p_jl` from the cubes of two (possibly different) copies.
fn phi_matrix<S: Scalar>(k: &Constants<S>, p: &[[S; 2]], q: &[[S; 2]]) -> Square<S> {
    Square::from_fn(p.len(), |i, j| {
        k.h[0].clone() * p[i][0].clone() * q[j][0].clone()
            + k.h[1].clone() * p[i][1].clone() * q[j][1].clone()
    })
}

/// `Psi_ij` of eq. (P2) from a Gram block.
fn psi_matrix<S: Scalar>(k: &Constants<S>, g: &Square<S>) -> Square<S> {
    Square::from_fn(g.n(), |i, j| {
        cube_moment(&k.s6, g.at(i, i), g.at(j, j), g.at(i, j))
    })
}

/// Computes the moment matrices (eqs. (P1)-(P4)). The means `E[f_j(X^(v))]` vanish
/// identically (eq. (P0)), so second moments are covariances.
pub fn moments<S: Scalar>(k: &Constants<S>, x: &Reduced<S>) -> Moments<S> {
    let p = cubes(x);
    moments_from(k, x, &p)
}

fn moments_from<S: Scalar>(k: &Constants<S>, x: &Reduced<S>, p: &[[S; 2]]) -> Moments<S> {
    let m = x.neurons();
    let z = || Square::zeros(m, x.ctx());
    let mut mo = Moments {
        phi: z(),
        psi: z(),
        second: z(),
        cross: z(),
    };
    let mut hp = vec![[S::zero(x.ctx()), S::zero(x.ctx())]; m];
    let mut g9 = vec![S::zero(x.ctx()); m];
    fill_moments(k, x, m, p, &mut hp, &mut g9, &mut mo);
    mo
}

/// Eqs. (P1)-(P4) written into `mo` (sized `m x m`). Also writes the per-neuron factors
/// the gradient reuses: `hp_{j,l} = h_l p_{j,l}` of (P1) and `g9_j = 9 G_jj` of (P2).
/// Inlined so that a compile-time `m` (see [`evaluate_into`]) reaches the loops.
#[inline(always)]
fn fill_moments<S: Scalar>(
    k: &Constants<S>,
    x: &Reduced<S>,
    m: usize,
    p: &[[S; 2]],
    hp: &mut [[S; 2]],
    g9: &mut [S],
    mo: &mut Moments<S>,
) {
    let mm = m * m;
    let g = &x.gram.entries()[..mm];
    let (p, hp, g9) = (&p[..m], &mut hp[..m], &mut g9[..m]);
    let (nine, six) = (k.s6.cst(9.0), k.s6.cst(6.0));
    for j in 0..m {
        hp[j] = [
            k.h[0].clone() * p[j][0].clone(),
            k.h[1].clone() * p[j][1].clone(),
        ];
        g9[j] = nine.clone() * g[j * m + j].clone();
    }
    let phi = &mut mo.phi.entries_mut()[..mm];
    let psi = &mut mo.psi.entries_mut()[..mm];
    let second = &mut mo.second.entries_mut()[..mm];
    let cross = &mut mo.cross.entries_mut()[..mm];
    for i in 0..m {
        for j in 0..m {
            let ij = i * m + j;
            // (P1): Phi_ij = sum_l h_l p_il p_jl.
            let f = hp[i][0].clone() * p[j][0].clone() + hp[i][1].clone() * p[j][1].clone();
            // (P2): Psi_ij = s^6 (9 G_ii G_jj G_ij + 6 G_ij^3).
            let s = cube_moment_from(&k.s6, &g9[i], &g[j * m + j], &g[ij], &six);
            // (P3): M = E[K^2] Phi + n Psi; (P4): C = E[K K'] Phi.
            second[ij] = k.ek2.clone() * f.clone() + k.n.clone() * s.clone();
            cross[ij] = k.ekk.clone() * f.clone();
            phi[ij] = f;
            psi[ij] = s;
        }
    }
}

/// Population loss and gradient at a reduced state.
#[derive(Clone, Debug)]
pub struct Evaluation<S: Scalar> {
    /// The population loss `L` (eqs. (P5)/(P6), evaluated as (P9)).
    pub loss: S,
    /// `dL/da_j` (eq. (P10a)).
    pub grad_a: Vec<S>,
    /// `dL/db_j` (eq. (P10a)).
    pub grad_b: Vec<S>,
    /// `Sigma`: `dL/du_j = sum_k Sigma_jk u_k` (eq. (P10c)); symmetric.
    pub noise_coef: Square<S>,
    /// `dL/dE`, zero on entries the head mode does not train (eq. (P10b)).
    pub grad_e: Square<S>,
    /// The moments it was computed from.
    pub moments: Moments<S>,
    /// Work space reused by [`evaluate_into`].
    scratch: Scratch<S>,
}

/// Intermediate quantities of [`evaluate_into`], kept so that repeated evaluations do not
/// allocate.
#[derive(Clone, Debug)]
struct Scratch<S> {
    /// Feature cubes `p_{j,l}`.
    p: Vec<[S; 2]>,
    /// `h_l p_{j,l}` (eq. (P1)).
    hp: Vec<[S; 2]>,
    /// `9 G_jj` (eqs. (P2), (P10c)).
    g9: Vec<S>,
    /// `omega` transposed: row `r` holds `omega_sr` over `s` (eq. (P8)).
    omega_t: Square<S>,
    /// Online adjoints `g^on_{j,l}` (eq. (P10a)).
    g_phi: Vec<[S; 2]>,
    /// `g^both_{j,l}` (eq. (P10a)); only set (and read) without stop-gradient.
    g_both: Vec<[S; 2]>,
    /// `Mbar` (eq. (P10c)).
    m_bar: Square<S>,
    /// `delta = E[j][.] - e_j` for the current row.
    delta: Vec<S>,
    /// `Psi delta` for the current row.
    psi_delta: Vec<S>,
}

impl<S: Scalar> Evaluation<S> {
    /// An all-zero evaluation for `m` neurons at `ctx`: a buffer for [`evaluate_into`].
    pub fn zeros(m: usize, ctx: S::Ctx) -> Self {
        let z = || Square::zeros(m, ctx);
        let pair = vec![[S::zero(ctx), S::zero(ctx)]; m];
        Evaluation {
            loss: S::zero(ctx),
            grad_a: vec![S::zero(ctx); m],
            grad_b: vec![S::zero(ctx); m],
            noise_coef: z(),
            grad_e: z(),
            moments: Moments {
                phi: z(),
                psi: z(),
                second: z(),
                cross: z(),
            },
            scratch: Scratch {
                p: pair.clone(),
                hp: pair.clone(),
                g9: vec![S::zero(ctx); m],
                omega_t: z(),
                g_phi: pair.clone(),
                g_both: pair,
                m_bar: z(),
                delta: vec![S::zero(ctx); m],
                psi_delta: vec![S::zero(ctx); m],
            },
        }
    }
}

/// The population loss written with an online copy and a target copy of the encoder
/// (`derivations/population.md`, eq. (P7)): the online branch `Norm(F(X^(1)))` uses
/// `online.a, online.b, online.gram` and the head `online.e`; the target branch
/// `Norm(f(X^(2)))` uses `target.a, target.b, target.gram` (its `e` is ignored).
///
/// This is the definition the gradient rule rests on: with `stop_gradient = true` the
/// gradient of [`evaluate`] is the derivative of this function in the online copy at
/// `online = target`; with `false` it is the derivative in both copies (the derivative of
/// the one-copy loss). It is computed directly from eqs. (P3)-(P6) (no rearrangement), so
/// it is also an independent path to the loss. Errors when a `batchnorm` variance is not
/// positive.
pub fn loss_two_copy<S: Scalar>(
    k: &Constants<S>,
    model: &Model,
    online: &Reduced<S>,
    target: &Reduced<S>,
) -> Result<S> {
    let m = online.neurons();
    let ctx = online.ctx();
    let p_on = cubes(online);
    let p_tg = cubes(target);
    let phi_on = phi_matrix(k, &p_on, &p_on);
    let psi_on = psi_matrix(k, &online.gram);
    let phi_x = phi_matrix(k, &p_on, &p_tg);
    let e = &online.e;
    let two = S::from_f64(2.0, ctx);
    let mut loss = S::zero(ctx);
    for j in 0..m {
        let mut q = S::zero(ctx);
        let mut r = S::zero(ctx);
        for a in 0..m {
            for b in 0..m {
                let mab =
                    k.ek2.clone() * phi_on.at(a, b).clone() + k.n.clone() * psi_on.at(a, b).clone();
                q = q + e.at(j, a).clone() * mab * e.at(j, b).clone();
            }
            r = r + e.at(j, a).clone() * k.ekk.clone() * phi_x.at(a, j).clone();
        }
        let gjj = target.gram.at(j, j);
        let t = k.ek2.clone()
            * (k.h[0].clone() * p_tg[j][0].sq() + k.h[1].clone() * p_tg[j][1].sq())
            + k.n.clone() * cube_moment(&k.s6, gjj, gjj, gjj);
        match model.normalization {
            Normalization::Batchnorm => {
                check_variances(j, &q, &t)?;
                loss = loss + two.clone() - two.clone() * r / (q * t).sqrt();
            }
            Normalization::None => loss = loss + q + t - two.clone() * r,
        }
    }
    Ok(loss)
}

/// Errors unless both batch-norm variances of neuron `j` are positive.
#[inline]
fn check_variances<S: Scalar>(j: usize, q: &S, t: &S) -> Result<()> {
    let zero = S::zero(q.ctx());
    if q.partial_cmp(&zero) != Some(std::cmp::Ordering::Greater) {
        return Err(variance_error(format!("F_{j}(X^(1))"), q.to_f64()));
    }
    if t.partial_cmp(&zero) != Some(std::cmp::Ordering::Greater) {
        return Err(variance_error(format!("f_{j}(X^(2))"), t.to_f64()));
    }
    Ok(())
}

/// The error of [`check_variances`] (kept out of line: the evaluation loop never takes it).
#[cold]
#[inline(never)]
fn variance_error(of: String, value: f64) -> Error {
    Error::numerical(
        format!("population variance of {of}"),
        if value.is_finite() {
            format!("must be positive for batchnorm, got {value:?}")
        } else {
            // Only an overflow of the moments gives a variance that is not a finite number.
            format!("overflows f64 (got {value:?}): the state's values are too large")
        },
    )
}

/// Evaluates the population loss and gradient (`derivations/population.md`, eqs.
/// (P5)-(P12)).
///
/// The loss is that of the two-copy function [`loss_two_copy`] at `online = target`; with
/// `stop_gradient = true` the gradient is the online copy's, with `false` the sum of both
/// (eq. (P7)). Everything is evaluated in the cancellation-free form of
/// `derivations/population.md`, Section "Numerics" (eqs. (P8)-(P10)): the loss as
/// `m OPT + 2 kappa sum_j (1 - beta_j)` with `1 - beta_j` from a sum of non-negative
/// terms, and the feature and head gradients through the antisymmetric products
/// `omega_sr = p_s1 p_r2 - p_s2 p_r1`, so that the gradient vanishes exactly at pure-feature
/// states and is accurate to a few ulps (relative, per block) near them.
///
/// # Examples
/// At the pure-feature state `w_1 = v1`, `w_2 = v2`, `E = I` (what Theorem 4.1's flow
/// reaches), the loss is the optimum `m OPT` of eq. (P12) and the gradient vanishes
/// exactly; a generic state has a larger loss and a non-zero gradient.
/// ```
/// use predhead::config::parse_config;
/// use predhead::moments::population::{evaluate, opt, Constants};
/// use predhead::reduced::reduce;
/// use predhead::state::State;
/// let config = parse_config(
///     "[setting]\ndim = 6\npatches = 4\nfeature_patches = 2\nalpha = [4.0, 1.0]\n\
///      noise_std = 1.0\nneurons = 2\n[model]\nhead = \"identity-offdiag\"\n\
///      normalization = \"batchnorm\"\nstop_gradient = true\n",
/// )?;
/// let k = Constants::<f64>::new(&config.setting, ());
/// let pure = State::with_identity_head(vec![
///     vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
///     vec![0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
/// ]);
/// let ev = evaluate(&k, &config.model, &reduce(&pure, ()))?;
/// let best = opt(&k, 2, ());
/// assert!((ev.loss - best).abs() <= 1e-15 * best);
/// assert!(ev.grad_a.iter().chain(&ev.grad_b).all(|g| *g == 0.0));
/// let generic = State::with_identity_head(vec![
///     vec![0.5, 0.2, 0.3, -0.1, 0.0, 0.2],
///     vec![0.1, 0.4, -0.2, 0.3, 0.1, 0.0],
/// ]);
/// let ev = evaluate(&k, &config.model, &reduce(&generic, ()))?;
/// assert!(ev.loss > best);
/// assert!(ev.grad_a.iter().any(|g| *g != 0.0));
/// # Ok::<(), predhead::Error>(())
/// ```
///
/// # Errors
/// [`Error::Numerical`] when a normalization variance is not positive (`batchnorm`), e.g.
/// at `W = 0`, naming the neuron:
/// ```
/// # use predhead::config::parse_config;
/// # use predhead::moments::population::{evaluate, Constants};
/// # use predhead::reduced::reduce;
/// # use predhead::state::State;
/// # let config = parse_config(
/// #     "[setting]\ndim = 6\npatches = 4\nfeature_patches = 2\nalpha = [4.0, 1.0]\n\
/// #      noise_std = 1.0\nneurons = 2\n[model]\nhead = \"identity-offdiag\"\n\
/// #      normalization = \"batchnorm\"\nstop_gradient = true\n",
/// # )?;
/// # let k = Constants::<f64>::new(&config.setting, ());
/// let zero = State::with_identity_head(vec![vec![0.0; 6], vec![0.0; 6]]);
/// let err = evaluate(&k, &config.model, &reduce(&zero, ())).unwrap_err();
/// assert!(err.to_string().contains("F_0(X^(1))"));
/// # Ok::<(), predhead::Error>(())
/// ```
pub fn evaluate<S: Scalar>(
    k: &Constants<S>,
    model: &Model,
    x: &Reduced<S>,
) -> Result<Evaluation<S>> {
    let mut out = Evaluation::zeros(x.neurons(), x.ctx());
    evaluate_into(k, model, x, &mut out)?;
    Ok(out)
}

/// [`evaluate`] into a reused buffer: `out` is overwritten (and resized if it was made for
/// another `m`), so that repeated evaluations, as in the flow integrator, do not allocate
/// (`f64`). On error `out` holds partial values.
pub fn evaluate_into<S: Scalar>(
    k: &Constants<S>,
    model: &Model,
    x: &Reduced<S>,
    out: &mut Evaluation<S>,
) -> Result<()> {
    let m = x.neurons();
    if out.grad_a.len() != m {
        *out = Evaluation::zeros(m, x.ctx());
    }
    // One code path for every m; for the small m of the flow it is instantiated with m a
    // compile-time constant, so that the loops over neurons are unrolled and their bounds
    // checks dropped (same operations, same order, same values).
    with_neurons!(m, |M| evaluate_sized::<S, M>(k, model, x, out))
}

/// The body of [`evaluate_into`] for `m = M` neurons (`M = 0`: `m` read from `x`), with
/// `out` sized for `m`. Matrices are read and written as flat row-major slices of length
/// `m * m`, entry `(i, j)` at `i * m + j`.
///
/// The parts ([`fill_omega`], [`batchnorm_rows`] or [`plain_rows`], [`feature_gradients`],
/// [`noise_coefficients`]) are inlined here, so that with `M > 0` their loops over neurons
/// are unrolled as one function.
fn evaluate_sized<S: Scalar, const M: usize>(
    k: &Constants<S>,
    model: &Model,
    x: &Reduced<S>,
    out: &mut Evaluation<S>,
) -> Result<()> {
    let m = if M == 0 { x.neurons() } else { M };
    let mm = m * m;
    let ctx = x.ctx();
    let Evaluation {
        loss: out_loss,
        grad_a,
        grad_b,
        noise_coef,
        grad_e,
        moments: mo,
        scratch,
    } = out;
    let Scratch {
        p,
        hp,
        g9,
        omega_t,
        g_phi,
        g_both,
        m_bar,
        delta,
        psi_delta,
    } = scratch;
    let (xa, xb) = (&x.a[..m], &x.b[..m]);
    let p = &mut p[..m];
    for j in 0..m {
        p[j] = [xa[j].cube(), xb[j].cube()];
    }
    fill_moments(k, x, m, p, hp, g9, mo);
    let (p, hp, g9) = (&p[..m], &hp[..m], &g9[..m]);
    let c = Common {
        zero: S::zero(ctx),
        one: S::one(ctx),
        two: S::from_f64(2.0, ctx),
    };
    let omega_t = &mut omega_t.entries_mut()[..mm];
    fill_omega(m, p, omega_t);
    let blocks = Blocks {
        k,
        model,
        m,
        p,
        hp,
        phi: &mo.phi.entries()[..mm],
        psi: &mo.psi.entries()[..mm],
        e: &x.e.entries()[..mm],
        omega_t: &*omega_t,
        c: &c,
        ctx,
    };
    let mut adj = Adjoints {
        g_phi: &mut g_phi[..m],
        g_both: &mut g_both[..m],
        m_bar: &mut m_bar.entries_mut()[..mm],
        grad_e: &mut grad_e.entries_mut()[..mm],
        delta: &mut delta[..m],
        psi_delta: &mut psi_delta[..m],
    };
    // m_bar: adjoint of Psi (online and target), without the factor n (eq. (P10c)).
    for v in adj.m_bar.iter_mut().chain(adj.grad_e.iter_mut()) {
        *v = c.zero.clone();
    }
    let loss = if model.normalization == Normalization::Batchnorm {
        batchnorm_rows(&blocks, &mut adj)?
    } else {
        plain_rows(&blocks, &mut adj)
    };
    feature_gradients(
        &blocks,
        (xa, xb),
        (&*adj.g_phi, &*adj.g_both),
        (&mut grad_a[..m], &mut grad_b[..m]),
    );
    let sigma = &mut noise_coef.entries_mut()[..mm];
    noise_coefficients(&blocks, &x.gram.entries()[..mm], g9, &*adj.m_bar, sigma);
    *out_loss = loss;
    Ok(())
}

/// `omega_sr = p_s1 p_r2 - p_s2 p_r1` (eq. (P8)), stored by columns: `omega_t` row `r` is
/// column `r` of omega. Antisymmetric; the diagonal is never read (`omega_rr = 0`).
#[inline(always)]
fn fill_omega<S: Scalar>(m: usize, p: &[[S; 2]], omega_t: &mut [S]) {
    let (p, omega_t) = (&p[..m], &mut omega_t[..m * m]);
    for r in 0..m {
        for s in 0..m {
            omega_t[r * m + s] =
                p[s][0].clone() * p[r][1].clone() - p[s][1].clone() * p[r][0].clone();
        }
    }
}

/// What the row loops of [`evaluate_sized`] read: the constants, the model, the feature
/// cubes `p` and `h_l p` (eq. (P1)), and the flat row-major `m x m` blocks `Phi`, `Psi`,
/// `E` and `omega` transposed (eq. (P8)).
struct Blocks<'a, S: Scalar> {
    k: &'a Constants<S>,
    model: &'a Model,
    m: usize,
    p: &'a [[S; 2]],
    hp: &'a [[S; 2]],
    phi: &'a [S],
    psi: &'a [S],
    e: &'a [S],
    omega_t: &'a [S],
    c: &'a Common<S>,
    ctx: S::Ctx,
}

/// What the row loops of [`evaluate_sized`] write (eq. (P10)): `g_phi`, the adjoints of the
/// online feature mixtures `phi_{j,l}`; `g_both[j][l]`, `g_phi` plus the target adjoint of
/// `p_{j,l}` in a form free of the cancellation between the online and the target branch
/// near pure-feature states (set, and read, only without stop-gradient); `m_bar`, the
/// adjoint of `Psi` without the factor `n`; `grad_e`; and the row work space `delta`,
/// `psi_delta` of [`row`].
struct Adjoints<'a, S> {
    g_phi: &'a mut [[S; 2]],
    g_both: &'a mut [[S; 2]],
    m_bar: &'a mut [S],
    grad_e: &'a mut [S],
    delta: &'a mut [S],
    psi_delta: &'a mut [S],
}

/// Products of constants shared by all batch-norm rows, grouped as in the row formulas.
struct BatchnormConstants<S> {
    /// `E[K^2]^2 h_1 h_2`.
    ek2_sq_hh: S,
    /// `E[K^2] n`.
    ek2_n: S,
    /// `n^2`.
    n_sq: S,
    /// `2 kappa`.
    two_kappa: S,
    /// `-2 E[K K']`.
    minus_two_ekk: S,
    /// `E[K^2] (h_1 h_2)`.
    ek2_hh: S,
}

/// The scalars of one batch-norm row that its gradients share (eqs. (P8)-(P10)).
struct BatchnormRow<S> {
    /// `q = E[K^2] A + n B`, the online variance.
    q: S,
    /// `t = E[K^2] Phi_jj + n Psi_jj`, the target variance.
    t: S,
    /// `q t`.
    qt: S,
    /// `sqrt(q t)`.
    sq: S,
    /// `Delta_j = (E omega)_jj`.
    dj: S,
    /// `E[K^2] Delta_j h_l`.
    kd_h: [S; 2],
    /// `B - Psi_jj = 2 (Psi delta)_j + delta^T Psi delta`.
    nd: S,
    /// `c_on = -2 E[KK'] / (sqrt(q t) q)`.
    c_on: S,
}

/// The batch-norm loss and adjoints, row by row (eqs. (P8)-(P10)); returns the loss.
/// Errors when a variance is not positive.
#[inline(always)]
fn batchnorm_rows<S: Scalar>(b: &Blocks<S>, adj: &mut Adjoints<S>) -> Result<S> {
    let (k, h, two) = (b.k, &b.k.h, &b.c.two);
    let bn = BatchnormConstants {
        ek2_sq_hh: k.ek2.sq() * h[0].clone() * h[1].clone(),
        ek2_n: k.ek2.clone() * k.n.clone(),
        n_sq: k.n.sq(),
        two_kappa: two.clone() * k.kappa.clone(),
        minus_two_ekk: -(two.clone() * k.ekk.clone()),
        ek2_hh: k.ek2.clone() * (h[0].clone() * h[1].clone()),
    };
    let mut loss = b.c.zero.clone();
    for j in 0..b.m {
        let one_minus_beta = batchnorm_row(j, b, &bn, adj)?;
        loss = loss + k.opt_neuron.clone() + bn.two_kappa.clone() * one_minus_beta;
    }
    Ok(loss)
}

/// Row `j` of [`batchnorm_rows`]: writes its adjoints into `adj` and returns `1 - beta_j`
/// (eq. (P9)).
#[inline(always)]
fn batchnorm_row<S: Scalar>(
    j: usize,
    b: &Blocks<S>,
    bn: &BatchnormConstants<S>,
    adj: &mut Adjoints<S>,
) -> Result<S> {
    let (k, m, h) = (b.k, b.m, &b.k.h);
    let (zero, one) = (&b.c.zero, &b.c.one);
    let e_j = &b.e[j * m..][..m];
    let row = row(
        j,
        m,
        e_j,
        b.p,
        h,
        b.phi,
        b.psi,
        b.c,
        adj.delta,
        adj.psi_delta,
    );
    let Row {
        phi: phi_j,
        b: b_j,
        x: x_j,
        psi_jj,
        phi_jj,
        ..
    } = &row;
    // (P8): A = (E Phi E^T)_jj, q = E[K^2] A + n B, t = E[K^2] Phi_jj + n Psi_jj.
    let a_j = h[0].clone() * phi_j[0].sq() + h[1].clone() * phi_j[1].sq();
    let q = k.ek2.clone() * a_j.clone() + k.n.clone() * b_j.clone();
    let t = k.ek2.clone() * phi_jj.clone() + k.n.clone() * psi_jj.clone();
    check_variances(j, &q, &t)?;
    // Delta_j = (E omega)_jj = phi_1 p_j2 - phi_2 p_j1 without the cancelling s = j term.
    let dj = e_omega(e_j, &b.omega_t[j * m..][..m], j, zero);
    let qt = q.clone() * t.clone();
    let sq = qt.clone().sqrt();
    let kx = k.ek2.clone() * x_j.clone();
    // (P9): 1 - beta_j with q t - (E[K^2] x)^2 as a sum of non-negative terms. Both arms
    // are identities wherever sqrt(q t) > 0 (the first needs kx > 0 only for its
    // denominator and to avoid cancellation): interval.md (V22).
    let one_minus_beta = if crate::interval::either_arm(|| kx > *zero) {
        let gap = bn.ek2_sq_hh.clone() * dj.sq()
            + bn.ek2_n.clone() * (a_j.clone() * psi_jj.clone() + b_j.clone() * phi_jj.clone())
            + bn.n_sq.clone() * b_j.clone() * psi_jj.clone();
        gap / (sq.clone() * (sq.clone() + kx))
    } else {
        one.clone() - kx / sq.clone()
    };
    let rho = k.ekk.clone() * x_j.clone() / sq.clone();
    // (P10a): online adjoint of phi_{j,l}; c_on = -2 E[KK'] / (sqrt(q t) q).
    let c_on = bn.minus_two_ekk.clone() / (sq.clone() * q.clone());
    let kd = k.ek2.clone() * dj.clone();
    let kd_h = [kd.clone() * h[0].clone(), kd * h[1].clone()];
    let nb = k.n.clone() * b_j.clone();
    let p = b.p;
    adj.g_phi[j][0] = c_on.clone()
        * h[0].clone()
        * (-(kd_h[1].clone() * phi_j[1].clone()) + nb.clone() * p[j][0].clone());
    adj.g_phi[j][1] =
        c_on.clone() * h[1].clone() * (kd_h[0].clone() * phi_j[0].clone() + nb * p[j][1].clone());
    // 2 (Psi delta)_j + delta^T Psi delta = B - Psi_jj (eqs. (P10a), (P10b)).
    let nd = row.two_psi_delta_j.clone() + row.dpd.clone();
    let v = BatchnormRow {
        q,
        t,
        qt,
        sq,
        dj,
        kd_h,
        nd,
        c_on,
    };
    if !b.model.stop_gradient {
        adj.g_both[j] = batchnorm_both(j, b, bn, &row, &v);
    }
    // (P10c): Psi adjoints rho/q e e^T (online) and rho/t at (j, j) (target).
    let rq = rho.clone() / v.q.clone();
    let m_bar = &mut adj.m_bar[..m * m];
    for r in 0..m {
        let w_r = rq.clone() * e_j[r].clone();
        for s in 0..m {
            m_bar[r * m + s] = m_bar[r * m + s].clone() + w_r.clone() * e_j[s].clone();
        }
    }
    if !b.model.stop_gradient {
        m_bar[j * m + j] = m_bar[j * m + j].clone() + rho / v.t.clone();
    }
    if (0..m).any(|r| b.model.head.trainable(j, r)) {
        batchnorm_grad_e(j, b, bn, &row, &v, adj);
    }
    Ok(one_minus_beta)
}

/// `g_both[j]` of a batch-norm row (eq. (P10a)), online + target:
/// `c h_l [+-kd h_l' gamma_l' / (q t) + n (B p_jl / q + Psi_jj phi_l / t)]`,
/// `c = -2 E[KK'] / sqrt(q t)`, with `gamma_l = p_jl q - phi_l t` expanded around `e_j`.
#[inline(always)]
fn batchnorm_both<S: Scalar>(
    j: usize,
    b: &Blocks<S>,
    bn: &BatchnormConstants<S>,
    row: &Row<S>,
    v: &BatchnormRow<S>,
) -> [S; 2] {
    let (k, h, two, p) = (b.k, &b.k.h, &b.c.two, b.p);
    let Row {
        phi: phi_j,
        dphi,
        b: b_j,
        psi_jj,
        phi_jj,
        ..
    } = row;
    let c = bn.minus_two_ekk.clone() / v.sq.clone();
    let hd = h[0].clone() * (two.clone() * p[j][0].clone() + dphi[0].clone()) * dphi[0].clone()
        + h[1].clone() * (two.clone() * p[j][1].clone() + dphi[1].clone()) * dphi[1].clone();
    let gamma = |l: usize| {
        k.ek2.clone() * (p[j][l].clone() * hd.clone() - dphi[l].clone() * phi_jj.clone())
            + k.n.clone() * (p[j][l].clone() * v.nd.clone() - dphi[l].clone() * psi_jj.clone())
    };
    let noise_part = |l: usize| {
        k.n.clone()
            * (b_j.clone() * p[j][l].clone() / v.q.clone()
                + psi_jj.clone() * phi_j[l].clone() / v.t.clone())
    };
    [
        c.clone() * h[0].clone() * (v.kd_h[1].clone() * gamma(1) / v.qt.clone() + noise_part(0)),
        c * h[1].clone() * (-(v.kd_h[0].clone() * gamma(0)) / v.qt.clone() + noise_part(1)),
    ]
}

/// Row `j` of `dL/dE` under batch norm (eq. (P10b)):
/// `dL/dE_jr = c_on [E[K^2] h_1 h_2 Delta_j (E omega)_jr + n N_r]`,
/// `N_r = (Phi e_j)_r B - x (Psi e)_r` in the expansion around `e_j`.
#[inline(always)]
fn batchnorm_grad_e<S: Scalar>(
    j: usize,
    b: &Blocks<S>,
    bn: &BatchnormConstants<S>,
    row: &Row<S>,
    v: &BatchnormRow<S>,
    adj: &mut Adjoints<S>,
) {
    let (k, m, hp) = (b.k, b.m, b.hp);
    let (phi, psi) = (&b.phi[..m * m], &b.psi[..m * m]);
    let e_j = &b.e[j * m..][..m];
    let (dphi, psi_jj, phi_jj) = (&row.dphi, &row.psi_jj, &row.phi_jj);
    let (psi_delta, grad_e) = (&adj.psi_delta[..m], &mut adj.grad_e[..m * m]);
    let phi_d_j = hp[j][0].clone() * dphi[0].clone() + hp[j][1].clone() * dphi[1].clone();
    let ek2_hh_dj = bn.ek2_hh.clone() * v.dj.clone();
    for r in 0..m {
        if !b.model.head.trainable(j, r) {
            continue;
        }
        let phi_rj = phi[r * m + j].clone();
        let psi_rj = psi[r * m + j].clone();
        let lead = phi_rj.clone() * psi_jj.clone() - phi_jj.clone() * psi_rj.clone();
        let nr = lead + phi_rj * v.nd.clone()
            - phi_jj.clone() * psi_delta[r].clone()
            - phi_d_j.clone() * (psi_rj + psi_delta[r].clone());
        let er = if r == j {
            v.dj.clone()
        } else {
            e_omega(e_j, &b.omega_t[r * m..][..m], r, &b.c.zero)
        };
        grad_e[j * m + r] = v.c_on.clone() * (ek2_hh_dj.clone() * er + k.n.clone() * nr);
    }
}

/// The loss and adjoints without normalization, row by row (eqs. (P9), (P10)); returns the
/// loss.
#[inline(always)]
fn plain_rows<S: Scalar>(b: &Blocks<S>, adj: &mut Adjoints<S>) -> S {
    let (k, m, h, p) = (b.k, b.m, &b.k.h, b.p);
    let (phi, psi, hp) = (&b.phi[..m * m], &b.psi[..m * m], b.hp);
    let (two, one) = (&b.c.two, &b.c.one);
    let stop_gradient = b.model.stop_gradient;
    let g = &k.ek2_minus_ekk;
    let two_g = two.clone() * g.clone();
    let two_h = [two.clone() * h[0].clone(), two.clone() * h[1].clone()];
    let two_h_g = [two_h[0].clone() * g.clone(), two_h[1].clone() * g.clone()];
    let mut loss = b.c.zero.clone();
    for j in 0..m {
        let e_j = &b.e[j * m..][..m];
        let Row {
            phi: phi_j,
            dphi,
            b: b_j,
            x: x_j,
            psi_jj,
            ..
        } = row(j, m, e_j, p, h, phi, psi, b.c, adj.delta, adj.psi_delta);
        // (P9): L_j = E[K^2] sum_l h_l dphi_l^2 + n (B + Psi_jj) + 2 (E[K^2] - E[KK']) x.
        loss = loss
            + k.ek2.clone() * (h[0].clone() * dphi[0].sq() + h[1].clone() * dphi[1].sq())
            + k.n.clone() * (b_j + psi_jj)
            + two_g.clone() * x_j;
        // (P10a).
        for l in 0..2 {
            adj.g_phi[j][l] =
                two_h[l].clone() * (k.ek2.clone() * dphi[l].clone() + g.clone() * p[j][l].clone());
            if !stop_gradient {
                // Online + target: the E[K^2] dphi terms cancel exactly.
                adj.g_both[j][l] = two_h_g[l].clone() * (p[j][l].clone() + phi_j[l].clone());
            }
        }
        // (P10c): Psi adjoints E^T E (online) and I (target).
        let m_bar = &mut adj.m_bar[..m * m];
        for r in 0..m {
            for s in 0..m {
                m_bar[r * m + s] = m_bar[r * m + s].clone() + e_j[r].clone() * e_j[s].clone();
            }
        }
        if !stop_gradient {
            m_bar[j * m + j] = m_bar[j * m + j].clone() + one.clone();
        }
        // (P10b): dL/dE_jr = 2 [E[K^2] (Phi delta)_r + (E[K^2] - E[KK']) Phi_rj + n (Psi e)_r].
        let (psi_delta, grad_e) = (&adj.psi_delta[..m], &mut adj.grad_e[..m * m]);
        for r in 0..m {
            if !b.model.head.trainable(j, r) {
                continue;
            }
            let phi_d_r = hp[r][0].clone() * dphi[0].clone() + hp[r][1].clone() * dphi[1].clone();
            let psi_e_r = psi[r * m + j].clone() + psi_delta[r].clone();
            grad_e[j * m + r] = two.clone()
                * (k.ek2.clone() * phi_d_r
                    + g.clone() * phi[r * m + j].clone()
                    + k.n.clone() * psi_e_r);
        }
    }
    loss
}

/// (P10a): `dL/dc_il = 3 c_il^2 (sum_j E_ji g_phi[j][l] + [no stop-gradient] g_tg[i][l])`
/// for `c = a, b`, from the row adjoints `(g_phi, g_both)`.
#[inline(always)]
fn feature_gradients<S: Scalar>(
    b: &Blocks<S>,
    (xa, xb): (&[S], &[S]),
    (g_phi, g_both): (&[[S; 2]], &[[S; 2]]),
    (grad_a, grad_b): (&mut [S], &mut [S]),
) {
    let (m, e, zero, one) = (b.m, &b.e[..b.m * b.m], &b.c.zero, &b.c.one);
    let (xa, xb, g_phi, g_both) = (&xa[..m], &xb[..m], &g_phi[..m], &g_both[..m]);
    let (grad_a, grad_b) = (&mut grad_a[..m], &mut grad_b[..m]);
    let stop_gradient = b.model.stop_gradient;
    let three = S::from_f64(3.0, b.ctx);
    for i in 0..m {
        let mut acc = [zero.clone(), zero.clone()];
        for j in 0..m {
            let coef = if j == i && !stop_gradient {
                // E_ii g_phi + g_tg = (E_ii - 1) g_phi + g_both.
                e[i * m + i].clone() - one.clone()
            } else {
                e[j * m + i].clone()
            };
            acc[0] = acc[0].clone() + coef.clone() * g_phi[j][0].clone();
            acc[1] = acc[1].clone() + coef * g_phi[j][1].clone();
        }
        let [mut acc_a, mut acc_b] = acc;
        if !stop_gradient {
            acc_a = acc_a + g_both[i][0].clone();
            acc_b = acc_b + g_both[i][1].clone();
        }
        grad_a[i] = three.clone() * xa[i].sq() * acc_a;
        grad_b[i] = three.clone() * xb[i].sq() * acc_b;
    }
}

/// (P10c): `Sigma = 2 n s^6 (diag(D) + T)`, `D_r = 18 sum_s Mb_rs G_ss G_rs`,
/// `T_rs = Mb_rs (9 G_rr G_ss + 18 G_rs^2)`, from the Gram block `g`, `g9 = 9 G_jj` and
/// `m_bar` (flat `m x m`), into `sigma`.
#[inline(always)]
fn noise_coefficients<S: Scalar>(b: &Blocks<S>, g: &[S], g9: &[S], m_bar: &[S], sigma: &mut [S]) {
    let (k, c, m) = (b.k, b.c, b.m);
    let mm = m * m;
    let (g, g9, m_bar, sigma) = (&g[..mm], &g9[..m], &m_bar[..mm], &mut sigma[..mm]);
    let pre = c.two.clone() * k.n.clone() * k.s6.clone();
    let eighteen = S::from_f64(18.0, b.ctx);
    for r in 0..m {
        for s in 0..m {
            let rs = r * m + s;
            let mut v = m_bar[rs].clone()
                * (g9[r].clone() * g[s * m + s].clone() + eighteen.clone() * g[rs].sq());
            if r == s {
                let mut d = c.zero.clone();
                for u in 0..m {
                    d = d + m_bar[r * m + u].clone() * g[u * m + u].clone() * g[r * m + u].clone();
                }
                v = v + eighteen.clone() * d;
            }
            sigma[rs] = pre.clone() * v;
        }
    }
}

/// The constants `0, 1, 2` at the context of the state.
struct Common<S> {
    zero: S,
    one: S,
    two: S,
}

/// The quantities of row `j` of `E` (eq. (P8)) shared by both normalizations.
struct Row<S> {
    /// `phi_{j,l} = (E p_l)_j`.
    phi: [S; 2],
    /// `dphi_{j,l} = phi_{j,l} - p_{j,l} = sum_s delta_s p_{s,l}`.
    dphi: [S; 2],
    /// `B_j = Psi_jj + 2 (Psi delta)_j + delta^T Psi delta`.
    b: S,
    /// `x_j = (E Phi)_jj = sum_l h_l phi_{j,l} p_{j,l}`.
    x: S,
    /// `Psi_jj`.
    psi_jj: S,
    /// `Phi_jj`.
    phi_jj: S,
    /// `2 (Psi delta)_j`.
    two_psi_delta_j: S,
    /// `delta^T Psi delta`.
    dpd: S,
}

/// Row `j` of (P8) from `e = E[j][.]` (`e_j` here) and the flat `m x m` blocks `phi`,
/// `psi`: writes `delta = e - (unit vector j)` and `Psi delta` into `delta`, `psi_delta` and
/// returns the row's sums.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn row<S: Scalar>(
    j: usize,
    m: usize,
    e_j: &[S],
    p: &[[S; 2]],
    h: &[S; 2],
    phi: &[S],
    psi: &[S],
    c: &Common<S>,
    delta: &mut [S],
    psi_delta: &mut [S],
) -> Row<S> {
    let (e_j, p, delta, psi_delta) = (&e_j[..m], &p[..m], &mut delta[..m], &mut psi_delta[..m]);
    for s in 0..m {
        delta[s] = if s == j {
            e_j[s].clone() - c.one.clone()
        } else {
            e_j[s].clone()
        };
    }
    // phi_l = (E p_l)_j and dphi_l = phi_l - p_jl = sum_s delta_s p_sl.
    let mut phi_j = [c.zero.clone(), c.zero.clone()];
    let mut dphi = [c.zero.clone(), c.zero.clone()];
    for s in 0..m {
        for l in 0..2 {
            phi_j[l] = phi_j[l].clone() + e_j[s].clone() * p[s][l].clone();
            dphi[l] = dphi[l].clone() + delta[s].clone() * p[s][l].clone();
        }
    }
    for r in 0..m {
        let psi_r = &psi[r * m..][..m];
        let mut acc = c.zero.clone();
        for s in 0..m {
            acc = acc + psi_r[s].clone() * delta[s].clone();
        }
        psi_delta[r] = acc;
    }
    let mut dpd = c.zero.clone();
    for r in 0..m {
        dpd = dpd + delta[r].clone() * psi_delta[r].clone();
    }
    let psi_jj = psi[j * m + j].clone();
    let two_psi_delta_j = c.two.clone() * psi_delta[j].clone();
    // B = e^T Psi e = Psi_jj + 2 (Psi delta)_j + delta^T Psi delta.
    let b = psi_jj.clone() + two_psi_delta_j.clone() + dpd.clone();
    // x = (E Phi)_jj.
    let x = h[0].clone() * phi_j[0].clone() * p[j][0].clone()
        + h[1].clone() * phi_j[1].clone() * p[j][1].clone();
    Row {
        phi: phi_j,
        dphi,
        b,
        x,
        psi_jj,
        phi_jj: phi[j * m + j].clone(),
        two_psi_delta_j,
        dpd,
    }
}

/// `(E omega)_jr = sum_{s != r} E_js omega_sr` (eq. (P8)) from row `j` of `E` and column `r`
/// of `omega`, without the term `s = r` (`omega_rr = 0` exactly).
#[inline(always)]
fn e_omega<S: Scalar>(e_j: &[S], omega_r: &[S], r: usize, zero: &S) -> S {
    let mut acc = zero.clone();
    for (s, (e_js, w)) in e_j.iter().zip(omega_r).enumerate() {
        if s != r {
            acc = acc + e_js.clone() * w.clone();
        }
    }
    acc
}

/// `Corr(f_i(X), f_j(X))` on un-augmented `X` (`derivations/population.md`, eq. (P13)):
/// `M^X = P0^2 Phi + (P - P0) Psi`, `Corr_ij = M^X_ij / sqrt(M^X_ii M^X_jj)`. `None` on the
/// diagonal entries of a neuron whose variance is zero.
pub fn correlation<S: Scalar>(k: &Constants<S>, x: &Reduced<S>) -> Square<Option<S>> {
    let mo = moments(k, x);
    let m = x.neurons();
    let mx = |i: usize, j: usize| {
        k.p0_sq.clone() * mo.phi.at(i, j).clone() + k.noise_full.clone() * mo.psi.at(i, j).clone()
    };
    let zero = S::zero(x.ctx());
    let mut out = Vec::with_capacity(m * m);
    for i in 0..m {
        for j in 0..m {
            let vi = mx(i, i);
            let vj = mx(j, j);
            out.push(if vi > zero && vj > zero {
                Some(mx(i, j) / (vi * vj).sqrt())
            } else {
                None
            });
        }
    }
    Square::from_entries(m, out)
}

/// The footnote-3 optimum summed over neurons, `m (2 - 2 E[KK'] / E[K^2])`
/// (`derivations/population.md`, eq. (P12)), at the working precision.
pub fn opt<S: Scalar>(k: &Constants<S>, neurons: usize, ctx: S::Ctx) -> S {
    let per = k.overlap.opt_per_neuron();
    S::from_rational(&(per * rug::Rational::from(neurons as u64)), ctx)
}
