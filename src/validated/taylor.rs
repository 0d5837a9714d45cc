//! Truncated Taylor series `sum_{i<K} c_i s^i` as a [`Scalar`]: Taylor-mode automatic
//! differentiation of the generic closed forms (`derivations/interval.md`, eq. (V12)).
//!
//! With coefficients in [`Fi`], the series of `f(p(s))` for a polynomial (or any truncated
//! series) `p` encloses the Taylor coefficients `g^(i)(s0) / i!` of `g = f o p` at every `s0`
//! of the interval the base coefficients were evaluated on. With `K = 2` and the seed `e_l`
//! in the first-order part, it gives column `l` of the Jacobian over a box. Comparisons look
//! at the constant term only (the branch taken at the point of expansion).
//!
//! # Examples
//! ```
//! use predhead::validated::Tay;
//! use predhead::scalar::Scalar;
//! // 1 / (1 - s) = 1 + s + s^2 + ...
//! let x = Tay::<f64, 4>::variable(0.0, 1.0);
//! let y = Tay::<f64, 4>::constant(1.0) / (Tay::constant(1.0) - x);
//! assert_eq!(y.c, [1.0, 1.0, 1.0, 1.0]);
//! ```

use crate::scalar::Scalar;
use rug::Rational;
use std::cmp::Ordering;
use std::ops::{Add, Div, Mul, Neg, Sub};

/// `sum_{i<K} c[i] s^i`, truncated.
#[derive(Clone, Copy, Debug)]
pub struct Tay<S: Scalar + Copy, const K: usize> {
    /// The coefficients, constant term first.
    pub c: [S; K],
}

impl<S: Scalar<Ctx = ()> + Copy, const K: usize> Tay<S, K> {
    /// The constant `v`.
    pub fn constant(v: S) -> Self {
        let mut c = [S::zero(()); K];
        c[0] = v;
        Tay { c }
    }

    /// `v + slope s`.
    pub fn variable(v: S, slope: S) -> Self {
        let mut c = [S::zero(()); K];
        c[0] = v;
        if K > 1 {
            c[1] = slope;
        }
        Tay { c }
    }

    /// The series with these coefficients.
    pub fn from_coefficients(c: [S; K]) -> Self {
        Tay { c }
    }
}

impl<S: Scalar<Ctx = ()> + Copy, const K: usize> Add for Tay<S, K> {
    type Output = Self;
    #[inline]
    fn add(mut self, o: Self) -> Self {
        for (a, b) in self.c.iter_mut().zip(o.c) {
            *a = *a + b;
        }
        self
    }
}

impl<S: Scalar<Ctx = ()> + Copy, const K: usize> Sub for Tay<S, K> {
    type Output = Self;
    #[inline]
    fn sub(mut self, o: Self) -> Self {
        for (a, b) in self.c.iter_mut().zip(o.c) {
            *a = *a - b;
        }
        self
    }
}

impl<S: Scalar<Ctx = ()> + Copy, const K: usize> Neg for Tay<S, K> {
    type Output = Self;
    #[inline]
    fn neg(mut self) -> Self {
        for a in self.c.iter_mut() {
            *a = -*a;
        }
        self
    }
}

impl<S: Scalar<Ctx = ()> + Copy, const K: usize> Mul for Tay<S, K> {
    type Output = Self;
    #[inline]
    fn mul(self, o: Self) -> Self {
        // The Cauchy product, truncated.
        let mut c = [S::zero(()); K];
        for (i, ci) in c.iter_mut().enumerate() {
            let mut acc = self.c[0] * o.c[i];
            for j in 1..=i {
                acc = acc + self.c[j] * o.c[i - j];
            }
            *ci = acc;
        }
        Tay { c }
    }
}

impl<S: Scalar<Ctx = ()> + Copy, const K: usize> Div for Tay<S, K> {
    type Output = Self;
    #[track_caller]
    fn div(self, o: Self) -> Self {
        // q = a / b: q_i = (a_i - sum_{j=1..i} b_j q_{i-j}) / b_0.
        let mut q = [S::zero(()); K];
        for i in 0..K {
            let mut acc = self.c[i];
            for j in 1..=i {
                acc = acc - o.c[j] * q[i - j];
            }
            q[i] = acc / o.c[0];
        }
        Tay { c: q }
    }
}

impl<S: Scalar<Ctx = ()> + Copy, const K: usize> PartialEq for Tay<S, K> {
    #[track_caller]
    fn eq(&self, o: &Self) -> bool {
        self.c[0] == o.c[0]
    }
}

impl<S: Scalar<Ctx = ()> + Copy, const K: usize> PartialOrd for Tay<S, K> {
    /// The order of the constant terms (the branch taken at the expansion point).
    #[track_caller]
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        self.c[0].partial_cmp(&o.c[0])
    }
}

impl<S: Scalar<Ctx = ()> + Copy, const K: usize> Scalar for Tay<S, K> {
    type Ctx = ();
    fn ctx(&self) {}
    fn from_f64(x: f64, _: ()) -> Self {
        Self::constant(S::from_f64(x, ()))
    }
    fn from_rational(q: &Rational, _: ()) -> Self {
        Self::constant(S::from_rational(q, ()))
    }
    #[track_caller]
    fn sqrt(self) -> Self {
        // r = sqrt(a): r_0 = sqrt(a_0), r_i = (a_i - sum_{j=1..i-1} r_j r_{i-j}) / (2 r_0).
        let mut r = [S::zero(()); K];
        r[0] = self.c[0].sqrt();
        let two_r0 = r[0] + r[0];
        for i in 1..K {
            let mut acc = self.c[i];
            for j in 1..i {
                acc = acc - r[j] * r[i - j];
            }
            r[i] = acc / two_r0;
        }
        Tay { c: r }
    }
    #[track_caller]
    fn abs(self) -> Self {
        // Smooth only away from 0: the sign of the constant term must be decided.
        let zero = S::zero(());
        if self.c[0] >= zero {
            self
        } else {
            -self
        }
    }
    #[track_caller]
    fn ln(self) -> Self {
        // l' = a' / a: i l_i a_0 = i a_i - sum_{j=1..i-1} j l_j a_{i-j}.
        let mut l = [S::zero(()); K];
        l[0] = self.c[0].ln();
        for i in 1..K {
            let mut acc = S::from_f64(i as f64, ()) * self.c[i];
            for j in 1..i {
                acc = acc - S::from_f64(j as f64, ()) * l[j] * self.c[i - j];
            }
            l[i] = acc / (S::from_f64(i as f64, ()) * self.c[0]);
        }
        Tay { c: l }
    }
    fn exp(self) -> Self {
        // e' = e a': i e_i = sum_{j=1..i} j a_j e_{i-j}.
        let mut e = [S::zero(()); K];
        e[0] = self.c[0].exp();
        for i in 1..K {
            let mut acc = S::zero(());
            for j in 1..=i {
                acc = acc + S::from_f64(j as f64, ()) * self.c[j] * e[i - j];
            }
            e[i] = acc / S::from_f64(i as f64, ());
        }
        Tay { c: e }
    }
    fn to_f64(&self) -> f64 {
        self.c[0].to_f64()
    }
    fn is_finite(&self) -> bool {
        self.c.iter().all(Scalar::is_finite)
    }
    fn to_decimal(&self) -> String {
        self.c[0].to_decimal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validated::Fi;

    /// The series of `sqrt(1 + s) / (1 + s)^2 * exp(s)` against its known coefficients, in
    /// `Fi` (enclosure) and in `f64`; falsifier: the coefficients of a different function
    /// (`exp(2 s)`) are not enclosed.
    #[test]
    fn series_match_known_expansions() {
        let x = Tay::<Fi, 6>::variable(Fi::point(0.0), Fi::point(1.0));
        let one = Tay::<Fi, 6>::constant(Fi::point(1.0));
        let e = x.exp();
        let fact = [1.0, 1.0, 2.0, 6.0, 24.0, 120.0];
        for (i, c) in e.c.iter().enumerate() {
            assert!(c.contains(1.0 / fact[i]), "{i}: {c:?}");
        }
        let two_s = (x + x).exp();
        assert!(!two_s.c[2].contains(1.0 / fact[2]));
        // (1 + s)^(1/2): binomial coefficients 1, 1/2, -1/8, 1/16, -5/128, 7/256.
        let r = (one + x).sqrt();
        for (c, v) in
            r.c.iter()
                .zip([1.0, 0.5, -0.125, 0.0625, -5.0 / 128.0, 7.0 / 256.0])
        {
            assert!(c.contains(v), "{c:?} vs {v}");
        }
        // ln(1 + s) = s - s^2/2 + s^3/3 ...
        let l = (one + x).ln();
        for (i, c) in l.c.iter().enumerate().skip(1) {
            let v = if i % 2 == 1 { 1.0 } else { -1.0 } / i as f64;
            assert!(c.lo() <= v && v <= c.hi(), "{i}: {c:?}");
        }
        let q = one / ((one + x) * (one + x));
        for (i, c) in q.c.iter().enumerate() {
            let v = if i % 2 == 0 { 1.0 } else { -1.0 } * (i + 1) as f64;
            assert!(c.contains(v), "{i}: {c:?}");
        }
    }
}
