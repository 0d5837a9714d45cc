//! Event times bracketed on the tube and the outcome decided on it
//! (`derivations/interval.md`, eq. (V16); the events of `derivations/phases.md`,
//! (E1)-(E5)).
//!
//! An event is the first time at or after its start at which its margin is `>= 0`. It is
//! certified in `[lo, hi]` when the margin is `< 0` on every box of the tube over
//! `[start_lo, lo]` (leftmost-first bisection of the steps) and `>= 0` on the tube's box at
//! one time `hi >= start_hi`: then the first crossing after the (uncertain) start lies in
//! `[lo, hi]`. Margins are sign-equivalent rewritings of (E1)-(E4) without divisions or
//! roots.

use crate::interval::certified;
use crate::moments::population::{Constants, Reduced};
use crate::observe::Outcome;
use crate::scalar::Scalar;
use crate::setting::{Config, Phases};
use crate::validated::tube::{Step, Validated};
use crate::validated::Fi;

/// A certified event time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bracket {
    /// Lower bound.
    pub lo: f64,
    /// Upper bound.
    pub hi: f64,
}

impl Bracket {
    /// `(hi - lo) / hi` (0 for `[0, 0]`).
    pub fn rel_width(&self) -> f64 {
        if self.hi == 0.0 {
            0.0
        } else {
            (self.hi - self.lo) / self.hi.abs()
        }
    }
}

/// The state of one event's certification.
#[derive(Clone, Debug)]
enum Watch {
    /// Its start is not certified yet.
    Idle,
    /// The margin is certified negative from `from` up to the start of step `next`.
    Scanning {
        from: f64,
        start_hi: f64,
        next: usize,
    },
    /// Negative up to `lo`; looking for a time `>= start_hi` where it is certified `>= 0`.
    Seeking {
        lo: f64,
        start_hi: f64,
        next: usize,
        first: usize,
    },
    /// Certified.
    Done(Bracket),
}

/// The sign of a margin over a box.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sign {
    Neg,
    Pos,
    Unknown,
}

/// The event names, in the order of `derivations/phases.md`.
pub const EVENTS: [&str; 4] = ["t1", "t2", "t3", "t_end"];

/// Watches the tube's steps: brackets the four events and decides the strong neuron and
/// the outcome.
pub struct Certifier {
    k: Constants<Fi>,
    phases: Phases,
    watch: [Watch; 4],
    /// The strong neuron (certified at `t1`).
    pub strong: Option<usize>,
    /// Why certification stopped (an event the tube cannot bracket, the strong neuron).
    pub failure: Option<String>,
    /// The outcome (E5) on the tube over the bracket of `t_end`, when certified.
    pub outcome: Option<Outcome>,
}

impl Certifier {
    /// A certifier for `config`'s thresholds.
    pub fn new(config: &Config) -> Self {
        Certifier {
            k: Constants::new(&config.setting, ()),
            phases: config.phases.clone(),
            watch: [
                Watch::Scanning {
                    from: 0.0,
                    start_hi: 0.0,
                    next: 0,
                },
                Watch::Idle,
                Watch::Idle,
                Watch::Idle,
            ],
            strong: None,
            failure: None,
            outcome: None,
        }
    }

    /// The certified bracket of event `i` (0..4), if any.
    pub fn bracket(&self, i: usize) -> Option<Bracket> {
        match self.watch[i] {
            Watch::Done(b) => Some(b),
            _ => None,
        }
    }

    /// Whether `t_end` is certified or certification failed (the tube can stop).
    pub fn finished(&self) -> bool {
        self.failure.is_some() || self.bracket(3).is_some()
    }

    /// The reduced state over a box of the state vector, `None` when it is undefined.
    fn reduced(v: &Validated, bx: &[Fi]) -> Option<Reduced<Fi>> {
        if !bx.iter().all(Fi::valid) {
            return None;
        }
        let (x, failure) = certified(|| v.boxes.unpack(bx));
        let ok = failure.is_none()
            && x.a
                .iter()
                .chain(&x.b)
                .chain(x.gram.entries())
                .chain(x.e.entries())
                .all(Fi::valid);
        ok.then_some(x)
    }

    /// The sign of event `ev`'s margin (sign-equivalent to (E1)-(E4)) on the box `bx`.
    fn sign(&self, v: &Validated, ev: usize, bx: &[Fi]) -> Sign {
        let Some(x) = Self::reduced(v, bx) else {
            return Sign::Unknown;
        };
        let m = x.neurons();
        let p = |v: f64| Fi::point(v);
        let (margin, guard) = match ev {
            0 => {
                let best = x.a.iter().fold(p(-1.0), |acc, a| acc.max(&a.abs()));
                (best - p(self.phases.t1), 1.0)
            }
            1 => {
                let Some(s) = self.strong else {
                    return Sign::Unknown;
                };
                let alpha1_6 = p(2.0) * self.k.h[0];
                let rms = |j: usize| {
                    self.k.ek2 * alpha1_6 * x.a[j].cube().sq()
                        + p(15.0) * self.k.n * self.k.s6 * x.gram.at(j, j).cube()
                };
                let mut best = p(-1.0);
                let mut guard = 1.0f64;
                for j in (0..m).filter(|&j| j != s) {
                    let big = x.e.at(j, s).sq() * rms(s);
                    let own = p(self.phases.t2) * p(self.phases.t2) * rms(j);
                    // (big - own) / (big + own) has the sign of big - own when
                    // big + own > 0 (and is -1 when it is 0).
                    guard = guard.min((big + own).lo());
                    best = best.max(&(big - own));
                }
                (best, guard)
            }
            2 => {
                let Some(s) = self.strong else {
                    return Sign::Unknown;
                };
                let t3 = p(self.phases.t3) * p(self.phases.t3);
                let mut best = p(-1.0);
                let mut guard = 1.0f64;
                for j in (0..m).filter(|&j| j != s) {
                    // |b| / ||w|| >= t3 iff b^2 - t3^2 ||w||^2 >= 0, for ||w|| > 0.
                    let norm = x.a[j].sq() + x.b[j].sq() + *x.gram.at(j, j);
                    guard = guard.min(norm.lo());
                    best = best.max(&(x.b[j].sq() - t3 * norm));
                }
                (best, guard)
            }
            _ => {
                let mut acc = p(0.0);
                for j in 0..m {
                    for r in 0..m {
                        let e = *x.e.at(j, r) - p(if j == r { 1.0 } else { 0.0 });
                        acc = acc + e.sq();
                    }
                }
                (p(self.phases.t_end) * p(self.phases.t_end) - acc, 1.0)
            }
        };
        if !margin.valid() {
            Sign::Unknown
        } else if margin.hi() < 0.0 {
            Sign::Neg
        } else if margin.lo() >= 0.0 && guard > 0.0 {
            Sign::Pos
        } else {
            Sign::Unknown
        }
    }

    /// Leftmost-first bisection of `[ta, tb]` inside `step`: `None` when the margin is
    /// certified negative on all of it, else the time up to which it is.
    fn scan(
        &self,
        v: &Validated,
        ev: usize,
        step: &Step,
        ta: f64,
        tb: f64,
        depth: u32,
    ) -> Option<f64> {
        if self.sign(v, ev, &step.box_over(ta, tb)) == Sign::Neg {
            return None;
        }
        let mid = 0.5 * (ta + tb);
        if depth >= 60 || mid <= ta || mid >= tb {
            return Some(ta);
        }
        match self.scan(v, ev, step, ta, mid, depth + 1) {
            None => self.scan(v, ev, step, mid, tb, depth + 1),
            found => found,
        }
    }

    /// A time in `[from, step.t1]` at which the margin is certified `>= 0`: `from`, then
    /// `from + w` for growing `w`, then the step's end.
    fn positive_in(&self, v: &Validated, ev: usize, step: &Step, from: f64) -> Option<f64> {
        let from = from.max(step.t0);
        let mut w = (from.abs() * 1e-15).max(f64::MIN_POSITIVE);
        let mut t = from;
        loop {
            if self.sign(v, ev, &step.box_over(t, t)) == Sign::Pos {
                return Some(t);
            }
            if t >= step.t1 {
                return None;
            }
            t = (from + w).min(step.t1);
            w *= 2.0;
        }
    }

    /// The hull of the tube over `[ta, tb]`.
    fn hull(steps: &[Step], ta: f64, tb: f64) -> Vec<Fi> {
        let mut out: Option<Vec<Fi>> = None;
        for s in steps.iter().filter(|s| s.t1 >= ta && s.t0 <= tb) {
            let b = s.box_over(ta.max(s.t0), tb.min(s.t1));
            out = Some(match out {
                None => b,
                Some(o) => o.iter().zip(&b).map(|(x, y)| x.hull(y)).collect(),
            });
        }
        out.unwrap_or_default()
    }

    /// Index of the step containing `t`.
    fn step_of(steps: &[Step], t: f64) -> usize {
        steps
            .iter()
            .position(|s| s.t1 >= t)
            .unwrap_or(steps.len().saturating_sub(1))
    }

    /// Processes the steps so far; returns whether the tube can stop.
    pub fn observe(&mut self, v: &Validated, steps: &[Step]) -> bool {
        loop {
            let mut progressed = false;
            for ev in 0..4 {
                progressed |= self.advance(v, ev, steps);
                if self.failure.is_some() {
                    return true;
                }
            }
            if !progressed {
                return self.finished();
            }
        }
    }

    /// Advances event `ev` over the steps; returns whether it changed state.
    fn advance(&mut self, v: &Validated, ev: usize, steps: &[Step]) -> bool {
        match self.watch[ev].clone() {
            Watch::Idle | Watch::Done(_) => false,
            Watch::Scanning {
                from,
                start_hi,
                next,
            } => {
                for (idx, step) in steps.iter().enumerate().skip(next) {
                    let a = from.max(step.t0);
                    if a >= step.t1 {
                        continue;
                    }
                    if let Some(lo) = self.scan(v, ev, step, a, step.t1, 0) {
                        self.watch[ev] = Watch::Seeking {
                            lo,
                            start_hi,
                            next: idx,
                            first: idx,
                        };
                        return true;
                    }
                }
                let moved = next != steps.len();
                self.watch[ev] = Watch::Scanning {
                    from,
                    start_hi,
                    next: steps.len(),
                };
                moved
            }
            Watch::Seeking {
                lo,
                start_hi,
                next,
                first,
            } => {
                for (idx, step) in steps.iter().enumerate().skip(next) {
                    if step.t1 < start_hi.max(lo) {
                        continue;
                    }
                    if let Some(hi) = self.positive_in(v, ev, step, start_hi.max(lo)) {
                        self.done(v, ev, Bracket { lo, hi }, steps);
                        return true;
                    }
                    if idx > first + 3 {
                        self.failure = Some(format!(
                            "the tube cannot bracket {}: its margin is undecided from tau = {lo:e}",
                            EVENTS[ev]
                        ));
                        return true;
                    }
                }
                self.watch[ev] = Watch::Seeking {
                    lo,
                    start_hi,
                    next: steps.len(),
                    first,
                };
                false
            }
        }
    }

    /// Records event `ev` and starts the events that start at it.
    fn done(&mut self, v: &Validated, ev: usize, b: Bracket, steps: &[Step]) {
        self.watch[ev] = Watch::Done(b);
        let scan_from = |b: Bracket| Watch::Scanning {
            from: b.lo,
            start_hi: b.hi,
            next: Self::step_of(steps, b.lo),
        };
        match ev {
            0 => {
                // The strong neuron: the same argmax of |a_j| on the whole bracket.
                let Some(x) = Self::reduced(v, &Self::hull(steps, b.lo, b.hi)) else {
                    self.failure = Some("the tube over the bracket of t1 is undefined".into());
                    return;
                };
                let abs: Vec<Fi> = x.a.iter().map(|a| scalar_abs(*a)).collect();
                let strong = (0..abs.len())
                    .find(|&s| (0..abs.len()).all(|k| k == s || abs[s].lo() > abs[k].hi()));
                match strong {
                    Some(s) => {
                        self.strong = Some(s);
                        self.watch[1] = scan_from(b);
                        self.watch[2] = scan_from(b);
                    }
                    None => {
                        self.failure = Some(format!(
                            "the strong neuron at t1 is not decided: the enclosures of |a_j| \
                             overlap on [{:e}, {:e}]",
                            b.lo, b.hi
                        ));
                    }
                }
            }
            2 => self.watch[3] = scan_from(b),
            3 => {
                self.outcome = Self::reduced(v, &Self::hull(steps, b.lo, b.hi))
                    .and_then(|x| decide_outcome(&x, self.phases.outcome_cos));
            }
            _ => {}
        }
    }
}

fn scalar_abs(x: Fi) -> Fi {
    crate::scalar::Scalar::abs(x)
}

/// The rule (E5) in three-valued logic on a box: `Some` only when every state of the box
/// has the same outcome.
pub fn decide_outcome(x: &Reduced<Fi>, c: f64) -> Option<Outcome> {
    let m = x.neurons();
    let c2 = Fi::point(c) * Fi::point(c);
    // has(j, l): cos_l(w_j) >= c, i.e. feature^2 >= c^2 ||w_j||^2 with ||w_j|| > 0.
    let has = |j: usize, l: usize| -> Option<bool> {
        let f = if l == 0 { x.a[j] } else { x.b[j] };
        let norm = f.sq() + if l == 0 { x.b[j].sq() } else { x.a[j].sq() } + *x.gram.at(j, j);
        let diff = f.sq() - c2 * norm;
        if !diff.valid() {
            None
        } else if diff.hi() < 0.0 {
            Some(false)
        } else if diff.lo() >= 0.0 && norm.lo() > 0.0 {
            Some(true)
        } else {
            None
        }
    };
    let and = |a: Option<bool>, b: Option<bool>| match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    };
    let or = |a: Option<bool>, b: Option<bool>| match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    };
    let mut both = Some(false);
    for j in 0..m {
        for k in 0..m {
            if j != k {
                both = or(both, and(has(j, 0), has(k, 1)));
            }
        }
    }
    let all = |l: usize| {
        let mut acc = Some(true);
        for j in 0..m {
            acc = and(acc, has(j, l));
        }
        acc
    };
    let collapse = or(all(0), all(1));
    match (both, collapse) {
        (Some(true), _) => Some(Outcome::BothFeatures),
        (Some(false), Some(true)) => Some(Outcome::Collapse),
        (Some(false), Some(false)) => Some(Outcome::Undecided),
        _ => None,
    }
}
