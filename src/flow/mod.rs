//! The exact population gradient flow in reduced coordinates (`derivations/numerics.md`).
//!
//! - [`problem`]: the ODE (the problem, no time-stepping): state packing and right-hand
//!   side, generic over [`crate::scalar::Scalar`];
//! - [`control`], [`dense`], [`clock`] (from [`crate::ode`]): error control, dense output
//!   and the double-double clock, shared by the solvers;
//! - [`crate::ode::dop853`], [`crate::ode::dopri5`]: the explicit pairs (DOP853, the
//!   default in `f64`; Dormand-Prince 5(4), exact rational coefficients, the MPFR
//!   reference's), tableaus of [`crate::ode::explicit`];
//! - [`rosenbrock`]: the Rosenbrock methods for the stiff phases (Rodas5, the default in
//!   `f64`; Shampine's 4(3), exact rational coefficients, the MPFR reference's and Rodas5's
//!   fallback): the generic step of [`crate::ode::rosenbrock`] with the equilibrated LU;
//! - [`extended`]: Rodas5 steps in extended precision (double-double, or MPFR as the
//!   check) for `f64` runs, the stiff phase's last fallback;
//! - [`linear`]: the equilibrated LU of the Rosenbrock steps;
//! - [`jacobian`], [`dual`]: the exact Jacobian of the right-hand side (forward-mode dual
//!   numbers in `f64`, finite differences in MPFR);
//! - [`mod@integrate`], [`driver`], [`policy`], [`events`], [`clock`]: the entry point,
//!   the step loop with its policies (stiffness switch, Rodas5 fallback, extended-precision
//!   probe), event location on the dense output, the double-double flow time; the events
//!   and the summary come from a [`FlowObserver`] ([`crate::observe::EventTracker`]);
//! - [`global_error`]: the error of the event times, estimated by a companion run at a
//!   looser tolerance, and refined when it exceeds a target;
//! - [`stiffness`]: the Jacobian spectrum along a trajectory (the measurement behind the
//!   choice of integrator).
//!
//! The cost of a trajectory does not depend on `d`: the state has
//! `2m + m(m+1)/2 + #trainable(E)` entries.

pub mod driver;
pub mod dual;
pub mod events;
pub mod extended;
pub mod global_error;
pub mod integrate;
pub mod jacobian;
pub mod krylov;
pub mod linear;
pub mod observer;
pub mod policy;
pub mod problem;
pub mod rosenbrock;
pub mod sensitivity;
pub mod separable;
pub mod stiffness;

pub use integrate::{integrate, integrate_observed, Explicit, Method, Options, Run, Stiff};
pub use observer::{Ending, FlowObserver};

/// A right-hand side `f(y)` ([`crate::ode::Rhs`]): the interface between the problem
/// ([`Problem::rhs_into`]) and the solvers. It errors where the flow is undefined (a
/// vanishing normalization variance, a non-finite value).
pub use crate::ode::Rhs;
/// The paper-free integrator layer's modules, under their earlier paths.
pub use crate::ode::{clock, control, dense};
pub use problem::Problem;
