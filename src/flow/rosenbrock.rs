//! A fourth-order Rosenbrock method with an embedded third-order error estimate
//! (Shampine's parameters, as in Kaps and Rentrop's GRK4 family; Press et al., *Numerical
//! Recipes*, 2nd ed., 16.6; `derivations/numerics.md`, Section "Integrators"), with the
//! Jacobian supplied by the caller (exact, by dual numbers, in `f64`:
//! [`crate::flow::jacobian`]; the forward-difference [`jacobian`] here in MPFR) and a dense
//! LU with partial pivoting. A-stable, so the step size of a relaxed stiff mode is limited
//! by accuracy, not stability. Generic over [`Scalar`].

use crate::error::Result;
use crate::flow::control::{error_norm, Tolerance};
use crate::flow::linear::ScaledLu;
use crate::flow::separable::Layout;
use crate::flow::Rhs;
use crate::ode::dense::Dense;
use crate::ode::rosenbrock::ROS4;
use crate::ode::stepper::{missing_jacobian, Stepper};
use crate::ode::tableau::{RosenbrockTableau, Row};
use crate::scalar::Scalar;

/// The tableau ([`crate::ode::rosenbrock::ROS4`]).
const T: RosenbrockTableau = ROS4;

/// The square root of the unit roundoff of the working precision (found by halving).
pub fn sqrt_eps<S: Scalar>(ctx: S::Ctx) -> S {
    let one = S::one(ctx);
    let half = S::from_f64(0.5, ctx);
    let mut e = S::one(ctx);
    while one.clone() + e.clone() * half.clone() > one {
        e = e * half.clone();
    }
    e.sqrt()
}

/// The forward-difference Jacobian `J_ij ~ (f_i(y + delta_j e_j) - f_i(y)) / delta_j`,
/// `delta_j = sqrt(eps) max(|y_j|, scale_j)` with `scale_j` the component's natural size
/// (`atol_j / rtol` of the tolerance: below it a component is measured absolutely), written
/// row-major into `jac` (`n x n`); `yp` and `fp` are work buffers of length `n`. Costs `n`
/// evaluations.
#[allow(clippy::too_many_arguments)]
pub fn jacobian_into<S: Scalar>(
    f: &mut Rhs<'_, S>,
    y: &[S],
    f0: &[S],
    sqrt_eps: &S,
    scale: &dyn Fn(usize) -> f64,
    jac: &mut [S],
    yp: &mut [S],
    fp: &mut [S],
) -> Result<()> {
    let n = y.len();
    let ctx = y[0].ctx();
    for j in 0..n {
        let floor = S::from_f64(scale(j), ctx);
        let delta = sqrt_eps.clone() * y[j].clone().abs().max_of(floor);
        yp.clone_from_slice(y);
        yp[j] = yp[j].clone() + delta.clone();
        let delta = yp[j].clone() - y[j].clone();
        f(yp, fp)?;
        for i in 0..n {
            jac[i * n + j] = (fp[i].clone() - f0[i].clone()) / delta.clone();
        }
    }
    Ok(())
}

/// [`jacobian_into`] into a fresh row-major `n x n` matrix.
pub fn jacobian<S: Scalar>(
    f: &mut Rhs<'_, S>,
    y: &[S],
    f0: &[S],
    sqrt_eps: &S,
    scale: &dyn Fn(usize) -> f64,
) -> Result<Vec<S>> {
    let n = y.len();
    let ctx = y[0].ctx();
    let mut jac = vec![S::zero(ctx); n * n];
    let (mut yp, mut fp) = (y.to_vec(), y.to_vec());
    jacobian_into(f, y, f0, sqrt_eps, scale, &mut jac, &mut yp, &mut fp)?;
    Ok(jac)
}

/// The work space of Rosenbrock 4(3) steps for states of length `n` (no allocation per step
/// in `f64`).
#[derive(Clone, Debug)]
pub struct Work<S: Scalar> {
    /// `g_1..g_4`.
    g: [Vec<S>; 4],
    /// Stage argument and right-hand sides.
    arg: Vec<S>,
    w: Vec<S>,
    f3: Vec<S>,
    /// The local error estimate.
    e: Vec<S>,
    /// `I/(gamma h) - J`, factored.
    lu: ScaledLu<S>,
    /// The fourth-order solution at `h` of the last attempt.
    pub y1: Vec<S>,
}

impl<S: Scalar> Work<S> {
    /// A work space for states of length `n` at context `ctx`.
    pub fn new(n: usize, ctx: S::Ctx) -> Self {
        Self::with_layout(n, ctx, None)
    }

    /// [`Work::new`] for Jacobians in the compact layout of the separable flow
    /// ([`crate::flow::separable::Layout`]) when `layout` is given.
    pub fn with_layout(n: usize, ctx: S::Ctx, layout: Option<&Layout>) -> Self {
        let z = || vec![S::zero(ctx); n];
        Work {
            g: std::array::from_fn(|_| z()),
            arg: z(),
            w: z(),
            f3: z(),
            e: z(),
            lu: ScaledLu::with_layout(n, ctx, layout),
            y1: z(),
        }
    }
}

/// One Rosenbrock step of size `h` from `y0` with `f0 = f(y0)` and the Jacobian `jac` at
/// `y0` (row-major `n x n`): with `A = I/(gamma h) - J`,
/// `A g1 = f0`, `A g2 = f(y0 + a21 g1) + c21 g1/h`,
/// `A g3 = f(y0 + a31 g1 + a32 g2) + (c31 g1 + c32 g2)/h`,
/// `A g4 = f(y0 + a31 g1 + a32 g2) + (c41 g1 + c42 g2 + c43 g3)/h`,
/// `y1 = y0 + sum b_i g_i`, error `sum e_i g_i`. Two evaluations; leaves `y1` in `w` and
/// returns the scaled error norm (accept when `<= 1`).
pub fn step<S: Scalar>(
    f: &mut Rhs<'_, S>,
    y0: &[S],
    f0: &[S],
    jac: &[S],
    h: f64,
    tol: Tolerance,
    w: &mut Work<S>,
) -> Result<f64> {
    let n = y0.len();
    let ctx = y0[0].ctx();
    let hs = S::from_f64(h, ctx);
    let r = |row: Row, j: usize| row[j].1.value::<S>(ctx);
    // The coefficients at the working precision, once per step (the `c_ij / h` folded).
    let inv_h = S::one(ctx) / hs.clone();
    let inv_gh = S::one(ctx) / (T.gamma.value::<S>(ctx) * hs);
    let (a21, a31, a32) = (r(T.a[0], 0), r(T.a[1], 0), r(T.a[1], 1));
    let ch = |row: Row, j: usize| r(row, j) * inv_h.clone();
    let (c21, c31, c32) = (ch(T.c[0], 0), ch(T.c[1], 0), ch(T.c[1], 1));
    let (c41, c42, c43) = (ch(T.c[2], 0), ch(T.c[2], 1), ch(T.c[2], 2));
    let b: [S; 4] = std::array::from_fn(|j| r(T.b, j));
    let e: [S; 4] = std::array::from_fn(|j| r(T.e, j));
    let Work {
        g,
        arg,
        w: wv,
        f3,
        e: ev,
        lu,
        y1,
    } = w;
    // The linear systems in equilibrated variables (eq. (L1) of `derivations/numerics.md`).
    lu.factor(jac, &inv_gh, y0, tol)?;
    let [g1, g2, g3, g4] = g;
    lu.solve_into(f0, g1);
    for i in 0..n {
        arg[i] = y0[i].clone() + a21.clone() * g1[i].clone();
    }
    f(arg, wv)?;
    for i in 0..n {
        wv[i] = wv[i].clone() + c21.clone() * g1[i].clone();
    }
    lu.solve_into(wv, g2);
    for i in 0..n {
        arg[i] = y0[i].clone() + a31.clone() * g1[i].clone() + a32.clone() * g2[i].clone();
    }
    f(arg, f3)?;
    for i in 0..n {
        wv[i] = f3[i].clone() + (c31.clone() * g1[i].clone() + c32.clone() * g2[i].clone());
    }
    lu.solve_into(wv, g3);
    for i in 0..n {
        wv[i] = f3[i].clone()
            + (c41.clone() * g1[i].clone()
                + c42.clone() * g2[i].clone()
                + c43.clone() * g3[i].clone());
    }
    lu.solve_into(wv, g4);
    let gs = [&*g1, &*g2, &*g3, &*g4];
    for i in 0..n {
        let mut acc = y0[i].clone();
        let mut err = S::zero(ctx);
        for ((bk, ek), gk) in b.iter().zip(&e).zip(gs) {
            acc = acc + bk.clone() * gk[i].clone();
            err = err + ek.clone() * gk[i].clone();
        }
        y1[i] = acc;
        ev[i] = err;
    }
    Ok(error_norm(ev, y0, y1, tol))
}

/// Shampine's 4(3) method as a [`Stepper`] with a dense row-major Jacobian: order 4, error
/// estimate of order 3, and the cubic Hermite extension through `(y0, f0)` and
/// `(y1, f(y1))` (one evaluation).
impl<S: Scalar> Stepper<S> for Work<S> {
    fn order(&self) -> u32 {
        T.order
    }

    fn estimate_order(&self) -> u32 {
        T.estimate_order
    }

    fn needs_jacobian(&self) -> bool {
        true
    }

    fn attempt(
        &mut self,
        f: &mut Rhs<'_, S>,
        y0: &[S],
        f0: &[S],
        jac: Option<&[S]>,
        h: f64,
        tol: Tolerance,
    ) -> Result<f64> {
        let jac = jac.ok_or_else(|| missing_jacobian("ros4"))?;
        step(f, y0, f0, jac, h, tol, self)
    }

    fn solution(&self) -> &[S] {
        &self.y1
    }

    fn dense_output(
        &mut self,
        f: &mut Rhs<'_, S>,
        y0: &[S],
        f0: &[S],
        h: f64,
        out: &mut Dense<S>,
    ) -> Result<()> {
        // `f3`, a stage buffer, is free after the step: `f(y1)` goes there.
        f(&self.y1, &mut self.f3)?;
        out.set_hermite(h, y0, &self.y1, f0, &self.f3);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mildly stiff nonlinear test: `y0' = -y0^2`, `(y1, y2)' = (-y2, y1)`,
    /// `y3' = -50 (y3 - cos t)`-like coupling written autonomously as `-50 (y3 - y1)`.
    fn f(y: &[f64], dy: &mut [f64]) -> Result<()> {
        dy.copy_from_slice(&[-y[0] * y[0], -y[2], y[1], -50.0 * (y[3] - y[1])]);
        Ok(())
    }

    fn run(n: usize) -> Vec<f64> {
        let tol = Tolerance::uniform(1.0, 1.0);
        let h = 1.0 / n as f64;
        let mut y = vec![1.0, 1.0, 0.0, 1.0];
        let se = sqrt_eps::<f64>(());
        let mut w = Work::new(4, ());
        let mut f0 = vec![0.0; 4];
        for _ in 0..n {
            f(&y, &mut f0).unwrap();
            let j = jacobian(&mut f, &y, &f0, &se, &|_| 1e-8).unwrap();
            step(&mut f, &y, &f0, &j, h, tol, &mut w).unwrap();
            y.clone_from(&w.y1);
        }
        y
    }

    /// Fourth order: the differences of successive step halvings shrink by ~16.
    #[test]
    fn fourth_order_under_step_halving() {
        let (a, b, c) = (run(40), run(80), run(160));
        let d1 = a
            .iter()
            .zip(&b)
            .map(|(u, v)| (u - v).abs())
            .fold(0.0, f64::max);
        let d2 = b
            .iter()
            .zip(&c)
            .map(|(u, v)| (u - v).abs())
            .fold(0.0, f64::max);
        let order = (d1 / d2).log2();
        assert!(order > 3.6 && order < 4.5, "order {order}");
    }
}
