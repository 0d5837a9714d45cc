//! The driver: adaptive integration of the flow from an initial reduced state to the
//! horizon, with event location on the dense output (`derivations/numerics.md`, Sections
//! "Integrators", "Stiffness" and "Events").

use crate::error::{Error, Result};
use crate::flow::clock::Clock;
use crate::flow::control::{initial_step, predictive_factor, step_factor, Tolerance};
use crate::flow::dense::Dense;
use crate::flow::extended::{ExtendedPrecision, ExtendedStep};
use crate::flow::jacobian::FlowScalar;
use crate::flow::krylov;
use crate::flow::problem::{to_f64, to_f64_into, Coordinates, Problem};
use crate::flow::separable::Layout;
use crate::flow::{dop853, dopri5, rodas5, rosenbrock};
use crate::moments::population::{Constants, Reduced};
use crate::observe::{offdiag_norm, Event, EventTracker, Events, Summary, Termination};
use crate::scalar::Scalar;
use crate::setting::Config;

/// Which integrators, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The explicit method ([`Options::explicit`]) throughout (slow once the flow is stiff).
    Explicit,
    /// The Rosenbrock method ([`Options::stiff`]) throughout.
    Rosenbrock,
    /// The explicit method until the flow is stiff (`h rho > 3`, with `rho` the spectral
    /// radius of the Jacobian, checked every 25 accepted steps and after rejections), then
    /// the Rosenbrock method; back after 4 checks (every 5th step) with `h rho < 1`
    /// (`derivations/numerics.md`, "Integrators").
    Auto,
}

impl Method {
    /// Parses `auto`, `explicit` or `rosenbrock` (`dopri5`, the name of earlier versions,
    /// is read as `explicit`).
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "explicit" | "dopri5" => Some(Method::Explicit),
            "rosenbrock" => Some(Method::Rosenbrock),
            "auto" => Some(Method::Auto),
            _ => None,
        }
    }
}

/// The explicit Runge-Kutta pair of the non-stiff phases (`derivations/numerics.md`,
/// "Integrators").
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Explicit {
    /// DOP853: order 8, estimators of orders 5 and 3, seventh-order dense output
    /// ([`dop853`]); decimal coefficients. The `f64` default.
    Dop853,
    /// Dormand-Prince 5(4) with exact rational coefficients and fourth-order dense output
    /// ([`dopri5`]); the MPFR reference's method.
    Dopri5,
}

impl Explicit {
    /// Parses `dop853` or `dopri5`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "dop853" => Some(Explicit::Dop853),
            "dopri5" => Some(Explicit::Dopri5),
            _ => None,
        }
    }

    /// The order `q` the step-size control uses (local error `O(h^(q+1))`).
    pub fn estimate_order(self) -> u32 {
        match self {
            Explicit::Dop853 => 7,
            Explicit::Dopri5 => 4,
        }
    }
}

/// The Rosenbrock method of the stiff phase (`derivations/numerics.md`, "Integrators").
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
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
    /// Parses `rodas5` or `ros4`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "rodas5" => Some(Stiff::Rodas5),
            "ros4" => Some(Stiff::Ros4),
            _ => None,
        }
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
fn unresolved(t2_head_entry: Option<f64>, tol: &Tolerance) -> Events {
    let t2 = t2_head_entry.is_some_and(|e| e.is_nan() || e < RESOLVED_HEAD_ENTRY * tol.atol_head);
    Events::from_fn(|e| t2 && e == Event::T2)
}

/// An estimate of the spectral radius of the row-major `n x n` matrix `jac` from the growth
/// of 24 power iterations (the geometric mean growth over the last 16, which also works for
/// a dominant complex pair), in `f64`.
pub fn spectral_radius<S: Scalar>(jac: &[S]) -> f64 {
    spectral_radius_capped(jac, f64::INFINITY)
}

/// [`spectral_radius`], returning early (after at least 8 power iterations and one growth
/// factor) with the running estimate as soon as it exceeds `cap`: the stiffness switch only
/// compares `h rho` with 1 and 3, and in the stiff phase `h rho` is `1e3 .. 1e16`.
pub fn spectral_radius_capped<S: Scalar>(jac: &[S], cap: f64) -> f64 {
    let n = (jac.len() as f64).sqrt().round() as usize;
    let converted: Vec<f64>;
    let j: &[f64] = match S::f64_slice(jac) {
        Some(j) => j,
        None => {
            converted = jac.iter().map(Scalar::to_f64).collect();
            &converted
        }
    };
    // With `n` a compile-time constant for the flow's state lengths (`n <= 16`, vectors on
    // the stack, loops unrolled); the same operations in the same order for any `n`.
    macro_rules! sized {
        ($($n:literal)*) => {
            match n {
                $($n => return power_iteration(j, $n, &mut [0.0; $n], &mut [0.0; $n], cap),)*
                _ => {}
            }
        };
    }
    sized!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
    power_iteration(j, n, &mut vec![0.0; n], &mut vec![0.0; n], cap)
}

/// The power iteration of [`spectral_radius_capped`] on the row-major `n x n` matrix `j`,
/// with work vectors `v`, `w` of length `n`.
#[inline(always)]
fn power_iteration(j: &[f64], n: usize, v: &mut [f64], w: &mut [f64], cap: f64) -> f64 {
    for (i, vi) in v.iter_mut().enumerate() {
        *vi = 1.0 + 0.1 * i as f64;
    }
    // The product of the growth factors from iteration 8 on, its logarithm taken when it
    // leaves [1e-150, 1e150] and at the end (one `ln` instead of 16).
    let (mut log_growth, mut growth) = (0.0, 1.0f64);
    for it in 0..24 {
        for (wr, row) in w.iter_mut().zip(j.chunks_exact(n)) {
            *wr = (0..n).map(|c| row[c] * v[c]).sum();
        }
        let nv = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let nw = w.iter().map(|x| x * x).sum::<f64>().sqrt();
        if !(nw > 0.0 && nw.is_finite()) {
            return if nw == 0.0 { 0.0 } else { f64::INFINITY };
        }
        if it >= 8 {
            growth *= nw / nv;
            if !(1e-150..=1e150).contains(&growth) {
                log_growth += growth.ln();
                growth = 1.0;
            }
            if cap.is_finite() {
                let estimate = ((log_growth + growth.ln()) / (it - 7) as f64).exp();
                if estimate > cap {
                    return estimate;
                }
            }
        }
        for (vi, wi) in v.iter_mut().zip(w.iter()) {
            *vi = wi / nw;
        }
    }
    ((log_growth + growth.ln()) / 16.0).exp()
}

/// [`spectral_radius_capped`] of a Jacobian in `layout` ([`Layout::spectral_radius_capped`])
/// or dense.
fn radius<S: Scalar>(layout: Option<&Layout>, jac: &[S], cap: f64) -> f64 {
    match layout {
        Some(l) => l.spectral_radius_capped(jac, cap),
        None => spectral_radius_capped(jac, cap),
    }
}

/// A bound on [`radius`]: [`Layout::radius_bound`] or [`spectral_norm_bound`].
fn radius_bound<S: Scalar>(layout: Option<&Layout>, jac: &[S]) -> f64 {
    match layout {
        Some(l) => l.radius_bound(jac),
        None => spectral_norm_bound(jac),
    }
}

/// `sqrt(||J||_1 ||J||_inf)` of the row-major `n x n` matrix `jac`: a bound on `||J||_2`,
/// hence on every growth factor `||J v|| / ||v||` of [`spectral_radius`] and on its estimate
/// (NaN or infinite when an entry is). The stiffness switch skips the power iteration when
/// this bound already rules stiffness out.
fn spectral_norm_bound<S: Scalar>(jac: &[S]) -> f64 {
    // `f64::max` would drop a NaN; this keeps it. Called once per stiffness check, so the
    // column sums may live on the heap.
    let max_keep_nan = |m: f64, v: f64| if v > m || v.is_nan() { v } else { m };
    let n = (jac.len() as f64).sqrt().round() as usize;
    let mut cols = vec![0.0; n];
    let mut row_max = 0.0f64;
    for row in jac.chunks_exact(n.max(1)) {
        let mut sum = 0.0;
        for (c, v) in cols.iter_mut().zip(row) {
            let a = v.to_f64().abs();
            sum += a;
            *c += a;
        }
        row_max = max_keep_nan(row_max, sum);
    }
    let col_max = cols.iter().fold(0.0f64, |m, &c| max_keep_nan(m, c));
    (row_max * col_max).sqrt()
}

/// Illinois root finding of `g` on `[lo, hi]` with `g(lo) < 0 <= g(hi)`; returns a time
/// `t` with `g(t) >= 0` within a relative `1e-15` of the crossing.
fn first_crossing(g: &mut dyn FnMut(f64) -> f64, mut lo: f64, mut hi: f64) -> f64 {
    let (mut glo, mut ghi) = (g(lo), g(hi));
    let mut side = 0i8;
    for _ in 0..200 {
        if hi - lo <= 1e-15 * hi.abs().max(lo.abs()) + f64::MIN_POSITIVE {
            break;
        }
        let mut t = (lo * ghi - hi * glo) / (ghi - glo);
        if !(t > lo && t < hi) {
            t = 0.5 * (lo + hi);
        }
        let gt = g(t);
        if gt >= 0.0 {
            hi = t;
            ghi = gt;
            if side == 1 {
                glo *= 0.5;
            }
            side = 1;
        } else {
            lo = t;
            glo = gt;
            if side == -1 {
                ghi *= 0.5;
            }
            side = -1;
        }
    }
    hi
}

/// Reused buffers for states sampled from a dense output (no allocation per sample in
/// `f64`).
struct Sampler<S: Scalar> {
    y: Vec<S>,
    x: Reduced<S>,
    xf: Reduced<f64>,
}

impl<S: Scalar> Sampler<S> {
    fn new(problem: &Problem<S>) -> Self {
        let y = vec![S::one(problem.ctx()); problem.len()];
        let x = problem.unpack(&y);
        let xf = to_f64(&x);
        Sampler { y, x, xf }
    }

    /// The `f64` reduced state of the state vector `y`.
    fn state(&mut self, problem: &Problem<S>, y: &[S]) -> &Reduced<f64> {
        problem.unpack_into(y, &mut self.x);
        to_f64_into(&self.x, &mut self.xf);
        &self.xf
    }

    /// The `f64` reduced state of the dense output at `t`.
    fn at(&mut self, problem: &Problem<S>, dense: &Dense<S>, t: f64) -> &Reduced<f64> {
        dense.eval_into(t, &mut self.y);
        problem.unpack_into(&self.y, &mut self.x);
        to_f64_into(&self.x, &mut self.xf);
        &self.xf
    }
}

/// The `i`-th of `n` equally spaced points after `lo` up to `hi` (`hi` itself for `i = n`).
fn sample_time(lo: f64, hi: f64, i: usize, n: usize) -> f64 {
    if i == n {
        hi
    } else {
        lo + (hi - lo) * i as f64 / n as f64
    }
}

/// Whether a pending event's margin is `>= 0` at one of the samples [`locate`] looks at
/// first (`SUB` equally spaced points of the step, the end included). These samples are
/// taken on a cheap stand-in for the step's continuous extension, so they do not update the
/// off-diagonal peak.
fn may_cross<S: Scalar>(
    problem: &Problem<S>,
    tracker: &mut EventTracker,
    dense: &Dense<S>,
    sampler: &mut Sampler<S>,
) -> bool {
    let pending = tracker.pending();
    if pending.is_empty() {
        return false;
    }
    let (t0, t1) = dense.span();
    let mut any = false;
    for i in 1..=SUB {
        let x = sampler.at(problem, dense, sample_time(t0, t1, i, SUB));
        any = any || pending.iter().any(|&ev| tracker.margin(ev, x) >= 0.0);
    }
    any
}

/// Locates the maximum of the off-diagonal norm `||E - diag(E)||_F` inside the accepted
/// step `dense` (called when its rate turns from positive to non-positive across the step,
/// [`Problem::offdiag_rate`]) and feeds it to the tracker: the best of `PEAK_GRID + 1`
/// equally spaced points, then golden-section search between that point's neighbours down
/// to `1e-9` of the step (the norm is flat at its maximum, so the value is then exact to
/// rounding and to the continuous extension's accuracy). `derivations/phases.md`, eq. (E6).
fn refine_peak<S: Scalar>(
    problem: &Problem<S>,
    tracker: &mut EventTracker,
    dense: &Dense<S>,
    sampler: &mut Sampler<S>,
) {
    const PEAK_GRID: usize = 8;
    let (t0, t1) = dense.span();
    let mut norm = |t: f64| offdiag_norm(sampler.at(problem, dense, t));
    let grid = |i: usize| sample_time(t0, t1, i, PEAK_GRID);
    let (mut best_t, mut best) = (t0, norm(t0));
    let mut best_i = 0;
    for i in 1..=PEAK_GRID {
        let v = norm(grid(i));
        if v > best {
            (best_t, best, best_i) = (grid(i), v, i);
        }
    }
    let (mut lo, mut hi) = (
        grid(best_i.saturating_sub(1)),
        grid((best_i + 1).min(PEAK_GRID)),
    );
    let ratio = 0.5 * (5f64.sqrt() - 1.0);
    let (mut c, mut d) = (hi - ratio * (hi - lo), lo + ratio * (hi - lo));
    let (mut fc, mut fd) = (norm(c), norm(d));
    for _ in 0..200 {
        if hi - lo <= 1e-9 * (t1 - t0) {
            break;
        }
        if fc >= fd {
            (hi, d, fd) = (d, c, fc);
            c = hi - ratio * (hi - lo);
            fc = norm(c);
        } else {
            (lo, c, fc) = (c, d, fd);
            d = lo + ratio * (hi - lo);
            fd = norm(d);
        }
    }
    let (best_t, _) = [(c, fc), (d, fd)]
        .into_iter()
        .fold((best_t, best), |acc, x| if x.1 > acc.1 { x } else { acc });
    tracker.touch(sampler.at(problem, dense, best_t));
}

/// The largest scaled defect of a component ([`Dense::repair_hermite`]) at which it keeps
/// the cubic Hermite extension in a step of Shampine's method. Measured on the benchmark
/// setting's rtol-1e-12 runs of the exact-rational pairs: 1e-5 .. 1e-1 in most steps,
/// 1 .. 1e4 in 3% (`d = 1e4`) and 30% (`d = 1e2`) of them (stiff steps whose slopes
/// carry relaxed fast modes); 1e13 .. 1e33 in the steps of a held-out `m = 4` run whose
/// cubic gave a peak of 7.4e5 where the solution's is 0.365.
const MAX_DEFECT: f64 = 1.0;

/// Margin samples per step in event location ([`locate`], [`may_cross`]).
const SUB: usize = 4;

/// Locates, in time order, the events that happen inside the accepted step `dense`,
/// feeding them to the tracker. Margins are sampled at `SUB` equally spaced points (so a
/// condition that holds only briefly inside a step can still be seen), and each crossing is
/// refined by root finding. Returns the events with their times and states.
fn locate<S: Scalar>(
    problem: &Problem<S>,
    tracker: &mut EventTracker,
    clock: &Clock,
    dense: &Dense<S>,
    sampler: &mut Sampler<S>,
) -> Vec<(f64, Event, Reduced<f64>)> {
    // Local offsets from the step's start.
    let (t0, t1) = dense.span();
    let mut out = Vec::new();
    let mut lo = t0;
    loop {
        let pending = tracker.pending();
        if pending.is_empty() {
            break;
        }
        let mut prev = lo;
        let mut found: Option<(f64, Event)> = None;
        for i in 1..=SUB {
            let t = sample_time(lo, t1, i, SUB);
            let x = sampler.at(problem, dense, t);
            tracker.touch(x);
            // The margins at the sample (the state is sampled once for all events).
            let crossed = pending.filter(|&ev| tracker.margin(ev, x) >= 0.0);
            for ev in crossed {
                let mut g = |s: f64| tracker.margin(ev, sampler.at(problem, dense, s));
                let root = if g(prev) >= 0.0 {
                    prev
                } else {
                    first_crossing(&mut g, prev, t)
                };
                if found.is_none_or(|(r, _)| root < r) {
                    found = Some((root, ev));
                }
            }
            if found.is_some() {
                break;
            }
            prev = t;
        }
        let Some((root, _)) = found else { break };
        let x = sampler.at(problem, dense, root).clone();
        let tau = clock.plus(root);
        let fired = tracker.observe(tau, &x);
        for ev in fired {
            out.push((tau, ev, x.clone()));
        }
        lo = root;
        if lo >= t1 {
            // Events unlocked exactly at the end are checked by the next step's start.
            let tau = clock.plus(t1);
            let x = sampler.at(problem, dense, t1).clone();
            let fired = tracker.observe(tau, &x);
            for ev in fired {
                out.push((tau, ev, x.clone()));
            }
            break;
        }
    }
    out
}

/// The steppers' work spaces and the driver's buffers, allocated once per run.
struct Buffers<S: Scalar> {
    dop853: dop853::Work<S>,
    dopri5: dopri5::Work<S>,
    rodas5: rodas5::Work<S>,
    ros4: rosenbrock::Work<S>,
    dense: Dense<S>,
    /// `f(y1)` after a Rosenbrock step.
    f1: Vec<S>,
    /// The Hermite extension at the midpoint of a step of Shampine's method (defect check).
    mid: Vec<S>,
    /// The Jacobian at the current state, and a second buffer (the next state's, or the
    /// last step's).
    jac: Vec<S>,
    jac_spare: Vec<S>,
    /// Work buffers of the forward-difference Jacobian.
    yp: Vec<S>,
    fp: Vec<S>,
    f_scratch: Vec<S>,
}

impl<S: Scalar> Buffers<S> {
    /// Buffers for states of length `n`, with Jacobians in `layout` (separable flow) or
    /// dense.
    /// With `matrix_free` no `n x n` buffer at all (the Rodas5 stages of
    /// [`crate::flow::krylov`]; Shampine's method is then not used).
    fn new(n: usize, ctx: S::Ctx, layout: Option<&Layout>, matrix_free: bool) -> Self {
        let z = || vec![S::zero(ctx); n];
        let jac_len = if matrix_free {
            0
        } else {
            layout.map_or(n * n, Layout::len)
        };
        Buffers {
            dop853: dop853::Work::new(n, ctx),
            dopri5: dopri5::Work::new(n, ctx),
            rodas5: if matrix_free {
                rodas5::Work::matrix_free(n, ctx)
            } else {
                rodas5::Work::with_layout(n, ctx, layout)
            },
            ros4: rosenbrock::Work::with_layout(if matrix_free { 0 } else { n }, ctx, layout),
            dense: Dense::new(n, ctx),
            f1: z(),
            mid: z(),
            jac: vec![S::zero(ctx); jac_len],
            jac_spare: vec![S::zero(ctx); jac_len],
            yp: z(),
            fp: z(),
            f_scratch: z(),
        }
    }
}

/// `f64` attempts in the window that watches for a stall after a spent budget of extended
/// attempts (derivations/numerics.md, eq. (X1)).
const STALL_WINDOW: u64 = 20_000;

/// The least advance of `ln tau` over [`STALL_WINDOW`] attempts that is not a stall (eq.
/// (X1)): at that rate the step limit of 2e6 attempts covers 5 e-folds of `tau`.
const STALL_PROGRESS: f64 = 0.05;

/// Whether the flow stalled from `from` to `to` (eq. (X1): `ln(to / from) <
/// STALL_PROGRESS`; never from a `from` that is not positive).
fn stalled(from: f64, to: f64) -> bool {
    from > 0.0 && (to / from).ln() < STALL_PROGRESS
}

/// Whether a step attempt's error norm accepts it (finite and at most 1).
fn accepted(attempt: &Result<f64>) -> bool {
    matches!(attempt, Ok(e) if e.is_finite() && *e <= 1.0)
}

/// Integrates the flow of `config` from `x0` (eq. (F1) of `derivations/numerics.md`).
///
/// `on_sample` is called with `(tau, state)` at `tau = 0`, at every event and at the end of
/// every accepted step, in increasing `tau` (the trajectory recorder hooks in here).
pub fn integrate<S: FlowScalar>(
    config: &Config,
    x0: &Reduced<S>,
    opts: &Options,
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
    let opts = &opts;
    let mut tracker = EventTracker::new(
        Constants::new(&config.setting, ()),
        config.model,
        config.phases.clone(),
    );
    let n = problem.len();
    let mut evals: u64 = 0;
    let mut ws = problem.workspace();
    let mut sampler = Sampler::new(&problem);
    let mut rhs = |y: &[S], dy: &mut [S]| -> Result<()> {
        evals += 1;
        problem.rhs_into(y, &mut ws, dy)
    };
    // The Jacobian: exact (dual numbers) in f64, finite differences otherwise.
    let mut exact = S::exact_jacobian(config, x0, coordinates);
    // The separable flow's Jacobian comes in a compact layout, factored block by block.
    let layout: Option<Layout> = exact.as_ref().and_then(|e| e.layout().cloned());
    let layout = layout.as_ref();
    let mut jacobians = 0u64;
    // The matrix-free Rodas5 stages (derivations/numerics.md, (K5)-(K8)): by default for a
    // trained head from KRYLOV_FROM neurons on, in f64, under Rodas5.
    let mut mf = if opts
        .matrix_free
        .unwrap_or_else(|| krylov::default_on(config, problem.neurons()))
        && opts.stiff == Stiff::Rodas5
        && layout.is_none()
    {
        S::matrix_free(config, x0, coordinates)
    } else {
        None
    };
    let mut b = Buffers::new(n, ctx, layout, mf.is_some());
    let mut y = problem.pack(x0);
    let mut t = 0.0f64;
    let mut clock = Clock::zero();
    let x0f = to_f64(x0);
    tracker.observe(0.0, &x0f);
    on_sample(0.0, &x0f)?;

    // An initial state where the flow is undefined (a zero normalization variance, a
    // non-finite value) is bad input, not a run.
    let mut f0 = vec![S::zero(ctx); n];
    rhs(&y, &mut f0)?;
    let mut stiff = opts.method == Method::Rosenbrock;
    let mut stiff_from = if stiff { Some(0.0) } else { None };
    // The Rosenbrock method in use, and the fallback from Rodas5 to Shampine's method
    // (derivations/numerics.md, "Integrators", "Fallback"): when `FALLBACK_REJECTS` of
    // `FALLBACK_WINDOW` consecutive Rosenbrock attempts fail (error norm above 1, or a
    // stage left the domain of the flow), the run goes on with Shampine's method, whose
    // stages stay within `2 h` of `y0` (Rodas5's extrapolate up to `41 h`).
    let mut stiff_method = opts.stiff;
    let mut fallback_from: Option<f64> = None;
    // Rosenbrock steps in extended precision (`crate::flow::extended`), built at the first
    // probe (below, after the attempt).
    let mut extended: Option<Box<dyn ExtendedStep<S>>> = None;
    let mut extended_from: Option<f64> = None;
    let mut extended_steps = 0u64;
    let mut extended_evals = 0u64;
    let mut extended_mode = false;
    let mut probe = false;
    // Extended attempts are costly (double-double ~0.3 ms each at m = 3, 4, MPFR ~3 ms);
    // after `EXTENDED_BUDGET` of them the run goes on in f64. A larger budget was measured
    // and not kept: 50,000 gave no more accurate event times on a held-out m = 3 case and
    // took 7 s instead of 0.9 (derivations/numerics.md, "Extended-precision steps").
    const EXTENDED_BUDGET: u64 = 5_000;
    let mut budget = EXTENDED_BUDGET;
    let mut extended_attempts = 0u64;
    // After a spent budget: the window of f64 attempts that watches for a stall (its first
    // attempt and flow time), the flow time of the last re-arming, whether re-arming is
    // still allowed, and how often it happened (`Run::extended_rearms`).
    let mut stall_window: Option<(u64, f64)> = None;
    let mut rearmed_at: Option<f64> = None;
    let mut may_rearm = true;
    let mut extended_rearms = 0u64;
    let (mut window_attempts, mut window_fails) = (0u32, 0u32);
    const FALLBACK_WINDOW: u32 = 64;
    const FALLBACK_REJECTS: u32 = 12;
    const CHECK_EVERY: u32 = 25;
    let (mut since_check, mut calm, mut switches) = (0u32, 0u32, 0u64);
    let mut acc = [0u64; 2];
    let mut rej = 0u64;
    // Steps of Shampine's method in which some components follow the chord.
    let mut fast_mode_steps = 0u64;
    // Whether the last attempt left the domain (a non-finite value): a step underflow after
    // it ends the run as non-finite.
    let mut nonfinite_attempt = false;
    // Ends the run with the counters as they stand: `stop!(reason)` at the current state,
    // `stop!(t, x, reason)` at an event's time and state.
    macro_rules! stop {
        ($why:expr) => {
            stop!(t, to_f64(&problem.unpack(&y)), $why)
        };
        ($t:expr, $x:expr, $why:expr) => {{
            let x: Reduced<f64> = $x;
            let summary = tracker.finish(
                $t,
                &x,
                $why,
                acc[0] + acc[1],
                Some(evals + extended_evals),
                Some(rej),
            )?;
            let summary = crate::observe::mark_flow_nonfinite(summary);
            return Ok(Run {
                summary,
                jacobians,
                final_state: x,
                stiff_from,
                steps_by_method: acc,
                switches,
                fallback_from,
                extended_from,
                extended_steps,
                extended_rearms,
                coordinates,
                fast_mode_steps,
                t2_head_entry: tracker.substitution_entry(),
                unresolved: unresolved(tracker.substitution_entry(), &opts.tol),
                atol_head: opts.tol.atol_head,
                matrix_free: mf.is_some(),
                krylov_counts: mf.as_ref().map_or([0; 3], |k| k.counts()),
            });
        }};
    }
    if opts.stop_at_t_end && tracker.time(Event::TEnd).is_some() {
        stop!(0.0, x0f, Termination::TEnd);
    }
    let mut h = initial_step(&y, &f0, opts.tol, opts.horizon);
    let seps = rosenbrock::sqrt_eps::<S>(ctx);
    let tol = opts.tol;
    let scale = move |i: usize| tol.atol_at(i) / tol.rtol;
    let fused = exact.is_some() && opts.jacobian_reuse <= 1 && mf.is_none();
    // `J(y)` into `jac` (and `f(y)` into `f`): one dual-number pass in f64 (its value part
    // is `f(y)` bit for bit), else forward differences from `f0` (`f` is then `f0`, or one
    // evaluation when `f0` is absent).
    macro_rules! jacobian {
        ($y:expr, $f0:expr, $f:expr, $jac:expr) => {{
            jacobians += 1;
            match exact.as_mut() {
                Some(e) => e.eval($y, $f, $jac),
                None => {
                    let f: &mut [S] = $f;
                    match $f0 {
                        Some(f0) => {
                            f.clone_from_slice(f0);
                            Ok(())
                        }
                        None => rhs($y, f),
                    }
                    .and_then(|()| {
                        rosenbrock::jacobian_into(
                            &mut rhs, $y, f, &seps, &scale, $jac, &mut b.yp, &mut b.fp,
                        )
                    })
                }
            }
        }};
    }
    // Whether `b.jac` holds the Jacobian at `y`, and its age in steps (reuse).
    let mut have_jac = false;
    let mut jac_age = 0u32;
    let mut after_reject = false;
    // The last accepted step `(h, err)` of the current method (predictive control).
    let mut last_accepted: Option<(f64, f64)> = None;
    // Rejects the attempt and retries with the step multiplied by `factor`.
    macro_rules! reject {
        ($factor:expr) => {{
            rej += 1;
            h *= $factor;
            after_reject = true;
            continue;
        }};
    }
    loop {
        if clock.until(opts.horizon) <= 0.0 {
            stop!(Termination::Horizon);
        }
        if acc[0] + acc[1] + rej >= opts.max_steps {
            stop!(Termination::StepLimit);
        }
        let remaining = clock.until(opts.horizon);
        let last = h >= remaining;
        if last {
            h = remaining;
        }
        // The double-double clock resolves about 2^-105 tau; a step below 1e-30 tau (about
        // 40 times that) cannot be trusted to advance it (derivations/numerics.md, "Time
        // resolution").
        if h.is_nan() || h <= 1e-30 * t.abs() || h <= 0.0 {
            // Shrunk to nothing by attempts that left the f64 range: the flow is not finite
            // beyond `t` (docs/cli.md, "Errors, limits and non-finite runs").
            if nonfinite_attempt {
                stop!(Termination::NonFinite);
            }
            stop!(Termination::StepUnderflow);
        }
        // One attempt: its error norm; the solution stays in the stepper's work space.
        let attempt: Result<f64> = if !stiff {
            match opts.explicit {
                Explicit::Dop853 => dop853::step(&mut rhs, &y, &f0, h, opts.tol, &mut b.dop853),
                Explicit::Dopri5 => dopri5::step(&mut rhs, &y, &f0, h, opts.tol, &mut b.dopri5),
            }
        } else {
            let j = if have_jac {
                Ok(())
            } else if let Some(k) = mf.as_mut() {
                jacobians += 1;
                k.set_point(&y, &mut b.f_scratch)
            } else {
                jacobian!(&y, Some(&f0[..]), &mut b.f_scratch[..], &mut b.jac[..])
            };
            j.and_then(|()| {
                have_jac = true;
                let tol = opts.tol.scaled(stiff_method.tolerance_factor());
                if let Some(k) = mf.as_mut() {
                    return k.step(&mut rhs, &y, &f0, h, tol, &mut b.rodas5);
                }
                if extended_mode {
                    // Straight to the extended-precision attempt below.
                    return Ok(f64::NAN);
                }
                match stiff_method {
                    Stiff::Ros4 => rosenbrock::step(&mut rhs, &y, &f0, &b.jac, h, tol, &mut b.ros4),
                    Stiff::Rodas5 => rodas5::step(&mut rhs, &y, &f0, &b.jac, h, tol, &mut b.rodas5),
                }
            })
        };
        // Extended precision (derivations/numerics.md, "Integrators", "Extended-precision
        // steps"). In `extended_mode` every Rosenbrock attempt is a Rodas5 step in
        // extended precision. Before it, a window of failures under Shampine's method arms
        // a probe: the next failed `f64` attempt is repeated at the same `h` with the same
        // method in extended precision, and when that is accepted with an error below a
        // quarter of the `f64` one (or the `f64` stages left the domain), `f64` rounding,
        // not the step, was the limit: the run turns to `extended_mode` and retries.
        let mut in_extended = false;
        let spent = extended_attempts >= budget;
        if spent && !extended_mode && may_rearm {
            // A stall of the f64 steps after a spent budget (derivations/numerics.md,
            // "Extended-precision steps", eq. (X1)) arms the probe again with one more
            // budget; not again once a re-armed stint of extended steps did not advance
            // the flow either (then rounding is not what holds the run back).
            if stall_window.is_none() {
                if let Some(t_r) = rearmed_at.take() {
                    may_rearm = !stalled(t_r, t);
                }
            }
            let attempts = acc[0] + acc[1] + rej;
            let (from, t_from) = *stall_window.get_or_insert((attempts, t));
            if may_rearm && attempts - from >= STALL_WINDOW {
                stall_window = None;
                if stalled(t_from, t) {
                    budget += EXTENDED_BUDGET;
                    probe = true;
                    rearmed_at = Some(t);
                    extended_rearms += 1;
                }
            }
        }
        // (Not for the separable flow, whose compact Jacobian the extended steps do not take.)
        let attempt = if stiff
            && have_jac
            && layout.is_none()
            && mf.is_none()
            && (extended_mode || (probe && !accepted(&attempt) && !spent))
        {
            if extended.is_none() {
                extended = S::extended_stepper(config, x0, coordinates, opts.extended_precision);
            }
            match extended.as_mut() {
                Some(x) => {
                    let before = x.evals();
                    if !extended_mode {
                        probe = false;
                        let tol = opts.tol.scaled(stiff_method.tolerance_factor());
                        let probed = x.step(stiff_method, &y, &b.jac, h, tol);
                        extended_mode = match (&attempt, probed) {
                            (Ok(e64), Ok(e)) if e64.is_finite() => e <= 1.0 && 4.0 * e < *e64,
                            (_, Ok(e)) => e <= 1.0,
                            (_, Err(_)) => false,
                        };
                    }
                    let r = if extended_mode {
                        extended_attempts += 1;
                        let tol = opts.tol.scaled(Stiff::Rodas5.tolerance_factor());
                        let r = x.step(Stiff::Rodas5, &y, &b.jac, h, tol);
                        in_extended = matches!(r, Ok(e) if e.is_finite());
                        if extended_attempts >= budget {
                            // Spent: f64 again, without probes unless a stall
                            // re-arms them (eq. (X1), above).
                            extended_mode = false;
                        }
                        r
                    } else {
                        attempt
                    };
                    extended_evals += x.evals() - before;
                    r
                }
                None => {
                    probe = false;
                    attempt
                }
            }
        } else {
            attempt
        };
        // The Rosenbrock method of this attempt (the fallback below may change the next).
        let used = if in_extended {
            Stiff::Rodas5
        } else {
            stiff_method
        };
        let order = if stiff {
            used.estimate_order()
        } else {
            opts.explicit.estimate_order()
        };
        if stiff {
            window_attempts += 1;
            window_fails += u32::from(!accepted(&attempt));
            if window_attempts >= FALLBACK_WINDOW {
                if stiff_method == Stiff::Rodas5 && window_fails >= FALLBACK_REJECTS && mf.is_none()
                {
                    stiff_method = Stiff::Ros4;
                    fallback_from.get_or_insert(t);
                    last_accepted = None;
                } else if window_fails >= FALLBACK_REJECTS && opts.extended && !extended_mode {
                    probe = true;
                }
                window_attempts = 0;
                window_fails = 0;
            }
        }
        let err = match attempt {
            Ok(e) if e.is_finite() => e,
            // The step left the domain (a variance vanished or a value overflowed): retry
            // smaller.
            _ => {
                nonfinite_attempt = true;
                reject!(0.25)
            }
        };
        nonfinite_attempt = false;
        if err > 1.0 {
            if stiff && jac_age > 0 {
                // A rejection with an old Jacobian: refresh it before shrinking further.
                have_jac = false;
                jac_age = 0;
            }
            reject!(step_factor(err, order, true));
        }
        // Accepted. The solution and `f(y1)`: the explicit pairs have it (first same as
        // last); after a Rosenbrock step with the exact Jacobian, one dual pass at `y1`
        // gives `f(y1)` and the next step's Jacobian (into the spare buffer).
        if in_extended {
            if let Some(x) = extended.as_ref() {
                x.y1_into(&mut b.rodas5.y1);
            }
        }
        let y1: &[S] = match (stiff, used, opts.explicit) {
            (false, _, Explicit::Dop853) => &b.dop853.y1,
            (false, _, Explicit::Dopri5) => &b.dopri5.y1,
            (true, Stiff::Rodas5, _) => &b.rodas5.y1,
            (true, Stiff::Ros4, _) => &b.ros4.y1,
        };
        let mut next_jac = false;
        if stiff {
            let f1 = if fused {
                next_jac = true;
                jacobian!(y1, None::<&[S]>, &mut b.f1[..], &mut b.jac_spare[..])
            } else {
                rhs(y1, &mut b.f1)
            };
            if f1.is_err() {
                reject!(0.25);
            }
        }
        // The step's continuous extension (the explicit pairs' own, Rodas5's, or the
        // cubic Hermite one for Shampine's method). DOP853's costs three evaluations, so it
        // is built only when a pending event's margin is >= 0 at one of the samples of the
        // (free) Hermite extension, or when the off-diagonal norm peaks inside the step
        // (its rate turns from positive to non-positive; the maximum is then located on
        // the extension, [`refine_peak`]). "Events" in derivations/numerics.md.
        let f1: &[S] = match (stiff, opts.explicit) {
            (false, Explicit::Dop853) => &b.dop853.f1,
            (false, Explicit::Dopri5) => b.dopri5.f1(),
            (true, _) => &b.f1,
        };
        let peak = problem.offdiag_rate(&y, &f0) > 0.0 && problem.offdiag_rate(y1, f1) <= 0.0;
        let mut scan = true;
        match (stiff, used, opts.explicit) {
            (false, _, Explicit::Dop853) => {
                b.dense.set_hermite(h, &y, &b.dop853.y1, &f0, &b.dop853.f1);
                scan = may_cross(&problem, &mut tracker, &b.dense, &mut sampler);
                if (scan || peak)
                    && dop853::dense(&mut rhs, &y, h, &mut b.dop853, &mut b.dense).is_err()
                {
                    reject!(0.25);
                }
            }
            (false, _, Explicit::Dopri5) => dopri5::dense(&y, h, &mut b.dopri5, &mut b.dense),
            (true, Stiff::Rodas5, _) => match extended.as_mut().filter(|_| in_extended) {
                Some(x) => x.dense_into(h, &mut b.dense),
                None => rodas5::dense(&y, h, &b.rodas5, &mut b.dense),
            },
            (true, Stiff::Ros4, _) => b.dense.set_hermite(h, &y, &b.ros4.y1, &f0, &b.f1),
        }
        // Shampine's method has the cubic Hermite extension through (y0, f0) and (y1, f1).
        // In a stiff step those slopes can carry fast modes that relax inside the step
        // (h |f| of order 1 while y1 - y0 is 1e-13), and the cubic then swings far from the
        // solution. Its defect at the midpoint shows it: there f(y_m) is far from the
        // cubic's own slope. Each component whose defect exceeds `MAX_DEFECT` follows the
        // chord instead (derivations/numerics.md, "Events").
        if stiff && used == Stiff::Ros4 {
            b.dense.eval_into(0.5 * h, &mut b.mid);
            let tol = opts.tol.scaled(used.tolerance_factor());
            if rhs(&b.mid, &mut b.f_scratch).is_err() {
                // f is undefined at the midpoint: a NaN defect puts every component on the
                // chord.
                b.f_scratch.fill(S::from_f64(f64::NAN, ctx));
            }
            let repaired = b
                .dense
                .repair_hermite(&b.mid, &b.f_scratch, tol, MAX_DEFECT);
            fast_mode_steps += u64::from(repaired > 0);
        }
        if peak {
            refine_peak(&problem, &mut tracker, &b.dense, &mut sampler);
        }
        let events = if scan {
            locate(&problem, &mut tracker, &clock, &b.dense, &mut sampler)
        } else {
            Vec::new()
        };
        if in_extended {
            extended_steps += 1;
            extended_from.get_or_insert(t);
        }
        for (te, ev, xe) in events {
            on_sample(te, &xe)?;
            if ev == Event::TEnd && opts.stop_at_t_end {
                acc[usize::from(stiff)] += 1;
                stop!(te, xe, Termination::TEnd);
            }
        }
        acc[usize::from(stiff)] += 1;
        clock.advance(h);
        t = if last { opts.horizon } else { clock.value() };
        match (stiff, used, opts.explicit) {
            (false, _, Explicit::Dop853) => {
                std::mem::swap(&mut y, &mut b.dop853.y1);
                f0.clone_from_slice(&b.dop853.f1);
            }
            (false, _, Explicit::Dopri5) => {
                std::mem::swap(&mut y, &mut b.dopri5.y1);
                f0.clone_from_slice(b.dopri5.f1());
            }
            (true, Stiff::Rodas5, _) => {
                std::mem::swap(&mut y, &mut b.rodas5.y1);
                std::mem::swap(&mut f0, &mut b.f1);
            }
            (true, Stiff::Ros4, _) => {
                std::mem::swap(&mut y, &mut b.ros4.y1);
                std::mem::swap(&mut f0, &mut b.f1);
            }
        }
        // The Jacobian of the step just taken is `b.jac` (`last_jac`); with the fused pass
        // the next state's is in `b.jac_spare`: swap, so that `b.jac` is the current one
        // and `b.jac_spare` the last step's.
        let had_jac = stiff && have_jac;
        if stiff && jac_age + 1 < opts.jacobian_reuse && mf.is_none() {
            jac_age += 1;
        } else {
            jac_age = 0;
            have_jac = false;
        }
        if next_jac {
            std::mem::swap(&mut b.jac, &mut b.jac_spare);
            have_jac = true;
        }
        let last_jac: Option<&[S]> = match (had_jac, next_jac) {
            (false, _) => None,
            (true, true) => Some(&b.jac_spare),
            (true, false) => Some(&b.jac),
        };
        let x_end = sampler.state(&problem, &y);
        tracker.touch(x_end);
        on_sample(t, x_end)?;
        if last {
            stop!(Termination::Horizon);
        }
        if opts.method == Method::Auto {
            // Stiffness switch (derivations/numerics.md, "Stiffness"): estimate the
            // spectral radius rho of the Jacobian; Dormand-Prince is stability-limited when
            // h rho exceeds about 3 (its stability interval on the negative real axis is
            // [-3.3, 0]).
            if !stiff {
                since_check += 1;
                if since_check >= CHECK_EVERY || after_reject {
                    since_check = 0;
                    let turns_stiff = if let Some(k) = mf.as_mut() {
                        // Matrix-free (eq. (K8)): the power iteration on products `J v`.
                        jacobians += 1;
                        k.spectral_radius_capped(&y, 30.0 / h)
                            .is_ok_and(|rho| h * rho > 3.0)
                    } else {
                        let ok = jacobian!(&y, Some(&f0[..]), &mut b.f_scratch[..], &mut b.jac[..])
                            .is_ok();
                        // The bound first (a 9 x 9 sum instead of 24 products): when
                        // `h sqrt(||J||_1 ||J||_inf) <= 3` (with a margin for the rounding
                        // of the estimate) the power iteration cannot report `h rho > 3`.
                        let bounded = h * radius_bound(layout, &b.jac) * (1.0 + 1e-10) <= 3.0;
                        ok && !bounded && h * radius(layout, &b.jac, 30.0 / h) > 3.0
                    };
                    if turns_stiff {
                        // The dense Jacobian at `y` is in `b.jac`; the matrix-free point
                        // is set by the first attempt.
                        have_jac = mf.is_none();
                        jac_age = 0;
                        stiff = true;
                        switches += 1;
                        last_accepted = None;
                        stiff_from.get_or_insert(t);
                        calm = 0;
                    }
                }
            } else if let Some(rho) = match (mf.as_mut(), last_jac) {
                // Checked on every fifth Rosenbrock step: back to Dormand-Prince after four
                // checks in a row with h rho < 1 (matrix-free: at the new state, eq. (K8)).
                (Some(k), _) if acc[1] % 5 == 0 => {
                    jacobians += 1;
                    have_jac = false;
                    Some(
                        k.spectral_radius_capped(&y, 10.0 / h)
                            .unwrap_or(f64::INFINITY),
                    )
                }
                (None, Some(j)) if acc[1] % 5 == 0 => Some(radius(layout, j, 10.0 / h)),
                _ => None,
            } {
                if h * rho < 1.0 {
                    calm += 1;
                    if calm >= 4 {
                        stiff = false;
                        have_jac = false;
                        jac_age = 0;
                        switches += 1;
                        last_accepted = None;
                        since_check = 0;
                    }
                } else {
                    calm = 0;
                }
            }
        }
        // Step control (derivations/numerics.md, "Error control"): the plain factor, or
        // Gustafsson's predictive one when smaller.
        let mut factor = step_factor(err, order, after_reject);
        if let Some((h_prev, err_prev)) = last_accepted {
            factor = factor.min(predictive_factor(err, order, h, h_prev, err_prev));
        }
        last_accepted = Some((h, err.max(1e-2)));
        h *= factor;
        after_reject = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Row-major `n x n` test matrices (seeded): dense normal entries, and the same with a
    /// strongly non-normal upper triangle (entries up to 1e6 beside eigenvalues O(1)).
    fn matrices(n: usize) -> Vec<Vec<f64>> {
        let mut rng = ChaCha8Rng::seed_from_u64(41);
        let mut out = Vec::new();
        for _ in 0..20 {
            let dense: Vec<f64> = (0..n * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let skew: Vec<f64> = (0..n * n)
                .map(|i| {
                    let (r, c) = (i / n, i % n);
                    let v: f64 = rng.random_range(-1.0..1.0);
                    if c > r {
                        v * 1e6
                    } else if c == r {
                        v
                    } else {
                        0.0
                    }
                })
                .collect();
            out.push(dense);
            out.push(skew);
        }
        out
    }

    /// The fixed-size power iteration (`n <= 16`) gives the generic one's result bit for
    /// bit, capped or not.
    #[test]
    fn sized_power_iteration_is_bit_identical_to_the_generic_one() {
        for n in [2, 7, 9, 11, 16] {
            for j in matrices(n) {
                for cap in [f64::INFINITY, 0.5, 3.0] {
                    let generic = power_iteration(&j, n, &mut vec![0.0; n], &mut vec![0.0; n], cap);
                    assert_eq!(spectral_radius_capped(&j, cap).to_bits(), generic.to_bits());
                }
            }
        }
    }

    /// `sqrt(||J||_1 ||J||_inf)` bounds the power-iteration estimate and every eigenvalue
    /// (faer's), and is NaN or infinite when an entry is: the stiffness switch may skip the
    /// power iteration when `h` times the bound is at most 3.
    #[test]
    fn norm_bound_dominates_the_spectral_radius_and_its_estimate() {
        for n in [2, 9, 20] {
            for j in matrices(n) {
                let bound = spectral_norm_bound(&j);
                let estimate = spectral_radius(&j);
                let m = faer::Mat::<f64>::from_fn(n, n, |r, c| j[r * n + c]);
                let rho = m
                    .eigenvalues()
                    .expect("eigenvalues")
                    .iter()
                    .map(|z| z.norm())
                    .fold(0.0, f64::max);
                assert!(estimate <= bound * (1.0 + 1e-12), "{estimate} > {bound}");
                assert!(rho <= bound * (1.0 + 1e-12), "{rho} > {bound}");
            }
        }
        let mut j = vec![1.0; 81];
        j[40] = f64::NAN;
        assert!(spectral_norm_bound(&j).is_nan());
        j[40] = f64::INFINITY;
        assert_eq!(spectral_norm_bound(&j), f64::INFINITY);
    }
}
