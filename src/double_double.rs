//! Double-double numbers: the precision of the extended Rosenbrock steps of an `f64` run
//! ([`crate::flow::extended`], `derivations/numerics.md`, "Extended-precision steps").
//!
//! [`DoubleDouble`] is the unevaluated sum of two non-overlapping `f64` (about 104 bits)
//! from the `twofloat` crate, whose addition, subtraction, multiplication and square root
//! it uses (Joldes, Muller and Popescu 2017; Karp and Markstein 1997). Its division is
//! replaced: `twofloat` 0.8's double-double quotient (their Algorithm 18) forms the
//! residual `1 - y_hi t_hi` without a fused multiply-add, and loses all but `f64` accuracy
//! (measured: relative error 1.4e-17 for `1 / 7.5`, 5.6e-17 for a quotient of two
//! double-doubles). Here the quotient is the long division of the QD library (Hida, Li and
//! Bailey 2001): three `f64` quotient digits, each from the residual computed in
//! double-double. Test: `tests::arithmetic_keeps_about_104_bits`.

use crate::scalar::Scalar;
use rug::{Float, Rational};
use std::cmp::Ordering;
use std::ops::{Add, Div, Mul, Neg, Sub};
use twofloat::TwoFloat;

/// A double-double number (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DoubleDouble(pub TwoFloat);

impl DoubleDouble {
    /// The high word (the nearest `f64` to the value, except at ties).
    pub fn hi(self) -> f64 {
        self.0.hi()
    }

    /// The low word.
    pub fn lo(self) -> f64 {
        self.0.lo()
    }
}

impl PartialOrd for DoubleDouble {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.0.partial_cmp(&other.0)
    }
}

impl Add for DoubleDouble {
    type Output = Self;
    #[inline]
    fn add(self, o: Self) -> Self {
        DoubleDouble(self.0 + o.0)
    }
}

impl Sub for DoubleDouble {
    type Output = Self;
    #[inline]
    fn sub(self, o: Self) -> Self {
        DoubleDouble(self.0 - o.0)
    }
}

impl Mul for DoubleDouble {
    type Output = Self;
    #[inline]
    fn mul(self, o: Self) -> Self {
        DoubleDouble(self.0 * o.0)
    }
}

impl Neg for DoubleDouble {
    type Output = Self;
    #[inline]
    fn neg(self) -> Self {
        DoubleDouble(-self.0)
    }
}

impl Div for DoubleDouble {
    type Output = Self;
    /// `q1 = x_hi / y_hi`, `r = x - q1 y`, `q2 = r_hi / y_hi`, `r -= q2 y`,
    /// `q3 = r_hi / y_hi`, the quotient `(q1 + q2) + q3` (each product of `y` by an `f64`
    /// and each difference in double-double). Non-finite when `y` is zero or `x`, `y` are.
    fn div(self, o: Self) -> Self {
        let (x, y) = (self.0, o.0);
        let q1 = x.hi() / y.hi();
        if !q1.is_finite() {
            return DoubleDouble(TwoFloat::from(q1));
        }
        let r = x - y * q1;
        let q2 = r.hi() / y.hi();
        let r = r - y * q2;
        let q3 = r.hi() / y.hi();
        DoubleDouble(TwoFloat::new_add(q1, q2) + q3)
    }
}

impl Scalar for DoubleDouble {
    type Ctx = ();
    #[inline]
    fn ctx(&self) {}
    #[inline]
    fn from_f64(x: f64, _: ()) -> Self {
        DoubleDouble(TwoFloat::from(x))
    }
    fn from_rational(q: &Rational, _: ()) -> Self {
        // The nearest f64, then the nearest f64 to the exact remainder.
        let hi = Float::with_val(53, q).to_f64();
        match Rational::from_f64(hi) {
            Some(h) => {
                let rest = q - h;
                DoubleDouble(TwoFloat::new_add(hi, Float::with_val(53, &rest).to_f64()))
            }
            None => DoubleDouble(TwoFloat::from(hi)),
        }
    }
    fn sqrt(self) -> Self {
        DoubleDouble(self.0.sqrt())
    }
    fn abs(self) -> Self {
        DoubleDouble(self.0.abs())
    }
    /// `twofloat`'s logarithm (called preliminary by the crate; the flow does not use it).
    fn ln(self) -> Self {
        DoubleDouble(self.0.ln())
    }
    /// `twofloat`'s exponential (called preliminary by the crate; the flow does not use it).
    fn exp(self) -> Self {
        DoubleDouble(self.0.exp())
    }
    #[inline]
    fn to_f64(&self) -> f64 {
        // hi is the nearest f64 to hi + lo except at ties, where the sum rounds.
        self.hi() + self.lo()
    }
    #[inline]
    fn is_finite(&self) -> bool {
        self.hi().is_finite() && self.lo().is_finite()
    }
    fn to_decimal(&self) -> String {
        // hi + lo exactly (the words do not overlap), then 33 significant digits.
        let exact = Float::with_val(110, Float::with_val(53, self.hi()) + self.lo());
        exact.to_string_radix(10, Some(33))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(x: DoubleDouble, exact: &Float) -> f64 {
        let got = Float::with_val(256, x.hi()) + x.lo();
        (Float::with_val(256, &got - exact) / exact).abs().to_f64()
    }

    fn exact(x: DoubleDouble) -> Float {
        Float::with_val(256, x.hi()) + x.lo()
    }

    /// Against 256-bit MPFR on 10,000 pairs of double-doubles spread over 40 decades
    /// (a logistic-map sequence, deterministic): every sum, difference, product and
    /// quotient within `2^-100` relative, every square root within `2^-100`; a rational
    /// constant rounds to within `2^-104` and its `f64` rounding is the nearest `f64`.
    /// `twofloat`'s own quotient fails the bound (its error is ~1e-17).
    #[test]
    fn arithmetic_keeps_about_104_bits() {
        let bound = 2f64.powi(-100);
        let mut u = 0.123_456_789_f64;
        let mut next = || {
            u = 3.9 * u * (1.0 - u);
            u
        };
        let (mut worst_div, mut worst_other) = (0.0f64, 0.0f64);
        for _ in 0..10_000 {
            let (s1, s2, e1, e2) = (next(), next(), next(), next());
            let x = DoubleDouble(
                TwoFloat::new_div(s1, 3.0) * TwoFloat::from(10f64.powf(40.0 * e1 - 20.0)),
            );
            let y = DoubleDouble(
                TwoFloat::new_div(1.0 + s2, 7.0) * TwoFloat::from(10f64.powf(40.0 * e2 - 20.0)),
            );
            let (ex, ey) = (exact(x), exact(y));
            worst_div = worst_div.max(rel(x / y, &Float::with_val(256, &ex / &ey)));
            for (got, want) in [
                (x + y, Float::with_val(256, &ex + &ey)),
                (x * y, Float::with_val(256, &ex * &ey)),
                (x.sqrt(), Float::with_val(256, ex.sqrt_ref())),
            ] {
                worst_other = worst_other.max(rel(got, &want));
            }
            // A difference of nearby values: relative to the operands, not the result.
            let z = x - DoubleDouble(x.0 * TwoFloat::from(0.75));
            let want = Float::with_val(256, &ex * 0.25);
            assert!(rel(z, &want) <= bound, "difference");
        }
        assert!(worst_div <= bound, "quotient {worst_div:e}");
        assert!(worst_other <= bound, "sum, product, root {worst_other:e}");
        let crate_quotient = DoubleDouble(TwoFloat::from(1.0) / TwoFloat::from(7.5));
        assert!(rel(crate_quotient, &(Float::with_val(256, 1) / 7.5)) > 1e-20);
        for (p, q) in [(1, 3), (2, 7), (-355, 113), (1, 1_000_003)] {
            let r = Rational::from((p, q));
            let x = DoubleDouble::from_rational(&r, ());
            assert!(
                rel(x, &Float::with_val(256, &r)) <= 2f64.powi(-104),
                "{p}/{q}"
            );
            assert_eq!(x.to_f64(), <f64 as Scalar>::from_rational(&r, ()));
        }
        let third = DoubleDouble::from_rational(&Rational::from((1, 3)), ());
        let digits = third
            .to_decimal()
            .chars()
            .filter(char::is_ascii_digit)
            .count();
        assert!(digits >= 33, "{}", third.to_decimal());
        let zero = DoubleDouble::from_f64(0.0, ());
        assert!(!(DoubleDouble::from_f64(1.0, ()) / zero).is_finite());
        assert!(!DoubleDouble::from_f64(-1.0, ()).sqrt().is_finite());
    }
}
