//! Rodas5: the stiffly accurate, L-stable Rosenbrock method of order 5 with an embedded
//! method of order 4 and a fourth-order dense output (Di Marzo, *Rodas5(4) -- Méthodes de
//! Rosenbrock d'ordre 5(4) adaptées aux problèmes différentiels-algébriques*, Geneva, 1993;
//! the coefficients in the `W`-transformed form of Hairer and Wanner, Vol. II, VI.3, eq.
//! (3.20)-(3.22), with the dense output matrix `H` of Steinebach's Rodas5P work;
//! `derivations/numerics.md`, "Integrators"). Eight stages, one LU per step; the last two
//! stages make both the solution and the embedded solution stiffly accurate, so the error
//! estimate of a relaxed stiff mode vanishes instead of limiting the step.
//!
//! With `A = I/(gamma h) - J` (equilibrated, [`ScaledLu`]) the stages are
//! `A k_i = f(u_i) + sum_(j<i) (C_ij / h) k_j`, `u_i = y0 + sum_(j<i) a_ij k_j`,
//! `y1 = u_8 + k_8`; the embedded solution is `u_8`, so the local error estimate is `k_8`.
//! The dense output is
//! `y(t0 + theta h) = (1 - theta) y0 + theta (y1 + (1 - theta) (h_1 + theta (h_2 + theta
//! h_3)))` with `h_r = sum_i H_ri k_i`.
//!
//! The coefficients are 16-digit decimals: in MPFR the order conditions hold to about
//! 1e-16, so the MPFR reference uses the rational Shampine method ([`super::rosenbrock`]).

use crate::error::Result;
use crate::flow::control::{error_norm, Tolerance};
use crate::flow::dense::{Dense, Kind};
use crate::flow::krylov::Krylov;
use crate::flow::linear::ScaledLu;
use crate::flow::separable::Layout;
use crate::flow::Rhs;
use crate::ode::rosenbrock::RODAS5;
use crate::ode::stepper::{missing_jacobian, Stepper};
use crate::ode::tableau::RosenbrockTableau;
use crate::scalar::Scalar;

/// The tableau ([`crate::ode::rosenbrock::RODAS5`]).
const T: RosenbrockTableau = RODAS5;

/// The work space of Rodas5 steps for states of length `n`: the stages, the factored
/// matrix and the attempt's solution (no allocation per step in `f64`).
#[derive(Clone, Debug)]
pub struct Work<S: Scalar> {
    /// `k_1..k_8` (`k_8` is the local error estimate).
    k: [Vec<S>; 8],
    /// The stage argument `u_i`.
    u: Vec<S>,
    /// The stage right-hand side.
    w: Vec<S>,
    /// `sum_j C_ij k_j` of the current stage.
    acc: Vec<S>,
    /// `I/(gamma h) - J`, factored.
    lu: ScaledLu<S>,
    /// The fifth-order solution at `h` of the last attempt.
    pub y1: Vec<S>,
}

impl<S: Scalar> Work<S> {
    /// A work space for states of length `n` at context `ctx`.
    pub fn new(n: usize, ctx: S::Ctx) -> Self {
        Self::with_layout(n, ctx, None)
    }

    /// A work space for the matrix-free stages of [`step_krylov`] (no `n x n` buffer).
    pub fn matrix_free(n: usize, ctx: S::Ctx) -> Self {
        let mut w = Self::with_layout(0, ctx, None);
        let z = || vec![S::zero(ctx); n];
        w.k = std::array::from_fn(|_| z());
        w.u = z();
        w.w = z();
        w.acc = z();
        w.y1 = z();
        w
    }

    /// [`Work::new`] for Jacobians in the compact layout of the separable flow
    /// ([`crate::flow::separable::Layout`]) when `layout` is given.
    pub fn with_layout(n: usize, ctx: S::Ctx, layout: Option<&Layout>) -> Self {
        let z = || vec![S::zero(ctx); n];
        Work {
            k: std::array::from_fn(|_| z()),
            u: z(),
            w: z(),
            acc: z(),
            lu: ScaledLu::with_layout(n, ctx, layout),
            y1: z(),
        }
    }
}

/// One Rodas5 step of size `h` from `y0` with `f0 = f(y0)` and the Jacobian `jac` at `y0`
/// (row-major `n x n`): 7 evaluations (`f0` is stage 1's). Leaves `y1` in `w` and returns
/// the scaled error norm of `k_8` (accept when `<= 1`).
pub fn step<S: Scalar>(
    f: &mut Rhs<'_, S>,
    y0: &[S],
    f0: &[S],
    jac: &[S],
    h: f64,
    tol: Tolerance,
    w: &mut Work<S>,
) -> Result<f64> {
    let ctx = y0[0].ctx();
    let c = |v: f64| S::from_f64(v, ctx);
    let Work {
        k,
        u,
        w: rhs,
        acc,
        lu,
        y1,
    } = w;
    lu.factor(
        jac,
        &(S::one(ctx) / (T.gamma.value::<S>(ctx) * c(h))),
        y0,
        tol,
    )?;
    let mut solve = |w: &[S], g: &mut [S]| {
        lu.solve_into(w, g);
        Ok(())
    };
    stages(f, y0, f0, h, tol, (k, u, rhs, acc, y1), &mut solve)
}

/// [`step`] with the stage systems solved matrix-free ([`Krylov`], `derivations/
/// numerics.md`, eqs. (K5)-(K7)) at the point of its last [`Krylov::set_point`], which must
/// be `y0`: the same stages, each solved by preconditioned GMRES with exact products `J v`.
pub fn step_krylov(
    f: &mut Rhs<'_, f64>,
    y0: &[f64],
    f0: &[f64],
    h: f64,
    tol: Tolerance,
    w: &mut Work<f64>,
    krylov: &mut Krylov,
) -> Result<f64> {
    krylov.factor(1.0 / (T.gamma.to_f64() * h), tol)?;
    let Work {
        k,
        u,
        w: rhs,
        acc,
        y1,
        ..
    } = w;
    let mut solve = |w: &[f64], g: &mut [f64]| krylov.solve(w, g);
    stages(f, y0, f0, h, tol, (k, u, rhs, acc, y1), &mut solve)
}

/// The stage buffers of [`Work`]: `k_1..k_8`, `u`, the stage right-hand side, the sum of
/// the `C` terms and `y1`.
type Stages<'a, S> = (
    &'a mut [Vec<S>; 8],
    &'a mut Vec<S>,
    &'a mut Vec<S>,
    &'a mut Vec<S>,
    &'a mut Vec<S>,
);

/// A solver of the stage systems: `solve(w, k)` writes `k = A^(-1) w`.
type StageSolve<'a, S> = dyn FnMut(&[S], &mut [S]) -> Result<()> + 'a;

/// The eight stages of [`step`] with the stage systems solved by `solve(w, k)` (`k = A^(-1)
/// w`); returns the error norm.
fn stages<S: Scalar>(
    f: &mut Rhs<'_, S>,
    y0: &[S],
    f0: &[S],
    h: f64,
    tol: Tolerance,
    (k, u, rhs, acc, y1): Stages<'_, S>,
    solve: &mut StageSolve<'_, S>,
) -> Result<f64> {
    let ctx = y0[0].ctx();
    let c = |v: f64| S::from_f64(v, ctx);
    let inv_h = S::one(ctx) / c(h);
    solve(f0, &mut k[0])?;
    u.clone_from_slice(y0);
    for stage in 1..8 {
        // u_i: a fresh combination for stages 2..6, then u_7 = u_6 + k_6, u_8 = u_7 + k_7.
        if stage <= 5 {
            // Term by term (each component sums y0, then the terms in order).
            u.clone_from_slice(y0);
            for &(j, a) in T.a[stage - 1] {
                let a = a.value::<S>(ctx);
                for (ui, kji) in u.iter_mut().zip(&k[j]) {
                    *ui = ui.clone() + a.clone() * kji.clone();
                }
            }
        } else {
            for (ui, kl) in u.iter_mut().zip(&k[stage - 1]) {
                *ui = ui.clone() + kl.clone();
            }
        }
        f(u, rhs)?;
        // sum_j C_ij k_j term by term into `acc` (the same order per component), then
        // w += acc / h.
        for &(j, cc) in T.c[stage - 1].iter().take(1) {
            let cc = cc.value::<S>(ctx);
            for (a, kji) in acc.iter_mut().zip(&k[j]) {
                *a = S::zero(ctx) + cc.clone() * kji.clone();
            }
        }
        for &(j, cc) in T.c[stage - 1].iter().skip(1) {
            let cc = cc.value::<S>(ctx);
            for (a, kji) in acc.iter_mut().zip(&k[j]) {
                *a = a.clone() + cc.clone() * kji.clone();
            }
        }
        for (wi, a) in rhs.iter_mut().zip(acc.iter()) {
            *wi = wi.clone() + a.clone() * inv_h.clone();
        }
        solve(rhs, &mut k[stage])?;
    }
    for ((o, a), b) in y1.iter_mut().zip(u.iter()).zip(&k[7]) {
        *o = a.clone() + b.clone();
    }
    Ok(error_norm(&k[7], y0, y1, tol))
}

/// The fourth-order continuous extension of the step just taken by [`step`] from `y0` with
/// size `h` (its stages still in `w`), written into `out` (no evaluation).
pub fn dense<S: Scalar>(y0: &[S], h: f64, w: &Work<S>, out: &mut Dense<S>) {
    let ctx = y0[0].ctx();
    let c = out.begin(Kind::Rodas, h, y0);
    c[0].clone_from_slice(&w.y1);
    for (r, hrow) in T.dense.iter().enumerate() {
        for (i, o) in c[1 + r].iter_mut().enumerate() {
            let mut acc = S::zero(ctx);
            for &(j, hc) in hrow.iter() {
                acc = acc + hc.value::<S>(ctx) * w.k[j][i].clone();
            }
            *o = acc;
        }
    }
}

/// Rodas5 as a [`Stepper`] with a dense row-major Jacobian: order 5, error estimate of order
/// 4, fourth-order dense output without evaluation.
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
        let jac = jac.ok_or_else(|| missing_jacobian("rodas5"))?;
        step(f, y0, f0, jac, h, tol, self)
    }

    fn solution(&self) -> &[S] {
        &self.y1
    }

    fn dense_output(
        &mut self,
        _f: &mut Rhs<'_, S>,
        y0: &[S],
        _f0: &[S],
        h: f64,
        out: &mut Dense<S>,
    ) -> Result<()> {
        dense(y0, h, self, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::rosenbrock::{jacobian, sqrt_eps};

    /// The nonlinear test of `rosenbrock::tests` with a stiff coupling.
    fn f(y: &[f64], dy: &mut [f64]) -> Result<()> {
        dy.copy_from_slice(&[-y[0] * y[0], -y[2], y[1], -50.0 * (y[3] - y[1])]);
        Ok(())
    }

    /// One step of size `h` from `y` (forward-difference Jacobian); the new state, and the
    /// dense output at `theta h` when asked.
    fn one_step(y: &[f64], h: f64, theta: Option<f64>) -> (Vec<f64>, Vec<f64>) {
        let tol = Tolerance::uniform(1.0, 1.0);
        let se = sqrt_eps::<f64>(());
        let mut f0 = vec![0.0; 4];
        f(y, &mut f0).unwrap();
        let j = jacobian(&mut f, y, &f0, &se, &|_| 1e-8).unwrap();
        let mut w = Work::new(4, ());
        step(&mut f, y, &f0, &j, h, tol, &mut w).unwrap();
        let mid = theta.map_or_else(Vec::new, |theta| {
            let mut d = Dense::new(4, ());
            dense(y, h, &w, &mut d);
            d.eval(theta * h)
        });
        (w.y1, mid)
    }

    fn run(n: usize, probe: Option<f64>) -> (Vec<f64>, Vec<f64>) {
        let h = 1.0 / n as f64;
        let mut y = vec![1.0, 1.0, 0.0, 1.0];
        let mut mid = Vec::new();
        for s in 0..n {
            let (y1, m) = one_step(&y, h, probe.filter(|_| s == n / 2));
            if s == n / 2 {
                mid = m;
            }
            y = y1;
        }
        (y, mid)
    }

    fn max_diff(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(u, v)| (u - v).abs())
            .fold(0.0, f64::max)
    }

    /// Fifth order: the differences of successive step halvings shrink by about 32.
    #[test]
    fn fifth_order_under_step_halving() {
        let (a, b, c) = (run(20, None).0, run(40, None).0, run(80, None).0);
        let order = (max_diff(&a, &b) / max_diff(&b, &c)).log2();
        assert!(order > 4.6 && order < 5.6, "order {order}");
    }

    /// The dense output at the middle of a step is the state there to fourth order: against
    /// a run with steps ten times smaller, its error shrinks by about 2^5 per halving of the
    /// step (local error `O(h^5)` of a fourth-order interpolant).
    #[test]
    fn dense_output_is_fourth_order() {
        let err = |n: usize| {
            // The middle of step n/2 is at time (n/2 + 1/2)/n = 0.5 + 0.5/n.
            let (_, mid) = run(n, Some(0.5));
            let t = 0.5 + 0.5 / n as f64;
            let fine = 20 * n;
            let steps = (t * fine as f64).round() as usize;
            let h = 1.0 / fine as f64;
            let mut y = vec![1.0, 1.0, 0.0, 1.0];
            for _ in 0..steps {
                y = one_step(&y, h, None).0;
            }
            max_diff(&mid, &y)
        };
        let (e1, e2) = (err(10), err(20));
        let order = (e1 / e2).log2();
        assert!(
            order > 4.4 && order < 5.8,
            "local order {order} ({e1:e}, {e2:e})"
        );
    }

    /// L-stability and a stiffly accurate error estimate: one step of `y' = -lambda y`,
    /// `y0 = 1`, `h lambda = 1e8` returns `R(-1e8) = -1.5e-7` (measured) with an error norm
    /// of 87 at rtol 1e-9 (the step changes `y` by 1, to a relative 1.5e-7). Shampine's
    /// A-stable method ([`crate::flow::rosenbrock`]) returns 1/3 with an error norm of
    /// 6.7e8: its embedded method does not damp stiff modes, which is what limits its steps
    /// in the stiff phase.
    #[test]
    fn stiff_decay_is_damped_in_one_step() {
        let lambda = 1e8;
        let mut g = |y: &[f64], dy: &mut [f64]| {
            dy[0] = -lambda * y[0];
            Ok(())
        };
        let y0 = [1.0];
        let f0 = [-lambda];
        let mut w = Work::new(1, ());
        let err = step(
            &mut g,
            &y0,
            &f0,
            &[-lambda],
            1.0,
            Tolerance::uniform(1e-9, 1e-12),
            &mut w,
        )
        .unwrap();
        assert!(w.y1[0].abs() < 1e-6, "{}", w.y1[0]);
        assert!(err < 1e3, "{err}");
    }
}
