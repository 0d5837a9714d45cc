//! Event location on the dense output of an accepted step: the margins of the pending
//! events sampled inside the step, each crossing refined by root finding, and the peak of
//! the off-diagonal norm (`derivations/numerics.md`, "Events"; `derivations/phases.md`,
//! eq. (E6)). The events and their margins come from the run's [`FlowObserver`].

use crate::flow::clock::Clock;
use crate::flow::dense::Dense;
use crate::flow::observer::FlowObserver;
use crate::flow::problem::{to_f64, to_f64_into, Problem};
use crate::moments::population::Reduced;
use crate::observe::{offdiag_norm, Event};
use crate::ode::roots::first_crossing;
use crate::scalar::Scalar;

/// Reused buffers for states sampled from a dense output (no allocation per sample in
/// `f64`).
pub(crate) struct Sampler<S: Scalar> {
    y: Vec<S>,
    x: Reduced<S>,
    xf: Reduced<f64>,
}

impl<S: Scalar> Sampler<S> {
    pub(crate) fn new(problem: &Problem<S>) -> Self {
        let y = vec![S::one(problem.ctx()); problem.len()];
        let x = problem.unpack(&y);
        let xf = to_f64(&x);
        Sampler { y, x, xf }
    }

    /// The `f64` reduced state of the state vector `y`.
    pub(crate) fn state(&mut self, problem: &Problem<S>, y: &[S]) -> &Reduced<f64> {
        problem.unpack_into(y, &mut self.x);
        to_f64_into(&self.x, &mut self.xf);
        &self.xf
    }

    /// The `f64` reduced state of the dense output at `t`.
    pub(crate) fn at(&mut self, problem: &Problem<S>, dense: &Dense<S>, t: f64) -> &Reduced<f64> {
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
pub(crate) fn may_cross<S: Scalar>(
    problem: &Problem<S>,
    tracker: &mut dyn FlowObserver,
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
pub(crate) fn refine_peak<S: Scalar>(
    problem: &Problem<S>,
    tracker: &mut dyn FlowObserver,
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

/// Margin samples per step in event location ([`locate`], [`may_cross`]).
const SUB: usize = 4;

/// Locates, in time order, the events that happen inside the accepted step `dense`,
/// feeding them to the tracker. Margins are sampled at `SUB` equally spaced points (so a
/// condition that holds only briefly inside a step can still be seen), and each crossing is
/// refined by root finding. Returns the events with their times and states.
pub(crate) fn locate<S: Scalar>(
    problem: &Problem<S>,
    tracker: &mut dyn FlowObserver,
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
