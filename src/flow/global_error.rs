//! A global error estimate of the event times by tolerance proportionality, and its
//! refinement (`derivations/numerics.md`, "Global error of the event times").
//!
//! The error control of [`crate::flow::integrate()`] bounds local errors. The error of an
//! event time is their sum, each carried to the event by the flow, and in a long
//! ill-conditioned phase the carrying amplifies: one held-out run in 800 has its `t3`
//! `1.9e-6` off at `rtol = 1e-9` although every step met its tolerance. This module
//! measures that error instead of assuming it. A companion run at `factor * rtol` gives
//! the estimate `|t(factor rtol) - t(rtol)| / max(|t(factor rtol)|, |t(rtol)|) + rtol` of
//! the relative error of each event time of the run at `rtol` (`derivations/numerics.md`,
//! eq. (G1)): the difference bounds the error when tightening the tolerance `factor`-fold
//! at least halves it, and `rtol` covers the level below which two runs' differences are
//! no longer proportional to their tolerances. When an estimate exceeds the target, the
//! two runs disagree on which events happen, on the strong neuron or on the outcome, or an
//! event of the run is decided by a quantity its tolerance does not resolve (eq. (G2)),
//! the run is repeated at `rtol / factor` and compared with the previous one, at most
//! [`Check::max_refinements`] times. An unresolved event also tightens the head's absolute
//! tolerance of the refinements by the factor by which its entry falls short (eq. (G3)),
//! since that tolerance, not `rtol`, is what resolves it.

use crate::error::Result;
use crate::flow::integrate::RESOLVED_HEAD_ENTRY;
use crate::flow::Run;
use crate::observe::Summary;
use serde::Serialize;

/// The policy of the estimate and of its refinement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Check {
    /// The ratio of successive relative tolerances: the companion runs at
    /// `factor * rtol`, the `k`-th refinement at `rtol / factor^k` (the caller scales the
    /// absolute tolerances with it).
    pub factor: f64,
    /// The largest accepted estimate of the relative error of an event time.
    pub target: f64,
    /// At most this many refinements.
    pub max_refinements: u32,
    /// No refinement below this relative tolerance (the `f64` floor of the steps).
    pub min_rtol: f64,
}

impl Check {
    /// Default [`Check::factor`].
    pub const DEFAULT_FACTOR: f64 = 10.0;
    /// Default [`Check::target`]: the accuracy that issue #4 asks of the event times.
    pub const DEFAULT_TARGET: f64 = 1e-6;
    /// Default [`Check::max_refinements`]: `rtol / 100` at most (`1e-11` by default).
    pub const DEFAULT_MAX_REFINEMENTS: u32 = 2;
    /// Default [`Check::min_rtol`].
    pub const DEFAULT_MIN_RTOL: f64 = 1e-13;
}

impl Default for Check {
    fn default() -> Self {
        Check {
            factor: Self::DEFAULT_FACTOR,
            target: Self::DEFAULT_TARGET,
            max_refinements: Self::DEFAULT_MAX_REFINEMENTS,
            min_rtol: Self::DEFAULT_MIN_RTOL,
        }
    }
}

/// The run that [`checked`] asks for: a companion (only its summary is used) or a
/// candidate for the reported run (the caller records its trajectory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The run at the looser tolerance `factor * rtol`.
    Companion,
    /// A run at `rtol` or at a refined tolerance.
    Reported,
}

/// The estimated bound (G1) on the relative error of each event time (`null`: the event
/// happens in neither run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct EventErrors {
    /// Of `t1`.
    pub t1: Option<f64>,
    /// Of `t2`.
    pub t2: Option<f64>,
    /// Of `t3`.
    pub t3: Option<f64>,
    /// Of `t_end`.
    pub t_end: Option<f64>,
}

impl EventErrors {
    /// The largest estimate (0 when no event happens).
    pub fn max(&self) -> f64 {
        [self.t1, self.t2, self.t3, self.t_end]
            .into_iter()
            .flatten()
            .fold(0.0, |m: f64, e| if e.is_nan() { e } else { m.max(e) })
    }
}

/// Two runs of the same trajectory compared: the estimate, and the keys on which they
/// disagree outright.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// The estimates (G1) for the event times present in both runs.
    pub errors: EventErrors,
    /// The keys among `t1`, `t2`, `t3`, `t_end` (present in one run only),
    /// `strong_neuron` and `outcome` whose values differ.
    pub differs: Vec<&'static str>,
    /// The events of the reported run that its tolerance does not resolve
    /// ([`Run::unresolved`], eq. (G2); empty from [`compare`], which sees summaries only).
    pub unresolved: Vec<&'static str>,
}

impl Comparison {
    /// Whether every estimate is at most `target`, nothing differs and every event is
    /// resolved.
    pub fn met(&self, target: f64) -> bool {
        self.differs.is_empty() && self.unresolved.is_empty() && self.errors.max() <= target
    }
}

/// `|x - y| / max(|x|, |y|)`, 0 when both vanish: the difference in eq. (G1) of
/// `derivations/numerics.md`.
fn relative_difference(x: f64, y: f64) -> f64 {
    let scale = x.abs().max(y.abs());
    if scale == 0.0 {
        0.0
    } else {
        (x - y).abs() / scale
    }
}

/// Compares the run to be reported, made at relative tolerance `rtol`, with another run
/// of the same trajectory at another tolerance (`derivations/numerics.md`, eq. (G1)).
pub fn compare(reported: &Summary, other: &Summary, rtol: f64) -> Comparison {
    let mut differs = Vec::new();
    let mut event = |name: &'static str, x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => Some(relative_difference(x, y) + rtol),
        (None, None) => None,
        _ => {
            differs.push(name);
            None
        }
    };
    let errors = EventErrors {
        t1: event("t1", reported.t1, other.t1),
        t2: event("t2", reported.t2, other.t2),
        t3: event("t3", reported.t3, other.t3),
        t_end: event("t_end", reported.t_end, other.t_end),
    };
    if reported.strong_neuron != other.strong_neuron {
        differs.push("strong_neuron");
    }
    if reported.outcome != other.outcome {
        differs.push("outcome");
    }
    Comparison {
        errors,
        differs,
        unresolved: Vec::new(),
    }
}

/// [`compare`] of two runs, with the reported run's unresolved events (G2).
fn assess(reported: &Run, other: &Run, rtol: f64) -> Comparison {
    Comparison {
        unresolved: reported.unresolved.iter().map(|e| e.name()).collect(),
        ..compare(&reported.summary, &other.summary, rtol)
    }
}

/// The reported run and its estimate.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The reported run (the last refinement, or the run at the given tolerance).
    pub run: Run,
    /// The relative tolerance it ran at.
    pub rtol: f64,
    /// The factor on the head's absolute tolerance at [`Checked::rtol`] that it ran with:
    /// 1, or less after a refinement for an unresolved event (eq. (G3)).
    pub head_scale: f64,
    /// Its comparison with the run at [`Checked::compared_rtol`] (`None`: the companion
    /// failed and no refinement was made or succeeded, see [`Checked::check_error`]).
    pub comparison: Option<Comparison>,
    /// The relative tolerance of the run it was compared with.
    pub compared_rtol: Option<f64>,
    /// Refinements made.
    pub refinements: u32,
    /// Right-hand-side evaluations of the runs not reported (the companion and superseded
    /// refinements).
    pub check_rhs_evals: u64,
    /// Why a companion or a refinement failed (the estimate then is the last one made).
    pub check_error: Option<String>,
}

impl Checked {
    /// The run at `rtol` alone: no comparison, no refinement.
    pub fn single(run: Run, rtol: f64) -> Self {
        Checked {
            run,
            rtol,
            head_scale: 1.0,
            comparison: None,
            compared_rtol: None,
            refinements: 0,
            check_rhs_evals: 0,
            check_error: None,
        }
    }

    /// Whether the reported run meets `target` (false when there is no estimate).
    pub fn met(&self, target: f64) -> bool {
        self.comparison.as_ref().is_some_and(|c| c.met(target))
    }
}

/// `x` rounded to 15 significant decimal digits: the tolerance `1e-9 / 10^2` is then the
/// `1e-11` a user would write, and the refined run is the run at `--rtol 1e-11`.
fn decimal(x: f64) -> f64 {
    format!("{x:.14e}").parse().unwrap_or(x)
}

fn rhs_evals(run: &Run) -> u64 {
    run.summary.rhs_evals.unwrap_or(0)
}

/// The factor by which the head entry of an unresolved `t2` falls short of being resolved
/// (eq. (G2)), `|E_ks(t2)| / (RESOLVED_HEAD_ENTRY atol_head) < 1`, or `None` when `t2` is
/// resolved or its entry is not a positive number (`derivations/numerics.md`, eq. (G3)).
/// A refinement whose head tolerance is smaller by this factor (besides the factor of its
/// relative tolerance) resolves the entry with the margin `Check::factor`.
pub fn head_shortfall(run: &Run) -> Option<f64> {
    let ratio = run.t2_head_entry? / (RESOLVED_HEAD_ENTRY * run.atol_head);
    (ratio > 0.0 && ratio < 1.0).then_some(ratio)
}

/// Runs the trajectory at relative tolerance `rtol` and estimates the error of its event
/// times with a companion at `check.factor * rtol`, refining as [`Check`] says
/// (`derivations/numerics.md`, "Global error of the event times").
/// `run_at(rtol, head_scale, role)` integrates the trajectory at the relative tolerance
/// `rtol` (and absolute tolerances in proportion), with the head's absolute tolerance
/// further multiplied by `head_scale` (1 but after an unresolved event, eq. (G3)); a
/// failure of the run at `rtol` is returned, a failure of the companion or of a refinement
/// is reported in [`Checked::check_error`] (after a failed companion the run is refined,
/// and the refinement is compared with the run at `rtol`).
pub fn checked(
    rtol: f64,
    check: &Check,
    run_at: &mut dyn FnMut(f64, f64, Role) -> Result<Run>,
) -> Result<Checked> {
    let companion_rtol = decimal(rtol * check.factor);
    let companion = run_at(companion_rtol, 1.0, Role::Companion);
    let mut checked = Checked::single(run_at(rtol, 1.0, Role::Reported)?, rtol);
    match companion {
        Ok(c) => {
            checked.comparison = Some(assess(&checked.run, &c, rtol));
            checked.compared_rtol = Some(companion_rtol);
            checked.check_rhs_evals += rhs_evals(&c);
        }
        Err(e) => checked.check_error = Some(e.to_string()),
    }
    // Without a companion (it failed) the first refinement gives the comparison.
    while checked
        .comparison
        .as_ref()
        .is_none_or(|c| !c.met(check.target))
        && checked.refinements < check.max_refinements
    {
        let exponent = i32::try_from(checked.refinements + 1).unwrap_or(i32::MAX);
        let next = decimal(rtol / check.factor.powi(exponent));
        if next.is_nan() || next < check.min_rtol {
            break;
        }
        // (G3): the head tolerance stays tightened for every later refinement.
        let head_scale = checked.head_scale * head_shortfall(&checked.run).unwrap_or(1.0);
        match run_at(next, head_scale, Role::Reported) {
            Ok(run) => {
                checked.comparison = Some(assess(&run, &checked.run, next));
                checked.compared_rtol = Some(checked.rtol);
                checked.check_rhs_evals += rhs_evals(&checked.run);
                checked.run = run;
                checked.rtol = next;
                checked.head_scale = head_scale;
                checked.refinements += 1;
            }
            Err(e) => {
                checked.check_error = Some(e.to_string());
                break;
            }
        }
    }
    Ok(checked)
}
