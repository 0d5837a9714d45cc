//! The [`Scalar`] trait: one formula code path for `f64` and for MPFR (`rug::Float`).
//!
//! Every closed-form function of predhead is generic over `S: Scalar`. Constants enter
//! through [`Scalar::from_f64`] and [`Scalar::from_rational`] at the precision of a context
//! ([`Scalar::Ctx`]: `()` for `f64`, the precision in bits for `rug::Float`), so that the
//! MPFR path has no `f64` shortcut in the middle of a computation: exact rationals (the
//! overlap moments) are rounded once, at the working precision.

use rug::{Float, Rational};
use std::fmt::Debug;
use std::ops::{Add, Div, Mul, Neg, Sub};

/// A real field with the few functions predhead needs.
pub trait Scalar:
    Clone
    + Debug
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + Send
    + Sync
{
    /// What it takes to make a constant: `()` for `f64`, the precision for MPFR.
    type Ctx: Copy + Debug + Send + Sync;
    /// The context of this value.
    fn ctx(&self) -> Self::Ctx;
    /// `x` rounded to the working precision (exact for MPFR at >= 53 bits).
    fn from_f64(x: f64, ctx: Self::Ctx) -> Self;
    /// The exact rational `q` rounded once to the working precision.
    fn from_rational(q: &Rational, ctx: Self::Ctx) -> Self;
    /// Square root, correctly rounded.
    fn sqrt(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// Exponential.
    fn exp(self) -> Self;
    /// The nearest `f64`.
    fn to_f64(&self) -> f64;
    /// Whether the value is finite.
    fn is_finite(&self) -> bool;
    /// A decimal string with every significant digit of the working precision.
    fn to_decimal(&self) -> String;

    /// Zero at `ctx`.
    fn zero(ctx: Self::Ctx) -> Self {
        Self::from_f64(0.0, ctx)
    }
    /// One at `ctx`.
    fn one(ctx: Self::Ctx) -> Self {
        Self::from_f64(1.0, ctx)
    }
    /// A constant with the context of `self`.
    fn cst(&self, x: f64) -> Self {
        Self::from_f64(x, self.ctx())
    }
    /// `self^2`.
    fn sq(&self) -> Self {
        self.clone() * self.clone()
    }
    /// `self^3`.
    fn cube(&self) -> Self {
        self.sq() * self.clone()
    }
    /// `s` as `f64`s when `Self` is `f64`, else `None`: the hook through which the
    /// solvers' small dense linear algebra takes a fixed-size `f64` path with the same
    /// operations as the generic one ([`crate::flow::linear`]).
    fn f64_slice(s: &[Self]) -> Option<&[f64]> {
        let _ = s;
        None
    }
    /// [`Scalar::f64_slice`] for a mutable slice.
    fn f64_slice_mut(s: &mut [Self]) -> Option<&mut [f64]> {
        let _ = s;
        None
    }
    /// The larger of two values (NaN-free inputs).
    fn max_of(self, other: Self) -> Self {
        if other > self {
            other
        } else {
            self
        }
    }
}

impl Scalar for f64 {
    fn f64_slice(s: &[f64]) -> Option<&[f64]> {
        Some(s)
    }
    fn f64_slice_mut(s: &mut [f64]) -> Option<&mut [f64]> {
        Some(s)
    }
    type Ctx = ();
    #[inline]
    fn ctx(&self) {}
    #[inline]
    fn from_f64(x: f64, _: ()) -> Self {
        x
    }
    fn from_rational(q: &Rational, _: ()) -> Self {
        // Round once, to nearest (Rational::to_f64 truncates).
        Float::with_val(53, q).to_f64()
    }
    #[inline]
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    #[inline]
    fn abs(self) -> Self {
        f64::abs(self)
    }
    #[inline]
    fn ln(self) -> Self {
        f64::ln(self)
    }
    #[inline]
    fn exp(self) -> Self {
        f64::exp(self)
    }
    #[inline]
    fn to_f64(&self) -> f64 {
        *self
    }
    #[inline]
    fn is_finite(&self) -> bool {
        f64::is_finite(*self)
    }
    fn to_decimal(&self) -> String {
        format!("{self:?}")
    }
}

impl Scalar for Float {
    type Ctx = u32;
    fn ctx(&self) -> u32 {
        self.prec()
    }
    fn from_f64(x: f64, prec: u32) -> Self {
        Float::with_val(prec, x)
    }
    fn from_rational(q: &Rational, prec: u32) -> Self {
        Float::with_val(prec, q)
    }
    fn sqrt(self) -> Self {
        Float::sqrt(self)
    }
    fn abs(self) -> Self {
        Float::abs(self)
    }
    fn ln(self) -> Self {
        Float::ln(self)
    }
    fn exp(self) -> Self {
        Float::exp(self)
    }
    fn to_f64(&self) -> f64 {
        Float::to_f64(self)
    }
    fn is_finite(&self) -> bool {
        Float::is_finite(self)
    }
    fn to_decimal(&self) -> String {
        // Enough decimal digits to round-trip the binary precision.
        let digits = (f64::from(self.prec()) * std::f64::consts::LOG10_2).ceil() as usize + 1;
        self.to_string_radix(10, Some(digits))
    }
}

/// Converts a slice of `f64` into scalars at `ctx`.
pub fn lift<S: Scalar>(xs: &[f64], ctx: S::Ctx) -> Vec<S> {
    xs.iter().map(|&x| S::from_f64(x, ctx)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rational_rounds_to_nearest_in_f64() {
        // 1/3 rounded to nearest is 0x3FD5555555555555; truncation would give the same,
        // so use 2/3 whose nearest f64 rounds up.
        let q = Rational::from((2, 3));
        assert_eq!(<f64 as Scalar>::from_rational(&q, ()), 2.0 / 3.0);
    }

    #[test]
    fn mpfr_keeps_precision_through_arithmetic() {
        let a = Float::with_val(256, 1);
        let third = a.clone() / Float::with_val(256, 3);
        let back = third * Float::with_val(256, 3) - a;
        assert!(back.abs() < Float::with_val(256, 1e-70));
    }

    #[test]
    fn decimal_string_has_the_precision_digits() {
        let x = Float::with_val(256, 2).sqrt();
        assert!(x.to_decimal().len() > 70);
        assert_eq!(<f64 as Scalar>::to_decimal(&0.1), "0.1");
    }
}
