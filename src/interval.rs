//! Interval arithmetic with MPFR endpoints and directed rounding: the [`Interval`] scalar
//! that plugs into the closed forms (they are generic over [`Scalar`]) and encloses their
//! exact values (`derivations/interval.md`).
//!
//! An [`Interval`] `[lo, hi]` holds two MPFR numbers of the same precision (the context,
//! 53 bits and up). Every operation computes the exact set image of its operands' intervals
//! (for `+ - * /`, `sqrt`, `ln`, `exp`, `abs`, `^2`, `^3`: the endpoints are attained at
//! operand endpoints, eqs. (V2)-(V5)) and rounds the lower endpoint down and the upper one
//! up. MPFR rounds every one of these functions correctly in every direction, so the result
//! contains the exact image: inclusion isotonicity (eq. (V1)) holds for each operation, and by
//! induction for the whole formula (eq. (V6)).
//!
//! What an interval cannot do is a branch. A comparison (`<`, `>`, `partial_cmp`, `==`) is
//! decided only when the two intervals are disjoint (or are the same point); otherwise it
//! returns `false` (`None`) **and records the undecided comparison** with its source
//! location in a per-thread register. An operation outside its domain (division by an
//! interval containing 0, `sqrt` or `ln` of an interval reaching below 0) gives the
//! invalid interval (NaN endpoints, which every later operation propagates) and is recorded
//! as well. [`certified`] runs a computation with a cleared register and returns the first
//! failure: a caller turns it into a "not certified" error, never into an enclosure
//! (eq. (V7)). The register is per thread: the closed forms run on the calling thread.
//!
//! [`NearestInterval`] is the same type with round-to-nearest on both ends: **not** an
//! enclosure, kept only as the negative control of `tests/certify.rs` (it must fail the
//! containment test).
//!
//! # Examples
//! ```
//! use predhead::interval::Interval;
//! use predhead::scalar::Scalar;
//! let third = Interval::from_f64(1.0, 53) / Interval::from_f64(3.0, 53);
//! let (lo, hi) = third.bounds_f64();
//! assert!(lo < hi && lo <= 1.0 / 3.0 && 1.0 / 3.0 <= hi);
//! // The exact 1/3 lies inside: 3 lo < 1 < 3 hi in exact arithmetic.
//! assert!(third.contains_rational(&rug::Rational::from((1, 3))));
//! ```

use crate::scalar::Scalar;
use rug::float::Round;
use rug::ops::Pow;
use rug::{Float, Rational};
use std::cell::RefCell;
use std::cmp::Ordering;
use std::ops::{Add, Div, Mul, Neg, Sub};
use std::panic::Location;

/// The smallest working precision of an interval, in bits (`f64`'s).
pub const MIN_BITS: u32 = 53;

/// A closed interval `[lo, hi]` with MPFR endpoints of one precision; `OUTWARD = true`
/// rounds the lower endpoint down and the upper one up (an enclosure), `false` rounds both
/// to nearest (the negative control [`NearestInterval`], not an enclosure).
#[derive(Clone, Debug)]
pub struct Ival<const OUTWARD: bool> {
    lo: Float,
    hi: Float,
}

/// The rigorous interval: outward rounding.
pub type Interval = Ival<true>;

/// The same arithmetic with round-to-nearest on both ends: not an enclosure. Exists only
/// as the negative control of the containment tests.
#[doc(hidden)]
pub type NearestInterval = Ival<false>;

thread_local! {
    /// The first failure of the running certified computation (see [`certified`]).
    static FAILURE: RefCell<Option<String>> = const { RefCell::new(None) };
    /// Set by [`lenient`]: branches marked by [`either_arm`] are not recorded.
    static LENIENT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the branches marked by [`either_arm`] unrecorded when undecided (the
/// validated flow, `derivations/interval.md`, eq. (V22)); `eval --certify` stays strict
/// (eq. (V7)).
pub fn lenient<T>(f: impl FnOnce() -> T) -> T {
    let before = LENIENT.with(|l| l.replace(true));
    let out = f();
    LENIENT.with(|l| l.set(before));
    out
}

/// The comparison `f()` of a branch whose two arms are both valid wherever either is
/// evaluated (so an undecided comparison may take either arm): inside [`lenient`], an
/// undecided comparison is not recorded as a failure; elsewhere it is, as every comparison
/// (eq. (V7)). In `f64` this is `f()` (the register is never written).
pub fn either_arm(f: impl FnOnce() -> bool) -> bool {
    if !LENIENT.with(|l| l.get()) {
        return f();
    }
    let saved = FAILURE.with(|r| r.borrow_mut().take());
    let out = f();
    FAILURE.with(|r| *r.borrow_mut() = saved);
    out
}

/// Records a failure (the first one wins).
pub(crate) fn record(what: String) {
    FAILURE.with(|f| {
        let mut f = f.borrow_mut();
        if f.is_none() {
            *f = Some(what);
        }
    });
}

/// Runs `f` with a cleared failure register and returns its result together with the first
/// undecided comparison or domain failure of interval arithmetic during `f` (eq. (V7)).
/// `f` must do its interval arithmetic on the calling thread.
///
/// # Examples
/// ```
/// use predhead::interval::{certified, Interval};
/// use predhead::scalar::Scalar;
/// let x = Interval::from_f64(-1.0, 53).hull(&Interval::from_f64(1.0, 53));
/// let zero = Interval::zero(53);
/// let (positive, failure) = certified(|| x > zero);
/// assert!(!positive);
/// assert!(failure.unwrap().contains("cannot decide"));
/// let (_, failure) = certified(|| Interval::from_f64(2.0, 53) > zero);
/// assert!(failure.is_none());
/// ```
pub fn certified<T>(f: impl FnOnce() -> T) -> (T, Option<String>) {
    FAILURE.with(|r| *r.borrow_mut() = None);
    let out = f();
    let failure = FAILURE.with(|r| r.borrow_mut().take());
    (out, failure)
}

impl<const O: bool> Ival<O> {
    /// The rounding of lower endpoints.
    const DOWN: Round = if O { Round::Down } else { Round::Nearest };
    /// The rounding of upper endpoints.
    const UP: Round = if O { Round::Up } else { Round::Nearest };

    /// The interval `[lo, hi]` (the caller guarantees `lo <= hi`, same precision).
    fn new(lo: Float, hi: Float) -> Self {
        Ival { lo, hi }
    }

    /// The invalid interval (NaN endpoints) at `prec`, recording `why` at `at`.
    fn invalid(prec: u32, why: &str, at: &Location<'_>) -> Self {
        record(format!("{why} (at {at})"));
        let nan = Float::with_val(prec, rug::float::Special::Nan);
        Ival::new(nan.clone(), nan)
    }

    /// Whether an endpoint is NaN (the result of an invalid operation).
    pub fn is_invalid(&self) -> bool {
        self.lo.is_nan() || self.hi.is_nan()
    }

    /// The lower endpoint.
    pub fn lo(&self) -> &Float {
        &self.lo
    }

    /// The upper endpoint.
    pub fn hi(&self) -> &Float {
        &self.hi
    }

    /// The working precision in bits.
    pub fn prec(&self) -> u32 {
        self.lo.prec()
    }

    /// The enclosure `[q_down, q_up]` of the exact rational `q` at `prec` bits.
    pub fn from_rational_at(q: &Rational, prec: u32) -> Self {
        let lo = Float::with_val_round(prec, q, Self::DOWN).0;
        let hi = Float::with_val_round(prec, q, Self::UP).0;
        Ival::new(lo, hi)
    }

    /// The smallest interval containing both.
    pub fn hull(&self, other: &Self) -> Self {
        if self.is_invalid() || other.is_invalid() {
            return self.clone() + other.clone();
        }
        let lo = if other.lo < self.lo {
            &other.lo
        } else {
            &self.lo
        };
        let hi = if other.hi > self.hi {
            &other.hi
        } else {
            &self.hi
        };
        Ival::new(lo.clone(), hi.clone())
    }

    /// The endpoints as `f64`, rounded outward (lower down, upper up): still an enclosure.
    pub fn bounds_f64(&self) -> (f64, f64) {
        (
            self.lo.to_f64_round(Round::Down),
            self.hi.to_f64_round(Round::Up),
        )
    }

    /// An upper bound of the width `hi - lo` (rounded up, as `f64`).
    pub fn width_f64(&self) -> f64 {
        let w = Float::with_val_round(self.prec(), &self.hi - &self.lo, Round::Up).0;
        w.to_f64_round(Round::Up)
    }

    /// The width relative to the magnitude `max(|lo|, |hi|)` (0 for the point 0), as `f64`.
    pub fn rel_width_f64(&self) -> f64 {
        let mag = self.lo.to_f64().abs().max(self.hi.to_f64().abs());
        if mag == 0.0 {
            self.width_f64()
        } else {
            self.width_f64() / mag
        }
    }

    /// The endpoints as decimal strings with `digits` significant digits, rounded outward
    /// (still an enclosure).
    pub fn bounds_decimal(&self, digits: usize) -> (String, String) {
        (
            self.lo.to_string_radix_round(10, Some(digits), Round::Down),
            self.hi.to_string_radix_round(10, Some(digits), Round::Up),
        )
    }

    /// Whether the exact rational `q` lies in `[lo, hi]` (an exact comparison).
    pub fn contains_rational(&self, q: &Rational) -> bool {
        !self.is_invalid() && self.lo <= *q && *q <= self.hi
    }

    /// Whether the number `x` lies in `[lo, hi]` (an exact comparison).
    pub fn contains(&self, x: &Float) -> bool {
        !self.is_invalid() && self.lo <= *x && *x <= self.hi
    }

    /// Whether the `f64` `x` lies in `[lo, hi]` (an exact comparison).
    pub fn contains_f64(&self, x: f64) -> bool {
        !self.is_invalid() && self.lo <= x && x <= self.hi
    }

    /// Both endpoints `>= 0`.
    fn nonneg(&self) -> bool {
        self.lo >= 0
    }

    /// Both endpoints `<= 0`.
    fn nonpos(&self) -> bool {
        self.hi <= 0
    }

    /// `a * b` rounded with `r`.
    fn mul_r(a: &Float, b: &Float, r: Round) -> Float {
        Float::with_val_round(a.prec(), a * b, r).0
    }

    /// `a / b` rounded with `r`.
    fn div_r(a: &Float, b: &Float, r: Round) -> Float {
        Float::with_val_round(a.prec(), a / b, r).0
    }

    /// Decides a comparison: `Some` only when the intervals are disjoint or the same point;
    /// otherwise records the undecided comparison at `at` (eq. (V7)).
    fn decide(&self, other: &Self, at: &Location<'_>) -> Option<Ordering> {
        let ord = if self.is_invalid() || other.is_invalid() {
            None
        } else if self.hi < other.lo {
            Some(Ordering::Less)
        } else if self.lo > other.hi {
            Some(Ordering::Greater)
        } else if self.lo == self.hi && other.lo == other.hi && self.lo == other.lo {
            Some(Ordering::Equal)
        } else {
            None
        };
        if ord.is_none() {
            record(format!(
                "a comparison that the enclosures cannot decide ([{:?}, {:?}] against [{:?}, {:?}], at {at})",
                self.lo.to_f64(),
                self.hi.to_f64(),
                other.lo.to_f64(),
                other.hi.to_f64()
            ));
        }
        ord
    }
}

impl<const O: bool> PartialEq for Ival<O> {
    /// Certainly equal: both the same point. Undecided (recorded) when they overlap
    /// otherwise.
    #[track_caller]
    fn eq(&self, other: &Self) -> bool {
        self.decide(other, Location::caller()) == Some(Ordering::Equal)
    }
}

impl<const O: bool> PartialOrd for Ival<O> {
    #[track_caller]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.decide(other, Location::caller())
    }
    #[track_caller]
    fn lt(&self, other: &Self) -> bool {
        self.decide(other, Location::caller()) == Some(Ordering::Less)
    }
    #[track_caller]
    fn le(&self, other: &Self) -> bool {
        matches!(
            self.decide(other, Location::caller()),
            Some(Ordering::Less | Ordering::Equal)
        )
    }
    #[track_caller]
    fn gt(&self, other: &Self) -> bool {
        self.decide(other, Location::caller()) == Some(Ordering::Greater)
    }
    #[track_caller]
    fn ge(&self, other: &Self) -> bool {
        matches!(
            self.decide(other, Location::caller()),
            Some(Ordering::Greater | Ordering::Equal)
        )
    }
}

impl<const O: bool> Add for Ival<O> {
    type Output = Self;
    /// (V2): `[a, b] + [c, d] = [a + c, b + d]`.
    fn add(self, rhs: Self) -> Self {
        let p = self.prec();
        let lo = Float::with_val_round(p, &self.lo + &rhs.lo, Self::DOWN).0;
        let hi = Float::with_val_round(p, &self.hi + &rhs.hi, Self::UP).0;
        Ival::new(lo, hi)
    }
}

impl<const O: bool> Sub for Ival<O> {
    type Output = Self;
    /// (V2): `[a, b] - [c, d] = [a - d, b - c]`.
    fn sub(self, rhs: Self) -> Self {
        let p = self.prec();
        let lo = Float::with_val_round(p, &self.lo - &rhs.hi, Self::DOWN).0;
        let hi = Float::with_val_round(p, &self.hi - &rhs.lo, Self::UP).0;
        Ival::new(lo, hi)
    }
}

impl<const O: bool> Neg for Ival<O> {
    type Output = Self;
    /// `-[a, b] = [-b, -a]`, exact.
    fn neg(self) -> Self {
        Ival::new(-self.hi, -self.lo)
    }
}

impl<const O: bool> Mul for Ival<O> {
    type Output = Self;
    /// (V3): the product's extremes are products of endpoints, chosen by the signs.
    fn mul(self, rhs: Self) -> Self {
        if self.is_invalid() || rhs.is_invalid() {
            return self + rhs;
        }
        let (a, b, c, d) = (&self.lo, &self.hi, &rhs.lo, &rhs.hi);
        let (dn, up) = (Self::DOWN, Self::UP);
        let m = Self::mul_r;
        let (lo, hi) = match (self.nonneg(), self.nonpos(), rhs.nonneg(), rhs.nonpos()) {
            // [a, b] >= 0.
            (true, _, true, _) => (m(a, c, dn), m(b, d, up)),
            (true, _, _, true) => (m(b, c, dn), m(a, d, up)),
            (true, _, _, _) => (m(b, c, dn), m(b, d, up)),
            // [a, b] <= 0.
            (_, true, true, _) => (m(a, d, dn), m(b, c, up)),
            (_, true, _, true) => (m(b, d, dn), m(a, c, up)),
            (_, true, _, _) => (m(a, d, dn), m(a, c, up)),
            // a < 0 < b.
            (_, _, true, _) => (m(a, d, dn), m(b, d, up)),
            (_, _, _, true) => (m(b, c, dn), m(a, c, up)),
            _ => {
                let (l1, l2) = (m(a, d, dn), m(b, c, dn));
                let (h1, h2) = (m(a, c, up), m(b, d, up));
                (if l2 < l1 { l2 } else { l1 }, if h2 > h1 { h2 } else { h1 })
            }
        };
        Ival::new(lo, hi)
    }
}

impl<const O: bool> Div for Ival<O> {
    type Output = Self;
    /// (V4): division by an interval that excludes 0; otherwise invalid (recorded).
    #[track_caller]
    fn div(self, rhs: Self) -> Self {
        if self.is_invalid() || rhs.is_invalid() {
            return self + rhs;
        }
        let (a, b, c, d) = (&self.lo, &self.hi, &rhs.lo, &rhs.hi);
        let (dn, up) = (Self::DOWN, Self::UP);
        let q = Self::div_r;
        let (lo, hi) = if *c > 0 {
            if self.nonneg() {
                (q(a, d, dn), q(b, c, up))
            } else if self.nonpos() {
                (q(a, c, dn), q(b, d, up))
            } else {
                (q(a, c, dn), q(b, c, up))
            }
        } else if *d < 0 {
            if self.nonneg() {
                (q(b, d, dn), q(a, c, up))
            } else if self.nonpos() {
                (q(b, c, dn), q(a, d, up))
            } else {
                (q(b, d, dn), q(a, d, up))
            }
        } else {
            return Self::invalid(
                self.prec(),
                "division by an enclosure that contains 0",
                Location::caller(),
            );
        };
        Ival::new(lo, hi)
    }
}

impl<const O: bool> Scalar for Ival<O> {
    type Ctx = u32;
    fn ctx(&self) -> u32 {
        self.prec()
    }
    fn from_f64(x: f64, prec: u32) -> Self {
        let lo = Float::with_val_round(prec, x, Self::DOWN).0;
        let hi = Float::with_val_round(prec, x, Self::UP).0;
        Ival::new(lo, hi)
    }
    fn from_rational(q: &Rational, prec: u32) -> Self {
        Self::from_rational_at(q, prec)
    }
    /// (V5): monotone; invalid (recorded) when the interval reaches below 0.
    #[track_caller]
    fn sqrt(self) -> Self {
        if self.is_invalid() || self.lo < 0 {
            return Self::invalid(
                self.prec(),
                "square root of an enclosure that reaches below 0",
                Location::caller(),
            );
        }
        let p = self.prec();
        let lo = Float::with_val_round(p, self.lo.sqrt_ref(), Self::DOWN).0;
        let hi = Float::with_val_round(p, self.hi.sqrt_ref(), Self::UP).0;
        Ival::new(lo, hi)
    }
    fn abs(self) -> Self {
        if self.nonneg() || self.is_invalid() {
            self
        } else if self.nonpos() {
            -self
        } else {
            let hi = if -self.lo.clone() > self.hi {
                -self.lo
            } else {
                self.hi
            };
            Ival::new(Float::with_val(hi.prec(), 0), hi)
        }
    }
    /// (V5): monotone; invalid (recorded) unless the interval is positive.
    #[track_caller]
    fn ln(self) -> Self {
        if self.is_invalid() || self.lo <= 0 {
            return Self::invalid(
                self.prec(),
                "logarithm of an enclosure that reaches 0 or below",
                Location::caller(),
            );
        }
        let p = self.prec();
        let lo = Float::with_val_round(p, self.lo.ln_ref(), Self::DOWN).0;
        let hi = Float::with_val_round(p, self.hi.ln_ref(), Self::UP).0;
        Ival::new(lo, hi)
    }
    /// (V5): monotone.
    fn exp(self) -> Self {
        let p = self.prec();
        let lo = Float::with_val_round(p, self.lo.exp_ref(), Self::DOWN).0;
        let hi = Float::with_val_round(p, self.hi.exp_ref(), Self::UP).0;
        Ival::new(lo, hi)
    }
    /// The midpoint, to nearest.
    fn to_f64(&self) -> f64 {
        let sum = Float::with_val(self.prec() + 1, &self.lo + &self.hi);
        (sum / 2u32).to_f64()
    }
    fn is_finite(&self) -> bool {
        self.lo.is_finite() && self.hi.is_finite()
    }
    /// `[lo, hi]` with every digit of the precision, rounded outward.
    fn to_decimal(&self) -> String {
        let digits = (f64::from(self.prec()) * std::f64::consts::LOG10_2).ceil() as usize + 1;
        let (lo, hi) = self.bounds_decimal(digits);
        format!("[{lo}, {hi}]")
    }
    /// (V3): `x^2 = [min x^2, max x^2]`, `0` when the interval contains 0 (tighter than
    /// `x * x`).
    fn sq(&self) -> Self {
        if self.is_invalid() {
            return self.clone();
        }
        let (dn, up) = (Self::DOWN, Self::UP);
        let p = self.prec();
        let sq = |x: &Float, r| Float::with_val_round(p, x.square_ref(), r).0;
        if self.nonneg() {
            Ival::new(sq(&self.lo, dn), sq(&self.hi, up))
        } else if self.nonpos() {
            Ival::new(sq(&self.hi, dn), sq(&self.lo, up))
        } else {
            let top = if -self.lo.clone() > self.hi {
                &self.lo
            } else {
                &self.hi
            };
            Ival::new(Float::with_val(p, 0), sq(top, up))
        }
    }
    /// (V3): `x^3` is increasing: `[lo^3, hi^3]`.
    fn cube(&self) -> Self {
        let p = self.prec();
        let lo = Float::with_val_round(p, (&self.lo).pow(3u32), Self::DOWN).0;
        let hi = Float::with_val_round(p, (&self.hi).pow(3u32), Self::UP).0;
        Ival::new(lo, hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(lo: f64, hi: f64) -> Interval {
        Ival::new(Float::with_val(53, lo), Float::with_val(53, hi))
    }

    /// The sign-case product and quotient against the brute-force hull of the four endpoint
    /// results, on every sign pattern (the hull rounded outward is what (V3), (V4) claim).
    #[test]
    fn sign_cases_match_the_four_endpoint_hull() {
        let ends = [-3.0, -1.5, -0.0, 0.0, 0.75, 2.0];
        let mut checked = 0;
        for &a in &ends {
            for &b in &ends {
                for &c in &ends {
                    for &d in &ends {
                        if a > b || c > d {
                            continue;
                        }
                        let x = iv(a, b);
                        let y = iv(c, d);
                        let prod = x.clone() * y.clone();
                        let ps = [a * c, a * d, b * c, b * d];
                        let lo = ps.iter().cloned().fold(f64::INFINITY, f64::min);
                        let hi = ps.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        assert_eq!(prod.bounds_f64(), (lo, hi), "[{a},{b}]*[{c},{d}]");
                        if c > 0.0 || d < 0.0 {
                            let qs = [a / c, a / d, b / c, b / d];
                            let lo = qs.iter().cloned().fold(f64::INFINITY, f64::min);
                            let hi = qs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                            let (ql, qh) = (x.clone() / y.clone()).bounds_f64();
                            // The quotients are inexact in f64: the outward bounds bracket
                            // the nearest ones within one ulp.
                            assert!(ql <= lo && hi <= qh, "[{a},{b}]/[{c},{d}]");
                            assert!(lo - ql <= lo.abs() * 1e-15 && qh - hi <= hi.abs() * 1e-15);
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 100);
    }

    /// Outward rounding: 1/3 and sqrt(2) are bracketed strictly, and the nearest-rounded
    /// control collapses to a point that misses the exact 1/3.
    #[test]
    fn outward_rounding_brackets_and_nearest_does_not() {
        let third = Interval::from_f64(1.0, 53) / Interval::from_f64(3.0, 53);
        let q = Rational::from((1, 3));
        assert!(third.contains_rational(&q) && third.lo() < third.hi());
        let near = NearestInterval::from_f64(1.0, 53) / NearestInterval::from_f64(3.0, 53);
        assert!(!near.contains_rational(&q));
        let r2 = Interval::from_f64(2.0, 53).sqrt();
        let sq = r2.sq();
        assert!(sq.contains_f64(2.0) && sq.lo() < sq.hi());
    }

    #[test]
    fn domain_failures_are_recorded() {
        let x = iv(-1.0, 1.0);
        let (y, failure) = certified(|| Interval::from_f64(1.0, 53) / x.clone());
        assert!(y.is_invalid() && failure.unwrap().contains("contains 0"));
        let (y, failure) = certified(|| x.clone().sqrt());
        assert!(y.is_invalid() && failure.unwrap().contains("below 0"));
        let (_, failure) = certified(|| x.clone() * x.clone() + x.sq());
        assert!(failure.is_none());
        assert_eq!(x.sq().bounds_f64(), (0.0, 1.0));
        assert_eq!(x.clone().abs().bounds_f64(), (0.0, 1.0));
    }
}
