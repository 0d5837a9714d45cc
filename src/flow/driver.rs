//! The driver of [`crate::flow::integrate()`] as a struct: one step is a guard
//! ([`Driver::guard`]), an `f64` attempt ([`Driver::attempt`]), perhaps an
//! extended-precision one ([`Driver::extended_attempt`]), the verdict on it
//! ([`Driver::step`]) and, when accepted, the continuous extension, the events, the advance
//! and the switches ([`Driver::accept`]). The decisions on stiffness, the Rodas5 fallback
//! and the extended-precision probe are the policies of [`crate::flow::policy`]
//! (`derivations/numerics.md`, "Integrators", "Stiffness", "Events", "Error control").

use crate::error::Result;
use crate::flow::clock::Clock;
use crate::flow::control::{accepted_factor, initial_step, step_factor, Tolerance};
use crate::flow::dense::Dense;
use crate::flow::events::{locate, may_cross, refine_peak, Sampler};
use crate::flow::extended::ExtendedStep;
use crate::flow::integrate::{
    radius, radius_bound, unresolved, Explicit, Method, Options, Run, Stiff,
};
use crate::flow::jacobian::{ExactJacobian, FlowScalar, MatrixFree};
use crate::flow::observer::{Ending, FlowObserver};
use crate::flow::policy::{ExtendedProbe, FallbackWindow, StiffnessSwitch};
use crate::flow::problem::{to_f64, Coordinates, Problem, Workspace};
use crate::flow::rosenbrock;
use crate::flow::separable::Layout;
use crate::moments::population::Reduced;
use crate::observe::{Event, Termination};
use crate::ode::dop853::{Dop853, DOP853};
use crate::ode::dopri5::DOPRI5;
use crate::ode::explicit::Explicit as ExplicitStep;
use crate::ode::rosenbrock::{RODAS5, ROS4};
use crate::ode::Stepper;
use crate::scalar::Scalar;
use crate::setting::Config;

/// Why a run stops (in place of errors used as control flow; real errors, such as a failing
/// sample callback, still propagate as [`crate::error::Error`]).
#[derive(Clone, Debug, PartialEq)]
pub enum StopReason {
    /// The horizon was reached.
    Horizon,
    /// `t_end` fired and [`Options::stop_at_t_end`] is set.
    TEnd,
    /// [`Options::max_steps`] attempts were spent.
    StepLimit,
    /// The step shrank below the clock's resolution.
    StepUnderflow,
    /// Attempts that left the `f64` range shrank the step to nothing.
    NonFinite,
}

impl StopReason {
    /// The summary's termination.
    pub fn termination(&self) -> Termination {
        match self {
            StopReason::Horizon => Termination::Horizon,
            StopReason::TEnd => Termination::TEnd,
            StopReason::StepLimit => Termination::StepLimit,
            StopReason::StepUnderflow => Termination::StepUnderflow,
            StopReason::NonFinite => Termination::NonFinite,
        }
    }
}

/// A stop: its reason and, when not the current state, the time and state it happened at
/// (an event's).
struct Stop {
    reason: StopReason,
    at: Option<(f64, Reduced<f64>)>,
}

impl From<StopReason> for Stop {
    fn from(reason: StopReason) -> Self {
        Stop { reason, at: None }
    }
}

/// The largest scaled defect of a component ([`Dense::repair_hermite`]) at which it keeps
/// the cubic Hermite extension in a step of Shampine's method. Measured on the benchmark
/// setting's rtol-1e-12 runs of the exact-rational pairs: 1e-5 .. 1e-1 in most steps,
/// 1 .. 1e4 in 3% (`d = 1e4`) and 30% (`d = 1e2`) of them (stiff steps whose slopes
/// carry relaxed fast modes); 1e13 .. 1e33 in the steps of a held-out `m = 4` run whose
/// cubic gave a peak of 7.4e5 where the solution's is 0.365.
const MAX_DEFECT: f64 = 1.0;

/// The explicit pair of [`Options::explicit`]: DOP853 specialised on its constant tableau,
/// or Dormand-Prince's read from its tableau.
enum ExplicitPair<S: Scalar> {
    Dop853(ExplicitStep<S, Dop853>),
    Dopri5(ExplicitStep<S>),
}

/// `$body` on the pair as `$p`, whichever it is.
macro_rules! on_pair {
    ($pair:expr, $p:ident => $body:expr) => {
        match $pair {
            ExplicitPair::Dop853($p) => $body,
            ExplicitPair::Dopri5($p) => $body,
        }
    };
}

impl<S: Scalar> ExplicitPair<S> {
    fn new(explicit: Explicit, n: usize, ctx: S::Ctx) -> Self {
        match explicit {
            Explicit::Dop853 => ExplicitPair::Dop853(ExplicitStep::new(Dop853, n, ctx)),
            Explicit::Dopri5 => ExplicitPair::Dopri5(ExplicitStep::new(DOPRI5, n, ctx)),
        }
    }

    /// The pair as a [`Stepper`].
    fn stepper(&mut self) -> &mut dyn Stepper<S> {
        on_pair!(self, p => p)
    }

    fn y1(&self) -> &[S] {
        on_pair!(self, p => p.y1())
    }

    fn f1(&self) -> &[S] {
        on_pair!(self, p => p.f1())
    }

    fn y1_mut(&mut self) -> &mut Vec<S> {
        on_pair!(self, p => p.y1_mut())
    }

    /// Whether the dense output costs evaluations (DOP853's).
    fn dense_evaluates(&self) -> bool {
        match self {
            ExplicitPair::Dop853(_) => DOP853.dense_evaluates(),
            ExplicitPair::Dopri5(_) => DOPRI5.dense_evaluates(),
        }
    }
}

/// The steppers' work spaces and the driver's buffers, allocated once per run.
struct Buffers<S: Scalar> {
    /// The explicit pair of [`Options::explicit`].
    explicit: ExplicitPair<S>,
    rodas5: rosenbrock::Work<S>,
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
    f_scratch: Vec<S>,
}

impl<S: Scalar> Buffers<S> {
    /// Buffers for states of length `n`, with Jacobians in `layout` (separable flow) or
    /// dense. With `matrix_free` no `n x n` buffer at all (the Rodas5 stages of
    /// [`crate::flow::krylov`]; Shampine's method is then not used).
    fn new(
        explicit: Explicit,
        n: usize,
        ctx: S::Ctx,
        layout: Option<&Layout>,
        matrix_free: bool,
    ) -> Self {
        let z = || vec![S::zero(ctx); n];
        let jac_len = if matrix_free {
            0
        } else {
            layout.map_or(n * n, Layout::len)
        };
        Buffers {
            explicit: ExplicitPair::new(explicit, n, ctx),
            rodas5: if matrix_free {
                rosenbrock::Work::matrix_free(RODAS5, n, ctx)
            } else {
                rosenbrock::Work::with_layout(RODAS5, n, ctx, layout)
            },
            ros4: rosenbrock::Work::with_layout(ROS4, if matrix_free { 0 } else { n }, ctx, layout),
            dense: Dense::new(n, ctx),
            f1: z(),
            mid: z(),
            jac: vec![S::zero(ctx); jac_len],
            jac_spare: vec![S::zero(ctx); jac_len],
            f_scratch: z(),
        }
    }
}

/// The right-hand side with its evaluation count.
struct Evaluator<'p, S: Scalar> {
    problem: &'p Problem<S>,
    ws: Workspace<S>,
    evals: u64,
}

impl<S: Scalar> Evaluator<'_, S> {
    fn eval(&mut self, y: &[S], dy: &mut [S]) -> Result<()> {
        self.evals += 1;
        self.problem.rhs_into(y, &mut self.ws, dy)
    }
}

/// The Jacobian: exact (dual numbers) in `f64`, forward differences otherwise; with the
/// count of Jacobian evaluations (and of the matrix-free points and radius estimates).
struct Jacobians<S: Scalar> {
    exact: Option<Box<dyn ExactJacobian<S>>>,
    count: u64,
    sqrt_eps: S,
    tol: Tolerance,
    /// Work buffers of the forward-difference Jacobian.
    yp: Vec<S>,
    fp: Vec<S>,
}

impl<S: Scalar> Jacobians<S> {
    /// `J(y)` into `jac` and `f(y)` into `f`: one dual-number pass in `f64` (its value part
    /// is `f(y)` bit for bit), else forward differences from `f0` (`f` is then `f0`, or one
    /// evaluation when `f0` is absent).
    fn eval(
        &mut self,
        rhs: &mut Evaluator<'_, S>,
        y: &[S],
        f0: Option<&[S]>,
        f: &mut [S],
        jac: &mut [S],
    ) -> Result<()> {
        self.count += 1;
        if let Some(e) = self.exact.as_mut() {
            return e.eval(y, f, jac);
        }
        match f0 {
            Some(f0) => f.clone_from_slice(f0),
            None => rhs.eval(y, f)?,
        }
        let tol = self.tol;
        let scale = move |i: usize| tol.atol_at(i) / tol.rtol;
        rosenbrock::jacobian_into(
            &mut |y: &[S], dy: &mut [S]| rhs.eval(y, dy),
            y,
            f,
            &self.sqrt_eps,
            &scale,
            jac,
            &mut self.yp,
            &mut self.fp,
        )
    }
}

/// Whether a step attempt's error norm accepts it (finite and at most 1).
fn accepted(attempt: &Result<f64>) -> bool {
    matches!(attempt, Ok(e) if e.is_finite() && *e <= 1.0)
}

/// Counters of the run (reported in [`Run`]).
#[derive(Default)]
struct Counters {
    /// Accepted explicit and Rosenbrock steps.
    acc: [u64; 2],
    rej: u64,
    switches: u64,
    /// Steps of Shampine's method in which some components follow the chord.
    fast_mode_steps: u64,
    stiff_from: Option<f64>,
    fallback_from: Option<f64>,
    extended_from: Option<f64>,
    extended_steps: u64,
    extended_evals: u64,
}

/// What the flow is built from (for the extended-precision stepper, built on first use).
pub(crate) struct Source<'a, S: Scalar> {
    pub(crate) config: &'a Config,
    pub(crate) x0: &'a Reduced<S>,
    pub(crate) coordinates: Coordinates,
}

/// The integration of one flow: the problem, the steppers' state, the policies and the
/// counters.
pub(crate) struct Driver<'a, S: FlowScalar> {
    src: Source<'a, S>,
    opts: &'a Options,
    problem: &'a Problem<S>,
    layout: Option<&'a Layout>,
    observer: &'a mut dyn FlowObserver,
    on_sample: &'a mut dyn FnMut(f64, &Reduced<f64>) -> Result<()>,
    rhs: Evaluator<'a, S>,
    jac: Jacobians<S>,
    /// The matrix-free Rodas5 stages (`derivations/numerics.md`, (K5)-(K8)).
    mf: Option<Box<dyn MatrixFree<S>>>,
    /// Rosenbrock steps in extended precision, built at the first probe.
    extended: Option<Box<dyn ExtendedStep<S>>>,
    /// Whether the Jacobian comes with `f(y1)` after a Rosenbrock step (exact, fresh every
    /// step, dense).
    fused: bool,
    b: Buffers<S>,
    sampler: Sampler<S>,
    y: Vec<S>,
    f0: Vec<S>,
    t: f64,
    clock: Clock,
    h: f64,
    /// Whether this attempt ends at the horizon.
    last: bool,
    stiff: bool,
    /// The Rosenbrock method in use (Rodas5 until the fallback).
    stiff_method: Stiff,
    switch: StiffnessSwitch,
    fallback: FallbackWindow,
    probe: ExtendedProbe,
    c: Counters,
    /// Whether `b.jac` holds the Jacobian at `y`, and its age in steps (reuse).
    have_jac: bool,
    jac_age: u32,
    after_reject: bool,
    /// The last accepted step `(h, err)` of the current method (predictive control).
    last_accepted: Option<(f64, f64)>,
    /// Whether the last attempt left the domain (a non-finite value): a step underflow
    /// after it ends the run as non-finite.
    nonfinite_attempt: bool,
    /// Whether the last accepted step's end was not sampled ([`Options::record`]).
    unsampled: bool,
}

/// Which buffer holds the Jacobian of the step just taken.
#[derive(Clone, Copy)]
enum LastJacobian {
    Current,
    Spare,
}

impl<'a, S: FlowScalar> Driver<'a, S> {
    /// A driver for `problem` (the flow of `src`) with the
    /// options `opts` (tolerance already set for the problem's state vector).
    pub(crate) fn new(
        src: Source<'a, S>,
        opts: &'a Options,
        problem: &'a Problem<S>,
        layout: Option<&'a Layout>,
        exact: Option<Box<dyn ExactJacobian<S>>>,
        observer: &'a mut dyn FlowObserver,
        on_sample: &'a mut dyn FnMut(f64, &Reduced<f64>) -> Result<()>,
    ) -> Self {
        let (config, x0, coordinates) = (src.config, src.x0, src.coordinates);
        let ctx = problem.ctx();
        let n = problem.len();
        let mf = if opts
            .matrix_free
            .unwrap_or_else(|| crate::flow::krylov::default_on(config, problem.neurons()))
            && opts.stiff == Stiff::Rodas5
            && layout.is_none()
        {
            S::matrix_free(config, x0, coordinates)
        } else {
            None
        };
        let fused = exact.is_some() && opts.jacobian_reuse <= 1 && mf.is_none();
        let stiff = opts.method == Method::Rosenbrock;
        Driver {
            src,
            opts,
            problem,
            layout,
            observer,
            on_sample,
            rhs: Evaluator {
                problem,
                ws: problem.workspace(),
                evals: 0,
            },
            jac: Jacobians {
                exact,
                count: 0,
                sqrt_eps: rosenbrock::sqrt_eps::<S>(ctx),
                tol: opts.tol,
                yp: vec![S::zero(ctx); n],
                fp: vec![S::zero(ctx); n],
            },
            fused,
            b: Buffers::new(opts.explicit, n, ctx, layout, mf.is_some()),
            mf,
            extended: None,
            sampler: Sampler::new(problem),
            y: problem.pack(x0),
            f0: vec![S::zero(ctx); n],
            t: 0.0,
            clock: Clock::zero(),
            h: 0.0,
            last: false,
            stiff,
            stiff_method: opts.stiff,
            switch: StiffnessSwitch::default(),
            fallback: FallbackWindow::default(),
            probe: ExtendedProbe::default(),
            c: Counters {
                stiff_from: if stiff { Some(0.0) } else { None },
                ..Counters::default()
            },
            have_jac: false,
            jac_age: 0,
            after_reject: false,
            last_accepted: None,
            nonfinite_attempt: false,
            unsampled: false,
        }
    }

    /// Integrates to the end: the start, then [`Driver::step`] until a stop.
    ///
    /// # Errors
    ///
    /// When `f` is undefined at the initial state, or as the sample callback and the
    /// observer's summary do.
    pub(crate) fn run(mut self) -> Result<Run> {
        let x0f = to_f64(self.src.x0);
        self.observer.observe(0.0, &x0f);
        (self.on_sample)(0.0, &x0f)?;
        // An initial state where the flow is undefined (a zero normalization variance, a
        // non-finite value) is bad input, not a run.
        self.rhs.eval(&self.y, &mut self.f0)?;
        if self.opts.stop_at_t_end && self.observer.time(Event::TEnd).is_some() {
            return self.finish(Stop {
                reason: StopReason::TEnd,
                at: Some((0.0, x0f)),
            });
        }
        self.h = initial_step(&self.y, &self.f0, self.opts.tol, self.opts.horizon);
        loop {
            if let Some(stop) = self.step()? {
                return self.finish(stop);
            }
        }
    }

    /// The run's result at `stop`.
    fn finish(self, stop: Stop) -> Result<Run> {
        // A stop at a located event (or at the start) was sampled there.
        let sampled = stop.at.is_some() || !self.unsampled;
        let (t, x) = match stop.at {
            Some(at) => at,
            None => (self.t, to_f64(&self.problem.unpack(&self.y))),
        };
        if !sampled {
            (self.on_sample)(t, &x)?;
        }
        let c = &self.c;
        let summary = self.observer.finish(Ending {
            tau: t,
            x: &x,
            termination: stop.reason.termination(),
            steps: c.acc[0] + c.acc[1],
            rhs_evals: self.rhs.evals + c.extended_evals,
            rejected_steps: c.rej,
        })?;
        let summary = crate::observe::mark_flow_nonfinite(summary);
        let entry = self.observer.substitution_entry();
        Ok(Run {
            summary,
            jacobians: self.jac.count,
            final_state: x,
            stiff_from: c.stiff_from,
            steps_by_method: c.acc,
            switches: c.switches,
            fallback_from: c.fallback_from,
            extended_from: c.extended_from,
            extended_steps: c.extended_steps,
            extended_rearms: self.probe.rearms(),
            coordinates: self.src.coordinates,
            fast_mode_steps: c.fast_mode_steps,
            t2_head_entry: entry,
            unresolved: unresolved(entry, &self.opts.tol),
            atol_head: self.opts.tol.atol_head,
            matrix_free: self.mf.is_some(),
            krylov_counts: self.mf.as_ref().map_or([0; 3], |k| k.counts()),
        })
    }

    /// Accepted plus rejected steps so far.
    fn attempts(&self) -> u64 {
        self.c.acc[0] + self.c.acc[1] + self.c.rej
    }

    /// Rejects the attempt: the next one with the step multiplied by `factor`.
    fn reject(&mut self, factor: f64) {
        self.c.rej += 1;
        self.h *= factor;
        self.after_reject = true;
    }

    /// One attempted step: accepted, rejected, or the end of the run.
    fn step(&mut self) -> Result<Option<Stop>> {
        if let Some(stop) = self.guard() {
            return Ok(Some(stop));
        }
        let attempt = self.attempt();
        let spent = self.probe.watch(self.attempts(), self.t);
        let (attempt, in_extended) = self.extended_attempt(attempt, spent);
        // The Rosenbrock method of this attempt (the fallback below may change the next).
        let used = if in_extended {
            Stiff::Rodas5
        } else {
            self.stiff_method
        };
        let order = if self.stiff {
            used.estimate_order()
        } else {
            self.opts.explicit.estimate_order()
        };
        if self.stiff && self.fallback.record(accepted(&attempt)) {
            if self.stiff_method == Stiff::Rodas5 && self.mf.is_none() {
                self.stiff_method = Stiff::Ros4;
                self.c.fallback_from.get_or_insert(self.t);
                self.last_accepted = None;
            } else if self.opts.extended && !self.probe.active() {
                self.probe.arm();
            }
        }
        let err = match attempt {
            Ok(e) if e.is_finite() => e,
            // The step left the domain (a variance vanished or a value overflowed): retry
            // smaller.
            _ => {
                self.nonfinite_attempt = true;
                self.reject(0.25);
                return Ok(None);
            }
        };
        self.nonfinite_attempt = false;
        if err > 1.0 {
            if self.stiff && self.jac_age > 0 {
                // A rejection with an old Jacobian: refresh it before shrinking further.
                self.have_jac = false;
                self.jac_age = 0;
            }
            self.reject(step_factor(err, order, true));
            return Ok(None);
        }
        self.accept(err, order, used, in_extended)
    }

    /// Before an attempt: the stops at the horizon and the step limit, the last step cut to
    /// the horizon, and the stop on a step below the clock's resolution.
    fn guard(&mut self) -> Option<Stop> {
        let horizon = self.opts.horizon;
        if self.clock.until(horizon) <= 0.0 {
            return Some(StopReason::Horizon.into());
        }
        if self.attempts() >= self.opts.max_steps {
            return Some(StopReason::StepLimit.into());
        }
        let remaining = self.clock.until(horizon);
        self.last = self.h >= remaining;
        if self.last {
            self.h = remaining;
        }
        // The double-double clock resolves about 2^-105 tau; a step below 1e-30 tau (about
        // 40 times that) cannot be trusted to advance it (derivations/numerics.md, "Time
        // resolution").
        let h = self.h;
        if h.is_nan() || h <= 1e-30 * self.t.abs() || h <= 0.0 {
            // Shrunk to nothing by attempts that left the f64 range: the flow is not finite
            // beyond `t` (docs/cli.md, "Errors, limits and non-finite runs").
            if self.nonfinite_attempt {
                return Some(StopReason::NonFinite.into());
            }
            return Some(StopReason::StepUnderflow.into());
        }
        None
    }

    /// One `f64` attempt: its error norm; the solution stays in the stepper's work space.
    fn attempt(&mut self) -> Result<f64> {
        let (h, tol) = (self.h, self.opts.tol);
        let rhs = &mut self.rhs;
        let f = &mut |y: &[S], dy: &mut [S]| rhs.eval(y, dy);
        if !self.stiff {
            return self
                .b
                .explicit
                .stepper()
                .attempt(f, &self.y, &self.f0, None, h, tol);
        }
        let b = &mut self.b;
        if !self.have_jac {
            if let Some(k) = self.mf.as_mut() {
                self.jac.count += 1;
                k.set_point(&self.y, &mut b.f_scratch)?;
            } else {
                self.jac
                    .eval(rhs, &self.y, Some(&self.f0), &mut b.f_scratch, &mut b.jac)?;
            }
        }
        self.have_jac = true;
        let f = &mut |y: &[S], dy: &mut [S]| rhs.eval(y, dy);
        let tol = tol.scaled(self.stiff_method.tolerance_factor());
        if let Some(k) = self.mf.as_mut() {
            return k.step(f, &self.y, &self.f0, h, tol, &mut b.rodas5);
        }
        if self.probe.active() {
            // Straight to the extended-precision attempt.
            return Ok(f64::NAN);
        }
        match self.stiff_method {
            Stiff::Ros4 => b.ros4.attempt(f, &self.y, &self.f0, Some(&b.jac), h, tol),
            Stiff::Rodas5 => b.rodas5.attempt(f, &self.y, &self.f0, Some(&b.jac), h, tol),
        }
    }

    /// Extended precision (derivations/numerics.md, "Integrators", "Extended-precision
    /// steps"): while the probe is active every Rosenbrock attempt is a Rodas5 step in
    /// extended precision; an armed probe repeats the next failed `f64` attempt at the same
    /// `h` with the same method in extended precision, and turns active when that shows
    /// `f64` rounding was the limit ([`ExtendedProbe::decide`]). Returns the attempt to
    /// judge and whether it is an extended one. (Not for the separable flow, whose compact
    /// Jacobian the extended steps do not take.)
    fn extended_attempt(&mut self, attempt: Result<f64>, spent: bool) -> (Result<f64>, bool) {
        if !(self.stiff
            && self.have_jac
            && self.layout.is_none()
            && self.mf.is_none()
            && self.probe.wants(accepted(&attempt), spent))
        {
            return (attempt, false);
        }
        if self.extended.is_none() {
            let s = &self.src;
            self.extended =
                S::extended_stepper(s.config, s.x0, s.coordinates, self.opts.extended_precision);
        }
        let Some(x) = self.extended.as_mut() else {
            self.probe.disarm();
            return (attempt, false);
        };
        let before = x.evals();
        let h = self.h;
        if !self.probe.active() {
            let tol = self.opts.tol.scaled(self.stiff_method.tolerance_factor());
            let probed = x.step(self.stiff_method, &self.y, &self.b.jac, h, tol);
            self.probe.decide(&attempt, probed);
        }
        let mut in_extended = false;
        let r = if self.probe.active() {
            let tol = self.opts.tol.scaled(Stiff::Rodas5.tolerance_factor());
            let r = x.step(Stiff::Rodas5, &self.y, &self.b.jac, h, tol);
            in_extended = matches!(r, Ok(e) if e.is_finite());
            // A spent budget: f64 again, without probes unless a stall re-arms them.
            self.probe.count_attempt();
            r
        } else {
            attempt
        };
        self.c.extended_evals += x.evals() - before;
        (r, in_extended)
    }

    /// The accepted step of error norm `err` and order `order` (by `used`, in extended
    /// precision when `in_extended`): `f(y1)`, the continuous extension, the events, the
    /// advance, the samples, the stiffness switch and the next step size. Rejects instead
    /// when `f(y1)` or the extension is undefined.
    fn accept(
        &mut self,
        err: f64,
        order: u32,
        used: Stiff,
        in_extended: bool,
    ) -> Result<Option<Stop>> {
        if in_extended {
            if let Some(x) = self.extended.as_ref() {
                x.y1_into(self.b.rodas5.y1_mut());
            }
        }
        let Some(next_jac) = self.end_slope(used) else {
            self.reject(0.25);
            return Ok(None);
        };
        let Some((scan, peak)) = self.extension(used, in_extended) else {
            self.reject(0.25);
            return Ok(None);
        };
        if self.stiff && used == Stiff::Ros4 {
            self.repair_extension(used);
        }
        let d = &mut *self;
        if peak {
            refine_peak(d.problem, d.observer, &d.b.dense, &mut d.sampler);
        }
        let events = if scan {
            locate(d.problem, d.observer, &d.clock, &d.b.dense, &mut d.sampler)
        } else {
            Vec::new()
        };
        if in_extended {
            self.c.extended_steps += 1;
            self.c.extended_from.get_or_insert(self.t);
        }
        let phase = usize::from(self.stiff);
        for (te, ev, xe) in events {
            (self.on_sample)(te, &xe)?;
            if ev == Event::TEnd && self.opts.stop_at_t_end {
                self.c.acc[phase] += 1;
                return Ok(Some(Stop {
                    reason: StopReason::TEnd,
                    at: Some((te, xe)),
                }));
            }
        }
        self.c.acc[phase] += 1;
        self.clock.advance(self.h);
        self.t = if self.last {
            self.opts.horizon
        } else {
            self.clock.value()
        };
        self.take_solution(used);
        let last_jac = self.age_jacobian(next_jac);
        let x_end = self.sampler.state(self.problem, &self.y);
        self.observer.touch(x_end);
        self.unsampled = !(self.last || self.opts.record.due(self.c.acc[0] + self.c.acc[1]));
        if !self.unsampled {
            (self.on_sample)(self.t, x_end)?;
        }
        if self.last {
            return Ok(Some(StopReason::Horizon.into()));
        }
        if self.opts.method == Method::Auto {
            self.switch_integrators(last_jac);
        }
        self.control(err, order);
        Ok(None)
    }

    /// `f(y1)` after an accepted step: the explicit pairs have it (first same as last);
    /// after a Rosenbrock step with the exact Jacobian, one dual pass at `y1` gives `f(y1)`
    /// into `b.f1` and the next step's Jacobian into `b.jac_spare` (returns whether it did).
    /// `None`: `f` is undefined at `y1`.
    fn end_slope(&mut self, used: Stiff) -> Option<bool> {
        if !self.stiff {
            return Some(false);
        }
        let b = &mut self.b;
        let y1: &[S] = match used {
            Stiff::Rodas5 => b.rodas5.solution(),
            Stiff::Ros4 => b.ros4.solution(),
        };
        let f1 = if self.fused {
            self.jac
                .eval(&mut self.rhs, y1, None, &mut b.f1, &mut b.jac_spare)
        } else {
            self.rhs.eval(y1, &mut b.f1)
        };
        f1.ok().map(|()| self.fused)
    }

    /// The step's continuous extension into `b.dense` (the explicit pairs' own, Rodas5's,
    /// or the cubic Hermite one for Shampine's method). DOP853's costs three evaluations,
    /// so it is built only when a pending event's margin is >= 0 at one of the samples of
    /// the (free) Hermite extension, or when the off-diagonal norm peaks inside the step
    /// (its rate turns from positive to non-positive; the maximum is then located on the
    /// extension, [`refine_peak`]). "Events" in derivations/numerics.md. Returns whether to
    /// scan the step for events and whether it holds a peak; `None`: DOP853's extension is
    /// undefined.
    fn extension(&mut self, used: Stiff, in_extended: bool) -> Option<(bool, bool)> {
        let (h, y, f0) = (self.h, &self.y, &self.f0);
        let b = &mut self.b;
        let (y1, f1): (&[S], &[S]) = match (self.stiff, used) {
            (false, _) => (b.explicit.y1(), b.explicit.f1()),
            (true, Stiff::Rodas5) => (b.rodas5.solution(), &b.f1),
            (true, Stiff::Ros4) => (b.ros4.solution(), &b.f1),
        };
        let problem = self.problem;
        let peak = problem.offdiag_rate(y, f0) > 0.0 && problem.offdiag_rate(y1, f1) <= 0.0;
        let mut scan = true;
        let rhs = &mut self.rhs;
        let f = &mut |y: &[S], dy: &mut [S]| rhs.eval(y, dy);
        match (self.stiff, used) {
            (false, _) if b.explicit.dense_evaluates() => {
                let pair = &mut b.explicit;
                b.dense.set_hermite(h, y, pair.y1(), f0, pair.f1());
                scan = may_cross(problem, self.observer, &b.dense, &mut self.sampler);
                if (scan || peak)
                    && pair
                        .stepper()
                        .dense_output(f, y, f0, h, &mut b.dense)
                        .is_err()
                {
                    return None;
                }
            }
            // Dormand-Prince's extension takes no evaluation and cannot fail.
            (false, _) => b
                .explicit
                .stepper()
                .dense_output(f, y, f0, h, &mut b.dense)
                .ok()?,
            (true, Stiff::Rodas5) => match self.extended.as_mut().filter(|_| in_extended) {
                Some(x) => x.dense_into(h, &mut b.dense),
                None => b.rodas5.dense_output(f, y, f0, h, &mut b.dense).ok()?,
            },
            (true, Stiff::Ros4) => b.dense.set_hermite(h, y, b.ros4.solution(), f0, &b.f1),
        }
        Some((scan, peak))
    }

    /// Shampine's method has the cubic Hermite extension through (y0, f0) and (y1, f1).
    /// In a stiff step those slopes can carry fast modes that relax inside the step
    /// (h |f| of order 1 while y1 - y0 is 1e-13), and the cubic then swings far from the
    /// solution. Its defect at the midpoint shows it: there f(y_m) is far from the
    /// cubic's own slope. Each component whose defect exceeds `MAX_DEFECT` follows the
    /// chord instead (derivations/numerics.md, "Events").
    fn repair_extension(&mut self, used: Stiff) {
        let b = &mut self.b;
        b.dense.eval_into(0.5 * self.h, &mut b.mid);
        let tol = self.opts.tol.scaled(used.tolerance_factor());
        if self.rhs.eval(&b.mid, &mut b.f_scratch).is_err() {
            // f is undefined at the midpoint: a NaN defect puts every component on the
            // chord.
            b.f_scratch.fill(S::from_f64(f64::NAN, self.problem.ctx()));
        }
        let repaired = b
            .dense
            .repair_hermite(&b.mid, &b.f_scratch, tol, MAX_DEFECT);
        self.c.fast_mode_steps += u64::from(repaired > 0);
    }

    /// The accepted solution and its slope become the current state.
    fn take_solution(&mut self, used: Stiff) {
        let b = &mut self.b;
        match (self.stiff, used) {
            (false, _) => {
                std::mem::swap(&mut self.y, b.explicit.y1_mut());
                self.f0.clone_from_slice(b.explicit.f1());
            }
            (true, Stiff::Rodas5) => {
                std::mem::swap(&mut self.y, b.rodas5.y1_mut());
                std::mem::swap(&mut self.f0, &mut b.f1);
            }
            (true, Stiff::Ros4) => {
                std::mem::swap(&mut self.y, b.ros4.y1_mut());
                std::mem::swap(&mut self.f0, &mut b.f1);
            }
        }
    }

    /// The Jacobian's age after an accepted step (`next_jac`: the next state's is in
    /// `b.jac_spare`). The Jacobian of the step just taken is `b.jac`; with the fused pass
    /// the buffers swap, so that `b.jac` is the current one and `b.jac_spare` the last
    /// step's. Returns where the last step's Jacobian is (`None`: it had none).
    fn age_jacobian(&mut self, next_jac: bool) -> Option<LastJacobian> {
        let had_jac = self.stiff && self.have_jac;
        if self.stiff && self.jac_age + 1 < self.opts.jacobian_reuse && self.mf.is_none() {
            self.jac_age += 1;
        } else {
            self.jac_age = 0;
            self.have_jac = false;
        }
        if next_jac {
            std::mem::swap(&mut self.b.jac, &mut self.b.jac_spare);
            self.have_jac = true;
        }
        match (had_jac, next_jac) {
            (false, _) => None,
            (true, true) => Some(LastJacobian::Spare),
            (true, false) => Some(LastJacobian::Current),
        }
    }

    /// The stiffness switch of [`Method::Auto`] ([`StiffnessSwitch`],
    /// derivations/numerics.md, "Stiffness"): estimates the spectral radius `rho` of the
    /// Jacobian when a check is due.
    fn switch_integrators(&mut self, last_jac: Option<LastJacobian>) {
        let h = self.h;
        if !self.stiff {
            if self.switch.check_due(self.after_reject) && self.turns_stiff() {
                // The dense Jacobian at `y` is in `b.jac`; the matrix-free point is set
                // by the first attempt.
                self.have_jac = self.mf.is_none();
                self.jac_age = 0;
                self.stiff = true;
                self.c.switches += 1;
                self.last_accepted = None;
                self.c.stiff_from.get_or_insert(self.t);
                self.switch.entered_stiff();
            }
            return;
        }
        if !StiffnessSwitch::calm_check_due(self.c.acc[1]) {
            return;
        }
        // Matrix-free: at the new state (eq. (K8)).
        let rho = match (self.mf.as_mut(), last_jac) {
            (Some(k), _) => {
                self.jac.count += 1;
                self.have_jac = false;
                k.spectral_radius_capped(&self.y, 10.0 / h)
                    .unwrap_or(f64::INFINITY)
            }
            (None, Some(LastJacobian::Current)) => radius(self.layout, &self.b.jac, 10.0 / h),
            (None, Some(LastJacobian::Spare)) => radius(self.layout, &self.b.jac_spare, 10.0 / h),
            (None, None) => return,
        };
        if self.switch.calm_check(h, rho) {
            self.stiff = false;
            self.have_jac = false;
            self.jac_age = 0;
            self.c.switches += 1;
            self.last_accepted = None;
        }
    }

    /// Whether the flow is stiff for the explicit pair at `y` (`h rho > 3`).
    fn turns_stiff(&mut self) -> bool {
        let h = self.h;
        if let Some(k) = self.mf.as_mut() {
            // Matrix-free (eq. (K8)): the power iteration on products `J v`.
            self.jac.count += 1;
            return k
                .spectral_radius_capped(&self.y, 30.0 / h)
                .is_ok_and(|rho| StiffnessSwitch::turns_stiff(h, rho));
        }
        let b = &mut self.b;
        let ok = self
            .jac
            .eval(
                &mut self.rhs,
                &self.y,
                Some(&self.f0),
                &mut b.f_scratch,
                &mut b.jac,
            )
            .is_ok();
        // The bound first (a 9 x 9 sum instead of 24 products): when
        // `h sqrt(||J||_1 ||J||_inf) <= 3` (with a margin for the rounding of the estimate)
        // the power iteration cannot report `h rho > 3`.
        let bounded =
            h * radius_bound(self.layout, &b.jac) * (1.0 + 1e-10) <= StiffnessSwitch::STIFF_ABOVE;
        ok && !bounded && StiffnessSwitch::turns_stiff(h, radius(self.layout, &b.jac, 30.0 / h))
    }

    /// Step control (derivations/numerics.md, "Error control"): the plain factor, or
    /// Gustafsson's predictive one when smaller.
    fn control(&mut self, err: f64, order: u32) {
        let h = self.h;
        self.h *= accepted_factor(err, order, self.after_reject, h, &mut self.last_accepted);
        self.after_reject = false;
    }
}
