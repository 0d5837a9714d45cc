//! An ODE integrator layer that knows nothing of the paper: it sees a right-hand side
//! `f(y)` on vectors of a [`crate::scalar::Scalar`] and nothing else (no setting, moments,
//! observers or flow; `tests/ode_boundary.rs` checks the imports).
//!
//! - [`stepper`]: the [`Stepper`] trait (attempt a step, solution and error norm, dense
//!   output, order, whether it needs a Jacobian);
//! - [`tableau`]: tableaus as data ([`tableau::ExplicitTableau`]) and the one linear
//!   combination of stages ([`tableau::combine`]);
//! - [`explicit`]: the explicit family's step and continuous extension for any tableau;
//!   [`dop853`] and [`dopri5`] are its two tableaus;
//! - [`control`]: tolerances, error norms and step-size control;
//! - [`dense`]: continuous extensions, reused buffers;
//! - [`rosenbrock`]: the Rosenbrock tableaus (Rodas5, Shampine's 4(3)) as data and the
//!   family's one generic step over a caller's [`rosenbrock::StageSolver`];
//! - [`roots`]: root finding (Illinois) for event location;
//! - [`spectral`]: spectral-radius estimates (power iteration) for a stiffness switch;
//! - [`clock`]: the double-double clock of flow time.
//!
//! The flow supplies the Rosenbrock stage solver (`crate::flow::linear::ScaledLu`, its
//! equilibrated LU beside the separable Jacobian layout it factors).

pub mod clock;
pub mod control;
#[cfg(test)]
mod convergence;
pub mod dense;
pub mod dop853;
pub mod dopri5;
pub mod explicit;
pub mod roots;
pub mod rosenbrock;
pub mod spectral;
pub mod stepper;
pub mod tableau;

pub use stepper::Stepper;

/// A right-hand side `f(y)` written into its second argument: the interface between a
/// problem and the steppers. It errors where `f` is undefined.
pub type Rhs<'a, S> = dyn FnMut(&[S], &mut [S]) -> crate::error::Result<()> + 'a;
