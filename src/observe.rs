//! The observers shared by the gradient flow and SGD: phase events, the outcome rule, the
//! run summary and the trajectory recorder (`derivations/phases.md`).
//!
//! Both solvers feed an [`EventTracker`] with samples `(tau, reduced state)` in increasing
//! flow time `tau = lr * t`. SGD feeds discrete samples (the reduced coordinates of its
//! explicit `W`), so its event times are the first sample times at which a condition holds;
//! the flow additionally refines each event time by root finding on its dense output, using
//! the continuous margins of [`Event::margin`] (`crate::flow` does the root finding).
//!
//! Every event condition is written as a continuous signed margin of the reduced state that
//! is `>= 0` exactly when the condition holds (eqs. (E1)-(E4) of `derivations/phases.md`).

use crate::error::{Error, Result};
use crate::flow::problem::lift;
use crate::moments::population::{correlation, evaluate, opt, Constants, Reduced};
use crate::outcome::{classify, largest_norm, OutcomeClass, UndecidedReason};
use crate::setting::{Model, Phases, Setting};
use serde::Serialize;
use std::io::Write;

/// The four phase events of the contract, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// Phase I done: some `|a_j| >= phases.t1` (eq. (E1)).
    T1,
    /// Substitution: the head carries the strong feature into another neuron (eq. (E2)).
    T2,
    /// Acceleration done: some `k != s` has `|b_k| >= phases.t3 ||w_k||` (eq. (E3)).
    T3,
    /// Convergence: `||E - I||_F <= phases.t_end` (eq. (E4)).
    TEnd,
}

/// A set of events in their order, held without allocation (the solvers ask for the
/// pending events at every margin sample).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Events {
    events: [Event; 4],
    len: usize,
}

impl Events {
    /// The events `e` of [`Event::ALL`] with `keep(e)`, in order.
    pub fn from_fn(mut keep: impl FnMut(Event) -> bool) -> Self {
        let mut out = Events {
            events: Event::ALL,
            len: 0,
        };
        for e in Event::ALL {
            if keep(e) {
                out.events[out.len] = e;
                out.len += 1;
            }
        }
        out
    }

    /// The events of `self` with `keep(e)`, in order.
    pub fn filter(self, mut keep: impl FnMut(&Event) -> bool) -> Self {
        Events::from_fn(|e| self.contains(&e) && keep(&e))
    }
}

impl std::ops::Deref for Events {
    type Target = [Event];
    fn deref(&self) -> &[Event] {
        &self.events[..self.len]
    }
}

impl IntoIterator for Events {
    type Item = Event;
    type IntoIter = std::iter::Take<std::array::IntoIter<Event, 4>>;
    fn into_iter(self) -> Self::IntoIter {
        self.events.into_iter().take(self.len)
    }
}

impl Event {
    /// All events, in order.
    pub const ALL: [Event; 4] = [Event::T1, Event::T2, Event::T3, Event::TEnd];

    /// The summary key.
    pub fn name(self) -> &'static str {
        match self {
            Event::T1 => "t1",
            Event::T2 => "t2",
            Event::T3 => "t3",
            Event::TEnd => "t_end",
        }
    }

    fn index(self) -> usize {
        match self {
            Event::T1 => 0,
            Event::T2 => 1,
            Event::T3 => 2,
            Event::TEnd => 3,
        }
    }

    /// The event whose time is this event's start (`None`: starts at `tau = 0`).
    pub fn start(self) -> Option<Event> {
        match self {
            Event::T1 => None,
            Event::T2 | Event::T3 => Some(Event::T1),
            Event::TEnd => Some(Event::T3),
        }
    }

    /// The signed margin of the event's condition at `x`: `>= 0` iff the condition holds,
    /// continuous in `x` (`derivations/phases.md`, eqs. (E1)-(E4)). `strong` is the strong
    /// neuron `s` (needed by `T2` and `T3`; with `None` those margins are `-1`).
    ///
    /// - (E1) `max_j |a_j| - t1`;
    /// - (E2) `max_{k != s} (A_k - B_k) / (A_k + B_k)` with
    ///   `A_k = E_ks^2 (E[K^2] alpha1^6 a_s^6 + 15 n s^6 G_ss^3)`,
    ///   `B_k = t2^2 (E[K^2] alpha1^6 a_k^6 + 15 n s^6 G_kk^3)` (the normalization keeps
    ///   the margin in `[-1, 1]`; it does not change the sign);
    /// - (E3) `max_{k != s} |b_k| / ||w_k|| - t3`, `||w_k||^2 = a_k^2 + b_k^2 + G_kk`;
    /// - (E4) `t_end - ||E - I||_F`.
    pub fn margin(
        self,
        k: &Constants<f64>,
        phases: &Phases,
        strong: Option<usize>,
        x: &Reduced<f64>,
    ) -> f64 {
        let m = x.neurons();
        match self {
            Event::T1 => {
                x.a.iter()
                    .map(|a| a.abs())
                    .fold(f64::NEG_INFINITY, f64::max)
                    - phases.t1
            }
            Event::T2 => {
                let Some(s) = strong else { return -1.0 };
                (0..m)
                    .filter(|&j| j != s)
                    .map(|j| substitution_margin(k, phases, s, j, x))
                    .fold(-1.0, f64::max)
            }
            Event::T3 => {
                let Some(s) = strong else { return -1.0 };
                (0..m)
                    .filter(|&j| j != s)
                    .map(|j| {
                        let norm = x.norm_sq(j).sqrt();
                        if norm > 0.0 {
                            x.b[j].abs() / norm - phases.t3
                        } else {
                            -phases.t3
                        }
                    })
                    .fold(-1.0, f64::max)
            }
            Event::TEnd => phases.t_end - head_distance(x),
        }
    }
}

/// `||E - I||_F`.
pub fn head_distance(x: &Reduced<f64>) -> f64 {
    let m = x.neurons();
    let mut acc = 0.0;
    for j in 0..m {
        for r in 0..m {
            let d = x.e.at(j, r) - if j == r { 1.0 } else { 0.0 };
            acc += d * d;
        }
    }
    acc.sqrt()
}

/// `||E - diag(E)||_F`, the off-diagonal size of the head.
pub fn offdiag_norm(x: &Reduced<f64>) -> f64 {
    let m = x.neurons();
    let mut acc = 0.0;
    for j in 0..m {
        for r in 0..m {
            if j != r {
                acc += x.e.at(j, r).powi(2);
            }
        }
    }
    acc.sqrt()
}

/// `||E - E^T||_F`, the asymmetry of the head.
pub fn asymmetry(x: &Reduced<f64>) -> f64 {
    let m = x.neurons();
    let mut acc = 0.0;
    for j in 0..m {
        for r in 0..m {
            acc += (x.e.at(j, r) - x.e.at(r, j)).powi(2);
        }
    }
    acc.sqrt()
}

/// The outcome of a run (`derivations/phases.md`, rule (E5)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Distinct neurons have cosine `>= outcome_cos` with `v1` and with `v2`.
    BothFeatures,
    /// Every neuron has cosine `>= outcome_cos` with the same feature.
    Collapse,
    /// Neither.
    Undecided,
}

impl Outcome {
    /// The summary string.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::BothFeatures => "both-features",
            Outcome::Collapse => "collapse",
            Outcome::Undecided => "undecided",
        }
    }
}

/// The outcome rule (E5): with `cos1_j = |a_j| / ||w_j||` and `cos2_j = |b_j| / ||w_j||`,
/// `both-features` when some `j != k` have `cos1_j >= c` and `cos2_k >= c`; `collapse`
/// when every neuron has `cos1 >= c`, or every neuron has `cos2 >= c`; else `undecided`.
/// A zero neuron has both cosines 0.
pub fn outcome(x: &Reduced<f64>, outcome_cos: f64) -> Outcome {
    let m = x.neurons();
    let cos: Vec<[f64; 2]> = (0..m)
        .map(|j| {
            let n = x.norm_sq(j).sqrt();
            if n > 0.0 {
                [x.a[j].abs() / n, x.b[j].abs() / n]
            } else {
                [0.0, 0.0]
            }
        })
        .collect();
    let has = |j: usize, l: usize| cos[j][l] >= outcome_cos;
    for j in 0..m {
        for k in 0..m {
            if j != k && has(j, 0) && has(k, 1) {
                return Outcome::BothFeatures;
            }
        }
    }
    if (0..m).all(|j| has(j, 0)) || (0..m).all(|j| has(j, 1)) {
        return Outcome::Collapse;
    }
    Outcome::Undecided
}

/// Why a run stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Termination {
    /// Flow time reached the horizon (flow) or the step budget was used (sgd).
    Horizon,
    /// `t_end` was reached (the run stops there).
    TEnd,
    /// The adaptive step size fell below the resolution of the flow time.
    StepUnderflow,
    /// The state or the loss became non-finite, or a normalization variance vanished.
    NonFinite,
    /// The solver's step budget was used up before the horizon.
    StepLimit,
}

/// The summary of one run: the contract keys in the contract's order, then extras.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Phase I done (flow time), `null` if never reached.
    pub t1: Option<f64>,
    /// Substitution (flow time), `null` if never reached.
    pub t2: Option<f64>,
    /// Acceleration done (flow time), `null` if never reached.
    pub t3: Option<f64>,
    /// Convergence of the head (flow time), `null` if never reached.
    pub t_end: Option<f64>,
    /// The neuron `s` that reached `|a_s| >= t1` first (0-based).
    pub strong_neuron: Option<usize>,
    /// The largest `||E - diag(E)||_F` seen (over observed samples).
    pub offdiag_peak: f64,
    /// `||E - diag(E)||_F` at the end.
    pub offdiag_final: f64,
    /// `Corr(f_0(X), f_1(X))` on un-augmented `X`, population (`null` for `m = 1` or a
    /// zero-variance neuron).
    pub corr_final: Option<f64>,
    /// The population loss at the end.
    pub loss_final: f64,
    /// The footnote-3 optimum summed over neurons.
    pub opt: f64,
    /// `a_j = <w_j, v1>` at the end.
    pub a_final: Vec<f64>,
    /// `b_j = <w_j, v2>` at the end.
    pub b_final: Vec<f64>,
    /// The outcome rule (E5) at the end.
    pub outcome: Outcome,
    /// Right-hand-side evaluations of the flow (omitted for SGD).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rhs_evals: Option<u64>,
    /// Why the run stopped.
    pub termination: Termination,
    /// The flow time at the end of the run.
    pub tau_final: f64,
    /// Accepted steps (flow) or SGD steps taken.
    pub steps: u64,
    /// Rejected steps (flow only; omitted for SGD).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_steps: Option<u64>,
    /// `max_{i != j} |Corr(f_i, f_j)|` at the end (`null` for `m = 1`).
    pub corr_max_final: Option<f64>,
    /// `||E - E^T||_F` at the end.
    pub asym_final: f64,
    /// `||E - I||_F` at the end.
    pub head_distance_final: f64,
    /// The Gram block `G_jk = <u_j, u_k>` of the noise parts at the end.
    pub gram_final: Vec<Vec<f64>>,
    /// The head `E` at the end.
    pub e_final: Vec<Vec<f64>>,
    /// The outcome taxonomy (E7) at the end ([`crate::outcome::classify`]).
    pub outcome_class: OutcomeClass,
    /// Why the run is undecided under (E7), `null` otherwise.
    pub outcome_reason: Option<UndecidedReason>,
    /// The neurons that are dead under (E7) at the end.
    pub dead_neurons: Vec<usize>,
    /// With termination `non-finite`: the step that could not give a finite state (SGD:
    /// the step count `t` whose batch loss, gradient, state or population loss overflowed;
    /// flow: the accepted steps plus one). The summary is that of the last finite state,
    /// `steps` before it. Omitted otherwise (`docs/cli.md`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonfinite_step: Option<u64>,
    /// With termination `non-finite`: the flow time at which it happened (SGD: `lr * t`;
    /// flow: the last finite flow time, the step from it underflowing). Omitted otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonfinite_tau: Option<f64>,
    /// With termination `non-finite`: what was not finite. Omitted otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonfinite_reason: Option<String>,
}

impl Summary {
    /// A short human-readable summary: phase times (flow time), outcome, final values.
    pub fn text(&self) -> String {
        let t = |x: Option<f64>| x.map_or("never".to_string(), |v| format!("{v:.6e}"));
        let mut out = String::new();
        out += &format!(
            "phases (flow time): t1 = {}, t2 = {}, t3 = {}, t_end = {}\n",
            t(self.t1),
            t(self.t2),
            t(self.t3),
            t(self.t_end)
        );
        out += &format!(
            "outcome = {} (strong neuron {}), corr_final = {}\n",
            self.outcome.name(),
            self.strong_neuron
                .map_or("none".to_string(), |j| j.to_string()),
            self.corr_final
                .map_or("undefined".to_string(), |c| format!("{c:.6e}"))
        );
        out += &format!(
            "loss_final = {:.10} (opt {:.10}), offdiag peak {:.4e} final {:.4e}\n",
            self.loss_final, self.opt, self.offdiag_peak, self.offdiag_final
        );
        out += &format!(
            "a_final = {:?}\nb_final = {:?}\n",
            self.a_final, self.b_final
        );
        out += &format!(
            "ended at tau = {:.6e} ({:?}) after {} steps{}\n",
            self.tau_final,
            self.termination,
            self.steps,
            self.rhs_evals.map_or(String::new(), |n| format!(
                ", {n} right-hand-side evaluations"
            ))
        );
        out += &format!(
            "outcome class (E7) = {}{}{}\n",
            self.outcome_class.name(),
            self.outcome_reason
                .map_or(String::new(), |r| format!(" ({})", r.name())),
            if self.dead_neurons.is_empty() {
                String::new()
            } else {
                format!(", dead neurons {:?}", self.dead_neurons)
            }
        );
        out += &self.nonfinite_text();
        out
    }

    /// The line on a non-finite end (empty otherwise).
    pub fn nonfinite_text(&self) -> String {
        match (self.nonfinite_step, self.nonfinite_tau) {
            (Some(step), Some(tau)) => format!(
                "non-finite at step {step} (flow time {tau}): {}; the summary is that of the \
                 last finite state\n",
                self.nonfinite_reason.as_deref().unwrap_or("overflow")
            ),
            _ => String::new(),
        }
    }
}

/// A flow summary that ends `non-finite` (the step from the last accepted state shrank to
/// nothing because every attempt left the f64 range): `nonfinite_tau` is the last finite
/// flow time `tau_final`, `nonfinite_step` the attempted step (`steps + 1`). Other
/// summaries are returned as they are.
pub fn mark_flow_nonfinite(mut s: Summary) -> Summary {
    if s.termination == Termination::NonFinite && s.nonfinite_step.is_none() {
        s.nonfinite_step = Some(s.steps + 1);
        s.nonfinite_tau = Some(s.tau_final);
        s.nonfinite_reason = Some(
            "every step from the last finite state left the f64 range (overflow) or the \
             domain of the flow (a vanishing variance)"
                .to_string(),
        );
    }
    s
}

/// `Corr(f_0, f_1)` and `max_{i != j} |Corr(f_i, f_j)|` at `x` (eq. (P13) of
/// `derivations/population.md`).
pub fn correlations(k: &Constants<f64>, x: &Reduced<f64>) -> (Option<f64>, Option<f64>) {
    let m = x.neurons();
    if m < 2 {
        return (None, None);
    }
    let c = correlation(k, x);
    let mut max: Option<f64> = None;
    for i in 0..m {
        for j in 0..m {
            if i != j {
                if let Some(v) = c.at(i, j) {
                    max = Some(max.map_or(v.abs(), |mx: f64| mx.max(v.abs())));
                }
            }
        }
    }
    (*c.at(0, 1), max)
}

/// The working precision of [`corr_gap`], in bits.
pub const CORR_GAP_BITS: u32 = 256;

/// `1 - |Corr(f_0, f_1)|` at `x` (eq. (P13a) of `derivations/population.md`): (P13)
/// evaluated in MPFR at [`CORR_GAP_BITS`] bits from the exact binary values of `x`. In
/// `f64` the difference is rounding once it falls below about `1e-16` (and `|Corr|` can
/// exceed 1 by an ulp); at a collapsed state it is `1e-18 .. 1e-23` for `d = 1e4 .. 1e6`.
/// `None` for `m < 2` or when a variance is zero.
pub fn corr_gap(setting: &Setting, x: &Reduced<f64>) -> Option<f64> {
    use rug::Float;
    if x.neurons() < 2 {
        return None;
    }
    let k = Constants::<Float>::new(setting, CORR_GAP_BITS);
    let xm: Reduced<Float> = lift(x, CORR_GAP_BITS);
    let c = correlation(&k, &xm);
    let corr = c.at(0, 1).clone()?;
    Some((Float::with_val(CORR_GAP_BITS, 1) - corr.abs()).to_f64())
}

/// The margin of neuron `j` (`j != s`) at `x` in the `t2` condition
/// (`derivations/phases.md`, eq. (E2)): `(A_j - B_j) / (A_j + B_j)`, `-1` when both vanish
/// (see [`Event::margin`]).
fn substitution_margin(
    k: &Constants<f64>,
    phases: &Phases,
    s: usize,
    j: usize,
    x: &Reduced<f64>,
) -> f64 {
    let alpha1_6 = 2.0 * k.h[0];
    let rms_sq =
        |j: usize| k.ek2 * alpha1_6 * x.a[j].powi(6) + 15.0 * k.n * k.s6 * x.gram.at(j, j).powi(3);
    let big = x.e.at(j, s).powi(2) * rms_sq(s);
    let own = phases.t2 * phases.t2 * rms_sq(j);
    let total = big + own;
    if total > 0.0 {
        (big - own) / total
    } else {
        -1.0
    }
}

/// Watches a run: consumes samples `(tau, x)` in increasing flow time, records the first
/// time each event's condition holds at or after its start, the strong neuron and the
/// peak off-diagonal size, and builds the [`Summary`].
///
/// # Examples
/// `t1` (eq. (E1)) happens at the first sample with some `|a_j| >= 0.5` (the default
/// threshold), and that neuron is the strong one; `t2` and `t3` start from `t1`:
/// ```
/// use predhead::config::parse_config;
/// use predhead::moments::population::Constants;
/// use predhead::observe::{Event, EventTracker, Termination};
/// use predhead::reduced::reduce;
/// use predhead::state::State;
/// let config = parse_config(
///     "[setting]\ndim = 6\npatches = 4\nfeature_patches = 2\nalpha = [4.0, 1.0]\n\
///      noise_std = 1.0\nneurons = 2\n[model]\nhead = \"identity-offdiag\"\n\
///      normalization = \"batchnorm\"\nstop_gradient = true\n",
/// )?;
/// let k = Constants::<f64>::new(&config.setting, ());
/// let mut tracker = EventTracker::new(k, config.model, config.phases.clone());
/// let at = |a0: f64, a1: f64| {
///     reduce::<f64>(&State::with_identity_head(vec![
///         vec![a0, 0.1, 0.2, 0.0, 0.1, 0.0],
///         vec![a1, 0.2, 0.0, 0.3, 0.0, 0.1],
///     ]), ())
/// };
/// assert!(tracker.observe(0.0, &at(0.1, 0.2)).is_empty());
/// assert_eq!(tracker.observe(1.0, &at(0.3, 0.6)), vec![Event::T1]);
/// assert_eq!(tracker.time(Event::T1), Some(1.0));
/// assert_eq!(tracker.strong_neuron(), Some(1));
/// // A later sample that meets t1 again does not move it.
/// assert!(tracker.observe(2.0, &at(0.9, 0.9)).is_empty());
/// let summary = tracker.finish(2.0, &at(0.9, 0.9), Termination::Horizon, 2, None, None)?;
/// assert_eq!((summary.t1, summary.t2), (Some(1.0), None));
/// # Ok::<(), predhead::Error>(())
/// ```
///
/// # Errors
/// [`EventTracker::finish`] errors when the population loss at the final state cannot be
/// evaluated (a batch-norm variance of zero) and the run did not end as `non-finite`:
/// ```
/// # use predhead::config::parse_config;
/// # use predhead::moments::population::Constants;
/// # use predhead::observe::{EventTracker, Termination};
/// # use predhead::reduced::reduce;
/// # use predhead::state::State;
/// # let config = parse_config(
/// #     "[setting]\ndim = 6\npatches = 4\nfeature_patches = 2\nalpha = [4.0, 1.0]\n\
/// #      noise_std = 1.0\nneurons = 2\n[model]\nhead = \"identity-offdiag\"\n\
/// #      normalization = \"batchnorm\"\nstop_gradient = true\n",
/// # )?;
/// # let k = Constants::<f64>::new(&config.setting, ());
/// let tracker = EventTracker::new(k, config.model, config.phases.clone());
/// let zero = reduce::<f64>(&State::with_identity_head(vec![vec![0.0; 6]; 2]), ());
/// assert!(tracker.finish(0.0, &zero, Termination::Horizon, 0, None, None).is_err());
/// # Ok::<(), predhead::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct EventTracker {
    constants: Constants<f64>,
    model: Model,
    phases: Phases,
    times: [Option<f64>; 4],
    strong: Option<usize>,
    substitution_entry: Option<f64>,
    offdiag_peak: f64,
    last_tau: f64,
    initial_scale: Option<f64>,
}

impl EventTracker {
    /// A tracker for a run of `model` with constants `constants` and thresholds `phases`.
    pub fn new(constants: Constants<f64>, model: Model, phases: Phases) -> Self {
        EventTracker {
            constants,
            model,
            phases,
            times: [None; 4],
            strong: None,
            substitution_entry: None,
            offdiag_peak: 0.0,
            last_tau: f64::NEG_INFINITY,
            initial_scale: None,
        }
    }

    /// The constants of the setting.
    pub fn constants(&self) -> &Constants<f64> {
        &self.constants
    }

    /// The thresholds.
    pub fn phases(&self) -> &Phases {
        &self.phases
    }

    /// The time of `event`, if it happened.
    pub fn time(&self, event: Event) -> Option<f64> {
        self.times[event.index()]
    }

    /// The strong neuron, once `t1` happened.
    pub fn strong_neuron(&self) -> Option<usize> {
        self.strong
    }

    /// `|E_ks|` at `t2` for the neuron `k` with the largest margin (E2) there: the head
    /// entry that carries the substitution (`None` before `t2`).
    pub fn substitution_entry(&self) -> Option<f64> {
        self.substitution_entry
    }

    /// Events whose start has happened and which have not happened yet: the ones a solver
    /// must watch on its next interval.
    pub fn pending(&self) -> Events {
        Events::from_fn(|e| {
            self.time(e).is_none() && e.start().is_none_or(|s| self.time(s).is_some())
        })
    }

    /// The margin of `event` at `x` with the tracker's strong neuron (see
    /// [`Event::margin`]).
    pub fn margin(&self, event: Event, x: &Reduced<f64>) -> f64 {
        event.margin(&self.constants, &self.phases, self.strong, x)
    }

    /// The margin `t1` would have at `x`, and the neuron that would be strong.
    fn strongest(x: &Reduced<f64>) -> usize {
        let mut best = 0;
        for j in 1..x.neurons() {
            if x.a[j].abs() > x.a[best].abs() {
                best = j;
            }
        }
        best
    }

    /// Consumes the sample `(tau, x)`: every pending event whose margin is `>= 0` at `x`
    /// happens at `tau` (events unlocked by an event at `tau` are checked at `tau` too, so
    /// an event equals its start when its condition already holds there). Samples must come
    /// in non-decreasing `tau`. Returns the events that happened.
    pub fn observe(&mut self, tau: f64, x: &Reduced<f64>) -> Vec<Event> {
        debug_assert!(tau >= self.last_tau, "samples out of order");
        self.last_tau = tau;
        self.offdiag_peak = self.offdiag_peak.max(offdiag_norm(x));
        self.initial_scale.get_or_insert_with(|| largest_norm(x));
        let mut fired = Vec::new();
        loop {
            let mut any = false;
            for ev in self.pending() {
                if ev == Event::T1 {
                    if Event::T1.margin(&self.constants, &self.phases, None, x) >= 0.0 {
                        self.strong = Some(Self::strongest(x));
                    } else {
                        continue;
                    }
                } else if self.margin(ev, x) < 0.0 {
                    continue;
                }
                if let (Event::T2, Some(s)) = (ev, self.strong) {
                    let margin =
                        |j: usize| substitution_margin(&self.constants, &self.phases, s, j, x);
                    self.substitution_entry = (0..x.neurons())
                        .filter(|&j| j != s)
                        .max_by(|&i, &j| margin(i).total_cmp(&margin(j)))
                        .map(|j| x.e.at(j, s).abs());
                }
                self.times[ev.index()] = Some(tau);
                fired.push(ev);
                any = true;
            }
            if !any {
                return fired;
            }
        }
    }

    /// Updates the off-diagonal peak with an intermediate state (e.g. dense output inside
    /// a step) without checking events.
    pub fn touch(&mut self, x: &Reduced<f64>) {
        self.offdiag_peak = self.offdiag_peak.max(offdiag_norm(x));
    }

    /// Builds the summary at the final sample `(tau, x)`.
    ///
    /// `rhs_evals` and `rejected_steps` are `Some` for the flow and `None` for SGD.
    pub fn finish(
        &self,
        tau: f64,
        x: &Reduced<f64>,
        termination: Termination,
        steps: u64,
        rhs_evals: Option<u64>,
        rejected_steps: Option<u64>,
    ) -> Result<Summary> {
        let m = x.neurons();
        let loss_final = match evaluate(&self.constants, &self.model, x) {
            Ok(ev) => ev.loss,
            Err(e) if termination == Termination::NonFinite => {
                let _ = e;
                f64::NAN
            }
            Err(e) => return Err(e),
        };
        let (corr_final, corr_max_final) = correlations(&self.constants, x);
        let class = classify(
            x,
            self.initial_scale.unwrap_or(0.0),
            self.phases.outcome_cos,
            termination,
        );
        Ok(Summary {
            t1: self.times[0],
            t2: self.times[1],
            t3: self.times[2],
            t_end: self.times[3],
            strong_neuron: self.strong,
            offdiag_peak: self.offdiag_peak.max(offdiag_norm(x)),
            offdiag_final: offdiag_norm(x),
            corr_final,
            loss_final,
            opt: opt(&self.constants, m, ()),
            a_final: x.a.clone(),
            b_final: x.b.clone(),
            outcome: outcome(x, self.phases.outcome_cos),
            rhs_evals,
            termination,
            tau_final: tau,
            steps,
            rejected_steps,
            corr_max_final,
            asym_final: asymmetry(x),
            head_distance_final: head_distance(x),
            gram_final: x.gram.to_rows_f64(),
            e_final: x.e.to_rows_f64(),
            outcome_class: class.class,
            outcome_reason: class.reason,
            dead_neurons: class.dead,
            nonfinite_step: None,
            nonfinite_tau: None,
            nonfinite_reason: None,
        })
    }
}

/// How often a run writes a trajectory row: one setting for the flow and both SGD engines
/// (`--record-every K` of `predhead flow` and `predhead sgd`). A run records its start, every
/// `K`-th step (an accepted step of the flow, a step of SGD), each event the flow locates,
/// and its last state; [`CadencedRecorder`] applies it.
///
/// # Examples
///
/// ```
/// use predhead::observe::Cadence;
///
/// let c = Cadence::every(10)?;
/// assert!(c.due(20) && !c.due(25));
/// assert!(Cadence::EVERY_STEP.due(7) && !Cadence::ENDS.due(7));
/// // Default of `sgd`: about 1000 rows.
/// assert_eq!(Cadence::from_flag(None, 50_000)?, Cadence::every(50)?);
/// assert!(Cadence::every(0).is_err());
/// # Ok::<(), predhead::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cadence {
    every: u64,
}

impl Cadence {
    /// A row at every step (the flow's default).
    pub const EVERY_STEP: Cadence = Cadence { every: 1 };
    /// Rows at the start and the end only (and, for the flow, at events).
    pub const ENDS: Cadence = Cadence { every: u64::MAX };
    /// Rows of `predhead sgd`'s trajectory when `--record-every` is not given.
    pub const DEFAULT_ROWS: u64 = 1000;

    /// A row every `k` steps.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] on `--record-every` when `k` is 0.
    pub fn every(k: u64) -> Result<Cadence> {
        if k == 0 {
            return Err(Error::invalid("--record-every", "must be positive, got 0"));
        }
        Ok(Cadence { every: k })
    }

    /// The cadence of the flag `--record-every`: `k` when given, else about
    /// [`Cadence::DEFAULT_ROWS`] rows over `steps` steps (at least one step apart).
    ///
    /// # Errors
    ///
    /// As [`Cadence::every`].
    pub fn from_flag(k: Option<u64>, steps: u64) -> Result<Cadence> {
        Cadence::every(k.unwrap_or((steps / Self::DEFAULT_ROWS).max(1)))
    }

    /// Whether step `step` (counted from the run's start) gets a row.
    pub fn due(self, step: u64) -> bool {
        step.is_multiple_of(self.every)
    }
}

/// A [`TrajectoryRecorder`] (or none) at a [`Cadence`]: the start, the due steps, the
/// forced ones and the last state, each once.
pub struct CadencedRecorder<'a, W: Write> {
    recorder: Option<&'a mut TrajectoryRecorder<W>>,
    cadence: Cadence,
    last: Option<u64>,
}

impl<'a, W: Write> CadencedRecorder<'a, W> {
    /// Records through `recorder` (nothing when `None`) at `cadence`.
    pub fn new(recorder: Option<&'a mut TrajectoryRecorder<W>>, cadence: Cadence) -> Self {
        CadencedRecorder {
            recorder,
            cadence,
            last: None,
        }
    }

    /// The sample `(tau, x)` after step `step` (0: the start): recorded when the step is
    /// due or `force`d, or is the start.
    ///
    /// # Errors
    ///
    /// Writing the row.
    pub fn step(&mut self, step: u64, tau: f64, x: &Reduced<f64>, force: bool) -> Result<()> {
        if let Some(r) = self.recorder.as_deref_mut() {
            if self.last.is_none() || force || self.cadence.due(step) {
                r.record(tau, x)?;
                self.last = Some(step);
            }
        }
        Ok(())
    }

    /// The last state `(tau, x)` after step `step`: recorded unless that step was.
    ///
    /// # Errors
    ///
    /// Writing the row.
    pub fn finish(mut self, step: u64, tau: f64, x: &Reduced<f64>) -> Result<()> {
        if self.last != Some(step) {
            self.step(step, tau, x, true)?;
        }
        Ok(())
    }
}

/// Writes a trajectory as CSV, one row per recorded sample.
///
/// Columns (`derivations/phases.md`, "Trajectory CSV"): `tau` (flow time), `a_0..a_{m-1}`,
/// `b_0..b_{m-1}`, `g_j_k` for `j <= k` (the Gram block of the noise parts, upper triangle,
/// row by row), `e_j_r` for all `j, r` (the head, row by row), `loss` (population loss),
/// `offdiag` (`||E - diag(E)||_F`), `corr_i_j` for `i < j` (`Corr(f_i, f_j)` on
/// un-augmented `X`, empty when undefined). Numbers in shortest round-trip form.
pub struct TrajectoryRecorder<W: Write> {
    out: W,
    constants: Constants<f64>,
    model: Model,
    neurons: usize,
    rows: u64,
}

impl<W: Write> TrajectoryRecorder<W> {
    /// Writes the header and returns the recorder.
    pub fn new(
        mut out: W,
        constants: Constants<f64>,
        model: Model,
        neurons: usize,
    ) -> Result<Self> {
        let m = neurons;
        let mut cols = vec!["tau".to_string()];
        cols.extend((0..m).map(|j| format!("a_{j}")));
        cols.extend((0..m).map(|j| format!("b_{j}")));
        for j in 0..m {
            for k in j..m {
                cols.push(format!("g_{j}_{k}"));
            }
        }
        for j in 0..m {
            for r in 0..m {
                cols.push(format!("e_{j}_{r}"));
            }
        }
        cols.push("loss".into());
        cols.push("offdiag".into());
        for i in 0..m {
            for j in i + 1..m {
                cols.push(format!("corr_{i}_{j}"));
            }
        }
        writeln!(out, "{}", cols.join(",")).map_err(|e| Error::io("trajectory", &e))?;
        Ok(TrajectoryRecorder {
            out,
            constants,
            model,
            neurons,
            rows: 0,
        })
    }

    /// Appends the sample `(tau, x)`.
    pub fn record(&mut self, tau: f64, x: &Reduced<f64>) -> Result<()> {
        let m = self.neurons;
        let loss = evaluate(&self.constants, &self.model, x).map_or(f64::NAN, |ev| ev.loss);
        let corr = correlation(&self.constants, x);
        let mut row: Vec<String> = vec![format!("{tau:?}")];
        row.extend(x.a.iter().map(|v| format!("{v:?}")));
        row.extend(x.b.iter().map(|v| format!("{v:?}")));
        for j in 0..m {
            for k in j..m {
                row.push(format!("{:?}", x.gram.at(j, k)));
            }
        }
        row.extend(x.e.entries().iter().map(|v| format!("{v:?}")));
        row.push(format!("{loss:?}"));
        row.push(format!("{:?}", offdiag_norm(x)));
        for i in 0..m {
            for j in i + 1..m {
                row.push(corr.at(i, j).map_or(String::new(), |v| format!("{v:?}")));
            }
        }
        writeln!(self.out, "{}", row.join(",")).map_err(|e| Error::io("trajectory", &e))?;
        self.rows += 1;
        Ok(())
    }

    /// Number of rows written.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> Result<W> {
        self.out.flush().map_err(|e| Error::io("trajectory", &e))?;
        Ok(self.out)
    }
}

impl TrajectoryRecorder<std::io::BufWriter<std::fs::File>> {
    /// Creates (or truncates) the file at `path` and writes the header for `config`'s
    /// setting and model (the `--out` of `flow` and `sgd`).
    pub fn create(path: &std::path::Path, config: &crate::setting::Config) -> Result<Self> {
        let file = std::fs::File::create(path).map_err(|e| Error::io(path, &e))?;
        let setting = &config.setting;
        TrajectoryRecorder::new(
            std::io::BufWriter::new(file),
            Constants::<f64>::new(setting, ()),
            config.model,
            setting.neurons,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setting::{HeadMode, Normalization, Setting};
    use crate::square::Square;

    fn setting() -> Setting {
        Setting {
            dim: 50,
            patches: 8,
            feature_patches: 2,
            alpha: [2.0, 1.0],
            noise_std: 1.0,
            neurons: 2,
        }
    }

    fn state(a: [f64; 2], b: [f64; 2], g: [f64; 2], e01: f64, e10: f64) -> Reduced<f64> {
        Reduced {
            a: a.to_vec(),
            b: b.to_vec(),
            gram: Square::from_entries(2, vec![g[0], 0.0, 0.0, g[1]]),
            e: Square::from_entries(2, vec![1.0, e01, e10, 1.0]),
        }
    }

    fn tracker() -> EventTracker {
        let model = Model {
            head: HeadMode::IdentityOffdiag,
            normalization: Normalization::Batchnorm,
            stop_gradient: true,
        };
        EventTracker::new(Constants::new(&setting(), ()), model, Phases::default())
    }

    /// The margins change sign exactly at the thresholds of the contract (E1)-(E4).
    #[test]
    fn margins_vanish_at_the_thresholds() {
        let t = tracker();
        let k = t.constants().clone();
        let p = Phases::default();
        let x = state([0.5, -0.1], [0.0, 0.0], [1.0, 1.0], 0.0, 0.0);
        assert_eq!(Event::T1.margin(&k, &p, None, &x), 0.0);
        // (E2) by hand: E_10^2 * A_0 = 100 * A_1.
        let rms = |a: f64, g: f64| k.ek2 * 2.0 * k.h[0] * a.powi(6) + 15.0 * k.n * k.s6 * g.powi(3);
        let e10 = (100.0 * rms(0.1, 0.3) / rms(1.0, 0.2)).sqrt();
        let x = state([1.0, 0.1], [0.0, 0.0], [0.2, 0.3], 0.0, e10);
        assert!(Event::T2.margin(&k, &p, Some(0), &x).abs() < 1e-12);
        let x2 = state([1.0, 0.1], [0.0, 0.0], [0.2, 0.3], 0.0, e10 * 1.01);
        assert!(Event::T2.margin(&k, &p, Some(0), &x2) > 0.0);
        // (E3): |b_1| = 0.9 ||w_1||, with a_1 = 0: b^2 = 0.81 (b^2 + G) -> G = b^2 0.19/0.81.
        let x = state([1.0, 0.0], [0.0, 0.9], [0.1, 0.81 * 0.19 / 0.81], 0.0, 0.0);
        assert!(Event::T3.margin(&k, &p, Some(0), &x).abs() < 1e-12);
        let x = state([1.0, 0.0], [0.0, 0.0], [0.1, 0.1], 0.0, 1e-3);
        assert!(Event::TEnd.margin(&k, &p, Some(0), &x).abs() < 1e-15);
    }

    /// The allocation-free event sets keep `Event::ALL`'s order through `from_fn` and
    /// `filter`, and iterate and compare as slices.
    #[test]
    fn event_sets_keep_their_order() {
        let all = Events::from_fn(|_| true);
        assert_eq!(*all, Event::ALL);
        let odd = all.filter(|e| matches!(e, Event::T2 | Event::TEnd));
        assert_eq!(*odd, [Event::T2, Event::TEnd]);
        assert_eq!(
            odd.into_iter().collect::<Vec<_>>(),
            vec![Event::T2, Event::TEnd]
        );
        assert!(odd.filter(|e| *e == Event::T1).is_empty());
    }

    /// Events fire in order, each at or after its start, and unlocked events are checked
    /// at the same sample.
    #[test]
    fn tracker_orders_events() {
        let mut t = tracker();
        assert_eq!(*t.pending(), [Event::T1]);
        // E is far from I, so t_end cannot fire before t3 even though ... it is locked.
        let x = state([0.1, 0.1], [0.0, 0.0], [1.0, 1.0], 0.0, 0.0);
        assert!(t.observe(0.0, &x).is_empty());
        // At tau = 1 neuron 1 learns v1 and neuron 0 already is aligned with v2; the head is
        // the identity: t1, t3 and t_end fire together, t2 does not.
        let x = state([0.0, -0.7], [0.95, 0.0], [0.01, 0.01], 0.0, 0.0);
        let fired = t.observe(1.0, &x);
        assert_eq!(fired, vec![Event::T1, Event::T3, Event::TEnd]);
        assert_eq!(t.strong_neuron(), Some(1));
        assert_eq!(*t.pending(), [Event::T2]);
        let s = t
            .finish(1.0, &x, Termination::TEnd, 2, Some(10), Some(0))
            .unwrap();
        assert_eq!(s.t1, Some(1.0));
        assert_eq!(s.t2, None);
        assert_eq!(s.outcome, Outcome::BothFeatures);
        let json = serde_json::to_string(&s).unwrap();
        let keys = [
            "\"t1\"",
            "\"t2\"",
            "\"t3\"",
            "\"t_end\"",
            "\"strong_neuron\"",
            "\"offdiag_peak\"",
            "\"offdiag_final\"",
            "\"corr_final\"",
            "\"loss_final\"",
            "\"opt\"",
            "\"a_final\"",
            "\"b_final\"",
            "\"outcome\"",
            "\"rhs_evals\"",
        ];
        let pos: Vec<usize> = keys.iter().map(|k| json.find(k).unwrap()).collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{json}");
    }

    #[test]
    fn outcome_rule() {
        let x = state([1.0, 0.9], [0.0, 0.1], [0.01, 0.01], 0.0, 0.0);
        assert_eq!(outcome(&x, 0.9), Outcome::Collapse);
        let x = state([1.0, 0.5], [0.0, 0.5], [0.01, 0.01], 0.0, 0.0);
        assert_eq!(outcome(&x, 0.9), Outcome::Undecided);
        let x = state([0.0, 0.9], [1.0, 0.1], [0.01, 0.01], 0.0, 0.0);
        assert_eq!(outcome(&x, 0.9), Outcome::BothFeatures);
    }

    #[test]
    fn recorder_header_and_row_widths_match() {
        let t = tracker();
        let mut rec =
            TrajectoryRecorder::new(Vec::new(), t.constants().clone(), t.model, 2).unwrap();
        let x = state([0.3, 0.2], [0.1, 0.4], [0.5, 0.6], 0.01, 0.02);
        rec.record(0.5, &x).unwrap();
        let text = String::from_utf8(rec.finish().unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "tau,a_0,a_1,b_0,b_1,g_0_0,g_0_1,g_1_1,e_0_0,e_0_1,e_1_0,e_1_1,loss,offdiag,corr_0_1"
        );
        assert_eq!(lines[1].split(',').count(), lines[0].split(',').count());
    }
}
