//! The exact population loss and gradient of objective (3.3) in the limit `N -> infinity`
//! (`derivations/population.md`).
//!
//! Everything is a function of the reduced coordinates ([`Reduced`]): the feature
//! coordinates `a_j = <w_j, v1>`, `b_j = <w_j, v2>`, the Gram block `G = U^T U` of the
//! noise parts `u_j = Pi w_j`, and the head `E`. The gradient with respect to `w_j` is
//! `g_a[j] v1 + g_b[j] v2 + sum_k noise_coef[j][k] u_k` (eq. (P10)), so it never leaves
//! `span(v1, v2, u_1..u_m)` and the flow closes on these coordinates (eq. (P11)).

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
        Constants {
            ek2: S::from_rational(&overlap.second, ctx),
            ekk: S::from_rational(&overlap.cross, ctx),
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

/// The reduced coordinates of a state (`derivations/population.md`, Section "Reduction").
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

/// Computes the moment matrices (eqs. (P1)-(P4)). The means `E[f_j(X^(v))]` vanish
/// identically (eq. (P0)), so second moments are covariances.
pub fn moments<S: Scalar>(k: &Constants<S>, x: &Reduced<S>) -> Moments<S> {
    let m = x.neurons();
    let p: Vec<[S; 2]> = (0..m).map(|j| [x.a[j].cube(), x.b[j].cube()]).collect();
    let phi = Square::from_fn(m, |i, j| {
        k.h[0].clone() * p[i][0].clone() * p[j][0].clone()
            + k.h[1].clone() * p[i][1].clone() * p[j][1].clone()
    });
    let g = &x.gram;
    let psi = Square::from_fn(m, |i, j| {
        cube_moment(&k.s6, g.at(i, i), g.at(j, j), g.at(i, j))
    });
    let second = Square::from_fn(m, |i, j| {
        k.ek2.clone() * phi.at(i, j).clone() + k.n.clone() * psi.at(i, j).clone()
    });
    let cross = Square::from_fn(m, |i, j| k.ekk.clone() * phi.at(i, j).clone());
    Moments {
        phi,
        psi,
        second,
        cross,
    }
}

/// Population loss and gradient at a reduced state.
#[derive(Clone, Debug)]
pub struct Evaluation<S: Scalar> {
    /// The population loss `L` (eq. (P5) or (P6)).
    pub loss: S,
    /// `dL/da_j`.
    pub grad_a: Vec<S>,
    /// `dL/db_j`.
    pub grad_b: Vec<S>,
    /// `Sigma`: `dL/du_j = sum_k Sigma_jk u_k` (eq. (P9)); symmetric.
    pub noise_coef: Square<S>,
    /// `dL/dE`, zero on entries the head mode does not train (eq. (P8)).
    pub grad_e: Square<S>,
    /// The moments it was computed from.
    pub moments: Moments<S>,
}

/// Evaluates the population loss and gradient (`derivations/population.md`, eqs.
/// (P5)-(P10)).
///
/// The loss is written with an online copy and a target copy of `W`; with
/// `stop_gradient = true` the gradient is the online copy's, with `false` the sum of both
/// (eq. (P7)). Errors when a normalization variance is zero (`batchnorm`).
pub fn evaluate<S: Scalar>(
    k: &Constants<S>,
    model: &Model,
    x: &Reduced<S>,
) -> Result<Evaluation<S>> {
    let m = x.neurons();
    let ctx = x.ctx();
    let mo = moments(k, x);
    let e = &x.e;
    let two = S::from_f64(2.0, ctx);

    // q_j = (E M E^T)_jj, t_j = M_jj, r_j = (E C)_jj; ME = M E^T (column j is M e_j).
    let me = Square::from_fn(m, |r, j| {
        let mut acc = S::zero(ctx);
        for s in 0..m {
            acc = acc + mo.second.at(r, s).clone() * e.at(j, s).clone();
        }
        acc
    });
    let q: Vec<S> = (0..m)
        .map(|j| {
            let mut acc = S::zero(ctx);
            for r in 0..m {
                acc = acc + e.at(j, r).clone() * me.at(r, j).clone();
            }
            acc
        })
        .collect();
    let t: Vec<S> = (0..m).map(|j| mo.second.at(j, j).clone()).collect();
    let rr: Vec<S> = (0..m)
        .map(|j| {
            let mut acc = S::zero(ctx);
            for r in 0..m {
                acc = acc + e.at(j, r).clone() * mo.cross.at(r, j).clone();
            }
            acc
        })
        .collect();

    // Adjoints: C_bar (online index r, target index j), M_on_bar, M_tg_bar, and dL/dE.
    let mut loss = S::zero(ctx);
    let mut c_bar: Square<S> = Square::zeros(m, ctx);
    let mut m_on_bar: Square<S> = Square::zeros(m, ctx);
    let mut m_tg_bar: Square<S> = Square::zeros(m, ctx);
    let mut grad_e: Square<S> = Square::zeros(m, ctx);
    match model.normalization {
        Normalization::Batchnorm => {
            for j in 0..m {
                let zero = S::zero(ctx);
                if q[j].partial_cmp(&zero) != Some(std::cmp::Ordering::Greater) {
                    return Err(Error::numerical(
                        format!("population variance of F_{j}(X^(1))"),
                        format!("must be positive for batchnorm, got {:?}", q[j].to_f64()),
                    ));
                }
                if t[j].partial_cmp(&zero) != Some(std::cmp::Ordering::Greater) {
                    return Err(Error::numerical(
                        format!("population variance of f_{j}(X^(2))"),
                        format!("must be positive for batchnorm, got {:?}", t[j].to_f64()),
                    ));
                }
                let sq = (q[j].clone() * t[j].clone()).sqrt();
                let rho = rr[j].clone() / sq.clone();
                // (P5): L = sum_j 2 - 2 rho_j.
                loss = loss + two.clone() - two.clone() * rho.clone();
                let rho_q = rho.clone() / q[j].clone();
                for r in 0..m {
                    // (P7a): C_bar_rj = -2 E_jr / sqrt(q_j t_j).
                    *c_bar.at_mut(r, j) = -(two.clone() * e.at(j, r).clone()) / sq.clone();
                    // (P7b): M_on_bar += (rho_j / q_j) e_j e_j^T.
                    for s in 0..m {
                        let v = m_on_bar.at(r, s).clone()
                            + rho_q.clone() * e.at(j, r).clone() * e.at(j, s).clone();
                        *m_on_bar.at_mut(r, s) = v;
                    }
                    // (P8): dL/dE_jr = -2/sqrt(q_j t_j) (C_rj - (r_j/q_j) (M E^T)_rj).
                    *grad_e.at_mut(j, r) = -(two.clone() / sq.clone())
                        * (mo.cross.at(r, j).clone()
                            - rr[j].clone() / q[j].clone() * me.at(r, j).clone());
                }
                // (P7c): M_tg_bar_jj = rho_j / t_j.
                *m_tg_bar.at_mut(j, j) = rho / t[j].clone();
            }
        }
        Normalization::None => {
            for j in 0..m {
                // (P6): L = sum_j q_j + t_j - 2 r_j.
                loss = loss + q[j].clone() + t[j].clone() - two.clone() * rr[j].clone();
                for r in 0..m {
                    *c_bar.at_mut(r, j) = -(two.clone() * e.at(j, r).clone());
                    // (P8'): dL/dE_jr = 2 (M E^T)_rj - 2 C_rj.
                    *grad_e.at_mut(j, r) =
                        two.clone() * (me.at(r, j).clone() - mo.cross.at(r, j).clone());
                }
                *m_tg_bar.at_mut(j, j) = S::one(ctx);
            }
            // M_on_bar = E^T E.
            m_on_bar = Square::from_fn(m, |r, s| {
                let mut acc = S::zero(ctx);
                for j in 0..m {
                    acc = acc + e.at(j, r).clone() * e.at(j, s).clone();
                }
                acc
            });
        }
    }
    for j in 0..m {
        for r in 0..m {
            if !model.head.trainable(j, r) {
                *grad_e.at_mut(j, r) = S::zero(ctx);
            }
        }
    }

    // The total adjoint of M (online, plus target without stop-gradient) and of C's
    // feature products (eq. (P9)).
    let m_bar = if model.stop_gradient {
        m_on_bar
    } else {
        Square::from_fn(m, |r, s| {
            m_on_bar.at(r, s).clone() + m_tg_bar.at(r, s).clone()
        })
    };
    let ctx_ = ctx;
    let feat = |l: usize, i: usize| x.feature(i, l).clone();
    let mut grad_c = [vec![S::zero(ctx_); m], vec![S::zero(ctx_); m]];
    for l in 0..2 {
        for i in 0..m {
            let mut m_term = S::zero(ctx);
            let mut c_term = S::zero(ctx);
            for s in 0..m {
                let ps = feat(l, s).cube();
                m_term = m_term + m_bar.at(i, s).clone() * ps.clone();
                c_term = c_term + c_bar.at(i, s).clone() * ps.clone();
                if !model.stop_gradient {
                    c_term = c_term + c_bar.at(s, i).clone() * ps;
                }
            }
            let ci = feat(l, i);
            // (P9a): dL/dc_il = 3 c_il^2 h_l (2 E[K^2] (M_bar p_l)_i + E[KK'] (C_bar p_l)_i).
            grad_c[l][i] = S::from_f64(3.0, ctx)
                * ci.sq()
                * k.h[l].clone()
                * (two.clone() * k.ek2.clone() * m_term + k.ekk.clone() * c_term);
        }
    }

    // (P9b): Sigma = 2 n s^6 (diag(D) + T), D_r = 18 sum_s Mb_rs G_ss G_rs,
    // T_rs = Mb_rs (9 G_rr G_ss + 18 G_rs^2).
    let g = &x.gram;
    let pre = two.clone() * k.n.clone() * k.s6.clone();
    let nine = S::from_f64(9.0, ctx);
    let eighteen = S::from_f64(18.0, ctx);
    let noise_coef = Square::from_fn(m, |r, s| {
        let mut v = m_bar.at(r, s).clone()
            * (nine.clone() * g.at(r, r).clone() * g.at(s, s).clone()
                + eighteen.clone() * g.at(r, s).sq());
        if r == s {
            let mut d = S::zero(ctx);
            for u in 0..m {
                d = d + m_bar.at(r, u).clone() * g.at(u, u).clone() * g.at(r, u).clone();
            }
            v = v + eighteen.clone() * d;
        }
        pre.clone() * v
    });

    let [grad_a, grad_b] = grad_c;
    Ok(Evaluation {
        loss,
        grad_a,
        grad_b,
        noise_coef,
        grad_e,
        moments: mo,
    })
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
