//! The explicit Runge-Kutta family: one step and one continuous extension for every
//! [`ExplicitTableau`] (`derivations/numerics.md`, "Integrators"). Generic over [`Scalar`],
//! so the same code runs in `f64` and in MPFR; no allocation per step.

use crate::error::Result;
use crate::ode::control::{error_norm, Tolerance};
use crate::ode::dense::{Dense, Kind};
use crate::ode::stepper::Stepper;
use crate::ode::tableau::{combine, DenseForm, ErrorWeights, ExplicitTableau, Row, Weight};
use crate::ode::Rhs;
use crate::scalar::Scalar;

/// Where an explicit pair reads its tableau: an [`ExplicitTableau`] value (any pair, read at
/// run time), or a unit struct whose tableau is a constant, which the compiler folds into
/// the step ([`crate::ode::dop853::Dop853`]). Both run the same operations in the same
/// order, so they give the same bits.
pub trait Coefficients: Copy + std::fmt::Debug {
    /// The type of the tableau's weights.
    type W: Weight;

    /// The tableau.
    fn tableau(&self) -> ExplicitTableau<Self::W>;
}

impl<W: Weight> Coefficients for ExplicitTableau<W> {
    type W = W;

    #[inline]
    fn tableau(&self) -> Self {
        *self
    }
}

/// An explicit pair with its work space for states of length `n`: the stages, the stage
/// argument, the coefficient buffer, and the attempt's solution. `T` supplies the tableau
/// ([`Coefficients`]): `Explicit<S>` reads any [`ExplicitTableau`],
/// `Explicit<S, Dop853>` is DOP853 specialised on its constant tableau.
#[derive(Clone, Debug)]
pub struct Explicit<S: Scalar, T: Coefficients = ExplicitTableau> {
    coefficients: T,
    /// `k_0..` (`k_{a.len()} = f(y1)`, then the dense output's stages).
    k: Vec<Vec<S>>,
    /// The stage argument.
    arg: Vec<S>,
    /// The error estimate of an embedded pair.
    errv: Vec<S>,
    /// `h w_j` of the current row.
    coef: Vec<S>,
    /// The solution at `h` of the last attempt.
    y1: Vec<S>,
    /// The components the error norm measures: the first `measured` (the rest are carried
    /// along, as a sensitivity system's tangents are when they are left out of the norm).
    measured: usize,
}

impl<S: Scalar, T: Coefficients> Explicit<S, T> {
    /// The pair with the tableau of `coefficients` for states of length `n` at context
    /// `ctx`.
    pub fn new(coefficients: T, n: usize, ctx: S::Ctx) -> Self {
        let tableau = coefficients.tableau();
        let z = || vec![S::zero(ctx); n];
        Explicit {
            coefficients,
            k: (0..tableau.all_stages()).map(|_| z()).collect(),
            arg: z(),
            errv: z(),
            coef: vec![S::zero(ctx); tableau.widest_row()],
            y1: z(),
            measured: n,
        }
    }

    /// The pair with its error norm on the first `m` components only (all of them by
    /// default): the others are integrated by the same stages but do not control the step.
    ///
    /// # Examples
    ///
    /// ```
    /// use predhead::ode::{control::Tolerance, dop853::DOP853, explicit::Explicit};
    /// // y' = -y and a passenger z' = -1000 z that the norm does not see.
    /// let mut f = |y: &[f64], dy: &mut [f64]| {
    ///     dy[0] = -y[0];
    ///     dy[1] = -1000.0 * y[1];
    ///     Ok(())
    /// };
    /// let tol = Tolerance::uniform(1e-10, 1e-12);
    /// let (y0, f0) = ([1.0, 1.0], [-1.0, -1000.0]);
    /// let err_all = Explicit::new(DOP853, 2, ()).step(&mut f, &y0, &f0, 0.1, tol)?;
    /// let err_first = Explicit::new(DOP853, 2, ()).measuring(1).step(&mut f, &y0, &f0, 0.1, tol)?;
    /// assert!(err_all > 1.0 && err_first < 1.0);
    /// # Ok::<(), predhead::error::Error>(())
    /// ```
    pub fn measuring(mut self, m: usize) -> Self {
        self.measured = m.min(self.y1.len()).max(1);
        self
    }

    /// The tableau.
    pub fn tableau(&self) -> ExplicitTableau<T::W> {
        self.coefficients.tableau()
    }

    /// The solution of the last attempt.
    pub fn y1(&self) -> &[S] {
        &self.y1
    }

    /// `f(y1)` of the last attempt (first same as last: the next step's first stage).
    pub fn f1(&self) -> &[S] {
        &self.k[self.tableau().a.len()]
    }

    /// The solution of the last attempt, for swapping out (its content is then stale).
    pub fn y1_mut(&mut self) -> &mut Vec<S> {
        &mut self.y1
    }

    /// One step of size `h` from `y0` with `f0 = f(y0)`: `a.len()` evaluations, the last
    /// `f(y1)`. Leaves `y1` and `f(y1)` in the work space and returns the scaled error norm
    /// (accept when `<= 1`).
    ///
    /// # Errors
    ///
    /// As `f`, where it is undefined at a stage.
    pub fn step(
        &mut self,
        f: &mut Rhs<'_, S>,
        y0: &[S],
        f0: &[S],
        h: f64,
        tol: Tolerance,
    ) -> Result<f64> {
        let tableau = self.coefficients.tableau();
        let hs = S::from_f64(h, y0[0].ctx());
        let last = tableau.a.len() - 1;
        let (k, coef) = (&mut self.k, &mut self.coef);
        k[0].clone_from_slice(f0);
        for (s, row) in tableau.a[..last].iter().enumerate() {
            combine(&mut self.arg, Some(y0), row, k, &hs, coef);
            f(&self.arg, &mut k[s + 1])?;
        }
        combine(&mut self.y1, Some(y0), tableau.a[last], k, &hs, coef);
        f(&self.y1, &mut k[last + 1])?;
        let m = self.measured;
        Ok(match tableau.error {
            ErrorWeights::Embedded(e) => {
                combine(&mut self.errv, None, e, k, &hs, coef);
                error_norm(&self.errv[..m], &y0[..m], &self.y1[..m], tol)
            }
            ErrorWeights::Hairer { e5, bhh } => hairer_norm(
                k,
                &y0[..m],
                &self.y1[..m],
                [e5, tableau.a[last], bhh],
                h,
                tol,
            ),
        })
    }

    /// The continuous extension of the step just taken by [`Explicit::step`] from `y0` with
    /// size `h` (its stages still in the work space), written into `out`: Dormand-Prince's
    /// fourth-order one without evaluation, or DOP853's seventh-order one with three.
    ///
    /// # Errors
    ///
    /// As `f`, where it is undefined at a stage of the extension.
    pub fn dense(
        &mut self,
        f: &mut Rhs<'_, S>,
        y0: &[S],
        h: f64,
        out: &mut Dense<S>,
    ) -> Result<()> {
        let tableau = self.coefficients.tableau();
        let ctx = y0[0].ctx();
        let hs = S::from_f64(h, ctx);
        let fsal = tableau.a.len();
        let (k, coef, y1) = (&mut self.k, &mut self.coef, &self.y1);
        match tableau.dense {
            DenseForm::Dopri(d) => {
                let c = out.begin(Kind::Dopri, h, y0);
                for i in 0..y0.len() {
                    let r1 = y1[i].clone() - y0[i].clone();
                    let r2 = hs.clone() * k[0][i].clone() - r1.clone();
                    c[2][i] = r1.clone() - hs.clone() * k[fsal][i].clone() - r2.clone();
                    c[1][i] = r2;
                    c[0][i] = r1;
                }
                combine(&mut c[3], None, d, k, &hs, coef);
            }
            DenseForm::Dop853 { stages, rows } => {
                for (s, row) in stages.iter().enumerate() {
                    combine(&mut self.arg, Some(y0), row, k, &hs, coef);
                    f(&self.arg, &mut k[fsal + 1 + s])?;
                }
                // y(x h) = y0 + x (F0 + (1-x) (F1 + x (F2 + (1-x) (F3 + x (F4 + (1-x) (F5
                // + x F6)))))) with F0 = y1 - y0, F1 = h f0 - F0, F2 = 2 F0 - h (f1 + f0),
                // F3..F6 = h sum_j D_rj k_j.
                let c = out.begin(Kind::Dop853, h, y0);
                let two = S::from_f64(2.0, ctx);
                for i in 0..y0.len() {
                    let f0v = y1[i].clone() - y0[i].clone();
                    c[1][i] = hs.clone() * k[0][i].clone() - f0v.clone();
                    c[2][i] = two.clone() * f0v.clone()
                        - hs.clone() * (k[fsal][i].clone() + k[0][i].clone());
                    c[0][i] = f0v;
                }
                for (r, row) in rows.iter().enumerate() {
                    combine(&mut c[3 + r], None, row, k, &hs, coef);
                }
            }
        }
        Ok(())
    }
}

/// Hairer's error norm of DOP853 ([`ErrorWeights::Hairer`]) for the step from `y0` to `y1`
/// of size `h` with stages `k`, from the rows `[e5, b, bhh]`: the fifth-order estimate
/// `sum_j E5_j k_j` and the third-order one `sum_j (b_j - bhat_j) k_j`.
#[inline]
fn hairer_norm<S: Scalar, W: Weight>(
    k: &[Vec<S>],
    y0: &[S],
    y1: &[S],
    [e5, b, bhh]: [Row<W>; 3],
    h: f64,
    tol: Tolerance,
) -> f64 {
    let ctx = y0[0].ctx();
    let n = y0.len();
    let mut err5 = 0.0;
    let mut err3 = 0.0;
    for i in 0..n {
        let sc = tol.scale_at(i, y0[i].to_f64().abs().max(y1[i].to_f64().abs()));
        let mut v5 = S::zero(ctx);
        for &(j, w) in e5 {
            v5 = v5 + w.value::<S>(ctx) * k[j][i].clone();
        }
        let mut v3 = S::zero(ctx);
        for &(j, w) in b {
            v3 = v3 + w.value::<S>(ctx) * k[j][i].clone();
        }
        for &(j, w) in bhh {
            v3 = v3 - w.value::<S>(ctx) * k[j][i].clone();
        }
        err5 += (v5.to_f64() / sc).powi(2);
        err3 += (v3.to_f64() / sc).powi(2);
    }
    if err5 == 0.0 && err3 == 0.0 {
        0.0
    } else {
        h.abs() * err5 / ((err5 + 0.01 * err3) * n as f64).sqrt()
    }
}

impl<S: Scalar, T: Coefficients> Stepper<S> for Explicit<S, T> {
    fn order(&self) -> u32 {
        self.tableau().order
    }

    fn estimate_order(&self) -> u32 {
        self.tableau().estimate_order
    }

    fn needs_jacobian(&self) -> bool {
        false
    }

    fn attempt(
        &mut self,
        f: &mut Rhs<'_, S>,
        y0: &[S],
        f0: &[S],
        _jac: Option<&[S]>,
        h: f64,
        tol: Tolerance,
    ) -> Result<f64> {
        self.step(f, y0, f0, h, tol)
    }

    fn solution(&self) -> &[S] {
        &self.y1
    }

    fn dense_output(
        &mut self,
        f: &mut Rhs<'_, S>,
        y0: &[S],
        _f0: &[S],
        h: f64,
        out: &mut Dense<S>,
    ) -> Result<()> {
        self.dense(f, y0, h, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ode::convergence::{errors, f};
    use crate::ode::{dop853::DOP853, dopri5::DOPRI5};

    fn error_after<T: Coefficients>(
        tableau: T,
        n: usize,
        t_end: f64,
        thetas: &[f64],
    ) -> (f64, f64) {
        let tol = Tolerance::uniform(1.0, 1.0);
        let mut w = Explicit::new(tableau, 3, ());
        let mut d = Dense::new(3, ());
        let mut step = |y: &[f64], f0: &[f64], h: f64| {
            w.step(&mut f, y, f0, h, tol).unwrap();
            w.dense(&mut f, y, h, &mut d).unwrap();
            (w.y1.clone(), d.clone())
        };
        errors(&mut step, n, t_end, thetas)
    }

    /// Eighth order at the step ends (error ratio about 2^8 under step halving; measured
    /// 2^7.84 from 8 to 16 steps over [0, 2]) and a dense output of order 7 (its local error
    /// `O(h^8)`; measured 2^7.68). With the sign pattern of the nested form swapped the
    /// dense order drops to 2.
    #[test]
    fn dop853_eighth_order_steps_and_seventh_order_dense_output() {
        let (e1, d1) = error_after(DOP853, 8, 2.0, &[0.3, 0.5, 0.8]);
        let (e2, d2) = error_after(DOP853, 16, 2.0, &[0.3, 0.5, 0.8]);
        let order = (e1 / e2).log2();
        let dense_order = (d1 / d2).log2();
        assert!(order > 7.3 && order < 9.0, "order {order} ({e1:e}, {e2:e})");
        assert!(
            dense_order > 7.0,
            "dense order {dense_order} ({d1:e}, {d2:e})"
        );
    }

    /// Fifth order at the step ends (error ratio ~2^5 under step halving; measured 2^5.9 at
    /// these coarse steps) and a dense output of at least fourth order.
    #[test]
    fn dopri5_fifth_order_steps_and_fourth_order_dense_output() {
        let (e1, d1) = error_after(DOPRI5, 10, 1.0, &[0.5]);
        let (e2, d2) = error_after(DOPRI5, 20, 1.0, &[0.5]);
        let order = (e1 / e2).log2();
        let dense_order = (d1 / d2).log2();
        assert!(order > 4.7 && order < 6.5, "order {order}");
        assert!(dense_order > 3.7, "dense order {dense_order}");
    }
}
