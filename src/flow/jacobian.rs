//! The Jacobian of the flow's right-hand side for the Rosenbrock steps and the stiffness
//! switch (`derivations/numerics.md`, "Jacobian").
//!
//! In `f64` it is exact (to rounding): forward-mode [`Dual`] numbers through the same generic
//! right-hand side ([`Problem::rhs_into`]), `N` columns per pass. In MPFR it is the
//! forward-difference Jacobian of [`crate::flow::rosenbrock::jacobian`] (at 256 bits its
//! truncation error is ~1e-38, far below the reference's tolerance).

use crate::error::Result;
use crate::flow::control::Tolerance;
use crate::flow::dual::Dual;
use crate::flow::extended::{ExtendedPrecision, ExtendedRosenbrock, ExtendedStep, EXTENDED_BITS};
use crate::flow::krylov::Krylov;
use crate::flow::problem::{lift, Coordinates, Problem, Workspace};
use crate::flow::rosenbrock;
use crate::flow::separable::{Layout, SeparableJacobian};
use crate::flow::Rhs;
use crate::moments::population::Reduced;
use crate::scalar::Scalar;
use crate::setting::Config;

/// A working precision with its Jacobian of the flow.
pub trait FlowScalar: Scalar {
    /// The exact Jacobian of the flow of `config` through `x0` (the problem of
    /// [`Problem::with_coordinates`]) in `coordinates`, or `None` when this precision uses
    /// finite differences.
    fn exact_jacobian(
        config: &Config,
        x0: &Reduced<Self>,
        coordinates: Coordinates,
    ) -> Option<Box<dyn ExactJacobian<Self>>>;

    /// The matrix-free Rodas5 stages for the flow of `config` through `x0`
    /// ([`crate::flow::krylov`]), or `None` when this precision has none (MPFR).
    fn matrix_free(
        config: &Config,
        x0: &Reduced<Self>,
        coordinates: Coordinates,
    ) -> Option<Box<dyn MatrixFree<Self>>>;

    /// The stepper of Rosenbrock steps at a higher precision for the same flow
    /// ([`crate::flow::extended`]), or `None` when this precision has none (MPFR).
    fn extended_stepper(
        config: &Config,
        x0: &Reduced<Self>,
        coordinates: Coordinates,
        precision: ExtendedPrecision,
    ) -> Option<Box<dyn ExtendedStep<Self>>>;
}

/// Matrix-free Rodas5 steps ([`crate::flow::krylov::Krylov`], `derivations/numerics.md`,
/// eqs. (K5)-(K8)).
pub trait MatrixFree<S: Scalar>: Send {
    /// Sets the point `y` of the next steps (the head blocks of its Jacobian) and writes
    /// `f(y)` into `f`.
    fn set_point(&mut self, y: &[S], f: &mut [S]) -> Result<()>;
    /// One Rodas5 step of size `h` from the point `y0` of the last [`MatrixFree::set_point`]
    /// ([`rosenbrock::Work::stages_with`] with the Krylov solver).
    fn step(
        &mut self,
        f: &mut Rhs<'_, S>,
        y0: &[S],
        f0: &[S],
        h: f64,
        tol: Tolerance,
        w: &mut rosenbrock::Work<S>,
    ) -> Result<f64>;
    /// An estimate of the spectral radius of the Jacobian at `y` (power iteration on exact
    /// products `J v`, returning early above `cap`). It moves the point: call
    /// [`MatrixFree::set_point`] before the next step.
    fn spectral_radius_capped(&mut self, y: &[S], cap: f64) -> Result<f64>;
    /// Products `J v`, GMRES iterations and stage solves so far.
    fn counts(&self) -> [u64; 3];
}

impl MatrixFree<f64> for Krylov {
    fn set_point(&mut self, y: &[f64], f: &mut [f64]) -> Result<()> {
        Krylov::set_point(self, y, f)
    }
    fn step(
        &mut self,
        f: &mut Rhs<'_, f64>,
        y0: &[f64],
        f0: &[f64],
        h: f64,
        tol: Tolerance,
        w: &mut rosenbrock::Work<f64>,
    ) -> Result<f64> {
        // The same stages as the LU's, each system solved by preconditioned GMRES with
        // exact products `J v` (`derivations/numerics.md`, eqs. (K5)-(K7)).
        self.factor(1.0 / (w.tableau().gamma.to_f64() * h), tol)?;
        w.stages_with(f, y0, f0, h, tol, &mut |v, g| self.solve(v, g))
    }
    fn spectral_radius_capped(&mut self, y: &[f64], cap: f64) -> Result<f64> {
        Krylov::spectral_radius_capped(self, y, cap)
    }
    fn counts(&self) -> [u64; 3] {
        [self.products, self.iterations, self.solves]
    }
}

/// An evaluator of the exact Jacobian `J_ij = d f_i / d y_j` of the right-hand side.
pub trait ExactJacobian<S: Scalar>: Send {
    /// `J` at `y`, written row-major into `jac` (`n x n`, `jac[i n + j] = d f_i / d y_j`),
    /// and `f(y)` into `f` (bit-identical to [`Problem::rhs_into`] in `S`). Errors as the
    /// right-hand side does.
    fn eval(&mut self, y: &[S], f: &mut [S], jac: &mut [S]) -> Result<()>;

    /// The compact layout of [`ExactJacobian::eval`]'s `jac` for the separable flow
    /// ([`crate::flow::separable`]), or `None` for the dense row-major `n x n` one.
    fn layout(&self) -> Option<&Layout> {
        None
    }
}

impl FlowScalar for f64 {
    fn exact_jacobian(
        config: &Config,
        x0: &Reduced<f64>,
        coordinates: Coordinates,
    ) -> Option<Box<dyn ExactJacobian<f64>>> {
        if let Some(sep) = SeparableJacobian::new(config, x0, coordinates) {
            return Some(Box::new(sep));
        }
        // State lengths: 3 (m = 1), 7-11 (m = 2), more for m >= 3 (several passes of 16).
        let m = x0.neurons();
        let trainable = (0..m * m)
            .filter(|&i| config.model.head.trainable(i / m, i % m))
            .count();
        let n = 2 * m + m * (m + 1) / 2 + trainable;
        Some(if n <= 4 {
            Box::new(DualJacobian::<4>::new(config, x0, coordinates))
        } else if n <= 9 {
            Box::new(DualJacobian::<9>::new(config, x0, coordinates))
        } else {
            Box::new(DualJacobian::<16>::new(config, x0, coordinates))
        })
    }

    fn matrix_free(
        config: &Config,
        x0: &Reduced<f64>,
        coordinates: Coordinates,
    ) -> Option<Box<dyn MatrixFree<f64>>> {
        Some(Box::new(Krylov::new(config, x0, coordinates)))
    }

    fn extended_stepper(
        config: &Config,
        x0: &Reduced<f64>,
        coordinates: Coordinates,
        precision: ExtendedPrecision,
    ) -> Option<Box<dyn ExtendedStep<f64>>> {
        Some(match precision {
            ExtendedPrecision::DoubleDouble => Box::new(ExtendedRosenbrock::<
                crate::double_double::DoubleDouble,
            >::new(
                config, x0, coordinates, ()
            )),
            ExtendedPrecision::Mpfr => Box::new(ExtendedRosenbrock::<rug::Float>::new(
                config,
                x0,
                coordinates,
                EXTENDED_BITS,
            )),
        })
    }
}

impl FlowScalar for rug::Float {
    fn exact_jacobian(
        _: &Config,
        _: &Reduced<rug::Float>,
        _: Coordinates,
    ) -> Option<Box<dyn ExactJacobian<rug::Float>>> {
        None
    }

    fn matrix_free(
        _: &Config,
        _: &Reduced<rug::Float>,
        _: Coordinates,
    ) -> Option<Box<dyn MatrixFree<rug::Float>>> {
        None
    }

    fn extended_stepper(
        _: &Config,
        _: &Reduced<rug::Float>,
        _: Coordinates,
        _: ExtendedPrecision,
    ) -> Option<Box<dyn ExtendedStep<rug::Float>>> {
        None
    }
}

/// The forward-mode Jacobian in passes of `N` seeded columns.
pub struct DualJacobian<const N: usize> {
    problem: Problem<Dual<N>>,
    ws: Workspace<Dual<N>>,
    y: Vec<Dual<N>>,
    dy: Vec<Dual<N>>,
}

impl<const N: usize> DualJacobian<N> {
    /// The evaluator for the flow of `config` through `x0` (the problem of
    /// [`Problem::with_coordinates`]).
    pub fn new(config: &Config, x0: &Reduced<f64>, coordinates: Coordinates) -> Self {
        let problem = Problem::with_coordinates(config, &lift(x0, ()), coordinates, ());
        let n = problem.len();
        DualJacobian {
            ws: problem.workspace(),
            problem,
            y: vec![Dual::constant(0.0); n],
            dy: vec![Dual::constant(0.0); n],
        }
    }
}

impl<const N: usize> ExactJacobian<f64> for DualJacobian<N> {
    fn eval(&mut self, y: &[f64], f: &mut [f64], jac: &mut [f64]) -> Result<()> {
        let n = y.len();
        let mut from = 0;
        while from < n {
            for (j, (yd, &v)) in self.y.iter_mut().zip(y).enumerate() {
                // Seed columns from..from+N (a column index past N seeds nothing).
                *yd = Dual::variable(v, j.wrapping_sub(from));
            }
            self.problem.rhs_into(&self.y, &mut self.ws, &mut self.dy)?;
            // Columns from..from + cols of the Jacobian are the tangents 0..cols.
            let cols = N.min(n - from);
            for ((fi, f_i), jac_i) in self.dy.iter().zip(&mut *f).zip(jac.chunks_exact_mut(n)) {
                *f_i = fi.v;
                jac_i[from..from + cols].copy_from_slice(&fi.d[..cols]);
            }
            from += N;
        }
        Ok(())
    }
}
