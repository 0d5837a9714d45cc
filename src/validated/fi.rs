//! `f64` intervals with outward rounding: the inner-loop scalar of the validated flow
//! (`derivations/interval.md`, eq. (V11)).
//!
//! Each endpoint of `+ - * /` and `sqrt` is computed in round-to-nearest and then moved one
//! `f64` outward (`next_down` / `next_up`). IEEE 754 rounds these five operations correctly,
//! so the exact endpoint lies within half an ulp of the computed one and one step outward
//! covers it: inclusion isotonicity (V1) holds. `ln` and `exp` (not used by the closed forms
//! of the flow) go through MPFR with directed rounding. Comparisons, domain failures and the
//! failure register are those of [`crate::interval`] (eq. (V7)): an undecided comparison
//! returns `false` and is recorded, so that [`crate::interval::certified`] reports it.
//!
//! # Examples
//! ```
//! use predhead::validated::Fi;
//! use predhead::scalar::Scalar;
//! let third = Fi::point(1.0) / Fi::point(3.0);
//! assert!(third.lo() < third.hi() && third.lo() <= 1.0 / 3.0 && 1.0 / 3.0 <= third.hi());
//! ```

use crate::interval::record;
use crate::scalar::Scalar;
use rug::float::Round;
use rug::{Float, Rational};
use std::cmp::Ordering;
use std::ops::{Add, Div, Mul, Neg, Sub};
use std::panic::Location;

/// A closed interval `[lo, hi]` of `f64`s, rounded outward.
#[derive(Clone, Copy, Debug)]
pub struct Fi {
    lo: f64,
    hi: f64,
}

#[inline]
fn down(x: f64) -> f64 {
    x.next_down()
}

#[inline]
fn up(x: f64) -> f64 {
    x.next_up()
}

impl Fi {
    /// The point interval `[x, x]`.
    pub fn point(x: f64) -> Self {
        Fi { lo: x, hi: x }
    }

    /// `[lo, hi]` (the caller guarantees `lo <= hi`).
    pub fn new(lo: f64, hi: f64) -> Self {
        Fi { lo, hi }
    }

    /// `[c - r, c + r]` rounded outward (`r >= 0`).
    pub fn ball(c: f64, r: f64) -> Self {
        Fi {
            lo: down(c - r),
            hi: up(c + r),
        }
    }

    /// The lower endpoint.
    pub fn lo(&self) -> f64 {
        self.lo
    }

    /// The upper endpoint.
    pub fn hi(&self) -> f64 {
        self.hi
    }

    /// The midpoint (rounded; not an enclosure of anything).
    pub fn mid(&self) -> f64 {
        if self.lo == self.hi {
            self.lo
        } else {
            0.5 * self.lo + 0.5 * self.hi
        }
    }

    /// `max(|lo|, |hi|)`: the magnitude (an upper bound of `|x|` on the interval).
    pub fn mag(&self) -> f64 {
        self.lo.abs().max(self.hi.abs())
    }

    /// The smallest interval holding both.
    pub fn hull(&self, o: &Fi) -> Fi {
        Fi {
            lo: self.lo.min(o.lo),
            hi: self.hi.max(o.hi),
        }
    }

    /// Whether `x` lies inside.
    pub fn contains(&self, x: f64) -> bool {
        self.lo <= x && x <= self.hi
    }

    /// Whether both endpoints are finite numbers.
    pub fn valid(&self) -> bool {
        self.lo.is_finite() && self.hi.is_finite() && self.lo <= self.hi
    }

    /// The interval maximum `{max(x, y)}` (no branch, no failure).
    pub fn max(&self, o: &Fi) -> Fi {
        Fi {
            lo: self.lo.max(o.lo),
            hi: self.hi.max(o.hi),
        }
    }

    fn invalid(why: &str, at: &Location<'_>) -> Fi {
        record(format!("{why} (at {at})"));
        Fi {
            lo: f64::NAN,
            hi: f64::NAN,
        }
    }

    /// An endpoint of `op(x)` rounded by MPFR in direction `round`.
    fn mpfr(x: f64, round: Round, op: fn(&mut Float, Round)) -> f64 {
        let mut v = Float::with_val(53, x);
        op(&mut v, round);
        v.to_f64_round(round)
    }
}

impl Add for Fi {
    type Output = Fi;
    #[inline]
    fn add(self, o: Fi) -> Fi {
        Fi {
            lo: down(self.lo + o.lo),
            hi: up(self.hi + o.hi),
        }
    }
}

impl Sub for Fi {
    type Output = Fi;
    #[inline]
    fn sub(self, o: Fi) -> Fi {
        Fi {
            lo: down(self.lo - o.hi),
            hi: up(self.hi - o.lo),
        }
    }
}

impl Neg for Fi {
    type Output = Fi;
    #[inline]
    fn neg(self) -> Fi {
        Fi {
            lo: -self.hi,
            hi: -self.lo,
        }
    }
}

impl Mul for Fi {
    type Output = Fi;
    #[inline]
    fn mul(self, o: Fi) -> Fi {
        // (V3): the extremes are among the four endpoint products; a NaN product (0 * inf)
        // poisons both ends so that the result is not finite and is refused later.
        let p = [
            self.lo * o.lo,
            self.lo * o.hi,
            self.hi * o.lo,
            self.hi * o.hi,
        ];
        if p.iter().any(|v| v.is_nan()) {
            return Fi {
                lo: f64::NAN,
                hi: f64::NAN,
            };
        }
        let lo = p.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = p.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Fi {
            lo: down(lo),
            hi: up(hi),
        }
    }
}

impl Div for Fi {
    type Output = Fi;
    #[track_caller]
    fn div(self, o: Fi) -> Fi {
        // (V4): defined only when 0 is not in the divisor.
        if !(o.lo > 0.0 || o.hi < 0.0) {
            return Fi::invalid(
                "cannot divide by an interval containing 0",
                Location::caller(),
            );
        }
        let q = [
            self.lo / o.lo,
            self.lo / o.hi,
            self.hi / o.lo,
            self.hi / o.hi,
        ];
        if q.iter().any(|v| v.is_nan()) {
            return Fi {
                lo: f64::NAN,
                hi: f64::NAN,
            };
        }
        let lo = q.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = q.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Fi {
            lo: down(lo),
            hi: up(hi),
        }
    }
}

impl PartialEq for Fi {
    /// Decided only for the same single point (then equal) or disjoint intervals (then
    /// not); otherwise `false`, recorded (V7).
    #[track_caller]
    fn eq(&self, o: &Fi) -> bool {
        self.partial_cmp(o) == Some(Ordering::Equal)
    }
}

impl PartialOrd for Fi {
    /// `Some` only when the order is the same for every pair of points; otherwise `None`,
    /// recorded with the caller's location (V7).
    #[track_caller]
    fn partial_cmp(&self, o: &Fi) -> Option<Ordering> {
        if self.hi < o.lo {
            Some(Ordering::Less)
        } else if self.lo > o.hi {
            Some(Ordering::Greater)
        } else if self.lo == self.hi && o.lo == o.hi && self.lo == o.lo {
            Some(Ordering::Equal)
        } else {
            record(format!(
                "cannot decide the comparison of [{:e}, {:e}] and [{:e}, {:e}] (at {})",
                self.lo,
                self.hi,
                o.lo,
                o.hi,
                Location::caller()
            ));
            None
        }
    }
}

impl Scalar for Fi {
    type Ctx = ();
    fn ctx(&self) {}
    fn from_f64(x: f64, _: ()) -> Self {
        Fi::point(x)
    }
    fn from_rational(q: &Rational, _: ()) -> Self {
        let lo = Float::with_val_round(53, q, Round::Down).0;
        let hi = Float::with_val_round(53, q, Round::Up).0;
        Fi {
            lo: lo.to_f64_round(Round::Down),
            hi: hi.to_f64_round(Round::Up),
        }
    }
    #[track_caller]
    fn sqrt(self) -> Self {
        if self.lo.is_nan() || self.lo < 0.0 {
            return Fi::invalid(
                "cannot take the square root of an interval reaching below 0",
                Location::caller(),
            );
        }
        Fi {
            lo: down(self.lo.sqrt()).max(0.0),
            hi: up(self.hi.sqrt()),
        }
    }
    fn abs(self) -> Self {
        if self.lo >= 0.0 {
            self
        } else if self.hi <= 0.0 {
            -self
        } else {
            Fi {
                lo: 0.0,
                hi: (-self.lo).max(self.hi),
            }
        }
    }
    #[track_caller]
    fn ln(self) -> Self {
        if self.lo.is_nan() || self.lo <= 0.0 {
            return Fi::invalid(
                "cannot take the logarithm of an interval reaching 0",
                Location::caller(),
            );
        }
        Fi {
            lo: Fi::mpfr(self.lo, Round::Down, |v, r| {
                v.ln_round(r);
            }),
            hi: Fi::mpfr(self.hi, Round::Up, |v, r| {
                v.ln_round(r);
            }),
        }
    }
    fn exp(self) -> Self {
        Fi {
            lo: Fi::mpfr(self.lo, Round::Down, |v, r| {
                v.exp_round(r);
            }),
            hi: Fi::mpfr(self.hi, Round::Up, |v, r| {
                v.exp_round(r);
            }),
        }
    }
    fn to_f64(&self) -> f64 {
        self.mid()
    }
    fn is_finite(&self) -> bool {
        self.valid()
    }
    fn to_decimal(&self) -> String {
        format!("[{:e}, {:e}]", self.lo, self.hi)
    }
    fn sq(&self) -> Self {
        // (V3): [0, max] when the interval contains 0.
        let a = self.abs();
        Fi {
            lo: down(a.lo * a.lo).max(0.0),
            hi: up(a.hi * a.hi),
        }
    }
    fn max_of(self, other: Self) -> Self {
        self.max(&other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inclusion isotonicity against MPFR at 256 bits on random operands. Falsifier: the
    /// round-to-nearest result as a point interval (no outward step) excludes the exact value
    /// on most of the same operations.
    #[test]
    fn operations_enclose_the_exact_result() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let mut nearest_misses = 0;
        let inside =
            |r: Fi, e: &Float| Float::with_val(256, r.lo) <= *e && *e <= Float::with_val(256, r.hi);
        for _ in 0..2000 {
            let a: f64 = rng.random_range(-3.0..3.0);
            let b: f64 = rng.random_range(0.1..3.0);
            let (x, y) = (Fi::point(a), Fi::point(b));
            let (fa, fb) = (Float::with_val(256, a), Float::with_val(256, b));
            let cases = [
                (x + y, a + b, Float::with_val(256, &fa + &fb)),
                (x - y, a - b, Float::with_val(256, &fa - &fb)),
                (x * y, a * b, Float::with_val(256, &fa * &fb)),
                (x / y, a / b, Float::with_val(256, &fa / &fb)),
                (y.sqrt(), b.sqrt(), Float::with_val(256, fb.sqrt_ref())),
            ];
            for (r, nearest, e) in cases {
                assert!(inside(r, &e), "{r:?}");
                if !inside(Fi::point(nearest), &e) {
                    nearest_misses += 1;
                }
            }
        }
        // Products and quotients of random doubles are almost never exact.
        assert!(nearest_misses > 4000, "{nearest_misses}");
    }
}
