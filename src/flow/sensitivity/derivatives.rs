//! Events located on the augmented run, and the derivatives of the event times and final
//! quantities (`derivations/sensitivities.md`, eqs. (Y9)-(Y13)).

use crate::error::Result;
use crate::flow::dense::Dense;
use crate::flow::problem::Problem;
use crate::flow::sensitivity::augmented::{unseeded, Augmented};
use crate::flow::sensitivity::tangent::Tangent;
use crate::flow::sensitivity::Sensitivities;
use crate::moments::population::{correlation, Constants, Reduced};
use crate::observe::{offdiag_norm, Event};
use crate::ode::clock::Clock;
use crate::ode::roots::first_crossing;
use crate::scalar::Scalar;
use crate::setting::{Config, Phases};

/// Samples per step in the search for an event's first crossing.
const SUB: usize = 8;

/// The event function of `event` for neuron `j` (the strong neuron `s` for `t1`), in any
/// scalar (eq. (Y9)): (E1)-(E4) of `derivations/phases.md` without the normalization of
/// (E2), which does not move the root.
pub fn event_value<S: Scalar>(
    event: Event,
    k: &Constants<S>,
    phases: &Phases,
    s: usize,
    j: usize,
    x: &Reduced<S>,
) -> S {
    let ctx = x.ctx();
    let c = |v: f64| S::from_f64(v, ctx);
    match event {
        Event::T1 => x.a[s].clone().abs() - c(phases.t1),
        Event::T2 => {
            let alpha1_6 = c(2.0) * k.h[0].clone();
            let rms_sq = |i: usize| {
                k.ek2.clone() * alpha1_6.clone() * x.a[i].cube().sq()
                    + c(15.0) * k.n.clone() * k.s6.clone() * x.gram.at(i, i).cube()
            };
            x.e.at(j, s).sq() * rms_sq(s) - c(phases.t2 * phases.t2) * rms_sq(j)
        }
        Event::T3 => x.b[j].clone().abs() / x.norm_sq(j).sqrt() - c(phases.t3),
        Event::TEnd => {
            let m = x.neurons();
            let mut acc = S::zero(ctx);
            for i in 0..m {
                for r in 0..m {
                    let d = x.e.at(i, r).clone() - if i == r { c(1.0) } else { c(0.0) };
                    acc = acc + d.sq();
                }
            }
            c(phases.t_end) - acc.sqrt()
        }
    }
}

/// `||E - diag(E)||_F` in any scalar.
fn offdiag<S: Scalar>(x: &Reduced<S>) -> S {
    let m = x.neurons();
    let mut acc = S::zero(x.ctx());
    for j in 0..m {
        for r in 0..m {
            if j != r {
                acc = acc + x.e.at(j, r).sq();
            }
        }
    }
    acc.sqrt()
}

/// The events of the augmented run: times, the augmented states there, whether each
/// happened at its start, the strong neuron and the active neuron of `t2`, `t3`.
pub(crate) struct EventLog {
    pub(crate) phases: Phases,
    k: Constants<f64>,
    pub(crate) times: [Option<f64>; 4],
    pub(crate) states: [Option<Vec<f64>>; 4],
    /// The time shifts `sigma` of the states' sensitivities (eq. (Y14)).
    pub(crate) shifts: [Option<Vec<f64>>; 4],
    pub(crate) at_start: [bool; 4],
    /// The local times (from the current step's start) of the events of the current step.
    pub(crate) local: [Option<f64>; 4],
    pub(crate) strong: Option<usize>,
    pub(crate) active: [usize; 4],
    buf: Vec<f64>,
}

impl EventLog {
    pub(crate) fn new(config: &Config, plain: &Problem<f64>) -> Self {
        EventLog {
            phases: config.phases.clone(),
            k: plain.constants.clone(),
            times: [None; 4],
            states: [None, None, None, None],
            shifts: [None, None, None, None],
            at_start: [false; 4],
            local: [None; 4],
            strong: None,
            active: [0; 4],
            buf: Vec::new(),
        }
    }

    fn margin(&self, e: Event, x: &Reduced<f64>) -> f64 {
        e.margin(&self.k, &self.phases, self.strong, x)
    }

    /// Records the events that hold at `tau = 0` (eq. (E1) with the start `0`).
    pub(crate) fn start(&mut self, plain: &Problem<f64>, y: &[f64]) -> Result<()> {
        let x = plain.unpack(y);
        if self.margin(Event::T1, &x) >= 0.0 {
            self.fire(Event::T1, 0.0, y.to_vec(), &x, true);
        }
        Ok(())
    }

    fn fire(&mut self, e: Event, t: f64, ya: Vec<f64>, x: &Reduced<f64>, at_start: bool) {
        let i = Event::ALL.iter().position(|&v| v == e).unwrap_or(0);
        if e == Event::T1 {
            let m = x.neurons();
            let s = (0..m)
                .max_by(|&p, &q| x.a[p].abs().total_cmp(&x.a[q].abs()))
                .unwrap_or(0);
            self.strong = Some(s);
            self.active[i] = s;
        } else if let Some(s) = self.strong {
            // The neuron whose margin decides the event (the max of (E2), (E3)).
            let m = x.neurons();
            let mut best = (f64::NEG_INFINITY, 0);
            for j in (0..m).filter(|&j| j != s) {
                let v = event_value(e, &self.k, &self.phases, s, j, x);
                let v = match e {
                    Event::T2 => {
                        let tot = event_value(e, &self.k, &self.phases, s, j, x)
                            + 2.0 * self.phases.t2 * self.phases.t2 * {
                                let a16 = 2.0 * self.k.h[0];
                                self.k.ek2 * a16 * x.a[j].powi(6)
                                    + 15.0 * self.k.n * self.k.s6 * x.gram.at(j, j).powi(3)
                            };
                        v / tot
                    }
                    _ => v,
                };
                if v > best.0 {
                    best = (v, j);
                }
            }
            self.active[i] = best.1;
        }
        self.times[i] = Some(t);
        self.states[i] = Some(ya);
        self.at_start[i] = at_start;
    }

    /// Locates the events inside the accepted step from `t0` (its extension `dense`); the
    /// caller replaces the states at the new events by steps of exact length.
    pub(crate) fn step(
        &mut self,
        plain: &Problem<f64>,
        clock: &Clock,
        dense: &Dense<f64>,
    ) -> Result<()> {
        let n = plain.len();
        // Offsets from the step's start, not differences of f64 times (which do not
        // resolve the step at large tau: `derivations/numerics.md`, "Time resolution").
        self.local = [None; 4];
        let (_, h) = dense.span();
        self.buf.resize(dense.eval(0.0).len(), 0.0);
        for (i, &e) in Event::ALL.iter().enumerate() {
            if self.times[i].is_some() {
                continue;
            }
            // The start's offset in this step (`None`: before it, or at `tau = 0`).
            let start = match e.start() {
                None => (clock.value() == 0.0).then_some(0.0),
                Some(s) => {
                    let k = Event::ALL.iter().position(|&v| v == s).unwrap_or(0);
                    if self.times[k].is_none() {
                        continue;
                    }
                    self.local[k]
                }
            };
            let lo = start.unwrap_or(0.0).max(0.0);
            let at = |tl: f64, buf: &mut Vec<f64>| {
                dense.eval_into(tl, buf);
                plain.unpack(&buf[..n])
            };
            let mut buf = std::mem::take(&mut self.buf);
            let x = at(lo, &mut buf);
            if start.is_some() && self.margin(e, &x) >= 0.0 {
                self.local[i] = Some(lo);
                self.fire(e, clock.plus(lo), buf.clone(), &x, true);
                self.buf = buf;
                continue;
            }
            let mut prev = lo;
            let mut found = None;
            for q in 1..=SUB {
                let tl = lo + (h - lo) * q as f64 / SUB as f64;
                let x = at(tl, &mut buf);
                if self.margin(e, &x) >= 0.0 {
                    found = Some((prev, tl));
                    break;
                }
                prev = tl;
            }
            if let Some((a, b)) = found {
                let tl = first_crossing(
                    &mut |tl| {
                        let x = at(tl, &mut buf);
                        self.margin(e, &x)
                    },
                    a,
                    b,
                );
                let x = at(tl, &mut buf);
                self.local[i] = Some(tl);
                self.fire(e, clock.plus(tl), buf.clone(), &x, false);
            }
            self.buf = buf;
        }
        Ok(())
    }
}

/// The located peak of `||E - diag(E)||_F`: its time and the augmented state there.
#[derive(Default)]
pub(crate) struct Peak {
    best: Option<(f64, f64, Vec<f64>)>,
    /// The time shifts of the kept state's sensitivities (eq. (Y14)).
    pub(crate) shift: Vec<f64>,
}

impl Peak {
    /// Locates the root of the rate (E6) inside the step from `t0` (the rate turned from
    /// positive to non-positive across it) and keeps it when it is the largest peak; returns
    /// its local time in the step when kept.
    pub(crate) fn locate(
        &mut self,
        plain: &Problem<f64>,
        clock: &Clock,
        dense: &Dense<f64>,
    ) -> Result<Option<f64>> {
        let n = plain.len();
        let (_, h) = dense.span();
        let mut buf = dense.eval(0.0);
        let mut ws = plain.workspace();
        let mut f = vec![0.0; n];
        let mut rate = |tl: f64| {
            dense.eval_into(tl, &mut buf);
            match plain.rhs_into(&buf[..n], &mut ws, &mut f) {
                Ok(()) => -plain.offdiag_rate(&buf[..n], &f),
                Err(_) => f64::NAN,
            }
        };
        let tl = first_crossing(&mut rate, 0.0, h);
        let ya = dense.eval(tl);
        let v = offdiag_norm(&plain.unpack(&ya[..n]));
        if self.best.as_ref().is_none_or(|b| v > b.1) {
            self.best = Some((clock.plus(tl), v, ya));
            return Ok(Some(tl));
        }
        Ok(None)
    }

    /// Replaces the kept peak's state.
    pub(crate) fn set_state(&mut self, ya: Vec<f64>) {
        if let Some(b) = self.best.as_mut() {
            b.2 = ya;
        }
    }
}

/// `sum_(j != r trainable) E_jr F_jr` (the rate (E6)) in any scalar, from the state
/// vector's head entries `y[from..]` and the right-hand side `f`.
fn rate<S: Scalar>(plain: &Problem<f64>, y: &[S], f: &[S]) -> S {
    let from = plain.head_from();
    let mut acc = S::zero(y[0].ctx());
    for (i, &(j, r)) in plain.trainable().iter().enumerate() {
        if j != r {
            acc = acc + y[from + i].clone() * f[from + i].clone();
        }
    }
    acc
}

/// `-(total derivative in theta) / (rate along the flow)` (eqs. (Y10), (Y13)).
fn ift<const K: usize>(g: &Tangent<f64, K>, along: f64, k: usize) -> Vec<f64> {
    (0..k).map(|p| -g.d[p] / along).collect()
}

/// Builds [`Sensitivities`] from the run's events, peak and final state. Each state's
/// sensitivities are `S~ = S - F sigma` with its shift `sigma` (eq. (Y14)): an event time's
/// derivative is the implicit function theorem's on `S~` minus `sigma`, a value's gains
/// `(grad Q . F) sigma`, and at a moving end the two shifts cancel exactly.
#[allow(clippy::too_many_arguments)]
pub(crate) fn assemble<const K: usize>(
    aug: &mut Augmented<K>,
    plain: &Problem<f64>,
    config: &Config,
    log: &EventLog,
    peak: &Peak,
    (tau_final, y_final, shift_final): (f64, &[f64], &[f64]),
    steps: [u64; 2],
    evals: [u64; 2],
) -> Result<Sensitivities> {
    let (n, k) = (aug.n, aug.k);
    let seeded = aug.constants().clone();
    let plain_k = unseeded(&seeded);
    let phases = &config.phases;
    let f_at = |y: &[f64]| plain.rhs(y);
    // The implicit function theorem on S~ (before the shift), and its shift.
    let mut raw: [Option<(Vec<f64>, Vec<f64>)>; 4] = [None, None, None, None];
    for (i, &e) in Event::ALL.iter().enumerate() {
        let Some(ya) = &log.states[i] else { continue };
        let shift = log.shifts[i].clone().unwrap_or_else(|| vec![0.0; k]);
        if log.at_start[i] {
            raw[i] = match e.start() {
                None => Some((vec![0.0; k], shift)),
                Some(s) => raw[Event::ALL.iter().position(|&v| v == s).unwrap_or(0)].clone(),
            };
            continue;
        }
        let s = log.strong.unwrap_or(0);
        let j = log.active[i];
        let (xt, _, _) = aug.eval_tangent(ya)?;
        let g = event_value(e, &seeded, phases, s, j, &xt);
        let f = f_at(&ya[..n])?;
        let (xa, _, _) = aug.eval_along(&ya[..n], &f)?;
        let ga = event_value(e, &plain_k, phases, s, j, &xa);
        raw[i] = Some((ift(&g, ga.d[0], k), shift));
    }
    let events = raw.clone().map(|r| r.map(|(d, s)| unshift(&d, &s)));
    // (Y11): the final quantities, with the time term when the run stopped at t_end.
    let ff = f_at(&y_final[..n])?;
    let (xt, _, lt) = aug.eval_tangent(y_final)?;
    let (xa, _, la) = aug.eval_along(&y_final[..n], &ff)?;
    let stop = log.times[3]
        .filter(|&t| t == tau_final)
        .and(raw[3].clone())
        .map(|r| r.0);
    let total = |v: &Tangent<f64, K>, along: f64| -> Vec<f64> {
        (0..k)
            .map(|p| v.d[p] + along * stop.as_ref().map_or(shift_final[p], |dt| dt[p]))
            .collect()
    };
    let loss_final = (lt.v, total(&lt, la.d[0]));
    let corr_final = if xt.neurons() >= 2 {
        let c = correlation(&seeded, &xt).at(0, 1).clone();
        let ca = correlation(&plain_k, &xa).at(0, 1).clone();
        match (c, ca) {
            (Some(c), Some(ca)) => Some((c.v, total(&c, ca.d[0]))),
            _ => None,
        }
    } else {
        None
    };
    let (offdiag_peak, peak_time) = match &peak.best {
        None => (None, None),
        Some((tp, _, ya)) => {
            let (xt, ft, _) = aug.eval_tangent(ya)?;
            let nv = offdiag(&xt);
            let yt = aug.problem.pack(&xt);
            let r = rate(plain, &yt, &ft);
            let f = f_at(&ya[..n])?;
            let (xa, fa, _) = aug.eval_along(&ya[..n], &f)?;
            let na = offdiag(&xa);
            let ya_t = aug.problem.pack(&xa);
            let ra = rate(plain, &ya_t, &fa);
            let sh = |p: usize| peak.shift.get(p).copied().unwrap_or(0.0);
            (
                Some((nv.v, (0..k).map(|p| nv.d[p] + na.d[0] * sh(p)).collect())),
                Some((*tp, unshift(&ift(&r, ra.d[0], k), &peak.shift))),
            )
        }
    };
    Ok(Sensitivities {
        parameters: Vec::new(),
        event_times: log.times,
        events,
        loss_final,
        corr_final,
        offdiag_peak,
        peak_time,
        tau_final,
        steps,
        evals,
        stiff_from: None,
        steps_by_method: [0, 0],
    })
}

/// `d - sigma` componentwise (`sigma` empty: zero).
fn unshift(d: &[f64], sigma: &[f64]) -> Vec<f64> {
    d.iter()
        .enumerate()
        .map(|(p, x)| x - sigma.get(p).copied().unwrap_or(0.0))
        .collect()
}
