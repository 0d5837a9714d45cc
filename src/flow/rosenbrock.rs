//! The Rosenbrock methods of the flow: the generic step of [`crate::ode::rosenbrock`]
//! (Rodas5, the default in `f64`, and Shampine's 4(3), exact rational coefficients, the
//! MPFR reference's and Rodas5's fallback; `derivations/numerics.md`, Section
//! "Integrators") with the equilibrated LU of [`crate::flow::linear`] as its stage solver
//! ([`Work`]), and the forward-difference Jacobian ([`jacobian`], in MPFR; in `f64` the
//! Jacobian is exact, by dual numbers: [`crate::flow::jacobian`]). Generic over [`Scalar`].

use crate::error::Result;
use crate::flow::control::Tolerance;
use crate::flow::linear::ScaledLu;
use crate::flow::separable::Layout;
use crate::flow::Rhs;
use crate::ode::rosenbrock::{Rosenbrock, StageSolver};
use crate::ode::tableau::RosenbrockTableau;
use crate::scalar::Scalar;

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

/// A Rosenbrock method with the equilibrated LU as its stage solver (dense, or in the
/// compact layout of the separable flow): the work space of its steps for states of length
/// `n` (no allocation per step in `f64`).
pub type Work<S> = Rosenbrock<S, ScaledLu<S>>;

impl<S: Scalar> StageSolver<S> for ScaledLu<S> {
    fn factor(&mut self, jac: &[S], shift: &S, y0: &[S], tol: Tolerance) -> Result<()> {
        ScaledLu::factor(self, jac, shift, y0, tol)
    }

    fn solve(&self, w: &[S], x: &mut [S]) {
        self.solve_into(w, x);
    }
}

impl<S: Scalar> Rosenbrock<S, ScaledLu<S>> {
    /// The method of `tableau` for states of length `n` at context `ctx`, with a dense LU.
    pub fn new(tableau: RosenbrockTableau, n: usize, ctx: S::Ctx) -> Self {
        Self::with_layout(tableau, n, ctx, None)
    }

    /// [`Rosenbrock::new`] for Jacobians in the compact layout of the separable flow
    /// ([`crate::flow::separable::Layout`]) when `layout` is given.
    pub fn with_layout(
        tableau: RosenbrockTableau,
        n: usize,
        ctx: S::Ctx,
        layout: Option<&Layout>,
    ) -> Self {
        Rosenbrock::with_solver(tableau, n, ctx, ScaledLu::with_layout(n, ctx, layout))
    }

    /// The stage buffers alone, for stages solved matrix-free
    /// ([`Rosenbrock::stages_with`] with [`crate::flow::krylov::Krylov`]; no `n x n`
    /// buffer).
    pub fn matrix_free(tableau: RosenbrockTableau, n: usize, ctx: S::Ctx) -> Self {
        Rosenbrock::with_solver(tableau, n, ctx, ScaledLu::with_layout(0, ctx, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ode::rosenbrock::{RODAS5, ROS4};
    use crate::ode::Stepper;

    /// A mildly stiff nonlinear test: `y0' = -y0^2`, `(y1, y2)' = (-y2, y1)`,
    /// `y3' = -50 (y3 - cos t)`-like coupling written autonomously as `-50 (y3 - y1)`.
    fn f(y: &[f64], dy: &mut [f64]) -> Result<()> {
        dy.copy_from_slice(&[-y[0] * y[0], -y[2], y[1], -50.0 * (y[3] - y[1])]);
        Ok(())
    }

    /// `n` steps of size `1/n` with a forward-difference Jacobian.
    fn run(t: RosenbrockTableau, n: usize) -> Vec<f64> {
        let tol = Tolerance::uniform(1.0, 1.0);
        let h = 1.0 / n as f64;
        let mut y = vec![1.0, 1.0, 0.0, 1.0];
        let se = sqrt_eps::<f64>(());
        let mut w = Work::new(t, 4, ());
        let mut f0 = vec![0.0; 4];
        for _ in 0..n {
            f(&y, &mut f0).unwrap();
            let j = jacobian(&mut f, &y, &f0, &se, &|_| 1e-8).unwrap();
            w.attempt(&mut f, &y, &f0, Some(&j), h, tol).unwrap();
            y = w.solution().to_vec();
        }
        y
    }

    fn max_diff(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(u, v)| (u - v).abs())
            .fold(0.0, f64::max)
    }

    /// The orders under step halving: the differences of successive halvings shrink by about
    /// 2^5 (Rodas5) and 2^4 (Shampine's 4(3)). Falsifier: each method's window excludes the
    /// other's order.
    #[test]
    fn orders_under_step_halving() {
        for (t, n, lo, hi) in [(RODAS5, 20, 4.6, 5.6), (ROS4, 40, 3.6, 4.5)] {
            let (a, b, c) = (run(t, n), run(t, 2 * n), run(t, 4 * n));
            let order = (max_diff(&a, &b) / max_diff(&b, &c)).log2();
            assert!(order > lo && order < hi, "{}: order {order}", t.name);
        }
    }

    /// L-stability and a stiffly accurate error estimate: one step of `y' = -lambda y`,
    /// `y0 = 1`, `h lambda = 1e8`: Rodas5 returns `R(-1e8) = -1.5e-7` (measured) with an
    /// error norm of 87 at rtol 1e-9 (the step changes `y` by 1, to a relative 1.5e-7).
    /// Shampine's A-stable method (negative control) returns 1/3 with an error norm of
    /// 6.7e8: its embedded method does not damp stiff modes, which is what limits its steps
    /// in the stiff phase.
    #[test]
    fn stiff_decay_is_damped_in_one_step() {
        let lambda = 1e8;
        let mut g = |y: &[f64], dy: &mut [f64]| {
            dy[0] = -lambda * y[0];
            Ok(())
        };
        let tol = Tolerance::uniform(1e-9, 1e-12);
        let step = |t: RosenbrockTableau, g: &mut Rhs<'_, f64>| {
            let mut w = Work::new(t, 1, ());
            let err = w.attempt(g, &[1.0], &[-lambda], Some(&[-lambda]), 1.0, tol);
            (w.solution()[0], err.unwrap())
        };
        let (y1, err) = step(RODAS5, &mut g);
        assert!(y1.abs() < 1e-6 && err < 1e3, "rodas5: {y1} {err}");
        let (y1, err) = step(ROS4, &mut g);
        assert!(y1.abs() > 0.3 && err > 1e8, "ros4: {y1} {err}");
    }
}
