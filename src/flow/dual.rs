//! Forward-mode dual numbers: a value and `N` tangents, implementing [`Scalar`], so that
//! the generic right-hand side of the flow ([`crate::flow::problem::Problem::rhs_into`]) run
//! on [`Dual`] seeds computes `N` columns of its Jacobian exactly (to rounding) in one pass
//! (`derivations/numerics.md`, "Jacobian").
//!
//! The value part of every operation is the `f64` operation itself, in the same order, so the
//! value of a dual evaluation is bit-identical to the `f64` evaluation.

use crate::scalar::Scalar;
use rug::Rational;
use std::cmp::Ordering;
use std::ops::{Add, Div, Mul, Neg, Sub};

/// `v + sum_i d_i eps_i` with `eps_i eps_j = 0`: the value `v` and the derivatives `d` of
/// `v` along `N` seeded directions.
#[derive(Clone, Copy, Debug)]
pub struct Dual<const N: usize> {
    /// The value.
    pub v: f64,
    /// The tangents (derivatives along the seeded directions).
    pub d: [f64; N],
}

impl<const N: usize> Dual<N> {
    /// A constant (all tangents zero).
    #[inline]
    pub fn constant(v: f64) -> Self {
        Dual { v, d: [0.0; N] }
    }

    /// The variable `v` seeded along direction `k` (tangent `e_k`; none when `k >= N`).
    pub fn variable(v: f64, k: usize) -> Self {
        let mut d = [0.0; N];
        if k < N {
            d[k] = 1.0;
        }
        Dual { v, d }
    }

    /// `g(v) + g'(v) d`: the chain rule for a scalar function with value `g` and derivative
    /// `dg` at `v`.
    #[inline(always)]
    fn chain(self, g: f64, dg: f64) -> Self {
        let mut d = self.d;
        for t in &mut d {
            *t *= dg;
        }
        Dual { v: g, d }
    }
}

impl<const N: usize> PartialEq for Dual<N> {
    /// Compares values only (the order used by the generic code's branches).
    fn eq(&self, other: &Self) -> bool {
        self.v == other.v
    }
}

impl<const N: usize> PartialOrd for Dual<N> {
    /// Orders by value only.
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.v.partial_cmp(&other.v)
    }
}

impl<const N: usize> Add for Dual<N> {
    type Output = Self;
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        let mut d = self.d;
        for (a, b) in d.iter_mut().zip(&o.d) {
            *a += b;
        }
        Dual { v: self.v + o.v, d }
    }
}

impl<const N: usize> Sub for Dual<N> {
    type Output = Self;
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        let mut d = self.d;
        for (a, b) in d.iter_mut().zip(&o.d) {
            *a -= b;
        }
        Dual { v: self.v - o.v, d }
    }
}

impl<const N: usize> Mul for Dual<N> {
    type Output = Self;
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        let mut d = [0.0; N];
        for ((t, a), b) in d.iter_mut().zip(&self.d).zip(&o.d) {
            *t = a * o.v + self.v * b;
        }
        Dual { v: self.v * o.v, d }
    }
}

impl<const N: usize> Div for Dual<N> {
    type Output = Self;
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        // (a/b)' = (a' - (a/b) b') / b.
        let q = self.v / o.v;
        let inv = 1.0 / o.v;
        let mut d = [0.0; N];
        for ((t, a), b) in d.iter_mut().zip(&self.d).zip(&o.d) {
            *t = (a - q * b) * inv;
        }
        Dual { v: q, d }
    }
}

impl<const N: usize> Neg for Dual<N> {
    type Output = Self;
    #[inline(always)]
    fn neg(self) -> Self {
        let mut d = self.d;
        for t in &mut d {
            *t = -*t;
        }
        Dual { v: -self.v, d }
    }
}

impl<const N: usize> Scalar for Dual<N> {
    type Ctx = ();
    fn ctx(&self) {}
    #[inline]
    fn from_f64(x: f64, _: ()) -> Self {
        Dual::constant(x)
    }
    fn from_rational(q: &Rational, _: ()) -> Self {
        Dual::constant(<f64 as Scalar>::from_rational(q, ()))
    }
    #[inline]
    fn sqrt(self) -> Self {
        let s = self.v.sqrt();
        self.chain(s, 0.5 / s)
    }
    fn abs(self) -> Self {
        // The derivative of |x| at 0 is taken as that of x (any subgradient would do; the
        // flow never differentiates |x| at 0).
        if self.v < 0.0 {
            -self
        } else {
            self
        }
    }
    fn ln(self) -> Self {
        self.chain(self.v.ln(), 1.0 / self.v)
    }
    fn exp(self) -> Self {
        let e = self.v.exp();
        self.chain(e, e)
    }
    fn to_f64(&self) -> f64 {
        self.v
    }
    fn is_finite(&self) -> bool {
        self.v.is_finite() && self.d.iter().all(|t| t.is_finite())
    }
    fn to_decimal(&self) -> String {
        format!("{:?}", self.v)
    }
    /// `self * self`: the product rule's tangent `d v + v d` is formed as `(d v) + (d v)`,
    /// the same value (the product is commutative) with one multiplication fewer.
    #[inline(always)]
    fn sq(&self) -> Self {
        let mut d = self.d;
        for t in &mut d {
            let dv = *t * self.v;
            *t = dv + dv;
        }
        Dual {
            v: self.v * self.v,
            d,
        }
    }
    /// `self^2 * self`, as the default, inlined.
    #[inline(always)]
    fn cube(&self) -> Self {
        self.sq() * *self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules of every operation against hand-computed derivatives of
    /// `f(x, y) = sqrt(x) y / (x - y) + exp(ln(x) y) - |(-x)|` at `(2, 0.5)`.
    #[test]
    fn derivatives_of_a_composite_function() {
        let x = Dual::<2>::variable(2.0, 0);
        let y = Dual::<2>::variable(0.5, 1);
        let f = x.sqrt() * y / (x - y) + (x.ln() * y).exp() - (-x).abs();
        let (xv, yv) = (2.0f64, 0.5f64);
        let val = xv.sqrt() * yv / (xv - yv) + xv.powf(yv) - xv;
        // d/dx: y [1/(2 sqrt x) (x-y) - sqrt x] / (x-y)^2 + y x^(y-1) - 1.
        let dx = yv * (0.5 / xv.sqrt() * (xv - yv) - xv.sqrt()) / (xv - yv).powi(2)
            + yv * xv.powf(yv - 1.0)
            - 1.0;
        // d/dy: sqrt x [(x-y) + y] / (x-y)^2 + ln x x^y.
        let dy = xv.sqrt() * xv / (xv - yv).powi(2) + xv.ln() * xv.powf(yv);
        assert!((f.v - val).abs() < 1e-15);
        assert!((f.d[0] - dx).abs() < 1e-14, "{} vs {dx}", f.d[0]);
        assert!((f.d[1] - dy).abs() < 1e-14, "{} vs {dy}", f.d[1]);
        assert!(f.is_finite());
        assert!(x > y && Dual::<2>::constant(0.5) == y);
    }
}
