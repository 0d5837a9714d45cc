//! Root finding on a scalar function of time: the event location of the flow uses it on
//! the dense output of an accepted step (`derivations/numerics.md`, "Events").

/// Illinois root finding of `g` on `[lo, hi]` with `g(lo) < 0 <= g(hi)`; returns a time
/// `t` with `g(t) >= 0` within a relative `1e-15` of the crossing (at most 200 iterations).
///
/// # Examples
///
/// ```
/// use predhead::ode::roots::first_crossing;
/// let t = first_crossing(&mut |t| t * t - 2.0, 0.0, 2.0);
/// assert!(t * t - 2.0 >= 0.0 && (t - 2f64.sqrt()).abs() < 1e-14);
/// ```
pub fn first_crossing(g: &mut dyn FnMut(f64) -> f64, mut lo: f64, mut hi: f64) -> f64 {
    let (mut glo, mut ghi) = (g(lo), g(hi));
    let mut side = 0i8;
    for _ in 0..200 {
        if hi - lo <= 1e-15 * hi.abs().max(lo.abs()) + f64::MIN_POSITIVE {
            break;
        }
        let mut t = (lo * ghi - hi * glo) / (ghi - glo);
        if !(t > lo && t < hi) {
            t = 0.5 * (lo + hi);
        }
        let gt = g(t);
        if gt >= 0.0 {
            hi = t;
            ghi = gt;
            if side == 1 {
                glo *= 0.5;
            }
            side = 1;
        } else {
            lo = t;
            glo = gt;
            if side == -1 {
                ghi *= 0.5;
            }
            side = -1;
        }
    }
    hi
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The crossing of a flat (cubic) and of a steep function, from the side where
    /// `g >= 0`; a jump to `g >= 0` only at `hi` gives `hi`.
    #[test]
    fn finds_the_first_nonnegative_time() {
        let t = first_crossing(&mut |t| (t - 0.3).powi(3), 0.0, 1.0);
        assert!((t - 0.3).abs() < 1e-5 && (t - 0.3).powi(3) >= 0.0, "{t}");
        let t = first_crossing(&mut |t| (50.0 * (t - 0.7)).tanh(), 0.0, 1.0);
        assert!((t - 0.7).abs() <= 1e-15 && t >= 0.7, "{t}");
        assert_eq!(
            first_crossing(&mut |t| if t < 1.0 { -1.0 } else { 0.0 }, 0.0, 1.0),
            1.0
        );
    }
}
