//! The Rosenbrock family: its tableaus as data ([`RosenbrockTableau`]: [`RODAS5`] and
//! Shampine's 4(3), [`ROS4`]) and one generic step over them ([`Rosenbrock`], a [`Stepper`]),
//! as OrdinaryDiffEq has one `perform_step!` per family. The stage systems
//! `(I/(gamma h) - J) k = w` are solved by a [`StageSolver`] the caller supplies (the flow's
//! equilibrated LU, `crate::flow::linear::ScaledLu`), or by any closure
//! ([`Rosenbrock::stages_with`], the flow's matrix-free Krylov solver).
//!
//! With `A = I/(gamma h) - J` a step is `A k_1 = f(y0)` and, for `i >= 2`,
//! `A k_i = f(u_i) + sum_(j<i) (C_ij / h) k_j` with `u_i = y0 + sum_(j<i) a_ij k_j`
//! ([`RosenbrockTableau::tail`] for the stages after the last `a` row); then
//! `y1 = y0 + sum_i b_i k_i` with the error `sum_i e_i k_i`, or, stiffly accurate,
//! `y1 = u_s + k_s` with the error `k_s` (Hairer and Wanner, Vol. II, VI.3, eq.
//! (3.20)-(3.22); `derivations/numerics.md`, "Integrators"). Rodas5's dense output is
//! `y(t0 + theta h) = (1 - theta) y0 + theta (y1 + (1 - theta) (h_1 + theta (h_2 + theta
//! h_3)))` with `h_r = sum_i H_ri k_i`; a method without dense rows has the cubic Hermite
//! extension through `(y0, f0)` and `(y1, f(y1))` (one evaluation).
//!
//! Every sum runs term by term over the whole vector in the row's order (each component
//! sums the same terms in the same order as a component-by-component loop).

// The Rodas5 literals are the published 16-digit values, kept verbatim.
#![allow(clippy::excessive_precision)]

use crate::error::Result;
use crate::ode::control::{error_norm, Tolerance};
use crate::ode::dense::{Dense, Kind};
use crate::ode::stepper::{missing_jacobian, Stepper};
use crate::ode::tableau::{
    CTerms,
    Coef::{Decimal, Ratio},
    RosenbrockTableau, Row, Tail,
};
use crate::ode::Rhs;
use crate::scalar::Scalar;

/// Rodas5 (Di Marzo, Geneva, 1993, in the `W`-transformed form of Hairer and Wanner, Vol.
/// II, VI.3, eq. (3.20)-(3.22); `derivations/numerics.md`, "Integrators"): order 5,
/// stiffly accurate (`y1 = u_8 + k_8`, error `k_8`,
/// so no `b`, `e` rows), with the dense-output matrix `H` of Steinebach's Rodas5P work.
pub const RODAS5: RosenbrockTableau = RosenbrockTableau {
    name: "rodas5",
    order: 5,
    estimate_order: 4,
    gamma: Decimal(0.19),
    a: RODAS5_A,
    tail: Tail::Chain,
    c: RODAS5_C,
    c_terms: CTerms::SumThenScale,
    b: &[],
    e: &[],
    dense: RODAS5_H,
};

/// `a_ij` of stages 2..6 (stages 7 and 8 add `k_6` and `k_7` to `u_6`).
const RODAS5_A: &[Row] = &[
    &[(0, Decimal(2.0))],
    &[
        (0, Decimal(3.040894194418781)),
        (1, Decimal(1.041747909077569)),
    ],
    &[
        (0, Decimal(2.576417536461461)),
        (1, Decimal(1.62208306077664)),
        (2, Decimal(-0.9089668560264532)),
    ],
    &[
        (0, Decimal(2.760842080225597)),
        (1, Decimal(1.446624659844071)),
        (2, Decimal(-0.3036980084553738)),
        (3, Decimal(0.2877498600325443)),
    ],
    &[
        (0, Decimal(-14.09640773051259)),
        (1, Decimal(6.925207756232704)),
        (2, Decimal(-41.47510893210728)),
        (3, Decimal(2.343771018586405)),
        (4, Decimal(24.13215229196062)),
    ],
];

/// `C_ij` of stages 2..8.
const RODAS5_C: &[Row] = &[
    &[(0, Decimal(-10.31323885133993))],
    &[
        (0, Decimal(-21.04823117650003)),
        (1, Decimal(-7.234992135176716)),
    ],
    &[
        (0, Decimal(32.22751541853323)),
        (1, Decimal(-4.943732386540191)),
        (2, Decimal(19.44922031041879)),
    ],
    &[
        (0, Decimal(-20.69865579590063)),
        (1, Decimal(-8.816374604402768)),
        (2, Decimal(1.260436877740897)),
        (3, Decimal(-0.7495647613787146)),
    ],
    &[
        (0, Decimal(-46.22004352711257)),
        (1, Decimal(-17.49534862857472)),
        (2, Decimal(-289.6389582892057)),
        (3, Decimal(93.60855400400906)),
        (4, Decimal(318.3822534212147)),
    ],
    &[
        (0, Decimal(34.20013733472935)),
        (1, Decimal(-14.1553540271769)),
        (2, Decimal(57.823356409884)),
        (3, Decimal(25.83362985412365)),
        (4, Decimal(1.408950972071624)),
        (5, Decimal(-6.551835421242162)),
    ],
    &[
        (0, Decimal(42.57076742291101)),
        (1, Decimal(-13.80770672017997)),
        (2, Decimal(93.98938432427124)),
        (3, Decimal(18.77919633714503)),
        (4, Decimal(-31.5835918722337)),
        (5, Decimal(-6.685968952921985)),
        (6, Decimal(-5.810979938412932)),
    ],
];

/// The dense output matrix `H` (3 x 8).
const RODAS5_H: &[Row] = &[
    &[
        (0, Decimal(27.354592673333357)),
        (1, Decimal(-6.925207756232857)),
        (2, Decimal(26.40037733258859)),
        (3, Decimal(0.5635230501052979)),
        (4, Decimal(-4.699151156849391)),
        (5, Decimal(-1.6008677469422725)),
        (6, Decimal(-1.5306074446748028)),
        (7, Decimal(-1.3929872940716344)),
    ],
    &[
        (0, Decimal(44.19024239501722)),
        (1, Decimal(1.3677947663381929e-13)),
        (2, Decimal(202.93261852171622)),
        (3, Decimal(-35.5669339789154)),
        (4, Decimal(-181.91095152160645)),
        (5, Decimal(3.4116351403665033)),
        (6, Decimal(2.5793540257308067)),
        (7, Decimal(2.2435122582734066)),
    ],
    &[
        (0, Decimal(-44.0988150021747)),
        (1, Decimal(-5.755396159656812e-13)),
        (2, Decimal(-181.26175034586677)),
        (3, Decimal(56.99302194811676)),
        (4, Decimal(183.21182741427398)),
        (5, Decimal(-7.480257918273637)),
        (6, Decimal(-5.792426076169686)),
        (7, Decimal(-5.32503859794143)),
    ],
];

/// Shampine's A-stable 4(3) method (Shampine's parameters of Kaps and Rentrop's GRK4
/// family; Press et al., *Numerical Recipes*, 2nd ed., 16.6) with exact rational
/// coefficients: `a` of stages 2 and 3 (stage 4 reuses stage 3's argument),
/// `C_ij` of stages 2..4, the fourth-order weights `b` and the error weights `e` (its zero
/// kept: the step sums all four terms). No dense rows: cubic Hermite.
pub const ROS4: RosenbrockTableau = RosenbrockTableau {
    name: "ros4",
    order: 4,
    estimate_order: 3,
    gamma: Ratio(1.0, 2.0),
    a: &[
        &[(0, Ratio(2.0, 1.0))],
        &[(0, Ratio(48.0, 25.0)), (1, Ratio(6.0, 25.0))],
    ],
    tail: Tail::Reuse,
    c: &[
        &[(0, Ratio(-8.0, 1.0))],
        &[(0, Ratio(372.0, 25.0)), (1, Ratio(12.0, 5.0))],
        &[
            (0, Ratio(-112.0, 125.0)),
            (1, Ratio(-54.0, 125.0)),
            (2, Ratio(-2.0, 5.0)),
        ],
    ],
    c_terms: CTerms::Folded,
    b: &[
        (0, Ratio(19.0, 9.0)),
        (1, Ratio(1.0, 2.0)),
        (2, Ratio(25.0, 108.0)),
        (3, Ratio(125.0, 108.0)),
    ],
    e: &[
        (0, Ratio(17.0, 54.0)),
        (1, Ratio(7.0, 36.0)),
        (2, Ratio(0.0, 1.0)),
        (3, Ratio(125.0, 108.0)),
    ],
    dense: &[],
};

/// A solver of the stage systems `(shift I - J) x = w` of a Rosenbrock step, factored once
/// per step.
pub trait StageSolver<S: Scalar> {
    /// Factors `shift I - J` for the Jacobian `jac` at `y0` (its layout is the solver's),
    /// with `tol` the error weights of the step (for equilibration).
    ///
    /// # Errors
    ///
    /// A singular or non-finite matrix.
    fn factor(&mut self, jac: &[S], shift: &S, y0: &[S], tol: Tolerance) -> Result<()>;

    /// Writes the solution `x` of the factored system with right-hand side `w`.
    fn solve(&self, w: &[S], x: &mut [S]);
}

/// A stage solve `solve(w, k)`: `k = A^(-1) w`.
pub type StageSolve<'a, S> = dyn FnMut(&[S], &mut [S]) -> Result<()> + 'a;

/// The stage buffers of a Rosenbrock step for states of length `n`.
#[derive(Clone, Debug)]
pub struct Stages<S: Scalar> {
    /// `k_1..k_s` (stiffly accurate: `k_s` is the local error estimate).
    k: Vec<Vec<S>>,
    /// The stage argument `u_i`.
    u: Vec<S>,
    /// `f(u_i)`.
    fu: Vec<S>,
    /// The stage right-hand side.
    rhs: Vec<S>,
    /// `sum_j C_ij k_j` of the current stage.
    acc: Vec<S>,
    /// The error estimate (methods with error weights).
    err: Vec<S>,
    /// The solution of the last attempt.
    y1: Vec<S>,
}

impl<S: Scalar> Stages<S> {
    fn new(t: &RosenbrockTableau, n: usize, ctx: S::Ctx) -> Self {
        let z = || vec![S::zero(ctx); n];
        Stages {
            k: (0..t.stages()).map(|_| z()).collect(),
            u: z(),
            fu: z(),
            rhs: z(),
            acc: z(),
            err: if t.stiffly_accurate() {
                Vec::new()
            } else {
                z()
            },
            y1: z(),
        }
    }
}

/// A Rosenbrock method (its [`RosenbrockTableau`]) with its stage buffers and its stage
/// solver `L`: a [`Stepper`] that needs the Jacobian.
///
/// # Examples
///
/// Rodas5 on `y' = -y` with the one-dimensional stage solver `x = w / (shift - j)`:
///
/// ```
/// use predhead::ode::control::Tolerance;
/// use predhead::ode::rosenbrock::{Rosenbrock, StageSolver, RODAS5};
/// use predhead::ode::Stepper;
///
/// struct Scalar1(f64);
/// impl StageSolver<f64> for Scalar1 {
///     fn factor(&mut self, jac: &[f64], shift: &f64, _: &[f64], _: Tolerance)
///         -> predhead::error::Result<()> {
///         self.0 = shift - jac[0];
///         Ok(())
///     }
///     fn solve(&self, w: &[f64], x: &mut [f64]) {
///         x[0] = w[0] / self.0;
///     }
/// }
/// let mut f = |y: &[f64], dy: &mut [f64]| {
///     dy[0] = -y[0];
///     Ok(())
/// };
/// let mut rodas5 = Rosenbrock::with_solver(RODAS5, 1, (), Scalar1(0.0));
/// let tol = Tolerance::uniform(1e-8, 1e-10);
/// let mut y = vec![1.0];
/// for _ in 0..100 {
///     let f0 = vec![-y[0]];
///     let err = rodas5.attempt(&mut f, &y, &f0, Some(&[-1.0]), 0.01, tol)?;
///     assert!(err <= 1.0);
///     y = rodas5.solution().to_vec();
/// }
/// assert!((y[0] - (-1.0f64).exp()).abs() < 1e-7);
/// // Without a Jacobian the attempt is refused.
/// assert!(rodas5.attempt(&mut f, &y, &[-y[0]], None, 0.1, tol).is_err());
/// # Ok::<(), predhead::error::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Rosenbrock<S: Scalar, L> {
    tableau: RosenbrockTableau,
    stages: Stages<S>,
    /// The stage solver.
    pub solver: L,
}

impl<S: Scalar, L> Rosenbrock<S, L> {
    /// The method of `tableau` for states of length `n` at context `ctx`, its stage systems
    /// solved by `solver`.
    pub fn with_solver(tableau: RosenbrockTableau, n: usize, ctx: S::Ctx, solver: L) -> Self {
        Rosenbrock {
            tableau,
            stages: Stages::new(&tableau, n, ctx),
            solver,
        }
    }

    /// The tableau.
    pub fn tableau(&self) -> &RosenbrockTableau {
        &self.tableau
    }

    /// The solution of the last attempt, to move out (the driver swaps it with its state).
    pub fn y1_mut(&mut self) -> &mut Vec<S> {
        &mut self.stages.y1
    }

    /// `1 / (gamma h)`, the shift of the stage matrix `I/(gamma h) - J`.
    pub fn shift(&self, h: f64, ctx: S::Ctx) -> S {
        S::one(ctx) / (self.tableau.gamma.value::<S>(ctx) * S::from_f64(h, ctx))
    }

    /// One attempt of size `h` from `y0` with `f0 = f(y0)`, the stage systems solved by
    /// `solve` (already factored at `y0` and `h` by the caller): the scaled error norm
    /// (accept when `<= 1`); the solution is then [`Stepper::solution`].
    ///
    /// # Errors
    ///
    /// As `f` and `solve`.
    pub fn stages_with(
        &mut self,
        f: &mut Rhs<'_, S>,
        y0: &[S],
        f0: &[S],
        h: f64,
        tol: Tolerance,
        solve: &mut StageSolve<'_, S>,
    ) -> Result<f64> {
        stages(&self.tableau, f, y0, f0, h, tol, &mut self.stages, solve)
    }

    /// The local error estimate of the last attempt (unscaled): `k_s` for a stiffly accurate
    /// method, else `sum_i e_i k_i`. For callers that measure it in their own norm (a system
    /// whose blocks are weighed separately).
    pub fn error_estimate(&self) -> &[S] {
        if self.tableau.stiffly_accurate() {
            &self.stages.k[self.stages.k.len() - 1]
        } else {
            &self.stages.err
        }
    }

    /// The solution of the last attempt (also [`Stepper::solution`], which needs a
    /// [`StageSolver`]; this one serves the stages solved by [`Rosenbrock::stages_with`]).
    pub fn y1(&self) -> &[S] {
        &self.stages.y1
    }

    /// The continuous extension from the dense rows (no evaluation), when the tableau has
    /// them; else nothing is written and the answer is `false`.
    pub fn dense_rows(&self, y0: &[S], h: f64, out: &mut Dense<S>) -> bool {
        let t = &self.tableau;
        if t.dense.is_empty() {
            return false;
        }
        let ctx = y0[0].ctx();
        let st = &self.stages;
        let c = out.begin(Kind::Rodas, h, y0);
        c[0].clone_from_slice(&st.y1);
        // Term by term over the whole vector, each coefficient converted once (each
        // component sums from zero in the row's order, as a loop per component would).
        for (r, hrow) in t.dense.iter().enumerate() {
            let o = &mut c[1 + r];
            o.iter_mut().for_each(|x| *x = S::zero(ctx));
            for &(j, hc) in hrow.iter() {
                let w = hc.value::<S>(ctx);
                for (x, kj) in o.iter_mut().zip(&st.k[j]) {
                    *x = x.clone() + w.clone() * kj.clone();
                }
            }
        }
        true
    }
}

/// `acc = sum_j w_j k_j` term by term in the row's order (`w_j` the row's coefficients
/// times `scale` when given); the sum starts from zero when `from_zero`, else from its first
/// term.
fn weighted_sum<S: Scalar>(
    acc: &mut [S],
    row: Row,
    k: &[Vec<S>],
    scale: Option<&S>,
    from_zero: bool,
    ctx: S::Ctx,
) {
    for (n, &(j, w)) in row.iter().enumerate() {
        let w = match scale {
            Some(s) => w.value::<S>(ctx) * s.clone(),
            None => w.value::<S>(ctx),
        };
        if n == 0 && !from_zero {
            for (a, kj) in acc.iter_mut().zip(&k[j]) {
                *a = w.clone() * kj.clone();
            }
        } else {
            if n == 0 {
                acc.iter_mut().for_each(|a| *a = S::zero(ctx));
            }
            for (a, kj) in acc.iter_mut().zip(&k[j]) {
                *a = a.clone() + w.clone() * kj.clone();
            }
        }
    }
}

/// `u = y0 + sum_j a_j k_j` over the row, term by term.
fn argument<S: Scalar>(u: &mut [S], y0: &[S], row: Row, k: &[Vec<S>], ctx: S::Ctx) {
    u.clone_from_slice(y0);
    for &(j, a) in row {
        let a = a.value::<S>(ctx);
        for (ui, kj) in u.iter_mut().zip(&k[j]) {
            *ui = ui.clone() + a.clone() * kj.clone();
        }
    }
}

/// The stages of one step of `t` (module docs) with the systems solved by `solve`, the
/// solution left in `st.y1`; returns the scaled error norm.
#[allow(clippy::too_many_arguments)]
fn stages<S: Scalar>(
    t: &RosenbrockTableau,
    f: &mut Rhs<'_, S>,
    y0: &[S],
    f0: &[S],
    h: f64,
    tol: Tolerance,
    st: &mut Stages<S>,
    solve: &mut StageSolve<'_, S>,
) -> Result<f64> {
    let ctx = y0[0].ctx();
    let inv_h = S::one(ctx) / S::from_f64(h, ctx);
    let Stages {
        k,
        u,
        fu,
        rhs,
        acc,
        err,
        y1,
    } = st;
    solve(f0, &mut k[0])?;
    u.clone_from_slice(y0);
    for s in 1..k.len() {
        match t.a.get(s - 1) {
            Some(row) => {
                argument(u, y0, row, k, ctx);
                f(u, fu)?;
            }
            None if t.tail == Tail::Chain => {
                for (ui, kl) in u.iter_mut().zip(&k[s - 1]) {
                    *ui = ui.clone() + kl.clone();
                }
                f(u, fu)?;
            }
            None => {}
        }
        match t.c_terms {
            CTerms::SumThenScale => {
                weighted_sum(acc, t.c[s - 1], k, None, true, ctx);
                for ((r, fi), a) in rhs.iter_mut().zip(fu.iter()).zip(acc.iter()) {
                    *r = fi.clone() + a.clone() * inv_h.clone();
                }
            }
            CTerms::Folded => {
                weighted_sum(acc, t.c[s - 1], k, Some(&inv_h), false, ctx);
                for ((r, fi), a) in rhs.iter_mut().zip(fu.iter()).zip(acc.iter()) {
                    *r = fi.clone() + a.clone();
                }
            }
        }
        solve(rhs, &mut k[s])?;
    }
    if t.stiffly_accurate() {
        let last = &k[k.len() - 1];
        for ((o, a), b) in y1.iter_mut().zip(u.iter()).zip(last) {
            *o = a.clone() + b.clone();
        }
        return Ok(error_norm(last, y0, y1, tol));
    }
    argument(y1, y0, t.b, k, ctx);
    weighted_sum(err, t.e, k, None, true, ctx);
    Ok(error_norm(err, y0, y1, tol))
}

/// Any Rosenbrock method with a stage solver: order and estimate order from its tableau,
/// the dense rows' extension (no evaluation) or the cubic Hermite one (one evaluation).
impl<S: Scalar, L: StageSolver<S>> Stepper<S> for Rosenbrock<S, L> {
    fn order(&self) -> u32 {
        self.tableau.order
    }

    fn estimate_order(&self) -> u32 {
        self.tableau.estimate_order
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
        let jac = jac.ok_or_else(|| missing_jacobian(self.tableau.name))?;
        let shift = self.shift(h, y0[0].ctx());
        self.solver.factor(jac, &shift, y0, tol)?;
        let Rosenbrock {
            tableau,
            stages: st,
            solver,
        } = self;
        let mut solve = |w: &[S], x: &mut [S]| {
            solver.solve(w, x);
            Ok(())
        };
        stages(tableau, f, y0, f0, h, tol, st, &mut solve)
    }

    fn solution(&self) -> &[S] {
        &self.stages.y1
    }

    fn dense_output(
        &mut self,
        f: &mut Rhs<'_, S>,
        y0: &[S],
        f0: &[S],
        h: f64,
        out: &mut Dense<S>,
    ) -> Result<()> {
        if !self.dense_rows(y0, h, out) {
            // `fu`, a stage buffer, is free after the step: `f(y1)` goes there.
            let st = &mut self.stages;
            f(&st.y1, &mut st.fu)?;
            out.set_hermite(h, y0, &st.y1, f0, &st.fu);
        }
        Ok(())
    }
}
