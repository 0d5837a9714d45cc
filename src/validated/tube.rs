//! The steps of the validated flow (`derivations/interval.md`, (V13)-(V15)): a guide
//! polynomial per step (the Taylor polynomial of the flow in `f64`), its defect enclosed in
//! interval arithmetic (point coefficients plus a Taylor remainder over the step), the
//! logarithmic norm of the interval Jacobian over an a priori box, and the Gronwall bound
//! that makes the box self-validating.

use crate::error::{Error, Result};
use crate::flow::problem::{Coordinates, Problem};
use crate::interval::certified;
use crate::moments::population::Reduced;
use crate::scalar::Scalar;
use crate::setting::Config;
use crate::square::Square;
use crate::validated::{Fi, Tay};

/// The order `N` of the guide's Taylor polynomial.
pub const ORDER: usize = 14;
const K: usize = ORDER + 1;

/// Tuning of the tube.
#[derive(Clone, Copy, Debug)]
pub struct TubeOptions {
    /// Target of `||p_N||_D h^N`, the size of the last Taylor term per step (weighted norm).
    pub tol: f64,
    /// The floor of the weights: `d_i = |y_i| + floor`.
    pub floor: f64,
    /// At most this many steps.
    pub max_steps: usize,
}

impl Default for TubeOptions {
    fn default() -> Self {
        TubeOptions {
            tol: 1e-15,
            floor: 1e-9,
            max_steps: 200_000,
        }
    }
}

/// One certified step on `[t0, t1]`: for every `t` in it, the exact solution lies in
/// `p(t - t0) +- eps_tube d` componentwise, and at `t1` in `p(t1 - t0) +- eps1 d` (V15).
#[derive(Clone, Debug)]
pub struct Step {
    /// Start.
    pub t0: f64,
    /// End.
    pub t1: f64,
    /// `coef[j][i]`: the coefficient of `s^j` of component `i` of the guide `p`.
    pub coef: Vec<Vec<f64>>,
    /// The weights of the norm `||x||_D = max_i |x_i| / d_i`.
    pub d: Vec<f64>,
    /// The error bound on the whole step.
    pub eps_tube: f64,
    /// The error bound at `t1`.
    pub eps1: f64,
    /// The bound of the logarithmic norm on the a priori box.
    pub mu: f64,
}

impl Step {
    /// `t - t0` enclosed, clamped to the step.
    fn offset(&self, t: f64) -> Fi {
        let s = Fi::point(t) - Fi::point(self.t0);
        Fi::new(s.lo().max(0.0), s.hi().max(0.0))
    }

    /// `p(s)` for `s` in the interval `s` (Horner in interval arithmetic).
    pub fn poly(&self, s: Fi) -> Vec<Fi> {
        let n = self.d.len();
        (0..n)
            .map(|i| {
                let mut acc = Fi::point(self.coef[ORDER][i]);
                for j in (0..ORDER).rev() {
                    acc = acc * s + Fi::point(self.coef[j][i]);
                }
                acc
            })
            .collect()
    }

    /// `p'(s)` for `s` in the interval `s`.
    fn poly_dot(&self, s: Fi) -> Vec<Fi> {
        let n = self.d.len();
        (0..n)
            .map(|i| {
                let mut acc = Fi::point(ORDER as f64 * self.coef[ORDER][i]);
                for j in (1..ORDER).rev() {
                    acc = acc * s + Fi::point(j as f64 * self.coef[j][i]);
                }
                acc
            })
            .collect()
    }

    /// A box holding the exact solution at every time of `[ta, tb]` (inside the step): the
    /// mean-value form `p(sa) + p'([sa, sb]) [0, sb - sa]` widened by `eps_tube d`.
    pub fn box_over(&self, ta: f64, tb: f64) -> Vec<Fi> {
        let (sa, sb) = (self.offset(ta), self.offset(tb));
        let range = sa.hull(&sb);
        let len = Fi::new(0.0, (sb - sa).hi().max(0.0));
        let p = self.poly(sa);
        let dp = self.poly_dot(range);
        p.iter()
            .zip(&dp)
            .zip(&self.d)
            .map(|((p, dp), d)| {
                let r = Fi::point(self.eps_tube) * Fi::point(*d);
                *p + *dp * len + Fi::new(-r.hi(), r.hi())
            })
            .collect()
    }

    /// The enclosure at `t1`.
    pub fn end_box(&self) -> Vec<Fi> {
        let p = self.poly(self.offset(self.t1));
        p.iter()
            .zip(&self.d)
            .map(|(p, d)| {
                let r = Fi::point(self.eps1) * Fi::point(*d);
                *p + Fi::new(-r.hi(), r.hi())
            })
            .collect()
    }
}

/// The flow of one configuration in the three scalars the tube needs.
pub struct Validated {
    guide: Problem<Tay<f64, K>>,
    series: Problem<Tay<Fi, K>>,
    jac: Problem<Tay<Fi, 2>>,
    jac_f64: Problem<Tay<f64, 2>>,
    /// The flow in `Fi` (unpacking boxes of the state vector).
    pub boxes: Problem<Fi>,
    /// Tuning.
    pub options: TubeOptions,
}

fn lift_reduced<S: Scalar>(x: &Reduced<Fi>, f: impl Fn(Fi) -> S) -> Reduced<S> {
    let m = x.neurons();
    Reduced {
        a: x.a.iter().map(|&v| f(v)).collect(),
        b: x.b.iter().map(|&v| f(v)).collect(),
        gram: Square::from_fn(m, |i, j| f(*x.gram.at(i, j))),
        e: Square::from_fn(m, |i, j| f(*x.e.at(i, j))),
    }
}

/// The result of [`Validated::run`].
pub struct TubeRun {
    /// The certified steps, in order.
    pub steps: Vec<Step>,
    /// Why the tube stopped before `t_max` (`None`: the observer stopped it or it reached
    /// `t_max`).
    pub failure: Option<String>,
}

impl Validated {
    /// The flow of `config` in decay coordinates through the initial box `x0` (its head's
    /// untrainable entries must be points).
    pub fn new(config: &Config, x0: &Reduced<Fi>, options: TubeOptions) -> Self {
        let c = Coordinates::Decay;
        Validated {
            guide: Problem::with_coordinates(
                config,
                &lift_reduced(x0, |v| Tay::constant(v.mid())),
                c,
                (),
            ),
            series: Problem::with_coordinates(config, &lift_reduced(x0, Tay::constant), c, ()),
            jac: Problem::with_coordinates(config, &lift_reduced(x0, Tay::constant), c, ()),
            jac_f64: Problem::with_coordinates(
                config,
                &lift_reduced(x0, |v| Tay::constant(v.mid())),
                c,
                (),
            ),
            boxes: Problem::with_coordinates(config, x0, c, ()),
            options,
        }
    }

    /// The scale `|y_i| + floor` of each component (step size control).
    fn scale(&self, y: &[f64]) -> Vec<f64> {
        y.iter().map(|v| v.abs() + self.options.floor).collect()
    }

    /// The weights of the norm at the center `y` (V14): the Perron vector of the Metzler
    /// majorant `M_ii = J_ii`, `M_il = |J_il|` of the Jacobian at `y` (for which
    /// `mu_D(M)` is the Perron root, the smallest over diagonal weights), by power iteration
    /// on `M + c I`; floored at `1e-10` of the largest. Any positive weights give a valid
    /// bound; these make it small.
    fn weights(&self, y: &[f64]) -> Vec<f64> {
        let n = y.len();
        let scale = self.scale(y);
        let mut cols = Vec::with_capacity(n);
        for l in 0..n {
            let v: Vec<Tay<f64, 2>> = y
                .iter()
                .enumerate()
                .map(|(i, &b)| Tay::variable(b, if i == l { 1.0 } else { 0.0 }))
                .collect();
            match self.jac_f64.rhs(&v) {
                Ok(c) => cols.push(c),
                Err(_) => return scale,
            }
        }
        let m = |i: usize, l: usize| {
            let j = cols[l][i].c[1];
            if i == l {
                j
            } else {
                j.abs()
            }
        };
        let shift = (0..n).map(|i| -m(i, i)).fold(0.0, f64::max)
            + (0..n)
                .map(|i| (0..n).map(|l| m(i, l).abs()).sum::<f64>())
                .fold(0.0, f64::max)
                * 1e-3;
        let mut v = scale.clone();
        for _ in 0..200 {
            let w: Vec<f64> = (0..n)
                .map(|i| (0..n).map(|l| m(i, l) * v[l]).sum::<f64>() + shift * v[i])
                .collect();
            let top = w.iter().copied().fold(0.0, f64::max);
            if !(top > 0.0 && top.is_finite()) {
                return scale;
            }
            v = w.iter().map(|x| x / top).collect();
        }
        let top = v.iter().copied().fold(0.0, f64::max);
        v.iter().map(|x| x.max(1e-10 * top)).collect()
    }

    /// The guide's Taylor coefficients at `y` (plain `f64`; any polynomial would do, its
    /// defect is what is enclosed).
    fn guide_coefficients(&self, y: &[f64]) -> Result<Vec<Vec<f64>>> {
        let n = y.len();
        let mut ser: Vec<Tay<f64, K>> = y.iter().map(|&v| Tay::constant(v)).collect();
        let mut ws = self.guide.workspace();
        let mut dy = ser.clone();
        for k in 0..ORDER {
            self.guide.rhs_into(&ser, &mut ws, &mut dy)?;
            for i in 0..n {
                ser[i].c[k + 1] = dy[i].c[k] / (k + 1) as f64;
            }
        }
        Ok((0..K)
            .map(|j| ser.iter().map(|s| s.c[j]).collect())
            .collect())
    }

    /// `f` on a vector of series in `Fi`, or the reason it is not certified.
    fn series_rhs<const L: usize>(
        problem: &Problem<Tay<Fi, L>>,
        y: &[Tay<Fi, L>],
    ) -> std::result::Result<Vec<Tay<Fi, L>>, String> {
        let (out, failure) = certified(|| problem.rhs(y));
        match (out, failure) {
            (Ok(v), None) => Ok(v),
            (_, Some(f)) => Err(f),
            (Err(e), None) => Err(e.to_string()),
        }
    }

    /// One step from the center `y` with error `eps0` (norm with the weights of `y`), of size
    /// at most `h_max`. Errors (as the reason) when no step size down to `h_max * 2^-30`
    /// closes the bound.
    fn step(&self, t0: f64, y: &[f64], eps0: f64, h_max: f64) -> std::result::Result<Step, String> {
        let n = y.len();
        let d = self.weights(y);
        let w = self.scale(y);
        let coef = self.guide_coefficients(y).map_err(|e| e.to_string())?;
        // Step size from the last two Taylor terms (V16).
        let mut h = h_max;
        for j in [ORDER - 1, ORDER] {
            let size = (0..n).map(|i| coef[j][i].abs() / w[i]).fold(0.0, f64::max);
            if size > 0.0 {
                h = h.min(0.9 * (self.options.tol / size).powf(1.0 / j as f64));
            }
        }
        // The point part of the defect (V13): delta_j = (j + 1) p_{j+1} - g_j(0).
        let pts: Vec<Tay<Fi, K>> = (0..n)
            .map(|i| Tay::from_coefficients(std::array::from_fn(|j| Fi::point(coef[j][i]))))
            .collect();
        let g0 = Self::series_rhs(&self.series, &pts)?;
        let dsize: Vec<f64> = (0..ORDER)
            .map(|j| {
                (0..n)
                    .map(|i| {
                        let delta =
                            Fi::point((j + 1) as f64) * Fi::point(coef[j + 1][i]) - g0[i].c[j];
                        (delta.abs() / Fi::point(d[i])).hi()
                    })
                    .fold(0.0, f64::max)
            })
            .collect();
        let mut last = String::new();
        for _ in 0..30 {
            let t1 = t0 + h;
            let hh = (Fi::point(t1) - Fi::point(t0)).hi();
            match self.try_step(&coef, &d, &dsize, eps0, hh) {
                Ok((eps_tube, eps1, mu)) => {
                    return Ok(Step {
                        t0,
                        t1,
                        coef,
                        d,
                        eps_tube,
                        eps1,
                        mu,
                    });
                }
                Err(why) => last = why,
            }
            h *= 0.5;
        }
        Err(format!(
            "no step size closes the bound at tau = {t0:e}: {last}"
        ))
    }

    /// The bounds of one step of length at most `hh` (V13)-(V15): `(eps_tube, eps1, mu)`.
    fn try_step(
        &self,
        coef: &[Vec<f64>],
        d: &[f64],
        dsize: &[f64],
        eps0: f64,
        hh: f64,
    ) -> std::result::Result<(f64, f64, f64), String> {
        let n = d.len();
        let sigma = Fi::new(0.0, hh);
        let h = Fi::point(hh);
        // q_i(sigma) = p^(i)(sigma) / i! over the step: the base of the remainder series.
        let binom = |j: usize, i: usize| -> f64 {
            (0..i).fold(1.0, |acc, k| acc * (j - k) as f64 / (k + 1) as f64)
        };
        let q: Vec<Tay<Fi, K>> = (0..n)
            .map(|c| {
                Tay::from_coefficients(std::array::from_fn(|i| {
                    let mut acc = Fi::point(binom(ORDER, i)) * Fi::point(coef[ORDER][c]);
                    for j in (i..ORDER).rev() {
                        acc = acc * sigma + Fi::point(binom(j, i)) * Fi::point(coef[j][c]);
                    }
                    acc
                }))
            })
            .collect();
        let g = Self::series_rhs(&self.series, &q)?;
        let rem = (0..n)
            .map(|c| (g[c].c[ORDER].abs() / Fi::point(d[c])).hi())
            .fold(0.0, f64::max);
        // int_0^h ||delta||_D <= sum_j D_j h^(j+1) / (j+1) + R h^(N+1) / (N+1).
        let mut int = Fi::point(0.0);
        let mut hp = h;
        for (j, &dj) in dsize.iter().enumerate() {
            int = int + Fi::point(dj) * hp / Fi::point((j + 1) as f64);
            hp = hp * h;
        }
        int = int + Fi::point(rem) * hp / Fi::point(K as f64);
        let int = int.hi();
        // The a priori box: the hull of p over the step widened by E d; E bootstrapped.
        let bp: Vec<Fi> = q.iter().map(|s| s.c[0]).collect();
        let mut e_guess = 2.0 * (eps0 + int) + f64::MIN_POSITIVE;
        for _ in 0..4 {
            let bx: Vec<Fi> = bp
                .iter()
                .zip(d)
                .map(|(b, di)| {
                    let r = (Fi::point(e_guess) * Fi::point(*di)).hi();
                    *b + Fi::new(-r, r)
                })
                .collect();
            let mu = self.log_norm(&bx, d)?;
            let grow = (Fi::point(mu) * h).exp().hi();
            let g1 = grow.max(1.0);
            let eps_bar = (Fi::point(g1) * (Fi::point(eps0) + Fi::point(int))).hi();
            if eps_bar < e_guess {
                let eps1 =
                    (Fi::point(grow) * Fi::point(eps0) + Fi::point(g1) * Fi::point(int)).hi();
                return Ok((eps_bar, eps1, mu));
            }
            e_guess = 2.0 * eps_bar;
        }
        Err(format!("the a priori box does not close (h = {hh:e})"))
    }

    /// An upper bound of the logarithmic norm `mu_D(J)` over every `J` in the interval
    /// Jacobian on the box `bx` (V14).
    fn log_norm(&self, bx: &[Fi], d: &[f64]) -> std::result::Result<f64, String> {
        let n = bx.len();
        let mut cols = Vec::with_capacity(n);
        for l in 0..n {
            let y: Vec<Tay<Fi, 2>> = bx
                .iter()
                .enumerate()
                .map(|(i, &b)| Tay::variable(b, Fi::point(if i == l { 1.0 } else { 0.0 })))
                .collect();
            cols.push(Self::series_rhs(&self.jac, &y)?);
        }
        let mut mu = f64::NEG_INFINITY;
        for i in 0..n {
            let mut row = Fi::point(cols[i][i].c[1].hi());
            for (l, col) in cols.iter().enumerate() {
                if l != i {
                    row = row + Fi::point(col[i].c[1].mag()) * Fi::point(d[l]) / Fi::point(d[i]);
                }
            }
            mu = mu.max(row.hi());
        }
        if mu.is_finite() {
            Ok(mu)
        } else {
            Err("the Jacobian over the a priori box is not finite".to_string())
        }
    }

    /// Runs the tube from the box `y0` (state vector, decay coordinates) to `t_max`, calling
    /// `observe` with the steps so far after each step; it returns `true` to stop.
    pub fn run(&self, y0: &[Fi], t_max: f64, mut observe: impl FnMut(&[Step]) -> bool) -> TubeRun {
        let mut y: Vec<f64> = y0.iter().map(Fi::mid).collect();
        let mut eps = self.recenter(y0, &y, &self.weights(&y));
        let mut steps: Vec<Step> = Vec::new();
        let mut t = 0.0;
        let mut h_max = f64::INFINITY;
        while t < t_max {
            if steps.len() >= self.options.max_steps {
                return TubeRun {
                    steps,
                    failure: Some(format!(
                        "step budget {} spent at tau = {t:e}",
                        self.options.max_steps
                    )),
                };
            }
            match self.step(t, &y, eps, h_max.min(t_max - t)) {
                Ok(s) => {
                    let end = s.end_box();
                    if !end.iter().all(Fi::valid) {
                        return TubeRun {
                            steps,
                            failure: Some(format!("the enclosure is not finite at tau = {t:e}")),
                        };
                    }
                    y = end.iter().map(Fi::mid).collect();
                    eps = self.recenter(&end, &y, &self.weights(&y));
                    h_max = 4.0 * (s.t1 - s.t0);
                    if std::env::var_os("PREDHEAD_TUBE_DEBUG").is_some() {
                        eprintln!(
                            "t {:e} h {:e} eps_tube {:e} eps1 {:e} mu {:e}",
                            s.t0,
                            s.t1 - s.t0,
                            s.eps_tube,
                            s.eps1,
                            s.mu
                        );
                    }
                    t = s.t1;
                    steps.push(s);
                    if observe(&steps) {
                        break;
                    }
                }
                Err(why) => {
                    return TubeRun {
                        steps,
                        failure: Some(why),
                    }
                }
            }
        }
        TubeRun {
            steps,
            failure: None,
        }
    }

    /// The radius, in the norm of the weights at `y`, of the box `b` around the center `y`.
    fn recenter(&self, b: &[Fi], y: &[f64], d: &[f64]) -> f64 {
        b.iter()
            .zip(y)
            .zip(d)
            .map(|((b, &c), &di)| {
                let r = (Fi::point(b.hi()) - Fi::point(c))
                    .hi()
                    .max((Fi::point(c) - Fi::point(b.lo())).hi());
                (Fi::point(r) / Fi::point(di)).hi()
            })
            .fold(0.0, f64::max)
    }
}

/// Packs a reduced box into the state vector of `problem` (decay coordinates), or the
/// reason it cannot.
///
/// # Errors
///
/// [`Error::Numerical`] when a coordinate change is undefined on the box (a noise part whose
/// enclosure reaches 0).
pub fn pack_box(problem: &Problem<Fi>, x: &Reduced<Fi>) -> Result<Vec<Fi>> {
    let (y, failure) = certified(|| problem.pack(x));
    if let Some(f) = failure {
        return Err(Error::numerical("state", format!("not certified: {f}")));
    }
    Ok(y)
}
