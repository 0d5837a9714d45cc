//! Forward-mode tangents over any [`Scalar`]: a value and `K` directional derivatives, both
//! in `T` (`derivations/sensitivities.md`, eq. (Y2)). Over `f64` it is the sensitivity
//! right-hand side `J S + dF/dtheta` in one pass; over [`crate::flow::dual::Dual`] it also
//! carries the Jacobian of that right-hand side (the blocks `H_i` of eq. (Y5)); over MPFR it
//! is the reference.

use crate::scalar::Scalar;
use rug::Rational;
use std::cmp::Ordering;
use std::ops::{Add, Div, Mul, Neg, Sub};

/// `v + sum_i d_i eps_i` with `eps_i eps_j = 0`, over the scalar `T`.
///
/// Only the first `n` derivatives may be nonzero (the directions in use): the arithmetic
/// runs over those lanes only, so a run with `k < K` parameters pays for `k` lanes, not
/// `K`. The lanes from `n` on are zero (every constructor keeps this), and an operation's
/// result has `n = max` of its operands', so the lanes in use get the same bits as with
/// every lane computed.
#[derive(Clone, Debug)]
pub struct Tangent<T: Scalar, const K: usize> {
    /// The value.
    pub v: T,
    /// The derivatives along the `K` seeded directions (zero from `n` on).
    pub d: [T; K],
    /// The lanes in use: `d[i]` is zero for `i >= n` (`n <= K`).
    pub n: usize,
}

impl<T: Scalar, const K: usize> Tangent<T, K> {
    /// A constant (zero tangents) at the context of `v`.
    pub fn constant(v: T) -> Self {
        let z = T::zero(v.ctx());
        Tangent {
            d: std::array::from_fn(|_| z.clone()),
            v,
            n: 0,
        }
    }

    /// `v` with the derivatives `d`, of which the first `n` may be nonzero (the caller
    /// guarantees `d[i] = 0` for `i >= n`; `n` is capped at `K`).
    pub fn with_lanes(v: T, d: [T; K], n: usize) -> Self {
        Tangent { v, d, n: n.min(K) }
    }

    /// `g + dg * d`: the chain rule of a scalar function with value `g` and derivative `dg`.
    fn chain(self, g: T, dg: T) -> Self {
        let mut d = self.d;
        for a in d.iter_mut().take(self.n) {
            *a = a.clone() * dg.clone();
        }
        Tangent { v: g, d, n: self.n }
    }
}

impl<T: Scalar, const K: usize> PartialEq for Tangent<T, K> {
    /// Compares values only.
    fn eq(&self, other: &Self) -> bool {
        self.v.partial_cmp(&other.v) == Some(Ordering::Equal)
    }
}

impl<T: Scalar, const K: usize> PartialOrd for Tangent<T, K> {
    /// Orders by value only.
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.v.partial_cmp(&other.v)
    }
}

impl<T: Scalar, const K: usize> Add for Tangent<T, K> {
    type Output = Self;
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        let n = self.n.max(o.n);
        let mut d = self.d;
        for (a, b) in d.iter_mut().zip(o.d).take(n) {
            *a = a.clone() + b;
        }
        Tangent {
            v: self.v + o.v,
            d,
            n,
        }
    }
}

impl<T: Scalar, const K: usize> Sub for Tangent<T, K> {
    type Output = Self;
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        let n = self.n.max(o.n);
        let mut d = self.d;
        for (a, b) in d.iter_mut().zip(o.d).take(n) {
            *a = a.clone() - b;
        }
        Tangent {
            v: self.v - o.v,
            d,
            n,
        }
    }
}

impl<T: Scalar, const K: usize> Mul for Tangent<T, K> {
    type Output = Self;
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        let n = self.n.max(o.n);
        let mut d = self.d;
        for (a, b) in d.iter_mut().zip(o.d).take(n) {
            *a = a.clone() * o.v.clone() + self.v.clone() * b;
        }
        Tangent {
            v: self.v * o.v,
            d,
            n,
        }
    }
}

impl<T: Scalar, const K: usize> Div for Tangent<T, K> {
    type Output = Self;
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        // (a/b)' = (a' - (a/b) b') / b.
        let q = self.v / o.v.clone();
        let n = self.n.max(o.n);
        let mut d = self.d;
        for (a, b) in d.iter_mut().zip(o.d).take(n) {
            *a = (a.clone() - q.clone() * b) / o.v.clone();
        }
        Tangent { v: q, d, n }
    }
}

impl<T: Scalar, const K: usize> Neg for Tangent<T, K> {
    type Output = Self;
    #[inline(always)]
    fn neg(self) -> Self {
        let mut d = self.d;
        for a in d.iter_mut().take(self.n) {
            *a = -a.clone();
        }
        Tangent {
            v: -self.v,
            d,
            n: self.n,
        }
    }
}

impl<T: Scalar, const K: usize> Scalar for Tangent<T, K> {
    type Ctx = T::Ctx;
    fn ctx(&self) -> T::Ctx {
        self.v.ctx()
    }
    fn from_f64(x: f64, ctx: T::Ctx) -> Self {
        Tangent::constant(T::from_f64(x, ctx))
    }
    fn from_rational(q: &Rational, ctx: T::Ctx) -> Self {
        Tangent::constant(T::from_rational(q, ctx))
    }
    fn sqrt(self) -> Self {
        let s = self.v.clone().sqrt();
        let ds = s.cst(0.5) / s.clone();
        self.chain(s, ds)
    }
    fn abs(self) -> Self {
        // As for `Dual`: the derivative of |x| at 0 is taken as that of x.
        if self.v < T::zero(self.v.ctx()) {
            -self
        } else {
            self
        }
    }
    fn ln(self) -> Self {
        let l = self.v.clone().ln();
        let dl = T::one(self.v.ctx()) / self.v.clone();
        self.chain(l, dl)
    }
    fn exp(self) -> Self {
        let e = self.v.clone().exp();
        self.chain(e.clone(), e)
    }
    fn to_f64(&self) -> f64 {
        self.v.to_f64()
    }
    fn is_finite(&self) -> bool {
        self.v.is_finite() && self.d[..self.n].iter().all(Scalar::is_finite)
    }
    fn to_decimal(&self) -> String {
        self.v.to_decimal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::dual::Dual;

    /// The same composite function as `dual::tests`, with a tangent over `f64` and over
    /// `Dual<1>` (the second derivative d^2 f / dx dy as the nested part).
    #[test]
    fn derivatives_of_a_composite_function_and_a_mixed_second_derivative() {
        let f = |x: Tangent<f64, 2>, y: Tangent<f64, 2>| {
            x.clone().sqrt() * y.clone() / (x.clone() - y.clone()) + (x.clone().ln() * y).exp()
                - (-x).abs()
        };
        let mk = |v: f64, k: usize| {
            let mut t = Tangent::<f64, 2>::constant(v);
            t.d[k] = 1.0;
            t.n = 2;
            t
        };
        let r = f(mk(2.0, 0), mk(0.5, 1));
        let (xv, yv) = (2.0f64, 0.5f64);
        let dx = yv * (0.5 / xv.sqrt() * (xv - yv) - xv.sqrt()) / (xv - yv).powi(2)
            + yv * xv.powf(yv - 1.0)
            - 1.0;
        let dy = xv.sqrt() * xv / (xv - yv).powi(2) + xv.ln() * xv.powf(yv);
        assert!((r.d[0] - dx).abs() < 1e-14 && (r.d[1] - dy).abs() < 1e-14);
        // g(x, y) = x^2 y: d/dy of dg/dx = 2x (the outer tangent seeds y, the inner x).
        let x = Tangent::<Dual<1>, 1>::constant(Dual::variable(3.0, 0));
        let mut y = Tangent::<Dual<1>, 1>::constant(Dual::constant(5.0));
        y.d[0] = Dual::constant(1.0);
        y.n = 1;
        let g = x.clone() * x * y;
        assert_eq!(
            (g.v.v, g.v.d[0], g.d[0].v, g.d[0].d[0]),
            (45.0, 30.0, 9.0, 6.0)
        );
    }
}
