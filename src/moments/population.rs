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
use crate::moments::noise::cube_moment;
use crate::moments::overlap::OverlapMoments;
use crate::scalar::Scalar;
use crate::setting::{Model, Normalization, Setting};
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
    fill_moments(k, x, p, &mut mo);
    mo
}

/// Eqs. (P1)-(P4) written into `mo` (sized `m x m`).
fn fill_moments<S: Scalar>(k: &Constants<S>, x: &Reduced<S>, p: &[[S; 2]], mo: &mut Moments<S>) {
    let g = &x.gram;
    mo.phi.fill_with(|i, j| {
        k.h[0].clone() * p[i][0].clone() * p[j][0].clone()
            + k.h[1].clone() * p[i][1].clone() * p[j][1].clone()
    });
    mo.psi
        .fill_with(|i, j| cube_moment(&k.s6, g.at(i, i), g.at(j, j), g.at(i, j)));
    let (phi, psi) = (&mo.phi, &mo.psi);
    mo.second.fill_with(|i, j| {
        k.ek2.clone() * phi.at(i, j).clone() + k.n.clone() * psi.at(i, j).clone()
    });
    mo.cross
        .fill_with(|i, j| k.ekk.clone() * phi.at(i, j).clone());
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
    /// `omega_sr` (eq. (P8)).
    omega: Square<S>,
    /// Online adjoints `g^on_{j,l}` (eq. (P10a)).
    g_phi: Vec<[S; 2]>,
    /// `g^both_{j,l}` (eq. (P10a)).
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
                omega: z(),
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
fn check_variances<S: Scalar>(j: usize, q: &S, t: &S) -> Result<()> {
    let zero = S::zero(q.ctx());
    if q.partial_cmp(&zero) != Some(std::cmp::Ordering::Greater) {
        return Err(Error::numerical(
            format!("population variance of F_{j}(X^(1))"),
            format!("must be positive for batchnorm, got {:?}", q.to_f64()),
        ));
    }
    if t.partial_cmp(&zero) != Some(std::cmp::Ordering::Greater) {
        return Err(Error::numerical(
            format!("population variance of f_{j}(X^(2))"),
            format!("must be positive for batchnorm, got {:?}", t.to_f64()),
        ));
    }
    Ok(())
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
/// states and is accurate to a few ulps (relative, per block) near them. Errors when a
/// normalization variance is not positive (`batchnorm`).
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
    let ctx = x.ctx();
    if out.grad_a.len() != m {
        *out = Evaluation::zeros(m, ctx);
    }
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
        omega,
        g_phi,
        g_both,
        m_bar,
        delta,
        psi_delta,
    } = scratch;
    for j in 0..m {
        p[j] = [x.a[j].cube(), x.b[j].cube()];
    }
    fill_moments(k, x, p, mo);
    let (phi, psi) = (&mo.phi, &mo.psi);
    let e = &x.e;
    let zero = S::zero(ctx);
    let one = S::one(ctx);
    let two = S::from_f64(2.0, ctx);
    let h = &k.h;
    let batchnorm = model.normalization == Normalization::Batchnorm;

    // omega_sr = p_s1 p_r2 - p_s2 p_r1 (eq. (P8)); antisymmetric, omega_rr = 0 exactly.
    omega.fill_with(|s, r| p[s][0].clone() * p[r][1].clone() - p[s][1].clone() * p[r][0].clone());
    let omega = &*omega;

    let mut loss = zero.clone();
    // g_phi: adjoints of the online feature mixtures phi_{j,l}; g_both[j][l] = g_phi + the
    // target adjoint of p_{j,l}, in a form free of the cancellation between the online and
    // the target branch near pure-feature states (eq. (P10a)); both are set for every j.
    // m_bar: adjoint of Psi (online and target), without the factor n (eq. (P10c)).
    m_bar.fill_with(|_, _| zero.clone());
    grad_e.fill_with(|_, _| zero.clone());
    for j in 0..m {
        // Row quantities (eq. (P8)).
        for s in 0..m {
            delta[s] = if s == j {
                e.at(j, j).clone() - one.clone()
            } else {
                e.at(j, s).clone()
            };
        }
        // phi_l = (E p_l)_j and dphi_l = phi_l - p_jl = sum_s delta_s p_sl.
        let mut phi_j = [zero.clone(), zero.clone()];
        let mut dphi = [zero.clone(), zero.clone()];
        for l in 0..2 {
            for s in 0..m {
                phi_j[l] = phi_j[l].clone() + e.at(j, s).clone() * p[s][l].clone();
                dphi[l] = dphi[l].clone() + delta[s].clone() * p[s][l].clone();
            }
        }
        for r in 0..m {
            let mut acc = zero.clone();
            for s in 0..m {
                acc = acc + psi.at(r, s).clone() * delta[s].clone();
            }
            psi_delta[r] = acc;
        }
        let mut dpd = zero.clone();
        for r in 0..m {
            dpd = dpd + delta[r].clone() * psi_delta[r].clone();
        }
        let psi_jj = psi.at(j, j).clone();
        let phi_jj = phi.at(j, j).clone();
        // B = e^T Psi e = Psi_jj + 2 (Psi delta)_j + delta^T Psi delta.
        let b_j = psi_jj.clone() + two.clone() * psi_delta[j].clone() + dpd.clone();
        // A = (E Phi E^T)_jj, x = (E Phi)_jj.
        let a_j = h[0].clone() * phi_j[0].sq() + h[1].clone() * phi_j[1].sq();
        let x_j = h[0].clone() * phi_j[0].clone() * p[j][0].clone()
            + h[1].clone() * phi_j[1].clone() * p[j][1].clone();
        let q = k.ek2.clone() * a_j.clone() + k.n.clone() * b_j.clone();
        let t = k.ek2.clone() * phi_jj.clone() + k.n.clone() * psi_jj.clone();
        if batchnorm {
            check_variances(j, &q, &t)?;
            // Delta_j = (E omega)_jj = phi_1 p_j2 - phi_2 p_j1 without the cancelling s = j term.
            let eomega = |r: usize| {
                let mut acc = zero.clone();
                for s in 0..m {
                    if s != r {
                        acc = acc + e.at(j, s).clone() * omega.at(s, r).clone();
                    }
                }
                acc
            };
            let dj = eomega(j);
            let sq = (q.clone() * t.clone()).sqrt();
            let kx = k.ek2.clone() * x_j.clone();
            // (P9): 1 - beta_j with q t - (E[K^2] x)^2 as a sum of non-negative terms.
            let one_minus_beta = if kx > zero {
                let gap = k.ek2.sq() * h[0].clone() * h[1].clone() * dj.sq()
                    + k.ek2.clone()
                        * k.n.clone()
                        * (a_j.clone() * psi_jj.clone() + b_j.clone() * phi_jj.clone())
                    + k.n.sq() * b_j.clone() * psi_jj.clone();
                gap / (sq.clone() * (sq.clone() + kx))
            } else {
                one.clone() - kx / sq.clone()
            };
            loss = loss + k.opt_neuron.clone() + two.clone() * k.kappa.clone() * one_minus_beta;
            let rho = k.ekk.clone() * x_j.clone() / sq.clone();
            // (P10a): online adjoint of phi_{j,l}, target adjoint of p_{j,l}.
            let c_on = -(two.clone() * k.ekk.clone()) / (sq.clone() * q.clone());
            let kd = k.ek2.clone() * dj.clone();
            g_phi[j][0] = c_on.clone()
                * h[0].clone()
                * (-(kd.clone() * h[1].clone() * phi_j[1].clone())
                    + k.n.clone() * b_j.clone() * p[j][0].clone());
            g_phi[j][1] = c_on.clone()
                * h[1].clone()
                * (kd.clone() * h[0].clone() * phi_j[0].clone()
                    + k.n.clone() * b_j.clone() * p[j][1].clone());
            // Online + target (eq. (P10a)): c h_l [+-kd h_l' gamma_l' / (q t)
            // + n (B p_jl / q + Psi_jj phi_l / t)], c = -2 E[KK'] / sqrt(q t), with
            // gamma_l = p_jl q - phi_l t expanded around e_j.
            let c = -(two.clone() * k.ekk.clone()) / sq.clone();
            let hd =
                h[0].clone() * (two.clone() * p[j][0].clone() + dphi[0].clone()) * dphi[0].clone()
                    + h[1].clone()
                        * (two.clone() * p[j][1].clone() + dphi[1].clone())
                        * dphi[1].clone();
            let nd = two.clone() * psi_delta[j].clone() + dpd.clone();
            let gamma = |l: usize| {
                k.ek2.clone() * (p[j][l].clone() * hd.clone() - dphi[l].clone() * phi_jj.clone())
                    + k.n.clone()
                        * (p[j][l].clone() * nd.clone() - dphi[l].clone() * psi_jj.clone())
            };
            let qt = q.clone() * t.clone();
            let noise_part = |l: usize| {
                k.n.clone()
                    * (b_j.clone() * p[j][l].clone() / q.clone()
                        + psi_jj.clone() * phi_j[l].clone() / t.clone())
            };
            g_both[j][0] = c.clone()
                * h[0].clone()
                * (kd.clone() * h[1].clone() * gamma(1) / qt.clone() + noise_part(0));
            g_both[j][1] =
                c * h[1].clone() * (-(kd.clone() * h[0].clone() * gamma(0)) / qt + noise_part(1));
            // (P10c): Psi adjoints rho/q e e^T (online) and rho/t at (j, j) (target).
            let rq = rho.clone() / q;
            for r in 0..m {
                for s in 0..m {
                    let v = m_bar.at(r, s).clone()
                        + rq.clone() * e.at(j, r).clone() * e.at(j, s).clone();
                    *m_bar.at_mut(r, s) = v;
                }
            }
            if !model.stop_gradient {
                let v = m_bar.at(j, j).clone() + rho / t;
                *m_bar.at_mut(j, j) = v;
            }
            // (P10b): dL/dE_jr = c_on [E[K^2] h_1 h_2 Delta_j (E omega)_jr + n N_r],
            // N_r = (Phi e_j)_r B - x (Psi e)_r in the expansion around e_j.
            let phi_d_j = h[0].clone() * p[j][0].clone() * dphi[0].clone()
                + h[1].clone() * p[j][1].clone() * dphi[1].clone();
            let hh = h[0].clone() * h[1].clone();
            for r in 0..m {
                if !model.head.trainable(j, r) {
                    continue;
                }
                let phi_rj = phi.at(r, j).clone();
                let psi_rj = psi.at(r, j).clone();
                let lead = phi_rj.clone() * psi_jj.clone() - phi_jj.clone() * psi_rj.clone();
                let nr = lead + phi_rj * (two.clone() * psi_delta[j].clone() + dpd.clone())
                    - phi_jj.clone() * psi_delta[r].clone()
                    - phi_d_j.clone() * (psi_rj + psi_delta[r].clone());
                let er = if r == j { dj.clone() } else { eomega(r) };
                *grad_e.at_mut(j, r) = c_on.clone()
                    * (k.ek2.clone() * hh.clone() * dj.clone() * er + k.n.clone() * nr);
            }
        } else {
            let g = &k.ek2_minus_ekk;
            // (P9): L_j = E[K^2] sum_l h_l dphi_l^2 + n (B + Psi_jj) + 2 (E[K^2] - E[KK']) x.
            loss = loss
                + k.ek2.clone() * (h[0].clone() * dphi[0].sq() + h[1].clone() * dphi[1].sq())
                + k.n.clone() * (b_j.clone() + psi_jj.clone())
                + two.clone() * g.clone() * x_j.clone();
            // (P10a).
            for l in 0..2 {
                g_phi[j][l] = two.clone()
                    * h[l].clone()
                    * (k.ek2.clone() * dphi[l].clone() + g.clone() * p[j][l].clone());
                // Online + target: the E[K^2] dphi terms cancel exactly.
                g_both[j][l] =
                    two.clone() * h[l].clone() * g.clone() * (p[j][l].clone() + phi_j[l].clone());
            }
            // (P10c): Psi adjoints E^T E (online) and I (target).
            for r in 0..m {
                for s in 0..m {
                    let v = m_bar.at(r, s).clone() + e.at(j, r).clone() * e.at(j, s).clone();
                    *m_bar.at_mut(r, s) = v;
                }
            }
            if !model.stop_gradient {
                let v = m_bar.at(j, j).clone() + one.clone();
                *m_bar.at_mut(j, j) = v;
            }
            // (P10b): dL/dE_jr = 2 [E[K^2] (Phi delta)_r + (E[K^2] - E[KK']) Phi_rj + n (Psi e)_r].
            for r in 0..m {
                if !model.head.trainable(j, r) {
                    continue;
                }
                let phi_d_r = h[0].clone() * p[r][0].clone() * dphi[0].clone()
                    + h[1].clone() * p[r][1].clone() * dphi[1].clone();
                let psi_e_r = psi.at(r, j).clone() + psi_delta[r].clone();
                *grad_e.at_mut(j, r) = two.clone()
                    * (k.ek2.clone() * phi_d_r
                        + g.clone() * phi.at(r, j).clone()
                        + k.n.clone() * psi_e_r);
            }
        }
    }

    // (P10a): dL/dc_il = 3 c_il^2 (sum_j E_ji g_phi[j][l] + [no stop-gradient] g_tg[i][l]).
    let three = S::from_f64(3.0, ctx);
    for l in 0..2 {
        let grad_c = if l == 0 { &mut *grad_a } else { &mut *grad_b };
        for i in 0..m {
            let mut acc = zero.clone();
            for j in 0..m {
                let coef = if j == i && !model.stop_gradient {
                    // E_ii g_phi + g_tg = (E_ii - 1) g_phi + g_both.
                    e.at(i, i).clone() - one.clone()
                } else {
                    e.at(j, i).clone()
                };
                acc = acc + coef * g_phi[j][l].clone();
            }
            if !model.stop_gradient {
                acc = acc + g_both[i][l].clone();
            }
            grad_c[i] = three.clone() * x.feature(i, l).sq() * acc;
        }
    }

    // (P10c): Sigma = 2 n s^6 (diag(D) + T), D_r = 18 sum_s Mb_rs G_ss G_rs,
    // T_rs = Mb_rs (9 G_rr G_ss + 18 G_rs^2).
    let g = &x.gram;
    let pre = two * k.n.clone() * k.s6.clone();
    let nine = S::from_f64(9.0, ctx);
    let eighteen = S::from_f64(18.0, ctx);
    let m_bar = &*m_bar;
    noise_coef.fill_with(|r, s| {
        let mut v = m_bar.at(r, s).clone()
            * (nine.clone() * g.at(r, r).clone() * g.at(s, s).clone()
                + eighteen.clone() * g.at(r, s).sq());
        if r == s {
            let mut d = zero.clone();
            for u in 0..m {
                d = d + m_bar.at(r, u).clone() * g.at(u, u).clone() * g.at(r, u).clone();
            }
            v = v + eighteen.clone() * d;
        }
        pre.clone() * v
    });

    *out_loss = loss;
    Ok(())
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
