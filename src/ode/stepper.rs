//! The interface of a one-step method with error estimate and dense output.

use crate::error::Result;
use crate::ode::control::Tolerance;
use crate::ode::dense::Dense;
use crate::ode::Rhs;
use crate::scalar::Scalar;

/// A one-step method with an embedded error estimate and a continuous extension: the
/// explicit pairs ([`crate::ode::explicit::Explicit`] with [`crate::ode::dop853::DOP853`]
/// or [`crate::ode::dopri5::DOPRI5`]) and the Rosenbrock methods (Rodas5 and Shampine's
/// 4(3), whose work spaces implement it next to their linear algebra). A driver calls
/// [`Stepper::attempt`], accepts or rejects on its error norm, and on acceptance reads
/// [`Stepper::solution`] and asks for [`Stepper::dense_output`].
///
/// # Examples
///
/// Ten steps of DOP853 on `y' = -y` from `y(0) = 1`:
///
/// ```
/// use predhead::ode::control::Tolerance;
/// use predhead::ode::dense::Dense;
/// use predhead::ode::explicit::Explicit;
/// use predhead::ode::{dop853::DOP853, Stepper};
///
/// let mut f = |y: &[f64], dy: &mut [f64]| {
///     dy[0] = -y[0];
///     Ok(())
/// };
/// let mut stepper = Explicit::new(DOP853, 1, ());
/// assert_eq!((stepper.order(), stepper.needs_jacobian()), (8, false));
/// let tol = Tolerance::uniform(1e-10, 1e-12);
/// let (mut y, h) = (vec![1.0], 0.1);
/// let mut dense = Dense::new(1, ());
/// for _ in 0..10 {
///     let f0 = vec![-y[0]];
///     let err = stepper.attempt(&mut f, &y, &f0, None, h, tol)?;
///     assert!(err <= 1.0);
///     stepper.dense_output(&mut f, &y, &f0, h, &mut dense)?;
///     y = stepper.solution().to_vec();
/// }
/// assert!((y[0] - (-1.0f64).exp()).abs() < 1e-12);
/// // The last step's extension at its midpoint, t = 0.95.
/// assert!((dense.eval(0.05)[0] - (-0.95f64).exp()).abs() < 1e-12);
/// # Ok::<(), predhead::error::Error>(())
/// ```
pub trait Stepper<S: Scalar> {
    /// The order of the solution (local error `O(h^(order+1))`).
    fn order(&self) -> u32;

    /// The order `q` the step-size control uses (the error estimate is `O(h^(q+1))`).
    fn estimate_order(&self) -> u32;

    /// Whether [`Stepper::attempt`] needs the Jacobian of `f` at `y0`.
    fn needs_jacobian(&self) -> bool;

    /// One attempt of size `h` from `y0` with `f0 = f(y0)` (and, when
    /// [`Stepper::needs_jacobian`], the row-major Jacobian `jac` at `y0`): returns the
    /// error norm scaled by `tol` (accept when `<= 1`) and keeps the solution for
    /// [`Stepper::solution`].
    ///
    /// # Errors
    ///
    /// As `f`, where it is undefined at a stage; [`crate::error::Error::Invalid`] on
    /// `jacobian` when the method needs one and `jac` is `None`; a singular stage matrix.
    fn attempt(
        &mut self,
        f: &mut Rhs<'_, S>,
        y0: &[S],
        f0: &[S],
        jac: Option<&[S]>,
        h: f64,
        tol: Tolerance,
    ) -> Result<f64>;

    /// The solution of the last attempt.
    fn solution(&self) -> &[S];

    /// The continuous extension of the last attempt from `y0` (with `f0 = f(y0)`) and size
    /// `h`, written into `out`.
    ///
    /// # Errors
    ///
    /// As `f`, where an extension that evaluates it finds it undefined.
    fn dense_output(
        &mut self,
        f: &mut Rhs<'_, S>,
        y0: &[S],
        f0: &[S],
        h: f64,
        out: &mut Dense<S>,
    ) -> Result<()>;
}

/// The error of a Rosenbrock attempt without a Jacobian.
pub fn missing_jacobian(method: &str) -> crate::error::Error {
    crate::error::Error::invalid(
        "jacobian",
        format!("{method} needs the Jacobian at y0, got none"),
    )
}
