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
use crate::ode::stepper::{missing_jacobian, Stepper};
use crate::scalar::Scalar;

/// `gamma`.
const GAMMA: f64 = 0.19;

/// `a_ij` of stages 2..6 (stages 7 and 8 add `k_6` and `k_7` to `u_6`).
const A: [&[f64]; 5] = [
    &[2.0],
    &[3.040894194418781, 1.041747909077569],
    &[2.576417536461461, 1.62208306077664, -0.9089668560264532],
    &[
        2.760842080225597,
        1.446624659844071,
        -0.3036980084553738,
        0.2877498600325443,
    ],
    &[
        -14.09640773051259,
        6.925207756232704,
        -41.47510893210728,
        2.343771018586405,
        24.13215229196062,
    ],
];

/// `C_ij` of stages 2..8.
const C: [&[f64]; 7] = [
    &[-10.31323885133993],
    &[-21.04823117650003, -7.234992135176716],
    &[32.22751541853323, -4.943732386540191, 19.44922031041879],
    &[
        -20.69865579590063,
        -8.816374604402768,
        1.260436877740897,
        -0.7495647613787146,
    ],
    &[
        -46.22004352711257,
        -17.49534862857472,
        -289.6389582892057,
        93.60855400400906,
        318.3822534212147,
    ],
    &[
        34.20013733472935,
        -14.1553540271769,
        57.823356409884,
        25.83362985412365,
        1.408950972071624,
        -6.551835421242162,
    ],
    &[
        42.57076742291101,
        -13.80770672017997,
        93.98938432427124,
        18.77919633714503,
        -31.5835918722337,
        -6.685968952921985,
        -5.810979938412932,
    ],
];

/// The dense output matrix `H` (3 x 8).
const H: [[f64; 8]; 3] = [
    [
        27.354592673333357,
        -6.925207756232857,
        26.40037733258859,
        0.5635230501052979,
        -4.699151156849391,
        -1.6008677469422725,
        -1.5306074446748028,
        -1.3929872940716344,
    ],
    [
        44.19024239501722,
        1.3677947663381929e-13,
        202.93261852171622,
        -35.5669339789154,
        -181.91095152160645,
        3.4116351403665033,
        2.5793540257308067,
        2.2435122582734066,
    ],
    [
        -44.0988150021747,
        -5.755396159656812e-13,
        -181.26175034586677,
        56.99302194811676,
        183.21182741427398,
        -7.480257918273637,
        -5.792426076169686,
        -5.32503859794143,
    ],
];

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
    lu.factor(jac, &(S::one(ctx) / (c(GAMMA) * c(h))), y0, tol)?;
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
    krylov.factor(1.0 / (GAMMA * h), tol)?;
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
            for (a, kj) in A[stage - 1].iter().zip(&k[..stage]) {
                let a = c(*a);
                for (ui, kji) in u.iter_mut().zip(kj) {
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
        for (cc, kj) in C[stage - 1].iter().zip(&k[..stage]).take(1) {
            let cc = c(*cc);
            for (a, kji) in acc.iter_mut().zip(kj) {
                *a = S::zero(ctx) + cc.clone() * kji.clone();
            }
        }
        for (cc, kj) in C[stage - 1].iter().zip(&k[..stage]).skip(1) {
            let cc = c(*cc);
            for (a, kji) in acc.iter_mut().zip(kj) {
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
    for (r, hrow) in H.iter().enumerate() {
        for (i, o) in c[1 + r].iter_mut().enumerate() {
            let mut acc = S::zero(ctx);
            for (hc, kj) in hrow.iter().zip(&w.k) {
                acc = acc + S::from_f64(*hc, ctx) * kj[i].clone();
            }
            *o = acc;
        }
    }
}

/// Rodas5 as a [`Stepper`] with a dense row-major Jacobian: order 5, error estimate of order
/// 4, fourth-order dense output without evaluation.
impl<S: Scalar> Stepper<S> for Work<S> {
    fn order(&self) -> u32 {
        5
    }

    fn estimate_order(&self) -> u32 {
        4
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
