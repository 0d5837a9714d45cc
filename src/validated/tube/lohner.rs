//! The C^1 Lohner step (`derivations/interval.md`, (V18)-(V21)): the error set is a
//! parallelepiped `c + B r` carried through an enclosure of the step's variational matrix
//! `D phi(xi, h)` (Taylor series of the variational equation over the set, with its
//! remainder over the a priori box) and re-orthogonalized by a QR of the midpoint of
//! `[V] B` (Lohner's QR trick), instead of a norm ball grown by a logarithmic norm.

use super::{Basis, Step, Validated};
use crate::interval::certified;
use crate::validated::{Fi, Tay};

/// A dual number over `Fi`: value and one directional derivative.
type Dual = Tay<Fi, 2>;

/// The order of the variational series (V19): its remainder enters only the width of
/// `[V]`, which multiplies the set's radius, so a lower order than the guide's suffices.
pub const VORDER: usize = 10;
/// `VORDER + 1` coefficients.
pub const KV: usize = VORDER + 1;
/// On Lohner steps, `h <= STIFF / rho(J(c))` (V21): the Taylor polynomial of the
/// variational matrix is accurate only for `|lambda| h` of order one.
const STIFF: f64 = 1.0;

/// The error set `{c + B r : r in [r]}` (V18): a parallelepiped around the point `c`.
#[derive(Clone, Debug)]
pub struct Parallelepiped {
    /// The center (a point).
    pub c: Vec<f64>,
    /// The matrix `B`, row-major `n x n` (a point matrix).
    pub b: Vec<f64>,
    /// The coordinates `[r]` (an interval vector).
    pub r: Vec<Fi>,
}

impl Parallelepiped {
    /// The box `y` as a parallelepiped: its midpoint, `B = I`, `r = y - c`.
    pub fn from_box(y: &[Fi]) -> Self {
        let n = y.len();
        let c: Vec<f64> = y.iter().map(Fi::mid).collect();
        let mut b = vec![0.0; n * n];
        for i in 0..n {
            b[i * n + i] = 1.0;
        }
        let r = y.iter().zip(&c).map(|(y, &c)| *y - Fi::point(c)).collect();
        Parallelepiped { c, b, r }
    }

    /// The interval hull `c + B [r]`.
    pub fn hull(&self) -> Vec<Fi> {
        let n = self.c.len();
        (0..n)
            .map(|i| {
                (0..n).fold(Fi::point(self.c[i]), |acc, l| {
                    acc + Fi::point(self.b[i * n + l]) * self.r[l]
                })
            })
            .collect()
    }

    /// The largest scaled half-width of the hull, `max_i mag(B [r])_i / w_i` (for choosing
    /// between two valid enclosures; not a bound of anything).
    fn spread(&self, w: &[f64]) -> f64 {
        let n = self.c.len();
        (0..n)
            .map(|i| {
                (0..n)
                    .map(|l| (self.b[i * n + l] * self.r[l].mag()).abs())
                    .sum::<f64>()
                    / w[i]
            })
            .fold(0.0, f64::max)
    }
}

/// `f()` with the failures of (V7) turned into the reason.
fn checked<T>(f: impl FnOnce() -> crate::error::Result<T>) -> std::result::Result<T, String> {
    match certified(|| crate::interval::lenient(f)) {
        (Ok(v), None) => Ok(v),
        (_, Some(why)) => Err(why),
        (Err(e), None) => Err(e.to_string()),
    }
}

impl Basis {
    /// A bound of `||x - set.c||_T` over the set (V18): `max_i sum_l |T^-1 B|_il mag(r_l)`.
    pub(super) fn radius_of_set(&self, set: &Parallelepiped) -> f64 {
        let n = self.n;
        (0..n)
            .map(|i| {
                (0..n)
                    .fold(Fi::point(0.0), |acc, l| {
                        let m = (0..n).fold(Fi::point(0.0), |s, k| {
                            s + self.tinv[i * n + k] * Fi::point(set.b[k * n + l])
                        });
                        acc + Fi::point(m.mag()) * Fi::point(set.r[l].mag())
                    })
                    .hi()
            })
            .fold(0.0, f64::max)
    }
}

impl Validated {
    /// One step of the tube from the set (V21): the step of (V15) from the set's center with
    /// the set's radius (it gives the tube inside the step and the a priori box), then the
    /// set at the step's end, by the Lohner update (V20) when the logarithmic norm is
    /// positive and it gives the smaller set, else by the ball of (V15).
    pub(super) fn advance(
        &self,
        t0: f64,
        set: &Parallelepiped,
        h_max: f64,
    ) -> std::result::Result<(Step, Parallelepiped, bool), String> {
        let n = set.c.len();
        let basis = self.basis(&set.c);
        let eps0 = basis.radius_of_set(set);
        let h_max = match self.spectral_radius(&set.c) {
            Some(rho) if self.options.lohner && rho > 0.0 => h_max.min(STIFF / rho),
            _ => h_max,
        };
        let s = self.step(t0, &set.c, eps0, &basis, h_max)?;
        let end = s.poly(s.offset(s.t1));
        if !end.iter().all(Fi::valid) {
            return Err(format!("the enclosure is not finite at tau = {t0:e}"));
        }
        let c1: Vec<f64> = end.iter().map(Fi::mid).collect();
        let e = basis.radius_of(&end, &c1, Some((&basis, s.eps1)));
        let ball = Parallelepiped {
            c: c1,
            b: basis.t.clone(),
            r: vec![Fi::new(-e, e); n],
        };
        if self.options.lohner && s.mu > 0.0 {
            if let Ok(next) = self.lohner_end(&s, set, &basis) {
                let w = self.scale(&next.c);
                if next.spread(&w) <= ball.spread(&w) {
                    return Ok((s, next, true));
                }
            }
        }
        Ok((s, ball, false))
    }

    /// The spectral radius of the point Jacobian at `y` (a step-size heuristic).
    fn spectral_radius(&self, y: &[f64]) -> Option<f64> {
        let n = y.len();
        let j = self.point_jacobian(y)?;
        let a = faer::Mat::<f64>::from_fn(n, n, |i, l| j[i * n + l]);
        let eig = a.eigen().ok()?;
        let vals = eig.S();
        Some(
            (0..n)
                .map(|k| vals[k].re.hypot(vals[k].im))
                .fold(0.0, f64::max),
        )
    }

    /// The set at the end of the step `s` (V20): `x(h) in z + [V] B [r]` with `z` the
    /// enclosure of `phi(c, h)` ((V15) from the point `c`) and `[V]` the variational matrix
    /// over the set (V19), re-orthogonalized: `B' = D Q`, `r' = ([B'^-1] [V] B) [r] +
    /// [B'^-1] (z - c')`.
    fn lohner_end(
        &self,
        s: &Step,
        set: &Parallelepiped,
        basis: &Basis,
    ) -> std::result::Result<Parallelepiped, String> {
        let n = set.c.len();
        let h = s.offset(s.t1);
        let dsize = self.point_defect(&s.coef, basis)?;
        let (_, eps_c, _) = self.try_step(&s.coef, basis, &dsize, 0.0, h.hi())?;
        let z: Vec<Fi> = s
            .poly(h)
            .iter()
            .zip(&basis.d)
            .map(|(p, d)| {
                let r = (Fi::point(eps_c) * Fi::point(*d)).hi();
                *p + Fi::new(-r, r)
            })
            .collect();
        let v = self.variational(&set.hull(), &s.box_over(s.t0, s.t1), h)?;
        let am: Vec<Fi> = (0..n * n)
            .map(|ab| {
                let (a, b) = (ab / n, ab % n);
                (0..n).fold(Fi::point(0.0), |acc, k| {
                    acc + v[a * n + k] * Fi::point(set.b[k * n + b])
                })
            })
            .collect();
        let c1: Vec<f64> = z.iter().map(Fi::mid).collect();
        let b1 = Basis::new(self.orthogonalized(&am, &set.r, &c1), n)
            .ok_or_else(|| "the re-orthogonalized basis is singular".to_string())?;
        let r1: Vec<Fi> = (0..n)
            .map(|i| {
                let mut acc = Fi::point(0.0);
                for l in 0..n {
                    let m = (0..n).fold(Fi::point(0.0), |s, k| {
                        s + b1.tinv[i * n + k] * am[k * n + l]
                    });
                    acc = acc + m * set.r[l];
                }
                (0..n).fold(acc, |acc, k| {
                    acc + b1.tinv[i * n + k] * (z[k] - Fi::point(c1[k]))
                })
            })
            .collect();
        if !r1.iter().all(Fi::valid) {
            return Err("the Lohner set is not finite".into());
        }
        Ok(Parallelepiped {
            c: c1,
            b: b1.t,
            r: r1,
        })
    }

    /// `B' = D Q` (V20): `Q` from a Gram-Schmidt QR of `D^-1 mid([V] B)`, `D` the scale at
    /// the new center, the columns taken in decreasing order of length times `mag(r_l)`
    /// (Lohner), completed by unit vectors. Any invertible `B'` is valid (its inverse is
    /// enclosed); this one keeps the wrapping small.
    fn orthogonalized(&self, am: &[Fi], r: &[Fi], c1: &[f64]) -> Vec<f64> {
        let n = r.len();
        let w = self.scale(c1);
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let cols: Vec<Vec<f64>> = (0..n)
            .map(|l| (0..n).map(|i| am[i * n + l].mid() / w[i]).collect())
            .collect();
        let mut order: Vec<usize> = (0..n).collect();
        let weight = |l: usize| norm(&cols[l]) * r[l].mag();
        order.sort_by(|&a, &b| weight(b).total_cmp(&weight(a)));
        let unit = |i: usize| (0..n).map(|k| if k == i { 1.0 } else { 0.0 }).collect();
        let candidates = order
            .iter()
            .map(|&l| cols[l].clone())
            .chain((0..n).map(unit));
        let mut q: Vec<Vec<f64>> = Vec::with_capacity(n);
        for mut v in candidates {
            if q.len() == n {
                break;
            }
            let size = norm(&v);
            if !(size > 0.0 && size.is_finite()) {
                continue;
            }
            for _ in 0..2 {
                for u in &q {
                    let dot: f64 = u.iter().zip(&v).map(|(a, b)| a * b).sum();
                    v.iter_mut().zip(u).for_each(|(x, y)| *x -= dot * y);
                }
            }
            let left = norm(&v);
            if left > 1e-8 * size {
                q.push(v.iter().map(|x| x / left).collect());
            }
        }
        let mut b = vec![0.0; n * n];
        for (j, col) in q.iter().enumerate() {
            for i in 0..n {
                b[i * n + j] = w[i] * col[i];
            }
        }
        b
    }

    /// An enclosure of `V = D phi(xi, h)` for every `xi` in the box `x` (V19): the Taylor
    /// polynomial `sum_{i<N} D y_i(x) h^i` of the variational matrix plus the remainder
    /// `D y_N(y) W h^N`, with `y` an a priori box of the solutions over the step and `W`
    /// the bound of `V` over the step closed from `||D y_N(y)|| h^N < 1/2`.
    fn variational(&self, x: &[Fi], y: &[Fi], h: Fi) -> std::result::Result<Vec<Fi>, String> {
        let n = x.len();
        let hh = h.hi();
        let dx = self.coefficient_jacobians(x)?;
        let last = self.coefficient_jacobians(y)?.swap_remove(VORDER);
        let hn = (0..VORDER)
            .fold(Fi::point(1.0), |acc, _| acc * Fi::point(hh))
            .hi();
        let row: Vec<f64> = (0..n)
            .map(|a| {
                let s = (0..n).fold(Fi::point(0.0), |acc, c| {
                    acc + Fi::point(last[a * n + c].mag())
                });
                (s * Fi::point(hn)).hi()
            })
            .collect();
        let cnorm = row.iter().copied().fold(0.0, f64::max);
        if cnorm.is_nan() || cnorm >= 0.5 {
            return Err(format!(
                "the remainder of the variational series is too large ({cnorm:e})"
            ));
        }
        // m_b >= sup over the step of max_a |V_ab|, from |V| <= |A| + |C| |V|.
        let shrink = (Fi::point(1.0) - Fi::point(cnorm)).lo();
        let m: Vec<f64> = (0..n)
            .map(|b| {
                let top = (0..n)
                    .map(|a| {
                        let mut acc = Fi::point(0.0);
                        let mut hp = Fi::point(1.0);
                        for d in dx.iter().take(VORDER) {
                            acc = acc + Fi::point(d[a * n + b].mag()) * hp;
                            hp = hp * Fi::point(hh);
                        }
                        acc.hi()
                    })
                    .fold(0.0, f64::max);
                (Fi::point(top) / Fi::point(shrink)).hi()
            })
            .collect();
        let v: Vec<Fi> = (0..n * n)
            .map(|ab| {
                let (a, b) = (ab / n, ab % n);
                let mut acc = dx[VORDER - 1][ab];
                for d in dx[..VORDER - 1].iter().rev() {
                    acc = acc * h + d[ab];
                }
                let rad = (Fi::point(row[a]) * Fi::point(m[b])).hi();
                acc + Fi::new(-rad, rad)
            })
            .collect();
        if v.iter().all(Fi::valid) {
            Ok(v)
        } else {
            Err("the variational matrix is not finite".into())
        }
    }

    /// `D y_i` over the box `x` for `i = 0..=N` (row-major `n x n` each), `y_i` the Taylor
    /// coefficients of the solution as functions of its initial value: the recurrence
    /// `y_{i+1} = f_i(y_0, .., y_i) / (i + 1)` in Taylor series over dual numbers seeded with
    /// one column of the identity per pass (V19).
    fn coefficient_jacobians(&self, x: &[Fi]) -> std::result::Result<Vec<Vec<Fi>>, String> {
        let n = x.len();
        let mut out = vec![vec![Fi::point(0.0); n * n]; KV];
        for l in 0..n {
            let mut ser: Vec<Tay<Dual, KV>> = x
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    Tay::constant(Dual::variable(v, Fi::point(if i == l { 1.0 } else { 0.0 })))
                })
                .collect();
            for k in 0..VORDER {
                let dy = checked(|| self.var.rhs(&ser))?;
                let kk = Dual::constant(Fi::point((k + 1) as f64));
                for (s, d) in ser.iter_mut().zip(&dy) {
                    s.c[k + 1] = d.c[k] / kk;
                }
            }
            for (j, o) in out.iter_mut().enumerate() {
                for (i, s) in ser.iter().enumerate() {
                    o[i * n + l] = s.c[j].c[1];
                }
            }
        }
        Ok(out)
    }
}
