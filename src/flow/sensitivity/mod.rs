//! Forward sensitivities of the flow, its event times and its final quantities to the
//! parameters (`derivations/sensitivities.md`, eqs. (Y1)-(Y13)).
//!
//! The augmented system `(y, S_1..S_k)`, `S_i = dy/dtheta_i`, `S_i' = J S_i + dF/dtheta_i`
//! ([`augmented`]), is integrated by DOP853 while the flow is not stiff and by Rodas5, with
//! its block lower-triangular Jacobian factored once per step at the size of `y`, once it is
//! (eqs. (Y5), (Y18)); the steps are controlled by the state's error (eq. (Y4); the
//! sensitivities in the norm too on request, then by Rodas5 throughout). Each event is located on the augmented run's own dense output, and its
//! time's derivative follows from the implicit function theorem (eq. (Y10)); `loss_final`,
//! `corr_final`, `offdiag_peak` and the peak's time follow (eqs. (Y11)-(Y13)).
//!
//! - [`tangent`]: forward-mode tangents over any scalar;
//! - [`params`]: the parameters and how they move the flow's inputs;
//! - [`augmented`]: the augmented right-hand side and Jacobian blocks;
//! - [`derivatives`]: events, the implicit function theorem, the final quantities.

pub(crate) mod augmented;
pub mod derivatives;
pub mod params;
pub mod tangent;

use crate::error::{Error, Result};
use crate::flow::control::{accepted_factor, error_norm, initial_step, step_factor, Tolerance};
use crate::flow::dense::Dense;
use crate::flow::integrate::radius;
use crate::flow::integrate::Options;
use crate::flow::linear::ScaledLu;
use crate::flow::policy::StiffnessSwitch;
use crate::flow::problem::{Coordinates, Problem};
use crate::flow::sensitivity::augmented::unseeded;
use crate::flow::sensitivity::augmented::{values, Augmented};
use crate::flow::sensitivity::derivatives::{event_value, EventLog, Peak};
use crate::moments::population::Reduced;
use crate::observe::Event;
use crate::ode::clock::Clock;
use crate::ode::dop853::Dop853;
use crate::ode::explicit::Explicit;
use crate::ode::rosenbrock::{Rosenbrock, RODAS5};
use crate::ode::Stepper;
use crate::setting::Config;
pub use params::{Base, Inputs, Parameter};

/// Options of a sensitivity run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SensitivityOptions {
    /// The local error tolerance (the Rodas5 steps run at a tenth of it, as in the plain
    /// flow, [`crate::flow::Stiff::tolerance_factor`]).
    pub tol: Tolerance,
    /// End of flow time.
    pub horizon: f64,
    /// Stop at `t_end`.
    pub stop_at_t_end: bool,
    /// Step budget (accepted plus rejected).
    pub max_steps: u64,
    /// Whether the sensitivities are in the error norm (eq. (Y4); default `false`: the state
    /// alone controls the steps, and DOP853 takes the non-stiff phase, eq. (Y18); `true`:
    /// every block in the norm, and Rodas5 throughout).
    pub in_norm: bool,
    /// The coordinates (`None`: decay when every `G_jj > 0`, as the plain flow).
    pub coordinates: Option<Coordinates>,
    /// Whether the sensitivities are re-anchored in time after each step (eq. (Y14);
    /// default `true`; `false` integrates `S` itself).
    pub reanchor: bool,
    /// Whether DOP853 takes the non-stiff phase (eq. (Y18); default `true`; `false`: Rodas5
    /// throughout). Only without `in_norm`: with it the run is Rodas5 throughout.
    pub explicit: bool,
}

impl SensitivityOptions {
    /// Whether DOP853 takes the non-stiff phase (eq. (Y18)): `explicit` without `in_norm`.
    pub fn explicit_phase(&self) -> bool {
        self.explicit && !self.in_norm
    }

    /// The options of a plain run's [`Options`].
    pub fn from_options(o: &Options) -> Self {
        SensitivityOptions {
            tol: o.tol,
            horizon: o.horizon,
            stop_at_t_end: o.stop_at_t_end,
            max_steps: o.max_steps,
            in_norm: false,
            coordinates: o.coordinates,
            reanchor: true,
            explicit: true,
        }
    }
}

/// The derivatives of one quantity with respect to each parameter (`None`: the quantity
/// is undefined, e.g. an event that does not happen).
pub type Row = Option<Vec<f64>>;

/// The result of [`sensitivities`].
#[derive(Clone, Debug)]
pub struct Sensitivities {
    /// The parameters, in order.
    pub parameters: Vec<Parameter>,
    /// The event times `t1, t2, t3, t_end` of the augmented run.
    pub event_times: [Option<f64>; 4],
    /// `d t_e / d theta` (eq. (Y10)).
    pub events: [Row; 4],
    /// `loss_final` and its derivatives (eq. (Y11)).
    pub loss_final: (f64, Vec<f64>),
    /// `corr_final` and its derivatives (eq. (Y11)); `None` for `m = 1`.
    pub corr_final: Option<(f64, Vec<f64>)>,
    /// `offdiag_peak` and its derivatives (eq. (Y12)); `None` without an interior peak.
    pub offdiag_peak: Option<(f64, Vec<f64>)>,
    /// The time of the peak and its derivatives (eq. (Y13)).
    pub peak_time: Option<(f64, Vec<f64>)>,
    /// The end of the run.
    pub tau_final: f64,
    /// Accepted and rejected steps.
    pub steps: [u64; 2],
    /// Augmented right-hand-side evaluations and Jacobian passes.
    pub evals: [u64; 2],
    /// The flow time of the first switch to Rodas5 (eq. (Y18); `Some(0)` when it ran
    /// throughout, `None` when the flow never turned stiff).
    pub stiff_from: Option<f64>,
    /// Accepted DOP853 and Rodas5 steps.
    pub steps_by_method: [u64; 2],
}

impl Sensitivities {
    /// `(name, value, derivatives)` of each quantity, in the order of [`Sensitivities::to_json`].
    pub fn rows(&self) -> Vec<(&'static str, Option<f64>, Row)> {
        let mut v: Vec<(&'static str, Option<f64>, Row)> = Event::ALL
            .iter()
            .zip(self.event_times.iter().zip(&self.events))
            .map(|(e, (t, r))| (e.name(), *t, r.clone()))
            .collect();
        let pair = |p: &Option<(f64, Vec<f64>)>| {
            (p.as_ref().map(|c| c.0), p.as_ref().map(|c| c.1.clone()))
        };
        v.push((
            "loss_final",
            Some(self.loss_final.0),
            Some(self.loss_final.1.clone()),
        ));
        let (a, b) = pair(&self.corr_final);
        v.push(("corr_final", a, b));
        let (a, b) = pair(&self.offdiag_peak);
        v.push(("offdiag_peak", a, b));
        let (a, b) = pair(&self.peak_time);
        v.push(("t_peak", a, b));
        v
    }

    /// The `sensitivities` JSON object of `predhead flow --sensitivities`: each quantity
    /// (`t1`, `t2`, `t3`, `t_end`, `loss_final`, `corr_final`, `offdiag_peak`, `t_peak`)
    /// maps each parameter name to its derivative, or is `null`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut o = serde_json::Map::new();
        for (name, _, r) in self.rows() {
            let v = match r {
                None => serde_json::Value::Null,
                Some(v) => serde_json::Value::Object(
                    self.parameters
                        .iter()
                        .zip(v)
                        .map(|(p, x)| (p.name(), json_number(x)))
                        .collect(),
                ),
            };
            o.insert(name.to_string(), v);
        }
        serde_json::Value::Object(o)
    }
}

/// A finite number, or null.
fn json_number(x: f64) -> serde_json::Value {
    serde_json::Number::from_f64(x).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// The sensitivities of the flow of `config` from `x0` to `params`
/// (`derivations/sensitivities.md`). `seeded`: `x0` is [`crate::init::reduced`] at the
/// configuration's `d` (the `ln d` parameters need it).
///
/// # Examples
///
/// The derivative of `t1` in `ln d` at `d = 100` is close to 2 t1 (Lemma 5.1):
///
/// ```
/// use predhead::config::parse_config;
/// use predhead::flow::sensitivity::{sensitivities, Parameter, SensitivityOptions};
/// use predhead::flow::Options;
/// let config = parse_config(
///     "[setting]\ndim = 100\npatches = 8\nfeature_patches = 2\nalpha = [2.0, 1.0]\n\
///      noise_std = 1.0\nneurons = 2\n[model]\nhead = \"identity-offdiag\"\n\
///      normalization = \"batchnorm\"\nstop_gradient = true\n\
///      [training]\nlr = 1e-3\nlr_head = 2e-4\n",
/// )?;
/// let x0 = predhead::init::reduced(&config.setting, 0)?;
/// let mut opts = SensitivityOptions::from_options(&Options::new(&config));
/// opts.stop_at_t_end = true;
/// let s = sensitivities(&config, &x0, true, &[Parameter::LnD, Parameter::Alpha1], &opts)?;
/// let t1 = s.event_times[0].unwrap();
/// let exponent = s.events[0].as_ref().unwrap()[0] / t1;
/// assert!(exponent > 1.5 && exponent < 2.5, "{exponent}");
/// // A stronger feature shortens Phase I.
/// assert!(s.events[0].as_ref().unwrap()[1] < 0.0);
/// # Ok::<(), predhead::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::Invalid`] on `sensitivities` for a parameter that does not apply (see
/// [`Base::check`]) or more than 24 of them; the errors of the flow's right-hand side;
/// [`Error::Numerical`] when the step budget is spent or the step underflows.
pub fn sensitivities(
    config: &Config,
    x0: &Reduced<f64>,
    seeded: bool,
    params: &[Parameter],
    opts: &SensitivityOptions,
) -> Result<Sensitivities> {
    let base = Base::new(config, x0, seeded);
    base.check(params)?;
    let dirs = params
        .iter()
        .map(|&p| base.direction(p))
        .collect::<Result<Vec<_>>>()?;
    let mut s = run_at(config, &base.inputs, &dirs, opts, None)?;
    s.parameters = params.to_vec();
    Ok(s)
}

/// The augmented run at `inputs` with tangent directions `dirs` (no direction: the plain
/// flow through the same integrator, for the finite-difference checks). `drop` is the
/// falsifier's hook ([`params`]): one term of `dF/dtheta` set to zero.
///
/// # Errors
///
/// As [`sensitivities`].
pub fn run_at(
    config: &Config,
    inputs: &Inputs,
    dirs: &[Inputs],
    opts: &SensitivityOptions,
    drop: Option<usize>,
) -> Result<Sensitivities> {
    if dirs.len() > MAX_PARAMETERS {
        return Err(Error::invalid(
            "sensitivities",
            format!("at most {MAX_PARAMETERS} parameters, got {}", dirs.len()),
        ));
    }
    run_k::<MAX_PARAMETERS>(config, inputs, dirs, opts, drop)
}

/// The scaled error norm of the augmented estimate `e` (eq. (Y4)): the root mean square
/// of the blocks' norms under the state's tolerance (the sensitivities' blocks only when
/// `in_norm`).
fn augmented_norm(
    e: &[f64],
    y0: &[f64],
    y1: &[f64],
    n: usize,
    tol: Tolerance,
    in_norm: bool,
) -> f64 {
    let blocks = if in_norm { e.len() / n } else { 1 };
    let mut acc = 0.0;
    for b in 0..blocks {
        let r = b * n..(b + 1) * n;
        let x = error_norm(&e[r.clone()], &y0[r.clone()], &y1[r], tol);
        acc += x * x;
    }
    (acc / blocks as f64).sqrt()
}

/// Newton iterations of [`Run::refine`] (eq. (Y15)): the root on the continuous extension
/// is within the extension's error of the steps' root, so two or three suffice; the
/// iteration stops earlier when it no longer moves.
const REFINE_ITERATIONS: usize = 4;

/// The most parameters of one run (the tangent width is 16: one instantiation of
/// the right-hand side, to keep the compile time down).
pub const MAX_PARAMETERS: usize = 16;

/// The Rodas5 step on the augmented system, its stages solved by [`Stage`].
type Step = Rosenbrock<f64, ()>;

/// The DOP853 step on the augmented system in the non-stiff phase (eq. (Y18)), its error
/// norm on the state alone.
type ExplicitStep = Explicit<f64, Dop853>;

/// The order of Rodas5's error estimate, for the step-size control.
const RODAS5_ESTIMATE_ORDER: u32 = 4;

/// Evaluations of a DOP853 step (its 12 stages, the last one `f(y1)`).
const DOP853_EVALS: u64 = 12;

/// The stage solver of one Rodas5 attempt on the augmented system (eq. (Y5)): the LU of
/// `I/(gamma h) - J` at the state's size (factored by the caller), the blocks `H_i`, a
/// buffer.
struct Stage<'a> {
    lu: &'a ScaledLu<f64>,
    hb: &'a [f64],
    tmp: &'a mut [f64],
    n: usize,
    k: usize,
}

impl Stage<'_> {
    /// `g = A_aug^(-1) w` by block forward substitution: `g_y = A^-1 w_y`,
    /// `g_i = A^-1 (w_i + H_i g_y)`.
    fn solve(&mut self, w: &[f64], g: &mut [f64]) {
        let (n, lu) = (self.n, self.lu);
        lu.solve_into(&w[..n], &mut g[..n]);
        let (gy, gs) = g.split_at_mut(n);
        for p in 0..self.k {
            let hp = &self.hb[p * n * n..(p + 1) * n * n];
            for (i, ti) in self.tmp.iter_mut().enumerate() {
                let row = &hp[i * n..(i + 1) * n];
                *ti = w[n + p * n + i] + row.iter().zip(&*gy).map(|(a, b)| a * b).sum::<f64>();
            }
            lu.solve_into(self.tmp, &mut gs[p * n..(p + 1) * n]);
        }
    }
}

/// The Jacobian blocks at a step's start and the factored stage matrix.
struct Blocks {
    jac: Vec<f64>,
    hb: Vec<f64>,
    lu: ScaledLu<f64>,
    tmp: Vec<f64>,
    fy: Vec<f64>,
    /// The step size the LU is factored for (`NaN`: none).
    h: f64,
}

impl Blocks {
    fn new(n: usize, k: usize) -> Self {
        Blocks {
            jac: vec![0.0; n * n],
            hb: vec![0.0; k * n * n],
            lu: ScaledLu::<f64>::with_size(n, ()),
            tmp: vec![0.0; n],
            fy: vec![0.0; n],
            h: f64::NAN,
        }
    }

    /// The blocks `J`, `H_i` at `ya` (eq. (Y5)).
    fn at<const K: usize>(&mut self, aug: &mut Augmented<K>, ya: &[f64]) -> Result<()> {
        self.h = f64::NAN;
        aug.jacobian(ya, &mut self.fy, &mut self.jac, &mut self.hb)
    }

    /// One Rodas5 attempt of size `h` from `ya` (with `f0 = F(ya)`, the blocks at `ya`)
    /// into `step`.
    fn attempt<const K: usize>(
        &mut self,
        aug: &mut Augmented<K>,
        ya: &[f64],
        f0: &[f64],
        h: f64,
        tol: Tolerance,
        step: &mut Step,
    ) -> Result<()> {
        let (n, k) = (aug.n, aug.k);
        if self.h.to_bits() != h.to_bits() {
            let shift = step.shift(h, ());
            self.h = f64::NAN;
            self.lu.factor(&self.jac, &shift, &ya[..n], tol)?;
            self.h = h;
        }
        let mut stage = Stage {
            lu: &self.lu,
            hb: &self.hb,
            tmp: &mut self.tmp,
            n,
            k,
        };
        let mut solve = |w: &[f64], g: &mut [f64]| {
            stage.solve(w, g);
            Ok(())
        };
        let mut rhs = |y: &[f64], dy: &mut [f64]| aug.rhs(y, dy);
        step.stages_with(&mut rhs, ya, f0, h, tol, &mut solve)?;
        Ok(())
    }
}

/// The state of an augmented run (one per [`run_k`]).
struct Run<'a, const K: usize> {
    aug: Augmented<K>,
    plain: Problem<f64>,
    blocks: Blocks,
    step: Step,
    exact: Step,
    /// DOP853 on the augmented system, and its twin for the steps of exact length.
    explicit: ExplicitStep,
    exact_explicit: ExplicitStep,
    /// Whether the run is in its stiff phase (Rodas5; always when `in_norm`).
    stiff: bool,
    /// The plain flow's switch between the two (eq. (Y18)).
    switch: StiffnessSwitch,
    /// The tolerance of the explicit steps (the Rodas5 steps run at a tenth of it).
    tol_explicit: Tolerance,
    dense: Dense<f64>,
    log: EventLog,
    peak: Peak,
    opts: &'a SensitivityOptions,
    tol: Tolerance,
    ya: Vec<f64>,
    f0: Vec<f64>,
    /// Flow time, accumulated in double-double (`derivations/numerics.md`, "Time
    /// resolution"); `t` is its value rounded to `f64`.
    clock: Clock,
    t: f64,
    h: f64,
    /// The time shifts `sigma_i` of the sensitivities (eq. (Y14)): `S_i = S~_i + F sigma_i`
    /// with `S~_i` the sensitivity part of `ya`.
    shift: Vec<f64>,
    /// Whether the sensitivities are re-anchored after each step (eq. (Y14)).
    reanchor: bool,
    /// Accepted, rejected steps; right-hand-side evaluations, Jacobian passes.
    counts: [u64; 4],
    /// Accepted Rodas5 steps, and the time of the first switch to them.
    stiff_steps: u64,
    stiff_from: Option<f64>,
    /// The last accepted step of the current method and its error norm (for
    /// [`Run::control`]).
    last_accepted: Option<(f64, f64)>,
    /// Whether `blocks` hold the Jacobian at the current state (computed by the switch).
    blocks_fresh: bool,
}

impl<'a, const K: usize> Run<'a, K> {
    /// The run at `inputs` with directions `dirs` from `tau = 0` (eq. (Y3)).
    fn new(
        config: &Config,
        inputs: &Inputs,
        dirs: &[Inputs],
        opts: &'a SensitivityOptions,
        drop: Option<usize>,
    ) -> Result<Self> {
        let coordinates = opts.coordinates.unwrap_or_else(|| {
            let x = &inputs.x0;
            if (0..x.neurons()).all(|j| *x.gram.at(j, j) > 0.0) {
                Coordinates::Decay
            } else {
                Coordinates::Plain
            }
        });
        let mut aug = Augmented::<K>::new(config, inputs, dirs, coordinates, drop);
        let (n, k, na) = (aug.n, aug.k, aug.len());
        let mut plain = Problem::with_coordinates(config, &inputs.x0, coordinates, ());
        plain.constants = values(aug.constants());
        plain.head_ratio = aug.problem.head_ratio.v;
        plain.set_separable(false);
        // (Y3): the initial augmented state, packed in tangent arithmetic.
        let x0t = params::seeded_state::<f64, K>(inputs, dirs, ());
        let mut ya = vec![0.0; na];
        for (i, t) in aug.problem.pack(&x0t).iter().enumerate() {
            ya[i] = t.v;
            for p in 0..k {
                ya[n + p * n + i] = t.d[p];
            }
        }
        let tol_explicit = plain.tolerance(opts.tol);
        let tol = tol_explicit.scaled(crate::flow::Stiff::Rodas5.tolerance_factor());
        let explicit_phase = opts.explicit_phase();
        let mut f0 = vec![0.0; na];
        aug.rhs(&ya, &mut f0)?;
        let mut log = EventLog::new(config, &plain);
        log.start(&plain, &ya[..n])?;
        Ok(Run {
            blocks: Blocks::new(n, k),
            step: Step::with_solver(RODAS5, na, (), ()),
            exact: Step::with_solver(RODAS5, na, (), ()),
            explicit: ExplicitStep::new(Dop853, na, ()).measuring(n),
            exact_explicit: ExplicitStep::new(Dop853, na, ()).measuring(n),
            stiff: !explicit_phase,
            switch: StiffnessSwitch::default(),
            tol_explicit,
            dense: Dense::<f64>::new(na, ()),
            log,
            peak: Peak::default(),
            h: initial_step(
                &ya[..n],
                &f0[..n],
                if explicit_phase { tol_explicit } else { tol },
                opts.horizon,
            ),
            clock: Clock::zero(),
            t: 0.0,
            opts,
            tol,
            ya,
            f0,
            shift: vec![0.0; k],
            reanchor: opts.reanchor,
            aug,
            plain,
            counts: [0, 0, 1, 0],
            stiff_steps: 0,
            stiff_from: (!explicit_phase).then_some(0.0),
            last_accepted: None,
            blocks_fresh: false,
        })
    }

    /// Attempts steps from `t` until one is accepted (its solution in `self.step` or
    /// `self.explicit`, its continuous extension in `self.dense`); returns its error norm
    /// and whether a rejection preceded it. A DOP853 step whose extension leaves the flow's
    /// domain is rejected, as in the plain flow.
    fn accept(&mut self) -> Result<(f64, bool)> {
        if self.stiff && !self.blocks_fresh {
            self.blocks.at(&mut self.aug, &self.ya)?;
            self.counts[3] += 1;
        }
        self.blocks_fresh = false;
        let mut after_reject = false;
        loop {
            if self.counts[0] + self.counts[1] >= self.opts.max_steps {
                return Err(Error::numerical(
                    "sensitivities",
                    format!(
                        "step budget {} spent at tau = {:e}",
                        self.opts.max_steps, self.t
                    ),
                ));
            }
            self.h = self.h.min(self.clock.until(self.opts.horizon));
            // The plain flow's threshold: the double-double clock resolves about 2^-105 tau
            // (`derivations/numerics.md`, "Time resolution").
            if self.h.is_nan() || self.h <= 1e-30 * self.t.abs() || self.h <= 0.0 {
                return Err(Error::numerical(
                    "sensitivities",
                    format!("step underflow at tau = {:e}", self.t),
                ));
            }
            let mut err = self.attempt();
            if err <= 1.0 {
                if self.dense_output(self.h).is_ok() {
                    return Ok((err, after_reject));
                }
                err = f64::INFINITY;
            }
            self.counts[1] += 1;
            self.h *= if err.is_finite() {
                step_factor(err, self.estimate_order(), true)
            } else {
                0.25
            };
            after_reject = true;
        }
    }

    /// The next step size after an accepted step of size `h` with error norm `err`: the
    /// plain flow's control, the smaller of the plain factor and Gustafsson's predictive
    /// one (after two accepted steps of one method), which keeps the approach to a fast
    /// transition from alternating accepted and rejected steps.
    fn control(&mut self, h: f64, err: f64, after_reject: bool) {
        let q = self.estimate_order();
        self.h = h * accepted_factor(err, q, after_reject, h, &mut self.last_accepted);
    }

    /// The order of the current method's error estimate.
    fn estimate_order(&self) -> u32 {
        if self.stiff {
            RODAS5_ESTIMATE_ORDER
        } else {
            self.explicit.estimate_order()
        }
    }

    /// One attempt of size `self.h` from the current state by the current method: its
    /// error norm (infinite where a stage leaves the flow's domain).
    fn attempt(&mut self) -> f64 {
        let n = self.aug.n;
        if !self.stiff {
            let aug = &mut self.aug;
            let mut rhs = |y: &[f64], dy: &mut [f64]| aug.rhs(y, dy);
            let r = self
                .explicit
                .step(&mut rhs, &self.ya, &self.f0, self.h, self.tol_explicit);
            self.counts[2] += DOP853_EVALS;
            return r.unwrap_or(f64::INFINITY);
        }
        let attempt = self.blocks.attempt(
            &mut self.aug,
            &self.ya,
            &self.f0,
            self.h,
            self.tol,
            &mut self.step,
        );
        self.counts[2] += 7;
        match attempt {
            Ok(()) => augmented_norm(
                self.step.error_estimate(),
                &self.ya,
                self.step.y1(),
                n,
                self.tol,
                self.opts.in_norm,
            ),
            Err(_) => f64::INFINITY,
        }
    }

    /// The switch between the phases after an accepted step (eq. (Y18)), the plain flow's
    /// rule ([`StiffnessSwitch`]) on the spectral radius of `J`: at the new state every
    /// [`StiffnessSwitch::CHECK_EVERY`] explicit steps (`h rho > 3`: stiff), at the step's
    /// start (the Jacobian Rodas5 used) every [`StiffnessSwitch::CALM_EVERY`] Rodas5 steps
    /// (four calm checks `h rho < 1` in a row: back to DOP853), with `h` the accepted step,
    /// as in the plain flow. Only when the run has an explicit phase.
    fn switch_phase(&mut self, h: f64, after_reject: bool) -> Result<()> {
        if !self.opts.explicit_phase() {
            return Ok(());
        }
        if !self.stiff {
            if self.switch.check_due(after_reject) {
                self.blocks.at(&mut self.aug, &self.ya)?;
                self.counts[3] += 1;
                let rho = radius(None, &self.blocks.jac, 30.0 / h);
                if StiffnessSwitch::turns_stiff(h, rho) {
                    // The blocks at the new state serve the first Rodas5 step.
                    self.blocks_fresh = true;
                    self.stiff = true;
                    self.last_accepted = None;
                    self.switch.entered_stiff();
                    self.stiff_from.get_or_insert(self.t);
                }
            }
            return Ok(());
        }
        if StiffnessSwitch::calm_check_due(self.stiff_steps) {
            let rho = radius(None, &self.blocks.jac, 10.0 / h);
            if self.switch.calm_check(h, rho) {
                self.stiff = false;
                self.last_accepted = None;
            }
        }
        Ok(())
    }

    /// A step of length `dt` from the accepted step's start by the step's method (DOP853,
    /// or Rodas5 with the blocks there): the accuracy of a step, not of the continuous
    /// extension (events and the peak).
    fn exact_from_start(&mut self, dt: f64) -> Result<Vec<f64>> {
        if !self.stiff {
            let aug = &mut self.aug;
            let mut rhs = |y: &[f64], dy: &mut [f64]| aug.rhs(y, dy);
            self.exact_explicit
                .step(&mut rhs, &self.ya, &self.f0, dt, self.tol_explicit)?;
            self.counts[2] += DOP853_EVALS;
            return Ok(self.exact_explicit.y1().to_vec());
        }
        self.blocks.attempt(
            &mut self.aug,
            &self.ya,
            &self.f0,
            dt,
            self.tol,
            &mut self.exact,
        )?;
        self.counts[2] += 7;
        Ok(self.exact.y1().to_vec())
    }

    /// The root of event `i`'s function `g` (eq. (Y9)) on steps of exact length (by the
    /// accepted step's method, [`Run::exact_from_start`]) from the accepted step's start, by Newton's method from the root `tl` (local time) located
    /// on the continuous extension (eq. (Y15)); returns the event's time and the augmented
    /// state there. The continuous extension is less accurate than a step: where `g` moves
    /// slowly, its error moves the located time, and with it every quantity taken at the
    /// event, by far more than the steps' own error.
    fn refine(&mut self, i: usize, tl: f64) -> Result<(f64, Vec<f64>)> {
        let (n, h) = (self.aug.n, self.dense.span().1);
        let e = Event::ALL[i];
        let (s, j) = (self.log.strong.unwrap_or(0), self.log.active[i]);
        let k = unseeded(self.aug.constants());
        let mut tl = tl;
        let mut y = self.exact_from_start(tl)?;
        for _ in 0..REFINE_ITERATIONS {
            let f = self.plain.rhs(&y[..n])?;
            let (xa, _, _) = self.aug.eval_along(&y[..n], &f)?;
            let g = event_value(e, &k, &self.log.phases, s, j, &xa);
            let next = (tl - g.v / g.d[0]).clamp(0.0, h);
            if !next.is_finite() || next == tl {
                break;
            }
            tl = next;
            y = self.exact_from_start(tl)?;
        }
        Ok((self.clock.plus(tl), y))
    }

    /// Locates the events of the accepted step (eq. (Y10): their states by
    /// [`Run::exact_from_start`]); returns whether the run ends at `t_end`.
    fn events(&mut self) -> Result<Option<(f64, Vec<f64>)>> {
        let before = self.log.times;
        self.log.step(&self.plain, &self.clock, &self.dense)?;
        for i in 0..4 {
            if let (None, Some(te)) = (before[i], self.log.times[i]) {
                self.log.shifts[i] = Some(self.shift.clone());
                let tl = self.log.local[i].unwrap_or(te - self.t);
                if tl > 0.0 && !self.log.at_start[i] {
                    let (te, y) = self.refine(i, tl)?;
                    self.log.times[i] = Some(te);
                    self.log.states[i] = Some(y);
                }
            }
        }
        if self.opts.stop_at_t_end {
            if let (Some(te), Some(y)) = (self.log.times[3], &self.log.states[3]) {
                return Ok(Some((te, y.clone())));
            }
        }
        Ok(None)
    }

    /// The whole run, then the derivatives (eqs. (Y10)-(Y13)).
    fn run(mut self, config: &Config) -> Result<Sensitivities> {
        let n = self.aug.n;
        let mut rate0 = self.plain.offdiag_rate(&self.ya[..n], &self.f0[..n]);
        let mut end: Option<(f64, Vec<f64>)> = None;
        while self.clock.until(self.opts.horizon) > 0.0 && end.is_none() {
            let (err, after_reject) = self.accept()?;
            let h = self.h;
            self.counts[0] += 1;
            // The step's solution, before the events' exact steps reuse the work spaces.
            let mut y1 = if self.stiff {
                self.step.y1().to_vec()
            } else {
                self.explicit.y1().to_vec()
            };
            end = self.events()?;
            // The peak: the rate (E6) turns from positive to non-positive in the step.
            // The shift of this step's states (events, peak), before the re-anchoring.
            let shift = self.shift.clone();
            if self.reanchor {
                self.reanchor_at(&mut y1)?;
            }
            let mut f1 = vec![0.0; y1.len()];
            self.aug.rhs(&y1, &mut f1)?;
            self.counts[2] += 1;
            let rate1 = self.plain.offdiag_rate(&y1[..n], &f1[..n]);
            if rate0 > 0.0 && rate1 <= 0.0 {
                if let Some(tl) = self.peak.locate(&self.plain, &self.clock, &self.dense)? {
                    self.peak.shift = shift;
                    if tl > 0.0 {
                        let y = self.exact_from_start(tl)?;
                        self.peak.set_state(y);
                    }
                }
            }
            rate0 = rate1;
            self.ya = y1;
            self.f0 = f1;
            self.clock.advance(h);
            self.t = self.clock.value();
            self.control(h, err, after_reject);
            if self.stiff {
                self.stiff_steps += 1;
            }
            self.switch_phase(h, after_reject)?;
        }
        let [accepted, rejected, evals, jacs] = self.counts;
        let (tau_final, y_final, shift_final) = match end {
            Some((te, y)) => (te, y, self.log.shifts[3].clone().unwrap_or_default()),
            None => (self.t, self.ya, self.shift),
        };
        let mut s = derivatives::assemble(
            &mut self.aug,
            &self.plain,
            config,
            &self.log,
            &self.peak,
            (tau_final, &y_final, &shift_final),
            [accepted, rejected],
            [evals, jacs],
        )?;
        s.stiff_from = self.stiff_from;
        s.steps_by_method = [accepted - self.stiff_steps, self.stiff_steps];
        Ok(s)
    }

    /// The continuous extension of the step just accepted, of size `h`, into `self.dense`:
    /// Rodas5's rows, or DOP853's seventh-order extension (three more evaluations).
    fn dense_output(&mut self, h: f64) -> Result<()> {
        if self.stiff {
            self.step.dense_rows(&self.ya, h, &mut self.dense);
            return Ok(());
        }
        let aug = &mut self.aug;
        let mut rhs = |y: &[f64], dy: &mut [f64]| aug.rhs(y, dy);
        self.explicit
            .dense(&mut rhs, &self.ya, h, &mut self.dense)?;
        self.counts[2] += 3;
        Ok(())
    }

    /// Re-anchors the sensitivities of the augmented state `ya` in time (eq. (Y14)):
    /// `S~_i -= c_i F`, `sigma_i += c_i`, with `c_i = <F, S~_i> / <F, F>` in the inner
    /// product weighted by the state's error scales, so that `S~_i` has no component along
    /// the flow. Exact for the variational equation (`F` solves its homogeneous part), it
    /// keeps the time-shift part of `S` (as large as `F dt3/dtheta` through a fast
    /// transition) out of the integrated vector.
    fn reanchor_at(&mut self, ya: &mut [f64]) -> Result<()> {
        let n = self.aug.n;
        let f = self.plain.rhs(&ya[..n])?;
        self.counts[2] += 1;
        let w: Vec<f64> = (0..n)
            .map(|i| 1.0 / self.tol.scale_at(i, ya[i].abs()).powi(2))
            .collect();
        let ff: f64 = (0..n).map(|i| w[i] * f[i] * f[i]).sum();
        if !(ff > 0.0 && ff.is_finite()) {
            return Ok(());
        }
        for p in 0..self.aug.k {
            let sp = &mut ya[n + p * n..n + (p + 1) * n];
            let c = (0..n).map(|i| w[i] * f[i] * sp[i]).sum::<f64>() / ff;
            if !c.is_finite() {
                continue;
            }
            for (x, fi) in sp.iter_mut().zip(&f) {
                *x -= c * fi;
            }
            self.shift[p] += c;
        }
        Ok(())
    }
}

/// [`run_at`] for at most `K` directions.
fn run_k<const K: usize>(
    config: &Config,
    inputs: &Inputs,
    dirs: &[Inputs],
    opts: &SensitivityOptions,
    drop: Option<usize>,
) -> Result<Sensitivities> {
    Run::<K>::new(config, inputs, dirs, opts, drop)?.run(config)
}
