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

mod lohner;
use lohner::Parallelepiped;
pub use lohner::VORDER;

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
    /// Carry the error set as a parallelepiped through the step's variational matrix
    /// (Lohner, (V18)-(V21)) on steps where the logarithmic norm is positive; `false`: the
    /// norm ball of (V15) on every step.
    pub lohner: bool,
}

impl Default for TubeOptions {
    fn default() -> Self {
        TubeOptions {
            tol: 1e-15,
            floor: 1e-9,
            max_steps: 200_000,
            lohner: true,
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
    var: Problem<Tay<Tay<Fi, 2>, { lohner::KV }>>,
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
            var: Problem::with_coordinates(
                config,
                &lift_reduced(x0, |v| Tay::constant(Tay::constant(v))),
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

    /// The point Jacobian at `y` (`f64`, Taylor mode of order 1), row-major.
    fn point_jacobian(&self, y: &[f64]) -> Option<Vec<f64>> {
        let n = y.len();
        let mut j = vec![0.0; n * n];
        for l in 0..n {
            let v: Vec<Tay<f64, 2>> = y
                .iter()
                .enumerate()
                .map(|(i, &b)| Tay::variable(b, if i == l { 1.0 } else { 0.0 }))
                .collect();
            let col = self.jac_f64.rhs(&v).ok()?;
            for i in 0..n {
                j[i * n + l] = col[i].c[1];
            }
        }
        j.iter().all(|x| x.is_finite()).then_some(j)
    }

    /// The basis of the error norm at the center `y` (V14): `T = diag(scale) V` with `V` the
    /// real eigenbasis (real and imaginary parts of complex pairs) of the scaled Jacobian
    /// `diag(scale)^-1 J diag(scale)` at `y`, columns of unit max-norm; `diag(scale)` alone
    /// when the eigenbasis is not available or too ill-conditioned. Any invertible `T` gives
    /// a valid bound; this one makes `T^-1 J T` nearly diagonal, so its logarithmic norm is
    /// close to the spectral abscissa.
    fn basis(&self, y: &[f64]) -> Basis {
        let n = y.len();
        let scale = self.scale(y);
        let diagonal = || {
            let mut t = vec![0.0; n * n];
            for i in 0..n {
                t[i * n + i] = scale[i];
            }
            Basis::new(t, n).expect("a positive diagonal is invertible")
        };
        let Some(j) = self.point_jacobian(y) else {
            return diagonal();
        };
        let a = faer::Mat::<f64>::from_fn(n, n, |i, l| j[i * n + l] * scale[l] / scale[i]);
        let Ok(eig) = a.eigen() else {
            return diagonal();
        };
        let (u, vals) = (eig.U(), eig.S());
        let mut t = vec![0.0; n * n];
        let mut col = 0;
        for k in 0..n {
            let lam = vals[k];
            if lam.im < 0.0 && col < n {
                continue;
            }
            let parts: Vec<Vec<f64>> = if lam.im > 0.0 {
                vec![
                    (0..n).map(|i| u[(i, k)].re).collect(),
                    (0..n).map(|i| u[(i, k)].im).collect(),
                ]
            } else {
                vec![(0..n).map(|i| u[(i, k)].re).collect()]
            };
            for v in parts {
                if col >= n {
                    break;
                }
                let top = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
                for i in 0..n {
                    t[i * n + col] = if top > 0.0 {
                        scale[i] * v[i] / top
                    } else {
                        0.0
                    };
                }
                col += 1;
            }
        }
        if col < n {
            return diagonal();
        }
        Basis::new(t, n).unwrap_or_else(diagonal)
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
        let (out, failure) = certified(|| crate::interval::lenient(|| problem.rhs(y)));
        match (out, failure) {
            (Ok(v), None) => Ok(v),
            (_, Some(f)) => Err(f),
            (Err(e), None) => Err(e.to_string()),
        }
    }

    /// One step from the center `y` with error `eps0` (in the norm of `basis`), of size at
    /// most `h_max`. Errors (as the reason) when no step size down to `h_max * 2^-30` closes
    /// the bound.
    fn step(
        &self,
        t0: f64,
        y: &[f64],
        eps0: f64,
        basis: &Basis,
        h_max: f64,
    ) -> std::result::Result<Step, String> {
        let n = y.len();
        let w = self.scale(y);
        let coef = self.guide_coefficients(y).map_err(|e| e.to_string())?;
        // Step size from the last two Taylor terms, relative to the scale of y (V16).
        let mut h = h_max;
        for j in [ORDER - 1, ORDER] {
            let size = (0..n).map(|i| coef[j][i].abs() / w[i]).fold(0.0, f64::max);
            if size > 0.0 {
                h = h.min(0.9 * (self.options.tol / size).powf(1.0 / j as f64));
            }
        }
        let dsize = self.point_defect(&coef, basis)?;
        let mut last = String::new();
        for _ in 0..30 {
            let t1 = t0 + h;
            let hh = (Fi::point(t1) - Fi::point(t0)).hi();
            match self.try_step(&coef, basis, &dsize, eps0, hh) {
                Ok((eps_tube, eps1, mu)) => {
                    return Ok(Step {
                        t0,
                        t1,
                        coef,
                        d: basis.d.clone(),
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

    /// The point part of the defect (V13): `delta_j = (j + 1) p_{j+1} - g_j(0)`, per
    /// component, then in the norm of the basis (coefficientwise through `|T^-1|`).
    fn point_defect(
        &self,
        coef: &[Vec<f64>],
        basis: &Basis,
    ) -> std::result::Result<Vec<f64>, String> {
        let n = basis.n;
        let pts: Vec<Tay<Fi, K>> = (0..n)
            .map(|i| Tay::from_coefficients(std::array::from_fn(|j| Fi::point(coef[j][i]))))
            .collect();
        let g0 = Self::series_rhs(&self.series, &pts)?;
        Ok((0..ORDER)
            .map(|j| {
                let v: Vec<f64> = (0..n)
                    .map(|i| {
                        let delta =
                            Fi::point((j + 1) as f64) * Fi::point(coef[j + 1][i]) - g0[i].c[j];
                        delta.mag()
                    })
                    .collect();
                basis.norm_of_magnitudes(&v)
            })
            .collect())
    }

    /// The bounds of one step of length at most `hh` (V13)-(V15): `(eps_tube, eps1, mu)`.
    fn try_step(
        &self,
        coef: &[Vec<f64>],
        basis: &Basis,
        dsize: &[f64],
        eps0: f64,
        hh: f64,
    ) -> std::result::Result<(f64, f64, f64), String> {
        let n = basis.n;
        let d = &basis.d;
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
        let rem: Vec<f64> = (0..n).map(|c| g[c].c[ORDER].mag()).collect();
        let rem = basis.norm_of_magnitudes(&rem);
        // int_0^h ||T^-1 delta|| <= sum_j D_j h^(j+1) / (j+1) + R h^(N+1) / (N+1).
        let mut int = Fi::point(0.0);
        let mut hp = h;
        for (j, &dj) in dsize.iter().enumerate() {
            int = int + Fi::point(dj) * hp / Fi::point((j + 1) as f64);
            hp = hp * h;
        }
        int = int + Fi::point(rem) * hp / Fi::point(K as f64);
        let int = int.hi();
        // The a priori box: the hull of p over the step widened by E |T| 1; E bootstrapped.
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
            let mu = self.log_norm(&bx, basis)?;
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

    /// An upper bound of the logarithmic norm `mu_inf(T^-1 J T)` over every `J` in the
    /// interval Jacobian on the box `bx` (V14).
    fn log_norm(&self, bx: &[Fi], basis: &Basis) -> std::result::Result<f64, String> {
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
        // J T (interval times point), then T^-1 (J T).
        let jt: Vec<Fi> = (0..n * n)
            .map(|il| {
                let (i, l) = (il / n, il % n);
                (0..n).fold(Fi::point(0.0), |acc, k| {
                    acc + cols[k][i].c[1] * Fi::point(basis.t[k * n + l])
                })
            })
            .collect();
        let mut mu = f64::NEG_INFINITY;
        for i in 0..n {
            let mut row = Fi::point(0.0);
            for l in 0..n {
                let a = (0..n).fold(Fi::point(0.0), |acc, k| {
                    acc + basis.tinv[i * n + k] * jt[k * n + l]
                });
                row = row
                    + if l == i {
                        Fi::point(a.hi())
                    } else {
                        Fi::point(a.mag())
                    };
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
        let mut set = Parallelepiped::from_box(y0);
        let mut steps: Vec<Step> = Vec::new();
        let mut t = 0.0;
        let mut h_max = f64::INFINITY;
        let debug = std::env::var_os("PREDHEAD_TUBE_DEBUG").is_some();
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
            let (s, next, lohner) = match self.advance(t, &set, h_max.min(t_max - t)) {
                Ok(x) => x,
                Err(why) => {
                    return TubeRun {
                        steps,
                        failure: Some(why),
                    }
                }
            };
            set = next;
            h_max = 4.0 * (s.t1 - s.t0);
            t = s.t1;
            if debug {
                let w = self.scale(&set.c);
                let spread = set
                    .hull()
                    .iter()
                    .zip(&set.c)
                    .zip(&w)
                    .map(|((x, c), w)| (*x - Fi::point(*c)).mag() / w)
                    .fold(0.0, f64::max);
                eprintln!(
                    "t {:e} h {:e} eps_tube {:e} eps1 {:e} set {:e} mu {:e} lohner {}",
                    s.t0,
                    s.t1 - s.t0,
                    s.eps_tube,
                    s.eps1,
                    spread,
                    s.mu,
                    lohner
                );
            }
            steps.push(s);
            if observe(&steps) {
                break;
            }
        }
        TubeRun {
            steps,
            failure: None,
        }
    }
}

/// The basis `T` of the error norm `||e||_T = ||T^-1 e||_inf` (V14): `T` in `f64`, an
/// enclosure of `T^-1`, and `d = |T| 1` (so `|e_i| <= d_i ||e||_T`).
#[derive(Clone, Debug)]
pub struct Basis {
    n: usize,
    t: Vec<f64>,
    tinv: Vec<Fi>,
    d: Vec<f64>,
}

impl Basis {
    /// The basis `t` (row-major `n x n`), with `T^-1` enclosed from an approximate inverse
    /// `R`: with `||I - T R||_inf <= beta < 1/2`, `T^-1 = R (I + F)`, `||F||_inf <=
    /// beta / (1 - beta)`, so `T^-1_ij in R_ij +- beta / (1 - beta) sum_k |R_ik|`. `None`
    /// when `t` is (numerically) singular.
    fn new(t: Vec<f64>, n: usize) -> Option<Basis> {
        let r = invert(&t, n)?;
        let mut beta = Fi::point(0.0);
        for i in 0..n {
            let mut row = Fi::point(0.0);
            for j in 0..n {
                let tr = (0..n).fold(Fi::point(0.0), |acc, k| {
                    acc + Fi::point(t[i * n + k]) * Fi::point(r[k * n + j])
                });
                let e = Fi::point(if i == j { 1.0 } else { 0.0 }) - tr;
                row = row + Fi::point(e.mag());
            }
            beta = beta.max(&row);
        }
        let beta = beta.hi();
        if beta.is_nan() || beta >= 0.5 {
            return None;
        }
        let f = (Fi::point(beta) / (Fi::point(1.0) - Fi::point(beta))).hi();
        let tinv = (0..n * n)
            .map(|ij| {
                let i = ij / n;
                let rad = (0..n).fold(Fi::point(0.0), |acc, k| acc + Fi::point(r[i * n + k].abs()));
                let rad = (rad * Fi::point(f)).hi();
                Fi::point(r[ij]) + Fi::new(-rad, rad)
            })
            .collect();
        let d = (0..n)
            .map(|i| {
                (0..n)
                    .fold(Fi::point(0.0), |acc, k| acc + Fi::point(t[i * n + k].abs()))
                    .hi()
            })
            .collect();
        Some(Basis { n, t, tinv, d })
    }

    /// `max_i sum_c |T^-1|_ic v_c` for magnitudes `v >= 0`: a bound of `||x||_T` for every
    /// `|x| <= v`.
    fn norm_of_magnitudes(&self, v: &[f64]) -> f64 {
        let n = self.n;
        (0..n)
            .map(|i| {
                (0..n)
                    .fold(Fi::point(0.0), |acc, c| {
                        acc + Fi::point(self.tinv[i * n + c].mag()) * Fi::point(v[c])
                    })
                    .hi()
            })
            .fold(0.0, f64::max)
    }

    /// A bound of `||y - c||_T` over `y in b + T_prev e~`, `||e~||_inf <= eps_prev`
    /// (`prev = None`: over the box `b`).
    fn radius_of(&self, b: &[Fi], c: &[f64], prev: Option<(&Basis, f64)>) -> f64 {
        let n = self.n;
        let off: Vec<f64> = b
            .iter()
            .zip(c)
            .map(|(b, &c)| (*b - Fi::point(c)).mag())
            .collect();
        let mut r = Fi::point(self.norm_of_magnitudes(&off));
        if let Some((p, eps)) = prev {
            // ||T^-1 T_prev||_inf, in interval arithmetic.
            let mut norm = 0.0f64;
            for i in 0..n {
                let mut row = Fi::point(0.0);
                for l in 0..n {
                    let a = (0..n).fold(Fi::point(0.0), |acc, k| {
                        acc + self.tinv[i * n + k] * Fi::point(p.t[k * n + l])
                    });
                    row = row + Fi::point(a.mag());
                }
                norm = norm.max(row.hi());
            }
            r = r + Fi::point(norm) * Fi::point(eps);
        }
        r.hi()
    }
}

/// `t^-1` by Gauss-Jordan elimination with partial pivoting (`f64`, approximate; `None`
/// when a pivot vanishes).
fn invert(t: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut a = t.to_vec();
    let mut r = vec![0.0; n * n];
    for i in 0..n {
        r[i * n + i] = 1.0;
    }
    for col in 0..n {
        let piv =
            (col..n).max_by(|&x, &y| a[x * n + col].abs().total_cmp(&a[y * n + col].abs()))?;
        if a[piv * n + col] == 0.0 || !a[piv * n + col].is_finite() {
            return None;
        }
        for k in 0..n {
            a.swap(col * n + k, piv * n + k);
            r.swap(col * n + k, piv * n + k);
        }
        let p = a[col * n + col];
        for k in 0..n {
            a[col * n + k] /= p;
            r[col * n + k] /= p;
        }
        for row in 0..n {
            if row != col {
                let f = a[row * n + col];
                if f != 0.0 {
                    for k in 0..n {
                        a[row * n + k] -= f * a[col * n + k];
                        r[row * n + k] -= f * r[col * n + k];
                    }
                }
            }
        }
    }
    r.iter().all(|x| x.is_finite()).then_some(r)
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
