//! The flow's entry point: adaptive integration of the flow from an initial reduced state
//! to the horizon, with event location on the dense output (`derivations/numerics.md`,
//! Sections "Integrators", "Stiffness" and "Events"); its options and its result (the
//! spectral-radius estimates of the stiffness switch are [`crate::ode::spectral`]). The step loop is
//! [`crate::flow::driver`], its policies [`crate::flow::policy`], the event location
//! [`crate::flow::events`].

use crate::error::{Error, Result};
use crate::flow::control::Tolerance;
use crate::flow::driver::{Driver, Source};
use crate::flow::extended::ExtendedPrecision;
use crate::flow::jacobian::FlowScalar;
use crate::flow::observer::FlowObserver;
use crate::flow::problem::{Coordinates, Problem};
use crate::flow::separable::Layout;
use crate::moments::population::{Constants, Reduced};
use crate::observe::{Cadence, Event, EventTracker, Events, Summary};
use crate::ode::spectral::spectral_norm_bound;
pub use crate::ode::spectral::{spectral_radius, spectral_radius_capped};
use crate::scalar::Scalar;
use crate::setting::Config;

/// Which integrators, and when (`--method`, parsed by clap's [`clap::ValueEnum`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The explicit method until the flow is stiff (`h rho > 3`, with `rho` the spectral
    /// radius of the Jacobian, checked every 25 accepted steps and after rejections), then
    /// the Rosenbrock method; back after 4 checks (every 5th step) with `h rho < 1`
    /// (`derivations/numerics.md`, "Integrators").
    Auto,
    /// The explicit method ([`Options::explicit`]) throughout (slow once the flow is stiff).
    #[value(alias = "dopri5")]
    Explicit,
    /// The Rosenbrock method ([`Options::stiff`]) throughout.
    Rosenbrock,
}

impl Method {
    /// Parses `auto`, `explicit` or `rosenbrock` (`dopri5`, the name of earlier versions,
    /// is read as `explicit`), as `--method` does.
    ///
    /// # Examples
    ///
    /// ```
    /// use predhead::flow::Method;
    /// assert_eq!(Method::from_name("dopri5"), Some(Method::Explicit));
    /// assert_eq!(Method::from_name("rosenbrock"), Some(Method::Rosenbrock));
    /// assert_eq!(Method::from_name("euler"), None);
    /// ```
    pub fn from_name(s: &str) -> Option<Self> {
        <Self as clap::ValueEnum>::from_str(s, false).ok()
    }
}

/// The explicit Runge-Kutta pair of the non-stiff phases (`derivations/numerics.md`,
/// "Integrators"; `--explicit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Explicit {
    /// DOP853: order 8, estimators of orders 5 and 3, seventh-order dense output
    /// ([`crate::ode::dop853`]); decimal coefficients. The `f64` default.
    Dop853,
    /// Dormand-Prince 5(4) with exact rational coefficients and fourth-order dense output
    /// ([`crate::ode::dopri5`]); the MPFR reference's method.
    Dopri5,
}

impl Explicit {
    /// Parses `dop853` or `dopri5`, as `--explicit` does.
    pub fn from_name(s: &str) -> Option<Self> {
        <Self as clap::ValueEnum>::from_str(s, false).ok()
    }

    /// The order `q` the step-size control uses (local error `O(h^(q+1))`) of the pair's
    /// tableau ([`crate::ode::dop853::DOP853`] or [`crate::ode::dopri5::DOPRI5`]).
    pub fn estimate_order(self) -> u32 {
        match self {
            Explicit::Dop853 => crate::ode::dop853::DOP853.estimate_order,
            Explicit::Dopri5 => crate::ode::dopri5::DOPRI5.estimate_order,
        }
    }
}

/// The Rosenbrock method of the stiff phase (`derivations/numerics.md`, "Integrators";
/// `--stiff`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Stiff {
    /// Rodas5 5(4), stiffly accurate and L-stable, fourth-order dense output
    /// ([`rodas5`]); 16-digit coefficients. The `f64` default.
    Rodas5,
    /// Shampine's A-stable 4(3) method with exact rational coefficients and cubic Hermite
    /// dense output ([`rosenbrock`]); the MPFR reference's method.
    Ros4,
}

impl Stiff {
    /// Parses `rodas5` or `ros4`, as `--stiff` does.
    pub fn from_name(s: &str) -> Option<Self> {
        <Self as clap::ValueEnum>::from_str(s, false).ok()
    }

    /// The order `q` of the error estimate (local error `O(h^(q+1))`).
    pub fn estimate_order(self) -> u32 {
        match self {
            Stiff::Rodas5 => 4,
            Stiff::Ros4 => 3,
        }
    }

    /// The factor on every tolerance in this method's steps. Rodas5's embedded estimate
    /// underrates its global error in the stiff phase (under the paper's family at
    /// `d = 1e9`, 20 seeds: event times off by up to 16 rtol at factor 1, 4.5 rtol at 0.3,
    /// 2.8 rtol at 0.2, 1.25 rtol at 0.1, against rtol-1e-12 runs of the exact-rational
    /// pairs), so its steps run at `rtol / 10` (`derivations/numerics.md`,
    /// "Integrators").
    pub fn tolerance_factor(self) -> f64 {
        match self {
            Stiff::Rodas5 => 0.1,
            Stiff::Ros4 => 1.0,
        }
    }
}

/// The memory budget of a flow, in bytes (`derivations/numerics.md`, "Flows at large m",
/// eq. (K4)): 2 GiB.
pub const FLOW_MEMORY_BUDGET: f64 = 2147483648.0;

/// The memory a flow of `m` neurons with `trainable` head entries needs, in bytes, as
/// bounded in eq. (K4) of `derivations/numerics.md`: 64 state vectors (stages, dense
/// output, buffers) and 16 `m x m` blocks of the evaluation, plus, unless the flow is
/// `separable` ([`Problem::separable`]), four dense `n x n` matrices (the Jacobian, the next
/// step's, and the factors of the two Rosenbrock methods).
///
/// # Examples
///
/// ```
/// use predhead::flow::integrate::{flow_memory, FLOW_MEMORY_BUDGET};
/// // The paper's head at m = 64: 4,032 trainable entries, a dense Jacobian of 6,240^2.
/// assert!(flow_memory(64, 64 * 63, false) < FLOW_MEMORY_BUDGET);
/// assert!(flow_memory(74, 74 * 73, false) > FLOW_MEMORY_BUDGET);
/// assert!(flow_memory(2000, 0, true) < FLOW_MEMORY_BUDGET);
/// ```
pub fn flow_memory(m: usize, trainable: usize, separable: bool) -> f64 {
    let m = m as f64;
    let n = 2.0 * m + m * (m + 1.0) / 2.0 + trainable as f64;
    let dense = if separable { 0.0 } else { 4.0 * n * n };
    8.0 * (64.0 * n + 16.0 * m * m + dense)
}

/// An error when a flow of `m` neurons with `trainable` head entries would need more than
/// [`FLOW_MEMORY_BUDGET`] ([`flow_memory`]). With the dense Jacobian that is beyond
/// `m = 73` (paper's head or linear), with the separable path beyond `m = 2,363`.
///
/// # Errors
///
/// [`Error::Invalid`] on `setting.neurons` when the flow does not fit.
///
/// # Examples
///
/// ```
/// use predhead::flow::integrate::check_memory;
/// assert!(check_memory(73, 73 * 72, false).is_ok());
/// let err = check_memory(74, 74 * 73, false).unwrap_err();
/// assert!(err.to_string().contains("setting.neurons"));
/// ```
pub fn check_memory(m: usize, trainable: usize, separable: bool) -> Result<()> {
    let need = flow_memory(m, trainable, separable);
    if need > FLOW_MEMORY_BUDGET {
        let kind = if separable {
            "separable flow"
        } else {
            "flow with its dense exact Jacobian"
        };
        return Err(Error::invalid(
            "setting.neurons",
            format!(
                "a {kind} of {m} neurons needs about {:.3e} bytes, above the budget of \
                 {FLOW_MEMORY_BUDGET:.3e} (derivations/numerics.md, eq. (K4)), got {m}",
                need
            ),
        ));
    }
    Ok(())
}

/// An error when no flow of `m` neurons fits the memory budget (the least memory: the
/// separable path, [`check_memory`]); the reduced initialization checks it.
pub fn check_neurons(m: usize) -> Result<()> {
    check_memory(m, 0, true)
}

/// Integration options.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Options {
    /// Local error tolerance.
    pub tol: Tolerance,
    /// The integrator.
    pub method: Method,
    /// The explicit method of [`Method::Explicit`] and of the non-stiff phases of
    /// [`Method::Auto`].
    pub explicit: Explicit,
    /// The Rosenbrock method of [`Method::Rosenbrock`] and of the stiff phases of
    /// [`Method::Auto`].
    pub stiff: Stiff,
    /// End of flow time.
    pub horizon: f64,
    /// Stop at `t_end` instead of the horizon.
    pub stop_at_t_end: bool,
    /// Give up after this many accepted plus rejected steps.
    pub max_steps: u64,
    /// Rosenbrock steps that share one Jacobian (1: a fresh Jacobian every step). A
    /// rejected step with a reused Jacobian retries with a fresh one.
    pub jacobian_reuse: u32,
    /// The coordinates of the state vector; `None`: [`Coordinates::Decay`] when every
    /// `G_jj > 0` at the start, else [`Coordinates::Plain`].
    pub coordinates: Option<Coordinates>,
    /// Whether an `f64` run under Shampine's method (the fallback, or [`Stiff::Ros4`]) may
    /// probe whether rounding limits its steps and then take Rodas5 steps in extended
    /// precision ([`crate::flow::extended`]; default `true`, no effect in MPFR).
    pub extended: bool,
    /// The precision of those steps (default double-double).
    pub extended_precision: ExtendedPrecision,
    /// Whether the Rodas5 stages are solved matrix-free ([`crate::flow::krylov`],
    /// `derivations/numerics.md`, (K5)-(K8)); `None`: for a trained head from
    /// [`crate::flow::krylov::KRYLOV_FROM`] neurons on, in `f64`, with Rodas5.
    pub matrix_free: Option<bool>,
    /// Which accepted steps end with a sample (the `on_sample` of [`integrate`], the
    /// trajectory CSV's rows): every `K`-th, the last, and always the start and every event
    /// (default [`Cadence::EVERY_STEP`]). No effect on the integration.
    pub record: Cadence,
}

impl Options {
    /// Default relative tolerance.
    pub const DEFAULT_RTOL: f64 = 1e-9;
    /// Default absolute tolerance factor: `atol = DEFAULT_ATOL_FACTOR * rtol / sqrt(d)`,
    /// that is `1e-4` of the relative tolerance at the scale `d^(-1/2)` of the initial
    /// feature coordinates (`derivations/numerics.md`, "Error control").
    pub const DEFAULT_ATOL_FACTOR: f64 = 1e-4;
    /// Default absolute tolerance factor of the head's entries:
    /// `atol_head = DEFAULT_ATOL_HEAD_FACTOR * rtol`, that is the relative tolerance at
    /// the scale `1e-3` of the `t_end` threshold.
    pub const DEFAULT_ATOL_HEAD_FACTOR: f64 = 1e-3;
    /// Default [`Options::jacobian_reuse`].
    pub const DEFAULT_JACOBIAN_REUSE: u32 = 1;
    /// Default step budget.
    pub const DEFAULT_MAX_STEPS: u64 = 2_000_000;

    /// Default absolute tolerance factor of the noise correlations `r_jk`:
    /// `atol_corr = DEFAULT_ATOL_CORR_FACTOR * rtol`. A correlation is bounded by 1 and
    /// enters the moments through `Psi_jk = s^6 (G_jj G_kk)^(3/2) (9 r_jk + 6 r_jk^3)`, so an
    /// absolute error `delta` in `r_jk` is an error of about `delta` in `Psi_jk` relative to
    /// `sqrt(Psi_jj Psi_kk)`: the same `1e-3 rtol` as the head's entries
    /// (`derivations/numerics.md`, "Error control").
    pub const DEFAULT_ATOL_CORR_FACTOR: f64 = 1e-3;

    /// The default absolute tolerance for `rtol` at dimension `d`.
    pub fn default_atol(rtol: f64, dim: u64) -> f64 {
        Self::DEFAULT_ATOL_FACTOR * rtol / (dim as f64).sqrt()
    }

    /// The default tolerance for `rtol` at dimension `d`: [`Options::default_atol`] for the
    /// encoder's coordinates, `1e-3 rtol` for the noise correlations and the head (the
    /// driver sets the index ranges from the state vector, [`Problem::tolerance`]).
    pub fn default_tolerance(rtol: f64, dim: u64) -> Tolerance {
        Tolerance {
            rtol,
            atol: Self::default_atol(rtol, dim),
            atol_corr: Self::DEFAULT_ATOL_CORR_FACTOR * rtol,
            atol_head: Self::DEFAULT_ATOL_HEAD_FACTOR * rtol,
            corr_from: usize::MAX,
            head_from: usize::MAX,
        }
    }

    /// The defaults with the configuration's horizon.
    pub fn new(config: &Config) -> Self {
        Options {
            tol: Self::default_tolerance(Self::DEFAULT_RTOL, config.setting.dim),
            method: Method::Auto,
            explicit: Explicit::Dop853,
            stiff: Stiff::Rodas5,
            horizon: config.training.horizon,
            stop_at_t_end: false,
            max_steps: Self::DEFAULT_MAX_STEPS,
            coordinates: None,
            jacobian_reuse: Self::DEFAULT_JACOBIAN_REUSE,
            extended: true,
            extended_precision: ExtendedPrecision::DoubleDouble,
            matrix_free: None,
            record: Cadence::EVERY_STEP,
        }
    }
}

/// The result of a run.
#[derive(Clone, Debug)]
pub struct Run {
    /// The summary (contract keys and extras).
    pub summary: Summary,
    /// Jacobian evaluations (Rosenbrock steps and stiffness checks). In `f64` each is one
    /// dual-number pass of the right-hand side (which also yields `f`, used for `f(y1)` after
    /// an accepted Rosenbrock step) and is not counted in `summary.rhs_evals`; in MPFR each
    /// is `n` finite-difference evaluations, which are.
    pub jacobians: u64,
    /// The reduced state at the end.
    pub final_state: Reduced<f64>,
    /// Flow time at which `Method::Auto` switched to Rosenbrock.
    pub stiff_from: Option<f64>,
    /// Accepted Dormand-Prince and Rosenbrock steps.
    pub steps_by_method: [u64; 2],
    /// Number of switches between the two integrators (`Method::Auto`).
    pub switches: u64,
    /// Flow time from which Rodas5 gave way to Shampine's method (too many failed
    /// attempts; `None`: it never did).
    pub fallback_from: Option<f64>,
    /// Flow time of the first step taken in extended precision ([`crate::flow::extended`],
    /// after a probe under Shampine's method showed that `f64` rounding limited the steps;
    /// `None`: never).
    pub extended_from: Option<f64>,
    /// Accepted steps taken in extended precision.
    pub extended_steps: u64,
    /// How often a stall of the `f64` steps after a spent budget of extended attempts armed
    /// the probe again (derivations/numerics.md, eq. (X1)).
    pub extended_rearms: u64,
    /// The coordinates of the state vector.
    pub coordinates: Coordinates,
    /// Accepted steps of Shampine's method in which some components of the cubic Hermite
    /// extension had a defect above `MAX_DEFECT` and follow the chord
    /// ([`Dense::repair_hermite`]).
    pub fast_mode_steps: u64,
    /// `|E_ks|` at `t2`, the head entry that carries the substitution
    /// ([`crate::observe::EventTracker::substitution_entry`]; `None`: no `t2`).
    pub t2_head_entry: Option<f64>,
    /// Events decided by a quantity the tolerance does not resolve: `t2` when
    /// [`Run::t2_head_entry`] is below [`RESOLVED_HEAD_ENTRY`] times the head's absolute
    /// tolerance (`derivations/numerics.md`, (G2)).
    pub unresolved: Events,
    /// The head's absolute tolerance of the run ([`Tolerance::atol_head`]), against which
    /// [`Run::unresolved`] is decided.
    pub atol_head: f64,
    /// Whether the Rodas5 stages were solved matrix-free ([`Options::matrix_free`]); then
    /// [`Run::jacobians`] counts the head blocks of (K5) and the stiffness checks.
    pub matrix_free: bool,
    /// The matrix-free products `J v` (dual passes, not in `summary.rhs_evals`), GMRES
    /// iterations and stage solves ([`crate::flow::krylov`]).
    pub krylov_counts: [u64; 3],
}

/// A head entry is resolved at `RESOLVED_HEAD_ENTRY` times the head's absolute tolerance
/// (about one correct digit for an absolute error of about `atol_head`;
/// `derivations/numerics.md`, (G2)).
pub const RESOLVED_HEAD_ENTRY: f64 = 10.0;

/// The events of a run with `t2` head entry `t2_head_entry` that tolerance `tol` does not
/// resolve (`derivations/numerics.md`, (G2)).
pub(crate) fn unresolved(t2_head_entry: Option<f64>, tol: &Tolerance) -> Events {
    let t2 = t2_head_entry.is_some_and(|e| e.is_nan() || e < RESOLVED_HEAD_ENTRY * tol.atol_head);
    Events::from_fn(|e| t2 && e == Event::T2)
}

/// [`spectral_radius_capped`] of a Jacobian in `layout` ([`Layout::spectral_radius_capped`])
/// or dense.
pub(crate) fn radius<S: Scalar>(layout: Option<&Layout>, jac: &[S], cap: f64) -> f64 {
    match layout {
        Some(l) => l.spectral_radius_capped(jac, cap),
        None => spectral_radius_capped(jac, cap),
    }
}

/// A bound on [`radius`]: [`Layout::radius_bound`] or [`spectral_norm_bound`].
pub(crate) fn radius_bound<S: Scalar>(layout: Option<&Layout>, jac: &[S]) -> f64 {
    match layout {
        Some(l) => l.radius_bound(jac),
        None => spectral_norm_bound(jac),
    }
}

/// Integrates the flow of `config` from `x0` (eq. (F1) of `derivations/numerics.md`), with
/// the paper's events observed by an [`EventTracker`] ([`integrate_observed`] with a fresh
/// tracker).
///
/// `on_sample` is called with `(tau, state)` at `tau = 0`, at every event and at the end of
/// every accepted step that [`Options::record`] selects (by default all) and of the last one,
/// in increasing `tau` (the trajectory recorder hooks in here).
///
/// # Errors
///
/// [`Error::Invalid`] on `setting.neurons` when the flow does not fit the memory budget
/// ([`check_memory`]), on `training.horizon` when the horizon is not positive and finite,
/// on `coordinates` for decay coordinates with a vanishing noise part; the right-hand
/// side's error when the flow is undefined at `x0`; and any error of `on_sample`. A run that
/// ends early (step limit, step underflow, non-finite) is not an error: its
/// [`Summary::termination`](crate::observe::Summary) says why.
///
/// # Examples
///
/// ```
/// use predhead::config::parse_config;
/// use predhead::flow::{integrate, Options};
/// use predhead::observe::Termination;
///
/// let config = parse_config(
///     "[setting]\ndim = 30\npatches = 8\nfeature_patches = 2\nalpha = [2.0, 1.0]\n\
///      noise_std = 1.0\nneurons = 2\n[model]\nhead = \"identity-offdiag\"\n\
///      normalization = \"batchnorm\"\nstop_gradient = true\n\
///      [training]\nlr = 1e-3\nlr_head = 2e-4\n",
/// )?;
/// let x0 = predhead::init::reduced(&config.setting, 0)?;
/// let mut opts = Options::new(&config);
/// opts.stop_at_t_end = true;
/// let mut samples = 0;
/// let run = integrate(&config, &x0, &opts, &mut |_tau, _x| {
///     samples += 1;
///     Ok(())
/// })?;
/// assert_eq!(run.summary.termination, Termination::TEnd);
/// assert!(run.summary.t1.is_some() && samples > 2);
///
/// // A horizon that is not positive is an error naming the field.
/// opts.horizon = 0.0;
/// let err = integrate(&config, &x0, &opts, &mut |_, _| Ok(())).unwrap_err();
/// assert!(err.to_string().contains("training.horizon"));
/// # Ok::<(), predhead::error::Error>(())
/// ```
pub fn integrate<S: FlowScalar>(
    config: &Config,
    x0: &Reduced<S>,
    opts: &Options,
    on_sample: &mut dyn FnMut(f64, &Reduced<f64>) -> Result<()>,
) -> Result<Run> {
    let mut tracker = EventTracker::new(
        Constants::new(&config.setting, ()),
        config.model,
        config.phases.clone(),
    );
    integrate_observed(config, x0, opts, &mut tracker, on_sample)
}

/// [`integrate`] with the events watched and the summary built by `observer` (which sees
/// `tau = 0` first).
///
/// # Errors
///
/// As [`integrate`], and as the observer's [`FlowObserver::finish`].
///
/// # Examples
///
/// ```
/// use predhead::config::parse_config;
/// use predhead::flow::{integrate_observed, Options};
/// use predhead::moments::population::Constants;
/// use predhead::observe::{Event, EventTracker};
///
/// let config = parse_config(
///     "[setting]\ndim = 30\npatches = 8\nfeature_patches = 2\nalpha = [2.0, 1.0]\n\
///      noise_std = 1.0\nneurons = 2\n[model]\nhead = \"identity-offdiag\"\n\
///      normalization = \"batchnorm\"\nstop_gradient = true\n\
///      [training]\nlr = 1e-3\nlr_head = 2e-4\n",
/// )?;
/// let x0 = predhead::init::reduced(&config.setting, 0)?;
/// let mut opts = Options::new(&config);
/// opts.stop_at_t_end = true;
/// let constants = Constants::new(&config.setting, ());
/// let mut tracker = EventTracker::new(constants, config.model, config.phases.clone());
/// let run = integrate_observed(&config, &x0, &opts, &mut tracker, &mut |_, _| Ok(()))?;
/// // The observer passed in watched the run: its event times are the summary's.
/// assert_eq!(tracker.time(Event::T1), run.summary.t1);
/// assert!(tracker.time(Event::TEnd).is_some());
/// # Ok::<(), predhead::error::Error>(())
/// ```
pub fn integrate_observed<S: FlowScalar>(
    config: &Config,
    x0: &Reduced<S>,
    opts: &Options,
    observer: &mut dyn FlowObserver,
    on_sample: &mut dyn FnMut(f64, &Reduced<f64>) -> Result<()>,
) -> Result<Run> {
    check_neurons(x0.neurons())?;
    if !(opts.horizon > 0.0 && opts.horizon.is_finite()) {
        return Err(Error::invalid(
            "training.horizon",
            format!("must be positive and finite, got {}", opts.horizon),
        ));
    }
    let ctx = x0.ctx();
    let zero = S::zero(ctx);
    let noisy = (0..x0.neurons()).all(|j| *x0.gram.at(j, j) > zero);
    let coordinates = opts.coordinates.unwrap_or(if noisy {
        Coordinates::Decay
    } else {
        Coordinates::Plain
    });
    if coordinates != Coordinates::Plain && !noisy {
        return Err(Error::invalid(
            "coordinates",
            "decay coordinates need every noise part to be non-zero (G_jj > 0)",
        ));
    }
    let problem = Problem::with_coordinates(config, x0, coordinates, ctx);
    check_memory(
        problem.neurons(),
        problem.len() - problem.head_from(),
        problem.separable(),
    )?;
    let mut opts = *opts;
    opts.tol = problem.tolerance(opts.tol);
    // The Jacobian: exact (dual numbers) in f64, finite differences otherwise.
    let exact = S::exact_jacobian(config, x0, coordinates);
    // The separable flow's Jacobian comes in a compact layout, factored block by block.
    let layout: Option<Layout> = exact.as_ref().and_then(|e| e.layout().cloned());
    let src = Source {
        config,
        x0,
        coordinates,
    };
    Driver::new(
        src,
        &opts,
        &problem,
        layout.as_ref(),
        exact,
        observer,
        on_sample,
    )
    .run()
}
