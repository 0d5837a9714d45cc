//! Flow time as an unevaluated sum of two `f64` (double-double), so that steps of size
//! `O(1)` still advance the time near `tau ~ d^2 = 1e24` (`derivations/numerics.md`,
//! Section "Time resolution").

/// `tau = hi + lo`, `|lo| <= ulp(hi)/2`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Clock {
    hi: f64,
    lo: f64,
}

/// Knuth's TwoSum: `a + b = s + e` exactly.
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    (s, e)
}

impl Clock {
    /// Time zero.
    pub fn zero() -> Self {
        Clock { hi: 0.0, lo: 0.0 }
    }

    /// Advances the clock by `h`.
    pub fn advance(&mut self, h: f64) {
        let (s, e) = two_sum(self.hi, h);
        let (hi, lo) = two_sum(s, e + self.lo);
        self.hi = hi;
        self.lo = lo;
    }

    /// The time, rounded to `f64`.
    pub fn value(&self) -> f64 {
        self.hi + self.lo
    }

    /// `tau + s` rounded to `f64`.
    pub fn plus(&self, s: f64) -> f64 {
        let (a, e) = two_sum(self.hi, s);
        a + (e + self.lo)
    }

    /// `t - tau` for an `f64` time `t`, to double-double accuracy then rounded.
    pub fn until(&self, t: f64) -> f64 {
        let (a, e) = two_sum(t, -self.hi);
        a + (e - self.lo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_steps_advance_at_1e24() {
        let mut c = Clock::zero();
        c.advance(1e24);
        for _ in 0..1000 {
            c.advance(1.0);
        }
        assert_eq!(c.until(1e24), -1000.0);
        assert_eq!(c.plus(-1000.0), 1e24);
        assert_eq!(c.value(), 1e24); // 1000 is below ulp(1e24) ~ 1.3e8
    }
}
