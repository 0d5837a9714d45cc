//! Dense output: the solution inside an accepted step, for event location and recording.

use crate::scalar::Scalar;

/// The continuous extension of one accepted step from `t0` to `t0 + h`.
#[derive(Clone, Debug)]
pub enum Dense<S: Scalar> {
    /// Dormand-Prince's fourth-order continuous extension (Hairer, Norsett and Wanner,
    /// Vol. I, II.6; `rcont` as in `dopri5`):
    /// `y(t0 + theta h) = r0 + theta (r1 + (1-theta) (r2 + theta (r3 + (1-theta) r4)))`.
    Dopri {
        /// Start of the step.
        t0: f64,
        /// Step size.
        h: f64,
        /// The five coefficient vectors.
        rcont: [Vec<S>; 5],
    },
    /// The cubic Hermite interpolant through `(y0, f0)` and `(y1, f1)` (third order).
    Hermite {
        /// Start of the step.
        t0: f64,
        /// Step size.
        h: f64,
        /// State at `t0`.
        y0: Vec<S>,
        /// State at `t0 + h`.
        y1: Vec<S>,
        /// Derivative at `t0`.
        f0: Vec<S>,
        /// Derivative at `t0 + h`.
        f1: Vec<S>,
    },
    /// DOP853's seventh-order continuous extension ([`crate::flow::dop853`]):
    /// `y(t0 + x h) = y0 + x (c0 + (1-x) (c1 + x (c2 + (1-x) (c3 + x (c4 + (1-x) (c5 + x
    /// c6))))))`.
    Dop853 {
        /// Start of the step.
        t0: f64,
        /// Step size.
        h: f64,
        /// State at `t0`.
        y0: Vec<S>,
        /// The seven coefficient vectors.
        coef: [Vec<S>; 7],
    },
    /// Rodas5's fourth-order continuous extension ([`crate::flow::rodas5`]):
    /// `y(t0 + theta h) = (1-theta) y0 + theta (y1 + (1-theta) (h1 + theta (h2 + theta h3)))`.
    Rodas {
        /// Start of the step.
        t0: f64,
        /// Step size.
        h: f64,
        /// State at `t0`.
        y0: Vec<S>,
        /// State at `t0 + h`.
        y1: Vec<S>,
        /// `h_r = sum_i H_ri k_i`, `r = 1, 2, 3`.
        hr: [Vec<S>; 3],
    },
}

impl<S: Scalar> Dense<S> {
    /// The step's start and end.
    pub fn span(&self) -> (f64, f64) {
        match self {
            Dense::Dopri { t0, h, .. }
            | Dense::Hermite { t0, h, .. }
            | Dense::Dop853 { t0, h, .. }
            | Dense::Rodas { t0, h, .. } => (*t0, *t0 + *h),
        }
    }

    /// The interpolated state at `t` (in the step).
    pub fn eval(&self, t: f64) -> Vec<S> {
        let (y0, ctx) = match self {
            Dense::Dopri { rcont, .. } => (&rcont[0], rcont[0][0].ctx()),
            Dense::Hermite { y0, .. } | Dense::Rodas { y0, .. } | Dense::Dop853 { y0, .. } => {
                (y0, y0[0].ctx())
            }
        };
        let mut out = vec![S::zero(ctx); y0.len()];
        self.eval_into(t, &mut out);
        out
    }

    /// [`Dense::eval`] into `out` (of the state's length; no allocation in `f64`).
    pub fn eval_into(&self, t: f64, out: &mut [S]) {
        match self {
            Dense::Dopri { t0, h, rcont } => {
                let ctx = rcont[0][0].ctx();
                let th = S::from_f64((t - t0) / h, ctx);
                let th1 = S::one(ctx) - th.clone();
                for (i, o) in out.iter_mut().enumerate() {
                    let inner = rcont[3][i].clone() + th1.clone() * rcont[4][i].clone();
                    let inner = rcont[2][i].clone() + th.clone() * inner;
                    let inner = rcont[1][i].clone() + th1.clone() * inner;
                    *o = rcont[0][i].clone() + th.clone() * inner;
                }
            }
            Dense::Hermite {
                t0,
                h,
                y0,
                y1,
                f0,
                f1,
            } => {
                let ctx = y0[0].ctx();
                let s = (t - t0) / h;
                let hs = S::from_f64(*h, ctx);
                // Hermite basis: h00 = (1 + 2s)(1-s)^2, h10 = s (1-s)^2, h01 = s^2 (3 - 2s),
                // h11 = s^2 (s - 1).
                let h00 = S::from_f64((1.0 + 2.0 * s) * (1.0 - s) * (1.0 - s), ctx);
                let h10 = S::from_f64(s * (1.0 - s) * (1.0 - s), ctx) * hs.clone();
                let h01 = S::from_f64(s * s * (3.0 - 2.0 * s), ctx);
                let h11 = S::from_f64(s * s * (s - 1.0), ctx) * hs;
                for (i, o) in out.iter_mut().enumerate() {
                    *o = h00.clone() * y0[i].clone()
                        + h10.clone() * f0[i].clone()
                        + h01.clone() * y1[i].clone()
                        + h11.clone() * f1[i].clone();
                }
            }
            Dense::Rodas { t0, h, y0, y1, hr } => {
                let ctx = y0[0].ctx();
                let th = S::from_f64((t - t0) / h, ctx);
                let th1 = S::one(ctx) - th.clone();
                for (i, o) in out.iter_mut().enumerate() {
                    let inner = hr[1][i].clone() + th.clone() * hr[2][i].clone();
                    let inner = hr[0][i].clone() + th.clone() * inner;
                    let inner = y1[i].clone() + th1.clone() * inner;
                    *o = th1.clone() * y0[i].clone() + th.clone() * inner;
                }
            }
            Dense::Dop853 { t0, h, y0, coef } => {
                let ctx = y0[0].ctx();
                let x = S::from_f64((t - t0) / h, ctx);
                let x1 = S::one(ctx) - x.clone();
                for (i, o) in out.iter_mut().enumerate() {
                    let mut acc = coef[6][i].clone();
                    for r in (0..6).rev() {
                        let w = if r % 2 == 0 { x1.clone() } else { x.clone() };
                        acc = coef[r][i].clone() + w * acc;
                    }
                    *o = y0[i].clone() + x.clone() * acc;
                }
            }
        }
    }
}
