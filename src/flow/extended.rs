//! Rosenbrock steps in extended precision for an `f64` run: the last fallback of the stiff
//! phase (`derivations/numerics.md`, "Integrators", "Extended-precision steps").
//!
//! Near a manifold of rest states with a neuron shrunk to `|w_j| ~ 1e-4`, the matrix
//! `I/(gamma h) - J` of a Rosenbrock step is singular to within `f64` rounding once `h`
//! exceeds about `1e-8 tau`: the `f64` stages leave the domain of the flow, or the error
//! estimate is rounding noise of order 1, although the step is accurate. The same steps
//! with 11 more bits succeed. Here one attempt lifts the `f64` state and the `f64`
//! (dual-number) Jacobian to double-double ([`DoubleDouble`], about 104 bits) or, as a
//! check, to [`EXTENDED_BITS`]-bit MPFR ([`ExtendedPrecision`]). It takes one step there
//! (every stage, solve and right-hand side in that precision), and rounds the new state and
//! the continuous extension back to `f64`. Between steps the state stays in `f64`. The
//! driver ([`crate::flow::integrate()`]) first probes with Shampine's method, then steps
//! with Rodas5.

use crate::double_double::DoubleDouble;
use crate::error::Result;
use crate::flow::control::Tolerance;
use crate::flow::dense::Dense;
use crate::flow::integrate::Stiff;
use crate::flow::problem::{lift, Coordinates, Problem, Workspace};
use crate::flow::rosenbrock;
use crate::moments::population::Reduced;
use crate::ode::rosenbrock::{RODAS5, ROS4};
use crate::ode::Stepper;
use crate::scalar::Scalar;
use crate::setting::Config;

/// A stepper that takes Rosenbrock steps of a run in working precision `S` at a higher
/// precision ([`ExtendedRosenbrock`] for `f64`; MPFR runs have none).
pub trait ExtendedStep<S: Scalar>: Send {
    /// One attempt of `method` of size `h` from `y0` with the Jacobian `jac` at `y0`
    /// (row-major), under `tol`: the error norm, as the [`Stepper::attempt`] of
    /// [`rosenbrock::Work`]. The new state is then [`ExtendedStep::y1_into`].
    fn step(&mut self, method: Stiff, y0: &[S], jac: &[S], h: f64, tol: Tolerance) -> Result<f64>;
    /// The last Rodas5 attempt's new state, rounded to `S`.
    fn y1_into(&self, y1: &mut [S]);
    /// The last Rodas5 attempt's continuous extension (of size `h`), rounded to `S`; it
    /// starts at the state the attempt started from.
    fn dense_into(&mut self, h: f64, out: &mut Dense<S>);
    /// Right-hand-side evaluations so far (at the higher precision).
    fn evals(&self) -> u64;
}

/// The precision of the extended steps of an `f64` run ([`crate::flow::Options`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtendedPrecision {
    /// Double-double ([`DoubleDouble`], about 104 bits; the default): about 0.3 ms per
    /// attempt at `m = 3, 4`, ten times less than MPFR.
    DoubleDouble,
    /// MPFR at [`EXTENDED_BITS`] bits (the first implementation; kept as the check of the
    /// double-double steps).
    Mpfr,
}

/// Precision (bits) of the MPFR variant of the extended steps
/// (`ExtendedRosenbrock<rug::Float>`).
/// 64 bits already carry the measured stall through (with 3x the steps of 100 bits and
/// more); from 100 bits on the step count no longer changes.
pub const EXTENDED_BITS: u32 = 128;

/// Rosenbrock steps in precision `X` for states held in `f64`: double-double
/// ([`DoubleDouble`], the default of the `f64` runs) or MPFR ([`rug::Float`] at
/// [`EXTENDED_BITS`]).
pub struct ExtendedRosenbrock<X: Scalar = DoubleDouble> {
    problem: Problem<X>,
    ws: Workspace<X>,
    rodas5: rosenbrock::Work<X>,
    ros4: rosenbrock::Work<X>,
    dense: Dense<X>,
    y0: Vec<X>,
    f0: Vec<X>,
    jac: Vec<X>,
    ctx: X::Ctx,
    evals: u64,
}

impl<X: Scalar> ExtendedRosenbrock<X> {
    /// The stepper for the flow of `config` through `x0` in `coordinates` (the problem of
    /// [`Problem::with_coordinates`], lifted to `X` at `ctx`).
    pub fn new(config: &Config, x0: &Reduced<f64>, coordinates: Coordinates, ctx: X::Ctx) -> Self {
        let problem = Problem::with_coordinates(config, &lift::<X>(x0, ctx), coordinates, ctx);
        let n = problem.len();
        let z = || vec![X::zero(ctx); n];
        ExtendedRosenbrock {
            ws: problem.workspace(),
            rodas5: rosenbrock::Work::new(RODAS5, n, ctx),
            ros4: rosenbrock::Work::new(ROS4, n, ctx),
            dense: Dense::new(n, ctx),
            y0: z(),
            f0: z(),
            jac: vec![X::zero(ctx); n * n],
            problem,
            ctx,
            evals: 0,
        }
    }
}

impl<X: Scalar> ExtendedStep<f64> for ExtendedRosenbrock<X> {
    fn evals(&self) -> u64 {
        self.evals
    }

    fn step(
        &mut self,
        method: Stiff,
        y0: &[f64],
        jac: &[f64],
        h: f64,
        tol: Tolerance,
    ) -> Result<f64> {
        let ctx = self.ctx;
        for (a, &v) in self.y0.iter_mut().zip(y0) {
            *a = X::from_f64(v, ctx);
        }
        for (a, &v) in self.jac.iter_mut().zip(jac) {
            *a = X::from_f64(v, ctx);
        }
        let ExtendedRosenbrock {
            problem,
            ws,
            rodas5: work,
            ros4,
            y0,
            f0,
            jac,
            evals,
            ..
        } = self;
        let mut rhs = |y: &[X], dy: &mut [X]| -> Result<()> {
            *evals += 1;
            problem.rhs_into(y, ws, dy)
        };
        rhs(y0, f0)?;
        match method {
            Stiff::Rodas5 => work.attempt(&mut rhs, y0, f0, Some(jac), h, tol),
            Stiff::Ros4 => ros4.attempt(&mut rhs, y0, f0, Some(jac), h, tol),
        }
    }

    fn y1_into(&self, y1: &mut [f64]) {
        for (o, v) in y1.iter_mut().zip(self.rodas5.solution()) {
            *o = v.to_f64();
        }
    }

    fn dense_into(&mut self, h: f64, out: &mut Dense<f64>) {
        let ExtendedRosenbrock {
            problem,
            ws,
            rodas5,
            dense,
            y0,
            f0,
            ..
        } = self;
        // Rodas5's extension evaluates nothing and cannot fail.
        let mut rhs = |y: &[X], dy: &mut [X]| problem.rhs_into(y, ws, dy);
        if rodas5.dense_output(&mut rhs, y0, f0, h, dense).is_ok() {
            dense.round_into(out);
        }
    }
}
